//! The command line of `tusk-operator`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    crd::{self, ConversionWebhook, WebhookEndpoint},
    webhook::{
        server::{self, DEFAULT_CERT_DIR, Server},
        tls::CertFiles,
    },
};

/// Tusk: a PostgreSQL operator for Kubernetes and OpenShift.
#[derive(Debug, Parser)]
#[command(name = "tusk-operator", version, propagate_version = true)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TUSK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator. Today that is the conversion webhook; controllers join it in later
    /// releases.
    Run(WebhookArgs),
    /// Run only the conversion webhook server (HTTPS, POST /convert).
    Webhook(WebhookArgs),
    /// Print every Tusk CRD as YAML, one document per kind, with conversion through the webhook
    /// wherever a kind serves more than one version.
    Crd(CrdArgs),
    /// Rewrite every stored Tusk object at its CRD's storage version, then trim
    /// `status.storedVersions` to that version. Run it after an upgrade changed the storage
    /// version, before a release that stops serving the old one. Uses the kubeconfig or the
    /// in-cluster service account.
    MigrateStorage(MigrateArgs),
}

/// Options of `migrate-storage`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A CRD to migrate, such as `postgresclusters.tusk.dev`; repeat for more. Default: every
    /// Tusk CRD.
    #[arg(long = "crd")]
    pub crds: Vec<String>,
}

/// Options of the conversion webhook server.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:9443", env = "TUSK_WEBHOOK_LISTEN")]
    pub listen: SocketAddr,
    /// Directory with `tls.crt` and `tls.key`; OLM mounts the serving certificate here.
    #[arg(long, default_value = DEFAULT_CERT_DIR, env = "TUSK_WEBHOOK_CERT_DIR")]
    pub cert_dir: PathBuf,
    /// Certificate file, instead of `<cert-dir>/tls.crt`.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key file, instead of `<cert-dir>/tls.key`.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// How often to check the certificate files for a new certificate, such as `2s` or `500ms`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Largest ConversionReview accepted, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl WebhookArgs {
    /// The server configuration these options describe.
    pub fn config(&self) -> server::Config {
        server::Config {
            listen: self.listen,
            cert_files: CertFiles {
                cert: self
                    .tls_cert_file
                    .clone()
                    .unwrap_or_else(|| self.cert_dir.join("tls.crt")),
                key: self
                    .tls_key_file
                    .clone()
                    .unwrap_or_else(|| self.cert_dir.join("tls.key")),
            },
            cert_reload_interval: self.cert_reload_interval,
            max_body_bytes: self.max_body_bytes,
            ..server::Config::default()
        }
    }
}

/// Options of `crd`: where the apiserver finds the conversion webhook.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Name of the Service in front of the webhook.
    #[arg(long, default_value = crd::DEFAULT_SERVICE_NAME)]
    pub service_name: String,
    /// Namespace of that Service.
    #[arg(long, default_value = crd::DEFAULT_NAMESPACE)]
    pub service_namespace: String,
    /// Port of that Service.
    #[arg(long, default_value_t = crd::DEFAULT_SERVICE_PORT)]
    pub service_port: i32,
    /// Call the webhook at this URL instead of through a Service, such as
    /// `https://127.0.0.1:9443/convert`.
    #[arg(long, conflicts_with_all = ["service_name", "service_namespace", "service_port"])]
    pub url: Option<String>,
    /// PEM file with the CA that signed the webhook's certificate, for `caBundle`. Without it the
    /// installer (OLM or a CA injector) fills `caBundle` in.
    #[arg(long)]
    pub ca_bundle_file: Option<PathBuf>,
}

impl CrdArgs {
    /// The webhook these options describe.
    pub fn webhook(&self) -> std::io::Result<ConversionWebhook> {
        let endpoint = match &self.url {
            Some(url) => WebhookEndpoint::Url(url.clone()),
            None => WebhookEndpoint::Service {
                name: self.service_name.clone(),
                namespace: self.service_namespace.clone(),
                port: self.service_port,
            },
        };
        let ca_bundle = self.ca_bundle_file.as_deref().map(std::fs::read).transpose()?;
        Ok(ConversionWebhook { endpoint, ca_bundle })
    }
}

/// Parses `250ms`, `2s` or `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use a number with ms, s or m, such as 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!(
            "{text:?} has no unit Tusk knows; use ms, s or m, such as 2s"
        )),
    }
}

/// Sets up logging to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Crd(args) => {
            print!("{}", crd::to_yaml(&crd::crds(&args.webhook()?)));
            Ok(())
        }
        Command::MigrateStorage(args) => {
            let client = kube::Client::try_default().await?;
            let names = if args.crds.is_empty() {
                crate::api::crds()
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            } else {
                args.crds
            };
            for name in names {
                let m = crate::migrate::migrate(&client, &name).await?;
                println!(
                    "{}: {} objects rewritten at {} ({} deleted meanwhile); storedVersions was {:?}, now [{:?}]",
                    m.crd,
                    m.rewritten,
                    m.storage_version,
                    m.gone,
                    m.stored_versions_before,
                    m.storage_version
                );
            }
            Ok(())
        }
        Command::Run(args) | Command::Webhook(args) => {
            let server = Server::bind(args.config()).await?;
            server.run(shutdown_signal()).await;
            Ok(())
        }
    }
}
