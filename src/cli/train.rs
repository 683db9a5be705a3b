//! `churn train`: train, evaluate, register and gate one model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::output::{print_json, print_line, spinner};
use crate::application::train::{TrainReport, TrainingRows};
use crate::config::Settings;
use crate::domain::model::{Dataset, in_report_half};
use crate::domain::time::format_rfc3339;
use crate::startup::Services;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Promote even if production scores better (the recency gate still applies).
    #[arg(long)]
    pub force_promote: bool,
    /// Write the rows a run would train and validate on to DIR/train.csv
    /// and DIR/validation.csv (user_id, churned, then the features), and
    /// where each row comes from to DIR/rows.csv (set, user_id, cutoff,
    /// half, churned), then exit without training: for a notebook, another
    /// library's fit on exactly the same rows (bench/train.sh), or
    /// recomputing the recorded figures on the report half.
    #[arg(long, value_name = "DIR")]
    pub export_sets: Option<PathBuf>,
}

pub async fn run(settings: Settings, args: TrainArgs) -> Result<()> {
    let services = Services::build_with(settings, args.force_promote).await?;
    if let Some(dir) = &args.export_sets {
        let rows = services
            .train
            .training_rows()
            .await
            .context("building the training sets")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, set) in [
            ("train.csv", &rows.train),
            ("validation.csv", &rows.validation),
        ] {
            let path = dir.join(name);
            write_csv(&path, set).with_context(|| format!("writing {}", path.display()))?;
            print_line(&format!(
                "{}: {} rows x {} features",
                path.display(),
                set.len(),
                set.n_features()
            ))?;
        }
        let path = dir.join("rows.csv");
        write_rows(&path, &rows).with_context(|| format!("writing {}", path.display()))?;
        print_line(&format!(
            "{}: where each row comes from (set, cutoff, half, label)",
            path.display()
        ))?;
        return Ok(());
    }
    let bar = spinner("training");
    let report = services.train.run().await;
    bar.finish_and_clear();
    let report = report.context("training")?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        return print_json(&report);
    }
    print_line(&render(&report))
}

/// One row per row of train.csv, then one per row of validation.csv, in
/// their order: `set` (train or validation), `user_id`, `cutoff` (the
/// row's as-of time), `half` (for validation rows: `select`, the half that
/// chose the candidate, or `report`, the half the recorded figures come
/// from; `both` when the set was too small to halve; empty for training
/// rows) and `churned`. Kept out of the two feature files so that they
/// stay `user_id, churned, features...` for the tools that read them.
fn write_rows(path: &Path, rows: &TrainingRows) -> Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    out.write_record(["set", "user_id", "cutoff", "half", "churned"])?;
    for (i, cutoff) in rows.train_row_cutoffs().enumerate() {
        out.write_record([
            "train",
            &rows.train.user_ids[i].to_string(),
            &format_rfc3339(cutoff),
            "",
            &u8::from(rows.train.labels[i]).to_string(),
        ])?;
    }
    let cutoff = format_rfc3339(rows.validation_cutoff);
    for (user, label) in rows.validation.user_ids.iter().zip(&rows.validation.labels) {
        let half = match (rows.halved, in_report_half(*user)) {
            (false, _) => "both",
            (true, true) => "report",
            (true, false) => "select",
        };
        out.write_record([
            "validation",
            &user.to_string(),
            &cutoff,
            half,
            &u8::from(*label).to_string(),
        ])?;
    }
    out.flush()?;
    Ok(())
}

/// One header row, then `user_id, churned (0/1), features...` per row.
fn write_csv(path: &Path, set: &Dataset) -> Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    let mut header = vec!["user_id".to_string(), "churned".to_string()];
    header.extend(set.feature_names.iter().cloned());
    out.write_record(&header)?;
    let mut record = Vec::with_capacity(header.len());
    for i in 0..set.len() {
        record.clear();
        record.push(set.user_ids[i].to_string());
        record.push(u8::from(set.labels[i]).to_string());
        record.extend(set.row(i).iter().map(f64::to_string));
        out.write_record(&record)?;
    }
    out.flush()?;
    Ok(())
}

/// The report as text.
fn render(report: &TrainReport) -> String {
    let m = &report.metrics;
    let g = &report.gbdt_metrics;
    let b = &report.baseline_metrics;
    [
        format!(
            "{} version {} [{}] (trained on {} rows at {} cutoffs {} .. {}; validated at {} on {} users, figures from {} held out)",
            report.model_name,
            report.version,
            report.model_kind.as_str(),
            report.train_rows,
            report.train_cutoffs.len(),
            report.train_cutoffs.first().map_or("-", String::as_str),
            report.train_cutoffs.last().map_or("-", String::as_str),
            report.validation_cutoff,
            report.validation_rows,
            report.report_rows
        ),
        format!(
            "  gbdt:     auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4}",
            g.auc, g.pr_auc, g.logloss, g.brier
        ),
        format!(
            "  logistic: auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4}",
            b.auc, b.pr_auc, b.logloss, b.brier
        ),
        format!("  recency rule: auc {:.4}", m.recency_auc),
        format!(
            "  registered: auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4} — {}",
            m.auc, m.pr_auc, m.logloss, m.brier, report.selection
        ),
        format!(
            "  calibration: {}",
            report
                .report
                .calibration
                .as_ref()
                .map_or("not evaluated", |c| c.decision.as_str())
        ),
        format!("  {}", report.decision),
        {
            let t = &report.phase_secs;
            let sampled = if report.sampling.applied() {
                format!(
                    "; rows sampled to training.max_training_rows = {} (training {:.1}%, validation {:.1}% of eligible users)",
                    report.sampling.max_rows,
                    100.0 * report.sampling.train_share,
                    100.0 * report.sampling.validation_share
                )
            } else {
                String::new()
            };
            format!(
                "  time: sets {:.1}s, gbdt {:.1}s, logistic {:.1}s, evaluation {:.1}s, report {:.1}s, drift reference {:.1}s, register {:.1}s{sampled}",
                t.sets,
                t.gbdt,
                t.logistic,
                t.fit - t.gbdt - t.logistic,
                t.report,
                t.drift_reference,
                t.register_and_gate
            )
        },
    ]
    .join("\n")
}
