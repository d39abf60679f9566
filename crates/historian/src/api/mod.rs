//! The HTTP query API (`/api/v1/…`, described in `docs/api.md`).
//!
//! One warp filter takes every request and dispatches on method and path itself, so that every
//! answer — 404 and 405 included — is JSON from this module and no input reaches a panic.
//! Store calls are synchronous (SQLite): they run on tokio's blocking pool, on read-only
//! connections from a small pool ([`Readers`]), so queries never wait for the writer (WAL).
//! CSV exports stream from their own thread through a bounded channel.

mod csv;
mod handlers;
pub mod params;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Semaphore;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::stats::{Labels, Stats};
use crate::store::{Store, StoreError};

pub use csv::{
    csv_header, csv_units, write_export, write_raw_row, ExportError, ExportPlan, CSV_CHUNK,
};

/// Most concurrent queries on the blocking pool (2-core target).
pub const MAX_QUERIES: usize = 4;
/// Most concurrent CSV exports; more get 503.
pub const MAX_EXPORTS: usize = 4;
/// Read-only connections kept open between requests.
const IDLE_READERS: usize = 4;

/// An API error: a status and `{"error": "...", "detail": "...", "parameter": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: u16,
    /// What went wrong, short and stable (`unknown circuit`, `malformed timestamp`, …).
    pub error: String,
    /// The specifics, for a human.
    pub detail: String,
    /// The query parameter at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    /// A 400 about the request as a whole.
    pub fn bad(error: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            error: error.into(),
            detail: detail.into(),
            parameter: None,
        }
    }

    /// A 400 about one parameter.
    pub fn param(parameter: &str, error: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            parameter: Some(parameter.into()),
            ..ApiError::bad(error, detail)
        }
    }

    /// Any other status.
    pub fn status(status: u16, error: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            ..ApiError::bad(error, detail)
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.status
    }

    /// As a response.
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        warp::reply::with_status(warp::reply::json(&self), status).into_response()
    }

    /// A store error, mapped: problems with the request are 400, the rest 500.
    pub fn store(error: StoreError, parameter: Option<&str>) -> ApiError {
        let (error_text, param) = match &error {
            StoreError::UnknownCircuit(_) => ("unknown circuit", parameter.or(Some("circuit"))),
            StoreError::InvalidCircuit(_) => ("invalid circuit id", parameter.or(Some("circuit"))),
            StoreError::InvalidRecord(_) => ("invalid input", parameter),
            StoreError::UnknownTimeZone(_) => ("unknown time zone", Some("tz")),
            StoreError::ReversedRange { .. } => ("reversed range", Some("from")),
            StoreError::Parse { what, .. } => (
                match *what {
                    "tier" => "unknown resolution",
                    "quantity" => "unknown quantity",
                    "period" => "unknown period",
                    _ => "bad parameter",
                },
                parameter,
            ),
            _ => {
                tracing::error!(%error, "query failed in the store");
                return ApiError::status(500, "storage error", error.to_string());
            }
        };
        ApiError {
            status: 400,
            error: error_text.into(),
            detail: error.to_string(),
            parameter: param.map(str::to_string),
        }
    }
}

/// A pool of read-only store connections.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
}

/// A connection borrowed from [`Readers`]; returned on drop.
pub struct Reader {
    store: Option<Store>,
    pool: Arc<Readers>,
}

impl std::ops::Deref for Reader {
    type Target = Store;
    fn deref(&self) -> &Store {
        // Present from creation until drop.
        self.store.as_ref().expect("reader present until drop")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(store), Ok(mut idle)) = (self.store.take(), self.pool.idle.lock()) {
            if idle.len() < IDLE_READERS {
                idle.push(store);
            }
        }
    }
}

impl Readers {
    /// A pool for the database file `path`.
    pub fn new(path: &Path) -> Arc<Readers> {
        Arc::new(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection (blocking: call from a blocking thread).
    pub fn get(self: &Arc<Self>) -> Result<Reader, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let store = match pooled {
            Some(store) => store,
            None => Store::open_read_only(&self.path)?,
        };
        Ok(Reader {
            store: Some(store),
            pool: Arc::clone(self),
        })
    }
}

/// What the handlers share.
pub struct ApiState {
    /// Read-only connections.
    pub readers: Arc<Readers>,
    /// Ingest counters.
    pub stats: Arc<Stats>,
    /// Circuit labels.
    pub labels: Labels,
    /// Site name (for file names and health).
    pub site: String,
    queries: Semaphore,
    exports: Arc<Semaphore>,
}

impl ApiState {
    /// State over the database file `db`.
    pub fn new(db: &Path, site: &str, stats: Arc<Stats>, labels: Labels) -> Arc<ApiState> {
        Arc::new(ApiState {
            readers: Readers::new(db),
            stats,
            labels,
            site: site.to_string(),
            queries: Semaphore::new(MAX_QUERIES),
            exports: Arc::new(Semaphore::new(MAX_EXPORTS)),
        })
    }

    /// Runs a store query on the blocking pool with a pooled connection.
    pub(crate) async fn query<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .queries
            .acquire()
            .await
            .map_err(|_| ApiError::status(503, "shutting down", "the service is stopping"))?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let reader = readers.get().map_err(|e| ApiError::store(e, None))?;
            f(&reader)
        })
        .await
        .map_err(|e| ApiError::status(500, "internal error", e.to_string()))?
    }
}

/// Every route of the API as one warp filter.
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::any().map(move || Arc::clone(&state)))
        .then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             query: String,
             state: Arc<ApiState>| async move {
                let mut response = handlers::dispatch(&method, path.as_str(), &query, state).await;
                response
                    .headers_mut()
                    .insert("cache-control", HeaderValue::from_static("no-store"));
                response
            },
        )
}

/// Serves `routes` on an already bound listener until `shutdown` resolves; open connections
/// (a long CSV export) get `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(routes(state))
        .incoming(listener)
        .graceful(async move {
            let _ = rx.await;
        })
        .run();
    tokio::pin!(server);
    tokio::select! {
        _ = &mut server => return,
        _ = shutdown => {}
    }
    let _ = tx.send(());
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("closing API connections still open after {grace:?}");
    }
}

/// The address a listener bound to, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/api/v1/")
}
