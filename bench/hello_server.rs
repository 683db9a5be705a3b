//! The baseline for `bench/serve.sh`: a bare axum "hello" handler with the
//! same runtime and HTTP stack as `churn serve`, so the ratio measures what
//! churn's own work (routing, metrics, lookup, model, JSON) costs.
//!
//! `cargo run --release --example hello_server -- PORT`

use axum::Router;
use axum::routing::{get, post};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8001);
    let app = Router::new()
        .route("/predict", post(|| async { "hello" }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
