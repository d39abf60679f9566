//! The endpoints.

use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use warp::http::Method;
use warp::reply::Response;
use warp::Reply;

use crate::store::{FrameRecord, Period, Quantity, Store};
use crate::timefmt::{self, TzFormat};

use super::params::Params;
use super::{csv, ApiError, ApiState};

/// Most points one series request may ask for per series.
pub const MAX_POINTS: u64 = 100_000;
/// Most series (circuits × quantities) in one request.
pub const MAX_SERIES: usize = 100;
/// Default and largest page of raw records.
pub const RAW_PAGE: (u64, u64) = (1_000, 10_000);
const DAY_MS: i64 = 86_400_000;

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) async fn dispatch(
    method: &Method,
    path: &str,
    query: &str,
    state: Arc<ApiState>,
) -> Response {
    let route = match path {
        "/api/v1/circuits" => Route::Circuits,
        "/api/v1/series" => Route::Series,
        "/api/v1/raw" => Route::Raw,
        "/api/v1/energy" => Route::Energy,
        "/api/v1/gaps" => Route::Gaps,
        "/api/v1/export.csv" => Route::Export,
        "/api/v1/health" => Route::Health,
        "/api/v1" | "/api/v1/" => Route::Index,
        _ => {
            return ApiError::status(
                404,
                "not found",
                format!("no endpoint {path:?}; GET /api/v1/ lists them"),
            )
            .into_response()
        }
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = ApiError::status(
            405,
            "method not allowed",
            format!("{method} {path}: the API is read-only, use GET"),
        )
        .into_response();
        response
            .headers_mut()
            .insert("allow", warp::http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let result = match route {
        Route::Circuits => circuits(query, state).await,
        Route::Series => series(query, state).await,
        Route::Raw => raw(query, state).await,
        Route::Energy => energy(query, state).await,
        Route::Gaps => gaps(query, state).await,
        Route::Export => csv::export(query, state).await,
        Route::Health => health(query, state).await,
        Route::Index => Ok(index()),
    };
    result.unwrap_or_else(ApiError::into_response)
}

enum Route {
    Circuits,
    Series,
    Raw,
    Energy,
    Gaps,
    Export,
    Health,
    Index,
}

fn index() -> Response {
    warp::reply::json(&json!({
        "version": "v1",
        "endpoints": [
            "/api/v1/circuits",
            "/api/v1/series",
            "/api/v1/raw",
            "/api/v1/energy",
            "/api/v1/gaps",
            "/api/v1/export.csv",
            "/api/v1/health",
        ],
        "documentation": "docs/api.md",
    }))
    .into_response()
}

/// `from`/`to` with defaults, checked for order.
pub(super) fn range(p: &Params, default_span_ms: Option<i64>) -> Result<(i64, i64), ApiError> {
    let to = p.time("to")?;
    let from = p.time("from")?;
    let to = to.unwrap_or_else(|| now_ms() + DAY_MS);
    let from = match (from, default_span_ms) {
        (Some(from), _) => from,
        (None, Some(span)) => to.saturating_sub(span),
        (None, None) => 0,
    };
    if from > to {
        return Err(ApiError::param(
            "from",
            "reversed range",
            format!(
                "from ({}) is after to ({})",
                timefmt::rfc3339_utc(from),
                timefmt::rfc3339_utc(to)
            ),
        ));
    }
    Ok((from, to))
}

pub(super) fn tz_param(p: &Params) -> Result<(String, TzFormat), ApiError> {
    let name = p.get("tz").unwrap_or("UTC");
    let tz = timefmt::time_zone(name).map_err(|e| ApiError::param("tz", "unknown time zone", e))?;
    Ok((name.to_string(), TzFormat::new(tz)))
}

/// Decimal places of a quantity's fixed-point unit (voltage: mV → 3).
pub(super) fn decimals(q: Quantity) -> u32 {
    (-q.scale().log10()).round().max(0.0) as u32
}

/// The exact decimal value of a fixed-point integer as an f64 (divides by a power of ten,
/// which is exact, so the shortest printout is the decimal itself).
pub(super) fn exact(q: Quantity, r: &FrameRecord) -> f64 {
    q.fixed(r) as f64 / 10f64.powi(decimals(q) as i32)
}

fn round(v: f64, places: u32) -> f64 {
    let s = 10f64.powi(places as i32);
    let r = (v * s).round() / s;
    if r.is_finite() {
        r
    } else {
        v
    }
}

fn json_response<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    Ok(warp::reply::json(value).into_response())
}

async fn circuits(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(query, &["tz"])?;
    let (_, mut tz) = tz_param(&p)?;
    let list = state
        .query(|s| s.circuits().map_err(|e| ApiError::store(e, None)))
        .await?;
    let circuits: Vec<Value> = list
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": state.labels.get(&c.id),
                "first": tz.format(c.first_ms),
                "last": tz.format(c.last_ms),
                "first_ms": c.first_ms,
                "last_ms": c.last_ms,
                "records": c.records,
                "coverage": round(c.coverage, 6),
            })
        })
        .collect();
    json_response(&json!({ "circuits": circuits }))
}

fn require_circuits(p: &Params) -> Result<Vec<String>, ApiError> {
    let mut circuits = p.list("circuits")?;
    if let Some(one) = p.get("circuit") {
        if !circuits.iter().any(|c| c == one) {
            circuits.push(one.to_string());
        }
    }
    if circuits.is_empty() {
        return Err(ApiError::param(
            "circuits",
            "missing parameter",
            "name one or more circuits: circuits=00c0ffee,00beef01 (GET /api/v1/circuits lists them)",
        ));
    }
    Ok(circuits)
}

async fn series(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(
        query,
        &[
            "circuits",
            "circuit",
            "quantities",
            "from",
            "to",
            "max_points",
            "resolution",
        ],
    )?;
    let circuits = require_circuits(&p)?;
    let quantities = p.quantities("quantities", &[Quantity::RealPower])?;
    let (from, to) = range(&p, Some(DAY_MS))?;
    let max_points = p.uint("max_points", 1, MAX_POINTS)?.unwrap_or(2_000) as usize;
    let requested = p.resolution("resolution", None)?;
    if circuits.len() * quantities.len() > MAX_SERIES {
        return Err(ApiError::bad(
            "too many series",
            format!(
                "{} circuits × {} quantities; at most {MAX_SERIES} series per request",
                circuits.len(),
                quantities.len()
            ),
        ));
    }
    let tier = match requested {
        Some(tier) => {
            let bucket = tier.duration_ms().unwrap_or(200) as i128;
            let estimate = ((to as i128 - from as i128) / bucket).max(0);
            if estimate > max_points as i128 {
                return Err(ApiError::param(
                    "resolution",
                    "too many points",
                    format!(
                        "resolution {tier} over this range gives about {estimate} points per series, more than max_points={max_points}; use resolution=auto, a coarser resolution, a shorter range or a larger max_points (at most {MAX_POINTS})"
                    ),
                ));
            }
            tier
        }
        None => Store::choose_tier(from, to, max_points),
    };
    let wanted: Vec<(String, Quantity)> = circuits
        .iter()
        .flat_map(|c| quantities.iter().map(move |q| (c.clone(), *q)))
        .collect();
    let results = state
        .query(move |s| {
            wanted
                .into_iter()
                .map(|(c, q)| {
                    s.series(&c, q, tier, from, to)
                        .map(|points| (c.clone(), q, points))
                        .map_err(|e| ApiError::store(e, Some("circuits")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let series: Vec<Value> = results
        .into_iter()
        .map(|(circuit, q, points)| {
            let k = decimals(q);
            let points: Vec<Value> = points
                .iter()
                .map(|pt| {
                    json!([
                        pt.ts_ms,
                        round(pt.min, k),
                        round(pt.max, k),
                        round(pt.mean, k + 2)
                    ])
                })
                .collect();
            json!({
                "circuit": circuit,
                "name": state.labels.get(&circuit),
                "quantity": q.as_str(),
                "unit": q.unit(),
                "tier": tier.as_str(),
                "points": points,
            })
        })
        .collect();
    json_response(&json!({
        "from": timefmt::rfc3339_utc(from),
        "to": timefmt::rfc3339_utc(to),
        "max_points": max_points,
        "resolution": tier.as_str(),
        "requested_resolution": requested.map(|t| t.as_str()).unwrap_or("auto"),
        "columns": ["ts_ms", "min", "max", "mean"],
        "series": series,
    }))
}

/// A raw record as a JSON object with the state's key names, exact decimals.
pub(super) fn record_json(r: &FrameRecord, tz: &mut TzFormat) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("seq".into(), json!(r.seq));
    map.insert("ts".into(), json!(tz.format(r.ts_ms)));
    map.insert("ts_ms".into(), json!(r.ts_ms));
    map.insert("duration_ms".into(), json!(r.duration_us as f64 / 1000.0));
    for q in Quantity::ALL {
        map.insert(q.as_str().into(), json!(exact(q, r)));
    }
    map.insert("flags".into(), json!(r.flags));
    Value::Object(map)
}

async fn raw(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(
        query,
        &["circuit", "from", "to", "after_seq", "limit", "tz"],
    )?;
    let circuit = p.required("circuit")?.to_string();
    let (from, to) = range(&p, None)?;
    let after_seq = p.uint("after_seq", 0, u64::MAX)?;
    let limit = p.uint("limit", 1, RAW_PAGE.1)?.unwrap_or(RAW_PAGE.0) as usize;
    let (_, mut tz) = tz_param(&p)?;
    let c = circuit.clone();
    let records = state
        .query(move |s| {
            s.raw_page(&c, from, to, after_seq, limit)
                .map_err(|e| ApiError::store(e, Some("circuit")))
        })
        .await?;
    let next = (records.len() >= limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    let list: Vec<Value> = records.iter().map(|r| record_json(r, &mut tz)).collect();
    json_response(&json!({
        "circuit": circuit,
        "name": state.labels.get(&circuit),
        "from": timefmt::rfc3339_utc(from),
        "to": timefmt::rfc3339_utc(to),
        "count": list.len(),
        "records": list,
        "next_after_seq": next,
    }))
}

async fn energy(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(query, &["circuit", "period", "tz", "from", "to"])?;
    let circuit = p.required("circuit")?.to_string();
    let period = match p.get("period") {
        None => Period::Day,
        Some(v) => Period::from_str(v)
            .map_err(|e| ApiError::param("period", "unknown period", e.to_string()))?,
    };
    let (tz_name, mut tz) = tz_param(&p)?;
    // Defaults: up to now, from the circuit's first data (at most 366 days back).
    let to = p.time("to")?.unwrap_or_else(now_ms);
    let given_from = p.time("from")?;
    if let Some(from) = given_from {
        if from > to {
            return Err(ApiError::param(
                "from",
                "reversed range",
                format!(
                    "from ({}) is after to ({})",
                    timefmt::rfc3339_utc(from),
                    timefmt::rfc3339_utc(to)
                ),
            ));
        }
    }
    let c = circuit.clone();
    let zone = tz_name.clone();
    let (from, buckets) = state
        .query(move |s| {
            let from = match given_from {
                Some(from) => from,
                None => {
                    let first = s
                        .circuits()
                        .map_err(|e| ApiError::store(e, None))?
                        .into_iter()
                        .find(|x| x.id == c)
                        // Energy comes from rollups, which outlive the raw records.
                        .map(|x| x.history_first_ms.min(x.first_ms))
                        .unwrap_or(to);
                    first.clamp(to.saturating_sub(366 * DAY_MS), to)
                }
            };
            s.energy(&c, period, &zone, from, to)
                .map(|b| (from, b))
                .map_err(|e| ApiError::store(e, Some("circuit")))
        })
        .await?;
    let (mut import, mut export) = (0.0, 0.0);
    let list: Vec<Value> = buckets
        .iter()
        .map(|b| {
            import += b.import_kwh;
            export += b.export_kwh;
            json!({
                "start": tz.format(b.start_ms),
                "start_ms": b.start_ms,
                "import_kwh": round(b.import_kwh, 6),
                "export_kwh": round(b.export_kwh, 6),
            })
        })
        .collect();
    json_response(&json!({
        "circuit": circuit,
        "name": state.labels.get(&circuit),
        "period": period.as_str(),
        "tz": tz_name,
        "from": tz.format(from),
        "to": tz.format(to),
        "buckets": list,
        "import_kwh": round(import, 6),
        "export_kwh": round(export, 6),
    }))
}

async fn gaps(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(query, &["circuit", "from", "to", "tz"])?;
    let circuit = p.required("circuit")?.to_string();
    let (from, to) = range(&p, None)?;
    let (_, mut tz) = tz_param(&p)?;
    let c = circuit.clone();
    let gaps = state
        .query(move |s| {
            s.gaps(&c, from, to)
                .map_err(|e| ApiError::store(e, Some("circuit")))
        })
        .await?;
    let missing: u64 = gaps
        .iter()
        .map(|g| g.before_seq.saturating_sub(g.after_seq).saturating_sub(1))
        .sum();
    let list: Vec<Value> = gaps
        .iter()
        .map(|g| {
            json!({
                "after_seq": g.after_seq,
                "before_seq": g.before_seq,
                "missing": g.before_seq.saturating_sub(g.after_seq).saturating_sub(1),
                "from": tz.format(g.from_ms),
                "to": tz.format(g.to_ms),
                "from_ms": g.from_ms,
                "to_ms": g.to_ms,
            })
        })
        .collect();
    json_response(&json!({
        "circuit": circuit,
        "gaps": list,
        "missing_records": missing,
    }))
}

async fn health(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    Params::parse(query, &[])?;
    let db_size = state.query(|s| Ok(s.file_size().ok())).await.ok().flatten();
    let ingest = state.stats.ingest();
    let started = state
        .stats
        .started_ms
        .load(std::sync::atomic::Ordering::Relaxed) as i64;
    json_response(&json!({
        "status": if ingest.connected { "ok" } else { "disconnected" },
        "site": state.site,
        "started": timefmt::rfc3339_utc(started),
        "uptime_s": ((now_ms() - started).max(0) as f64 / 1000.0).round(),
        "ingest": ingest,
        "maintenance": state.stats.maintenance(),
        "db": {
            "path": state.readers.path().display().to_string(),
            "size_bytes": db_size,
        },
    }))
}
