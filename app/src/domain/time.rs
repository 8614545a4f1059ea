//! Formatting Unix-millisecond times, and reading durations, without a date library.

/// `2026-11-28T07:33:42.123Z` for Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// `2026-11-28 07:33 UTC`, for pages.
pub fn short(ms: i64) -> String {
    let full = rfc3339(ms);
    format!("{} {} UTC", &full[..10], &full[11..16])
}

pub const DAY_MS: i64 = 86_400_000;

/// Parses a duration such as a key's lifetime into milliseconds: `30d`,
/// `12h`, `45m` or `90s`; a bare number counts days (`30` is `30d`). Zero,
/// negative, fractional and overflowing values are refused.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit_ms) = match s.char_indices().last()? {
        (i, 'd') => (&s[..i], DAY_MS),
        (i, 'h') => (&s[..i], 3_600_000),
        (i, 'm') => (&s[..i], 60_000),
        (i, 's') => (&s[..i], 1_000),
        _ => (s, DAY_MS),
    };
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    n.checked_mul(unit_ms)
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days from 1970-01-01 to 9999-12-31: the dates a date field may name.
pub const LAST_DAY: i64 = 2_932_896;

/// `YYYY-MM-DD` for a day number.
pub fn day_label(day: i64) -> String {
    rfc3339(day * DAY_MS)[..10].to_string()
}

/// The day number of a `YYYY-MM-DD` date between 1970 and 9999, if it is one.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    // A day that does not exist (31 April) comes back as another date.
    (0..=LAST_DAY)
        .contains(&day)
        .then_some(day)
        .filter(|&n| day_label(n) == s)
}

// Howard Hinnant's days-from-civil algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_851_222_123),
            "2026-11-28T07:33:42.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::short(1_795_851_222_123), "2026-11-28 07:33 UTC");
    }

    #[test]
    fn durations() {
        use super::{parse_duration_ms as p, DAY_MS};
        for (text, ms) in [
            ("30d", Some(30 * DAY_MS)),
            (" 30 ", Some(30 * DAY_MS)),
            ("12h", Some(12 * 3_600_000)),
            ("45m", Some(45 * 60_000)),
            ("90s", Some(90_000)),
            ("0", None),
            ("0d", None),
            ("-1d", None),
            ("1.5", None),
            ("d", None),
            ("", None),
            ("30w", None),
            ("30 d", None),
            ("9999999999999999d", None),
        ] {
            assert_eq!(p(text), ms, "{text:?}");
        }
    }

    #[test]
    fn days_parse_and_print_back() {
        use super::{day_label, parse_day, LAST_DAY};
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-11-29"), Some(20_786));
        assert_eq!(day_label(20_786), "2026-11-29");
        assert_eq!(parse_day("2000-02-29"), Some(11_016));
        assert_eq!(parse_day("9999-12-31"), Some(LAST_DAY));
        for bad in [
            "",
            "2026-1-01",
            "2026-13-01",
            "2026-02-30",
            "2026-04-31",
            "1969-12-31",
            "+026-01-01",
            "2026-01-0a",
            "2026/01/01",
            "2026-01-01T",
            " 2026-01-01",
            "२०२६-01-01",
        ] {
            assert_eq!(parse_day(bad), None, "{bad:?}");
        }
    }
}
