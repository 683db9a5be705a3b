//! [`MlflowExporter`]: mirrors registered versions and the `production`
//! alias into an MLflow tracking server over its REST API (MLflow 3.x).
//! Our registry stays the source the server serves from; MLflow is a view
//! for people who browse runs there.
//!
//! Per registered version: experiment `mlflow.experiment` (created if
//! missing) → a run with params (features, cutoffs, horizon, model kind,
//! hyperparameters), metrics (AUC, PR AUC, log loss, Brier, recency
//! baseline) and tags → artifacts `model/model.bin`,
//! `model/metadata.json` and a complete MLflow pyfunc model directory
//! ([`super::mlflow_model`]: `mlflow.pyfunc.load_model` scores with it)
//! through the server's artifact proxy → a version of
//! the registered model tagged `churn_version=<our version>`. Alias moves
//! look that tag up. MLflow reserves the alias `latest`, so only other
//! aliases are mirrored.
//!
//! Hand-written on reqwest: the MLflow Rust crates on crates.io are
//! unmaintained and cover neither aliases nor the artifact proxy.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::application::ports::{ExportError, ModelExporter};
use crate::domain::model::ModelMetadata;

/// Connection settings of the exporter.
#[derive(Debug, Clone)]
pub struct MlflowOptions {
    pub tracking_uri: String,
    pub experiment: String,
    pub registered_model: String,
    pub timeout: Duration,
    /// Attempts per call (an outage is retried, then reported).
    pub attempts: u32,
    pub retry_delay: Duration,
}

/// The exporter adapter.
pub struct MlflowExporter {
    http: reqwest::Client,
    options: MlflowOptions,
}

fn err(what: &str, e: impl std::fmt::Display) -> ExportError {
    ExportError::Unavailable(format!("mlflow {what}: {e}"))
}

impl MlflowExporter {
    /// # Errors
    /// [`ExportError::Unavailable`] if the HTTP client cannot be built.
    pub fn new(options: MlflowOptions) -> Result<Self, ExportError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| err("client", e))?;
        Ok(Self { http, options })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.options.tracking_uri.trim_end_matches('/'))
    }

    /// One REST call with retries on transport errors and 5xx; 4xx answers
    /// are returned as they are (several are expected: "already exists").
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(u16, Value), ExportError> {
        let mut last = String::new();
        for attempt in 0..self.options.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.options.retry_delay * 2u32.pow(attempt - 1)).await;
            }
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .query(query);
            if let Some(b) = &body {
                request = request.json(b);
            }
            match request.send().await {
                Ok(r) if r.status().is_server_error() => {
                    last = format!("{path}: HTTP {}", r.status());
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let value = r.json::<Value>().await.unwrap_or(Value::Null);
                    return Ok((status, value));
                }
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        Err(ExportError::Unavailable(format!(
            "mlflow at {} unreachable after {} attempts ({last})",
            self.options.tracking_uri, self.options.attempts
        )))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ExportError> {
        match self.call(method, path, query, body).await? {
            (200..=299, v) => Ok(v),
            (status, v) => Err(ExportError::Rejected(format!(
                "mlflow {path}: HTTP {status}: {}",
                v.get("message").and_then(Value::as_str).unwrap_or("")
            ))),
        }
    }

    async fn experiment_id(&self) -> Result<String, ExportError> {
        let name = &self.options.experiment;
        let path = "api/2.0/mlflow/experiments/get-by-name";
        let query = [("experiment_name", name.as_str())];
        match self.call(reqwest::Method::GET, path, &query, None).await? {
            (200, v) => return id_at(&v, &["experiment", "experiment_id"]),
            (404, _) => {}
            (status, v) => {
                return Err(ExportError::Rejected(format!(
                    "mlflow get experiment: HTTP {status}: {v}"
                )));
            }
        }
        match self
            .call(
                reqwest::Method::POST,
                "api/2.0/mlflow/experiments/create",
                &[],
                Some(json!({ "name": name })),
            )
            .await?
        {
            (200, v) => id_at(&v, &["experiment_id"]),
            // Created concurrently by another replica: read it back.
            (400 | 409, _) => {
                let v = self.ok(reqwest::Method::GET, path, &query, None).await?;
                id_at(&v, &["experiment", "experiment_id"])
            }
            (status, v) => Err(ExportError::Rejected(format!(
                "mlflow create experiment: HTTP {status}: {v}"
            ))),
        }
    }

    async fn upload(
        &self,
        artifact_uri: &str,
        file: &str,
        bytes: Vec<u8>,
    ) -> Result<(), ExportError> {
        // Runs of a server started with --artifacts-destination store
        // artifacts behind its proxy: mlflow-artifacts:/<exp>/<run>/artifacts.
        let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(ExportError::Rejected(format!(
                "run artifact location {artifact_uri} is not served by the MLflow artifact proxy \
                 (start mlflow server with --artifacts-destination)"
            )));
        };
        let path = format!(
            "api/2.0/mlflow-artifacts/artifacts/{}/{file}",
            rest.trim_start_matches('/')
        );
        let mut last = String::new();
        for attempt in 0..self.options.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.options.retry_delay * 2u32.pow(attempt - 1)).await;
            }
            match self
                .http
                .put(self.url(&path))
                .body(bytes.clone())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(err(&format!("artifact upload {file}"), last))
    }

    async fn mlflow_version_of(&self, version: u64) -> Result<Option<String>, ExportError> {
        let filter = format!(
            "name='{}' and tags.churn_version='{version}'",
            self.options.registered_model
        );
        let v = self
            .ok(
                reqwest::Method::GET,
                "api/2.0/mlflow/model-versions/search",
                &[("filter", filter.as_str())],
                None,
            )
            .await?;
        Ok(v.get("model_versions")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|m| m.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string))
    }
}

fn id_at(v: &Value, path: &[&str]) -> Result<String, ExportError> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .ok_or_else(|| ExportError::Rejected(format!("mlflow answer lacks {key}: {v}")))?;
    }
    cur.as_str()
        .map(str::to_string)
        .ok_or_else(|| ExportError::Rejected(format!("mlflow answer: {v}")))
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|_| chrono::Utc::now().timestamp_millis())
}

/// MLflow params (strings of at most 6000 characters).
fn params(m: &ModelMetadata) -> Vec<Value> {
    let mut p: Vec<(String, String)> = [
        ("model_kind", format!("{:?}", m.kind).to_lowercase()),
        ("churn_version", m.version.to_string()),
        ("horizon_days", m.horizon_days.to_string()),
        ("lookback_days", m.lookback_days.to_string()),
        ("train_cutoffs", m.train_cutoffs.join(",")),
        ("validation_cutoff", m.validation_cutoff.clone()),
        ("train_rows", m.train_rows.to_string()),
        ("validation_rows", m.validation_rows.to_string()),
        ("feature_count", m.feature_names.len().to_string()),
        ("feature_fingerprint", m.feature_fingerprint.clone()),
        ("features", m.feature_names.join(",")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Value::Object(h) = &m.hyperparameters {
        for (k, v) in h {
            p.push((format!("hp_{k}"), v.to_string()));
        }
    }
    p.into_iter()
        .map(|(k, v)| {
            let v: String = v.chars().take(6000).collect();
            json!({ "key": k, "value": v })
        })
        .collect()
}

#[async_trait]
impl ModelExporter for MlflowExporter {
    async fn export_version(&self, m: &ModelMetadata, model: &[u8]) -> Result<String, ExportError> {
        let experiment_id = self.experiment_id().await?;
        let started = millis(&m.trained_at);
        let run = self
            .ok(
                reqwest::Method::POST,
                "api/2.0/mlflow/runs/create",
                &[],
                Some(json!({
                    "experiment_id": experiment_id,
                    "run_name": format!("{}-v{}", m.name, m.version),
                    "start_time": started,
                    "tags": [
                        {"key": "churn.model_name", "value": m.name},
                        {"key": "churn.version", "value": m.version.to_string()},
                        {"key": "churn.checksum_sha256", "value": m.checksum_sha256},
                        {"key": "churn.crate_version", "value": m.crate_version},
                        {"key": "mlflow.source.name", "value": "churn"},
                    ],
                })),
            )
            .await?;
        let run_id = id_at(&run, &["run", "info", "run_id"])?;
        let artifact_uri = id_at(&run, &["run", "info", "artifact_uri"])?;
        let mut metrics = vec![
            ("auc", m.metrics.auc),
            ("pr_auc", m.metrics.pr_auc),
            ("log_loss", m.metrics.logloss),
            ("brier", m.metrics.brier),
            ("recency_baseline_auc", m.metrics.recency_auc),
            ("train_churn_rate", m.train_churn_rate),
            ("validation_churn_rate", m.validation_churn_rate),
            ("training_seconds", m.training_secs),
        ];
        if let Some(b) = &m.baseline_metrics {
            metrics.push(("logistic_baseline_auc", b.auc));
        }
        let metrics: Vec<Value> = metrics
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": started, "step": 0}))
            .collect();
        self.ok(
            reqwest::Method::POST,
            "api/2.0/mlflow/runs/log-batch",
            &[],
            Some(json!({ "run_id": run_id, "params": params(m), "metrics": metrics })),
        )
        .await?;
        self.upload(&artifact_uri, "model/model.bin", model.to_vec())
            .await?;
        let metadata = serde_json::to_vec_pretty(m).map_err(|e| err("metadata", e))?;
        self.upload(&artifact_uri, "model/metadata.json", metadata)
            .await?;
        // The same version as an MLflow pyfunc model (MLmodel, loader
        // module, requirements, signature): `mlflow.pyfunc.load_model`.
        for (path, bytes) in super::mlflow_model::pyfunc_files(m, model)? {
            self.upload(&artifact_uri, &format!("model/{path}"), bytes)
                .await?;
        }
        self.ok(
            reqwest::Method::POST,
            "api/2.0/mlflow/runs/update",
            &[],
            Some(json!({
                "run_id": run_id,
                "status": "FINISHED",
                "end_time": started + (m.training_secs * 1000.0) as i64,
            })),
        )
        .await?;
        let name = &self.options.registered_model;
        match self
            .call(
                reqwest::Method::POST,
                "api/2.0/mlflow/registered-models/create",
                &[],
                Some(json!({ "name": name })),
            )
            .await?
        {
            (200, _) => {}
            (_, v)
                if v.get("error_code").and_then(Value::as_str)
                    == Some("RESOURCE_ALREADY_EXISTS") => {}
            (status, v) => {
                return Err(ExportError::Rejected(format!(
                    "mlflow create registered model: HTTP {status}: {v}"
                )));
            }
        }
        let mv = self
            .ok(
                reqwest::Method::POST,
                "api/2.0/mlflow/model-versions/create",
                &[],
                Some(json!({
                    "name": name,
                    "source": format!("{artifact_uri}/model"),
                    "run_id": run_id,
                    "tags": [{"key": "churn_version", "value": m.version.to_string()}],
                    "description": format!("churn registry version {} ({:?})", m.version, m.kind),
                })),
            )
            .await?;
        let mlflow_version = id_at(&mv, &["model_version", "version"])?;
        Ok(format!(
            "mlflow run {run_id}, {name} version {mlflow_version}"
        ))
    }

    async fn set_alias(&self, alias: &str, version: u64) -> Result<(), ExportError> {
        if alias == "latest" {
            return Ok(()); // reserved by MLflow; its own notion of latest applies
        }
        let Some(mlflow_version) = self.mlflow_version_of(version).await? else {
            return Err(ExportError::Rejected(format!(
                "churn version {version} was never exported to MLflow"
            )));
        };
        self.ok(
            reqwest::Method::POST,
            "api/2.0/mlflow/registered-models/alias",
            &[],
            Some(json!({
                "name": self.options.registered_model,
                "alias": alias,
                // MLflow wants the version as a JSON string.
                "version": mlflow_version,
            })),
        )
        .await?;
        Ok(())
    }
}
