//! Helpers for the historian's service tests: frames, a publishing client against the real
//! embedded broker, a tiny HTTP client, and reading back what the store holds.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmon_historian::store::{FrameRecord, Store};
use pmon_proto::Frame;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A broker with pmon's defaults on a free loopback port.
pub fn broker() -> pmon_broker::BrokerHandle {
    init_tracing();
    match pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral()) {
        Ok(broker) => broker,
        Err(e) => panic!("broker did not start: {e}"),
    }
}

/// A plausible record: 230 V, a few amps, energy counters growing with `seq`.
pub fn record(seq: u64, ts_ms: i64) -> FrameRecord {
    let k = seq % 1000;
    FrameRecord {
        seq,
        ts_ms,
        duration_us: 200_000,
        voltage_mv: 229_000 + (k as u32 * 7) % 2_000,
        current_ua: 1_000_000 + (k as u32 * 13_579) % 9_000_000,
        frequency_mhz: 49_950 + (k as u32 % 100),
        real_power_mw: 200_000 + (k as i64 * 3_331) % 2_000_000 - 100_000,
        reactive_power_mvar: (k as i64 * 77) % 50_000 - 25_000,
        apparent_power_mva: 300_000 + (k * 4_441) % 2_000_000,
        power_factor: 9_000 + (k % 900) as i16,
        crest_factor: 1_414 + (k % 50) as u16,
        phase_angle: (k % 3_000) as i16 - 1_500,
        energy_import_mwh: seq * 11,
        energy_export_mwh: seq / 7,
        flags: 0,
    }
}

/// Consecutive records of one circuit from `first_seq`, 200 ms apart from `first_ts`.
pub fn records(first_seq: u64, first_ts: i64, n: usize) -> Vec<FrameRecord> {
    (0..n as u64)
        .map(|i| record(first_seq + i, first_ts + i as i64 * 200))
        .collect()
}

/// The frame topic of a circuit.
pub fn frame_topic(site: &str, circuit: &str) -> String {
    format!("pmon/{site}/circuit/{circuit}/frame")
}

/// A publishing client (clean session, QoS 1) whose event loop runs in a task. Counts the
/// broker's PUBACKs.
pub struct Publisher {
    pub client: AsyncClient,
    pub acked: Arc<AtomicU64>,
    pub sent: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(broker: SocketAddr) -> Publisher {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("test-publisher-{}", N.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_clean_session(true)
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&acked);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .expect("publisher connects within 5 s")
            .expect("publisher task alive");
        Publisher {
            client,
            acked,
            sent: 0,
            task,
        }
    }

    pub async fn raw(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish queued");
        self.sent += 1;
    }

    pub async fn frame(&mut self, site: &str, circuit: &str, records: Vec<FrameRecord>) {
        let payload = Frame {
            circuit: circuit.to_string(),
            records,
        }
        .encode();
        self.raw(&frame_topic(site, circuit), payload, false).await;
    }

    pub async fn info(&mut self, site: &str, circuit: &str, name: &str) {
        let payload = serde_json::json!({
            "id": circuit, "name": name, "bus": "sim-0", "address": 16, "serial": 1,
            "firmware": "1.0.0", "protocol": "pmon-1", "sample_rate": 1800
        })
        .to_string()
        .into_bytes();
        self.raw(
            &format!("pmon/{site}/circuit/{circuit}/info"),
            payload,
            true,
        )
        .await;
    }

    /// Waits until the broker acknowledged everything sent.
    pub async fn flushed(&self) {
        wait_for(Duration::from_secs(30), "publisher flushed", || {
            self.acked.load(Ordering::Relaxed) >= self.sent
        })
        .await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout`.
pub async fn wait_for(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored seq per circuit, in order, read through a read-only connection.
pub fn stored_seqs(db: &Path) -> BTreeMap<String, Vec<u64>> {
    let store = Store::open_read_only(db).expect("open read-only");
    let mut out = BTreeMap::new();
    for circuit in store.circuits().expect("circuits") {
        let mut seqs = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .raw_page(&circuit.id, i64::MIN / 4, i64::MAX / 4, after, 10_000)
                .expect("raw page");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.seq);
            seqs.extend(page.iter().map(|r| r.seq));
        }
        out.insert(circuit.id, seqs);
    }
    out
}

/// Asserts every circuit holds exactly `expected` seqs, each once.
pub fn assert_exactly_once(db: &Path, expected: &BTreeMap<String, Vec<u64>>) {
    let stored = stored_seqs(db);
    for (circuit, want) in expected {
        let got = stored.get(circuit).cloned().unwrap_or_default();
        let mut sorted = got.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "{circuit}: duplicates stored");
        if got != *want {
            let missing: Vec<_> = want.iter().filter(|s| !got.contains(s)).take(10).collect();
            let extra: Vec<_> = got.iter().filter(|s| !want.contains(s)).take(10).collect();
            panic!(
                "{circuit}: stored {} records, expected {}; missing (first 10) {missing:?}, unexpected {extra:?}",
                got.len(),
                want.len()
            );
        }
    }
}

/// A response of [`http_get`].
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A GET over a fresh connection (HTTP/1.1, `Connection: close`), chunked bodies decoded.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
