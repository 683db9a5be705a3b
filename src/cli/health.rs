//! `churn health`: the container's HEALTHCHECK without curl in the image.
//! It asks this configuration's own server (`server.host`/`server.port`
//! after every `CHURN_*` override, so a moved port is still checked) for
//! `/healthz`, or `/readyz` with `--path`, and exits 0 only on a 2xx.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::output::print_line;
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Route to ask (`/readyz` checks model and features too).
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// The URL of this configuration's own server: a wildcard listen address
/// is reached on loopback.
fn url(settings: &Settings, path: &str) -> Result<String> {
    let port = settings.server.port;
    if port == 0 {
        bail!("server.port is 0 (any free port): there is no fixed port to check");
    }
    if !path.starts_with('/') {
        bail!("--path must start with '/', got {path:?}");
    }
    let host = match settings.server.host {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    Ok(format!("http://{host}:{port}{path}"))
}

pub async fn run(settings: &Settings, args: HealthArgs) -> Result<()> {
    let url = url(settings, &args.path)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
        .context("HTTP client")?;
    let status = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    print_line(&format!("GET {url}: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(host: &str, port: u16) -> Settings {
        let mut s = Settings::default();
        s.server.host = host.parse().unwrap();
        s.server.port = port;
        s
    }

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        assert_eq!(
            url(&with("0.0.0.0", 8000), "/healthz").unwrap(),
            "http://127.0.0.1:8000/healthz"
        );
        assert_eq!(
            url(&with("::", 9), "/readyz").unwrap(),
            "http://[::1]:9/readyz"
        );
        assert_eq!(
            url(&with("10.0.0.5", 80), "/healthz").unwrap(),
            "http://10.0.0.5:80/healthz"
        );
        assert_eq!(
            url(&with("fe80::1", 80), "/healthz").unwrap(),
            "http://[fe80::1]:80/healthz"
        );
        assert!(url(&with("127.0.0.1", 0), "/healthz").is_err());
        assert!(url(&with("127.0.0.1", 1), "healthz").is_err());
    }
}
