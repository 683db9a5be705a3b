//! The process-wide Prometheus recorder: installed once, by
//! [`crate::startup`], before any use case records; `/metrics` renders its
//! handle.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call and returns its handle (several apps
/// in one test process share it).
pub fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build).clone()
}

fn build() -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new();
    // Both bucket lists are non-empty constants, the only way these fail.
    for (matcher, buckets) in [
        (
            Matcher::Full(names::HTTP_REQUEST_DURATION_SECONDS.into()),
            names::HTTP_BUCKETS,
        ),
        (
            Matcher::Suffix("_duration_seconds".into()),
            names::JOB_BUCKETS,
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
        for (name, kind, help) in names::DESCRIPTIONS {
            match kind {
                names::Kind::Counter => metrics::describe_counter!(*name, *help),
                names::Kind::Gauge => metrics::describe_gauge!(*name, *help),
                names::Kind::Histogram => metrics::describe_histogram!(*name, *help),
            }
        }
    }
    handle
}
