//! A master polling a simulated bus, as the acquisition does, with what it received.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use pmon_bus::{Cursor, DrainEvent, DriverError, Master, Record, RetryPolicy};
use pmon_sim::{BusConfig, ClockMode, SimBus, SimConfig, SimControl, Simulator, SlaveConfig};

/// One bus of a fast-mode simulation and a master draining every slave on it.
pub struct Rig {
    pub master: Master<SimBus>,
    pub control: SimControl,
    pub addresses: Vec<u8>,
    pub cursors: BTreeMap<u8, Cursor>,
    /// Every event per address, in order.
    pub events: BTreeMap<u8, Vec<DrainEvent>>,
    pub errors: Vec<DriverError>,
}

pub fn bus(clock_hz: u32, host_overhead_us: u32) -> BusConfig {
    BusConfig {
        clock_hz,
        host_overhead_us,
        ..BusConfig::new(0)
    }
}

pub fn slave(address: u8, current: f32, phase: f32) -> SlaveConfig {
    let mut slave = SlaveConfig::new(address, 230.0, 50.0, current);
    slave.phase = phase;
    slave.current_range = 32.0;
    slave
}

impl Rig {
    pub fn new(slaves: Vec<SlaveConfig>, bus: BusConfig) -> Rig {
        let config = SimConfig {
            seed: 7,
            buses: vec![bus],
            slaves,
        };
        Rig::from_config(&config)
    }

    pub fn from_config(config: &SimConfig) -> Rig {
        let simulator = Simulator::new(config, ClockMode::Fast).expect("valid config");
        let (mut buses, control) = simulator.into_parts();
        let (_, bus) = buses.remove(0);
        let sleeper = bus.clock().sleeper();
        let master = Master::new(bus, RetryPolicy::default()).with_sleep(sleeper);
        let addresses: Vec<u8> = config.slaves.iter().map(|s| s.address).collect();
        Rig {
            master,
            control,
            cursors: addresses.iter().map(|&a| (a, Cursor::new())).collect(),
            events: addresses.iter().map(|&a| (a, Vec::new())).collect(),
            addresses,
            errors: Vec::new(),
        }
    }

    /// Drains every slave once; errors are kept, as an acquisition would log them.
    pub fn poll_all(&mut self) {
        for &address in &self.addresses {
            let cursor = self.cursors.entry(address).or_default();
            let out = self.events.entry(address).or_default();
            if let Err(error) = self.master.drain(address, cursor, 64, out) {
                self.errors.push(error);
            }
        }
    }

    /// Lets `total` pass in steps of `step`, polling after each.
    pub fn run(&mut self, total: Duration, step: Duration) {
        let mut elapsed = Duration::ZERO;
        while elapsed < total {
            self.control.advance(step);
            elapsed += step;
            self.poll_all();
        }
    }

    /// Polls until every FIFO is empty without letting simulated time pass by more than the
    /// polls themselves take.
    pub fn finish(&mut self) {
        for _ in 0..20 {
            self.poll_all();
        }
    }

    pub fn records(&self, address: u8) -> Vec<Record> {
        self.events[&address]
            .iter()
            .filter_map(|event| match event {
                DrainEvent::Record(record) => Some(*record),
                DrainEvent::Restarted => None,
            })
            .collect()
    }

    pub fn seqs(&self, address: u8) -> Vec<u32> {
        self.records(address).iter().map(|r| r.seq).collect()
    }

    pub fn restarts(&self, address: u8) -> usize {
        self.events[&address]
            .iter()
            .filter(|e| matches!(e, DrainEvent::Restarted))
            .count()
    }

    /// Asserts that the master received every record the slave produced, once, in order.
    pub fn assert_exactly_once(&self, address: u8) {
        let produced = self.control.produced(address).expect("slave exists");
        let expected: Vec<u32> = (0..produced).collect();
        let seqs = self.seqs(address);
        // The slave may have finished a block during the last polls; everything up to the
        // last delivered one must be there.
        assert!(produced as usize >= seqs.len());
        assert_eq!(seqs, expected[..seqs.len()], "slave {address:#04x}");
        assert!(
            produced as usize - seqs.len() <= 1,
            "slave {address:#04x}: produced {produced}, delivered {}",
            seqs.len()
        );
    }
}

pub fn within(got: f32, want: f32, tolerance: f32) -> bool {
    (got - want).abs() <= tolerance * want.abs().max(1e-3)
}
