//! The JSON state: the latest measurement of a circuit, once a second, for any MQTT client.

use serde::{Deserialize, Serialize};

use crate::frame::FrameRecord;
use crate::ProtoError;

/// `pmon/<site>/circuit/<id>/state`. The keys and units are fixed by `docs/mqtt.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// End of the block, RFC 3339 in UTC with milliseconds.
    pub ts: String,
    /// Per-circuit sequence number of the block.
    pub seq: u64,
    /// V.
    pub voltage: f64,
    /// A.
    pub current: f64,
    /// Hz.
    pub frequency: f64,
    /// W; negative when exporting.
    pub real_power: f64,
    /// VA.
    pub apparent_power: f64,
    /// var; positive when current lags.
    pub reactive_power: f64,
    /// Unitless, -1 ..= 1.
    pub power_factor: f64,
    /// Unitless.
    pub current_crest_factor: f64,
    /// Degrees.
    pub phase_angle: f64,
    /// kWh, never decreasing.
    pub energy_import_kwh: f64,
    /// kWh, never decreasing.
    pub energy_export_kwh: f64,
}

/// Rounds to `decimals` places so the JSON carries the precision of the measurement, not
/// of the float.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-11-25T15:30:00.200Z`.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let nanos = ts_ms as i128 * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Outside year ±9999: say so rather than print a wrong date.
        Err(_) => "invalid".to_string(),
    }
}

impl State {
    /// The state that a record shows.
    pub fn from_record(record: &FrameRecord) -> State {
        State {
            ts: rfc3339_ms(record.ts_ms),
            seq: record.seq,
            voltage: round(record.voltage(), 2),
            current: round(record.current(), 3),
            frequency: round(record.frequency(), 3),
            real_power: round(record.real_power(), 1),
            apparent_power: round(record.apparent_power(), 1),
            reactive_power: round(record.reactive_power(), 1),
            power_factor: round(record.power_factor(), 4),
            current_crest_factor: round(record.crest_factor(), 3),
            phase_angle: round(record.phase_angle(), 2),
            energy_import_kwh: round(record.energy_import_kwh(), 6),
            energy_export_kwh: round(record.energy_export_kwh(), 6),
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers and a string always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a state payload.
    pub fn from_json(payload: &[u8]) -> Result<State, ProtoError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_json_is_pinned() {
        let state = State::from_record(&crate::frame::tests::example_record());
        assert_eq!(
            state.to_json(),
            r#"{"ts":"2025-11-25T15:30:00.200Z","seq":1764084000000,"voltage":230.0,"current":12.5,"frequency":50.0,"real_power":2490.0,"apparent_power":2875.0,"reactive_power":1437.5,"power_factor":0.866,"current_crest_factor":1.414,"phase_angle":30.0,"energy_import_kwh":12.3456,"energy_export_kwh":0.0007}"#
        );
        assert_eq!(State::from_json(state.to_json().as_bytes()).unwrap(), state);
    }

    #[test]
    fn negative_values_are_plain_json_numbers() {
        let record = FrameRecord {
            real_power_mw: -2_490_000,
            power_factor: -8_660,
            phase_angle: -15_000,
            ..crate::frame::tests::example_record()
        };
        let json = State::from_record(&record).to_json();
        assert!(json.contains(r#""real_power":-2490.0"#), "{json}");
        assert!(json.contains(r#""power_factor":-0.866"#), "{json}");
        assert!(json.contains(r#""phase_angle":-150.0"#), "{json}");
    }
}
