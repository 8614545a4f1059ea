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

use app::ssr::owners::{create_client, OwnerKind};
use app::ssr::{consents, keys, now_ms};
use common::*;
use serde_json::{json, Value};
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

async fn chat(server: &Server, key: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_status(server: &Server, key: &str, model: &str, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = chat(server, key, model).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < ARRIVES,
            "{what}: still {got} on {}",
            server.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn changes_reach(backend: Backend, instances: usize) {
    let tdb = TestDb::new(backend).await;
    let cfg = tdb.dir.path().join("tollgate.yaml");
    write(&cfg, CONFIG);
    init_db(&cfg, &tdb.url);
    let db = tdb.connect().await;
    let c = create_client(&db, &load(&cfg).config, "bot", None, now_ms())
        .await
        .unwrap();
    let key = keys::create(&db, OwnerKind::Client, c.id, "t", None, None, now_ms())
        .await
        .unwrap();
    let servers: Vec<Server> = (0..instances)
        .map(|_| Server::spawn(&cfg, &tdb.url, &[]))
        .collect();
    for s in &servers {
        // Seen once, so every instance holds the key and the consents in memory.
        assert_eq!(chat(s, &key.secret, "dummy").await, 200);
        assert_eq!(chat(s, &key.secret, "gray").await, 403);
    }
    consents::record(&db, OwnerKind::Client, c.id, "gray", None, now_ms())
        .await
        .unwrap();
    for s in &servers {
        wait_status(s, &key.secret, "gray", 200, "consent given").await;
    }
    consents::revoke(&db, OwnerKind::Client, c.id, "gray", now_ms())
        .await
        .unwrap();
    for s in &servers {
        wait_status(s, &key.secret, "gray", 403, "consent withdrawn").await;
    }
    let out = tollgate(&["keys", "revoke", &key.record.prefix], &cfg, &tdb.url);
    assert!(out.status.success(), "{out:?}");
    for s in &servers {
        let took = wait_status(s, &key.secret, "dummy", 401, "key revoked").await;
        eprintln!(
            "{backend:?}: a revoked key was refused by {} after {took:?}",
            s.url
        );
        let body: Value = reqwest::Client::new()
            .get(format!("{}/v1/models", s.url))
            .bearer_auth(&key.secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
}

/// One instance on SQLite; two sharing the database on PostgreSQL.
async fn changes_reach_every_instance_story(backend: Backend) {
    let instances = if backend == Backend::Postgres { 2 } else { 1 };
    changes_reach(backend, instances).await;
}

on_backends!(
    changes_reach_every_instance,
    changes_reach_every_instance_story
);
