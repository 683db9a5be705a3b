//! User events: the validated [`Event`] type, its content identity, and the
//! canonical form of event types. Reading events from a producer's JSON or
//! CSV shape is [`super::event_format`]; how an event's stored identity is
//! chosen (a producer's event id, a log position, or its content and
//! ordinal in a delivery) is [`super::identity`].
//!
//! Parsing is "parse, don't validate": the only way to get an [`Event`] is
//! through [`Event::new`] (which every parser ends in), so every `Event` in
//! the system already satisfies the rules below.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use super::event_format::parse_event_json;
use super::user::UserId;

/// Longest accepted `event_type` after canonicalisation, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest accepted `session_id`, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest accepted producer `event_id`, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Default earliest accepted event time, 1980-01-01 (`ingest.min_event_time`):
/// historic logs pass, epoch 0 and seconds read as milliseconds do not.
pub const DEFAULT_MIN_EVENT_TIME: i64 = 315_532_800;

/// The stored form of an event type: lowercase, with every run of
/// characters other than letters, digits, `_`, `-` and `.` (spaces,
/// punctuation, slashes) turned into one `_` and none at either end:
/// "Add To Cart" → "add_to_cart", "Order Completed!" → "order_completed",
/// "Viewed /home" → "viewed_home". Specs and churn definitions name types
/// through the same function, so they match what is stored.
pub fn canonical_type(t: &str) -> String {
    let keep = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    // The common case (already canonical) allocates once.
    if !t.is_empty() && t.chars().all(|c| keep(c) && !c.is_uppercase()) {
        return t.to_string();
    }
    t.split(|c: char| !keep(c))
        .filter(|piece| !piece.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_lowercase()
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
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
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

/// One validated user event. Times are whole UTC seconds; amounts are
/// signed (refunds and cancellations are negative).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The user's key ([`UserId::key`]).
    user: u64,
    /// The user's id when it is a name (its key is a hash of it).
    user_name: Option<Box<str>>,
    event_time: i64,
    event_type: String,
    session_id: Option<String>,
    amount: Option<f64>,
    /// The stored identity: the content id until [`super::identity`]
    /// assigns the delivery's.
    id: i64,
    /// Whether `id` comes from the producer's own event id.
    id_supplied: bool,
}

impl Event {
    /// Builds an event, applying every validation rule. Its identity is its
    /// content id ([`Event::content_id`]) until a delivery assigns one.
    ///
    /// # Errors
    /// [`EventError::Invalid`] naming the first field that breaks a rule.
    pub fn new(
        user: impl Into<UserId>,
        event_time: i64,
        event_type: &str,
        session_id: Option<&str>,
        amount: Option<f64>,
        policy: TimePolicy,
    ) -> Result<Self, EventError> {
        let user: UserId = user.into();
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
                    "{} s in the future (allowed skew {} s; ingest.max_future_skew_secs)",
                    event_time - policy.now,
                    policy.max_future_secs
                ),
            ));
        }
        let event_type = canonical_type(event_type);
        if event_type.is_empty() {
            return Err(EventError::invalid(
                "event_type",
                "empty (or punctuation only)",
            ));
        }
        if event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(EventError::invalid(
                "event_type",
                format!("longer than {MAX_EVENT_TYPE_LEN} bytes"),
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
        if let Some(a) = amount
            && !a.is_finite()
        {
            return Err(EventError::invalid("amount", "not a finite number"));
        }
        let (key, user_name) = match user {
            UserId::Int(n) => (n, None),
            UserId::Name(s) => (super::user::name_key(&s), Some(s)),
        };
        let mut event = Self {
            user: key,
            user_name,
            event_time,
            event_type,
            session_id,
            // Normalise -0.0 so that equal amounts are equal content.
            amount: amount.map(|a| a + 0.0),
            id: 0,
            id_supplied: false,
        };
        event.id = event.content_id();
        Ok(event)
    }

    /// The user's key, what stores and snapshots index.
    pub fn user_id(&self) -> u64 {
        self.user
    }
    /// The user's id as the producer sent it.
    pub fn user(&self) -> UserId {
        match &self.user_name {
            Some(n) => UserId::Name(n.clone()),
            None => UserId::Int(self.user),
        }
    }
    /// The user's name, for name ids.
    pub fn user_name(&self) -> Option<&str> {
        self.user_name.as_deref()
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

    /// The stored identity: stores keep one event per (user, time, id).
    pub fn event_id(&self) -> i64 {
        self.id
    }

    /// Whether the identity is the producer's own event id.
    pub fn has_supplied_id(&self) -> bool {
        self.id_supplied
    }

    /// Sets the identity a delivery chose ([`super::identity`]).
    pub(crate) fn assign_id(&mut self, id: i64) {
        self.id = id;
    }

    /// Makes the producer's event id (`event_id`, Segment's `messageId`)
    /// the identity: the same id for the same user is the same event,
    /// whatever delivery it comes in.
    ///
    /// # Errors
    /// [`EventError::Invalid`] for an id longer than [`MAX_EVENT_ID_LEN`].
    pub fn with_supplied_id(mut self, supplied: &str) -> Result<Self, EventError> {
        if supplied.len() > MAX_EVENT_ID_LEN {
            return Err(EventError::invalid(
                "event_id",
                format!("longer than {MAX_EVENT_ID_LEN} bytes"),
            ));
        }
        let mut h = Sha256::new();
        h.update(b"event_id\x1f");
        h.update(self.user.to_le_bytes());
        h.update(supplied.as_bytes());
        self.id = first_i64(&h.finalize());
        self.id_supplied = true;
        Ok(self)
    }

    /// The content id: the first 8 bytes of SHA-256 over every field in a
    /// canonical form, as a signed integer (what both stores index). For
    /// integer users it is exactly the identity of earlier versions, so a
    /// store filled by them recognises re-ingested events.
    ///
    /// 64 bits keep indexes small; two *different* contents collide with a
    /// chance below 1e-5 up to a billion events per (user, second), and
    /// only ever within one user and second (the stores' key leads with
    /// both).
    pub fn content_id(&self) -> i64 {
        let mut h = Sha256::new();
        h.update(self.user.to_le_bytes());
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
            Some(a) => {
                h.update([1]);
                h.update(a.to_bits().to_le_bytes());
            }
            None => h.update([0]),
        }
        first_i64(&h.finalize())
    }

    /// The event in the seed's JSON shape (what the generator and the
    /// dead-letter paths write); the user id in the form it came.
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("user_id".into(), self.user().to_json());
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

/// The first 8 bytes of a digest as a signed integer.
pub(crate) fn first_i64(digest: &[u8]) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
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
            (br#"{"user_id":"","event_time":"2025-12-26 18:00:00","event_type":"x"}"#, "user_id"),
            (br#"{"user_id":1,"event_time":"26/12/2025","event_type":"x"}"#, "event_time"),
            (br#"{"user_id":1,"event_time":"2031-01-01 00:00:00","event_type":"x"}"#, "event_time"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":" ?! "}"#, "event_type"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":"x","amount":"lots"}"#, "amount"),
            (br#"{"user_id":1,"event_time":"2025-12-26 18:00:00","event_type":"x","event_id":[1]}"#, "event_id"),
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
    fn ids_from_float_columns_string_ids_and_spaced_types_are_accepted() {
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
        for name in [r#""u17""#, r#""17850.5""#] {
            let line = format!(
                r#"{{"user_id":{name},"event_time":"2010-12-01 08:26:00","event_type":"x"}}"#
            );
            let e = parse_event_json(line.as_bytes(), p).unwrap();
            assert_eq!(Some(name.trim_matches('"')), e.user_name(), "{name}");
            assert_eq!(e.to_json()["user_id"], name.trim_matches('"'));
        }
        for bad in ["17850.5", "-3.0", "true"] {
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
    fn historic_times_pass_and_epoch_units_are_read_by_magnitude() {
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
        // Epoch seconds, milliseconds, microseconds, as numbers or digits.
        assert_eq!(at("794311200").unwrap().event_time(), 794_311_200);
        assert_eq!(at(r#""794311200.9""#).unwrap().event_time(), 794_311_200);
        assert_eq!(at("794311200000").unwrap().event_time(), 794_311_200);
        assert_eq!(at("794311200123456").unwrap().event_time(), 794_311_200);
        // Epoch 0 and tiny numbers fall before 1980.
        let e = at("0").unwrap_err();
        assert!(e.to_string().contains("ingest.min_event_time"), "{e}");
        assert!(at("794311").is_err());
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
    fn canonical_types_keep_letters_of_any_script_and_drop_punctuation() {
        for (raw, canonical) in [
            ("Add To Cart", "add_to_cart"),
            ("Order Completed!", "order_completed"),
            ("Viewed /home", "viewed_home"),
            ("add-to_cart.v2", "add-to_cart.v2"),
            ("a__b", "a__b"),
            ("Купить", "купить"),
            ("?!", ""),
        ] {
            assert_eq!(canonical_type(raw), canonical, "{raw}");
        }
    }

    #[test]
    fn identity_is_stable_and_sensitive_to_every_field() {
        let p = policy();
        let base = Event::new(7u64, NOW - 100, "purchase", Some("s1"), Some(9.5), p).unwrap();
        let same = Event::new(7u64, NOW - 100, "PURCHASE", Some(" s1 "), Some(9.5), p).unwrap();
        assert_eq!(base.event_id(), same.event_id());
        assert_eq!(base.event_id(), base.content_id());
        let variants = [
            Event::new(8u64, NOW - 100, "purchase", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7u64, NOW - 101, "purchase", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7u64, NOW - 100, "view", Some("s1"), Some(9.5), p).unwrap(),
            Event::new(7u64, NOW - 100, "purchase", None, Some(9.5), p).unwrap(),
            Event::new(7u64, NOW - 100, "purchase", Some("s1"), None, p).unwrap(),
            Event::new(7u64, NOW - 100, "purchase", Some("s1"), Some(-9.5), p).unwrap(),
        ];
        for v in variants {
            assert_ne!(base.event_id(), v.event_id(), "{v:?}");
        }
        // -0.0 and 0.0 are one amount.
        let zero = Event::new(7u64, NOW, "x", None, Some(0.0), p).unwrap();
        let minus = Event::new(7u64, NOW, "x", None, Some(-0.0), p).unwrap();
        assert_eq!(zero.event_id(), minus.event_id());
    }

    #[test]
    fn the_content_id_of_integer_users_is_unchanged_from_earlier_versions() {
        // Computed by the previous release's Event::event_id for this event:
        // a store it filled recognises the same event ingested again.
        let e = Event::new(
            42u64,
            1_700_000_000,
            "purchase",
            Some("s"),
            Some(12.5),
            policy(),
        )
        .unwrap();
        let mut h = Sha256::new();
        h.update(42u64.to_le_bytes());
        h.update(1_700_000_000i64.to_le_bytes());
        h.update(b"purchase");
        h.update([0x1f, 1]);
        h.update(b"s");
        h.update([0x1f, 1]);
        h.update(12.5f64.to_bits().to_le_bytes());
        assert_eq!(e.content_id(), first_i64(&h.finalize()));
    }
}
