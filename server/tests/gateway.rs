//! The JSON API end to end: real server, real databases, a mock upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::money::MICRO;
use app::ssr::owners::{client_by_name, OwnerKind};
use app::ssr::{consents, keys, now_ms};
use common::upstream::Upstream;
use common::*;
use sea_orm::{ConnectionTrait, EntityTrait};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: [&str; 5] = ["app", "broke", "blocked", "racer", "tiny"];

fn config(up: &Upstream) -> String {
    let u = &up.base_url;
    format!("\
models:
  dummy: {{ provider: dummy, price: {{ input: 1, output: 2 }}, max_output_tokens: 50 }}
  gpt-mock: {{ provider: openai, base_url: \"{u}\", upstream_model: echo, price: {{ input: 1, output: 2 }}, max_output_tokens: 100, pass_through: [user_tag] }}
  vision: {{ provider: openai, base_url: \"{u}\", upstream_model: echo, price: {{ input: 1, output: 2 }}, max_output_tokens: 100, media: {{ image: 1000 }} }}
  greedy: {{ provider: openai, base_url: \"{u}\", upstream_model: greedy, price: {{ input: 1, output: 2 }}, max_output_tokens: 100 }}
  slow: {{ provider: openai, base_url: \"{u}\", upstream_model: slow-stream, price: {{ input: 1, output: 2 }}, max_output_tokens: 500 }}
  broken: {{ provider: openai, base_url: \"{u}\", upstream_model: fail, price: {{ input: 1, output: 1 }} }}
  hanging: {{ provider: openai, base_url: \"{u}\", upstream_model: hang, price: {{ input: 1, output: 1 }}, timeout_secs: 1 }}
  quiet: {{ provider: openai, base_url: \"{u}\", upstream_model: no-usage, price: {{ input: 1, output: 1 }} }}
  cachey: {{ provider: openai, base_url: \"{u}\", upstream_model: cached, price: {{ input: 1, output: 2, cached_input: 0.1 }}, max_output_tokens: 100 }}
  secret-model: {{ provider: dummy, price: {{ input: 0, output: 0 }} }}
  gray-model: {{ provider: dummy, price: {{ input: 0, output: 0 }}, consent_notice: Prompts are logged. }}
  flat: {{ provider: dummy, price: {{ input: 0, output: 0, request: 1 }} }}
clients:
  default:
    max: 100
    starting: 100
    model_access: {{ default: whitelist, blacklist: [secret-model], graylist: [gray-model] }}
  broke:
    max: 100
    model_access: {{ default: whitelist }}
  blocked:
    max: 0
    model_access: {{ default: whitelist }}
  racer:
    max: 7
    starting: 7
    model_access: {{ whitelist: [flat] }}
  tiny:
    max: 2
    starting: 2
    model_access: {{ default: whitelist }}
")
}

/// The gateway with every client in `CLIENTS`, each with a key, and the
/// mock upstream its models point at.
async fn gateway(backend: Backend) -> (TestApp, Upstream) {
    let up = Upstream::start().await;
    let app = TestApp::builder(backend)
        .config(&config(&up))
        .clients(&CLIENTS)
        .keys(&CLIENTS)
        .spawn()
        .await;
    (app, up)
}

/// Asserts an OpenAI-shaped error: status, stable code, and what the message says.
fn assert_error(r: &(u16, Value, Option<String>), status: u16, code_: &str, says: &str) {
    let (s, body, _) = r;
    assert_eq!((*s, code(body)), (status, code_), "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{body}");
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn errors_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let now = now_ms();
    let app_id = e.client_id("app");
    let revoked = keys::create(&e.db, OwnerKind::Client, app_id, "old", None, None, now)
        .await
        .unwrap();
    keys::revoke(&e.db, &revoked.record, now).await.unwrap();
    let expired = keys::create(
        &e.db,
        OwnerKind::Client,
        app_id,
        "exp",
        Some(now - 1000),
        None,
        now,
    )
    .await
    .unwrap();
    let mut typo = e.keys["app"].clone().into_bytes();
    typo[5] = if typo[5] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown = app::domain::keys::encode([9; 16]);

    // 401 invalid_api_key, in each of its forms.
    for (key, what) in [
        (None, "missing"),
        (Some("sk-not-ours"), "malformed"),
        (Some(typo.as_str()), "checksum"),
        (Some(unknown.as_str()), "unknown"),
        (Some(revoked.secret.as_str()), "revoked"),
        (Some(expired.secret.as_str()), "expired"),
    ] {
        let (status, body, rid) = e
            .post(key, "/v1/chat/completions", chat_body("dummy"))
            .await;
        assert_eq!(
            (status, code(&body)),
            (401, "invalid_api_key"),
            "{backend:?} {what}: {body}"
        );
        assert_eq!(body["error"]["type"], "authentication_error");
        assert!(rid.is_some(), "x-request-id on errors too");
    }

    let (status, body, _) = e.chat("app", "no-such-model").await;
    assert_eq!((status, code(&body)), (404, "model_not_found"), "{body}");

    assert_error(
        &e.chat("app", "secret-model").await,
        403,
        "model_not_allowed",
        "blacklist",
    );
    assert_error(
        &e.chat("racer", "dummy").await,
        403,
        "model_not_allowed",
        "model_access.default is blacklist",
    );

    // Graylist: refused until consent is recorded, allowed after, refused again once revoked.
    assert_error(
        &e.chat("app", "gray-model").await,
        403,
        "consent_required",
        &format!("{}/clients/app", e.url()),
    );
    consents::record(
        &e.db,
        OwnerKind::Client,
        app_id,
        "gray-model",
        None,
        now_ms(),
    )
    .await
    .unwrap();
    // A change made outside the server reaches it through the change
    // counter it polls every 250 ms.
    let key = e.keys["app"].clone();
    assert_eq!(wait_for_status(&e, &key, "gray-model", 200).await.0, 200);
    consents::revoke(&e.db, OwnerKind::Client, app_id, "gray-model", now_ms())
        .await
        .unwrap();
    assert_eq!(
        code(&wait_for_status(&e, &key, "gray-model", 403).await.1),
        "consent_required"
    );

    let (status, body, _) = e.chat("blocked", "dummy").await;
    assert_eq!((status, code(&body)), (403, "pool_blocked"), "{body}");

    let (status, body, _) = e.chat("broke", "dummy").await;
    assert_eq!((status, code(&body)), (402, "insufficient_coins"), "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("has 0 left") && msg.contains("may cost up to 0.149 coins"),
        "{msg}"
    );

    let raw = e
        .http
        .post(format!("{}/v1/chat/completions", e.url()))
        .bearer_auth(&e.keys["app"])
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert_eq!(code(&raw.json::<Value>().await.unwrap()), "invalid_request");
    let (status, body, _) = e
        .post(
            Some(&e.keys["app"]),
            "/v1/chat/completions",
            json!({"model": "dummy"}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");

    // Upstream failures release the whole reservation.
    let before = e.balance("app").await;
    let (status, body, rid) = e.chat("app", "broken").await;
    assert_eq!((status, code(&body)), (502, "upstream_error"), "{body}");
    let (status, body, rid2) = e.chat("app", "hanging").await;
    assert_eq!((status, code(&body)), (504, "upstream_timeout"), "{body}");
    assert_eq!(
        e.balance("app").await,
        before,
        "{backend:?}: reservations released in full"
    );
    for (rid, outcome) in [
        (rid.unwrap(), "upstream_error"),
        (rid2.unwrap(), "upstream_timeout"),
    ] {
        let row = e.wait_ledger_row(&rid).await;
        assert_eq!((row.coins_micro, row.code.as_str()), (0, outcome));
    }

    // The ledger cannot be written: fail closed. A call already covered
    // by this instance's lease may still be served (its coins left the
    // pool durably); the first batch that fails closes the gate, and the
    // rows it could not write are kept and written once it can.
    let trigger = match backend {
        Backend::Sqlite => vec!["CREATE TRIGGER no_ledger BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'disk full'); END".to_string()],
        Backend::Postgres => vec![
            "CREATE FUNCTION no_ledger() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql".to_string(),
            "CREATE TRIGGER no_ledger BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION no_ledger()".to_string(),
        ],
    };
    for sql in &trigger {
        e.db.execute_unprepared(sql).await.unwrap();
    }
    let mut served = Vec::new();
    let closed = loop {
        let (status, body, rid) = e.chat("app", "gpt-mock").await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        served.push(rid.unwrap());
        assert!(served.len() <= 3, "{backend:?}: the gate never closed");
        // This call's row cannot be written: the batch that tries closes the gate.
        e.wait_health(|h| h["accounting"]["admitting_calls"] == false)
            .await;
    };
    assert_eq!(code(&closed), "accounting_unavailable", "{closed}");
    let calls = up.calls();
    for _ in 0..3 {
        let (status, body, _) = e.chat("app", "gpt-mock").await;
        assert_eq!((status, code(&body)), (503, "accounting_unavailable"));
        let (status, _, _) = e.chat("broke", "dummy").await;
        assert_eq!(status, 503, "closed for every pool");
    }
    assert_eq!(up.calls(), calls, "nothing goes upstream while closed");
    let (status, h) = e.health().await;
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["accounting"]["admitting_calls"], false, "{h}");
    assert!(
        h["accounting"]["unwritten_ledger_rows"].as_u64().unwrap() >= served.len() as u64,
        "{h}"
    );
    e.db.execute_unprepared("DROP TRIGGER no_ledger").await.ok();
    e.db.execute_unprepared("DROP TRIGGER no_ledger ON ledger")
        .await
        .ok();
    e.wait_for(
        &format!("{backend:?}: calls served again once the ledger is writable"),
        || async { (e.chat("app", "gpt-mock").await.0 == 200).then_some(()) },
    )
    .await;
    let (status, h) = e.health().await;
    assert_eq!(
        (status, &h["accounting"]["admitting_calls"]),
        (200, &json!(true)),
        "{h}"
    );
    for rid in &served {
        let row = e.wait_ledger_row(rid).await;
        assert!(
            row.coins_micro > 0 && row.code == "ok",
            "{backend:?}: the call served before the gate closed is charged: {row:?}"
        );
    }
}
on_backends!(every_error_in_the_table_is_produced, errors_story);

async fn race(backend: Backend, two_instances: bool) {
    let (e, _up) = gateway(backend).await;
    let second = two_instances.then(|| e.spawn_instance());
    let start = e.balance("racer").await;
    assert_eq!(start, 7 * MICRO);
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = match (&second, i % 2) {
            (Some(s), 1) => s.url.clone(),
            _ => e.url().to_string(),
        };
        let key = e.keys["racer"].clone();
        let barrier = barrier.clone();
        let http = e.http.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body("flat"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    // Rows are written behind the responses; wait for all of them.
    let rows = e.wait_ledger_rows("racer", 100).await;
    let end = e.balance("racer").await;
    let spent: i64 = rows.iter().map(|r| r.coins_micro).sum();
    assert!(
        ok <= 7,
        "{backend:?}: {ok} calls succeeded against a pool that affords 7"
    );
    assert_eq!(ok, 7, "{backend:?}: every affordable call is served");
    assert!(end >= 0, "{backend:?}: balance {end}");
    assert_eq!(
        spent,
        start - end,
        "{backend:?}: the ledger sums to what left the pool"
    );
    assert_eq!(rows.len(), 100, "{backend:?}: one ledger row per call");
}

async fn race_story(backend: Backend) {
    race(backend, false).await;
}
on_backends!(a_hundred_racing_calls_never_overspend, race_story);

/// Two gateways sharing one database are run on PostgreSQL.
async fn race_two_instances_story(backend: Backend) {
    race(backend, true).await;
}
on_backends!(
    two_instances_on_one_database_never_overspend,
    race_two_instances_story,
    postgres
);

async fn read_sse(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

async fn streaming_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let before = e.balance("app").await;
    let body = json!({"model": "gpt-mock", "stream": true, "user_tag": "kept", "messages": [{"role": "user", "content": "hi"}]});
    let resp = e.send_chat("app", &body).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let events = read_sse(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello from upstream");
    assert!(
        !events.iter().any(|e| e.contains("\"usage\"")),
        "usage chunk hidden unless asked for"
    );

    let sent = up.rec.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        sent["user_tag"], "kept",
        "fields the model lists in pass_through are forwarded"
    );
    assert_eq!(sent["model"], "echo");
    assert_eq!(
        sent["max_tokens"], 100,
        "the reserved output limit is enforced upstream"
    );

    let row = e.wait_ledger_row(&rid).await;
    assert_eq!(
        (row.tokens_in, row.tokens_out, row.code.as_str()),
        (11, 3, "ok")
    );
    let cost = 11 * MICRO / 1000 + 3 * 2 * MICRO / 1000;
    assert_eq!(row.coins_micro, cost);
    assert_eq!(e.balance("app").await, before - cost, "{backend:?}");

    // The dummy streams too; with include_usage the usage chunk is relayed and matches the charge.
    let body = json!({"model": "dummy", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "one two three"}]});
    let resp = e.send_chat("app", &body).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let events = read_sse(resp).await;
    let usage: Value = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|v| v["usage"].is_object())
        .unwrap()["usage"]
        .clone();
    let row = e.wait_ledger_row(&rid).await;
    assert_eq!(row.tokens_in, usage["prompt_tokens"].as_i64().unwrap());
    assert_eq!(row.tokens_out, usage["completion_tokens"].as_i64().unwrap());
    assert_eq!(row.tokens_out, 5, "Dummy reply: one two three");
}
on_backends!(
    streaming_is_relayed_and_charged_at_the_reported_usage,
    streaming_story
);

async fn disconnect_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let before = e.balance("app").await;
    let body = json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "count"}]});
    let mut resp = e.send_chat("app", &body).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("tok"));
    drop(resp);
    let row = e.wait_ledger_row(&rid).await;
    assert_eq!(row.code, "client_disconnected", "{backend:?}");
    assert!(
        row.tokens_out >= 1 && row.tokens_out < 200,
        "{backend:?}: {row:?}"
    );
    assert!(
        row.coins_micro > 0,
        "never 0 for tokens the upstream produced"
    );
    assert_eq!(
        e.balance("app").await,
        before - row.coins_micro,
        "{backend:?}: the rest of the reservation is released"
    );
    assert!(
        up.rec.streamed.load(std::sync::atomic::Ordering::SeqCst) < 200,
        "the upstream stream was abandoned"
    );

    // A caller that gives up before a non-streamed reply arrives: the
    // upstream may still produce everything, so the reservation is charged.
    let before = e.balance("app").await;
    let rid = format!("gone-{backend:?}");
    let sent = e
        .http
        .post(format!("{}/v1/chat/completions", e.url()))
        .bearer_auth(&e.keys["app"])
        .header("x-request-id", &rid)
        .timeout(Duration::from_millis(300))
        .json(&chat_body("hanging"))
        .send()
        .await;
    assert!(sent.is_err(), "the caller timed out");
    let row = e.wait_ledger_row(&rid).await;
    assert_eq!(row.code, "abandoned", "{backend:?}: {row:?}");
    assert!(
        row.coins_micro > 4 * MICRO,
        "the whole reservation: {row:?}"
    );
    assert_eq!(e.balance("app").await, before - row.coins_micro);
}
on_backends!(
    a_client_that_disconnects_mid_stream_pays_for_what_was_generated,
    disconnect_story
);

async fn endpoints_story(backend: Backend) {
    let (e, _up) = gateway(backend).await;
    let key = &e.keys["app"];
    let resp = e
        .http
        .get(format!("{}/v1/models", e.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let models: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(models["object"], "list");
    assert!(
        ids.contains(&"dummy") && ids.contains(&"gpt-mock"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"secret-model") && !ids.contains(&"gray-model"),
        "{ids:?}"
    );

    let b: Value = e
        .http
        .get(format!("{}/v1/balance", e.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["owner"], json!({"kind": "client", "name": "app"}));
    assert_eq!(
        (
            b["balance"].as_f64(),
            b["max"].as_f64(),
            b["unlimited"].as_bool(),
            b["blocked"].as_bool()
        ),
        (Some(100.0), Some(100.0), Some(false), Some(false))
    );
    let b: Value = e
        .http
        .get(format!("{}/v1/balance", e.url()))
        .bearer_auth(&e.keys["blocked"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["blocked"], true);

    let (status, body, rid) = e.chat("app", "gpt-mock").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from upstream"
    );
    let row = e.wait_ledger_row(&rid.unwrap()).await;
    assert_eq!((row.tokens_in, row.tokens_out), (11, 7));
    let used = keys::list(&e.db, Some((OwnerKind::Client, e.client_id("app"))))
        .await
        .unwrap()[0]
        .last_used_at;
    assert!(
        used.is_some_and(|t| t >= row.created_at - 60_000),
        "{backend:?}: the key's last use is recorded with the call: {used:?}"
    );

    // An upstream that reports no usage is still charged for what it produced.
    let (status, _, rid) = e.chat("app", "quiet").await;
    assert_eq!(status, 200);
    let row = e.wait_ledger_row(&rid.unwrap()).await;
    assert_eq!((row.tokens_out, row.code.as_str()), (5, "ok_without_usage"));
    assert!(row.tokens_in > 0 && row.coins_micro > 0, "{row:?}");

    // Cached input and reasoning are kept apart, each line at its own price.
    let (status, body, rid) = e.chat("app", "cachey").await;
    assert_eq!(status, 200, "{body}");
    let row = e.wait_ledger_row(&rid.unwrap()).await;
    assert_eq!(
        (row.tokens_in, row.cached_in, row.cache_write_in),
        (40, 32, 0)
    );
    assert_eq!((row.tokens_out, row.reasoning_out), (30, 12));
    assert_eq!(
        (
            row.input_micro,
            row.cached_input_micro,
            row.output_micro,
            row.request_micro
        ),
        (8_000, 3_200, 60_000, 0)
    );
    assert_eq!((row.cost_micro, row.coins_micro), (71_200, 71_200));

    let (status, body, _) = e
        .post(
            Some(key),
            "/v1/completions",
            json!({"model": "dummy", "prompt": "say this", "max_tokens": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    let (status, body, _) = e
        .post(
            Some(key),
            "/v1/embeddings",
            json!({"model": "dummy", "input": ["a b", "c"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    let (_, again, _) = e
        .post(
            Some(key),
            "/v1/embeddings",
            json!({"model": "dummy", "input": ["a b", "c"]}),
        )
        .await;
    assert_eq!(body["data"], again["data"], "deterministic");
}
on_backends!(models_balance_completions_and_embeddings, endpoints_story);

async fn crashed_lease_story(backend: Backend) {
    use app::ssr::entities::lease;
    use app::ssr::ledger::{sweep_orphans, ORPHAN_AFTER_MS};
    let (mut e, _up) = gateway(backend).await;
    let start = e.balance("app").await;
    let (status, _, rid) = e.chat("app", "gpt-mock").await;
    assert_eq!(status, 200);
    e.wait_ledger_row(&rid.unwrap()).await;
    let held = lease::Entity::find().all(&e.db).await.unwrap();
    assert_eq!(
        held.len(),
        1,
        "{backend:?}: one lease for the pool: {held:?}"
    );
    assert!(held[0].amount_micro > 0);
    // The process dies holding its lease (SIGKILL: nothing is returned).
    e.server_mut().kill();
    assert_eq!(
        e.balance("app").await,
        start
            - e.ledger_for("app")
                .await
                .iter()
                .map(|r| r.coins_micro)
                .sum::<i64>(),
        "{backend:?}: a live lease still counts as the owner's"
    );

    let later = now_ms() + ORPHAN_AFTER_MS + 1;
    assert_eq!(sweep_orphans(&e.db, now_ms()).await.unwrap(), 0, "not yet");
    let (a, b) = tokio::join!(sweep_orphans(&e.db, later), sweep_orphans(&e.db, later));
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "{backend:?}: charged exactly once"
    );
    assert_eq!(sweep_orphans(&e.db, later).await.unwrap(), 0);
    assert!(lease::Entity::find().all(&e.db).await.unwrap().is_empty());
    let rows = e.ledger_for("app").await;
    let orphan = rows.iter().find(|r| r.code == "orphaned_lease").unwrap();
    assert_eq!(orphan.coins_micro, held[0].amount_micro);
    let spent: i64 = rows.iter().map(|r| r.coins_micro).sum();
    assert_eq!(
        e.balance("app").await,
        start - spent,
        "{backend:?}: the ledger accounts for every coin that left the pool"
    );
}
on_backends!(
    a_crashed_instance_s_lease_is_charged_once_and_nothing_is_lost,
    crashed_lease_story
);

async fn clean_shutdown_story(backend: Backend) {
    use app::ssr::entities::lease;
    let (mut e, _up) = gateway(backend).await;
    let start = e.balance("app").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, _, rid) = e.chat("app", "gpt-mock").await;
        assert_eq!(status, 200);
        ids.push(rid.unwrap());
    }
    assert!(!lease::Entity::find().all(&e.db).await.unwrap().is_empty());
    let status = e.server_mut().terminate();
    assert!(status.success(), "{status}: {}", e.log());
    assert!(
        lease::Entity::find().all(&e.db).await.unwrap().is_empty(),
        "{backend:?}: every lease went back to its pool"
    );
    let mut spent = 0;
    for rid in &ids {
        spent += e
            .ledger_row(rid)
            .await
            .expect("written before exit")
            .coins_micro;
    }
    assert!(spent > 0);
    let pool = e.pool("app").await;
    assert_eq!(
        pool.balance_micro,
        start - spent,
        "{backend:?}: the pool itself holds everything not spent"
    );
}
on_backends!(
    a_clean_shutdown_gives_leases_back_and_writes_every_row,
    clean_shutdown_story
);

async fn lease_top_up_story(backend: Backend) {
    use app::ssr::entities::lease;
    let (e, _up) = gateway(backend).await;
    let start = e.balance("app").await;
    // About 0.1 coins a call against 100 coins: leased in chunks of 32
    // calls, so 80 calls need the same lease topped up more than once.
    let mut ids = Vec::new();
    for _ in 0..80 {
        let (status, body, rid) = e.chat("app", "dummy").await;
        assert_eq!(status, 200, "{body}");
        ids.push(rid.unwrap());
    }
    let pool = e.pool("app").await;
    let mut spent = 0;
    for rid in &ids {
        spent += e.wait_ledger_row(rid).await.coins_micro;
    }
    assert_eq!(e.balance("app").await, start - spent, "{backend:?}");
    // Idle leases go back to the pool by themselves.
    e.wait_for(&format!("{backend:?}: the idle lease returned"), || async {
        let leases = lease::Entity::find().all(&e.db).await.unwrap();
        leases.is_empty().then_some(())
    })
    .await;
    let after = e.pool("app").await;
    assert!(pool.balance_micro < start - spent, "coins were on lease");
    assert_eq!(after.balance_micro, start - spent, "{backend:?}");
}
on_backends!(
    a_lease_is_topped_up_under_load_and_goes_back_when_idle,
    lease_top_up_story
);

async fn keys_cli_story(backend: Backend) {
    let (e, _up) = gateway(backend).await;
    let out = e.tollgate(&[
        "keys",
        "create",
        "--client",
        "app",
        "--label",
        "ci",
        "--expires-in",
        "30d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(app::domain::keys::check_format(&key).is_ok(), "{key}");
    assert_eq!(
        e.post(Some(&key), "/v1/chat/completions", chat_body("dummy"))
            .await
            .0,
        200
    );

    let out = e.tollgate(&["keys", "list", "--client", "app"]);
    let list = String::from_utf8(out.stdout).unwrap();
    let prefix = app::domain::keys::display_prefix(&key);
    assert!(list.contains(&prefix) && list.contains("ci"), "{list}");
    assert!(!list.contains(&key), "the secret is never shown again");

    let out = e.tollgate(&["keys", "revoke", &prefix]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body, _) = wait_for_status(&e, &key, "dummy", 401).await;
    assert_eq!((status, code(&body)), (401, "invalid_api_key"));

    let out = e.tollgate(&["keys", "create", "--client", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("created by an admin in the web UI"));
    assert!(client_by_name(&e.db, "ghost").await.unwrap().is_none());
}
on_backends!(keys_from_the_command_line, keys_cli_story);

/// The reservation bounds every request shape before anything goes upstream:
/// fields that multiply or lengthen upstream work are bounded (and the bound
/// is what the upstream receives) or refused by name.
async fn request_shapes_story(backend: Backend) {
    let (e, up) = gateway(backend).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let tiny = |body: Value| {
        let e = &e;
        async move {
            e.post(Some(&e.keys["tiny"]), "/v1/chat/completions", body)
                .await
        }
    };
    let calls = up.calls();

    // On a 2-coin pool: 20 choices of 100 tokens at 2 coins per 1k is 4 coins.
    assert_eq!(
        tiny(json!({"model": "gpt-mock", "messages": msgs})).await.0,
        200
    );
    let r = tiny(json!({"model": "gpt-mock", "messages": msgs, "n": 20})).await;
    assert_error(&r, 402, "insufficient_coins", "may cost up to 4.0");
    let r = e
        .post(
            Some(&e.keys["tiny"]),
            "/v1/completions",
            json!({"model": "dummy", "prompt": "hi", "best_of": 20}),
        )
        .await;
    assert_error(&r, 402, "insufficient_coins", "may cost up to 2.0");
    // A 50 KB tool definition is 50 coins of input at 1 coin per 1k.
    let tools =
        json!([{"type": "function", "function": {"name": "f", "description": "x".repeat(50_000)}}]);
    let r = tiny(json!({"model": "gpt-mock", "messages": msgs, "tools": tools})).await;
    assert_error(&r, 402, "insufficient_coins", "may cost up to 50.");
    assert_eq!(up.calls(), calls + 1, "nothing refused went upstream");

    // Every length field a provider might honour carries the one limit.
    let sent = |body: Value| {
        let (e, up) = (&e, &up);
        async move {
            let r = e
                .post(Some(&e.keys["app"]), "/v1/chat/completions", body)
                .await;
            assert_eq!(r.0, 200, "{}", r.1);
            up.rec.last_body.lock().unwrap().clone().unwrap()
        }
    };
    let s = sent(json!({"model": "gpt-mock", "messages": msgs, "n_predict": 5000})).await;
    assert_eq!(
        (s["n_predict"].clone(), s["max_tokens"].clone()),
        (json!(100), json!(100))
    );
    let s = sent(json!({"model": "gpt-mock", "messages": msgs, "options": {"num_predict": 5000, "temperature": 0.2}})).await;
    assert_eq!(
        s["options"]["num_predict"], 100,
        "Ollama's options.num_predict"
    );
    let s = sent(json!({"model": "gpt-mock", "messages": msgs, "max_completion_tokens": 1, "max_tokens": 100000})).await;
    assert_eq!(
        (s["max_completion_tokens"].clone(), s["max_tokens"].clone()),
        (json!(1), json!(1))
    );
    let s = sent(json!({"model": "gpt-mock", "messages": msgs, "max_new_tokens": -1})).await;
    assert_eq!(s["max_new_tokens"], 100);

    // Refused by name, with a ledger row, and nothing sent upstream.
    let calls = up.calls();
    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]);
    for (body, field) in [
        (
            json!({"model": "gpt-mock", "messages": image}),
            "messages[0].content[1].type",
        ),
        (
            json!({"model": "gpt-mock", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "gpt-mock", "messages": msgs, "n": 500}),
            "n",
        ),
        (
            json!({"model": "gpt-mock", "messages": msgs, "options": {"num_gpu": 9}}),
            "options.num_gpu",
        ),
        (
            json!({"model": "gpt-mock", "messages": msgs, "use_beam_search": true}),
            "use_beam_search",
        ),
        (
            json!({"model": "dummy", "messages": msgs, "user_tag": "x"}),
            "user_tag",
        ),
        (
            json!({"model": "gpt-mock", "messages": msgs, "max_tokens": -5}),
            "max_tokens",
        ),
    ] {
        let r = e
            .post(Some(&e.keys["app"]), "/v1/chat/completions", body)
            .await;
        assert_error(&r, 400, "invalid_request", &format!("`{field}`"));
        let row = e.wait_ledger_row(r.2.as_deref().unwrap()).await;
        assert_eq!(
            (row.coins_micro, row.code.as_str(), row.outcome.as_str()),
            (0, "refused", "invalid_request"),
            "{backend:?}"
        );
    }
    assert_eq!(
        up.calls(),
        calls,
        "{backend:?}: nothing refused went upstream"
    );

    // An image is allowed where the model declares what one may cost.
    let r = e
        .post(
            Some(&e.keys["app"]),
            "/v1/chat/completions",
            json!({"model": "vision", "messages": image}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);

    // A caller's request id cannot pose as a row the gateway writes itself.
    let resp = e
        .http
        .post(format!("{}/v1/chat/completions", e.url()))
        .bearer_auth(&e.keys["app"])
        .header("x-request-id", "lease-1")
        .json(&chat_body("dummy"))
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(rid, "lease-1");
    e.wait_ledger_row(&rid).await;
    assert!(e.ledger_row("lease-1").await.is_none(), "{backend:?}");
}
on_backends!(
    every_request_shape_is_bounded_before_it_goes_upstream,
    request_shapes_story
);

/// An upstream that reports more usage than was reserved: the ledger keeps
/// the true cost and the overage, the pool pays what it has and never goes
/// below zero, and /healthz counts it.
async fn overage_story(backend: Backend) {
    let (e, _up) = gateway(backend).await;
    let r = e
        .post(
            Some(&e.keys["tiny"]),
            "/v1/chat/completions",
            chat_body("greedy"),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let row = e.wait_ledger_row(r.2.as_deref().unwrap()).await;
    let true_cost = 11 * 1_000 + 100_000 * 2_000; // micro-coins, rounded up per 1k
    assert_eq!(row.cost_micro, true_cost, "{backend:?}: {row:?}");
    assert!(
        row.overage_micro > 0 && row.overage_micro < true_cost,
        "{row:?}"
    );
    assert_eq!(
        row.coins_micro, 2_000_000,
        "{backend:?}: the pool paid all it had: {row:?}"
    );
    assert_eq!(e.balance("tiny").await, 0, "{backend:?}: never below zero");
    let health: Value = e
        .http
        .get(format!("{}/healthz", e.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["accounting"]["overage_calls"], 1, "{health}");
    assert!(
        e.log().contains(r.2.as_deref().unwrap()),
        "the overage is logged with the request id"
    );
}
on_backends!(
    usage_above_the_reservation_is_recorded_as_overage,
    overage_story
);

/// `/v1/balance` read right after a response was fully received reflects
/// that call, streamed or not.
async fn balance_story(backend: Backend) {
    let (e, _up) = gateway(backend).await;
    let read = |e: &TestApp| {
        let req = e
            .http
            .get(format!("{}/v1/balance", e.url()))
            .bearer_auth(&e.keys["app"]);
        async move {
            req.send().await.unwrap().json::<Value>().await.unwrap()["balance"]
                .as_f64()
                .unwrap()
        }
    };
    let mut before = read(&e).await;
    for i in 0..12 {
        let stream = i % 2 == 1;
        let body = json!({"model": "gpt-mock", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let resp = e.send_chat("app", &body).await;
        assert_eq!(resp.status().as_u16(), 200);
        resp.bytes().await.unwrap();
        let after = read(&e).await;
        assert!(
            after < before,
            "{backend:?} call {i} (stream: {stream}): {after} is not below {before}"
        );
        before = after;
    }
}
on_backends!(
    the_balance_reflects_a_call_as_soon_as_its_reply_is_read,
    balance_story
);

/// Calls until the answer has `status`, or returns the last answer after
/// 10 s: a change made outside the server (the test's own writes, the host's
/// command line) reaches it through the change counter it polls.
async fn wait_for_status(
    e: &TestApp,
    key: &str,
    model: &str,
    status: u16,
) -> (u16, Value, Option<String>) {
    let start = std::time::Instant::now();
    loop {
        let r = e
            .post(Some(key), "/v1/chat/completions", chat_body(model))
            .await;
        if r.0 == status || start.elapsed() > Duration::from_secs(10) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
