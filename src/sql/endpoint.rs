//! The one place that says how the operator reaches a cluster's SQL endpoint.
//!
//! In a Kubernetes cluster it is the primary's Service, `<cluster>-rw.<namespace>.svc:5432`.
//! Outside one (Tusk's tests, and `tusk-operator run` on a workstation against local PostgreSQL
//! servers), `--sql-endpoints FILE` maps clusters to addresses instead, and only to loopback
//! addresses: a mapping never sends the operator's superuser password anywhere else.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::facts::cluster::{Names, POSTGRES_PORT, STATUS_PORT};

/// Where a cluster's primary accepts SQL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The name the server's certificate must carry: the host in a cluster; the `-rw` Service's
    /// name when a mapping gives an address.
    pub server_name: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How endpoints are found.
#[derive(Clone, Debug, Default)]
pub enum Endpoints {
    /// The `-rw` Service of each cluster.
    #[default]
    InCluster,
    /// A file of `namespace/cluster address:port` lines, read again at each lookup so that
    /// clusters can be added while the operator runs. Addresses must be loopback.
    Mapped(PathBuf),
}

/// Why no endpoint was found.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The mapping file could not be read.
    #[error("--sql-endpoints {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not `namespace/cluster address:port` with a loopback address.
    #[error("--sql-endpoints {path} line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The file has no line for the cluster.
    #[error("--sql-endpoints {path} maps no address for cluster {namespace}/{cluster}")]
    Unmapped {
        /// The file.
        path: PathBuf,
        /// The cluster's namespace.
        namespace: String,
        /// The cluster.
        cluster: String,
    },
}

fn lookup(path: &Path, text: &str, namespace: &str, cluster: &str) -> Result<Endpoint, EndpointError> {
    let wanted = format!("{namespace}/{cluster}");
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| EndpointError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let (key, address) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| error(format!("{line:?} is not `namespace/cluster address:port`")))?;
        let address: SocketAddr = address.trim().parse().map_err(|_| {
            error(format!(
                "{:?} is not an address:port such as 127.0.0.1:5432",
                address.trim()
            ))
        })?;
        if !address.ip().is_loopback() {
            return Err(error(format!(
                "{address} is not a loopback address; only 127.0.0.0/8 and ::1 are allowed"
            )));
        }
        if key == wanted {
            return Ok(Endpoint {
                host: address.ip().to_string(),
                port: address.port(),
                server_name: Names(cluster).rw_host(namespace),
            });
        }
    }
    Err(EndpointError::Unmapped {
        path: path.to_path_buf(),
        namespace: namespace.to_owned(),
        cluster: cluster.to_owned(),
    })
}

impl Endpoints {
    /// Where the primary of `namespace`/`cluster` accepts SQL.
    pub fn endpoint(&self, namespace: &str, cluster: &str) -> Result<Endpoint, EndpointError> {
        match self {
            Self::InCluster => Ok(Endpoint {
                host: Names(cluster).rw_host(namespace),
                port: POSTGRES_PORT,
                server_name: Names(cluster).rw_host(namespace),
            }),
            Self::Mapped(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| EndpointError::Read {
                    path: path.clone(),
                    source,
                })?;
                lookup(path, &text, namespace, cluster)
            }
        }
    }

    /// Where the instance manager of pod `pod` of `namespace`/`cluster` serves its status port:
    /// in a cluster, the pod's name in the headless `-pods` Service; in a mapping, the line
    /// `namespace/cluster/pod address:port`.
    pub fn instance(&self, namespace: &str, cluster: &str, pod: &str) -> Result<Endpoint, EndpointError> {
        match self {
            Self::InCluster => {
                let host = format!("{pod}.{}.{namespace}.svc", Names(cluster).pods_service());
                Ok(Endpoint {
                    server_name: host.clone(),
                    host,
                    port: STATUS_PORT,
                })
            }
            Self::Mapped(_) => self.endpoint(namespace, &format!("{cluster}/{pod}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_cluster_it_is_the_rw_service() {
        let e = Endpoints::InCluster.endpoint("shop", "db").unwrap();
        assert_eq!(e.to_string(), "db-rw.shop.svc:5432");
    }

    #[test]
    fn an_instance_is_its_pod_in_the_headless_service_or_its_own_line() {
        let e = Endpoints::InCluster.instance("shop", "db", "db-1").unwrap();
        assert_eq!(e.to_string(), "db-1.db-pods.shop.svc:8000");
        let text = "shop/db 127.0.0.1:6001\nshop/db/db-1 127.0.0.2:8000\n";
        assert_eq!(
            lookup(Path::new("map"), text, "shop", "db/db-1")
                .unwrap()
                .to_string(),
            "127.0.0.2:8000"
        );
    }

    #[test]
    fn a_mapping_names_loopback_addresses_only() {
        let path = Path::new("map");
        let text = "# tests\nshop/db 127.0.0.1:6001\nother/db [::1]:6002\n";
        assert_eq!(
            lookup(path, text, "shop", "db").unwrap().to_string(),
            "127.0.0.1:6001"
        );
        assert_eq!(lookup(path, text, "other", "db").unwrap().host, "::1");
        let e = lookup(path, text, "shop", "nope").unwrap_err().to_string();
        assert_eq!(e, "--sql-endpoints map maps no address for cluster shop/nope");
        let e = lookup(path, "shop/db 10.0.0.1:5432\n", "shop", "db")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--sql-endpoints map line 1: 10.0.0.1:5432 is not a loopback address; only 127.0.0.0/8 and ::1 are allowed"
        );
        let e = lookup(path, "shop/db db-rw:5432\n", "shop", "db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an address:port"), "{e}");
    }
}
