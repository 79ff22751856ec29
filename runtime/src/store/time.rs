//! Capture times: Unix milliseconds now, and their UTC rendering (the
//! calendar is `jiff`'s, already linked through `env_logger`).

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A Unix millisecond time as UTC `YYYY-MM-DDTHH:MM:SSZ` (milliseconds
/// dropped). A time after the year 9999, which RFC 3339 cannot write (only a
/// damaged or hand-made store holds one), is given as `<ms> ms since the Unix epoch`.
pub fn rfc3339(ms: u64) -> String {
    match i64::try_from(ms / 1000).ok().and_then(|s| jiff::Timestamp::from_second(s).ok()) {
        Some(t) => format!("{t:.0}"),
        None => format!("{ms} ms since the Unix epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_910_400_000), "2026-11-29T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_661_000), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn milliseconds_are_dropped_and_far_futures_do_not_panic() {
        assert_eq!(rfc3339(1_999), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(253_402_128_000_999), "9999-12-30T00:00:00Z");
        assert_eq!(rfc3339(u64::MAX), "18446744073709551615 ms since the Unix epoch");
        let now = rfc3339(unix_ms());
        assert!(now.len() == 20 && now.ends_with('Z'), "{now}");
    }
}
