//! Cron-driven jobs inside `churn serve` (tokio-cron-scheduler).
//!
//! The scheduler only triggers: the work is `Jobs::run`, the same one-step
//! entry the admin API and tests use, which also refuses overlapping runs.

use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::application::jobs::{JobKind, Jobs};

/// Why the schedule could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression in {key} ({expr:?}): {reason}")]
    Cron {
        key: &'static str,
        expr: String,
        reason: String,
    },
    #[error("scheduler failed: {0}")]
    Scheduler(String),
}

fn cron_job(
    key: &'static str,
    expr: &str,
    jobs: Jobs,
    kind: JobKind,
) -> Result<Job, ScheduleError> {
    Job::new_async(expr, move |_, _| {
        let jobs = jobs.clone();
        Box::pin(async move {
            match jobs.run(kind, "cron").await {
                Ok(record) => tracing::info!(?kind, status = ?record.status, error = ?record.error, "scheduled job finished"),
                Err(e) => tracing::warn!(?kind, error = %e, "scheduled run skipped"),
            }
        })
    })
    .map_err(|e| ScheduleError::Cron {
        key,
        expr: expr.to_string(),
        reason: e.to_string(),
    })
}

/// Checks cron expressions without starting anything.
///
/// # Errors
/// [`ScheduleError::Cron`] naming the key.
pub fn validate_cron(key: &'static str, expr: &str) -> Result<(), ScheduleError> {
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| ScheduleError::Cron {
            key,
            expr: expr.to_string(),
            reason: e.to_string(),
        })
}

/// Runs the cron jobs until `shutdown` is cancelled (a supervised task of
/// `churn serve`).
///
/// # Errors
/// Invalid cron expressions or a scheduler that cannot start.
pub async fn run_schedule(
    jobs: Jobs,
    features_cron: &str,
    retrain_cron: &str,
    shutdown: CancellationToken,
) -> Result<(), ScheduleError> {
    let err = |e: tokio_cron_scheduler::JobSchedulerError| ScheduleError::Scheduler(e.to_string());
    let mut scheduler = JobScheduler::new().await.map_err(err)?;
    scheduler
        .add(cron_job(
            "schedule.features_cron",
            features_cron,
            jobs.clone(),
            JobKind::BuildFeatures,
        )?)
        .await
        .map_err(err)?;
    scheduler
        .add(cron_job(
            "schedule.retrain_cron",
            retrain_cron,
            jobs,
            JobKind::Retrain,
        )?)
        .await
        .map_err(err)?;
    scheduler.start().await.map_err(err)?;
    shutdown.cancelled().await;
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(error = %e, "scheduler shutdown failed");
    }
    Ok(())
}
