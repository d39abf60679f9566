//! MQTT ingest against the real embedded broker, in process: every record stored exactly once
//! across a restart, a crash before the acknowledgements (redelivery), replays, and malformed
//! payloads (counted, dropped, the historian stays up).

mod service_support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pmon_historian::{Historian, HistorianConfig, MqttSettings};
use service_support::*;

const SITE: &str = "test";
const CIRCUITS: [&str; 3] = ["0000000a", "0000000b", "0000000c"];
/// Records are stamped from the test's start, as an acquisition stamps them (the store
/// finalises rollups of minutes more than two minutes old).
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % 1000
});

fn config(broker: std::net::SocketAddr, dir: &std::path::Path) -> HistorianConfig {
    let mut config = HistorianConfig::new(SITE, dir);
    config.mqtt = MqttSettings {
        url: format!("mqtt://{broker}"),
        client_id: None,
        credentials: None,
    };
    config.api_bind = "127.0.0.1:0".parse().unwrap();
    config.commit_interval_ms = 100;
    config
}

/// Publishes `frames` frames of `per` records for every circuit, starting at frame `start`,
/// and records the seqs in `expected`.
async fn publish_frames(
    publisher: &mut Publisher,
    start: u64,
    frames: u64,
    per: usize,
    expected: &mut BTreeMap<String, Vec<u64>>,
) {
    for f in start..start + frames {
        for (i, circuit) in CIRCUITS.iter().enumerate() {
            let first_seq = 1_000_000 * (i as u64 + 1) + f * per as u64;
            let first_ts = *T0 + (f * per as u64) as i64 * 200;
            let recs = records(first_seq, first_ts, per);
            let list = expected.entry(circuit.to_string()).or_default();
            for r in &recs {
                if !list.contains(&r.seq) {
                    list.push(r.seq);
                }
            }
            list.sort_unstable();
            publisher.frame(SITE, circuit, recs).await;
        }
    }
}

async fn wait_started(historian: &Historian) {
    let stats = historian.stats();
    wait_for(Duration::from_secs(30), "historian subscribed", || {
        stats.subscribed.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_once_across_restart_crash_replay_and_garbage() {
    let broker = broker();
    let addr = broker.client_addr();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(pmon_historian::config::DB_FILE);
    let mut expected = BTreeMap::new();

    // 1. First run: labels, frames, garbage.
    let historian = Historian::start(config(addr, dir.path())).await.unwrap();
    wait_started(&historian).await;
    let mut publisher = Publisher::connect(addr).await;
    for (i, circuit) in CIRCUITS.iter().enumerate() {
        publisher.info(SITE, circuit, &format!("Circuit {i}")).await;
    }
    publish_frames(&mut publisher, 0, 40, 5, &mut expected).await;
    let topic_a = frame_topic(SITE, CIRCUITS[0]);
    publisher.raw(&topic_a, b"garbage".to_vec(), false).await;
    publisher.raw(&topic_a, Vec::new(), false).await;
    let mut wrong_version = pmon_proto::Frame {
        circuit: CIRCUITS[0].into(),
        records: records(1, *T0, 1),
    }
    .encode();
    wrong_version[0] = 9;
    publisher.raw(&topic_a, wrong_version, false).await;
    let other_circuit = pmon_proto::Frame {
        circuit: CIRCUITS[1].into(),
        records: records(77, *T0, 1),
    }
    .encode();
    publisher.raw(&topic_a, other_circuit, false).await;
    let mut truncated = pmon_proto::Frame {
        circuit: CIRCUITS[0].into(),
        records: records(5, *T0, 3),
    }
    .encode();
    truncated.truncate(truncated.len() - 7);
    publisher.raw(&topic_a, truncated, false).await;
    // Other topics under circuit/ are acknowledged, not stored.
    publisher
        .raw(
            &format!("pmon/{SITE}/circuit/{}/state", CIRCUITS[0]),
            b"{}".to_vec(),
            false,
        )
        .await;
    publish_frames(&mut publisher, 40, 20, 5, &mut expected).await;
    publisher.flushed().await;
    let stats = historian.stats();
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    wait_for(Duration::from_secs(20), "first batch stored", || {
        stats.inserted.load(Ordering::Relaxed) >= total
    })
    .await;
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 5);
    assert!(
        stats.connected.load(Ordering::Relaxed),
        "still up after garbage"
    );
    // Labels from the retained info messages, through the API.
    let circuits = http_get(historian.api_addr(), "/api/v1/circuits")
        .await
        .json();
    let names: Vec<&str> = circuits["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["Circuit 0", "Circuit 1", "Circuit 2"]);
    let health = http_get(historian.api_addr(), "/api/v1/health")
        .await
        .json();
    assert_eq!(health["ingest"]["malformed"], 5);
    assert_eq!(health["ingest"]["records_inserted"], total);
    assert!(health["ingest"]["commits"].as_u64().unwrap() >= 1);
    assert!(health["db"]["size_bytes"].as_u64().unwrap() > 0);
    historian.stop().await.unwrap();
    assert_exactly_once(&db, &expected);

    // 2. While it is down: new frames wait in the broker (persistent session).
    publish_frames(&mut publisher, 60, 20, 5, &mut expected).await;
    publisher.flushed().await;
    let historian = Historian::start(config(addr, dir.path())).await.unwrap();
    let stats = historian.stats();
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    let before = stored_seqs(&db)
        .values()
        .map(|v| v.len() as u64)
        .sum::<u64>();
    wait_for(
        Duration::from_secs(20),
        "backlog stored after restart",
        || before + stats.inserted.load(Ordering::Relaxed) >= total,
    )
    .await;
    // Replayed frames (an acquisition restart re-publishes) are duplicates.
    publish_frames(&mut publisher, 70, 10, 5, &mut expected).await;
    publisher.flushed().await;
    wait_for(Duration::from_secs(20), "replay seen", || {
        stats.duplicates.load(Ordering::Relaxed) >= 10 * 5 * 3
    })
    .await;
    historian.stop().await.unwrap();
    assert_exactly_once(&db, &expected);

    // 3. A crash before the acknowledgements: nothing is acked (huge interval and window),
    //    so the broker sends everything again to the next run, which finds duplicates.
    let mut slow = config(addr, dir.path());
    slow.commit_interval_ms = 600_000;
    slow.max_unacked = 1_000_000;
    let historian = Historian::start(slow).await.unwrap();
    wait_started(&historian).await;
    let stats = historian.stats();
    publish_frames(&mut publisher, 80, 30, 5, &mut expected).await;
    publisher.flushed().await;
    wait_for(Duration::from_secs(20), "frames received", || {
        stats.frames.load(Ordering::Relaxed) >= 30 * 3
    })
    .await;
    assert_eq!(
        stats.acks.load(Ordering::Relaxed),
        0,
        "nothing acknowledged yet"
    );
    historian.abort().await; // commits what it staged, but never acknowledges
    assert_exactly_once(&db, &expected);
    let historian = Historian::start(config(addr, dir.path())).await.unwrap();
    let stats = historian.stats();
    wait_for(Duration::from_secs(20), "redelivered frames seen", || {
        stats.duplicates.load(Ordering::Relaxed) >= 30 * 5 * 3
    })
    .await;
    assert_eq!(stats.inserted.load(Ordering::Relaxed), 0);
    historian.stop().await.unwrap();
    assert_exactly_once(&db, &expected);
    let report = pmon_historian::check(dir.path()).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(
        report.records,
        expected.values().map(|v| v.len() as u64).sum::<u64>()
    );
    drop(publisher);
    let _ = broker.stop().await;
}

/// A backlog larger than rumqttd's small per-filter log (256 KiB for filters without `#`)
/// survives a restart: the frame subscription gets the large log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_narrow_log_survives_a_restart() {
    let broker = broker();
    let addr = broker.client_addr();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(pmon_historian::config::DB_FILE);
    let historian = Historian::start(config(addr, dir.path())).await.unwrap();
    wait_started(&historian).await;
    historian.stop().await.unwrap();
    // ~1.5 MB of frames while the historian is away.
    let mut publisher = Publisher::connect(addr).await;
    let mut expected = BTreeMap::new();
    publish_frames(&mut publisher, 0, 1000, 5, &mut expected).await;
    publisher.flushed().await;
    let historian = Historian::start(config(addr, dir.path())).await.unwrap();
    let stats = historian.stats();
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    wait_for(Duration::from_secs(30), "backlog stored", || {
        stats.inserted.load(Ordering::Relaxed) >= total
    })
    .await;
    historian.stop().await.unwrap();
    assert_exactly_once(&db, &expected);
    drop(publisher);
    let _ = broker.stop().await;
}
