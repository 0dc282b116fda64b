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
pub mod conf;
pub mod datadir;
pub mod status;

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

/// Quotes a value for a libpq connection string.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `primary_conninfo` of a replica.
pub fn primary_conninfo(host: &str, port: u16, password: &str, application_name: &str) -> String {
    format!(
        "host={} port={port} user={} password={} application_name={}",
        conninfo_value(host),
        conninfo_value(SUPERUSER),
        conninfo_value(password),
        conninfo_value(application_name)
    )
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

fn write_config(args: &InstanceArgs, replica: bool, password: &str) -> Result<(), Error> {
    let read = |name: &str| {
        let path = args.spec.config_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!(
                "{}: {e}; the cluster's ConfigMap must have {name}",
                path.display()
            ))
        })
    };
    let conninfo = replica.then(|| {
        primary_conninfo(
            &args.spec.primary_host,
            args.spec.postgres_port,
            password,
            &args.pod.pod_name,
        )
    });
    write_private(
        &args.spec.pgdata.join(POSTGRESQL_CONF),
        &postgresql_conf(
            &read(POSTGRESQL_CONF)?,
            &args.spec.config_dir,
            conninfo.as_deref(),
        ),
    )?;
    write_private(&args.spec.pgdata.join(PG_HBA_CONF), &read(PG_HBA_CONF)?)
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
        .arg(format!("--host={}", args.spec.primary_host))
        .arg(format!("--port={}", args.spec.postgres_port))
        .arg(format!("--username={SUPERUSER}"))
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
    let mut term = signal(SignalKind::terminate()).map_err(io("handling SIGTERM"))?;
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
            _ = term.recv() => return Ok(false),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = term.recv() => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn check_control_file(args: &InstanceArgs, programs: &Programs) -> Result<(), Error> {
    let output = Command::new(&programs.pg_controldata)
        .arg(&args.spec.pgdata)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(io("starting pg_controldata"))?;
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

/// `tusk-operator instance`.
pub async fn run(args: InstanceArgs) -> Result<(), Error> {
    let password = read_password(&args.spec.superuser_password_file)?;
    let programs = Programs::find()?;
    let local = LocalConnection {
        socket_dir: args.spec.socket_dir.clone(),
        port: args.spec.postgres_port,
        password: password.clone(),
    };
    let state = Arc::new(status::State::new(local, args.spec.max_lag_bytes));
    let (stop_status, status_stopped) = tokio::sync::watch::channel(false);
    let servers = status::serve(
        &args.pod.pod_ips,
        args.spec.status_port,
        state.clone(),
        status_stopped,
    )
    .await?;
    info!(pod = %args.pod.pod_name, cluster = %args.spec.cluster, major = programs.major, "instance manager started");

    let found = datadir::inspect(&args.spec.pgdata, &args.spec.cluster, programs.major)?;
    let replica = match found {
        DataDir::Empty if bootstraps_with_initdb(&args.spec.cluster, &args.pod.pod_name) => {
            initdb(&args, &programs)?;
            false
        }
        DataDir::Empty => {
            if !basebackup(&args, &programs, &password).await? {
                info!("stopped by SIGTERM while copying the primary's data");
                return Ok(());
            }
            true
        }
        DataDir::Primary | DataDir::Replica => {
            check_control_file(&args, &programs)?;
            info!(pgdata = %args.spec.pgdata.display(), role = ?found, "reusing the data directory");
            found == DataDir::Replica
        }
    };
    write_config(&args, replica, &password)?;
    let result = supervise(&args, &programs, &state).await;
    let _ = stop_status.send(true);
    for server in servers {
        let _ = server.await;
    }
    result
}

/// Starts `postgres` and supervises it until it stops.
async fn supervise(args: &InstanceArgs, programs: &Programs, state: &status::State) -> Result<(), Error> {
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
    let mut term = handle(SignalKind::terminate(), "SIGTERM")?;
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let deadline = stopping.map(|(_, at)| at);
        let asked = tokio::select! {
            _ = child.recv() => false,
            _ = tick.tick() => false,
            _ = term.recv() => true,
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
                Some(_) => {
                    info!(status = %status, "postgres stopped");
                    Ok(())
                }
                None => Err(Error::PostgresExited(status)),
            };
        }
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

/// Reaps every exited child (the instance manager is PID 1 and inherits orphans) and returns
/// how `postgres` ended, if it has.
fn reap(postgres: Pid) -> Result<Option<String>, Error> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(ended),
            Ok(WaitStatus::Exited(pid, code)) if pid == postgres => ended = Some(format!("exit code {code}")),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == postgres => ended = Some(format!("signal {sig}")),
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
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
    fn only_ordinal_zero_runs_initdb() {
        assert!(bootstraps_with_initdb("db", "db-0"));
        assert!(!bootstraps_with_initdb("db", "db-1"));
        assert!(!bootstraps_with_initdb("db", "db-10"));
        assert!(!bootstraps_with_initdb("db-1", "db-1-1"));
    }

    #[test]
    fn primary_conninfo_quotes_every_value_for_libpq_and_the_config_file() {
        let conninfo = primary_conninfo("db-rw", 5432, r"it's \ odd", "db-1");
        assert_eq!(
            conninfo,
            r"host='db-rw' port=5432 user='postgres' password='it\'s \\ odd' application_name='db-1'"
        );
        let conf = postgresql_conf("port = 5432", Path::new("/etc/tusk/config"), Some(&conninfo));
        assert!(conf.contains("port = 5432\n"));
        assert!(conf.ends_with(
            "primary_conninfo = 'host=''db-rw'' port=5432 user=''postgres'' password=''it\\\\''s \\\\\\\\ odd'' application_name=''db-1'''\n"
        ), "{conf}");
    }
}
