//! What the operator and the instance manager say to each other about backups, on the instance
//! manager's status port, and what `archive_command` and `restore_command` say to it on its Unix
//! socket.

use serde::{Deserialize, Serialize};

use super::{base::BackupRecord, store::StoreConfig};
use crate::api::common::BackupCompression;

/// `POST` a [`BackupRequest`] here to start a backup; `GET` `BACKUPS/<name>` for its
/// [`BackupState`].
pub const BACKUPS: &str = "/backups";
/// `POST` a [`RetentionRequest`] here to apply a retention rule to a store the instance mounts
/// (a claim); the answer is the names let go, or a [`StoreRefusal`].
pub const RETENTION: &str = "/retention";
/// `GET` the [`ArchiveState`] here.
pub const ARCHIVE: &str = "/archive";
/// `POST` a [`WalRequest`] here on the Unix socket to archive a WAL file.
pub const WAL_ARCHIVE: &str = "/wal/archive";
/// `POST` a [`WalRequest`] here on the Unix socket to restore a WAL file.
pub const WAL_RESTORE: &str = "/wal/restore";
/// The instance manager's socket, in PostgreSQL's socket directory (shared only in the pod).
pub const SOCKET: &str = "tusk-instance.sock";

/// Take a base backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// The backup's name (the `PostgresBackup`'s).
    pub name: String,
    /// Where to write it, secrets inline.
    pub store: StoreConfig,
    /// How to compress its tar; zstd (the default) when an operator from before this field
    /// does not say.
    #[serde(default)]
    pub compression: BackupCompression,
}

/// Apply a retention rule through an instance manager, for a store only the pods reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRequest {
    /// The store, relative to the instance's target directory.
    pub store: StoreConfig,
    /// The backups the rule may let go.
    pub eligible: std::collections::BTreeSet<String>,
    /// Keep at most this many of the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Let those older than this many seconds go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i64>,
}

/// Why the instance manager could not do what the operator asked of a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRefusal {
    /// A condition reason, such as `StoreUnreachable`.
    pub reason: String,
    /// What went wrong.
    pub message: String,
}

/// Where a backup run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Copying.
    Running,
    /// Complete and verified.
    Completed,
    /// Stopped without a backup.
    Failed,
}

/// A backup run as the instance manager sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupState {
    /// The backup's name.
    pub name: String,
    /// Where it is.
    pub phase: Phase,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Uncompressed bytes read so far.
    pub tar_bytes: u64,
    /// Bytes stored so far.
    pub stored_bytes: u64,
    /// The record, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<BackupRecord>,
    /// Why it failed, once failed: a condition reason, and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(String, String)>,
}

/// WAL archiving as the instance manager sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveState {
    /// Whether archiving is configured on this instance.
    pub configured: bool,
    /// The last file archived, and when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived: Option<(String, String)>,
    /// The last file that failed, when, and a condition reason and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed: Option<(String, String, String, String)>,
    /// Files archived since the instance manager started.
    pub archived: u64,
    /// Failed attempts since the instance manager started.
    pub failed: u64,
}

/// Archive or restore one WAL file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalRequest {
    /// The file's name (`%f`).
    pub name: String,
    /// Its absolute path: where it is (archive) or where to write it (restore).
    pub path: std::path::PathBuf,
}
