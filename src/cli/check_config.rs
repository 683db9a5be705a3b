//! `churn check-config`: validate the configuration and print it.

use anyhow::Result;

use super::output::print_line;
use crate::config::Settings;

pub fn run(settings: &Settings) -> Result<()> {
    print_line(&settings.to_redacted_json())?;
    eprintln!("configuration is valid");
    Ok(())
}
