//! The instance manager: `tusk-operator instance`, PID 1 of each PostgreSQL pod.
//!
//! It decides what the data directory holds ([`datadir`]), bootstraps it when it is empty
//! (`initdb` on the cluster's first pod, `pg_basebackup` from the primary's Service on every
//! other), writes `postgresql.conf` and `pg_hba.conf` from the mounted ConfigMap, then starts and
//! supervises `postgres`: it forwards signals, reaps orphans (it is PID 1), and on SIGTERM stops
//! PostgreSQL fast, then immediately when the fast stop outlasts `--fast-stop-timeout`. If
//! PostgreSQL exits on its own, so does the instance manager, and the kubelet restarts the
//! container; the restart reuses the data directory. [`status`] serves `/healthz`, `/readyz` and
//! `/metrics` throughout.
//!
//! PostgreSQL's programs (`postgres`, `initdb`, `pg_basebackup`, `pg_controldata`, `pg_ctl`) are
//! found on `PATH`, as the PostgreSQL image sets it.

pub mod args;
pub mod backup;
pub mod conf;
pub mod datadir;
pub mod ha;
pub mod lease;
pub mod status;
pub mod tls;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use self::args::InstanceArgs;
use self::datadir::{CLUSTER_MARKER, DataDir, DataDirError, STANDBY_SIGNAL};
use crate::facts::cluster::{MAINTENANCE_DATABASE, Names, PG_HBA_CONF, POSTGRESQL_CONF, SUPERUSER};

/// Why the instance manager stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory cannot be used; nothing was changed in it.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A PostgreSQL program is missing from `PATH`.
    #[error("{program} is not on PATH ({path}); the PostgreSQL image must provide it")]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// The `PATH` searched.
        path: String,
    },
    /// A PostgreSQL program failed.
    #[error("{program} failed ({status}): {output}")]
    Program {
        /// The program.
        program: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// The end of what it printed.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The mounted configuration is incomplete.
    #[error("{0}")]
    Config(String),
    /// SIGTERM arrived while preparing the data directory.
    #[error("stopped by SIGTERM while {0}")]
    Stopped(&'static str),
    /// The primary lost its Lease and stopped PostgreSQL at once.
    #[error(
        "fenced: this primary lost its Lease, so PostgreSQL was stopped at once; the container restarts and rejoins as a replica"
    )]
    Fenced,
    /// The primary stepped down for a switchover and PostgreSQL stopped cleanly.
    #[error("stepped down for a switchover")]
    SteppedDown,
    /// A replica stopped PostgreSQL to be rewound onto the primary's timeline.
    #[error("stopped to rewind this replica onto the primary's timeline")]
    Diverged,
    /// PostgreSQL exited without being asked to.
    #[error("postgres exited on its own ({0}); the container restarts and reuses the data directory")]
    PostgresExited(String),
    /// A signal could not be sent or waited for.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: nix::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// PostgreSQL's programs, from `PATH`.
#[derive(Clone, Debug)]
pub struct Programs {
    /// `postgres`.
    pub postgres: PathBuf,
    /// `initdb`.
    pub initdb: PathBuf,
    /// `pg_basebackup`.
    pub pg_basebackup: PathBuf,
    /// `pg_controldata`.
    pub pg_controldata: PathBuf,
    /// `pg_ctl`.
    pub pg_ctl: PathBuf,
    /// The major version of `postgres`.
    pub major: u32,
    /// What `postgres --version` says.
    pub version: String,
}

fn find(program: &'static str) -> Result<PathBuf, Error> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(Error::MissingProgram { program, path })
}

/// Runs `command` to the end, and fails with the tail of what it printed.
fn run_program(program: &'static str, command: &mut Command) -> Result<String, Error> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("starting {program}")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        Err(Error::Program {
            program,
            status: output.status,
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// The major version in `postgres --version`'s answer, such as
/// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub fn parse_major(version: &str) -> Option<u32> {
    let rest = version.split(')').nth(1)?.trim_start();
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl Programs {
    /// Finds every program and asks `postgres` its version.
    pub fn find() -> Result<Self, Error> {
        let postgres = find("postgres")?;
        let version = run_program("postgres", Command::new(&postgres).arg("--version"))?;
        let major = parse_major(&version).ok_or_else(|| {
            Error::Config(format!(
                "cannot read the major version in `postgres --version`: {version}"
            ))
        })?;
        Ok(Self {
            postgres,
            initdb: find("initdb")?,
            pg_basebackup: find("pg_basebackup")?,
            pg_controldata: find("pg_controldata")?,
            pg_ctl: find("pg_ctl")?,
            major,
            version: version.trim().to_owned(),
        })
    }
}

/// How the instance manager reaches its own PostgreSQL: over the Unix socket, as the superuser.
#[derive(Clone, Debug)]
pub struct LocalConnection {
    /// The socket directory.
    pub socket_dir: PathBuf,
    /// The port (part of the socket's name).
    pub port: u16,
    /// The superuser's password.
    pub password: String,
}

impl LocalConnection {
    /// A client connected to the `postgres` database; the connection runs on its own task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname(MAINTENANCE_DATABASE)
            .application_name("tusk-instance")
            .connect_timeout(Duration::from_secs(3))
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// Reads the superuser's password from the mounted Secret.
fn read_password(path: &Path) -> Result<String, Error> {
    let password = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
    crate::password::check(&password)
        .map_err(|broken| Error::Config(format!("{}: the superuser password {broken}", path.display())))?;
    Ok(password)
}

/// True for the pod that bootstraps the cluster with `initdb`: the StatefulSet's ordinal 0.
pub fn bootstraps_with_initdb(cluster: &str, pod_name: &str) -> bool {
    pod_name == Names(cluster).first_primary()
}

/// `primary_conninfo` of a replica: with TLS, as the replication role with its client
/// certificate, verifying the primary; without, as the superuser with its password.
pub fn primary_conninfo(
    tls: Option<&tls::Tls>,
    (cluster, host, port): (&str, &str, u16),
    password: &str,
    application_name: &str,
) -> String {
    let mut params = tls::connection(
        tls,
        host,
        &tls::primary_server_name(cluster),
        port,
        tls::Login::Replication,
    );
    if tls.is_none() {
        params.push(("password", password.to_owned()));
    }
    params.push(("application_name", application_name.to_owned()));
    tls::conninfo(&params)
}

/// The cluster's TLS files in this pod, when it has TLS.
pub fn tls_of(args: &InstanceArgs) -> Option<tls::Tls> {
    args.spec
        .tls_dir
        .as_ref()
        .map(|dir| tls::Tls::new(dir, &args.spec.socket_dir))
}

/// The `postgresql.conf` the instance writes into its data directory at each start: the
/// ConfigMap's, then what only this instance knows (a replica's `primary_conninfo`).
pub fn postgresql_conf(from_configmap: &str, config_dir: &Path, primary_conninfo: Option<&str>) -> String {
    let mut conf = format!(
        "# Written by tusk-operator instance at each start from {}/postgresql.conf.\n\
         # Edit the PostgresCluster's spec.postgres.parameters instead.\n",
        config_dir.display()
    );
    conf.push_str(from_configmap);
    if !conf.ends_with('\n') {
        conf.push('\n');
    }
    if let Some(conninfo) = primary_conninfo {
        conf.push_str(&format!("primary_conninfo = {}\n", conf::conf_value(conninfo)));
    }
    conf
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

/// What the instance manager adds to `postgresql.conf` for backups: `archive_command` when the
/// cluster archives, and the recovery settings while a restored data directory recovers.
#[derive(Debug, Default)]
struct BackupConf {
    archive_command: Option<String>,
    recovery: Option<String>,
}

fn backup_conf(args: &InstanceArgs, backups: &backup::Backups) -> Result<BackupConf, Error> {
    let me = std::env::current_exe().map_err(io("finding this program"))?;
    let socket = args.spec.socket_dir.join(crate::backup::api::SOCKET);
    let command = |sub: &str| {
        format!(
            "{} {sub} --socket={} %f %p",
            shell_word(&me.display().to_string()),
            shell_word(&socket.display().to_string())
        )
    };
    let config = |e: crate::backup::store::StoreError| Error::Config(e.message);
    let archive_command = backups
        .archive_config()
        .map_err(config)?
        .map(|_| command("wal-archive"));
    let recovering = args.spec.pgdata.join("recovery.signal").exists();
    let recovery = match backups.recovery_config().map_err(config)? {
        Some(r) if recovering => Some(recovery_conf(&r.target, &command("wal-restore"))),
        _ => None,
    };
    Ok(BackupConf {
        archive_command,
        recovery,
    })
}

/// Quotes `word` for the shell PostgreSQL runs `archive_command` with, when it needs it.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-=".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The `postgresql.conf` lines that make PostgreSQL recover to `target` with
/// `restore_command`, then promote.
pub fn recovery_conf(target: &crate::backup::restore::Target, restore_command: &str) -> String {
    use crate::backup::restore::Target;
    let mut conf = format!(
        "restore_command = {}\nrecovery_target_timeline = 'latest'\n",
        conf::conf_value(restore_command)
    );
    // PostgreSQL refuses RFC 3339's `T` and `Z` in recovery_target_time; it takes the same
    // instant written its own way.
    let time = match target {
        Target::Time(t) => Some(t.parse::<k8s_openapi::jiff::Timestamp>().map_or_else(
            |_| t.clone(),
            |ts| ts.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        )),
        _ => None,
    };
    let line = match target {
        Target::Latest => None,
        Target::Time(_) => time.as_ref().map(|t| ("recovery_target_time", t)),
        Target::Lsn(l) => Some(("recovery_target_lsn", l)),
        Target::Xid(x) => Some(("recovery_target_xid", x)),
        Target::Name(n) => Some(("recovery_target_name", n)),
    };
    if let Some((key, value)) = line {
        conf.push_str(&format!(
            "{key} = {}\nrecovery_target_action = 'promote'\nrecovery_target_inclusive = 'off'\n",
            conf::conf_value(value)
        ));
    }
    conf
}

fn write_config(args: &InstanceArgs, replica: bool, password: &str, extra: &BackupConf) -> Result<(), Error> {
    let read = |name: &str| {
        let path = args.spec.config_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!(
                "{}: {e}; the cluster's ConfigMap must have {name}",
                path.display()
            ))
        })
    };
    let tls = tls_of(args);
    let conninfo = replica.then(|| {
        primary_conninfo(
            tls.as_ref(),
            (
                &args.spec.cluster,
                &args.spec.primary_host,
                args.spec.postgres_port,
            ),
            password,
            &args.pod.pod_name,
        )
    });
    let mut conf = postgresql_conf(
        &read(POSTGRESQL_CONF)?,
        &args.spec.config_dir,
        conninfo.as_deref(),
    );
    if let Some(tls) = &tls {
        conf.push_str(&tls.server_conf());
        // The cluster's TLS security profile, which follow_certificates keeps current.
        sync_tls_profile(&args.spec.config_dir, &args.spec.pgdata)?;
        conf.push_str(&format!("include_if_exists = '{TLS_PROFILE_CONF}'\n"));
    }
    if let Some(command) = &extra.archive_command {
        conf.push_str(&format!("archive_command = {}\n", conf::conf_value(command)));
    }
    if let Some(recovery) = &extra.recovery {
        conf.push_str(recovery);
    }
    if replica {
        conf.push_str(&format!(
            "primary_slot_name = {}\n",
            conf::conf_value(&crate::facts::instance::slot_name(&args.pod.pod_name))
        ));
    }
    // What the operator sets while PostgreSQL runs (synchronous_standby_names), last.
    conf.push_str(&format!("include_if_exists = '{}'\n", status::REPLICATION_CONF));
    write_private(&args.spec.pgdata.join(POSTGRESQL_CONF), &conf)?;
    let mut hba = read(PG_HBA_CONF)?;
    if args.spec.pgdata.join(RESET_SUPERUSER).exists() {
        // The restored roles have the source cluster's superuser password: only the pod's own
        // socket is trusted until the instance manager has set this cluster's.
        hba = format!(
            "# Tusk: until the superuser's password is reset after a restore\nlocal all {SUPERUSER} trust\n{hba}"
        );
    }
    write_private(&args.spec.pgdata.join(PG_HBA_CONF), &hba)
}

/// The file a restore leaves in the data directory until the superuser's password is this
/// cluster's.
pub const RESET_SUPERUSER: &str = "tusk.reset-superuser";

/// After a restore: once PostgreSQL has promoted, sets the superuser's password to this cluster's
/// and drops the trusted socket line.
async fn reset_superuser(
    args: InstanceArgs,
    local: LocalConnection,
    password: String,
    state: Arc<status::State>,
) {
    let marker = args.spec.pgdata.join(RESET_SUPERUSER);
    state
        .resetting_superuser
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let client = local.connect().await.map_err(|e| e.to_string())?;
            let recovering: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if recovering {
                return Ok(false);
            }
            let quoted = password.replace('\'', "''");
            client
                .batch_execute(&format!("ALTER ROLE {SUPERUSER} PASSWORD '{quoted}'"))
                .await
                .map_err(|e| e.to_string())?;
            std::fs::remove_file(&marker).map_err(|e| e.to_string())?;
            let hba =
                std::fs::read_to_string(args.spec.config_dir.join(PG_HBA_CONF)).map_err(|e| e.to_string())?;
            write_private(&args.spec.pgdata.join(PG_HBA_CONF), &hba).map_err(|e| e.to_string())?;
            client
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(true)
        };
        match attempt.await {
            Ok(true) => {
                info!("the restored superuser's password is now this cluster's");
                state
                    .resetting_superuser
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "the restored instance does not take the new superuser password yet; retrying")
            }
        }
        tokio::time::sleep(delay).await;
    }
}

fn initdb(args: &InstanceArgs, programs: &Programs) -> Result<(), Error> {
    info!(pgdata = %args.spec.pgdata.display(), "initdb: bootstrapping the first primary");
    let mut command = Command::new(&programs.initdb);
    command
        .arg(format!("--pgdata={}", args.spec.pgdata.display()))
        .arg(format!("--username={SUPERUSER}"))
        .arg(format!(
            "--pwfile={}",
            args.spec.superuser_password_file.display()
        ))
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        .arg(format!("--encoding={}", args.spec.encoding()))
        .arg(format!("--locale={}", args.spec.locale()));
    if args.spec.data_checksums {
        command.arg("--data-checksums");
    }
    if let Some(waldir) = &args.spec.waldir {
        command.arg(format!("--waldir={}", waldir.display()));
    }
    run_program("initdb", &mut command)?;
    std::fs::write(
        args.spec.pgdata.join(CLUSTER_MARKER),
        format!("{}\n", args.spec.cluster),
    )
    .map_err(io("writing the cluster marker"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One `pg_basebackup` attempt into a temporary directory beside `--pgdata`, renamed into place
/// only when complete: an interrupted copy never looks like a data directory.
fn basebackup_once(args: &InstanceArgs, programs: &Programs, password: &str) -> Result<(), Error> {
    let tmp = with_suffix(&args.spec.pgdata, ".tusk-tmp");
    let tmp_wal = args.spec.waldir.as_ref().map(|w| with_suffix(w, ".tusk-tmp"));
    // Only Tusk's own interrupted copies are removed; they were never a data directory.
    for dir in [Some(&tmp), tmp_wal.as_ref()].into_iter().flatten() {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
        }
    }
    let mut command = Command::new(&programs.pg_basebackup);
    command
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .arg(format!("--pgdata={}", tmp.display()))
        .arg(format!(
            "--dbname={}",
            tls::conninfo(&tls::connection(
                tls_of(args).as_ref(),
                &args.spec.primary_host,
                &tls::primary_server_name(&args.spec.cluster),
                args.spec.postgres_port,
                tls::Login::Replication,
            ))
        ))
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"]);
    if let Some(wal) = &tmp_wal {
        command.arg(format!("--waldir={}", wal.display()));
    }
    run_program("pg_basebackup", &mut command)?;
    std::fs::write(tmp.join(STANDBY_SIGNAL), "").map_err(io("writing standby.signal"))?;
    if let (Some(waldir), Some(tmp_wal)) = (&args.spec.waldir, &tmp_wal) {
        std::fs::rename(tmp_wal, waldir).map_err(io(format!("moving the WAL to {}", waldir.display())))?;
        let link = tmp.join("pg_wal");
        std::fs::remove_file(&link).map_err(io("replacing the pg_wal link"))?;
        std::os::unix::fs::symlink(waldir, &link).map_err(io("linking pg_wal"))?;
    }
    std::fs::rename(&tmp, &args.spec.pgdata)
        .map_err(io(format!("moving the copy to {}", args.spec.pgdata.display())))
}

/// Copies the primary's data, retrying until the primary answers or SIGTERM arrives.
async fn basebackup(args: &InstanceArgs, programs: &Programs, password: &str) -> Result<bool, Error> {
    let mut delay = Duration::from_secs(1);
    loop {
        info!(primary = %args.spec.primary_host, "pg_basebackup: copying the primary's data");
        let attempt = {
            let (args, programs, password) = (args.clone(), programs.clone(), password.to_owned());
            tokio::task::spawn_blocking(move || basebackup_once(&args, &programs, &password))
        };
        tokio::select! {
            done = attempt => match done.expect("the copy task never panics") {
                Ok(()) => return Ok(true),
                Err(e) => warn!(error = %e, retry_in = ?delay, "pg_basebackup failed"),
            },
            () = terminated() => return Ok(false),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = terminated() => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// `pg_controldata` of the data directory, in the C locale.
fn controldata(args: &InstanceArgs, programs: &Programs) -> Result<std::process::Output, Error> {
    Command::new(&programs.pg_controldata)
        .arg(&args.spec.pgdata)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(io("starting pg_controldata"))
}

fn check_control_file(args: &InstanceArgs, programs: &Programs) -> Result<(), Error> {
    let output = controldata(args, programs)?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    match datadir::control_data_problem(output.status.success(), &text) {
        None => Ok(()),
        Some(detail) => Err(DataDirError::Corrupt {
            path: args.spec.pgdata.clone(),
            detail,
        }
        .into()),
    }
}

/// Where the latest checkpoint starts, from `pg_controldata`: after a clean shutdown, the
/// shutdown checkpoint, the last record written.
fn shutdown_checkpoint(args: &InstanceArgs, programs: &Programs) -> Result<String, Error> {
    let output = controldata(args, programs)?;
    let text = String::from_utf8_lossy(&output.stdout);
    datadir::control_value(&text, "Latest checkpoint location").ok_or_else(|| {
        Error::Config(format!(
            "pg_controldata printed no latest checkpoint location: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    })
}

/// `tusk-operator instance`.
pub async fn run(args: InstanceArgs) -> Result<(), Error> {
    listen_for_sigterm();
    let password = read_password(&args.spec.superuser_password_file)?;
    let programs = Programs::find()?;
    let tls = tls_of(&args);
    if let Some(tls) = &tls {
        tls.sync()?;
    }
    let local = LocalConnection {
        socket_dir: args.spec.socket_dir.clone(),
        port: args.spec.postgres_port,
        password: password.clone(),
    };
    let backups = Arc::new(backup::Backups::new(
        args.spec.config_dir.clone(),
        args.spec.backup_target_dir.clone(),
        args.spec.recovery_source_dir.clone(),
        args.pod.pod_name.clone(),
        crate::backup::base::Source {
            program: programs.pg_basebackup.clone(),
            // Replication connections come over TCP (pg_hba.conf allows them there), to the
            // pod's own address, checked against its own name with TLS.
            connection: tls::connection(
                tls_of(&args).as_ref(),
                &args
                    .pod
                    .pod_ips
                    .first()
                    .map_or_else(|| "127.0.0.1".to_owned(), ToString::to_string),
                &tls::own_server_name(&args.spec.cluster, &args.pod.pod_name),
                args.spec.postgres_port,
                tls::Login::Replication,
            ),
            password: password.clone(),
            major: programs.major,
            version: programs.version.clone(),
            segment_size: 0,
        },
        local.clone(),
    ));
    let state = Arc::new(status::State::new(
        args.pod.pod_name.clone(),
        local,
        args.spec.max_lag_bytes,
        backups.clone(),
        args.spec.pgdata.clone(),
        programs.pg_controldata.clone(),
    ));
    if !args.pod.pod_uid.is_empty() {
        let _ = state.pod_uid.set(args.pod.pod_uid.clone());
    }
    if let Some(tls) = tls {
        tokio::spawn(follow_certificates(
            tls,
            state.clone(),
            args.spec.config_dir.clone(),
            args.spec.pgdata.clone(),
        ));
    }
    let (stop_status, status_stopped) = tokio::sync::watch::channel(false);
    let mut servers = status::serve(
        &args.pod.pod_ips,
        args.spec.status_port,
        state.clone(),
        status_stopped.clone(),
    )
    .await?;
    servers.extend(serve_metrics(&args, state.clone(), status_stopped.clone()).await?);
    servers.push(serve_socket(&args, backups.clone(), status_stopped)?);
    info!(pod = %args.pod.pod_name, cluster = %args.spec.cluster, major = programs.major, "instance manager started");

    let leases = match &args.spec.kube_api_dir {
        Some(dir) => Some(lease::Leases::new(
            lease::client(dir)?,
            &args.pod.namespace,
            &args.spec.cluster,
            &args.pod.pod_name,
        )),
        None => None,
    };
    state
        .leased
        .store(leases.is_some(), std::sync::atomic::Ordering::Relaxed);
    // Each turn prepares the data directory and runs PostgreSQL; a primary that stepped down for
    // a switchover takes another turn, as a replica of the new primary.
    let result = loop {
        let outcome = run_once(&args, &programs, &password, &backups, &state, leases.as_ref()).await;
        match (outcome, &leases) {
            (Err(Error::SteppedDown), Some(leases)) => {
                let lsn = shutdown_checkpoint(&args, &programs)?;
                info!(checkpoint = %lsn, "postgres stopped cleanly for the switchover");
                state.demoted.send_replace(Some(lsn));
                match ha::await_successor(leases).await {
                    Ok(true) => info!("the Lease went to the new primary: rejoining as its replica"),
                    Ok(false) => warn!("the switchover was given up: starting as the primary again"),
                    // PostgreSQL is stopped already: nothing else to stop.
                    Err(Error::Stopped(what)) => {
                        info!("stopped by SIGTERM while {what}");
                        break Ok(());
                    }
                    Err(e) => break Err(e),
                }
            }
            // The next turn rewinds it ([`ha::DIVERGED`]).
            (Err(Error::Diverged), Some(_)) => {}
            (outcome, _) => break outcome,
        }
    };
    let _ = stop_status.send(true);
    for server in servers {
        let _ = server.await;
    }
    result
}

/// How often the mounted TLS Secret is compared with the copies PostgreSQL reads.
const CERTIFICATES_EVERY: Duration = Duration::from_secs(5);

/// The file in the data directory with PostgreSQL's settings for the cluster's TLS security
/// profile, included by `postgresql.conf`.
const TLS_PROFILE_CONF: &str = "tusk-tls-profile.conf";

/// Writes [`TLS_PROFILE_CONF`] from the profile in the mounted ConfigMap, when it differs; returns
/// whether it did. Without a readable profile the file stays as it is (PostgreSQL's defaults when
/// there is none).
fn sync_tls_profile(config_dir: &Path, pgdata: &Path) -> Result<bool, Error> {
    let Ok(text) = std::fs::read_to_string(config_dir.join(crate::facts::cluster::TLS_PROFILE_FILE)) else {
        return Ok(false);
    };
    let profile = match crate::tls_profile::Profile::from_json(&text) {
        Ok(profile) => profile,
        Err(e) => {
            warn!(error = %e, "the cluster's TLS profile: keeping PostgreSQL's in force");
            return Ok(false);
        }
    };
    let path = pgdata.join(TLS_PROFILE_CONF);
    let wanted = profile.postgres_settings();
    if std::fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(false);
    }
    write_private(&path, &wanted)?;
    Ok(true)
}

/// Copies renewed certificates as the kubelet replaces the mounted files, and PostgreSQL's
/// settings for a new TLS security profile, and reloads PostgreSQL so that new connections get
/// them; a reload that fails is tried again at the next look.
async fn follow_certificates(tls: tls::Tls, state: Arc<status::State>, config_dir: PathBuf, pgdata: PathBuf) {
    let mut reload = false;
    loop {
        tokio::time::sleep(CERTIFICATES_EVERY).await;
        match tls.sync() {
            Ok(changed) => reload |= changed,
            Err(e) => warn!(error = %e, "copying the cluster's TLS files"),
        }
        // Only once the data directory holds PostgreSQL's configuration: before that, the next
        // start writes it.
        if pgdata.join(POSTGRESQL_CONF).exists() {
            match sync_tls_profile(&config_dir, &pgdata) {
                Ok(changed) => reload |= changed,
                Err(e) => warn!(error = %e, "writing PostgreSQL's TLS profile settings"),
            }
        }
        if !reload || !state.running() {
            continue;
        }
        let reloaded = async {
            let client = state.local().connect().await.map_err(|e| e.to_string())?;
            client
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .map_err(|e| e.to_string())
        };
        match reloaded.await {
            Ok(()) => {
                info!("the cluster's certificates or TLS profile changed: PostgreSQL reloaded them");
                reload = false;
            }
            Err(e) => warn!(error = %e, "reloading PostgreSQL for new certificates; trying again"),
        }
    }
}

/// One turn of [`run`]: makes the data directory fit the role the Lease (or, without one, the
/// ordinal) gives this pod, then runs PostgreSQL until it stops.
async fn run_once(
    args: &InstanceArgs,
    programs: &Programs,
    password: &str,
    backups: &Arc<backup::Backups>,
    state: &Arc<status::State>,
    leases: Option<&lease::Leases>,
) -> Result<(), Error> {
    let found = datadir::inspect(&args.spec.pgdata, &args.spec.cluster, programs.major)?;
    if matches!(found, DataDir::Primary | DataDir::Replica) {
        check_control_file(args, programs)?;
        info!(pgdata = %args.spec.pgdata.display(), role = ?found, "reusing the data directory");
    }
    let bootstrap = async || match backups.recovery_config().map_err(|e| Error::Config(e.message))? {
        Some(recovery) => {
            if restore(args, &recovery).await? {
                Ok(())
            } else {
                Err(Error::Stopped("restoring"))
            }
        }
        None => initdb(args, programs),
    };
    let clone = async || {
        if basebackup(args, programs, password).await? {
            Ok(())
        } else {
            Err(Error::Stopped("copying the primary's data"))
        }
    };
    let prepared = match leases {
        Some(leases) => ha::prepare(args, programs, password, leases, found, bootstrap, clone).await,
        // Without a Lease, the first pod bootstraps and is the primary; nothing fails over.
        None => match found {
            DataDir::Empty if bootstraps_with_initdb(&args.spec.cluster, &args.pod.pod_name) => {
                bootstrap().await.map(|()| ha::Start::Primary {
                    renewed: tokio::time::Instant::now(),
                })
            }
            DataDir::Empty => clone().await.map(|()| ha::Start::Replica),
            DataDir::Primary => Ok(ha::Start::Primary {
                renewed: tokio::time::Instant::now(),
            }),
            DataDir::Replica => Ok(ha::Start::Replica),
        },
    };
    let start = match prepared {
        Ok(start) => start,
        Err(Error::Stopped(what)) => {
            info!("stopped by SIGTERM while {what}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let replica = start == ha::Start::Replica;
    let extra = backup_conf(args, backups)?;
    write_config(args, replica, password, &extra)?;
    let slot_keeper = replica.then(|| tokio::spawn(ha::ensure_own_slot(args.clone(), password.to_owned())));
    if args.spec.pgdata.join(RESET_SUPERUSER).exists() {
        tokio::spawn(reset_superuser(
            args.clone(),
            LocalConnection {
                socket_dir: args.spec.socket_dir.clone(),
                port: args.spec.postgres_port,
                password: password.to_owned(),
            },
            password.to_owned(),
            state.clone(),
        ));
    }
    let (fence, fenced) = tokio::sync::watch::channel(ha::Fence::No);
    let keeper = leases.cloned().map(|leases| {
        let local = LocalConnection {
            socket_dir: args.spec.socket_dir.clone(),
            port: args.spec.postgres_port,
            password: password.to_owned(),
        };
        tokio::spawn(ha::keep(
            args.clone(),
            password.to_owned(),
            leases,
            start,
            local,
            fence,
            state.clone(),
        ))
    });
    let result = supervise(args, programs, state, fenced).await;
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    if let Some(slot_keeper) = slot_keeper {
        slot_keeper.abort();
    }
    result
}

/// `/metrics` over HTTPS, with the cluster's server certificate (a self-signed one when the
/// cluster has TLS off), for callers whose own token may `get` `/metrics` (asked of the API server
/// as the caller, so the pod's ServiceAccount needs no grant). A pod without the API (no
/// `--kube-api-dir`) cannot check a token and serves no metrics.
async fn serve_metrics(
    args: &args::InstanceArgs,
    state: Arc<status::State>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    use crate::webhook::{server::ServerCert, tls::CertFiles};
    let Some(api) = &args.spec.kube_api_dir else {
        warn!("no --kube-api-dir: /metrics is not served, as no caller's token can be checked");
        return Ok(Vec::new());
    };
    let authorizer = Arc::new(crate::admin::auth::Authorizer::as_caller(lease::config(api)?));
    let cert = match &args.spec.tls_dir {
        Some(dir) => ServerCert::Files(CertFiles {
            cert: dir.join(crate::facts::cluster::tls::SERVER_CERT),
            key: dir.join(crate::facts::cluster::tls::SERVER_KEY),
        }),
        None => ServerCert::self_signed(&format!("{}.{}", args.pod.pod_name, args.pod.namespace))
            .map_err(|e| Error::Config(format!("a self-signed certificate for /metrics: {e}")))?,
    };
    status::serve_metrics(
        &args.pod.pod_ips,
        args.spec.metrics_port,
        cert,
        authorizer,
        args.spec.config_dir.join(crate::facts::cluster::TLS_PROFILE_FILE),
        state,
        stopped,
    )
    .await
}

/// Serves `archive_command` and `restore_command` on the Unix socket in the socket directory.
fn serve_socket(
    args: &InstanceArgs,
    backups: Arc<backup::Backups>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let path = args.spec.socket_dir.join(crate::backup::api::SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing the stale socket {}", path.display()))(e)),
    }
    let listener =
        tokio::net::UnixListener::bind(&path).map_err(io(format!("binding {}", path.display())))?;
    let handler = move |call| backup::handle_socket_call(backups.clone(), call);
    Ok(tokio::spawn(crate::admin::serve_calls(
        crate::admin::Listener::Unix(listener),
        handler,
        crate::process::until_stopped(stopped),
    )))
}

/// Whether SIGTERM has arrived, from one listener for the instance manager's whole life. Once a
/// program installs a SIGTERM handler the signal no longer ends it, and a listener only sees the
/// signals sent after it was made: one per phase would lose a SIGTERM sent between two phases (a
/// step-down and the next start, a wait for the Lease), and the pod would then only stop at
/// the kubelet's SIGKILL.
static SIGTERM: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();

/// Starts listening for SIGTERM (at once when the instance manager starts; [`terminated`] does
/// it otherwise). Must run within the runtime.
fn listen_for_sigterm() -> tokio::sync::watch::Receiver<bool> {
    SIGTERM
        .get_or_init(|| {
            let (arrived, receiver) = tokio::sync::watch::channel(false);
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::spawn(async move {
                        term.recv().await;
                        info!("SIGTERM received");
                        let _ = arrived.send(true);
                        // Keep the sender, so the flag stays up.
                        std::future::pending::<()>().await;
                    });
                }
                Err(e) => warn!(error = %e, "cannot listen for SIGTERM"),
            }
            receiver
        })
        .clone()
}

/// Completes once SIGTERM has arrived: at once when it already has.
async fn terminated() {
    let mut arrived = listen_for_sigterm();
    if arrived.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleeps for `delay`; `Error::Stopped(what)` when SIGTERM arrives first (or has arrived).
async fn pause(delay: Duration, what: &'static str) -> Result<(), Error> {
    tokio::select! {
        biased;
        () = terminated() => Err(Error::Stopped(what)),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

/// Restores the first primary's data directory from a backup, into a temporary directory renamed
/// into place only when complete; `Ok(false)` when SIGTERM arrived first.
async fn restore(
    args: &InstanceArgs,
    recovery: &crate::backup::restore::RecoveryConfig,
) -> Result<bool, Error> {
    use crate::backup::{base, restore};
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let store = recovery.store.open()?;
            let record = match &recovery.backup {
                Some(name) => base::record(&store, name).await?,
                None => {
                    let records = base::list(&store).await?;
                    restore::choose(&records, &recovery.target).cloned().ok_or_else(|| {
                        crate::backup::store::StoreError {
                            cause: crate::backup::store::Cause::Other,
                            message: format!(
                                "{}: no complete backup is consistent before the recovery target {:?} ({} backups)",
                                store.url,
                                recovery.target,
                                records.len()
                            ),
                        }
                    })?
                }
            };
            info!(backup = %record.name, store = %store.url, target = ?recovery.target, "restoring the data directory");
            let tmp = with_suffix(&args.spec.pgdata, ".tusk-tmp");
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| store_io(&tmp, &e))?;
            }
            create_private_dir(&tmp).map_err(|e| store_io(&tmp, &e))?;
            restore::unpack(&store, &record, &tmp).await?;
            Ok::<_, crate::backup::store::StoreError>(tmp)
        };
        let outcome = tokio::select! {
            done = attempt => done,
            () = terminated() => return Ok(false),
        };
        match outcome {
            Ok(tmp) => {
                finish_restore(args, &tmp)?;
                return Ok(true);
            }
            Err(e) => warn!(error = %e, retry_in = ?delay, "restore failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = terminated() => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

fn store_io(path: &Path, e: &std::io::Error) -> crate::backup::store::StoreError {
    crate::backup::store::StoreError {
        cause: crate::backup::store::Cause::Other,
        message: format!("{}: {e}", path.display()),
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Makes an unpacked backup this cluster's data directory, set to recover.
fn finish_restore(args: &InstanceArgs, tmp: &Path) -> Result<(), Error> {
    // The source's files that say what a data directory is: this one belongs to this cluster,
    // recovers from the archive, and is no standby.
    std::fs::write(tmp.join(CLUSTER_MARKER), format!("{}\n", args.spec.cluster))
        .map_err(io("writing the cluster marker"))?;
    for stale in [STANDBY_SIGNAL, "postmaster.pid", "backup_manifest"] {
        let _ = std::fs::remove_file(tmp.join(stale));
    }
    std::fs::write(tmp.join("recovery.signal"), "").map_err(io("writing recovery.signal"))?;
    std::fs::write(tmp.join(RESET_SUPERUSER), "").map_err(io("marking the superuser for a new password"))?;
    if let Some(waldir) = &args.spec.waldir {
        let wal = tmp.join("pg_wal");
        if waldir.exists() {
            std::fs::remove_dir_all(waldir).map_err(io(format!("emptying {}", waldir.display())))?;
        }
        std::fs::rename(&wal, waldir).map_err(io(format!("moving the WAL to {}", waldir.display())))?;
        std::os::unix::fs::symlink(waldir, &wal).map_err(io("linking pg_wal"))?;
    }
    std::fs::rename(tmp, &args.spec.pgdata).map_err(io(format!(
        "moving the restore to {}",
        args.spec.pgdata.display()
    )))
}

/// `tusk-operator wal-archive` and `wal-restore`: one request to the instance manager's socket.
pub async fn wal_call(path: &str, args: crate::cli::WalArgs) -> Result<(), Error> {
    let file = std::env::current_dir()
        .map_err(io("finding the data directory"))?
        .join(&args.path);
    let body = serde_json::to_vec(&crate::backup::api::WalRequest {
        name: args.name.clone(),
        path: file,
    })
    .expect("a request serializes");
    let (status, answer) = crate::admin::call_unix(
        &args.socket,
        hyper::Method::POST,
        path,
        Some(body),
        Duration::from_secs(600),
    )
    .await
    .map_err(Error::Config)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(Error::Config(String::from_utf8_lossy(&answer).trim().to_owned()))
    }
}

/// Starts `postgres` and supervises it until it stops.
async fn supervise(
    args: &InstanceArgs,
    programs: &Programs,
    state: &status::State,
    mut fence: tokio::sync::watch::Receiver<ha::Fence>,
) -> Result<(), Error> {
    let listen = if args.pod.pod_ips.is_empty() {
        "*".to_owned()
    } else {
        args.pod
            .pod_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let handle = |kind: SignalKind, name: &str| signal(kind).map_err(io(format!("handling {name}")));
    let mut interrupt = handle(SignalKind::interrupt(), "SIGINT")?;
    let mut hangup = handle(SignalKind::hangup(), "SIGHUP")?;
    let mut child = handle(SignalKind::child(), "SIGCHLD")?;
    let postgres = Command::new(&programs.postgres)
        .arg("-D")
        .arg(&args.spec.pgdata)
        .args(["-c", &format!("listen_addresses={listen}")])
        .args(["-c", &format!("port={}", args.spec.postgres_port)])
        .args([
            "-c",
            &format!("unix_socket_directories={}", args.spec.socket_dir.display()),
        ])
        .stdin(Stdio::null())
        // Its own process group: a last-resort SIGKILL reaches every backend, not only the
        // postmaster (a backend left behind keeps the shared memory and blocks a restart).
        .process_group(0)
        .spawn()
        .map_err(io("starting postgres"))?;
    let pid = Pid::from_raw(i32::try_from(postgres.id()).expect("a pid fits in i32"));
    let kill_group = || match kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(e) => warn!(error = %e, "could not kill postgres's process group"),
    };
    state.set_running(true);
    info!(pid = postgres.id(), listen = %listen, "postgres started");
    let send = |sig: Signal| {
        if let Err(e) = kill(pid, sig) {
            warn!(signal = %sig, error = %e, "could not signal postgres");
        }
    };
    // Each step of a requested stop: fast (SIGINT), immediate (SIGQUIT), then SIGKILL.
    let mut stopping: Option<(Signal, tokio::time::Instant)> = None;
    let mut fenced: Option<ha::Fence> = None;
    // SIGTERM during a step-down: the pod stops, it does not rejoin.
    let mut terminating = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let deadline = stopping.map(|(_, at)| at);
        let asked = tokio::select! {
            _ = child.recv() => false,
            // The primary lost its Lease: no write may commit from now on. An immediate shutdown
            // ends every session at once (crash recovery on the next start is safe).
            Ok(()) = fence.changed(), if fenced.is_none() => {
                match *fence.borrow() {
                    ha::Fence::No => {}
                    ha::Fence::Now => {
                        fenced = Some(ha::Fence::Now);
                        warn!("fencing: immediate shutdown of postgres");
                        send(Signal::SIGQUIT);
                        if let Err(e) = status::note(&args.spec.pgdata, status::FENCED) {
                            warn!(error = %e, "noting the fence for the operator");
                        }
                        stopping = Some((Signal::SIGQUIT, tokio::time::Instant::now() + Duration::from_secs(10)));
                    }
                    // A step-down or a rewind: a fast shutdown, escalated as any requested stop.
                    ha::Fence::StepDown | ha::Fence::Rewind => {
                        let why = *fence.borrow();
                        fenced = Some(why);
                        info!(?why, "fast shutdown of postgres");
                        send(Signal::SIGINT);
                        stopping = Some((Signal::SIGINT, tokio::time::Instant::now() + args.spec.fast_stop_timeout));
                    }
                }
                false
            }
            _ = tick.tick() => false,
            () = terminated(), if !terminating => true,
            _ = interrupt.recv() => true,
            _ = hangup.recv() => {
                send(Signal::SIGHUP);
                false
            }
            () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => false,
        };
        if let Some(status) = reap(pid)? {
            state.set_running(false);
            // Nothing of a postmaster that is gone may linger.
            kill_group();
            return match stopping {
                Some((Signal::SIGINT, _)) if fenced == Some(ha::Fence::StepDown) && !terminating => {
                    Err(Error::SteppedDown)
                }
                Some(_) if fenced == Some(ha::Fence::Rewind) && !terminating => Err(Error::Diverged),
                // Stopped by SIGTERM while stopping to rewind: the marker makes the next start
                // rewind.
                Some(_) if fenced == Some(ha::Fence::Rewind) => Ok(()),
                Some(_) if fenced.is_some() => Err(Error::Fenced),
                Some(_) => {
                    info!(status = %status, "postgres stopped");
                    Ok(())
                }
                None => Err(Error::PostgresExited(status)),
            };
        }
        terminating |= asked;
        let now = tokio::time::Instant::now();
        stopping = match stopping {
            None if asked => {
                info!(timeout = ?args.spec.fast_stop_timeout, "stopping postgres: fast shutdown");
                send(Signal::SIGINT);
                Some((Signal::SIGINT, now + args.spec.fast_stop_timeout))
            }
            Some((Signal::SIGINT, at)) if now >= at => {
                warn!("the fast shutdown took too long: immediate shutdown");
                send(Signal::SIGQUIT);
                // PostgreSQL itself SIGKILLs the children that outlast an immediate shutdown by
                // 5 s; give it that, and a margin.
                Some((Signal::SIGQUIT, now + Duration::from_secs(10)))
            }
            Some((Signal::SIGQUIT, at)) if now >= at => {
                warn!("the immediate shutdown took too long: killing postgres and its children");
                kill_group();
                Some((Signal::SIGKILL, now + Duration::from_secs(3600)))
            }
            other => other,
        };
    }
}

/// Reaps every exited child (the instance manager is PID 1 and inherits orphans) but those
/// their owner waits for, and returns how `postgres` ended, if it has.
fn reap(postgres: Pid) -> Result<Option<String>, Error> {
    use nix::sys::wait::{Id, waitid};
    let mut ended = None;
    loop {
        // Look without reaping first: a claimed child is its owner's to reap.
        let peeked = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peeked {
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(ended),
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(Error::Sys {
                    context: "waiting for children",
                    source,
                });
            }
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return Ok(ended),
            },
        };
        if crate::process::is_claimed(pid.as_raw()) {
            return Ok(ended);
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == postgres => ended = Some(format!("exit code {code}")),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == postgres => ended = Some(format!("signal {sig}")),
            Ok(_) | Err(nix::Error::EINTR | nix::Error::ECHILD) => {}
            Err(source) => {
                return Err(Error::Sys {
                    context: "waiting for children",
                    source,
                });
            }
        }
    }
}

/// `tusk-operator promote`: `pg_ctl promote`, waiting until the instance accepts writes.
pub async fn promote(pgdata: &Path, timeout: Duration) -> Result<(), Error> {
    let pg_ctl = find("pg_ctl")?;
    let mut command = Command::new(pg_ctl);
    command
        .arg("promote")
        .arg(format!("--pgdata={}", pgdata.display()))
        .arg("--wait")
        .arg(format!("--timeout={}", timeout.as_secs().max(1)));
    let output = tokio::task::spawn_blocking(move || run_program("pg_ctl", &mut command))
        .await
        .expect("pg_ctl's task never panics")?;
    print!("{output}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_version_is_read_from_postgres_version() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 18.1\n"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24\n"), Some(9));
        assert_eq!(parse_major("something else"), None);
    }

    #[test]
    fn recovery_settings_name_the_target_postgresql_s_way() {
        use crate::backup::restore::Target;
        let conf = recovery_conf(&Target::Name("before it's gone".into()), "/bin/x %f %p");
        assert!(conf.starts_with("restore_command = '/bin/x %f %p'\n"), "{conf}");
        assert!(
            conf.contains("recovery_target_name = 'before it''s gone'\n"),
            "{conf}"
        );
        assert!(conf.contains("recovery_target_action = 'promote'\n"), "{conf}");
        assert!(!recovery_conf(&Target::Latest, "x").contains("recovery_target_action"));
        let conf = recovery_conf(&Target::Time("2026-12-01T04:52:38.449569Z".into()), "x");
        assert!(
            conf.contains("recovery_target_time = '2026-12-01 04:52:38.449569+00'\n"),
            "{conf}"
        );
    }

    #[test]
    fn only_ordinal_zero_runs_initdb() {
        assert!(bootstraps_with_initdb("db", "db-0"));
        assert!(!bootstraps_with_initdb("db", "db-1"));
        assert!(!bootstraps_with_initdb("db", "db-10"));
        assert!(!bootstraps_with_initdb("db-1", "db-1-1"));
    }

    #[test]
    fn primary_conninfo_quotes_every_value_for_libpq_and_the_config_file() {
        let conninfo = primary_conninfo(None, ("db", "db-rw", 5432), r"it's \ odd", "db-1");
        assert_eq!(
            conninfo,
            r"host='db-rw' port='5432' user='postgres' password='it\'s \\ odd' application_name='db-1'"
        );
        let conf = postgresql_conf("port = 5432", Path::new("/etc/tusk/config"), Some(&conninfo));
        assert!(conf.contains("port = 5432\n"));
        assert!(conf.ends_with(
            "primary_conninfo = 'host=''db-rw'' port=''5432'' user=''postgres'' password=''it\\\\''s \\\\\\\\ odd'' application_name=''db-1'''\n"
        ), "{conf}");
    }
}
