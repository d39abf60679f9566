//! `Master::set_address`: exact bytes against a scripted bus, then the real simulator.

use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use pmon_bus::{
    capability, Cursor, DrainEvent, DriverError, Identity, Master, ReaddressProblem, RetryPolicy,
};
use pmon_sim::{BusConfig, ClockMode, SimConfig, Simulator, SlaveConfig};

// docs/protocol/i2c.md §10.7 (pinned in crates/meter/tests/wire.rs too).
const IDENTITY_0X10: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x1F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x25, 0x3C,
];
const ADDRESS_WRITE: [u8; 5] = [0x50, 0x11, 0xEE, 0x0B, 0xED];
const IDENTITY_0X11: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x1F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x44, 0x90,
];
// §10.1: the same board without ADDRESSABLE (capabilities 0x000F).
const IDENTITY_0X10_FIXED: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x0F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0xD2, 0xFA,
];

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

fn master(expectations: &[Transaction]) -> Master<Mock> {
    Master::new(Mock::new(expectations), RetryPolicy::default()).with_sleep(|_| {})
}

fn identify(address: u8, reply: &[u8]) -> Transaction {
    Transaction::write_read(address, vec![0x00], reply.to_vec())
}

fn nobody(address: u8) -> Transaction {
    identify(address, &[0u8; 26]).with_error(NACK)
}

fn readdress_problem(error: DriverError) -> ReaddressProblem {
    match error {
        DriverError::Readdress {
            from: 0x10,
            to: 0x11,
            problem,
        } => problem,
        other => panic!("expected a Readdress error, got {other:?}"),
    }
}

#[test]
fn set_address_checks_writes_and_verifies_with_pinned_bytes() {
    let mut m = master(&[
        identify(0x10, &IDENTITY_0X10),
        nobody(0x11),
        Transaction::write(0x10, ADDRESS_WRITE.to_vec()),
        identify(0x11, &IDENTITY_0X11),
        nobody(0x10),
    ]);
    let moved = m.set_address(0x10, 0x11).expect("moved");
    assert_eq!(moved.serial, 0x00C0_FFEE);
    assert_ne!(moved.capabilities & capability::ADDRESSABLE, 0);
    m.bus_mut().done();
}

#[test]
fn a_write_lost_on_the_wire_is_repeated() {
    let mut m = master(&[
        identify(0x10, &IDENTITY_0X10),
        nobody(0x11),
        Transaction::write(0x10, ADDRESS_WRITE.to_vec()),
        // The slave refused the write (bad CRC): nobody at 0x11 after every retry …
        nobody(0x11),
        nobody(0x11),
        nobody(0x11),
        // … and it is still at 0x10.
        identify(0x10, &IDENTITY_0X10),
        Transaction::write(0x10, ADDRESS_WRITE.to_vec()),
        identify(0x11, &IDENTITY_0X11),
        nobody(0x10),
    ]);
    assert_eq!(
        m.set_address(0x10, 0x11).expect("moved").serial,
        0x00C0_FFEE
    );
    m.bus_mut().done();
}

#[test]
fn a_slave_that_never_moves_is_reported_after_the_retries() {
    let mut expectations = vec![identify(0x10, &IDENTITY_0X10), nobody(0x11)];
    for _ in 0..3 {
        expectations.push(Transaction::write(0x10, ADDRESS_WRITE.to_vec()));
        expectations.extend([nobody(0x11), nobody(0x11), nobody(0x11)]);
        expectations.push(identify(0x10, &IDENTITY_0X10));
    }
    let mut m = master(&expectations);
    let problem = readdress_problem(m.set_address(0x10, 0x11).expect_err("never moves"));
    assert_eq!(problem, ReaddressProblem::NotMoved { attempts: 3 });
    m.bus_mut().done();
}

#[test]
fn nothing_is_written_when_the_new_address_is_taken() {
    let mut m = master(&[
        identify(0x10, &IDENTITY_0X10),
        identify(0x11, &IDENTITY_0X11),
    ]);
    let error = m.set_address(0x10, 0x11).expect_err("taken");
    let message = error.to_string();
    assert!(
        message.contains("0x10") && message.contains("0x11"),
        "{message}"
    );
    assert!(message.contains("00C0FFEE"), "{message}");
    assert_eq!(
        readdress_problem(error),
        ReaddressProblem::Occupied {
            serial: Some(0x00C0_FFEE)
        }
    );
    m.bus_mut().done();

    // A device that answers but is no pmon slave counts as taken too (its replies fail the
    // CRC, so they are read as often as the retry policy allows).
    let garbage = || identify(0x11, &[0x42; 26]);
    let mut m = master(&[
        identify(0x10, &IDENTITY_0X10),
        garbage(),
        garbage(),
        garbage(),
    ]);
    assert_eq!(
        readdress_problem(m.set_address(0x10, 0x11).expect_err("taken")),
        ReaddressProblem::Occupied { serial: None }
    );
    m.bus_mut().done();
}

#[test]
fn nothing_is_written_to_a_slave_without_the_capability() {
    let mut m = master(&[identify(0x10, &IDENTITY_0X10_FIXED)]);
    let error = m.set_address(0x10, 0x11).expect_err("not addressable");
    assert!(error.to_string().contains("ADDRESSABLE"), "{error}");
    assert_eq!(
        readdress_problem(error),
        ReaddressProblem::NotAddressable {
            serial: 0x00C0_FFEE
        }
    );
    m.bus_mut().done();
}

#[test]
fn invalid_requests_never_touch_the_bus() {
    let mut m = master(&[]);
    for (from, to) in [(0x10, 0x07), (0x10, 0x78), (0x03, 0x11), (0x10, 0xFF)] {
        assert!(matches!(
            m.set_address(from, to),
            Err(DriverError::InvalidAddress { .. })
        ));
    }
    assert!(matches!(
        m.set_address(0x10, 0x10),
        Err(DriverError::Readdress {
            problem: ReaddressProblem::SameAddress,
            ..
        })
    ));
    m.bus_mut().done();
}

#[test]
fn an_absent_slave_is_a_nack_error() {
    let mut m = master(&[nobody(0x10), nobody(0x10), nobody(0x10)]);
    assert!(matches!(
        m.set_address(0x10, 0x11),
        Err(DriverError::Nack { address: 0x10, .. })
    ));
    m.bus_mut().done();
}

fn simulated(
    slaves: Vec<SlaveConfig>,
    corrupt_rate: f64,
) -> (Master<pmon_sim::SimBus>, pmon_sim::SimControl) {
    let config = SimConfig {
        seed: 11,
        buses: vec![BusConfig {
            corrupt_rate,
            ..BusConfig::new(0)
        }],
        slaves,
    };
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .expect("valid")
        .into_parts();
    let bus = buses.remove(0).1;
    let sleeper = bus.clock().sleeper();
    (
        Master::new(bus, RetryPolicy::default()).with_sleep(sleeper),
        control,
    )
}

fn records(events: &[DrainEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|event| match event {
            DrainEvent::Record(record) => Some(record.seq),
            DrainEvent::Restarted => None,
        })
        .collect()
}

#[test]
fn a_simulated_slave_moves_and_its_records_continue_exactly_once() {
    let (mut master, control) = simulated(vec![SlaveConfig::new(0x10, 230.0, 50.0, 5.0)], 0.0);
    let mut cursor = Cursor::new();
    let mut events = Vec::new();
    control.advance(Duration::from_secs(3));
    master
        .drain(0x10, &mut cursor, 64, &mut events)
        .expect("drain");
    let before: Identity = master.identify(0x10).expect("identify");

    let moved = master.set_address(0x10, 0x11).expect("moved");
    assert_eq!(moved, before, "same identity at the new address");
    assert!(matches!(
        master.probe(0x10),
        Err(DriverError::Nack { address: 0x10, .. })
    ));

    control.advance(Duration::from_secs(3));
    master
        .drain(0x11, &mut cursor, 64, &mut events)
        .expect("drain at 0x11");
    let seqs = records(&events);
    assert!(seqs.len() >= 28, "{} records in 6 s", seqs.len());
    let expected: Vec<u32> = (0..seqs.len() as u32).collect();
    assert_eq!(
        seqs, expected,
        "every record once, in order, across the move"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == DrainEvent::Restarted)
            .count(),
        1,
        "only the power-up restart: moving is not a restart"
    );
}

#[test]
fn a_simulated_slave_is_not_moved_onto_another() {
    let (mut master, control) = simulated(
        vec![
            SlaveConfig::new(0x10, 230.0, 50.0, 5.0),
            SlaveConfig::new(0x11, 230.0, 50.0, 2.0),
        ],
        0.0,
    );
    let other = master.identify(0x11).expect("0x11").serial;
    let error = master.set_address(0x10, 0x11).expect_err("taken");
    assert_eq!(
        readdress_problem(error),
        ReaddressProblem::Occupied {
            serial: Some(other)
        }
    );
    assert!(control.produced(0x10).is_ok(), "still at 0x10");
}

#[test]
fn moving_works_on_a_noisy_bus() {
    // One byte in 200 read with a flipped bit: identities fail their CRC now and then and
    // are read again; the move still happens once and is verified.
    let (mut master, control) = simulated(vec![SlaveConfig::new(0x10, 230.0, 50.0, 5.0)], 0.005);
    let serial = control.config(0x10).expect("slave").serial_number();
    let moved = master.set_address(0x10, 0x33).expect("moved");
    assert_eq!(moved.serial, serial);
    assert_eq!(control.config(0x33).expect("moved").serial_number(), serial);
}
