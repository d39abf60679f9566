//! pmon historian: stores the measurement frames of every circuit in one SQLite file and answers queries over them.

pub mod store;

pub mod api;
pub mod config;
pub mod error;
pub mod ingest;
pub mod service;
pub mod stats;
pub mod timefmt;

pub use config::{HistorianConfig, MqttSettings};
pub use error::HistorianError;
pub use service::{check, run, Historian};
