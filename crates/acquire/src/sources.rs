//! Opening the buses the configuration names and starting one poller thread on each.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use embedded_hal::i2c::I2c;
use pmon_bus::{Master, RetryPolicy};
use pmon_sim::{ClockMode, Simulator};

use crate::config::{AcquireConfig, Source};
use crate::poller::{Poller, Shared};
use crate::stop::StopSignal;
use crate::AcquireError;

/// A bus ready to be polled.
enum OpenBus {
    #[cfg(target_os = "linux")]
    Linux(String, linux_embedded_hal::I2cdev),
    Simulated(String, pmon_sim::SimBus),
}

/// The buses of a configuration, and the names the source itself gives circuits.
pub struct Buses {
    buses: Vec<OpenBus>,
    /// Circuit names by serial number (from the simulator's file).
    pub names: BTreeMap<u32, String>,
}

/// Opens every configured bus, or builds the simulator.
pub fn open(config: &AcquireConfig) -> Result<Buses, AcquireError> {
    match &config.source {
        Source::Simulator(sim) => {
            let names = sim
                .slaves
                .iter()
                .filter_map(|slave| slave.name.clone().map(|name| (slave.serial_number(), name)))
                .collect();
            let (buses, _control) = Simulator::new(sim, ClockMode::RealTime)?.into_parts();
            let buses = buses
                .into_iter()
                .map(|(id, bus)| OpenBus::Simulated(format!("sim-{id}"), bus))
                .collect();
            Ok(Buses { buses, names })
        }
        Source::Hardware => open_hardware(config),
    }
}

#[cfg(target_os = "linux")]
fn open_hardware(config: &AcquireConfig) -> Result<Buses, AcquireError> {
    let mut buses = Vec::new();
    for bus in &config.settings.bus {
        let device = pmon_bus::linux::open(&bus.path.to_string_lossy()).map_err(|source| {
            AcquireError::Bus {
                bus: bus.id.clone(),
                source,
            }
        })?;
        buses.push(OpenBus::Linux(bus.id.clone(), device));
    }
    if buses.is_empty() {
        return Err(AcquireError::Config(
            "no [[acquisition.bus]] is configured; add one or run the simulator (--sim N)".into(),
        ));
    }
    Ok(Buses {
        buses,
        names: BTreeMap::new(),
    })
}

#[cfg(not(target_os = "linux"))]
fn open_hardware(_config: &AcquireConfig) -> Result<Buses, AcquireError> {
    Err(AcquireError::Config(
        "I2C buses are only supported on Linux; run the simulator (--sim N) instead".into(),
    ))
}

impl Buses {
    /// Starts one poller thread per bus.
    pub fn spawn(
        self,
        shared: &Shared,
        stop: &StopSignal,
    ) -> Result<Vec<JoinHandle<()>>, AcquireError> {
        let policy = RetryPolicy {
            attempts: shared.settings.retries,
            ..RetryPolicy::default()
        };
        let mut threads = Vec::new();
        for bus in self.buses {
            let thread = match bus {
                #[cfg(target_os = "linux")]
                OpenBus::Linux(id, device) => start(id, Master::new(device, policy), shared, stop),
                OpenBus::Simulated(id, bus) => start(id, Master::new(bus, policy), shared, stop),
            };
            threads.push(thread?);
        }
        Ok(threads)
    }
}

fn start<I2C: I2c + Send + 'static>(
    id: String,
    master: Master<I2C>,
    shared: &Shared,
    stop: &StopSignal,
) -> Result<JoinHandle<()>, AcquireError> {
    let poller = Poller::new(id.clone(), master, shared.clone());
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("poll-{id}"))
        .spawn(move || poller.run(&stop))
        .map_err(AcquireError::Thread)
}
