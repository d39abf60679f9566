//! `pmon-historian`: the historian service alone, for tests, containers and systemd.
//! (`pmon historian` runs the same library code.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pmon_historian::store::StoreOptions;
use pmon_historian::{HistorianConfig, MqttSettings};

/// pmon historian: stores every circuit's frames in one SQLite file and serves the query API.
#[derive(Debug, Parser)]
#[command(name = "pmon-historian", version)]
struct Args {
    /// Site name, the second level of every MQTT topic.
    #[arg(long, env = "PMON_SITE", default_value = "home")]
    site: String,
    /// Broker URL.
    #[arg(long, env = "PMON_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// MQTT client id (default pmon-historian-<site>; keep it stable: the broker holds the
    /// historian's session under it).
    #[arg(long)]
    client_id: Option<String>,
    /// MQTT user name.
    #[arg(long, env = "PMON_MQTT_USERNAME", requires = "password")]
    username: Option<String>,
    /// MQTT password.
    #[arg(
        long,
        env = "PMON_MQTT_PASSWORD",
        requires = "username",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Directory of the database (historian.sqlite).
    #[arg(long, env = "PMON_DATA_DIR", default_value = "pmon-data")]
    data_dir: PathBuf,
    /// Port of the query API.
    #[arg(long, default_value_t = 8081)]
    api_port: u16,
    /// Address of the query API (default loopback; 0.0.0.0 exposes it to the network).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    api_host: IpAddr,
    /// Longest wait before received records are committed, ms.
    #[arg(long, default_value_t = pmon_historian::config::DEFAULT_COMMIT_INTERVAL_MS)]
    commit_interval_ms: u64,
    /// Commit at once when this many QoS 1 messages wait for acknowledgement.
    #[arg(long, default_value_t = pmon_historian::config::DEFAULT_MAX_UNACKED)]
    max_unacked: usize,
    /// Days of raw records to keep (0: forever).
    #[arg(long)]
    raw_retention_days: Option<u32>,
    /// Verify the database and exit (0: healthy, 1: problems).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.check {
        return match pmon_historian::check(&args.data_dir) {
            Ok(report) => {
                println!(
                    "{}: {} circuits, {} records, {} chunks",
                    if report.ok { "ok" } else { "PROBLEMS" },
                    report.circuits,
                    report.records,
                    report.chunks
                );
                for problem in &report.problems {
                    println!("  {problem}");
                }
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("pmon-historian: {error}");
                ExitCode::from(2)
            }
        };
    }
    let mut store = StoreOptions::default();
    if let Some(days) = args.raw_retention_days {
        store.raw_retention_days = (days > 0).then_some(days);
    }
    let mut config = HistorianConfig::new(args.site, args.data_dir);
    config.mqtt = MqttSettings {
        url: args.mqtt_url,
        client_id: args.client_id,
        credentials: args.username.zip(args.password),
    };
    config.api_bind = SocketAddr::new(args.api_host, args.api_port);
    config.store = store;
    config.commit_interval_ms = args.commit_interval_ms;
    config.max_unacked = args.max_unacked;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pmon-historian: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(pmon_historian::run(config, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pmon-historian: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
