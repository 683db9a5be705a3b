//! User events: the validated [`Event`] type, its parser from the seed's JSON
//! shape, and its identity (used by every store to make redelivery harmless).
//!
//! Parsing is "parse, don't validate": the only way to get an [`Event`] is
//! through [`Event::new`] or [`parse_event_json`], so every `Event` in the
//! system already satisfies the rules below.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::time::parse_timestamp;

/// Longest accepted `event_type`, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Longest accepted `session_id`, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Default earliest accepted event time, 1980-01-01 (`ingest.min_event_time`):
/// historic logs pass, epoch 0 and seconds read as milliseconds do not.
pub const DEFAULT_MIN_EVENT_TIME: i64 = 315_532_800;
/// Numeric times above this (year 5138) are milliseconds sent as seconds.
const MAX_EPOCH_SECONDS: f64 = 1e11;

/// The stored form of an event type: trimmed, inner whitespace as `_`,
/// lowercase ("Add To Cart" → "add_to_cart"). Specs and churn definitions
/// name types through the same function, so they match what is stored.
pub fn canonical_type(t: &str) -> String {
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_lowercase()
}

/// Why an event was refused; each variant names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The input is not a JSON object at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A required field is absent or null.
    #[error("{0}: missing")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl EventError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The field the error is about (`"json"` for unparsable input).
    pub fn field(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "json",
            Self::Missing(f) => f,
            Self::Invalid { field, .. } => field,
        }
    }
}

/// The time bounds an event must fall into; "now" comes from the caller so
/// validation stays pure and testable.
#[derive(Debug, Clone, Copy)]
pub struct TimePolicy {
    /// Current time, seconds since the epoch.
    pub now: i64,
    /// How far in the future an event may be stamped (clock skew allowance).
    pub max_future_secs: i64,
    /// Earliest accepted event time (seconds).
    pub min_time: i64,
}

impl TimePolicy {
    /// `now` with the default earliest time.
    pub fn at(now: i64, max_future_secs: i64) -> Self {
        Self {
            now,
            max_future_secs,
            min_time: DEFAULT_MIN_EVENT_TIME,
        }
    }
}

/// One validated user event. Times are whole UTC seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    user_id: u64,
    event_time: i64,
    event_type: String,
    session_id: Option<String>,
    amount: Option<f64>,
}

impl Event {
    /// Builds an event, applying every validation rule.
    ///
    /// # Errors
    /// [`EventError::Invalid`] naming the first field that breaks a rule.
    pub fn new(
        user_id: u64,
        event_time: i64,
        event_type: &str,
        session_id: Option<&str>,
        amount: Option<f64>,
        policy: TimePolicy,
    ) -> Result<Self, EventError> {
        // SQLite and ClickHouse both index user ids as signed 64-bit.
        if user_id > i64::MAX as u64 {
            return Err(EventError::invalid("user_id", "larger than 2^63-1"));
        }
        if event_time < policy.min_time {
            return Err(EventError::invalid(
                "event_time",
                format!(
                    "before {} (ingest.min_event_time): probably a clock or unit error",
                    super::time::format_rfc3339(policy.min_time)
                ),
            ));
        }
        if event_time > policy.now + policy.max_future_secs {
            return Err(EventError::invalid(
                "event_time",
                format!(
                    "{} s in the future (allowed skew {} s)",
                    event_time - policy.now,
                    policy.max_future_secs
                ),
            ));
        }
        // "Add To Cart" and "add to cart" are one type: add_to_cart.
        let joined: String;
        let event_type = event_type.trim();
        let event_type = if event_type.contains(char::is_whitespace) {
            joined = event_type.split_whitespace().collect::<Vec<_>>().join("_");
            joined.as_str()
        } else {
            event_type
        };
        if event_type.is_empty() {
            return Err(EventError::invalid("event_type", "empty"));
        }
        if event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(EventError::invalid(
                "event_type",
                format!("longer than {MAX_EVENT_TYPE_LEN} bytes"),
            ));
        }
        if !event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(EventError::invalid(
                "event_type",
                "only ASCII letters, digits, '_', '-' and '.' are allowed",
            ));
        }
        let session_id = match session_id.map(str::trim) {
            None | Some("") => None,
            Some(s) if s.len() > MAX_SESSION_ID_LEN => {
                return Err(EventError::invalid(
                    "session_id",
                    format!("longer than {MAX_SESSION_ID_LEN} bytes"),
                ));
            }
            Some(s) => Some(s.to_string()),
        };
        if let Some(a) = amount {
            if !a.is_finite() {
                return Err(EventError::invalid("amount", "not a finite number"));
            }
            if a < 0.0 {
                return Err(EventError::invalid("amount", "negative"));
            }
        }
        Ok(Self {
            user_id,
            event_time,
            event_type: event_type.to_ascii_lowercase(),
            session_id,
            amount,
        })
    }

    pub fn user_id(&self) -> u64 {
        self.user_id
    }
    pub fn event_time(&self) -> i64 {
        self.event_time
    }
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    pub fn amount(&self) -> Option<f64> {
        self.amount
    }

    /// The event's identity: the first 8 bytes of SHA-256 over all fields in
    /// a canonical form, as a signed integer (what both stores index).
    ///
    /// Two deliveries of the same event share an id, so stores can ignore the
    /// second. 64 bits keep indexes small; the chance of two *different*
    /// events colliding stays below 1e-5 up to a billion events per user-day
    /// key range, and a collision would only drop one event.
    pub fn event_id(&self) -> i64 {
        let mut h = Sha256::new();
        h.update(self.user_id.to_le_bytes());
        h.update(self.event_time.to_le_bytes());
        h.update(self.event_type.as_bytes());
        h.update([0x1f]);
        match &self.session_id {
            Some(s) => {
                h.update([1]);
                h.update(s.as_bytes());
            }
            None => h.update([0]),
        }
        h.update([0x1f]);
        match self.amount {
            // Normalise -0.0 so that equal amounts hash equally.
            Some(a) => {
                h.update([1]);
                h.update((a + 0.0).to_bits().to_le_bytes());
            }
            None => h.update([0]),
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_le_bytes(first)
    }

    /// The event in the seed's JSON shape (what the generator and the
    /// dead-letter paths write).
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("user_id".into(), self.user_id.into());
        obj.insert(
            "event_time".into(),
            super::time::format_seed(self.event_time).into(),
        );
        obj.insert("event_type".into(), self.event_type.clone().into());
        if let Some(s) = &self.session_id {
            obj.insert("session_id".into(), s.clone().into());
        }
        if let Some(a) = self.amount {
            obj.insert("amount".into(), a.into());
        }
        Value::Object(obj)
    }
}

/// The wire shape before validation. Every field is a loose `Value` so that
/// a wrong type produces a message naming the field instead of serde's
/// generic "invalid type at column 17". Unknown fields are ignored.
#[derive(Deserialize)]
struct RawEvent {
    user_id: Option<Value>,
    event_time: Option<Value>,
    event_type: Option<Value>,
    session_id: Option<Value>,
    amount: Option<Value>,
}

/// Parses one JSON object in the seed's shape into a validated [`Event`].
///
/// # Errors
/// [`EventError`] naming the field and the reason.
pub fn parse_event_json(input: &[u8], policy: TimePolicy) -> Result<Event, EventError> {
    let raw: RawEvent = serde_json::from_slice(input).map_err(|e| {
        // serde reports "invalid type: ..., expected struct RawEvent" for
        // non-objects: say it plainly.
        if e.is_data() && e.to_string().starts_with("duplicate field") {
            // One key twice: which value is meant is unknowable.
            EventError::MalformedJson(e.to_string().replace("duplicate field", "duplicate key"))
        } else if e.is_data() {
            EventError::MalformedJson("expected a JSON object".into())
        } else {
            EventError::MalformedJson(e.to_string())
        }
    })?;
    event_from_raw(raw, policy)
}

fn event_from_raw(raw: RawEvent, policy: TimePolicy) -> Result<Event, EventError> {
    let user_id = match raw.user_id {
        None | Some(Value::Null) => return Err(EventError::Missing("user_id")),
        // Exports through float columns write ids as 17850.0: an integral
        // float is the integer.
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().and_then(integral_id))
            .ok_or_else(|| {
                EventError::invalid(
                    "user_id",
                    format!("expected a non-negative integer, got {n}"),
                )
            })?,
        // Some producers stringify ids; accept digits only (or "17850.0").
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().and_then(integral_id))
            .ok_or_else(|| {
                EventError::invalid(
                    "user_id",
                    format!("expected a non-negative integer, got string {s:?}"),
                )
            })?,
        Some(other) => {
            return Err(EventError::invalid(
                "user_id",
                format!("expected a non-negative integer, got {}", type_name(&other)),
            ));
        }
    };
    let event_time = match raw.event_time {
        None | Some(Value::Null) => return Err(EventError::Missing("event_time")),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            // Digits only: epoch seconds, as a number would be.
            Ok(n) if s.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') => epoch_seconds(n)?,
            _ => parse_timestamp(&s).ok_or_else(|| {
                EventError::invalid(
                    "event_time",
                    format!("{s:?} is not 'YYYY-MM-DD HH:MM:SS' (UTC), RFC 3339 or epoch seconds"),
                )
            })?,
        },
        Some(Value::Number(n)) => epoch_seconds(n.as_f64().unwrap_or(f64::NAN))?,
        Some(other) => {
            return Err(EventError::invalid(
                "event_time",
                format!(
                    "expected a timestamp or epoch seconds, got {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let event_type = match raw.event_type {
        None | Some(Value::Null) => return Err(EventError::Missing("event_type")),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(EventError::invalid(
                "event_type",
                format!("expected a string, got {}", type_name(&other)),
            ));
        }
    };
    let session_id = match raw.session_id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        // Numeric session ids are common; keep their text form.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(EventError::invalid(
                "session_id",
                format!("expected a string, got {}", type_name(&other)),
            ));
        }
    };
    let amount = match raw.amount {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(s.trim().parse::<f64>().map_err(|_| {
            EventError::invalid("amount", format!("expected a number, got string {s:?}"))
        })?),
        Some(other) => {
            return Err(EventError::invalid(
                "amount",
                format!("expected a number, got {}", type_name(&other)),
            ));
        }
    };
    Event::new(
        user_id,
        event_time,
        &event_type,
        session_id.as_deref(),
        amount,
        policy,
    )
}

/// An id written as a float: only exact non-negative integers below 2^53
/// (beyond that a float cannot hold every integer).
fn integral_id(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0)
        .then_some(f as u64)
}

/// Epoch seconds (fractions dropped: times are whole seconds); values in
/// the millisecond range are refused by name rather than read as a date
/// thousands of years ahead.
fn epoch_seconds(n: f64) -> Result<i64, EventError> {
    if !n.is_finite() || n < 0.0 {
        return Err(EventError::invalid(
            "event_time",
            format!("{n} is not a non-negative epoch time"),
        ));
    }
    if n > MAX_EPOCH_SECONDS {
        return Err(EventError::invalid(
            "event_time",
            format!(
                "{n} looks like milliseconds since the epoch: send seconds or a timestamp string"
            ),
        ));
    }
    Ok(n.floor() as i64)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01
    fn policy() -> TimePolicy {
        TimePolicy::at(NOW, 86_400)
    }

    #[test]
    fn parses_the_seed_example() {
        let e = parse_event_json(
            br#"{"user_id":2,"event_time":"2025-12-26 18:00:00","event_type":"login","session_id":"abc","extra":[1]}"#,
            policy(),
        )
        .unwrap();
        assert_eq!(e.user_id(), 2);
        assert_eq!(e.event_type(), "login");
        assert_eq!(e.session_id(), Some("abc"));
        assert_eq!(e.amount(), None);
        assert_eq!(e.to_json()["event_time"], "2025-12-26 18:00:00");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 9] = [
            (br#"{"event_time":"2025-12-26 18:00:00","event_type":"x"}"#, "user_id"),
            (br#"{"user_id":-1,"event_time":"2025-12-26 18:00:00","event_type":"x"}"#, "user_id"),
            (br#"{"user_id":"abc","event_time":"2025-12-26 18:00:00","event_type":"x"}"#, "user_id"),
            (br#"{"user_id":1,"event_time":"26/12/2025","event_type":"x"}"#, "event_time"),
            (br#"{"user_id":1,"event_time":"2031-01-01 00:00:00","event_type":"x"}"#, "event_time"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":"  "}"#, "event_type"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":"x","amount":"lots"}"#, "amount"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":"x","amount":-3}"#, "amount"),
            (br#"[1,2]"#, "json"),
        ];
        for (input, field) in cases {
            let err = parse_event_json(input, policy()).unwrap_err();
            assert_eq!(
                err.field(),
                field,
                "{err} for {}",
                String::from_utf8_lossy(input)
            );
        }
        let err = parse_event_json(b"{not json", policy()).unwrap_err();
        assert!(matches!(err, EventError::MalformedJson(_)));
    }

    #[test]
    fn ids_from_float_columns_and_spaced_types_are_accepted() {
        let p = policy();
        let e = parse_event_json(
            br#"{"user_id":17850.0,"event_time":"2010-12-01 08:26:00","event_type":"Add To  Cart"}"#,
            p,
        )
        .unwrap();
        assert_eq!((e.user_id(), e.event_type()), (17850, "add_to_cart"));
        let e = parse_event_json(
            br#"{"user_id":"17850.0","event_time":"2010-12-01 08:26:00","event_type":"x"}"#,
            p,
        )
        .unwrap();
        assert_eq!(e.user_id(), 17850);
        for bad in [r#"17850.5"#, r#""u17""#, "-3.0"] {
            let line = format!(
                r#"{{"user_id":{bad},"event_time":"2010-12-01 08:26:00","event_type":"x"}}"#
            );
            assert_eq!(
                parse_event_json(line.as_bytes(), p).unwrap_err().field(),
                "user_id",
                "{bad}"
            );
        }
    }

    #[test]
    fn historic_times_pass_and_unit_errors_are_named() {
        let at = |t: &str| {
            parse_event_json(
                format!(r#"{{"user_id":1,"event_time":{t},"event_type":"purchase"}}"#).as_bytes(),
                policy(),
            )
        };
        // A purchase log from 1995 ingests with the default floor.
        assert_eq!(
            at(r#""1995-03-04 10:00:00""#).unwrap().event_time(),
            794_311_200
        );
        // Epoch seconds, as a number or digits, fractions dropped.
        assert_eq!(at("794311200").unwrap().event_time(), 794_311_200);
        assert_eq!(at(r#""794311200.9""#).unwrap().event_time(), 794_311_200);
        // Epoch 0 and seconds read as milliseconds fall before 1980.
        let e = at("0").unwrap_err();
        assert!(e.to_string().contains("ingest.min_event_time"), "{e}");
        assert!(at("794311").is_err());
        // Milliseconds sent as seconds: named, not a date in the year 27000.
        let e = at("794311200000").unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        // The floor is a setting.
        let strict = TimePolicy {
            min_time: 946_684_800,
            ..policy()
        };
        assert!(
            parse_event_json(
                br#"{"user_id":1,"event_time":"1995-03-04 10:00:00","event_type":"x"}"#,
                strict
            )
            .is_err()
        );
    }

    #[test]
    fn identity_is_stable_and_sensitive_to_every_field() {
        let p = policy();
        let base = Event::new(7, NOW - 100, "purchase", Some("s1"), Some(9.5), p).unwrap();
        let same = Event::new(7, NOW - 100, "PURCHASE", Some(" s1 "), Some(9.5), p).unwrap();
        assert_eq!(base.event_id(), same.event_id());
        let variants = [
            Event::new(8, NOW - 100, "purchase", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7, NOW - 101, "purchase", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7, NOW - 100, "view", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7, NOW - 100, "purchase", None, Some(9.5), p).unwrap(),
            Event::new(7, NOW - 100, "purchase", Some("s1"), None, p).unwrap(),
            Event::new(7, NOW - 100, "purchase", Some("s1"), Some(9.25), p).unwrap(),
        ];
        for v in variants {
            assert_ne!(base.event_id(), v.event_id(), "{v:?}");
        }
    }
}
