//! The operator's admin endpoints: `/healthz` (the process serves) and `/readyz` (it is ready for
//! traffic) in plain HTTP on their own port, and `/metrics` (OpenMetrics text) over HTTPS on
//! another, for callers [`auth`] lets in.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod auth;
pub mod metrics;

use self::metrics::Metrics;
use crate::webhook::tls::ReloadingCert;

/// What the admin endpoints report.
#[derive(Default)]
pub struct State {
    /// Set once the operator serves (webhook bound, controllers started or waiting to lead), and
    /// cleared when it begins to shut down, so that traffic moves to another replica first.
    pub ready: AtomicBool,
    /// The conversion webhook's certificate, when this replica serves the webhook: the replica
    /// is ready only while it serves the pair on disk.
    pub webhook_cert: std::sync::OnceLock<Arc<ReloadingCert>>,
    /// The metrics `/metrics` renders.
    pub metrics: Metrics,
    /// The TLS security profile the operator's servers follow, which clusters' pods follow too.
    pub tls_profile: Arc<crate::tls_profile::Current>,
}

impl State {
    /// Whether this replica should take traffic, and if not, why.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting or shutting down".to_owned());
        }
        match self.webhook_cert.get() {
            Some(cert) => cert
                .serves_files()
                .map_err(|e| format!("the conversion webhook does not serve the current certificate: {e}")),
            None => Ok(()),
        }
    }
}

/// A response with `body`.
pub fn answer(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is well-formed")
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let handler = move |path: String| {
        let state = state.clone();
        async move {
            match path.as_str() {
                "/healthz" => answer(StatusCode::OK, "ok\n".into(), "text/plain"),
                "/readyz" => match state.readiness() {
                    Ok(()) => answer(StatusCode::OK, "ok\n".into(), "text/plain"),
                    Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), "text/plain"),
                },
                _ => answer(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
            }
        }
    };
    serve_http(listener, handler, shutdown).await;
}

/// What renders the metrics text.
pub type Render = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// What the HTTPS metrics server answers: `GET /metrics` for a caller whose token may `get` that
/// URL (401 without a valid token, 403 without the right), 404 elsewhere.
pub fn metrics_handler(render: Render, authorizer: Arc<auth::Authorizer>) -> crate::webhook::server::Handler {
    use crate::facts::operator::METRICS_PATH;
    Arc::new(move |request| {
        let render = render.clone();
        let authorizer = authorizer.clone();
        Box::pin(async move {
            if request.uri().path() != METRICS_PATH {
                return answer(
                    StatusCode::NOT_FOUND,
                    format!("not found; this server serves GET {METRICS_PATH}\n"),
                    "text/plain",
                );
            }
            if request.method() != hyper::Method::GET {
                return answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{METRICS_PATH} takes GET\n"),
                    "text/plain",
                );
            }
            let authorization = request
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match authorizer.check(authorization, "get", METRICS_PATH).await {
                auth::Decision::Allowed => answer(StatusCode::OK, render().await, OPENMETRICS),
                auth::Decision::Unauthenticated(why) => {
                    answer(StatusCode::UNAUTHORIZED, format!("{why}\n"), "text/plain")
                }
                auth::Decision::Forbidden(why) => {
                    answer(StatusCode::FORBIDDEN, format!("{why}\n"), "text/plain")
                }
            }
        })
    })
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request as a handler sees it.
#[derive(Debug)]
pub struct Call {
    /// The method.
    pub method: hyper::Method,
    /// The path.
    pub path: String,
    /// The body, read whole (at most [`MAX_BODY`] bytes).
    pub body: Bytes,
}

/// The largest request body served.
pub const MAX_BODY: usize = 1024 * 1024;

/// Serves plain HTTP on `listener`, answering each request by its path with `handler`, until
/// `shutdown` completes.
pub async fn serve_http<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(String) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_calls(
        Listener::Tcp(listener),
        move |call: Call| handler(call.path),
        shutdown,
    )
    .await;
}

/// Where requests come from.
pub enum Listener {
    /// A TCP port.
    Tcp(TcpListener),
    /// A Unix socket.
    Unix(tokio::net::UnixListener),
}

/// Serves plain HTTP/1 and HTTP/2 on `listener`, answering each [`Call`] with `handler`, until
/// `shutdown` completes.
pub async fn serve_calls<H, F>(listener: Listener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Call) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
                }
            } => accepted,
            () = &mut shutdown => return,
        };
        let Ok(stream) = accepted else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let limited = http_body_util::Limited::new(body, MAX_BODY);
                    let answer = match http_body_util::BodyExt::collect(limited).await {
                        Ok(body) => {
                            handler(Call {
                                method: parts.method,
                                path: parts.uri.path().to_owned(),
                                body: body.to_bytes(),
                            })
                            .await
                        }
                        Err(e) => answer(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n"), "text/plain"),
                    };
                    Ok::<_, Infallible>(answer)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match stream {
                Stream::Tcp(s) => builder.serve_connection(TokioIo::new(s), service).await,
                Stream::Unix(s) => builder.serve_connection(TokioIo::new(s), service).await,
            };
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Sends one plain HTTP/1 request over `stream` and reads the whole answer.
async fn call_over<S>(
    stream: S,
    authority: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One request to `address` (`host:port`), within `timeout`.
pub async fn call_tcp(
    address: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: std::time::Duration,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        call_over(stream, address, method, path, body)
            .await
            .map_err(|e| format!("{address}{path}: {e}"))
    };
    within(timeout, &format!("{address}{path}"), call).await
}

async fn within<T>(
    timeout: std::time::Duration,
    what: &str,
    call: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("{what}: no answer within {timeout:?}"))?
}

/// One request on the Unix socket `socket`, within `timeout`.
pub async fn call_unix(
    socket: &std::path::Path,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: std::time::Duration,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        call_over(stream, "localhost", method, path, body).await
    };
    within(timeout, &format!("{}{path}", socket.display()), call).await
}
/// Binds the admin port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
