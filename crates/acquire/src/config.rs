//! The acquisition's configuration: the `[acquisition]` table of pmon's config file, plus
//! what the binary supplies (site, broker URL, data directory, simulator).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How a bus is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// A Linux I2C adapter, `/dev/i2c-N` (i2c-dev).
    #[default]
    Linux,
    /// A serial bridge (`docs/protocol/serial-bridge.md`), e.g. `/dev/ttyUSB0`.
    Serial,
}

/// One physical I2C bus: a Linux adapter or a serial bridge. The optional keys override
/// the `[acquisition]` defaults for this bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// A name for logs, health and circuit info, e.g. `i2c-1`.
    pub id: String,
    /// `"linux"` (default) or `"serial"`.
    #[serde(default)]
    pub kind: BusKind,
    /// The adapter's device file, e.g. `/dev/i2c-1`, or the bridge's serial port.
    pub path: PathBuf,
    /// Serial bridges only: the line speed. Default 115200.
    #[serde(default)]
    pub baud: Option<u32>,
    /// SCL frequency, Hz. A serial bridge is told to use it (`SET_CLOCK`). On Linux it is
    /// informational only: the clock is set by the device tree (Raspberry Pi:
    /// `dtparam=i2c_arm_baudrate=100000` in `config.txt`); pmon logs it.
    #[serde(default)]
    pub clock_hz: Option<u32>,
    /// Tries per transaction (CRC errors, NACKs, bus errors). Default `acquisition.retries`.
    #[serde(default)]
    pub retries: Option<u8>,
    /// Wait before the first retry, ms, doubled for each further one. Default
    /// `acquisition.retry_backoff_ms`.
    #[serde(default)]
    pub retry_backoff_ms: Option<u64>,
    /// Consecutive bus errors before a recovery step. Default `acquisition.recover_after`.
    #[serde(default)]
    pub recover_after: Option<u32>,
    /// Wait after a recovery that did not help, ms, doubled up to 60 s. Default
    /// `acquisition.recovery_backoff_ms`.
    #[serde(default)]
    pub recovery_backoff_ms: Option<u64>,
    /// Serial bridges only: how long to wait for a reply before sending the request again,
    /// ms. Default 100.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl BusConfig {
    /// A Linux adapter with every optional key at its default.
    pub fn linux(id: impl Into<String>, path: impl Into<PathBuf>) -> BusConfig {
        BusConfig {
            id: id.into(),
            kind: BusKind::Linux,
            path: path.into(),
            baud: None,
            clock_hz: None,
            retries: None,
            retry_backoff_ms: None,
            recover_after: None,
            recovery_backoff_ms: None,
            timeout_ms: None,
        }
    }

    /// A serial bridge with every optional key at its default.
    pub fn serial(id: impl Into<String>, path: impl Into<PathBuf>, baud: u32) -> BusConfig {
        BusConfig {
            kind: BusKind::Serial,
            baud: Some(baud),
            ..BusConfig::linux(id, path)
        }
    }
}

/// A legacy prototype slave (`docs/protocol/legacy.md`) at a known address. Legacy slaves
/// are also found by the scan unless `legacy_detect = false`; configuring one skips
/// detection and pins its circuit id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// The bus id (`[[acquisition.bus]] id`, or `sim-N` for a simulated bus).
    pub bus: String,
    /// 7-bit address.
    pub address: u8,
    /// The serial number (and so the circuit id) to give it. Default: derived from bus id and
    /// address (`0x4C` ‖ 16-bit hash of the bus id ‖ address).
    #[serde(default)]
    pub serial: Option<u32>,
    /// A name for it. Default: a `[[circuit]]` label for its serial, or bus and address.
    #[serde(default)]
    pub name: Option<String>,
}

/// The retry and recovery policy of one bus, resolved from [`Settings`] and [`BusConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusPolicy {
    /// Per-transaction retries.
    pub retry: pmon_bus::RetryPolicy,
    /// Consecutive bus errors before a recovery step.
    pub recover_after: u32,
    /// First wait after a recovery that did not help; doubles up to [`BusPolicy::recovery_backoff_max`].
    pub recovery_backoff: Duration,
    /// Longest wait between recovery steps.
    pub recovery_backoff_max: Duration,
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
    /// Also publish each quantity as a plain number on `pmon/<site>/circuit/<id>/raw/<quantity>`
    /// at the state rate, for Telegraf's `value` format and emonhub-style consumers.
    pub raw_topics: bool,
    /// Wait before the first retry of a failed transaction, ms, doubled for each further one.
    pub retry_backoff_ms: u64,
    /// Consecutive bus errors (not NACKs, not CRC errors) on a bus before the poller marks
    /// its circuits offline and runs a recovery step: the serial bridge's `RESET`, or
    /// reopening `/dev/i2c-N`.
    pub recover_after: u32,
    /// Wait after a recovery step that did not help, ms; doubled for each further one, up
    /// to 60 s.
    pub recovery_backoff_ms: u64,
    /// How often a legacy prototype slave is read, ms (the prototype read once a second).
    pub legacy_interval_ms: u64,
    /// Whether the scan recognises legacy prototype slaves by themselves (it only reads
    /// from an address that answers but is no pmon slave; it never writes to it).
    pub legacy_detect: bool,
    /// Physical buses. Empty: the simulator runs instead.
    pub bus: Vec<BusConfig>,
    /// Legacy prototype slaves at known addresses.
    pub legacy: Vec<LegacyConfig>,
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
            raw_topics: false,
            retry_backoff_ms: 2,
            recover_after: 5,
            recovery_backoff_ms: 1000,
            legacy_interval_ms: 1000,
            legacy_detect: true,
            bus: Vec::new(),
            legacy: Vec::new(),
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
            ("recover_after", self.recover_after as u64),
            ("recovery_backoff_ms", self.recovery_backoff_ms),
            ("legacy_interval_ms", self.legacy_interval_ms),
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
        for bus in &self.bus {
            let name = &bus.id;
            if bus.retries == Some(0) || bus.recover_after == Some(0) {
                return Err(format!(
                    "acquisition.bus {name}: retries and recover_after must be greater than 0"
                ));
            }
            if bus.recovery_backoff_ms == Some(0) || bus.timeout_ms == Some(0) {
                return Err(format!(
                    "acquisition.bus {name}: recovery_backoff_ms and timeout_ms must be greater than 0"
                ));
            }
            match bus.kind {
                BusKind::Linux if bus.baud.is_some() || bus.timeout_ms.is_some() => {
                    return Err(format!(
                        "acquisition.bus {name}: baud and timeout_ms apply to kind = \"serial\" only"
                    ));
                }
                BusKind::Serial => {
                    let baud = bus.baud.unwrap_or(DEFAULT_BAUD);
                    if !SERIAL_BAUDS.contains(&baud) {
                        return Err(format!(
                            "acquisition.bus {name}: baud = {baud} is not one of {SERIAL_BAUDS:?}"
                        ));
                    }
                }
                BusKind::Linux => {}
            }
            if let Some(hz) = bus.clock_hz {
                if !(1_000..=3_400_000).contains(&hz) {
                    return Err(format!(
                        "acquisition.bus {name}: clock_hz = {hz} must lie in 1000..=3400000"
                    ));
                }
            }
        }
        let mut legacy: Vec<(&str, u8)> = Vec::new();
        for slave in &self.legacy {
            if !(pmon_bus::FIRST_ADDRESS..=pmon_bus::LAST_ADDRESS).contains(&slave.address) {
                return Err(format!(
                    "acquisition.legacy: address {:#04x} is outside 0x08..=0x77",
                    slave.address
                ));
            }
            let known = self.bus.iter().any(|b| b.id == slave.bus)
                || (self.bus.is_empty() && slave.bus.starts_with("sim-"));
            if !known {
                return Err(format!(
                    "acquisition.legacy: bus {:?} is not an [[acquisition.bus]] id",
                    slave.bus
                ));
            }
            if legacy.contains(&(slave.bus.as_str(), slave.address)) {
                return Err(format!(
                    "acquisition.legacy: {} {:#04x} appears twice",
                    slave.bus, slave.address
                ));
            }
            legacy.push((slave.bus.as_str(), slave.address));
        }
        Ok(())
    }

    /// The retry and recovery policy of a bus (`None`: a simulated bus, the defaults).
    pub fn policy(&self, bus: Option<&BusConfig>) -> BusPolicy {
        let retries = bus.and_then(|b| b.retries).unwrap_or(self.retries);
        let backoff = bus
            .and_then(|b| b.retry_backoff_ms)
            .unwrap_or(self.retry_backoff_ms);
        BusPolicy {
            retry: pmon_bus::RetryPolicy {
                attempts: retries,
                backoff: Duration::from_millis(backoff),
            },
            recover_after: bus
                .and_then(|b| b.recover_after)
                .unwrap_or(self.recover_after)
                .max(1),
            recovery_backoff: Duration::from_millis(
                bus.and_then(|b| b.recovery_backoff_ms)
                    .unwrap_or(self.recovery_backoff_ms)
                    .max(1),
            ),
            recovery_backoff_max: RECOVERY_BACKOFF_MAX,
        }
    }

    /// The legacy slaves configured on bus `id`.
    pub fn legacy_on(&self, id: &str) -> Vec<LegacyConfig> {
        self.legacy
            .iter()
            .filter(|l| l.bus == id)
            .cloned()
            .collect()
    }

    /// [`Settings::legacy_interval_ms`] as a duration.
    pub fn legacy_interval(&self) -> Duration {
        Duration::from_millis(self.legacy_interval_ms)
    }

    /// [`Settings::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// Default serial line speed of a bridge.
pub const DEFAULT_BAUD: u32 = 115_200;
/// Line speeds a serial bridge may use.
pub const SERIAL_BAUDS: [u32; 14] = [
    1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 500_000, 921_600,
    1_000_000, 2_000_000,
];
/// Default reply timeout of a serial bridge, ms.
pub const DEFAULT_BRIDGE_TIMEOUT_MS: u64 = 100;
/// Longest wait between two recovery steps of a stuck bus.
pub const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How to reach the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `mqtt://host:port` (or `tcp://`).
    pub url: String,
    /// Client id; the acquisition uses `pmon-acquire-<site>` when absent.
    pub client_id: Option<String>,
    /// Optional user name and password.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive, s: the broker publishes the last will (`offline`) after 1.5 × this
    /// without a packet. Default [`DEFAULT_KEEP_ALIVE_S`].
    pub keep_alive_s: u64,
}

/// The acquisition's default MQTT keep-alive, s.
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;

/// Where the measurements come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Physical buses from [`Settings::bus`].
    Hardware,
    /// Simulated slaves, in real time.
    Simulator(pmon_sim::SimConfig),
    /// A simulation built by the caller, who keeps its [`pmon_sim::SimControl`] (to inject
    /// faults in tests). Its clocks must run in real time. Taken on the first `run`.
    Prebuilt(PrebuiltSimulation),
}

/// A [`pmon_sim::Simulator`] handed to [`crate::run`], with its slaves' configuration
/// (for names and legacy slaves).
#[derive(Debug, Clone)]
pub struct PrebuiltSimulation {
    /// The configuration it was built from.
    pub config: pmon_sim::SimConfig,
    simulator: std::sync::Arc<std::sync::Mutex<Option<pmon_sim::Simulator>>>,
}

impl PrebuiltSimulation {
    /// Wraps a simulator built from `config`.
    pub fn new(config: pmon_sim::SimConfig, simulator: pmon_sim::Simulator) -> Self {
        PrebuiltSimulation {
            config,
            simulator: std::sync::Arc::new(std::sync::Mutex::new(Some(simulator))),
        }
    }

    /// Takes the simulator out (once).
    pub fn take(&self) -> Option<pmon_sim::Simulator> {
        self.simulator.lock().ok().and_then(|mut s| s.take())
    }
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
    /// The `[homeassistant]` table: discovery.
    pub homeassistant: crate::homeassistant::HomeAssistantConfig,
}
