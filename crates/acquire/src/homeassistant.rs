//! Home Assistant discovery bookkeeping: the `[homeassistant]` table, which circuits are
//! announced and which must be removed, and what to publish when — without any I/O but the
//! small registry file. The [`crate::mqtt::Publisher`] sends what this decides.
//!
//! # When a circuit is removed from Home Assistant
//!
//! Never because a board stopped answering: an unplugged or broken board stays in Home
//! Assistant, unavailable, with its history, and comes back by itself. A circuit leaves Home
//! Assistant only when the configuration says so:
//!
//! - its id is listed in `[homeassistant] remove`, or
//! - `[homeassistant] enabled = false` (every circuit pmon announced leaves).
//!
//! pmon then publishes an empty retained message on every discovery topic it used for the
//! circuit, which makes Home Assistant delete the device and its entities, and announces it
//! no more while it is listed. The topics come from the registry in the data directory
//! (`homeassistant.json`: each circuit announced, its description and its discovery topics),
//! so removal also works for a circuit whose board is gone, and a change of `prefix` or
//! `mode` clears the old topics before the new ones are published (after a pause, so that
//! Home Assistant has dropped the old entities before their unique ids come back).
//!
//! Circuits in the registry are announced again at start-up from their stored description,
//! before their boards are found: Home Assistant keeps them across a broker restart (rumqttd
//! forgets retained messages) even while a board is away.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use pmon_proto::discovery::{self, Discovery, Message, Mode};
use pmon_proto::health::CircuitInfo;
use pmon_proto::topic::valid_level;
use pmon_proto::Topics;
use serde::{Deserialize, Serialize};

/// Name of the registry file inside the data directory.
pub const FILE_NAME: &str = "homeassistant.json";

/// The `[homeassistant]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish discovery (default true). `false` also removes what pmon announced before.
    pub enabled: bool,
    /// Home Assistant's discovery prefix (default `homeassistant`).
    pub prefix: String,
    /// `device` (one message per circuit, Home Assistant ≥ 2024.11; default) or `entity`
    /// (one message per sensor, for older Home Assistant).
    pub mode: Mode,
    /// Home Assistant's birth topic: discovery and state are sent again when `online`
    /// arrives here (default `homeassistant/status`, Home Assistant's own default even with
    /// another prefix).
    pub status_topic: String,
    /// Circuit ids (`00c0ffee`) to remove from Home Assistant and not announce.
    pub remove: Vec<String>,
}

impl Default for HomeAssistantConfig {
    fn default() -> HomeAssistantConfig {
        HomeAssistantConfig {
            enabled: true,
            prefix: discovery::DEFAULT_PREFIX.into(),
            mode: Mode::Device,
            status_topic: discovery::DEFAULT_STATUS_TOPIC.into(),
            remove: Vec::new(),
        }
    }
}

/// A topic pmon may publish on: not empty, no wildcard or NUL, no empty level at either end.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && !topic.contains(['+', '#', '\0'])
        && !topic.starts_with('/')
        && !topic.ends_with('/')
}

impl HomeAssistantConfig {
    /// Refuses values that cannot work, with the key's name.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_topic(&self.prefix) {
            return Err(format!(
                "homeassistant.prefix {:?} is not a topic prefix (no +, #, leading or trailing /)",
                self.prefix
            ));
        }
        if !valid_topic(&self.status_topic) {
            return Err(format!(
                "homeassistant.status_topic {:?} is not a topic",
                self.status_topic
            ));
        }
        if let Some(bad) = self.remove.iter().find(|id| !valid_level(id)) {
            return Err(format!(
                "homeassistant.remove: {bad:?} is not a circuit id (e.g. \"00c0ffee\")"
            ));
        }
        Ok(())
    }
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not what this build writes.
    #[error("{path} is not a pmon Home Assistant registry: {source} (move it away to start afresh; pmon then forgets which discovery topics it used)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// What the registry remembers of one circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its last description.
    pub info: CircuitInfo,
    /// The discovery topics that hold its announcement (empty once removed).
    pub topics: Vec<String>,
}

/// `homeassistant.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Registry {
    /// Every circuit ever announced, by id.
    pub circuits: BTreeMap<String, Entry>,
    /// Topics still to be cleared (sent on the next connection).
    pub clear: BTreeSet<String>,
    /// Listed circuits never announced from this registry whose topics were cleared anyway.
    pub cleared: BTreeSet<String>,
}

/// A publish the [`HomeAssistant`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A discovery message, retained.
    Announce(Message),
    /// An empty retained message: removes the discovery config under this topic.
    Clear(String),
}

/// What to do on a CONNACK.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OnConnect {
    /// Topics to clear now.
    pub clear: Vec<String>,
    /// Discovery to publish now; empty while clears must settle first ([`HomeAssistant::settled`]).
    pub announce: Vec<Message>,
    /// Whether discovery waits for [`HomeAssistant::settled`].
    pub settle: bool,
}

/// Discovery state of one site.
#[derive(Debug)]
pub struct HomeAssistant {
    config: HomeAssistantConfig,
    discovery: Discovery,
    topics: Topics,
    path: Option<PathBuf>,
    registry: Registry,
    /// The announcement of every circuit to publish, by circuit id.
    announced: BTreeMap<String, Vec<Message>>,
    /// Whether discovery may be published right now (connected and nothing left to settle).
    ready: bool,
}

impl HomeAssistant {
    /// Loads the registry from `data_dir` (none: memory only) and works out, from the
    /// configuration, which earlier announcements to withdraw and which to repeat.
    pub fn open(
        config: HomeAssistantConfig,
        site: &str,
        topics: Topics,
        data_dir: Option<&Path>,
    ) -> Result<HomeAssistant, RegistryError> {
        let (path, registry) = match data_dir {
            Some(dir) => {
                let path = dir.join(FILE_NAME);
                let registry = read(&path)?;
                (Some(path), registry)
            }
            None => (None, Registry::default()),
        };
        let discovery = Discovery {
            prefix: config.prefix.clone(),
            mode: config.mode,
            site: site.to_string(),
            sw_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut ha = HomeAssistant {
            config,
            discovery,
            topics,
            path,
            registry,
            announced: BTreeMap::new(),
            ready: false,
        };
        let known: Vec<(String, Entry)> = ha
            .registry
            .circuits
            .iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        for (id, entry) in known {
            let messages = if ha.wanted(&id) {
                ha.discovery.messages(&ha.topics, &entry.info)
            } else {
                Vec::new()
            };
            ha.reconcile(&id, &entry.info, messages);
        }
        // A listed circuit pmon never announced (the data directory was lost) may still hold
        // discovery from an earlier life: clear the current form's topics once.
        let unknown: Vec<String> = ha
            .config
            .remove
            .iter()
            .filter(|id| !ha.registry.circuits.contains_key(*id))
            .cloned()
            .collect();
        for id in unknown {
            ha.clear_unknown(&id);
        }
        ha.save()?;
        Ok(ha)
    }

    /// Whether this circuit is to be in Home Assistant.
    pub fn wanted(&self, circuit: &str) -> bool {
        self.config.enabled && !self.config.remove.iter().any(|id| id == circuit)
    }

    /// The birth topic to subscribe to, when discovery is on.
    pub fn status_topic(&self) -> Option<&str> {
        self.config
            .enabled
            .then_some(self.config.status_topic.as_str())
    }

    /// Circuits known from earlier runs.
    pub fn known_circuits(&self) -> Vec<String> {
        self.registry.circuits.keys().cloned().collect()
    }

    /// The registry as it stands.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records that `info` describes a circuit found now; returns what to publish at once.
    pub fn announce(&mut self, info: &CircuitInfo) -> Vec<Outgoing> {
        let messages = if self.wanted(&info.id) {
            self.discovery.messages(&self.topics, info)
        } else if !self.registry.circuits.contains_key(&info.id) {
            self.clear_unknown(&info.id);
            Vec::new()
        } else {
            Vec::new()
        };
        let changed = self.reconcile(&info.id, info, messages);
        let mut out = Vec::new();
        if self.ready {
            out.extend(self.take_clears().into_iter().map(Outgoing::Clear));
            if changed {
                out.extend(
                    self.announced
                        .get(&info.id)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(Outgoing::Announce),
                );
            }
        }
        if let Err(error) = self.save() {
            tracing::warn!(%error, "cannot save the Home Assistant registry");
        }
        out
    }

    /// Sets a circuit's announcement; topics it no longer uses go to the clear list.
    /// Returns whether the announcement changed.
    fn reconcile(&mut self, id: &str, info: &CircuitInfo, messages: Vec<Message>) -> bool {
        let topics: Vec<String> = messages.iter().map(|m| m.topic.clone()).collect();
        if let Some(old) = self.registry.circuits.get(id) {
            for topic in &old.topics {
                if !topics.contains(topic) {
                    self.registry.clear.insert(topic.clone());
                }
            }
        }
        for topic in &topics {
            self.registry.clear.remove(topic);
        }
        let entry = Entry {
            info: info.clone(),
            topics,
        };
        let changed = self.announced.get(id) != Some(&messages);
        if self.registry.circuits.get(id) != Some(&entry) {
            self.registry.circuits.insert(id.to_string(), entry);
        }
        if messages.is_empty() {
            self.announced.remove(id);
        } else {
            self.announced.insert(id.to_string(), messages);
        }
        changed
    }

    /// A circuit to remove that this registry never announced, but an earlier data directory
    /// may have: clears its topics in the current form, once.
    fn clear_unknown(&mut self, id: &str) {
        if self.registry.cleared.insert(id.to_string()) {
            self.registry.clear.extend(self.discovery.topics(id));
        }
    }

    fn take_clears(&mut self) -> Vec<String> {
        std::mem::take(&mut self.registry.clear)
            .into_iter()
            .collect()
    }

    /// The connection is up: clear what must go, and announce everything unless the clears
    /// must reach Home Assistant first.
    pub fn connected(&mut self) -> OnConnect {
        let clear = self.take_clears();
        if let Err(error) = self.save() {
            tracing::warn!(%error, "cannot save the Home Assistant registry");
        }
        let settle = !clear.is_empty() && !self.announced.is_empty();
        self.ready = !settle;
        OnConnect {
            announce: if settle { Vec::new() } else { self.all() },
            clear,
            settle,
        }
    }

    /// The clears of [`HomeAssistant::connected`] have had time to work: clears owed since,
    /// then everything to announce.
    pub fn settled(&mut self) -> Vec<Outgoing> {
        self.ready = true;
        let mut out: Vec<Outgoing> = self
            .take_clears()
            .into_iter()
            .map(Outgoing::Clear)
            .collect();
        if let Err(error) = self.save() {
            tracing::warn!(%error, "cannot save the Home Assistant registry");
        }
        out.extend(self.all().into_iter().map(Outgoing::Announce));
        out
    }

    /// The connection is down: discovery waits for the next one.
    pub fn disconnected(&mut self) {
        self.ready = false;
    }

    /// Home Assistant said `online` on its birth topic: everything to announce again (none
    /// while clears are settling; the announcement follows then).
    pub fn birth(&self) -> Vec<Message> {
        if self.ready {
            self.all()
        } else {
            Vec::new()
        }
    }

    /// Every current announcement, circuit by circuit.
    pub fn all(&self) -> Vec<Message> {
        self.announced.values().flatten().cloned().collect()
    }

    fn save(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        write(path, &self.registry)
    }
}

fn read(path: &Path) -> Result<Registry, RegistryError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RegistryError::Format {
            path: path.to_path_buf(),
            source,
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(source) => Err(RegistryError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the registry to a temporary file, syncs it and renames it over the old one, so a
/// power cut leaves one or the other. Skipped when nothing changed.
fn write(path: &Path, registry: &Registry) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(registry).map_err(|source| RegistryError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    if fs::read(path).ok().as_deref() == Some(json.as_slice()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    crate::store::write_atomically(path, &json).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str) -> CircuitInfo {
        CircuitInfo {
            id: id.into(),
            name: name.into(),
            bus: "sim-0".into(),
            address: 16,
            serial: u32::from_str_radix(id, 16).unwrap(),
            firmware: "1.2.3".into(),
            protocol: "pmon-1".into(),
            sample_rate: 1800,
        }
    }

    fn open(config: HomeAssistantConfig, dir: &Path) -> HomeAssistant {
        HomeAssistant::open(config, "home", Topics::new("home").unwrap(), Some(dir)).unwrap()
    }

    fn announced(out: &[Outgoing]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Announce(m) => Some(m.topic.as_str()),
                Outgoing::Clear(_) => None,
            })
            .collect()
    }

    fn cleared(out: &[Outgoing]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Clear(t) => Some(t.as_str()),
                Outgoing::Announce(_) => None,
            })
            .collect()
    }

    const A: &str = "homeassistant/device/pmon_home_0000000a/config";
    const B: &str = "homeassistant/device/pmon_home_0000000b/config";

    #[test]
    fn the_defaults_are_device_discovery_under_homeassistant() {
        let config = HomeAssistantConfig::default();
        assert!(config.enabled);
        assert_eq!(config.prefix, "homeassistant");
        assert_eq!(config.mode, Mode::Device);
        assert_eq!(config.status_topic, "homeassistant/status");
        assert!(config.validate().is_ok());
        for (prefix, status) in [("", "s"), ("ha/#", "s"), ("/ha", "s"), ("ha", "a/+")] {
            let bad = HomeAssistantConfig {
                prefix: prefix.into(),
                status_topic: status.into(),
                ..HomeAssistantConfig::default()
            };
            assert!(bad.validate().is_err(), "{prefix} {status}");
        }
        let bad = HomeAssistantConfig {
            remove: vec!["a/b".into()],
            ..HomeAssistantConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("homeassistant.remove"));
    }

    #[test]
    fn found_circuits_are_announced_once_connected_and_again_on_birth() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        // Before the connection: remembered, not yet published.
        assert!(ha.announce(&info("0000000a", "Heat pump")).is_empty());
        let on = ha.connected();
        assert!(!on.settle);
        assert!(on.clear.is_empty());
        assert_eq!(on.announce.len(), 1);
        assert_eq!(on.announce[0].topic, A);
        // Once connected: published at once, and not again while nothing changes.
        let out = ha.announce(&info("0000000b", "Oven"));
        assert_eq!(announced(&out), [B]);
        assert!(ha.announce(&info("0000000b", "Oven")).is_empty());
        let renamed = ha.announce(&info("0000000b", "Kitchen oven"));
        assert_eq!(announced(&renamed), [B]);
        let birth: Vec<String> = ha.birth().into_iter().map(|m| m.topic).collect();
        assert_eq!(birth, [A, B]);
        ha.disconnected();
        assert!(ha.birth().is_empty());
    }

    #[test]
    fn a_board_that_is_gone_stays_announced_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        ha.connected();
        ha.announce(&info("0000000a", "Heat pump"));
        drop(ha);
        // Next run: the board does not answer, yet the device is announced from the registry.
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        assert_eq!(ha.known_circuits(), ["0000000a"]);
        let on = ha.connected();
        assert!(on.clear.is_empty());
        assert_eq!(on.announce.len(), 1);
        assert!(on.announce[0].payload.contains("Heat pump"));
    }

    #[test]
    fn a_listed_circuit_is_cleared_once_and_never_announced() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        ha.connected();
        ha.announce(&info("0000000a", "Heat pump"));
        ha.announce(&info("0000000b", "Oven"));
        drop(ha);
        let config = HomeAssistantConfig {
            remove: vec!["0000000b".into()],
            ..HomeAssistantConfig::default()
        };
        let mut ha = open(config.clone(), dir.path());
        let on = ha.connected();
        assert_eq!(on.clear, [B]);
        assert!(
            on.settle,
            "A's announcement waits until B's removal is through"
        );
        let later = ha.settled();
        assert_eq!(announced(&later), [A]);
        assert!(cleared(&later).is_empty());
        // The board answers again: still not announced.
        assert!(ha.announce(&info("0000000b", "Oven")).is_empty());
        assert!(ha.birth().iter().all(|m| m.topic != B));
        drop(ha);
        // The run after: nothing left to clear.
        let mut ha = open(config, dir.path());
        let on = ha.connected();
        assert!(on.clear.is_empty());
        assert_eq!(on.announce.len(), 1);
    }

    #[test]
    fn a_listed_circuit_unknown_to_the_registry_is_cleared_too() {
        let dir = tempfile::tempdir().unwrap();
        let config = HomeAssistantConfig {
            remove: vec!["0000000b".into()],
            ..HomeAssistantConfig::default()
        };
        let mut ha = open(config, dir.path());
        let on = ha.connected();
        assert_eq!(on.clear, [B]);
        assert!(!on.settle, "nothing to announce, nothing to wait for");
        // Found later in the run: already cleared, nothing more.
        assert!(ha.announce(&info("0000000b", "Oven")).is_empty());
    }

    #[test]
    fn disabling_discovery_withdraws_everything_announced() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        ha.connected();
        ha.announce(&info("0000000a", "Heat pump"));
        drop(ha);
        let off = HomeAssistantConfig {
            enabled: false,
            ..HomeAssistantConfig::default()
        };
        let mut ha = open(off.clone(), dir.path());
        assert_eq!(ha.status_topic(), None);
        let on = ha.connected();
        assert_eq!(on.clear, [A]);
        assert!(on.announce.is_empty());
        assert!(ha.announce(&info("0000000a", "Heat pump")).is_empty());
        drop(ha);
        let mut ha = open(off, dir.path());
        assert_eq!(ha.connected(), OnConnect::default());
    }

    #[test]
    fn a_mode_change_clears_the_old_topics_before_announcing_the_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        ha.connected();
        ha.announce(&info("0000000a", "Heat pump"));
        drop(ha);
        let entity = HomeAssistantConfig {
            mode: Mode::Entity,
            prefix: "ha".into(),
            ..HomeAssistantConfig::default()
        };
        let mut ha = open(entity, dir.path());
        let on = ha.connected();
        assert_eq!(on.clear, [A]);
        assert!(on.settle);
        assert!(on.announce.is_empty());
        // Announced meanwhile: held back until settled.
        assert!(ha.announce(&info("0000000a", "Heat pump")).is_empty());
        let later = ha.settled();
        let topics = announced(&later);
        assert_eq!(topics.len(), discovery::QUANTITIES.len());
        assert!(topics
            .iter()
            .all(|t| t.starts_with("ha/sensor/pmon_home_0000000a/")));
        assert_eq!(
            ha.registry().circuits["0000000a"].topics.len(),
            topics.len()
        );
    }

    #[test]
    fn clears_survive_a_restart_before_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut ha = open(HomeAssistantConfig::default(), dir.path());
        ha.connected();
        ha.announce(&info("0000000a", "Heat pump"));
        drop(ha);
        let off = HomeAssistantConfig {
            enabled: false,
            ..HomeAssistantConfig::default()
        };
        // Killed before it ever connected: the clear is still owed next time.
        drop(open(off.clone(), dir.path()));
        let mut ha = open(off, dir.path());
        assert_eq!(ha.connected().clear, [A]);
    }

    #[test]
    fn a_corrupt_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"[").unwrap();
        let error = HomeAssistant::open(
            HomeAssistantConfig::default(),
            "home",
            Topics::new("home").unwrap(),
            Some(dir.path()),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("Home Assistant registry"), "{error}");
    }
}
