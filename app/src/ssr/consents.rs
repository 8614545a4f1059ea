//! Graylist consents: recorded in the UI, revocable, checked on every call to
//! a graylisted model.

use super::entities::consent;
use crate::domain::owner::OwnerKind;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter,
};
use std::collections::BTreeSet;

/// Models with a live consent for this owner.
pub async fn consented_models<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
) -> Result<BTreeSet<String>, DbErr> {
    Ok(consent::Entity::find()
        .filter(consent::Column::OwnerKind.eq(kind.as_str()))
        .filter(consent::Column::OwnerId.eq(owner_id))
        .filter(consent::Column::RevokedAt.is_null())
        .all(c)
        .await?
        .into_iter()
        .map(|r| r.model)
        .collect())
}

pub async fn has_consent<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    model: &str,
) -> Result<bool, DbErr> {
    Ok(consent::Entity::find()
        .filter(consent::Column::OwnerKind.eq(kind.as_str()))
        .filter(consent::Column::OwnerId.eq(owner_id))
        .filter(consent::Column::Model.eq(model))
        .filter(consent::Column::RevokedAt.is_null())
        .one(c)
        .await?
        .is_some())
}

/// Records consent unless one is already live. Returns whether it recorded.
pub async fn record<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    model: &str,
    recorded_by: Option<i64>,
    now: i64,
) -> Result<bool, DbErr> {
    if has_consent(c, kind, owner_id, model).await? {
        return Ok(false);
    }
    consent::ActiveModel {
        owner_kind: Set(kind.as_str().to_string()),
        owner_id: Set(owner_id),
        model: Set(model.to_string()),
        recorded_by: Set(recorded_by),
        recorded_at: Set(now),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(c)
    .await?;
    super::changes::bump(c).await?;
    Ok(true)
}

pub async fn revoke<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    model: &str,
    now: i64,
) -> Result<bool, DbErr> {
    let res = consent::Entity::update_many()
        .col_expr(consent::Column::RevokedAt, Expr::value(Some(now)))
        .filter(consent::Column::OwnerKind.eq(kind.as_str()))
        .filter(consent::Column::OwnerId.eq(owner_id))
        .filter(consent::Column::Model.eq(model))
        .filter(consent::Column::RevokedAt.is_null())
        .exec(c)
        .await?;
    if res.rows_affected > 0 {
        super::changes::bump(c).await?;
    }
    Ok(res.rows_affected > 0)
}
