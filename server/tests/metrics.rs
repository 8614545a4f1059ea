//! `GET /metrics` end to end: after a load of served, refused and failed
//! calls, the exposition parses strictly and its numbers add up against the
//! ledger; and who may scrape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use common::upstream::Upstream;
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// One sample: name, labels (sorted), value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// A strict parser of the Prometheus text format (0.0.4): every sample
/// belongs to a family declared by `# TYPE` before it, label values are
/// quoted with `\\`, `\"` and `\n` escapes, no series appears twice.
fn parse(text: &str) -> Series {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = Series::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (
                parts.next().unwrap(),
                parts.next().unwrap_or_else(|| panic!("{}", at())),
            );
            assert!(valid_name(name), "{}", at());
            if kw == "TYPE" {
                let t = parts.next().unwrap_or_else(|| panic!("{}", at()));
                assert!(["counter", "gauge", "histogram"].contains(&t), "{}", at());
                assert!(
                    types.insert(name.into(), t.into()).is_none(),
                    "TYPE twice: {}",
                    at()
                );
            } else {
                assert_eq!(kw, "HELP", "{}", at());
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line at {}", n + 1);
        let (name, labels, value) = sample(line).unwrap_or_else(|| panic!("bad sample: {}", at()));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(types.contains_key(&family), "no TYPE before {}", at());
        assert!(
            out.insert((name, labels), value).is_none(),
            "series twice: {}",
            at()
        );
    }
    out
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            let (start, c) = *chars.peek()?;
            if c == '}' {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find('=')? + start;
            let key = &r[start..eq];
            if !valid_name(key) || r[eq + 1..].chars().next()? != '"' {
                return None;
            }
            let mut value = String::new();
            let mut it = r[eq + 2..].char_indices();
            let end = loop {
                match it.next()? {
                    (i, '"') => break eq + 2 + i,
                    (_, '\\') => match it.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                return None;
            }
            chars = r.char_indices().peekable();
            while chars.peek().is_some_and(|(i, _)| *i <= end) {
                chars.next();
            }
            if chars.peek().is_some_and(|(_, c)| *c == ',') {
                chars.next();
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, v))
}

/// The sum of a family's samples whose labels include `want`.
fn sum(series: &Series, name: &str, want: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every `tollgate_…` name a text mentions.
fn series_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tollgate_"))
        .map(str::to_string)
        .collect()
}

fn config(up: &Upstream, extra: &str) -> String {
    let u = &up.base_url;
    format!(
        "{extra}
models:
  dummy: {{ provider: dummy, price: {{ input: 1, output: 2 }}, max_output_tokens: 50 }}
  cachey: {{ provider: openai, base_url: \"{u}\", upstream_model: cached, price: {{ input: 1, output: 2, cached_input: 0.1 }}, max_output_tokens: 100 }}
  broken: {{ provider: openai, base_url: \"{u}\", upstream_model: fail, price: {{ input: 1, output: 1 }} }}
  secret: {{ provider: dummy, price: {{ input: 0, output: 0 }} }}
clients:
  default:
    max: 100
    starting: 100
    model_access: {{ default: whitelist, blacklist: [secret] }}
  broke:
    max: 100
    model_access: {{ default: whitelist }}
"
    )
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut req = app.http.get(format!("{}/metrics", app.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Served, refused and failed calls; returns how many requests were sent.
async fn load(app: &TestApp) -> usize {
    let key = app.keys["app"].clone();
    let mut sent = 0;
    let mut call = |model: &str, want: u16, body: serde_json::Value, key: Option<String>| {
        sent += 1;
        let (app, model) = (app, model.to_string());
        async move {
            let (status, reply, _) = app.post(key.as_deref(), "/v1/chat/completions", body).await;
            assert_eq!(status, want, "{model}: {reply}\n{}", app.log());
        }
    };
    for _ in 0..5 {
        call("dummy", 200, chat_body("dummy"), Some(key.clone())).await;
    }
    for _ in 0..2 {
        call("cachey", 200, chat_body("cachey"), Some(key.clone())).await;
        call("secret", 403, chat_body("secret"), Some(key.clone())).await;
    }
    call("broken", 502, chat_body("broken"), Some(key.clone())).await;
    call("nope", 404, chat_body("nope"), Some(key.clone())).await;
    call("dummy", 401, chat_body("dummy"), None).await;
    call(
        "dummy",
        402,
        chat_body("dummy"),
        Some(app.keys["broke"].clone()),
    )
    .await;
    let mut odd = chat_body("dummy");
    odd["service_tier"] = json!("flex");
    call("dummy", 400, odd, Some(key.clone())).await;
    // A stream settles when it ends.
    let mut body = chat_body("dummy");
    body["stream"] = json!(true);
    let resp = app.send_chat("app", &body).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    sent + 1
}

async fn numbers_add_up_against_the_ledger(backend: Backend) {
    let up = Upstream::start().await;
    let app = TestApp::builder(backend)
        .config(&config(&up, ""))
        .clients(&["app", "broke"])
        .keys(&["app", "broke"])
        .spawn()
        .await;
    let sent = load(&app).await;
    // Rows for 5 dummy, 1 stream, 2 cachey, 2 secret, 1 broken, 1 invalid; 1 broke.
    let mut rows = app.wait_ledger_rows("app", 12).await;
    rows.extend(app.wait_ledger_rows("broke", 1).await);
    assert_eq!(rows.len(), 13, "{rows:#?}");
    let (status, text) = scrape(&app, None).await;
    assert_eq!(status, 200, "{text}");
    let m = parse(&text);

    let mut by_code: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &rows {
        *by_code
            .entry((r.model.clone(), r.code.clone()))
            .or_default() += 1.0;
    }
    for ((model, code), n) in &by_code {
        let got = sum(
            &m,
            "tollgate_ledger_rows_total",
            &[("model", model), ("outcome", code)],
        );
        assert_eq!(got, *n, "ledger rows {model}/{code}\n{text}");
    }
    assert_eq!(
        sum(&m, "tollgate_ledger_rows_total", &[]),
        rows.len() as f64
    );
    for model in ["dummy", "cachey", "broken", "secret"] {
        let of = |f: fn(&app::ssr::entities::ledger::Model) -> i64| {
            rows.iter().filter(|r| r.model == model).map(f).sum::<i64>() as f64
        };
        let s = |name: &str, extra: &[(&str, &str)]| {
            let mut want = vec![("model", model)];
            want.extend_from_slice(extra);
            sum(&m, name, &want)
        };
        assert_eq!(
            s("tollgate_coins_charged_micro_total", &[]),
            of(|r| r.coins_micro),
            "{model} coins"
        );
        assert_eq!(
            s("tollgate_input_tokens_total", &[("kind", "fresh")]),
            of(|r| r.tokens_in - r.cached_in - r.cache_write_in),
            "{model}"
        );
        assert_eq!(
            s("tollgate_input_tokens_total", &[("kind", "cached")]),
            of(|r| r.cached_in),
            "{model}"
        );
        assert_eq!(
            s("tollgate_input_tokens_total", &[("kind", "cache_write")]),
            of(|r| r.cache_write_in),
            "{model}"
        );
        assert_eq!(
            s("tollgate_output_tokens_total", &[]),
            of(|r| r.tokens_out),
            "{model}"
        );
        assert_eq!(
            s("tollgate_reasoning_tokens_total", &[]),
            of(|r| r.reasoning_out),
            "{model}"
        );
        // Every served call is one 200 and one `ok` row.
        let served: f64 = ["ok", "ok_without_usage"]
            .iter()
            .filter_map(|c| by_code.get(&(model.to_string(), c.to_string())))
            .sum();
        assert_eq!(
            s("tollgate_requests_total", &[("code", "200")]),
            served,
            "{model} served\n{text}"
        );
    }
    assert!(sum(&m, "tollgate_coins_charged_micro_total", &[]) > 0.0);
    assert!(sum(&m, "tollgate_input_tokens_total", &[("kind", "cached")]) > 0.0);
    assert!(sum(&m, "tollgate_reasoning_tokens_total", &[]) > 0.0);

    // Every request is counted once, by endpoint, model and status.
    assert_eq!(
        sum(
            &m,
            "tollgate_requests_total",
            &[("endpoint", "chat_completions")]
        ),
        sent as f64
    );
    let requests = |model: &str, code: &str| {
        sum(
            &m,
            "tollgate_requests_total",
            &[("model", model), ("code", code)],
        )
    };
    assert_eq!(requests("secret", "403"), 2.0);
    assert_eq!(requests("broken", "502"), 1.0);
    assert_eq!(
        requests("", "404"),
        1.0,
        "a model not in the catalog is counted as \"\""
    );
    assert_eq!(
        requests("dummy", "401") + requests("dummy", "402") + requests("dummy", "400"),
        3.0
    );
    for (code, n) in [
        ("model_not_allowed", 2.0),
        ("upstream_error", 1.0),
        ("model_not_found", 1.0),
        ("invalid_api_key", 1.0),
        ("insufficient_coins", 1.0),
        ("invalid_request", 1.0),
    ] {
        assert_eq!(
            sum(&m, "tollgate_refusals_total", &[("code", code)]),
            n,
            "{code}"
        );
    }
    assert_eq!(
        sum(&m, "tollgate_upstream_errors_total", &[("model", "broken")]),
        1.0
    );
    assert_eq!(sum(&m, "tollgate_upstream_errors_total", &[]), 1.0);

    // Latency: every request observed once; upstream only where one was asked.
    let count = |name: &str| sum(&m, name, &[("endpoint", "chat_completions")]);
    assert_eq!(
        count("tollgate_request_duration_seconds_count"),
        sent as f64
    );
    assert_eq!(
        count("tollgate_gateway_overhead_seconds_count"),
        sent as f64
    );
    let upstream = count("tollgate_upstream_duration_seconds_count");
    assert!((3.0..=9.0).contains(&upstream), "{upstream}");
    let inf = sum(
        &m,
        "tollgate_request_duration_seconds_bucket",
        &[("endpoint", "chat_completions"), ("le", "+Inf")],
    );
    assert_eq!(inf, sent as f64);

    // State read at scrape time.
    assert_eq!(sum(&m, "tollgate_ledger_unwritten_rows", &[]), 0.0);
    assert_eq!(sum(&m, "tollgate_ledger_writer_lag_seconds", &[]), 0.0);
    assert_eq!(sum(&m, "tollgate_accounting_admitting", &[]), 1.0);
    assert!(sum(&m, "tollgate_config_generation", &[]) >= 1.0);
    assert_eq!(sum(&m, "tollgate_config_last_reload_ok", &[]), 1.0);
    assert_eq!(sum(&m, "tollgate_config_reload_errors_total", &[]), 0.0);
    assert_eq!(sum(&m, "tollgate_deployments", &[]), 4.0);
    assert!(m.keys().any(|(n, _)| n == "tollgate_leases"));

    // The dashboard and docs/metrics.md name only series that exist, and
    // the docs name every one.
    let names: std::collections::BTreeSet<&str> = m.keys().map(|(n, _)| n.as_str()).collect();
    let exists = |n: &str| names.contains(n) || names.contains(format!("{n}_count").as_str());
    let root = workspace_root();
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    for text in [&docs, &dashboard] {
        for name in series_names(text) {
            assert!(exists(&name), "{name} is not served");
        }
    }
    let documented = series_names(&docs);
    for n in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s).filter(|f| documented.contains(*f)))
            .unwrap_or(n);
        assert!(documented.contains(family), "{n} is not in docs/metrics.md");
    }

    // A reload that fails is counted.
    app.write_config("models: [not, a, map]\n");
    app.wait_for("a failed reload", || async {
        let (_, text) = scrape(&app, None).await;
        (sum(&parse(&text), "tollgate_config_reload_errors_total", &[]) == 1.0).then_some(())
    })
    .await;
}

on_backends!(
    numbers_add_up_against_the_ledger,
    numbers_add_up_against_the_ledger
);

/// With a token configured, it is required even from loopback; without one,
/// loopback may scrape (the refusal of other peers is unit-tested in
/// `metrics::scrape`, since every test client is on loopback).
async fn a_token_guards_the_metrics(backend: Backend) {
    let up = Upstream::start().await;
    let token = "metrics-token-0123456789";
    let app = TestApp::builder(backend)
        .config(&config(
            &up,
            &format!("server:\n  metrics: {{ token: \"{token}\" }}"),
        ))
        .clients(&["app"])
        .keys(&["app"])
        .spawn()
        .await;
    let (status, text) = scrape(&app, None).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("server.metrics.token"), "{text}");
    let (status, _) = scrape(&app, Some("metrics-token-wrong-one")).await;
    assert_eq!(status, 403);
    let (status, _) = scrape(&app, Some(&app.keys["app"])).await;
    assert_eq!(status, 403, "an API key is not the metrics token");
    let (status, text) = scrape(&app, Some(token)).await;
    assert_eq!(status, 200, "{text}");
    parse(&text);
}

on_backends!(
    a_token_guards_the_metrics,
    a_token_guards_the_metrics,
    sqlite
);

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{m=\"q\\\"x\",b=\"\"} 3\n";
    let s = parse(ok);
    assert_eq!(sum(&s, "a_total", &[("m", "q\"x")]), 3.0);
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{m=q} 1\n",
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        "# TYPE a_total counter\na_total x\n",
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "{bad:?}");
    }
}
