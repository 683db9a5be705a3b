//! [`Application`]: the HTTP server of `churn serve`, bound and warmed up
//! (model and snapshot loaded before "ready"), with its background tasks
//! (scheduler, registry poll, Kafka consumer) run as one supervised set.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Services, kafka_connector, kafka_log_watch, rebuild_as_of};
use crate::application::jobs::Jobs;
use crate::application::leadership::Leadership;
use crate::application::live_features::LiveFeatures;
use crate::application::live_watch::watch_log;
use crate::application::ports::LogWatch;
use crate::application::predict::PredictChurn;
use crate::application::registry_poll::follow_production;
use crate::application::runtime::{Runtime, StreamTask};
use crate::application::serving_state::{ReloadOutcome, ServingState};
use crate::application::stream_ingest::{IngestHealth, StreamIngest, StreamOptions};
use crate::application::supervisor::{RestartPolicy, TaskHealth};
use crate::domain::drift::DriftThresholds;
use crate::http::server::{ServerOptions, serve};
use crate::http::{AppContext, Limits};
use crate::infrastructure::scheduler::{run_schedule, validate_cron};

/// The HTTP server with its background tasks, bound and warmed up.
pub struct Application {
    listener: tokio::net::TcpListener,
    services: Services,
    state: ServingState,
    jobs: Jobs,
    app: crate::http::Api,
    consumer: Option<StreamTask>,
    /// This replica's watch of the ingest log, for live features.
    live_watch: Option<LiveWatchTask>,
    tasks: TaskHealth,
    restart: RestartPolicy,
    /// This replica's part in the scheduler's leader election, when on.
    leadership: Option<Leadership>,
}

impl Application {
    /// Binds `server.host:server.port` (port 0 = any free port) and builds.
    ///
    /// # Errors
    /// The address cannot be bound (the message names the setting), or as
    /// [`Application::build_with_listener`].
    pub async fn build(services: Services) -> anyhow::Result<Self> {
        let addr = format!(
            "{}:{}",
            services.settings.server.host, services.settings.server.port
        );
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| {
                format!("cannot listen on {addr} (server.host / server.port, or --port)")
            })?;
        Self::build_with_listener(services, listener).await
    }

    /// Builds on an already-bound listener (tests bind 127.0.0.1:0), checks
    /// the schedule, and loads the production model and newest snapshot.
    /// A missing model or snapshot is not fatal: `/readyz` says so and
    /// `/predict` answers 503 until one exists.
    ///
    /// # Errors
    /// Invalid cron expressions.
    pub async fn build_with_listener(
        services: Services,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Self> {
        // Installed by Services::build already; this returns the handle.
        let prometheus = crate::telemetry::recorder::install();
        let s = &services.settings;
        validate_cron("schedule.features_cron", &s.schedule.features_cron)?;
        validate_cron("schedule.retrain_cron", &s.schedule.retrain_cron)?;
        // A registry problem (missing bucket, wrong credentials, endpoint
        // down) is reported now, by name; the server still starts, serves
        // what it can, and /readyz says what is wrong until it recovers.
        if let Err(e) = services.registry.ping().await {
            tracing::error!(error = %e, "model registry unreachable: check registry.url and registry.s3_* / AWS_*");
        }
        let m = &s.monitoring;
        let state = ServingState::new(services.spec.clone())
            .with_drift_thresholds(DriftThresholds {
                feature_psi: m.feature_psi_alert,
                prediction_psi: m.prediction_psi_alert,
                new_user_share: m.new_user_share_alert,
            })
            .with_eligibility(super::label_policy(s));
        // The newest snapshot under the rebuild rule: on a historic log, a
        // snapshot someone built "as of now" is passed over.
        let limit = services
            .build_features
            .serving_limit(rebuild_as_of(s))
            .await
            .unwrap_or(None);
        match state.reload_features(&*services.features, limit).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "no feature snapshot yet: POST /admin/features/rebuild or wait for the schedule"
            ),
            Err(e) => tracing::warn!(error = %e, "feature snapshot not loaded"),
        }
        match state.reload_model(&services.models).await {
            Ok(ReloadOutcome::NoProductionModel) => {
                tracing::warn!("no production model yet: POST /admin/retrain or `churn train`")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "production model not loaded"),
        }
        // Live features: every ingest path below stores through this
        // pipeline, which tells the cache whose events changed.
        let live = LiveFeatures::new(
            services.features.clone(),
            services.spec.clone(),
            s.features.live_options(),
        );
        let ingest = services.ingest.clone().with_live(live.clone());
        let jobs = Jobs::new(
            services.build_features.clone(),
            services.train.clone(),
            services.models.clone(),
            services.features.clone(),
            state.clone(),
        )
        .with_features_as_of(rebuild_as_of(s))
        .with_live(live.clone())
        .with_retention(services.forget.clone(), s.store.retention_days);
        jobs.check_live();
        let stream_health = IngestHealth::default();
        let tasks = TaskHealth::default();
        let consumer = if s.kafka.enabled() {
            let k = &s.kafka;
            let ingest = StreamIngest::new(
                ingest.clone(),
                StreamOptions {
                    batch_max_events: k.batch_max_events,
                    batch_max_wait: Duration::from_millis(k.batch_max_wait_ms),
                    retry_initial: Duration::from_millis(k.retry_initial_ms),
                    retry_max: Duration::from_millis(k.retry_max_ms),
                },
                stream_health.clone(),
            );
            Some(StreamTask::new(ingest, kafka_connector(k)).map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        let leadership = (s.schedule.enabled && s.schedule.leader_lease).then(|| {
            Leadership::new(
                services.coordination.clone(),
                replica_id(&s.schedule.replica_id),
                Duration::from_secs(s.schedule.lease_ttl_secs),
            )
        });
        let admin_token = crate::http::auth::configured(&s.server.admin_token);
        if admin_token.is_none() && !s.server.allow_unauthenticated_admin {
            tracing::warn!("admin API disabled: set CHURN_SERVER__ADMIN_TOKEN to enable /admin/*");
        }
        let app_state = Arc::new(AppContext {
            predict: PredictChurn::new(state.clone())
                .with_names(services.events.clone())
                .with_live(live.clone()),
            ingest: ingest.clone(),
            jobs: jobs.clone(),
            models: services.models.clone(),
            forget: services.forget.clone(),
            events: services.events.clone(),
            limits: Limits {
                max_batch_users: s.server.max_batch_users,
                max_body_bytes: s.server.max_body_bytes,
                probe_timeout: Duration::from_millis(s.server.probe_timeout_ms),
            },
            admin_token,
            admin_open: s.server.allow_unauthenticated_admin,
            prometheus,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                s.server.max_concurrent_requests,
            )),
            store_in_flight: Arc::new(tokio::sync::Semaphore::new(
                s.server.max_concurrent_store_requests,
            )),
            tokens: crate::http::auth::Tokens {
                ingest: crate::http::auth::configured(&s.server.ingest_token),
                read: crate::http::auth::configured(&s.server.predict_token),
            },
            body_budget: crate::http::intake::BodyBudget::new(
                s.server.max_inflight_body_bytes,
                s.server.max_body_bytes,
                Duration::from_secs(s.server.body_read_timeout_secs),
            ),
            stream_health: stream_health.clone(),
            tasks: tasks.clone(),
            leadership: leadership.clone(),
        });
        let live_watch =
            (s.kafka.enabled() && live.enabled() && s.features.live_watch_log).then(|| {
                LiveWatchTask {
                    connect: kafka_log_watch(&s.kafka),
                    ingest: ingest.clone(),
                    live: live.clone(),
                    settle_every: Duration::from_millis(s.features.live_settle_ms),
                }
            });
        let app = crate::http::Api::new(app_state);
        Ok(Self {
            listener,
            services,
            state,
            jobs,
            app,
            consumer,
            live_watch,
            tasks,
            restart: RestartPolicy::default(),
            leadership,
        })
    }

    /// How supervised tasks are restarted (tests shorten the backoff).
    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn serving_state(&self) -> &ServingState {
        &self.state
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight requests and the supervised tasks finish (each wait bounded
    /// by `server.shutdown_grace_secs`) and returns.
    ///
    /// # Errors
    /// The server fails, or a supervised task (consumer, registry poll,
    /// scheduler) kept ending unexpectedly: the caller exits non-zero.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = self.services.settings.clone();
        // A failed task stops everything; the caller's token stays untouched.
        let stop = shutdown.child_token();
        let mut runtime = Runtime::new(self.tasks.clone(), self.restart, stop.clone());
        // Not supervised: it cannot fail, and ends with `stop`.
        tokio::spawn(crate::telemetry::recorder::upkeep(stop.clone()));
        if let Some(lead) = &self.leadership {
            let (lead, token) = (lead.clone(), stop.clone());
            runtime.spawn("leader_lease", move || {
                let run = lead.clone().run(token.clone());
                async move {
                    run.await;
                    Ok(())
                }
            });
        }
        if s.schedule.enabled {
            let (jobs, features, retrain, lead) = (
                self.jobs.clone(),
                s.schedule.features_cron.clone(),
                s.schedule.retrain_cron.clone(),
                self.leadership.clone(),
            );
            let token = stop.clone();
            runtime.spawn("scheduler", move || {
                let (jobs, f, r, lead, token) = (
                    jobs.clone(),
                    features.clone(),
                    retrain.clone(),
                    lead.clone(),
                    token.clone(),
                );
                async move {
                    run_schedule(jobs, &f, &r, lead, token)
                        .await
                        .map_err(|e| e.to_string())
                }
            });
        }
        if s.server.registry_poll_ms > 0 {
            let (state, models) = (self.state.clone(), self.services.models.clone());
            let interval = Duration::from_millis(s.server.registry_poll_ms);
            let token = stop.clone();
            runtime.spawn("registry_poll", move || {
                let poll =
                    follow_production(state.clone(), models.clone(), interval, token.clone());
                async move {
                    poll.await;
                    Ok(())
                }
            });
        }
        if let Some(consumer) = self.consumer {
            let token = stop.clone();
            runtime.spawn("kafka_consumer", move || {
                consumer.clone().run(token.clone())
            });
        }
        if let Some(watch) = self.live_watch {
            let token = stop.clone();
            runtime.spawn("live_watch", move || {
                let (watch, token) = (watch.clone(), token.clone());
                async move {
                    let log = (watch.connect)()?;
                    watch_log(log, watch.ingest, watch.live, watch.settle_every, token).await
                }
            });
        }
        let grace = Duration::from_secs(s.server.shutdown_grace_secs);
        let options = ServerOptions {
            header_read_timeout: Duration::from_secs(s.server.header_read_timeout_secs),
            max_connections: s.server.max_connections,
        };
        let server = tokio::spawn(serve(self.listener, self.app, options, stop.clone()));
        let failure = runtime.wait().await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined.context("server task failed")?,
            Err(_) => tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            ),
        }
        // The consumer stops at its next await point; closing commits the
        // offsets of stored batches and leaves the group.
        runtime.drain(grace).await;
        tracing::info!("server stopped");
        match failure {
            Some(f) => Err(f.into()),
            None => Ok(()),
        }
    }
}

/// This replica's name in the scheduler lease: the configured one, else
/// host name, process id and a random suffix (unique even for two
/// processes that reuse a pid in two containers of one host name).
fn replica_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// What the live-watch task needs to (re)start.
#[derive(Clone)]
struct LiveWatchTask {
    connect: std::sync::Arc<dyn Fn() -> Result<Box<dyn LogWatch>, String> + Send + Sync>,
    ingest: crate::application::ingest::IngestEvents,
    live: LiveFeatures,
    settle_every: Duration,
}
