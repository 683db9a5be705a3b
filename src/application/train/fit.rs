//! Step 3: both candidates (GBDT and the logistic baseline) fitted off the
//! async runtime and evaluated, with the recency rule, on both validation
//! halves and on all validation rows.

use std::sync::Arc;
use std::time::Instant;

use super::sets::Sets;
use super::{TrainError, TrainModel};
use crate::application::ports::ModelTrainer;
use crate::domain::metrics::{Evaluation, evaluate, roc_auc};
use crate::domain::model::{Classifier, Dataset, ModelKind};

/// A fitted candidate with its figures on both validation halves and on
/// all of the validation rows (the gate's).
pub(super) struct Candidate {
    pub(super) classifier: Arc<dyn Classifier>,
    pub(super) select: Evaluation,
    pub(super) report: Evaluation,
    pub(super) all: Evaluation,
}

/// Both candidates and the recency rule.
pub(super) struct Fitted {
    pub(super) gbdt: Candidate,
    pub(super) logistic: Candidate,
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
    let candidate = |classifier: Arc<dyn Classifier>| -> Result<Candidate, TrainError> {
        Ok(Candidate {
            select: evaluate(&classifier.predict_proba(&select.rows)?, &select.labels)?,
            report: evaluate(&classifier.predict_proba(&report.rows)?, &report.labels)?,
            all: evaluate(&classifier.predict_proba(&all.rows)?, &all.labels)?,
            classifier,
        })
    };
    // More days since the last event = more likely churned. Without a
    // recency feature the rule is chance.
    let recency_auc = |d: &Dataset| -> Result<f64, TrainError> {
        Ok(match recency {
            Some(j) => roc_auc(&d.column(j), &d.labels)?,
            None => 0.5,
        })
    };
    Ok(Fitted {
        gbdt: candidate(gbdt)?,
        logistic: candidate(logistic)?,
        recency_report: recency_auc(report)?,
        recency_all: recency_auc(all)?,
        train_rows: train.len(),
        train_churn_rate: train.positive_rate(),
        secs,
        logistic_secs,
    })
}
