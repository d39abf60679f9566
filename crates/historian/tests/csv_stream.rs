//! A CSV export of a million rows over real HTTP streams in flat memory: the process's RSS
//! while the client reads ~100 MB of CSV grows by far less than the export's size.

mod service_support;

use std::time::{Duration, Instant};

use pmon_historian::api::{serve, ApiState};
use pmon_historian::stats::{Labels, Stats};
use pmon_historian::store::{Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use service_support::*;

const CIRCUITS: usize = 4;
const PER_CIRCUIT: u64 = 250_000;
const T0: i64 = 1_764_000_000_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("historian.sqlite");
    let started = Instant::now();
    {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(
                &db,
                StoreOptions {
                    raw_retention_days: None,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let batch = 5_000u64;
            for start in (0..PER_CIRCUIT).step_by(batch as usize) {
                for c in 0..CIRCUITS {
                    let recs = records(
                        (c as u64 + 1) * 100_000_000 + start,
                        T0 + start as i64 * 200 + c as i64 * 7,
                        batch as usize,
                    );
                    store.ingest(&format!("c{c:07}"), &recs).unwrap();
                }
                store.commit().unwrap();
            }
        })
        .await
        .unwrap();
    }
    eprintln!(
        "generated {} records in {:?}",
        CIRCUITS as u64 * PER_CIRCUIT,
        started.elapsed()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(&db, "big", Stats::new(0), Labels::default());
    let server = tokio::spawn(serve(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(1),
    ));

    let baseline = rss_bytes();
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/export.csv?resolution=raw&from=2025-01-01T00:00:00Z&to=2027-01-01T00:00:00Z HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut peak) = (0u64, baseline);
    let mut body = Dechunk::default();
    let mut next_sample = 0u64;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
        body.feed(&buf[..n]);
        if bytes >= next_sample {
            peak = peak.max(rss_bytes());
            next_sample += 1 << 20;
        }
    }
    assert!(body.done, "the body ended with the last chunk");
    let newlines = body.newlines;
    let took = started.elapsed();
    server.abort();
    let rows = CIRCUITS as u64 * PER_CIRCUIT;
    assert_eq!(newlines, rows + 1, "the header row and one row per record");
    assert!(body.head.starts_with("HTTP/1.1 200"), "{}", body.head);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "exported {rows} rows, {:.1} MB in {took:?} ({:.0} rows/s); RSS {:.1} MiB before, peak growth {:.1} MiB",
        bytes as f64 / 1e6,
        rows as f64 / took.as_secs_f64(),
        baseline as f64 / (1 << 20) as f64,
        growth as f64 / (1 << 20) as f64
    );
    assert!(bytes > 80_000_000, "{bytes} bytes");
    assert!(
        growth < 40 << 20,
        "RSS grew by {} MiB while streaming {} MB",
        growth >> 20,
        bytes / 1_000_000
    );
}

/// Counts the newlines of a chunked HTTP/1.1 body as it arrives, keeping nothing.
#[derive(Default)]
struct Dechunk {
    head: String,
    in_body: bool,
    line: Vec<u8>,
    remaining: usize,
    trailer: usize,
    newlines: u64,
    done: bool,
}

impl Dechunk {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if !self.in_body {
                let b = data[0];
                data = &data[1..];
                self.head.push(b as char);
                if self.head.ends_with("\r\n\r\n") {
                    self.in_body = true;
                }
            } else if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                self.newlines += data[..take].iter().filter(|&&b| b == b'\n').count() as u64;
                self.remaining -= take;
                data = &data[take..];
                if self.remaining == 0 {
                    self.trailer = 2;
                }
            } else if self.trailer > 0 {
                self.trailer -= 1;
                data = &data[1..];
            } else {
                let b = data[0];
                data = &data[1..];
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&self.line).trim().to_string();
                    self.line.clear();
                    let size = usize::from_str_radix(text.split(';').next().unwrap_or(""), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size {text:?}"));
                    if size == 0 {
                        self.done = true;
                    }
                    self.remaining = size;
                } else {
                    self.line.push(b);
                }
            }
        }
    }
}
