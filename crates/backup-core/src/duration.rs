//! Durations as people write them in config files and on the command line.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// A duration as people write it: `24h`, `30m`, `1d`, `1h30m` (jiff's
/// friendly format; a day is 24 hours). `None` for anything else, or a
/// negative one.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(backup_core::duration::parse("1h30m"), Some(Duration::from_secs(5400)));
/// assert_eq!(backup_core::duration::parse("1d"), Some(Duration::from_secs(86_400)));
/// assert_eq!(backup_core::duration::parse("soon"), None);
/// ```
pub fn parse(text: &str) -> Option<Duration> {
    let span: jiff::Span = text.trim().parse().ok()?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .ok()?;
    Duration::try_from(d).ok()
}

/// Serde: a duration string, through [`parse`].
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).ok_or_else(|| D::Error::custom(format!("{text:?} is not a duration like \"2h\"")))
}

/// Serde: an optional duration string, through [`parse`].
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

/// A duration for people: `3h 12m 5s`, `2d 4h`, `45s`, `1s 250ms`.
pub fn human(d: Duration) -> String {
    // Tenths of a second matter only for short things (a restore's phases).
    let smallest = if d < Duration::from_secs(10) {
        jiff::Unit::Millisecond
    } else {
        jiff::Unit::Second
    };
    let span = jiff::Span::try_from(d)
        .and_then(|s| {
            s.round(
                jiff::SpanRound::new()
                    .largest(jiff::Unit::Day)
                    .smallest(smallest)
                    .days_are_24_hours(),
            )
        })
        .unwrap_or_default();
    format!("{span:#}")
}
