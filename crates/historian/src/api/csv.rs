//! `GET /api/v1/export.csv`: any range, any size, constant memory.
//!
//! A thread of its own reads the store window by window (the window adapts to the data
//! density, so one window holds at most a few hundred thousand rows whatever the store does
//! internally) and writes rows into 64 KiB chunks; a bounded channel of four chunks carries
//! them to hyper. A slow client slows the thread down; a client that goes away stops it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::Reply;

use crate::store::{CircuitSummary, FrameRecord, Point, Quantity, Store, StoreError, Tier};
use crate::timefmt::{self, TzFormat};

use super::handlers::{decimals, range, tz_param};
use super::params::Params;
use super::{ApiError, ApiState, Readers};

/// Bytes per chunk handed to the HTTP body.
pub const CSV_CHUNK: usize = 64 * 1024;
/// Chunks buffered between the export thread and the connection.
const CHANNEL_CHUNKS: usize = 4;
/// Raw windows start at one hour and adapt between one minute and 30 days.
const RAW_WINDOW_MS: (i64, i64, i64) = (3_600_000, 60_000, 30 * 86_400_000);
/// A raw window is widened below this many rows and narrowed above the second figure.
const RAW_WINDOW_ROWS: (usize, usize) = (10_000, 50_000);
/// Rollup rows per window (all circuits together).
const ROLLUP_WINDOW_ROWS: i64 = 20_000;

/// The header row (with its newline) of an export of `quantities` at `tier`.
///
/// Raw: `time,circuit,seq,<quantity>,…`; rollups: `time,circuit,count,coverage,
/// <quantity>_min,<quantity>_max,<quantity>_mean,…`. Quantity names are the JSON state's keys.
pub fn csv_header(quantities: &[Quantity], tier: Tier) -> String {
    let mut out = String::from("time,circuit");
    if tier == Tier::Raw {
        out.push_str(",seq");
        for q in quantities {
            out.push(',');
            out.push_str(q.as_str());
        }
    } else {
        out.push_str(",count,coverage");
        for q in quantities {
            for stat in ["min", "max", "mean"] {
                let _ = write!(out, ",{}_{stat}", q.as_str());
            }
        }
    }
    out.push('\n');
    out
}

fn unit_name(q: Quantity) -> &'static str {
    match q.unit() {
        "" => "1",
        unit => unit,
    }
}

/// `name=unit` pairs for the `X-Pmon-Units` header and the optional comment line.
pub fn csv_units(quantities: &[Quantity], tier: Tier) -> String {
    let mut parts = vec!["time=RFC 3339".to_string()];
    if tier == Tier::Raw {
        parts.push("seq=1".into());
        parts.extend(
            quantities
                .iter()
                .map(|q| format!("{}={}", q.as_str(), unit_name(*q))),
        );
    } else {
        parts.push("count=1".into());
        parts.push("coverage=1".into());
        for q in quantities {
            for stat in ["min", "max", "mean"] {
                parts.push(format!("{}_{stat}={}", q.as_str(), unit_name(*q)));
            }
        }
    }
    parts.join(", ")
}

/// Appends a fixed-point integer with `places` decimals, trailing zeros trimmed.
fn write_fixed(out: &mut String, value: i64, places: u32) {
    if places == 0 {
        let _ = write!(out, "{value}");
        return;
    }
    let scale = 10u64.pow(places);
    let negative = value < 0;
    let magnitude = value.unsigned_abs();
    let (int, mut frac) = (magnitude / scale, magnitude % scale);
    if negative {
        out.push('-');
    }
    let _ = write!(out, "{int}");
    if frac != 0 {
        let mut width = places as usize;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{frac:0width$}");
    }
}

fn write_float(out: &mut String, value: f64, places: u32) {
    let s = 10f64.powi(places as i32);
    let rounded = (value * s).round() / s;
    let v = if rounded.is_finite() { rounded } else { value };
    if v == 0.0 {
        out.push('0');
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// Appends one raw row.
pub fn write_raw_row(
    out: &mut String,
    tz: &mut TzFormat,
    circuit: &str,
    r: &FrameRecord,
    quantities: &[Quantity],
) {
    tz.write(out, r.ts_ms);
    out.push(',');
    write_field(out, circuit);
    let _ = write!(out, ",{}", r.seq);
    for q in quantities {
        out.push(',');
        write_fixed(out, q.fixed(r), decimals(*q));
    }
    out.push('\n');
}

enum Stop {
    /// The client went away.
    Cancelled,
    Store(StoreError),
}

impl From<ExportError<()>> for Stop {
    fn from(e: ExportError<()>) -> Self {
        match e {
            ExportError::Sink(()) => Stop::Cancelled,
            ExportError::Store(e) => Stop::Store(e),
        }
    }
}

struct Sink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    bytes: u64,
}

impl Sink {
    fn new(tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Sink {
        Sink { tx, bytes: 0 }
    }

    fn flush(&mut self, buf: &mut String) -> Result<(), ()> {
        if buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(buf, String::with_capacity(CSV_CHUNK + 4096));
        self.bytes += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| ())
    }
}

/// What one export writes: shared by `export.csv` and `pmon export history --db`, so both
/// produce the same bytes.
pub struct ExportPlan {
    /// Circuits, in the order of [`Store::circuits`](crate::store::Store::circuits).
    pub circuits: Vec<String>,
    /// Start of the range read, ms (inclusive).
    pub from: i64,
    /// End of the range read, ms (exclusive).
    pub to: i64,
    /// Raw records or a rollup tier.
    pub tier: Tier,
    /// Columns, in this order.
    pub quantities: Vec<Quantity>,
    /// Time zone of the `time` column.
    pub tz: TzFormat,
    /// An optional first line (with its newline) written before the header.
    pub comment: Option<String>,
}

impl ExportPlan {
    /// Selects the circuits `requested` (all when empty) from `summaries` and narrows
    /// `[from, to)` to where they have data. Err names an unknown circuit.
    #[allow(clippy::too_many_arguments)]
    pub fn select(
        summaries: &[CircuitSummary],
        requested: &[String],
        from: i64,
        to: i64,
        tier: Tier,
        quantities: Vec<Quantity>,
        tz: TzFormat,
        comment: Option<String>,
    ) -> Result<ExportPlan, String> {
        if let Some(c) = requested
            .iter()
            .find(|c| !summaries.iter().any(|s| &s.id == *c))
        {
            return Err(c.clone());
        }
        let selected: Vec<_> = summaries
            .iter()
            .filter(|s| requested.is_empty() || requested.contains(&s.id))
            .collect();
        let circuits: Vec<String> = selected.iter().map(|s| s.id.clone()).collect();
        // Only read where there is data (a default range from 1970 costs nothing).
        // Rollups reach further back than raw records (raw retention is shorter).
        let first = selected
            .iter()
            .map(|s| match tier.duration_ms() {
                Some(_) => s.history_first_ms.min(s.first_ms),
                None => s.first_ms,
            })
            .min()
            .unwrap_or(to);
        let last = selected.iter().map(|s| s.last_ms).max().unwrap_or(from);
        let data_from = match tier.duration_ms() {
            Some(bucket) => first.div_euclid(bucket) * bucket,
            None => first,
        };
        Ok(ExportPlan {
            circuits,
            from: from.max(data_from),
            to: to.min(last.saturating_add(1)),
            tier,
            quantities,
            tz,
            comment,
        })
    }
}

/// Why [`write_export`] stopped early.
#[derive(Debug)]
pub enum ExportError<E> {
    /// The sink refused a chunk.
    Sink(E),
    /// The store failed.
    Store(StoreError),
}

impl<E> From<StoreError> for ExportError<E> {
    fn from(e: StoreError) -> Self {
        ExportError::Store(e)
    }
}

/// Writes the CSV of `plan` from `store` into `buf`, calling `flush(buf)` after the header,
/// whenever `buf` holds at least [`CSV_CHUNK`] bytes, and at the end; `flush` must empty
/// `buf`. Memory stays flat for any range.
pub fn write_export<E>(
    store: &Store,
    mut plan: ExportPlan,
    buf: &mut String,
    flush: &mut dyn FnMut(&mut String) -> Result<(), E>,
) -> Result<(), ExportError<E>> {
    fn row_done<E>(
        buf: &mut String,
        flush: &mut dyn FnMut(&mut String) -> Result<(), E>,
    ) -> Result<(), ExportError<E>> {
        if buf.len() >= CSV_CHUNK {
            flush(buf).map_err(ExportError::Sink)?;
        }
        Ok(())
    }
    if let Some(comment) = &plan.comment {
        buf.push_str(comment);
    }
    buf.push_str(&csv_header(&plan.quantities, plan.tier));
    flush(buf).map_err(ExportError::Sink)?;
    if plan.circuits.is_empty() || plan.from >= plan.to {
        return Ok(());
    }
    if plan.tier == Tier::Raw {
        let mut window = RAW_WINDOW_MS.0;
        let mut t = plan.from;
        while t < plan.to {
            let end = t.saturating_add(window).min(plan.to);
            let mut rows = 0usize;
            for item in store.raw_stream(&plan.circuits, t, end)? {
                let (circuit, record) = item?;
                write_raw_row(buf, &mut plan.tz, &circuit, &record, &plan.quantities);
                rows += 1;
                row_done(buf, flush)?;
            }
            if rows < RAW_WINDOW_ROWS.0 {
                window = (window * 2).min(RAW_WINDOW_MS.2);
            } else if rows > RAW_WINDOW_ROWS.1 {
                window = (window / 2).max(RAW_WINDOW_MS.1);
            }
            t = end;
        }
    } else {
        let bucket = plan.tier.duration_ms().unwrap_or(60_000);
        let per_window = (ROLLUP_WINDOW_ROWS / plan.circuits.len() as i64).max(1);
        let span = bucket.saturating_mul(per_window);
        let mut t = plan.from;
        while t < plan.to {
            // Window ends on bucket boundaries, so no bucket is split between two windows.
            let end = (t.div_euclid(bucket) * bucket)
                .saturating_add(span)
                .min(plan.to);
            let end = if end <= t {
                plan.to.min(t.saturating_add(bucket))
            } else {
                end
            };
            let mut rows: BTreeMap<(i64, usize), Vec<Option<Point>>> = BTreeMap::new();
            for (ci, circuit) in plan.circuits.iter().enumerate() {
                for (qi, q) in plan.quantities.iter().enumerate() {
                    for point in store.series(circuit, *q, plan.tier, t, end)? {
                        let row = rows
                            .entry((point.ts_ms, ci))
                            .or_insert_with(|| vec![None; plan.quantities.len()]);
                        row[qi] = Some(point);
                    }
                }
            }
            for ((ts, ci), points) in rows {
                plan.tz.write(buf, ts);
                buf.push(',');
                write_field(buf, &plan.circuits[ci]);
                let first = points.iter().flatten().next();
                let _ = write!(buf, ",{}", first.map(|p| p.count).unwrap_or(0));
                buf.push(',');
                write_float(buf, first.map(|p| p.coverage).unwrap_or(0.0), 6);
                for (q, point) in plan.quantities.iter().zip(&points) {
                    let k = decimals(*q);
                    match point {
                        Some(p) => {
                            for (v, places) in [(p.min, k), (p.max, k), (p.mean, k + 2)] {
                                buf.push(',');
                                write_float(buf, v, places);
                            }
                        }
                        None => buf.push_str(",,,"),
                    }
                }
                buf.push('\n');
                row_done(buf, flush)?;
            }
            t = end;
        }
    }
    flush(buf).map_err(ExportError::Sink)
}

fn produce(readers: &Arc<Readers>, plan: ExportPlan, sink: &mut Sink) -> Result<(), Stop> {
    let store = readers.get().map_err(Stop::Store)?;
    let mut buf = String::with_capacity(CSV_CHUNK + 4096);
    write_export(&store, plan, &mut buf, &mut |b: &mut String| sink.flush(b))?;
    Ok(())
}

fn compact_time(ms: i64) -> String {
    let full = timefmt::rfc3339_utc(ms);
    let no_ms = match full.find('.') {
        Some(dot) => format!("{}Z", &full[..dot]),
        None => full,
    };
    no_ms.replace(['-', ':'], "")
}

pub(super) async fn export(query: &str, state: Arc<ApiState>) -> Result<Response, ApiError> {
    let p = Params::parse(
        query,
        &[
            "from",
            "to",
            "resolution",
            "circuits",
            "circuit",
            "quantities",
            "tz",
            "units",
        ],
    )?;
    let tier = match p.resolution("resolution", Some(Tier::Raw))? {
        Some(tier) => tier,
        None => {
            return Err(ApiError::param(
                "resolution",
                "unknown resolution",
                "export.csv needs an explicit resolution: raw, 1m, 15m, 1h or 1d",
            ))
        }
    };
    let mut requested = p.list("circuits")?;
    if let Some(one) = p.get("circuit") {
        if !requested.iter().any(|c| c == one) {
            requested.push(one.to_string());
        }
    }
    let quantities = p.quantities("quantities", &Quantity::ALL)?;
    let (tz_name, tz) = tz_param(&p)?;
    let comment = match p.get("units") {
        None | Some("header") => false,
        Some("comment") => true,
        Some(other) => {
            return Err(ApiError::param(
                "units",
                "bad parameter",
                format!("{other:?}; expected header (default) or comment"),
            ))
        }
    };
    let (from, to) = range(&p, None)?;
    let permit = Arc::clone(&state.exports)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::status(
                503,
                "too many exports",
                "other exports are running; try again shortly",
            )
        })?;
    let summaries = state
        .query(|s| s.circuits().map_err(|e| ApiError::store(e, None)))
        .await?;
    let comment = comment.then(|| {
        format!(
            "# pmon export: site {}, resolution {}, time zone {}, units: {}\n",
            state.site,
            tier,
            tz_name,
            csv_units(&quantities, tier)
        )
    });
    let plan = ExportPlan::select(
        &summaries,
        &requested,
        from,
        to,
        tier,
        quantities.clone(),
        tz,
        comment,
    )
    .map_err(|c| {
        ApiError::param(
            "circuits",
            "unknown circuit",
            format!("no circuit {c:?} in the store; GET /api/v1/circuits lists them"),
        )
    })?;
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let readers = Arc::clone(&state.readers);
    let spawned = std::thread::Builder::new()
        .name("historian-export".into())
        .spawn(move || {
            let _permit = permit;
            let mut sink = Sink::new(tx);
            match produce(&readers, plan, &mut sink) {
                Ok(()) => tracing::debug!(bytes = sink.bytes, "export done"),
                Err(Stop::Cancelled) => {
                    tracing::debug!(bytes = sink.bytes, "export cancelled by the client")
                }
                Err(Stop::Store(error)) => {
                    tracing::error!(%error, "export failed midway");
                    let _ = sink
                        .tx
                        .blocking_send(Err(std::io::Error::other(error.to_string())));
                }
            }
        });
    if let Err(e) = spawned {
        return Err(ApiError::status(500, "internal error", e.to_string()));
    }
    let mut response = warp::reply::stream(ReceiverStream::new(rx)).into_response();
    let filename = format!(
        "pmon-{}-{}-{}-{}.csv",
        state.site.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_"
        ),
        tier,
        compact_time(from),
        compact_time(to)
    );
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert("content-disposition", v);
    }
    if let Ok(v) = HeaderValue::from_str(&csv_units(&quantities, tier)) {
        headers.insert("x-pmon-units", v);
    }
    if let Ok(v) = HeaderValue::from_str(tier.as_str()) {
        headers.insert("x-pmon-resolution", v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_is_exact_and_trimmed() {
        let mut s = String::new();
        for (v, k, want) in [
            (230_000, 3, "230"),
            (230_001, 3, "230.001"),
            (-2_490_500, 3, "-2490.5"),
            (8660, 4, "0.866"),
            (-5, 4, "-0.0005"),
            (0, 6, "0"),
            (12_345_600, 6, "12.3456"),
            (i64::MIN, 3, "-9223372036854775.808"),
        ] {
            s.clear();
            write_fixed(&mut s, v, k);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn header_names_are_the_state_keys() {
        assert_eq!(
            csv_header(&Quantity::ALL, Tier::Raw),
            "time,circuit,seq,voltage,current,frequency,real_power,apparent_power,reactive_power,power_factor,current_crest_factor,phase_angle,energy_import_kwh,energy_export_kwh\n"
        );
        assert_eq!(
            csv_header(&[Quantity::Voltage], Tier::Hour),
            "time,circuit,count,coverage,voltage_min,voltage_max,voltage_mean\n"
        );
    }
}
