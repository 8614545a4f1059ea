//! A chat completions request as a Messages request: system and developer
//! messages become `system`, content parts become content blocks, tool calls
//! and tool results become `tool_use` and `tool_result` blocks, and
//! consecutive turns of one role are merged. What Anthropic cannot do is
//! refused by name rather than dropped.

use serde_json::{json, Map, Value};

/// What a chat request asks for that no Anthropic model can do.
pub type Refusal = String;

/// The output limit sent when a call gives none (the gateway always sets
/// one; Anthropic requires it).
const FALLBACK_MAX_TOKENS: u64 = 4096;

/// Translates a chat completions body into a Messages body (without `model`).
pub fn request(chat: &Value) -> Result<Value, Refusal> {
    refuse_unsupported(chat)?;
    let (system, messages) = conversation(&chat["messages"])?;
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system));
    }
    let max = chat["max_completion_tokens"]
        .as_u64()
        .or_else(|| chat["max_tokens"].as_u64())
        .unwrap_or(FALLBACK_MAX_TOKENS);
    out.insert("max_tokens".into(), Value::from(max));
    for k in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = chat.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    match &chat["stop"] {
        Value::String(s) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Value::Array(list) if !list.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(user) = chat["user"].as_str() {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    add_tools(chat, &mut out)?;
    Ok(Value::Object(out))
}

/// Refuses, by name, what Anthropic's API has no way to honour.
fn refuse_unsupported(chat: &Value) -> Result<(), Refusal> {
    if chat["n"].as_u64().is_some_and(|n| n > 1) {
        return Err("`n` must be 1 for Anthropic models: they answer with one choice".into());
    }
    if chat["logprobs"].as_bool() == Some(true) || !chat["top_logprobs"].is_null() {
        return Err(
            "Anthropic models do not return log probabilities (`logprobs`, `top_logprobs`)".into(),
        );
    }
    match chat["response_format"]["type"].as_str() {
        None | Some("text") => {}
        Some("json_schema") => {
            return Err("`response_format` json_schema is not supported for Anthropic models; describe the format in the prompt, or ask for a tool call with that schema".into());
        }
        Some(other) => {
            return Err(format!(
                "`response_format` {other} is not supported for Anthropic models; describe the format in the prompt"
            ));
        }
    }
    let audio_out = chat["modalities"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == "audio"));
    if !chat["audio"].is_null() || audio_out {
        return Err("Anthropic models do not produce audio".into());
    }
    if !chat["functions"].is_null() || !chat["function_call"].is_null() {
        return Err(
            "`functions` and `function_call` are not supported for Anthropic models; use `tools` and `tool_choice`".into(),
        );
    }
    Ok(())
}

/// The system prompt and the user/assistant turns, merged so roles
/// alternate and the first turn is the user's.
fn conversation(messages: &Value) -> Result<(String, Vec<Value>), Refusal> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages.as_array().map(Vec::as_slice).unwrap_or_default() {
        let (role, blocks) = match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {
                system.push(text_of(&m["content"]));
                continue;
            }
            "user" => ("user", content_blocks(&m["content"])?),
            "assistant" => ("assistant", assistant_blocks(m)?),
            "tool" => ("user", vec![tool_result(m)?]),
            other => {
                return Err(format!(
                    "messages: role `{other}` is not supported for Anthropic models"
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.first().is_none_or(|(role, _)| *role != "user") {
        // Anthropic needs the conversation to open with a user turn (a chat
        // UI's greeting often comes first): a minimal one stands in.
        turns.insert(0, ("user", vec![json!({"type": "text", "text": "."})]));
    }
    let system = system
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role, "content": blocks}))
        .collect();
    Ok((system, messages))
}

/// The text of a `content` string or array of text parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// User (or tool result) content as blocks; empty text is left out, since
/// Anthropic refuses empty text blocks.
fn content_blocks(content: &Value) -> Result<Vec<Value>, Refusal> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| part_block(p).transpose())
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn part_block(part: &Value) -> Result<Option<Value>, Refusal> {
    match part["type"].as_str().unwrap_or_default() {
        "text" => Ok(part["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| json!({"type": "text", "text": t}))),
        "image_url" => {
            let url = part["image_url"]["url"]
                .as_str()
                .or_else(|| part["image_url"].as_str())
                .ok_or("an `image_url` part needs `image_url.url`")?;
            Ok(Some(json!({"type": "image", "source": image_source(url)?})))
        }
        "file" => {
            let data = part["file"]["file_data"].as_str().ok_or(
                "a `file` part needs `file.file_data` (a data URL) for Anthropic models; file ids are not supported",
            )?;
            let (media_type, data) =
                data_url(data)?.ok_or("`file.file_data` must be a base64 data URL")?;
            let source = json!({"type": "base64", "media_type": media_type, "data": data});
            Ok(Some(json!({"type": "document", "source": source})))
        }
        "input_audio" => Err("Anthropic models do not take audio input".into()),
        other => Err(format!(
            "content parts of type `{other}` are not supported for Anthropic models"
        )),
    }
}

/// `data:<mime>;base64,<data>` inline, any other URL by reference.
fn image_source(url: &str) -> Result<Value, Refusal> {
    Ok(match data_url(url)? {
        Some((media_type, data)) => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => json!({"type": "url", "url": url}),
    })
}

/// The media type and base64 payload of a data URL; `None` for other URLs.
fn data_url(url: &str) -> Result<Option<(&str, &str)>, Refusal> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    let (head, data) = rest
        .split_once(',')
        .ok_or("a data URL needs a `,` before its data")?;
    let media_type = head
        .strip_suffix(";base64")
        .ok_or("data URLs must be base64-encoded for Anthropic models")?;
    Ok(Some((media_type, data)))
}

/// An assistant turn: its text, then a `tool_use` block per tool call.
fn assistant_blocks(m: &Value) -> Result<Vec<Value>, Refusal> {
    let mut blocks: Vec<Value> = match &m["content"] {
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p["refusal"].as_str()))
            .filter(|t| !t.is_empty())
            .map(|t| json!({"type": "text", "text": t}))
            .collect(),
        other => content_blocks(other)?,
    };
    for call in m["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let f = &call["function"];
        let input = f["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks
            .push(json!({"type": "tool_use", "id": call["id"], "name": f["name"], "input": input}));
    }
    Ok(blocks)
}

/// A `role: tool` message as a `tool_result` block.
fn tool_result(m: &Value) -> Result<Value, Refusal> {
    let id = m["tool_call_id"]
        .as_str()
        .ok_or("a `tool` message needs `tool_call_id`")?;
    let content = match &m["content"] {
        Value::Array(_) => Value::Array(content_blocks(&m["content"])?),
        other => Value::String(text_of(other)),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

/// `tools`, `tool_choice` and `parallel_tool_calls`, in Anthropic's shape.
fn add_tools(chat: &Value, out: &mut Map<String, Value>) -> Result<(), Refusal> {
    let Some(tools) = chat["tools"].as_array().filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
    out.insert("tools".into(), Value::Array(tools));
    let mut choice = match &chat["tool_choice"] {
        Value::Null => json!({"type": "auto"}),
        Value::String(s) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(format!("`tool_choice` {other} is not supported")),
        },
        c => match c["function"]["name"].as_str() {
            Some(name) if c["type"] == "function" => json!({"type": "tool", "name": name}),
            _ => return Err("`tool_choice` must be auto, required, none or a function".into()),
        },
    };
    if chat["parallel_tool_calls"].as_bool() == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    out.insert("tool_choice".into(), choice);
    Ok(())
}

fn tool(t: &Value) -> Result<Value, Refusal> {
    let f = &t["function"];
    let name = f["name"].as_str();
    let (Some("function"), Some(name)) = (t["type"].as_str(), name) else {
        return Err(
            "Anthropic models take function tools only: `{type: function, function: {name, …}}`"
                .into(),
        );
    };
    let mut out = json!({"name": name});
    if let Some(d) = f["description"].as_str() {
        out["description"] = Value::String(d.into());
    }
    out["input_schema"] = match &f["parameters"] {
        Value::Object(p) => Value::Object(p.clone()),
        _ => json!({"type": "object"}),
    };
    Ok(out)
}
