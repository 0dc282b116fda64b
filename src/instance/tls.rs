//! TLS in a pod: the cluster's TLS Secret, mounted at `--tls-dir`, copied into a directory of the
//! instance manager's own with mode 0600 (PostgreSQL and libpq refuse a key others can read, and
//! a Secret's files belong to whoever the kubelet says), and followed: when the operator renews a
//! certificate, the kubelet replaces the mounted files, [`Tls::sync`] copies them, and PostgreSQL
//! reloads its configuration, which loads the new certificate without a restart. Clients
//! connected before keep their session; new ones get the new certificate.
//!
//! Every connection an instance makes over the network verifies the server (`verify-full`) with
//! the CA in the Secret: a replica to the primary as [`REPLICATION_USER`] with its client
//! certificate, `pg_rewind` and the instance's checks of the primary as the superuser, and a
//! base backup of the pod itself as the replication role.

use std::path::{Path, PathBuf};

use super::{Error, io};
use crate::facts::cluster::{Names, REPLICATION_USER, tls};

/// The cluster's TLS files, as mounted and as this instance's private copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    mounted: PathBuf,
    private: PathBuf,
}

/// Who a network connection logs in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// The replication role, with its client certificate.
    Replication,
    /// The superuser, with the password (given separately).
    Superuser,
}

impl Tls {
    /// The files mounted at `mounted`, copied below `run_dir` (the pod's own emptyDir).
    pub fn new(mounted: &Path, run_dir: &Path) -> Self {
        Self {
            mounted: mounted.to_path_buf(),
            private: run_dir.join("tusk-tls"),
        }
    }

    /// The private copy of `key`.
    pub fn file(&self, key: &str) -> PathBuf {
        self.private.join(key)
    }

    /// Copies every mounted file whose contents differ from the copy; true when one did. A file
    /// missing from the mount is an error: the operator writes all of them.
    pub fn sync(&self) -> Result<bool, Error> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&self.private)
            .map_err(io(format!("creating {}", self.private.display())))?;
        let mut changed = false;
        for key in tls::KEYS {
            let from = self.mounted.join(key);
            let wanted = std::fs::read(&from).map_err(|e| {
                Error::Config(format!(
                    "{}: {e}; the cluster's TLS Secret must have {key}",
                    from.display()
                ))
            })?;
            let to = self.file(key);
            if std::fs::read(&to).ok().as_deref() == Some(wanted.as_slice()) {
                continue;
            }
            // Written beside, then renamed: PostgreSQL never reads half a key.
            let tmp = self.private.join(format!(".{key}.new"));
            {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(format!("writing {}", tmp.display())))?;
                file.write_all(&wanted)
                    .map_err(io(format!("writing {}", tmp.display())))?;
            }
            std::fs::rename(&tmp, &to).map_err(io(format!("replacing {}", to.display())))?;
            changed = true;
        }
        Ok(changed)
    }

    /// The `postgresql.conf` lines that serve TLS with the copies; the client CA lets the
    /// replication role (and any role `pg_hba.conf` sends to `cert`) log in by certificate.
    pub fn server_conf(&self) -> String {
        let quoted = |key: &str| super::conf::conf_value(&self.file(key).display().to_string());
        format!(
            "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\nssl_ca_file = {}\n",
            quoted(tls::SERVER_CERT),
            quoted(tls::SERVER_KEY),
            quoted(tls::CLIENT_CA)
        )
    }

    /// The libpq parameters of a verified connection logging in as `login`.
    pub fn client_params(&self, login: Login) -> Vec<(&'static str, String)> {
        let file = |key: &str| self.file(key).display().to_string();
        let mut params = vec![
            ("sslmode", "verify-full".to_owned()),
            ("sslrootcert", file(tls::CA)),
        ];
        if login == Login::Replication {
            params.push(("sslcert", file(tls::REPLICATION_CERT)));
            params.push(("sslkey", file(tls::REPLICATION_KEY)));
        }
        params
    }

    /// The CA the server certificate is verified with, PEM.
    pub fn server_ca(&self) -> Result<Vec<u8>, Error> {
        let path = self.file(tls::CA);
        std::fs::read(&path).map_err(io(format!("reading {}", path.display())))
    }
}

/// The user a network connection logs in as, with TLS or without.
pub fn user(tls: Option<&Tls>, login: Login) -> &'static str {
    match (tls, login) {
        (Some(_), Login::Replication) => REPLICATION_USER,
        _ => crate::facts::cluster::SUPERUSER,
    }
}

/// The name the primary's certificate is checked against: `--primary-host` when it is a name, the
/// cluster's `-rw` Service when it is an address.
pub fn primary_server_name(cluster: &str) -> String {
    Names(cluster).rw_service()
}

/// The name the pod's own certificate is checked against: its name in the headless Service.
pub fn own_server_name(cluster: &str, pod: &str) -> String {
    format!("{pod}.{}", Names(cluster).pods_service())
}

/// A libpq connection string of `params`, each value quoted.
pub fn conninfo(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where and how to reach `host` (named `server_name` in its certificate) as `login`: the libpq
/// parameters, TLS's included when `tls` is given.
pub fn connection(
    tls: Option<&Tls>,
    host: &str,
    server_name: &str,
    port: u16,
    login: Login,
) -> Vec<(&'static str, String)> {
    let mut params = match tls {
        Some(_) => crate::sql::tls::libpq_target(host, server_name),
        None => vec![("host", host.to_owned())],
    };
    params.push(("port", port.to_string()));
    params.push(("user", user(tls, login).to_owned()));
    if let Some(tls) = tls {
        params.extend(tls.client_params(login));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_copied_private_and_only_when_they_change() {
        use std::os::unix::fs::PermissionsExt;
        let mounted = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        for key in tls::KEYS {
            std::fs::write(mounted.path().join(key), format!("{key} 1")).unwrap();
        }
        let tls = Tls::new(mounted.path(), run.path());
        assert!(tls.sync().unwrap());
        assert!(!tls.sync().unwrap());
        let key = tls.file(tls::SERVER_KEY);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "tls.key 1");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(mounted.path().join(tls::SERVER_CERT), "tls.crt 2").unwrap();
        assert!(tls.sync().unwrap());
        assert_eq!(
            std::fs::read_to_string(tls.file(tls::SERVER_CERT)).unwrap(),
            "tls.crt 2"
        );
        std::fs::remove_file(mounted.path().join(tls::CA)).unwrap();
        let e = tls.sync().unwrap_err().to_string();
        assert!(e.contains("the cluster's TLS Secret must have ca.crt"), "{e}");
    }

    #[test]
    fn replicas_verify_the_primary_and_log_in_by_certificate() {
        let tls = Tls::new(Path::new("/etc/tusk/tls"), Path::new("/run"));
        let params = connection(Some(&tls), "127.0.10.250", "db-rw", 5432, Login::Replication);
        assert_eq!(
            conninfo(&params),
            "host='db-rw' hostaddr='127.0.10.250' port='5432' user='tusk_replication' sslmode='verify-full' \
             sslrootcert='/run/tusk-tls/ca.crt' sslcert='/run/tusk-tls/replication.crt' \
             sslkey='/run/tusk-tls/replication.key'"
        );
        let params = connection(Some(&tls), "db-rw", "db-rw", 5432, Login::Superuser);
        assert_eq!(
            conninfo(&params),
            "host='db-rw' port='5432' user='postgres' sslmode='verify-full' sslrootcert='/run/tusk-tls/ca.crt'"
        );
        let plain = connection(None, "db-rw", "db-rw", 5432, Login::Replication);
        assert_eq!(conninfo(&plain), "host='db-rw' port='5432' user='postgres'");
        assert!(
            tls.server_conf()
                .starts_with("ssl = on\nssl_cert_file = '/run/tusk-tls/tls.crt'\n")
        );
    }
}
