//! The usage explorer's rules: a bounded range of UTC days, how spend is
//! grouped, the top groups of a stacked chart, the keyset cursor of the
//! drill-down, and coins in CSV (cells: `domain::text`).

use super::time::{parse_day, DAY_MS};
use serde::{Deserialize, Serialize};

/// The longest range the explorer reads, in days.
pub const MAX_DAYS: i64 = 400;
/// The range shown when none is given, ending today.
pub const DEFAULT_DAYS: i64 = 30;
/// Groups the chart stacks one by one; the rest are summed as "other".
pub const CHART_GROUPS: usize = 8;
/// Rows of the top spenders table.
pub const TOP_SPENDERS: usize = 20;
/// Calls per drill-down page.
pub const CALLS_PAGE: u64 = 50;

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    Client,
    User,
    Model,
}

impl Grouping {
    pub const ALL: [Grouping; 3] = [Grouping::Client, Grouping::User, Grouping::Model];

    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::Client => "client",
            Grouping::User => "user",
            Grouping::Model => "model",
        }
    }

    /// An empty value is the default, by client.
    pub fn parse(s: &str) -> Option<Grouping> {
        match s {
            "" | "client" => Some(Grouping::Client),
            "user" => Some(Grouping::User),
            "model" => Some(Grouping::Model),
            _ => None,
        }
    }
}

/// UTC days `from..=to`, as days since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRange {
    pub from: i64,
    pub to: i64,
}

impl DayRange {
    /// `from` and `to` as `YYYY-MM-DD`; either may be empty: `to` is then
    /// today and `from` the 30 days ending at `to`. Refuses a malformed
    /// date, `to` before `from`, and more than [`MAX_DAYS`] days.
    pub fn parse(from: &str, to: &str, today: i64) -> Result<DayRange, String> {
        let day = |s: &str, what: &str| {
            parse_day(s.trim()).ok_or_else(|| format!("The {what} date must be YYYY-MM-DD."))
        };
        let to = if to.trim().is_empty() {
            today
        } else {
            day(to, "end")?
        };
        let from = if from.trim().is_empty() {
            to - (DEFAULT_DAYS - 1)
        } else {
            day(from, "start")?
        };
        if to < from {
            return Err("The end date is before the start date.".into());
        }
        if to - from + 1 > MAX_DAYS {
            return Err(format!("Choose at most {MAX_DAYS} days."));
        }
        Ok(DayRange { from, to })
    }

    pub fn days(self) -> i64 {
        self.to - self.from + 1
    }

    /// The first millisecond of the range.
    pub fn start_ms(self) -> i64 {
        self.from * DAY_MS
    }

    /// The first millisecond after the range.
    pub fn end_ms(self) -> i64 {
        (self.to + 1) * DAY_MS
    }
}

/// The groups to draw one by one: the `n` that spent the most coins over
/// the range (ties by key), given each group's total. Groups that spent
/// nothing are left out.
pub fn top_groups<K: Clone + Ord>(totals: &[(K, i64)], n: usize) -> Vec<K> {
    let mut v: Vec<&(K, i64)> = totals.iter().filter(|(_, c)| *c > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().take(n).map(|(k, _)| k.clone()).collect()
}

/// Where a drill-down page continues: before this row, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: i64,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        let (a, b) = s.split_once('.')?;
        let created_at: i64 = a.parse().ok().filter(|v| *v >= 0)?;
        let id: i64 = b.parse().ok().filter(|v| *v >= 0)?;
        Some(Cursor { created_at, id })
    }

    pub fn text(self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }
}

/// Micro-coins as a decimal number of coins, exactly (`1.5`, `-0.000001`).
pub fn csv_coins(micro: i64) -> String {
    super::money::format_coins(micro)
}

/// Text for HTML or SVG markup written as a string.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounded() {
        let today = 20_786;
        assert_eq!(
            DayRange::parse("", "", today),
            Ok(DayRange {
                from: today - 29,
                to: today
            })
        );
        let r = DayRange::parse("2026-11-01", "2026-11-29", today).unwrap();
        assert_eq!(r.days(), 29);
        assert_eq!(r.end_ms() - r.start_ms(), 29 * DAY_MS);
        assert!(DayRange::parse("2026-11-29", "2026-11-01", today).is_err());
        assert!(DayRange::parse("2020-01-01", "2026-11-29", today).is_err());
        assert!(DayRange::parse("2025-10-26", "2026-11-29", today).is_ok()); // 400 days
        assert!(DayRange::parse("2025-10-25", "2026-11-29", today).is_err());
        assert!(DayRange::parse("x", "", today).is_err());
        assert!(DayRange::parse("", "9999-12-31", today).is_ok());
    }

    #[test]
    fn top_groups_by_coins_then_key() {
        let totals = vec![("b", 5), ("a", 5), ("c", 9), ("z", 0), ("d", 1)];
        assert_eq!(top_groups(&totals, 3), vec!["c", "a", "b"]);
        assert_eq!(top_groups(&totals, 10), vec!["c", "a", "b", "d"]);
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            created_at: 1_795_851_222_123,
            id: 42,
        };
        assert_eq!(Cursor::parse(&c.text()), Some(c));
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "-1.2",
            "1.-2",
            "a.b",
            "1.2.3",
            "99999999999999999999.1",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn coins_in_csv_are_exact() {
        assert_eq!(csv_coins(1_500_000), "1.5");
    }

    #[test]
    fn markup_and_addresses_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
