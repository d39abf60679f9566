//! The query API on a database holding months of data (generated directly into the store):
//! bad input, tier choice and point limits, paging, time zones across DST, the exact CSV
//! header, rollup exports, gaps and energy.

mod service_support;

use std::path::PathBuf;
use std::sync::OnceLock;

use pmon_historian::api::{routes, ApiState};
use pmon_historian::stats::{Labels, Stats};
use pmon_historian::store::{Store, StoreOptions};
use pmon_historian::timefmt::parse_time;
use serde_json::Value;
use service_support::*;
use warp::http::StatusCode;

/// One record every five minutes for four months, with a 100-record gap on day 50.
const MONTHS: &str = "0000beef";
/// 200 ms records around both 2025 DST changes in Europe/Berlin.
const DST: &str = "0000cafe";
const MONTHS_FROM: &str = "2025-06-01T00:00:00Z";
const MONTHS_DAYS: i64 = 122;
const STEP_MS: i64 = 300_000;
const PER_DAY: u64 = 288;
const GAP_AT: u64 = 50 * PER_DAY;
const GAP_LEN: u64 = 100;
const DST_CHANGES: [&str; 2] = ["2025-03-30T01:00:00Z", "2025-10-26T01:00:00Z"];
/// Records on each side of a DST change (10 minutes at 200 ms).
const DST_SIDE: u64 = 3000;

struct Db {
    path: PathBuf,
    months_records: u64,
}

fn db() -> &'static Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("historian.sqlite");
        let mut store = Store::open(
            &path,
            StoreOptions {
                raw_retention_days: None,
                minute_retention_days: None,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let t0 = parse_time(MONTHS_FROM).unwrap();
        let n = MONTHS_DAYS as u64 * PER_DAY;
        let mut batch = Vec::with_capacity(PER_DAY as usize);
        let mut months_records = 0;
        for i in 0..n {
            if (GAP_AT..GAP_AT + GAP_LEN).contains(&i) {
                continue;
            }
            let mut r = record(5_000_000 + i, t0 + i as i64 * STEP_MS);
            r.duration_us = 200_000;
            batch.push(r);
            months_records += 1;
            if batch.len() == PER_DAY as usize {
                store.ingest(MONTHS, &batch).unwrap();
                batch.clear();
            }
        }
        store.ingest(MONTHS, &batch).unwrap();
        store.commit().unwrap();
        for (k, change) in DST_CHANGES.iter().enumerate() {
            let at = parse_time(change).unwrap();
            let first = 90_000_000 + k as u64 * 1_000_000;
            let recs = records(first, at - DST_SIDE as i64 * 200, 2 * DST_SIDE as usize);
            store.ingest(DST, &recs).unwrap();
        }
        store.commit().unwrap();
        eprintln!("ingested in {:?}", started.elapsed());
        let mut now = t0 + MONTHS_DAYS * 86_400_000;
        while store.maintain(now, 10_000).unwrap() > 0 {
            now += 1;
        }
        eprintln!("generated and maintained in {:?}", started.elapsed());
        Db {
            path,
            months_records,
        }
    })
}

fn api() -> impl warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
       + Clone
       + Send
       + Sync
       + 'static {
    let labels = Labels::default();
    labels.set(MONTHS, "Heat pump".into());
    routes(ApiState::new(&db().path, "test", Stats::new(0), labels))
}

async fn get(path: &str) -> (StatusCode, Value) {
    let response = warp::test::request().path(path).reply(&api()).await;
    let status = response.status();
    let body: Value = serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(response.body())
        )
    });
    (status, body)
}

async fn csv(path: &str) -> (StatusCode, warp::http::HeaderMap, String) {
    let response = warp::test::request().path(path).reply(&api()).await;
    (
        response.status(),
        response.headers().clone(),
        String::from_utf8(response.body().to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_json_error_never_a_500() {
    let long = format!("/api/v1/series?circuits={}", "a".repeat(10_000));
    let cases: Vec<(String, &str)> = vec![
        ("/api/v1/series".into(), "missing parameter"),
        ("/api/v1/series?circuits=nope".into(), "unknown circuit"),
        (format!("/api/v1/series?circuits={MONTHS}&from=2025-09-01T00:00:00Z&to=2025-08-01T00:00:00Z"), "reversed range"),
        (format!("/api/v1/series?circuits={MONTHS}&quantities=watts"), "unknown quantity"),
        (format!("/api/v1/series?circuits={MONTHS}&resolution=5m"), "unknown resolution"),
        (format!("/api/v1/series?circuits={MONTHS}&from=yesterday"), "malformed timestamp"),
        (format!("/api/v1/series?circuits={MONTHS}&from=2025-06-01T00:00:00"), "malformed timestamp"),
        (format!("/api/v1/series?circuits={MONTHS}&from=%FF%FE"), "malformed timestamp"),
        (format!("/api/v1/series?circuits={MONTHS}&max_points=0"), "number out of range"),
        (format!("/api/v1/series?circuits={MONTHS}&max_points=-5"), "bad number"),
        (format!("/api/v1/series?circuits={MONTHS}&from=2025-06-01T00:00:00Z&to=2025-10-01T00:00:00Z&resolution=raw"), "too many points"),
        (format!("/api/v1/series?circuits={MONTHS}&circuits={MONTHS}"), "repeated parameter"),
        (long, "query string too long"),
        ("/api/v1/raw".into(), "missing parameter"),
        ("/api/v1/raw?circuit=nope".into(), "unknown circuit"),
        (format!("/api/v1/raw?circuit={MONTHS}&limit=0"), "number out of range"),
        (format!("/api/v1/raw?circuit={MONTHS}&limit=1000000"), "number out of range"),
        (format!("/api/v1/raw?circuit={MONTHS}&after_seq=abc"), "bad number"),
        (format!("/api/v1/raw?circuit={MONTHS}&bogus=1"), "unknown parameter"),
        (format!("/api/v1/raw?circuit={MONTHS}&tz=Mars/Olympus_Mons"), "unknown time zone"),
        (format!("/api/v1/energy?circuit={MONTHS}&tz=Mars/Olympus_Mons"), "unknown time zone"),
        (format!("/api/v1/energy?circuit={MONTHS}&period=fortnight"), "unknown period"),
        ("/api/v1/energy?circuit=nope".into(), "unknown circuit"),
        ("/api/v1/gaps?circuit=nope".into(), "unknown circuit"),
        (format!("/api/v1/gaps?circuit={MONTHS}&from=2025-09-01T00:00:00Z&to=2025-08-01T00:00:00Z"), "reversed range"),
        ("/api/v1/export.csv?resolution=auto".into(), "unknown resolution"),
        ("/api/v1/export.csv?resolution=7m".into(), "unknown resolution"),
        ("/api/v1/export.csv?circuits=nope".into(), "unknown circuit"),
        ("/api/v1/export.csv?quantities=volts".into(), "unknown quantity"),
        ("/api/v1/export.csv?tz=Nowhere/Town".into(), "unknown time zone"),
        ("/api/v1/export.csv?units=inline".into(), "bad parameter"),
        ("/api/v1/export.csv?from=2025-09-01T00:00:00Z&to=2025-08-01T00:00:00Z".into(), "reversed range"),
        ("/api/v1/export.csv?from=2025-02-30T00:00:00Z".into(), "malformed timestamp"),
        ("/api/v1/health?verbose=1".into(), "unknown parameter"),
    ];
    for (path, error) in cases {
        let (status, body) = get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], error, "{path}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn extreme_ranges_answer_without_a_500() {
    let far = [
        format!("/api/v1/series?circuits={MONTHS}&from=-62135596800000&to=253402207200000"),
        format!("/api/v1/series?circuits={MONTHS}&from=0&to=253402207200000&resolution=1d&max_points=100000"),
        format!("/api/v1/raw?circuit={MONTHS}&from=-62135596800000&to=253402207200000&limit=3"),
        format!("/api/v1/energy?circuit={MONTHS}&from=0&to=253402207200000"),
        format!("/api/v1/energy?circuit={MONTHS}&period=month&from=-62135596800000&to=253402207200000"),
        format!("/api/v1/gaps?circuit={MONTHS}&from=-62135596800000&to=253402207200000&tz=Pacific/Kiritimati"),
        "/api/v1/circuits?tz=America/St_Johns".to_string(),
        "/api/v1/series?circuits=0000beef&from=99999999999999999999".to_string(),
    ];
    for path in far {
        let response = warp::test::request().path(&path).reply(&api()).await;
        let status = response.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{path}: {status} {}",
            String::from_utf8_lossy(response.body())
        );
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        if status == StatusCode::BAD_REQUEST {
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    }
    let (_, _, body) = csv("/api/v1/export.csv?from=-62135596800000&to=253402207200000&resolution=1d&quantities=voltage").await;
    assert!(
        body.lines().count() > 100,
        "{}",
        &body[..body.len().min(500)]
    );
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405_in_json() {
    for path in [
        "/",
        "/api",
        "/api/v2/circuits",
        "/api/v1/circuits/extra",
        "/api/v1/nope",
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"], "not found");
    }
    let response = warp::test::request()
        .method("POST")
        .path("/api/v1/circuits")
        .reply(&api())
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error"], "method not allowed");
    let (status, body) = get("/api/v1/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["endpoints"].as_array().unwrap().len() >= 7);
}

#[tokio::test]
async fn circuits_have_labels_spans_and_coverage() {
    let (status, body) = get("/api/v1/circuits").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body["circuits"].as_array().unwrap();
    let months = list.iter().find(|c| c["id"] == MONTHS).unwrap();
    assert_eq!(months["name"], "Heat pump");
    assert_eq!(months["first"], "2025-06-01T00:00:00.000Z");
    assert_eq!(months["records"], db().months_records);
    let coverage = months["coverage"].as_f64().unwrap();
    assert!(coverage < 1.0 && coverage > 0.99, "{coverage}");
    let dst = list.iter().find(|c| c["id"] == DST).unwrap();
    assert_eq!(dst["name"], Value::Null);
    // In a time zone.
    let (_, body) = get("/api/v1/circuits?tz=Europe/Berlin").await;
    let months = body["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == MONTHS)
        .unwrap()
        .clone();
    assert_eq!(months["first"], "2025-06-01T02:00:00.000+02:00");
}

#[tokio::test]
async fn series_picks_the_tier_and_keeps_the_point_limit() {
    let cases = [
        // (from, to, max_points, expected tier)
        ("2025-07-01T00:00:00Z", "2025-07-01T00:05:00Z", 2000, "raw"),
        ("2025-07-01T00:00:00Z", "2025-07-01T12:00:00Z", 2000, "1m"),
        ("2025-07-01T00:00:00Z", "2025-07-15T00:00:00Z", 2000, "15m"),
        ("2025-06-01T00:00:00Z", "2025-08-01T00:00:00Z", 2000, "1h"),
        ("2025-06-01T00:00:00Z", "2025-10-01T00:00:00Z", 2000, "1d"),
        ("2025-06-01T00:00:00Z", "2025-10-01T00:00:00Z", 200, "1d"),
    ];
    for (from, to, max_points, tier) in cases {
        let path = format!(
            "/api/v1/series?circuits={MONTHS}&quantities=real_power,voltage&from={from}&to={to}&max_points={max_points}"
        );
        let (status, body) = get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["resolution"], tier, "{path}");
        assert_eq!(body["requested_resolution"], "auto");
        let series = body["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        for s in series {
            assert_eq!(s["tier"], tier);
            let points = s["points"].as_array().unwrap();
            assert!(!points.is_empty(), "{path}");
            assert!(
                points.len() <= max_points,
                "{path}: {} points",
                points.len()
            );
            let (from_ms, to_ms) = (parse_time(from).unwrap(), parse_time(to).unwrap());
            for p in points {
                let p = p.as_array().unwrap();
                let ts = p[0].as_i64().unwrap();
                assert!(ts >= from_ms - 86_400_000 && ts < to_ms, "{path}: {ts}");
                let (min, max, mean) = (
                    p[1].as_f64().unwrap(),
                    p[2].as_f64().unwrap(),
                    p[3].as_f64().unwrap(),
                );
                assert!(min <= mean + 1e-6 && mean <= max + 1e-6, "{path}: {p:?}");
            }
            let unit = if s["quantity"] == "voltage" { "V" } else { "W" };
            assert_eq!(s["unit"], unit);
        }
    }
    // An explicit resolution is honoured when it fits.
    let (status, body) = get(&format!(
        "/api/v1/series?circuits={MONTHS}&from=2025-07-01T00:00:00Z&to=2025-07-02T00:00:00Z&resolution=1h"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resolution"], "1h");
    assert_eq!(body["requested_resolution"], "1h");
    assert_eq!(body["series"][0]["points"].as_array().unwrap().len(), 24);
}

#[tokio::test]
async fn raw_pages_walk_every_record_once() {
    let from = "2025-07-01T00:00:00Z";
    let to = "2025-07-04T00:00:00Z";
    let mut after: Option<u64> = None;
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let mut path = format!("/api/v1/raw?circuit={MONTHS}&from={from}&to={to}&limit=100");
        if let Some(a) = after {
            path.push_str(&format!("&after_seq={a}"));
        }
        let (status, body) = get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        let records = body["records"].as_array().unwrap();
        seqs.extend(records.iter().map(|r| r["seq"].as_u64().unwrap()));
        if let Some(first) = records.first() {
            assert!(first["ts"].as_str().unwrap().ends_with('Z'));
            assert!(first["voltage"].as_f64().unwrap() > 200.0);
            assert!(first.get("current_crest_factor").is_some());
        }
        match body["next_after_seq"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seqs.len(), 3 * PER_DAY as usize);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(pages, (3 * PER_DAY as usize).div_ceil(100));
}

fn expected_header() -> &'static str {
    "time,circuit,seq,voltage,current,frequency,real_power,apparent_power,reactive_power,power_factor,current_crest_factor,phase_angle,energy_import_kwh,energy_export_kwh"
}

#[tokio::test]
async fn export_csv_header_is_exact_and_covers_every_circuit() {
    // The range of the first DST window: both circuits? Only DST has data there; take a range
    // holding both: the months circuit ends 2025-10-01, DST has October data: use all time.
    let (status, headers, body) =
        csv("/api/v1/export.csv?from=2025-03-30T00:00:00Z&to=2025-06-01T00:10:00Z&resolution=raw")
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut lines = body.lines();
    assert_eq!(lines.next().unwrap(), expected_header());
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition
            .starts_with("attachment; filename=\"pmon-test-raw-20250330T000000Z-20250601T001000Z"),
        "{disposition}"
    );
    let units = headers["x-pmon-units"].to_str().unwrap();
    assert!(
        units.contains("voltage=V")
            && units.contains("reactive_power=var")
            && units.contains("energy_import_kwh=kWh"),
        "{units}"
    );
    let rows: Vec<&str> = lines.collect();
    // 6000 DST records + the first 10 minutes (2 records) of the months circuit.
    assert_eq!(rows.len(), 2 * DST_SIDE as usize + 2);
    assert!(rows.iter().any(|r| r.contains(MONTHS)) && rows.iter().any(|r| r.contains(DST)));
    let first: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(first.len(), 14);
    assert_eq!(first[0], "2025-03-30T00:50:00.000Z");
    assert_eq!(first[1], DST);
    // Exact decimals from the fixed-point record.
    let r = record(90_000_000, parse_time("2025-03-30T00:50:00Z").unwrap());
    assert_eq!(first[2], "90000000");
    assert_eq!(first[3].parse::<f64>().unwrap(), r.voltage());
    assert_eq!(first[12].parse::<f64>().unwrap(), r.energy_import_kwh());
    // Ordered by time.
    let times: Vec<i64> = rows
        .iter()
        .map(|r| parse_time(r.split(',').next().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    // A subset of circuits and quantities.
    let (_, _, body) = csv(&format!(
        "/api/v1/export.csv?from=2025-06-01T00:00:00Z&to=2025-06-01T00:10:00Z&circuits={MONTHS}&quantities=real_power,voltage"
    ))
    .await;
    let mut lines = body.lines();
    assert_eq!(lines.next().unwrap(), "time,circuit,seq,real_power,voltage");
    assert_eq!(lines.count(), 2);
}

#[tokio::test]
async fn export_csv_in_a_time_zone_across_both_dst_changes() {
    let (status, _, body) = csv(&format!(
        "/api/v1/export.csv?from=2025-03-30T00:59:59Z&to=2025-03-30T01:00:01Z&circuits={DST}&tz=Europe/Berlin&quantities=voltage"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let times: Vec<&str> = body
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2025-03-30T01:59:59.000+01:00",
            "2025-03-30T01:59:59.200+01:00",
            "2025-03-30T01:59:59.400+01:00",
            "2025-03-30T01:59:59.600+01:00",
            "2025-03-30T01:59:59.800+01:00",
            "2025-03-30T03:00:00.000+02:00",
            "2025-03-30T03:00:00.200+02:00",
            "2025-03-30T03:00:00.400+02:00",
            "2025-03-30T03:00:00.600+02:00",
            "2025-03-30T03:00:00.800+02:00",
        ]
    );
    // Autumn: local 02:00–03:00 happens twice, told apart by the offset; every timestamp
    // still parses back to its instant.
    let (_, _, body) = csv(&format!(
        "/api/v1/export.csv?from=2025-10-26T00:50:00Z&to=2025-10-26T01:10:00Z&circuits={DST}&tz=Europe/Berlin&quantities=voltage"
    ))
    .await;
    let rows: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(rows.len(), 2 * DST_SIDE as usize);
    assert_eq!(
        rows[0].split(',').next().unwrap(),
        "2025-10-26T02:50:00.000+02:00"
    );
    assert_eq!(
        rows[rows.len() - 1].split(',').next().unwrap(),
        "2025-10-26T02:09:59.800+01:00"
    );
    let base = parse_time("2025-10-26T00:50:00Z").unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            parse_time(row.split(',').next().unwrap()).unwrap(),
            base + i as i64 * 200
        );
    }
    // UTC by default, with Z.
    let (_, _, body) = csv(&format!(
        "/api/v1/export.csv?from=2025-10-26T01:00:00Z&to=2025-10-26T01:00:00.200Z&circuits={DST}"
    ))
    .await;
    assert!(body
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("2025-10-26T01:00:00.000Z,"));
}

#[tokio::test]
async fn export_rollups_and_units_comment() {
    let (status, headers, body) = csv(&format!(
        "/api/v1/export.csv?from=2025-07-01T00:00:00Z&to=2025-07-02T00:00:00Z&circuits={MONTHS}&resolution=1h&quantities=voltage,real_power&units=comment"
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-pmon-resolution"], "1h");
    let mut lines = body.lines();
    let comment = lines.next().unwrap();
    assert!(
        comment.starts_with("# pmon export") && comment.contains("voltage_min=V"),
        "{comment}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "time,circuit,count,coverage,voltage_min,voltage_max,voltage_mean,real_power_min,real_power_max,real_power_mean"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 24);
    let first: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(first[0], "2025-07-01T00:00:00.000Z");
    assert_eq!(first[2], "12");
    let (min, max, mean): (f64, f64, f64) = (
        first[4].parse().unwrap(),
        first[5].parse().unwrap(),
        first[6].parse().unwrap(),
    );
    assert!(min <= mean && mean <= max);
}

#[tokio::test]
async fn gaps_and_energy() {
    let (status, body) = get(&format!("/api/v1/gaps?circuit={MONTHS}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let gaps = body["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{body}");
    assert_eq!(gaps[0]["after_seq"], 5_000_000 + GAP_AT - 1);
    assert_eq!(gaps[0]["before_seq"], 5_000_000 + GAP_AT + GAP_LEN);
    assert_eq!(gaps[0]["missing"], GAP_LEN);
    assert_eq!(body["missing_records"], GAP_LEN);
    let (status, body) = get(&format!(
        "/api/v1/energy?circuit={MONTHS}&period=day&tz=Europe/Berlin&from=2025-07-01T00:00:00%2B02:00&to=2025-07-08T00:00:00%2B02:00"
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["period"], "day");
    assert_eq!(body["tz"], "Europe/Berlin");
    for bucket in body["buckets"].as_array().unwrap() {
        assert!(
            bucket["start"].as_str().unwrap().ends_with("+02:00"),
            "{bucket}"
        );
        assert!(bucket["import_kwh"].as_f64().unwrap() >= 0.0);
    }
}

#[tokio::test]
async fn health_answers_without_ingest() {
    let (status, body) = get("/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "disconnected");
    assert!(body["db"]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(body["ingest"]["malformed"], 0);
}
