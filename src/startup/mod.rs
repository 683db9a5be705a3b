//! Composition root: the only place that names concrete adapters.
//!
//! - [`adapters`]: each `[section]` of the settings → its adapter (stores,
//!   registry, Kafka clients, file sources, the feature spec).
//! - [`Stores`]: the event and feature stores alone, for commands that need
//!   nothing else (`ingest`, `stats`, `profile`, `features`,
//!   `build-features`, `migrate`).
//! - [`ModelsOnly`]: the registry and its use case (`churn models`).
//! - [`Services`]: every use case, for the commands that train, score or
//!   serve.
//! - [`Application`] (`server`): binds the HTTP server, loads the serving
//!   state and runs the background tasks until shutdown.

mod adapters;
mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use adapters::*;
pub use server::Application;

use crate::application::build_features::{AsOf, BuildFeatures};
use crate::application::erasure::ForgetUsers;
use crate::application::ingest::IngestEvents;
use crate::application::manage_models::ManageModels;
use crate::application::ports::{
    Coordination, Erasure, EventStore, FeatureStore, ModelRegistry, ModelTrainer, PredictionSink,
};
use crate::application::profile::ProfileData;
use crate::application::score::ScoreUsers;
use crate::application::train::{TrainModel, TrainingOptions};
use crate::config::{FeaturesAsOf, Settings, SqliteSynchronous, StoreKind};
use crate::domain::features::FeatureSpec;
use crate::domain::training::PromotionPolicy;
use crate::infrastructure::mlflow::{MlflowExporter, MlflowOptions};
use crate::infrastructure::store::deadline::{DeadlineStore, Deadlines};
use crate::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use crate::infrastructure::trainers::ForustTrainer;

/// The deadlines of `[store]`.
fn deadlines(settings: &Settings) -> Deadlines {
    Deadlines {
        request: Duration::from_secs(settings.store.request_timeout_secs),
        job: Duration::from_secs(settings.store.job_timeout_secs),
    }
}

/// The event and feature stores of `[store]`, and the prediction table
/// when the backend has one.
#[derive(Clone)]
pub struct Stores {
    pub events: Arc<dyn EventStore>,
    pub features: Arc<dyn FeatureStore>,
    pub predictions: Option<Arc<dyn PredictionSink>>,
    /// Erasure and retention over every table of the store.
    pub erasure: Arc<dyn Erasure>,
}

impl Stores {
    /// Opens the configured backend (ClickHouse migrated when
    /// `clickhouse.migrate_on_start`).
    ///
    /// # Errors
    /// A store that cannot be opened, naming the setting to check.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        // Metrics are process-wide: install the recorder before any use case
        // records, so nothing recorded before the server starts is lost.
        crate::telemetry::recorder::install();
        Ok(match settings.store.kind {
            StoreKind::Sqlite => {
                let store = SqliteStore::open(SqliteOptions {
                    path: settings.sqlite_path(),
                    synchronous_full: settings.store.sqlite_synchronous == SqliteSynchronous::Full,
                    snapshot_retention: settings.store.snapshot_retention,
                })
                .with_context(|| {
                    format!(
                        "opening the embedded store (store.sqlite_path = {})",
                        settings.sqlite_path().display()
                    )
                })?;
                let store = Arc::new(DeadlineStore::new(
                    Arc::new(store),
                    deadlines(settings),
                    "the embedded store",
                ));
                Self {
                    events: store.clone(),
                    features: store.clone(),
                    predictions: None,
                    erasure: store,
                }
            }
            StoreKind::Clickhouse => {
                let store = open_clickhouse(settings).await?;
                let store = Arc::new(DeadlineStore::new(
                    Arc::new(store),
                    deadlines(settings),
                    "clickhouse",
                ));
                Self {
                    events: store.clone(),
                    features: store.clone(),
                    predictions: Some(store.clone()),
                    erasure: store,
                }
            }
        })
    }

    /// The ingestion pipeline over these stores, reading `[ingest]`'s shape.
    ///
    /// # Errors
    /// An invalid `[ingest]` mapping (validated settings never have one).
    pub fn ingest(&self, settings: &Settings) -> anyhow::Result<IngestEvents> {
        Ok(IngestEvents::new(
            self.events.clone(),
            settings.ingest.max_future_skew_secs,
            settings.ingest.batch_size,
        )
        .with_min_time(settings.min_event_time())
        .with_format(settings.ingest.event_format()?))
    }

    /// `churn profile` over these stores with the configured spec.
    ///
    /// # Errors
    /// An unreadable or invalid spec file.
    pub fn profile(&self, settings: &Settings) -> anyhow::Result<ProfileData> {
        Ok(ProfileData::new(
            self.events.clone(),
            self.features.clone(),
            Arc::new(load_spec(settings)?),
            label_policy(settings),
        ))
    }

    /// Feature snapshots over these stores with `spec`.
    pub fn build_features(&self, spec: Arc<FeatureSpec>) -> BuildFeatures {
        BuildFeatures::new(self.features.clone(), self.events.clone(), spec)
    }
}

/// The registry and the model use case (no stores): `churn models`.
pub struct ModelsOnly {
    pub registry: Arc<dyn ModelRegistry>,
    pub models: ManageModels,
}

impl ModelsOnly {
    /// # Errors
    /// A registry or MLflow exporter that cannot be configured.
    pub fn open(settings: &Settings) -> anyhow::Result<Self> {
        crate::telemetry::recorder::install();
        let registry: Arc<dyn ModelRegistry> = Arc::new(open_registry(settings)?);
        let models = manage_models(settings, registry.clone(), trainer(settings))?;
        Ok(Self { registry, models })
    }
}

fn trainer(settings: &Settings) -> Arc<dyn ModelTrainer> {
    Arc::new(ForustTrainer {
        gbdt: settings.training.gbdt,
    })
}

/// The model use case over `registry`, exporting to MLflow when
/// `mlflow.tracking_uri` is set.
fn manage_models(
    settings: &Settings,
    registry: Arc<dyn ModelRegistry>,
    trainer: Arc<dyn ModelTrainer>,
) -> anyhow::Result<ManageModels> {
    let mut models = ManageModels::new(registry, trainer);
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
    Ok(models)
}

/// Every port and use case, built once from the settings: the commands
/// that train, score or serve.
#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub spec: Arc<FeatureSpec>,
    pub events: Arc<dyn EventStore>,
    pub features: Arc<dyn FeatureStore>,
    pub registry: Arc<dyn ModelRegistry>,
    /// The same registry, as the replicas' shared lease and tick claims.
    pub coordination: Arc<dyn Coordination>,
    pub trainer: Arc<dyn ModelTrainer>,
    pub ingest: IngestEvents,
    pub build_features: BuildFeatures,
    pub train: TrainModel,
    pub models: ManageModels,
    pub profile: ProfileData,
    pub score: ScoreUsers,
    /// Erasure and retention.
    pub forget: ForgetUsers,
}

impl Services {
    /// Opens the stores and the registry of validated settings
    /// ([`Settings::load`] validates) and builds every use case.
    ///
    /// # Errors
    /// A backend that cannot be opened (the message names the path or URL).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, false).await
    }

    /// As [`Services::build`], with `force_promote` for demos.
    ///
    /// # Errors
    /// As [`Services::build`].
    pub async fn build_with(settings: Settings, force_promote: bool) -> anyhow::Result<Self> {
        let stores = Stores::open(&settings).await?;
        let spec = Arc::new(load_spec(&settings)?);
        let opened = Arc::new(open_registry(&settings)?);
        let registry: Arc<dyn ModelRegistry> = opened.clone();
        let coordination: Arc<dyn Coordination> = opened;
        let trainer = trainer(&settings);
        let models = manage_models(&settings, registry.clone(), trainer.clone())?;
        let policy = label_policy(&settings);
        let t = &settings.training;
        let options = TrainingOptions {
            model_name: settings.registry.model_name.clone(),
            policy: policy.clone(),
            validation_cutoff: settings.validation_cutoff(),
            train_snapshots: t.train_snapshots,
            snapshot_step_days: t.snapshot_step_days,
            max_training_rows: t.max_training_rows,
            promotion: PromotionPolicy {
                tolerance: t.promotion_tolerance,
                force: force_promote,
            },
            selection: t.model_selection,
            calibration: t.calibration,
            reference_as_of: rebuild_as_of(&settings),
        };
        let (events, features) = (stores.events.clone(), stores.features.clone());
        Ok(Self {
            ingest: stores.ingest(&settings)?,
            build_features: stores.build_features(spec.clone()),
            profile: ProfileData::new(
                events.clone(),
                features.clone(),
                spec.clone(),
                policy.clone(),
            ),
            train: TrainModel::new(
                events.clone(),
                features.clone(),
                models.clone(),
                trainer.clone(),
                spec.clone(),
                options,
            ),
            score: ScoreUsers::new(
                features.clone(),
                events.clone(),
                models.clone(),
                spec.clone(),
                policy,
                stores.predictions.clone(),
            )
            .with_rule(rebuild_as_of(&settings)),
            forget: ForgetUsers::new(stores.erasure.clone(), registry.clone()),
            settings: Arc::new(settings),
            spec,
            events,
            features,
            registry,
            coordination,
            trainer,
            models,
        })
    }
}

/// When the server's feature rebuilds (and so the drift reference) are
/// computed as of: `schedule.features_as_of`.
pub(crate) fn rebuild_as_of(settings: &Settings) -> AsOf {
    match settings.schedule.features_as_of {
        FeaturesAsOf::End => AsOf::EndOfData,
        FeaturesAsOf::Now => AsOf::Now,
        FeaturesAsOf::Auto => AsOf::Auto,
    }
}
