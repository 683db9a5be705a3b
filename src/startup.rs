//! Wiring: the only place that names concrete adapters. [`Services`] builds
//! the ports from [`Settings`] and hands out ready use cases;
//! [`Application`] binds the HTTP server, loads the serving state and runs
//! the background tasks until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::application::build_features::{AsOf, BuildFeatures};
use crate::application::ingest::IngestEvents;
use crate::application::jobs::Jobs;
use crate::application::models::ManageModels;
use crate::application::ports::{
    EventSource, EventStore, FeatureStore, ModelRegistry, ModelTrainer, PredictionSink,
};
use crate::application::predict::PredictChurn;
use crate::application::profile::ProfileData;
use crate::application::registry_poll::follow_production;
use crate::application::score::ScoreUsers;
use crate::application::serving_state::{ReloadOutcome, ServingState};
use crate::application::stream_ingest::{IngestHealth, StreamIngest, StreamOptions};
use crate::application::supervisor::{RestartPolicy, TaskFailed, TaskHealth, supervise};
use crate::application::train::{TrainModel, TrainingOptions};
use crate::config::{KafkaSettings, Settings, StoreKind};
use crate::domain::drift::DriftThresholds;
use crate::domain::event_format::EventFormat;
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::sampling::RowSample;
use crate::domain::training::PromotionPolicy;
use crate::http::server::{ServerOptions, serve};
use crate::http::{AppContext, Limits};
/// The input formats of `churn ingest` (re-exported for the CLI).
pub use crate::infrastructure::file_source::FileFormat;
use crate::infrastructure::file_source::{CsvSource, NdjsonSource, RejectsFile};
use crate::infrastructure::kafka::KafkaOptions;
use crate::infrastructure::kafka::consumer::KafkaStream;
use crate::infrastructure::kafka::dead_letters::KafkaDeadLetters;
use crate::infrastructure::kafka::producer::EventProducer;
use crate::infrastructure::mlflow::{MlflowExporter, MlflowOptions};
use crate::infrastructure::models::CrateTrainer;
use crate::infrastructure::registry::{ObjectStoreRegistry, S3Options};
use crate::infrastructure::scheduler::{run_schedule, validate_cron};
use crate::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use crate::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};

/// Every port and use case, built once from the settings.
#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub spec: Arc<FeatureSpec>,
    pub events: Arc<dyn EventStore>,
    pub features: Arc<dyn FeatureStore>,
    pub registry: Arc<dyn ModelRegistry>,
    pub trainer: Arc<dyn ModelTrainer>,
    pub ingest: IngestEvents,
    pub build_features: BuildFeatures,
    pub train: TrainModel,
    pub models: ManageModels,
    pub profile: ProfileData,
    pub score: ScoreUsers,
}

impl Services {
    /// Validates the settings and opens the store and registry.
    ///
    /// # Errors
    /// Invalid settings, or a backend that cannot be opened (the message
    /// names the path or URL).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, false).await
    }

    /// As [`Services::build`], with `force_promote` for demos.
    ///
    /// # Errors
    /// As [`Services::build`].
    pub async fn build_with(settings: Settings, force_promote: bool) -> anyhow::Result<Self> {
        settings.validate()?;
        // Metrics are process-wide: install the recorder before any use case
        // records, so nothing recorded before the server starts is lost.
        crate::telemetry::recorder::install();
        let spec = Arc::new(load_spec(&settings)?);
        let mut predictions: Option<Arc<dyn PredictionSink>> = None;
        let (events, features): (Arc<dyn EventStore>, Arc<dyn FeatureStore>) =
            match settings.store.kind {
                StoreKind::Sqlite => {
                    let store = SqliteStore::open(SqliteOptions {
                        path: settings.sqlite_path(),
                        synchronous_full: settings.store.sqlite_synchronous == "full",
                        snapshot_retention: settings.store.snapshot_retention,
                    })
                    .with_context(|| {
                        format!(
                            "opening the embedded store (store.sqlite_path = {})",
                            settings.sqlite_path().display()
                        )
                    })?;
                    (Arc::new(store.clone()), Arc::new(store))
                }
                StoreKind::Clickhouse => {
                    let store = open_clickhouse(&settings).await?;
                    predictions = Some(Arc::new(store.clone()));
                    (Arc::new(store.clone()), Arc::new(store))
                }
            };
        let registry: Arc<dyn ModelRegistry> = Arc::new(open_registry(&settings)?);
        let trainer: Arc<dyn ModelTrainer> = Arc::new(CrateTrainer {
            gbdt: settings.training.gbdt,
        });
        let ingest = IngestEvents::new(
            events.clone(),
            settings.ingest.max_future_skew_secs,
            settings.ingest.batch_size,
        )
        .with_min_time(
            settings
                .min_event_time()
                .context("ingest.min_event_time is not a time")?,
        )
        .with_format(settings.ingest.event_format()?);
        let build_features = BuildFeatures::new(features.clone(), events.clone(), spec.clone());
        let options = TrainingOptions {
            model_name: settings.registry.model_name.clone(),
            policy: label_policy(&settings),
            validation_cutoff: settings.validation_cutoff(),
            train_snapshots: settings.training.train_snapshots,
            snapshot_step_days: settings.training.snapshot_step_days,
            max_training_rows: settings.training.max_training_rows,
            promotion: PromotionPolicy {
                tolerance: settings.training.promotion_tolerance,
                force: force_promote,
            },
            selection: settings.training.model_selection,
            calibration: settings.training.calibration,
            reference_as_of: rebuild_as_of(&settings),
        };
        let mut models = ManageModels::new(registry.clone(), trainer.clone());
        if !settings.mlflow.tracking_uri.is_empty() {
            let m = &settings.mlflow;
            let exporter = MlflowExporter::new(MlflowOptions {
                tracking_uri: m.tracking_uri.clone(),
                experiment: m.experiment.clone(),
                registered_model: m.registered_model.clone(),
                timeout: Duration::from_secs(m.timeout_secs.max(1)),
                attempts: m.attempts.max(1),
                retry_delay: Duration::from_millis(500),
            })
            .context("MLflow exporter (mlflow.*)")?;
            models = models.with_exporter(Arc::new(exporter));
        }
        let profile = ProfileData::new(
            events.clone(),
            features.clone(),
            spec.clone(),
            label_policy(&settings),
        );
        let train = TrainModel::new(
            events.clone(),
            features.clone(),
            models.clone(),
            trainer.clone(),
            spec.clone(),
            options,
        );
        let score = ScoreUsers::new(
            features.clone(),
            events.clone(),
            models.clone(),
            spec.clone(),
            label_policy(&settings),
            predictions,
        );
        Ok(Self {
            settings: Arc::new(settings),
            spec,
            events,
            features,
            registry,
            trainer,
            ingest,
            build_features,
            train,
            models,
            profile,
            score,
        })
    }
}

/// When the server's feature rebuilds (and so the drift reference) are
/// computed as of: `schedule.features_as_of`.
fn rebuild_as_of(settings: &Settings) -> AsOf {
    if settings.schedule.features_as_of == "end" {
        AsOf::EndOfData
    } else {
        AsOf::Now
    }
}

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
    use crate::infrastructure::store::{clickhouse, clickhouse_sql};
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
        .collect();
    Ok(serde_json::json!({
        "database": db,
        "feature_names": spec.names(),
        "migrations": migrations,
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

/// The HTTP server with its background tasks, bound and warmed up.
pub struct Application {
    listener: tokio::net::TcpListener,
    services: Services,
    state: ServingState,
    jobs: Jobs,
    app: crate::http::Api,
    consumer: Option<KafkaConsumer>,
    tasks: TaskHealth,
    restart: RestartPolicy,
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

type KafkaClients = (KafkaStream, KafkaDeadLetters);

/// The Kafka ingestion task of `churn serve`. Its clients are created when
/// the server is built, so a bad Kafka configuration fails start-up; a
/// restart after an unexpected end creates new ones.
#[derive(Clone)]
pub struct KafkaConsumer {
    ingest: StreamIngest,
    options: Arc<KafkaOptions>,
    first: Arc<std::sync::Mutex<Option<KafkaClients>>>,
}

fn kafka_clients(options: &KafkaOptions) -> anyhow::Result<KafkaClients> {
    let stream = KafkaStream::subscribe(options).context("kafka consumer (kafka.*)")?;
    let dead_letters = KafkaDeadLetters::new(options).context("kafka dead-letter producer")?;
    Ok((stream, dead_letters))
}

impl KafkaConsumer {
    /// # Errors
    /// Invalid Kafka client configuration.
    pub fn new(services: &Services, health: IngestHealth) -> anyhow::Result<Self> {
        let k = &services.settings.kafka;
        let options = kafka_options(k);
        let first = kafka_clients(&options)?;
        let stream_options = StreamOptions {
            batch_max_events: k.batch_max_events,
            batch_max_wait: Duration::from_millis(k.batch_max_wait_ms),
            retry_initial: Duration::from_millis(k.retry_initial_ms),
            retry_max: Duration::from_millis(k.retry_max_ms),
        };
        Ok(Self {
            ingest: StreamIngest::new(services.ingest.clone(), stream_options, health),
            options: Arc::new(options),
            first: Arc::new(std::sync::Mutex::new(Some(first))),
        })
    }

    /// Consumes until `shutdown` (one supervised run).
    ///
    /// # Errors
    /// The Kafka clients cannot be created again after a restart.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (stream, mut dead_letters) = match first {
            Some(c) => c,
            None => kafka_clients(&self.options).map_err(|e| format!("{e:#}"))?,
        };
        let report = self
            .ingest
            .run(Box::new(stream), &mut dead_letters, shutdown)
            .await;
        tracing::info!(?report, "kafka consumer closed");
        Ok(())
    }
}

impl Application {
    /// Binds `server.host:server.port` (port 0 = any free port) and builds.
    ///
    /// # Errors
    /// The address cannot be bound (the message names the setting), or as
    /// [`Application::build_with_listener`].
    pub async fn build(services: Services) -> anyhow::Result<Self> {
        let addr = format!(
            "{}:{}",
            services.settings.server.host, services.settings.server.port
        );
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| {
                format!("cannot listen on {addr} (server.host / server.port, or --port)")
            })?;
        Self::build_with_listener(services, listener).await
    }

    /// Builds on an already-bound listener (tests bind 127.0.0.1:0), checks
    /// the schedule, and loads the production model and newest snapshot.
    /// A missing model or snapshot is not fatal: `/readyz` says so and
    /// `/predict` answers 503 until one exists.
    ///
    /// # Errors
    /// Invalid cron expressions.
    pub async fn build_with_listener(
        services: Services,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Self> {
        // Installed by Services::build already; this returns the handle.
        let prometheus = crate::telemetry::recorder::install();
        let s = &services.settings;
        validate_cron("schedule.features_cron", &s.schedule.features_cron)?;
        validate_cron("schedule.retrain_cron", &s.schedule.retrain_cron)?;
        // A registry problem (missing bucket, wrong credentials, endpoint
        // down) is reported now, by name; the server still starts, serves
        // what it can, and /readyz says what is wrong until it recovers.
        if let Err(e) = services.registry.ping().await {
            tracing::error!(error = %e, "model registry unreachable: check registry.url and registry.s3_* / AWS_*");
        }
        let m = &s.monitoring;
        let state =
            ServingState::new(services.spec.clone()).with_drift_thresholds(DriftThresholds {
                feature_psi: m.feature_psi_alert,
                prediction_psi: m.prediction_psi_alert,
                new_user_share: m.new_user_share_alert,
            });
        match state.reload_features(&*services.features).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "no feature snapshot yet: POST /admin/features/rebuild or wait for the schedule"
            ),
            Err(e) => tracing::warn!(error = %e, "feature snapshot not loaded"),
        }
        match state.reload_model(&services.models).await {
            Ok(ReloadOutcome::NoProductionModel) => {
                tracing::warn!("no production model yet: POST /admin/retrain or `churn train`")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "production model not loaded"),
        }
        let jobs = Jobs::new(
            services.build_features.clone(),
            services.train.clone(),
            services.models.clone(),
            services.features.clone(),
            state.clone(),
        )
        .with_features_as_of(rebuild_as_of(s));
        let stream_health = IngestHealth::default();
        let tasks = TaskHealth::default();
        let consumer = if s.kafka.enabled() {
            Some(KafkaConsumer::new(&services, stream_health.clone())?)
        } else {
            None
        };
        let token = s.server.admin_token.expose_secret();
        let admin_token = (!token.is_empty()).then(|| SecretString::from(token.to_string()));
        if admin_token.is_none() && !s.server.allow_unauthenticated_admin {
            tracing::warn!("admin API disabled: set CHURN_SERVER__ADMIN_TOKEN to enable /admin/*");
        }
        let app_state = Arc::new(AppContext {
            predict: PredictChurn::new(state.clone()).with_names(services.events.clone()),
            ingest: services.ingest.clone(),
            jobs: jobs.clone(),
            models: services.models.clone(),
            events: services.events.clone(),
            limits: Limits {
                max_batch_users: s.server.max_batch_users,
                max_body_bytes: s.server.max_body_bytes,
            },
            admin_token,
            admin_open: s.server.allow_unauthenticated_admin,
            prometheus,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                s.server.max_concurrent_requests,
            )),
            body_budget: crate::http::intake::BodyBudget::new(
                s.server.max_inflight_body_bytes,
                s.server.max_body_bytes,
                Duration::from_secs(s.server.body_read_timeout_secs),
            ),
            stream_health: stream_health.clone(),
            tasks: tasks.clone(),
        });
        let app = crate::http::Api::new(app_state);
        Ok(Self {
            listener,
            services,
            state,
            jobs,
            app,
            consumer,
            tasks,
            restart: RestartPolicy::default(),
        })
    }

    /// How supervised tasks are restarted (tests shorten the backoff).
    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn serving_state(&self) -> &ServingState {
        &self.state
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight requests and the supervised tasks finish (each wait bounded
    /// by `server.shutdown_grace_secs`) and returns.
    ///
    /// # Errors
    /// The server fails, or a supervised task (consumer, registry poll,
    /// scheduler) kept ending unexpectedly: the caller exits non-zero.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.services.settings.clone();
        // A failed task stops everything; the caller's token stays untouched.
        let stop = shutdown.child_token();
        let mut supervisors = tokio::task::JoinSet::new();
        // Not supervised: it cannot fail, and ends with `stop`.
        tokio::spawn(crate::telemetry::recorder::upkeep(stop.clone()));
        if s.schedule.enabled {
            let (jobs, features, retrain) = (
                self.jobs.clone(),
                s.schedule.features_cron.clone(),
                s.schedule.retrain_cron.clone(),
            );
            let token = stop.clone();
            supervisors.spawn(supervise(
                "scheduler",
                self.tasks.clone(),
                self.restart,
                stop.clone(),
                move || {
                    let (jobs, f, r, token) = (
                        jobs.clone(),
                        features.clone(),
                        retrain.clone(),
                        token.clone(),
                    );
                    async move {
                        run_schedule(jobs, &f, &r, token)
                            .await
                            .map_err(|e| e.to_string())
                    }
                },
            ));
        }
        if s.server.registry_poll_secs > 0 {
            let (state, models) = (self.state.clone(), self.services.models.clone());
            let interval = Duration::from_secs(s.server.registry_poll_secs);
            let token = stop.clone();
            supervisors.spawn(supervise(
                "registry_poll",
                self.tasks.clone(),
                self.restart,
                stop.clone(),
                move || {
                    let poll =
                        follow_production(state.clone(), models.clone(), interval, token.clone());
                    async move {
                        poll.await;
                        Ok(())
                    }
                },
            ));
        }
        if let Some(consumer) = self.consumer {
            let token = stop.clone();
            supervisors.spawn(supervise(
                "kafka_consumer",
                self.tasks.clone(),
                self.restart,
                stop.clone(),
                move || consumer.clone().run(token.clone()),
            ));
        }
        let grace = Duration::from_secs(s.server.shutdown_grace_secs);
        let server_stop = stop.clone();
        let options = ServerOptions {
            header_read_timeout: Duration::from_secs(s.server.header_read_timeout_secs),
            max_connections: s.server.max_connections,
        };
        let server = tokio::spawn(serve(self.listener, self.app, options, server_stop));

        let mut failure: Option<TaskFailed> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(ended) = supervisors.join_next() => {
                    if let Ok(Err(failed)) = ended {
                        tracing::error!(error = %failed, "stopping the server");
                        failure = Some(failed);
                        stop.cancel();
                        break;
                    }
                }
            }
        }
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined.context("server task failed")?,
            Err(_) => tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            ),
        }
        // The consumer stops at its next await point; closing commits the
        // offsets of stored batches and leaves the group.
        let drained = tokio::time::timeout(grace, async {
            while supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "background tasks did not stop within the grace period"
            );
            supervisors.abort_all();
        }
        tracing::info!("server stopped");
        match failure {
            Some(f) => Err(f.into()),
            None => Ok(()),
        }
    }
}
