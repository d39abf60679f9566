//! Timestamps in and out of the API: RFC 3339 parsing, and fast RFC 3339 formatting with the
//! UTC offset of an IANA time zone (millisecond precision).
//!
//! Formatting millions of CSV rows must not cost a time-zone lookup each: [`TzFormat`] keeps
//! the offset together with the span between the time zone's transitions around it, so a
//! lookup happens only when a row crosses a transition (a DST change) or jumps outside it.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Parses an API timestamp: RFC 3339 with an offset (`2025-11-25T15:30:00Z`,
/// `2025-11-25T16:30:00.250+01:00`), or integer milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty timestamp".into());
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map_err(|e| format!("{text:?}: {e}"))
            .and_then(|ms| {
                Timestamp::from_millisecond(ms)
                    .map(|_| ms)
                    .map_err(|e| format!("{text:?}: {e}"))
            });
    }
    let ts: Timestamp = text.parse().map_err(|e: jiff::Error| {
        format!(
            "{text:?} is not an RFC 3339 timestamp with an offset (e.g. 2025-11-25T15:30:00Z): {e}"
        )
    })?;
    Ok(ts.as_millisecond())
}

/// Looks up an IANA time zone name (`Europe/Berlin`); `UTC`, `Z` and the empty string are UTC.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" | "utc" | "Z" | "Etc/UTC" => Ok(TimeZone::UTC),
        _ => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}")),
    }
}

/// RFC 3339 in UTC with milliseconds (`2025-11-25T15:30:00.200Z`).
pub fn rfc3339_utc(ts_ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_local(&mut out, ts_ms, 0);
    out
}

/// Formats timestamps in one time zone, caching the offset between transitions.
#[derive(Debug, Clone)]
pub struct TzFormat {
    tz: TimeZone,
    utc: bool,
    /// `[from, until)` in ms and the offset in seconds (whole minutes) valid there.
    cache: Option<(i64, i64, i32)>,
}

impl TzFormat {
    /// A formatter for `tz`.
    pub fn new(tz: TimeZone) -> TzFormat {
        let utc = tz == TimeZone::UTC;
        TzFormat {
            tz,
            utc,
            cache: None,
        }
    }

    /// UTC, written with `Z`.
    pub fn utc() -> TzFormat {
        TzFormat::new(TimeZone::UTC)
    }

    /// The time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The UTC offset at `ts_ms`, in seconds, truncated to whole minutes (RFC 3339 offsets have
    /// no seconds; local time is computed with the same offset, so the instant stays exact).
    pub fn offset_s(&mut self, ts_ms: i64) -> i32 {
        if self.utc {
            return 0;
        }
        if let Some((from, until, offset)) = self.cache {
            if ts_ms >= from && ts_ms < until {
                return offset;
            }
        }
        let Ok(ts) = Timestamp::from_millisecond(ts_ms) else {
            return 0;
        };
        let offset = self.tz.to_offset(ts).seconds();
        let offset = offset - offset % 60;
        let from = self
            .tz
            .preceding(
                ts.checked_add(jiff::SignedDuration::from_millis(1))
                    .unwrap_or(ts),
            )
            .next()
            .map(|t| t.timestamp().as_millisecond())
            .unwrap_or(i64::MIN);
        let until = self
            .tz
            .following(ts)
            .next()
            .map(|t| t.timestamp().as_millisecond())
            .unwrap_or(i64::MAX);
        self.cache = Some((from, until, offset));
        offset
    }

    /// Appends `ts_ms` as RFC 3339 with this zone's offset and milliseconds.
    pub fn write(&mut self, out: &mut String, ts_ms: i64) {
        let offset = self.offset_s(ts_ms);
        write_local(out, ts_ms, offset);
    }

    /// `ts_ms` as RFC 3339 with this zone's offset.
    pub fn format(&mut self, ts_ms: i64) -> String {
        let mut out = String::with_capacity(29);
        self.write(&mut out, ts_ms);
        out
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

fn push2(out: &mut String, v: u32) {
    out.push((b'0' + (v / 10) as u8) as char);
    out.push((b'0' + (v % 10) as u8) as char);
}

fn write_local(out: &mut String, ts_ms: i64, offset_s: i32) {
    let local = ts_ms.saturating_add(offset_s as i64 * 1000);
    let days = local.div_euclid(86_400_000);
    let ms_of_day = local.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        let _ = write!(out, "{y:+05}");
    }
    out.push('-');
    push2(out, m);
    out.push('-');
    push2(out, d);
    out.push('T');
    let secs = (ms_of_day / 1000) as u32;
    push2(out, secs / 3600);
    out.push(':');
    push2(out, secs / 60 % 60);
    out.push(':');
    push2(out, secs % 60);
    out.push('.');
    let ms = (ms_of_day % 1000) as u32;
    out.push((b'0' + (ms / 100) as u8) as char);
    push2(out, ms % 100);
    if offset_s == 0 {
        out.push('Z');
    } else {
        out.push(if offset_s < 0 { '-' } else { '+' });
        let a = offset_s.unsigned_abs() / 60;
        push2(out, a / 60);
        out.push(':');
        push2(out, a % 60);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_proto() {
        for ms in [
            0,
            1_764_084_600_200,
            -1,
            951_782_400_000,
            253_402_300_799_999,
        ] {
            assert_eq!(rfc3339_utc(ms), pmon_proto::state::rfc3339_ms(ms), "{ms}");
        }
    }

    #[test]
    fn berlin_across_dst() {
        let mut f = TzFormat::new(time_zone("Europe/Berlin").unwrap());
        // 2025-03-30 01:59:59.999Z is 03:59:59.999+02:00; one ms before is 02:59:59.998+01:00?
        // No: the change is at 01:00Z (02:00 CET -> 03:00 CEST).
        let change = parse_time("2025-03-30T01:00:00Z").unwrap();
        assert_eq!(f.format(change - 1), "2025-03-30T01:59:59.999+01:00");
        assert_eq!(f.format(change), "2025-03-30T03:00:00.000+02:00");
        let back = parse_time("2025-10-26T01:00:00Z").unwrap();
        assert_eq!(f.format(back - 1), "2025-10-26T02:59:59.999+02:00");
        assert_eq!(f.format(back), "2025-10-26T02:00:00.000+01:00");
        // Random access agrees with jiff.
        for ms in (0..200).map(|i| 1_700_000_000_000i64 + i * 7_777_777_777 % 99_999_999_999) {
            let ours = f.format(ms);
            let ts = Timestamp::from_millisecond(ms).unwrap();
            let theirs = ts.to_zoned_datetime(f.time_zone().clone());
            assert_eq!(parse_time(&ours).unwrap(), ms);
            assert_eq!(
                &ours[..23],
                theirs.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string()
            );
        }
    }

    #[test]
    fn the_ends_of_the_time_range_do_not_panic() {
        let mut f = TzFormat::new(time_zone("Europe/Berlin").unwrap());
        for ms in [
            i64::MIN,
            i64::MAX,
            Timestamp::MAX.as_millisecond(),
            Timestamp::MIN.as_millisecond(),
        ] {
            let _ = f.format(ms);
            let _ = rfc3339_utc(ms);
        }
    }

    #[test]
    fn parse_accepts_offsets_and_millis_and_rejects_junk() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T01:00:01.5+01:00").unwrap(), 1500);
        assert_eq!(parse_time("1234").unwrap(), 1234);
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-01-01T00:00:00",
            "99999999999999999999",
            "-",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(time_zone("Europe/Berlin").is_ok());
    }
}
