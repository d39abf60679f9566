//! `pmon export`: the historian's records as CSV.
//!
//! - [`history`]: a range, from the historian's HTTP API (`--url`) or straight from a historian
//!   database file (`--db`), byte-identical either way (both use the historian's own CSV
//!   writer, [`pmon_historian::api::write_export`]).
//! - [`live`]: subscribes to the frames and appends rows to one CSV file per circuit per local
//!   day, never leaving a half-written row.
//!
//! Exit codes (see [`Error::exit_code`]): 0 ok, 2 usage / bad range / unknown circuit or
//! quantity, 3 historian unreachable or database unreadable, 4 write error.
#![warn(missing_docs)]

pub mod history;
pub mod live;

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Exit code for a bad command line, range, circuit or quantity.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the historian is unreachable or the database unreadable.
pub const EXIT_SOURCE: u8 = 3;
/// Exit code when the output cannot be written (full disk, permissions).
pub const EXIT_WRITE: u8 = 4;

/// Why an export failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: a range, a name, a time zone (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The historian or the database could not be read (exit 3).
    #[error("{0}")]
    Source(String),
    /// The output could not be written (exit 4).
    #[error("{0}")]
    Write(String),
}

impl Error {
    /// The process exit code scripts can rely on: 2 usage, 3 source, 4 write.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Source(_) => EXIT_SOURCE,
            Error::Write(_) => EXIT_WRITE,
        }
    }
}

/// `pmon export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export a range of the history as CSV, from the historian's API or a database file.
    ///
    /// The header row is `time,circuit,seq,voltage,…` (raw) or `time,circuit,count,coverage,
    /// voltage_min,…` (rollups); times are RFC 3339 with milliseconds and the offset of --tz;
    /// values are the exact stored decimals. Units: V, A, Hz, W, VA, var, 1, 1, deg, kWh, kWh
    /// (--units-comment writes them as a leading `#` line).
    ///
    /// Exit status: 0 done; 2 bad usage, range, time zone, unknown circuit or quantity;
    /// 3 historian unreachable or database unreadable; 4 output not writable (full disk,
    /// permissions).
    History(HistoryArgs),
    /// Subscribe to the frames and append rows to `<dir>/<circuit>/<YYYY-MM-DD>.csv`.
    ///
    /// One file per circuit per local day of --tz, a header on new files; rows are written
    /// whole (one write per batch) and a file whose last line is incomplete (power cut) is
    /// repaired on start-up. Runs until SIGINT or SIGTERM.
    ///
    /// Exit status: 0 stopped by a signal; 2 bad usage; 3 broker unreachable at start-up;
    /// 4 output not writable.
    Live(LiveArgs),
}

/// `pmon export history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Start of the range (inclusive): RFC 3339 with an offset (2025-11-25T00:00:00+01:00) or
    /// milliseconds since the epoch.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the range (exclusive), like --from.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// Only this circuit (repeatable); default every circuit.
    #[arg(long = "circuit", value_name = "ID")]
    pub circuits: Vec<String>,
    /// Only this quantity (repeatable, in this order); default all eleven.
    #[arg(long = "quantity", value_name = "Q")]
    pub quantities: Vec<String>,
    /// raw, 1m, 15m, 1h or 1d.
    #[arg(long, default_value = "raw", value_name = "RES")]
    pub resolution: String,
    /// IANA time zone of the timestamps' offsets (Europe/Berlin). Default UTC.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub tz: String,
    /// Write to FILE (through a temporary file renamed at the end) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Start with a `# pmon export: … units: …` comment line.
    #[arg(long)]
    pub units_comment: bool,
    /// The historian's API, e.g. http://127.0.0.1:8081/. Default: the local one (--api-port).
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub url: Option<String>,
    /// Read this historian database file instead (read-only; live or backup).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `pmon export live`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Directory of the CSV files (`<dir>/<circuit>/<YYYY-MM-DD>.csv`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// IANA time zone of the days and of the timestamps' offsets. Default UTC.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub tz: String,
    /// Broker, e.g. mqtt://127.0.0.1:1883. Default: --mqtt-url or the embedded one.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// MQTT client id (a persistent session: frames published while the exporter is down are
    /// delivered when it comes back, within the broker's limits).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
}

/// What `pmon` knows from its configuration.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The historian API's base URL (`http://127.0.0.1:8081/`).
    pub api_url: String,
    /// The broker URL.
    pub mqtt_url: String,
    /// MQTT credentials.
    pub mqtt_credentials: Option<(String, String)>,
    /// Site name.
    pub site: String,
}

/// Runs one export command.
pub fn run(command: ExportCommand, defaults: &Defaults) -> Result<(), Error> {
    match command {
        ExportCommand::History(args) => history::run(&args, defaults).map(|_| ()),
        ExportCommand::Live(args) => live::run(&args, defaults),
    }
}
