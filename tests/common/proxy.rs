//! A TCP proxy that a test can cut or hang, to simulate an outage of a real
//! server (ClickHouse, S3) with real connection failures, without stopping
//! the shared server other tests use.

#![allow(dead_code)] // each test crate uses a subset

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards to the upstream.
    Up,
    /// Refuses new connections and drops open ones, as a crashed or
    /// partitioned server would.
    Down,
    /// Accepts connections and reads requests but never answers, and stops
    /// forwarding on open ones: a hung server.
    Hang,
}

/// A TCP proxy to `upstream` whose [`Mode`] a test sets.
pub struct CuttableProxy {
    pub url: String,
    mode: watch::Sender<Mode>,
}

/// Reads and discards until the peer closes: a server that never answers.
async fn swallow(mut client: TcpStream) {
    let mut sink = vec![0u8; 64 * 1024];
    while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
}

impl CuttableProxy {
    pub async fn start(upstream: String) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Up);
        let proxy = Arc::new(Self {
            url: format!("http://127.0.0.1:{port}"),
            mode,
        });
        let state = proxy.mode.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = state.clone();
                let now = *state.borrow();
                match now {
                    Mode::Down => {
                        drop(client);
                        continue;
                    }
                    Mode::Hang => {
                        tokio::spawn(swallow(client));
                        continue;
                    }
                    Mode::Up => {}
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let left = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
                        m = state.wait_for(|m| *m != Mode::Up) => m.ok().map(|m| *m),
                    };
                    if left == Some(Mode::Hang) {
                        // The open connection goes silent, held open.
                        drop(server);
                        swallow(client).await;
                    }
                });
            }
        });
        proxy
    }

    pub fn set_up(&self, up: bool) {
        self.set(if up { Mode::Up } else { Mode::Down });
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}
