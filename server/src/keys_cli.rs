//! `tollgate keys …`: key management from the host, for automation. Keys
//! are created only for clients and users that already exist.
#![allow(clippy::print_stdout)]

use crate::args::KeysCommand;
use crate::error::CliError;
use app::domain::rate::RateLimits;
use app::domain::time::rfc3339;
use app::ssr::actions::{key_audit_target, key_detail};
use app::ssr::audit::{self, Action, Who};
use app::ssr::keys::{self, parse_duration_ms, KeyTerms};
use app::ssr::now_ms;
use app::ssr::owners::{client_by_name, user_by_name, OwnerKind};
use sea_orm::DatabaseConnection;

async fn owner(
    db: &DatabaseConnection,
    client: &Option<String>,
    user: &Option<String>,
) -> Result<Option<(OwnerKind, i64)>, CliError> {
    match (client, user) {
        (Some(name), _) => client_by_name(db, name)
            .await?
            .map(|c| Some((OwnerKind::Client, c.id)))
            .ok_or_else(|| CliError::Other(format!("no client named `{name}`; clients are created by an admin in the web UI at /clients"))),
        (None, Some(name)) => user_by_name(db, name)
            .await?
            .map(|u| Some((OwnerKind::User, u.id)))
            .ok_or_else(|| CliError::Other(format!("no user named `{name}`"))),
        (None, None) => Ok(None),
    }
}

pub async fn run(db: &DatabaseConnection, command: &KeysCommand) -> Result<(), CliError> {
    let now = now_ms();
    match command {
        KeysCommand::Create {
            client,
            user,
            label,
            expires_in,
            requests_per_minute,
            tokens_per_minute,
        } => {
            let limits = RateLimits {
                requests_per_minute: *requests_per_minute,
                tokens_per_minute: *tokens_per_minute,
            };
            let owner = owner(db, client, user).await?;
            create(db, owner, label, expires_in.as_deref(), limits, now).await
        }
        KeysCommand::List { client, user } => list(db, client, user).await,
        KeysCommand::Revoke { prefix } => {
            let k = keys::revoke_by_prefix(db, prefix, now)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            eprintln!("revoked {}", k.prefix);
            let target = key_audit_target(db, &k).await?;
            audit::record(db, Who::cli().entry(Action::KeyRevoked, target)).await;
            Ok(())
        }
    }
}

/// `keys create`: prints the secret, the only time it is shown.
async fn create(
    db: &DatabaseConnection,
    owner: Option<(OwnerKind, i64)>,
    label: &str,
    expires_in: Option<&str>,
    limits: RateLimits,
    now: i64,
) -> Result<(), CliError> {
    let expires_at = match expires_in {
        None => None,
        Some(d) => Some(
            now + parse_duration_ms(d).ok_or_else(|| {
                CliError::Other(format!(
                    "--expires-in `{d}`: use a number and d, h, m or s, e.g. 30d"
                ))
            })?,
        ),
    };
    let Some(owner) = owner else {
        return Err(CliError::Other(
            "name the owner with --client NAME or --user USERNAME".into(),
        ));
    };
    let terms = KeyTerms {
        label,
        expires_at,
        created_by: None,
        limits,
    };
    let new = keys::create_with(db, owner, &terms, now)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let target = key_audit_target(db, &new.record).await?;
    let entry = Who::cli().entry(Action::KeyCreated, target);
    audit::record(db, entry.detail(key_detail(&new.record))).await;
    eprintln!(
        "Created key {} — it is shown only this once:",
        new.record.prefix
    );
    println!("{}", new.secret);
    Ok(())
}

/// `keys list`: a table of keys, of one owner or all.
async fn list(
    db: &DatabaseConnection,
    client: &Option<String>,
    user: &Option<String>,
) -> Result<(), CliError> {
    let filter = owner(db, client, user).await?;
    println!(
        "{:<12} {:<7} {:<8} {:<24} {:<24} {:<24} label",
        "prefix", "owner", "id", "created", "last used", "expires/revoked"
    );
    for k in keys::list(db, filter).await? {
        let state = match (k.revoked_at, k.expires_at) {
            (Some(t), _) => format!("revoked {}", rfc3339(t)),
            (None, Some(t)) => format!("expires {}", rfc3339(t)),
            (None, None) => "-".into(),
        };
        println!(
            "{:<12} {:<7} {:<8} {:<24} {:<24} {:<24} {}",
            k.prefix,
            k.owner_kind,
            k.owner_id,
            rfc3339(k.created_at),
            k.last_used_at.map_or("never".into(), rfc3339),
            state,
            k.label
        );
    }
    Ok(())
}
