//! Rate limits in memory, shared across instances through the database.
//!
//! A call is counted against up to two *scopes*: its key (the key's own
//! limits) and its owner (`rate_limits` of the owner's config entry). For
//! each, the instance holds a share of the current one-minute window, taken
//! from the window's row in a committed transaction (`ssr::rate_windows`),
//! and admits calls from it in memory; only a call that finds the share
//! short waits for the database, and calls behind it on the same scope wait
//! for that one trip rather than making their own. Sizes and the error bound
//! are in `domain::rate`.
//!
//! A call takes one request and its worst-case tokens (the bound). When it
//! ends, what it did not use comes back to this instance's share, and
//! whatever the instance then holds beyond two shares goes back to the row.
//!
//! [`reporting`] keeps a little state for each metered call in a
//! task-local: the numbers for the `x-ratelimit-*` headers, left there by
//! admission so that every response of the call carries them (a refusal
//! after admission included) without threading them through the proxy's
//! stages; and whether the call already holds its request, so that a
//! fallback to another model counts its tokens but not a second request.

use super::error::ApiError;
use app::domain::rate::{seconds_left, window_start, Ask, Need, RateLimits, Report, Window};
use app::ssr::keys::KeyOwner;
use app::ssr::rate_windows::{self, ShareAsk, ShareOutcome};
use app::ssr::{now_ms, SharedConfig};
use axum::http::HeaderValue;
use axum::response::Response;
use sea_orm::DatabaseConnection;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What admission leaves for the rest of one metered call.
#[derive(Default)]
struct CallState {
    report: Option<Report>,
    /// A request was taken for this call (by its first model).
    counted: bool,
}

tokio::task_local! {
    static CALL: RefCell<CallState>;
}

/// Runs a metered call and adds the `x-ratelimit-*` headers its admission
/// left, whatever the response is. No limit, no headers.
pub async fn reporting(call: impl Future<Output = Response>) -> Response {
    let (mut resp, report) = CALL
        .scope(RefCell::new(CallState::default()), async move {
            let resp = call.await;
            (resp, CALL.with(|c| c.borrow_mut().report.take()))
        })
        .await;
    for (name, value) in report.map(|r| r.headers()).unwrap_or_default() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn leave_report(r: Report) {
    // Outside `reporting` (no metered call) there is nowhere to put it.
    let _ = CALL.try_with(|c| c.borrow_mut().report = Some(r));
}

/// Requests a call takes now: one, unless an earlier model of the same call
/// (before a fallback) already took it.
fn requests_to_take() -> u64 {
    let counted = CALL.try_with(|c| c.borrow().counted).unwrap_or(false);
    u64::from(!counted)
}

fn mark_counted() {
    let _ = CALL.try_with(|c| c.borrow_mut().counted = true);
}

/// One scope's window on this instance.
struct Slot {
    window: Window,
    /// Held while a share is fetched, so calls behind it wait for that one.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

struct Inner {
    db: DatabaseConnection,
    config: SharedConfig,
    slots: Mutex<HashMap<String, Slot>>,
    /// The window whose start last dropped the slots of earlier ones.
    pruned: AtomicI64,
}

#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scope a call counts against: its row name, its limits, and how a
/// refusal names it.
struct Scope {
    name: String,
    limits: RateLimits,
    who: String,
}

/// A call admitted under its rate limits. [`Permit::settle`] gives back the
/// tokens the call did not use; a permit dropped unsettled belongs to a call
/// that never went upstream, and gives back its request and tokens.
pub struct Permit {
    limiter: Option<Limiter>,
    start: i64,
    scopes: Vec<String>,
    /// What the call took: a request (none for a fallback) and its worst-case tokens.
    took: Need,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("scopes", &self.scopes)
            .field("took", &self.took)
            .finish()
    }
}

impl Permit {
    /// The call ran and used `used` tokens.
    pub fn settle(mut self, used: u64) {
        if let Some(l) = self.limiter.take() {
            let unused = Need {
                requests: 0,
                tokens: self.took.tokens.saturating_sub(used),
            };
            l.give_back(&self.scopes, self.start, unused, self.took.tokens);
        }
    }

    /// The call ran, and what it used is not known: all of its tokens count.
    pub fn settle_in_full(self) {
        let tokens = self.took.tokens;
        self.settle(tokens);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(l) = self.limiter.take() {
            l.give_back(&self.scopes, self.start, self.took, self.took.tokens);
        }
    }
}

impl Limiter {
    pub fn new(db: DatabaseConnection, config: SharedConfig) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                db,
                config,
                slots: Mutex::new(HashMap::new()),
                pruned: AtomicI64::new(0),
            }),
        }
    }

    /// The scopes a call by `owner`'s key counts against, the key first
    /// (usually the tighter, so a refusal there holds nothing of the owner's).
    fn scopes(&self, owner: &KeyOwner) -> Vec<Scope> {
        let snapshot = self.inner.config.load();
        let (settings, _) = super::proxy::settings_for(&snapshot.config, owner);
        let mut out = Vec::new();
        if !owner.limits.is_none() {
            out.push(Scope {
                name: format!("key:{}", owner.key_id),
                limits: owner.limits,
                who: "this key".into(),
            });
        }
        if !settings.rate_limits.is_none() {
            let kind = owner.kind.as_str();
            out.push(Scope {
                name: format!("{kind}:{}", owner.owner_id),
                limits: settings.rate_limits,
                who: format!("{kind} `{}`", owner.name),
            });
        }
        out
    }

    /// Admits a call whose worst case is `tokens`, or refuses it with 429.
    /// Waits for the database only when this instance's share runs short.
    pub async fn admit(&self, owner: &KeyOwner, tokens: u64) -> Result<Permit, ApiError> {
        let scopes = self.scopes(owner);
        let now = now_ms();
        let start = window_start(now);
        let need = Need {
            requests: requests_to_take(),
            tokens,
        };
        let mut permit = Permit {
            limiter: None,
            start,
            scopes: Vec::new(),
            took: need,
        };
        if scopes.is_empty() {
            return Ok(permit);
        }
        if self.inner.pruned.swap(start, Ordering::Relaxed) < start {
            // A new window: the slots of earlier ones are of no more use.
            locked(&self.inner.slots).retain(|_, x| x.window.start >= start);
        }
        permit.limiter = Some(self.clone());
        let mut refused = None;
        for s in &scopes {
            if let Err(e) = self.hold(s, start, need, now).await {
                refused = Some(e);
                break;
            }
            permit.scopes.push(s.name.clone());
        }
        self.report(&scopes, start, now);
        match refused {
            // Dropping the permit gives back what the scopes before held.
            Some(e) => Err(e),
            None => {
                mark_counted();
                Ok(permit)
            }
        }
    }

    /// Takes `need` from this instance's share of one scope's window,
    /// topping the share up from the row when it is short.
    async fn hold(&self, s: &Scope, start: i64, need: Need, now: i64) -> Result<(), ApiError> {
        let fetching = {
            let mut slots = locked(&self.inner.slots);
            let slot = slot(&mut slots, s, start);
            if slot.window.take(need) {
                return Ok(());
            }
            slot.fetching.clone()
        };
        let _turn = fetching.lock().await;
        let (ask, short) = {
            let mut slots = locked(&self.inner.slots);
            let w = &mut slot(&mut slots, s, start).window;
            if w.take(need) {
                return Ok(());
            }
            let short = w.claim(need);
            let ask = |limit: Option<u64>, short: u64| {
                limit
                    .filter(|_| short > 0)
                    .map(|limit| Ask { limit, short })
            };
            let ask = ShareAsk {
                scope: s.name.clone(),
                window_start: start,
                requests: ask(s.limits.requests_per_minute, short.requests),
                tokens: ask(s.limits.tokens_per_minute, short.tokens),
            };
            (ask, short)
        };
        let outcome = rate_windows::take_share(&self.inner.db, &ask).await;
        let mut slots = locked(&self.inner.slots);
        let w = &mut slot(&mut slots, s, start).window;
        let claimed = Need {
            requests: need.requests - short.requests,
            tokens: need.tokens - short.tokens,
        };
        match outcome {
            Ok(ShareOutcome::Granted { share, taken }) => {
                w.granted(share, taken, short);
                Ok(())
            }
            Ok(ShareOutcome::Exhausted { taken }) => {
                w.saw(taken);
                w.give_back(claimed);
                Err(refusal(s, w, need, now))
            }
            Err(e) => {
                w.give_back(claimed);
                tracing::error!("cannot take a rate limit share: {e}");
                Err(ApiError::AccountingUnavailable(
                    "the gateway cannot check rate limits right now, so the call was not sent upstream; retry shortly".into(),
                ))
            }
        }
    }

    /// Leaves the headers' numbers for the response.
    fn report(&self, scopes: &[Scope], start: i64, now: i64) {
        let mut r = Report {
            reset_secs: seconds_left(now),
            ..Report::default()
        };
        let slots = locked(&self.inner.slots);
        for s in scopes {
            if let Some(slot) = slots.get(&s.name).filter(|x| x.window.start == start) {
                r.include(&slot.window);
            }
        }
        leave_report(r);
    }

    /// Gives `unused` back to each scope's share in window `start` (if it
    /// is still the current one), and what the share then holds beyond two
    /// shares back to the row, in the background.
    fn give_back(&self, scopes: &[String], start: i64, unused: Need, per_call: u64) {
        let mut to_row = Vec::new();
        {
            let mut slots = locked(&self.inner.slots);
            for name in scopes {
                let Some(slot) = slots.get_mut(name).filter(|x| x.window.start == start) else {
                    continue;
                };
                slot.window.give_back(unused);
                let back = slot.window.trim(Need::call(per_call));
                if !back.is_zero() {
                    to_row.push((name.clone(), back));
                }
            }
        }
        if to_row.is_empty() {
            return;
        }
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            for (scope, back) in to_row {
                if let Err(e) = rate_windows::give_back(&db, &scope, start, back).await {
                    // Only other instances lose: they cannot use it this window.
                    tracing::warn!("cannot give back a rate limit share of {scope}: {e}");
                }
            }
        });
    }
}

/// The slot of a scope, following the current window and limits.
fn slot<'a>(slots: &'a mut HashMap<String, Slot>, s: &Scope, start: i64) -> &'a mut Slot {
    let slot = slots.entry(s.name.clone()).or_insert_with(|| Slot {
        window: Window::new(start, s.limits),
        fetching: Arc::new(tokio::sync::Mutex::new(())),
    });
    slot.window.follow(start, s.limits);
    slot
}

/// The 429 for a call `w` could not cover.
fn refusal(s: &Scope, w: &Window, need: Need, now: i64) -> ApiError {
    let secs = seconds_left(now);
    let who = &s.who;
    let requests = w.requests.is_some_and(|r| r.remaining() < need.requests);
    let message = match (w.requests, w.tokens) {
        (Some(r), _) if requests => format!(
            "{who} has used its {} requests per minute; retry in {secs} s",
            r.limit
        ),
        (_, Some(t)) if need.tokens > t.limit => format!(
            "this call may use up to {} tokens, more than the {} tokens per minute {who} may use; lower max_tokens or shorten the prompt",
            need.tokens, t.limit
        ),
        (_, Some(t)) => format!(
            "this call may use up to {} tokens and {who} has {} of its {} tokens per minute left; retry in {secs} s, or lower max_tokens",
            need.tokens,
            t.remaining(),
            t.limit
        ),
        _ => format!("{who} is over its rate limit; retry in {secs} s"),
    };
    ApiError::RateLimited {
        message,
        retry_after: secs,
        what: if requests { "requests" } else { "tokens" },
    }
}
