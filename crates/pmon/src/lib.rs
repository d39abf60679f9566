//! The `pmon` binary's library: command dispatch, configuration, `tail`.
#![warn(missing_docs)]

pub mod buses;
pub mod cli;
pub mod doctor;
pub mod logging;
pub mod settings;
pub mod shutdown;
pub mod sim_bridge;
pub mod slave;
pub mod tail;

use anyhow::Context;
use tracing::info;

use cli::{Cli, Command, ConfigCommand};
use settings::Resolved;
use shutdown::Fanout;

/// Runs one command to completion.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(ConfigCommand::Example { simulator }) = &cli.command {
        print!(
            "{}",
            if *simulator {
                pmon_sim::SimConfig::example_toml()
            } else {
                settings::EXAMPLE
            }
        );
        return Ok(());
    }
    // Maintenance commands are synchronous and read the configuration themselves.
    match &cli.command {
        Command::Doctor(args) => return doctor::run(&cli.common, args),
        Command::Slave(command) => return slave::run(&cli.common, command),
        Command::Sim(cli::SimCommand::Bridge(args)) => return sim_bridge::run(&cli.common, args),
        _ => {}
    }
    if let Command::Export(command) = cli.command {
        return export(&cli.common, command);
    }
    let resolved = settings::resolve(&cli.common)?;
    if let Command::Historian(cli::HistorianArgs { check: true }) = &cli.command {
        return check_history(&resolved);
    }
    if let Command::Web(cli::WebArgs { set_password: true }) = &cli.command {
        return set_web_password(&resolved);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("pmon")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up => up(resolved).await,
            Command::Broker => broker(resolved).await,
            Command::Acquire => acquire(resolved).await,
            Command::Historian(args) => historian(resolved, args).await,
            Command::Web(_) => web(resolved).await,
            Command::Tail(args) => tail::run(&resolved, args).await,
            Command::Config(_)
            | Command::Doctor(_)
            | Command::Slave(_)
            | Command::Sim(_)
            | Command::Export(_) => Ok(()),
        }
    })
}

/// `pmon export …`: its errors carry their exit code (see [`exit_code`]).
fn export(common: &cli::Common, command: pmon_export::ExportCommand) -> anyhow::Result<()> {
    let resolved = settings::resolve(common)
        .map_err(|e| pmon_export::Error::Usage(format!("configuration: {e}")))?;
    let api = resolved.historian.api_bind;
    let host = if api.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api.port())
    } else {
        api
    };
    let defaults = pmon_export::Defaults {
        api_url: format!("http://{host}/"),
        mqtt_url: resolved.mqtt.url.clone(),
        mqtt_credentials: resolved.mqtt.credentials.clone(),
        site: resolved.site.clone(),
    };
    pmon_export::run(command, &defaults)?;
    Ok(())
}

/// The process exit code for an error from [`execute`]: `pmon export`'s own codes (2 usage,
/// 3 source, 4 write), 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<pmon_export::Error>() {
        Some(e) => e.exit_code(),
        None => 1,
    }
}

fn acquire_config(resolved: &Resolved) -> pmon_acquire::AcquireConfig {
    let source = match &resolved.simulator {
        Some((sim, description)) => {
            info!("running {description}");
            pmon_acquire::Source::Simulator(sim.clone())
        }
        None => pmon_acquire::Source::Hardware,
    };
    pmon_acquire::AcquireConfig {
        site: resolved.site.clone(),
        mqtt: resolved.mqtt.clone(),
        settings: resolved.acquisition.clone(),
        circuits: resolved.circuits.clone(),
        data_dir: Some(resolved.data_dir.clone()),
        source,
        homeassistant: resolved.homeassistant.clone(),
    }
}

async fn broker(resolved: Resolved) -> anyhow::Result<()> {
    let (fanout, _) = Fanout::new();
    pmon_broker::run(resolved.broker, fanout.wait())
        .await
        .context("MQTT broker")
}

async fn acquire(resolved: Resolved) -> anyhow::Result<()> {
    let (fanout, _) = Fanout::new();
    pmon_acquire::run(acquire_config(&resolved), fanout.wait())
        .await
        .context("acquisition")
}

/// The broker first (so the services find it), then every service; the first to fail
/// stops the rest. Shutdown runs downstream: the acquisition publishes its last frames, the
/// historian gets a moment to commit them, then it stops, then the broker.
async fn up(resolved: Resolved) -> anyhow::Result<()> {
    let (fanout, trigger) = Fanout::new();
    let broker_config = resolved.broker.clone();
    let mut broker = tokio::task::spawn_blocking(move || pmon_broker::spawn(broker_config))
        .await
        .context("broker start-up")?
        .context("cannot start the embedded MQTT broker")?;
    info!(addr = %broker.local_addr(), "embedded MQTT broker listening");
    let (stop_downstream, downstream) = tokio::sync::watch::channel(false);
    let mut web_downstream = downstream.clone();
    let web_config = web_config(&resolved);
    // A taken web port must not stop the recording: the UI is then missing, loudly.
    let mut web = tokio::spawn(async move {
        let stopped = async move {
            let _ = web_downstream.wait_for(|stop| *stop).await;
        };
        match pmon_web::Web::start(web_config).await {
            Ok(web) => {
                stopped.await;
                web.stop().await;
                Ok(())
            }
            Err(error @ pmon_web::WebError::Bind { .. }) => {
                tracing::error!(%error, "the web UI is not running; the other services are");
                stopped.await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    });
    let mut acquisition = tokio::spawn(pmon_acquire::run(acquire_config(&resolved), fanout.wait()));
    let mut historian = tokio::spawn(pmon_historian::run(
        historian_config(&resolved, false),
        async move {
            let mut downstream = downstream;
            let _ = downstream.wait_for(|stop| *stop).await;
        },
    ));
    let mut failure: Option<anyhow::Error> = None;
    let (mut acquisition_done, mut historian_done, mut web_done) = (false, false, false);
    tokio::select! {
        error = broker.died() => {
            failure = Some(anyhow::Error::new(error).context("the embedded MQTT broker stopped"));
        }
        ended = &mut acquisition => {
            acquisition_done = true;
            failure = service_failure("acquisition", ended);
        }
        ended = &mut historian => {
            historian_done = true;
            failure = service_failure("historian", ended);
        }
        ended = &mut web => {
            web_done = true;
            failure = service_failure("web UI", ended);
        }
        _ = fanout.wait() => {}
    }
    let _ = trigger.send(true);
    if !acquisition_done {
        if let Some(error) = service_failure("acquisition", acquisition.await) {
            failure.get_or_insert(error);
        }
    }
    // The acquisition's last frames are on their way to the historian.
    tokio::time::sleep(HISTORIAN_DRAIN).await;
    let _ = stop_downstream.send(true);
    if !historian_done {
        if let Some(error) = service_failure("historian", historian.await) {
            failure.get_or_insert(error);
        }
    }
    if !web_done {
        if let Some(error) = service_failure("web UI", web.await) {
            failure.get_or_insert(error);
        }
    }
    if let Err(error) = broker.stop().await {
        failure.get_or_insert(anyhow::Error::new(error).context("stopping the MQTT broker"));
    }
    match failure {
        Some(error) => Err(error),
        None => {
            info!("pmon stopped");
            Ok(())
        }
    }
}

/// How long `pmon up` lets the historian take the acquisition's last frames before stopping it.
const HISTORIAN_DRAIN: std::time::Duration = std::time::Duration::from_millis(1500);

fn historian_config(resolved: &Resolved, check: bool) -> pmon_historian::HistorianConfig {
    let mut config = pmon_historian::HistorianConfig::new(&resolved.site, &resolved.data_dir);
    config.mqtt = pmon_historian::MqttSettings {
        url: resolved.mqtt.url.clone(),
        client_id: None,
        credentials: resolved.mqtt.credentials.clone(),
    };
    config.api_bind = resolved.historian.api_bind;
    config.store = resolved.historian.retention.clone();
    config.commit_interval_ms = resolved.historian.commit_interval_ms;
    config.max_unacked = resolved.historian.max_unacked;
    config.check = check;
    config
}

fn web_config(resolved: &Resolved) -> pmon_web::WebConfig {
    let mut config = pmon_web::WebConfig::new(&resolved.site, &resolved.data_dir);
    config.mqtt_url = resolved.mqtt.url.clone();
    config.mqtt_credentials = resolved.mqtt.credentials.clone();
    config.http_bind = resolved.web.bind;
    let api = resolved.historian.api_bind;
    config.historian = match &resolved.web.historian {
        Some(historian) => historian.clone(),
        None if api.ip().is_unspecified() => format!("127.0.0.1:{}", api.port()),
        None => api.to_string(),
    };
    config.initial_password = resolved.web.password.clone();
    config
}

async fn web(resolved: Resolved) -> anyhow::Result<()> {
    let (fanout, _) = Fanout::new();
    pmon_web::run(web_config(&resolved), fanout.wait())
        .await
        .context("web UI")
}

/// `pmon web --set-password`: from `PMON_WEB_PASSWORD` or one line of standard input.
fn set_web_password(resolved: &Resolved) -> anyhow::Result<()> {
    let password = match std::env::var("PMON_WEB_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            eprintln!("new password for the pmon web settings (at least 8 characters):");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    pmon_web::set_password(&resolved.data_dir, &password).context("pmon web --set-password")?;
    println!(
        "password stored in {}",
        resolved.data_dir.join(pmon_web::auth::AUTH_FILE).display()
    );
    Ok(())
}

/// `pmon historian --check`: verifies the database (it may be in use) and reports.
fn check_history(resolved: &Resolved) -> anyhow::Result<()> {
    let report = pmon_historian::check(&resolved.data_dir).context("historian check")?;
    println!(
        "{}: {} circuits, {} records in {} chunks, {} rollup blocks, {} gaps",
        pmon_historian::config::db_path(&resolved.data_dir).display(),
        report.circuits,
        report.records,
        report.chunks,
        report.rollup_blocks,
        report.gaps
    );
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    if report.ok {
        println!("ok: the database is sound");
        Ok(())
    } else {
        anyhow::bail!(
            "the database has {} problem(s); see above",
            report.problems.len()
        )
    }
}

async fn historian(resolved: Resolved, args: cli::HistorianArgs) -> anyhow::Result<()> {
    let (fanout, _) = Fanout::new();
    pmon_historian::run(historian_config(&resolved, args.check), fanout.wait())
        .await
        .context("historian")
}

fn service_failure<E>(
    name: &str,
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) -> Option<anyhow::Error>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(anyhow::Error::new(error).context(name.to_string())),
        Err(error) => Some(anyhow::Error::new(error).context(format!("{name} task"))),
    }
}
