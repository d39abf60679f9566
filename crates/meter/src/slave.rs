//! The slave's side of the bus as a pure state machine: what firmware (or the simulator)
//! does when the master writes bytes or clocks a read. No I/O, no allocation.

use crate::record::{Quantities, Record};
use crate::register::{
    capability, flag, Command, Config, Fifo, Identity, NewAddress, Register, Status,
};
use crate::DecodeError;

/// What a write asked the slave to do beyond updating its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEvent {
    /// Only the register pointer (or the FIFO acknowledgement) changed.
    None,
    /// A new configuration is in force: re-initialise the measurement with it.
    Configured(Config),
    /// Store the configuration in non-volatile memory.
    SaveConfig,
    /// Restart.
    Reboot,
    /// The slave answers on address `to` from now on (it was `from`): firmware stores `to` in
    /// non-volatile memory and loads it into its address register once the transfer has
    /// ended. `from` and `to` may be equal (a repeated write).
    Readdressed {
        /// The address the write was sent to.
        from: u8,
        /// The new address.
        to: u8,
    },
}

/// Why a write was refused. The slave counts CRC failures in [`Status::crc_errors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// An empty write (an address probe), which is harmless.
    Empty,
    /// No such register, or not writable.
    Register(u8),
    /// The data failed its CRC or holds values the slave must not apply.
    Decode(DecodeError),
}

/// The register file of one slave: identity, configuration, counters and the record FIFO.
#[derive(Debug, Clone)]
pub struct Registers<const N: usize> {
    address: u8,
    identity: Identity,
    config: Config,
    status: Status,
    fifo: [Record; N],
    head: usize,
    len: usize,
    pointer: Register,
}

impl<const N: usize> Registers<N> {
    /// A freshly reset slave at a 7-bit `address`. The FIFO holds `N` (at most 255) records.
    pub fn new(address: u8, identity: Identity, config: Config) -> Self {
        let capacity = if N > 255 { 255 } else { N as u8 };
        Registers {
            address,
            identity: Identity {
                fifo_capacity: capacity,
                ..identity
            },
            config,
            status: Status {
                flags: flag::RESET,
                ..Status::default()
            },
            fifo: [Record::default(); N],
            head: 0,
            len: 0,
            pointer: Register::Identity,
        }
    }

    /// The 7-bit address the slave answers on (changed by an accepted [`NewAddress`] write).
    pub fn address(&self) -> u8 {
        self.address
    }

    /// What the slave says it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Flags and counters as the master would read them.
    pub fn status(&self) -> Status {
        Status {
            records_waiting: self.len.min(255) as u8,
            ..self.status
        }
    }

    /// Sets or clears status flags that the measurement owns (zero crossing, clipping).
    pub fn set_flag(&mut self, bit: u16, on: bool) {
        if on {
            self.status.flags |= bit;
        } else {
            self.status.flags &= !bit;
        }
    }

    /// Counts a block thrown away for a missing zero crossing.
    pub fn count_block_error(&mut self) {
        self.status.block_errors = self.status.block_errors.wrapping_add(1);
    }

    /// Advances the uptime counter.
    pub fn set_uptime(&mut self, seconds: u32) {
        self.status.uptime_s = seconds;
    }

    /// Appends a finished block with the next sequence number. A full FIFO drops its oldest
    /// record: the master sees the gap in sequence numbers and the overflow counter.
    pub fn push_block(
        &mut self,
        sample_index: u32,
        quantities: &Quantities,
        energy_import: u32,
        energy_export: u32,
    ) -> Record {
        let record = Record::from_quantities(
            self.status.next_seq,
            sample_index,
            quantities,
            self.identity.scales,
            energy_import,
            energy_export,
        );
        self.status.next_seq = self.status.next_seq.wrapping_add(1);
        if N == 0 {
            return record;
        }
        if self.len == N {
            self.head = (self.head + 1) % N;
            self.len -= 1;
            self.status.fifo_overflows = self.status.fifo_overflows.wrapping_add(1);
            self.status.flags |= flag::FIFO_OVERFLOW;
        }
        self.fifo[(self.head + self.len) % N] = record;
        self.len += 1;
        record
    }

    /// Records waiting in the FIFO.
    pub fn waiting(&self) -> usize {
        self.len
    }

    fn has(&self, capability: u16) -> bool {
        self.identity.capabilities & capability != 0
    }

    /// Sets the next sequence number, for simulators and tests that exercise the wrap at
    /// `u32::MAX`. Refused (false) while records wait, whose numbers it would contradict.
    pub fn set_next_seq(&mut self, seq: u32) -> bool {
        if self.len > 0 {
            return false;
        }
        self.status.next_seq = seq;
        true
    }

    /// Drops every record older than `ack`, if `ack` lies within the FIFO's span and the
    /// master has acknowledged the last restart.
    fn acknowledge(&mut self, ack: u32) {
        if self.len == 0 || self.status.flags & flag::RESET != 0 {
            return;
        }
        let oldest = self.fifo[self.head].seq;
        let span = self.len as u32;
        let drop = ack.wrapping_sub(oldest);
        // `ack` must lie in (oldest, oldest + len]: anything else is a stale or foreign ack.
        if drop == 0 || drop > span {
            return;
        }
        self.head = (self.head + drop as usize) % N;
        self.len -= drop as usize;
    }

    /// Handles bytes the master wrote in one transfer.
    pub fn on_write(&mut self, bytes: &[u8]) -> Result<WriteEvent, WriteError> {
        let (&first, rest) = bytes.split_first().ok_or(WriteError::Empty)?;
        let register = Register::from_u8(first).ok_or(WriteError::Register(first))?;
        self.pointer = register;
        if rest.is_empty() {
            return Ok(WriteEvent::None);
        }
        let outcome = match register {
            Register::Fifo => Fifo::decode_request(self.address, rest).map(|ack| {
                self.acknowledge(ack);
                WriteEvent::None
            }),
            Register::Config if !self.has(capability::CALIBRATION) => {
                return Err(WriteError::Register(first))
            }
            Register::Config => Config::decode(self.address, rest).map(|config| {
                self.config = config;
                self.status.flags |= flag::CONFIG_UNSAVED;
                WriteEvent::Configured(config)
            }),
            Register::Command => Command::decode(self.address, rest).map(|command| match command {
                Command::ClearReset => {
                    self.status.flags &= !(flag::RESET | flag::FIFO_OVERFLOW);
                    WriteEvent::None
                }
                Command::SaveConfig if !self.has(capability::PERSISTENT_CONFIG) => WriteEvent::None,
                Command::SaveConfig => {
                    self.status.flags &= !flag::CONFIG_UNSAVED;
                    WriteEvent::SaveConfig
                }
                Command::Reboot => WriteEvent::Reboot,
            }),
            Register::Address if !self.has(capability::ADDRESSABLE) => {
                return Err(WriteError::Register(first))
            }
            Register::Address => NewAddress::decode(self.address, rest).map(|NewAddress(to)| {
                let from = self.address;
                self.address = to;
                WriteEvent::Readdressed { from, to }
            }),
            Register::Identity | Register::Status => return Err(WriteError::Register(first)),
        };
        outcome.map_err(|error| {
            if matches!(error, DecodeError::Crc { .. } | DecodeError::Length { .. }) {
                self.status.crc_errors = self.status.crc_errors.wrapping_add(1);
            }
            WriteError::Decode(error)
        })
    }

    /// Fills `out` with the reply of the register the pointer names; bytes past the reply
    /// read as 0xFF, as an idle bus does. Returns the reply's own length.
    pub fn on_read(&self, out: &mut [u8]) -> usize {
        let mut reply = [0u8; 64];
        let len = match self.pointer {
            Register::Identity => self.identity.seal(self.address, &mut reply),
            Register::Config => self.config.seal(self.address, &mut reply),
            Register::Status => self.status().seal(self.address, &mut reply),
            Register::Fifo => self.oldest().seal(self.address, &mut reply),
            Register::Command | Register::Address => 0,
        };
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = if i < len { reply[i] } else { 0xFF };
        }
        len
    }

    fn oldest(&self) -> Fifo {
        let reset = self.status.flags & flag::RESET != 0;
        match self.len {
            0 => Fifo {
                record: None,
                remaining: 0,
                reset,
            },
            len => Fifo {
                record: Some(self.fifo[self.head]),
                remaining: (len - 1).min(255) as u8,
                reset,
            },
        }
    }
}
