//! Training policy: the GBDT hyperparameters, which candidate becomes the
//! registered version, and the champion/challenger promotion rule. Pure
//! decisions over numbers; the use case gathers the numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// GBDT hyperparameters (`[training.gbdt]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GbdtParams {
    pub iterations: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    pub min_leaf_weight: f32,
    pub l2: f32,
    pub seed: u64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        Self {
            iterations: 300,
            learning_rate: 0.05,
            max_depth: 3,
            min_leaf_weight: 20.0,
            l2: 1.0,
            seed: 0,
        }
    }
}

/// Which candidate becomes the registered version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSelection {
    /// The GBDT unless the logistic baseline scores a higher validation AUC
    /// (small or near-linear data): serve whichever is better.
    Best,
    /// Always the GBDT (the baseline is only reported).
    Gbdt,
}

/// The model serving now, as the challenger is compared with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Champion {
    pub version: u64,
    /// Its AUC on the challenger's validation rows; `None` when it was
    /// trained on another feature spec: it cannot score these rows, and it
    /// cannot serve this spec's snapshots either.
    pub auc: Option<f64>,
}

/// How strict promotion is (`[training]` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromotionPolicy {
    /// A challenger may trail the champion's AUC by this much and still win.
    pub tolerance: f64,
    /// Skip the champion comparison (first deploys, demos); the recency
    /// gate still applies.
    pub force: bool,
}

/// What the gate decided, with the figures it decided on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PromotionDecision {
    /// No production model yet.
    FirstModel,
    /// Production was trained on another feature spec (it cannot serve the
    /// current one's snapshots), so there is nothing to compare with.
    ReplacesOtherSpec { over: u64 },
    /// Promoted over `over` without comparing (forced).
    Forced { over: u64 },
    /// Within the tolerance of (or better than) the champion.
    BeatsChampion {
        over: u64,
        auc: f64,
        champion_auc: f64,
        tolerance: f64,
    },
    /// Not better than ranking users by recency alone: worthless.
    NoBetterThanRecency { auc: f64, recency_auc: f64 },
    /// Worse than the champion by more than the tolerance.
    WorseThanChampion {
        champion: u64,
        auc: f64,
        champion_auc: f64,
        tolerance: f64,
    },
}

impl PromotionDecision {
    /// Whether `production` moves to the challenger.
    pub fn promotes(&self) -> bool {
        matches!(
            self,
            Self::FirstModel
                | Self::ReplacesOtherSpec { .. }
                | Self::Forced { .. }
                | Self::BeatsChampion { .. }
        )
    }
}

impl fmt::Display for PromotionDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::FirstModel => write!(f, "promoted: no production model yet"),
            Self::ReplacesOtherSpec { over } => write!(
                f,
                "promoted over v{over}, which was trained on another feature spec and cannot serve this one's snapshots"
            ),
            Self::Forced { over } => write!(f, "promoted over version {over}: forced"),
            Self::BeatsChampion {
                over,
                auc,
                champion_auc,
                tolerance,
            } => write!(
                f,
                "promoted: AUC {auc:.4} vs production v{over}'s {champion_auc:.4} on the same validation set (tolerance {tolerance})"
            ),
            Self::NoBetterThanRecency { auc, recency_auc } => write!(
                f,
                "not promoted: AUC {auc:.4} does not beat the recency rule's {recency_auc:.4}"
            ),
            Self::WorseThanChampion {
                champion,
                auc,
                champion_auc,
                tolerance,
            } => write!(
                f,
                "not promoted: AUC {auc:.4} is worse than production v{champion}'s {champion_auc:.4} by more than {tolerance}"
            ),
        }
    }
}

/// The champion/challenger rule: a challenger must beat the recency rule;
/// then it wins if there is no champion, if forced, or if its AUC is at
/// most `tolerance` below the champion's on the same rows.
pub fn decide_promotion(
    auc: f64,
    recency_auc: f64,
    champion: Option<Champion>,
    policy: PromotionPolicy,
) -> PromotionDecision {
    if auc <= recency_auc {
        return PromotionDecision::NoBetterThanRecency { auc, recency_auc };
    }
    let tolerance = policy.tolerance;
    let Some(c) = champion else {
        return PromotionDecision::FirstModel;
    };
    let Some(champion_auc) = c.auc else {
        return PromotionDecision::ReplacesOtherSpec { over: c.version };
    };
    if policy.force {
        return PromotionDecision::Forced { over: c.version };
    }
    if auc >= champion_auc - tolerance {
        PromotionDecision::BeatsChampion {
            over: c.version,
            auc,
            champion_auc,
            tolerance,
        }
    } else {
        PromotionDecision::WorseThanChampion {
            champion: c.version,
            auc,
            champion_auc,
            tolerance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: PromotionPolicy = PromotionPolicy {
        tolerance: 0.01,
        force: false,
    };

    fn champ(auc: f64) -> Option<Champion> {
        Some(Champion {
            version: 3,
            auc: Some(auc),
        })
    }

    #[test]
    fn the_recency_gate_comes_first_even_when_forced() {
        let forced = PromotionPolicy {
            force: true,
            ..STRICT
        };
        for policy in [STRICT, forced] {
            let d = decide_promotion(0.70, 0.70, None, policy);
            assert_eq!(
                d,
                PromotionDecision::NoBetterThanRecency {
                    auc: 0.70,
                    recency_auc: 0.70
                }
            );
            assert!(!d.promotes());
        }
    }

    #[test]
    fn champion_comparison_honours_the_tolerance() {
        assert_eq!(
            decide_promotion(0.80, 0.6, None, STRICT),
            PromotionDecision::FirstModel
        );
        assert!(decide_promotion(0.795, 0.6, champ(0.80), STRICT).promotes());
        let worse = decide_promotion(0.78, 0.6, champ(0.80), STRICT);
        assert!(matches!(
            worse,
            PromotionDecision::WorseThanChampion { champion: 3, .. }
        ));
        assert!(worse.to_string().starts_with("not promoted"));
        let forced = PromotionPolicy {
            force: true,
            ..STRICT
        };
        assert_eq!(
            decide_promotion(0.78, 0.6, champ(0.80), forced),
            PromotionDecision::Forced { over: 3 }
        );
        // A champion of another spec is replaced, not compared (its recorded
        // AUC was measured on other features and maybe other labels).
        let other = Some(Champion {
            version: 3,
            auc: None,
        });
        let d = decide_promotion(0.70, 0.6, other, STRICT);
        assert_eq!(d, PromotionDecision::ReplacesOtherSpec { over: 3 });
        assert!(d.promotes());
        assert!(!decide_promotion(0.55, 0.6, other, STRICT).promotes());
    }
}
