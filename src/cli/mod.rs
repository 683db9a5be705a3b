//! The `churn` command line: a thin edge over the use cases, one file per
//! command (each parses its arguments, calls use cases through
//! [`crate::startup::Services`], and prints through [`output`]). Wiring
//! stays in [`crate::startup`]. Every command prints human-readable text by
//! default and one JSON document with `--json` where scripts need it;
//! errors go to stderr with a non-zero exit code.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

mod backup;
mod build_features;
mod check_config;
mod demo;
mod features;
mod forget;
mod generate;
mod health;
mod ingest;
mod init;
mod migrate;
mod models;
pub mod output;
mod profile;
mod render_sql;
mod score;
mod serve;
mod stats;
mod train;

/// Churn prediction: events → features → model → registry → predictions.
#[derive(Debug, Parser)]
#[command(name = "churn", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true, env = "CHURN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store and local registry (overrides `data_dir`).
    #[arg(long, global = true, env = "CHURN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write seeded, realistic demo events as NDJSON.
    GenerateEvents(generate::GenerateArgs),
    /// Validate and store events from an NDJSON or CSV file (`-` = stdin).
    Ingest(ingest::IngestArgs),
    /// From a raw log to a trained model in one step: ingest, profile,
    /// settings chosen from the data, a feature spec for its types, a
    /// commented config, training, and a report of what was chosen and why.
    Init(init::InitArgs),
    /// Compute every user's features as of a time and store the snapshot.
    BuildFeatures(build_features::BuildFeaturesArgs),
    /// Train, evaluate, register and (if it wins) promote a model.
    Train(train::TrainArgs),
    /// Write every eligible user's score (CSV or NDJSON; in ClickHouse
    /// mode also the churn.predictions table).
    Score(score::ScoreArgs),
    /// List, promote and roll back model versions.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Show what the event store holds.
    Stats(JsonFlag),
    /// Copy the embedded store and the local registry into a new
    /// directory, consistently while a server serves and ingests.
    Backup(backup::BackupArgs),
    /// Put a `churn backup` back into the configured data directory.
    Restore(backup::RestoreArgs),
    /// Erase users: their events, feature rows, scores and names, and
    /// their ids in model versions' drift samples.
    Forget(forget::ForgetArgs),
    /// Profile the stored events against the churn definition: types,
    /// returns, eligible users per lookback, constant features.
    Profile(JsonFlag),
    /// Suggest a feature spec for the stored event types, or check one.
    #[command(subcommand)]
    Features(features::FeaturesCommand),
    /// Apply pending ClickHouse migrations (store.type = "clickhouse").
    Migrate(JsonFlag),
    /// Print, as JSON, the ClickHouse SQL generated from the feature spec
    /// (migrations, snapshot build, training set) for review or other engines.
    RenderSql(render_sql::RenderSqlArgs),
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Serve predictions, ingestion, metrics and admin on existing state.
    Serve(serve::ServeArgs),
    /// The main job: generate → ingest → features → train → register → serve.
    Demo(demo::DemoArgs),
    /// Ask this configuration's own server for `/healthz` (exit 0 when it
    /// answers 2xx): the container's HEALTHCHECK, no curl needed.
    Health(health::HealthArgs),
}

/// `--json` for commands that have nothing else.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Loads and overrides the settings from the global flags.
///
/// # Errors
/// Unreadable or invalid configuration.
pub fn load_settings(cli: &Cli) -> Result<Settings> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        if dir.as_os_str().is_empty() {
            anyhow::bail!("--data-dir (CHURN_DATA_DIR) must not be empty");
        }
        settings.data_dir = dir.clone();
    }
    Ok(settings)
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context naming what was being done.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = load_settings(&cli)?;
    match cli.command {
        Command::Serve(args) => serve::run(settings, &args).await,
        Command::Demo(args) => demo::run(settings, args).await,
        Command::GenerateEvents(args) => generate::run(&settings, args),
        Command::CheckConfig => check_config::run(&settings),
        Command::Ingest(args) => ingest::run(settings, args).await,
        Command::Init(args) => init::run(settings, args).await,
        Command::BuildFeatures(args) => build_features::run(settings, args).await,
        Command::Train(args) => train::run(settings, args).await,
        Command::Score(args) => score::run(settings, args).await,
        Command::Migrate(flag) => migrate::run(settings, flag).await,
        Command::RenderSql(args) => render_sql::run(&settings, args),
        Command::Models(cmd) => models::run(settings, cmd).await,
        Command::Stats(flag) => stats::run(settings, flag).await,
        Command::Forget(args) => forget::run(settings, args).await,
        Command::Backup(args) => backup::backup(settings, args).await,
        Command::Restore(args) => backup::restore(settings, args).await,
        Command::Profile(flag) => profile::run(settings, flag).await,
        Command::Features(cmd) => features::run(settings, cmd).await,
        Command::Health(args) => health::run(&settings, args).await,
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (they run only in debug builds, and
    /// the test command builds release): unique argument ids and the like.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
