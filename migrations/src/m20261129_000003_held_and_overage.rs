//! Hardening. Pools keep coins that a config change put out of reach in
//! `held_micro` instead of destroying them: lowering `max` or blocking a pool
//! moves the excess there, and raising `max` again gives it back. The ledger
//! records a call's true cost (`cost_micro`, from the usage the upstream
//! reported) and how far it exceeded the reservation (`overage_micro`);
//! `coins_micro` stays what the pool actually paid. `config_state.last_plan`
//! keeps what the last applied config changed, for `/config`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn add_big(table: &str, col: &str) -> TableAlterStatement {
    Table::alter()
        .table(Alias::new(table))
        .add_column(
            ColumnDef::new(Alias::new(col))
                .big_integer()
                .not_null()
                .default(0),
        )
        .to_owned()
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(add_big("pools", "held_micro")).await?;
        m.alter_table(add_big("ledger", "cost_micro")).await?;
        m.alter_table(add_big("ledger", "overage_micro")).await?;
        // What the last applied config changed, as `check-config --plan` shows it.
        m.alter_table(
            Table::alter()
                .table(Alias::new("config_state"))
                .add_column(ColumnDef::new(Alias::new("last_plan")).text().null())
                .to_owned(),
        )
        .await?;
        // Rows written before this knew no other cost than what they charged.
        m.get_connection()
            .execute_unprepared("UPDATE ledger SET cost_micro = coins_micro")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (t, c) in [
            ("config_state", "last_plan"),
            ("pools", "held_micro"),
            ("ledger", "cost_micro"),
            ("ledger", "overage_micro"),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new(t))
                    .drop_column(Alias::new(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
