//! `churn features`: write a spec for the stored event types, or check one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::output::print_line;
use crate::config::Settings;
use crate::domain::features::FeatureSpec;
use crate::startup::Stores;

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Write a features.toml for the event types and time span in the store.
    Suggest {
        /// Where to write it.
        #[arg(long, default_value = "features.toml")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate a spec file (default: `features.spec_file`) and list it.
    Check { file: Option<PathBuf> },
}

pub async fn run(settings: Settings, cmd: FeaturesCommand) -> Result<()> {
    match cmd {
        FeaturesCommand::Suggest { out, force } => {
            if out.exists() && !force {
                bail!("{} exists: pass --force to replace it", out.display());
            }
            // The stores alone: the spec file in use may be the very file
            // being written (or not exist yet).
            let stores = Stores::open(&settings).await?;
            let stats = stores.events.stats().await.context("reading the store")?;
            let types = stores
                .events
                .type_counts()
                .await
                .context("reading the store")?;
            if types.is_empty() {
                bail!("the store holds no events: ingest first, then suggest");
            }
            let spec = crate::application::suggest::suggest(&stats, &types)?;
            let header = format!(
                "# Suggested by `churn features suggest` for {} events of {} types from {} users.\n\
                 # Review it, then set features.spec_file = \"{}\" (CHURN_FEATURES__SPEC_FILE).\n\n",
                stats.events,
                types.len(),
                stats.users,
                out.display()
            );
            std::fs::write(&out, header + &spec.to_toml())
                .with_context(|| format!("writing {}", out.display()))?;
            print_line(&format!(
                "wrote {} features over {} event types to {}",
                spec.len(),
                spec.event_types().len(),
                out.display()
            ))
        }
        FeaturesCommand::Check { file } => {
            let spec = match file.or_else(|| settings.spec_file()) {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    FeatureSpec::from_toml(&text, &path.display().to_string())?
                }
                None => FeatureSpec::standard(),
            };
            let mut lines = vec![format!(
                "{} features, fingerprint {}, event types: {}",
                spec.len(),
                spec.fingerprint(),
                spec.event_types().join(", ")
            )];
            for d in spec.defs() {
                let mut what = d.aggregation.as_str().to_string();
                if !d.event_types.is_empty() {
                    what.push_str(&format!(" of {}", d.event_types.join("|")));
                }
                if let Some(w) = d.window_days {
                    what.push_str(&format!(" over {w} days"));
                }
                if let (Some(n), Some(den)) = (&d.numerator, &d.denominator) {
                    what.push_str(&format!(" {n} / {den}"));
                }
                lines.push(format!("  {:<36} {what}", d.name));
            }
            print_line(&lines.join("\n"))
        }
    }
}
