//! The scheduler's leader lease, as pure rules: who holds it, until when,
//! and the fencing token that grows every time it changes hands.
//!
//! Replicas share one lease record (kept in the registry, moved by
//! compare-and-swap). Each replica periodically calls [`step`] with what it
//! read and writes back what it returns; the CAS makes two takers of one
//! expired lease resolve to one. The token is what makes a stale leader
//! harmless: every scheduled job carries the token it started under, and a
//! write whose token is older than the newest one seen is refused.
//!
//! Time is wall-clock milliseconds passed in by the caller; replicas on
//! different hosts need clocks within a small fraction of the TTL (NTP).

use serde::{Deserialize, Serialize};

/// The shared lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    /// The replica holding it (`schedule.replica_id`).
    pub holder: String,
    /// Fencing token: +1 each time the lease is taken (never on renewal).
    pub token: u64,
    /// When it lapses unless renewed (Unix milliseconds).
    pub expires_at_ms: i64,
    /// When the current holder took it (Unix milliseconds).
    pub acquired_at_ms: i64,
}

/// What a replica does with the lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Nobody holds a live lease: write this one (a new term).
    Take(Lease),
    /// We hold it: write this one (same token, later expiry).
    Renew(Lease),
    /// Another replica holds a live lease: do nothing until it lapses.
    Follow(Lease),
}

/// The next step for replica `me` at `now_ms` given the stored lease.
///
/// A lease of our own that already lapsed is taken anew (token + 1), not
/// renewed: while it was lapsed another replica may have led, so the
/// jobs we started under the old token must not write any more.
pub fn step(current: Option<&Lease>, me: &str, now_ms: i64, ttl_ms: i64) -> LeaseStep {
    match current {
        Some(l) if l.expires_at_ms > now_ms && l.holder == me => LeaseStep::Renew(Lease {
            expires_at_ms: now_ms + ttl_ms,
            ..l.clone()
        }),
        Some(l) if l.expires_at_ms > now_ms => LeaseStep::Follow(l.clone()),
        other => LeaseStep::Take(Lease {
            holder: me.to_string(),
            token: other.map_or(0, |l| l.token) + 1,
            expires_at_ms: now_ms + ttl_ms,
            acquired_at_ms: now_ms,
        }),
    }
}

/// Whether `token` may still write, given the newest token recorded where
/// the write lands (`None` = no fenced write yet). Equal tokens pass: one
/// term writes many times.
pub fn admits(newest_seen: Option<u64>, token: u64) -> bool {
    newest_seen.is_none_or(|seen| token >= seen)
}

/// A scheduled tick claimed by one replica: the record that makes each
/// tick's job run once however many replicas saw it fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TickClaim {
    /// The job (`build_features`, `retrain`).
    pub job: String,
    /// The scheduled second (Unix seconds) the cron fired for.
    pub tick: i64,
    pub holder: String,
    pub token: u64,
}

/// Recorded on a model version trained by the schedule: which tick, under
/// which lease term, on which replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledRun {
    pub tick: i64,
    pub token: u64,
    pub replica: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, token: u64, expires_at_ms: i64) -> Lease {
        Lease {
            holder: holder.into(),
            token,
            expires_at_ms,
            acquired_at_ms: 0,
        }
    }

    #[test]
    fn an_empty_record_is_taken_with_token_one() {
        let LeaseStep::Take(l) = step(None, "a", 1_000, 5_000) else {
            panic!("expected take")
        };
        assert_eq!(
            (l.holder.as_str(), l.token, l.expires_at_ms),
            ("a", 1, 6_000)
        );
    }

    #[test]
    fn the_holder_renews_without_a_new_token() {
        let current = lease("a", 7, 5_000);
        assert_eq!(
            step(Some(&current), "a", 4_000, 5_000),
            LeaseStep::Renew(lease("a", 7, 9_000))
        );
    }

    #[test]
    fn others_follow_a_live_lease_and_take_a_lapsed_one() {
        let current = lease("a", 7, 5_000);
        assert_eq!(
            step(Some(&current), "b", 4_999, 5_000),
            LeaseStep::Follow(current.clone())
        );
        let LeaseStep::Take(l) = step(Some(&current), "b", 5_000, 5_000) else {
            panic!("expected take")
        };
        assert_eq!((l.holder.as_str(), l.token), ("b", 8));
    }

    #[test]
    fn a_lapsed_lease_of_our_own_starts_a_new_term() {
        let current = lease("a", 7, 5_000);
        let LeaseStep::Take(l) = step(Some(&current), "a", 6_000, 5_000) else {
            panic!("expected take")
        };
        assert_eq!(l.token, 8);
    }

    #[test]
    fn older_tokens_are_refused_equal_and_newer_admitted() {
        assert!(admits(None, 1));
        assert!(admits(Some(3), 3));
        assert!(admits(Some(3), 4));
        assert!(!admits(Some(3), 2));
    }
}
