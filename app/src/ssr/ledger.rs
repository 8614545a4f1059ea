//! Reserve, then settle. A call's worst-case cost is reserved (debited with a
//! conditional UPDATE and remembered in `reservations`) before any upstream
//! call; settling claims and deletes the reservation, returns the unused part
//! and writes exactly one ledger row, all in one transaction. Only the
//! transaction that claims the reservation row settles it, so nothing is ever
//! refunded twice. The statements live in `ledger_batch`, which applies many
//! operations at once; the functions here are single-operation batches.

use super::entities::{pool, reservation};
use super::ledger_batch::{self, Op, OpResult};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub request_id: String,
    /// The pool as read just before; refill and debit are still atomic
    /// conditional statements, so a stale snapshot cannot overspend.
    pub pool: pool::Model,
    pub key_id: Option<i64>,
    pub model: String,
    pub amount: i64,
}

/// What settling needs to know about a reservation, kept by the caller so
/// that settling does not have to read it back.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub request_id: String,
    pub pool_id: i64,
    pub unlimited: bool,
    pub key_id: Option<i64>,
    pub model: String,
    pub amount: i64,
}

impl ReserveRequest {
    pub fn reservation(&self) -> Reservation {
        Reservation {
            request_id: self.request_id.clone(),
            pool_id: self.pool.id,
            unlimited: self.pool.unlimited,
            key_id: self.key_id,
            model: self.model.clone(),
            amount: self.amount,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    /// The balance (after refill) cannot cover the amount.
    Insufficient {
        balance: i64,
    },
    Blocked,
}

/// How a call ended, recorded in the ledger.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub reservation: Reservation,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// The actual cost of what was served.
    pub cost: i64,
    pub outcome: String,
}

/// A call refused before any reservation: one ledger row with no coins.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub request_id: String,
    pub pool_id: i64,
    pub key_id: Option<i64>,
    pub model: String,
    pub outcome: String,
}

/// Reserves one call's worst case: a single-operation batch.
pub async fn reserve_in<C: ConnectionTrait>(
    c: &C,
    req: &ReserveRequest,
    now: i64,
) -> Result<ReserveOutcome, DbErr> {
    match ledger_batch::apply(c, &[Op::Reserve(req)], now)
        .await?
        .pop()
    {
        Some(OpResult::Reserve(o)) => Ok(o),
        _ => Err(DbErr::Custom("reserve produced no result".into())),
    }
}

/// Settles one reservation. Returns the coins charged, or `None` if it was
/// already settled (or never existed).
pub async fn settle_in<C: ConnectionTrait>(
    c: &C,
    s: &Settlement,
    now: i64,
) -> Result<Option<i64>, DbErr> {
    match ledger_batch::apply(c, &[Op::Settle(s)], now).await?.pop() {
        Some(OpResult::Settle(o)) => Ok(o),
        _ => Err(DbErr::Custom("settle produced no result".into())),
    }
}

/// Reservations older than this belong to a process that died mid-call: no
/// live call lasts this long (the longest upstream timeout is far shorter).
pub const ORPHAN_AFTER_MS: i64 = 15 * 60 * 1000;

/// Settles orphaned reservations at their full reserved amount: the upstream
/// may have produced up to that much, and nothing better is known. Each is
/// settled in its own transaction through `settle_in`, so a reservation is
/// never settled (or refunded) twice, even with several instances sweeping.
pub async fn sweep_orphans(db: &sea_orm::DatabaseConnection, now: i64) -> Result<usize, DbErr> {
    let stale = reservation::Entity::find()
        .filter(reservation::Column::CreatedAt.lt(now - ORPHAN_AFTER_MS))
        .order_by_asc(reservation::Column::CreatedAt)
        .all(db)
        .await?;
    let mut settled = 0;
    for r in stale {
        let txn = super::db::begin_write(db).await?;
        let unlimited = pool::Entity::find_by_id(r.pool_id)
            .one(&txn)
            .await?
            .is_some_and(|p| p.unlimited);
        let s = Settlement {
            reservation: Reservation {
                request_id: r.request_id.clone(),
                pool_id: r.pool_id,
                unlimited,
                key_id: r.key_id,
                model: r.model.clone(),
                amount: r.amount_micro,
            },
            tokens_in: 0,
            tokens_out: 0,
            cost: r.amount_micro,
            outcome: "orphaned: settled at the reserved amount".into(),
        };
        if settle_in(&txn, &s, now).await?.is_some() {
            settled += 1;
        }
        txn.commit().await?;
    }
    Ok(settled)
}
