//! Home Assistant MQTT discovery: what pmon announces so that every circuit appears in Home
//! Assistant as a device with one sensor per measured quantity, without any YAML.
//!
//! Pure payload builders; the acquisition decides when to publish them (`pmon-acquire`'s
//! `homeassistant` module). Two forms, specified in `docs/mqtt.md` and pinned by the tests
//! below:
//!
//! - **device** (default, Home Assistant ≥ 2024.11): one retained message per circuit on
//!   `<prefix>/device/<node_id>/config` carrying the device (`dev`), the origin (`o`), the
//!   shared state topic and availability, and every sensor under `cmps`;
//! - **entity** (for older Home Assistant): one retained message per sensor on
//!   `<prefix>/sensor/<node_id>/<object_id>/config`.
//!
//! Keys are Home Assistant's abbreviations. Values come from the circuit's JSON state topic
//! through a `value_template`; availability is bound to the acquisition's last will
//! (`pmon/<site>/status`) *and* the circuit's own availability topic (`availability_mode:
//! all`). Units follow Home Assistant's device-class tables (`var`, not `VAR`; energy in `kWh`
//! with `state_class: total_increasing`, as the energy dashboard needs).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::health::CircuitInfo;
use crate::state::State;
use crate::topic::{circuit_id, CircuitTopic, Topics};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";
/// Home Assistant's default birth and will topic: `online` when it (re)starts, not retained.
pub const DEFAULT_STATUS_TOPIC: &str = "homeassistant/status";
/// Manufacturer shown on every circuit's device page.
pub const MANUFACTURER: &str = "pmon";
/// Model shown on every circuit's device page.
pub const MODEL: &str = "pmon circuit monitor";

/// One measured quantity: how it is named in the JSON state, on raw topics and in Home
/// Assistant.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    /// Short id: the object id in Home Assistant, the last level of the raw topic, the
    /// suffix of the sensor's `unique_id`.
    pub id: &'static str,
    /// The key in the JSON state (`docs/mqtt.md`).
    pub state_key: &'static str,
    /// The sensor's name in Home Assistant (shown after the device's name).
    pub name: &'static str,
    /// Unit of measurement; `None` for ratios.
    pub unit: Option<&'static str>,
    /// Home Assistant sensor device class.
    pub device_class: Option<&'static str>,
    /// Home Assistant state class.
    pub state_class: &'static str,
    /// Shown under "Diagnostic" rather than with the main sensors.
    pub diagnostic: bool,
    /// A Material Design icon for quantities without a device class.
    pub icon: Option<&'static str>,
    /// Decimals Home Assistant shows by default.
    pub precision: u8,
    value: fn(&State) -> f64,
}

impl Quantity {
    /// This quantity's value in a state.
    pub fn value(&self, state: &State) -> f64 {
        (self.value)(state)
    }

    /// The Jinja template that extracts the value from the JSON state.
    pub fn value_template(&self) -> String {
        format!("{{{{ value_json.{} }}}}", self.state_key)
    }
}

/// Every quantity pmon measures, in the order it is shown and published.
pub const QUANTITIES: [Quantity; 11] = [
    Quantity {
        id: "voltage",
        state_key: "voltage",
        name: "Voltage",
        unit: Some("V"),
        device_class: Some("voltage"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 1,
        value: |s| s.voltage,
    },
    Quantity {
        id: "current",
        state_key: "current",
        name: "Current",
        unit: Some("A"),
        device_class: Some("current"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 2,
        value: |s| s.current,
    },
    Quantity {
        id: "frequency",
        state_key: "frequency",
        name: "Frequency",
        unit: Some("Hz"),
        device_class: Some("frequency"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 2,
        value: |s| s.frequency,
    },
    Quantity {
        id: "real_power",
        state_key: "real_power",
        name: "Power",
        unit: Some("W"),
        device_class: Some("power"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 0,
        value: |s| s.real_power,
    },
    Quantity {
        id: "apparent_power",
        state_key: "apparent_power",
        name: "Apparent power",
        unit: Some("VA"),
        device_class: Some("apparent_power"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 0,
        value: |s| s.apparent_power,
    },
    Quantity {
        id: "reactive_power",
        state_key: "reactive_power",
        name: "Reactive power",
        // Lowercase: Home Assistant refuses `VAR` from 2025.7.
        unit: Some("var"),
        device_class: Some("reactive_power"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 0,
        value: |s| s.reactive_power,
    },
    Quantity {
        id: "power_factor",
        state_key: "power_factor",
        name: "Power factor",
        // A ratio from -1 to 1: Home Assistant's power_factor class takes no unit or `%`.
        unit: None,
        device_class: Some("power_factor"),
        state_class: "measurement",
        diagnostic: false,
        icon: None,
        precision: 2,
        value: |s| s.power_factor,
    },
    Quantity {
        id: "crest_factor",
        state_key: "current_crest_factor",
        name: "Crest factor",
        // Home Assistant has no device class for it.
        unit: None,
        device_class: None,
        state_class: "measurement",
        diagnostic: true,
        icon: Some("mdi:sine-wave"),
        precision: 2,
        value: |s| s.current_crest_factor,
    },
    Quantity {
        id: "phase_angle",
        state_key: "phase_angle",
        name: "Phase angle",
        unit: Some("°"),
        device_class: None,
        state_class: "measurement",
        diagnostic: true,
        icon: Some("mdi:angle-acute"),
        precision: 1,
        value: |s| s.phase_angle,
    },
    Quantity {
        id: "energy_import",
        state_key: "energy_import_kwh",
        name: "Energy import",
        unit: Some("kWh"),
        device_class: Some("energy"),
        state_class: "total_increasing",
        diagnostic: false,
        icon: None,
        precision: 3,
        value: |s| s.energy_import_kwh,
    },
    Quantity {
        id: "energy_export",
        state_key: "energy_export_kwh",
        name: "Energy export",
        unit: Some("kWh"),
        device_class: Some("energy"),
        state_class: "total_increasing",
        diagnostic: false,
        icon: None,
        precision: 3,
        value: |s| s.energy_export_kwh,
    },
];

/// The quantity with this id.
pub fn quantity(id: &str) -> Option<&'static Quantity> {
    QUANTITIES.iter().find(|q| q.id == id)
}

/// A number as the raw topics carry it: the JSON spelling (`230.0`, `-2490.5`), which
/// Telegraf's `value` format and every other number parser accept.
pub fn raw_payload(value: f64) -> String {
    serde_json::to_string(&value).unwrap_or_default()
}

/// Which discovery form to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One message per circuit on `<prefix>/device/<node_id>/config` (Home Assistant ≥ 2024.11).
    #[default]
    Device,
    /// One message per sensor on `<prefix>/sensor/<node_id>/<object_id>/config`.
    Entity,
}

/// A discovery message: a retained publish on `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The discovery topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: String,
}

/// What the payloads of one site are built from.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The discovery prefix, `homeassistant` unless Home Assistant was configured otherwise.
    pub prefix: String,
    /// Device or entity discovery.
    pub mode: Mode,
    /// The site name (as in `pmon/<site>`).
    pub site: String,
    /// pmon's version, shown as the origin's software version.
    pub sw_version: String,
}

/// Home Assistant accepts only these characters in the node and object ids of a discovery topic.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// FNV-1a, to keep two site names that sanitise alike apart.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ byte as u32).wrapping_mul(0x0100_0193)
    })
}

/// Makes `text` fit Home Assistant's id alphabet; appends a hash when something had to change.
fn sanitise(text: &str) -> String {
    if !text.is_empty() && text.chars().all(id_char) {
        return text.to_string();
    }
    let mut clean: String = text
        .chars()
        .map(|c| if id_char(c) { c } else { '_' })
        .collect();
    clean.push_str(&format!("_{:08x}", fnv1a(text)));
    clean
}

/// The id of a circuit in Home Assistant: `pmon_<site>_<circuit>`, limited to
/// `[A-Za-z0-9_-]` (other characters become `_` and a hash of the original is appended).
/// It is the node id of the discovery topics, the device identifier and the prefix of every
/// sensor's `unique_id`, so it never changes for a given site and circuit.
pub fn node_id(site: &str, circuit: &str) -> String {
    format!("pmon_{}_{}", sanitise(site), sanitise(circuit))
}

#[derive(Serialize)]
struct Device<'a> {
    ids: [&'a str; 1],
    name: &'a str,
    mf: &'static str,
    mdl: &'static str,
    sw: &'a str,
    /// Device mode only: Home Assistant's device schema refuses unknown keys, and entity mode
    /// is for Home Assistant versions that may predate `serial_number`.
    #[serde(skip_serializing_if = "Option::is_none")]
    sn: Option<String>,
}

#[derive(Serialize)]
struct Origin<'a> {
    name: &'static str,
    sw: &'a str,
}

#[derive(Serialize)]
struct Availability {
    t: String,
}

#[derive(Serialize)]
struct Sensor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<&'static str>,
    name: &'static str,
    uniq_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev_cla: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_of_meas: Option<&'static str>,
    stat_cla: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ent_cat: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ic: Option<&'static str>,
    sug_dsp_prc: u8,
    val_tpl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stat_t: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avty: Option<&'a [Availability; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avty_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<&'a Device<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    o: Option<&'a Origin<'a>>,
}

/// `cmps`: the sensors in [`QUANTITIES`] order (a map that keeps its order whatever serde_json
/// features the build enables).
struct Components<'a>(Vec<(&'static str, Sensor<'a>)>);

impl Serialize for Components<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, sensor) in &self.0 {
            map.serialize_entry(id, sensor)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct DevicePayload<'a> {
    dev: &'a Device<'a>,
    o: &'a Origin<'a>,
    cmps: Components<'a>,
    stat_t: &'a str,
    avty: &'a [Availability; 2],
    avty_mode: &'static str,
}

impl Discovery {
    /// The discovery topics of a circuit, in publishing order.
    pub fn topics(&self, circuit: &str) -> Vec<String> {
        let node = node_id(&self.site, circuit);
        match self.mode {
            Mode::Device => vec![format!("{}/device/{node}/config", self.prefix)],
            Mode::Entity => QUANTITIES
                .iter()
                .map(|q| format!("{}/sensor/{node}/{}/config", self.prefix, q.id))
                .collect(),
        }
    }

    /// The discovery messages that announce a circuit.
    pub fn messages(&self, topics: &Topics, info: &CircuitInfo) -> Vec<Message> {
        let node = node_id(&self.site, &info.id);
        let device = Device {
            ids: [&node],
            name: &info.name,
            mf: MANUFACTURER,
            mdl: MODEL,
            sw: &info.firmware,
            sn: (self.mode == Mode::Device).then(|| circuit_id(info.serial)),
        };
        let origin = Origin {
            name: "pmon",
            sw: &self.sw_version,
        };
        let state_topic = topics.circuit(&info.id, CircuitTopic::State);
        let availability = [
            Availability { t: topics.status() },
            Availability {
                t: topics.circuit(&info.id, CircuitTopic::Availability),
            },
        ];
        let sensor = |q: &Quantity, device_mode: bool| Sensor {
            p: device_mode.then_some("sensor"),
            name: q.name,
            uniq_id: format!("{node}_{}", q.id),
            dev_cla: q.device_class,
            unit_of_meas: q.unit,
            stat_cla: q.state_class,
            ent_cat: q.diagnostic.then_some("diagnostic"),
            ic: q.icon,
            sug_dsp_prc: q.precision,
            val_tpl: q.value_template(),
            stat_t: (!device_mode).then_some(state_topic.as_str()),
            avty: (!device_mode).then_some(&availability),
            avty_mode: (!device_mode).then_some("all"),
            dev: (!device_mode).then_some(&device),
            o: (!device_mode).then_some(&origin),
        };
        let topics = self.topics(&info.id);
        match self.mode {
            Mode::Device => {
                let payload = DevicePayload {
                    dev: &device,
                    o: &origin,
                    cmps: Components(QUANTITIES.iter().map(|q| (q.id, sensor(q, true))).collect()),
                    stat_t: &state_topic,
                    avty: &availability,
                    avty_mode: "all",
                };
                topics
                    .into_iter()
                    .map(|topic| Message {
                        topic,
                        payload: to_json(&payload),
                    })
                    .collect()
            }
            Mode::Entity => topics
                .into_iter()
                .zip(QUANTITIES.iter())
                .map(|(topic, q)| Message {
                    topic,
                    payload: to_json(&sensor(q, false)),
                })
                .collect(),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Strings, numbers and maps with string keys always serialise.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CircuitInfo {
        CircuitInfo {
            id: "00c0ffee".into(),
            name: "Heat pump".into(),
            bus: "sim-0".into(),
            address: 16,
            serial: 0x00c0_ffee,
            firmware: "1.2.3".into(),
            protocol: "pmon-1".into(),
            sample_rate: 1800,
        }
    }

    fn discovery(mode: Mode) -> Discovery {
        Discovery {
            prefix: DEFAULT_PREFIX.into(),
            mode,
            site: "home".into(),
            sw_version: "0.1.0".into(),
        }
    }

    const DEVICE_EXAMPLE: &str = r#"{"dev":{"ids":["pmon_home_00c0ffee"],"name":"Heat pump","mf":"pmon","mdl":"pmon circuit monitor","sw":"1.2.3","sn":"00c0ffee"},"o":{"name":"pmon","sw":"0.1.0"},"cmps":{"voltage":{"p":"sensor","name":"Voltage","uniq_id":"pmon_home_00c0ffee_voltage","dev_cla":"voltage","unit_of_meas":"V","stat_cla":"measurement","sug_dsp_prc":1,"val_tpl":"{{ value_json.voltage }}"},"current":{"p":"sensor","name":"Current","uniq_id":"pmon_home_00c0ffee_current","dev_cla":"current","unit_of_meas":"A","stat_cla":"measurement","sug_dsp_prc":2,"val_tpl":"{{ value_json.current }}"},"frequency":{"p":"sensor","name":"Frequency","uniq_id":"pmon_home_00c0ffee_frequency","dev_cla":"frequency","unit_of_meas":"Hz","stat_cla":"measurement","sug_dsp_prc":2,"val_tpl":"{{ value_json.frequency }}"},"real_power":{"p":"sensor","name":"Power","uniq_id":"pmon_home_00c0ffee_real_power","dev_cla":"power","unit_of_meas":"W","stat_cla":"measurement","sug_dsp_prc":0,"val_tpl":"{{ value_json.real_power }}"},"apparent_power":{"p":"sensor","name":"Apparent power","uniq_id":"pmon_home_00c0ffee_apparent_power","dev_cla":"apparent_power","unit_of_meas":"VA","stat_cla":"measurement","sug_dsp_prc":0,"val_tpl":"{{ value_json.apparent_power }}"},"reactive_power":{"p":"sensor","name":"Reactive power","uniq_id":"pmon_home_00c0ffee_reactive_power","dev_cla":"reactive_power","unit_of_meas":"var","stat_cla":"measurement","sug_dsp_prc":0,"val_tpl":"{{ value_json.reactive_power }}"},"power_factor":{"p":"sensor","name":"Power factor","uniq_id":"pmon_home_00c0ffee_power_factor","dev_cla":"power_factor","stat_cla":"measurement","sug_dsp_prc":2,"val_tpl":"{{ value_json.power_factor }}"},"crest_factor":{"p":"sensor","name":"Crest factor","uniq_id":"pmon_home_00c0ffee_crest_factor","stat_cla":"measurement","ent_cat":"diagnostic","ic":"mdi:sine-wave","sug_dsp_prc":2,"val_tpl":"{{ value_json.current_crest_factor }}"},"phase_angle":{"p":"sensor","name":"Phase angle","uniq_id":"pmon_home_00c0ffee_phase_angle","unit_of_meas":"°","stat_cla":"measurement","ent_cat":"diagnostic","ic":"mdi:angle-acute","sug_dsp_prc":1,"val_tpl":"{{ value_json.phase_angle }}"},"energy_import":{"p":"sensor","name":"Energy import","uniq_id":"pmon_home_00c0ffee_energy_import","dev_cla":"energy","unit_of_meas":"kWh","stat_cla":"total_increasing","sug_dsp_prc":3,"val_tpl":"{{ value_json.energy_import_kwh }}"},"energy_export":{"p":"sensor","name":"Energy export","uniq_id":"pmon_home_00c0ffee_energy_export","dev_cla":"energy","unit_of_meas":"kWh","stat_cla":"total_increasing","sug_dsp_prc":3,"val_tpl":"{{ value_json.energy_export_kwh }}"}},"stat_t":"pmon/home/circuit/00c0ffee/state","avty":[{"t":"pmon/home/status"},{"t":"pmon/home/circuit/00c0ffee/availability"}],"avty_mode":"all"}"#;

    const ENTITY_EXAMPLE: &str = r#"{"name":"Reactive power","uniq_id":"pmon_home_00c0ffee_reactive_power","dev_cla":"reactive_power","unit_of_meas":"var","stat_cla":"measurement","sug_dsp_prc":0,"val_tpl":"{{ value_json.reactive_power }}","stat_t":"pmon/home/circuit/00c0ffee/state","avty":[{"t":"pmon/home/status"},{"t":"pmon/home/circuit/00c0ffee/availability"}],"avty_mode":"all","dev":{"ids":["pmon_home_00c0ffee"],"name":"Heat pump","mf":"pmon","mdl":"pmon circuit monitor","sw":"1.2.3"},"o":{"name":"pmon","sw":"0.1.0"}}"#;

    #[test]
    fn device_payload_is_pinned() {
        let topics = Topics::new("home").unwrap();
        let messages = discovery(Mode::Device).messages(&topics, &info());
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].topic,
            "homeassistant/device/pmon_home_00c0ffee/config"
        );
        assert_eq!(messages[0].payload, DEVICE_EXAMPLE);
    }

    #[test]
    fn entity_payloads_are_pinned() {
        let topics = Topics::new("home").unwrap();
        let messages = discovery(Mode::Entity).messages(&topics, &info());
        let ids: Vec<&str> = QUANTITIES.iter().map(|q| q.id).collect();
        assert_eq!(messages.len(), ids.len());
        for (message, id) in messages.iter().zip(&ids) {
            assert_eq!(
                message.topic,
                format!("homeassistant/sensor/pmon_home_00c0ffee/{id}/config")
            );
        }
        assert_eq!(messages[5].payload, ENTITY_EXAMPLE);
        // Every entity payload is the device payload's component plus the shared keys.
        let device: serde_json::Value = serde_json::from_str(DEVICE_EXAMPLE).unwrap();
        for (message, id) in messages.iter().zip(&ids) {
            let entity: serde_json::Value = serde_json::from_str(&message.payload).unwrap();
            let mut expected = device["cmps"][*id].clone();
            let object = expected.as_object_mut().unwrap();
            object.remove("p");
            for key in ["stat_t", "avty", "avty_mode", "dev", "o"] {
                object.insert(key.into(), device[key].clone());
            }
            object["dev"].as_object_mut().unwrap().remove("sn");
            assert_eq!(entity, expected, "{id}");
        }
    }

    #[test]
    fn documentation_shows_the_pinned_payloads() {
        let doc = include_str!("../../../docs/mqtt.md");
        assert!(
            doc.contains(DEVICE_EXAMPLE),
            "docs/mqtt.md lacks the device payload"
        );
        assert!(
            doc.contains(ENTITY_EXAMPLE),
            "docs/mqtt.md lacks the entity payload"
        );
    }

    #[test]
    fn units_and_classes_per_quantity() {
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, bool);
        let table: Vec<Row> = QUANTITIES
            .iter()
            .map(|q| (q.id, q.unit, q.device_class, q.state_class, q.diagnostic))
            .collect();
        let m = "measurement";
        assert_eq!(
            table,
            [
                ("voltage", Some("V"), Some("voltage"), m, false),
                ("current", Some("A"), Some("current"), m, false),
                ("frequency", Some("Hz"), Some("frequency"), m, false),
                ("real_power", Some("W"), Some("power"), m, false),
                (
                    "apparent_power",
                    Some("VA"),
                    Some("apparent_power"),
                    m,
                    false
                ),
                (
                    "reactive_power",
                    Some("var"),
                    Some("reactive_power"),
                    m,
                    false
                ),
                ("power_factor", None, Some("power_factor"), m, false),
                ("crest_factor", None, None, m, true),
                ("phase_angle", Some("°"), None, m, true),
                (
                    "energy_import",
                    Some("kWh"),
                    Some("energy"),
                    "total_increasing",
                    false
                ),
                (
                    "energy_export",
                    Some("kWh"),
                    Some("energy"),
                    "total_increasing",
                    false
                ),
            ]
        );
    }

    #[test]
    fn every_state_key_has_a_quantity_and_values_match() {
        let state = State::from_record(&crate::frame::tests::example_record());
        let json: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !["ts", "seq"].contains(k))
            .collect();
        assert_eq!(keys.len(), QUANTITIES.len());
        for q in &QUANTITIES {
            assert_eq!(
                json[q.state_key].as_f64(),
                Some(q.value(&state)),
                "{}",
                q.id
            );
        }
        assert_eq!(raw_payload(state.voltage), "230.0");
        assert_eq!(raw_payload(-2490.5), "-2490.5");
        assert_eq!(
            quantity("energy_import").unwrap().state_key,
            "energy_import_kwh"
        );
    }

    #[test]
    fn node_ids_fit_home_assistants_alphabet_and_stay_distinct() {
        assert_eq!(node_id("home", "00c0ffee"), "pmon_home_00c0ffee");
        assert_eq!(node_id("site-1_a", "x"), "pmon_site-1_a_x");
        let a = node_id("Gîte nord", "00c0ffee");
        let b = node_id("Gîte_nord", "00c0ffee");
        let c = node_id("Gîte.nord", "00c0ffee");
        for id in [&a, &b, &c] {
            assert!(id.chars().all(id_char), "{id}");
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, node_id("Gîte nord", "00c0ffee"), "stable");
    }

    #[test]
    fn topics_follow_the_prefix_and_mode() {
        let mut d = discovery(Mode::Device);
        d.prefix = "ha".into();
        assert_eq!(
            d.topics("0000002a"),
            ["ha/device/pmon_home_0000002a/config"]
        );
        d.mode = Mode::Entity;
        assert_eq!(d.topics("0000002a").len(), QUANTITIES.len());
        assert_eq!(
            d.topics("0000002a")[0],
            "ha/sensor/pmon_home_0000002a/voltage/config"
        );
    }
}
