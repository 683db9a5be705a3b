//! Supervision of the long-running tasks of `churn serve` (the Kafka
//! consumer, the registry poll, the scheduler): a task that ends before
//! shutdown — returns or panics — is logged, shown in `/readyz` through
//! [`TaskHealth`], and restarted with capped exponential backoff up to
//! `max_restarts` times; then [`supervise`] gives up with [`TaskFailed`] and
//! the server exits non-zero, so an orchestrator restarts the process.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Where a supervised task is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    Running,
    /// Ended unexpectedly; restarts after a backoff.
    Restarting {
        restarts: u32,
        last_error: String,
    },
    /// Ended unexpectedly too often; the process is stopping.
    Failed {
        restarts: u32,
        last_error: String,
    },
}

/// The state of every supervised task, for `/readyz`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth {
    tasks: Arc<Mutex<BTreeMap<&'static str, TaskState>>>,
}

impl TaskHealth {
    fn set(&self, name: &'static str, state: TaskState) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, state);
    }

    /// Every task and its state, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, TaskState> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tasks that are not running, with why (for `/readyz` problems).
    pub fn problems(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter_map(|(name, state)| match state {
                TaskState::Running => None,
                TaskState::Restarting {
                    restarts,
                    last_error,
                } => Some(format!(
                    "task {name} ended unexpectedly ({last_error}); restart {restarts} pending"
                )),
                TaskState::Failed {
                    restarts,
                    last_error,
                } => Some(format!(
                    "task {name} failed after {restarts} restarts ({last_error})"
                )),
            })
            .collect()
    }
}

/// How often and how fast a task is restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A task that kept ending unexpectedly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task {name} ended unexpectedly {restarts} times; last: {last_error}")]
pub struct TaskFailed {
    pub name: &'static str,
    pub restarts: u32,
    pub last_error: String,
}

/// Runs `start()` until `shutdown`, restarting it when it ends early (see
/// the module docs). Each run is its own tokio task, so a panic is caught
/// as an ending, not a crash of the supervisor. `Ok` once shut down.
///
/// # Errors
/// [`TaskFailed`] after `policy.max_restarts` restarts.
pub async fn supervise<F, Fut>(
    name: &'static str,
    health: TaskHealth,
    policy: RestartPolicy,
    shutdown: CancellationToken,
    mut start: F,
) -> Result<(), TaskFailed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut restarts = 0u32;
    let mut backoff = policy.initial_backoff;
    loop {
        health.set(name, TaskState::Running);
        let run = tokio::spawn(start());
        let ended = run.await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let last_error = match ended {
            Ok(Ok(())) => "returned".to_string(),
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => "panicked".to_string(),
            Err(e) => e.to_string(),
        };
        if restarts >= policy.max_restarts {
            tracing::error!(task = name, restarts, %last_error, "task failed for good");
            health.set(
                name,
                TaskState::Failed {
                    restarts,
                    last_error: last_error.clone(),
                },
            );
            return Err(TaskFailed {
                name,
                restarts,
                last_error,
            });
        }
        restarts += 1;
        tracing::error!(task = name, restarts, %last_error, ?backoff, "task ended unexpectedly; restarting");
        health.set(
            name,
            TaskState::Restarting {
                restarts,
                last_error,
            },
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dying_task_is_restarted_with_backoff_then_given_up() {
        let health = TaskHealth::default();
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let began = tokio::time::Instant::now();
        let result = supervise(
            "consumer",
            health.clone(),
            policy(3),
            CancellationToken::new(),
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                async { Err("broker gone".to_string()) }
            },
        )
        .await;
        let failed = result.unwrap_err();
        assert_eq!((failed.name, failed.restarts), ("consumer", 3));
        assert_eq!(starts.load(Ordering::SeqCst), 4, "first run + 3 restarts");
        // Backoff 1 s, 2 s, 4 s (capped): 7 s of paused time.
        assert_eq!(began.elapsed(), Duration::from_secs(7));
        assert!(matches!(
            health.snapshot()["consumer"],
            TaskState::Failed { restarts: 3, .. }
        ));
        assert!(health.problems()[0].contains("consumer"));
    }

    #[tokio::test(start_paused = true)]
    async fn panics_count_as_endings_and_shutdown_stops_cleanly() {
        let health = TaskHealth::default();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let stop = shutdown.clone();
        let supervisor = tokio::spawn(supervise(
            "poll",
            health.clone(),
            policy(10),
            shutdown.clone(),
            move || {
                let n = s.fetch_add(1, Ordering::SeqCst);
                let stop = stop.clone();
                async move {
                    if n == 0 {
                        panic!("first run panics");
                    }
                    // The restarted run lives until shutdown.
                    stop.cancelled().await;
                    Ok(())
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(matches!(
            health.snapshot()["poll"],
            TaskState::Restarting { restarts: 1, ref last_error } if last_error == "panicked"
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(health.snapshot()["poll"], TaskState::Running);
        assert!(health.problems().is_empty());
        shutdown.cancel();
        assert!(supervisor.await.unwrap().is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}
