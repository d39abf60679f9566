//! One poller per bus, on its own thread: it finds the slaves, drains their FIFOs every
//! poll interval, and hands the results to the [`Publisher`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use embedded_hal::i2c::I2c;
use pmon_bus::{Cursor, DrainEvent, Identity, Master};
use pmon_proto::frame::FrameRecord;
use pmon_proto::health::{CircuitInfo, Health};
use pmon_proto::state::rfc3339_ms;
use pmon_proto::topic::{circuit_id, CircuitTopic};
use tracing::{info, warn};

use crate::circuit::CircuitTracker;
use crate::config::Settings;
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
}

impl<I2C: I2c> Poller<I2C> {
    /// A poller for the bus called `bus`.
    pub fn new(bus: String, master: Master<I2C>, shared: Shared) -> Self {
        Poller {
            bus,
            master,
            shared,
            sessions: BTreeMap::new(),
        }
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
            if now >= next_scan {
                self.scan();
                next_scan = now + rescan;
            }
            self.poll_all();
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

    /// Looks for slaves not yet known, and for boards swapped at a known address.
    pub fn scan(&mut self) {
        for address in self.master.scan() {
            let identity = match self.master.identify(address) {
                Ok(identity) => identity,
                Err(error) => {
                    warn!(bus = %self.bus, address, %error, "slave answered the scan but not identify");
                    continue;
                }
            };
            if let Some(session) = self.sessions.get(&address) {
                if session.identity.serial == identity.serial {
                    continue;
                }
                info!(bus = %self.bus, address, old = %session.circuit, "a different board now answers at this address");
                self.save_session(address);
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
        publisher.retained(
            publisher.topics().circuit(&circuit, CircuitTopic::Info),
            info.to_json().into_bytes(),
        );
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

    /// Drains every known slave once.
    pub fn poll_all(&mut self) {
        let addresses: Vec<u8> = self.sessions.keys().copied().collect();
        for address in addresses {
            self.poll(address);
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
        let fetched_ms = now_ms();
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
        match result {
            Ok(_) => {
                session.failures = 0;
                if !session.online {
                    session.online = true;
                    info!(bus = %self.bus, address, circuit = %session.circuit, "slave back online");
                    publisher.availability(&session.circuit, true);
                }
            }
            Err(error) => {
                session.failures += 1;
                if session.online && session.failures >= self.shared.settings.offline_after {
                    session.online = false;
                    warn!(bus = %self.bus, address, circuit = %session.circuit, %error, "slave offline");
                    publisher.availability(&session.circuit, false);
                }
            }
        }
    }

    fn publish_health(&mut self) {
        let addresses: Vec<u8> = self.sessions.keys().copied().collect();
        for address in addresses {
            let status = self.master.status(address).ok();
            let counters = self.master.counters(address);
            let Some(session) = self.sessions.get_mut(&address) else {
                continue;
            };
            if let Some(status) = status {
                session.fifo_overflows = status.fifo_overflows as u64;
            }
            let health = Health {
                ts: rfc3339_ms(now_ms()),
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

    /// Saves every circuit's bases to the store (as `run` does when it stops).
    pub fn save_bases(&mut self) {
        for session in self.sessions.values() {
            save(&self.shared.store, session);
        }
    }
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
