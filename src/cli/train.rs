//! `churn train`: train, evaluate, register and gate one model.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{print_json, print_line, spinner};
use crate::application::train::TrainReport;
use crate::config::Settings;
use crate::startup::Services;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Promote even if production scores better (the recency gate still applies).
    #[arg(long)]
    pub force_promote: bool,
}

pub async fn run(settings: Settings, args: TrainArgs) -> Result<()> {
    let services = Services::build_with(settings, args.force_promote).await?;
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
    ]
    .join("\n")
}
