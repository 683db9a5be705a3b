//! The accept loop: hyper's HTTP/1 connection builder driven directly,
//! because `axum::serve` has no read timeouts. Each connection gets a
//! header-read timeout (hyper restarts it while a keep-alive connection
//! waits for its next request, so it is the idle timeout too), open
//! connections are capped, and a refused connection gets a JSON 503 rather
//! than a silent close.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::http::Api;
use crate::http::json_errors::JsonErrors;
use crate::telemetry::metric_names;

/// Connection limits from the settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Whole request head must arrive within this; also the keep-alive idle
    /// limit between requests.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` is cancelled, then stops
/// accepting and waits for open connections to finish their requests (the
/// caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Api,
    options: ServerOptions,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(options.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper's own head limit; the intake middleware answers smaller
        // limits with JSON first.
        .max_buf_size(MAX_HEAD_BUFFER);
    let connections = metrics::gauge!(metric_names::HTTP_CONNECTIONS);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!(metric_names::HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), app.clone());
        let conn = graceful.watch(conn);
        let connections = connections.clone();
        connections.increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            connections.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Head bytes hyper buffers before answering 431 itself.
const MAX_HEAD_BUFFER: usize = 256 * 1024;

/// The answer to a connection over `server.max_connections`.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 103\r\n\r\n{\"error\":\"too many open connections; retry shortly\",\"error_type\":\"too_many_connections\",\"detail\":null}\n";

/// Answers 503 and closes, spending at most a second on the peer.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Read what the client sent, so closing does not reset the
        // connection before it reads the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed_json() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error_type"], "too_many_connections");
    }
}
