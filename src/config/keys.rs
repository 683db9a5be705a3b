//! Unknown keys are errors, not silence: every key of a config file and
//! every `CHURN_<SECTION>__<KEY>` variable must name a setting, and the
//! error suggests the nearest one. The other `CHURN_*` names the scripts,
//! compose file and tests use are listed here, because they are not
//! settings.

use std::collections::BTreeSet;

use super::{ConfigError, Settings};

/// `CHURN_*` variables that are not settings (see README, "Environment").
pub const NOT_SETTINGS: &[&str] = &[
    // The --config and --data-dir flags.
    "CHURN_CONFIG",
    "CHURN_DATA_DIR",
    // scripts/: where caches, built tools and the binary live.
    "CHURN_CACHE_DIR",
    "CHURN_TOOLS",
    "CHURN_BIN",
    // The Airflow DAG and docker-compose.yml.
    "CHURN_DAG_MODE",
    "CHURN_API",
    "CHURN_ADMIN_TOKEN",
    "CHURN_IMAGE_TAG",
];

/// Prefixes of `CHURN_*` variables that are not settings: the test
/// command's service addresses and the benchmarks' knobs.
pub const NOT_SETTINGS_PREFIXES: &[&str] = &["CHURN_TEST_", "CHURN_BENCH_"];

/// Every setting's dotted key (`server.port`, `training.gbdt.l2`).
pub fn known_keys() -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    walk(v, &key, out);
                }
            }
            _ => {
                out.insert(at.to_string());
            }
        }
    }
    let mut keys = BTreeSet::new();
    if let Ok(v) = serde_json::to_value(Settings::default()) {
        walk(&v, "", &mut keys);
    }
    keys
}

/// Sections (`server`, `training.gbdt`): a table may name these.
fn sections(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .flat_map(|k| {
            let parts: Vec<&str> = k.split('.').collect();
            (1..parts.len())
                .map(|n| parts[..n].join("."))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The known key nearest to `key`, if one is near enough to be a typo.
pub fn nearest(key: &str, keys: &BTreeSet<String>) -> Option<String> {
    keys.iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn unknown(key: String, origin: String, keys: &BTreeSet<String>) -> ConfigError {
    let suggestion = nearest(&key, keys);
    ConfigError::UnknownKey {
        key,
        origin,
        hint: match suggestion {
            Some(s) => format!("; did you mean {s}?"),
            None => "; see config.toml for every key".to_string(),
        },
    }
}

/// Checks a config file's text: every key must be a setting.
///
/// # Errors
/// [`ConfigError::UnknownKey`] for the first unknown key,
/// [`ConfigError::Load`] when the text is not TOML.
pub fn check_file(origin: &str, text: &str) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError::Load(format!("{origin}: {e}")))?;
    let keys = known_keys();
    let sections = sections(&keys);
    fn walk(
        table: &toml::Table,
        at: &str,
        keys: &BTreeSet<String>,
        sections: &BTreeSet<String>,
        origin: &str,
    ) -> Result<(), ConfigError> {
        for (k, v) in table {
            let key = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match v {
                // Unknown tables are walked too, so the error names a
                // whole key (`servr.port`) and can suggest its fix.
                toml::Value::Table(inner) if !keys.contains(&key) => {
                    walk(inner, &key, keys, sections, origin)?;
                }
                toml::Value::Table(_) => {
                    return Err(unknown(format!("{key}.*"), origin.to_string(), keys));
                }
                _ if keys.contains(&key) && !sections.contains(&key) => {}
                _ => return Err(unknown(key, origin.to_string(), keys)),
            }
        }
        Ok(())
    }
    walk(&table, "", &keys, &sections, origin)
}

/// The dotted key a `CHURN_*` variable sets, or `None` when the variable
/// is on the not-a-setting list.
pub fn env_key(name: &str) -> Option<String> {
    if NOT_SETTINGS.contains(&name) || NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    let rest = name.strip_prefix("CHURN_")?;
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// Checks `CHURN_*` variables: each must set a setting or be listed as
/// not one.
///
/// # Errors
/// [`ConfigError::UnknownKey`] for the first variable that is neither.
pub fn check_env<I: IntoIterator<Item = String>>(names: I) -> Result<(), ConfigError> {
    let keys = known_keys();
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    for name in names {
        let Some(key) = env_key(&name) else { continue };
        if !keys.contains(&key) {
            let suggestion = nearest(&key, &keys);
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                origin: "the environment".into(),
                hint: match suggestion {
                    Some(s) => format!(
                        "; did you mean {} ({s})?",
                        format!("CHURN_{}", s.replace('.', "__")).to_ascii_uppercase()
                    ),
                    None => format!(
                        "; settings are CHURN_<SECTION>__<KEY>, and the other CHURN_* names are {}",
                        NOT_SETTINGS.join(", ")
                    ),
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_sections_and_nested_tables() {
        let keys = known_keys();
        assert!(keys.contains("server.port"));
        assert!(keys.contains("training.gbdt.l2"));
        assert!(keys.contains("data_dir"));
        assert!(!keys.contains("server"));
    }

    #[test]
    fn file_typos_are_refused_with_the_nearest_key() {
        let err = check_file("c.toml", "[server]\nmax_body_byte = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.max_body_byte"), "{err}");
        assert!(err.contains("did you mean server.max_body_bytes"), "{err}");
        let err = check_file("c.toml", "[servr]\nport = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("servr.port"), "{err}");
        assert!(err.contains("server.port"), "{err}");
        check_file("c.toml", "data_dir = \"x\"\n[training.gbdt]\nl2 = 1.0\n").unwrap();
        // A setting given a table is refused too.
        assert!(check_file("c.toml", "[server.port]\nx = 1\n").is_err());
    }

    #[test]
    fn env_typos_are_refused_and_listed_names_pass() {
        let err = check_env(["CHURN_SERVR__PORT".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHURN_SERVR__PORT"), "{err}");
        assert!(err.contains("CHURN_SERVER__PORT"), "{err}");
        let err = check_env(["CHURN_SERVER_PORT".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHURN_SERVER__PORT"), "{err}");
        check_env(
            [
                "CHURN_SERVER__PORT",
                "CHURN_TEST_KAFKA_BROKERS",
                "CHURN_BIN",
                "CHURN_TRAINING__GBDT__L2",
                "CHURN_DATA_DIR",
            ]
            .map(String::from),
        )
        .unwrap();
    }
}
