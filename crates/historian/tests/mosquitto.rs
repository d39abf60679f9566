//! The historian against a real mosquitto (when installed): with mosquitto's defaults
//! (`max_inflight_messages 20`) it keeps up; with pmon's recommended settings it commits by
//! the hundred. Skipped, with a note, where mosquitto is not installed.
//!
//! Measured with mosquitto 2.0.11: it sends a QoS 1 subscriber 20 messages and then waits for
//! acknowledgements, but once they come it sends everything it queued meanwhile at once, so
//! the window only holds back the first burst and the historian's window detection (unit
//! tested in `ingest.rs`) does not kick in.

mod service_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pmon_historian::{Historian, HistorianConfig, MqttSettings};
use service_support::*;

const SITE: &str = "mosq";
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

struct Mosquitto {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto(dir: &Path, extra: &str) -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("mosquitto is not installed: skipped");
        return None;
    }
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n"),
    )
    .unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Mosquitto { child, addr })
}

/// Starts a historian, publishes `frames` frames of 5 records over 10 circuits as fast as
/// possible, waits until all are stored; returns (seconds taken, commits, detected window).
async fn ingest_burst(broker: std::net::SocketAddr, frames: u64) -> (f64, u64, Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HistorianConfig::new(SITE, dir.path());
    config.mqtt = MqttSettings {
        url: format!("mqtt://{broker}"),
        client_id: None,
        credentials: None,
    };
    config.api_bind = "127.0.0.1:0".parse().unwrap();
    let historian = Historian::start(config).await.unwrap();
    let stats = historian.stats();
    wait_for(Duration::from_secs(30), "subscribed", || {
        stats.subscribed.load(Ordering::Relaxed)
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut publisher = Publisher::connect(broker).await;
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let started = Instant::now();
    for f in 0..frames {
        let circuit = format!("{:08x}", f % 10);
        let block = f / 10;
        let recs = records(1_000 + block * 5, now + block as i64 * 1000, 5);
        expected
            .entry(circuit.clone())
            .or_default()
            .extend(recs.iter().map(|r| r.seq));
        publisher.frame(SITE, &circuit, recs).await;
    }
    publisher.flushed().await;
    let total = frames * 5;
    wait_for(Duration::from_secs(30), "every record stored", || {
        stats.inserted.load(Ordering::Relaxed) >= total
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let commits = stats.commits.load(Ordering::Relaxed);
    let window = stats.detected_window.load(Ordering::Relaxed);
    historian.stop().await.unwrap();
    assert_exactly_once(&dir.path().join("historian.sqlite"), &expected);
    (took, commits, (window > 0).then_some(window))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mosquitto_settings_keep_up() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = mosquitto(dir.path(), "") else {
        return;
    };
    // 600 frames: at 20 messages per 1 s commit this would take 30 s.
    let (took, commits, window) = ingest_burst(broker.addr, 600).await;
    eprintln!("default mosquitto: {took:.1} s, {commits} commits, detected window {window:?}");
    assert!(took < 10.0, "took {took:.1} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommended_mosquitto_settings_commit_by_the_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = mosquitto(
        dir.path(),
        "max_inflight_messages 1000\nmax_queued_messages 100000\nmax_queued_bytes 0",
    ) else {
        return;
    };
    let (took, commits, window) = ingest_burst(broker.addr, 600).await;
    eprintln!("recommended mosquitto: {took:.1} s, {commits} commits, window {window:?}");
    assert_eq!(window, None);
    assert!(commits <= 600 / 100 + 3, "{commits} commits");
    assert!(took < 10.0, "took {took:.1} s");
}
