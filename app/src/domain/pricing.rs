//! Model prices and cost arithmetic, in micro-coins.
//!
//! A charge is a sum of lines (input, cached input, cache write, output,
//! request fee), each rounded up on its own, so the line-by-line explanation
//! the UI shows adds up to exactly what was charged.

use super::usage::Usage;
use serde::{Deserialize, Serialize};

/// Micro-coins per 1,000 tokens of each kind, and per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_micro: i64,
    pub output_micro: i64,
    pub request_micro: i64,
    /// Cached prompt tokens; the config defaults it to the input price.
    pub cached_input_micro: i64,
    /// Prompt tokens written to the cache; defaults to the input price.
    pub cache_write_micro: i64,
}

/// What one call cost, line by line, in micro-coins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    /// Output, reasoning included.
    pub output: i64,
    pub request: i64,
}

impl Breakdown {
    pub fn total(&self) -> i64 {
        let sum = self.input as i128
            + self.cached_input as i128
            + self.cache_write as i128
            + self.output as i128
            + self.request as i128;
        sum.clamp(0, i64::MAX as i128) as i64
    }
}

fn per_thousand(tokens: u64, micro_per_1k: i64) -> i64 {
    // Round up: a partial thousand is charged pro rata, never for free.
    let product = tokens as i128 * micro_per_1k.max(0) as i128;
    ((product + 999) / 1000).min(i64::MAX as i128) as i64
}

impl Price {
    /// A price with one rate for every kind of input token.
    pub fn simple(input_micro: i64, output_micro: i64, request_micro: i64) -> Price {
        Price {
            input_micro,
            output_micro,
            request_micro,
            cached_input_micro: input_micro,
            cache_write_micro: input_micro,
        }
    }

    /// What a call with this usage costs, line by line.
    pub fn charge(&self, u: &Usage) -> Breakdown {
        Breakdown {
            input: per_thousand(u.input, self.input_micro),
            cached_input: per_thousand(u.cached_input, self.cached_input_micro),
            cache_write: per_thousand(u.cache_write, self.cache_write_micro),
            output: per_thousand(u.output, self.output_micro),
            request: self.request_micro.max(0),
        }
    }

    /// The cost of plain input and output tokens.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> i64 {
        self.charge(&Usage {
            input: tokens_in,
            output: tokens_out,
            ..Usage::default()
        })
        .total()
    }

    /// The most a call with at most this many input and output tokens can
    /// cost, whichever way the provider splits the input between fresh,
    /// cached and cache-written tokens.
    pub fn worst(&self, tokens_in: u64, tokens_out: u64) -> i64 {
        let dearest = self
            .input_micro
            .max(self.cached_input_micro)
            .max(self.cache_write_micro);
        Price {
            input_micro: dearest,
            ..*self
        }
        .cost(tokens_in, tokens_out)
    }

    pub fn is_free(&self) -> bool {
        self.input_micro == 0
            && self.output_micro == 0
            && self.request_micro == 0
            && self.cached_input_micro == 0
            && self.cache_write_micro == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs() {
        let p = Price::simple(2_500_000, 10_000_000, 0);
        assert_eq!(p.cost(1000, 1000), 12_500_000);
        assert_eq!(p.cost(1, 0), 2_500);
        assert_eq!(p.cost(0, 0), 0);
        let tiny = Price::simple(1, 1, 7);
        assert_eq!(tiny.cost(1, 1), 9, "partial thousands round up");
        assert!(Price::default().is_free());
        assert_eq!(Price::simple(i64::MAX, 0, 0).cost(u64::MAX, 0), i64::MAX);
    }

    #[test]
    fn lines_add_up_and_the_worst_case_covers_every_split() {
        let p = Price {
            input_micro: 1000,
            output_micro: 4000,
            request_micro: 5,
            cached_input_micro: 100,
            cache_write_micro: 1250,
        };
        let u = Usage {
            input: 10,
            cached_input: 1000,
            cache_write: 3,
            output: 7,
            reasoning: 5,
        };
        let b = p.charge(&u);
        assert_eq!(
            b,
            Breakdown {
                input: 10,
                cached_input: 100,
                cache_write: 4,
                output: 28,
                request: 5
            }
        );
        assert_eq!(b.total(), 147);
        for split in [(1013, 0, 0), (0, 1013, 0), (0, 0, 1013), (13, 500, 500)] {
            let u = Usage {
                input: split.0,
                cached_input: split.1,
                cache_write: split.2,
                output: 7,
                reasoning: 0,
            };
            assert!(p.charge(&u).total() <= p.worst(1013, 7), "{split:?}");
        }
    }
}
