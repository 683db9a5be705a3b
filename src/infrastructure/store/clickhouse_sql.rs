//! Renders the shared feature spec to ClickHouse SQL — the same
//! [`FeatureDef`]s the embedded store evaluates in Rust, so there is no
//! second, hand-written copy of the feature logic.
//!
//! The SQL sticks to what both ClickHouse 18.16 (Debian's server) and modern
//! releases accept: no CTEs, window functions, query parameters or
//! `DateTime64`. Times are compared as whole seconds (`t`), days are
//! `intDiv(t, 86400)` (UTC, whatever the server's timezone), and every
//! arithmetic step mirrors `FeatureSpec::evaluate` so results match bit for
//! bit (sums of amounts aside, whose order differs).

use crate::domain::features::{Aggregation, FeatureKind, FeatureSpec, RECENCY_CAP_DAYS};
use crate::domain::label::LabelPolicy;
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
    if crate::domain::names::is_identifier(name) {
        Ok(name)
    } else {
        Err(SqlError::Identifier(name.to_string()))
    }
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

/// The events of one database with `t` (seconds) up to `until`, amounts
/// defaulted to 0 — the rows every feature query aggregates.
fn events_source(db: &str, until: i64) -> String {
    format!(
        "(SELECT user_id, toInt64(toUInt32(event_time)) AS t, event_type, session_id, \
         ifNull(amount, 0.) AS amount FROM {db}.events FINAL WHERE event_time <= toDateTime({until}))"
    )
}

/// The row filter of one aggregate feature at `as_of`.
fn condition(
    event_type: Option<&str>,
    window_days: Option<u32>,
    as_of: i64,
    bounded: bool,
) -> String {
    let mut parts = Vec::new();
    if let Some(t) = event_type {
        parts.push(format!("event_type = {}", quote(t)));
    }
    if let Some(w) = window_days {
        parts.push(format!("t > {}", as_of - i64::from(w) * DAY_SECS));
    }
    if bounded {
        parts.push(format!("t <= {as_of}"));
    }
    if parts.is_empty() {
        "1".to_string()
    } else {
        parts.join(" AND ")
    }
}

fn aggregate(aggregation: Aggregation, c: &str, as_of: i64) -> String {
    let cap = float(RECENCY_CAP_DAYS);
    match aggregation {
        Aggregation::Count => format!("toFloat64(countIf({c}))"),
        Aggregation::ActiveDays => format!("toFloat64(uniqExactIf(intDiv(t, {DAY_SECS}), {c}))"),
        Aggregation::DistinctSessions => {
            format!(
                "toFloat64(uniqExactIf(assumeNotNull(session_id), ({c}) AND isNotNull(session_id)))"
            )
        }
        Aggregation::SumAmount => format!("sumIf(amount, {c})"),
        Aggregation::DaysSinceLast => format!(
            "if(countIf({c}) = 0, {cap}, least({cap}, ({as_of} - maxIf(t, {c})) / {DAY_SECS}))"
        ),
        Aggregation::DaysSinceFirst => {
            format!("if(countIf({c}) = 0, 0., ({as_of} - minIf(t, {c})) / {DAY_SECS})")
        }
    }
}

/// Inner aggregates (`a_<name>`) and outer expressions (`<name>`) of the
/// spec at `as_of`. `bounded` adds `t <= as_of` to every filter (training
/// sets read events past the cutoff for the labels).
fn select_lists(
    spec: &FeatureSpec,
    as_of: i64,
    bounded: bool,
) -> Result<(Vec<String>, Vec<String>), SqlError> {
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    let mut needs_days = false;
    for def in spec.defs() {
        let name = identifier(&def.name)?;
        match &def.kind {
            FeatureKind::Aggregate {
                aggregation,
                event_type,
                window_days,
            } => {
                let c = condition(event_type.as_deref(), *window_days, as_of, bounded);
                inner.push(format!(
                    "{} AS a_{name}",
                    aggregate(*aggregation, &c, as_of)
                ));
                outer.push(format!("toFloat64(a_{name}) AS {name}"));
            }
            FeatureKind::Ratio {
                numerator,
                denominator,
                scale,
                default,
            } => {
                let (n, d) = (identifier(numerator)?, identifier(denominator)?);
                outer.push(format!(
                    "toFloat64(if({d} = 0, {}, {} * {n} / {d})) AS {name}",
                    float(*default),
                    float(*scale)
                ));
            }
            FeatureKind::ActiveDayGapMean => {
                needs_days = true;
                outer.push(format!(
                    "toFloat64(if(gap_n <= 0, 0., arraySum(gaps) / gap_n)) AS {name}"
                ));
            }
            FeatureKind::ActiveDayGapStd => {
                needs_days = true;
                outer.push(format!(
                    "toFloat64(if(gap_n <= 0, 0., sqrt(greatest(arraySum(arrayMap(g -> g * g, gaps)) / gap_n \
                     - (arraySum(gaps) / gap_n) * (arraySum(gaps) / gap_n), 0.)))) AS {name}"
                ));
            }
        }
    }
    if needs_days {
        let c = condition(None, None, as_of, bounded);
        inner.push(format!(
            "arraySort(groupUniqArrayIf(intDiv(t, {DAY_SECS}), {c})) AS active_days_arr"
        ));
        // Helper columns first so the feature expressions can use them.
        outer.insert(0, "length(active_days_arr) - 1 AS gap_n".to_string());
        outer.insert(
            1,
            "arrayMap((x, y) -> y - x, arraySlice(active_days_arr, 1, gap_n), arraySlice(active_days_arr, 2, gap_n)) AS gaps"
                .to_string(),
        );
    }
    Ok((inner, outer))
}

/// `INSERT … SELECT` computing every user's features as of `as_of` into
/// `<db>.user_features`.
///
/// # Errors
/// [`SqlError`] for unsafe identifiers.
pub fn build_snapshot(spec: &FeatureSpec, db: &str, as_of: i64) -> Result<String, SqlError> {
    let db = identifier(db)?;
    let (inner, outer) = select_lists(spec, as_of, false)?;
    let names = spec.names().join(", ");
    Ok(format!(
        "INSERT INTO {db}.user_features (user_id, as_of, {names}) \
         SELECT user_id, toDateTime({as_of}) AS as_of, {names} FROM (\
         SELECT user_id, {outer} FROM (SELECT user_id, {inner} FROM {src} GROUP BY user_id))",
        outer = outer.join(", "),
        inner = inner.join(", "),
        src = events_source(db, as_of),
    ))
}

/// Features as of `cutoff` and the churn label over `(cutoff, cutoff + H]`
/// for eligible users, as `(user_id, Array(Float64), UInt8)` rows ordered by
/// user id.
///
/// # Errors
/// [`SqlError`] for unsafe identifiers.
pub fn training_set(
    spec: &FeatureSpec,
    db: &str,
    policy: LabelPolicy,
    cutoff: i64,
) -> Result<String, SqlError> {
    let db = identifier(db)?;
    let (mut inner, mut outer) = select_lists(spec, cutoff, true)?;
    // The label rule's windows come from the domain, as the embedded
    // store's evaluation does.
    let (e, h) = (
        policy.eligibility_window(cutoff),
        policy.horizon_window(cutoff),
    );
    inner.push(format!(
        "countIf(t > {} AND t <= {}) AS a__eligible",
        e.after, e.until
    ));
    inner.push(format!(
        "countIf(t > {} AND t <= {}) AS a__after",
        h.after, h.until
    ));
    outer.push("a__eligible".to_string());
    outer.push("toUInt8(a__after = 0) AS churned".to_string());
    Ok(format!(
        "SELECT user_id, [{names}] AS features, churned FROM (\
         SELECT user_id, {outer} FROM (SELECT user_id, {inner} FROM {src} GROUP BY user_id)) \
         WHERE a__eligible > 0 ORDER BY user_id",
        names = spec.names().join(", "),
        outer = outer.join(", "),
        inner = inner.join(", "),
        src = events_source(db, h.until),
    ))
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
    fn every_feature_is_rendered_once_and_in_order() {
        let spec = FeatureSpec::standard();
        let sql = build_snapshot(&spec, "churn", 1_767_225_600).unwrap();
        for name in spec.names() {
            assert!(sql.contains(&format!(" AS {name}")), "{name}");
        }
        assert!(sql.contains("event_time <= toDateTime(1767225600)"));
        assert!(!sql.contains("now()"), "features must never read the clock");
        let train = training_set(
            &spec,
            "churn",
            LabelPolicy {
                horizon_days: 30,
                lookback_days: 30,
            },
            1_767_225_600,
        )
        .unwrap();
        assert!(train.contains("t <= 1767225600"));
        assert!(train.contains(&format!("toDateTime({})", 1_767_225_600 + 30 * DAY_SECS)));
    }

    #[test]
    fn migration_columns_follow_the_spec() {
        let ddl = include_str!("../../../migrations/003_user_features.sql");
        let cols = create_table_columns(ddl);
        let mut expected = vec!["user_id".to_string(), "as_of".to_string()];
        expected.extend(FeatureSpec::standard().names());
        assert_eq!(cols, expected);
    }
}
