//! Cron-driven jobs inside `churn serve` (tokio-cron-scheduler).
//!
//! The scheduler only triggers: the work is `Jobs::run`, the same one-step
//! entry the admin API and tests use, which also refuses overlapping runs.
//! With a [`Leadership`], every replica keeps the same cron but only the
//! lease holder claims a tick and runs it, carrying the lease's fence.

use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::application::jobs::{JobKind, Jobs};
use crate::application::leadership::Leadership;
use crate::telemetry::metric_names;

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

/// How long tick claims are kept: far longer than any replica could lag
/// behind the schedule.
const KEEP_CLAIMS_SECS: i64 = 7 * 86_400;

/// One cron firing: with a lease, claim the tick first (followers and
/// ticks another leader took are skipped).
async fn fire(jobs: Jobs, kind: JobKind, leadership: Option<Leadership>) {
    // The cron's resolution is a second and it fires just after the
    // second it is due: the floor of now is the scheduled second.
    let tick = chrono::Utc::now().timestamp();
    if let Some(lead) = &leadership
        && lead.token().is_none()
    {
        // Another replica leads (counted by `claim`).
        let _ = lead.claim(kind.name(), tick).await;
        return;
    }
    // The previous run overran the interval: skip this tick here, before
    // claiming it, so a claimed tick always means a run.
    if jobs.is_running(kind) {
        metrics::counter!(metric_names::SCHEDULER_TICKS_TOTAL, "job" => kind.name(), "outcome" => "busy").increment(1);
        tracing::warn!(
            ?kind,
            tick,
            "scheduled tick skipped: the previous run is still going"
        );
        return;
    }
    let fence = match &leadership {
        None => None,
        Some(lead) => match lead.claim(kind.name(), tick).await {
            Ok(Some(fence)) => Some(fence),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(?kind, tick, error = %e, "scheduled tick not claimed; skipped");
                return;
            }
        },
    };
    let trigger = match &fence {
        Some(f) => format!("cron tick {tick} (lease token {})", f.token()),
        None => "cron".to_string(),
    };
    match jobs.run_fenced(kind, &trigger, fence.as_ref()).await {
        Ok(record) => {
            tracing::info!(?kind, tick, status = ?record.status, error = ?record.error, "scheduled job finished")
        }
        Err(e) => tracing::warn!(?kind, tick, error = %e, "scheduled run skipped"),
    }
    // Old claims only guard ticks that cannot fire again: drop them now
    // and then (a listing per hour of schedule at most).
    if let Some(lead) = &leadership
        && tick % 3_600 == 0
        && let Err(e) = lead
            .forget_ticks(kind.name(), tick - KEEP_CLAIMS_SECS)
            .await
    {
        tracing::warn!(error = %e, "old tick claims not pruned");
    }
}

fn cron_job(
    key: &'static str,
    expr: &str,
    jobs: Jobs,
    kind: JobKind,
    leadership: Option<Leadership>,
) -> Result<Job, ScheduleError> {
    Job::new_async(expr, move |_, _| {
        Box::pin(fire(jobs.clone(), kind, leadership.clone()))
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
    leadership: Option<Leadership>,
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
            leadership.clone(),
        )?)
        .await
        .map_err(err)?;
    scheduler
        .add(cron_job(
            "schedule.retrain_cron",
            retrain_cron,
            jobs,
            JobKind::Retrain,
            leadership,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::application::ports::{EventStore, FeatureStore};
    use crate::domain::event::{Event, TimePolicy};
    use crate::testing::MemoryStore;

    #[test]
    fn cron_expressions_are_checked_by_key() {
        assert!(validate_cron("schedule.features_cron", "0 */15 * * * *").is_ok());
        let err = validate_cron("schedule.retrain_cron", "every 5 minutes").unwrap_err();
        assert!(err.to_string().contains("schedule.retrain_cron"), "{err}");
    }

    /// tokio-cron-scheduler computes fire times from the wall clock
    /// (chrono), so paused tokio time cannot drive it: this runs in real
    /// time, a second-granular schedule for about 2.5 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_schedule_triggers_jobs_and_stops_on_shutdown() {
        let store = MemoryStore::new(3);
        let now = chrono::Utc::now().timestamp();
        let event = Event::new(1, now - 60, "login", None, None, TimePolicy::at(now, 0)).unwrap();
        store.append(vec![event]).await.unwrap();
        let jobs = crate::testing::memory_jobs(&store);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_schedule(
            jobs,
            "* * * * * *",
            "0 0 0 1 1 *",
            None,
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the schedule stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(
            !store.snapshots().await.unwrap().is_empty(),
            "the every-second feature build ran"
        );
    }
}
