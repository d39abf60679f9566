//! The `pmon` binary's library: command dispatch, configuration, `tail`.
#![warn(missing_docs)]

pub mod cli;
pub mod logging;
pub mod settings;
pub mod shutdown;
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
    let resolved = settings::resolve(&cli.common)?;
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
            Command::Tail(args) => tail::run(&resolved, args).await,
            Command::Config(_) => Ok(()),
        }
    })
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
/// stops the rest.
async fn up(resolved: Resolved) -> anyhow::Result<()> {
    let (fanout, trigger) = Fanout::new();
    let broker_config = resolved.broker.clone();
    let mut broker = tokio::task::spawn_blocking(move || pmon_broker::spawn(broker_config))
        .await
        .context("broker start-up")?
        .context("cannot start the embedded MQTT broker")?;
    info!(addr = %broker.local_addr(), "embedded MQTT broker listening");
    let mut acquisition = tokio::spawn(pmon_acquire::run(acquire_config(&resolved), fanout.wait()));
    let mut failure: Option<anyhow::Error> = None;
    let mut acquisition_done = false;
    tokio::select! {
        error = broker.died() => {
            failure = Some(anyhow::Error::new(error).context("the embedded MQTT broker stopped"));
        }
        ended = &mut acquisition => {
            acquisition_done = true;
            failure = service_failure("acquisition", ended);
        }
        _ = fanout.wait() => {}
    }
    let _ = trigger.send(true);
    if !acquisition_done {
        if let Some(error) = service_failure("acquisition", acquisition.await) {
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
