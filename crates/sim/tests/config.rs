//! Configuration parsing and validation: what works, and what the errors say.

use std::io::Write;

use pmon_sim::{ClockMode, ConfigError, SimConfig, Simulator};

const BRIEF: &str = r#"
[[slave]]
address = 0x10        # 7-bit I2C address
bus = 0               # optional: which simulated bus (default 0)
name = "Heat pump"    # optional label
voltage = 230.0       # V rms
frequency = 50.0      # Hz
current = 12.5        # A rms of the fundamental
phase = 30.0          # degrees; current lags voltage when positive, leads when negative
harmonics = [[3, 0.20], [5, 0.08]]   # optional
export = false        # optional
"#;

fn error_of(text: &str) -> String {
    match SimConfig::from_toml_str(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn slave_with(extra: &str) -> String {
    format!(
        "[[slave]]\naddress = 0x20\nvoltage = 230.0\nfrequency = 50.0\ncurrent = 5.0\n{extra}\n"
    )
}

#[test]
fn the_documented_keys_parse_with_their_defaults() {
    let config = SimConfig::from_toml_str(BRIEF).expect("valid");
    let slave = &config.slaves[0];
    assert_eq!(slave.address, 0x10);
    assert_eq!(slave.name.as_deref(), Some("Heat pump"));
    assert_eq!(slave.harmonics, vec![(3, 0.20), (5, 0.08)]);
    assert_eq!((slave.phase, slave.export), (30.0, false));
    assert_eq!(
        (slave.current_range, slave.adc_bits, slave.fifo),
        (50.0, 10, 32)
    );
    assert_eq!(slave.serial_number(), 0x504D_0010);
    let bus = config.bus(0);
    assert_eq!((bus.clock_hz, bus.host_overhead_us), (400_000, 150));
}

#[test]
fn the_example_file_parses_and_builds() {
    let config = SimConfig::from_toml_str(SimConfig::example_toml()).expect("example is valid");
    assert!(config.slaves.len() >= 4);
    assert!(config.slaves.iter().any(|s| s.export));
    assert!(config.slaves.iter().any(|s| !s.schedule.is_empty()));
    Simulator::new(&config, ClockMode::Fast).expect("builds");
}

#[test]
fn demo_is_varied_valid_and_round_trips_through_toml() {
    let config = SimConfig::demo(100, 42);
    config.validate().expect("valid");
    assert_eq!(config.slaves.len(), 100);
    assert_eq!(config.bus_ids(), vec![0]);
    let names: Vec<&str> = config
        .slaves
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    assert!(names.contains(&"Heat pump 1") && names.contains(&"Solar inverter 2"));
    assert!(config.slaves.iter().any(|s| s.export));
    assert!(config
        .slaves
        .iter()
        .any(|s| s.phase < 0.0 && s.harmonics.len() >= 3));
    let text = config.to_toml_string().expect("serialises");
    assert_eq!(SimConfig::from_toml_str(&text).expect("parses"), config);
    assert_eq!(SimConfig::demo(250, 1).bus_ids(), vec![0, 1, 2]);
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let message = error_of(&slave_with("colour = \"red\""));
    assert!(message.contains("colour"), "{message}");
    assert!(message.contains("line 6"), "{message}");
}

#[test]
fn out_of_range_values_say_what_is_allowed() {
    let cases = [
        (
            "address = 0x78",
            "[[slave]]\naddress = 0x78\nvoltage = 230.0\nfrequency = 50.0\ncurrent = 1.0\n",
            "0x08..=0x77",
        ),
        (
            "frequency",
            "[[slave]]\naddress = 0x20\nvoltage = 230.0\nfrequency = 80.0\ncurrent = 1.0\n",
            "40..=70",
        ),
        (
            "voltage",
            "[[slave]]\naddress = 0x20\nvoltage = 0.0\nfrequency = 50.0\ncurrent = 1.0\n",
            "voltage",
        ),
        (
            "harmonic",
            &slave_with("harmonics = [[1, 0.5]]"),
            "order 1 must lie in 2..=50",
        ),
        ("fifo", &slave_with("fifo = 20"), "fifo = 20"),
        ("adc", &slave_with("adc_bits = 16"), "8..=15"),
        (
            "schedule",
            &slave_with("schedule = [[0.0, 1.0]]"),
            "durations",
        ),
    ];
    for (label, text, expected) in cases {
        let message = error_of(text);
        assert!(message.contains(expected), "{label}: {message}");
        if label != "address = 0x78" {
            assert!(message.contains("slave 0x20"), "{label}: {message}");
        }
    }
}

#[test]
fn duplicate_addresses_on_one_bus_are_refused_but_not_across_buses() {
    let one = slave_with("");
    let message = error_of(&format!("{one}{one}"));
    assert!(message.contains("used twice on bus 0"), "{message}");
    let other_bus = slave_with("bus = 1");
    SimConfig::from_toml_str(&format!("{one}{other_bus}")).expect("different buses");
}

#[test]
fn bus_fault_rates_are_checked() {
    let message = error_of("[[bus]]\nid = 0\nnack_rate = 1.5\n");
    assert!(
        message.contains("bus 0") && message.contains("nack_rate"),
        "{message}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let missing = SimConfig::from_file("/nonexistent/pmon-sim.toml").expect_err("missing");
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(
        missing.to_string().contains("/nonexistent/pmon-sim.toml"),
        "{missing}"
    );

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(file, "{}", slave_with("phase = \"lagging\"")).expect("write");
    let message = SimConfig::from_file(file.path())
        .expect_err("bad type")
        .to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("line 6"), "{message}");

    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(file, "{}", slave_with("noise = 2.0")).expect("write");
    let message = SimConfig::from_file(file.path())
        .expect_err("invalid")
        .to_string();
    assert!(
        message.contains(&file.path().display().to_string()) && message.contains("noise"),
        "{message}"
    );
}
