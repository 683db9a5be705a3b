//! Step 4: which candidate becomes the registered version (chosen on the
//! selection half, reported on the other), and the features that tell the
//! model nothing.

use std::sync::Arc;

use super::TrainModel;
use super::fit::Fitted;
use crate::domain::model::{Classifier, Dataset, ModelKind, ModelMetrics};
use crate::domain::training::ModelSelection;

/// The candidate that becomes the registered version.
pub(super) struct Chosen {
    pub(super) kind: ModelKind,
    pub(super) classifier: Arc<dyn Classifier>,
    /// On all validation rows (what the promotion gate sees).
    pub(super) gate: ModelMetrics,
    /// On the report half (what is recorded).
    pub(super) report: ModelMetrics,
    pub(super) selection: String,
}

impl TrainModel {
    pub(super) fn choose(&self, fitted: &Fitted) -> Chosen {
        let logistic_wins = self.options.selection == ModelSelection::Best
            && fitted.logistic.select.auc > fitted.gbdt.select.auc;
        let (kind, c) = if logistic_wins {
            (ModelKind::Logistic, &fitted.logistic)
        } else {
            (ModelKind::Gbdt, &fitted.gbdt)
        };
        Chosen {
            kind,
            classifier: c.classifier.clone(),
            gate: ModelMetrics::from_evaluation(c.all, fitted.recency_all),
            report: ModelMetrics::from_evaluation(c.report, fitted.recency_report),
            selection: format!(
                "selected {} on the selection half (AUC gbdt {:.4}, logistic {:.4}); figures from the other half",
                kind.as_str(),
                fitted.gbdt.select.auc,
                fitted.logistic.select.auc
            ),
        }
    }
}

/// Names of the features with one value across all rows.
pub(super) fn constant_features(d: &Dataset) -> Vec<String> {
    let n = d.n_features();
    if d.is_empty() {
        return Vec::new();
    }
    (0..n)
        .filter(|&j| {
            let first = d.row(0)[j];
            (1..d.len()).all(|i| d.row(i)[j] == first)
        })
        .map(|j| d.feature_names[j].clone())
        .collect()
}
