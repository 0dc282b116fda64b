//! `PostgresUser` and `PostgresDatabase` for real: the real operator converges roles and
//! databases over SQL on a cluster whose primary runs locally from the operator-built pod spec
//! (PostgreSQL 15 from Debian, PostgreSQL 18 from registry binaries). The operator reaches it
//! through `--sql-endpoints`, on loopback only.
//!
//! Each scenario checks, against PostgreSQL itself: creation with attributes, membership,
//! privileges, owner and extensions; the servicebinding.io Secret and a login with it; drift
//! repair; password rotation from a generated and a user-provided Secret; a hostile role name;
//! no SQL writes in steady state; and the reclaim policies on delete.

mod support;

use std::time::Duration;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    core::DynamicObject,
};
use serde_json::{Value, json};
use support::{
    apiserver::{Operator, api, plane_with_crds, start_operator},
    local_cluster::LocalCluster,
};
use tusk_testenv::{eventually, postgres::Postgres};

/// The operator's resync interval here: short, so that drift is repaired quickly.
const RESYNC_SECONDS: u64 = 3;
const WAIT: Duration = Duration::from_secs(60);

async fn operator(plane: &tusk_testenv::ControlPlane) -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            let args = [format!("--resync-interval={RESYNC_SECONDS}s")];
            start_operator(plane, "tusk-operator", &args, "info,kube=warn").await
        })
        .await
}

/// A one-instance cluster running PostgreSQL `major` locally, mapped for the operator.
async fn cluster(prefix: &str, major: u32) -> (LocalCluster, &'static Operator, Client) {
    cluster_with(prefix, major, json!(null)).await
}

/// Like [`cluster`], with `spec.bootstrap` when it is not null.
async fn cluster_with(
    prefix: &str,
    major: u32,
    bootstrap: Value,
) -> (LocalCluster, &'static Operator, Client) {
    let postgres = Postgres::get(major).unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
    let plane = plane_with_crds().await;
    let op = operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace(prefix).await.unwrap();
    let mut spec =
        json!({"postgres": {"version": major}, "instances": 1, "storage": {"data": {"size": "1Gi"}}});
    if !bootstrap.is_null() {
        spec["bootstrap"] = bootstrap;
    }
    let mut c = LocalCluster::create(plane, &ns, "db", spec, postgres).await;
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    op.map_cluster(&ns, "db", (c.ip(0), 5432).into());
    (c, op, client)
}

async fn create(client: &Client, ns: &str, kind: &str, name: &str, spec: Value) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api(client, ns, kind, "v1")
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// Waits until the object's `Ready` condition is True for its generation; returns its status.
async fn ready(client: &Client, ns: &str, kind: &str, name: &str) -> Value {
    let objects = api(client, ns, kind, "v1");
    eventually(&format!("{kind} {name} to be Ready"), WAIT, async || {
        let o = objects.get(name).await.map_err(|e| e.to_string())?;
        let status = o.data.get("status").cloned().unwrap_or_default();
        let ready = &status["conditions"][0];
        if ready["status"] == "True" && status["observedGeneration"] == json!(o.metadata.generation) {
            Ok(status)
        } else {
            Err(format!("status {status}"))
        }
    })
    .await
}

/// A client for `user`/`password` on `database` of pod 0, or PostgreSQL's refusal.
async fn login(
    c: &LocalCluster,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, String> {
    support::local_cluster::connect_as(
        &c.target(0).await,
        user,
        password,
        database,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
    })
}

async fn secret_data(client: &Client, ns: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// One row of the role as PostgreSQL has it: login, createdb, connection limit (-2 when its
/// validity is not 2030-01-01T00:00:00Z), groups, and explicit privileges on `reports`.
async fn role_row(su: &tokio_postgres::Client, role: &str) -> (bool, bool, i32, Vec<String>, Vec<String>) {
    let row = su
        .query_one(
            "SELECT r.rolcanlogin, r.rolcreatedb,
                    CASE WHEN r.rolvaliduntil = '2030-01-01T00:00:00Z' THEN r.rolconnlimit ELSE -2 END,
                    ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid ORDER BY 1),
                    ARRAY(SELECT x.privilege_type FROM pg_database d, aclexplode(d.datacl) x
                          WHERE d.datname = 'reports' AND x.grantee = r.oid ORDER BY 1)
             FROM pg_roles r WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

/// SQL statements that changed something for objects of `namespace`, from the operator's log
/// (each write is logged with the object's namespace; its counter in `/metrics` is shared by
/// every test of this binary).
fn sql_writes(op: &Operator, namespace: &str) -> usize {
    let log = std::fs::read_to_string(&op.log).unwrap();
    let object = format!("namespace={namespace} ");
    log.lines()
        .filter(|l| l.contains(&object) && l.contains(": sql statement="))
        .count()
}

async fn users_and_databases(major: u32) {
    let (c, op, client) = cluster(&format!("sql{major}"), major).await;
    let ns = c.namespace.clone();
    let su = c.connect(0).await.unwrap();
    su.batch_execute("CREATE ROLE readers NOLOGIN; CREATE TABLE t (i int)")
        .await
        .unwrap();

    // A user with every attribute, whose privileges name a database that comes later.
    create(
        &client,
        &ns,
        "PostgresUser",
        "app",
        json!({
            "cluster": {"name": "db"},
            "connectionLimit": 5,
            "validUntil": "2030-01-01T00:00:00Z",
            "memberOf": ["readers"],
            "privileges": [{"database": "reports", "privileges": ["CONNECT", "CREATE"]}],
        }),
    )
    .await;
    // The database the privileges are on comes after the user: the GRANT waits for it.
    su.batch_execute("CREATE DATABASE reports").await.unwrap();
    create(
        &client,
        &ns,
        "PostgresDatabase",
        "shop",
        json!({
            "cluster": {"name": "db"},
            "owner": "app",
            "extensions": [{"name": "pg_trgm"}, {"name": "hstore", "schema": "ext"}],
        }),
    )
    .await;
    let status = ready(&client, &ns, "PostgresUser", "app").await;
    ready(&client, &ns, "PostgresDatabase", "shop").await;
    assert_eq!(status["roleName"], "app");
    assert_eq!(status["binding"]["name"], "app-binding");
    assert_eq!(
        role_row(&su, "app").await,
        (
            true,
            false,
            5,
            vec!["readers".into()],
            vec!["CONNECT".into(), "CREATE".into()]
        )
    );
    let owner: String = su
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "app");

    // The binding Secret follows servicebinding.io and logs in.
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("app-binding")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("servicebinding.io/postgresql"));
    let binding = secret_data(&client, &ns, "app-binding").await;
    for (key, value) in [
        ("type", "postgresql"),
        ("provider", "tusk"),
        ("host", &format!("db-rw.{ns}.svc")),
        ("port", "5432"),
        ("database", "reports"),
        ("username", "app"),
    ] {
        assert_eq!(binding[key], value, "binding {key}");
    }
    // With TLS (PostgreSQL 15 here) the URLs ask for verify-full and the CA comes along.
    let query = if binding.contains_key("ca.crt") {
        "?sslmode=verify-full"
    } else {
        ""
    };
    assert_eq!(binding.contains_key("ca.crt"), c.server_ca().await.is_some());
    assert_eq!(
        binding["uri"],
        format!(
            "postgresql://app:{}@db-rw.{ns}.svc:5432/reports{query}",
            binding["password"]
        )
    );
    assert_eq!(
        binding["jdbc-url"],
        format!("jdbc:postgresql://db-rw.{ns}.svc:5432/reports{query}")
    );
    let app = login(&c, "app", &binding["password"], "shop").await.unwrap();
    let extensions: Vec<(String, String)> = app
        .query("SELECT e.extname::text, n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        extensions.contains(&("pg_trgm".into(), "public".into())),
        "{extensions:?}"
    );
    assert!(
        extensions.contains(&("hstore".into(), "ext".into())),
        "{extensions:?}"
    );
    let cluster_binding = secret_data(&client, &ns, "db-superuser").await;
    assert_eq!(
        cluster_binding["uri"],
        format!(
            "postgresql://postgres:{}@db-rw.{ns}.svc:5432/postgres{query}",
            c.password
        )
    );
    assert_eq!(cluster_binding.get("ca.crt"), binding.get("ca.crt"));

    // Steady state: resyncs read the roles in SQL and write nothing; they send the apiserver
    // nothing at all (the cluster's, the users' and the databases' reconciles alike).
    let before = sql_writes(op, &ns);
    assert!(
        before > 0,
        "the writes that made the role and database are in the log"
    );
    let plane = plane_with_crds().await;
    let mark = plane.audit_events().len();
    tokio::time::sleep(Duration::from_secs(3 * RESYNC_SECONDS)).await;
    assert_eq!(sql_writes(op, &ns), before, "no SQL writes when nothing changed");
    let requests = support::apiserver::operator_requests(&plane.audit_events()[mark..], &ns);
    assert!(
        requests.is_empty(),
        "apiserver requests in {} s of steady state: {requests:#?}",
        3 * RESYNC_SECONDS
    );

    // Drift is repaired: attributes, membership, privileges and the password.
    su.batch_execute(
        "ALTER ROLE app CREATEDB CONNECTION LIMIT 1 VALID UNTIL 'infinity' PASSWORD 'changed by hand'; REVOKE readers FROM app; \
         GRANT TEMPORARY ON DATABASE reports TO app",
    )
    .await
    .unwrap();
    eventually("the drift repaired", WAIT, || async {
        (role_row(&su, "app").await
            == (
                true,
                false,
                5,
                vec!["readers".into()],
                vec!["CONNECT".into(), "CREATE".into()],
            ))
            .then_some(())
    })
    .await;
    eventually("the password restored", WAIT, || async {
        login(&c, "app", &binding["password"], "shop").await.ok()
    })
    .await;
    assert!(login(&c, "app", "changed by hand", "shop").await.is_err());

    // Rotation of a generated password: edit it in the binding Secret.
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "app-binding",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated-1"}})),
        )
        .await
        .unwrap();
    eventually("the rotated password", WAIT, || async {
        login(&c, "app", "rotated-1", "shop").await.ok()
    })
    .await;
    eventually("the binding's uri follows", WAIT, || async {
        secret_data(&client, &ns, "app-binding").await["uri"]
            .contains(":rotated-1@")
            .then_some(())
    })
    .await;

    // A password from the user's own Secret, rotated when that Secret changes.
    let own: Secret =
        serde_json::from_value(json!({"metadata": {"name": "bob-password"}, "stringData": {"pw": "first"}}))
            .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets.create(&PostParams::default(), &own).await.unwrap();
    create(
        &client,
        &ns,
        "PostgresUser",
        "bob",
        json!({
            "cluster": {"name": "db"},
            "passwordSecret": {"name": "bob-password", "key": "pw"},
            "privileges": [{"database": "shop", "privileges": ["ALL"]}],
        }),
    )
    .await;
    ready(&client, &ns, "PostgresUser", "bob").await;
    let bob = login(&c, "bob", "first", "shop").await.unwrap();
    bob.batch_execute("CREATE SCHEMA bobs; CREATE TABLE bobs.t (i int)")
        .await
        .unwrap();
    secrets
        .patch(
            "bob-password",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"pw": ByteString(b"second".to_vec())}})),
        )
        .await
        .unwrap();
    eventually("bob's new password", WAIT, || async {
        login(&c, "bob", "second", "shop").await.ok()
    })
    .await;
    assert_eq!(
        login(&c, "bob", "first", "shop").await.err().as_deref(),
        Some("password authentication failed for user \"bob\"")
    );
    let version = secrets
        .get("bob-password")
        .await
        .unwrap()
        .metadata
        .resource_version;
    eventually("status.passwordSecretVersion", WAIT, || async {
        let s = ready(&client, &ns, "PostgresUser", "bob").await;
        (s["passwordSecretVersion"].as_str() == version.as_deref()).then_some(())
    })
    .await;

    // A hostile name is one identifier: the role exists with exactly that name, and t survives.
    let hostile = r#"x"; DROP TABLE t; --"#;
    create(
        &client,
        &ns,
        "PostgresUser",
        "hostile",
        json!({"cluster": {"name": "db"}, "roleName": hostile, "reclaimPolicy": "Retain"}),
    )
    .await;
    ready(&client, &ns, "PostgresUser", "hostile").await;
    let found = su
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&hostile])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "the role is named exactly {hostile}");
    su.batch_execute("SELECT count(*) FROM t")
        .await
        .expect("table t is still there");

    // Delete: bob's role goes (its table goes to shop's owner), the Retain role stays, the
    // database stays by default and goes with Delete.
    let delete = |kind: &'static str, name: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let objects = api(&client, &ns, kind, "v1");
            objects.delete(name, &DeleteParams::default()).await.unwrap();
            eventually(&format!("{kind} {name} gone"), WAIT, || async {
                objects.get_opt(name).await.unwrap().is_none().then_some(())
            })
            .await;
        }
    };
    let exists = |role: &'static str| {
        let su = &su;
        async move {
            !su.query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
                .await
                .unwrap()
                .is_empty()
        }
    };
    drop(bob);
    delete("PostgresUser", "bob").await;
    assert!(
        !exists("bob").await,
        "reclaim policy Delete (the default) drops the role"
    );
    let shop = login(&c, "postgres", &c.password, "shop").await.unwrap();
    let table_owner: String = shop
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'bobs'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        table_owner, "app",
        "REASSIGN OWNED gave bob's table to the database's owner"
    );
    delete("PostgresUser", "hostile").await;
    let found = su
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&hostile])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "reclaim policy Retain keeps the role");
    drop((app, shop));
    delete("PostgresDatabase", "shop").await;
    let databases = |name: &'static str| {
        let su = &su;
        async move {
            su.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(databases("shop").await, 1, "a database is retained by default");
    create(
        &client,
        &ns,
        "PostgresDatabase",
        "scratch",
        json!({"cluster": {"name": "db"}, "owner": "app", "reclaimPolicy": "Delete"}),
    )
    .await;
    ready(&client, &ns, "PostgresDatabase", "scratch").await;
    assert_eq!(databases("scratch").await, 1);
    delete("PostgresDatabase", "scratch").await;
    assert_eq!(
        databases("scratch").await,
        0,
        "reclaim policy Delete drops the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_and_databases_converge_on_postgres_15() {
    users_and_databases(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_and_databases_converge_on_postgres_18() {
    users_and_databases(18).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_or_database_tusk_cannot_make_says_why() {
    let (c, _op, client) = cluster("sqlerr", 15).await;
    let ns = c.namespace.clone();
    create(
        &client,
        &ns,
        "PostgresUser",
        "lost",
        json!({"cluster": {"name": "db"}, "memberOf": ["no_such_group"]}),
    )
    .await;
    create(
        &client,
        &ns,
        "PostgresDatabase",
        "orphan",
        json!({"cluster": {"name": "db"}, "owner": "nobody_yet"}),
    )
    .await;
    create(
        &client,
        &ns,
        "PostgresUser",
        "nopw",
        json!({"cluster": {"name": "db"}, "passwordSecret": {"name": "missing"}}),
    )
    .await;
    create(
        &client,
        &ns,
        "PostgresUser",
        "far",
        json!({"cluster": {"name": "elsewhere"}}),
    )
    .await;
    let expect = |kind: &'static str, name: &'static str, reason: &'static str, words: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let objects = api(&client, &ns, kind, "v1");
            eventually(&format!("{kind} {name}: {reason}"), WAIT, || async {
                let o = objects.get(name).await.ok()?;
                let ready = o.data["status"]["conditions"][0].clone();
                (ready["status"] == "False"
                    && ready["reason"] == reason
                    && ready["message"].as_str()?.contains(words))
                .then_some(())
            })
            .await;
        }
    };
    expect(
        "PostgresUser",
        "lost",
        "SqlFailed",
        "role \"no_such_group\" does not exist",
    )
    .await;
    expect(
        "PostgresDatabase",
        "orphan",
        "OwnerMissing",
        "spec.owner: role nobody_yet does not exist",
    )
    .await;
    expect(
        "PostgresUser",
        "nopw",
        "PasswordSecretMissing",
        "spec.passwordSecret: Secret missing does not exist",
    )
    .await;
    expect(
        "PostgresUser",
        "far",
        "ClusterUnreachable",
        "maps no address for cluster",
    )
    .await;
    // Once the owner exists, the database follows.
    create(
        &client,
        &ns,
        "PostgresUser",
        "nobody-yet",
        json!({"cluster": {"name": "db"}, "roleName": "nobody_yet"}),
    )
    .await;
    ready(&client, &ns, "PostgresDatabase", "orphan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_initdb_gives_an_application_role_and_database() {
    let bootstrap = json!({"initdb": {"database": "app", "owner": "app_owner"}});
    let (c, _op, client) = cluster_with("bootstrap", 15, bootstrap).await;
    let ns = c.namespace.clone();
    ready(&client, &ns, "PostgresUser", "db-owner").await;
    ready(&client, &ns, "PostgresDatabase", "db-database").await;
    let binding = secret_data(&client, &ns, "db-owner-binding").await;
    assert_eq!(
        (binding["username"].as_str(), binding["database"].as_str()),
        ("app_owner", "app")
    );
    let app = login(&c, "app_owner", &binding["password"], "app").await.unwrap();
    let owner: String = app
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "app_owner");
    let su = c.connect(0).await.unwrap();
    let checksums: String = su.query_one("SHOW data_checksums", &[]).await.unwrap().get(0);
    assert_eq!(
        checksums, "on",
        "data checksums are on unless the cluster turns them off"
    );
}
