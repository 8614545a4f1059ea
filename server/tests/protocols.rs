//! The Responses API and Anthropic's Messages API end to end, driven by the
//! official `openai` and `anthropic` Python packages against a real server,
//! real databases, and mock upstreams that speak each protocol: a
//! Responses-native one and a chat-completions-only one (and the dummy).
//! Then the ledger is checked against what the upstream reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::protocols_upstream::ProtocolUpstream;
use common::upstream::anthropic::ANTHROPIC_KEY;
use common::upstream::Upstream;
use common::*;
use std::path::PathBuf;
use std::process::Command;

const CLIENTS: [&str; 6] = ["alpha", "beta", "denied", "broke", "blocked", "gray"];

fn config(up: &ProtocolUpstream, claude: &str) -> String {
    let u = &up.base_url;
    format!("\
models:
  claude: {{ provider: anthropic, base_url: \"{claude}\", api_key_env: TG_TEST_ANTHROPIC_KEY, upstream_model: claude-mock, price: {{ input: 1, output: 2, cached_input: 0.1, cache_write: 1.25 }}, max_output_tokens: 200 }}
  chatty: {{ provider: openai, base_url: \"{u}\", upstream_model: up-chat, price: {{ input: 1, output: 2, cached_input: 0.5 }}, max_output_tokens: 200 }}
  native: {{ provider: openai, base_url: \"{u}\", upstream_model: up-native, responses_api: native, price: {{ input: 1, output: 2, cached_input: 0.5 }}, max_output_tokens: 200 }}
  dummy: {{ provider: dummy, price: {{ input: 1, output: 2 }}, max_output_tokens: 50 }}
  gray-model: {{ provider: dummy, price: {{ input: 0, output: 0 }}, consent_notice: Logged. }}
clients:
  default:
    max: 1000
    starting: 1000
    model_access: {{ default: whitelist }}
  denied:
    max: 1000
    starting: 1000
    model_access: {{ default: blacklist }}
  broke:
    max: 1000
    starting: 0
    model_access: {{ default: whitelist }}
  blocked:
    max: 0
    model_access: {{ default: whitelist }}
  gray:
    max: 1000
    starting: 1000
    model_access: {{ default: whitelist, graylist: [gray-model] }}
")
}

/// The SDKs' virtualenv, made by `scripts/setup.sh --test`.
fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../end2end/.venv-sdk/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/setup.sh --test (it installs the openai and anthropic packages)",
        p.display()
    );
    p
}

async fn run_sdk(app: &TestApp, script: &str, models: &str) {
    let mut cmd = Command::new(python());
    cmd.arg(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sdk")
            .join(script),
    )
    .env("TG_URL", app.url())
    .env("MODELS", models)
    .env("GRAY_MODEL", "gray-model");
    for (var, client) in [
        ("KEY_A", "alpha"),
        ("KEY_B", "beta"),
        ("KEY_DENIED", "denied"),
        ("KEY_BROKE", "broke"),
        ("KEY_BLOCKED", "blocked"),
        ("KEY_GRAY", "gray"),
    ] {
        cmd.env(var, app.create_key(client).await);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        app.log()
    );
}

async fn openai_story(backend: Backend) {
    let up = ProtocolUpstream::start().await;
    let app = TestApp::builder(backend)
        .config(&config(&up, "http://127.0.0.1:9"))
        .clients(&CLIENTS)
        .spawn()
        .await;
    run_sdk(&app, "openai_client.py", "chatty,native").await;

    // The native upstream never stores or chains anything itself: the
    // gateway expanded the history and asked it not to store.
    for body in up.seen.responses.lock().unwrap().iter() {
        assert_eq!(body["store"], false, "{body}");
        assert!(body.get("previous_response_id").is_none(), "{body}");
        assert_eq!(body["model"], "up-native");
    }
    // Every served call is charged at the breakdown the upstream reported:
    // 12 fresh input at 1/1k, 8 cached at 0.5/1k, 6 output at 2/1k.
    // Per model: 6 served calls and one refused (a hosted tool).
    let rows = app.wait_ledger_rows("alpha", 14).await;
    let served: Vec<_> = rows.iter().filter(|r| r.code == "ok").collect();
    assert_eq!(served.len(), 12, "{rows:?}");
    for r in &served {
        assert_eq!(
            (r.tokens_in, r.cached_in, r.tokens_out, r.reasoning_out),
            (20, 8, 6, 2),
            "{r:?}"
        );
        assert_eq!(
            (
                r.input_micro,
                r.cached_input_micro,
                r.output_micro,
                r.cost_micro
            ),
            (12_000, 4_000, 12_000, 28_000),
            "{r:?}"
        );
    }
    let refused = app.ledger_for("denied").await;
    assert!(refused
        .iter()
        .all(|r| r.coins_micro == 0 && r.code == "refused"));
}
on_backends!(the_openai_sdk_drives_the_responses_api, openai_story);

async fn anthropic_story(backend: Backend) {
    let up = ProtocolUpstream::start().await;
    let anthropic = Upstream::start().await;
    let app = TestApp::builder(backend)
        .config(&config(&up, &anthropic.root_url))
        .env("TG_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)
        .clients(&CLIENTS)
        .spawn()
        .await;
    run_sdk(&app, "anthropic_client.py", "chatty,dummy,claude").await;
    // Anthropic callers are charged like everyone else.
    let rows = app.wait_ledger_rows("alpha", 1).await;
    assert!(rows
        .iter()
        .any(|r| r.model == "chatty" && r.code == "ok" && r.cost_micro == 28_000));
    assert!(rows
        .iter()
        .any(|r| r.model == "dummy" && r.code == "ok" && r.cost_micro > 0));
    // Too large a body is refused before anything else, in Anthropic's shape.
    let big = format!(
        "{{\"model\":\"chatty\",\"messages\":\"{}\"}}",
        "x".repeat(9 << 20)
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", app.url()))
        .header("x-api-key", app.create_key("alpha").await)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("request_too_large")),
        "{body}"
    );
    // count_tokens is free: no row at all.
    assert!(
        rows.iter().all(|r| r.code != "ok" || r.tokens_out > 0),
        "{rows:?}"
    );
}
on_backends!(the_anthropic_sdk_drives_the_messages_api, anthropic_story);
