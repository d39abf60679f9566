//! Measurement configuration.

/// How a [`crate::BlockProcessor`] turns ADC counts into quantities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DspConfig {
    /// V/I sample pairs per second, e.g. 1800.0.
    pub sample_rate: f32,
    /// Nominal mains frequency, 50.0 or 60.0 Hz: used before the first measured zero
    /// crossing, for the startup window and for the zero-crossing timeout.
    pub nominal_frequency: f32,
    /// Mains cycles per block: 10 at 50 Hz, 12 at 60 Hz (200 ms).
    pub block_cycles: u32,
    /// Calibration: volts per ADC count, divider and gain included.
    pub volts_per_count: f32,
    /// Calibration: amperes per ADC count.
    pub amps_per_count: f32,
    /// Degrees added to the current's phase to undo sensor delay (positive when the current
    /// sensor makes the current appear to lag more than it does).
    pub phase_correction_deg: f32,
}

impl DspConfig {
    /// The usual configuration for a grid: 12 cycles per block at 60 Hz, 10 otherwise
    /// (as [`pmon_meter::Config::for_frequency`]), no phase correction.
    pub fn for_frequency(
        nominal: u8,
        sample_rate: f32,
        volts_per_count: f32,
        amps_per_count: f32,
    ) -> Self {
        DspConfig {
            sample_rate,
            nominal_frequency: nominal as f32,
            block_cycles: if nominal == 60 { 12 } else { 10 },
            volts_per_count,
            amps_per_count,
            phase_correction_deg: 0.0,
        }
    }

    /// Sample pairs in one nominal mains cycle (at least 2).
    pub fn nominal_cycle_samples(&self) -> u32 {
        round_to_u32(self.sample_rate / self.nominal_frequency).max(2)
    }

    /// Sample pairs in one block at the nominal frequency (at least 2).
    pub fn nominal_block_samples(&self) -> u32 {
        round_to_u32(self.sample_rate * self.block_cycles.max(1) as f32 / self.nominal_frequency)
            .max(2)
    }
}

/// Round to the nearest u32; NaN and negative values give 0, huge ones saturate.
pub(crate) fn round_to_u32(x: f32) -> u32 {
    (x + 0.5) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact: 10 cycles (360 samples at 1800/s) at 50 Hz, 12 (360) at 60 Hz, as the meter.
    #[test]
    fn for_frequency_matches_the_meter_defaults() {
        let c50 = DspConfig::for_frequency(50, 1800.0, 0.5, 0.01);
        assert_eq!(c50.block_cycles, 10);
        assert_eq!(c50.nominal_cycle_samples(), 36);
        assert_eq!(c50.nominal_block_samples(), 360);
        let c60 = DspConfig::for_frequency(60, 1800.0, 0.5, 0.01);
        assert_eq!(c60.block_cycles, 12);
        assert_eq!(c60.nominal_frequency, 60.0);
        assert_eq!(c60.nominal_block_samples(), 360);
        for nominal in [50, 60] {
            let meter = pmon_meter::Config::for_frequency(nominal);
            let dsp = DspConfig::for_frequency(nominal, 1800.0, 1.0, 1.0);
            assert_eq!(dsp.block_cycles, meter.block_cycles as u32);
        }
    }

    /// Exact: NaN, negative or zero rates give the 2-sample minimum instead of 0 or a panic.
    #[test]
    fn nonsense_configurations_give_usable_lengths() {
        let mut c = DspConfig::for_frequency(50, f32::NAN, 1.0, 1.0);
        assert_eq!(c.nominal_cycle_samples(), 2);
        c.sample_rate = -5.0;
        c.block_cycles = 0;
        assert_eq!(c.nominal_block_samples(), 2);
    }
}
