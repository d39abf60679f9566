//! The service: [`run`] (and [`Historian`] for those who need its address and counters),
//! and [`check`] for `pmon historian --check`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pmon_proto::Topics;
use rumqttc::{AsyncClient, MqttOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::config::{db_path, HistorianConfig};
use crate::error::HistorianError;
use crate::ingest::{self, Acker, CommitPolicy, Writer, WriterMsg, MAX_PACKET, REQUEST_CHANNEL};
use crate::stats::{Labels, Stats};
use crate::store::{CheckReport, Store};

/// Time the writer gets to commit and acknowledge at shutdown.
const WRITER_GRACE: Duration = Duration::from_secs(10);
/// Time the MQTT task gets to send the last acknowledgements and disconnect.
const MQTT_GRACE: Duration = Duration::from_secs(3);
/// Time open API connections get at shutdown.
const API_GRACE: Duration = Duration::from_secs(3);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Verifies the database of a data directory (or the database file itself): SQLite's integrity
/// check and the store's invariants. Opens it read-only, so it can run beside a live historian.
pub fn check(path: &Path) -> Result<CheckReport, HistorianError> {
    let db = db_path(path);
    if !db.exists() {
        return Err(HistorianError::Internal(format!(
            "no historian database at {}",
            db.display()
        )));
    }
    let store = Store::open_read_only(&db)?;
    Ok(store.check()?)
}

/// Builds the MQTT client options: persistent session, manual acknowledgements, pmon's packet
/// size, keep-alive 30 s.
pub fn mqtt_options(config: &HistorianConfig) -> Result<MqttOptions, HistorianError> {
    let url = &config.mqtt.url;
    let url_error = |reason: String| HistorianError::MqttUrl {
        url: url.clone(),
        reason,
    };
    if !(url.starts_with("mqtt://") || url.starts_with("tcp://")) {
        return Err(url_error("only mqtt:// and tcp:// are supported".into()));
    }
    let client_id = config.client_id();
    if !pmon_proto::topic::valid_level(&client_id) || client_id.contains('$') {
        return Err(url_error(format!(
            "client id {client_id:?} must not contain '/', '+', '#' or '$'"
        )));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut options = MqttOptions::parse_url(format!("{url}{separator}client_id={client_id}"))
        .map_err(|e| url_error(e.to_string()))?;
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_request_channel_capacity(REQUEST_CHANNEL);
    if let Some((user, password)) = &config.mqtt.credentials {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// A running historian.
pub struct Historian {
    api_addr: SocketAddr,
    stats: Arc<Stats>,
    labels: Labels,
    stop: watch::Sender<bool>,
    done: Option<JoinHandle<Result<(), HistorianError>>>,
    tasks: Vec<tokio::task::AbortHandle>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Historian {
    /// Opens the store, binds the API, connects to the broker and starts ingesting. Fails
    /// at once on a bad site name or URL, an unusable data directory or a taken API port.
    pub async fn start(config: HistorianConfig) -> Result<Historian, HistorianError> {
        let topics =
            Topics::new(&config.site).ok_or_else(|| HistorianError::Site(config.site.clone()))?;
        let options = mqtt_options(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HistorianError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let db = config.db_path();
        let store_options = config.store.clone();
        let db_for_open = db.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&db_for_open, store_options))
            .await
            .map_err(|e| HistorianError::Internal(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(config.api_bind)
            .await
            .map_err(|source| HistorianError::Bind {
                addr: config.api_bind,
                source,
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| HistorianError::Bind {
                addr: config.api_bind,
                source,
            })?;

        let stats = Stats::new(now_ms());
        let labels = Labels::default();
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
        let epoch = Arc::new(Mutex::new(1u64));
        let (writer_tx, writer_rx) = std::sync::mpsc::channel::<WriterMsg>();
        let (writer_done_tx, writer_done_rx) = oneshot::channel();
        let writer = Writer::new(
            store,
            CommitPolicy::new(config.commit_interval(), config.max_unacked),
            Acker::new(client.clone(), Arc::clone(&epoch), Arc::clone(&stats)),
            Arc::clone(&stats),
        );
        let writer = std::thread::Builder::new()
            .name("historian-writer".into())
            .spawn(move || {
                let result = writer.run(writer_rx);
                let _ = writer_done_tx.send(result);
            })
            .map_err(|e| HistorianError::Internal(format!("spawning the writer: {e}")))?;

        let (stop, stop_rx) = watch::channel(false);
        let mqtt = tokio::spawn(ingest::drive(
            eventloop,
            topics,
            writer_tx.clone(),
            epoch,
            Arc::clone(&stats),
            labels.clone(),
            stop_rx.clone(),
        ));
        let state = ApiState::new(&db, &config.site, Arc::clone(&stats), labels.clone());
        let mut api_stop = stop_rx.clone();
        let api = tokio::spawn(api::serve(
            listener,
            state,
            async move {
                let _ = api_stop.wait_for(|s| *s).await;
            },
            API_GRACE,
        ));
        info!(
            api = %api::describe(api_addr),
            db = %db.display(),
            broker = %config.mqtt.url,
            "historian started"
        );
        let tasks = vec![mqtt.abort_handle(), api.abort_handle()];
        let done = tokio::spawn(supervise(
            stop_rx,
            writer_tx,
            writer_done_rx,
            client,
            mqtt,
            api,
        ));
        Ok(Historian {
            api_addr,
            stats,
            labels,
            stop,
            done: Some(done),
            tasks,
            writer: Some(writer),
        })
    }

    /// Where the query API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The ingest counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The circuit labels learnt so far.
    pub fn labels(&self) -> Labels {
        self.labels.clone()
    }

    /// Stops: the writer commits and acknowledges what it holds, the client disconnects
    /// (keeping its session), the API closes.
    pub async fn stop(self) -> Result<(), HistorianError> {
        let _ = self.stop.send(true);
        match self.done {
            Some(done) => done
                .await
                .map_err(|e| HistorianError::Internal(e.to_string()))?,
            None => Ok(()),
        }
    }

    /// Stops abruptly, as a crash would, for tests: the MQTT connection drops without the
    /// last acknowledgements (the broker keeps them unacknowledged and sends them again), the
    /// writer commits what it staged and exits. Returns when the database is closed.
    #[doc(hidden)]
    pub async fn abort(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(done) = self.done.take() {
            done.abort();
            let _ = done.await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    /// Waits until the historian stops by itself (a store failure); Ok never comes before
    /// [`Historian::stop`].
    pub async fn wait(&mut self) -> Result<(), HistorianError> {
        let Some(done) = self.done.as_mut() else {
            return Ok(());
        };
        let result = done
            .await
            .map_err(|e| HistorianError::Internal(e.to_string()));
        self.done = None;
        result?
    }
}

async fn supervise(
    mut stop: watch::Receiver<bool>,
    writer_tx: std::sync::mpsc::Sender<WriterMsg>,
    mut writer_done: oneshot::Receiver<Result<(), HistorianError>>,
    client: AsyncClient,
    mut mqtt: JoinHandle<()>,
    mut api: JoinHandle<()>,
) -> Result<(), HistorianError> {
    let mut writer_result = None;
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        result = &mut writer_done => {
            writer_result = Some(result.unwrap_or_else(|_| Err(HistorianError::Internal("the writer thread panicked".into()))));
        }
    }
    let result = match writer_result {
        Some(result) => result,
        None => {
            let _ = writer_tx.send(WriterMsg::Shutdown);
            match tokio::time::timeout(WRITER_GRACE, &mut writer_done).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(HistorianError::Internal(
                    "the writer thread panicked".into(),
                )),
                Err(_) => {
                    warn!("the writer did not finish in {WRITER_GRACE:?}");
                    Ok(())
                }
            }
        }
    };
    drop(writer_tx);
    // The acknowledgements are queued in the client's channel: the disconnect goes after them.
    let _ = client.try_disconnect();
    if tokio::time::timeout(MQTT_GRACE, &mut mqtt).await.is_err() {
        mqtt.abort();
    }
    let _ = stop_api(&mut api).await;
    if result.is_ok() {
        info!("historian stopped");
    }
    result
}

async fn stop_api(api: &mut JoinHandle<()>) -> Result<(), ()> {
    match tokio::time::timeout(API_GRACE + Duration::from_secs(1), &mut *api).await {
        Ok(_) => Ok(()),
        Err(_) => {
            api.abort();
            Err(())
        }
    }
}

/// Runs the historian until `shutdown` resolves (or the store fails).
///
/// With `config.check` set, only verifies the database and returns an error when it has
/// problems (see [`check`]).
pub async fn run(
    config: HistorianConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HistorianError> {
    if config.check {
        let dir = config.data_dir.clone();
        let report = tokio::task::spawn_blocking(move || check(&dir))
            .await
            .map_err(|e| HistorianError::Internal(e.to_string()))??;
        return if report.ok {
            info!(
                circuits = report.circuits,
                records = report.records,
                chunks = report.chunks,
                "database check passed"
            );
            Ok(())
        } else {
            Err(HistorianError::Internal(format!(
                "database check failed: {}",
                report.problems.join("; ")
            )))
        };
    }
    let mut historian = Historian::start(config).await?;
    tokio::pin!(shutdown);
    let ended = tokio::select! {
        _ = &mut shutdown => None,
        result = historian.wait() => Some(result),
    };
    match ended {
        Some(result) => result,
        None => historian.stop().await,
    }
}
