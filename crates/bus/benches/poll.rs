//! Master fetch transactions per second on a zero-latency simulated bus (fast mode, no
//! wire time, no host overhead), one core.
//!
//! Two loads: `empty` fetches FIFOs that hold nothing (the protocol and driver alone);
//! `steady` lets 200 ms of simulated time pass per round and drains every slave, so each
//! transaction also pays for synthesising and processing the ~360 sample pairs of the block
//! it fetches. Each is run 5 times; the median is printed as a markdown row and one
//! machine-readable `BENCH` line.
//!
//! Run: `cargo bench -p pmon-bus --bench poll`

use std::time::{Duration, Instant};

use pmon_bus::{Cursor, Master, RetryPolicy};
use pmon_sim::{BusConfig, ClockMode, SimBus, SimConfig, SimControl, Simulator};

const SLAVES: usize = 100;
const RUNS: usize = 5;
const RUN_TIME: Duration = Duration::from_millis(800);

/// CPU time of this process so far (user + system).
fn cpu_time() -> Option<Duration> {
    // schedstat has nanosecond resolution; /proc/self/stat only clock ticks.
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

struct Rig {
    master: Master<SimBus>,
    control: SimControl,
    addresses: Vec<u8>,
    cursors: Vec<Cursor>,
}

fn rig() -> Option<Rig> {
    let mut config = SimConfig::demo(SLAVES, 1);
    config.buses = vec![BusConfig {
        clock_hz: 0,
        host_overhead_us: 0,
        ..BusConfig::new(0)
    }];
    let addresses = config.slaves.iter().map(|s| s.address).collect::<Vec<_>>();
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast).ok()?.into_parts();
    let (_, bus) = buses.pop()?;
    let master = Master::new(bus, RetryPolicy::default()).with_sleep(|_| {});
    Some(Rig {
        master,
        control,
        cursors: vec![Cursor::new(); addresses.len()],
        addresses,
    })
}

#[derive(Clone, Copy)]
struct Sample {
    per_second: f64,
    cpu_us: f64,
    records_per_second: f64,
}

fn run(rig: &mut Rig, advance: Duration) -> Sample {
    let start_tx = rig.master.total_counters().transactions;
    let start_cpu = cpu_time();
    let start = Instant::now();
    let mut records = 0usize;
    let mut out = Vec::with_capacity(64);
    while start.elapsed() < RUN_TIME {
        rig.control.advance(advance);
        for (address, cursor) in rig.addresses.iter().zip(rig.cursors.iter_mut()) {
            out.clear();
            if let Ok(delivered) = rig.master.drain(*address, cursor, 64, &mut out) {
                records += delivered;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let transactions = (rig.master.total_counters().transactions - start_tx) as f64;
    let cpu = match (start_cpu, cpu_time()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => wall,
    };
    Sample {
        per_second: transactions / wall,
        cpu_us: cpu * 1e6 / transactions.max(1.0),
        records_per_second: records as f64 / wall,
    }
}

fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    samples[samples.len() / 2]
}

fn main() {
    let Some(mut rig) = rig() else {
        eprintln!("could not build the simulated bus");
        std::process::exit(1);
    };
    // Past the slaves' start-up, so every round delivers records.
    rig.control.advance(Duration::from_secs(1));
    let loads = [
        ("empty", Duration::ZERO),
        ("steady", Duration::from_millis(200)),
    ];
    println!("| load | slaves | fetch tx/s (median of {RUNS}) | CPU µs/tx | records/s |");
    println!("| --- | --- | --- | --- | --- |");
    let mut lines = Vec::new();
    for (name, advance) in loads {
        // Drain the backlog so the runs measure the load, not the warm-up.
        run(&mut rig, advance);
        let sample = median((0..RUNS).map(|_| run(&mut rig, advance)).collect());
        println!(
            "| {name} | {SLAVES} | {:.0} | {:.2} | {:.0} |",
            sample.per_second, sample.cpu_us, sample.records_per_second
        );
        lines.push(format!(
            "BENCH pmon-bus poll load={name} slaves={SLAVES} tx_per_s={:.0} cpu_us_per_tx={:.3} records_per_s={:.0}",
            sample.per_second, sample.cpu_us, sample.records_per_second
        ));
    }
    for line in lines {
        println!("{line}");
    }
}
