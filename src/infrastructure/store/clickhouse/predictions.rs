//! Batch scores to `churn.predictions` (`churn score` in ClickHouse mode).

use async_trait::async_trait;
use clickhouse::Row;
use serde::Serialize;

use super::{ClickHouseStore, datetime, unavailable};
use crate::application::ports::{PredictionSink, ScoredUser, StoreError};

#[derive(Debug, Row, Serialize)]
struct PredictionRow<'a> {
    features_as_of: u32,
    model_version: u64,
    user_id: u64,
    scored_at: u32,
    churn_probability: f64,
    raw_probability: f64,
    reasons: String,
    user_name: &'a str,
}

#[async_trait]
impl PredictionSink for ClickHouseStore {
    async fn write(&self, scored_at: i64, rows: &[ScoredUser]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let scored_at = datetime("scored_at", scored_at)?;
        let mut insert = self
            .client
            .insert_unescaped::<PredictionRow>(&format!("{}.predictions", self.db))
            .await
            .map_err(unavailable)?;
        for r in rows {
            let as_of =
                crate::domain::time::parse_timestamp(&r.features_as_of).ok_or_else(|| {
                    StoreError::Corrupt(format!("features_as_of {:?}", r.features_as_of))
                })?;
            insert
                .write(&PredictionRow {
                    features_as_of: datetime("features_as_of", as_of)?,
                    model_version: r.model_version,
                    user_id: r.user_id.key(),
                    scored_at,
                    churn_probability: r.churn_probability,
                    raw_probability: r.raw_probability,
                    reasons: serde_json::to_string(&r.reasons)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    user_name: r.user_id.as_name().unwrap_or_default(),
                })
                .await
                .map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(rows.len() as u64)
    }
}
