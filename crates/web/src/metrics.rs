//! `/metrics`: the latest values and health counters of every circuit in Prometheus' text
//! exposition format (version 0.0.4), hand-formatted with `# HELP`/`# TYPE` and escaped labels.

use std::fmt::Write as _;

use pmon_proto::{Health, State};

use crate::live::{now_ms, Circuit};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

type StateField = fn(&State) -> f64;
type HealthField = fn(&Health) -> u64;

const GAUGES: &[(&str, &str, StateField)] = &[
    ("pmon_voltage_volts", "RMS voltage", |s| s.voltage),
    ("pmon_current_amperes", "RMS current", |s| s.current),
    ("pmon_frequency_hertz", "Line frequency", |s| s.frequency),
    (
        "pmon_real_power_watts",
        "Real power (negative when exporting)",
        |s| s.real_power,
    ),
    ("pmon_apparent_power_voltamperes", "Apparent power", |s| {
        s.apparent_power
    }),
    (
        "pmon_reactive_power_vars",
        "Reactive power (positive when current lags)",
        |s| s.reactive_power,
    ),
    (
        "pmon_power_factor",
        "Power factor (negative when exporting)",
        |s| s.power_factor,
    ),
    ("pmon_current_crest_factor", "Current crest factor", |s| {
        s.current_crest_factor
    }),
    (
        "pmon_phase_angle_degrees",
        "Phase of the current behind the voltage",
        |s| s.phase_angle,
    ),
];

const ENERGY: &[(&str, &str, StateField)] = &[
    (
        "pmon_energy_import_kwh_total",
        "Energy imported since the circuit was first seen",
        |s| s.energy_import_kwh,
    ),
    (
        "pmon_energy_export_kwh_total",
        "Energy exported since the circuit was first seen",
        |s| s.energy_export_kwh,
    ),
];

const HEALTH: &[(&str, &str, HealthField)] = &[
    (
        "pmon_polls_total",
        "Polls of the slave (since the acquisition started)",
        |h| h.polls,
    ),
    (
        "pmon_transactions_total",
        "I2C transactions, retries included",
        |h| h.transactions,
    ),
    (
        "pmon_crc_errors_total",
        "Replies that failed their CRC",
        |h| h.crc_errors,
    ),
    (
        "pmon_nacks_total",
        "Transactions the slave did not acknowledge",
        |h| h.nacks,
    ),
    ("pmon_bus_errors_total", "Other bus errors", |h| {
        h.bus_errors
    }),
    (
        "pmon_retries_total",
        "Transactions repeated after an error",
        |h| h.retries,
    ),
    (
        "pmon_lost_records_total",
        "Records never received (sequence gaps)",
        |h| h.lost_records,
    ),
    (
        "pmon_fifo_overflows_total",
        "Records the slave dropped from a full FIFO",
        |h| h.fifo_overflows,
    ),
    ("pmon_restarts_total", "Slave restarts seen", |h| h.restarts),
    (
        "pmon_dropped_frames_total",
        "Frames dropped from the acquisition's full queue",
        |h| h.dropped_frames,
    ),
];

/// Renders every circuit. `name` gives the display name of a circuit.
pub fn render(circuits: &[Circuit], name: impl Fn(&Circuit) -> String, connected: bool) -> String {
    let mut out = String::new();
    let labels: Vec<String> = circuits
        .iter()
        .map(|c| {
            format!(
                "circuit=\"{}\",name=\"{}\"",
                escape_label(&c.id),
                escape_label(&name(c))
            )
        })
        .collect();
    let family = |out: &mut String, metric: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
    };
    for (metric, help, field) in GAUGES {
        family(&mut out, metric, help, "gauge");
        for (c, l) in circuits.iter().zip(&labels) {
            if let Some(state) = &c.state {
                let _ = writeln!(out, "{metric}{{{l}}} {}", number(field(state)));
            }
        }
    }
    for (metric, help, field) in ENERGY {
        family(&mut out, metric, help, "counter");
        for (c, l) in circuits.iter().zip(&labels) {
            if let Some(state) = &c.state {
                let _ = writeln!(out, "{metric}{{{l}}} {}", number(field(state)));
            }
        }
    }
    family(
        &mut out,
        "pmon_circuit_online",
        "1 when the circuit's availability is online",
        "gauge",
    );
    for (c, l) in circuits.iter().zip(&labels) {
        let online = c.availability.as_deref() == Some("online");
        let _ = writeln!(out, "pmon_circuit_online{{{l}}} {}", u8::from(online));
    }
    family(
        &mut out,
        "pmon_state_age_seconds",
        "Seconds since the circuit's latest state arrived",
        "gauge",
    );
    let now = now_ms();
    for (c, l) in circuits.iter().zip(&labels) {
        if let Some(at) = c.received_ms {
            let _ = writeln!(
                out,
                "pmon_state_age_seconds{{{l}}} {}",
                number((now - at).max(0) as f64 / 1000.0)
            );
        }
    }
    for (metric, help, field) in HEALTH {
        family(&mut out, metric, help, "counter");
        for (c, l) in circuits.iter().zip(&labels) {
            if let Some(health) = &c.health {
                let _ = writeln!(out, "{metric}{{{l}}} {}", field(health));
            }
        }
    }
    family(
        &mut out,
        "pmon_web_broker_connected",
        "1 while the web service is connected to the MQTT broker",
        "gauge",
    );
    let _ = writeln!(out, "pmon_web_broker_connected {}", u8::from(connected));
    out
}
