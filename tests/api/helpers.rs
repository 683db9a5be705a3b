//! The api crate's helpers: the shared harness (tests/common/harness.rs).

#[path = "../common/harness.rs"]
mod harness;

pub use harness::*;
