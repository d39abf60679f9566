//! Publish throughput through the embedded broker, side by side with a real mosquitto.
//!
//! One rumqttc publisher publishes N messages as fast as it can to `bench/data`; one rumqttc
//! subscriber (same QoS, filter `bench/#`) counts them. A run's rate is the messages received
//! divided by the time from the first publish to the last receipt; messages that never arrive
//! are reported as lost (rumqttd has no back-pressure: a publisher more than a filter's log
//! (8 MiB by default) ahead of the subscriber makes it skip messages, QoS 1 included). Cases:
//! QoS 0 and 1 × 64-byte (a postcard record) and 1 KiB payloads, each repeated, medians
//! reported.
//!
//! ```text
//! cargo bench -p pmon-broker --bench publish
//! PMON_BENCH_N=50000 PMON_BENCH_REPS=3 cargo bench -p pmon-broker --bench publish
//! # add a row for the embedded broker with a larger per-filter log (here 512 MiB):
//! PMON_BENCH_BIG_LOG_MIB=512 cargo bench -p pmon-broker --bench publish
//! ```
//!
//! mosquitto is started by the bench on a free port with a temporary config (found on PATH or
//! in /usr/sbin); without it the bench says so and measures the embedded broker only.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const TOPIC: &str = "bench/data";
const FILTER: &str = "bench/#";
/// rumqttc request channel: large, so the publisher is not throttled by it.
const CHANNEL_CAPACITY: usize = 10_000;
/// A run ends when the subscriber has everything, or has received nothing for this long.
const QUIET: Duration = Duration::from_secs(3);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing else we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_number("PMON_BENCH_N", 200_000);
    let reps = env_number("PMON_BENCH_REPS", 5).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot build a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench(n, reps)) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

struct Case {
    broker: &'static str,
    qos: QoS,
    payload: usize,
    rates: Vec<f64>,
    lost: u64,
    lossy_runs: u64,
    failed_runs: u64,
}

async fn bench(n: u64, reps: u64) -> Result<(), String> {
    println!("# pmon-broker publish benchmark");
    println!(
        "machine: {} CPUs, {}; N = {n} messages per run, {reps} runs per case",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        cpu_model()
    );

    let embedded = pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral())
        .map_err(|e| format!("embedded broker: {e}"))?;
    let mut brokers: Vec<(&'static str, SocketAddr)> =
        vec![("rumqttd (embedded)", embedded.client_addr())];
    let big_log_mib = env_number("PMON_BENCH_BIG_LOG_MIB", 0) as usize;
    let big = if big_log_mib > 0 {
        let mut config = pmon_broker::BrokerConfig::ephemeral();
        config.max_segment_size = 64 * 1024 * 1024;
        config.max_segment_count = big_log_mib.div_ceil(64);
        let big = pmon_broker::spawn(config).map_err(|e| format!("big-log broker: {e}"))?;
        brokers.push(("rumqttd (big log)", big.client_addr()));
        println!(
            "rumqttd (big log): wide filter log {} × 64 MiB",
            big_log_mib.div_ceil(64)
        );
        Some(big)
    } else {
        None
    };

    let _mosquitto = match Mosquitto::start() {
        Ok(Some(mosquitto)) => {
            println!("{}", mosquitto.version);
            brokers.push(("mosquitto", mosquitto.addr));
            Some(mosquitto)
        }
        Ok(None) => {
            println!("mosquitto: not found on PATH (nor /usr/sbin): skipped. Install it with `apt-get install mosquitto`.");
            None
        }
        Err(e) => {
            println!("mosquitto: could not start ({e}): skipped");
            None
        }
    };

    let mut cases = Vec::new();
    for payload in [64usize, 1024] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for &(broker, addr) in &brokers {
                let mut case = Case {
                    broker,
                    qos,
                    payload,
                    rates: Vec::new(),
                    lost: 0,
                    lossy_runs: 0,
                    failed_runs: 0,
                };
                for _ in 0..reps {
                    match run_once(addr, qos, payload, n).await {
                        Ok(run) if run.received > 0 => {
                            case.lost += n - run.received;
                            case.lossy_runs += u64::from(run.received < n);
                            case.rates
                                .push(run.received as f64 / run.elapsed.as_secs_f64());
                        }
                        Ok(_) => {
                            eprintln!("{broker} QoS {} {payload} B: nothing received", qos as u8);
                            case.lost += n;
                            case.failed_runs += 1;
                        }
                        Err(e) => {
                            eprintln!("{broker} QoS {} {payload} B: run failed: {e}", qos as u8);
                            case.failed_runs += 1;
                        }
                    }
                }
                eprintln!(
                    "done: {broker} QoS {} {payload} B: {:?}",
                    qos as u8,
                    case.rates.iter().map(|r| r.round()).collect::<Vec<_>>()
                );
                cases.push(case);
            }
        }
    }

    println!();
    println!("| broker | QoS | payload | median msg/s received | min | max | runs with loss | lost msgs (all runs) |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for case in &cases {
        let (median, min, max) = summary(&case.rates);
        println!(
            "| {} | {} | {} B | {} | {} | {} | {}/{} | {} ({:.1} %) |",
            case.broker,
            case.qos as u8,
            case.payload,
            thousands(median),
            thousands(min),
            thousands(max),
            case.lossy_runs + case.failed_runs,
            case.rates.len() as u64 + case.failed_runs,
            case.lost,
            100.0 * case.lost as f64 / (n * reps) as f64
        );
    }
    println!();
    for case in &cases {
        let (median, min, max) = summary(&case.rates);
        println!(
            "BENCH broker={} qos={} payload_bytes={} n={n} reps={reps} median_msgs_per_s={:.0} min={:.0} max={:.0} lossy_runs={} lost={}",
            case.broker
                .replace(" (embedded)", "")
                .replace(" (big log)", "-big-log"),
            case.qos as u8,
            case.payload,
            median,
            min,
            max,
            case.lossy_runs + case.failed_runs,
            case.lost
        );
    }
    embedded.stop().await.map_err(|e| e.to_string())?;
    if let Some(big) = big {
        big.stop().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Run {
    received: u64,
    elapsed: Duration,
}

fn options(addr: SocketAddr, id: String) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_clean_session(true);
    options
}

async fn wait_for(
    eventloop: &mut EventLoop,
    what: &str,
    want: fn(&Packet) -> bool,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(packet))) if want(&packet) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("waiting for {what}: {e}")),
            Err(_) => return Err(format!("no {what} within 5 s")),
        }
    }
}

async fn run_once(addr: SocketAddr, qos: QoS, payload_len: usize, n: u64) -> Result<Run, String> {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let (sub, mut sub_loop) =
        AsyncClient::new(options(addr, format!("bench-sub-{run}")), CHANNEL_CAPACITY);
    wait_for(&mut sub_loop, "CONNACK", |p| {
        matches!(p, Packet::ConnAck(_))
    })
    .await?;
    sub.subscribe(FILTER, qos)
        .await
        .map_err(|e| e.to_string())?;
    wait_for(&mut sub_loop, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await?;

    let (publ, mut pub_loop) =
        AsyncClient::new(options(addr, format!("bench-pub-{run}")), CHANNEL_CAPACITY);
    wait_for(&mut pub_loop, "CONNACK", |p| {
        matches!(p, Packet::ConnAck(_))
    })
    .await?;

    // The subscriber counts in its own task, polling continuously.
    let counter = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < n {
            match tokio::time::timeout(QUIET, sub_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    received += 1;
                    last = Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        (received, last, sub_loop)
    });
    // The publisher's event loop is polled all the time by its own task; publish requests come
    // from another (awaiting `publish` in the polling task can deadlock).
    let driver = tokio::spawn(async move {
        loop {
            if pub_loop.poll().await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let payload = vec![0x5Au8; payload_len];
    let publisher = publ.clone();
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            if publisher
                .publish(TOPIC, qos, false, payload.clone())
                .await
                .is_err()
            {
                return;
            }
        }
    });

    let (received, last, _sub_loop) = counter.await.map_err(|e| e.to_string())?;
    producer.abort();
    let _ = publ.try_disconnect();
    let _ = sub.try_disconnect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    driver.abort();
    Ok(Run {
        received,
        elapsed: last.saturating_duration_since(started),
    })
}

fn summary(rates: &[f64]) -> (f64, f64, f64) {
    if rates.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = rates.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

fn thousands(rate: f64) -> String {
    if rate == 0.0 {
        "–".into()
    } else {
        format!("{:.0}k", rate / 1000.0)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A mosquitto started for the bench, killed when dropped.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    version: String,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn find() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("mosquitto"))
                .find(|p| p.is_file())
        });
        on_path.or_else(|| {
            let sbin = Path::new("/usr/sbin/mosquitto");
            sbin.is_file().then(|| sbin.to_path_buf())
        })
    }

    fn start() -> Result<Option<Self>, String> {
        let Some(binary) = Self::find() else {
            return Ok(None);
        };
        let version = Command::new(&binary)
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "mosquitto (version unknown)".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = dir.path().join("mosquitto.conf");
        // Generous limits so that mosquitto does not drop messages to a busy subscriber.
        let text = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_inflight_messages 100\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             log_type error\n"
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut mosquitto = Self {
            child,
            addr,
            version,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = mosquitto.child.try_wait() {
                return Err(format!("exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("not listening after 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(mosquitto))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
