//! Coins are integers of micro-coins everywhere except at the edges
//! (YAML, JSON, UI), where they are decimals.

/// Micro-coins in one coin.
pub const MICRO: i64 = 1_000_000;

/// Converts a decimal coin amount to micro-coins, rounding to the nearest
/// micro-coin. `None` for NaN, infinities and amounts beyond `i64`.
pub fn coins_to_micro(coins: f64) -> Option<i64> {
    if !coins.is_finite() {
        return None;
    }
    let micro = (coins * MICRO as f64).round();
    if micro.abs() >= 9.0e18 {
        return None;
    }
    Some(micro as i64)
}

/// Converts micro-coins to a decimal coin amount for display or JSON.
pub fn micro_to_coins(micro: i64) -> f64 {
    micro as f64 / MICRO as f64
}

/// Formats micro-coins as a decimal with no trailing zeros: `500`, `0.05`.
pub fn format_coins(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    let whole = abs / MICRO as u64;
    let frac = abs % MICRO as u64;
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{frac:06}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_at_the_edges() {
        assert_eq!(coins_to_micro(100.0), Some(100 * MICRO));
        assert_eq!(coins_to_micro(0.05), Some(50_000));
        assert_eq!(coins_to_micro(-2.0), Some(-2 * MICRO));
        assert_eq!(coins_to_micro(f64::NAN), None);
        assert_eq!(coins_to_micro(1e30), None);
        assert_eq!(format_coins(500 * MICRO), "500");
        assert_eq!(format_coins(50_000), "0.05");
        assert_eq!(format_coins(1_500_000), "1.5");
        assert_eq!(format_coins(-1), "-0.000001");
        assert_eq!(micro_to_coins(2_500_000), 2.5);
    }
}
