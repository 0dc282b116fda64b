//! Child processes that cannot outlive the test process (the control plane's components, and
//! programs tests start beside them, such as the operator).
//!
//! Each program runs under a bash supervisor whose standard input is a pipe that only the test
//! process holds. End of file on that pipe (the test process let go of it, exited, panicked or was
//! killed) makes the supervisor stop the program: SIGTERM, then SIGKILL after a grace period.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use crate::{Result, io};

const SUPERVISOR: &str = r#"
log=$1; pidfile=$2; grace=$3; shift 3
stop() {
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq "$grace"); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  rm -f "$pidfile"
  exit 0
}
# A signal to the whole process group (Ctrl-C, timeout(1)) stops the program too: background
# programs of a non-interactive shell ignore SIGINT, so it must be passed on.
trap stop INT TERM HUP
"$@" </dev/null >>"$log" 2>&1 &
child=$!
echo "$child" >"$pidfile"
while read -r _; do :; done
stop
"#;

/// Waits for end of file, then for every supervised program of the directory to be gone, then
/// removes the directory.
const JANITOR: &str = r#"
dir=$1
# Outlive a signal to the process group: the directory goes once the owner is gone.
trap '' INT TERM HUP
while read -r _; do :; done
for _ in $(seq 900); do
  alive=
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
  done
  [ -z "$alive" ] && break
  sleep 0.1
done
rm -rf "$dir"
"#;

/// A program under its supervisor.
pub struct Supervised {
    name: String,
    supervisor: Child,
    stdin: Option<ChildStdin>,
    pidfile: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Supervised {
    /// Starts `program` with `args`; its output goes to `dir/logs/<name>.log`.
    pub fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> Result<Self> {
        Self::spawn_with_env(dir, name, program, args, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub fn spawn_with_env(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        Self::spawn_with_grace(dir, name, program, args, env, std::time::Duration::from_secs(10))
    }

    /// Like [`spawn_with_env`](Self::spawn_with_env), with the time the program has between
    /// SIGTERM and SIGKILL when it is stopped.
    pub fn spawn_with_grace(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        grace: std::time::Duration,
    ) -> Result<Self> {
        let log = dir.join("logs").join(format!("{name}.log"));
        let pidfile = dir.join("run").join(format!("{name}.pid"));
        for d in [log.parent(), pidfile.parent()].into_iter().flatten() {
            fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let mut supervisor = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(format!("supervise-{name}"))
            .arg(&log)
            .arg(&pidfile)
            .arg((grace.as_millis() / 100).max(1).to_string())
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io(format!("starting {}", program.display())))?;
        let stdin = supervisor.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            supervisor,
            stdin,
            pidfile,
            log,
        })
    }

    /// The program's process id, once the supervisor has started it.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    /// Whether the program is still running (true until its pid is known).
    pub fn alive(&self) -> bool {
        match self.pid() {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid),
            None => true,
        }
    }

    /// The last `lines` lines of the program's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ---\n{}",
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// The file its output goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The file its process id is written to once it runs.
    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the program and waits until it is gone.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.supervisor.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_zombie(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|(state, _)| state == 'Z')
}

/// Process `pid`'s state (`R`, `S`, `Z`...) and the CPU ticks it used (user and system), from
/// `/proc/<pid>/stat`; `None` when it is gone.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    ))
}

/// Removes a directory once the test process is gone and every program in it has stopped.
pub(crate) struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Janitor {
    pub(crate) fn spawn(dir: &Path) -> Result<Self> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(JANITOR)
            .arg("janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io("starting the janitor"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Removes the directory now, after the programs are stopped.
    pub(crate) fn finish(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
