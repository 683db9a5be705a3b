//! The files of an MLflow model directory for one churn version, so that
//! `mlflow.pyfunc.load_model("models:/<name>@production")` works: an
//! `MLmodel` with a `python_function` flavor whose loader module
//! (`code/churn_pyfunc.py`, [`PYFUNC_SOURCE`]) evaluates the model in pure
//! Python, the model itself with its feature order and calibration
//! (`churn_model.json`), the pinned requirements and an input example. The exporter uploads them under the run's `model/` artifact
//! path beside the raw `model.bin` and `metadata.json`.

use serde_json::{Value, json};

use crate::application::ports::ExportError;
use crate::domain::model::ModelMetadata;

/// The loader module shipped with every exported model.
pub const PYFUNC_SOURCE: &str = include_str!("mlflow_pyfunc.py");

/// The MLflow release the exported `MLmodel` says wrote it (the version
/// the test command runs).
pub const MLFLOW_VERSION: &str = "3.17.2";

/// `(path under model/, bytes)` of every file of the model directory.
///
/// # Errors
/// [`ExportError::Rejected`] when `model` is not churn's JSON model file.
pub fn pyfunc_files(
    m: &ModelMetadata,
    model: &[u8],
) -> Result<Vec<(String, Vec<u8>)>, ExportError> {
    let bad = |e: serde_json::Error| {
        ExportError::Rejected(format!("model file of version {}: {e}", m.version))
    };
    let parsed: Value = serde_json::from_slice(model).map_err(bad)?;
    let spec = json!({
        "format": 1,
        "name": m.name,
        "version": m.version,
        "kind": m.kind.as_str(),
        "feature_names": m.feature_names,
        "feature_fingerprint": m.feature_fingerprint,
        "calibration": m.calibration,
        "model": parsed,
    });
    let example = json!({
        "columns": m.feature_names,
        "data": [vec![0.0; m.feature_names.len()]],
    });
    // YAML by hand: a fixed shape. No signature: MLflow would refuse
    // integer columns for `double` inputs, which the loader converts
    // itself (and it names missing columns).
    let mlmodel = format!(
        "artifact_path: model\n\
         flavors:\n\
         \x20 python_function:\n\
         \x20   loader_module: churn_pyfunc\n\
         \x20   code: code\n\
         \x20   data: churn_model.json\n\
         \x20   env:\n\
         \x20     virtualenv: python_env.yaml\n\
         \x20   python_version: 3.11.7\n\
         mlflow_version: {MLFLOW_VERSION}\n\
         model_size_bytes: {size}\n\
         saved_input_example_info:\n\
         \x20 artifact_path: input_example.json\n\
         \x20 pandas_orient: split\n\
         \x20 type: dataframe\n\
         utc_time_created: '{created}'\n\
         metadata:\n\
         \x20 churn_version: {version}\n\
         \x20 churn_kind: {kind}\n",
        size = model.len(),
        created = m.trained_at,
        version = m.version,
        kind = m.kind.as_str(),
    );
    Ok(vec![
        ("MLmodel".into(), mlmodel.into_bytes()),
        (
            "churn_model.json".into(),
            serde_json::to_vec(&spec).map_err(bad)?,
        ),
        ("code/churn_pyfunc.py".into(), PYFUNC_SOURCE.as_bytes().to_vec()),
        (
            // The loader needs pandas only (MLflow brings it).
            "requirements.txt".into(),
            format!("mlflow=={MLFLOW_VERSION}\npandas\n").into_bytes(),
        ),
        (
            "python_env.yaml".into(),
            b"python: 3.11.7\nbuild_dependencies:\n  - pip\ndependencies:\n  - -r requirements.txt\n"
                .to_vec(),
        ),
        (
            "input_example.json".into(),
            serde_json::to_vec(&example).map_err(bad)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{LogisticModel, ModelKind, ModelMetrics};

    #[test]
    fn the_directory_names_its_loader_and_every_feature() {
        let model = LogisticModel {
            coefficients: vec![0.5, -1.0],
            intercept: 0.1,
            means: vec![0.0, 1.0],
            scales: vec![1.0, 2.0],
            log1p: vec![false, true],
            bounds: vec![(0.0, 10.0), (0.0, 5.0)],
        };
        let m = ModelMetadata {
            name: "churn_model".into(),
            version: 7,
            kind: ModelKind::Logistic,
            feature_names: vec!["a".into(), "b's".into()],
            feature_fingerprint: "f".into(),
            train_cutoffs: vec![],
            validation_cutoff: String::new(),
            horizon_days: 30,
            lookback_days: 30,
            train_rows: 0,
            validation_rows: 0,
            train_churn_rate: 0.0,
            validation_churn_rate: 0.0,
            metrics: ModelMetrics {
                auc: 0.8,
                pr_auc: 0.5,
                logloss: 0.5,
                brier: 0.2,
                recency_auc: 0.7,
            },
            baseline_metrics: None,
            hyperparameters: Value::Null,
            trained_at: "2026-12-05T00:00:00Z".into(),
            training_secs: 0.0,
            crate_version: String::new(),
            checksum_sha256: String::new(),
            feature_importance: Vec::new(),
            calibration: None,
            report: Default::default(),
            drift_reference: None,
            scheduled: None,
        };
        let files = pyfunc_files(&m, &serde_json::to_vec(&model).unwrap()).unwrap();
        let get = |name: &str| {
            String::from_utf8(files.iter().find(|(n, _)| n == name).unwrap().1.clone()).unwrap()
        };
        let mlmodel = get("MLmodel");
        assert!(mlmodel.contains("loader_module: churn_pyfunc"), "{mlmodel}");
        let spec: Value = serde_json::from_str(&get("churn_model.json")).unwrap();
        assert_eq!(spec["feature_names"], json!(["a", "b's"]));
        assert_eq!(spec["kind"], "logistic");
        assert_eq!(spec["model"]["intercept"], 0.1);
        assert!(get("code/churn_pyfunc.py").contains("def _load_pyfunc"));
        assert!(pyfunc_files(&m, b"not json").is_err());
    }
}
