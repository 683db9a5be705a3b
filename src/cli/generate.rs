//! `churn generate-events`: seeded demo events to a file, stdout or Kafka.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::output::parse_time_arg;
use crate::application::generate::{GeneratorOptions, generate, generate_while};
use crate::config::Settings;
use crate::domain::time::format_rfc3339;

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
    /// UUID-shaped string user ids instead of 1, 2, 3, …
    #[arg(long)]
    pub string_ids: bool,
}

/// Destination of generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventSink {
    File,
    Kafka,
}

pub fn run(settings: &Settings, args: GenerateArgs) -> Result<()> {
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
        string_ids: args.string_ids,
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
    // Stops at the first failed write: `| head` closing the pipe ends the
    // run instead of generating the rest into nowhere.
    let summary = generate_while(opts, |event| {
        match serde_json::to_writer(&mut out, &event.to_json())
            .and_then(|_| out.write_all(b"\n").map_err(serde_json::Error::io))
        {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(std::io::Error::from(e));
                false
            }
        }
    });
    let flushed = match write_error {
        Some(e) => Err(e),
        None => out.flush(),
    };
    match flushed {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing events")?,
    }
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
    let mut producer = crate::startup::event_producer(settings, &topic, args.rate)?;
    let mut send_error = None;
    let mut payload = Vec::with_capacity(256);
    let summary = generate(opts, |event| {
        if send_error.is_some() {
            return;
        }
        payload.clear();
        // Keyed by the user id as sent (a name for string ids), so one
        // user's events stay in one partition, in order.
        let key = event.user().to_string();
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
