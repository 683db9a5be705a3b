//! Step 3: both candidates (GBDT and the logistic baseline) fitted off the
//! async runtime and evaluated, with the recency rule, on both validation
//! halves and on all validation rows.

use std::sync::Arc;
use std::time::Instant;

use super::sets::Sets;
use super::{TrainError, TrainModel};
use crate::application::ports::ModelTrainer;
use crate::domain::metrics::{Evaluation, evaluate, roc_auc};
use crate::domain::model::{Blend, Classifier, Dataset, ModelKind};

/// Blend weights tried: 0, 0.1, …, 1.
const BLEND_STEPS: u32 = 10;

/// A fitted candidate with its figures on both validation halves and on
/// all of the validation rows (the gate's).
pub(super) struct Candidate {
    pub(super) classifier: Arc<dyn Classifier>,
    pub(super) select: Evaluation,
    pub(super) report: Evaluation,
    pub(super) all: Evaluation,
}

/// Both candidates, their blend and the recency rule.
pub(super) struct Fitted {
    pub(super) gbdt: Candidate,
    pub(super) logistic: Candidate,
    /// The two mixed in log-odds, the weight chosen on the selection half.
    pub(super) blend: Candidate,
    pub(super) blend_weight: f64,
    pub(super) recency_report: f64,
    pub(super) recency_all: f64,
    pub(super) train_rows: usize,
    pub(super) train_churn_rate: f64,
    /// GBDT fit seconds.
    pub(super) secs: f64,
    pub(super) logistic_secs: f64,
}

impl TrainModel {
    /// Fits both candidates off the async runtime.
    pub(super) async fn fit(&self, sets: &Sets) -> Result<Fitted, TrainError> {
        let recency = self.spec.recency_index();
        let trainer = self.trainer.clone();
        let (train, all, select, report) = (
            sets.train.clone(),
            sets.validation.clone(),
            sets.select.clone(),
            sets.report.clone(),
        );
        tokio::task::spawn_blocking(move || {
            fit(&*trainer, &train, [&*select, &*report, &*all], recency)
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))?
    }
}

/// Fits both models and evaluates them, plus the recency rule, on both
/// validation halves.
fn fit(
    trainer: &dyn ModelTrainer,
    train: &Dataset,
    [select, report, all]: [&Dataset; 3],
    recency: Option<usize>,
) -> Result<Fitted, TrainError> {
    let started = Instant::now();
    let gbdt = trainer.train(ModelKind::Gbdt, train)?;
    let secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let logistic = trainer.train(ModelKind::Logistic, train)?;
    let logistic_secs = started.elapsed().as_secs_f64();
    let scores = |c: &Arc<dyn Classifier>| -> Result<[Vec<f64>; 3], TrainError> {
        Ok([
            c.predict_proba(&select.rows)?,
            c.predict_proba(&report.rows)?,
            c.predict_proba(&all.rows)?,
        ])
    };
    let candidate =
        |classifier: Arc<dyn Classifier>, s: &[Vec<f64>; 3]| -> Result<Candidate, TrainError> {
            Ok(Candidate {
                select: evaluate(&s[0], &select.labels)?,
                report: evaluate(&s[1], &report.labels)?,
                all: evaluate(&s[2], &all.labels)?,
                classifier,
            })
        };
    let (g, l) = (scores(&gbdt)?, scores(&logistic)?);
    // The blend's weight: the best selection-half AUC over a grid (log
    // loss breaks ties); the report half never sees the choice.
    let mut best: Option<(f64, f64, f64)> = None;
    for step in 0..=BLEND_STEPS {
        let weight = f64::from(step) / f64::from(BLEND_STEPS);
        let mix = Blend {
            gbdt: gbdt.clone(),
            logistic: logistic.clone(),
            weight,
        };
        let p: Vec<f64> = g[0]
            .iter()
            .zip(&l[0])
            .map(|(a, b)| mix.mix(*a, *b))
            .collect();
        let e = evaluate(&p, &select.labels)?;
        if best.is_none_or(|(_, auc, ll)| e.auc > auc || (e.auc == auc && e.logloss < ll)) {
            best = Some((weight, e.auc, e.logloss));
        }
    }
    let blend_weight = best.map_or(0.5, |b| b.0);
    let blend = Blend {
        gbdt: gbdt.clone(),
        logistic: logistic.clone(),
        weight: blend_weight,
    };
    let mixed: [Vec<f64>; 3] = std::array::from_fn(|k| {
        g[k].iter()
            .zip(&l[k])
            .map(|(a, b)| blend.mix(*a, *b))
            .collect()
    });
    // More days since the last event = more likely churned. Without a
    // recency feature the rule is chance.
    let recency_auc = |d: &Dataset| -> Result<f64, TrainError> {
        Ok(match recency {
            Some(j) => roc_auc(&d.column(j), &d.labels)?,
            None => 0.5,
        })
    };
    Ok(Fitted {
        blend: candidate(Arc::new(blend), &mixed)?,
        blend_weight,
        gbdt: candidate(gbdt, &g)?,
        logistic: candidate(logistic, &l)?,
        recency_report: recency_auc(report)?,
        recency_all: recency_auc(all)?,
        train_rows: train.len(),
        train_churn_rate: train.positive_rate(),
        secs,
        logistic_secs,
    })
}
