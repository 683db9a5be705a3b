//! Erasure on request (`churn forget`, `DELETE /admin/users/{id}`) and
//! retention by age (`store.retention_days`): what an operator of user
//! data must be able to do. A user's events, feature rows, scores and name
//! leave the store, and the user's id leaves every model version's drift
//! reference sample; each erasure is logged with what it removed.

use std::sync::Arc;

use serde::Serialize;

use crate::application::ports::{ErasedRows, Erasure, ModelRegistry, RegistryError, StoreError};
use crate::domain::time::DAY_SECS;
use crate::domain::user::UserId;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store was erased, but model versions' drift samples were not: {0}")]
    Registry(#[from] RegistryError),
}

/// What one erasure removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureReport {
    /// The users' keys (a string id's key is derived from its name).
    pub users: Vec<u64>,
    #[serde(flatten)]
    pub rows: ErasedRows,
    /// Model versions whose drift reference sample held one of them.
    pub model_versions: usize,
}

/// The erasure and retention use case.
#[derive(Clone)]
pub struct ForgetUsers {
    store: Arc<dyn Erasure>,
    registry: Arc<dyn ModelRegistry>,
}

impl ForgetUsers {
    pub fn new(store: Arc<dyn Erasure>, registry: Arc<dyn ModelRegistry>) -> Self {
        Self { store, registry }
    }

    /// Removes `users` from the store and the registry.
    ///
    /// # Errors
    /// The store or the registry failed; a retry is safe (erasing what is
    /// already gone removes nothing).
    pub async fn forget(&self, users: &[UserId]) -> Result<ErasureReport, ErasureError> {
        let mut keys: Vec<u64> = users.iter().map(UserId::key).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = self.store.forget_users(&keys).await?;
        let model_versions = self.registry.forget_users(&keys).await?;
        // The keys, never the names: the log must not keep what was erased.
        tracing::info!(
            users = ?keys,
            events = rows.events,
            feature_rows = rows.feature_rows,
            predictions = rows.predictions,
            names = rows.names,
            model_versions,
            "users erased"
        );
        Ok(ErasureReport {
            users: keys,
            rows,
            model_versions,
        })
    }

    /// Drops events older than `days` before `now`; how many went.
    ///
    /// # Errors
    /// The store failed.
    pub async fn apply_retention(&self, days: u32, now: i64) -> Result<u64, StoreError> {
        let before = now - i64::from(days) * DAY_SECS;
        let dropped = self.store.drop_events_before(before).await?;
        tracing::info!(
            dropped,
            before = %crate::domain::time::format_rfc3339(before),
            "retention applied"
        );
        Ok(dropped)
    }
}
