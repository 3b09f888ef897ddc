//! Schedule intervals as people write them: `4h`, `30m`, `90s`, `1d`, `1h30m`.

use std::time::Duration;

use crate::settings::UsageError;

/// Parse an interval: one or more `<number><unit>` with units `d`, `h`,
/// `m`, `s`. Zero and anything else is a usage error.
pub fn parse(text: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "interval {text:?} is not valid: use a number and a unit, e.g. 4h, 30m, 90s, 1d or 1h30m"
        ))
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        parts += 1;
    }
    if !digits.is_empty() || parts == 0 {
        return Err(bad());
    }
    if total == 0 {
        return Err(UsageError(format!(
            "interval {text:?} must be longer than 0s"
        )));
    }
    Ok(Duration::from_secs(total))
}

/// The shortest spelling of a whole number of seconds: `4h`, `1h30m`, `90s` → `1m30s`.
pub fn format(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("4h").unwrap(), Duration::from_secs(14_400));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5_400));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "4",
            "h",
            "4x",
            "-4h",
            "0s",
            "0h0m",
            "4 h",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format(Duration::from_secs(14_400)), "4h");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(86_400 + 60)), "1d1m");
    }
}
