//! Home Assistant discovery through the real publisher and the embedded broker: announced
//! retained, sent again on Home Assistant's birth message and after a broker restart (rumqttd
//! forgets retained messages), followed by the state; removal clears the retained config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pmon_acquire::homeassistant::{HomeAssistant, HomeAssistantConfig};
use pmon_acquire::mqtt::{self, Publisher};
use pmon_acquire::MqttConfig;
use pmon_proto::frame::FrameRecord;
use pmon_proto::health::CircuitInfo;
use pmon_proto::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

const SITE: &str = "hatest";

async fn broker_on(port: u16) -> pmon_broker::BrokerHandle {
    let mut config = pmon_broker::BrokerConfig::ephemeral();
    config.bind = SocketAddr::from(([127, 0, 0, 1], port));
    tokio::task::spawn_blocking(move || pmon_broker::spawn(config))
        .await
        .unwrap()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A publisher with discovery, as the acquisition builds it; dropping the sender stops it.
fn publisher(
    port: u16,
    config: HomeAssistantConfig,
    dir: &Path,
    name: &str,
) -> (Publisher, watch::Sender<bool>) {
    let topics = Topics::new(SITE).unwrap();
    let mqtt_config = MqttConfig {
        url: format!("mqtt://127.0.0.1:{port}"),
        client_id: Some(format!("{name}-{}", std::process::id())),
        credentials: None,
        keep_alive_s: 5,
    };
    let options = mqtt::options(&mqtt_config, "unused", &topics, 10_000).unwrap();
    let (client, eventloop) = AsyncClient::new(options, 10_000);
    let ha = HomeAssistant::open(config, SITE, topics.clone(), Some(dir)).unwrap();
    let publisher = Publisher::new(client, topics).with_homeassistant(ha);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(mqtt::drive(eventloop, publisher.clone(), stopped));
    (publisher, stop)
}

fn info(id: &str, name: &str) -> CircuitInfo {
    CircuitInfo {
        id: id.into(),
        name: name.into(),
        bus: "sim-0".into(),
        address: 16,
        serial: u32::from_str_radix(id, 16).unwrap(),
        firmware: "1.2.3".into(),
        protocol: "pmon-1".into(),
        sample_rate: 1800,
    }
}

fn record(seq: u64) -> FrameRecord {
    FrameRecord {
        seq,
        ts_ms: 1_764_084_600_200,
        duration_us: 200_000,
        voltage_mv: 230_000,
        current_ua: 1_000_000,
        frequency_mhz: 50_000,
        real_power_mw: 230_000,
        apparent_power_mva: 230_000,
        power_factor: 10_000,
        crest_factor: 1414,
        ..FrameRecord::default()
    }
}

/// One received message.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// Everything on `filters` for `duration`, in arrival order; `then` is published once the
/// subscriptions are acknowledged.
async fn listen(
    port: u16,
    filters: &[&str],
    then: Option<(&str, &str)>,
    duration: Duration,
) -> Vec<Received> {
    let mut options = MqttOptions::new(format!("listen-{}", free_port()), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    for filter in filters {
        client.subscribe(*filter, QoS::AtLeastOnce).await.unwrap();
    }
    let mut acks = 0;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(event) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                acks += 1;
                if acks == filters.len() {
                    if let Some((topic, payload)) = then {
                        client
                            .publish(topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .unwrap();
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => received.push(Received {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    received
}

fn by_topic(received: &[Received]) -> BTreeMap<&str, Vec<&Received>> {
    let mut map: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for r in received {
        map.entry(r.topic.as_str()).or_default().push(r);
    }
    map
}

const DEVICE_A: &str = "homeassistant/device/pmon_hatest_0000000a/config";
const DEVICE_B: &str = "homeassistant/device/pmon_hatest_0000000b/config";
const STATE_A: &str = "pmon/hatest/circuit/0000000a/state";

#[tokio::test(flavor = "multi_thread")]
async fn discovery_comes_again_on_birth_and_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = broker_on(port).await;
    let (publisher, _stop) = publisher(port, HomeAssistantConfig::default(), dir.path(), "pub");
    publisher.announce(&info("0000000a", "Heat pump"));
    publisher.availability("0000000a", true);
    publisher.frame("0000000a", vec![record(1)]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A late subscriber gets the discovery retained.
    let first = listen(port, &["homeassistant/#"], None, Duration::from_millis(700)).await;
    let first = by_topic(&first);
    let config = first.get(DEVICE_A).expect("discovery retained");
    assert!(config[0].retain);
    let payload: serde_json::Value = serde_json::from_slice(&config[0].payload).unwrap();
    assert_eq!(payload["dev"]["name"], "Heat pump");
    assert_eq!(payload["stat_t"], STATE_A);

    // Home Assistant's birth: discovery again (live, not retained), then the state.
    let states = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                publisher.publish_states();
            }
        }
    });
    let after_birth = listen(
        port,
        &["homeassistant/device/#", "pmon/hatest/circuit/+/state"],
        Some(("homeassistant/status", "online")),
        Duration::from_millis(1500),
    )
    .await;
    states.await.unwrap();
    let live: Vec<&Received> = after_birth
        .iter()
        .filter(|r| r.topic == DEVICE_A && !r.retain)
        .collect();
    assert_eq!(
        live.len(),
        1,
        "discovery sent again on birth: {after_birth:?}"
    );
    let config_at = after_birth
        .iter()
        .position(|r| r.topic == DEVICE_A && !r.retain);
    let state_at = after_birth.iter().rposition(|r| r.topic == STATE_A);
    assert!(
        state_at > config_at,
        "the state follows the discovery: {after_birth:?}"
    );

    // The broker restarts and forgets everything; the publisher reconnects and re-announces.
    broker.stop().await.unwrap();
    let _broker = broker_on(port).await;
    let mut found = false;
    for _ in 0..20 {
        let again = listen(port, &["homeassistant/#"], None, Duration::from_millis(500)).await;
        if again.iter().any(|r| r.topic == DEVICE_A && r.retain) {
            found = true;
            break;
        }
    }
    assert!(found, "discovery retained again on the restarted broker");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_circuit_is_cleared_and_the_rest_stays() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = broker_on(port).await;
    {
        let (publisher, stop) =
            publisher(port, HomeAssistantConfig::default(), dir.path(), "first");
        publisher.announce(&info("0000000a", "Heat pump"));
        publisher.announce(&info("0000000b", "Oven"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        publisher.close().await;
        drop(stop);
    }
    let before = listen(port, &["homeassistant/#"], None, Duration::from_millis(500)).await;
    let before = by_topic(&before);
    assert!(before.contains_key(DEVICE_A) && before.contains_key(DEVICE_B));

    // Next run: B is listed for removal; its board is not even there.
    let config = HomeAssistantConfig {
        remove: vec!["0000000b".into()],
        ..HomeAssistantConfig::default()
    };
    let watch_task = tokio::spawn(async move {
        listen(
            port,
            &["homeassistant/#"],
            None,
            mqtt::SETTLE + Duration::from_secs(2),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_publisher, _stop) = publisher(port, config, dir.path(), "second");
    let seen = watch_task.await.unwrap();
    let cleared = seen
        .iter()
        .position(|r| r.topic == DEVICE_B && r.payload.is_empty())
        .expect("an empty retained payload on B's discovery topic");
    let announced = seen
        .iter()
        .position(|r| r.topic == DEVICE_A && !r.retain)
        .expect("A announced again from the registry, with no board");
    assert!(cleared < announced, "clears go first: {seen:?}");

    let after = listen(port, &["homeassistant/#"], None, Duration::from_millis(500)).await;
    let after = by_topic(&after);
    assert!(after.contains_key(DEVICE_A));
    assert!(!after.contains_key(DEVICE_B), "B is gone from the broker");
}
