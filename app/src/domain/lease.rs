//! How much of a pool one gateway instance may hold as a budget lease.
//!
//! An instance takes coins from a pool durably, in a chunk, and then admits
//! calls against that chunk in memory, so a call does not wait for a disk
//! commit on its way upstream. The chunk is a trade-off: bigger means fewer
//! commits, but a crash charges whatever the lease still holds, and coins in
//! one instance's lease cannot serve another instance. So chunks are a few
//! dozen calls' worth, never more than half of what the pool has, and a pool
//! that is nearly empty is leased call by call, exactly, so that every coin in
//! it can still be spent by whichever instance gets the call.

use super::config::PoolLimit;

/// A chunk covers this many calls of the size that asked for it (more when
/// more calls are in flight).
pub const CHUNK_CALLS: i64 = 32;

/// Below this many calls' worth of coins, a pool is leased call by call.
pub const LOW_WATER_CALLS: i64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Take `amount` from the pool. `exact` means the pool is nearly empty:
    /// the lease covers only the call that asked, and goes back when it ends.
    Take {
        amount: i64,
        exact: bool,
    },
    /// The pool cannot cover `needed`; it holds `available`.
    Insufficient {
        available: i64,
    },
    Blocked,
}

/// What an instance asks for when `per_call` is the estimate of the call
/// that needs coins and `in_flight` calls are already running on the pool.
pub fn wanted(per_call: i64, in_flight: u32) -> i64 {
    per_call.saturating_mul(CHUNK_CALLS.max(2 * i64::from(in_flight)))
}

/// How much to take from a pool that holds `available` (after refill) when a
/// call of `per_call` lacks `needed` and the instance would like `want`.
/// Unlimited pools are never debited; their lease only bounds what a crash
/// could leave unrecorded.
pub fn grant(limit: PoolLimit, available: i64, needed: i64, per_call: i64, want: i64) -> Grant {
    let needed = needed.max(0);
    match limit {
        PoolLimit::Limited(0) => Grant::Blocked,
        PoolLimit::Unlimited => Grant::Take {
            amount: want.max(needed),
            exact: false,
        },
        PoolLimit::Limited(_) if available < needed => Grant::Insufficient { available },
        PoolLimit::Limited(_) if available >= per_call.saturating_mul(LOW_WATER_CALLS) => {
            Grant::Take {
                amount: want.min(available / 2).max(needed),
                exact: false,
            }
        }
        PoolLimit::Limited(_) => Grant::Take {
            amount: needed,
            exact: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_pool_gives_a_chunk_and_a_nearly_empty_one_gives_exactly() {
        let l = PoolLimit::Limited(1_000_000);
        assert_eq!(
            grant(l, 1_000_000, 100, 100, wanted(100, 0)),
            Grant::Take {
                amount: 3_200,
                exact: false
            }
        );
        assert_eq!(
            grant(l, 6_000, 100, 100, 3_200),
            Grant::Take {
                amount: 100,
                exact: true
            }
        );
        assert_eq!(
            grant(l, 50, 100, 100, 3_200),
            Grant::Insufficient { available: 50 }
        );
        assert_eq!(grant(PoolLimit::Limited(0), 0, 1, 1, 1), Grant::Blocked);
        assert_eq!(
            grant(PoolLimit::Unlimited, 0, 100, 100, 3_200),
            Grant::Take {
                amount: 3_200,
                exact: false
            }
        );
        assert_eq!(wanted(10, 40), 800, "more calls in flight, bigger chunk");
    }

    proptest! {
        #[test]
        fn a_grant_never_exceeds_the_pool_and_always_covers_the_call(
            max in 1i64..1_000_000_000,
            available in 0i64..1_000_000_000,
            per_call in 0i64..10_000_000,
            short in 0i64..10_000_000,
            in_flight in 0u32..1000,
        ) {
            let available = available.min(max);
            let needed = short.min(per_call);
            match grant(PoolLimit::Limited(max), available, needed, per_call, wanted(per_call, in_flight)) {
                Grant::Take { amount, exact } => {
                    prop_assert!(amount >= needed);
                    prop_assert!(amount <= available);
                    if !exact && needed > 0 {
                        prop_assert!(amount <= available / 2 || amount == needed);
                    }
                }
                Grant::Insufficient { available: a } => prop_assert!(a < needed),
                Grant::Blocked => prop_assert!(false, "only max 0 is blocked"),
            }
        }
    }
}
