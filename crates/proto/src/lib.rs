//! What pmon's services say to each other and to the world over MQTT.
//!
//! Topics live under `pmon/<site>/` ([`topic`]). Measurements travel as compact, versioned
//! postcard frames ([`frame`]) for pmon's own services, and as JSON ([`state`], [`health`])
//! for everything else (Home Assistant, Node-RED, Telegraf, `mosquitto_sub`). The exact
//! bytes are specified in `docs/mqtt.md`; the tests here pin them.
#![warn(missing_docs)]

pub mod discovery;
pub mod frame;
pub mod health;
pub mod state;
pub mod topic;

pub use frame::{Frame, FrameRecord};
pub use health::Health;
pub use state::State;
pub use topic::Topics;

/// Payload of availability topics while the publisher is up.
pub const ONLINE: &str = "online";
/// Payload of availability topics once it is gone (also the last will).
pub const OFFLINE: &str = "offline";

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// The frame's version byte names a version this build does not know.
    #[error("frame version {0} is not supported (this build reads version {supported})", supported = frame::VERSION)]
    Version(u8),
    /// The postcard body is malformed.
    #[error("malformed frame: {0}")]
    Postcard(#[from] postcard::Error),
    /// The JSON is malformed or lacks a key.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A value is out of its documented range.
    #[error("invalid {0}")]
    Invalid(&'static str),
}
