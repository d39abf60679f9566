//! [`HistorianConfig`]: everything the historian service needs, with documented defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::StoreOptions;

/// Default address of the query API: loopback only, port 8081.
pub const DEFAULT_API_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
/// Default longest time between two commits while messages wait, in ms.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1_000;
/// Default number of unacknowledged QoS 1 messages that makes the historian commit at once.
///
/// rumqttd 0.20 (pmon's embedded broker) sends a subscriber at most 100 unacknowledged QoS 1
/// messages (`MAX_INFLIGHT` in `rumqttd/src/router/iobufs.rs`, a constant); mosquitto's
/// `max_inflight_messages` defaults to 20 (see `docs/historian.md` for the setting pmon wants).
/// When the broker's window is full it sends nothing until we acknowledge, so the historian
/// must commit (and acknowledge) when it holds a full window. A smaller broker window is
/// detected at run time (see [`crate::ingest::CommitPolicy`]).
pub const DEFAULT_MAX_UNACKED: usize = 100;
/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "historian.sqlite";

/// How to reach the MQTT broker (the same shape as the acquisition's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// `mqtt://host:port` (or `tcp://`).
    pub url: String,
    /// Client id; `pmon-historian-<site>` when absent. It must be stable: the broker keeps the
    /// historian's persistent session (and the messages it has not acknowledged) under it.
    pub client_id: Option<String>,
    /// Optional user name and password.
    pub credentials: Option<(String, String)>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            credentials: None,
        }
    }
}

/// Everything the historian service needs.
#[derive(Debug, Clone)]
pub struct HistorianConfig {
    /// Site name: the second level of every topic (`pmon/<site>/…`).
    pub site: String,
    /// The broker.
    pub mqtt: MqttSettings,
    /// Directory of the database file ([`DB_FILE`]); created when missing.
    pub data_dir: PathBuf,
    /// Address of the HTTP query API. Default `127.0.0.1:8081` ([`DEFAULT_API_BIND`]).
    pub api_bind: SocketAddr,
    /// Retention per tier.
    pub store: StoreOptions,
    /// Longest time received records wait before a commit, in ms (default 1000: at most about
    /// one commit a second, which keeps an SD card's write volume low).
    pub commit_interval_ms: u64,
    /// Commit as soon as this many QoS 1 messages wait for their acknowledgement (default
    /// [`DEFAULT_MAX_UNACKED`], the embedded broker's inflight window).
    pub max_unacked: usize,
    /// Only verify the database and report (`pmon historian --check`); see [`crate::check`].
    pub check: bool,
}

impl HistorianConfig {
    /// Defaults for `site` with the database under `data_dir`.
    pub fn new(site: impl Into<String>, data_dir: impl Into<PathBuf>) -> HistorianConfig {
        HistorianConfig {
            site: site.into(),
            mqtt: MqttSettings::default(),
            data_dir: data_dir.into(),
            api_bind: DEFAULT_API_BIND,
            store: StoreOptions::default(),
            commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
            max_unacked: DEFAULT_MAX_UNACKED,
            check: false,
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        db_path(&self.data_dir)
    }

    /// The MQTT client id: the configured one or `pmon-historian-<site>`.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("pmon-historian-{}", self.site))
    }

    /// [`HistorianConfig::commit_interval_ms`] as a duration (at least 1 ms).
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(1))
    }
}

/// The database file of a data directory. A path that names a file (not a directory) is taken
/// as the database itself, so `--check` accepts either.
pub fn db_path(data_dir: &Path) -> PathBuf {
    if data_dir.is_file() {
        data_dir.to_path_buf()
    } else {
        data_dir.join(DB_FILE)
    }
}
