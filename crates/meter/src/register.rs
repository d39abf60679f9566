//! The register map: what the master writes and what the slave answers.
//!
//! A transaction is a write of the register number (the pointer), optionally followed by
//! data, then a read. Every read reply and every data write ends with the CRC of
//! [`crate::crc`]. All multi-byte fields are little-endian.

use crate::crc;
use crate::record::{Record, Scales, RECORD_LEN};
use crate::DecodeError;

/// The first two bytes of [`Identity`]: ASCII "PM".
pub const MAGIC: [u8; 2] = *b"PM";

/// Lowest 7-bit address a slave may use (0x00..=0x07 are reserved by the I2C specification).
pub const FIRST_ADDRESS: u8 = 0x08;
/// Highest 7-bit address a slave may use (0x78..=0x7F are reserved).
pub const LAST_ADDRESS: u8 = 0x77;

/// Registers of protocol version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Register {
    /// Read: who the slave is ([`Identity`]).
    Identity = 0x00,
    /// Read and write: measurement configuration ([`Config`]).
    Config = 0x10,
    /// Read: flags and counters ([`Status`]).
    Status = 0x20,
    /// Write an acknowledgement ([`Fifo::request`]), read the oldest record ([`Fifo`]).
    Fifo = 0x30,
    /// Write: a [`Command`].
    Command = 0x40,
    /// Write: move the slave to another bus address ([`NewAddress`]). Only slaves with
    /// [`capability::ADDRESSABLE`].
    Address = 0x50,
}

impl Register {
    /// The register with this number, if there is one.
    pub fn from_u8(value: u8) -> Option<Register> {
        match value {
            0x00 => Some(Register::Identity),
            0x10 => Some(Register::Config),
            0x20 => Some(Register::Status),
            0x30 => Some(Register::Fifo),
            0x40 => Some(Register::Command),
            0x50 => Some(Register::Address),
            _ => None,
        }
    }

    /// Bytes the master reads after pointing at this register, CRC included (0: not readable).
    pub const fn reply_len(self) -> usize {
        match self {
            Register::Identity => Identity::LEN + 2,
            Register::Config => Config::LEN + 2,
            Register::Status => Status::LEN + 2,
            Register::Fifo => Fifo::LEN + 2,
            Register::Command | Register::Address => 0,
        }
    }
}

fn checked(
    address: u8,
    register: Register,
    frame: &[u8],
    payload_len: usize,
) -> Result<&[u8], DecodeError> {
    if frame.len() != payload_len + 2 {
        return Err(DecodeError::Length {
            expected: payload_len + 2,
            actual: frame.len(),
        });
    }
    crc::open(address, register as u8, frame)
}

fn seal_into<const N: usize>(
    address: u8,
    register: Register,
    payload: [u8; N],
    out: &mut [u8],
) -> usize {
    out[..N].copy_from_slice(&payload);
    crc::seal(address, register as u8, out, N)
}

/// Reserved bytes must be zero: a slave of a later minor revision that fills them is
/// refused rather than half-understood.
fn reserved(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.iter().all(|b| *b == 0) {
        Ok(())
    } else {
        Err(DecodeError::Field("reserved"))
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn i16_at(b: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Capability bits of [`Identity::capabilities`].
pub mod capability {
    /// Records carry import/export energy counters.
    pub const ENERGY: u16 = 1 << 0;
    /// Records carry the phase angle of the fundamental.
    pub const PHASE_ANGLE: u16 = 1 << 1;
    /// [`super::Config`] is writable (calibration from the master).
    pub const CALIBRATION: u16 = 1 << 2;
    /// The slave keeps its configuration across power cycles ([`super::Command::SaveConfig`]).
    pub const PERSISTENT_CONFIG: u16 = 1 << 3;
    /// The master can move the slave to another bus address ([`super::NewAddress`]); the
    /// slave keeps it across power cycles.
    pub const ADDRESSABLE: u16 = 1 << 4;
}

/// Register 0x00: who the slave is. 24 payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Identity {
    /// Protocol version the slave speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u8,
    /// Firmware version: major, minor, patch.
    pub firmware: [u8; 3],
    /// Serial number, unique per board; the master's circuit id survives re-addressing with it.
    pub serial: u32,
    /// [`capability`] bits.
    pub capabilities: u16,
    /// V/I sample pairs per second.
    pub sample_rate: u16,
    /// Resolution of the current and power fields of every record.
    pub scales: Scales,
    /// Bytes per record ([`RECORD_LEN`]).
    pub record_len: u8,
    /// Records the FIFO holds before the oldest is dropped.
    pub fifo_capacity: u8,
}

impl Identity {
    /// Payload bytes.
    pub const LEN: usize = 24;

    /// The payload: magic, version, firmware, serial, capabilities, rate, scales, sizes, 4 reserved zeros.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = self.protocol_version;
        b[3..6].copy_from_slice(&self.firmware);
        b[6..10].copy_from_slice(&self.serial.to_le_bytes());
        b[10..12].copy_from_slice(&self.capabilities.to_le_bytes());
        b[12..14].copy_from_slice(&self.sample_rate.to_le_bytes());
        b[14..16].copy_from_slice(&self.scales.current_lsb_ua.to_le_bytes());
        b[16..18].copy_from_slice(&self.scales.power_lsb_mw.to_le_bytes());
        b[18] = self.record_len;
        b[19] = self.fifo_capacity;
        b
    }

    /// Payload plus CRC into `out` (at least `LEN + 2` bytes); returns the length.
    pub fn seal(&self, address: u8, out: &mut [u8]) -> usize {
        seal_into(address, Register::Identity, self.encode(), out)
    }

    /// Checks and decodes a reply of `LEN + 2` bytes.
    pub fn decode(address: u8, frame: &[u8]) -> Result<Identity, DecodeError> {
        let b = checked(address, Register::Identity, frame, Self::LEN)?;
        if b[0..2] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if b[2] != crate::PROTOCOL_VERSION {
            return Err(DecodeError::Version(b[2]));
        }
        reserved(&b[20..24])?;
        let identity = Identity {
            protocol_version: b[2],
            firmware: [b[3], b[4], b[5]],
            serial: u32_at(b, 6),
            capabilities: u16_at(b, 10),
            sample_rate: u16_at(b, 12),
            scales: Scales {
                current_lsb_ua: u16_at(b, 14),
                power_lsb_mw: u16_at(b, 16),
            },
            record_len: b[18],
            fifo_capacity: b[19],
        };
        if identity.record_len as usize != RECORD_LEN {
            return Err(DecodeError::Field("record_len"));
        }
        if identity.scales.current_lsb_ua == 0 || identity.scales.power_lsb_mw == 0 {
            return Err(DecodeError::Field("scales"));
        }
        if identity.sample_rate == 0 {
            return Err(DecodeError::Field("sample_rate"));
        }
        Ok(identity)
    }
}

/// Register 0x10: how the slave measures. 16 payload bytes, readable and writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Config {
    /// Nominal mains frequency, 50 or 60 Hz.
    pub nominal_frequency: u8,
    /// Mains cycles per block: 10 at 50 Hz and 12 at 60 Hz make the 200 ms of IEC 61000-4-30.
    pub block_cycles: u8,
    /// Voltage calibration gain in parts per million (1 000 000 = ×1).
    pub voltage_gain_ppm: u32,
    /// Current calibration gain in parts per million.
    pub current_gain_ppm: u32,
    /// Phase correction added to the current, 0.01° per count (sensor and transformer delay).
    pub phase_correction: i16,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nominal_frequency: 50,
            block_cycles: 10,
            voltage_gain_ppm: 1_000_000,
            current_gain_ppm: 1_000_000,
            phase_correction: 0,
        }
    }
}

impl Config {
    /// Payload bytes.
    pub const LEN: usize = 16;
    /// Largest calibration gain accepted (×4).
    pub const MAX_GAIN_PPM: u32 = 4_000_000;
    /// Largest phase correction accepted (±20.00°).
    pub const MAX_PHASE_CORRECTION: i16 = 2_000;

    /// The default for a grid frequency: 10 cycles at 50 Hz, 12 at 60 Hz.
    pub fn for_frequency(nominal_frequency: u8) -> Config {
        Config {
            nominal_frequency,
            block_cycles: if nominal_frequency == 60 { 12 } else { 10 },
            ..Config::default()
        }
    }

    /// The payload: frequency, cycles, gains, phase correction, 4 reserved zeros.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.nominal_frequency;
        b[1] = self.block_cycles;
        b[2..6].copy_from_slice(&self.voltage_gain_ppm.to_le_bytes());
        b[6..10].copy_from_slice(&self.current_gain_ppm.to_le_bytes());
        b[10..12].copy_from_slice(&self.phase_correction.to_le_bytes());
        b
    }

    /// Payload plus CRC into `out`; returns the length. The same bytes serve a read reply
    /// and, after the register byte, a write.
    pub fn seal(&self, address: u8, out: &mut [u8]) -> usize {
        seal_into(address, Register::Config, self.encode(), out)
    }

    /// The whole write transfer: register byte, payload, CRC.
    pub fn write_frame(&self, address: u8) -> [u8; Self::LEN + 3] {
        let mut out = [0u8; Self::LEN + 3];
        out[0] = Register::Config as u8;
        self.seal(address, &mut out[1..]);
        out
    }

    /// Checks and decodes `LEN + 2` bytes (a read reply, or a write after its register byte).
    pub fn decode(address: u8, frame: &[u8]) -> Result<Config, DecodeError> {
        let b = checked(address, Register::Config, frame, Self::LEN)?;
        reserved(&b[12..16])?;
        let config = Config {
            nominal_frequency: b[0],
            block_cycles: b[1],
            voltage_gain_ppm: u32_at(b, 2),
            current_gain_ppm: u32_at(b, 6),
            phase_correction: i16_at(b, 10),
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects values a slave must not apply.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.nominal_frequency != 50 && self.nominal_frequency != 60 {
            return Err(DecodeError::Field("nominal_frequency"));
        }
        if !(1..=60).contains(&self.block_cycles) {
            return Err(DecodeError::Field("block_cycles"));
        }
        let gains = [self.voltage_gain_ppm, self.current_gain_ppm];
        if gains.iter().any(|g| *g == 0 || *g > Self::MAX_GAIN_PPM) {
            return Err(DecodeError::Field("gain"));
        }
        if self.phase_correction.unsigned_abs() > Self::MAX_PHASE_CORRECTION as u16 {
            return Err(DecodeError::Field("phase_correction"));
        }
        Ok(())
    }
}

/// Bits of [`Status::flags`].
pub mod flag {
    /// The slave has (re)started since the master last sent [`super::Command::ClearReset`];
    /// its sequence numbers and energy counters started again from zero.
    pub const RESET: u16 = 1 << 0;
    /// Records were dropped because the FIFO was full ([`super::Status::fifo_overflows`]).
    pub const FIFO_OVERFLOW: u16 = 1 << 1;
    /// No voltage zero crossing was seen for a block time: no mains, or the sensor is unplugged.
    pub const NO_ZERO_CROSSING: u16 = 1 << 2;
    /// An ADC channel reached full scale during the last block: readings are clipped.
    pub const ADC_CLIPPING: u16 = 1 << 3;
    /// The configuration was changed and not yet saved.
    pub const CONFIG_UNSAVED: u16 = 1 << 4;
}

/// Register 0x20: flags and counters. 20 payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Status {
    /// [`flag`] bits.
    pub flags: u16,
    /// Records in the FIFO.
    pub records_waiting: u8,
    /// Records dropped by a full FIFO since reset.
    pub fifo_overflows: u32,
    /// Writes the slave rejected for a bad CRC or a wrong length since reset.
    pub crc_errors: u16,
    /// Blocks discarded for a missing zero crossing since reset.
    pub block_errors: u16,
    /// Seconds since reset.
    pub uptime_s: u32,
    /// Sequence number the next block will get.
    pub next_seq: u32,
}

impl Status {
    /// Payload bytes.
    pub const LEN: usize = 20;

    /// The payload: flags, waiting, a reserved zero, overflows, CRC errors, block errors, uptime, next seq.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&self.flags.to_le_bytes());
        b[2] = self.records_waiting;
        b[4..8].copy_from_slice(&self.fifo_overflows.to_le_bytes());
        b[8..10].copy_from_slice(&self.crc_errors.to_le_bytes());
        b[10..12].copy_from_slice(&self.block_errors.to_le_bytes());
        b[12..16].copy_from_slice(&self.uptime_s.to_le_bytes());
        b[16..20].copy_from_slice(&self.next_seq.to_le_bytes());
        b
    }

    /// Payload plus CRC into `out`; returns the length.
    pub fn seal(&self, address: u8, out: &mut [u8]) -> usize {
        seal_into(address, Register::Status, self.encode(), out)
    }

    /// Checks and decodes a reply of `LEN + 2` bytes.
    pub fn decode(address: u8, frame: &[u8]) -> Result<Status, DecodeError> {
        let b = checked(address, Register::Status, frame, Self::LEN)?;
        reserved(&b[3..4])?;
        Ok(Status {
            flags: u16_at(b, 0),
            records_waiting: b[2],
            fifo_overflows: u32_at(b, 4),
            crc_errors: u16_at(b, 8),
            block_errors: u16_at(b, 10),
            uptime_s: u32_at(b, 12),
            next_seq: u32_at(b, 16),
        })
    }
}

/// Register 0x30: the oldest record not yet acknowledged. 34 payload bytes.
///
/// The master writes `[0x30, ack: u32, crc]` and reads in the same combined transaction.
/// `ack` says "I hold every record before this sequence number": the slave drops those and
/// answers with the oldest one left. A corrupted reply is simply asked for again with the
/// same `ack`, so a CRC error never loses a record. An `ack` outside the FIFO's span (a
/// master that has not yet seen this slave) drops nothing, and while [`flag::RESET`] is set
/// the slave ignores every `ack`: a master that has not noticed a restart cannot make it
/// drop the new records with an acknowledgement meant for the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fifo {
    /// The oldest record, or none when the FIFO is empty.
    pub record: Option<Record>,
    /// Records left behind this one.
    pub remaining: u8,
    /// The slave's [`flag::RESET`] is set: it restarted and the master has not cleared it.
    pub reset: bool,
}

impl Fifo {
    /// Bit of the first payload byte: a record follows.
    pub const PRESENT: u8 = 1 << 0;
    /// Bit of the first payload byte: [`Fifo::reset`].
    pub const RESET: u8 = 1 << 1;
    /// Payload bytes: flags, remaining, record.
    pub const LEN: usize = 2 + RECORD_LEN;
    /// Bytes the master writes: register, ack, CRC.
    pub const REQUEST_LEN: usize = 1 + 4 + 2;

    /// The write half of a FIFO transaction.
    pub fn request(address: u8, ack: u32) -> [u8; Self::REQUEST_LEN] {
        let mut out = [0u8; Self::REQUEST_LEN];
        out[0] = Register::Fifo as u8;
        out[1..5].copy_from_slice(&ack.to_le_bytes());
        crc::seal(address, Register::Fifo as u8, &mut out[1..], 4);
        out
    }

    /// Checks a FIFO request written to the slave (without its register byte) and returns `ack`.
    pub fn decode_request(address: u8, frame: &[u8]) -> Result<u32, DecodeError> {
        let b = checked(address, Register::Fifo, frame, 4)?;
        Ok(u32_at(b, 0))
    }

    /// The payload: flags, remaining, then the record or 32 zero bytes when empty.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        if let Some(record) = &self.record {
            b[0] |= Self::PRESENT;
            b[2..].copy_from_slice(&record.encode());
        }
        if self.reset {
            b[0] |= Self::RESET;
        }
        b[1] = self.remaining;
        b
    }

    /// Payload plus CRC into `out`; returns the length.
    pub fn seal(&self, address: u8, out: &mut [u8]) -> usize {
        seal_into(address, Register::Fifo, self.encode(), out)
    }

    /// Checks and decodes a reply of `LEN + 2` bytes.
    pub fn decode(address: u8, frame: &[u8]) -> Result<Fifo, DecodeError> {
        let b = checked(address, Register::Fifo, frame, Self::LEN)?;
        if b[0] & !(Self::PRESENT | Self::RESET) != 0 {
            return Err(DecodeError::Field("fifo flags"));
        }
        let record = if b[0] & Self::PRESENT != 0 {
            Some(Record::decode(&b[2..])?)
        } else {
            // An empty FIFO says so with zeros: nothing remains and no record follows.
            reserved(&b[1..])?;
            None
        };
        Ok(Fifo {
            record,
            remaining: b[1],
            reset: b[0] & Self::RESET != 0,
        })
    }
}

/// Register 0x40: one-byte commands, written as `[0x40, command, crc]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// Clear [`flag::RESET`] (and [`flag::FIFO_OVERFLOW`]) once the master has taken note
    /// of a restart and of any overflow.
    ClearReset = 0x01,
    /// Store the current [`Config`] in non-volatile memory.
    SaveConfig = 0x02,
    /// Restart the slave (sequence numbers and energy counters start again).
    Reboot = 0x5A,
}

impl Command {
    /// The whole write transfer.
    pub fn frame(self, address: u8) -> [u8; 4] {
        let mut out = [Register::Command as u8, self as u8, 0, 0];
        crc::seal(address, Register::Command as u8, &mut out[1..], 1);
        out
    }

    /// Checks a command written to the slave (without its register byte).
    pub fn decode(address: u8, frame: &[u8]) -> Result<Command, DecodeError> {
        let b = checked(address, Register::Command, frame, 1)?;
        match b[0] {
            0x01 => Ok(Command::ClearReset),
            0x02 => Ok(Command::SaveConfig),
            0x5A => Ok(Command::Reboot),
            _ => Err(DecodeError::Field("command")),
        }
    }
}

/// Register 0x50: a new bus address for the slave, written as `[0x50, new, !new, crc]`.
///
/// The CRC covers the slave's *current* address, the register and the two payload bytes, as
/// for every write, so a write that a bit error delivers to another slave is refused there.
/// The complement byte guards the one byte that matters against a slave that checks only
/// part of the frame. The slave accepts `new` in [`FIRST_ADDRESS`]..=[`LAST_ADDRESS`], answers
/// on it from the end of this write on, and keeps it in non-volatile memory. Only slaves
/// with [`capability::ADDRESSABLE`] know this register; others ignore the write (§9 of the
/// specification), which the master notices when it verifies the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAddress(pub u8);

impl NewAddress {
    /// Payload bytes: the new address and its complement.
    pub const LEN: usize = 2;
    /// Bytes the master writes: register, payload, CRC.
    pub const WRITE_LEN: usize = 1 + Self::LEN + 2;

    /// Whether `address` is one a slave may take.
    pub const fn is_valid(address: u8) -> bool {
        address >= FIRST_ADDRESS && address <= LAST_ADDRESS
    }

    /// The whole write transfer to the slave now at `address`. The frame of an address
    /// outside 0x08..=0x77 is refused by every slave; the master checks before sending.
    pub fn frame(self, address: u8) -> [u8; Self::WRITE_LEN] {
        let mut out = [Register::Address as u8, self.0, !self.0, 0, 0];
        crc::seal(address, Register::Address as u8, &mut out[1..], Self::LEN);
        out
    }

    /// Checks an address write received by the slave at `address` (without its register byte).
    pub fn decode(address: u8, frame: &[u8]) -> Result<NewAddress, DecodeError> {
        let b = checked(address, Register::Address, frame, Self::LEN)?;
        if b[1] != !b[0] {
            return Err(DecodeError::Field("address complement"));
        }
        if !Self::is_valid(b[0]) {
            return Err(DecodeError::Field("address"));
        }
        Ok(NewAddress(b[0]))
    }
}
