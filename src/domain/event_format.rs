//! Reading events in the producer's own shape: which input field holds each
//! event field (`ingest.fields`, presets for Segment/RudderStack and
//! Amplitude exports), how times are written (`ingest.time_format`,
//! `ingest.timezone`) and a default type for logs without one.
//!
//! A field's source is one or more alternatives, tried in order (the first
//! present, non-null one wins): a key (`"userId"`, `"Customer ID"`), a
//! dotted path into nested objects (`"properties.revenue"`; a key that
//! itself contains the dots wins), or for `amount` the product of two
//! (`"Quantity * Price"`: retail line items carry quantity and unit price).
//! CSV rows reach the parser as objects keyed by the header, so one mapping
//! serves both. Every error names the event field, and a missing one names
//! where it was looked for and the setting to change.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::event::{Event, EventError, TimePolicy};
use super::time_format::TimeReader;
use super::user::UserId;

/// The event fields a mapping assigns, in the order of the seed's schema.
pub const FIELDS: [&str; 6] = [
    "user_id",
    "event_time",
    "event_type",
    "session_id",
    "amount",
    "event_id",
];

/// Where one field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A key or a dotted path.
    Path(String),
    /// The product of two numeric paths (amounts only).
    Product(String, String),
}

impl Source {
    fn parse(field: &str, text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("ingest.fields.{field}: an empty path"));
        }
        match text.split_once(" * ") {
            Some((a, b)) if field == "amount" => {
                let (a, b) = (a.trim(), b.trim());
                if a.is_empty() || b.is_empty() {
                    return Err(format!("ingest.fields.{field}: {text:?} is not \"a * b\""));
                }
                Ok(Self::Product(a.to_string(), b.to_string()))
            }
            Some(_) => Err(format!(
                "ingest.fields.{field}: only amount may be a product (\"Quantity * Price\")"
            )),
            None => Ok(Self::Path(text.to_string())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Path(p) => format!("{p:?}"),
            Self::Product(a, b) => format!("{a:?} * {b:?}"),
        }
    }

    /// The top-level keys this source reads (CSV header checks).
    fn heads(&self) -> Vec<&str> {
        match self {
            Self::Path(p) => vec![p.as_str()],
            Self::Product(a, b) => vec![a.as_str(), b.as_str()],
        }
    }
}

/// Which input field holds each event field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    sources: [Vec<Source>; 6],
    /// Whether `sources` is the seed's mapping, known once rather than
    /// compared per event (the parser's fast path).
    seed: bool,
}

impl Default for FieldMap {
    /// The seed's names: `user_id`, `event_time`, `event_type`,
    /// `session_id`, `amount`, and `event_id`.
    fn default() -> Self {
        Self {
            sources: Self::seed_sources(),
            seed: true,
        }
    }
}

/// The presets `ingest.preset` names.
pub const PRESETS: [&str; 3] = ["segment", "rudderstack", "amplitude"];

impl FieldMap {
    fn seed_sources() -> [Vec<Source>; 6] {
        FIELDS.map(|f| vec![Source::Path(f.to_string())])
    }

    /// A preset's mapping: `segment` (also `rudderstack`: the same `track`
    /// call shape) or `amplitude` (its export's columns).
    ///
    /// # Errors
    /// An unknown preset, naming the known ones.
    pub fn preset(name: &str) -> Result<Self, String> {
        let mut map = Self::default();
        let set = |map: &mut Self, field: &str, paths: &[&str]| {
            let i = field_index(field).unwrap_or(0);
            map.sources[i] = paths
                .iter()
                .map(|p| Source::Path((*p).to_string()))
                .collect();
        };
        match name.trim() {
            "" | "none" => {}
            // Segment and RudderStack track/page/identify calls: userId
            // (anonymousId before login), the event name (or the call
            // type for page/screen/identify), the message id as identity.
            "segment" | "rudderstack" => {
                set(&mut map, "user_id", &["userId", "anonymousId"]);
                set(
                    &mut map,
                    "event_time",
                    &["timestamp", "originalTimestamp", "receivedAt"],
                );
                set(&mut map, "event_type", &["event", "type"]);
                set(
                    &mut map,
                    "session_id",
                    &["context.sessionId", "properties.session_id"],
                );
                set(
                    &mut map,
                    "amount",
                    &["properties.revenue", "properties.total", "properties.value"],
                );
                set(&mut map, "event_id", &["messageId"]);
            }
            // Amplitude's export: its insert id deduplicates, as in Amplitude.
            "amplitude" => {
                set(&mut map, "user_id", &["user_id", "amplitude_id"]);
                set(&mut map, "event_time", &["event_time", "client_event_time"]);
                set(&mut map, "event_type", &["event_type"]);
                set(&mut map, "session_id", &["session_id"]);
                set(
                    &mut map,
                    "amount",
                    &[
                        "revenue",
                        "event_properties.revenue",
                        "event_properties.price",
                    ],
                );
                set(&mut map, "event_id", &["$insert_id", "uuid"]);
            }
            other => {
                return Err(format!(
                    "ingest.preset: {other:?} is not a preset; known: {}",
                    PRESETS.join(", ")
                ));
            }
        }
        map.seed = map.sources == Self::seed_sources();
        Ok(map)
    }

    /// Sets one field's sources (`ingest.fields.<field>`), replacing the
    /// preset's.
    ///
    /// # Errors
    /// An unknown field, or a malformed source; the message names the key.
    pub fn set(&mut self, field: &str, sources: &[String]) -> Result<(), String> {
        let i = field_index(field).ok_or_else(|| {
            format!(
                "ingest.fields.{field}: not an event field; the fields are {}",
                FIELDS.join(", ")
            )
        })?;
        if sources.is_empty() {
            return Err(format!("ingest.fields.{field}: no path given"));
        }
        self.sources[i] = sources
            .iter()
            .map(|s| Source::parse(field, s))
            .collect::<Result<_, _>>()?;
        self.seed = self.sources == Self::seed_sources();
        Ok(())
    }

    /// Whether this is the seed's mapping (the parser's fast path).
    pub fn is_default(&self) -> bool {
        self.seed
    }

    /// Where `field` is read from, for messages: `"userId" or "anonymousId"`.
    pub fn describe(&self, field: &str) -> String {
        field_index(field).map_or_else(String::new, |i| {
            self.sources[i]
                .iter()
                .map(Source::describe)
                .collect::<Vec<_>>()
                .join(" or ")
        })
    }

    /// Every key the mapping reads, per field (CSV header checks).
    pub fn keys(&self) -> Vec<(&'static str, Vec<&str>)> {
        FIELDS
            .iter()
            .zip(&self.sources)
            .map(|(f, s)| (*f, s.iter().flat_map(Source::heads).collect()))
            .collect()
    }

    /// The mapping as `field = [sources]` pairs (for reports).
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        for (f, s) in FIELDS.iter().zip(&self.sources) {
            let alternatives: Vec<Value> = s
                .iter()
                .map(|s| match s {
                    Source::Path(p) => Value::String(p.clone()),
                    Source::Product(a, b) => Value::String(format!("{a} * {b}")),
                })
                .collect();
            obj.insert((*f).to_string(), Value::Array(alternatives));
        }
        Value::Object(obj)
    }
}

fn field_index(field: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == field)
}

/// How events are read: the mapping, the time reader and the type given
/// to events without one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFormat {
    pub fields: FieldMap,
    pub times: TimeReader,
    /// `ingest.default_event_type`: the type of events that have none (a
    /// purchase log with no type column); `None` = the type is required.
    pub default_event_type: Option<String>,
}

/// The seed's shape: every field under its own name. Each field is a
/// loose `Value`, so a wrong type produces a message naming the field
/// instead of serde's generic "invalid type at column 17". Unknown fields
/// are ignored; a key given twice is refused.
#[derive(Deserialize)]
struct SeedShape {
    user_id: Option<Value>,
    event_time: Option<Value>,
    event_type: Option<Value>,
    session_id: Option<Value>,
    amount: Option<Value>,
    event_id: Option<Value>,
}

/// Parses one JSON object in the seed's shape (times read by `auto`, UTC).
///
/// # Errors
/// [`EventError`] naming the field and the reason.
pub fn parse_event_json(input: &[u8], policy: TimePolicy) -> Result<Event, EventError> {
    thread_local! {
        static SEED: EventFormat = EventFormat::default();
    }
    SEED.with(|f| f.parse(input, policy))
}

/// The values found for each field, before conversion.
struct Found<'a> {
    values: [Option<Cow<'a, Value>>; 6],
}

impl EventFormat {
    /// Parses one JSON object into a validated [`Event`].
    ///
    /// # Errors
    /// [`EventError`] naming the field and the reason.
    pub fn parse(&self, input: &[u8], policy: TimePolicy) -> Result<Event, EventError> {
        if self.fields.is_default() {
            let raw: SeedShape = serde_json::from_slice(input).map_err(|e| json_error(&e))?;
            let found = Found {
                values: [
                    raw.user_id,
                    raw.event_time,
                    raw.event_type,
                    raw.session_id,
                    raw.amount,
                    raw.event_id,
                ]
                .map(|v| v.filter(|v| !v.is_null()).map(Cow::Owned)),
            };
            return self.convert(found, policy).map_err(|e| match e {
                // Say where the field may be instead, from the line itself.
                EventError::Missing(field) => missing_hint(field, input),
                other => other,
            });
        }
        let value: Value = serde_json::from_slice(input).map_err(|e| json_error(&e))?;
        let Value::Object(obj) = &value else {
            return Err(EventError::MalformedJson("expected a JSON object".into()));
        };
        let mut values: [Option<Cow<'_, Value>>; 6] = Default::default();
        for (i, sources) in self.fields.sources.iter().enumerate() {
            values[i] = resolve(obj, sources, FIELDS[i])?;
        }
        self.convert(Found { values }, policy).map_err(|e| match e {
            EventError::Missing(field) => EventError::invalid(
                field,
                format!(
                    "missing (looked for {}; set ingest.fields.{field}){}",
                    self.fields.describe(field),
                    hint_keys(field, obj)
                ),
            ),
            other => other,
        })
    }

    fn convert(&self, found: Found<'_>, policy: TimePolicy) -> Result<Event, EventError> {
        let [user, time, kind, session, amount, event_id] = found.values;
        let user = match user.as_deref() {
            None => return Err(EventError::Missing("user_id")),
            Some(Value::Number(n)) => UserId::from_number(n),
            Some(Value::String(s)) => UserId::parse(s),
            Some(other) => Err(super::user::UserIdError(format!(
                "expected a number or a string, got {}",
                type_name(other)
            ))),
        }
        .map_err(|e| EventError::invalid("user_id", e.0))?;
        let event_time = match time.as_deref() {
            None => return Err(EventError::Missing("event_time")),
            Some(Value::Number(n)) => self.times.from_number(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => self.times.from_text(s),
            Some(other) => Err(format!(
                "expected a timestamp or epoch number, got {}",
                type_name(other)
            )),
        }
        .map_err(|reason| EventError::invalid("event_time", reason))?;
        let event_type: Cow<'_, str> = match kind.as_deref() {
            None => match &self.default_event_type {
                Some(t) => Cow::Borrowed(t.as_str()),
                None => return Err(EventError::Missing("event_type")),
            },
            Some(Value::String(s)) => Cow::Owned(s.clone()),
            // Numeric type codes are types too.
            Some(Value::Number(n)) => Cow::Owned(n.to_string()),
            Some(other) => {
                return Err(EventError::invalid(
                    "event_type",
                    format!("expected a string, got {}", type_name(other)),
                ));
            }
        };
        let session_id = text_of("session_id", session.as_deref())?;
        let amount = match amount.as_deref() {
            None => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().parse::<f64>().map_err(|_| {
                EventError::invalid("amount", format!("expected a number, got string {s:?}"))
            })?),
            Some(other) => {
                return Err(EventError::invalid(
                    "amount",
                    format!("expected a number, got {}", type_name(other)),
                ));
            }
        };
        let supplied = text_of("event_id", event_id.as_deref())?;
        let event = Event::new(
            user,
            event_time,
            &event_type,
            session_id.as_deref(),
            amount,
            policy,
        )?;
        match supplied.as_deref().map(str::trim) {
            None | Some("") => Ok(event),
            Some(id) => event.with_supplied_id(id),
        }
    }
}

/// A string or number as text (`session_id`, `event_id`).
fn text_of(field: &'static str, v: Option<&Value>) -> Result<Option<String>, EventError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(EventError::invalid(
            field,
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// The first present alternative of a field.
fn resolve<'a>(
    obj: &'a Map<String, Value>,
    sources: &[Source],
    field: &'static str,
) -> Result<Option<Cow<'a, Value>>, EventError> {
    for source in sources {
        match source {
            Source::Path(p) => {
                if let Some(v) = lookup(obj, p) {
                    return Ok(Some(Cow::Borrowed(v)));
                }
            }
            Source::Product(a, b) => {
                let (Some(x), Some(y)) = (lookup(obj, a), lookup(obj, b)) else {
                    continue;
                };
                let number = |v: &Value, path: &str| -> Result<Option<f64>, EventError> {
                    match v {
                        Value::Number(n) => Ok(n.as_f64()),
                        Value::String(s) if s.trim().is_empty() => Ok(None),
                        Value::String(s) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                            EventError::invalid(field, format!("{path:?} is {s:?}, not a number"))
                        }),
                        other => Err(EventError::invalid(
                            field,
                            format!("{path:?} is {}, not a number", type_name(other)),
                        )),
                    }
                };
                if let (Some(x), Some(y)) = (number(x, a)?, number(y, b)?) {
                    return Ok(Some(Cow::Owned(Value::from(x * y))));
                }
            }
        }
    }
    Ok(None)
}

/// A key, else a dotted path through nested objects; null counts as absent.
fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return (!v.is_null()).then_some(v);
    }
    let mut parts = path.split('.');
    let mut here = obj.get(parts.next()?)?;
    for part in parts {
        here = here.as_object()?.get(part)?;
    }
    (!here.is_null()).then_some(here)
}

fn json_error(e: &serde_json::Error) -> EventError {
    // serde reports "invalid type: ..., expected struct SeedShape" for
    // non-objects: say it plainly.
    if e.is_data() && e.to_string().starts_with("duplicate field") {
        // One key twice: which value is meant is unknowable.
        EventError::MalformedJson(e.to_string().replace("duplicate field", "duplicate key"))
    } else if e.is_data() {
        EventError::MalformedJson("expected a JSON object".into())
    } else {
        EventError::MalformedJson(e.to_string())
    }
}

/// A missing field of the seed's shape, with the line's likely key for it.
fn missing_hint(field: &'static str, input: &[u8]) -> EventError {
    let keys = match serde_json::from_slice::<Value>(input) {
        Ok(Value::Object(obj)) => hint_keys(field, &obj),
        _ => String::new(),
    };
    if keys.is_empty() {
        EventError::Missing(field)
    } else {
        EventError::invalid(field, format!("missing{keys}"))
    }
}

/// Keys of the line that look like `field` under another name: "; the line
/// has \"userId\": map it with ingest.fields.user_id".
fn hint_keys(field: &str, obj: &Map<String, Value>) -> String {
    let tokens: &[&str] = match field {
        "user_id" => &[
            "user", "customer", "uid", "member", "account", "client", "visitor", "person",
        ],
        "event_time" => &["time", "date", "ts", "created", "when"],
        "event_type" => &["event", "type", "action", "activity", "name"],
        "amount" => &["amount", "revenue", "price", "total", "value", "sales"],
        _ => &[],
    };
    let found: Vec<&str> = obj
        .keys()
        .filter(|k| k.as_str() != field)
        .filter(|k| {
            let norm: String = k
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            tokens.iter().any(|t| norm.contains(t))
        })
        .take(3)
        .map(String::as_str)
        .collect();
    if found.is_empty() {
        return String::new();
    }
    let list: Vec<String> = found.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "; the line has {}: map it with ingest.fields.{field} = {:?} (or ingest.preset)",
        list.join(", "),
        found[0]
    )
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
    use crate::domain::time_format::{TimeFormat, parse_timezone};

    const NOW: i64 = 1_767_225_600; // 2026-01-01

    fn policy() -> TimePolicy {
        TimePolicy::at(NOW, 86_400)
    }

    fn format(pairs: &[(&str, &[&str])]) -> EventFormat {
        let mut fields = FieldMap::default();
        for (f, s) in pairs {
            let s: Vec<String> = s.iter().map(|x| (*x).to_string()).collect();
            fields.set(f, &s).unwrap();
        }
        EventFormat {
            fields,
            ..EventFormat::default()
        }
    }

    #[test]
    fn a_segment_track_call_is_read_by_the_preset() {
        let line =
            br#"{"type":"track","event":"Order Completed","userId":"u-5f2c","anonymousId":"a1",
            "messageId":"ajs-7f3c","timestamp":"2024-03-02T10:11:12.345Z",
            "properties":{"revenue":-19.99,"currency":"USD"},"context":{"sessionId":1709374272}}"#;
        let f = EventFormat {
            fields: FieldMap::preset("segment").unwrap(),
            ..EventFormat::default()
        };
        let e = f.parse(line, policy()).unwrap();
        assert_eq!(e.user_name(), Some("u-5f2c"));
        assert_eq!(e.event_type(), "order_completed");
        assert_eq!(e.amount(), Some(-19.99));
        assert_eq!(e.session_id(), Some("1709374272"));
        assert!(e.has_supplied_id());
        assert_eq!(
            e.event_time(),
            crate::domain::time::parse_timestamp("2024-03-02 10:11:12").unwrap()
        );
        // The same message id is the same event whatever else differs.
        let moved = String::from_utf8_lossy(line).replace("-19.99", "-20");
        let again = f.parse(moved.as_bytes(), policy()).unwrap();
        assert_eq!(e.event_id(), again.event_id());
        // Before login: the anonymous id; page calls: their type.
        let page = br#"{"type":"page","anonymousId":"a1","messageId":"m2","timestamp":"2024-03-02T10:00:00Z"}"#;
        let p = f.parse(page, policy()).unwrap();
        assert_eq!((p.user_name(), p.event_type()), (Some("a1"), "page"));
        assert!(FieldMap::preset("mixpanel").is_err());
    }

    #[test]
    fn paths_products_and_defaults_map_a_retail_csv_row() {
        let mut f = EventFormat {
            default_event_type: Some("purchase".into()),
            ..format(&[
                ("user_id", &["Customer ID"]),
                ("event_time", &["InvoiceDate"]),
                ("amount", &["Quantity * Price"]),
            ])
        };
        let row = br#"{"Invoice":"C489449","Quantity":"-12","InvoiceDate":"12/1/2009 10:33","Price":"2.95","Customer ID":"16321.0"}"#;
        let e = f.parse(row, policy()).unwrap();
        assert_eq!(e.user_id(), 16321);
        assert_eq!(e.event_type(), "purchase");
        assert!((e.amount().unwrap() + 35.4).abs() < 1e-9);
        // A row without a customer: refused, naming the column looked at.
        let guest = br#"{"Quantity":"1","InvoiceDate":"12/1/2009 10:33","Price":"2.95"}"#;
        let err = f.parse(guest, policy()).unwrap_err();
        assert_eq!(err.field(), "user_id");
        assert!(err.to_string().contains("\"Customer ID\""), "{err}");
        assert!(err.to_string().contains("ingest.fields.user_id"), "{err}");
        let bad =
            br#"{"Customer ID":"1","Quantity":"x","InvoiceDate":"12/1/2009 10:33","Price":"2"}"#;
        assert_eq!(f.parse(bad, policy()).unwrap_err().field(), "amount");
        assert!(f.fields.set("user_id", &["a * b".into()]).is_err());
        assert!(f.clone().fields.set("colour", &["x".into()]).is_err());
    }

    #[test]
    fn a_missing_seed_field_points_at_the_likely_key() {
        let err = parse_event_json(
            br#"{"userId":"u1","event_time":"2025-01-01 00:00:00","event_type":"x"}"#,
            policy(),
        )
        .unwrap_err();
        assert_eq!(err.field(), "user_id");
        assert!(err.to_string().contains("\"userId\""), "{err}");
        let plain =
            parse_event_json(br#"{"event_time":1,"event_type":"x"}"#, policy()).unwrap_err();
        assert_eq!(plain, EventError::Missing("user_id"));
    }

    #[test]
    fn string_ids_types_and_signed_amounts_are_kept() {
        let e = parse_event_json(
            br#"{"user_id":"550e8400-e29b-41d4-a716-446655440000","event_time":1735689600000,"event_type":"Refund Issued!","amount":-5}"#,
            policy(),
        )
        .unwrap();
        assert_eq!(e.user_name(), Some("550e8400-e29b-41d4-a716-446655440000"));
        assert_eq!(e.event_time(), 1_735_689_600);
        assert_eq!(e.event_type(), "refund_issued");
        assert_eq!(e.amount(), Some(-5.0));
        assert!(!e.has_supplied_id());
        let numeric_type = parse_event_json(
            br#"{"user_id":1,"event_time":1735689600,"event_type":3}"#,
            policy(),
        )
        .unwrap();
        assert_eq!(numeric_type.event_type(), "3");
    }

    #[test]
    fn times_follow_the_declared_format_and_zone() {
        let f = EventFormat {
            times: TimeReader::new(
                TimeFormat::parse("%d/%m/%Y %H:%M").unwrap(),
                parse_timezone("America/New_York").unwrap(),
            ),
            ..EventFormat::default()
        };
        let e = f
            .parse(
                br#"{"user_id":1,"event_time":"01/12/2010 08:26","event_type":"x"}"#,
                policy(),
            )
            .unwrap();
        // 08:26 EST = 13:26 UTC.
        assert_eq!(e.event_time(), 1_291_191_960 + 5 * 3600);
        let err = f
            .parse(
                br#"{"user_id":1,"event_time":"2010-12-01 08:26","event_type":"x"}"#,
                policy(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("ingest.time_format"), "{err}");
    }
}
