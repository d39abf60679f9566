//! What a simulated bus needs to stand behind a serial bridge (`pmon sim bridge`): its
//! clock can be set and a stuck bus can be recovered, as a bridge's `SET_CLOCK` and
//! `RESET` requests ask.

use crate::bus::lock;
use crate::config::BusId;
use crate::control::SimControl;
use crate::error::SimError;

/// SCL frequencies a simulated bus accepts, Hz; others are rounded down to one of them.
pub const CLOCK_STEPS: [u32; 4] = [10_000, 100_000, 400_000, 1_000_000];

impl SimControl {
    /// Sets a bus's SCL frequency (the wire-time model follows it) and returns the one in
    /// force: the highest of [`CLOCK_STEPS`] not above `hz` (at least the lowest).
    pub fn set_clock_hz(&self, bus: BusId, hz: u32) -> Result<u32, SimError> {
        let actual = CLOCK_STEPS
            .iter()
            .rev()
            .copied()
            .find(|&step| step <= hz)
            .unwrap_or(CLOCK_STEPS[0]);
        let mut state = lock(self.bus(bus)?);
        state.settings.clock_hz = actual;
        Ok(actual)
    }

    /// Bus recovery (nine clocks and a STOP): frees a bus stuck by [`SimControl::stick_bus`]
    /// at once, as it frees a slave caught mid-byte. Returns true (the bus is free).
    pub fn recover_bus(&self, bus: BusId) -> Result<bool, SimError> {
        let mut state = lock(self.bus(bus)?);
        state.stuck_until = None;
        Ok(true)
    }
}
