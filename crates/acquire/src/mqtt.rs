//! The acquisition's MQTT connection.
//!
//! Pollers run on their own threads and hand messages to rumqttc with `try_publish`, which
//! never blocks: rumqttc's request channel is the bounded queue that holds frames while the
//! broker is away, and a full channel is counted as dropped frames. When the connection
//! fails, rumqttc moves the unacknowledged publishes to `EventLoop::pending` and would clear
//! them on reconnecting without a session; we take them out first and put them back after
//! the next CONNACK, so a broker restart loses nothing that was in flight.
//!
//! Home Assistant discovery ([`crate::homeassistant`]) rides on the same connection: it is
//! published on every CONNACK (after the retained availability), again whenever Home
//! Assistant announces itself `online` on its birth topic, and followed by every circuit's
//! state on the next state tick.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_proto::discovery::{raw_payload, QUANTITIES};
use pmon_proto::frame::{Frame, FrameRecord};
use pmon_proto::health::CircuitInfo;
use pmon_proto::topic::CircuitTopic;
use pmon_proto::{Topics, OFFLINE, ONLINE};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Request};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::homeassistant::{HomeAssistant, Outgoing};

/// Largest MQTT packet pmon sends or accepts: a frame of a few hundred records.
pub const MAX_PACKET: usize = 256 * 1024;
/// How long discovery waits after clearing old discovery topics, so that Home Assistant has
/// removed the old entities before their unique ids are announced again.
pub const SETTLE: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why the connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL is not `mqtt://host:port`.
    #[error("broker URL {url:?}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The keep-alive is out of MQTT's range.
    #[error("mqtt.keep_alive_s = {0}: must be 1 to 65535 s (rumqttd refuses 0)")]
    KeepAlive(u64),
}

/// Builds client options: keep-alive `keep_alive_s` (rumqttd refuses 0), a retained `offline`
/// last will on `pmon/<site>/status`, and a request channel of `queue_capacity` messages.
pub fn options(
    config: &MqttConfig,
    default_client_id: &str,
    topics: &Topics,
    queue_capacity: usize,
) -> Result<MqttOptions, MqttError> {
    let url_error = |reason: String| MqttError::Url {
        url: config.url.clone(),
        reason,
    };
    if !(config.url.starts_with("mqtt://") || config.url.starts_with("tcp://")) {
        return Err(url_error("only mqtt:// and tcp:// are supported".into()));
    }
    if !(1..=u16::MAX as u64).contains(&config.keep_alive_s) {
        return Err(MqttError::KeepAlive(config.keep_alive_s));
    }
    let client_id = config.client_id.as_deref().unwrap_or(default_client_id);
    let separator = if config.url.contains('?') { '&' } else { '?' };
    let mut options =
        MqttOptions::parse_url(format!("{}{separator}client_id={client_id}", config.url))
            .map_err(|e| url_error(e.to_string()))?;
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(100)
        .set_request_channel_capacity(queue_capacity)
        .set_last_will(LastWill::new(
            topics.status(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &config.credentials {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// Publishes on behalf of the pollers. Cheap to clone; every method returns at once.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    topics: Topics,
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    latest: Arc<Mutex<BTreeMap<String, (FrameRecord, bool)>>>,
    dropped: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    raw_topics: bool,
    homeassistant: Option<Arc<Mutex<HomeAssistant>>>,
}

impl Publisher {
    /// A publisher for `client`'s connection.
    pub fn new(client: AsyncClient, topics: Topics) -> Publisher {
        Publisher {
            client,
            topics,
            retained: Arc::default(),
            latest: Arc::default(),
            dropped: Arc::default(),
            connected: Arc::default(),
            raw_topics: false,
            homeassistant: None,
        }
    }

    /// Also publishes every quantity of the state as a plain number on its own topic
    /// (`pmon/<site>/circuit/<id>/raw/<quantity>`), at the state rate.
    pub fn with_raw_topics(mut self, on: bool) -> Publisher {
        self.raw_topics = on;
        self
    }

    /// Publishes Home Assistant discovery as `homeassistant` decides.
    pub fn with_homeassistant(mut self, homeassistant: HomeAssistant) -> Publisher {
        self.homeassistant = Some(Arc::new(Mutex::new(homeassistant)));
        self
    }

    /// Describes a circuit just found: its retained info, and its Home Assistant discovery.
    pub fn announce(&self, info: &CircuitInfo) {
        self.retained(
            self.topics.circuit(&info.id, CircuitTopic::Info),
            info.to_json().into_bytes(),
        );
        if let Some(homeassistant) = &self.homeassistant {
            let out = match homeassistant.lock() {
                Ok(mut ha) => ha.announce(info),
                Err(_) => return,
            };
            self.discovery(out);
        }
    }

    /// Publishes discovery messages and clears, retained, QoS 1.
    fn discovery(&self, out: impl IntoIterator<Item = Outgoing>) {
        for outgoing in out {
            let (topic, payload) = match outgoing {
                Outgoing::Announce(message) => (message.topic, message.payload.into_bytes()),
                Outgoing::Clear(topic) => (topic, Vec::new()),
            };
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
                .is_err()
            {
                warn!("publish queue full: a Home Assistant discovery message was not sent");
            }
        }
    }

    /// Shows every circuit's latest state again on the next state tick.
    fn refresh_states(&self) {
        if let Ok(mut latest) = self.latest.lock() {
            for (_, fresh) in latest.values_mut() {
                *fresh = true;
            }
        }
    }

    /// The connection is up: subscribe to Home Assistant's birth topic, clear withdrawn
    /// discovery, announce the rest (after [`SETTLE`] when something was cleared), and show
    /// every state again.
    fn connected_homeassistant(&self) {
        let Some(homeassistant) = &self.homeassistant else {
            return;
        };
        let (status_topic, plan) = match homeassistant.lock() {
            Ok(mut ha) => (ha.status_topic().map(str::to_owned), ha.connected()),
            Err(_) => return,
        };
        if let Some(topic) = status_topic {
            let _ = self.client.try_subscribe(topic, QoS::AtMostOnce);
        }
        if !plan.clear.is_empty() {
            info!(
                topics = plan.clear.len(),
                "removing withdrawn circuits from Home Assistant"
            );
        }
        self.discovery(plan.clear.into_iter().map(Outgoing::Clear));
        self.discovery(plan.announce.into_iter().map(Outgoing::Announce));
        if plan.settle {
            let publisher = self.clone();
            let homeassistant = homeassistant.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SETTLE).await;
                let out = match homeassistant.lock() {
                    Ok(mut ha) => ha.settled(),
                    Err(_) => return,
                };
                publisher.discovery(out);
                publisher.refresh_states();
            });
        }
    }

    /// A message on a subscribed topic: Home Assistant's birth announces everything again.
    fn incoming(&self, topic: &str, payload: &[u8]) {
        let Some(homeassistant) = &self.homeassistant else {
            return;
        };
        let out = match homeassistant.lock() {
            Ok(ha) if ha.status_topic() == Some(topic) && payload == ONLINE.as_bytes() => {
                ha.birth()
            }
            _ => return,
        };
        info!(
            messages = out.len(),
            "Home Assistant is online: discovery sent again"
        );
        self.discovery(out.into_iter().map(Outgoing::Announce));
        self.refresh_states();
    }

    fn disconnected_homeassistant(&self) {
        if let Some(homeassistant) = &self.homeassistant {
            if let Ok(mut ha) = homeassistant.lock() {
                ha.disconnected();
            }
        }
    }

    /// The site's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Publishes one circuit's new records as a frame (QoS 1). Returns false when the queue
    /// was full and the frame was dropped.
    pub fn frame(&self, circuit: &str, records: Vec<FrameRecord>) -> bool {
        let Some(newest) = records.last().copied() else {
            return true;
        };
        if let Ok(mut latest) = self.latest.lock() {
            latest.insert(circuit.to_string(), (newest, true));
        }
        let payload = Frame {
            circuit: circuit.to_string(),
            records,
        }
        .encode();
        let topic = self.topics.circuit(circuit, CircuitTopic::Frame);
        let sent = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_ok();
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Publishes a retained message and remembers it, to publish again after every reconnect
    /// (rumqttd does not re-send retained messages to resumed sessions, and a broker restart
    /// forgets them).
    pub fn retained(&self, topic: String, payload: Vec<u8>) {
        if let Ok(mut retained) = self.retained.lock() {
            retained.insert(topic.clone(), payload.clone());
        }
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes a message that is only worth having while fresh (QoS 0); skipped while the
    /// broker is unreachable rather than queued behind frames.
    pub fn transient(&self, topic: String, payload: Vec<u8>) {
        if self.connected.load(Ordering::Relaxed) {
            let _ = self
                .client
                .try_publish(topic, QoS::AtMostOnce, false, payload);
        }
    }

    /// A circuit's availability, retained.
    pub fn availability(&self, circuit: &str, online: bool) {
        let payload = if online { ONLINE } else { OFFLINE };
        self.retained(
            self.topics.circuit(circuit, CircuitTopic::Availability),
            payload.as_bytes().to_vec(),
        );
    }

    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes the JSON state of every circuit that has a record not yet shown.
    pub fn publish_states(&self) {
        let fresh: Vec<(String, FrameRecord)> = match self.latest.lock() {
            Ok(mut latest) => latest
                .iter_mut()
                .filter(|(_, (_, fresh))| *fresh)
                .map(|(circuit, (record, fresh))| {
                    *fresh = false;
                    (circuit.clone(), *record)
                })
                .collect(),
            Err(_) => return,
        };
        for (circuit, record) in fresh {
            let state = pmon_proto::State::from_record(&record);
            self.transient(
                self.topics.circuit(&circuit, CircuitTopic::State),
                state.to_json().into_bytes(),
            );
            if self.raw_topics {
                for quantity in &QUANTITIES {
                    self.transient(
                        self.topics.raw(&circuit, quantity.id),
                        raw_payload(quantity.value(&state)).into_bytes(),
                    );
                }
            }
        }
    }

    fn republish_retained(&self) {
        let _ = self
            .client
            .try_publish(self.topics.status(), QoS::AtLeastOnce, true, ONLINE);
        let retained = match self.retained.lock() {
            Ok(retained) => retained.clone(),
            Err(_) => return,
        };
        for (topic, payload) in retained {
            let _ = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload);
        }
    }

    /// Says goodbye: the service's status goes `offline` (retained), then the connection closes.
    pub async fn close(&self) {
        let _ = self
            .client
            .publish(self.topics.status(), QoS::AtLeastOnce, true, OFFLINE)
            .await;
        let _ = self.client.disconnect().await;
    }
}

/// Drives the connection until the client disconnects or `stop` is set while the broker is
/// unreachable. Reconnects with exponential backoff from 250 ms to 30 s.
pub async fn drive(
    mut eventloop: EventLoop,
    publisher: Publisher,
    mut stop: watch::Receiver<bool>,
) {
    let mut stash: VecDeque<Request> = VecDeque::new();
    let mut backoff = BACKOFF_MIN;
    let mut was_connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // rumqttc has just cleared its own pending list (no session): refill it with
                // what the last connection left unacknowledged, ahead of anything newer.
                while let Some(request) = stash.pop_back() {
                    eventloop.pending.push_front(request);
                }
                publisher.connected.store(true, Ordering::Relaxed);
                publisher.republish_retained();
                publisher.connected_homeassistant();
                publisher.refresh_states();
                backoff = BACKOFF_MIN;
                if was_connected {
                    info!("reconnected to the broker");
                } else {
                    info!("connected to the broker");
                }
                was_connected = true;
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                publisher.incoming(&publish.topic, &publish.payload);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                publisher.connected.store(false, Ordering::Relaxed);
                publisher.disconnected_homeassistant();
                stash.extend(
                    eventloop
                        .pending
                        .drain(..)
                        .filter(|request| matches!(request, Request::Publish(_))),
                );
                if *stop.borrow() {
                    if !stash.is_empty() {
                        warn!(
                            unsent = stash.len(),
                            "stopping while the broker is unreachable"
                        );
                    }
                    break;
                }
                warn!(%error, retry_in = ?backoff, held = stash.len(), "broker unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
