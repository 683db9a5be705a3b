//! Settings: `config.toml` (documented defaults) → `CHURN_*` environment
//! variables (`__` separates sections: `CHURN_TRAINING__HORIZON_DAYS=14`) →
//! command-line flags. [`Settings::validate`] is pure and separate from
//! building anything, so `churn check-config` can run it alone.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::calibration::CalibrationMethod;
use crate::domain::event_format::{EventFormat, FieldMap};
use crate::domain::identifier::is_identifier;
use crate::domain::time::parse_timestamp;
use crate::domain::time_format::{TimeFormat, TimeReader, parse_timezone};
use crate::domain::training::{GbdtParams, ModelSelection};

mod kafka;
pub mod keys;
mod mlflow;
mod ranges;

pub use kafka::KafkaSettings;
pub use mlflow::MlflowSettings;

/// Why the configuration is unusable; names the key to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(String),
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("unknown setting {key} in {origin}{hint}")]
    UnknownKey {
        key: String,
        origin: String,
        hint: String,
    },
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The whole settings tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the embedded store, the local registry and rejects live.
    pub data_dir: PathBuf,
    pub store: StoreSettings,
    pub registry: RegistrySettings,
    pub ingest: IngestSettings,
    pub training: TrainingSettings,
    pub server: ServerSettings,
    pub schedule: ScheduleSettings,
    pub features: FeaturesSettings,
    pub clickhouse: ClickHouseSettings,
    pub kafka: KafkaSettings,
    pub mlflow: MlflowSettings,
    pub monitoring: MonitoringSettings,
}

/// `[monitoring]`: when the drift alert goes up (PSI: below 0.1 stable,
/// 0.1–0.25 moderate, above 0.25 a shift).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringSettings {
    /// A feature whose PSI against the training reference exceeds this
    /// raises the alert.
    pub feature_psi_alert: f64,
    /// The same for the distribution of predicted probabilities.
    pub prediction_psi_alert: f64,
    /// Share of serving users absent from the training reference (0..1).
    pub new_user_share_alert: f64,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        Self {
            feature_psi_alert: 0.25,
            prediction_psi_alert: 0.25,
            new_user_share_alert: 0.5,
        }
    }
}

/// `[features]`: which feature spec every store computes, and live
/// features (README "Live features").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturesSettings {
    /// A features.toml of `[[feature]]` tables; empty = the built-in
    /// standard spec (features/standard.toml).
    pub spec_file: String,
    /// Serve features as of now: a stored event changes its user's
    /// prediction on the next request. Off = the last snapshot.
    pub live: bool,
    /// Live rows kept in memory (about 0.5 KiB each with the standard
    /// spec); past it, rows that expired go first, then any.
    pub live_max_users: usize,
    /// A user with more events than this is served from the snapshot.
    pub live_max_user_events: usize,
    /// Store reads for live features at once; a request finding none free
    /// is served from the snapshot.
    pub live_max_concurrent_reads: usize,
    /// A store read slower than this serves the snapshot instead.
    pub live_read_timeout_ms: u64,
    /// Users compared live-vs-batch after each snapshot swap.
    pub live_check_sample: usize,
    /// A feature's mismatch share above this sets churn_live_consistency_alert.
    pub live_mismatch_alert: f64,
    /// With Kafka: also read the whole topic (outside the consumer group)
    /// to learn which users another replica's consumer is storing, so
    /// every replica answers as of now for every user. Off saves that read
    /// when one replica consumes everything.
    pub live_watch_log: bool,
    /// How often that watch reads the group's committed offsets: users
    /// with uncommitted events are read from the store on every request
    /// until then.
    pub live_settle_ms: u64,
}

impl Default for FeaturesSettings {
    fn default() -> Self {
        let live = crate::application::live_features::LiveOptions::default();
        Self {
            spec_file: String::new(),
            live: live.enabled,
            live_max_users: live.max_users,
            live_max_user_events: live.max_user_events,
            live_max_concurrent_reads: live.max_concurrent_reads,
            live_read_timeout_ms: live.read_timeout.as_millis() as u64,
            live_check_sample: live.check_sample,
            live_mismatch_alert: live.mismatch_alert,
            live_watch_log: true,
            live_settle_ms: 200,
        }
    }
}

impl FeaturesSettings {
    /// The live-feature options these settings give.
    pub fn live_options(&self) -> crate::application::live_features::LiveOptions {
        crate::application::live_features::LiveOptions {
            enabled: self.live,
            max_users: self.live_max_users,
            max_user_events: self.live_max_user_events,
            max_concurrent_reads: self.live_max_concurrent_reads,
            read_timeout: std::time::Duration::from_millis(self.live_read_timeout_ms),
            check_sample: self.live_check_sample,
            mismatch_alert: self.live_mismatch_alert,
        }
    }
}

/// The ClickHouse backend (`store.type = "clickhouse"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClickHouseSettings {
    /// HTTP interface of the server.
    pub url: String,
    /// Database holding `events`, `user_features`, `feature_snapshots`.
    pub database: String,
    pub user: String,
    /// Set through `CHURN_CLICKHOUSE__PASSWORD`, never in a committed file.
    #[serde(serialize_with = "redact")]
    pub password: SecretString,
    /// Check row types against the server's schema on every insert/fetch.
    /// Needs `RowBinaryWithNamesAndTypes`: keep it on for modern servers,
    /// turn it off for ClickHouse 18.16 (Debian's package).
    pub validation: bool,
    /// Apply pending `migrations/` when any command opens the store.
    pub migrate_on_start: bool,
    /// Recognise redeliveries before inserting (Kafka records by position,
    /// other batches by event id): exact counters, reads without `FINAL`.
    /// Off = faster inserts, duplicates removed on read by `FINAL` only.
    pub dedup_check: bool,
    /// Cluster mode: the `remote_servers` cluster name; empty = one server.
    pub cluster: String,
    /// Cluster mode: one HTTP URL per shard, comma-separated, where the
    /// per-user aggregations run on each shard's own rows.
    pub shard_urls: String,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "churn".into(),
            user: "default".into(),
            password: SecretString::from(String::new()),
            validation: true,
            migrate_on_start: true,
            dedup_check: true,
            cluster: String::new(),
            shard_urls: String::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            store: StoreSettings::default(),
            registry: RegistrySettings::default(),
            ingest: IngestSettings::default(),
            training: TrainingSettings::default(),
            server: ServerSettings::default(),
            schedule: ScheduleSettings::default(),
            features: FeaturesSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            kafka: KafkaSettings::default(),
            mlflow: MlflowSettings::default(),
            monitoring: MonitoringSettings::default(),
        }
    }
}

/// `store.sqlite_synchronous`: what a committed batch survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// A process crash (WAL).
    Normal,
    /// A power loss too, at some ingest speed.
    Full,
}

/// `schedule.features_as_of`: the time rebuilt snapshots are computed as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeaturesAsOf {
    /// The wall clock: a live stream.
    Now,
    /// The newest stored event: a historic log.
    End,
    /// The newest event when it is more than a week old, else now.
    Auto,
}

/// A time setting (`YYYY-MM-DD[ HH:MM:SS]` or RFC 3339; empty = unset),
/// parsed when the configuration is loaded: a value that is not a time is
/// refused then, naming the key, and nothing re-parses it later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeSetting {
    text: String,
    secs: Option<i64>,
}

impl TimeSetting {
    /// # Errors
    /// The text is neither empty nor a date or timestamp.
    pub fn parse(text: &str) -> Result<Self, String> {
        let secs = if text.trim().is_empty() {
            None
        } else {
            Some(
                parse_timestamp(text)
                    .ok_or_else(|| format!("{text:?} is not a date or timestamp"))?,
            )
        };
        Ok(Self {
            text: text.to_string(),
            secs,
        })
    }

    /// Seconds since the epoch, when set.
    pub fn secs(&self) -> Option<i64> {
        self.secs
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Serialize for TimeSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TimeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Which event/feature store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Clickhouse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    #[serde(rename = "type")]
    pub kind: StoreKind,
    /// SQLite file; empty = `<data_dir>/churn.db`.
    pub sqlite_path: String,
    /// `normal` (survives process crashes) or `full` (also power loss).
    pub sqlite_synchronous: SqliteSynchronous,
    /// Feature snapshots kept.
    pub snapshot_retention: usize,
    /// Longest a store call a request or the Kafka consumer waits on may
    /// take (appends, names, stats): a hung store answers 503, never hangs.
    pub request_timeout_secs: u64,
    /// Longest a feature build, training read or prediction write may take.
    pub job_timeout_secs: u64,
    /// Events older than this many days (by the wall clock) are dropped
    /// before each feature rebuild; 0 keeps everything.
    pub retention_days: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            sqlite_path: String::new(),
            sqlite_synchronous: SqliteSynchronous::Normal,
            snapshot_retention: 3,
            request_timeout_secs: 30,
            job_timeout_secs: 3_600,
            retention_days: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// `file:///abs/dir`, a plain path, or `s3://bucket/prefix`;
    /// empty = `<data_dir>/registry`.
    pub url: String,
    pub model_name: String,
    /// S3 endpoint for MinIO and other S3-compatible servers; empty = AWS
    /// (or `AWS_ENDPOINT_URL` / `MLFLOW_S3_ENDPOINT_URL` when set).
    pub s3_endpoint: String,
    /// Empty = `AWS_REGION` / `AWS_DEFAULT_REGION`, else "us-east-1".
    pub s3_region: String,
    /// Empty = `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: String,
    /// Empty = `AWS_SECRET_ACCESS_KEY`. Environment only, never committed.
    #[serde(serialize_with = "redact")]
    pub s3_secret_access_key: SecretString,
    /// Allow a plain-http endpoint (MinIO on a private network).
    pub s3_allow_http: bool,
    /// Bucket-in-hostname addressing; false = path style (MinIO's default).
    pub s3_virtual_hosted_style: bool,
    /// Per-request timeout, seconds (an unreachable endpoint fails fast).
    pub s3_timeout_secs: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            model_name: "churn_model".into(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: SecretString::from(String::new()),
            s3_allow_http: false,
            s3_virtual_hosted_style: false,
            s3_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestSettings {
    /// Events per store transaction.
    pub batch_size: usize,
    /// How far in the future an event may be stamped.
    pub max_future_skew_secs: i64,
    /// Events stamped before this are refused as clock or unit errors
    /// (epoch 0, milliseconds read as seconds). `YYYY-MM-DD` or RFC 3339.
    pub min_event_time: TimeSetting,
    /// Rejected lines of `churn ingest`; empty = `<data_dir>/rejects.ndjson`.
    pub rejects_file: String,
    /// Rejected lines kept in the rejects file per field at fault and run
    /// (every one is counted).
    pub rejects_sample_per_reason: u64,
    /// A preset mapping: "segment" (also "rudderstack") or "amplitude";
    /// empty = the seed's field names.
    pub preset: String,
    /// Where each event field is read from; empty = the preset's (or the
    /// field's own name).
    pub fields: FieldSettings,
    /// "auto", "rfc3339", "epoch_s", "epoch_ms", "epoch_us" or a strftime
    /// pattern.
    pub time_format: String,
    /// IANA zone of naive times; empty = UTC.
    pub timezone: String,
    /// Type of events that carry none; empty = the type is required.
    pub default_event_type: String,
    /// CSV field separator (one byte); `.tsv` files use a tab.
    pub csv_delimiter: String,
}

/// One field's source: a path, or alternatives tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldSource {
    One(String),
    Many(Vec<String>),
}

impl Default for FieldSource {
    fn default() -> Self {
        Self::One(String::new())
    }
}

impl FieldSource {
    /// The alternatives; empty = not set.
    fn alternatives(&self) -> Vec<String> {
        match self {
            Self::One(s) if s.trim().is_empty() => Vec::new(),
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `[ingest.fields]`: one key per event field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldSettings {
    pub user_id: FieldSource,
    pub event_time: FieldSource,
    pub event_type: FieldSource,
    pub session_id: FieldSource,
    pub amount: FieldSource,
    pub event_id: FieldSource,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            batch_size: 200_000,
            max_future_skew_secs: 86_400,
            min_event_time: TimeSetting {
                text: "1980-01-01".into(),
                secs: Some(crate::domain::event::DEFAULT_MIN_EVENT_TIME),
            },
            rejects_file: String::new(),
            rejects_sample_per_reason: 100,
            preset: String::new(),
            fields: FieldSettings::default(),
            time_format: "auto".into(),
            timezone: String::new(),
            default_event_type: String::new(),
            csv_delimiter: ",".into(),
        }
    }
}

impl IngestSettings {
    /// How events are read: preset, per-field sources, time format and
    /// zone, default type.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key at fault.
    pub fn event_format(&self) -> Result<EventFormat, ConfigError> {
        let mut fields = FieldMap::preset(&self.preset).map_err(|e| invalid("ingest.preset", e))?;
        let f = &self.fields;
        for (name, source) in [
            ("user_id", &f.user_id),
            ("event_time", &f.event_time),
            ("event_type", &f.event_type),
            ("session_id", &f.session_id),
            ("amount", &f.amount),
            ("event_id", &f.event_id),
        ] {
            let alternatives = source.alternatives();
            if !alternatives.is_empty() {
                fields
                    .set(name, &alternatives)
                    .map_err(|e| invalid("ingest.fields", e))?;
            }
        }
        let format =
            TimeFormat::parse(&self.time_format).map_err(|e| invalid("ingest.time_format", e))?;
        let zone = parse_timezone(&self.timezone).map_err(|e| invalid("ingest.timezone", e))?;
        let default_event_type = match self.default_event_type.trim() {
            "" => None,
            t => {
                let c = crate::domain::event::canonical_type(t);
                if c.is_empty() {
                    return Err(invalid(
                        "ingest.default_event_type",
                        format!("{t:?} is not an event type"),
                    ));
                }
                Some(c)
            }
        };
        Ok(EventFormat {
            fields,
            times: TimeReader::new(format, zone),
            default_event_type,
        })
    }

    /// The CSV separator byte.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] unless it is one ASCII character.
    pub fn csv_delimiter(&self) -> Result<u8, ConfigError> {
        match self.csv_delimiter.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b'\n' => Ok(*b),
            _ if self.csv_delimiter == "\\t" => Ok(b'\t'),
            _ => Err(invalid(
                "ingest.csv_delimiter",
                "must be one ASCII character (\\t for a tab)",
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSettings {
    /// Churn is decided over this many days after the cutoff.
    pub horizon_days: u32,
    /// Eligible users had activity within this many days before the cutoff.
    pub lookback_days: u32,
    /// Event types that count as activity; empty = every type that is not
    /// a churn event.
    pub activity_event_types: Vec<String>,
    /// Explicit churn events (e.g. `cancel`): churned = one in the horizon
    /// with no activity after it. Empty = churned means inactive.
    pub churn_event_types: Vec<String>,
    /// Activity events in the lookback needed to be eligible.
    pub min_events: u32,
    /// Explicit validation cutoff (`YYYY-MM-DD[ HH:MM:SS]` or RFC 3339);
    /// empty = last full day of data minus the horizon.
    pub validation_cutoff: TimeSetting,
    /// Training cutoffs stacked into one training set.
    pub train_snapshots: u32,
    /// Days between stacked training cutoffs.
    pub snapshot_step_days: u32,
    /// Rows the stacked training set holds at most, and the validation set
    /// too: above it users are sampled uniformly in the store; 0 = no cap.
    pub max_training_rows: u64,
    /// A challenger may trail production's AUC by this much and still win.
    pub promotion_tolerance: f64,
    /// "best": register the GBDT unless the logistic baseline validates
    /// better; "gbdt": always the GBDT.
    pub model_selection: ModelSelection,
    /// "platt", "isotonic" or "none": the calibration fitted on held-out
    /// rows, kept only when it lowers log loss on rows used for neither.
    pub calibration: CalibrationMethod,
    pub gbdt: GbdtParams,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            horizon_days: 30,
            lookback_days: 30,
            activity_event_types: Vec::new(),
            churn_event_types: Vec::new(),
            min_events: 1,
            validation_cutoff: TimeSetting::default(),
            train_snapshots: 12,
            snapshot_step_days: 7,
            max_training_rows: 1_000_000,
            promotion_tolerance: 0.01,
            model_selection: ModelSelection::Best,
            calibration: CalibrationMethod::Platt,
            gbdt: GbdtParams::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub host: std::net::IpAddr,
    pub port: u16,
    /// Bearer token for `/admin/*`. Set it through `CHURN_SERVER__ADMIN_TOKEN`,
    /// never in a committed file.
    #[serde(serialize_with = "redact")]
    pub admin_token: SecretString,
    /// Serve admin routes without a token (demos only).
    pub allow_unauthenticated_admin: bool,
    /// How often to check the `production` alias for a move (by another
    /// replica or the CLI), in milliseconds; 0 disables polling.
    pub registry_poll_ms: u64,
    pub max_batch_users: usize,
    pub max_body_bytes: usize,
    /// Request-body bytes held in memory at once, over all requests; a body
    /// arriving beyond it gets 429.
    pub max_inflight_body_bytes: usize,
    /// A request body must arrive within this (else 408).
    pub body_read_timeout_secs: u64,
    /// A request head must arrive within this; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// Open connections; one more gets a 503 and is closed. Keep it under
    /// the process's open-files limit.
    pub max_connections: usize,
    /// Serving requests (/predict*) in flight before new ones get 429.
    pub max_concurrent_requests: usize,
    /// Requests that wait on the store or jobs (POST /events, /admin/*) in
    /// flight before new ones get 429: a budget of their own, so requests
    /// held by a slow store never starve /predict.
    pub max_concurrent_store_requests: usize,
    /// How long /readyz waits on each dependency's ping, milliseconds.
    pub probe_timeout_ms: u64,
    /// Write key for POST /events; empty = open.
    #[serde(serialize_with = "redact")]
    pub ingest_token: SecretString,
    /// Read token for /predict and /predict/batch; empty = open.
    #[serde(serialize_with = "redact")]
    pub predict_token: SecretString,
    /// Grace period for in-flight work on shutdown.
    pub shutdown_grace_secs: u64,
}

pub(crate) fn redact<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "[redacted]"
    })
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 8000,
            admin_token: SecretString::from(String::new()),
            allow_unauthenticated_admin: false,
            registry_poll_ms: 1_000,
            max_batch_users: 1_000,
            max_body_bytes: 16 * 1024 * 1024,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            body_read_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 10_000,
            max_concurrent_requests: 4_096,
            max_concurrent_store_requests: 1_024,
            probe_timeout_ms: 2_000,
            ingest_token: SecretString::from(String::new()),
            predict_token: SecretString::from(String::new()),
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleSettings {
    /// Run the cron jobs inside `churn serve`.
    pub enabled: bool,
    /// Feature rebuild schedule (6-field cron with seconds, UTC).
    pub features_cron: String,
    /// Retraining schedule.
    pub retrain_cron: String,
    /// Rebuilt snapshots (cron and the admin API) are computed as of "now"
    /// (a live stream) or "end" (the newest stored event: a historic log).
    pub features_as_of: FeaturesAsOf,
    /// Replicas sharing a registry elect one to run the schedule through
    /// a lease kept in the registry; off = every replica runs it.
    pub leader_lease: bool,
    /// How long the lease lasts unless renewed (renewed every third).
    pub lease_ttl_secs: u64,
    /// This replica's name in the lease (unique per replica; e.g. the pod
    /// name). Empty = host name, process id and a random suffix.
    pub replica_id: String,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            features_cron: "0 */15 * * * *".into(),
            retrain_cron: "0 30 3 * * *".into(),
            features_as_of: FeaturesAsOf::Auto,
            leader_lease: true,
            lease_ttl_secs: 15,
            replica_id: String::new(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `config_file` (if given, it must exist; if not
    /// given, `./config.toml` is used when present), then `CHURN_*` env,
    /// and validates the result.
    ///
    /// # Errors
    /// [`ConfigError::Load`] for unreadable files or wrongly typed values,
    /// [`ConfigError::Invalid`] naming the key of an invalid one.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let path = match config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                Some(path)
            }
            None => Some(Path::new("config.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
            keys::check_file(&path.display().to_string(), &text)?;
            figment = figment.merge(Toml::file(path));
        }
        keys::check_env(
            std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .filter(|k| k.starts_with("CHURN_")),
        )?;
        let settings: Self = figment
            .merge(Env::prefixed("CHURN_").split("__"))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        // Validated once, here: everything after works on typed, checked
        // settings.
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; pure (no I/O).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.store.kind == StoreKind::Clickhouse {
            let c = &self.clickhouse;
            if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return Err(invalid(
                    "clickhouse.url",
                    "must start with http:// or https://",
                ));
            }
            if !is_identifier(&c.database) {
                return Err(invalid(
                    "clickhouse.database",
                    "letters, digits and '_' only",
                ));
            }
        }
        if let Some(rest) = self.registry.url.strip_prefix("s3://")
            && rest.split('/').next().is_none_or(str::is_empty)
        {
            return Err(invalid(
                "registry.url",
                "s3:// needs a bucket: s3://bucket/prefix",
            ));
        }
        let uri = &self.mlflow.tracking_uri;
        if !(uri.is_empty() || uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(invalid(
                "mlflow.tracking_uri",
                "must start with http:// or https://",
            ));
        }
        if self.registry.model_name.is_empty()
            || !self
                .registry
                .model_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "registry.model_name",
                "letters, digits, '_' and '-' only",
            ));
        }
        self.kafka.validate()?;
        if self.ingest.min_event_time.secs().is_none() {
            return Err(invalid("ingest.min_event_time", "must be set"));
        }
        self.ingest.event_format()?;
        self.ingest.csv_delimiter()?;
        let t = &self.training;
        for (key, types) in [
            ("training.activity_event_types", &t.activity_event_types),
            ("training.churn_event_types", &t.churn_event_types),
        ] {
            if let Some(bad) = types
                .iter()
                .find(|x| crate::domain::event::canonical_type(x).is_empty())
            {
                return Err(invalid(key, format!("{bad:?} is not an event type")));
            }
        }
        if let Some(both) = t.churn_event_types.iter().find(|c| {
            t.activity_event_types
                .iter()
                .any(|a| a.eq_ignore_ascii_case(c))
        }) {
            return Err(invalid(
                "training.churn_event_types",
                format!("{both:?} is also an activity type"),
            ));
        }
        if !(0.0..=1.0).contains(&t.promotion_tolerance) {
            return Err(invalid(
                "training.promotion_tolerance",
                "must be within [0, 1]",
            ));
        }
        if !(t.gbdt.learning_rate > 0.0 && t.gbdt.learning_rate <= 1.0) {
            return Err(invalid(
                "training.gbdt.learning_rate",
                "must be within (0, 1]",
            ));
        }
        Ok(())
    }

    pub fn sqlite_path(&self) -> PathBuf {
        if self.store.sqlite_path.is_empty() {
            self.data_dir.join("churn.db")
        } else {
            PathBuf::from(&self.store.sqlite_path)
        }
    }

    pub fn registry_dir(&self) -> PathBuf {
        let url = &self.registry.url;
        if url.is_empty() {
            self.data_dir.join("registry")
        } else {
            PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
        }
    }

    pub fn rejects_path(&self) -> PathBuf {
        if self.ingest.rejects_file.is_empty() {
            self.data_dir.join("rejects.ndjson")
        } else {
            PathBuf::from(&self.ingest.rejects_file)
        }
    }

    /// `ingest.min_event_time` in seconds.
    pub fn min_event_time(&self) -> i64 {
        self.ingest
            .min_event_time
            .secs()
            .unwrap_or(crate::domain::event::DEFAULT_MIN_EVENT_TIME)
    }

    /// The feature spec file, if one is configured.
    pub fn spec_file(&self) -> Option<PathBuf> {
        (!self.features.spec_file.is_empty()).then(|| PathBuf::from(&self.features.spec_file))
    }

    pub fn validation_cutoff(&self) -> Option<i64> {
        self.training.validation_cutoff.secs()
    }

    /// The effective settings as JSON with secrets redacted (`check-config`).
    pub fn to_redacted_json(&self) -> String {
        json_string(self)
    }
}

fn json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!(s.sqlite_path(), PathBuf::from("./data/churn.db"));
        assert_eq!(s.registry_dir(), PathBuf::from("./data/registry"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = Settings::default();
        s.training.horizon_days = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("training.horizon_days"), "{err}");
        let mut s = Settings::default();
        s.training.churn_event_types = vec!["cancel".into()];
        s.training.activity_event_types = vec!["Cancel".into()];
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("training.churn_event_types")
        );
    }

    #[test]
    fn kafka_is_off_by_default_and_checked_when_on() {
        let mut s = Settings::default();
        assert!(!s.kafka.enabled());
        s.kafka.brokers = "127.0.0.1:9092".into();
        s.validate().unwrap();
        s.kafka.dlq_topic = "events".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.dlq_topic"), "{err}");
        s.kafka.dlq_topic = "events_dlq".into();
        s.kafka.compression = "snappy".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.compression"), "{err}");
        s.kafka.compression = "lz4".into();
        s.kafka.sasl_password = SecretString::from("s3cret".to_string());
        assert!(!s.to_redacted_json().contains("s3cret"));
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let mut s = Settings::default();
        s.server.admin_token = SecretString::from("hunter2".to_string());
        let text = s.to_redacted_json();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("[redacted]"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    /// The committed config.toml documents exactly the built-in defaults.
    #[test]
    fn committed_config_toml_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let from_file: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(&path))
            .extract()
            .unwrap();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        assert_eq!(serde_json::to_value(from_file).unwrap(), defaults);
        // Every key is written in the file, not only inherited.
        let raw: serde_json::Value = Figment::from(Toml::file(&path)).extract().unwrap();
        fn walk(defaults: &serde_json::Value, file: &serde_json::Value, at: &str) {
            if let serde_json::Value::Object(map) = defaults {
                for (k, v) in map {
                    let key = format!("{at}{k}");
                    let inner = file
                        .get(k)
                        .unwrap_or_else(|| panic!("config.toml lacks {key}"));
                    walk(v, inner, &format!("{key}."));
                }
            }
        }
        walk(&defaults, &raw, "");
    }

    /// Typed settings are parsed once, when the file is loaded: a value
    /// that is not one is refused then, naming the key.
    #[test]
    fn typed_settings_are_refused_at_load_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for (section, key, value) in [
            ("schedule", "features_as_of", "\"yesterday\""),
            ("ingest", "min_event_time", "\"the eighties\""),
            ("training", "validation_cutoff", "\"soon\""),
            ("server", "host", "\"localhost:80\""),
            ("store", "sqlite_synchronous", "\"sometimes\""),
        ] {
            let path = dir.path().join(format!("{key}.toml"));
            std::fs::write(&path, format!("[{section}]\n{key} = {value}\n")).unwrap();
            let err = Settings::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let path = dir.path().join("good.toml");
        std::fs::write(
            &path,
            "[training]\nvalidation_cutoff = \"2026-02-01\"\n[schedule]\nfeatures_as_of = \"end\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.validation_cutoff(), Some(1_769_904_000));
        assert_eq!(s.schedule.features_as_of, FeaturesAsOf::End);
    }
}
