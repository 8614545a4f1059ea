//! Coin-pool arithmetic in micro-coins, with lazy refill:
//! `balance = min(max, balance + refresh × elapsed)`.
//!
//! The database applies these results with atomic statements (see
//! `ssr::pools`); this module only computes them.

use super::config::{PoolLimit, PoolSettings};
use serde::{Deserialize, Serialize};

pub const MS_PER_HOUR: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub limit: PoolLimit,
    pub refresh_micro: i64,
    /// What can be spent: never above a limited pool's max.
    pub balance: i64,
    /// When refill was last credited (Unix ms).
    pub refilled_at: i64,
    /// Coins a config change put out of reach (above a lowered max, or all of
    /// them while blocked). Never spent, never refilled; raising max again
    /// gives them back.
    pub held: i64,
}

/// A refill to credit: add `amount` and move the refill clock to `refilled_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub amount: i64,
    pub refilled_at: i64,
}

/// The balance a new pool starts with: `starting`, clamped to the limit.
pub fn initial_balance(settings: &PoolSettings) -> i64 {
    match settings.limit {
        PoolLimit::Unlimited => settings.starting_micro.max(0),
        PoolLimit::Limited(max) => settings.starting_micro.clamp(0, max),
    }
}

/// The refill due at `now`. No fraction of a micro-coin is lost: the refill
/// clock moves forward only by the time that earned the credited amount. A
/// full pool accrues nothing, so its clock moves to `now`.
pub fn refill_due(state: &PoolState, now: i64) -> Refill {
    let keep = Refill {
        amount: 0,
        refilled_at: state.refilled_at,
    };
    let PoolLimit::Limited(max) = state.limit else {
        return keep;
    };
    if state.refresh_micro <= 0 {
        return keep;
    }
    if state.balance >= max {
        return Refill {
            amount: 0,
            refilled_at: now.max(state.refilled_at),
        };
    }
    let elapsed = (now - state.refilled_at).max(0) as i128;
    let refresh = state.refresh_micro as i128;
    let hour = MS_PER_HOUR as i128;
    let due = elapsed * refresh / hour;
    let room = (max - state.balance) as i128;
    if due >= room {
        Refill {
            amount: room as i64,
            refilled_at: now,
        }
    } else if due == 0 {
        keep
    } else {
        // The time that earned `due`, rounded up so it never exceeds `elapsed`.
        let used = (due * hour + refresh - 1) / refresh;
        Refill {
            amount: due as i64,
            refilled_at: state.refilled_at + used as i64,
        }
    }
}

impl Refill {
    /// Whether crediting this refill changes the stored pool.
    pub fn changes(&self, state: &PoolState) -> bool {
        self.amount != 0 || self.refilled_at != state.refilled_at
    }
}

/// The state after crediting the refill due at `now`.
pub fn refilled(state: &PoolState, now: i64) -> PoolState {
    let r = refill_due(state, now);
    PoolState {
        balance: state.balance + r.amount,
        refilled_at: r.refilled_at,
        ..*state
    }
}

/// The state after new settings are synced (refill at the old rate already
/// credited). A config change never destroys coins, so that a file saved
/// half-written, or emptied and restored, costs nobody anything:
/// - lowering max (or blocking, max 0) moves what is above it to `held`;
/// - raising max gives held coins back, up to the room the raise made;
/// - leaving "unlimited" brings everything within the new max;
/// - `starting` is ignored because the pool already exists.
///
/// `balance + held` is the same before and after. `ssr::pools` applies the
/// same rule in one SQL statement.
pub fn with_settings(state: &PoolState, settings: &PoolSettings, now: i64) -> PoolState {
    let (balance, held) = match (state.limit, settings.limit) {
        (_, PoolLimit::Unlimited) => (state.balance, state.held),
        (PoolLimit::Unlimited, PoolLimit::Limited(max)) => {
            let total = state.balance + state.held;
            (total.min(max), total - total.min(max))
        }
        (PoolLimit::Limited(old), PoolLimit::Limited(max)) => {
            if state.balance > max {
                (max, state.held + state.balance - max)
            } else if max > old {
                let back = state.held.min(max - old);
                (state.balance + back, state.held - back)
            } else {
                (state.balance, state.held)
            }
        }
    };
    let restart = state.limit == PoolLimit::Unlimited && settings.limit != PoolLimit::Unlimited;
    PoolState {
        limit: settings.limit,
        refresh_micro: settings.refresh_micro,
        balance,
        held,
        refilled_at: if restart { now } else { state.refilled_at },
    }
}

/// When a limited pool will be full again, if it ever will (Unix ms).
pub fn full_at(state: &PoolState, now: i64) -> Option<i64> {
    let PoolLimit::Limited(max) = state.limit else {
        return None;
    };
    let s = refilled(state, now);
    if s.balance >= max {
        return Some(now);
    }
    if s.refresh_micro <= 0 {
        return None;
    }
    let missing = (max - s.balance) as i128;
    let ms =
        (missing * MS_PER_HOUR as i128 + s.refresh_micro as i128 - 1) / s.refresh_micro as i128;
    Some(
        s.refilled_at
            .saturating_add(ms.min(i64::MAX as i128) as i64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lease::{grant, Grant};
    use crate::domain::money::MICRO;
    use proptest::prelude::*;

    /// Whether a call of `cost` is admitted, by the rule leases use.
    fn affordable(st: &PoolState, cost: i64) -> bool {
        matches!(
            grant(st.limit, st.balance, cost, cost, cost),
            Grant::Take { .. }
        )
    }

    fn limited(max: i64, refresh: i64, balance: i64) -> PoolState {
        PoolState {
            limit: PoolLimit::Limited(max),
            refresh_micro: refresh,
            balance,
            refilled_at: 0,
            held: 0,
        }
    }

    #[test]
    fn starting_is_clamped_to_max() {
        let s = |limit, starting_micro| PoolSettings {
            limit,
            refresh_micro: 0,
            starting_micro,
        };
        assert_eq!(initial_balance(&s(PoolLimit::Limited(100), 500)), 100);
        assert_eq!(initial_balance(&s(PoolLimit::Limited(500), 100)), 100);
        assert_eq!(initial_balance(&s(PoolLimit::Limited(0), 100)), 0);
        assert_eq!(initial_balance(&s(PoolLimit::Unlimited, 7)), 7);
    }

    #[test]
    fn refills_lazily_up_to_max() {
        // 0.05 coins per hour, as in the user's example.
        let st = limited(100 * MICRO, 50_000, 0);
        assert_eq!(refilled(&st, MS_PER_HOUR).balance, 50_000);
        assert_eq!(refilled(&st, 10 * MS_PER_HOUR).balance, 500_000);
        let near_full = limited(100 * MICRO, 50_000, 100 * MICRO - 10);
        assert_eq!(refilled(&near_full, 100 * MS_PER_HOUR).balance, 100 * MICRO);
    }

    #[test]
    fn fractions_accumulate_instead_of_vanishing() {
        // 1 micro-coin per hour: each millisecond earns nothing on its own.
        let mut st = limited(MICRO, 1, 0);
        for t in 1..=1000 {
            st = refilled(&st, t * (MS_PER_HOUR / 1000));
        }
        assert_eq!(st.balance, 1);
    }

    #[test]
    fn unlimited_and_blocked() {
        let unlimited = PoolState {
            limit: PoolLimit::Unlimited,
            refresh_micro: 5,
            balance: 0,
            refilled_at: 0,
            held: 0,
        };
        assert!(affordable(&unlimited, i64::MAX));
        assert_eq!(refilled(&unlimited, 10 * MS_PER_HOUR).balance, 0);
        assert_eq!(full_at(&unlimited, 0), None);
        let blocked = limited(0, MICRO, 0);
        assert!(!affordable(&blocked, 0));
        assert_eq!(refilled(&blocked, MS_PER_HOUR).balance, 0);
    }

    fn settings(limit: PoolLimit) -> PoolSettings {
        PoolSettings {
            limit,
            refresh_micro: 0,
            starting_micro: 999 * MICRO,
        }
    }

    #[test]
    fn lowering_max_holds_coins_back_and_raising_gives_them_back() {
        let st = limited(500 * MICRO, 0, 400 * MICRO);
        let lowered = with_settings(&st, &settings(PoolLimit::Limited(100 * MICRO)), 0);
        assert_eq!((lowered.balance, lowered.held), (100 * MICRO, 300 * MICRO));
        let mut spent = lowered;
        spent.balance -= 30 * MICRO;
        let restored = with_settings(&spent, &settings(PoolLimit::Limited(500 * MICRO)), 0);
        assert_eq!(
            (restored.balance, restored.held),
            (370 * MICRO, 0),
            "restoring gives the coins back, minus what was spent"
        );
        let blocked = with_settings(&st, &settings(PoolLimit::Limited(0)), 0);
        assert_eq!((blocked.balance, blocked.held), (0, 400 * MICRO));
        let raised = with_settings(&st, &settings(PoolLimit::Limited(900 * MICRO)), 0);
        assert_eq!(
            raised.balance,
            400 * MICRO,
            "a later change of starting leaves existing pools alone"
        );
        let from_unlimited = PoolState {
            limit: PoolLimit::Unlimited,
            held: 50,
            ..limited(0, 0, 70)
        };
        let now_limited = with_settings(&from_unlimited, &settings(PoolLimit::Limited(100)), 9);
        assert_eq!(
            (
                now_limited.balance,
                now_limited.held,
                now_limited.refilled_at
            ),
            (100, 20, 9)
        );
    }

    #[test]
    fn full_again() {
        let st = limited(10 * MICRO, MICRO, 8 * MICRO);
        assert_eq!(full_at(&st, 0), Some(2 * MS_PER_HOUR));
        assert_eq!(full_at(&limited(10, 0, 5), 0), None);
        assert_eq!(full_at(&limited(10, 0, 10), 7), Some(7));
    }

    proptest! {
        #[test]
        fn balance_stays_within_bounds(
            max in 0i64..1_000_000_000_000,
            refresh in 0i64..1_000_000_000_000,
            start_frac in 0.0f64..=1.0,
            steps in proptest::collection::vec((0i64..100 * MS_PER_HOUR, 0i64..2_000_000_000), 1..40),
        ) {
            let mut st = limited(max, refresh, (max as f64 * start_frac) as i64);
            let mut now = 0;
            for (dt, spend) in steps {
                now += dt;
                let before = st.balance;
                st = refilled(&st, now);
                prop_assert!(st.balance >= before, "refill is monotone");
                prop_assert!(st.balance >= 0 && st.balance <= max);
                if affordable(&st, spend) {
                    st.balance -= spend;
                }
                prop_assert!(st.balance >= 0 && st.balance <= max);
            }
        }

        #[test]
        fn no_sequence_of_config_changes_destroys_coins(
            max in 0i64..1_000_000,
            start_frac in 0.0f64..=1.0,
            changes in proptest::collection::vec(prop_oneof![
                (0i64..2_000_000).prop_map(PoolLimit::Limited),
                Just(PoolLimit::Unlimited),
            ], 0..12),
        ) {
            let st = limited(max, 0, (max as f64 * start_frac) as i64);
            let mut cur = st;
            for limit in changes {
                cur = with_settings(&cur, &settings(limit), 0);
                prop_assert_eq!(cur.balance + cur.held, st.balance, "coins are conserved");
                prop_assert!(cur.held >= 0 && cur.balance >= 0);
                if let PoolLimit::Limited(m) = limit {
                    prop_assert!(cur.balance <= m, "max limits what can be spent");
                }
            }
            let back = with_settings(&cur, &settings(PoolLimit::Limited(max)), 0);
            prop_assert_eq!(back.balance, st.balance, "restoring the file restores the coins");
        }

        #[test]
        fn refill_is_monotone_in_time(max in 1i64..1_000_000_000, refresh in 0i64..1_000_000_000, b in 0i64..1_000_000_000, t1 in 0i64..1_000_000_000, t2 in 0i64..1_000_000_000) {
            let st = limited(max, refresh, b.min(max));
            let (a, z) = (t1.min(t2), t1.max(t2));
            prop_assert!(refilled(&st, a).balance <= refilled(&st, z).balance);
        }
    }
}

#[cfg(test)]
mod busy_pool_tests {
    use super::*;

    #[test]
    fn a_busy_pool_still_earns_its_full_refill() {
        // 0.05 coins per hour, polled every 10 ms for an hour.
        let mut st = PoolState {
            limit: PoolLimit::Limited(100_000_000),
            refresh_micro: 50_000,
            balance: 0,
            refilled_at: 0,
            held: 0,
        };
        let mut now = 0;
        while now < MS_PER_HOUR {
            now += 10;
            st = refilled(&st, now);
        }
        assert!((49_999..=50_000).contains(&st.balance), "{}", st.balance);
    }
}
