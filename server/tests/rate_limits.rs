//! Rate limits end to end: the real server on both databases, one instance
//! and two sharing PostgreSQL, the `dummy` model (no network).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::rate::{base_share, KEEP_SHARES, WINDOW_MS};
use app::ssr::entities::rate_window;
use app::ssr::keys::{self, KeyTerms};
use app::ssr::now_ms;
use app::ssr::owners::OwnerKind;
use common::*;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 1, output: 1 }, max_output_tokens: 2000 }
  gone:
    provider: openai
    base_url: http://127.0.0.1:9
    upstream_model: nothing
    price: { input: 1, output: 1 }
    fallbacks: [dummy]
clients:
  default:
    max: -2
    model_access: { default: whitelist }
    rate_limits: { requests_per_minute: 5 }
  wordy:
    max: -2
    model_access: { default: whitelist }
    rate_limits: { tokens_per_minute: 1000 }
  busy:
    max: -2
    model_access: { default: whitelist }
    rate_limits: { requests_per_minute: 60 }
  free:
    max: -2
    model_access: { default: whitelist }
  twice:
    max: -2
    model_access: { default: whitelist }
    rate_limits: { requests_per_minute: 2 }
";

const CLIENTS: [&str; 5] = ["five", "wordy", "busy", "free", "twice"];

async fn gateway(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .config(CONFIG)
        .clients(&CLIENTS)
        .keys(&CLIENTS)
        .spawn()
        .await
}

/// Windows are whole minutes of the clock: a story that must stay inside
/// one starts with at least 20 seconds of its window left.
async fn early_in_a_window() {
    let into = now_ms().rem_euclid(WINDOW_MS);
    if into > WINDOW_MS - 20_000 {
        let wait = u64::try_from(WINDOW_MS - into).unwrap() + 50;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn request_id(&self) -> &str {
        self.header("x-request-id").unwrap()
    }

    /// Asserts the request headers say `limit` and `remaining`, with a reset
    /// within the minute.
    fn assert_requests(&self, limit: u64, remaining: u64) {
        assert_eq!(
            self.header("x-ratelimit-limit-requests"),
            Some(limit.to_string().as_str()),
            "{:?}",
            self.headers
        );
        assert_eq!(
            self.header("x-ratelimit-remaining-requests"),
            Some(remaining.to_string().as_str()),
            "{:?}",
            self.headers
        );
        let reset = self.header("x-ratelimit-reset-requests").unwrap();
        let secs: u64 = reset.strip_suffix('s').unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{reset}");
    }

    fn assert_rate_limited(&self, says: &str) {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(
            self.body["error"]["code"], "rate_limit_exceeded",
            "{}",
            self.body
        );
        let msg = self.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{msg}");
        let after: u64 = self.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&after), "{after}");
    }
}

async fn send(app: &TestApp, key: &str, path: &str, body: Value) -> Reply {
    let resp = app
        .http
        .post(format!("{}{path}", app.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

async fn chat(app: &TestApp, key: &str, body: Value) -> Reply {
    send(app, key, "/v1/chat/completions", body).await
}

/// A refused call leaves a ledger row with no coins that says why.
async fn assert_refused_row(app: &TestApp, request_id: &str) {
    let row = app.wait_ledger_row(request_id).await;
    assert_eq!(
        (row.coins_micro, row.code.as_str(), row.outcome.as_str()),
        (0, "refused", "rate_limit_exceeded")
    );
}

async fn requests_per_minute_story(backend: Backend) {
    let app = gateway(backend).await;
    early_in_a_window().await;
    let key = app.keys["five"].clone();
    for i in 0..5 {
        // JSON and streamed replies alike carry the headers.
        let body = json!({"model": "dummy", "stream": i == 4, "messages": [{"role": "user", "content": "hi"}]});
        let r = chat(&app, &key, body).await;
        assert_eq!(r.status, 200, "call {i}: {}", r.body);
        r.assert_requests(5, 4 - i);
        assert!(
            r.header("x-ratelimit-limit-tokens").is_none(),
            "no token limit"
        );
    }
    let sixth = chat(&app, &key, chat_body("dummy")).await;
    sixth.assert_rate_limited("has used its 5 requests per minute");
    sixth.assert_requests(5, 0);
    assert_eq!(sixth.body["error"]["type"], "requests");
    assert_refused_row(&app, sixth.request_id()).await;
    // Anthropic's shape on /v1/messages.
    let body = json!({"model": "dummy", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let m = send(&app, &key, "/v1/messages", body).await;
    m.assert_rate_limited("requests per minute");
    assert_eq!(m.body["error"]["type"], "rate_limit_error", "{}", m.body);
    // Other owners are not affected.
    let other = chat(&app, &app.keys["busy"], chat_body("dummy")).await;
    assert_eq!(other.status, 200);
    other.assert_requests(60, 59);
}
on_backends!(
    a_client_over_its_requests_per_minute_gets_429,
    requests_per_minute_story
);

async fn key_limit_story(backend: Backend) {
    let app = gateway(backend).await;
    early_in_a_window().await;
    let terms = KeyTerms {
        label: "slow",
        expires_at: None,
        created_by: None,
        limits: app::domain::rate::RateLimits {
            requests_per_minute: Some(2),
            tokens_per_minute: None,
        },
    };
    let owner = (OwnerKind::Client, app.client_id("busy"));
    let slow = keys::create_with(&app.db, owner, &terms, now_ms())
        .await
        .unwrap()
        .secret;
    for remaining in [1, 0] {
        let r = chat(&app, &slow, chat_body("dummy")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // The key's limit is the tighter one, so it speaks.
        r.assert_requests(2, remaining);
    }
    let third = chat(&app, &slow, chat_body("dummy")).await;
    third.assert_rate_limited("this key has used its 2 requests per minute");
    assert_refused_row(&app, third.request_id()).await;
    // The owner's other key still has the owner's limit, less what the
    // limited key used.
    let r = chat(&app, &app.keys["busy"], chat_body("dummy")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.assert_requests(60, 57);
    // `tollgate keys create` gives a key its limits too.
    let out = app.tollgate(&[
        "keys",
        "create",
        "--client",
        "busy",
        "--requests-per-minute",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = chat(&app, &one, chat_body("dummy")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.assert_requests(1, 0);
    chat(&app, &one, chat_body("dummy"))
        .await
        .assert_rate_limited("this key has used its 1 requests per minute");
    let out = app.tollgate(&[
        "keys",
        "create",
        "--client",
        "busy",
        "--tokens-per-minute",
        "0",
    ]);
    assert!(!out.status.success());
}
on_backends!(a_key_is_held_to_its_own_lower_limit, key_limit_story);

fn words(n: usize) -> String {
    vec!["w"; n].join(" ")
}

async fn tokens_per_minute_story(backend: Backend) {
    let app = gateway(backend).await;
    early_in_a_window().await;
    let key = app.keys["wordy"].clone();
    let ask = |content: String, max_tokens: u64| json!({"model": "dummy", "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]});
    // 300 words in, one out: the dummy counts a word as a token (and 3 per
    // message), so this uses 304 of the 1000; the rest of its worst case
    // comes back.
    let first = chat(&app, &key, ask(words(300), 1)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["usage"]["total_tokens"], 304, "{}", first.body);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("1000"));
    assert!(first.header("x-ratelimit-limit-requests").is_none());
    // A call that might use 750 tokens or more does not fit in the 696 left…
    let big = chat(&app, &key, ask("hello there".into(), 750)).await;
    big.assert_rate_limited("has 696 of its 1000 tokens per minute left");
    assert_eq!(big.body["error"]["type"], "tokens");
    assert_eq!(big.header("x-ratelimit-remaining-tokens"), Some("696"));
    assert_refused_row(&app, big.request_id()).await;
    // … one that might use 500 and a little does, and the headers count
    // this call's whole worst case until it ends.
    let small = chat(&app, &key, ask("hello there".into(), 500)).await;
    assert_eq!(small.status, 200, "{}", small.body);
    let remaining: u64 = small
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 196, "{remaining}");
    // A call bigger than the whole limit is told so.
    let huge = chat(&app, &key, ask("hello".into(), 1500)).await;
    huge.assert_rate_limited("more than the 1000 tokens per minute");
}
on_backends!(
    tokens_per_minute_refuse_a_worst_case_beyond_what_is_left,
    tokens_per_minute_story
);

/// A call that falls back to another model is still one request (each
/// model's worst case counts as tokens in turn).
async fn fallback_story(backend: Backend) {
    let app = gateway(backend).await;
    early_in_a_window().await;
    let key = app.keys["twice"].clone();
    for remaining in [1, 0] {
        let r = chat(&app, &key, chat_body("gone")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-tollgate-model"), Some("dummy"));
        r.assert_requests(2, remaining);
    }
    let third = chat(&app, &key, chat_body("gone")).await;
    third.assert_rate_limited("has used its 2 requests per minute");
    assert_refused_row(&app, third.request_id()).await;
}
on_backends!(a_call_that_falls_back_is_one_request, fallback_story);

async fn unlimited_story(backend: Backend) {
    let app = gateway(backend).await;
    for _ in 0..8 {
        let r = chat(&app, &app.keys["free"], chat_body("dummy")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let named: Vec<&str> = r
            .headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("x-ratelimit"))
            .collect();
        assert!(named.is_empty(), "{named:?}");
    }
}
on_backends!(an_owner_without_rate_limits_is_unlimited, unlimited_story);

/// 200 concurrent calls, half on each of two instances, against 60 requests
/// per minute. None beyond 60 may pass. Both instances have more calls than
/// the limit, so each uses every share it takes; the most that can be left
/// unused is what one instance keeps when the other is refused:
/// `KEEP_SHARES × base_share(60)` = 12.
async fn two_instances_story(backend: Backend) {
    let app = gateway(backend).await;
    let second = app.spawn_instance();
    early_in_a_window().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = if i % 2 == 0 {
            app.url().to_string()
        } else {
            second.url.clone()
        };
        let (http, key, barrier) = (app.http.clone(), app.keys["busy"].clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body("dummy"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    let stranded = KEEP_SHARES * base_share(60);
    assert!(ok <= 60, "{ok} calls passed a limit of 60 per minute");
    assert!(ok >= 60 - stranded, "only {ok} of 60 passed");
    // What the instances took of the window, together, is within the limit.
    let rows = app.wait_ledger_rows("busy", 200).await;
    assert_eq!(
        rows.iter().filter(|r| r.code == "refused").count() as u64,
        200 - ok
    );
    let scope = format!("client:{}", app.client_id("busy"));
    let row = rate_window::Entity::find()
        .filter(rate_window::Column::Scope.eq(scope))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let taken = u64::try_from(row.requests_taken).unwrap();
    assert!((ok..=60).contains(&taken), "taken {taken}, passed {ok}");
}
on_backends!(two_instances_share_one_limit, two_instances_story, postgres);
