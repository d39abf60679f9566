#![doc = include_str!("../README.md")]
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod config;
mod energy;
mod processor;

#[cfg(test)]
mod synth;
#[cfg(test)]
mod tests;

pub use config::DspConfig;
pub use energy::EnergyCounter;
pub use processor::{Block, BlockProcessor, DEFAULT_HYSTERESIS_VOLTS};
