//! `churn demo`: the main job (see [`crate::demo`]).

use anyhow::Result;
use clap::Args;

use super::serve::ServeArgs;
use crate::config::Settings;
use crate::demo::DemoOptions;

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

pub async fn run(mut settings: Settings, args: DemoArgs) -> Result<()> {
    args.serve.apply(&mut settings);
    crate::demo::run(
        settings,
        DemoOptions {
            users: args.users,
            seed: args.seed,
            reset: args.reset,
        },
    )
    .await
}
