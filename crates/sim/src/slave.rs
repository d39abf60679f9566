//! One simulated slave board: the meter's register file, the DSP and energy counters, fed
//! lazily with synthesised samples up to the bus clock's present whenever it is touched.

use std::time::Duration;

use pmon_dsp::{BlockProcessor, DspConfig, EnergyCounter};
use pmon_meter::register::{capability, flag, Config, Identity, Status};
use pmon_meter::slave::WriteEvent;
use pmon_meter::{Quantities, Scales, PROTOCOL_VERSION, RECORD_LEN};

use crate::config::SlaveConfig;
use crate::registers::AnyRegisters;
use crate::validate::MAX_VOLTAGE;
use crate::waveform::{self, counts_scale, Waveform, SAMPLE_RATE};

/// Firmware version the simulated slaves report.
pub const SIM_FIRMWARE: [u8; 3] = [0, 1, 0];

/// Energy measured since the slave's last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Energy {
    /// Imported energy, Wh.
    pub import_wh: f64,
    /// Exported energy, Wh.
    pub export_wh: f64,
}

/// A simulated slave.
#[derive(Debug)]
pub struct SimSlave {
    config: SlaveConfig,
    registers: Box<AnyRegisters>,
    /// What survives a reboot (`SaveConfig`).
    saved_config: Config,
    dsp: BlockProcessor,
    energy: EnergyCounter,
    waveform: Waveform,
    /// Sample pairs taken since the simulation started; the ADC runs on through reboots.
    samples: u64,
    /// `samples` at the last reset, for uptime.
    reset_at: u64,
    /// Simulated time of the first sample in ns: a random point in the first sample period,
    /// so that slaves do not sample in lockstep.
    first_sample_ns: u64,
    plugged: bool,
    reboots: u32,
}

impl SimSlave {
    /// A slave freshly powered on (RESET flag set). `seed` picks its start phases.
    pub fn new(config: SlaveConfig, seed: u64) -> SimSlave {
        let saved_config = Config::for_frequency(config.nominal_frequency());
        let waveform = Waveform::new(&config, seed);
        let period_ns = 1_000_000_000 / u64::from(SAMPLE_RATE);
        let first_sample_ns = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % period_ns;
        let registers = Box::new(new_registers(&config, saved_config));
        SimSlave {
            dsp: new_dsp(&config, &saved_config),
            energy: EnergyCounter::new(),
            registers,
            saved_config,
            waveform,
            samples: 0,
            reset_at: 0,
            first_sample_ns,
            plugged: true,
            reboots: 0,
            config,
        }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SlaveConfig {
        &self.config
    }

    /// The 7-bit address it answers on (the configured one until the master moves it).
    pub fn address(&self) -> u8 {
        self.config.address
    }

    /// Takes every sample due by `now` and files the blocks they complete.
    pub fn catch_up(&mut self, now: Duration) {
        let Some(since_first) = now.as_nanos().checked_sub(u128::from(self.first_sample_ns)) else {
            return;
        };
        let due = (since_first * u128::from(SAMPLE_RATE) / 1_000_000_000) as u64 + 1;
        if due <= self.samples {
            return;
        }
        while self.samples < due {
            let (v, i) = self.waveform.next_pair();
            self.samples += 1;
            if let Some(block) = self.dsp.push(v, i) {
                self.file_block(&block);
            }
        }
        let uptime = (self.samples - self.reset_at) / u64::from(SAMPLE_RATE);
        self.registers
            .set_uptime(u32::try_from(uptime).unwrap_or(u32::MAX));
    }

    fn file_block(&mut self, block: &pmon_dsp::Block) {
        self.energy.add_block(
            block.quantities.real_power,
            block.samples,
            SAMPLE_RATE as f32,
        );
        let registers = &mut self.registers;
        registers.set_flag(flag::NO_ZERO_CROSSING, block.zero_crossing_lost);
        registers.set_flag(flag::ADC_CLIPPING, block.clipped);
        if block.zero_crossing_lost {
            // As the firmware does: a block without mains timing is not a measurement.
            registers.count_block_error();
            return;
        }
        registers.push_block(
            block.end_sample as u32,
            &block.quantities,
            self.energy.import_counts(),
            self.energy.export_counts(),
        );
    }

    /// The master wrote `bytes`. A write the slave rejects (bad CRC, unknown register) was
    /// still acknowledged on the bus; the slave only counts it.
    pub fn write(&mut self, bytes: &[u8]) {
        match self.registers.on_write(bytes) {
            Ok(WriteEvent::Configured(config)) => {
                self.dsp = new_dsp(&self.config, &config);
            }
            Ok(WriteEvent::SaveConfig) => self.saved_config = self.registers.config(),
            Ok(WriteEvent::Reboot) => self.reboot(),
            Ok(WriteEvent::Readdressed { to, .. }) => self.readdress(to),
            Ok(WriteEvent::None) | Err(_) => {}
        }
    }

    /// Takes a new address, as firmware stores it in EEPROM: it survives reboots. The serial
    /// number is pinned first, so a serial derived from the old address does not change.
    fn readdress(&mut self, to: u8) {
        self.config.serial = Some(self.config.serial_number());
        self.config.address = to;
    }

    /// The master clocks out `out.len()` bytes.
    pub fn read(&self, out: &mut [u8]) {
        self.registers.on_read(out);
    }

    /// Restarts: sequence numbers, counters and energy start again, RESET is set, the
    /// saved configuration applies. The ADC and the mains go on.
    pub fn reboot(&mut self) {
        *self.registers = new_registers(&self.config, self.saved_config);
        self.dsp = new_dsp(&self.config, &self.saved_config);
        self.energy = EnergyCounter::new();
        self.reset_at = self.samples;
        self.reboots += 1;
    }

    /// Whether it is connected to the bus (an unplugged slave measures on).
    pub fn plugged(&self) -> bool {
        self.plugged
    }

    /// Connects or disconnects it.
    pub fn set_plugged(&mut self, plugged: bool) {
        self.plugged = plugged;
    }

    /// Scales the load; 1.0 is the configured current.
    pub fn set_load(&mut self, relative: f32) {
        self.waveform.set_load(relative);
    }

    /// Records produced since the last reset: the next block's sequence number.
    pub fn produced(&self) -> u32 {
        self.registers.status().next_seq
    }

    /// Who it says it is.
    pub fn identity(&self) -> Identity {
        self.registers.identity()
    }

    /// Flags and counters, as the master would read them.
    pub fn status(&self) -> Status {
        self.registers.status()
    }

    /// Energy since the last reset, as the slave counts it.
    pub fn energy(&self) -> Energy {
        Energy {
            import_wh: self.energy.import_wh(),
            export_wh: self.energy.export_wh(),
        }
    }

    /// Restarts so far (commanded or injected).
    pub fn reboots(&self) -> u32 {
        self.reboots
    }

    /// Sample pairs taken since the simulation started.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// What a perfect meter would report at full load.
    pub fn expected(&self) -> Quantities {
        waveform::expected(&self.config)
    }
}

fn identity(config: &SlaveConfig) -> Identity {
    Identity {
        protocol_version: PROTOCOL_VERSION,
        firmware: SIM_FIRMWARE,
        serial: config.serial_number(),
        capabilities: capability::ENERGY
            | capability::PHASE_ANGLE
            | capability::CALIBRATION
            | capability::PERSISTENT_CONFIG
            | capability::ADDRESSABLE,
        sample_rate: SAMPLE_RATE as u16,
        scales: Scales::for_range(config.current_range, MAX_VOLTAGE),
        record_len: RECORD_LEN as u8,
        // Set by the register file from its real capacity.
        fifo_capacity: 0,
    }
}

fn new_registers(config: &SlaveConfig, meter_config: Config) -> AnyRegisters {
    AnyRegisters::new(config.fifo, config.address, identity(config), meter_config)
}

/// A fresh DSP for this front end and meter configuration.
fn new_dsp(config: &SlaveConfig, meter: &Config) -> BlockProcessor {
    let adc_max = ((1u32 << waveform::adc_bits(config)) - 1) as i16;
    BlockProcessor::new(dsp_config(config, meter)).with_adc_max(adc_max)
}

/// The DSP settings a slave derives from its front end and its meter configuration.
fn dsp_config(config: &SlaveConfig, meter: &Config) -> DspConfig {
    let (volts_per_count, amps_per_count) = counts_scale(config);
    let mut dsp = DspConfig::for_frequency(
        meter.nominal_frequency,
        SAMPLE_RATE as f32,
        volts_per_count * meter.voltage_gain_ppm as f32 * 1e-6,
        amps_per_count * meter.current_gain_ppm as f32 * 1e-6,
    );
    dsp.block_cycles = u32::from(meter.block_cycles);
    dsp.phase_correction_deg = f32::from(meter.phase_correction) * 0.01;
    dsp
}
