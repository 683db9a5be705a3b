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
        zero_series();
    }
    handle
}

/// Exports at 0 from the start the series whose 0 is the truth until
/// something happens: unlabelled counters, the job-failure counters of the
/// known jobs, and 0/1 flags whose 0 means "nothing wrong". An alert on an
/// absent series stays silent until the first event, and a dashboard
/// panel over one shows "no data" (deploy/prometheus, deploy/grafana).
fn zero_series() {
    use metric_names as m;
    for name in [
        m::DEAD_LETTERS_TOTAL,
        m::EVENTS_INGESTED_TOTAL,
        m::EVENTS_DUPLICATE_TOTAL,
        m::PREDICTIONS_TOTAL,
        m::MODEL_SWAPS_TOTAL,
        m::STREAM_RECORDS_TOTAL,
        m::HTTP_CONNECTIONS_REFUSED_TOTAL,
        m::SCHEDULER_FENCED_TOTAL,
        m::SCHEDULER_LEASE_TAKEN_TOTAL,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for job in ["train", "build_features"] {
        metrics::counter!(m::JOB_FAILURES_TOTAL, "job" => job).absolute(0);
    }
    for flag in [
        m::STREAM_PAUSED,
        m::DRIFT_ALERT,
        m::SCHEDULER_LEADER,
        m::LIVE_CONSISTENCY_ALERT,
    ] {
        metrics::gauge!(flag).set(0.0);
    }
}
