//! `ObjectStoreRegistry`: the model registry on any `object_store` backend
//! (local filesystem by default; S3/MinIO with the same code).
//!
//! Layout under the configured prefix:
//!
//! ```text
//! <model>/versions/00000003/model.bin      serialized model (immutable)
//! <model>/versions/00000003/metadata.json  ModelMetadata incl. SHA-256 of model.bin
//! <model>/aliases/production.json          AliasRecord {version, history, ...}
//! ```
//!
//! Versions are claimed with `PutMode::Create` on `model.bin`, so two
//! trainers racing for the same number cannot overwrite each other; a version
//! exists once its `metadata.json` is written. Alias moves are
//! compare-and-swap: `PutMode::Update` with the ETag where the backend
//! supports it (S3, MinIO), and an exclusive OS file lock around the
//! re-read and write on the local filesystem (which has no conditional
//! update), so replicas sharing a directory on one host are safe too.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::application::ports::{AliasRecord, Coordination, ModelRegistry, RegistryError};
use crate::domain::lease::{Lease, TickClaim};
use crate::domain::model::ModelMetadata;

/// How many version numbers a registration tries before giving up (only
/// reached when many writers race).
const MAX_CLAIM_ATTEMPTS: u64 = 16;

/// The registry adapter.
pub struct ObjectStoreRegistry {
    store: Arc<dyn ObjectStore>,
    root: Path,
    model_name: String,
    alias_lock: Mutex<()>,
    /// Local registries only: the file locked around alias moves.
    lock_file: Option<std::path::PathBuf>,
    /// Where the registry lives, for error messages.
    location: String,
}

/// Connection settings of an S3 (or MinIO) registry.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
    pub virtual_hosted_style: bool,
    pub timeout: std::time::Duration,
}

fn backend(e: object_store::Error) -> RegistryError {
    RegistryError::Backend(e.to_string())
}

impl ObjectStoreRegistry {
    /// A registry for `model_name` under `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, model_name: &str) -> Self {
        let mut root = Path::from(prefix.trim_matches('/'));
        root = root.join(model_name);
        Self {
            store,
            root,
            model_name: model_name.to_string(),
            alias_lock: Mutex::new(()),
            lock_file: None,
            location: prefix.to_string(),
        }
    }

    /// A registry in an S3 bucket (AWS, MinIO, any S3-compatible server).
    /// Nothing is contacted here; [`ModelRegistry::ping`] checks the
    /// bucket and credentials.
    ///
    /// # Errors
    /// [`RegistryError::Backend`] for an invalid configuration.
    pub fn s3(options: &S3Options, model_name: &str) -> Result<Self, RegistryError> {
        use object_store::aws::AmazonS3Builder;
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_virtual_hosted_style_request(options.virtual_hosted_style)
            // allow_http lives in the client options: set it there, since
            // with_client_options replaces what with_allow_http would set.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http)
                    .with_timeout(options.timeout)
                    .with_connect_timeout(options.timeout.min(std::time::Duration::from_secs(5))),
            )
            // Fail within a few timeouts: readiness must say "unreachable"
            // promptly, and a loaded model keeps serving meanwhile.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: options.timeout * 3,
            });
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| {
            RegistryError::Backend(format!("s3://{} configuration: {e}", options.bucket))
        })?;
        let mut registry = Self::new(Arc::new(store), &options.prefix, model_name);
        registry.location = format!(
            "s3://{}/{}{}",
            options.bucket,
            options.prefix.trim_matches('/'),
            options
                .endpoint
                .as_ref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        );
        Ok(registry)
    }

    /// The local-filesystem registry under `dir` (created if missing).
    ///
    /// # Errors
    /// [`RegistryError::Backend`] if the directory cannot be created.
    pub fn local(dir: &std::path::Path, model_name: &str) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RegistryError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(backend)?;
        let mut registry = Self::new(Arc::new(fs), "", model_name);
        registry.lock_file = Some(dir.join(format!(".{model_name}.aliases.lock")));
        registry.location = dir.display().to_string();
        Ok(registry)
    }

    /// Holds an exclusive lock on the local lock file (blocking call, off
    /// the runtime); released when the returned file is dropped.
    async fn lock_local(&self) -> Result<Option<std::fs::File>, RegistryError> {
        let Some(path) = self.lock_file.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| RegistryError::Backend(e.to_string()))?
        .map(Some)
        .map_err(|e| RegistryError::Backend(format!("alias lock: {e}")))
    }

    fn version_dir(&self, version: u64) -> Path {
        self.root
            .clone()
            .join("versions")
            .join(format!("{version:08}").as_str())
    }

    fn alias_path(&self, alias: &str) -> Path {
        self.root
            .clone()
            .join("aliases")
            .join(format!("{alias}.json").as_str())
    }

    /// Version numbers that have at least one object (claimed or complete).
    async fn claimed_versions(&self) -> Result<Vec<u64>, RegistryError> {
        let prefix = self.root.clone().join("versions");
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(backend)?;
        let mut versions: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|f| f.parse().ok()))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<(T, UpdateVersion)>, RegistryError> {
        match self.store.get(path).await {
            Ok(result) => {
                let version = UpdateVersion {
                    e_tag: result.meta.e_tag.clone(),
                    version: result.meta.version.clone(),
                };
                let bytes = result.bytes().await.map_err(backend)?;
                let value = serde_json::from_slice(&bytes)
                    .map_err(|e| RegistryError::Corrupt(format!("{path}: {e}")))?;
                Ok(Some((value, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    fn coordination_path(&self) -> Path {
        self.root.clone().join("coordination")
    }

    fn lease_path(&self, name: &str) -> Path {
        self.coordination_path()
            .join("leases")
            .join(format!("{name}.json").as_str())
    }

    fn ticks_path(&self, job: &str) -> Path {
        self.coordination_path().join("ticks").join(job)
    }

    /// Compare-and-swap of one JSON document: writes `value` if the stored
    /// one still equals `expected` (`None` = must not exist), else
    /// [`RegistryError::Conflict`] naming `what`.
    async fn swap_json<T>(
        &self,
        path: &Path,
        value: &T,
        expected: Option<&T>,
        what: &str,
    ) -> Result<(), RegistryError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
    {
        let _local = self.alias_lock.lock().await;
        let _file_lock = self.lock_local().await?;
        let current = self.get_json::<T>(path).await?;
        let conflict = || RegistryError::Conflict {
            alias: what.to_string(),
        };
        if current.as_ref().map(|(a, _)| a) != expected {
            return Err(conflict());
        }
        let json =
            serde_json::to_vec_pretty(value).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let mode = match &current {
            None => PutMode::Create,
            Some((_, v)) => PutMode::Update(v.clone()),
        };
        self.put_conditional(path, json, mode, _file_lock.is_some(), what)
            .await
    }

    /// A conditional put (`mode`); a lost condition is
    /// [`RegistryError::Conflict`] naming `what`. The local filesystem has
    /// no conditional update: there the caller holds the file lock
    /// (`locked`) and has re-read the object, which makes a plain put safe
    /// across processes.
    async fn put_conditional(
        &self,
        path: &Path,
        json: Vec<u8>,
        mode: PutMode,
        locked: bool,
        what: &str,
    ) -> Result<(), RegistryError> {
        let result = self
            .store
            .put_opts(path, json.clone().into(), PutOptions::from(mode))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(RegistryError::Conflict {
                alias: what.to_string(),
            }),
            Err(object_store::Error::NotImplemented { .. }) if locked => self
                .store
                .put(path, json.into())
                .await
                .map(|_| ())
                .map_err(backend),
            Err(e) => Err(backend(e)),
        }
    }

    async fn metadata(&self, version: u64) -> Result<ModelMetadata, RegistryError> {
        self.get_json(&self.version_dir(version).join("metadata.json"))
            .await?
            .map(|(m, _)| m)
            .ok_or(RegistryError::UnknownVersion(version))
    }
}

#[async_trait]
impl ModelRegistry for ObjectStoreRegistry {
    async fn register(
        &self,
        mut metadata: ModelMetadata,
        model: Vec<u8>,
    ) -> Result<ModelMetadata, RegistryError> {
        metadata.name = self.model_name.clone();
        metadata.checksum_sha256 = hex::encode(Sha256::digest(&model));
        let payload = PutPayload::from(model);
        let mut version = self.claimed_versions().await?.last().copied().unwrap_or(0) + 1;
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let dir = self.version_dir(version);
            let claim = self
                .store
                .put_opts(
                    &dir.clone().join("model.bin"),
                    payload.clone(),
                    PutMode::Create.into(),
                )
                .await;
            match claim {
                Ok(_) => {
                    metadata.version = version;
                    let json = serde_json::to_vec_pretty(&metadata)
                        .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                    self.store
                        .put_opts(
                            &dir.clone().join("metadata.json"),
                            json.into(),
                            PutMode::Create.into(),
                        )
                        .await
                        .map_err(backend)?;
                    return Ok(metadata);
                }
                Err(object_store::Error::AlreadyExists { .. }) => version += 1,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(RegistryError::Conflict {
            alias: format!("version numbers up to {version}"),
        })
    }

    async fn list(&self) -> Result<Vec<ModelMetadata>, RegistryError> {
        let mut out = Vec::new();
        for v in self.claimed_versions().await? {
            // A claimed number without metadata is a registration that died
            // half-way: not a version.
            match self.metadata(v).await {
                Ok(m) => out.push(m),
                Err(RegistryError::UnknownVersion(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn load(&self, version: u64) -> Result<(ModelMetadata, Vec<u8>), RegistryError> {
        let metadata = self.metadata(version).await?;
        let bytes = self
            .store
            .get(&self.version_dir(version).join("model.bin"))
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => RegistryError::UnknownVersion(version),
                e => backend(e),
            })?
            .bytes()
            .await
            .map_err(backend)?;
        let found = hex::encode(Sha256::digest(&bytes));
        if found != metadata.checksum_sha256 {
            return Err(RegistryError::Checksum {
                version,
                expected: metadata.checksum_sha256,
                found,
            });
        }
        Ok((metadata, bytes.to_vec()))
    }

    async fn alias(&self, alias: &str) -> Result<Option<AliasRecord>, RegistryError> {
        Ok(self
            .get_json(&self.alias_path(alias))
            .await?
            .map(|(a, _)| a))
    }

    async fn set_alias(
        &self,
        alias: &str,
        record: AliasRecord,
        expected: Option<&AliasRecord>,
    ) -> Result<(), RegistryError> {
        self.swap_json(&self.alias_path(alias), &record, expected, alias)
            .await
    }

    async fn forget_users(&self, users: &[u64]) -> Result<usize, RegistryError> {
        let mut rewritten = 0;
        for mut metadata in self.list().await? {
            let Some(reference) = metadata.drift_reference.as_mut() else {
                continue;
            };
            let before = reference.user_sample.users.len();
            reference.user_sample.users.retain(|u| !users.contains(u));
            if reference.user_sample.users.len() == before {
                continue;
            }
            let json = serde_json::to_vec_pretty(&metadata)
                .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            self.store
                .put(
                    &self.version_dir(metadata.version).join("metadata.json"),
                    json.into(),
                )
                .await
                .map_err(backend)?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    async fn repair_alias(&self, alias: &str, record: AliasRecord) -> Result<(), RegistryError> {
        let path = self.alias_path(alias);
        let _local = self.alias_lock.lock().await;
        let _file_lock = self.lock_local().await?;
        let conflict = || RegistryError::Conflict {
            alias: alias.to_string(),
        };
        let stored = match self.store.get(&path).await {
            Ok(stored) => stored,
            Err(object_store::Error::NotFound { .. }) => return Err(conflict()),
            Err(e) => return Err(backend(e)),
        };
        let version = UpdateVersion {
            e_tag: stored.meta.e_tag.clone(),
            version: stored.meta.version.clone(),
        };
        let bytes = stored.bytes().await.map_err(backend)?;
        // Only an unreadable record is replaced this way; a readable one
        // moves by compare-and-swap as always.
        if serde_json::from_slice::<AliasRecord>(&bytes).is_ok() {
            return Err(conflict());
        }
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        self.put_conditional(
            &path,
            json,
            PutMode::Update(version),
            _file_lock.is_some(),
            alias,
        )
        .await
    }

    async fn alias_stamp(&self, alias: &str) -> Result<Option<String>, RegistryError> {
        match self.store.head(&self.alias_path(alias)).await {
            Ok(meta) => Ok(Some(meta.e_tag.unwrap_or_else(|| {
                format!("{}:{}", meta.last_modified.timestamp_micros(), meta.size)
            }))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        self.store
            .list_with_delimiter(Some(&self.root))
            .await
            .map(|_| ())
            .map_err(|e| RegistryError::Backend(format!("{}: {e}", self.location)))
    }
}

#[async_trait]
impl Coordination for ObjectStoreRegistry {
    async fn lease(&self, name: &str) -> Result<Option<Lease>, RegistryError> {
        Ok(self.get_json(&self.lease_path(name)).await?.map(|(l, _)| l))
    }

    async fn swap_lease(
        &self,
        name: &str,
        lease: &Lease,
        expected: Option<&Lease>,
    ) -> Result<(), RegistryError> {
        self.swap_json(
            &self.lease_path(name),
            lease,
            expected,
            &format!("lease {name}"),
        )
        .await
    }

    async fn claim_tick(&self, claim: &TickClaim) -> Result<bool, RegistryError> {
        let path = self
            .ticks_path(&claim.job)
            .join(format!("{:012}.json", claim.tick).as_str());
        let json =
            serde_json::to_vec_pretty(claim).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        match self
            .store
            .put_opts(&path, json.into(), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn ticks(&self, job: &str) -> Result<Vec<TickClaim>, RegistryError> {
        use futures::TryStreamExt;
        let mut paths: Vec<Path> = self
            .store
            .list(Some(&self.ticks_path(job)))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(backend)?;
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if let Some((claim, _)) = self.get_json::<TickClaim>(&path).await? {
                out.push(claim);
            }
        }
        Ok(out)
    }

    async fn forget_ticks(&self, job: &str, before: i64) -> Result<usize, RegistryError> {
        use futures::TryStreamExt;
        let old: Vec<Path> = self
            .store
            .list(Some(&self.ticks_path(job)))
            .map_ok(|m| m.location)
            .try_filter(|p| {
                let tick = p
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|t| t.parse::<i64>().ok());
                futures::future::ready(tick.is_some_and(|t| t < before))
            })
            .try_collect()
            .await
            .map_err(backend)?;
        for path in &old {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(old.len())
    }
}
