//! The latest of everything per circuit, from the broker's JSON topics, and the broadcast that
//! pushes every change to the browsers (`/api/live`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_proto::health::CircuitInfo;
use pmon_proto::topic::CircuitTopic;
use pmon_proto::{Health, State, Topics};
use rumqttc::{Event, EventLoop, Packet, QoS};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

/// Most states a circuit keeps for its spark line (one a second: two minutes).
pub const SPARK_POINTS: usize = 120;
/// Most circuits the service keeps (a broker full of junk cannot exhaust memory).
pub const MAX_CIRCUITS: usize = 4096;

/// What the service knows about one circuit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Circuit {
    /// The circuit id.
    pub id: String,
    /// The latest JSON state.
    pub state: Option<State>,
    /// When the latest state arrived, ms since the epoch (the service's clock).
    pub received_ms: Option<i64>,
    /// `online` / `offline` from the retained availability topic.
    pub availability: Option<String>,
    /// The latest health.
    pub health: Option<Health>,
    /// The retained circuit description.
    pub info: Option<CircuitInfo>,
    /// Recent real power values (W) for the spark line, oldest first.
    pub spark: Vec<f64>,
}

/// Every circuit, shared by the MQTT task and the HTTP handlers.
#[derive(Debug)]
pub struct Live {
    circuits: Mutex<BTreeMap<String, Circuit>>,
    events: broadcast::Sender<String>,
    connected: Mutex<bool>,
    malformed: Mutex<u64>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Live {
    /// An empty store.
    pub fn new() -> Arc<Live> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Live {
            circuits: Mutex::new(BTreeMap::new()),
            events,
            connected: Mutex::new(false),
            malformed: Mutex::new(0),
        })
    }

    /// Every circuit, by id.
    pub fn snapshot(&self) -> Vec<Circuit> {
        self.circuits
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One circuit.
    pub fn get(&self, id: &str) -> Option<Circuit> {
        self.circuits.lock().ok()?.get(id).cloned()
    }

    /// Whether the MQTT connection is up.
    pub fn connected(&self) -> bool {
        self.connected.lock().map(|c| *c).unwrap_or(false)
    }

    /// Messages that did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed.lock().map(|c| *c).unwrap_or(0)
    }

    /// A receiver of change events: the id of the circuit that changed.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Announces a change of circuit `id` made elsewhere (its name).
    pub fn touch(&self, id: &str) {
        let _ = self.events.send(id.to_string());
    }

    fn set_connected(&self, up: bool) {
        if let Ok(mut c) = self.connected.lock() {
            *c = up;
        }
    }

    /// Applies one message of `topics`' circuit topics; returns whether it was understood.
    pub fn apply(&self, topics: &Topics, topic: &str, payload: &[u8]) -> bool {
        let Some((id, which)) = topics.parse_circuit(topic) else {
            return false;
        };
        if which == CircuitTopic::Frame {
            return true;
        }
        let ok = {
            let Ok(mut circuits) = self.circuits.lock() else {
                return false;
            };
            if !circuits.contains_key(id) && circuits.len() >= MAX_CIRCUITS {
                return false;
            }
            let circuit = circuits.entry(id.to_string()).or_insert_with(|| Circuit {
                id: id.to_string(),
                ..Circuit::default()
            });
            let ok = match which {
                CircuitTopic::State => match State::from_json(payload) {
                    Ok(state) => {
                        circuit.spark.push(state.real_power);
                        if circuit.spark.len() > SPARK_POINTS {
                            let excess = circuit.spark.len() - SPARK_POINTS;
                            circuit.spark.drain(..excess);
                        }
                        circuit.state = Some(state);
                        circuit.received_ms = Some(now_ms());
                        true
                    }
                    Err(_) => false,
                },
                CircuitTopic::Availability => match std::str::from_utf8(payload) {
                    Ok(text @ ("online" | "offline")) => {
                        circuit.availability = Some(text.to_string());
                        true
                    }
                    _ => false,
                },
                CircuitTopic::Health => match Health::from_json(payload) {
                    Ok(health) => {
                        circuit.health = Some(health);
                        true
                    }
                    Err(_) => false,
                },
                CircuitTopic::Info => match CircuitInfo::from_json(payload) {
                    Ok(info) => {
                        circuit.info = Some(info);
                        true
                    }
                    Err(_) => false,
                },
                CircuitTopic::Frame => true,
            };
            if ok {
                let _ = self.events.send(id.to_string());
            }
            ok
        };
        if !ok {
            if let Ok(mut m) = self.malformed.lock() {
                *m += 1;
            }
            debug!(topic, "ignored a message that did not decode");
        }
        ok
    }
}

/// Polls the MQTT event loop until `stop`: subscribes to `pmon/<site>/circuit/#` at QoS 0 on
/// every CONNACK and feeds [`Live`]. Reconnects with a back-off of up to 5 s.
pub async fn drive(
    mut eventloop: EventLoop,
    client: rumqttc::AsyncClient,
    topics: Topics,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) {
    let filter = format!("{}/circuit/#", topics.root());
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                live.set_connected(true);
                info!(%filter, "web: connected to the broker");
                if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtMostOnce) {
                    warn!(%error, "web: cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                live.apply(&topics, &publish.topic, &publish.payload);
            }
            Ok(_) => {}
            Err(error) => {
                if live.connected() {
                    warn!(%error, "web: broker connection lost");
                }
                live.set_connected(false);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
