//! Time helpers shared by the domain: everything is whole UTC seconds since
//! the Unix epoch (`i64`), because that is what ClickHouse's `DateTime`
//! stores and it keeps feature arithmetic exact across backends.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Seconds in one day; windows and recencies are expressed in days.
pub const DAY_SECS: i64 = 86_400;

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC, the seed's format), `YYYY-MM-DDTHH:MM:SS`,
/// the same without seconds or with `/` between the date parts, a bare date
/// `YYYY-MM-DD` (midnight UTC), RFC 3339 with any offset, or a space-
/// separated time with an offset (`2010-12-01 08:26:00+01:00`, what many
/// database exports write). Fractions of a second are truncated: the stores
/// keep whole seconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    parse_time_text(text).map(|t| match t {
        ParsedTime::Absolute(secs) => secs,
        ParsedTime::Naive(naive) => naive.and_utc().timestamp(),
    })
}

/// A time read from text: an instant (it carried an offset) or a wall-clock
/// time whose zone the caller decides (`ingest.timezone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedTime {
    Absolute(i64),
    Naive(NaiveDateTime),
}

/// The forms [`parse_timestamp`] reads, plus spreadsheet exports: US
/// `M/D/YYYY H:MM[:SS][ AM|PM]` (what Excel and Google Sheets write, e.g.
/// `12/1/2010 8:26`), `M/D/YYYY`, and European `D.M.YYYY[ H:MM[:SS]]`. A
/// slashed date is month first: a day-first log needs an explicit pattern
/// (`ingest.time_format = "%d/%m/%Y %H:%M"`).
pub fn parse_time_text(text: &str) -> Option<ParsedTime> {
    let text = text.trim();
    if let Some(t) = parse_plain_naive(text.as_bytes()) {
        return Some(ParsedTime::Naive(t));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(ParsedTime::Absolute(t.timestamp()));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(ParsedTime::Absolute(t.timestamp()));
        }
    }
    const NAIVE: [&str; 15] = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y/%m/%d %H:%M",
        "%m/%d/%Y %H:%M:%S%.f",
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y %I:%M:%S %p",
        "%m/%d/%Y %I:%M %p",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%Y%m%dT%H%M%S",
        "%Y%m%d %H%M%S",
        "%Y%m%d%H%M%S",
    ];
    for format in NAIVE {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(ParsedTime::Naive(t));
        }
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(text, format) {
            return d.and_hms_opt(0, 0, 0).map(ParsedTime::Naive);
        }
    }
    None
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), the seed's form and most exports':
/// read by hand because chrono re-interprets a format string per call,
/// which was a third of file ingest's time. Anything else (fractions,
/// offsets, leap seconds) is `None` and takes chrono's path.
#[cfg(test)]
fn parse_plain(b: &[u8]) -> Option<i64> {
    parse_plain_naive(b).map(|t| t.and_utc().timestamp())
}

fn parse_plain_naive(b: &[u8]) -> Option<NaiveDateTime> {
    let shaped = b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':';
    if !shaped {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    date.and_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)
}

/// Formats seconds as RFC 3339 UTC (`2026-01-01T12:00:00Z`).
pub fn format_rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Formats seconds in the seed's `YYYY-MM-DD HH:MM:SS` form.
pub fn format_seed(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// The UTC day number of a timestamp (days since the epoch).
pub fn day_of(secs: i64) -> i64 {
    secs.div_euclid(DAY_SECS)
}

/// Rounds a timestamp down to midnight UTC.
pub fn floor_day(secs: i64) -> i64 {
    day_of(secs) * DAY_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_and_rfc3339_forms_to_the_same_instant() {
        let seed = parse_timestamp("2025-12-26 18:00:00").unwrap();
        for other in [
            "2025-12-26 18:00",
            "2025-12-26T18:00",
            "2025/12/26 18:00:00",
            "2025-12-26 19:00:00+01:00",
            "2025-12-26 18:00:00.250",
        ] {
            assert_eq!(parse_timestamp(other), Some(seed), "{other}");
        }
        assert_eq!(parse_timestamp("2025-12-26T18:00:00Z"), Some(seed));
        assert_eq!(parse_timestamp("2025-12-26T20:00:00+02:00"), Some(seed));
        assert_eq!(parse_timestamp("2025-12-26T18:00:00.999Z"), Some(seed));
        assert_eq!(format_seed(seed), "2025-12-26 18:00:00");
        assert_eq!(format_rfc3339(seed), "2025-12-26T18:00:00Z");
    }

    #[test]
    fn the_hand_parser_agrees_with_chrono_wherever_it_answers() {
        let slow = |t: &str| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S"))
                .ok()
                .map(|t| t.and_utc().timestamp())
        };
        let mut checked = 0;
        for y in [1970, 1999, 2000, 2024, 2100, 9999] {
            for (m, d) in [
                (1, 1),
                (2, 28),
                (2, 29),
                (2, 30),
                (4, 31),
                (12, 31),
                (13, 1),
                (0, 5),
            ] {
                for (h, mi, se) in [(0, 0, 0), (23, 59, 59), (24, 0, 0), (12, 60, 0), (1, 2, 60)] {
                    for sep in [' ', 'T'] {
                        let t = format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{mi:02}:{se:02}");
                        let fast = parse_plain(t.as_bytes());
                        if fast.is_some() {
                            checked += 1;
                        }
                        // Where the fast path declines, chrono decides.
                        assert!(fast.is_none() || fast == slow(&t), "{t}: {fast:?}");
                        assert_eq!(parse_timestamp(&t), slow(&t), "{t}");
                    }
                }
            }
        }
        assert!(checked >= 60, "{checked}");
        for odd in [
            "2025-1-01 00:00:00",
            "2025-01-01 00:00:0x",
            "+2025-01-01 00:00:0",
            "２０２５-01-01 00:00:00",
        ] {
            assert_eq!(parse_plain(odd.as_bytes()), None, "{odd}");
        }
    }

    #[test]
    fn rejects_garbage_and_impossible_dates() {
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2025-02-30 00:00:00"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn day_arithmetic_handles_negative_times() {
        assert_eq!(day_of(-1), -1);
        assert_eq!(floor_day(DAY_SECS + 5), DAY_SECS);
    }
}
