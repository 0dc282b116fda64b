//! Real PostgreSQL, oldest and newest supported majors: each starts from a fresh `initdb` on
//! loopback, stores and reads a row, reports its major, and has the contrib extensions Tusk's
//! users rely on. When it is dropped, its server and directory are gone.

use std::time::Duration;

use tusk_testenv::{
    Wait, eventually,
    postgres::{LocalServer, Postgres},
};

/// Contrib extensions both the Debian 15 package and the PyPI 18 wheel ship and can load (the
/// wheel's uuid-ossp needs libossp-uuid, which is not installed).
const EXTENSIONS: [&str; 5] = ["pg_trgm", "hstore", "citext", "pgcrypto", "sslinfo"];

async fn round_trip(major: u32) {
    let pg = Postgres::get(major).unwrap();
    assert!(
        pg.version()
            .starts_with(&format!("postgres (PostgreSQL) {major}."))
    );
    for program in ["pg_basebackup", "pg_isready", "pg_ctl", "psql"] {
        assert!(
            pg.bin(program).exists(),
            "{} is missing",
            pg.bin(program).display()
        );
    }
    assert!(
        pg.has_ssl(),
        "{} is built without OpenSSL, and Tusk turns TLS on by default",
        pg.version()
    );
    let mut server = LocalServer::start(&pg).await.unwrap();
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.superuser(), "postgres");
    assert!(server.data_dir().join("PG_VERSION").exists());

    let version = server.psql("SHOW server_version").unwrap();
    assert!(
        version.starts_with(&format!("{major}.")),
        "server_version is {version}"
    );
    server
        .psql("CREATE TABLE clusters (name text PRIMARY KEY, replicas int);\nINSERT INTO clusters VALUES ('tusk', 3);")
        .unwrap();
    assert_eq!(
        server.psql("SELECT name, replicas FROM clusters").unwrap(),
        "tusk|3"
    );

    for extension in EXTENSIONS {
        server.psql(&format!("CREATE EXTENSION {extension}")).unwrap();
    }
    assert_eq!(server.psql("SELECT similarity('tusk', 'tusk')").unwrap(), "1");
    assert_eq!(
        server.psql("SELECT 'Tusk'::citext = 'TUSK'::citext").unwrap(),
        "t"
    );

    // An error comes back with psql's message.
    let err = server.psql("SELECT nope").unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    // Passwords are checked: a wrong one is refused.
    let wrong = std::process::Command::new(pg.bin("psql"))
        .args([
            "-X",
            "-h",
            server.host(),
            "-p",
            &server.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-c", "SELECT 1"])
        .env("PGPASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("password authentication failed"), "{stderr}");

    let pid: u32 = server.psql("SELECT pg_backend_pid()").unwrap().parse().unwrap();
    assert!(pid > 0);
    let data_dir = server.data_dir();
    let postmaster: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    server.stop();
    eventually(
        &format!("postgres {postmaster} to be gone after stop"),
        Wait::up_to(Duration::from_secs(10)).every(Duration::from_millis(50)),
        async || (!std::path::Path::new(&format!("/proc/{postmaster}")).exists()).then_some(()),
    )
    .await;
    assert!(!data_dir.exists(), "{} is left behind", data_dir.display());
}

#[tokio::test]
async fn postgres_15_round_trip() {
    round_trip(15).await;
}

#[tokio::test]
async fn postgres_18_round_trip() {
    round_trip(18).await;
}
