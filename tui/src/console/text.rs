//! How numbers, money, times and ages are written on screen.

use orders_core::{Cents, Timestamp};
use std::time::Duration;

/// `s` in at most `width` characters: whole, or cut with an ellipsis that says so.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else if width == 0 {
        String::new()
    } else {
        s.chars().take(width - 1).chain(['…']).collect()
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Signed [`thousands`].
pub fn thousands_i(n: i64) -> String {
    if n < 0 {
        format!("-{}", thousands(n.unsigned_abs()))
    } else {
        thousands(n.unsigned_abs())
    }
}

/// `Cents(123456)` → `$1,234.56`.
pub fn money(c: Cents) -> String {
    let sign = if c.0 < 0 { "-" } else { "" };
    let abs = c.0.unsigned_abs();
    format!("{sign}${}.{:02}", thousands(abs / 100), abs % 100)
}

/// A count in at most six characters: `999`, `12,345`, `123.4k`, `12.3M`.
pub fn compact(n: i64) -> String {
    let abs = n.unsigned_abs();
    let sign = if n < 0 { "-" } else { "" };
    if abs < 100_000 {
        thousands_i(n)
    } else if abs < 10_000_000 {
        format!("{sign}{:.1}k", abs as f64 / 1e3)
    } else if abs < 10_000_000_000 {
        format!("{sign}{:.1}M", abs as f64 / 1e6)
    } else {
        format!("{sign}{:.1}G", abs as f64 / 1e9)
    }
}

/// A share 0..1 as a percentage: `0.0123` → `1.2%`.
pub fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.1}%", share * 100.0)
    } else {
        "-".to_owned()
    }
}

/// Orders per second.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1000.0 {
        format!("{}/s", thousands(per_sec.round() as u64))
    } else {
        format!("{per_sec:.1}/s")
    }
}

/// Seconds behind: `0.4s`, `12s`, `3m04s`, `2h05m`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".to_owned();
    }
    if s < 10.0 {
        return format!("{s:.1}s");
    }
    age(Duration::from_secs_f64(s))
}

/// How long ago, to the second: `0s`, `42s`, `3m04s`, `2h05m`, `3d04h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Milliseconds between two instants of the pipeline: `+12 ms`, `+1.2 s`, `-3 ms`.
pub fn delta(from: Timestamp, to: Timestamp) -> String {
    let us = to.micros() - from.micros();
    let sign = if us < 0 { "-" } else { "+" };
    let abs = us.unsigned_abs();
    if abs < 10_000_000 {
        format!("{sign}{} ms", thousands(abs / 1000))
    } else {
        format!("{sign}{}", age(Duration::from_micros(abs)))
    }
}

/// `10:30:00` (UTC).
pub fn time_of_day(t: &Timestamp) -> String {
    t.0.format("%H:%M:%S").to_string()
}

/// `10:30:00.123` (UTC).
pub fn time_of_day_ms(t: &Timestamp) -> String {
    t.0.format("%H:%M:%S%.3f").to_string()
}

/// `2024-01-15 10:30:00.123` (UTC).
pub fn date_time_ms(t: &Timestamp) -> String {
    t.0.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("3@121", 5), "3@121");
        assert_eq!(fit("3@121", 3), "3@…");
        assert_eq!(fit("3@121", 1), "…");
        assert_eq!(fit("3@121", 0), "");
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands_i(-1234), "-1,234");
        assert_eq!(money(Cents(308625000)), "$3,086,250.00");
        assert_eq!(money(Cents(5)), "$0.05");
        assert_eq!(money(Cents(-150)), "-$1.50");
        assert_eq!(compact(99_999), "99,999");
        assert_eq!(compact(123_456), "123.5k");
        assert_eq!(compact(12_345_678), "12.3M");
        assert_eq!(percent(0.0123), "1.2%");
        assert_eq!(rate(4.94), "4.9/s");
        assert_eq!(rate(12345.6), "12,346/s");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds(0.44), "0.4s");
        assert_eq!(seconds(42.0), "42s");
        assert_eq!(seconds(184.0), "3m04s");
        assert_eq!(seconds(f64::NAN), "-");
        assert_eq!(age(Duration::from_secs(7500)), "2h05m");
        assert_eq!(age(Duration::from_secs(100_000)), "1d03h");
        let t0: Timestamp = "2024-01-15T10:30:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-15T10:30:00.012Z".parse().unwrap();
        assert_eq!(delta(t0, t1), "+12 ms");
        assert_eq!(delta(t1, t0), "-12 ms");
        assert_eq!(time_of_day(&t1), "10:30:00");
        assert_eq!(date_time_ms(&t1), "2024-01-15 10:30:00.012");
    }
}
