//! Throughput of `BlockProcessor::push`: sample pairs per second on one core.
//!
//! `cargo bench -p pmon-dsp` feeds 20 M pre-synthesised 10-bit sample pairs (50.02 Hz mains,
//! lagging current with a 3rd harmonic, a little noise) through a fresh processor 7 times
//! and prints the median, min and max rate, then one machine-readable line:
//! `dsp_samples_per_second_median=… dsp_samples_per_second_min=… dsp_samples_per_second_max=…`.
//! Set `PMON_DSP_BENCH_SAMPLES` to change the 20 M.

use std::hint::black_box;
use std::time::Instant;

use pmon_dsp::{BlockProcessor, DspConfig, EnergyCounter};

const SAMPLE_RATE: f64 = 1800.0;
const REPEATS: usize = 7;

fn synthesize(count: usize) -> Vec<(i16, i16)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        // xorshift64*, uniform in [-0.5, 0.5)
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let w = std::f64::consts::TAU * 50.02 / SAMPLE_RATE;
    let lag = 30f64.to_radians();
    (0..count)
        .map(|n| {
            let x = w * n as f64;
            let v = 512.0 + 450.0 * x.sin() + 2.0 * noise();
            let i =
                512.0 + 300.0 * (x - lag).sin() + 60.0 * (3.0 * (x - lag)).sin() + 2.0 * noise();
            (
                v.round().clamp(0.0, 1023.0) as i16,
                i.round().clamp(0.0, 1023.0) as i16,
            )
        })
        .collect()
}

fn run(config: DspConfig, samples: &[(i16, i16)]) -> (usize, EnergyCounter) {
    let mut dsp = BlockProcessor::new(config);
    let mut energy = EnergyCounter::new();
    let mut blocks = 0;
    for &(v, i) in samples {
        if let Some(block) = dsp.push(v, i) {
            blocks += 1;
            energy.add_block(
                block.quantities.real_power,
                block.samples,
                config.sample_rate,
            );
        }
    }
    (blocks, energy)
}

fn main() {
    let count: usize = std::env::var("PMON_DSP_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let samples = synthesize(count);
    let config = DspConfig::for_frequency(50, SAMPLE_RATE as f32, 0.72, 0.05);

    let mut rates = Vec::with_capacity(REPEATS);
    for repeat in 0..REPEATS {
        let t = Instant::now();
        let (blocks, energy) = run(config, black_box(&samples));
        let seconds = t.elapsed().as_secs_f64();
        black_box((blocks, energy.import_wh()));
        let rate = count as f64 / seconds;
        println!(
            "run {repeat}: {count} pairs in {seconds:.3} s = {:.1} M pairs/s ({blocks} blocks)",
            rate / 1e6
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let (min, median, max) = (rates[0], rates[REPEATS / 2], rates[REPEATS - 1]);
    println!(
        "median {:.1} M pairs/s per core (min {:.1}, max {:.1}); target 50 M; 100 slaves need 0.18 M",
        median / 1e6,
        min / 1e6,
        max / 1e6
    );
    println!(
        "dsp_samples_per_second_median={median:.0} dsp_samples_per_second_min={min:.0} \
         dsp_samples_per_second_max={max:.0} samples={count} repeats={REPEATS}"
    );
}
