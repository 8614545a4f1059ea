//! The usage explorer's daily roll-up: per UTC day (`created_at / 86400000`),
//! owner and model, what the ledger holds (rows, refusals among them, tokens
//! and coins), kept equal to the ledger by the writer in the same transaction
//! that inserts ledger rows. Existing rows are rolled up here. Two more
//! ledger indexes serve the drill-down and CSV export without a pool: by
//! time, and by model and time.

use super::m20261128_000001_initial::{big, id, index, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

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
        m.create_table(table(
            "usage_daily",
            vec![
                id("id"),
                big("day"),
                text("owner_kind"),
                big("owner_id"),
                text("model"),
                big("calls"),
                big("refused"),
                big("tokens_in"),
                big("tokens_out"),
                big("coins_micro"),
            ],
        ))
        .await?;
        // The upsert's conflict target, and the range scan by day.
        m.create_index(
            Index::create()
                .name("ux_usage_daily_key")
                .table(Alias::new("usage_daily"))
                .unique()
                .if_not_exists()
                .col(Alias::new("day"))
                .col(Alias::new("owner_kind"))
                .col(Alias::new("owner_id"))
                .col(Alias::new("model"))
                .to_owned(),
        )
        .await?;
        // A manager's clients.
        m.create_index(index(
            "ix_usage_daily_owner",
            "usage_daily",
            &["owner_kind", "owner_id", "day"],
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
        m.get_connection().execute_unprepared(BACKFILL).await?;
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
