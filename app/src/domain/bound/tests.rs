use super::*;
use proptest::prelude::*;
use serde_json::json;

fn limits<'a>(media: &'a MediaCosts, pass: &'a BTreeSet<String>) -> ModelLimits<'a> {
    ModelLimits {
        max_output_tokens: Some(1000),
        media,
        pass_through: pass,
    }
}

fn run(kind: Kind, mut body: Value) -> (Result<Bound, Refused>, Value) {
    let media = MediaCosts {
        image: None,
        audio: None,
        file: None,
    };
    let pass = BTreeSet::new();
    let r = bound(kind, &mut body, limits(&media, &pass));
    (r, body)
}

fn refused_field(kind: Kind, body: Value) -> String {
    match run(kind, body).0 {
        Err(r) => r.field,
        Ok(b) => panic!("expected a refusal, got {b:?}"),
    }
}

#[test]
fn every_cost_changing_field_is_bounded_or_refused() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // Choice counts multiply the output.
    let (b, _) = run(
        Kind::Chat,
        json!({"messages": msgs, "n": 20, "max_tokens": 10}),
    );
    assert_eq!(b.unwrap().output, 200);
    let (b, _) = run(
        Kind::Completions,
        json!({"prompt": "x", "best_of": 20, "n": 2, "max_tokens": 10}),
    );
    assert_eq!(b.unwrap().output, 200);
    assert_eq!(
        refused_field(Kind::Chat, json!({"messages": msgs, "n": 129})),
        "n"
    );
    assert_eq!(
        refused_field(Kind::Chat, json!({"messages": msgs, "n": 0})),
        "n"
    );
    assert_eq!(
        refused_field(Kind::Completions, json!({"prompt": "x", "best_of": 21})),
        "best_of"
    );
    // Several prompts in one completions call each get their choices.
    let (b, _) = run(
        Kind::Completions,
        json!({"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 5}),
    );
    assert_eq!(b.unwrap().output, 30);

    // Every length field is rewritten to the one limit.
    let (b, body) = run(
        Kind::Chat,
        json!({"messages": msgs, "max_completion_tokens": 1, "max_tokens": 100000}),
    );
    assert_eq!(b.unwrap().per_choice, 1);
    assert_eq!(body["max_tokens"], 1);
    assert_eq!(body["max_completion_tokens"], 1);
    let (b, body) = run(Kind::Chat, json!({"messages": msgs, "n_predict": 5000}));
    assert_eq!(b.unwrap().per_choice, 1000, "capped at the model's limit");
    assert_eq!(body["n_predict"], 1000);
    assert_eq!(body["max_tokens"], 1000);
    let (b, body) = run(
        Kind::Chat,
        json!({"messages": msgs, "n_predict": -1, "max_tokens": 7}),
    );
    assert_eq!(b.unwrap().per_choice, 7);
    assert_eq!(body["n_predict"], 7, "-1 (unlimited) is rewritten too");
    let (b, body) = run(
        Kind::Chat,
        json!({"messages": msgs, "options": {"num_predict": 5000, "temperature": 0.1}}),
    );
    assert_eq!(b.unwrap().per_choice, 1000);
    assert_eq!(body["options"]["num_predict"], 1000);
    assert_eq!(
        refused_field(
            Kind::Chat,
            json!({"messages": msgs, "options": {"num_gpu": 1}})
        ),
        "options.num_gpu"
    );
    assert_eq!(
        refused_field(Kind::Chat, json!({"messages": msgs, "max_tokens": 0})),
        "max_tokens"
    );
    assert_eq!(
        refused_field(Kind::Chat, json!({"messages": msgs, "max_tokens": "9"})),
        "max_tokens"
    );

    // Unknown and provider-specific fields are refused by name.
    for f in [
        "use_beam_search",
        "service_tier",
        "prediction",
        "chat_template",
        "modalities",
    ] {
        let mut body = json!({"messages": msgs});
        body[f] = json!(true);
        assert_eq!(refused_field(Kind::Chat, body), f);
    }
    assert_eq!(
        refused_field(Kind::Embeddings, json!({"input": "x", "max_tokens": 5})),
        "max_tokens"
    );
}

#[test]
fn tools_and_schemas_count_as_input() {
    let big = "x".repeat(50_000);
    let tools = json!([{"type": "function", "function": {"name": "f", "description": big}}]);
    let (b, _) = run(
        Kind::Chat,
        json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools}),
    );
    assert!(b.unwrap().input > 50_000);
    let (b, _) = run(
        Kind::Chat,
        json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": big}}]}]}),
    );
    assert!(b.unwrap().input > 50_000, "assistant tool calls count too");
}

#[test]
fn media_parts_need_a_declared_cost() {
    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]});
    assert_eq!(
        refused_field(Kind::Chat, image.clone()),
        "messages[0].content[1].type"
    );
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    ]}]});
    assert_eq!(
        refused_field(Kind::Chat, audio.clone()),
        "messages[0].content[0].type"
    );
    let file = json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]});
    assert_eq!(
        refused_field(Kind::Chat, file),
        "messages[0].content[0].type"
    );
    let odd = json!({"messages": [{"role": "user", "content": [{"type": "video_url"}]}]});
    assert_eq!(
        refused_field(Kind::Chat, odd),
        "messages[0].content[0].type"
    );

    let media = MediaCosts {
        image: Some(1500),
        audio: Some(3000),
        file: None,
    };
    let pass = BTreeSet::new();
    let mut body = image;
    let b = bound(Kind::Chat, &mut body, limits(&media, &pass)).unwrap();
    assert!(b.input >= 1500 && b.input < 1700, "{b:?}");
    let mut body = audio;
    let b = bound(Kind::Chat, &mut body, limits(&media, &pass)).unwrap();
    assert!(b.input >= 3000, "{b:?}");
}

#[test]
fn pass_through_forwards_what_an_admin_allows() {
    let media = MediaCosts::default();
    let pass: BTreeSet<String> = ["service_tier".to_string(), "options.num_gpu".to_string()]
        .into_iter()
        .collect();
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "service_tier": "flex", "options": {"num_gpu": 1}});
    let b = bound(Kind::Chat, &mut body, limits(&media, &pass));
    assert!(b.is_ok(), "{b:?}");
    assert_eq!(body["service_tier"], "flex");
}

// ---------------------------------------------------------------------------
// An honest but greedy upstream: it renders a chat template, counts one token
// per byte (the worst case of a byte-level tokenizer), charges the declared
// cost for each image, generates every choice and candidate, and honours the
// *largest* length field it finds (≤ 0 meaning no limit, as llama.cpp and
// Ollama read them). The bound must cover whatever it reports.
// ---------------------------------------------------------------------------

const UNLIMITED_RUN: u64 = 1_000_000;

fn honest_usage(kind: Kind, body: &Value, media: &MediaCosts) -> (u64, u64) {
    let mut prompt = 0u64;
    let mut prompts = 1u64;
    match kind {
        Kind::Chat => {
            for m in body["messages"].as_array().into_iter().flatten() {
                // <|start|>role\n … <|end|>\n
                prompt += 4 + m["role"].as_str().map_or(0, |r| r.len() as u64);
                match &m["content"] {
                    Value::String(s) => prompt += s.len() as u64,
                    Value::Array(parts) => {
                        for p in parts {
                            prompt += match p["type"].as_str() {
                                Some("text") => p["text"].as_str().map_or(0, |t| t.len() as u64),
                                Some("image_url") => u64::from(media.image.unwrap_or(0)),
                                _ => 0,
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(name) = m["name"].as_str() {
                    prompt += name.len() as u64 + 1;
                }
                if !m["tool_calls"].is_null() {
                    prompt += json_len(&m["tool_calls"]);
                }
            }
            prompt += 3; // <|assistant|>\n
            for f in ["tools", "response_format"] {
                if !body[f].is_null() {
                    prompt += json_len(&body[f]);
                }
            }
        }
        _ => match &body["prompt"] {
            Value::String(s) => prompt += s.len() as u64,
            Value::Array(items) => {
                prompts = items.len() as u64;
                prompt += items
                    .iter()
                    .map(|i| i.as_str().map_or(0, str::len) as u64)
                    .sum::<u64>();
            }
            _ => {}
        },
    }
    let mut per_choice: Option<u64> = None;
    let mut lengths: Vec<&Value> = LENGTH_FIELDS.iter().map(|f| &body[*f]).collect();
    lengths.push(&body["options"]["num_predict"]);
    for v in lengths {
        if let Some(n) = v.as_i64() {
            let n = if n <= 0 { UNLIMITED_RUN } else { n as u64 };
            per_choice = Some(per_choice.map_or(n, |p| p.max(n)));
        }
    }
    let per_choice = per_choice.unwrap_or(UNLIMITED_RUN);
    let choices = body["n"]
        .as_u64()
        .unwrap_or(1)
        .max(body["best_of"].as_u64().unwrap_or(1));
    (prompt, per_choice * choices * prompts)
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn part() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        Just(
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
        ),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        text().prop_map(Value::String),
        prop::collection::vec(part(), 0..4).prop_map(Value::Array),
        Just(Value::Null),
    ];
    (
        prop::sample::select(vec!["system", "user", "assistant", "tool"]),
        content,
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(role, content, name, call)| {
            let mut m = json!({"role": role, "content": content});
            if let Some(n) = name {
                m["name"] = json!(n);
            }
            if let Some(args) = call {
                m["tool_calls"] = json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]);
            }
            m
        })
}

fn length() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(prop_oneof![-2i64..=0, 1i64..=200_000])
}

prop_compose! {
    fn chat_body()(
        messages in prop::collection::vec(message(), 1..5),
        tools in prop::option::of(prop::collection::vec(text(), 0..3)),
        n in prop::option::of(1u64..=5),
        max_tokens in length(),
        max_completion_tokens in length(),
        n_predict in length(),
        num_predict in length(),
    ) -> Value {
        let mut b = json!({"model": "m", "messages": messages});
        if let Some(t) = tools {
            b["tools"] = json!(t.iter().map(|d| json!({"type": "function", "function": {"name": "f", "description": d}})).collect::<Vec<_>>());
        }
        if let Some(n) = n { b["n"] = json!(n); }
        if let Some(v) = max_tokens { b["max_tokens"] = json!(v.max(1)); }
        if let Some(v) = max_completion_tokens { b["max_completion_tokens"] = json!(v.max(1)); }
        if let Some(v) = n_predict { b["n_predict"] = json!(v); }
        if let Some(v) = num_predict { b["options"] = json!({"num_predict": v}); }
        b
    }
}

prop_compose! {
    fn completions_body()(
        prompt in prop_oneof![
            text().prop_map(Value::String),
            prop::collection::vec(text(), 1..4).prop_map(|v| json!(v)),
        ],
        n in prop::option::of(1u64..=5),
        best_of in prop::option::of(1u64..=5),
        max_tokens in length(),
        n_predict in length(),
    ) -> Value {
        let mut b = json!({"model": "m", "prompt": prompt});
        if let Some(n) = n { b["n"] = json!(n); }
        if let Some(n) = best_of { b["best_of"] = json!(n); }
        if let Some(v) = max_tokens { b["max_tokens"] = json!(v.max(1)); }
        if let Some(v) = n_predict { b["n_predict"] = json!(v); }
        b
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_bound_covers_what_an_honest_upstream_reports(
        (kind, mut body) in prop_oneof![
            chat_body().prop_map(|b| (Kind::Chat, b)),
            completions_body().prop_map(|b| (Kind::Completions, b)),
        ],
        cap in prop::option::of(1u32..=8192),
        image in prop::option::of(1u32..=2000),
    ) {
        let media = MediaCosts { image, audio: None, file: None };
        let pass = BTreeSet::new();
        let l = ModelLimits { max_output_tokens: cap, media: &media, pass_through: &pass };
        match bound(kind, &mut body, l) {
            Ok(b) => {
                let (input, output) = honest_usage(kind, &body, &media);
                prop_assert!(b.input >= input, "input {} < {input} for {body}", b.input);
                prop_assert!(b.output >= output, "output {} < {output} for {body}", b.output);
            }
            // Only images without a declared cost are refused here.
            Err(r) => prop_assert!(image.is_none() && r.field.ends_with(".type"), "{r}"),
        }
    }
}

#[test]
fn responses_and_messages_are_bounded_by_their_own_fields() {
    // The Responses API's length field is rewritten, or added.
    let (b, body) = run(
        Kind::Responses,
        json!({"input": "hi", "max_output_tokens": 50_000, "reasoning": {"effort": "high"}}),
    );
    assert_eq!(b.unwrap().per_choice, 1000);
    assert_eq!(body["max_output_tokens"], 1000);
    let (_, body) = run(Kind::Responses, json!({"input": "hi"}));
    assert_eq!(body["max_output_tokens"], 1000);
    assert!(body.get("max_tokens").is_none());
    // Anthropic's `max_tokens`, likewise; thinking spends within it.
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let (b, body) = run(
        Kind::Messages,
        json!({"messages": msgs, "max_tokens": 7, "thinking": {"type": "enabled", "budget_tokens": 5}}),
    );
    assert_eq!(
        (b.unwrap().output, body["max_tokens"].clone()),
        (7, json!(7))
    );
    // Fields that make the upstream do more than the bound sees are refused.
    for (field, body) in [
        ("background", json!({"input": "x", "background": true})),
        (
            "service_tier",
            json!({"input": "x", "service_tier": "priority"}),
        ),
        ("prompt", json!({"input": "x", "prompt": {"id": "pmpt_1"}})),
        (
            "conversation",
            json!({"input": "x", "conversation": "conv_1"}),
        ),
        ("n", json!({"input": "x", "n": 4})),
    ] {
        assert_eq!(refused_field(Kind::Responses, body), field);
    }
    for (field, body) in [
        (
            "service_tier",
            json!({"messages": msgs, "service_tier": "auto"}),
        ),
        ("mcp_servers", json!({"messages": msgs, "mcp_servers": []})),
        ("container", json!({"messages": msgs, "container": "c"})),
        (
            "tools[0].type",
            json!({"messages": msgs, "tools": [{"type": "code_execution_20250522", "name": "x"}]}),
        ),
    ] {
        assert_eq!(refused_field(Kind::Messages, body), field);
    }
    assert_eq!(
        refused_field(Kind::Responses, json!({"model": "m"})),
        "input"
    );
}

#[test]
fn anthropic_tools_carry_their_hidden_prompt() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let tool = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    let (without, _) = run(Kind::Messages, json!({"messages": msgs}));
    let (with, _) = run(Kind::Messages, json!({"messages": msgs, "tools": tool}));
    let grown = with.unwrap().input - without.unwrap().input;
    assert_eq!(grown, TOOL_PROMPT + "tools".len() as u64 + json_len(&tool));
}
