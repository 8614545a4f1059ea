//! `provider: anthropic` end to end: chat completions callers served by the
//! mock upstream's Messages API (JSON, streams, a tool call round trip),
//! charged for fresh input, cache reads and cache writes at their own
//! prices; and the native calls of the provider, straight against the mock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::money::MICRO;
use common::upstream::anthropic::ANTHROPIC_KEY;
use common::upstream::Upstream;
use common::*;
use serde_json::{json, Value};
use server::gateway::providers::{anthropic, Kind, ProviderError, Reply, Usage};
use std::time::Duration;

const KEY_VAR: &str = "TOLLGATE_TEST_ANTHROPIC_KEY";

fn config(up: &Upstream) -> String {
    let u = &up.root_url;
    let price = "price: { input: 1, output: 2, cached_input: 0.1, cache_write: 1.25 }";
    format!(
        "\
models:
  claude: {{ provider: anthropic, base_url: \"{u}\", api_key_env: {KEY_VAR}, upstream_model: claude-mock, {price}, max_output_tokens: 100 }}
  claude-broken: {{ provider: anthropic, base_url: \"{u}\", api_key_env: {KEY_VAR}, upstream_model: fail, {price} }}
  claude-cut: {{ provider: anthropic, base_url: \"{u}\", api_key_env: {KEY_VAR}, upstream_model: stream-error, {price} }}
clients:
  default:
    max: 100
    starting: 100
    model_access: {{ default: whitelist }}
"
    )
}

async fn gateway(backend: Backend) -> (TestApp, Upstream) {
    let up = Upstream::start().await;
    let app = TestApp::builder(backend)
        .config(&config(&up))
        .clients(&["app"])
        .keys(&["app"])
        .env(KEY_VAR, ANTHROPIC_KEY)
        .spawn()
        .await;
    (app, up)
}

/// What the mock's usage costs at `claude`'s price: 11 input at 1, 200
/// cache reads at 0.1, 30 cache writes at 1.25, 7 output at 2 (per 1k).
const COST: i64 =
    11 * MICRO / 1000 + 200 * MICRO / 10 / 1000 + 30 * MICRO * 5 / 4 / 1000 + 7 * 2 * MICRO / 1000;

/// Checks the ledger row of a call that reported the mock's usage, and that
/// the pool paid exactly that.
async fn assert_charged(e: &TestApp, rid: &str, before: i64) {
    let row = e.wait_ledger_row(rid).await;
    assert_eq!(
        (row.tokens_in, row.tokens_out, row.code.as_str()),
        (241, 7, "ok"),
        "{:?}",
        e.backend
    );
    assert_eq!(row.coins_micro, COST, "{:?}", e.backend);
    assert_eq!(e.balance("app").await, before - COST, "{:?}", e.backend);
}

async fn read_sse(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The JSON chunks of a chat stream that ended in `[DONE]`.
fn chat_chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

async fn chat_json_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let before = e.balance("app").await;
    let body = json!({"model": "claude", "temperature": 0.2, "seed": 3, "user": "u-7", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]});
    let (status, reply, rid) = e
        .post(Some(&e.keys["app"]), "/v1/chat/completions", body)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["id"], "chatcmpl-msg_mock");
    let choice = &reply["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from Claude");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none(), "{reply}");
    assert_eq!(reply["usage"]["prompt_tokens"], 241);
    assert_eq!(
        reply["usage"]["prompt_tokens_details"]["cached_tokens"],
        200
    );
    assert_eq!(reply["usage"]["completion_tokens"], 7);

    assert_eq!(
        up.last_body(),
        json!({
            "model": "claude-mock", "system": "Be brief.", "max_tokens": 100, "temperature": 0.2,
            "metadata": {"user_id": "u-7"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        }),
        "a Messages body: no seed, the gateway's output limit"
    );
    assert_eq!(up.last_header("x-api-key").as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(
        up.last_header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_charged(&e, &rid.unwrap(), before).await;
}
on_backends!(chat_completions_on_an_anthropic_model, chat_json_story);

async fn streaming_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let before = e.balance("app").await;
    let body =
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = e.send_chat("app", &body).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let chunks = chat_chunks(&read_sse(resp).await);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from Claude");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage chunk hidden unless asked for"
    );
    assert_eq!(up.last_body()["stream"], true);
    assert!(up.last_body().get("stream_options").is_none());
    assert_charged(&e, &rid, before).await;

    // With include_usage the closing usage chunk is relayed and matches the charge.
    let before = e.balance("app").await;
    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = e.send_chat("app", &body).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let chunks = chat_chunks(&read_sse(resp).await);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 241);
    assert_eq!(last["usage"]["completion_tokens"], 7);
    assert_charged(&e, &rid, before).await;
}
on_backends!(chat_streams_on_an_anthropic_model, streaming_story);

async fn tool_round_trip_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let tools = json!([{"type": "function", "function": {"name": "weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let body = json!({"model": "claude", "tools": tools, "parallel_tool_calls": false, "messages": messages});
    let (status, reply, _) = e
        .post(Some(&e.keys["app"]), "/v1/chat/completions", body)
        .await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(
        (&call["id"], &call["type"], &call["function"]["name"]),
        (&json!("toolu_1"), &json!("function"), &json!("weather"))
    );
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let sent = up.last_body();
    assert_eq!(
        sent["tools"],
        json!([{"name": "weather", "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );

    // The caller runs the tool and sends its result back.
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}));
    let body = json!({"model": "claude", "tools": tools, "messages": messages});
    let (status, reply, _) = e
        .post(Some(&e.keys["app"]), "/v1/chat/completions", body)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    assert_eq!(
        up.last_body()["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Hello from Claude"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
        ])
    );

    // Streamed, the call arrives in pieces that add up.
    let body = json!({"model": "claude", "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let chunks = chat_chunks(&read_sse(e.send_chat("app", &body).await).await);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["name"], "weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
}
on_backends!(
    a_tool_call_round_trip_on_an_anthropic_model,
    tool_round_trip_story
);

async fn errors_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let key = &e.keys["app"];
    let before = e.balance("app").await;

    let (status, body, rid) = e.chat("app", "claude-broken").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("upstream_error")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("500"),
        "{body}"
    );
    let row = e.wait_ledger_row(&rid.unwrap()).await;
    assert_eq!((row.code.as_str(), row.coins_micro), ("upstream_error", 0));

    // What Anthropic cannot do is refused by name, and nothing goes upstream.
    let calls = up.calls();
    let asks = [
        (json!({"n": 2}), "`n`"),
        (json!({"logprobs": true}), "log probabilities"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            "json_schema",
        ),
    ];
    for (extra, says) in asks {
        let mut body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, reply, rid) = e.post(Some(key), "/v1/chat/completions", body).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{reply}"
        );
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(says),
            "{reply}"
        );
        let row = e.wait_ledger_row(&rid.unwrap()).await;
        assert_eq!((row.code.as_str(), row.coins_micro), ("refused", 0));
    }
    assert_eq!(
        up.calls(),
        calls,
        "{backend:?}: nothing refused went upstream"
    );
    assert_eq!(e.balance("app").await, before, "{backend:?}");

    // An error event mid-stream ends the stream with an error; what was
    // read (the input, one delta) is charged.
    let body = json!({"model": "claude-cut", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = e.send_chat("app", &body).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let events = read_sse(resp).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{events:?}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded"),
        "{last}"
    );
    let row = e.wait_ledger_row(&rid).await;
    let cost =
        11 * MICRO / 1000 + 200 * MICRO / 10 / 1000 + 30 * MICRO * 5 / 4 / 1000 + 2 * MICRO / 1000;
    assert_eq!(
        (row.tokens_in, row.tokens_out, row.coins_micro),
        (241, 1, cost),
        "{backend:?}"
    );
}
on_backends!(anthropic_errors_and_refusals, errors_story);

/// `/v1/messages` goes upstream natively; `/v1/responses` reaches the
/// model through chat completions. Both are charged at the cache prices.
async fn other_protocols_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let key = &e.keys["app"];
    let body = json!({"model": "claude", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]});
    let before = e.balance("app").await;
    let (status, reply, rid) = e.post(Some(key), "/v1/messages", body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["content"][0]["text"], "Hello from Claude");
    assert_eq!(
        up.last_body(),
        json!({"model": "claude-mock", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
        "as sent, with the upstream model and the gateway's output limit"
    );
    assert_charged(&e, &rid.unwrap(), before).await;

    let mut body = body;
    body["stream"] = json!(true);
    let before = e.balance("app").await;
    let resp = e
        .http
        .post(format!("{}/v1/messages", e.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: message_stop\n"), "{text}");
    assert_charged(&e, &rid, before).await;

    let before = e.balance("app").await;
    let body = json!({"model": "claude", "input": "hi", "store": false});
    let (status, reply, rid) = e.post(Some(key), "/v1/responses", body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["output"][0]["content"][0]["text"], "Hello from Claude",
        "{reply}"
    );
    assert_eq!(up.last_body()["messages"][0]["content"][0]["text"], "hi");
    assert_charged(&e, &rid.unwrap(), before).await;
}
on_backends!(
    messages_and_responses_on_an_anthropic_model,
    other_protocols_story
);

// ---- the provider's native calls, straight against the mock ----

fn target<'a>(up: &'a Upstream, model: &'a str) -> anthropic::Target<'a> {
    anthropic::Target {
        base_url: &up.root_url,
        api_key_env: None,
        upstream_model: model,
        timeout: Duration::from_secs(10),
    }
}

fn mock_usage(output: u64) -> Usage {
    Usage {
        input: 11,
        cached_input: 200,
        cache_write: 30,
        output,
        reasoning: 0,
    }
}

#[tokio::test]
async fn native_messages_go_as_they_are() {
    let up = Upstream::start().await;
    let http = reqwest::Client::new();
    let body = json!({"model": "claude", "max_tokens": 50, "system": [{"type": "text", "text": "s"}],
        "messages": [{"role": "user", "content": "hi"}]});
    let reply = anthropic::call(
        &http,
        &target(&up, "claude-mock"),
        Kind::Messages,
        body.clone(),
        false,
        false,
    )
    .await
    .unwrap();
    let Reply::Json { body: reply, usage } = reply else {
        panic!("a JSON reply")
    };
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["content"][0]["text"], "Hello from Claude");
    assert_eq!(usage, mock_usage(7));
    let mut sent = body;
    sent["model"] = json!("claude-mock");
    assert_eq!(up.last_body(), sent, "only the model is replaced");
    assert_eq!(
        up.last_header("x-api-key"),
        None,
        "no key configured, none sent"
    );

    let body = json!({"model": "claude", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let Reply::Stream(stream) = anthropic::call(
        &http,
        &target(&up, "claude-mock"),
        Kind::Messages,
        body,
        true,
        false,
    )
    .await
    .unwrap() else {
        panic!("a stream")
    };
    let chunks: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    let names: Vec<&str> = chunks.iter().map(|c| c.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(chunks.iter().map(|c| c.tokens).sum::<u64>(), 3);
    assert_eq!(chunks[0].usage, Some(mock_usage(1)));
    assert_eq!(chunks.last().unwrap().usage, Some(mock_usage(7)));

    let failed = anthropic::call(
        &http,
        &target(&up, "fail"),
        Kind::Messages,
        json!({"messages": []}),
        false,
        false,
    )
    .await;
    assert!(
        matches!(failed, Err(ProviderError::Status { status: 500, message: m, .. }) if m.contains("boom"))
    );
}

#[tokio::test]
async fn tokens_are_counted_without_the_generation_fields() {
    let up = Upstream::start().await;
    let body = json!({"model": "claude", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let counted =
        anthropic::count_tokens(&reqwest::Client::new(), &target(&up, "claude-mock"), body)
            .await
            .unwrap();
    assert_eq!(counted, json!({"input_tokens": 17}));
    assert_eq!(
        up.last_body(),
        json!({"model": "claude-mock", "messages": [{"role": "user", "content": "hi"}]})
    );
}
