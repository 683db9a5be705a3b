//! The `churn` command line: a thin edge over the use cases. Every command
//! prints human-readable text by default and one JSON document with `--json`
//! where scripts need it; errors go to stderr with a non-zero exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::application::generate::{GeneratorOptions, generate};
use crate::config::Settings;
use crate::domain::time::{format_rfc3339, parse_timestamp};
use crate::infrastructure::file_source::{NdjsonSource, RejectsFile};
use crate::infrastructure::kafka::producer::EventProducer;
use crate::startup::Services;

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
    GenerateEvents(GenerateArgs),
    /// Validate and store events from an NDJSON file (`-` = stdin).
    Ingest(IngestArgs),
    /// Compute every user's features as of a time and store the snapshot.
    BuildFeatures(BuildFeaturesArgs),
    /// Train, evaluate, register and (if it wins) promote a model.
    Train(TrainArgs),
    /// List, promote and roll back model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show what the event store holds.
    Stats(JsonFlag),
    /// Apply pending ClickHouse migrations (store.type = "clickhouse").
    Migrate(JsonFlag),
    /// Print, as JSON, the ClickHouse SQL generated from the feature spec
    /// (migrations, snapshot build, training set) for review or other engines.
    RenderSql(RenderSqlArgs),
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Serve predictions, ingestion, metrics and admin on existing state.
    Serve(ServeArgs),
    /// The main job: generate → ingest → features → train → register → serve.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (overrides `server.port`; 0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (overrides `server.host`).
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Users to generate on a fresh start.
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Random seed of the generated events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Delete the existing store and registry in the data directory first.
    #[arg(long)]
    pub reset: bool,
}

fn apply_serve_args(settings: &mut Settings, args: &ServeArgs) -> Result<()> {
    if let Some(port) = args.port {
        settings.server.port = port;
    }
    if let Some(host) = &args.host {
        settings.server.host = host.clone();
    }
    settings.validate()?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users.
    #[arg(long, default_value_t = 2_000)]
    pub users: u64,
    /// Random seed (same seed and options = same events).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Days of history.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// Last instant of the data (default: now).
    #[arg(long)]
    pub end: Option<String>,
    /// Share of users who churn at some point.
    #[arg(long, default_value_t = 0.35)]
    pub churn_share: f64,
    /// Output file (default: stdout). Ignored with `--to kafka`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the events go: an NDJSON file/stdout, or the Kafka topic
    /// (`kafka.brokers` must be set).
    #[arg(long, value_enum, default_value_t = EventSink::File)]
    pub to: EventSink,
    /// Topic for `--to kafka` (default: the first of `kafka.topics`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Events per second for `--to kafka` (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Destination of generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventSink {
    File,
    Kafka,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON file, or `-` for stdin.
    pub file: PathBuf,
    /// Where rejected lines go (default: `ingest.rejects_file`).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildFeaturesArgs {
    /// Compute features as of this time (default: now).
    #[arg(long)]
    pub as_of: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderSqlArgs {
    /// Database name to render (default: `clickhouse.database`).
    #[arg(long)]
    pub database: Option<String>,
    /// Snapshot time.
    #[arg(long)]
    pub as_of: String,
    /// Training-set cutoff (default: the snapshot time).
    #[arg(long)]
    pub cutoff: Option<String>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Promote even if production scores better (the recency gate still applies).
    #[arg(long)]
    pub force_promote: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List registered versions with aliases and validation metrics.
    List(JsonFlag),
    /// Point `production` at a version.
    Promote {
        version: u64,
        #[arg(long)]
        json: bool,
    },
    /// Move `production` back to the version it pointed to before.
    Rollback(JsonFlag),
}

/// Loads and overrides the settings from the global flags.
///
/// # Errors
/// Unreadable or invalid configuration.
pub fn load_settings(cli: &Cli) -> Result<Settings> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        settings.data_dir = dir.clone();
    }
    settings.validate()?;
    Ok(settings)
}

fn parse_time_arg(flag: &str, value: &str) -> Result<i64> {
    parse_timestamp(value).with_context(|| {
        format!("{flag} {value:?}: expected 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' or RFC 3339")
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn spinner(message: &str) -> ProgressBar {
    // indicatif hides itself when stderr is not a terminal.
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs a parsed command line.
///
/// # Errors
/// Any failure, with context naming what was being done.
pub async fn run(cli: Cli) -> Result<()> {
    let mut settings = load_settings(&cli)?;
    match cli.command {
        Command::Serve(args) => {
            apply_serve_args(&mut settings, &args)?;
            let settings_host = settings.server.host.clone();
            let app = crate::startup::Application::build(Services::build(settings).await?).await?;
            let shutdown = crate::shutdown::on_signal().context("installing signal handlers")?;
            eprintln!("churn serving on http://{}:{}", settings_host, app.port());
            app.run_until_stopped(shutdown).await
        }
        Command::Demo(args) => {
            apply_serve_args(&mut settings, &args.serve)?;
            crate::demo::run(
                settings,
                crate::demo::DemoOptions {
                    users: args.users,
                    seed: args.seed,
                    reset: args.reset,
                },
            )
            .await
        }
        Command::GenerateEvents(args) => generate_events(&settings, args),
        Command::CheckConfig => {
            println!("{}", settings.to_redacted_json());
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Ingest(args) => ingest(Services::build(settings).await?, args).await,
        Command::BuildFeatures(args) => {
            let services = Services::build(settings).await?;
            let as_of = args
                .as_of
                .as_deref()
                .map(|v| parse_time_arg("--as-of", v))
                .transpose()?;
            let bar = spinner("building features");
            let summary = services.build_features.run(as_of).await;
            bar.finish_and_clear();
            let summary = summary.context("building features")?;
            if args.json {
                print_json(&summary)
            } else {
                println!(
                    "feature snapshot as of {}: {} users x {} features",
                    format_rfc3339(summary.as_of),
                    summary.users,
                    summary.features
                );
                Ok(())
            }
        }
        Command::Train(args) => {
            let services = Services::build_with(settings, args.force_promote).await?;
            let bar = spinner("training");
            let report = services.train.run().await;
            bar.finish_and_clear();
            let report = report.context("training")?;
            if args.json {
                return print_json(&report);
            }
            let m = &report.metrics;
            println!(
                "{} version {} [{}] (trained on {} rows at {:?}, validated on {} rows at {})",
                report.model_name,
                report.version,
                report.model_kind.as_str(),
                report.train_rows,
                report.train_cutoffs,
                report.validation_rows,
                report.validation_cutoff
            );
            let g = &report.gbdt_metrics;
            println!(
                "  gbdt:     auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4}",
                g.auc, g.pr_auc, g.logloss, g.brier
            );
            let b = &report.baseline_metrics;
            println!(
                "  logistic: auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4}",
                b.auc, b.pr_auc, b.logloss, b.brier
            );
            println!("  recency rule: auc {:.4}", m.recency_auc);
            println!(
                "  registered: auc {:.4}  pr_auc {:.4}  logloss {:.4}  brier {:.4} — {}",
                m.auc, m.pr_auc, m.logloss, m.brier, report.selection
            );
            println!("  {}", report.decision);
            Ok(())
        }
        Command::Migrate(flag) => {
            if settings.store.kind != crate::config::StoreKind::Clickhouse {
                bail!(
                    "churn migrate applies ClickHouse migrations: set store.type = \"clickhouse\" (CHURN_STORE__TYPE=clickhouse)"
                );
            }
            settings.clickhouse.migrate_on_start = false;
            let store = crate::startup::open_clickhouse(&settings).await?;
            let report = store.migrate().await.context("applying migrations")?;
            if flag.json {
                return print_json(&report);
            }
            for m in &report.applied {
                println!("applied {m}");
            }
            println!(
                "{} applied, {} already applied, database {}",
                report.applied.len(),
                report.already_applied.len(),
                store.database()
            );
            Ok(())
        }
        Command::RenderSql(args) => {
            use crate::infrastructure::store::{clickhouse, clickhouse_sql};
            let db = args
                .database
                .unwrap_or_else(|| settings.clickhouse.database.clone());
            let as_of = parse_time_arg("--as-of", &args.as_of)?;
            let cutoff = match &args.cutoff {
                Some(c) => parse_time_arg("--cutoff", c)?,
                None => as_of,
            };
            let spec = crate::domain::features::FeatureSpec::standard();
            let policy = crate::domain::label::LabelPolicy {
                horizon_days: settings.training.horizon_days,
                lookback_days: settings.training.lookback_days,
            };
            let migrations: Vec<_> = clickhouse::MIGRATIONS
                .iter()
                .map(|(v, name, sql)| {
                    serde_json::json!({
                        "version": v,
                        "name": name,
                        "sql": sql.replace("churn.", &format!("{db}.")),
                    })
                })
                .collect();
            print_json(&serde_json::json!({
                "database": db,
                "feature_names": spec.names(),
                "migrations": migrations,
                "build_snapshot": clickhouse_sql::build_snapshot(&spec, &db, as_of)?,
                "training_set": clickhouse_sql::training_set(&spec, &db, policy, cutoff)?,
            }))
        }
        Command::Models(cmd) => models(Services::build(settings).await?, cmd).await,
        Command::Stats(flag) => {
            let services = Services::build(settings).await?;
            let stats = services
                .events
                .stats()
                .await
                .context("reading store stats")?;
            if flag.json {
                return print_json(&stats);
            }
            println!(
                "{} events from {} users, {} to {}",
                stats.events,
                stats.users,
                stats
                    .first_event_time
                    .map(format_rfc3339)
                    .unwrap_or_else(|| "-".into()),
                stats
                    .last_event_time
                    .map(format_rfc3339)
                    .unwrap_or_else(|| "-".into())
            );
            Ok(())
        }
    }
}

fn generate_events(settings: &Settings, args: GenerateArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.churn_share) {
        bail!("--churn-share must be within [0, 1]");
    }
    if args.days < 7 {
        bail!("--days must be at least 7");
    }
    let end = match &args.end {
        Some(v) => parse_time_arg("--end", v)?,
        None => chrono::Utc::now().timestamp(),
    };
    let opts = GeneratorOptions {
        users: args.users,
        days: args.days,
        end,
        seed: args.seed,
        churn_share: args.churn_share,
    };
    if args.to == EventSink::Kafka {
        return generate_to_kafka(settings, &args, opts);
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut write_error = None;
    let summary = generate(opts, |event| {
        if write_error.is_none()
            && let Err(e) = serde_json::to_writer(&mut out, &event.to_json())
                .and_then(|_| out.write_all(b"\n").map_err(serde_json::Error::io))
        {
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        return Err(e).context("writing events");
    }
    out.flush().context("writing events")?;
    eprintln!(
        "generated {} events for {} users ({} churn before the end) ending {}",
        summary.events,
        summary.users,
        summary.churners,
        format_rfc3339(end)
    );
    Ok(())
}

/// `generate-events --to kafka`: the seed's `generate_events` step.
fn generate_to_kafka(
    settings: &Settings,
    args: &GenerateArgs,
    opts: GeneratorOptions,
) -> Result<()> {
    let k = &settings.kafka;
    if !k.enabled() {
        bail!("--to kafka needs kafka.brokers (CHURN_KAFKA__BROKERS=host:9092)");
    }
    let topic = match &args.topic {
        Some(t) => t.clone(),
        None => match k.topics.first() {
            Some(t) if !t.starts_with('^') => t.clone(),
            _ => bail!("kafka.topics holds a pattern: name the topic with --topic"),
        },
    };
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of events per second");
    }
    let mut producer = EventProducer::new(k, &topic, args.rate)?;
    let mut send_error = None;
    let mut payload = Vec::with_capacity(256);
    let summary = generate(opts, |event| {
        if send_error.is_some() {
            return;
        }
        payload.clear();
        let key = event.user_id().to_string();
        let sent = serde_json::to_writer(&mut payload, &event.to_json())
            .map_err(anyhow::Error::from)
            .and_then(|()| producer.send(key.as_bytes(), &payload).map_err(Into::into));
        if let Err(e) = sent {
            send_error = Some(e);
        }
    });
    if let Some(e) = send_error {
        return Err(e).context(format!("producing to {topic} at {}", k.brokers));
    }
    let report = producer
        .finish(std::time::Duration::from_secs(60))
        .with_context(|| format!("producing to {topic} at {}", k.brokers))?;
    eprintln!(
        "produced {} events for {} users to {topic} in {:.1} s ({:.0} events/s)",
        report.delivered,
        summary.users,
        report.seconds,
        report.delivered as f64 / report.seconds.max(1e-9)
    );
    Ok(())
}

async fn ingest(services: Services, args: IngestArgs) -> Result<()> {
    let mut source = NdjsonSource::open(&args.file).await?;
    let rejects_path = args
        .rejects
        .unwrap_or_else(|| services.settings.rejects_path());
    let mut rejects = RejectsFile::new(rejects_path.clone());
    let bar = spinner("ingesting");
    let started = std::time::Instant::now();
    let report = services
        .ingest
        .run(&mut source, &mut rejects, |r| {
            bar.set_message(format!(
                "ingesting: {} read, {} stored, {} rejected",
                r.read, r.inserted, r.rejected
            ));
        })
        .await;
    bar.finish_and_clear();
    let report = report.context("ingesting events")?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        return print_json(&serde_json::json!({
            "read": report.read,
            "inserted": report.inserted,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "rejects_file": (report.rejected > 0).then(|| rejects_path.display().to_string()),
            "seconds": secs,
        }));
    }
    println!(
        "read {} lines: {} stored, {} duplicates skipped, {} rejected ({:.0} events/s)",
        report.read,
        report.inserted,
        report.duplicates,
        report.rejected,
        report.read as f64 / secs.max(1e-9)
    );
    if report.rejected > 0 {
        println!("rejected lines and reasons: {}", rejects_path.display());
    }
    Ok(())
}

async fn models(services: Services, cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::List(flag) => {
            let list = services.models.list().await.context("listing models")?;
            if flag.json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no models registered yet: run `churn train`");
            }
            for m in list {
                println!(
                    "v{:<4} {:<20} auc {:.4} (recency {:.4})  trained {}  {}",
                    m.version,
                    m.aliases.join(","),
                    m.metadata.metrics.auc,
                    m.metadata.metrics.recency_auc,
                    m.metadata.trained_at,
                    m.metadata.kind.as_str()
                );
            }
            Ok(())
        }
        ModelsCommand::Promote { version, json } => {
            let record = services
                .models
                .promote(version, "promoted by hand (CLI)")
                .await
                .with_context(|| format!("promoting version {version}"))?;
            if json {
                return print_json(&record);
            }
            println!("production -> version {}", record.version);
            Ok(())
        }
        ModelsCommand::Rollback(flag) => {
            let record = services.models.rollback().await.context("rolling back")?;
            if flag.json {
                return print_json(&record);
            }
            println!(
                "production -> version {} ({})",
                record.version, record.reason
            );
            Ok(())
        }
    }
}
