//! Applying one owner's settings from the config: its pool limit and refresh,
//! and its access policy. Used when an owner is created and by the
//! reconciler (`sync`); depends on pools, never on either of those callers.

use super::entities::access_policy;
use super::pools;
use crate::domain::config::{OwnerSettings, SettingsSource};
use crate::domain::owner::OwnerKind;
use crate::domain::policy::AccessPolicy;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use std::collections::BTreeSet;

fn list_json(set: &BTreeSet<String>) -> String {
    serde_json::to_string(set).unwrap_or_else(|_| "[]".into())
}

/// Applies one owner's settings. Returns (pool created, pool updated, policy written).
pub async fn apply_owner<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    settings: &OwnerSettings,
    source: SettingsSource,
    now: i64,
) -> Result<(bool, bool, bool), DbErr> {
    let (created, updated) = match pools::find(c, kind, owner_id).await? {
        None => (
            pools::create_if_missing(c, kind, owner_id, &settings.pool, now).await?,
            false,
        ),
        Some(m) => (
            false,
            pools::apply_settings(c, &m, &settings.pool, now).await?,
        ),
    };
    let written = apply_policy(c, (kind, owner_id), &settings.access, source, now).await?;
    Ok((created, updated, written))
}

/// The stored columns of a policy: source, default mode, white-, black-, graylist.
type PolicyColumns = (String, String, String, String, String);

fn policy_columns(a: &AccessPolicy, source: SettingsSource) -> PolicyColumns {
    (
        source.as_str().to_string(),
        a.default.as_str().to_string(),
        list_json(&a.whitelist),
        list_json(&a.blacklist),
        list_json(&a.graylist),
    )
}

/// Writes the owner's access policy unless the stored one is the same.
/// Returns whether it was written.
async fn apply_policy<C: ConnectionTrait>(
    c: &C,
    (kind, owner_id): (OwnerKind, i64),
    access: &AccessPolicy,
    source: SettingsSource,
    now: i64,
) -> Result<bool, DbErr> {
    let wanted = policy_columns(access, source);
    let existing = access_policy::Entity::find()
        .filter(access_policy::Column::OwnerKind.eq(kind.as_str()))
        .filter(access_policy::Column::OwnerId.eq(owner_id))
        .one(c)
        .await?;
    let same = existing.as_ref().is_some_and(|r| {
        (
            r.source.clone(),
            r.default_mode.clone(),
            r.whitelist.clone(),
            r.blacklist.clone(),
            r.graylist.clone(),
        ) == wanted
    });
    if same {
        return Ok(false);
    }
    let row = access_policy::ActiveModel {
        owner_kind: Set(kind.as_str().to_string()),
        owner_id: Set(owner_id),
        source: Set(wanted.0),
        default_mode: Set(wanted.1),
        whitelist: Set(wanted.2),
        blacklist: Set(wanted.3),
        graylist: Set(wanted.4),
        updated_at: Set(now),
        ..Default::default()
    };
    access_policy::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                access_policy::Column::OwnerKind,
                access_policy::Column::OwnerId,
            ])
            .update_columns([
                access_policy::Column::Source,
                access_policy::Column::DefaultMode,
                access_policy::Column::Whitelist,
                access_policy::Column::Blacklist,
                access_policy::Column::Graylist,
                access_policy::Column::UpdatedAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(true)
}
