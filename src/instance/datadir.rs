//! What a data directory holds, decided before anything is written to it. Tusk never deletes or
//! rewrites a data directory it did not make for this cluster: anything unexpected is an error
//! that says what was found and what the user can do.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// File in the data directory with the name of the `PostgresCluster` it belongs to. The first
/// primary writes it after `initdb`; `pg_basebackup` copies it to every replica.
pub const CLUSTER_MARKER: &str = "tusk.cluster";
/// The file a standby has, and a primary has not.
pub const STANDBY_SIGNAL: &str = "standby.signal";

/// What the data directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Nothing yet (missing or empty): bootstrap it.
    Empty,
    /// This cluster's data, last run as the primary.
    Primary,
    /// This cluster's data, last run as a replica (it has `standby.signal`).
    Replica,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// It could not be read.
    #[error("reading the data directory {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something else is in it.
    #[error(
        "{path} is not empty and is not a PostgreSQL data directory (it has no PG_VERSION). Tusk never deletes data: move its contents away, or give the pod an empty volume"
    )]
    NotADataDirectory {
        /// The data directory.
        path: PathBuf,
    },
    /// Another major version made it.
    #[error(
        "{path} holds a PostgreSQL {found} data directory, but this image runs PostgreSQL {running}. Run an image of PostgreSQL {found} (spec.postgres.version); Tusk does not upgrade major versions in place"
    )]
    OtherMajor {
        /// The data directory.
        path: PathBuf,
        /// Its `PG_VERSION`.
        found: String,
        /// The major version of the image's `postgres`.
        running: u32,
    },
    /// PostgreSQL made it, but not Tusk.
    #[error(
        "{path} is a PostgreSQL data directory that Tusk did not make (it has no {CLUSTER_MARKER} file). Tusk never adopts or deletes such data on its own; to adopt it on purpose, write \"{cluster}\" into {path}/{CLUSTER_MARKER}"
    )]
    NotTusk {
        /// The data directory.
        path: PathBuf,
        /// The cluster this pod belongs to.
        cluster: String,
    },
    /// Tusk made it for another cluster.
    #[error(
        "{path} belongs to PostgresCluster \"{found}\", not \"{expected}\". Tusk never deletes data: give this pod the volume of its own cluster, or an empty one"
    )]
    OtherCluster {
        /// The data directory.
        path: PathBuf,
        /// The cluster named in its marker.
        found: String,
        /// The cluster this pod belongs to.
        expected: String,
    },
    /// Its control file is missing or damaged.
    #[error(
        "{path} is damaged: {detail}. Tusk never deletes data: restore the cluster from a backup, or give this pod a new volume"
    )]
    Corrupt {
        /// The data directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Looks at `pgdata` for the pod of `cluster`, whose image runs PostgreSQL `running_major`.
/// Reads only; the control file's checksum is checked separately with `pg_controldata`.
pub fn inspect(pgdata: &Path, cluster: &str, running_major: u32) -> Result<DataDir, DataDirError> {
    let mut entries = match fs::read_dir(pgdata) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Empty),
        Err(e) => return Err(io(pgdata)(e)),
    };
    if entries.next().is_none() {
        return Ok(DataDir::Empty);
    }
    let version = match fs::read_to_string(pgdata.join("PG_VERSION")) {
        Ok(v) => v.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataDirError::NotADataDirectory {
                path: pgdata.to_path_buf(),
            });
        }
        Err(e) => return Err(io(pgdata)(e)),
    };
    if version != running_major.to_string() {
        return Err(DataDirError::OtherMajor {
            path: pgdata.to_path_buf(),
            found: version,
            running: running_major,
        });
    }
    match fs::read_to_string(pgdata.join(CLUSTER_MARKER)) {
        Ok(found) if found.trim() == cluster => {}
        Ok(found) => {
            return Err(DataDirError::OtherCluster {
                path: pgdata.to_path_buf(),
                found: found.trim().to_owned(),
                expected: cluster.to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataDirError::NotTusk {
                path: pgdata.to_path_buf(),
                cluster: cluster.to_owned(),
            });
        }
        Err(e) => return Err(io(pgdata)(e)),
    }
    let control = pgdata.join("global/pg_control");
    match fs::metadata(&control) {
        // PG_CONTROL_FILE_SIZE: the control file is always one 8 KiB block.
        Ok(meta) if meta.len() == 8192 => {}
        Ok(meta) => {
            return Err(DataDirError::Corrupt {
                path: pgdata.to_path_buf(),
                detail: format!("global/pg_control is {} bytes, not 8192", meta.len()),
            });
        }
        Err(e) => {
            return Err(DataDirError::Corrupt {
                path: pgdata.to_path_buf(),
                detail: format!("global/pg_control cannot be read: {e}"),
            });
        }
    }
    Ok(if pgdata.join(STANDBY_SIGNAL).exists() {
        DataDir::Replica
    } else {
        DataDir::Primary
    })
}

/// The value of `field` in what `pg_controldata` printed (run with `LC_ALL=C`).
pub fn control_value(output: &str, field: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == field).then(|| value.trim().to_owned())
    })
}

/// Checks what `pg_controldata` printed (`output`, both streams) for a damaged control file.
/// `pg_controldata` exits 0 and only warns when the checksum does not match.
pub fn control_data_problem(success: bool, output: &str) -> Option<String> {
    let warning = output
        .lines()
        .find(|l| l.contains("WARNING") || l.contains("does not match") || l.contains("invalid"));
    match (success, warning) {
        (true, None) => None,
        (_, Some(line)) => Some(format!("pg_controldata: {}", line.trim())),
        (false, None) => Some(format!("pg_controldata failed: {}", output.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datadir(major: &str, marker: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("PG_VERSION"), format!("{major}\n")).unwrap();
        fs::create_dir(dir.path().join("global")).unwrap();
        fs::write(dir.path().join("global/pg_control"), vec![0u8; 8192]).unwrap();
        if let Some(m) = marker {
            fs::write(dir.path().join(CLUSTER_MARKER), m).unwrap();
        }
        dir
    }

    #[test]
    fn missing_or_empty_is_bootstrapped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            inspect(&dir.path().join("pgdata"), "db", 15).unwrap(),
            DataDir::Empty
        );
        assert_eq!(inspect(dir.path(), "db", 15).unwrap(), DataDir::Empty);
    }

    #[test]
    fn this_clusters_data_is_reused_in_its_role() {
        let dir = datadir("15", Some("db\n"));
        assert_eq!(inspect(dir.path(), "db", 15).unwrap(), DataDir::Primary);
        fs::write(dir.path().join(STANDBY_SIGNAL), "").unwrap();
        assert_eq!(inspect(dir.path(), "db", 15).unwrap(), DataDir::Replica);
    }

    #[test]
    fn anything_else_is_refused_with_what_was_found() {
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("notes.txt"), "mine").unwrap();
        let e = inspect(other.path(), "db", 15).unwrap_err().to_string();
        assert!(
            e.contains("has no PG_VERSION") && e.contains("never deletes"),
            "{e}"
        );

        let e = inspect(datadir("14", Some("db")).path(), "db", 15)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PostgreSQL 14 data directory") && e.contains("runs PostgreSQL 15"),
            "{e}"
        );

        let e = inspect(datadir("15", None).path(), "db", 15)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Tusk did not make") && e.contains("write \"db\""),
            "{e}"
        );

        let e = inspect(datadir("15", Some("other")).path(), "db", 15)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("belongs to PostgresCluster \"other\", not \"db\""),
            "{e}"
        );

        let short = datadir("15", Some("db"));
        fs::write(short.path().join("global/pg_control"), b"truncated").unwrap();
        let e = inspect(short.path(), "db", 15).unwrap_err().to_string();
        assert!(e.contains("is damaged: global/pg_control is 9 bytes"), "{e}");
        // Refusing never touched the files.
        assert_eq!(
            fs::read(short.path().join("global/pg_control")).unwrap(),
            b"truncated"
        );
    }

    #[test]
    fn a_checksum_warning_is_a_problem_even_when_the_exit_code_is_zero() {
        assert_eq!(
            control_data_problem(true, "pg_control version number: 1300\n"),
            None
        );
        let p = control_data_problem(
            true,
            "WARNING: Calculated CRC checksum does not match value stored in file.\n",
        );
        assert!(p.unwrap().contains("CRC checksum does not match"));
        assert!(control_data_problem(false, "could not open file").is_some());
    }
}
