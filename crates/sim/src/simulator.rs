//! Building every simulated bus and slave from a [`SimConfig`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::bus::{BusState, SimBus};
use crate::clock::{ClockMode, SimClock};
use crate::config::{BusId, SimConfig, SlaveKind};
use crate::control::SimControl;
use crate::error::ConfigError;
use crate::legacy::LegacySlave;
use crate::slave::SimSlave;

/// A whole simulation: one [`SimBus`] per bus, for one poller thread each, and the
/// [`SimControl`] that reaches all of them.
#[derive(Debug)]
pub struct Simulator {
    /// The buses, ascending by id.
    pub buses: Vec<(BusId, SimBus)>,
    /// Fault injection and truth.
    pub control: SimControl,
}

/// A seed for one part of the simulation, different for every (bus, address, purpose).
fn derive_seed(seed: u64, bus: BusId, address: u8, purpose: u64) -> u64 {
    // SplitMix64's finaliser spreads nearby inputs over the whole range.
    let mut z = seed
        ^ (u64::from(bus) << 40 | u64::from(address) << 32 | purpose)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Simulator {
    /// Validates `config` and builds its buses. Each bus has its own clock: in fast mode
    /// each bus's time advances with its own transactions (buses work in parallel, as real
    /// segments do); in real-time mode all clocks share one epoch.
    pub fn new(config: &SimConfig, mode: ClockMode) -> Result<Simulator, ConfigError> {
        config.validate()?;
        let epoch = Instant::now();
        let mut buses = Vec::new();
        let mut states = Vec::new();
        for id in config.bus_ids() {
            let clock = match mode {
                ClockMode::RealTime => SimClock::real_time(epoch),
                ClockMode::Fast => SimClock::fast(),
            };
            let slaves = config
                .slaves
                .iter()
                .filter(|slave| slave.bus == id && slave.kind == SlaveKind::Pmon)
                .map(|slave| {
                    SimSlave::new(
                        slave.clone(),
                        derive_seed(config.seed, id, slave.address, 1),
                    )
                })
                .collect();
            let rng = SmallRng::seed_from_u64(derive_seed(config.seed, id, 0, 2));
            let mut state = BusState::new(clock.clone(), config.bus(id), slaves, rng);
            state.legacy = config
                .slaves
                .iter()
                .filter(|slave| slave.bus == id && slave.kind == SlaveKind::Legacy)
                .map(|slave| {
                    LegacySlave::new(
                        slave.clone(),
                        derive_seed(config.seed, id, slave.address, 1),
                    )
                })
                .collect();
            let state = Arc::new(Mutex::new(state));
            buses.push((id, SimBus::new(id, clock, Arc::clone(&state))));
            states.push((id, state));
        }
        Ok(Simulator {
            buses,
            control: SimControl::new(states, mode),
        })
    }

    /// The buses and the control handle, apart.
    pub fn into_parts(self) -> (Vec<(BusId, SimBus)>, SimControl) {
        (self.buses, self.control)
    }
}
