//! Coins in memory, ledger on disk.
//!
//! Each process holds a budget *lease* per pool it serves: coins taken from
//! the pool durably, in a chunk, before any call spends them. A call is
//! admitted by taking its worst-case estimate off the lease in memory, so it
//! goes upstream without waiting for a disk commit; when it ends, the actual
//! cost is charged and the rest goes back to the lease. One writer task per
//! process turns all of this into transactions: it drains the queued ledger
//! rows, returns and top-ups and applies them together (group commit).
//!
//! Why this cannot overspend or lose a charge:
//! - a lease's coins left the pool in a committed transaction before any call
//!   could spend them, and admission never takes more than a lease holds;
//! - a ledger row and the matching decrease of its lease commit together;
//! - if the process dies, its leases stop being renewed and the orphan sweep
//!   charges what they still hold in full: every call admitted on them, and
//!   every row not yet written, is covered (a crash can overcharge by the
//!   unspent part of a chunk, never undercharge);
//! - if rows cannot be written, the gate closes: no call is admitted until a
//!   batch commits again, and the unwritten rows are kept and retried.

use app::domain::lease::wanted;
use app::ssr::entities::pool;
use app::ssr::ledger::{self, Batch, Charge, Return, TopUp, TopUpOutcome};
use app::ssr::{db, now_ms, pools};
use sea_orm::{DatabaseConnection, DbErr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

/// Leases are renewed this often, well inside `ledger::ORPHAN_AFTER_MS`.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A lease with no calls for this long goes back to its pool.
const IDLE_RETURN: Duration = Duration::from_secs(2);
/// How soon a failed batch is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("accounting is unavailable: {0}")]
pub struct AccountingError(pub String);

/// Who made a call, for its ledger row.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub request_id: String,
    pub key_id: Option<i64>,
    pub model: String,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// The cost of what was served.
    pub cost: i64,
    pub outcome: String,
}

#[derive(Debug)]
pub enum Admission {
    Admitted(Ticket),
    /// The pool (with this instance's unspent lease) cannot cover the call.
    Insufficient {
        balance: i64,
    },
    Blocked,
}

/// A call admitted against a lease. Settling consumes it, so a call is
/// settled once. A ticket dropped unsettled (the caller went away while the
/// upstream was still answering) is charged its whole reservation, since
/// nothing better is known; a process that dies is covered by its lease.
pub struct Ticket {
    accountant: Accountant,
    call: CallInfo,
    pool_id: i64,
    lease_id: Option<i64>,
    reserved: i64,
    unlimited: bool,
    settled: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("request_id", &self.call.request_id)
            .field("pool_id", &self.pool_id)
            .field("lease_id", &self.lease_id)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl Ticket {
    /// Charges what the call cost (never more than it reserved plus what the
    /// lease can spare) and queues its ledger row. Returns the coins charged.
    /// Never waits.
    pub fn settle(mut self, o: Outcome) -> i64 {
        self.settled = true;
        self.accountant.settle(&self, o)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            let o = Outcome {
                tokens_in: 0,
                tokens_out: 0,
                cost: self.reserved,
                outcome: "abandoned: the caller left before the reply; charged the reservation"
                    .into(),
            };
            self.accountant.settle(self, o);
        }
    }
}

struct Budget {
    unlimited: bool,
    lease_id: Option<i64>,
    /// Coins on the lease that no running call has taken.
    remaining: i64,
    /// Calls admitted on `lease_id` and not settled yet.
    in_flight: u32,
    /// The pool is nearly empty: the lease covers only running calls.
    exact: bool,
    last_used: Instant,
    /// Held while a top-up is on its way, so a pool's top-ups never overlap.
    topping: Arc<tokio::sync::Mutex<()>>,
}

impl Budget {
    fn new(unlimited: bool) -> Budget {
        Budget {
            unlimited,
            lease_id: None,
            remaining: 0,
            in_flight: 0,
            exact: false,
            last_used: Instant::now(),
            topping: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Gives the unspent part back and forgets the lease; running calls
    /// return their own parts when they settle.
    fn retire(&mut self, pool_id: i64, returns: &mut Vec<Return>) {
        if let Some(lease_id) = self.lease_id.take() {
            returns.push(Return {
                lease_id,
                pool_id,
                amount: self.remaining,
                credit: !self.unlimited,
                close: true,
            });
        }
        self.remaining = 0;
        self.in_flight = 0;
        self.exact = false;
    }

    fn admit(&mut self, amount: i64) -> Option<i64> {
        self.remaining -= amount;
        self.in_flight += 1;
        self.last_used = Instant::now();
        self.lease_id
    }
}

#[derive(Default)]
struct Pending {
    charges: Vec<Charge>,
    returns: Vec<Return>,
    touched: std::collections::BTreeSet<i64>,
}

enum Job {
    TopUp(
        TopUp,
        oneshot::Sender<Result<TopUpOutcome, AccountingError>>,
    ),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

struct Inner {
    db: DatabaseConnection,
    /// This process's name on its leases.
    holder: String,
    budgets: Mutex<HashMap<i64, Budget>>,
    pending: Mutex<Pending>,
    jobs: mpsc::UnboundedSender<Job>,
    wake: Notify,
    healthy: AtomicBool,
    /// Calls whose reported usage cost more than their reservation, and by how much.
    overage_calls: AtomicU64,
    overage_micro: AtomicU64,
}

#[derive(Clone)]
pub struct Accountant {
    inner: Arc<Inner>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in
    // a way that matters more than stopping accounting would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Accountant {
    pub fn start(db: DatabaseConnection) -> Accountant {
        let (jobs, rx) = mpsc::unbounded_channel();
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let holder = format!(
            "{}-{}",
            std::process::id(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let inner = Arc::new(Inner {
            db,
            holder,
            budgets: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            jobs,
            wake: Notify::new(),
            healthy: AtomicBool::new(true),
            overage_calls: AtomicU64::new(0),
            overage_micro: AtomicU64::new(0),
        });
        tokio::spawn(run(inner.clone(), rx));
        Accountant { inner }
    }

    /// Admits a call whose worst case is `amount`, or says why not. Waits for
    /// the database only when this process's lease on the pool runs short.
    pub async fn admit(
        &self,
        pool: &pool::Model,
        amount: i64,
        call: &CallInfo,
    ) -> Result<Admission, AccountingError> {
        let ticket = |lease_id: Option<i64>, reserved: i64| {
            Admission::Admitted(Ticket {
                accountant: self.clone(),
                call: call.clone(),
                pool_id: pool.id,
                lease_id,
                reserved,
                unlimited: pool.unlimited,
                settled: false,
            })
        };
        if !self.inner.healthy.load(Ordering::Acquire) {
            return Err(AccountingError(
                "the ledger could not be written; calls resume once it can".into(),
            ));
        }
        if pools::limit(pool).is_blocked() {
            return Ok(Admission::Blocked);
        }
        if amount <= 0 {
            return Ok(ticket(None, 0));
        }
        let topping = {
            let mut budgets = locked(&self.inner.budgets);
            let b = self.budget(&mut budgets, pool);
            if b.remaining >= amount {
                let lease = b.admit(amount);
                self.refill_early(b, pool, amount);
                return Ok(ticket(lease, amount));
            }
            b.topping.clone()
        };
        let _turn = topping.lock().await;
        for _ in 0..3 {
            let (have, request) = {
                let mut budgets = locked(&self.inner.budgets);
                let b = self.budget(&mut budgets, pool);
                if b.remaining >= amount {
                    return Ok(ticket(b.admit(amount), amount));
                }
                let have = std::mem::take(&mut b.remaining);
                let request = TopUp {
                    pool_id: pool.id,
                    lease_id: b.lease_id,
                    needed: amount - have,
                    per_call: amount,
                    want: wanted(amount, b.in_flight),
                    unlimited: b.unlimited,
                };
                (have, request)
            };
            let outcome = self.top_up(request).await;
            let mut budgets = locked(&self.inner.budgets);
            let b = self.budget(&mut budgets, pool);
            match outcome {
                Err(e) => {
                    b.remaining += have;
                    return Err(e);
                }
                Ok(TopUpOutcome::Granted {
                    lease_id,
                    amount: granted,
                    exact,
                }) => {
                    b.lease_id = Some(lease_id);
                    b.exact = exact;
                    b.remaining += have + granted;
                    return Ok(ticket(b.admit(amount), amount));
                }
                Ok(TopUpOutcome::Insufficient { balance }) => {
                    b.remaining += have;
                    return Ok(Admission::Insufficient {
                        balance: balance + b.remaining,
                    });
                }
                Ok(TopUpOutcome::Blocked) => {
                    b.remaining += have;
                    return Ok(Admission::Blocked);
                }
                Ok(TopUpOutcome::LeaseGone) => {
                    // Swept as orphaned: what it held, `have` included, is
                    // already charged. Start a new lease.
                    b.lease_id = None;
                    b.remaining = 0;
                    b.in_flight = 0;
                }
                Ok(TopUpOutcome::Stale) => {
                    b.remaining = have;
                    let mut returns = Vec::new();
                    b.retire(pool.id, &mut returns);
                    b.unlimited = !b.unlimited;
                    drop(budgets);
                    self.queue(Vec::new(), returns);
                }
                Ok(TopUpOutcome::NoPool) => {
                    b.remaining += have;
                    return Err(AccountingError("the pool no longer exists".into()));
                }
            }
        }
        Err(AccountingError(
            "could not lease coins for this call; retry".into(),
        ))
    }

    fn budget<'a>(
        &self,
        budgets: &'a mut HashMap<i64, Budget>,
        pool: &pool::Model,
    ) -> &'a mut Budget {
        let b = budgets
            .entry(pool.id)
            .or_insert_with(|| Budget::new(pool.unlimited));
        if b.unlimited != pool.unlimited {
            // Switched between limited and unlimited: this lease is the wrong kind.
            let mut returns = Vec::new();
            b.retire(pool.id, &mut returns);
            b.unlimited = pool.unlimited;
            self.queue(Vec::new(), returns);
        }
        b
    }

    /// Tops the lease up in the background before it runs out, so that under
    /// steady load no call waits for a commit.
    fn refill_early(&self, b: &Budget, pool: &pool::Model, amount: i64) {
        let want = wanted(amount, b.in_flight);
        if b.exact || b.lease_id.is_none() || b.remaining >= want / 2 {
            return;
        }
        let Ok(turn) = b.topping.clone().try_lock_owned() else {
            return;
        };
        let request = TopUp {
            pool_id: pool.id,
            lease_id: b.lease_id,
            needed: amount,
            per_call: amount,
            want,
            unlimited: b.unlimited,
        };
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.top_up(request.clone()).await;
            let mut budgets = locked(&me.inner.budgets);
            if let Some(b) = budgets.get_mut(&request.pool_id) {
                match outcome {
                    Ok(TopUpOutcome::Granted {
                        lease_id,
                        amount,
                        exact,
                    }) if b.lease_id == Some(lease_id) => {
                        b.remaining += amount;
                        b.exact = exact;
                    }
                    Ok(TopUpOutcome::LeaseGone) if b.lease_id == request.lease_id => {
                        b.lease_id = None;
                        b.remaining = 0;
                        b.in_flight = 0;
                    }
                    _ => {}
                }
            }
            drop(turn);
        });
    }

    async fn top_up(&self, t: TopUp) -> Result<TopUpOutcome, AccountingError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::TopUp(t, reply))
            .map_err(|_| AccountingError("the accounting writer stopped".into()))?;
        rx.await
            .map_err(|_| AccountingError("the accounting writer stopped".into()))?
    }

    fn settle(&self, t: &Ticket, o: Outcome) -> i64 {
        let call = &t.call;
        let cost = o.cost.max(0);
        let base = cost.min(t.reserved);
        let mut charged = base;
        let mut returns = Vec::new();
        {
            let mut budgets = locked(&self.inner.budgets);
            match (t.lease_id, budgets.get_mut(&t.pool_id)) {
                (Some(lease), Some(b)) if b.lease_id == Some(lease) => {
                    let extra = (cost - t.reserved).clamp(0, b.remaining.max(0));
                    charged += extra;
                    b.remaining += t.reserved - base - extra;
                    b.in_flight = b.in_flight.saturating_sub(1);
                    b.last_used = Instant::now();
                    if b.exact {
                        // A nearly empty pool: give back at once what no call holds.
                        let close = b.in_flight == 0;
                        returns.push(Return {
                            lease_id: lease,
                            pool_id: t.pool_id,
                            amount: std::mem::take(&mut b.remaining),
                            credit: !b.unlimited,
                            close,
                        });
                        if close {
                            b.lease_id = None;
                        }
                    }
                }
                (Some(lease), _) => returns.push(Return {
                    lease_id: lease,
                    pool_id: t.pool_id,
                    amount: t.reserved - base,
                    credit: !t.unlimited,
                    close: true,
                }),
                (None, _) => {}
            }
        }
        let overage = (cost - t.reserved).max(0);
        if overage > 0 {
            // The reservation is meant to be a true upper bound: this is an
            // upstream that did more than it was asked, or a bound to fix.
            self.inner.overage_calls.fetch_add(1, Ordering::Relaxed);
            self.inner
                .overage_micro
                .fetch_add(overage.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
            tracing::warn!(
                request_id = %call.request_id,
                model = %call.model,
                reserved = t.reserved,
                cost,
                "the upstream reported more usage than was reserved; the excess is taken from the pool as far as it goes and recorded as overage"
            );
        }
        let charge = Charge {
            pool_id: t.pool_id,
            lease_id: t.lease_id,
            key_id: call.key_id,
            model: call.model.clone(),
            tokens_in: o.tokens_in,
            tokens_out: o.tokens_out,
            coins: charged,
            cost,
            overage,
            request_id: call.request_id.clone(),
            outcome: o.outcome,
        };
        self.queue(vec![charge], returns);
        charged
    }

    /// Records a call refused before admission: a ledger row with no coins.
    pub fn refuse(&self, pool_id: i64, call: &CallInfo, outcome: &str) {
        let charge = Charge {
            pool_id,
            lease_id: None,
            key_id: call.key_id,
            model: call.model.clone(),
            tokens_in: 0,
            tokens_out: 0,
            coins: 0,
            cost: 0,
            overage: 0,
            request_id: call.request_id.clone(),
            outcome: format!("refused: {outcome}"),
        };
        self.queue(vec![charge], Vec::new());
    }

    fn queue(&self, charges: Vec<Charge>, returns: Vec<Return>) {
        if charges.is_empty() && returns.is_empty() {
            return;
        }
        {
            let mut p = locked(&self.inner.pending);
            p.charges.extend(charges);
            p.returns.extend(returns);
        }
        self.inner.wake.notify_one();
    }

    /// Whether calls are being admitted: false from a failed batch of ledger
    /// rows until one commits.
    pub fn is_open(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// Calls since start whose usage cost more than their reservation, and
    /// the total excess in micro-coins.
    pub fn overage(&self) -> (u64, u64) {
        (
            self.inner.overage_calls.load(Ordering::Relaxed),
            self.inner.overage_micro.load(Ordering::Relaxed),
        )
    }

    /// Ledger rows queued and not committed yet.
    pub fn unwritten_rows(&self) -> usize {
        locked(&self.inner.pending).charges.len()
    }

    /// Records that an API key was used, with the next batch. Best effort:
    /// a batch that fails drops these rather than keeping the gate closed.
    pub fn touch(&self, key_id: i64) {
        if locked(&self.inner.pending).touched.insert(key_id) {
            self.inner.wake.notify_one();
        }
    }

    /// Waits (up to `limit`) until every charge queued so far is committed,
    /// so that a read of the pool that follows sees it.
    pub async fn flush(&self, limit: Duration) {
        let (reply, rx) = oneshot::channel();
        if self.inner.jobs.send(Job::Flush(reply)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// Gives every idle lease back and waits (up to `limit`) until everything
    /// queued is committed. For a clean shutdown; a crash is covered anyway.
    pub async fn close(&self, limit: Duration) {
        let mut returns = Vec::new();
        {
            let mut budgets = locked(&self.inner.budgets);
            for (pool_id, b) in budgets.iter_mut() {
                if b.in_flight == 0 {
                    b.retire(*pool_id, &mut returns);
                }
            }
        }
        self.queue(Vec::new(), returns);
        self.flush(limit).await;
    }
}

impl Inner {
    /// Returns leases that have had no calls for a while.
    fn return_idle(&self) {
        let mut returns = Vec::new();
        {
            let mut budgets = locked(&self.budgets);
            budgets.retain(|pool_id, b| {
                let idle = b.in_flight == 0
                    && b.last_used.elapsed() >= IDLE_RETURN
                    && b.topping.try_lock().is_ok();
                if idle {
                    b.retire(*pool_id, &mut returns);
                }
                !idle
            });
        }
        if !returns.is_empty() {
            locked(&self.pending).returns.extend(returns);
        }
    }
}

async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut last_renew = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut retrying = false;
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        if retrying {
            tokio::time::sleep(RETRY_AFTER).await;
        } else if jobs.is_empty() {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => jobs.push(j),
                    None => return,
                },
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        if last_idle_check.elapsed() >= Duration::from_secs(1) {
            last_idle_check = Instant::now();
            inner.return_idle();
        }
        let renew = last_renew.elapsed() >= RENEW_EVERY;
        let (charges, returns, touched) = {
            let mut p = locked(&inner.pending);
            (
                std::mem::take(&mut p.charges),
                std::mem::take(&mut p.returns),
                std::mem::take(&mut p.touched),
            )
        };
        let writes = !charges.is_empty() || !returns.is_empty();
        let mut batch = Batch {
            top_ups: Vec::new(),
            charges,
            returns,
            renew,
            touched: touched.into_iter().collect(),
        };
        for j in &jobs {
            if let Job::TopUp(t, _) = j {
                batch.top_ups.push(t.clone());
            }
        }
        let result = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            apply(&inner.db, &inner.holder, &batch).await
        };
        match result {
            Ok(outcomes) => {
                if writes {
                    inner.healthy.store(true, Ordering::Release);
                }
                if renew {
                    last_renew = Instant::now();
                }
                retrying = false;
                let mut outcomes = outcomes.into_iter();
                for j in jobs.drain(..) {
                    match j {
                        Job::TopUp(_, reply) => {
                            let o = outcomes
                                .next()
                                .ok_or_else(|| AccountingError("a top-up got no outcome".into()));
                            let _ = reply.send(o);
                        }
                        Job::Flush(reply) => {
                            let _ = reply.send(());
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(
                    "accounting batch failed ({} ledger rows kept for retry): {e}",
                    batch.charges.len()
                );
                // Keep the rows and returns, oldest first; refuse the top-ups.
                {
                    let mut p = locked(&inner.pending);
                    batch.charges.append(&mut p.charges);
                    batch.returns.append(&mut p.returns);
                    p.charges = batch.charges;
                    p.returns = batch.returns;
                }
                if writes {
                    inner.healthy.store(false, Ordering::Release);
                    retrying = true;
                }
                let mut kept = Vec::new();
                for j in jobs.drain(..) {
                    match j {
                        Job::TopUp(_, reply) => {
                            let _ = reply.send(Err(AccountingError(e.to_string())));
                        }
                        flush @ Job::Flush(_) => kept.push(flush),
                    }
                }
                jobs = kept;
            }
        }
    }
}

async fn apply(
    db: &DatabaseConnection,
    holder: &str,
    batch: &Batch,
) -> Result<Vec<TopUpOutcome>, DbErr> {
    let txn = db::begin_write(db).await?;
    let outcomes = ledger::apply_batch(&txn, holder, batch, now_ms()).await?;
    txn.commit().await?;
    Ok(outcomes)
}
