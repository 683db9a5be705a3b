//! Adapters implementing the application's ports:
//!
//! - [`store`]: the embedded SQLite store (default) and ClickHouse;
//! - [`registry`]: the model registry on `object_store` (local directory,
//!   S3/MinIO);
//! - [`kafka`]: the consumer-group event stream, dead-letter and demo
//!   producers (rdkafka);
//! - [`mlflow`]: the optional MLflow exporter (REST);
//! - [`models`]: trainers (forust-ml GBDT, Newton-fitted logistic);
//! - [`file_source`]: NDJSON files and the rejects file;
//! - [`scheduler`]: cron triggers for the jobs.
//!
//! Each adapter takes its own options struct; only `startup` maps the
//! settings into them.

pub mod backup;
pub mod file_source;
pub mod kafka;
pub mod mlflow;
pub mod mlflow_model;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod trainers;
