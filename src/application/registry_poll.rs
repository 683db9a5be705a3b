//! Following the registry: every `interval`, re-read the `production` alias
//! and swap in a model moved by another replica or the CLI. Failures are
//! logged and retried on the next tick; the loaded model keeps serving.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::application::models::ManageModels;
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
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = state.reload_model(&models).await {
            tracing::warn!(error = %e, "registry poll: production model not reloaded");
        }
    }
}
