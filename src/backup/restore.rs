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
    base::{BASE_TAR, BackupRecord, location},
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
    let path = location(store, &record.name, BASE_TAR);
    let stream = store
        .inner
        .get(&path)
        .await
        .map_err(|e| store.error(&e))?
        .into_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let pgdata = pgdata.to_path_buf();
    let unpacked = tokio::task::spawn_blocking(move || {
        let mut hashing = Hashing {
            inner: reader,
            hash: Sha256::new(),
            bytes: 0,
        };
        {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut hashing));
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
