//! [`WebConfig`]: everything the web service needs, and [`WebError`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Default address of the web UI: every interface, port 8080 (read-only pages are open on the
/// LAN; changes need a login).
pub const DEFAULT_HTTP_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// Default address of the historian's query API.
pub const DEFAULT_HISTORIAN: &str = "127.0.0.1:8081";
/// Seconds without a new state after which a circuit shows as stale.
pub const DEFAULT_STALE_AFTER_S: u64 = 5;

/// Everything the web service needs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Site name: the second level of every topic (`pmon/<site>/…`).
    pub site: String,
    /// `mqtt://host:port` (or `tcp://`).
    pub mqtt_url: String,
    /// Optional MQTT user name and password.
    pub mqtt_credentials: Option<(String, String)>,
    /// Where the UI listens.
    pub http_bind: SocketAddr,
    /// The historian's query API, `host:port` (proxied under `/api/history/`; the name is
    /// resolved on every request, so `historian:8081` works in docker-compose).
    pub historian: String,
    /// Directory of the web service's own files (`web-settings.json`, `web-auth.json`).
    pub data_dir: PathBuf,
    /// A password from the configuration: hashed and stored at start when no password is set.
    pub initial_password: Option<String>,
    /// Seconds without a state before a circuit shows as stale.
    pub stale_after_s: u64,
}

impl WebConfig {
    /// Defaults for `site` with the service's files under `data_dir`.
    pub fn new(site: impl Into<String>, data_dir: impl Into<PathBuf>) -> WebConfig {
        WebConfig {
            site: site.into(),
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            mqtt_credentials: None,
            http_bind: DEFAULT_HTTP_BIND,
            historian: DEFAULT_HISTORIAN.into(),
            data_dir: data_dir.into(),
            initial_password: None,
            stale_after_s: DEFAULT_STALE_AFTER_S,
        }
    }

    /// The MQTT client id: `pmon-web-<site>-<pid>` (QoS 0 subscriber, no session to keep).
    pub fn client_id(&self) -> String {
        format!("pmon-web-{}-{}", self.site, std::process::id())
    }
}

/// Why the web service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The site name cannot be an MQTT topic level.
    #[error("site name {0:?} cannot be an MQTT topic level (no '/', '+', '#', at most 64 bytes)")]
    Site(String),
    /// The broker URL is unusable.
    #[error("broker URL {url:?}: {reason}")]
    MqttUrl {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory or one of the service's files could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file of the service is not valid.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP port could not be bound (taken port, no permission).
    #[error("cannot listen on {addr} (is another pmon web running? choose another --http-port)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A password could not be used.
    #[error("password: {0}")]
    Password(String),
}
