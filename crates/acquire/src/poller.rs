//! One poller per bus, on its own thread: it finds the slaves, drains their FIFOs every
//! poll interval, reads legacy prototype slaves once a second, recovers a stuck bus, and
//! hands the results to the [`Publisher`].
//!
//! Buses are independent: each poller owns its bus and thread, so a stuck or slow bus
//! delays only its own circuits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use embedded_hal::i2c::I2c;
use pmon_bus::{Cursor, DrainEvent, DriverError, Identity, Master};
use pmon_proto::frame::FrameRecord;
use pmon_proto::health::{CircuitInfo, Health};
use pmon_proto::state::rfc3339_ms;
use pmon_proto::topic::{circuit_id, CircuitTopic};
use tracing::{info, warn};

use crate::circuit::CircuitTracker;
use crate::config::{BusPolicy, LegacyConfig, Settings};
use crate::legacy::{derived_serial, LegacyTracker};
use crate::mqtt::Publisher;
use crate::stop::StopSignal;
use crate::store::BasesStore;

/// Most records taken from one slave in one poll; the rest wait for the next.
const MAX_RECORDS_PER_POLL: usize = 256;

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A recovery step for a stuck bus: gets the bus and may replace it (reopen a device) or
/// talk to it (a bridge's `RESET`). `Err` says why it did not work.
pub type Recovery<I2C> = Box<dyn FnMut(&mut I2C) -> Result<(), String> + Send>;

/// Where the poller reads the wall clock (Unix ms); tests on a fast simulated clock pass
/// their own.
pub type WallClock = Box<dyn Fn() -> i64 + Send>;

struct Session {
    circuit: String,
    identity: Identity,
    cursor: Cursor,
    tracker: CircuitTracker,
    online: bool,
    failures: u32,
    polls: u64,
    dropped: u64,
    fifo_overflows: u64,
}

struct LegacySession {
    circuit: String,
    tracker: LegacyTracker,
    /// Whether it was configured (never dropped) or found by the scan.
    configured: bool,
    online: bool,
    failures: u32,
    polls: u64,
    dropped: u64,
    next_due_ms: i64,
    announced: bool,
    name: String,
    serial: u32,
}

/// A bus's own state: consecutive bus errors and recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusHealth {
    /// Bus errors in a row, across its slaves (a NACK or a good transfer ends the run).
    pub consecutive_errors: u32,
    /// The bus is stuck: its circuits are offline and polls wait for a recovery.
    pub stuck: bool,
    /// Recovery steps run.
    pub recoveries: u64,
    /// Of which the step itself failed (could not reopen the device, no bridge reply).
    pub failed_recoveries: u64,
}

/// Everything one bus's poller shares with the rest of the service.
#[derive(Clone)]
pub struct Shared {
    /// Timing and limits.
    pub settings: Settings,
    /// Names by serial number.
    pub names: Arc<BTreeMap<u32, String>>,
    /// Persisted bases.
    pub store: Arc<Mutex<BasesStore>>,
    /// Where results go.
    pub publisher: Publisher,
}

/// Polls the slaves of one bus.
pub struct Poller<I2C> {
    bus: String,
    master: Master<I2C>,
    shared: Shared,
    sessions: BTreeMap<u8, Session>,
    legacy: BTreeMap<u8, LegacySession>,
    legacy_configs: Vec<LegacyConfig>,
    policy: BusPolicy,
    recovery: Option<Recovery<I2C>>,
    clock: WallClock,
    health: BusHealth,
    next_recovery: Option<Instant>,
    recovery_wait: Duration,
    /// Operations that went through the bus (anything but a bus error), to tell whether a
    /// recovery helped.
    progress: u64,
}

impl<I2C: I2c> Poller<I2C> {
    /// A poller for the bus called `bus`, with the default policy of `shared.settings` and
    /// the legacy slaves configured for `bus`. The master's retry policy is kept.
    pub fn new(bus: String, master: Master<I2C>, shared: Shared) -> Self {
        let policy = BusPolicy {
            retry: master.policy(),
            ..shared.settings.policy(None)
        };
        let legacy_configs = shared.settings.legacy_on(&bus);
        Poller {
            bus,
            master,
            sessions: BTreeMap::new(),
            legacy: BTreeMap::new(),
            legacy_configs,
            recovery_wait: policy.recovery_backoff,
            policy,
            recovery: None,
            clock: Box::new(now_ms),
            health: BusHealth::default(),
            next_recovery: None,
            progress: 0,
            shared,
        }
    }

    /// Sets the retry and recovery policy (the master's retries included).
    pub fn with_policy(mut self, policy: BusPolicy) -> Self {
        self.master.set_policy(policy.retry);
        self.recovery_wait = policy.recovery_backoff;
        self.policy = policy;
        self
    }

    /// Sets the recovery step run when the bus is stuck. Without one the poller only
    /// waits and tries again, with the same back-off.
    pub fn with_recovery(
        mut self,
        recovery: impl FnMut(&mut I2C) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.recovery = Some(Box::new(recovery));
        self
    }

    /// Adds legacy slaves at known addresses (a simulator's `kind = "legacy"` boards).
    pub fn with_legacy(mut self, configs: impl IntoIterator<Item = LegacyConfig>) -> Self {
        for config in configs {
            if !self
                .legacy_configs
                .iter()
                .any(|c| c.address == config.address)
            {
                self.legacy_configs.push(config);
            }
        }
        self
    }

    /// Replaces the wall clock (Unix ms) used for timestamps and legacy reading times.
    pub fn with_wall_clock(mut self, clock: impl Fn() -> i64 + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The bus's health.
    pub fn bus_health(&self) -> BusHealth {
        self.health
    }

    /// Runs until `stop` is set, then saves every circuit's bases.
    pub fn run(mut self, stop: &StopSignal) {
        let settings = self.shared.settings.clone();
        let interval = settings.poll_interval();
        let rescan = Duration::from_secs(settings.rescan_interval_s);
        let health = Duration::from_secs(settings.health_interval_s);
        let mut next_scan = Instant::now();
        let mut next_health = Instant::now() + health;
        let mut next_poll = Instant::now();
        while !stop.is_stopped() {
            let now = Instant::now();
            if self.health.stuck {
                if self.next_recovery.is_none_or(|at| now >= at) {
                    let before = self.progress;
                    self.recover();
                    if self.sessions.is_empty() && self.legacy.is_empty() {
                        self.scan();
                    } else {
                        self.poll_all();
                    }
                    self.after_recovery(self.progress > before);
                }
            } else {
                if now >= next_scan {
                    self.scan();
                    next_scan = now + rescan;
                }
                self.poll_all();
            }
            if Instant::now() >= next_health {
                self.publish_health();
                next_health += health;
            }
            next_poll += interval;
            if next_poll < Instant::now() {
                // Fell behind (a slow bus, a stuck bus): skip ahead rather than burst.
                next_poll = Instant::now() + interval;
            }
            if stop.wait_until(next_poll) {
                break;
            }
        }
        self.save_bases();
        info!(bus = %self.bus, "poller stopped");
    }

    /// Counts one operation's outcome towards the bus's run of errors; enters the stuck
    /// state after the policy's number in a row.
    fn note(&mut self, result: Result<(), &DriverError>) {
        match result {
            Err(DriverError::Bus { .. }) => {
                self.health.consecutive_errors += 1;
                if !self.health.stuck && self.health.consecutive_errors >= self.policy.recover_after
                {
                    self.enter_stuck();
                }
            }
            // Anything else went through the bus: it works.
            _ => {
                self.health.consecutive_errors = 0;
                self.progress += 1;
            }
        }
    }

    fn enter_stuck(&mut self) {
        self.health.stuck = true;
        self.next_recovery = None;
        self.recovery_wait = self.policy.recovery_backoff;
        warn!(bus = %self.bus, errors = self.health.consecutive_errors, "bus stuck: its circuits are offline until it recovers");
        let publisher = &self.shared.publisher;
        for session in self.sessions.values_mut() {
            if session.online {
                session.online = false;
                publisher.availability(&session.circuit, false);
            }
        }
        for session in self.legacy.values_mut() {
            if session.online {
                session.online = false;
                publisher.availability(&session.circuit, false);
            }
        }
    }

    /// Runs the recovery step (bridge `RESET`, reopening the device) and counts it.
    pub fn recover(&mut self) {
        self.health.recoveries += 1;
        let outcome = match &mut self.recovery {
            Some(step) => step(self.master.bus_mut()),
            None => Ok(()),
        };
        match outcome {
            Ok(()) => {
                info!(bus = %self.bus, recoveries = self.health.recoveries, "bus recovery step done")
            }
            Err(error) => {
                self.health.failed_recoveries += 1;
                warn!(bus = %self.bus, %error, "bus recovery step failed");
            }
        }
        self.health.consecutive_errors = 0;
    }

    /// After a recovery and a round of polls (or a scan): if nothing went through the bus,
    /// wait longer before the next step.
    fn after_recovery(&mut self, working: bool) {
        if working {
            self.health.stuck = false;
            self.next_recovery = None;
            self.recovery_wait = self.policy.recovery_backoff;
            info!(bus = %self.bus, "bus recovered");
        } else {
            self.next_recovery = Some(Instant::now() + self.recovery_wait);
            self.recovery_wait = (self.recovery_wait * 2).min(self.policy.recovery_backoff_max);
        }
    }

    /// Looks for slaves not yet known, and for boards swapped at a known address; starts
    /// the configured legacy slaves. Stops early if the bus is stuck.
    pub fn scan(&mut self) {
        for config in self.legacy_configs.clone() {
            if !self.legacy.contains_key(&config.address) {
                self.add_legacy(config.address, Some(&config));
            }
        }
        for address in pmon_bus::FIRST_ADDRESS..=pmon_bus::LAST_ADDRESS {
            if self.health.consecutive_errors >= self.policy.recover_after {
                // The bus is stuck (or still is): the recovery comes first.
                return;
            }
            if self.legacy.contains_key(&address) {
                // Reading it as a pmon slave would take one of its halves.
                continue;
            }
            let probed = self.master.probe(address);
            self.note(probed.as_ref().map(|_| ()));
            let identity = match probed {
                Ok(identity) => identity,
                Err(DriverError::Nack { .. }) => continue,
                Err(error @ DriverError::Decode { .. }) => {
                    if self.sessions.contains_key(&address) {
                        warn!(bus = %self.bus, address, %error, "a known slave answered the scan with a bad identity");
                    } else if self.shared.settings.legacy_detect
                        && self.master.legacy_probe(address)
                    {
                        info!(bus = %self.bus, address, "a legacy prototype slave answers here");
                        self.add_legacy(address, None);
                    }
                    continue;
                }
                Err(_) => continue,
            };
            if let Some(session) = self.sessions.get(&address) {
                if session.identity.serial == identity.serial {
                    continue;
                }
                info!(bus = %self.bus, address, old = %session.circuit, "a different board now answers at this address");
                self.save_session(address);
            }
            // A board given a new address (`pmon slave set-address`) is the same circuit: its
            // session moves with it instead of reporting the old address offline.
            let moved_from = self
                .sessions
                .iter()
                .find(|(old, session)| {
                    **old != address && session.identity.serial == identity.serial
                })
                .map(|(old, _)| *old);
            if let Some(old) = moved_from {
                info!(bus = %self.bus, from = old, to = address, "a board moved to a new address");
                self.save_session(old);
                self.sessions.remove(&old);
            }
            self.add_session(address, identity);
        }
    }

    fn add_session(&mut self, address: u8, identity: Identity) {
        let circuit = circuit_id(identity.serial);
        let resume = self
            .shared
            .store
            .lock()
            .ok()
            .and_then(|store| store.get(&circuit));
        let cursor = match resume {
            Some(bases) => Cursor::resume(bases.last_slave_seq.wrapping_add(1)),
            None => Cursor::new(),
        };
        let nominal_block_us = 200_000;
        let tracker = CircuitTracker::new(
            identity.scales,
            identity.sample_rate,
            nominal_block_us,
            resume,
        );
        let name = self
            .shared
            .names
            .get(&identity.serial)
            .cloned()
            .unwrap_or_else(|| format!("{} 0x{address:02x}", self.bus));
        let [major, minor, patch] = identity.firmware;
        let info = CircuitInfo {
            id: circuit.clone(),
            name: name.clone(),
            bus: self.bus.clone(),
            address,
            serial: identity.serial,
            firmware: format!("{major}.{minor}.{patch}"),
            protocol: format!("pmon-{}", identity.protocol_version),
            sample_rate: identity.sample_rate as u32,
        };
        info!(bus = %self.bus, address, circuit = %circuit, name = %name, firmware = %info.firmware, "slave found");
        let publisher = &self.shared.publisher;
        publisher.announce(&info);
        publisher.availability(&circuit, true);
        self.sessions.insert(
            address,
            Session {
                circuit,
                identity,
                cursor,
                tracker,
                online: true,
                failures: 0,
                polls: 0,
                dropped: 0,
                fifo_overflows: 0,
            },
        );
    }

    fn add_legacy(&mut self, address: u8, config: Option<&LegacyConfig>) {
        let serial = config
            .and_then(|c| c.serial)
            .unwrap_or_else(|| derived_serial(&self.bus, address));
        let circuit = circuit_id(serial);
        let resume = self
            .shared
            .store
            .lock()
            .ok()
            .and_then(|store| store.get_legacy(&circuit));
        let name = config
            .and_then(|c| c.name.clone())
            .or_else(|| self.shared.names.get(&serial).cloned())
            .unwrap_or_else(|| format!("{} 0x{address:02x}", self.bus));
        info!(bus = %self.bus, address, circuit = %circuit, name = %name, "legacy slave: the acquisition numbers its readings and integrates its energy");
        self.legacy.insert(
            address,
            LegacySession {
                circuit,
                tracker: LegacyTracker::new(resume, self.shared.settings.legacy_interval_ms),
                configured: config.is_some(),
                online: false,
                failures: 0,
                polls: 0,
                dropped: 0,
                next_due_ms: (self.clock)(),
                announced: false,
                name,
                serial,
            },
        );
    }

    /// Drains every known slave once, and reads the legacy slaves that are due.
    pub fn poll_all(&mut self) {
        let addresses: Vec<u8> = self.sessions.keys().copied().collect();
        for address in addresses {
            if self.health.consecutive_errors >= self.policy.recover_after {
                // Stuck: the others would only fail too, each after its retries.
                return;
            }
            self.poll(address);
        }
        if self.health.consecutive_errors >= self.policy.recover_after {
            return;
        }
        let now = (self.clock)();
        let due: Vec<u8> = self
            .legacy
            .iter()
            .filter(|(_, s)| s.next_due_ms <= now)
            .map(|(a, _)| *a)
            .collect();
        for address in due {
            self.poll_legacy(address);
        }
    }

    fn poll(&mut self, address: u8) {
        let Some(session) = self.sessions.get_mut(&address) else {
            return;
        };
        let mut events = Vec::new();
        let result = self.master.drain(
            address,
            &mut session.cursor,
            MAX_RECORDS_PER_POLL,
            &mut events,
        );
        session.polls += 1;
        let fetched_ms = (self.clock)();
        let mut records: Vec<FrameRecord> = Vec::with_capacity(events.len());
        let mut persist = false;
        for event in events {
            match event {
                DrainEvent::Restarted => {
                    // A board's power-on is reported as a restart too; only a known one is news.
                    if session.tracker.bases().is_some() {
                        info!(bus = %self.bus, address, circuit = %session.circuit, "slave restarted");
                    }
                    session.tracker.restarted();
                }
                DrainEvent::Record(record) => {
                    if let Some((converted, changed)) = session.tracker.accept(&record, fetched_ms)
                    {
                        records.push(converted);
                        persist |= changed;
                    }
                }
            }
        }
        let publisher = &self.shared.publisher;
        if !records.is_empty() && !publisher.frame(&session.circuit, records) {
            session.dropped += 1;
        }
        if persist {
            save(&self.shared.store, session);
        }
        let change = reachability(
            &mut session.online,
            &mut session.failures,
            result.is_ok(),
            self.health.stuck,
            self.shared.settings.offline_after,
        );
        match (change, &result) {
            (Some(true), _) => {
                info!(bus = %self.bus, address, circuit = %session.circuit, "slave back online");
                publisher.availability(&session.circuit, true);
            }
            (Some(false), Err(error)) => {
                warn!(bus = %self.bus, address, circuit = %session.circuit, %error, "slave offline");
                publisher.availability(&session.circuit, false);
            }
            _ => {}
        }
        self.note(result.as_ref().map(|_| ()));
    }

    fn poll_legacy(&mut self, address: u8) {
        let result = self.master.legacy_read(address);
        let fetched_ms = (self.clock)();
        let interval = self.shared.settings.legacy_interval_ms as i64;
        let Some(session) = self.legacy.get_mut(&address) else {
            return;
        };
        session.polls += 1;
        session.next_due_ms += interval;
        if session.next_due_ms <= fetched_ms {
            session.next_due_ms = fetched_ms + interval;
        }
        let publisher = &self.shared.publisher;
        if let Ok(reading) = &result {
            if !session.announced {
                session.announced = true;
                let info = CircuitInfo {
                    id: session.circuit.clone(),
                    name: session.name.clone(),
                    bus: self.bus.clone(),
                    address,
                    serial: session.serial,
                    firmware: "prototype".into(),
                    protocol: "legacy".into(),
                    sample_rate: reading.sps,
                };
                publisher.announce(&info);
            }
            let (record, save) = session.tracker.accept(reading, fetched_ms);
            if !publisher.frame(&session.circuit, vec![record]) {
                session.dropped += 1;
            }
            if let Some(bases) = save {
                save_legacy(&self.shared.store, &session.circuit, bases);
            }
        }
        let change = reachability(
            &mut session.online,
            &mut session.failures,
            result.is_ok(),
            self.health.stuck,
            self.shared.settings.offline_after,
        );
        match (change, &result) {
            (Some(true), _) => {
                info!(bus = %self.bus, address, circuit = %session.circuit, "legacy slave online");
                publisher.availability(&session.circuit, true);
            }
            (Some(false), Err(error)) => {
                warn!(bus = %self.bus, address, circuit = %session.circuit, %error, "legacy slave offline");
                publisher.availability(&session.circuit, false);
            }
            _ => {}
        }
        // A detected slave that went away for good (a pmon board now answers there, say)
        // is dropped after a long silence; the scan finds whatever is there now.
        if !session.configured && session.failures >= 30 {
            if let Some(bases) = session.tracker.bases() {
                save_legacy(&self.shared.store, &session.circuit, bases);
            }
            self.legacy.remove(&address);
        }
        self.note(result.as_ref().map(|_| ()));
    }

    fn publish_health(&mut self) {
        let addresses: Vec<u8> = self.sessions.keys().copied().collect();
        for address in addresses {
            let status = if self.health.stuck {
                None
            } else {
                self.master.status(address).ok()
            };
            let counters = self.master.counters(address);
            let Some(session) = self.sessions.get_mut(&address) else {
                continue;
            };
            if let Some(status) = status {
                session.fifo_overflows = status.fifo_overflows as u64;
            }
            let health = Health {
                ts: rfc3339_ms((self.clock)()),
                online: session.online,
                polls: session.polls,
                transactions: counters.transactions,
                crc_errors: counters.crc_errors,
                nacks: counters.nacks,
                bus_errors: counters.bus_errors,
                retries: counters.retries,
                lost_records: session.tracker.lost(),
                fifo_overflows: session.fifo_overflows,
                restarts: session.tracker.restarts(),
                dropped_frames: session.dropped,
                last_seen: session.tracker.last_ts_ms().map(rfc3339_ms),
                bus_recoveries: self.health.recoveries,
            };
            let publisher = &self.shared.publisher;
            publisher.transient(
                publisher
                    .topics()
                    .circuit(&session.circuit, CircuitTopic::Health),
                health.to_json().into_bytes(),
            );
        }
        for (&address, session) in &self.legacy {
            let counters = self.master.counters(address);
            let health = Health {
                ts: rfc3339_ms((self.clock)()),
                online: session.online,
                polls: session.polls,
                transactions: counters.transactions,
                crc_errors: counters.crc_errors,
                nacks: counters.nacks,
                bus_errors: counters.bus_errors,
                retries: counters.retries,
                lost_records: session.tracker.lost(),
                fifo_overflows: 0,
                restarts: 0,
                dropped_frames: session.dropped,
                last_seen: session.tracker.last_ts_ms().map(rfc3339_ms),
                bus_recoveries: self.health.recoveries,
            };
            let publisher = &self.shared.publisher;
            publisher.transient(
                publisher
                    .topics()
                    .circuit(&session.circuit, CircuitTopic::Health),
                health.to_json().into_bytes(),
            );
        }
    }

    fn save_session(&mut self, address: u8) {
        if let Some(session) = self.sessions.get(&address) {
            save(&self.shared.store, session);
        }
    }

    /// Gives the bus back, for a new poller in tests and tools.
    pub fn into_bus(self) -> I2C {
        self.master.into_inner()
    }

    /// The master, for counters.
    pub fn master(&self) -> &Master<I2C> {
        &self.master
    }

    /// The driver, mutably: for maintenance between polls (readdressing a board, say).
    pub fn master_mut(&mut self) -> &mut Master<I2C> {
        &mut self.master
    }

    /// Saves every circuit's bases to the store (as `run` does when it stops); legacy
    /// circuits save their exact state, so that a clean restart continues exactly.
    pub fn save_bases(&mut self) {
        for session in self.sessions.values() {
            save(&self.shared.store, session);
        }
        for session in self.legacy.values() {
            if let Some(bases) = session.tracker.bases() {
                save_legacy(&self.shared.store, &session.circuit, bases);
            }
        }
    }
}

/// Counts one poll's outcome against a slave; returns its new availability when it changes.
/// A slave goes offline after `offline_after` failed polls in a row, or at once on a stuck bus.
fn reachability(
    online: &mut bool,
    failures: &mut u32,
    answered: bool,
    stuck: bool,
    offline_after: u32,
) -> Option<bool> {
    if answered {
        *failures = 0;
        let back = !*online;
        *online = true;
        return back.then_some(true);
    }
    *failures += 1;
    if *online && (stuck || *failures >= offline_after) {
        *online = false;
        return Some(false);
    }
    None
}

fn save(store: &Mutex<BasesStore>, session: &Session) {
    let Some(bases) = session.tracker.bases() else {
        return;
    };
    match store.lock() {
        Ok(mut store) => {
            if let Err(error) = store.put(&session.circuit, bases) {
                warn!(%error, "cannot save acquisition state");
            }
        }
        Err(_) => warn!("acquisition state store poisoned; not saved"),
    }
}

fn save_legacy(store: &Mutex<BasesStore>, circuit: &str, bases: crate::legacy::LegacyBases) {
    match store.lock() {
        Ok(mut store) => {
            if let Err(error) = store.put_legacy(circuit, bases) {
                warn!(%error, "cannot save legacy circuit state");
            }
        }
        Err(_) => warn!("acquisition state store poisoned; not saved"),
    }
}

#[cfg(test)]
mod tests {
    use super::reachability;

    #[test]
    fn a_slave_goes_offline_after_the_limit_or_at_once_on_a_stuck_bus_and_comes_back() {
        let (mut online, mut failures) = (true, 0);
        assert_eq!(
            reachability(&mut online, &mut failures, false, false, 3),
            None
        );
        assert_eq!(
            reachability(&mut online, &mut failures, false, false, 3),
            None
        );
        assert_eq!(
            reachability(&mut online, &mut failures, false, false, 3),
            Some(false)
        );
        assert_eq!(
            reachability(&mut online, &mut failures, false, false, 3),
            None
        );
        assert_eq!(
            reachability(&mut online, &mut failures, true, false, 3),
            Some(true)
        );
        assert_eq!(failures, 0);
        assert_eq!(
            reachability(&mut online, &mut failures, true, false, 3),
            None
        );
        assert_eq!(
            reachability(&mut online, &mut failures, false, true, 3),
            Some(false)
        );
    }
}
