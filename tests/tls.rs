//! TLS for real, on PostgreSQL 15 (Debian's build has OpenSSL): the real operator issues a
//! cluster's certificates on the real control plane, its pods run as local processes, and every
//! claim is checked from outside with real clients (tokio-postgres over rustls, libpq's `psql`,
//! `openssl s_client`):
//! - a plaintext connection is refused; `sslmode=verify-full` with the binding Secret's `ca.crt`
//!   gets in, through the binding's own `uri`; a client that trusts another CA is refused;
//! - a user with `clientCertificate` logs in with the certificate in its binding, and a password
//!   alone is refused;
//! - the replica streams over TLS as the replication role, logged in by its certificate;
//! - a new certificate (the TLS Secret deleted, so the operator issues another from the same CA)
//!   reaches both instances without a restart: the postmasters keep their start time, a session
//!   opened before keeps working, and new connections are served the new certificate;
//! - on PostgreSQL 18, a cluster with `tls.mode: Provided` serves the user's own certificate,
//!   refuses a Secret whose `ca.crt` did not sign it (naming the field), and follows a replaced
//!   Secret without a restart;
//! - with `tls.mode: CertManager` and real cert-manager controllers, a cluster waits for an
//!   issuer that does not exist yet (saying so), then serves what cert-manager issues, and a
//!   renewal (as `cmctl renew` asks for one) without a restart.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ApiResource, PostParams},
    core::{DynamicObject, GroupVersionKind},
};
use serde_json::json;
use support::{
    apiserver::{Operator, api, plane_with_crds, start_operator},
    local_cluster::{LocalCluster, STATUS_PORT, Target, connect_as, superuser},
};
use tusk_testenv::{cert_manager::CertManager, eventually, postgres::Postgres};

const WAIT: Duration = Duration::from_secs(90);

/// `key` of Secret `name`, as text.
async fn secret_text(secrets: &Api<Secret>, name: &str, key: &str) -> Option<String> {
    let data = secrets.get_opt(name).await.ok()??.data?;
    String::from_utf8(data.get(key)?.0.clone()).ok()
}

/// The certificate the server at `address` presents to a TLS client (PEM), read with OpenSSL's
/// own PostgreSQL STARTTLS.
fn served_certificate(address: std::net::IpAddr) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "postgres",
            "-connect",
            &format!("{address}:5432"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + "-----END CERTIFICATE-----".len();
    Some(format!("{}\n", &text[start..end]))
}

/// Creates `PostgresUser` `name` with `spec` and returns its binding Secret's data once it has
/// `key`.
async fn user_binding(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
    key: &str,
) -> std::collections::BTreeMap<String, k8s_openapi::ByteString> {
    let user: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresUser", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api(client, ns, "PostgresUser", "v1")
        .create(&PostParams::default(), &user)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("the binding Secret of {name} with {key}"),
        WAIT,
        async || {
            let data = secrets.get_opt(&format!("{name}-binding")).await.ok()??.data?;
            data.contains_key(key).then_some(data)
        },
    )
    .await
}

/// The operator, started once for this test binary: two operators would share one Lease, and
/// only the leader's `--sql-endpoints` map reaches the clusters.
async fn operator() -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            start_operator(
                plane_with_crds().await,
                "tusk-operator",
                &["--resync-interval=5s".to_owned()],
                "info,kube=warn",
            )
            .await
        })
        .await
}

/// Waits until `<cluster>-tls` of the single-instance cluster `c` carries `cert` and its pod
/// serves it (its volumes synced as the kubelet would), then checks that the postmaster still
/// has its start time `started` and that `target` still gets in with `verify-full`.
async fn served_without_a_restart(
    c: &LocalCluster,
    secrets: &Api<Secret>,
    cert: &str,
    started: &str,
    target: &Target,
) {
    let tls_secret = format!("{}-tls", c.name);
    eventually(
        &format!("{tls_secret} to carry the new certificate"),
        WAIT,
        async || (secret_text(secrets, &tls_secret, "tls.crt").await? == cert).then_some(()),
    )
    .await;
    c.sync_volumes().await;
    eventually(
        &format!("{}-0 to serve the new certificate", c.name),
        WAIT,
        async || (served_certificate(c.ip(0)).as_deref() == Some(cert)).then_some(()),
    )
    .await;
    assert_eq!(
        c.postmaster_start(0).await,
        started,
        "the postmaster did not restart"
    );
    superuser(target, &c.password, Duration::from_secs(10))
        .await
        .expect("verify-full with the new certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_verified_tls_gets_in_replicas_stream_encrypted_and_certificates_renew_without_a_restart() {
    let postgres = Postgres::get(15).unwrap_or_else(|e| panic!("PostgreSQL 15: {e}"));
    let plane = plane_with_crds().await;
    let op = operator().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("tls").await.unwrap();
    // No spec.tls: TLS is on by default.
    let spec = json!({"postgres": {"version": 15}, "instances": 2, "storage": {"data": {"size": "1Gi"}}});
    let mut c = LocalCluster::create(plane, &ns, "db", spec, postgres.clone()).await;
    for ordinal in 0..2 {
        let address = std::net::SocketAddr::new(c.ip(ordinal), STATUS_PORT);
        op.map_instance(&ns, "db", &format!("db-{ordinal}"), address);
    }
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    op.map_cluster(&ns, "db", (c.ip(0), 5432).into());
    c.start(1).await;
    c.wait_ready(1, Duration::from_secs(120)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca = secret_text(&secrets, "db-tls", "ca.crt")
        .await
        .expect("db-tls has ca.crt");
    assert_eq!(
        secret_text(&secrets, "db-ca", "ca.crt").await.as_deref(),
        Some(ca.as_str()),
        "the server certificate of an Operator-mode cluster comes from the cluster's CA"
    );

    // Plaintext is refused, by pg_hba.conf, on the primary and on the replica.
    for ordinal in 0..2 {
        let plain = superuser(
            &Target {
                address: c.ip(ordinal),
                server_name: String::new(),
                ca: None,
            },
            &c.password,
            Duration::from_secs(5),
        )
        .await
        .expect_err("a plaintext connection is refused");
        let message = plain
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("no pg_hba.conf entry") && message.contains("no encryption"),
            "db-{ordinal}: {plain}"
        );
    }

    // An application's binding: verify-full with its ca.crt gets in, through libpq and its uri.
    let binding = user_binding(&client, &ns, "app", json!({"cluster": {"name": "db"}}), "ca.crt").await;
    let entry = |k: &str| String::from_utf8(binding[k].0.clone()).unwrap();
    assert_eq!(entry("ca.crt"), ca);
    assert_eq!(entry("sslmode"), "verify-full");
    let uri = entry("uri");
    assert!(uri.ends_with("/postgres?sslmode=verify-full"), "{uri}");
    assert!(
        entry("jdbc-url").ends_with("?sslmode=verify-full"),
        "{}",
        entry("jdbc-url")
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    // The uri names the -rw Service; here a loopback address stands for it (hostaddr), and libpq
    // checks the certificate against the name in the uri.
    let libpq = format!(
        "{uri}&hostaddr={}&sslrootcert={}",
        c.rw_address(),
        ca_file.display()
    );
    let psql = Command::new(postgres.bin("psql"))
        .args([
            &libpq,
            "-XAtc",
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "psql with the binding's uri: {}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let seen = String::from_utf8_lossy(&psql.stdout).trim().to_owned();
    assert!(seen.starts_with("t|TLSv1."), "{seen}");
    let host = entry("host");
    let rw = |server_name: &str, ca: &str| Target {
        address: c.rw_address(),
        server_name: server_name.to_owned(),
        ca: Some(ca.as_bytes().to_vec()),
    };
    let app = connect_as(
        &rw(&host, &ca),
        "app",
        &entry("password"),
        "postgres",
        Duration::from_secs(5),
    )
    .await
    .expect("verify-full with the binding's ca.crt gets in");
    let ssl: bool = app
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    // A client that trusts another CA is refused before it sends a password.
    let other = tusk::pki::new_authority("elsewhere", "other", k8s_openapi::jiff::Timestamp::now()).unwrap();
    let refused = connect_as(
        &rw(&host, &other.cert),
        "app",
        &entry("password"),
        "postgres",
        Duration::from_secs(5),
    )
    .await
    .expect_err("a client trusting another CA is refused");
    assert!(format!("{refused:?}").contains("UnknownIssuer"), "{refused:?}");
    // So is a name the certificate does not carry.
    let wrong_name = connect_as(
        &rw("db-rw.elsewhere.svc", &ca),
        "app",
        &entry("password"),
        "postgres",
        Duration::from_secs(5),
    )
    .await
    .expect_err("a name the certificate does not carry is refused");
    assert!(
        format!("{wrong_name:?}").contains("NotValidForName"),
        "{wrong_name:?}"
    );

    // A user that asks for a client certificate logs in over the network with it, and only with it.
    let spec = json!({"cluster": {"name": "db"}, "clientCertificate": true});
    let signed = user_binding(&client, &ns, "signer", spec, "tls.key").await;
    let signed_entry = |k: &str| String::from_utf8(signed[k].0.clone()).unwrap();
    assert_eq!(signed_entry("sslcert"), "tls.crt");
    let issued = tusk::pki::inspect("tls.crt", &signed_entry("tls.crt")).unwrap();
    assert_eq!(issued.common_name.as_deref(), Some("signer"));
    assert!(tusk::pki::signed_by(&signed_entry("tls.crt"), &ca));
    let (cert_file, key_file) = (dir.path().join("signer.crt"), dir.path().join("signer.key"));
    std::fs::write(&cert_file, signed_entry("tls.crt")).unwrap();
    std::fs::write(&key_file, signed_entry("tls.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let psql_as = |conninfo: String| {
        Command::new(postgres.bin("psql"))
            .args([&conninfo, "-XAtc", "SELECT current_user"])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap()
    };
    let base = format!(
        "host={host} hostaddr={} port=5432 dbname=postgres user=signer sslmode=verify-full sslrootcert={}",
        c.rw_address(),
        ca_file.display()
    );
    let by_certificate = psql_as(format!(
        "{base} sslcert={} sslkey={}",
        cert_file.display(),
        key_file.display()
    ));
    assert!(
        by_certificate.status.success(),
        "login by client certificate: {}",
        String::from_utf8_lossy(&by_certificate.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&by_certificate.stdout).trim(), "signer");
    let by_password = Command::new(postgres.bin("psql"))
        .args([&base, "-XAtc", "SELECT current_user"])
        .env("PGPASSWORD", signed_entry("password"))
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&by_password.stderr);
    assert!(
        !by_password.status.success() && refused.contains("certificate"),
        "a password alone is refused for signer: {refused}"
    );
    println!(
        "signer logs in by its client certificate; without it: {}",
        refused.trim()
    );

    // The replica streams over TLS as the replication role, by its certificate.
    let primary = c.connect(0).await.unwrap();
    let streams = eventually("the replica streaming over TLS", WAIT, async || {
        let rows = primary
            .query(
                "SELECT r.application_name, r.usename::text, s.ssl, s.client_dn FROM pg_stat_replication r \
                 JOIN pg_stat_ssl s USING (pid)",
                &[],
            )
            .await
            .ok()?;
        let rows: Vec<(String, String, bool, Option<String>)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        (rows.len() == 1).then_some(rows)
    })
    .await;
    assert_eq!(
        streams,
        [(
            "db-1".to_owned(),
            "tusk_replication".to_owned(),
            true,
            Some("/CN=tusk_replication".to_owned())
        )]
    );
    println!("the replica streams as {streams:?}");

    // A new certificate, without a restart.
    let old_cert = secret_text(&secrets, "db-tls", "tls.crt").await.unwrap();
    assert_eq!(served_certificate(c.ip(0)).as_deref(), Some(old_cert.as_str()));
    let started = [c.postmaster_start(0).await, c.postmaster_start(1).await];
    let held = c.connect(0).await.unwrap();
    secrets.delete("db-tls", &Default::default()).await.unwrap();
    let new_cert = eventually("the operator to issue a new certificate", WAIT, async || {
        let cert = secret_text(&secrets, "db-tls", "tls.crt").await?;
        (cert != old_cert).then_some(cert)
    })
    .await;
    assert_eq!(
        secret_text(&secrets, "db-tls", "ca.crt").await.as_deref(),
        Some(ca.as_str()),
        "the same CA issued it"
    );
    // The kubelet's periodic sync of Secret volumes.
    c.sync_volumes().await;
    for ordinal in 0..2 {
        eventually(
            &format!("db-{ordinal} to serve the new certificate"),
            WAIT,
            async || (served_certificate(c.ip(ordinal)).as_deref() == Some(new_cert.as_str())).then_some(()),
        )
        .await;
    }
    assert_eq!(
        [c.postmaster_start(0).await, c.postmaster_start(1).await],
        started,
        "no postmaster restarted"
    );
    held.query_one("SELECT 1", &[])
        .await
        .expect("a session from before keeps working");
    connect_as(
        &c.rw_target().await,
        "app",
        &entry("password"),
        "postgres",
        Duration::from_secs(5),
    )
    .await
    .expect("new connections verify the new certificate with the same CA");
    primary
        .batch_execute("CREATE TABLE after_renewal (id int); INSERT INTO after_renewal VALUES (1)")
        .await
        .unwrap();
    let replica = c.connect(1).await.unwrap();
    eventually(
        "the replica to replay a write after the renewal",
        WAIT,
        async || {
            replica
                .query_one("SELECT count(*) FROM after_renewal", &[])
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    println!("db-0 and db-1 serve the renewed certificate; postmasters started at {started:?} still run");
}

/// A `Provided` Secret: `tls.crt` and `tls.key` for cluster `mine` of `ns`, and `ca.crt`.
fn provided_secret(authority: &tusk::pki::KeyedCert, ca: &str, ns: &str) -> Secret {
    let names = tusk::pki::server_names(ns, "mine", 1, "cluster.local");
    let leaf = tusk::pki::issue(
        authority,
        &tusk::pki::Leaf::Server(names),
        k8s_openapi::jiff::Timestamp::now(),
        k8s_openapi::jiff::SignedDuration::from_hours(24),
    )
    .unwrap();
    serde_json::from_value(json!({
        "metadata": {"name": "mine-certs"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": leaf.cert, "tls.key": leaf.key, "ca.crt": ca},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provided_certificate_is_served_checked_and_followed_on_postgres_18() {
    let postgres = Postgres::get(18).unwrap_or_else(|e| panic!("PostgreSQL 18: {e}"));
    let plane = plane_with_crds().await;
    let op = operator().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("tls-provided").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mine = tusk::pki::new_authority(&ns, "my-own", now).unwrap();
    let other = tusk::pki::new_authority(&ns, "someone-else", now).unwrap();

    // ca.crt names a CA that did not sign tls.crt: refused, naming the field.
    secrets
        .create(&PostParams::default(), &provided_secret(&mine, &other.cert, &ns))
        .await
        .unwrap();
    let spec = json!({
        "postgres": {"version": 18}, "instances": 1, "storage": {"data": {"size": "1Gi"}},
        "tls": {"mode": "Provided", "secretName": "mine-certs"},
    });
    let clusters = api(&client, &ns, "PostgresCluster", "v1");
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "mine"}, "spec": spec,
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &cluster).await.unwrap();
    let degraded = eventually("Degraded InvalidTLSSecret", WAIT, async || {
        let object = clusters.get("mine").await.ok()?;
        let conditions = object.data["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "Degraded" && c["status"] == "True" && c["reason"] == "InvalidTLSSecret")
    })
    .await;
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "spec.tls.secretName: Secret mine-certs: tls.crt is not signed by the certificate in ca.crt"
        ),
        "{message}"
    );

    // The right CA: the pod serves exactly the user's certificate.
    secrets.delete("mine-certs", &Default::default()).await.unwrap();
    let first = provided_secret(&mine, &mine.cert, &ns);
    secrets.create(&PostParams::default(), &first).await.unwrap();
    let first_cert = first.string_data.as_ref().unwrap()["tls.crt"].clone();
    let mut c = LocalCluster::new(plane, &ns, "mine", postgres).await;
    op.map_instance(
        &ns,
        "mine",
        "mine-0",
        std::net::SocketAddr::new(c.ip(0), STATUS_PORT),
    );
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    op.map_cluster(&ns, "mine", (c.ip(0), 5432).into());
    assert_eq!(served_certificate(c.ip(0)).as_deref(), Some(first_cert.as_str()));
    let tls_secret = secret_text(&secrets, "mine-tls", "ca.crt").await;
    assert_eq!(
        tls_secret.as_deref(),
        Some(mine.cert.as_str()),
        "mine-tls carries the user's CA"
    );
    // A client that trusts the user's CA gets in with verify-full.
    let target = Target {
        address: c.ip(0),
        server_name: format!("mine-rw.{ns}.svc"),
        ca: Some(mine.cert.as_bytes().to_vec()),
    };
    superuser(&target, &c.password, Duration::from_secs(10))
        .await
        .expect("verify-full against the user's CA");
    let started = c.postmaster_start(0).await;

    // The user replaces the Secret: the pod follows, without a restart.
    let second = provided_secret(&mine, &mine.cert, &ns);
    let second_cert = second.string_data.as_ref().unwrap()["tls.crt"].clone();
    secrets
        .replace("mine-certs", &PostParams::default(), &second)
        .await
        .unwrap();
    served_without_a_restart(&c, &secrets, &second_cert, &started, &target).await;
    println!(
        "PostgreSQL 18 serves the user's certificate and its replacement, postmaster started at {started}"
    );
}

/// cert-manager's controllers, started once for this test binary.
async fn cert_manager() -> &'static CertManager {
    static CERT_MANAGER: tokio::sync::OnceCell<CertManager> = tokio::sync::OnceCell::const_new();
    CERT_MANAGER
        .get_or_init(|| async {
            CertManager::start(plane_with_crds().await)
                .await
                .unwrap_or_else(|e| panic!("cert-manager: {e}"))
        })
        .await
}

fn certificates(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "certificates"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cert_manager_issues_the_certificate_and_a_renewal_is_served_without_a_restart() {
    let postgres = Postgres::get(15).unwrap_or_else(|e| panic!("PostgreSQL 15: {e}"));
    let plane = plane_with_crds().await;
    let cert_manager = cert_manager().await;
    let op = operator().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("tls-cert-manager").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // The issuer does not exist yet: the cluster waits, and says for what.
    let clusters = api(&client, &ns, "PostgresCluster", "v1");
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "cm"},
        "spec": {
            "postgres": {"version": 15}, "instances": 1, "storage": {"data": {"size": "1Gi"}},
            "tls": {"mode": "CertManager", "issuerRef": {"name": "corp"}},
        },
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &cluster).await.unwrap();
    let waiting = eventually("Degraded CertificateNotIssued", WAIT, async || {
        let object = clusters.get("cm").await.ok()?;
        let conditions = object.data["status"]["conditions"].as_array()?.clone();
        conditions.into_iter().find(|c| {
            c["type"] == "Degraded" && c["status"] == "True" && c["reason"] == "CertificateNotIssued"
        })
    })
    .await;
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "spec.tls.issuerRef: cert-manager has not yet stored Certificate cm-server in Secret cm-server-cert"
        ),
        "{message}"
    );
    let certificate = certificates(&client, &ns).get("cm-server").await.unwrap();
    assert_eq!(
        certificate.data["spec"]["issuerRef"],
        json!({"name": "corp", "kind": "Issuer", "group": "cert-manager.io"})
    );
    let dns_names = certificate.data["spec"]["dnsNames"].as_array().unwrap();
    assert!(
        dns_names.contains(&json!(format!("cm-rw.{ns}.svc"))),
        "{dns_names:?}"
    );
    assert!(
        dns_names.contains(&json!(format!("cm-0.cm-pods.{ns}.svc.cluster.local"))),
        "{dns_names:?}"
    );

    // The user's CA, issued by cert-manager itself, and an Issuer of it.
    let issuer = [
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "corp-ca", "namespace": ns},
            "spec": {
                "isCA": true, "commonName": "corp-ca", "secretName": "corp-ca",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {
                    "name": tusk_testenv::cert_manager::SELF_SIGNED_ISSUER,
                    "kind": "ClusterIssuer", "group": "cert-manager.io",
                },
            },
        }),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "corp", "namespace": ns},
            "spec": {"ca": {"secretName": "corp-ca"}},
        }),
    ]
    .map(|o| o.to_string())
    .join("\n---\n");
    tusk_testenv::olm::apply(plane, &issuer).unwrap();
    let corp_ca = eventually("cert-manager to issue the CA", WAIT, async || {
        secret_text(&secrets, "corp-ca", "tls.crt").await
    })
    .await;
    let first = eventually("cert-manager to issue cm-server", WAIT, async || {
        secret_text(&secrets, "cm-server-cert", "tls.crt").await
    })
    .await;
    let mut c = LocalCluster::new(plane, &ns, "cm", postgres).await;
    op.map_instance(&ns, "cm", "cm-0", std::net::SocketAddr::new(c.ip(0), STATUS_PORT));
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    op.map_cluster(&ns, "cm", (c.ip(0), 5432).into());
    assert_eq!(
        served_certificate(c.ip(0)).as_deref(),
        Some(first.as_str()),
        "{}",
        cert_manager.log_tail(20)
    );
    let binding_ca = secret_text(&secrets, "cm-superuser", "ca.crt").await;
    assert_eq!(
        binding_ca.as_deref(),
        Some(corp_ca.as_str()),
        "the binding hands out the issuer's CA"
    );
    let target = Target {
        address: c.ip(0),
        server_name: format!("cm-rw.{ns}.svc"),
        ca: Some(corp_ca.as_bytes().to_vec()),
    };
    superuser(&target, &c.password, Duration::from_secs(10))
        .await
        .expect("verify-full against the issuer's CA");
    let started = c.postmaster_start(0).await;

    // A renewal, asked for as `cmctl renew` does: the Issuing condition on the Certificate.
    tusk_testenv::cert_manager::renew(&client, &ns, "cm-server")
        .await
        .unwrap();
    let second = eventually("cert-manager to renew cm-server", WAIT, async || {
        secret_text(&secrets, "cm-server-cert", "tls.crt")
            .await
            .filter(|c| *c != first)
    })
    .await;
    served_without_a_restart(&c, &secrets, &second, &started, &target).await;
    println!(
        "cert-manager issued and renewed cm-server; PostgreSQL served both, postmaster started at {started}"
    );
}
