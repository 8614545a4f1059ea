//! Reserve, then settle. A call's worst-case cost is reserved (debited with a
//! conditional UPDATE and remembered in `reservations`) before any upstream
//! call; settling deletes the reservation, returns the unused part and writes
//! exactly one ledger row, all in one transaction. Deleting the reservation
//! with a rows-affected check makes settling idempotent: nothing is ever
//! refunded twice.

use super::entities::{ledger, pool, reservation};
use super::pools;
use crate::domain::config::PoolLimit;
use crate::domain::pool::refilled;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};

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

pub async fn reserve_in<C: ConnectionTrait>(
    c: &C,
    req: &ReserveRequest,
    now: i64,
) -> Result<ReserveOutcome, DbErr> {
    let p = &req.pool;
    let limit = pools::limit(p);
    if limit.is_blocked() {
        insert_row(
            c,
            p.id,
            req.key_id,
            &req.model,
            0,
            0,
            0,
            now,
            &req.request_id,
            "refused: pool_blocked",
        )
        .await?;
        return Ok(ReserveOutcome::Blocked);
    }
    if limit != PoolLimit::Unlimited {
        pools::credit_refill(c, p, now).await?;
        if !pools::try_debit(c, p.id, req.amount).await? {
            let balance = pool::Entity::find_by_id(p.id)
                .one(c)
                .await?
                .map_or(0, |p| refilled(&pools::state(&p), now).balance);
            insert_row(
                c,
                p.id,
                req.key_id,
                &req.model,
                0,
                0,
                0,
                now,
                &req.request_id,
                "refused: insufficient_coins",
            )
            .await?;
            return Ok(ReserveOutcome::Insufficient { balance });
        }
    }
    reservation::Entity::insert(reservation::ActiveModel {
        request_id: Set(req.request_id.clone()),
        pool_id: Set(p.id),
        key_id: Set(req.key_id),
        model: Set(req.model.clone()),
        amount_micro: Set(req.amount),
        created_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    Ok(ReserveOutcome::Reserved)
}

/// Settles a reservation. Returns the coins charged, or `None` if it was
/// already settled (or never existed).
pub async fn settle_in<C: ConnectionTrait>(
    c: &C,
    s: &Settlement,
    now: i64,
) -> Result<Option<i64>, DbErr> {
    let r = &s.reservation;
    let deleted = reservation::Entity::delete_many()
        .filter(reservation::Column::RequestId.eq(r.request_id.clone()))
        .exec(c)
        .await?;
    if deleted.rows_affected != 1 {
        return Ok(None);
    }
    let mut outcome = s.outcome.clone();
    let charged = if r.unlimited {
        s.cost
    } else if s.cost <= r.amount {
        pools::credit(c, r.pool_id, r.amount - s.cost).await?;
        s.cost
    } else if pools::try_debit(c, r.pool_id, s.cost - r.amount).await? {
        s.cost
    } else {
        // The estimate was too low and the pool cannot cover the rest: charge
        // what was reserved and say so, rather than go below zero.
        outcome = format!("{outcome}; capped at the reservation");
        r.amount
    };
    insert_row(
        c,
        r.pool_id,
        r.key_id,
        &r.model,
        s.tokens_in,
        s.tokens_out,
        charged,
        now,
        &r.request_id,
        &outcome,
    )
    .await?;
    Ok(Some(charged))
}

#[allow(clippy::too_many_arguments)]
async fn insert_row<C: ConnectionTrait>(
    c: &C,
    pool_id: i64,
    key_id: Option<i64>,
    model: &str,
    tokens_in: i64,
    tokens_out: i64,
    coins: i64,
    now: i64,
    request_id: &str,
    outcome: &str,
) -> Result<(), DbErr> {
    ledger::Entity::insert(ledger::ActiveModel {
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
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
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
