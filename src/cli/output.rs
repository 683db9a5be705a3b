//! What every command shares to talk to the terminal: JSON documents,
//! progress spinners and time arguments. A closed stdout (`| head`) ends the
//! output quietly instead of panicking.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::time::parse_timestamp;

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
///
/// # Errors
/// Any other write failure.
pub fn print_line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Prints one pretty JSON document.
///
/// # Errors
/// Serialization or write failure.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    print_line(&serde_json::to_string_pretty(value)?)
}

/// A spinner on stderr (indicatif hides itself when stderr is no terminal).
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Parses a time flag, naming the flag in the error.
///
/// # Errors
/// A value that is no date or timestamp.
pub fn parse_time_arg(flag: &str, value: &str) -> Result<i64> {
    parse_timestamp(value).with_context(|| {
        format!("{flag} {value:?}: expected 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' or RFC 3339")
    })
}
