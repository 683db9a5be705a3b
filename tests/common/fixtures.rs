//! Fixtures shared by the integration-test crates: unique names and
//! deterministic generated data.

#![allow(dead_code)] // each test crate uses a subset

use churn::application::generate::{GeneratorOptions, generate};
use churn::domain::event::Event;
use churn::startup::Services;

#[path = "harness.rs"]
mod harness;

/// A name no other test run uses (`tag_pid_nanos`).
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Generated events ending just before today's midnight, so the data (and
/// what trains on it) is the same on every run of a day.
pub fn events(users: u64, seed: u64) -> Vec<Event> {
    let mut out = Vec::new();
    generate(
        GeneratorOptions {
            users,
            days: 120,
            end: churn::domain::time::floor_day(chrono::Utc::now().timestamp()) - 60,
            seed,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| out.push(e),
    );
    out
}

/// Stores `users` users' generated events and builds a feature snapshot.
pub async fn seed_store(services: &Services, users: u64, seed: u64) {
    harness::load(services, users, seed, false).await;
}

#[allow(unused_imports)] // used by some test crates
pub use harness::{TestApp, spawn, train_and_promote};

/// Serves `services` on 127.0.0.1:0 until the returned app is stopped.
pub async fn serve(services: Services) -> TestApp {
    harness::spawn(services, None).await
}
