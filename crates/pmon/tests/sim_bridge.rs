//! `pmon sim bridge` as a subprocess on one end of a real pseudo-terminal pair, corrupting
//! frames; the master's driver over `SerialBridge` on the other end. The records are those
//! of the same simulation on a simulated bus, exactly once and in order; SIGTERM stops the
//! bridge cleanly.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pmon_bus::bridge::tty::TtyPort;
use pmon_bus::bridge::{BridgeError, BridgeOptions, SerialBridge};
use pmon_bus::{Cursor, DrainEvent, Master, Record, RetryPolicy};
use pmon_sim::{ClockMode, SimConfig, Simulator};

const SIM: &str = r#"
seed = 21

[[slave]]
address = 0x10
voltage = 230.0
frequency = 50.0
current = 12.5
phase = 30.0

[[slave]]
address = 0x11
voltage = 231.0
frequency = 50.0
current = 3.0
phase = -20.0
harmonics = [[3, 0.2]]
"#;

const ADDRESSES: [u8; 2] = [0x10, 0x11];

fn drain_round<I2C: embedded_hal::i2c::I2c>(
    master: &mut Master<I2C>,
    cursors: &mut [Cursor; 2],
    out: &mut [Vec<Record>; 2],
) {
    for (k, &address) in ADDRESSES.iter().enumerate() {
        let mut events = Vec::new();
        let _ = master.drain(address, &mut cursors[k], 64, &mut events);
        out[k].extend(events.into_iter().filter_map(|e| match e {
            DrainEvent::Record(r) => Some(r),
            DrainEvent::Restarted => None,
        }));
    }
}

#[test]
fn pmon_sim_bridge_serves_the_simulation_over_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let sim_file = dir.path().join("sim.toml");
    std::fs::write(&sim_file, SIM).unwrap();
    let log = dir.path().join("bridge.log");

    let pair = nix::pty::openpty(None, None).unwrap();
    let path: PathBuf = nix::unistd::ttyname(&pair.slave).unwrap();
    let host_port = TtyPort::from_fd(pair.master).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pmon"))
        .arg("sim")
        .arg("bridge")
        .arg("--tty")
        .arg(&path)
        .arg("--sim-config")
        .arg(&sim_file)
        .args(["--corrupt-rate", "0.05", "--seed", "2"])
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("pmon");

    let mut bridge = SerialBridge::new(
        host_port,
        BridgeOptions {
            timeout: Duration::from_millis(50),
            attempts: 6,
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        match bridge.hello() {
            Ok(info) => break info,
            Err(BridgeError::Link { .. }) if Instant::now() < deadline => {}
            Err(error) => panic!(
                "no hello: {error}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    assert_eq!(info.version, 1);
    assert_eq!(info.clock_hz, 400_000);

    // Poll as the acquisition does, in real time, for 3 s.
    let mut master = Master::new(bridge, RetryPolicy::default());
    let mut cursors = [Cursor::new(), Cursor::new()];
    let mut over_bridge = [Vec::new(), Vec::new()];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        drain_round(&mut master, &mut cursors, &mut over_bridge);
        std::thread::sleep(Duration::from_millis(200));
    }
    let link = master.bus_mut().stats();

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < stop_deadline, "the bridge ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{output}");
    assert!(output.contains("serial bridge stopped"), "{output}");

    // The same simulation on a simulated bus, fast.
    let config = SimConfig::from_toml_str(SIM).unwrap();
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .unwrap()
        .into_parts();
    let bus = buses.remove(0).1;
    let sleeper = bus.clock().sleeper();
    let mut direct = Master::new(bus, RetryPolicy::default()).with_sleep(sleeper);
    let mut cursors = [Cursor::new(), Cursor::new()];
    let mut reference = [Vec::new(), Vec::new()];
    for _ in 0..25 {
        control.advance(Duration::from_millis(200));
        drain_round(&mut direct, &mut cursors, &mut reference);
    }

    for k in 0..2 {
        let got = &over_bridge[k];
        let seqs: Vec<u32> = got.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (0..got.len() as u32).collect::<Vec<_>>(),
            "exactly once, in order"
        );
        assert!(got.len() >= 10, "{} records in 3 s", got.len());
        let common = got.len().min(reference[k].len());
        assert!(common >= 10);
        assert_eq!(got[..common], reference[k][..common], "the same records");
    }
    // The line corrupted frames both ways; each was detected and sent again.
    assert!(
        link.rejected_requests + link.corrupted_replies > 0,
        "{link:?}"
    );
    assert!(link.retransmissions > 0, "{link:?}");
    drop(pair.slave);
}
