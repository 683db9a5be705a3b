//! Fixtures shared by the integration-test crates: unique names and
//! deterministic generated data.

#![allow(dead_code)] // each test crate uses a subset

use churn::application::generate::{GeneratorOptions, generate};
use churn::domain::event::Event;
use churn::startup::Services;

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
    let mut delivery = churn::application::ingest::Delivery::new(
        churn::application::ingest::SourceKind::Generator,
    );
    for chunk in events(users, seed).chunks(20_000) {
        services
            .ingest
            .process_events(chunk.to_vec(), &mut delivery)
            .await
            .unwrap();
    }
    services
        .build_features
        .run(churn::application::build_features::AsOf::Now)
        .await
        .unwrap();
}

/// Trains once and makes the result production even if the recency gate
/// holds it back (tests that need a served model are not about the gate).
pub async fn train_and_promote(services: &Services) -> u64 {
    let report = services.train.run().await.unwrap();
    if !report.promoted {
        services
            .models
            .promote(report.version, "test")
            .await
            .unwrap();
    }
    report.version
}
