//! The historian's storage: one SQLite file holding compressed columnar chunks of raw
//! records and compressed runs of rollup buckets. The format is specified in
//! `docs/historian-storage.md`.
//!
//! Writing is two-step: [`Store::ingest`] stages records in memory (deduplicated by circuit
//! and seq), [`Store::commit`] writes everything staged in one transaction as small chunks,
//! so a commit costs about as much as the new data. [`Store::maintain`], called from the
//! background, merges small chunks into full ones, computes rollups and applies retention,
//! in small steps.

mod chunk;
mod codec;
mod maint;
mod rc;
mod rollup;
mod types;

use std::cell::RefCell;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub use pmon_proto::frame::FrameRecord;
pub use types::*;

use rollup::Agg;

/// Most records in one chunk. Small enough that streaming many circuits side by side
/// keeps one decoded chunk each in little memory; large enough to compress well.
pub const CHUNK_RECORDS: usize = 2048;
/// Longest time one chunk spans (slow circuits): retention and range reads stay precise.
pub const CHUNK_SPAN_MS: i64 = 3_600_000;
/// Most buckets in one rollup run.
pub const RUN_BUCKETS: usize = 1024;
/// The store format this build writes. It also reads (and, opened for writing, upgrades)
/// format 1, which had no `expired` table.
pub const FORMAT_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS circuit (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  first_seq INTEGER, last_seq INTEGER, first_ms INTEGER, last_ms INTEGER,
  records INTEGER NOT NULL DEFAULT 0,
  dirty_ms INTEGER
);
CREATE TABLE IF NOT EXISTS chunk (
  id INTEGER PRIMARY KEY,
  circuit INTEGER NOT NULL,
  first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
  count INTEGER NOT NULL,
  sealed INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chunk_seq ON chunk (circuit, first_seq);
CREATE INDEX IF NOT EXISTS chunk_time ON chunk (circuit, last_ms, first_ms);
CREATE INDEX IF NOT EXISTS chunk_open ON chunk (circuit, first_seq) WHERE sealed = 0;
CREATE TABLE IF NOT EXISTS rollup (
  id INTEGER PRIMARY KEY,
  circuit INTEGER NOT NULL,
  tier INTEGER NOT NULL,
  first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
  buckets INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rollup_time ON rollup (circuit, tier, first_ms);
CREATE INDEX IF NOT EXISTS rollup_small ON rollup (circuit, tier, first_ms) WHERE buckets < 1024;
CREATE TABLE IF NOT EXISTS watermark (
  circuit INTEGER NOT NULL, tier INTEGER NOT NULL, done_ms INTEGER NOT NULL,
  PRIMARY KEY (circuit, tier)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expired (
  circuit INTEGER NOT NULL, tier INTEGER NOT NULL, until_ms INTEGER NOT NULL,
  seq INTEGER, ts_ms INTEGER, import_mwh INTEGER, export_mwh INTEGER,
  PRIMARY KEY (circuit, tier)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gap (
  circuit INTEGER NOT NULL, after_seq INTEGER NOT NULL, before_seq INTEGER NOT NULL,
  from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL,
  PRIMARY KEY (circuit, after_seq)
) WITHOUT ROWID;
";

/// Per-circuit state the writer keeps in memory.
#[derive(Debug, Clone)]
struct CircuitState {
    id: i64,
    /// Newest stored (committed) record.
    last: Option<(u64, i64)>,
    /// Retention deleted every record it may have had with a seq at or below this one: an
    /// older seq that is not stored cannot be told from a duplicate.
    cut_seq: Option<u64>,
    /// Records older than this are folded into the rollups at commit: the tiers they would
    /// be recomputed from are no longer complete there ([`Store::fold_below`]).
    fold_below: Option<i64>,
}

/// What retention has deleted of one circuit's tier (the `expired` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Expiry {
    /// The tier is complete from here on: raw records with `ts_ms >= until_ms`, buckets
    /// starting at or after it. Before it, retention may have deleted some.
    pub until_ms: i64,
    /// Raw: every seq at or below this one may have been deleted.
    pub cut_seq: Option<u64>,
    /// Raw: the newest deleted record (seq, time and counters only), when known: the
    /// predecessor of the next record for energy deltas.
    pub cut: Option<FrameRecord>,
}

#[derive(Debug, Default)]
struct Staged {
    records: BTreeMap<u64, FrameRecord>,
    /// Newest record seen (stored or staged): where gaps are measured from.
    newest: Option<(u64, i64)>,
    gaps: Vec<Gap>,
    /// Staged records older than a record seen before them: they may fill gaps.
    late: Vec<(u64, i64)>,
}

/// The store. One writer per file; any number of read-only openers.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// Format of the file (1 only for a format-1 file opened read-only).
    format: i64,
    options: StoreOptions,
    circuits: HashMap<String, CircuitState>,
    staged: BTreeMap<String, Staged>,
    staged_count: usize,
    /// The last decoded chunk's seqs, for duplicate checks: (chunk id, seqs).
    seq_cache: RefCell<Option<(i64, Vec<u64>)>>,
}

// The writer moves between threads (e.g. into `spawn_blocking`).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Store>();
};

/// A read transaction: one consistent snapshot for the statements of one query, even
/// while another connection writes and merges chunks. Nested ones share the outer one.
struct ReadTx<'a> {
    conn: &'a Connection,
    owner: bool,
}

impl<'a> ReadTx<'a> {
    fn begin(conn: &'a Connection) -> Result<ReadTx<'a>, StoreError> {
        let owner = conn.is_autocommit();
        if owner {
            conn.execute_batch("BEGIN DEFERRED")?;
        }
        Ok(ReadTx { conn, owner })
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        if self.owner {
            // A read transaction has nothing to lose; failing to end it only keeps the
            // snapshot until the connection's next statement.
            let _ = self.conn.execute_batch("COMMIT");
        }
    }
}

fn seq_i(s: u64) -> i64 {
    s as i64
}

/// The smallest multiple of `d` at or after `t`.
fn ceil_to(t: i64, d: i64) -> i64 {
    t.div_euclid(d) * d + if t.rem_euclid(d) == 0 { 0 } else { d }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl Store {
    /// Opens (creating if needed) a store for writing: WAL, `synchronous=NORMAL`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "normal")?;
        conn.pragma_update(None, "cache_size", -8000)?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='format'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?1)",
                    params![FORMAT_VERSION],
                )?;
            }
            Some(1) => maint::upgrade_v1(&conn)?,
            Some(FORMAT_VERSION) => {}
            Some(v) => return Err(StoreError::Version(v)),
        }
        let mut store = Store::with_conn(conn, path, false, FORMAT_VERSION, options);
        store.load_circuits()?;
        Ok(store)
    }

    /// Opens an existing store read-only: a live file another process writes, or a backup.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='format'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let format = match version {
            Some(v @ (1 | FORMAT_VERSION)) => v,
            Some(v) => return Err(StoreError::Version(v)),
            None => return Err(corrupt("not a pmon historian store (no format version)")),
        };
        Ok(Store::with_conn(
            conn,
            path,
            true,
            format,
            StoreOptions::default(),
        ))
    }

    fn with_conn(
        conn: Connection,
        path: &Path,
        read_only: bool,
        format: i64,
        options: StoreOptions,
    ) -> Store {
        Store {
            conn,
            path: path.to_owned(),
            read_only,
            format,
            options,
            circuits: HashMap::new(),
            staged: BTreeMap::new(),
            staged_count: 0,
            seq_cache: RefCell::new(None),
        }
    }

    fn load_circuits(&mut self) -> Result<(), StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, last_seq, last_ms FROM circuit")?;
        let rows = st.query_map([], |r| {
            let last: Option<i64> = r.get(2)?;
            let last_ms: Option<i64> = r.get(3)?;
            Ok((
                r.get::<_, String>(1)?,
                CircuitState {
                    id: r.get(0)?,
                    last: last.zip(last_ms).map(|(s, t)| (s as u64, t)),
                    cut_seq: None,
                    fold_below: None,
                },
            ))
        })?;
        let mut loaded = Vec::new();
        for row in rows {
            loaded.push(row?);
        }
        drop(st);
        for (name, mut state) in loaded {
            self.load_expiry(&mut state)?;
            self.circuits.insert(name, state);
        }
        Ok(())
    }

    /// Reads what retention has deleted into a circuit's in-memory state.
    fn load_expiry(&self, state: &mut CircuitState) -> Result<(), StoreError> {
        state.cut_seq = self.expiry(state.id, Tier::Raw)?.and_then(|e| e.cut_seq);
        state.fold_below = self.fold_below(state.id)?;
        Ok(())
    }

    /// Refreshes the in-memory state of circuit `id` after retention deleted some of it.
    fn reload_expiry(&mut self, id: i64) -> Result<(), StoreError> {
        let Some(mut state) = self.circuits.values().find(|c| c.id == id).cloned() else {
            return Ok(());
        };
        self.load_expiry(&mut state)?;
        for c in self.circuits.values_mut() {
            if c.id == id {
                *c = state;
                break;
            }
        }
        Ok(())
    }

    /// What retention has deleted of a circuit's tier, `None` when nothing. A format-1 file
    /// (read-only) has no record of it: it is inferred from what is left.
    fn expiry(&self, id: i64, tier: Tier) -> Result<Option<Expiry>, StoreError> {
        if self.format == 1 {
            return Ok(maint::infer_expiry(&self.conn, id)?
                .into_iter()
                .find(|(t, _)| *t == tier)
                .map(|(_, e)| e));
        }
        Ok(self
            .conn
            .prepare_cached(
                "SELECT until_ms, seq, ts_ms, import_mwh, export_mwh FROM expired \
                 WHERE circuit=?1 AND tier=?2",
            )?
            .query_row(params![id, tier.index()], |r| {
                let seq: Option<i64> = r.get(1)?;
                let ts: Option<i64> = r.get(2)?;
                let counters: (Option<i64>, Option<i64>) = (r.get(3)?, r.get(4)?);
                let cut = match (seq, ts, counters.0, counters.1) {
                    (Some(seq), Some(ts_ms), Some(imp), Some(exp)) => Some(FrameRecord {
                        seq: seq as u64,
                        ts_ms,
                        energy_import_mwh: imp as u64,
                        energy_export_mwh: exp as u64,
                        ..FrameRecord::default()
                    }),
                    _ => None,
                };
                Ok(Expiry {
                    until_ms: r.get(0)?,
                    cut_seq: seq.map(|s| s as u64),
                    cut,
                })
            })
            .optional()?)
    }

    /// Where the rollups of circuit `id` can no longer be recomputed: before the first 1m
    /// bucket whose raw records are all stored, or before the 1m tier's own retention
    /// cut-off. Records older than this are folded into the stored buckets instead.
    fn fold_below(&self, id: i64) -> Result<Option<i64>, StoreError> {
        let raw = self
            .expiry(id, Tier::Raw)?
            .map(|e| ceil_to(e.until_ms, 60_000));
        let minute = self.expiry(id, Tier::Minute)?.map(|e| e.until_ms);
        Ok(raw.max(minute))
    }

    fn circuit_id(&self, name: &str) -> Result<i64, StoreError> {
        if !self.read_only {
            if let Some(c) = self.circuits.get(name) {
                return Ok(c.id);
            }
        }
        self.conn
            .query_row("SELECT id FROM circuit WHERE name=?1", params![name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::UnknownCircuit(name.to_owned()))
    }

    fn check_range(from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::ReversedRange { from_ms, to_ms });
        }
        Ok(())
    }

    /// Is `seq` stored for circuit `id`? Decodes the chunk whose seq range holds it (cached).
    fn is_stored(&self, id: i64, seq: u64) -> Result<bool, StoreError> {
        let row: Option<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT id, last_seq FROM chunk WHERE circuit=?1 AND first_seq<=?2 \
                 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row(params![id, seq_i(seq)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((chunk_id, last_seq)) = row else {
            return Ok(false);
        };
        if seq_i(seq) > last_seq {
            return Ok(false);
        }
        let mut cache = self.seq_cache.borrow_mut();
        if cache.as_ref().map(|c| c.0) != Some(chunk_id) {
            let recs = self.chunk_records(chunk_id)?;
            *cache = Some((chunk_id, recs.iter().map(|r| r.seq).collect()));
        }
        Ok(cache
            .as_ref()
            .is_some_and(|(_, seqs)| seqs.binary_search(&seq).is_ok()))
    }

    fn chunk_records(&self, chunk_id: i64) -> Result<Vec<FrameRecord>, StoreError> {
        let blob: Vec<u8> = self
            .conn
            .prepare_cached("SELECT data FROM chunk WHERE id=?1")?
            .query_row(params![chunk_id], |r| r.get(0))?;
        chunk::decode(&blob).map_err(|e| corrupt(format!("chunk {chunk_id}: {}", e.0)))
    }

    /// Stages records (in memory), idempotent by (circuit, seq): a record already stored or
    /// staged is a duplicate and ignored. Gaps in seq are recorded as gaps, not bridged.
    pub fn ingest(
        &mut self,
        circuit: &str,
        records: &[FrameRecord],
    ) -> Result<IngestOutcome, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        if circuit.is_empty() || circuit.len() > 255 {
            return Err(StoreError::InvalidCircuit(circuit.to_owned()));
        }
        let state = self.circuits.get(circuit).cloned();
        let stored_last = state.as_ref().and_then(|s| s.last);
        let id = state.as_ref().map(|s| s.id);
        let cut_seq = state.as_ref().and_then(|s| s.cut_seq);
        let mut out = IngestOutcome::default();
        let mut staged = self.staged.remove(circuit).unwrap_or_default();
        if staged.newest.is_none() {
            staged.newest = stored_last;
        }
        let result = (|| {
            for r in records {
                if r.seq > i64::MAX as u64 {
                    return Err(StoreError::InvalidRecord(format!(
                        "seq {} is beyond 2^63",
                        r.seq
                    )));
                }
                if staged.records.contains_key(&r.seq) {
                    out.duplicates += 1;
                    continue;
                }
                let newer_than_stored = stored_last.is_none_or(|(s, _)| r.seq > s);
                if !newer_than_stored {
                    if let Some(id) = id {
                        // At or below what retention deleted, a seq that is not stored may
                        // have been: it cannot be told from a duplicate, and counting it
                        // again would corrupt the rollups.
                        if self.is_stored(id, r.seq)? || cut_seq.is_some_and(|c| r.seq <= c) {
                            out.duplicates += 1;
                            continue;
                        }
                    }
                }
                match staged.newest {
                    Some((s, t)) if r.seq > s => {
                        if r.seq > s + 1 {
                            out.gaps += 1;
                            staged.gaps.push(Gap {
                                circuit: circuit.to_owned(),
                                after_seq: s,
                                before_seq: r.seq,
                                from_ms: t,
                                to_ms: r.ts_ms,
                            });
                        }
                        staged.newest = Some((r.seq, r.ts_ms));
                    }
                    Some(_) => staged.late.push((r.seq, r.ts_ms)),
                    None => staged.newest = Some((r.seq, r.ts_ms)),
                }
                staged.records.insert(r.seq, *r);
                out.inserted += 1;
            }
            Ok(())
        })();
        self.staged_count += out.inserted;
        self.staged.insert(circuit.to_owned(), staged);
        result.map(|()| out)
    }

    /// Records staged and not yet committed.
    pub fn staged(&self) -> usize {
        self.staged_count
    }

    /// Makes everything staged durable in one transaction. Returns when committed.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        if self.staged.is_empty() {
            return Ok(());
        }
        self.seq_cache.replace(None);
        let staged = std::mem::take(&mut self.staged);
        let tx = self.conn.unchecked_transaction()?;
        let mut new_states: Vec<(String, CircuitState)> = Vec::new();
        let res = (|| -> Result<(), StoreError> {
            for (name, st) in &staged {
                if st.records.is_empty() {
                    continue;
                }
                let id = match self.circuits.get(name) {
                    Some(c) => c.id,
                    None => {
                        tx.execute("INSERT INTO circuit (name) VALUES (?1)", params![name])?;
                        tx.last_insert_rowid()
                    }
                };
                let state = self.circuits.get(name);
                let stored_last = state.and_then(|c| c.last);
                let fold_below = state.and_then(|c| c.fold_below);
                let recs: Vec<FrameRecord> = st.records.values().copied().collect();
                let split = recs.partition_point(|r| stored_last.is_none_or(|(s, _)| r.seq <= s));
                let (late, fresh) = recs.split_at(split);
                insert_pieces(&tx, id, fresh)?;
                if !late.is_empty() {
                    merge_late(&tx, id, late)?;
                }
                for g in &st.gaps {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO gap (circuit, after_seq, before_seq, from_ms, to_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        id,
                        seq_i(g.after_seq),
                        seq_i(g.before_seq),
                        g.from_ms,
                        g.to_ms
                    ])?;
                }
                for &(seq, ts) in &st.late {
                    fill_gap(&tx, id, seq, ts)?;
                }
                // Records where the rollups cannot be recomputed (retention deleted what they
                // would be recomputed from) are folded into them now; the rest mark the
                // circuit dirty from their oldest, for `maintain` to recompute from raw.
                let below: Vec<FrameRecord> = match fold_below {
                    Some(f) => recs.iter().filter(|r| r.ts_ms < f).copied().collect(),
                    None => Vec::new(),
                };
                if !below.is_empty() {
                    maint::fold(self, &tx, id, &below, &st.records)?;
                }
                let dirty = recs
                    .iter()
                    .filter(|r| fold_below.is_none_or(|f| r.ts_ms >= f))
                    .map(|r| r.ts_ms)
                    .min();
                let first = recs[0];
                let last = recs[recs.len() - 1];
                let min_ts = recs.iter().map(|r| r.ts_ms).min().unwrap_or(first.ts_ms);
                let new_last = match stored_last {
                    Some((s, t)) if s >= last.seq => (s, t),
                    _ => (last.seq, last.ts_ms),
                };
                tx.prepare_cached(
                    "UPDATE circuit SET \
                       first_seq = MIN(COALESCE(first_seq, ?2), ?2), \
                       first_ms = MIN(COALESCE(first_ms, ?3), ?3), \
                       last_seq = ?4, last_ms = ?5, records = records + ?6, \
                       dirty_ms = CASE WHEN ?7 IS NULL THEN dirty_ms \
                                       ELSE MIN(COALESCE(dirty_ms, ?7), ?7) END \
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    seq_i(first.seq),
                    min_ts,
                    seq_i(new_last.0),
                    new_last.1,
                    recs.len() as i64,
                    dirty
                ])?;
                new_states.push((
                    name.clone(),
                    CircuitState {
                        id,
                        last: Some(new_last),
                        cut_seq: state.and_then(|c| c.cut_seq),
                        fold_below,
                    },
                ));
            }
            Ok(())
        })();
        match res.and_then(|()| tx.commit().map_err(StoreError::from)) {
            Ok(()) => {
                for (name, s) in new_states {
                    self.circuits.insert(name, s);
                }
                self.staged_count = 0;
                Ok(())
            }
            Err(e) => {
                // Nothing was written: keep the records staged so a retry can commit them.
                self.staged = staged;
                Err(e)
            }
        }
    }

    /// Every circuit with its time span, raw record count and coverage.
    pub fn circuits(&self) -> Result<Vec<CircuitSummary>, StoreError> {
        let _tx = ReadTx::begin(&self.conn)?;
        // `first_ms` is kept as the oldest stored record's time by commit and retention.
        let mut st = self.conn.prepare_cached(
            "SELECT c.name, c.first_ms, c.last_ms, c.records, c.first_seq, c.last_seq, \
               (SELECT MIN(first_ms) FROM rollup r WHERE r.circuit = c.id) \
             FROM circuit c WHERE c.last_ms IS NOT NULL ORDER BY c.name",
        )?;
        let rows = st.query_map([], |r| {
            let first_ms: i64 = r.get(1)?;
            let records: i64 = r.get(3)?;
            let s0: i64 = r.get(4)?;
            let s1: i64 = r.get(5)?;
            let rollup_first: Option<i64> = r.get(6)?;
            let expected = (s1 - s0 + 1).max(1) as f64;
            Ok(CircuitSummary {
                id: r.get(0)?,
                first_ms,
                last_ms: r.get(2)?,
                history_first_ms: rollup_first.map_or(first_ms, |f| f.min(first_ms)),
                records: records.max(0) as u64,
                coverage: if records > 0 {
                    (records as f64 / expected).min(1.0)
                } else {
                    0.0
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of the chunks of circuit `id` that may hold records in `[from, to)`, by seq.
    fn chunk_ids(&self, id: i64, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, first_seq FROM chunk WHERE circuit=?1 AND last_ms>=?2 AND first_ms<?3",
        )?;
        let mut v: Vec<(i64, i64)> = st
            .query_map(params![id, from_ms, to_ms], |r| Ok((r.get(1)?, r.get(0)?)))?
            .collect::<Result<_, _>>()?;
        v.sort_unstable();
        Ok(v)
    }

    /// Every raw record of circuit `id` in `[from, to)`, by seq.
    fn records_in(
        &self,
        id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<FrameRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, cid) in self.chunk_ids(id, from_ms, to_ms)? {
            out.extend(
                self.chunk_records(cid)?
                    .into_iter()
                    .filter(|r| r.ts_ms >= from_ms && r.ts_ms < to_ms),
            );
        }
        Ok(out)
    }

    /// The newest record of circuit `id` with `ts < before_ms`.
    fn record_before(&self, id: i64, before_ms: i64) -> Result<Option<FrameRecord>, StoreError> {
        // The newest chunk ending before, and the first one straddling `before_ms`: both
        // index seeks on (circuit, last_ms, first_ms).
        let mut ids: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM chunk WHERE circuit=?1 AND last_ms<?2 ORDER BY last_ms DESC LIMIT 1",
            )?
            .query_map(params![id, before_ms], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.extend(
            self.conn
                .prepare_cached(
                    "SELECT id FROM chunk WHERE circuit=?1 AND last_ms>=?2 AND first_ms<?2 \
                     ORDER BY last_ms LIMIT 1",
                )?
                .query_map(params![id, before_ms], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?,
        );
        let mut best: Option<FrameRecord> = None;
        for cid in ids {
            for r in self.chunk_records(cid)? {
                if r.ts_ms < before_ms && best.is_none_or(|b| r.seq > b.seq) {
                    best = Some(r);
                }
            }
        }
        // Retention may have deleted it: the newest deleted record then stands in.
        if let Some(cut) = self.expiry(id, Tier::Raw)?.and_then(|e| e.cut) {
            if cut.ts_ms < before_ms && best.is_none_or(|b| cut.seq > b.seq) {
                best = Some(cut);
            }
        }
        Ok(best)
    }

    /// Raw records of one circuit in `[from_ms, to_ms)`, `seq > after_seq`, at most `limit`,
    /// ordered by seq (paging: pass the last seq of a page as `after_seq` of the next).
    pub fn raw_page(
        &self,
        circuit: &str,
        from_ms: i64,
        to_ms: i64,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<FrameRecord>, StoreError> {
        Self::check_range(from_ms, to_ms)?;
        let _tx = ReadTx::begin(&self.conn)?;
        let id = self.circuit_id(circuit)?;
        let mut out = Vec::new();
        let after = after_seq.map(seq_i);
        for (first_seq, cid) in self.chunk_ids(id, from_ms, to_ms)? {
            if out.len() >= limit {
                break;
            }
            if let Some(a) = after {
                let last_seq: i64 = self
                    .conn
                    .prepare_cached("SELECT last_seq FROM chunk WHERE id=?1")?
                    .query_row(params![cid], |r| r.get(0))?;
                if last_seq <= a {
                    continue;
                }
            }
            let _ = first_seq;
            for r in self.chunk_records(cid)? {
                if r.ts_ms >= from_ms
                    && r.ts_ms < to_ms
                    && after.is_none_or(|a| seq_i(r.seq) > a)
                    && out.len() < limit
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Streams raw records of several circuits (all when empty) in `[from, to)` ordered by
    /// (time, circuit), decoding one chunk per circuit at a time: memory stays flat for
    /// any range.
    #[allow(clippy::type_complexity)]
    pub fn raw_stream<'a>(
        &'a self,
        circuits: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Box<dyn Iterator<Item = Result<(String, FrameRecord), StoreError>> + 'a>, StoreError>
    {
        Self::check_range(from_ms, to_ms)?;
        let tx = ReadTx::begin(&self.conn)?;
        let mut list: Vec<(String, i64)> = Vec::new();
        if circuits.is_empty() {
            let mut st = self
                .conn
                .prepare_cached("SELECT name, id FROM circuit ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                list.push(row?);
            }
        } else {
            for c in circuits {
                list.push((c.clone(), self.circuit_id(c)?));
            }
            list.sort();
            list.dedup();
        }
        let mut stream = RawStream {
            _tx: tx,
            store: self,
            from_ms,
            to_ms,
            cursors: Vec::new(),
            heap: BinaryHeap::new(),
            failed: false,
            pending_error: None,
        };
        for (name, id) in list {
            let idx = stream.cursors.len();
            stream.cursors.push(Cursor {
                name,
                id,
                after_seq: None,
                buf: Vec::new(),
                pos: 0,
                done: false,
            });
            stream.refill(idx)?;
        }
        Ok(Box::new(stream))
    }

    /// Watermark of a rollup tier for circuit `id`: buckets starting before it are final
    /// and stored. `None` when the tier has not been computed yet.
    fn watermark(&self, id: i64, tier: Tier) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT done_ms FROM watermark WHERE circuit=?1 AND tier=?2")?
            .query_row(params![id, tier.index()], |r| r.get(0))
            .optional()?)
    }

    /// Stored buckets of a tier starting in `[from, to)`.
    fn stored_buckets(
        &self,
        id: i64,
        tier: Tier,
        from: i64,
        to: i64,
        q: Option<usize>,
    ) -> Result<Vec<Agg>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, data FROM rollup WHERE circuit=?1 AND tier=?2 AND last_ms>=?3 AND first_ms<?4 \
             ORDER BY first_ms",
        )?;
        let rows = st.query_map(params![id, tier.index(), from, to], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rid, blob) = row?;
            let run = rollup::decode_run_some(&blob, q)
                .map_err(|e| corrupt(format!("rollup {rid}: {}", e.0)))?;
            out.extend(run.into_iter().filter(|a| a.start >= from && a.start < to));
        }
        Ok(out)
    }

    /// Buckets of `tier` starting in `[from, to)` (bucket-aligned): stored ones up to the
    /// watermark, the rest computed from the next finer tier (raw for 1m).
    fn buckets(
        &self,
        id: i64,
        tier: Tier,
        from: i64,
        to: i64,
        q: Option<usize>,
    ) -> Result<Vec<Agg>, StoreError> {
        let Some(dur) = tier.duration_ms() else {
            return Err(corrupt("raw has no buckets"));
        };
        let from = from.div_euclid(dur) * dur;
        let dirty: Option<i64> = self
            .conn
            .prepare_cached("SELECT dirty_ms FROM circuit WHERE id=?1")?
            .query_row(params![id], |r| r.get(0))?;
        let wm = match (self.watermark(id, tier)?, dirty) {
            (Some(w), Some(d)) => Some(w.min(d.div_euclid(dur) * dur)),
            (w, _) => w,
        };
        let mut out = match wm {
            Some(w) if w > from => self.stored_buckets(id, tier, from, to.min(w), q)?,
            _ => Vec::new(),
        };
        let tail_from = wm.map_or(from, |w| w.max(from));
        if tail_from < to {
            let tail = match tier.finer() {
                Some(finer) => rollup::regroup(&self.buckets(id, finer, tail_from, to, q)?, dur),
                None => {
                    let recs = self.records_in(id, tail_from, to)?;
                    let prev = match recs.first() {
                        Some(_) => self.record_before(id, tail_from)?,
                        None => None,
                    };
                    rollup::aggregate_records(&recs, prev, dur, tail_from, to)
                }
            };
            out.extend(tail);
        }
        Ok(out)
    }

    /// Points of one circuit and quantity in `[from, to)`: rollup buckets of `tier` (a
    /// bucket belongs to the range when it starts in it), or raw records when `tier` is
    /// [`Tier::Raw`] (min = max = mean, count 1, coverage 1).
    pub fn series(
        &self,
        circuit: &str,
        quantity: Quantity,
        tier: Tier,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Point>, StoreError> {
        Self::check_range(from_ms, to_ms)?;
        let _tx = ReadTx::begin(&self.conn)?;
        let id = self.circuit_id(circuit)?;
        let scale = quantity.scale();
        let Some(dur) = tier.duration_ms() else {
            let col = chunk::QUANTITY_COLUMN[quantity.index()];
            let mut out = Vec::new();
            for (_, cid) in self.chunk_ids(id, from_ms, to_ms)? {
                let blob: Vec<u8> = self
                    .conn
                    .prepare_cached("SELECT data FROM chunk WHERE id=?1")?
                    .query_row(params![cid], |r| r.get(0))?;
                let rows = chunk::decode_column(&blob, col)
                    .map_err(|e| corrupt(format!("chunk {cid}: {}", e.0)))?;
                out.extend(
                    rows.into_iter()
                        .filter(|r| r.1 >= from_ms && r.1 < to_ms)
                        .map(|(_, ts, v)| {
                            let v = v as f64 * scale;
                            Point {
                                ts_ms: ts,
                                min: v,
                                max: v,
                                mean: v,
                                count: 1,
                                coverage: 1.0,
                            }
                        }),
                );
            }
            return Ok(out);
        };
        let first = from_ms.div_euclid(dur) * dur;
        let first = if first < from_ms { first + dur } else { first };
        let qi = quantity.index();
        Ok(self
            .buckets(id, tier, first, to_ms, Some(qi))?
            .iter()
            .filter(|a| a.count > 0 && a.start >= from_ms)
            .map(|a| Point {
                ts_ms: a.start,
                min: a.min[qi] as f64 * scale,
                max: a.max[qi] as f64 * scale,
                mean: a.sum[qi] as f64 / a.count as f64 * scale,
                count: a.count as u64,
                coverage: (a.dur_us as f64 / (dur as f64 * 1000.0)).min(1.0),
            })
            .collect())
    }

    /// The FINEST tier whose point count over `[from, to)` is at most `max_points` (Day
    /// when none is). Raw counts 5 points a second.
    pub fn choose_tier(from_ms: i64, to_ms: i64, max_points: usize) -> Tier {
        let span = (to_ms as i128 - from_ms as i128).max(0) as u128;
        for t in Tier::ALL {
            let b = t.duration_ms().unwrap_or(200) as u128;
            if span.div_ceil(b) <= max_points as u128 {
                return t;
            }
        }
        Tier::Day
    }

    /// Energy per local day / week (from Monday) / month in time zone `tz` (IANA name),
    /// from counter differences: the sum of every record's counter increase over the record
    /// before it, so a period's energy is its counters' difference, a slave restart (the
    /// acquisition keeps totals going) changes nothing, and a counter that does go down is
    /// taken as a reset from zero, never as negative energy. Periods overlapping
    /// `[from, to)` are returned whole, oldest first, with their local start as `start_ms`;
    /// DST days have 23 or 25 hours.
    pub fn energy(
        &self,
        circuit: &str,
        period: Period,
        tz: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<EnergyBucket>, StoreError> {
        Self::check_range(from_ms, to_ms)?;
        let _tx = ReadTx::begin(&self.conn)?;
        let id = self.circuit_id(circuit)?;
        let zone =
            jiff::tz::TimeZone::get(tz).map_err(|_| StoreError::UnknownTimeZone(tz.to_owned()))?;
        let bounds = period_bounds(&zone, period, from_ms, to_ms)?;
        let (Some(&first), Some(&last)) = (bounds.first(), bounds.last()) else {
            return Ok(Vec::new());
        };
        // The coarsest tier whose buckets every boundary falls on.
        let tier = [Tier::Hour, Tier::Quarter, Tier::Minute]
            .into_iter()
            .find(|t| {
                let d = t.duration_ms().unwrap_or(1);
                bounds.iter().all(|b| b.rem_euclid(d) == 0)
            });
        let mut out: Vec<EnergyBucket> = bounds
            .windows(2)
            .map(|w| EnergyBucket {
                start_ms: w[0],
                import_kwh: 0.0,
                export_kwh: 0.0,
            })
            .collect();
        let mut sums = vec![(0i64, 0i64); out.len()];
        let mut add = |ts: i64, imp: i64, exp: i64| {
            let i = bounds.partition_point(|&b| b <= ts);
            if i >= 1 && i < bounds.len() {
                sums[i - 1].0 += imp;
                sums[i - 1].1 += exp;
            }
        };
        match tier {
            Some(t) => {
                for a in self.buckets(id, t, first, last, None)? {
                    add(a.start, a.e_imp, a.e_exp);
                }
            }
            None => {
                let recs = self.records_in(id, first, last)?;
                let mut prev = match recs.first() {
                    Some(_) => self.record_before(id, first)?,
                    None => None,
                };
                for r in &recs {
                    if let Some(p) = prev {
                        add(
                            r.ts_ms,
                            rollup::counter_delta(p.energy_import_mwh, r.energy_import_mwh),
                            rollup::counter_delta(p.energy_export_mwh, r.energy_export_mwh),
                        );
                    }
                    prev = Some(*r);
                }
            }
        }
        for (b, (imp, exp)) in out.iter_mut().zip(sums) {
            b.import_kwh = imp as f64 / 1e6;
            b.export_kwh = exp as f64 / 1e6;
        }
        Ok(out)
    }

    /// Sequence gaps of one circuit overlapping `[from, to)`, by seq.
    pub fn gaps(&self, circuit: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, StoreError> {
        Self::check_range(from_ms, to_ms)?;
        let id = self.circuit_id(circuit)?;
        let mut st = self.conn.prepare_cached(
            "SELECT after_seq, before_seq, from_ms, to_ms FROM gap \
             WHERE circuit=?1 AND to_ms>=?2 AND from_ms<?3 ORDER BY after_seq",
        )?;
        let rows = st.query_map(params![id, from_ms, to_ms], |r| {
            Ok(Gap {
                circuit: circuit.to_owned(),
                after_seq: r.get::<_, i64>(0)? as u64,
                before_seq: r.get::<_, i64>(1)? as u64,
                from_ms: r.get(2)?,
                to_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Incremental background maintenance: merges small chunks, computes rollups for newly
    /// committed data, applies retention. Does at most about `budget` units of work (one
    /// unit: one circuit's chunk merge, one circuit-tier rollup step of at most a few hours
    /// of data, or one retention batch), each in its own short transaction, so ingest is
    /// never blocked long. Returns the work done; 0 means idle.
    pub fn maintain(&mut self, now_ms: i64, budget: usize) -> Result<usize, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.seq_cache.replace(None);
        maint::maintain(self, now_ms, budget)
    }

    /// Verifies the database: SQLite's integrity check, then every chunk and rollup run
    /// (decodable, checksums, seq order, counts and bounds as indexed, no overlaps) and
    /// rollups against the data below them (1m against raw for each circuit's newest day,
    /// each coarser tier against the tier below).
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let _tx = ReadTx::begin(&self.conn)?;
        maint::check(self)
    }

    /// Bytes on disk: the database file plus its WAL.
    pub fn file_size(&self) -> Result<u64, StoreError> {
        let mut n = std::fs::metadata(&self.path)?.len();
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if let Ok(m) = std::fs::metadata(PathBuf::from(wal)) {
            n += m.len();
        }
        Ok(n)
    }

    /// Bytes used per table and index (SQLite's `dbstat`), for the benchmark.
    pub fn space_by_table(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checkpoints the WAL into the database file and truncates it (for backups, and for
    /// measuring the file size).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Rewrites the file without free pages (`VACUUM`).
    pub fn vacuum(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }
}

impl Tier {
    /// The next finer rollup tier that this one is computed from (`None` for 1m, from raw).
    fn finer(&self) -> Option<Tier> {
        match self {
            Tier::Raw | Tier::Minute => None,
            Tier::Quarter => Some(Tier::Minute),
            Tier::Hour => Some(Tier::Quarter),
            Tier::Day => Some(Tier::Hour),
        }
    }
}

/// Local period boundaries (as UTC ms) covering `[from, to)`.
fn period_bounds(
    zone: &jiff::tz::TimeZone,
    period: Period,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    use jiff::civil::Date;
    let bad = |e: jiff::Error| StoreError::InvalidRecord(format!("time out of range: {e}"));
    let ts = jiff::Timestamp::from_millisecond(from_ms).map_err(bad)?;
    let day = ts.to_zoned_datetime(zone.clone()).date();
    let mut start: Date = match period {
        Period::Day => day,
        Period::Week => day
            .checked_sub(jiff::Span::new().days(day.weekday().to_monday_zero_offset() as i64))
            .map_err(bad)?,
        Period::Month => day.first_of_month(),
    };
    let local_ms = |d: Date| -> Result<i64, StoreError> {
        Ok(d.to_zoned_datetime(zone.clone())
            .map_err(bad)?
            .timestamp()
            .as_millisecond())
    };
    let mut out = vec![local_ms(start)?];
    while *out.last().unwrap_or(&to_ms) < to_ms {
        start = match period {
            Period::Day => start.tomorrow().map_err(bad)?,
            Period::Week => start.checked_add(jiff::Span::new().days(7)).map_err(bad)?,
            Period::Month => start
                .checked_add(jiff::Span::new().months(1))
                .map_err(bad)?,
        };
        out.push(local_ms(start)?);
        if out.len() > 200_000 {
            return Err(StoreError::InvalidRecord("range too long".into()));
        }
    }
    Ok(out)
}

/// Writes records (seq order) as chunks of at most [`CHUNK_RECORDS`] records and
/// [`CHUNK_SPAN_MS`]; every chunk but the last is sealed (never merged again), and the
/// last one too when it is full.
pub(crate) fn insert_pieces(
    tx: &Connection,
    id: i64,
    recs: &[FrameRecord],
) -> Result<(), StoreError> {
    let mut start = 0;
    while start < recs.len() {
        let t0 = recs[start].ts_ms;
        let mut end = start + 1;
        while end < recs.len()
            && end - start < CHUNK_RECORDS
            && recs[end].ts_ms.saturating_sub(t0) < CHUNK_SPAN_MS
        {
            end += 1;
        }
        let sealed = end < recs.len() || end - start == CHUNK_RECORDS;
        insert_chunk(tx, id, &recs[start..end], sealed)?;
        start = end;
    }
    Ok(())
}

fn insert_chunk(
    tx: &Connection,
    id: i64,
    recs: &[FrameRecord],
    sealed: bool,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
        return Ok(());
    };
    let first_ms = recs.iter().map(|r| r.ts_ms).min().unwrap_or(first.ts_ms);
    let last_ms = recs.iter().map(|r| r.ts_ms).max().unwrap_or(last.ts_ms);
    tx.prepare_cached(
        "INSERT INTO chunk (circuit, first_seq, last_seq, first_ms, last_ms, count, sealed, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        seq_i(first.seq),
        seq_i(last.seq),
        first_ms,
        last_ms,
        recs.len() as i64,
        sealed as i64,
        chunk::encode(recs)
    ])?;
    Ok(())
}

/// Puts records older than the circuit's newest into the chunks whose seq ranges hold them,
/// or into new chunks in the holes between chunks.
fn merge_late(tx: &Connection, id: i64, late: &[FrameRecord]) -> Result<(), StoreError> {
    // Target: the chunk whose range holds the seq (Some(chunk id)), or the hole before the
    // next chunk (None, keyed by the next chunk's first_seq).
    let mut into_chunk: BTreeMap<i64, Vec<FrameRecord>> = BTreeMap::new();
    let mut into_hole: BTreeMap<Option<i64>, Vec<FrameRecord>> = BTreeMap::new();
    for r in late {
        let holder: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, last_seq FROM chunk WHERE circuit=?1 AND first_seq<=?2 \
                 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row(params![id, seq_i(r.seq)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        match holder {
            Some((cid, last_seq)) if last_seq >= seq_i(r.seq) => {
                into_chunk.entry(cid).or_default().push(*r)
            }
            _ => {
                let next: Option<i64> = tx
                    .prepare_cached(
                        "SELECT first_seq FROM chunk WHERE circuit=?1 AND first_seq>?2 \
                         ORDER BY first_seq LIMIT 1",
                    )?
                    .query_row(params![id, seq_i(r.seq)], |row| row.get(0))
                    .optional()?;
                into_hole.entry(next).or_default().push(*r);
            }
        }
    }
    for (cid, add) in into_chunk {
        let blob: Vec<u8> = tx
            .prepare_cached("SELECT data FROM chunk WHERE id=?1")?
            .query_row(params![cid], |r| r.get(0))?;
        let mut recs =
            chunk::decode(&blob).map_err(|e| corrupt(format!("chunk {cid}: {}", e.0)))?;
        recs.extend(add);
        recs.sort_by_key(|r| r.seq);
        recs.dedup_by_key(|r| r.seq);
        tx.execute("DELETE FROM chunk WHERE id=?1", params![cid])?;
        insert_pieces(tx, id, &recs)?;
    }
    for (_, recs) in into_hole {
        insert_pieces(tx, id, &recs)?;
    }
    Ok(())
}

/// A late record `seq` arrived: split the gap that held it.
fn fill_gap(tx: &Connection, id: i64, seq: u64, ts: i64) -> Result<(), StoreError> {
    let g: Option<(i64, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT after_seq, before_seq, from_ms, to_ms FROM gap \
             WHERE circuit=?1 AND after_seq<?2 ORDER BY after_seq DESC LIMIT 1",
        )?
        .query_row(params![id, seq_i(seq)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((a, b, fa, tb)) = g else {
        return Ok(());
    };
    let s = seq_i(seq);
    if s >= b {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM gap WHERE circuit=?1 AND after_seq=?2",
        params![id, a],
    )?;
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO gap (circuit, after_seq, before_seq, from_ms, to_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    if s > a + 1 {
        ins.execute(params![id, a, s, fa, ts])?;
    }
    if b > s + 1 {
        ins.execute(params![id, s, b, ts, tb])?;
    }
    Ok(())
}

struct Cursor {
    name: String,
    id: i64,
    after_seq: Option<i64>,
    buf: Vec<FrameRecord>,
    pos: usize,
    done: bool,
}

struct RawStream<'a> {
    store: &'a Store,
    _tx: ReadTx<'a>,
    from_ms: i64,
    to_ms: i64,
    cursors: Vec<Cursor>,
    /// (Reverse(ts, circuit index)) of each cursor's current record.
    heap: BinaryHeap<std::cmp::Reverse<(i64, usize)>>,
    failed: bool,
    pending_error: Option<StoreError>,
}

impl RawStream<'_> {
    /// Loads the next chunk with records in range for cursor `i` and queues its head.
    fn refill(&mut self, i: usize) -> Result<(), StoreError> {
        let c = &mut self.cursors[i];
        loop {
            if c.pos < c.buf.len() {
                self.heap.push(std::cmp::Reverse((c.buf[c.pos].ts_ms, i)));
                return Ok(());
            }
            if c.done {
                return Ok(());
            }
            let next: Option<(i64, i64)> = match c.after_seq {
                None => self
                    .store
                    .conn
                    .prepare_cached(
                        "SELECT id, last_seq FROM chunk WHERE circuit=?1 AND last_ms>=?2 AND first_ms<?3 \
                         ORDER BY first_seq LIMIT 1",
                    )?
                    .query_row(params![c.id, self.from_ms, self.to_ms], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
                Some(after) => self
                    .store
                    .conn
                    .prepare_cached(
                        "SELECT id, last_seq FROM chunk WHERE circuit=?1 AND first_seq>?2 \
                         AND last_ms>=?3 AND first_ms<?4 ORDER BY first_seq LIMIT 1",
                    )?
                    .query_row(params![c.id, after, self.from_ms, self.to_ms], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
            };
            let Some((cid, last_seq)) = next else {
                c.done = true;
                c.buf = Vec::new();
                c.pos = 0;
                return Ok(());
            };
            c.after_seq = Some(last_seq);
            let (from, to) = (self.from_ms, self.to_ms);
            let mut recs = self.store.chunk_records(cid)?;
            recs.retain(|r| r.ts_ms >= from && r.ts_ms < to);
            recs.sort_by_key(|r| r.ts_ms);
            c.buf = recs;
            c.pos = 0;
        }
    }
}

impl Iterator for RawStream<'_> {
    type Item = Result<(String, FrameRecord), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(e) = self.pending_error.take() {
            self.failed = true;
            return Some(Err(e));
        }
        let std::cmp::Reverse((_, i)) = self.heap.pop()?;
        let c = &mut self.cursors[i];
        let rec = c.buf[c.pos];
        c.pos += 1;
        let name = c.name.clone();
        if let Err(e) = self.refill(i) {
            self.pending_error = Some(e);
        }
        Some(Ok((name, rec)))
    }
}
