//! Reconciling the config into the database: every existing client and user
//! gets its named entry or the section's `default`. Named entries for owners
//! that do not exist are skipped (the UI creates clients; YAML never does).
//! Idempotent: a second run with the same config writes nothing.

use super::entities::access_policy;
use super::owner_settings::apply_owner;
use super::owners::{all_clients, all_users, OwnerKind};
use super::pools;
use crate::domain::config::{Config, Section, SettingsSource};
use crate::domain::plan::{self, Current};
use crate::domain::policy::{AccessMode, AccessPolicy};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub pools_created: usize,
    pub pools_updated: usize,
    pub policies_written: usize,
    /// `clients.NAME` / `users.NAME` entries that match nobody yet.
    pub unmatched: Vec<String>,
}

/// Named entries (`clients.NAME`, `users.NAME`) that match none of `existing`.
pub fn unmatched<'a>(
    kind: OwnerKind,
    section: &Section,
    existing: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let names: HashSet<&str> = existing.into_iter().collect();
    section
        .named
        .keys()
        .filter(|n| !names.contains(n.as_str()))
        .map(|n| format!("{}s.{n}", kind.as_str()))
        .collect()
}

async fn sync_section<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    section: &Section,
    owners: &[(i64, String)],
    now: i64,
    report: &mut SyncReport,
) -> Result<(), DbErr> {
    for entry in unmatched(kind, section, owners.iter().map(|(_, n)| n.as_str())) {
        tracing::debug!("{entry}: no such {} yet; skipped", kind.as_str());
        report.unmatched.push(entry);
    }
    for (id, name) in owners {
        let (settings, source) = section.settings_for(name);
        let (created, updated, policy) = apply_owner(c, kind, *id, settings, source, now).await?;
        report.pools_created += created as usize;
        report.pools_updated += updated as usize;
        report.policies_written += policy as usize;
    }
    Ok(())
}

/// Applies the whole config to every existing client and user.
pub async fn sync_all<C: ConnectionTrait>(
    c: &C,
    config: &Config,
    now: i64,
) -> Result<SyncReport, DbErr> {
    let mut report = SyncReport::default();
    let clients: Vec<(i64, String)> = all_clients(c)
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let users: Vec<(i64, String)> = all_users(c)
        .await?
        .into_iter()
        .map(|m| (m.id, m.username))
        .collect();
    sync_section(
        c,
        OwnerKind::Client,
        &config.clients,
        &clients,
        now,
        &mut report,
    )
    .await?;
    sync_section(c, OwnerKind::User, &config.users, &users, now, &mut report).await?;
    Ok(report)
}

/// Every existing client and user as the database has them now (pools with
/// leases counted in, the access policy last synced), for a plan.
pub async fn current_owners<C: ConnectionTrait>(c: &C, now: i64) -> Result<Vec<Current>, DbErr> {
    let policies: HashMap<(String, i64), access_policy::Model> = access_policy::Entity::find()
        .all(c)
        .await?
        .into_iter()
        .map(|p| ((p.owner_kind.clone(), p.owner_id), p))
        .collect();
    let mut owners: Vec<(OwnerKind, i64, String)> = all_clients(c)
        .await?
        .into_iter()
        .map(|m| (OwnerKind::Client, m.id, m.name))
        .collect();
    owners.extend(
        all_users(c)
            .await?
            .into_iter()
            .map(|m| (OwnerKind::User, m.id, m.username)),
    );
    let mut out = Vec::with_capacity(owners.len());
    for (kind, id, name) in owners {
        let pool = match pools::find(c, kind, id).await? {
            Some(m) => Some(pools::current(c, &m, now).await?),
            None => None,
        };
        let access = policies
            .get(&(kind.as_str().to_string(), id))
            .map(stored_policy);
        out.push(Current {
            kind: kind.as_str(),
            name,
            pool,
            access,
        });
    }
    Ok(out)
}

fn stored_policy(p: &access_policy::Model) -> (AccessPolicy, SettingsSource) {
    let list = |s: &str| serde_json::from_str::<BTreeSet<String>>(s).unwrap_or_default();
    (
        AccessPolicy {
            default: AccessMode::parse(&p.default_mode).unwrap_or(AccessMode::Blacklist),
            whitelist: list(&p.whitelist),
            blacklist: list(&p.blacklist),
            graylist: list(&p.graylist),
        },
        if p.source == "named" {
            SettingsSource::Named
        } else {
            SettingsSource::Default
        },
    )
}

/// What applying `config` would change, as text (`check-config --plan`).
pub async fn plan_text<C: ConnectionTrait>(
    c: &C,
    config: &Config,
    now: i64,
) -> Result<String, DbErr> {
    let current = current_owners(c, now).await?;
    Ok(plan::render(&plan::plan(&current, config, now)))
}
