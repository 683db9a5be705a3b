//! A TCP proxy that a test can cut, to simulate an outage of a real server
//! (ClickHouse, S3) with real connection failures, without stopping the
//! shared server other tests use.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that can be cut: while down it refuses new
/// connections and drops open ones, as a crashed or partitioned server would.
pub struct CuttableProxy {
    pub url: String,
    up: watch::Sender<bool>,
}

impl CuttableProxy {
    pub async fn start(upstream: String) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, _) = watch::channel(true);
        let proxy = Arc::new(Self {
            url: format!("http://127.0.0.1:{port}"),
            up,
        });
        let state = proxy.up.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = state.clone();
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
