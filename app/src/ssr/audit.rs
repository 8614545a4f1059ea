//! The audit trail in the database: appending an entry to the hash chain,
//! verifying the chain, reading it for the `/audit` page and the CSV export,
//! and recording what a config apply changed.
//!
//! Appends take turns across every instance sharing the database: each
//! first bumps the one `audit_head` row (`UPDATE … SET seq = seq + 1`), which
//! takes its row lock on PostgreSQL (SQLite's write transaction is already
//! exclusive), then inserts the entry and stores its hash in the head, all
//! in one transaction. So `seq` has no gaps and each entry's `prev_hash` is
//! the hash of the entry before it.
//!
//! Console actions are recorded right after they commit ([`record`]); a
//! failure to record is logged with `tracing::error!` (the action has
//! already happened and is not undone). A config apply is recorded inside
//! its own transaction ([`config_applied`]), so the two commit together.

use super::actions::ConsoleError;
use super::entities::{audit_config, audit_head, audit_log};
use super::{db, now_ms, sha256_hex, AppContext};
use crate::domain::audit::{
    config_diff, config_entries, hash_input, reload_detail, AuditQuery, Break, ChainCheck, Sealed,
};
pub use crate::domain::audit::{key_target, target, Action, AuditFilter, Entry};
use crate::domain::config::Config;
use crate::view::{AuditPage, AuditRow};
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select, Statement,
};
use std::collections::BTreeMap;

const HEAD: i64 = 1;

/// Who acts, and from which client address: what every entry records besides
/// the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub actor: String,
    pub addr: String,
}

impl Who {
    pub fn new(actor: impl Into<String>, addr: impl Into<String>) -> Who {
        Who {
            actor: actor.into(),
            addr: addr.into(),
        }
    }

    /// The `tollgate` command line on the host.
    pub fn cli() -> Who {
        Who::new("cli", "")
    }

    /// The config file, applied at start-up or reloaded.
    pub fn config() -> Who {
        Who::new("config", "")
    }

    /// An entry by this actor from this address.
    pub fn entry(&self, action: Action, target: impl Into<String>) -> Entry {
        Entry::new(self.actor.clone(), action, target).addr(self.addr.clone())
    }
}

/// Appends `entry` in a transaction of its own; a failure is logged, not
/// returned, since what it records has already happened.
pub async fn record(db: &DatabaseConnection, entry: Entry) {
    let (action, target) = (entry.action, entry.target.clone());
    if let Err(e) = append(db, entry).await {
        tracing::error!(
            action = action.as_str(),
            target = %target,
            "the audit trail could not record this action, which did happen: {e}"
        );
    }
}

/// How long a refused sign-in that cost the server nothing (throttled, or
/// refused before any check) is not recorded again for the same name or
/// address with the same reason: such refusals come as fast as a client can
/// send them, and each would otherwise add an entry.
pub const REPEAT_WINDOW_MS: i64 = 60_000;

/// Whether a failed sign-in with this `detail` was recorded for this name or
/// from this address within [`REPEAT_WINDOW_MS`] before `now`.
pub async fn failed_sign_in_recorded_since<C: ConnectionTrait>(
    c: &C,
    e: &Entry,
    now: i64,
) -> Result<bool, DbErr> {
    let e = e.clone().bounded();
    let found = audit_log::Entity::find()
        .filter(audit_log::Column::AtMs.gt(now - REPEAT_WINDOW_MS))
        .filter(audit_log::Column::Action.eq(Action::SignInFailed.as_str()))
        .filter(audit_log::Column::Detail.eq(e.detail.as_str()))
        .filter(
            sea_orm::Condition::any()
                .add(audit_log::Column::Actor.eq(e.actor.as_str()))
                .add(audit_log::Column::Addr.eq(e.addr.as_str())),
        )
        .one(c)
        .await?;
    Ok(found.is_some())
}

/// Appends `entry` in a transaction of its own; returns its `seq`.
pub async fn append(db: &DatabaseConnection, entry: Entry) -> Result<i64, DbErr> {
    let txn = db::begin_write(db).await?;
    let seq = append_in(&txn, entry).await?;
    txn.commit().await?;
    Ok(seq)
}

/// The SHA-256 (hex) an entry's contents hash to.
pub fn entry_hash(e: &Sealed<'_>) -> String {
    sha256_hex(hash_input(e).as_bytes())
}

/// Appends `entry` within the caller's write transaction (see
/// `db::begin_write`); returns its `seq`. The head stays locked until that
/// transaction ends.
pub async fn append_in<C: ConnectionTrait>(c: &C, entry: Entry) -> Result<i64, DbErr> {
    let e = entry.bounded();
    let backend = c.get_database_backend();
    // Takes the head's row lock before anything is read from it.
    let row = c
        .query_one(Statement::from_string(
            backend,
            "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash",
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("audit_head".into()))?;
    let seq: i64 = row.try_get("", "seq")?;
    let prev: String = row.try_get("", "hash")?;
    let at_ms = now_ms();
    let sealed = Sealed {
        seq,
        at_ms,
        actor: &e.actor,
        action: e.action.as_str(),
        target: &e.target,
        addr: &e.addr,
        detail: &e.detail,
        prev_hash: &prev,
    };
    let hash = entry_hash(&sealed);
    audit_log::Entity::insert(audit_log::ActiveModel {
        seq: Set(seq),
        at_ms: Set(at_ms),
        actor: Set(e.actor.clone()),
        action: Set(e.action.as_str().to_string()),
        target: Set(e.target.clone()),
        addr: Set(e.addr.clone()),
        detail: Set(e.detail.clone()),
        prev_hash: Set(prev.clone()),
        hash: Set(hash.clone()),
    })
    .exec_without_returning(c)
    .await?;
    audit_head::Entity::update_many()
        .col_expr(audit_head::Column::Hash, Expr::value(hash))
        .filter(audit_head::Column::Id.eq(HEAD))
        .exec(c)
        .await?;
    Ok(seq)
}

/// Takes the head's row lock for the rest of the caller's transaction
/// without changing it: a config apply holds it from its start, so applies
/// by several instances at once take turns and only the first records the
/// new generation. Console actions append after their own transaction, so
/// no transaction waits for the head while holding what an apply needs.
pub async fn lock_head<C: ConnectionTrait>(c: &C) -> Result<(), DbErr> {
    c.execute_unprepared("UPDATE audit_head SET seq = seq WHERE id = 1")
        .await
        .map(|_| ())
}

/// Rows read at a time when walking or exporting the trail.
pub const BATCH: u64 = 1000;

fn sealed(m: &audit_log::Model) -> Sealed<'_> {
    Sealed {
        seq: m.seq,
        at_ms: m.at_ms,
        actor: &m.actor,
        action: &m.action,
        target: &m.target,
        addr: &m.addr,
        detail: &m.detail,
        prev_hash: &m.prev_hash,
    }
}

/// Checks the entries after `check`'s last, in batches; `Ok(false)` when
/// there were none.
async fn walk(
    db: &DatabaseConnection,
    check: &mut ChainCheck,
) -> Result<Result<bool, Break>, DbErr> {
    let mut any = false;
    loop {
        let rows = audit_log::Entity::find()
            .filter(audit_log::Column::Seq.gt(check.last_seq()))
            .order_by_asc(audit_log::Column::Seq)
            .limit(BATCH)
            .all(db)
            .await?;
        for r in &rows {
            let s = sealed(r);
            if let Err(b) = check.check(&s, &r.hash, &entry_hash(&s)) {
                return Ok(Err(b));
            }
        }
        any |= !rows.is_empty();
        if (rows.len() as u64) < BATCH {
            return Ok(Ok(any));
        }
    }
}

/// Walks the whole chain in `seq` order, a batch at a time: every hash
/// recomputed, every link and `seq` checked, and the head against the last
/// entry. Returns the number of entries, or the first broken link. Entries
/// appended while it runs are walked too.
pub async fn verify(db: &DatabaseConnection) -> Result<Result<i64, Break>, DbErr> {
    let mut check = ChainCheck::default();
    loop {
        let walked = match walk(db, &mut check).await? {
            Ok(any) => any,
            Err(b) => return Ok(Err(b)),
        };
        let Some(head) = audit_head::Entity::find_by_id(HEAD).one(db).await? else {
            return Ok(Err(Break::HeadMissing));
        };
        // The head ahead of the last entry walked: either appends since, or
        // a truncated tail; walk again, and it is truncation if nothing came.
        if head.seq > check.last_seq() && walked {
            continue;
        }
        return Ok(check.finish(head.seq, &head.hash));
    }
}

/// `instr`/`strpos`: an exact, case-sensitive substring test on both
/// backends, with no `LIKE` wildcards to escape.
fn contains(backend: DbBackend, text: &str) -> SimpleExpr {
    let sql = if backend == DbBackend::Postgres {
        "strpos(target, $1) > 0"
    } else {
        "instr(target, ?) > 0"
    };
    Expr::cust_with_values(sql, [text.to_string()])
}

fn filtered(backend: DbBackend, q: &AuditQuery) -> Select<audit_log::Entity> {
    let mut s = audit_log::Entity::find();
    if let Some(a) = &q.actor {
        s = s.filter(audit_log::Column::Actor.eq(a.as_str()));
    }
    if let Some(a) = q.action {
        s = s.filter(audit_log::Column::Action.eq(a.as_str()));
    }
    if let Some(t) = &q.target {
        s = s.filter(contains(backend, t));
    }
    if let Some(f) = q.from_ms {
        s = s.filter(audit_log::Column::AtMs.gte(f));
    }
    if let Some(u) = q.until_ms {
        s = s.filter(audit_log::Column::AtMs.lt(u));
    }
    s
}

/// Entries per page on `/audit`.
pub const PAGE: u64 = 50;

/// Where a page starts: the newest entries, those older than `before`, or
/// those newer than `after` (keyset pagination on `seq`, so any page is as
/// fast as the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Newest,
    Before(i64),
    After(i64),
}

fn row(m: audit_log::Model) -> AuditRow {
    AuditRow {
        seq: m.seq,
        at_ms: m.at_ms,
        actor: m.actor,
        action: m.action,
        target: m.target,
        addr: m.addr,
        detail: m.detail,
    }
}

/// One page of the filtered trail, newest first.
pub async fn page(
    db: &DatabaseConnection,
    q: &AuditQuery,
    cursor: Cursor,
) -> Result<AuditPage, DbErr> {
    let s = filtered(db.get_database_backend(), q);
    let mut rows = match cursor {
        Cursor::Newest => s.order_by_desc(audit_log::Column::Seq),
        Cursor::Before(b) => s
            .filter(audit_log::Column::Seq.lt(b))
            .order_by_desc(audit_log::Column::Seq),
        Cursor::After(a) => s
            .filter(audit_log::Column::Seq.gt(a))
            .order_by_asc(audit_log::Column::Seq),
    }
    .limit(PAGE + 1)
    .all(db)
    .await?;
    let more = rows.len() as u64 > PAGE;
    rows.truncate(PAGE as usize);
    if let Cursor::After(_) = cursor {
        rows.reverse();
    }
    let (first, last) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq));
    let (newer, older) = match cursor {
        Cursor::Newest => (None, last.filter(|_| more)),
        Cursor::Before(_) => (first, last.filter(|_| more)),
        Cursor::After(_) => (first.filter(|_| more), last),
    };
    Ok(AuditPage {
        rows: rows.into_iter().map(row).collect(),
        newer,
        older,
    })
}

/// The `/audit` page for a filter as typed and a cursor (`before`/`after`
/// a `seq`, 0 for none): a bad filter is the caller's to fix.
pub async fn page_for(
    ctx: &AppContext,
    filter: &AuditFilter,
    before: i64,
    after: i64,
) -> Result<AuditPage, ConsoleError> {
    let q = filter.query().map_err(ConsoleError::bad_request)?;
    let cursor = if before > 0 {
        Cursor::Before(before)
    } else if after > 0 {
        Cursor::After(after)
    } else {
        Cursor::Newest
    };
    Ok(page(&ctx.db, &q, cursor).await?)
}

/// The filtered entries after `after`, oldest first, at most [`BATCH`]: the
/// CSV export reads the trail with this, one batch at a time.
pub async fn batch(
    db: &DatabaseConnection,
    q: &AuditQuery,
    after: i64,
) -> Result<Vec<audit_log::Model>, DbErr> {
    filtered(db.get_database_backend(), q)
        .filter(audit_log::Column::Seq.gt(after))
        .order_by_asc(audit_log::Column::Seq)
        .limit(BATCH)
        .all(db)
        .await
}

/// Records a config apply within its transaction: stores a digest of each
/// config entry, and when the apply made a new generation, an entry naming
/// the entries that changed since the last apply (by any instance).
pub async fn config_applied<C: ConnectionTrait>(
    c: &C,
    config: &Config,
    generation: i64,
    new_generation: bool,
) -> Result<(), DbErr> {
    let new: BTreeMap<String, String> = config_entries(config)
        .into_iter()
        .map(|(k, v)| (k, sha256_hex(v.as_bytes())))
        .collect();
    let stored = audit_config::Entity::find_by_id(HEAD).one(c).await?;
    let old: BTreeMap<String, String> = stored
        .as_ref()
        .and_then(|r| serde_json::from_str(&r.entries).ok())
        .unwrap_or_default();
    if old != new {
        let entries = serde_json::to_string(&new).map_err(|e| DbErr::Custom(e.to_string()))?;
        audit_config::Entity::insert(audit_config::ActiveModel {
            id: Set(HEAD),
            entries: Set(entries),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(audit_config::Column::Id)
                .update_column(audit_config::Column::Entries)
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    if new_generation {
        let detail = reload_detail(generation, &config_diff(&old, &new));
        append_in(
            c,
            Who::config()
                .entry(Action::ConfigReloaded, "config")
                .detail(detail),
        )
        .await?;
    }
    Ok(())
}
