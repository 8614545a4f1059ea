//! The audit trail: `audit_log`, append-only and hash-chained (each entry
//! stores the hash of the one before); `audit_head`, one row holding the
//! last entry's `seq` and `hash`, which every append updates first so that
//! appends from every instance sharing the database take turns; and
//! `audit_config`, one row holding a digest of each entry of the config last
//! applied, so that every apply can say what it changed.

use super::m20261128_000001_initial::{big, index, long_text, table, text};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn key(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .primary_key()
        .to_owned()
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(table(
            "audit_log",
            vec![
                key("seq"),
                big("at_ms"),
                text("actor"),
                text("action"),
                long_text("target"),
                text("addr"),
                long_text("detail"),
                text("prev_hash"),
                text("hash"),
            ],
        ))
        .await?;
        // With `seq` second, a filtered page newest first is one backward
        // index scan, however rare the actor or action.
        for (name, cols) in [
            ("ix_audit_log_actor", &["actor", "seq"][..]),
            ("ix_audit_log_action", &["action", "seq"][..]),
            ("ix_audit_log_at", &["at_ms"][..]),
        ] {
            m.create_index(index(name, "audit_log", cols)).await?;
        }
        m.create_table(table(
            "audit_head",
            vec![key("id"), big("seq"), text("hash")],
        ))
        .await?;
        m.create_table(table("audit_config", vec![key("id"), long_text("entries")]))
            .await?;
        let c = m.get_connection();
        c.execute_unprepared(&format!(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{ZEROS}')"
        ))
        .await?;
        c.execute_unprepared("INSERT INTO audit_config (id, entries) VALUES (1, '{}')")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["audit_config", "audit_head", "audit_log"] {
            m.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
