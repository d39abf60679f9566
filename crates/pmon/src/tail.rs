//! `pmon tail`: subscribes to a site's topics and prints what arrives, decoded.

use std::time::Duration;

use anyhow::Context;
use pmon_proto::frame::{Frame, FrameRecord};
use pmon_proto::state::rfc3339_ms;
use pmon_proto::topic::CircuitTopic;
use pmon_proto::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::cli::{TailArgs, TailKind};
use crate::settings::Resolved;

/// One frame record as a readable line.
pub fn format_record(circuit: &str, r: &FrameRecord) -> String {
    format!(
        "{ts} {circuit} seq={seq} V={v:.2} I={i:.3} f={f:.3} P={p:.1} Q={q:.1} S={s:.1} PF={pf:.4} CF={cf:.3} phase={ph:.2} import={ei:.4}kWh export={ee:.4}kWh",
        ts = rfc3339_ms(r.ts_ms),
        seq = r.seq,
        v = r.voltage(),
        i = r.current(),
        f = r.frequency(),
        p = r.real_power(),
        q = r.reactive_power(),
        s = r.apparent_power(),
        pf = r.power_factor(),
        cf = r.crest_factor(),
        ph = r.phase_angle(),
        ei = r.energy_import_kwh(),
        ee = r.energy_export_kwh(),
    )
}

fn kind_of(topics: &Topics, topic: &str) -> Option<(Option<String>, TailKind)> {
    if topic == topics.status() {
        return Some((None, TailKind::Status));
    }
    let (circuit, which) = topics.parse_circuit(topic)?;
    let kind = match which {
        CircuitTopic::Frame => TailKind::Frame,
        CircuitTopic::State => TailKind::State,
        CircuitTopic::Availability => TailKind::Availability,
        CircuitTopic::Health => TailKind::Health,
        CircuitTopic::Info => TailKind::Info,
    };
    Some((Some(circuit.to_string()), kind))
}

/// The lines one message prints as.
pub fn render(topics: &Topics, topic: &str, payload: &[u8], args: &TailArgs) -> Vec<String> {
    let Some((circuit, kind)) = kind_of(topics, topic) else {
        return Vec::new();
    };
    if !args.only.contains(&kind) {
        return Vec::new();
    }
    if let (Some(wanted), Some(circuit)) = (&args.circuit, &circuit) {
        if wanted != circuit {
            return Vec::new();
        }
    }
    let circuit = circuit.unwrap_or_else(|| "-".into());
    match kind {
        TailKind::Frame => match Frame::decode(payload) {
            Ok(frame) if args.json => frame
                .records
                .iter()
                .map(|r| {
                    let mut value = serde_json::to_value(r).unwrap_or_default();
                    value["circuit"] = serde_json::Value::String(frame.circuit.clone());
                    value.to_string()
                })
                .collect(),
            Ok(frame) => frame
                .records
                .iter()
                .map(|r| format_record(&frame.circuit, r))
                .collect(),
            Err(error) => vec![format!("{circuit} frame: undecodable ({error})")],
        },
        _ => {
            let label = format!("{kind:?}").to_lowercase();
            vec![format!(
                "{circuit} {label} {}",
                String::from_utf8_lossy(payload)
            )]
        }
    }
}

/// Subscribes and prints until Ctrl-C or `--count` messages.
pub async fn run(resolved: &Resolved, args: TailArgs) -> anyhow::Result<()> {
    let topics =
        Topics::new(&resolved.site).context("the site name cannot be an MQTT topic level")?;
    let url = &resolved.mqtt.url;
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut options = MqttOptions::parse_url(format!(
        "{url}{separator}client_id=pmon-tail-{}",
        std::process::id()
    ))
    .with_context(|| format!("broker URL {url:?}"))?;
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((user, password)) = &resolved.mqtt.credentials {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client
        .subscribe(format!("{}/#", topics.root()), QoS::AtLeastOnce)
        .await
        .context("subscribe")?;
    let mut printed = 0u64;
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = &mut shutdown => return Ok(()),
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let lines = render(&topics, &publish.topic, &publish.payload, &args);
                if lines.is_empty() {
                    continue;
                }
                for line in lines {
                    println!("{line}");
                }
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("cannot reach the MQTT broker at {url}")));
            }
        }
    }
}
