//! The real driver against the real simulator when the bus or the slaves misbehave.

mod common;

use std::time::Duration;

use common::{bus, slave, Rig};
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use pmon_bus::{Command, DrainEvent, DriverError};
use pmon_meter::register::flag;

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

fn three_slaves() -> Vec<pmon_sim::SlaveConfig> {
    vec![
        slave(0x10, 12.5, 30.0),
        slave(0x11, 5.0, 0.0),
        slave(0x12, 1.0, -20.0),
    ]
}

#[test]
fn one_percent_corrupted_bytes_lose_no_record() {
    let mut rig = Rig::new(
        three_slaves(),
        pmon_sim::BusConfig {
            corrupt_rate: 0.01,
            ..bus(400_000, 150)
        },
    );
    rig.run(Duration::from_secs(120), Duration::from_millis(500));
    rig.control.set_corrupt_rate(0, 0.0).expect("bus 0");
    rig.finish();
    for address in rig.addresses.clone() {
        rig.assert_exactly_once(address);
    }
    let stats = rig.control.bus_stats(0).expect("bus 0");
    let counters = rig.master.total_counters();
    // Every corrupted reply is caught by its CRC (CRC-16 catches all 1- to 3-bit errors).
    assert!(stats.corrupted_reads > 100, "{stats:?}");
    assert_eq!(
        counters.crc_errors, stats.corrupted_reads,
        "{counters:?} vs {stats:?}"
    );
    // A 38-byte fetch reply (36 + nothing) at 1 %/byte is corrupted about 30 % of the time.
    let rate = counters.crc_errors as f64 / counters.transactions as f64;
    assert!((0.15..0.45).contains(&rate), "CRC error rate {rate}");
    assert!(counters.retries >= counters.crc_errors - counters.failures * 3);
    // Failed drains (three corrupted tries in a row) are retried on the next poll.
    assert!(
        rig.errors.iter().all(|e| e.kind() == ErrorKind::Other),
        "{:?}",
        rig.errors
    );
}

#[test]
fn records_survive_a_nack_storm() {
    let mut rig = Rig::new(three_slaves(), bus(400_000, 150));
    rig.run(Duration::from_secs(5), Duration::from_millis(500));
    rig.control.set_nack_rate(0, 0.95).expect("bus 0");
    // Shorter than the 32-record FIFO (6.4 s): nothing may overflow.
    rig.run(Duration::from_secs(4), Duration::from_millis(500));
    assert!(!rig.errors.is_empty());
    assert!(
        rig.errors.iter().all(|e| e.kind() == NACK),
        "{:?}",
        rig.errors
    );
    rig.control.set_nack_rate(0, 0.0).expect("bus 0");
    rig.run(Duration::from_secs(5), Duration::from_millis(500));
    rig.finish();
    for address in rig.addresses.clone() {
        rig.assert_exactly_once(address);
    }
    let counters = rig.master.total_counters();
    let stats = rig.control.bus_stats(0).expect("bus 0");
    assert_eq!(counters.nacks, stats.injected_nacks);
    assert!(counters.nacks > 20, "{counters:?}");
}

#[test]
fn unplugged_slave_nacks_then_resumes_without_losing_its_fifo() {
    let mut rig = Rig::new(three_slaves(), bus(400_000, 150));
    rig.run(Duration::from_secs(3), Duration::from_millis(500));
    rig.control.unplug(0x11).expect("slave");
    let error = rig.master.fetch(0x11, 0).expect_err("unplugged");
    assert_eq!(error.kind(), NACK);
    assert!(matches!(error, DriverError::Nack { address: 0x11, .. }));
    // Four seconds away: its FIFO (32 records = 6.4 s) keeps everything.
    rig.run(Duration::from_secs(4), Duration::from_millis(500));
    rig.control.replug(0x11).expect("slave");
    rig.run(Duration::from_secs(2), Duration::from_millis(500));
    rig.finish();
    rig.assert_exactly_once(0x11);
    assert_eq!(rig.master.status(0x11).expect("status").fifo_overflows, 0);
}

#[test]
fn a_long_unplug_overflows_the_fifo_and_says_so() {
    let mut rig = Rig::new(three_slaves(), bus(400_000, 150));
    rig.run(Duration::from_secs(2), Duration::from_millis(500));
    rig.control.unplug(0x12).expect("slave");
    rig.run(Duration::from_secs(20), Duration::from_millis(500));
    rig.control.replug(0x12).expect("slave");
    let status = rig.master.status(0x12).expect("status");
    assert!(status.flags & flag::FIFO_OVERFLOW != 0);
    assert_eq!(usize::from(status.records_waiting), 32);
    rig.finish();
    // Blocks that arrived before the first fetch made room overflowed too.
    let status = rig.master.status(0x12).expect("status");
    let seqs = rig.seqs(0x12);
    let produced = rig.control.produced(0x12).expect("slave");
    // Delivered and overflowed records account for everything, in order, without repeats.
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let missing = produced - seqs.len() as u32;
    // The record delivered last before the unplug was still waiting for its acknowledgement
    // and counts among the overflows too.
    assert!(
        status.fifo_overflows == missing || status.fifo_overflows == missing + 1,
        "{} overflows, {missing} missing: {seqs:?}",
        status.fifo_overflows
    );
    assert!(status.fifo_overflows > 60);
}

#[test]
fn a_rebooted_slave_is_reported_and_starts_again() {
    let mut rig = Rig::new(three_slaves(), bus(400_000, 150));
    rig.run(Duration::from_secs(10), Duration::from_millis(500));
    let before = rig.records(0x10).last().copied().expect("records");
    assert!(before.energy_import > 0);
    rig.control.reboot(0x10).expect("slave");
    rig.run(Duration::from_secs(3), Duration::from_millis(500));
    // Commanded reboot through the bus, as `pmon` would send it.
    rig.master
        .command(0x11, Command::Reboot)
        .expect("reboot command");
    rig.run(Duration::from_secs(3), Duration::from_millis(500));
    rig.finish();
    for address in [0x10u8, 0x11] {
        // Power-on is the first restart the master sees; the reboot the second.
        assert_eq!(rig.restarts(address), 2, "{address:#04x}");
        let events = &rig.events[&address];
        let at = events
            .iter()
            .rposition(|e| *e == DrainEvent::Restarted)
            .expect("restart");
        let DrainEvent::Record(first) = events[at + 1] else {
            panic!("a record must follow the restart")
        };
        assert_eq!(first.seq, 0, "{address:#04x} restarts its sequence");
        let DrainEvent::Record(last_old) = events[at - 1] else {
            panic!("a record must precede the restart")
        };
        assert!(
            first.energy_import < last_old.energy_import,
            "energy restarts"
        );
        // Each epoch on its own is complete and in order.
        let new_epoch: Vec<u32> = events[at + 1..]
            .iter()
            .filter_map(|e| match e {
                DrainEvent::Record(r) => Some(r.seq),
                DrainEvent::Restarted => None,
            })
            .collect();
        let produced = rig.control.produced(address).expect("slave");
        assert_eq!(new_epoch, (0..produced).collect::<Vec<_>>());
    }
    assert_eq!(rig.restarts(0x12), 1);
    assert_eq!(
        rig.master.status(0x10).expect("status").flags & flag::RESET,
        0
    );
}

#[test]
fn a_stuck_bus_fails_with_bus_errors_and_recovers() {
    let mut rig = Rig::new(three_slaves(), bus(400_000, 150));
    rig.run(Duration::from_secs(2), Duration::from_millis(500));
    rig.control
        .stick_bus(0, Duration::from_millis(300))
        .expect("bus 0");
    let error = rig.master.status(0x10).expect_err("stuck");
    assert_eq!(error.kind(), ErrorKind::Bus);
    assert!(error.to_string().contains("0x10"), "{error}");
    // Retries back off in simulated time (2 + 4 ms per failed operation), so polling
    // moves the clock on until the bus clears.
    let mut polls = 0;
    while rig.control.is_stuck(0).expect("bus 0") {
        rig.poll_all();
        polls += 1;
        assert!(polls < 1000, "the bus never cleared");
    }
    assert!(rig.errors.iter().all(|e| e.kind() == ErrorKind::Bus));
    rig.run(Duration::from_secs(2), Duration::from_millis(500));
    rig.finish();
    for address in rig.addresses.clone() {
        rig.assert_exactly_once(address);
    }
    assert!(rig.master.total_counters().bus_errors > 0);
}
