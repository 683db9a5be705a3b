//! What can be checked of the container deploy on a machine without a
//! Docker engine: the compose file parses (`docker compose config`, or
//! Debian's `docker-compose`, installed by scripts/test.sh), the variable
//! names in compose, `.env.example` and `config.toml` agree, the `churn`
//! service points at compose service names, and the Dockerfile builds with
//! the command CI builds with and configures a valid server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn repo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn compose() -> Value {
    serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

/// `${NAME}` references (not the escaped `$${NAME}` of container shells).
fn interpolated(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            let rest = &text[i + 2..];
            let end = rest.find(['}', ':', '-']).expect("closed ${...}");
            out.insert(rest[..end].to_string());
        }
        i += 1;
    }
    out
}

fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn service_env(compose: &Value, service: &str) -> BTreeMap<String, String> {
    env_map(&compose["services"][service]["environment"], service)
}

fn env_map(env: &Value, service: &str) -> BTreeMap<String, String> {
    env.as_mapping()
        .unwrap_or_else(|| panic!("{service} has an environment map"))
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), value)
        })
        .collect()
}

fn host_of(value: &str) -> String {
    let no_scheme = value.split("://").last().unwrap_or(value);
    no_scheme
        .split(['/', ':', ','])
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn compose_file_is_valid_for_the_compose_client() {
    let env_file = repo(".env.example");
    let compose_file = repo("docker-compose.yml");
    let plugin = Command::new("docker")
        .args(["compose", "--env-file"])
        .arg(&env_file)
        .arg("-f")
        .arg(&compose_file)
        .args(["config", "-q"])
        .output();
    let out = match plugin {
        Ok(o) if o.status.success() => o,
        // No compose plugin: Debian's standalone client (scripts/test.sh
        // installs it) parses and validates the same file.
        _ => Command::new("docker-compose")
            .arg("--env-file")
            .arg(&env_file)
            .arg("-f")
            .arg(&compose_file)
            .args(["config", "-q"])
            .output()
            .expect("docker-compose installed (scripts/test.sh installs it)"),
    };
    assert!(
        out.status.success(),
        "compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn env_names_agree_between_compose_env_example_and_config() {
    let used = interpolated(&read("docker-compose.yml"));
    let listed: BTreeSet<String> = env_example().keys().cloned().collect();
    assert_eq!(
        used, listed,
        "every ${{VAR}} of compose is in .env.example and nothing else"
    );

    // Every CHURN_* variable the compose file sets is a real config key.
    let config: serde_json::Value = {
        let file: churn::config::Settings =
            churn::config::Settings::load(Some(&repo("config.toml"))).unwrap();
        serde_json::to_value(file).unwrap()
    };
    let compose = compose();
    for service in ["churn", "churn-migrate"] {
        for key in service_env(&compose, service)
            .keys()
            .filter(|k| k.starts_with("CHURN_"))
        {
            let path: Vec<String> = key["CHURN_".len()..]
                .split("__")
                .map(str::to_lowercase)
                .collect();
            let mut at = &config;
            for part in &path {
                at = at
                    .get(part)
                    .unwrap_or_else(|| panic!("{service}: {key} names no key of config.toml"));
            }
        }
    }
}

#[test]
fn churn_service_points_at_compose_service_names() {
    let compose = compose();
    let services: BTreeSet<String> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let example = env_example();
    let resolve = |v: &str| {
        interpolated(v).iter().fold(v.to_string(), |acc, name| {
            acc.replace(&format!("${{{name}}}"), &example[name])
        })
    };
    let env = service_env(&compose, "churn");
    for key in [
        "CHURN_CLICKHOUSE__URL",
        "CHURN_KAFKA__BROKERS",
        "CHURN_REGISTRY__S3_ENDPOINT",
        "CHURN_MLFLOW__TRACKING_URI",
    ] {
        let value = resolve(env.get(key).unwrap_or_else(|| panic!("churn sets {key}")));
        let host = host_of(&value);
        assert!(
            services.contains(&host),
            "{key}={value}: {host} is not a compose service"
        );
    }
    assert_eq!(env["CHURN_STORE__TYPE"], "clickhouse");
    assert!(env["CHURN_REGISTRY__URL"].starts_with("s3://"));
    // The churn image is the one built from this repository.
    assert_eq!(
        compose["services"]["churn-migrate"]["build"],
        Value::String(".".into())
    );
    // Prometheus scrapes churn and loads churn's rules from the mounted
    // directory; Grafana is provisioned with the dashboard; Airflow calls
    // churn: by service name.
    let prom = read("deploy/prometheus/prometheus.yml");
    assert!(prom.contains("churn:8000"), "{prom}");
    assert!(
        prom.contains("/etc/prometheus/churn/churn.rules.yml"),
        "{prom}"
    );
    let mounts = serde_norway::to_string(&compose["services"]["prometheus"]).unwrap();
    assert!(
        mounts.contains("./deploy/prometheus:/etc/prometheus/churn"),
        "{mounts}"
    );
    let grafana = serde_norway::to_string(&compose["services"]["grafana"]).unwrap();
    for mount in [
        "./deploy/grafana/provisioning:/etc/grafana/provisioning",
        "./deploy/grafana/churn.json:/var/lib/grafana/dashboards/churn.json",
    ] {
        assert!(grafana.contains(mount), "{grafana}");
    }
    // The MLflow the compose file runs is the version the suite tests.
    let tested = read("scripts/mlflow.sh")
        .split("mlflow==")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit() && c != '.').next())
        .map(str::to_string)
        .expect("scripts/mlflow.sh pins mlflow==X.Y.Z");
    let image = compose["services"]["mlflow"]["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":v{tested}")),
        "{image} vs tested {tested}"
    );
    // The Airflow services share the `x-airflow` block (YAML merge keys).
    let airflow = env_map(&compose["x-airflow"]["environment"], "x-airflow");
    assert_eq!(host_of(&airflow["AIRFLOW_CONN_CHURN_API"]), "churn");
    // The bucket the registry uses is created by minio-init.
    let bucket = host_of(&env["CHURN_REGISTRY__URL"]);
    let init = serde_norway::to_string(&compose["services"]["minio-init"]["command"]).unwrap();
    assert!(init.contains(&format!("local/{bucket}")), "{init}");
}

#[test]
fn dockerfile_builds_like_ci_and_configures_a_valid_server() {
    let dockerfile = read("Dockerfile");
    let build = dockerfile
        .lines()
        .find_map(|l| {
            l.trim()
                .trim_start_matches("&& ")
                .strip_prefix("cargo build")
        })
        .map(|rest| format!("cargo build{}", rest.trim_end_matches('\\').trim_end()))
        .expect("Dockerfile builds with cargo");
    assert!(
        read("scripts/test.sh").lines().any(|l| l.trim() == build),
        "scripts/test.sh runs `{build}` too"
    );
    for needle in [
        "USER churn",
        "HEALTHCHECK",
        "/healthz",
        "EXPOSE 8000",
        "COPY config.toml /etc/churn/config.toml",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    // The image's ENV with the baked-in config is a valid configuration.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_churn"));
    cmd.args(["--config"])
        .arg(repo("config.toml"))
        .arg("check-config");
    // ENV instructions, including their backslash-continued lines.
    let mut continued = false;
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with("ENV ") || continued {
            for pair in line
                .trim_start_matches("ENV ")
                .trim_end_matches('\\')
                .split_whitespace()
            {
                if let Some((k, v)) = pair.split_once('=') {
                    cmd.env(k, v);
                }
            }
            continued = line.ends_with('\\');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    cmd.env("CHURN_DATA_DIR", dir.path());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0.0.0.0") && stdout.contains("8000"),
        "{stdout}"
    );
}

/// The README's configuration reference lists every key of config.toml
/// with its default and variable (scripts/config_reference.py writes it).
#[test]
fn readme_configuration_reference_matches_config_toml() {
    let readme = read("README.md");
    let mut section = String::new();
    let mut keys = 0;
    for line in read("config.toml").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let (key, value) = (key.trim(), value.trim());
        let path = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        let env = format!(
            "CHURN_{}",
            path.split('.')
                .map(str::to_uppercase)
                .collect::<Vec<_>>()
                .join("__")
        );
        let row = format!("| `{path}` | `{value}` | `{env}` |");
        assert!(
            readme.contains(&row),
            "README lacks `{row}`: run scripts/config_reference.py"
        );
        keys += 1;
    }
    assert!(keys > 60, "{keys} keys");
}

/// Every `CHURN_*` name the repository's scripts, compose file, Dockerfile,
/// DAGs and benchmarks use is either a setting or on the documented
/// not-a-setting list, so `serve` never refuses the environment they make.
/// (Tests use deliberate typos; the CLI tests check their environment by
/// running in it.)
#[test]
fn every_churn_variable_in_the_repository_is_a_setting_or_listed() {
    let keys = churn::config::keys::known_keys();
    let mut files = vec![
        repo("docker-compose.yml"),
        repo("Dockerfile"),
        repo(".env.example"),
    ];
    for dir in ["scripts", "airflow/dags", "bench", ".ci"] {
        let mut stack = vec![repo(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    let mut checked = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let bytes = text.as_bytes();
        let mut at = 0;
        while let Some(i) = text[at..].find("CHURN_") {
            let start = at + i;
            at = start + 6;
            // A whole name: not the tail of AIRFLOW_VAR_CHURN_..., not a
            // prefix pattern like CHURN_TEST_* or CHURN_<SECTION>__<KEY>.
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| start + n);
            let name = &text[start..end];
            if name.ends_with('_') || matches!(bytes.get(end), Some(b'*' | b'<')) {
                continue;
            }
            checked += 1;
            if let Some(key) = churn::config::keys::env_key(name) {
                assert!(
                    keys.contains(&key),
                    "{}: {name} is neither a setting nor on the list in src/config/keys.rs",
                    file.display()
                );
            }
        }
    }
    assert!(checked > 20, "only {checked} names found");
}
