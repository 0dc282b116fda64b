//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas only
//! one runs the controllers (every replica serves the conversion webhook).
//!
//! The holder renews the Lease every [`RENEW`]. Another replica takes it over once it has not
//! been renewed for [`LEASE_DURATION`], so a new leader runs within about
//! `LEASE_DURATION + RENEW` of the old one dying. Every write carries the resourceVersion it read,
//! so two replicas can never both win.
//!
//! Two leaders must never overlap, even when the holder is frozen (a stopped process, a paused
//! VM, a long GC-like stall) and wakes up after another replica took over. So the holder stops
//! leading at [`RENEW_DEADLINE`], well before anyone else may take over at [`LEASE_DURATION`]
//! (client-go's leader election does the same): [`Leadership`] says whether the last successful
//! renewal *started* less than `RENEW_DEADLINE` ago, on the monotonic clock, which keeps running
//! while a process is stopped. The controllers' client ([`guarded`]) refuses every write when it
//! does not, so a replica that wakes up late cannot write even once before it notices; and its
//! sockets refuse every write once it stops leading, so a request handed to the client just
//! before a freeze is not sent after it.

use std::{pin::Pin, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How often the holder renews, and how often the others look.
pub const RENEW: Duration = Duration::from_secs(2);
/// How long the holder keeps leading without a successful renewal: shorter than
/// [`LEASE_DURATION`] by enough for a write already sent to land.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(6);

/// Whether this replica may act as the leader right now.
#[derive(Debug, Default)]
pub struct Leadership {
    /// When the last successful acquisition or renewal was sent.
    renewed: std::sync::Mutex<Option<Instant>>,
}

impl Leadership {
    /// True while the last successful renewal started less than [`RENEW_DEADLINE`] ago.
    pub fn current(&self) -> bool {
        self.renewed
            .lock()
            .expect("never poisoned")
            .is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
    }

    fn renewed_at(&self, at: Instant) {
        *self.renewed.lock().expect("never poisoned") = Some(at);
    }

    fn end(&self) {
        *self.renewed.lock().expect("never poisoned") = None;
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    leadership: Arc<Leadership>,
}

impl Elector {
    /// Competes for Lease `name` in `namespace` as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            leadership: Arc::default(),
        }
    }

    /// Whether this replica may lead now; give it to [`guarded`].
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership.clone()
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            let attempt = Instant::now();
            match self.try_acquire().await {
                Ok(true) => {
                    self.leadership.renewed_at(attempt);
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "leader election"),
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// Renews the Lease every [`RENEW`]; returns when it was not renewed within
    /// [`RENEW_DEADLINE`] (or another replica holds it), and leadership has ended, so the caller
    /// must stop leading.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(RENEW).await;
            // Past the deadline (renewals failed, or the process was stopped or starved and woke
            // up late): leadership has already ended, whatever a renewal would say now.
            if !self.leadership.current() {
                break warn!(lease = %self.name, deadline = ?RENEW_DEADLINE, "the lease was not renewed in time");
            }
            let attempt = Instant::now();
            match self.try_acquire().await {
                Ok(true) => self.leadership.renewed_at(attempt),
                Ok(false) => break warn!(lease = %self.name, "another replica holds the lease"),
                Err(e) => warn!(lease = %self.name, error = %e, "renewing the lease"),
            }
        }
        self.leadership.end();
    }

    /// Gives the Lease up, so another replica need not wait for it to expire.
    pub async fn release(&self) {
        self.leadership.end();
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }

    /// Takes or renews the Lease if it is ours or free; true when we hold it afterwards.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(&self.identity);
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => renewed.0 + SignedDuration::from_secs(i64::from(secs)) < now,
            _ => true,
        };
        if !ours && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                spec.acquire_time.map(|t| t.0).unwrap_or(now),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(
        &self,
        acquired: Timestamp,
        renewed: Timestamp,
        transitions: i32,
    ) -> k8s_openapi::api::coordination::v1::LeaseSpec {
        k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// A client for `config` whose every request says which replica sent it (its `User-Agent`,
/// `tusk-operator/<version> (<identity>)`, which the apiserver's audit log records), and which,
/// given a [`Leadership`], refuses every write while this replica is not the leader.
pub fn guarded(
    config: kube::Config,
    identity: &str,
    leadership: Option<Arc<Leadership>>,
) -> Result<Client, kube::Error> {
    let user_agent = format!(
        "{}/{} ({identity})",
        crate::facts::operator::NAME,
        env!("CARGO_PKG_VERSION")
    );
    let user_agent = http::HeaderValue::from_str(&user_agent)
        .unwrap_or_else(|_| http::HeaderValue::from_static(crate::facts::operator::NAME));
    let layer = GuardLayer {
        leadership: leadership.clone(),
        user_agent,
    };
    match leadership {
        Some(leadership) => fenced(config, leadership, layer),
        None => Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build()),
    }
}

/// The leader's client: kube's own stack (base URI, retries, authentication, extra headers), on
/// connections whose every socket write first checks [`Leadership::current`]. The guard checks
/// when a request is handed to the client; the socket checks again right before the bytes leave,
/// which may be much later for a process that was stopped in between (or for a retry). So a
/// request the guard let through just before the process froze fails when it wakes, instead of
/// reaching the apiserver late. What remains is the few instructions between that check and the
/// `write` system call itself.
fn fenced(
    config: kube::Config,
    leadership: Arc<Leadership>,
    guard: GuardLayer,
) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::{HttpConnector, proxy::Tunnel};

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let sockets = FencedConnector {
        inner: http,
        leadership,
    };
    match config.proxy_url.clone() {
        None => client_on(config, sockets, guard),
        Some(proxy) if proxy.scheme_str() == Some("http") => {
            client_on(config, Tunnel::new(proxy, sockets), guard)
        }
        Some(proxy) => Err(kube::Error::ProxyProtocolUnsupported {
            proxy_url: Box::new(proxy),
        }),
    }
}

fn client_on<C>(config: kube::Config, sockets: C, guard: GuardLayer) -> Result<Client, kube::Error>
where
    C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper_util::client::legacy::connect::Connection
        + hyper::rt::Read
        + hyper::rt::Write
        + Send
        + Unpin
        + 'static,
    C::Future: Send + 'static,
    C::Error: Into<tower::BoxError>,
{
    use kube::client::{ConfigExt, retry::RetryPolicy};

    let mut connector =
        hyper_timeout::TimeoutConnector::new(config.rustls_https_connector_with_connector(sockets)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new()).build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(guard)
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// Opens TCP connections whose writes fail once this replica stops leading; see [`fenced`].
#[derive(Clone)]
struct FencedConnector<C> {
    inner: C,
    leadership: Arc<Leadership>,
}

impl<C> tower::Service<http::Uri> for FencedConnector<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = FencedStream<C::Response>;
    type Error = C::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, C::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let leadership = self.leadership.clone();
        Box::pin(async move {
            Ok(FencedStream {
                inner: connecting.await?,
                leadership,
            })
        })
    }
}

/// See [`FencedConnector`].
struct FencedStream<S> {
    inner: S,
    leadership: Arc<Leadership>,
}

impl<S> FencedStream<S> {
    fn fence(&self) -> Result<(), std::io::Error> {
        if self.leadership.current() {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "this replica is no longer the leader",
            ))
        }
    }
}

type IoPoll<T> = std::task::Poll<Result<T, std::io::Error>>;

impl<S: hyper::rt::Write + Unpin> hyper::rt::Write for FencedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> IoPoll<usize> {
        self.fence()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> IoPoll<usize> {
        self.fence()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> IoPoll<()> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> IoPoll<()> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: hyper::rt::Read + Unpin> hyper::rt::Read for FencedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> IoPoll<()> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: hyper_util::client::legacy::connect::Connection> hyper_util::client::legacy::connect::Connection
    for FencedStream<S>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

/// See [`guarded`].
#[derive(Clone)]
struct GuardLayer {
    leadership: Option<Arc<Leadership>>,
    user_agent: http::HeaderValue,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`guarded`].
#[derive(Clone)]
struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

/// A write refused because this replica is not the leader.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path} refused: this replica is no longer the leader")]
pub struct NotLeader {
    method: http::Method,
    path: String,
}

impl<S, B> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request
            .headers_mut()
            .insert(http::header::USER_AGENT, self.layer.user_agent.clone());
        let reads = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if !reads && self.layer.leadership.as_ref().is_some_and(|l| !l.current()) {
            let refused = NotLeader {
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            };
            return Box::pin(async move { Err(refused.into()) });
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_comes_before_anyone_may_take_over() {
        assert!(RENEW < RENEW_DEADLINE);
        // A write sent just before the deadline has LEASE_DURATION - RENEW_DEADLINE to land.
        assert!(LEASE_DURATION - RENEW_DEADLINE >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_the_deadline() {
        let leadership = Leadership::default();
        assert!(!leadership.current());
        leadership.renewed_at(Instant::now());
        assert!(leadership.current());
        tokio::time::advance(RENEW_DEADLINE - Duration::from_millis(1)).await;
        assert!(leadership.current());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!leadership.current());
    }
}
