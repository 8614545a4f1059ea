//! Rate windows in the database: per scope (an owner or a key) and
//! one-minute window, what all instances together took of the window's
//! allowance. See `domain::rate` for how shares are sized and why the
//! instances together never admit more than the limit.

use super::db;
use super::entities::rate_window;
use crate::domain::rate::{shares, Ask, Need};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QuerySelect,
};

/// A share wanted of one scope's window: a dimension is `None` when it has
/// no limit or nothing of it is short.
#[derive(Debug, Clone)]
pub struct ShareAsk {
    pub scope: String,
    pub window_start: i64,
    pub requests: Option<Ask>,
    pub tokens: Option<Ask>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareOutcome {
    /// `share` was taken; the row's totals are now `taken`.
    Granted { share: Need, taken: Need },
    /// What is left cannot cover what is short; the row's totals are `taken`.
    Exhausted { taken: Need },
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The window's row, created if missing, and locked on PostgreSQL (SQLite's
/// write transaction already excludes other writers).
async fn claim<C: ConnectionTrait>(
    c: &C,
    scope: &str,
    window_start: i64,
) -> Result<rate_window::Model, DbErr> {
    let row = rate_window::ActiveModel {
        scope: Set(scope.to_string()),
        window_start: Set(window_start),
        requests_taken: Set(0),
        tokens_taken: Set(0),
        ..Default::default()
    };
    rate_window::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([rate_window::Column::Scope, rate_window::Column::WindowStart])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    let mut q = rate_window::Entity::find()
        .filter(rate_window::Column::Scope.eq(scope))
        .filter(rate_window::Column::WindowStart.eq(window_start));
    if c.get_database_backend() == DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    q.one(c)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("rate window {scope}")))
}

/// Takes a share of a window in one committed transaction, never past the
/// limit: the update itself checks `taken + share <= limit`. Rows of the
/// scope's earlier windows are deleted on the way.
pub async fn take_share(db: &DatabaseConnection, ask: &ShareAsk) -> Result<ShareOutcome, DbErr> {
    let txn = db::begin_write(db).await?;
    let row = claim(&txn, &ask.scope, ask.window_start).await?;
    let taken = Need {
        requests: count(row.requests_taken),
        tokens: count(row.tokens_taken),
    };
    let Some(share) = shares(ask.requests, ask.tokens, taken) else {
        txn.commit().await?;
        return Ok(ShareOutcome::Exhausted { taken });
    };
    let mut update = rate_window::Entity::update_many()
        .col_expr(
            rate_window::Column::RequestsTaken,
            Expr::col(rate_window::Column::RequestsTaken).add(stored(share.requests)),
        )
        .col_expr(
            rate_window::Column::TokensTaken,
            Expr::col(rate_window::Column::TokensTaken).add(stored(share.tokens)),
        )
        .filter(rate_window::Column::Id.eq(row.id));
    if let Some(a) = ask.requests {
        let most = stored(a.limit.saturating_sub(share.requests));
        update = update.filter(rate_window::Column::RequestsTaken.lte(most));
    }
    if let Some(a) = ask.tokens {
        let most = stored(a.limit.saturating_sub(share.tokens));
        update = update.filter(rate_window::Column::TokensTaken.lte(most));
    }
    if update.exec(&txn).await?.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(ShareOutcome::Exhausted { taken });
    }
    rate_window::Entity::delete_many()
        .filter(rate_window::Column::Scope.eq(ask.scope.as_str()))
        .filter(rate_window::Column::WindowStart.lt(ask.window_start))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(ShareOutcome::Granted {
        share,
        taken: Need {
            requests: taken.requests + share.requests,
            tokens: taken.tokens + share.tokens,
        },
    })
}

/// Gives back part of what this instance took of a window, for other
/// instances. One statement; it never takes a total below zero.
pub async fn give_back<C: ConnectionTrait>(
    c: &C,
    scope: &str,
    window_start: i64,
    back: Need,
) -> Result<(), DbErr> {
    let (r, t) = (stored(back.requests), stored(back.tokens));
    rate_window::Entity::update_many()
        .col_expr(
            rate_window::Column::RequestsTaken,
            Expr::col(rate_window::Column::RequestsTaken).sub(r),
        )
        .col_expr(
            rate_window::Column::TokensTaken,
            Expr::col(rate_window::Column::TokensTaken).sub(t),
        )
        .filter(rate_window::Column::Scope.eq(scope))
        .filter(rate_window::Column::WindowStart.eq(window_start))
        .filter(rate_window::Column::RequestsTaken.gte(r))
        .filter(rate_window::Column::TokensTaken.gte(t))
        .exec(c)
        .await?;
    Ok(())
}
