//! `ManageModels`: listing versions, loading and decoding them, and moving
//! the `production` alias (promote, rollback) with compare-and-swap so two
//! writers cannot both win silently.

use std::sync::Arc;

use serde::Serialize;

use crate::application::ports::{
    AliasRecord, ModelExporter, ModelRegistry, ModelTrainer, RegistryError,
};
use crate::domain::lease::admits;
use crate::domain::model::{Classifier, ModelError, ModelMetadata};
use crate::telemetry::metric_names;

/// The alias serving follows.
pub const PRODUCTION: &str = "production";
/// The alias of the newest registered version.
pub const LATEST: &str = "latest";
/// How many previous production versions an alias remembers for rollback.
const HISTORY_LIMIT: usize = 50;

/// Failures of model management.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("version {version} cannot be used: {source}")]
    Model { version: u64, source: ModelError },
}

/// A version with the aliases pointing at it (for `models list`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub version: u64,
    pub aliases: Vec<String>,
    #[serde(flatten)]
    pub metadata: ModelMetadata,
}

/// A decoded model ready to score.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub metadata: ModelMetadata,
    pub classifier: Arc<dyn Classifier>,
}

/// The model-management use case.
#[derive(Clone)]
pub struct ManageModels {
    registry: Arc<dyn ModelRegistry>,
    trainer: Arc<dyn ModelTrainer>,
    exporter: Option<Arc<dyn ModelExporter>>,
}

impl ManageModels {
    pub fn new(registry: Arc<dyn ModelRegistry>, trainer: Arc<dyn ModelTrainer>) -> Self {
        Self {
            registry,
            trainer,
            exporter: None,
        }
    }

    /// Mirrors new versions and `production` moves to `exporter` (MLflow).
    pub fn with_exporter(mut self, exporter: Arc<dyn ModelExporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Mirrors a registered version; an exporter failure is logged and
    /// counted, never returned: the registry, not MLflow, is what serves.
    /// `None` without an exporter.
    pub async fn export_version(&self, metadata: &ModelMetadata, model: &[u8]) -> Option<String> {
        let exporter = self.exporter.as_ref()?;
        Some(match exporter.export_version(metadata, model).await {
            Ok(receipt) => {
                metrics::counter!(metric_names::MLFLOW_EXPORTS_TOTAL, "what" => "version", "outcome" => "ok")
                    .increment(1);
                tracing::info!(version = metadata.version, %receipt, "exported to MLflow");
                receipt
            }
            Err(e) => {
                metrics::counter!(metric_names::MLFLOW_EXPORTS_TOTAL, "what" => "version", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(version = metadata.version, error = %e, "MLflow export failed; training is unaffected");
                format!("export failed: {e}")
            }
        })
    }

    async fn mirror_alias(&self, alias: &str, version: u64) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        let outcome = match exporter.set_alias(alias, version).await {
            Ok(()) => "ok",
            Err(e) => {
                tracing::warn!(alias, version, error = %e, "MLflow alias mirror failed; the registry alias moved");
                "failed"
            }
        };
        metrics::counter!(metric_names::MLFLOW_EXPORTS_TOTAL, "what" => "alias", "outcome" => outcome)
            .increment(1);
    }

    /// Registers a new version, mirrors it to the exporter (if any) and
    /// moves `latest` to it. Returns the stored metadata (number and
    /// checksum filled in) and the exporter's receipt.
    ///
    /// # Errors
    /// [`ModelsError::Registry`] when the version cannot be stored or
    /// `latest` cannot move; exporter failures are never returned.
    pub async fn register(
        &self,
        metadata: ModelMetadata,
        model: Vec<u8>,
    ) -> Result<(ModelMetadata, Option<String>), ModelsError> {
        let registered = self.registry.register(metadata, model.clone()).await?;
        let export = self.export_version(&registered, &model).await;
        self.move_alias(LATEST, registered.version, "newly registered")
            .await?;
        Ok((registered, export))
    }

    pub fn registry(&self) -> &Arc<dyn ModelRegistry> {
        &self.registry
    }

    /// Every version, oldest first, with its aliases.
    ///
    /// # Errors
    /// [`ModelsError::Registry`] when the registry cannot be read.
    pub async fn list(&self) -> Result<Vec<ModelSummary>, ModelsError> {
        let versions = self.registry.list().await?;
        let production = self.registry.alias(PRODUCTION).await?;
        let latest = self.registry.alias(LATEST).await?;
        Ok(versions
            .into_iter()
            .map(|metadata| {
                let mut aliases = Vec::new();
                if production
                    .as_ref()
                    .is_some_and(|a| a.version == metadata.version)
                {
                    aliases.push(PRODUCTION.to_string());
                }
                if latest
                    .as_ref()
                    .is_some_and(|a| a.version == metadata.version)
                {
                    aliases.push(LATEST.to_string());
                }
                ModelSummary {
                    version: metadata.version,
                    aliases,
                    metadata,
                }
            })
            .collect())
    }

    /// Loads, verifies and decodes one version.
    ///
    /// # Errors
    /// Unknown version, checksum mismatch or undecodable model.
    pub async fn load(&self, version: u64) -> Result<LoadedModel, ModelsError> {
        let (metadata, bytes) = self.registry.load(version).await?;
        let trainer = self.trainer.clone();
        let kind = metadata.kind;
        // Decoding a large tree ensemble is CPU work: keep it off the runtime.
        let classifier = tokio::task::spawn_blocking(move || trainer.decode(kind, &bytes))
            .await
            .map_err(|e| ModelsError::Model {
                version,
                source: ModelError::Codec(e.to_string()),
            })?
            .map_err(|source| ModelsError::Model { version, source })?;
        if classifier.n_features() != metadata.feature_names.len() {
            return Err(ModelsError::Model {
                version,
                source: ModelError::FeatureCount {
                    expected: metadata.feature_names.len(),
                    got: classifier.n_features(),
                },
            });
        }
        Ok(LoadedModel {
            metadata,
            classifier,
        })
    }

    /// The production model, if an alias exists.
    ///
    /// # Errors
    /// As [`ManageModels::load`].
    pub async fn load_production(&self) -> Result<Option<LoadedModel>, ModelsError> {
        match self.registry.alias(PRODUCTION).await? {
            None => Ok(None),
            Some(a) => self.load(a.version).await.map(Some),
        }
    }

    /// Points `alias` at `version`, remembering the previous target.
    /// Verifies the version loads first, so a broken model is never promoted.
    ///
    /// # Errors
    /// Unknown/broken version, or [`RegistryError::Conflict`] if another
    /// writer moved the alias meanwhile.
    pub async fn promote(&self, version: u64, reason: &str) -> Result<AliasRecord, ModelsError> {
        self.promote_fenced(version, reason, None).await
    }

    /// As [`ManageModels::promote`], for a scheduled job started under lease
    /// `token`: refused with [`RegistryError::Fenced`] when the alias was
    /// already moved under a newer token.
    ///
    /// # Errors
    /// As [`ManageModels::promote`], plus [`RegistryError::Fenced`].
    pub async fn promote_fenced(
        &self,
        version: u64,
        reason: &str,
        token: Option<u64>,
    ) -> Result<AliasRecord, ModelsError> {
        self.load(version).await?;
        match self
            .move_alias_fenced(PRODUCTION, version, reason, token)
            .await
        {
            // An unreadable alias record cannot be compared with, so no
            // compare-and-swap can move it: an operator's promotion (never
            // a scheduled one) replaces it, and says so.
            Err(ModelsError::Registry(RegistryError::Corrupt(why))) if token.is_none() => {
                let record = AliasRecord {
                    version,
                    history: Vec::new(),
                    updated_at: chrono::Utc::now().to_rfc3339(),
                    reason: format!("{reason}; replaced an unreadable alias record ({why})"),
                    fence: None,
                };
                self.registry
                    .repair_alias(PRODUCTION, record.clone())
                    .await?;
                tracing::warn!(version, %why, "unreadable production alias replaced");
                self.mirror_alias(PRODUCTION, version).await;
                Ok(record)
            }
            other => other,
        }
    }

    /// Moves any alias (no load check; used for `latest`).
    ///
    /// # Errors
    /// [`RegistryError`] from the registry, including conflicts.
    pub async fn move_alias(
        &self,
        alias: &str,
        version: u64,
        reason: &str,
    ) -> Result<AliasRecord, ModelsError> {
        self.move_alias_fenced(alias, version, reason, None).await
    }

    /// The move itself. The token check and the write are one
    /// compare-and-swap: a newer term moving the alias in between makes
    /// this write conflict, never overwrite.
    async fn move_alias_fenced(
        &self,
        alias: &str,
        version: u64,
        reason: &str,
        token: Option<u64>,
    ) -> Result<AliasRecord, ModelsError> {
        let current = self.registry.alias(alias).await?;
        let newest = current.as_ref().and_then(|c| c.fence);
        if let Some(t) = token
            && !admits(newest, t)
        {
            metrics::counter!(metric_names::SCHEDULER_FENCED_TOTAL).increment(1);
            return Err(RegistryError::Fenced {
                token: t,
                newest: newest.unwrap_or(t),
            }
            .into());
        }
        if let Some(c) = &current
            && c.version == version
        {
            return Ok(c.clone());
        }
        let mut history = current
            .as_ref()
            .map(|c| {
                let mut h = c.history.clone();
                h.push(c.version);
                h
            })
            .unwrap_or_default();
        if history.len() > HISTORY_LIMIT {
            history.drain(..history.len() - HISTORY_LIMIT);
        }
        let record = AliasRecord {
            version,
            history,
            updated_at: chrono::Utc::now().to_rfc3339(),
            reason: reason.to_string(),
            fence: newest.max(token),
        };
        self.registry
            .set_alias(alias, record.clone(), current.as_ref())
            .await?;
        tracing::info!(alias, version, reason, "alias moved");
        if alias == PRODUCTION {
            self.mirror_alias(alias, version).await;
        }
        Ok(record)
    }

    /// Moves `production` back to the version it pointed to before.
    ///
    /// # Errors
    /// [`RegistryError::NoHistory`] with no earlier version;
    /// [`RegistryError::Conflict`] on a concurrent move.
    pub async fn rollback(&self) -> Result<AliasRecord, ModelsError> {
        let current = self
            .registry
            .alias(PRODUCTION)
            .await?
            .ok_or_else(|| RegistryError::NoAlias(PRODUCTION.into()))?;
        let mut history = current.history.clone();
        let previous = history.pop().ok_or_else(|| {
            RegistryError::NoHistory("production has never pointed elsewhere".into())
        })?;
        self.load(previous).await?;
        let record = AliasRecord {
            version: previous,
            history,
            updated_at: chrono::Utc::now().to_rfc3339(),
            reason: format!("rollback from version {}", current.version),
            fence: current.fence,
        };
        self.registry
            .set_alias(PRODUCTION, record.clone(), Some(&current))
            .await?;
        tracing::info!(
            from = current.version,
            to = previous,
            "production rolled back"
        );
        self.mirror_alias(PRODUCTION, previous).await;
        Ok(record)
    }
}
