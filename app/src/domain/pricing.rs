//! Model prices and cost arithmetic, in micro-coins.

use serde::{Deserialize, Serialize};

/// Micro-coins per 1,000 input tokens, per 1,000 output tokens, and per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_micro: i64,
    pub output_micro: i64,
    pub request_micro: i64,
}

fn per_thousand(tokens: u64, micro_per_1k: i64) -> i128 {
    // Round up: a partial thousand is charged pro rata, never for free.
    let product = tokens as i128 * micro_per_1k as i128;
    (product + 999) / 1000
}

impl Price {
    /// The cost of a call with these token counts.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> i64 {
        let total = self.request_micro as i128
            + per_thousand(tokens_in, self.input_micro)
            + per_thousand(tokens_out, self.output_micro);
        total.clamp(0, i64::MAX as i128) as i64
    }

    pub fn is_free(&self) -> bool {
        self.input_micro == 0 && self.output_micro == 0 && self.request_micro == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs() {
        let p = Price {
            input_micro: 2_500_000,
            output_micro: 10_000_000,
            request_micro: 0,
        };
        assert_eq!(p.cost(1000, 1000), 12_500_000);
        assert_eq!(p.cost(1, 0), 2_500);
        assert_eq!(p.cost(0, 0), 0);
        let tiny = Price {
            input_micro: 1,
            output_micro: 1,
            request_micro: 7,
        };
        assert_eq!(tiny.cost(1, 1), 9, "partial thousands round up");
        assert!(Price::default().is_free());
        assert_eq!(
            Price {
                input_micro: i64::MAX,
                ..Price::default()
            }
            .cost(u64::MAX, 0),
            i64::MAX
        );
    }
}
