//! The acquisition service: polls every slave on every bus and publishes what they
//! measured over MQTT — postcard frames for pmon's services, JSON state, health and
//! availability for everyone else. Topics and payloads are specified in `docs/mqtt.md`.
#![warn(missing_docs)]

pub mod circuit;
pub mod config;
pub mod homeassistant;
pub mod legacy;
pub mod mqtt;
pub mod poller;
mod sources;
pub mod stop;
pub mod store;
pub mod timing;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_proto::Topics;
use rumqttc::AsyncClient;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{
    AcquireConfig, BusConfig, BusKind, BusPolicy, CircuitLabel, LegacyConfig, MqttConfig,
    PrebuiltSimulation, Settings, Source,
};
pub use homeassistant::HomeAssistantConfig;
use poller::Shared;
use stop::StopSignal;
use store::BasesStore;

/// Why the acquisition could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// A setting cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The state file.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The broker URL.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The Home Assistant registry file.
    #[error(transparent)]
    HomeAssistant(#[from] homeassistant::RegistryError),
    /// A bus could not be opened.
    #[error("bus {bus}: {source}")]
    Bus {
        /// The bus id.
        bus: String,
        /// What the driver said.
        source: pmon_bus::DriverError,
    },
    /// The simulator's configuration.
    #[error(transparent)]
    Simulator(#[from] pmon_sim::ConfigError),
    /// A poller thread could not be started.
    #[error("cannot start a poller thread: {0}")]
    Thread(std::io::Error),
}

/// How long shutdown waits for the last messages to reach the broker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the acquisition until `shutdown` completes, then stops the pollers, saves the
/// per-circuit bases, publishes `offline` on the service's status topic and disconnects.
pub async fn run(
    config: AcquireConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AcquireError> {
    config.settings.validate().map_err(AcquireError::Config)?;
    config
        .homeassistant
        .validate()
        .map_err(AcquireError::Config)?;
    let topics = Topics::new(&config.site).ok_or_else(|| {
        AcquireError::Config(format!(
            "site name {:?} cannot be an MQTT topic level",
            config.site
        ))
    })?;
    let store = match &config.data_dir {
        Some(dir) => BasesStore::open(dir)?,
        None => BasesStore::in_memory(),
    };
    let options = mqtt::options(
        &config.mqtt,
        &format!("pmon-acquire-{}", config.site),
        &topics,
        config.settings.queue_capacity,
    )?;
    let (client, eventloop) = AsyncClient::new(options, config.settings.queue_capacity);
    let homeassistant = homeassistant::HomeAssistant::open(
        config.homeassistant.clone(),
        &config.site,
        topics.clone(),
        config.data_dir.as_deref(),
    )?;
    let known = homeassistant.known_circuits();
    let publisher = mqtt::Publisher::new(client, topics)
        .with_raw_topics(config.settings.raw_topics)
        .with_homeassistant(homeassistant);
    // Circuits of earlier runs are offline until their boards answer again.
    for circuit in &known {
        publisher.availability(circuit, false);
    }
    let (stop_connection, stop_receiver) = watch::channel(false);
    let connection = tokio::spawn(mqtt::drive(eventloop, publisher.clone(), stop_receiver));

    let buses = sources::open(&config)?;
    let mut names: BTreeMap<u32, String> = buses.names.clone();
    names.extend(
        config
            .circuits
            .iter()
            .map(|label| (label.serial, label.name.clone())),
    );
    let shared = Shared {
        settings: config.settings.clone(),
        names: Arc::new(names),
        store: Arc::new(Mutex::new(store)),
        publisher: publisher.clone(),
    };
    let stop = StopSignal::new();
    let pollers = buses.spawn(&shared, &stop)?;
    info!(site = %config.site, buses = pollers.len(), "acquisition running");

    let mut states =
        tokio::time::interval(Duration::from_millis(config.settings.state_interval_ms));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = states.tick() => publisher.publish_states(),
        }
    }

    info!("acquisition stopping");
    stop.stop();
    let joined = tokio::task::spawn_blocking(move || {
        for poller in pollers {
            if poller.join().is_err() {
                warn!("a poller thread panicked");
            }
        }
    });
    let _ = joined.await;
    publisher.publish_states();
    publisher.close().await;
    let _ = stop_connection.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, connection)
        .await
        .is_err()
    {
        warn!("the broker did not take the last messages in time");
    }
    Ok(())
}
