//! Go `time.RFC3339Nano` timestamps in UTC, as c/storage writes them in the
//! `created` fields.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Splits a time into whole seconds since the epoch (floored, so negative
/// before 1970) and nanoseconds in `0..1e9`.
fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nanos = d.subsec_nanos();
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            (secs, nanos)
        }
    }
}

/// The proleptic Gregorian (year, month, day) of a day number counted from
/// 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day and month are in small ranges; the casts cannot truncate.
    (year, month as u32, day as u32)
}

/// The day number counted from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Whole seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.5Z`): the fraction
/// dropped, the time read as UTC (c/storage writes `Z`). `None` when it is not one.
pub fn rfc3339_seconds(t: &str) -> Option<i64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut h = time.get(..8)?.split(':');
    let (hh, mm, ss) = (num(h.next()?)?, num(h.next()?)?, num(h.next()?)?);
    Some(days_from_civil(year, month, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Formats `t` the way Go's `t.UTC().Format(time.RFC3339Nano)` does, e.g.
/// `"2024-01-02T03:04:05.12345Z"`: trailing zeros of the fraction are
/// trimmed and the fraction is left out when it is zero.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let (secs, nanos) = split(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(32);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(nanos.into())
        }
    }

    #[test]
    fn known_times() {
        // Expected values from `date -u -d @SECS`.
        let cases: &[(i64, u32, &str)] = &[
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, 500_000_000, "2023-11-14T22:13:20.5Z"),
            (1_700_000_000, 0, "2023-11-14T22:13:20Z"),
            (1_700_000_000, 1, "2023-11-14T22:13:20.000000001Z"),
            (1_700_000_000, 123_450_000, "2023-11-14T22:13:20.12345Z"),
            // Leap days.
            (1_709_208_000, 0, "2024-02-29T12:00:00Z"),
            (951_868_799, 999_999_999, "2000-02-29T23:59:59.999999999Z"),
            // 2100 is not a leap year.
            (4_107_542_400, 0, "2100-03-01T00:00:00Z"),
            // Before the epoch.
            (-1, 0, "1969-12-31T23:59:59Z"),
            (-1, 250_000_000, "1969-12-31T23:59:59.25Z"),
            (-2_208_988_800, 0, "1900-01-01T00:00:00Z"),
        ];
        for (secs, nanos, want) in cases {
            assert_eq!(rfc3339_nano(at(*secs, *nanos)), *want, "{secs}.{nanos}");
        }
    }

    #[test]
    fn seconds_of_known_times() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20.5Z"),
            (1_709_208_000, "2024-02-29T12:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (-2_208_988_800, "1900-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_seconds(text), Some(secs), "{text}");
            if !text.contains('.') {
                assert_eq!(rfc3339_nano(at(secs, 0)), text);
            }
        }
        assert_eq!(rfc3339_seconds("yesterday"), None);
    }

    #[test]
    fn now_looks_right() {
        let s = crate::now_rfc3339_nano();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], "T");
        assert!(s.as_str() > "2024-01-01", "{s}");
    }
}
