//! One poller thread per simulated bus, as the acquisition runs them.

use std::thread;
use std::time::Duration;

use pmon_bus::{Cursor, DrainEvent, Master, RetryPolicy};
use pmon_sim::{BusConfig, ClockMode, SimConfig, Simulator};

#[test]
fn one_poller_per_bus_receives_everything() {
    let mut config = SimConfig::demo(30, 9);
    for (i, slave) in config.slaves.iter_mut().enumerate() {
        slave.bus = (i % 3) as u8;
    }
    config.buses = (0..3)
        .map(|id| BusConfig {
            clock_hz: [100_000, 400_000, 1_000_000][usize::from(id)],
            corrupt_rate: 0.002,
            ..BusConfig::new(id)
        })
        .collect();
    let (buses, control) = Simulator::new(&config, ClockMode::Fast)
        .expect("valid")
        .into_parts();
    let pollers: Vec<_> = buses
        .into_iter()
        .map(|(id, bus)| {
            let addresses: Vec<u8> = config
                .slaves
                .iter()
                .filter(|s| s.bus == id)
                .map(|s| s.address)
                .collect();
            let control = control.clone();
            thread::spawn(move || {
                let clock = bus.clock().clone();
                let mut master =
                    Master::new(bus, RetryPolicy::default()).with_sleep(clock.sleeper());
                let mut cursors = vec![Cursor::new(); addresses.len()];
                let mut seqs = vec![Vec::new(); addresses.len()];
                // 60 s of simulated time, polling every 500 ms like an acquisition would.
                while clock.now() < Duration::from_secs(60) {
                    clock.advance(Duration::from_millis(500));
                    for (k, &address) in addresses.iter().enumerate() {
                        let mut out = Vec::new();
                        let _ = master.drain(address, &mut cursors[k], 64, &mut out);
                        seqs[k].extend(out.iter().filter_map(|e| match e {
                            DrainEvent::Record(r) => Some(r.seq),
                            DrainEvent::Restarted => None,
                        }));
                    }
                }
                for (k, &address) in addresses.iter().enumerate() {
                    let produced = control.produced((id, address)).expect("slave");
                    let delivered = seqs[k].len() as u32;
                    assert!(
                        produced - delivered <= 1,
                        "bus {id} {address:#04x}: {delivered} of {produced}"
                    );
                    assert_eq!(seqs[k], (0..delivered).collect::<Vec<_>>());
                }
                master.total_counters()
            })
        })
        .collect();
    for poller in pollers {
        let counters = poller.join().expect("poller thread");
        assert!(counters.transactions > 2_000);
    }
}

#[test]
fn real_time_simulation_delivers_records_as_they_are_measured() {
    let config = SimConfig::demo(2, 4);
    let (mut buses, _control) = Simulator::new(&config, ClockMode::RealTime)
        .expect("valid")
        .into_parts();
    let (_, bus) = buses.remove(0);
    let mut master = Master::new(bus, RetryPolicy::default());
    let mut cursor = Cursor::new();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        master
            .drain(0x10, &mut cursor, 64, &mut out)
            .expect("drain");
        thread::sleep(Duration::from_millis(100));
    }
    let records = out
        .iter()
        .filter(|e| matches!(e, DrainEvent::Record(_)))
        .count();
    // 1.2 s: start-up (~0.25 s), then a block every 200 ms.
    assert!((3..=6).contains(&records), "{records} records: {out:?}");
    assert_eq!(
        out.first(),
        Some(&DrainEvent::Restarted),
        "power-on is a restart"
    );
}
