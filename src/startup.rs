//! Wiring: the only place that names concrete adapters. [`Services`] builds
//! the ports from [`Settings`] and hands out ready use cases;
//! [`Application`] binds the HTTP server, loads the serving state and runs
//! the background tasks until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::application::build_features::BuildFeatures;
use crate::application::ingest::{IngestEvents, IngestReport};
use crate::application::jobs::Jobs;
use crate::application::models::ManageModels;
use crate::application::ports::{
    DeadLetterSink, EventStore, EventStream, FeatureStore, ModelRegistry, ModelTrainer,
};
use crate::application::predict::PredictChurn;
use crate::application::serving_state::{ReloadOutcome, ServingState};
use crate::application::stream_ingest::{IngestHealth, StreamIngest, StreamOptions};
use crate::application::train::{TrainModel, TrainingOptions};
use crate::config::{Settings, StoreKind};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::http::{AppContext, Limits};
use crate::infrastructure::kafka::consumer::KafkaStream;
use crate::infrastructure::kafka::dead_letters::KafkaDeadLetters;
use crate::infrastructure::mlflow::{MlflowExporter, MlflowOptions};
use crate::infrastructure::models::CrateTrainer;
use crate::infrastructure::registry::{ObjectStoreRegistry, S3Options};
use crate::infrastructure::scheduler::{poll_registry, start_schedule, validate_cron};
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
        crate::http::metrics::prometheus();
        let spec = Arc::new(FeatureSpec::standard());
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
        );
        let build_features = BuildFeatures::new(features.clone(), spec.clone());
        let options = TrainingOptions {
            model_name: settings.registry.model_name.clone(),
            policy: LabelPolicy {
                horizon_days: settings.training.horizon_days,
                lookback_days: settings.training.lookback_days,
            },
            validation_cutoff: settings.validation_cutoff(),
            train_snapshots: settings.training.train_snapshots,
            snapshot_step_days: settings.training.snapshot_step_days,
            promotion_tolerance: settings.training.promotion_tolerance,
            force_promote,
            selection: settings.training.model_selection,
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
        let train = TrainModel::new(
            events.clone(),
            features.clone(),
            registry.clone(),
            trainer.clone(),
            spec.clone(),
            options,
        )
        .with_models(models.clone());
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
        })
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
    app: axum::Router,
    consumer: Option<KafkaConsumer>,
}

/// The Kafka ingestion task of `churn serve`, built before the server
/// starts so a bad Kafka configuration fails start-up.
pub struct KafkaConsumer {
    ingest: StreamIngest,
    stream: Box<dyn EventStream>,
    dead_letters: Box<dyn DeadLetterSink>,
}

impl KafkaConsumer {
    /// # Errors
    /// Invalid Kafka client configuration.
    pub fn new(services: &Services, health: IngestHealth) -> anyhow::Result<Self> {
        let k = &services.settings.kafka;
        let stream = KafkaStream::subscribe(k).context("kafka consumer (kafka.*)")?;
        let dead_letters = KafkaDeadLetters::new(k).context("kafka dead-letter producer")?;
        let options = StreamOptions {
            batch_max_events: k.batch_max_events,
            batch_max_wait: Duration::from_millis(k.batch_max_wait_ms),
            retry_initial: Duration::from_millis(k.retry_initial_ms),
            retry_max: Duration::from_millis(k.retry_max_ms),
        };
        Ok(Self {
            ingest: StreamIngest::new(services.ingest.clone(), options, health),
            stream: Box::new(stream),
            dead_letters: Box::new(dead_letters),
        })
    }

    /// Consumes until `shutdown`; returns the run's totals.
    pub async fn run(mut self, shutdown: CancellationToken) -> IngestReport {
        self.ingest
            .run(self.stream, &mut *self.dead_letters, shutdown)
            .await
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
        // Install the recorder before anything records (the first swap does).
        let prometheus = crate::http::metrics::prometheus();
        let s = &services.settings;
        validate_cron("schedule.features_cron", &s.schedule.features_cron)?;
        validate_cron("schedule.retrain_cron", &s.schedule.retrain_cron)?;
        // A registry problem (missing bucket, wrong credentials, endpoint
        // down) is reported now, by name; the server still starts, serves
        // what it can, and /readyz says what is wrong until it recovers.
        if let Err(e) = services.registry.ping().await {
            tracing::error!(error = %e, "model registry unreachable: check registry.url and registry.s3_* / AWS_*");
        }
        let state = ServingState::new(services.spec.clone());
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
        );
        let stream_health = IngestHealth::default();
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
            predict: PredictChurn::new(state.clone()),
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
            stream_health: stream_health.clone(),
        });
        let app = crate::http::router(app_state);
        Ok(Self {
            listener,
            services,
            state,
            jobs,
            app,
            consumer,
        })
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
    /// in-flight requests finish (up to `server.shutdown_grace_secs`) and
    /// returns.
    ///
    /// # Errors
    /// The scheduler cannot start or the server fails.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.services.settings.clone();
        if s.schedule.enabled {
            start_schedule(
                self.jobs.clone(),
                &s.schedule.features_cron,
                &s.schedule.retrain_cron,
                shutdown.clone(),
            )
            .await?;
        }
        if s.server.registry_poll_secs > 0 {
            tokio::spawn(poll_registry(
                self.state.clone(),
                self.services.models.clone(),
                Duration::from_secs(s.server.registry_poll_secs),
                shutdown.clone(),
            ));
        }
        let consumer = self.consumer.map(|c| tokio::spawn(c.run(shutdown.clone())));
        let grace = Duration::from_secs(s.server.shutdown_grace_secs);
        let stop = shutdown.clone();
        let server = axum::serve(self.listener, self.app).with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
        let server = tokio::spawn(async move { server.await });
        shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined
                .context("server task failed")?
                .context("server failed")?,
            Err(_) => tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            ),
        }
        if let Some(consumer) = consumer {
            // The consumer stops at its next await point; closing commits
            // the offsets of stored batches and leaves the group.
            match tokio::time::timeout(grace, consumer).await {
                Ok(Ok(report)) => tracing::info!(?report, "kafka consumer closed"),
                Ok(Err(e)) => tracing::error!(error = %e, "kafka consumer task failed"),
                Err(_) => tracing::warn!("kafka consumer did not close within the grace period"),
            }
        }
        tracing::info!("server stopped");
        Ok(())
    }
}
