//! Binary frames: the measurements of one circuit, postcard-encoded behind a version byte.
//!
//! A frame is `[VERSION] ++ postcard(Frame)`. Postcard writes integers as varints (signed
//! ones zigzagged), so the fixed-point fields below cost 2–4 bytes each and stay exact:
//! a typical record is about 55 bytes. A reader refuses a version it does not know rather
//! than guess; a new field means a new version.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// The frame version this build writes and reads.
pub const VERSION: u8 = 1;
/// Most records one frame may carry; a reader refuses more (a bound on hostile payloads).
pub const MAX_RECORDS: usize = 4096;

/// Bits of [`FrameRecord::flags`].
pub mod flag {
    /// An ADC channel clipped during the block.
    pub const CLIPPED: u8 = 1 << 0;
    /// No voltage zero crossing: the block was cut by time and frequency is 0.
    pub const NO_ZERO_CROSSING: u8 = 1 << 1;
    /// The energy counters were integrated by the master from real power, not counted by the slave.
    pub const ENERGY_INTEGRATED: u8 = 1 << 2;
    /// The first record after the slave restarted: the sequence gap before it is a restart.
    pub const RESTART: u8 = 1 << 3;
}

/// The records of one circuit from one poll, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The circuit id, as in the topic.
    pub circuit: String,
    /// Records in sequence order.
    pub records: Vec<FrameRecord>,
}

/// One measurement block in fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Per-circuit sequence number: strictly increasing for the life of the circuit, through
    /// slave restarts; a gap means blocks that were never received.
    pub seq: u64,
    /// End of the block, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// Length of the block, microseconds.
    pub duration_us: u32,
    /// Voltage rms, mV.
    pub voltage_mv: u32,
    /// Current rms, µA.
    pub current_ua: u32,
    /// Frequency, mHz (0 without a zero crossing).
    pub frequency_mhz: u32,
    /// Real power, mW; negative when exporting.
    pub real_power_mw: i64,
    /// Reactive power of the fundamental, mvar; positive when current lags.
    pub reactive_power_mvar: i64,
    /// Apparent power, mVA.
    pub apparent_power_mva: u64,
    /// Power factor, 1/10000.
    pub power_factor: i16,
    /// Current crest factor, 1/1000.
    pub crest_factor: u16,
    /// Phase angle of the current's fundamental behind the voltage, 0.01°.
    pub phase_angle: i16,
    /// Energy imported since the circuit was first seen, mWh; never decreases.
    pub energy_import_mwh: u64,
    /// Energy exported since the circuit was first seen, mWh; never decreases.
    pub energy_export_mwh: u64,
    /// [`flag`] bits.
    pub flags: u8,
}

impl Frame {
    /// `[VERSION] ++ postcard(self)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.records.len() * 64);
        out.push(VERSION);
        // Serialising plain integers and strings into a Vec cannot fail.
        match postcard::to_extend(self, out) {
            Ok(out) => out,
            Err(_) => unreachable!("postcard into a Vec is infallible for Frame"),
        }
    }

    /// Decodes a payload, refusing unknown versions, trailing bytes and oversized frames.
    pub fn decode(payload: &[u8]) -> Result<Frame, ProtoError> {
        let (&version, body) = payload.split_first().ok_or(ProtoError::Empty)?;
        if version != VERSION {
            return Err(ProtoError::Version(version));
        }
        let (frame, rest): (Frame, &[u8]) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(ProtoError::Invalid("trailing bytes after the frame"));
        }
        if frame.records.len() > MAX_RECORDS {
            return Err(ProtoError::Invalid("record count"));
        }
        if !crate::topic::valid_level(&frame.circuit) {
            return Err(ProtoError::Invalid("circuit id"));
        }
        Ok(frame)
    }
}

impl FrameRecord {
    /// V.
    pub fn voltage(&self) -> f64 {
        self.voltage_mv as f64 / 1e3
    }
    /// A.
    pub fn current(&self) -> f64 {
        self.current_ua as f64 / 1e6
    }
    /// Hz.
    pub fn frequency(&self) -> f64 {
        self.frequency_mhz as f64 / 1e3
    }
    /// W.
    pub fn real_power(&self) -> f64 {
        self.real_power_mw as f64 / 1e3
    }
    /// var.
    pub fn reactive_power(&self) -> f64 {
        self.reactive_power_mvar as f64 / 1e3
    }
    /// VA.
    pub fn apparent_power(&self) -> f64 {
        self.apparent_power_mva as f64 / 1e3
    }
    /// -1 ..= 1.
    pub fn power_factor(&self) -> f64 {
        self.power_factor as f64 / 1e4
    }
    /// peak / rms.
    pub fn crest_factor(&self) -> f64 {
        self.crest_factor as f64 / 1e3
    }
    /// Degrees.
    pub fn phase_angle(&self) -> f64 {
        self.phase_angle as f64 / 1e2
    }
    /// kWh.
    pub fn energy_import_kwh(&self) -> f64 {
        self.energy_import_mwh as f64 / 1e6
    }
    /// kWh.
    pub fn energy_export_kwh(&self) -> f64 {
        self.energy_export_mwh as f64 / 1e6
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The record of the worked example in `docs/mqtt.md`.
    pub(crate) fn example_record() -> FrameRecord {
        FrameRecord {
            seq: 1_764_084_000_000,
            ts_ms: 1_764_084_600_200,
            duration_us: 200_000,
            voltage_mv: 230_000,
            current_ua: 12_500_000,
            frequency_mhz: 50_000,
            real_power_mw: 2_490_000,
            reactive_power_mvar: 1_437_500,
            apparent_power_mva: 2_875_000,
            power_factor: 8_660,
            crest_factor: 1_414,
            phase_angle: 3_000,
            energy_import_mwh: 12_345_600,
            energy_export_mwh: 700,
            flags: 0,
        }
    }

    pub(crate) fn example() -> Frame {
        Frame {
            circuit: "00c0ffee".into(),
            records: vec![example_record()],
        }
    }

    #[test]
    fn example_bytes_are_pinned() {
        let bytes = example().encode();
        let expected: &[u8] = &[
            0x01, // version
            0x08, b'0', b'0', b'c', b'0', b'f', b'f', b'e', b'e', // circuit
            0x01, // one record
            0x80, 0xCA, 0xE6, 0xDC, 0xAB, 0x33, // seq 1764084000000
            0x90, 0xB6, 0x96, 0xBA, 0xD7, 0x66, // ts_ms 1764084600200 (zigzag)
            0xC0, 0x9A, 0x0C, // duration_us 200000
            0xF0, 0x84, 0x0E, // voltage_mv 230000
            0xA0, 0xF8, 0xFA, 0x05, // current_ua 12500000
            0xD0, 0x86, 0x03, // frequency_mhz 50000
            0xA0, 0xFA, 0xAF, 0x02, // real_power_mw 2490000 (zigzag)
            0xF8, 0xBC, 0xAF, 0x01, // reactive_power_mvar 1437500 (zigzag)
            0xF8, 0xBC, 0xAF, 0x01, // apparent_power_mva 2875000
            0xA8, 0x87, 0x01, // power_factor 8660 (zigzag)
            0x86, 0x0B, // crest_factor 1414
            0xF0, 0x2E, // phase_angle 3000 (zigzag)
            0x80, 0xC2, 0xF1, 0x05, // energy_import_mwh 12345600
            0xBC, 0x05, // energy_export_mwh 700
            0x00, // flags
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Frame::decode(expected).unwrap(), example());
    }

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        let mut bytes = example().encode();
        bytes[0] = 2;
        assert!(matches!(Frame::decode(&bytes), Err(ProtoError::Version(2))));
        let mut bytes = example().encode();
        bytes.push(0);
        assert!(matches!(Frame::decode(&bytes), Err(ProtoError::Invalid(_))));
        assert!(matches!(Frame::decode(&[]), Err(ProtoError::Empty)));
    }

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
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Frame::decode(&bytes);
            let mut versioned = bytes.clone();
            versioned.insert(0, VERSION);
            let _ = Frame::decode(&versioned);
        }

        #[test]
        fn round_trip(records in proptest::collection::vec(any_record(), 0..8)) {
            let frame = Frame { circuit: "abc".into(), records };
            prop_assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }
}
