//! `cargo xtask bench-backup`: base backup, restore and WAL archiving against a real S3 store
//! (SeaweedFS on loopback) and a real PostgreSQL 18 filled by `pgbench -i`, beside
//! `pg_basebackup -Ft` to local disk on the same machine, and beside the same tar piped through
//! the `zstd` command at Tusk's level and workers: what PostgreSQL's and zstd's own tools do with
//! the work Tusk does. Prints a table per database size.
//!
//! The operator is the release build, the binary a user runs.
//!
//! The base backup runs in `tusk-operator base-backup`, a process of its own running the
//! instance manager's backup code, so its peak resident memory (`VmHWM`) is the backup's alone.
//! Both backups start from a checkpointed database, run twice, alternating, with a `sync` after
//! each, and the faster run of each counts: neither pays for the load's checkpoint or the other's
//! writeback.

use std::{path::Path, time::Instant};

use tusk::backup::{base, restore, store::StoreConfig, wal};
use tusk_testenv::{
    postgres::{LocalServer, Postgres},
    s3::S3Server,
};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs PostgreSQL's `program` against `server` as its superuser, with `args` first.
fn client(postgres: &Postgres, server: &LocalServer, program: &str, args: &[String]) -> Result<(), String> {
    let mut all = args.to_vec();
    all.extend([
        "-h".into(),
        server.host().into(),
        "-p".into(),
        server.port().to_string(),
        "-U".into(),
        server.superuser().into(),
    ]);
    let out = postgres
        .unprivileged_command(program, &all)
        .env("PGPASSWORD", server.password())
        .output()
        .map_err(err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn psql(server: &LocalServer, sql: &str) -> Result<String, String> {
    server.psql(sql).map(|s| s.trim().to_owned()).map_err(err)
}

/// Writes every dirty page of the machine to disk.
fn sync() -> Result<(), String> {
    let status = std::process::Command::new("sync").status().map_err(err)?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("sync: {status}"))
}

/// Keeps in `peak` the larger of it and the peak resident memory a `base-backup` `answer`
/// reports.
fn note_peak(peak: &mut String, answer: &serde_json::Value) {
    let this = answer["peak"]
        .as_str()
        .unwrap_or("?")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_owned();
    let kb = |p: &str| p.trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0);
    if kb(&this) >= kb(peak) {
        *peak = this;
    }
}

/// Runs one measurement at each pgbench scale (about 15 MiB each).
pub async fn run(root: &Path, scales: &[u32]) -> Result<(), String> {
    let binary = crate::bench::operator_binary(root);
    let built = std::process::Command::new("cargo")
        .args(["build", "--quiet", "--release", "--bin", "tusk-operator"])
        .current_dir(root)
        .status()
        .map_err(err)?;
    if !built.success() {
        return Err("cargo build --release --bin tusk-operator failed".into());
    }
    let s3 = S3Server::start().await.map_err(err)?;
    s3.create_bucket("bench").map_err(err)?;
    let postgres = Postgres::get(18).map_err(err)?;
    println!(
        "{:>6} {:>7} {:>7} {:>9} {:>7} {:>10} {:>7} {:>6} {:>7} {:>7} {:>7} {:>9} {:>10} {:>8} {:>9}",
        "scale",
        "db MiB",
        "tusk s",
        "tusk MB/s",
        "local s",
        "local MB/s",
        "+zstd s",
        "ratio",
        "z ratio",
        "plain s",
        "plain r",
        "restore s",
        "peak RSS",
        "WAL MB/s",
        "arch MB/s"
    );
    for &scale in scales {
        let server = LocalServer::start(&postgres).await.map_err(err)?;
        client(
            &postgres,
            &server,
            "pgbench",
            &["-i".into(), "-q".into(), format!("-s{scale}"), "postgres".into()],
        )?;
        let db_bytes: u64 = psql(&server, "SELECT pg_database_size('postgres')")?
            .parse()
            .map_err(err)?;
        let root_prefix = format!("bench/s{scale}");
        let store = StoreConfig::s3_inline(
            "bench",
            &s3.endpoint(),
            &s3.access_key_id,
            &s3.secret_access_key,
            &root_prefix,
        );
        let work = tempfile::Builder::new()
            .prefix("bench-backup")
            .tempdir_in("/tmp")
            .map_err(err)?;
        let config = work.path().join("store.json");
        std::fs::write(&config, serde_json::to_vec(&store).map_err(err)?).map_err(err)?;
        // The load's dirty buffers are written now, so neither backup's `--checkpoint=fast`
        // pays for them (the first one measured would, and look slow). Then each is measured
        // twice, alternating, and the faster run of each counts: both read the same files with
        // the same page cache.
        psql(&server, "CHECKPOINT")?;
        tusk_testenv::postgres::chown_for_postgres(work.path()).map_err(err)?;
        let mut tusk_seconds = f64::INFINITY;
        let mut plain_seconds = f64::INFINITY;
        let mut local_seconds = f64::INFINITY;
        let mut zstd_seconds = f64::INFINITY;
        let base_backup = |store: &Path, name: &str, compression: &str| {
            std::process::Command::new(&binary)
                .args([
                    "base-backup",
                    "--host",
                    server.host(),
                    "--port",
                    &server.port().to_string(),
                ])
                .arg(format!("--store={}", store.display()))
                .arg(format!("--name={name}"))
                .arg(format!("--compression={compression}"))
                .env("PGPASSWORD", server.password())
                .env("PATH", format!("{}:/usr/bin:/bin", postgres.bin_dir().display()))
                .output()
                .map_err(err)
        };
        let mut peak = String::new();
        let mut record = None;
        for round in 1..=2 {
            // pg_basebackup, the same tar, to local disk.
            let local = work.path().join(format!("local{round}"));
            std::fs::create_dir(&local).map_err(err)?;
            tusk_testenv::postgres::chown_for_postgres(&local).map_err(err)?;
            let started = Instant::now();
            client(
                &postgres,
                &server,
                "pg_basebackup",
                &[
                    format!("--pgdata={}", local.join("b").display()),
                    "--format=tar".into(),
                    "--wal-method=fetch".into(),
                    "--checkpoint=fast".into(),
                ],
            )?;
            local_seconds = local_seconds.min(started.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&local).map_err(err)?;
            // What one run wrote reaches the disk before the next run starts.
            sync()?;

            // The same tar through the zstd command, at Tusk's level and workers, to local disk.
            let compressed = work.path().join(format!("local{round}.tar.zst"));
            let pipeline = format!(
                "pg_basebackup -h {} -p {} -U {} -D - -Ft --wal-method=fetch --checkpoint=fast \
                 | zstd -q --check -{} -T{} -o {}",
                server.host(),
                server.port(),
                server.superuser(),
                base::ZSTD_LEVEL,
                base::zstd_workers(),
                compressed.display()
            );
            let started = Instant::now();
            let out = std::process::Command::new("bash")
                .args(["-o", "pipefail", "-c", &pipeline])
                .env("PGPASSWORD", server.password())
                .env("PATH", format!("{}:/usr/bin:/bin", postgres.bin_dir().display()))
                .output()
                .map_err(err)?;
            if !out.status.success() {
                return Err(format!("{pipeline}: {}", String::from_utf8_lossy(&out.stderr)));
            }
            zstd_seconds = zstd_seconds.min(started.elapsed().as_secs_f64());
            std::fs::remove_file(&compressed).map_err(err)?;
            sync()?;

            // Tusk: into the store, uncompressed (`spec.backup.compression: none`).
            let started = Instant::now();
            let out = base_backup(&config, &format!("p{round}"), "none")?;
            plain_seconds = plain_seconds.min(started.elapsed().as_secs_f64());
            sync()?;
            if !out.status.success() {
                return Err(format!("base-backup: {}", String::from_utf8_lossy(&out.stderr)));
            }
            note_peak(&mut peak, &serde_json::from_slice(&out.stdout).map_err(err)?);

            // Tusk: into the store, compressed with zstd, read back and checked.
            let started = Instant::now();
            let out = base_backup(&config, &format!("b{round}"), "zstd")?;
            let seconds = started.elapsed().as_secs_f64();
            sync()?;
            if !out.status.success() {
                return Err(format!("base-backup: {}", String::from_utf8_lossy(&out.stderr)));
            }
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(err)?;
            if seconds < tusk_seconds {
                tusk_seconds = seconds;
            }
            note_peak(&mut peak, &answer);
            record =
                Some(serde_json::from_value::<base::BackupRecord>(answer["record"].clone()).map_err(err)?);
        }
        let record = record.expect("two rounds ran");

        // Restore: stream, unpack, check.
        let opened = store.open().map_err(err)?;
        let target = work.path().join("restored");
        std::fs::create_dir(&target).map_err(err)?;
        let started = Instant::now();
        restore::unpack(&opened, &record, &target).await.map_err(err)?;
        let restore_seconds = started.elapsed().as_secs_f64();

        // WAL: the rate of a write-heavy load, and how fast its segments archive.
        let before = psql(&server, "SELECT pg_current_wal_lsn()")?;
        let started = Instant::now();
        client(
            &postgres,
            &server,
            "pgbench",
            &["-T15".into(), "-c4".into(), "-N".into(), "postgres".into()],
        )?;
        let wal_bytes: f64 = psql(
            &server,
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{before}')"),
        )?
        .parse()
        .map_err(err)?;
        let wal_rate = wal_bytes / started.elapsed().as_secs_f64() / 1e6;
        let segments: Vec<std::path::PathBuf> = std::fs::read_dir(server.data_dir().join("pg_wal"))
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(wal::is_segment)
            })
            .collect();
        let started = Instant::now();
        let mut archived = 0u64;
        for chunk in segments.chunks(4) {
            let results = futures::future::join_all(chunk.iter().map(|p| wal::archive(&opened, p))).await;
            for r in results {
                r.map_err(err)?;
                archived += 16 * 1024 * 1024;
            }
        }
        let archive_rate = archived as f64 / started.elapsed().as_secs_f64() / 1e6;

        let tar_mb = record.tar_bytes as f64 / 1e6;
        println!(
            "{scale:>6} {:>7.0} {tusk_seconds:>7.2} {:>9.1} {local_seconds:>7.2} {:>10.1} {zstd_seconds:>7.2} {:>6.2} {:>7.2} {plain_seconds:>7.2} {:>7.2} {restore_seconds:>9.2} {peak:>10} {wal_rate:>8.1} {archive_rate:>9.1}",
            mib(db_bytes),
            tar_mb / tusk_seconds,
            tar_mb / local_seconds,
            local_seconds / tusk_seconds,
            zstd_seconds / tusk_seconds,
            local_seconds / plain_seconds,
        );
    }
    println!(
        "ratio: Tusk's throughput / pg_basebackup -Ft to local disk (the issue's target: >= 0.8); \
         +zstd s: pg_basebackup -Ft piped through `zstd -{level} -T{workers}` to local disk, the \
         compression Tusk does, with PostgreSQL's and zstd's own tools; z ratio: Tusk's throughput / \
         that pipeline's; plain: Tusk's backup into the store uncompressed \
         (spec.backup.compression: none), and its ratio to pg_basebackup; MB/s of the uncompressed tar; peak RSS: VmHWM of \
         the process running the backup (target < 64 MiB, flat across sizes); arch MB/s: 16 MiB \
         segments of that load archived 4 at a time (must exceed WAL MB/s)",
        level = base::ZSTD_LEVEL,
        workers = base::zstd_workers(),
    );
    Ok(())
}
