//! The meter's register file at a FIFO capacity chosen at run time.
//!
//! `pmon_meter::slave::Registers` sizes its FIFO with a const generic (as firmware would);
//! the simulator picks one of a few sizes per slave from its configuration.

use pmon_meter::register::{Config, Identity, Status};
use pmon_meter::slave::{Registers, WriteError, WriteEvent};
use pmon_meter::Quantities;

/// A register file with one of [`crate::config::FIFO_CAPACITIES`] records of FIFO.
// Variants differ in size by design; the slave keeps the whole enum in a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum AnyRegisters {
    R8(Registers<8>),
    R16(Registers<16>),
    R32(Registers<32>),
    R64(Registers<64>),
    R128(Registers<128>),
    R255(Registers<255>),
}

macro_rules! each {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            AnyRegisters::R8($r) => $body,
            AnyRegisters::R16($r) => $body,
            AnyRegisters::R32($r) => $body,
            AnyRegisters::R64($r) => $body,
            AnyRegisters::R128($r) => $body,
            AnyRegisters::R255($r) => $body,
        }
    };
}

impl AnyRegisters {
    /// A freshly reset register file; capacities other than the supported ones round up.
    pub fn new(capacity: usize, address: u8, identity: Identity, config: Config) -> AnyRegisters {
        match capacity {
            0..=8 => AnyRegisters::R8(Registers::new(address, identity, config)),
            9..=16 => AnyRegisters::R16(Registers::new(address, identity, config)),
            17..=32 => AnyRegisters::R32(Registers::new(address, identity, config)),
            33..=64 => AnyRegisters::R64(Registers::new(address, identity, config)),
            65..=128 => AnyRegisters::R128(Registers::new(address, identity, config)),
            _ => AnyRegisters::R255(Registers::new(address, identity, config)),
        }
    }

    pub fn on_write(&mut self, bytes: &[u8]) -> Result<WriteEvent, WriteError> {
        each!(self, r => r.on_write(bytes))
    }

    pub fn on_read(&self, out: &mut [u8]) -> usize {
        each!(self, r => r.on_read(out))
    }

    pub fn push_block(&mut self, sample_index: u32, q: &Quantities, import: u32, export: u32) {
        each!(self, r => {
            r.push_block(sample_index, q, import, export);
        })
    }

    pub fn status(&self) -> Status {
        each!(self, r => r.status())
    }

    pub fn config(&self) -> Config {
        each!(self, r => *r.config())
    }

    pub fn identity(&self) -> Identity {
        each!(self, r => *r.identity())
    }

    pub fn set_flag(&mut self, bit: u16, on: bool) {
        each!(self, r => r.set_flag(bit, on))
    }

    pub fn count_block_error(&mut self) {
        each!(self, r => r.count_block_error())
    }

    pub fn set_uptime(&mut self, seconds: u32) {
        each!(self, r => r.set_uptime(seconds))
    }
}
