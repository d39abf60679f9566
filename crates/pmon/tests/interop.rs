//! Interop with what people run next to pmon: a real mosquitto, `mosquitto_sub`, paho-mqtt
//! (the Python client Home Assistant itself uses) and Home Assistant's own discovery code.
//! Everything is checked against `docs/mqtt.md`.
//!
//! The Python side lives in `tests/ha/`; `scripts/test` makes the virtualenv it needs
//! (`target/py-venv`: `homeassistant` and `paho-mqtt`, pinned).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pmon_proto::discovery::{self, Discovery, Mode, QUANTITIES};
use pmon_proto::health::CircuitInfo;
use pmon_proto::{State, Topics};
use serde_json::Value;
use support::*;

/// The interpreter of the test virtualenv; `None` (after a loud message) only when
/// `scripts/test` could not reach PyPI and said so in `PMON_SKIP_PYTHON_TESTS`.
fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PMON_TEST_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    if let Ok(reason) = std::env::var("PMON_SKIP_PYTHON_TESTS") {
        eprintln!("\n!!!!! SKIPPED: the Python interop checks cannot run: {reason} !!!!!\n");
        return None;
    }
    panic!(
        "{} is missing: run scripts/test, which creates it with homeassistant and paho-mqtt",
        venv.display()
    );
}

fn ha_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ha")
        .join(name)
}

/// The documented state example (`docs/mqtt.md`), as a file for the checker's templates.
fn documented_state() -> String {
    let doc = docs();
    let start = doc
        .find(r#"{"ts":"2025-11-25T15:30:00.200Z","seq""#)
        .expect("state example in docs/mqtt.md");
    let end = start + doc[start..].find('\n').unwrap();
    let json = &doc[start..end];
    State::from_json(json.as_bytes()).expect("documented state parses");
    json.to_string()
}

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/mqtt.md"))
        .expect("docs/mqtt.md")
}

/// The keys of the JSON state as `docs/mqtt.md` lists them in its State table.
fn documented_state_keys() -> Vec<String> {
    let doc = docs();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("State"))
        .expect("a State section");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_string()))
        .collect()
}

/// Runs Home Assistant's schema over `messages`; returns (passed, output).
fn check_discovery(
    python: &Path,
    dir: &Path,
    name: &str,
    messages: &[(String, String)],
    prefix: &str,
    state: &str,
) -> (bool, String) {
    let list: Vec<Value> = messages
        .iter()
        .map(|(topic, payload)| serde_json::json!({"topic": topic, "payload": payload}))
        .collect();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let state_file = dir.join(format!("{name}-state.json"));
    std::fs::write(&state_file, state).unwrap();
    let output = Command::new(python)
        .arg(ha_script("check_discovery.py"))
        .arg(&file)
        .args(["--prefix", prefix, "--state"])
        .arg(&state_file)
        .output()
        .expect("run check_discovery.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn circuits() -> Vec<CircuitInfo> {
    vec![
        CircuitInfo {
            id: "00c0ffee".into(),
            name: "Heat pump".into(),
            bus: "i2c-1".into(),
            address: 0x10,
            serial: 0x00c0_ffee,
            firmware: "1.2.3".into(),
            protocol: "pmon-1".into(),
            sample_rate: 1800,
        },
        // A legacy prototype board with a name that needs escaping.
        CircuitInfo {
            id: "4c1a2b10".into(),
            name: "Lab \"bench\" ∑ 3/4".into(),
            bus: "bridge-0".into(),
            address: 0x10,
            serial: 0x4c1a_2b10,
            firmware: "prototype".into(),
            protocol: "legacy".into(),
            sample_rate: 1840,
        },
    ]
}

/// Every discovery message pmon can emit for these circuits, in one mode.
fn emitted(mode: Mode) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    for site in ["home", "Gîte nord"] {
        let discovery = Discovery {
            prefix: discovery::DEFAULT_PREFIX.into(),
            mode,
            site: site.into(),
            sw_version: env!("CARGO_PKG_VERSION").into(),
        };
        let topics = Topics::new(site).unwrap();
        for info in circuits() {
            for message in discovery.messages(&topics, &info) {
                messages.push((message.topic, message.payload));
            }
        }
    }
    messages
}

#[test]
fn home_assistant_accepts_every_discovery_payload_and_refuses_a_wrong_unit() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = documented_state();
    for mode in [Mode::Device, Mode::Entity] {
        let messages = emitted(mode);
        let (ok, output) = check_discovery(
            &python,
            dir.path(),
            &format!("{mode:?}"),
            &messages,
            "homeassistant",
            &state,
        );
        assert!(ok, "{mode:?} discovery refused:\n{output}");
        assert!(output.contains("Home Assistant 20"), "{output}");
        let sensors = 2 * circuits().len() * QUANTITIES.len();
        assert!(output.contains(&format!("({sensors} sensors)")), "{output}");
    }

    // The same check fails on a payload that differs only by the unit of reactive power.
    let wrong: Vec<(String, String)> = emitted(Mode::Device)
        .into_iter()
        .map(|(topic, payload)| {
            let bad = payload.replace(r#""unit_of_meas":"var""#, r#""unit_of_meas":"VAR""#);
            assert_ne!(bad, payload);
            (topic, bad)
        })
        .collect();
    let (ok, output) = check_discovery(
        &python,
        dir.path(),
        "wrong-unit",
        &wrong,
        "homeassistant",
        &state,
    );
    assert!(!ok, "VAR accepted:\n{output}");
    assert!(
        output.contains("unit 'VAR' is not valid for device class reactive_power"),
        "{output}"
    );

    // And on energy that the energy dashboard could not use.
    let wrong: Vec<(String, String)> = emitted(Mode::Entity)
        .into_iter()
        .map(|(topic, payload)| (topic, payload.replace("total_increasing", "measurement")))
        .collect();
    let (ok, output) = check_discovery(
        &python,
        dir.path(),
        "wrong-state-class",
        &wrong,
        "homeassistant",
        &state,
    );
    assert!(!ok, "energy as a measurement accepted:\n{output}");
    assert!(
        output.contains("state class measurement is not valid for device class energy"),
        "{output}"
    );
}

/// Two simulated circuits.
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
name = "Solar"
voltage = 230.0
frequency = 50.0
current = 8.0
phase = 0.0
export = true
"#;

const KEEP_ALIVE_S: u64 = 2;

/// `pmon acquire` with a config file, publishing to mosquitto on `port`.
fn acquire(dir: &Path, port: u16, site: &str, extra_config: &str) -> Process {
    let sim = dir.join("sim.toml");
    std::fs::write(&sim, SIM).unwrap();
    let config = dir.join(format!("{site}.toml"));
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nkeep_alive_s = {KEEP_ALIVE_S}\n\n[acquisition]\nstate_interval_ms = 500\nraw_topics = true\n\n{extra_config}"
        ),
    )
    .unwrap();
    let data = dir.join(format!("data-{site}"));
    Process::spawn(
        &format!("pmon-{site}"),
        &pmon(),
        &[
            "--config",
            config.to_str().unwrap(),
            "acquire",
            "--sim-config",
            sim.to_str().unwrap(),
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{port}"),
            "--site",
            site,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir,
    )
}

/// `mosquitto_sub` with `-F '%r %t %p'`: (retained, topic, payload) per message.
fn mosquitto_sub(
    port: u16,
    topic: &str,
    count: u32,
    timeout_s: u32,
) -> Vec<(bool, String, String)> {
    let output = Command::new(program("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-F", "%r %t %p", "-C", &count.to_string()])
        .args(["-W", &timeout_s.to_string()])
        .output()
        .expect("run mosquitto_sub");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (retained, rest) = line.split_once(' ')?;
            let (topic, payload) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((retained == "1", topic.to_string(), payload.to_string()))
        })
        .collect()
}

/// Waits until the retained status of `site` says `online`.
fn wait_online(port: u16, site: &str, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let seen = mosquitto_sub(port, &format!("pmon/{site}/status"), 1, 1);
        if seen.iter().any(|(_, _, p)| p == "online") {
            return;
        }
    }
    panic!("{site} never said online; log:\n{}", process.log_text());
}

/// Sends `signal` to the acquisition and measures how long until the broker publishes its
/// `offline` last will (or pmon's own `offline`), as a subscriber already listening sees it.
fn time_to_offline(port: u16, site: &str, process: &Process, signal_name: &str) -> Duration {
    let topic = format!("pmon/{site}/status");
    let listener = std::thread::spawn(move || {
        let seen = mosquitto_sub(port, &topic, 2, 15);
        (Instant::now(), seen)
    });
    // The listener has its retained `online` before the signal.
    std::thread::sleep(Duration::from_millis(700));
    let sent = Instant::now();
    signal(process.child.id(), signal_name);
    let (done, seen) = listener.join().unwrap();
    let payloads: Vec<&str> = seen.iter().map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(payloads, ["online", "offline"], "{site}: {seen:?}");
    done - sent
}

/// One line of `mqtt_client.py`'s output.
#[derive(Debug, Clone)]
struct Line {
    t: f64,
    topic: String,
    retain: bool,
    payload: Option<String>,
}

fn paho(
    python: &Path,
    dir: &Path,
    port: u16,
    topics: &[&str],
    seconds: f64,
    birth_after: f64,
) -> (Vec<Line>, f64) {
    let out = dir.join("paho.jsonl");
    let mut command = Command::new(python);
    command
        .arg(ha_script("mqtt_client.py"))
        .args(["--port", &port.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--birth-after", &birth_after.to_string()])
        .arg("--out")
        .arg(&out);
    for topic in topics {
        command.args(["--topic", topic]);
    }
    let status = command.status().expect("run mqtt_client.py");
    assert!(status.success(), "paho client failed");
    let mut lines = Vec::new();
    let mut birth = f64::NAN;
    for text in std::fs::read_to_string(&out).unwrap().lines() {
        let value: Value = serde_json::from_str(text).unwrap();
        if let Some(t) = value.get("birth") {
            birth = t.as_f64().unwrap();
            continue;
        }
        lines.push(Line {
            t: value["t"].as_f64().unwrap(),
            topic: value["topic"].as_str().unwrap().to_string(),
            retain: value["retain"].as_bool().unwrap(),
            payload: value["payload"].as_str().map(str::to_string),
        });
    }
    (lines, birth)
}

#[test]
fn mosquitto_paho_and_mosquitto_sub_see_what_the_document_says() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_mosquitto, port) = mosquitto(dir.path());
    let mut device = acquire(dir.path(), port, "interop", "");
    let mut entity = acquire(
        dir.path(),
        port,
        "interop-old",
        "[homeassistant]\nmode = \"entity\"\nprefix = \"ha-old\"\n",
    );
    wait_online(port, "interop", &device);
    wait_online(port, "interop-old", &entity);
    std::thread::sleep(Duration::from_millis(500));

    // paho-mqtt, subscribed after everything was announced, then Home Assistant's birth.
    let (lines, birth) = paho(
        &python,
        dir.path(),
        port,
        &["pmon/interop/#", "homeassistant/#", "ha-old/#"],
        6.0,
        3.0,
    );
    let log = || format!("{}\n{}", device.log_text(), entity.log_text());

    // Retained, as the document says: status, availability, info, discovery.
    let first = |topic: &str| lines.iter().find(|l| l.topic == topic).cloned();
    let status = first("pmon/interop/status").expect("status");
    assert!(status.retain && status.payload.as_deref() == Some("online"));
    let infos: Vec<CircuitInfo> = lines
        .iter()
        .filter(|l| l.topic.ends_with("/info"))
        .map(|l| {
            assert!(l.retain, "info retained");
            CircuitInfo::from_json(l.payload.as_ref().unwrap().as_bytes()).unwrap()
        })
        .collect();
    let names: BTreeSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["Heat pump", "Solar"]), "{}", log());
    let topics = Topics::new("interop").unwrap();
    let device_discovery = Discovery {
        prefix: "homeassistant".into(),
        mode: Mode::Device,
        site: "interop".into(),
        sw_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut captured: Vec<(String, String)> = Vec::new();
    let mut state_example = String::new();
    for info in &infos {
        let root = format!("pmon/interop/circuit/{}", info.id);
        let availability = first(&format!("{root}/availability")).expect("availability");
        assert!(availability.retain);
        assert_eq!(availability.payload.as_deref(), Some("online"));

        // Discovery: retained, byte for byte what the documented builder makes.
        let expected = device_discovery.messages(&topics, info);
        assert_eq!(expected.len(), 1);
        let announced = first(&expected[0].topic).expect("discovery under the prefix");
        assert!(announced.retain, "discovery retained");
        assert_eq!(
            announced.payload.as_deref(),
            Some(expected[0].payload.as_str())
        );
        captured.push((announced.topic.clone(), announced.payload.clone().unwrap()));

        // The JSON state: exactly the documented keys, plausible values in their units.
        let states: Vec<&Line> = lines
            .iter()
            .filter(|l| l.topic == format!("{root}/state"))
            .collect();
        assert!(states.len() >= 6, "{} states: {}", states.len(), log());
        let last = states.last().unwrap().payload.clone().unwrap();
        let json: serde_json::Map<String, Value> = serde_json::from_str(&last).unwrap();
        let documented = documented_state_keys();
        let keys: BTreeSet<&String> = json.keys().collect();
        assert_eq!(keys, documented.iter().collect(), "state keys");
        // … in the documented order.
        let positions: Vec<usize> = documented
            .iter()
            .map(|key| last.find(&format!("\"{key}\":")).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "key order: {last}"
        );
        let state = State::from_json(last.as_bytes()).unwrap();
        assert!((state.voltage - 230.0).abs() < 2.3, "V: {state:?}");
        assert!((state.frequency - 50.0).abs() < 0.5, "Hz: {state:?}");
        let watts = if info.name == "Solar" {
            -1840.0
        } else {
            2490.0
        };
        assert!(
            (state.real_power - watts).abs() < watts.abs() * 0.02,
            "W: {state:?}"
        );
        assert!(state.energy_import_kwh >= 0.0 && state.energy_export_kwh >= 0.0);
        state_example = last.clone();

        // Raw topics: one plain number per quantity, the state's value.
        for quantity in &QUANTITIES {
            let raw: Vec<&Line> = lines
                .iter()
                .filter(|l| l.topic == topics.raw(&info.id, quantity.id))
                .collect();
            assert!(!raw.is_empty(), "no raw {}", quantity.id);
            for line in &raw {
                assert!(!line.retain);
                line.payload.as_ref().unwrap().parse::<f64>().unwrap();
            }
        }
        // Each raw real power is the real power of a state published with it.
        let state_powers: Vec<f64> = states
            .iter()
            .map(|l| {
                State::from_json(l.payload.as_ref().unwrap().as_bytes())
                    .unwrap()
                    .real_power
            })
            .collect();
        let last_state_t = states.last().unwrap().t;
        for line in lines
            .iter()
            .filter(|l| l.topic == topics.raw(&info.id, "real_power") && l.t <= last_state_t)
        {
            let value: f64 = line.payload.as_ref().unwrap().parse().unwrap();
            assert!(
                state_powers.contains(&value),
                "raw {value} not among {state_powers:?}"
            );
        }

        // Birth: the discovery again, not retained, then the state.
        let again = lines
            .iter()
            .find(|l| l.topic == expected[0].topic && !l.retain && l.t >= birth)
            .unwrap_or_else(|| panic!("no discovery after the birth at {birth}: {}", log()));
        assert_eq!(again.payload.as_deref(), Some(expected[0].payload.as_str()));
        assert!(
            states.iter().any(|l| l.t > again.t),
            "state after the re-sent discovery"
        );
    }

    // Entity mode under another prefix: one retained config per sensor.
    let old: Vec<&Line> = lines
        .iter()
        .filter(|l| l.topic.starts_with("ha-old/") && l.retain)
        .collect();
    assert_eq!(old.len(), 2 * QUANTITIES.len(), "{old:?}");
    assert!(old
        .iter()
        .all(|l| l.topic.starts_with("ha-old/sensor/pmon_interop-old_")));
    // Home Assistant's schema accepts what came over the wire.
    let (ok, output) = check_discovery(
        &python,
        dir.path(),
        "wire",
        &captured,
        "homeassistant",
        &state_example,
    );
    assert!(ok, "{output}");
    let old: Vec<(String, String)> = old
        .iter()
        .map(|l| (l.topic.clone(), l.payload.clone().unwrap()))
        .collect();
    let (ok, output) = check_discovery(
        &python,
        dir.path(),
        "wire-old",
        &old,
        "ha-old",
        &state_example,
    );
    assert!(ok, "{output}");

    // mosquitto_sub, subscribing late, gets the retained status.
    let late = mosquitto_sub(port, "pmon/interop/status", 1, 5);
    assert_eq!(
        late,
        [(
            true,
            "pmon/interop/status".to_string(),
            "online".to_string()
        )]
    );

    // kill -9: the socket closes without DISCONNECT and the broker sends the last will.
    let ka = Duration::from_secs(KEEP_ALIVE_S);
    let killed = time_to_offline(port, "interop", &device, "KILL");
    assert!(killed <= ka * 3 / 2, "offline after {killed:?}");
    device.wait(Duration::from_secs(5));
    // Frozen (a hung host, a pulled cable: no FIN): the broker gives up 1.5 × the keep-alive
    // after the last packet. mosquitto 2.0 looks at keep-alives only every 6 s (keepalive.c:
    // `last_keepalive_check + 5 < db.now_s`, in whole seconds), hence the upper bound; pmon's
    // default of 30 s would take at least 45 s.
    let frozen = time_to_offline(port, "interop-old", &entity, "STOP");
    eprintln!("offline after kill -9: {killed:?}; after SIGSTOP: {frozen:?}");
    assert!(
        frozen >= ka * 3 / 2 - Duration::from_millis(700)
            && frozen <= ka * 3 / 2 + Duration::from_secs(8),
        "offline after {frozen:?} with keep-alive {ka:?}"
    );
    let late = mosquitto_sub(port, "pmon/+/status", 2, 5);
    let late: BTreeMap<String, (bool, String)> = late
        .into_iter()
        .map(|(retained, topic, payload)| (topic, (retained, payload)))
        .collect();
    assert_eq!(late["pmon/interop/status"], (true, "offline".to_string()));
    assert_eq!(
        late["pmon/interop-old/status"],
        (true, "offline".to_string())
    );
    signal(entity.child.id(), "CONT");
    let _ = entity.terminate(Duration::from_secs(15));
}
