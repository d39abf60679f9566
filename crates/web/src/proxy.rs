//! `/api/history/<endpoint>` → the historian's `/api/v1/<endpoint>`: one origin for the
//! browser, answers streamed through (a CSV export of any size passes in constant memory).
//!
//! A minimal HTTP/1.0 client: the historian (hyper) answers a 1.0 request with a body that
//! ends when the connection closes, so no chunked decoding is needed.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::http::{HeaderName, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// The historian endpoints the UI may reach.
pub const ENDPOINTS: &[&str] = &[
    "circuits",
    "series",
    "raw",
    "energy",
    "gaps",
    "export.csv",
    "health",
];
/// Response headers passed through.
const PASS: &[&str] = &[
    "content-type",
    "content-disposition",
    "x-pmon-units",
    "x-pmon-resolution",
    "cache-control",
];
const MAX_HEAD: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the historian could not be asked.
#[derive(Debug)]
pub struct ProxyError(pub String);

/// Forwards `GET /api/v1/<endpoint>?<query>` to the historian and streams its answer back.
pub async fn forward(historian: &str, endpoint: &str, query: &str) -> Result<Response, ProxyError> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(historian))
        .await
        .map_err(|_| {
            ProxyError(format!(
                "the historian at {historian} did not answer in time"
            ))
        })?
        .map_err(|e| ProxyError(format!("cannot reach the historian at {historian}: {e}")))?;
    let target = if query.is_empty() {
        format!("/api/v1/{endpoint}")
    } else {
        format!("/api/v1/{endpoint}?{query}")
    };
    let request =
        format!("GET {target} HTTP/1.0\r\nHost: {historian}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ProxyError(format!("historian: {e}")))?;
    let mut head = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 16 * 1024];
    let body_start = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| ProxyError(format!("historian: {e}")))?;
            if n == 0 {
                return Err(ProxyError("the historian closed the connection".into()));
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(end + 4);
            }
            if head.len() > MAX_HEAD {
                return Err(ProxyError(
                    "the historian's answer has no end of headers".into(),
                ));
            }
        }
    })
    .await
    .map_err(|_| ProxyError("the historian took too long to answer".into()))??;
    let text = String::from_utf8_lossy(&head[..body_start]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ProxyError("the historian's answer has no status line".into()))?;
    let first = Bytes::copy_from_slice(&head[body_start..]);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return; // the browser went away: closing the socket stops the export
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let mut response = warp::reply::stream(ReceiverStream::new(rx)).into_response();
    *response.status_mut() = status;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if PASS.contains(&name.as_str()) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value.trim()),
                ) {
                    response.headers_mut().insert(n, v);
                }
            }
        }
    }
    Ok(response)
}
