//! Which slaves answer on a bus, and how many transfers fail their CRC.

use std::collections::BTreeMap;

use pmon_bus::{capability, DriverError, Identity, FIRST_ADDRESS, LAST_ADDRESS};
use pmon_meter::DecodeError;
use pmon_proto::topic::circuit_id;

use super::{fixes, Check, Level};
use crate::buses::SlaveBus;

/// What answered on one bus.
#[derive(Debug, Default)]
pub struct Scan {
    /// pmon slaves, by address.
    pub slaves: BTreeMap<u8, Identity>,
    /// Addresses that answered with something that is not a pmon slave.
    pub foreign: Vec<u8>,
    /// pmon slaves speaking a protocol version this pmon does not know.
    pub versions: Vec<(u8, u8)>,
    /// Addresses whose every reply failed its CRC (or did not decode).
    pub corrupt: Vec<(u8, String)>,
    /// Bus errors: (address, message).
    pub bus_errors: Vec<(u8, String)>,
}

/// Probes every address 0x08..=0x77 once (a corrupted answer is retried). Stops after a few
/// bus errors in a row: a stuck bus fails every address alike.
pub fn scan(bus: &mut dyn SlaveBus) -> Scan {
    let mut scan = Scan::default();
    let mut bus_errors_in_a_row = 0;
    for address in FIRST_ADDRESS..=LAST_ADDRESS {
        match bus.probe(address) {
            Ok(identity) => {
                scan.slaves.insert(address, identity);
            }
            Err(DriverError::Nack { .. }) => {}
            Err(DriverError::Decode {
                source: DecodeError::Magic,
                ..
            }) => scan.foreign.push(address),
            Err(DriverError::Decode {
                source: DecodeError::Version(version),
                ..
            }) => scan.versions.push((address, version)),
            Err(error @ DriverError::Decode { .. }) => {
                scan.corrupt.push((address, error.to_string()))
            }
            Err(error) => {
                scan.bus_errors.push((address, error.to_string()));
                bus_errors_in_a_row += 1;
                if bus_errors_in_a_row >= 3 {
                    break;
                }
                continue;
            }
        }
        bus_errors_in_a_row = 0;
    }
    scan
}

/// Capability names for people.
pub fn capabilities(bits: u16) -> String {
    let names = [
        (capability::ENERGY, "energy"),
        (capability::PHASE_ANGLE, "phase-angle"),
        (capability::CALIBRATION, "calibration"),
        (capability::PERSISTENT_CONFIG, "persistent-config"),
        (capability::ADDRESSABLE, "addressable"),
    ];
    let mut list: Vec<String> = names
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect();
    let unknown = names.iter().fold(bits, |rest, (bit, _)| rest & !bit);
    if unknown != 0 {
        list.push(format!("unknown {unknown:#06x}"));
    }
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// One line describing a slave.
pub fn describe(address: u8, identity: &Identity) -> String {
    let [major, minor, patch] = identity.firmware;
    format!(
        "{address:#04x}: circuit {} (serial {:08X}), firmware {major}.{minor}.{patch}, protocol {}, \
         {} S/s, FIFO {} records, capabilities: {}",
        circuit_id(identity.serial),
        identity.serial,
        identity.protocol_version,
        identity.sample_rate,
        identity.fifo_capacity,
        capabilities(identity.capabilities)
    )
}

/// The "slaves on BUS" check from a scan. `serials` collects serial numbers across buses to
/// find boards that would share a circuit id.
pub fn slaves_check(bus: &str, scan: &Scan, serials: &mut BTreeMap<u32, Vec<String>>) -> Check {
    let name = format!("slaves on {bus}");
    let mut details: Vec<String> = scan
        .slaves
        .iter()
        .map(|(address, identity)| describe(*address, identity))
        .collect();
    for (address, identity) in &scan.slaves {
        serials
            .entry(identity.serial)
            .or_default()
            .push(format!("{bus} {address:#04x}"));
    }
    let mut level = Level::Ok;
    let mut fixes_needed: Vec<String> = Vec::new();
    for (address, version) in &scan.versions {
        level = Level::Fail;
        details.push(format!(
            "{address:#04x}: a pmon slave speaking protocol version {version}; this pmon supports \
             version {} only",
            pmon_meter::PROTOCOL_VERSION
        ));
        fixes_needed.push(
            "Upgrade pmon to a release that speaks the slaves' protocol version (or flash the \
             slaves with firmware of this pmon's version)."
                .into(),
        );
    }
    if !scan.corrupt.is_empty() {
        level = Level::Fail;
        for (_, error) in &scan.corrupt {
            details.push(format!("{error} (every retry)"));
        }
        fixes_needed.push(format!(
            "Replies that fail their CRC on every try point to a bus problem. {} {}",
            fixes::CLOCK_STRETCHING,
            fixes::WIRING
        ));
    }
    if !scan.bus_errors.is_empty() {
        level = Level::Fail;
        for (_, error) in &scan.bus_errors {
            details.push(error.clone());
        }
        fixes_needed.push(format!(
            "Bus errors usually mean a stuck bus (a slave holding SDA low) or a wiring fault. \
             Power-cycle the slaves, then check: {}",
            fixes::WIRING
        ));
    }
    if !scan.foreign.is_empty() {
        if level == Level::Ok {
            level = Level::Warn;
        }
        let list: Vec<String> = scan.foreign.iter().map(|a| format!("{a:#04x}")).collect();
        details.push(format!(
            "{} answer(s) but are not pmon slaves (no \"PM\" magic): {}",
            list.len(),
            list.join(", ")
        ));
        fixes_needed.push(
            "Other devices (an RTC, a sensor) may share the bus: pmon ignores them. If one should be \
             a pmon slave, flash pmon firmware on it."
                .into(),
        );
    }
    for (address, identity) in &scan.slaves {
        if identity.serial == 0 || identity.serial == u32::MAX {
            if level == Level::Ok {
                level = Level::Warn;
            }
            details.push(format!(
                "{address:#04x}: serial {:08X} looks unprogrammed (erased EEPROM reads FFFFFFFF)",
                identity.serial
            ));
            fixes_needed.push(
                "Give every board its own serial number when flashing it: the serial is the \
                 circuit id, so boards sharing one mix their data."
                    .into(),
            );
        }
    }
    let summary = if scan.slaves.is_empty() {
        if level != Level::Fail {
            level = Level::Fail;
            fixes_needed.insert(0, fixes::NO_SLAVES.to_string());
        }
        "no pmon slave answers".to_string()
    } else {
        let addresses: Vec<String> = scan.slaves.keys().map(|a| format!("{a:#04x}")).collect();
        format!(
            "{} pmon slave{} found at {}",
            scan.slaves.len(),
            if scan.slaves.len() == 1 { "" } else { "s" },
            addresses.join(", ")
        )
    };
    let mut check = Check::new(name, level, summary).with_details(details);
    if !fixes_needed.is_empty() {
        check = check.with_fix(fixes_needed.join(" "));
    }
    check
}

/// Circuit ids that more than one board claims.
pub fn duplicate_serials_check(serials: &BTreeMap<u32, Vec<String>>) -> Option<Check> {
    let duplicates: Vec<String> = serials
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(serial, places)| format!("serial {serial:08X}: {}", places.join(", ")))
        .collect();
    (!duplicates.is_empty()).then(|| {
        Check::new(
            "circuit ids".into(),
            Level::Warn,
            format!(
                "{} serial number(s) claimed by more than one board",
                duplicates.len()
            ),
        )
        .with_details(duplicates)
        .with_fix(
            "The serial number is the circuit id: two boards with one serial publish as one circuit. \
             Flash each board with its own serial."
                .into(),
        )
    })
}

/// Per-slave result of the CRC sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// FIFO reads asked for.
    pub fetches: u32,
    /// Of those, failed after every retry.
    pub failed: u32,
    /// Bus transactions, retries included.
    pub transactions: u64,
    /// Replies that failed their CRC.
    pub crc_errors: u64,
    /// Transactions not acknowledged.
    pub nacks: u64,
    /// Other bus errors.
    pub bus_errors: u64,
}

impl Sample {
    /// CRC errors per transaction, in percent.
    pub fn crc_percent(&self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.crc_errors as f64 * 100.0 / self.transactions as f64
        }
    }

    fn add(&mut self, other: &Sample) {
        self.fetches += other.fetches;
        self.failed += other.failed;
        self.transactions += other.transactions;
        self.crc_errors += other.crc_errors;
        self.nacks += other.nacks;
        self.bus_errors += other.bus_errors;
    }
}

/// Above this CRC error rate (percent of transfers) the bus deserves attention.
pub const WARN_PERCENT: f64 = 0.1;
/// Above this the bus is unfit: polls fail after their retries and the bus cannot keep up.
pub const FAIL_PERCENT: f64 = 10.0;

/// Reads a slave's FIFO `fetches` times with the production transaction (7 + 36 bytes)
/// without acknowledging anything: the `ack` is the oldest record's own sequence number,
/// which drops nothing (a running acquisition loses no record to the doctor).
pub fn sample(bus: &mut dyn SlaveBus, address: u8, fetches: u32) -> Sample {
    let oldest = match bus.status(address) {
        Ok(status) => status
            .next_seq
            .wrapping_sub(u32::from(status.records_waiting)),
        Err(_) => 0,
    };
    let before = bus.counters(address);
    let mut failed = 0;
    for _ in 0..fetches {
        if bus.fetch(address, oldest).is_err() {
            failed += 1;
        }
    }
    let after = bus.counters(address);
    Sample {
        fetches,
        failed,
        transactions: after.transactions - before.transactions,
        crc_errors: after.crc_errors - before.crc_errors,
        nacks: after.nacks - before.nacks,
        bus_errors: after.bus_errors - before.bus_errors,
    }
}

/// The "CRC error rate on BUS" check.
pub fn crc_check(bus: &str, samples: &[(u8, Sample)], simulated: bool) -> Check {
    let name = format!("CRC error rate on {bus}");
    let mut total = Sample::default();
    for (_, sample) in samples {
        total.add(sample);
    }
    let percent = total.crc_percent();
    let fetches = samples.first().map(|(_, s)| s.fetches).unwrap_or(0);
    let summary = format!(
        "{percent:.2} % ({} CRC errors in {} transfers; {} slave{} × {fetches} FIFO reads)",
        total.crc_errors,
        total.transactions,
        samples.len(),
        if samples.len() == 1 { "" } else { "s" },
    );
    let details: Vec<String> = samples
        .iter()
        .filter(|(_, s)| s.crc_errors + s.nacks + s.bus_errors + u64::from(s.failed) > 0)
        .map(|(address, s)| {
            format!(
                "{address:#04x}: {:.2} % CRC errors ({} of {}), {} NACKs, {} bus errors, {} of {} reads \
                 failed after every retry",
                s.crc_percent(),
                s.crc_errors,
                s.transactions,
                s.nacks,
                s.bus_errors,
                s.failed,
                s.fetches
            )
        })
        .collect();
    let level = if percent > FAIL_PERCENT || total.failed * 10 > total.fetches.max(1) {
        Level::Fail
    } else if percent > WARN_PERCENT || total.failed > 0 {
        Level::Warn
    } else {
        Level::Ok
    };
    let mut check = Check::new(name, level, summary).with_details(details);
    if level != Level::Ok {
        let cause = if simulated {
            "This is a simulated bus: its corrupt_rate and nack_rate settings inject these errors."
                .to_string()
        } else {
            format!("{} {}", fixes::CLOCK_STRETCHING, fixes::WIRING)
        };
        check = check.with_fix(format!(
            "pmon retries every transfer that fails its CRC, so no record is lost, but above \
             {WARN_PERCENT} % the bus wastes time and a corrupted transfer slipping past the CRC \
             becomes thinkable. {cause}"
        ));
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(capabilities(0), "none");
        assert_eq!(capabilities(0x0001 | 0x0010), "energy, addressable");
        assert_eq!(capabilities(0x8001), "energy, unknown 0x8000");
    }

    #[test]
    fn crc_levels() {
        let sample = |crc_errors, transactions| Sample {
            fetches: 50,
            transactions,
            crc_errors,
            ..Sample::default()
        };
        assert_eq!(
            crc_check("b", &[(0x10, sample(0, 50))], false).level,
            Level::Ok
        );
        assert_eq!(
            crc_check(
                "b",
                &[(0x10, sample(0, 50)), (0x11, sample(1, 1001))],
                false
            )
            .level,
            Level::Ok,
            "0.095 % is below the threshold"
        );
        let warn = crc_check("b", &[(0x10, sample(1, 51))], false);
        assert_eq!(warn.level, Level::Warn);
        assert!(warn.fix.as_deref().unwrap().contains("#4884"));
        assert_eq!(warn.details.len(), 1);
        assert_eq!(
            crc_check("b", &[(0x10, sample(20, 70))], true).level,
            Level::Fail
        );
    }

    #[test]
    fn a_bus_without_slaves_fails_with_the_wiring_fix() {
        let check = slaves_check("i2c-1", &Scan::default(), &mut BTreeMap::new());
        assert_eq!(check.level, Level::Fail);
        assert!(check.fix.unwrap().contains("i2cdetect"));
    }
}
