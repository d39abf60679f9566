//! `pmon export live`: frames → `<dir>/<circuit>/<YYYY-MM-DD>.csv`, one file per circuit per
//! local day.
//!
//! Rows are the same as `pmon export history`'s raw rows (all quantities, exact decimals,
//! RFC 3339 with the zone's offset). Crash safety:
//! - the rows of one frame for one file go out in **one** `write` call (with the header when
//!   the file is new), so a killed process leaves whole rows: the kernel finishes a write to a
//!   regular file once it has started;
//! - a power cut can still leave a torn tail; on opening a file the exporter truncates it to
//!   its last `\n` (and rewrites the header if nothing whole is left);
//! - files are fsynced at most once a second; rows are acknowledged to the broker after
//!   their write, and a row whose sequence number is not above the last one in the file is
//!   skipped, so a redelivered frame is not written twice.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use pmon_historian::api::{csv_header, write_raw_row};
use pmon_historian::store::{Quantity, Tier};
use pmon_historian::timefmt::{self, TzFormat};
use pmon_proto::frame::{Frame, FrameRecord};
use pmon_proto::topic::{CircuitTopic, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tracing::{debug, info, warn};

use crate::{Defaults, Error, LiveArgs};

/// Largest MQTT packet accepted (a frame of 4096 records is ~200 KiB).
const MAX_PACKET: usize = 512 * 1024;
/// At most one fsync per file per this interval.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How far back from the end a torn tail is looked for (rows are < 300 bytes).
const TAIL: u64 = 64 * 1024;

/// The day of `ts_ms` in `zone`.
pub fn local_day(zone: &TimeZone, ts_ms: i64) -> Date {
    match Timestamp::from_millisecond(ts_ms) {
        Ok(ts) => zone.to_datetime(ts).date(),
        Err(_) => Date::constant(1970, 1, 1),
    }
}

/// Truncates `file` after its last `\n` when its last line is incomplete; returns the
/// sequence number of the last whole row (None for an empty file or a header only).
pub fn repair(file: &mut File, path: &Path) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut tail)?;
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        // No newline in the last 64 KiB: not a file of ours; leave it alone.
        None => return Ok(None),
    };
    if keep < len {
        warn!(
            file = %path.display(),
            dropped = len - keep,
            "incomplete last line (crash or power cut); truncated to the last whole row"
        );
        file.set_len(keep)?;
        file.sync_all()?;
    }
    let whole = &tail[..(keep - start) as usize];
    let body = whole.strip_suffix(b"\n").unwrap_or(whole);
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if start == 0 => body,
        None => return Ok(None),
    };
    Ok(std::str::from_utf8(last)
        .ok()
        .and_then(|line| line.split(',').nth(2))
        .and_then(|seq| seq.parse().ok()))
}

struct DayFile {
    day: Date,
    file: File,
    path: PathBuf,
    dirty: bool,
}

/// The open files and what was written.
pub struct Writer {
    dir: PathBuf,
    zone: TimeZone,
    tz: TzFormat,
    header: String,
    files: HashMap<String, DayFile>,
    last_seq: HashMap<String, u64>,
    last_sync: Instant,
    rows: u64,
}

impl Writer {
    /// Writes under `dir`, days and offsets of `zone`.
    pub fn new(dir: &Path, zone: TimeZone) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            tz: TzFormat::new(zone.clone()),
            zone,
            header: csv_header(&Quantity::ALL, Tier::Raw),
            files: HashMap::new(),
            last_seq: HashMap::new(),
            last_sync: Instant::now(),
            rows: 0,
        }
    }

    /// Rows written since start.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn path(&self, circuit: &str, day: Date) -> PathBuf {
        self.dir
            .join(circuit)
            .join(format!("{}.csv", day.strftime("%Y-%m-%d")))
    }

    /// The file of `circuit` on `day`, opened (and repaired) when needed; the previous
    /// day's file of the circuit is synced and closed.
    fn file(&mut self, circuit: &str, day: Date) -> io::Result<&mut DayFile> {
        let current = self.files.get(circuit).map(|f| f.day);
        if current != Some(day) {
            if let Some(old) = self.files.remove(circuit) {
                if old.dirty {
                    old.file.sync_data()?;
                }
            }
            let path = self.path(circuit, day);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            if let Some(seq) = repair(&mut file, &path)? {
                let last = self.last_seq.entry(circuit.to_string()).or_insert(seq);
                *last = (*last).max(seq);
            }
            debug!(file = %path.display(), "opened");
            self.files.insert(
                circuit.to_string(),
                DayFile {
                    day,
                    file,
                    path,
                    dirty: false,
                },
            );
        }
        self.files
            .get_mut(circuit)
            .ok_or_else(|| io::Error::other("file just opened is missing"))
    }

    /// Appends the records of one frame: one `write` per file touched.
    pub fn frame(&mut self, circuit: &str, records: &[FrameRecord]) -> io::Result<()> {
        let mut i = 0;
        while i < records.len() {
            let day = local_day(&self.zone, records[i].ts_ms);
            // Opening the day's file first learns the last row already in it (a restart).
            self.file(circuit, day)?;
            let mut rows = String::new();
            let mut newest = self.last_seq.get(circuit).copied();
            let mut count = 0;
            while i < records.len() && local_day(&self.zone, records[i].ts_ms) == day {
                let r = &records[i];
                i += 1;
                if newest.is_some_and(|n| r.seq <= n) {
                    continue;
                }
                write_raw_row(&mut rows, &mut self.tz, circuit, r, &Quantity::ALL);
                newest = Some(r.seq);
                count += 1;
            }
            if count == 0 {
                continue;
            }
            let header = self.header.clone();
            let f = self.file(circuit, day)?;
            if f.file.metadata()?.len() == 0 {
                rows.insert_str(0, &header);
            }
            // One write call: whole rows or (power cut) a torn tail repaired on start-up.
            f.file.write_all(rows.as_bytes())?;
            f.dirty = true;
            if let Some(n) = newest {
                self.last_seq.insert(circuit.to_string(), n);
            }
            self.rows += count;
        }
        Ok(())
    }

    /// fsyncs the files written since the last sync, at most once per [`SYNC_EVERY`]
    /// unless `force`.
    pub fn sync(&mut self, force: bool) -> io::Result<()> {
        if !force && self.last_sync.elapsed() < SYNC_EVERY {
            return Ok(());
        }
        for f in self.files.values_mut().filter(|f| f.dirty) {
            f.file
                .sync_data()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.path.display())))?;
            f.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn mqtt_options(url: &str, client_id: &str, defaults: &Defaults) -> Result<MqttOptions, Error> {
    if !(url.starts_with("mqtt://") || url.starts_with("tcp://")) {
        return Err(Error::Usage(format!(
            "--url {url:?}: only mqtt:// and tcp:// are supported"
        )));
    }
    if !pmon_proto::topic::valid_level(client_id) || client_id.contains('$') {
        return Err(Error::Usage(format!(
            "client id {client_id:?} must not contain '/', '+', '#' or '$'"
        )));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut options = MqttOptions::parse_url(format!("{url}{separator}client_id={client_id}"))
        .map_err(|e| Error::Usage(format!("--url {url:?}: {e}")))?;
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some((user, password)) = &defaults.mqtt_credentials {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// Runs `pmon export live` until SIGINT or SIGTERM.
pub fn run(args: &LiveArgs, defaults: &Defaults) -> Result<(), Error> {
    let zone = timefmt::time_zone(&args.tz).map_err(|e| Error::Usage(format!("--tz: {e}")))?;
    let topics = Topics::new(&defaults.site)
        .ok_or_else(|| Error::Usage(format!("invalid site name {:?}", defaults.site)))?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Error::Write(format!("cannot create {}: {e}", args.dir.display())))?;
    let url = args.url.as_deref().unwrap_or(&defaults.mqtt_url);
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("pmon-export-{}", defaults.site));
    let options = mqtt_options(url, &client_id, defaults)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Source(format!("cannot start the async runtime: {e}")))?;
    let mut writer = Writer::new(&args.dir, zone);
    runtime.block_on(live(options, topics, url, &mut writer))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn live(
    options: MqttOptions,
    topics: Topics,
    url: &str,
    writer: &mut Writer,
) -> Result<(), Error> {
    let filter = format!("{}/#", topics.all_circuits(CircuitTopic::Frame));
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let write_error = |e: io::Error| Error::Write(format!("cannot write the CSV files: {e}"));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(SYNC_EVERY);
    let mut connected_once = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => writer.sync(false).map_err(write_error)?,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if !connected_once {
                        info!(%url, %filter, "connected; writing rows");
                    }
                    connected_once = true;
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let topic = publish.topic.clone();
                    if let Some((circuit, CircuitTopic::Frame)) = topics.parse_circuit(&topic) {
                        match Frame::decode(&publish.payload) {
                            Ok(frame) if frame.circuit == circuit => {
                                writer.frame(circuit, &frame.records).map_err(write_error)?;
                            }
                            Ok(frame) => warn!(topic, circuit = frame.circuit, "frame for another circuit dropped"),
                            Err(error) => warn!(topic, %error, "malformed frame dropped"),
                        }
                    }
                    // Acknowledged once written (the rows survive a crash of this process).
                    let _ = client.try_ack(&publish);
                    writer.sync(false).map_err(write_error)?;
                }
                Ok(_) => {}
                Err(error) => {
                    if !connected_once {
                        return Err(Error::Source(format!(
                            "cannot reach the MQTT broker at {url}: {error}"
                        )));
                    }
                    warn!(%error, "MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    writer.sync(true).map_err(write_error)?;
    // Send the last acknowledgements and a clean disconnect.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                break;
            }
        }
    })
    .await;
    info!(rows = writer.rows(), "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_and_the_last_seq_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "time,circuit,seq\n2025,c,41\n2025,c,42\n2025,c,4").unwrap();
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(repair(&mut f, &path).unwrap(), Some(42));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "time,circuit,seq\n2025,c,41\n2025,c,42\n"
        );
        std::fs::write(&path, "time,circ").unwrap();
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(repair(&mut f, &path).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    fn rec(seq: u64, ts_ms: i64) -> FrameRecord {
        FrameRecord {
            seq,
            ts_ms,
            voltage_mv: 230_001,
            ..FrameRecord::default()
        }
    }

    #[test]
    fn a_redelivered_frame_is_not_written_twice_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_761_436_200_000;
        let first: Vec<_> = (1..=3).map(|s| rec(s, t + 200 * s as i64)).collect();
        let mut w = Writer::new(dir.path(), TimeZone::UTC);
        w.frame("c1", &first).unwrap();
        w.sync(true).unwrap();
        drop(w);
        // Restart: the broker redelivers the frame, then the next one arrives.
        let mut w = Writer::new(dir.path(), TimeZone::UTC);
        w.frame("c1", &first).unwrap();
        w.frame("c1", &[rec(4, t + 800)]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("c1/2025-10-25.csv")).unwrap();
        let seqs: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap())
            .collect();
        assert_eq!(seqs, ["1", "2", "3", "4"]);
        assert!(text.starts_with("time,circuit,seq,voltage,"));
        assert_eq!(text.lines().filter(|l| l.starts_with("time,")).count(), 1);
        assert!(text.contains("2025-10-25T23:50:00.200Z,c1,1,230.001,"));
    }

    #[test]
    fn days_follow_the_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2025-10-25T22:30Z is 00:30 on the 26th in Berlin (CEST, +02:00).
        let ts = 1_761_431_400_000;
        assert_eq!(local_day(&berlin, ts), Date::constant(2025, 10, 26));
        assert_eq!(local_day(&TimeZone::UTC, ts), Date::constant(2025, 10, 25));
    }
}
