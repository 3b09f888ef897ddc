//! Schedule intervals as people write them: `4h`, `30m`, `90s`, `1d`, `1h30m`.

use std::time::Duration;

use crate::settings::UsageError;

/// Parse an interval: `4h`, `30m`, `90s`, `1d`, `1h30m` (jiff's friendly
/// duration format; a day is 24 hours). Zero, negative and anything else is
/// a usage error.
pub fn parse(text: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "interval {text:?} is not valid: use a number and a unit, e.g. 4h, 30m, 90s, 1d or 1h30m"
        ))
    };
    let d = backup_config::parse_duration(text).ok_or_else(bad)?;
    if d.is_zero() {
        return Err(UsageError(format!(
            "interval {text:?} must be longer than 0s"
        )));
    }
    Ok(d)
}

/// The compact spelling systemd and people both read: `4h`, `1h30m`, `1d1m`.
pub fn format(d: Duration) -> String {
    let span = jiff::Span::try_from(d)
        .and_then(|s| {
            s.round(
                jiff::SpanRound::new()
                    .largest(jiff::Unit::Day)
                    .days_are_24_hours(),
            )
        })
        .unwrap_or_default();
    jiff::fmt::friendly::SpanPrinter::new()
        .spacing(jiff::fmt::friendly::Spacing::None)
        .span_to_string(&span)
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
