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
//!   evaluator, the churn label, models, metrics. No I/O.
//! - [`application`]: use cases (`IngestEvents`, `BuildFeatures`,
//!   `TrainModel`, `ManageModels`) and the ports (traits) they need.
//! - [`infrastructure`]: adapters — embedded SQLite store, object-store
//!   registry, forust/smartcore trainers, NDJSON files.
//! - [`config`]: settings from `config.toml` + `CHURN_*` env, validated.
//! - [`http`]: the axum API (predict, events, health, metrics, admin, OpenAPI).
//! - [`startup`]: builds the services and the server from settings.
//! - [`shutdown`]: SIGTERM/Ctrl-C → cancellation token.
//! - [`cli`]: the `churn` command line.
//! - [`telemetry`]: logging and metric names.

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
