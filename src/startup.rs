//! Wiring: the only place that names concrete adapters. Builds the ports
//! from [`Settings`] and hands out ready use cases.

use std::sync::Arc;

use anyhow::Context;

use crate::application::build_features::BuildFeatures;
use crate::application::ingest::IngestEvents;
use crate::application::models::ManageModels;
use crate::application::ports::{EventStore, FeatureStore, ModelRegistry, ModelTrainer};
use crate::application::train::{TrainModel, TrainingOptions};
use crate::config::{Settings, StoreKind};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::infrastructure::models::CrateTrainer;
use crate::infrastructure::registry::ObjectStoreRegistry;
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
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, false)
    }

    /// As [`Services::build`], with `force_promote` for demos.
    ///
    /// # Errors
    /// As [`Services::build`].
    pub fn build_with(settings: Settings, force_promote: bool) -> anyhow::Result<Self> {
        settings.validate()?;
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
            };
        let registry: Arc<dyn ModelRegistry> = Arc::new(
            ObjectStoreRegistry::local(&settings.registry_dir(), &settings.registry.model_name)
                .with_context(|| {
                    format!(
                        "opening the model registry (registry.url = {})",
                        settings.registry_dir().display()
                    )
                })?,
        );
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
        };
        let train = TrainModel::new(
            events.clone(),
            features.clone(),
            registry.clone(),
            trainer.clone(),
            spec.clone(),
            options,
        );
        let models = ManageModels::new(registry.clone(), trainer.clone());
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
