//! What can go wrong talking to a slave.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use pmon_meter::register::Register;
use pmon_meter::{Config, DecodeError};

/// A failed operation on one slave. Every message names the slave's address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The address cannot belong to a slave (7-bit addresses 0x08..=0x77 only).
    #[error("{address:#04x} is not a usable 7-bit slave address (0x08..=0x77)")]
    InvalidAddress {
        /// The address asked for.
        address: u8,
    },
    /// Nobody acknowledged: the slave is absent, unplugged, or busy.
    #[error("slave {address:#04x} did not acknowledge ({nack})")]
    Nack {
        /// Slave address.
        address: u8,
        /// Which byte went unacknowledged, as the bus driver reported it.
        nack: NoAcknowledgeSource,
    },
    /// The bus itself failed (stuck lines, arbitration loss, controller overrun).
    #[error("I2C bus error talking to slave {address:#04x}: {kind}")]
    Bus {
        /// Slave address.
        address: u8,
        /// The bus driver's error kind.
        kind: ErrorKind,
    },
    /// The reply failed its CRC or does not decode: a corrupted transfer or not a pmon slave.
    #[error("slave {address:#04x}: bad reply from register {register:?}: {source}")]
    Decode {
        /// Slave address.
        address: u8,
        /// The register read.
        register: Register,
        /// Why decoding failed.
        source: DecodeError,
    },
    /// The configuration would be rejected by any slave, so it was not sent.
    #[error("slave {address:#04x}: refusing to write an invalid configuration: {source}")]
    InvalidConfig {
        /// Slave address.
        address: u8,
        /// The offending field.
        source: DecodeError,
    },
    /// The slave did not take the configuration written to it.
    #[error("slave {address:#04x} did not apply the configuration: wrote {written:?}, read back {read_back:?}")]
    ConfigMismatch {
        /// Slave address.
        address: u8,
        /// What was written.
        written: Config,
        /// What the slave reported afterwards.
        read_back: Config,
    },
    /// Draining made no progress: the slave keeps its RESET flag or repeats an acknowledged record.
    #[error("slave {address:#04x}: FIFO drain made no progress: {reason}")]
    Stalled {
        /// Slave address.
        address: u8,
        /// What kept repeating.
        reason: &'static str,
    },
    /// Moving a slave to another address was refused, or the move could not be verified.
    #[error("cannot move slave {from:#04x} to {to:#04x}: {problem}")]
    Readdress {
        /// The slave's address before.
        from: u8,
        /// The address asked for.
        to: u8,
        /// What stood in the way, and what to do.
        problem: ReaddressProblem,
    },
    /// A legacy prototype slave's reply could not be read (`crate::legacy`).
    #[error("legacy slave {address:#04x}: unreadable reply: {source}")]
    Legacy {
        /// Slave address.
        address: u8,
        /// What was wrong with the text.
        source: crate::legacy::LegacyError,
    },
    /// A bus device could not be opened.
    #[error("cannot open I2C bus {path}: {reason}")]
    Open {
        /// The device path.
        path: String,
        /// What went wrong, with a hint how to fix it.
        reason: String,
    },
}

/// Why [`crate::Master::set_address`] did not move a slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReaddressProblem {
    /// The new address is the one the slave has.
    #[error("that is already its address")]
    SameAddress,
    /// The slave's firmware does not implement the Address register.
    #[error(
        "the slave (serial {serial:08X}) lacks the ADDRESSABLE capability: its firmware cannot change \
         its address; update the firmware, or give it the address at build time"
    )]
    NotAddressable {
        /// The slave's serial number.
        serial: u32,
    },
    /// Something already acknowledges the new address.
    #[error(
        "the new address is taken by {}; two devices on one address corrupt each other's replies, \
         pick a free address",
        match serial { Some(s) => format!("pmon slave serial {s:08X}"), None => "a device that is not a pmon slave".into() }
    )]
    Occupied {
        /// Serial number of the pmon slave found there, if it is one.
        serial: Option<u32>,
    },
    /// Every write was refused: the slave still answers at the old address only.
    #[error(
        "the slave still answers at the old address and not at the new one after {attempts} writes \
         (each write was refused or lost on the wire); check the bus with `pmon doctor`"
    )]
    NotMoved {
        /// Writes tried.
        attempts: u8,
    },
    /// Another slave answers at the new address after the write.
    #[error("a different slave (serial {found:08X}, expected {expected:08X}) answers at the new address")]
    WrongSlave {
        /// Serial of the slave that was to move.
        expected: u32,
        /// Serial found at the new address.
        found: u32,
    },
    /// The slave answers at the new address, but the old address still answers too.
    #[error(
        "the slave answers at the new address, but {} still answers at the old one",
        match serial { Some(s) => format!("serial {s:08X}"), None => "a device that is not a pmon slave".into() }
    )]
    OldStillAnswers {
        /// Serial number of what answers at the old address, if it is a pmon slave.
        serial: Option<u32>,
    },
    /// Neither address answers after the write.
    #[error(
        "the slave answers at neither address after the write; it may be restarting: run \
         `pmon doctor` to find it"
    )]
    Vanished,
}

impl DriverError {
    /// The portable error kind: NACKs as [`ErrorKind::NoAcknowledge`], bus failures as the
    /// bus reported them, everything else (CRC, decoding, configuration) as [`ErrorKind::Other`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriverError::Nack { nack, .. } => ErrorKind::NoAcknowledge(*nack),
            DriverError::Bus { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }

    /// The slave address the error concerns, if any.
    pub fn address(&self) -> Option<u8> {
        match self {
            DriverError::InvalidAddress { address }
            | DriverError::Nack { address, .. }
            | DriverError::Bus { address, .. }
            | DriverError::Decode { address, .. }
            | DriverError::InvalidConfig { address, .. }
            | DriverError::ConfigMismatch { address, .. }
            | DriverError::Stalled { address, .. }
            | DriverError::Legacy { address, .. }
            | DriverError::Readdress { from: address, .. } => Some(*address),
            DriverError::Open { .. } => None,
        }
    }

    /// Whether trying the same transfer again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DriverError::Nack { .. }
                | DriverError::Bus { .. }
                | DriverError::Decode {
                    source: DecodeError::Crc { .. },
                    ..
                }
                | DriverError::Legacy { .. }
        )
    }

    /// Maps a bus driver's error for `address`.
    pub(crate) fn from_bus(address: u8, error: &impl embedded_hal::i2c::Error) -> DriverError {
        match error.kind() {
            ErrorKind::NoAcknowledge(nack) => DriverError::Nack { address, nack },
            kind => DriverError::Bus { address, kind },
        }
    }
}
