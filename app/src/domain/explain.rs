//! A ledger row's charge as a sum the console shows: one line per kind of
//! token and the request fee, their total, and why the coins the pool paid
//! differ from that total when they do.
//!
//! ```text
//! input 800 tok = 2
//! cached input 200 tok = 0.25
//! output 50 tok (20 reasoning) = 0.5
//! request fee = 0.01
//! total = 2.76
//! ```

use super::money::format_coins;
use super::outcome::CallOutcome;
use super::pricing::Breakdown;
use super::usage::Usage;

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What was priced: `input 800 tok`, `request fee`.
    pub what: String,
    pub micro: i64,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.what, format_coins(self.micro))
    }
}

/// What a ledger row recorded besides its usage and lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The true cost (`cost_micro`).
    pub cost: i64,
    /// How far the cost exceeded the reservation (`overage_micro`).
    pub overage: i64,
    /// What the pool paid (`coins_micro`).
    pub coins: i64,
    /// How the call ended; `None` for a code this build does not know.
    pub code: Option<CallOutcome>,
}

/// A charge explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Input and output always; the other lines only when they are not zero.
    pub lines: Vec<Line>,
    /// The sum of `lines`.
    pub total: i64,
    /// What the pool paid.
    pub charged: i64,
    /// Why `charged` is not `total`, and anything else worth knowing.
    pub notes: Vec<String>,
}

impl Explanation {
    /// Whether the pool paid something other than the sum of the lines.
    pub fn differs(&self) -> bool {
        self.charged != self.total
    }

    /// `total = 2.76`
    pub fn total_text(&self) -> String {
        format!("total = {}", format_coins(self.total))
    }

    /// `charged = 1.5`
    pub fn charged_text(&self) -> String {
        format!("charged = {}", format_coins(self.charged))
    }
}

fn tok(n: u64) -> String {
    format!("{n} tok")
}

/// The price lines of a charge; zero lines other than input and output are left out.
pub fn lines(u: &Usage, b: &Breakdown) -> Vec<Line> {
    let output = if u.reasoning > 0 {
        format!("output {} ({} reasoning)", tok(u.output), u.reasoning)
    } else {
        format!("output {}", tok(u.output))
    };
    let all = [
        (true, format!("input {}", tok(u.input)), b.input),
        (
            u.cached_input > 0,
            format!("cached input {}", tok(u.cached_input)),
            b.cached_input,
        ),
        (
            u.cache_write > 0,
            format!("cache write {}", tok(u.cache_write)),
            b.cache_write,
        ),
        (true, output, b.output),
        (false, "request fee".to_string(), b.request),
    ];
    all.into_iter()
        .filter(|(always, _, micro)| *always || *micro != 0)
        .map(|(_, what, micro)| Line { what, micro })
        .collect()
}

/// Explains a ledger row's charge.
pub fn explain(u: &Usage, b: &Breakdown, r: Recorded) -> Explanation {
    let lines = lines(u, b);
    let total = lines.iter().fold(0i64, |s, l| s.saturating_add(l.micro));
    Explanation {
        notes: notes(total, r),
        lines,
        total,
        charged: r.coins,
    }
}

/// Why the coins charged are what they are, when the lines alone do not say.
fn notes(total: i64, r: Recorded) -> Vec<String> {
    let c = format_coins;
    let mut notes = Vec::new();
    match r.code {
        Some(CallOutcome::Refused) => {
            notes.push("refused before anything went upstream: nothing charged".into());
        }
        Some(CallOutcome::Abandoned) => notes.push(format!(
            "the caller left before the reply, so the reservation ({}) was charged",
            c(r.coins)
        )),
        Some(CallOutcome::OrphanedLease) => notes.push(format!(
            "no call: a lease whose holder stopped, charged in full ({})",
            c(r.coins)
        )),
        Some(CallOutcome::OkWithoutUsage) => {
            notes.push("the upstream reported no usage: the tokens are an estimate".into());
        }
        _ if r.cost != total => notes.push(format!(
            "recorded before charges were kept line by line; its cost was {}",
            c(r.cost)
        )),
        _ => {}
    }
    let charged_elsewhere = matches!(
        r.code,
        Some(CallOutcome::Abandoned | CallOutcome::OrphanedLease)
    );
    if r.overage > 0 {
        notes.push(format!(
            "the cost went {} over what was reserved",
            c(r.overage)
        ));
    }
    if !charged_elsewhere && r.coins < r.cost {
        let why = if r.overage > 0 {
            "the overage the pool could not cover"
        } else {
            "see the outcome"
        };
        notes.push(format!(
            "charged {}: {} less than the cost ({why})",
            c(r.coins),
            c(r.cost - r.coins)
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pricing::Price;

    fn price() -> Price {
        Price {
            input_micro: 2_500_000,
            output_micro: 10_000_000,
            request_micro: 10_000,
            cached_input_micro: 1_250_000,
            cache_write_micro: 3_000_000,
        }
    }

    fn ok(cost: i64) -> Recorded {
        Recorded {
            cost,
            overage: 0,
            coins: cost,
            code: Some(CallOutcome::Ok),
        }
    }

    fn texts(e: &Explanation) -> Vec<String> {
        e.lines.iter().map(Line::to_string).collect()
    }

    #[test]
    fn a_charge_reads_as_a_sum() {
        let u = Usage {
            input: 800,
            cached_input: 200,
            cache_write: 0,
            output: 50,
            reasoning: 20,
        };
        let b = price().charge(&u);
        let e = explain(&u, &b, ok(b.total()));
        assert_eq!(
            texts(&e),
            [
                "input 800 tok = 2",
                "cached input 200 tok = 0.25",
                "output 50 tok (20 reasoning) = 0.5",
                "request fee = 0.01",
            ]
        );
        assert_eq!(e.total_text(), "total = 2.76");
        assert!(!e.differs());
        assert!(e.notes.is_empty(), "{:?}", e.notes);
    }

    #[test]
    fn the_lines_sum_to_the_total_whatever_the_usage() {
        let p = price();
        for (input, cached_input, cache_write, output, reasoning) in [
            (0, 0, 0, 0, 0),
            (1, 0, 0, 1, 0),
            (999, 1, 1, 999, 998),
            (0, 5000, 0, 7, 0),
            (3, 0, 4096, 1, 1),
            (123_457, 98_765, 4321, 17, 3),
        ] {
            let u = Usage {
                input,
                cached_input,
                cache_write,
                output,
                reasoning,
            };
            let b = p.charge(&u);
            let e = explain(&u, &b, ok(b.total()));
            assert_eq!(e.total, b.total(), "{u:?}");
            assert_eq!(e.lines.iter().map(|l| l.micro).sum::<i64>(), e.total);
            assert!(!e.differs() && e.notes.is_empty(), "{u:?}: {e:?}");
            assert_eq!(e.lines[0].what, format!("input {input} tok"));
            assert!(e.lines.iter().any(|l| l.what.starts_with("output ")));
        }
    }

    #[test]
    fn zero_lines_are_left_out_except_input_and_output() {
        let e = explain(&Usage::default(), &Breakdown::default(), ok(0));
        assert_eq!(texts(&e), ["input 0 tok = 0", "output 0 tok = 0"]);
        let u = Usage {
            cache_write: 10,
            ..Usage::default()
        };
        let b = price().charge(&u);
        assert_eq!(
            texts(&explain(&u, &b, ok(b.total())))[1],
            "cache write 10 tok = 0.03"
        );
    }

    #[test]
    fn says_why_the_coins_charged_differ_from_the_sum() {
        let u = Usage {
            input: 1000,
            output: 1000,
            ..Usage::default()
        };
        let b = price().charge(&u);
        let total = b.total();
        assert_eq!(total, 12_510_000);

        // Over the reservation by 2.51, of which the pool covered 1.
        let e = explain(
            &u,
            &b,
            Recorded {
                cost: total,
                overage: 2_510_000,
                coins: total - 1_510_000,
                code: Some(CallOutcome::Ok),
            },
        );
        assert!(e.differs());
        assert_eq!(e.charged_text(), "charged = 11");
        assert_eq!(
            e.notes,
            [
                "the cost went 2.51 over what was reserved",
                "charged 11: 1.51 less than the cost (the overage the pool could not cover)",
            ]
        );

        // The caller left: no usage is known, the reservation is charged.
        let e = explain(
            &Usage::default(),
            &Breakdown::default(),
            Recorded {
                cost: 4_000_000,
                overage: 0,
                coins: 4_000_000,
                code: Some(CallOutcome::Abandoned),
            },
        );
        assert_eq!((e.total, e.charged), (0, 4_000_000));
        assert_eq!(
            e.notes,
            ["the caller left before the reply, so the reservation (4) was charged"]
        );

        let refused = Recorded {
            cost: 0,
            overage: 0,
            coins: 0,
            code: Some(CallOutcome::Refused),
        };
        let e = explain(&Usage::default(), &Breakdown::default(), refused);
        assert!(!e.differs());
        assert_eq!(
            e.notes,
            ["refused before anything went upstream: nothing charged"]
        );

        let orphan = Recorded {
            cost: 7_000_000,
            overage: 0,
            coins: 7_000_000,
            code: Some(CallOutcome::OrphanedLease),
        };
        let e = explain(&Usage::default(), &Breakdown::default(), orphan);
        assert_eq!(
            e.notes,
            ["no call: a lease whose holder stopped, charged in full (7)"]
        );
    }

    #[test]
    fn rows_from_before_the_breakdown_say_so() {
        let u = Usage {
            input: 10,
            output: 5,
            ..Usage::default()
        };
        let e = explain(&u, &Breakdown::default(), ok(90_000));
        assert_eq!(e.total, 0);
        assert_eq!(
            e.notes,
            ["recorded before charges were kept line by line; its cost was 0.09"]
        );
    }
}
