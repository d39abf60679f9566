//! `pmon export history`: a range of the history as CSV, over the API or from a database file.
//!
//! Both sources write the same bytes: `--db` runs the historian's own CSV writer
//! ([`write_export`]) on a read-only connection, `--url` streams what the API's
//! `export.csv` produces with that same writer. Either way the output is written chunk by
//! chunk (64 KiB), so memory stays flat for any range; `-o FILE` goes through a temporary file
//! in the same directory, fsynced and renamed at the end, so a failure leaves no half file.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pmon_historian::api::{csv_units, write_export, ExportError, ExportPlan, CSV_CHUNK};
use pmon_historian::store::{CircuitSummary, Quantity, Store, Tier};
use pmon_historian::timefmt::{self, TzFormat};

use crate::{Defaults, Error, HistoryArgs};

/// A validated `export history` request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Start, ms (inclusive).
    pub from: i64,
    /// End, ms (exclusive).
    pub to: i64,
    /// Requested circuits (empty: all).
    pub circuits: Vec<String>,
    /// Columns.
    pub quantities: Vec<Quantity>,
    /// Raw or a rollup.
    pub tier: Tier,
    /// Time zone name.
    pub tz: String,
    /// Write the units comment line.
    pub units_comment: bool,
}

impl Request {
    /// Validates the command line (errors are [`Error::Usage`]).
    pub fn parse(args: &HistoryArgs) -> Result<Request, Error> {
        let time = |flag: &str, text: &str| {
            timefmt::parse_time(text).map_err(|e| Error::Usage(format!("--{flag}: {e}")))
        };
        let from = time("from", &args.from)?;
        let to = time("to", &args.to)?;
        if from > to {
            return Err(Error::Usage(format!(
                "reversed range: --from {} is after --to {}",
                timefmt::rfc3339_utc(from),
                timefmt::rfc3339_utc(to)
            )));
        }
        let quantities = if args.quantities.is_empty() {
            Quantity::ALL.to_vec()
        } else {
            let mut out = Vec::new();
            for name in args.quantities.iter().flat_map(|q| q.split(',')) {
                let q: Quantity = name.trim().parse().map_err(|_| {
                    Error::Usage(format!(
                        "unknown quantity {name:?}; one of {}",
                        Quantity::ALL.map(|q| q.as_str()).join(", ")
                    ))
                })?;
                if !out.contains(&q) {
                    out.push(q);
                }
            }
            out
        };
        let tier: Tier = args.resolution.parse().map_err(|_| {
            Error::Usage(format!(
                "unknown resolution {:?}; one of raw, 1m, 15m, 1h, 1d",
                args.resolution
            ))
        })?;
        timefmt::time_zone(&args.tz).map_err(|e| Error::Usage(format!("--tz: {e}")))?;
        let mut circuits: Vec<String> = Vec::new();
        for c in args.circuits.iter().flat_map(|c| c.split(',')) {
            let c = c.trim();
            if c.is_empty() || !pmon_proto::topic::valid_level(c) {
                return Err(Error::Usage(format!("invalid circuit id {c:?}")));
            }
            if !circuits.iter().any(|have| have == c) {
                circuits.push(c.to_string());
            }
        }
        Ok(Request {
            from,
            to,
            circuits,
            quantities,
            tier,
            tz: args.tz.clone(),
            units_comment: args.units_comment,
        })
    }

    fn tz_format(&self) -> Result<TzFormat, Error> {
        timefmt::time_zone(&self.tz)
            .map(TzFormat::new)
            .map_err(|e| Error::Usage(format!("--tz: {e}")))
    }

    /// The API query string (times as exact milliseconds).
    pub fn query(&self) -> String {
        let join = |v: Vec<&str>| v.join(",");
        let mut pairs: Vec<(&str, String)> = vec![
            ("from", self.from.to_string()),
            ("to", self.to.to_string()),
            ("resolution", self.tier.as_str().to_string()),
            ("tz", self.tz.clone()),
            (
                "quantities",
                join(self.quantities.iter().map(|q| q.as_str()).collect()),
            ),
        ];
        if !self.circuits.is_empty() {
            pairs.push(("circuits", self.circuits.join(",")));
        }
        if self.units_comment {
            pairs.push(("units", "comment".into()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

/// Where the CSV goes: stdout, or a temporary file renamed over FILE at the end.
enum Output {
    Stdout(io::BufWriter<io::Stdout>),
    File {
        file: io::BufWriter<File>,
        tmp: PathBuf,
        dest: PathBuf,
        done: bool,
    },
}

impl Output {
    fn open(dest: Option<&Path>) -> Result<Output, Error> {
        let Some(dest) = dest else {
            return Ok(Output::Stdout(io::BufWriter::with_capacity(
                CSV_CHUNK,
                io::stdout(),
            )));
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("-o {}: not a file name", dest.display())))?;
        let tmp = dir.join(format!(
            ".{}.{}.pmon-export.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp)
            .map_err(|e| Error::Write(format!("cannot create {}: {e}", tmp.display())))?;
        Ok(Output::File {
            file: io::BufWriter::with_capacity(CSV_CHUNK, file),
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    /// Writes a chunk. `Ok(false)`: stdout was closed by the reader (`| head`); stop quietly.
    fn write(&mut self, chunk: &[u8]) -> Result<bool, Error> {
        let result = match self {
            Output::Stdout(w) => w.write_all(chunk),
            Output::File { file, .. } => file.write_all(chunk),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e)
                if e.kind() == io::ErrorKind::BrokenPipe && matches!(self, Output::Stdout(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn write_error(&self, e: io::Error) -> Error {
        match self {
            Output::Stdout(_) => Error::Write(format!("cannot write to stdout: {e}")),
            Output::File { dest, .. } => {
                Error::Write(format!("cannot write {}: {e}", dest.display()))
            }
        }
    }

    fn finish(mut self) -> Result<(), Error> {
        match &mut self {
            Output::Stdout(w) => match w.flush() {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(self.write_error(e)),
                _ => Ok(()),
            },
            Output::File {
                file,
                tmp,
                dest,
                done,
            } => {
                let synced = file
                    .flush()
                    .and_then(|()| file.get_ref().sync_all())
                    .and_then(|()| std::fs::rename(&*tmp, &*dest));
                match synced {
                    Ok(()) => {
                        *done = true;
                        Ok(())
                    }
                    Err(e) => Err(Error::Write(format!(
                        "cannot write {}: {e}",
                        dest.display()
                    ))),
                }
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::File {
            tmp, done: false, ..
        } = self
        {
            let _ = std::fs::remove_file(&*tmp);
        }
    }
}

/// Rows and bytes on stderr while a terminal watches; nothing otherwise.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let visible = !quiet && io::stderr().is_terminal();
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} rows {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Switches to a bar once the number of rows is (about) known.
    fn set_total(&self, rows: u64) {
        if rows > 0 {
            self.bar.set_length(rows);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {percent:>3}% {human_pos}/~{human_len} rows, eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
    }

    fn chunk(&self, chunk: &[u8], bytes: &mut u64) {
        *bytes += chunk.len() as u64;
        let rows = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.bar.inc(rows);
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "({:.0} rows/s, {:.1} MB)",
            self.bar.position() as f64 / secs,
            *bytes as f64 / 1_000_000.0
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Rows expected in `[from, to)`: each circuit's records spread evenly over its data.
fn estimate(summaries: &[(String, i64, i64, u64)], req: &Request) -> u64 {
    let mut total = 0.0;
    for (id, first, last, records) in summaries {
        if !req.circuits.is_empty() && !req.circuits.contains(id) {
            continue;
        }
        let span = (last - first).max(1) as f64;
        let overlap = (req.to.min(*last + 1) - req.from.max(*first)).max(0) as f64;
        let fraction = (overlap / span).min(1.0);
        let rows = match req.tier.duration_ms() {
            None => *records as f64,
            Some(bucket) => span / bucket as f64 + 1.0,
        };
        total += rows * fraction;
    }
    total as u64
}

/// Runs `pmon export history`; returns the bytes written.
pub fn run(args: &HistoryArgs, defaults: &Defaults) -> Result<u64, Error> {
    let req = Request::parse(args)?;
    let progress = Progress::new(args.quiet);
    let mut output = Output::open(args.output.as_deref())?;
    let written = match &args.db {
        Some(db) => from_db(db, &req, &defaults.site, &mut output, &progress),
        None => {
            let url = args.url.as_deref().unwrap_or(&defaults.api_url);
            from_url(url, &req, &mut output, &progress)
        }
    };
    progress.finish();
    let written = written?;
    output.finish()?;
    Ok(written)
}

/// Straight from a database file, read-only (safe on the live file of a running historian).
fn from_db(
    db: &Path,
    req: &Request,
    site: &str,
    output: &mut Output,
    progress: &Progress,
) -> Result<u64, Error> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Source(format!("cannot read the database {}: {e}", db.display()))
    };
    if !db.is_file() {
        return Err(unreadable(&"no such file"));
    }
    let store = Store::open_read_only(db).map_err(|e| unreadable(&e))?;
    let summaries: Vec<CircuitSummary> = store.circuits().map_err(|e| unreadable(&e))?;
    if progress.visible() {
        let s: Vec<_> = summaries
            .iter()
            .map(|s| (s.id.clone(), s.first_ms, s.last_ms, s.records))
            .collect();
        progress.set_total(estimate(&s, req));
    }
    let comment = req.units_comment.then(|| {
        format!(
            "# pmon export: site {}, resolution {}, time zone {}, units: {}\n",
            site,
            req.tier,
            req.tz,
            csv_units(&req.quantities, req.tier)
        )
    });
    let plan = ExportPlan::select(
        &summaries,
        &req.circuits,
        req.from,
        req.to,
        req.tier,
        req.quantities.clone(),
        req.tz_format()?,
        comment,
    )
    .map_err(|c| {
        Error::Usage(format!(
            "unknown circuit: no circuit {c:?} in the database; it has {}",
            list(summaries.iter().map(|s| s.id.as_str()))
        ))
    })?;
    let mut bytes = 0u64;
    let mut buf = String::with_capacity(CSV_CHUNK + 4096);
    /// Stdout closed by the reader: not an error.
    struct Closed;
    let result = write_export(&store, plan, &mut buf, &mut |b: &mut String| {
        progress.chunk(b.as_bytes(), &mut bytes);
        let open = output.write(b.as_bytes()).map_err(Err)?;
        b.clear();
        if open {
            Ok(())
        } else {
            Err(Ok(Closed))
        }
    });
    match result {
        Ok(()) | Err(ExportError::Sink(Ok(Closed))) => Ok(bytes),
        Err(ExportError::Sink(Err(e))) => Err(e),
        Err(ExportError::Store(e)) => Err(unreadable(&e)),
    }
}

fn list<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.collect();
    if ids.is_empty() {
        "no circuits".into()
    } else {
        ids.join(", ")
    }
}

/// `http://host[:port][/prefix/]` → (host, port, path prefix ending in `/`).
fn split_url(url: &str) -> Result<(String, u16, String), Error> {
    let bad = |why: &str| Error::Usage(format!("--url {url:?}: {why}"));
    let rest = match url.strip_prefix("http://") {
        Some(rest) => rest,
        None if url.starts_with("https://") => {
            return Err(bad(
                "https is not supported; the historian's API is plain HTTP",
            ))
        }
        None => return Err(bad("expected http://HOST[:PORT]/")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>().map_err(|_| bad("bad port"))?,
        ),
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let mut prefix = path.to_string();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok((host, port, prefix))
}

/// From the historian's API: one GET, the body streamed to the output.
fn from_url(
    url: &str,
    req: &Request,
    output: &mut Output,
    progress: &Progress,
) -> Result<u64, Error> {
    let (host, port, prefix) = split_url(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Source(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        if progress.visible() {
            if let Ok((200, body)) = get_all(&host, port, &format!("{prefix}api/v1/circuits")).await
            {
                progress.set_total(estimate(&parse_circuits(&body), req));
            }
        }
        let path = format!("{prefix}api/v1/export.csv?{}", req.query());
        let mut response = request(&host, port, &path).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = collect(response.body_mut()).await.unwrap_or_default();
            return Err(api_error(url, status, &body));
        }
        let mut bytes = 0u64;
        let body = response.body_mut();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Error::Source(format!("the historian at {url} broke off the export: {e}"))
            })?;
            if let Ok(chunk) = frame.into_data() {
                progress.chunk(&chunk, &mut bytes);
                if !output.write(&chunk)? {
                    break;
                }
            }
        }
        Ok(bytes)
    })
}

type Response = hyper::Response<hyper::body::Incoming>;

async fn request(host: &str, port: u16, path: &str) -> Result<Response, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Source(format!(
            "the historian at http://{host}:{port}/ is unreachable: {e} (is `pmon historian` or \
             `pmon up` running? --db FILE reads a database file directly)"
        ))
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| unreachable(&"connection timed out"))?
    .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "historian connection ended");
        }
    });
    let request = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .header(
            "user-agent",
            concat!("pmon-export/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Error::Usage(format!("bad request {path:?}: {e}")))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))
}

async fn collect(body: &mut hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            out.extend_from_slice(&chunk);
            if out.len() > 1 << 20 {
                break;
            }
        }
    }
    Ok(out)
}

async fn get_all(host: &str, port: u16, path: &str) -> Result<(u16, Vec<u8>), Error> {
    let mut response = request(host, port, path).await?;
    let status = response.status().as_u16();
    let body = collect(response.body_mut())
        .await
        .map_err(|e| Error::Source(e.to_string()))?;
    Ok((status, body))
}

fn parse_circuits(body: &[u8]) -> Vec<(String, i64, i64, u64)> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    json["circuits"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some((
                        c["id"].as_str()?.to_string(),
                        c["first_ms"].as_i64()?,
                        c["last_ms"].as_i64()?,
                        c["records"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The API's JSON error as an [`Error`]: 400 is the caller's (exit 2), the rest the source's.
fn api_error(url: &str, status: u16, body: &[u8]) -> Error {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let detail = json["detail"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let error = json["error"].as_str().unwrap_or("error");
    match status {
        400 => Error::Usage(format!("{error}: {detail}")),
        404 => Error::Source(format!(
            "{url} answered 404: not a pmon historian API (or an older one without export.csv)"
        )),
        _ => Error::Source(format!(
            "the historian at {url} answered {status}: {error}: {detail}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:8081/").unwrap(),
            ("127.0.0.1".into(), 8081, "/".into())
        );
        assert_eq!(
            split_url("http://example:9/pmon").unwrap(),
            ("example".into(), 9, "/pmon/".into())
        );
        assert_eq!(
            split_url("http://[::1]:81").unwrap(),
            ("::1".into(), 81, "/".into())
        );
        assert!(matches!(split_url("https://x/"), Err(Error::Usage(_))));
    }
}
