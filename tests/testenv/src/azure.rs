//! A real Azure Blob store on loopback: Azurite, Microsoft's Azure Storage emulator (installed by
//! `hack/testbin.sh` from npm), serving the Blob API over HTTPS with a certificate from a CA that
//! exists for the test alone, and one storage account with a key of its own. Telemetry is off:
//! it never dials out.
//!
//! Containers are made with Microsoft's own SDK (`@azure/storage-blob`, installed beside it), as a
//! user would make them; Tusk never makes one.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{Error, Result, Toolchain, control_plane::free_port, eventually::Wait, io, process::Supervised};

/// A host name that no resolver knows: only a proxy that routes it reaches a store by it. Each
/// store here has it in its certificate.
pub const PROXIED_HOST: &str = "store.proxied.test";

fn component(message: impl Into<String>) -> Error {
    Error::Component {
        component: "Azure Blob store",
        message: message.into(),
    }
}

/// A running Azurite.
pub struct AzureServer {
    dir: tempfile::TempDir,
    port: u16,
    process: Supervised,
    node_modules: PathBuf,
    /// The storage account.
    pub account: String,
    /// The account's shared key (base64).
    pub key: String,
    /// The CA that issued its serving certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for AzureServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureServer")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl AzureServer {
    /// Starts a store with one account and no container.
    pub async fn start() -> Result<Self> {
        let program = Toolchain::get()?.bin("azurite-blob");
        let main = std::fs::canonicalize(&program)
            .map_err(|e| component(format!("{}: {e}; hack/testbin.sh installs it", program.display())))?;
        let node_modules = main
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "node_modules"))
            .ok_or_else(|| component(format!("{} is not below a node_modules", main.display())))?
            .to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("tusk-azure")
            .tempdir()
            .map_err(io("creating the store's directory"))?;
        let ca = crate::pki::Ca::new("tusk-test-azure");
        let serving = ca.serving_cert("azurite", &["127.0.0.1", "localhost", PROXIED_HOST]);
        let d = dir.path();
        std::fs::write(d.join("tls.crt"), &serving.cert_pem).map_err(io("writing the certificate"))?;
        std::fs::write(d.join("tls.key"), &serving.key_pem).map_err(io("writing the key"))?;
        std::fs::create_dir_all(d.join("data")).map_err(io("creating the data directory"))?;
        let key = {
            use base64::Engine;
            let bytes: Vec<u8> = (0..4).flat_map(|_| crate::s3::rand_u64().to_le_bytes()).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let account = "tuskbackups".to_owned();
        let port = free_port()?;
        let args = vec![
            "--blobHost=127.0.0.1".to_owned(),
            format!("--blobPort={port}"),
            format!("--location={}", d.join("data").display()),
            format!("--cert={}", d.join("tls.crt").display()),
            format!("--key={}", d.join("tls.key").display()),
            // The account is the first segment of the path, whatever host name a client used.
            "--disableProductStyleUrl".to_owned(),
            "--disableTelemetry".to_owned(),
            // The SDK that makes containers speaks a newer API version than this Azurite knows
            // (object_store's is older); the calls it makes are the same in both.
            "--skipApiVersionCheck".to_owned(),
        ];
        let accounts = std::ffi::OsString::from(format!("{account}:{key}"));
        let process =
            Supervised::spawn_with_env(d, "azurite", &program, &args, &[("AZURITE_ACCOUNTS", &accounts)])?;
        let server = Self {
            dir,
            port,
            process,
            node_modules,
            account,
            key,
            ca_pem: ca.cert_pem(),
        };
        let ready = Wait::up_to(Duration::from_secs(60))
            .every(Duration::from_millis(200))
            .until("Azurite to serve", async || {
                if tokio::net::TcpStream::connect(server.address()).await.is_ok() {
                    crate::Seen::Holds(())
                } else if !server.process.alive() {
                    crate::Seen::Never("azurite exited".to_owned())
                } else {
                    crate::Seen::NotYet("not yet".to_owned())
                }
            })
            .await;
        ready.map_err(|unmet| component(format!("{unmet}\n{}", server.process.log_tail(30))))?;
        Ok(server)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The account's blob endpoint, such as `https://127.0.0.1:34567/tuskbackups`.
    pub fn endpoint(&self) -> String {
        self.endpoint_at("127.0.0.1")
    }

    /// The account's blob endpoint with `host` as the host name.
    pub fn endpoint_at(&self, host: &str) -> String {
        format!("https://{host}:{}/{}", self.port, self.account)
    }

    /// Creates a container with the Azure SDK.
    pub fn create_container(&self, name: &str) -> Result<()> {
        let script = r#"
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
const [endpoint, account, key, container] = process.argv.slice(1);
new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key))
  .getContainerClient(container)
  .create()
  .then(() => console.log("created " + container));
"#;
        let out = self.node(script, &[name])?;
        if out.contains(&format!("created {name}")) {
            Ok(())
        } else {
            Err(component(format!("creating container {name}: {out}")))
        }
    }

    /// An account SAS token for the Blob service (read, write, delete, list, add, create on
    /// services, containers and objects, HTTPS only, valid for an hour), signed by the Azure SDK
    /// with the account key, as `az storage account generate-sas` makes one.
    pub fn sas_token(&self) -> Result<String> {
        let script = r#"
const s = require("@azure/storage-blob");
const [endpoint, account, key] = process.argv.slice(1);
const sas = s.generateAccountSASQueryParameters({
  expiresOn: new Date(Date.now() + 3600 * 1000),
  permissions: s.AccountSASPermissions.parse("rwdlac"),
  resourceTypes: s.AccountSASResourceTypes.parse("sco").toString(),
  services: s.AccountSASServices.parse("b").toString(),
  protocol: s.SASProtocol.Https,
}, new s.StorageSharedKeyCredential(account, key));
console.log("sas " + sas.toString());
"#;
        let out = self.node(script, &[])?;
        out.lines()
            .find_map(|l| l.strip_prefix("sas "))
            .map(str::to_owned)
            .ok_or_else(|| component(format!("making a SAS token: {out}")))
    }

    /// Runs `script` with Node and the SDK, trusting the store's CA; its arguments are the
    /// endpoint, the account, its key, then `args`. Returns what it printed.
    fn node(&self, script: &str, args: &[&str]) -> Result<String> {
        let ca = self.dir.path().join("ca.crt");
        std::fs::write(&ca, &self.ca_pem).map_err(io("writing the CA"))?;
        let out = std::process::Command::new("node")
            .arg("-e")
            .arg(format!("process.on('unhandledRejection', (e) => {{ console.error(e.message); process.exit(1); }});\n{script}"))
            .args([self.endpoint().as_str(), &self.account, &self.key])
            .args(args)
            .env("NODE_PATH", &self.node_modules)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .output()
            .map_err(io("running node"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(component(text))
        }
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
