//! Storage benchmark (harness = false, no criterion).
//!
//! ```text
//! cargo bench -p pmon-historian --bench store                      # synthetic data only
//! cargo bench -p pmon-historian --bench store -- --csv data.csv    # plus the peers' CSV
//! ```
//!
//! Prints markdown tables: ingest into the storage layer, bytes per value per tier and for the
//! whole file, projected disk per year for 100 circuits, query latency for 2000 points over
//! an hour to a year, and one circuit-day of raw records out as CSV.

#[path = "../tests/store_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use pmon_historian::store::{FrameRecord, Quantity, Store, StoreOptions, Tier};

const DAY: i64 = 86_400_000;

/// Loads the peers' CSV (`time,circuit,seq,voltage,…` in SI units) as fixed-point records.
fn load_csv(path: &str) -> BTreeMap<String, Vec<FrameRecord>> {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (ct, cc, cs) = (col("time"), col("circuit"), col("seq"));
    let q = [
        "voltage",
        "current",
        "frequency",
        "real_power",
        "apparent_power",
        "reactive_power",
        "power_factor",
        "current_crest_factor",
        "phase_angle",
        "energy_import_kwh",
        "energy_export_kwh",
    ]
    .map(col);
    let mut out: BTreeMap<String, Vec<FrameRecord>> = BTreeMap::new();
    let mut f: Vec<&str> = Vec::with_capacity(16);
    for line in lines {
        f.clear();
        f.extend(line.split(','));
        let num =
            |i: usize, scale: f64| (f[q[i]].parse::<f64>().unwrap_or(0.0) * scale).round() as i64;
        let ts: jiff::Timestamp = f[ct].parse().expect("time");
        let r = FrameRecord {
            seq: f[cs].parse().expect("seq"),
            ts_ms: ts.as_millisecond(),
            duration_us: 200_000,
            voltage_mv: num(0, 1e3) as u32,
            current_ua: num(1, 1e6) as u32,
            frequency_mhz: num(2, 1e3) as u32,
            real_power_mw: num(3, 1e3),
            apparent_power_mva: num(4, 1e3) as u64,
            reactive_power_mvar: num(5, 1e3),
            power_factor: num(6, 1e4) as i16,
            crest_factor: num(7, 1e3) as u16,
            phase_angle: num(8, 1e2) as i16,
            energy_import_mwh: num(9, 1e6) as u64,
            energy_export_mwh: num(10, 1e6) as u64,
            flags: 0,
        };
        out.entry(f[cc].to_owned()).or_default().push(r);
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Ingests every circuit's records in time order the way the service does (frames of
/// `frame` records per circuit), committing every `commit_every` records.
fn ingest_all(
    s: &mut Store,
    data: &BTreeMap<String, Vec<FrameRecord>>,
    frame: usize,
    commit_every: usize,
) {
    let longest = data.values().map(Vec::len).max().unwrap_or(0);
    let mut staged = 0;
    for start in (0..longest).step_by(frame) {
        for (c, recs) in data {
            if start < recs.len() {
                let end = (start + frame).min(recs.len());
                s.ingest(c, &recs[start..end]).expect("ingest");
                staged += end - start;
            }
        }
        if staged >= commit_every {
            s.commit().expect("commit");
            staged = 0;
        }
    }
    s.commit().expect("commit");
}

struct Sizes {
    file: u64,
    raw: u64,
    tiers: Vec<(Tier, u64, u64)>,
    records: u64,
}

fn sizes(path: &Path) -> Sizes {
    let conn = rusqlite::Connection::open(path).expect("open");
    let q = |sql: &str| -> u64 {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .expect(sql)
            .unwrap_or(0) as u64
    };
    let raw = q("SELECT SUM(pgsize) FROM dbstat WHERE name IN ('chunk','chunk_seq','chunk_time','chunk_open')");
    let rollup_pages =
        q("SELECT SUM(pgsize) FROM dbstat WHERE name IN ('rollup','rollup_time','rollup_small')");
    let rollup_data = q("SELECT SUM(length(data)) FROM rollup").max(1);
    let mut tiers = Vec::new();
    for t in Tier::ROLLUPS {
        let idx = Tier::ALL.iter().position(|x| *x == t).unwrap_or(0);
        let data = q(&format!(
            "SELECT SUM(length(data)) FROM rollup WHERE tier={idx}"
        ));
        let buckets = q(&format!("SELECT SUM(buckets) FROM rollup WHERE tier={idx}"));
        // Pages of the rollup table shared out in proportion to each tier's data.
        tiers.push((t, data * rollup_pages / rollup_data, buckets));
    }
    let records = q("SELECT SUM(count) FROM chunk");
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Sizes {
        file,
        raw,
        tiers,
        records,
    }
}

fn csv_line(out: &mut String, c: &str, r: &FrameRecord) {
    let _ = write!(out, "{},{},{}", r.ts_ms, c, r.seq);
    for q in Quantity::ALL {
        out.push(',');
        q.write_decimal(r, out);
    }
    out.push('\n');
}

fn bench_peers_csv(path: &str, reps: usize) {
    let t = Instant::now();
    let data = load_csv(path);
    let n: usize = data.values().map(Vec::len).sum();
    let values = n as f64 * 12.0;
    println!(
        "\n## Peers' CSV: {path}\n\n{} circuits, {n} records, {} values (loaded in {:.1} s)\n",
        data.len(),
        n * 12,
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ingest = Vec::new();
    let mut maint = Vec::new();
    let mut db = dir.path().join("x.db");
    for rep in 0..reps {
        db = dir.path().join(format!("peers{rep}.db"));
        let mut s = Store::open(&db, StoreOptions::default()).expect("open");
        let t = Instant::now();
        ingest_all(&mut s, &data, 1000, 100_000);
        ingest.push(t.elapsed());
        let t = Instant::now();
        let now = data
            .values()
            .flat_map(|v| v.last())
            .map(|r| r.ts_ms)
            .max()
            .unwrap_or(0)
            + 600_000;
        while s.maintain(now, 1000).expect("maintain") > 0 {}
        maint.push(t.elapsed());
        s.checkpoint().expect("checkpoint");
    }
    let ing = median(ingest);
    println!("| metric | pmon store |\n|---|---:|");
    println!(
        "| ingest records/s (ingest + commit, 1000-record frames, commit per 100k; median of {reps}) | {:.0} |",
        n as f64 / ing.as_secs_f64()
    );
    println!("| ingest values/s | {:.0} |", values / ing.as_secs_f64());
    println!(
        "| maintain to idle (merges + all rollups), s | {:.2} |",
        median(maint).as_secs_f64()
    );
    let sz = sizes(&db);
    println!(
        "| whole file after maintain + checkpoint, bytes | {} |",
        sz.file
    );
    println!(
        "| **bytes/value, whole file** | **{:.3}** |",
        sz.file as f64 / values
    );
    println!(
        "| bytes/value, raw chunks (pages incl. indexes) | {:.3} |",
        sz.raw as f64 / values
    );
    for (t, b, buckets) in &sz.tiers {
        println!(
            "| {t} rollups: bytes ({buckets} buckets, {:.1} B/bucket, {:.4} B/value of raw) | {b} |",
            *b as f64 / (*buckets).max(1) as f64,
            *b as f64 / values
        );
    }
    {
        let s = Store::open(&db, StoreOptions::default()).expect("open");
        s.vacuum().expect("vacuum");
        s.checkpoint().expect("checkpoint");
        println!(
            "| whole file after VACUUM, bytes/value | {:.3} |",
            s.file_size().expect("size") as f64 / values
        );
        assert_eq!(sz.records as usize, n);
    }
    // Queries on the circuit with the most records.
    let s = Store::open_read_only(&db).expect("open");
    let (circuit, recs) = data.iter().max_by_key(|(_, v)| v.len()).expect("data");
    let from = recs[0].ts_ms;
    let to = recs[recs.len() - 1].ts_ms + 1;
    let time = |f: &mut dyn FnMut() -> usize| {
        let mut v = Vec::new();
        let mut n = 0;
        for _ in 0..9 {
            let t = Instant::now();
            n = f();
            v.push(t.elapsed());
        }
        (median(v), n)
    };
    let tier = Store::choose_tier(from, to, 2000);
    let (d, pts) = time(&mut || {
        s.series(circuit, Quantity::Voltage, tier, from, to)
            .expect("series")
            .len()
    });
    println!(
        "| series over the whole range, tier {tier}: {pts} points, ms | {:.2} |",
        ms(d)
    );
    let (d, pts) = time(&mut || {
        let raw = s
            .series(circuit, Quantity::Voltage, Tier::Raw, from, to)
            .expect("series");
        let step = ((to - from) / 2000).max(1);
        let mut buckets: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
        for p in raw {
            let e = buckets.entry((p.ts_ms - from) / step).or_default();
            e.0 += p.mean;
            e.1 += 1;
        }
        buckets.len()
    });
    println!(
        "| downsample raw to 2000 points (like VM's avg_over_time), {pts} points, ms | {:.2} |",
        ms(d)
    );
    let (d, rows) = time(&mut || {
        let mut out = String::new();
        let mut k = 0;
        for r in s
            .raw_stream(std::slice::from_ref(circuit), from, to)
            .expect("stream")
        {
            let (c, r) = r.expect("row");
            csv_line(&mut out, &c, &r);
            k += 1;
        }
        std::hint::black_box(out);
        k
    });
    println!(
        "| raw export 1 circuit ({rows} records, {} values) as CSV text, ms | {:.1} |",
        rows * 12,
        ms(d)
    );
}

/// A year of data for a few circuits (1 record / 10 s for the year, 5 records/s on the last
/// day of circuit 0), rollups by maintain(), then query latencies.
fn bench_year(circuits: usize) {
    println!("\n## A year of synthetic data, {circuits} circuits\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("year.db");
    let opts = StoreOptions {
        raw_retention_days: None,
        ..StoreOptions::default()
    };
    let mut s = Store::open(&db, opts).expect("open");
    let start = common::T0 - 365 * DAY;
    let end = common::T0;
    let t = Instant::now();
    let mut total = 0usize;
    for c in 0..circuits {
        let mut g = common::Gen::new(1_000_000 * c as u64, start + c as i64 * 37);
        let name = format!("c{c}");
        loop {
            let mut batch = Vec::with_capacity(8640);
            for _ in 0..8640 {
                let dense = c == 0 && g.ts >= end - DAY;
                let mut r = g.next_record();
                if !dense {
                    // One record every 10 s, each a 10 s block.
                    g.ts += 9_800;
                    r.duration_us = 10_000_000;
                }
                batch.push(r);
                if g.ts >= end {
                    break;
                }
            }
            total += batch.len();
            s.ingest(&name, &batch).expect("ingest");
            s.commit().expect("commit");
            if g.ts >= end {
                break;
            }
        }
    }
    let gen = t.elapsed();
    let t = Instant::now();
    while s.maintain(end + 600_000, 10_000).expect("maintain") > 0 {}
    println!(
        "{total} records ingested in {:.1} s, rollups built by maintain() in {:.1} s\n",
        gen.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    s.checkpoint().expect("checkpoint");
    drop(s);
    let sz = sizes(&db);
    let s = Store::open_read_only(&db).expect("open");
    println!("| query (circuit c0, voltage, 2000 points max) | tier | points | median ms (of 21) |\n|---|---|---:|---:|");
    for (label, span) in [
        ("1 hour", 3_600_000),
        ("1 day", DAY),
        ("1 month", 30 * DAY),
        ("1 year", 365 * DAY),
    ] {
        let from = end - span;
        let tier = Store::choose_tier(from, end, 2000);
        let mut v = Vec::new();
        let mut n = 0;
        for _ in 0..21 {
            let t = Instant::now();
            n = s
                .series("c0", Quantity::Voltage, tier, from, end)
                .expect("series")
                .len();
            v.push(t.elapsed());
        }
        println!("| {label} | {tier} | {n} | {:.2} |", ms(median(v)));
    }
    let mut v = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut out = String::with_capacity(1 << 20);
        rows = 0;
        for r in s
            .raw_stream(&["c0".to_owned()], end - DAY, end)
            .expect("stream")
        {
            let (c, r) = r.expect("row");
            csv_line(&mut out, &c, &r);
            rows += 1;
            if out.len() > 1 << 20 {
                std::hint::black_box(&out);
                out.clear();
            }
        }
        v.push(t.elapsed());
    }
    println!(
        "\nOne circuit-day raw export ({rows} records, {} values) as CSV text: median {:.0} ms of 5 \
         (decode only: see below)",
        rows * 12,
        ms(median(v))
    );
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let n = s
            .raw_stream(&["c0".to_owned()], end - DAY, end)
            .expect("stream")
            .count();
        std::hint::black_box(n);
        v.push(t.elapsed());
    }
    println!(
        "One circuit-day raw stream, decode only: median {:.0} ms of 5\n",
        ms(median(v))
    );
    println!("| tier | bytes | buckets | bytes/bucket |\n|---|---:|---:|---:|");
    for (t, b, n) in &sz.tiers {
        println!(
            "| {t} | {b} | {n} | {:.1} |",
            *b as f64 / (*n).max(1) as f64
        );
    }
    // Projection for 100 circuits at 5 records/s with the default retention.
    let per_bucket: Vec<f64> = sz
        .tiers
        .iter()
        .map(|(_, b, n)| *b as f64 / (*n).max(1) as f64)
        .collect();
    let _ = per_bucket;
}

fn projection(raw_bytes_per_record: f64, bucket_bytes: &[(Tier, f64)]) {
    let o = StoreOptions::default();
    let circuits = 100.0;
    let raw_days = o.raw_retention_days.map_or(365.0, |d| d as f64);
    let raw = circuits * raw_days * 432_000.0 * raw_bytes_per_record;
    println!("\n## Projected disk for 100 circuits at 5 records/s, default retention\n");
    println!("| part | retention | bytes |\n|---|---|---:|");
    println!("| raw | {raw_days} days | {:.2} GB |", raw / 1e9);
    let mut total = raw;
    for (t, b) in bucket_bytes {
        let per_day = DAY as f64 / t.duration_ms().unwrap_or(DAY) as f64;
        let days = o
            .retention_days(*t)
            .map_or(365.0, |d| (d as f64).min(365.0));
        let bytes = circuits * days * per_day * b;
        total += bytes;
        let ret = o
            .retention_days(*t)
            .map_or("forever (1st year)".to_owned(), |d| format!("{d} days"));
        println!("| {t} rollups | {ret} | {:.3} GB |", bytes / 1e9);
    }
    println!("| **first year total** | | **{:.2} GB** |", total / 1e9);
    let forever: f64 = bucket_bytes
        .iter()
        .filter(|(t, _)| o.retention_days(*t).is_none())
        .map(|(t, b)| circuits * 365.0 * (DAY as f64 / t.duration_ms().unwrap_or(DAY) as f64) * b)
        .sum();
    println!(
        "| each further year (forever tiers) | | {:.3} GB |",
        forever / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let reps: usize = arg("--reps").and_then(|r| r.parse().ok()).unwrap_or(3);
    println!(
        "# pmon-historian storage benchmark\n\nmachine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |s| s.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
    let csv = arg("--csv").or_else(|| std::env::var("PMON_PEERS_CSV").ok());
    let mut raw_b_per_record = None;
    if let Some(csv) = &csv {
        bench_peers_csv(csv, reps);
        // Re-measure raw bytes/record on the peers' data for the projection.
        let data = load_csv(csv);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("p.db");
        let mut s = Store::open(&db, StoreOptions::default()).expect("open");
        ingest_all(&mut s, &data, 1000, 100_000);
        s.checkpoint().expect("checkpoint");
        let sz = sizes(&db);
        raw_b_per_record = Some(sz.raw as f64 / sz.records.max(1) as f64);
    }
    let circuits: usize = arg("--year-circuits")
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    bench_year(circuits);
    // Rollup bytes per bucket from the year run are printed above; use typical figures
    // measured there for the projection (recomputed here on a smaller year for speed).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("proj.db");
    {
        let mut s = Store::open(
            &db,
            StoreOptions {
                raw_retention_days: None,
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let mut g = common::Gen::new(1, common::T0 - 30 * DAY);
        while g.ts < common::T0 {
            let batch: Vec<FrameRecord> = (0..9000).map(|_| g.next_record()).collect();
            s.ingest("p", &batch).expect("ingest");
            s.commit().expect("commit");
        }
        while s.maintain(common::T0 + 600_000, 10_000).expect("maintain") > 0 {}
        s.checkpoint().expect("checkpoint");
    }
    let sz = sizes(&db);
    let raw = raw_b_per_record.unwrap_or(sz.raw as f64 / sz.records.max(1) as f64);
    let buckets: Vec<(Tier, f64)> = sz
        .tiers
        .iter()
        .map(|(t, b, n)| (*t, *b as f64 / (*n).max(1) as f64))
        .collect();
    projection(raw, &buckets);
}
