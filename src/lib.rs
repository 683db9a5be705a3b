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
//! - [`domain`]: pure types and rules — events, the feature spec and its
//!   evaluator, the churn label, snapshots, models, metrics, the training
//!   and promotion policy. No I/O.
//! - [`application`]: use cases (`IngestEvents`, `StreamIngest`,
//!   `BuildFeatures`, `TrainModel`, `ManageModels`, `PredictChurn`, jobs,
//!   the registry poll, task supervision) and the ports (traits) they need.
//! - [`infrastructure`]: adapters — the embedded SQLite store and the
//!   ClickHouse store, the object-store registry (local or S3/MinIO), Kafka
//!   consumer and producers, the MLflow exporter, forust and logistic trainers,
//!   NDJSON files, the cron scheduler.
//! - [`testing`]: in-memory fakes of every port, for unit tests of use
//!   cases and the contract suites (never wired by [`startup`]).
//! - [`config`]: settings from `config.toml` + `CHURN_*` env, validated;
//!   it maps into domain types and nothing else.
//! - [`http`]: the axum API (predict, events, health, metrics, admin, OpenAPI).
//! - [`startup`]: builds the services and the server from settings; the
//!   only place that names adapters.
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
pub mod testing;
