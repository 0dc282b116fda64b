//! The ConfigMap `<cluster>-config`: `postgresql.conf` and `pg_hba.conf`, and the hash of it that
//! rolls the pods when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{meta, name_of, tls_mode};
/// `archive_timeout` when `spec.backup.archiveTimeout` is not set: at most 5 minutes of writes
/// wait in an unarchived segment.
pub const DEFAULT_ARCHIVE_TIMEOUT: &str = "5min";

use crate::{
    api::postgres_cluster::v1::{PostgresCluster, TlsMode},
    controller::backup_target::{ResolvedRecovery, Secrets, store_config, volumes},
    facts::cluster::{CLIENT_CERTIFICATE_GROUP, Names, PG_HBA_CONF, POSTGRESQL_CONF, REPLICATION_USER},
    instance::backup::{ARCHIVE_CONFIG, RECOVERY_CONFIG},
    instance::conf::conf_value,
};

/// Parameters Tusk sets in the ConfigMap. The CRD refuses them in `spec.postgres.parameters`,
/// together with those the instance manager sets on `postgres`'s command line for its pod
/// (`listen_addresses`, `port`, `unix_socket_directories`) and the files it places
/// (`hba_file`, `config_file`, `data_directory`).
fn managed_parameters() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("password_encryption", "'scram-sha-256'".to_owned()),
        ("wal_level", "'replica'".to_owned()),
        ("hot_standby", "'on'".to_owned()),
        // pg_rewind needs it (or data checksums) to bring a former primary back as a replica.
        ("wal_log_hints", "'on'".to_owned()),
    ])
}

/// The configuration: `postgresql.conf` (Tusk's parameters, then the user's) and `pg_hba.conf`.
pub fn desired_config(cluster: &PostgresCluster, recovery: Option<&ResolvedRecovery>) -> ConfigMap {
    let mut conf = String::from("# Written by Tusk; edit spec.postgres.parameters instead.\n");
    let mut parameters = managed_parameters();
    let mut data = BTreeMap::new();
    // With a backup target, the primary archives every WAL file through the instance manager
    // (which adds `archive_command`); PostgreSQL keeps each file until it is archived.
    let archive = cluster.spec.backup.as_ref().and_then(|backup| {
        let config = store_config(
            &backup.target,
            name_of(cluster),
            Secrets::Mounted {
                ca_volume: volumes::BACKUP_CA,
            },
            "spec.backup.target",
        )
        .ok()?;
        Some((backup, config))
    });
    if let Some((backup, config)) = archive {
        parameters.insert("archive_mode", "'on'".to_owned());
        let timeout = backup
            .archive_timeout
            .as_deref()
            .unwrap_or(DEFAULT_ARCHIVE_TIMEOUT);
        parameters.insert("archive_timeout", conf_value(timeout));
        data.insert(
            ARCHIVE_CONFIG.to_owned(),
            serde_json::to_string_pretty(&config).expect("a store config serializes"),
        );
    }
    if let Some(recovery) = recovery.and_then(|r| r.config().ok()) {
        data.insert(
            RECOVERY_CONFIG.to_owned(),
            serde_json::to_string_pretty(&recovery).expect("a recovery config serializes"),
        );
    }
    for (key, value) in parameters {
        conf.push_str(&format!("{key} = {value}\n"));
    }
    for (key, value) in cluster.spec.postgres.parameters.iter().flatten() {
        conf.push_str(&format!("{key} = {}\n", conf_value(value)));
    }
    data.insert(POSTGRESQL_CONF.to_owned(), conf);
    data.insert(
        PG_HBA_CONF.to_owned(),
        hba(tls_mode(cluster) != TlsMode::Disabled),
    );
    ConfigMap {
        metadata: meta(cluster, Names(name_of(cluster)).config_map()),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// `pg_hba.conf`. Local connections need the password too: the instance manager has it, and the
/// user a process in the pod runs as need not be called postgres (OpenShift assigns any UID).
/// With TLS, only TLS connections come in over the network (`hostssl`; a plaintext connection
/// matches no line and is refused), and replicas stream as [`REPLICATION_USER`], which logs in
/// with its client certificate of the cluster's CA (`cert`), as do the members of
/// [`CLIENT_CERTIFICATE_GROUP`] (users with `spec.clientCertificate`).
pub fn hba(tls: bool) -> String {
    if tls {
        format!(
            "# Written by Tusk.\n\
             local all all scram-sha-256\n\
             hostssl replication {REPLICATION_USER} all cert\n\
             hostssl all +{CLIENT_CERTIFICATE_GROUP} all cert\n\
             hostssl all all all scram-sha-256\n"
        )
    } else {
        "# Written by Tusk. TLS is disabled (spec.tls.mode: Disabled).\n\
         local all all scram-sha-256\n\
         host replication all all scram-sha-256\n\
         host all all all scram-sha-256\n"
            .to_owned()
    }
}

/// A stable hash of the ConfigMap's data (FNV-1a, 64 bits): the same on every operator build, so
/// an operator upgrade alone never rolls the pods.
pub fn config_hash(config: &ConfigMap) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in config
        .data
        .iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != crate::facts::cluster::TLS_PROFILE_FILE)
    {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn the_tls_profile_is_outside_the_hash() {
        let mut config = desired_config(&cluster(spec(json!({}))), None);
        let before = config_hash(&config);
        let data = config.data.get_or_insert_default();
        data.insert(
            crate::facts::cluster::TLS_PROFILE_FILE.to_owned(),
            "{}".to_owned(),
        );
        assert_eq!(config_hash(&config), before);
        let data = config.data.get_or_insert_default();
        data.insert(POSTGRESQL_CONF.to_owned(), "work_mem = '8MB'".to_owned());
        assert_ne!(config_hash(&config), before);
    }

    #[test]
    fn tusks_parameters_then_the_users_quoted() {
        let c = cluster(spec(
            json!({"postgres": {"version": 17, "parameters": {"work_mem": "8MB", "search_path": "it's"}}}),
        ));
        let config = desired_config(&c, None);
        assert_eq!(config.metadata.name.as_deref(), Some("db-config"));
        let conf = &config.data.as_ref().unwrap()[POSTGRESQL_CONF];
        assert!(conf.contains("wal_level = 'replica'\n"), "{conf}");
        assert!(
            conf.ends_with("search_path = 'it''s'\nwork_mem = '8MB'\n"),
            "{conf}"
        );
        let hba = &config.data.as_ref().unwrap()[PG_HBA_CONF];
        assert!(hba.contains("hostssl all all all scram-sha-256"), "{hba}");
        assert!(!hba.contains("\nhost "), "{hba}");
    }

    #[test]
    fn with_tls_only_tls_comes_in_and_replicas_use_their_certificate() {
        let with = desired_config(&cluster(spec(json!({}))), None);
        assert_eq!(
            with.data.as_ref().unwrap()[PG_HBA_CONF],
            "# Written by Tusk.\nlocal all all scram-sha-256\nhostssl replication tusk_replication all cert\n\
             hostssl all +tusk_client_certificate all cert\nhostssl all all all scram-sha-256\n"
        );
        let without = desired_config(&cluster(spec(json!({"tls": {"mode": "Disabled"}}))), None);
        let hba = &without.data.as_ref().unwrap()[PG_HBA_CONF];
        assert!(hba.contains("\nhost all all all scram-sha-256\n"), "{hba}");
        assert!(!hba.contains("hostssl"), "{hba}");
    }

    #[test]
    fn the_hash_is_fixed_across_builds_and_follows_the_data() {
        let plain = desired_config(&cluster(spec(json!({}))), None);
        // Fixed: an operator upgrade that changes nothing in the ConfigMap must not roll pods.
        // (1.1.0 changed it on purpose: `wal_log_hints = 'on'`, which pg_rewind needs, and
        // `pg_hba.conf` for TLS.)
        assert_eq!(config_hash(&plain), "bc060b2d7940d730");
        let tuned = desired_config(
            &cluster(spec(
                json!({"postgres": {"version": 17, "parameters": {"work_mem": "8MB"}}}),
            )),
            None,
        );
        assert_ne!(config_hash(&plain), config_hash(&tuned));
    }
}
