//! Write-ahead log in the store: one gzip object per file PostgreSQL archives, with the SHA-256
//! of the uncompressed file in the object's metadata.
//!
//! Layout below the cluster's prefix, readable by any S3 client:
//! - `wal/<timeline and log, 16 hex digits>/<segment>.gz` for segments (and `.partial`,
//!   `.backup` files of a segment);
//! - `wal/<name>.gz` for timeline history files.
//!
//! An object that is already there is never overwritten: if it holds the same file the archive
//! succeeds (PostgreSQL may ask twice), and if it holds another one the archive fails, as
//! PostgreSQL's documentation requires of an `archive_command`.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use object_store::{Attribute, Attributes, GetOptions, ObjectStoreExt, PutOptions, PutPayload, path::Path};
use sha2::{Digest, Sha256};

use super::store::{Cause, Store, StoreError};

/// The metadata key holding the SHA-256 of the uncompressed content.
pub const SHA256_METADATA: &str = "sha256";

/// True for a WAL segment name: 24 hex digits (timeline, log, segment).
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The object of the archived file `name` (a segment, a `.partial` or `.backup` file, or a
/// timeline history file).
pub fn object(store: &Store, name: &str) -> Result<Path, StoreError> {
    let valid =
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if !valid {
        return Err(StoreError {
            cause: Cause::Config,
            message: format!("{name:?} is not a WAL file name"),
        });
    }
    let prefix = name.get(..24).filter(|p| is_segment(p));
    Ok(match prefix {
        Some(segment) => store.path(&format!("wal/{}/{name}.gz", &segment[..16])),
        None => store.path(&format!("wal/{name}.gz")),
    })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file compressed, and the SHA-256 of the uncompressed file.
fn compress(content: &[u8]) -> (Vec<u8>, String) {
    let mut encoder = GzEncoder::new(Vec::with_capacity(content.len() / 4), Compression::fast());
    encoder.write_all(content).expect("writing to memory never fails");
    let compressed = encoder.finish().expect("writing to memory never fails");
    (compressed, hex(&Sha256::digest(content)))
}

fn decompress(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(compressed).read_to_end(&mut out)?;
    Ok(out)
}

/// How an archive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archived {
    /// The file was uploaded; its compressed size.
    Uploaded(u64),
    /// The same file was already in the store.
    AlreadyThere,
}

/// Archives the file at `source` (in `pg_wal`) under its name.
pub async fn archive(store: &Store, source: &std::path::Path) -> Result<Archived, StoreError> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError {
            cause: Cause::Config,
            message: format!("{} has no file name", source.display()),
        })?
        .to_owned();
    let location = object(store, &name)?;
    let content = tokio::fs::read(source).await.map_err(|e| StoreError {
        cause: Cause::Other,
        message: format!("reading {}: {e}", source.display()),
    })?;
    let (compressed, sha) = tokio::task::spawn_blocking(move || compress(&content))
        .await
        .expect("compression never panics");
    let size = compressed.len() as u64;
    // Look before writing: not every S3-compatible store honours conditional writes, and an
    // archive must never replace what is there.
    match store.inner.head(&location).await {
        Ok(_) => return same_or_refuse(store, &location, &name, &sha).await,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store.error(&e)),
    }
    let mut attributes = Attributes::new();
    if store.metadata {
        attributes.insert(Attribute::ContentType, "application/gzip".into());
        attributes.insert(Attribute::Metadata(SHA256_METADATA.into()), sha.clone().into());
    }
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    store
        .inner
        .put_opts(&location, PutPayload::from(compressed), options)
        .await
        .map_err(|e| store.error(&e))?;
    // Uploaded is not archived until the store shows it whole.
    let meta = store.inner.head(&location).await.map_err(|e| store.error(&e))?;
    if meta.size != size {
        return Err(StoreError {
            cause: Cause::Other,
            message: format!(
                "{}: {location} holds {} bytes after the upload of {size}",
                store.url, meta.size
            ),
        });
    }
    Ok(Archived::Uploaded(size))
}

async fn same_or_refuse(
    store: &Store,
    location: &Path,
    name: &str,
    sha: &str,
) -> Result<Archived, StoreError> {
    let there = fetch(store, location).await?;
    if there.sha256 == sha {
        Ok(Archived::AlreadyThere)
    } else {
        Err(StoreError {
            cause: Cause::Other,
            message: format!(
                "{}: {location} already holds a different {name} (sha256 {} instead of {sha}); \
                 it is never overwritten: is another cluster archiving to the same place?",
                store.url, there.sha256
            ),
        })
    }
}

/// A file read back from the store, checked against its checksum.
pub struct Fetched {
    /// The uncompressed content.
    pub content: Vec<u8>,
    /// Its SHA-256.
    pub sha256: String,
}

async fn fetch(store: &Store, location: &Path) -> Result<Fetched, StoreError> {
    let got = store
        .inner
        .get_opts(location, GetOptions::default())
        .await
        .map_err(|e| store.error(&e))?;
    let expected = got
        .attributes
        .get(&Attribute::Metadata(SHA256_METADATA.into()))
        .map(|v| v.to_string());
    let compressed: Bytes = got.bytes().await.map_err(|e| store.error(&e))?;
    let content = tokio::task::spawn_blocking(move || decompress(&compressed))
        .await
        .expect("decompression never panics")
        .map_err(|e| StoreError {
            cause: Cause::Other,
            message: format!("{}: {location} is not gzip: {e}", store.url),
        })?;
    let sha256 = hex(&Sha256::digest(&content));
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(StoreError {
            cause: Cause::Other,
            message: format!(
                "{}: {location} is damaged: its content has sha256 {sha256}, its metadata says {expected}",
                store.url
            ),
        });
    }
    Ok(Fetched { content, sha256 })
}

/// Restores the archived file `name` to `destination`; `Ok(false)` when the store has no such
/// file (the normal end of recovery).
pub async fn restore(store: &Store, name: &str, destination: &std::path::Path) -> Result<bool, StoreError> {
    let location = object(store, name)?;
    let fetched = match fetch(store, &location).await {
        Ok(f) => f,
        Err(_)
            if matches!(
                store.inner.head(&location).await,
                Err(object_store::Error::NotFound { .. })
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let tmp = destination.with_extension("tusk-partial");
    let write = async {
        tokio::fs::write(&tmp, &fetched.content).await?;
        tokio::fs::rename(&tmp, destination).await
    };
    write.await.map_err(|e| StoreError {
        cause: Cause::Other,
        message: format!("writing {}: {e}", destination.display()),
    })?;
    Ok(true)
}

/// The segment (timeline, segment number) of `lsn` for a segment size.
pub fn segment_name(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let segno = lsn / segment_size;
    let per_log = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

pub use crate::facts::instance::{format_lsn, parse_lsn};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::store::StoreConfig;

    fn store(dir: &std::path::Path) -> Store {
        StoreConfig {
            s3: None,
            azure: None,
            gcs: None,
            directory: Some(dir.to_path_buf()),
            root: "b/db".into(),
            url: "file://test".into(),
        }
        .open()
        .unwrap()
    }

    #[test]
    fn segments_group_by_timeline_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(
            object(&s, "000000010000000A000000FF").unwrap().as_ref(),
            "b/db/wal/000000010000000A/000000010000000A000000FF.gz"
        );
        assert_eq!(
            object(&s, "000000010000000A000000FF.00000028.backup")
                .unwrap()
                .as_ref(),
            "b/db/wal/000000010000000A/000000010000000A000000FF.00000028.backup.gz"
        );
        assert_eq!(
            object(&s, "00000002.history").unwrap().as_ref(),
            "b/db/wal/00000002.history.gz"
        );
        assert!(object(&s, "../etc/passwd").is_err());
        assert!(object(&s, "").is_err());
    }

    #[test]
    fn lsns_and_segment_names_follow_postgres() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn("1A/FF"), Some((0x1A << 32) | 0xFF));
        assert_eq!(format_lsn(0x1_0000_00FF), "1/FF");
        assert_eq!(parse_lsn("nope"), None);
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(segment_name(1, 0x300_0028, mb16), "000000010000000000000003");
        assert_eq!(
            segment_name(2, (5 << 32) | 0xFF00_0000, mb16),
            "0000000200000005000000FF"
        );
        assert_eq!(
            segment_name(1, 0x4000_0000, 1024 * 1024 * 1024),
            "000000010000000000000001"
        );
    }

    #[tokio::test]
    async fn an_archived_file_comes_back_whole_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let name = "000000010000000000000003";
        let segment = wal.path().join(name);
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&segment, &content).unwrap();
        assert!(matches!(
            archive(&s, &segment).await.unwrap(),
            Archived::Uploaded(_)
        ));
        assert_eq!(archive(&s, &segment).await.unwrap(), Archived::AlreadyThere);
        let back = wal.path().join("restored");
        assert!(restore(&s, name, &back).await.unwrap());
        assert_eq!(std::fs::read(&back).unwrap(), content);
        assert!(!restore(&s, "000000010000000000000004", &back).await.unwrap());
        std::fs::write(&segment, b"something else").unwrap();
        let refused = archive(&s, &segment).await.unwrap_err();
        assert!(refused.message.contains("never overwritten"), "{refused}");
    }
}
