//! Backups in an object store: continuous WAL archiving ([`wal`]), base backups ([`base`]) and
//! restores ([`restore`]), through one store abstraction ([`store`]). The instance manager runs
//! them in its pod; the operator asks for base backups over [`api`] and reads their results.
//!
//! The format is open: tar, zstd and gzip files PostgreSQL's own tools restore, with PostgreSQL's
//! `backup_manifest`, below one prefix per cluster:
//!
//! ```text
//! <prefix>/base/<backup>/base.tar.zst     the data directory and the WAL it needs
//! <prefix>/base/<backup>/backup_manifest  for pg_verifybackup
//! <prefix>/base/<backup>/backup.json      written last: the backup is complete
//! <prefix>/wal/<timeline+log>/<segment>.gz
//! <prefix>/wal/<timeline>.history.gz
//! ```

pub mod api;
pub mod base;
pub mod restore;
pub mod retention;
pub mod store;
pub mod wal;
