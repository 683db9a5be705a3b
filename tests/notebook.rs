//! `notebooks/explore_churn.ipynb` executed headless (`jupyter nbconvert
//! --execute`, venv from scripts/notebook.sh) against a live `churn demo`
//! on the suite's ClickHouse 18.16 with its registry in the suite's S3
//! server. An error in any cell fails the test; the executed notebook is
//! read back to check that it found the snapshot's own feature names and
//! the registry's objects.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
fn notebook_runs_against_churn_clickhouse_and_s3() {
    let jupyter = std::env::var("CHURN_TEST_JUPYTER").expect(
        "CHURN_TEST_JUPYTER is not set: scripts/test.sh sets it (scripts/notebook.sh installs it)",
    );
    let clickhouse = env_or("CHURN_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123");
    let s3 = env_or("CHURN_TEST_S3_ENDPOINT", "http://127.0.0.1:19100");
    let tag = format!("nb{}_{}", std::process::id(), fastrand::u32(..));
    let database = format!("churn_{tag}");
    let registry = format!("s3://churn-test/{tag}");
    let token = "notebook-token";
    let dir = tempfile::tempdir().unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["demo", "--port", "0", "--users", "400"])
        .env("CHURN_STORE__TYPE", "clickhouse")
        .env("CHURN_CLICKHOUSE__URL", &clickhouse)
        .env("CHURN_CLICKHOUSE__DATABASE", &database)
        // Debian's 18.16 lacks the format type validation needs.
        .env("CHURN_CLICKHOUSE__VALIDATION", "false")
        .env("CHURN_REGISTRY__URL", &registry)
        .env("CHURN_REGISTRY__S3_ENDPOINT", &s3)
        .env("CHURN_REGISTRY__S3_ALLOW_HTTP", "true")
        .env("CHURN_REGISTRY__S3_ACCESS_KEY_ID", "churn")
        .env("CHURN_REGISTRY__S3_SECRET_ACCESS_KEY", "churn-secret")
        .env("CHURN_SERVER__ADMIN_TOKEN", token)
        .env("CHURN_SCHEDULE__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let mut base = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Ready: serving on ") {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let base = base.expect("demo printed its address");

    let out_dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = Command::new(&jupyter)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["nbconvert", "--to", "notebook", "--execute"])
        .arg("--ExecutePreprocessor.timeout=300")
        .arg("--output-dir")
        .arg(out_dir.path())
        .args([
            "--output",
            "executed.ipynb",
            "notebooks/explore_churn.ipynb",
        ])
        .env("CLICKHOUSE_URL", &clickhouse)
        .env("CLICKHOUSE_USER", "default")
        .env("CLICKHOUSE_PASSWORD", "")
        .env("CLICKHOUSE_DATABASE", &database)
        .env("CHURN_API", &base)
        .env("CHURN_ADMIN_TOKEN", token)
        .env("CHURN_REGISTRY__URL", &registry)
        .env("MLFLOW_S3_ENDPOINT_URL", &s3)
        .env("AWS_ACCESS_KEY_ID", "churn")
        .env("AWS_SECRET_ACCESS_KEY", "churn-secret")
        .output()
        .unwrap();
    eprintln!("nbconvert --execute: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "the notebook failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(demo);

    let executed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("executed.ipynb")).unwrap())
            .unwrap();
    let mut text = String::new();
    for cell in executed["cells"].as_array().unwrap() {
        for output in cell["outputs"].as_array().into_iter().flatten() {
            assert_ne!(output["output_type"], "error", "error cell: {output}");
            text.push_str(&output.to_string());
        }
    }
    assert!(
        text.contains("ClickHouse 18.16"),
        "ran against 18.16: {text}"
    );
    // The standard spec's names came from the snapshot header.
    let spec = churn::domain::features::FeatureSpec::standard();
    let expected = format!(" users x {} features", spec.names().len());
    assert!(text.contains(&expected), "{expected}: {text}");
    assert!(text.contains("plotted: ["), "{text}");
    assert!(text.contains("image/png"), "charts drawn");
    assert!(!text.contains("registry not in S3"), "{text}");
    assert!(
        text.contains(&format!("{tag}/")),
        "the registry's objects listed: {text}"
    );
}
