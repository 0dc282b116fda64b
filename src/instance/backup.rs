//! Backups as the instance manager runs them: WAL archiving and restoring for PostgreSQL's
//! `archive_command` and `restore_command` (which call `tusk-operator wal-archive` and
//! `wal-restore`, which ask this process on its Unix socket), and base backups the operator asks
//! for on the status port.
//!
//! The store comes from the mounted configuration: `archive.json` (where this cluster archives)
//! and `recovery.json` (what a new cluster restores from), each naming its Secret keys relative
//! to a mounted Secret directory given on the command line. Both are read again at each use, so a
//! changed ConfigMap or a rotated Secret is picked up without a restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper::{Method, StatusCode};

use crate::{
    admin::{Call, answer},
    backup::{
        api::{
            ArchiveState, BACKUPS, BackupRequest, BackupState, Phase, RETENTION, RetentionRequest,
            StoreRefusal, WalRequest,
        },
        base::{self, Progress},
        restore::RecoveryConfig,
        store::{Cause, Patience, Secret, Store, StoreConfig, StoreError},
        wal,
    },
};

/// The archive configuration key in the cluster's ConfigMap.
pub const ARCHIVE_CONFIG: &str = "archive.json";
/// The recovery configuration key in the cluster's ConfigMap.
pub const RECOVERY_CONFIG: &str = "recovery.json";
/// WAL files archived at once when PostgreSQL falls behind.
pub const ARCHIVE_PARALLEL: usize = 4;

/// Makes the relative Secret files of `config` paths below `dir`.
pub fn resolve(mut config: StoreConfig, dir: Option<&Path>) -> StoreConfig {
    let fix = |secret: &mut Secret| {
        if let (Secret::File(path), Some(dir)) = (&*secret, dir)
            && path.is_relative()
        {
            *secret = Secret::File(dir.join(path));
        }
    };
    if let (Some(directory), Some(dir)) = (&config.directory, dir)
        && directory.is_relative()
    {
        config.directory = Some(dir.join(directory));
    }
    if let Some(s3) = &mut config.s3 {
        fix(&mut s3.access_key_id);
        fix(&mut s3.secret_access_key);
        s3.ca_bundle.as_mut().map(fix);
    }
    if let Some(azure) = &mut config.azure {
        azure.access_key.as_mut().map(fix);
        azure.sas_token.as_mut().map(fix);
        azure.ca_bundle.as_mut().map(fix);
    }
    if let Some(gcs) = &mut config.gcs {
        fix(&mut gcs.service_account_key);
        gcs.ca_bundle.as_mut().map(fix);
    }
    config
}

/// What the backup endpoints need.
pub struct Backups {
    /// The mounted ConfigMap's directory.
    pub config_dir: PathBuf,
    /// The mounted Secret of `archive.json`'s keys.
    pub target_dir: Option<PathBuf>,
    /// The mounted Secret of `recovery.json`'s keys.
    pub recovery_source_dir: Option<PathBuf>,
    /// The pod's name.
    pub pod: String,
    /// How `pg_basebackup` reaches this instance, without the segment size.
    pub source: base::Source,
    /// The local connection, to read `wal_segment_size`.
    pub local: super::LocalConnection,
    archived_ahead: Mutex<BTreeSet<String>>,
    archive: Mutex<ArchiveState>,
    last_check: Mutex<Option<std::time::Instant>>,
    runs: Mutex<BTreeMap<String, (BackupState, Arc<Progress>)>>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError {
            cause: Cause::Config,
            message: format!("{}: {e}", path.display()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError {
            cause: Cause::Config,
            message: format!("{}: {e}", path.display()),
        }),
    }
}

fn now() -> String {
    base::now()
}

impl Backups {
    /// The backup service of an instance.
    pub fn new(
        config_dir: PathBuf,
        target_dir: Option<PathBuf>,
        recovery_source_dir: Option<PathBuf>,
        pod: String,
        source: base::Source,
        local: super::LocalConnection,
    ) -> Self {
        Self {
            config_dir,
            target_dir,
            recovery_source_dir,
            pod,
            source,
            local,
            archived_ahead: Mutex::new(BTreeSet::new()),
            archive: Mutex::new(ArchiveState::default()),
            last_check: Mutex::new(None),
            runs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where this cluster archives, if it does.
    pub fn archive_config(&self) -> Result<Option<StoreConfig>, StoreError> {
        Ok(read_json::<StoreConfig>(&self.config_dir.join(ARCHIVE_CONFIG))?
            .map(|c| resolve(c, self.target_dir.as_deref())))
    }

    /// What this cluster restores from, if it was created from a backup.
    pub fn recovery_config(&self) -> Result<Option<RecoveryConfig>, StoreError> {
        Ok(
            read_json::<RecoveryConfig>(&self.config_dir.join(RECOVERY_CONFIG))?.map(|mut c| {
                c.store = resolve(c.store, self.recovery_source_dir.as_deref());
                c
            }),
        )
    }

    fn archive_store(&self) -> Result<Store, StoreError> {
        let config = self.archive_config()?.ok_or_else(|| StoreError {
            cause: Cause::Config,
            message: format!(
                "{} has no {ARCHIVE_CONFIG}: this cluster has no spec.backup.target",
                self.config_dir.display()
            ),
        })?;
        // A restored cluster writing into its source's archive would corrupt it.
        if let Some(recovery) = self.recovery_config()?
            && same_place(&recovery.store, &config)
        {
            return Err(StoreError {
                cause: Cause::Config,
                message: format!(
                    "refusing to archive into {}: it is where this cluster was restored from; \
                     spec.backup.target must differ from the recovery source",
                    config.url
                ),
            });
        }
        config.open()
    }

    /// Applies a retention rule to a store this pod mounts (the cluster's claim): the names let
    /// go.
    pub async fn apply_retention(&self, request: RetentionRequest) -> Result<BTreeSet<String>, StoreError> {
        let store = resolve(request.store, self.target_dir.as_deref()).open()?;
        let rule = crate::backup::retention::Rule {
            keep_last: request.keep_last,
            max_age: request
                .max_age_seconds
                .map(k8s_openapi::jiff::SignedDuration::from_secs),
        };
        let expired = crate::backup::retention::run(
            &store,
            &request.eligible,
            rule,
            k8s_openapi::jiff::Timestamp::now(),
        )
        .await?;
        for name in &expired {
            tracing::info!(backup = %name, store = %store.url, "retention let the backup go");
        }
        Ok(expired)
    }

    /// Archives `request`'s file, and up to [`ARCHIVE_PARALLEL`] - 1 other files PostgreSQL has
    /// ready, at once.
    pub async fn archive_wal(&self, request: &WalRequest) -> Result<(), StoreError> {
        if self
            .archived_ahead
            .lock()
            .expect("never poisoned")
            .remove(&request.name)
        {
            return Ok(());
        }
        let store = match self.archive_store() {
            Ok(s) => s,
            Err(e) => {
                self.failed(&request.name, &e);
                return Err(e);
            }
        };
        let ahead = self.ready_after(request);
        let mut all = vec![request.path.clone()];
        all.extend(ahead.iter().cloned());
        let results = futures::future::join_all(all.iter().map(|p| wal::archive(&store, p))).await;
        let mut outcome = Ok(());
        for (path, result) in all.iter().zip(results) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            match result {
                Ok(_) => {
                    if name != request.name {
                        self.archived_ahead
                            .lock()
                            .expect("never poisoned")
                            .insert(name.clone());
                    }
                    self.archived(&name);
                }
                Err(e) => {
                    self.failed(&name, &e);
                    if name == request.name {
                        outcome = Err(e);
                    }
                }
            }
        }
        outcome
    }

    /// Files PostgreSQL has marked ready after `request`'s, oldest first.
    fn ready_after(&self, request: &WalRequest) -> Vec<PathBuf> {
        let Some(wal_dir) = request.path.parent() else {
            return vec![];
        };
        let Ok(entries) = std::fs::read_dir(wal_dir.join("archive_status")) else {
            return vec![];
        };
        let ahead = self.archived_ahead.lock().expect("never poisoned").clone();
        let mut ready: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".ready").map(str::to_owned))
            .filter(|n| n.as_str() > request.name.as_str() && !ahead.contains(n))
            .collect();
        ready.sort();
        ready
            .into_iter()
            .take(ARCHIVE_PARALLEL - 1)
            .map(|n| wal_dir.join(n))
            .filter(|p| p.exists())
            .collect()
    }

    fn archived(&self, name: &str) {
        let mut state = self.archive.lock().expect("never poisoned");
        state.archived += 1;
        let newer = state
            .last_archived
            .as_ref()
            .is_none_or(|(last, _)| last.as_str() <= name);
        if newer {
            state.last_archived = Some((name.to_owned(), now()));
        }
    }

    fn failed(&self, name: &str, error: &StoreError) {
        tracing::warn!(wal = name, error = %error, "archiving failed; PostgreSQL keeps the file and retries");
        let mut state = self.archive.lock().expect("never poisoned");
        state.failed += 1;
        state.last_failed = Some((
            name.to_owned(),
            now(),
            error.cause.reason().to_owned(),
            error.message.clone(),
        ));
    }

    /// Restores a WAL file from the recovery source; `Ok(false)` when it has none.
    pub async fn restore_wal(&self, request: &WalRequest) -> Result<bool, StoreError> {
        let config = self.recovery_config()?.ok_or_else(|| StoreError {
            cause: Cause::Config,
            message: format!("{} has no {RECOVERY_CONFIG}", self.config_dir.display()),
        })?;
        wal::restore(&config.store.open()?, &request.name, &request.path).await
    }

    /// Archiving as it stands, for the metrics.
    pub fn archive_state(&self) -> ArchiveState {
        let mut state = self.archive.lock().expect("never poisoned").clone();
        state.configured = matches!(self.archive_config(), Ok(Some(_)));
        state
    }

    /// Archiving as it stands, for the operator: until a WAL file was archived, the store is
    /// checked (at most once a minute) so a wrong target shows before the first segment fills.
    pub async fn checked_archive_state(&self) -> ArchiveState {
        let state = self.archive_state();
        let due = {
            let mut last = self.last_check.lock().expect("never poisoned");
            let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
            if due && state.configured && state.last_archived.is_none() {
                *last = Some(std::time::Instant::now());
                true
            } else {
                false
            }
        };
        if due {
            let checked = async {
                let store = self.archive_store()?;
                store
                    .inner
                    .list_with_delimiter(Some(&store.root))
                    .await
                    .map_err(|e| store.error(&e))
            };
            if let Err(e) = checked.await {
                self.failed("", &e);
            }
        }
        self.archive_state()
    }

    /// The runs, for the metrics.
    pub fn runs(&self) -> Vec<BackupState> {
        self.runs
            .lock()
            .expect("never poisoned")
            .values()
            .map(|(s, p)| with_progress(s, p))
            .collect()
    }

    /// Starts a base backup, or says how the one of that name goes.
    pub fn start_backup(self: &Arc<Self>, mut request: BackupRequest) -> (StatusCode, BackupState) {
        // A claim's store is relative to where this pod mounts the cluster's claim.
        request.store = resolve(request.store, self.target_dir.as_deref());
        let mut runs = self.runs.lock().expect("never poisoned");
        if let Some((state, progress)) = runs.get(&request.name) {
            return (StatusCode::OK, with_progress(state, progress));
        }
        if let Some((other, _)) = runs.values().find(|(s, _)| s.phase == Phase::Running) {
            let busy = BackupState {
                name: request.name.clone(),
                phase: Phase::Failed,
                started_at: now(),
                tar_bytes: 0,
                stored_bytes: 0,
                record: None,
                error: Some((
                    "BackupInProgress".into(),
                    format!(
                        "{} is already taking backup {}; one runs at a time",
                        self.pod, other.name
                    ),
                )),
            };
            return (StatusCode::CONFLICT, busy);
        }
        let state = BackupState {
            name: request.name.clone(),
            phase: Phase::Running,
            started_at: now(),
            tar_bytes: 0,
            stored_bytes: 0,
            record: None,
            error: None,
        };
        let progress = Arc::new(Progress::default());
        runs.insert(request.name.clone(), (state.clone(), progress.clone()));
        drop(runs);
        let this = self.clone();
        tokio::spawn(async move {
            let name = request.name.clone();
            tracing::info!(backup = %name, store = %request.store.url, "base backup started");
            let result = this.run_backup(request, progress).await;
            let mut runs = this.runs.lock().expect("never poisoned");
            let Some((state, _)) = runs.get_mut(&name) else {
                return;
            };
            match result {
                Ok(record) => {
                    tracing::info!(backup = %name, bytes = record.stored_bytes, "base backup completed");
                    state.phase = Phase::Completed;
                    state.record = Some(record);
                }
                Err((reason, message)) => {
                    tracing::warn!(backup = %name, %reason, %message, "base backup failed");
                    state.phase = Phase::Failed;
                    state.error = Some((reason, message));
                }
            }
        });
        (StatusCode::ACCEPTED, state)
    }

    async fn run_backup(
        &self,
        request: BackupRequest,
        progress: Arc<Progress>,
    ) -> Result<base::BackupRecord, (String, String)> {
        let failed = |e: StoreError| (e.cause.reason().to_owned(), e.message);
        // A wrong target fails at once; a store that fails in the middle of the stream is
        // retried for about a minute before the backup fails.
        request
            .store
            .open_with(Patience::Brief)
            .map_err(failed)?
            .check()
            .await
            .map_err(failed)?;
        let store = request.store.open_with(Patience::Steady).map_err(failed)?;
        let segment_size = self.segment_size().await.map_err(|e| {
            (
                "PostgresUnavailable".to_owned(),
                format!("reading wal_segment_size: {e}"),
            )
        })?;
        let source = base::Source {
            segment_size,
            ..self.source.clone()
        };
        base::take(
            &store,
            &source,
            &request.name,
            &self.pod,
            request.compression,
            progress,
        )
        .await
        .map_err(|e| match e {
            base::BackupError::Store(s) => (s.cause.reason().to_owned(), s.message),
            base::BackupError::Postgres(m) => ("BasebackupFailed".to_owned(), m),
            base::BackupError::Verify(m) => ("VerificationFailed".to_owned(), m),
        })
    }

    async fn segment_size(&self) -> Result<u64, tokio_postgres::Error> {
        let client = self.local.connect().await?;
        let row = client
            .query_one(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
                &[],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(16 * 1024 * 1024))
    }

    /// The state of backup `name`, if this instance ran it since it started.
    pub fn backup(&self, name: &str) -> Option<BackupState> {
        self.runs
            .lock()
            .expect("never poisoned")
            .get(name)
            .map(|(s, p)| with_progress(s, p))
    }
}

fn with_progress(state: &BackupState, progress: &Progress) -> BackupState {
    use std::sync::atomic::Ordering;
    let mut state = state.clone();
    if state.phase == Phase::Running {
        state.tar_bytes = progress.tar_bytes.load(Ordering::Relaxed);
        state.stored_bytes = progress.stored_bytes.load(Ordering::Relaxed);
    } else if let Some(record) = &state.record {
        state.tar_bytes = record.tar_bytes;
        state.stored_bytes = record.stored_bytes;
    }
    state
}

/// True when two configs write to the same prefix of the same store.
pub fn same_place(a: &StoreConfig, b: &StoreConfig) -> bool {
    let trim = |r: &str| r.trim_matches('/').to_owned();
    let store = |c: &StoreConfig| {
        (
            c.s3.as_ref().map(|s| {
                (
                    s.bucket.clone(),
                    s.endpoint.clone().map(|e| e.trim_end_matches('/').to_owned()),
                )
            }),
            c.azure.as_ref().map(|a| {
                (
                    a.account.clone(),
                    a.container.clone(),
                    a.endpoint.clone().map(|e| e.trim_end_matches('/').to_owned()),
                )
            }),
            // A key names its endpoint (`gcs_base_url`) inside: the bucket names the place.
            c.gcs.as_ref().map(|g| g.bucket.clone()),
            c.directory.clone(),
            // A claim's url names it: `pvc://<claim>/<root>`.
            c.directory
                .as_ref()
                .map(|_| c.url.trim_end_matches('/').to_owned()),
        )
    };
    store(a) == store(b) && trim(&a.root) == trim(&b.root)
}

fn json<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    answer(
        status,
        serde_json::to_string(value).expect("states serialize"),
        "application/json",
    )
}

/// Answers the operator's backup requests on the status port; `None` when `call` is not one.
pub async fn handle_status_call(
    backups: &Arc<Backups>,
    call: &Call,
) -> Option<hyper::Response<http_body_util::Full<hyper::body::Bytes>>> {
    let text = |status, body: String| answer(status, body, "text/plain");
    if call.path == crate::backup::api::ARCHIVE && call.method == Method::GET {
        return Some(json(StatusCode::OK, &backups.checked_archive_state().await));
    }
    if call.path == RETENTION && call.method == Method::POST {
        return Some(match serde_json::from_slice::<RetentionRequest>(&call.body) {
            Ok(request) => match backups.apply_retention(request).await {
                Ok(names) => json(StatusCode::OK, &names),
                Err(e) => json(
                    StatusCode::BAD_GATEWAY,
                    &StoreRefusal {
                        reason: e.cause.reason().to_owned(),
                        message: e.message,
                    },
                ),
            },
            Err(e) => text(StatusCode::BAD_REQUEST, format!("not a retention request: {e}\n")),
        });
    }
    if call.path == BACKUPS && call.method == Method::POST {
        return Some(match serde_json::from_slice::<BackupRequest>(&call.body) {
            Ok(request) => {
                let (status, state) = backups.start_backup(request);
                json(status, &state)
            }
            Err(e) => text(StatusCode::BAD_REQUEST, format!("not a backup request: {e}\n")),
        });
    }
    let name = call.path.strip_prefix(BACKUPS)?.strip_prefix('/')?;
    if call.method != Method::GET {
        return None;
    }
    Some(match backups.backup(name) {
        Some(state) => json(StatusCode::OK, &state),
        None => text(
            StatusCode::NOT_FOUND,
            format!("{} has not run backup {name} since it started\n", backups.pod),
        ),
    })
}

/// Answers `archive_command` and `restore_command` on the Unix socket.
pub async fn handle_socket_call(
    backups: Arc<Backups>,
    call: Call,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let text = |status, body: String| answer(status, body, "text/plain");
    let request = match serde_json::from_slice::<WalRequest>(&call.body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not a WAL request: {e}\n")),
    };
    match (call.method, call.path.as_str()) {
        (Method::POST, crate::backup::api::WAL_ARCHIVE) => match backups.archive_wal(&request).await {
            Ok(()) => text(StatusCode::OK, "archived\n".into()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        (Method::POST, crate::backup::api::WAL_RESTORE) => match backups.restore_wal(&request).await {
            Ok(true) => text(StatusCode::OK, "restored\n".into()),
            Ok(false) => text(
                StatusCode::NOT_FOUND,
                format!("{} is not in the archive\n", request.name),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `tusk-operator base-backup`: one base backup, as [`Backups::start_backup`] runs it; prints the
/// record and the process's peak resident memory (`VmHWM`).
pub async fn base_backup_once(args: crate::cli::BaseBackupArgs) -> Result<(), String> {
    let programs = super::Programs::find().map_err(|e| e.to_string())?;
    let config: StoreConfig = serde_json::from_slice(
        &std::fs::read(&args.store).map_err(|e| format!("{}: {e}", args.store.display()))?,
    )
    .map_err(|e| format!("{}: {e}", args.store.display()))?;
    let store = config.open_with(Patience::Steady).map_err(|e| e.message)?;
    let source = base::Source {
        program: programs.pg_basebackup,
        connection: vec![
            ("host", args.host),
            ("port", args.port.to_string()),
            ("user", crate::facts::cluster::SUPERUSER.to_owned()),
        ],
        password: args.password,
        major: programs.major,
        version: programs.version,
        segment_size: 16 * 1024 * 1024,
    };
    let record = base::take(
        &store,
        &source,
        &args.name,
        "bench",
        args.compression,
        Arc::new(Progress::default()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .unwrap_or_default();
    println!("{}", serde_json::json!({"record": record, "peak": peak}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::store::S3Config;

    fn s3(bucket: &str, root: &str) -> StoreConfig {
        StoreConfig {
            s3: Some(S3Config {
                bucket: bucket.into(),
                endpoint: Some("http://127.0.0.1:9000/".into()),
                region: None,
                access_key_id: Secret::File("ACCESS_KEY_ID".into()),
                secret_access_key: Secret::File("SECRET_ACCESS_KEY".into()),
                ca_bundle: None,
                encryption: None,
            }),
            azure: None,
            gcs: None,
            directory: None,
            root: root.into(),
            url: String::new(),
        }
    }

    #[test]
    fn relative_secret_files_resolve_below_the_mount() {
        let resolved = resolve(s3("b", "x"), Some(Path::new("/etc/tusk/backup")));
        assert_eq!(
            resolved.s3.unwrap().access_key_id,
            Secret::File("/etc/tusk/backup/ACCESS_KEY_ID".into())
        );
    }

    #[test]
    fn the_same_prefix_of_the_same_bucket_is_the_same_place() {
        assert!(same_place(&s3("b", "backups/db"), &s3("b", "/backups/db/")));
        assert!(!same_place(&s3("b", "backups/db"), &s3("b", "backups/db2")));
        assert!(!same_place(&s3("b", "backups/db"), &s3("c", "backups/db")));
        let claim = |claim: &str, root: &str| StoreConfig {
            s3: None,
            azure: None,
            gcs: None,
            directory: Some(".".into()),
            root: root.into(),
            url: format!("pvc://{claim}/{root}"),
        };
        assert!(same_place(&claim("pvc", "db"), &claim("pvc", "db")));
        assert!(!same_place(&claim("pvc", "db"), &claim("other", "db")));
        assert!(!same_place(&claim("pvc", "db"), &claim("pvc", "db2")));
        assert!(!same_place(&claim("pvc", "db"), &s3("pvc", "db")));
    }
}
