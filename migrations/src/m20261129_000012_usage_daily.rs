//! The usage explorer's daily roll-up: per UTC day (`created_at / 86400000`),
//! owner and model, what the ledger holds (rows, refusals among them, tokens
//! and coins), kept equal to the ledger by the writer in the same transaction
//! that inserts ledger rows. Existing rows are rolled up here. Two more
//! ledger indexes serve the drill-down and CSV export without a pool: by
//! time, and by model and time.

use super::m20261128_000001_initial::index;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table, keyed by what the writer upserts on. On SQLite the rows are
/// stored in key order (`WITHOUT ROWID`), so a range of days is one
/// contiguous read with every sum at hand, not a lookup per row, and the
/// key's order (day, then owner) is the page's grouping by owner: SQLite
/// sums each group as the rows go by instead of sorting them first.
fn create_table(backend: DbBackend) -> String {
    let (int, tail) = if backend == DbBackend::Sqlite {
        ("INTEGER", " WITHOUT ROWID")
    } else {
        ("BIGINT", "")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS usage_daily (day {int} NOT NULL, owner_kind TEXT NOT NULL, \
         owner_id {int} NOT NULL, model TEXT NOT NULL, calls {int} NOT NULL, refused {int} NOT NULL, \
         tokens_in {int} NOT NULL, tokens_out {int} NOT NULL, coins_micro {int} NOT NULL, \
         PRIMARY KEY (day, owner_id, owner_kind, model)){tail}"
    )
}

/// Ledger rows rolled up by day, owner and model; run once, on an empty table.
const BACKFILL: &str = "INSERT INTO usage_daily \
     (day, owner_kind, owner_id, model, calls, refused, tokens_in, tokens_out, coins_micro) \
     SELECT l.created_at / 86400000, p.owner_kind, p.owner_id, l.model, COUNT(*), \
     SUM(CASE WHEN l.code = 'refused' THEN 1 ELSE 0 END), \
     SUM(l.tokens_in), SUM(l.tokens_out), SUM(l.coins_micro) \
     FROM ledger l JOIN pools p ON p.id = l.pool_id \
     GROUP BY l.created_at / 86400000, p.owner_kind, p.owner_id, l.model";

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(&create_table(m.get_database_backend()))
            .await?;
        // A manager's clients: led by the owner, so that a range of days
        // over every owner keeps to the key's order instead.
        m.create_index(index(
            "ix_usage_daily_owner",
            "usage_daily",
            &["owner_id", "owner_kind", "day"],
        ))
        .await?;
        // Grouping by model, in the same way: every column the page sums.
        m.create_index(index(
            "ix_usage_daily_model",
            "usage_daily",
            &[
                "day",
                "model",
                "calls",
                "refused",
                "tokens_in",
                "tokens_out",
                "coins_micro",
            ],
        ))
        .await?;
        m.create_index(index("ix_ledger_time", "ledger", &["created_at"]))
            .await?;
        m.create_index(index(
            "ix_ledger_model_time",
            "ledger",
            &["model", "created_at"],
        ))
        .await?;
        db.execute_unprepared(BACKFILL).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in ["ix_ledger_time", "ix_ledger_model_time"] {
            m.drop_index(
                Index::drop()
                    .name(name)
                    .table(Alias::new("ledger"))
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(
            Table::drop()
                .table(Alias::new("usage_daily"))
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
