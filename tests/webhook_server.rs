//! The real HTTPS conversion server on loopback: conversion over TLS, certificate rotation
//! without a restart, request limits, and graceful shutdown on SIGTERM.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tusk::webhook::{
    server::{Config, Server},
    tls::CertFiles,
};
use tusk_testenv::{
    Wait, eventually,
    pki::{Ca, KeyedCert},
};

fn write_cert(dir: &Path, cert: &KeyedCert) {
    // Write the key first, then the certificate, as a rotation would: in between, the files do not
    // match and the server must keep the old pair.
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
}

fn connector(ca: &Ca) -> TlsConnector {
    TlsConnector::from(connector_config(ca))
}

fn connector_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der())).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    // A resumed session reports the certificate of the session it resumes; every connection
    // here must show the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

fn served_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends one HTTP/1.1 request on its own TLS connection; returns status and body.
async fn request(tls: TlsStream<TcpStream>, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn review(desired: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": "7b1c2c8e-0000-4000-8000-000000000001",
            "desiredAPIVersion": desired,
            "objects": [{
                "apiVersion": "tusk.dev/v1",
                "kind": "PostgresCluster",
                "metadata": {"name": "db", "namespace": "apps"},
                "spec": {"postgres": {"version": 17, "image": "postgres:17"}, "instances": 3, "storage": {"data": {"size": "5Gi"}}},
            }],
        },
    }))
    .unwrap()
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, max_body_bytes: usize) -> Running {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_files: CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        cert_reload_interval: Duration::from_millis(100),
        max_body_bytes,
        client_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, stop, done }
}

#[tokio::test]
async fn converts_over_https_and_serves_a_rotated_certificate_without_restart() {
    let ca = Ca::new("tusk test CA");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.loopback_serving_cert("first");
    write_cert(dir.path(), &first);
    let server = start(dir.path(), 1 << 20).await;
    let connector = connector(&ca);

    let tls = connect(&connector, server.addr).await.unwrap();
    assert_eq!(served_cert(&tls), first.cert_der);
    let (status, body) = request(tls, "POST", "/convert", review("tusk.dev/v1alpha1")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    let object = &body["response"]["convertedObjects"][0];
    assert_eq!(object["apiVersion"], "tusk.dev/v1alpha1");
    assert_eq!(
        object["spec"],
        json!({"version": "17", "replicas": 3, "storageSize": "5Gi"})
    );
    assert_eq!(
        object["metadata"]["annotations"]["tusk.dev/conversion-data"],
        r#"{"spec":{"image":"postgres:17"}}"#
    );

    // A connection opened before the rotation stays usable after it.
    let kept = connect(&connector, server.addr).await.unwrap();

    let second = ca.loopback_serving_cert("second");
    assert_ne!(first.cert_der, second.cert_der);
    write_cert(dir.path(), &second);
    let rotated = eventually(
        "the new certificate to be served",
        Wait::up_to(Duration::from_secs(10)).every(Duration::from_millis(50)),
        async || {
            let tls = connect(&connector, server.addr)
                .await
                .expect("the listener stays up during rotation");
            if served_cert(&tls) == second.cert_der {
                return Some(tls);
            }
            assert_eq!(
                served_cert(&tls),
                first.cert_der,
                "only the old or the new certificate is ever served"
            );
            None
        },
    )
    .await;
    let (status, _) = request(rotated, "POST", "/convert", review("tusk.dev/v1beta1")).await;
    assert_eq!(status, 200);
    let (status, _) = request(kept, "GET", "/healthz", vec![]).await;
    assert_eq!(status, 200);

    // A broken certificate file is ignored; the last good pair is served.
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = connect(&connector, server.addr).await.unwrap();
    assert_eq!(served_cert(&tls), second.cert_der);

    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn refuses_oversized_bodies_wrong_methods_and_unknown_paths() {
    let ca = Ca::new("tusk test CA");
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), &ca.loopback_serving_cert("limits"));
    let server = start(dir.path(), 1024).await;
    let connector = connector(&ca);

    let (status, body) = request(
        connect(&connector, server.addr).await.unwrap(),
        "POST",
        "/convert",
        vec![b' '; 4096],
    )
    .await;
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (413, "request body is over the 1024-byte limit\n".to_owned())
    );
    let (status, _) = request(
        connect(&connector, server.addr).await.unwrap(),
        "GET",
        "/convert",
        vec![],
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = request(
        connect(&connector, server.addr).await.unwrap(),
        "POST",
        "/mutate",
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = request(
        connect(&connector, server.addr).await.unwrap(),
        "POST",
        "/convert",
        b"{\"apiVersion\":".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A client that opens TLS and never sends a request is cut off instead of holding a task.
    let mut idle = connect(&connector, server.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        idle.read(&mut buf).await
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle connection was not closed by the header timeout"
    );

    server.stop.send(()).unwrap();
    server.done.await.unwrap();
}

/// The binary exits cleanly on SIGTERM, as a pod is stopped.
#[test]
fn the_binary_stops_gracefully_on_sigterm() {
    let ca = Ca::new("tusk test CA");
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), &ca.loopback_serving_cert("sigterm"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tusk-operator"))
        .args(["webhook", "--listen", &format!("127.0.0.1:{port}"), "--cert-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connector = connector(&ca);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    runtime.block_on(async {
        let tls = eventually(
            "the webhook to come up",
            Wait::up_to(Duration::from_secs(20)).every(Duration::from_millis(100)),
            async || connect(&connector, addr).await,
        )
        .await;
        assert_eq!(request(tls, "GET", "/healthz", vec![]).await.0, 200);
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = runtime.block_on(eventually(
        "the webhook to stop after SIGTERM",
        Wait::up_to(Duration::from_secs(20)).every(Duration::from_millis(50)),
        async || child.try_wait().unwrap(),
    ));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
}

/// From SIGTERM until it stops accepting, the server asks its clients to leave in band, so that
/// none meets a keep-alive connection closed under it (the apiserver calls webhooks over
/// HTTP/1.1 and does not retry a POST that did): each HTTP/1.1 response says `Connection: close`
/// and the connection ends after it, an idle HTTP/1.1 connection stays open for the client to use
/// once more, new connections are still served, and HTTP/2 connections get a GOAWAY.
#[tokio::test]
async fn while_draining_clients_are_asked_to_close_in_band() {
    let ca = Ca::new("tusk test CA");
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), &ca.loopback_serving_cert("drain"));
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_files: CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
        cert_reload_interval: Duration::from_secs(60),
        max_body_bytes: 1 << 20,
        client_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (drain, draining) = oneshot::channel::<()>();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run_draining(
        async {
            let _ = draining.await;
        },
        async {
            let _ = stopped.await;
        },
    ));
    let connector = connector(&ca);
    type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
    let open = async || -> (Sender, tokio::task::JoinHandle<()>) {
        let tls = connect(&connector, addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        (sender, tokio::spawn(async move { connection.await.unwrap() }))
    };
    // The status and the Connection header of a GET /healthz on `sender`.
    let get = async |sender: &mut Sender| -> (u16, Option<String>) {
        sender.ready().await.unwrap();
        let request = Request::builder()
            .uri("/healthz")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let connection = response
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), connection)
    };

    let (mut busy, busy_connection) = open().await;
    let (mut idle, idle_connection) = open().await;
    assert_eq!(get(&mut busy).await, (200, None), "keep-alive before draining");
    assert_eq!(get(&mut idle).await, (200, None));
    let mut h2_tls = rustls::ClientConfig::clone(&connector_config(&ca));
    h2_tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = TlsConnector::from(Arc::new(h2_tls));
    let h2_stream = connect(&tls, addr).await.unwrap();
    assert_eq!(h2_stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, h2_connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(h2_stream))
            .await
            .unwrap();
    let h2_connection = tokio::spawn(h2_connection);
    let h2_request = Request::builder()
        .uri("https://127.0.0.1/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(h2_request).await.unwrap().status(), 200);

    drain.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // HTTP/2: a GOAWAY ends the connection once its streams are done.
    tokio::time::timeout(Duration::from_secs(5), h2_connection)
        .await
        .expect("the HTTP/2 connection ends after the GOAWAY")
        .unwrap()
        .unwrap();
    // HTTP/1.1: the idle connection was left open; its next response, and every other, says
    // close, and the server closes the connection after it.
    assert!(
        !idle_connection.is_finished(),
        "an idle connection is not closed while draining"
    );
    assert_eq!(get(&mut busy).await, (200, Some("close".to_owned())));
    assert_eq!(get(&mut idle).await, (200, Some("close".to_owned())));
    for connection in [busy_connection, idle_connection] {
        tokio::time::timeout(Duration::from_secs(5), connection)
            .await
            .expect("the server closes a connection after saying so")
            .unwrap();
    }
    let (mut fresh, _) = open().await;
    assert_eq!(
        get(&mut fresh).await,
        (200, Some("close".to_owned())),
        "a new connection is still served while draining"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("the server stops")
        .unwrap();
}
