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

use super::limiter::Permit;
use crate::metrics::Metrics;
use app::domain::lease::wanted;
use app::domain::outcome::CallOutcome;
use app::domain::pricing::{Breakdown, Price};
use app::domain::usage::Usage;
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
    /// The deployment that served it, once one has.
    pub deployment: String,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub usage: Usage,
    /// The cost, line by line; `cost` is their total, except when the
    /// caller left before the reply and the reservation is charged.
    pub lines: Breakdown,
    /// The cost of what was served.
    pub cost: i64,
    pub code: CallOutcome,
    /// More about it, for the ledger's `outcome` column (often empty).
    pub detail: String,
}

impl Outcome {
    /// A served call, charged at `price` for `usage`.
    pub fn priced(price: &Price, usage: Usage, code: CallOutcome) -> Outcome {
        let lines = price.charge(&usage);
        Outcome {
            usage,
            lines,
            cost: lines.total(),
            code,
            detail: String::new(),
        }
    }
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
    /// The call's rate-limit permit: its unused tokens go back when it settles.
    rate: Option<Permit>,
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
    /// Names the deployment that serves the call, for its ledger row.
    pub fn served_by(&mut self, deployment: &str) {
        self.call.deployment = deployment.to_string();
    }

    /// Carries the call's rate-limit permit until the call ends.
    pub fn with_rate(mut self, permit: Permit) -> Ticket {
        self.rate = Some(permit);
        self
    }

    /// Charges what the call cost (never more than it reserved plus what the
    /// lease can spare) and queues its ledger row. Returns the coins charged.
    /// Never waits.
    pub fn settle(mut self, o: Outcome) -> i64 {
        self.settled = true;
        if let Some(p) = self.rate.take() {
            let u = &o.usage;
            p.settle(u.input + u.cached_input + u.cache_write + u.output);
        }
        self.accountant.settle(&self, o)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(p) = self.rate.take() {
            p.settle_in_full();
        }
        if !self.settled {
            let o = Outcome {
                usage: Usage::default(),
                lines: Breakdown::default(),
                cost: self.reserved,
                code: CallOutcome::Abandoned,
                detail: "the caller left before the reply; charged the reservation".into(),
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
    /// When the oldest charge not yet committed was queued (an upper bound
    /// while a batch is being written), for the writer-lag metric.
    oldest: Option<Instant>,
}

/// This instance's leases, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseStats {
    pub leases: usize,
    pub in_flight: u32,
    pub unspent_micro: i64,
}

/// Whether a lease covers a call once its top-up turn comes.
enum LeaseCheck {
    Covered {
        lease_id: Option<i64>,
    },
    /// The lease held only `have`, taken for the call; `request` asks for the rest.
    Short {
        have: i64,
        request: TopUp,
    },
}

/// What a call waiting on a top-up does next.
enum AfterTopUp {
    Admitted {
        lease_id: Option<i64>,
    },
    Refused(Admission),
    /// The lease was swept or of the wrong kind: ask again on a new one.
    Retry,
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
    metrics: Arc<Metrics>,
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
    pub fn start(db: DatabaseConnection, metrics: Arc<Metrics>) -> Accountant {
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
            metrics,
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
        if !self.inner.healthy.load(Ordering::Acquire) {
            return Err(AccountingError(
                "the ledger could not be written; calls resume once it can".into(),
            ));
        }
        if pools::limit(pool).is_blocked() {
            return Ok(Admission::Blocked);
        }
        if amount <= 0 {
            return Ok(self.ticket(pool, call, None, 0));
        }
        let topping = {
            let mut budgets = locked(&self.inner.budgets);
            let b = self.budget(&mut budgets, pool);
            if b.remaining >= amount {
                let lease = b.admit(amount);
                self.refill_early(b, pool, amount);
                return Ok(self.ticket(pool, call, lease, amount));
            }
            b.topping.clone()
        };
        let _turn = topping.lock().await;
        for _ in 0..3 {
            let (have, request) = match self.admit_or_ask(pool, amount) {
                LeaseCheck::Covered { lease_id } => {
                    return Ok(self.ticket(pool, call, lease_id, amount))
                }
                LeaseCheck::Short { have, request } => (have, request),
            };
            let outcome = self.top_up(request).await;
            match self.after_top_up(pool, amount, have, outcome)? {
                AfterTopUp::Admitted { lease_id } => {
                    return Ok(self.ticket(pool, call, lease_id, amount))
                }
                AfterTopUp::Refused(refused) => return Ok(refused),
                AfterTopUp::Retry => {}
            }
        }
        Err(AccountingError(
            "could not lease coins for this call; retry".into(),
        ))
    }

    fn ticket(
        &self,
        pool: &pool::Model,
        call: &CallInfo,
        lease_id: Option<i64>,
        reserved: i64,
    ) -> Admission {
        Admission::Admitted(Ticket {
            accountant: self.clone(),
            call: call.clone(),
            pool_id: pool.id,
            lease_id,
            reserved,
            unlimited: pool.unlimited,
            settled: false,
            rate: None,
        })
    }

    /// Admits the call on the lease if it covers it now (another call's
    /// top-up may have landed); otherwise takes what the lease holds and
    /// says what to ask for.
    fn admit_or_ask(&self, pool: &pool::Model, amount: i64) -> LeaseCheck {
        let mut budgets = locked(&self.inner.budgets);
        let b = self.budget(&mut budgets, pool);
        if b.remaining >= amount {
            return LeaseCheck::Covered {
                lease_id: b.admit(amount),
            };
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
        LeaseCheck::Short { have, request }
    }

    /// Applies a top-up's outcome to the budget, `have` (what the lease held
    /// before) included, and admits the call if it was granted.
    fn after_top_up(
        &self,
        pool: &pool::Model,
        amount: i64,
        have: i64,
        outcome: Result<TopUpOutcome, AccountingError>,
    ) -> Result<AfterTopUp, AccountingError> {
        let mut budgets = locked(&self.inner.budgets);
        let b = self.budget(&mut budgets, pool);
        match outcome {
            Err(e) => {
                b.remaining += have;
                Err(e)
            }
            Ok(TopUpOutcome::Granted {
                lease_id,
                amount: granted,
                exact,
            }) => {
                b.lease_id = Some(lease_id);
                b.exact = exact;
                b.remaining += have + granted;
                Ok(AfterTopUp::Admitted {
                    lease_id: b.admit(amount),
                })
            }
            Ok(TopUpOutcome::Insufficient { balance }) => {
                b.remaining += have;
                Ok(AfterTopUp::Refused(Admission::Insufficient {
                    balance: balance + b.remaining,
                }))
            }
            Ok(TopUpOutcome::Blocked) => {
                b.remaining += have;
                Ok(AfterTopUp::Refused(Admission::Blocked))
            }
            Ok(TopUpOutcome::LeaseGone) => {
                // Swept as orphaned: what it held, `have` included, is
                // already charged. Start a new lease.
                b.lease_id = None;
                b.remaining = 0;
                b.in_flight = 0;
                Ok(AfterTopUp::Retry)
            }
            Ok(TopUpOutcome::Stale) => {
                b.remaining = have;
                let mut returns = Vec::new();
                b.retire(pool.id, &mut returns);
                b.unlimited = !b.unlimited;
                drop(budgets);
                self.queue(Vec::new(), returns);
                Ok(AfterTopUp::Retry)
            }
            Ok(TopUpOutcome::NoPool) => {
                b.remaining += have;
                Err(AccountingError("the pool no longer exists".into()))
            }
        }
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
        let (extra, returns) = self.release(t, cost, base);
        let overage = (cost - t.reserved).max(0);
        if overage > 0 {
            self.record_overage(call, t.reserved, cost, overage);
        }
        let charged = base + extra;
        self.inner
            .metrics
            .ledger_row(&call.model, o.code, &o.usage, charged);
        let charge = Charge {
            pool_id: t.pool_id,
            lease_id: t.lease_id,
            key_id: call.key_id,
            model: call.model.clone(),
            usage: o.usage,
            lines: o.lines,
            coins: charged,
            cost,
            overage,
            request_id: call.request_id.clone(),
            deployment: call.deployment.clone(),
            code: o.code,
            detail: o.detail,
        };
        self.queue(vec![charge], returns);
        charged
    }

    /// Ends a settled call's hold on its lease: what it reserved beyond
    /// `base` goes back, less what the lease can spare of a `cost` above the
    /// reservation. Returns that extra charge and the returns to queue.
    fn release(&self, t: &Ticket, cost: i64, base: i64) -> (i64, Vec<Return>) {
        let mut extra = 0;
        let mut returns = Vec::new();
        let mut budgets = locked(&self.inner.budgets);
        match (t.lease_id, budgets.get_mut(&t.pool_id)) {
            (Some(lease), Some(b)) if b.lease_id == Some(lease) => {
                extra = (cost - t.reserved).clamp(0, b.remaining.max(0));
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
        (extra, returns)
    }

    /// The reservation is meant to be a true upper bound: usage above it is
    /// an upstream that did more than it was asked, or a bound to fix.
    fn record_overage(&self, call: &CallInfo, reserved: i64, cost: i64, overage: i64) {
        self.inner.overage_calls.fetch_add(1, Ordering::Relaxed);
        self.inner
            .overage_micro
            .fetch_add(overage.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::warn!(
            request_id = %call.request_id,
            model = %call.model,
            reserved,
            cost,
            "the upstream reported more usage than was reserved; the excess is taken from the pool as far as it goes and recorded as overage"
        );
    }

    /// Records a call refused before admission: a ledger row with no coins,
    /// code `refused`, and the API error code as its detail.
    pub fn refuse(&self, pool_id: i64, call: &CallInfo, error_code: &str) {
        self.inner
            .metrics
            .ledger_row(&call.model, CallOutcome::Refused, &Usage::default(), 0);
        let charge = Charge {
            pool_id,
            lease_id: None,
            key_id: call.key_id,
            model: call.model.clone(),
            usage: Usage::default(),
            lines: Breakdown::default(),
            coins: 0,
            cost: 0,
            overage: 0,
            request_id: call.request_id.clone(),
            deployment: String::new(),
            code: CallOutcome::Refused,
            detail: error_code.to_string(),
        };
        self.queue(vec![charge], Vec::new());
    }

    fn queue(&self, charges: Vec<Charge>, returns: Vec<Return>) {
        if charges.is_empty() && returns.is_empty() {
            return;
        }
        {
            let mut p = locked(&self.inner.pending);
            if !charges.is_empty() && p.oldest.is_none() {
                p.oldest = Some(Instant::now());
            }
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

    /// How long the oldest ledger row not yet committed has waited.
    pub fn writer_lag(&self) -> Duration {
        locked(&self.inner.pending)
            .oldest
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The leases this instance holds, the calls running on them and the
    /// coins on them no call has taken.
    pub fn lease_stats(&self) -> LeaseStats {
        let budgets = locked(&self.inner.budgets);
        budgets
            .values()
            .filter(|b| b.lease_id.is_some())
            .fold(LeaseStats::default(), |s, b| LeaseStats {
                leases: s.leases + 1,
                in_flight: s.in_flight + b.in_flight,
                unspent_micro: s.unspent_micro + b.remaining.max(0),
            })
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
    /// The rows taken at `taken_at` are committed: what is still queued
    /// was queued after that.
    fn committed_rows(&self, taken_at: Instant) {
        let mut p = locked(&self.pending);
        p.oldest = (!p.charges.is_empty()).then_some(taken_at);
    }

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

/// The writer task: turns what calls queued, and the jobs sent to it, into
/// one transaction at a time.
async fn run(inner: Arc<Inner>, rx: mpsc::UnboundedReceiver<Job>) {
    let mut w = Writer {
        inner,
        rx,
        jobs: Vec::new(),
        last_renew: Instant::now(),
        last_idle_check: Instant::now(),
        retrying: false,
    };
    while w.wait_for_work().await {
        if w.last_idle_check.elapsed() >= Duration::from_secs(1) {
            w.last_idle_check = Instant::now();
            w.inner.return_idle();
        }
        let renew = w.last_renew.elapsed() >= RENEW_EVERY;
        let taken_at = Instant::now();
        let (batch, writes) = w.next_batch(renew);
        let result = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            apply(&w.inner.db, &w.inner.holder, &batch).await
        };
        match result {
            Ok(outcomes) => {
                w.inner.committed_rows(taken_at);
                w.committed(outcomes, writes, renew)
            }
            Err(e) => w.failed(batch, &e, writes),
        }
    }
}

struct Writer {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Job>,
    /// Jobs taken off the channel and not answered yet.
    jobs: Vec<Job>,
    last_renew: Instant,
    last_idle_check: Instant,
    /// The last batch with writes failed: try again soon, whatever comes.
    retrying: bool,
}

impl Writer {
    /// Waits until there may be something to do (at most a second, so idle
    /// leases are returned and renewals made) and takes every job sent so
    /// far. False once every sender is gone.
    async fn wait_for_work(&mut self) -> bool {
        if self.retrying {
            tokio::time::sleep(RETRY_AFTER).await;
        } else if self.jobs.is_empty() {
            tokio::select! {
                job = self.rx.recv() => match job {
                    Some(j) => self.jobs.push(j),
                    None => return false,
                },
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        while let Ok(j) = self.rx.try_recv() {
            self.jobs.push(j);
        }
        true
    }

    /// Everything queued so far and the waiting top-ups, as one batch, and
    /// whether it writes ledger rows or returns.
    fn next_batch(&self, renew: bool) -> (Batch, bool) {
        let (charges, returns, touched) = {
            let mut p = locked(&self.inner.pending);
            (
                std::mem::take(&mut p.charges),
                std::mem::take(&mut p.returns),
                std::mem::take(&mut p.touched),
            )
        };
        let writes = !charges.is_empty() || !returns.is_empty();
        let top_ups = self
            .jobs
            .iter()
            .filter_map(|j| match j {
                Job::TopUp(t, _) => Some(t.clone()),
                Job::Flush(_) => None,
            })
            .collect();
        let batch = Batch {
            top_ups,
            charges,
            returns,
            renew,
            touched: touched.into_iter().collect(),
        };
        (batch, writes)
    }

    /// A batch committed: opens the gate and answers every job.
    fn committed(&mut self, outcomes: Vec<TopUpOutcome>, writes: bool, renew: bool) {
        if writes {
            self.inner.healthy.store(true, Ordering::Release);
        }
        if renew {
            self.last_renew = Instant::now();
        }
        self.retrying = false;
        let mut outcomes = outcomes.into_iter();
        for j in self.jobs.drain(..) {
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

    /// A batch failed: keeps its rows and returns for the next try, oldest
    /// first, closes the gate if it had any, and refuses the top-ups.
    /// Flushes wait for a batch that commits.
    fn failed(&mut self, mut batch: Batch, e: &DbErr, writes: bool) {
        tracing::error!(
            "accounting batch failed ({} ledger rows kept for retry): {e}",
            batch.charges.len()
        );
        {
            let mut p = locked(&self.inner.pending);
            batch.charges.append(&mut p.charges);
            batch.returns.append(&mut p.returns);
            p.charges = batch.charges;
            p.returns = batch.returns;
        }
        if writes {
            self.inner.healthy.store(false, Ordering::Release);
            self.retrying = true;
        }
        let mut kept = Vec::new();
        for j in self.jobs.drain(..) {
            match j {
                Job::TopUp(_, reply) => {
                    let _ = reply.send(Err(AccountingError(e.to_string())));
                }
                flush @ Job::Flush(_) => kept.push(flush),
            }
        }
        self.jobs = kept;
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

#[cfg(test)]
mod tests;
