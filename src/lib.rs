//! # churn
//!
//! A churn-prediction platform in one binary: ingest user events, compute
//! point-in-time features from one declarative spec, train and evaluate a
//! gradient-boosted model against honest baselines, keep versions in a
//! registry, and serve probabilities.
//!
//! ## Layout
//! Dependencies point inward: `http`/`infrastructure` → `application` →
//! `domain`; only [`startup`] names concrete adapters.
//!
//! - [`domain`]: pure types and rules — users and their keys
//!   (`user`), events and their identity (`event`, `identity`), reading
//!   producers' shapes (`event_format`, `time_format`), the feature spec and
//!   its evaluator, the churn label, snapshots, models, calibration, drift,
//!   metrics, the training and promotion policy. No I/O.
//! - [`application`]: use cases — `IngestEvents` (the one ingestion
//!   pipeline), `StreamIngest`, `BuildFeatures`, `TrainModel` (`train/`,
//!   one file per step), `ManageModels`, `PredictChurn`, `ScoreUsers`,
//!   `ProfileData`, `suggest` (a spec for a store), `generate` (demo
//!   events), jobs, the registry poll, `runtime` (the supervised background
//!   tasks) — and the ports (traits) they need.
//! - [`infrastructure`]: adapters — the embedded SQLite store and the
//!   ClickHouse store (`store/sqlite/`, `store/clickhouse/`, one shape), the
//!   object-store registry (local or S3/MinIO), Kafka consumer and
//!   producers, the MLflow exporter, the forust and logistic trainers, file
//!   sources (NDJSON, CSV) and the rejects file, the cron scheduler.
//! - `testing` (feature `testing`, on for tests and benches): in-memory
//!   fakes of every port, for unit tests of use cases and the contract
//!   suites; not in the shipped binary, never wired by [`startup`].
//! - [`config`]: settings from `config.toml` + `CHURN_*` env, typed and
//!   validated once at load; it maps into domain types and nothing else.
//! - [`http`]: the axum API (predict, events, health, metrics, admin,
//!   OpenAPI, the dashboard), routes registered once with their OpenAPI
//!   entries.
//! - [`startup`]: the composition root — settings to adapters, per command
//!   (`Stores`, `ModelsOnly`, `Services`), and the server
//!   (`Application`); the only place that names adapters.
//! - [`shutdown`]: SIGTERM/Ctrl-C → cancellation token.
//! - [`cli`]: the `churn` command line, one file per command.
//! - [`demo`]: the main job (`churn demo`).
//! - [`telemetry`]: logging, the metrics recorder and metric names.

/// mimalloc for every binary built on this crate (the server, tests,
/// benches): ingestion allocates several small strings per event, and
/// glibc's allocator spent a quarter of the streamed-ingest CPU on them
/// (measured with `perf` on `cargo bench --bench kafka`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod application;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod infrastructure;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
