//! The feature specification: features declared as data (aggregation ×
//! event-type filter × window), from which every backend computes the same
//! values **as of a time T**, using only events with `event_time <= T`.
//!
//! A spec is a TOML file of `[[feature]]` tables (see `features/standard.toml`,
//! the built-in spec). The embedded store evaluates it with
//! [`FeatureSpec::evaluate`]; the ClickHouse backend renders the very same
//! [`FeatureDef`]s to SQL. Nothing here reads the clock or a file: T is
//! always an argument (which keeps training sets point-in-time correct and
//! serving consistent with training) and the spec's text is handed in.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identifier::is_identifier;
use super::time::{DAY_SECS, day_of};

/// The built-in spec (54 features over the generator's event types).
pub const STANDARD_SPEC_TOML: &str = include_str!("../../features/standard.toml");

/// Bumped when the meaning of a definition changes, so models trained on
/// the old meaning never serve snapshots of the new one.
const SPEC_FORMAT: u32 = 2;
/// Most features one spec may declare (bounds build and serving cost).
pub const MAX_FEATURES: usize = 2_000;
/// Longest window: a century.
pub const MAX_WINDOW_DAYS: u32 = 36_500;
/// Names the stores use for their own columns.
pub const RESERVED_NAMES: [&str; 5] = ["user_id", "as_of", "churned", "features", "fingerprint"];
/// Longest accepted event type, in bytes (as for events).
const MAX_TYPE_LEN: usize = super::event::MAX_EVENT_TYPE_LEN;

/// How the events selected by a feature's filter become a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Number of events.
    Count,
    /// Number of distinct UTC calendar days with an event.
    ActiveDays,
    /// Number of distinct non-empty `session_id`s.
    DistinctSessions,
    /// Sum of `amount` (absent amounts add nothing; 0 without any).
    SumAmount,
    /// Mean of the present amounts (0 without any).
    MeanAmount,
    /// Largest present amount (0 without any).
    MaxAmount,
    /// Smallest present amount (0 without any): with `amount_sign =
    /// "negative"`, the largest refund.
    MinAmount,
    /// `(T - latest selected event) / 1 day`. A user with no selected event
    /// gets their tenure (days since their first event of any type): "not
    /// in all the history we have", censored at what we know. No cap.
    DaysSinceLast,
    /// `(T - earliest selected event) / 1 day`; 0 without any.
    DaysSinceFirst,
    /// Mean gap in days between consecutive distinct active days of the
    /// selected events (0 with fewer than two).
    GapMean,
    /// Population standard deviation of those gaps (0 with fewer than two).
    GapStd,
    /// `scale * numerator / denominator`, or `default` when the denominator
    /// is 0; both operands are features defined earlier in the spec.
    Ratio,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::ActiveDays => "active_days",
            Self::DistinctSessions => "distinct_sessions",
            Self::SumAmount => "sum_amount",
            Self::MeanAmount => "mean_amount",
            Self::MaxAmount => "max_amount",
            Self::MinAmount => "min_amount",
            Self::DaysSinceLast => "days_since_last",
            Self::DaysSinceFirst => "days_since_first",
            Self::GapMean => "gap_mean",
            Self::GapStd => "gap_std",
            Self::Ratio => "ratio",
        }
    }

    /// Every aggregation, for tests and documentation.
    pub const ALL: [Aggregation; 12] = [
        Self::Count,
        Self::ActiveDays,
        Self::DistinctSessions,
        Self::SumAmount,
        Self::MeanAmount,
        Self::MaxAmount,
        Self::MinAmount,
        Self::DaysSinceLast,
        Self::DaysSinceFirst,
        Self::GapMean,
        Self::GapStd,
        Self::Ratio,
    ];
}

/// Which amounts a feature selects (`amount_sign`): refunds and
/// cancellations are negative amounts, purchases positive ones. Events
/// without an amount are selected by neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountSign {
    /// Amounts above zero.
    Positive,
    /// Amounts below zero.
    Negative,
}

impl AmountSign {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Negative => "negative",
        }
    }

    /// Whether an event with this amount is selected.
    pub fn admits(self, amount: Option<f64>) -> bool {
        match (self, amount) {
            (Self::Positive, Some(a)) => a > 0.0,
            (Self::Negative, Some(a)) => a < 0.0,
            (_, None) => false,
        }
    }
}

/// One declared feature: a `[[feature]]` table of a spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    pub name: String,
    pub aggregation: Aggregation,
    /// Only events of these types; empty = every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Only events in `(T - window_days, T]`; absent = all history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
    /// Only events whose amount has this sign; absent = every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sign: Option<AmountSign>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<f64>,
}

impl FeatureDef {
    /// An aggregation over `event_types` (empty = all) in an optional window.
    pub fn aggregate(
        name: impl Into<String>,
        aggregation: Aggregation,
        event_types: &[&str],
        window_days: Option<u32>,
    ) -> Self {
        Self {
            name: name.into(),
            aggregation,
            event_types: event_types.iter().map(|t| t.to_string()).collect(),
            window_days,
            amount_sign: None,
            numerator: None,
            denominator: None,
            scale: None,
            default: None,
        }
    }

    /// `scale * numerator / denominator` (0 when the denominator is 0).
    pub fn ratio(name: impl Into<String>, numerator: &str, denominator: &str, scale: f64) -> Self {
        Self {
            numerator: Some(numerator.into()),
            denominator: Some(denominator.into()),
            scale: Some(scale),
            default: Some(0.0),
            ..Self::aggregate(name, Aggregation::Ratio, &[], None)
        }
    }
}

/// Why a spec is unusable: names the source (file), the feature and the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: {}{}{message}", feature_part(.feature), key_part(.key))]
pub struct SpecError {
    pub source_name: String,
    pub feature: Option<String>,
    pub key: Option<&'static str>,
    pub message: String,
}

fn feature_part(f: &Option<String>) -> String {
    f.as_ref()
        .map(|f| format!("feature {f:?}: "))
        .unwrap_or_default()
}

fn key_part(k: &Option<&'static str>) -> String {
    k.map(|k| format!("key `{k}`: ")).unwrap_or_default()
}

/// A compact event as the evaluator sees it: the type is an index into the
/// spec's type table (or [`OTHER_TYPE`]), the session a non-zero hash (0 =
/// none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserEvent {
    pub time: i64,
    pub type_idx: u16,
    pub session: u64,
    pub amount: Option<f64>,
}

/// Type index for event types the spec does not name.
pub const OTHER_TYPE: u16 = u16::MAX;

/// The index of `event_type` in a spec's type table
/// ([`FeatureSpec::event_types`]), [`OTHER_TYPE`] when absent.
pub fn type_index(types: &[String], event_type: &str) -> u16 {
    types
        .iter()
        .position(|t| t == event_type)
        .map_or(OTHER_TYPE, |p| p as u16)
}

/// Maps a session id to the non-zero key [`UserEvent`] uses for distinct
/// counts. `DefaultHasher::new()` has fixed keys, so this is deterministic;
/// keys are only compared within one evaluation, never stored.
pub fn session_key(session: Option<&str>) -> u64 {
    match session {
        None => 0,
        Some(s) => {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish() | 1
        }
    }
}

/// The event types one feature selects. Every event of every feature
/// passes this test, so the usual case (type indexes below 128: a spec
/// naming fewer than 128 types) is one bit test instead of a list search.
#[derive(Debug, Clone)]
enum TypeSet {
    Mask(u128),
    Sorted(Vec<u16>),
}

impl TypeSet {
    fn new(idx: &[u16]) -> Self {
        if idx.iter().all(|i| *i < 128) {
            Self::Mask(idx.iter().fold(0, |m, i| m | 1u128 << i))
        } else {
            let mut v = idx.to_vec();
            v.sort_unstable();
            v.dedup();
            Self::Sorted(v)
        }
    }

    fn contains(&self, idx: u16) -> bool {
        match self {
            Self::Mask(m) => idx < 128 && (m >> idx) & 1 == 1,
            Self::Sorted(v) => v.binary_search(&idx).is_ok(),
        }
    }
}

#[derive(Debug, Clone)]
enum Compiled {
    Aggregate {
        aggregation: Aggregation,
        /// Type indexes selected; `None` = all.
        types: Option<TypeSet>,
        window_secs: Option<i64>,
        sign: Option<AmountSign>,
    },
    Ratio {
        numerator: usize,
        denominator: usize,
        scale: f64,
        default: f64,
    },
}

/// A validated, ordered list of feature definitions.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    defs: Vec<FeatureDef>,
    /// Every event type the spec (or the label rule) names, by index.
    event_types: Vec<String>,
    compiled: Vec<Compiled>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    feature: Vec<FeatureDef>,
}

/// Event types are stored in canonical form ([`super::event::canonical_type`]);
/// a spec names them the same way.
fn normalize_type(t: &str) -> Result<String, String> {
    let t = super::event::canonical_type(t);
    if t.is_empty() {
        return Err("an event type is empty".into());
    }
    if t.len() > MAX_TYPE_LEN {
        return Err(format!(
            "{t:?} is not an event type (at most {MAX_TYPE_LEN} bytes)"
        ));
    }
    Ok(t)
}

impl FeatureSpec {
    /// Validates and compiles a list of definitions; `source_name` (the
    /// file) goes into every error.
    ///
    /// # Errors
    /// [`SpecError`] naming the feature and key at fault.
    pub fn new(defs: Vec<FeatureDef>, source_name: &str) -> Result<Self, SpecError> {
        let err = |feature: Option<&str>, key: Option<&'static str>, message: String| SpecError {
            source_name: source_name.to_string(),
            feature: feature.map(str::to_string),
            key,
            message,
        };
        if defs.is_empty() {
            return Err(err(None, None, "declares no [[feature]]".into()));
        }
        if defs.len() > MAX_FEATURES {
            return Err(err(
                None,
                None,
                format!("declares {} features; at most {MAX_FEATURES}", defs.len()),
            ));
        }
        let mut spec = Self {
            defs: Vec::with_capacity(defs.len()),
            event_types: Vec::new(),
            compiled: Vec::with_capacity(defs.len()),
        };
        for mut def in defs {
            let name = def.name.clone();
            let here = Some(name.as_str());
            if !is_identifier(&name) {
                return Err(err(
                    here,
                    Some("name"),
                    "must be an identifier: letters, digits and '_', not starting with a digit"
                        .into(),
                ));
            }
            if RESERVED_NAMES.contains(&name.as_str()) || name.starts_with("agg__") {
                return Err(err(
                    here,
                    Some("name"),
                    format!(
                        "is reserved (as are {RESERVED_NAMES:?} and names starting with agg__)"
                    ),
                ));
            }
            if spec.defs.iter().any(|d| d.name == name) {
                return Err(err(here, Some("name"), "is defined twice".into()));
            }
            let compiled = if def.aggregation == Aggregation::Ratio {
                if !def.event_types.is_empty() {
                    return Err(err(
                        here,
                        Some("event_types"),
                        "a ratio has no event filter: filter its operands".into(),
                    ));
                }
                if def.window_days.is_some() {
                    return Err(err(
                        here,
                        Some("window_days"),
                        "a ratio has no window: window its operands".into(),
                    ));
                }
                if def.amount_sign.is_some() {
                    return Err(err(
                        here,
                        Some("amount_sign"),
                        "a ratio has no amount filter: filter its operands".into(),
                    ));
                }
                let operand = |key: &'static str, value: &Option<String>| {
                    let Some(v) = value else {
                        return Err(err(here, Some(key), "is required for a ratio".into()));
                    };
                    spec.index_of(v).ok_or_else(|| {
                        err(
                            here,
                            Some(key),
                            format!("{v:?} is not a feature defined before this one"),
                        )
                    })
                };
                let numerator = operand("numerator", &def.numerator)?;
                let denominator = operand("denominator", &def.denominator)?;
                let scale = def.scale.unwrap_or(1.0);
                let default = def.default.unwrap_or(0.0);
                for (key, v) in [("scale", scale), ("default", default)] {
                    if !v.is_finite() {
                        return Err(err(here, Some(key), "must be a finite number".into()));
                    }
                }
                // Canonical form: the fingerprint must not depend on whether
                // a default was spelled out.
                def.scale = Some(scale);
                def.default = Some(default);
                Compiled::Ratio {
                    numerator,
                    denominator,
                    scale,
                    default,
                }
            } else {
                for (key, present) in [
                    ("numerator", def.numerator.is_some()),
                    ("denominator", def.denominator.is_some()),
                    ("scale", def.scale.is_some()),
                    ("default", def.default.is_some()),
                ] {
                    if present {
                        return Err(err(
                            here,
                            Some(key),
                            format!(
                                "only a ratio takes {key}; this is {}",
                                def.aggregation.as_str()
                            ),
                        ));
                    }
                }
                if let Some(w) = def.window_days
                    && !(1..=MAX_WINDOW_DAYS).contains(&w)
                {
                    return Err(err(
                        here,
                        Some("window_days"),
                        format!("must be within 1..={MAX_WINDOW_DAYS} days"),
                    ));
                }
                let mut types = Vec::new();
                for t in &def.event_types {
                    let t = normalize_type(t).map_err(|m| err(here, Some("event_types"), m))?;
                    if !types.contains(&t) {
                        types.push(t);
                    }
                }
                def.event_types = types;
                let idx: Vec<u16> = def
                    .event_types
                    .iter()
                    .map(|t| spec.intern(t))
                    .collect::<Result<_, _>>()
                    .map_err(|m| err(here, Some("event_types"), m))?;
                Compiled::Aggregate {
                    aggregation: def.aggregation,
                    types: (!idx.is_empty()).then(|| TypeSet::new(&idx)),
                    window_secs: def.window_days.map(|d| i64::from(d) * DAY_SECS),
                    sign: def.amount_sign,
                }
            };
            spec.defs.push(def);
            spec.compiled.push(compiled);
        }
        Ok(spec)
    }

    /// Parses and validates a spec file's text.
    ///
    /// # Errors
    /// [`SpecError`]: TOML syntax (with line and column), unknown keys or
    /// aggregations, or any rule of [`FeatureSpec::new`].
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, SpecError> {
        let file: SpecFile = toml::from_str(text).map_err(|e| {
            // Point at the feature when the parser can: `feature[3]` etc.
            SpecError {
                source_name: source_name.to_string(),
                feature: None,
                key: None,
                message: e.to_string().trim().replace('\n', " "),
            }
        })?;
        Self::new(file.feature, source_name)
    }

    /// The spec as TOML (what `churn features suggest` writes).
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            feature: &'a [FeatureDef],
        }
        toml::to_string(&Out {
            feature: &self.defs,
        })
        .unwrap_or_default()
    }

    /// The built-in standard spec (`features/standard.toml`): the seed's
    /// four features (`days_active`, `total_events`, `avg_events_per_day`,
    /// `last_event_days_ago`) plus tenure, windowed activity, per-type counts
    /// and recencies over the generator's types, purchase amounts, the
    /// activity trend and the rhythm of active days.
    pub fn standard() -> Self {
        // The file ships with the binary and a test parses it; failing here
        // is a build defect, not an input error.
        Self::from_toml(STANDARD_SPEC_TOML, "features/standard.toml")
            .expect("the built-in standard spec is valid")
    }

    /// Adds event types the label rule names to the type table, so the
    /// evaluator's type indexes cover them too. The fingerprint is unchanged
    /// (it covers the feature definitions only).
    ///
    /// # Errors
    /// More than `u16::MAX - 1` distinct types, or an invalid type name.
    pub fn with_types(mut self, types: &[String]) -> Result<Self, String> {
        for t in types {
            self.intern(&normalize_type(t)?)?;
        }
        Ok(self)
    }

    fn intern(&mut self, t: &str) -> Result<u16, String> {
        if let Some(p) = self.event_types.iter().position(|k| k == t) {
            return Ok(p as u16);
        }
        if self.event_types.len() >= usize::from(OTHER_TYPE) {
            return Err("too many distinct event types".into());
        }
        self.event_types.push(t.to_string());
        Ok((self.event_types.len() - 1) as u16)
    }

    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.defs.iter().map(|d| d.name.clone()).collect()
    }

    /// Position of a feature by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// The feature the recency rule (the baseline every model must beat)
    /// ranks by: the first unfiltered, unwindowed `days_since_last`, else
    /// the first `days_since_last` of any kind.
    pub fn recency_index(&self) -> Option<usize> {
        let recency = |d: &FeatureDef| d.aggregation == Aggregation::DaysSinceLast;
        self.defs
            .iter()
            .position(|d| recency(d) && d.event_types.is_empty() && d.window_days.is_none())
            .or_else(|| self.defs.iter().position(recency))
    }

    /// Event types in the type table, in index order.
    pub fn event_types(&self) -> &[String] {
        &self.event_types
    }

    /// The index the evaluator uses for an event type.
    pub fn type_index(&self, event_type: &str) -> u16 {
        type_index(&self.event_types, event_type)
    }

    /// A short fingerprint of the definitions (and their format version):
    /// models record it, and serving refuses a model whose features were
    /// defined differently.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(&(SPEC_FORMAT, &self.defs)).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Computes every feature as of `as_of` from one user's events, which
    /// must be sorted by time. Events after `as_of` are ignored, which is what
    /// makes training rows point-in-time correct. Returns `false` (and leaves
    /// `out` empty) when the user has no event at or before `as_of`.
    pub fn evaluate(&self, events: &[UserEvent], as_of: i64, out: &mut Vec<f64>) -> bool {
        self.evaluate_tracked(events, as_of, out, None)
    }

    /// [`FeatureSpec::evaluate`], also recording in `live` what a
    /// [`super::live_row::LiveRow`] needs to answer at later times: the
    /// reference time of every `days_since_*` value and the first time at
    /// which any other value could change.
    pub(super) fn evaluate_tracked(
        &self,
        events: &[UserEvent],
        as_of: i64,
        out: &mut Vec<f64>,
        mut live: Option<&mut LiveTrack>,
    ) -> bool {
        out.clear();
        let end = events.partition_point(|e| e.time <= as_of);
        let history = &events[..end];
        let Some(first) = history.first() else {
            return false;
        };
        if let Some(live) = live.as_deref_mut() {
            live.anchors.clear();
            // An event stored with a later time enters every window when
            // its time comes.
            live.valid_until = events.get(end).map_or(i64::MAX, |e| e.time);
        }
        let tenure = days_between(first.time, as_of);
        let mut scratch = Vec::new();
        for (i, c) in self.compiled.iter().enumerate() {
            let value = match c {
                Compiled::Aggregate {
                    aggregation,
                    types,
                    window_secs,
                    sign,
                } => {
                    let start =
                        window_secs.map_or(0, |w| history.partition_point(|e| e.time <= as_of - w));
                    let selected = history[start..].iter().filter(|e| {
                        types.as_ref().is_none_or(|t| t.contains(e.type_idx))
                            && sign.is_none_or(|s| s.admits(e.amount))
                    });
                    if let Some(live) = live.as_deref_mut() {
                        // The oldest event inside the window leaves it at
                        // its time + window (the window is `(T - w, T]`):
                        // until then the selection is unchanged.
                        if let (Some(w), Some(oldest)) = (window_secs, history.get(start)) {
                            live.valid_until = live.valid_until.min(oldest.time.saturating_add(*w));
                        }
                        let mut selected = selected.clone();
                        let anchor = match aggregation {
                            Aggregation::DaysSinceLast => {
                                Some(selected.next_back().map_or(first.time, |e| e.time))
                            }
                            Aggregation::DaysSinceFirst => selected.next().map(|e| e.time),
                            _ => None,
                        };
                        if let Some(t) = anchor {
                            live.anchors.push((i as u32, t));
                        }
                    }
                    aggregate(*aggregation, selected, as_of, tenure, &mut scratch)
                }
                Compiled::Ratio {
                    numerator,
                    denominator,
                    scale,
                    default,
                } => ratio(out, *numerator, *denominator, *scale, *default),
            };
            out.push(value);
        }
        true
    }

    /// The features some ratio divides (numerators and denominators).
    pub(super) fn ratio_operands(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .compiled
            .iter()
            .filter_map(|c| match c {
                Compiled::Ratio {
                    numerator,
                    denominator,
                    ..
                } => Some([*numerator, *denominator]),
                Compiled::Aggregate { .. } => None,
            })
            .flatten()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Recomputes the values that move with time alone: `days_since_*`
    /// from their reference times, then every ratio (in spec order, so a
    /// ratio of ratios sees its operands' new values).
    pub(super) fn advance(&self, out: &mut [f64], anchors: &[(u32, i64)], at: i64) {
        for &(i, t) in anchors {
            if let Some(v) = out.get_mut(i as usize) {
                *v = days_between(t, at);
            }
        }
        for (i, c) in self.compiled.iter().enumerate() {
            if let Compiled::Ratio {
                numerator,
                denominator,
                scale,
                default,
            } = c
            {
                out[i] = ratio(out, *numerator, *denominator, *scale, *default);
            }
        }
    }
}

/// What [`FeatureSpec::evaluate_tracked`] records for a live row.
#[derive(Debug, Default)]
pub(super) struct LiveTrack {
    pub(super) anchors: Vec<(u32, i64)>,
    pub(super) valid_until: i64,
}

fn ratio(out: &[f64], numerator: usize, denominator: usize, scale: f64, default: f64) -> f64 {
    let den = out[denominator];
    if den == 0.0 {
        default
    } else {
        scale * out[numerator] / den
    }
}

fn aggregate<'a>(
    aggregation: Aggregation,
    mut selected: impl Iterator<Item = &'a UserEvent>,
    as_of: i64,
    tenure: f64,
    scratch: &mut Vec<u64>,
) -> f64 {
    match aggregation {
        Aggregation::Count => selected.count() as f64,
        Aggregation::ActiveDays => {
            // Events are time-sorted, so days only change forward.
            let mut last_day = None;
            let mut days = 0u32;
            for e in selected {
                let d = day_of(e.time);
                if last_day != Some(d) {
                    days += 1;
                    last_day = Some(d);
                }
            }
            f64::from(days)
        }
        Aggregation::DistinctSessions => {
            scratch.clear();
            scratch.extend(selected.map(|e| e.session).filter(|s| *s != 0));
            scratch.sort_unstable();
            scratch.dedup();
            scratch.len() as f64
        }
        // fold from +0.0: `Sum` of nothing is -0.0, which ClickHouse never gives.
        Aggregation::SumAmount => selected.filter_map(|e| e.amount).fold(0.0, |s, a| s + a),
        Aggregation::MeanAmount => {
            let (mut n, mut sum) = (0u64, 0.0);
            for a in selected.filter_map(|e| e.amount) {
                n += 1;
                sum += a;
            }
            if n == 0 { 0.0 } else { sum / n as f64 }
        }
        Aggregation::MaxAmount => selected
            .filter_map(|e| e.amount)
            .reduce(f64::max)
            .unwrap_or(0.0),
        Aggregation::MinAmount => selected
            .filter_map(|e| e.amount)
            .reduce(f64::min)
            .unwrap_or(0.0),
        Aggregation::DaysSinceLast => selected
            .last()
            .map_or(tenure, |e| days_between(e.time, as_of)),
        Aggregation::DaysSinceFirst => selected.next().map_or(0.0, |e| days_between(e.time, as_of)),
        Aggregation::GapMean => gap_stats(selected).0,
        Aggregation::GapStd => gap_stats(selected).1,
        // Ratios are computed from other features, never aggregated.
        Aggregation::Ratio => 0.0,
    }
}

fn days_between(earlier: i64, later: i64) -> f64 {
    (later - earlier) as f64 / DAY_SECS as f64
}

/// Mean and population standard deviation of gaps (in days) between
/// consecutive distinct active days.
fn gap_stats<'a>(selected: impl Iterator<Item = &'a UserEvent>) -> (f64, f64) {
    let mut days = selected.map(|e| day_of(e.time));
    let Some(mut prev) = days.next() else {
        return (0.0, 0.0);
    };
    let (mut n, mut sum, mut sum_sq) = (0u32, 0i64, 0i64);
    for d in days {
        if d != prev {
            let gap = d - prev;
            n += 1;
            sum += gap;
            sum_sq += gap * gap;
            prev = d;
        }
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    // Integer sums keep the result exact and independent of summation order,
    // which is what lets other backends reproduce it bit for bit.
    let n = f64::from(n);
    let mean = sum as f64 / n;
    let var = (sum_sq as f64 / n - mean * mean).max(0.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600; // 2026-01-01 00:00:00
    const H: i64 = 3_600;

    fn ev(spec: &FeatureSpec, time: i64, t: &str, session: Option<&str>, amount: f64) -> UserEvent {
        UserEvent {
            time,
            type_idx: spec.type_index(t),
            session: session_key(session),
            amount: (amount != 0.0).then_some(amount),
        }
    }

    fn value(spec: &FeatureSpec, out: &[f64], name: &str) -> f64 {
        out[spec.index_of(name).unwrap()]
    }

    #[test]
    fn type_sets_answer_like_a_list_search() {
        for idx in [vec![0u16, 5, 127], vec![3, 200, 65_000], vec![127, 128]] {
            let set = TypeSet::new(&idx);
            for probe in [0u16, 1, 3, 5, 126, 127, 128, 200, 65_000, OTHER_TYPE] {
                assert_eq!(set.contains(probe), idx.contains(&probe), "{idx:?} {probe}");
            }
        }
        assert!(matches!(TypeSet::new(&[1, 127]), TypeSet::Mask(_)));
    }

    #[test]
    fn the_standard_spec_file_holds_the_54_standard_features() {
        let spec = FeatureSpec::standard();
        let names = spec.names();
        assert_eq!(spec.len(), 54);
        assert_eq!(
            &names[..4],
            [
                "days_active",
                "total_events",
                "avg_events_per_day",
                "last_event_days_ago"
            ]
        );
        assert_eq!(names[53], "active_day_gap_std");
        assert_eq!(spec.fingerprint(), FeatureSpec::standard().fingerprint());
        assert_eq!(spec.recency_index(), Some(3));
        // Written out and read back: the same spec.
        let again = FeatureSpec::from_toml(&spec.to_toml(), "roundtrip").unwrap();
        assert_eq!(again.defs(), spec.defs());
        assert_eq!(again.fingerprint(), spec.fingerprint());
    }

    #[test]
    fn hand_computed_example() {
        let spec = FeatureSpec::standard();
        let d = DAY_SECS;
        // Active days: T-40d, T-10d, T-10d (same day), T-3d, T (exactly at T).
        let events = vec![
            ev(&spec, T - 40 * d, "login", Some("a"), 0.0),
            ev(&spec, T - 10 * d, "view", Some("b"), 0.0),
            ev(&spec, T - 10 * d + H, "purchase", Some("b"), 20.0),
            ev(&spec, T - 3 * d, "login", Some("c"), 0.0),
            ev(&spec, T, "purchase", None, 5.5),
            // After T: must be invisible.
            ev(&spec, T + 1, "purchase", Some("z"), 1000.0),
            ev(&spec, T + 5 * d, "login", Some("y"), 0.0),
        ];
        let mut out = Vec::new();
        assert!(spec.evaluate(&events, T, &mut out));
        assert_eq!(out.len(), spec.len());
        assert_eq!(value(&spec, &out, "days_active"), 4.0);
        assert_eq!(value(&spec, &out, "total_events"), 5.0);
        assert_eq!(value(&spec, &out, "avg_events_per_day"), 1.25);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), 0.0);
        assert_eq!(value(&spec, &out, "tenure_days"), 40.0);
        assert_eq!(value(&spec, &out, "events_7d"), 2.0);
        assert_eq!(value(&spec, &out, "events_14d"), 4.0);
        assert_eq!(value(&spec, &out, "events_30d"), 4.0);
        assert_eq!(value(&spec, &out, "events_90d"), 5.0);
        assert_eq!(value(&spec, &out, "active_days_14d"), 3.0);
        assert_eq!(value(&spec, &out, "sessions_14d"), 2.0);
        assert_eq!(value(&spec, &out, "sessions_90d"), 3.0);
        assert_eq!(value(&spec, &out, "purchase_count_7d"), 1.0);
        assert_eq!(value(&spec, &out, "purchase_count_total"), 2.0);
        assert_eq!(value(&spec, &out, "purchase_amount_30d"), 25.5);
        assert_eq!(value(&spec, &out, "login_count_30d"), 1.0);
        assert_eq!(value(&spec, &out, "days_since_last_login"), 3.0);
        assert_eq!(value(&spec, &out, "days_since_last_view"), 10.0);
        // Never opened a ticket: censored at the tenure, not a fixed cap.
        assert_eq!(value(&spec, &out, "days_since_last_support_ticket"), 40.0);
        // 7-day rate 2/7 against 30-day rate 4/30.
        let trend = value(&spec, &out, "activity_trend_7d_30d");
        assert!((trend - (2.0 / 7.0) / (4.0 / 30.0)).abs() < 1e-12);
        // Gaps between active days: 30, 7, 3 -> mean 40/3.
        let mean = value(&spec, &out, "active_day_gap_mean");
        assert!((mean - 40.0 / 3.0).abs() < 1e-12);
        let var = (30f64.powi(2) + 49.0 + 9.0) / 3.0 - (40.0f64 / 3.0).powi(2);
        assert!((value(&spec, &out, "active_day_gap_std") - var.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn declared_aggregations_over_custom_types() {
        let toml = r#"
            [[feature]]
            name = "answers_30d"
            aggregation = "count"
            event_types = ["Answer", "comment"]
            window_days = 30
            [[feature]]
            name = "mean_spend"
            aggregation = "mean_amount"
            [[feature]]
            name = "max_spend"
            aggregation = "max_amount"
            event_types = ["purchase"]
            [[feature]]
            name = "days_since_question"
            aggregation = "days_since_last"
            event_types = ["question"]
            [[feature]]
            name = "answer_gap"
            aggregation = "gap_mean"
            event_types = ["answer"]
            [[feature]]
            name = "spend_per_answer"
            aggregation = "ratio"
            numerator = "max_spend"
            denominator = "answers_30d"
        "#;
        let spec = FeatureSpec::from_toml(toml, "qa.toml").unwrap();
        assert_eq!(
            spec.event_types(),
            ["answer", "comment", "purchase", "question"]
        );
        let d = DAY_SECS;
        let events = vec![
            ev(&spec, T - 100 * d, "answer", None, 0.0),
            ev(&spec, T - 20 * d, "answer", None, 0.0),
            ev(&spec, T - 5 * d, "purchase", None, 12.0),
            ev(&spec, T - 4 * d, "comment", None, 0.0),
            ev(&spec, T - 2 * d, "purchase", None, 4.0),
            ev(&spec, T - d, "answer", None, 0.0),
        ];
        let mut out = Vec::new();
        assert!(spec.evaluate(&events, T, &mut out));
        assert_eq!(out, vec![3.0, 8.0, 12.0, 100.0, (80.0 + 19.0) / 2.0, 4.0]);
    }

    #[test]
    fn window_boundaries_are_half_open() {
        let spec = FeatureSpec::standard();
        // Exactly 7 days before T falls outside the 7-day window (T-7d, T].
        let events = vec![
            ev(&spec, T - 7 * DAY_SECS, "view", None, 0.0),
            ev(&spec, T - 7 * DAY_SECS + 1, "view", None, 0.0),
        ];
        let mut out = Vec::new();
        spec.evaluate(&events, T, &mut out);
        assert_eq!(value(&spec, &out, "view_count_7d"), 1.0);
        assert_eq!(value(&spec, &out, "view_count_14d"), 2.0);
    }

    #[test]
    fn no_history_before_t_means_no_row_and_single_event_users_work() {
        let spec = FeatureSpec::standard();
        let events = vec![ev(&spec, T + 10, "login", None, 0.0)];
        let mut out = vec![1.0];
        assert!(!spec.evaluate(&events, T, &mut out));
        assert!(out.is_empty());
        assert!(spec.evaluate(&events, T + 10 + DAY_SECS / 2, &mut out));
        assert_eq!(value(&spec, &out, "days_active"), 1.0);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), 0.5);
        assert_eq!(value(&spec, &out, "active_day_gap_mean"), 0.0);
        assert_eq!(value(&spec, &out, "activity_trend_7d_30d"), 30.0 / 7.0);
    }

    #[test]
    fn recency_is_not_capped_and_unknown_types_only_count_in_totals() {
        let spec = FeatureSpec::standard();
        let events = vec![ev(&spec, T - 5_000 * DAY_SECS, "webinar", None, 0.0)];
        assert_eq!(events[0].type_idx, OTHER_TYPE);
        let mut out = Vec::new();
        spec.evaluate(&events, T, &mut out);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), 5_000.0);
        assert_eq!(value(&spec, &out, "total_events"), 1.0);
        assert_eq!(value(&spec, &out, "login_count_90d"), 0.0);
    }

    #[test]
    fn spec_errors_name_the_file_the_feature_and_the_key() {
        let err = |toml: &str| FeatureSpec::from_toml(toml, "team.toml").unwrap_err();
        let e = err("[[feature]]\nname = \"a\"\naggregation = \"count\"\nwindow_days = 0\n");
        assert_eq!(e.key, Some("window_days"));
        assert_eq!(e.feature.as_deref(), Some("a"));
        assert!(
            e.to_string()
                .starts_with("team.toml: feature \"a\": key `window_days`"),
            "{e}"
        );
        let e = err(
            "[[feature]]\nname = \"r\"\naggregation = \"ratio\"\nnumerator = \"x\"\ndenominator = \"y\"\n",
        );
        assert_eq!(e.key, Some("numerator"));
        let e = err("[[feature]]\nname = \"c\"\naggregation = \"count\"\nscale = 2.0\n");
        assert_eq!(e.key, Some("scale"));
        let e = err("[[feature]]\nname = \"1x\"\naggregation = \"count\"\n");
        assert_eq!(e.key, Some("name"));
        let e = err(
            "[[feature]]\nname = \"a\"\naggregation = \"count\"\n[[feature]]\nname = \"a\"\naggregation = \"count\"\n",
        );
        assert!(e.to_string().contains("defined twice"), "{e}");
        let e = err("[[feature]]\nname = \"a\"\naggregation = \"median\"\n");
        assert!(e.to_string().contains("median"), "{e}");
        let e = err("[[feature]]\nname = \"a\"\naggregation = \"count\"\nwindow = 7\n");
        assert!(e.to_string().contains("window"), "{e}");
        let e =
            err("[[feature]]\nname = \"a\"\naggregation = \"count\"\nevent_types = [\" / \"]\n");
        assert_eq!(e.key, Some("event_types"));
        assert!(err("").to_string().contains("no [[feature]]"));
    }

    #[test]
    fn fingerprints_follow_meaning_not_spelling() {
        let with = "[[feature]]\nname = \"n\"\naggregation = \"count\"\n[[feature]]\nname = \"r\"\naggregation = \"ratio\"\nnumerator = \"n\"\ndenominator = \"n\"\nscale = 1.0\n";
        let without = "[[feature]]\nname = \"n\"\naggregation = \"count\"\n[[feature]]\nname = \"r\"\naggregation = \"ratio\"\nnumerator = \"n\"\ndenominator = \"n\"\n";
        let a = FeatureSpec::from_toml(with, "a").unwrap();
        let b = FeatureSpec::from_toml(without, "b").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = FeatureSpec::from_toml(&without.replace("count", "active_days"), "c").unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        // Extra label types do not change what the features mean.
        let d = b.clone().with_types(&["cancel".into()]).unwrap();
        assert_eq!(d.fingerprint(), b.fingerprint());
        assert_ne!(d.type_index("cancel"), OTHER_TYPE);
    }
}
