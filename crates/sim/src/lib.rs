//! Simulated pmon slaves on simulated I2C buses, for running and testing the master
//! without hardware.
//!
//! A [`Simulator`] builds from a [`SimConfig`] (TOML, see [`SimConfig::example_toml`]) one
//! [`SimBus`] per bus segment; each implements `embedded_hal::i2c::I2c`, so the real
//! driver (`pmon_bus::Master`) runs on it unchanged. Each slave is the meter's own register
//! file and the DSP of `pmon-dsp`, fed lazily with synthesised samples up to the bus clock
//! ([`SimClock`], real-time or fast). Transactions take the wire time of [`transaction_time`];
//! [`SimControl`] injects faults (corrupted bytes, NACKs, unplugged or rebooted slaves, a
//! stuck bus) and reports each slave's truth.
//!
//! ```
//! use pmon_sim::{ClockMode, SimConfig, Simulator};
//! use embedded_hal::i2c::I2c;
//!
//! let config = SimConfig::demo(3, 1);
//! let Simulator { mut buses, control } = Simulator::new(&config, ClockMode::Fast)?;
//! control.advance(std::time::Duration::from_secs(1));
//! let (_, bus) = &mut buses[0];
//! let mut identity = [0u8; 26];
//! bus.write_read(0x10, &[0x00], &mut identity).expect("slave 0x10 answers");
//! assert_eq!(&identity[..2], b"PM");
//! assert!(control.produced(0x10)? >= 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod bridge;
mod bus;
mod clock;
mod config;
mod control;
mod demo;
mod error;
mod legacy;
mod registers;
mod simulator;
mod slave;
mod timing;
mod validate;
mod waveform;

pub use bridge::CLOCK_STEPS;
pub use bus::{BusStats, SimBus, SimBusError};
pub use clock::{ClockMode, SimClock};
pub use config::{BusConfig, BusId, SimConfig, SlaveConfig, SlaveKind, FIFO_CAPACITIES};
pub use control::{SimControl, SlaveRef};
pub use demo::DEMO_SLAVES_PER_BUS;
pub use error::{ConfigError, SimError};
pub use legacy::{LegacySlave, LegacyTruth, LEGACY_FIRST_HALF, LEGACY_START};
pub use simulator::Simulator;
pub use slave::{Energy, SimSlave, SIM_FIRMWARE};
pub use timing::{nack_time, transaction_time, BITS_PER_BYTE};
pub use validate::MAX_VOLTAGE;
pub use waveform::{
    counts_scale, expected, Waveform, CURRENT_RANGE_FRACTION, SAMPLE_RATE, VOLTAGE_FULL_SCALE_PEAK,
};
