//! The operator's admin endpoints on their own port: `/healthz` (the process serves), `/readyz`
//! (it is ready for traffic) and `/metrics` (Prometheus text format).

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

pub mod metrics;

use self::metrics::Metrics;

/// What the admin endpoints report.
#[derive(Default)]
pub struct State {
    /// Set once the operator serves (webhook bound, controllers started or waiting to lead).
    pub ready: AtomicBool,
    /// The metrics `/metrics` renders.
    pub metrics: Metrics,
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
                "/readyz" if state.ready.load(Ordering::Relaxed) => {
                    answer(StatusCode::OK, "ok\n".into(), "text/plain")
                }
                "/readyz" => answer(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into(), "text/plain"),
                "/metrics" => answer(StatusCode::OK, state.metrics.render(), OPENMETRICS),
                _ => answer(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
            }
        }
    };
    serve_http(listener, handler, shutdown).await;
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves plain HTTP on `listener`, answering each request by its path with `handler`, until
/// `shutdown` completes.
pub async fn serve_http<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(String) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let answer = handler(request.uri().path().to_owned());
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the admin port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
