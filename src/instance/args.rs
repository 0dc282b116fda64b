//! The contract between the pod the operator builds and the instance manager that runs in it.
//!
//! The controller fills an [`InstanceSpec`] and puts [`InstanceSpec::to_args`] on the container's
//! command line; the instance manager parses the same struct back with clap. A unit test
//! round-trips every field, so the two sides cannot drift apart. What only the pod knows (its
//! name, namespace and IPs) comes from the Downward API as environment variables, named once in
//! [`PodIdentity::DOWNWARD_API`].

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::facts::{
    cluster::{METRICS_PORT, Names, POSTGRES_PORT, STATUS_PORT, paths},
    operator::env,
};

/// `initdb --encoding` when the cluster names none.
pub const DEFAULT_ENCODING: &str = "UTF8";
/// `initdb --locale` when the cluster names none.
pub const DEFAULT_LOCALE: &str = "C.UTF-8";
/// A replica is ready while its replay lags its receipt by at most this many bytes.
pub const DEFAULT_MAX_LAG_BYTES: u64 = 16 * 1024 * 1024;
/// How long a fast shutdown may take before an immediate one.
pub const DEFAULT_FAST_STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// Options of `tusk-operator instance`.
#[derive(Clone, Debug, Args)]
pub struct InstanceArgs {
    /// What only the pod knows.
    #[command(flatten)]
    pub pod: PodIdentity,
    /// What the operator tells the pod.
    #[command(flatten)]
    pub spec: InstanceSpec,
}

/// The pod's identity, from the Downward API.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct PodIdentity {
    /// The pod's name (the Downward API sets it).
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: String,
    /// The pod's namespace (the Downward API sets it).
    #[arg(long, env = env::POD_NAMESPACE)]
    pub namespace: String,
    /// The pod's IP addresses, comma-separated (the Downward API's `status.podIPs`). PostgreSQL
    /// and the status endpoints listen on them; without any, on every address.
    #[arg(long, env = env::POD_IPS, value_delimiter = ',')]
    pub pod_ips: Vec<IpAddr>,
    /// The pod's uid (the Downward API sets it): the instance reports it, so the operator never
    /// takes what a pod's old containers say for the pod made again under the same name.
    #[arg(long, env = env::POD_UID, default_value = "")]
    pub pod_uid: String,
}

impl PodIdentity {
    /// Each environment variable the pod sets, and the Downward API field it comes from.
    pub const DOWNWARD_API: [(&str, &str); 4] = [
        (env::POD_NAME, "metadata.name"),
        (env::POD_NAMESPACE, "metadata.namespace"),
        (env::POD_IPS, "status.podIPs"),
        (env::POD_UID, "metadata.uid"),
    ];
}

/// What the operator tells the instance manager of one pod.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct InstanceSpec {
    /// The `PostgresCluster` this pod belongs to.
    #[arg(long)]
    pub cluster: String,
    /// The PostgreSQL data directory, on the data volume.
    #[arg(long)]
    pub pgdata: PathBuf,
    /// The directory of the mounted ConfigMap (`postgresql.conf`, `pg_hba.conf`).
    #[arg(long)]
    pub config_dir: PathBuf,
    /// File with the superuser's password (from the mounted superuser Secret).
    #[arg(long)]
    pub superuser_password_file: PathBuf,
    /// The primary's Service, which a new replica copies its data from.
    #[arg(long)]
    pub primary_host: String,
    /// The PostgreSQL port.
    #[arg(long, default_value_t = POSTGRES_PORT)]
    pub postgres_port: u16,
    /// Port of `/healthz` and `/readyz` (plain HTTP).
    #[arg(long, default_value_t = STATUS_PORT)]
    pub status_port: u16,
    /// Port of `/metrics` (HTTPS with the cluster's server certificate; a token that may `get`
    /// `/metrics`).
    #[arg(long, default_value_t = METRICS_PORT)]
    pub metrics_port: u16,
    /// Directory of PostgreSQL's Unix socket, shared only within the pod.
    #[arg(long, default_value = paths::SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// `initdb --encoding` for the first primary (default UTF8).
    #[arg(long)]
    pub initdb_encoding: Option<String>,
    /// `initdb --locale` for the first primary (default C.UTF-8).
    #[arg(long)]
    pub initdb_locale: Option<String>,
    /// `initdb --data-checksums` for the first primary.
    #[arg(long)]
    pub data_checksums: bool,
    /// The WAL directory, on its own volume, when the cluster has one.
    #[arg(long)]
    pub waldir: Option<PathBuf>,
    /// A replica is ready while it streams and has replayed all but this many bytes of the WAL it
    /// received.
    #[arg(long, default_value_t = DEFAULT_MAX_LAG_BYTES)]
    pub max_lag_bytes: u64,
    /// On SIGTERM, how long a fast shutdown may take before an immediate one. Keep it below the
    /// pod's termination grace period.
    #[arg(long, default_value = "45s", value_parser = crate::process::parse_duration)]
    pub fast_stop_timeout: Duration,
    /// The mounted Secret with the keys `archive.json` names (the cluster's backup target).
    #[arg(long)]
    pub backup_target_dir: Option<PathBuf>,
    /// The mounted Secret with the keys `recovery.json` names (the store a new cluster restores
    /// from).
    #[arg(long)]
    pub recovery_source_dir: Option<PathBuf>,
    /// The projected ServiceAccount token (`token`) and the cluster's CA (`ca.crt`) the instance
    /// manager reads and renews the primary's Lease with. Without it, the first pod is the
    /// primary and nothing fences or fails over.
    #[arg(long)]
    pub kube_api_dir: Option<PathBuf>,
    /// The mounted TLS Secret of the cluster (see `facts::cluster::tls`). With it PostgreSQL
    /// serves TLS, and every connection this instance makes over the network verifies the server.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
}

impl InstanceSpec {
    /// The spec of a pod of `cluster` as the operator mounts it, with every default.
    pub fn for_cluster(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            pgdata: paths::PGDATA.into(),
            config_dir: paths::CONFIG_DIR.into(),
            superuser_password_file: paths::SUPERUSER_PASSWORD_FILE.into(),
            primary_host: Names(cluster).rw_service(),
            postgres_port: POSTGRES_PORT,
            status_port: STATUS_PORT,
            metrics_port: METRICS_PORT,
            socket_dir: paths::SOCKET_DIR.into(),
            initdb_encoding: None,
            initdb_locale: None,
            data_checksums: false,
            waldir: None,
            max_lag_bytes: DEFAULT_MAX_LAG_BYTES,
            fast_stop_timeout: DEFAULT_FAST_STOP_TIMEOUT,
            backup_target_dir: None,
            recovery_source_dir: None,
            kube_api_dir: None,
            tls_dir: None,
        }
    }

    /// The command line that parses back into this spec, after the `instance` subcommand.
    /// Options at their default are left out, so a pod template only changes when a value does.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "instance".to_owned(),
            format!("--cluster={}", self.cluster),
            format!("--pgdata={}", self.pgdata.display()),
            format!("--config-dir={}", self.config_dir.display()),
            format!(
                "--superuser-password-file={}",
                self.superuser_password_file.display()
            ),
            format!("--primary-host={}", self.primary_host),
            format!("--postgres-port={}", self.postgres_port),
            format!("--status-port={}", self.status_port),
            format!("--socket-dir={}", self.socket_dir.display()),
        ];
        if self.metrics_port != METRICS_PORT {
            args.push(format!("--metrics-port={}", self.metrics_port));
        }
        if let Some(encoding) = &self.initdb_encoding {
            args.push(format!("--initdb-encoding={encoding}"));
        }
        if let Some(locale) = &self.initdb_locale {
            args.push(format!("--initdb-locale={locale}"));
        }
        if self.data_checksums {
            args.push("--data-checksums".to_owned());
        }
        if let Some(waldir) = &self.waldir {
            args.push(format!("--waldir={}", waldir.display()));
        }
        if self.max_lag_bytes != DEFAULT_MAX_LAG_BYTES {
            args.push(format!("--max-lag-bytes={}", self.max_lag_bytes));
        }
        if self.fast_stop_timeout != DEFAULT_FAST_STOP_TIMEOUT {
            args.push(format!(
                "--fast-stop-timeout={}ms",
                self.fast_stop_timeout.as_millis()
            ));
        }
        if let Some(dir) = &self.backup_target_dir {
            args.push(format!("--backup-target-dir={}", dir.display()));
        }
        if let Some(dir) = &self.recovery_source_dir {
            args.push(format!("--recovery-source-dir={}", dir.display()));
        }
        if let Some(dir) = &self.kube_api_dir {
            args.push(format!("--kube-api-dir={}", dir.display()));
        }
        if let Some(dir) = &self.tls_dir {
            args.push(format!("--tls-dir={}", dir.display()));
        }
        args
    }

    /// `initdb --encoding`.
    pub fn encoding(&self) -> &str {
        self.initdb_encoding.as_deref().unwrap_or(DEFAULT_ENCODING)
    }

    /// `initdb --locale`.
    pub fn locale(&self) -> &str {
        self.initdb_locale.as_deref().unwrap_or(DEFAULT_LOCALE)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Line {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Instance(InstanceSpec),
    }

    fn round_trip(spec: &InstanceSpec) -> InstanceSpec {
        let line = std::iter::once("tusk-operator".to_owned()).chain(spec.to_args());
        let Sub::Instance(parsed) = Line::try_parse_from(line).expect("to_args parses").command;
        parsed
    }

    #[test]
    fn the_defaults_round_trip() {
        let spec = InstanceSpec::for_cluster("db");
        assert_eq!(round_trip(&spec), spec);
        assert_eq!(spec.primary_host, "db-rw");
    }

    #[test]
    fn every_option_round_trips() {
        let spec = InstanceSpec {
            cluster: "other".into(),
            pgdata: "/a".into(),
            config_dir: "/b".into(),
            superuser_password_file: "/c".into(),
            primary_host: "other-rw".into(),
            postgres_port: 6543,
            status_port: 8001,
            metrics_port: 8444,
            socket_dir: "/d".into(),
            initdb_encoding: Some("LATIN1".into()),
            initdb_locale: Some("en_US.UTF-8".into()),
            data_checksums: true,
            waldir: Some("/e".into()),
            max_lag_bytes: 7,
            fast_stop_timeout: Duration::from_millis(1500),
            backup_target_dir: Some("/f".into()),
            recovery_source_dir: Some("/g".into()),
            kube_api_dir: Some("/h".into()),
            tls_dir: Some("/i".into()),
        };
        assert_eq!(round_trip(&spec), spec);
        // Every option of the struct appears on that line: a new field that to_args forgets fails
        // here.
        let line = spec.to_args().join(" ");
        for arg in Line::command()
            .find_subcommand("instance")
            .unwrap()
            .get_arguments()
        {
            let long = arg.get_long().expect("every option is long");
            assert!(line.contains(&format!("--{long}")), "to_args leaves out --{long}");
        }
    }
}
