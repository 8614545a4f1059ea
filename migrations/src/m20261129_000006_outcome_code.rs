//! Ledger rows get a stable outcome code (`domain::outcome::CallOutcome`)
//! beside the free-text `outcome`, which now holds only the detail. Older
//! rows get the code their text starts with.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("ledger"))
                .add_column(
                    ColumnDef::new(Alias::new("code"))
                        .string()
                        .not_null()
                        .default("ok"),
                )
                .to_owned(),
        )
        .await?;
        m.get_connection()
            .execute_unprepared(
                "UPDATE ledger SET code = CASE \
                 WHEN outcome LIKE 'refused%' THEN 'refused' \
                 WHEN outcome LIKE 'orphaned%' THEN 'orphaned_lease' \
                 WHEN outcome LIKE 'abandoned%' THEN 'abandoned' \
                 WHEN outcome LIKE 'ok_without_usage%' THEN 'ok_without_usage' \
                 WHEN outcome LIKE 'client_disconnected%' THEN 'client_disconnected' \
                 WHEN outcome LIKE 'upstream_error_mid_stream%' THEN 'upstream_error_mid_stream' \
                 WHEN outcome LIKE 'upstream_error%' THEN 'upstream_error' \
                 WHEN outcome LIKE 'upstream_timeout%' THEN 'upstream_timeout' \
                 ELSE 'ok' END",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("ledger"))
                .drop_column(Alias::new("code"))
                .to_owned(),
        )
        .await
    }
}
