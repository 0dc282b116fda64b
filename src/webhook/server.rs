//! The operator's HTTPS servers: the conversion webhook in front of [`super::review`], and
//! `/metrics` (see [`crate::admin::secure`]).
//!
//! - The webhook: `POST /convert` answers ConversionReviews; `GET /healthz` says the server is up.
//! - TLS with rustls; the certificate follows its files ([`super::tls`]), and the protocol
//!   versions and ciphers follow the cluster's TLS security profile ([`crate::tls_profile`]).
//! - Bounded everywhere a client could make it wait or grow: TLS handshake and header timeouts,
//!   a body size limit and a body read timeout.
//! - While it drains (from SIGTERM until it stops accepting), it tells every client to leave in
//!   band: HTTP/1.1 responses carry `Connection: close` and HTTP/2 connections get a GOAWAY. The
//!   apiserver calls webhooks over HTTP/1.1 and never retries a POST that met a closed
//!   keep-alive connection, so a connection closed under it while idle would fail a conversion.
//! - On shutdown it stops accepting, lets requests in flight finish (up to a grace period), then
//!   returns.

use std::{
    convert::Infallible, future::Future, net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc, time::Duration,
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::{http1, http2};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{
    Reply, review,
    tls::{CertFiles, FixedCert, ReloadingCert, TlsError},
};
use crate::{
    facts::operator::{CERT_DIR, CONVERT_PATH, WEBHOOK_PORT},
    tls_profile::{Profile, ProfileError, ProfiledTls},
};

/// What a server answers: a request in, a response out.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>> + Send + Sync,
>;

/// Where a server's certificate comes from.
#[derive(Clone, Debug)]
pub enum ServerCert {
    /// Files that may be replaced while it runs.
    Files(CertFiles),
    /// A PEM pair made at start (a self-signed certificate when none was given).
    Fixed {
        /// The certificate chain.
        cert: String,
        /// The private key.
        key: String,
    },
}

/// How the webhook server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serving certificate and key.
    pub cert_files: CertFiles,
    /// How often the certificate files are checked for a change.
    pub cert_reload_interval: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a client may take for the TLS handshake, the headers, or the body.
    pub client_timeout: Duration,
    /// Longest shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], WEBHOOK_PORT)),
            cert_files: CertFiles {
                cert: PathBuf::from(CERT_DIR).join("tls.crt"),
                key: PathBuf::from(CERT_DIR).join("tls.key"),
            },
            cert_reload_interval: Duration::from_secs(2),
            max_body_bytes: 32 * 1024 * 1024,
            client_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The serving certificate could not be loaded at start.
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Profile(#[from] ProfileError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ServerCert {
    /// A self-signed certificate for `name`, made now, valid for
    /// [`crate::pki::DEFAULT_CERT_VALIDITY`].
    pub fn self_signed(name: &str) -> Result<Self, crate::pki::PkiError> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let authority = crate::pki::new_authority("self-signed", name, now)?;
        let leaf = crate::pki::issue(
            &authority,
            &crate::pki::Leaf::Server(vec![name.to_owned()]),
            now,
            crate::pki::DEFAULT_CERT_VALIDITY,
        )?;
        Ok(Self::Fixed {
            cert: format!("{}{}", leaf.cert, authority.cert),
            key: leaf.key,
        })
    }
}

/// An HTTPS server bound to its address, ready to [`run`](Self::run).
pub struct Server {
    config: Config,
    listener: TcpListener,
    cert: Option<Arc<ReloadingCert>>,
    tls: Arc<ProfiledTls>,
    handler: Handler,
    what: &'static str,
}

impl Server {
    /// The conversion webhook: loads the certificate and binds the listener, under the
    /// Intermediate profile until [`Self::tls`] is given another.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let limits = Arc::new(config.clone());
        let handler: Handler = Arc::new(move |request| {
            let limits = limits.clone();
            Box::pin(async move { route(request, &limits).await })
        });
        let cert = ServerCert::Files(config.cert_files.clone());
        Self::bind_with(config, cert, handler, "conversion webhook").await
    }

    /// A server of `handler`, named `what` in the log, with `cert`.
    pub async fn bind_with(
        config: Config,
        cert: ServerCert,
        handler: Handler,
        what: &'static str,
    ) -> Result<Self, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, resolver): (_, Arc<dyn rustls::server::ResolvesServerCert>) = match cert {
            ServerCert::Files(files) => {
                let cert = Arc::new(ReloadingCert::load(files, provider)?);
                (Some(cert.clone()), cert)
            }
            ServerCert::Fixed { cert, key } => (None, Arc::new(FixedCert::new(&cert, &key, &provider)?)),
        };
        let tls = Arc::new(ProfiledTls::new(
            Profile::intermediate(),
            resolver,
            &[b"h2", b"http/1.1"],
        )?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Self {
            config,
            listener,
            cert,
            tls,
            handler,
            what,
        })
    }

    /// The address the server listens on (useful when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The certificate it serves when it follows files.
    pub fn cert(&self) -> Option<Arc<ReloadingCert>> {
        self.cert.clone()
    }

    /// Its TLS configuration, which follows the profile [`ProfiledTls::apply`] is given.
    pub fn tls(&self) -> Arc<ProfiledTls> {
        self.tls.clone()
    }

    /// Serves until `shutdown` completes, then drains requests in flight for up to the grace
    /// period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_draining(std::future::pending(), shutdown).await;
    }

    /// Like [`run`](Self::run), and from when `drain` completes, still serving, asks every
    /// client to close its connection (see the module's documentation).
    pub async fn run_draining(self, drain: impl Future<Output = ()>, shutdown: impl Future<Output = ()>) {
        let Self {
            config,
            listener,
            cert,
            tls,
            handler,
            what,
        } = self;
        tracing::info!(addr = %listener.local_addr().expect("bound"), "{what} listening");
        let reloader = cert.map(|cert| tokio::spawn(cert.watch(config.cert_reload_interval)));
        let (phase, phases) = tokio::sync::watch::channel(Phase::Serving);
        let mut connections = tokio::task::JoinSet::new();
        let limits = Arc::new(config.clone());
        tokio::pin!(drain);
        tokio::pin!(shutdown);
        let mut draining = false;
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                () = &mut drain, if !draining => {
                    draining = true;
                    tracing::info!("{what} draining: clients are asked to close their connections");
                    phase.send_replace(Phase::Draining);
                    continue;
                }
                () = &mut shutdown => break,
            };
            while connections.try_join_next().is_some() {}
            // Each handshake takes the profile in force when it starts.
            connections.spawn(serve_connection(
                stream,
                peer,
                TlsAcceptor::from(tls.current()),
                limits.clone(),
                handler.clone(),
                phases.clone(),
            ));
        }
        drop(listener);
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        tracing::info!("shutting down: waiting for requests in flight");
        phase.send_replace(Phase::Stopping);
        let all_done = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_grace, all_done)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "requests still in flight after the grace period");
        }
    }
}

/// Where a server is in its life, as its connections see it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Serving,
    /// Still serving, asking clients to leave: `Connection: close` on HTTP/1.1, GOAWAY on HTTP/2.
    Draining,
    /// No longer accepting: idle connections close, requests in flight finish.
    Stopping,
}

/// Completes once the server reaches `at` (never, once the server is gone).
async fn reached(mut phases: tokio::sync::watch::Receiver<Phase>, at: Phase) {
    loop {
        let now = *phases.borrow_and_update();
        if now >= at {
            return;
        }
        if phases.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Drives `connection` to its end, shutting it down gracefully once the server reaches `at`.
/// Boxed: the compiler cannot prove the generic future `Send` through the watch's borrows.
fn drive<C: GracefulConnection + Send + 'static>(
    connection: C,
    phases: tokio::sync::watch::Receiver<Phase>,
    at: Phase,
) -> Pin<Box<dyn Future<Output = Result<(), C::Error>> + Send>>
where
    C::Error: Send,
{
    Box::pin(drive_inner(connection, phases, at))
}

async fn drive_inner<C: GracefulConnection>(
    connection: C,
    phases: tokio::sync::watch::Receiver<Phase>,
    at: Phase,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    let reached = reached(phases, at);
    tokio::select! {
        done = connection.as_mut() => return done,
        () = reached => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Serves one client: TLS, then HTTP/2 or HTTP/1.1 as ALPN chose, each with timeouts so an idle
/// or slow client cannot hold the connection.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    limits: Arc<Config>,
    handler: Handler,
    phases: tokio::sync::watch::Receiver<Phase>,
) {
    let timeout = limits.client_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let draining = phases.clone();
    let service = service_fn(move |request| {
        let handler = handler.clone();
        let close = !h2 && *draining.borrow() >= Phase::Draining;
        async move {
            let mut response = handler(request).await;
            if close {
                // hyper closes an HTTP/1.1 connection after a response that says so.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(tls);
    let result = if h2 {
        let connection = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(timeout)
            .keep_alive_timeout(timeout)
            .serve_connection(io, service);
        drive(connection, phases, Phase::Draining).await
    } else {
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(io, service);
        // An idle HTTP/1.1 connection cannot be told to close in band: it stays open while the
        // server drains, for the client to use once more (and get `Connection: close`) or close.
        drive(connection, phases, Phase::Stopping).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn route(request: Request<Incoming>, config: &Config) -> Response<Full<Bytes>> {
    let reply = match (request.method(), request.uri().path()) {
        (&Method::POST, CONVERT_PATH) => convert(request, config).await,
        (&Method::GET, "/healthz") => Reply::plain(200, "ok"),
        (_, CONVERT_PATH) => Reply::plain(405, format!("{CONVERT_PATH} takes POST")),
        (_, path) => Reply::plain(
            404,
            format!("no such path {path:?}; the conversion webhook serves POST {CONVERT_PATH}"),
        ),
    };
    Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("Tusk uses valid status codes"))
        .header(header::CONTENT_TYPE, reply.content_type)
        .body(Full::new(reply.body.into()))
        .expect("a status, one header and a body make a valid response")
}

async fn convert(request: Request<Incoming>, config: &Config) -> Reply {
    let limit = config.max_body_bytes;
    let too_large = || Reply::plain(413, format!("request body is over the {limit}-byte limit"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = Limited::new(request.into_body(), limit).collect();
    let body = match tokio::time::timeout(config.client_timeout, body).await {
        Err(_) => return Reply::plain(408, "request body was not received in time"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => return Reply::bad_request(format!("cannot read request body: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // Conversion is CPU work; keep it off the threads that drive connections.
    tokio::task::spawn_blocking(move || review(&body))
        .await
        .unwrap_or_else(|e| Reply::plain(500, format!("conversion task failed: {e}")))
}
