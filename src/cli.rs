//! The command line of `tusk-operator`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    crd::{self, ConversionWebhook, WebhookEndpoint},
    facts::operator::{self, env},
    webhook::{
        server::{self, Server},
        tls::CertFiles,
    },
};

/// Tusk: a PostgreSQL operator for Kubernetes and OpenShift.
#[derive(Debug, Parser)]
#[command(name = operator::NAME, version, propagate_version = true)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = env::LOG_FORMAT)]
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
    /// Run the operator: the controllers and the conversion webhook. Uses the kubeconfig or the
    /// in-cluster service account.
    Run(RunArgs),
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
    /// Copy this binary to another path (what the init container of each PostgreSQL pod runs,
    /// so that any standard PostgreSQL image can run the instance manager).
    CopyBinary(CopyBinaryArgs),
    /// Run the instance manager, PID 1 of each PostgreSQL pod.
    Instance(crate::instance::args::InstanceArgs),
    /// Promote the replica whose data directory is `--pgdata` to primary, and wait until it
    /// accepts writes. Run it in the pod (`kubectl exec`), as the user PostgreSQL runs as.
    Promote(PromoteArgs),
    /// PostgreSQL's `archive_command`: hand WAL file `%f` at `%p` to the instance manager, which
    /// uploads it; exits non-zero when it is not archived, so PostgreSQL keeps it and retries.
    WalArchive(WalArgs),
    /// PostgreSQL's `restore_command`: have the instance manager fetch WAL file `%f` into `%p`;
    /// exits non-zero when the archive has no such file.
    WalRestore(WalArgs),
    /// Take one base backup of a PostgreSQL server into a store, the way the instance manager
    /// does, and print its record and this process's peak memory (`cargo xtask bench-backup`).
    #[command(hide = true)]
    BaseBackup(BaseBackupArgs),
}

/// Options of `base-backup`.
#[derive(Debug, Args)]
pub struct BaseBackupArgs {
    /// The server's host.
    #[arg(long)]
    pub host: String,
    /// Its port.
    #[arg(long)]
    pub port: u16,
    /// The superuser's password.
    #[arg(long, env = "PGPASSWORD")]
    pub password: String,
    /// A file with the store config (JSON).
    #[arg(long)]
    pub store: PathBuf,
    /// The backup's name.
    #[arg(long)]
    pub name: String,
    /// How its tar is compressed, as `spec.backup.compression` says it: `zstd` or `none`.
    #[arg(long, default_value = "zstd", value_parser = compression)]
    pub compression: crate::api::common::BackupCompression,
}

/// A `spec.backup.compression` value, read as the API reads it.
fn compression(value: &str) -> Result<crate::api::common::BackupCompression, String> {
    serde_json::from_value(value.into()).map_err(|_| format!("{value}: allowed values are zstd and none"))
}

/// Options of `wal-archive` and `wal-restore`.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// The instance manager's Unix socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// The WAL file's name (`%f`).
    pub name: String,
    /// Its path, relative to the data directory (`%p`).
    pub path: PathBuf,
}

/// Options of `promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The replica's data directory.
    #[arg(long, default_value = crate::facts::cluster::paths::PGDATA)]
    pub pgdata: PathBuf,
    /// How long to wait for the promotion, such as `60s`.
    #[arg(long, default_value = "60s", value_parser = crate::process::parse_duration)]
    pub timeout: Duration,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The conversion webhook.
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Serve no conversion webhook: for an install whose CRDs each serve one version, where
    /// nothing calls it and no serving certificate is mounted.
    #[arg(long)]
    pub no_webhook: bool,
    /// The image PostgreSQL pods copy the instance manager from: the operator image of the
    /// release that last changed the instance manager, not necessarily this one's.
    #[arg(long, default_value = operator::DEFAULT_INSTANCE_MANAGER_IMAGE, env = env::INSTANCE_MANAGER_IMAGE)]
    pub instance_manager_image: String,
    /// The PostgreSQL image of each major for clusters that name none, `15=<image>,16=<image>`;
    /// the majors it does not name take `--postgres-image`, or else the catalog built into this
    /// binary (config/postgres-images.yaml: full minor versions, never a floating tag).
    #[arg(long, env = env::POSTGRES_IMAGES)]
    pub postgres_images: Option<String>,
    /// The PostgreSQL image of the majors `--postgres-images` does not name; `{major}` becomes
    /// the major version (for example a mirror, `registry.example/postgres:{major}`).
    #[arg(long, env = env::POSTGRES_IMAGE)]
    pub postgres_image: Option<String>,
    /// The user PostgreSQL pods run as (also their group and `fsGroup`): the `postgres` user of
    /// the PostgreSQL image. -1 leaves it to the platform (OpenShift's `restricted-v2` SCC).
    #[arg(long, default_value_t = crate::facts::cluster::DEFAULT_POSTGRES_UID, env = env::POSTGRES_UID, allow_negative_numbers = true)]
    pub postgres_uid: i64,
    /// A file of `namespace/cluster address:port` lines that maps clusters to SQL endpoints on
    /// loopback, for an operator run outside Kubernetes (tests, a workstation). Without it, a
    /// cluster is reached at its `-rw` Service.
    #[arg(long, env = env::SQL_ENDPOINTS)]
    pub sql_endpoints: Option<PathBuf>,
    /// How often every object is reconciled again without any event, such as `5m`.
    #[arg(long, default_value = "5m", value_parser = crate::process::parse_duration)]
    pub resync_interval: Duration,
    /// How long the certificates the operator issues for clusters (server, replication) are
    /// valid, such as `90d`; each is renewed once less than a third of that is left. At least 1m.
    #[arg(long, default_value = "90d", value_parser = certificate_validity)]
    pub certificate_validity: Duration,
    /// Address of `/healthz` and `/readyz` (plain HTTP).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], operator::STATUS_PORT)), env = env::STATUS_LISTEN)]
    pub status_listen: SocketAddr,
    /// Address of `/metrics`: HTTPS with the webhook's certificate (a self-signed one when there
    /// is none), for callers whose token may `get` the URL `/metrics`.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], operator::METRICS_PORT)), env = env::METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// How long the webhook keeps serving after SIGTERM, with `/readyz` failing, so that the
    /// webhook Service's endpoints drop this replica before it stops answering, such as `5s`.
    /// The controllers stop and hand over leadership at once.
    #[arg(long, default_value = "5s", value_parser = crate::process::parse_duration)]
    pub shutdown_delay: Duration,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, default_value = operator::NAMESPACE, env = env::POD_NAMESPACE)]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = operator::NAME)]
    pub leader_election_id: String,
    /// This replica's name in the Lease (the pod's name in a cluster).
    #[arg(long, env = env::POD_NAME)]
    pub identity: Option<String>,
}

/// Options of `copy-binary`.
#[derive(Debug, Args)]
pub struct CopyBinaryArgs {
    /// Where to put the copy (made executable).
    #[arg(long)]
    pub to: PathBuf,
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
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], operator::WEBHOOK_PORT)), env = env::WEBHOOK_LISTEN)]
    pub listen: SocketAddr,
    /// Directory with `tls.crt` and `tls.key`; OLM mounts the serving certificate here.
    #[arg(long, default_value = operator::CERT_DIR, env = env::WEBHOOK_CERT_DIR)]
    pub cert_dir: PathBuf,
    /// Certificate file, instead of `<cert-dir>/tls.crt`.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key file, instead of `<cert-dir>/tls.key`.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// How often to check the certificate files for a new certificate, such as `2s` or `500ms`.
    #[arg(long, default_value = "2s", value_parser = crate::process::parse_duration)]
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
    #[arg(long, default_value = operator::WEBHOOK_SERVICE)]
    pub service_name: String,
    /// Namespace of that Service.
    #[arg(long, default_value = operator::NAMESPACE)]
    pub service_namespace: String,
    /// Port of that Service.
    #[arg(long, default_value_t = operator::WEBHOOK_SERVICE_PORT)]
    pub service_port: u16,
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
                port: i32::from(self.service_port),
            },
        };
        let ca_bundle = self.ca_bundle_file.as_deref().map(std::fs::read).transpose()?;
        Ok(ConversionWebhook { endpoint, ca_bundle })
    }
}

/// Sets up logging to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colors only on a terminal: a container's log is a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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
        Command::CopyBinary(args) => {
            let me = std::env::current_exe()?;
            std::fs::copy(&me, &args.to)
                .map_err(|e| format!("copying {} to {}: {e}", me.display(), args.to.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&args.to, std::fs::Permissions::from_mode(0o755))?;
            Ok(())
        }
        Command::Instance(args) => Ok(crate::instance::run(args).await?),
        Command::Promote(args) => Ok(crate::instance::promote(&args.pgdata, args.timeout).await?),
        Command::WalArchive(args) => {
            Ok(crate::instance::wal_call(crate::backup::api::WAL_ARCHIVE, args).await?)
        }
        Command::WalRestore(args) => {
            Ok(crate::instance::wal_call(crate::backup::api::WAL_RESTORE, args).await?)
        }
        Command::BaseBackup(args) => crate::instance::backup::base_backup_once(args)
            .await
            .map_err(Into::into),
        Command::Run(args) => run(args).await,
        Command::Webhook(args) => {
            let server = Server::bind(args.config()).await?;
            server.run(crate::process::shutdown_signal()).await;
            Ok(())
        }
    }
}

/// The API server is reached through the proxy of the environment only when `NO_PROXY` does not
/// exclude it. kube's `Config::infer` takes `HTTPS_PROXY` for a kubeconfig that names no
/// `proxy-url` and never compares the API server with `NO_PROXY`, so an operator run with the
/// cluster-wide proxy's variables (as OLM sets them) would tunnel to an API server the proxy is
/// told to leave alone. A `proxy-url` of the kubeconfig itself is kept. (In a pod, kube reads no
/// proxy variable for the API server.)
fn apiserver_proxy(config: kube::Config) -> kube::Config {
    apiserver_proxy_with(config, |name| std::env::var(name).ok())
}

fn apiserver_proxy_with(mut config: kube::Config, lookup: impl Fn(&str) -> Option<String>) -> kube::Config {
    let from_environment = ["HTTPS_PROXY", "https_proxy"]
        .into_iter()
        .filter_map(&lookup)
        .find(|v| !v.is_empty());
    let Some((proxy, environment)) = config.proxy_url.as_ref().zip(from_environment) else {
        return config;
    };
    if proxy.to_string().trim_end_matches('/') != environment.trim_end_matches('/') {
        return config;
    }
    let no_proxy = ["NO_PROXY", "no_proxy"]
        .into_iter()
        .filter_map(&lookup)
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    let matcher = hyper_util::client::proxy::matcher::Matcher::builder()
        .https(environment)
        .no(no_proxy)
        .build();
    if matcher.intercept(&config.cluster_url).is_none() {
        config.proxy_url = None;
    }
    config
}

/// `tusk-operator run`: the webhook and the admin endpoints on every replica, the controllers on
/// the leader only. The process exits non-zero when it loses the lease or when the controllers
/// stop for any reason, so the kubelet restarts it and it competes again.
async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::{Arc, atomic::Ordering};

    use crate::controller::leader::{Elector, guarded};

    // Bad flags fail before anything starts.
    let (postgres_images, postgres_image) =
        crate::controller::postgres_cluster::build::BuildConfig::postgres_images_from(
            args.postgres_images.as_deref(),
            args.postgres_image.clone(),
        )?;
    let identity = args
        .identity
        .unwrap_or_else(|| format!("{}-{}", operator::NAME, std::process::id()));
    let kube_config = apiserver_proxy(kube::Config::infer().await?);
    let state = Arc::new(crate::admin::State::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = crate::process::until_stopped;
    let admin = crate::admin::bind(args.status_listen).await.map_err(|e| {
        format!(
            "cannot listen on {} for /healthz and /readyz: {e}",
            args.status_listen
        )
    })?;
    // Reads that every replica makes, leader or not: the TLS profile and metrics callers' tokens.
    let reads = guarded(kube_config.clone(), &identity, None)?;
    let metrics = Server::bind_with(
        server::Config {
            listen: args.metrics_listen,
            ..args.webhook.config()
        },
        metrics_cert(&args.webhook.config().cert_files)?,
        crate::admin::metrics_handler(
            {
                let state = state.clone();
                Arc::new(move || {
                    let text = state.metrics.render();
                    Box::pin(async move { text })
                })
            },
            Arc::new(crate::admin::auth::Authorizer::new(reads.clone())),
        ),
        "metrics",
    )
    .await
    .map_err(|e| format!("/metrics on {}: {e}", args.metrics_listen))?;
    let mut profiled = vec![metrics.tls()];
    // The webhook and the admin endpoints outlive the controllers on SIGTERM by
    // `--shutdown-delay`, unready, so that conversion requests move to another replica first.
    let (stop_serving, serving) = tokio::sync::watch::channel(false);
    // From unready on, the webhook asks its clients to close their connections.
    let (start_draining, draining) = tokio::sync::watch::channel(false);
    let admin = tokio::spawn(crate::admin::serve(
        admin,
        state.clone(),
        until_stopped(serving.clone()),
    ));
    let webhook = if args.no_webhook {
        None
    } else {
        let server = Server::bind(args.webhook.config()).await?;
        if let Some(cert) = server.cert() {
            let _ = state.webhook_cert.set(cert);
        }
        profiled.push(server.tls());
        Some(tokio::spawn(server.run_draining(
            until_stopped(draining),
            until_stopped(serving.clone()),
        )))
    };
    let metrics = tokio::spawn(metrics.run(until_stopped(serving.clone())));
    let profile = tokio::spawn(crate::tls_profile::follow(
        reads.clone(),
        profiled,
        state.tls_profile.clone(),
    ));
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(status = %args.status_listen, webhook = ?webhook.as_ref().map(|_| args.webhook.listen), "serving");

    let elector = Elector::new(
        reads,
        &args.leader_election_namespace,
        &args.leader_election_id,
        &identity,
    );
    // The controllers' client refuses every write once leadership has ended.
    let client = guarded(kube_config, &identity, Some(elector.leadership()))?;
    let config = crate::controller::postgres_cluster::build::BuildConfig {
        instance_manager_image: args.instance_manager_image,
        postgres_images,
        postgres_image,
        postgres_uid: (args.postgres_uid >= 0).then_some(args.postgres_uid),
        proxy: crate::controller::postgres_cluster::build::BuildConfig::proxy_from(|name| {
            std::env::var(name).ok()
        }),
        certificate_validity: k8s_openapi::jiff::SignedDuration::try_from(args.certificate_validity)
            .unwrap_or(crate::pki::DEFAULT_CERT_VALIDITY),
        operator_namespace: args.leader_election_namespace.clone(),
    };
    let signal = crate::process::shutdown_signal();
    tokio::pin!(signal);
    let ended = tokio::select! {
        () = elector.acquire() => {
            let endpoints = match args.sql_endpoints {
                Some(path) => crate::sql::endpoint::Endpoints::Mapped(path),
                None => crate::sql::endpoint::Endpoints::InCluster,
            };
            let mut controllers = tokio::spawn(crate::controller::run(
                client,
                config,
                endpoints,
                args.resync_interval,
                state.clone(),
                until_stopped(stopped.clone()),
            ));
            let ended = tokio::select! {
                () = elector.hold() => Some("lost the leader-election lease".to_owned()),
                () = &mut signal => None,
                finished = &mut controllers => Some(match finished {
                    Ok(()) => "the controllers stopped".to_owned(),
                    Err(e) => format!("the controllers stopped: {e}"),
                }),
            };
            let _ = stop.send(true);
            if !controllers.is_finished() {
                let _ = controllers.await;
            }
            if ended.is_none() {
                elector.release().await;
            }
            ended
        }
        () = &mut signal => {
            let _ = stop.send(true);
            None
        }
    };
    state.ready.store(false, Ordering::Relaxed);
    let _ = start_draining.send(true);
    if ended.is_none() && webhook.is_some() {
        tracing::info!(delay = ?args.shutdown_delay, "unready; serving conversions a while longer");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    let _ = stop_serving.send(true);
    profile.abort();
    let _ = admin.await;
    let _ = metrics.await;
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    match ended {
        Some(why) => Err(format!("{why}; exiting so that a fresh start competes again").into()),
        None => Ok(()),
    }
}

/// The certificate of `/metrics`: the webhook's files when they are there (OLM mounts them), or a
/// self-signed one made now, as controller-runtime does; scrapers authenticate the caller, not
/// the server, in either case.
fn metrics_cert(files: &CertFiles) -> Result<server::ServerCert, Box<dyn std::error::Error>> {
    if files.cert.exists() && files.key.exists() {
        return Ok(server::ServerCert::Files(files.clone()));
    }
    tracing::info!(cert = %files.cert.display(), "no serving certificate there: /metrics serves a self-signed one");
    Ok(server::ServerCert::self_signed(&format!(
        "{}.{}.svc",
        operator::METRICS_SERVICE,
        operator::NAMESPACE
    ))?)
}

/// `--certificate-validity`: a duration of at least a minute.
fn certificate_validity(text: &str) -> Result<Duration, String> {
    let validity = crate::process::parse_duration(text)?;
    if validity < Duration::from_secs(60) {
        return Err(format!(
            "{text:?} is too short: certificates must be valid for at least 1m"
        ));
    }
    Ok(validity)
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    fn config(cluster: &str, proxy: Option<&str>) -> kube::Config {
        let mut config = kube::Config::new(cluster.parse().unwrap());
        config.proxy_url = proxy.map(|p| p.parse().unwrap());
        config
    }

    #[test]
    fn the_environments_proxy_is_left_out_for_an_api_server_no_proxy_excludes() {
        let environment = |no_proxy: &'static str| {
            move |name: &str| match name {
                "HTTPS_PROXY" => Some("http://proxy.example:3128".to_owned()),
                "NO_PROXY" => Some(no_proxy.to_owned()),
                _ => None,
            }
        };
        let proxied = Some("http://proxy.example:3128");
        let kept = |c: kube::Config| c.proxy_url.map(|u| u.to_string());
        // Excluded by address range, or by domain.
        let out = apiserver_proxy_with(
            config("https://127.0.0.1:6443", proxied),
            environment("127.0.0.0/8"),
        );
        assert_eq!(kept(out), None);
        let out = apiserver_proxy_with(
            config("https://api.cluster.local:6443", proxied),
            environment(".cluster.local"),
        );
        assert_eq!(kept(out), None);
        // Not excluded: through the proxy.
        let out = apiserver_proxy_with(
            config("https://api.example:6443", proxied),
            environment("127.0.0.0/8"),
        );
        assert_eq!(kept(out).as_deref(), Some("http://proxy.example:3128/"));
        // A kubeconfig's own proxy-url stays, whatever NO_PROXY says.
        let out = apiserver_proxy_with(
            config("https://127.0.0.1:6443", Some("http://other:8080")),
            environment("127.0.0.0/8"),
        );
        assert_eq!(kept(out).as_deref(), Some("http://other:8080/"));
    }
}
