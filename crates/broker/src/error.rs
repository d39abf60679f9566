//! [`BrokerError`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why the embedded broker could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The `[broker]` table is not valid TOML or has an unknown key or a wrong type.
    #[error("invalid [broker] config: {0}")]
    Toml(#[source] Box<toml::de::Error>),

    /// A value rumqttd would accept and then fail on.
    #[error("invalid [broker] config: {0}")]
    InvalidConfig(String),

    /// Something else listens on the address: another broker (mosquitto, a second pmon) or any
    /// other program.
    #[error(
        "cannot listen for MQTT on {addr}: address already in use (is another MQTT broker, e.g. \
         mosquitto or a second pmon, running? stop it or set [broker] bind): {source}"
    )]
    PortInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },

    /// The listener could not be created for another reason (address not on this host, port
    /// below 1024 without the capability, …).
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },

    /// The listener was created but did not answer an MQTT CONNECT with a CONNACK in time.
    #[error("MQTT broker on {addr} did not accept a connection within {timeout:?}: {detail}")]
    NotAccepting {
        /// The listen address.
        addr: SocketAddr,
        /// How long it was given.
        timeout: Duration,
        /// What went wrong with the last attempt.
        detail: String,
    },

    /// The listener thread ended on its own with an error.
    #[error("MQTT broker on {addr} stopped: {detail}")]
    Stopped {
        /// The listen address.
        addr: SocketAddr,
        /// rumqttd's error.
        detail: String,
    },

    /// The listener thread panicked.
    #[error("MQTT broker on {addr} crashed (its thread panicked)")]
    Panicked {
        /// The listen address.
        addr: SocketAddr,
    },

    /// rumqttd's router thread (which every connection talks to) is gone, so no client can be
    /// served any more.
    #[error("MQTT broker on {addr} crashed (its router thread died)")]
    RouterDied {
        /// The listen address.
        addr: SocketAddr,
    },

    /// A thread could not be created, or the blocking start task failed.
    #[error("cannot start the MQTT broker thread: {0}")]
    Thread(#[source] io::Error),
}

impl BrokerError {
    /// Maps a failed bind of `addr` to [`BrokerError::PortInUse`] or [`BrokerError::Bind`].
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            Self::PortInUse { addr, source }
        } else {
            Self::Bind { addr, source }
        }
    }
}
