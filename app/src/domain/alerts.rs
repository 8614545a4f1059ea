//! Budget alerts: when a pool's spending crosses a threshold of its `max`,
//! which thresholds fire and which re-arm, and how often a failed webhook
//! delivery is retried. Pure rules; `ssr::alerts` stores the state and the
//! outbox, the server's `alerts` task sends.
//!
//! The state of one pool is one number, the highest threshold that has
//! fired and not re-armed since (0: none). Thresholds at or below it count
//! as fired. A threshold fires once when the pool's spending reaches it, and
//! re-arms once the pool has refilled to clearly below it again (by
//! [`rearm_margin`] points), so a pool hovering at 80 % does not alert on
//! every call and every refill tick, but alerts again in its next cycle.

use serde::{Deserialize, Serialize};

/// Thresholds when `alerts.thresholds` is omitted: percentages of `max` used.
pub const DEFAULT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// At most this many webhook targets.
pub const MAX_WEBHOOKS: usize = 10;

/// A delivery is tried at most this many times, then marked failed.
pub const MAX_ATTEMPTS: i64 = 10;

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY_MS: i64 = 300_000;

/// Percentage points a pool must fall below a threshold before it re-arms:
/// 5, or half the threshold for thresholds under 10.
pub fn rearm_margin(threshold: u8) -> u8 {
    (threshold / 2).min(5)
}

/// Coins of a limited pool used: `max` less what is left, counting what
/// gateway instances hold on lease and have not spent. Within `0..=max`.
pub fn used_micro(max: i64, balance: i64, leased: i64) -> i64 {
    let left = balance.saturating_add(leased);
    max.saturating_sub(left).clamp(0, max.max(0))
}

/// Whether `used` of `max` is at least `percent` %.
fn reached(used: i64, max: i64, percent: u8) -> bool {
    i128::from(used) * 100 >= i128::from(percent) * i128::from(max)
}

/// Whether `used` is far enough below `threshold` for it to fire again.
fn rearmed(used: i64, max: i64, threshold: u8) -> bool {
    let floor = threshold.saturating_sub(rearm_margin(threshold));
    i128::from(used) * 100 < i128::from(floor) * i128::from(max)
}

/// What one look at a pool decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Thresholds crossed since the last look, lowest first: one alert each.
    pub fire: Vec<u8>,
    /// The new state: the highest threshold fired and not re-armed (0: none).
    pub fired: u8,
}

impl Step {
    /// Whether the stored state must change.
    pub fn changes(&self, old: u8) -> bool {
        self.fired != old
    }
}

/// Given the sorted `thresholds`, the pool's state `fired` and `used` of
/// `max` micro-coins now: the alerts to send and the new state. A pool
/// without a positive `max` is not watched (`max <= 0` keeps the state).
pub fn step(thresholds: &[u8], fired: u8, used: i64, max: i64) -> Step {
    if max <= 0 {
        return Step {
            fire: Vec::new(),
            fired,
        };
    }
    let used = used.clamp(0, max);
    let top = thresholds
        .iter()
        .copied()
        .filter(|&t| reached(used, max, t))
        .max()
        .unwrap_or(0);
    if top > fired {
        let fire = thresholds
            .iter()
            .copied()
            .filter(|&t| t > fired && t <= top)
            .collect();
        return Step { fire, fired: top };
    }
    // Nothing new reached: thresholds the pool has refilled clearly below
    // re-arm. The margin grows with the threshold, so what stays fired is
    // always every threshold up to some highest one.
    let still = thresholds
        .iter()
        .copied()
        .filter(|&t| t <= fired && !rearmed(used, max, t))
        .max()
        .unwrap_or(0);
    Step {
        fire: Vec::new(),
        fired: still,
    }
}

/// How long to wait after failed attempt number `attempts` (1 for the
/// first): `base`, doubling each time, at most [`MAX_RETRY_DELAY_MS`].
pub fn retry_delay_ms(attempts: i64, base_ms: i64) -> i64 {
    let doublings = u32::try_from((attempts - 1).clamp(0, 30)).unwrap_or(30);
    base_ms
        .max(1)
        .saturating_mul(1i64 << doublings)
        .min(MAX_RETRY_DELAY_MS)
}

/// Whether a delivery that has had `attempts` tries gets another.
pub fn retries_left(attempts: i64) -> bool {
    attempts < MAX_ATTEMPTS
}

/// Checks `alerts.thresholds`: whole percentages from 1 to 100, each once,
/// in ascending order, at least one.
pub fn check_thresholds(list: &[u8]) -> Result<(), String> {
    if list.is_empty() {
        return Err("give at least one threshold, or omit `thresholds` for 50, 80 and 100".into());
    }
    for pair in list.windows(2) {
        if pair[0] == pair[1] {
            return Err(format!("threshold {} is given twice", pair[0]));
        }
        if pair[0] > pair[1] {
            return Err(format!(
                "thresholds must be in ascending order ({} comes before {})",
                pair[0], pair[1]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: [u8; 3] = DEFAULT_THRESHOLDS;

    /// Replays `used` values (of max 1000) from a fresh pool: alerts in order.
    fn replay(thresholds: &[u8], used: &[i64]) -> Vec<u8> {
        let mut fired = 0;
        let mut out = Vec::new();
        for &u in used {
            let s = step(thresholds, fired, u, 1000);
            out.extend(&s.fire);
            fired = s.fired;
        }
        out
    }

    #[test]
    fn each_threshold_fires_once_as_spending_rises() {
        assert_eq!(replay(&T, &[0, 100, 499]), Vec::<u8>::new());
        assert_eq!(
            replay(&T, &[0, 500, 600, 799, 800, 999, 1000, 1000]),
            [50, 80, 100]
        );
        // One look past several thresholds fires each of them.
        assert_eq!(replay(&T, &[0, 850]), [50, 80]);
        assert_eq!(replay(&T, &[1000]), [50, 80, 100]);
    }

    #[test]
    fn a_threshold_re_arms_only_clearly_below_it() {
        // Hovering around 80 %: no second alert.
        assert_eq!(replay(&T, &[800, 799, 760, 801, 751, 800]), [50, 80]);
        // Refilled to below 75 %: 80 fires again, 50 does not.
        assert_eq!(replay(&T, &[800, 749, 800]), [50, 80, 80]);
        // A full refill re-arms everything.
        assert_eq!(replay(&T, &[1000, 0, 1000]), [50, 80, 100, 50, 80, 100]);
        let s = step(&T, 100, 940, 1000);
        assert_eq!((s.fire.len(), s.fired), (0, 80));
        let s = step(&T, 100, 949, 1000);
        assert_eq!(s.fired, 80);
        assert!(!s.changes(80));
    }

    #[test]
    fn small_thresholds_have_small_margins() {
        assert_eq!(rearm_margin(1), 0);
        assert_eq!(rearm_margin(4), 2);
        assert_eq!(rearm_margin(50), 5);
        // With no margin, 1 % re-arms as soon as the pool is below it.
        assert_eq!(replay(&[1], &[10, 9, 10]), [1, 1]);
    }

    #[test]
    fn pools_without_a_positive_max_are_not_watched() {
        assert_eq!(
            step(&T, 80, 5, 0),
            Step {
                fire: vec![],
                fired: 80
            }
        );
        assert_eq!(step(&T, 0, 5, -2).fire, Vec::<u8>::new());
    }

    #[test]
    fn a_state_from_other_thresholds_is_read_as_a_percentage() {
        // Thresholds changed by a reload from 50/80/100 to 60/90.
        let s = step(&[60, 90], 80, 850, 1000);
        assert_eq!(
            s,
            Step {
                fire: vec![],
                fired: 60
            }
        );
        let s = step(&[60, 90], 60, 900, 1000);
        assert_eq!(s.fire, [90]);
    }

    #[test]
    fn used_counts_leases_and_stays_within_max() {
        assert_eq!(used_micro(100, 30, 20), 50);
        assert_eq!(used_micro(100, 100, 20), 0);
        assert_eq!(used_micro(100, 0, 0), 100);
        assert_eq!(used_micro(i64::MAX, i64::MAX, i64::MAX), 0);
        assert_eq!(used_micro(100, -5, 0), 100);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let delays: Vec<i64> = (1..=5).map(|a| retry_delay_ms(a, 1000)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000]);
        assert_eq!(retry_delay_ms(40, 1000), MAX_RETRY_DELAY_MS);
        assert_eq!(retry_delay_ms(i64::MAX, i64::MAX), MAX_RETRY_DELAY_MS);
        assert_eq!(retry_delay_ms(0, -3), 1);
        assert!(retries_left(MAX_ATTEMPTS - 1) && !retries_left(MAX_ATTEMPTS));
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(check_thresholds(&T).is_ok());
        assert!(check_thresholds(&[1]).is_ok());
        assert!(check_thresholds(&[]).unwrap_err().contains("at least one"));
        assert!(check_thresholds(&[50, 50]).unwrap_err().contains("twice"));
        assert!(check_thresholds(&[80, 50])
            .unwrap_err()
            .contains("ascending"));
    }

    fn thresholds() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::btree_set(1u8..=100, 1..6).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// Whatever the spending does: the state is 0 or a threshold; every
        /// threshold reached is fired after the look; and between two
        /// alerts for one threshold the pool was clearly below it.
        #[test]
        fn alerts_fire_once_per_crossing(
            ts in thresholds(),
            used in proptest::collection::vec(0i64..=1000, 1..60),
        ) {
            let mut fired = 0u8;
            let mut armed_since: Vec<bool> = vec![true; ts.len()];
            for &u in &used {
                let s = step(&ts, fired, u, 1000);
                prop_assert!(s.fired == 0 || ts.contains(&s.fired));
                for (i, &t) in ts.iter().enumerate() {
                    if reached(u, 1000, t) {
                        prop_assert!(s.fired >= t);
                    }
                    if s.fire.contains(&t) {
                        prop_assert!(armed_since[i], "threshold {t} fired twice in one cycle");
                        armed_since[i] = false;
                    }
                    if rearmed(u, 1000, t) {
                        armed_since[i] = true;
                    }
                }
                fired = s.fired;
            }
        }

        /// Spending that only rises fires each threshold it reaches once.
        #[test]
        fn rising_spending_fires_each_reached_threshold_once(
            ts in thresholds(),
            mut used in proptest::collection::vec(0i64..=1000, 1..30),
        ) {
            used.sort_unstable();
            let top = *used.last().unwrap_or(&0);
            let want: Vec<u8> = ts.iter().copied().filter(|&t| reached(top, 1000, t)).collect();
            prop_assert_eq!(replay(&ts, &used), want);
        }

        #[test]
        fn used_is_within_max(max in 0i64..i64::MAX, b in any::<i64>(), l in 0i64..i64::MAX) {
            let u = used_micro(max, b, l);
            prop_assert!((0..=max).contains(&u));
        }
    }
}
