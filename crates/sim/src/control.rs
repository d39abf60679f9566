//! Run-time access to a running simulation: inject faults, read each slave's truth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_meter::{Quantities, Status};

use crate::bus::{lock, BusState, BusStats};
use crate::clock::{ClockMode, SimClock};
use crate::config::{BusId, SlaveConfig};
use crate::error::SimError;
use crate::slave::{Energy, SimSlave};

/// Names one simulated slave: a bare address means bus 0, a tuple names the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlaveRef {
    /// Bus number.
    pub bus: BusId,
    /// 7-bit address.
    pub address: u8,
}

impl From<u8> for SlaveRef {
    fn from(address: u8) -> SlaveRef {
        SlaveRef { bus: 0, address }
    }
}

impl From<(BusId, u8)> for SlaveRef {
    fn from((bus, address): (BusId, u8)) -> SlaveRef {
        SlaveRef { bus, address }
    }
}

/// A cloneable handle on every bus of a simulation. Cheap to clone and `Send`: tests and
/// the acquisition use it from any thread while pollers drive the buses.
#[derive(Debug, Clone)]
pub struct SimControl {
    buses: Arc<Vec<(BusId, Arc<Mutex<BusState>>)>>,
    mode: ClockMode,
}

impl SimControl {
    pub(crate) fn new(buses: Vec<(BusId, Arc<Mutex<BusState>>)>, mode: ClockMode) -> SimControl {
        SimControl {
            buses: Arc::new(buses),
            mode,
        }
    }

    pub(crate) fn bus(&self, bus: BusId) -> Result<&Mutex<BusState>, SimError> {
        self.buses
            .iter()
            .find(|(id, _)| *id == bus)
            .map(|(_, state)| state.as_ref())
            .ok_or(SimError::NoSuchBus { bus })
    }

    fn with_slave<T>(
        &self,
        slave: impl Into<SlaveRef>,
        f: impl FnOnce(&mut SimSlave) -> T,
    ) -> Result<T, SimError> {
        let SlaveRef { bus, address } = slave.into();
        let mut state = lock(self.bus(bus)?);
        let slave = state
            .slave_mut(address)
            .ok_or(SimError::NoSuchSlave { bus, address })?;
        Ok(f(slave))
    }

    fn with_bus<T>(&self, bus: BusId, f: impl FnOnce(&mut BusState) -> T) -> Result<T, SimError> {
        Ok(f(&mut lock(self.bus(bus)?)))
    }

    /// The clock mode of every bus.
    pub fn mode(&self) -> ClockMode {
        self.mode
    }

    /// Bus numbers, ascending.
    pub fn bus_ids(&self) -> Vec<BusId> {
        self.buses.iter().map(|(id, _)| *id).collect()
    }

    /// Every slave, by bus and address.
    pub fn slaves(&self) -> Vec<SlaveRef> {
        let mut all = Vec::new();
        for (bus, state) in self.buses.iter() {
            let mut state = lock(state);
            all.extend(state.slaves_mut().map(|slave| SlaveRef {
                bus: *bus,
                address: slave.address(),
            }));
        }
        all.sort_unstable();
        all
    }

    /// A bus's clock.
    pub fn clock(&self, bus: BusId) -> Result<SimClock, SimError> {
        self.with_bus(bus, |state| state.clock.clone())
    }

    /// A bus's simulated time.
    pub fn now(&self, bus: BusId) -> Result<Duration, SimError> {
        self.with_bus(bus, |state| state.clock.now())
    }

    /// Lets `duration` pass on every bus: fast mode jumps each bus's clock ahead, real-time
    /// mode sleeps once.
    pub fn advance(&self, duration: Duration) {
        match self.mode {
            ClockMode::RealTime => std::thread::sleep(duration),
            ClockMode::Fast => {
                for (_, state) in self.buses.iter() {
                    lock(state).clock.advance(duration);
                }
            }
        }
    }

    /// Sets the probability per byte read of one flipped bit.
    pub fn set_corrupt_rate(&self, bus: BusId, rate: f64) -> Result<(), SimError> {
        check_rate("corrupt_rate", rate)?;
        self.with_bus(bus, |state| state.settings.corrupt_rate = rate)
    }

    /// Sets the probability per transaction of a NACK.
    pub fn set_nack_rate(&self, bus: BusId, rate: f64) -> Result<(), SimError> {
        check_rate("nack_rate", rate)?;
        self.with_bus(bus, |state| state.settings.nack_rate = rate)
    }

    /// Makes every transaction on the bus fail with `ErrorKind::Bus` for `duration` of
    /// simulated time from now (SDA held low by a crashed slave, say).
    pub fn stick_bus(&self, bus: BusId, duration: Duration) -> Result<(), SimError> {
        self.with_bus(bus, |state| {
            state.stuck_until = Some(state.clock.now() + duration);
        })
    }

    /// Whether the bus is stuck now.
    pub fn is_stuck(&self, bus: BusId) -> Result<bool, SimError> {
        self.with_bus(bus, |state| {
            state
                .stuck_until
                .is_some_and(|until| state.clock.now() < until)
        })
    }

    /// Disconnects a slave: it stops acknowledging but keeps measuring, so its FIFO fills
    /// and then overflows (visible in its status).
    pub fn unplug(&self, slave: impl Into<SlaveRef>) -> Result<(), SimError> {
        self.with_slave(slave, |s| s.set_plugged(false))
    }

    /// Reconnects a slave.
    pub fn replug(&self, slave: impl Into<SlaveRef>) -> Result<(), SimError> {
        self.with_slave(slave, |s| s.set_plugged(true))
    }

    /// Restarts a slave now (a brown-out or watchdog reset).
    pub fn reboot(&self, slave: impl Into<SlaveRef>) -> Result<(), SimError> {
        self.with_slave(slave, SimSlave::reboot)
    }

    /// Scales a slave's load from now on; 1.0 is the configured current.
    pub fn set_load(&self, slave: impl Into<SlaveRef>, relative: f32) -> Result<(), SimError> {
        self.with_slave(slave, |s| s.set_load(relative))
    }

    /// Records the slave has produced since its last reset (its next sequence number).
    pub fn produced(&self, slave: impl Into<SlaveRef>) -> Result<u32, SimError> {
        self.with_slave(slave, |s| s.produced())
    }

    /// Energy the slave has counted since its last reset.
    pub fn energy_wh(&self, slave: impl Into<SlaveRef>) -> Result<Energy, SimError> {
        self.with_slave(slave, |s| s.energy())
    }

    /// The slave's status register as it stands.
    pub fn status(&self, slave: impl Into<SlaveRef>) -> Result<Status, SimError> {
        self.with_slave(slave, |s| s.status())
    }

    /// How often the slave restarted.
    pub fn reboots(&self, slave: impl Into<SlaveRef>) -> Result<u32, SimError> {
        self.with_slave(slave, |s| s.reboots())
    }

    /// The slave's configuration.
    pub fn config(&self, slave: impl Into<SlaveRef>) -> Result<SlaveConfig, SimError> {
        self.with_slave(slave, |s| s.config().clone())
    }

    /// What a perfect meter reports for the slave at full load.
    pub fn expected(&self, slave: impl Into<SlaveRef>) -> Result<Quantities, SimError> {
        self.with_slave(slave, |s| s.expected())
    }

    /// What the bus did and injected so far.
    pub fn bus_stats(&self, bus: BusId) -> Result<BusStats, SimError> {
        self.with_bus(bus, |state| state.stats)
    }
}

fn check_rate(what: &'static str, value: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SimError::Rate { what, value })
    }
}
