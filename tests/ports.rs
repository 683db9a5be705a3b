//! Contract suites of the ports that need no server, each run over every
//! adapter and its fake: `ModelTrainer` (the forust/Newton trainer and the
//! gradient-descent fake), `EventSource` (NDJSON and CSV files and an
//! in-memory list), `DeadLetterSink` (the rejects file, the HTTP answer's
//! collector and the in-memory fake). The stores' suite is
//! tests/contracts.rs, the registry's tests/registry.rs; the Kafka stream
//! and dead-letter topic, MLflow and the ClickHouse prediction table are
//! exercised against their servers in tests/kafka, tests/mlflow.rs and
//! tests/clickhouse.rs.

use std::path::Path;

use async_trait::async_trait;
use churn::application::ingest::CollectRejects;
use churn::application::ports::{
    DeadLetterSink, EventSource, ModelTrainer, RawRecord, SourceError,
};
use churn::domain::event::EventError;
use churn::domain::metrics::roc_auc;
use churn::domain::model::{Dataset, ModelKind};
use churn::domain::training::GbdtParams;
use churn::infrastructure::file_source::{CsvSource, NdjsonSource, RejectsFile};
use churn::infrastructure::trainers::ForustTrainer;
use churn::testing::{GradientTrainer, MemoryDeadLetters};

// ---- ModelTrainer ----------------------------------------------------------

/// Two informative features and one of noise, 2,000 rows.
fn learnable() -> Dataset {
    let mut d = Dataset::with_columns(vec!["recency".into(), "activity".into(), "noise".into()]);
    let mut rng = fastrand::Rng::with_seed(7);
    for u in 0..2_000u64 {
        let recency = rng.f64() * 60.0;
        let activity = rng.f64() * 20.0;
        let noise = rng.f64();
        let logit = 0.08 * recency - 0.25 * activity + 0.5;
        let churned = rng.f64() < 1.0 / (1.0 + (-logit).exp());
        d.push(u, &[recency, activity, noise], churned);
    }
    d
}

/// What every trainer must do, for each kind (the blend included): learn
/// a learnable set, give probabilities, explain them (contributions sum to
/// the log-odds), and decode its own bytes into a model that predicts the
/// same.
fn trainer_contract(name: &str, trainer: &dyn ModelTrainer) {
    let data = learnable();
    for kind in [ModelKind::Gbdt, ModelKind::Logistic, ModelKind::Blend] {
        let model = trainer.train(kind, &data).unwrap();
        let p = model.predict_proba(&data.rows).unwrap();
        assert_eq!(p.len(), data.len(), "{name} {kind:?}");
        assert!(p.iter().all(|x| (0.0..=1.0).contains(x)), "{name} {kind:?}");
        let auc = roc_auc(&p, &data.labels).unwrap();
        assert!(auc > 0.75, "{name} {kind:?}: AUC {auc}");
        let n = data.n_features();
        let c = model.contributions(&data.rows[..20 * n]).unwrap();
        assert_eq!(c.len(), 20 * (n + 1), "{name} {kind:?}: n + 1 per row");
        for (i, row) in c.chunks(n + 1).enumerate() {
            let logit: f64 = row.iter().sum();
            let q = 1.0 / (1.0 + (-logit).exp());
            assert!(
                (q - p[i]).abs() < 1e-6,
                "{name} {kind:?} row {i}: {q} vs {}",
                p[i]
            );
        }
        let bytes = model.to_bytes().unwrap();
        let back = trainer.decode(kind, &bytes).unwrap();
        assert_eq!(
            back.predict_proba(&data.rows).unwrap(),
            p,
            "{name} {kind:?}"
        );
        assert!(
            trainer.decode(kind, b"not a model").is_err(),
            "{name} {kind:?}"
        );
        assert!(trainer.hyperparameters(kind).is_object(), "{name} {kind:?}");
    }
}

#[test]
fn the_forust_trainer_keeps_the_contract() {
    trainer_contract(
        "forust",
        &ForustTrainer {
            gbdt: GbdtParams::default(),
        },
    );
}

#[test]
fn the_gradient_fake_keeps_the_contract() {
    trainer_contract("gradient fake", &GradientTrainer::default());
}

// ---- EventSource -----------------------------------------------------------

/// An in-memory list of records, the fake source.
struct Listed(Vec<RawRecord>);

#[async_trait]
impl EventSource for Listed {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<RawRecord>, SourceError> {
        let n = max.min(self.0.len());
        Ok(self.0.drain(..n).collect())
    }
}

const EVENTS: [(&str, &str, &str); 5] = [
    ("1", "2025-01-01 00:00:00", "login"),
    ("u-2", "2025-01-01 00:01:00", "view"),
    ("3", "2025-01-01 00:02:00", "login"),
    ("3", "2025-01-01 00:02:00", "login"),
    ("4", "2025-01-01 00:03:00", "purchase"),
];

/// Every source hands out all its records in order, in batches of at most
/// the size asked, each with a distinct origin; an empty batch means done.
async fn source_contract(name: &str, mut source: Box<dyn EventSource>) {
    let mut seen = Vec::new();
    loop {
        let batch = source.next_batch(2).await.unwrap();
        assert!(batch.len() <= 2, "{name}");
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    assert!(
        source.next_batch(2).await.unwrap().is_empty(),
        "{name}: stays done"
    );
    assert_eq!(seen.len(), EVENTS.len(), "{name}");
    let format = churn::domain::event_format::EventFormat::default();
    let policy = churn::domain::event::TimePolicy::at(1_800_000_000, 0);
    for (record, (user, time, kind)) in seen.iter().zip(EVENTS) {
        let e = format.parse(&record.payload, policy).unwrap();
        assert_eq!(e.user().to_string(), user, "{name}");
        assert_eq!(e.event_type(), kind, "{name}");
        assert_eq!(
            e.event_time(),
            churn::domain::time::parse_timestamp(time).unwrap(),
            "{name}"
        );
    }
    let mut origins: Vec<&str> = seen.iter().map(|r| r.origin.as_str()).collect();
    origins.sort_unstable();
    origins.dedup();
    assert_eq!(origins.len(), EVENTS.len(), "{name}: distinct origins");
}

fn ndjson(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("events.ndjson");
    let mut text = String::new();
    for (user, time, kind) in EVENTS {
        let user = if user.starts_with('u') {
            format!("\"{user}\"")
        } else {
            user.to_string()
        };
        text.push_str(&format!(
            "{{\"user_id\":{user},\"event_time\":\"{time}\",\"event_type\":\"{kind}\"}}\n\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn every_event_source_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let file = ndjson(dir.path());
    source_contract("ndjson", Box::new(NdjsonSource::open(&file).await.unwrap())).await;
    let csv = dir.path().join("events.csv");
    let mut text = String::from("user_id,event_time,event_type\n");
    for (user, time, kind) in EVENTS {
        text.push_str(&format!("{user},{time},{kind}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    source_contract("csv", Box::new(CsvSource::open(&csv, b',').unwrap())).await;
    let lines = std::fs::read_to_string(&file).unwrap();
    let listed = lines
        .lines()
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| RawRecord::new(l.as_bytes().to_vec(), format!("list:{i}")))
        .collect();
    source_contract("in-memory list", Box::new(Listed(listed))).await;
}

// ---- DeadLetterSink --------------------------------------------------------

const REJECTED: [&str; 3] = ["user_id", "json", "event_time"];

fn rejection(field: &str) -> EventError {
    match field {
        "json" => EventError::MalformedJson("expected a JSON object".into()),
        "user_id" => EventError::Missing("user_id"),
        _ => EventError::Missing("event_time"),
    }
}

/// Hands a sink three rejects and flushes.
async fn feed(sink: &mut dyn DeadLetterSink) {
    for (i, field) in REJECTED.iter().enumerate() {
        let record = RawRecord::new(format!("line {i}").into_bytes(), format!("f:{i}"));
        sink.reject(&record, &rejection(field)).await.unwrap();
    }
    sink.flush().await.unwrap();
}

/// Every sink keeps every record it was given, in order, with its reason
/// (as the sink's reader sees it).
fn check(name: &str, kept: Vec<(String, String)>) {
    assert_eq!(kept.len(), REJECTED.len(), "{name}: {kept:?}");
    for (i, ((origin, reason), field)) in kept.iter().zip(REJECTED).enumerate() {
        assert_eq!(origin, &format!("f:{i}"), "{name}");
        assert_eq!(reason, &rejection(field).to_string(), "{name}");
    }
}

#[tokio::test]
async fn every_dead_letter_sink_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejects.ndjson");
    let mut file = RejectsFile::new(path.clone(), 100);
    feed(&mut file).await;
    check(
        "rejects file",
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("origin").is_some())
            .map(|v| {
                (
                    v["origin"].as_str().unwrap().to_string(),
                    v["error"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    );
    let mut collect = CollectRejects::new(10);
    feed(&mut collect).await;
    assert_eq!(collect.total, 3);
    check(
        "HTTP collector",
        collect
            .notes
            .iter()
            .map(|n| (n.origin.clone(), n.error.clone()))
            .collect(),
    );
    let mut memory = MemoryDeadLetters::default();
    feed(&mut memory).await;
    check(
        "in-memory fake",
        memory
            .rejected
            .lock()
            .unwrap()
            .iter()
            .map(|(o, r, _)| (o.clone(), r.clone()))
            .collect(),
    );
}
