//! [`BrokerConfig`]: the `[broker]` table of pmon's config file, and its translation into a
//! complete rumqttd configuration.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BrokerError;

/// Default listen address: loopback only, the standard MQTT port.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);
/// Default largest MQTT packet a client may send, in bytes (256 KiB).
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 256 * 1024;
/// Default number of simultaneous client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default number of packets read from one connection in one batch.
pub const DEFAULT_MAX_INFLIGHT_COUNT: usize = 100;
/// Default number of QoS 0 messages (and retained messages) sent to a subscriber per read.
pub const DEFAULT_MAX_OUTGOING_PACKET_COUNT: u64 = 1000;
/// Default segment size of the log of a filter ending in `#` (1 MiB).
pub const DEFAULT_MAX_SEGMENT_SIZE: usize = 1024 * 1024;
/// Default number of segments of the log of a filter ending in `#`.
pub const DEFAULT_MAX_SEGMENT_COUNT: usize = 8;
/// Default segment size of the log of a filter without `#` (64 KiB).
pub const DEFAULT_NARROW_SEGMENT_SIZE: usize = 64 * 1024;
/// Default number of segments of the log of a filter without `#`.
pub const DEFAULT_NARROW_SEGMENT_COUNT: usize = 4;
/// Filters without `#` up to this many levels get the narrow log size; deeper ones the wide.
pub const NARROW_FILTER_MAX_LEVELS: usize = 16;
/// Default time a new TCP connection has to send its MQTT CONNECT.
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u16 = 5_000;
/// Default time `spawn` waits for the listener to answer an MQTT CONNECT.
pub const DEFAULT_STARTUP_TIMEOUT_MS: u64 = 5_000;

/// Smallest segment rumqttd accepts (it panics in the router thread below this).
const MIN_SEGMENT_SIZE: usize = 1024;
/// Smallest useful packet limit: a CONNECT with a long client id and credentials.
const MIN_PAYLOAD_SIZE: usize = 1024;

/// Settings of the embedded MQTT broker (the `[broker]` table of pmon's config file).
///
/// Every field has a default ([`BrokerConfig::default`]); a TOML table may name any subset of
/// them, and an unknown key is an error. Memory use is dominated by the per-filter logs, see
/// [`BrokerConfig::max_segment_size`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Address of the MQTT 3.1.1 TCP listener. Default `127.0.0.1:1883` (this machine only: set
    /// `0.0.0.0:1883` to let Home Assistant or Node-RED on another host connect). Port 0 picks a
    /// free port; [`crate::BrokerHandle::local_addr`] tells which.
    pub bind: SocketAddr,

    /// Largest MQTT packet (remaining length: topic + packet id + payload) a client may send, in
    /// bytes. A client exceeding it is disconnected. Default 256 KiB: pmon's largest messages are
    /// batched frames (up to ~200 records × ~60 bytes ≈ 12 KB) and Home Assistant device
    /// discovery documents (a few KB per circuit), so this leaves >20× headroom, while bounding
    /// what one rogue client can make the broker buffer. rumqttd's own default (20 KiB) is too
    /// tight for discovery of a many-component device. Clients must raise their own limit to
    /// match (rumqttc: `MqttOptions::set_max_packet_size`, default 10 KiB).
    pub max_payload_size: usize,

    /// Maximum number of simultaneous client connections. Default 100: pmon's services use fewer
    /// than 10, plus Home Assistant, Node-RED, Telegraf and a few `pmon tail`s. A connection past
    /// the limit gets no CONNACK at all (rumqttd only logs "no space for new connection"), so the
    /// client sees a connect timeout.
    pub max_connections: usize,

    /// Number of packets rumqttd reads from one connection before handing them to the router in
    /// one batch (rumqttd's `max_inflight_count`). It is not an MQTT inflight window: the broker's
    /// window towards a subscriber is fixed at 100 unacknowledged QoS 1 messages in rumqttd 0.20.
    /// Default 100.
    pub max_inflight_count: usize,

    /// Maximum number of messages the router hands a QoS 0 subscriber per read of a log, and also
    /// the maximum number of retained messages a QoS 0 subscription receives when it subscribes
    /// (rumqttd drops the rest). Default 1000: room for retained discovery and availability of
    /// several hundred circuits. QoS 1 subscriptions get at most 100 retained messages, whatever
    /// this is (rumqttd's fixed inflight window).
    pub max_outgoing_packet_count: u64,

    /// Size in bytes of one segment of the in-memory log of a subscription filter ending in `#`
    /// (`#`, `pmon/#`, `pmon/site/#`: the "wide" filters pmon's own services use).
    ///
    /// rumqttd appends every message to the log of every filter it matches (one log per distinct
    /// filter text, shared by its subscribers) and only ever drops a log's oldest segment when it
    /// has `max_segment_count` of them. So a subscriber lagging further behind than `size ×
    /// count` bytes silently skips messages (QoS 1 too: there is no back-pressure on
    /// publishers), and every filter that ever had traffic keeps that much in memory for the
    /// broker's lifetime, consumed or not. Sizes count 4 + topic + payload bytes per message;
    /// measured heap use is ~3.5× that for 80-byte payloads and ~2.5× for 400-byte ones (rumqttd
    /// keeps ~300 bytes of bookkeeping per message).
    ///
    /// Default 1 MiB × 8 = 8 MiB (~25–30 MB of RSS once full): pmon at its maximum (100
    /// circuits: 500 frames/s and 100 JSON states/s, ~100 KB/s) fills it in ~80 s, so a
    /// subscriber to everything may fall ~80 s behind (a historian restart, a slow SD card)
    /// without loss, and a 60 s burst of everything fits. Measured before: 64 KiB × 2 lost 69 %
    /// of QoS 1 messages to a slow subscriber; 100 MiB × 10 let the broker grow to 657 MiB.
    pub max_segment_size: usize,

    /// Number of segments in the log of a filter ending in `#` (see
    /// [`BrokerConfig::max_segment_size`]). Default 8.
    pub max_segment_count: usize,

    /// Segment size of the log of a filter without `#`: an exact topic or `+` wildcards, e.g.
    /// `pmon/site/c17/state`. Home Assistant subscribes to every entity's state topic separately,
    /// so with 100 circuits there are 100+ such filters; at the wide size they would hold ~2.5 GB
    /// after a few hours. Default 64 KiB × 4 = 256 KiB (~450 KB of RSS): ~10 minutes of one
    /// circuit's JSON state, ~6 s of all circuits' states for a `pmon/site/+/state` subscriber.
    /// **A pmon service that must not lose data subscribes with a filter ending in `#`.**
    /// (rumqttd's `custom_segment` with the patterns `+`, `+/+`, … up to 16 levels, which match
    /// exactly the filters without `#`.)
    pub narrow_segment_size: usize,

    /// Number of segments in the log of a filter without `#`. Default 4.
    pub narrow_segment_count: usize,

    /// Milliseconds a new TCP connection has to send its MQTT CONNECT before it is dropped
    /// (protects the connection slots from idle sockets). Default 5000 (at most 65535).
    pub connection_timeout_ms: u16,

    /// Milliseconds [`crate::spawn`] and [`crate::run`] wait for the new listener to answer an
    /// MQTT CONNECT before failing. Default 5000.
    pub startup_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight_count: DEFAULT_MAX_INFLIGHT_COUNT,
            max_outgoing_packet_count: DEFAULT_MAX_OUTGOING_PACKET_COUNT,
            max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
            max_segment_count: DEFAULT_MAX_SEGMENT_COUNT,
            narrow_segment_size: DEFAULT_NARROW_SEGMENT_SIZE,
            narrow_segment_count: DEFAULT_NARROW_SEGMENT_COUNT,
            connection_timeout_ms: DEFAULT_CONNECTION_TIMEOUT_MS,
            startup_timeout_ms: DEFAULT_STARTUP_TIMEOUT_MS,
        }
    }
}

impl BrokerConfig {
    /// The defaults with another listen address (port 0 picks a free port).
    pub fn with_bind(bind: SocketAddr) -> Self {
        Self {
            bind,
            ..Self::default()
        }
    }

    /// The defaults listening on a free loopback port: what tests and `pmon up` helpers use.
    pub fn ephemeral() -> Self {
        Self::with_bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
    }

    /// Parses the contents of a `[broker]` table (the keys, without the table header) and
    /// validates it.
    ///
    /// ```
    /// let config = pmon_broker::BrokerConfig::from_toml_str(r#"
    ///     bind = "0.0.0.0:1883"
    ///     max_segment_count = 4
    /// "#)?;
    /// assert_eq!(config.bind.port(), 1883);
    /// assert_eq!(config.max_segment_size, 1024 * 1024); // default
    /// # Ok::<(), pmon_broker::BrokerError>(())
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, BrokerError> {
        let config: Self = toml::from_str(text).map_err(|e| BrokerError::Toml(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values rumqttd would otherwise accept and then fail on later (several of them
    /// make its router thread panic the first time a client subscribes).
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |what: String| Err(BrokerError::InvalidConfig(what));
        if self.max_payload_size < MIN_PAYLOAD_SIZE {
            return invalid(format!(
                "max_payload_size = {} is below {MIN_PAYLOAD_SIZE} bytes",
                self.max_payload_size
            ));
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".into());
        }
        if self.max_inflight_count == 0 {
            return invalid("max_inflight_count must be at least 1".into());
        }
        if self.max_outgoing_packet_count == 0 {
            return invalid("max_outgoing_packet_count must be at least 1".into());
        }
        check_segments("max", self.max_segment_size, self.max_segment_count)?;
        check_segments(
            "narrow",
            self.narrow_segment_size,
            self.narrow_segment_count,
        )?;
        if self.connection_timeout_ms == 0 {
            return invalid("connection_timeout_ms must be at least 1".into());
        }
        if self.startup_timeout_ms == 0 {
            return invalid("startup_timeout_ms must be at least 1".into());
        }
        Ok(())
    }

    /// How long [`crate::spawn`] waits for the listener to answer.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }

    /// The complete rumqttd configuration for one MQTT 3.1.1 TCP listener on `listen` (no TLS,
    /// websockets, console, metrics, bridge or cluster). Every `RouterConfig` field is set: its
    /// `Default` is all zeros, which rumqttd accepts and then misbehaves on.
    pub fn to_rumqttd(&self, listen: SocketAddr) -> rumqttd::Config {
        let mut v4 = HashMap::new();
        v4.insert("pmon-v4".to_owned(), self.server_settings(listen));
        rumqttd::Config {
            id: 0,
            router: self.router_config(),
            v4: Some(v4),
            v5: None,
            ws: None,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            metrics: None,
        }
    }

    /// The router part of [`BrokerConfig::to_rumqttd`].
    pub fn router_config(&self) -> rumqttd::RouterConfig {
        // `rumqttd::protocol::matches(filter, pattern)` decides which pattern applies to a new
        // filter's log. A `#` level in the filter text matches no `+` level of a pattern, so
        // "+", "+/+", … select exactly the filters without `#`, and at most one of them (by
        // depth) matches any filter: the choice is deterministic.
        let narrow = rumqttd::SegmentConfig {
            max_segment_size: self.narrow_segment_size,
            max_segment_count: self.narrow_segment_count,
        };
        let custom_segment = (1..=NARROW_FILTER_MAX_LEVELS)
            .map(|levels| (vec!["+"; levels].join("/"), narrow.clone()))
            .collect();
        rumqttd::RouterConfig {
            max_connections: self.max_connections,
            max_outgoing_packet_count: self.max_outgoing_packet_count,
            max_segment_size: self.max_segment_size,
            max_segment_count: self.max_segment_count,
            custom_segment: Some(custom_segment),
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
        }
    }

    /// The listener part of [`BrokerConfig::to_rumqttd`].
    pub fn server_settings(&self, listen: SocketAddr) -> rumqttd::ServerSettings {
        rumqttd::ServerSettings {
            name: "pmon-v4".to_owned(),
            listen,
            tls: None,
            // rumqttd sleeps this long after every accepted connection (its own example: 1).
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: self.connection_timeout_ms,
                max_payload_size: self.max_payload_size,
                max_inflight_count: self.max_inflight_count,
                auth: None,
                external_auth: None,
                // Has no effect in rumqttd 0.20 (topic matching never returns "no filters").
                dynamic_filters: false,
            },
        }
    }
}

fn check_segments(prefix: &str, size: usize, count: usize) -> Result<(), BrokerError> {
    if size < MIN_SEGMENT_SIZE {
        return Err(BrokerError::InvalidConfig(format!(
            "{prefix}_segment_size = {size} is below {MIN_SEGMENT_SIZE} bytes"
        )));
    }
    if count == 0 {
        return Err(BrokerError::InvalidConfig(format!(
            "{prefix}_segment_count must be at least 1"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_default() {
        let config = BrokerConfig::from_toml_str("").expect("empty table parses");
        assert_eq!(config, BrokerConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = BrokerConfig::from_toml_str("max_segment_sise = 4096").unwrap_err();
        assert!(err.to_string().contains("max_segment_sise"), "{err}");
    }

    #[test]
    fn every_key_round_trips_through_toml() {
        let mut config = BrokerConfig::with_bind("0.0.0.0:11883".parse().expect("addr"));
        config.narrow_segment_count = 2;
        config.max_inflight_count = 7;
        let text = toml::to_string(&config).expect("serializes");
        assert_eq!(BrokerConfig::from_toml_str(&text).expect("parses"), config);
    }

    #[test]
    fn values_that_crash_rumqttd_are_rejected() {
        let too_small = "max_segment_size = 512";
        assert!(matches!(
            BrokerConfig::from_toml_str(too_small),
            Err(BrokerError::InvalidConfig(_))
        ));
        let err = BrokerConfig::from_toml_str("narrow_segment_count = 0").unwrap_err();
        assert!(err.to_string().contains("narrow_segment_count"), "{err}");
        assert!(BrokerConfig::from_toml_str("max_connections = 0").is_err());
        assert!(BrokerConfig::from_toml_str("connection_timeout_ms = 70000").is_err());
    }

    #[test]
    fn rumqttd_config_sets_every_router_field() {
        let config = BrokerConfig::default();
        let rumqttd = config.to_rumqttd(config.bind);
        let router = &rumqttd.router;
        assert_eq!(router.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(router.max_segment_size, DEFAULT_MAX_SEGMENT_SIZE);
        assert_eq!(router.max_segment_count, DEFAULT_MAX_SEGMENT_COUNT);
        assert_eq!(
            router.max_outgoing_packet_count,
            DEFAULT_MAX_OUTGOING_PACKET_COUNT
        );
        let v4 = rumqttd.v4.as_ref().expect("one v4 listener");
        assert_eq!(v4.len(), 1);
        let server = v4.values().next().expect("one v4 listener");
        assert_eq!(server.listen, config.bind);
        assert_eq!(
            server.connections.max_payload_size,
            DEFAULT_MAX_PAYLOAD_SIZE
        );
        assert!(rumqttd.v5.is_none() && rumqttd.ws.is_none() && rumqttd.console.is_none());
    }

    /// Which log size rumqttd gives a filter: the last matching `custom_segment` pattern, else
    /// the router default (this mirrors `rumqttd`'s `Data::new`).
    fn log_size(config: &rumqttd::RouterConfig, filter: &str) -> (usize, usize) {
        let mut size = (config.max_segment_size, config.max_segment_count);
        for (pattern, segment) in config.custom_segment.iter().flatten() {
            if rumqttd::protocol::matches(filter, pattern) {
                size = (segment.max_segment_size, segment.max_segment_count);
            }
        }
        size
    }

    #[test]
    fn filters_with_hash_get_the_wide_log_and_others_the_narrow_one() {
        let router = BrokerConfig::default().router_config();
        let wide = (DEFAULT_MAX_SEGMENT_SIZE, DEFAULT_MAX_SEGMENT_COUNT);
        let narrow = (DEFAULT_NARROW_SEGMENT_SIZE, DEFAULT_NARROW_SEGMENT_COUNT);
        for filter in [
            "#",
            "pmon/#",
            "pmon/site/#",
            "pmon/site/+/#",
            "+/#",
            "$share/g/pmon/#",
        ] {
            assert_eq!(log_size(&router, filter), wide, "{filter}");
        }
        for filter in [
            "pmon",
            "pmon/site/c17/state",
            "pmon/site/+/state",
            "+/+",
            "homeassistant/status",
            "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p",
        ] {
            assert_eq!(log_size(&router, filter), narrow, "{filter}");
        }
        let matching = |filter: &str| {
            router
                .custom_segment
                .iter()
                .flatten()
                .filter(|(pattern, _)| rumqttd::protocol::matches(filter, pattern))
                .count()
        };
        assert_eq!(
            matching("pmon/site/+/state"),
            1,
            "exactly one pattern applies"
        );
        assert_eq!(matching("pmon/site/#"), 0);
    }
}
