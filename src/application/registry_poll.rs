//! Following the registry: every `interval`, take the `production` alias's
//! stamp (one HEAD request: its ETag, or a local file's stat) and, only
//! when it changed since the last successful reload, re-read the alias and
//! swap in the model another replica or the CLI promoted. At a 1 s
//! interval, ten replicas cost the registry ten HEADs a second; a move is
//! served everywhere within about one interval plus the model's decode.
//! Failures are logged and retried on the next tick; the loaded model
//! keeps serving.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::application::manage_models::{ManageModels, PRODUCTION};
use crate::application::serving_state::ServingState;

/// Polls until `shutdown`; the first check is one `interval` after start
/// (start-up has just loaded the model).
pub async fn follow_production(
    state: ServingState,
    models: ManageModels,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // The stamp the serving model was loaded under; unknown at first, so
    // the first tick reloads once (start-up may have raced a promotion).
    let mut loaded: Option<Option<String>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let stamp = match models.registry().alias_stamp(PRODUCTION).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "registry poll: production alias not checked");
                continue;
            }
        };
        if loaded.as_ref() == Some(&stamp) {
            continue;
        }
        match state.reload_model(&models).await {
            Ok(_) => loaded = Some(stamp),
            Err(e) => {
                tracing::warn!(error = %e, "registry poll: production model not reloaded")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::application::ports::{AliasRecord, ModelRegistry};
    use crate::domain::features::FeatureSpec;
    use crate::domain::model::{LogisticModel, ModelKind, ModelMetadata, ModelMetrics};
    use crate::testing::{GradientTrainer, MemoryRegistry};

    fn metadata(spec: &FeatureSpec) -> ModelMetadata {
        let m = ModelMetrics {
            auc: 0.8,
            pr_auc: 0.5,
            logloss: 0.5,
            brier: 0.2,
            recency_auc: 0.7,
        };
        ModelMetadata {
            name: String::new(),
            version: 0,
            kind: ModelKind::Logistic,
            feature_names: spec.names(),
            feature_fingerprint: spec.fingerprint(),
            train_cutoffs: vec![],
            validation_cutoff: String::new(),
            horizon_days: 30,
            lookback_days: 30,
            train_rows: 0,
            validation_rows: 0,
            train_churn_rate: 0.0,
            validation_churn_rate: 0.0,
            metrics: m,
            baseline_metrics: None,
            hyperparameters: serde_json::Value::Null,
            trained_at: String::new(),
            training_secs: 0.0,
            crate_version: String::new(),
            checksum_sha256: String::new(),
            feature_importance: Vec::new(),
            calibration: None,
            report: Default::default(),
            drift_reference: None,
            scheduled: None,
        }
    }

    /// Paused time: an alias moved by "another replica" is served one poll
    /// interval later, not before.
    #[tokio::test(start_paused = true)]
    async fn a_moved_alias_is_followed_on_the_next_tick() {
        let spec = Arc::new(FeatureSpec::standard());
        let registry = MemoryRegistry::default();
        let model = LogisticModel {
            coefficients: vec![0.0; spec.len()],
            intercept: 0.0,
            means: vec![0.0; spec.len()],
            scales: vec![1.0; spec.len()],
            log1p: Vec::new(),
            bounds: Vec::new(),
        };
        let bytes = serde_json::to_vec(&model).unwrap();
        for _ in 0..2 {
            registry
                .register(metadata(&spec), bytes.clone())
                .await
                .unwrap();
        }
        let record = |v: u64| AliasRecord {
            version: v,
            history: vec![],
            updated_at: String::new(),
            reason: String::new(),
            fence: None,
        };
        registry
            .set_alias(PRODUCTION, record(1), None)
            .await
            .unwrap();
        let models = ManageModels::new(
            Arc::new(registry.clone()),
            Arc::new(GradientTrainer::default()),
        );
        let state = ServingState::new(spec);
        state.reload_model(&models).await.unwrap();
        let shutdown = CancellationToken::new();
        let poll = tokio::spawn(follow_production(
            state.clone(),
            models,
            Duration::from_secs(30),
            shutdown.clone(),
        ));
        let current = registry.alias(PRODUCTION).await.unwrap();
        registry
            .set_alias(PRODUCTION, record(2), current.as_ref())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(state.model().unwrap().metadata.version, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The reload decodes on the blocking pool (real threads): give it
        // a moment of real time.
        for _ in 0..500 {
            if state.model().unwrap().metadata.version == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            tokio::task::yield_now().await;
        }
        assert_eq!(state.model().unwrap().metadata.version, 2);
        shutdown.cancel();
        poll.await.unwrap();
    }
}
