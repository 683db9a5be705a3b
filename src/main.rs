//! The `churn` binary: parse the command line, set up logging, dispatch.

use std::time::Duration;

use clap::Parser;

/// How long blocking work (a training run, a generator) may outlive the
/// command once it has returned: `serve` has already spent its grace period
/// by then, so the process exits instead of waiting on abandoned work.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

fn main() -> std::process::ExitCode {
    churn::telemetry::init_logging();
    let cli = churn::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(churn::cli::run(cli));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
