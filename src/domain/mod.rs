//! The pure core: events, the feature specification and its evaluator, the
//! churn label rule, model abstractions and evaluation metrics.
//!
//! Nothing in here does I/O, reads the clock or depends on tokio: every
//! function takes what it needs (including "now") as arguments, so the same
//! code runs inside the embedded store, in unit tests and, rendered to SQL,
//! inside ClickHouse.

pub mod calibration;
pub mod curves;
pub mod drift;
pub mod event;
pub mod event_format;
pub mod explanation;
pub mod features;
pub mod identifier;
pub mod identity;
pub mod label;
pub mod lease;
pub mod live_row;
pub mod math;
pub mod metrics;
pub mod model;
pub mod recommend;
pub mod sampling;
pub mod snapshot;
pub mod time;
pub mod time_format;
pub mod training;
pub mod user;
