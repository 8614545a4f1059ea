//! Stored responses of the Responses API: `GET /v1/responses/{id}` and
//! `DELETE /v1/responses/{id}`, for the owner of the key that created them.
//! Whatever this key's owner cannot see (never stored, expired, deleted, or
//! another owner's) is one and the same 404, so an id reveals nothing.

use super::error::ApiError;
use super::{Caller, Gateway};
use app::ssr::{now_ms, responses};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

/// The stored response object, as it was returned when it was created.
pub(super) async fn retrieve(
    State(gw): State<Gateway>,
    Caller(owner): Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = plausible(id)?;
    let stored = responses::load(&gw.ctx.db, owner.kind, owner.owner_id, &id, now_ms())
        .await
        .map_err(unavailable)?;
    stored
        .map(|s| Json(s.response))
        .ok_or_else(|| not_found(Some(&id)))
}

pub(super) async fn delete(
    State(gw): State<Gateway>,
    Caller(owner): Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = plausible(id)?;
    let deleted = responses::delete(&gw.ctx.db, owner.kind, owner.owner_id, &id, now_ms())
        .await
        .map_err(unavailable)?;
    if deleted {
        Ok(Json(
            json!({"id": id, "object": "response", "deleted": true}),
        ))
    } else {
        Err(not_found(Some(&id)))
    }
}

/// The id from the path, if it could name a stored response; anything else
/// is not found without asking the database.
fn plausible(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match id {
        Ok(Path(id))
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(id)
        }
        _ => Err(not_found(None)),
    }
}

pub(super) fn not_found(id: Option<&str>) -> ApiError {
    let which = id.map_or_else(|| "with that id".to_string(), |id| format!("`{id}`"));
    ApiError::ResponseNotFound(format!(
        "no stored response {which} exists for this key's owner: it may never have been stored (`store: false`), or it has expired or been deleted"
    ))
}

fn unavailable(e: sea_orm::DbErr) -> ApiError {
    tracing::error!("cannot read or delete a stored response: {e}");
    ApiError::AccountingUnavailable("the database is unavailable; try again shortly".into())
}
