//! Property tests (proptest) of the three parsers a client or operator
//! feeds directly: the event parser, the `/events` body splitter and the
//! configuration loader. The same entry points are fuzzed by
//! `scripts/fuzz.sh` (cargo-fuzz, outside the test command).

use churn::application::ports::RawRecord;
use churn::config::keys::{check_env, check_file, env_key, known_keys};
use churn::domain::event::{TimePolicy, canonical_type, parse_event_json};
use churn::http::event_body::split;
use proptest::prelude::*;
use serde_json::json;

const NOW: i64 = 1_780_000_000;

fn policy() -> TimePolicy {
    TimePolicy::at(NOW, 86_400)
}

fn collect(body: &[u8], chunk: usize) -> Result<Vec<Vec<RawRecord>>, String> {
    let mut chunks = Vec::new();
    split(body, chunk, |c| {
        chunks.push(c);
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(chunks)
}

proptest! {
    // No regression files: the seeds of a failure are printed in the test output.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes: an event or a reason, never a panic.
    #[test]
    fn the_event_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_event_json(&bytes, policy());
    }

    /// A valid event in any spelling the parser accepts comes back with
    /// the same fields; one duplicated key refuses it.
    #[test]
    fn valid_events_round_trip_and_duplicate_keys_are_refused(
        user in 0u64..=(i64::MAX as u64),
        time in 315_532_800i64..NOW,
        kind in "[A-Za-z][A-Za-z0-9_ ]{0,20}[A-Za-z0-9]",
        session in proptest::option::of("[a-z0-9-]{1,16}"),
        amount in proptest::option::of(0f64..1e9),
        time_as_text in any::<bool>(),
    ) {
        let mut v = json!({"user_id": user, "event_type": kind});
        v["event_time"] = if time_as_text {
            json!(churn::domain::time::format_rfc3339(time))
        } else {
            json!(time)
        };
        if let Some(s) = &session { v["session_id"] = json!(s); }
        if let Some(a) = amount { v["amount"] = json!(a); }
        let text = v.to_string();
        let e = parse_event_json(text.as_bytes(), policy()).unwrap();
        // Integers up to 2^62 - 1 are their own keys; above, their digits
        // are a name.
        prop_assert_eq!(e.user(), churn::domain::user::UserId::from(user));
        if user <= churn::domain::user::MAX_INT_USER_ID {
            prop_assert_eq!(e.user_id(), user);
        }
        prop_assert_eq!(e.event_time(), time);
        prop_assert_eq!(e.event_type(), canonical_type(&kind));
        prop_assert_eq!(e.session_id(), session.as_deref());
        prop_assert_eq!(e.amount(), amount);
        // The same key twice, anywhere in the object.
        let dup = format!("{{\"user_id\":{user},{}", &text[1..]);
        prop_assert!(parse_event_json(dup.as_bytes(), policy()).is_err());
    }

    /// Any bytes: records or one error, never a panic, chunks never over
    /// the limit.
    #[test]
    fn the_body_splitter_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        chunk in 1usize..8,
    ) {
        if let Ok(chunks) = collect(&bytes, chunk) {
            prop_assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= chunk));
        }
    }

    /// NDJSON: one record per non-blank line, trimmed, numbered by line,
    /// in order, whatever the chunk size.
    #[test]
    fn ndjson_lines_become_records_in_order(
        lines in proptest::collection::vec("[ \t]{0,2}[^\n\\[]{0,12}[ \t\r]{0,2}", 0..40),
        chunk in 1usize..10,
    ) {
        let body = lines.join("\n");
        // A body whose first non-blank byte is '[' is an array; the
        // strategy keeps '[' out of lines.
        let chunks = collect(body.as_bytes(), chunk).unwrap();
        let got: Vec<(Vec<u8>, String)> = chunks
            .into_iter()
            .flatten()
            .map(|r| (r.payload, r.origin))
            .collect();
        let want: Vec<(Vec<u8>, String)> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.as_bytes().trim_ascii().is_empty())
            .map(|(i, l)| (l.as_bytes().trim_ascii().to_vec(), (i + 1).to_string()))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Arrays: one record per element, each element's raw text parsing
    /// back to the same value.
    #[test]
    fn array_elements_become_records_in_order(
        values in proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(|n| json!(n)),
                "[a-z]{0,8}".prop_map(|s| json!({"k": s, "n": [1, 2]})),
                any::<bool>().prop_map(|b| json!(b)),
            ],
            0..30,
        ),
        chunk in 1usize..10,
    ) {
        let body = serde_json::to_string_pretty(&values).unwrap();
        let records: Vec<RawRecord> = collect(body.as_bytes(), chunk).unwrap().into_iter().flatten().collect();
        prop_assert_eq!(records.len(), values.len());
        for (i, (r, v)) in records.iter().zip(&values).enumerate() {
            let back: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            prop_assert_eq!(&back, v);
            prop_assert_eq!(&r.origin, &i.to_string());
        }
    }

    /// Any text as a config file, any names as variables: a verdict, never
    /// a panic; every known key round-trips through its variable name.
    #[test]
    fn the_config_checks_never_panic(
        text in "[\\[\\]a-z_.=\" 0-9\n]{0,200}",
        names in proptest::collection::vec("CHURN_[A-Z_]{0,30}", 0..5),
    ) {
        let _ = check_file("p.toml", &text);
        let _ = check_env(names.clone());
        for name in names {
            let _ = env_key(&name);
        }
    }

    /// Any value for any numeric setting: the loader and validation give a
    /// verdict (an error names the key), never a panic.
    #[test]
    fn any_number_for_any_setting_is_validated_without_panicking(
        pick in any::<prop::sample::Index>(),
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("toml floats", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
            Just("18446744073709551615".to_string()),
            Just("-1".to_string()),
            Just("0".to_string()),
        ],
    ) {
        let defaults = serde_json::to_value(churn::config::Settings::default()).unwrap();
        let numeric: Vec<String> = known_keys()
            .into_iter()
            .filter(|k| k.split('.').try_fold(&defaults, |v, p| v.get(p)).is_some_and(|v| v.is_number()))
            .collect();
        let key = pick.get(&numeric);
        let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let text = if section.is_empty() {
            format!("{leaf} = {value}\n")
        } else {
            format!("[{section}]\n{leaf} = {value}\n")
        };
        // A number TOML cannot hold (past i64) is a parse error, named as
        // one; any other verdict here would be a wrong key.
        if let Err(e) = check_file("p.toml", &text) {
            prop_assert!(matches!(e, churn::config::ConfigError::Load(_)), "{}: {}", text, e);
            return Ok(());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, &text).unwrap();
        match churn::config::Settings::load(Some(&path)) {
            Ok(s) => {
                if let Err(e) = s.validate() {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("invalid setting"), "{}", msg);
                }
            }
            // Load validates too: a value out of range is named there.
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    msg.contains("cannot load") || msg.contains("invalid setting"),
                    "{}",
                    msg
                );
            }
        }
    }
}

#[test]
fn numeric_settings_are_found() {
    let defaults = serde_json::to_value(churn::config::Settings::default()).unwrap();
    let numeric = known_keys()
        .into_iter()
        .filter(|k| {
            k.split('.')
                .try_fold(&defaults, |v, p| v.get(p))
                .is_some_and(|v| v.is_number())
        })
        .count();
    assert!(numeric > 30, "{numeric}");
}
