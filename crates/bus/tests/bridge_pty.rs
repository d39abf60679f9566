//! The serial bridge end to end over a real pseudo-terminal pair: a `BridgeServer` on a
//! thread with simulated slaves behind it on one end, the master's driver over
//! `SerialBridge` on the other. Same records, exactly once, in order, as over the simulated
//! bus directly — also when the line corrupts frames in both directions.
#![cfg(unix)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};
use pmon_bus::bridge::tty::TtyPort;
use pmon_bus::bridge::{
    default_info, BridgeError, BridgeOptions, BridgeServer, SerialBridge, ServerStats,
};
use pmon_bus::{Cursor, DrainEvent, Master, Record, RetryPolicy};
use pmon_sim::{ClockMode, SimBus, SimConfig, SimControl, Simulator};

const SIM: &str = r#"
seed = 11

[[slave]]
address = 0x10
voltage = 230.0
frequency = 50.0
current = 12.5
phase = 30.0

[[slave]]
address = 0x11
voltage = 230.0
frequency = 50.0
current = 8.0
export = true
"#;

/// A pseudo-terminal pair in raw mode: (master end, slave end kept open, slave path).
fn pty() -> (OwnedFd, OwnedFd, PathBuf) {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let pair = nix::pty::openpty(None, None).expect("openpty");
    // Raw before any byte flows, or the line discipline echoes and translates.
    let mut termios = tcgetattr(&pair.slave).expect("tcgetattr");
    cfmakeraw(&mut termios);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).expect("tcsetattr");
    let path = nix::unistd::ttyname(&pair.slave).expect("ttyname");
    (pair.master, pair.slave, path)
}

fn simulator() -> (SimBus, SimControl) {
    let config = SimConfig::from_toml_str(SIM).expect("valid");
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .expect("valid")
        .into_parts();
    (buses.remove(0).1, control)
}

struct Bridge {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServerStats>>,
    _slave_end: OwnedFd,
    path: PathBuf,
}

impl Bridge {
    /// Serves `bus` on the master end of a new pty; the host opens `path`.
    fn start(bus: SimBus, control: SimControl, corrupt_rate: f64) -> Bridge {
        let (master_end, slave_end, path) = pty();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Set up before the host can send anything: configuring a port flushes its input.
        let mut port = TtyPort::from_fd(master_end).expect("pty master");
        let thread = std::thread::spawn(move || {
            let reset = control.clone();
            let mut server = BridgeServer::new(bus, default_info(400_000))
                .with_reset(move |_| reset.recover_bus(0).unwrap_or(false))
                .with_clock(move |_, hz| control.set_clock_hz(0, hz).ok())
                .with_faults(corrupt_rate, 5);
            server.serve(&mut port, &flag).expect("serve");
            server.stats()
        });
        Bridge {
            stop,
            thread: Some(thread),
            _slave_end: slave_end,
            path,
        }
    }

    fn stop(mut self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("server thread"))
            .unwrap_or_default()
    }
}

fn options() -> BridgeOptions {
    BridgeOptions {
        timeout: Duration::from_millis(50),
        attempts: 6,
    }
}

/// Drains both slaves every 200 ms of simulated time for `seconds`.
fn drain_all<I2C: I2c>(
    master: &mut Master<I2C>,
    control: &SimControl,
    seconds: u64,
) -> Vec<(u8, Vec<Record>)> {
    let mut out = vec![(0x10, Vec::new()), (0x11, Vec::new())];
    let mut cursors = [Cursor::new(), Cursor::new()];
    for _ in 0..seconds * 5 {
        control.advance(Duration::from_millis(200));
        for (k, (address, records)) in out.iter_mut().enumerate() {
            let mut events = Vec::new();
            let _ = master.drain(*address, &mut cursors[k], 64, &mut events);
            records.extend(events.into_iter().filter_map(|e| match e {
                DrainEvent::Record(r) => Some(r),
                DrainEvent::Restarted => None,
            }));
        }
    }
    out
}

fn assert_same_records(over_bridge: &[(u8, Vec<Record>)], direct: &[(u8, Vec<Record>)]) {
    for ((address, got), (_, want)) in over_bridge.iter().zip(direct) {
        let seqs: Vec<u32> = got.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (0..got.len() as u32).collect::<Vec<_>>(),
            "slave {address:#04x}: exactly once, in order"
        );
        assert!(
            got.len() >= 140,
            "slave {address:#04x}: {} records",
            got.len()
        );
        let common = got.len().min(want.len());
        assert!(want.len().abs_diff(got.len()) <= 1);
        assert_eq!(
            got[..common],
            want[..common],
            "slave {address:#04x}: the same records as over the simulated bus"
        );
    }
}

#[test]
fn records_over_a_pty_are_those_of_the_simulated_bus() {
    let (bus, control) = simulator();
    let bridge = Bridge::start(bus, control.clone(), 0.0);
    let serial = SerialBridge::open(&bridge.path.to_string_lossy(), 115_200, options())
        .expect("bridge answers");
    let sleeper = control.clock(0).expect("bus 0").sleeper();
    let mut master = Master::new(serial, RetryPolicy::default()).with_sleep(sleeper);
    let over_bridge = drain_all(&mut master, &control, 30);

    let (bus, direct_control) = simulator();
    let sleeper = bus.clock().sleeper();
    let mut direct = Master::new(bus, RetryPolicy::default()).with_sleep(sleeper);
    let direct = drain_all(&mut direct, &direct_control, 30);

    assert_same_records(&over_bridge, &direct);
    let link = master.bus_mut().stats();
    // A clean line (a loaded machine may still time out and send a frame again).
    assert_eq!(
        link.corrupted_replies + link.rejected_requests,
        0,
        "{link:?}"
    );
    let stats = bridge.stop();
    assert_eq!(stats.bad_frames, 0);
    // Every request carried out on the bus exactly once, retransmissions or not.
    assert_eq!(stats.executed, link.requests, "{stats:?} {link:?}");
}

#[test]
fn corrupted_frames_are_detected_and_sent_again_and_nothing_is_lost() {
    let (bus, control) = simulator();
    let bridge = Bridge::start(bus, control.clone(), 0.05);
    let serial = SerialBridge::open(&bridge.path.to_string_lossy(), 115_200, options())
        .expect("bridge answers");
    let sleeper = control.clock(0).expect("bus 0").sleeper();
    let mut master = Master::new(serial, RetryPolicy::default()).with_sleep(sleeper);
    let over_bridge = drain_all(&mut master, &control, 30);

    let (bus, direct_control) = simulator();
    let sleeper = bus.clock().sleeper();
    let mut direct = Master::new(bus, RetryPolicy::default()).with_sleep(sleeper);
    let direct = drain_all(&mut direct, &direct_control, 30);

    assert_same_records(&over_bridge, &direct);
    let link = master.bus_mut().stats();
    let stats = bridge.stop();
    assert!(stats.injected_request_faults > 10, "{stats:?}");
    assert!(stats.injected_reply_faults > 10, "{stats:?}");
    assert!(link.rejected_requests > 10, "{link:?}");
    assert!(link.corrupted_replies > 10, "{link:?}");
    assert!(link.retransmissions >= link.rejected_requests + link.corrupted_replies / 2);
    // A retransmitted request whose first copy was carried out is answered from the
    // bridge's cache: the bus saw it once.
    assert!(stats.repeats > 0, "{stats:?}");
}

#[test]
fn errors_reset_and_clock_map_through_the_bridge() {
    let (bus, control) = simulator();
    let bridge = Bridge::start(bus, control.clone(), 0.0);
    let mut serial = SerialBridge::open(&bridge.path.to_string_lossy(), 115_200, options())
        .expect("bridge answers");
    let info = serial.info().expect("hello");
    assert_eq!(info.version, 1);
    assert_eq!(info.clock_hz, 400_000);

    // Nobody at 0x30.
    let mut buffer = [0u8; 4];
    let error = serial.read(0x30, &mut buffer).expect_err("absent");
    assert_eq!(
        embedded_hal::i2c::Error::kind(&error),
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
    );
    // A stuck bus is a bus error, and RESET frees it.
    control
        .stick_bus(0, Duration::from_secs(3600))
        .expect("bus 0");
    let error = serial.write(0x10, &[0x00]).expect_err("stuck");
    assert!(matches!(error, BridgeError::Bus(_)), "{error}");
    assert_eq!(embedded_hal::i2c::Error::kind(&error), ErrorKind::Bus);
    assert!(serial.reset().expect("reset"));
    serial.write(0x10, &[0x00]).expect("free again");
    // The clock is set (to a step the simulated bus has).
    assert_eq!(serial.set_clock(100_000).expect("clock"), 100_000);
    assert_eq!(serial.set_clock(150_000).expect("clock"), 100_000);
    // Too long for the bridge: refused before it is sent.
    let long = [0u8; 65];
    assert!(matches!(
        serial.write(0x10, &long),
        Err(BridgeError::Refused(_))
    ));
    // A write after a read is not one transaction the protocol carries.
    let mut one = [0u8; 1];
    let result = serial.transaction(
        0x10,
        &mut [
            embedded_hal::i2c::Operation::Read(&mut one),
            embedded_hal::i2c::Operation::Write(&[0x00]),
        ],
    );
    assert!(matches!(result, Err(BridgeError::Unsupported(_))));
    bridge.stop();
}

#[test]
fn a_silent_line_times_out_with_a_clear_error() {
    let (master_end, _slave_end, path) = pty();
    // Nobody serves the master end.
    let started = std::time::Instant::now();
    let error = SerialBridge::open(
        &path.to_string_lossy(),
        115_200,
        BridgeOptions {
            timeout: Duration::from_millis(20),
            attempts: 2,
        },
    )
    .expect_err("no bridge");
    let message = error.to_string();
    assert!(message.contains("no valid reply"), "{message}");
    assert!(
        message.contains(&path.to_string_lossy().into_owned()),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(master_end);
}
