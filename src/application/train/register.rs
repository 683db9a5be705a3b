//! Step 7: the version's metadata (with global importance), and the
//! champion re-scored on the same validation rows for the promotion gate.

use std::sync::Arc;

use super::choose::Chosen;
use super::fit::Fitted;
use super::sets::Sets;
use super::{TrainError, TrainModel};
use crate::domain::explanation::global_importance;
use crate::domain::metrics::roc_auc;
use crate::domain::model::{Dataset, FeatureImportance, ModelMetadata, ModelReport};
use crate::domain::time::format_rfc3339;
use crate::domain::training::Champion;

/// Rows explained to measure global importance: enough for stable shares,
/// few enough to cost well under the training itself.
const IMPORTANCE_ROWS: usize = 2_000;

/// Global importance of the chosen model on (up to 2,000 of) the report
/// rows; empty when the model cannot explain them.
fn importance(names: &[String], chosen: &Chosen, report: &Dataset) -> Vec<FeatureImportance> {
    let n = report.n_features();
    let rows = &report.rows[..report.len().min(IMPORTANCE_ROWS) * n];
    match chosen.classifier.contributions(rows) {
        Ok(c) => global_importance(names, &c)
            .into_iter()
            .map(|(feature, importance)| FeatureImportance {
                feature,
                importance,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "feature importance not computed");
            Vec::new()
        }
    }
}

impl TrainModel {
    pub(super) fn metadata(&self, sets: &Sets, fitted: &Fitted, chosen: &Chosen) -> ModelMetadata {
        let policy = &self.options.policy;
        ModelMetadata {
            name: self.options.model_name.clone(),
            version: 0,
            kind: chosen.kind,
            feature_names: self.spec.names(),
            feature_fingerprint: self.spec.fingerprint(),
            train_cutoffs: sets
                .plan
                .train_cutoffs
                .iter()
                .map(|t| format_rfc3339(*t))
                .collect(),
            validation_cutoff: format_rfc3339(sets.plan.validation_cutoff),
            horizon_days: policy.horizon_days,
            lookback_days: policy.lookback_days,
            train_rows: fitted.train_rows,
            validation_rows: sets.report.len(),
            train_churn_rate: fitted.train_churn_rate,
            validation_churn_rate: sets.report.positive_rate(),
            metrics: chosen.report,
            baseline_metrics: Some(fitted.logistic.report),
            hyperparameters: self.trainer.hyperparameters(chosen.kind),
            trained_at: chrono::Utc::now().to_rfc3339(),
            training_secs: fitted.secs,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum_sha256: String::new(),
            feature_importance: importance(&self.spec.names(), chosen, &sets.report),
            calibration: None,
            report: ModelReport::default(),
            drift_reference: None,
            scheduled: None,
        }
    }

    /// The production model re-scored on the validation rows. A champion
    /// that cannot be loaded is treated as absent: a broken champion must
    /// not block a healthy challenger.
    pub(super) async fn champion(
        &self,
        validation: &Arc<Dataset>,
    ) -> Result<Option<Champion>, TrainError> {
        let champion = match self.models.load_production().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "current production model cannot be loaded; treating as absent");
                return Ok(None);
            }
        };
        let version = champion.metadata.version;
        if champion.metadata.feature_fingerprint != self.spec.fingerprint() {
            // Another spec: it cannot score these rows (nor serve this
            // spec's snapshots); its recorded figure measured something else.
            return Ok(Some(Champion { version, auc: None }));
        }
        let classifier = champion.classifier.clone();
        let val = validation.clone();
        let auc = tokio::task::spawn_blocking(move || -> Result<f64, TrainError> {
            let scores = classifier.predict_proba(&val.rows)?;
            Ok(roc_auc(&scores, &val.labels)?)
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))??;
        Ok(Some(Champion {
            version,
            auc: Some(auc),
        }))
    }
}
