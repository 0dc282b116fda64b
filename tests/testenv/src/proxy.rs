//! TCP forwarders on loopback that stand for a cluster's network: a Service that sends each new
//! connection to the pod its selector picks at that moment (as kube-proxy does), and a link a
//! test can cut, as a partition would.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{Result, io};

/// Where a new connection goes now; `None` refuses it.
pub type Target = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>> + Send + Sync>;

/// A forwarder listening on one loopback address.
pub struct Forwarder {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `listen` and joins each client to what `target` names when it connects.
    pub async fn start(listen: SocketAddr, target: Target) -> Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(io(format!("listening on {listen}")))?;
        let address = listener.local_addr().map_err(io("the forwarder's address"))?;
        let (cut, is_cut) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *is_cut.borrow() {
                    continue;
                }
                let (target, mut is_cut) = (target.clone(), is_cut.clone());
                tokio::spawn(async move {
                    let Some(to) = target().await else { return };
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = is_cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Self { address, cut, task })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every connection and refuses new ones, until [`Forwarder::restore`].
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.cut.send(true);
    }
}
