//! One change counter for in-memory caches. Every write that can make a
//! cached key, owner or consent wrong (a key revoked, a user deactivated, a
//! consent given or withdrawn, a client created, a config applied) bumps it
//! in the same transaction; every instance polls it and drops its caches
//! when it moves.

use super::m20261128_000001_initial::{big, table};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "changes",
            vec![
                ColumnDef::new(Alias::new("id"))
                    .big_integer()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                big("counter"),
            ],
        ))
        .await?;
        m.get_connection()
            .execute_unprepared("INSERT INTO changes (id, counter) VALUES (1, 0)")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Alias::new("changes")).to_owned())
            .await
    }
}
