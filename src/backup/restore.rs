//! A restore: choose the base backup for a recovery target, unpack it into an empty data
//! directory (checking its checksum as it streams), and write what makes PostgreSQL replay the
//! archived WAL up to the target and then promote.

use std::{io::Read, path::Path as FsPath};

use futures::TryStreamExt;
use k8s_openapi::jiff::Timestamp;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    base::{BackupRecord, TarCompression, location},
    store::{Cause, Store, StoreConfig, StoreError},
    wal::{hex, parse_lsn},
};

/// Where recovery stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// The end of the archived WAL.
    #[default]
    Latest,
    /// A time, RFC 3339.
    Time(String),
    /// An LSN such as `0/3000028`.
    Lsn(String),
    /// A transaction id.
    Xid(String),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

/// What a pod restores its data directory from: `recovery.json` in its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryConfig {
    /// The store and prefix of the source cluster's backups and WAL.
    pub store: StoreConfig,
    /// The backup to restore; the newest that fits the target when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Where recovery stops.
    #[serde(default)]
    pub target: Target,
}

fn precedes(record: &BackupRecord, target: &Target) -> bool {
    match target {
        Target::Time(time) => match (time.parse::<Timestamp>(), record.stopped_at.parse::<Timestamp>()) {
            (Ok(t), Ok(stopped)) => stopped <= t,
            _ => false,
        },
        Target::Lsn(lsn) => match (parse_lsn(lsn), parse_lsn(&record.end_lsn)) {
            (Some(t), Some(end)) => end <= t,
            _ => false,
        },
        Target::Latest | Target::Xid(_) | Target::Name(_) => true,
    }
}

/// The backup to restore for `target`: the newest one that is consistent before the target.
pub fn choose<'a>(records: &'a [BackupRecord], target: &Target) -> Option<&'a BackupRecord> {
    records.iter().filter(|r| precedes(r, target)).max_by(|a, b| {
        let at = |r: &BackupRecord| r.stopped_at.parse::<Timestamp>().ok();
        at(a).cmp(&at(b))
    })
}

/// Checks the recovery target's value.
pub fn check_target(target: &Target) -> Result<(), String> {
    match target {
        Target::Time(t) if t.parse::<Timestamp>().is_err() => Err(format!(
            "time {t:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z"
        )),
        Target::Lsn(l) if parse_lsn(l).is_none() => Err(format!("lsn {l:?} is not an LSN such as 0/3000028")),
        Target::Xid(x) if x.parse::<u64>().is_err() => Err(format!("xid {x:?} is not a transaction id")),
        Target::Name(n) if n.is_empty() => Err("name is empty".into()),
        _ => Ok(()),
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpacks the base backup of `record` into `pgdata` (empty or missing), streaming, and checks
/// that what was read is what was stored.
pub async fn unpack(store: &Store, record: &BackupRecord, pgdata: &FsPath) -> Result<(), StoreError> {
    let path = location(store, &record.name, record.tar_object());
    let stream = store
        .inner
        .get(&path)
        .await
        .map_err(|e| store.error(&e))?
        .into_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let pgdata = pgdata.to_path_buf();
    let compression = record.compression;
    let unpacked = tokio::task::spawn_blocking(move || {
        let mut hashing = Hashing {
            inner: reader,
            hash: Sha256::new(),
            bytes: 0,
        };
        {
            let tar: Box<dyn Read + '_> = match compression {
                TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hashing)),
                TarCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut hashing)?),
                TarCompression::None => Box::new(&mut hashing),
            };
            let mut archive = tar::Archive::new(tar);
            archive.set_preserve_permissions(true);
            archive.unpack(&pgdata)?;
        }
        std::io::copy(&mut hashing, &mut std::io::sink())?;
        Ok::<_, std::io::Error>((hex(&hashing.hash.finalize()), hashing.bytes))
    })
    .await
    .expect("unpacking never panics");
    let (sha, bytes) = unpacked.map_err(|e| StoreError {
        cause: Cause::Other,
        message: format!("{}: unpacking {path}: {e}", store.url),
    })?;
    if sha != record.sha256 || bytes != record.stored_bytes {
        return Err(StoreError {
            cause: Cause::Other,
            message: format!(
                "{}: {path} is damaged: read {bytes} bytes with sha256 {sha}, the record says {} bytes with {}",
                store.url, record.stored_bytes, record.sha256
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, stopped_at: &str, end_lsn: &str) -> BackupRecord {
        crate::backup::base::test_record(name, stopped_at, end_lsn)
    }

    #[test]
    fn the_newest_backup_consistent_before_the_target_is_chosen() {
        let records = [
            record("a", "2026-12-01T10:00:00Z", "0/3000000"),
            record("b", "2026-12-01T11:00:00.5Z", "0/5000000"),
        ];
        let pick = |t: Target| choose(&records, &t).map(|r| r.name.as_str());
        assert_eq!(pick(Target::Latest), Some("b"));
        assert_eq!(pick(Target::Time("2026-12-01T10:30:00Z".into())), Some("a"));
        assert_eq!(pick(Target::Time("2026-12-01T11:00:00.4Z".into())), Some("a"));
        assert_eq!(pick(Target::Time("2026-12-01T11:00:01Z".into())), Some("b"));
        assert_eq!(pick(Target::Time("2026-12-01T09:00:00Z".into())), None);
        assert_eq!(pick(Target::Lsn("0/4000000".into())), Some("a"));
        assert_eq!(pick(Target::Lsn("0/5000000".into())), Some("b"));
    }

    /// A tar holding `PG_VERSION` with `text`.
    fn tar_of(text: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, "PG_VERSION", text.as_bytes())
            .unwrap();
        tar.into_inner().unwrap()
    }

    /// Stores `compressed` as backup `name`'s tar with the record `record` (JSON), and unpacks it.
    async fn unpack_stored(
        name: &str,
        object: &str,
        compressed: Vec<u8>,
        mut record: serde_json::Value,
    ) -> String {
        use object_store::{ObjectStoreExt, PutPayload};
        let (dir, pgdata) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = StoreConfig {
            s3: None,
            azure: None,
            gcs: None,
            directory: Some(dir.path().to_path_buf()),
            root: "b/db".into(),
            url: "file://test".into(),
        }
        .open()
        .unwrap();
        record["storedBytes"] = compressed.len().into();
        record["sha256"] = hex(&Sha256::digest(&compressed)).into();
        let record: BackupRecord = serde_json::from_value(record).unwrap();
        store
            .inner
            .put(&location(&store, name, object), PutPayload::from(compressed))
            .await
            .unwrap();
        unpack(&store, &record, pgdata.path()).await.unwrap();
        std::fs::read_to_string(pgdata.path().join("PG_VERSION")).unwrap()
    }

    #[tokio::test]
    async fn zstd_plain_and_gzip_backups_from_before_unpack() {
        let record = |name: &str| {
            serde_json::json!({
                "name": name, "instance": "db-1", "startedAt": "2026-12-01T10:00:00Z",
                "stoppedAt": "2026-12-01T10:00:01Z", "timeline": 1, "beginLsn": "0/2000028",
                "endLsn": "0/2000100", "beginWal": "000000010000000000000002",
                "endWal": "000000010000000000000002", "postgresMajor": 18,
                "postgresVersion": "18.6", "tarBytes": 10240,
            })
        };
        // A record that names no compression is a gzip backup, `base.tar.gz`, in however many
        // gzip members (the file spans three here).
        let text = "18\n".repeat(4000);
        let mut gz = Vec::new();
        for part in tar_of(&text).chunks(4096) {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, part).unwrap();
            gz.extend(encoder.finish().unwrap());
        }
        assert_eq!(unpack_stored("old", "base.tar.gz", gz, record("old")).await, text);
        let mut zst = record("new");
        zst["compression"] = "zstd".into();
        let compressed = zstd::encode_all(tar_of("18\n").as_slice(), 1).unwrap();
        assert_eq!(
            unpack_stored("new", "base.tar.zst", compressed, zst).await,
            "18\n"
        );
        // `spec.backup.compression: none`: the plain tar, `base.tar`.
        let mut plain = record("plain");
        plain["compression"] = "none".into();
        assert_eq!(
            unpack_stored("plain", "base.tar", tar_of("17\n"), plain).await,
            "17\n"
        );
    }

    #[test]
    fn targets_are_checked() {
        assert!(
            check_target(&Target::Time("yesterday".into()))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(check_target(&Target::Lsn("0/x".into())).is_err());
        assert!(check_target(&Target::Xid("12a".into())).is_err());
        assert!(check_target(&Target::Time("2026-12-01T10:00:00+01:00".into())).is_ok());
    }
}
