//! Opening the buses the configuration names and starting one poller thread on each.
//!
//! Every bus gets its own thread and its own `Master`: a stuck, slow or unplugged bus
//! delays only its own circuits. Each bus has its retry and recovery policy
//! ([`crate::config::BusPolicy`]) and a recovery step that fits its transport: a serial
//! bridge is sent `RESET`; a Linux adapter is reopened (the kernel's controller driver
//! does the nine-clock recovery itself where it supports it); a simulated bus has none.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use embedded_hal::i2c::I2c;
use pmon_bus::Master;
use pmon_sim::{ClockMode, SimConfig, Simulator, SlaveKind};
use tracing::info;

use crate::config::{AcquireConfig, BusConfig, LegacyConfig, Source};
use crate::poller::{Poller, Shared};
use crate::stop::StopSignal;
use crate::AcquireError;

/// A bus ready to be polled.
enum OpenBus {
    #[cfg(target_os = "linux")]
    Linux(BusConfig, linux_embedded_hal::I2cdev),
    #[cfg(unix)]
    Serial(
        BusConfig,
        pmon_bus::bridge::SerialBridge<pmon_bus::bridge::tty::TtyPort>,
    ),
    Simulated(String, pmon_sim::SimBus, Vec<LegacyConfig>),
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
            let simulator = Simulator::new(sim, ClockMode::RealTime)?;
            Ok(simulated(sim, simulator))
        }
        Source::Prebuilt(prebuilt) => {
            let simulator = prebuilt.take().ok_or_else(|| {
                AcquireError::Config("the prebuilt simulation was already taken".into())
            })?;
            if simulator.control.mode() != ClockMode::RealTime {
                return Err(AcquireError::Config(
                    "a prebuilt simulation for the acquisition must run in real time".into(),
                ));
            }
            Ok(simulated(&prebuilt.config, simulator))
        }
        Source::Hardware => open_hardware(config),
    }
}

/// The buses of a simulation, named `sim-N`, with its legacy boards configured.
fn simulated(sim: &SimConfig, simulator: Simulator) -> Buses {
    let names = sim
        .slaves
        .iter()
        .filter_map(|slave| slave.name.clone().map(|name| (slave.serial_number(), name)))
        .collect();
    let (buses, _control) = simulator.into_parts();
    let buses = buses
        .into_iter()
        .map(|(id, bus)| {
            let legacy = sim
                .slaves
                .iter()
                .filter(|slave| slave.bus == id && slave.kind == SlaveKind::Legacy)
                .map(|slave| LegacyConfig {
                    bus: format!("sim-{id}"),
                    address: slave.address,
                    serial: Some(slave.serial_number()),
                    name: slave.name.clone(),
                })
                .collect();
            OpenBus::Simulated(format!("sim-{id}"), bus, legacy)
        })
        .collect();
    Buses { buses, names }
}

#[cfg(unix)]
fn open_hardware(config: &AcquireConfig) -> Result<Buses, AcquireError> {
    use crate::config::{BusKind, DEFAULT_BAUD};
    use pmon_bus::bridge::SerialBridge;

    let mut buses = Vec::new();
    for bus in &config.settings.bus {
        let fail = |source| AcquireError::Bus {
            bus: bus.id.clone(),
            source,
        };
        let path = bus.path.to_string_lossy().into_owned();
        match bus.kind {
            BusKind::Linux => {
                #[cfg(target_os = "linux")]
                {
                    let device = pmon_bus::linux::open(&path).map_err(fail)?;
                    if let Some(hz) = bus.clock_hz {
                        info!(bus = %bus.id, clock_hz = hz, "the bus clock of a Linux adapter is set by the device tree (Raspberry Pi: dtparam=i2c_arm_baudrate in config.txt), not by pmon");
                    }
                    buses.push(OpenBus::Linux(bus.clone(), device));
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = fail;
                    return Err(AcquireError::Config(format!(
                        "bus {}: Linux I2C adapters exist only on Linux; use kind = \"serial\" with a bridge",
                        bus.id
                    )));
                }
            }
            BusKind::Serial => {
                let options = bridge_options(bus);
                let baud = bus.baud.unwrap_or(DEFAULT_BAUD);
                let mut bridge = SerialBridge::open(&path, baud, options).map_err(|error| {
                    fail(pmon_bus::DriverError::Open {
                        path: path.clone(),
                        reason: error.to_string(),
                    })
                })?;
                if let Some(hz) = bus.clock_hz {
                    match bridge.set_clock(hz) {
                        Ok(actual) => {
                            info!(bus = %bus.id, clock_hz = actual, "bridge bus clock set")
                        }
                        Err(error) => {
                            tracing::warn!(bus = %bus.id, %error, "the bridge did not take the bus clock")
                        }
                    }
                }
                info!(bus = %bus.id, path = %path, baud, info = ?bridge.info(), "serial bridge ready");
                buses.push(OpenBus::Serial(bus.clone(), bridge));
            }
        }
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

/// The serial options of a bridge bus.
#[cfg(unix)]
fn bridge_options(bus: &BusConfig) -> pmon_bus::bridge::BridgeOptions {
    pmon_bus::bridge::BridgeOptions {
        timeout: std::time::Duration::from_millis(
            bus.timeout_ms
                .unwrap_or(crate::config::DEFAULT_BRIDGE_TIMEOUT_MS),
        ),
        ..pmon_bus::bridge::BridgeOptions::default()
    }
}

#[cfg(not(unix))]
fn open_hardware(_config: &AcquireConfig) -> Result<Buses, AcquireError> {
    Err(AcquireError::Config(
        "I2C buses and serial bridges are only supported on Linux and Unix; run the simulator (--sim N) instead"
            .into(),
    ))
}

impl Buses {
    /// Starts one poller thread per bus.
    pub fn spawn(
        self,
        shared: &Shared,
        stop: &StopSignal,
    ) -> Result<Vec<JoinHandle<()>>, AcquireError> {
        let settings = &shared.settings;
        let mut threads = Vec::new();
        for bus in self.buses {
            let thread = match bus {
                #[cfg(target_os = "linux")]
                OpenBus::Linux(config, device) => {
                    let policy = settings.policy(Some(&config));
                    let path = config.path.to_string_lossy().into_owned();
                    let poller = Poller::new(
                        config.id.clone(),
                        Master::new(device, policy.retry),
                        shared.clone(),
                    )
                    .with_policy(policy)
                    .with_recovery(move |device| {
                        // A fresh file descriptor; the kernel driver resets the controller
                        // and, where it can, clocks the bus free on its own timeouts.
                        *device = pmon_bus::linux::open(&path).map_err(|e| e.to_string())?;
                        Ok(())
                    });
                    start(config.id, poller, stop)
                }
                #[cfg(unix)]
                OpenBus::Serial(config, bridge) => {
                    let policy = settings.policy(Some(&config));
                    let path = config.path.to_string_lossy().into_owned();
                    let baud = config.baud.unwrap_or(crate::config::DEFAULT_BAUD);
                    let options = bridge_options(&config);
                    let poller = Poller::new(
                        config.id.clone(),
                        Master::new(bridge, policy.retry),
                        shared.clone(),
                    )
                    .with_policy(policy)
                    .with_recovery(move |bridge| {
                        let reset = match bridge.reset() {
                            Ok(free) => Ok(free),
                            // The line itself failed (a USB bridge unplugged and back): open
                            // the port again, then reset.
                            Err(_) => {
                                *bridge =
                                    pmon_bus::bridge::SerialBridge::open(&path, baud, options)
                                        .map_err(|e| e.to_string())?;
                                bridge.reset()
                            }
                        };
                        match reset {
                            Ok(true) => Ok(()),
                            Ok(false) => {
                                Err("the bridge reset the bus but SDA is still held low".into())
                            }
                            Err(error) => Err(error.to_string()),
                        }
                    });
                    start(config.id, poller, stop)
                }
                OpenBus::Simulated(id, bus, legacy) => {
                    let policy = settings.policy(None);
                    let poller =
                        Poller::new(id.clone(), Master::new(bus, policy.retry), shared.clone())
                            .with_policy(policy)
                            .with_legacy(legacy);
                    start(id, poller, stop)
                }
            };
            threads.push(thread?);
        }
        Ok(threads)
    }
}

fn start<I2C: I2c + Send + 'static>(
    id: String,
    poller: Poller<I2C>,
    stop: &StopSignal,
) -> Result<JoinHandle<()>, AcquireError> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("poll-{id}"))
        .spawn(move || poller.run(&stop))
        .map_err(AcquireError::Thread)
}
