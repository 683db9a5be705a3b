//! `churn serve`: the HTTP server with its background tasks.

use anyhow::{Context, Result};
use clap::Args;

use crate::config::Settings;
use crate::startup::{Application, Services};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (overrides `server.port`; 0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (overrides `server.host`).
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
}

impl ServeArgs {
    /// Applies the flags to the settings (both are typed: nothing to
    /// validate again).
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(port) = self.port {
            settings.server.port = port;
        }
        if let Some(host) = self.host {
            settings.server.host = host;
        }
    }
}

pub async fn run(mut settings: Settings, args: &ServeArgs) -> Result<()> {
    args.apply(&mut settings);
    let host = settings.server.host;
    let app = Application::build(Services::build(settings).await?).await?;
    let shutdown = crate::shutdown::on_signal().context("installing signal handlers")?;
    eprintln!("churn serving on http://{host}:{}", app.port());
    app.run_until_stopped(shutdown).await
}
