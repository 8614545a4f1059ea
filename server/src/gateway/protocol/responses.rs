//! OpenAI's Responses API onto chat completions: the request, the reply and
//! the typed stream (`response.created`, `response.output_text.delta`, …,
//! `response.completed`), and the input items a stored response is chained by.

use super::{new_id, now_secs, text_of, Transcode};
use app::domain::usage::Usage;
use serde_json::{json, Map, Value};

/// `input` as a list of items (a string is one user message).
pub fn input_items(input: &Value) -> Vec<Value> {
    match input {
        Value::String(s) => vec![json!({"type": "message", "role": "user", "content": s})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    }
}

/// Output items as input items for the next turn: ids and statuses of items
/// the upstream never stored are dropped, and reasoning (opaque to every
/// other upstream) is left out.
pub fn as_history(output: &Value) -> Vec<Value> {
    output
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] != "reasoning")
        .map(|i| {
            let mut i = i.clone();
            if let Some(o) = i.as_object_mut() {
                o.remove("id");
                o.remove("status");
            }
            i
        })
        .collect()
}

/// A Responses request as a chat completions request.
pub fn to_chat(body: &Value) -> Value {
    let mut messages = Vec::new();
    if let Some(i) = body["instructions"].as_str() {
        messages.push(json!({"role": "system", "content": i}));
    }
    for item in input_items(&body["input"]) {
        push_item(&item, &mut messages);
    }
    let mut chat = Map::new();
    chat.insert("model".into(), body["model"].clone());
    chat.insert("messages".into(), Value::Array(messages));
    super::copy_fields(
        body,
        &mut chat,
        &[
            ("max_output_tokens", "max_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("user", "user"),
            ("parallel_tool_calls", "parallel_tool_calls"),
            ("stream", "stream"),
        ],
    );
    if let Some(e) = body["reasoning"]["effort"].as_str() {
        chat.insert("reasoning_effort".into(), json!(e));
    }
    if let Some(f) = response_format(&body["text"]["format"]) {
        chat.insert("response_format".into(), f);
    }
    tools(body, &mut chat);
    Value::Object(chat)
}

fn response_format(f: &Value) -> Option<Value> {
    match f["type"].as_str()? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => Some(json!({"type": "json_schema", "json_schema": {
            "name": f["name"], "schema": f["schema"], "strict": f["strict"]
        }})),
        _ => None,
    }
}

fn tools(body: &Value, chat: &mut Map<String, Value>) {
    if let Some(list) = body["tools"].as_array() {
        let fs: Vec<Value> = list
            .iter()
            .map(|t| json!({"type": "function", "function": {
                "name": t["name"], "description": t["description"], "parameters": t["parameters"], "strict": t["strict"]
            }}))
            .collect();
        chat.insert("tools".into(), Value::Array(fs));
    }
    let choice = &body["tool_choice"];
    let mapped = match choice {
        Value::String(_) => Some(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "function", "function": {"name": o.get("name")}}))
        }
        _ => None,
    };
    if let Some(c) = mapped {
        chat.insert("tool_choice".into(), c);
    }
}

fn push_item(item: &Value, out: &mut Vec<Value>) {
    match item["type"].as_str().unwrap_or("message") {
        "function_call" => {
            let call = json!({"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]}});
            // Consecutive calls belong to one assistant message.
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" && last["tool_calls"].is_array() => {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => out.push(json!({
            "role": "tool", "tool_call_id": item["call_id"],
            "content": match &item["output"] { Value::String(s) => s.clone(), o => text_of(o) },
        })),
        "message" => out.push(message(item)),
        _ => {}
    }
}

fn message(item: &Value) -> Value {
    let role = match item["role"].as_str() {
        Some("developer" | "system") => "system",
        Some("assistant") => "assistant",
        _ => "user",
    };
    let content = match &item["content"] {
        Value::Array(parts) if role == "user" => Value::Array(
            parts
                .iter()
                .filter_map(|p| match p["type"].as_str() {
                    Some("input_image") => Some(json!({"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}})),
                    Some("input_file") => Some(json!({"type": "file", "file": {"file_data": p["file_data"], "filename": p["filename"], "file_id": p["file_id"]}})),
                    _ => p.get("text").map(|t| json!({"type": "text", "text": t})),
                })
                .collect(),
        ),
        c => json!(text_of(c)),
    };
    json!({"role": role, "content": content})
}

/// The fields of a response object that echo the request.
fn echo(body: &Value, id: &str, model: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "response", "created_at": now_secs(), "status": status,
        "model": model, "output": [], "error": null, "incomplete_details": null,
        "instructions": body["instructions"], "max_output_tokens": body["max_output_tokens"],
        "parallel_tool_calls": body["parallel_tool_calls"].as_bool().unwrap_or(true),
        "previous_response_id": body["previous_response_id"],
        "reasoning": body["reasoning"], "store": body["store"].as_bool().unwrap_or(true),
        "temperature": body["temperature"], "top_p": body["top_p"],
        "text": if body["text"].is_null() { json!({"format": {"type": "text"}}) } else { body["text"].clone() },
        "tool_choice": if body["tool_choice"].is_null() { json!("auto") } else { body["tool_choice"].clone() },
        "tools": if body["tools"].is_null() { json!([]) } else { body["tools"].clone() },
        "truncation": "disabled", "metadata": if body["metadata"].is_null() { json!({}) } else { body["metadata"].clone() },
        "user": body["user"], "usage": null,
    })
}

fn finish_status(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A chat completion as a response object. `request` is the caller's
/// Responses request, echoed as OpenAI does.
pub fn from_chat(chat: &Value, request: &Value, id: &str, model: &str, usage: &Usage) -> Value {
    let choice = &chat["choices"][0];
    let msg = &choice["message"];
    let mut output = Vec::new();
    if let Some(r) = msg["reasoning_content"].as_str().filter(|s| !s.is_empty()) {
        output.push(json!({"type": "reasoning", "id": new_id("rs_"), "summary": [{"type": "summary_text", "text": r}]}));
    }
    let text = text_of(&msg["content"]);
    if !text.is_empty() {
        output.push(text_item(&new_id("msg_"), &text, "completed"));
    }
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        output.push(json!({"type": "function_call", "id": new_id("fc_"), "call_id": c["id"],
            "name": c["function"]["name"], "arguments": c["function"]["arguments"], "status": "completed"}));
    }
    let (status, incomplete) = finish_status(choice["finish_reason"].as_str());
    let mut r = echo(request, id, model, status);
    r["output"] = Value::Array(output);
    r["incomplete_details"] = incomplete;
    r["usage"] = usage.to_responses();
    r
}

fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

/// One output item being streamed.
enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        args: String,
    },
}

/// Chat completion chunks as Responses stream events; keeps the whole
/// response, so it can be stored when the stream ends.
pub struct FromChatStream {
    response: Value,
    seq: u64,
    items: Vec<Item>,
    /// Chat tool call index → item index.
    calls: Vec<(u64, usize)>,
    finish: Option<String>,
    usage: Usage,
    started: bool,
}

impl FromChatStream {
    pub fn new(request: &Value, id: &str, model: &str) -> Self {
        FromChatStream {
            response: echo(request, id, model, "in_progress"),
            seq: 0,
            items: Vec::new(),
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            started: false,
        }
    }

    /// The finished response object (after `finish`).
    pub fn response(&self) -> &Value {
        &self.response
    }

    fn push(&mut self, mut ev: Value, out: &mut Vec<Value>) {
        ev["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(ev);
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            let r = self.response.clone();
            self.push(json!({"type": "response.created", "response": r}), out);
            self.push(json!({"type": "response.in_progress", "response": r}), out);
        }
    }

    fn text(&mut self, t: &str, out: &mut Vec<Value>) {
        let at = match self.items.last() {
            Some(Item::Text { .. }) => self.items.len() - 1,
            _ => {
                let id = new_id("msg_");
                self.items.push(Item::Text {
                    id: id.clone(),
                    text: String::new(),
                });
                let at = self.items.len() - 1;
                self.push(json!({"type": "response.output_item.added", "output_index": at,
                    "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}), out);
                self.push(json!({"type": "response.content_part.added", "item_id": id, "output_index": at,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}), out);
                at
            }
        };
        if let Some(Item::Text { id, text }) = self.items.get_mut(at) {
            text.push_str(t);
            let id = id.clone();
            self.push(
                json!({"type": "response.output_text.delta", "item_id": id, "output_index": at,
                "content_index": 0, "delta": t, "logprobs": []}),
                out,
            );
        }
    }

    fn call(&mut self, c: &Value, out: &mut Vec<Value>) {
        let k = c["index"].as_u64().unwrap_or(0);
        let at = match self.calls.iter().find(|(i, _)| *i == k) {
            Some((_, at)) => *at,
            None => {
                let (id, call_id) = (
                    new_id("fc_"),
                    c["id"]
                        .as_str()
                        .map_or_else(|| new_id("call_"), str::to_string),
                );
                let name = c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.items.push(Item::Call {
                    id: id.clone(),
                    call_id: call_id.clone(),
                    name: name.clone(),
                    args: String::new(),
                });
                let at = self.items.len() - 1;
                self.calls.push((k, at));
                self.push(json!({"type": "response.output_item.added", "output_index": at,
                    "item": {"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"}}), out);
                at
            }
        };
        let delta = c["function"]["arguments"].as_str().unwrap_or_default();
        if let (Some(Item::Call { id, args, .. }), false) =
            (self.items.get_mut(at), delta.is_empty())
        {
            args.push_str(delta);
            let id = id.clone();
            self.push(json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": at, "delta": delta}), out);
        }
    }

    /// Closes every item, in order, and returns them as output items.
    fn close_items(&mut self, out: &mut Vec<Value>) -> Vec<Value> {
        let items = std::mem::take(&mut self.items);
        let mut done = Vec::new();
        for (at, item) in items.iter().enumerate() {
            let full = match item {
                Item::Text { id, text } => {
                    self.push(json!({"type": "response.output_text.done", "item_id": id, "output_index": at, "content_index": 0, "text": text, "logprobs": []}), out);
                    self.push(json!({"type": "response.content_part.done", "item_id": id, "output_index": at, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}), out);
                    text_item(id, text, "completed")
                }
                Item::Call {
                    id,
                    call_id,
                    name,
                    args,
                } => {
                    self.push(json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": at, "arguments": args}), out);
                    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": args, "status": "completed"})
                }
            };
            self.push(
                json!({"type": "response.output_item.done", "output_index": at, "item": full}),
                out,
            );
            done.push(full);
        }
        done
    }
}

impl Transcode for FromChatStream {
    fn event(&mut self, data: &Value, out: &mut Vec<Value>) {
        self.start(out);
        if let Some(u) = Usage::from_openai(&data["usage"]) {
            self.usage = u;
        }
        let Some(choice) = data["choices"].get(0) else {
            return;
        };
        if let Some(t) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.text(t, out);
        }
        for c in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.call(c, out);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    fn finish(&mut self, out: &mut Vec<Value>) {
        self.start(out);
        let output = self.close_items(out);
        let (status, incomplete) = finish_status(self.finish.as_deref());
        self.response["status"] = json!(status);
        self.response["incomplete_details"] = incomplete;
        self.response["output"] = Value::Array(output);
        self.response["usage"] = self.usage.to_responses();
        let ty = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let r = self.response.clone();
        self.push(json!({"type": ty, "response": r}), out);
    }

    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<Value>) {
        self.response["status"] = json!("failed");
        self.response["error"] = json!({"code": code, "message": message});
        let r = self.response.clone();
        self.push(json!({"type": "response.failed", "response": r}), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_calls_and_outputs_become_chat_messages() {
        let req = json!({"model": "m", "instructions": "Be brief.", "max_output_tokens": 50,
        "reasoning": {"effort": "low"},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "reasoning", "summary": []}
        ]});
        let chat = to_chat(&req);
        let ms = chat["messages"].as_array().unwrap();
        assert_eq!(ms.len(), 4);
        assert_eq!(ms[0]["role"], "system");
        assert_eq!(ms[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(ms[3]["tool_call_id"], "c1");
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["tools"][0]["function"]["name"], "f");
    }

    #[test]
    fn a_stream_ends_with_the_whole_response() {
        let mut t = FromChatStream::new(&json!({"model": "m"}), "resp_1", "m");
        let mut out = Vec::new();
        t.event(
            &json!({"choices": [{"delta": {"content": "Hi"}}]}),
            &mut out,
        );
        t.event(
            &json!({"choices": [{"delta": {"content": " there"}, "finish_reason": "stop"}]}),
            &mut out,
        );
        t.event(
            &json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
            &mut out,
        );
        t.finish(&mut out);
        let last = out.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(
            last["response"]["output"][0]["content"][0]["text"],
            "Hi there"
        );
        assert_eq!(last["response"]["usage"]["input_tokens"], 3);
        let seqs: Vec<u64> = out
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..out.len() as u64).collect::<Vec<_>>());
    }
}
