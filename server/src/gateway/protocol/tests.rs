//! The reservation stays a true upper bound through translation: random
//! Messages and Responses requests are bounded in the caller's protocol,
//! translated onto chat completions, and counted by an honest but greedy
//! chat upstream (one token per byte of every text, role, name, argument and
//! tool definition it is sent, plus its chat template, and the declared cost
//! of each image). The bound plus what translation added must cover it.

use super::{messages, responses};
use app::domain::bound::{bound, json_len, Kind, MediaCosts, ModelLimits};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn honest_chat_input(chat: &Value, media: &MediaCosts) -> u64 {
    let mut n = 3; // <|assistant|>\n
    for m in chat["messages"].as_array().into_iter().flatten() {
        n += 4 + m["role"].as_str().map_or(0, |r| r.len() as u64);
        n += match &m["content"] {
            Value::String(s) => s.len() as u64,
            Value::Array(parts) => parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("image_url") => u64::from(media.image.unwrap_or(0)),
                    _ => p["text"].as_str().map_or(0, |t| t.len() as u64),
                })
                .sum(),
            _ => 0,
        };
        for f in ["tool_calls", "tool_call_id", "name"] {
            if !m[f].is_null() {
                n += json_len(&m[f]);
            }
        }
    }
    for f in ["tools", "response_format"] {
        if !chat[f].is_null() {
            n += json_len(&chat[f]);
        }
    }
    n
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,30}"
}

fn block() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        Just(
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        ),
        (text(), text()).prop_map(
            |(id, out)| json!({"type": "tool_result", "tool_use_id": id, "content": out})
        ),
        (text(), text()).prop_map(
            |(id, arg)| json!({"type": "tool_use", "id": id, "name": "f", "input": {"a": arg}})
        ),
        text().prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": ""})),
    ]
}

fn messages_body() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        text().prop_map(Value::String),
        prop::collection::vec(block(), 0..4).prop_map(Value::Array)
    ];
    let message = (prop::sample::select(vec!["user", "assistant"]), content)
        .prop_map(|(r, c)| json!({"role": r, "content": c}));
    (
        prop::collection::vec(message, 1..5),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(ms, system, tool)| {
            let mut b = json!({"model": "m", "messages": ms, "max_tokens": 100});
            if let Some(s) = system {
                b["system"] = json!(s);
            }
            if let Some(d) = tool {
                b["tools"] =
                    json!([{"name": "f", "description": d, "input_schema": {"type": "object"}}]);
            }
            b
        })
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        (prop::sample::select(vec!["user", "assistant", "developer"]), text()).prop_map(|(r, t)| json!({"role": r, "content": t})),
        text().prop_map(|t| json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]})),
        (text(), text()).prop_map(|(id, a)| json!({"type": "function_call", "call_id": id, "name": "f", "arguments": a})),
        (text(), text()).prop_map(|(id, o)| json!({"type": "function_call_output", "call_id": id, "output": o})),
    ]
}

fn responses_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![text().prop_map(Value::String), prop::collection::vec(item(), 1..5).prop_map(Value::Array)],
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(input, instructions, tool)| {
            let mut b = json!({"model": "m", "input": input});
            if let Some(i) = instructions {
                b["instructions"] = json!(i);
            }
            if let Some(d) = tool {
                b["tools"] = json!([{"type": "function", "name": "f", "description": d, "parameters": {"type": "object"}}]);
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn translation_keeps_the_bound_an_upper_bound(
        (kind, mut body) in prop_oneof![
            messages_body().prop_map(|b| (Kind::Messages, b)),
            responses_body().prop_map(|b| (Kind::Responses, b)),
        ],
        image in 1u32..=2000,
    ) {
        let media = MediaCosts { image: Some(image), audio: None, file: None };
        let pass = BTreeSet::new();
        let limits = ModelLimits { max_output_tokens: Some(500), media: &media, pass_through: &pass };
        let b = bound(kind, &mut body, limits).map_err(|r| TestCaseError::fail(r.to_string()))?;
        let chat = match kind {
            Kind::Messages => messages::to_chat(&body),
            _ => responses::to_chat(&body),
        };
        let grown = json_len(&chat).saturating_sub(json_len(&body));
        let honest = honest_chat_input(&chat, &media);
        prop_assert!(b.input + grown >= honest, "{} + {grown} < {honest} for {body}\n→ {chat}", b.input);
        prop_assert_eq!(&chat["max_tokens"], &json!(b.per_choice));
    }
}
