//! `ProfileData` (`churn profile`): what a store's events look like to the
//! churn definition before anything trains on them — the span, users, the
//! volume per event type, how often users come back, which share of users
//! each lookback makes eligible, and which configured features would be
//! constant. Each finding that needs action names the setting.

use std::sync::Arc;

use serde::Serialize;

use crate::application::ports::{EventStore, FeatureStore, StoreError, TypeCount};
use crate::application::score::eligible_users;
use crate::domain::features::{Aggregation, FeatureDef, FeatureSpec};
use crate::domain::label::LabelPolicy;
use crate::domain::recommend::{LogShape, Recommendation, recommend};
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};

/// Lookbacks the eligibility table tries, in days.
pub const LOOKBACKS: [u32; 8] = [7, 14, 30, 60, 90, 180, 365, 730];

/// The share of users one lookback makes eligible.
#[derive(Debug, Clone, Serialize)]
pub struct Eligibility {
    pub lookback_days: u32,
    pub eligible_users: u64,
    pub share: f64,
}

/// Refunds and cancellations: events with a negative amount.
#[derive(Debug, Clone, Serialize)]
pub struct Refunds {
    /// Events with a negative amount.
    pub events: u64,
    /// Their share of the events with an amount.
    pub share_of_amount_events: f64,
    /// The refunded sum (positive) over the sum of positive amounts.
    pub share_of_revenue: f64,
    /// Types that carry negative amounts.
    pub event_types: Vec<String>,
}

/// The profile of a store.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub events: u64,
    pub users: u64,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    pub span_days: f64,
    pub event_types: Vec<TypeCount>,
    /// Negative amounts, when the store holds any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Refunds>,
    /// Median over users (with two or more active days) of the mean gap in
    /// days between their active days.
    pub median_gap_days: Option<f64>,
    /// The cutoff the eligibility and feature figures are taken at (the
    /// validation cutoff training would use).
    pub cutoff: Option<String>,
    /// Users with any event at or before the cutoff.
    pub users_at_cutoff: u64,
    pub eligibility: Vec<Eligibility>,
    pub features: usize,
    pub constant_features: Vec<String>,
    /// Settings chosen from the log's shape, with the reasons.
    pub recommended: Option<Recommendation>,
    /// What to change, each with the value to set; all of them at once.
    pub hints: Vec<String>,
}

/// The profiling use case.
#[derive(Clone)]
pub struct ProfileData {
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    spec: Arc<FeatureSpec>,
    policy: LabelPolicy,
}

impl ProfileData {
    pub fn new(
        events: Arc<dyn EventStore>,
        features: Arc<dyn FeatureStore>,
        spec: Arc<FeatureSpec>,
        policy: LabelPolicy,
    ) -> Self {
        Self {
            events,
            features,
            spec,
            policy,
        }
    }

    /// Profiles the store.
    ///
    /// # Errors
    /// [`StoreError`] from the backend.
    pub async fn run(&self) -> Result<Profile, StoreError> {
        let stats = self.events.stats().await?;
        let event_types = self.events.type_counts().await?;
        let refunds = refunds(&event_types);
        let mut profile = Profile {
            events: stats.events,
            users: stats.users,
            first_event: stats.first_event_time.map(format_rfc3339),
            last_event: stats.last_event_time.map(format_rfc3339),
            span_days: 0.0,
            event_types,
            refunds,
            median_gap_days: None,
            cutoff: None,
            users_at_cutoff: 0,
            eligibility: Vec::new(),
            features: self.spec.len(),
            constant_features: Vec::new(),
            recommended: None,
            hints: Vec::new(),
        };
        let (Some(first), Some(last)) = (stats.first_event_time, stats.last_event_time) else {
            profile
                .hints
                .push("the store is empty: ingest events first".into());
            return Ok(profile);
        };
        profile.span_days = (last - first) as f64 / DAY_SECS as f64;
        let cutoff = (floor_day(last) - self.policy.horizon_secs()).max(first);
        profile.cutoff = Some(format_rfc3339(cutoff));

        // The rhythm of returns, over every user's whole history.
        let rhythm = FeatureSpec::new(
            vec![FeatureDef::aggregate(
                "gap",
                Aggregation::GapMean,
                &[],
                None,
            )],
            "profile",
        )
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let gaps = self.features.compute_snapshot(&rhythm, last).await?;
        let mut means: Vec<f64> = (0..gaps.len())
            .map(|i| gaps.rows_f64(i..i + 1)[0])
            .filter(|g| *g > 0.0)
            .collect();
        means.sort_by(f64::total_cmp);
        profile.median_gap_days = means.get(means.len() / 2).copied();

        let at_cutoff = self.features.compute_snapshot(&self.spec, cutoff).await?;
        profile.users_at_cutoff = at_cutoff.len() as u64;
        profile.constant_features = constant_columns(&at_cutoff);
        let recommended = recommend(LogShape {
            span_days: profile.span_days,
            median_gap_days: profile.median_gap_days,
            age_days: (chrono::Utc::now().timestamp() - last) as f64 / DAY_SECS as f64,
        });
        // The usual lookbacks, and the recommended one.
        let mut lookbacks = LOOKBACKS.to_vec();
        lookbacks.push(recommended.lookback_days);
        lookbacks.sort_unstable();
        lookbacks.dedup();
        for lookback_days in lookbacks {
            // A lookback longer than the log admits everyone it can.
            if f64::from(lookback_days) > profile.span_days.max(7.0) {
                break;
            }
            let policy = LabelPolicy {
                lookback_days,
                ..self.policy.clone()
            };
            let eligible = eligible_users(&*self.features, &policy, cutoff)
                .await?
                .len();
            // Of every user in the store, as `churn train` counts.
            profile.eligibility.push(Eligibility {
                lookback_days,
                eligible_users: eligible as u64,
                share: eligible as f64 / profile.users.max(1) as f64,
            });
        }
        profile.recommended = Some(recommended);
        self.hints(&mut profile);
        Ok(profile)
    }

    /// Every finding that needs action, each with the value to set.
    fn hints(&self, p: &mut Profile) {
        // The recommendation's own reasons say why; the hint adds the value
        // in use. (An eligibility share alone is no reason to lengthen the
        // lookback: on a log whose users mostly left long ago, a longer one
        // only adds users who are trivially churned.)
        if let Some(r) = &p.recommended {
            let why = |key: &str| -> String {
                r.reasons
                    .iter()
                    .find(|x| x.starts_with(key))
                    .and_then(|x| x.split_once(": "))
                    .map(|(_, why)| why.to_string())
                    .unwrap_or_default()
            };
            if r.horizon_days != self.policy.horizon_days {
                p.hints.push(format!(
                    "set training.horizon_days = {} (now {}): {}",
                    r.horizon_days,
                    self.policy.horizon_days,
                    why("training.horizon_days")
                ));
            }
            if r.lookback_days != self.policy.lookback_days {
                let share = p
                    .eligibility
                    .iter()
                    .find(|e| e.lookback_days == r.lookback_days)
                    .map(|e| {
                        format!(
                            " ({:.0}% of the users are eligible with it)",
                            100.0 * e.share
                        )
                    })
                    .unwrap_or_default();
                p.hints.push(format!(
                    "set training.lookback_days = {} (now {}): {}{share}",
                    r.lookback_days,
                    self.policy.lookback_days,
                    why("training.lookback_days")
                ));
            }
        }
        if let Some(g) = p.median_gap_days
            && g > f64::from(self.policy.horizon_days)
            && p.recommended
                .as_ref()
                .is_none_or(|r| r.horizon_days == self.policy.horizon_days)
        {
            p.hints.push(format!(
                "the median user comes back every {g:.0} days, longer than training.horizon_days = {}: \
                 most returns fall outside the horizon, so most users look churned",
                self.policy.horizon_days
            ));
        }
        if !p.constant_features.is_empty() {
            p.hints.push(format!(
                "{} of {} features are constant: run `churn features suggest --out features.toml` \
                 and set features.spec_file = \"features.toml\"",
                p.constant_features.len(),
                p.features
            ));
        }
        if p.refunds.is_some() && !self.spec.defs().iter().any(|d| d.amount_sign.is_some()) {
            p.hints.push(
                "the log has refunds (negative amounts) the spec does not tell apart: `churn features \
                 suggest` adds refund features (amount_sign = \"negative\")"
                    .into(),
            );
        }
        let churn_like: Vec<&str> = p
            .event_types
            .iter()
            .map(|t| t.event_type.as_str())
            .filter(|t| {
                [
                    "cancel",
                    "unsubscribe",
                    "churn",
                    "close_account",
                    "delete_account",
                    "deactivat",
                ]
                .iter()
                .any(|k| t.contains(k))
            })
            .collect();
        if !churn_like.is_empty() && self.policy.churn_event_types.is_empty() {
            p.hints.push(format!(
                "types {churn_like:?} look like explicit churn: with training.churn_event_types = {churn_like:?} \
                 churn means one of them with no activity after it, instead of inactivity"
            ));
        }
    }
}

fn refunds(types: &[TypeCount]) -> Option<Refunds> {
    let events: u64 = types.iter().map(|t| t.with_negative_amount).sum();
    if events == 0 {
        return None;
    }
    let with_amount: u64 = types.iter().map(|t| t.with_amount).sum();
    let refunded: f64 = -types.iter().map(|t| t.negative_amount_sum).sum::<f64>();
    let sold: f64 = types.iter().map(|t| t.positive_amount_sum).sum();
    Some(Refunds {
        events,
        share_of_amount_events: events as f64 / with_amount.max(1) as f64,
        share_of_revenue: if sold > 0.0 { refunded / sold } else { 0.0 },
        event_types: types
            .iter()
            .filter(|t| t.with_negative_amount > 0)
            .map(|t| t.event_type.clone())
            .collect(),
    })
}

fn constant_columns(s: &crate::domain::snapshot::FeatureSnapshot) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let n = s.feature_names().len();
    let first = s.rows_f64(0..1);
    let mut constant = vec![true; n];
    for i in 1..s.len() {
        let row = s.rows_f64(i..i + 1);
        for j in 0..n {
            constant[j] &= row[j] == first[j];
        }
    }
    s.feature_names()
        .iter()
        .zip(constant)
        .filter(|(_, c)| *c)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::generate::{GeneratorOptions, generate};
    use crate::testing::MemoryStore;

    #[tokio::test]
    async fn profile_of_generated_data() {
        let store = MemoryStore::new(3);
        let mut events = Vec::new();
        generate(
            GeneratorOptions {
                users: 200,
                days: 120,
                end: 1_780_000_000,
                seed: 1,
                churn_share: 0.35,
                string_ids: false,
            },
            |e| events.push(e),
        );
        store.append(events).await.unwrap();
        let p = ProfileData::new(
            Arc::new(store.clone()),
            Arc::new(store),
            Arc::new(FeatureSpec::standard()),
            LabelPolicy::inactivity(30, 30),
        )
        .run()
        .await
        .unwrap();
        // Some generated users have no event inside the 120 days.
        assert!(p.users > 150 && p.users <= 200, "{}", p.users);
        assert!(
            p.span_days > 100.0 && p.span_days <= 120.0,
            "{}",
            p.span_days
        );
        assert!(p.event_types.iter().any(|t| t.event_type == "login"));
        let shares: Vec<f64> = p.eligibility.iter().map(|e| e.share).collect();
        assert!(
            shares.windows(2).all(|w| w[0] <= w[1]),
            "longer lookbacks admit more: {shares:?}"
        );
        assert!(p.median_gap_days.is_some_and(|g| g > 0.0));
        assert!(p.users_at_cutoff > 0 && p.users_at_cutoff <= p.users);
    }
}
