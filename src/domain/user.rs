//! User identity: the ids producers send ([`UserId`]: an integer or any
//! string — a UUID, `"u-abc"`, an email hash) and the 64-bit key every store,
//! snapshot and sample indexes users by.
//!
//! The key rule, which every part of the system shares:
//! - an integer id up to [`MAX_INT_USER_ID`] (2^62 − 1) is its own key, so
//!   integer ids work exactly as they always did;
//! - any other id (a string, or an integer above that) is a *name*: its key
//!   is bit 62 set plus the first 62 bits of SHA-256 of its text. Keys of
//!   names therefore never meet keys of integers, stay non-negative in
//!   both stores' signed and unsigned columns, and need no dictionary or
//!   coordination between replicas. The stores keep each name beside its key
//!   (to answer with the name) and refuse a second name on a key already
//!   held by another (a 62-bit collision: about 1 in 10^5 at ten million
//!   names), so two users are never silently merged.
//!
//! Text forms: digits (`"17850"`, `"0042"`) and integral decimals
//! (`"17850.0"`, what float columns export) are the integer; anything else
//! non-empty is a name, compared byte for byte after trimming.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Largest integer id that is its own key (2^62 − 1).
pub const MAX_INT_USER_ID: u64 = (1 << 62) - 1;
/// The bit every name's key carries.
const NAME_BIT: u64 = 1 << 62;
/// Longest accepted name, in bytes.
pub const MAX_USER_NAME_LEN: usize = 256;

/// A user id as producers send it and clients get it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserId {
    /// An integer id (at most [`MAX_INT_USER_ID`]).
    Int(u64),
    /// Any other id, kept as text.
    Name(Box<str>),
}

/// Why a user id is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct UserIdError(pub String);

impl UserId {
    /// The id of a key that belongs to an integer (`None` for a name's key:
    /// the name itself must come from the store).
    pub fn from_int_key(key: u64) -> Option<Self> {
        (key <= MAX_INT_USER_ID).then_some(Self::Int(key))
    }

    /// Reads an id from its text form (query strings, CSV cells, JSON
    /// strings): digits or an integral decimal are the integer, anything
    /// else a name.
    ///
    /// # Errors
    /// [`UserIdError`] for an empty id, one longer than
    /// [`MAX_USER_NAME_LEN`] bytes, or one with control characters.
    pub fn parse(text: &str) -> Result<Self, UserIdError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(UserIdError("empty".into()));
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = t.parse::<u64>()
                && n <= MAX_INT_USER_ID
            {
                return Ok(Self::Int(n));
            }
            // Beyond 2^62 − 1 (or 2^64) the digits are a name: still one
            // user, answered with the same digits.
            return Self::name(strip_leading_zeros(t));
        }
        if let Some(n) = integral_decimal(t) {
            return Ok(Self::Int(n));
        }
        Self::name(t)
    }

    /// Reads an id from a JSON number: a non-negative integer (or an
    /// integral float, as float columns export ids).
    ///
    /// # Errors
    /// [`UserIdError`] for negative or fractional numbers.
    pub fn from_number(n: &serde_json::Number) -> Result<Self, UserIdError> {
        if let Some(u) = n.as_u64() {
            return Ok(if u <= MAX_INT_USER_ID {
                Self::Int(u)
            } else {
                Self::Name(u.to_string().into())
            });
        }
        match n.as_f64() {
            Some(f)
                if f.is_finite()
                    && f >= 0.0
                    && f.fract() == 0.0
                    && f < 9.007_199_254_740_992e15 =>
            {
                Ok(Self::Int(f as u64))
            }
            _ => Err(UserIdError(format!(
                "expected a non-negative integer or a string, got {n}"
            ))),
        }
    }

    fn name(t: &str) -> Result<Self, UserIdError> {
        if t.len() > MAX_USER_NAME_LEN {
            return Err(UserIdError(format!(
                "longer than {MAX_USER_NAME_LEN} bytes"
            )));
        }
        if t.chars().any(char::is_control) {
            return Err(UserIdError("contains control characters".into()));
        }
        Ok(Self::Name(t.into()))
    }

    /// The key stores and snapshots index this user by (see the module doc).
    pub fn key(&self) -> u64 {
        match self {
            Self::Int(n) => *n,
            Self::Name(s) => name_key(s),
        }
    }

    /// The name, for name ids.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Self::Int(_) => None,
            Self::Name(s) => Some(s),
        }
    }

    /// As JSON: a number for integers, a string for names.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Int(n) => (*n).into(),
            Self::Name(s) => s.to_string().into(),
        }
    }
}

/// Whether a key belongs to a name (as opposed to an integer id).
pub fn is_name_key(key: u64) -> bool {
    key & NAME_BIT != 0
}

/// The key of a name: bit 62 plus the first 62 bits of SHA-256 of its text.
pub fn name_key(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    NAME_BIT | (u64::from_le_bytes(first) & (NAME_BIT - 1))
}

fn strip_leading_zeros(t: &str) -> &str {
    let s = t.trim_start_matches('0');
    if s.is_empty() { "0" } else { s }
}

/// `"17850.0"`: an integral decimal within the integer range.
fn integral_decimal(t: &str) -> Option<u64> {
    let (int, frac) = t.split_once('.')?;
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b == b'0')
    {
        return None;
    }
    int.parse::<u64>().ok().filter(|n| *n <= MAX_INT_USER_ID)
}

impl From<u64> for UserId {
    /// An integer id; above [`MAX_INT_USER_ID`] its digits are a name.
    fn from(n: u64) -> Self {
        if n <= MAX_INT_USER_ID {
            Self::Int(n)
        } else {
            Self::Name(n.to_string().into())
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Name(s) => f.write_str(s),
        }
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(n) => s.serialize_u64(*n),
            Self::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Self::from_number(&n).map_err(D::Error::custom),
            serde_json::Value::String(s) => Self::parse(&s).map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "a user id is a number or a string, not {other}"
            ))),
        }
    }
}

impl utoipa::PartialSchema for UserId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_INT_USER_ID as f64)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_USER_NAME_LEN)),
            )
            .description(Some(
                "An integer id, or any string id (UUID, name): answered in the form it was sent",
            ))
            .into()
    }
}

impl utoipa::ToSchema for UserId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_their_own_keys_and_names_never_meet_them() {
        assert_eq!(UserId::parse("42").unwrap(), UserId::Int(42));
        assert_eq!(UserId::parse(" 0042 ").unwrap(), UserId::Int(42));
        assert_eq!(UserId::parse("17850.0").unwrap(), UserId::Int(17850));
        assert_eq!(UserId::Int(42).key(), 42);
        for name in [
            "u-abc",
            "550e8400-e29b-41d4-a716-446655440000",
            "-3",
            "1.5",
            "a b",
        ] {
            let id = UserId::parse(name).unwrap();
            assert_eq!(id.as_name(), Some(name), "{name}");
            assert!(is_name_key(id.key()), "{name}");
            assert!(id.key() > MAX_INT_USER_ID && id.key() <= i64::MAX as u64);
        }
        assert_ne!(
            UserId::parse("u-abc").unwrap().key(),
            UserId::parse("u-abd").unwrap().key()
        );
        // Past the integer range the digits are a name, canonical.
        let big = UserId::parse("009223372036854775807").unwrap();
        assert_eq!(big.as_name(), Some("9223372036854775807"));
        let n: serde_json::Number = serde_json::from_str("9223372036854775807").unwrap();
        assert_eq!(UserId::from_number(&n).unwrap(), big);
    }

    #[test]
    fn bad_ids_are_refused_with_a_reason() {
        for bad in ["", "   ", "a\u{0}b"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserId::parse(&"x".repeat(MAX_USER_NAME_LEN + 1)).is_err());
        for n in ["-1", "1.5", "-3.0"] {
            let n: serde_json::Number = serde_json::from_str(n).unwrap();
            assert!(UserId::from_number(&n).is_err(), "{n}");
        }
    }

    #[test]
    fn ids_serialize_in_the_form_they_came() {
        let ids = [UserId::Int(7), UserId::parse("u-7").unwrap()];
        assert_eq!(serde_json::to_string(&ids).unwrap(), r#"[7,"u-7"]"#);
        let back: Vec<UserId> = serde_json::from_str(r#"[7,"u-7","8"]"#).unwrap();
        assert_eq!(back[..2], ids);
        assert_eq!(back[2], UserId::Int(8));
    }
}
