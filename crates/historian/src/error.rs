//! [`HistorianError`]: why the service stopped or could not start.

use std::net::SocketAddr;

use crate::store::StoreError;

/// Why the historian service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistorianError {
    /// The site name cannot be an MQTT topic level.
    #[error("site name {0:?} cannot be an MQTT topic level (no '/', '+', '#', at most 64 bytes)")]
    Site(String),
    /// The broker URL or client settings are unusable.
    #[error("broker URL {url:?}: {reason}")]
    MqttUrl {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The query API's address could not be bound (taken port, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed (opening, committing, a full disk).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A thread or task of the service stopped unexpectedly.
    #[error("internal: {0}")]
    Internal(String),
}
