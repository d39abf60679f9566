//! The slave side of pmon's I2C protocol, version 1.
//!
//! Everything a slave board and the master must agree on byte for byte: the register map
//! ([`register`]), the fixed-point measurement [`Record`], and the CRC that guards every
//! transfer ([`crc`]). The specification with byte tables and a worked example is
//! `docs/protocol/i2c.md`; the tests in this crate pin the same bytes.
//!
//! The crate is `no_std` and allocation-free so the same code runs in ATmega328P firmware.
#![no_std]
#![warn(missing_docs)]

pub mod crc;
pub mod record;
pub mod register;
pub mod slave;

pub use record::{Quantities, Record, Scales, RECORD_LEN};
pub use register::{Config, Fifo, Identity, NewAddress, Register, Status};

/// The protocol version this crate speaks; carried in [`Identity::protocol_version`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Why a slave's reply could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer has the wrong length for this register.
    Length {
        /// Bytes the register's reply has, CRC included.
        expected: usize,
        /// Bytes that were given.
        actual: usize,
    },
    /// The CRC does not match: a corrupted transfer, or the reply of another slave or register.
    Crc {
        /// CRC computed over the bytes received.
        computed: u16,
        /// CRC the reply carried.
        received: u16,
    },
    /// The identity block does not start with the pmon magic: not a pmon slave.
    Magic,
    /// A pmon slave speaking a protocol version this master does not know.
    Version(u8),
    /// A field holds a value the protocol does not allow.
    Field(&'static str),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Length { expected, actual } => {
                write!(f, "reply is {actual} bytes, expected {expected}")
            }
            DecodeError::Crc { computed, received } => write!(
                f,
                "CRC mismatch: computed {computed:#06x}, received {received:#06x}"
            ),
            DecodeError::Magic => f.write_str("not a pmon slave (bad magic)"),
            DecodeError::Version(v) => write!(
                f,
                "protocol version {v} is not supported (this master speaks version {})",
                crate::PROTOCOL_VERSION
            ),
            DecodeError::Field(name) => write!(f, "invalid value in field {name}"),
        }
    }
}

impl core::error::Error for DecodeError {}
