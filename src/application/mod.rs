//! Use cases and the ports they need.
//!
//! Each use case is a struct holding `Arc<dyn Port>`s with a one-step entry
//! (`run`) that the CLI, the HTTP layer, the scheduler and the tests all
//! call. Nothing here knows which backend sits behind a port.

pub mod build_features;
pub mod erasure;
pub mod generate;
pub mod ingest;
pub mod jobs;
pub mod leadership;
pub mod live_features;
pub mod live_watch;
pub mod manage_models;
pub mod ports;
pub mod predict;
pub mod profile;
pub mod registry_poll;
pub mod runtime;
pub mod score;
pub mod serving_state;
pub mod stream_ingest;
pub mod suggest;
pub mod supervisor;
pub mod train;
pub mod user_ids;
