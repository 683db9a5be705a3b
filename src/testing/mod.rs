//! In-memory fakes of every port, for unit tests of the use cases and for
//! the contract suites (`tests/contracts`), which run them next to the real
//! adapters so a fake cannot drift from what it stands for. Never wired by
//! `startup`: nothing here is durable.
//!
//! Each fake has an outage switch (`set_failing`) so tests can drive the
//! retry and pause paths without a real server going down.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::application::ports::{
    AliasRecord, AppendOutcome, Coordination, DeadLetterSink, EventStats, EventStore, EventStream,
    FeatureStore, LogCheckpoint, ModelRegistry, RawRecord, RegistryError, RejectTally,
    SnapshotSummary, SourceError, StoreError, TypeCount,
};
use crate::domain::event::{Event, EventError};
use crate::domain::features::{FeatureSpec, UserEvent, session_key};
use crate::domain::label::LabelPolicy;
use crate::domain::lease::{Lease, TickClaim};
use crate::domain::model::{Dataset, ModelMetadata};
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::{FeatureSnapshot, SnapshotHeader, retained};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A switch shared by a fake and its test.
#[derive(Debug, Clone, Default)]
pub struct Outage(Arc<AtomicBool>);

impl Outage {
    pub fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::SeqCst);
    }
    fn check(&self, what: &str) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(format!("{what}: simulated outage")))
        } else {
            Ok(())
        }
    }
}

/// A stored snapshot: its header and every user's stored row.
type StoredSnapshot = (SnapshotHeader, Vec<(u64, Vec<f32>)>);

#[derive(Default)]
struct StoreState {
    /// Keyed like the SQLite table: (user, time, event id).
    events: BTreeMap<(u64, i64, i64), Event>,
    snapshots: BTreeMap<i64, StoredSnapshot>,
    /// Names of name-keyed users.
    names: HashMap<u64, String>,
    /// Reject counts and an example per (source, field).
    rejects: BTreeMap<(String, String), (u64, String)>,
}

/// Event and feature store in memory, evaluating the shared spec in Rust
/// like the embedded store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<StoreState>>,
    retention: usize,
    pub outage: Outage,
}

impl MemoryStore {
    pub fn new(retention: usize) -> Self {
        Self {
            retention: retention.max(1),
            ..Self::default()
        }
    }

    /// Every user's time-ordered events with `time <= until`.
    fn users(&self, spec: &FeatureSpec, until: i64) -> Vec<(u64, Vec<UserEvent>)> {
        let state = lock(&self.state);
        let mut out: Vec<(u64, Vec<UserEvent>)> = Vec::new();
        for ((user, time, _), e) in state.events.iter() {
            if *time > until {
                continue;
            }
            if out.last().is_none_or(|(u, _)| u != user) {
                out.push((*user, Vec::new()));
            }
            if let Some((_, events)) = out.last_mut() {
                events.push(UserEvent {
                    time: *time,
                    type_idx: spec.type_index(e.event_type()),
                    session: session_key(e.session_id()),
                    amount: e.amount(),
                });
            }
        }
        out
    }
}

#[async_trait]
impl crate::application::ports::Erasure for MemoryStore {
    async fn forget_users(
        &self,
        users: &[u64],
    ) -> Result<crate::application::ports::ErasedRows, StoreError> {
        self.outage.check("memory store")?;
        let mut state = lock(&self.state);
        let mut erased = crate::application::ports::ErasedRows::default();
        let before = state.events.len();
        state.events.retain(|(u, _, _), _| !users.contains(u));
        erased.events = (before - state.events.len()) as u64;
        for (header, rows) in state.snapshots.values_mut() {
            let before = rows.len();
            rows.retain(|(u, _)| !users.contains(u));
            erased.feature_rows += (before - rows.len()) as u64;
            header.users = rows.len() as u64;
        }
        for u in users {
            if state.names.remove(u).is_some() {
                erased.names += 1;
            }
        }
        Ok(erased)
    }

    async fn drop_events_before(&self, before: i64) -> Result<u64, StoreError> {
        self.outage.check("memory store")?;
        let mut state = lock(&self.state);
        let n = state.events.len();
        state.events.retain(|(_, t, _), _| *t >= before);
        Ok((n - state.events.len()) as u64)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError> {
        self.outage.check("memory store")?;
        let mut state = lock(&self.state);
        let mut inserted = 0;
        for e in &events {
            let key = (e.user_id(), e.event_time(), e.event_id());
            if state.events.insert(key, e.clone()).is_none() {
                inserted += 1;
            }
        }
        Ok(AppendOutcome {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }

    async fn stats(&self) -> Result<EventStats, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        let mut users: Vec<u64> = state.events.keys().map(|k| k.0).collect();
        users.dedup();
        Ok(EventStats {
            events: state.events.len() as u64,
            users: users.len() as u64,
            first_event_time: state.events.keys().map(|k| k.1).min(),
            last_event_time: state.events.keys().map(|k| k.1).max(),
        })
    }

    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        let mut by_type: BTreeMap<&str, (TypeCount, Vec<u64>)> = BTreeMap::new();
        for ((user, _, _), e) in &state.events {
            let (c, users) = by_type.entry(e.event_type()).or_insert_with(|| {
                (
                    TypeCount {
                        event_type: e.event_type().to_string(),
                        ..TypeCount::default()
                    },
                    Vec::new(),
                )
            });
            c.events += 1;
            c.with_amount += u64::from(e.amount().is_some());
            c.with_session += u64::from(e.session_id().is_some());
            match e.amount() {
                Some(a) if a < 0.0 => {
                    c.with_negative_amount += 1;
                    c.negative_amount_sum += a;
                }
                Some(a) => c.positive_amount_sum += a,
                None => {}
            }
            users.push(*user);
        }
        let mut out: Vec<TypeCount> = by_type
            .into_values()
            .map(|(mut c, mut users)| {
                users.sort_unstable();
                users.dedup();
                c.users = users.len() as u64;
                c
            })
            .collect();
        out.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then(a.event_type.cmp(&b.event_type))
        });
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.outage.check("memory store")
    }

    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError> {
        self.outage.check("memory store")?;
        let mut state = lock(&self.state);
        let mut collided = Vec::new();
        for (key, name) in names {
            match state.names.get(key) {
                Some(held) if held != name => collided.push(*key),
                Some(_) => {}
                None => {
                    state.names.insert(*key, (*name).to_string());
                }
            }
        }
        Ok(collided)
    }

    async fn user_names(&self, keys: &[u64]) -> Result<HashMap<u64, String>, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        Ok(keys
            .iter()
            .filter_map(|k| state.names.get(k).map(|n| (*k, n.clone())))
            .collect())
    }

    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError> {
        self.outage.check("memory store")?;
        let mut state = lock(&self.state);
        for t in tallies {
            let entry = state
                .rejects
                .entry((t.source.clone(), t.field.clone()))
                .or_insert_with(|| (0, t.example.clone()));
            entry.0 += t.count;
        }
        Ok(())
    }

    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        let mut out: Vec<RejectTally> = state
            .rejects
            .iter()
            .map(|((source, field), (count, example))| RejectTally {
                source: source.clone(),
                field: field.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.field.cmp(&b.field)));
        Ok(out)
    }
}

#[async_trait]
impl FeatureStore for MemoryStore {
    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        self.outage.check("memory store")?;
        let mut rows = Vec::new();
        let mut out = Vec::new();
        for (user, events) in self.users(spec, as_of) {
            if spec.evaluate(&events, as_of, &mut out) {
                rows.push((user, out.iter().map(|v| *v as f32).collect()));
            }
        }
        let header = SnapshotHeader {
            as_of,
            created_at: chrono::Utc::now().timestamp(),
            fingerprint: spec.fingerprint(),
            feature_names: spec.names(),
            users: rows.len() as u64,
        };
        let mut state = lock(&self.state);
        state.snapshots.insert(as_of, (header.clone(), rows));
        let keep = retained(state.snapshots.keys().copied().collect(), self.retention);
        state.snapshots.retain(|t, _| keep.contains(t));
        Ok(header.into())
    }

    async fn compute_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<FeatureSnapshot, StoreError> {
        self.outage.check("memory store")?;
        let mut snapshot = FeatureSnapshot::new(
            as_of,
            chrono::Utc::now().timestamp(),
            spec.names(),
            spec.fingerprint(),
        );
        let mut out = Vec::new();
        for (user, events) in self.users(spec, as_of) {
            if spec.evaluate(&events, as_of, &mut out) {
                snapshot.insert(user, &out);
            }
        }
        Ok(snapshot)
    }

    async fn user_events(
        &self,
        spec: &FeatureSpec,
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError> {
        self.outage.check("memory store")?;
        let events = self
            .users(spec, i64::MAX)
            .into_iter()
            .find(|(u, _)| *u == user)
            .map(|(_, e)| e)
            .unwrap_or_default();
        Ok((events.len() <= limit).then_some(events))
    }

    async fn latest_snapshot(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        let Some((header, rows)) = state
            .snapshots
            .values()
            .rev()
            .find(|(h, _)| not_after.is_none_or(|t| h.as_of <= t))
        else {
            return Ok(None);
        };
        let mut snapshot = header.empty_snapshot();
        for (user, row) in rows {
            snapshot.insert_stored(*user, row)?;
        }
        Ok(Some(snapshot))
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        self.outage.check("memory store")?;
        let state = lock(&self.state);
        Ok(state
            .snapshots
            .values()
            .rev()
            .map(|(h, _)| h.clone().into())
            .collect())
    }

    async fn training_set(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cutoff: i64,
        sample: RowSample,
    ) -> Result<Dataset, StoreError> {
        self.outage.check("memory store")?;
        let mut data = Dataset::with_columns(spec.names());
        let mut out = Vec::new();
        let spec = &spec
            .clone()
            .with_types(&policy.event_types())
            .map_err(StoreError::Insufficient)?;
        let rule = policy.compile(spec);
        for (user, events) in self.users(spec, cutoff + policy.horizon_secs()) {
            if sample.keeps(user)
                && let Some(churned) = rule.label(&events, cutoff)
                && spec.evaluate(&events, cutoff, &mut out)
            {
                data.push(user, &out, churned);
            }
        }
        Ok(data)
    }
}

#[derive(Default)]
struct RegistryState {
    versions: Vec<(ModelMetadata, Vec<u8>)>,
    aliases: HashMap<String, AliasRecord>,
    leases: HashMap<String, Lease>,
    ticks: BTreeMap<(String, i64), TickClaim>,
}

/// A model registry in memory. Clones share one registry (like replicas
/// sharing a bucket); alias moves are compare-and-swap.
#[derive(Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<RegistryState>>,
    model_name: Arc<str>,
    pub outage: Outage,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new("churn_model")
    }
}

impl MemoryRegistry {
    /// An empty registry whose versions are named `model_name`.
    pub fn new(model_name: &str) -> Self {
        Self {
            state: Arc::default(),
            model_name: model_name.into(),
            outage: Outage::default(),
        }
    }

    fn check(&self) -> Result<(), RegistryError> {
        self.outage
            .check("memory registry")
            .map_err(|e| RegistryError::Backend(e.to_string()))
    }
}

fn checksum(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[async_trait]
impl ModelRegistry for MemoryRegistry {
    async fn register(
        &self,
        mut metadata: ModelMetadata,
        model: Vec<u8>,
    ) -> Result<ModelMetadata, RegistryError> {
        self.check()?;
        let mut state = lock(&self.state);
        metadata.name = self.model_name.to_string();
        metadata.version = state.versions.len() as u64 + 1;
        metadata.checksum_sha256 = checksum(&model);
        state.versions.push((metadata.clone(), model));
        Ok(metadata)
    }

    async fn list(&self) -> Result<Vec<ModelMetadata>, RegistryError> {
        self.check()?;
        Ok(lock(&self.state)
            .versions
            .iter()
            .map(|(m, _)| m.clone())
            .collect())
    }

    async fn load(&self, version: u64) -> Result<(ModelMetadata, Vec<u8>), RegistryError> {
        self.check()?;
        let state = lock(&self.state);
        let (metadata, bytes) = version
            .checked_sub(1)
            .and_then(|i| state.versions.get(i as usize))
            .ok_or(RegistryError::UnknownVersion(version))?;
        let found = checksum(bytes);
        if found != metadata.checksum_sha256 {
            return Err(RegistryError::Checksum {
                version,
                expected: metadata.checksum_sha256.clone(),
                found,
            });
        }
        Ok((metadata.clone(), bytes.clone()))
    }

    async fn alias(&self, alias: &str) -> Result<Option<AliasRecord>, RegistryError> {
        self.check()?;
        Ok(lock(&self.state).aliases.get(alias).cloned())
    }

    async fn set_alias(
        &self,
        alias: &str,
        record: AliasRecord,
        expected: Option<&AliasRecord>,
    ) -> Result<(), RegistryError> {
        self.check()?;
        let mut state = lock(&self.state);
        if state.aliases.get(alias) != expected {
            return Err(RegistryError::Conflict {
                alias: alias.to_string(),
            });
        }
        state.aliases.insert(alias.to_string(), record);
        Ok(())
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        self.check()
    }
}

#[async_trait]
impl Coordination for MemoryRegistry {
    async fn lease(&self, name: &str) -> Result<Option<Lease>, RegistryError> {
        self.check()?;
        Ok(lock(&self.state).leases.get(name).cloned())
    }

    async fn swap_lease(
        &self,
        name: &str,
        lease: &Lease,
        expected: Option<&Lease>,
    ) -> Result<(), RegistryError> {
        self.check()?;
        let mut state = lock(&self.state);
        if state.leases.get(name) != expected {
            return Err(RegistryError::Conflict {
                alias: format!("lease {name}"),
            });
        }
        state.leases.insert(name.to_string(), lease.clone());
        Ok(())
    }

    async fn claim_tick(&self, claim: &TickClaim) -> Result<bool, RegistryError> {
        self.check()?;
        let mut state = lock(&self.state);
        let key = (claim.job.clone(), claim.tick);
        if state.ticks.contains_key(&key) {
            return Ok(false);
        }
        state.ticks.insert(key, claim.clone());
        Ok(true)
    }

    async fn ticks(&self, job: &str) -> Result<Vec<TickClaim>, RegistryError> {
        self.check()?;
        Ok(lock(&self.state)
            .ticks
            .values()
            .filter(|c| c.job == job)
            .cloned()
            .collect())
    }

    async fn forget_ticks(&self, job: &str, before: i64) -> Result<usize, RegistryError> {
        self.check()?;
        let mut state = lock(&self.state);
        let n = state.ticks.len();
        state.ticks.retain(|(j, t), _| j != job || *t >= before);
        Ok(n - state.ticks.len())
    }
}

/// What a [`ScriptedStream`] was asked to do, for assertions.
#[derive(Debug, Default)]
pub struct StreamLog {
    pub fetched: usize,
    pub commits: usize,
    /// Every checkpoint committed, in order.
    pub committed: Vec<LogCheckpoint>,
    pub pauses: usize,
    pub resumes: usize,
    pub closed: bool,
}

/// An event stream that hands out scripted batches, then nothing.
pub struct ScriptedStream {
    batches: VecDeque<Vec<RawRecord>>,
    pub log: Arc<Mutex<StreamLog>>,
}

impl ScriptedStream {
    pub fn new(batches: Vec<Vec<RawRecord>>) -> Self {
        Self {
            batches: batches.into(),
            log: Arc::default(),
        }
    }
}

#[async_trait]
impl EventStream for ScriptedStream {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RawRecord>, SourceError> {
        match self.batches.pop_front() {
            Some(mut b) => {
                if b.len() > max {
                    let rest = b.split_off(max);
                    self.batches.push_front(rest);
                }
                lock(&self.log).fetched += b.len();
                Ok(b)
            }
            None => {
                tokio::time::sleep(wait).await;
                Ok(Vec::new())
            }
        }
    }

    async fn commit(&mut self, through: &LogCheckpoint) -> Result<(), SourceError> {
        let mut log = lock(&self.log);
        log.commits += 1;
        log.committed.push(through.clone());
        Ok(())
    }

    fn pause(&mut self) -> Result<(), SourceError> {
        lock(&self.log).pauses += 1;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        lock(&self.log).resumes += 1;
        Ok(())
    }

    async fn idle(&mut self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn close(self: Box<Self>) {
        lock(&self.log).closed = true;
    }
}

/// A dead-letter sink keeping what it was given: (origin, reason, payload).
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetters {
    pub rejected: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Refuses every dead letter while set (a dead-letter topic that cannot
    /// take the message).
    pub refusing: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        if self.refusing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SourceError::Io("dead letter refused (simulated)".into()));
        }
        lock(&self.rejected).push((
            record.origin.clone(),
            error.to_string(),
            String::from_utf8_lossy(&record.payload).into_owned(),
        ));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// A small, deterministic trainer for use-case tests: full-batch gradient
/// descent of a standardised logistic regression (both kinds get one; the
/// use cases only need a real, data-driven classifier, not forust's).
#[derive(Debug, Clone, Copy)]
pub struct GradientTrainer {
    pub iterations: usize,
}

impl Default for GradientTrainer {
    fn default() -> Self {
        Self { iterations: 200 }
    }
}

impl crate::application::ports::ModelTrainer for GradientTrainer {
    fn train(
        &self,
        kind: crate::domain::model::ModelKind,
        data: &Dataset,
    ) -> Result<Arc<dyn crate::domain::model::Classifier>, crate::domain::model::ModelError> {
        use crate::domain::math::sigmoid;
        use crate::domain::model::{Blend, LogisticModel, ModelError, ModelKind};
        if kind == ModelKind::Blend {
            // An even mix of two of this trainer's models, as the real
            // trainer's blend fitted alone.
            let half = self.train(ModelKind::Logistic, data)?;
            return Ok(Arc::new(Blend {
                gbdt: half.clone(),
                logistic: half,
                weight: 0.5,
            }));
        }
        let (n, k) = (data.len(), data.n_features());
        if n == 0 || k == 0 {
            return Err(ModelError::Training("empty training set".into()));
        }
        let mut means = vec![0.0; k];
        let mut scales = vec![0.0; k];
        for i in 0..n {
            for (j, x) in data.row(i).iter().enumerate() {
                means[j] += x / n as f64;
            }
        }
        for i in 0..n {
            for (j, x) in data.row(i).iter().enumerate() {
                scales[j] += (x - means[j]).powi(2) / n as f64;
            }
        }
        let scales: Vec<f64> = scales
            .into_iter()
            .map(|v| if v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        let mut w = vec![0.0; k];
        let mut b = 0.0;
        for _ in 0..self.iterations {
            let mut gw = vec![0.0; k];
            let mut gb = 0.0;
            for i in 0..n {
                let row = data.row(i);
                let z: f64 = (0..k).map(|j| w[j] * (row[j] - means[j]) / scales[j]).sum();
                let err = sigmoid(b + z) - f64::from(u8::from(data.labels[i]));
                gb += err / n as f64;
                for j in 0..k {
                    gw[j] += err * (row[j] - means[j]) / scales[j] / n as f64;
                }
            }
            b -= 0.5 * gb;
            for j in 0..k {
                w[j] -= 0.5 * (gw[j] + 1e-3 * w[j]);
            }
        }
        Ok(Arc::new(LogisticModel {
            coefficients: w,
            intercept: b,
            means,
            scales,
            log1p: Vec::new(),
            bounds: Vec::new(),
        }))
    }

    fn decode(
        &self,
        kind: crate::domain::model::ModelKind,
        bytes: &[u8],
    ) -> Result<Arc<dyn crate::domain::model::Classifier>, crate::domain::model::ModelError> {
        use crate::domain::model::{Blend, BlendFile, LogisticModel, ModelError, ModelKind};
        let codec = |e: serde_json::Error| ModelError::Codec(e.to_string());
        if kind == ModelKind::Blend {
            // Both halves of a blend are this trainer's logistic models.
            let file: BlendFile = serde_json::from_slice(bytes).map_err(codec)?;
            let half = |raw: &serde_json::value::RawValue| -> Result<Arc<dyn crate::domain::model::Classifier>, ModelError> {
                let m: LogisticModel = serde_json::from_str(raw.get()).map_err(codec)?;
                Ok(Arc::new(m))
            };
            return Ok(Arc::new(Blend {
                gbdt: half(&file.gbdt)?,
                logistic: half(&file.logistic)?,
                weight: file.weight,
            }));
        }
        let model: LogisticModel = serde_json::from_slice(bytes).map_err(codec)?;
        Ok(Arc::new(model))
    }

    fn hyperparameters(&self, _kind: crate::domain::model::ModelKind) -> serde_json::Value {
        serde_json::json!({ "iterations": self.iterations })
    }
}

/// Jobs over `store` with in-memory everything else and the standard spec
/// (unit tests of the scheduler and the jobs).
pub fn memory_jobs(store: &MemoryStore) -> crate::application::jobs::Jobs {
    use crate::application::build_features::BuildFeatures;
    use crate::application::jobs::Jobs;
    use crate::application::manage_models::ManageModels;
    use crate::application::serving_state::ServingState;
    use crate::application::train::{TrainModel, TrainingOptions};
    use crate::domain::training::{ModelSelection, PromotionPolicy};

    let spec = Arc::new(FeatureSpec::standard());
    let trainer: Arc<dyn crate::application::ports::ModelTrainer> =
        Arc::new(GradientTrainer::default());
    let models = ManageModels::new(Arc::new(MemoryRegistry::default()), trainer.clone());
    let train = TrainModel::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        models.clone(),
        trainer,
        spec.clone(),
        TrainingOptions {
            model_name: "churn_model".into(),
            policy: LabelPolicy::inactivity(30, 30),
            validation_cutoff: None,
            train_snapshots: 1,
            snapshot_step_days: 7,
            max_training_rows: 0,
            promotion: PromotionPolicy {
                tolerance: 0.0,
                force: false,
            },
            selection: ModelSelection::Best,
            calibration: crate::domain::calibration::CalibrationMethod::Platt,
            reference_as_of: crate::application::build_features::AsOf::EndOfData,
        },
    );
    Jobs::new(
        BuildFeatures::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            spec.clone(),
        ),
        train,
        models,
        Arc::new(store.clone()),
        ServingState::new(spec),
    )
}
