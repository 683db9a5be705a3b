//! `churn features`: write a spec for the stored event types, or check one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::output::print_line;
use crate::application::ports::EventStats;
use crate::application::suggest::{Dropped, without_repeats};
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

/// A spec suggested for the store, without repeated columns.
pub(super) struct Suggested {
    pub spec: FeatureSpec,
    pub dropped: Vec<Dropped>,
    pub stats: EventStats,
    pub types: usize,
}

impl Suggested {
    pub fn summary(&self, out: &Path) -> String {
        let mut line = format!(
            "wrote {} features over {} event types to {}",
            self.spec.len(),
            self.spec.event_types().len(),
            out.display()
        );
        if !self.dropped.is_empty() {
            let names: Vec<String> = self
                .dropped
                .iter()
                .map(|d| match &d.same_as {
                    Some(other) => format!("{} (= {other})", d.feature),
                    None => format!("{} (constant)", d.feature),
                })
                .collect();
            line.push_str(&format!(
                "; left out {} that repeat another or never vary here: {}",
                names.len(),
                names.join(", ")
            ));
        }
        line
    }
}

/// The spec `churn features suggest` writes: for the store's types and
/// span, without the columns that repeat another or never vary as of
/// `as_of` (default: the newest event).
pub(super) async fn suggested_spec(stores: &Stores, as_of: Option<i64>) -> Result<Suggested> {
    let stats = stores.events.stats().await.context("reading the store")?;
    let types = stores
        .events
        .type_counts()
        .await
        .context("reading the store")?;
    let (Some(last), false) = (stats.last_event_time, types.is_empty()) else {
        bail!("the store holds no events: ingest first, then suggest");
    };
    let spec = crate::application::suggest::suggest(&stats, &types)?;
    let snapshot = stores
        .features
        .compute_snapshot(&spec, as_of.unwrap_or(last))
        .await
        .context("computing the suggested features to compare them")?;
    let (spec, dropped) = without_repeats(&spec, &snapshot)?;
    Ok(Suggested {
        spec,
        dropped,
        stats,
        types: types.len(),
    })
}

/// Writes a suggested spec with a header saying where it came from.
pub(super) fn write_spec(s: &Suggested, out: &Path) -> Result<()> {
    let header = format!(
        "# Suggested by `churn features suggest` for {} events of {} types from {} users.\n\
         # Review it, then set features.spec_file = \"{}\" (CHURN_FEATURES__SPEC_FILE).\n\n",
        s.stats.events,
        s.types,
        s.stats.users,
        out.display()
    );
    std::fs::write(out, header + &s.spec.to_toml())
        .with_context(|| format!("writing {}", out.display()))
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
            let suggested = suggested_spec(&stores, None).await?;
            write_spec(&suggested, &out)?;
            print_line(&suggested.summary(&out))
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
