//! An HTTP CONNECT proxy on a Unix socket, for kube-apiserver's `cluster` egress selector, or on
//! loopback TCP, as the `HTTPS_PROXY` of a cluster-wide proxy.
//!
//! kube-apiserver reaches a webhook that names a Service by dialing `<ClusterIP>:<port>`. Here no
//! ClusterIP leads anywhere, so the apiserver is configured to tunnel those dials through this
//! proxy, which forwards each target the test has [routed](ConnectProxy::route) to a process on
//! loopback and refuses everything else. It never dials anything but loopback. As an HTTPS proxy
//! it lets a test name a store by a host name that only the proxy can reach.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener},
};

use crate::{Error, Result};

/// A running proxy. It stops when dropped.
#[derive(Debug)]
pub struct ConnectProxy {
    dir: tempfile::TempDir,
    routes: Arc<Mutex<HashMap<String, SocketAddr>>>,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
    address: Option<SocketAddr>,
}

impl ConnectProxy {
    /// Starts the proxy on a fresh socket, with an egress selector configuration beside it.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-egress")
            .tempdir()
            .map_err(|e| Error::Component {
                component: "egress proxy",
                message: format!("cannot create its directory: {e}"),
            })?;
        let socket = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&socket).map_err(|e| Error::Component {
            component: "egress proxy",
            message: format!("cannot listen on {}: {e}", socket.display()),
        })?;
        let config = format!(
            "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        udsName: {}\n",
            socket.display()
        );
        std::fs::write(dir.path().join("egress.yaml"), config).map_err(|e| Error::Component {
            component: "egress proxy",
            message: format!("cannot write its configuration: {e}"),
        })?;
        let routes: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let log: Arc<Mutex<Log>> = Arc::default();
        let task = tokio::spawn(serve(Listener::Unix(listener), routes.clone(), log.clone()));
        Ok(Self {
            dir,
            routes,
            log,
            task,
            address: None,
        })
    }

    /// Starts the proxy on a free port of 127.0.0.1, as an `http://` proxy for `HTTPS_PROXY`.
    pub async fn start_tcp() -> Result<Self> {
        let failed = |message: String| Error::Component {
            component: "HTTPS proxy",
            message,
        };
        let dir = tempfile::Builder::new()
            .prefix("tusk-proxy")
            .tempdir()
            .map_err(|e| failed(format!("cannot create its directory: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failed(format!("cannot listen on 127.0.0.1: {e}")))?;
        let address = listener.local_addr().map_err(|e| failed(e.to_string()))?;
        let routes: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let log: Arc<Mutex<Log>> = Arc::default();
        let task = tokio::spawn(serve(Listener::Tcp(listener), routes.clone(), log.clone()));
        Ok(Self {
            dir,
            routes,
            log,
            task,
            address: Some(address),
        })
    }

    /// The proxy's URL, for a proxy started with [`start_tcp`](Self::start_tcp).
    ///
    /// # Panics
    /// If it listens on a Unix socket.
    pub fn url(&self) -> String {
        format!("http://{}", self.address.expect("a TCP proxy"))
    }

    /// The `--egress-selector-config-file` that sends the apiserver's `cluster` traffic here.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("egress.yaml")
    }

    /// The socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("egress.sock")
    }

    /// Tunnels CONNECTs to `target` (`host:port`, as the apiserver dials it) to `to`, which must
    /// be on loopback.
    ///
    /// # Panics
    /// If `to` is not a loopback address.
    pub fn route(&self, target: &str, to: SocketAddr) {
        assert!(
            to.ip().is_loopback(),
            "the egress proxy only forwards to loopback, not {to}"
        );
        self.routes.lock().expect("routes").insert(target.to_owned(), to);
    }

    /// A handle that adds routes, for a task that outlives a borrow of the proxy.
    pub fn router(&self) -> Router {
        Router {
            routes: self.routes.clone(),
        }
    }

    /// Every CONNECT so far: its target, and whether it was forwarded.
    pub fn connects(&self) -> Vec<(String, bool)> {
        self.log.lock().expect("log").connects.clone()
    }

    /// Every forwarded CONNECT so far, with when it was opened and how it ended, to tell which
    /// process a failed request met.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.log.lock().expect("log").tunnels.clone()
    }
}

/// Adds routes to a [`ConnectProxy`].
#[derive(Clone, Debug)]
pub struct Router {
    routes: Arc<Mutex<HashMap<String, SocketAddr>>>,
}

impl Router {
    /// See [`ConnectProxy::route`].
    ///
    /// # Panics
    /// If `to` is not a loopback address.
    pub fn route(&self, target: &str, to: SocketAddr) {
        assert!(
            to.ip().is_loopback(),
            "the egress proxy only forwards to loopback, not {to}"
        );
        self.routes.lock().expect("routes").insert(target.to_owned(), to);
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the proxy saw.
#[derive(Debug, Default)]
struct Log {
    connects: Vec<(String, bool)>,
    tunnels: Vec<Tunnel>,
}

/// One forwarded CONNECT.
#[derive(Clone, Debug)]
pub struct Tunnel {
    /// The target the client asked for.
    pub target: String,
    /// Where the proxy forwarded it.
    pub to: SocketAddr,
    /// When the proxy answered 200.
    pub opened: std::time::Instant,
    /// When both directions had ended, once they have.
    pub closed: Option<std::time::Instant>,
    /// How it ended: the bytes each way, or the error that cut it.
    pub ended: String,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

async fn serve(listener: Listener, routes: Arc<Mutex<HashMap<String, SocketAddr>>>, log: Arc<Mutex<Log>>) {
    loop {
        let (routes, log) = (routes.clone(), log.clone());
        match &listener {
            Listener::Unix(l) => match l.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move { tunnel(stream, &routes, &log).await });
                }
                Err(_) => return,
            },
            Listener::Tcp(l) => match l.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move { tunnel(stream, &routes, &log).await });
                }
                Err(_) => return,
            },
        }
    }
}

async fn tunnel<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut client: S,
    routes: &Mutex<HashMap<String, SocketAddr>>,
    log: &Mutex<Log>,
) -> std::io::Result<()> {
    // The request head: `CONNECT <target> HTTP/1.1`, headers, an empty line. Nothing follows it
    // until the proxy answers.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let to = (method == "CONNECT")
        .then(|| routes.lock().expect("routes").get(target).copied())
        .flatten();
    log.lock()
        .expect("log")
        .connects
        .push((target.to_owned(), to.is_some()));
    let Some(to) = to else {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut upstream = match TcpStream::connect(to).await {
        Ok(upstream) => upstream,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    let index = {
        let mut log = log.lock().expect("log");
        log.tunnels.push(Tunnel {
            target: target.to_owned(),
            to,
            opened: std::time::Instant::now(),
            closed: None,
            ended: String::new(),
        });
        log.tunnels.len() - 1
    };
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    let tunnel = &mut log.lock().expect("log").tunnels[index];
    tunnel.closed = Some(std::time::Instant::now());
    tunnel.ended = match &copied {
        Ok((up, down)) => format!("{up} bytes up, {down} down"),
        Err(e) => format!("cut: {e}"),
    };
    copied.map(|_| ())
}
