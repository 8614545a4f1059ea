//! Ledger rows keep a call's usage and cost line by line, so the console can
//! explain a charge as a sum: the input tokens split into fresh, cached and
//! cache-written (`tokens_in` stays their total), the reasoning part of
//! `tokens_out`, and the micro-coins of each price line. Older rows get
//! zeros: their `tokens_in` counts as fresh input and no line is known.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [&str; 8] = [
    "cached_in",
    "cache_write_in",
    "reasoning_out",
    "input_micro",
    "cached_input_micro",
    "cache_write_micro",
    "output_micro",
    "request_micro",
];

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("ledger"))
                    .add_column(
                        ColumnDef::new(Alias::new(col))
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(Alias::new("ledger"))
                    .drop_column(Alias::new(col))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
