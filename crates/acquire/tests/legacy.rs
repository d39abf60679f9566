//! Legacy prototype slaves through the real poller and publisher: found by the scan or
//! configured, read once a second, halves swapped and negative values accepted, numbered
//! and integrated by the acquisition — energy within 1 % of what the board measured.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_acquire::legacy::derived_serial;
use pmon_acquire::poller::{Poller, Shared};
use pmon_acquire::store::BasesStore;
use pmon_acquire::{LegacyConfig, Settings};
use pmon_bus::{Master, RetryPolicy};
use pmon_proto::frame::flag;
use pmon_proto::topic::circuit_id;
use pmon_sim::{ClockMode, SimBus, SimConfig, SimControl, Simulator};
use support::*;

const SIM: &str = r#"
seed = 3

[[slave]]
address = 0x10
name = "New board"
voltage = 230.0
frequency = 50.0
current = 5.0

[[slave]]
address = 0x20
kind = "legacy"
name = "Old heater"
voltage = 230.0
frequency = 50.0
current = 10.0
schedule = [[7.0, 1.0], [5.0, 0.4]]
swap_rate = 0.2

[[slave]]
address = 0x21
kind = "legacy"
voltage = 230.0
frequency = 50.0
current = 6.0
phase = 20.0
export = true
"#;

/// Unix ms at simulated time zero.
const EPOCH_MS: i64 = 1_764_000_000_000;
const SECONDS: u64 = 300;

fn simulation() -> (SimBus, SimControl) {
    let config = SimConfig::from_toml_str(SIM).unwrap();
    let (mut buses, control) = Simulator::new(&config, ClockMode::Fast)
        .unwrap()
        .into_parts();
    (buses.remove(0).1, control)
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_boards_are_read_numbered_and_integrated() {
    let (_broker, port) = broker().await;
    let seen = subscribe(port).await;
    let publisher = publisher(port).await;
    let (bus, control) = simulation();
    let clock = bus.clock().clone();
    let wall_clock = clock.clone();
    let master = Master::new(bus, RetryPolicy::default()).with_sleep(clock.sleeper());
    let settings = Settings {
        // 0x20 is configured (with a name); 0x21 must be found by the scan.
        legacy: vec![LegacyConfig {
            bus: "sim-0".into(),
            address: 0x20,
            serial: None,
            name: Some("Old heater".into()),
        }],
        ..Settings::default()
    };
    let shared = Shared {
        settings,
        names: Arc::new(BTreeMap::new()),
        store: Arc::new(Mutex::new(BasesStore::in_memory())),
        publisher: publisher.clone(),
    };
    let mut poller = Poller::new("sim-0".into(), master, shared)
        .with_wall_clock(move || EPOCH_MS + wall_clock.now().as_millis() as i64);

    // A pmon slave answers after its first block; legacy boards after their first reading.
    control.advance(Duration::from_millis(1500));
    poller.scan();
    // The board's truth at each poll, by simulated ms.
    let mut truth: Vec<(i64, f64, f64)> = Vec::new();
    for _ in 0..SECONDS * 5 {
        control.advance(Duration::from_millis(200));
        poller.poll_all();
        let heater = control.legacy_truth(0, 0x20).unwrap().energy;
        let export = control.legacy_truth(0, 0x21).unwrap().energy;
        truth.push((
            EPOCH_MS + clock.now().as_millis() as i64,
            heater.import_wh,
            export.export_wh,
        ));
    }
    let heater = circuit_id(derived_serial("sim-0", 0x20));
    let solar = circuit_id(derived_serial("sim-0", 0x21));
    let snapshot = wait_for(&seen, Duration::from_secs(10), |s| {
        s.frames.get(&heater).map_or(0, Vec::len) >= SECONDS as usize - 5
            && s.frames.get(&solar).map_or(0, Vec::len) >= SECONDS as usize - 5
            && s.info.contains_key(&solar)
    })
    .await;

    // Both found; one reading a second, numbered one by one, flagged as integrated.
    for circuit in [&heater, &solar] {
        let records = &snapshot.frames[circuit];
        assert!(
            records.len() >= SECONDS as usize - 5,
            "{circuit}: {}",
            records.len()
        );
        assert_monotonic(circuit, records);
        for pair in records.windows(2) {
            assert_eq!(
                pair[1].seq,
                pair[0].seq + 1,
                "{circuit}: one number per reading"
            );
        }
        assert!(records
            .iter()
            .all(|r| r.flags & flag::ENERGY_INTEGRATED != 0));
        let info = &snapshot.info[circuit];
        assert_eq!(info.protocol, "legacy");
        assert_eq!(info.firmware, "prototype");
    }
    assert_eq!(snapshot.info[&heater].name, "Old heater");
    assert_eq!(snapshot.info[&heater].address, 0x20);
    assert_eq!(snapshot.info[&heater].sample_rate, 1800);
    // The pmon board on the same bus is unaffected.
    let board = circuit_id(0x504D_0010);
    assert!(snapshot.frames.get(&board).map_or(0, Vec::len) > 1000);

    // Swapped halves happened and every reading was still understood.
    let truth_heater = control.legacy_truth(0, 0x20).unwrap();
    assert!(truth_heater.swaps > 10, "{} swaps", truth_heater.swaps);
    assert_eq!(poller.master().counters(0x20).crc_errors, 0);
    // 0x21 was found by the scan: its Identity probe failed its CRC (three tries), once.
    assert_eq!(poller.master().counters(0x21).crc_errors, 3);

    // Negative numbers: the exporting board.
    let exporting = &snapshot.frames[&solar];
    let last = exporting.last().unwrap();
    assert!(last.real_power_mw < -1_000_000, "{last:?}");
    assert!(last.power_factor < 0 && last.reactive_power_mvar < 0 && last.phase_angle < 0);
    assert_eq!(last.energy_import_mwh, 0);

    // Energy within 1 % of what the board measured between the first and last reading.
    let truth_at = |ts: i64| {
        truth
            .iter()
            .min_by_key(|(t, _, _)| (t - ts).abs())
            .copied()
            .unwrap()
    };
    let check =
        |records: &[pmon_proto::FrameRecord], pick: fn(&(i64, f64, f64)) -> f64, export: bool| {
            let (first, last) = (records.first().unwrap(), records.last().unwrap());
            let integrated_wh = if export {
                (last.energy_export_mwh - first.energy_export_mwh) as f64 / 1000.0
            } else {
                (last.energy_import_mwh - first.energy_import_mwh) as f64 / 1000.0
            };
            let measured_wh = pick(&truth_at(last.ts_ms)) - pick(&truth_at(first.ts_ms));
            let error = (integrated_wh - measured_wh).abs() / measured_wh;
            assert!(
                error < 0.01,
                "integrated {integrated_wh:.2} Wh, the board measured {measured_wh:.2} Wh"
            );
            integrated_wh
        };
    let heater_wh = check(&snapshot.frames[&heater], |t| t.1, false);
    let solar_wh = check(exporting, |t| t.2, true);
    // And W × time: 2300 W × 7/12 + 920 W × 5/12 for the heater, about 1297 W for the export.
    assert!(
        heater_wh > 100.0 && solar_wh > 90.0,
        "{heater_wh} {solar_wh}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_totals_continue_after_an_acquisition_restart() {
    let (_broker, port) = broker().await;
    let seen = subscribe(port).await;
    let publisher = publisher(port).await;
    let dir = tempfile::tempdir().unwrap();
    let (bus, control) = simulation();
    let clock = bus.clock().clone();
    let make = |bus: SimBus| {
        let wall_clock = clock.clone();
        let master = Master::new(bus, RetryPolicy::default()).with_sleep(clock.sleeper());
        let shared = Shared {
            settings: Settings::default(),
            names: Arc::new(BTreeMap::new()),
            store: Arc::new(Mutex::new(BasesStore::open(dir.path()).unwrap())),
            publisher: publisher.clone(),
        };
        let mut poller = Poller::new("sim-0".into(), master, shared)
            .with_wall_clock(move || EPOCH_MS + wall_clock.now().as_millis() as i64);
        poller.scan();
        poller
    };
    control.advance(Duration::from_millis(1500));
    let mut first = make(bus);
    for _ in 0..100 {
        control.advance(Duration::from_millis(200));
        first.poll_all();
    }
    first.save_bases();
    let mut second = make(first.into_bus());
    for _ in 0..100 {
        control.advance(Duration::from_millis(200));
        second.poll_all();
    }
    let solar = circuit_id(derived_serial("sim-0", 0x21));
    let snapshot = wait_for(&seen, Duration::from_secs(10), |s| {
        s.frames.get(&solar).map_or(0, Vec::len) >= 38
    })
    .await;
    let records = &snapshot.frames[&solar];
    assert!(records.len() >= 38, "{}", records.len());
    assert_monotonic(&solar, records);
    // A clean stop continues exactly: no number skipped, the total carried over.
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    let state = std::fs::read_to_string(dir.path().join("acquisition-legacy.json")).unwrap();
    assert!(state.contains(&solar), "{state}");
}
