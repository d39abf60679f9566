//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pmon — power monitoring for many AC circuits.
///
/// A Raspberry Pi (or any Linux host) polls slave boards over I2C and publishes voltage,
/// current, frequency, power, power factor, crest factor, phase angle and energy over MQTT.
/// Without slave boards it runs a simulator, so everything works on a laptop.
#[derive(Debug, Parser)]
#[command(name = "pmon", version, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub common: Common,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. On the command line they override the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// Config file (TOML); `pmon config example` prints a documented one.
    #[arg(long, global = true, env = "PMON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Site name, the second level of every MQTT topic (`pmon/<site>/…`). Default: home.
    #[arg(long, global = true, env = "PMON_SITE", value_name = "NAME")]
    pub site: Option<String>,
    /// Port of the embedded MQTT broker, and of the broker the services connect to. Default: 1883.
    #[arg(long, global = true, value_name = "N")]
    pub mqtt_port: Option<u16>,
    /// Broker the services connect to, e.g. mqtt://192.168.1.5:1883. Default: the embedded one.
    #[arg(long, global = true, env = "PMON_MQTT_URL", value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Port of the web UI (`pmon web`, `pmon up`). Default: 8080.
    #[arg(long, global = true, value_name = "N")]
    pub http_port: Option<u16>,
    /// Port of the historian's query API (served by a later release). Default: 8081.
    #[arg(long, global = true, value_name = "N")]
    pub api_port: Option<u16>,
    /// Where services keep their state (acquisition bases, later the historian). Default: ./pmon-data.
    #[arg(long, global = true, env = "PMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Simulate N slaves with a varied mix of loads instead of reading I2C buses.
    #[arg(long, global = true, value_name = "N", conflicts_with = "sim_config")]
    pub sim: Option<usize>,
    /// Simulate the slaves described in this TOML file (see `pmon config example --simulator`).
    #[arg(long, global = true, value_name = "FILE")]
    pub sim_config: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: the embedded MQTT broker and the acquisition.
    Up,
    /// Run only the embedded MQTT broker.
    Broker,
    /// Run only the acquisition, publishing to --mqtt-url (or the local broker).
    Acquire,
    /// Run only the historian: store every frame in SQLite under --data-dir and answer
    /// queries on --api-port.
    Historian(HistorianArgs),
    /// Run only the web UI on --http-port: live dashboard, history (from the historian on
    /// --api-port), settings behind a login, Prometheus /metrics.
    Web(WebArgs),
    /// Subscribe and print what pmon publishes, decoded.
    Tail(TailArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check this setup (I2C buses, slaves, CRC errors, broker, data directory) and explain fixes.
    ///
    /// Exit status 0 when no check failed (warnings allowed), 1 when any failed.
    Doctor(crate::doctor::DoctorArgs),
    /// Slave board maintenance (change a board's bus address).
    #[command(subcommand)]
    Slave(crate::slave::SlaveCommand),
    /// Simulator tools.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Export CSV: a range of the history (`export history`), or live rows into one file per
    /// circuit per day (`export live`).
    ///
    /// Exit status: 0 ok; 2 bad usage, range, time zone, unknown circuit or quantity;
    /// 3 historian or broker unreachable, database unreadable; 4 output not writable.
    #[command(subcommand)]
    Export(pmon_export::ExportCommand),
}

/// `pmon sim …`.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Act as a serial bridge with simulated slaves (--sim N or --sim-config FILE) behind
    /// it, in real time, on a tty or pseudo-terminal, until SIGINT or SIGTERM.
    Bridge(crate::sim_bridge::BridgeArgs),
}

/// `pmon historian`.
#[derive(Debug, Clone, Default, Args)]
pub struct HistorianArgs {
    /// Verify the database (SQLite integrity and the chunk invariants), report and exit:
    /// 0 when it is sound, 1 when it is not.
    #[arg(long)]
    pub check: bool,
}

/// `pmon web`.
#[derive(Debug, Clone, Default, Args)]
pub struct WebArgs {
    /// Set the password the settings pages ask for (read from PMON_WEB_PASSWORD, or one line
    /// of standard input), store its Argon2 hash under --data-dir and exit.
    #[arg(long)]
    pub set_password: bool,
}

/// `pmon tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Print only these kinds of message.
    #[arg(long, value_enum, default_values_t = [TailKind::Frame, TailKind::State, TailKind::Availability, TailKind::Health, TailKind::Info, TailKind::Status])]
    pub only: Vec<TailKind>,
    /// Print only this circuit (its id, e.g. 00c0ffee).
    #[arg(long, value_name = "ID")]
    pub circuit: Option<String>,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Print frames as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Kinds of message `pmon tail` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailKind {
    /// Binary frames, decoded.
    Frame,
    /// JSON state.
    State,
    /// Circuit availability.
    Availability,
    /// Circuit health.
    Health,
    /// Circuit description.
    Info,
    /// The acquisition's own status.
    Status,
}

/// `pmon config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a documented config file with every default.
    Example {
        /// Print an example simulator file (for --sim-config) instead.
        #[arg(long)]
        simulator: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
