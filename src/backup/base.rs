//! A base backup streamed into the store: `pg_basebackup --format=tar --pgdata=-` (one tar with
//! the WAL it needs, `--wal-method=fetch`, and PostgreSQL's `backup_manifest` inside), compressed
//! with zstd as it goes and uploaded in parts, so neither the disk nor the memory of the pod ever
//! holds the whole backup.
//!
//! Objects of backup `<name>` below the cluster's prefix, in the order they are written:
//! - `base/<name>/base.tar.zst`: the data directory, as PostgreSQL's tools restore it (`tar
//!   --zstd -xf`); backups whose record names no compression are `base.tar.gz`;
//! - `base/<name>/backup_manifest`: PostgreSQL's manifest (`pg_verifybackup` reads it);
//! - `base/<name>/backup.json`: Tusk's [`BackupRecord`], written last, once the tar was read
//!   back and its checksum matched. A backup without it is not a backup.

use std::{
    io::{Read, Write},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart, path::Path};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::api::common::BackupCompression;

use super::{
    store::{Cause, Store, StoreError},
    wal::{format_lsn, hex, parse_lsn, segment_name},
};

/// The name of the tar object.
pub const BASE_TAR: &str = "base.tar.zst";
/// The name of the tar object of a backup whose record names no compression: gzip.
pub const BASE_TAR_GZ: &str = "base.tar.gz";
/// The name of the tar object of an uncompressed backup.
pub const BASE_TAR_PLAIN: &str = "base.tar";
/// zstd's level: its fastest regular one, which on pgbench data still compresses better than
/// gzip's default.
pub const ZSTD_LEVEL: i32 = 1;
/// At most this many zstd worker threads, whatever the pod's CPUs.
const ZSTD_WORKERS: u32 = 4;
/// The name of PostgreSQL's manifest object.
pub const MANIFEST: &str = "backup_manifest";
/// The name of Tusk's record, the mark of a complete backup.
pub const RECORD: &str = "backup.json";

/// Size of each uploaded part.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Compressed bytes handed from the compressing thread to the uploader at a time.
const CHUNK: usize = 1024 * 1024;
/// The capacity asked for the pipe from `pg_basebackup`.
const PIPE_SIZE: i32 = 1024 * 1024;
/// The read buffer between the tar reader and the pipe from `pg_basebackup`.
const READ_BUFFER: usize = 1024 * 1024;

/// What Tusk knows of a complete backup, stored beside it as `backup.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup's name (the `PostgresBackup`'s).
    pub name: String,
    /// The pod that took it.
    pub instance: String,
    /// When it started and stopped, in RFC 3339. A restore to a time needs a backup that stopped
    /// before that time.
    pub started_at: String,
    /// See `started_at`.
    pub stopped_at: String,
    /// The timeline it was taken on.
    pub timeline: u32,
    /// The first LSN its restore needs.
    pub begin_lsn: String,
    /// The LSN from which its restore is consistent.
    pub end_lsn: String,
    /// The WAL segments of `begin_lsn` and `end_lsn`.
    pub begin_wal: String,
    /// See `begin_wal`.
    pub end_wal: String,
    /// PostgreSQL's major version.
    pub postgres_major: u32,
    /// `postgres --version`.
    pub postgres_version: String,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    /// Bytes of the tar object in the store.
    pub stored_bytes: u64,
    /// SHA-256 of the tar object, checked by reading it back from the store.
    pub sha256: String,
    /// How the tar object is compressed; gzip for a record that does not say.
    #[serde(default)]
    pub compression: TarCompression,
}

/// How a backup's tar is compressed: which object it is and how to read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TarCompression {
    /// `base.tar.gz`.
    #[default]
    Gzip,
    /// `base.tar.zst`, what Tusk writes unless told otherwise.
    Zstd,
    /// `base.tar`, uncompressed (`spec.backup.compression: none`).
    None,
}

impl From<BackupCompression> for TarCompression {
    fn from(compression: BackupCompression) -> Self {
        match compression {
            BackupCompression::Zstd => Self::Zstd,
            BackupCompression::None => Self::None,
        }
    }
}

impl TarCompression {
    /// The name of the tar object compressed so.
    pub fn tar_object(self) -> &'static str {
        match self {
            Self::Gzip => BASE_TAR_GZ,
            Self::Zstd => BASE_TAR,
            Self::None => BASE_TAR_PLAIN,
        }
    }
}

impl BackupRecord {
    /// The name of its tar object.
    pub fn tar_object(&self) -> &'static str {
        self.compression.tar_object()
    }
}

/// How to run `pg_basebackup` against the pod's own PostgreSQL.
#[derive(Clone, Debug)]
pub struct Source {
    /// `pg_basebackup`.
    pub program: std::path::PathBuf,
    /// The libpq parameters of the connection: the pod's own address (replication connections
    /// come over TCP), the port, the user, and TLS's when the cluster has it.
    pub connection: Vec<(&'static str, String)>,
    /// The superuser's password, for a connection without a client certificate.
    pub password: String,
    /// PostgreSQL's major version and `postgres --version`.
    pub major: u32,
    /// See `major`.
    pub version: String,
    /// `wal_segment_size` in bytes.
    pub segment_size: u64,
}

/// Progress a status endpoint can show while a backup runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Uncompressed bytes read from `pg_basebackup`.
    pub tar_bytes: AtomicU64,
    /// Compressed bytes handed to the uploader.
    pub stored_bytes: AtomicU64,
}

/// Why a backup failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `pg_basebackup` failed.
    #[error("pg_basebackup failed: {0}")]
    Postgres(String),
    /// What was uploaded is not what was read.
    #[error("{0}")]
    Verify(String),
}

/// Where the objects of backup `name` are.
pub fn location(store: &Store, name: &str, object: &str) -> Path {
    store.path(&format!("base/{name}/{object}"))
}

/// Counts and hashes what passes, and hands it to a channel in chunks.
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Bytes>,
    hash: Sha256,
    bytes: u64,
    progress: Arc<Progress>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        self.hash.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.progress.stored_bytes.store(self.bytes, Ordering::Relaxed);
        self.sender
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

/// Passes every byte read from `inner` to `copy` as well, and counts them.
struct Tee<R, W> {
    inner: R,
    copy: W,
    bytes: u64,
    progress: Arc<Progress>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.bytes += n as u64;
        self.progress.tar_bytes.store(self.bytes, Ordering::Relaxed);
        Ok(n)
    }
}

/// What the compressing thread saw of the tar stream.
struct Streamed {
    manifest: Option<String>,
    tar_bytes: u64,
    stored_bytes: u64,
    sha256: String,
}

/// zstd's worker threads for this pod: one per CPU it may use (so a second core compresses while
/// the first reads), up to [`ZSTD_WORKERS`]; none on a single CPU, where the reading thread
/// compresses.
pub fn zstd_workers() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    match u32::try_from(cpus).unwrap_or(ZSTD_WORKERS) {
        1 => 0,
        n => n.min(ZSTD_WORKERS),
    }
}

/// Where the tar goes: through zstd, or as it is, to the uploader.
enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, ChannelWriter>),
    None(ChannelWriter),
}

impl Compressor {
    fn new(compression: BackupCompression, writer: ChannelWriter) -> std::io::Result<Self> {
        Ok(match compression {
            BackupCompression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(writer, ZSTD_LEVEL)?;
                encoder.include_checksum(true)?;
                encoder.multithread(zstd_workers())?;
                Self::Zstd(encoder)
            }
            BackupCompression::None => Self::None(writer),
        })
    }

    /// Ends the stream, and hands back the writer with everything passed on.
    fn finish(self) -> std::io::Result<ChannelWriter> {
        let mut writer = match self {
            Self::Zstd(encoder) => encoder.finish()?,
            Self::None(writer) => writer,
        };
        writer.flush()?;
        Ok(writer)
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Zstd(encoder) => encoder.write(buf),
            Self::None(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Zstd(encoder) => encoder.flush(),
            Self::None(writer) => writer.flush(),
        }
    }
}

/// Reads the tar from `stdout`, keeps `backup_manifest`, and sends the stream on, compressed as
/// `compression` says.
fn stream(
    stdout: impl Read,
    compression: BackupCompression,
    sender: mpsc::Sender<Bytes>,
    progress: Arc<Progress>,
) -> std::io::Result<Streamed> {
    let writer = ChannelWriter {
        buffer: Vec::with_capacity(CHUNK),
        sender,
        hash: Sha256::new(),
        bytes: 0,
        progress: progress.clone(),
    };
    let mut tee = Tee {
        inner: stdout,
        copy: Compressor::new(compression, writer)?,
        bytes: 0,
        progress,
    };
    let mut manifest = None;
    {
        // The tar reader reads in blocks of 512 bytes to 8 KiB; the buffer lets the Tee (and so
        // the pipe and the compressor) see large reads instead. What it holds is already teed.
        let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(READ_BUFFER, &mut tee));
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.path()?.as_os_str() == MANIFEST {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                manifest = Some(text);
            }
        }
    }
    // Whatever follows the end-of-archive blocks belongs to the stream too.
    std::io::copy(&mut tee, &mut std::io::sink())?;
    let tar_bytes = tee.bytes;
    let writer = tee.copy.finish()?;
    Ok(Streamed {
        manifest,
        tar_bytes,
        stored_bytes: writer.bytes,
        sha256: hex(&writer.hash.finalize()),
    })
}

/// Gives the child back to the instance manager's reaper when dropped.
struct Claimed(u32);

impl Drop for Claimed {
    fn drop(&mut self) {
        crate::process::release_child(self.0);
    }
}

fn scopeguard(pid: u32) -> Claimed {
    Claimed(pid)
}

/// The WAL a backup needs, from its `backup_manifest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline and LSN it starts at.
    pub start: (u32, u64),
    /// The timeline and LSN it is consistent from.
    pub end: (u32, u64),
}

/// The WAL range in a `backup_manifest`. PostgreSQL lists one range per timeline, the newest
/// first (a standby can change timeline during a backup).
pub fn wal_range(manifest: &str) -> Result<WalRange, String> {
    let value: serde_json::Value =
        serde_json::from_str(manifest).map_err(|e| format!("backup_manifest is not JSON: {e}"))?;
    let ranges = value["WAL-Ranges"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or("backup_manifest has no WAL-Ranges")?;
    let point = |range: &serde_json::Value, key: &str| {
        let timeline = range["Timeline"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or("backup_manifest: WAL-Ranges has no Timeline")?;
        let lsn = range[key]
            .as_str()
            .and_then(parse_lsn)
            .ok_or_else(|| format!("backup_manifest: WAL-Ranges has no valid {key}"))?;
        Ok::<_, String>((timeline, lsn))
    };
    Ok(WalRange {
        start: point(&ranges[ranges.len() - 1], "Start-LSN")?,
        end: point(&ranges[0], "End-LSN")?,
    })
}

/// Now, in RFC 3339 with fractions of a second: a restore to a time compares it with a backup's
/// stop, so the stop must not be rounded down.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Takes backup `name` of the PostgreSQL at `source` into `store`.
pub async fn take(
    store: &Store,
    source: &Source,
    name: &str,
    instance: &str,
    compression: BackupCompression,
    progress: Arc<Progress>,
) -> Result<BackupRecord, BackupError> {
    let started_at = now();
    let tar = location(store, name, TarCompression::from(compression).tar_object());
    let mut child = tokio::process::Command::new(&source.program)
        .env("PGPASSWORD", &source.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .arg(format!(
            "--dbname={}",
            crate::instance::tls::conninfo(&source.connection)
        ))
        .args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--no-password",
            "--verbose",
        ])
        .arg(format!("--label=tusk {name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BackupError::Postgres(format!("starting {}: {e}", source.program.display())))?;
    let pid = child.id().unwrap_or_default();
    crate::process::claim_child(pid);
    let released = scopeguard(pid);
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    let (sender, mut receiver) = mpsc::channel::<Bytes>(2);
    let reader = {
        let progress = progress.clone();
        // Read with blocking calls on the streaming thread, not through the runtime's reactor:
        // a wakeup per pipe buffer would cost more than the read.
        let stdout = std::fs::File::from(
            stdout
                .into_owned_fd()
                .map_err(|e| BackupError::Postgres(format!("reading its output: {e}")))?,
        );
        // A larger pipe lets pg_basebackup and this thread switch less often. The kernel may
        // refuse it (`fs.pipe-max-size`); the default pipe still works.
        let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        tokio::task::spawn_blocking(move || stream(stdout, compression, sender, progress))
    };
    let upload = store
        .inner
        .put_multipart(&tar)
        .await
        .map_err(|e| store.error(&e))?;
    let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let uploaded: Result<(), StoreError> = async {
        while let Some(chunk) = receiver.recv().await {
            upload
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| store.error(&e))?;
            upload.put(chunk);
        }
        Ok(())
    }
    .await;
    if let Err(e) = uploaded {
        drop(receiver);
        let _ = child.kill().await;
        let _ = upload.abort().await;
        return Err(e.into());
    }
    let streamed = reader.await.expect("the streaming thread never panics");
    let status = child.wait().await;
    drop(released);
    let stderr = errors.await.unwrap_or_default();
    let tail = || {
        stderr
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("; ")
    };
    let failed = match (&streamed, &status) {
        (Err(e), _) => Some(format!("reading its output: {e}; {}", tail())),
        (_, Ok(s)) if !s.success() => Some(format!("{s}: {}", tail())),
        (_, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    if let Some(message) = failed {
        let _ = upload.abort().await;
        return Err(BackupError::Postgres(message));
    }
    let streamed = streamed.expect("checked");
    upload.finish().await.map_err(|e| store.error(&e))?;
    let stopped_at = now();
    let manifest = streamed
        .manifest
        .ok_or_else(|| BackupError::Postgres("its tar has no backup_manifest".into()))?;
    let range = wal_range(&manifest).map_err(BackupError::Postgres)?;
    let ((begin_timeline, begin), (timeline, end)) = (range.start, range.end);
    verify(store, &tar, streamed.stored_bytes, &streamed.sha256).await?;
    let put = |object: &str, body: Vec<u8>| {
        let path = location(store, name, object);
        async move {
            store
                .inner
                .put(&path, PutPayload::from(body))
                .await
                .map_err(|e| store.error(&e))
        }
    };
    put(MANIFEST, manifest.into_bytes()).await?;
    let record = BackupRecord {
        name: name.to_owned(),
        instance: instance.to_owned(),
        started_at,
        stopped_at,
        timeline,
        begin_lsn: format_lsn(begin),
        end_lsn: format_lsn(end),
        begin_wal: segment_name(begin_timeline, begin, source.segment_size),
        end_wal: segment_name(timeline, end.saturating_sub(1).max(begin), source.segment_size),
        postgres_major: source.major,
        postgres_version: source.version.clone(),
        tar_bytes: streamed.tar_bytes,
        stored_bytes: streamed.stored_bytes,
        sha256: streamed.sha256,
        compression: compression.into(),
    };
    put(
        RECORD,
        serde_json::to_vec_pretty(&record).expect("a record serializes"),
    )
    .await?;
    Ok(record)
}

/// Reads `path` back from the store and checks its size and SHA-256.
pub async fn verify(store: &Store, path: &Path, size: u64, sha256: &str) -> Result<(), BackupError> {
    let meta = store.inner.head(path).await.map_err(|e| store.error(&e))?;
    if meta.size != size {
        return Err(BackupError::Verify(format!(
            "{}: {path} holds {} bytes, {size} were uploaded",
            store.url, meta.size
        )));
    }
    let mut hash = Sha256::new();
    let mut chunks = store
        .inner
        .get(path)
        .await
        .map_err(|e| store.error(&e))?
        .into_stream();
    while let Some(chunk) = chunks.try_next().await.map_err(|e| store.error(&e))? {
        hash.update(&chunk);
    }
    let read = hex(&hash.finalize());
    if read != sha256 {
        return Err(BackupError::Verify(format!(
            "{}: {path} reads back with sha256 {read}, {sha256} was uploaded",
            store.url
        )));
    }
    Ok(())
}

/// Every complete backup in the store (those with a record), oldest first.
pub async fn list(store: &Store) -> Result<Vec<BackupRecord>, StoreError> {
    let prefix = store.path("base");
    let listed = store
        .inner
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| store.error(&e))?;
    let mut records = Vec::new();
    for dir in listed.common_prefixes {
        let record = dir.clone().join(RECORD);
        match store.inner.get(&record).await {
            Ok(got) => {
                let body = got.bytes().await.map_err(|e| store.error(&e))?;
                match serde_json::from_slice::<BackupRecord>(&body) {
                    Ok(r) => records.push(r),
                    Err(e) => {
                        tracing::warn!(record = %record, error = %e, "skipping a backup whose record cannot be read")
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store.error(&e)),
        }
    }
    records.sort_by(|a, b| a.stopped_at.cmp(&b.stopped_at));
    Ok(records)
}

/// Reads the record of backup `name`.
pub async fn record(store: &Store, name: &str) -> Result<BackupRecord, StoreError> {
    let path = location(store, name, RECORD);
    let got = store.inner.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => StoreError {
            cause: Cause::Other,
            message: format!(
                "{}: backup {name} is not complete: {path} does not exist",
                store.url
            ),
        },
        e => store.error(&e),
    })?;
    let body = got.bytes().await.map_err(|e| store.error(&e))?;
    serde_json::from_slice(&body).map_err(|e| StoreError {
        cause: Cause::Other,
        message: format!("{}: {path} is not a backup record: {e}", store.url),
    })
}

/// A record with `name`, a stop time and an end LSN, the rest empty: for tests.
#[cfg(test)]
pub fn test_record(name: &str, stopped_at: &str, end_lsn: &str) -> BackupRecord {
    BackupRecord {
        name: name.into(),
        instance: "db-1".into(),
        started_at: stopped_at.into(),
        stopped_at: stopped_at.into(),
        timeline: 1,
        begin_lsn: end_lsn.into(),
        end_lsn: end_lsn.into(),
        begin_wal: String::new(),
        end_wal: String::new(),
        postgres_major: 18,
        postgres_version: String::new(),
        tar_bytes: 0,
        stored_bytes: 0,
        sha256: String::new(),
        compression: TarCompression::Zstd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_range_comes_from_the_manifest() {
        let manifest = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": [],
            "WAL-Ranges": [
            { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
            ] }"#;
        assert_eq!(
            wal_range(manifest).unwrap(),
            WalRange {
                start: (1, 0x200_0028),
                end: (1, 0x200_0100)
            }
        );
        let two = r#"{"WAL-Ranges": [
            { "Timeline": 2, "Start-LSN": "0/5000000", "End-LSN": "0/5000100" },
            { "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/5000000" }]}"#;
        assert_eq!(
            wal_range(two).unwrap(),
            WalRange {
                start: (1, 0x300_0028),
                end: (2, 0x500_0100)
            }
        );
        assert!(wal_range("{}").unwrap_err().contains("WAL-Ranges"));
        assert!(wal_range("nope").unwrap_err().contains("not JSON"));
    }
}
