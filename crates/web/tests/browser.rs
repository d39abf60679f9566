//! End to end in real headless Chromium, driven through chromedriver (WebDriver over plain
//! HTTP), against `pmon up` on the simulator (broker, acquisition, historian, web UI). The overview shows every circuit and its values change; the circuit page draws
//! live charts; history zooms; the table pages; the CSV link downloads what the historian
//! holds; a settings change without login is refused and with login applies. Screenshots go
//! to `target/web-e2e/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`);
//! without them the test says so loudly and passes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SITE: &str = "e2e";

/// `pmon up` on the simulator, killed when dropped.
struct Services {
    web: SocketAddr,
    historian: SocketAddr,
    data: tempfile::TempDir,
    child: Child,
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `target/debug/pmon up` (built by `cargo build --workspace`; `PMON_BIN` names
/// another) with 3 simulated circuits; `None` when there is no binary.
fn start_services() -> Option<Services> {
    let pmon = std::env::var("PMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join("debug").join("pmon"));
    if !pmon.exists() {
        return None;
    }
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("pmon.toml");
    std::fs::write(&config, "[web]\npassword = \"correct horse battery\"\n").unwrap();
    let (mqtt, api, http_port) = (free_port(), free_port(), free_port());
    let log = std::fs::File::create(data.path().join("pmon.log")).unwrap();
    let child = Command::new(&pmon)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--site", SITE, "--sim", "3"])
        .args([
            "--mqtt-port",
            &mqtt.to_string(),
            "--api-port",
            &api.to_string(),
            "--http-port",
            &http_port.to_string(),
            "up",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], http_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(web).is_err() {
        assert!(
            Instant::now() < deadline,
            "pmon up did not serve the web UI: {}",
            std::fs::read_to_string(data.path().join("pmon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Services {
        web,
        historian: SocketAddr::from(([127, 0, 0, 1], api)),
        data,
        child,
    })
}

/// One HTTP/1.1 request (`Connection: close`); returns status and body (de-chunked).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until the body is complete (chromedriver keeps the connection open).
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| out.len() >= end + 4 + n)
                || (head.contains("chunked") && out.ends_with(b"0\r\n\r\n"))
            {
                break;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {addr}{path}: no end of headers in {:?}",
                String::from_utf8_lossy(&out)
            )
        })
        + 4;
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut rest = out[end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(line_end) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[at..at + line_end]).to_string();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            at += line_end + 2;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        rest = body;
    }
    (status, rest)
}

struct Driver {
    addr: SocketAddr,
    session: String,
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() && !std::thread::panicking() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(profile: &std::path::Path) -> Option<Driver> {
        let program = std::env::var("PMON_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // The guard kills chromedriver even if a step below panics.
        let mut driver = Driver {
            addr,
            session: String::new(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", format!("--user-data-dir={}", profile.display()), "--window-size=1280,900"]}}}});
        let (status, body) = http(addr, "POST", "/session", Some(&caps));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "chromedriver: {answer}");
        driver.session = answer["value"]["sessionId"].as_str().unwrap().to_string();
        Some(driver)
    }

    fn call(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        let (status, body) = http(
            self.addr,
            method,
            &format!("/session/{}/{what}", self.session),
            body,
        );
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "webdriver {what}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "url", Some(&json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    fn js_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            "execute/async",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Waits until `script` returns something truthy; returns it.
    fn until(&self, what: &str, script: &str) -> Value {
        // Generous: two shared cores, often busy compiling.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, name: &str) {
        let b64 = self.call("GET", "screenshot", None);
        let bytes = base64(b64.as_str().unwrap());
        let dir = target_dir().join("web-e2e");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

/// A real mouse drag (WebDriver pointer actions) across the history plot, from fraction `a` to
/// `b` of its width.
fn drag(driver: &Driver, a: f64, b: f64) {
    let rect = driver.js("const r = document.querySelector('#history-chart .u-over').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]");
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (x0, x1, y) = (
        (r[0] + r[2] * a) as i64,
        (r[0] + r[2] * b) as i64,
        (r[1] + r[3] / 2.0) as i64,
    );
    driver.call(
        "POST",
        "actions",
        Some(&json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "duration": 0, "x": x0, "y": y, "origin": "viewport"},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "duration": 200, "x": x1, "y": y, "origin": "viewport"},
            {"type": "pointerUp", "button": 0}]}]})),
    );
}

fn target_dir() -> PathBuf {
    // target/debug/deps/browser-… → target
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_ui_in_a_real_browser() {
    let which = Command::new("sh")
        .args(["-c", "command -v chromium || command -v chromium-browser"])
        .output();
    if !which.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!(
            "\n!!!!! SKIPPED: no chromium found; apt-get install chromium chromium-driver !!!!!\n"
        );
        return;
    }
    let Some(services) = start_services() else {
        eprintln!("\n!!!!! SKIPPED: no pmon binary at target/debug/pmon (cargo build --workspace, or PMON_BIN) !!!!!\n");
        return;
    };
    let base = format!("http://{}", services.web);
    let profile = tempfile::tempdir().unwrap();
    let Some(driver) = Driver::start(profile.path()) else {
        eprintln!("\n!!!!! SKIPPED: chromedriver cannot be started (PMON_CHROMEDRIVER) !!!!!\n");
        return;
    };

    // Overview: every circuit, values change.
    driver.go(&format!("{base}/#/"));
    driver.until(
        "three tiles with values",
        "return document.querySelectorAll('[data-circuit] .badge.online').length === 3",
    );
    let names = driver.js("return [...document.querySelectorAll('[data-circuit] .name')].map(e => e.textContent).sort()");
    assert_eq!(
        names,
        json!(["Fridge 1", "Heat pump 1", "Solar inverter 1"]),
        "{names}"
    );
    let before = driver.js("return [...document.querySelectorAll('[data-circuit] .p')].map(e => e.textContent).join('|') + document.querySelector('[data-circuit] .sub').textContent");
    driver.screenshot("overview");
    let after = driver.until(
        "the values to change",
        &format!("const now = [...document.querySelectorAll('[data-circuit] .p')].map(e => e.textContent).join('|') + document.querySelector('[data-circuit] .sub').textContent; return now !== {before} && now"),
    );
    eprintln!("overview values: {before} -> {after}");

    // Circuit page: live charts with points.
    driver.go(&format!("{base}/#/circuit/504d0010"));
    driver.until("six live charts with data", "const c = document.querySelectorAll('.uplot'); return c.length === 6 && document.querySelector('[data-q=voltage]') && document.querySelector('[data-q=voltage]').textContent");
    driver.until("today's energy", "const e = document.getElementById('energy'); return e && /kWh/.test(e.textContent) && e.textContent");
    std::thread::sleep(Duration::from_secs(2));
    driver.screenshot("circuit");

    // Enough history for two table pages (5 records a second).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = http(services.web, "GET", "/api/history/circuits", None);
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let records = v["circuits"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == "504d0010")
            .and_then(|c| c["records"].as_u64())
            .unwrap_or(0);
        if records >= 250 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the historian has only {records} records"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // History: a chart of the last hour; two drags zoom in to raw points; reset restores.
    driver.go(&format!("{base}/#/history/504d0010"));
    driver.until("the history chart", "const c = document.getElementById('history-chart'); return c && c.dataset.points !== undefined");
    let span = driver.js("const c = document.getElementById('history-chart'); return Number(c.dataset.to) - Number(c.dataset.from)").as_f64().unwrap();
    driver.screenshot("history");
    let mut expected = span;
    for _ in 0..2 {
        drag(&driver, 0.8, 0.995);
        expected *= 0.2;
        driver.until(
            "the zoomed range",
            &format!("const c = document.getElementById('history-chart'); const s = Number(c.dataset.to) - Number(c.dataset.from); return s < {} && s", expected * 1.2),
        );
    }
    let points = driver.until(
        "points in the zoomed range",
        "const c = document.getElementById('history-chart'); return Number(c.dataset.points)",
    );
    let resolution = driver.js("return document.getElementById('history-info').textContent");
    eprintln!("history: {span} ms zoomed to ~{expected} ms: {points} points ({resolution})");
    driver.screenshot("history-zoomed");
    driver.js("document.getElementById('reset').click(); return true");
    driver.until("the reset range", &format!("const c = document.getElementById('history-chart'); return Number(c.dataset.to) - Number(c.dataset.from) >= {span}"));

    // Table: raw records, 100 a page; the next page continues the sequence numbers.
    driver.go(&format!("{base}/#/table/504d0010"));
    driver.until(
        "the first page",
        "return document.querySelectorAll('#data-table tbody tr').length === 100",
    );
    let seq_col = "const i = [...document.querySelectorAll('#data-table th')].findIndex(t => t.textContent.startsWith('seq')); return [...document.querySelectorAll('#data-table tbody tr')].map(r => Number(r.children[i].textContent))";
    let page1 = driver.js(seq_col);
    driver.js("document.getElementById('next').click(); return true");
    driver.until(
        "page 2",
        "return document.getElementById('page').textContent === 'page 2'",
    );
    driver.until(
        "rows of page 2",
        "return document.querySelectorAll('#data-table tbody tr').length > 0",
    );
    let page2 = driver.js(seq_col);
    let last1 = page1
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .max()
        .unwrap();
    let first2 = page2
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .min()
        .unwrap();
    assert_eq!(first2, last1 + 1, "page 2 continues page 1");
    driver.screenshot("table");

    // CSV: the link's download holds what the historian holds for that range.
    let href = driver.js("return document.getElementById('csv').getAttribute('href')");
    let href = href.as_str().unwrap().to_string();
    assert!(href.starts_with("/api/history/export.csv?"), "{href}");
    let (status, via_web) = http(services.web, "GET", &href, None);
    assert_eq!(status, 200);
    let direct = href.replace("/api/history/", "/api/v1/");
    let (status, from_historian) = http(services.historian, "GET", &direct, None);
    assert_eq!(status, 200);
    let text = String::from_utf8(via_web.clone()).unwrap();
    assert!(text.lines().count() > 100, "{text}");
    assert!(text.starts_with("# pmon export"), "{text}");
    // The historian may have committed more rows between the two requests: compare the common prefix of rows.
    let rows_web: Vec<&str> = text.lines().collect();
    let direct_text = String::from_utf8(from_historian).unwrap();
    let rows_direct: Vec<&str> = direct_text.lines().collect();
    let common = rows_web.len().min(rows_direct.len());
    assert_eq!(rows_web[..common - 1], rows_direct[..common - 1]);

    // Settings: refused without login (the browser's own request), applied with it.
    driver.go(&format!("{base}/#/settings"));
    driver.until(
        "the login form",
        "return document.getElementById('password')",
    );
    let refused = driver.js_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/settings/circuits/504d0010', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({name: 'Hacked'})})
           .then(r => done(r.status));",
    );
    assert_eq!(refused, json!(401));
    driver.js("document.getElementById('password').value = 'correct horse battery'; document.getElementById('login').click(); return true");
    driver.until("logged in", "return document.getElementById('logout')");
    driver.js("const i = document.querySelector('[data-name=\"504d0010\"]'); i.value = 'Heat pump (cellar)'; document.querySelector('[data-save=\"504d0010\"]').click(); return true");
    driver.until("the new name", "const t = [...document.querySelectorAll('.card .muted')].some(e => e.textContent === 'saved'); return t");
    driver.screenshot("settings");
    driver.go(&format!("{base}/#/"));
    driver.until("the new name on the overview", "return [...document.querySelectorAll('[data-circuit] .name')].some(e => e.textContent === 'Heat pump (cellar)')");
    let saved = std::fs::read_to_string(services.data.path().join("web-settings.json")).unwrap();
    assert!(
        saved.contains("Heat pump (cellar)") && !saved.contains("Hacked"),
        "{saved}"
    );
    driver.screenshot("overview-renamed");

    drop(driver);
    drop(services);
    eprintln!("screenshots in {}", target_dir().join("web-e2e").display());
}
