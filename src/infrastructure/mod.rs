//! Adapters implementing the application's ports: the embedded SQLite
//! store, the object-store model registry, the model trainers, and NDJSON
//! file sources/sinks.

pub mod file_source;
pub mod kafka;
pub mod mlflow;
pub mod models;
pub mod registry;
pub mod scheduler;
pub mod store;
