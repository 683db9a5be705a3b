//! Step 4: which candidate becomes the registered version (chosen on the
//! selection half, reported on the other), and the features that tell the
//! model nothing.

use std::sync::Arc;

use super::TrainModel;
use super::fit::{Candidate, Fitted};
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
    /// The candidate with the best selection-half AUC: the GBDT, the
    /// logistic model, or their blend (a blend at weight 0 or 1 is one of
    /// them, registered as that one). `model_selection = "gbdt"` always
    /// takes the GBDT.
    pub(super) fn choose(&self, fitted: &Fitted) -> Chosen {
        let mut candidates = vec![(ModelKind::Gbdt, &fitted.gbdt)];
        if self.options.selection == ModelSelection::Best {
            candidates.push((ModelKind::Logistic, &fitted.logistic));
            if fitted.blend_weight > 0.0 && fitted.blend_weight < 1.0 {
                candidates.push((ModelKind::Blend, &fitted.blend));
            }
        }
        let (kind, c) = candidates
            .into_iter()
            .fold(None::<(ModelKind, &Candidate)>, |best, (k, c)| match best {
                Some((_, b)) if b.select.auc >= c.select.auc => best,
                _ => Some((k, c)),
            })
            .unwrap_or((ModelKind::Gbdt, &fitted.gbdt));
        Chosen {
            kind,
            classifier: c.classifier.clone(),
            gate: ModelMetrics::from_evaluation(c.all, fitted.recency_all),
            report: ModelMetrics::from_evaluation(c.report, fitted.recency_report),
            selection: format!(
                "selected {} on the selection half (AUC gbdt {:.4}, logistic {:.4}, blend {:.4} at gbdt weight {:.1}); figures from the other half",
                kind.as_str(),
                fitted.gbdt.select.auc,
                fitted.logistic.select.auc,
                fitted.blend.select.auc,
                fitted.blend_weight
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
