//! Bounds of the item-shaped prompts of the Responses API (`input`) and
//! Anthropic's Messages API (`messages`), and of their tools. The rule is
//! the one `bound` states: every byte sent counts as a token, plus
//! `PER_MESSAGE` for each message, item or content block; media parts cost
//! what the model declares or are refused; anything that could make the
//! upstream do unbounded work (hosted tools, references to items stored
//! upstream) is refused by name.

use super::bound::{json_len, refuse, Kind, MediaCosts, Refused, PER_MESSAGE};
use serde_json::Value;

fn declared(at: &str, ty: &str, what: &str, cost: Option<u32>) -> Result<u64, Refused> {
    match cost {
        Some(t) => Ok(u64::from(t)),
        None => refuse(
            format!("{at}.type"),
            format!(
                "is `{ty}`: this model declares no cost for {what} parts, so the gateway cannot bound what it costs; an admin can set `media.{what}` on the model"
            ),
        ),
    }
}

/// Tokens of one content part of either protocol.
fn part_tokens(at: &str, part: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    let Some(obj) = part.as_object() else {
        return refuse(at, "must be a content part object");
    };
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(PER_MESSAGE
        + match ty {
            "input_text" | "output_text" | "text" | "refusal" | "summary_text"
            | "reasoning_text" | "thinking" | "redacted_thinking" | "tool_use" => json_len(part),
            "input_image" | "image" => declared(at, ty, "image", media.image)?,
            "input_file" | "document" => declared(at, ty, "file", media.file)?,
            "input_audio" => declared(at, ty, "audio", media.audio)?,
            "tool_result" => tool_result(at, obj, media)?,
            _ => {
                return refuse(
                    format!("{at}.type"),
                    format!("`{ty}` is not a content type this gateway can bound"),
                )
            }
        })
}

fn tool_result(
    at: &str,
    obj: &serde_json::Map<String, Value>,
    media: &MediaCosts,
) -> Result<u64, Refused> {
    let mut total = 0;
    for (k, v) in obj {
        total += match (k.as_str(), v) {
            ("content", Value::Array(_)) => parts(&format!("{at}.content"), v, media)?,
            _ => k.len() as u64 + json_len(v),
        };
    }
    Ok(total)
}

/// Tokens of `content`: a string or a list of parts.
fn parts(at: &str, content: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    match content {
        Value::String(s) => Ok(s.len() as u64),
        Value::Array(list) => {
            let mut total = 0;
            for (j, p) in list.iter().enumerate() {
                total += part_tokens(&format!("{at}[{j}]"), p, media)?;
            }
            Ok(total)
        }
        _ => refuse(at, "must be a string or an array of content parts"),
    }
}

/// One item or message: its `content` (and a function call's `output`) part
/// by part, every other field by its bytes.
fn item_tokens(at: &str, item: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    let Some(obj) = item.as_object() else {
        return refuse(at, "must be an object");
    };
    let mut total = PER_MESSAGE;
    for (k, v) in obj {
        total += match k.as_str() {
            "content" | "output" if !v.is_string() => parts(&format!("{at}.{k}"), v, media)?,
            _ => k.len() as u64 + json_len(v),
        };
    }
    Ok(total)
}

/// Item types of the Responses API whose whole cost is in their bytes.
const RESPONSE_ITEMS: [&str; 4] = [
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
];

/// The Responses API's `input`: a string, or a list of items.
pub fn responses_input(input: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    match input {
        Value::String(s) => Ok(s.len() as u64 + PER_MESSAGE),
        Value::Array(items) if !items.is_empty() => {
            let mut total = 0;
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                let ty = match item.get("type") {
                    None => "message",
                    Some(Value::String(t)) => t.as_str(),
                    Some(_) => return refuse(format!("{at}.type"), "must be a string"),
                };
                if !RESPONSE_ITEMS.contains(&ty) {
                    return refuse(
                        format!("{at}.type"),
                        format!("`{ty}` items are not forwarded: the gateway can bound messages, function calls, their outputs and reasoning"),
                    );
                }
                total += item_tokens(&at, item, media)?;
            }
            Ok(total)
        }
        _ => refuse(
            "input",
            "is missing, empty, or neither text nor a list of items",
        ),
    }
}

/// Anthropic's `messages`: a non-empty list of `{role, content}`.
pub fn messages_input(messages: &Value, media: &MediaCosts) -> Result<u64, Refused> {
    let Some(list) = messages.as_array().filter(|m| !m.is_empty()) else {
        return refuse("messages", "is missing or is not a non-empty array");
    };
    let mut total = 0;
    for (i, m) in list.iter().enumerate() {
        total += item_tokens(&format!("messages[{i}]"), m, media)?;
    }
    Ok(total)
}

/// Only function tools: a hosted tool (web search, code execution, file
/// search, …) is billed upstream beyond its tokens, so it is refused.
pub fn tools(kind: Kind, tools: &Value) -> Result<(), Refused> {
    let Some(list) = tools.as_array() else {
        return refuse("tools", "must be an array");
    };
    for (i, t) in list.iter().enumerate() {
        let Some(tool) = t.as_object() else {
            return refuse(format!("tools[{i}]"), "must be an object");
        };
        let ty = match tool.get("type") {
            None => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => return refuse(format!("tools[{i}].type"), "must be a string"),
        };
        let ok = match kind {
            Kind::Messages => matches!(ty, None | Some("custom")),
            _ => ty == Some("function"),
        };
        if !ok {
            return refuse(
                format!("tools[{i}].type"),
                format!(
                    "is `{}`: only function tools are forwarded, because a hosted tool is billed upstream beyond what the gateway can bound",
                    ty.unwrap_or("missing")
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosted_tools_and_unknown_items_are_refused_by_name() {
        let e = tools(
            Kind::Responses,
            &json!([{"type": "function"}, {"type": "web_search"}]),
        )
        .unwrap_err();
        assert_eq!(e.field, "tools[1].type");
        let e = tools(
            Kind::Messages,
            &json!([{"name": "f"}, {"type": "web_search_20250305"}]),
        )
        .unwrap_err();
        assert_eq!(e.field, "tools[1].type");
        let e = responses_input(
            &json!([{"type": "item_reference", "id": "x"}]),
            &MediaCosts::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "input[0].type");
    }

    #[test]
    fn a_type_that_is_not_a_string_is_refused_not_read_as_missing() {
        let e = tools(Kind::Messages, &json!([{"type": {}}])).unwrap_err();
        assert_eq!(e.field, "tools[0].type");
        let e = tools(Kind::Messages, &json!([5])).unwrap_err();
        assert_eq!(e.field, "tools[0]");
        let e = responses_input(
            &json!([{"type": 7, "content": "hi"}]),
            &MediaCosts::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "input[0].type");
        assert!(tools(Kind::Messages, &json!([{"name": "f"}, {"type": "custom"}])).is_ok());
        assert!(responses_input(&json!([{"content": "hi"}]), &MediaCosts::default()).is_ok());
    }

    #[test]
    fn media_costs_what_the_model_declares() {
        let img = json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x".repeat(10_000)}}]}]);
        assert!(messages_input(&img, &MediaCosts::default()).is_err());
        let media = MediaCosts {
            image: Some(1500),
            ..MediaCosts::default()
        };
        assert_eq!(
            messages_input(&img, &media).unwrap(),
            PER_MESSAGE + 10 + PER_MESSAGE + 1500
        );
        let nested = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]);
        assert!(
            messages_input(&nested, &MediaCosts::default()).is_err(),
            "an image inside a tool result is still an image"
        );
    }
}
