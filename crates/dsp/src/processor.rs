//! The block processor: V/I sample pairs in, zero-crossing-aligned blocks out.

use core::f32::consts::{SQRT_2, TAU};

use libm::{atan2f, ceilf, cosf, fabsf, roundf, sinf, sqrtf};
use pmon_meter::Quantities;

use crate::config::DspConfig;

/// Default floor of the zero-crossing detector's hysteresis, in volts: the voltage must
/// swing at least this far below its mean before a positive-going crossing counts.
/// A channel whose voltage stays within it (no mains, sensor unplugged) loses its crossings.
pub const DEFAULT_HYSTERESIS_VOLTS: f32 = 5.0;

/// The hysteresis is never below this many ADC counts.
const MIN_HYSTERESIS_COUNTS: f32 = 2.0;

/// The hysteresis is at least this fraction of the previous block's voltage peak.
const HYSTERESIS_FRACTION: f32 = 0.125;

/// If the first cycle of a block is off the assumed frequency by more than this fraction,
/// the fundamental's DFT restarts at that cycle's end with the first cycle's frequency.
const DFT_RESTART_TOLERANCE: f32 = 0.01;

/// One zero-crossing-aligned block of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    /// The block's quantities in SI units (frequency 0 when [`Block::zero_crossing_lost`]).
    pub quantities: Quantities,
    /// Sample pairs in this block.
    pub samples: u32,
    /// Index of the block's last sample pair, counting from 0 at [`BlockProcessor::new`].
    pub end_sample: u64,
    /// No voltage zero crossing was found for about two block lengths: the block was cut by
    /// time, its frequency is 0 and its reactive power and phase are not cycle-aligned.
    pub zero_crossing_lost: bool,
    /// A sample of either channel reached the ADC's limits (`i16::MIN`/`i16::MAX`, or
    /// `0`/`adc_max` after [`BlockProcessor::with_adc_max`]).
    pub clipped: bool,
}

impl Block {
    /// Index of the block's first sample pair.
    pub fn start_sample(&self) -> u64 {
        (self.end_sample + 1).saturating_sub(self.samples as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the first sample has been seen.
    Init,
    /// Measuring the offset over the first nominal cycle; no crossing detection yet.
    Startup,
    /// Waiting for the first positive-going crossing, which starts the first block.
    Seeking,
    /// In a block that started at a crossing.
    Aligned,
    /// No crossings: blocks are cut every nominal block length.
    Lost,
}

/// A positive-going voltage zero crossing between two consecutive samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crossing {
    /// Where between the samples the crossing lies: 0 at the earlier, 1 at the later.
    frac: f32,
    /// Voltage at the earlier and the later sample.
    v: [i16; 2],
    /// Current at the earlier and the later sample.
    i: [i16; 2],
}

impl Crossing {
    /// The crossing of `offset` between samples `v[0] < offset <= v[1]`, if they straddle it.
    fn between(offset: f32, v: [i16; 2], i: [i16; 2]) -> Option<Crossing> {
        let (p, c) = (v[0] as f32, v[1] as f32);
        if !(p < offset && offset <= c) {
            return None;
        }
        Some(Crossing {
            frac: (offset - p) / (c - p),
            v,
            i,
        })
    }

    /// The same pair of samples measured against a new offset, kept between them.
    fn reanchored(self, offset: f32) -> Crossing {
        let (p, c) = (self.v[0] as f32, self.v[1] as f32);
        Crossing {
            frac: ((offset - p) / (c - p)).clamp(0.0, 1.0),
            ..self
        }
    }

    /// The sliver between the crossing and the half-way point between the samples (where a
    /// sample sum's implicit integration interval ends) has its midpoint at `u` samples after
    /// the earlier sample. Returns `u` and the linearly interpolated voltage and current there.
    fn midpoint(&self) -> (f32, f32, f32) {
        let u = 0.5 * (self.frac + 0.5);
        let lerp = |x: [i16; 2]| x[0] as f32 + u * (x[1] as f32 - x[0] as f32);
        (u, lerp(self.v), lerp(self.i))
    }
}

/// Exact integer sums over a block.
#[derive(Debug, Clone, Copy)]
struct Sums {
    n: u32,
    v: i64,
    i: i64,
    vv: i64,
    ii: i64,
    vi: i64,
    v_min: i16,
    v_max: i16,
    i_min: i16,
    i_max: i16,
}

impl Sums {
    const EMPTY: Sums = Sums {
        n: 0,
        v: 0,
        i: 0,
        vv: 0,
        ii: 0,
        vi: 0,
        v_min: i16::MAX,
        v_max: i16::MIN,
        i_min: i16::MAX,
        i_max: i16::MIN,
    };
}

/// Block sums re-centred on integer offsets `rv`, `ri` (the rounded block means), computed
/// exactly in integers and only then converted to `f32`, so nothing cancels catastrophically.
struct Centred {
    rv: i64,
    ri: i64,
    v: f32,
    i: f32,
    vv: f32,
    ii: f32,
    vi: f32,
}

impl Centred {
    fn of(s: &Sums) -> Centred {
        let n = s.n.max(1) as i128;
        let (sv, si) = (s.v as i128, s.i as i128);
        let round_div = |a: i128| (2 * a + n).div_euclid(2 * n);
        let (rv, ri) = (round_div(sv), round_div(si));
        Centred {
            rv: rv as i64,
            ri: ri as i64,
            v: (sv - n * rv) as f32,
            i: (si - n * ri) as f32,
            vv: (s.vv as i128 - 2 * rv * sv + n * rv * rv) as f32,
            ii: (s.ii as i128 - 2 * ri * si + n * ri * ri) as f32,
            vi: (s.vi as i128 - ri * sv - rv * si + n * rv * ri) as f32,
        }
    }
}

/// A Goertzel resonator per channel: the single-bin DFT of the fundamental.
#[derive(Debug, Clone, Copy)]
struct Goertzel {
    omega: f32,
    coeff: f32,
    cos: f32,
    sin: f32,
    v1: f32,
    v2: f32,
    i1: f32,
    i2: f32,
    /// Integer offsets subtracted from the samples before the DFT.
    off_v: i32,
    off_i: i32,
    /// Block-local index of the first sample in the DFT.
    start: u32,
    /// The crossing at which the DFT window begins, if it begins at one.
    crossing: Option<Crossing>,
}

impl Goertzel {
    fn new(omega: f32) -> Goertzel {
        let mut g = Goertzel {
            omega: 0.0,
            coeff: 0.0,
            cos: 0.0,
            sin: 0.0,
            v1: 0.0,
            v2: 0.0,
            i1: 0.0,
            i2: 0.0,
            off_v: 0,
            off_i: 0,
            start: 0,
            crossing: None,
        };
        g.restart(omega, 0, None);
        g
    }

    fn restart(&mut self, omega: f32, start: u32, crossing: Option<Crossing>) {
        if omega != self.omega {
            self.omega = omega;
            self.cos = cosf(omega);
            self.sin = sinf(omega);
            self.coeff = 2.0 * self.cos;
        }
        self.v1 = 0.0;
        self.v2 = 0.0;
        self.i1 = 0.0;
        self.i2 = 0.0;
        self.start = start;
        self.crossing = crossing;
    }

    /// `Σ x[k]·e^{jω(last−k)}` over the window, as (re, im), for the state `(s1, s2)`.
    fn output(&self, s1: f32, s2: f32) -> (f32, f32) {
        (s1 - self.cos * s2, self.sin * s2)
    }
}

/// Turns a stream of raw V/I sample pairs into zero-crossing-aligned blocks.
///
/// # Blocks
/// A block starts at a positive-going voltage zero crossing and ends at the
/// `block_cycles`-th crossing after it, so it holds whole mains cycles at whatever the actual
/// frequency is. The sample pair just after a crossing is the first of the new block;
/// [`push`](Self::push) returns the finished block when that pair arrives. Consecutive blocks
/// cover every sample exactly once (`start_sample() == previous.end_sample + 1`).
///
/// Crossings are found against the previous block's mean voltage (the DC offset) with
/// hysteresis: the voltage must first fall below the mean by
/// max([`DEFAULT_HYSTERESIS_VOLTS`], 1/8 of the previous peak, 2 counts), and crossings less
/// than half a nominal cycle apart are ignored. The crossing instant is interpolated
/// linearly between the two samples around it.
///
/// # Startup
/// The first two nominal cycles of samples only estimate the offset (mid-range of the
/// extremes). The first block starts at the first crossing after that, so the samples before
/// it (two to three cycles, ~50 ms) belong to no block; `end_sample` still counts them.
///
/// # Lost zero crossings
/// If a block reaches twice the nominal block length without completing (no mains voltage,
/// or a frequency below half the nominal), it is cut there and flagged
/// [`Block::zero_crossing_lost`] with frequency 0. Further blocks are then cut every nominal
/// block length, also flagged, until a crossing appears: that crossing ends the flagged block
/// and starts an aligned one. No input makes it panic.
///
/// # Quantities
/// The means, rms values and real power come from exact integer sums (Σv, Σi, Σv², Σi², Σvi,
/// re-centred on the block's own mean in 128-bit integers) plus a small correction for the
/// fractions of a sample between each end's crossing and its nearest sample, so the
/// integrals cover exactly the interpolated crossing-to-crossing interval (without it, a
/// block whose cycles are not a whole number of samples would err by up to 1/N).
/// The DC offset is removed per block: var = mean(x²) − mean(x)².
///
/// The fundamental (reactive power Q1 = V1·I1·sin θ1, phase angle θ1) comes from a Goertzel
/// single-bin DFT at the previous block's measured frequency, over the same
/// crossing-to-crossing interval, with a sinc correction for the small difference to this
/// block's measured frequency. When no previous frequency is known (first block, after lost
/// crossings) or the block's first cycle is more than 1 % off it, the DFT restarts at the end
/// of the first cycle using that cycle's frequency and spans the remaining cycles.
/// `phase_correction_deg` rotates the current's fundamental; the real power is corrected by
/// the change this makes to the fundamental's real power (harmonic power is not rotated).
///
/// S = Vrms·Irms; PF = P/S clamped to ±1 and 0 when S is 0; crest factor = peak |i − mean| /
/// Irms over the block's samples, 0 when Irms is 0. With no current (or no voltage) the
/// phase angle is that of noise. A negative `amps_per_count` (reversed sensor) flips P, Q,
/// PF and moves the phase by 180°.
///
/// Per sample the work is five integer multiply-adds, four min/max, two comparisons and two
/// Goertzel steps (two `f32` multiplies); everything else happens once per block.
#[derive(Debug, Clone)]
pub struct BlockProcessor {
    config: DspConfig,
    cycle_len: u32,
    block_len: u32,
    timeout_len: u32,
    min_gap: u32,
    hysteresis_floor: f32,
    clip_lo: i16,
    clip_hi: i16,
    correction_cos: f32,
    correction_sin: f32,
    nominal_omega: f32,
    /// Index of the next sample pair.
    index: u64,
    mode: Mode,
    /// The block is cut by time when it holds this many samples.
    cut_len: u32,
    sums: Sums,
    armed: bool,
    /// A crossing happens at the first sample `>= zc_thr` after being armed.
    zc_thr: i32,
    /// A sample `< zc_arm` arms the detector.
    zc_arm: i32,
    prev_v: i16,
    prev_i: i16,
    /// Index of the sample just after the last accepted crossing.
    last_crossing: u64,
    /// The crossing the current block began at.
    start: Option<Crossing>,
    /// Crossings since the block's start.
    cycles: u32,
    dft: Goertzel,
    /// DFT frequency for the next block, rad/sample.
    omega: f32,
    /// The DFT frequency is a guess: restart at the first crossing with a measured one.
    dft_pending: bool,
    /// Mean voltage and current of the previous block, counts.
    offset_v: f32,
    offset_i: f32,
}

impl BlockProcessor {
    /// A processor at sample index 0. Nonsense configurations (zero or NaN rates) do not
    /// panic; they produce nonsense or lost-crossing blocks.
    pub fn new(config: DspConfig) -> Self {
        let cycle_len = config.nominal_cycle_samples();
        let block_len = config.nominal_block_samples();
        let mut nominal_omega = TAU * config.nominal_frequency / config.sample_rate;
        if !(nominal_omega > 0.0 && nominal_omega < core::f32::consts::PI) {
            nominal_omega = TAU / cycle_len as f32;
        }
        let correction = config.phase_correction_deg.to_radians();
        let (correction_cos, correction_sin) = if correction == 0.0 || correction.is_nan() {
            (1.0, 0.0)
        } else {
            (cosf(correction), sinf(correction))
        };
        let mut p = BlockProcessor {
            config,
            cycle_len,
            block_len,
            timeout_len: block_len.saturating_mul(2),
            min_gap: (cycle_len / 2).max(1),
            hysteresis_floor: 0.0,
            clip_lo: i16::MIN,
            clip_hi: i16::MAX,
            correction_cos,
            correction_sin,
            nominal_omega,
            index: 0,
            mode: Mode::Init,
            cut_len: 1,
            sums: Sums::EMPTY,
            armed: false,
            zc_thr: i32::MAX,
            zc_arm: i32::MIN,
            prev_v: 0,
            prev_i: 0,
            last_crossing: 0,
            start: None,
            cycles: 0,
            dft: Goertzel::new(nominal_omega),
            omega: nominal_omega,
            dft_pending: true,
            offset_v: 0.0,
            offset_i: 0.0,
        };
        p.set_hysteresis_volts(DEFAULT_HYSTERESIS_VOLTS);
        p
    }

    /// Sets the floor of the zero-crossing hysteresis in volts (default
    /// [`DEFAULT_HYSTERESIS_VOLTS`]); it is never below 2 ADC counts.
    pub fn with_hysteresis_volts(mut self, volts: f32) -> Self {
        self.set_hysteresis_volts(volts);
        self
    }

    /// Treats the ADC as unsigned `0..=adc_max` (1023 for 10 bits) for [`Block::clipped`].
    pub fn with_adc_max(mut self, adc_max: i16) -> Self {
        self.clip_lo = 0;
        self.clip_hi = adc_max;
        self
    }

    fn set_hysteresis_volts(&mut self, volts: f32) {
        self.hysteresis_floor =
            MIN_HYSTERESIS_COUNTS.max(volts / fabsf(self.config.volts_per_count));
    }

    /// The configuration in force.
    pub fn config(&self) -> &DspConfig {
        &self.config
    }

    /// Sample pairs pushed so far.
    pub fn samples_seen(&self) -> u64 {
        self.index
    }

    /// Processes one sample pair (raw ADC counts, any DC offset). Returns the block that this
    /// pair completes, if any: the block ends at a crossing just before this pair, or (when
    /// crossings are lost) with this pair.
    #[inline]
    pub fn push(&mut self, v: i16, i: i16) -> Option<Block> {
        let vx = v as i32;
        let ix = i as i32;
        let mut out = None;
        if self.armed && vx >= self.zc_thr {
            out = self.crossing(v, i);
        }
        self.armed |= vx < self.zc_arm;

        let s = &mut self.sums;
        s.n += 1;
        s.v += vx as i64;
        s.i += ix as i64;
        s.vv += (vx * vx) as i64;
        s.ii += (ix * ix) as i64;
        s.vi += (vx * ix) as i64;
        s.v_min = s.v_min.min(v);
        s.v_max = s.v_max.max(v);
        s.i_min = s.i_min.min(i);
        s.i_max = s.i_max.max(i);

        let g = &mut self.dft;
        let xv = (vx - g.off_v) as f32;
        let xi = (ix - g.off_i) as f32;
        // (x − s2) + c·s1: only the multiply-add depends on the previous step.
        let yv = g.coeff * g.v1 + (xv - g.v2);
        let yi = g.coeff * g.i1 + (xi - g.i2);
        g.v2 = g.v1;
        g.v1 = yv;
        g.i2 = g.i1;
        g.i1 = yi;

        self.prev_v = v;
        self.prev_i = i;
        self.index += 1;
        if self.sums.n >= self.cut_len {
            out = self.time_cut();
        }
        out
    }

    /// A positive-going crossing between the previous sample and `(v, i)`, which is not yet
    /// accumulated.
    #[cold]
    #[inline(never)]
    fn crossing(&mut self, v: i16, i: i16) -> Option<Block> {
        self.armed = false;
        if self.index - self.last_crossing < self.min_gap as u64 {
            return None;
        }
        // The thresholds move at block ends, so an armed detector can meet a sample pair that
        // is entirely above the new offset: that crossing happened earlier and is skipped.
        let crossing = Crossing::between(self.offset_v, [self.prev_v, v], [self.prev_i, i])?;
        self.last_crossing = self.index;
        match self.mode {
            Mode::Init | Mode::Startup => None,
            Mode::Seeking => {
                self.begin_aligned(crossing);
                None
            }
            Mode::Lost => {
                let block = self.finish(None, true);
                self.begin_aligned(crossing.reanchored(self.offset_v));
                Some(block)
            }
            Mode::Aligned => {
                self.cycles += 1;
                if self.cycles >= self.config.block_cycles {
                    let block = self.finish(Some(crossing), false);
                    // The next block measures both its ends against the offset just computed.
                    self.begin_aligned(crossing.reanchored(self.offset_v));
                    return Some(block);
                }
                if self.cycles == 1 {
                    self.check_first_cycle(crossing);
                }
                None
            }
        }
    }

    /// At the end of a block's first cycle: restart the DFT if its frequency was a guess or
    /// is more than [`DFT_RESTART_TOLERANCE`] off.
    fn check_first_cycle(&mut self, crossing: Crossing) {
        let Some(start) = self.start else { return };
        let period = self.sums.n as f32 + crossing.frac - start.frac;
        let omega = TAU / period;
        let off = fabsf(omega - self.dft.omega) > DFT_RESTART_TOLERANCE * self.dft.omega;
        if (self.dft_pending || off) && omega > 0.0 && omega < core::f32::consts::PI {
            self.dft.restart(omega, self.sums.n, Some(crossing));
            self.dft_pending = false;
        }
    }

    /// The block reached `cut_len` samples.
    #[cold]
    #[inline(never)]
    fn time_cut(&mut self) -> Option<Block> {
        match self.mode {
            Mode::Init => {
                self.offset_v = self.prev_v as f32;
                self.offset_i = self.prev_i as f32;
                self.restart_dft(self.sums.n, None);
                self.mode = Mode::Startup;
                self.cut_len = self.cycle_len.saturating_mul(2);
                None
            }
            Mode::Startup => {
                // Mid-range over two nominal cycles: a whole cycle down to half the nominal
                // frequency, so the peaks are in, whatever the actual frequency.
                let s = &self.sums;
                self.offset_v = 0.5 * (s.v_min as f32 + s.v_max as f32);
                self.offset_i = 0.5 * (s.i_min as f32 + s.i_max as f32);
                self.set_detector((s.v_max as f32 - s.v_min as f32) / (2.0 * SQRT_2));
                self.mode = Mode::Seeking;
                self.cut_len = self.timeout_len.max(self.cut_len + 1);
                None
            }
            Mode::Seeking | Mode::Aligned | Mode::Lost => {
                let block = self.finish(None, true);
                self.begin_lost();
                Some(block)
            }
        }
    }

    fn restart_dft(&mut self, start: u32, crossing: Option<Crossing>) {
        self.dft.off_v = roundf(self.offset_v) as i32;
        self.dft.off_i = roundf(self.offset_i) as i32;
        self.dft.restart(self.omega, start, crossing);
    }

    fn begin_aligned(&mut self, crossing: Crossing) {
        self.sums = Sums::EMPTY;
        self.start = Some(crossing);
        self.cycles = 0;
        self.mode = Mode::Aligned;
        self.cut_len = self.timeout_len;
        self.restart_dft(0, Some(crossing));
    }

    fn begin_lost(&mut self) {
        self.sums = Sums::EMPTY;
        self.start = None;
        self.cycles = 0;
        self.mode = Mode::Lost;
        self.cut_len = self.block_len;
        self.omega = self.nominal_omega;
        self.dft_pending = true;
        self.restart_dft(0, None);
    }

    /// Crossing thresholds from the offset estimate and the voltage rms (counts).
    fn set_detector(&mut self, v_rms: f32) {
        let h = self
            .hysteresis_floor
            .max(HYSTERESIS_FRACTION * SQRT_2 * v_rms);
        self.zc_thr = ceilf(self.offset_v) as i32;
        self.zc_arm = ceilf(self.offset_v - h) as i32;
    }

    /// Computes the finished block's quantities and sets the detector and DFT up for the next
    /// block. `end` is the crossing that ends an aligned block; `lost` marks a block cut by time
    /// or ended by the first crossing after a loss.
    fn finish(&mut self, end: Option<Crossing>, lost: bool) -> Block {
        let s = self.sums;
        let n = s.n.max(1);
        let c = Centred::of(&s);
        let aligned = match (lost, self.start, end) {
            (false, Some(start), Some(end)) => Some((start, end)),
            _ => None,
        };

        // Integrals over exactly the crossing-to-crossing interval: the sample sums integrate
        // over [first − ½, last + ½]; add the slivers out to each crossing.
        let (mut a_v, mut a_i, mut a_vv, mut a_ii, mut a_vi) = (c.v, c.i, c.vv, c.ii, c.vi);
        let mut duration = n as f32;
        if let Some((start, end)) = aligned {
            for (x, w) in [(start, 0.5 - start.frac), (end, end.frac - 0.5)] {
                let (_, v, i) = x.midpoint();
                let (dv, di) = (v - c.rv as f32, i - c.ri as f32);
                a_v += w * dv;
                a_i += w * di;
                a_vv += w * dv * dv;
                a_ii += w * di * di;
                a_vi += w * dv * di;
                duration += w;
            }
        }
        if duration.is_nan() || duration <= 0.0 {
            duration = n as f32;
        }
        let mean_v = a_v / duration;
        let mean_i = a_i / duration;
        let var_v = (a_vv / duration - mean_v * mean_v).max(0.0);
        let var_i = (a_ii / duration - mean_i * mean_i).max(0.0);
        let cov = a_vi / duration - mean_v * mean_i;
        let (v_rms, i_rms) = (sqrtf(var_v), sqrtf(var_i));
        self.offset_v = c.rv as f32 + mean_v;
        self.offset_i = c.ri as f32 + mean_i;
        let peak = (s.i_max as f32 - self.offset_i).max(self.offset_i - s.i_min as f32);

        let frequency = match aligned {
            Some(_) => self.config.block_cycles as f32 * self.config.sample_rate / duration,
            None => 0.0,
        };

        // The fundamental: Goertzel output plus the same end slivers, with the kernel
        // e^{jω(last − t)} of the Goertzel's reference (the block's last sample).
        let g = self.dft;
        let (mut xv_re, mut xv_im) = g.output(g.v1, g.v2);
        let (mut xi_re, mut xi_im) = g.output(g.i1, g.i2);
        let mut window = n.saturating_sub(g.start) as f32;
        if let Some((_, end)) = aligned {
            // Distance back from the last sample to each sliver's midpoint, in samples.
            let (u_end, _, _) = end.midpoint();
            let first = g.crossing.map(|first| {
                let (u, _, _) = first.midpoint();
                (
                    first,
                    0.5 - first.frac,
                    n.saturating_sub(g.start) as f32 - u,
                )
            });
            for (x, w, back) in [Some((end, end.frac - 0.5, -u_end)), first]
                .into_iter()
                .flatten()
            {
                let (_, v, i) = x.midpoint();
                let (dv, di) = (v - g.off_v as f32, i - g.off_i as f32);
                let angle = g.omega * back;
                let (k_re, k_im) = (cosf(angle), sinf(angle));
                xv_re += w * dv * k_re;
                xv_im += w * dv * k_im;
                xi_re += w * di * k_re;
                xi_im += w * di * k_im;
                window += w;
            }
        }
        // V·conj(I): its argument is the current's lag; the common phase reference cancels.
        let mut cross_re = xv_re * xi_re + xv_im * xi_im;
        let mut cross_im = xv_im * xi_re - xv_re * xi_im;
        if aligned.is_some() {
            let omega_actual = TAU * self.config.block_cycles as f32 / duration;
            let x = 0.5 * (omega_actual - g.omega) * window;
            if fabsf(x) > 1e-4 {
                let sinc = sinf(x) / x;
                if sinc > 0.5 {
                    let k = 1.0 / (sinc * sinc);
                    cross_re *= k;
                    cross_im *= k;
                }
            }
        }
        let scale = if window > 0.0 {
            2.0 / (window * window)
        } else {
            0.0
        };
        let (cc, cs) = (self.correction_cos, self.correction_sin);
        let corrected_re = cross_re * cc + cross_im * cs;
        let corrected_im = cross_im * cc - cross_re * cs;

        let vpc = self.config.volts_per_count;
        let apc = self.config.amps_per_count;
        let watts_per_count2 = vpc * apc;
        let sign = if watts_per_count2 < 0.0 { -1.0 } else { 1.0 };
        let voltage = v_rms * fabsf(vpc);
        let current = i_rms * fabsf(apc);
        let real_power = (cov + scale * (corrected_re - cross_re)) * watts_per_count2;
        let apparent_power = voltage * current;
        let power_factor = if apparent_power > 0.0 {
            (real_power / apparent_power).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let quantities = Quantities {
            voltage,
            current,
            frequency,
            real_power,
            reactive_power: scale * corrected_im * watts_per_count2,
            apparent_power,
            power_factor,
            crest_factor: if i_rms > 0.0 { peak / i_rms } else { 0.0 },
            phase_angle: atan2f(sign * corrected_im, sign * corrected_re).to_degrees(),
        };

        // Set up the next block.
        self.set_detector(v_rms);
        let nominal = self.config.nominal_frequency;
        if aligned.is_some() && frequency > 0.5 * nominal && frequency < 2.0 * nominal {
            self.omega = TAU * frequency / self.config.sample_rate;
            self.dft_pending = false;
        } else {
            self.omega = self.nominal_omega;
            self.dft_pending = true;
        }

        Block {
            quantities,
            samples: s.n,
            end_sample: self.index.saturating_sub(1),
            zero_crossing_lost: aligned.is_none(),
            clipped: s.v_min <= self.clip_lo
                || s.v_max >= self.clip_hi
                || s.i_min <= self.clip_lo
                || s.i_max >= self.clip_hi,
        }
    }
}
