//! Applying a whole batch of accounting operations in one transaction with as
//! few statements as correctness allows. Debits stay one conditional UPDATE
//! per call (each must see the one before); everything that cannot overspend
//! is combined: reservation rows and ledger rows are inserted with one
//! multi-row INSERT each, settled reservations are deleted with one DELETE,
//! and refunds are summed per pool into one UPDATE each.

use super::entities::{ledger, pool, reservation};
use super::ledger::{Refusal, ReserveOutcome, ReserveRequest, Settlement};
use super::pools;
use crate::domain::config::PoolLimit;
use crate::domain::pool::refilled;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect,
};
use std::collections::{BTreeMap, HashSet};

pub enum Op<'a> {
    Reserve(&'a ReserveRequest),
    Settle(&'a Settlement),
    Refuse(&'a Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Reserve(ReserveOutcome),
    /// Coins charged, or `None` when the reservation was already settled.
    Settle(Option<i64>),
    Refuse,
}

#[allow(clippy::too_many_arguments)]
fn ledger_row(
    pool_id: i64,
    key_id: Option<i64>,
    model: &str,
    tokens_in: i64,
    tokens_out: i64,
    coins: i64,
    now: i64,
    request_id: &str,
    outcome: &str,
) -> ledger::ActiveModel {
    ledger::ActiveModel {
        pool_id: Set(pool_id),
        key_id: Set(key_id),
        model: Set(model.to_string()),
        tokens_in: Set(tokens_in),
        tokens_out: Set(tokens_out),
        coins_micro: Set(coins),
        created_at: Set(now),
        request_id: Set(request_id.to_string()),
        outcome: Set(outcome.to_string()),
        ..Default::default()
    }
}

/// Applies `ops` in the caller's transaction; results come back in order.
pub async fn apply<C: ConnectionTrait>(
    c: &C,
    ops: &[Op<'_>],
    now: i64,
) -> Result<Vec<OpResult>, DbErr> {
    let mut results: Vec<Option<OpResult>> = vec![None; ops.len()];
    let mut new_reservations = Vec::new();
    let mut rows = Vec::new();

    // Reservations and refusals, in arrival order.
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Refuse(r) => {
                rows.push(ledger_row(
                    r.pool_id,
                    r.key_id,
                    &r.model,
                    0,
                    0,
                    0,
                    now,
                    &r.request_id,
                    &r.outcome,
                ));
                results[i] = Some(OpResult::Refuse);
            }
            Op::Reserve(req) => {
                let p = &req.pool;
                let limit = pools::limit(p);
                let refused = |outcome: &str| {
                    ledger_row(
                        p.id,
                        req.key_id,
                        &req.model,
                        0,
                        0,
                        0,
                        now,
                        &req.request_id,
                        outcome,
                    )
                };
                let outcome = if limit.is_blocked() {
                    rows.push(refused("refused: pool_blocked"));
                    ReserveOutcome::Blocked
                } else if limit == PoolLimit::Unlimited {
                    ReserveOutcome::Reserved
                } else {
                    pools::credit_refill(c, p, now).await?;
                    if pools::try_debit(c, p.id, req.amount).await? {
                        ReserveOutcome::Reserved
                    } else {
                        let balance = pool::Entity::find_by_id(p.id)
                            .one(c)
                            .await?
                            .map_or(0, |p| refilled(&pools::state(&p), now).balance);
                        rows.push(refused("refused: insufficient_coins"));
                        ReserveOutcome::Insufficient { balance }
                    }
                };
                if outcome == ReserveOutcome::Reserved {
                    new_reservations.push(reservation::ActiveModel {
                        request_id: Set(req.request_id.clone()),
                        pool_id: Set(p.id),
                        key_id: Set(req.key_id),
                        model: Set(req.model.clone()),
                        amount_micro: Set(req.amount),
                        created_at: Set(now),
                    });
                }
                results[i] = Some(OpResult::Reserve(outcome));
            }
            Op::Settle(_) => {}
        }
    }
    if !new_reservations.is_empty() {
        reservation::Entity::insert_many(new_reservations)
            .exec_without_returning(c)
            .await?;
    }

    // Settlements: claim the reservation rows (locked on PostgreSQL, so two
    // instances can never both claim one), delete them, then charge.
    let ids: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Settle(s) => Some(s.reservation.request_id.clone()),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        let mut q = reservation::Entity::find()
            .select_only()
            .column(reservation::Column::RequestId)
            .filter(reservation::Column::RequestId.is_in(ids.clone()));
        if c.get_database_backend() == DbBackend::Postgres {
            q = q.lock_exclusive();
        }
        let mut live: HashSet<String> =
            q.into_tuple::<String>().all(c).await?.into_iter().collect();
        if !live.is_empty() {
            reservation::Entity::delete_many()
                .filter(
                    reservation::Column::RequestId.is_in(live.iter().cloned().collect::<Vec<_>>()),
                )
                .exec(c)
                .await?;
        }
        let mut refunds: BTreeMap<i64, i64> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let Op::Settle(s) = op else { continue };
            let r = &s.reservation;
            // `remove` also makes a duplicate settlement in one batch a no-op.
            if !live.remove(&r.request_id) {
                results[i] = Some(OpResult::Settle(None));
                continue;
            }
            let mut outcome = s.outcome.clone();
            let charged = if r.unlimited {
                s.cost
            } else if s.cost <= r.amount {
                *refunds.entry(r.pool_id).or_default() += r.amount - s.cost;
                s.cost
            } else if pools::try_debit(c, r.pool_id, s.cost - r.amount).await? {
                s.cost
            } else {
                outcome = format!("{outcome}; capped at the reservation");
                r.amount
            };
            rows.push(ledger_row(
                r.pool_id,
                r.key_id,
                &r.model,
                s.tokens_in,
                s.tokens_out,
                charged,
                now,
                &r.request_id,
                &outcome,
            ));
            results[i] = Some(OpResult::Settle(Some(charged)));
        }
        for (pool_id, amount) in refunds {
            pools::credit(c, pool_id, amount).await?;
        }
    }
    if !rows.is_empty() {
        ledger::Entity::insert_many(rows)
            .exec_without_returning(c)
            .await?;
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| DbErr::Custom("an accounting operation got no result".into())))
        .collect()
}
