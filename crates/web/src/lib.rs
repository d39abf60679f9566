//! pmon web UI: a live dashboard pushed over Server-Sent Events from the broker's JSON state,
//! history charts, a table and CSV downloads from the historian's query API (proxied, so the
//! browser talks to one origin), settings behind a login, and Prometheus metrics.
//!
//! Everything the browser loads is embedded in the binary ([`assets`]); see `docs/web.md`.
#![warn(missing_docs)]

pub mod assets;
pub mod auth;
pub mod config;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod service;
pub mod settings;

pub use config::{WebConfig, WebError};
pub use service::{run, set_password, Web};
