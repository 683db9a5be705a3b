//! Step 5: calibration (fitted on the selection half, kept only when it
//! lowers log loss on the report half), reliability tables and curves.

use std::sync::Arc;

use super::choose::Chosen;
use super::sets::Sets;
use super::{TrainError, TrainModel};
use crate::domain::calibration::{
    Calibration, CalibrationMethod, CalibrationReport, fit as fit_calibration, keep_calibration,
    reliability,
};
use crate::domain::curves::curves;
use crate::domain::metrics::log_loss;
use crate::domain::model::ModelReport;

impl TrainModel {
    /// Calibration, reliability and curves of the chosen model. The
    /// calibration is fitted on the selection half (never trained on) and
    /// judged on the report half (used for neither the fit nor the choice).
    pub(super) async fn report(
        &self,
        sets: &Sets,
        chosen: &Chosen,
    ) -> Result<(ModelReport, Option<Calibration>), TrainError> {
        let method = self.options.calibration;
        let classifier = chosen.classifier.clone();
        let (select, report) = (sets.select.clone(), sets.report.clone());
        let held_out = !Arc::ptr_eq(&sets.select, &sets.report)
            && sets.select.user_ids != sets.report.user_ids;
        tokio::task::spawn_blocking(move || -> Result<_, TrainError> {
            let fit_raw = classifier.predict_proba(&select.rows)?;
            let raw = classifier.predict_proba(&report.rows)?;
            let raw_logloss = log_loss(&raw, &report.labels)?;
            let fitted = if held_out {
                fit_calibration(method, &fit_raw, &select.labels)
            } else {
                None
            };
            let calibrated: Option<Vec<f64>> = fitted
                .as_ref()
                .map(|c| raw.iter().map(|p| c.apply(*p)).collect());
            let calibrated_logloss = match &calibrated {
                Some(c) => Some(log_loss(c, &report.labels)?),
                None => None,
            };
            let keep = calibrated_logloss.is_some_and(|c| keep_calibration(raw_logloss, c));
            let decision = match (method, held_out, calibrated_logloss) {
                (CalibrationMethod::None, _, _) => {
                    "calibration is off (training.calibration)".into()
                }
                (_, false, _) => {
                    "not fitted: the validation set is too small to hold rows out".into()
                }
                (_, _, None) => "not fitted: the held-out rows hold one class".into(),
                (m, _, Some(c)) if keep => format!(
                    "{} kept: log loss {raw_logloss:.5} -> {c:.5} on rows used for neither fit",
                    m.as_str()
                ),
                (m, _, Some(c)) => format!(
                    "{} dropped: log loss {raw_logloss:.5} -> {c:.5} does not improve",
                    m.as_str()
                ),
            };
            let calibration = CalibrationReport {
                method,
                applied: keep,
                raw_logloss: Some(raw_logloss),
                calibrated_logloss,
                fitted_rows: if fitted.is_some() { select.len() } else { 0 },
                evaluated_rows: report.len(),
                decision,
            };
            let calibrated_reliability = match (&calibrated, keep) {
                (Some(c), true) => Some(reliability(c, &report.labels)),
                _ => None,
            };
            Ok((
                ModelReport {
                    reliability: reliability(&raw, &report.labels),
                    calibrated_reliability,
                    calibration: Some(calibration),
                    curves: curves(&raw, &report.labels),
                },
                fitted.filter(|_| keep),
            ))
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))?
    }
}
