//! `pmon export`: history from a database file and from the historian's API (byte-identical,
//! equal to the stored records, across the Europe/Berlin DST change and a gap), exit codes,
//! and `pmon export live` surviving `kill -9` with whole rows only.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pmon_historian::api::{serve, ApiState};
use pmon_historian::stats::{Labels, Stats};
use pmon_historian::store::{FrameRecord, Quantity, Store, StoreOptions};
use pmon_proto::frame::Frame;
use pmon_proto::topic::{CircuitTopic, Topics};

/// 2025-10-25T23:50:00Z = 01:50 CEST; Berlin falls back at 2025-10-26T01:00Z (03:00 CEST →
/// 02:00 CET).
const T0: i64 = 1_761_436_200_000;
const DST_CHANGE: i64 = 1_761_440_400_000;
const CIRCUITS: [&str; 2] = ["0000aaaa", "0000bbbb"];
/// Circuit a has no records from T0 + 30 min to T0 + 50 min (seq jumps: a gap).
const GAP: (i64, i64) = (T0 + 1_800_000, T0 + 3_000_000);
const HEADER: &str = "time,circuit,seq,voltage,current,frequency,real_power,apparent_power,reactive_power,power_factor,current_crest_factor,phase_angle,energy_import_kwh,energy_export_kwh";

fn record(seq: u64, ts_ms: i64, k: u64) -> FrameRecord {
    let x = seq.wrapping_mul(2_654_435_761) ^ k;
    FrameRecord {
        seq,
        ts_ms,
        duration_us: 200_000,
        voltage_mv: 229_000 + (x % 2_001) as u32,
        current_ua: 1_000_000 + (x % 9_000_001) as u32,
        frequency_mhz: 49_950 + (x % 100) as u32,
        real_power_mw: (x % 4_000_000) as i64 - 2_000_000,
        reactive_power_mvar: (x % 50_001) as i64 - 25_000,
        apparent_power_mva: 300_000 + x % 2_000_000,
        power_factor: ((x % 20_001) as i32 - 10_000) as i16,
        crest_factor: 1_414 + (x % 50) as u16,
        phase_angle: ((x % 36_001) as i32 - 18_000) as i16,
        energy_import_mwh: seq * 11,
        energy_export_mwh: seq / 7,
        flags: 0,
    }
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Every stored record, by circuit.
    records: BTreeMap<String, Vec<FrameRecord>>,
    api: String,
}

/// A historian database written with the Store API (two circuits, 90 minutes across the DST
/// change, a gap), and the historian's API serving it on a free port.
fn db() -> &'static Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("historian.sqlite");
        let mut store = Store::open(
            &path,
            StoreOptions {
                raw_retention_days: None,
                minute_retention_days: None,
                ..StoreOptions::default()
            },
        )
        .expect("open store");
        let mut records = BTreeMap::new();
        for (k, circuit) in CIRCUITS.iter().enumerate() {
            let mut list = Vec::new();
            let mut seq = 1_000 + k as u64 * 1_000_000;
            let mut ts = T0 + 37 * k as i64;
            while ts < T0 + 90 * 60_000 {
                if !(k == 0 && ts >= GAP.0 && ts < GAP.1) {
                    list.push(record(seq, ts, k as u64));
                }
                seq += 1;
                ts += 200;
            }
            for batch in list.chunks(5_000) {
                store.ingest(circuit, batch).expect("ingest");
                store.commit().expect("commit");
            }
            records.insert(circuit.to_string(), list);
        }
        // Rollups for the 1m export.
        while store.maintain(T0 + 91 * 60_000, 10_000).expect("maintain") > 0 {}
        drop(store);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = ApiState::new(&path, "home", Stats::new(0), Labels::default());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve(
                    listener,
                    state,
                    std::future::pending::<()>(),
                    Duration::from_secs(1),
                )
                .await;
            });
        });
        Db {
            _dir: dir,
            path,
            records,
            api: format!("http://{addr}/"),
        }
    })
}

fn pmon(args: &[&str]) -> Output {
    Command::new(support::pmon())
        .args(args)
        .env_remove("PMON_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run pmon")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "pmon failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 CSV")
}

fn history(source: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["export", "history"];
    args.extend_from_slice(source);
    args.extend_from_slice(extra);
    ok(pmon(&args))
}

fn both(extra: &[&str]) -> String {
    let d = db();
    let via_db = history(&["--db", d.path.to_str().unwrap()], extra);
    let via_url = history(&["--url", &d.api], extra);
    assert_eq!(
        via_db.len(),
        via_url.len(),
        "--db and --url differ in length"
    );
    assert!(via_db == via_url, "--db and --url differ");
    via_db
}

/// The exact decimal of a stored value, by the store's own formatter.
fn decimal(q: Quantity, r: &FrameRecord) -> String {
    let mut s = String::new();
    q.write_decimal(r, &mut s);
    s
}

/// Checks the rows of a raw export against the stored records in `[from, to)`.
fn check_rows(csv: &str, from: i64, to: i64, berlin: bool) -> usize {
    let d = db();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let mut expected: Vec<(i64, &str, &FrameRecord)> = Vec::new();
    for (c, list) in &d.records {
        for r in list.iter().filter(|r| r.ts_ms >= from && r.ts_ms < to) {
            expected.push((r.ts_ms, c.as_str(), r));
        }
    }
    expected.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), expected.len(), "row count");
    for (row, (ts, circuit, r)) in rows.iter().zip(&expected) {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 14, "{row}");
        let t = pmon_historian::timefmt::parse_time(fields[0]).expect("RFC 3339");
        assert_eq!(t, *ts, "{row}");
        let offset = if !berlin {
            "Z"
        } else if *ts < DST_CHANGE {
            "+02:00"
        } else {
            "+01:00"
        };
        assert!(fields[0].ends_with(offset), "{row}: offset {offset}");
        assert_eq!(fields[1], *circuit);
        assert_eq!(fields[2], r.seq.to_string());
        for (q, field) in Quantity::ALL.iter().zip(&fields[3..]) {
            assert_eq!(
                field.parse::<f64>().unwrap(),
                decimal(*q, r).parse::<f64>().unwrap(),
                "{row}: {q}"
            );
            assert_eq!(*field, decimal(*q, r), "{row}: {q}");
        }
    }
    rows.len()
}

#[test]
fn history_matches_the_store_across_dst_and_a_gap_via_db_and_url() {
    let from = "2025-10-26T01:55:00+02:00"; // T0 + 5 min
    let to = "2025-10-26T02:20:00+01:00"; // T0 + 90 min - 0
    let csv = both(&["--from", from, "--to", to, "--tz", "Europe/Berlin"]);
    let n = check_rows(&csv, T0 + 300_000, T0 + 90 * 60_000, true);
    assert!(n > 40_000, "{n} rows");
    // Local times repeat after the change; the offset keeps them apart.
    assert!(csv.contains("2025-10-26T02:59:59.800+02:00,0000aaaa"));
    assert!(csv.contains("2025-10-26T02:00:00.000+01:00,0000aaaa"));
    // The gap: no row of circuit a inside it, and the seq jumps across it.
    let a: Vec<(i64, u64)> = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",0000aaaa,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let t = pmon_historian::timefmt::parse_time(f[0]).unwrap();
            (t, f[2].parse().unwrap())
        })
        .collect();
    assert!(a.iter().all(|(t, _)| *t < GAP.0 || *t >= GAP.1));
    assert!(a.windows(2).any(|w| w[1].1 - w[0].1 == 6_001));

    // UTC, milliseconds, one circuit, a few quantities in a chosen order.
    let csv = both(&[
        "--from",
        &(T0 + 3_599_000).to_string(),
        "--to",
        "2025-10-26T01:00:01Z",
        "--circuit",
        "0000bbbb",
        "--quantity",
        "real_power",
        "--quantity",
        "voltage",
    ]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,circuit,seq,real_power,voltage"));
    let rows: Vec<&str> = lines.collect();
    let want: Vec<&FrameRecord> = db().records["0000bbbb"]
        .iter()
        .filter(|r| r.ts_ms >= T0 + 3_599_000 && r.ts_ms < DST_CHANGE + 1_000)
        .collect();
    assert_eq!(rows.len(), want.len());
    for (row, r) in rows.iter().zip(want) {
        assert_eq!(
            *row,
            format!(
                "{},0000bbbb,{},{},{}",
                pmon_historian::timefmt::rfc3339_utc(r.ts_ms),
                r.seq,
                decimal(Quantity::RealPower, r),
                decimal(Quantity::Voltage, r)
            )
        );
    }

    // Rollups and the units comment line: identical too.
    let csv = both(&[
        "--from",
        "2025-10-25T23:00:00Z",
        "--to",
        "2025-10-26T02:00:00Z",
        "--resolution",
        "1m",
        "--tz",
        "Europe/Berlin",
        "--units-comment",
    ]);
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("# pmon export: site home, resolution 1m"));
    assert!(lines
        .next()
        .unwrap()
        .starts_with("time,circuit,count,coverage,voltage_min"));
    // 90 minutes of b, 70 of a.
    assert_eq!(lines.count(), 90 + 70);

    // An empty range: the header only.
    let csv = both(&[
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-02T00:00:00Z",
    ]);
    assert_eq!(csv, format!("{HEADER}\n"));
}

#[test]
fn output_file_is_written_whole_and_matches_stdout() {
    let d = db();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.csv");
    let range = [
        "--from",
        "2025-10-26T00:00:00Z",
        "--to",
        "2025-10-26T00:10:00Z",
    ];
    for source in [
        ["--db", d.path.to_str().unwrap()],
        ["--url", d.api.as_str()],
    ] {
        let mut args = vec!["export", "history", "-o", file.to_str().unwrap()];
        args.extend_from_slice(&source);
        args.extend_from_slice(&range);
        assert_eq!(ok(pmon(&args)), "");
        let stdout = history(&source, &range);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), stdout);
        check_rows(&stdout, T0 + 600_000, T0 + 1_200_000, false);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("out.csv")],
        "no temp file left"
    );
}

fn fails(args: &[&str], code: i32, message: &str) {
    let mut all = vec!["export", "history"];
    all.extend_from_slice(args);
    let out = pmon(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(message),
        "{args:?}: {stderr:?} lacks {message:?}"
    );
}

#[test]
fn bad_ranges_and_names_exit_2_unreachable_sources_3_unwritable_output_4() {
    let d = db();
    let db_args = ["--db", d.path.to_str().unwrap()];
    let url_args = ["--url", d.api.as_str()];
    let range = [
        "--from",
        "2025-10-26T00:00:00Z",
        "--to",
        "2025-10-26T00:00:01Z",
    ];
    for source in [db_args, url_args] {
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = source.to_vec();
            v.extend_from_slice(extra);
            v.into_iter().map(str::to_string).collect::<Vec<String>>()
        };
        let run = |extra: &[&str], code, msg| {
            let v = with(extra);
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            fails(&v, code, msg);
        };
        run(
            &[
                "--from",
                "2025-10-27T00:00:00Z",
                "--to",
                "2025-10-26T00:00:00Z",
            ],
            2,
            "reversed range",
        );
        run(&["--from", "2025-10-26T00:00:00", "--to", "1"], 2, "--from");
        run(
            &["--from", "2025-13-26T00:00:00Z", "--to", "1"],
            2,
            "--from",
        );
        let mut extra = range.to_vec();
        extra.extend(["--circuit", "0000dead"]);
        run(&extra, 2, "unknown circuit: no circuit \"0000dead\"");
        let mut extra = range.to_vec();
        extra.extend(["--quantity", "wattage"]);
        run(&extra, 2, "unknown quantity \"wattage\"");
        let mut extra = range.to_vec();
        extra.extend(["--tz", "Mars/Olympus"]);
        run(&extra, 2, "unknown time zone");
        let mut extra = range.to_vec();
        extra.extend(["--resolution", "5m"]);
        run(&extra, 2, "unknown resolution");
    }
    fails(&["--to", "1"], 2, "--from");
    let mut args = vec!["--db", "/nonexistent/historian.sqlite"];
    args.extend_from_slice(&range);
    fails(&args, 3, "cannot read the database");
    let dead = format!("http://127.0.0.1:{}/", support::free_port());
    let mut args = vec!["--url", dead.as_str()];
    args.extend_from_slice(&range);
    fails(&args, 3, "unreachable");
    let mut args = db_args.to_vec();
    args.extend_from_slice(&range);
    args.extend(["-o", "/nonexistent-dir/out.csv"]);
    fails(&args, 4, "cannot create");
}

// --- live ---------------------------------------------------------------------------------

fn check_live_files(dir: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for circuit in std::fs::read_dir(dir).unwrap() {
        let circuit = circuit.unwrap();
        let id = circuit.file_name().to_string_lossy().to_string();
        let mut days: Vec<PathBuf> = std::fs::read_dir(circuit.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        days.sort();
        for day in days {
            let text = std::fs::read_to_string(&day).unwrap();
            if text.is_empty() {
                continue;
            }
            assert!(text.ends_with('\n'), "{}: torn last row", day.display());
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(HEADER), "{}", day.display());
            for line in lines {
                let fields: Vec<&str> = line.split(',').collect();
                assert_eq!(fields.len(), 14, "{}: {line:?}", day.display());
                assert_eq!(fields[1], id);
                pmon_historian::timefmt::parse_time(fields[0]).expect("RFC 3339");
                assert!(fields[0].ends_with("+02:00") || fields[0].ends_with("+01:00"));
                // The local date is the date part of a time with the zone's offset.
                let local = &fields[0][..10];
                assert_eq!(
                    day.file_name().unwrap().to_string_lossy(),
                    format!("{local}.csv"),
                    "row in the wrong day file"
                );
                seqs.entry(id.clone())
                    .or_default()
                    .push(fields[2].parse().unwrap());
            }
        }
    }
    for (id, s) in &seqs {
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "{id}: rows repeated or out of order"
        );
    }
    seqs
}

fn rows(dir: &Path) -> usize {
    check_live_files(dir).values().map(Vec::len).sum()
}

#[test]
fn live_export_killed_with_sigkill_leaves_only_whole_rows_and_continues() {
    let broker = support_broker();
    let url = format!("mqtt://{}", broker.local_addr());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("live");
    // A publisher: 3 circuits, frames of 5 records, timestamps from 23:59:30 Berlin time so
    // the files rotate at local midnight.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let addr = broker.local_addr();
        std::thread::spawn(move || publish(addr, stop))
    };
    let start = |log: &str| {
        support::Process::spawn(
            log,
            &support::pmon(),
            &[
                "export",
                "live",
                "--dir",
                out.to_str().unwrap(),
                "--tz",
                "Europe/Berlin",
                "--url",
                &url,
                "--site",
                "home",
            ],
            work.path(),
        )
    };
    let mut before = 0;
    for round in 0..4 {
        let mut p = start(&format!("live{round}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while rows_quiet(&out) <= before + 200 {
            assert!(Instant::now() < deadline, "no rows: {}", p.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100 + 97 * round));
        p.child.kill().expect("kill -9");
        let _ = p.child.wait();
        let now = rows(&out);
        assert!(now > before, "rows continue after a restart");
        before = now;
        if round == 1 {
            // A power cut: a torn tail, repaired on start-up.
            let circuit = std::fs::read_dir(&out)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let day = std::fs::read_dir(&circuit)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&day).unwrap();
            f.write_all(b"2025-10-26T00:00:00.000+02:00,0000").unwrap();
        }
    }
    // A clean stop with SIGTERM.
    let mut p = start("live-term");
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows_quiet(&out) <= before + 200 {
        assert!(Instant::now() < deadline, "no rows: {}", p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = p.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", p.log_text());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    let seqs = check_live_files(&out);
    assert_eq!(seqs.len(), 3, "{seqs:?}");
    // Rotation at local midnight: both days exist for every circuit.
    for circuit in std::fs::read_dir(&out).unwrap() {
        let mut days: Vec<String> = std::fs::read_dir(circuit.unwrap().path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        days.sort();
        assert_eq!(days, ["2025-10-25.csv", "2025-10-26.csv"]);
    }
}

/// Like [`rows`] but tolerant of a file being written right now (counts whole lines).
fn rows_quiet(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(circuits) = std::fs::read_dir(dir) else {
        return 0;
    };
    for c in circuits.flatten() {
        for day in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            n += std::fs::read(day.path())
                .map(|b| b.iter().filter(|&&x| x == b'\n').count().saturating_sub(1))
                .unwrap_or(0);
        }
    }
    n
}

fn support_broker() -> pmon_broker::BrokerHandle {
    pmon_broker::spawn(pmon_broker::BrokerConfig::ephemeral()).expect("broker")
}

fn publish(addr: std::net::SocketAddr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut options =
            rumqttc::MqttOptions::new("export-test-publisher", addr.ip().to_string(), addr.port());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let topics = Topics::new("home").unwrap();
        // 2025-10-25T21:59:30Z = 23:59:30 CEST.
        let mut ts = 1_761_429_570_000i64;
        let mut seq = 1u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (k, circuit) in ["000000c1", "000000c2", "000000c3"].iter().enumerate() {
                let records: Vec<FrameRecord> = (0..5)
                    .map(|i| record(seq + i, ts + 200 * i as i64 + k as i64, k as u64))
                    .collect();
                let frame = Frame {
                    circuit: circuit.to_string(),
                    records,
                };
                let _ = client
                    .publish(
                        topics.circuit(circuit, CircuitTopic::Frame),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        frame.encode(),
                    )
                    .await;
            }
            seq += 5;
            ts += 1_000;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
