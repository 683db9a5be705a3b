//! The compose core path, for real: Debian's docker-compose 1.29 drives
//! rootful podman's Docker-API socket with `docker-compose.yml` plus
//! `deploy/compose.podman.yml` (local ClickHouse 18.16, tansu, s3s-fs;
//! host networking on ports apart from the suite's). `up churn` runs
//! `churn-migrate`, churn consumes events produced to Kafka into ClickHouse,
//! retrains, registers the model in S3 and answers `/predict`; `down -v`
//! leaves no container and no volume behind. churn runs from the very
//! image the Dockerfile test builds.

#[path = "common/podman.rs"]
mod podman;

use std::process::Command;
use std::time::{Duration, Instant};

use podman::{http, image, json, ok, podman, repo, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const CHURN_PORT: u16 = 28000;
const CLICKHOUSE_PORT: u16 = 18123;
const BROKER: &str = "127.0.0.1:29092";

struct Compose {
    project: String,
    env_file: tempfile::NamedTempFile,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        assert!(
            std::env::var_os("DOCKER_HOST").is_some(),
            "DOCKER_HOST is not set: run scripts/podman.sh socket, then eval \"$(scripts/podman.sh env)\""
        );
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(repo())
            .arg("--env-file")
            .arg(self.env_file.path())
            .args([
                "-p",
                &self.project,
                "-f",
                "docker-compose.yml",
                "-f",
                "deploy/compose.podman.yml",
            ])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("docker-compose");
        ok(&out, &format!("docker-compose {args:?}"));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Every container of the project, running or not.
    fn containers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let out = podman()
            .args(["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
            .output()
            .unwrap();
        ok(&out, "podman ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn logs(&self) -> String {
        self.cmd(&["logs", "--tail", "30"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if !self.containers().is_empty() {
            let _ = self.cmd(&["down", "-v", "-t", "5"]).output();
        }
    }
}

/// `.env.example` with the tag of the image the Dockerfile test built.
fn env_file(
    tag: &str,
) -> (
    tempfile::NamedTempFile,
    std::collections::BTreeMap<String, String>,
) {
    let text = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let mut vars = std::collections::BTreeMap::new();
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once('=') {
            Some((k, v)) if !line.starts_with('#') => {
                let v = if k == "CHURN_IMAGE_TAG" { tag } else { v };
                vars.insert(k.to_string(), v.to_string());
                out.push_str(&format!("{k}={v}\n"));
            }
            _ => {}
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), out).unwrap();
    (file, vars)
}

fn clickhouse_count(vars: &std::collections::BTreeMap<String, String>, query: &str) -> Option<u64> {
    let path = format!(
        "/?user={}&password={}&query={}",
        vars["CLICKHOUSE_USER"],
        vars["CLICKHOUSE_PASSWORD"],
        query.replace(' ', "%20")
    );
    let (status, body) = http(CLICKHOUSE_PORT, "GET", &path, "", "")?;
    (status == 200).then(|| body.trim().parse().ok()).flatten()
}

/// Generated events (the binary's own generator), one JSON object a line.
fn generated_events(users: u64) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_churn"))
        .args([
            "generate-events",
            "--users",
            &users.to_string(),
            "--seed",
            "5",
        ])
        .output()
        .unwrap();
    ok(&out, "churn generate-events");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn produce(lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    for line in lines {
        let key = json(line)["user_id"].to_string();
        let mut record = BaseRecord::to("events").payload(line).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every event delivered");
}

fn admin(token: &str, method: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(
        CHURN_PORT,
        method,
        path,
        &format!("authorization: Bearer {token}\r\n"),
        "",
    )
    .unwrap_or_else(|| panic!("{method} {path}: no answer"));
    assert!(status < 300, "{method} {path}: {status} {body}");
    json(&body)
}

/// Starts a job and waits for it; returns its record.
fn job(token: &str, path: &str) -> serde_json::Value {
    let started = admin(token, "POST", path);
    let id = started["id"].as_u64().expect("job id");
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let record = admin(token, "GET", &format!("/admin/jobs/{id}"));
        if record["status"] != "running" {
            assert_eq!(record["status"], "succeeded", "{path}: {record}");
            return record;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{path}: job {id} still running after 600 s");
}

#[test]
fn compose_core_path_ingests_from_kafka_trains_into_s3_and_predicts() {
    let built = image();
    let tag = built.rsplit_once(':').map(|(_, t)| t).expect("image tag");
    let (env_file, vars) = env_file(tag);
    let compose = Compose {
        project: format!("churncompose{}", std::process::id()),
        env_file,
    };
    let token = vars["CHURN_ADMIN_TOKEN"].clone();

    let t0 = Instant::now();
    // Builds nothing: churn runs from the image the Dockerfile test built.
    let up = compose
        .cmd(&["up", "-d", "--no-build", "churn"])
        .output()
        .unwrap();
    if !up.status.success() {
        panic!(
            "docker-compose up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr),
            compose.logs()
        );
    }
    eprintln!(
        "docker-compose up -d churn: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let running = compose.containers();
    for service in [
        "kafka",
        "kafka-init",
        "clickhouse",
        "minio",
        "minio-init",
        "churn-migrate",
        "churn",
    ] {
        assert!(
            running
                .iter()
                .any(|c| c == &format!("{}_{service}_1", compose.project)),
            "{service} not among {running:?}"
        );
    }
    // MLflow, Airflow, Jupyter, Prometheus are not part of the core path.
    assert!(
        !running
            .iter()
            .any(|c| c.contains("mlflow") || c.contains("airflow")),
        "{running:?}"
    );

    // churn-migrate ran to completion and created the tables.
    let migrate = compose.run(&["logs", "churn-migrate"]);
    assert!(migrate.contains("applied"), "{migrate}");
    let code = podman::run(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &format!("{}_churn-migrate_1", compose.project),
    ]);
    assert_eq!(code, "0");
    wait_for(
        CHURN_PORT,
        "/healthz",
        200,
        120,
        &format!("{}_churn_1", compose.project),
    );

    // Events produced to Kafka reach churn.events, each exactly once.
    let events = generated_events(800);
    produce(&events);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut stored = None;
    while Instant::now() < deadline {
        stored = clickhouse_count(&vars, "SELECT count() FROM churn.events FINAL");
        if stored == Some(events.len() as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        stored,
        Some(events.len() as u64),
        "events in ClickHouse\n{}",
        compose.logs()
    );

    // Retrain: the model goes to the S3 registry (s3s-fs' directory).
    let features = job(&token, "/admin/features/rebuild");
    assert!(features["result"].is_object(), "{features}");
    let trained = job(&token, "/admin/retrain");
    let version = trained["result"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("{trained}"));
    let objects = podman::run(&[
        "exec",
        &format!("{}_minio_1", compose.project),
        "find",
        "/data/models",
        "-type",
        "f",
    ]);
    assert!(
        objects.contains(&format!("/{version:08}/")),
        "model {version} in the registry bucket:\n{objects}"
    );
    let models = admin(&token, "GET", "/admin/models");
    assert!(models.to_string().contains("production"), "{models}");

    wait_for(
        CHURN_PORT,
        "/readyz",
        200,
        60,
        &format!("{}_churn_1", compose.project),
    );
    let user = json(&events[0])["user_id"].as_u64().unwrap();
    let (status, body) = http(
        CHURN_PORT,
        "POST",
        &format!("/predict?user_id={user}"),
        "",
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let prediction = json(&body);
    assert_eq!(
        prediction["model_version"].to_string().trim_matches('"'),
        version.to_string(),
        "{prediction}"
    );

    // down -v: nothing of the project is left.
    let t1 = Instant::now();
    compose.run(&["down", "-v", "-t", "10"]);
    eprintln!(
        "docker-compose down -v: {:.1} s",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        compose.containers().is_empty(),
        "{:?}",
        compose.containers()
    );
    let volumes = podman::run(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(
        !volumes.lines().any(|v| v.starts_with(&compose.project)),
        "{volumes}"
    );
}
