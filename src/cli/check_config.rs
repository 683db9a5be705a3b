//! `churn check-config`: validate the configuration and print it.

use anyhow::Result;

use super::output::print_line;
use crate::config::Settings;
use crate::infrastructure::scheduler::validate_cron;

/// Validated already when loaded; the cron expressions are checked here
/// with the scheduler's own parser, as `serve` will.
pub fn run(settings: &Settings) -> Result<()> {
    validate_cron("schedule.features_cron", &settings.schedule.features_cron)?;
    validate_cron("schedule.retrain_cron", &settings.schedule.retrain_cron)?;
    print_line(&settings.to_redacted_json())?;
    eprintln!("configuration is valid");
    Ok(())
}
