//! `[mlflow]`: the optional exporter mirroring versions and the
//! production alias to an MLflow tracking server.

use serde::{Deserialize, Serialize};

/// The optional MLflow exporter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MlflowSettings {
    /// e.g. "http://mlflow:5000"; empty = no export (the default).
    pub tracking_uri: String,
    pub experiment: String,
    /// Registered model name in MLflow.
    pub registered_model: String,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
    /// Attempts per call before the export is reported failed.
    pub attempts: u32,
}

impl Default for MlflowSettings {
    fn default() -> Self {
        Self {
            tracking_uri: String::new(),
            experiment: "churn_prediction".into(),
            registered_model: "churn_model".into(),
            timeout_secs: 10,
            attempts: 3,
        }
    }
}
