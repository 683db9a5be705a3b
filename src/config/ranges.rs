//! Range checks for every number in the settings: a value outside its
//! range is refused by `check-config` and at start-up, never met later as
//! a panic or a failed training run.

use std::fmt::Display;

use super::{ConfigError, Settings, invalid};

fn within<T: PartialOrd + Display + Copy>(
    key: &'static str,
    value: T,
    low: T,
    high: T,
) -> Result<(), ConfigError> {
    if value >= low && value <= high {
        Ok(())
    } else {
        Err(invalid(key, format!("{value} is outside {low}..={high}")))
    }
}

fn non_negative(key: &'static str, value: f32) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value} must be a finite number >= 0"),
        ))
    }
}

const DAY_SECS: u64 = 86_400;
const TEN_YEARS_DAYS: u32 = 3_650;
/// Above this, bytes are a typo (and beyond any semaphore's capacity).
const MAX_BYTES: usize = 1 << 40;

impl Settings {
    /// Every numeric setting within its range.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(crate) fn check_ranges(&self) -> Result<(), ConfigError> {
        within(
            "store.snapshot_retention",
            self.store.snapshot_retention,
            1,
            1_000,
        )?;
        within(
            "store.request_timeout_secs",
            self.store.request_timeout_secs,
            1,
            3_600,
        )?;
        within("store.retention_days", self.store.retention_days, 0, 36_500)?;
        within(
            "store.job_timeout_secs",
            self.store.job_timeout_secs,
            1,
            7 * 86_400,
        )?;
        within(
            "registry.s3_timeout_secs",
            self.registry.s3_timeout_secs,
            1,
            3_600,
        )?;
        within("ingest.batch_size", self.ingest.batch_size, 1, 1_000_000)?;
        within(
            "ingest.max_future_skew_secs",
            self.ingest.max_future_skew_secs,
            0,
            (366 * DAY_SECS) as i64,
        )?;
        let t = &self.training;
        within("training.horizon_days", t.horizon_days, 1, TEN_YEARS_DAYS)?;
        within("training.lookback_days", t.lookback_days, 1, TEN_YEARS_DAYS)?;
        within("training.min_events", t.min_events, 1, 1_000_000)?;
        within("training.train_snapshots", t.train_snapshots, 1, 520)?;
        within(
            "training.snapshot_step_days",
            t.snapshot_step_days,
            1,
            TEN_YEARS_DAYS,
        )?;
        if t.max_training_rows != 0 && t.max_training_rows < 1_000 {
            return Err(invalid(
                "training.max_training_rows",
                format!(
                    "{} is too few rows to train and validate on: 1000 or more, or 0 for no cap",
                    t.max_training_rows
                ),
            ));
        }
        within("training.gbdt.iterations", t.gbdt.iterations, 1, 100_000)?;
        within("training.gbdt.max_depth", t.gbdt.max_depth, 1, 32)?;
        non_negative("training.gbdt.l2", t.gbdt.l2)?;
        non_negative("training.gbdt.min_leaf_weight", t.gbdt.min_leaf_weight)?;
        let f = &self.features;
        within(
            "features.live_max_users",
            f.live_max_users,
            1,
            1_000_000_000,
        )?;
        within(
            "features.live_max_user_events",
            f.live_max_user_events,
            1,
            100_000_000,
        )?;
        within(
            "features.live_max_concurrent_reads",
            f.live_max_concurrent_reads,
            1,
            4_096,
        )?;
        within(
            "features.live_read_timeout_ms",
            f.live_read_timeout_ms,
            1,
            600_000,
        )?;
        within(
            "features.live_check_sample",
            f.live_check_sample,
            0,
            1_000_000,
        )?;
        within("features.live_settle_ms", f.live_settle_ms, 10, 600_000)?;
        within(
            "features.live_mismatch_alert",
            f.live_mismatch_alert,
            0.0,
            1.0,
        )?;
        let m = &self.monitoring;
        within(
            "monitoring.feature_psi_alert",
            m.feature_psi_alert,
            0.0,
            100.0,
        )?;
        within(
            "monitoring.prediction_psi_alert",
            m.prediction_psi_alert,
            0.0,
            100.0,
        )?;
        within(
            "monitoring.new_user_share_alert",
            m.new_user_share_alert,
            0.0,
            1.0,
        )?;
        let s = &self.server;
        within(
            "schedule.lease_ttl_secs",
            self.schedule.lease_ttl_secs,
            1,
            DAY_SECS,
        )?;
        within(
            "server.registry_poll_ms",
            s.registry_poll_ms,
            0,
            DAY_SECS * 1_000,
        )?;
        within("server.max_batch_users", s.max_batch_users, 1, 1_000_000)?;
        within("server.max_body_bytes", s.max_body_bytes, 1024, 1 << 30)?;
        within(
            "server.max_inflight_body_bytes",
            s.max_inflight_body_bytes,
            s.max_body_bytes,
            MAX_BYTES,
        )?;
        within(
            "server.body_read_timeout_secs",
            s.body_read_timeout_secs,
            1,
            3_600,
        )?;
        within(
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            1,
            3_600,
        )?;
        within("server.max_connections", s.max_connections, 1, 1_000_000)?;
        within(
            "server.max_concurrent_requests",
            s.max_concurrent_requests,
            1,
            1_000_000,
        )?;
        within(
            "server.max_concurrent_store_requests",
            s.max_concurrent_store_requests,
            1,
            1_000_000,
        )?;
        within("server.probe_timeout_ms", s.probe_timeout_ms, 10, 60_000)?;
        within(
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            0,
            3_600,
        )?;
        let k = &self.kafka;
        within("kafka.batch_max_events", k.batch_max_events, 1, 1_000_000)?;
        within("kafka.batch_max_wait_ms", k.batch_max_wait_ms, 1, 600_000)?;
        within(
            "kafka.commit_interval_ms",
            k.commit_interval_ms,
            0,
            3_600_000,
        )?;
        within(
            "kafka.session_timeout_ms",
            k.session_timeout_ms,
            1_000,
            3_600_000,
        )?;
        within(
            "kafka.max_poll_interval_ms",
            k.max_poll_interval_ms,
            1_000,
            86_400_000,
        )?;
        // librdkafka's own bounds.
        within("kafka.queued_max_kbytes", k.queued_max_kbytes, 1, 2_097_151)?;
        within(
            "kafka.statistics_interval_ms",
            k.statistics_interval_ms,
            0,
            86_400_000,
        )?;
        within("kafka.retry_initial_ms", k.retry_initial_ms, 1, 3_600_000)?;
        within(
            "kafka.retry_max_ms",
            k.retry_max_ms,
            k.retry_initial_ms,
            3_600_000,
        )?;
        within("mlflow.timeout_secs", self.mlflow.timeout_secs, 1, 600)?;
        within("mlflow.attempts", self.mlflow.attempts, 1, 20)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range_and_extremes_are_not() {
        Settings::default().check_ranges().unwrap();
        type Set = Box<dyn Fn(&mut Settings)>;
        let cases: Vec<(&str, Set)> = vec![
            (
                "server.max_concurrent_requests",
                Box::new(|s| s.server.max_concurrent_requests = 9_223_372_036_854_775_807),
            ),
            ("training.gbdt.l2", Box::new(|s| s.training.gbdt.l2 = -1.0)),
            (
                "training.gbdt.min_leaf_weight",
                Box::new(|s| s.training.gbdt.min_leaf_weight = f32::NAN),
            ),
            (
                "server.max_inflight_body_bytes",
                Box::new(|s| s.server.max_inflight_body_bytes = 10),
            ),
            ("kafka.retry_max_ms", Box::new(|s| s.kafka.retry_max_ms = 1)),
            (
                "training.horizon_days",
                Box::new(|s| s.training.horizon_days = 100_000),
            ),
            (
                "training.max_training_rows",
                Box::new(|s| s.training.max_training_rows = 999),
            ),
            (
                "features.live_max_concurrent_reads",
                Box::new(|s| s.features.live_max_concurrent_reads = 0),
            ),
            (
                "features.live_mismatch_alert",
                Box::new(|s| s.features.live_mismatch_alert = f64::NAN),
            ),
            (
                "features.live_settle_ms",
                Box::new(|s| s.features.live_settle_ms = 0),
            ),
        ];
        for (key, set) in cases {
            let mut s = Settings::default();
            set(&mut s);
            let err = s.check_ranges().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        // 0 means no cap, not too few rows.
        let mut s = Settings::default();
        s.training.max_training_rows = 0;
        s.check_ranges().unwrap();
    }
}
