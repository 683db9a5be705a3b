//! Settings → adapters: the one place each `[section]` of the settings
//! becomes a concrete store, registry, Kafka client, file source or spec.
//! Commands ask for what they use and nothing more.

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::application::ports::EventSource;
use crate::application::runtime::ConnectStream;
use crate::config::{KafkaSettings, Settings};
use crate::domain::event_format::EventFormat;
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::sampling::RowSample;
/// The input formats of `churn ingest` (re-exported for the CLI).
pub use crate::infrastructure::file_source::FileFormat;
use crate::infrastructure::file_source::{CsvSource, NdjsonSource, RejectsFile};
use crate::infrastructure::kafka::KafkaOptions;
use crate::infrastructure::kafka::consumer::KafkaStream;
use crate::infrastructure::kafka::dead_letters::KafkaDeadLetters;
use crate::infrastructure::kafka::producer::EventProducer;
use crate::infrastructure::registry::{ObjectStoreRegistry, S3Options};
use crate::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};

/// The model registry of the settings: a local directory, or S3/MinIO for
/// `s3://bucket/prefix`, with unset S3 keys taken from the standard `AWS_*`
/// variables (and the seed's `MLFLOW_S3_ENDPOINT_URL` for the endpoint).
///
/// # Errors
/// A local directory that cannot be created, or an invalid S3 configuration.
pub fn open_registry(settings: &Settings) -> anyhow::Result<ObjectStoreRegistry> {
    let r = &settings.registry;
    let Some(rest) = r.url.strip_prefix("s3://") else {
        let dir = settings.registry_dir();
        return ObjectStoreRegistry::local(&dir, &r.model_name).with_context(|| {
            format!(
                "opening the model registry (registry.url = {})",
                dir.display()
            )
        });
    };
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let setting = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let options = S3Options {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint: setting(&r.s3_endpoint)
            .or_else(|| env(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL"])),
        region: setting(&r.s3_region)
            .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".into()),
        access_key_id: setting(&r.s3_access_key_id).or_else(|| env(&["AWS_ACCESS_KEY_ID"])),
        secret_access_key: setting(r.s3_secret_access_key.expose_secret())
            .or_else(|| env(&["AWS_SECRET_ACCESS_KEY"])),
        allow_http: r.s3_allow_http,
        virtual_hosted_style: r.s3_virtual_hosted_style,
        timeout: Duration::from_secs(r.s3_timeout_secs.max(1)),
    };
    ObjectStoreRegistry::s3(&options, &r.model_name)
        .with_context(|| format!("opening the model registry (registry.url = {})", r.url))
}

/// The file (or stdin for `-`) of `churn ingest`: NDJSON, or CSV/TSV whose
/// header is checked against the field mapping before anything is read.
///
/// # Errors
/// The file cannot be opened, or a CSV header lacks a required field's
/// column (the message names the setting and lists the columns).
pub async fn event_source(
    settings: &Settings,
    path: &std::path::Path,
    format: FileFormat,
) -> anyhow::Result<Box<dyn EventSource>> {
    let delimiter = match format {
        FileFormat::Ndjson => return Ok(Box::new(NdjsonSource::open(path).await?)),
        FileFormat::Tsv => b'\t',
        FileFormat::Csv => settings.ingest.csv_delimiter()?,
    };
    let source = CsvSource::open(path, delimiter)?;
    let event_format = settings.ingest.event_format()?;
    check_csv_header(&event_format, source.header())
        .with_context(|| format!("{}: the CSV header does not fit [ingest]", path.display()))?;
    Ok(Box::new(source))
}

/// Every required field has a column (any of its alternatives, or the
/// first part of a dotted path).
fn check_csv_header(format: &EventFormat, header: &[String]) -> anyhow::Result<()> {
    let has = |key: &str| {
        header.iter().any(|h| h == key)
            || key
                .split_once('.')
                .is_some_and(|(head, _)| header.iter().any(|h| h == head))
    };
    for (field, keys) in format.fields.keys() {
        let required = match field {
            "user_id" | "event_time" => true,
            "event_type" => format.default_event_type.is_none(),
            _ => false,
        };
        if required && !keys.iter().any(|k| has(k)) {
            anyhow::bail!(
                "no column for {field}: looked for {} (set ingest.fields.{field}{}); the columns are: {}",
                format.fields.describe(field),
                if field == "event_type" {
                    ", or ingest.default_event_type for a log of one kind of event"
                } else {
                    ""
                },
                header.join(", ")
            );
        }
    }
    Ok(())
}

/// The rejects file of `churn ingest` (dead letters of a file source).
pub fn rejects_file(settings: &Settings, path: std::path::PathBuf) -> RejectsFile {
    RejectsFile::new(path, settings.ingest.rejects_sample_per_reason)
}

/// The Kafka producer of `churn generate-events --to kafka`.
///
/// # Errors
/// Kafka not configured, or an invalid producer configuration.
pub fn event_producer(
    settings: &Settings,
    topic: &str,
    rate: Option<f64>,
) -> anyhow::Result<EventProducer> {
    if !settings.kafka.enabled() {
        anyhow::bail!("--to kafka needs kafka.brokers (CHURN_KAFKA__BROKERS=host:9092)");
    }
    Ok(EventProducer::new(
        &kafka_options(&settings.kafka),
        topic,
        rate,
    )?)
}

/// What `churn render-sql` prints: the migrations, snapshot build and
/// training-set SQL the ClickHouse adapter would run for database `db`.
///
/// # Errors
/// Unsafe identifiers.
pub fn render_clickhouse_sql(
    settings: &Settings,
    db: &str,
    as_of: i64,
    cutoff: i64,
) -> anyhow::Result<serde_json::Value> {
    use crate::infrastructure::store::clickhouse::{self, sql as clickhouse_sql};
    let spec = load_spec(settings)?;
    let dedup = if settings.clickhouse.dedup_check {
        clickhouse_sql::Dedup::OnWrite
    } else {
        clickhouse_sql::Dedup::OnRead
    };
    let migrations: Vec<_> = clickhouse::MIGRATIONS
        .iter()
        .map(|(v, name, sql)| {
            serde_json::json!({
                "version": v,
                "name": name,
                "sql": clickhouse::migration_ddl(sql, db),
            })
        })
        .collect::<Vec<_>>();
    // Cluster mode's DDL (for `clickhouse.cluster`, or a cluster named
    // churn_cluster), so a modern engine can parse what 18.16 runs.
    let cluster = match settings.clickhouse.cluster.as_str() {
        "" => "churn_cluster",
        c => c,
    };
    let mut cluster_migrations = Vec::new();
    for (_, name, sql) in clickhouse::MIGRATIONS {
        let statements =
            clickhouse::cluster::cluster_ddl(&clickhouse::migration_ddl(sql, db), db, cluster)?;
        cluster_migrations.push(serde_json::json!({"name": name, "statements": statements}));
    }
    Ok(serde_json::json!({
        "database": db,
        "feature_names": spec.names(),
        "migrations": migrations,
        "cluster_migrations": cluster_migrations,
        "build_snapshot": clickhouse_sql::build_snapshot(&spec, db, dedup, as_of)?,
        "training_set": clickhouse_sql::training_set(&spec, db, dedup, &label_policy(settings), cutoff, RowSample::ALL)?,
    }))
}

/// The label rule of `[training]`.
pub fn label_policy(settings: &Settings) -> LabelPolicy {
    let t = &settings.training;
    let lower = |v: &[String]| {
        v.iter()
            .map(|x| crate::domain::event::canonical_type(x))
            .collect()
    };
    LabelPolicy {
        horizon_days: t.horizon_days,
        lookback_days: t.lookback_days,
        activity_event_types: lower(&t.activity_event_types),
        churn_event_types: lower(&t.churn_event_types),
        min_events: t.min_events,
    }
}

/// The feature spec of the settings: `features.spec_file`, or the built-in
/// standard spec; its type table also holds the label rule's types.
///
/// # Errors
/// An unreadable file or an invalid spec (the message names the file, the
/// feature and the key).
pub fn load_spec(settings: &Settings) -> anyhow::Result<FeatureSpec> {
    let spec = match settings.spec_file() {
        None => FeatureSpec::standard(),
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading the feature spec {} (features.spec_file)",
                    path.display()
                )
            })?;
            FeatureSpec::from_toml(&text, &path.display().to_string())?
        }
    };
    spec.with_types(&label_policy(settings).event_types())
        .map_err(|e| anyhow::anyhow!("training.*_event_types: {e}"))
}

/// The ClickHouse store of the settings, migrated if configured to be.
///
/// # Errors
/// Unreachable server or failed migration, naming the settings to check.
pub async fn open_clickhouse(settings: &Settings) -> anyhow::Result<ClickHouseStore> {
    let c = &settings.clickhouse;
    let store = ClickHouseStore::new(&ClickHouseOptions {
        url: c.url.clone(),
        database: c.database.clone(),
        user: c.user.clone(),
        password: c.password.expose_secret().to_string(),
        validation: c.validation,
        snapshot_retention: settings.store.snapshot_retention,
        dedup_check: c.dedup_check,
        cluster: c.cluster.clone(),
        shard_urls: c
            .shard_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect(),
    })?;
    if c.migrate_on_start {
        store.migrate().await.with_context(|| {
            format!(
                "migrating ClickHouse at {} (clickhouse.url, clickhouse.database)",
                c.url
            )
        })?;
    }
    Ok(store)
}

/// The adapters' view of `[kafka]`.
pub fn kafka_options(k: &KafkaSettings) -> KafkaOptions {
    KafkaOptions {
        brokers: k.brokers.clone(),
        client_id: k.client_id.clone(),
        security_protocol: k.security_protocol.clone(),
        sasl_mechanism: k.sasl_mechanism.clone(),
        sasl_username: k.sasl_username.clone(),
        sasl_password: k.sasl_password.clone(),
        group_id: k.group_id.clone(),
        topics: k.topics.clone(),
        dlq_topic: k.dlq_topic.clone(),
        auto_offset_reset: k.auto_offset_reset.clone(),
        commit_interval_ms: k.commit_interval_ms,
        session_timeout_ms: k.session_timeout_ms,
        max_poll_interval_ms: k.max_poll_interval_ms,
        queued_max_kbytes: k.queued_max_kbytes,
        statistics_interval_ms: k.statistics_interval_ms,
        group_instance_id: k.group_instance_id.clone(),
        compression: k.compression.clone(),
    }
}

/// Connects the Kafka consumer and its dead-letter producer of `[kafka]`
/// (again on each call: a restarted consumer task connects anew).
pub fn kafka_connector(k: &KafkaSettings) -> ConnectStream {
    let options = kafka_options(k);
    std::sync::Arc::new(move || {
        let stream = KafkaStream::subscribe(&options)
            .map_err(|e| format!("kafka consumer (kafka.*): {e}"))?;
        let dead_letters = KafkaDeadLetters::new(&options)
            .map_err(|e| format!("kafka dead-letter producer (kafka.*): {e}"))?;
        Ok((
            Box::new(stream) as Box<dyn crate::application::ports::EventStream>,
            Box::new(dead_letters) as Box<dyn crate::application::ports::DeadLetterSink>,
        ))
    })
}

/// This replica's own read of the ingest topics, for live features
/// (`features.live_watch_log`): a new client per (re)start.
pub fn kafka_log_watch(
    k: &KafkaSettings,
) -> std::sync::Arc<
    dyn Fn() -> Result<Box<dyn crate::application::ports::LogWatch>, String> + Send + Sync,
> {
    let options = kafka_options(k);
    std::sync::Arc::new(move || {
        let watch = crate::infrastructure::kafka::live_watch::KafkaLogWatch::new(&options)
            .map_err(|e| format!("kafka live watch (kafka.*): {e}"))?;
        Ok(Box::new(watch) as Box<dyn crate::application::ports::LogWatch>)
    })
}
