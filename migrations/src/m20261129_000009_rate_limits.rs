//! Rate limits. A key may carry its own limits, lower than its owner's
//! (`NULL` is none). `rate_windows` holds one row per scope (an owner or a
//! key) and one-minute window: what all instances together took of that
//! window's allowance. An instance takes a share in a committed transaction
//! and admits calls from it in memory; rows of past windows are deleted as
//! their scope moves on.

use super::m20261128_000001_initial::{big, big_null, id, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const KEY_COLUMNS: [&str; 2] = ["requests_per_minute", "tokens_per_minute"];

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in KEY_COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("api_keys"))
                    .add_column(big_null(col))
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(table(
            "rate_windows",
            vec![
                id("id"),
                text("scope"),
                big("window_start"),
                big("requests_taken"),
                big("tokens_taken"),
            ],
        ))
        .await?;
        m.create_index(
            Index::create()
                .name("ux_rate_windows_scope")
                .table(Alias::new("rate_windows"))
                .col(Alias::new("scope"))
                .col(Alias::new("window_start"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("rate_windows"))
                .if_exists()
                .to_owned(),
        )
        .await?;
        for col in KEY_COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("api_keys"))
                    .drop_column(Alias::new(col))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
