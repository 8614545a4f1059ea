//! Budget alerts end to end: a client spends its pool through real `/v1`
//! calls, the server signs and POSTs each threshold's alert to a webhook
//! receiver running in the test, retries while the receiver is down, fires
//! again after a refill, sends each alert once with two instances on one
//! database, and refuses a bad `alerts:` section with its file, line and field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::ssr::entities::{alert_delivery, alert_state};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use hmac::{Hmac, Mac};
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec-test-3f9a1c77e2";
const MICRO: i64 = 1_000_000;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Received>>,
    /// The status it answers with (200 unless set).
    status: AtomicU16,
}

/// A webhook receiver: a real HTTP server that records every POST.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
}

async fn record(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    inbox.got.lock().unwrap().push(Received {
        delivery: header("x-tollgate-delivery"),
        signature: header("x-tollgate-signature"),
        body: body.to_vec(),
    });
    StatusCode::from_u16(inbox.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        let inbox = Arc::new(Inbox {
            status: AtomicU16::new(200),
            ..Inbox::default()
        });
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, inbox }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.inbox.got.lock().unwrap().clone()
    }
}

/// An address where nothing listens (yet).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Checks the signature header against our own HMAC of the exact body.
fn assert_signed(r: &Received) {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(r.signature, format!("sha256={hex}"), "signature of {r:?}");
}

/// Each call costs exactly one coin (a request fee), of a pool of ten.
fn base_config(refresh: &str) -> String {
    format!(
        "\
models:
  dummy: {{ provider: dummy, price: {{ input: 0, output: 0, request: 1 }} }}
clients:
  default:
    max: 10
    starting: 10
    refresh: {refresh}
    model_access: {{ default: whitelist }}
"
    )
}

/// With alerts to `url`: `webhooks[0].url` is on line 11, its `secret_env` on 12.
fn config(url: &str, refresh: &str) -> String {
    format!(
        "{}alerts:\n  webhooks:\n    - url: {url}\n      secret_env: TG_ALERT_SECRET\n",
        base_config(refresh)
    )
}

/// A client `acme` with a key; the server starts on the alerts config
/// (the test process itself never reads the secret's variable).
async fn acme(backend: Backend, url: &str, retry_base_ms: &str) -> TestApp {
    let mut app = TestApp::builder(backend)
        .config(&base_config("0"))
        .clients(&["acme"])
        .keys(&["acme"])
        .env("TG_ALERT_SECRET", SECRET)
        .env("TOLLGATE_ALERT_TICK_MS", "100")
        .env("TOLLGATE_ALERT_RETRY_BASE_MS", retry_base_ms)
        .build()
        .await;
    app.write_config(&config(url, "0"));
    app.start();
    app
}

async fn spend(app: &TestApp, calls: usize) {
    for _ in 0..calls {
        let (status, body, _) = app.chat("acme", "dummy").await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn deliveries(app: &TestApp) -> Vec<alert_delivery::Model> {
    alert_delivery::Entity::find()
        .order_by_asc(alert_delivery::Column::CreatedAt)
        .order_by_asc(alert_delivery::Column::ThresholdPercent)
        .all(&app.db)
        .await
        .unwrap()
}

async fn wait_received(app: &TestApp, rx: &Receiver, n: usize) -> Vec<Received> {
    app.wait_for(&format!("{n} alerts received"), || async {
        let got = rx.got();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Waits until the server has scanned several more times, then checks that
/// nothing more arrived: the outbox is drained and stays at `n`.
async fn assert_settled(app: &TestApp, rx: &Receiver, n: usize) {
    app.wait_for("every delivery delivered", || async {
        let d = deliveries(app).await;
        d.iter().all(|d| d.status == "delivered").then_some(())
    })
    .await;
    // Ten ticks of the scanner: a second alert for a crossing would be queued by then.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.got().len(), n, "{:?}", rx.got());
    assert_eq!(deliveries(app).await.len(), n);
}

/// Checks the alerts received in order: one per threshold, signed, with
/// the documented body and distinct ids.
fn assert_alerts(got: &[Received], thresholds: &[i64]) {
    let mut ids: Vec<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "one delivery id each: {got:?}");
    let mut seen: Vec<i64> = Vec::new();
    for r in got {
        assert_signed(r);
        let b = r.json();
        assert_eq!(b["event"], "budget.threshold", "{b}");
        assert_eq!(b["id"], r.delivery.as_str(), "{b}");
        assert_eq!(b["owner"]["kind"], "client", "{b}");
        assert_eq!(b["owner"]["name"], "acme", "{b}");
        assert_eq!(b["max_micro"], 10 * MICRO, "{b}");
        let t = b["threshold_percent"].as_i64().unwrap();
        let used = b["used_micro"].as_i64().unwrap();
        assert!(
            used * 100 >= t * 10 * MICRO,
            "used {used} reaches {t} %: {b}"
        );
        assert!(b["at"].as_str().unwrap().ends_with('Z'), "{b}");
        seen.push(t);
    }
    seen.sort_unstable();
    assert_eq!(seen, thresholds);
}

async fn thresholds_story(backend: Backend) {
    let rx = Receiver::start().await;
    let app = acme(backend, &rx.url(), "200").await;
    // 5 of 10 coins: the 50 % alert, with exactly what was used.
    spend(&app, 5).await;
    let got = wait_received(&app, &rx, 1).await;
    assert_eq!(got[0].json()["threshold_percent"], 50);
    assert_eq!(got[0].json()["used_micro"], 5 * MICRO);
    spend(&app, 3).await;
    let got = wait_received(&app, &rx, 2).await;
    assert_eq!(got[1].json()["threshold_percent"], 80);
    assert_eq!(got[1].json()["used_micro"], 8 * MICRO);
    spend(&app, 2).await;
    let got = wait_received(&app, &rx, 3).await;
    assert_eq!(got[2].json()["threshold_percent"], 100);
    assert_eq!(got[2].json()["used_micro"], 10 * MICRO);
    // The pool is empty: refused, and no alert for that.
    let (status, _, _) = app.chat("acme", "dummy").await;
    assert_eq!(status, 402);
    assert_settled(&app, &rx, 3).await;
    assert_alerts(&rx.got(), &[50, 80, 100]);
    let rows = deliveries(&app).await;
    assert!(
        rows.iter()
            .all(|d| d.attempts == 1 && d.last_error.is_none()),
        "{rows:?}"
    );
    assert!(!app.log().contains(SECRET), "the secret is never logged");
    for d in &rows {
        assert!(!d.body.contains(SECRET));
    }
}
on_backends!(each_threshold_fires_once, thresholds_story);

async fn refill_story(backend: Backend) {
    let rx = Receiver::start().await;
    let app = acme(backend, &rx.url(), "200").await;
    spend(&app, 10).await;
    wait_received(&app, &rx, 3).await;
    // A fast refill (10 coins a second) fills the pool again: every
    // threshold re-arms, with no alert for going down.
    let (_, h) = app.health().await;
    let generation = h["config"]["generation"].as_i64().unwrap();
    app.write_config(&config(&rx.url(), "36000"));
    app.wait_health(|h| h["config"]["generation"].as_i64() == Some(generation + 1))
        .await;
    let pool_id = app.pool("acme").await.id;
    app.wait_for("the pool's alerts re-armed", || async {
        let s = alert_state::Entity::find_by_id(pool_id)
            .one(&app.db)
            .await
            .unwrap()?;
        (s.fired_percent == 0).then_some(())
    })
    .await;
    // The next cycle, without refill so the spending adds up exactly.
    app.write_config(&config(&rx.url(), "0"));
    app.wait_health(|h| h["config"]["generation"].as_i64() == Some(generation + 2))
        .await;
    assert_eq!(app.balance("acme").await, 10 * MICRO);
    spend(&app, 10).await;
    let got = wait_received(&app, &rx, 6).await;
    assert_settled(&app, &rx, 6).await;
    assert_alerts(&got[..3], &[50, 80, 100]);
    assert_alerts(&got[3..], &[50, 80, 100]);
}
on_backends!(a_refill_re_arms_the_thresholds, refill_story);

async fn receiver_down_story(backend: Backend) {
    let addr = closed_port();
    let url = format!("http://{addr}/hook");
    let app = acme(backend, &url, "200").await;
    spend(&app, 5).await;
    // Nothing listens: attempts fail and are retried, the row stays pending.
    let row = app
        .wait_for("two failed attempts", || async {
            let d = deliveries(&app).await;
            d.into_iter()
                .find(|d| d.attempts >= 2 && d.last_error.is_some())
        })
        .await;
    assert_eq!(row.status, "pending");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{row:?}"
    );
    let rx = Receiver::start_on(addr).await;
    let got = wait_received(&app, &rx, 1).await;
    assert_settled(&app, &rx, 1).await;
    assert_alerts(&got, &[50]);
    let d = &deliveries(&app).await[0];
    assert!(d.attempts >= 3, "{d:?}");
    assert_eq!(d.id, got[0].delivery);

    // The admins' /config shows the target (never the secret), the
    // thresholds and the delivery with its attempts.
    let token = app.setup_token().expect("the setup address is logged");
    let admin = first_admin(&app, &token).await;
    let (status, report) = call(&app, Some(admin.as_str()), "alert_overview").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["targets"], serde_json::json!([url]));
    assert_eq!(report["thresholds"], serde_json::json!([50, 80, 100]));
    let row = &report["deliveries"][0];
    assert_eq!(row["status"], "delivered", "{report}");
    assert_eq!(row["owner"], "client acme", "{report}");
    assert_eq!(row["threshold_percent"], 50, "{report}");
    assert!(row["attempts"].as_i64().unwrap() >= 3, "{report}");
    assert!(!report.to_string().contains(SECRET));
    let page = app
        .http
        .get(format!("{}/config", app.url()))
        .header("Cookie", &admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Budget alerts") && page.contains(&url),
        "{page}"
    );
    assert!(!page.contains(SECRET));
    let (status, _) = call(&app, None, "alert_overview").await;
    assert_eq!(status, 401);
}
on_backends!(
    a_receiver_down_for_a_while_gets_the_alert,
    receiver_down_story
);

async fn failing_receiver_story(backend: Backend) {
    let rx = Receiver::start().await;
    rx.inbox.status.store(500, Ordering::SeqCst);
    let app = acme(backend, &rx.url(), "10").await;
    spend(&app, 5).await;
    let row = app
        .wait_for("the delivery given up", || async {
            let d = deliveries(&app).await;
            d.into_iter().find(|d| d.status == "failed")
        })
        .await;
    let tries = app::domain::alerts::MAX_ATTEMPTS;
    assert_eq!(row.attempts, tries);
    assert!(
        row.last_error.as_deref().unwrap().contains("HTTP 500"),
        "{row:?}"
    );
    // Every attempt sent the same signed body under the same id.
    let got = rx.got();
    assert_eq!(got.len() as i64, tries);
    assert!(got
        .iter()
        .all(|r| r.delivery == row.id && r.body == got[0].body));
    assert_signed(&got[0]);
}
on_backends!(
    a_receiver_that_keeps_failing_is_given_up,
    failing_receiver_story
);

async fn two_instances_story(backend: Backend) {
    let rx = Receiver::start().await;
    let app = acme(backend, &rx.url(), "200").await;
    let second = app.spawn_instance();
    // Both instances scan and send; the calls go to the first.
    spend(&app, 10).await;
    wait_received(&app, &rx, 3).await;
    assert_settled(&app, &rx, 3).await;
    assert_alerts(&rx.got(), &[50, 80, 100]);
    assert!(deliveries(&app).await.iter().all(|d| d.attempts == 1));
    // Between them, the two queued three deliveries, no more.
    let queued: usize = [app.log(), second.log()]
        .iter()
        .flat_map(|log| log.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| {
            let n = l.split("budget alert queued for ").nth(1)?;
            n.split(' ').next()?.parse::<usize>().ok()
        })
        .sum();
    assert_eq!(queued, 3, "{}\n{}", app.log(), second.log());
}
on_backends!(two_instances_send_each_alert_once, two_instances_story);

async fn reload_story(backend: Backend) {
    let mut app = TestApp::builder(backend)
        .config(&base_config("0"))
        .clients(&["acme"])
        .keys(&["acme"])
        .env("TG_ALERT_SECRET", SECRET)
        .env("TOLLGATE_ALERT_TICK_MS", "100")
        .build()
        .await;
    app.start();
    // No `alerts:` section: half the pool spent, and nothing is watched.
    spend(&app, 5).await;
    app.wait_ledger_rows("acme", 5).await;
    let (_, h) = app.health().await;
    let generation = h["config"]["generation"].as_i64().unwrap();
    assert!(alert_state::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .is_empty());
    // Alerts added by a reload: the pool already past 50 % alerts once.
    let first = Receiver::start().await;
    app.write_config(&config(&first.url(), "0"));
    app.wait_health(|h| h["config"]["generation"].as_i64() == Some(generation + 1))
        .await;
    let got = wait_received(&app, &first, 1).await;
    assert_alerts(&got, &[50]);
    // The target changed by a reload: the next alert goes to the new one.
    let second = Receiver::start().await;
    app.write_config(&config(&second.url(), "0"));
    app.wait_health(|h| h["config"]["generation"].as_i64() == Some(generation + 2))
        .await;
    spend(&app, 3).await;
    let got = wait_received(&app, &second, 1).await;
    assert_alerts(&got, &[80]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!((first.got().len(), second.got().len()), (1, 1));
    let rows = deliveries(&app).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].target_url, first.url());
    assert_eq!(rows[1].target_url, second.url());
}
on_backends!(alerts_follow_a_live_reload, reload_story);

async fn bad_config_story(backend: Backend) {
    let rx = Receiver::start().await;
    let app = acme(backend, &rx.url(), "200").await;
    // check-config without the variable set names file, line and field.
    let bad = config(&rx.url(), "0").replace("TG_ALERT_SECRET", "TG_ALERT_NOT_SET_42");
    app.write_config(&bad);
    let out = app.tollgate(&["check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tollgate.yaml:12:19: alerts.webhooks[0].secret_env: environment variable `TG_ALERT_NOT_SET_42` is not set"),
        "{stderr}"
    );
    // A live reload with a bad value keeps the last good config.
    let (_, h) = app.health().await;
    let generation = h["config"]["generation"].as_i64().unwrap();
    for (text, says) in [
        (
            config("ftp://example.com/hook", "0"),
            "tollgate.yaml:11:12: alerts.webhooks[0].url: url `ftp://example.com/hook` must start with http:// or https://",
        ),
        (
            format!("{}  thresholds: [80, 50]\n", config(&rx.url(), "0")),
            "alerts.thresholds: thresholds must be in ascending order",
        ),
    ] {
        app.write_config(&text);
        let h = app
            .wait_health(|h| {
                h["config"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(says))
            })
            .await;
        assert_eq!(h["config"]["generation"].as_i64(), Some(generation));
    }
    // The config in force still alerts.
    spend(&app, 5).await;
    let got = wait_received(&app, &rx, 1).await;
    assert_alerts(&got, &[50]);
}
on_backends!(
    a_bad_alerts_section_names_file_line_and_field,
    bad_config_story
);

// ---- the console, as a browser calls it ----

async fn call(app: &TestApp, cookie: Option<&str>, name: &str) -> (u16, Value) {
    let (status, answer, _) = call_on(&app.http, app.url(), cookie, name, &[]).await;
    (status, answer)
}

/// Creates the first admin through the one-time setup token; returns the
/// session cookie.
async fn first_admin(app: &TestApp, token: &str) -> String {
    let resp = app
        .http
        .post(format!("{}/api/setup_admin", app.url()))
        .header("Accept", "application/json")
        .header("Origin", app.url())
        .form(&[
            ("token", token),
            ("username", "ada"),
            ("password", "admin password 1"),
        ])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success() || resp.status().is_redirection());
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tg_session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}
