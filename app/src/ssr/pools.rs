//! Atomic pool updates. Each balance change is a single conditional UPDATE,
//! so concurrent requests (in one process or several sharing a database)
//! cannot overspend: a debit only happens `WHERE balance_micro >= cost`.

use super::entities::pool;
use crate::domain::config::{PoolLimit, PoolSettings};
use crate::domain::owner::OwnerKind;
use crate::domain::pool::{initial_balance, refill_due, refilled, PoolState};
use sea_orm::sea_query::{Expr, OnConflict, SimpleExpr};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

pub fn state(m: &pool::Model) -> PoolState {
    PoolState {
        limit: limit(m),
        refresh_micro: m.refresh_micro,
        balance: m.balance_micro,
        refilled_at: m.refilled_at,
        held: m.held_micro,
    }
}

pub fn limit(m: &pool::Model) -> PoolLimit {
    if m.unlimited {
        PoolLimit::Unlimited
    } else {
        PoolLimit::Limited(m.max_micro)
    }
}

fn limit_columns(limit: PoolLimit) -> (i64, bool) {
    match limit {
        PoolLimit::Unlimited => (0, true),
        PoolLimit::Limited(m) => (m, false),
    }
}

/// The pool as its owner sees it at `now`: refill credited, plus what gateway
/// instances hold on lease for it and have not spent yet (never above max).
/// `balance` is what can be spent; `balance + held` is what is stored.
/// Pool and leases are read in one statement, so a batch moving coins
/// between them is seen entirely or not at all.
pub async fn current<C: ConnectionTrait>(
    c: &C,
    m: &pool::Model,
    now: i64,
) -> Result<PoolState, DbErr> {
    let sql = "SELECT p.balance_micro, p.refilled_at, p.max_micro, p.unlimited, p.refresh_micro, p.held_micro, \
         CAST(COALESCE((SELECT SUM(l.amount_micro) FROM leases l \
         WHERE l.pool_id = p.id AND l.unlimited = p.unlimited), 0) AS BIGINT) AS leased \
         FROM pools p WHERE p.id = {p}";
    let row = c
        .query_one(super::db::statement_with_one_param(
            c.get_database_backend(),
            sql,
            m.id.into(),
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("pool {}", m.id)))?;
    let fresh = pool::Model {
        balance_micro: row.try_get_by_index(0)?,
        refilled_at: row.try_get_by_index(1)?,
        max_micro: row.try_get_by_index(2)?,
        unlimited: row.try_get_by_index(3)?,
        refresh_micro: row.try_get_by_index(4)?,
        held_micro: row.try_get_by_index(5)?,
        ..m.clone()
    };
    let leased: i64 = row.try_get_by_index(6)?;
    let mut st = refilled(&state(&fresh), now);
    if let PoolLimit::Limited(max) = st.limit {
        st.balance = (st.balance + leased).min(max.max(st.balance));
    }
    Ok(st)
}

pub async fn find<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
) -> Result<Option<pool::Model>, DbErr> {
    pool::Entity::find()
        .filter(pool::Column::OwnerKind.eq(kind.as_str()))
        .filter(pool::Column::OwnerId.eq(owner_id))
        .one(c)
        .await
}

/// Creates the owner's pool with `starting` if it has none. Returns whether
/// a pool was created. Safe against a concurrent creator.
pub async fn create_if_missing<C: ConnectionTrait>(
    c: &C,
    kind: OwnerKind,
    owner_id: i64,
    settings: &PoolSettings,
    now: i64,
) -> Result<bool, DbErr> {
    let (max_micro, unlimited) = limit_columns(settings.limit);
    let row = pool::ActiveModel {
        owner_kind: Set(kind.as_str().to_string()),
        owner_id: Set(owner_id),
        max_micro: Set(max_micro),
        unlimited: Set(unlimited),
        refresh_micro: Set(settings.refresh_micro),
        balance_micro: Set(initial_balance(settings)),
        refilled_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    let res = pool::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([pool::Column::OwnerKind, pool::Column::OwnerId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(res > 0)
}

/// Credits the refill due at `now`. The refill clock is compared and set in
/// the same statement, so an interval is credited once even when several
/// requests or instances race; the loser simply credits nothing.
pub async fn credit_refill<C: ConnectionTrait>(
    c: &C,
    m: &pool::Model,
    now: i64,
) -> Result<(), DbErr> {
    let st = state(m);
    let refill = refill_due(&st, now);
    if !refill.changes(&st) {
        return Ok(());
    }
    pool::Entity::update_many()
        .col_expr(
            pool::Column::BalanceMicro,
            Expr::case(
                Expr::expr(Expr::col(pool::Column::BalanceMicro).add(refill.amount))
                    .gt(Expr::col(pool::Column::MaxMicro)),
                Expr::col(pool::Column::MaxMicro),
            )
            .finally(Expr::col(pool::Column::BalanceMicro).add(refill.amount))
            .into(),
        )
        .col_expr(pool::Column::RefilledAt, Expr::value(refill.refilled_at))
        .filter(pool::Column::Id.eq(m.id))
        .filter(pool::Column::RefilledAt.eq(m.refilled_at))
        .exec(c)
        .await?;
    Ok(())
}

/// Applies synced settings to an existing pool: credits refill at the old
/// rate first, then sets the new limit and rate, moving coins between
/// `balance` and `held` by the rule of `domain::pool::with_settings`, so no
/// config change destroys coins. The balance is read and written in the same
/// statement, because gateway instances move coins concurrently. `starting`
/// is ignored. Returns whether anything changed.
pub async fn apply_settings<C: ConnectionTrait>(
    c: &C,
    m: &pool::Model,
    settings: &PoolSettings,
    now: i64,
) -> Result<bool, DbErr> {
    let (max_micro, unlimited) = limit_columns(settings.limit);
    if m.max_micro == max_micro
        && m.unlimited == unlimited
        && m.refresh_micro == settings.refresh_micro
    {
        return Ok(false);
    }
    credit_refill(c, m, now).await?;
    let mut update = pool::Entity::update_many()
        .col_expr(pool::Column::MaxMicro, Expr::value(max_micro))
        .col_expr(pool::Column::Unlimited, Expr::value(unlimited))
        .col_expr(
            pool::Column::RefreshMicro,
            Expr::value(settings.refresh_micro),
        )
        .col_expr(pool::Column::UpdatedAt, Expr::value(now));
    if m.unlimited && !unlimited {
        // Leaving "unlimited": refill starts counting from now.
        update = update.col_expr(pool::Column::RefilledAt, Expr::value(now));
    }
    if let Some((new_balance, new_held)) = limit_moves(m, max_micro, unlimited) {
        update = update
            .col_expr(pool::Column::BalanceMicro, new_balance)
            .col_expr(pool::Column::HeldMicro, new_held);
    }
    // The moves are relative to the limit read above; a concurrent apply of
    // another limit makes this a no-op rather than a wrong move.
    update
        .filter(pool::Column::Id.eq(m.id))
        .filter(pool::Column::MaxMicro.eq(m.max_micro))
        .filter(pool::Column::Unlimited.eq(m.unlimited))
        .exec(c)
        .await?;
    Ok(true)
}

/// The new `(balance, held)` of a pool whose limit changes from `m`'s to
/// `max_micro`/`unlimited`, as expressions over the current row; `None` when
/// no coins move.
fn limit_moves(
    m: &pool::Model,
    max_micro: i64,
    unlimited: bool,
) -> Option<(SimpleExpr, SimpleExpr)> {
    let balance = || Expr::col(pool::Column::BalanceMicro);
    let held = || Expr::col(pool::Column::HeldMicro);
    match (m.unlimited, unlimited) {
        (_, true) => None,
        (true, false) => {
            // Leaving "unlimited": everything comes within the new max.
            let total = || Expr::expr(balance().add(held()));
            let over = || total().gt(max_micro);
            Some((
                Expr::case(over(), Expr::value(max_micro))
                    .finally(total())
                    .into(),
                Expr::case(over(), total().sub(max_micro))
                    .finally(Expr::value(0i64))
                    .into(),
            ))
        }
        (false, false) if max_micro < m.max_micro => {
            // Lowered: what is above the new max is held back.
            let over = || balance().gt(max_micro);
            Some((
                Expr::case(over(), Expr::value(max_micro))
                    .finally(balance())
                    .into(),
                Expr::case(over(), Expr::expr(held().add(balance())).sub(max_micro))
                    .finally(held())
                    .into(),
            ))
        }
        (false, false) if max_micro > m.max_micro => {
            // Raised: held coins come back, up to the room the raise made.
            let room = max_micro - m.max_micro;
            let more = || held().gt(room);
            Some((
                Expr::case(more(), balance().add(room))
                    .finally(Expr::expr(balance().add(held())))
                    .into(),
                Expr::case(more(), held().sub(room))
                    .finally(Expr::value(0i64))
                    .into(),
            ))
        }
        (false, false) => None,
    }
}

/// Credits `amount` back (coins a lease returns). What would rise above the
/// limit (lowered while the lease was out) is held back, not lost.
pub async fn credit<C: ConnectionTrait>(c: &C, pool_id: i64, amount: i64) -> Result<(), DbErr> {
    if amount <= 0 {
        return Ok(());
    }
    let sum = || Expr::expr(Expr::col(pool::Column::BalanceMicro).add(amount));
    let over = || sum().gt(Expr::col(pool::Column::MaxMicro));
    pool::Entity::update_many()
        .col_expr(
            pool::Column::BalanceMicro,
            Expr::case(over(), Expr::col(pool::Column::MaxMicro))
                .finally(sum())
                .into(),
        )
        .col_expr(
            pool::Column::HeldMicro,
            Expr::case(
                over(),
                Expr::expr(Expr::col(pool::Column::HeldMicro).add(sum()))
                    .sub(Expr::col(pool::Column::MaxMicro)),
            )
            .finally(Expr::col(pool::Column::HeldMicro))
            .into(),
        )
        .filter(pool::Column::Id.eq(pool_id))
        .filter(pool::Column::Unlimited.eq(false))
        .exec(c)
        .await?;
    Ok(())
}
