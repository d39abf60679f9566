//! The vocabulary of the store's API: options, errors, tiers, quantities and query results.

use std::fmt;
use std::str::FromStr;

use pmon_proto::frame::FrameRecord;
use serde::Deserialize;

/// How long each tier keeps its data. `None` keeps it forever.
///
/// Deserialises from the `[historian]` table of the config file (every key optional):
///
/// ```toml
/// raw_retention_days = 30
/// minute_retention_days = 365
/// # quarter_retention_days, hour_retention_days, day_retention_days: forever when absent
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// Raw records (one per ~200 ms block). Default 30 days.
    pub raw_retention_days: Option<u32>,
    /// 1-minute rollups. Default 365 days.
    pub minute_retention_days: Option<u32>,
    /// 15-minute rollups. Default forever.
    pub quarter_retention_days: Option<u32>,
    /// 1-hour rollups. Default forever.
    pub hour_retention_days: Option<u32>,
    /// 1-day rollups. Default forever.
    pub day_retention_days: Option<u32>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            raw_retention_days: Some(30),
            minute_retention_days: Some(365),
            quarter_retention_days: None,
            hour_retention_days: None,
            day_retention_days: None,
        }
    }
}

impl StoreOptions {
    /// Retention of one tier, in days (`None` = forever).
    pub fn retention_days(&self, tier: Tier) -> Option<u32> {
        match tier {
            Tier::Raw => self.raw_retention_days,
            Tier::Minute => self.minute_retention_days,
            Tier::Quarter => self.quarter_retention_days,
            Tier::Hour => self.hour_retention_days,
            Tier::Day => self.day_retention_days,
        }
    }
}

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite said no (I/O, locking, a full disk, a corrupt file).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file-system error outside SQLite.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data that does not decode or breaks an invariant.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A query named a circuit the store has never seen.
    #[error("unknown circuit {0:?}")]
    UnknownCircuit(String),
    /// An IANA time-zone name that is not in the time-zone database.
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    /// `from` is after `to`.
    #[error("reversed range: from {from_ms} is after to {to_ms}")]
    ReversedRange {
        /// Start, ms since the epoch.
        from_ms: i64,
        /// End, ms since the epoch.
        to_ms: i64,
    },
    /// A name that does not parse as a tier, quantity or period.
    #[error("unknown {what} {value:?} (expected one of: {expected})")]
    Parse {
        /// What was being parsed: "tier", "quantity" or "period".
        what: &'static str,
        /// The text that did not parse.
        value: String,
        /// The accepted names, comma-separated.
        expected: &'static str,
    },
    /// A write on a store opened with [`super::Store::open_read_only`].
    #[error("the store is open read-only")]
    ReadOnly,
    /// A circuit id that is empty or too long (at most 255 bytes).
    #[error("invalid circuit id {0:?}")]
    InvalidCircuit(String),
    /// A record or argument the store cannot take (e.g. a seq at or beyond 2^63).
    #[error("invalid input: {0}")]
    InvalidRecord(String),
    /// The file was written by a newer, incompatible version of the store.
    #[error("unsupported store format version {0}")]
    Version(i64),
}

/// Storage tiers, from raw blocks to daily rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Every record as measured (~200 ms blocks).
    Raw,
    /// 1-minute rollups.
    Minute,
    /// 15-minute rollups.
    Quarter,
    /// 1-hour rollups.
    Hour,
    /// 1-day rollups (UTC days).
    Day,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 5] = [
        Tier::Raw,
        Tier::Minute,
        Tier::Quarter,
        Tier::Hour,
        Tier::Day,
    ];
    /// The rollup tiers, finest first.
    pub const ROLLUPS: [Tier; 4] = [Tier::Minute, Tier::Quarter, Tier::Hour, Tier::Day];

    /// Bucket length in ms; `None` for raw.
    pub fn duration_ms(&self) -> Option<i64> {
        match self {
            Tier::Raw => None,
            Tier::Minute => Some(60_000),
            Tier::Quarter => Some(900_000),
            Tier::Hour => Some(3_600_000),
            Tier::Day => Some(86_400_000),
        }
    }

    /// The name used in the API: "raw", "1m", "15m", "1h", "1d".
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Quarter => "15m",
            Tier::Hour => "1h",
            Tier::Day => "1d",
        }
    }

    pub(crate) fn index(&self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 1,
            Tier::Quarter => 2,
            Tier::Hour => 3,
            Tier::Day => 4,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::Parse {
                what: "tier",
                value: s.to_owned(),
                expected: "raw, 1m, 15m, 1h, 1d",
            })
    }
}

/// The measured quantities of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// Vrms, V.
    Voltage,
    /// Irms, A.
    Current,
    /// Hz.
    Frequency,
    /// P, W (negative when exporting).
    RealPower,
    /// S, VA.
    ApparentPower,
    /// Q, var.
    ReactivePower,
    /// P/S.
    PowerFactor,
    /// Current peak / rms.
    CrestFactor,
    /// Degrees of the current behind the voltage.
    PhaseAngle,
    /// Imported energy counter, kWh.
    EnergyImport,
    /// Exported energy counter, kWh.
    EnergyExport,
}

impl Quantity {
    /// Every quantity, in the order of the JSON state.
    pub const ALL: [Quantity; 11] = [
        Quantity::Voltage,
        Quantity::Current,
        Quantity::Frequency,
        Quantity::RealPower,
        Quantity::ApparentPower,
        Quantity::ReactivePower,
        Quantity::PowerFactor,
        Quantity::CrestFactor,
        Quantity::PhaseAngle,
        Quantity::EnergyImport,
        Quantity::EnergyExport,
    ];

    /// The JSON-state key (`voltage`, …, `current_crest_factor`, `energy_import_kwh`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Quantity::Voltage => "voltage",
            Quantity::Current => "current",
            Quantity::Frequency => "frequency",
            Quantity::RealPower => "real_power",
            Quantity::ApparentPower => "apparent_power",
            Quantity::ReactivePower => "reactive_power",
            Quantity::PowerFactor => "power_factor",
            Quantity::CrestFactor => "current_crest_factor",
            Quantity::PhaseAngle => "phase_angle",
            Quantity::EnergyImport => "energy_import_kwh",
            Quantity::EnergyExport => "energy_export_kwh",
        }
    }

    /// SI unit ("" for the unitless ones).
    pub fn unit(&self) -> &'static str {
        match self {
            Quantity::Voltage => "V",
            Quantity::Current => "A",
            Quantity::Frequency => "Hz",
            Quantity::RealPower => "W",
            Quantity::ApparentPower => "VA",
            Quantity::ReactivePower => "var",
            Quantity::PowerFactor | Quantity::CrestFactor => "",
            Quantity::PhaseAngle => "deg",
            Quantity::EnergyImport | Quantity::EnergyExport => "kWh",
        }
    }

    /// The value in SI units (as [`Quantity::unit`]).
    pub fn value(&self, r: &FrameRecord) -> f64 {
        self.fixed(r) as f64 * self.scale()
    }

    /// The raw fixed-point integer of the record (mV, µA, mHz, mW, mVA, mvar, 1/10000,
    /// 1/1000, 0.01°, mWh, mWh).
    pub fn fixed(&self, r: &FrameRecord) -> i64 {
        match self {
            Quantity::Voltage => r.voltage_mv as i64,
            Quantity::Current => r.current_ua as i64,
            Quantity::Frequency => r.frequency_mhz as i64,
            Quantity::RealPower => r.real_power_mw,
            Quantity::ApparentPower => r.apparent_power_mva as i64,
            Quantity::ReactivePower => r.reactive_power_mvar,
            Quantity::PowerFactor => r.power_factor as i64,
            Quantity::CrestFactor => r.crest_factor as i64,
            Quantity::PhaseAngle => r.phase_angle as i64,
            Quantity::EnergyImport => r.energy_import_mwh as i64,
            Quantity::EnergyExport => r.energy_export_mwh as i64,
        }
    }

    /// SI units per fixed-point step.
    pub fn scale(&self) -> f64 {
        match self {
            Quantity::Voltage => 1e-3,
            Quantity::Current => 1e-6,
            Quantity::Frequency => 1e-3,
            Quantity::RealPower | Quantity::ApparentPower | Quantity::ReactivePower => 1e-3,
            Quantity::PowerFactor => 1e-4,
            Quantity::CrestFactor => 1e-3,
            Quantity::PhaseAngle => 1e-2,
            Quantity::EnergyImport | Quantity::EnergyExport => 1e-6,
        }
    }

    /// Decimal places of the fixed-point unit (3 for mV as V, …).
    pub fn decimals(&self) -> u32 {
        match self {
            Quantity::Current | Quantity::EnergyImport | Quantity::EnergyExport => 6,
            Quantity::PowerFactor => 4,
            Quantity::PhaseAngle => 2,
            _ => 3,
        }
    }

    /// Appends the value in SI units as an exact decimal, trailing zeros trimmed
    /// (`229.99`, `-1.5`, `0`): no binary floating point in between, and fast (for CSV).
    pub fn write_decimal(&self, r: &FrameRecord, out: &mut String) {
        let v = self.fixed(r);
        let d = self.decimals();
        let p = 10u64.pow(d);
        let a = v.unsigned_abs();
        if v < 0 {
            out.push('-');
        }
        let (int, mut frac) = (a / p, a % p);
        let mut buf = itoa_u64(int);
        out.push_str(buf.as_str());
        if frac != 0 {
            let mut digits = d;
            while frac % 10 == 0 {
                frac /= 10;
                digits -= 1;
            }
            out.push('.');
            buf = itoa_u64(frac);
            for _ in buf.len()..digits as usize {
                out.push('0');
            }
            out.push_str(buf.as_str());
        }
    }

    pub(crate) fn index(&self) -> usize {
        Quantity::ALL
            .iter()
            .position(|q| q == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quantity {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| StoreError::Parse {
                what: "quantity",
                value: s.to_owned(),
                expected: "voltage, current, frequency, real_power, apparent_power, \
                           reactive_power, power_factor, current_crest_factor, phase_angle, \
                           energy_import_kwh, energy_export_kwh",
            })
    }
}

/// What [`super::Store::ingest`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// New records staged.
    pub inserted: usize,
    /// Records already stored or staged (same circuit and seq), ignored; also records with
    /// a seq at or below the newest one retention deleted, which cannot be told apart.
    pub duplicates: usize,
    /// Sequence gaps opened by this batch (a missing run of seqs counts once).
    pub gaps: usize,
}

/// One circuit as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitSummary {
    /// Circuit id.
    pub id: String,
    /// `ts_ms` (block end) of the oldest stored raw record, ms since the epoch. Rollups
    /// reach further back once retention has deleted raw records; when it has deleted them
    /// all, this is `last_ms`.
    pub first_ms: i64,
    /// `ts_ms` (block end) of the newest record (highest seq), ms since the epoch.
    pub last_ms: i64,
    /// Where the circuit's history starts in any tier: the start of the oldest rollup
    /// bucket when the rollups reach back further than the raw records, else `first_ms`.
    /// Bounds ranges over rollup tiers (exports, energy), as `first_ms` bounds raw.
    pub history_first_ms: i64,
    /// Raw records stored.
    pub records: u64,
    /// Records present / records expected from the seq range `[first, last]` (1.0 = no gap).
    pub coverage: f64,
}

/// A run of missing sequence numbers: `after_seq + 1 ..= before_seq - 1` never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Circuit id.
    pub circuit: String,
    /// Last seq received before the gap.
    pub after_seq: u64,
    /// First seq received after the gap.
    pub before_seq: u64,
    /// Timestamp of the record `after_seq`.
    pub from_ms: i64,
    /// Timestamp of the record `before_seq`.
    pub to_ms: i64,
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Bucket start, ms since the epoch (raw tier: the record's own timestamp).
    pub ts_ms: i64,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
    /// Mean of the values in the bucket.
    pub mean: f64,
    /// Records in the bucket.
    pub count: u64,
    /// Measured time / bucket length, 0..=1 (raw tier: 1).
    pub coverage: f64,
}

/// Calendar periods for energy totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Local calendar days.
    Day,
    /// Local weeks starting Monday.
    Week,
    /// Local calendar months.
    Month,
}

impl Period {
    /// "day", "week" or "month".
    pub fn as_str(&self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            _ => Err(StoreError::Parse {
                what: "period",
                value: s.to_owned(),
                expected: "day, week, month",
            }),
        }
    }
}

/// Energy of one calendar period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyBucket {
    /// Local start of the period, as ms since the epoch.
    pub start_ms: i64,
    /// Imported energy in the period, kWh.
    pub import_kwh: f64,
    /// Exported energy in the period, kWh.
    pub export_kwh: f64,
}

/// What [`super::Store::check`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckReport {
    /// No problem found.
    pub ok: bool,
    /// One line per problem.
    pub problems: Vec<String>,
    /// Circuits stored.
    pub circuits: usize,
    /// Raw records stored.
    pub records: u64,
    /// Raw chunks stored.
    pub chunks: u64,
    /// Rollup rows (blocks of buckets) stored, all tiers.
    pub rollup_blocks: u64,
    /// Gaps stored.
    pub gaps: u64,
}

/// Decimal digits of a u64 without going through `fmt`.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        // Only ASCII digits are written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("")
    }
    fn len(&self) -> usize {
        20 - self.start
    }
}

fn itoa_u64(mut v: u64) -> Digits {
    let mut d = Digits {
        buf: [b'0'; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        let r = FrameRecord {
            voltage_mv: 229_990,
            current_ua: 1_563,
            real_power_mw: -1_500,
            power_factor: -9_500,
            phase_angle: 5,
            energy_import_mwh: 12_000_000,
            ..Default::default()
        };
        let s = |q: Quantity| {
            let mut o = String::new();
            q.write_decimal(&r, &mut o);
            o
        };
        assert_eq!(s(Quantity::Voltage), "229.99");
        assert_eq!(s(Quantity::Current), "0.001563");
        assert_eq!(s(Quantity::RealPower), "-1.5");
        assert_eq!(s(Quantity::PowerFactor), "-0.95");
        assert_eq!(s(Quantity::PhaseAngle), "0.05");
        assert_eq!(s(Quantity::EnergyImport), "12");
        assert_eq!(s(Quantity::Frequency), "0");
    }
}
