//! Raw chunks: a run of one circuit's records, in seq order, as 15 integer columns.

use pmon_proto::frame::FrameRecord;

use super::codec::{self, DecodeError, Pred, KIND_RAW};

/// Column order inside a raw chunk. Earlier columns predict later ones: apparent power
/// from voltage × current, real and reactive power from apparent power and phase angle,
/// power factor from real / apparent power.
#[allow(dead_code)] // documents the order; see docs/historian-storage.md
pub(crate) const COLUMNS: [&str; 15] = [
    "seq",
    "ts_ms",
    "duration_us",
    "voltage_mv",
    "current_ua",
    "frequency_mhz",
    "apparent_power_mva",
    "phase_angle",
    "real_power_mw",
    "reactive_power_mvar",
    "power_factor",
    "crest_factor",
    "energy_import_mwh",
    "energy_export_mwh",
    "flags",
];

const PREDS: [Option<Pred>; 15] = [
    None,
    None,
    None,
    None,
    None,
    None,
    Some(Pred::Product {
        a: 3,
        b: 4,
        div: 1_000_000,
    }),
    None,
    Some(Pred::Cos { s: 6, angle: 7 }),
    Some(Pred::Sin { s: 6, angle: 7 }),
    Some(Pred::Ratio {
        num: 8,
        den: 6,
        mul: 10_000,
    }),
    None,
    None,
    None,
    None,
];

/// Encodes records (sorted by seq, distinct seqs) into a chunk blob.
pub(crate) fn encode(records: &[FrameRecord]) -> Vec<u8> {
    let col = |f: fn(&FrameRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let cols = vec![
        col(|r| r.seq as i64),
        col(|r| r.ts_ms),
        col(|r| r.duration_us as i64),
        col(|r| r.voltage_mv as i64),
        col(|r| r.current_ua as i64),
        col(|r| r.frequency_mhz as i64),
        col(|r| r.apparent_power_mva as i64),
        col(|r| r.phase_angle as i64),
        col(|r| r.real_power_mw),
        col(|r| r.reactive_power_mvar),
        col(|r| r.power_factor as i64),
        col(|r| r.crest_factor as i64),
        col(|r| r.energy_import_mwh as i64),
        col(|r| r.energy_export_mwh as i64),
        col(|r| r.flags as i64),
    ];
    codec::encode(KIND_RAW, &cols, &PREDS)
}

/// Decodes `seq`, `ts_ms` and one column (by its index in [`COLUMNS`]) of a chunk: what a
/// one-quantity raw series needs.
pub(crate) fn decode_column(blob: &[u8], col: usize) -> Result<Vec<(u64, i64, i64)>, DecodeError> {
    let mut wanted = [false; 15];
    wanted[0] = true;
    wanted[1] = true;
    wanted[col] = true;
    let c = codec::decode_some(KIND_RAW, blob, &PREDS, Some(&wanted))?;
    Ok((0..c[0].len())
        .map(|i| (c[0][i] as u64, c[1][i], c[col][i]))
        .collect())
}

/// The column index in a chunk of each quantity (order of `Quantity::ALL`).
pub(crate) const QUANTITY_COLUMN: [usize; 11] = [3, 4, 5, 8, 6, 9, 10, 11, 7, 12, 13];

/// Decodes a chunk blob into records.
pub(crate) fn decode(blob: &[u8]) -> Result<Vec<FrameRecord>, DecodeError> {
    let c = codec::decode(KIND_RAW, blob, &PREDS)?;
    let n = c[0].len();
    // Narrow columns must hold values of their field's type: anything else is corruption.
    let fits = |col: &[i64], lo: i64, hi: i64| col.iter().all(|&v| v >= lo && v <= hi);
    if !(fits(&c[2], 0, u32::MAX as i64)
        && fits(&c[3], 0, u32::MAX as i64)
        && fits(&c[4], 0, u32::MAX as i64)
        && fits(&c[5], 0, u32::MAX as i64)
        && fits(&c[7], i16::MIN as i64, i16::MAX as i64)
        && fits(&c[10], i16::MIN as i64, i16::MAX as i64)
        && fits(&c[11], 0, u16::MAX as i64)
        && fits(&c[14], 0, u8::MAX as i64))
    {
        return Err(DecodeError("value out of range for its field"));
    }
    Ok((0..n)
        .map(|i| FrameRecord {
            seq: c[0][i] as u64,
            ts_ms: c[1][i],
            duration_us: c[2][i] as u32,
            voltage_mv: c[3][i] as u32,
            current_ua: c[4][i] as u32,
            frequency_mhz: c[5][i] as u32,
            apparent_power_mva: c[6][i] as u64,
            phase_angle: c[7][i] as i16,
            real_power_mw: c[8][i],
            reactive_power_mvar: c[9][i],
            power_factor: c[10][i] as i16,
            crest_factor: c[11][i] as u16,
            energy_import_mwh: c[12][i] as u64,
            energy_export_mwh: c[13][i] as u64,
            flags: c[14][i] as u8,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_record() -> impl Strategy<Value = FrameRecord> {
        (
            any::<(u64, i64, u32, u32, u32, u32)>(),
            any::<(i64, i64, u64, i16, u16, i16)>(),
            any::<(u64, u64, u8)>(),
        )
            .prop_map(|(a, b, c)| FrameRecord {
                seq: a.0,
                ts_ms: a.1,
                duration_us: a.2,
                voltage_mv: a.3,
                current_ua: a.4,
                frequency_mhz: a.5,
                real_power_mw: b.0,
                reactive_power_mvar: b.1,
                apparent_power_mva: b.2,
                power_factor: b.3,
                crest_factor: b.4,
                phase_angle: b.5,
                energy_import_mwh: c.0,
                energy_export_mwh: c.1,
                flags: c.2,
            })
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(any_record(), 0..64)) {
            let blob = encode(&records);
            prop_assert_eq!(decode(&blob).unwrap(), records);
        }
    }
}
