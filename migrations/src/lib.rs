//! Database schema. The same migrations run on SQLite and PostgreSQL, so they
//! use only portable column types: integers for ids, money (micro-coins) and
//! times (Unix milliseconds), text for everything else.
#![allow(clippy::too_many_lines)]

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_initial;
mod m20261128_000002_leases;
mod m20261129_000003_held_and_overage;
mod m20261129_000004_login_failure_addr;
mod m20261129_000005_changes;
mod m20261129_000006_outcome_code;
mod m20261129_000007_usage_breakdown;
mod m20261129_000008_stored_responses;
mod m20261129_000009_rate_limits;
mod m20261129_000010_ledger_deployment;
mod m20261129_000011_audit;
mod m20261129_000012_usage_daily;
mod m20261129_000013_alerts;
mod m20261129_000014_oidc;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial::Migration),
            Box::new(m20261128_000002_leases::Migration),
            Box::new(m20261129_000003_held_and_overage::Migration),
            Box::new(m20261129_000004_login_failure_addr::Migration),
            Box::new(m20261129_000005_changes::Migration),
            Box::new(m20261129_000006_outcome_code::Migration),
            Box::new(m20261129_000007_usage_breakdown::Migration),
            Box::new(m20261129_000008_stored_responses::Migration),
            Box::new(m20261129_000009_rate_limits::Migration),
            Box::new(m20261129_000010_ledger_deployment::Migration),
            Box::new(m20261129_000011_audit::Migration),
            Box::new(m20261129_000012_usage_daily::Migration),
            Box::new(m20261129_000013_alerts::Migration),
            Box::new(m20261129_000014_oidc::Migration),
        ]
    }
}
