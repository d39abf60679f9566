//! MQTT ingest: frames in, committed records, acknowledgements out.
//!
//! Three parts, so that neither the network nor the disk waits for the other:
//!
//! - **The MQTT task** polls rumqttc's event loop and nothing else (it must be polled all the
//!   time). It hands every publish to the writer over an unbounded channel, in arrival order,
//!   tagged with the connection's *epoch*, and subscribes again on every CONNACK.
//! - **The writer thread** owns the read-write [`Store`]. It decodes frames, stages their
//!   records, commits by the [`CommitPolicy`], runs maintenance between commits, and after a
//!   commit acknowledges every message received up to it, in order.
//! - **Acknowledgements** go through rumqttc's request channel. rumqttd refuses out-of-order
//!   acknowledgements (it disconnects the client), and a PUBACK meant for a message of an
//!   earlier connection would acknowledge a different message on the new one (packet ids start
//!   again), so an acknowledgement is sent only while its epoch is the current one, under a
//!   lock that the MQTT task also takes when a connection ends, before it purges queued
//!   acknowledgements ([`rumqttc::EventLoop::clean`]).
//!
//! A message is acknowledged only after its records are committed, so a crash at any point
//! leaves unacknowledged messages with the broker, which sends them again (persistent session):
//! the store ignores records it already has (idempotent by circuit and sequence number).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pmon_proto::topic::CircuitTopic;
use pmon_proto::{Frame, Topics};
use rumqttc::{
    AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, Request, Subscribe, Unsubscribe,
};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::error::HistorianError;
use crate::stats::{Labels, Stats};
use crate::store::{Store, StoreError};

/// Largest MQTT packet the historian accepts (as pmon's other clients).
pub const MAX_PACKET: usize = 256 * 1024;
/// Capacity of rumqttc's request channel: acknowledgements and subscriptions.
pub const REQUEST_CHANNEL: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Time between maintenance passes when there is nothing to catch up.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Time between maintenance passes while a backlog remains.
const MAINTENANCE_CATCH_UP: Duration = Duration::from_millis(100);
/// Work units one maintenance pass may do (keeps a pass to tens of milliseconds).
pub const MAINTENANCE_BUDGET: usize = 64;
/// Records older than this (against the wall clock) mean the historian is catching up.
const BEHIND_MS: i64 = 60_000;
/// Longest maintenance is put off while catching up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// How long a detected broker window is trusted before it is probed again.
const WINDOW_PROBE_INTERVAL: Duration = Duration::from_secs(600);

/// What the MQTT task hands the writer.
#[derive(Debug)]
pub(crate) enum WriterMsg {
    /// A publish on a frame topic. `pkid` is `None` for QoS 0 (nothing to acknowledge).
    Frame {
        epoch: u64,
        pkid: Option<u16>,
        circuit: String,
        payload: Bytes,
    },
    /// Any other QoS 1 publish: only its acknowledgement, in order.
    Ack { epoch: u64, pkid: u16 },
    /// Commit, acknowledge and stop.
    Shutdown,
}

/// Why a commit happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitReason {
    /// The oldest staged record waited `commit_interval`.
    Interval,
    /// `max_unacked` (or the detected broker window) messages wait for acknowledgement.
    Window,
    /// Nothing was staged: acknowledgements only, no commit needed.
    Nothing,
    /// The service is stopping.
    Shutdown,
}

/// When to commit: a pure state machine (no clock, no I/O) so that it can be tested alone.
///
/// - Commit when the oldest uncommitted message is `interval` old (default 1 s: at most about
///   one commit per second, kind to SD cards).
/// - Commit at once when `limit` QoS 1 messages wait for acknowledgement: the broker stops
///   sending when its inflight window is full, so waiting longer would only stall ingest.
///   The limit is `max_unacked` (default 100, rumqttd's fixed window), lowered to a smaller
///   window detected at run time: when two commits in a row were due to the interval after the
///   messages had stopped arriving, at the same number of unacknowledged messages, that number
///   is the broker's window (mosquitto's default `max_inflight_messages` is 20). The detected
///   value is dropped after ten minutes and found again if it still holds.
/// - Acknowledge at once, without a commit, when nothing is staged (messages that carry no
///   new records: duplicates, other topics).
#[derive(Debug, Clone)]
pub struct CommitPolicy {
    interval: Duration,
    max_unacked: usize,
    detected: Option<(usize, Instant)>,
    last_stall: Option<usize>,
    epoch: u64,
    pending: Vec<u16>,
    first_at: Option<Instant>,
    last_message_at: Option<Instant>,
}

impl CommitPolicy {
    /// A policy committing at least every `interval` and at `max_unacked` waiting messages.
    pub fn new(interval: Duration, max_unacked: usize) -> CommitPolicy {
        CommitPolicy {
            interval,
            max_unacked: max_unacked.max(1),
            detected: None,
            last_stall: None,
            epoch: 0,
            pending: Vec::new(),
            first_at: None,
            last_message_at: None,
        }
    }

    /// The number of waiting QoS 1 messages that triggers a commit now.
    pub fn limit(&self) -> usize {
        match self.detected {
            Some((window, _)) => window.min(self.max_unacked),
            None => self.max_unacked,
        }
    }

    /// The broker window found at run time, if smaller than `max_unacked`.
    pub fn detected_window(&self) -> Option<usize> {
        self.detected.map(|(w, _)| w)
    }

    /// QoS 1 messages received and not yet acknowledged (current connection).
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// A message arrived: `pkid` to acknowledge (QoS 1), `staged` = records staged in the
    /// store now (after this message). Returns the reason to commit now, if any.
    pub fn on_message(
        &mut self,
        now: Instant,
        epoch: u64,
        pkid: Option<u16>,
        staged: usize,
    ) -> Option<CommitReason> {
        if epoch != self.epoch {
            // A new connection: the old one's messages will come again; their acks are void.
            self.epoch = epoch;
            self.pending.clear();
            self.last_stall = None;
        }
        if let Some(pkid) = pkid {
            self.pending.push(pkid);
        }
        self.last_message_at = Some(now);
        if staged == 0 {
            self.first_at = None;
            return (!self.pending.is_empty()).then_some(CommitReason::Nothing);
        }
        if self.first_at.is_none() {
            self.first_at = Some(now);
        }
        (self.pending.len() >= self.limit()).then_some(CommitReason::Window)
    }

    /// When the interval runs out (None: nothing waits).
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.interval)
    }

    /// Whether the interval has run out.
    pub fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// A commit happened for `reason`: returns the epoch and the packet ids to acknowledge, in
    /// order, and learns the broker's window from stalls.
    pub fn on_commit(&mut self, now: Instant, reason: CommitReason) -> (u64, Vec<u16>) {
        if let Some((_, since)) = self.detected {
            if now.duration_since(since) >= WINDOW_PROBE_INTERVAL {
                self.detected = None;
            }
        }
        let waiting = self.pending.len();
        if reason == CommitReason::Interval {
            let quiet = (self.interval / 2).max(Duration::from_millis(250));
            let stalled = self
                .last_message_at
                .is_some_and(|t| now.duration_since(t) >= quiet);
            if stalled && waiting >= 2 && waiting < self.max_unacked {
                if self.last_stall == Some(waiting) && self.detected.is_none() {
                    self.detected = Some((waiting, now));
                }
                self.last_stall = Some(waiting);
            } else {
                self.last_stall = None;
            }
        }
        self.first_at = None;
        (self.epoch, std::mem::take(&mut self.pending))
    }
}

/// Sends acknowledgements through rumqttc's request channel, only for the current connection.
#[derive(Clone)]
pub(crate) struct Acker {
    client: AsyncClient,
    epoch: Arc<Mutex<u64>>,
    stats: Arc<Stats>,
}

impl Acker {
    pub(crate) fn new(client: AsyncClient, epoch: Arc<Mutex<u64>>, stats: Arc<Stats>) -> Acker {
        Acker {
            client,
            epoch,
            stats,
        }
    }

    /// Acknowledges `pkids` in order if `epoch` is still the connection's. Blocks only while
    /// the request channel is full (the MQTT task empties it), at most about two seconds.
    pub(crate) fn ack(&self, epoch: u64, pkids: &[u16]) {
        let mut sent = 0;
        let give_up = Instant::now() + Duration::from_secs(2);
        while sent < pkids.len() {
            {
                let current = match self.epoch.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if *current != epoch {
                    break;
                }
                while sent < pkids.len() {
                    let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
                    publish.pkid = pkids[sent];
                    if self.client.try_ack(&publish).is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
            if sent < pkids.len() {
                if Instant::now() >= give_up {
                    warn!(
                        left = pkids.len() - sent,
                        "MQTT request channel stays full; leaving acknowledgements to redelivery"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Stats::add(&self.stats.acks, sent as u64);
        Stats::add(&self.stats.stale_acks, (pkids.len() - sent) as u64);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) store: Store,
    pub(crate) policy: CommitPolicy,
    pub(crate) acker: Acker,
    pub(crate) stats: Arc<Stats>,
    next_maintenance: Instant,
    last_maintenance: Instant,
    /// Newest record timestamp received since the last commit.
    batch_newest_ms: i64,
}

/// Whether a store error is about one message's content (drop it) rather than the store.
fn is_input_error(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::InvalidCircuit(_)
            | StoreError::InvalidRecord(_)
            | StoreError::UnknownCircuit(_)
            | StoreError::Parse { .. }
    )
}

impl Writer {
    pub(crate) fn new(
        store: Store,
        policy: CommitPolicy,
        acker: Acker,
        stats: Arc<Stats>,
    ) -> Writer {
        Writer {
            store,
            policy,
            acker,
            stats,
            next_maintenance: Instant::now() + Duration::from_millis(500),
            last_maintenance: Instant::now(),
            batch_newest_ms: i64::MIN,
        }
    }

    /// Runs until [`WriterMsg::Shutdown`] or until every sender is gone; Err on a store failure
    /// (the unacknowledged messages stay with the broker).
    pub(crate) fn run(mut self, rx: Receiver<WriterMsg>) -> Result<(), HistorianError> {
        loop {
            let now = Instant::now();
            let wake = match self.policy.deadline() {
                Some(deadline) => deadline.min(self.next_maintenance),
                None => self.next_maintenance,
            };
            let received = rx.recv_timeout(wake.saturating_duration_since(now));
            let idle = matches!(received, Err(RecvTimeoutError::Timeout));
            let message = match received {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(CommitReason::Shutdown)?;
                    return Ok(());
                }
            };
            match message {
                Some(WriterMsg::Shutdown) => {
                    self.commit(CommitReason::Shutdown)?;
                    return Ok(());
                }
                Some(WriterMsg::Frame {
                    epoch,
                    pkid,
                    circuit,
                    payload,
                }) => {
                    self.frame(&circuit, &payload)?;
                    let staged = self.store.staged();
                    if let Some(reason) =
                        self.policy.on_message(Instant::now(), epoch, pkid, staged)
                    {
                        self.commit(reason)?;
                    }
                }
                Some(WriterMsg::Ack { epoch, pkid }) => {
                    let staged = self.store.staged();
                    if let Some(reason) =
                        self.policy
                            .on_message(Instant::now(), epoch, Some(pkid), staged)
                    {
                        self.commit(reason)?;
                    }
                }
                None => {}
            }
            self.stats.unacked.store(
                self.policy.unacked() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let now = Instant::now();
            if self.policy.due(now) {
                self.commit(CommitReason::Interval)?;
            }
            // Idle (no message before the deadline) and nothing staged: a good moment.
            if idle && now >= self.next_maintenance && self.store.staged() == 0 {
                self.maintain()?;
            }
        }
    }

    fn frame(&mut self, topic_circuit: &str, payload: &[u8]) -> Result<(), HistorianError> {
        Stats::add(&self.stats.frames, 1);
        let frame = match Frame::decode(payload) {
            Ok(frame) => frame,
            Err(error) => {
                debug!(circuit = topic_circuit, %error, "malformed frame dropped");
                self.stats
                    .malformed(format!("circuit {topic_circuit}: {error}"));
                return Ok(());
            }
        };
        if frame.circuit != topic_circuit {
            self.stats.malformed(format!(
                "frame for circuit {:?} on the topic of circuit {topic_circuit:?}",
                frame.circuit
            ));
            return Ok(());
        }
        Stats::add(&self.stats.records, frame.records.len() as u64);
        if let Some(newest) = frame.records.iter().map(|r| r.ts_ms).max() {
            self.batch_newest_ms = self.batch_newest_ms.max(newest);
        }
        if frame.records.is_empty() {
            return Ok(());
        }
        match self.store.ingest(&frame.circuit, &frame.records) {
            Ok(outcome) => {
                Stats::add(&self.stats.inserted, outcome.inserted as u64);
                Stats::add(&self.stats.duplicates, outcome.duplicates as u64);
                Stats::add(&self.stats.gaps, outcome.gaps as u64);
                Ok(())
            }
            Err(error) if is_input_error(&error) => {
                self.stats
                    .malformed(format!("circuit {topic_circuit}: {error}"));
                Ok(())
            }
            Err(error) => {
                error!(%error, "storing a frame failed; stopping (unacknowledged messages stay with the broker)");
                Err(error.into())
            }
        }
    }

    fn commit(&mut self, reason: CommitReason) -> Result<(), HistorianError> {
        let staged = self.store.staged();
        if staged > 0 {
            let started = Instant::now();
            if let Err(error) = self.store.commit() {
                error!(%error, "commit failed; stopping (unacknowledged messages stay with the broker)");
                return Err(error.into());
            }
            let took = started.elapsed();
            Stats::add(&self.stats.commits, 1);
            let s = &self.stats;
            use std::sync::atomic::Ordering::Relaxed;
            s.last_commit_ms.store(now_ms().max(0) as u64, Relaxed);
            s.last_commit_latency_us
                .store(took.as_micros() as u64, Relaxed);
            s.last_commit_records.store(staged as u64, Relaxed);
        }
        let before = self.policy.detected_window();
        let (epoch, pkids) = self.policy.on_commit(Instant::now(), reason);
        let after = self.policy.detected_window();
        if after != before {
            if let Some(window) = after {
                info!(
                    window,
                    "the broker sends at most {window} unacknowledged messages: committing at that many (raise max_inflight_messages on the broker, see docs/historian.md)"
                );
            }
            self.stats.detected_window.store(
                after.unwrap_or(0) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if !pkids.is_empty() {
            self.acker.ack(epoch, &pkids);
        }
        // While catching up on a backlog (the newest record committed is minutes old: after a
        // restart or an outage), ingest first and maintain once the flow is current; but
        // never put maintenance off for longer than CATCH_UP_LIMIT (a slave with a wrong clock).
        let behind =
            self.batch_newest_ms != i64::MIN && self.batch_newest_ms < now_ms() - BEHIND_MS;
        let put_off = behind && self.last_maintenance.elapsed() < CATCH_UP_LIMIT;
        self.batch_newest_ms = i64::MIN;
        if reason != CommitReason::Shutdown && !put_off && Instant::now() >= self.next_maintenance {
            self.maintain()?;
        }
        Ok(())
    }

    fn maintain(&mut self) -> Result<(), HistorianError> {
        let started = Instant::now();
        let work = match self.store.maintain(now_ms(), MAINTENANCE_BUDGET) {
            Ok(work) => work,
            Err(error) => {
                error!(%error, "maintenance failed; stopping");
                return Err(error.into());
            }
        };
        use std::sync::atomic::Ordering::Relaxed;
        self.last_maintenance = Instant::now();
        Stats::add(&self.stats.maintenance_runs, 1);
        Stats::add(&self.stats.maintenance_work, work as u64);
        self.stats
            .last_maintenance_ms
            .store(now_ms().max(0) as u64, Relaxed);
        let next = if work >= MAINTENANCE_BUDGET {
            MAINTENANCE_CATCH_UP
        } else {
            MAINTENANCE_INTERVAL
        };
        debug!(work, took = ?started.elapsed(), "maintenance pass");
        self.next_maintenance = Instant::now() + next;
        Ok(())
    }
}

/// The subscriptions: `pmon/<site>/circuit/+/frame/#` at QoS 1 (the frames), and the
/// retained circuit info `pmon/<site>/circuit/+/info` at QoS 0 (labels).
///
/// The frame filter ends in `/#` on purpose. MQTT's `#` also matches the level above it, so
/// the filter matches exactly the frame topics; and pmon's embedded broker gives filters
/// ending in `#` a large in-memory log (8 MiB, ~80 s of a 100-circuit site) but other filters
/// a small one (256 KiB): a subscriber that falls further behind than its filter's log — a
/// historian restart — silently loses messages. Subscribing to `circuit/#` instead would
/// also bring every state, health and raw-value message at QoS 1, each to be acknowledged in
/// order. The info subscription is QoS 0 so that it receives every retained message
/// (rumqttd hands a QoS 1 subscription at most 100 retained messages).
pub fn subscriptions(topics: &Topics) -> (String, String) {
    (
        format!("{}/#", topics.all_circuits(CircuitTopic::Frame)),
        topics.all_circuits(CircuitTopic::Info),
    )
}

/// The MQTT task: polls the event loop until the client disconnects (shutdown), or `stop` is
/// set while the broker is unreachable, or the writer is gone.
pub(crate) async fn drive(
    mut eventloop: EventLoop,
    topics: Topics,
    writer: Sender<WriterMsg>,
    epoch: Arc<Mutex<u64>>,
    stats: Arc<Stats>,
    labels: Labels,
    mut stop: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // However this task ends (returning, or dropped when aborted), acknowledgements still on
    // their way belong to a connection that is gone.
    let _void_on_exit = EpochBump(Arc::clone(&epoch));
    let (frames_filter, info_filter) = subscriptions(&topics);
    let mut backoff = BACKOFF_MIN;
    let mut current_epoch = *epoch.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                stats.connected.store(true, Relaxed);
                Stats::add(&stats.connections, 1);
                backoff = BACKOFF_MIN;
                info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                if ack.session_present {
                    // The session keeps its subscriptions, but a resumed subscription gets no
                    // retained messages: subscribe to the info topics afresh for the labels.
                    eventloop
                        .pending
                        .push_back(Request::Unsubscribe(Unsubscribe::new(info_filter.clone())));
                }
                // Subscribing again is harmless when the session kept the subscription (the
                // broker keeps its position) and needed when the broker forgot the session.
                eventloop
                    .pending
                    .push_back(Request::Subscribe(Subscribe::new(
                        frames_filter.clone(),
                        QoS::AtLeastOnce,
                    )));
                eventloop
                    .pending
                    .push_back(Request::Subscribe(Subscribe::new(
                        info_filter.clone(),
                        QoS::AtMostOnce,
                    )));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                Stats::add(&stats.messages, 1);
                let pkid = (publish.qos != QoS::AtMostOnce).then_some(publish.pkid);
                let topic = publish.topic.as_str();
                let message = match topics.parse_circuit(topic) {
                    Some((circuit, CircuitTopic::Frame)) => Some(WriterMsg::Frame {
                        epoch: current_epoch,
                        pkid,
                        circuit: circuit.to_string(),
                        payload: publish.payload,
                    }),
                    other => {
                        if let Some((circuit, CircuitTopic::Info)) = other {
                            learn_label(&labels, circuit, &publish.payload);
                        }
                        pkid.map(|pkid| WriterMsg::Ack {
                            epoch: current_epoch,
                            pkid,
                        })
                    }
                };
                if let Some(message) = message {
                    if writer.send(message).is_err() {
                        warn!("the writer has stopped; MQTT ingest stops");
                        break;
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                stats.subscribed.store(true, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                stats.connected.store(false, Relaxed);
                stats.subscribed.store(false, Relaxed);
                Stats::add(&stats.connection_errors, 1);
                if let Ok(mut last) = stats.last_connection_error.lock() {
                    *last = Some(error.to_string());
                }
                {
                    // Void every acknowledgement of the lost connection: bump the epoch under
                    // the lock the acker checks, then purge those already queued.
                    let mut guard = epoch.lock().unwrap_or_else(|p| p.into_inner());
                    *guard += 1;
                    current_epoch = *guard;
                    eventloop.clean();
                    eventloop
                        .pending
                        .retain(|request| !matches!(request, Request::PubAck(_)));
                }
                if *stop.borrow() {
                    break;
                }
                warn!(%error, retry_in = ?backoff, "broker unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    stats.connected.store(false, Relaxed);
    stats.subscribed.store(false, Relaxed);
}

struct EpochBump(Arc<Mutex<u64>>);

impl Drop for EpochBump {
    fn drop(&mut self) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *guard += 1;
    }
}

fn learn_label(labels: &Labels, circuit: &str, payload: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Info {
        name: Option<String>,
    }
    match serde_json::from_slice::<Info>(payload) {
        Ok(Info { name: Some(name) }) => labels.set(circuit, name),
        Ok(_) => {}
        Err(error) => debug!(circuit, %error, "circuit info without a usable name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_frame_filter_matches_frames_only_and_ends_in_a_hash() {
        let (frames, info) = subscriptions(&Topics::new("home").unwrap());
        assert_eq!(frames, "pmon/home/circuit/+/frame/#");
        assert_eq!(info, "pmon/home/circuit/+/info");
    }

    #[test]
    fn commits_at_the_interval_and_at_the_window() {
        let t0 = Instant::now();
        let mut p = CommitPolicy::new(SEC, 3);
        assert_eq!(p.on_message(t0, 1, Some(1), 5), None);
        assert_eq!(p.deadline(), Some(t0 + SEC));
        assert_eq!(p.on_message(t0, 1, Some(2), 10), None);
        assert_eq!(p.on_message(t0, 1, Some(3), 15), Some(CommitReason::Window));
        assert_eq!(p.on_commit(t0, CommitReason::Window), (1, vec![1, 2, 3]));
        assert_eq!(p.deadline(), None);
        assert_eq!(p.on_message(t0, 1, Some(4), 1), None);
        assert!(!p.due(t0 + SEC / 2));
        assert!(p.due(t0 + SEC));
    }

    #[test]
    fn nothing_staged_acks_at_once_and_new_epochs_void_old_acks() {
        let t0 = Instant::now();
        let mut p = CommitPolicy::new(SEC, 100);
        assert_eq!(p.on_message(t0, 1, Some(7), 0), Some(CommitReason::Nothing));
        assert_eq!(p.on_commit(t0, CommitReason::Nothing), (1, vec![7]));
        assert_eq!(p.on_message(t0, 1, Some(8), 3), None);
        assert_eq!(p.on_message(t0, 1, Some(9), 3), None);
        // Reconnected: 8 and 9 will be redelivered under new packet ids.
        assert_eq!(p.on_message(t0, 2, Some(1), 4), None);
        assert_eq!(p.on_commit(t0, CommitReason::Interval), (2, vec![1]));
        // QoS 0 frames stage records but need no acknowledgement.
        assert_eq!(p.on_message(t0, 2, None, 4), None);
        assert_eq!(p.on_commit(t0, CommitReason::Interval), (2, vec![]));
    }

    #[test]
    fn a_smaller_broker_window_is_detected_from_repeated_stalls() {
        let t0 = Instant::now();
        let mut p = CommitPolicy::new(SEC, 100);
        let mut t = t0;
        for round in 0..3 {
            for i in 0..20u16 {
                p.on_message(t, 1, Some(i + 1), 1);
            }
            // The broker stops at 20; nothing arrives until the interval commit.
            t += SEC;
            assert!(p.due(t));
            p.on_commit(t, CommitReason::Interval);
            if round == 0 {
                assert_eq!(p.limit(), 100);
            }
        }
        assert_eq!(p.detected_window(), Some(20));
        assert_eq!(p.limit(), 20);
        // Steady traffic (messages until the commit) never looks like a stall.
        let mut q = CommitPolicy::new(SEC, 100);
        let mut t = t0;
        for _ in 0..5 {
            for i in 0..20u16 {
                t += SEC / 20;
                q.on_message(t, 1, Some(i + 1), 1);
            }
            q.on_commit(t, CommitReason::Interval);
        }
        assert_eq!(q.detected_window(), None);
        // The detected window is probed again after a while.
        let later = t + WINDOW_PROBE_INTERVAL;
        p.on_message(later, 1, Some(1), 1);
        p.on_commit(later, CommitReason::Window);
        assert_eq!(p.detected_window(), None);
    }
}
