//! Budget leases replace per-call reservations. An instance holds a lease on
//! a pool: coins taken from the pool durably, then spent call by call in
//! memory while the ledger rows are written behind. Reservations still open
//! when this runs belong to calls that can no longer settle, so they are
//! charged at their reserved amount (the documented orphan rule) before the
//! table goes. Ledger request ids stop being unique: a caller may send its own
//! `x-request-id` twice, and neither call may be lost for it.

use super::m20261128_000001_initial::{big, boolean, id, index, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "leases",
            vec![
                id("id"),
                big("pool_id"),
                text("holder"),
                boolean("unlimited"),
                big("amount_micro"),
                big("created_at"),
                big("renewed_at"),
            ],
        ))
        .await?;
        m.create_index(index("ix_leases_renewed", "leases", &["renewed_at"]))
            .await?;
        m.create_index(index("ix_leases_pool", "leases", &["pool_id"]))
            .await?;

        let db = m.get_connection();
        db.execute_unprepared(
            "INSERT INTO ledger (pool_id, key_id, model, tokens_in, tokens_out, coins_micro, created_at, request_id, outcome) \
             SELECT pool_id, key_id, model, 0, 0, amount_micro, created_at, request_id, \
             'orphaned: settled at the reserved amount' FROM reservations",
        )
        .await?;
        m.drop_table(Table::drop().table(Alias::new("reservations")).to_owned())
            .await?;

        m.drop_index(
            Index::drop()
                .name("ux_ledger_request")
                .table(Alias::new("ledger"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("ix_ledger_request", "ledger", &["request_id"]))
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("leases"))
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
