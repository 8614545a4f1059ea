//! Stored responses for the Responses API (`store: true`): one row per
//! response, owned by the client or user whose key created it, readable and
//! deletable only by that owner, and purged once `expires_at` has passed.
//! `context` is the conversation up to and including the response's own
//! input (a JSON array); `response` is the response object as returned.

use super::m20261128_000001_initial::{big, index, long_text, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "stored_responses",
            vec![
                ColumnDef::new(Alias::new("id"))
                    .string()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                text("owner_kind"),
                big("owner_id"),
                text("model"),
                big("created_at"),
                big("expires_at"),
                long_text("context"),
                long_text("response"),
            ],
        ))
        .await?;
        m.create_index(index(
            "ix_stored_responses_expires",
            "stored_responses",
            &["expires_at"],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("stored_responses"))
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
