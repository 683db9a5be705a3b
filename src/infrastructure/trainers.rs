//! `ForustTrainer`: fits the main model with `forust-ml` (pure-Rust gradient
//! boosting) and the baseline, an L2-penalised logistic regression, by
//! Newton's method (see [`newton_logistic`] for why by hand). The baseline
//! keeps only the fitted coefficients and scores with
//! `domain::model::LogisticModel`.

use std::fmt;
use std::sync::Arc;

use forust_ml::GradientBooster;
use forust_ml::data::Matrix;
use forust_ml::gradientbooster::ContributionsMethod;

use crate::application::ports::ModelTrainer;
use crate::domain::math::sigmoid;
use crate::domain::model::{
    Blend, BlendFile, Classifier, Dataset, LogisticModel, ModelError, ModelKind, row_count,
};
use crate::domain::training::GbdtParams;

/// L2 penalty of the logistic baseline (features are standardised first).
const LOGISTIC_ALPHA: f64 = 1.0;

/// Trainer backed by forust-ml (GBDT) and a Newton logistic fit.
#[derive(Debug, Clone, Default)]
pub struct ForustTrainer {
    pub gbdt: GbdtParams,
}

/// A fitted forust model that outputs probabilities.
pub struct GbdtModel {
    booster: GradientBooster,
    n_features: usize,
}

impl fmt::Debug for GbdtModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbdtModel")
            .field("trees", &self.booster.trees.len())
            .field("n_features", &self.n_features)
            .finish()
    }
}

/// What `model.bin` holds for a GBDT: forust's JSON plus the input width
/// (forust does not record it).
#[derive(serde::Serialize, serde::Deserialize)]
struct GbdtFile {
    n_features: usize,
    booster: serde_json::Value,
}

impl Classifier for GbdtModel {
    fn kind(&self) -> ModelKind {
        ModelKind::Gbdt
    }
    fn n_features(&self) -> usize {
        self.n_features
    }
    fn predict_proba(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let n = row_count(rows, self.n_features)?;
        let columns = column_major(rows, n, self.n_features);
        let matrix = Matrix::new(&columns, n, self.n_features);
        // forust returns log-odds for the log-loss objective.
        Ok(self
            .booster
            .predict(&matrix, n > 1024)
            .into_iter()
            .map(sigmoid)
            .collect())
    }
    fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let n = row_count(rows, self.n_features)?;
        let columns = column_major(rows, n, self.n_features);
        let matrix = Matrix::new(&columns, n, self.n_features);
        // TreeSHAP: exact Shapley values of the trees, in log-odds, the
        // bias (expected log-odds) last in each row.
        Ok(self
            .booster
            .predict_contributions(&matrix, ContributionsMethod::Shapley, n > 1024))
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let booster = self
            .booster
            .json_dump()
            .map_err(|e| ModelError::Codec(e.to_string()))?;
        let file = GbdtFile {
            n_features: self.n_features,
            booster: serde_json::from_str(&booster)
                .map_err(|e| ModelError::Codec(e.to_string()))?,
        };
        serde_json::to_vec(&file).map_err(|e| ModelError::Codec(e.to_string()))
    }
}

/// forust wants column-major data; a single row is the same either way.
fn column_major(rows: &[f64], n_rows: usize, n_cols: usize) -> Vec<f64> {
    if n_rows == 1 {
        rows.to_vec()
    } else {
        transpose(rows, n_rows, n_cols)
    }
}

fn transpose(rows: &[f64], n_rows: usize, n_cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows.len()];
    for i in 0..n_rows {
        for j in 0..n_cols {
            out[j * n_rows + i] = rows[i * n_cols + j];
        }
    }
    out
}

impl ForustTrainer {
    fn train_gbdt(&self, data: &Dataset) -> Result<GbdtModel, ModelError> {
        let n = data.n_features();
        let columns = transpose(&data.rows, data.len(), n);
        let matrix = Matrix::new(&columns, data.len(), n);
        let y: Vec<f64> = data
            .labels
            .iter()
            .map(|l| f64::from(u8::from(*l)))
            .collect();
        let weights = vec![1.0; y.len()];
        let p = self.gbdt;
        let mut booster = GradientBooster::default()
            .set_iterations(p.iterations)
            .set_learning_rate(p.learning_rate)
            .set_max_depth(p.max_depth)
            .set_min_leaf_weight(p.min_leaf_weight)
            .set_l2(p.l2)
            .set_seed(p.seed);
        booster
            .fit(&matrix, &y, &weights, None)
            .map_err(|e| ModelError::Training(e.to_string()))?;
        Ok(GbdtModel {
            booster,
            n_features: n,
        })
    }

    fn train_logistic(data: &Dataset) -> Result<LogisticModel, ModelError> {
        let n = data.n_features();
        let rows = data.len();
        // Non-negative columns (counts, amounts, days) are heavy-tailed: a
        // linear model does better on ln(1 + x) (measured on two real logs:
        // +0.01 to +0.02 AUC). Then standardise so one penalty fits all
        // features and LBFGS converges.
        let bounds: Vec<(f64, f64)> = (0..n)
            .map(|j| {
                (0..rows).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), i| {
                    let x = data.row(i)[j];
                    (lo.min(x), hi.max(x))
                })
            })
            .collect();
        let log1p: Vec<bool> = bounds.iter().map(|(lo, _)| *lo >= 0.0).collect();
        let mut model = LogisticModel {
            coefficients: vec![0.0; n],
            intercept: 0.0,
            means: vec![0.0; n],
            scales: vec![1.0; n],
            log1p,
            bounds,
        };
        // One working copy, not three: rows with a trailing 1 for the
        // intercept (what the Newton passes read), transformed, then
        // standardised in place. At 1M rows × 54 features each copy is
        // 0.4 GB; the transformed and standardised copies made before were
        // most of `churn train`'s peak memory (bench/scale.sh).
        let d = n + 1;
        let mut xa = Vec::with_capacity(rows * d);
        for i in 0..rows {
            let row = data.row(i);
            xa.extend(row.iter().enumerate().map(|(j, x)| model.transform(j, *x)));
            xa.push(1.0);
        }
        for j in 0..n {
            let col = xa.iter().skip(j).step_by(d);
            let mean = col.clone().sum::<f64>() / rows as f64;
            let var = col.map(|x| (x - mean).powi(2)).sum::<f64>() / rows as f64;
            model.means[j] = mean;
            model.scales[j] = if var > 1e-12 { var.sqrt() } else { 1.0 };
        }
        for row in xa.chunks_exact_mut(d) {
            for ((x, mean), scale) in row.iter_mut().zip(&model.means).zip(&model.scales) {
                *x = (*x - mean) / scale;
            }
        }
        let (coefficients, intercept) = newton_logistic(&xa, &data.labels, n, LOGISTIC_ALPHA)?;
        model.coefficients = coefficients;
        model.intercept = intercept;
        Ok(model)
    }
}

/// Newton's method (IRLS) on `Σ log loss + alpha/2 ‖w‖²` (intercept not
/// penalised): the objective smartcore's LBFGS minimised, reached in a
/// handful of steps, each one pass over the rows building the (p+1)²
/// Hessian. Written by hand because smartcore's fit was 14 of the 22 s of
/// `churn train` on 26k rows × 54 features (bench/train.sh), and the
/// penalty makes the problem strictly convex, so plain Newton with step
/// halving converges from zero. The passes over the rows are split over
/// the machine's cores; the sums are added in a fixed order, so the fit is
/// the same on every run of one machine.
///
/// `xa` holds the rows with a trailing 1 for the intercept (p + 1 values
/// each): every inner loop is then a plain slice product the compiler
/// vectorises.
fn newton_logistic(
    xa: &[f64],
    y: &[bool],
    p: usize,
    alpha: f64,
) -> Result<(Vec<f64>, f64), ModelError> {
    let n = y.len();
    let d = p + 1; // the intercept is the last parameter
    let blocks = row_blocks(n);
    let penalty = |theta: &[f64]| 0.5 * alpha * theta[..p].iter().map(|w| w * w).sum::<f64>();
    let loss = |theta: &[f64]| -> f64 {
        penalty(theta)
            + in_parallel(&blocks, |rows| {
                let mut f = 0.0;
                for i in rows {
                    let z = dot(&xa[i * d..(i + 1) * d], theta);
                    // log(1 + e^z) - y z, stable for large |z|.
                    f += z.max(0.0) + (-z.abs()).exp().ln_1p() - if y[i] { z } else { 0.0 };
                }
                f
            })
            .into_iter()
            .sum::<f64>()
    };
    let mut theta = vec![0.0; d];
    let mut current = loss(&theta);
    for _ in 0..100 {
        let parts = in_parallel(&blocks, |rows| {
            let mut g = vec![0.0; d];
            // Lower triangle only, row-major; mirrored below.
            let mut h = vec![0.0; d * d];
            for i in rows {
                let row = &xa[i * d..(i + 1) * d];
                let mu = sigmoid(dot(row, &theta));
                let r = mu - f64::from(u8::from(y[i]));
                let s = mu * (1.0 - mu);
                for (a, &xv) in row.iter().enumerate() {
                    g[a] += r * xv;
                    let sxa = s * xv;
                    for (hb, xb) in h[a * d..a * d + a + 1].iter_mut().zip(&row[..=a]) {
                        *hb += sxa * xb;
                    }
                }
            }
            (g, h)
        });
        let mut parts = parts.into_iter();
        let (mut g, mut h) = parts
            .next()
            .unwrap_or_else(|| (vec![0.0; d], vec![0.0; d * d]));
        for (pg, ph) in parts {
            g.iter_mut().zip(&pg).for_each(|(a, b)| *a += b);
            h.iter_mut().zip(&ph).for_each(|(a, b)| *a += b);
        }
        for a in 0..d {
            for b in 0..a {
                h[b * d + a] = h[a * d + b];
            }
            if a < p {
                g[a] += alpha * theta[a];
                h[a * d + a] += alpha;
            } else {
                h[a * d + a] += 1e-9;
            }
        }
        let step = cholesky_solve(&mut h, &g, d)
            .ok_or_else(|| ModelError::Training("logistic: singular Hessian".into()))?;
        let mut t = 1.0;
        let mut next: Vec<f64>;
        loop {
            next = theta.iter().zip(&step).map(|(v, s)| v - t * s).collect();
            let f = loss(&next);
            if f <= current || t < 1e-6 {
                current = f;
                break;
            }
            t *= 0.5;
        }
        let moved = step.iter().map(|s| (t * s).abs()).fold(0.0, f64::max);
        theta = next;
        if moved < 1e-8 * (1.0 + theta.iter().map(|v| v.abs()).fold(0.0, f64::max)) {
            break;
        }
    }
    if !theta.iter().all(|v| v.is_finite()) {
        return Err(ModelError::Training("logistic: fit diverged".into()));
    }
    let intercept = theta[p];
    theta.truncate(p);
    Ok((theta, intercept))
}

/// Below this many rows per core, one thread does a pass.
const PARALLEL_MIN_ROWS: usize = 4_096;

/// `n` rows cut into one contiguous block per core (one block when small).
fn row_blocks(n: usize) -> Vec<std::ops::Range<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let k = cores.min(n / PARALLEL_MIN_ROWS).max(1);
    let per = n.div_ceil(k);
    (0..k).map(|b| b * per..((b + 1) * per).min(n)).collect()
}

/// `f` on every block, each on its own thread; results in block order.
fn in_parallel<R: Send>(
    blocks: &[std::ops::Range<usize>],
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    if blocks.len() == 1 {
        return vec![f(blocks[0].clone())];
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = blocks
            .iter()
            .map(|b| scope.spawn(move || f(b.clone())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `H s = g` for a symmetric positive definite `H` (row-major,
/// overwritten by its Cholesky factor); `None` when it is not.
fn cholesky_solve(h: &mut [f64], g: &[f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut diag = h[j * d + j];
        for k in 0..j {
            diag -= h[j * d + k] * h[j * d + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        h[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = h[i * d + j];
            for k in 0..j {
                v -= h[i * d + k] * h[j * d + k];
            }
            h[i * d + j] = v / diag;
        }
    }
    // L z = g, then Lᵀ s = z.
    let mut z = vec![0.0; d];
    for i in 0..d {
        let mut v = g[i];
        for k in 0..i {
            v -= h[i * d + k] * z[k];
        }
        z[i] = v / h[i * d + i];
    }
    let mut s = vec![0.0; d];
    for i in (0..d).rev() {
        let mut v = z[i];
        for k in i + 1..d {
            v -= h[k * d + i] * s[k];
        }
        s[i] = v / h[i * d + i];
    }
    Some(s)
}

impl ModelTrainer for ForustTrainer {
    fn train(&self, kind: ModelKind, data: &Dataset) -> Result<Arc<dyn Classifier>, ModelError> {
        if data.is_empty() || data.n_features() == 0 {
            return Err(ModelError::Training("empty training set".into()));
        }
        Ok(match kind {
            ModelKind::Gbdt => Arc::new(self.train_gbdt(data)?),
            ModelKind::Logistic => Arc::new(Self::train_logistic(data)?),
            // A blend's weight is chosen on held-out rows (the training use
            // case); fitted here alone, it is an even mix.
            ModelKind::Blend => Arc::new(Blend {
                gbdt: Arc::new(self.train_gbdt(data)?),
                logistic: Arc::new(Self::train_logistic(data)?),
                weight: 0.5,
            }),
        })
    }

    fn decode(&self, kind: ModelKind, bytes: &[u8]) -> Result<Arc<dyn Classifier>, ModelError> {
        let codec = |e: &dyn fmt::Display| ModelError::Codec(e.to_string());
        Ok(match kind {
            ModelKind::Gbdt => {
                let file: GbdtFile = serde_json::from_slice(bytes).map_err(|e| codec(&e))?;
                let booster =
                    GradientBooster::from_json(&file.booster.to_string()).map_err(|e| codec(&e))?;
                Arc::new(GbdtModel {
                    booster,
                    n_features: file.n_features,
                })
            }
            ModelKind::Logistic => {
                let m: LogisticModel = serde_json::from_slice(bytes).map_err(|e| codec(&e))?;
                Arc::new(m)
            }
            ModelKind::Blend => {
                let file: BlendFile = serde_json::from_slice(bytes).map_err(|e| codec(&e))?;
                if !(0.0..=1.0).contains(&file.weight) {
                    return Err(ModelError::Codec(format!(
                        "blend weight {} outside [0, 1]",
                        file.weight
                    )));
                }
                Arc::new(Blend {
                    gbdt: self.decode(ModelKind::Gbdt, file.gbdt.get().as_bytes())?,
                    logistic: self.decode(ModelKind::Logistic, file.logistic.get().as_bytes())?,
                    weight: file.weight,
                })
            }
        })
    }

    fn hyperparameters(&self, kind: ModelKind) -> serde_json::Value {
        match kind {
            ModelKind::Gbdt => serde_json::to_value(self.gbdt).unwrap_or_default(),
            ModelKind::Logistic => {
                serde_json::json!({ "alpha": LOGISTIC_ALPHA, "standardised": true })
            }
            ModelKind::Blend => serde_json::json!({
                "gbdt": self.hyperparameters(ModelKind::Gbdt),
                "logistic": self.hyperparameters(ModelKind::Logistic),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two informative features plus noise; label depends on a threshold.
    fn toy(n: usize, seed: u64) -> Dataset {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut d = Dataset {
            feature_names: vec!["a".into(), "b".into(), "noise".into()],
            ..Dataset::default()
        };
        for i in 0..n {
            let (a, b, c) = (rng.f64() * 10.0, rng.f64(), rng.f64());
            let churned = a + 3.0 * b + rng.f64() * 2.0 > 7.0;
            d.user_ids.push(i as u64);
            d.rows.extend([a, b, c]);
            d.labels.push(churned);
        }
        d
    }

    #[test]
    fn both_models_learn_roundtrip_and_output_probabilities() {
        let train = toy(2_000, 1);
        let test = toy(500, 2);
        let trainer = ForustTrainer::default();
        for kind in [ModelKind::Gbdt, ModelKind::Logistic] {
            let m = trainer.train(kind, &train).unwrap();
            let p = m.predict_proba(&test.rows).unwrap();
            assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
            let auc = crate::domain::metrics::roc_auc(&p, &test.labels).unwrap();
            assert!(auc > 0.85, "{kind:?} auc {auc}");
            let decoded = trainer.decode(kind, &m.to_bytes().unwrap()).unwrap();
            let q = decoded.predict_proba(&test.rows).unwrap();
            assert_eq!(p, q);
            // Row-by-row scoring equals batch scoring (serving vs training).
            let single = decoded.predict_proba(test.row(3)).unwrap();
            assert!((single[0] - p[3]).abs() < 1e-12);
        }
        assert!(trainer.decode(ModelKind::Gbdt, b"{}").is_err());
    }

    /// Both models' contributions sum to the logit of their probability,
    /// row by row and in batches, and an informative feature outweighs noise.
    #[test]
    fn contributions_sum_to_the_logit_of_the_probability() {
        let train = toy(2_000, 3);
        let test = toy(300, 4);
        let trainer = ForustTrainer::default();
        for kind in [ModelKind::Gbdt, ModelKind::Logistic] {
            let m = trainer.train(kind, &train).unwrap();
            let p = m.predict_proba(&test.rows).unwrap();
            let c = m.contributions(&test.rows).unwrap();
            assert_eq!(c.len(), test.len() * 4);
            for (row, p) in c.chunks_exact(4).zip(&p) {
                let logit = (p / (1.0 - p)).ln();
                let sum: f64 = row.iter().sum();
                assert!((sum - logit).abs() < 1e-6, "{kind:?}: {sum} vs {logit}");
            }
            let one = m.contributions(test.row(7)).unwrap();
            for (a, b) in one.iter().zip(&c[28..32]) {
                assert!((a - b).abs() < 1e-9, "{kind:?}: single row equals batch");
            }
            let names = train.feature_names.clone();
            let imp = crate::domain::explanation::global_importance(&names, &c);
            assert_ne!(imp[0].0, "noise", "{kind:?}: {imp:?}");
            assert!(
                imp.iter().find(|(f, _)| f == "noise").unwrap().1 < 0.1,
                "{kind:?}: {imp:?}"
            );
        }
    }
}
