//! The simulated bus on its own, through `embedded_hal::i2c::I2c`.

use std::time::Duration;

use embedded_hal::i2c::{Error, ErrorKind, I2c, NoAcknowledgeSource};
use pmon_meter::register::{Command, Fifo, Register, Status};
use pmon_sim::{
    transaction_time, BusConfig, ClockMode, SimBus, SimConfig, SimControl, Simulator, SlaveConfig,
};

fn one_slave(bus: BusConfig) -> (SimBus, SimControl) {
    let config = SimConfig {
        seed: 3,
        buses: vec![bus],
        slaves: vec![SlaveConfig::new(0x10, 230.0, 50.0, 10.0)],
    };
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .expect("valid")
        .into_parts();
    (buses.remove(0).1, control)
}

fn read_status(bus: &mut SimBus) -> Status {
    let mut reply = [0u8; Status::LEN + 2];
    bus.write_read(0x10, &[Register::Status as u8], &mut reply)
        .expect("status");
    Status::decode(0x10, &reply).expect("valid status")
}

#[test]
fn absent_address_is_not_acknowledged() {
    let (mut bus, _) = one_slave(BusConfig::new(0));
    let error = bus.write(0x11, &[0x00]).expect_err("nobody at 0x11");
    assert_eq!(
        error.kind(),
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
    );
}

#[test]
fn a_write_with_a_bad_crc_is_acknowledged_and_counted() {
    let (mut bus, control) = one_slave(BusConfig::new(0));
    let mut frame = Command::ClearReset.frame(0x10);
    frame[2] ^= 0xFF;
    bus.write(0x10, &frame).expect("the bus acknowledges it");
    let status = read_status(&mut bus);
    assert_eq!(status.crc_errors, 1);
    assert_eq!(
        status.flags & pmon_meter::register::flag::RESET,
        1,
        "command ignored"
    );
    assert_eq!(control.status(0x10).expect("slave").crc_errors, 1);
}

#[test]
fn each_transaction_takes_its_wire_time_in_fast_mode() {
    let bus_config = BusConfig {
        clock_hz: 100_000,
        host_overhead_us: 150,
        ..BusConfig::new(0)
    };
    let (mut bus, _) = one_slave(bus_config);
    let before = bus.clock().now();
    let mut reply = [0u8; Fifo::LEN + 2];
    bus.write_read(0x10, &Fifo::request(0x10, 0), &mut reply)
        .expect("fetch");
    let took = bus.clock().now() - before;
    assert_eq!(
        took,
        transaction_time(100_000, 7, 36, Duration::from_micros(150))
    );
}

#[test]
fn the_slave_measures_as_simulated_time_passes() {
    let (mut bus, control) = one_slave(BusConfig::new(0));
    control.advance(Duration::from_secs(10));
    let status = read_status(&mut bus);
    // 5 blocks a second, less the start-up of the zero-crossing detector.
    assert!((48..=50).contains(&status.next_seq), "{status:?}");
    assert_eq!(
        usize::from(status.records_waiting),
        32,
        "a 32-record FIFO, full"
    );
    assert!(status.fifo_overflows >= 16);
    assert_eq!(status.uptime_s, 10);
    let energy = control.energy_wh(0x10).expect("slave");
    assert!(
        (energy.import_wh - 2300.0 * 10.0 / 3600.0).abs() < 0.5,
        "{energy:?}"
    );
}

#[test]
fn stuck_bus_fails_every_transaction_until_it_clears() {
    let (mut bus, control) = one_slave(BusConfig::new(0));
    control
        .stick_bus(0, Duration::from_millis(10))
        .expect("bus 0");
    let error = bus.write(0x10, &[0x00]).expect_err("stuck");
    assert_eq!(error.kind(), ErrorKind::Bus);
    control.advance(Duration::from_millis(10));
    bus.write(0x10, &[0x00]).expect("cleared");
    assert_eq!(control.bus_stats(0).expect("bus 0").stuck_failures, 1);
}

#[test]
fn reboot_restarts_sequence_and_energy_but_not_the_mains() {
    let (mut bus, control) = one_slave(BusConfig::new(0));
    control.advance(Duration::from_secs(4));
    assert!(control.produced(0x10).expect("slave") > 10);
    bus.write(0x10, &Command::Reboot.frame(0x10))
        .expect("reboot");
    assert_eq!(control.produced(0x10).expect("slave"), 0);
    assert_eq!(control.energy_wh(0x10).expect("slave").import_wh, 0.0);
    assert_eq!(control.reboots(0x10).expect("slave"), 1);
    control.advance(Duration::from_secs(2));
    assert!(control.produced(0x10).expect("slave") >= 8);
}

#[test]
fn control_errors_name_the_slave() {
    let (_, control) = one_slave(BusConfig::new(0));
    let error = control.unplug((3, 0x10)).expect_err("no bus 3");
    assert!(error.to_string().contains("bus 3"), "{error}");
    let error = control.reboot(0x33).expect_err("no slave");
    assert!(error.to_string().contains("0x33"), "{error}");
    assert!(control.set_corrupt_rate(0, 2.0).is_err());
}

#[test]
fn real_time_mode_follows_the_wall_clock() {
    let config = SimConfig {
        seed: 1,
        buses: Vec::new(),
        slaves: vec![SlaveConfig::new(0x10, 230.0, 50.0, 10.0)],
    };
    let (mut buses, control) = Simulator::new(&config, ClockMode::RealTime)
        .expect("valid")
        .into_parts();
    let (_, mut bus) = buses.remove(0);
    std::thread::sleep(Duration::from_millis(700));
    let status = read_status(&mut bus);
    // ~0.7 s: the first block ends after start-up (~240 ms), then one every 200 ms.
    assert!((1..=4).contains(&status.next_seq), "{status:?}");
    assert!(control.now(0).expect("bus 0") >= Duration::from_millis(700));
}
