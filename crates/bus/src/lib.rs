//! The master's driver for pmon slaves, generic over any [`embedded_hal::i2c::I2c`] bus.
//!
//! [`Master`] owns the bus, speaks the register protocol of [`pmon_meter`], retries
//! transfers that fail their CRC, are not acknowledged or hit a bus error, and keeps
//! [`SlaveCounters`] per address. [`Master::drain`] reads a slave's FIFO with exactly-once
//! delivery per slave epoch and handles slave restarts ([`Cursor`], [`DrainEvent`]).
//!
//! Transports: the Linux i2c-dev driver ([`linux::open`]), or the simulated buses of
//! `pmon-sim` (which implement the same trait).
#![warn(missing_docs)]

mod address;
pub mod bridge;
mod counters;
mod drain;
mod error;
pub mod legacy;
#[cfg(target_os = "linux")]
pub mod linux;
mod master;
mod policy;

pub use address::ADDRESS_SETTLE;
pub use counters::SlaveCounters;
pub use drain::{Cursor, DrainEvent, DrainStep};
pub use error::{DriverError, ReaddressProblem};
pub use master::{Master, FIRST_ADDRESS, LAST_ADDRESS};
pub use policy::RetryPolicy;

// The protocol types that appear in this crate's API, so callers need not name pmon-meter.
pub use pmon_meter::register::{capability, Command};
pub use pmon_meter::{Config, Fifo, Identity, NewAddress, Record, Scales, Status};
