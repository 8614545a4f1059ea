//! Budget alerts: the task that watches pools and the task that sends the
//! webhooks (`domain::alerts` has the rules, `ssr::alerts` the storage).
//!
//! Crossings are found by a scan of every pool each tick (2 s), not by a
//! hook in the ledger writer: a pool's spending changes through the writer
//! of every instance, but it also falls back without any write at all, as
//! refill is lazy (credited when the pool is next used) and a reload can
//! raise `max`. A scan sees all of these the same way, and it runs beside
//! the API instead of inside the writer's transaction, so a call never
//! waits for it. It is one read of the pools per tick; only a pool whose
//! state moves costs a write.

use app::ssr::entities::alert_delivery;
use app::ssr::{alerts, now_ms, AppContext};
use hmac::{Hmac, Mac};
use std::time::Duration;

/// How often pools are scanned and due deliveries claimed.
const TICK_MS: u64 = 2_000;
/// The wait before the first retry; it doubles with each failure.
const RETRY_BASE_MS: i64 = 1_000;
/// One delivery attempt, connection included, takes at most this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries claimed and sent at once, per tick.
const BATCH: u64 = 16;
const HOUR_MS: i64 = 3_600_000;

/// The tick and the first retry's wait, which tests shorten with
/// `TOLLGATE_ALERT_TICK_MS` and `TOLLGATE_ALERT_RETRY_BASE_MS`.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub tick: Duration,
    pub retry_base_ms: i64,
}

impl Tuning {
    pub fn from_env() -> Tuning {
        let read = |name: &str, default: u64, least: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(default, |v| v.clamp(least, 3_600_000))
        };
        Tuning {
            tick: Duration::from_millis(read("TOLLGATE_ALERT_TICK_MS", TICK_MS, 50)),
            retry_base_ms: i64::try_from(read(
                "TOLLGATE_ALERT_RETRY_BASE_MS",
                RETRY_BASE_MS as u64,
                10,
            ))
            .unwrap_or(RETRY_BASE_MS),
        }
    }
}

/// Starts the watcher and the sender. They run whether or not alerts are
/// configured, and read the config in force at each tick, so a reload that
/// adds, changes or removes `alerts:` takes effect at the next one.
pub fn spawn(ctx: AppContext) -> Result<(), String> {
    let tuning = Tuning::from_env();
    let http = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(SEND_TIMEOUT)
        // A redirect is not a delivery: the target must answer 2xx itself.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the alert HTTP client: {e}"))?;
    tokio::spawn(watch(ctx.clone(), tuning));
    tokio::spawn(send(ctx, http, tuning));
    Ok(())
}

async fn watch(ctx: AppContext, tuning: Tuning) {
    let mut purged_at = 0;
    loop {
        let now = now_ms();
        let snapshot = ctx.config.load();
        if let Some(settings) = &snapshot.config.alerts {
            if let Err(e) = alerts::scan(&ctx.db, settings, now).await {
                tracing::warn!("budget alert scan failed: {e}");
            }
        }
        drop(snapshot);
        if now - purged_at > HOUR_MS {
            purged_at = now;
            match alerts::purge(&ctx.db, now - alerts::KEEP_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("purged {n} old budget alert deliveries"),
                Err(e) => tracing::warn!("purging old budget alert deliveries failed: {e}"),
            }
        }
        tokio::time::sleep(tuning.tick).await;
    }
}

async fn send(ctx: AppContext, http: reqwest::Client, tuning: Tuning) {
    loop {
        let claimed = match alerts::claim_due(&ctx.db, now_ms(), BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("claiming budget alert deliveries failed: {e}");
                Vec::new()
            }
        };
        let full = claimed.len() as u64 == BATCH;
        futures::future::join_all(claimed.iter().map(|d| deliver(&ctx, &http, d, tuning))).await;
        if !full {
            tokio::time::sleep(tuning.tick).await;
        }
    }
}

/// One attempt at one claimed delivery, and its outcome recorded.
async fn deliver(
    ctx: &AppContext,
    http: &reqwest::Client,
    d: &alert_delivery::Model,
    tuning: Tuning,
) {
    let secret = {
        let snapshot = ctx.config.load();
        snapshot
            .config
            .alerts
            .as_ref()
            .and_then(|a| a.target(&d.target_url))
            .map(|t| t.secret.clone())
    };
    let outcome = match secret {
        None => Err((false, "the target is no longer in the config".to_string())),
        Some(secret) => post(http, d, secret.expose()).await.map_err(|e| (true, e)),
    };
    let now = now_ms();
    let recorded = match outcome {
        Ok(()) => {
            tracing::info!(delivery = %d.id, target = %d.target_url, attempt = d.attempts, "budget alert delivered");
            alerts::record_delivered(&ctx.db, d, now).await
        }
        Err((retry, e)) => {
            tracing::warn!(delivery = %d.id, target = %d.target_url, attempt = d.attempts, "budget alert delivery failed: {e}");
            alerts::record_failure(&ctx.db, d, &e, retry, tuning.retry_base_ms, now).await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(delivery = %d.id, "recording a budget alert delivery failed: {e}");
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; the error cannot happen.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// POSTs the stored body as it is; a 2xx answer is a delivery.
async fn post(
    http: &reqwest::Client,
    d: &alert_delivery::Model,
    secret: &[u8],
) -> Result<(), String> {
    let resp = http
        .post(&d.target_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-tollgate-signature", signature(secret, d.body.as_bytes()))
        .header("x-tollgate-delivery", &d.id)
        .body(d.body.clone())
        .send()
        .await
        .map_err(describe)?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the target answered HTTP {status}"))
    }
}

/// A send error with its causes, without the URL (shown beside it anyway).
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        format!("no answer within {} s", SEND_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "sending failed".to_string()
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    causes.dedup();
    if causes.is_empty() {
        what
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
