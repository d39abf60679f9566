//! pmon's embedded MQTT broker: [rumqttd] 0.20 in-process, one MQTT 3.1.1 TCP listener, sized
//! for a Raspberry Pi, failing loudly.
//!
//! ```no_run
//! # async fn example() -> Result<(), pmon_broker::BrokerError> {
//! // A service: runs until the shutdown future resolves, Err if the port is taken.
//! let config = pmon_broker::BrokerConfig::default(); // 127.0.0.1:1883
//! pmon_broker::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//!
//! // Tests and `pmon up`: a broker on a free port, ready when this returns.
//! let broker = pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral())?;
//! let port = broker.local_addr().port();
//! broker.stop().await?;
//! # let _ = port; Ok(()) }
//! ```
//!
//! # What clients must know about this broker (rumqttd 0.20)
//!
//! - **Keep-alive 0 is refused**: rumqttd closes the connection without a CONNACK (MQTT 3.1.1
//!   allows 0). Use a keep-alive of a few seconds (rumqttc's default, 60 s, is fine); rumqttd
//!   drops a client silent for 1.5 × its keep-alive.
//! - **Client ids must not contain `/`, `+`, `#` or `$`**: the router drops such a connection
//!   without a CONNACK. An empty id gets a generated one (clean session only).
//! - **Packet size**: a client sending a packet whose remaining length (topic + 2 + packet id +
//!   payload) exceeds [`BrokerConfig::max_payload_size`] is disconnected. rumqttc's own default
//!   limit is 10 KiB both ways: set `MqttOptions::set_max_packet_size(max_payload_size,
//!   max_payload_size)` on publishers *and* subscribers, or a subscriber disconnects itself on
//!   the first large message.
//! - **Retained messages are not re-sent on a resumed session** (`clean_session = false` and the
//!   broker still has the session): subscribe again, or send the state again on ConnAck.
//!   On a fresh subscription a QoS 1 subscriber receives at most 100 retained messages (the
//!   broker's fixed inflight window) and a QoS 0 one at most
//!   [`BrokerConfig::max_outgoing_packet_count`]; rumqttd silently drops the rest.
//! - **No persistence**: a broker restart loses retained messages, sessions and queued messages.
//!   Publishers re-publish retained state (availability, discovery) on every ConnAck.
//! - **Slow subscribers lose data past the log size**: each distinct subscription filter has an
//!   in-memory log; a subscriber (QoS 1 included) further behind than its size silently skips to
//!   the oldest message still held, and publishers never see back-pressure. Each filter that
//!   ever had traffic keeps its full log in memory for the broker's lifetime. pmon sizes them in
//!   two tiers: filters ending in `#` get 8 MiB (~80 s of pmon's maximum output, for its own
//!   services), all others 256 KiB (Home Assistant subscribes every entity's topic separately).
//!   **A service that must not lose data subscribes with a filter ending in `#`** and QoS 1.
//!   See [`BrokerConfig::max_segment_size`] and [`BrokerConfig::narrow_segment_size`].
//! - **QoS is the subscription's**: rumqttd delivers every message at the QoS of the matching
//!   subscription (MQTT says the lower of publish and subscription QoS), so a QoS 0 publish
//!   reaches a QoS 1 subscriber as QoS 1.
//! - **A slow QoS 0 subscriber can time itself out**: its backlog waits in the TCP connection in
//!   front of the PINGRESP, and rumqttc fails with "Last pingreq isn't acked" if draining takes
//!   longer than its keep-alive. Keep rumqttc's default 60 s keep-alive, or use QoS 1.
//! - **Too many connections**: past [`BrokerConfig::max_connections`] a client gets no CONNACK
//!   (a connect timeout on its side).
//! - **Logging**: rumqttd logs at INFO every accept, connect and disconnect, and at ERROR both
//!   useful refusals (`ZeroKeepAlive`, `Invalid client_id`, `PayloadSizeLimitExceeded`) and noise:
//!   every client that disconnects cleanly with a DISCONNECT packet yields `no-connection id … is
//!   already gone`. A sensible filter: `info,rumqttd=error` (or `rumqttd=off`).
//!
//! # Life cycle
//!
//! [`spawn`] checks the port with a plain bind (a taken port is [`BrokerError::PortInUse`], not
//! a log line), starts rumqttd's router thread and pmon's listener thread, learns from the
//! listener's first poll whether rumqttd bound the port, then waits until an MQTT CONNECT on it
//! gets a CONNACK. [`BrokerHandle::died`] reports a listener or router thread that stops; [`run`]
//! is `spawn` + wait for shutdown or death. Stopping closes the listener and every client
//! connection; rumqttd 0.20 has no way to stop its router thread, which stays idle (holding its
//! logs) until the process exits — so stop and start brokers sparingly within one process.
//!
//! [rumqttd]: https://docs.rs/rumqttd/0.20

mod config;
mod error;
mod probe;
mod server;

pub use config::{
    BrokerConfig, DEFAULT_BIND, DEFAULT_CONNECTION_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INFLIGHT_COUNT, DEFAULT_MAX_OUTGOING_PACKET_COUNT, DEFAULT_MAX_PAYLOAD_SIZE,
    DEFAULT_MAX_SEGMENT_COUNT, DEFAULT_MAX_SEGMENT_SIZE, DEFAULT_NARROW_SEGMENT_COUNT,
    DEFAULT_NARROW_SEGMENT_SIZE, DEFAULT_STARTUP_TIMEOUT_MS, NARROW_FILTER_MAX_LEVELS,
};
pub use error::BrokerError;
pub use server::{run, spawn, BrokerHandle};
