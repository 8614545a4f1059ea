//! The change counter behind every in-memory cache of keys, owners and
//! consents. A write that can make a cached entry wrong calls [`bump`] in its
//! own transaction: the database counter moves (other instances poll it and
//! drop their caches), and so does this process's own counter, which the
//! caches check on every read, so the instance that made the change never
//! serves the old answer after the change is committed.

use sea_orm::{ConnectionTrait, DbErr};
use std::sync::atomic::{AtomicU64, Ordering};

static LOCAL: AtomicU64 = AtomicU64::new(0);

/// Records a change that cached entries may not survive.
pub async fn bump<C: ConnectionTrait>(c: &C) -> Result<(), DbErr> {
    c.execute_unprepared("UPDATE changes SET counter = counter + 1 WHERE id = 1")
        .await?;
    // Counted before the commit: a reader that refills a cache from the old
    // rows in between is caught by the poll of the shared counter.
    LOCAL.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// Changes this process has made.
pub fn local() -> u64 {
    LOCAL.load(Ordering::Acquire)
}

/// The shared counter, as every instance sees it.
pub async fn counter<C: ConnectionTrait>(c: &C) -> Result<i64, DbErr> {
    let row = c
        .query_one(sea_orm::Statement::from_string(
            c.get_database_backend(),
            "SELECT counter FROM changes WHERE id = 1",
        ))
        .await?;
    match row {
        Some(r) => r.try_get_by_index(0),
        None => Ok(0),
    }
}
