//! Synthesised ADC samples of one circuit: a sinusoidal voltage and a current with a phase
//! shift, harmonics, a load schedule and noise, quantised like the slave's ADC.
//!
//! Phases are 32-bit fixed-point turns, so a harmonic's phase is a wrapping multiply and
//! the sine comes from a small interpolated table: a sample pair costs a few nanoseconds.

use std::f32::consts::{PI, SQRT_2};
use std::sync::OnceLock;

use pmon_meter::Quantities;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::SlaveConfig;

/// V/I sample pairs per second of every simulated slave.
pub const SAMPLE_RATE: u32 = 1800;

/// Peak voltage at the ADC's full scale: 230 V rms (325 V peak) uses ~70 % of it, the
/// 300 V rms limit of the configuration stays below it.
pub const VOLTAGE_FULL_SCALE_PEAK: f32 = 460.0;

/// Fraction of the ADC's full scale that the current sensor's range (rms, as a sine) uses,
/// leaving headroom for crest factors up to about 2.
pub const CURRENT_RANGE_FRACTION: f32 = 0.7;

const TABLE_BITS: u32 = 10;
const TABLE_LEN: usize = 1 << TABLE_BITS;

fn sine_table() -> &'static [f32; TABLE_LEN + 1] {
    static TABLE: OnceLock<Box<[f32; TABLE_LEN + 1]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([0f32; TABLE_LEN + 1]);
        for (i, value) in table.iter_mut().enumerate() {
            *value = (2.0 * std::f64::consts::PI * i as f64 / TABLE_LEN as f64).sin() as f32;
        }
        table
    })
}

/// The ADC resolution, kept to what validation allows even for a configuration that was
/// never validated.
pub(crate) fn adc_bits(config: &SlaveConfig) -> u32 {
    u32::from(config.adc_bits.clamp(8, 15))
}

/// Volts and amperes per ADC count of a slave with this configuration.
pub fn counts_scale(config: &SlaveConfig) -> (f32, f32) {
    let half_scale = (1u32 << (adc_bits(config) - 1)) as f32;
    let volts_per_count = VOLTAGE_FULL_SCALE_PEAK / half_scale;
    let amps_per_count = config.current_range * SQRT_2 / CURRENT_RANGE_FRACTION / half_scale;
    (volts_per_count, amps_per_count)
}

/// A phase in turns (0.0..1.0) as 32-bit fixed point.
fn turns(fraction: f64) -> u32 {
    (fraction.rem_euclid(1.0) * 4_294_967_296.0) as u64 as u32
}

/// Relative load over time: steps of whole samples, repeated.
#[derive(Debug, Clone)]
struct Schedule {
    steps: Vec<(u64, f32)>,
    index: usize,
    left: u64,
}

impl Schedule {
    fn new(steps: &[(f32, f32)]) -> Schedule {
        let steps: Vec<(u64, f32)> = steps
            .iter()
            .map(|&(seconds, relative)| (((seconds * SAMPLE_RATE as f32) as u64).max(1), relative))
            .collect();
        let left = steps.first().map_or(u64::MAX, |step| step.0);
        Schedule {
            steps,
            index: 0,
            left,
        }
    }

    fn next(&mut self) -> f32 {
        if self.steps.is_empty() {
            return 1.0;
        }
        if self.left == 0 {
            self.index = (self.index + 1) % self.steps.len();
            self.left = self.steps[self.index].0;
        }
        self.left -= 1;
        self.steps[self.index].1
    }
}

/// The sample generator of one slave.
#[derive(Debug, Clone)]
pub struct Waveform {
    table: &'static [f32; TABLE_LEN + 1],
    phase: u32,
    step: u32,
    /// Current phase behind voltage, in turns (export adds half a turn).
    lag: u32,
    voltage_peak: f32,
    current_peak: f32,
    harmonics: Vec<(u32, f32)>,
    mid_scale: f32,
    max_count: f32,
    noise_v: f32,
    noise_i: f32,
    scale: f32,
    schedule: Schedule,
    rng: SmallRng,
}

impl Waveform {
    /// Samples of `config`, starting at a random mains phase drawn from `seed`.
    pub fn new(config: &SlaveConfig, seed: u64) -> Waveform {
        let mut rng = SmallRng::seed_from_u64(seed);
        let (volts_per_count, amps_per_count) = counts_scale(config);
        let lag_degrees = f64::from(config.phase) + if config.export { 180.0 } else { 0.0 };
        let harmonics: Vec<(u32, f32)> = config
            .harmonics
            .iter()
            .map(|&(order, amplitude)| (u32::from(order), amplitude))
            .collect();
        let harmonic_power: f32 = harmonics.iter().map(|(_, a)| a * a).sum();
        let current_rms = config.current * (1.0 + harmonic_power).sqrt();
        // Uniform noise in ±a has an rms of a/√3.
        let uniform = 3f32.sqrt();
        Waveform {
            table: sine_table(),
            phase: rng.random(),
            step: turns(f64::from(config.frequency) / f64::from(SAMPLE_RATE)),
            lag: turns(lag_degrees / 360.0),
            voltage_peak: config.voltage * SQRT_2 / volts_per_count,
            current_peak: config.current * SQRT_2 / amps_per_count,
            harmonics,
            mid_scale: (1u32 << (adc_bits(config) - 1)) as f32,
            max_count: ((1u32 << adc_bits(config)) - 1) as f32,
            noise_v: config.noise * config.voltage / volts_per_count * uniform,
            noise_i: config.noise * current_rms / amps_per_count * uniform,
            scale: 1.0,
            schedule: Schedule::new(&config.schedule),
            rng,
        }
    }

    /// Scales the load (the schedule's steps multiply it); 1.0 is the configured current.
    pub fn set_load(&mut self, relative: f32) {
        self.scale = relative.max(0.0);
    }

    fn sin(&self, phase: u32) -> f32 {
        let index = (phase >> (32 - TABLE_BITS)) as usize;
        let fraction = (phase & ((1 << (32 - TABLE_BITS)) - 1)) as f32
            * (1.0 / (1u32 << (32 - TABLE_BITS)) as f32);
        let a = self.table[index];
        let b = self.table[index + 1];
        a + (b - a) * fraction
    }

    fn quantise(&self, value: f32) -> i16 {
        // Flooring a non-negative value by truncation: adding 0.5 rounds to nearest.
        (value + self.mid_scale + 0.5).clamp(0.0, self.max_count) as i16
    }

    /// The next V/I pair in ADC counts (0..2^bits, mid-scale at zero).
    pub fn next_pair(&mut self) -> (i16, i16) {
        let phase = self.phase;
        self.phase = phase.wrapping_add(self.step);
        let current_phase = phase.wrapping_sub(self.lag);
        let mut current = self.sin(current_phase);
        for &(order, amplitude) in &self.harmonics {
            current += amplitude * self.sin(current_phase.wrapping_mul(order));
        }
        let load = self.scale * self.schedule.next();
        let mut v = self.voltage_peak * self.sin(phase);
        let mut i = self.current_peak * load * current;
        if self.noise_v > 0.0 {
            v += self.noise_v * self.rng.random_range(-1.0f32..1.0);
            i += self.noise_i * load * self.rng.random_range(-1.0f32..1.0);
        }
        (self.quantise(v), self.quantise(i))
    }
}

/// The quantities a perfect meter reports for `config` at full load (schedule ignored).
pub fn expected(config: &SlaveConfig) -> Quantities {
    let lag = config.phase + if config.export { 180.0 } else { 0.0 };
    let lag = if lag > 180.0 { lag - 360.0 } else { lag };
    let harmonic_power: f32 = config.harmonics.iter().map(|(_, a)| a * a).sum();
    let current = config.current * (1.0 + harmonic_power).sqrt();
    let radians = lag * PI / 180.0;
    let real_power = config.voltage * config.current * radians.cos();
    let apparent_power = config.voltage * current;
    Quantities {
        voltage: config.voltage,
        current,
        frequency: config.frequency,
        real_power,
        reactive_power: config.voltage * config.current * radians.sin(),
        apparent_power,
        power_factor: if apparent_power > 0.0 {
            real_power / apparent_power
        } else {
            0.0
        },
        crest_factor: crest_factor(config, current),
        phase_angle: lag,
    }
}

/// Peak over rms of the current shape, by sampling one fundamental period finely.
fn crest_factor(config: &SlaveConfig, rms: f32) -> f32 {
    if rms <= 0.0 {
        return 0.0;
    }
    let points = 3600;
    let peak = (0..points)
        .map(|k| {
            let theta = 2.0 * PI * k as f32 / points as f32;
            let harmonics: f32 = config
                .harmonics
                .iter()
                .map(|&(order, a)| a * (f32::from(order) * theta).sin())
                .sum();
            (theta.sin() + harmonics).abs()
        })
        .fold(0.0f32, f32::max);
    peak * config.current * SQRT_2 / rms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(values: &[f32]) -> f32 {
        (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt()
    }

    #[test]
    fn samples_have_the_configured_rms_and_offset() {
        let mut config = SlaveConfig::new(0x10, 230.0, 50.0, 10.0);
        config.adc_bits = 12;
        let (vpc, apc) = counts_scale(&config);
        let mut wave = Waveform::new(&config, 7);
        let (mut v, mut i) = (Vec::new(), Vec::new());
        for _ in 0..1800 {
            let (a, b) = wave.next_pair();
            v.push((a as f32 - 2048.0) * vpc);
            i.push((b as f32 - 2048.0) * apc);
        }
        assert!((rms(&v) - 230.0).abs() < 1.0, "{}", rms(&v));
        assert!((rms(&i) - 10.0).abs() < 0.1, "{}", rms(&i));
    }

    #[test]
    fn schedule_steps_repeat() {
        let mut schedule = Schedule::new(&[(1.0 / 1800.0, 1.0), (2.0 / 1800.0, 0.5)]);
        let got: Vec<f32> = (0..6).map(|_| schedule.next()).collect();
        assert_eq!(got, vec![1.0, 0.5, 0.5, 1.0, 0.5, 0.5]);
    }

    #[test]
    fn expected_quantities_of_a_lagging_and_an_exporting_load() {
        let mut config = SlaveConfig::new(0x10, 230.0, 50.0, 12.5);
        config.phase = 30.0;
        let q = expected(&config);
        assert!((q.real_power - 2489.8).abs() < 0.5);
        assert!((q.crest_factor - SQRT_2).abs() < 1e-3);
        config.export = true;
        let q = expected(&config);
        assert!(q.real_power < -2489.0 && q.reactive_power < 0.0);
        assert!((q.phase_angle + 150.0).abs() < 1e-3);
    }
}
