//! Shared pieces of the Kafka suite: the brokers under test, topic
//! creation, a plain consumer to read topics back, event fixtures.

#[path = "../common/fixtures.rs"]
mod fixtures;
#[path = "../common/proxy.rs"]
mod proxy;
pub use fixtures::{events, train_and_promote, unique};
pub use proxy::CuttableProxy;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use churn::config::{KafkaSettings, Settings, StoreKind};
use churn::domain::event::Event;
use churn::infrastructure::kafka::producer::EventProducer;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use secrecy::SecretString;

/// The real brokers under test (scripts/kafka.sh starts both). Override
/// with `CHURN_TEST_KAFKA_BROKERS=name=host:port,...`. An unreachable broker
/// fails the tests: they never skip.
pub fn brokers() -> Vec<(String, String)> {
    let spec = std::env::var("CHURN_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| "noida=127.0.0.1:19092,tansu=127.0.0.1:19093".into());
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|entry| {
            let (name, addr) = entry.split_once('=').unwrap_or_else(|| {
                panic!("CHURN_TEST_KAFKA_BROKERS entry {entry:?}: name=host:port")
            });
            (name.trim().to_string(), addr.trim().to_string())
        })
        .collect()
}

pub fn clickhouse_url() -> String {
    std::env::var("CHURN_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Kafka settings for a test: its own topic, dead-letter topic and group,
/// short waits so tests are quick.
pub fn kafka_settings(brokers: &str, topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.to_string(),
        group_id: format!("{topic}_group"),
        topics: vec![topic.to_string()],
        dlq_topic: format!("{topic}_dlq"),
        batch_max_events: 2_000,
        batch_max_wait_ms: 200,
        commit_interval_ms: 200,
        statistics_interval_ms: 500,
        retry_initial_ms: 100,
        retry_max_ms: 1_000,
        session_timeout_ms: 6_000,
        ..KafkaSettings::default()
    }
}

/// Server settings in `dir` consuming `topic`; no schedule, no polling.
pub fn server_settings(dir: &std::path::Path, kafka: KafkaSettings) -> Settings {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        kafka,
        ..Settings::default()
    };
    s.server.port = 0;
    s.server.admin_token = SecretString::from("t".to_string());
    s.server.registry_poll_ms = 0;
    s.schedule.enabled = false;
    s
}

/// Switches `s` to a fresh ClickHouse database reached through `url`.
pub fn use_clickhouse(s: &mut Settings, url: &str, database: &str) {
    s.store.kind = StoreKind::Clickhouse;
    s.clickhouse.url = url.to_string();
    s.clickhouse.database = database.to_string();
    // Debian's 18.16 lacks the format that type validation needs.
    s.clickhouse.validation = false;
    // The two-shard cluster when scripts/test.sh runs the suite on it.
    s.clickhouse.cluster = std::env::var("CHURN_TEST_CLICKHOUSE_CLUSTER").unwrap_or_default();
    s.clickhouse.shard_urls = std::env::var("CHURN_TEST_CLICKHOUSE_SHARD_URLS").unwrap_or_default();
}

pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    create_topics_with(brokers, names, partitions, &[]).await;
}

/// [`create_topics`] with topic configs (`max.message.bytes`, ...).
pub async fn create_topics_with(
    brokers: &str,
    names: &[&str],
    partitions: i32,
    config: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            config.iter().fold(
                NewTopic::new(n, partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("creating topics on {brokers} (is scripts/kafka.sh running?): {e}")
        });
    for r in results {
        if let Err((name, code)) = r {
            panic!("creating topic {name} on {brokers}: {code}");
        }
    }
}

pub fn distinct_ids(events: &[Event]) -> HashSet<i64> {
    events.iter().map(Event::event_id).collect()
}

/// Produces events as JSON keyed by user (the library producer the CLI
/// uses), failing the test on any unacknowledged message.
pub fn produce(settings: &KafkaSettings, topic: &str, events: &[Event], rate: Option<f64>) {
    let mut producer = EventProducer::new(&churn::startup::kafka_options(settings), topic, rate)
        .expect("producer");
    for e in events {
        let payload = e.to_json().to_string();
        producer
            .send(e.user_id().to_string().as_bytes(), payload.as_bytes())
            .expect("send");
    }
    producer
        .finish(Duration::from_secs(60))
        .expect("all events acknowledged");
}

/// Raw payloads produced as they are (poison messages).
pub fn produce_raw(settings: &KafkaSettings, topic: &str, payloads: &[&[u8]]) {
    let mut producer = EventProducer::new(&churn::startup::kafka_options(settings), topic, None)
        .expect("producer");
    for p in payloads {
        producer.send(b"poison", p).expect("send");
    }
    producer
        .finish(Duration::from_secs(30))
        .expect("poison acknowledged");
}

/// One raw payload produced by a plain producer that allows messages up
/// to 8 MB (churn's producer keeps librdkafka's 1 MB default).
pub async fn produce_large(brokers: &str, topic: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "8388608")
        .set("acks", "all")
        .create()
        .expect("large-message producer");
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(topic).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("the broker takes a large message");
}

/// One message read back: payload and headers.
pub struct ReadBack {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ReadBack {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the start until `want` messages arrived or `within`.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    want: usize,
    within: Duration,
) -> Vec<ReadBack> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadBack {
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Ok(Err(e)) => eprintln!("reader: {e}"),
            Err(_) => {}
        }
    }
    out
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one SQL statement over ClickHouse's HTTP interface; the trimmed
/// body, or the server's error.
pub async fn try_clickhouse_query(sql: &str) -> Result<String, String> {
    let r = reqwest::Client::new()
        .post(clickhouse_url())
        .body(sql.to_string())
        .send()
        .await
        .map_err(|e| format!("clickhouse unreachable: {e}"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body.trim().to_string())
    } else {
        Err(format!("{sql}: {status} {body}"))
    }
}

/// As [`try_clickhouse_query`], failing the test on an error.
pub async fn clickhouse_query(sql: &str) -> String {
    try_clickhouse_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
