//! Turning one slave's records into a circuit's history: sequence numbers that never repeat,
//! energy totals that never jump or go backwards, and wall-clock timestamps. Pure logic.

use pmon_meter::record::{ENERGY_LSB_WH, ENERGY_WRAP};
use pmon_meter::{Record, Scales};
use pmon_proto::frame::{flag, FrameRecord};
use serde::{Deserialize, Serialize};

use crate::timing::TimeMap;

/// What must survive an acquisition restart for its output to stay the same: the
/// per-circuit bases. Written whenever a base changes and at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bases {
    /// Circuit sequence number of slave sequence number 0 in the current slave epoch.
    pub seq_base: u64,
    /// The newest slave sequence number turned into a circuit record.
    pub last_slave_seq: u32,
    /// Imported energy, mWh, before the current slave epoch.
    pub import_base_mwh: u64,
    /// Exported energy, mWh, before the current slave epoch.
    pub export_base_mwh: u64,
    /// Unwrapped import counter of the current epoch, 0.1 Wh counts.
    pub import_counts: u64,
    /// Unwrapped export counter of the current epoch, 0.1 Wh counts.
    pub export_counts: u64,
    /// The slave's raw 24-bit import counter in the newest record.
    pub import_raw: u32,
    /// The slave's raw 24-bit export counter in the newest record.
    pub export_raw: u32,
}

/// Tracks one circuit across polls.
#[derive(Debug, Clone)]
pub struct CircuitTracker {
    scales: Scales,
    sample_rate: f64,
    nominal_block_us: u32,
    bases: Option<Bases>,
    restart_pending: bool,
    time: TimeMap,
    last_sample: Option<u64>,
    lost: u64,
    restarts: u64,
    last_ts_ms: Option<i64>,
}

const ENERGY_MWH_PER_COUNT: u64 = (ENERGY_LSB_WH * 1000.0) as u64;

impl CircuitTracker {
    /// A tracker for a slave with these scales, optionally resuming from persisted bases.
    pub fn new(
        scales: Scales,
        sample_rate: u16,
        nominal_block_us: u32,
        resume: Option<Bases>,
    ) -> Self {
        CircuitTracker {
            scales,
            sample_rate: sample_rate.max(1) as f64,
            nominal_block_us,
            bases: resume,
            restart_pending: false,
            time: TimeMap::new(),
            last_sample: None,
            lost: 0,
            restarts: 0,
            last_ts_ms: None,
        }
    }

    /// The bases to persist; `None` before the first record.
    pub fn bases(&self) -> Option<Bases> {
        self.bases
    }

    /// Records never received, from sequence gaps.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Slave restarts seen.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The newest timestamp produced.
    pub fn last_ts_ms(&self) -> Option<i64> {
        self.last_ts_ms
    }

    /// The slave restarted: its sequence numbers, sample index and counters start again.
    pub fn restarted(&mut self) {
        self.restart_pending = true;
        // A board seen for the first time reports its power-on as a restart: not one of ours.
        if self.bases.is_some() {
            self.restarts += 1;
        }
        self.time = TimeMap::new();
        self.last_sample = None;
    }

    /// Converts a record fetched at `fetched_ms` (wall clock, Unix ms). Returns the record
    /// and whether the bases changed in a way that must be persisted now, or `None` for a
    /// record older than the newest one already converted (published before a restart).
    pub fn accept(&mut self, record: &Record, fetched_ms: i64) -> Option<(FrameRecord, bool)> {
        if let (Some(bases), false) = (self.bases, self.restart_pending) {
            let behind = bases.last_slave_seq.wrapping_sub(record.seq);
            if behind != 0 && behind < u32::MAX / 2 {
                return None;
            }
        }
        let mut flags = 0;
        let sample = self.unwrap_sample(record.sample_index);
        let ts_ms = self
            .time
            .observe(sample as f64 / self.sample_rate * 1e3, fetched_ms as f64);
        let duration_us = match self.last_sample {
            Some(previous) if sample > previous && !self.restart_pending => {
                ((sample - previous) as f64 / self.sample_rate * 1e6) as u32
            }
            _ => self.nominal_block_us,
        };
        self.last_sample = Some(sample);

        let persist;
        let bases = match (self.bases, self.restart_pending) {
            (Some(old), true) => {
                flags |= flag::RESTART;
                self.restart_pending = false;
                let last_circuit_seq = old.seq_base + old.last_slave_seq as u64;
                // Count the blocks the restart swallowed as a gap, estimated from the time
                // since the last record, so history shows how long the circuit was dark.
                let missing = match self.last_ts_ms {
                    Some(last) if ts_ms > last && self.nominal_block_us > 0 => {
                        ((ts_ms - last) as u64 * 1000 / self.nominal_block_us as u64)
                            .saturating_sub(1)
                    }
                    _ => 0,
                };
                persist = true;
                Bases {
                    seq_base: (last_circuit_seq + 1 + missing).saturating_sub(record.seq as u64),
                    last_slave_seq: record.seq,
                    import_base_mwh: energy_mwh(old.import_base_mwh, old.import_counts),
                    export_base_mwh: energy_mwh(old.export_base_mwh, old.export_counts),
                    import_counts: record.energy_import as u64,
                    export_counts: record.energy_export as u64,
                    import_raw: record.energy_import,
                    export_raw: record.energy_export,
                }
            }
            (Some(old), false) => {
                // A repeat of the newest record (re-read after a restart of ours) is no gap.
                if record.seq != old.last_slave_seq {
                    self.lost += record.seq.wrapping_sub(old.last_slave_seq) as u64 - 1;
                }
                let (import_counts, import_wrapped) =
                    advance(old.import_counts, old.import_raw, record.energy_import);
                let (export_counts, export_wrapped) =
                    advance(old.export_counts, old.export_raw, record.energy_export);
                persist = import_wrapped || export_wrapped;
                Bases {
                    last_slave_seq: record.seq,
                    import_counts,
                    export_counts,
                    import_raw: record.energy_import,
                    export_raw: record.energy_export,
                    ..old
                }
            }
            (None, _) => {
                self.restart_pending = false;
                persist = true;
                // A circuit seen for the first time numbers its current block after the
                // wall clock in ms: later than any number it could have had before, as a
                // circuit produces 5 blocks a second, not 1000.
                Bases {
                    seq_base: (fetched_ms.max(0) as u64).saturating_sub(record.seq as u64),
                    last_slave_seq: record.seq,
                    import_base_mwh: 0,
                    export_base_mwh: 0,
                    import_counts: 0,
                    export_counts: 0,
                    import_raw: record.energy_import,
                    export_raw: record.energy_export,
                }
            }
        };
        self.bases = Some(bases);
        self.last_ts_ms = Some(ts_ms);

        let q = record.quantities(self.scales);
        let current_lsb_ua = self.scales.current_lsb_ua as u64;
        let power_lsb_mw = self.scales.power_lsb_mw as i64;
        let out = FrameRecord {
            seq: bases.seq_base + record.seq as u64,
            ts_ms,
            duration_us,
            voltage_mv: record.voltage as u32 * 10,
            current_ua: (record.current as u64 * current_lsb_ua).min(u32::MAX as u64) as u32,
            frequency_mhz: record.frequency as u32,
            real_power_mw: record.real_power as i64 * power_lsb_mw,
            reactive_power_mvar: record.reactive_power as i64 * power_lsb_mw,
            apparent_power_mva: record.apparent_power as u64 * power_lsb_mw as u64,
            power_factor: record.power_factor,
            crest_factor: record.crest_factor,
            phase_angle: record.phase_angle,
            energy_import_mwh: energy_mwh(bases.import_base_mwh, bases.import_counts),
            energy_export_mwh: energy_mwh(bases.export_base_mwh, bases.export_counts),
            flags: flags
                | if q.frequency == 0.0 {
                    flag::NO_ZERO_CROSSING
                } else {
                    0
                },
        };
        Some((out, persist))
    }

    fn unwrap_sample(&mut self, raw: u32) -> u64 {
        match self.last_sample {
            Some(previous) => {
                let delta = raw.wrapping_sub(previous as u32);
                previous + delta as u64
            }
            None => raw as u64,
        }
    }
}

fn energy_mwh(base_mwh: u64, counts: u64) -> u64 {
    base_mwh + counts * ENERGY_MWH_PER_COUNT
}

/// Unwraps a 24-bit counter: the new total and whether it wrapped.
fn advance(total: u64, last_raw: u32, raw: u32) -> (u64, bool) {
    let delta = raw.wrapping_sub(last_raw) % ENERGY_WRAP;
    let wrapped = raw < last_raw;
    (total + delta as u64, wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALES: Scales = Scales {
        current_lsb_ua: 1000,
        power_lsb_mw: 500,
    };

    fn record(seq: u32, import: u32) -> Record {
        Record {
            seq,
            sample_index: seq * 360,
            voltage: 23_000,
            current: 10_000,
            frequency: 50_000,
            real_power: 4_600,
            energy_import: import % ENERGY_WRAP,
            ..Record::default()
        }
    }

    fn tracker() -> CircuitTracker {
        CircuitTracker::new(SCALES, 1800, 200_000, None)
    }

    #[test]
    fn values_are_scaled_to_frame_units() {
        let mut t = tracker();
        let (r, persist) = t.accept(&record(0, 0), 1_000_000).unwrap();
        assert!(persist);
        assert_eq!(r.voltage_mv, 230_000);
        assert_eq!(r.current_ua, 10_000_000);
        assert_eq!(r.real_power_mw, 2_300_000);
        assert_eq!(r.seq, 1_000_000);
    }

    #[test]
    fn gaps_are_counted_and_sequence_follows_the_slave() {
        let mut t = tracker();
        let first = t.accept(&record(10, 0), 1_000_000).unwrap().0.seq;
        let (next, persist) = t.accept(&record(11, 1), 1_000_200).unwrap();
        assert!(!persist);
        assert_eq!(next.seq, first + 1);
        let after_gap = t.accept(&record(15, 2), 1_001_000).unwrap().0.seq;
        assert_eq!(after_gap, first + 5);
        assert_eq!(t.lost(), 3);
    }

    #[test]
    fn energy_unwraps_the_24_bit_counter() {
        let mut t = tracker();
        t.accept(&record(0, ENERGY_WRAP - 2), 1_000_000).unwrap();
        let (r, persist) = t.accept(&record(1, ENERGY_WRAP + 3), 1_000_200).unwrap();
        assert!(persist, "a wrap changes what must be persisted");
        assert_eq!(r.energy_import_mwh, 5 * 100);
    }

    #[test]
    fn a_restart_neither_repeats_sequence_numbers_nor_moves_energy_backwards() {
        let mut t = tracker();
        t.accept(&record(500, 1000), 1_000_000).unwrap();
        let before = t.accept(&record(501, 1010), 1_000_200).unwrap().0;
        assert_eq!(before.energy_import_mwh, 1000);
        t.restarted();
        // The slave was dark for 2 s (10 blocks), then counts again from zero.
        let (after, persist) = t.accept(&record(0, 3), 1_002_400).unwrap();
        assert!(persist);
        assert!(after.flags & flag::RESTART != 0);
        assert!(after.seq > before.seq);
        assert_eq!(after.seq - before.seq, 11);
        assert_eq!(after.energy_import_mwh, 1000 + 300);
        let next = t.accept(&record(1, 4), 1_002_600).unwrap().0;
        assert_eq!(next.seq, after.seq + 1);
        assert_eq!(next.energy_import_mwh, 1400);
        assert_eq!(t.restarts(), 1);
    }

    #[test]
    fn older_records_are_duplicates_and_the_newest_repeats_identically() {
        let mut t = tracker();
        t.accept(&record(7, 100), 1_000_000).unwrap();
        let newest = t.accept(&record(8, 105), 1_000_200).unwrap().0;
        assert!(t.accept(&record(6, 90), 1_000_400).is_none());
        let again = t.accept(&record(8, 105), 1_000_400).unwrap().0;
        assert_eq!(again.seq, newest.seq);
        assert_eq!(again.energy_import_mwh, newest.energy_import_mwh);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn resuming_from_persisted_bases_gives_the_same_output() {
        let mut first = tracker();
        first.accept(&record(7, 100), 1_000_000).unwrap();
        let saved = first.bases();
        let a = first.accept(&record(8, 105), 1_000_200).unwrap().0;
        let mut resumed = CircuitTracker::new(SCALES, 1800, 200_000, saved);
        let b = resumed.accept(&record(8, 105), 5_000_000).unwrap().0;
        assert_eq!(a.seq, b.seq);
        assert_eq!(a.energy_import_mwh, b.energy_import_mwh);
    }
}
