//! Budget alerts (`alerts:` in the config): per pool, the highest threshold
//! that has fired and not re-armed (`alert_states`), and the outbox of
//! webhook deliveries (`alert_deliveries`), each with its exact signed body,
//! its attempts and when the next one is due. No secret is stored.

use super::m20261128_000001_initial::{big, index, long_text, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "alert_states",
            vec![
                ColumnDef::new(Alias::new("pool_id"))
                    .big_integer()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                big("fired_percent"),
                big("updated_at"),
            ],
        ))
        .await?;
        m.create_table(table(
            "alert_deliveries",
            vec![
                ColumnDef::new(Alias::new("id"))
                    .string()
                    .not_null()
                    .primary_key()
                    .to_owned(),
                big("created_at"),
                big("pool_id"),
                text("owner_kind"),
                text("owner_name"),
                big("threshold_percent"),
                text("target_url"),
                long_text("body"),
                big("attempts"),
                big("next_attempt_at"),
                text("status"),
                ColumnDef::new(Alias::new("last_error"))
                    .text()
                    .null()
                    .to_owned(),
                ColumnDef::new(Alias::new("finished_at"))
                    .big_integer()
                    .null()
                    .to_owned(),
            ],
        ))
        .await?;
        m.create_index(index(
            "ix_alert_deliveries_due",
            "alert_deliveries",
            &["status", "next_attempt_at"],
        ))
        .await?;
        m.create_index(index(
            "ix_alert_deliveries_created",
            "alert_deliveries",
            &["created_at"],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["alert_deliveries", "alert_states"] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
