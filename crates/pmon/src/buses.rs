//! The buses a maintenance command (`pmon doctor`, `pmon slave …`) works on: the configured
//! I2C adapters, a device named on the command line, or the simulator's buses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use embedded_hal::i2c::I2c;
use pmon_bus::{DriverError, Fifo, Identity, Master, RetryPolicy, SlaveCounters, Status};
use pmon_sim::{ClockMode, SimConfig, Simulator};

use crate::cli::Common;
use crate::settings::Resolved;

/// What a command does with one bus, whatever its transport.
pub trait SlaveBus: Send {
    /// [`Master::probe`].
    fn probe(&mut self, address: u8) -> Result<Identity, DriverError>;
    /// [`Master::identify`].
    fn identify(&mut self, address: u8) -> Result<Identity, DriverError>;
    /// [`Master::status`].
    fn status(&mut self, address: u8) -> Result<Status, DriverError>;
    /// [`Master::fetch`].
    fn fetch(&mut self, address: u8, ack: u32) -> Result<Fifo, DriverError>;
    /// [`Master::counters`].
    fn counters(&self, address: u8) -> SlaveCounters;
    /// [`Master::set_address`].
    fn set_address(&mut self, from: u8, to: u8) -> Result<Identity, DriverError>;
}

impl<I2C: I2c + Send> SlaveBus for Master<I2C> {
    fn probe(&mut self, address: u8) -> Result<Identity, DriverError> {
        Master::probe(self, address)
    }
    fn identify(&mut self, address: u8) -> Result<Identity, DriverError> {
        Master::identify(self, address)
    }
    fn status(&mut self, address: u8) -> Result<Status, DriverError> {
        Master::status(self, address)
    }
    fn fetch(&mut self, address: u8, ack: u32) -> Result<Fifo, DriverError> {
        Master::fetch(self, address, ack)
    }
    fn counters(&self, address: u8) -> SlaveCounters {
        Master::counters(self, address)
    }
    fn set_address(&mut self, from: u8, to: u8) -> Result<Identity, DriverError> {
        Master::set_address(self, from, to)
    }
}

/// A configured physical bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareBus {
    /// Its id, e.g. `i2c-1`.
    pub id: String,
    /// `/dev/i2c-N`, or the serial bridge's port.
    pub path: PathBuf,
    /// How it is reached.
    pub link: Link,
}

/// How a hardware bus is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A Linux I2C adapter (i2c-dev).
    Linux,
    /// A serial bridge (`docs/protocol/serial-bridge.md`).
    Serial {
        /// Line speed.
        baud: u32,
        /// Reply timeout, ms.
        timeout_ms: u64,
    },
}

impl HardwareBus {
    /// A Linux adapter.
    pub fn linux(id: impl Into<String>, path: impl Into<PathBuf>) -> HardwareBus {
        HardwareBus {
            id: id.into(),
            path: path.into(),
            link: Link::Linux,
        }
    }

    fn from_config(bus: &pmon_acquire::BusConfig) -> HardwareBus {
        use pmon_acquire::config::{BusKind, DEFAULT_BAUD, DEFAULT_BRIDGE_TIMEOUT_MS};
        HardwareBus {
            id: bus.id.clone(),
            path: bus.path.clone(),
            link: match bus.kind {
                BusKind::Linux => Link::Linux,
                BusKind::Serial => Link::Serial {
                    baud: bus.baud.unwrap_or(DEFAULT_BAUD),
                    timeout_ms: bus.timeout_ms.unwrap_or(DEFAULT_BRIDGE_TIMEOUT_MS),
                },
            },
        }
    }
}

/// Where a command's buses come from.
#[derive(Debug, Clone)]
pub enum Buses {
    /// Physical buses, from the config file or the command line.
    Hardware(Vec<HardwareBus>),
    /// The simulator (`--sim N` or `--sim-config FILE`).
    Simulated {
        /// What to simulate.
        config: SimConfig,
        /// How it was asked for, for messages.
        description: String,
    },
}

impl Buses {
    /// The simulator when `--sim` or `--sim-config` is given, else the configured hardware
    /// buses (possibly none: unlike `pmon up`, a maintenance command does not fall back to
    /// the demo simulator, which would hide a missing bus).
    pub fn from_settings(common: &Common, resolved: &Resolved) -> Buses {
        match &resolved.simulator {
            Some((config, description)) if common.sim.is_some() || common.sim_config.is_some() => {
                Buses::Simulated {
                    config: config.clone(),
                    description: description.clone(),
                }
            }
            _ => Buses::Hardware(
                resolved
                    .acquisition
                    .bus
                    .iter()
                    .map(HardwareBus::from_config)
                    .collect(),
            ),
        }
    }

    /// The ids of every bus, as messages and `--bus` name them.
    pub fn ids(&self) -> Vec<String> {
        match self {
            Buses::Hardware(buses) => buses.iter().map(|bus| bus.id.clone()).collect(),
            Buses::Simulated { config, .. } => config.bus_ids().into_iter().map(sim_id).collect(),
        }
    }
}

/// How the acquisition names a simulated bus.
pub fn sim_id(bus: pmon_sim::BusId) -> String {
    format!("sim-{bus}")
}

/// A bus id for a device path: `/dev/i2c-1` → `i2c-1`.
pub fn id_for_path(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// One opened bus.
pub struct OpenBus {
    /// Its id.
    pub id: String,
    /// The driver.
    pub master: Box<dyn SlaveBus>,
    /// The simulated bus's SCL clock, Hz; `None` for hardware.
    pub simulated_clock_hz: Option<u32>,
    /// What the transport said about itself (a serial bridge's HELLO).
    pub note: Option<String>,
}

impl std::fmt::Debug for OpenBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBus").field("id", &self.id).finish()
    }
}

/// Opens a Linux I2C adapter.
#[cfg(target_os = "linux")]
pub fn open_hardware(id: &str, path: &Path, policy: RetryPolicy) -> Result<OpenBus, DriverError> {
    let device = pmon_bus::linux::open(&path.to_string_lossy())?;
    Ok(OpenBus {
        id: id.to_string(),
        master: Box::new(Master::new(device, policy)),
        simulated_clock_hz: None,
        note: None,
    })
}

/// I2C adapters are only supported on Linux.
#[cfg(not(target_os = "linux"))]
pub fn open_hardware(_id: &str, path: &Path, _policy: RetryPolicy) -> Result<OpenBus, DriverError> {
    Err(DriverError::Open {
        path: path.display().to_string(),
        reason: "I2C buses are only supported on Linux".into(),
    })
}

/// Opens a configured bus: a Linux adapter, or a serial bridge (which says HELLO first).
pub fn open_configured(bus: &HardwareBus, policy: RetryPolicy) -> Result<OpenBus, DriverError> {
    match bus.link {
        Link::Linux => open_hardware(&bus.id, &bus.path, policy),
        Link::Serial { baud, timeout_ms } => open_bridge(bus, baud, timeout_ms, policy),
    }
}

#[cfg(unix)]
fn open_bridge(
    bus: &HardwareBus,
    baud: u32,
    timeout_ms: u64,
    policy: RetryPolicy,
) -> Result<OpenBus, DriverError> {
    use pmon_bus::bridge::{BridgeOptions, SerialBridge};
    let path = bus.path.to_string_lossy().into_owned();
    let options = BridgeOptions {
        timeout: Duration::from_millis(timeout_ms),
        ..BridgeOptions::default()
    };
    let bridge = SerialBridge::open(&path, baud, options).map_err(|error| DriverError::Open {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let note = bridge.info().map(|info| {
        let [major, minor, patch] = info.firmware;
        format!(
            "bridge protocol {}, firmware {major}.{minor}.{patch}, SCL {} kHz, reads up to {} bytes",
            info.version,
            f64::from(info.clock_hz) / 1000.0,
            info.max_read
        )
    });
    Ok(OpenBus {
        id: bus.id.clone(),
        master: Box::new(Master::new(bridge, policy)),
        simulated_clock_hz: None,
        note,
    })
}

#[cfg(not(unix))]
fn open_bridge(
    bus: &HardwareBus,
    _baud: u32,
    _timeout_ms: u64,
    _policy: RetryPolicy,
) -> Result<OpenBus, DriverError> {
    Err(DriverError::Open {
        path: bus.path.display().to_string(),
        reason: "serial bridges are only supported on Unix".into(),
    })
}

/// Builds the simulator in fast mode and lets a second pass, so that every slave has
/// records in its FIFO. Retries advance the simulated clock instead of sleeping.
pub fn open_simulated(
    config: &SimConfig,
    policy: RetryPolicy,
) -> Result<Vec<OpenBus>, pmon_sim::ConfigError> {
    let (buses, control) = Simulator::new(config, ClockMode::Fast)?.into_parts();
    control.advance(Duration::from_secs(1));
    Ok(buses
        .into_iter()
        .map(|(id, bus)| {
            let sleeper = bus.clock().sleeper();
            OpenBus {
                id: sim_id(id),
                master: Box::new(Master::new(bus, policy).with_sleep(sleeper)),
                simulated_clock_hz: Some(config.bus(id).clock_hz),
                note: None,
            }
        })
        .collect())
}

/// Parses a 7-bit slave address: `0x10`, `0X10` or `16`, within 0x08..=0x77.
pub fn parse_address(text: &str) -> Result<u8, String> {
    let trimmed = text.trim();
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => trimmed.parse::<u8>(),
    };
    match parsed {
        Ok(address) if pmon_bus::NewAddress::is_valid(address) => Ok(address),
        Ok(address) => Err(format!(
            "{address:#04x} is reserved by the I2C specification; slave addresses are 0x08..=0x77"
        )),
        Err(_) => Err(format!(
            "{text:?} is not an address; write it in hex (0x10) or decimal (16)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_hex_and_decimal_within_the_usable_range() {
        assert_eq!(parse_address("0x10"), Ok(0x10));
        assert_eq!(parse_address("0X7"), Err(parse_address("7").unwrap_err()));
        assert_eq!(parse_address("16"), Ok(0x10));
        assert_eq!(parse_address(" 0x77 "), Ok(0x77));
        assert!(parse_address("0x78").unwrap_err().contains("reserved"));
        assert!(parse_address("0x1G")
            .unwrap_err()
            .contains("not an address"));
        assert!(parse_address("300").is_err());
    }

    #[test]
    fn device_paths_give_bus_ids() {
        assert_eq!(id_for_path(Path::new("/dev/i2c-1")), "i2c-1");
        assert_eq!(sim_id(2), "sim-2");
    }
}
