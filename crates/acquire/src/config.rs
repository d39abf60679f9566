//! The acquisition's configuration: the `[acquisition]` table of pmon's config file, plus
//! what the binary supplies (site, broker URL, data directory, simulator).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One physical I2C bus (a Linux `/dev/i2c-N` adapter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// A name for logs, health and circuit info, e.g. `i2c-1`.
    pub id: String,
    /// The adapter's device file, e.g. `/dev/i2c-1`.
    pub path: PathBuf,
}

/// A label for a circuit, matched by the board's serial number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitLabel {
    /// The slave's serial number (its circuit id is this in 8 hex digits).
    pub serial: u32,
    /// What the user calls it.
    pub name: String,
}

/// The `[acquisition]` table. Every key is optional; the defaults are documented in
/// `pmon config example`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How often every slave's FIFO is drained, ms. A slave makes a block every 200 ms and
    /// holds 32, so anything up to a few seconds loses nothing.
    pub poll_interval_ms: u64,
    /// How often the JSON state of each circuit is published, ms.
    pub state_interval_ms: u64,
    /// How often per-circuit health is published, s.
    pub health_interval_s: u64,
    /// How often the buses are scanned for new slaves, s.
    pub rescan_interval_s: u64,
    /// Consecutive failed polls before a circuit is reported offline.
    pub offline_after: u32,
    /// Attempts per transaction before a poll fails (CRC errors, NACKs).
    pub retries: u8,
    /// Most records buffered while the broker is unreachable; the oldest go first when full.
    pub queue_capacity: usize,
    /// Physical buses. Empty: the simulator runs instead.
    pub bus: Vec<BusConfig>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            poll_interval_ms: 200,
            state_interval_ms: 1000,
            health_interval_s: 10,
            rescan_interval_s: 30,
            offline_after: 3,
            retries: 3,
            // 100 circuits × 5 records/s × 5 min.
            queue_capacity: 150_000,
            bus: Vec::new(),
        }
    }
}

impl Settings {
    /// Refuses values that cannot work, with the key's name.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("poll_interval_ms", self.poll_interval_ms),
            ("state_interval_ms", self.state_interval_ms),
            ("health_interval_s", self.health_interval_s),
            ("rescan_interval_s", self.rescan_interval_s),
            ("offline_after", self.offline_after as u64),
            ("retries", self.retries as u64),
            ("queue_capacity", self.queue_capacity as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("acquisition.{key} must be greater than 0"));
            }
        }
        if self.poll_interval_ms > 5_000 {
            return Err(
                "acquisition.poll_interval_ms above 5000 lets a slave's FIFO overflow".into(),
            );
        }
        let mut ids: Vec<&str> = self.bus.iter().map(|b| b.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("acquisition.bus ids must be unique".into());
        }
        Ok(())
    }

    /// [`Settings::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// How to reach the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `mqtt://host:port` (or `tcp://`).
    pub url: String,
    /// Client id; the acquisition uses `pmon-acquire-<site>` when absent.
    pub client_id: Option<String>,
    /// Optional user name and password.
    pub credentials: Option<(String, String)>,
}

/// Where the measurements come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Physical buses from [`Settings::bus`].
    Hardware,
    /// Simulated slaves, in real time.
    Simulator(pmon_sim::SimConfig),
}

/// Everything the acquisition service needs.
#[derive(Debug, Clone)]
pub struct AcquireConfig {
    /// The site name: the second level of every topic.
    pub site: String,
    /// The broker.
    pub mqtt: MqttConfig,
    /// The `[acquisition]` table.
    pub settings: Settings,
    /// Circuit names.
    pub circuits: Vec<CircuitLabel>,
    /// Where per-circuit sequence and energy bases are kept across restarts; none keeps them
    /// only in memory (energy totals then restart with the service).
    pub data_dir: Option<PathBuf>,
    /// Hardware or simulator.
    pub source: Source,
}
