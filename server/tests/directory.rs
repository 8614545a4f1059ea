//! Keys, owners and consents are kept in memory by every instance, and a
//! change made anywhere (another instance, the host's command line, the
//! console) reaches every instance through the change counter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::ssr::owners::OwnerKind;
use app::ssr::{consents, now_ms};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
  gray: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 100
    starting: 100
    model_access: { default: whitelist, graylist: [gray] }
";

/// A generous limit on waiting for a change to arrive: a condition to wait
/// for, not a performance target (instances poll every 250 ms).
const ARRIVES: Duration = Duration::from_secs(10);

async fn chat(url: &str, key: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_status(url: &str, key: &str, model: &str, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = chat(url, key, model).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < ARRIVES, "{what}: still {got} on {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One instance on SQLite; two sharing the database on PostgreSQL.
async fn changes_reach_every_instance_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["bot"])
        .keys(&["bot"])
        .spawn()
        .await;
    let second = (backend == Backend::Postgres).then(|| app.spawn_instance());
    let mut urls = vec![app.url().to_string()];
    urls.extend(second.as_ref().map(|s| s.url.clone()));
    let key = app.keys["bot"].clone();
    let id = app.client_id("bot");
    for url in &urls {
        // Seen once, so every instance holds the key and the consents in memory.
        assert_eq!(chat(url, &key, "dummy").await, 200);
        assert_eq!(chat(url, &key, "gray").await, 403);
    }
    consents::record(&app.db, OwnerKind::Client, id, "gray", None, now_ms())
        .await
        .unwrap();
    for url in &urls {
        wait_status(url, &key, "gray", 200, "consent given").await;
    }
    consents::revoke(&app.db, OwnerKind::Client, id, "gray", now_ms())
        .await
        .unwrap();
    for url in &urls {
        wait_status(url, &key, "gray", 403, "consent withdrawn").await;
    }
    let prefix = app::domain::keys::display_prefix(&key);
    let out = app.tollgate(&["keys", "revoke", &prefix]);
    assert!(out.status.success(), "{out:?}");
    for url in &urls {
        let took = wait_status(url, &key, "dummy", 401, "key revoked").await;
        eprintln!("{backend:?}: a revoked key was refused by {url} after {took:?}");
    }
    let (status, body) = app.get(&key, "/v1/models").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("invalid_api_key"))
    );
}

on_backends!(
    changes_reach_every_instance,
    changes_reach_every_instance_story
);
