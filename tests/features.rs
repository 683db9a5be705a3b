//! A team's own data, not the generator's: event logs of other shapes
//! through the CLI and both stores.
//!
//! - A Q&A-site log with its own three event types: `churn features
//!   suggest` writes a spec for them, training warns about nothing, the
//!   per-type features vary, and the model serves.
//! - A purchase log from the mid-1990s ingests with default settings,
//!   profiles, builds as of the end of the data, and trains with purchases
//!   as the only activity.
//! - A file of nothing but bad lines makes `churn ingest` fail with reasons.
//! - A 200-feature spec builds, trains and serves in ClickHouse mode and
//!   embedded (`CHURN_TEST_CLICKHOUSE_URL`; absent = loud failure).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with a config file of `extra` TOML (or none).
fn churn(dir: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_churn"));
    cmd.arg("--data-dir").arg(dir.join("data"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .output()
        .expect("churn binary runs")
}

fn ok(dir: &Path, config: Option<&Path>, args: &[&str]) -> (String, String) {
    let out = churn(dir, config, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "churn {args:?} failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

fn json(dir: &Path, config: Option<&Path>, args: &[&str]) -> Value {
    let (stdout, _) = ok(dir, config, args);
    serde_json::from_str(&stdout).expect("stdout is one JSON document")
}

/// A small deterministic random source (xorshift), so the logs are the
/// same on every run without depending on the generator's code.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn stamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A Q&A log: users ask, answer and comment at their own pace from their
/// join day; some leave for good. Heavier answerers stay longer.
fn qa_log(path: &Path, users: u64, end: i64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let day = 86_400;
    let span = 400;
    for u in 1..=users {
        let join = (rng.next() * 300.0) as i64;
        let answerer = rng.next();
        let rate = 0.05 + 0.6 * rng.next();
        let leaves = rng.next() < 0.6 - 0.4 * answerer;
        let stay = if leaves {
            (20.0 + rng.next() * 200.0) as i64
        } else {
            span
        };
        for d in join..(join + stay).min(span) {
            if rng.next() > rate {
                continue;
            }
            let kind = match rng.next() {
                x if x < 0.25 => "question",
                x if x < 0.25 + 0.5 * answerer + 0.1 => "answer",
                _ => "comment",
            };
            let t = end - (span - d) * day + (rng.next() * 80_000.0) as i64;
            writeln!(
                out,
                r#"{{"user_id":{u},"event_time":"{}","event_type":"{kind}","session_id":"{u}-{d}"}}"#,
                stamp(t)
            )
            .unwrap();
        }
    }
}

/// A retail purchase log, 1995-03 to 1997-06: purchases with amounts and
/// page views; buyers fade out at different times.
fn retail_log(path: &Path, users: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let start = 794_016_000; // 1995-03-01
    let day = 86_400;
    for u in 1..=users {
        let first = (rng.next() * 400.0) as i64;
        let life = (30.0 + rng.next() * 500.0) as i64;
        let every = 3.0 + rng.next() * 40.0;
        let mut d = first as f64;
        while d < (first + life) as f64 && d < 840.0 {
            let t = start + (d as i64) * day + (rng.next() * 50_000.0) as i64;
            let amount = 5.0 + (rng.next() * 200.0).round() / 2.0;
            writeln!(
                out,
                r#"{{"user_id":{u},"event_time":"{}","event_type":"view"}}"#,
                stamp(t - 600)
            )
            .unwrap();
            writeln!(
                out,
                r#"{{"user_id":{u},"event_time":"{}","event_type":"purchase","amount":{amount}}}"#,
                stamp(t)
            )
            .unwrap();
            d += every * (0.5 + rng.next());
        }
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn a_qa_log_with_its_own_types_gets_its_own_features_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("qa.ndjson");
    let end = 1_767_225_600; // 2026-01-01
    qa_log(&log, 1_500, end);
    ok(d, None, &["ingest", log.to_str().unwrap()]);

    // The standard spec knows none of these types: training says so.
    let standard = json(d, None, &["train", "--json"]);
    let constant = standard["constant_features"].as_array().unwrap().len();
    // 24 per-type counts, the purchase count and 4 amounts never vary.
    assert!(
        constant >= 25,
        "standard spec on a Q&A log: {constant} constant features"
    );
    assert!(
        standard["warnings"]
            .to_string()
            .contains("churn features suggest"),
        "{}",
        standard["warnings"]
    );

    // `features suggest` writes a spec for the types present.
    let spec = d.join("features.toml");
    let (said, _) = ok(
        d,
        None,
        &["features", "suggest", "--out", spec.to_str().unwrap()],
    );
    assert!(said.contains("over 3 event types"), "{said}");
    let text = std::fs::read_to_string(&spec).unwrap();
    for name in [
        "answer_count_30d",
        "days_since_last_question",
        "comment_count_total",
    ] {
        assert!(text.contains(name), "{name} in the suggested spec");
    }
    // A second suggest refuses to overwrite.
    assert!(
        !churn(
            d,
            None,
            &["features", "suggest", "--out", spec.to_str().unwrap()]
        )
        .status
        .success()
    );

    let config = write(
        &d.join("team.toml"),
        &format!("[features]\nspec_file = \"{}\"\n", spec.display()),
    );
    // Suggesting again into the very spec file the config uses (the spec
    // in use is not needed to write a new one).
    let (again, _) = ok(
        d,
        Some(&config),
        &[
            "features",
            "suggest",
            "--out",
            spec.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(again.contains("wrote"), "{again}");
    let report = json(d, Some(&config), &["train", "--json"]);
    let constant: Vec<String> = report["constant_features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        constant
            .iter()
            .all(|n| !n.starts_with("answer") && !n.starts_with("question")),
        "per-type features vary: {constant:?}"
    );
    assert!(
        report["metrics"]["auc"].as_f64().unwrap() > 0.6,
        "{}",
        report["metrics"]
    );
    assert!(
        report["report_rows"].as_u64().unwrap() < report["validation_rows"].as_u64().unwrap(),
        "figures from a held-out half"
    );

    // The model trained on the team's spec serves the team's snapshots.
    ok(d, Some(&config), &["build-features", "--as-of", "end"]);
    let (checked, _) = ok(d, Some(&config), &["features", "check"]);
    let types = checked.lines().next().unwrap_or_default();
    for t in ["answer", "comment", "question"] {
        assert!(types.contains(t), "{types}");
    }
    let models = json(d, Some(&config), &["models", "list", "--json"]);
    let fingerprints: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["feature_fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(fingerprints.len(), 2);
    assert_ne!(
        fingerprints[0], fingerprints[1],
        "a new spec, a new fingerprint"
    );
}

#[test]
fn a_1990s_purchase_log_ingests_profiles_and_trains_on_purchases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("retail.ndjson");
    retail_log(&log, 1_200);
    let (said, _) = ok(d, None, &["ingest", log.to_str().unwrap()]);
    assert!(
        said.contains(" 0 rejected"),
        "every 1995-97 event accepted: {said}"
    );
    let stats = json(d, None, &["stats", "--json"]);
    assert!(stats["first_event_time"].as_i64().unwrap() < 800_000_000);

    // By default a historic log's snapshot is as of its end; built as of
    // "now", every user looks decades inactive: warned.
    let auto = json(d, None, &["build-features", "--json"]);
    assert_eq!(auto["as_of"], stats["last_event_time"], "{auto}");
    let now = churn(d, None, &["build-features", "--as-of", "now"]);
    assert!(now.status.success());
    assert!(
        String::from_utf8_lossy(&now.stderr).contains("--as-of end"),
        "{}",
        String::from_utf8_lossy(&now.stderr)
    );
    let end = json(d, None, &["build-features", "--as-of", "end", "--json"]);
    assert!(end["warnings"].as_array().unwrap().is_empty(), "{end}");
    assert_eq!(end["as_of"], stats["last_event_time"]);

    let profile = json(d, None, &["profile", "--json"]);
    assert!(profile["span_days"].as_f64().unwrap() > 700.0);
    let types: Vec<&str> = profile["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["purchase", "view"]);
    let shares: Vec<f64> = profile["eligibility"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["share"].as_f64().unwrap())
        .collect();
    assert!(
        shares.len() >= 5 && shares.windows(2).all(|w| w[0] <= w[1]),
        "{shares:?}"
    );

    // Purchases are the activity that matters; 90-day churn.
    let config = write(
        &d.join("retail.toml"),
        "[training]\nactivity_event_types = [\"purchase\"]\nhorizon_days = 90\nlookback_days = 180\n",
    );
    let report = json(d, Some(&config), &["train", "--json"]);
    assert!(
        report["metrics"]["auc"].as_f64().unwrap() > 0.6,
        "{}",
        report["metrics"]
    );
    // Recency is not capped at a year: long-gone users differ from each other.
    assert!(report["train_rows"].as_u64().unwrap() > 500);
}

#[test]
fn a_file_of_only_bad_lines_fails_with_the_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = write(
        &d.join("bad.ndjson"),
        "{\"user_id\":1,\"event_time\":\"1970-01-01 00:00:00\",\"event_type\":\"x\"}\n\
         {\"user_id\":2,\"event_time\":true,\"event_type\":\"x\"}\n\
         not json\n\
         {\"user_id\":3,\"event_time\":\"yesterday\",\"event_type\":\"x\"}\n",
    );
    let out = churn(d, None, &["ingest", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "all lines rejected must fail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("every one of the 4 lines was rejected"),
        "{stderr}"
    );
    assert!(stdout.contains("3 rejected for event_time"), "{stdout}");
    assert!(stdout.contains("1 rejected for json"), "{stdout}");
    assert!(
        stdout.contains("milliseconds") || stdout.contains("min_event_time"),
        "{stdout}"
    );
    // One good line among bad ones is a success with reasons.
    let mixed = write(
        &d.join("mixed.ndjson"),
        "{\"user_id\":1,\"event_time\":\"1999-01-01 00:00:00\",\"event_type\":\"x\"}\nnot json\n",
    );
    let (said, _) = ok(d, None, &["ingest", mixed.to_str().unwrap()]);
    assert!(
        said.contains("1 stored") && said.contains("1 rejected for json"),
        "{said}"
    );
}

/// 200 declared features over three custom types.
fn wide_spec() -> String {
    let mut s = String::new();
    let mut n = 0;
    for t in ["question", "answer", "comment"] {
        for w in [3, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365] {
            for a in [
                "count",
                "active_days",
                "days_since_first",
                "gap_mean",
                "distinct_sessions",
            ] {
                if n == 195 {
                    break;
                }
                s.push_str(&format!(
                    "[[feature]]\nname = \"{t}_{a}_{w}d\"\naggregation = \"{a}\"\nevent_types = [\"{t}\"]\nwindow_days = {w}\n\n"
                ));
                n += 1;
            }
        }
    }
    for (name, a) in [
        ("last_event_days_ago", "days_since_last"),
        ("days_active", "active_days"),
        ("total_events", "count"),
        ("tenure_days", "days_since_first"),
    ] {
        s.push_str(&format!(
            "[[feature]]\nname = \"{name}\"\naggregation = \"{a}\"\n\n"
        ));
    }
    s.push_str("[[feature]]\nname = \"per_day\"\naggregation = \"ratio\"\nnumerator = \"total_events\"\ndenominator = \"days_active\"\n");
    s
}

#[test]
fn a_200_feature_spec_builds_trains_and_serves_embedded_and_in_clickhouse() {
    let url = std::env::var("CHURN_TEST_CLICKHOUSE_URL")
        .expect("CHURN_TEST_CLICKHOUSE_URL unset: run through scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("qa.ndjson");
    qa_log(&log, 600, 1_767_225_600);
    let spec = write(&d.join("wide.toml"), &wide_spec());
    let db = format!("churn_wide_{}", std::process::id());
    for (mode, store) in [
        ("embedded", String::new()),
        (
            "clickhouse",
            format!(
                "[store]\ntype = \"clickhouse\"\n[clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\nvalidation = false\n"
            ),
        ),
    ] {
        let config = write(
            &d.join(format!("{mode}.toml")),
            &format!("{store}[features]\nspec_file = \"{}\"\n", spec.display()),
        );
        let (checked, _) = ok(d, Some(&config), &["features", "check"]);
        assert!(checked.starts_with("200 features"), "{checked}");
        ok(d, Some(&config), &["ingest", log.to_str().unwrap()]);
        let built = json(
            d,
            Some(&config),
            &["build-features", "--as-of", "end", "--json"],
        );
        assert_eq!(built["features"], 200, "{mode}");
        assert!(built["users"].as_u64().unwrap() > 400, "{mode}: {built}");
        let report = json(d, Some(&config), &["train", "--json", "--force-promote"]);
        assert_eq!(report["version"], 1, "{mode}");
        let models = json(d, Some(&config), &["models", "list", "--json"]);
        assert_eq!(
            models[0]["feature_names"].as_array().unwrap().len(),
            200,
            "{mode}"
        );
        // Served: a real server on this state answers for a user.
        let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
            .arg("--data-dir")
            .arg(d.join("data"))
            .arg("--config")
            .arg(&config)
            .args(["serve", "--port", "0"])
            .env("RUST_LOG", "warn")
            .env("CHURN_SCHEDULE__ENABLED", "false")
            .env("CHURN_SERVER__REGISTRY_POLL_MS", "0")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let port = std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("http://127.0.0.1:")
                    .nth(1)
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
            .expect("serve prints its address");
        // Some of the first users have history in the snapshot: at least
        // one must get a probability from the 200-feature model.
        let answers: Vec<String> = (1..=40).map(|u| predict(port, u)).collect();
        let _ = child.kill();
        let _ = child.wait();
        let served = answers
            .iter()
            .filter(|a| {
                a.contains("\"churn_probability\"") && a.contains("\"model_version\":\"1\"")
            })
            .count();
        assert!(
            served > 0,
            "{mode}: no prediction served: {:?}",
            &answers[..3]
        );
        std::fs::remove_dir_all(d.join("data")).unwrap();
    }
    // Leave no test database behind.
    let _ = Command::new("curl")
        .args(["-s", "-d", &format!("DROP DATABASE IF EXISTS {db}"), &url])
        .output();
}

fn predict(port: u16, user: u64) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /predict?user_id={user} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}
