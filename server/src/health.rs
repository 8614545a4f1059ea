//! `GET /healthz`: database reachability and config reload state.

use app::domain::time::rfc3339;
use app::ssr::{db, AppContext};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

pub async fn healthz(State(ctx): State<AppContext>) -> (StatusCode, Json<Value>) {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(3), db::ping(&ctx.db)).await,
        Ok(Ok(()))
    );
    let r = ctx.reload.load();
    let body = json!({
        "status": if db_ok { "ok" } else { "unavailable" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "config": {
            "generation": r.generation,
            "applied_at": rfc3339(r.applied_at),
            "last_reload_ok": r.last_reload_ok,
            "last_error": r.last_error,
        }
    });
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
