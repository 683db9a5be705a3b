//! Renders the shared feature spec and label policy to ClickHouse SQL — the
//! same [`FeatureDef`]s the embedded store evaluates in Rust, so there is no
//! second, hand-written copy of the feature logic.
//!
//! The SQL sticks to what both ClickHouse 18.16 (Debian's server) and modern
//! releases accept: no CTEs, window functions, query parameters or
//! `DateTime64`. Times are compared as whole seconds (`t`), days are
//! `intDiv(t, 86400)` (UTC, whatever the server's timezone), and every
//! arithmetic step mirrors `FeatureSpec::evaluate` so results match bit for
//! bit (sums of amounts aside, whose order differs). Feature names are
//! quoted (`` `name` ``), so no name can collide with a keyword; helper
//! columns use the `agg__` prefix, which no identifier-checked feature of
//! the same query can shadow.

use crate::domain::features::{Aggregation, AmountSign, FeatureDef, FeatureSpec};
use crate::domain::label::LabelPolicy;
use crate::domain::sampling::RowSample;
use crate::domain::time::DAY_SECS;

/// Why SQL could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SqlError {
    #[error("{0:?} is not a safe SQL identifier (letters, digits and '_' only)")]
    Identifier(String),
}

/// Checks an identifier (database, feature name) before it enters SQL.
///
/// # Errors
/// [`SqlError::Identifier`] for anything but `[A-Za-z0-9_]+` not starting with a digit.
pub fn identifier(name: &str) -> Result<&str, SqlError> {
    if crate::domain::identifier::is_identifier(name) {
        Ok(name)
    } else {
        Err(SqlError::Identifier(name.to_string()))
    }
}

/// A quoted identifier.
fn quoted(name: &str) -> Result<String, SqlError> {
    Ok(format!("`{}`", identifier(name)?))
}

/// A single-quoted SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A float literal that parses back to the same `f64`.
fn float(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.")
    }
}

/// `event_type IN (...)` for a list of types.
fn type_in(types: &[String]) -> String {
    let list: Vec<String> = types
        .iter()
        .map(|t| quote(&crate::domain::event::canonical_type(t)))
        .collect();
    format!("event_type IN ({})", list.join(", "))
}

/// The events of one database with `t` (seconds) up to `until`;
/// `amount_or_zero` for sums, `amount_raw` for "present amounts only".
/// (No alias may be named `amount`: ClickHouse substitutes aliases inside
/// the same SELECT, so `amount AS amount_raw` would read the default.)
fn events_source(db: &str, dedup: Dedup, until: i64, also: Option<String>) -> String {
    let also = also.map(|c| format!(" AND {c}")).unwrap_or_default();
    format!(
        "(SELECT user_id, toInt64(toUInt32(event_time)) AS t, event_type, session_id, \
         amount AS amount_raw, ifNull(amount_raw, 0.) AS amount_or_zero FROM {db}.events{final_} \
         WHERE event_time <= toDateTime({until}){also})",
        final_ = dedup.final_keyword()
    )
}

/// `sql` (rendered by this module) reading and writing a shard's local
/// tables instead of the Distributed fronts of cluster mode: what runs on
/// each shard when users are sharded (their rows never leave the shard).
pub fn on_shard_tables(sql: &str, db: &str) -> String {
    sql.replace(&format!("{db}.events "), &format!("{db}.events_local "))
        .replace(
            &format!("{db}.feature_vectors ("),
            &format!("{db}.feature_vectors_local ("),
        )
}

/// `sql` reading `FINAL` through cluster mode's Distributed `events`
/// table: 18.16 applies `FINAL` there only when the sorting-key columns
/// are selected, so every column is read in a subquery.
pub fn final_through_distributed(sql: &str, db: &str) -> String {
    sql.replace(
        &format!("{db}.events FINAL "),
        &format!("(SELECT * FROM {db}.events FINAL) "),
    )
}

/// Where redelivered events are removed, which decides how reads look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Redeliveries are recognised before the insert (`clickhouse.dedup_check`):
    /// the table holds each event once and reads need no `FINAL`.
    OnWrite,
    /// Every row sent is written; `ReplacingMergeTree` + `FINAL` collapse
    /// repeats on read (18.16's `FINAL` is single-threaded per partition:
    /// an order of magnitude slower than the plain read).
    OnRead,
}

impl Dedup {
    /// What follows `FROM <db>.events`.
    pub fn final_keyword(self) -> &'static str {
        match self {
            Self::OnWrite => "",
            Self::OnRead => " FINAL",
        }
    }
}

/// `a AND b AND ...`, or `1` for nothing.
fn all(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "1".into()
    } else {
        parts.join(" AND ")
    }
}

/// The row filter of one aggregate feature at `as_of`.
fn condition(def: &FeatureDef, as_of: i64, bounded: bool) -> String {
    let mut parts = Vec::new();
    if !def.event_types.is_empty() {
        parts.push(type_in(&def.event_types));
    }
    if let Some(w) = def.window_days {
        parts.push(format!("t > {}", as_of - i64::from(w) * DAY_SECS));
    }
    // A missing amount is 0 here, which neither sign admits.
    match def.amount_sign {
        Some(AmountSign::Positive) => parts.push("amount_or_zero > 0".into()),
        Some(AmountSign::Negative) => parts.push("amount_or_zero < 0".into()),
        None => {}
    }
    if bounded {
        parts.push(format!("t <= {as_of}"));
    }
    all(parts)
}

/// The inner aggregate of one feature (a column `agg__<name>`), if any.
fn aggregate(def: &FeatureDef, as_of: i64, bounded: bool) -> Option<String> {
    let c = condition(def, as_of, bounded);
    let c_all = if bounded {
        format!("t <= {as_of}")
    } else {
        "1".into()
    };
    let present = format!("({c}) AND isNotNull(amount_raw)");
    Some(match def.aggregation {
        Aggregation::Count => format!("toFloat64(countIf({c}))"),
        Aggregation::ActiveDays => format!("toFloat64(uniqExactIf(intDiv(t, {DAY_SECS}), {c}))"),
        Aggregation::DistinctSessions => format!(
            "toFloat64(uniqExactIf(assumeNotNull(session_id), ({c}) AND isNotNull(session_id)))"
        ),
        Aggregation::SumAmount => format!("sumIf(amount_or_zero, {c})"),
        Aggregation::MeanAmount => format!(
            "if(countIf({present}) = 0, 0., sumIf(amount_or_zero, {present}) / countIf({present}))"
        ),
        Aggregation::MaxAmount => {
            format!("if(countIf({present}) = 0, 0., maxIf(amount_or_zero, {present}))")
        }
        Aggregation::MinAmount => {
            format!("if(countIf({present}) = 0, 0., minIf(amount_or_zero, {present}))")
        }
        // No selected event: the tenure (days since the first event of any
        // type), as the evaluator does.
        Aggregation::DaysSinceLast => format!(
            "if(countIf({c}) = 0, ({as_of} - minIf(t, {c_all})) / {DAY_SECS}, ({as_of} - maxIf(t, {c})) / {DAY_SECS})"
        ),
        Aggregation::DaysSinceFirst => {
            format!("if(countIf({c}) = 0, 0., ({as_of} - minIf(t, {c})) / {DAY_SECS})")
        }
        Aggregation::GapMean | Aggregation::GapStd => {
            format!("arraySort(groupUniqArrayIf(intDiv(t, {DAY_SECS}), {c}))")
        }
        Aggregation::Ratio => return None,
    })
}

/// The outer expression of one feature, from its aggregate column or (for
/// ratios) from features defined before it.
fn expression(def: &FeatureDef) -> Result<String, SqlError> {
    let agg = format!("agg__{}", identifier(&def.name)?);
    // Gaps between consecutive distinct active days (integers: exact sums).
    let gaps = format!(
        "arrayMap((x, y) -> y - x, arraySlice({agg}, 1, length({agg}) - 1), arraySlice({agg}, 2, length({agg}) - 1))"
    );
    let n = format!("(length({agg}) - 1)");
    Ok(match def.aggregation {
        Aggregation::Ratio => {
            let num = quoted(def.numerator.as_deref().unwrap_or_default())?;
            let den = quoted(def.denominator.as_deref().unwrap_or_default())?;
            format!(
                "toFloat64(if({den} = 0, {}, {} * {num} / {den}))",
                float(def.default.unwrap_or(0.0)),
                float(def.scale.unwrap_or(1.0))
            )
        }
        Aggregation::GapMean => format!("toFloat64(if({n} <= 0, 0., arraySum({gaps}) / {n}))"),
        Aggregation::GapStd => format!(
            "toFloat64(if({n} <= 0, 0., sqrt(greatest(arraySum(arrayMap(g -> g * g, {gaps})) / {n} \
             - (arraySum({gaps}) / {n}) * (arraySum({gaps}) / {n}), 0.))))"
        ),
        _ => format!("toFloat64({agg})"),
    })
}

/// Inner aggregates and outer expressions (aliased by the quoted feature
/// names) of the spec at `as_of`. `bounded` adds `t <= as_of` to every
/// filter (training sets read events past the cutoff for the labels).
fn select_lists(
    spec: &FeatureSpec,
    as_of: i64,
    bounded: bool,
) -> Result<(Vec<String>, Vec<String>), SqlError> {
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    for def in spec.defs() {
        let name = identifier(&def.name)?;
        if let Some(a) = aggregate(def, as_of, bounded) {
            inner.push(format!("{a} AS agg__{name}"));
        }
        outer.push(format!("{} AS {}", expression(def)?, quoted(name)?));
    }
    Ok((inner, outer))
}

/// The spec's features as one `Array(Float64)` expression, in order.
fn feature_array(spec: &FeatureSpec) -> Result<String, SqlError> {
    let names: Vec<String> = spec
        .defs()
        .iter()
        .map(|d| quoted(&d.name))
        .collect::<Result<_, _>>()?;
    Ok(format!("[{}]", names.join(", ")))
}

/// Every user's features as of `as_of` as `(user_id, Array(Float32))`
/// rows, rounded as stored snapshots are (not stored).
///
/// # Errors
/// [`SqlError`] for unsafe identifiers.
pub fn compute_snapshot(
    spec: &FeatureSpec,
    db: &str,
    dedup: Dedup,
    as_of: i64,
) -> Result<String, SqlError> {
    let db = identifier(db)?;
    let (inner, outer) = select_lists(spec, as_of, false)?;
    Ok(format!(
        "SELECT user_id, arrayMap(x -> toFloat32(x), {array}) AS features FROM (\
         SELECT user_id, {outer} FROM (SELECT user_id, {inner} FROM {src} GROUP BY user_id))",
        array = feature_array(spec)?,
        outer = outer.join(", "),
        inner = inner.join(", "),
        src = events_source(db, dedup, as_of, None),
    ))
}

/// `INSERT … SELECT` computing every user's features as of `as_of` into
/// `<db>.feature_vectors` under the spec's fingerprint.
///
/// # Errors
/// [`SqlError`] for unsafe identifiers.
pub fn build_snapshot(
    spec: &FeatureSpec,
    db: &str,
    dedup: Dedup,
    as_of: i64,
) -> Result<String, SqlError> {
    let db = identifier(db)?;
    let (inner, outer) = select_lists(spec, as_of, false)?;
    Ok(format!(
        "INSERT INTO {db}.feature_vectors (fingerprint, as_of, user_id, feature_values) \
         SELECT {fp}, toDateTime({as_of}), user_id, arrayMap(x -> toFloat32(x), {array}) FROM (\
         SELECT user_id, {outer} FROM (SELECT user_id, {inner} FROM {src} GROUP BY user_id))",
        fp = quote(&spec.fingerprint()),
        array = feature_array(spec)?,
        outer = outer.join(", "),
        inner = inner.join(", "),
        src = events_source(db, dedup, as_of, None),
    ))
}

/// Features as of `cutoff` and the churn label over `(cutoff, cutoff + H]`
/// for eligible users (see `domain::label` for the rule), as
/// `(user_id, Array(Float64), UInt8)` rows ordered by user id.
///
/// # Errors
/// [`SqlError`] for unsafe identifiers.
pub fn training_set(
    spec: &FeatureSpec,
    db: &str,
    dedup: Dedup,
    policy: &LabelPolicy,
    cutoff: i64,
    sample: RowSample,
) -> Result<String, SqlError> {
    let db = identifier(db)?;
    let (mut inner, mut outer) = select_lists(spec, cutoff, true)?;
    // The label rule's windows come from the domain, as the embedded
    // store's evaluation does.
    let (e, h) = (
        policy.eligibility_window(cutoff),
        policy.horizon_window(cutoff),
    );
    let churn = type_in(&policy.churn_event_types);
    let act = if !policy.activity_event_types.is_empty() {
        type_in(&policy.activity_event_types)
    } else if policy.explicit() {
        format!("NOT ({churn})")
    } else {
        "1".into()
    };
    let in_h = format!("t > {} AND t <= {}", h.after, h.until);
    inner.push(format!(
        "countIf(({act}) AND t > {} AND t <= {}) AS agg__eligible",
        e.after, e.until
    ));
    outer.push("agg__eligible".into());
    let mut keep = format!("agg__eligible >= {}", policy.min_events.max(1));
    if policy.explicit() {
        for (alias, expr) in [
            (
                "agg__n_churn_before",
                format!("countIf(({churn}) AND t <= {cutoff})"),
            ),
            (
                "agg__churn_before",
                format!("maxIf(t, ({churn}) AND t <= {cutoff})"),
            ),
            (
                "agg__act_before",
                format!("maxIf(t, ({act}) AND t <= {cutoff})"),
            ),
            ("agg__n_churn_h", format!("countIf(({churn}) AND {in_h})")),
            (
                "agg__last_churn_h",
                format!("maxIf(t, ({churn}) AND {in_h})"),
            ),
            ("agg__n_act_h", format!("countIf(({act}) AND {in_h})")),
            ("agg__last_act_h", format!("maxIf(t, ({act}) AND {in_h})")),
        ] {
            inner.push(format!("{expr} AS {alias}"));
            outer.push(alias.to_string());
        }
        outer.push(
            "toUInt8(agg__n_churn_h > 0 AND (agg__n_act_h = 0 OR agg__last_act_h <= agg__last_churn_h)) AS churned"
                .into(),
        );
        // Already churned before T: the last churn event is newer than the
        // last activity (eligibility guarantees there is activity).
        keep.push_str(" AND NOT (agg__n_churn_before > 0 AND agg__churn_before > agg__act_before)");
    } else {
        inner.push(format!("countIf(({act}) AND {in_h}) AS agg__after"));
        outer.push("agg__after".into());
        outer.push("toUInt8(agg__after = 0) AS churned".into());
    }
    Ok(format!(
        "SELECT user_id, {array} AS features, churned FROM (\
         SELECT user_id, {outer} FROM (SELECT user_id, {inner} FROM {src} GROUP BY user_id)) \
         WHERE {keep} ORDER BY user_id",
        array = feature_array(spec)?,
        outer = outer.join(", "),
        inner = inner.join(", "),
        src = events_source(db, dedup, h.until, sampled(sample)),
    ))
}

/// The events filter of a row sample: the same hash and threshold as
/// [`RowSample::keeps`], applied before the aggregation.
fn sampled(sample: RowSample) -> Option<String> {
    (!sample.is_all()).then(|| {
        format!(
            "intHash64(bitXor(user_id, toUInt64({}))) % {} < {}",
            sample.salt(),
            crate::domain::sampling::SCALE,
            sample.keep()
        )
    })
}

/// Column names of a migration's `CREATE TABLE` (for the schema check).
pub fn create_table_columns(ddl: &str) -> Vec<String> {
    let code: String = ddl
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let (Some(start), Some(end)) = (code.find('('), code.find("ENGINE")) else {
        return Vec::new();
    };
    code[start + 1..end]
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != ")")
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_safe() {
        assert!(identifier("churn_test_1").is_ok());
        assert!(identifier("x; DROP TABLE y").is_err());
        assert!(identifier("1abc").is_err());
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(float(365.0), "365.0");
        assert_eq!(float(30.0 / 7.0).parse::<f64>().unwrap(), 30.0 / 7.0);
    }

    #[test]
    fn shard_sql_names_only_local_tables() {
        let spec = FeatureSpec::standard();
        for dedup in [Dedup::OnRead, Dedup::OnWrite] {
            let build =
                on_shard_tables(&build_snapshot(&spec, "db1", dedup, 1_000).unwrap(), "db1");
            assert!(
                build.contains("INSERT INTO db1.feature_vectors_local ("),
                "{build}"
            );
            assert!(build.contains("FROM db1.events_local"), "{build}");
            assert!(!build.contains("db1.events ") && !build.contains("db1.feature_vectors ("));
            let policy = LabelPolicy::inactivity(30, 30);
            let train = on_shard_tables(
                &training_set(&spec, "db1", dedup, &policy, 100_000_000, RowSample::ALL).unwrap(),
                "db1",
            );
            assert!(train.contains("FROM db1.events_local") && !train.contains("db1.events "));
        }
    }

    #[test]
    fn every_feature_is_rendered_once_and_in_order() {
        let spec = FeatureSpec::standard();
        let sql = build_snapshot(&spec, "churn", Dedup::OnRead, 1_767_225_600).unwrap();
        for name in spec.names() {
            assert!(sql.contains(&format!(" AS `{name}`")), "{name}");
        }
        assert!(sql.contains("event_time <= toDateTime(1767225600)"));
        assert!(sql.contains(&quote(&spec.fingerprint())));
        assert!(!sql.contains("now()"), "features must never read the clock");
        let policy = LabelPolicy::inactivity(30, 30);
        let train = training_set(
            &spec,
            "churn",
            Dedup::OnRead,
            &policy,
            1_767_225_600,
            RowSample::ALL,
        )
        .unwrap();
        assert!(train.contains("t <= 1767225600"));
        assert!(train.contains(&format!("toDateTime({})", 1_767_225_600 + 30 * DAY_SECS)));
        let explicit = LabelPolicy {
            churn_event_types: vec!["Cancel".into()],
            ..policy
        };
        let train = training_set(
            &spec,
            "churn",
            Dedup::OnRead,
            &explicit,
            1_767_225_600,
            RowSample::ALL,
        )
        .unwrap();
        assert!(train.contains("event_type IN ('cancel')"), "{train}");
        assert!(train.contains("NOT (event_type IN ('cancel'))"));
    }

    #[test]
    fn final_is_read_only_when_duplicates_are_left_to_the_read() {
        let spec = FeatureSpec::standard();
        let policy = LabelPolicy::inactivity(30, 30);
        for (dedup, expected) in [(Dedup::OnRead, true), (Dedup::OnWrite, false)] {
            let snapshot = build_snapshot(&spec, "churn", dedup, 1_767_225_600).unwrap();
            let computed = compute_snapshot(&spec, "churn", dedup, 1_767_225_600).unwrap();
            let train = training_set(
                &spec,
                "churn",
                dedup,
                &policy,
                1_767_225_600,
                RowSample::ALL,
            )
            .unwrap();
            for sql in [snapshot, computed, train] {
                assert_eq!(
                    sql.contains("churn.events FINAL"),
                    expected,
                    "{dedup:?}: {sql}"
                );
            }
        }
    }

    #[test]
    fn the_vector_table_fits_any_spec() {
        let ddl = include_str!("../../../../migrations/004_feature_vectors.sql");
        assert_eq!(
            create_table_columns(ddl),
            ["fingerprint", "as_of", "user_id", "feature_values"]
        );
    }
}
