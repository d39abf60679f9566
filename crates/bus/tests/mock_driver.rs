//! The driver against a scripted bus: exact bytes, retries, error mapping, draining.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use pmon_bus::{
    Command, Config, Cursor, DrainEvent, DriverError, Fifo, Master, Record, RetryPolicy, Status,
};

const ADDRESS: u8 = 0x10;

fn master(expectations: &[Transaction]) -> Master<Mock> {
    Master::new(Mock::new(expectations), RetryPolicy::default()).with_sleep(|_| {})
}

fn record(seq: u32) -> Record {
    Record {
        seq,
        voltage: 23_000,
        ..Record::default()
    }
}

fn fifo_reply(seq: Option<u32>, remaining: u8, reset: bool) -> Vec<u8> {
    let fifo = Fifo {
        record: seq.map(record),
        remaining,
        reset,
    };
    let mut out = vec![0u8; Fifo::LEN + 2];
    fifo.seal(ADDRESS, &mut out);
    out
}

fn fetch(ack: u32, reply: Vec<u8>) -> Transaction {
    Transaction::write_read(ADDRESS, Fifo::request(ADDRESS, ack).to_vec(), reply)
}

fn corrupted(mut reply: Vec<u8>) -> Vec<u8> {
    reply[5] ^= 0x10;
    reply
}

fn finish(mut master: Master<Mock>) {
    master.bus_mut().done();
}

#[test]
fn fetch_is_one_write_read_with_pinned_bytes() {
    // Register 0x30, ack 5 little-endian, CRC-16/IBM-3740 over [0x10, 0x30, 5, 0, 0, 0] = 0xA43F.
    let request = vec![0x30, 0x05, 0x00, 0x00, 0x00, 0x3F, 0xA4];
    assert_eq!(Fifo::request(ADDRESS, 5).to_vec(), request);
    let mut m = master(&[Transaction::write_read(
        ADDRESS,
        request,
        fifo_reply(Some(5), 2, false),
    )]);
    let fifo = m.fetch(ADDRESS, 5).expect("fetch");
    assert_eq!(fifo.record, Some(record(5)));
    assert_eq!(fifo.remaining, 2);
    assert!(!fifo.reset);
    assert_eq!(m.counters(ADDRESS).transactions, 1);
    finish(m);
}

#[test]
fn crc_failure_is_retried_with_the_same_ack() {
    let good = fifo_reply(Some(7), 0, false);
    let mut m = master(&[fetch(7, corrupted(good.clone())), fetch(7, good)]);
    let fifo = m.fetch(ADDRESS, 7).expect("second try succeeds");
    assert_eq!(fifo.record.map(|r| r.seq), Some(7));
    let counters = m.counters(ADDRESS);
    assert_eq!(counters.transactions, 2);
    assert_eq!(counters.crc_errors, 1);
    assert_eq!(counters.retries, 1);
    assert_eq!(counters.failures, 0);
    finish(m);
}

#[test]
fn nack_maps_to_no_acknowledge_after_all_attempts() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let attempt = || fetch(0, fifo_reply(None, 0, false)).with_error(nack);
    let mut m = master(&[attempt(), attempt(), attempt()]);
    let error = m.fetch(ADDRESS, 0).expect_err("nobody answers");
    assert_eq!(error.kind(), nack);
    assert!(error.to_string().contains("0x10"), "{error}");
    let counters = m.counters(ADDRESS);
    assert_eq!(
        (counters.nacks, counters.retries, counters.failures),
        (3, 2, 1)
    );
    finish(m);
}

#[test]
fn retries_exhausted_on_crc_errors_is_other() {
    let bad = corrupted(fifo_reply(Some(1), 0, false));
    let mut m = master(&[fetch(1, bad.clone()), fetch(1, bad.clone()), fetch(1, bad)]);
    let error = m.fetch(ADDRESS, 1).expect_err("always corrupted");
    assert_eq!(error.kind(), ErrorKind::Other);
    assert!(matches!(
        error,
        DriverError::Decode {
            address: ADDRESS,
            ..
        }
    ));
    assert_eq!(m.counters(ADDRESS).crc_errors, 3);
    finish(m);
}

#[test]
fn bus_errors_keep_their_kind_and_back_off_doubling() {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&waits);
    let stuck = || fetch(0, fifo_reply(None, 0, false)).with_error(ErrorKind::Bus);
    let mut m = Master::new(
        Mock::new(&[stuck(), stuck(), stuck()]),
        RetryPolicy::default(),
    )
    .with_sleep(move |d| log.lock().map(|mut w| w.push(d)).unwrap_or(()));
    let error = m.fetch(ADDRESS, 0).expect_err("stuck");
    assert_eq!(error.kind(), ErrorKind::Bus);
    assert_eq!(m.counters(ADDRESS).bus_errors, 3);
    let waits = waits.lock().map(|w| w.clone()).unwrap_or_default();
    assert_eq!(
        waits,
        vec![Duration::from_millis(2), Duration::from_millis(4)]
    );
    finish(m);
}

#[test]
fn invalid_address_is_refused_without_touching_the_bus() {
    let mut m = master(&[]);
    let error = m.fetch(0x03, 0).expect_err("reserved address");
    assert!(matches!(
        error,
        DriverError::InvalidAddress { address: 0x03 }
    ));
    finish(m);
}

#[test]
fn drain_handles_reset_then_delivers_in_order() {
    let clear = Transaction::write(ADDRESS, Command::ClearReset.frame(ADDRESS).to_vec());
    let mut m = master(&[
        fetch(42, fifo_reply(Some(0), 1, true)),
        clear,
        fetch(0, fifo_reply(Some(0), 1, false)),
        fetch(1, fifo_reply(Some(1), 0, false)),
    ]);
    let mut cursor = Cursor::resume(42);
    let mut out = Vec::new();
    let delivered = m.drain(ADDRESS, &mut cursor, 10, &mut out).expect("drain");
    assert_eq!(delivered, 2);
    assert_eq!(
        out,
        vec![
            DrainEvent::Restarted,
            DrainEvent::Record(record(0)),
            DrainEvent::Record(record(1))
        ]
    );
    assert_eq!(cursor, Cursor::resume(2));
    finish(m);
}

#[test]
fn drain_resends_a_lost_clear_reset_without_a_second_restart() {
    let clear = || Transaction::write(ADDRESS, Command::ClearReset.frame(ADDRESS).to_vec());
    let mut m = master(&[
        fetch(0, fifo_reply(Some(3), 0, true)),
        clear(),
        // The ClearReset was corrupted on the wire: the flag is still set.
        fetch(3, fifo_reply(Some(3), 0, true)),
        clear(),
        fetch(3, fifo_reply(Some(3), 0, false)),
    ]);
    let mut cursor = Cursor::new();
    let mut out = Vec::new();
    m.drain(ADDRESS, &mut cursor, 10, &mut out).expect("drain");
    assert_eq!(
        out,
        vec![DrainEvent::Restarted, DrainEvent::Record(record(3))]
    );
    finish(m);
}

#[test]
fn drain_skips_a_duplicate_after_a_lost_acknowledgement() {
    let mut m = master(&[
        fetch(11, fifo_reply(Some(10), 1, false)),
        fetch(11, fifo_reply(Some(11), 0, false)),
    ]);
    let mut cursor = Cursor::resume(11);
    let mut out = Vec::new();
    assert_eq!(m.drain(ADDRESS, &mut cursor, 10, &mut out).ok(), Some(1));
    assert_eq!(out, vec![DrainEvent::Record(record(11))]);
    finish(m);
}

#[test]
fn drain_stops_at_max_and_on_empty() {
    let mut m = master(&[
        fetch(0, fifo_reply(Some(0), 5, false)),
        fetch(1, fifo_reply(Some(1), 4, false)),
        fetch(2, fifo_reply(None, 0, false)),
    ]);
    let mut cursor = Cursor::new();
    let mut out = Vec::new();
    assert_eq!(m.drain(ADDRESS, &mut cursor, 2, &mut out).ok(), Some(2));
    assert_eq!(m.drain(ADDRESS, &mut cursor, 2, &mut out).ok(), Some(0));
    assert_eq!(cursor.ack, 2);
    finish(m);
}

#[test]
fn status_and_config_round_trip() {
    let status = Status {
        flags: 1,
        records_waiting: 3,
        next_seq: 99,
        ..Status::default()
    };
    let mut status_reply = vec![0u8; Status::LEN + 2];
    status.seal(ADDRESS, &mut status_reply);
    let config = Config::for_frequency(60);
    let mut config_reply = vec![0u8; Config::LEN + 2];
    config.seal(ADDRESS, &mut config_reply);
    let mut m = master(&[
        Transaction::write_read(ADDRESS, vec![0x20], status_reply),
        Transaction::write(ADDRESS, config.write_frame(ADDRESS).to_vec()),
        Transaction::write_read(ADDRESS, vec![0x10], config_reply),
    ]);
    assert_eq!(m.status(ADDRESS).ok(), Some(status));
    assert!(m.write_config(ADDRESS, &config).is_ok());
    finish(m);
}

#[test]
fn write_config_rejects_invalid_values_before_sending() {
    let mut m = master(&[]);
    let bad = Config {
        nominal_frequency: 55,
        ..Config::default()
    };
    let error = m.write_config(ADDRESS, &bad).expect_err("invalid");
    assert!(error.to_string().contains("nominal_frequency"), "{error}");
    finish(m);
}

#[test]
fn scan_probes_each_address_once_and_keeps_answering_slaves() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let identity = pmon_bus::Identity {
        protocol_version: 1,
        firmware: [0, 1, 0],
        serial: 7,
        capabilities: 0,
        sample_rate: 1800,
        scales: pmon_bus::Scales::for_range(50.0, 300.0),
        record_len: 32,
        fifo_capacity: 32,
    };
    let expectations: Vec<Transaction> = (0x08..=0x77u8)
        .map(|address| {
            let mut reply = vec![0u8; pmon_bus::Identity::LEN + 2];
            if address == 0x21 {
                identity.seal(address, &mut reply);
                Transaction::write_read(address, vec![0x00], reply)
            } else {
                Transaction::write_read(address, vec![0x00], reply).with_error(nack)
            }
        })
        .collect();
    let mut m = master(&expectations);
    assert_eq!(m.scan(), vec![0x21]);
    finish(m);
}
