//! Anthropic's Messages API onto chat completions: the request, the reply,
//! and the stream (`message_start`, `content_block_*`, `message_delta`,
//! `message_stop`).

use super::{new_id, text_of, Transcode};
use app::domain::usage::Usage;
use serde_json::{json, Map, Value};

/// A Messages request as a chat completions request.
pub fn to_chat(body: &Value) -> Value {
    let mut messages = Vec::new();
    match &body["system"] {
        Value::Null => {}
        s => messages.push(json!({"role": "system", "content": text_of(s)})),
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str() {
            Some("assistant") => messages.push(assistant(&m["content"])),
            _ => user(&m["content"], &mut messages),
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), body["model"].clone());
    chat.insert("messages".into(), Value::Array(messages));
    super::copy_fields(
        body,
        &mut chat,
        &[
            ("max_tokens", "max_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("stop_sequences", "stop"),
            ("stream", "stream"),
        ],
    );
    if let Some(u) = body["metadata"]["user_id"].as_str() {
        chat.insert("user".into(), json!(u));
    }
    tools(body, &mut chat);
    Value::Object(chat)
}

fn tools(body: &Value, chat: &mut Map<String, Value>) {
    if let Some(list) = body["tools"].as_array() {
        let fs: Vec<Value> = list
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t["name"], "description": t["description"],
                    "parameters": if t["input_schema"].is_null() { json!({"type": "object"}) } else { t["input_schema"].clone() }
                }})
            })
            .collect();
        chat.insert("tools".into(), Value::Array(fs));
    }
    let choice = &body["tool_choice"];
    let mapped = match choice["type"].as_str() {
        Some("auto") => Some(json!("auto")),
        Some("any") => Some(json!("required")),
        Some("none") => Some(json!("none")),
        Some("tool") => Some(json!({"type": "function", "function": {"name": choice["name"]}})),
        _ => None,
    };
    if let Some(c) = mapped {
        chat.insert("tool_choice".into(), c);
    }
    if choice["disable_parallel_tool_use"].as_bool() == Some(true) {
        chat.insert("parallel_tool_calls".into(), json!(false));
    }
}

/// A user turn: tool results become `tool` messages (they must follow the
/// assistant's calls), the rest one user message.
fn user(content: &Value, out: &mut Vec<Value>) {
    let Some(blocks) = content.as_array() else {
        out.push(json!({"role": "user", "content": content}));
        return;
    };
    let mut parts = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("tool_result") => out.push(json!({
                "role": "tool",
                "tool_call_id": b["tool_use_id"],
                "content": text_of(&b["content"]),
            })),
            Some("image") => parts
                .push(json!({"type": "image_url", "image_url": {"url": image_url(&b["source"])}})),
            Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
            _ => {}
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
}

fn image_url(source: &Value) -> String {
    match source["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or("image/png"),
            source["data"].as_str().unwrap_or_default()
        ),
        _ => source["url"].as_str().unwrap_or_default().to_string(),
    }
}

fn assistant(content: &Value) -> Value {
    let Some(blocks) = content.as_array() else {
        return json!({"role": "assistant", "content": content});
    };
    let text: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| json!({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": b["input"].to_string()}}))
        .collect();
    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    m
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        _ => "end_turn",
    }
}

/// A chat completion as a Messages reply.
pub fn from_chat(chat: &Value, model: &str, usage: &Usage) -> Value {
    let choice = &chat["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(r) = msg["reasoning_content"].as_str().filter(|s| !s.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    let text = text_of(&msg["content"]);
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        let input: Value = c["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    json!({
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    })
}

/// Chat completion chunks as Messages stream events.
pub struct FromChatStream {
    model: String,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(u64, bool)>,
    next_index: u64,
    /// Chat tool call index → content block index.
    tools: Vec<(u64, u64)>,
    stop: Option<String>,
    usage: Usage,
}

impl FromChatStream {
    pub fn new(model: &str) -> Self {
        FromChatStream {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            stop: None,
            usage: Usage::default(),
        }
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            out.push(json!({"type": "message_start", "message": {
                "id": new_id("msg_"), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}
            }}));
        }
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some((index, _)) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn open_block(&mut self, block: Value, text: bool, out: &mut Vec<Value>) -> u64 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, text));
        out.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        index
    }

    fn text(&mut self, t: &str, out: &mut Vec<Value>) {
        let index = match self.open {
            Some((i, true)) => i,
            _ => self.open_block(json!({"type": "text", "text": ""}), true, out),
        };
        out.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}));
    }

    fn tool(&mut self, call: &Value, out: &mut Vec<Value>) {
        let k = call["index"].as_u64().unwrap_or(0);
        let known = self.tools.iter().find(|(c, _)| *c == k).map(|(_, b)| *b);
        let index = match known {
            Some(b) if self.open.map(|(i, _)| i) == Some(b) => b,
            // A call that resumes after another block: Anthropic blocks do
            // not interleave, so its remaining arguments start a new block.
            _ => {
                let block = json!({"type": "tool_use", "id": call["id"].as_str().map_or_else(|| new_id("toolu_"), str::to_string),
                    "name": call["function"]["name"].as_str().unwrap_or_default(), "input": {}});
                let b = self.open_block(block, false, out);
                self.tools.retain(|(c, _)| *c != k);
                self.tools.push((k, b));
                b
            }
        };
        if let Some(args) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            out.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}));
        }
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
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text(t, out);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.tool(call, out);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop = Some(f.to_string());
        }
    }

    fn finish(&mut self, out: &mut Vec<Value>) {
        self.start(out);
        self.close(out);
        out.push(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop.as_deref()), "stop_sequence": null},
            "usage": self.usage.to_anthropic(),
        }));
        out.push(json!({"type": "message_stop"}));
    }

    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<Value>) {
        out.push(super::stream_error(super::Kind::Messages, code, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_round_trip_maps_both_ways() {
        let req = json!({
            "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}, {"type": "text", "text": "Thanks"}]}
            ]
        });
        let chat = to_chat(&req);
        let ms = chat["messages"].as_array().unwrap();
        assert_eq!(ms[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            ms[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(
            ms[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"})
        );
        assert_eq!(ms[4]["content"][0]["text"], "Thanks");
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["max_tokens"], 100);

        let reply = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            "finish_reason": "tool_calls"}]});
        let m = from_chat(
            &reply,
            "m",
            &Usage {
                input: 5,
                output: 3,
                ..Usage::default()
            },
        );
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0]["input"]["city"], "Oslo");
        assert_eq!(m["usage"]["input_tokens"], 5);
    }

    #[test]
    fn a_stream_opens_and_closes_every_block() {
        let mut t = FromChatStream::new("m");
        let mut out = Vec::new();
        for chunk in [
            json!({"choices": [{"delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"choices": [{"delta": {"content": "lo"}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}),
        ] {
            t.event(&chunk, &mut out);
        }
        t.finish(&mut out);
        let types: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(out[9]["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[9]["usage"]["output_tokens"], 4);
    }
}
