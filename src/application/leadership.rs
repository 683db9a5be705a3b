//! Which replica runs the schedule: a leader lease kept in the shared
//! registry ([`Coordination`]), renewed every third of its TTL, with a
//! fencing token carried by each scheduled job ([`Fence`]).
//!
//! Three guards stack, each covering what the one before cannot:
//! - only the replica holding a live lease fires scheduled jobs;
//! - each tick is claimed create-if-absent, so a tick seen by two leaders
//!   (one losing the lease while the other takes it) still runs once;
//! - a job's writes carry its token: the lease is re-read before a model is
//!   registered, and the `production` alias refuses a token older than one
//!   that already moved it — atomically, by the alias's own CAS — so a
//!   leader that stalled past its lease (GC pause, SIGSTOP, a slow disk)
//!   cannot overwrite its successor's result.
//!
//! The holder stops considering itself leader a fifth of the TTL before the
//! lease lapses by its own monotonic clock, so a slow renewal never leaves
//! two replicas both believing they lead.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::application::ports::{Coordination, RegistryError};
use crate::domain::lease::{Lease, LeaseStep, ScheduledRun, TickClaim, step};
use crate::telemetry::metric_names;

/// The lease the schedule runs under.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// How long a new leader waits before reading its lease back (at most a
/// tenth of the TTL).
const TAKE_SETTLE: Duration = Duration::from_millis(200);

/// This replica's view of the lease, for `/readyz`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeaderStatus {
    /// This process in the lease: `schedule.replica_id` and a random
    /// incarnation (`r1#8f3a01c2`).
    pub replica: String,
    /// Whether this replica holds the lease and runs the schedule.
    pub leader: bool,
    /// Who holds the lease, as last read.
    pub holder: Option<String>,
    /// The lease's fencing token, as last read.
    pub token: Option<u64>,
    /// The last failure to read or renew the lease.
    pub problem: Option<String>,
}

#[derive(Default)]
struct Seen {
    lease: Option<Lease>,
    /// While we hold the lease: when we stop trusting it (monotonic).
    held_until: Option<Instant>,
    problem: Option<String>,
}

struct Inner {
    store: Arc<dyn Coordination>,
    /// The configured replica id.
    replica: String,
    /// Who holds the lease: the replica id and this process's incarnation.
    /// A replica restarted under the same id within the TTL must not
    /// renew its dead predecessor's term: it takes a new one.
    me: String,
    ttl: Duration,
    seen: Mutex<Seen>,
}

/// The leader election of one replica. Clones share it.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Leadership {
    /// `replica` must be unique among replicas sharing `store` (a pod
    /// name); the lease holder is it plus a random incarnation.
    pub fn new(store: Arc<dyn Coordination>, replica: impl Into<String>, ttl: Duration) -> Self {
        let replica = replica.into();
        let me = format!("{replica}#{:08x}", fastrand::u32(..));
        Self {
            inner: Arc::new(Inner {
                store,
                replica,
                me,
                ttl,
                seen: Mutex::default(),
            }),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain data: a panic mid-update cannot leave it inconsistent.
        self.inner.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The holder name this process writes into the lease.
    pub fn holder(&self) -> &str {
        &self.inner.me
    }

    /// Our token while we hold a live lease.
    pub fn token(&self) -> Option<u64> {
        let seen = self.seen();
        match (&seen.lease, seen.held_until) {
            (Some(l), Some(until)) if until > Instant::now() && l.holder == self.inner.me => {
                Some(l.token)
            }
            _ => None,
        }
    }

    pub fn status(&self) -> LeaderStatus {
        let token = self.token();
        let seen = self.seen();
        LeaderStatus {
            replica: self.inner.me.clone(),
            leader: token.is_some(),
            holder: seen.lease.as_ref().map(|l| l.holder.clone()),
            token: seen.lease.as_ref().map(|l| l.token),
            problem: seen.problem.clone(),
        }
    }

    fn publish(&self) {
        let token = self.token();
        metrics::gauge!(metric_names::SCHEDULER_LEADER).set(if token.is_some() {
            1.0
        } else {
            0.0
        });
        if let Some(l) = &self.seen().lease {
            metrics::gauge!(metric_names::SCHEDULER_LEASE_TOKEN).set(l.token as f64);
        }
    }

    /// One round: read the lease, then take, renew or follow it.
    ///
    /// # Errors
    /// The registry cannot be read or written; a lease we hold lapses on
    /// its own (by our monotonic clock) if renewals keep failing.
    pub async fn step_once(&self) -> Result<(), RegistryError> {
        let result = self.try_step().await;
        {
            let mut seen = self.seen();
            seen.problem = result.as_ref().err().map(|e| format!("leader lease: {e}"));
        }
        self.publish();
        result
    }

    async fn try_step(&self) -> Result<(), RegistryError> {
        let ttl_ms = i64::try_from(self.inner.ttl.as_millis()).unwrap_or(i64::MAX / 4);
        let current = self.inner.store.lease(SCHEDULER_LEASE).await?;
        let (next, taking) = match step(current.as_ref(), &self.inner.me, now_ms(), ttl_ms) {
            LeaseStep::Follow(l) => {
                let mut seen = self.seen();
                seen.lease = Some(l);
                seen.held_until = None;
                return Ok(());
            }
            LeaseStep::Take(l) => (l, true),
            LeaseStep::Renew(l) => (l, false),
        };
        // Trust starts at the write's start: the lease runs from then for
        // everyone else too, whatever the write's latency.
        let started = Instant::now();
        match self
            .inner
            .store
            .swap_lease(SCHEDULER_LEASE, &next, current.as_ref())
            .await
        {
            Ok(()) => {
                if taking {
                    // Some S3 servers check `If-Match` and write in two
                    // steps (s3s-fs does): two takers of one lapsed lease
                    // can both succeed, the later write winning. Reading
                    // back after the writes settle makes both see the same
                    // winner; an atomic server never gets here twice.
                    tokio::time::sleep((self.inner.ttl / 10).min(TAKE_SETTLE)).await;
                    let stored = self.inner.store.lease(SCHEDULER_LEASE).await?;
                    if stored.as_ref() != Some(&next) {
                        let mut seen = self.seen();
                        seen.lease = stored;
                        seen.held_until = None;
                        return Ok(());
                    }
                    tracing::info!(replica = %self.inner.me, token = next.token, "took the scheduler lease");
                    metrics::counter!(metric_names::SCHEDULER_LEASE_TAKEN_TOTAL).increment(1);
                }
                let mut seen = self.seen();
                seen.lease = Some(next);
                seen.held_until = Some(started + self.inner.ttl * 4 / 5);
                Ok(())
            }
            Err(RegistryError::Conflict { .. }) => {
                // Another replica moved it between our read and write: it
                // won; the next round reads what it wrote.
                let mut seen = self.seen();
                seen.held_until = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes part in the election until `shutdown`, then hands the lease
    /// back (expired at once) so a successor need not wait out the TTL.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = (self.inner.ttl / 3).max(Duration::from_millis(50));
        loop {
            if let Err(e) = self.step_once().await {
                tracing::warn!(error = %e, "leader lease not renewed");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        self.release().await;
    }

    async fn release(&self) {
        let Some(token) = self.token() else { return };
        let Ok(Some(current)) = self.inner.store.lease(SCHEDULER_LEASE).await else {
            return;
        };
        if current.holder != self.inner.me || current.token != token {
            return;
        }
        let released = Lease {
            expires_at_ms: now_ms(),
            ..current.clone()
        };
        match self
            .inner
            .store
            .swap_lease(SCHEDULER_LEASE, &released, Some(&current))
            .await
        {
            Ok(()) => tracing::info!(token, "scheduler lease handed back"),
            Err(e) => tracing::warn!(error = %e, "scheduler lease not handed back"),
        }
        let mut seen = self.seen();
        seen.held_until = None;
        seen.lease = Some(released);
    }

    /// Claims `job`'s `tick` for this replica while it leads: `Some(fence)`
    /// when this replica should run it now.
    ///
    /// # Errors
    /// The claim cannot be written.
    pub async fn claim(&self, job: &str, tick: i64) -> Result<Option<Fence>, RegistryError> {
        let Some(token) = self.token() else {
            metrics::counter!(metric_names::SCHEDULER_TICKS_TOTAL, "job" => job.to_string(), "outcome" => "follower").increment(1);
            return Ok(None);
        };
        let claim = TickClaim {
            job: job.to_string(),
            tick,
            holder: self.inner.me.clone(),
            token,
        };
        let won = self.inner.store.claim_tick(&claim).await?;
        let outcome = if won { "claimed" } else { "claimed_elsewhere" };
        metrics::counter!(metric_names::SCHEDULER_TICKS_TOTAL, "job" => job.to_string(), "outcome" => outcome).increment(1);
        Ok(won.then(|| Fence {
            leadership: self.clone(),
            token,
            tick,
        }))
    }

    /// Drops `job`'s claims of ticks before `before`.
    ///
    /// # Errors
    /// The registry cannot be listed or written.
    pub async fn forget_ticks(&self, job: &str, before: i64) -> Result<usize, RegistryError> {
        self.inner.store.forget_ticks(job, before).await
    }

    /// Whether a job started under `token` may still write: the stored
    /// lease must still be ours, of that term, and live.
    async fn check(&self, token: u64) -> Result<(), RegistryError> {
        let current = self.inner.store.lease(SCHEDULER_LEASE).await?;
        let live_ours = current.as_ref().is_some_and(|l| {
            l.holder == self.inner.me && l.token == token && l.expires_at_ms > now_ms()
        });
        if live_ours {
            return Ok(());
        }
        metrics::counter!(metric_names::SCHEDULER_FENCED_TOTAL).increment(1);
        let newest = current.map_or(token, |l| l.token);
        tracing::warn!(
            token,
            newest,
            "a scheduled job's write was fenced off: this replica no longer leads"
        );
        Err(RegistryError::Fenced { token, newest })
    }
}

/// What a scheduled job carries: the lease term it started under.
#[derive(Clone)]
pub struct Fence {
    leadership: Leadership,
    token: u64,
    tick: i64,
}

impl Fence {
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Recorded on what the job produces.
    pub fn run(&self) -> ScheduledRun {
        ScheduledRun {
            tick: self.tick,
            token: self.token,
            replica: self.leadership.inner.me.clone(),
        }
    }

    /// Re-reads the lease: `Err(Fenced)` once another term began.
    ///
    /// # Errors
    /// [`RegistryError::Fenced`], or the registry cannot be read.
    pub async fn check(&self) -> Result<(), RegistryError> {
        self.leadership.check(self.token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryRegistry;

    fn replica(registry: &MemoryRegistry, me: &str, ttl_ms: u64) -> Leadership {
        Leadership::new(
            Arc::new(registry.clone()),
            me,
            Duration::from_millis(ttl_ms),
        )
    }

    #[tokio::test]
    async fn one_replica_leads_and_a_tick_is_claimed_once() {
        let registry = MemoryRegistry::default();
        let (a, b) = (
            replica(&registry, "a", 10_000),
            replica(&registry, "b", 10_000),
        );
        a.step_once().await.unwrap();
        b.step_once().await.unwrap();
        assert_eq!(a.token(), Some(1));
        assert_eq!(b.token(), None);
        assert_eq!(b.status().holder.as_deref(), Some(a.holder()));
        assert!(b.claim("retrain", 100).await.unwrap().is_none());
        let fence = a
            .claim("retrain", 100)
            .await
            .unwrap()
            .expect("leader claims");
        assert!(a.claim("retrain", 100).await.unwrap().is_none(), "once");
        fence.check().await.unwrap();
    }

    #[tokio::test]
    async fn a_lapsed_leader_is_replaced_and_its_fence_refuses() {
        let registry = MemoryRegistry::default();
        let (a, b) = (replica(&registry, "a", 200), replica(&registry, "b", 200));
        a.step_once().await.unwrap();
        let stale = a.claim("retrain", 1).await.unwrap().expect("a leads");
        // a stalls (no renewals) past its TTL; b takes over.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(a.token(), None, "a stops trusting its lease on its own");
        b.step_once().await.unwrap();
        assert_eq!(b.token(), Some(2));
        let err = stale.check().await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Fenced {
                    token: 1,
                    newest: 2
                }
            ),
            "{err}"
        );
        // a comes back: it follows.
        a.step_once().await.unwrap();
        assert_eq!(a.token(), None);
        assert_eq!(a.status().holder.as_deref(), Some(b.holder()));
    }

    #[tokio::test]
    async fn a_restart_under_the_same_id_starts_a_new_term() {
        let registry = MemoryRegistry::default();
        let first = replica(&registry, "a", 10_000);
        first.step_once().await.unwrap();
        assert_eq!(first.token(), Some(1));
        // Killed; restarted at once under the same replica id: it follows
        // until the dead incarnation's lease lapses, then takes token 2.
        let again = replica(&registry, "a", 10_000);
        again.step_once().await.unwrap();
        assert_eq!(again.token(), None, "no renewal of a predecessor's term");
        assert_eq!(again.replica(), first.replica());
        assert_ne!(again.holder(), first.holder());
    }

    #[tokio::test]
    async fn shutdown_hands_the_lease_back() {
        let registry = MemoryRegistry::default();
        let (a, b) = (
            replica(&registry, "a", 60_000),
            replica(&registry, "b", 60_000),
        );
        let stop = CancellationToken::new();
        let run = tokio::spawn(a.clone().run(stop.clone()));
        for _ in 0..100 {
            if a.token().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(a.token(), Some(1));
        stop.cancel();
        run.await.unwrap();
        b.step_once().await.unwrap();
        assert_eq!(b.token(), Some(2), "no TTL wait after a clean stop");
    }
}
