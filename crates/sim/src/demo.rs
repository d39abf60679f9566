//! A varied, realistic set of simulated circuits for demos and load tests.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{BusId, SimConfig, SlaveConfig};

/// Slaves per simulated bus in a demo: addresses 0x10..=0x73. One bus carries the usual
/// ≤ 100 circuits because a simulated bus has no capacitance limit; more spill onto bus 1, 2, …
pub const DEMO_SLAVES_PER_BUS: usize = 100;

/// A kind of circuit: name, amps, lag in degrees, harmonics, export, sensor range, schedule.
struct Archetype {
    name: &'static str,
    current: f32,
    phase: f32,
    harmonics: &'static [(u8, f32)],
    export: bool,
    current_range: f32,
    schedule: &'static [(f32, f32)],
}

const ARCHETYPES: [Archetype; 9] = [
    Archetype {
        name: "Heat pump",
        current: 12.5,
        phase: 30.0,
        harmonics: &[(3, 0.06), (5, 0.04)],
        export: false,
        current_range: 32.0,
        schedule: &[(1500.0, 1.0), (900.0, 0.35)],
    },
    Archetype {
        name: "Fridge",
        current: 1.1,
        phase: 40.0,
        harmonics: &[(3, 0.05)],
        export: false,
        current_range: 5.0,
        schedule: &[(600.0, 1.0), (1200.0, 0.03)],
    },
    Archetype {
        name: "Solar inverter",
        current: 14.0,
        phase: 2.0,
        harmonics: &[(3, 0.02), (5, 0.015)],
        export: true,
        current_range: 32.0,
        schedule: &[],
    },
    Archetype {
        name: "LED lighting",
        current: 0.6,
        phase: -25.0,
        harmonics: &[(3, 0.55), (5, 0.30), (7, 0.15)],
        export: false,
        current_range: 2.0,
        schedule: &[],
    },
    Archetype {
        name: "EV charger",
        current: 31.0,
        phase: 5.0,
        harmonics: &[(3, 0.03), (5, 0.02)],
        export: false,
        current_range: 50.0,
        schedule: &[(3600.0, 1.0), (1800.0, 0.0)],
    },
    Archetype {
        name: "Kettle",
        current: 13.0,
        phase: 0.0,
        harmonics: &[],
        export: false,
        current_range: 20.0,
        schedule: &[(150.0, 1.0), (1650.0, 0.0)],
    },
    Archetype {
        name: "Oven",
        current: 10.0,
        phase: 0.0,
        harmonics: &[],
        export: false,
        current_range: 20.0,
        schedule: &[(40.0, 1.0), (25.0, 0.0)],
    },
    Archetype {
        name: "IT rack",
        current: 4.0,
        phase: -8.0,
        harmonics: &[(3, 0.35), (5, 0.18), (7, 0.08), (9, 0.04)],
        export: false,
        current_range: 10.0,
        schedule: &[],
    },
    Archetype {
        name: "Washing machine",
        current: 8.0,
        phase: 35.0,
        harmonics: &[(3, 0.10), (5, 0.05)],
        export: false,
        current_range: 16.0,
        schedule: &[(300.0, 0.25), (900.0, 1.0), (300.0, 0.45), (600.0, 0.05)],
    },
];

impl SimConfig {
    /// `n` slaves cycling through heat pumps, fridges, solar inverters, LED lighting, EV
    /// chargers, kettles, ovens, IT racks and washing machines ("Heat pump 1", "Fridge 1", …),
    /// each with its own small variation of load, phase and start time drawn from `seed`.
    pub fn demo(n: usize, seed: u64) -> SimConfig {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = [0usize; ARCHETYPES.len()];
        let slaves = (0..n)
            .map(|i| {
                let kind = i % ARCHETYPES.len();
                counts[kind] += 1;
                let a = &ARCHETYPES[kind];
                // `n` beyond what u8 bus ids allow wraps; such a demo is nonsense anyway.
                let bus = (i / DEMO_SLAVES_PER_BUS) as BusId;
                let address = 0x10 + (i % DEMO_SLAVES_PER_BUS) as u8;
                let mut slave = SlaveConfig::new(
                    address,
                    rng.random_range(226.0..234.0),
                    50.0 + rng.random_range(-0.03..0.03),
                    a.current * rng.random_range(0.85..1.15),
                );
                slave.bus = bus;
                slave.name = Some(format!("{} {}", a.name, counts[kind]));
                slave.phase = a.phase + rng.random_range(-3.0..3.0);
                slave.harmonics = a.harmonics.to_vec();
                slave.export = a.export;
                slave.noise = 0.002;
                slave.current_range = a.current_range;
                slave.schedule = stagger(a.schedule, rng.random_range(0.0..1.0));
                slave
            })
            .collect();
        SimConfig {
            seed,
            buses: Vec::new(),
            slaves,
        }
    }
}

/// Rotates a schedule by a fraction of its period, so that identical appliances do not all
/// switch at the same moment.
fn stagger(schedule: &[(f32, f32)], fraction: f32) -> Vec<(f32, f32)> {
    if schedule.is_empty() {
        return Vec::new();
    }
    let start = (fraction * schedule.len() as f32) as usize % schedule.len();
    schedule[start..]
        .iter()
        .chain(&schedule[..start])
        .copied()
        .collect()
}
