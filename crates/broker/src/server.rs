//! Starting, watching and stopping the embedded rumqttd.
//!
//! rumqttd's `Broker::start()` blocks forever, only logs a listener that fails to bind (and then
//! returns `Ok`), and has no way to stop. So pmon assembles the same pieces itself: the router
//! thread (`rumqttd::Router::spawn`) and one v4 `rumqttd::Server` driven on pmon's own thread and
//! single-threaded tokio runtime. That gives a bind error as a value, a thread to watch, and a
//! real stop for the listener and every client connection (dropping the runtime). The router
//! thread still cannot be stopped: it stays, idle, until the process exits.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::probe;
use crate::{BrokerConfig, BrokerError};

/// How often [`BrokerHandle::died`] checks that the router thread is alive.
const ROUTER_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Attempts at a free port when `bind` has port 0 (another process may take it in between).
const FREE_PORT_ATTEMPTS: u32 = 3;
/// How long [`BrokerHandle::stop`] waits for the listener thread to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How the listener thread ended.
#[derive(Debug)]
enum Exit {
    /// Asked to stop (or its handle was dropped).
    Stopped,
    /// rumqttd's server loop returned an error.
    Failed(String),
}

/// A memo of how the broker ended, so [`BrokerHandle::died`] can be asked again.
#[derive(Debug, Clone)]
enum Ended {
    Failed(String),
    Panicked,
    RouterDied,
}

impl Ended {
    fn to_error(&self, addr: SocketAddr) -> BrokerError {
        match self {
            Self::Failed(detail) => BrokerError::Stopped {
                addr,
                detail: detail.clone(),
            },
            Self::Panicked => BrokerError::Panicked { addr },
            Self::RouterDied => BrokerError::RouterDied { addr },
        }
    }
}

/// A running embedded broker. Dropping it stops the listener (without waiting); prefer
/// [`BrokerHandle::stop`], which waits until the port is closed.
pub struct BrokerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    exit: Option<oneshot::Receiver<Exit>>,
    ended: Option<Ended>,
    thread: Option<JoinHandle<()>>,
    router_alive: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl BrokerHandle {
    /// The address the listener is bound to (with the real port when `bind` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address a client on this host connects to: [`BrokerHandle::local_addr`], with an
    /// unspecified address (`0.0.0.0`, `::`) replaced by loopback.
    pub fn client_addr(&self) -> SocketAddr {
        probe::client_addr(self.addr)
    }

    /// Whether the listener thread and the router thread are both still alive.
    pub fn is_running(&self) -> bool {
        self.ended.is_none()
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            && (self.router_alive)()
    }

    /// Resolves when the broker stops on its own (its listener failed, a thread panicked), with
    /// the reason. Never resolves while it runs. Cancel-safe, and may be awaited again.
    pub async fn died(&mut self) -> BrokerError {
        let mut router_check = tokio::time::interval(ROUTER_CHECK_INTERVAL);
        loop {
            if let Some(ended) = &self.ended {
                return ended.to_error(self.addr);
            }
            let Some(exit) = self.exit.as_mut() else {
                // Unreachable: `exit` is only taken together with setting `ended`.
                self.ended = Some(Ended::Panicked);
                continue;
            };
            tokio::select! {
                result = exit => {
                    self.exit = None;
                    self.ended = Some(match result {
                        Ok(Exit::Failed(detail)) => Ended::Failed(detail),
                        Ok(Exit::Stopped) => Ended::Failed("listener stopped".into()),
                        Err(_) => Ended::Panicked,
                    });
                }
                _ = router_check.tick() => {
                    if !(self.router_alive)() {
                        self.ended = Some(Ended::RouterDied);
                    }
                }
            }
        }
    }

    /// Stops the listener and disconnects every client, and waits (up to 5 s) until the port is
    /// closed. Returns the error if the broker had already died on its own.
    ///
    /// rumqttd 0.20 cannot stop its router thread: it stays, idle and holding its in-memory
    /// logs, until the process exits.
    pub async fn stop(mut self) -> Result<(), BrokerError> {
        let addr = self.addr;
        if let Some(stop) = self.stop.take() {
            // An error means the thread is already gone; `exit` below tells why.
            let _ = stop.send(());
        }
        let ended = match self.ended.take() {
            Some(ended) => Some(ended),
            None => match self.exit.take() {
                None => None,
                Some(exit) => match tokio::time::timeout(STOP_TIMEOUT, exit).await {
                    Ok(Ok(Exit::Stopped)) => None,
                    Ok(Ok(Exit::Failed(detail))) => Some(Ended::Failed(detail)),
                    Ok(Err(_)) => Some(Ended::Panicked),
                    Err(_) => {
                        warn!(%addr, "MQTT broker thread did not stop in time; leaving it");
                        None
                    }
                },
            },
        };
        self.join_if_finished();
        match ended {
            None => {
                info!(%addr, "MQTT broker stopped");
                Ok(())
            }
            Some(ended) => Err(ended.to_error(addr)),
        }
    }

    /// Stops from synchronous code (start-up failures): signal and join.
    fn stop_blocking(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only drops its runtime after the stop signal: quick.
            if thread.join().is_err() {
                warn!(addr = %self.addr, "MQTT broker thread panicked while stopping");
            }
        }
    }

    fn join_if_finished(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(thread) = self.thread.take() {
                if thread.join().is_err() {
                    warn!(addr = %self.addr, "MQTT broker thread panicked");
                }
            }
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the embedded broker and returns once it answers an MQTT CONNECT on its port.
///
/// Blocks the calling thread for that long (milliseconds normally, at most
/// [`BrokerConfig::startup_timeout_ms`] per attempt); from async code prefer [`run`] or call it
/// inside `tokio::task::spawn_blocking`. It needs no tokio runtime of the caller's.
///
/// With port 0 in [`BrokerConfig::bind`] a free port is picked (and picked again, up to three
/// times, if another process takes it first); [`BrokerHandle::local_addr`] tells which.
///
/// # Errors
/// [`BrokerError::PortInUse`] if the port is taken, [`BrokerError::Bind`] for other bind
/// errors, [`BrokerError::InvalidConfig`], [`BrokerError::NotAccepting`] if the listener does
/// not answer within the start-up timeout.
pub fn spawn(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    config.validate()?;
    if config.bind.port() != 0 {
        return start_once(&config, config.bind);
    }
    let mut attempt = 1;
    loop {
        let addr = free_port(config.bind)?;
        match start_once(&config, addr) {
            Err(BrokerError::PortInUse { addr, source }) if attempt < FREE_PORT_ATTEMPTS => {
                warn!(%addr, attempt, error = %source, "free port was taken before the broker bound it; trying another");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs the embedded broker until `shutdown` resolves (then returns `Ok` promptly, with the
/// listener closed and every client disconnected) or until the broker dies on its own (then
/// returns the error). Fails at once, loudly, if the port is taken.
///
/// Needs a multi-threaded tokio runtime or one with a blocking pool (start-up runs in
/// `spawn_blocking`). The broker itself runs on its own threads, not on the caller's runtime.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let mut broker = tokio::task::spawn_blocking(move || spawn(config))
        .await
        .map_err(|e| BrokerError::Thread(io::Error::other(e)))??;
    let died = tokio::select! {
        () = shutdown => None,
        error = broker.died() => Some(error),
    };
    match died {
        None => {
            info!(addr = %broker.local_addr(), "shutdown requested, stopping the MQTT broker");
            broker.stop().await
        }
        Some(error) => {
            error!(addr = %broker.local_addr(), %error, "MQTT broker died");
            Err(error)
        }
    }
}

fn free_port(bind: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(bind).map_err(|e| BrokerError::bind(bind, e))?;
    listener
        .local_addr()
        .map_err(|e| BrokerError::bind(bind, e))
}

fn start_once(config: &BrokerConfig, addr: SocketAddr) -> Result<BrokerHandle, BrokerError> {
    // Fail before creating rumqttd's router (a thread that can never be stopped) if the port is
    // visibly taken. The authoritative check is the bind inside the listener thread below.
    drop(TcpListener::bind(addr).map_err(|e| BrokerError::bind(addr, e))?);

    let router_tx = rumqttd::Router::new(0, config.router_config()).spawn();
    let router_alive: Box<dyn Fn() -> bool + Send + Sync> = {
        let router_tx = router_tx.clone();
        Box::new(move || !router_tx.is_disconnected())
    };

    let server = rumqttd::Server::new(
        config.server_settings(addr),
        router_tx,
        rumqttd::protocol::v4::V4,
    );
    let (bound_tx, bound_rx) = mpsc::sync_channel::<io::Result<()>>(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (exit_tx, exit_rx) = oneshot::channel::<Exit>();
    let thread = std::thread::Builder::new()
        .name("pmon-broker".into())
        .spawn(move || {
            let exit = serve(server, bound_tx, stop_rx);
            debug!(?exit, "MQTT listener thread ends");
            let _ = exit_tx.send(exit);
        })
        .map_err(BrokerError::Thread)?;

    let timeout = config.startup_timeout();
    let mut handle = BrokerHandle {
        addr,
        stop: Some(stop_tx),
        exit: Some(exit_rx),
        ended: None,
        thread: Some(thread),
        router_alive,
    };
    match bound_rx.recv_timeout(timeout) {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            handle.stop_blocking();
            return Err(BrokerError::bind(addr, source));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            handle.join_if_finished();
            return Err(BrokerError::Panicked { addr });
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            handle.stop_blocking();
            return Err(BrokerError::NotAccepting {
                addr,
                timeout,
                detail: "the listener thread did not bind in time".into(),
            });
        }
    }

    // Bound by us; now prove the whole path (listener, connection task, router) answers.
    if let Err(detail) = probe::wait_for_connack(handle.client_addr(), timeout) {
        handle.stop_blocking();
        return Err(BrokerError::NotAccepting {
            addr,
            timeout,
            detail,
        });
    }
    if !handle.is_running() {
        handle.stop_blocking();
        return Err(BrokerError::RouterDied { addr });
    }
    info!(
        %addr,
        max_payload_size = config.max_payload_size,
        max_connections = config.max_connections,
        max_segment_size = config.max_segment_size,
        max_segment_count = config.max_segment_count,
        "MQTT broker listening (rumqttd, MQTT 3.1.1)"
    );
    Ok(handle)
}

/// The listener thread: a single-threaded runtime driving rumqttd's v4 server until told to
/// stop. Dropping the runtime at the end closes the listener and every connection task.
fn serve(
    mut server: rumqttd::Server<rumqttd::protocol::v4::V4>,
    bound_tx: mpsc::SyncSender<io::Result<()>>,
    stop_rx: oneshot::Receiver<()>,
) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let detail = format!("cannot build the listener runtime: {e}");
            let _ = bound_tx.send(Err(e));
            return Exit::Failed(detail);
        }
    };
    let exit = runtime.block_on(async move {
        let mut serving = pin!(server.start(rumqttd::LinkType::Remote));
        // The first poll binds the listener synchronously (`listen` is a SocketAddr, so there is
        // no resolution to wait for): Ready means the bind failed, Pending means it listens.
        let first = std::future::poll_fn(|cx| Poll::Ready(serving.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            let error = server_io_error(result);
            let detail = error.to_string();
            let _ = bound_tx.send(Err(error));
            return Exit::Failed(detail);
        }
        let _ = bound_tx.send(Ok(()));
        tokio::select! {
            result = serving => {
                let detail = server_io_error(result).to_string();
                error!(%detail, "MQTT listener failed");
                Exit::Failed(detail)
            }
            // A dropped handle stops it as well.
            _ = stop_rx => Exit::Stopped,
        }
    });
    drop(runtime);
    exit
}

/// The I/O error inside a rumqttd server error (its bind error is an `io::Error` source).
fn server_io_error<E: std::error::Error + 'static>(result: Result<(), E>) -> io::Error {
    let Err(error) = result else {
        return io::Error::other("the listener loop ended");
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(io_error) = e.downcast_ref::<io::Error>() {
            return io::Error::new(io_error.kind(), io_error.to_string());
        }
        cause = e.source();
    }
    io::Error::other(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(
        config: &BrokerConfig,
        addr: SocketAddr,
    ) -> rumqttd::Server<rumqttd::protocol::v4::V4> {
        let router_tx = rumqttd::Router::new(0, config.router_config()).spawn();
        rumqttd::Server::new(
            config.server_settings(addr),
            router_tx,
            rumqttd::protocol::v4::V4,
        )
    }

    /// The authoritative check, without the pre-check in front of it: rumqttd's own bind failing
    /// (another process took the port in between) is reported, not just logged.
    #[test]
    fn listener_thread_reports_its_failed_bind() {
        let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = holder.local_addr().expect("addr");
        let config = BrokerConfig::with_bind(addr);
        let (bound_tx, bound_rx) = mpsc::sync_channel(1);
        let (_stop_tx, stop_rx) = oneshot::channel();

        let exit = serve(server(&config, addr), bound_tx, stop_rx);

        assert!(matches!(exit, Exit::Failed(_)), "{exit:?}");
        match bound_rx.recv() {
            Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}"),
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    /// The first poll binds; the stop signal closes the listener.
    #[test]
    fn listener_thread_binds_on_first_poll_and_stops_on_signal() {
        let addr = free_port("127.0.0.1:0".parse().expect("addr")).expect("free port");
        let config = BrokerConfig::with_bind(addr);
        let server = server(&config, addr);
        let (bound_tx, bound_rx) = mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::spawn(move || serve(server, bound_tx, stop_rx));

        match bound_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            other => panic!("expected the listener to bind, got {other:?}"),
        }
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "listening once bound is signalled"
        );
        stop_tx.send(()).expect("thread alive");
        let exit = thread.join().expect("no panic");
        assert!(matches!(exit, Exit::Stopped), "{exit:?}");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "closed after stop"
        );
    }
}
