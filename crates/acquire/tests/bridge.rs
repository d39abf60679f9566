//! The acquisition on a serial-bridge bus (`kind = "serial"`), through config, sources,
//! poller and publisher, over a real pseudo-terminal, with a bridge on the other end that
//! corrupts frames: every record arrives once, in order; a stuck bus behind the bridge is
//! recovered with the bridge's RESET.
#![cfg(unix)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmon_acquire::{AcquireConfig, BusConfig, LegacyConfig, Settings, Source};
use pmon_bus::bridge::tty::TtyPort;
use pmon_bus::bridge::{default_info, BridgeServer};
use pmon_proto::topic::circuit_id;
use pmon_sim::{ClockMode, SimConfig, Simulator};
use support::*;

const SIM: &str = r#"
seed = 9

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
current = 4.0
export = true

[[slave]]
address = 0x20
kind = "legacy"
voltage = 230.0
frequency = 50.0
current = 2.0
swap_rate = 0.3
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_acquisition_polls_through_a_serial_bridge_and_recovers_it() {
    let (_broker, port) = broker().await;
    let seen = subscribe(port).await;

    // The bridge: simulated slaves in real time on the master end of a pty.
    let pair = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&pair.slave).unwrap();
    let mut bridge_port = TtyPort::from_fd(pair.master).unwrap();
    let _keep_open = pair.slave;
    let sim = SimConfig::from_toml_str(SIM).unwrap();
    let (mut buses, control) = Simulator::new(&sim, ClockMode::RealTime)
        .unwrap()
        .into_parts();
    let bus = buses.remove(0).1;
    let reset = control.clone();
    let clock = control.clone();
    let mut server = BridgeServer::new(bus, default_info(400_000))
        .with_reset(move |_| reset.recover_bus(0).unwrap_or(false))
        .with_clock(move |_, hz| clock.set_clock_hz(0, hz).ok())
        .with_faults(0.05, 3);
    let serving = Arc::new(AtomicBool::new(false));
    let stop_bridge = serving.clone();
    let bridge = std::thread::spawn(move || {
        server.serve(&mut bridge_port, &stop_bridge).unwrap();
        server.stats()
    });

    let mut usb0 = BusConfig::serial("usb0", &path, 115_200);
    usb0.clock_hz = Some(100_000);
    usb0.timeout_ms = Some(50);
    let settings = Settings {
        health_interval_s: 1,
        recover_after: 3,
        recovery_backoff_ms: 200,
        bus: vec![usb0],
        // Configured rather than detected: a board that has not measured yet reads as
        // padding only, and the next scan is 30 s away.
        legacy: vec![LegacyConfig {
            bus: "usb0".into(),
            address: 0x20,
            serial: None,
            name: Some("Workshop".into()),
        }],
        ..Settings::default()
    };
    settings.validate().unwrap();
    let config = AcquireConfig {
        site: SITE.into(),
        mqtt: mqtt_config(port, "acquire-bridge"),
        settings,
        circuits: Vec::new(),
        data_dir: None,
        source: Source::Hardware,
        homeassistant: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let acquisition = tokio::spawn(pmon_acquire::run(config, async {
        let _ = stopped.await;
    }));

    let pumps = [circuit_id(0x504D_0010), circuit_id(0x504D_0011)];
    let old = circuit_id(pmon_acquire::legacy::derived_serial("usb0", 0x20));
    let first = wait_for(&seen, Duration::from_secs(15), |s| {
        pumps
            .iter()
            .all(|c| s.frames.get(c).map_or(0, Vec::len) >= 15)
            && s.frames.get(&old).map_or(0, Vec::len) >= 2
    })
    .await;
    for c in pumps.iter().chain([&old]) {
        assert!(
            first.frames.contains_key(c),
            "{c} never arrived: {:?}",
            first.frames.keys()
        );
    }
    assert_eq!(first.info[&old].protocol, "legacy");
    assert_eq!(first.info[&old].name, "Workshop");

    // The bus behind the bridge gets stuck for good: only a recovery (RESET) frees it.
    let stuck_at = Instant::now();
    control.stick_bus(0, Duration::from_secs(3600)).unwrap();
    let back = wait_for(&seen, Duration::from_secs(10), |s| {
        pumps.iter().all(|c| {
            s.health
                .get(c)
                .is_some_and(|h| h.bus_recoveries >= 1 && h.online)
                && s.availability[c]
                    .last()
                    .is_some_and(|(at, p)| *at > stuck_at && p == "online")
        })
    })
    .await;
    for c in &pumps {
        assert!(
            back.availability[c]
                .iter()
                .any(|(at, p)| *at > stuck_at && p == "offline"),
            "{c} did not go offline"
        );
        assert!(back.health[c].bus_recoveries >= 1, "{:?}", back.health[c]);
    }
    assert!(!control.is_stuck(0).unwrap(), "RESET freed the bus");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let _ = stop.send(());
    acquisition.await.unwrap().unwrap();
    serving.store(true, Ordering::Relaxed);
    let stats = bridge.join().unwrap();
    assert!(
        stats.injected_request_faults + stats.injected_reply_faults > 5,
        "{stats:?}"
    );

    // Exactly once, in order, across corrupted frames and the stuck bus.
    let end = seen.lock().unwrap().clone();
    for c in &pumps {
        let records = &end.frames[c];
        assert_monotonic(c, records);
        for pair in records.windows(2) {
            assert_eq!(
                pair[1].seq,
                pair[0].seq + 1,
                "{c}: a record lost or repeated"
            );
        }
    }
    let legacy = &end.frames[&old];
    assert_monotonic(&old, legacy);
    assert!(legacy.len() >= 4, "{}", legacy.len());
}
