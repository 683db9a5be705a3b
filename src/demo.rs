//! `churn demo`, the main job on the embedded default: from an empty data
//! directory generate events, ingest, build features, train, register,
//! promote, then serve and print example requests. Run again, it reuses the
//! existing state (or starts over with `--reset`) and says which.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::application::generate::{GeneratorOptions, ingest_generated};
use crate::config::Settings;
use crate::domain::time::format_rfc3339;
use crate::startup::{Application, Services};

/// Prints a line; a closed stdout (the reader went away) must not take the
/// server down with it, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Options of `churn demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: u64,
    pub seed: u64,
    pub reset: bool,
}

/// Files of ours in the data directory; a reset removes only these.
const STATE_FILES: [&str; 5] = [
    "churn.db",
    "churn.db-wal",
    "churn.db-shm",
    "events.ndjson",
    "rejects.ndjson",
];

fn reset(dir: &Path) -> Result<()> {
    for f in STATE_FILES {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let registry = dir.join("registry");
    if registry.exists() {
        std::fs::remove_dir_all(&registry)
            .with_context(|| format!("removing {}", registry.display()))?;
    }
    Ok(())
}

/// Runs the demo until Ctrl-C/SIGTERM.
///
/// # Errors
/// Any step failing, with context.
pub async fn run(mut settings: Settings, options: DemoOptions) -> Result<()> {
    // A token the operator supplied is theirs: the example lines name the
    // variable instead of printing the secret.
    let supplied = !settings.server.admin_token.expose_secret().is_empty();
    if !supplied {
        // A fresh random token per run beats an open admin API, even locally.
        let token: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
        settings.server.admin_token = SecretString::from(token);
    }
    let dir = settings.data_dir.clone();
    if options.reset {
        reset(&dir)?;
        say!("demo: reset the state in {}", dir.display());
    }
    let services = Services::build_with(settings, true).await?;
    let stats = services.events.stats().await?;
    let has_model = services
        .models
        .load_production()
        .await
        .ok()
        .flatten()
        .is_some();
    let reuse = stats.events > 0 && has_model;
    if reuse {
        say!(
            "demo: reusing the existing state in {} ({} events, production model present); pass --reset to start over",
            dir.display(),
            stats.events
        );
    } else if stats.events > 0 {
        say!(
            "demo: {} has events but no production model; training on them",
            dir.display()
        );
    } else {
        // Midnight-anchored, so every run of the same day generates the
        // same history (and the same model quality) whatever the hour.
        let end = crate::domain::time::floor_day(chrono::Utc::now().timestamp()) - 60;
        let (g, report) = ingest_generated(
            &services.ingest,
            GeneratorOptions {
                users: options.users,
                days: 120,
                end,
                seed: options.seed,
                churn_share: 0.35,
                string_ids: false,
            },
        )
        .await
        .context("ingesting")?;
        say!(
            "demo: generated {} events for {} users over 120 days",
            g.events,
            g.users
        );
        let stored = report.inserted;
        say!(
            "demo: ingested {stored} events into {}",
            services.settings.sqlite_path().display()
        );
    }
    // Features are rebuilt as of now on every run, reused state or not.
    let summary = services
        .build_features
        .run(crate::application::build_features::AsOf::Now)
        .await
        .context("building features")?
        .summary;
    say!(
        "demo: built {} features for {} users as of {}",
        summary.features,
        summary.users,
        format_rfc3339(summary.as_of)
    );
    if !reuse {
        let report = services.train.run().await.context("training")?;
        let m = report.metrics;
        say!(
            "demo: trained {} v{} ({}) — validation AUC {:.3} (gbdt {:.3}, logistic {:.3}, recency rule {:.3}), PR AUC {:.3}, log loss {:.3}, Brier {:.3}",
            report.model_name,
            report.version,
            report.model_kind.as_str(),
            m.auc,
            report.gbdt_metrics.auc,
            report.baseline_metrics.auc,
            m.recency_auc,
            m.pr_auc,
            m.logloss,
            m.brier
        );
        say!("demo: {}", report.decision);
        for w in &report.warnings {
            say!("demo: warning: {w}");
        }
        if !report.promoted {
            say!(
                "demo: WARNING no model is in production, so /predict answers 503; \
                 with more history (--users) a model usually beats the recency rule"
            );
        }
    }

    let token = if supplied {
        "$CHURN_SERVER__ADMIN_TOKEN".to_string()
    } else {
        services
            .settings
            .server
            .admin_token
            .expose_secret()
            .to_string()
    };
    let settings_read = services.settings.server.predict_token.clone();
    let settings_write = services.settings.server.ingest_token.clone();
    let app = Application::build(services).await?;
    let shutdown = crate::shutdown::on_signal().context("installing signal handlers")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let example_user = app
        .serving_state()
        .features()
        .and_then(|f| [42u64, 1, 2, 3].into_iter().find(|u| f.contains(*u)))
        .unwrap_or(42);
    say!("\nReady: serving on {base}  (Ctrl-C to stop)\n");
    // Configured data tokens are named, never printed (as the admin token
    // an operator supplied).
    let bearer = |token: &SecretString, var: &str| {
        if token.expose_secret().is_empty() {
            String::new()
        } else {
            format!(" -H \"authorization: Bearer ${var}\"")
        }
    };
    let read = bearer(&settings_read, "CHURN_SERVER__PREDICT_TOKEN");
    let write = bearer(&settings_write, "CHURN_SERVER__INGEST_TOKEN");
    say!("  curl -X POST \"{base}/predict?user_id={example_user}\"{read}");
    say!(
        "  curl -X POST {base}/predict/batch{read} -H 'content-type: application/json' -d '{{\"user_ids\":[1,2,3]}}'"
    );
    say!(
        "  curl -X POST {base}/events{write} --data-binary '{{\"user_id\":{example_user},\"event_time\":\"{}\",\"event_type\":\"login\"}}'",
        crate::domain::time::format_seed(chrono::Utc::now().timestamp())
    );
    say!("  curl {base}/readyz");
    say!("  curl {base}/metrics");
    say!("  curl -X POST {base}/admin/retrain -H 'authorization: Bearer {token}'");
    say!("  curl {base}/admin/models -H 'authorization: Bearer {token}'\n");
    if read.is_empty() || write.is_empty() {
        say!(
            "  /events and /predict are open to anyone who reaches this port; set\n  \
             CHURN_SERVER__INGEST_TOKEN (a write key) and CHURN_SERVER__PREDICT_TOKEN, then send\n  \
             -H \"authorization: Bearer $CHURN_SERVER__INGEST_TOKEN\" with each write.\n"
        );
    }
    app.run_until_stopped(shutdown).await
}
