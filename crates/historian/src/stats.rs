//! Counters the ingest path keeps for `/api/v1/health`, and the circuit labels learnt from the
//! retained `…/info` messages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::timefmt::rfc3339_utc;

/// Cumulative counters since the service started. Cheap to update from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// MQTT publishes received (frame and info topics).
    pub messages: AtomicU64,
    /// Frame messages received.
    pub frames: AtomicU64,
    /// Records in the frames received.
    pub records: AtomicU64,
    /// Records stored for the first time.
    pub inserted: AtomicU64,
    /// Records already stored (redelivered or replayed), ignored.
    pub duplicates: AtomicU64,
    /// Sequence gaps opened.
    pub gaps: AtomicU64,
    /// Frame messages dropped because they did not decode or named another circuit.
    pub malformed: AtomicU64,
    /// Commits of the store.
    pub commits: AtomicU64,
    /// Milliseconds since the epoch of the last commit (0: none yet).
    pub last_commit_ms: AtomicU64,
    /// Duration of the last commit, µs.
    pub last_commit_latency_us: AtomicU64,
    /// Records in the last commit.
    pub last_commit_records: AtomicU64,
    /// Acknowledgements handed to the MQTT client.
    pub acks: AtomicU64,
    /// Acknowledgements dropped because their connection had gone (the broker re-sends).
    pub stale_acks: AtomicU64,
    /// QoS 1 messages received and not yet acknowledged.
    pub unacked: AtomicU64,
    /// The broker's inflight window when the historian found it smaller than `max_unacked`
    /// (0: not detected).
    pub detected_window: AtomicU64,
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// The broker acknowledged the frame subscription on this connection.
    pub subscribed: AtomicBool,
    /// Successful connections (the first one included).
    pub connections: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: AtomicU64,
    /// Maintenance passes (rollups, retention) run.
    pub maintenance_runs: AtomicU64,
    /// Units of maintenance work done.
    pub maintenance_work: AtomicU64,
    /// Milliseconds since the epoch of the last maintenance pass (0: none yet).
    pub last_maintenance_ms: AtomicU64,
    /// The last reason a frame was dropped.
    pub last_malformed: Mutex<Option<String>>,
    /// The last connection error.
    pub last_connection_error: Mutex<Option<String>>,
    /// Milliseconds since the epoch when the service started.
    pub started_ms: AtomicU64,
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

fn time_or_null(ms: u64) -> Option<String> {
    (ms > 0).then(|| rfc3339_utc(ms as i64))
}

/// The ingest part of `/api/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestSnapshot {
    /// See [`Stats::connected`].
    pub connected: bool,
    /// See [`Stats::subscribed`].
    pub subscribed: bool,
    /// See [`Stats::connections`].
    pub connections: u64,
    /// See [`Stats::connection_errors`].
    pub connection_errors: u64,
    /// See [`Stats::last_connection_error`].
    pub last_connection_error: Option<String>,
    /// See [`Stats::messages`].
    pub messages: u64,
    /// See [`Stats::frames`].
    pub frames: u64,
    /// See [`Stats::records`].
    pub records_received: u64,
    /// See [`Stats::inserted`].
    pub records_inserted: u64,
    /// See [`Stats::duplicates`].
    pub duplicates: u64,
    /// See [`Stats::gaps`].
    pub gaps: u64,
    /// See [`Stats::malformed`].
    pub malformed: u64,
    /// See [`Stats::last_malformed`].
    pub last_malformed: Option<String>,
    /// See [`Stats::commits`].
    pub commits: u64,
    /// RFC 3339 time of the last commit.
    pub last_commit: Option<String>,
    /// Duration of the last commit, ms.
    pub last_commit_latency_ms: f64,
    /// Records in the last commit.
    pub last_commit_records: u64,
    /// See [`Stats::acks`].
    pub acks: u64,
    /// See [`Stats::stale_acks`].
    pub stale_acks: u64,
    /// See [`Stats::unacked`].
    pub unacked: u64,
    /// See [`Stats::detected_window`].
    pub detected_broker_window: Option<u64>,
}

/// The maintenance part of `/api/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceSnapshot {
    /// See [`Stats::maintenance_runs`].
    pub runs: u64,
    /// See [`Stats::maintenance_work`].
    pub work: u64,
    /// RFC 3339 time of the last pass.
    pub last: Option<String>,
}

impl Stats {
    /// A new set of counters, started now.
    pub fn new(now_ms: i64) -> Arc<Stats> {
        let stats = Stats::default();
        stats
            .started_ms
            .store(now_ms.max(0) as u64, Ordering::Relaxed);
        Arc::new(stats)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The ingest counters as JSON-ready values.
    pub fn ingest(&self) -> IngestSnapshot {
        let window = load(&self.detected_window);
        IngestSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            connections: load(&self.connections),
            connection_errors: load(&self.connection_errors),
            last_connection_error: self
                .last_connection_error
                .lock()
                .ok()
                .and_then(|e| e.clone()),
            messages: load(&self.messages),
            frames: load(&self.frames),
            records_received: load(&self.records),
            records_inserted: load(&self.inserted),
            duplicates: load(&self.duplicates),
            gaps: load(&self.gaps),
            malformed: load(&self.malformed),
            last_malformed: self.last_malformed.lock().ok().and_then(|e| e.clone()),
            commits: load(&self.commits),
            last_commit: time_or_null(load(&self.last_commit_ms)),
            last_commit_latency_ms: load(&self.last_commit_latency_us) as f64 / 1000.0,
            last_commit_records: load(&self.last_commit_records),
            acks: load(&self.acks),
            stale_acks: load(&self.stale_acks),
            unacked: load(&self.unacked),
            detected_broker_window: (window > 0).then_some(window),
        }
    }

    /// The maintenance counters as JSON-ready values.
    pub fn maintenance(&self) -> MaintenanceSnapshot {
        MaintenanceSnapshot {
            runs: load(&self.maintenance_runs),
            work: load(&self.maintenance_work),
            last: time_or_null(load(&self.last_maintenance_ms)),
        }
    }

    /// Records why a frame was dropped.
    pub fn malformed(&self, reason: String) {
        Stats::add(&self.malformed, 1);
        if let Ok(mut last) = self.last_malformed.lock() {
            *last = Some(reason);
        }
    }
}

/// Circuit labels (`name` of the retained `pmon/<site>/circuit/<id>/info` messages), by id.
#[derive(Debug, Clone, Default)]
pub struct Labels(Arc<RwLock<BTreeMap<String, String>>>);

impl Labels {
    /// Sets a circuit's label.
    pub fn set(&self, id: &str, name: String) {
        if let Ok(mut map) = self.0.write() {
            map.insert(id.to_string(), name);
        }
    }

    /// A circuit's label, if one was published.
    pub fn get(&self, id: &str) -> Option<String> {
        self.0.read().ok().and_then(|map| map.get(id).cloned())
    }
}
