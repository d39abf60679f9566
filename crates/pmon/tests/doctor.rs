//! `pmon doctor` and `pmon slave set-address` as a user runs them: the binary, its output
//! and its exit status.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn pmon(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pmon"));
    command.args(args).stdin(Stdio::null());
    // The environment must not point the test at a config, broker or directory of its own.
    for (key, _) in std::env::vars() {
        if key.starts_with("PMON_") {
            command.env_remove(key);
        }
    }
    command.output().expect("run pmon")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

fn has_i2c_devices() -> bool {
    std::fs::read_dir("/dev")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("i2c-"))
        })
        .unwrap_or(false)
}

#[test]
fn doctor_on_this_machine_names_what_is_missing_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("mqtt://127.0.0.1:{}", closed_port());
    let output = pmon(&[
        "doctor",
        "--mqtt-url",
        &url,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    println!("{stdout}");
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");

    // One line per check, with its level first.
    for line in stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
    {
        assert!(
            ["OK ", "WARN ", "FAIL ", "SKIP ", "pmon doctor ", "summary:"]
                .iter()
                .any(|start| line.starts_with(start)),
            "unexpected line {line:?}"
        );
    }
    assert!(
        stdout.contains("OK    configuration: no config file"),
        "{stdout}"
    );
    if has_i2c_devices() {
        println!("note: this machine has /dev/i2c-* devices; the no-I2C assertions are skipped");
    } else {
        assert!(
            stdout.contains("FAIL  I2C buses: there is no /dev/i2c-* device on this machine"),
            "{stdout}"
        );
        assert!(stdout.contains("dtparam=i2c_arm=on"), "{stdout}");
        assert!(stdout.contains("sudo modprobe i2c-dev"), "{stdout}");
        assert!(
            stdout.contains("SKIP  slaves: no I2C bus to check"),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("FAIL  MQTT broker: {url}: connection refused")),
        "{stdout}"
    );
    assert!(
        stdout.contains("systemctl start"),
        "the broker's fix: {stdout}"
    );
    assert!(stdout.contains("      fix: "), "{stdout}");
    assert!(stdout.contains("OK    data directory:"), "{stdout}");
    assert!(data.is_dir());
    assert!(stdout.contains("summary: 2 checks failed"), "{stdout}");
    assert!(stdout.contains("exit status 1"), "{stdout}");
    assert!(stderr.contains("doctor: 2 of "), "{stderr}");
}

#[test]
fn doctor_on_the_simulator_with_a_running_broker_passes_and_lists_the_slaves() {
    let broker = pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral()).expect("broker");
    let url = format!("mqtt://127.0.0.1:{}", broker.local_addr().port());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = pmon(&[
        "doctor",
        "--sim",
        "2",
        "--mqtt-url",
        &url,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    println!("{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("OK    I2C buses: the simulator with 2 demo circuits"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK    slaves on sim-0: 2 pmon slaves found at 0x10, 0x11"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0x10: circuit 504d0010 (serial 504D0010), firmware 0.1.0, protocol 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK    CRC error rate on sim-0: 0.00 % (0 CRC errors in 100 transfers"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "OK    MQTT broker: {url} accepted an MQTT connection"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("pmon is ready (exit status 0)"), "{stdout}");

    // The health-check form prints nothing when all is well.
    let quiet = pmon(&["doctor", "--only", "broker", "--quiet", "--mqtt-url", &url]);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(text(&quiet.stdout), "");

    // JSON for scripts.
    let json = pmon(&["doctor", "--sim", "1", "--only", "slaves", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stdout));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks
        .iter()
        .any(|c| c["name"] == "slaves on sim-0" && c["level"] == "ok"));
}

#[test]
fn doctor_with_a_simulator_file_reports_a_noisy_bus_as_a_warning_and_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.toml");
    std::fs::write(
        &sim,
        "[[bus]]\nid = 0\ncorrupt_rate = 0.0005\n\n[[slave]]\naddress = 0x20\nvoltage = 230.0\n\
         frequency = 50.0\ncurrent = 5.0\n",
    )
    .unwrap();
    let output = pmon(&[
        "doctor",
        "--sim-config",
        sim.to_str().unwrap(),
        "--only",
        "i2c,slaves",
        "--samples",
        "400",
    ]);
    let stdout = text(&output.stdout);
    println!("{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "WARN alone exits 0: {stdout}"
    );
    assert!(stdout.contains("WARN  CRC error rate on sim-0"), "{stdout}");
    assert!(stdout.contains("corrupt_rate"), "{stdout}");
    assert!(stdout.contains("pmon can run"), "{stdout}");
}

#[test]
fn doctor_reports_a_broken_config_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pmon.toml");
    std::fs::write(
        &config,
        "site = \"x\"\n[acquisition]\npoll_intervall_ms = 5\n",
    )
    .unwrap();
    let output = pmon(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--only",
        "data-dir",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  configuration:"), "{stdout}");
    assert!(stdout.contains("poll_intervall_ms"), "{stdout}");
    assert!(stdout.contains("line 3"), "{stdout}");
    assert!(stdout.contains("OK    data directory"), "{stdout}");
}

#[test]
fn set_address_on_the_simulator_moves_the_slave_and_keeps_its_circuit_id() {
    let output = pmon(&[
        "slave",
        "set-address",
        "--sim",
        "2",
        "--bus",
        "sim-0",
        "--from",
        "0x10",
        "--to",
        "0x20",
        "--yes",
    ]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("slave on sim-0: 0x10: circuit 504d0010 (serial 504D0010)"),
        "{stdout}"
    );
    assert!(stdout.contains("addressable"), "{stdout}");
    assert!(
        stdout.contains("moved: circuit 504d0010 now answers at 0x20 on sim-0"),
        "{stdout}"
    );
    assert!(stdout.contains("forgets the change"), "{stdout}");
}

#[test]
fn set_address_refuses_without_a_terminal_or_onto_a_taken_address() {
    let ask = pmon(&[
        "slave",
        "set-address",
        "--sim",
        "2",
        "--from",
        "0x10",
        "--to",
        "0x20",
    ]);
    assert_eq!(ask.status.code(), Some(1));
    let stderr = text(&ask.stderr);
    assert!(
        stderr.contains("standard input is not a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(!text(&ask.stdout).contains("moved"));

    let taken = pmon(&[
        "slave",
        "set-address",
        "--sim",
        "2",
        "--from",
        "0x10",
        "--to",
        "0x11",
        "--yes",
    ]);
    assert_eq!(taken.status.code(), Some(1));
    let stderr = text(&taken.stderr);
    assert!(
        stderr.contains("cannot move slave 0x10 to 0x11: the new address is taken by pmon slave serial 504D0011"),
        "{stderr}"
    );

    let reserved = pmon(&[
        "slave",
        "set-address",
        "--sim",
        "2",
        "--from",
        "0x10",
        "--to",
        "0x78",
        "--yes",
    ]);
    assert_eq!(reserved.status.code(), Some(2), "a usage error");
    assert!(text(&reserved.stderr).contains("reserved"));

    let missing = pmon(&[
        "slave",
        "set-address",
        "--bus",
        "/dev/i2c-pmon-test-missing",
        "--from",
        "0x10",
        "--to",
        "0x11",
        "--yes",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = text(&missing.stderr);
    assert!(stderr.contains("/dev/i2c-pmon-test-missing"), "{stderr}");
    assert!(!Path::new("/dev/i2c-pmon-test-missing").exists());
}
