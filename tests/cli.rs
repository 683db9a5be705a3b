//! The `churn` CLI end to end on a temporary data directory: the whole
//! lifecycle, restart durability, idempotent re-ingestion, bad input and
//! exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use churn::application::ports::FeatureStore;
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};

const END: &str = "2026-06-01 00:00:00";

fn churn(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        // Run from the temp dir so no ./config.toml of the caller applies.
        .current_dir(data.parent().unwrap())
        .output()
        .expect("churn binary runs")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = churn(data, args);
    assert!(
        out.status.success(),
        "churn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(data: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(data, args)).expect("stdout is one JSON document")
}

fn generated(dir: &Path, users: &str) -> PathBuf {
    let file = dir.join("events.ndjson");
    let data = dir.join("data");
    ok(
        &data,
        &[
            "generate-events",
            "--users",
            users,
            "--seed",
            "3",
            "--end",
            END,
            "--out",
            file.to_str().unwrap(),
        ],
    );
    file
}

#[test]
fn full_lifecycle_train_promote_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "800");

    let report = json(&data, &["ingest", file.to_str().unwrap(), "--json"]);
    assert!(report["inserted"].as_u64().unwrap() > 50_000, "{report}");
    assert_eq!(report["rejected"], 0);

    let snap = json(&data, &["build-features", "--as-of", END, "--json"]);
    assert!(snap["users"].as_u64().unwrap() > 700, "{snap}");

    let first = json(&data, &["train", "--json"]);
    assert_eq!(first["version"], 1);
    assert_eq!(first["promoted"], true, "{first}");
    for key in ["auc", "pr_auc", "logloss", "brier", "recency_auc"] {
        let v = first["metrics"][key].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    let auc = first["metrics"]["auc"].as_f64().unwrap();
    assert!(
        auc > first["metrics"]["recency_auc"].as_f64().unwrap(),
        "{first}"
    );
    assert!(
        auc < 0.99,
        "synthetic data must not be trivially separable: {auc}"
    );

    // --export-sets writes the very rows the run trained and validated on;
    // the row cap samples them in the store.
    let sets = dir.path().join("sets");
    ok(&data, &["train", "--export-sets", sets.to_str().unwrap()]);
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(sets.join(name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (train_csv, validation_csv) = (lines("train.csv"), lines("validation.csv"));
    assert!(
        train_csv[0].starts_with("user_id,churned,days_active,"),
        "{}",
        train_csv[0]
    );
    assert_eq!(
        train_csv.len() as u64 - 1,
        first["train_rows"].as_u64().unwrap()
    );
    assert_eq!(
        validation_csv.len() as u64 - 1,
        first["validation_rows"].as_u64().unwrap()
    );
    assert_eq!(first["sampling"]["train_share"], 1.0, "{first}");
    // rows.csv says where each row comes from, in the files' order: the
    // recency rule's recorded AUC is recomputed from it on the report half.
    let rows = lines("rows.csv");
    assert_eq!(rows[0], "set,user_id,cutoff,half,churned");
    assert_eq!(
        rows.len(),
        train_csv.len() + validation_csv.len() - 1,
        "one row per exported row"
    );
    let cutoffs: std::collections::BTreeSet<&str> = rows[1..train_csv.len()]
        .iter()
        .map(|r| r.split(',').nth(2).unwrap())
        .collect();
    let planned: std::collections::BTreeSet<&str> = first["train_cutoffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cutoffs, planned);
    let recency = train_csv[0]
        .split(',')
        .position(|c| c == "last_event_days_ago")
        .unwrap();
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for (meta, row) in rows[train_csv.len()..].iter().zip(&validation_csv[1..]) {
        let meta: Vec<&str> = meta.split(',').collect();
        let row: Vec<&str> = row.split(',').collect();
        assert_eq!(
            (meta[0], meta[1], meta[2], meta[4]),
            (
                "validation",
                row[0],
                first["validation_cutoff"].as_str().unwrap(),
                row[1]
            )
        );
        assert!(meta[3] == "report" || meta[3] == "select", "{meta:?}");
        if meta[3] == "report" {
            scores.push(row[recency].parse::<f64>().unwrap());
            labels.push(row[1] == "1");
        }
    }
    assert_eq!(labels.len() as u64, first["report_rows"].as_u64().unwrap());
    let recomputed = churn::domain::metrics::roc_auc(&scores, &labels).unwrap();
    let recorded = first["metrics"]["recency_auc"].as_f64().unwrap();
    assert!(
        (recomputed - recorded).abs() < 1e-9,
        "{recomputed} vs {recorded}"
    );
    let capped = Command::new(env!("CARGO_BIN_EXE_churn"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "train",
            "--export-sets",
        ])
        .arg(dir.path().join("capped"))
        .env("RUST_LOG", "warn")
        .env("CHURN_TRAINING__MAX_TRAINING_ROWS", "2000")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        capped.status.success(),
        "{}",
        String::from_utf8_lossy(&capped.stderr)
    );
    let kept = std::fs::read_to_string(dir.path().join("capped/train.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert!(
        (1_600..=2_400).contains(&kept),
        "{kept} training rows under a cap of 2000 (of {})",
        first["train_rows"]
    );

    // A retrain on the same data is not worse by more than the tolerance, so
    // it is promoted and the first one becomes rollback history.
    let second = json(&data, &["train", "--json"]);
    assert_eq!(second["version"], 2);
    assert_eq!(second["previous_production_version"], 1);
    assert!(
        second["decision"].as_str().unwrap().contains("v1"),
        "{second}"
    );

    let list = json(&data, &["models", "list", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["version"], 1);
    assert!(
        list[1]["aliases"]
            .as_array()
            .unwrap()
            .contains(&Value::from("latest"))
    );
    assert_eq!(list[1]["feature_names"][0], "days_active");
    assert!(list[1]["checksum_sha256"].as_str().unwrap().len() == 64);

    let promoted = json(&data, &["models", "promote", "1", "--json"]);
    assert_eq!(promoted["version"], 1);
    let back = json(&data, &["models", "rollback", "--json"]);
    assert_eq!(back["version"], second["production_version"]);

    let missing = churn(&data, &["models", "promote", "99"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("version 99 does not exist"));
}

#[test]
fn restart_and_idempotent_reingest_keep_counts_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "150");
    let first = json(&data, &["ingest", file.to_str().unwrap(), "--json"]);
    let stats = json(&data, &["stats", "--json"]);
    assert_eq!(stats["events"], first["inserted"]);

    // A fresh process reopening the store sees the same counts.
    let reopened = json(&data, &["stats", "--json"]);
    assert_eq!(reopened, stats);

    ok(&data, &["build-features", "--as-of", END]);
    let store = |d: &Path| {
        SqliteStore::open(SqliteOptions {
            path: d.join("churn.db"),
            synchronous_full: false,
            snapshot_retention: 3,
        })
        .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = rt
        .block_on(store(&data).latest_snapshot(None))
        .unwrap()
        .unwrap();

    let again = json(&data, &["ingest", file.to_str().unwrap(), "--json"]);
    assert_eq!(again["inserted"], 0);
    assert_eq!(again["duplicates"], first["inserted"]);
    assert_eq!(json(&data, &["stats", "--json"]), stats);

    ok(&data, &["build-features", "--as-of", END]);
    let after = rt
        .block_on(store(&data).latest_snapshot(None))
        .unwrap()
        .unwrap();
    assert_eq!(before.len(), after.len());
    for user in 1..=150u64 {
        assert_eq!(before.features(user), after.features(user), "user {user}");
    }
}

#[test]
fn bad_lines_are_rejected_with_reasons_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("mixed.ndjson");
    std::fs::write(
        &input,
        concat!(
            "{\"user_id\":2,\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"login\",\"session_id\":\"abc\"}\n",
            "not json at all\n",
            "\n",
            "{\"user_id\":2,\"event_time\":\"2025-12-26 18:05:00\",\"event_type\":\"purchase\",\"session_id\":\"def\",\"amount\":12.5}\n",
            "{\"user_id\":[1],\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"login\"}\n",
            "{\"user_id\":3,\"event_time\":\"2099-01-01 00:00:00\",\"event_type\":\"login\"}\n",
            "{\"user_id\":3,\"event_time\":\"2025-12-26T19:00:00+01:00\",\"event_type\":\"view\"}\n",
        ),
    )
    .unwrap();
    let report = json(&data, &["ingest", input.to_str().unwrap(), "--json"]);
    assert_eq!(report["inserted"], 3, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    let rejects = std::fs::read_to_string(data.join("rejects.ndjson")).unwrap();
    let mut lines: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The run ends with its summary: exact counts per field.
    let summary = lines.pop().unwrap();
    assert_eq!(summary["summary"]["rejected"], 3, "{summary}");
    assert_eq!(summary["summary"]["by_field"]["json"], 1, "{summary}");
    let fields: Vec<&str> = lines.iter().map(|l| l["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["json", "user_id", "event_time"]);
    assert!(lines[0]["origin"].as_str().unwrap().ends_with(":2"));
    assert!(lines[2]["error"].as_str().unwrap().contains("future"));
    // The store keeps the totals per source and field for `churn stats`.
    let stats = json(&data, &["stats", "--json"]);
    assert_eq!(stats["events"], 3, "{stats}");
    assert_eq!(stats["rejected"], 3, "{stats}");
    let reasons = stats["rejected_by_reason"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .all(|r| r["source"] == "file" && r["count"] == 1),
        "{stats}"
    );
    let text = ok(&data, &["stats"]);
    assert!(text.contains("rejected: 3 records"), "{text}");
}

/// A fully rejected large file costs a bounded rejects file: a sample per
/// reason plus the exact counts.
#[test]
fn the_rejects_file_keeps_a_bounded_sample_and_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("bad.ndjson");
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&format!(
            "{{\"userId\":{i},\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"x\"}}\n"
        ));
        text.push_str("not json\n");
    }
    std::fs::write(&input, text).unwrap();
    let out = churn(&data, &["ingest", input.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The reason names the key the line has instead, and shows the line.
    assert!(stdout.contains("\"userId\""), "{stdout}");
    assert!(stdout.contains("line: {\"userId\":0"), "{stdout}");
    let rejects = std::fs::read_to_string(data.join("rejects.ndjson")).unwrap();
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines.len(), 2 * 100 + 1, "100 per reason and the summary");
    let summary: Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(summary["summary"]["rejected"], 10_000, "{summary}");
    assert_eq!(
        summary["summary"]["by_field"]["user_id"], 5_000,
        "{summary}"
    );
    assert!(rejects.len() < 60_000, "{} bytes", rejects.len());
}

#[test]
fn clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = churn(&data, &["train"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest events first"));

    let out = churn(&data, &["ingest", "/nonexistent/file.ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));

    let out = churn(&data, &["build-features", "--as-of", "last tuesday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as-of"));

    let out = Command::new(env!("CARGO_BIN_EXE_churn"))
        .args(["--data-dir", data.to_str().unwrap(), "check-config"])
        .env("CHURN_TRAINING__HORIZON_DAYS", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("training.horizon_days"));

    let out = churn(&data, &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A demo process that is killed if the test fails before stopping it, so a
/// failed assertion never leaves a server running (or a pipe held open).
struct Demo(Option<std::process::Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `churn demo`, waits for "Ready", returns the child and base URL.
fn start_demo(data: &Path, extra: &[&str]) -> (Demo, String, Vec<String>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(data)
        .args(["demo", "--port", "0", "--users", "1000"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .current_dir(data.parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    while let Some(Ok(line)) = reader.next() {
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("Ready: serving on ") {
            let base = rest.split_whitespace().next().unwrap().to_string();
            // Keep draining stdout so the demo never writes into a closed pipe.
            std::thread::spawn(move || reader.for_each(drop));
            return (Demo(Some(child)), base, lines);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("demo never became ready: {lines:?}");
}

/// A minimal HTTP/1.1 POST over a std socket (the CLI tests have no runtime).
fn http_post(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn sigterm_and_wait(mut demo: Demo) -> std::process::ExitStatus {
    let Some(mut child) = demo.0.take() else {
        panic!("demo already stopped");
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("demo did not exit within 30 s of SIGTERM");
}

#[test]
fn demo_serves_then_exits_cleanly_on_sigterm_and_reuses_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, base, lines) = start_demo(&data, &[]);
    assert!(
        lines.iter().any(|l| l.contains("validation AUC")),
        "{lines:?}"
    );
    let response = http_post(&base, "/predict?user_id=1");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"model_version\":\"1\""), "{response}");
    assert!(sigterm_and_wait(child).success());

    // Second run: same data dir, state reused and said so.
    let (child, base, lines) = start_demo(&data, &[]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("reusing the existing state")),
        "{lines:?}"
    );
    assert!(http_post(&base, "/predict?user_id=1").contains("\"model_version\":\"1\""));
    assert!(sigterm_and_wait(child).success());

    // --reset starts over (a fresh registry: version 1 again).
    let (child, _, lines) = start_demo(&data, &["--reset"]);
    assert!(
        lines.iter().any(|l| l.contains("reset the state")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("trained churn_model v1")),
        "{lines:?}"
    );
    assert!(sigterm_and_wait(child).success());
}

/// A token supplied through the environment is never printed: the example
/// lines name the variable (issue 13, finding 11).
#[test]
fn demo_does_not_print_a_supplied_admin_token() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(&data)
        .args(["demo", "--port", "0", "--users", "300"])
        .env("RUST_LOG", "warn")
        .env("CHURN_SERVER__ADMIN_TOKEN", "s3cret-admin-token-xyz")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        let last = line.contains("/admin/models");
        lines.push(line);
        if last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("/admin/models"), "{text}");
    assert!(!text.contains("s3cret-admin-token-xyz"), "{text}");
    assert!(text.contains("$CHURN_SERVER__ADMIN_TOKEN"), "{text}");
}

/// `check-config` with extra environment and an optional config file;
/// returns (exit code, stderr).
fn check_config(dir: &Path, file: Option<&str>, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_churn"));
    cmd.args(["--data-dir", dir.join("data").to_str().unwrap()]);
    if let Some(text) = file {
        let path = dir.join("extra.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let out = cmd
        .arg("check-config")
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 13, finding 5: no configuration panics, unknown keys and
/// variables are refused with the nearest key, every number is
/// range-checked and `check-config` parses cron as `serve` does.
#[test]
fn configuration_mistakes_are_named_never_ignored_or_panicking() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Some("[server]\nmax_concurrent_requests = 9223372036854775807\n"),
            vec![],
            "server.max_concurrent_requests",
        ),
        (
            Some("[server]\nmax_body_byte = 100\n"),
            vec![],
            "did you mean server.max_body_bytes",
        ),
        (
            None,
            vec![("CHURN_SERVR__PORT", "9000")],
            "did you mean CHURN_SERVER__PORT",
        ),
        (
            None,
            vec![("CHURN_SCHEDULE__RETRAIN_CRON", "every 5 minutes")],
            "schedule.retrain_cron",
        ),
        (
            None,
            vec![("CHURN_TRAINING__GBDT__L2", "-1")],
            "training.gbdt.l2",
        ),
        (
            None,
            vec![("CHURN_TRAINING__GBDT__MIN_LEAF_WEIGHT", "-0.5")],
            "training.gbdt.min_leaf_weight",
        ),
    ];
    for (file, env, expect) in cases {
        let (code, stderr) = check_config(dir.path(), file, &env);
        assert_eq!(code, Some(1), "{file:?} {env:?}: {stderr}");
        assert!(stderr.contains(expect), "{file:?} {env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The same huge value reaches `serve` only through validation.
    let out = Command::new(env!("CARGO_BIN_EXE_churn"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["serve", "--port", "0"])
        .env(
            "CHURN_SERVER__MAX_CONCURRENT_REQUESTS",
            "9223372036854775807",
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// The test command's own `CHURN_TEST_*` variables (and the scripts'
/// other `CHURN_*` names) are not settings, so the server starts among
/// them: this test runs inside that environment.
#[test]
fn the_test_commands_environment_is_a_valid_configuration() {
    assert!(
        std::env::var_os("CHURN_TEST_CLICKHOUSE_URL").is_some(),
        "run through scripts/test.sh, which exports CHURN_TEST_*"
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = check_config(dir.path(), None, &[("CHURN_BIN", "/x")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("configuration is valid"));
}

/// One HTTP/1.1 request over a std socket; returns the whole answer.
fn http(addr: &str, method: &str, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Writes 64 KiB of random bytes into the middle of `file`.
fn corrupt_middle(file: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(file).unwrap().len();
    assert!(
        len > 1 << 20,
        "a store of {len} bytes is too small to corrupt mid-file"
    );
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    let mut rng = fastrand::Rng::with_seed(13);
    let noise: Vec<u8> = (0..65_536).map(|_| rng.u8(..)).collect();
    f.write_all(&noise).unwrap();
    f.sync_all().unwrap();
}

/// Issue 13, finding 4: corruption of the SQLite file is noticed — by
/// `/readyz` once a running server meets it, and at open by every
/// command, which then refuses to start and names the file.
#[test]
fn a_corrupt_sqlite_file_is_noticed_at_open_and_by_readiness() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "1000");
    ok(&data, &["ingest", file.to_str().unwrap()]);
    let db = data.join("churn.db");

    let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--port", "0"])
        .env("RUST_LOG", "warn")
        .env("CHURN_SERVER__ADMIN_TOKEN", "t")
        .env("CHURN_SERVER__REGISTRY_POLL_MS", "0")
        .env("CHURN_SCHEDULE__ENABLED", "false")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().expect("stderr is piped");
    let server = Demo(Some(child));
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.strip_prefix("churn serving on http://") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let ready = http(&addr, "GET", "/readyz", "");
    assert!(ready.contains("\"store_reachable\":true"), "{ready}");

    corrupt_middle(&db);
    // A rebuild reads every event and meets the damage.
    let job = http(
        &addr,
        "POST",
        "/admin/features/rebuild",
        "authorization: Bearer t\r\n",
    );
    assert!(job.starts_with("HTTP/1.1 202"), "{job}");
    let mut ready = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        ready = http(&addr, "GET", "/readyz", "");
        if ready.contains("corrupt") {
            break;
        }
    }
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("\"store_reachable\":false"), "{ready}");
    assert!(ready.contains("corrupt"), "{ready}");
    drop(server);

    for args in [&["stats"][..], &["serve", "--port", "0"][..]] {
        let out = churn(&data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("churn.db"),
            "{args:?} names the file: {stderr}"
        );
        assert!(
            stderr.contains("integrity") || stderr.contains("malformed"),
            "{args:?}: {stderr}"
        );
    }
}

/// Issue 13, finding 10: a reader that stops early (`| head`) ends the
/// command quietly, for the big output (generated events) and the small
/// (stats), with no panic and exit 0.
#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_churn");
    let d = data.to_str().unwrap();
    for command in [
        format!("{bin} --data-dir {d} generate-events --users 20000 | head -2"),
        format!("{bin} --data-dir {d} stats --json | head -2"),
    ] {
        let out = Command::new("bash")
            .args(["-c", &format!("{command}; exit ${{PIPESTATUS[0]}}")])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).lines().count() <= 2);
    }
}

/// Issue 14, batch scores: `churn score` writes exactly one row per user
/// eligible at the snapshot time — counted here from the raw events file
/// (default rule: at least one event in the 30 days up to the snapshot) —
/// in CSV and NDJSON, with the production version and the reasons asked for.
#[test]
fn score_writes_one_row_per_eligible_user() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "600");
    ok(&data, &["ingest", file.to_str().unwrap()]);
    let as_of = "2026-05-20 00:00:00";
    ok(&data, &["build-features", "--as-of", as_of]);
    let trained = json(&data, &["train", "--json"]);
    let version = trained["production_version"].as_u64().unwrap();

    let t = churn::domain::time::parse_timestamp(as_of).unwrap();
    let mut eligible = std::collections::BTreeSet::new();
    let mut everyone = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let at = churn::domain::time::parse_timestamp(e["event_time"].as_str().unwrap()).unwrap();
        let user = e["user_id"].as_u64().unwrap();
        if at <= t {
            everyone.insert(user);
        }
        if at > t - 30 * 86_400 && at <= t {
            eligible.insert(user);
        }
    }
    assert!(
        eligible.len() < everyone.len(),
        "the test needs ineligible users"
    );

    let csv = dir.path().join("scores.csv");
    let summary = json(
        &data,
        &[
            "score",
            "--out",
            csv.to_str().unwrap(),
            "--reasons",
            "2",
            "--json",
        ],
    );
    assert_eq!(summary["written"], eligible.len(), "{summary}");
    assert_eq!(summary["model_version"], version);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..5],
        [
            "user_id",
            "churn_probability",
            "raw_probability",
            "model_version",
            "features_as_of"
        ]
    );
    assert_eq!(header.len(), 5 + 2 * 3);
    let users: Vec<u64> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            let p: f64 = f[1].parse().unwrap();
            assert!((0.0..=1.0).contains(&p), "{l}");
            assert_eq!(f[3], version.to_string());
            assert_eq!(f[4], "2026-05-20T00:00:00Z");
            assert!(!f[5].is_empty() && !f[8].is_empty(), "two reasons: {l}");
            f[0].parse().unwrap()
        })
        .collect();
    assert_eq!(users, eligible.iter().copied().collect::<Vec<_>>());

    let nd = dir.path().join("scores.ndjson");
    let all = json(
        &data,
        &[
            "score",
            "--out",
            nd.to_str().unwrap(),
            "--all-users",
            "--json",
        ],
    );
    assert_eq!(all["written"], everyone.len(), "{all}");
    let rows: Vec<Value> = std::fs::read_to_string(&nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), everyone.len());
    assert!(
        rows.iter()
            .all(|r| r["model_version"] == version && r.get("reasons").is_none())
    );
    let bad = churn(
        &data,
        &["score", "--out", nd.to_str().unwrap(), "--reasons", "0"],
    );
    assert!(!bad.status.success());
}

/// `churn health` (the container's HEALTHCHECK) checks the configured
/// port: exit 1 naming the URL when nothing answers there.
#[test]
fn health_fails_naming_the_url_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_churn"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "health"])
        .env("CHURN_SERVER__HOST", "0.0.0.0")
        .env("CHURN_SERVER__PORT", port.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{stderr}"
    );
}

fn churn_env(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .current_dir(data.parent().unwrap())
        .output()
        .expect("churn binary runs")
}

fn json_env(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = churn_env(data, env, args);
    assert!(
        out.status.success(),
        "churn {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// A spreadsheet export of retail line items, read through the mapping:
/// columns named the retailer's way, the line total as quantity × price,
/// one type for every line, local times in a zone with daylight saving,
/// cancellations as negative amounts and identical lines kept apart.
#[test]
fn a_csv_export_is_read_through_the_field_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("retail.csv");
    std::fs::write(
        &csv,
        "\u{feff}Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n\
         489434,85048,\"15CM CHRISTMAS GLASS BALL, 20 LIGHTS\",12,12/1/2010 7:45,6.95,13085.0,United Kingdom\n\
         489434,79323P,PINK CHERRY LIGHTS,12,12/1/2010 7:45,6.75,13085.0,United Kingdom\n\
         489434,79323P,PINK CHERRY LIGHTS,12,12/1/2010 7:45,6.75,13085.0,United Kingdom\n\
         C489449,22087,PAPER BUNTING,-12,6/1/2011 12:00,2.95,16321.0,Australia\n\
         489436,22111,GUEST,1,12/1/2010 9:06,4.25,,United Kingdom\n",
    )
    .unwrap();
    let config = dir.path().join("retail.toml");
    std::fs::write(
        &config,
        "[ingest]\ndefault_event_type = \"purchase\"\ntimezone = \"Europe/London\"\n\
         [ingest.fields]\nuser_id = \"Customer ID\"\nevent_time = \"InvoiceDate\"\namount = \"Quantity * Price\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let args = ["--config", cfg, "ingest", csv.to_str().unwrap(), "--json"];
    let report = json_env(&data, &[], &args);
    assert_eq!(
        report["inserted"], 4,
        "identical lines are two events: {report}"
    );
    assert_eq!(
        report["rejected"], 1,
        "the line without a customer: {report}"
    );
    assert_eq!(report["rejected_by_field"][0]["field"], "user_id");
    assert!(
        report["rejected_by_field"][0]["example"]
            .as_str()
            .unwrap()
            .contains("Customer ID"),
        "{report}"
    );
    // Ingesting the same file again stores nothing new.
    let again = json_env(&data, &[], &args);
    assert_eq!(
        (&again["inserted"], &again["duplicates"]),
        (&json!(0), &json!(4)),
        "{again}"
    );
    let stats = json_env(&data, &[], &["--config", cfg, "stats", "--json"]);
    // 7:45 GMT in December; 12:00 BST (UTC+1) in June.
    assert_eq!(stats["first_event_time"], 1_291_189_500, "{stats}");
    assert_eq!(stats["last_event_time"], 1_306_926_000, "{stats}");
    assert_eq!(stats["users"], 2, "{stats}");
    let profile = json_env(&data, &[], &["--config", cfg, "profile", "--json"]);
    assert_eq!(profile["refunds"]["events"], 1, "{profile}");
    assert!(profile["refunds"]["share_of_revenue"].as_f64().unwrap() > 0.1);

    // A header without a mapped column is refused before anything is read,
    // naming the setting and listing the columns.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "customer,when\n1,2024-01-01\n").unwrap();
    let out = churn_env(
        &data,
        &[],
        &["--config", cfg, "ingest", other.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest.fields.user_id"), "{err}");
    assert!(err.contains("customer, when"), "{err}");
}

/// Segment `track` calls through the preset, epoch milliseconds through a
/// declared format, and a TSV file: each read as its producer wrote it.
#[test]
fn presets_time_formats_and_tsv_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let segment = dir.path().join("segment.ndjson");
    std::fs::write(
        &segment,
        concat!(
            r#"{"type":"track","event":"Order Completed","userId":"550e8400-e29b-41d4-a716-446655440000","messageId":"m-1","timestamp":"2024-03-02T10:11:12.345Z","properties":{"revenue":19.99}}"#,
            "\n",
            r#"{"type":"track","event":"Order Completed","userId":"550e8400-e29b-41d4-a716-446655440000","messageId":"m-1","timestamp":"2024-03-02T10:11:12.345Z","properties":{"revenue":19.99}}"#,
            "\n",
            r#"{"type":"page","anonymousId":"anon-1","messageId":"m-2","timestamp":"2024-03-02T10:12:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let preset = [("CHURN_INGEST__PRESET", "segment")];
    let report = json_env(
        &data,
        &preset,
        &["ingest", segment.to_str().unwrap(), "--json"],
    );
    // The repeated messageId is the same event: a redelivery.
    assert_eq!(
        (&report["inserted"], &report["duplicates"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
    let profile = json_env(&data, &preset, &["profile", "--json"]);
    let types: Vec<&str> = profile["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order_completed", "page"], "{profile}");

    let ms = dir.path().join("ms.ndjson");
    std::fs::write(
        &ms,
        "{\"user_id\":\"u-1\",\"event_time\":1709374272345,\"event_type\":\"login\"}\n\
         {\"user_id\":\"u-1\",\"event_time\":\"1709374272\",\"event_type\":\"login\"}\n",
    )
    .unwrap();
    let env = [("CHURN_INGEST__TIME_FORMAT", "epoch_ms")];
    let report = json_env(&data, &env, &["ingest", ms.to_str().unwrap(), "--json"]);
    // Declared milliseconds: the digits without them are 1970, refused.
    assert_eq!(
        (&report["inserted"], &report["rejected"]),
        (&json!(1), &json!(1)),
        "{report}"
    );

    let tsv = dir.path().join("events.tsv");
    std::fs::write(
        &tsv,
        "user_id\tevent_time\tevent_type\tamount\nu-2\t2024-03-03 08:00:00\tRefund Issued\t-4.5\n",
    )
    .unwrap();
    let report = json_env(&data, &[], &["ingest", tsv.to_str().unwrap(), "--json"]);
    assert_eq!(report["inserted"], 1, "{report}");
    let stats = json_env(&data, &[], &["stats", "--json"]);
    assert_eq!(
        (&stats["events"], &stats["users"]),
        (&json!(4), &json!(4)),
        "{stats}"
    );
}

/// A historic log (its newest event months ago) is served, scored and
/// monitored as of its end under the default rule (`auto`), even after
/// someone built a snapshot "as of now"; under the "now" rule that snapshot
/// is used, nobody in it is eligible, and `score` says so and fails instead
/// of writing nothing.
#[test]
fn a_historic_log_is_scored_and_monitored_as_of_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "500");
    ok(&data, &["ingest", file.to_str().unwrap()]);
    let end = json(&data, &["build-features", "--as-of", "end", "--json"]);
    json(&data, &["train", "--json"]);
    json(&data, &["build-features", "--as-of", "now", "--json"]);
    let stats = json(&data, &["stats", "--json"]);
    let last = stats["last_event_time"].as_i64().unwrap();
    assert_eq!(end["as_of"], last, "{end}");

    let csv = dir.path().join("scores.csv");
    let summary = json(&data, &["score", "--out", csv.to_str().unwrap(), "--json"]);
    assert_eq!(
        summary["features_as_of"],
        churn::domain::time::format_rfc3339(last),
        "the newest snapshot under the rule, not the later one: {summary}"
    );
    assert!(summary["written"].as_u64().unwrap() > 100, "{summary}");
    assert!(summary["left_out"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["left_out_reason"]
            .as_str()
            .unwrap()
            .contains("not eligible"),
        "{summary}"
    );
    // The drift reference was taken by the same rule.
    let models = json(&data, &["models", "list", "--json"]);
    assert_eq!(
        models[0]["drift_reference"]["as_of"],
        churn::domain::time::format_rfc3339(last),
        "{}",
        models[0]["drift_reference"]["as_of"]
    );

    // Under "now", the snapshot as of now is the one: nobody is eligible.
    let out = churn_env(
        &data,
        &[("CHURN_SCHEDULE__FEATURES_AS_OF", "now")],
        &["score", "--out", csv.to_str().unwrap()],
    );
    assert!(!out.status.success(), "scoring nobody is not a success");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none of the"), "{err}");
    assert!(err.contains("--as-of end"), "{err}");
}

/// `churn init` on a live-shaped generated log: one command from the file
/// to a trained model, a written config the other commands then use, and
/// the settings it chose with their reasons.
#[test]
fn init_turns_a_generated_log_into_a_config_a_spec_and_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = generated(dir.path(), "600");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    let report = json(&data, &["init", file.to_str().unwrap(), "--json"]);
    assert_eq!(report["events"], lines, "{report}");
    let r = &report["recommended"];
    let horizon = r["horizon_days"].as_u64().unwrap();
    let lookback = r["lookback_days"].as_u64().unwrap();
    assert!(
        (7..=30).contains(&horizon) && lookback >= horizon,
        "generated users come back within days: {r}"
    );
    assert_eq!(r["features_as_of"], "auto");
    assert!(r["reasons"].as_array().unwrap().len() >= 3, "{r}");
    assert_eq!(report["train"]["version"], 1, "{report}");
    let auc = report["train"]["metrics"]["auc"].as_f64().unwrap();
    assert!(auc > report["train"]["metrics"]["recency_auc"].as_f64().unwrap());
    // The log ended months ago: the snapshot to serve is as of its end.
    let stats = json(&data, &["stats", "--json"]);
    assert_eq!(
        report["snapshot_as_of"],
        churn::domain::time::format_rfc3339(stats["last_event_time"].as_i64().unwrap())
    );

    // The written files are what the other commands read.
    let config = dir.path().join("churn.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        parsed["training"]["horizon_days"].as_integer(),
        Some(horizon as i64),
        "{text}"
    );
    assert!(
        text.contains("# training.horizon_days"),
        "reasons as comments: {text}"
    );
    let cfg = config.to_str().unwrap();
    ok(&data, &["--config", cfg, "features", "check"]);
    let profile = json(&data, &["--config", cfg, "profile", "--json"]);
    let hints = profile["hints"].as_array().unwrap();
    assert!(
        !hints
            .iter()
            .any(|h| h.as_str().unwrap().contains("set training.")),
        "the written config follows the recommendation: {hints:?}"
    );
    let csv = dir.path().join("scores.csv");
    let scored = json(
        &data,
        &[
            "--config",
            cfg,
            "score",
            "--out",
            csv.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(scored["written"].as_u64().unwrap() > 100, "{scored}");
    assert_eq!(scored["features_as_of"], report["snapshot_as_of"]);

    // Nothing is overwritten without --force.
    let again = churn(&data, &["init", file.to_str().unwrap()]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("churn.toml exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}

/// A 1990s purchase log shaped like CDNOW's: every customer's first
/// purchase in the first quarter of 1997, repeat purchases months apart,
/// most never back, a `YYYYMMDD` date column, ending mid-1998. Seeded.
fn nineties_purchase_log(path: &Path, customers: u64) {
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let start = chrono::NaiveDate::from_ymd_opt(1997, 1, 1).unwrap();
    let mut out = String::from("customer_id,date,quantity,amount\n");
    for customer in 1..=customers {
        let mut day = (uniform() * 90.0).floor();
        let mean_gap = 20.0 + 160.0 * uniform();
        let stop = 0.1 + 0.5 * uniform();
        while day < 545.0 {
            let date = start + chrono::Days::new(day as u64);
            out.push_str(&format!(
                "{customer},{},{},{:.2}\n",
                date.format("%Y%m%d"),
                1 + (uniform() * 4.0) as u32,
                5.0 + 95.0 * uniform()
            ));
            if uniform() < stop {
                break;
            }
            day += (-mean_gap * (1.0 - uniform()).ln()).max(1.0).floor();
        }
    }
    std::fs::write(path, out).unwrap();
}

/// The same on a historic cohort log: `profile` gives every hint with its
/// value in one pass, `init` chooses long windows within the log's span
/// and the end-of-log rule, records the mapping the log was read with, and
/// training names the feature that moves with the calendar.
#[test]
fn init_on_a_nineties_purchase_log_chooses_long_windows_and_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("cdnow.csv");
    nineties_purchase_log(&csv, 1_500);
    let mapping = [
        ("CHURN_INGEST__FIELDS__USER_ID", "customer_id"),
        ("CHURN_INGEST__FIELDS__EVENT_TIME", "date"),
        ("CHURN_INGEST__FIELDS__AMOUNT", "amount"),
        ("CHURN_INGEST__TIME_FORMAT", "%Y%m%d"),
        ("CHURN_INGEST__DEFAULT_EVENT_TYPE", "purchase"),
    ];
    let ingested = json_env(
        &data,
        &mapping,
        &["ingest", csv.to_str().unwrap(), "--json"],
    );
    assert_eq!(ingested["rejected"], 0, "{ingested}");

    // Under the default settings (30-day horizon, standard spec), every
    // problem comes at once, each with the value to set.
    let profile = json_env(&data, &mapping, &["profile", "--json"]);
    let hints: Vec<&str> = profile["hints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    let horizon = profile["recommended"]["horizon_days"].as_u64().unwrap();
    let lookback = profile["recommended"]["lookback_days"].as_u64().unwrap();
    assert!((60..=120).contains(&horizon), "{profile}");
    assert!(
        lookback >= horizon && lookback <= 180,
        "a third of the 545-day span at most: {profile}"
    );
    for expected in [
        format!("set training.horizon_days = {horizon} (now 30)"),
        format!("set training.lookback_days = {lookback}"),
        "churn features suggest --out features.toml".to_string(),
    ] {
        assert!(
            hints.iter().any(|h| h.contains(&expected)),
            "{expected:?} in {hints:#?}"
        );
    }
    assert_eq!(
        hints
            .iter()
            .filter(|h| h.contains("training.lookback_days ="))
            .count(),
        1,
        "one value per setting: {hints:#?}"
    );
    let eligibility = profile["eligibility"].as_array().unwrap();
    assert!(
        eligibility
            .iter()
            .all(|e| e["lookback_days"].as_f64().unwrap() <= profile["span_days"].as_f64().unwrap()),
        "no lookback longer than the log: {eligibility:?}"
    );

    let report = json_env(&data, &mapping, &["init", csv.to_str().unwrap(), "--json"]);
    let r = &report["recommended"];
    assert_eq!(
        (r["horizon_days"].as_u64(), r["lookback_days"].as_u64()),
        (Some(horizon), Some(lookback))
    );
    assert!(
        r["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains("days old")),
        "{r}"
    );
    assert!(
        report["snapshot_as_of"]
            .as_str()
            .unwrap()
            .starts_with("1998-06-"),
        "{report}"
    );
    let left_out = report["features_left_out"].as_array().unwrap();
    assert!(
        left_out.iter().any(|f| f == "purchase_count_total"),
        "with one type, its counts repeat the event counts: {left_out:?}"
    );
    let warnings = report["train"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("feature tenure_days") && w.contains("moves with the calendar")
        }),
        "everyone joined together: tenure at validation is beyond any training value: {warnings:?}"
    );

    // The written config carries the mapping: without the variables, the
    // same file is read the same way (nothing new), and scoring uses the
    // end of the log.
    let config = dir.path().join("churn.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("time_format = \"%Y%m%d\""), "{text}");
    assert!(text.contains("user_id = \"customer_id\""), "{text}");
    let cfg = config.to_str().unwrap();
    let again = json(
        &data,
        &["--config", cfg, "ingest", csv.to_str().unwrap(), "--json"],
    );
    assert_eq!(
        (&again["inserted"], &again["rejected"]),
        (&json!(0), &json!(0)),
        "{again}"
    );
    // A retrain prints each warning once (the log does not repeat it).
    let retrain = churn(&data, &["--config", cfg, "train"]);
    assert!(retrain.status.success());
    let err = String::from_utf8_lossy(&retrain.stderr);
    assert_eq!(err.matches("feature tenure_days spans").count(), 1, "{err}");
    let out = dir.path().join("scores.csv");
    let scored = json(
        &data,
        &[
            "--config",
            cfg,
            "score",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        scored["features_as_of"], report["snapshot_as_of"],
        "{scored}"
    );
    assert!(scored["written"].as_u64().unwrap() > 0, "{scored}");
    assert!(
        scored["left_out"].as_u64().unwrap() > 0,
        "customers gone for years are not ranked: {scored}"
    );
}
