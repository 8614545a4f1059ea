//! Database start-up, shared by `serve`, `init-db` and the reconciler:
//! connect, migrate, and apply a config in one transaction.

use crate::error::CliError;
use app::ssr::{audit, config_state, db, now_ms, sync, LoadedConfig};
use sea_orm::DatabaseConnection;

/// Connects, migrates and syncs the config in one transaction.
pub async fn prepare_database(
    url: &str,
    loaded: &LoadedConfig,
) -> Result<(DatabaseConnection, i64), CliError> {
    let conn = db::connect(url).await?;
    db::migrate(&conn).await?;
    let generation = apply(&conn, loaded).await?;
    Ok((conn, generation))
}

/// Syncs a config into the database in one transaction; returns its generation.
pub async fn apply(
    conn: &DatabaseConnection,
    loaded: &LoadedConfig,
) -> Result<i64, sea_orm::DbErr> {
    let now = now_ms();
    let txn = db::begin_write(conn).await?;
    // Applies from several instances take turns from here, so exactly one
    // of them sees the generation move and records it.
    audit::lock_head(&txn).await?;
    let before = config_state::get(&txn).await?.map(|s| s.generation);
    let plan = sync::plan_text(&txn, &loaded.config, now).await?;
    let report = sync::sync_all(&txn, &loaded.config, now).await?;
    app::ssr::changes::bump(&txn).await?;
    let generation = config_state::record_applied(&txn, &loaded.content_hash, &plan, now).await?;
    // In the same transaction: a new generation and its audit entry commit together.
    let new_generation = before != Some(generation);
    audit::config_applied(&txn, &loaded.config, generation, new_generation).await?;
    txn.commit().await?;
    tracing::info!(
        generation,
        pools_created = report.pools_created,
        pools_updated = report.pools_updated,
        policies_written = report.policies_written,
        unmatched = report.unmatched.len(),
        "config applied"
    );
    Ok(generation)
}
