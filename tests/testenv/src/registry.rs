//! A real OCI registry on loopback: distribution/distribution's `registry` (built by
//! `hack/testbin.sh` from the Go module proxy), storing in a directory of its own and serving the
//! distribution API over plain HTTP on 127.0.0.1, as registries on localhost are reached. It
//! exports no traces and dials nothing.

use std::time::Duration;

use crate::{Error, Result, Toolchain, control_plane::free_port, eventually::Wait, io, process::Supervised};

fn component(message: impl Into<String>) -> Error {
    Error::Component {
        component: "OCI registry",
        message: message.into(),
    }
}

/// A running registry.
pub struct Registry {
    _dir: tempfile::TempDir,
    port: u16,
    process: Supervised,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("host", &self.host()).finish()
    }
}

impl Registry {
    /// Starts an empty registry.
    pub async fn start() -> Result<Self> {
        let program = Toolchain::get()?.bin("registry");
        let dir = tempfile::Builder::new()
            .prefix("tusk-registry")
            .tempdir()
            .map_err(io("creating the registry's directory"))?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .map_err(io("writing the registry's config"))?;
        let none = std::ffi::OsStr::new("none");
        let process = Supervised::spawn_with_env(
            dir.path(),
            "registry",
            &program,
            &["serve".to_owned(), config.display().to_string()],
            &[
                ("OTEL_TRACES_EXPORTER", none),
                ("OTEL_METRICS_EXPORTER", none),
                ("OTEL_LOGS_EXPORTER", none),
            ],
        )?;
        let registry = Self {
            _dir: dir,
            port,
            process,
        };
        let ready = Wait::up_to(Duration::from_secs(60))
            .every(Duration::from_millis(200))
            .until("the registry to serve /v2/", async || {
                match crate::http_get("127.0.0.1", registry.port, "/v2/").await {
                    Some((200, _)) => crate::Seen::Holds(()),
                    _ if !registry.process.alive() => crate::Seen::Never("registry exited".to_owned()),
                    other => crate::Seen::NotYet(format!("{other:?}")),
                }
            })
            .await;
        ready.map_err(|unmet| component(format!("{unmet}\n{}", registry.process.log_tail(30))))?;
        Ok(registry)
    }

    /// Its host and port, the first part of its image references: `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
