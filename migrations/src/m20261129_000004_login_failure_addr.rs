//! Failed sign-ins also remember the client address they came from, so that
//! sign-in failures can be bounded per address as well as per name: a flood
//! of guesses at ever new names cannot grow the table without bound.

use super::m20261128_000001_initial::index;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("login_failures"))
                .add_column(
                    ColumnDef::new(Alias::new("addr"))
                        .string()
                        .not_null()
                        .default(""),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_login_failures_addr",
            "login_failures",
            &["addr", "at"],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_login_failures_addr")
                .table(Alias::new("login_failures"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Alias::new("login_failures"))
                .drop_column(Alias::new("addr"))
                .to_owned(),
        )
        .await
    }
}
