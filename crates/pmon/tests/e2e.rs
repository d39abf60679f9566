//! End to end: `pmon` as a subprocess, simulated slaves, real MQTT brokers and clients.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pmon_proto::frame::Frame;
use pmon_proto::health::CircuitInfo;
use pmon_proto::State;
use support::*;

/// Three circuits that exercise lagging, leading, exported and distorted current.
const SIM: &str = r#"
[[slave]]
address = 0x10
name = "Heat pump"
voltage = 230.0
frequency = 50.0
current = 12.5
phase = 30.0

[[slave]]
address = 0x11
name = "LED lighting"
voltage = 230.0
frequency = 50.0
current = 2.0
phase = -20.0
harmonics = [[3, 0.20], [5, 0.08]]

[[slave]]
address = 0x12
name = "Solar"
voltage = 230.0
frequency = 50.0
current = 8.0
phase = 0.0
export = true
"#;

struct Expected {
    voltage: f64,
    current: f64,
    real_power: f64,
    frequency: f64,
}

fn expected() -> BTreeMap<&'static str, Expected> {
    let fundamental = |v: f64, i: f64, phase_deg: f64| v * i * phase_deg.to_radians().cos();
    BTreeMap::from([
        (
            "Heat pump",
            Expected {
                voltage: 230.0,
                current: 12.5,
                real_power: fundamental(230.0, 12.5, 30.0),
                frequency: 50.0,
            },
        ),
        (
            "LED lighting",
            Expected {
                voltage: 230.0,
                current: 2.0 * (1.0f64 + 0.04 + 0.0064).sqrt(),
                real_power: fundamental(230.0, 2.0, -20.0),
                frequency: 50.0,
            },
        ),
        (
            "Solar",
            Expected {
                voltage: 230.0,
                current: 8.0,
                real_power: -230.0 * 8.0,
                frequency: 50.0,
            },
        ),
    ])
}

fn within(actual: f64, expected: f64, relative: f64, what: &str) {
    let error = (actual - expected).abs() / expected.abs();
    assert!(
        error <= relative,
        "{what}: {actual} vs {expected} ({:.3} %)",
        error * 100.0
    );
}

/// Checks what a broker carried for the three simulated circuits.
fn check_site(
    received: &BTreeMap<String, Vec<Vec<u8>>>,
    site: &str,
    states_from_mosquitto_sub: &str,
) {
    let root = format!("pmon/{site}");
    assert_eq!(
        received
            .get(&format!("{root}/status"))
            .and_then(|v| v.last())
            .map(|p| p.as_slice()),
        Some(&b"online"[..]),
        "service status"
    );
    let infos: Vec<CircuitInfo> = received
        .iter()
        .filter(|(topic, _)| topic.ends_with("/info"))
        .map(|(_, payloads)| CircuitInfo::from_json(payloads.last().unwrap()).unwrap())
        .collect();
    assert_eq!(infos.len(), 3, "one info per circuit: {infos:?}");
    let expected = expected();
    for info in &infos {
        let want = expected
            .get(info.name.as_str())
            .unwrap_or_else(|| panic!("unexpected circuit {info:?}"));
        let topic = |leaf: &str| format!("{root}/circuit/{}/{leaf}", info.id);
        assert_eq!(
            received
                .get(&topic("availability"))
                .and_then(|v| v.last())
                .map(|p| p.as_slice()),
            Some(&b"online"[..])
        );
        let frames = received
            .get(&topic("frame"))
            .unwrap_or_else(|| panic!("no frames for {}", info.name));
        let mut seqs = Vec::new();
        for payload in frames {
            let frame = Frame::decode(payload).unwrap();
            assert_eq!(frame.circuit, info.id);
            for record in frame.records {
                seqs.push(record.seq);
                // The first blocks after start-up may straddle the simulator's first samples.
                if seqs.len() < 3 {
                    continue;
                }
                within(
                    record.voltage(),
                    want.voltage,
                    0.01,
                    &format!("{} voltage", info.name),
                );
                within(
                    record.current(),
                    want.current,
                    0.01,
                    &format!("{} current", info.name),
                );
                within(
                    record.real_power(),
                    want.real_power,
                    0.01,
                    &format!("{} real power", info.name),
                );
                within(
                    record.frequency(),
                    want.frequency,
                    0.01,
                    &format!("{} frequency", info.name),
                );
            }
        }
        assert!(
            seqs.len() >= 5,
            "{}: only {} records",
            info.name,
            seqs.len()
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{}: sequence {seqs:?}",
            info.name
        );
        let states = received
            .get(&topic("state"))
            .unwrap_or_else(|| panic!("no state for {}", info.name));
        let state = State::from_json(states.last().unwrap()).unwrap();
        within(state.voltage, want.voltage, 0.01, "state voltage");
        within(state.real_power, want.real_power, 0.01, "state real power");
        assert!(
            states_from_mosquitto_sub.contains(&topic("state")),
            "mosquitto_sub saw no state for {}",
            info.name
        );
    }
}

/// `mosquitto_sub` for a few seconds: lines of `topic payload`.
fn mosquitto_sub(port: u16, filter: &str, seconds: u32) -> String {
    let output = Command::new(program("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            filter,
            "-v",
            "-W",
            &seconds.to_string(),
        ])
        .output()
        .expect("run mosquitto_sub");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in text.lines() {
        let (_, json) = line.split_once(' ').expect("topic and payload");
        State::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("state {json}: {e}"));
    }
    text
}

/// `pmon acquire` on the simulated circuits, publishing to the broker on `port`.
fn spawn_acquire(dir: &Path, sim: &str, port: u16, site: &str) -> Process {
    let url = format!("mqtt://127.0.0.1:{port}");
    let data = dir.join("data");
    Process::spawn(
        "pmon-acquire",
        &pmon(),
        &[
            "acquire",
            "--sim-config",
            sim,
            "--mqtt-url",
            &url,
            "--site",
            site,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir,
    )
}

fn write_sim(dir: &Path) -> String {
    let path = dir.join("sim.toml");
    std::fs::write(&path, SIM).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_publishes_every_configured_circuit_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let sim = write_sim(dir.path());
    let port = free_port();
    let api_port = free_port();
    let data = dir.path().join("data");
    let mut pmon = Process::spawn(
        "pmon-up",
        &pmon(),
        &[
            "up",
            "--sim-config",
            &sim,
            "--mqtt-port",
            &port.to_string(),
            "--api-port",
            &api_port.to_string(),
            "--site",
            "e2e",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
    );
    wait_for_port(port, Duration::from_secs(20));
    let sub =
        tokio::task::spawn_blocking(move || mosquitto_sub(port, "pmon/e2e/circuit/+/state", 4));
    let received = collect(port, "pmon/e2e/#", Duration::from_secs(4)).await;
    let states = sub.await.unwrap();
    check_site(&received, "e2e", &states);

    // The historian runs in `pmon up` too: every circuit is stored, and the CSV export holds
    // the records the broker carried.
    let (status, circuits) = http_get(api_port, "/api/v1/circuits");
    assert_eq!(status, 200, "{circuits}");
    let circuits: serde_json::Value = serde_json::from_str(&circuits).unwrap();
    assert_eq!(
        circuits["circuits"].as_array().map(Vec::len),
        Some(3),
        "{circuits}"
    );
    let (status, csv) = http_get(
        api_port,
        "/api/v1/export.csv?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&resolution=raw",
    );
    assert_eq!(status, 200, "{csv}");
    let header = csv.lines().next().unwrap_or_default();
    for column in [
        "time",
        "circuit",
        "seq",
        "voltage",
        "real_power",
        "energy_import_kwh",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} in {header}"
        );
    }
    let stored: std::collections::BTreeSet<String> = csv
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').nth(2).map(str::to_string))
        .collect();
    let published: Vec<String> = received
        .iter()
        .filter(|(topic, _)| topic.ends_with("/frame"))
        .flat_map(|(_, payloads)| payloads.iter())
        .flat_map(|payload| Frame::decode(payload).unwrap().records)
        .map(|record| record.seq.to_string())
        .collect();
    let missing: Vec<&String> = published
        .iter()
        .filter(|seq| !stored.contains(*seq))
        .collect();
    // The last second of frames may not be committed yet.
    assert!(missing.len() <= 3 * 6, "not stored: {missing:?}");

    let status = pmon.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        pmon.log_text()
    );
    assert!(
        data.join("acquisition-state.json").exists(),
        "bases saved on shutdown"
    );
    let check = Command::new(support::pmon())
        .args(["historian", "--check", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(report.contains("3 circuits"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn acquire_publishes_to_a_real_mosquitto_and_says_offline_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let sim = write_sim(dir.path());
    let (_mosquitto, port) = mosquitto(dir.path());
    let mut acquire = spawn_acquire(dir.path(), &sim, port, "mq");
    let sub =
        tokio::task::spawn_blocking(move || mosquitto_sub(port, "pmon/mq/circuit/+/state", 4));
    let received = collect(port, "pmon/mq/#", Duration::from_secs(4)).await;
    let states = sub.await.unwrap();
    check_site(&received, "mq", &states);

    let status = acquire.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        acquire.log_text()
    );
    let after = collect(port, "pmon/mq/status", Duration::from_millis(500)).await;
    assert_eq!(
        after
            .get("pmon/mq/status")
            .and_then(|v| v.last())
            .map(|p| p.as_slice()),
        Some(&b"offline"[..]),
        "retained status after a clean stop"
    );
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(pmon())
        .args([
            "up",
            "--sim",
            "1",
            "--mqtt-port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn config_example_prints_a_file_pmon_accepts() {
    let output = Command::new(pmon())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pmon.toml");
    std::fs::write(&path, &output.stdout).unwrap();
    let sim = Command::new(pmon())
        .args(["config", "example", "--simulator"])
        .output()
        .unwrap();
    assert!(sim.status.success());
    let sim_path = dir.path().join("sim.toml");
    std::fs::write(&sim_path, &sim.stdout).unwrap();
    // Both files load: `tail -n 0` resolves the configuration, then fails only to connect.
    let check = Command::new(pmon())
        .args([
            "--config",
            path.to_str().unwrap(),
            "--sim-config",
            sim_path.to_str().unwrap(),
            "--mqtt-port",
            &free_port().to_string(),
            "tail",
            "-n",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("cannot reach the MQTT broker"), "{stderr}");
}

#[test]
fn a_bad_sim_config_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[slave]]\naddress = 0x10\nvoltage = 230.0\nfrequency = 50.0\ncurrent = 1.0\nphasee = 3.0\n").unwrap();
    let output = Command::new(pmon())
        .args([
            "up",
            "--sim-config",
            path.to_str().unwrap(),
            "--mqtt-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("phasee"), "{stderr}");
}

/// A broker restart in the middle of a run: the acquisition holds its frames while the broker
/// is away and delivers them after, so a persistent subscriber sees every sequence number.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_loses_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    let sim = write_sim(dir.path());
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // mosquitto started as root drops to its own user, which must be able to save its database.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut starts = 0;
    let mut start_broker = || {
        starts += 1;
        let name = format!("mosquitto-{starts}");
        let broker = Process::spawn(
            &name,
            &program("mosquitto"),
            &["-c", conf.to_str().unwrap()],
            dir.path(),
        );
        wait_for_port(port, Duration::from_secs(10));
        broker
    };
    let mut broker = start_broker();
    let subscriber = tokio::spawn(persistent_frames(port, Duration::from_secs(12)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acquire = spawn_acquire(dir.path(), &sim, port, "outage");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(broker.terminate(Duration::from_secs(10)).success());
    // The broker is away for 3 s: 15 blocks per circuit are made meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _broker = start_broker();
    let seqs = subscriber.await.unwrap();
    assert!(
        acquire.terminate(Duration::from_secs(15)).success(),
        "log:\n{}",
        acquire.log_text()
    );
    assert_eq!(
        seqs.len(),
        3,
        "frames from every circuit: {:?}",
        seqs.keys()
    );
    for (circuit, mut seqs) in seqs {
        seqs.sort_unstable();
        seqs.dedup();
        let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
        assert!(
            seqs.len() >= 40,
            "{circuit}: only {} records: {seqs:?}; log:\n{}",
            seqs.len(),
            acquire.log_text()
        );
        assert_eq!(span as usize, seqs.len(), "{circuit}: gaps in {seqs:?}");
    }
}

/// Sequence numbers per circuit seen by a QoS 1 subscriber with a persistent session that
/// reconnects on its own.
async fn persistent_frames(port: u16, duration: Duration) -> BTreeMap<String, Vec<u64>> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("outage-subscriber", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_clean_session(false)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client
        .subscribe("pmon/outage/circuit/+/frame", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(event) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let frame = Frame::decode(&p.payload).unwrap();
                seqs.entry(frame.circuit)
                    .or_default()
                    .extend(frame.records.iter().map(|r| r.seq));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    seqs
}
