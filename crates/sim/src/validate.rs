//! Range and consistency checks of a [`SimConfig`], with messages that say what is allowed.

use std::collections::HashSet;

use crate::config::{BusConfig, SimConfig, SlaveConfig, FIFO_CAPACITIES};
use crate::error::ConfigError;

/// Highest rms voltage the simulated front end measures without clipping.
pub const MAX_VOLTAGE: f32 = 300.0;

fn invalid(what: String, reason: String) -> ConfigError {
    ConfigError::Invalid {
        origin: "simulator config".into(),
        what,
        reason,
    }
}

pub(crate) fn validate(config: &SimConfig) -> Result<(), ConfigError> {
    let mut bus_ids = HashSet::new();
    for bus in &config.buses {
        if !bus_ids.insert(bus.id) {
            return Err(invalid(format!("bus {}", bus.id), "appears twice".into()));
        }
        check_bus(bus)?;
    }
    let mut seen = HashSet::new();
    for slave in &config.slaves {
        if !seen.insert((slave.bus, slave.address)) {
            return Err(invalid(
                slave.describe(),
                format!(
                    "address {:#04x} is used twice on bus {}",
                    slave.address, slave.bus
                ),
            ));
        }
        check_slave(slave).map_err(|reason| invalid(slave.describe(), reason))?;
    }
    Ok(())
}

fn check_rate(value: f64, key: &str) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{key} = {value} must lie in 0..=1"))
    }
}

fn check_bus(bus: &BusConfig) -> Result<(), ConfigError> {
    let what = || format!("bus {}", bus.id);
    check_rate(bus.corrupt_rate, "corrupt_rate").map_err(|reason| invalid(what(), reason))?;
    check_rate(bus.nack_rate, "nack_rate").map_err(|reason| invalid(what(), reason))?;
    if bus.clock_hz > 5_000_000 {
        return Err(invalid(
            what(),
            format!(
                "clock_hz = {} is beyond any I2C mode (100000, 400000, 1000000; 0 for an infinitely fast wire)",
                bus.clock_hz
            ),
        ));
    }
    Ok(())
}

fn check_slave(slave: &SlaveConfig) -> Result<(), String> {
    if !(0x08..=0x77).contains(&slave.address) {
        return Err(format!(
            "address {:#04x} is outside the usable 7-bit range 0x08..=0x77",
            slave.address
        ));
    }
    if !(slave.voltage > 0.0 && slave.voltage <= MAX_VOLTAGE) {
        return Err(format!(
            "voltage = {} V must be above 0 and at most {MAX_VOLTAGE} V rms",
            slave.voltage
        ));
    }
    if !(40.0..=70.0).contains(&slave.frequency) {
        return Err(format!(
            "frequency = {} Hz must lie in 40..=70 Hz",
            slave.frequency
        ));
    }
    if !(slave.current >= 0.0 && slave.current.is_finite()) {
        return Err(format!("current = {} A must be 0 or more", slave.current));
    }
    if !(-180.0..=180.0).contains(&slave.phase) {
        return Err(format!("phase = {}° must lie in -180..=180", slave.phase));
    }
    for &(order, amplitude) in &slave.harmonics {
        if !(2..=50).contains(&order) {
            return Err(format!("harmonic order {order} must lie in 2..=50"));
        }
        if !(0.0..=10.0).contains(&amplitude) {
            return Err(format!(
                "harmonic {order} amplitude {amplitude} must lie in 0..=10 (relative to the fundamental)"
            ));
        }
    }
    if !(0.0..=1.0).contains(&slave.noise) {
        return Err(format!("noise = {} must lie in 0..=1", slave.noise));
    }
    if !(slave.current_range > 0.0 && slave.current_range <= 10_000.0) {
        return Err(format!(
            "current_range = {} A must lie in (0, 10000]",
            slave.current_range
        ));
    }
    if !(8..=15).contains(&slave.adc_bits) {
        return Err(format!("adc_bits = {} must lie in 8..=15", slave.adc_bits));
    }
    if !FIFO_CAPACITIES.contains(&slave.fifo) {
        return Err(format!(
            "fifo = {} must be one of {FIFO_CAPACITIES:?}",
            slave.fifo
        ));
    }
    if !(0.0..=1.0).contains(&slave.swap_rate) {
        return Err(format!("swap_rate = {} must lie in 0..=1", slave.swap_rate));
    }
    for &(seconds, relative) in &slave.schedule {
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err(format!(
                "schedule step of {seconds} s: durations must be above 0"
            ));
        }
        if !(0.0..=10.0).contains(&relative) {
            return Err(format!(
                "schedule step relative current {relative} must lie in 0..=10"
            ));
        }
    }
    Ok(())
}
