//! Ctrl-C and SIGTERM become one [`CancellationToken`] that every task
//! watches, so the server stops taking requests, lets in-flight work finish
//! and exits 0.

use tokio_util::sync::CancellationToken;

/// Registers the SIGINT/SIGTERM handlers **now** (so a signal arriving right
/// after start-up is not fatal) and cancels the returned token on the first.
///
/// # Errors
/// The handlers cannot be registered.
#[cfg(unix)]
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("Ctrl-C received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        t.cancel();
    });
    Ok(token)
}

/// Ctrl-C only where there is no SIGTERM.
///
/// # Errors
/// Never on this platform; the signature matches the Unix one.
#[cfg(not(unix))]
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    Ok(token)
}
