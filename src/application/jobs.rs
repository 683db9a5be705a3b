//! Background jobs started by the admin API or the scheduler: feature
//! rebuilds and retraining, each followed by a serving-state reload.
//!
//! One run of each kind at a time: a second request while one runs is
//! refused ([`JobError::Busy`]), not queued, so cron ticks and admin calls
//! never stack up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::application::build_features::{AsOf, BuildFeatures};
use crate::application::leadership::Fence;
use crate::application::live_features::LiveFeatures;
use crate::application::manage_models::ManageModels;
use crate::application::ports::FeatureStore;
use crate::application::serving_state::ServingState;
use crate::application::train::{TrainError, TrainModel};

/// Which job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    BuildFeatures,
    Retrain,
}

impl JobKind {
    /// The name used in tick claims and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::BuildFeatures => "build_features",
            Self::Retrain => "retrain",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

/// A job's record, as `GET /admin/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: u64,
    pub kind: JobKind,
    pub status: JobStatus,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("a {0:?} job is already running")]
    Busy(JobKind),
}

/// How many finished jobs are remembered.
const KEEP_JOBS: usize = 200;

#[derive(Default)]
struct Table {
    next_id: u64,
    jobs: HashMap<u64, JobRecord>,
    running: HashMap<JobKind, u64>,
}

/// Starts jobs and tracks their records.
#[derive(Clone)]
pub struct Jobs {
    table: Arc<Mutex<Table>>,
    build: BuildFeatures,
    train: TrainModel,
    models: ManageModels,
    features: Arc<dyn FeatureStore>,
    state: ServingState,
    as_of: AsOf,
    /// Checked against each snapshot swapped in, when on.
    live: Option<LiveFeatures>,
    /// `store.retention_days`, applied before each feature rebuild.
    retention: Option<(crate::application::erasure::ForgetUsers, u32)>,
}

impl Jobs {
    pub fn new(
        build: BuildFeatures,
        train: TrainModel,
        models: ManageModels,
        features: Arc<dyn FeatureStore>,
        state: ServingState,
    ) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table::default())),
            build,
            train,
            models,
            features,
            state,
            as_of: AsOf::Now,
            live: None,
            retention: None,
        }
    }

    /// Drop events older than `days` (by the wall clock) before each
    /// feature rebuild, scheduled or asked for.
    pub fn with_retention(
        mut self,
        forget: crate::application::erasure::ForgetUsers,
        days: u32,
    ) -> Self {
        self.retention = (days > 0).then_some((forget, days));
        self
    }

    /// When feature rebuilds compute as of (`schedule.features_as_of`):
    /// now for a live stream, the end of the data for a historic log.
    pub fn with_features_as_of(mut self, as_of: AsOf) -> Self {
        self.as_of = as_of;
        self
    }

    /// After each feature rebuild, compare live features with the new
    /// snapshot ([`LiveFeatures::check`]).
    pub fn with_live(mut self, live: LiveFeatures) -> Self {
        self.live = live.enabled().then_some(live);
        self
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds plain data; a panic mid-update cannot break it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: u64) -> Option<JobRecord> {
        self.table().jobs.get(&id).cloned()
    }

    /// The `limit` newest jobs, newest first.
    pub fn recent(&self, limit: usize) -> Vec<JobRecord> {
        let t = self.table();
        let mut ids: Vec<u64> = t.jobs.keys().copied().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.into_iter()
            .take(limit)
            .filter_map(|id| t.jobs.get(&id).cloned())
            .collect()
    }

    /// Whether a job of `kind` is running here (the schedule skips a tick
    /// rather than claim one it cannot run).
    pub fn is_running(&self, kind: JobKind) -> bool {
        self.table().running.contains_key(&kind)
    }

    fn claim(&self, kind: JobKind, trigger: &str) -> Result<JobRecord, JobError> {
        let mut t = self.table();
        if t.running.contains_key(&kind) {
            return Err(JobError::Busy(kind));
        }
        t.next_id += 1;
        let record = JobRecord {
            id: t.next_id,
            kind,
            status: JobStatus::Running,
            trigger: trigger.to_string(),
            started_at: chrono::Utc::now().to_rfc3339(),
            finished_at: None,
            result: None,
            error: None,
        };
        t.running.insert(kind, record.id);
        t.jobs.insert(record.id, record.clone());
        if t.jobs.len() > KEEP_JOBS {
            let oldest = t.jobs.keys().min().copied();
            if let Some(oldest) = oldest {
                t.jobs.remove(&oldest);
            }
        }
        Ok(record)
    }

    fn finish(&self, kind: JobKind, id: u64, result: Result<serde_json::Value, String>) {
        let mut t = self.table();
        t.running.remove(&kind);
        if let Some(r) = t.jobs.get_mut(&id) {
            r.finished_at = Some(chrono::Utc::now().to_rfc3339());
            match result {
                Ok(v) => {
                    r.status = JobStatus::Succeeded;
                    r.result = Some(v);
                }
                Err(e) => {
                    r.status = JobStatus::Failed;
                    r.error = Some(e);
                }
            }
        }
    }

    /// Starts a job in the background and returns its record at once.
    ///
    /// # Errors
    /// [`JobError::Busy`] if one of the same kind is running.
    pub fn start(&self, kind: JobKind, trigger: &str) -> Result<JobRecord, JobError> {
        let record = self.claim(kind, trigger)?;
        let this = self.clone();
        let id = record.id;
        tokio::spawn(async move {
            let result = this.execute(kind, None).await;
            this.finish(kind, id, result);
        });
        Ok(record)
    }

    /// Runs a job to completion on the caller's task (scheduler, tests).
    ///
    /// # Errors
    /// [`JobError::Busy`] if one of the same kind is running.
    pub async fn run(&self, kind: JobKind, trigger: &str) -> Result<JobRecord, JobError> {
        self.run_fenced(kind, trigger, None).await
    }

    /// As [`Jobs::run`] for a scheduled tick claimed under a lease: the
    /// job's writes carry `fence` and are refused once another replica
    /// leads.
    ///
    /// # Errors
    /// [`JobError::Busy`] if one of the same kind is running.
    pub async fn run_fenced(
        &self,
        kind: JobKind,
        trigger: &str,
        fence: Option<&Fence>,
    ) -> Result<JobRecord, JobError> {
        let record = self.claim(kind, trigger)?;
        let result = self.execute(kind, fence).await;
        self.finish(kind, record.id, result);
        Ok(self.get(record.id).unwrap_or(record))
    }

    /// Compares live features with the snapshot now serving, in the
    /// background (a sample of store reads; the job does not wait).
    pub fn check_live(&self) {
        if let (Some(live), Some(snapshot)) = (&self.live, self.state.features()) {
            let live = live.clone();
            tokio::spawn(async move {
                live.check(&snapshot).await;
            });
        }
    }

    async fn execute(
        &self,
        kind: JobKind,
        fence: Option<&Fence>,
    ) -> Result<serde_json::Value, String> {
        match kind {
            JobKind::BuildFeatures => {
                // Checked before only: a snapshot a stale leader finishes
                // is still a correct snapshot of the data (snapshots are
                // append-only and chosen by date), so it corrupts nothing.
                if let Some(f) = fence {
                    f.check().await.map_err(|e| e.to_string())?;
                }
                let dropped = match &self.retention {
                    Some((forget, days)) => Some(
                        forget
                            .apply_retention(*days, chrono::Utc::now().timestamp())
                            .await
                            .map_err(|e| format!("retention (store.retention_days): {e}"))?,
                    ),
                    None => None,
                };
                let summary = self
                    .build
                    .run(self.as_of)
                    .await
                    .map_err(|e| e.to_string())?;
                // The snapshot just built, which is the newest the rule
                // allows.
                self.state
                    .reload_features(&*self.features, Some(summary.summary.as_of))
                    .await
                    .map_err(|e| format!("snapshot built but not loaded: {e}"))?;
                self.check_live();
                let mut value = serde_json::to_value(summary).map_err(|e| e.to_string())?;
                if let Some(dropped) = dropped {
                    value["retention_dropped_events"] = dropped.into();
                }
                Ok(value)
            }
            JobKind::Retrain => {
                let report = match self.train.run_fenced(fence).await {
                    Ok(r) => r,
                    Err(TrainError::Busy) => return Err("training already in progress".into()),
                    Err(e) => return Err(e.to_string()),
                };
                // The server's own runs have no terminal to print on: the
                // log is where their warnings go (the CLI prints its own).
                for w in &report.warnings {
                    tracing::warn!(version = report.version, "{w}");
                }
                let reload = self.state.reload_model(&self.models).await.map_err(|e| {
                    format!("version {} trained but not loaded: {e}", report.version)
                })?;
                let mut value = serde_json::to_value(report).map_err(|e| e.to_string())?;
                value["reload"] = serde_json::to_value(reload).map_err(|e| e.to_string())?;
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::EventStore;
    use crate::domain::event::{Event, TimePolicy};
    use crate::testing::MemoryStore;

    /// A server replaying a historic log rebuilds as of the log's end.
    #[tokio::test]
    async fn rebuilds_follow_the_configured_as_of() {
        let store = MemoryStore::new(3);
        let t = 800_000_000;
        let e = Event::new(1, t, "purchase", None, None, TimePolicy::at(t, 0)).unwrap();
        store.append(vec![e]).await.unwrap();
        let jobs = crate::testing::memory_jobs(&store).with_features_as_of(AsOf::EndOfData);
        let record = jobs.run(JobKind::BuildFeatures, "test").await.unwrap();
        assert_eq!(record.status, JobStatus::Succeeded, "{:?}", record.error);
        assert_eq!(record.result.unwrap()["as_of"], t);
    }
}
