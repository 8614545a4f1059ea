//! Accounting storage: budget leases and the ledger.
//!
//! An instance takes a *lease* on a pool: a chunk of coins debited from the
//! pool durably (one conditional statement under the pool's row lock) and
//! recorded in `leases`. It then admits calls against the lease in memory
//! and writes their ledger rows behind them, in batches. Every batch keeps,
//! per pool and in one transaction,
//!
//! `balance + Σ lease.amount + Σ ledger.coins` unchanged (refill aside):
//!
//! - a top-up moves coins from the pool to a lease;
//! - a charge moves coins from a lease to a ledger row;
//! - a return moves coins from a lease back to the pool.
//!
//! A lease that is no longer renewed belongs to a process that died; it is
//! charged in full ([`sweep_orphans`]), so a crash can overcharge by what the
//! lease still held but can never overspend a pool or lose a charge. Rows
//! that a stalled holder writes later for a lease that was swept carry no
//! coins, because the sweep already charged them.

use super::entities::{api_key, lease, ledger, pool};
use super::pools;
use crate::domain::lease::{grant, Grant};
use crate::domain::outcome::CallOutcome;
use crate::domain::pool::{refilled, PoolState};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Request ids of rows the gateway writes itself (an orphaned lease charged
/// in full) start with this; callers' ids never do.
pub const SYSTEM_ROW_PREFIX: &str = "lease-";

/// A lease not renewed for this long belongs to a process that died. Live
/// holders renew every few seconds.
pub const ORPHAN_AFTER_MS: i64 = 60_000;

/// A request for more coins on a pool's lease.
#[derive(Debug, Clone)]
pub struct TopUp {
    pub pool_id: i64,
    /// The lease to add to; `None` opens a new one.
    pub lease_id: Option<i64>,
    /// What the waiting call still lacks.
    pub needed: i64,
    /// The waiting call's whole estimate.
    pub per_call: i64,
    /// The chunk the instance would like.
    pub want: i64,
    /// Whether the instance believes the pool is unlimited.
    pub unlimited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpOutcome {
    Granted {
        lease_id: i64,
        amount: i64,
        exact: bool,
    },
    Insufficient {
        balance: i64,
    },
    Blocked,
    /// The lease was swept as orphaned; what it held is already charged.
    LeaseGone,
    /// The pool switched between limited and unlimited since the lease was
    /// opened: return the lease and open another.
    Stale,
    NoPool,
}

/// One ledger row: a served call, or a refused one with no coins.
#[derive(Debug, Clone)]
pub struct Charge {
    pub pool_id: i64,
    /// The lease the call was admitted on; `None` for free or refused calls.
    pub lease_id: Option<i64>,
    pub key_id: Option<i64>,
    pub model: String,
    pub usage: crate::domain::usage::Usage,
    /// The cost, line by line.
    pub lines: crate::domain::pricing::Breakdown,
    /// Coins taken off the lease.
    pub coins: i64,
    /// The true cost; more than `coins` only when the upstream reported more
    /// usage than was reserved and the lease could not cover it all.
    pub cost: i64,
    /// How far the true cost exceeded the reservation.
    pub overage: i64,
    pub request_id: String,
    /// The deployment that served the call (empty if none did).
    pub deployment: String,
    pub code: CallOutcome,
    /// The ledger's `outcome` column: more about how the call ended.
    pub detail: String,
}

impl Charge {
    /// What the lease did not cover; taken from the pool's balance as far as
    /// it goes, never below zero.
    fn uncovered(&self) -> i64 {
        (self.cost - self.coins).max(0)
    }
}

/// Coins a lease gives back to its pool (credited only to a limited pool).
#[derive(Debug, Clone)]
pub struct Return {
    pub lease_id: i64,
    pub pool_id: i64,
    pub amount: i64,
    pub credit: bool,
    /// The holder is done with the lease: delete it once it holds nothing.
    pub close: bool,
}

/// What one accounting transaction applies.
#[derive(Debug, Default)]
pub struct Batch {
    pub top_ups: Vec<TopUp>,
    pub charges: Vec<Charge>,
    pub returns: Vec<Return>,
    /// Renew every lease of this holder.
    pub renew: bool,
    /// API keys to mark as used now.
    pub touched: Vec<i64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.top_ups.is_empty()
            && self.charges.is_empty()
            && self.returns.is_empty()
            && self.touched.is_empty()
            && !self.renew
    }
}

/// `a; b`, or just `b` when there is no `a`.
fn join_detail(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}; {b}")
    }
}

/// A token count as a column value.
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ledger_row(c: &Charge, coins: i64, detail: String, now: i64) -> ledger::ActiveModel {
    let (u, l) = (&c.usage, &c.lines);
    ledger::ActiveModel {
        code: Set(c.code.code().to_string()),
        cost_micro: Set(c.cost),
        overage_micro: Set(c.overage),
        pool_id: Set(c.pool_id),
        key_id: Set(c.key_id),
        model: Set(c.model.clone()),
        tokens_in: Set(tokens(u.input_total())),
        tokens_out: Set(tokens(u.output)),
        cached_in: Set(tokens(u.cached_input)),
        cache_write_in: Set(tokens(u.cache_write)),
        reasoning_out: Set(tokens(u.reasoning)),
        input_micro: Set(l.input),
        cached_input_micro: Set(l.cached_input),
        cache_write_micro: Set(l.cache_write),
        output_micro: Set(l.output),
        request_micro: Set(l.request),
        coins_micro: Set(coins),
        created_at: Set(now),
        request_id: Set(c.request_id.clone()),
        deployment: Set(c.deployment.clone()),
        outcome: Set(detail),
        ..Default::default()
    }
}

fn lock<Q: QuerySelect>(q: Q, backend: DbBackend) -> Q {
    if backend == DbBackend::Postgres {
        q.lock_exclusive()
    } else {
        q
    }
}

/// Applies a batch in the caller's transaction (which must hold the write
/// lock: see `db::begin_write`). Returns one outcome per top-up, in order.
///
/// Row locks are taken in one order, the holder's own leases first and then
/// pools by id, so two instances sharing PostgreSQL cannot deadlock.
pub async fn apply_batch<C: ConnectionTrait>(
    c: &C,
    holder: &str,
    batch: &Batch,
    now: i64,
) -> Result<Vec<TopUpOutcome>, DbErr> {
    let alive = take_from_leases(c, holder, batch, now).await?;
    let mut settled = settle_pools(c, batch, &alive, now).await?;
    insert_rows(c, batch, &alive, &settled.from_pool, now).await?;
    grant_leases(c, holder, batch, &mut settled, now).await?;
    close_leases(c, batch, &alive).await?;
    touch_keys(c, &batch.touched, now).await?;
    if batch.renew {
        lease::Entity::update_many()
            .col_expr(lease::Column::RenewedAt, Expr::value(now))
            .filter(lease::Column::Holder.eq(holder))
            .exec(c)
            .await?;
    }
    settled
        .outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| DbErr::Custom("a top-up got no outcome".into())))
        .collect()
}

/// Step 1, own leases: takes what was charged or returned off each, and
/// locks the leases top-ups ask to add to. Returns the holder's leases that
/// still exist (not swept), each with whether it is unlimited (for a lease
/// only charged or returned to, `false`: only top-ups read it).
async fn take_from_leases<C: ConnectionTrait>(
    c: &C,
    holder: &str,
    batch: &Batch,
    now: i64,
) -> Result<HashMap<i64, bool>, DbErr> {
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    for ch in &batch.charges {
        if let Some(id) = ch.lease_id {
            *taken.entry(id).or_default() += ch.coins;
        }
    }
    for r in &batch.returns {
        *taken.entry(r.lease_id).or_default() += r.amount;
    }
    let mut alive: HashMap<i64, bool> = HashMap::new();
    for (&id, &amount) in &taken {
        let res = lease::Entity::update_many()
            .col_expr(
                lease::Column::AmountMicro,
                Expr::col(lease::Column::AmountMicro).sub(amount),
            )
            .col_expr(lease::Column::RenewedAt, Expr::value(now))
            .filter(lease::Column::Id.eq(id))
            .filter(lease::Column::Holder.eq(holder))
            .exec(c)
            .await?;
        if res.rows_affected == 1 {
            alive.insert(id, false);
        }
    }
    let asked: BTreeSet<i64> = batch.top_ups.iter().filter_map(|t| t.lease_id).collect();
    if !asked.is_empty() {
        let q = lease::Entity::find()
            .select_only()
            .columns([lease::Column::Id, lease::Column::Unlimited])
            .filter(lease::Column::Id.is_in(asked))
            .filter(lease::Column::Holder.eq(holder));
        let backend = c.get_database_backend();
        for (id, unlimited) in lock(q, backend).into_tuple::<(i64, bool)>().all(c).await? {
            alive.insert(id, unlimited);
        }
    }
    Ok(alive)
}

/// What step 2 has to do on one pool.
#[derive(Default)]
struct PoolWork {
    /// Coins returned by live leases, to credit.
    credit: i64,
    /// Indexes of the top-ups on this pool.
    asks: Vec<usize>,
    /// Indexes of the charges their lease did not cover.
    shortfalls: Vec<usize>,
}

/// Groups the batch's work by pool, in id order.
fn pool_work(batch: &Batch, alive: &HashMap<i64, bool>) -> BTreeMap<i64, PoolWork> {
    let mut work: BTreeMap<i64, PoolWork> = BTreeMap::new();
    for (i, ch) in batch.charges.iter().enumerate() {
        if ch.uncovered() > 0 {
            work.entry(ch.pool_id).or_default().shortfalls.push(i);
        }
    }
    for r in &batch.returns {
        if r.credit && r.amount > 0 && alive.contains_key(&r.lease_id) {
            work.entry(r.pool_id).or_default().credit += r.amount;
        }
    }
    for (i, t) in batch.top_ups.iter().enumerate() {
        work.entry(t.pool_id).or_default().asks.push(i);
    }
    work
}

/// What step 2 decided.
struct Settlement {
    /// Per charge: what the pool paid beyond what its lease covered.
    from_pool: Vec<i64>,
    /// Per top-up; a grant's lease id is filled in by step 4.
    outcomes: Vec<Option<TopUpOutcome>>,
    /// Top-up index and amount of each grant.
    grants: Vec<(usize, i64)>,
}

/// Step 2, pools in id order: credits from returns, then what leases could
/// not cover of calls already served, then top-ups.
async fn settle_pools<C: ConnectionTrait>(
    c: &C,
    batch: &Batch,
    alive: &HashMap<i64, bool>,
    now: i64,
) -> Result<Settlement, DbErr> {
    let backend = c.get_database_backend();
    let mut s = Settlement {
        from_pool: vec![0; batch.charges.len()],
        outcomes: vec![None; batch.top_ups.len()],
        grants: Vec::new(),
    };
    for (pool_id, work) in pool_work(batch, alive) {
        if work.asks.is_empty() && work.shortfalls.is_empty() {
            pools::credit(c, pool_id, work.credit).await?;
            continue;
        }
        let q = pool::Entity::find().filter(pool::Column::Id.eq(pool_id));
        let Some(p) = lock(q, backend).one(c).await? else {
            for &i in &work.asks {
                s.outcomes[i] = Some(TopUpOutcome::NoPool);
            }
            continue;
        };
        let mut st = credited(&p, work.credit, now);
        s.cover_shortfalls(&p, &mut st, &work.shortfalls, &batch.charges);
        s.decide_top_ups(&p, &mut st, &work.asks, &batch.top_ups, alive);
        pool::Entity::update_many()
            .col_expr(pool::Column::BalanceMicro, Expr::value(st.balance))
            .col_expr(pool::Column::HeldMicro, Expr::value(st.held))
            .col_expr(pool::Column::RefilledAt, Expr::value(st.refilled_at))
            .filter(pool::Column::Id.eq(pool_id))
            .exec(c)
            .await?;
    }
    Ok(s)
}

/// The pool's state refilled to `now` with `credit` returned to it.
fn credited(p: &pool::Model, credit: i64, now: i64) -> PoolState {
    let mut st = refilled(&pools::state(p), now);
    if !p.unlimited {
        // Above a max lowered while the lease was out: held, not lost.
        let sum = st.balance + credit;
        st.balance = sum.min(p.max_micro.max(st.balance));
        st.held += sum - st.balance;
    }
    st
}

impl Settlement {
    /// Takes what leases did not cover from the pool, as far as it goes.
    fn cover_shortfalls(
        &mut self,
        p: &pool::Model,
        st: &mut PoolState,
        shortfalls: &[usize],
        charges: &[Charge],
    ) {
        for &i in shortfalls {
            let want = charges[i].uncovered();
            let take = if p.unlimited {
                want
            } else {
                want.min(st.balance.max(0))
            };
            if !p.unlimited {
                st.balance -= take;
            }
            self.from_pool[i] = take;
        }
    }

    /// Grants or refuses each top-up on the pool, in order.
    fn decide_top_ups(
        &mut self,
        p: &pool::Model,
        st: &mut PoolState,
        asks: &[usize],
        top_ups: &[TopUp],
        alive: &HashMap<i64, bool>,
    ) {
        let limit = pools::limit(p);
        for &i in asks {
            let t = &top_ups[i];
            if let Some(refused) = lease_mismatch(t, p.unlimited, alive) {
                self.outcomes[i] = Some(refused);
                continue;
            }
            self.outcomes[i] = Some(
                match grant(limit, st.balance, t.needed, t.per_call, t.want) {
                    Grant::Blocked => TopUpOutcome::Blocked,
                    Grant::Insufficient { available } => {
                        TopUpOutcome::Insufficient { balance: available }
                    }
                    Grant::Take { amount, exact } => {
                        if !p.unlimited {
                            st.balance -= amount;
                        }
                        self.grants.push((i, amount));
                        TopUpOutcome::Granted {
                            lease_id: 0,
                            amount,
                            exact,
                        }
                    }
                },
            );
        }
    }
}

/// Why a top-up cannot go on the lease it names (or on a new one): the lease
/// was swept, or it is of the other kind (limited/unlimited) than the pool.
fn lease_mismatch(
    t: &TopUp,
    pool_unlimited: bool,
    alive: &HashMap<i64, bool>,
) -> Option<TopUpOutcome> {
    match t.lease_id {
        Some(id) => match alive.get(&id) {
            None => Some(TopUpOutcome::LeaseGone),
            Some(&u) if u != pool_unlimited => Some(TopUpOutcome::Stale),
            Some(_) => None,
        },
        None if t.unlimited != pool_unlimited => Some(TopUpOutcome::Stale),
        None => None,
    }
}

/// Step 3, ledger rows and their daily roll-up. A lease swept meanwhile was
/// charged in full already; what a lease could not cover was taken from the
/// pool in step 2.
async fn insert_rows<C: ConnectionTrait>(
    c: &C,
    batch: &Batch,
    alive: &HashMap<i64, bool>,
    from_pool: &[i64],
    now: i64,
) -> Result<(), DbErr> {
    let rows: Vec<ledger::ActiveModel> = batch
        .charges
        .iter()
        .zip(from_pool)
        .map(|(ch, &extra)| match ch.lease_id {
            Some(id) if ch.coins > 0 && !alive.contains_key(&id) => ledger_row(
                ch,
                extra,
                join_detail(&ch.detail, "already charged with its orphaned lease"),
                now,
            ),
            _ => ledger_row(ch, ch.coins + extra, ch.detail.clone(), now),
        })
        .collect();
    let mut tally = super::rollup::Tally::default();
    rows.iter().for_each(|r| tally.add(r));
    tally.write(c).await?;
    // Each connection caches every distinct statement it prepares, and a
    // multi-row INSERT's text depends on its row count. So rows go in
    // power-of-two groups of at most 256: a handful of distinct statements in
    // all, whatever the batch sizes (and well under SQLite's parameter limit).
    let mut left = rows.len();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let group = 1usize << left.min(256).ilog2();
        ledger::Entity::insert_many(rows.by_ref().take(group))
            .exec_without_returning(c)
            .await?;
        left -= group;
    }
    Ok(())
}

/// Step 4: puts what was granted on the leases, opening one new lease per
/// pool at most, and fills each grant's lease id in.
async fn grant_leases<C: ConnectionTrait>(
    c: &C,
    holder: &str,
    batch: &Batch,
    s: &mut Settlement,
    now: i64,
) -> Result<(), DbErr> {
    let mut opened: HashMap<i64, i64> = HashMap::new(); // pool id -> new lease id
    let mut added: BTreeMap<i64, i64> = BTreeMap::new();
    for &(i, amount) in &s.grants {
        let t = &batch.top_ups[i];
        let id = match t.lease_id.or_else(|| opened.get(&t.pool_id).copied()) {
            Some(id) => {
                *added.entry(id).or_default() += amount;
                id
            }
            None => {
                let id = open_lease(c, holder, t, amount, now).await?;
                opened.insert(t.pool_id, id);
                id
            }
        };
        if let Some(TopUpOutcome::Granted { lease_id, .. }) = s.outcomes[i].as_mut() {
            *lease_id = id;
        }
    }
    for (id, amount) in added {
        lease::Entity::update_many()
            .col_expr(
                lease::Column::AmountMicro,
                Expr::col(lease::Column::AmountMicro).add(amount),
            )
            .col_expr(lease::Column::RenewedAt, Expr::value(now))
            .filter(lease::Column::Id.eq(id))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Opens a lease holding `amount` for a top-up; returns its id.
async fn open_lease<C: ConnectionTrait>(
    c: &C,
    holder: &str,
    t: &TopUp,
    amount: i64,
    now: i64,
) -> Result<i64, DbErr> {
    let res = lease::Entity::insert(lease::ActiveModel {
        pool_id: Set(t.pool_id),
        holder: Set(holder.to_string()),
        unlimited: Set(t.unlimited),
        amount_micro: Set(amount),
        created_at: Set(now),
        renewed_at: Set(now),
        ..Default::default()
    })
    .exec(c)
    .await?;
    Ok(res.last_insert_id)
}

/// Step 5: deletes the leases the holder is done with, once they hold nothing.
async fn close_leases<C: ConnectionTrait>(
    c: &C,
    batch: &Batch,
    alive: &HashMap<i64, bool>,
) -> Result<(), DbErr> {
    let closing: BTreeSet<i64> = batch
        .returns
        .iter()
        .filter(|r| r.close && alive.contains_key(&r.lease_id))
        .map(|r| r.lease_id)
        .collect();
    for id in closing {
        lease::Entity::delete_many()
            .filter(lease::Column::Id.eq(id))
            .filter(lease::Column::AmountMicro.eq(0))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Marks API keys as used at `now`.
async fn touch_keys<C: ConnectionTrait>(c: &C, keys: &[i64], now: i64) -> Result<(), DbErr> {
    for &id in keys {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(Some(now)))
            .filter(api_key::Column::Id.eq(id))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Charges leases that have not been renewed for [`ORPHAN_AFTER_MS`]: their
/// holder died, and whatever they still hold may have been spent. Each lease
/// is claimed (locked on PostgreSQL) and deleted in its own transaction, so
/// it is charged exactly once even with several instances sweeping. Returns
/// how many leases were charged.
pub async fn sweep_orphans(db: &sea_orm::DatabaseConnection, now: i64) -> Result<usize, DbErr> {
    let cutoff = now - ORPHAN_AFTER_MS;
    let stale: Vec<i64> = lease::Entity::find()
        .select_only()
        .column(lease::Column::Id)
        .filter(lease::Column::RenewedAt.lt(cutoff))
        .into_tuple::<i64>()
        .all(db)
        .await?;
    let mut charged = 0;
    for id in stale {
        let txn = super::db::begin_write(db).await?;
        let q = lease::Entity::find()
            .filter(lease::Column::Id.eq(id))
            .filter(lease::Column::RenewedAt.lt(cutoff));
        let Some(l) = lock(q, db.get_database_backend()).one(&txn).await? else {
            txn.rollback().await?;
            continue;
        };
        let gone = lease::Entity::delete_many()
            .filter(lease::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if gone.rows_affected == 1 && l.amount_micro > 0 {
            let row = orphan_row(&l, now);
            let mut tally = super::rollup::Tally::default();
            tally.add(&row);
            ledger::Entity::insert(row)
                .exec_without_returning(&txn)
                .await?;
            tally.write(&txn).await?;
            charged += 1;
        }
        txn.commit().await?;
    }
    Ok(charged)
}

/// The row that charges an orphaned lease in full: no call, so no usage and
/// no price lines, only the coins it held.
fn orphan_row(l: &lease::Model, now: i64) -> ledger::ActiveModel {
    ledger::ActiveModel {
        pool_id: Set(l.pool_id),
        key_id: Set(None),
        model: Set(String::new()),
        tokens_in: Set(0),
        tokens_out: Set(0),
        cached_in: Set(0),
        cache_write_in: Set(0),
        reasoning_out: Set(0),
        input_micro: Set(0),
        cached_input_micro: Set(0),
        cache_write_micro: Set(0),
        output_micro: Set(0),
        request_micro: Set(0),
        coins_micro: Set(l.amount_micro),
        cost_micro: Set(l.amount_micro),
        overage_micro: Set(0),
        created_at: Set(now),
        request_id: Set(format!("{SYSTEM_ROW_PREFIX}{}", l.id)),
        code: Set(CallOutcome::OrphanedLease.code().to_string()),
        outcome: Set("its holder stopped, so what it held is charged in full".into()),
        ..Default::default()
    }
}
