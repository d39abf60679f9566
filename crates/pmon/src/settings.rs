//! The config file and how command-line options override it.

use std::path::{Path, PathBuf};

use pmon_acquire::{CircuitLabel, HomeAssistantConfig, MqttConfig, Settings};
use pmon_broker::BrokerConfig;
use pmon_historian::store::StoreOptions;
use serde::Deserialize;

use crate::cli::Common;

/// A documented config file with every default, as `pmon config example` prints it.
pub const EXAMPLE: &str = include_str!("example.toml");

/// Default site name.
pub const DEFAULT_SITE: &str = "home";
/// Default data directory, relative to where pmon starts.
pub const DEFAULT_DATA_DIR: &str = "pmon-data";
/// Slaves simulated when no bus is configured.
pub const DEMO_CIRCUITS: usize = 8;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: toml::de::Error,
    },
    /// The simulator file is not valid.
    #[error(transparent)]
    Simulator(#[from] pmon_sim::ConfigError),
}

/// `[mqtt]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Broker URL.
    pub url: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep-alive, s (default 30): a vanished acquisition is reported `offline` after 1.5 × this.
    pub keep_alive_s: Option<u64>,
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Site name.
    pub site: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// `[mqtt]`.
    pub mqtt: MqttSection,
    /// `[broker]`.
    pub broker: BrokerConfig,
    /// `[acquisition]`.
    pub acquisition: Settings,
    /// `[historian]`.
    pub historian: HistorianSection,
    /// `[[circuit]]`.
    pub circuit: Vec<CircuitLabel>,
    /// `[homeassistant]`.
    pub homeassistant: HomeAssistantConfig,
    /// `[web]`.
    pub web: WebSection,
}

/// `[web]`: the web UI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Address of the web UI (default `0.0.0.0:8080`); `--http-port` replaces the port.
    pub bind: std::net::SocketAddr,
    /// A first password for the settings pages, hashed and stored in the data directory at
    /// start when none is stored yet (`pmon web --set-password` is the other way).
    pub password: Option<String>,
    /// The historian's query API as `host:port` when it runs elsewhere (a container); by
    /// default `[historian] api_bind` on this machine.
    pub historian: Option<String>,
}

impl Default for WebSection {
    fn default() -> WebSection {
        WebSection {
            bind: pmon_web::config::DEFAULT_HTTP_BIND,
            password: None,
            historian: None,
        }
    }
}

/// `[historian]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorianSection {
    /// Address of the query API. Loopback by default; `0.0.0.0:8081` serves the LAN (and a
    /// web container). `--api-port` replaces the port.
    pub api_bind: std::net::SocketAddr,
    /// Longest wait before received records are committed, ms.
    pub commit_interval_ms: u64,
    /// Commit early once this many messages wait for their acknowledgement.
    pub max_unacked: usize,
    /// `[historian.retention]`: days kept per tier.
    pub retention: StoreOptions,
}

impl Default for HistorianSection {
    fn default() -> HistorianSection {
        HistorianSection {
            api_bind: pmon_historian::config::DEFAULT_API_BIND,
            commit_interval_ms: pmon_historian::config::DEFAULT_COMMIT_INTERVAL_MS,
            max_unacked: pmon_historian::config::DEFAULT_MAX_UNACKED,
            retention: StoreOptions::default(),
        }
    }
}

impl FileConfig {
    /// Parses a config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, SettingsError> {
        toml::from_str(text).map_err(|source| SettingsError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }
}

/// The configuration in force: file, then command line.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Site name.
    pub site: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The embedded broker.
    pub broker: BrokerConfig,
    /// How services reach the broker.
    pub mqtt: MqttConfig,
    /// The acquisition.
    pub acquisition: Settings,
    /// The historian.
    pub historian: HistorianSection,
    /// Circuit names.
    pub circuits: Vec<CircuitLabel>,
    /// Home Assistant discovery.
    pub homeassistant: HomeAssistantConfig,
    /// The web UI.
    pub web: WebSection,
    /// What to simulate, if anything; `None` means the configured hardware buses.
    pub simulator: Option<(pmon_sim::SimConfig, String)>,
}

/// Loads the config file named in `common` (if any) and applies the command-line overrides.
pub fn resolve(common: &Common) -> Result<Resolved, SettingsError> {
    let file = match &common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut broker = file.broker;
    if let Some(port) = common.mqtt_port {
        broker.bind.set_port(port);
    }
    let port = broker.bind.port();
    let url = common
        .mqtt_url
        .clone()
        .or(file.mqtt.url)
        .unwrap_or_else(|| format!("mqtt://127.0.0.1:{port}"));
    let credentials = file.mqtt.username.zip(file.mqtt.password);
    let simulator = if let Some(path) = &common.sim_config {
        Some((
            pmon_sim::SimConfig::from_file(path)?,
            format!("the simulator with {}", path.display()),
        ))
    } else if let Some(n) = common.sim {
        Some((
            pmon_sim::SimConfig::demo(n, 1),
            format!("the simulator with {n} demo circuits"),
        ))
    } else if file.acquisition.bus.is_empty() {
        Some((
            pmon_sim::SimConfig::demo(DEMO_CIRCUITS, 1),
            format!(
                "the simulator with {DEMO_CIRCUITS} demo circuits, as no I2C bus is configured"
            ),
        ))
    } else {
        None
    };
    Ok(Resolved {
        site: common
            .site
            .clone()
            .or(file.site)
            .unwrap_or_else(|| DEFAULT_SITE.into()),
        data_dir: common
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        broker,
        mqtt: MqttConfig {
            url,
            client_id: None,
            credentials,
            keep_alive_s: file
                .mqtt
                .keep_alive_s
                .unwrap_or(pmon_acquire::config::DEFAULT_KEEP_ALIVE_S),
        },
        acquisition: file.acquisition,
        historian: HistorianSection {
            api_bind: match common.api_port {
                Some(port) => std::net::SocketAddr::new(file.historian.api_bind.ip(), port),
                None => file.historian.api_bind,
            },
            ..file.historian
        },
        circuits: file.circuit,
        homeassistant: file.homeassistant,
        web: WebSection {
            bind: match common.http_port {
                Some(port) => std::net::SocketAddr::new(file.web.bind.ip(), port),
                None => file.web.bind,
            },
            ..file.web
        },
        simulator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_to_the_defaults() {
        let parsed = FileConfig::parse(EXAMPLE, Path::new("example.toml")).unwrap();
        assert_eq!(parsed.site.as_deref(), Some(DEFAULT_SITE));
        assert_eq!(parsed.data_dir, Some(PathBuf::from(DEFAULT_DATA_DIR)));
        assert_eq!(parsed.broker, BrokerConfig::default());
        assert_eq!(parsed.acquisition, Settings::default());
        assert_eq!(parsed.historian, HistorianSection::default());
        assert!(parsed.circuit.is_empty());
        assert_eq!(parsed.homeassistant, HomeAssistantConfig::default());
        assert_eq!(parsed.web, WebSection::default());
        assert_eq!(parsed.mqtt.keep_alive_s, Some(30));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let error = FileConfig::parse(
            "site = \"x\"\n[acquisition]\npoll_intervall_ms = 5\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("c.toml"), "{error}");
        assert!(error.contains("poll_intervall_ms"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn command_line_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmon.toml");
        std::fs::write(
            &path,
            "site = \"cabin\"\n[broker]\nbind = \"127.0.0.1:1999\"\n",
        )
        .unwrap();
        let common = Common {
            config: Some(path.clone()),
            ..Common::default()
        };
        let resolved = resolve(&common).unwrap();
        assert_eq!(resolved.site, "cabin");
        assert_eq!(resolved.mqtt.url, "mqtt://127.0.0.1:1999");
        let common = Common {
            config: Some(path),
            site: Some("barn".into()),
            mqtt_port: Some(2000),
            sim: Some(3),
            ..Common::default()
        };
        let resolved = resolve(&common).unwrap();
        assert_eq!(resolved.site, "barn");
        assert_eq!(resolved.broker.bind.port(), 2000);
        assert_eq!(resolved.mqtt.url, "mqtt://127.0.0.1:2000");
        assert!(resolved.simulator.is_some());
    }
}
