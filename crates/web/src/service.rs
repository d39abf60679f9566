//! The service: [`run`], [`Web`] for those who need its address, [`set_password`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pmon_proto::Topics;
use rumqttc::{AsyncClient, MqttOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::{self, Auth};
use crate::config::{WebConfig, WebError};
use crate::live::{self, Live};
use crate::routes::{self, AppState};
use crate::settings::Settings;

/// Time open connections (live streams, CSV downloads) get at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Stores a password for the settings pages (`pmon web --set-password`).
pub fn set_password(data_dir: &Path, password: &str) -> Result<(), WebError> {
    auth::store_password(data_dir, password)
}

/// MQTT options: clean session, QoS 0 subscriber, 256 KiB packets.
pub fn mqtt_options(config: &WebConfig) -> Result<MqttOptions, WebError> {
    let url = &config.mqtt_url;
    let url_error = |reason: String| WebError::MqttUrl {
        url: url.clone(),
        reason,
    };
    if !(url.starts_with("mqtt://") || url.starts_with("tcp://")) {
        return Err(url_error("only mqtt:// and tcp:// are supported".into()));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut options =
        MqttOptions::parse_url(format!("{url}{separator}client_id={}", config.client_id()))
            .map_err(|e| url_error(e.to_string()))?;
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((user, password)) = &config.mqtt_credentials {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// A running web service.
pub struct Web {
    addr: SocketAddr,
    live: Arc<Live>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Web {
    /// Loads the settings and password, binds the port (a taken port is an error now, not a
    /// panic later), connects to the broker and serves.
    pub async fn start(config: WebConfig) -> Result<Web, WebError> {
        let topics =
            Topics::new(&config.site).ok_or_else(|| WebError::Site(config.site.clone()))?;
        let options = mqtt_options(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| WebError::File {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let settings = Settings::load(&config.data_dir)?;
        let data_dir = config.data_dir.clone();
        let initial = config.initial_password.clone();
        let auth = tokio::task::spawn_blocking(move || Auth::load(&data_dir, initial.as_deref()))
            .await
            .map_err(|e| WebError::Password(e.to_string()))??;
        if !auth.password_set() {
            warn!(
                "no password set: the settings pages are read-only until `pmon web --set-password`"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.http_bind)
            .await
            .map_err(|source| WebError::Bind {
                addr: config.http_bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: config.http_bind,
            source,
        })?;
        let live = Live::new();
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (stop, stop_rx) = watch::channel(false);
        let mqtt = tokio::spawn(live::drive(
            eventloop,
            client.clone(),
            topics.clone(),
            Arc::clone(&live),
            stop_rx.clone(),
        ));
        let state = AppState::new(
            Arc::clone(&live),
            settings,
            auth,
            client.clone(),
            topics,
            config.historian.clone(),
            config.stale_after_s,
        );
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = warp::serve(routes::routes(state))
                .incoming(listener)
                .graceful(async move {
                    let _ = rx.await;
                })
                .run();
            tokio::pin!(server);
            tokio::select! {
                _ = &mut server => return,
                _ = http_stop.wait_for(|s| *s) => {}
            }
            let _ = tx.send(());
            if tokio::time::timeout(HTTP_GRACE, server).await.is_err() {
                info!("web: closed connections still open after {HTTP_GRACE:?}");
            }
            let _ = client.try_disconnect();
        });
        info!(url = %format!("http://{addr}/"), broker = %config.mqtt_url, historian = %config.historian, "web UI started");
        Ok(Web {
            addr,
            live,
            stop,
            tasks: vec![mqtt, http],
        })
    }

    /// Where the UI listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live store.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live)
    }

    /// Stops serving and disconnects.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(HTTP_GRACE + Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        info!("web UI stopped");
    }
}

/// Runs the web service until `shutdown` resolves.
pub async fn run(config: WebConfig, shutdown: impl Future<Output = ()>) -> Result<(), WebError> {
    let web = Web::start(config).await?;
    shutdown.await;
    web.stop().await;
    Ok(())
}
