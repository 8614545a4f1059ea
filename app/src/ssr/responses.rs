//! Stored responses for the Responses API (`store: true`, OpenAI's default).
//! A response is kept until its `expires_at` (`server.responses.retention`
//! after it was created) and is visible only to the owner of the key that
//! created it: every read and delete filters on the owner in SQL, so another
//! owner's id looks exactly like a missing one.

use super::entities::stored_response::{self, Column, Entity};
use crate::domain::owner::OwnerKind;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;

/// The most JSON one stored response may take, `context` and `response`
/// together: as much as one request body may carry (`/v1` accepts 8 MiB).
pub const MAX_STORED_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// `resp_…` ([`new_id`]).
    pub id: String,
    pub owner_kind: OwnerKind,
    pub owner_id: i64,
    pub model: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; from then on the response is gone for every reader.
    pub expires_at: i64,
    /// The conversation's input items up to and including this response's
    /// own input, already expanded from any previous response (a JSON array).
    pub context: Value,
    /// The Responses API response object, as returned to the caller.
    pub response: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The caller's fault: answer 400.
    #[error(
        "the response and its conversation take {bytes} bytes of JSON; at most {MAX_STORED_BYTES} are stored. Send `store: false`, or start a shorter conversation"
    )]
    TooLarge { bytes: usize },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// A fresh response id: `resp_` and 48 hex digits from the OS CSPRNG.
pub fn new_id() -> Result<String, String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("resp_{hex}"))
}

/// Stores a response; refuses one whose JSON exceeds [`MAX_STORED_BYTES`].
pub async fn save<C: ConnectionTrait>(c: &C, r: &StoredResponse) -> Result<(), SaveError> {
    let context = to_text(&r.context)?;
    let response = to_text(&r.response)?;
    let bytes = context.len() + response.len();
    if bytes > MAX_STORED_BYTES {
        return Err(SaveError::TooLarge { bytes });
    }
    Entity::insert(stored_response::ActiveModel {
        id: Set(r.id.clone()),
        owner_kind: Set(r.owner_kind.as_str().to_string()),
        owner_id: Set(r.owner_id),
        model: Set(r.model.clone()),
        created_at: Set(r.created_at),
        expires_at: Set(r.expires_at),
        context: Set(context),
        response: Set(response),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// The owner's response `id`, unless it is missing, expired at `now_ms`, or
/// another owner's.
pub async fn load<C: ConnectionTrait>(
    c: &C,
    owner_kind: OwnerKind,
    owner_id: i64,
    id: &str,
    now_ms: i64,
) -> Result<Option<StoredResponse>, DbErr> {
    Entity::find()
        .filter(Column::Id.eq(id))
        .filter(Column::OwnerKind.eq(owner_kind.as_str()))
        .filter(Column::OwnerId.eq(owner_id))
        .filter(Column::ExpiresAt.gt(now_ms))
        .one(c)
        .await?
        .map(from_row)
        .transpose()
}

/// Deletes the owner's response `id`; `false` when it is missing, expired
/// at `now_ms` (the purge takes it) or another owner's.
pub async fn delete<C: ConnectionTrait>(
    c: &C,
    owner_kind: OwnerKind,
    owner_id: i64,
    id: &str,
    now_ms: i64,
) -> Result<bool, DbErr> {
    let done = Entity::delete_many()
        .filter(Column::Id.eq(id))
        .filter(Column::OwnerKind.eq(owner_kind.as_str()))
        .filter(Column::OwnerId.eq(owner_id))
        .filter(Column::ExpiresAt.gt(now_ms))
        .exec(c)
        .await?;
    Ok(done.rows_affected > 0)
}

/// Deletes every response expired at `now_ms`; returns how many.
pub async fn purge<C: ConnectionTrait>(c: &C, now_ms: i64) -> Result<u64, DbErr> {
    let done = Entity::delete_many()
        .filter(Column::ExpiresAt.lte(now_ms))
        .exec(c)
        .await?;
    Ok(done.rows_affected)
}

fn to_text(v: &Value) -> Result<String, DbErr> {
    serde_json::to_string(v).map_err(|e| DbErr::Json(e.to_string()))
}

fn from_row(row: stored_response::Model) -> Result<StoredResponse, DbErr> {
    let owner_kind = OwnerKind::parse(&row.owner_kind).ok_or_else(|| {
        DbErr::Custom(format!(
            "stored response {} has an unknown owner kind `{}`",
            row.id, row.owner_kind
        ))
    })?;
    let json = |field: &str, text: &str| {
        serde_json::from_str(text).map_err(|e| {
            DbErr::Json(format!(
                "stored response {} has unreadable {field}: {e}",
                row.id
            ))
        })
    };
    Ok(StoredResponse {
        context: json("context", &row.context)?,
        response: json("response", &row.response)?,
        id: row.id,
        owner_kind,
        owner_id: row.owner_id,
        model: row.model,
        created_at: row.created_at,
        expires_at: row.expires_at,
    })
}
