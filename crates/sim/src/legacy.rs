//! A simulated prototype slave (`kind = "legacy"`): the original ASCII protocol of
//! `docs/protocol/legacy.md`, measured with the same waveforms and DSP as a pmon slave.
//!
//! The board answers a write of `00 01 90` by latching the average of the blocks measured
//! since the previous one as `[f×100,sps,Vrms×100,Irms_mA,CCF×100,theta×100,VA,W,VAR,PF×100]`.
//! Every read (whatever its command byte and length) returns the next half of that text,
//! 29 and then 25 bytes, padded with `FF`: the half it sends alternates per read and is not
//! reset by `00 01 90`, so one read too many or too few swaps the halves for good, as the
//! prototype's did. `swap_rate` injects such a slip per reading.

use std::time::Duration;

use embedded_hal::i2c::Operation;
use pmon_dsp::{BlockProcessor, DspConfig, EnergyCounter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::bus::{lock, BusState};
use crate::config::SlaveConfig;
use crate::control::SimControl;
use crate::error::SimError;
use crate::slave::Energy;
use crate::waveform::{self, counts_scale, Waveform, SAMPLE_RATE};

/// The write that makes a legacy slave latch a new reading.
pub const LEGACY_START: [u8; 3] = [0x00, 0x01, 0x90];
/// Bytes in the first half of a reply.
pub const LEGACY_FIRST_HALF: usize = 29;

/// Sums over the blocks since the last reading, weighted by each block's samples.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    samples: f64,
    voltage: f64,
    current: f64,
    frequency: f64,
    frequency_samples: f64,
    real_power: f64,
    reactive_power: f64,
    apparent_power: f64,
    crest_factor: f64,
    phase_angle: f64,
}

/// A simulated prototype board.
#[derive(Debug)]
pub struct LegacySlave {
    config: SlaveConfig,
    waveform: Waveform,
    dsp: BlockProcessor,
    energy: EnergyCounter,
    samples: u64,
    first_sample_ns: u64,
    plugged: bool,
    sums: Sums,
    text: Vec<u8>,
    next_half: usize,
    rng: SmallRng,
    readings: u64,
    swaps: u64,
}

impl LegacySlave {
    /// A board freshly powered on; `seed` picks its start phases and slips.
    pub fn new(config: SlaveConfig, seed: u64) -> LegacySlave {
        let (volts_per_count, amps_per_count) = counts_scale(&config);
        let dsp_config = DspConfig::for_frequency(
            config.nominal_frequency(),
            SAMPLE_RATE as f32,
            volts_per_count,
            amps_per_count,
        );
        let adc_max = ((1u32 << waveform::adc_bits(&config)) - 1) as i16;
        let period_ns = 1_000_000_000 / u64::from(SAMPLE_RATE);
        LegacySlave {
            waveform: Waveform::new(&config, seed),
            dsp: BlockProcessor::new(dsp_config).with_adc_max(adc_max),
            energy: EnergyCounter::new(),
            samples: 0,
            first_sample_ns: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % period_ns,
            plugged: true,
            sums: Sums::default(),
            text: Vec::new(),
            next_half: 0,
            rng: SmallRng::seed_from_u64(seed ^ 0x4C45_4741_4359),
            readings: 0,
            swaps: 0,
            config,
        }
    }

    /// The 7-bit address.
    pub fn address(&self) -> u8 {
        self.config.address
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SlaveConfig {
        &self.config
    }

    /// Whether it is connected.
    pub fn plugged(&self) -> bool {
        self.plugged
    }

    /// Takes every sample due by `now`.
    pub fn catch_up(&mut self, now: Duration) {
        let Some(since_first) = now.as_nanos().checked_sub(u128::from(self.first_sample_ns)) else {
            return;
        };
        let due = (since_first * u128::from(SAMPLE_RATE) / 1_000_000_000) as u64 + 1;
        while self.samples < due {
            let (v, i) = self.waveform.next_pair();
            self.samples += 1;
            if let Some(block) = self.dsp.push(v, i) {
                self.file_block(&block);
            }
        }
    }

    fn file_block(&mut self, block: &pmon_dsp::Block) {
        let q = &block.quantities;
        self.energy
            .add_block(q.real_power, block.samples, SAMPLE_RATE as f32);
        let w = f64::from(block.samples);
        let s = &mut self.sums;
        s.samples += w;
        s.voltage += w * f64::from(q.voltage);
        s.current += w * f64::from(q.current);
        if !block.zero_crossing_lost {
            s.frequency += w * f64::from(q.frequency);
            s.frequency_samples += w;
        }
        s.real_power += w * f64::from(q.real_power);
        s.reactive_power += w * f64::from(q.reactive_power);
        s.apparent_power += w * f64::from(q.apparent_power);
        s.crest_factor += w * f64::from(q.crest_factor);
        s.phase_angle += w * f64::from(q.phase_angle);
    }

    /// Latches the average since the last reading as the reply text. Without a block since
    /// then the previous text stays.
    fn latch(&mut self) {
        let s = std::mem::take(&mut self.sums);
        if s.samples <= 0.0 {
            return;
        }
        let mean = |sum: f64| sum / s.samples;
        let frequency = if s.frequency_samples > 0.0 {
            s.frequency / s.frequency_samples
        } else {
            0.0
        };
        let apparent = mean(s.apparent_power);
        let real = mean(s.real_power);
        let power_factor = if apparent > 0.0 { real / apparent } else { 0.0 };
        let r = |value: f64| value.round() as i64;
        self.text = format!(
            "[{},{},{},{},{},{},{},{},{},{}]",
            r(frequency * 100.0),
            SAMPLE_RATE,
            r(mean(s.voltage) * 100.0),
            r(mean(s.current) * 1000.0),
            r(mean(s.crest_factor) * 100.0),
            r(mean(s.phase_angle) * 100.0),
            r(apparent),
            r(real),
            r(mean(s.reactive_power)),
            r(power_factor * 100.0),
        )
        .into_bytes();
    }

    /// The master wrote `bytes`: `00 01 90` takes a reading; anything else only sets the
    /// command pointer, which the prototype ignored.
    pub fn write(&mut self, bytes: &[u8]) {
        if bytes == LEGACY_START {
            self.latch();
            self.readings += 1;
            if self.config.swap_rate > 0.0 && self.rng.random::<f64>() < self.config.swap_rate {
                self.next_half ^= 1;
                self.swaps += 1;
            }
        }
    }

    /// The master reads `out.len()` bytes: the next half, then `FF`.
    pub fn read(&mut self, out: &mut [u8]) {
        if self.text.is_empty() {
            // Never asked yet: a board that has measured shows its first reading.
            self.latch();
        }
        let cut = self.text.len().min(LEGACY_FIRST_HALF);
        let half = if self.next_half == 0 {
            &self.text[..cut]
        } else {
            &self.text[cut..]
        };
        out.fill(0xFF);
        let n = half.len().min(out.len());
        out[..n].copy_from_slice(&half[..n]);
        self.next_half ^= 1;
    }

    /// One transaction's operations, in order.
    pub(crate) fn transact(&mut self, operations: &mut [Operation<'_>]) {
        for operation in operations.iter_mut() {
            match operation {
                Operation::Write(bytes) => self.write(bytes),
                Operation::Read(buffer) => self.read(buffer),
            }
        }
    }

    /// Energy counted since power-on (the truth the master's integration is checked against).
    pub fn energy(&self) -> Energy {
        Energy {
            import_wh: self.energy.import_wh(),
            export_wh: self.energy.export_wh(),
        }
    }

    /// Readings taken (writes of `00 01 90`).
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// Slips injected by `swap_rate`.
    pub fn swaps(&self) -> u64 {
        self.swaps
    }

    /// The text of the latest reading.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

impl BusState {
    /// The legacy slave at `address`, caught up to now.
    pub(crate) fn legacy_mut(&mut self, address: u8) -> Option<&mut LegacySlave> {
        let now = self.clock.now();
        let slave = self
            .legacy
            .iter_mut()
            .find(|slave| slave.address() == address)?;
        slave.catch_up(now);
        Some(slave)
    }
}

/// What a legacy slave has done, for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyTruth {
    /// Energy since power-on.
    pub energy: Energy,
    /// Readings taken.
    pub readings: u64,
    /// Half-order slips injected.
    pub swaps: u64,
    /// The latest reading's text.
    pub text: String,
}

impl SimControl {
    fn with_legacy<T>(
        &self,
        bus: u8,
        address: u8,
        f: impl FnOnce(&mut LegacySlave) -> T,
    ) -> Result<T, SimError> {
        let state = self.bus(bus)?;
        let mut state = lock(state);
        let slave = state
            .legacy_mut(address)
            .ok_or(SimError::NoSuchSlave { bus, address })?;
        Ok(f(slave))
    }

    /// A legacy slave's truth.
    pub fn legacy_truth(&self, bus: u8, address: u8) -> Result<LegacyTruth, SimError> {
        self.with_legacy(bus, address, |slave| LegacyTruth {
            energy: slave.energy(),
            readings: slave.readings(),
            swaps: slave.swaps(),
            text: slave.text(),
        })
    }

    /// Scales a legacy slave's load; 1.0 is the configured current.
    pub fn set_legacy_load(&self, bus: u8, address: u8, relative: f32) -> Result<(), SimError> {
        self.with_legacy(bus, address, |slave| slave.waveform.set_load(relative))
    }

    /// Disconnects or reconnects a legacy slave.
    pub fn plug_legacy(&self, bus: u8, address: u8, plugged: bool) -> Result<(), SimError> {
        self.with_legacy(bus, address, |slave| slave.plugged = plugged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slave() -> LegacySlave {
        let mut config = SlaveConfig::new(0x20, 230.0, 50.0, 10.0);
        config.kind = crate::config::SlaveKind::Legacy;
        config.export = true;
        config.phase = 20.0;
        LegacySlave::new(config, 3)
    }

    #[test]
    fn readings_are_ascii_halves_padded_with_ff() {
        let mut s = slave();
        s.catch_up(Duration::from_secs(2));
        s.write(&LEGACY_START);
        let mut first = [0u8; 29];
        let mut second = [0u8; 25];
        s.read(&mut first);
        s.read(&mut second);
        let text = s.text();
        assert!(text.starts_with("[50"), "{text}");
        assert!(text.contains(",-"), "exported power is negative: {text}");
        let joined: Vec<u8> = first
            .iter()
            .chain(second.iter())
            .copied()
            .filter(|&b| b != 0xFF)
            .collect();
        assert_eq!(String::from_utf8(joined).unwrap(), text);
        assert!(s.energy().export_wh > 0.0);
    }

    #[test]
    fn a_slip_swaps_the_halves() {
        let mut s = slave();
        s.config.swap_rate = 1.0;
        s.catch_up(Duration::from_secs(2));
        s.write(&LEGACY_START);
        let mut first = [0u8; 29];
        s.read(&mut first);
        assert!(
            first.contains(&b']'),
            "{:?}",
            String::from_utf8_lossy(&first)
        );
        assert_eq!(s.swaps(), 1);
    }
}
