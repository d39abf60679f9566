//! Shared generators for the store tests.
#![allow(dead_code)]

use pmon_historian::store::FrameRecord;

/// 2024-03-31T00:00:00Z: the day Europe/Berlin moves to summer time (a 23-hour local day).
pub const T0: i64 = 1_711_843_200_000;

/// A cheap deterministic generator of plausible records, 200 ms apart.
pub struct Gen {
    pub seq: u64,
    pub ts: i64,
    pub import: u64,
    pub export: u64,
    rng: u64,
}

impl Gen {
    pub fn new(seq: u64, ts: i64) -> Gen {
        Gen {
            seq,
            ts,
            import: 1_000_000,
            export: 0,
            rng: seq ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub fn next_record(&mut self) -> FrameRecord {
        let noise = (self.rand() % 21) as i64 - 10;
        let i_ua = 5_000_000 + ((self.rand() % 200) as u32) * 1563;
        let v_mv = (230_000 + noise * 10) as u32;
        let s = v_mv as u64 * i_ua as u64 / 1_000_000;
        let p = (s as f64 * 0.95) as i64;
        self.import += (p as u64) / 18_000 + (self.rand() % 2);
        if self.rand() % 50 == 0 {
            self.export += 1;
        }
        let r = FrameRecord {
            seq: self.seq,
            ts_ms: self.ts,
            duration_us: 200_000,
            voltage_mv: v_mv,
            current_ua: i_ua,
            frequency_mhz: 50_000 + (self.rand() % 5) as u32,
            real_power_mw: p,
            reactive_power_mvar: (s as f64 * 0.31) as i64,
            apparent_power_mva: s,
            power_factor: 9_500,
            crest_factor: 1_414 + (self.rand() % 3) as u16,
            phase_angle: 1_819,
            energy_import_mwh: self.import,
            energy_export_mwh: self.export,
            flags: 0,
        };
        self.seq += 1;
        self.ts += 200;
        r
    }

    pub fn take(&mut self, n: usize) -> Vec<FrameRecord> {
        (0..n).map(|_| self.next_record()).collect()
    }
}

pub fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("historian.db");
    (dir, path)
}
