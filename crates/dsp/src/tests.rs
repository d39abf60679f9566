//! Accuracy of [`BlockProcessor`] against analytic waveforms.
//!
//! Error conventions (all bounds are maxima over every block of a run):
//! voltage, current, apparent power and crest factor relative to the truth; real and reactive
//! power relative to the apparent power (as meter accuracy classes do, so that P near zero at
//! 90° is judged fairly); power factor absolute; frequency in Hz; phase angle in degrees.

use std::vec::Vec;

use crate::synth::Wave;
use crate::{Block, BlockProcessor, DspConfig, EnergyCounter};

const V_PER_COUNT: f32 = 0.01;
const A_PER_COUNT: f32 = 0.001;

fn config(nominal: u8) -> DspConfig {
    DspConfig::for_frequency(nominal, 1800.0, V_PER_COUNT, A_PER_COUNT)
}

fn run(config: DspConfig, wave: &Wave, seconds: f64) -> Vec<Block> {
    let mut dsp = BlockProcessor::new(config);
    let count = (seconds * wave.sample_rate) as usize;
    wave.samples(count)
        .into_iter()
        .filter_map(|(v, i)| dsp.push(v, i))
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    v: f64,
    i: f64,
    p: f64,
    q: f64,
    s: f64,
    pf: f64,
    f: f64,
    phase: f64,
    crest: f64,
}

impl Errors {
    /// Clean 16-bit signals: V, I 0.002 %; P, Q, S, PF 0.005 % (P, Q of S); f 0.001 Hz;
    /// phase 0.005°; crest factor 0.5 % (a sampled sine's peak can be 1 − cos(π/36) = 0.38 %
    /// low at 36 samples per cycle).
    const CLEAN: Errors = Errors {
        v: 2e-5,
        i: 2e-5,
        p: 5e-5,
        q: 5e-5,
        s: 5e-5,
        pf: 5e-5,
        f: 1e-3,
        phase: 5e-3,
        crest: 5e-3,
    };

    fn with_crest(self, crest: f64) -> Errors {
        Errors { crest, ..self }
    }

    fn line(&self) -> std::string::String {
        std::format!(
            "V {:.2e} I {:.2e} P {:.2e} Q {:.2e} S {:.2e} PF {:.2e} f {:.2e} Hz phase {:.2e}° crest {:.2e}",
            self.v, self.i, self.p, self.q, self.s, self.pf, self.f, self.phase, self.crest
        )
    }

    fn max(self, o: Errors) -> Errors {
        Errors {
            v: self.v.max(o.v),
            i: self.i.max(o.i),
            p: self.p.max(o.p),
            q: self.q.max(o.q),
            s: self.s.max(o.s),
            pf: self.pf.max(o.pf),
            f: self.f.max(o.f),
            phase: self.phase.max(o.phase),
            crest: self.crest.max(o.crest),
        }
    }
}

/// Largest errors over `blocks`, which must all be aligned and unclipped.
fn measure(blocks: &[Block], config: &DspConfig, wave: &Wave) -> Errors {
    assert!(blocks.len() >= 5, "only {} blocks", blocks.len());
    let t = wave.truth();
    let vpc = config.volts_per_count as f64;
    let apc = config.amps_per_count as f64;
    let s_true = t.s * vpc * apc;
    let mut e = Errors::default();
    for b in blocks {
        assert!(!b.zero_crossing_lost, "{b:?}");
        assert!(!b.clipped, "{b:?}");
        let q = &b.quantities;
        let centre = (b.start_sample() + b.end_sample) as f64 / 2.0;
        let mut phase = q.phase_angle as f64 - t.phase_deg;
        if phase > 180.0 {
            phase -= 360.0;
        } else if phase < -180.0 {
            phase += 360.0;
        }
        let this = Errors {
            v: (q.voltage as f64 / (t.v_rms * vpc) - 1.0).abs(),
            i: (q.current as f64 / (t.i_rms * apc) - 1.0).abs(),
            p: (q.real_power as f64 - t.p * vpc * apc).abs() / s_true,
            q: (q.reactive_power as f64 - t.q * vpc * apc).abs() / s_true,
            s: (q.apparent_power as f64 / s_true - 1.0).abs(),
            pf: (q.power_factor as f64 - t.pf).abs(),
            f: (q.frequency as f64 - wave.frequency_at(centre)).abs(),
            phase: phase.abs(),
            crest: (q.crest_factor as f64 / t.crest - 1.0).abs(),
        };
        if std::env::var_os("PMON_DSP_VERBOSE").is_some() {
            std::eprintln!(
                "  block {}+{}: {}",
                b.start_sample(),
                b.samples,
                this.line()
            );
        }
        e = e.max(this);
    }
    e
}

/// Asserts `achieved <= bound` field by field, printing both.
fn assert_within(case: &str, achieved: Errors, bound: Errors) {
    std::eprintln!("{case}: {}", achieved.line());
    let checks = [
        ("V", achieved.v, bound.v),
        ("I", achieved.i, bound.i),
        ("P", achieved.p, bound.p),
        ("Q", achieved.q, bound.q),
        ("S", achieved.s, bound.s),
        ("PF", achieved.pf, bound.pf),
        ("f", achieved.f, bound.f),
        ("phase", achieved.phase, bound.phase),
        ("crest", achieved.crest, bound.crest),
    ];
    for (name, got, max) in checks {
        assert!(got <= max, "{case}: {name} error {got:e} exceeds {max:e}");
    }
}

fn check(case: &str, config: DspConfig, wave: &Wave, seconds: f64, bound: Errors) -> Vec<Block> {
    let blocks = run(config, wave, seconds);
    assert_within(case, measure(&blocks, &config, wave), bound);
    blocks
}

/// Pure 16-bit sine, unity power factor, at 50 Hz (36 samples per cycle) and off-grid
/// 49.97 Hz and 50.13 Hz. Proves [`Errors::CLEAN`]: V and I within 0.002 %, P, Q and S within
/// 0.005 % (of S), PF within 5e-5, f within 0.001 Hz, phase within 0.005°, crest factor
/// within 0.5 %.
#[test]
fn pure_sine() {
    for f in [50.0, 49.97, 50.13] {
        let case = std::format!("pure sine {f} Hz");
        check(&case, config(50), &Wave::sine(f, 0.0), 4.0, Errors::CLEAN);
    }
}

/// Lagging and leading current (±30°, ±60°, ±90°) at 50 Hz and 50.13 Hz. Proves
/// [`Errors::CLEAN`] (P and Q within 0.005 % of S, phase within 0.005°) and the signs:
/// Q > 0 and phase > 0 exactly when the current lags.
#[test]
fn lagging_and_leading_current() {
    for f in [50.0, 50.13] {
        for lag in [30.0, -30.0, 60.0, -60.0, 90.0, -90.0] {
            let case = std::format!("lag {lag}° at {f} Hz");
            let blocks = check(&case, config(50), &Wave::sine(f, lag), 3.0, Errors::CLEAN);
            for b in &blocks {
                assert_eq!(b.quantities.reactive_power > 0.0, lag > 0.0);
                assert_eq!(b.quantities.phase_angle > 0.0, lag > 0.0);
            }
        }
    }
}

/// Exported power: current 150° and −150° behind the voltage. Proves P < 0 and PF < 0 in
/// every block and [`Errors::CLEAN`] (phase within 0.005° of ±150°, PF within 5e-5 of −0.866).
#[test]
fn exported_power() {
    for lag in [150.0, -150.0] {
        let case = std::format!("export, lag {lag}°");
        let blocks = check(
            &case,
            config(50),
            &Wave::sine(50.13, lag),
            3.0,
            Errors::CLEAN,
        );
        for b in &blocks {
            assert!(b.quantities.real_power < 0.0 && b.quantities.power_factor < 0.0);
        }
    }
}

/// A reversed current sensor (negative `amps_per_count`) on a 30° lagging load reads as export
/// with the current 150° ahead: proves [`Errors::CLEAN`] against that equivalent waveform.
#[test]
fn negative_calibration_reverses_the_current() {
    let mut cfg = config(50);
    cfg.amps_per_count = -A_PER_COUNT;
    let blocks = run(cfg, &Wave::sine(50.0, 30.0), 3.0);
    let mut positive = cfg;
    positive.amps_per_count = A_PER_COUNT;
    let equivalent = Wave::sine(50.0, -150.0);
    assert_within(
        "reversed sensor",
        measure(&blocks, &positive, &equivalent),
        Errors::CLEAN,
    );
}

/// 3rd and 5th current harmonics (20 % and 8 %, peaks aligned) at 50.3 Hz, lag 30°.
/// Analytically Irms = I1·√(1 + 0.04 + 0.0064)/√2, crest factor = 1.28·√2/√1.0464 and P, Q
/// come from the fundamental only. Proves [`Errors::CLEAN`] with the crest factor within
/// 0.02 % (at 50.3 Hz the samples sweep across the peak).
#[test]
fn current_harmonics() {
    let mut wave = Wave::sine(50.3, 30.0);
    wave.i_amp = 16_000.0;
    wave.i_harmonics = std::vec![(3, 0.20), (5, 0.08)];
    check(
        "3rd + 5th harmonics",
        config(50),
        &wave,
        4.0,
        Errors::CLEAN.with_crest(2e-4),
    );
}

/// DC offsets on both channels (+3000 and −1500 counts, about 10 % of full scale), 49.97 Hz,
/// lag 30°. Proves [`Errors::CLEAN`] unchanged.
#[test]
fn dc_offsets() {
    let mut wave = Wave::sine(49.97, 30.0);
    wave.v_dc = 3000.0;
    wave.i_dc = -1500.0;
    check("DC offsets", config(50), &wave, 4.0, Errors::CLEAN);
}

/// 45, 50 and 55 Hz on a 50 Hz configuration (10 cycles) and 55, 60 and 65 Hz on a 60 Hz one
/// (12 cycles), lag 30°: blocks stay cycle-aligned off nominal. Proves [`Errors::CLEAN`]
/// (crest factor within 0.6 %: 1 − cos(π/30) = 0.55 % at 30 samples per cycle) and that
/// every block holds 1800·cycles/f ± 1 samples.
#[test]
fn off_nominal_frequencies() {
    for (nominal, f) in [
        (50, 45.0),
        (50, 50.0),
        (50, 55.0),
        (60, 55.0),
        (60, 60.0),
        (60, 65.0),
    ] {
        let cfg = config(nominal);
        let case = std::format!("{f} Hz on {nominal} Hz");
        let bound = Errors::CLEAN.with_crest(6e-3);
        let blocks = check(&case, cfg, &Wave::sine(f, 30.0), 4.0, bound);
        let expected = 1800.0 * cfg.block_cycles as f64 / f;
        for b in &blocks {
            let samples = b.samples as f64;
            assert!(
                (samples - expected).abs() <= 1.0,
                "{samples} samples, expected {expected}"
            );
        }
    }
}

/// 10-bit quantisation alone: ADC 0..=1023 with offset 512, 450 counts of voltage and 300 of
/// current peak, lag 30°, 49.93 Hz. Proves V and I within 0.02 %, P, Q and S within 0.03 %
/// (of S), PF within 2e-4, f within 0.005 Hz, phase within 0.02°, crest factor within 0.5 %.
#[test]
fn ten_bit_quantisation() {
    const BOUND: Errors = Errors {
        v: 2e-4,
        i: 2e-4,
        p: 3e-4,
        q: 3e-4,
        s: 3e-4,
        pf: 2e-4,
        f: 5e-3,
        phase: 2e-2,
        crest: 5e-3,
    };
    let (cfg, mut wave) = ten_bit(49.93);
    wave.v_noise = 0.0;
    wave.i_noise = 0.0;
    let mut dsp = BlockProcessor::new(cfg).with_adc_max(1023);
    let blocks: Vec<Block> = wave
        .samples(7200)
        .into_iter()
        .filter_map(|(v, i)| dsp.push(v, i))
        .collect();
    assert_within("10-bit", measure(&blocks, &cfg, &wave), BOUND);
}

/// A realistic slave: 10-bit as in [`ten_bit_quantisation`] plus 2 counts rms of Gaussian
/// noise on each channel (0.4 % and 0.7 % of the peaks). Rms truths include the noise.
/// Proves V, I, S within 0.3 %, P and Q within 0.3 % of S, PF within 0.002, f within 0.02 Hz,
/// phase within 0.15°, crest factor within 3 % (the noise's own peaks, about 3σ = 6 counts
/// on 300, are real peaks).
#[test]
fn ten_bit_with_noise() {
    const BOUND: Errors = Errors {
        v: 3e-3,
        i: 3e-3,
        p: 3e-3,
        q: 3e-3,
        s: 3e-3,
        pf: 2e-3,
        f: 2e-2,
        phase: 0.15,
        crest: 3e-2,
    };
    let (cfg, wave) = ten_bit(49.93);
    let mut dsp = BlockProcessor::new(cfg).with_adc_max(1023);
    let blocks: Vec<Block> = wave
        .samples(10 * 1800)
        .into_iter()
        .filter_map(|(v, i)| dsp.push(v, i))
        .collect();
    assert_within("10-bit + noise", measure(&blocks, &cfg, &wave), BOUND);
}

fn ten_bit(f: f64) -> (DspConfig, Wave) {
    let mut cfg = config(50);
    cfg.volts_per_count = 0.72;
    cfg.amps_per_count = 0.05;
    let mut wave = Wave::sine(f, 30.0);
    wave.ten_bit = true;
    wave.v_amp = 450.0;
    wave.i_amp = 300.0;
    wave.v_dc = 512.0;
    wave.i_dc = 512.0;
    wave.v_noise = 2.0;
    wave.i_noise = 2.0;
    (cfg, wave)
}

/// Heavy additive Gaussian noise, 1 % of the peak on both channels (16-bit, σ = 250 and 200
/// counts), lag 30°, 10 s. Rms truths include the noise. Proves V, I within 0.4 %, P, Q and S
/// within 0.5 % (of S), PF within 0.003, f within 0.04 Hz, phase within 0.3°, crest factor
/// within 4 %. (These are the noise's own block-to-block statistics: the plain sample rms of
/// the same blocks scatters as much.)
#[test]
fn additive_noise() {
    const BOUND: Errors = Errors {
        v: 4e-3,
        i: 4e-3,
        p: 5e-3,
        q: 5e-3,
        s: 5e-3,
        pf: 3e-3,
        f: 4e-2,
        phase: 0.3,
        crest: 4e-2,
    };
    let mut wave = Wave::sine(50.07, 30.0);
    wave.v_noise = 250.0;
    wave.i_noise = 200.0;
    check("1 % noise", config(50), &wave, 10.0, BOUND);
}

/// A grid frequency ramping at 0.5 Hz/s from 49.5 Hz (faster than any interconnected grid).
/// Proves f within 0.001 Hz of the block's mid-point frequency, phase within 0.1°, Q within
/// 0.01 % of S and the rest of [`Errors::CLEAN`].
#[test]
fn frequency_ramp() {
    let mut wave = Wave::sine(49.5, 30.0);
    wave.chirp = 0.5;
    let bound = Errors {
        q: 1e-4,
        phase: 0.1,
        ..Errors::CLEAN
    };
    check("ramp 0.5 Hz/s", config(50), &wave, 4.0, bound);
}

/// Phase correction: a current sensor that delays the current by 1.5° is undone by
/// `phase_correction_deg = 1.5`: phase, P and Q are back within [`Errors::CLEAN`] of the
/// undelayed 30° load.
#[test]
fn phase_correction() {
    let mut cfg = config(50);
    cfg.phase_correction_deg = 1.5;
    let blocks = run(cfg, &Wave::sine(50.13, 31.5), 3.0);
    assert_within(
        "phase correction",
        measure(&blocks, &cfg, &Wave::sine(50.13, 30.0)),
        Errors::CLEAN,
    );
}

/// Block alignment at 47.3 Hz (50 Hz config) and 61.7 Hz (60 Hz config): blocks are
/// contiguous (each starts one sample after the previous one ends), every block starts at
/// the first sample at or after an analytic positive-going zero crossing (within 0.01 sample
/// of interpolation tolerance) and ends just before the crossing `block_cycles` later, and the
/// first block starts within three nominal cycles of power-up.
#[test]
fn blocks_are_contiguous_and_aligned() {
    for (nominal, f) in [(50, 47.3), (60, 61.7)] {
        let cfg = config(nominal);
        let mut wave = Wave::sine(f, 0.0);
        wave.phase0_deg = 123.0;
        let count = 3 * 1800;
        let crossings = wave.crossings(count);
        let mut dsp = BlockProcessor::new(cfg);
        let blocks: Vec<Block> = wave
            .samples(count)
            .into_iter()
            .filter_map(|(v, i)| dsp.push(v, i))
            .collect();
        assert!(blocks[0].start_sample() <= 3 * cfg.nominal_cycle_samples() as u64);
        for pair in blocks.windows(2) {
            assert_eq!(pair[1].start_sample(), pair[0].end_sample + 1);
        }
        for b in &blocks {
            let k = crossings
                .iter()
                .position(|&t| {
                    b.start_sample() as f64 >= t - 0.01 && (b.start_sample() as f64) < t + 1.0
                })
                .unwrap_or_else(|| panic!("block at {} not at a crossing", b.start_sample()));
            let end = crossings[k + cfg.block_cycles as usize];
            assert!(
                b.end_sample as f64 + 1.0 >= end - 0.01 && (b.end_sample as f64) < end,
                "{b:?}"
            );
        }
        assert_eq!(dsp.samples_seen(), count as u64);
    }
}

/// Zero-crossing loss with no mains voltage from power-up (10-bit, voltage stuck at 512 with
/// 1 count of noise, current present): every block is flagged, frequency 0, the first cut
/// after 2 nominal block lengths and the rest after 1, contiguous from sample 0; the current
/// is still measured within 0.5 %.
#[test]
fn no_voltage_from_power_up() {
    let mut cfg = config(50);
    cfg.volts_per_count = 0.72;
    cfg.amps_per_count = 0.05;
    let mut wave = Wave::sine(50.0, 30.0);
    wave.ten_bit = true;
    wave.v_amp = 0.0;
    wave.v_dc = 512.0;
    wave.v_noise = 1.0;
    wave.i_amp = 300.0;
    wave.i_dc = 512.0;
    let mut dsp = BlockProcessor::new(cfg);
    let blocks: Vec<Block> = wave
        .samples(5400)
        .into_iter()
        .filter_map(|(v, i)| dsp.push(v, i))
        .collect();
    assert_eq!(blocks[0].start_sample(), 0);
    assert_eq!(blocks[0].samples, 720);
    for pair in blocks.windows(2) {
        assert_eq!(pair[1].start_sample(), pair[0].end_sample + 1);
        assert_eq!(pair[1].samples, 360);
    }
    for b in &blocks {
        assert!(b.zero_crossing_lost);
        assert_eq!(b.quantities.frequency, 0.0);
        assert!(b.quantities.voltage < 2.0);
        let i_true = 300.0 / core::f64::consts::SQRT_2 * 0.05;
        assert!((b.quantities.current as f64 / i_true - 1.0).abs() < 0.005);
    }
}

/// Mains drops out for 1.5 s and returns: blocks before are aligned, the loss is flagged
/// within 2 nominal block lengths (+ one block), blocks stay contiguous, the flagged blocks end
/// within a cycle of the return, and from the first aligned block after it the quantities are
/// back within [`Errors::CLEAN`].
#[test]
fn mains_dropout_and_return() {
    let cfg = config(50);
    let wave = Wave::sine(50.13, 30.0);
    let mut samples = wave.samples(5 * 1800);
    let (off, on) = (2 * 1800, 2 * 1800 + 2700);
    for s in &mut samples[off..on] {
        s.0 = 0;
    }
    let mut dsp = BlockProcessor::new(cfg);
    let blocks: Vec<Block> = samples
        .into_iter()
        .filter_map(|(v, i)| dsp.push(v, i))
        .collect();
    for pair in blocks.windows(2) {
        assert_eq!(pair[1].start_sample(), pair[0].end_sample + 1);
    }
    let first_lost = blocks
        .iter()
        .position(|b| b.zero_crossing_lost)
        .expect("loss flagged");
    assert!(blocks[first_lost].end_sample < (off + 720 + 360) as u64);
    assert!(blocks[..first_lost]
        .iter()
        .all(|b| b.end_sample < off as u64 + 720));
    let back = blocks
        .iter()
        .rposition(|b| b.zero_crossing_lost)
        .expect("loss flagged");
    assert!(blocks[back].end_sample < on as u64 + 36);
    assert!(blocks[first_lost..=back]
        .iter()
        .all(|b| b.zero_crossing_lost && b.quantities.frequency == 0.0));
    let after = &blocks[back + 1..];
    assert_within("after dropout", measure(after, &cfg, &wave), Errors::CLEAN);
}

/// Garbage never panics: random full-range samples, constant extremes, alternating extremes
/// and a nonsense configuration.
#[test]
fn garbage_does_not_panic() {
    let mut x = 0x1234_5678u32;
    let mut dsp = BlockProcessor::new(config(50));
    let mut blocks = 0;
    for n in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let (v, i) = match n / 5000 {
            0 => (x as i16, (x >> 16) as i16),
            1 => (i16::MIN, i16::MAX),
            2 => {
                if n % 2 == 0 {
                    (i16::MIN, i16::MIN)
                } else {
                    (i16::MAX, i16::MAX)
                }
            }
            _ => ((x as i16) / 64, i16::MAX),
        };
        if let Some(b) = dsp.push(v, i) {
            blocks += 1;
            assert!(
                b.quantities.voltage.is_finite() && b.quantities.real_power.is_finite(),
                "{n} {b:?}"
            );
        }
    }
    assert!(blocks > 10);
    let mut nonsense = DspConfig::for_frequency(0, 0.0, 0.0, f32::NAN);
    nonsense.block_cycles = 0;
    let mut dsp = BlockProcessor::new(nonsense);
    for n in 0..10_000 {
        let _ = dsp.push((n % 300) as i16, 7);
    }
}

/// Clipping is flagged: a 16-bit current touching i16::MAX, and a 10-bit voltage saturating
/// at 1023 with [`BlockProcessor::with_adc_max`]; an unclipped 10-bit signal is not flagged.
#[test]
fn clipping_is_flagged() {
    let mut wave = Wave::sine(50.0, 0.0);
    wave.i_amp = 40_000.0;
    let blocks = run(config(50), &wave, 2.0);
    assert!(blocks.iter().all(|b| b.clipped));

    let mut wave = Wave::sine(50.0, 0.0);
    wave.ten_bit = true;
    wave.v_dc = 512.0;
    wave.i_dc = 512.0;
    wave.i_amp = 300.0;
    for (amp, clipped) in [(530.0, true), (450.0, false)] {
        wave.v_amp = amp;
        let mut dsp = BlockProcessor::new(config(50)).with_adc_max(1023);
        let blocks: Vec<Block> = wave
            .samples(3600)
            .into_iter()
            .filter_map(|(v, i)| dsp.push(v, i))
            .collect();
        assert!(blocks.iter().all(|b| b.clipped == clipped));
    }
}

/// End to end: 60 s of 2 kW at 50.13 Hz (lag 30°) into an [`EnergyCounter`]. Proves the
/// counted energy is within 1 count (0.1 Wh) of the analytic energy of the samples the blocks
/// cover (P × covered time), and the exact Wh total within 0.05 %.
#[test]
fn energy_from_blocks() {
    let cfg = config(50);
    let wave = Wave::sine(50.13, 30.0);
    let blocks = run(cfg, &wave, 60.0);
    let mut energy = EnergyCounter::new();
    let mut covered = 0u64;
    for b in &blocks {
        energy.add_block(b.quantities.real_power, b.samples, cfg.sample_rate);
        covered += b.samples as u64;
    }
    let t = wave.truth();
    let p = t.p * V_PER_COUNT as f64 * A_PER_COUNT as f64;
    let analytic_wh = p * covered as f64 / 1800.0 / 3600.0;
    let counts = (energy.import_counts() as f64 - analytic_wh / 0.1).abs();
    let rel = (energy.import_wh() / analytic_wh - 1.0).abs();
    std::eprintln!("energy: {counts:.3} counts off, {rel:.2e} relative of {analytic_wh:.3} Wh");
    assert!(counts <= 1.0);
    assert!(rel <= 5e-4);
    assert_eq!(energy.export_counts(), 0);
}
