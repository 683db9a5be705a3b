//! Kafka ingestion throughput: N generated events are produced to a fresh
//! topic, then read back by fresh consumer groups, side by side:
//!
//! - ceiling: a bare rdkafka `StreamConsumer` with librdkafka's defaults
//!   that only copies payloads (the broker + client limit, nothing stored);
//! - the server's consumer alone (`KafkaStream` batches with churn's client
//!   settings, nothing parsed or stored): what the consumer itself costs;
//! - end to end: the server's consumer (`KafkaStream` + `StreamIngest`:
//!   batch, parse, validate, store, commit) into the embedded store and into
//!   ClickHouse twice: redeliveries recognised by event-id lookup (as every
//!   source did before) and by log position (the server's path now).
//!
//! Every rate is taken over the middle half of the events (from the moment
//! a quarter were received, or stored, to the moment three quarters were;
//! see [`Window`]): the group join and the burst librdkafka prefetches
//! meanwhile stay out of every figure alike.
//! `cargo bench --bench kafka`; env `BENCH_EVENTS` (default 2000000),
//! `BENCH_BATCH_EVENTS` (default: the config's), `BENCH_ORDER` (`time`,
//! default, or `user`), `CHURN_TEST_KAFKA_BROKERS` (`name=host:port,...`, as
//! the tests), `CHURN_TEST_CLICKHOUSE_URL`, `BENCH_SKIP_CLICKHOUSE=1`,
//! `BENCH_SKIP_EMBEDDED=1`,
//! `BENCH_CH_PATHS` (`id` or `position`: one ClickHouse path only).
//! Needs scripts/kafka.sh (and scripts/clickhouse.sh). Prints figures only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ingest::IngestEvents;
use churn::application::ports::{DeadLetterSink, EventStore};
use churn::application::stream_ingest::{IngestHealth, StreamIngest, StreamOptions};
use churn::config::KafkaSettings;
use churn::infrastructure::kafka::consumer::KafkaStream;
use churn::infrastructure::kafka::dead_letters::KafkaDeadLetters;
use churn::infrastructure::kafka::producer::EventProducer;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

fn settings(brokers: &str, topic: &str, group: &str) -> KafkaSettings {
    let defaults = KafkaSettings::default();
    KafkaSettings {
        brokers: brokers.to_string(),
        group_id: group.to_string(),
        topics: vec![topic.to_string()],
        dlq_topic: format!("{topic}_dlq"),
        // BENCH_BATCH_EVENTS: compare batch sizes (default: the config default).
        batch_max_events: std::env::var("BENCH_BATCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.batch_max_events),
        queued_max_kbytes: std::env::var("BENCH_QUEUED_KBYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.queued_max_kbytes),
        ..defaults
    }
}

/// Where a rate is measured: from the moment a quarter of the events were
/// received (or stored) to the moment three quarters were. Outside that
/// window a consumer is joining its group or draining what librdkafka
/// prefetched meanwhile; inside it the prefetch queue is as full at both
/// ends (full when the consumer is the slower side, empty when the broker
/// is), so no event fetched outside the window is counted in it.
#[derive(Default)]
struct Window {
    start: Option<(u64, Instant)>,
    end: Option<(u64, Instant)>,
}

impl Window {
    /// Notes that `count` of `n` events are done now.
    fn note(&mut self, count: u64, n: u64) {
        if self.start.is_none() && count >= n / 4 {
            self.start = Some((count, Instant::now()));
        }
        if self.end.is_none() && count >= n - n / 4 {
            self.end = Some((count, Instant::now()));
        }
    }

    fn rate(&self) -> anyhow::Result<f64> {
        let (Some((a, ta)), Some((b, tb))) = (self.start, self.end) else {
            anyhow::bail!("the run ended before its measuring window");
        };
        Ok((b - a) as f64 / (tb - ta).as_secs_f64().max(1e-9))
    }
}

/// Ceiling: receive and copy every payload with librdkafka's defaults.
async fn raw_consume(brokers: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}_raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("group.protocol", "classic")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut window = Window::default();
    let mut bytes = 0usize;
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        window.note(i as u64 + 1, n as u64);
        let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
        bytes += payload.len();
    }
    std::hint::black_box(bytes);
    window.rate()
}

/// The server's consumer alone: batches as `StreamIngest` asks for them,
/// nothing parsed, stored or committed.
async fn our_consume(k: &KafkaSettings, n: usize) -> anyhow::Result<f64> {
    use churn::application::ports::EventStream;
    let mut stream = KafkaStream::subscribe(&churn::startup::kafka_options(k))?;
    let started = Instant::now();
    let (mut got, mut window) = (0usize, Window::default());
    while got < n {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "consumer stalled"
        );
        let batch = stream
            .next_batch(
                k.batch_max_events,
                Duration::from_millis(k.batch_max_wait_ms),
            )
            .await?;
        got += batch.len();
        window.note(got as u64, n as u64);
        std::hint::black_box(batch);
    }
    window.rate()
}

/// An event store that counts what it stored, for the measuring
/// [`Window`].
struct FirstWrite {
    inner: Arc<dyn EventStore>,
    /// Hand the records' log positions on (the server's path). Off: the
    /// store only sees events and deduplicates them by event-id lookup,
    /// as every source did before positions were logged.
    by_position: bool,
    /// Events the store reported as newly inserted (polled instead of
    /// `stats()`, whose full-table count would compete with the inserts).
    inserted: std::sync::atomic::AtomicU64,
}

impl FirstWrite {
    fn note(
        &self,
        outcome: Result<
            churn::application::ports::AppendOutcome,
            churn::application::ports::StoreError,
        >,
    ) -> Result<churn::application::ports::AppendOutcome, churn::application::ports::StoreError>
    {
        if let Ok(o) = &outcome {
            self.inserted
                .fetch_add(o.inserted, std::sync::atomic::Ordering::Relaxed);
        }
        outcome
    }
}

#[async_trait::async_trait]
impl EventStore for FirstWrite {
    async fn append(
        &self,
        events: Vec<churn::domain::event::Event>,
    ) -> Result<churn::application::ports::AppendOutcome, churn::application::ports::StoreError>
    {
        self.note(self.inner.append(events).await)
    }
    async fn append_from_log(
        &self,
        events: &[churn::domain::event::Event],
        positions: &[churn::application::ports::LogPosition],
    ) -> Result<churn::application::ports::AppendOutcome, churn::application::ports::StoreError>
    {
        if !self.by_position {
            return self.append(events.to_vec()).await;
        }
        self.note(self.inner.append_from_log(events, positions).await)
    }
    async fn stats(
        &self,
    ) -> Result<churn::application::ports::EventStats, churn::application::ports::StoreError> {
        self.inner.stats().await
    }
    async fn type_counts(
        &self,
    ) -> Result<Vec<churn::application::ports::TypeCount>, churn::application::ports::StoreError>
    {
        self.inner.type_counts().await
    }
    async fn ping(&self) -> Result<(), churn::application::ports::StoreError> {
        self.inner.ping().await
    }
    async fn register_names(
        &self,
        names: &[(u64, &str)],
    ) -> Result<Vec<u64>, churn::application::ports::StoreError> {
        self.inner.register_names(names).await
    }
    async fn user_names(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, churn::application::ports::StoreError> {
        self.inner.user_names(keys).await
    }
    async fn record_rejects(
        &self,
        tallies: &[churn::application::ports::RejectTally],
    ) -> Result<(), churn::application::ports::StoreError> {
        self.inner.record_rejects(tallies).await
    }
    async fn reject_tallies(
        &self,
    ) -> Result<Vec<churn::application::ports::RejectTally>, churn::application::ports::StoreError>
    {
        self.inner.reject_tallies().await
    }
}

/// End to end through the server's consumer into `store`: events/s in
/// the measuring [`Window`], and total seconds.
async fn end_to_end(
    k: &KafkaSettings,
    store: Arc<dyn EventStore>,
    distinct: u64,
    by_position: bool,
) -> anyhow::Result<(f64, f64)> {
    let store = Arc::new(FirstWrite {
        inner: store,
        by_position,
        inserted: std::sync::atomic::AtomicU64::new(0),
    });
    let ingest = IngestEvents::new(store.clone(), 86_400, 20_000);
    let options = StreamOptions {
        batch_max_events: k.batch_max_events,
        batch_max_wait: Duration::from_millis(k.batch_max_wait_ms),
        retry_initial: Duration::from_millis(k.retry_initial_ms),
        retry_max: Duration::from_millis(k.retry_max_ms),
    };
    let stream = Box::new(KafkaStream::subscribe(&churn::startup::kafka_options(k))?);
    let mut dlq: Box<dyn DeadLetterSink> =
        Box::new(KafkaDeadLetters::new(&churn::startup::kafka_options(k))?);
    let stop = CancellationToken::new();
    let t = Instant::now();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            StreamIngest::new(ingest, options, IngestHealth::default())
                .run(stream, &mut *dlq, stop)
                .await
        })
    };
    let mut window = Window::default();
    loop {
        let stored = store.inserted.load(std::sync::atomic::Ordering::Relaxed);
        window.note(stored, distinct);
        if stored >= distinct {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "end-to-end run stalled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    // Exact: the store holds every distinct event once (a plain count, no
    // FINAL, on ClickHouse).
    let stored = store.stats().await?.events;
    anyhow::ensure!(
        stored == distinct,
        "stored {stored} events, expected {distinct}"
    );
    stop.cancel();
    task.await?;
    Ok((window.rate()?, secs))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let want: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let brokers = std::env::var("CHURN_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| "noida=127.0.0.1:19092,tansu=127.0.0.1:19093".into());
    let ch_url = std::env::var("CHURN_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let skip_ch = std::env::var("BENCH_SKIP_CLICKHOUSE").is_ok_and(|v| v == "1");

    let mut events = Vec::new();
    let mut users = 0;
    while events.len() < want {
        users += 500;
        events.clear();
        generate(
            GeneratorOptions {
                users,
                days: 120,
                end: 1_780_000_000,
                seed: 3,
                churn_share: 0.35,
                string_ids: false,
            },
            |e| events.push(e),
        );
    }
    // A live stream arrives in time order (BENCH_ORDER=user: the
    // generator's user-by-user order, where every batch spans every month
    // and so writes one ClickHouse part per month).
    if std::env::var("BENCH_ORDER").as_deref() != Ok("user") {
        events.sort_by_key(churn::domain::event::Event::event_time);
    }
    let payloads: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.user_id().to_string(), e.to_json().to_string()))
        .collect();
    let distinct = events
        .iter()
        .map(|e| e.event_id())
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    let n = payloads.len();
    let avg = payloads.iter().map(|(_, p)| p.len()).sum::<usize>() / n.max(1);
    println!(
        "{n} events ({distinct} distinct) for {users} users, ~{avg} B each, {PARTITIONS} partitions"
    );

    for entry in brokers.split(',').filter(|s| !s.is_empty()) {
        let (name, addr) = entry.split_once('=').unwrap_or(("broker", entry));
        let topic = format!("bench_{name}_{}", std::process::id());
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .create()?;
        let dlq = format!("{topic}_dlq");
        let topics = [
            NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1)),
            NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
        ];
        for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
        }

        let k = settings(addr, &topic, "unused");
        let t = Instant::now();
        let mut producer = EventProducer::new(&churn::startup::kafka_options(&k), &topic, None)?;
        for (key, payload) in &payloads {
            producer.send(key.as_bytes(), payload.as_bytes())?;
        }
        let report = producer.finish(Duration::from_secs(120))?;
        let produce_s = t.elapsed().as_secs_f64();
        println!("\n[{name} @ {addr}]");
        println!(
            "  produce (lz4, acks=all)        {:>9.0} events/s  ({} in {produce_s:.2} s)",
            report.delivered as f64 / produce_s,
            report.delivered
        );

        let raw_rate = raw_consume(addr, &topic, n).await?;
        println!("  consume only (ceiling)         {raw_rate:>9.0} events/s");
        let ours = our_consume(&settings(addr, &topic, &format!("{topic}_ours")), n).await?;
        println!(
            "  churn's consumer, no store     {ours:>9.0} events/s  = {:.0}% of the ceiling",
            100.0 * ours / raw_rate
        );

        if std::env::var("BENCH_SKIP_EMBEDDED").as_deref() != Ok("1") {
            let dir = tempfile::tempdir()?;
            let sqlite: Arc<dyn EventStore> = Arc::new(SqliteStore::open(SqliteOptions {
                path: dir.path().join("bench.db"),
                synchronous_full: false,
                snapshot_retention: 1,
            })?);
            let (rate, e2e) = end_to_end(
                &settings(addr, &topic, &format!("{topic}_sqlite")),
                sqlite,
                distinct,
                true,
            )
            .await?;
            println!(
                "  end to end -> embedded store   {:>9.0} events/s  ({e2e:.2} s)  = {:.0}% of the ceiling",
                rate,
                100.0 * rate / raw_rate
            );
        }

        if !skip_ch {
            // Side by side on the same topic: redeliveries recognised by
            // event-id lookup (every batch reads the stored ids of its users)
            // against by log position (one lookup in the small ledger).
            // BENCH_CH_PATHS=position (or id) runs one path only.
            let paths = std::env::var("BENCH_CH_PATHS").unwrap_or_default();
            for (label, by_position) in [("by event id", false), ("by position", true)]
                .into_iter()
                .filter(|(_, p)| paths.is_empty() || paths == ["id", "position"][usize::from(*p)])
            {
                let db = format!("churn_bench_kafka_{}_{by_position}", std::process::id());
                let ch = ClickHouseStore::new(&ClickHouseOptions {
                    url: ch_url.clone(),
                    database: db.clone(),
                    user: "default".into(),
                    password: String::new(),
                    validation: false,
                    snapshot_retention: 1,
                    dedup_check: true,
                    cluster: String::new(),
                    shard_urls: Vec::new(),
                })?;
                ch.drop_database().await?;
                ch.migrate().await?;
                let ch = Arc::new(ch);
                let group = format!("{topic}_ch_{by_position}");
                let (rate, e2e) = end_to_end(
                    &settings(addr, &topic, &group),
                    ch.clone(),
                    distinct,
                    by_position,
                )
                .await?;
                println!(
                    "  end to end -> ClickHouse, dedup {label:<12} {:>9.0} events/s  ({e2e:.2} s)  = {:.0}% of the ceiling",
                    rate,
                    100.0 * rate / raw_rate
                );
                ch.drop_database().await?;
            }
        }
        // Brokers keep topics until deleted; noida-db rewrites its whole
        // state file as it grows, and left-behind bench topics (gigabytes)
        // had it spinning a core even when idle.
        for r in admin
            .delete_topics(&[topic.as_str(), dlq.as_str()], &AdminOptions::new())
            .await?
        {
            if let Err((t, e)) = r {
                println!("  (could not delete {t}: {e})");
            }
        }
    }
    println!(
        "\n(rates over the middle half of the events: group joins and prefetch bursts excluded)"
    );
    Ok(())
}
