//! Kafka ingestion against real Kafka-protocol brokers (scripts/kafka.sh
//! starts noida-db and tansu on 127.0.0.1; each test runs against both,
//! since each broker has its own protocol quirks). A missing broker fails
//! these tests loudly: they never skip.
//!
//! - consume → stored → features, with poison messages dead-lettered (with
//!   reasons and source positions in headers) while good ones flow;
//! - `kill -9` of the consuming server mid-stream, restart: ClickHouse
//!   holds exactly the produced events (raw rows, no FINAL);
//! - a store outage (ClickHouse behind a proxy that is cut) pauses
//!   consumption, `/readyz` says why, `/predict` keeps serving, and after
//!   recovery every event is stored once;
//! - two replicas in one group split the partitions; when one leaves, the
//!   other takes over with no loss; lag is exported per partition;
//! - an invalid message over 1 MB is dead-lettered truncated (with its
//!   size and position), never blocking the partition behind it;
//! - a consumer that owns no partition while records wait unconsumed says
//!   so in `/readyz` and consumes once the group gives it the partition;
//! - a server started before its broker serves at once and consumes once
//!   the broker is up (its own tansu on a free port).

mod support;

use std::time::Duration;

use churn::startup::{Application, Services};
use serde_json::Value;
use support::*;
use tokio_util::sync::CancellationToken;

struct Running {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    services: Services,
}

async fn start(settings: churn::config::Settings) -> Running {
    let services = Services::build(settings).await.expect("services");
    start_with(services).await
}

async fn start_with(services: Services) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_listener(services.clone(), listener)
        .await
        .expect("application");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    Running {
        base,
        stop,
        task,
        services,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn stored(&self) -> u64 {
        self.services
            .events
            .stats()
            .await
            .map(|s| s.events)
            .unwrap_or(0)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_stores_and_dead_letters_poison_on_every_broker() {
    for (name, brokers) in brokers() {
        let topic = unique(&format!("ev_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 3).await;
        let events = events(150, 11);
        let expected = distinct_ids(&events).len() as u64;
        // Poison between good messages: the partition must keep flowing.
        let (first, rest) = events.split_at(events.len() / 2);
        produce(&k, &topic, first, None);
        let poison: [&[u8]; 4] = [
            b"not json at all",
            br#"{"user_id":{"id":7},"event_time":"2026-01-01 00:00:00","event_type":"login"}"#,
            br#"{"event_time":"2026-01-01 00:00:00","event_type":"login"}"#,
            br#"{"user_id":5,"event_time":"2999-01-01 00:00:00","event_type":"login"}"#,
        ];
        produce_raw(&k, &topic, &poison);
        produce(&k, &topic, rest, None);

        let dir = tempfile::tempdir().unwrap();
        let app = start(server_settings(dir.path(), k.clone())).await;
        let stored = eventually(
            &format!("{name}: all events stored"),
            Duration::from_secs(90),
            || async {
                let n = app.stored().await;
                (n >= expected).then_some(n)
            },
        )
        .await;
        assert_eq!(
            stored, expected,
            "{name}: stored exactly the distinct events"
        );

        let dead = read_topic(&brokers, &k.dlq_topic, 4, Duration::from_secs(30)).await;
        assert_eq!(dead.len(), 4, "{name}: every poison message dead-lettered");
        let mut payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_slice()).collect();
        payloads.sort();
        let mut want = poison.to_vec();
        want.sort();
        assert_eq!(
            payloads, want,
            "{name}: dead letters keep the original bytes"
        );
        let mut fields: Vec<&str> = dead
            .iter()
            .filter_map(|d| d.header("churn.error_field"))
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["event_time", "json", "user_id", "user_id"],
            "{name}"
        );
        for d in &dead {
            assert_eq!(d.header("churn.source_topic"), Some(topic.as_str()));
            assert!(
                d.header("churn.source_offset")
                    .is_some_and(|o| o.parse::<i64>().is_ok())
            );
            assert!(d.header("churn.error").is_some_and(|e| !e.is_empty()));
        }

        let (status, ready) = app.get("/readyz").await;
        let ready: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(ready["stream_consumer"], true, "{ready}");
        assert_eq!(ready["stream_paused"], false, "{ready}");
        assert_eq!(status, 503, "no model yet, so not ready: {ready}");
        let (_, metrics) = app.get("/metrics").await;
        assert!(
            metric(&metrics, "churn_dead_letters_total").is_some_and(|v| v >= 4.0),
            "{metrics}"
        );
        let lag = eventually(
            &format!("{name}: lag metric"),
            Duration::from_secs(20),
            || async {
                let (_, m) = app.get("/metrics").await;
                m.lines()
                    .find(|l| l.starts_with("churn_kafka_consumer_lag{") && l.contains(&topic))
                    .map(str::to_string)
            },
        )
        .await;
        assert!(lag.contains("partition=\""), "{lag}");

        // Stored events feed the feature build like any other ingestion.
        let summary = app
            .services
            .build_features
            .run(churn::application::build_features::AsOf::Now)
            .await
            .unwrap()
            .summary;
        assert!(summary.users > 100, "{name}: {summary:?}");
        app.stop().await;
    }
}

/// Another member holds the only partition and consumes nothing (a stuck
/// or ghost member, as noida kept after a kill -9): the server owns no
/// partition while every record waits. It said "ready" with 60% of a topic
/// unread before; now `/readyz` names it, and once the member leaves, the
/// server gets the partition and stores everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_left_without_partitions_says_so_and_recovers() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    for (name, brokers) in brokers() {
        let topic = unique(&format!("orphan_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 1).await;
        let events = events(10, 9);
        let expected = distinct_ids(&events).len() as u64;
        produce(&k, &topic, &events, None);
        // The squatter: same group and protocol, polls (so it stays a
        // member and keeps the partition), never commits.
        let squatter: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("group.protocol", "classic")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("squatter");
        squatter.subscribe(&[&topic]).unwrap();
        let squatting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let poller = {
            let squatting = squatting.clone();
            tokio::spawn(async move {
                while squatting.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tokio::time::timeout(Duration::from_millis(200), squatter.recv()).await;
                }
                drop(squatter);
            })
        };
        eventually(
            &format!("{name}: the squatter owns the partition"),
            Duration::from_secs(30),
            || async {
                let reader: StreamConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", &k.group_id)
                    .create()
                    .unwrap();
                let committed = reader.committed_offsets(
                    {
                        let mut t = rdkafka::TopicPartitionList::new();
                        t.add_partition(&topic, 0);
                        t
                    },
                    Duration::from_secs(5),
                );
                committed.is_ok().then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;

        let dir = tempfile::tempdir().unwrap();
        let app = start(server_settings(dir.path(), k.clone())).await;
        let seen = std::time::Instant::now();
        let problem = eventually(
            &format!("{name}: readiness names the orphaned consumer"),
            Duration::from_secs(60),
            || async {
                let (_, body) = app.get("/readyz").await;
                let ready: Value = serde_json::from_str(&body).unwrap();
                ready["problems"].as_array().and_then(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .find(|p| p.contains("owns no partition"))
                        .map(str::to_string)
                })
            },
        )
        .await;
        eprintln!("{name}: after {:?}: {problem}", seen.elapsed());
        assert_eq!(app.stored().await, 0, "{name}: nothing consumed meanwhile");
        // The count is the broker's watermarks' (tansu's differ from
        // Kafka's); that records wait is what matters.
        assert!(problem.contains("records have waited"), "{problem}");

        // The squatter leaves: the partition comes to the server.
        squatting.store(false, std::sync::atomic::Ordering::Relaxed);
        poller.await.unwrap();
        let stored = eventually(
            &format!("{name}: everything stored once the partition is ours"),
            Duration::from_secs(90),
            || async {
                let n = app.stored().await;
                (n >= expected).then_some(n)
            },
        )
        .await;
        assert_eq!(stored, expected, "{name}");
        eventually(
            &format!("{name}: the problem clears"),
            Duration::from_secs(30),
            || async {
                let (_, body) = app.get("/readyz").await;
                (!body.contains("owns no partition")).then_some(())
            },
        )
        .await;
        app.stop().await;
    }
}

/// A 1.5 MB invalid message: the dead-letter producer refused it (1 MB
/// limit), its batch was retried forever and the events behind it never
/// stored. Now it is dead-lettered truncated, saying so, and the partition
/// flows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_invalid_message_is_dead_lettered_truncated() {
    for (name, brokers) in brokers() {
        let topic = unique(&format!("big_{name}"));
        let k = kafka_settings(&brokers, &topic);
        // The source topic takes large messages (the dead-letter topic
        // keeps the broker's default limit).
        create_topics_with(&brokers, &[&topic], 1, &[("max.message.bytes", "8388608")]).await;
        create_topics(&brokers, &[&k.dlq_topic], 1).await;
        let events = events(40, 5);
        let expected = distinct_ids(&events).len() as u64;
        let (first, rest) = events.split_at(events.len() / 2);
        produce(&k, &topic, first, None);
        let mut big = b"{\"user_id\":".to_vec();
        big.resize(1_572_864, b'9');
        produce_large(&brokers, &topic, &big).await;
        produce(&k, &topic, rest, None);

        let dir = tempfile::tempdir().unwrap();
        let app = start(server_settings(dir.path(), k.clone())).await;
        let stored = eventually(
            &format!("{name}: the events behind the large message stored"),
            Duration::from_secs(60),
            || async {
                let n = app.stored().await;
                (n >= expected).then_some(n)
            },
        )
        .await;
        assert_eq!(stored, expected, "{name}");
        let dead = read_topic(&brokers, &k.dlq_topic, 1, Duration::from_secs(30)).await;
        assert_eq!(dead.len(), 1, "{name}: the large message dead-lettered");
        let d = &dead[0];
        assert_eq!(d.header("churn.truncated"), Some("true"), "{name}");
        assert_eq!(d.header("churn.original_bytes"), Some("1572864"), "{name}");
        assert_eq!(d.payload.len(), 512 * 1024, "{name}");
        assert!(
            big.starts_with(&d.payload),
            "{name}: the head of the original"
        );
        assert_eq!(d.header("churn.source_topic"), Some(topic.as_str()));
        let offset = first.len().to_string();
        assert_eq!(
            d.header("churn.source_offset"),
            Some(offset.as_str()),
            "{name}"
        );
        let (_, ready) = app.get("/readyz").await;
        let ready: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(ready["stream_paused"], false, "{ready}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_events_cli_produces_to_the_topic() {
    let (_, brokers) = brokers().into_iter().next().expect("a broker");
    let topic = unique("cli");
    create_topics(&brokers, &[&topic], 1).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_churn"))
        .args([
            "generate-events",
            "--to",
            "kafka",
            "--topic",
            &topic,
            "--users",
            "20",
            "--rate",
            "5000",
        ])
        .env("CHURN_KAFKA__BROKERS", &brokers)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let produced: usize = stderr
        .split("produced ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("report line in {stderr}"));
    assert!(produced > 100, "{stderr}");
    let read = read_topic(&brokers, &topic, produced, Duration::from_secs(30)).await;
    assert_eq!(read.len(), produced);
    assert!(
        read.iter()
            .all(|m| serde_json::from_slice::<Value>(&m.payload).is_ok())
    );
    // Without brokers the command says what to set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_churn"))
        .args(["generate-events", "--to", "kafka", "--users", "2"])
        .env_remove("CHURN_KAFKA__BROKERS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.brokers"));
}

/// Starts `churn serve` as a child process consuming `topic` into ClickHouse.
fn spawn_server(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    db: &str,
    log: &str,
) -> std::process::Child {
    let k = kafka_settings(brokers, topic);
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_churn"))
        .arg("serve")
        .args(["--port", "0"])
        .env("CHURN_DATA_DIR", dir)
        .env("CHURN_STORE__TYPE", "clickhouse")
        .env("CHURN_CLICKHOUSE__URL", clickhouse_url())
        .env("CHURN_CLICKHOUSE__DATABASE", db)
        .env("CHURN_CLICKHOUSE__VALIDATION", "false")
        .env(
            "CHURN_CLICKHOUSE__CLUSTER",
            std::env::var("CHURN_TEST_CLICKHOUSE_CLUSTER").unwrap_or_default(),
        )
        .env(
            "CHURN_CLICKHOUSE__SHARD_URLS",
            std::env::var("CHURN_TEST_CLICKHOUSE_SHARD_URLS").unwrap_or_default(),
        )
        .env("CHURN_SCHEDULE__ENABLED", "false")
        .env("CHURN_KAFKA__BROKERS", brokers)
        .env("CHURN_KAFKA__TOPICS", format!("[\"{topic}\"]"))
        .env("CHURN_KAFKA__GROUP_ID", &k.group_id)
        .env("CHURN_KAFKA__DLQ_TOPIC", &k.dlq_topic)
        .env("CHURN_KAFKA__BATCH_MAX_EVENTS", "1000")
        .env("CHURN_KAFKA__BATCH_MAX_WAIT_MS", "100")
        .env("CHURN_KAFKA__COMMIT_INTERVAL_MS", "1000")
        .env("CHURN_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("CHURN_KAFKA__MAX_POLL_INTERVAL_MS", "10000")
        // Static membership: the restarted replica reclaims its partitions
        // at once. (Without it, noida-db never expires the killed member.)
        .env("CHURN_KAFKA__GROUP_INSTANCE_ID", "replica-1")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("churn serve")
}

/// Kills the child on drop, so a failed assertion leaves no server behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the servers' logs when the test fails (the temp dir goes away).
struct DumpLogsOnPanic(std::path::PathBuf);

impl Drop for DumpLogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["first.log", "second.log"] {
                let text = std::fs::read_to_string(self.0.join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {name} (last lines, newest first)\n{}", tail.join("\n"));
            }
        }
    }
}

async fn raw_counts(db: &str) -> (u64, u64) {
    // No FINAL: the physical rows, so a duplicate would show. Before the
    // server has migrated, the table does not exist yet: zero.
    let body = try_clickhouse_query(&format!(
        "SELECT count(), uniqExact(event_id) FROM {db}.events FORMAT TSV"
    ))
    .await
    .unwrap_or_default();
    let mut parts = body.split('\t').map(|v| v.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_stores_exactly_the_produced_events() {
    for (name, brokers) in brokers() {
        let topic = unique(&format!("kill_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 3).await;
        let db = unique(&format!("kill_{name}"));
        let events = events(400, 5);
        let expected = distinct_ids(&events).len() as u64;
        let dir = tempfile::tempdir().unwrap();
        let mut server = KillOnDrop(spawn_server(dir.path(), &brokers, &topic, &db, "first.log"));
        // Produce at a steady rate from another thread while it consumes.
        let producer = {
            let (k, topic, events) = (k.clone(), topic.clone(), events.clone());
            std::thread::spawn(move || produce(&k, &topic, &events, Some(40_000.0)))
        };
        let before_kill = eventually(
            &format!("{name}: a third stored"),
            Duration::from_secs(90),
            || async {
                let (rows, _) = raw_counts(&db).await;
                (rows >= expected / 3).then_some(rows)
            },
        )
        .await;
        server.0.kill().unwrap(); // SIGKILL: no shutdown hook runs
        server.0.wait().unwrap();
        producer.join().unwrap();
        let (rows_at_kill, _) = raw_counts(&db).await;
        assert!(
            rows_at_kill < expected,
            "{name}: killed mid-stream ({rows_at_kill} of {expected})"
        );

        let _server = KillOnDrop(spawn_server(
            dir.path(),
            &brokers,
            &topic,
            &db,
            "second.log",
        ));
        let logs = dir.path().to_path_buf();
        let _dump = DumpLogsOnPanic(logs);
        eventually(
            &format!("{name}: all events after restart"),
            Duration::from_secs(120),
            || async {
                let (_, unique_ids) = raw_counts(&db).await;
                (unique_ids >= expected).then_some(())
            },
        )
        .await;
        // Give any redelivered batch time to (not) land twice.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rows, unique_ids) = raw_counts(&db).await;
        eprintln!(
            "{name}: {before_kill} rows seen before kill -9, {rows_at_kill} at kill, {rows} after restart"
        );
        assert_eq!(unique_ids, expected, "{name}: no loss");
        assert_eq!(rows, expected, "{name}: no duplicates (raw rows, no FINAL)");
        drop(_server);
        clickhouse_query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_pauses_consumption_and_resumes_without_loss() {
    for (name, brokers) in brokers() {
        let topic = unique(&format!("outage_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 2).await;
        let db = unique(&format!("outage_{name}"));
        let upstream = clickhouse_url().trim_start_matches("http://").to_string();
        let proxy = CuttableProxy::start(upstream).await;
        let dir = tempfile::tempdir().unwrap();
        let mut settings = server_settings(dir.path(), k.clone());
        use_clickhouse(&mut settings, &proxy.url, &db);
        // A served model first: half the users, stored directly and trained.
        let all = events(600, 8);
        let (direct, streamed): (Vec<_>, Vec<_>) =
            all.iter().cloned().partition(|e| e.user_id() % 2 == 0);
        let services = Services::build(settings).await.unwrap();
        let mut delivery = churn::application::ingest::Delivery::new(
            churn::application::ingest::SourceKind::Generator,
        );
        for chunk in direct.chunks(20_000) {
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
        // A served model (the gate is not under test here).
        train_and_promote(&services).await;
        let app = start_with(services).await;
        let expected = distinct_ids(&all).len() as u64;

        proxy.set_up(false);
        produce(&k, &topic, &streamed, None);
        let ready: Value = eventually(
            &format!("{name}: paused"),
            Duration::from_secs(60),
            || async {
                let (_, body) = app.get("/readyz").await;
                let v: Value = serde_json::from_str(&body).ok()?;
                (v["stream_paused"] == true).then_some(v)
            },
        )
        .await;
        assert_eq!(ready["ready"], false, "{ready}");
        assert!(
            ready["problems"].to_string().contains("event store"),
            "{ready}"
        );
        // Serving goes on from memory while the store is down.
        let r = reqwest::Client::new()
            .post(format!("{}/predict?user_id=2", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}: /predict during the outage");
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set_up(true);
        eventually(
            &format!("{name}: resumed and stored"),
            Duration::from_secs(90),
            || async {
                let (_, unique_ids) = raw_counts(&db).await;
                (unique_ids >= expected).then_some(())
            },
        )
        .await;
        let (rows, unique_ids) = raw_counts(&db).await;
        assert_eq!(
            (rows, unique_ids),
            (expected, expected),
            "{name}: no loss, no duplicates"
        );
        let (_, body) = app.get("/readyz").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["stream_paused"], false, "{v}");
        let (_, metrics) = app.get("/metrics").await;
        assert!(
            metric(&metrics, "churn_stream_errors_total{stage=\"store\"}")
                .is_some_and(|v| v >= 1.0),
            "{metrics}"
        );
        app.stop().await;
        clickhouse_query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_partitions_and_one_takes_over() {
    for (name, brokers) in brokers() {
        let topic = unique(&format!("group_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 4).await;
        let db = unique(&format!("group_{name}"));
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Both replicas write to one shared store, as in production.
        let mut sa = server_settings(dir_a.path(), k.clone());
        use_clickhouse(&mut sa, &clickhouse_url(), &db);
        let mut sb = server_settings(dir_b.path(), k.clone());
        use_clickhouse(&mut sb, &clickhouse_url(), &db);
        let a = start(sa).await;
        let b = start(sb).await;
        let all = events(300, 9);
        let (first, second) = all.split_at(all.len() / 2);
        produce(&k, &topic, first, None);
        let first_ids = distinct_ids(first).len() as u64;
        eventually(
            &format!("{name}: first half"),
            Duration::from_secs(90),
            || async {
                let (_, u) = raw_counts(&db).await;
                (u >= first_ids).then_some(())
            },
        )
        .await;
        a.stop().await; // leaves the group: b gets every partition
        produce(&k, &topic, second, None);
        let expected = distinct_ids(&all).len() as u64;
        eventually(
            &format!("{name}: second half via the survivor"),
            Duration::from_secs(120),
            || async {
                let (_, u) = raw_counts(&db).await;
                (u >= expected).then_some(())
            },
        )
        .await;
        let (rows, unique_ids) = raw_counts(&db).await;
        assert_eq!(unique_ids, expected, "{name}: no loss across the rebalance");
        assert_eq!(rows, expected, "{name}: no duplicates across the rebalance");
        let (_, metrics) = b.get("/metrics").await;
        assert!(
            metrics.contains("churn_kafka_rebalances_total"),
            "{metrics}"
        );
        b.stop().await;
        clickhouse_query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}

/// A broker that comes up after churn (a compose start-up race, a broker
/// restart): the server starts anyway, serves, and consumes once the broker
/// is there. Uses its own tansu on a free port, so the shared brokers stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starts_before_its_broker_and_consumes_once_it_is_up() {
    let tansu = std::env::var("CHURN_TEST_TANSU_BIN").expect(
        "CHURN_TEST_TANSU_BIN unset: run through scripts/test.sh (scripts/kafka.sh tansu-bin)",
    );
    assert!(
        std::path::Path::new(&tansu).exists(),
        "{tansu} missing: run scripts/kafka.sh"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique("late_broker");
    let k = kafka_settings(&brokers, &topic);
    let dir = tempfile::tempdir().unwrap();
    let app = start(server_settings(dir.path(), k.clone())).await;
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "serving with no broker");
    // Readiness names the missing broker (it said "ready" through a 20 s
    // outage before).
    let unreachable = |ready: &Value| {
        ready["stream_source_reachable"] == false
            && ready["problems"].as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p.as_str()
                        .is_some_and(|p| p.contains("no broker reachable") && p.contains(&brokers))
                })
            })
    };
    let seen = std::time::Instant::now();
    eventually(
        "readiness naming the absent broker",
        Duration::from_secs(20),
        || async {
            let (status, body) = app.get("/readyz").await;
            let ready: Value = serde_json::from_str(&body).unwrap();
            (status == 503 && unreachable(&ready)).then_some(())
        },
    )
    .await;
    eprintln!("no broker: /readyz named it after {:?}", seen.elapsed());

    let url = format!("tcp://{brokers}");
    let broker = KillOnDrop(
        std::process::Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu"),
    );
    eventually(
        "the late broker listening",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(&brokers)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    create_topics(&brokers, &[&topic, &k.dlq_topic], 1).await;
    let events = events(20, 3);
    let expected = distinct_ids(&events).len() as u64;
    produce(&k, &topic, &events, None);
    let stored = eventually(
        "events from the late broker",
        Duration::from_secs(120),
        || async {
            let n = app.stored().await;
            (n >= expected).then_some(n)
        },
    )
    .await;
    assert_eq!(stored, expected);
    let (_, body) = app.get("/readyz").await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["stream_source_reachable"], true, "{ready}");
    // The broker goes away again: readiness says so within seconds.
    drop(broker);
    let gone = std::time::Instant::now();
    eventually(
        "readiness naming the lost broker",
        Duration::from_secs(30),
        || async {
            let (status, body) = app.get("/readyz").await;
            let ready: Value = serde_json::from_str(&body).unwrap();
            (status == 503 && unreachable(&ready)).then_some(())
        },
    )
    .await;
    eprintln!("broker killed: /readyz named it after {:?}", gone.elapsed());
    app.stop().await;
}

/// Three identical messages are three events; the same offsets read again
/// (a new consumer group from the earliest offset: what a lost commit or a
/// rebalance redelivers) store nothing new. On both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_messages_are_kept_and_reread_offsets_are_redeliveries() {
    let (name, brokers) = brokers().into_iter().next().expect("a broker");
    for store in ["sqlite", "clickhouse"] {
        let topic = unique(&format!("same_{name}_{store}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 1).await;
        let line: &[u8] = br#"{"user_id":"u-5f2c","event_time":"2026-01-01 00:00:00","event_type":"purchase","amount":-3.5}"#;
        produce_raw(&k, &topic, &[line, line, line]);
        let dir = tempfile::tempdir().unwrap();
        let mut settings = server_settings(dir.path(), k.clone());
        if store == "clickhouse" {
            use_clickhouse(&mut settings, &clickhouse_url(), &unique("churn_same"));
        }
        let app = start(settings.clone()).await;
        let stored = eventually(
            &format!("{store}: three events stored"),
            Duration::from_secs(60),
            || async {
                let n = app.stored().await;
                (n >= 3).then_some(n)
            },
        )
        .await;
        assert_eq!(stored, 3, "{store}");
        app.stop().await;
        // Another group reads the same offsets again.
        settings.kafka.group_id = format!("{}_again", settings.kafka.group_id);
        let again = start(settings).await;
        let before = duplicates(&again).await;
        eventually(
            &format!("{store}: the re-read offsets counted as duplicates"),
            Duration::from_secs(60),
            || async { (duplicates(&again).await >= before + 3.0).then_some(()) },
        )
        .await;
        assert_eq!(again.stored().await, 3, "{store}: nothing new stored");
        again.stop().await;
    }
}

async fn duplicates(app: &Running) -> f64 {
    let (_, m) = app.get("/metrics").await;
    metric(&m, "churn_events_duplicate_total").unwrap_or(0.0)
}

/// The user's `name` feature value and churn probability from `base`.
async fn live_answer(base: &str, user: u64, name: &str) -> Option<(f64, f64, i64)> {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/predict?user_id={user}&explain=true&top_k=100"
        ))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let body: Value = r.json().await.ok()?;
    let value = body["explanation"]["contributions"]
        .as_array()?
        .iter()
        .find(|c| c["feature"] == name)?["value"]
        .as_f64()?;
    let as_of = chrono::DateTime::parse_from_rfc3339(body["features_as_of"].as_str()?)
        .ok()?
        .timestamp();
    Some((value, body["churn_probability"].as_f64()?, as_of))
}

/// Live features with two replicas sharing a topic and a ClickHouse
/// store: events produced to Kafka change the answer of *both* replicas
/// for every user, whichever replica's consumer stored them (each replica
/// watches the whole topic and settles on the group's commits), and each
/// answer equals a batch evaluation as of its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_kafka_reach_every_replica_live() {
    use churn::domain::features::FeatureSpec;
    use churn::domain::snapshot::quantize;
    for (name, brokers) in brokers() {
        let topic = unique(&format!("live_{name}"));
        let k = kafka_settings(&brokers, &topic);
        create_topics(&brokers, &[&topic, &k.dlq_topic], 4).await;
        let db = unique(&format!("live_{name}"));
        let registry = tempfile::tempdir().unwrap();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shared = |dir: &std::path::Path| {
            let mut s = server_settings(dir, k.clone());
            use_clickhouse(&mut s, &clickhouse_url(), &db);
            s.registry.url = registry.path().display().to_string();
            s
        };
        let services = Services::build(shared(dir_a.path())).await.unwrap();
        let mut delivery = churn::application::ingest::Delivery::new(
            churn::application::ingest::SourceKind::Generator,
        );
        services
            .ingest
            .process_events(events(300, 21), &mut delivery)
            .await
            .unwrap();
        services
            .build_features
            .run(churn::application::build_features::AsOf::Now)
            .await
            .unwrap();
        train_and_promote(&services).await;
        let a = start_with(services).await;
        let b = start(shared(dir_b.path())).await;
        let now = chrono::Utc::now().timestamp();
        let policy = churn::domain::event::TimePolicy::at(now + 3_600, 3_600);
        // Both consumers and both watches running: a first event reaches
        // the store and both replicas answer for its new user.
        let first =
            churn::domain::event::Event::new(900_001u64, now - 10, "login", None, None, policy)
                .unwrap();
        produce(&k, &topic, &[first], None);
        eventually(
            &format!("{name}: warm-up"),
            Duration::from_secs(90),
            || async {
                let ok_a = live_answer(&a.base, 900_001, "total_events")
                    .await
                    .is_some();
                let ok_b = live_answer(&b.base, 900_001, "total_events")
                    .await
                    .is_some();
                (ok_a && ok_b).then_some(())
            },
        )
        .await;
        // Cached rows on both replicas for users spread over partitions.
        let users: Vec<u64> = (1..=12).collect();
        let mut before = Vec::new();
        for base in [&a.base, &b.base] {
            for &u in &users {
                let (count, _, _) = live_answer(base, u, "purchase_count_7d")
                    .await
                    .unwrap_or_else(|| panic!("{name}: user {u} answered"));
                before.push((base.clone(), u, count));
            }
        }
        let burst: Vec<churn::domain::event::Event> = users
            .iter()
            .flat_map(|&u| {
                (0..5).map(move |i| {
                    churn::domain::event::Event::new(
                        u,
                        now - 60 + i,
                        "purchase",
                        Some("live"),
                        Some(10.0 + i as f64),
                        policy,
                    )
                    .unwrap()
                })
            })
            .collect();
        produce(&k, &topic, &burst, None);
        let spec = FeatureSpec::standard();
        let model = a.services.models.load_production().await.unwrap().unwrap();
        eventually(
            &format!("{name}: both replicas see every user's purchases"),
            Duration::from_secs(60),
            || async {
                for (base, u, count) in &before {
                    let (now_count, _, _) = live_answer(base, *u, "purchase_count_7d").await?;
                    if now_count < count + 5.0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        // And each answer is the batch answer as of its time.
        for base in [&a.base, &b.base] {
            for &u in &users {
                let (_, p, as_of) = live_answer(base, u, "purchase_count_7d").await.unwrap();
                let events = a
                    .services
                    .features
                    .user_events(&spec, u, usize::MAX)
                    .await
                    .unwrap()
                    .unwrap();
                let mut out = Vec::new();
                assert!(spec.evaluate(&events, as_of, &mut out));
                let values: Vec<f64> = out.into_iter().map(quantize).collect();
                let batch = model.classifier.predict_proba(&values).unwrap()[0];
                let served = model.metadata.served_probability(batch);
                assert_eq!(p, served, "{name}: user {u} on {base}");
            }
        }
        let (_, metrics) = b.get("/metrics").await;
        assert!(metrics.contains("churn_live_lookups_total"), "{metrics}");
        a.stop().await;
        b.stop().await;
        clickhouse_query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}
