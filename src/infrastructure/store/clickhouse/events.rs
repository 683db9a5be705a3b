//! The event port on ClickHouse: batched RowBinary inserts, redeliveries
//! filtered before the insert (by position for streamed batches, see
//! [`super::ledger`]; by identity otherwise), names of string-keyed users,
//! reject counts.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::ledger::{LogRangeRow, LoggedEventRow};
use super::{ClickHouseStore, datetime, unavailable};
use crate::application::ports::{
    AppendOutcome, EventStats, EventStore, LogPosition, RejectTally, StoreError, TypeCount,
};
use crate::domain::event::Event;

/// Rows borrow their strings from the events: an insert of a batch
/// allocates nothing per row.
#[derive(Debug, Row, Serialize)]
pub(super) struct EventRow<'a> {
    pub(super) user_id: u64,
    pub(super) event_time: u32,
    pub(super) event_id: i64,
    pub(super) event_type: &'a str,
    pub(super) session_id: Option<&'a str>,
    pub(super) amount: Option<f64>,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct StatsRow {
    pub(super) events: u64,
    pub(super) users: u64,
    pub(super) first: u32,
    pub(super) last: u32,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct TypeCountRow {
    pub(super) event_type: String,
    pub(super) events: u64,
    pub(super) users: u64,
    pub(super) with_amount: u64,
    pub(super) with_session: u64,
    pub(super) with_negative_amount: u64,
    pub(super) positive_amount_sum: f64,
    pub(super) negative_amount_sum: f64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
pub(super) struct NameRow {
    pub(super) user_key: u64,
    pub(super) name: String,
}

#[derive(Debug, Row, Serialize)]
pub(super) struct RejectRow<'a> {
    pub(super) source: &'a str,
    pub(super) field: &'a str,
    pub(super) count: u64,
    pub(super) example: &'a str,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct RejectTallyRow {
    pub(super) source: String,
    pub(super) field: String,
    pub(super) count: u64,
    pub(super) example: String,
}

/// Keys per `IN` list of a name lookup (18.16 parses each literal at
/// about 8 µs, and caps a query's syntax tree at 50,000 elements).
const KEYS_PER_LOOKUP: usize = 20_000;

impl ClickHouseStore {
    /// Event ids of `events` that are already stored, checked in slices
    /// of 20,000 events.
    ///
    /// Why no list of the batch's ids in the query: ClickHouse parses each
    /// literal of an `IN` list (about 8 µs an id on this machine, and
    /// 18.16 caps a query's syntax tree at 50,000 elements), which made the
    /// check ten times the insert. Instead the query names the slice's
    /// users and its time span and returns the ids stored there; the
    /// client intersects. user_id leads the sort key and event_time the
    /// partition key, so it reads only those users' granules in the
    /// slice's months. New data (the steady state) returns nothing and a
    /// redelivered slice its own ids. What else could come back (a
    /// shuffled file: every user's whole stored history) is capped: past
    /// [`STORED_IDS_PER_SLICE`] the slice is checked by its ids instead.
    pub(super) async fn existing_ids(&self, events: &[Event]) -> Result<HashSet<i64>, StoreError> {
        let mut found = HashSet::new();
        for slice in events.chunks(EVENTS_PER_CHECK) {
            let mut users: Vec<u64> = slice.iter().map(Event::user_id).collect();
            users.sort_unstable();
            users.dedup();
            let users: Vec<String> = users.iter().map(u64::to_string).collect();
            let first = slice.iter().map(Event::event_time).min().unwrap_or(0);
            let last = slice.iter().map(Event::event_time).max().unwrap_or(0);
            let scope = format!(
                "FROM {}.events WHERE user_id IN ({}) \
                 AND event_time >= toDateTime({first}) AND event_time <= toDateTime({last})",
                self.db,
                users.join(",")
            );
            let rows: Vec<i64> = self
                .client
                .query(&format!(
                    "SELECT event_id {scope} LIMIT {}",
                    STORED_IDS_PER_SLICE + 1
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            if rows.len() <= STORED_IDS_PER_SLICE {
                found.extend(rows);
                continue;
            }
            let ids: Vec<String> = slice.iter().map(|e| e.event_id().to_string()).collect();
            let rows: Vec<i64> = self
                .client
                .query(&format!(
                    "SELECT event_id {scope} AND event_id IN ({})",
                    ids.join(",")
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// The stored names of up to [`KEYS_PER_LOOKUP`] keys.
    pub(super) async fn names_of(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        if keys.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let list: Vec<String> = keys.iter().map(u64::to_string).collect();
        let rows: Vec<NameRow> = self
            .client
            .query(&format!(
                "SELECT user_key, any(name) AS name FROM {}.user_names WHERE user_key IN ({}) GROUP BY user_key",
                self.db,
                list.join(",")
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| (r.user_key, r.name)).collect())
    }
}

/// Events per redelivery check query (file, HTTP and generator batches).
const EVENTS_PER_CHECK: usize = 20_000;

/// Stored ids one check may bring back before the slice is checked by its
/// own ids instead: bounds the client's memory (about 1 MB) whatever the
/// batch's shape.
pub const STORED_IDS_PER_SLICE: usize = 4 * EVENTS_PER_CHECK;

#[async_trait]
impl EventStore for ClickHouseStore {
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError> {
        let total = events.len() as u64;
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let existing = if self.dedup_check {
            self.existing_ids(&events).await?
        } else {
            HashSet::new()
        };
        let mut seen = HashSet::with_capacity(events.len());
        let mut insert = self
            .client
            .insert_unescaped::<EventRow<'_>>(&format!("{}.events", self.db))
            .await
            .map_err(unavailable)?;
        let mut inserted = 0u64;
        for e in &events {
            let id = e.event_id();
            if existing.contains(&id) || !seen.insert(id) {
                continue;
            }
            let row = EventRow {
                user_id: e.user_id(),
                event_time: u32::try_from(e.event_time()).map_err(|_| {
                    StoreError::Corrupt(format!("event_time {} outside DateTime", e.event_time()))
                })?,
                event_id: id,
                event_type: e.event_type(),
                session_id: e.session_id(),
                amount: e.amount(),
            };
            insert.write(&row).await.map_err(unavailable)?;
            inserted += 1;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(AppendOutcome {
            inserted,
            duplicates: total - inserted,
        })
    }

    /// Streamed batches: a redelivery is recognised by position, not by
    /// event id. Steady state costs one lookup in the small `log_ranges`
    /// ledger and one ledger insert; only a batch overlapping a range begun
    /// before (after a crash, a lost insert response, a rebalance) reads
    /// positions back from `events`. The ledger row goes in *before* the
    /// events, so a write that fails half way is always looked up on retry.
    async fn append_from_log(
        &self,
        events: &[Event],
        positions: &[LogPosition],
    ) -> Result<AppendOutcome, StoreError> {
        if positions.len() != events.len() {
            return self.append(events.to_vec()).await;
        }
        let total = events.len() as u64;
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut ranges: BTreeMap<(String, i32), LogRangeRow> = BTreeMap::new();
        for p in positions {
            let r = ranges
                .entry((p.topic.clone(), p.partition))
                .or_insert_with(|| LogRangeRow {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    first_offset: p.offset,
                    last_offset: p.offset,
                    records: 0,
                });
            r.first_offset = r.first_offset.min(p.offset);
            r.last_offset = r.last_offset.max(p.offset);
            r.records += 1;
        }
        let stored = if self.dedup_check {
            let begun = self.begun_ranges(&ranges).await?;
            let suspects: Vec<(&Event, &LogPosition)> = events
                .iter()
                .zip(positions)
                .filter(|(_, p)| {
                    begun.iter().any(|r| {
                        r.topic == p.topic
                            && r.partition == p.partition
                            && (r.first_offset..=r.last_offset).contains(&p.offset)
                    })
                })
                .collect();
            if suspects.is_empty() {
                HashSet::new()
            } else {
                metrics::counter!(crate::telemetry::metric_names::STORE_REDELIVERY_LOOKUPS_TOTAL)
                    .increment(1);
                self.stored_positions(&suspects).await?
            }
        } else {
            HashSet::new()
        };
        // A producer's event id is the identity wherever it comes from: the
        // same id in another message is a redelivery the positions cannot
        // show, so those events are also looked up by id.
        let supplied: Vec<Event> = events
            .iter()
            .filter(|e| e.has_supplied_id())
            .cloned()
            .collect();
        let supplied_stored = if self.dedup_check && !supplied.is_empty() {
            self.existing_ids(&supplied).await?
        } else {
            HashSet::new()
        };
        let mut ledger = self
            .client
            .insert_unescaped::<LogRangeRow>(&format!("{}.log_ranges", self.db))
            .await
            .map_err(unavailable)?;
        for r in ranges.values() {
            ledger.write(r).await.map_err(unavailable)?;
        }
        ledger.end().await.map_err(unavailable)?;

        let mut seen = HashSet::with_capacity(events.len());
        let mut insert = self
            .client
            .insert_unescaped::<LoggedEventRow<'_>>(&format!("{}.events", self.db))
            .await
            .map_err(unavailable)?;
        let mut inserted = 0u64;
        for (e, p) in events.iter().zip(positions) {
            let id = e.event_id();
            if (!stored.is_empty() && stored.contains(&(p.topic.clone(), p.partition, p.offset)))
                || (e.has_supplied_id() && supplied_stored.contains(&id))
                || !seen.insert(id)
            {
                continue;
            }
            let row = LoggedEventRow {
                user_id: e.user_id(),
                event_time: datetime("event_time", e.event_time())?,
                event_id: id,
                event_type: e.event_type(),
                session_id: e.session_id(),
                amount: e.amount(),
                log_topic: &p.topic,
                log_partition: p.partition,
                log_offset: p.offset,
            };
            insert.write(&row).await.map_err(unavailable)?;
            inserted += 1;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(AppendOutcome {
            inserted,
            duplicates: total - inserted,
        })
    }

    async fn stats(&self) -> Result<EventStats, StoreError> {
        let row: StatsRow = self
            .client
            .query(&format!(
                "SELECT count() AS events, uniqExact(user_id) AS users, \
                 toUInt32(min(event_time)) AS first, toUInt32(max(event_time)) AS last \
                 FROM {}",
                self.events_from()
            ))
            .fetch_one()
            .await
            .map_err(unavailable)?;
        let any = row.events > 0;
        Ok(EventStats {
            events: row.events,
            users: row.users,
            first_event_time: any.then_some(i64::from(row.first)),
            last_event_time: any.then_some(i64::from(row.last)),
        })
    }

    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError> {
        let rows: Vec<TypeCountRow> = self
            .client
            .query(&format!(
                "SELECT event_type, count() AS events, uniqExact(user_id) AS users, \
                 count(amount) AS with_amount, count(session_id) AS with_session, \
                 countIf(ifNull(amount, 0.) < 0) AS with_negative_amount, \
                 sumIf(ifNull(amount, 0.), ifNull(amount, 0.) > 0) AS positive_amount_sum, \
                 sumIf(ifNull(amount, 0.), ifNull(amount, 0.) < 0) AS negative_amount_sum \
                 FROM {} GROUP BY event_type ORDER BY events DESC, event_type",
                self.events_from()
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| TypeCount {
                event_type: r.event_type,
                events: r.events,
                users: r.users,
                with_amount: r.with_amount,
                with_session: r.with_session,
                with_negative_amount: r.with_negative_amount,
                positive_amount_sum: r.positive_amount_sum,
                negative_amount_sum: r.negative_amount_sum,
            })
            .collect())
    }

    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError> {
        let mut collided = Vec::new();
        for chunk in names.chunks(KEYS_PER_LOOKUP) {
            let keys: Vec<u64> = chunk.iter().map(|(k, _)| *k).collect();
            let held = self.names_of(&keys).await?;
            let mut insert: Option<clickhouse::insert::Insert<NameRow>> = None;
            for (key, name) in chunk {
                match held.get(key) {
                    Some(h) if h != name => collided.push(*key),
                    Some(_) => {}
                    None => {
                        if insert.is_none() {
                            insert = Some(
                                self.client
                                    .insert_unescaped::<NameRow>(&format!("{}.user_names", self.db))
                                    .await
                                    .map_err(unavailable)?,
                            );
                        }
                        if let Some(ins) = insert.as_mut() {
                            ins.write(&NameRow {
                                user_key: *key,
                                name: (*name).to_string(),
                            })
                            .await
                            .map_err(unavailable)?;
                        }
                    }
                }
            }
            if let Some(ins) = insert {
                ins.end().await.map_err(unavailable)?;
            }
        }
        Ok(collided)
    }

    async fn user_names(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        let keys: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|k| crate::domain::user::is_name_key(*k))
            .collect();
        let mut out = std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_LOOKUP) {
            out.extend(self.names_of(chunk).await?);
        }
        Ok(out)
    }

    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<RejectRow<'_>>(&format!("{}.reject_counts", self.db))
            .await
            .map_err(unavailable)?;
        for t in tallies {
            insert
                .write(&RejectRow {
                    source: &t.source,
                    field: &t.field,
                    count: t.count,
                    example: &t.example,
                })
                .await
                .map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)
    }

    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError> {
        let rows: Vec<RejectTallyRow> = self
            .client
            .query(&format!(
                "SELECT source, field, sum(count) AS count, any(example) AS example \
                 FROM {}.reject_counts GROUP BY source, field ORDER BY count DESC, source, field",
                self.db
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| RejectTally {
                source: r.source,
                field: r.field,
                count: r.count,
                example: r.example,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT 1")
            .execute()
            .await
            .map_err(unavailable)
    }
}
