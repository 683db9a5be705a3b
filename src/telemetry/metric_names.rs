//! Metric names (Prometheus conventions) and histogram buckets.

pub const HTTP_REQUESTS_TOTAL: &str = "churn_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "churn_http_request_duration_seconds";
pub const PREDICTIONS_TOTAL: &str = "churn_predictions_total";
pub const EVENTS_INGESTED_TOTAL: &str = "churn_events_ingested_total";
pub const EVENTS_DUPLICATE_TOTAL: &str = "churn_events_duplicate_total";
pub const EVENTS_REJECTED_TOTAL: &str = "churn_events_rejected_total";
pub const FEATURE_BUILD_DURATION_SECONDS: &str = "churn_feature_build_duration_seconds";
pub const FEATURE_BUILD_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "churn_feature_build_last_success_timestamp_seconds";
pub const TRAINING_DURATION_SECONDS: &str = "churn_training_duration_seconds";
pub const TRAINING_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "churn_training_last_success_timestamp_seconds";
pub const JOB_FAILURES_TOTAL: &str = "churn_job_failures_total";
pub const MODEL_PRODUCTION_VERSION: &str = "churn_model_production_version";
pub const MODEL_VALIDATION_AUC: &str = "churn_model_validation_auc";
pub const FEATURE_SNAPSHOT_AGE_SECONDS: &str = "churn_feature_snapshot_age_seconds";
pub const FEATURE_SNAPSHOT_USERS: &str = "churn_feature_snapshot_users";
pub const MODEL_SWAPS_TOTAL: &str = "churn_model_swaps_total";

/// Latency buckets for HTTP requests: sub-millisecond resolution, since a
/// prediction is a hash lookup plus a tree walk.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets for batch jobs (feature builds, training): seconds to minutes.
pub const JOB_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Records read from the event stream (Kafka), good and bad.
pub const STREAM_RECORDS_TOTAL: &str = "churn_stream_records_total";
/// Failures of the stream loop by stage (fetch, store, dead_letter, commit).
pub const STREAM_ERRORS_TOTAL: &str = "churn_stream_errors_total";
/// 1 while consumption is paused because a write keeps failing.
pub const STREAM_PAUSED: &str = "churn_stream_paused";
/// Streamed batches that overlapped a batch begun before, so that stored
/// positions had to be read back (ClickHouse store; crashes, lost insert
/// responses and rebalances cause them, the steady state does not).
pub const STORE_REDELIVERY_LOOKUPS_TOTAL: &str = "churn_store_redelivery_lookups_total";
/// Records sent to the dead-letter topic.
pub const DEAD_LETTERS_TOTAL: &str = "churn_dead_letters_total";
/// Messages between the committed offset and the high watermark, per partition.
pub const KAFKA_CONSUMER_LAG: &str = "churn_kafka_consumer_lag";
/// Partition assignments and revocations seen by the consumer.
pub const KAFKA_REBALANCES_TOTAL: &str = "churn_kafka_rebalances_total";
/// Versions and alias moves mirrored to MLflow, by outcome.
pub const MLFLOW_EXPORTS_TOTAL: &str = "churn_mlflow_exports_total";

/// Open HTTP connections.
pub const HTTP_CONNECTIONS: &str = "churn_http_connections";
/// Connections refused because `server.max_connections` were open.
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "churn_http_connections_refused_total";
/// Request-body bytes held in memory right now (bounded by
/// `server.max_inflight_body_bytes`).
pub const HTTP_BODY_BYTES_IN_FLIGHT: &str = "churn_http_body_bytes_in_flight";
/// Requests refused before reaching a handler, by reason.
pub const HTTP_REQUESTS_REFUSED_TOTAL: &str = "churn_http_requests_refused_total";

/// PSI of each feature of the serving snapshot against the production
/// model's training reference (one series per spec feature: bounded).
pub const FEATURE_PSI: &str = "churn_feature_psi";
/// PSI of the predicted probabilities against the training reference.
pub const PREDICTION_PSI: &str = "churn_prediction_psi";
/// Share of serving users absent from the training reference.
pub const NEW_USER_SHARE: &str = "churn_new_user_share";
/// 1 when a drift threshold (`[monitoring]`) is crossed.
pub const DRIFT_ALERT: &str = "churn_drift_alert";

/// Predictions by where their features came from: `cached` (a live row
/// still exact), `read` (the user's events read from the store now),
/// `snapshot` (live features off, or a fallback).
pub const LIVE_LOOKUPS_TOTAL: &str = "churn_live_lookups_total";
/// Predictions that fell back to the serving snapshot, by reason
/// (`busy`, `timeout`, `store_error`, `too_many_events`).
pub const LIVE_FALLBACKS_TOTAL: &str = "churn_live_fallbacks_total";
/// Live rows held in memory (bounded by `features.live_max_users`).
pub const LIVE_USERS: &str = "churn_live_users";
/// Share of the sampled users whose live value of a feature differed
/// from the batch snapshot's, at the last consistency check.
pub const LIVE_MISMATCH_RATIO: &str = "churn_live_mismatch_ratio";
/// 1 when any feature's mismatch ratio is above
/// `features.live_mismatch_alert`.
pub const LIVE_CONSISTENCY_ALERT: &str = "churn_live_consistency_alert";
/// Users compared at the last consistency check.
pub const LIVE_CONSISTENCY_CHECKED_USERS: &str = "churn_live_consistency_checked_users";
/// 1 on the replica holding the scheduler lease (it runs the cron jobs).
pub const SCHEDULER_LEADER: &str = "churn_scheduler_leader";
/// The scheduler lease's fencing token as this replica last read it.
pub const SCHEDULER_LEASE_TOKEN: &str = "churn_scheduler_lease_token";
/// Times this replica took the scheduler lease (a new term).
pub const SCHEDULER_LEASE_TAKEN_TOTAL: &str = "churn_scheduler_lease_taken_total";
/// Cron ticks seen, by job and outcome (`claimed`: run here;
/// `claimed_elsewhere`; `follower`: another replica leads; `busy`: the
/// previous run still going, tick skipped).
pub const SCHEDULER_TICKS_TOTAL: &str = "churn_scheduler_ticks_total";
/// Writes of scheduled jobs refused because their lease term ended.
pub const SCHEDULER_FENCED_TOTAL: &str = "churn_scheduler_fenced_total";
/// Times the consumer rejoined its group because it owned no partition
/// while records waited unconsumed.
pub const KAFKA_REJOINS_TOTAL: &str = "churn_kafka_rejoins_total";
/// Store calls that ended at their deadline, by backend.
pub const STORE_TIMEOUTS_TOTAL: &str = "churn_store_timeouts_total";

/// What a metric is, for its `# HELP` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric with its kind and help text: the recorder describes each
/// at install, so `/metrics` carries `# HELP` for every family.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        KAFKA_REJOINS_TOTAL,
        Kind::Counter,
        "Times the Kafka consumer rejoined its group: it owned no partition while records waited unconsumed.",
    ),
    (
        STORE_TIMEOUTS_TOTAL,
        Kind::Counter,
        "Store calls that ended at their deadline (store.request_timeout_secs, store.job_timeout_secs), by backend.",
    ),
    (HTTP_CONNECTIONS, Kind::Gauge, "Open HTTP connections."),
    (
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        Kind::Counter,
        "Connections refused because server.max_connections were open.",
    ),
    (
        HTTP_BODY_BYTES_IN_FLIGHT,
        Kind::Gauge,
        "Request-body bytes held in memory.",
    ),
    (
        HTTP_REQUESTS_REFUSED_TOTAL,
        Kind::Counter,
        "Requests refused before a handler ran, by reason (overloaded, body_timeout, too_large, uri_too_long, headers_too_large).",
    ),
    (
        HTTP_REQUESTS_TOTAL,
        Kind::Counter,
        "HTTP requests by route template, method and status.",
    ),
    (
        HTTP_REQUEST_DURATION_SECONDS,
        Kind::Histogram,
        "HTTP request latency by route template.",
    ),
    (
        PREDICTIONS_TOTAL,
        Kind::Counter,
        "Churn probabilities served.",
    ),
    (EVENTS_INGESTED_TOTAL, Kind::Counter, "Events newly stored."),
    (
        EVENTS_DUPLICATE_TOTAL,
        Kind::Counter,
        "Valid events already stored (redeliveries).",
    ),
    (
        EVENTS_REJECTED_TOTAL,
        Kind::Counter,
        "Records refused by validation, by the field at fault.",
    ),
    (
        FEATURE_BUILD_DURATION_SECONDS,
        Kind::Histogram,
        "Feature snapshot build time.",
    ),
    (
        FEATURE_BUILD_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Kind::Gauge,
        "When a feature snapshot was last built.",
    ),
    (
        TRAINING_DURATION_SECONDS,
        Kind::Histogram,
        "Training run time.",
    ),
    (
        TRAINING_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Kind::Gauge,
        "When a training run last succeeded.",
    ),
    (
        JOB_FAILURES_TOTAL,
        Kind::Counter,
        "Failed background jobs, by job.",
    ),
    (
        MODEL_PRODUCTION_VERSION,
        Kind::Gauge,
        "Version of the model serving now.",
    ),
    (
        MODEL_VALIDATION_AUC,
        Kind::Gauge,
        "Validation AUC recorded for the model serving now.",
    ),
    (
        FEATURE_SNAPSHOT_AGE_SECONDS,
        Kind::Gauge,
        "Seconds since the serving snapshot's as-of time.",
    ),
    (
        FEATURE_SNAPSHOT_USERS,
        Kind::Gauge,
        "Users in the serving feature snapshot.",
    ),
    (
        MODEL_SWAPS_TOTAL,
        Kind::Counter,
        "Production models swapped in.",
    ),
    (
        STREAM_RECORDS_TOTAL,
        Kind::Counter,
        "Records read from the event stream.",
    ),
    (
        STREAM_ERRORS_TOTAL,
        Kind::Counter,
        "Event stream failures, by stage.",
    ),
    (
        STREAM_PAUSED,
        Kind::Gauge,
        "1 while stream consumption is paused by failing writes.",
    ),
    (
        STORE_REDELIVERY_LOOKUPS_TOTAL,
        Kind::Counter,
        "Streamed batches whose stored positions were read back because they overlapped a batch begun before.",
    ),
    (
        DEAD_LETTERS_TOTAL,
        Kind::Counter,
        "Records sent to the dead-letter sink.",
    ),
    (
        KAFKA_CONSUMER_LAG,
        Kind::Gauge,
        "Messages behind the high watermark, per topic partition.",
    ),
    (
        KAFKA_REBALANCES_TOTAL,
        Kind::Counter,
        "Consumer group partition assignments and revocations.",
    ),
    (
        FEATURE_PSI,
        Kind::Gauge,
        "PSI of a feature against the production model's training reference.",
    ),
    (
        PREDICTION_PSI,
        Kind::Gauge,
        "PSI of the predicted probabilities against the training reference.",
    ),
    (
        NEW_USER_SHARE,
        Kind::Gauge,
        "Share of serving users absent from the training reference.",
    ),
    (
        DRIFT_ALERT,
        Kind::Gauge,
        "1 when a [monitoring] drift threshold is crossed.",
    ),
    (
        LIVE_LOOKUPS_TOTAL,
        Kind::Counter,
        "Predictions by where their features came from (cached live row, store read, snapshot).",
    ),
    (
        LIVE_FALLBACKS_TOTAL,
        Kind::Counter,
        "Predictions that fell back to the serving snapshot, by reason.",
    ),
    (LIVE_USERS, Kind::Gauge, "Live feature rows held in memory."),
    (
        LIVE_MISMATCH_RATIO,
        Kind::Gauge,
        "Share of sampled users whose live feature value differed from the batch snapshot, per feature.",
    ),
    (
        LIVE_CONSISTENCY_ALERT,
        Kind::Gauge,
        "1 when a feature's live/batch mismatch ratio exceeds features.live_mismatch_alert.",
    ),
    (
        LIVE_CONSISTENCY_CHECKED_USERS,
        Kind::Gauge,
        "Users compared at the last live/batch consistency check.",
    ),
    (
        MLFLOW_EXPORTS_TOTAL,
        Kind::Counter,
        "Versions and alias moves mirrored to MLflow, by outcome.",
    ),
    (
        SCHEDULER_LEADER,
        Kind::Gauge,
        "1 on the replica that holds the scheduler lease and runs the cron jobs.",
    ),
    (
        SCHEDULER_LEASE_TOKEN,
        Kind::Gauge,
        "Fencing token of the scheduler lease as last read.",
    ),
    (
        SCHEDULER_LEASE_TAKEN_TOTAL,
        Kind::Counter,
        "Times this replica took the scheduler lease.",
    ),
    (
        SCHEDULER_TICKS_TOTAL,
        Kind::Counter,
        "Cron ticks seen, by job and outcome (claimed, claimed_elsewhere, follower, busy).",
    ),
    (
        SCHEDULER_FENCED_TOTAL,
        Kind::Counter,
        "Writes of scheduled jobs refused because their lease term had ended.",
    ),
];
