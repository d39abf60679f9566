//! Helpers shared by the integration tests: real rumqttd (through `pmon_broker::spawn` on a
//! free port, never 1883) and real rumqttc clients.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pmon_broker::{BrokerConfig, BrokerHandle};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=pmon_broker=debug,rumqttd=warn`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A broker with pmon's defaults on a free loopback port.
pub fn broker() -> BrokerHandle {
    broker_with(BrokerConfig::ephemeral())
}

/// A broker with `config` (whose `bind` should have port 0).
pub fn broker_with(config: BrokerConfig) -> BrokerHandle {
    init_tracing();
    match pmon_broker::spawn(config) {
        Ok(broker) => broker,
        Err(e) => panic!("broker did not start: {e}"),
    }
}

/// Options the way pmon's services should set them against this broker: a unique client id
/// without `/+#$`, a non-zero keep-alive (rumqttd refuses 0), the broker's packet limit both
/// ways (rumqttc's default is 10 KiB), and a clean session.
pub fn options(addr: SocketAddr, name: &str) -> MqttOptions {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed));
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(
            pmon_broker::DEFAULT_MAX_PAYLOAD_SIZE,
            pmon_broker::DEFAULT_MAX_PAYLOAD_SIZE,
        )
        .set_clean_session(true);
    options
}

/// A client with a request channel large enough not to throttle a burst.
pub fn client(options: MqttOptions) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options, 10_000)
}

/// Polls until the CONNACK.
pub async fn connected(eventloop: &mut EventLoop) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => panic!("no CONNACK within 5 s"),
        }
    }
}

/// Subscribes and polls until the SUBACK.
pub async fn subscribed(client: &AsyncClient, eventloop: &mut EventLoop, filter: &str, qos: QoS) {
    if let Err(e) = client.subscribe(filter, qos).await {
        panic!("subscribe request failed: {e}");
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscribe failed: {e}"),
            Err(_) => panic!("no SUBACK within 5 s"),
        }
    }
}

/// Drives an event loop in the background until it errors; returns the error.
pub fn drive(mut eventloop: EventLoop) -> tokio::task::JoinHandle<rumqttc::ConnectionError> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                return e;
            }
        }
    })
}

/// The next incoming PUBLISH within `timeout`, or None.
pub async fn next_publish(
    eventloop: &mut EventLoop,
    timeout: Duration,
) -> Option<rumqttc::Publish> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber connection failed: {e}"),
            Err(_) => return None,
        }
    }
}

/// Resident memory of this process (broker and clients together), in KiB, from /proc.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
