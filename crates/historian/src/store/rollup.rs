//! Rollup buckets: per-quantity min / max / sum, record count, measured time and energy
//! deltas, and their compressed runs.

use pmon_proto::frame::FrameRecord;

use super::codec::{self, DecodeError, Pred, KIND_ROLLUP};
use super::types::Quantity;

/// Aggregates of one circuit over one bucket, in the records' fixed-point units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agg {
    /// Bucket start, ms since the epoch.
    pub start: i64,
    /// Records in the bucket.
    pub count: i64,
    /// Sum of the records' `duration_us`.
    pub dur_us: i64,
    pub min: [i64; 11],
    pub max: [i64; 11],
    pub sum: [i64; 11],
    /// Counter increase over the bucket (from the record before it), mWh.
    pub e_imp: i64,
    pub e_exp: i64,
}

/// Counter increase from `prev` to `cur`; a decrease is a counter reset, counted from zero.
pub(crate) fn counter_delta(prev: u64, cur: u64) -> i64 {
    if cur >= prev {
        (cur - prev) as i64
    } else {
        cur as i64
    }
}

impl Agg {
    pub(crate) fn empty(start: i64) -> Agg {
        Agg {
            start,
            count: 0,
            dur_us: 0,
            min: [i64::MAX; 11],
            max: [i64::MIN; 11],
            sum: [0; 11],
            e_imp: 0,
            e_exp: 0,
        }
    }

    /// Adds a record; `prev` is the circuit's record before it (for the energy deltas).
    pub(crate) fn add(&mut self, r: &FrameRecord, prev: Option<&FrameRecord>) {
        self.count += 1;
        self.dur_us += r.duration_us as i64;
        for (i, q) in Quantity::ALL.iter().enumerate() {
            let v = q.fixed(r);
            self.min[i] = self.min[i].min(v);
            self.max[i] = self.max[i].max(v);
            self.sum[i] = self.sum[i].wrapping_add(v);
        }
        if let Some(p) = prev {
            self.e_imp += counter_delta(p.energy_import_mwh, r.energy_import_mwh);
            self.e_exp += counter_delta(p.energy_export_mwh, r.energy_export_mwh);
        }
    }

    pub(crate) fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.dur_us += o.dur_us;
        for i in 0..11 {
            self.min[i] = self.min[i].min(o.min[i]);
            self.max[i] = self.max[i].max(o.max[i]);
            self.sum[i] = self.sum[i].wrapping_add(o.sum[i]);
        }
        self.e_imp += o.e_imp;
        self.e_exp += o.e_exp;
    }
}

/// Aggregates records (seq order) into buckets of `dur_ms` that start in `[from, to)`;
/// `prev` is the record before the first one.
pub(crate) fn aggregate_records(
    records: &[FrameRecord],
    mut prev: Option<FrameRecord>,
    dur_ms: i64,
    from: i64,
    to: i64,
) -> Vec<Agg> {
    let mut out: Vec<Agg> = Vec::new();
    for r in records {
        if r.ts_ms >= from && r.ts_ms < to {
            let start = r.ts_ms.div_euclid(dur_ms) * dur_ms;
            match out.last_mut() {
                Some(a) if a.start == start => a.add(r, prev.as_ref()),
                _ => {
                    let mut a = Agg::empty(start);
                    a.add(r, prev.as_ref());
                    out.push(a);
                }
            }
        }
        prev = Some(*r);
    }
    // Timestamps that go backwards would break bucket order; merge to keep it sorted.
    if out.windows(2).any(|w| w[0].start >= w[1].start) {
        out = regroup(&out, dur_ms);
    }
    out
}

/// Regroups buckets (any order) into coarser ones of `dur_ms`, sorted by start.
pub(crate) fn regroup(buckets: &[Agg], dur_ms: i64) -> Vec<Agg> {
    let mut map: std::collections::BTreeMap<i64, Agg> = std::collections::BTreeMap::new();
    for b in buckets {
        let start = b.start.div_euclid(dur_ms) * dur_ms;
        map.entry(start)
            .or_insert_with(|| Agg::empty(start))
            .merge(b);
    }
    map.into_values().collect()
}

const NCOLS: usize = 5 + 33;

fn preds() -> [Option<Pred>; NCOLS] {
    let mut p = [None; NCOLS];
    // The sum is predicted from count × (min + max) / 2 poorly; min and max predict each
    // other well (the max from the min is delta-coded against it).
    for i in 0..11 {
        p[3 + 11 + i] = Some(Pred::Mid { a: 3 + i, b: 3 + i });
    }
    p
}

/// Encodes a run of buckets (sorted by start).
pub(crate) fn encode_run(buckets: &[Agg]) -> Vec<u8> {
    let mut cols: Vec<Vec<i64>> = (0..NCOLS)
        .map(|_| Vec::with_capacity(buckets.len()))
        .collect();
    for b in buckets {
        cols[0].push(b.start);
        cols[1].push(b.count);
        cols[2].push(b.dur_us);
        for i in 0..11 {
            cols[3 + i].push(b.min[i]);
            cols[14 + i].push(b.max[i]);
            cols[25 + i].push(b.sum[i]);
        }
        cols[36].push(b.e_imp);
        cols[37].push(b.e_exp);
    }
    codec::encode(KIND_ROLLUP, &cols, &preds())
}

/// Decodes a run written by [`encode_run`].
pub(crate) fn decode_run(blob: &[u8]) -> Result<Vec<Agg>, DecodeError> {
    decode_run_some(blob, None)
}

/// Decodes a run, only quantity `q` (index in `Quantity::ALL`) when given: the other
/// quantities' cells and the energy deltas are then zero.
pub(crate) fn decode_run_some(blob: &[u8], q: Option<usize>) -> Result<Vec<Agg>, DecodeError> {
    let wanted: Option<Vec<bool>> = q.map(|q| {
        let mut w = vec![false; NCOLS];
        for i in [0, 1, 2, 3 + q, 14 + q, 25 + q] {
            w[i] = true;
        }
        w
    });
    let c = codec::decode_some(KIND_ROLLUP, blob, &preds(), wanted.as_deref())?;
    let n = c[0].len();
    let at = |col: usize, j: usize| c[col].get(j).copied().unwrap_or(0);
    Ok((0..n)
        .map(|j| {
            let mut a = Agg::empty(c[0][j]);
            a.count = at(1, j);
            a.dur_us = at(2, j);
            for i in 0..11 {
                a.min[i] = at(3 + i, j);
                a.max[i] = at(14 + i, j);
                a.sum[i] = at(25 + i, j);
            }
            a.e_imp = at(36, j);
            a.e_exp = at(37, j);
            a
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_round_trip() {
        let recs: Vec<FrameRecord> = (0..1000u64)
            .map(|i| FrameRecord {
                seq: i,
                ts_ms: 1_700_000_000_000 + i as i64 * 200,
                duration_us: 200_000,
                voltage_mv: 230_000 + (i % 7) as u32 * 10,
                current_ua: 1_000_000 + (i % 13) as u32 * 1000,
                energy_import_mwh: 1000 + i * 3,
                ..Default::default()
            })
            .collect();
        let b = aggregate_records(&recs, None, 60_000, i64::MIN, i64::MAX);
        assert_eq!(b.iter().map(|a| a.count).sum::<i64>(), 1000);
        assert_eq!(b.iter().map(|a| a.e_imp).sum::<i64>(), 999 * 3);
        assert_eq!(decode_run(&encode_run(&b)).unwrap(), b);
        let coarse = regroup(&b, 3_600_000);
        assert_eq!(coarse.iter().map(|a| a.count).sum::<i64>(), 1000);
    }
}
