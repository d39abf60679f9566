//! Moving a slave to another bus address (register 0x50 of the protocol).

use std::time::Duration;

use embedded_hal::i2c::I2c;
use pmon_meter::register::capability;
use pmon_meter::{Identity, NewAddress};

use crate::error::{DriverError, ReaddressProblem};
use crate::master::{Master, Persistence};

/// How long the master waits after an address write before it looks for the slave at its
/// new address: the slave writes two EEPROM bytes (about 7 ms on an ATmega328P).
pub const ADDRESS_SETTLE: Duration = Duration::from_millis(10);

impl<I2C: I2c> Master<I2C> {
    /// Moves the slave at `from` to `to` and verifies the move; returns its identity, read at
    /// the new address (same serial number, so its circuit keeps its identity).
    ///
    /// Refuses, before writing anything, when `to` is not a slave address or equals `from`,
    /// when the slave lacks [`capability::ADDRESSABLE`], or when anything already answers at
    /// `to`. After the write it waits [`ADDRESS_SETTLE`], then requires the same serial number
    /// at `to` and silence at `from`. A write that did not take (its CRC failed on the wire:
    /// the slave is still at `from` and `to` is silent) is repeated up to the retry policy's
    /// attempts. Other outcomes are [`DriverError::Readdress`] with the reason.
    pub fn set_address(&mut self, from: u8, to: u8) -> Result<Identity, DriverError> {
        let refuse = |problem| DriverError::Readdress { from, to, problem };
        for address in [from, to] {
            if !NewAddress::is_valid(address) {
                return Err(DriverError::InvalidAddress { address });
            }
        }
        if from == to {
            return Err(refuse(ReaddressProblem::SameAddress));
        }
        let identity = self.identify(from)?;
        if identity.capabilities & capability::ADDRESSABLE == 0 {
            return Err(refuse(ReaddressProblem::NotAddressable {
                serial: identity.serial,
            }));
        }
        match self.probe(to) {
            Ok(other) => {
                return Err(refuse(ReaddressProblem::Occupied {
                    serial: Some(other.serial),
                }))
            }
            Err(DriverError::Nack { .. }) => {}
            Err(DriverError::Decode { .. }) => {
                return Err(refuse(ReaddressProblem::Occupied { serial: None }))
            }
            Err(error) => return Err(error),
        }
        let frame = NewAddress(to).frame(from);
        let attempts = self.policy().tries();
        for _ in 0..attempts {
            // The ACK proves nothing (a corrupted write is acknowledged too): the reads
            // below decide. A write that fails on the bus is looked into the same way.
            let written = self.transact(from, Persistence::Retry, |bus| {
                bus.write(from, &frame)
                    .map_err(|e| DriverError::from_bus(from, &e))
            });
            self.wait(ADDRESS_SETTLE);
            match self.identify(to) {
                Ok(moved) if moved.serial == identity.serial => {
                    return match self.probe(from) {
                        Err(DriverError::Nack { .. }) => Ok(moved),
                        Ok(still) => Err(refuse(ReaddressProblem::OldStillAnswers {
                            serial: Some(still.serial),
                        })),
                        Err(DriverError::Decode { .. }) => {
                            Err(refuse(ReaddressProblem::OldStillAnswers { serial: None }))
                        }
                        Err(error) => Err(error),
                    };
                }
                Ok(other) => {
                    return Err(refuse(ReaddressProblem::WrongSlave {
                        expected: identity.serial,
                        found: other.serial,
                    }))
                }
                Err(DriverError::Nack { .. }) => {}
                Err(error) => return Err(error),
            }
            // Nobody at `to`: is the slave still where it was?
            match self.probe(from) {
                Ok(same) if same.serial == identity.serial => {
                    // The write did not take; a bus failure is worth reporting as such.
                    if let Err(error) = written {
                        if !error.is_transient() {
                            return Err(error);
                        }
                    }
                }
                Ok(other) => {
                    return Err(refuse(ReaddressProblem::WrongSlave {
                        expected: identity.serial,
                        found: other.serial,
                    }))
                }
                Err(DriverError::Nack { .. }) => return Err(refuse(ReaddressProblem::Vanished)),
                Err(error) => return Err(error),
            }
        }
        self.count_failure(from);
        Err(refuse(ReaddressProblem::NotMoved { attempts }))
    }
}
