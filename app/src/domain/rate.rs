//! Rate limits: requests and tokens per fixed one-minute window, held across
//! instances without a database round trip per call.
//!
//! Each instance takes a *share* of a window's allowance from the window's
//! row in a committed transaction, never more than the limit minus what all
//! instances took, and admits calls from that share in memory. So the
//! instances together never admit more than the limit (no over-admission).
//! What they can fail to admit is what other instances hold unused: their
//! shares are at most a tenth of the limit (shrinking near the limit), and an
//! instance gives back what it holds beyond two shares. A call's tokens are
//! its worst case (the bound), taken at admission; what it did not use comes
//! back to the instance's share when it ends.

use serde::{Deserialize, Serialize};

/// The length of a window. Windows start at whole minutes of Unix time, so
/// every instance (with a synchronised clock) agrees on them.
pub const WINDOW_MS: i64 = 60_000;

/// A share is at most this fraction of the limit.
pub const SHARE_DIVISOR: u64 = 10;

/// An instance keeps at most this many shares' worth unused; the rest goes
/// back to the window's row for other instances.
pub const KEEP_SHARES: u64 = 2;

/// The largest limit the config or a key may give.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// `rate_limits:` on a config entry, or a key's own limits. `None` is no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl RateLimits {
    pub const NONE: RateLimits = RateLimits {
        requests_per_minute: None,
        tokens_per_minute: None,
    };

    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

/// Reads a limit typed into a form: empty is no limit.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<u64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "a limit is a whole number from 1 to {MAX_LIMIT}, or empty for none; got `{t}`"
        )),
    }
}

/// The start of the window holding `now` (Unix ms).
pub fn window_start(now: i64) -> i64 {
    now.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// Whole seconds until the window holding `now` ends, at least 1: what
/// `Retry-After` and the reset headers say.
pub fn seconds_left(now: i64) -> u64 {
    let left = window_start(now) + WINDOW_MS - now;
    u64::try_from((left + 999) / 1000).unwrap_or(1).max(1)
}

/// The share an instance asks for when it has none left.
pub fn base_share(limit: u64) -> u64 {
    limit.div_ceil(SHARE_DIVISOR).max(1)
}

/// How much to take from a window row where `taken` of `limit` is gone,
/// when the instance lacks `short` now. `None` when what is left cannot
/// cover `short`. A share is the base share, but at most half of what is
/// left (so the last of a window is spread thin and not stranded on one
/// instance), and never less than `short` or more than what is left.
pub fn share(limit: u64, taken: u64, short: u64) -> Option<u64> {
    let left = limit.saturating_sub(taken);
    if short == 0 {
        return Some(0);
    }
    if left < short {
        return None;
    }
    Some(base_share(limit).min(left.div_ceil(2)).max(short).min(left))
}

/// One limited dimension (requests or tokens) of one scope's window, as this
/// instance sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub limit: u64,
    /// Taken from the row by this instance and not yet used.
    pub local: u64,
    /// Taken by all instances together, when this one last read the row.
    pub taken: u64,
}

impl Counter {
    pub fn new(limit: u64) -> Counter {
        Counter {
            limit,
            local: 0,
            taken: 0,
        }
    }

    /// What this instance lacks to admit `need`.
    pub fn short(&self, need: u64) -> u64 {
        need.saturating_sub(self.local)
    }

    /// This instance's best knowledge of what is left in the window: its
    /// own share plus what no instance had taken when it last looked.
    pub fn remaining(&self) -> u64 {
        self.local + self.limit.saturating_sub(self.taken)
    }

    /// What this instance holds beyond [`KEEP_SHARES`] shares (a share being
    /// at least `per_call`), to give back to the row.
    pub fn excess(&self, per_call: u64) -> u64 {
        let keep = KEEP_SHARES * base_share(self.limit).max(per_call);
        self.local.saturating_sub(keep)
    }
}

/// What one call needs of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub requests: u64,
    pub tokens: u64,
}

impl Need {
    pub const ZERO: Need = Need {
        requests: 0,
        tokens: 0,
    };

    pub fn is_zero(&self) -> bool {
        *self == Need::ZERO
    }

    pub fn call(tokens: u64) -> Need {
        Need {
            requests: 1,
            tokens,
        }
    }
}

/// One scope's window on this instance: a dimension is `None` when it has
/// no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub requests: Option<Counter>,
    pub tokens: Option<Counter>,
}

impl Window {
    pub fn new(start: i64, limits: RateLimits) -> Window {
        Window {
            start,
            requests: limits.requests_per_minute.map(Counter::new),
            tokens: limits.tokens_per_minute.map(Counter::new),
        }
    }

    /// Follows a limit that changed in the config (or a new window): the
    /// counters of a dimension that stays limited are kept.
    pub fn follow(&mut self, start: i64, limits: RateLimits) {
        if start != self.start {
            *self = Window::new(start, limits);
            return;
        }
        let adjust = |c: &mut Option<Counter>, limit: Option<u64>| match (c.as_mut(), limit) {
            (Some(c), Some(l)) => c.limit = l,
            (None, Some(l)) => *c = Some(Counter::new(l)),
            (_, None) => *c = None,
        };
        adjust(&mut self.requests, limits.requests_per_minute);
        adjust(&mut self.tokens, limits.tokens_per_minute);
    }

    /// What this instance lacks of `need`, per dimension (0 where covered or
    /// unlimited).
    pub fn short(&self, need: Need) -> Need {
        Need {
            requests: self.requests.map_or(0, |c| c.short(need.requests)),
            tokens: self.tokens.map_or(0, |c| c.short(need.tokens)),
        }
    }

    /// Takes `need` from the local share if it covers it.
    pub fn take(&mut self, need: Need) -> bool {
        if !self.short(need).is_zero() {
            return false;
        }
        self.claim(need);
        true
    }

    /// Takes what the local share has of `need` (so that no other call can
    /// take it while a share is fetched) and returns what is still short.
    pub fn claim(&mut self, need: Need) -> Need {
        let short = self.short(need);
        if let Some(c) = self.requests.as_mut() {
            c.local -= need.requests - short.requests;
        }
        if let Some(c) = self.tokens.as_mut() {
            c.local -= need.tokens - short.tokens;
        }
        short
    }

    /// Puts back what a call took and did not use.
    pub fn give_back(&mut self, unused: Need) {
        if let Some(c) = self.requests.as_mut() {
            c.local += unused.requests;
        }
        if let Some(c) = self.tokens.as_mut() {
            c.local += unused.tokens;
        }
    }

    /// Records a share taken from the row for a call that [`Self::claim`]ed
    /// and was `short`, and the row's totals after it: the call gets what
    /// was short, the rest of the share stays local.
    pub fn granted(&mut self, share: Need, taken: Need, short: Need) {
        self.saw(taken);
        self.give_back(Need {
            requests: share.requests - short.requests,
            tokens: share.tokens - short.tokens,
        });
    }

    /// Records the row's totals as read.
    pub fn saw(&mut self, taken: Need) {
        if let Some(c) = self.requests.as_mut() {
            c.taken = taken.requests;
        }
        if let Some(c) = self.tokens.as_mut() {
            c.taken = taken.tokens;
        }
    }

    /// Removes what this instance holds beyond [`KEEP_SHARES`] shares and
    /// returns it, for the row.
    pub fn trim(&mut self, per_call: Need) -> Need {
        let cut = |c: &mut Option<Counter>, per: u64| {
            c.as_mut().map_or(0, |c| {
                let x = c.excess(per);
                c.local -= x;
                c.taken = c.taken.saturating_sub(x);
                x
            })
        };
        Need {
            requests: cut(&mut self.requests, per_call.requests),
            tokens: cut(&mut self.tokens, per_call.tokens),
        }
    }
}

/// A share to ask of the row for one dimension: the limit and what is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub limit: u64,
    pub short: u64,
}

/// The shares to take from a row whose totals are `taken`, or `None` if a
/// dimension cannot cover what is short.
pub fn shares(requests: Option<Ask>, tokens: Option<Ask>, taken: Need) -> Option<Need> {
    let one = |ask: Option<Ask>, taken: u64| match ask {
        None => Some(0),
        Some(a) => share(a.limit, taken, a.short),
    };
    Some(Need {
        requests: one(requests, taken.requests)?,
        tokens: one(tokens, taken.tokens)?,
    })
}

/// A limit and what is left of it, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub limit: u64,
    pub remaining: u64,
}

/// What the `x-ratelimit-*` headers of one call say: for each dimension the
/// scope with the least left, and the seconds until the window ends. A
/// dimension no limit applies to has no headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    pub requests: Option<Left>,
    pub tokens: Option<Left>,
    pub reset_secs: u64,
}

impl Report {
    /// Adds one scope's window.
    pub fn include(&mut self, w: &Window) {
        let tighter = |cur: &mut Option<Left>, c: Option<Counter>| {
            if let Some(c) = c {
                let l = Left {
                    limit: c.limit,
                    remaining: c.remaining(),
                };
                if cur.is_none_or(|x| l.remaining < x.remaining) {
                    *cur = Some(l);
                }
            }
        };
        tighter(&mut self.requests, w.requests);
        tighter(&mut self.tokens, w.tokens);
    }

    /// The headers, OpenAI's names, the reset as a duration in seconds (`12s`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let reset = format!("{}s", self.reset_secs);
        if let Some(l) = self.requests {
            out.push(("x-ratelimit-limit-requests", l.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", l.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", reset.clone()));
        }
        if let Some(l) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", l.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", l.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", reset));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shares_are_a_tenth_of_the_limit_and_thin_out_near_it() {
        for (limit, taken, short, want) in [
            (60, 0, 1, Some(6)),
            (60, 54, 1, Some(3)),
            (60, 57, 1, Some(2)),
            (60, 59, 1, Some(1)),
            (60, 60, 1, None),
            (5, 0, 1, Some(1)),
            (5, 4, 1, Some(1)),
            (1000, 0, 300, Some(300)),
            (1000, 900, 300, None),
            (1000, 900, 0, Some(0)),
            (1000, 1200, 1, None),
        ] {
            assert_eq!(share(limit, taken, short), want, "{limit} {taken} {short}");
        }
    }

    #[test]
    fn windows_are_whole_minutes() {
        assert_eq!(window_start(125_000), 120_000);
        assert_eq!(seconds_left(120_000), 60);
        assert_eq!(seconds_left(125_001), 55);
        assert_eq!(seconds_left(179_999), 1);
        assert_eq!(window_start(-1), -60_000);
    }

    #[test]
    fn limits_typed_in_a_form() {
        assert_eq!(parse_limit(" "), Ok(None));
        assert_eq!(parse_limit("60"), Ok(Some(60)));
        for bad in ["0", "-1", "1.5", "ten", "1000000000001"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_admits_from_its_share_and_takes_back_what_a_call_left() {
        let limits = RateLimits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1000),
        };
        let mut w = Window::new(0, limits);
        let need = Need::call(300);
        assert!(!w.take(need));
        assert_eq!(w.claim(need), need);
        let share = Need {
            requests: 1,
            tokens: 400,
        };
        w.granted(share, share, need);
        assert_eq!(w.short(need), Need::call(200), "100 tokens stay local");
        // The call used 100 of its 300 tokens.
        w.give_back(Need {
            requests: 0,
            tokens: 200,
        });
        assert_eq!(w.tokens.map(|c| (c.local, c.remaining())), Some((300, 900)));
        let mut r = Report {
            reset_secs: 12,
            ..Report::default()
        };
        r.include(&w);
        assert_eq!(
            r.headers(),
            vec![
                ("x-ratelimit-limit-requests", "10".to_string()),
                ("x-ratelimit-remaining-requests", "9".to_string()),
                ("x-ratelimit-reset-requests", "12s".to_string()),
                ("x-ratelimit-limit-tokens", "1000".to_string()),
                ("x-ratelimit-remaining-tokens", "900".to_string()),
                ("x-ratelimit-reset-tokens", "12s".to_string()),
            ]
        );
    }

    #[test]
    fn the_tighter_scope_speaks_and_an_unlimited_dimension_is_silent() {
        let owner = Window::new(
            0,
            RateLimits {
                requests_per_minute: Some(100),
                tokens_per_minute: None,
            },
        );
        let key = Window::new(
            0,
            RateLimits {
                requests_per_minute: Some(5),
                tokens_per_minute: None,
            },
        );
        let mut r = Report::default();
        r.include(&owner);
        r.include(&key);
        assert_eq!(
            r.requests,
            Some(Left {
                limit: 5,
                remaining: 5
            })
        );
        assert_eq!(r.headers().len(), 3);
        assert!(Report::default().headers().is_empty());
    }

    #[test]
    fn a_limit_changed_mid_window_keeps_the_counters() {
        let mut w = Window::new(
            0,
            RateLimits {
                requests_per_minute: Some(10),
                tokens_per_minute: None,
            },
        );
        let three = Need {
            requests: 3,
            tokens: 0,
        };
        w.granted(three, three, Need::ZERO);
        let both = RateLimits {
            requests_per_minute: Some(20),
            tokens_per_minute: Some(7),
        };
        w.follow(0, both);
        assert_eq!(w.requests.map(|c| (c.limit, c.local)), Some((20, 3)));
        assert_eq!(w.tokens, Some(Counter::new(7)));
        w.follow(WINDOW_MS, both);
        assert_eq!(w, Window::new(WINDOW_MS, both));
    }

    #[test]
    fn an_instance_keeps_at_most_two_shares() {
        let mut w = Window::new(
            0,
            RateLimits {
                requests_per_minute: None,
                tokens_per_minute: Some(1000),
            },
        );
        w.granted(
            Need {
                requests: 0,
                tokens: 400,
            },
            Need {
                requests: 0,
                tokens: 700,
            },
            Need::ZERO,
        );
        let cut = w.trim(Need::call(50));
        assert_eq!(cut.tokens, 200);
        assert_eq!(w.tokens.map(|c| (c.local, c.taken)), Some((200, 500)));
        assert!(w.trim(Need::call(300)).is_zero(), "a big call keeps more");
    }

    /// Several instances sharing one row, calls and their ends interleaved
    /// at random, following the limiter's steps.
    #[derive(Debug, Clone)]
    enum Step {
        Call {
            instance: usize,
            tokens: u64,
        },
        End {
            instance: usize,
            used_per_mille: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3, 0u64..400).prop_map(|(instance, tokens)| Step::Call { instance, tokens }),
            (0usize..3, 0u64..=1000).prop_map(|(instance, used_per_mille)| Step::End {
                instance,
                used_per_mille
            }),
        ]
    }

    struct Sim {
        limits: RateLimits,
        row: Need,
        windows: Vec<Window>,
        running: Vec<Vec<u64>>,
        admitted: u64,
        used_tokens: u64,
    }

    impl Sim {
        /// Admits a call, or says what the instance lacked.
        fn call(&mut self, i: usize, tokens: u64) -> Result<(), Need> {
            let need = Need::call(tokens);
            let w = &mut self.windows[i];
            if !w.take(need) {
                let short = w.claim(need);
                let ask = |c: Option<Counter>, short| {
                    c.map(|c: Counter| Ask {
                        limit: c.limit,
                        short,
                    })
                };
                match shares(
                    ask(w.requests, short.requests),
                    ask(w.tokens, short.tokens),
                    self.row,
                ) {
                    Some(s) => {
                        self.row.requests += s.requests;
                        self.row.tokens += s.tokens;
                        w.granted(s, self.row, short);
                    }
                    None => {
                        w.saw(self.row);
                        w.give_back(Need {
                            requests: need.requests - short.requests,
                            tokens: need.tokens - short.tokens,
                        });
                        return Err(short);
                    }
                }
            }
            self.admitted += 1;
            self.running[i].push(tokens);
            Ok(())
        }

        fn end(&mut self, i: usize, used_per_mille: u64) {
            let Some(reserved) = self.running[i].pop() else {
                return;
            };
            let used = reserved * used_per_mille / 1000;
            self.used_tokens += used;
            let w = &mut self.windows[i];
            w.give_back(Need {
                requests: 0,
                tokens: reserved - used,
            });
            let back = w.trim(Need::call(reserved));
            self.row.requests -= back.requests;
            self.row.tokens -= back.tokens;
        }

        fn local(&self, i: usize) -> Need {
            let w = &self.windows[i];
            Need {
                requests: w.requests.map_or(0, |c| c.local),
                tokens: w.tokens.map_or(0, |c| c.local),
            }
        }
    }

    proptest! {
        #[test]
        fn instances_never_admit_more_than_the_limit_and_strand_at_most_their_kept_shares(
            rpm in 1u64..80,
            tpm in 400u64..5000,
            steps in prop::collection::vec(step(), 1..300),
        ) {
            let limits = RateLimits { requests_per_minute: Some(rpm), tokens_per_minute: Some(tpm) };
            let mut sim = Sim {
                limits,
                row: Need::ZERO,
                windows: vec![Window::new(0, limits); 3],
                running: vec![Vec::new(); 3],
                admitted: 0,
                used_tokens: 0,
            };
            for s in steps {
                match s {
                    Step::Call { instance, tokens } => {
                        if let Err(short) = sim.call(instance, tokens) {
                            // Refused only when neither this instance nor the
                            // row could cover the call: what other instances
                            // hold (bounded below) is all that was missed.
                            prop_assert!(
                                short.requests > rpm - sim.row.requests
                                    || short.tokens > tpm - sim.row.tokens
                            );
                        }
                    }
                    Step::End { instance, used_per_mille } => sim.end(instance, used_per_mille),
                }
                let locals: Vec<Need> = (0..3).map(|i| sim.local(i)).collect();
                let in_flight: u64 = sim.running.iter().flatten().sum();
                // Everything taken from the row is admitted or held: nothing
                // is admitted beyond the limit.
                prop_assert!(sim.row.requests <= rpm && sim.row.tokens <= tpm);
                prop_assert_eq!(sim.admitted + locals.iter().map(|l| l.requests).sum::<u64>(), sim.row.requests);
                prop_assert_eq!(in_flight + sim.used_tokens + locals.iter().map(|l| l.tokens).sum::<u64>(), sim.row.tokens);
                // What an instance holds unused is bounded by its kept shares.
                for l in &locals {
                    prop_assert!(l.requests <= KEEP_SHARES * base_share(rpm));
                    prop_assert!(l.tokens <= KEEP_SHARES * base_share(tpm).max(400));
                }
            }
            let _ = sim.limits;
        }
    }
}
