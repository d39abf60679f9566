//! Test-only waveform synthesizer with analytic truth.
//!
//! Voltage `v = V·cos(x)`, current `i = I1·(cos(x − θ) + Σ a_h·cos(h·(x − θ)))` with
//! `x = ω·n + ½·α·n² + φ0` (n the sample index), plus DC, Gaussian noise and rounding to
//! 16-bit or 10-bit (0..=1023) counts. With all `a_h ≥ 0` the current's peak is
//! `I1·(1 + Σ a_h)` (triangle inequality, reached at `x = θ`).

use std::vec::Vec;

use core::f64::consts::{SQRT_2, TAU};

/// A synthetic V/I waveform in ADC counts.
#[derive(Debug, Clone)]
pub struct Wave {
    pub sample_rate: f64,
    /// Frequency at sample 0, Hz.
    pub frequency: f64,
    /// Frequency ramp, Hz per second.
    pub chirp: f64,
    /// Voltage peak, counts.
    pub v_amp: f64,
    /// Current fundamental peak, counts.
    pub i_amp: f64,
    /// Current fundamental behind the voltage, degrees.
    pub lag_deg: f64,
    /// Voltage phase at sample 0, degrees.
    pub phase0_deg: f64,
    /// Current harmonics: (order, amplitude relative to the fundamental).
    pub i_harmonics: Vec<(u32, f64)>,
    pub v_dc: f64,
    pub i_dc: f64,
    /// Gaussian noise standard deviation, counts.
    pub v_noise: f64,
    pub i_noise: f64,
    /// Round to 0..=1023 instead of the i16 range.
    pub ten_bit: bool,
    pub seed: u64,
}

/// Analytic values in counts (powers in counts²).
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    pub v_rms: f64,
    pub i_rms: f64,
    pub p: f64,
    pub q: f64,
    pub s: f64,
    pub pf: f64,
    pub phase_deg: f64,
    pub crest: f64,
}

impl Wave {
    /// A 16-bit pure sine: 325 V-ish peak of 25 000 counts, 20 000 counts of current.
    pub fn sine(frequency: f64, lag_deg: f64) -> Wave {
        Wave {
            sample_rate: 1800.0,
            frequency,
            chirp: 0.0,
            v_amp: 25_000.0,
            i_amp: 20_000.0,
            lag_deg,
            phase0_deg: 17.0,
            i_harmonics: Vec::new(),
            v_dc: 0.0,
            i_dc: 0.0,
            v_noise: 0.0,
            i_noise: 0.0,
            ten_bit: false,
            seed: 1,
        }
    }

    /// Phase `x` of the voltage at (possibly fractional) sample `n`.
    pub fn phase(&self, n: f64) -> f64 {
        let w = TAU * self.frequency / self.sample_rate;
        let alpha = TAU * self.chirp / (self.sample_rate * self.sample_rate);
        w * n + 0.5 * alpha * n * n + self.phase0_deg.to_radians()
    }

    /// Instantaneous frequency at sample `n`, Hz.
    pub fn frequency_at(&self, n: f64) -> f64 {
        self.frequency + self.chirp * n / self.sample_rate
    }

    /// The first `count` sample pairs.
    pub fn samples(&self, count: usize) -> Vec<(i16, i16)> {
        let mut rng = Rng(self.seed);
        let lag = self.lag_deg.to_radians();
        (0..count)
            .map(|n| {
                let x = self.phase(n as f64);
                let v = self.v_dc + self.v_amp * x.cos() + self.v_noise * rng.gaussian();
                let y = x - lag;
                let harmonics: f64 = self
                    .i_harmonics
                    .iter()
                    .map(|&(h, a)| a * (h as f64 * y).cos())
                    .sum();
                let i =
                    self.i_dc + self.i_amp * (y.cos() + harmonics) + self.i_noise * rng.gaussian();
                (self.quantise(v), self.quantise(i))
            })
            .collect()
    }

    fn quantise(&self, x: f64) -> i16 {
        if self.ten_bit {
            x.round().clamp(0.0, 1023.0) as i16
        } else {
            x.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
        }
    }

    /// Analytic quantities. Rms values include the noise and the rounding noise (1/12 count²).
    pub fn truth(&self) -> Truth {
        let harmonic_power: f64 = self.i_harmonics.iter().map(|&(_, a)| a * a).sum();
        let harmonic_peak: f64 = self.i_harmonics.iter().map(|&(_, a)| a).sum();
        let v_rms =
            (self.v_amp * self.v_amp / 2.0 + self.v_noise * self.v_noise + 1.0 / 12.0).sqrt();
        let i_clean = self.i_amp / SQRT_2 * (1.0 + harmonic_power).sqrt();
        let i_rms = (i_clean * i_clean + self.i_noise * self.i_noise + 1.0 / 12.0).sqrt();
        let lag = self.lag_deg.to_radians();
        let p = self.v_amp * self.i_amp / 2.0 * lag.cos();
        let s = v_rms * i_rms;
        let mut phase_deg = self.lag_deg % 360.0;
        if phase_deg > 180.0 {
            phase_deg -= 360.0;
        } else if phase_deg <= -180.0 {
            phase_deg += 360.0;
        }
        Truth {
            v_rms,
            i_rms,
            p,
            q: self.v_amp * self.i_amp / 2.0 * lag.sin(),
            s,
            pf: p / s,
            phase_deg,
            crest: self.i_amp * (1.0 + harmonic_peak) / i_clean,
        }
    }

    /// Sample times (fractional) of the voltage's positive-going zero crossings
    /// (`x ≡ −π/2 mod 2π`) in `[0, count)`.
    pub fn crossings(&self, count: usize) -> Vec<f64> {
        let mut out = Vec::new();
        let target = |k: i64| -core::f64::consts::FRAC_PI_2 + TAU * k as f64;
        let mut k = (self.phase(0.0) / TAU).floor() as i64;
        loop {
            let goal = target(k);
            if goal >= self.phase(0.0) {
                // Bisection on the monotonic phase.
                let (mut lo, mut hi) = (-1.0f64, count as f64 + 1e6);
                if self.phase(hi) < goal {
                    break;
                }
                for _ in 0..200 {
                    let mid = 0.5 * (lo + hi);
                    if self.phase(mid) < goal {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                if hi >= count as f64 {
                    break;
                }
                out.push(hi);
            }
            k += 1;
        }
        out
    }
}

/// splitmix64 with Box–Muller: deterministic Gaussian noise.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}
