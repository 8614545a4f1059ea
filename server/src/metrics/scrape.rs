//! `GET /metrics`: who may scrape, and the text exposition format.

use super::{status_label, Metrics, ModelSeries, ENDPOINTS, UPSTREAM_REASONS};
use crate::gateway::error::ApiError;
use crate::gateway::Gateway;
use app::domain::outcome::CallOutcome;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may read `/metrics`: with `server.metrics.token` set, whoever
/// presents it as a bearer token, from anywhere (loopback too, since a
/// reverse proxy on the same host makes every request look local);
/// without one, only a peer on loopback.
pub fn access(
    token: Option<&str>,
    presented: Option<&str>,
    peer: Option<IpAddr>,
) -> Result<(), (StatusCode, &'static str)> {
    match (token, presented) {
        (Some(t), Some(p)) if constant_time_eq(t.as_bytes(), p.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err((StatusCode::FORBIDDEN, "wrong metrics token\n")),
        (Some(_), None) => Err((
            StatusCode::UNAUTHORIZED,
            "metrics need the bearer token set in server.metrics.token\n",
        )),
        (None, _) if peer.is_some_and(|ip| ip.is_loopback()) => Ok(()),
        (None, _) => Err((
            StatusCode::FORBIDDEN,
            "metrics are served only to loopback unless server.metrics.token is set\n",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = v.trim_start().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

pub async fn metrics(State(gw): State<Gateway>, req: Request) -> Response {
    let snapshot = gw.ctx.config.load_full();
    let token = snapshot
        .config
        .server
        .metrics
        .as_ref()
        .and_then(|m| m.token.as_ref())
        .map(|t| t.expose());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err((status, message)) = access(token, bearer(req.headers()), peer) {
        let mut resp = (status, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        return resp;
    }
    let mut out = String::with_capacity(16 * 1024);
    gw.metrics.write(&mut out);
    write_state(&gw, &mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

type ModelList = Vec<(String, std::sync::Arc<ModelSeries>)>;
type Pick = fn(&ModelSeries) -> &AtomicU64;
/// One value read at scrape time: name, type, help, value.
type Reading = (&'static str, &'static str, &'static str, f64);

impl Metrics {
    fn write(&self, out: &mut String) {
        let mut models: ModelList = self
            .models
            .load()
            .iter()
            .map(|(k, v)| (escape(k), v.clone()))
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        self.write_requests(out, &models);
        write_ledger(out, &models);
        write_upstream(out, &models);
    }

    fn write_requests(&self, out: &mut String, models: &ModelList) {
        family(out, "tollgate_requests_total", "counter", "Requests to /v1 by endpoint, requested model (\"\" if not in the catalog) and HTTP status code.");
        for (m, s) in models {
            for (e, row) in s.requests.iter().enumerate() {
                for (slot, n) in row.iter().enumerate() {
                    let n = load(n);
                    if n > 0 {
                        let (e, code) = (ENDPOINTS[e], status_label(slot));
                        let _ = writeln!(out, "tollgate_requests_total{{endpoint=\"{e}\",model=\"{m}\",code=\"{code}\"}} {n}");
                    }
                }
            }
        }
        family(
            out,
            "tollgate_refusals_total",
            "counter",
            "Error responses from /v1 by endpoint and error code.",
        );
        for (e, row) in self.errors.iter().enumerate() {
            for (i, code) in ApiError::CODES.iter().enumerate() {
                let n = load(&row[i]);
                if n > 0 {
                    let e = ENDPOINTS[e];
                    let _ = writeln!(
                        out,
                        "tollgate_refusals_total{{endpoint=\"{e}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        for (name, pick, help) in [
            ("tollgate_request_duration_seconds", 0, "Time until the response head was ready (a stream's first byte), by endpoint."),
            ("tollgate_upstream_duration_seconds", 1, "Of that, time spent waiting on upstream model servers, by endpoint; only requests that went upstream."),
            ("tollgate_gateway_overhead_seconds", 2, "Of that, the gateway's own time (total minus upstream), by endpoint."),
        ] {
            family(out, name, "histogram", help);
            for (e, l) in self.latency.iter().enumerate() {
                let h = [&l.total, &l.upstream, &l.overhead][pick];
                h.write(out, name, &format!("endpoint=\"{}\"", ENDPOINTS[e]));
            }
        }
    }
}

fn write_ledger(out: &mut String, models: &ModelList) {
    family(
        out,
        "tollgate_ledger_rows_total",
        "counter",
        "Ledger rows queued by this instance, by model and outcome (the ledger's `code` column).",
    );
    for (m, s) in models {
        for (i, o) in CallOutcome::ALL.iter().enumerate() {
            let n = load(&s.calls[i]);
            if n > 0 {
                let code = o.code();
                let _ = writeln!(
                    out,
                    "tollgate_ledger_rows_total{{model=\"{m}\",outcome=\"{code}\"}} {n}"
                );
            }
        }
    }
    family(
        out,
        "tollgate_input_tokens_total",
        "counter",
        "Input tokens charged, by model and kind (fresh, cached, cache_write).",
    );
    for (m, s) in models {
        for (kind, c) in [
            ("fresh", &s.input_fresh),
            ("cached", &s.input_cached),
            ("cache_write", &s.input_cache_write),
        ] {
            let _ = writeln!(
                out,
                "tollgate_input_tokens_total{{model=\"{m}\",kind=\"{kind}\"}} {}",
                load(c)
            );
        }
    }
    let per_model: [(&str, &str, Pick); 3] = [
        (
            "tollgate_output_tokens_total",
            "Output tokens charged, reasoning included, by model.",
            |s| &s.output,
        ),
        (
            "tollgate_reasoning_tokens_total",
            "Of the output tokens, reasoning tokens, by model.",
            |s| &s.reasoning,
        ),
        (
            "tollgate_coins_charged_micro_total",
            "Micro-coins charged when calls settled, by model.",
            |s| &s.coins_micro,
        ),
    ];
    for (name, help, counter) in per_model {
        family(out, name, "counter", help);
        for (m, s) in models {
            let _ = writeln!(out, "{name}{{model=\"{m}\"}} {}", load(counter(s)));
        }
    }
}

fn write_upstream(out: &mut String, models: &ModelList) {
    family(out, "tollgate_upstream_errors_total", "counter", "Failed upstream attempts by model and reason (status, timeout, failed, unsupported, no_deployment).");
    for (m, s) in models {
        for (i, reason) in UPSTREAM_REASONS.iter().enumerate() {
            let n = load(&s.upstream_errors[i]);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "tollgate_upstream_errors_total{{model=\"{m}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
    }
}

/// Values read at scrape time from the accountant.
fn accounting(gw: &Gateway) -> Vec<Reading> {
    let acc = &gw.accountant;
    let leases = acc.lease_stats();
    let (overage_calls, overage_micro) = acc.overage();
    vec![
        (
            "tollgate_ledger_unwritten_rows",
            "gauge",
            "Ledger rows queued and not yet committed.",
            acc.unwritten_rows() as f64,
        ),
        (
            "tollgate_ledger_writer_lag_seconds",
            "gauge",
            "Age of the oldest ledger row not yet committed (0 when none).",
            acc.writer_lag().as_secs_f64(),
        ),
        (
            "tollgate_accounting_admitting",
            "gauge",
            "1 while calls are admitted, 0 while the ledger cannot be written.",
            flag(acc.is_open()),
        ),
        (
            "tollgate_leases",
            "gauge",
            "Budget leases this instance holds.",
            leases.leases as f64,
        ),
        (
            "tollgate_lease_calls_in_flight",
            "gauge",
            "Calls admitted on this instance's leases and not settled yet.",
            f64::from(leases.in_flight),
        ),
        (
            "tollgate_lease_unspent_micro",
            "gauge",
            "Micro-coins on this instance's leases that no running call has taken.",
            leases.unspent_micro as f64,
        ),
        (
            "tollgate_overage_calls_total",
            "counter",
            "Calls whose reported usage cost more than their reservation.",
            overage_calls as f64,
        ),
        (
            "tollgate_overage_micro_total",
            "counter",
            "Micro-coins by which such calls exceeded their reservations.",
            overage_micro as f64,
        ),
    ]
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Values read at scrape time from the config and the balancer.
fn config_and_upstreams(gw: &Gateway) -> Vec<Reading> {
    let r = gw.ctx.reload.load();
    let snapshot = gw.ctx.config.load_full();
    let deployments = gw.ctx.balancer.health(snapshot.config.models.values());
    let in_flight: u64 = deployments.iter().map(|d| u64::from(d.in_flight)).sum();
    vec![
        (
            "tollgate_config_generation",
            "gauge",
            "The config generation in force on this instance.",
            r.generation as f64,
        ),
        (
            "tollgate_config_last_reload_ok",
            "gauge",
            "1 if the last config reload succeeded.",
            flag(r.last_reload_ok),
        ),
        (
            "tollgate_config_reload_errors_total",
            "counter",
            "Config reloads that failed (rejected files, or database errors while applying).",
            r.failures as f64,
        ),
        (
            "tollgate_deployment_calls_in_flight",
            "gauge",
            "Calls in flight to upstream deployments.",
            in_flight as f64,
        ),
    ]
}

fn write_state(gw: &Gateway, out: &mut String) {
    for (name, kind, help, value) in accounting(gw).into_iter().chain(config_and_upstreams(gw)) {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let snapshot = gw.ctx.config.load_full();
    let deployments = gw.ctx.balancer.health(snapshot.config.models.values());
    family(
        out,
        "tollgate_deployments",
        "gauge",
        "Deployments by circuit-breaker state.",
    );
    for state in ["closed", "open", "probing"] {
        let n = deployments.iter().filter(|d| d.breaker == state).count();
        let _ = writeln!(out, "tollgate_deployments{{state=\"{state}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::access;
    use axum::http::StatusCode;
    use std::net::IpAddr;

    #[test]
    fn who_may_scrape() {
        let local: Option<IpAddr> = "127.0.0.1".parse().ok();
        let local6: Option<IpAddr> = "::1".parse().ok();
        let remote: Option<IpAddr> = "203.0.113.7".parse().ok();
        let t = Some("s3cret-token-of-length");
        let cases = [
            (None, None, local, None),
            (None, None, local6, None),
            (None, None, remote, Some(StatusCode::FORBIDDEN)),
            (None, Some("x"), remote, Some(StatusCode::FORBIDDEN)),
            (None, None, None, Some(StatusCode::FORBIDDEN)),
            (t, t, remote, None),
            (t, t, local, None),
            (t, None, local, Some(StatusCode::UNAUTHORIZED)),
            (t, None, remote, Some(StatusCode::UNAUTHORIZED)),
            (t, Some("wrong"), local, Some(StatusCode::FORBIDDEN)),
        ];
        for (token, presented, peer, want) in cases {
            let got = access(token, presented, peer).err().map(|e| e.0);
            assert_eq!(got, want, "{token:?} {presented:?} {peer:?}");
        }
    }
}
