//! The HTTP handlers, called directly (warp::test): bad input gets a clear 4xx, changes need a
//! login and the CSRF token, embedded assets are served and small.

use std::sync::Arc;

use pmon_proto::Topics;
use pmon_web::auth::Auth;
use pmon_web::live::Live;
use pmon_web::routes::{routes, AppState};
use pmon_web::settings::Settings;
use rumqttc::{AsyncClient, MqttOptions};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

struct Fixture {
    state: Arc<AppState>,
    dir: tempfile::TempDir,
    // Keeps the (never polled) request channel open so try_publish queues.
    _eventloop: rumqttc::EventLoop,
}

fn fixture(password: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (client, eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 10);
    let state = AppState::new(
        Live::new(),
        Settings::load(dir.path()).unwrap(),
        Auth::load(dir.path(), password).unwrap(),
        client,
        Topics::new("home").unwrap(),
        // Nothing listens on port 1: the history proxy must say so, not hang or panic.
        "127.0.0.1:1".into(),
        5,
    );
    Fixture {
        state,
        dir,
        _eventloop: eventloop,
    }
}

async fn call(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value, warp::http::HeaderMap) {
    let mut request = warp::test::request().method(method).path(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.body(body).reply(&routes(Arc::clone(state))).await;
    let status = response.status().as_u16();
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, json, response.headers().clone())
}

const JSON: (&str, &str) = ("content-type", "application/json");

async fn login(state: &Arc<AppState>) -> (String, String) {
    let (status, body, headers) = call(
        state,
        "POST",
        "/api/login",
        &[JSON],
        &format!("{{\"password\":\"{PASSWORD}\"}}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    (pair, body["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_settings_change_without_login_is_refused_and_with_login_applies() {
    let f = fixture(Some(PASSWORD));
    let s = &f.state;
    let change = r#"{"name":"Kitchen","labels":["ground floor","phase-1"]}"#;
    let (status, body, _) = call(
        s,
        "POST",
        "/api/settings/circuits/504d0010",
        &[JSON],
        change,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "login required");

    let (status, body, _) = call(
        s,
        "POST",
        "/api/login",
        &[JSON],
        r#"{"password":"wrong password"}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (cookie, csrf) = login(s).await;
    // A session without the CSRF token (what a cross-site request would look like) is refused.
    let (status, body, _) = call(
        s,
        "POST",
        "/api/settings/circuits/504d0010",
        &[JSON, ("cookie", &cookie)],
        change,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body, _) = call(
        s,
        "POST",
        "/api/settings/circuits/504d0010",
        &[JSON, ("cookie", &cookie), ("x-csrf-token", "00")],
        change,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // A form post (not JSON) is refused before anything else.
    let (status, _, _) = call(
        s,
        "POST",
        "/api/settings/circuits/504d0010",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
        ],
        "name=x",
    )
    .await;
    assert_eq!(status, 415);

    let auth = [
        JSON,
        ("cookie", cookie.as_str()),
        ("x-csrf-token", csrf.as_str()),
    ];
    let (status, body, _) = call(s, "POST", "/api/settings/circuits/504d0010", &auth, change).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["name"], "Kitchen");
    let saved = std::fs::read_to_string(f.dir.path().join("web-settings.json")).unwrap();
    assert!(
        saved.contains("Kitchen") && saved.contains("phase-1"),
        "{saved}"
    );
    // Survives a restart of the service.
    assert_eq!(
        Settings::load(f.dir.path()).unwrap().get().circuits["504d0010"]
            .name
            .as_deref(),
        Some("Kitchen")
    );

    let (status, body, _) = call(
        s,
        "POST",
        "/api/settings/circuits/504d0010/calibrate",
        &auth,
        r#"{"voltage_gain":1.002,"current_gain":0.998,"phase_correction_deg":0.5}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], "pmon/home/circuit/504d0010/command");

    // Logging out ends the session.
    let (status, _, _) = call(s, "POST", "/api/logout", &auth, "{}").await;
    assert_eq!(status, 200);
    let (status, _, _) = call(s, "POST", "/api/settings/circuits/504d0010", &auth, change).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_input_gets_a_clear_400() {
    let f = fixture(Some(PASSWORD));
    let s = &f.state;
    let (cookie, csrf) = login(s).await;
    let auth = [
        JSON,
        ("cookie", cookie.as_str()),
        ("x-csrf-token", csrf.as_str()),
    ];
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "/api/settings/circuits/504d0010",
            r#"{"name":"   "}"#,
            "invalid name",
            "empty",
        ),
        (
            "/api/settings/circuits/504d0010",
            &format!("{{\"name\":\"{}\"}}", "x".repeat(65)),
            "invalid name",
            "64",
        ),
        (
            "/api/settings/circuits/504d0010",
            r#"{"name":"a\u0007b"}"#,
            "invalid name",
            "control",
        ),
        (
            "/api/settings/circuits/504d0010",
            r#"{"labels":["<script>"]}"#,
            "invalid labels",
            "letters",
        ),
        (
            "/api/settings/circuits/504d0010",
            r#"{"nmae":"typo"}"#,
            "invalid input",
            "nmae",
        ),
        (
            "/api/settings/circuits/504d0010",
            "not json",
            "invalid input",
            "JSON",
        ),
        (
            "/api/settings/circuits/bad%20id",
            r#"{"name":"x"}"#,
            "invalid circuit id",
            "circuit id",
        ),
        (
            "/api/settings/circuits/504d0010/calibrate",
            r#"{"voltage_gain":5,"current_gain":1,"phase_correction_deg":0}"#,
            "invalid calibration",
            "voltage_gain",
        ),
        (
            "/api/settings/circuits/504d0010/calibrate",
            r#"{"voltage_gain":1,"current_gain":1,"phase_correction_deg":45}"#,
            "invalid calibration",
            "phase_correction_deg",
        ),
        (
            "/api/settings/circuits/504d0010/calibrate",
            r#"{"voltage_gain":1,"current_gain":1}"#,
            "invalid input",
            "phase_correction_deg",
        ),
        (
            "/api/settings/circuits/504d0010/calibrate",
            r#"{"voltage_gain":"1","current_gain":1,"phase_correction_deg":0}"#,
            "invalid input",
            "JSON",
        ),
    ];
    for (path, body, error, mentions) in cases {
        let (status, answer, _) = call(s, "POST", path, &auth, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"], *error, "{path} {body}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.contains(mentions),
            "{path} {body}: {detail:?} should mention {mentions:?}"
        );
    }
    // Nothing invalid reached the file.
    let saved = std::fs::read_to_string(f.dir.path().join("web-settings.json")).unwrap_or_default();
    assert!(
        !saved.contains("typo") && !saved.contains("script"),
        "{saved}"
    );

    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(20_000));
    let (status, answer, _) = call(s, "POST", "/api/settings/circuits/504d0010", &auth, &big).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer, _) = call(s, "GET", "/api/circuits/no%2Fsuch", &[], "").await;
    assert_eq!(status, 400, "{answer}");
    let (status, _, _) = call(s, "GET", "/api/circuits/00c0ffee", &[], "").await;
    assert_eq!(status, 404);
    let (status, answer, _) = call(s, "GET", "/api/history/secrets", &[], "").await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer, _) =
        call(s, "GET", "/api/history/series?circuits=504d0010", &[], "").await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"], "historian unavailable");
    let (status, answer, _) = call(s, "DELETE", "/api/circuits", &[], "").await;
    assert_eq!(status, 405, "{answer}");
    let (status, _, _) = call(s, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_a_password_nothing_can_be_changed() {
    let f = fixture(None);
    let (status, body, _) = call(
        &f.state,
        "POST",
        "/api/login",
        &[JSON],
        r#"{"password":"anything at all"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("--set-password"));
    let (status, body, _) = call(&f.state, "GET", "/api/session", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(body["password_set"], false);
    assert!(pmon_web::set_password(f.dir.path(), "short").is_err());
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_and_small() {
    let f = fixture(None);
    let page = warp::test::request()
        .path("/")
        .reply(&routes(Arc::clone(&f.state)))
        .await;
    assert_eq!(page.status(), 200);
    let html = String::from_utf8_lossy(page.body()).to_string();
    let mut total = page.body().len();
    for asset in [
        "/assets/app.js",
        "/assets/app.css",
        "/assets/vendor/uPlot.iife.min.js",
        "/assets/vendor/uPlot.min.css",
    ] {
        assert!(html.contains(asset), "the page should load {asset}");
        let r = warp::test::request()
            .path(asset)
            .reply(&routes(Arc::clone(&f.state)))
            .await;
        assert_eq!(r.status(), 200, "{asset}");
        total += r.body().len();
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert_eq!(total, pmon_web::assets::first_load_bytes());
    assert!(total < 300 * 1024, "first load is {total} bytes");
    eprintln!("first load of the overview: {total} bytes");
}
