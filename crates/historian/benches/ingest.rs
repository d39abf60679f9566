//! The historian as a service: records/s from MQTT to committed storage, its RSS while it
//! ingests, and its RSS while it streams a large CSV export.
//!
//! `cargo bench -p pmon-historian --bench ingest [-- --records N --circuits C]`
//!
//! An embedded broker runs in this process; the historian runs as its own process (the
//! `pmon-historian` binary), so its RSS is its own. The publisher keeps at most a bounded
//! backlog ahead of what the historian has committed (rumqttd drops what a subscriber lags
//! behind by more than its log), so the figure is the historian's own pace.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmon_proto::frame::{Frame, FrameRecord};
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};

const RECORDS_PER_FRAME: usize = 5;
const MAX_BACKLOG_RECORDS: u64 = 40_000;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Counts the bytes of a (possibly huge) response without keeping them.
fn http_drain(port: u16, path: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = [0u8; 65536];
    let mut total = 0u64;
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total
}

fn inserted(port: u16) -> u64 {
    let Some(body) = http_get(port, "/api/v1/health") else {
        return 0;
    };
    let Some(json) = body.split_once("\r\n\r\n").map(|(_, b)| b) else {
        return 0;
    };
    // The body may be chunked; the JSON object is the part between the outer braces.
    let start = json.find('{').unwrap_or(0);
    let end = json.rfind('}').map(|e| e + 1).unwrap_or(json.len());
    serde_json::from_str::<serde_json::Value>(&json[start..end])
        .ok()
        .and_then(|v| v["ingest"]["records_inserted"].as_u64())
        .unwrap_or(0)
}

fn rss_kib(child: &Child) -> u64 {
    rss_of(child.id())
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn frame(circuit: usize, first_seq: u64, t0_ms: i64) -> Vec<u8> {
    let records = (0..RECORDS_PER_FRAME as u64)
        .map(|k| {
            let seq = first_seq + k;
            let wobble = ((seq * 7919 + circuit as u64 * 104_729) % 200) as i64;
            FrameRecord {
                seq,
                ts_ms: t0_ms + seq as i64 * 200,
                duration_us: 200_000,
                voltage_mv: 230_000 + wobble as u32 * 10,
                current_ua: 5_000_000 + wobble as u32 * 1563,
                frequency_mhz: 50_000 + (wobble % 20) as u32,
                real_power_mw: 1_100_000 + wobble * 500,
                reactive_power_mvar: 200_000 + wobble * 100,
                apparent_power_mva: 1_150_000 + wobble as u64 * 500,
                power_factor: 9_560,
                crest_factor: 1_414,
                phase_angle: 1_000,
                energy_import_mwh: seq * 61,
                energy_export_mwh: 0,
                flags: 0,
            }
        })
        .collect();
    Frame {
        circuit: format!("{circuit:08x}"),
        records,
    }
    .encode()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total_records = arg("--records", 1_000_000);
    let circuits = arg("--circuits", 100) as usize;
    let broker = pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral()).expect("broker");
    let mqtt_port = broker.client_addr().port();
    let api_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut historian = Command::new(env!("CARGO_BIN_EXE_pmon-historian"))
        .args([
            "--site",
            "bench",
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{mqtt_port}"),
        ])
        .args(["--data-dir", dir.path().to_str().expect("utf-8 path")])
        .args(["--api-port", &api_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pmon-historian");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(api_port, "/api/v1/health").is_none() {
        assert!(Instant::now() < deadline, "historian did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut options = MqttOptions::new("bench-publisher", "127.0.0.1", mqtt_port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    tokio::spawn(async move {
        while let Ok(Event::Incoming(_) | Event::Outgoing(_)) = eventloop.poll().await {}
    });

    let t0_ms = 1_764_000_000_000i64;
    let frames_per_circuit = total_records / (circuits * RECORDS_PER_FRAME) as u64;
    let total = frames_per_circuit * (circuits * RECORDS_PER_FRAME) as u64;
    let started = Instant::now();
    let mut published = 0u64;
    let mut peak_rss = 0u64;
    let mut done = 0u64;
    for f in 0..frames_per_circuit {
        for circuit in 0..circuits {
            let topic = format!("pmon/bench/circuit/{circuit:08x}/frame");
            let payload = frame(circuit, f * RECORDS_PER_FRAME as u64, t0_ms);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish");
            published += RECORDS_PER_FRAME as u64;
        }
        while published - done > MAX_BACKLOG_RECORDS {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done = tokio::task::spawn_blocking(move || inserted(api_port))
                .await
                .unwrap_or(done);
            peak_rss = peak_rss.max(rss_kib(&historian));
        }
    }
    while done < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        done = tokio::task::spawn_blocking(move || inserted(api_port))
            .await
            .unwrap_or(done);
        peak_rss = peak_rss.max(rss_kib(&historian));
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "ingest stalled at {done}/{total}"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = total as f64 / seconds;

    // A CSV export of everything, streamed, while sampling the historian's RSS.
    let before_export = rss_kib(&historian);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pid_rss = {
        let id = historian.id();
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_of(id));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let export_started = Instant::now();
    let bytes = http_drain(
        api_port,
        "/api/v1/export.csv?from=2025-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&resolution=raw",
    );
    let export_seconds = export_started.elapsed().as_secs_f64();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let export_peak = pid_rss.join().unwrap_or(0);
    let _ = historian.kill();
    let _ = historian.wait();

    println!("| figure | value |");
    println!("| --- | --: |");
    println!("| records from MQTT to committed storage | {total} in {seconds:.1} s = **{rate:.0} records/s** |");
    println!(
        "| historian peak RSS while ingesting | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| CSV export of all {total} rows | {:.1} MB in {export_seconds:.1} s |",
        bytes as f64 / 1e6
    );
    println!(
        "| historian RSS before / peak during the export | {:.1} / {:.1} MiB |",
        before_export as f64 / 1024.0,
        export_peak as f64 / 1024.0
    );
    println!(
        "BENCH historian ingest records={total} records_per_s={rate:.0} peak_rss_kib={peak_rss} export_bytes={bytes} export_s={export_seconds:.2} export_peak_rss_kib={export_peak}"
    );
}
