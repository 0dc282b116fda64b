//! A real S3-compatible object store on loopback: SeaweedFS (`weed server` with its filer and S3
//! gateway, built by `hack/testbin.sh`), with its own credentials, data directory and ports.
//!
//! [`S3Server::stop`] and [`S3Server::start_again`] take the store away and bring it back with
//! its data, which is how a store outage is tested. [`S3Server::start_tls`] serves HTTPS only,
//! with a certificate from a CA that exists for the test alone (so a client must be given it), and
//! encrypts at rest with SSE-S3 or SSE-KMS when a request asks: its KMS is SeaweedFS's local one,
//! which makes a key the first time a key id is named.

use std::{path::PathBuf, time::Duration};

use crate::{Error, Result, Toolchain, control_plane::free_port, eventually::Wait, io, process::Supervised};

/// The store's ports: HTTP and gRPC of each part, all on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
struct Ports {
    master: (u16, u16),
    volume: (u16, u16),
    filer: (u16, u16),
    s3: (u16, u16),
}

/// How the store keeps one object at rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtRest {
    /// The server-side encryption the object was written with: `AES256` or `aws:kms`.
    pub algorithm: Option<String>,
    /// The KMS key id, with `aws:kms`.
    pub kms_key_id: Option<String>,
    /// How each chunk of its data is stored: `SSE_S3`, `SSE_KMS`, or `NONE` when in the clear.
    pub chunks: Vec<String>,
}

/// A running (or stopped) SeaweedFS.
pub struct S3Server {
    weed: PathBuf,
    dir: tempfile::TempDir,
    ports: Ports,
    process: Option<Supervised>,
    /// The CA that issued its serving certificate, PEM, when it serves HTTPS.
    pub ca_pem: Option<String>,
    /// The access key id it accepts.
    pub access_key_id: String,
    /// The secret access key it accepts.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

fn component(message: impl Into<String>) -> Error {
    Error::Component {
        component: "S3 store",
        message: message.into(),
    }
}

impl S3Server {
    /// Starts a new store with no bucket. Its ports are free when chosen, but another program
    /// may take one before the store binds it: then it starts again on other ports, up to three
    /// times.
    pub async fn start() -> Result<Self> {
        Self::start_with(false).await
    }

    /// Starts a new store that serves S3 over HTTPS only, as [`start`](Self::start) does.
    pub async fn start_tls() -> Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(tls).await {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    eprintln!(
                        "testenv: the S3 store lost a port to another program; starting it again on others"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(tls: bool) -> Result<Self> {
        let weed = Toolchain::get()?.bin("weed");
        if !weed.is_file() {
            return Err(component(format!(
                "{} is missing; hack/testbin.sh builds it",
                weed.display()
            )));
        }
        let pair = || Ok::<_, Error>((free_port()?, free_port()?));
        let ports = Ports {
            master: pair()?,
            volume: pair()?,
            filer: pair()?,
            s3: pair()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("tusk-s3")
            .tempdir()
            .map_err(io("creating the store's directory"))?;
        let mut server = Self {
            weed,
            dir,
            ports,
            process: None,
            ca_pem: None,
            access_key_id: "tuskbackups".into(),
            secret_access_key: format!("tusk-{:016x}", rand_u64()),
        };
        let config = serde_json::json!({"identities": [{
            "name": "tusk",
            "credentials": [{"accessKey": server.access_key_id, "secretKey": server.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }],
        // SSE-KMS through SeaweedFS's local KMS: a key id named in a request is made on first use.
        "kms": {"default_provider": "local", "providers": {"local": {"type": "local", "enableOnDemandCreate": true}}},
        });
        if tls {
            let ca = crate::pki::Ca::new("tusk-test-s3");
            let serving = ca.serving_cert(
                "tusk-test-s3",
                &["127.0.0.1", "localhost", crate::azure::PROXIED_HOST],
            );
            std::fs::write(server.dir.path().join("tls.crt"), &serving.cert_pem)
                .map_err(io("writing the store's certificate"))?;
            std::fs::write(server.dir.path().join("tls.key"), &serving.key_pem)
                .map_err(io("writing the store's key"))?;
            server.ca_pem = Some(ca.cert_pem());
        }
        std::fs::create_dir_all(server.dir.path().join("data")).map_err(io("creating the data directory"))?;
        std::fs::write(server.dir.path().join("s3.json"), config.to_string())
            .map_err(io("writing the store's identities"))?;
        server.start_again().await?;
        Ok(server)
    }

    /// The S3 endpoint, such as `http://127.0.0.1:34567` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.ports.s3.0)
    }

    /// Starts the store (again) on the same ports with the same data.
    pub async fn start_again(&mut self) -> Result<()> {
        let p = self.ports;
        let d = self.dir.path();
        let mut args = vec![
            "server".to_owned(),
            format!("-dir={}", d.join("data").display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-master.port={}", p.master.0),
            format!("-master.port.grpc={}", p.master.1),
            "-master.volumeSizeLimitMB=256".to_owned(),
            format!("-volume.port={}", p.volume.0),
            format!("-volume.port.grpc={}", p.volume.1),
            "-volume.max=64".to_owned(),
            // SeaweedFS's own guard is 1% of the disk free: below it every volume turns read-only
            // and no volume can grow, so every upload fails with "Not enough data nodes found!"
            // (which is how CI failed with a 250 GB disk short of 2.5 GB). The tests store tens
            // of MiB; an absolute floor keeps the guard without tying it to the disk's size.
            "-volume.minFreeSpace=256MiB".to_owned(),
            "-filer".to_owned(),
            format!("-filer.port={}", p.filer.0),
            format!("-filer.port.grpc={}", p.filer.1),
            format!("-filer.localSocket={}", d.join("filer.sock").display()),
            "-s3".to_owned(),
            format!("-s3.port={}", p.s3.0),
            format!("-s3.port.grpc={}", p.s3.1),
            format!("-s3.localSocket={}", d.join("s3.sock").display()),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            format!("-s3.config={}", d.join("s3.json").display()),
            // As AWS does: a write to a bucket that does not exist fails.
            "-s3.autoCreateBucket=false".to_owned(),
        ];
        if self.ca_pem.is_some() {
            args.push(format!("-s3.cert.file={}", d.join("tls.crt").display()));
            args.push(format!("-s3.key.file={}", d.join("tls.key").display()));
        }
        // SSE-S3 is off until the store has a key to derive its key-encryption key from.
        let sse_key = std::ffi::OsString::from(format!("tusk-test-{}", self.secret_access_key));
        self.process = Some(Supervised::spawn_with_env(
            d,
            "weed",
            &self.weed,
            &args,
            &[("WEED_S3_SSE_KEY", &sse_key)],
        )?);
        let endpoint = self.endpoint();
        // Ready once the S3 gateway answers and the filer lists buckets.
        let ready = Wait::up_to(Duration::from_secs(60))
            .every(Duration::from_millis(200))
            .until("the S3 store to serve", async || {
                let address = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, a)| a);
                let answered = tokio::net::TcpStream::connect(address).await.is_ok();
                if answered && self.shell("s3.bucket.list").is_ok() {
                    crate::Seen::Holds(())
                } else if !self.process.as_ref().is_some_and(Supervised::alive) {
                    crate::Seen::Never("weed exited".to_owned())
                } else {
                    crate::Seen::NotYet("not yet".to_owned())
                }
            })
            .await;
        ready.map_err(|unmet| component(format!("{unmet}\n{}", self.log_tail(30))))
    }

    /// Stops the store; its data stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Runs one `weed shell` command against the store.
    pub fn shell(&self, command: &str) -> Result<String> {
        use std::io::Write;
        let mut child = std::process::Command::new(&self.weed)
            .arg("shell")
            // host:port.grpcPort: the gRPC port is not the default port + 10000 here.
            .arg(format!(
                "-master=127.0.0.1:{}.{}",
                self.ports.master.0, self.ports.master.1
            ))
            .arg(format!(
                "-filer=127.0.0.1:{}.{}",
                self.ports.filer.0, self.ports.filer.1
            ))
            .arg("-connectTimeout=5s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(io("starting weed shell"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io("writing to weed shell"))?;
        let out = child.wait_with_output().map_err(io("running weed shell"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && !text.contains("error") {
            Ok(text)
        } else {
            Err(component(format!("weed shell {command:?}: {text}")))
        }
    }

    /// How the store keeps `key` of `bucket` at rest, from its own metadata (the filer's entry,
    /// read with `weed shell`), not from what any S3 response claims.
    pub fn server_side_encryption(&self, bucket: &str, key: &str) -> Result<AtRest> {
        let out = self.shell(&format!("fs.meta.cat /buckets/{bucket}/{key}"))?;
        let start = out
            .find('{')
            .ok_or_else(|| component(format!("fs.meta.cat {bucket}/{key}: {out}")))?;
        let entry: serde_json::Value = serde_json::Deserializer::from_str(&out[start..])
            .into_iter()
            .next()
            .and_then(|v| v.ok())
            .ok_or_else(|| component(format!("fs.meta.cat {bucket}/{key}: not an entry: {out}")))?;
        let extended = |name: &str| {
            use base64::Engine;
            let value = entry["extended"][name].as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
            String::from_utf8(bytes).ok()
        };
        Ok(AtRest {
            algorithm: extended("X-Amz-Server-Side-Encryption"),
            kms_key_id: extended("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"),
            chunks: entry["chunks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["sseType"].as_str().unwrap_or("NONE").to_owned())
                .collect(),
        })
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let out = self.shell(&format!("s3.bucket.create -name {name}"))?;
        if out.contains(&format!("created bucket {name}")) {
            Ok(())
        } else {
            Err(component(format!("creating bucket {name}: {out}")))
        }
    }

    /// The store's log file (it keeps growing across restarts).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("logs").join("weed.log")
    }

    /// The end of the store's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}

/// What a failed test shows of a store's log at `path`: every line about its disk or its volume
/// servers, wherever it is, then the last `lines` lines, where a source line (`file.go:N`) that
/// logged more than 3 times (SeaweedFS retries a failed volume growth several times a second) is
/// shown once, its last line, with its count.
pub fn log_digest(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    // A glog line: `I1201 22:48:44.639738 volume_growth.go:153 message`.
    let source = |line: &str| line.split_whitespace().nth(2).unwrap_or_default().to_owned();
    const ABOUT_THE_DISK: [&str; 6] = [
        "disk free",
        "disk status",
        "not healthy",
        "dead volume server",
        "unregister",
        "ReadOnly",
    ];
    let mut out = vec![format!(
        "--- {}: lines about its disk and volume servers ---",
        path.display()
    )];
    out.extend(
        all.iter()
            .filter(|l| ABOUT_THE_DISK.iter().any(|p| l.contains(p)))
            .map(|l| (*l).to_owned()),
    );
    let window = &all[all.len().saturating_sub(lines * 10)..];
    let mut count = std::collections::HashMap::<String, usize>::new();
    for line in window {
        *count.entry(source(line)).or_default() += 1;
    }
    let mut tail: Vec<String> = Vec::new();
    let mut shown = std::collections::HashSet::new();
    for line in window.iter().rev() {
        let from = source(line);
        let n = count[&from];
        if n > 3 && !from.is_empty() {
            if shown.insert(from) {
                tail.push(format!("{line}   [×{n} in the last {} lines]", window.len()));
            }
        } else {
            tail.push((*line).to_owned());
        }
        if tail.len() == lines {
            break;
        }
    }
    out.push("--- its last lines, repeats folded ---".to_owned());
    out.extend(tail.into_iter().rev());
    out.join("\n")
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    /// A log full of growth retries still shows the line that says why, and each retry once.
    #[test]
    fn the_digest_keeps_the_cause_and_folds_the_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weed.log");
        let mut log = vec![
            "I1201 22:40:00.000000 disk_location.go:821 dir /d disk free 2.1 GiB < required 2.5 GiB"
                .to_owned(),
            "I1201 22:40:01.000000 master.go:10 started".to_owned(),
        ];
        for i in 0..500 {
            log.push(format!(
                "I1201 22:41:{:02}.000000 node.go:224 topo failed to pick 1 from  0 node candidates",
                i % 60
            ));
            log.push(format!(
                "I1201 22:41:{:02}.000000 volume_growth.go:153 create 7 volume, created 0",
                i % 60
            ));
        }
        log.push("I1201 22:42:00.000000 s3api.go:5 upload failed".to_owned());
        std::fs::write(&path, log.join("\n")).unwrap();
        let digest = super::log_digest(&path, 40);
        assert!(
            digest.contains("disk free 2.1 GiB < required 2.5 GiB"),
            "{digest}"
        );
        assert_eq!(digest.matches("node.go:224").count(), 1, "{digest}");
        assert!(digest.contains("[×200 in the last 400 lines]"), "{digest}");
        assert!(digest.ends_with("upload failed"), "{digest}");
    }
}
