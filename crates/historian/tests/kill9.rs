//! `kill -9` of the historian process in the middle of ingest, 20 times in a row, while frames
//! keep coming: after every kill the database passes its check and holds no duplicate; at the
//! end every record is stored exactly once.

mod service_support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use service_support::*;

const SITE: &str = "kill";
const CIRCUITS: usize = 100;
const KILLS: usize = 20;

fn spawn_historian(broker: std::net::SocketAddr, dir: &std::path::Path, api_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pmon-historian"))
        .args(["--site", SITE, "--mqtt-url"])
        .arg(format!("mqtt://{broker}"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--api-port", &api_port.to_string()])
        // Commit often, so that kills land in every phase: staging, committing, acking.
        .args(["--commit-interval-ms", "50"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pmon-historian")
}

async fn healthy(api: std::net::SocketAddr) -> Option<serde_json::Value> {
    let connect = tokio::net::TcpStream::connect(api).await.ok()?;
    drop(connect);
    let response = http_get(api, "/api/v1/health").await;
    (response.status == 200).then(|| response.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_loses_and_duplicates_nothing() {
    let broker = broker();
    let addr = broker.client_addr();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(pmon_historian::config::DB_FILE);
    let port = free_port();
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // The first run subscribes (creating the persistent session) before anything is published.
    let mut child = spawn_historian(addr, dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(health) = healthy(api).await {
            if health["ingest"]["subscribed"] == true {
                break;
            }
        }
        assert!(Instant::now() < deadline, "historian did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A publisher that never stops during the kills, like an acquisition with 100 slaves (pmon's design maximum):
    // every 200 ms a frame with the next record of each circuit, stamped with the wall clock.
    let expected: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let frames_sent = Arc::new(AtomicU64::new(0));
    let mut publisher = Publisher::connect(addr).await;
    let feed = {
        let expected = Arc::clone(&expected);
        let running = Arc::clone(&running);
        let frames_sent = Arc::clone(&frames_sent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut block = 0u64;
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                for c in 0..CIRCUITS {
                    let circuit = format!("{c:08x}");
                    let recs = records(10_000_000 * (c as u64 + 1) + block, now, 1);
                    expected
                        .lock()
                        .unwrap()
                        .entry(circuit.clone())
                        .or_default()
                        .push(recs[0].seq);
                    publisher.frame(SITE, &circuit, recs).await;
                }
                frames_sent.fetch_add(CIRCUITS as u64, Ordering::Relaxed);
                block += 1;
            }
            publisher.flushed().await;
            publisher
        })
    };

    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut progress = Vec::new();
    for kill in 0..KILLS {
        // Let it ingest for 150–650 ms, then SIGKILL.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let alive_ms = 150 + rng % 500;
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let report = pmon_historian::check(dir.path()).expect("check runs");
        assert!(report.ok, "after kill {kill}: {:?}", report.problems);
        let stored = stored_seqs(&db);
        for (circuit, seqs) in &stored {
            let mut unique = seqs.clone();
            unique.dedup();
            assert_eq!(
                unique.len(),
                seqs.len(),
                "after kill {kill}: duplicates in {circuit}"
            );
        }
        progress.push(stored.values().map(Vec::len).sum::<usize>());
        child = spawn_historian(addr, dir.path(), port);
    }

    // The kills landed in the middle of ingest: most runs stored something.
    let advanced = progress.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        advanced >= KILLS / 2,
        "stored records after each kill: {progress:?}"
    );

    // Stop the feed, let the last run catch up, stop it gracefully.
    running.store(false, Ordering::Relaxed);
    let publisher = feed.await.unwrap();
    let total: usize = expected.lock().unwrap().values().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: usize = stored_seqs(&db).values().map(Vec::len).sum();
        if stored >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stored} of {total} records stored after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = healthy(api).await.expect("last run serves the API");
    // SIGTERM: a clean stop.
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful stop: {exit:?}");

    let expected = expected.lock().unwrap().clone();
    assert_exactly_once(&db, &expected);
    let report = pmon_historian::check(dir.path()).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.records as usize, total);
    eprintln!("stored after each kill: {progress:?}");
    eprintln!(
        "{} frames, {total} records, {KILLS} kills; last run: {} duplicates (redelivered), {} commits",
        frames_sent.load(Ordering::Relaxed),
        health["ingest"]["duplicates"],
        health["ingest"]["commits"]
    );
    drop(publisher);
    let _ = broker.stop().await;
}
