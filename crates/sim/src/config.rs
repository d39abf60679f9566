//! The simulator's configuration: which slaves sit on which simulated bus, what load each
//! one measures, and how badly each bus behaves. Read from TOML ([`SimConfig::example_toml`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// A simulated bus's number (the N of `/dev/i2c-N` on a real master).
pub type BusId = u8;

/// FIFO capacities a simulated slave can have (the slave register file is sized at compile time).
pub const FIFO_CAPACITIES: [usize; 6] = [8, 16, 32, 64, 128, 255];

/// Everything the simulator needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random choice (start phases, noise, faults): equal seeds, equal runs. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Bus settings, `[[bus]]` tables. A bus that slaves name but no table describes gets the defaults.
    #[serde(default, rename = "bus", skip_serializing_if = "Vec::is_empty")]
    pub buses: Vec<BusConfig>,
    /// The slaves, `[[slave]]` tables.
    #[serde(default, rename = "slave")]
    pub slaves: Vec<SlaveConfig>,
}

/// One simulated I2C bus segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Bus number, referenced by [`SlaveConfig::bus`].
    pub id: BusId,
    /// SCL frequency in Hz: 100 000, 400 000 (default) or 1 000 000. 0 means an infinitely
    /// fast wire (benchmarks).
    #[serde(default = "default_clock_hz")]
    pub clock_hz: u32,
    /// Host time per transaction in µs (Linux userspace on a Pi: about 150, the default).
    #[serde(default = "default_host_overhead_us")]
    pub host_overhead_us: u32,
    /// Probability per byte read that one bit arrives flipped. Default 0.
    #[serde(default)]
    pub corrupt_rate: f64,
    /// Probability per transaction that the addressed slave does not acknowledge. Default 0.
    #[serde(default)]
    pub nack_rate: f64,
}

impl BusConfig {
    /// A bus with default settings.
    pub fn new(id: BusId) -> BusConfig {
        BusConfig {
            id,
            clock_hz: default_clock_hz(),
            host_overhead_us: default_host_overhead_us(),
            corrupt_rate: 0.0,
            nack_rate: 0.0,
        }
    }
}

/// One simulated slave board and the circuit it measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaveConfig {
    /// 7-bit I2C address, 0x08..=0x77.
    pub address: u8,
    /// Which simulated bus. Default 0.
    #[serde(default)]
    pub bus: BusId,
    /// A label for people. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Serial number. Default derived from bus and address: `0x504D_0000 | bus << 8 | address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u32>,
    /// Mains voltage, V rms, up to 300 (the simulated front end's range).
    pub voltage: f32,
    /// Mains frequency, Hz, 40..=70. The slave's nominal setting is 60 Hz from 55 Hz up, else 50 Hz.
    pub frequency: f32,
    /// Current of the fundamental, A rms.
    pub current: f32,
    /// Degrees the current lags the voltage (negative: leads), -180..=180. Default 0.
    #[serde(default)]
    pub phase: f32,
    /// Current harmonics as `[order, amplitude relative to the fundamental]`, order 2..=50.
    /// Orders above half the sample rate (18 at 50 Hz) alias, as on a real board. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub harmonics: Vec<(u8, f32)>,
    /// The circuit feeds power to the grid (the current is flipped). Default false.
    #[serde(default)]
    pub export: bool,
    /// Rms white noise added to both channels, relative to the channel's rms. Default 0.
    #[serde(default)]
    pub noise: f32,
    /// Current sensor range, A rms: uses ~70 % of the ADC and sets the record scales
    /// (`Scales::for_range(current_range, 300)`). Default 50.
    #[serde(default = "default_current_range")]
    pub current_range: f32,
    /// ADC resolution in bits, 8..=15 (counts are offset to mid-scale). Default 10 (ATmega328P).
    #[serde(default = "default_adc_bits")]
    pub adc_bits: u8,
    /// Load steps `[seconds, relative current]`, repeated cyclically (a compressor cycling,
    /// say). Default none: a constant load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<(f32, f32)>,
    /// FIFO capacity in records: one of 8, 16, 32 (default), 64, 128, 255.
    #[serde(default = "default_fifo")]
    pub fifo: usize,
    /// What the board speaks: `"pmon"` (default) or `"legacy"`, the original prototype's
    /// ASCII protocol (`docs/protocol/legacy.md`).
    #[serde(default, skip_serializing_if = "SlaveKind::is_pmon")]
    pub kind: SlaveKind,
    /// Legacy slaves only: probability per reading that the two halves of the reply come
    /// in the wrong order from then on (as the prototype's did after a lost read). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub swap_rate: f64,
}

/// The protocol a simulated slave speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlaveKind {
    /// pmon's I2C protocol (`docs/protocol/i2c.md`).
    #[default]
    Pmon,
    /// The prototype's ASCII readings (`docs/protocol/legacy.md`).
    Legacy,
}

impl SlaveKind {
    fn is_pmon(&self) -> bool {
        *self == SlaveKind::Pmon
    }
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn default_clock_hz() -> u32 {
    400_000
}
fn default_host_overhead_us() -> u32 {
    150
}
fn default_current_range() -> f32 {
    50.0
}
fn default_adc_bits() -> u8 {
    10
}
fn default_fifo() -> usize {
    32
}

impl SlaveConfig {
    /// A slave with the defaults of every optional key: resistive, constant load.
    pub fn new(address: u8, voltage: f32, frequency: f32, current: f32) -> SlaveConfig {
        SlaveConfig {
            address,
            bus: 0,
            name: None,
            serial: None,
            voltage,
            frequency,
            current,
            phase: 0.0,
            harmonics: Vec::new(),
            export: false,
            noise: 0.0,
            current_range: default_current_range(),
            adc_bits: default_adc_bits(),
            schedule: Vec::new(),
            fifo: default_fifo(),
            kind: SlaveKind::Pmon,
            swap_rate: 0.0,
        }
    }

    /// The serial number, configured or derived.
    pub fn serial_number(&self) -> u32 {
        self.serial
            .unwrap_or(0x504D_0000 | u32::from(self.bus) << 8 | u32::from(self.address))
    }

    /// The slave's nominal mains frequency setting: 50 or 60.
    pub fn nominal_frequency(&self) -> u8 {
        if self.frequency >= 55.0 {
            60
        } else {
            50
        }
    }

    /// How this slave is named in messages: `slave 0x10 on bus 0 "Heat pump"`.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("slave {:#04x} on bus {} \"{name}\"", self.address, self.bus),
            None => format!("slave {:#04x} on bus {}", self.address, self.bus),
        }
    }
}

impl SimConfig {
    /// Parses and validates TOML.
    pub fn from_toml_str(text: &str) -> Result<SimConfig, ConfigError> {
        let config: SimConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: "simulator config".into(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file; errors name the file (and the line).
    pub fn from_file(path: impl AsRef<Path>) -> Result<SimConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SimConfig::from_toml_str(&text).map_err(|error| error.in_file(path))
    }

    /// The configuration as TOML.
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// The settings of bus `id`: its `[[bus]]` table, or the defaults.
    pub fn bus(&self, id: BusId) -> BusConfig {
        self.buses
            .iter()
            .find(|bus| bus.id == id)
            .cloned()
            .unwrap_or_else(|| BusConfig::new(id))
    }

    /// Every bus that is described or has slaves, in ascending order.
    pub fn bus_ids(&self) -> Vec<BusId> {
        let mut ids: Vec<BusId> = self
            .buses
            .iter()
            .map(|bus| bus.id)
            .chain(self.slaves.iter().map(|slave| slave.bus))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A documented example file, as `pmon config example` prints it.
    pub fn example_toml() -> &'static str {
        include_str!("example.toml")
    }

    /// Checks every value; the error names the slave or bus and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::validate::validate(self)
    }
}
