//! The ledger of streamed writes (`log_ranges`): a redelivered Kafka
//! record is recognised by its position, looked up only for batches that
//! overlap a range begun before.

use std::collections::{BTreeMap, HashSet};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::sql::{self};
use super::{ClickHouseStore, unavailable};
use crate::application::ports::{LogPosition, StoreError};
use crate::domain::event::Event;

/// An event read from a partitioned log, with its position (006).
#[derive(Debug, Row, Serialize)]
pub(super) struct LoggedEventRow<'a> {
    pub(super) user_id: u64,
    pub(super) event_time: u32,
    pub(super) event_id: i64,
    pub(super) event_type: &'a str,
    pub(super) session_id: Option<&'a str>,
    pub(super) amount: Option<f64>,
    pub(super) log_topic: &'a str,
    pub(super) log_partition: i32,
    pub(super) log_offset: i64,
}

/// One (topic, partition) offset range of a streamed batch (`log_ranges`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct LogRangeRow {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) first_offset: i64,
    pub(super) last_offset: i64,
    pub(super) records: u64,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct StoredPositionRow {
    pub(super) log_partition: i32,
    pub(super) log_offset: i64,
    pub(super) event_id: i64,
}

impl ClickHouseStore {
    /// The `log_ranges` rows overlapping this batch's offset ranges: the
    /// batches begun before whose records this one may repeat.
    pub(super) async fn begun_ranges(
        &self,
        ranges: &BTreeMap<(String, i32), LogRangeRow>,
    ) -> Result<Vec<LogRangeRow>, StoreError> {
        let overlaps: Vec<String> = ranges
            .values()
            .map(|r| {
                format!(
                    "(topic = {} AND partition = {} AND first_offset <= {} AND last_offset >= {})",
                    sql::quote(&r.topic),
                    r.partition,
                    r.last_offset,
                    r.first_offset
                )
            })
            .collect();
        self.client
            .query(&format!(
                "SELECT topic, partition, first_offset, last_offset, records FROM {}.log_ranges WHERE {}",
                self.db,
                overlaps.join(" OR ")
            ))
            .fetch_all()
            .await
            .map_err(unavailable)
    }

    /// Of `suspects` (records in ranges begun before), those already
    /// stored: same topic, partition and offset *and* the same event id (a
    /// recreated topic reuses offsets for other events). The batch's time
    /// range prunes the scan to its months: a redelivered record carries
    /// the same event time as its stored copy.
    pub(super) async fn stored_positions(
        &self,
        suspects: &[(&Event, &LogPosition)],
    ) -> Result<HashSet<(String, i32, i64)>, StoreError> {
        let mut by_topic: BTreeMap<&str, Vec<&(&Event, &LogPosition)>> = BTreeMap::new();
        for s in suspects {
            by_topic.entry(s.1.topic.as_str()).or_default().push(s);
        }
        let mut stored = HashSet::new();
        for (topic, records) in by_topic {
            let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
            for (_, p) in &records {
                let span = spans.entry(p.partition).or_insert((p.offset, p.offset));
                *span = (span.0.min(p.offset), span.1.max(p.offset));
            }
            let first = records
                .iter()
                .map(|(e, _)| e.event_time())
                .min()
                .unwrap_or(0);
            let last = records
                .iter()
                .map(|(e, _)| e.event_time())
                .max()
                .unwrap_or(0);
            let spans: Vec<String> = spans
                .iter()
                .map(|(partition, (lo, hi))| {
                    format!("(log_partition = {partition} AND log_offset >= {lo} AND log_offset <= {hi})")
                })
                .collect();
            let rows: Vec<StoredPositionRow> = self
                .client
                .query(&format!(
                    "SELECT log_partition, log_offset, event_id FROM {}.events \
                     WHERE event_time >= toDateTime({first}) AND event_time <= toDateTime({last}) \
                     AND log_topic = {} AND ({})",
                    self.db,
                    sql::quote(topic),
                    spans.join(" OR ")
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            let ids: HashSet<(i32, i64, i64)> = rows
                .into_iter()
                .map(|r| (r.log_partition, r.log_offset, r.event_id))
                .collect();
            for (e, p) in records {
                if ids.contains(&(p.partition, p.offset, e.event_id())) {
                    stored.insert((p.topic.clone(), p.partition, p.offset));
                }
            }
        }
        Ok(stored)
    }
}
