//! Per-circuit health (every 10 s) and the retained circuit description.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// `pmon/<site>/circuit/<id>/health`: how well the master reaches the slave.
/// Counters are cumulative since the acquisition started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Health {
    /// When this was measured, RFC 3339 UTC.
    pub ts: String,
    /// Whether the slave answered its last poll.
    pub online: bool,
    /// Polls of this slave.
    pub polls: u64,
    /// I2C transactions, retries included.
    pub transactions: u64,
    /// Replies that failed their CRC.
    pub crc_errors: u64,
    /// Transactions the slave did not acknowledge.
    pub nacks: u64,
    /// Other bus errors (arbitration, stuck bus, timeouts).
    pub bus_errors: u64,
    /// Transactions repeated after an error.
    pub retries: u64,
    /// Records that never arrived, counted from sequence gaps.
    pub lost_records: u64,
    /// Records the slave dropped from a full FIFO (its own counter).
    pub fifo_overflows: u64,
    /// Restarts of the slave seen by the master.
    pub restarts: u64,
    /// Frames dropped from the acquisition's full publish queue.
    pub dropped_frames: u64,
    /// The newest block received, RFC 3339 UTC; absent before the first.
    pub last_seen: Option<String>,
    /// Recovery steps run on this circuit's bus after it got stuck (bus-wide, cumulative).
    #[serde(default)]
    pub bus_recoveries: u64,
}

/// `pmon/<site>/circuit/<id>/info`, retained: what the circuit is and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitInfo {
    /// The circuit id.
    pub id: String,
    /// The label from the configuration, or one made from bus and address.
    pub name: String,
    /// The bus, as configured.
    pub bus: String,
    /// 7-bit I2C address.
    pub address: u8,
    /// Board serial number.
    pub serial: u32,
    /// Firmware version, `major.minor.patch`.
    pub firmware: String,
    /// Protocol the slave speaks: `pmon-1`.
    pub protocol: String,
    /// V/I sample pairs per second.
    pub sample_rate: u32,
}

impl Health {
    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a health payload.
    pub fn from_json(payload: &[u8]) -> Result<Health, ProtoError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

impl CircuitInfo {
    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an info payload.
    pub fn from_json(payload: &[u8]) -> Result<CircuitInfo, ProtoError> {
        Ok(serde_json::from_slice(payload)?)
    }
}
