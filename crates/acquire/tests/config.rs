//! The bus, retry, recovery and legacy keys of `[acquisition]`: parsed, defaulted, validated.

use std::time::Duration;

use pmon_acquire::{BusKind, Settings};

fn parse(text: &str) -> Settings {
    toml::from_str(text).expect("valid TOML")
}

#[test]
fn buses_of_both_kinds_with_per_bus_policies() {
    let settings = parse(
        r#"
retries = 4
recover_after = 6

[[bus]]
id = "i2c-1"
path = "/dev/i2c-1"
clock_hz = 100000

[[bus]]
id = "usb0"
kind = "serial"
path = "/dev/ttyUSB0"
baud = 230400
retries = 7
retry_backoff_ms = 5
recover_after = 2
recovery_backoff_ms = 250
timeout_ms = 80

[[legacy]]
bus = "i2c-1"
address = 0x20
name = "Workshop"
"#,
    );
    settings.validate().unwrap();
    assert_eq!(settings.bus[0].kind, BusKind::Linux);
    assert_eq!(settings.bus[1].kind, BusKind::Serial);
    let linux = settings.policy(Some(&settings.bus[0]));
    assert_eq!(linux.retry.attempts, 4);
    assert_eq!(linux.retry.backoff, Duration::from_millis(2));
    assert_eq!(linux.recover_after, 6);
    assert_eq!(linux.recovery_backoff, Duration::from_secs(1));
    let serial = settings.policy(Some(&settings.bus[1]));
    assert_eq!(serial.retry.attempts, 7);
    assert_eq!(serial.retry.backoff, Duration::from_millis(5));
    assert_eq!(serial.recover_after, 2);
    assert_eq!(serial.recovery_backoff, Duration::from_millis(250));
    assert_eq!(settings.legacy_on("i2c-1").len(), 1);
    assert!(settings.legacy_on("usb0").is_empty());
}

#[test]
fn defaults_need_no_keys() {
    let settings = parse("");
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.recover_after, 5);
    assert_eq!(settings.legacy_interval_ms, 1000);
    assert!(settings.legacy_detect);
    settings.validate().unwrap();
}

#[test]
fn mistakes_are_named() {
    let cases = [
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\nbaud = 9600\n",
            "apply to kind = \"serial\" only",
        ),
        (
            "[[bus]]\nid = \"a\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nbaud = 12345\n",
            "baud = 12345",
        ),
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\nretries = 0\n",
            "retries and recover_after",
        ),
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\nclock_hz = 5\n",
            "clock_hz = 5",
        ),
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\n[[legacy]]\nbus = \"b\"\naddress = 0x20\n",
            "bus \"b\" is not",
        ),
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\n[[legacy]]\nbus = \"a\"\naddress = 0x04\n",
            "outside 0x08..=0x77",
        ),
        (
            "[[bus]]\nid = \"a\"\npath = \"/dev/i2c-1\"\n[[legacy]]\nbus = \"a\"\naddress = 0x20\n[[legacy]]\nbus = \"a\"\naddress = 0x20\n",
            "appears twice",
        ),
        ("recover_after = 0\n", "recover_after must be greater than 0"),
    ];
    for (text, expected) in cases {
        let error = parse(text).validate().unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
    let unknown = toml::from_str::<Settings>("[[bus]]\nid = \"a\"\npath = \"p\"\nspeed = 1\n");
    assert!(unknown.is_err(), "unknown keys are refused");
    let kind = toml::from_str::<Settings>("[[bus]]\nid = \"a\"\npath = \"p\"\nkind = \"usb\"\n");
    assert!(kind.is_err(), "unknown kinds are refused");
}

#[test]
fn simulated_buses_take_legacy_tables_by_their_sim_names() {
    let settings = parse("[[legacy]]\nbus = \"sim-1\"\naddress = 0x20\n");
    settings.validate().unwrap();
}
