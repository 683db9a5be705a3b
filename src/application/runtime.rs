//! The background tasks of `churn serve` as one supervised set: the event
//! stream consumer ([`StreamTask`]), the registry poll and the scheduler,
//! each restarted by [`supervise`] when it ends unexpectedly; the set stops
//! as a whole on shutdown or when a task gives up ([`Runtime::wait`]).
//!
//! Nothing here names an adapter: the stream's clients come from a factory
//! the composition root hands in, so a restart after an unexpected end
//! connects anew.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::application::ports::{DeadLetterSink, EventStream};
use crate::application::stream_ingest::StreamIngest;
use crate::application::supervisor::{RestartPolicy, TaskFailed, TaskHealth, supervise};

/// A stream's clients: the consumer and its dead-letter sink.
pub type StreamClients = (Box<dyn EventStream>, Box<dyn DeadLetterSink>);

/// Creates the stream's clients (again, after a restart).
pub type ConnectStream = Arc<dyn Fn() -> Result<StreamClients, String> + Send + Sync>;

/// The stream consumer task. Its first clients are created when it is
/// built, so a bad configuration fails start-up; a restart creates new
/// ones.
#[derive(Clone)]
pub struct StreamTask {
    ingest: StreamIngest,
    connect: ConnectStream,
    first: Arc<Mutex<Option<StreamClients>>>,
}

impl StreamTask {
    /// # Errors
    /// The first clients cannot be created (the factory's message).
    pub fn new(ingest: StreamIngest, connect: ConnectStream) -> Result<Self, String> {
        let first = connect()?;
        Ok(Self {
            ingest,
            connect,
            first: Arc::new(Mutex::new(Some(first))),
        })
    }

    /// Consumes until `shutdown` (one supervised run).
    ///
    /// # Errors
    /// The clients cannot be created again after a restart.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (stream, mut dead_letters) = match first {
            Some(c) => c,
            None => (self.connect)()?,
        };
        let report = self.ingest.run(stream, &mut *dead_letters, shutdown).await;
        tracing::info!(?report, "event stream consumer closed");
        Ok(())
    }
}

/// A set of supervised background tasks sharing one stop token.
pub struct Runtime {
    health: TaskHealth,
    restart: RestartPolicy,
    stop: CancellationToken,
    supervisors: tokio::task::JoinSet<Result<(), TaskFailed>>,
}

impl Runtime {
    /// Tasks stop when `stop` is cancelled; a task that gives up cancels it.
    pub fn new(health: TaskHealth, restart: RestartPolicy, stop: CancellationToken) -> Self {
        Self {
            health,
            restart,
            stop,
            supervisors: tokio::task::JoinSet::new(),
        }
    }

    /// Runs `make()` under supervision as task `name`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.supervisors.spawn(supervise(
            name,
            self.health.clone(),
            self.restart,
            self.stop.clone(),
            make,
        ));
    }

    /// Waits until the stop token is cancelled or a task gives up (which
    /// cancels it); the failure, if one ended the wait.
    pub async fn wait(&mut self) -> Option<TaskFailed> {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                Some(ended) = self.supervisors.join_next() => {
                    if let Ok(Err(failed)) = ended {
                        tracing::error!(error = %failed, "stopping the server");
                        self.stop.cancel();
                        return Some(failed);
                    }
                }
            }
        }
    }

    /// Lets the tasks finish after the stop (the stream consumer commits
    /// what it stored and leaves its group), aborting them after `grace`.
    pub async fn drain(mut self, grace: Duration) {
        let drained = tokio::time::timeout(grace, async {
            while self.supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "background tasks did not stop within the grace period"
            );
            self.supervisors.abort_all();
        }
    }
}
