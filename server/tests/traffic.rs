//! Several deployments per model: routing around failures, circuit
//! breakers that open and close, retries before the first byte, fallbacks
//! under the caller's own access rules and prices, and the books balancing
//! through it all. Real servers, real databases, mock upstreams that fail
//! on command.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use common::flaky_upstream::{Flaky, Mode};
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn dep(name: &str, f: &Flaky, extra: &str) -> String {
    format!(
        "{{ name: {name}, provider: openai, base_url: \"{}\", upstream_model: m{extra} }}",
        f.base_url()
    )
}

struct Call {
    status: u16,
    body: Value,
    model: Option<String>,
    deployment: Option<String>,
}

async fn call(app: &TestApp, key: &str, model: &str, stream: bool) -> Call {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url()))
        .bearer_auth(key)
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let header = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_string());
    let (status, model, deployment) = (
        r.status().as_u16(),
        header("x-tollgate-model"),
        header("x-tollgate-deployment"),
    );
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Call {
        status,
        body,
        model,
        deployment,
    }
}

fn config(a: &Flaky, b: &Flaky, c: &Flaky) -> String {
    format!(
        "\
models:
  trio:
    price: {{ input: 1, output: 1 }}
    max_output_tokens: 50
    timeout_secs: 20
    deployments:
      - {}
      - {}
      - {}
  primary:
    price: {{ input: 1, output: 1 }}
    max_output_tokens: 50
    fallbacks: [forbidden, pricier]
    deployments:
      - {}
  hasty:
    price: {{ input: 1, output: 1 }}
    timeout_secs: 1
    deployments:
      - {}
      - {}
  forbidden: {{ provider: dummy, price: {{ input: 0, output: 0 }} }}
  pricier: {{ provider: dummy, price: {{ input: 5, output: 5 }}, max_output_tokens: 50 }}
clients:
  default:
    max: 100000
    starting: 100000
    model_access: {{ default: whitelist, blacklist: [forbidden] }}
",
        dep("a", a, ", timeout_secs: 2"),
        dep("b", b, ", weight: 2"),
        dep("c", c, ""),
        dep("only", c, ", timeout_secs: 2"),
        dep("x", a, ""),
        dep("y", c, ""),
    )
}

async fn setup(backend: Backend) -> (TestApp, String, [Flaky; 3]) {
    let (a, b, c) = (
        Flaky::start("a").await,
        Flaky::start("b").await,
        Flaky::start("c").await,
    );
    let app = TestApp::builder(backend)
        .config(&config(&a, &b, &c))
        .clients(&["app"])
        .spawn()
        .await;
    let key = app.create_key("app").await;
    (app, key, [a, b, c])
}

/// Every served row's coins add up to what left the pool; served rows name
/// their deployment, and failed attempts cost nothing.
async fn books_balance(app: &TestApp, served: usize) {
    let rows = app.wait_ledger_rows("app", served).await;
    let ok: Vec<_> = rows.iter().filter(|r| r.code == "ok").collect();
    assert_eq!(ok.len(), served, "{rows:?}");
    assert!(ok.iter().all(|r| !r.deployment.is_empty()));
    assert!(
        rows.iter()
            .filter(|r| r.code != "ok")
            .all(|r| r.coins_micro == 0),
        "{rows:?}"
    );
    let spent: i64 = rows.iter().map(|r| r.coins_micro).sum();
    app.wait_for("the pool to show every charge", || async {
        (app.balance("app").await == 100_000 * 1_000_000 - spent).then_some(())
    })
    .await;
}

async fn one_stopped_story(backend: Backend) {
    let (app, key, [a, b, c]) = setup(backend).await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for round in 0..6 {
        if round == 2 {
            b.stop().await;
        }
        let calls =
            futures::future::join_all((0..10).map(|_| call(&app, &key, "trio", false))).await;
        for r in calls {
            assert_eq!(r.status, 200, "round {round}: {:?}", r.body);
            assert_eq!(r.model.as_deref(), Some("trio"));
            *served.entry(r.deployment.unwrap()).or_default() += 1;
        }
    }
    assert!(
        served.len() == 3,
        "every deployment served some: {served:?}"
    );
    let h = app.health().await.1;
    assert_eq!(h["deployments"]["open"], 1, "{h}");
    // The stopped deployment comes back: after its cool-down one probe goes
    // through, and the breaker closes.
    let b = b.restart().await;
    let before = b.calls();
    let mut total: usize = served.values().sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(&app, &key, "trio", false).await;
        assert_eq!(r.status, 200);
        total += 1;
        let h = app.health().await.1;
        if b.calls() > before && h["deployments"]["open"] == 0 && h["deployments"]["probing"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never closed: {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    books_balance(&app, total).await;
    drop((a, c));
}
on_backends!(three_deployments_one_stopped_mid_load, one_stopped_story);

async fn failures_story(backend: Backend) {
    let (app, key, [a, b, c]) = setup(backend).await;
    // 429 with Retry-After and a quota error both move traffic away; a
    // hanging deployment costs only its own timeout.
    a.set(Mode::Hang);
    b.set(Mode::TooMany {
        retry_after_secs: 30,
    });
    c.set(Mode::Ok);
    let r = call(&app, &key, "trio", false).await;
    assert_eq!(
        (r.status, r.deployment.as_deref()),
        (200, Some("c")),
        "{:?}",
        r.body
    );
    // b (weight 2, least loaded) was tried first and answered 429.
    assert_eq!(b.calls(), 1);
    let r = call(&app, &key, "trio", false).await;
    assert_eq!(
        r.deployment.as_deref(),
        Some("c"),
        "b stays out for its Retry-After"
    );
    assert_eq!(b.calls(), 1);
    c.set(Mode::Quota);
    // a hangs (2 s timeout), c is out of quota: nothing can serve.
    let r = call(&app, &key, "trio", false).await;
    assert!(
        r.status == 504 || r.status == 502 || r.status == 503,
        "{} {:?}",
        r.status,
        r.body
    );
    let r = call(&app, &key, "trio", false).await;
    assert_eq!(
        r.status, 503,
        "every deployment is cooling down: {:?}",
        r.body
    );
    assert_eq!(r.body["error"]["code"], "upstream_unavailable");
    books_balance(&app, 2).await;
}
on_backends!(
    rate_limited_quota_and_hanging_deployments,
    failures_story,
    sqlite
);

async fn streams_story(backend: Backend) {
    let (app, key, [a, b, c]) = setup(backend).await;
    // Before the first byte a stream is retried elsewhere…
    b.set(Mode::Fail500);
    a.set(Mode::Fail500);
    let r = call(&app, &key, "trio", true).await;
    assert_eq!((r.status, r.deployment.as_deref()), (200, Some("c")));
    assert!(r.body.as_str().unwrap().contains("from c"), "{:?}", r.body);
    // …after it, a failure is the caller's, charged for what was produced.
    c.set(Mode::BreakMidStream);
    let r = call(&app, &key, "trio", true).await;
    let text = r.body.as_str().unwrap().to_string();
    assert!(
        text.contains("partial words here") && text.contains("upstream_error"),
        "{text}"
    );
    let rows = app.wait_ledger_rows("app", 2).await;
    let broken = rows
        .iter()
        .find(|r| r.code == "upstream_error_mid_stream")
        .expect("a mid-stream row");
    assert!(
        broken.coins_micro > 0 && broken.deployment == "c",
        "{broken:?}"
    );
}
on_backends!(streams_retry_until_their_first_byte, streams_story, sqlite);

async fn fallback_story(backend: Backend) {
    let (app, key, [_a, _b, c]) = setup(backend).await;
    c.set(Mode::Fail500);
    let r = call(&app, &key, "primary", false).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // `forbidden` is blacklisted for this client: skipped.
    assert_eq!(r.model.as_deref(), Some("pricier"));
    let rows = app.wait_ledger_rows("app", 2).await;
    assert!(rows.iter().all(|r| r.model != "forbidden"), "{rows:?}");
    let failed = rows.iter().find(|r| r.model == "primary").unwrap();
    assert_eq!(
        (failed.code.as_str(), failed.coins_micro),
        ("upstream_error", 0)
    );
    let served = rows.iter().find(|r| r.model == "pricier").unwrap();
    // Charged at the fallback's own price: 5 coins per 1k tokens.
    assert_eq!(served.code, "ok");
    assert_eq!(
        served.cost_micro,
        (served.tokens_in + served.tokens_out) * 5_000
    );
    books_balance(&app, 1).await;
}
on_backends!(
    fallbacks_follow_the_caller_s_access_and_their_own_price,
    fallback_story
);

async fn deadline_story(backend: Backend) {
    let (app, key, [a, _b, c]) = setup(backend).await;
    a.set(Mode::Hang);
    // x hangs through the whole 1 s deadline: the call times out, and y,
    // which nobody gave a chance, is not blamed for it.
    let r = call(&app, &key, "hasty", false).await;
    assert_eq!(r.status, 504, "{:?}", r.body);
    assert_eq!(c.calls(), 0, "no attempt once the deadline is spent");
    let h = app.health().await.1;
    assert_eq!(
        h["deployments"]["open"], 1,
        "only the hanging deployment: {h}"
    );
}
on_backends!(
    a_spent_deadline_trips_no_other_breaker,
    deadline_story,
    sqlite
);
