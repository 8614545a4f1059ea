use super::stream::{NativeStream, StreamUsage};
use super::to_chat::{self, ChatStream};
use super::to_messages::request;
use crate::gateway::providers::sse::SseEvent;
use crate::gateway::providers::{ProviderError, Usage};
use serde_json::{json, Value};

fn usage(input: u64, cached_input: u64, cache_write: u64, output: u64) -> Usage {
    Usage {
        input,
        cached_input,
        cache_write,
        output,
        reasoning: 0,
    }
}

// ---- chat request → Messages request ----

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let chat = json!({
        "model": "claude", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "seed": 1, "presence_penalty": 0.1, "stream": true, "stream_options": {"include_usage": true},
        "stop": "END", "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ]},
        ]
    });
    let m = request(&chat).unwrap();
    assert_eq!(
        m,
        json!({
            "system": "Be brief.\n\nBe kind.",
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stream": true,
            "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ]}]
        })
    );
    let m =
        request(&json!({"max_completion_tokens": 7, "stop": ["a", "b"], "messages": []})).unwrap();
    assert_eq!(m["max_tokens"], 7);
    assert_eq!(m["stop_sequences"], json!(["a", "b"]));
}

#[test]
fn tool_calls_and_results_become_blocks_in_alternating_turns() {
    let chat = json!({"max_tokens": 10, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "thanks"},
    ]});
    let m = request(&chat).unwrap();
    assert_eq!(
        m["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me see."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"type": "text", "text": "thanks"},
            ]},
        ])
    );
}

#[test]
fn a_conversation_opens_with_a_user_turn() {
    let m = request(&json!({"messages": [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "hi"},
    ]}))
    .unwrap();
    assert_eq!(m["messages"][0]["role"], "user");
    assert_eq!(m["messages"][1]["role"], "assistant");
    assert_eq!(m["messages"][2]["role"], "user");
    let m = request(&json!({"messages": [{"role": "system", "content": "s"}]})).unwrap();
    assert_eq!(m["messages"].as_array().unwrap().len(), 1);
}

#[test]
fn tools_and_tool_choice_in_anthropic_shape() {
    let tools = json!([
        {"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "time"}},
    ]);
    let cases = [
        (json!(null), None, json!({"type": "auto"})),
        (
            json!("auto"),
            Some(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (json!("required"), None, json!({"type": "any"})),
        (json!("none"), Some(false), json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "time"}}),
            Some(true),
            json!({"type": "tool", "name": "time"}),
        ),
    ];
    for (choice, parallel, want) in cases {
        let chat = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools,
            "tool_choice": choice, "parallel_tool_calls": parallel});
        let m = request(&chat).unwrap();
        assert_eq!(m["tool_choice"], want, "{choice}");
        assert_eq!(
            m["tools"],
            json!([
                {"name": "weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "time", "input_schema": {"type": "object"}},
            ])
        );
    }
}

#[test]
fn what_anthropic_cannot_do_is_refused_by_name() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"n": 2}), "`n`"),
        (json!({"logprobs": true}), "log probabilities"),
        (json!({"top_logprobs": 3}), "log probabilities"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "json_schema",
        ),
        (json!({"audio": {"voice": "x"}}), "audio"),
        (json!({"functions": []}), "`tools`"),
        (json!({"tools": [{"type": "web_search"}]}), "function tools"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "audio",
        ),
    ];
    for (extra, says) in cases {
        let mut chat = json!({"messages": user});
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        let e = request(&chat).unwrap_err();
        assert!(e.contains(says), "{extra}: {e}");
    }
    assert!(request(
        &json!({"messages": user, "n": 1, "logprobs": false, "response_format": {"type": "text"}})
    )
    .is_ok());
}

// ---- Messages reply → chat completion ----

#[test]
fn a_message_becomes_a_chat_completion() {
    let msg = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "now."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 5},
    });
    let (body, u) = to_chat::reply(&msg, 42);
    assert_eq!(u, Some(usage(10, 100, 20, 5)));
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-msg_1", "object": "chat.completion", "created": 42, "model": "claude-x",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking now.", "reasoning_content": "hmm",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 0}},
        })
    );
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        let (body, _) = to_chat::reply(&json!({"content": [], "stop_reason": stop}), 0);
        assert_eq!(body["choices"][0]["finish_reason"], finish);
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
        assert!(
            body.get("usage").is_none(),
            "no usage reported, none made up"
        );
    }
}

// ---- streams ----

/// A complete stream: text, a tool call, usage spread over start and delta.
fn events() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage":
            {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn a_stream_becomes_chat_chunks_ending_in_usage() {
    let mut s = ChatStream::new(42, false);
    let chunks: Vec<_> = events()
        .iter()
        .filter_map(|e| s.chunk(&e.to_string()).unwrap())
        .collect();
    let data: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_str(&c.data).unwrap())
        .collect();
    let deltas: Vec<&Value> = data
        .iter()
        .filter_map(|d| d["choices"].get(0))
        .map(|c| &c["delta"])
        .collect();
    assert_eq!(
        deltas,
        [
            &json!({"role": "assistant", "content": ""}),
            &json!({"reasoning_content": "hmm"}),
            &json!({"content": "Hi"}),
            &json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            &json!({}),
        ]
    );
    assert!(chunks.iter().all(|c| c.event.is_none()));
    assert!(data.iter().all(|d| d["object"] == "chat.completion.chunk"
        && d["id"] == "chatcmpl-msg_1"
        && d["model"] == "claude-x"
        && d["created"] == 42));
    assert_eq!(data[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks.iter().map(|c| c.tokens).sum::<u64>(), 5);
    let last = chunks.last().unwrap();
    assert_eq!(data[7]["choices"], json!([]));
    assert_eq!(data[7]["usage"]["prompt_tokens"], 130);
    assert_eq!(last.usage, Some(usage(10, 100, 20, 9)));
    assert!(
        !last.forward,
        "the usage chunk is shown only when asked for"
    );
    assert!(chunks[..7].iter().all(|c| c.forward));

    let mut s = ChatStream::new(0, true);
    let last = events()
        .iter()
        .filter_map(|e| s.chunk(&e.to_string()).unwrap())
        .last()
        .unwrap();
    assert!(last.forward);
}

#[test]
fn the_native_stream_is_relayed_with_its_usage() {
    let mut s = NativeStream::default();
    let chunks: Vec<_> = events()
        .iter()
        .map(|e| {
            let ty = e["type"].as_str().unwrap().to_string();
            s.chunk(SseEvent {
                event: Some(ty),
                data: e.to_string(),
            })
            .unwrap()
        })
        .collect();
    assert_eq!(chunks.len(), events().len());
    for (c, e) in chunks.iter().zip(events()) {
        assert_eq!(c.event.as_deref(), e["type"].as_str());
        assert_eq!(c.data, e.to_string(), "relayed unchanged");
        assert!(c.forward);
    }
    assert_eq!(
        chunks.iter().map(|c| c.tokens).sum::<u64>(),
        5,
        "one per content_block_delta"
    );
    assert_eq!(chunks[0].usage, Some(usage(10, 100, 20, 1)));
    assert_eq!(
        chunks[13].usage,
        Some(usage(10, 100, 20, 9)),
        "message_delta completes it"
    );
    assert_eq!(chunks.last().unwrap().usage, Some(usage(10, 100, 20, 9)));
    // Without an `event:` line the type names the event.
    let c = NativeStream::default()
        .chunk(SseEvent {
            event: None,
            data: events()[0].to_string(),
        })
        .unwrap();
    assert_eq!(c.event.as_deref(), Some("message_start"));
}

#[test]
fn stream_usage_merges_start_and_delta() {
    let mut u = StreamUsage::default();
    assert_eq!(u.current(), None);
    u.merge(
        &json!({"input_tokens": 10, "cache_read_input_tokens": 3, "output_tokens": 1}),
        false,
    );
    for _ in 0..4 {
        u.content();
    }
    // Cut short here: at least what was delivered.
    assert_eq!(u.current(), Some(usage(10, 3, 0, 4)));
    // A delta may repeat (or correct) the input side; its output is final.
    u.merge(
        &json!({"input_tokens": 12, "cache_creation_input_tokens": 7, "output_tokens": 2}),
        true,
    );
    assert_eq!(u.current(), Some(usage(12, 3, 7, 2)));
    u.merge(&json!({"output_tokens": 6}), true);
    assert_eq!(u.current(), Some(usage(12, 3, 7, 6)));
}

#[test]
fn an_error_event_fails_the_stream() {
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let native = NativeStream::default().chunk(SseEvent {
        event: Some("error".into()),
        data: err.to_string(),
    });
    let chat = ChatStream::new(0, false).chunk(&err.to_string());
    for e in [native.map(|_| ()), chat.map(|_| ())] {
        match e {
            Err(ProviderError::Failed(m)) => {
                assert!(m.contains("overloaded_error: Overloaded"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
