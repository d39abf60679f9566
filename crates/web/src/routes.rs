//! Every HTTP route as one warp filter that dispatches on method and path itself, so every
//! answer — 404, 405, 413 included — is JSON from here and no input reaches a panic.
//!
//! | route | |
//! | --- | --- |
//! | `GET /` | the page (views are hash routes) |
//! | `GET /assets/…` | embedded scripts, styles, uPlot |
//! | `GET /api/live` | Server-Sent Events: `snapshot`, then `circuit` on every change, `tick` every 2 s |
//! | `GET /api/circuits`, `/api/circuits/<id>` | the latest of every circuit |
//! | `GET /api/history/<endpoint>` | the historian's `/api/v1/<endpoint>`, streamed |
//! | `GET /api/session`, `/api/settings`, `/api/status` | login state, settings, service status |
//! | `POST /api/login`, `/api/logout` | JSON `{"password": …}`; sets an HttpOnly SameSite=Strict cookie |
//! | `POST /api/settings/circuits/<id>` | JSON `{"name": …, "labels": […]}` (login + CSRF) |
//! | `POST /api/settings/circuits/<id>/calibrate` | JSON calibration, published on the command topic (login + CSRF) |
//! | `GET /metrics` | Prometheus |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pmon_proto::Topics;
use rumqttc::{AsyncClient, QoS};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::assets;
use crate::auth::{Auth, COOKIE, SESSION_IDLE};
use crate::live::{now_ms, Circuit, Live};
use crate::metrics;
use crate::proxy;
use crate::settings::{validate_labels, validate_name, Calibration, Settings};

/// Largest request body accepted.
pub const MAX_BODY: u64 = 16 * 1024;

/// What the handlers share.
pub struct AppState {
    /// The latest per circuit.
    pub live: Arc<Live>,
    /// The user's settings.
    pub settings: Settings,
    /// Password and sessions.
    pub auth: Auth,
    /// Publishes commands.
    pub client: AsyncClient,
    /// The site's topics.
    pub topics: Topics,
    /// The historian's API, `host:port`.
    pub historian: String,
    /// Seconds without a state before a circuit is stale.
    pub stale_after_s: u64,
    logins: Semaphore,
}

impl AppState {
    /// Shared state for the routes.
    pub fn new(
        live: Arc<Live>,
        settings: Settings,
        auth: Auth,
        client: AsyncClient,
        topics: Topics,
        historian: String,
        stale_after_s: u64,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            live,
            settings,
            auth,
            client,
            topics,
            historian,
            stale_after_s,
            logins: Semaphore::new(1),
        })
    }

    /// The display name of a circuit: the user's, else the acquisition's label, else the id.
    pub fn name(&self, circuit: &Circuit) -> String {
        self.settings
            .get()
            .circuits
            .get(&circuit.id)
            .and_then(|s| s.name.clone())
            .or_else(|| circuit.info.as_ref().map(|i| i.name.clone()))
            .unwrap_or_else(|| circuit.id.clone())
    }

    /// A circuit as the browser sees it.
    pub fn view(&self, circuit: &Circuit) -> Value {
        let settings = self.settings.get();
        let own = settings.circuits.get(&circuit.id);
        let now = now_ms();
        let age_ms = circuit.received_ms.map(|t| (now - t).max(0));
        let status = if circuit.availability.as_deref() == Some("offline") {
            "offline"
        } else if age_ms.is_none_or(|a| a > self.stale_after_s as i64 * 1000) {
            "stale"
        } else {
            "online"
        };
        json!({
            "id": circuit.id,
            "name": self.name(circuit),
            "labels": own.map(|s| s.labels.clone()).unwrap_or_default(),
            "calibration": own.and_then(|s| s.calibration),
            "status": status,
            "age_ms": age_ms,
            "state": circuit.state,
            "availability": circuit.availability,
            "health": circuit.health,
            "info": circuit.info,
            "spark": circuit.spark,
        })
    }

    fn all(&self) -> Value {
        let circuits: Vec<Value> = self.live.snapshot().iter().map(|c| self.view(c)).collect();
        json!({
            "circuits": circuits,
            "server_ms": now_ms(),
            "broker_connected": self.live.connected(),
            "stale_after_s": self.stale_after_s,
        })
    }
}

/// A JSON error answer: `{"error": short, "detail": long}`.
pub fn error(status: u16, short: &str, detail: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"error": short, "detail": detail.into()});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn ok_json(value: &Value) -> Response {
    warp::reply::json(value).into_response()
}

/// Every route as one filter.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let body = warp::body::content_length_limit(MAX_BODY)
        .and(warp::body::bytes())
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(body)
        .and(warp::any().map(move || Arc::clone(&state)))
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             body: Option<Bytes>,
             state: Arc<AppState>| async move {
                let mut response =
                    dispatch(&method, path.as_str(), &query, &headers, body, state).await;
                let h = response.headers_mut();
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                h.insert("x-frame-options", HeaderValue::from_static("DENY"));
                h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
                response
            },
        )
}

/// Answers one request.
pub async fn dispatch(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
    state: Arc<AppState>,
) -> Response {
    let get = method == Method::GET || method == Method::HEAD;
    if method == Method::POST {
        let Some(body) = body else {
            return error(
                413,
                "body too large",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            );
        };
        return post(path, headers, &body, &state).await;
    }
    if !get {
        return error(
            405,
            "method not allowed",
            format!("{method} {path}: use GET (or POST for changes)"),
        );
    }
    match path {
        "/" | "/index.html" => {
            let mut r = warp::reply::html(assets::INDEX).into_response();
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'"),
            );
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-cache"));
            r
        }
        "/metrics" => {
            let text = metrics::render(
                &state.live.snapshot(),
                |c| state.name(c),
                state.live.connected(),
            );
            let mut r = Response::new(text.into());
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/api/live" => live(state),
        "/api/circuits" => no_store(ok_json(&state.all())),
        "/api/status" => no_store(ok_json(&json!({
            "broker_connected": state.live.connected(),
            "circuits": state.live.snapshot().len(),
            "malformed": state.live.malformed(),
            "password_set": state.auth.password_set(),
            "historian": state.historian,
            "first_load_bytes": assets::first_load_bytes(),
        }))),
        "/api/session" => {
            let session = state.auth.session(header(headers, "cookie"));
            no_store(ok_json(&json!({
                "logged_in": session.is_some(),
                "csrf": session.map(|(_, s)| s.csrf),
                "password_set": state.auth.password_set(),
            })))
        }
        "/api/settings" => no_store(ok_json(
            &serde_json::to_value(state.settings.get()).unwrap_or(Value::Null),
        )),
        _ => {
            if let Some(file) = path.strip_prefix("/assets/") {
                return match assets::find(file) {
                    Some(asset) => {
                        let mut r = Response::new(asset.body.into());
                        let h = r.headers_mut();
                        h.insert("content-type", HeaderValue::from_static(asset.content_type));
                        h.insert("cache-control", HeaderValue::from_static("no-cache"));
                        r
                    }
                    None => error(404, "not found", format!("no asset {file:?}")),
                };
            }
            if let Some(id) = path.strip_prefix("/api/circuits/") {
                if let Err(e) = valid_id(id) {
                    return error(400, "invalid circuit id", e);
                }
                return match state.live.get(id) {
                    Some(c) => no_store(ok_json(&state.view(&c))),
                    None => error(
                        404,
                        "unknown circuit",
                        format!("no data of circuit {id:?} yet"),
                    ),
                };
            }
            if let Some(endpoint) = path.strip_prefix("/api/history/") {
                if !proxy::ENDPOINTS.contains(&endpoint) {
                    return error(
                        404,
                        "not found",
                        format!(
                            "no history endpoint {endpoint:?}; use one of {}",
                            proxy::ENDPOINTS.join(", ")
                        ),
                    );
                }
                if query.len() > 8192 {
                    return error(400, "query string too long", "at most 8 KiB");
                }
                if query.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return error(
                        400,
                        "malformed query string",
                        "spaces and control characters must be percent-encoded",
                    );
                }
                return match proxy::forward(&state.historian, endpoint, query).await {
                    Ok(r) => r,
                    Err(e) => error(502, "historian unavailable", e.0),
                };
            }
            error(404, "not found", format!("no page {path:?}"))
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A circuit id: 1–64 ASCII letters, digits, `-` or `_`.
pub fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{id:?} is not a circuit id (1 to 64 letters, digits, '-', '_')"
        ));
    }
    Ok(())
}

fn live(state: Arc<AppState>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<warp::sse::Event, Infallible>>(64);
    let mut changes = state.live.subscribe();
    tokio::spawn(async move {
        let snapshot = |state: &AppState| {
            warp::sse::Event::default()
                .event("snapshot")
                .data(state.all().to_string())
        };
        if tx
            .send(Ok(snapshot(&state).retry(Duration::from_secs(2))))
            .await
            .is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => warp::sse::Event::default().event("tick").data(
                    json!({"server_ms": now_ms(), "broker_connected": state.live.connected()}).to_string()),
                change = changes.recv() => match change {
                    Ok(id) => match state.live.get(&id) {
                        Some(c) => warp::sse::Event::default().event("circuit").data(state.view(&c).to_string()),
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => snapshot(&state),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    let mut r = warp::sse::reply(ReceiverStream::new(rx)).into_response();
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitChange {
    name: Option<String>,
    labels: Option<Vec<String>>,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not the expected JSON: {e}"))
}

async fn post(path: &str, headers: &HeaderMap, body: &[u8], state: &Arc<AppState>) -> Response {
    // A cross-site form cannot send application/json without a CORS preflight we never allow.
    let json_body =
        header(headers, "content-type").is_some_and(|c| c.starts_with("application/json"));
    if !json_body {
        return error(
            415,
            "unsupported media type",
            "send the body as application/json",
        );
    }
    if path == "/api/login" {
        let login: Login = match parse(body) {
            Ok(l) => l,
            Err(e) => return error(400, "invalid input", e),
        };
        if !state.auth.password_set() {
            return error(
                403,
                "no password set",
                "set one first: pmon web --set-password (or [web] password in the config file)",
            );
        }
        let Ok(_permit) = state.logins.acquire().await else {
            return error(503, "shutting down", "the service is stopping");
        };
        let st = Arc::clone(state);
        let result = tokio::task::spawn_blocking(move || st.auth.login(&login.password))
            .await
            .ok()
            .flatten();
        return match result {
            Some((id, csrf)) => {
                let mut r = ok_json(&json!({"logged_in": true, "csrf": csrf}));
                let cookie = format!(
                    "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                    SESSION_IDLE.as_secs()
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert("set-cookie", v);
                }
                no_store(r)
            }
            None => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                error(401, "wrong password", "the password is not right")
            }
        };
    }
    // Everything else changes something: a session and its CSRF token.
    let Some((session_id, session)) = state.auth.session(header(headers, "cookie")) else {
        return error(
            401,
            "login required",
            "log in on the settings page to change anything",
        );
    };
    if !Auth::csrf_ok(&session, header(headers, "x-csrf-token")) {
        return error(
            403,
            "bad CSRF token",
            "the X-CSRF-Token header is missing or does not match the session",
        );
    }
    if path == "/api/logout" {
        state.auth.logout(&session_id);
        let mut r = ok_json(&json!({"logged_in": false}));
        r.headers_mut().insert(
            "set-cookie",
            HeaderValue::from_static("pmon_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        );
        return r;
    }
    let Some(rest) = path.strip_prefix("/api/settings/circuits/") else {
        return error(404, "not found", format!("no POST endpoint {path:?}"));
    };
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    if let Err(e) = valid_id(id) {
        return error(400, "invalid circuit id", e);
    }
    match action {
        None => {
            let change: CircuitChange = match parse(body) {
                Ok(c) => c,
                Err(e) => return error(400, "invalid input", e),
            };
            let name = match change.name.as_deref().map(validate_name).transpose() {
                Ok(n) => n,
                Err(e) => return error(400, "invalid name", e),
            };
            let labels = match change.labels.as_deref().map(validate_labels).transpose() {
                Ok(l) => l,
                Err(e) => return error(400, "invalid labels", e),
            };
            match state.settings.update(id, |c| {
                if let Some(name) = name {
                    c.name = Some(name);
                }
                if let Some(labels) = labels {
                    c.labels = labels;
                }
            }) {
                Ok(saved) => {
                    state.live.touch(id);
                    ok_json(&json!({"circuit": id, "settings": saved}))
                }
                Err(e) => error(500, "storage error", e.to_string()),
            }
        }
        Some("calibrate") => {
            let calibration: Calibration = match parse(body) {
                Ok(c) => c,
                Err(e) => return error(400, "invalid input", e),
            };
            if let Err(e) = calibration.validate() {
                return error(400, "invalid calibration", e);
            }
            let topic = format!("{}/circuit/{id}/command", state.topics.root());
            let payload = json!({"calibrate": calibration}).to_string();
            if let Err(e) =
                state
                    .client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            {
                return error(503, "broker busy", format!("cannot queue the command: {e}"));
            }
            match state
                .settings
                .update(id, |c| c.calibration = Some(calibration))
            {
                Ok(saved) => ok_json(
                    &json!({"circuit": id, "settings": saved, "topic": topic, "broker_connected": state.live.connected()}),
                ),
                Err(e) => error(500, "storage error", e.to_string()),
            }
        }
        Some(other) => error(404, "not found", format!("no settings action {other:?}")),
    }
}
