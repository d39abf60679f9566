//! Simulated slaves move to a new bus address when the master writes register 0x50.

use std::time::Duration;

use embedded_hal::i2c::{Error, ErrorKind, I2c, NoAcknowledgeSource};
use pmon_meter::register::{capability, Command, Register};
use pmon_meter::{Fifo, Identity, NewAddress};
use pmon_sim::{BusConfig, ClockMode, SimBus, SimConfig, SimControl, Simulator, SlaveConfig};

fn two_slaves() -> (SimBus, SimControl) {
    let config = SimConfig {
        seed: 5,
        buses: vec![BusConfig::new(0)],
        slaves: vec![
            SlaveConfig::new(0x10, 230.0, 50.0, 10.0),
            SlaveConfig::new(0x20, 230.0, 50.0, 3.0),
        ],
    };
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .expect("valid")
        .into_parts();
    control.advance(Duration::from_secs(2));
    (buses.remove(0).1, control)
}

fn identify(bus: &mut SimBus, address: u8) -> Result<Identity, ErrorKind> {
    let mut reply = [0u8; Identity::LEN + 2];
    bus.write_read(address, &[Register::Identity as u8], &mut reply)
        .map_err(|e| e.kind())?;
    Identity::decode(address, &reply).map_err(|_| ErrorKind::Other)
}

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

#[test]
fn simulated_slaves_are_addressable() {
    let (mut bus, _) = two_slaves();
    let identity = identify(&mut bus, 0x10).expect("slave 0x10");
    assert_ne!(identity.capabilities & capability::ADDRESSABLE, 0);
}

#[test]
fn an_address_write_moves_the_slave_with_its_serial_records_and_counters() {
    let (mut bus, control) = two_slaves();
    let before = identify(&mut bus, 0x10).expect("slave 0x10");
    let produced = control.produced(0x10).expect("slave");
    assert!(produced >= 9, "{produced} blocks in 2 s");

    bus.write(0x10, &NewAddress(0x11).frame(0x10))
        .expect("acknowledged");

    assert_eq!(identify(&mut bus, 0x10), Err(NACK));
    let after = identify(&mut bus, 0x11).expect("the slave answers at 0x11");
    assert_eq!(after, before, "same identity, serial included");
    // The FIFO came along: the oldest record is still block 0.
    let mut reply = [0u8; Fifo::LEN + 2];
    bus.write_read(0x11, &Fifo::request(0x11, 0), &mut reply)
        .expect("fifo");
    let fifo = Fifo::decode(0x11, &reply).expect("sealed with the new address");
    assert_eq!(fifo.record.map(|r| r.seq), Some(0));
    // The control handle finds it at its new address; the other slave is untouched.
    assert!(control.produced(0x11).expect("moved") >= produced);
    assert!(control.produced(0x10).is_err());
    assert_eq!(
        control.config(0x11).expect("moved").serial_number(),
        before.serial
    );
    assert!(identify(&mut bus, 0x20).is_ok());
    let mut addresses: Vec<u8> = control.slaves().iter().map(|s| s.address).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, [0x11, 0x20]);
}

#[test]
fn the_new_address_survives_a_reboot_as_if_stored_in_eeprom() {
    let (mut bus, control) = two_slaves();
    let serial = identify(&mut bus, 0x10).expect("slave").serial;
    bus.write(0x10, &NewAddress(0x42).frame(0x10)).expect("ack");
    bus.write(0x42, &Command::Reboot.frame(0x42)).expect("ack");
    assert_eq!(control.reboots(0x42).expect("slave at 0x42"), 1);
    assert_eq!(identify(&mut bus, 0x10), Err(NACK));
    assert_eq!(identify(&mut bus, 0x42).expect("at 0x42").serial, serial);
}

#[test]
fn a_corrupted_or_foreign_address_write_moves_nothing() {
    let (mut bus, control) = two_slaves();
    let mut corrupted = NewAddress(0x11).frame(0x10);
    corrupted[3] ^= 0x01;
    bus.write(0x10, &corrupted).expect("acknowledged anyway");
    // A frame sealed for 0x20 reaching 0x10 (an address bit flipped on the wire).
    bus.write(0x10, &NewAddress(0x11).frame(0x20)).expect("ack");
    assert!(identify(&mut bus, 0x10).is_ok());
    assert_eq!(identify(&mut bus, 0x11), Err(NACK));
    assert_eq!(control.status(0x10).expect("slave").crc_errors, 2);
}
