//! An embedded broker, a publisher as the acquisition builds it, and a subscriber that
//! gathers what the acquisition publishes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_acquire::mqtt::{self, Publisher};
use pmon_acquire::MqttConfig;
use pmon_proto::frame::{Frame, FrameRecord};
use pmon_proto::health::{CircuitInfo, Health};
use pmon_proto::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub const SITE: &str = "t";

pub async fn broker() -> (pmon_broker::BrokerHandle, u16) {
    let broker =
        tokio::task::spawn_blocking(|| pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral()))
            .await
            .unwrap()
            .unwrap();
    let port = broker.client_addr().port();
    (broker, port)
}

pub fn mqtt_config(port: u16, client: &str) -> MqttConfig {
    MqttConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        client_id: Some(format!("{client}-{}", std::process::id())),
        credentials: None,
        keep_alive_s: 30,
    }
}

/// A connected publisher, as the acquisition builds it.
pub async fn publisher(port: u16) -> Publisher {
    let topics = Topics::new(SITE).unwrap();
    let options = mqtt::options(&mqtt_config(port, "pub"), "unused", &topics, 10_000).unwrap();
    let (client, eventloop) = AsyncClient::new(options, 10_000);
    let publisher = Publisher::new(client, topics);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let driven = publisher.clone();
    tokio::spawn(async move {
        mqtt::drive(eventloop, driven, stopped).await;
        drop(stop);
    });
    publisher
}

/// What arrived, by circuit id.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub frames: BTreeMap<String, Vec<FrameRecord>>,
    /// Availability payloads in arrival order, with the arrival time.
    pub availability: BTreeMap<String, Vec<(std::time::Instant, String)>>,
    pub info: BTreeMap<String, CircuitInfo>,
    pub health: BTreeMap<String, Health>,
}

pub type Shared = Arc<Mutex<Seen>>;

/// Subscribes to every circuit topic of the site and gathers what arrives.
pub async fn subscribe(port: u16) -> Shared {
    let seen: Shared = Arc::default();
    let sink = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut options =
            MqttOptions::new(format!("sub-{}", std::process::id()), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        client
            .subscribe(format!("pmon/{SITE}/circuit/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut ready = Some(ready_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let parts: Vec<&str> = p.topic.split('/').collect();
                    let (Some(circuit), Some(kind)) = (parts.get(3), parts.get(4)) else {
                        continue;
                    };
                    let mut seen = sink.lock().unwrap();
                    match *kind {
                        "frame" => {
                            let frame = Frame::decode(&p.payload).unwrap();
                            seen.frames
                                .entry(circuit.to_string())
                                .or_default()
                                .extend(frame.records);
                        }
                        "availability" => seen
                            .availability
                            .entry(circuit.to_string())
                            .or_default()
                            .push((
                                std::time::Instant::now(),
                                String::from_utf8_lossy(&p.payload).into_owned(),
                            )),
                        "info" => {
                            seen.info.insert(
                                circuit.to_string(),
                                CircuitInfo::from_json(&p.payload).unwrap(),
                            );
                        }
                        "health" => {
                            seen.health.insert(
                                circuit.to_string(),
                                Health::from_json(&p.payload).unwrap(),
                            );
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
    seen
}

/// Waits until `done` holds (checked every 50 ms) or `limit` passes; returns a snapshot.
pub async fn wait_for(seen: &Shared, limit: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let snapshot = seen.lock().unwrap().clone();
        if done(&snapshot) || tokio::time::Instant::now() >= deadline {
            return snapshot;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sequence numbers strictly increase and energy never decreases.
pub fn assert_monotonic(circuit: &str, records: &[FrameRecord]) {
    for pair in records.windows(2) {
        assert!(
            pair[1].seq > pair[0].seq,
            "{circuit}: sequence {} then {}",
            pair[0].seq,
            pair[1].seq
        );
        assert!(pair[1].energy_import_mwh >= pair[0].energy_import_mwh);
        assert!(pair[1].energy_export_mwh >= pair[0].energy_export_mwh);
    }
}
