//! Legacy prototype slaves as circuits: their readings carry neither sequence numbers nor
//! energy counters, so the acquisition numbers them and integrates their power itself.
//! Pure logic, like [`crate::circuit`].
//!
//! - **Sequence numbers**: one per reading. A circuit seen for the first time starts at the
//!   wall clock in ms (as a pmon circuit does); a reading that comes late by whole poll
//!   intervals skips as many numbers, so history shows the gap.
//! - **Energy**: trapezoids of real power over the time between readings, in exact
//!   integers (µW·ms), import and export apart, split where the power changes sign: no
//!   rounding accumulates, so there is no drift. Readings further apart than
//!   [`MAX_GAP_INTERVALS`] poll intervals (and at least [`MIN_GAP_MS`]) are not integrated
//!   across: what the load did meanwhile is unknown. Every record carries
//!   `flag::ENERGY_INTEGRATED`.
//! - **Persistence** without wearing the SD card and without ever repeating a number or
//!   moving a total backwards after a power cut: the bases saved are a *reservation*
//!   ([`SEQ_RESERVE`] numbers and [`ENERGY_RESERVE_MWH`] of each energy ahead of what was
//!   published); a new reservation is saved when the old one is used up, and the exact
//!   values at shutdown. After a clean stop the totals continue exactly; after a crash they
//!   jump ahead by at most the reservation.

use pmon_bus::legacy::LegacyReading;
use pmon_proto::frame::{flag, FrameRecord};
use serde::{Deserialize, Serialize};

/// Sequence numbers reserved ahead by each save (about a minute of readings).
pub const SEQ_RESERVE: u64 = 64;
/// Energy reserved ahead by each save, mWh (10 Wh: a save every 16 s at 2.3 kW, every
/// 6 min at 100 W).
pub const ENERGY_RESERVE_MWH: u64 = 10_000;
/// Readings further apart than this many poll intervals are not integrated across.
pub const MAX_GAP_INTERVALS: u64 = 5;
/// ... nor than this, whatever the interval, ms.
pub const MIN_GAP_MS: u64 = 5_000;
/// µW·ms in one mWh.
const UWMS_PER_MWH: u128 = 3_600_000_000;

/// What a legacy circuit persists (`<data-dir>/acquisition-legacy.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyBases {
    /// The first sequence number a restarted acquisition may use.
    pub next_seq: u64,
    /// Imported energy to resume from, whole mWh.
    pub import_mwh: u64,
    /// ... and the µW·ms beyond them (below 3.6·10⁹).
    pub import_frac: u64,
    /// Exported energy to resume from, whole mWh.
    pub export_mwh: u64,
    /// ... and the µW·ms beyond them.
    pub export_frac: u64,
}

/// Tracks one legacy circuit across readings.
#[derive(Debug, Clone)]
pub struct LegacyTracker {
    interval_ms: u64,
    /// The last sequence number used.
    seq: Option<u64>,
    /// Where the next number starts when none was used yet (resumed bases).
    resume_seq: Option<u64>,
    import_uwms: u128,
    export_uwms: u128,
    /// Time and real power (mW) of the last reading.
    last: Option<(i64, i64)>,
    last_ts_ms: Option<i64>,
    /// The reservation last handed out for saving.
    reserved: Option<LegacyBases>,
    lost: u64,
    gaps: u64,
}

fn split(uwms: u128) -> (u64, u64) {
    (
        (uwms / UWMS_PER_MWH).min(u128::from(u64::MAX)) as u64,
        (uwms % UWMS_PER_MWH) as u64,
    )
}

fn join(mwh: u64, frac: u64) -> u128 {
    u128::from(mwh) * UWMS_PER_MWH + u128::from(frac).min(UWMS_PER_MWH - 1)
}

/// Import and export energy, µW·ms, of power going linearly from `p0` to `p1` mW over
/// `dt` ms, split where it crosses zero.
pub fn trapezoid(p0: i64, p1: i64, dt: u64) -> (u128, u128) {
    let dt = u128::from(dt);
    let (a, b) = (u128::from(p0.unsigned_abs()), u128::from(p1.unsigned_abs()));
    // ×1000 for µW, ÷2 for the trapezoid.
    match (p0 >= 0, p1 >= 0) {
        (true, true) => ((a + b) * dt * 500, 0),
        (false, false) => (0, (a + b) * dt * 500),
        (true, false) => (a * a * dt * 500 / (a + b), b * b * dt * 500 / (a + b)),
        (false, true) => (b * b * dt * 500 / (a + b), a * a * dt * 500 / (a + b)),
    }
}

impl LegacyTracker {
    /// A tracker for readings taken every `interval_ms`, resuming from saved bases.
    pub fn new(resume: Option<LegacyBases>, interval_ms: u64) -> LegacyTracker {
        let (import_uwms, export_uwms) = resume.map_or((0, 0), |b| {
            (
                join(b.import_mwh, b.import_frac),
                join(b.export_mwh, b.export_frac),
            )
        });
        LegacyTracker {
            interval_ms: interval_ms.max(1),
            seq: None,
            resume_seq: resume.map(|b| b.next_seq),
            import_uwms,
            export_uwms,
            last: None,
            last_ts_ms: None,
            reserved: resume,
            lost: 0,
            gaps: 0,
        }
    }

    /// Readings missed, counted from the time between readings.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Gaps not integrated across (energy unknown there).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// The newest timestamp produced.
    pub fn last_ts_ms(&self) -> Option<i64> {
        self.last_ts_ms
    }

    /// Energy imported so far, mWh.
    pub fn import_mwh(&self) -> u64 {
        split(self.import_uwms).0
    }

    /// Energy exported so far, mWh.
    pub fn export_mwh(&self) -> u64 {
        split(self.export_uwms).0
    }

    /// The exact state, to save at shutdown; `None` before the first reading.
    pub fn bases(&self) -> Option<LegacyBases> {
        let seq = self.seq?;
        let (import_mwh, import_frac) = split(self.import_uwms);
        let (export_mwh, export_frac) = split(self.export_uwms);
        Some(LegacyBases {
            next_seq: seq + 1,
            import_mwh,
            import_frac,
            export_mwh,
            export_frac,
        })
    }

    /// Converts a reading taken at `fetched_ms` (wall clock, Unix ms). Returns the record
    /// and, when the reservation is used up, the new one to save now.
    pub fn accept(
        &mut self,
        reading: &LegacyReading,
        fetched_ms: i64,
    ) -> (FrameRecord, Option<LegacyBases>) {
        let power_mw = i64::from(reading.w) * 1000;
        let ts_ms = self
            .last_ts_ms
            .map_or(fetched_ms, |last| fetched_ms.max(last));
        let max_gap = (self.interval_ms * MAX_GAP_INTERVALS).max(MIN_GAP_MS);
        let mut duration_ms = self.interval_ms;
        let mut step = 1;
        if let Some((last_ts, last_power)) = self.last {
            let dt = u64::try_from(ts_ms - last_ts).unwrap_or(0);
            // Whole intervals beyond the expected one were readings that never came.
            let intervals = (dt + self.interval_ms / 2) / self.interval_ms;
            if intervals > 1 {
                step = intervals;
                self.lost += intervals - 1;
            }
            if dt > 0 && dt <= max_gap {
                let (import, export) = trapezoid(last_power, power_mw, dt);
                self.import_uwms += import;
                self.export_uwms += export;
                duration_ms = dt;
            } else if dt > max_gap {
                self.gaps += 1;
            }
        }
        let seq = match (self.seq, self.resume_seq) {
            (Some(last), _) => last + step,
            (None, Some(resume)) => resume,
            (None, None) => fetched_ms.max(0) as u64,
        };
        self.seq = Some(seq);
        self.last = Some((ts_ms, power_mw));
        self.last_ts_ms = Some(ts_ms);

        let (import_mwh, _) = split(self.import_uwms);
        let (export_mwh, _) = split(self.export_uwms);
        let record = FrameRecord {
            seq,
            ts_ms,
            duration_us: u32::try_from(duration_ms.saturating_mul(1000)).unwrap_or(u32::MAX),
            voltage_mv: reading.vrms_centi.saturating_mul(10),
            current_ua: reading.irms_ma.saturating_mul(1000),
            frequency_mhz: reading.frequency_mhz,
            real_power_mw: power_mw,
            reactive_power_mvar: i64::from(reading.var) * 1000,
            apparent_power_mva: u64::from(reading.va) * 1000,
            power_factor: (reading.pf_centi * 100).clamp(i32::from(i16::MIN), i32::from(i16::MAX))
                as i16,
            crest_factor: (reading.ccf_centi * 10).min(u32::from(u16::MAX)) as u16,
            phase_angle: reading
                .theta_centi
                .clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16,
            energy_import_mwh: import_mwh,
            energy_export_mwh: export_mwh,
            flags: flag::ENERGY_INTEGRATED
                | if reading.frequency_mhz == 0 {
                    flag::NO_ZERO_CROSSING
                } else {
                    0
                },
        };

        let used_up = match self.reserved {
            None => true,
            Some(r) => {
                seq >= r.next_seq
                    || self.import_uwms >= join(r.import_mwh, r.import_frac)
                    || self.export_uwms >= join(r.export_mwh, r.export_frac)
            }
        };
        let save = if used_up {
            let reserve = u128::from(ENERGY_RESERVE_MWH) * UWMS_PER_MWH;
            let (import_mwh, import_frac) = split(self.import_uwms + reserve);
            let (export_mwh, export_frac) = split(self.export_uwms + reserve);
            let bases = LegacyBases {
                next_seq: seq + 1 + SEQ_RESERVE,
                import_mwh,
                import_frac,
                export_mwh,
                export_frac,
            };
            self.reserved = Some(bases);
            Some(bases)
        } else {
            None
        };
        (record, save)
    }
}

/// The serial number a legacy circuit gets when the configuration names none:
/// `0x4C` ('L'), 16 bits of a hash of the bus id, the address. Stable as long as the bus
/// keeps its id and the board its address.
pub fn derived_serial(bus: &str, address: u8) -> u32 {
    // FNV-1a, folded to 16 bits.
    let mut hash: u32 = 0x811C_9DC5;
    for byte in bus.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let folded = (hash >> 16) ^ (hash & 0xFFFF);
    0x4C00_0000 | folded << 8 | u32::from(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reading(w: i32) -> LegacyReading {
        LegacyReading {
            frequency_mhz: 50_000,
            sps: 1800,
            vrms_centi: 23_000,
            irms_ma: 10_000,
            ccf_centi: 141,
            theta_centi: 0,
            va: w.unsigned_abs(),
            w,
            var: 0,
            pf_centi: if w < 0 { -100 } else { 100 },
        }
    }

    #[test]
    fn constant_power_integrates_exactly_and_numbers_follow() {
        let mut t = LegacyTracker::new(None, 1000);
        let (first, save) = t.accept(&reading(2300), 1_000_000);
        assert_eq!(first.seq, 1_000_000);
        assert!(save.is_some(), "the first reading reserves");
        assert!(first.flags & flag::ENERGY_INTEGRATED != 0);
        let mut last = first;
        for i in 1..=3600 {
            last = t.accept(&reading(2300), 1_000_000 + i * 1000).0;
        }
        assert_eq!(last.seq, first.seq + 3600);
        // 2300 W for one hour.
        assert_eq!(last.energy_import_mwh, 2_300_000);
        assert_eq!(last.energy_export_mwh, 0);
        assert_eq!(t.lost(), 0);
        assert_eq!(last.voltage_mv, 230_000);
        assert_eq!(last.current_ua, 10_000_000);
        assert_eq!(last.power_factor, 10_000);
    }

    #[test]
    fn a_sign_change_splits_the_trapezoid() {
        // 1000 W to -1000 W over 2 s: 0.5 s·kW each way = 1000/3600 Wh... exactly half.
        let (import, export) = trapezoid(1_000_000, -1_000_000, 2000);
        assert_eq!(import, export);
        assert_eq!(import, 1_000_000 * 1000 * 500);
        let (import, export) = trapezoid(-3_000_000, 1_000_000, 4000);
        assert_eq!(import * 9, export);
    }

    #[test]
    fn late_readings_skip_numbers_and_long_gaps_are_not_integrated() {
        let mut t = LegacyTracker::new(None, 1000);
        let a = t.accept(&reading(1000), 0).0;
        let b = t.accept(&reading(1000), 3000).0;
        assert_eq!(b.seq - a.seq, 3);
        assert_eq!(t.lost(), 2);
        let before = b.energy_import_mwh;
        let c = t.accept(&reading(1000), 3000 + 60_000).0;
        assert_eq!(
            c.energy_import_mwh, before,
            "an hour-long gap is not guessed at"
        );
        assert_eq!(t.gaps(), 1);
    }

    #[test]
    fn reservations_make_restarts_safe() {
        let mut t = LegacyTracker::new(None, 1000);
        let mut saved = None;
        let mut published = Vec::new();
        for i in 0..200 {
            let (record, save) = t.accept(&reading(2300), 5_000_000 + i * 1000);
            if save.is_some() {
                saved = save;
            }
            published.push(record);
        }
        // A crash: resume from the last save.
        let mut resumed = LegacyTracker::new(saved, 1000);
        let next = resumed.accept(&reading(2300), 5_300_000).0;
        let last = published.last().unwrap();
        assert!(next.seq > last.seq);
        assert!(next.energy_import_mwh >= last.energy_import_mwh);
        assert!(next.energy_import_mwh <= last.energy_import_mwh + ENERGY_RESERVE_MWH);
        // A clean stop: exact.
        let exact = t.bases();
        let mut clean = LegacyTracker::new(exact, 1000);
        let next = clean.accept(&reading(2300), 5_300_000).0;
        assert_eq!(next.seq, last.seq + 1);
        assert_eq!(next.energy_import_mwh, last.energy_import_mwh);
        // Saves are rare: 2.3 kW for 200 s is 128 Wh, one reservation per 10 Wh or 64 readings.
    }

    #[test]
    fn derived_serials_differ_by_bus_and_address() {
        let a = derived_serial("i2c-1", 0x20);
        assert_eq!(a >> 24, 0x4C);
        assert_eq!(a & 0xFF, 0x20);
        assert_ne!(a, derived_serial("i2c-3", 0x20));
        assert_ne!(a, derived_serial("i2c-1", 0x21));
    }

    proptest! {
        #[test]
        fn energy_never_decreases_and_numbers_always_rise(
            steps in proptest::collection::vec((-20_000i32..20_000, 1i64..20_000), 1..100)
        ) {
            let mut t = LegacyTracker::new(None, 1000);
            let mut now = 1_000_000;
            let mut previous: Option<FrameRecord> = None;
            for (w, dt) in steps {
                now += dt;
                let record = t.accept(&reading(w), now).0;
                if let Some(p) = previous {
                    prop_assert!(record.seq > p.seq);
                    prop_assert!(record.energy_import_mwh >= p.energy_import_mwh);
                    prop_assert!(record.energy_export_mwh >= p.energy_export_mwh);
                }
                previous = Some(record);
            }
        }
    }
}
