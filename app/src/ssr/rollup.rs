//! The daily roll-up (`usage_daily`), written with the ledger: whatever
//! inserts ledger rows tallies them here and writes the tally in the same
//! transaction, one upsert per (day, pool, model), so the roll-up always
//! equals a `GROUP BY` over the ledger joined with its pools.

use super::entities::ledger;
use crate::domain::outcome::CallOutcome;
use crate::domain::time::DAY_MS;
use sea_orm::{ActiveValue, ConnectionTrait, DbBackend, DbErr, Statement, Value};
use std::collections::BTreeMap;

/// Sums per (day, pool, model). The order of the keys is the order rows are
/// upserted in, the same in every transaction, so two writers sharing
/// PostgreSQL take the roll-up's row locks in one order.
#[derive(Debug, Default)]
pub struct Tally {
    groups: BTreeMap<(i64, i64, String), Sums>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    calls: i64,
    refused: i64,
    tokens_in: i64,
    tokens_out: i64,
    coins: i64,
}

fn value<T: Clone + Default + Into<Value>>(v: &ActiveValue<T>) -> T {
    match v {
        ActiveValue::Set(x) | ActiveValue::Unchanged(x) => x.clone(),
        ActiveValue::NotSet => T::default(),
    }
}

impl Tally {
    /// Counts one ledger row as it will be inserted.
    pub fn add(&mut self, row: &ledger::ActiveModel) {
        let day = value(&row.created_at).div_euclid(DAY_MS);
        let key = (day, value(&row.pool_id), value(&row.model));
        let s = self.groups.entry(key).or_default();
        s.calls += 1;
        s.refused += i64::from(value(&row.code) == CallOutcome::Refused.code());
        s.tokens_in = s.tokens_in.saturating_add(value(&row.tokens_in));
        s.tokens_out = s.tokens_out.saturating_add(value(&row.tokens_out));
        s.coins += value(&row.coins_micro);
    }

    /// Adds the tally to the roll-up, in the caller's transaction. A pool
    /// that no longer exists has no owner and so no roll-up row (its ledger
    /// rows join no pool either).
    pub async fn write<C: ConnectionTrait>(self, c: &C) -> Result<(), DbErr> {
        let backend = c.get_database_backend();
        for ((day, pool_id, model), s) in self.groups {
            let values: [Value; 8] = [
                day.into(),
                model.into(),
                s.calls.into(),
                s.refused.into(),
                s.tokens_in.into(),
                s.tokens_out.into(),
                s.coins.into(),
                pool_id.into(),
            ];
            c.execute(Statement::from_sql_and_values(
                backend,
                placeholders(backend, UPSERT),
                values,
            ))
            .await?;
        }
        Ok(())
    }
}

/// The `WHERE` is required: SQLite cannot otherwise tell an `INSERT … SELECT`
/// with an upsert from a join's `ON`.
const UPSERT: &str = "INSERT INTO usage_daily \
     (day, owner_kind, owner_id, model, calls, refused, tokens_in, tokens_out, coins_micro) \
     SELECT ?, owner_kind, owner_id, ?, ?, ?, ?, ?, ? FROM pools WHERE id = ? \
     ON CONFLICT (day, owner_id, owner_kind, model) DO UPDATE SET \
     calls = usage_daily.calls + excluded.calls, \
     refused = usage_daily.refused + excluded.refused, \
     tokens_in = usage_daily.tokens_in + excluded.tokens_in, \
     tokens_out = usage_daily.tokens_out + excluded.tokens_out, \
     coins_micro = usage_daily.coins_micro + excluded.coins_micro";

/// SQL written with `?` placeholders in the backend's syntax (`$1`, `$2`, …
/// on PostgreSQL). The text must hold no `?` other than placeholders.
pub fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            placeholders(DbBackend::Sqlite, "a = ? b = ?"),
            "a = ? b = ?"
        );
        assert_eq!(
            placeholders(DbBackend::Postgres, "a = ? b = ?"),
            "a = $1 b = $2"
        );
    }
}
