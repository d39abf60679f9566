//! One shutdown signal for every service: Ctrl-C (SIGINT) or SIGTERM, as containers and
//! systemd send.

use tokio::sync::watch;
use tracing::info;

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
                    _ = terminate.recv() => info!("SIGTERM received, shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                info!("SIGINT received, shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received, shutting down");
    }
}

/// A shutdown that fans out to many services: each gets a future from [`Fanout::wait`].
#[derive(Clone)]
pub struct Fanout {
    receiver: watch::Receiver<bool>,
}

impl Fanout {
    /// Spawns the signal listener; `fire` also triggers shutdown (when one service fails).
    pub fn new() -> (Fanout, watch::Sender<bool>) {
        let (sender, receiver) = watch::channel(false);
        let signalled = sender.clone();
        tokio::spawn(async move {
            signal().await;
            let _ = signalled.send(true);
        });
        (Fanout { receiver }, sender)
    }

    /// Resolves once shutdown is triggered.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}
