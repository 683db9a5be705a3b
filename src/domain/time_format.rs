//! How event times are read (`ingest.time_format`, `ingest.timezone`): the
//! automatic reading of every common form, or one declared form, with naive
//! wall-clock times placed in a declared IANA zone.
//!
//! `auto` reads numbers by magnitude (epoch seconds below 10^11 — the year
//! 5138 —, milliseconds below 10^14, microseconds below 10^17, nanoseconds
//! beyond: what pandas' `to_json` and most trackers write) and text in every
//! form [`super::time::parse_time_text`] knows. A naive time (no offset) is
//! in `ingest.timezone` (UTC unless set); a time with an offset is that
//! instant whatever the zone. In a daylight-saving change, an ambiguous
//! wall time (the repeated hour) is its first occurrence and a time inside
//! the skipped hour is read with the offset before the change (02:30 on a
//! spring-forward night is 03:30 after it), as pandas' `shift_forward` does.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use super::time::{ParsedTime, parse_time_text};

/// One declared way of writing times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// Every form this module knows (the default).
    Auto,
    /// RFC 3339 / ISO 8601 with an offset (`2010-12-01T08:26:00+01:00`).
    Rfc3339,
    /// Seconds since the epoch (numbers or digit strings; fractions dropped).
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    /// A strftime pattern (`%d/%m/%Y %H:%M`), with or without `%z`.
    Pattern(String),
}

impl TimeFormat {
    /// Reads the setting's text: `auto`, `rfc3339`, `epoch_s`, `epoch_ms`,
    /// `epoch_us`, or a pattern containing `%`.
    ///
    /// # Errors
    /// A message naming the accepted values, or the pattern's fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "auto" => Ok(Self::Auto),
            "rfc3339" | "iso8601" => Ok(Self::Rfc3339),
            "epoch_s" | "epoch" => Ok(Self::EpochSeconds),
            "epoch_ms" => Ok(Self::EpochMillis),
            "epoch_us" => Ok(Self::EpochMicros),
            p if p.contains('%') => {
                let broken = chrono::format::StrftimeItems::new(p)
                    .any(|i| matches!(i, chrono::format::Item::Error));
                if broken {
                    Err(format!("{p:?} is not a valid strftime pattern"))
                } else {
                    Ok(Self::Pattern(p.to_string()))
                }
            }
            other => Err(format!(
                "{other:?} is not a time format: use auto, rfc3339, epoch_s, epoch_ms, epoch_us or a strftime pattern such as \"%d/%m/%Y %H:%M\""
            )),
        }
    }

    /// The setting's text form.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Auto => "auto",
            Self::Rfc3339 => "rfc3339",
            Self::EpochSeconds => "epoch_s",
            Self::EpochMillis => "epoch_ms",
            Self::EpochMicros => "epoch_us",
            Self::Pattern(p) => p,
        }
    }
}

/// Reads an IANA zone name (`Europe/London`); empty or `UTC` is UTC.
///
/// # Errors
/// A message naming the unknown zone.
pub fn parse_timezone(name: &str) -> Result<Option<Tz>, String> {
    match name.trim() {
        "" | "UTC" | "utc" | "Etc/UTC" => Ok(None),
        n => n.parse::<Tz>().map(Some).map_err(|_| {
            format!(
                "{n:?} is not an IANA time zone name (e.g. \"Europe/London\", \"America/New_York\")"
            )
        }),
    }
}

/// Reads times in one format and zone.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeReader {
    format: TimeFormat,
    zone: Option<Tz>,
}

impl Default for TimeReader {
    fn default() -> Self {
        Self::new(TimeFormat::Auto, None)
    }
}

impl TimeReader {
    pub fn new(format: TimeFormat, zone: Option<Tz>) -> Self {
        Self { format, zone }
    }

    pub fn format(&self) -> &TimeFormat {
        &self.format
    }

    pub fn zone_name(&self) -> &str {
        self.zone.as_ref().map_or("UTC", |z| z.name())
    }

    /// A time sent as a JSON number.
    ///
    /// # Errors
    /// A reason naming the expected form.
    pub fn from_number(&self, n: f64) -> Result<i64, String> {
        if !n.is_finite() {
            return Err(format!("{n} is not a time"));
        }
        match &self.format {
            TimeFormat::Auto => Ok(by_magnitude(n)),
            TimeFormat::EpochSeconds => Ok(scaled(n, 1.0)),
            TimeFormat::EpochMillis => Ok(scaled(n, 1e3)),
            TimeFormat::EpochMicros => Ok(scaled(n, 1e6)),
            TimeFormat::Rfc3339 => Err(format!(
                "{n} is a number, but ingest.time_format = \"rfc3339\" expects text"
            )),
            // A pattern of digits (`%Y%m%d`) may meet a numeric cell.
            TimeFormat::Pattern(_) if n.fract() == 0.0 => self.from_text(&format!("{n:.0}")),
            TimeFormat::Pattern(p) => Err(format!(
                "{n} is a number, but ingest.time_format is the pattern {p:?}"
            )),
        }
    }

    /// A time sent as text.
    ///
    /// # Errors
    /// A reason naming the expected form (and the setting to change).
    pub fn from_text(&self, text: &str) -> Result<i64, String> {
        let t = text.trim();
        let numeric = !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && t.bytes().filter(|b| *b == b'.').count() <= 1;
        match &self.format {
            TimeFormat::Auto => {
                if numeric && let Ok(n) = t.parse::<f64>() {
                    return Ok(by_magnitude(n));
                }
                parse_time_text(t)
                    .map(|p| self.place(p))
                    .ok_or_else(|| {
                        format!(
                            "{t:?} is not a time ingest.time_format = \"auto\" reads (ISO 8601 / RFC 3339, \
                             'YYYY-MM-DD HH:MM:SS', M/D/YYYY H:MM, epoch numbers); set ingest.time_format \
                             to a pattern such as \"%d/%m/%Y %H:%M\""
                        )
                    })
            }
            TimeFormat::EpochSeconds | TimeFormat::EpochMillis | TimeFormat::EpochMicros => {
                match t.parse::<f64>() {
                    Ok(n) if numeric => self.from_number(n),
                    _ => Err(format!(
                        "{t:?} is not a number, but ingest.time_format = \"{}\"",
                        self.format.as_str()
                    )),
                }
            }
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp())
                .map_err(|e| {
                    format!("{t:?} is not RFC 3339 ({e}), as ingest.time_format = \"rfc3339\" asks")
                }),
            TimeFormat::Pattern(p) => {
                if let Ok(d) = DateTime::parse_from_str(t, p) {
                    return Ok(d.timestamp());
                }
                if let Ok(n) = NaiveDateTime::parse_from_str(t, p) {
                    return Ok(self.place(ParsedTime::Naive(n)));
                }
                if let Ok(d) = chrono::NaiveDate::parse_from_str(t, p)
                    && let Some(n) = d.and_hms_opt(0, 0, 0)
                {
                    return Ok(self.place(ParsedTime::Naive(n)));
                }
                Err(format!("{t:?} does not match ingest.time_format = {p:?}"))
            }
        }
    }

    /// An instant as it is; a wall-clock time in the reader's zone.
    fn place(&self, t: ParsedTime) -> i64 {
        match t {
            ParsedTime::Absolute(s) => s,
            ParsedTime::Naive(n) => match &self.zone {
                None => n.and_utc().timestamp(),
                Some(zone) => localize(n, zone),
            },
        }
    }
}

/// A wall-clock time in `zone` as UTC seconds (DST rules in the module doc).
pub fn localize(naive: NaiveDateTime, zone: &Tz) -> i64 {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.timestamp(),
        LocalResult::Ambiguous(first, _) => first.timestamp(),
        LocalResult::None => {
            // Inside a skipped hour: the offset in force before the jump
            // (gaps last at most a few hours; half a day before is safely
            // on the other side).
            let before = zone
                .offset_from_utc_datetime(&(naive - Duration::hours(12)))
                .fix()
                .local_minus_utc();
            (naive - Duration::seconds(i64::from(before)))
                .and_utc()
                .timestamp()
        }
    }
}

fn scaled(n: f64, per_second: f64) -> i64 {
    (n / per_second).floor() as i64
}

fn by_magnitude(n: f64) -> i64 {
    let a = n.abs();
    if a < 1e11 {
        scaled(n, 1.0)
    } else if a < 1e14 {
        scaled(n, 1e3)
    } else if a < 1e17 {
        scaled(n, 1e6)
    } else {
        scaled(n, 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_291_191_960; // 2010-12-01 08:26:00 UTC

    fn auto() -> TimeReader {
        TimeReader::default()
    }

    #[test]
    fn auto_reads_epoch_numbers_of_every_unit() {
        let r = auto();
        for n in [T as f64, T as f64 * 1e3, T as f64 * 1e6, T as f64 * 1e9] {
            assert_eq!(r.from_number(n), Ok(T), "{n}");
        }
        assert_eq!(r.from_text("1291191960000"), Ok(T));
        assert_eq!(r.from_text("1291191960.75"), Ok(T));
    }

    #[test]
    fn auto_reads_spreadsheet_and_iso_forms() {
        let r = auto();
        for text in [
            "12/1/2010 8:26",
            "12/01/2010 08:26:00",
            "12/1/2010 8:26:00 AM",
            "2010-12-01 08:26:00",
            "2010-12-01T08:26:00Z",
            "2010-12-01T09:26:00+01:00",
            "1.12.2010 8:26",
            "20101201T082600",
        ] {
            assert_eq!(r.from_text(text), Ok(T), "{text}");
        }
        assert_eq!(r.from_text("12/1/2010"), Ok(T - (8 * 3600 + 26 * 60)));
        let e = r.from_text("13/1/2010 8:26").unwrap_err();
        assert!(e.contains("ingest.time_format"), "{e}");
    }

    #[test]
    fn declared_formats_read_only_their_form() {
        let ms = TimeReader::new(TimeFormat::parse("epoch_ms").unwrap(), None);
        assert_eq!(ms.from_number(T as f64 * 1e3), Ok(T));
        assert!(ms.from_text("2010-12-01").is_err());
        let us = TimeReader::new(TimeFormat::parse("epoch_us").unwrap(), None);
        assert_eq!(us.from_text("1291191960000000"), Ok(T));
        let day_first = TimeReader::new(TimeFormat::parse("%d/%m/%Y %H:%M").unwrap(), None);
        assert_eq!(day_first.from_text("01/12/2010 08:26"), Ok(T));
        assert!(day_first.from_text("2010-12-01 08:26").is_err());
        let compact = TimeReader::new(TimeFormat::parse("%Y%m%d").unwrap(), None);
        assert_eq!(compact.from_number(20_101_201.0), Ok(T - 30_360));
        let rfc = TimeReader::new(TimeFormat::Rfc3339, None);
        assert!(rfc.from_text("2010-12-01 08:26:00").is_err());
        assert!(TimeFormat::parse("%Q").is_err());
        assert!(TimeFormat::parse("sometimes").is_err());
    }

    #[test]
    fn naive_times_are_placed_in_the_zone_across_dst() {
        let london = parse_timezone("Europe/London").unwrap();
        let r = TimeReader::new(TimeFormat::Auto, london);
        // Winter: GMT = UTC; summer: BST = UTC+1.
        assert_eq!(r.from_text("2010-12-01 08:26:00"), Ok(T));
        let summer = auto().from_text("2011-07-01 12:00:00").unwrap();
        assert_eq!(r.from_text("2011-07-01 12:00:00"), Ok(summer - 3600));
        // Offsets win over the zone.
        assert_eq!(r.from_text("2011-07-01T12:00:00Z"), Ok(summer));
        // 2011-03-27 01:30 does not exist in London: read with GMT.
        let gap = auto().from_text("2011-03-27 01:30:00").unwrap();
        assert_eq!(r.from_text("2011-03-27 01:30:00"), Ok(gap));
        // 2011-10-30 01:30 happens twice: the first (BST) one.
        let twice = auto().from_text("2011-10-30 01:30:00").unwrap();
        assert_eq!(r.from_text("2011-10-30 01:30:00"), Ok(twice - 3600));
        // Epoch numbers are instants: no zone applies.
        assert_eq!(r.from_number(T as f64), Ok(T));
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert_eq!(parse_timezone("UTC"), Ok(None));
    }
}
