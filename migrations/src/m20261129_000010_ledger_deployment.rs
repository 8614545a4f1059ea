//! Ledger rows name the deployment that served the call (empty for calls
//! that reached none: refused, or every deployment failed).

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
                    ColumnDef::new(Alias::new("deployment"))
                        .string()
                        .not_null()
                        .default(""),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("ledger"))
                .drop_column(Alias::new("deployment"))
                .to_owned(),
        )
        .await
    }
}
