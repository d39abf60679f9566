//! The measurement record: one zero-crossing-aligned block (~200 ms) in 32 bytes.
//!
//! All fields are little-endian fixed-point integers. Signed fields are two's complement:
//! exported power, leading current and a negative power factor are ordinary values.

use crate::DecodeError;

/// Bytes in one encoded record.
pub const RECORD_LEN: usize = 32;

/// Energy counter resolution: one count is 0.1 Wh (360 J).
pub const ENERGY_LSB_WH: f64 = 0.1;
/// Energy counters wrap at 2^24 counts (1677.7216 kWh); the master unwraps them.
pub const ENERGY_WRAP: u32 = 1 << 24;

/// The per-slave scale of current and power fields, read from [`crate::Identity`].
///
/// A slave with a 50 A sensor and one with a 200 A sensor use the same 16-bit fields
/// at different resolutions, as metering ICs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Scales {
    /// Microamperes per count of [`Record::current`].
    pub current_lsb_ua: u16,
    /// Milliwatts (mvar, mVA) per count of the power fields.
    pub power_lsb_mw: u16,
}

impl Scales {
    /// Scales that cover `current_range` amperes rms at up to `voltage_range` volts rms
    /// with 16-bit fields, rounded up to whole µA and mW.
    pub fn for_range(current_range: f32, voltage_range: f32) -> Scales {
        let current_lsb = ceil_to_u16(current_range * 1e6 / 32_000.0);
        let power_lsb = ceil_to_u16(current_range * voltage_range * 1e3 / 32_000.0);
        Scales {
            current_lsb_ua: current_lsb,
            power_lsb_mw: power_lsb,
        }
    }
}

fn ceil_to_u16(x: f32) -> u16 {
    let truncated = x as u16;
    let rounded = if (truncated as f32) < x {
        truncated.saturating_add(1)
    } else {
        truncated
    };
    rounded.max(1)
}

/// One measurement block as it travels over I2C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Record {
    /// Block sequence number, from 0 after each slave reset; consecutive blocks differ by 1.
    pub seq: u32,
    /// Slave sample index at the end of the block (wraps at 2^32).
    pub sample_index: u32,
    /// Voltage rms, 10 mV per count.
    pub voltage: u16,
    /// Current rms, [`Scales::current_lsb_ua`] per count.
    pub current: u16,
    /// Frequency, 1 mHz per count.
    pub frequency: u16,
    /// Real power, [`Scales::power_lsb_mw`] per count; negative when exporting.
    pub real_power: i16,
    /// Reactive power of the fundamental, [`Scales::power_lsb_mw`] per count; positive when current lags.
    pub reactive_power: i16,
    /// Apparent power Vrms·Irms, [`Scales::power_lsb_mw`] per count.
    pub apparent_power: u16,
    /// Power factor P/S, 1/10000 per count; negative when exporting.
    pub power_factor: i16,
    /// Current crest factor peak/rms, 1/1000 per count.
    pub crest_factor: u16,
    /// Phase of the current's fundamental behind the voltage's, 0.01° per count.
    pub phase_angle: i16,
    /// Imported energy, [`ENERGY_LSB_WH`] per count, 24 bits, wrapping.
    pub energy_import: u32,
    /// Exported energy, [`ENERGY_LSB_WH`] per count, 24 bits, wrapping.
    pub energy_export: u32,
}

/// A block's quantities in SI units, before quantisation to a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantities {
    /// V rms.
    pub voltage: f32,
    /// A rms.
    pub current: f32,
    /// Hz.
    pub frequency: f32,
    /// W.
    pub real_power: f32,
    /// var.
    pub reactive_power: f32,
    /// VA.
    pub apparent_power: f32,
    /// -1 ..= 1.
    pub power_factor: f32,
    /// peak / rms.
    pub crest_factor: f32,
    /// Degrees, -180 ..= 180.
    pub phase_angle: f32,
}

fn quantize_u16(value: f32, lsb: f32) -> u16 {
    // `as` saturates and maps NaN to 0, which is what a meter should report for nonsense.
    libm_round(value / lsb) as u16
}

fn quantize_i16(value: f32, lsb: f32) -> i16 {
    libm_round(value / lsb) as i16
}

/// Round half away from zero without `std` or libm.
fn libm_round(x: f32) -> f32 {
    if x >= 0.0 {
        (x + 0.5) as i64 as f32
    } else {
        (x - 0.5) as i64 as f32
    }
}

impl Record {
    /// Quantises a block's quantities; out-of-range values saturate.
    pub fn from_quantities(
        seq: u32,
        sample_index: u32,
        q: &Quantities,
        scales: Scales,
        energy_import: u32,
        energy_export: u32,
    ) -> Record {
        let current_lsb = scales.current_lsb_ua as f32 * 1e-6;
        let power_lsb = scales.power_lsb_mw as f32 * 1e-3;
        Record {
            seq,
            sample_index,
            voltage: quantize_u16(q.voltage, 0.01),
            current: quantize_u16(q.current, current_lsb),
            frequency: quantize_u16(q.frequency, 0.001),
            real_power: quantize_i16(q.real_power, power_lsb),
            reactive_power: quantize_i16(q.reactive_power, power_lsb),
            apparent_power: quantize_u16(q.apparent_power, power_lsb),
            power_factor: quantize_i16(q.power_factor, 1e-4),
            crest_factor: quantize_u16(q.crest_factor, 1e-3),
            phase_angle: quantize_i16(q.phase_angle, 0.01),
            energy_import: energy_import % ENERGY_WRAP,
            energy_export: energy_export % ENERGY_WRAP,
        }
    }

    /// The quantities in SI units.
    pub fn quantities(&self, scales: Scales) -> Quantities {
        let current_lsb = scales.current_lsb_ua as f32 * 1e-6;
        let power_lsb = scales.power_lsb_mw as f32 * 1e-3;
        Quantities {
            voltage: self.voltage as f32 * 0.01,
            current: self.current as f32 * current_lsb,
            frequency: self.frequency as f32 * 0.001,
            real_power: self.real_power as f32 * power_lsb,
            reactive_power: self.reactive_power as f32 * power_lsb,
            apparent_power: self.apparent_power as f32 * power_lsb,
            power_factor: self.power_factor as f32 * 1e-4,
            crest_factor: self.crest_factor as f32 * 1e-3,
            phase_angle: self.phase_angle as f32 * 0.01,
        }
    }

    /// Encodes into exactly [`RECORD_LEN`] bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&self.seq.to_le_bytes());
        out[4..8].copy_from_slice(&self.sample_index.to_le_bytes());
        out[8..10].copy_from_slice(&self.voltage.to_le_bytes());
        out[10..12].copy_from_slice(&self.current.to_le_bytes());
        out[12..14].copy_from_slice(&self.frequency.to_le_bytes());
        out[14..16].copy_from_slice(&self.real_power.to_le_bytes());
        out[16..18].copy_from_slice(&self.reactive_power.to_le_bytes());
        out[18..20].copy_from_slice(&self.apparent_power.to_le_bytes());
        out[20..22].copy_from_slice(&self.power_factor.to_le_bytes());
        out[22..24].copy_from_slice(&self.crest_factor.to_le_bytes());
        out[24..26].copy_from_slice(&self.phase_angle.to_le_bytes());
        out[26..29].copy_from_slice(&self.energy_import.to_le_bytes()[..3]);
        out[29..32].copy_from_slice(&self.energy_export.to_le_bytes()[..3]);
        out
    }

    /// Decodes [`RECORD_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let b: &[u8; RECORD_LEN] = bytes.try_into().map_err(|_| DecodeError::Length {
            expected: RECORD_LEN,
            actual: bytes.len(),
        })?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let i16_at = |i: usize| i16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u24_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], 0]);
        Ok(Record {
            seq: u32_at(0),
            sample_index: u32_at(4),
            voltage: u16_at(8),
            current: u16_at(10),
            frequency: u16_at(12),
            real_power: i16_at(14),
            reactive_power: i16_at(16),
            apparent_power: u16_at(18),
            power_factor: i16_at(20),
            crest_factor: u16_at(22),
            phase_angle: i16_at(24),
            energy_import: u24_at(26),
            energy_export: u24_at(29),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked example of `docs/protocol/i2c.md`: a heat pump at 230.00 V drawing 12.5 A
    /// that lags by 30°, at 50.000 Hz, with [`EXAMPLE_SCALES`].
    pub(crate) const EXAMPLE_SCALES: Scales = Scales {
        current_lsb_ua: 1000,
        power_lsb_mw: 500,
    };

    pub(crate) fn example() -> Record {
        Record {
            seq: 1234,
            sample_index: 444_240,
            voltage: 23_000,
            current: 12_500,
            frequency: 50_000,
            real_power: 4_980,
            reactive_power: 2_875,
            apparent_power: 5_750,
            power_factor: 8_660,
            crest_factor: 1_414,
            phase_angle: 3_000,
            energy_import: 123_456,
            energy_export: 7,
        }
    }

    #[test]
    fn example_bytes_are_pinned() {
        let bytes = example().encode();
        let expected: [u8; 32] = [
            0xD2, 0x04, 0x00, 0x00, // seq 1234
            0x50, 0xC7, 0x06, 0x00, // sample index 444240
            0xD8, 0x59, // 230.00 V
            0xD4, 0x30, // 12500 × 1 mA = 12.5 A
            0x50, 0xC3, // 50.000 Hz
            0x74, 0x13, // P 4980 × 0.5 W = 2490 W
            0x3B, 0x0B, // Q 2875 × 0.5 var = 1437.5 var
            0x76, 0x16, // S 5750 × 0.5 VA = 2875 VA
            0xD4, 0x21, // PF 0.8660
            0x86, 0x05, // crest factor 1.414
            0xB8, 0x0B, // phase 30.00°
            0x40, 0xE2, 0x01, // import 123456 × 0.1 Wh
            0x07, 0x00, 0x00, // export 0.7 Wh
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Record::decode(&expected), Ok(example()));
    }

    #[test]
    fn example_quantities_are_what_the_document_says() {
        let q = example().quantities(EXAMPLE_SCALES);
        assert!((q.current - 12.5).abs() < 1e-4);
        assert!((q.real_power - 2490.0).abs() < 1e-3);
        assert!((q.phase_angle - 30.0).abs() < 1e-4);
        let again = Record::from_quantities(1234, 444_240, &q, EXAMPLE_SCALES, 123_456, 7);
        assert_eq!(again, example());
    }

    #[test]
    fn negative_values_survive_the_wire() {
        let record = Record {
            real_power: -4_980,
            reactive_power: -2_875,
            power_factor: -8_660,
            phase_angle: -17_999,
            ..example()
        };
        let bytes = record.encode();
        assert_eq!(&bytes[14..16], &[0x8C, 0xEC]);
        assert_eq!(Record::decode(&bytes), Ok(record));
    }

    #[test]
    fn quantisation_saturates_instead_of_wrapping() {
        let scales = Scales {
            current_lsb_ua: 1000,
            power_lsb_mw: 1000,
        };
        let q = Quantities {
            voltage: 1e6,
            real_power: -1e9,
            frequency: f32::NAN,
            ..Quantities::default()
        };
        let r = Record::from_quantities(0, 0, &q, scales, 0, 0);
        assert_eq!(r.voltage, u16::MAX);
        assert_eq!(r.real_power, i16::MIN);
        assert_eq!(r.frequency, 0);
    }

    #[test]
    fn scales_cover_their_range() {
        let s = Scales::for_range(50.0, 300.0);
        assert_eq!(s.current_lsb_ua, 1563);
        assert_eq!(s.power_lsb_mw, 469);
        assert!(32_767.0 * s.power_lsb_mw as f32 * 1e-3 >= 50.0 * 300.0);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let record = Record::decode(&bytes).unwrap();
            prop_assert_eq!(record.encode(), bytes);
        }
    }
}
