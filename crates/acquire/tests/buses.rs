//! Several simulated buses polled in parallel by the acquisition (`run`, one poller thread
//! per bus). One bus gets stuck: records keep flowing on the others, its circuits go
//! offline, the poller runs its recovery steps with back-off, and when the bus frees the
//! circuits come back with nothing lost (the slaves' FIFOs held the records).

mod support;

use std::time::{Duration, Instant};

use pmon_acquire::{AcquireConfig, PrebuiltSimulation, Settings, Source};
use pmon_proto::topic::circuit_id;
use pmon_sim::{ClockMode, SimConfig, Simulator};
use support::*;

const SIM: &str = r#"
seed = 5

[[bus]]
id = 0
clock_hz = 100000

[[bus]]
id = 1

[[bus]]
id = 2
clock_hz = 1000000

[[slave]]
address = 0x10
bus = 0
voltage = 230.0
frequency = 50.0
current = 3.0

[[slave]]
address = 0x11
bus = 0
voltage = 230.0
frequency = 50.0
current = 4.0

[[slave]]
address = 0x10
bus = 1
voltage = 230.0
frequency = 50.0
current = 5.0

[[slave]]
address = 0x12
bus = 1
voltage = 230.0
frequency = 50.0
current = 6.0

[[slave]]
address = 0x10
bus = 2
voltage = 230.0
frequency = 50.0
current = 7.0
"#;

fn circuit(bus: u32, address: u32) -> String {
    circuit_id(0x504D_0000 | bus << 8 | address)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_bus_does_not_stop_the_others_and_recovers() {
    let (_broker, port) = broker().await;
    let seen = subscribe(port).await;
    let sim = SimConfig::from_toml_str(SIM).unwrap();
    let simulator = Simulator::new(&sim, ClockMode::RealTime).unwrap();
    let control = simulator.control.clone();
    let settings = Settings {
        health_interval_s: 1,
        recover_after: 3,
        recovery_backoff_ms: 300,
        ..Settings::default()
    };
    let config = AcquireConfig {
        site: SITE.into(),
        mqtt: mqtt_config(port, "acquire"),
        settings,
        circuits: Vec::new(),
        data_dir: None,
        source: Source::Prebuilt(PrebuiltSimulation::new(sim, simulator)),
        homeassistant: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let acquisition = tokio::spawn(pmon_acquire::run(config, async {
        let _ = stopped.await;
    }));

    let healthy = [circuit(0, 0x10), circuit(0, 0x11), circuit(2, 0x10)];
    let stuck = [circuit(1, 0x10), circuit(1, 0x12)];
    let all: Vec<String> = healthy.iter().chain(&stuck).cloned().collect();
    let started = wait_for(&seen, Duration::from_secs(10), |s| {
        all.iter().all(|c| s.frames.get(c).map_or(0, Vec::len) >= 5)
    })
    .await;
    for c in &all {
        assert!(
            started.frames.get(c).map_or(0, Vec::len) >= 5,
            "{c} never started"
        );
    }

    // Bus 1 stuck for 3 s.
    let stuck_at = Instant::now();
    control.stick_bus(1, Duration::from_secs(3)).unwrap();
    let before: Vec<usize> = healthy.iter().map(|c| started.frames[c].len()).collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = seen.lock().unwrap().clone();
    assert!(control.is_stuck(1).unwrap(), "the test took too long");
    for (c, count) in healthy.iter().zip(before) {
        let now = during.frames[c].len();
        // 2.5 s at 5 blocks/s: records keep flowing on the other buses.
        assert!(
            now >= count + 8,
            "{c}: {count} → {now} records while bus 1 was stuck"
        );
    }
    for c in &stuck {
        let offline = during.availability[c]
            .iter()
            .any(|(at, payload)| *at > stuck_at && payload == "offline");
        assert!(
            offline,
            "{c} did not go offline: {:?}",
            during.availability[c]
        );
    }

    // The bus frees at 3 s; the next recovery step (back-off 0.3, 0.6, 1.2, 2.4 s) finds it.
    let back = wait_for(&seen, Duration::from_secs(10), |s| {
        stuck.iter().all(|c| {
            s.availability[c]
                .last()
                .is_some_and(|(at, payload)| *at > stuck_at && payload == "online")
        }) && stuck.iter().all(|c| {
            s.health
                .get(c)
                .is_some_and(|h| h.bus_recoveries >= 1 && h.online)
        })
    })
    .await;
    for c in &stuck {
        let (_, payload) = back.availability[c].last().unwrap();
        assert_eq!(payload, "online", "{c} did not come back");
        let health = &back.health[c];
        assert!(health.bus_recoveries >= 1, "{health:?}");
        assert!(health.bus_errors >= 3, "{health:?}");
    }
    // Let the drained FIFOs arrive, then check that nothing was lost or repeated anywhere.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let end = seen.lock().unwrap().clone();
    for c in &all {
        let records = &end.frames[c];
        assert_monotonic(c, records);
        for pair in records.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "{c}: a record was lost");
        }
    }
    // The stuck bus's circuits caught up: about as many records as the healthy ones.
    let counts: Vec<usize> = all.iter().map(|c| end.frames[c].len()).collect();
    let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(most - least <= 8, "{counts:?}");
    assert!(stuck_at.elapsed() < Duration::from_secs(20));

    let _ = stop.send(());
    acquisition.await.unwrap().unwrap();
}
