//! `GET /healthz`: database reachability, whether calls are being admitted
//! (the accounting gate), and config reload state.

use crate::gateway::Gateway;
use app::domain::time::rfc3339;
use app::ssr::db;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

pub async fn healthz(State(gw): State<Gateway>) -> (StatusCode, Json<Value>) {
    let ctx = &gw.ctx;
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(3), db::ping(&ctx.db)).await,
        Ok(Ok(()))
    );
    let open = gw.accountant.is_open();
    let ok = db_ok && open;
    let r = ctx.reload.load();
    let (overage_calls, overage_micro) = gw.accountant.overage();
    let snapshot = ctx.config.load_full();
    let deployments = ctx.balancer.health(snapshot.config.models.values());
    let count = |state: &str| deployments.iter().filter(|d| d.breaker == state).count();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "accounting": {
            "admitting_calls": open,
            "unwritten_ledger_rows": gw.accountant.unwritten_rows(),
            "overage_calls": overage_calls,
            "overage_coins": app::domain::money::micro_to_coins(overage_micro.try_into().unwrap_or(i64::MAX)),
        },
        // Counts only: the console's Deployments page has names and errors.
        "deployments": {
            "total": deployments.len(),
            "closed": count("closed"),
            "open": count("open"),
            "probing": count("probing"),
            "in_flight": deployments.iter().map(|d| u64::from(d.in_flight)).sum::<u64>(),
        },
        "config": {
            "generation": r.generation,
            "applied_at": rfc3339(r.applied_at),
            "last_reload_ok": r.last_reload_ok,
            "last_error": r.last_error,
        }
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
