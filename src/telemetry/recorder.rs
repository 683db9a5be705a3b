//! The process-wide Prometheus recorder: installed once, by
//! [`crate::startup`], before any use case records; `/metrics` renders its
//! handle.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::metric_names;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call and returns its handle (several apps
/// in one test process share it).
pub fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build).clone()
}

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds pending histogram samples into buckets every [`UPKEEP_EVERY`]
/// until `stop`. Why: a recorder from `build_recorder` keeps every sample
/// until the next render, so a server nobody scrapes would grow by each
/// request's latency sample, without bound (`run_upkeep` is the crate's
/// remedy); the exporter's own upkeep task only comes with its HTTP
/// listener, which we do not use.
pub async fn upkeep(stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Some(handle) = HANDLE.get() {
                    handle.run_upkeep();
                }
            }
        }
    }
}

fn build() -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new();
    // Both bucket lists are non-empty constants, the only way these fail.
    for (matcher, buckets) in [
        (
            Matcher::Full(metric_names::HTTP_REQUEST_DURATION_SECONDS.into()),
            metric_names::HTTP_BUCKETS,
        ),
        (
            Matcher::Suffix("_duration_seconds".into()),
            metric_names::JOB_BUCKETS,
        ),
    ] {
        builder = match builder.set_buckets_for_metric(matcher, buckets) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "histogram buckets refused; using summaries");
                PrometheusBuilder::new()
            }
        };
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Another recorder may already be installed (embedding apps): then ours
    // just renders what it records itself.
    if metrics::set_global_recorder(recorder).is_ok() {
        for (name, kind, help) in metric_names::DESCRIPTIONS {
            match kind {
                metric_names::Kind::Counter => metrics::describe_counter!(*name, *help),
                metric_names::Kind::Gauge => metrics::describe_gauge!(*name, *help),
                metric_names::Kind::Histogram => metrics::describe_histogram!(*name, *help),
            }
        }
    }
    handle
}
