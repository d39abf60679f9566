//! The real driver against the real simulator: exactly-once delivery and measured values.

mod common;

use std::time::Duration;

use common::{bus, slave, within, Rig};
use pmon_bus::Master;
use pmon_sim::SlaveConfig;

fn varied_loads() -> Vec<SlaveConfig> {
    let mut export = slave(0x12, 14.0, 0.0);
    export.export = true;
    let mut harmonic = slave(0x13, 4.0, -10.0);
    harmonic.harmonics = vec![(3, 0.3), (5, 0.15)];
    harmonic.current_range = 10.0;
    let mut sixty = slave(0x14, 8.0, 20.0);
    sixty.frequency = 60.0;
    sixty.voltage = 120.0;
    vec![
        slave(0x10, 12.5, 30.0),
        slave(0x11, 10.0, 0.0),
        export,
        harmonic,
        sixty,
        slave(0x15, 3.0, -45.0),
    ]
}

#[test]
fn every_record_arrives_once_in_order_with_the_configured_values() {
    let mut rig = Rig::new(varied_loads(), bus(400_000, 150));
    rig.run(Duration::from_secs(120), Duration::from_millis(500));
    rig.finish();
    assert!(rig.errors.is_empty(), "{:?}", rig.errors);
    for address in rig.addresses.clone() {
        rig.assert_exactly_once(address);
        let records = rig.records(address);
        assert!(
            records.len() >= 590,
            "{address:#04x}: {} records in 120 s",
            records.len()
        );
        let identity = rig.master.identify(address).expect("identify");
        let want = rig.control.expected(address).expect("slave");
        for record in &records {
            let q = record.quantities(identity.scales);
            let context = format!("{address:#04x} seq {}: {q:?} vs {want:?}", record.seq);
            assert!(within(q.voltage, want.voltage, 0.01), "V {context}");
            assert!(within(q.current, want.current, 0.01), "I {context}");
            assert!(within(q.frequency, want.frequency, 0.01), "f {context}");
            assert!(within(q.real_power, want.real_power, 0.01), "P {context}");
            assert_eq!(q.real_power < 0.0, want.real_power < 0.0, "sign {context}");
        }
    }
}

#[test]
fn energy_in_records_matches_power_over_time() {
    let mut rig = Rig::new(
        vec![slave(0x10, 10.0, 0.0), {
            let mut s = slave(0x11, 10.0, 0.0);
            s.export = true;
            s
        }],
        bus(400_000, 150),
    );
    rig.run(Duration::from_secs(180), Duration::from_secs(1));
    rig.finish();
    for (address, exporting) in [(0x10u8, false), (0x11, true)] {
        let records = rig.records(address);
        let last = records.last().expect("records");
        let counted = if exporting {
            last.energy_export
        } else {
            last.energy_import
        };
        let counted_wh = f64::from(counted) * 0.1;
        let truth = rig.control.energy_wh(address).expect("slave");
        let truth_wh = if exporting {
            truth.export_wh
        } else {
            truth.import_wh
        };
        // 2300 W for ~180 s = 115 Wh; the record lags the truth by at most a block or two.
        assert!(
            (counted_wh - truth_wh).abs() < 0.5,
            "{counted_wh} vs {truth_wh}"
        );
        assert!(
            (truth_wh - 2300.0 * 180.0 / 3600.0).abs() < 2.5,
            "{truth_wh}"
        );
    }
}

#[test]
fn scan_identify_and_configure_a_simulated_bus() {
    let mut rig = Rig::new(varied_loads(), bus(400_000, 150));
    assert_eq!(rig.master.scan(), vec![0x10, 0x11, 0x12, 0x13, 0x14, 0x15]);
    let identity = rig.master.identify(0x14).expect("identify");
    assert_eq!(identity.serial, 0x504D_0014);
    assert_eq!(identity.sample_rate, 1800);
    let mut config = rig.master.read_config(0x14).expect("config");
    assert_eq!((config.nominal_frequency, config.block_cycles), (60, 12));
    config.voltage_gain_ppm = 1_100_000;
    rig.master
        .write_config(0x14, &config)
        .expect("write config");
    rig.run(Duration::from_secs(3), Duration::from_millis(500));
    let last = rig.records(0x14).last().copied().expect("records");
    let volts = last.quantities(identity.scales).voltage;
    assert!(within(volts, 132.0, 0.01), "calibrated voltage {volts}");
}

#[test]
fn a_new_master_resumes_from_what_the_slave_still_holds() {
    let mut rig = Rig::new(vec![slave(0x10, 5.0, 0.0)], bus(400_000, 150));
    rig.run(Duration::from_secs(2), Duration::from_secs(1));
    let delivered = rig.seqs(0x10);
    // The acquisition restarts: a fresh master with a fresh cursor, on the same bus.
    let Rig { master, .. } = rig;
    let mut master = Master::new(master.into_inner(), pmon_bus::RetryPolicy::default());
    let mut cursor = pmon_bus::Cursor::new();
    let mut out = Vec::new();
    master
        .drain(0x10, &mut cursor, 64, &mut out)
        .expect("drain");
    let first = match out.first() {
        Some(pmon_bus::DrainEvent::Record(record)) => record.seq,
        other => panic!("expected a record, got {other:?}"),
    };
    // The last record delivered stays in the FIFO until acknowledged: it comes again, and
    // nothing before it (the acquisition dedups with its persisted sequence number).
    assert_eq!(Some(&first), delivered.last());
}
