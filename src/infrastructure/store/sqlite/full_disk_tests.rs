//! The disk fills mid-body (SQLite's `max_page_count` makes the writer see
//! exactly what a full disk returns, `SQLITE_FULL`): the chunks stored
//! before it stay stored, the rest fail; the same body sent again once
//! there is room stores exactly what was missing — line items that are
//! identical lines included — and a third time nothing.

use std::sync::Arc;

use crate::application::ingest::{CollectRejects, Delivery, IngestEvents, SourceKind};
use crate::application::ports::{EventStore, RawRecord};
use crate::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};

fn body() -> Vec<RawRecord> {
    (0..20_000u64)
        .map(|i| {
            // Every tenth line repeats the previous one: two identical
            // line items, two events.
            let n = if i % 10 == 9 { i - 1 } else { i };
            RawRecord::new(
                format!(
                    r#"{{"user_id":{},"event_time":"2026-01-01 10:{:02}:{:02}","event_type":"purchase","amount":{}.5}}"#,
                    n % 500,
                    (n / 60) % 60,
                    n % 60,
                    n % 97
                )
                .into_bytes(),
                format!("body:{i}"),
            )
        })
        .collect()
}

/// Sends the body in 4,096-record chunks as `POST /events` does (one
/// delivery); how many chunks failed.
async fn send(ingest: &IngestEvents) -> (u64, u64, usize) {
    let mut delivery = Delivery::new(SourceKind::Http);
    let mut rejects = CollectRejects::new(10);
    let (mut inserted, mut duplicates, mut failed) = (0, 0, 0);
    let records = body();
    for chunk in records.chunks(4_096) {
        match ingest
            .process(chunk.to_vec(), &mut delivery, &mut rejects)
            .await
        {
            Ok(r) => {
                inserted += r.inserted;
                duplicates += r.duplicates;
            }
            Err(_) => failed += 1,
        }
    }
    (inserted, duplicates, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_full_disk_stores_exactly_what_was_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: 3,
    })
    .unwrap();
    let pages: i64 = store
        .with_writer(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0)))
        .unwrap();
    // Room for a few thousand events, not 20,000.
    store
        .with_writer(|c| c.pragma_update(None, "max_page_count", pages + 60))
        .unwrap();
    let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400 * 3_650, 10_000);
    let (first, _, failed) = send(&ingest).await;
    assert!(failed > 0, "the disk filled");
    assert!(first > 0, "chunks before it were stored");
    assert_eq!(store.stats().await.unwrap().events, first);

    store
        .with_writer(|c| c.pragma_update(None, "max_page_count", 1_073_741_823))
        .unwrap();
    let (second, again, failed) = send(&ingest).await;
    assert_eq!(failed, 0);
    assert_eq!(
        first + second,
        20_000,
        "every line is one event, identical ones too"
    );
    assert_eq!(again, first, "what the first send stored is recognised");
    assert_eq!(store.stats().await.unwrap().events, 20_000);
    let (third, dup, _) = send(&ingest).await;
    assert_eq!((third, dup), (0, 20_000));
}
