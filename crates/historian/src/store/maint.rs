//! Background maintenance (chunk merging, rollups, late data, retention), the consistency
//! check, and the upgrade from format 1.
//!
//! How late data reaches the rollups: records committed below the 1m watermark mark their
//! circuit dirty from their oldest time; `maintain` then recomputes the finalised 1m buckets
//! from there from raw ([`refresh_step`]) and passes the differences up to the coarser
//! tiers' stored buckets as deltas ([`merge_deltas`]): records are only ever added, so
//! count, duration, sums and energy deltas add up and min / max only widen. A tier is
//! recomputed from the one below only where that one is complete; where retention has
//! deleted some of it (the `expired` table), records are folded in at commit ([`fold`]).

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::rollup::{self, Agg};
use super::{
    ceil_to, chunk, corrupt, insert_pieces, seq_i, CheckReport, Expiry, FrameRecord, Store,
    StoreError, Tier, CHUNK_RECORDS, FORMAT_VERSION, RUN_BUCKETS,
};

/// A minute bucket is final this long after its end even when no later record came.
const GRACE_MS: i64 = 120_000;
/// Small chunks older than this are merged even when they do not fill a chunk.
const SEAL_AGE_MS: i64 = 3_600_000;
/// Merge this many consecutive small chunks (or rollup runs) even before they fill one.
const MERGE_FANIN: usize = 16;
/// Most raw time one 1m rollup step reads.
const MINUTE_STEP_MS: i64 = 6 * 3_600_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

fn floor(t: i64, d: i64) -> i64 {
    t.div_euclid(d) * d
}

fn ids(conn: &Connection, sql: &str) -> Result<Vec<i64>, StoreError> {
    let mut st = conn.prepare_cached(sql)?;
    let v = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(v)
}

pub(super) fn maintain(s: &mut Store, now_ms: i64, budget: usize) -> Result<usize, StoreError> {
    let mut work = 0;
    loop {
        let before = work;
        // Late data below a 1m watermark: recompute those buckets, a step at a time.
        let dirty: Vec<(i64, i64)> = s
            .conn
            .prepare_cached("SELECT id, dirty_ms FROM circuit WHERE dirty_ms IS NOT NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, d) in dirty {
            if work >= budget {
                return Ok(work);
            }
            if refresh_step(s, id, d)? {
                work += 1;
            }
        }
        // Merge small chunks.
        for id in ids(
            &s.conn,
            "SELECT DISTINCT circuit FROM chunk WHERE sealed = 0",
        )? {
            if work >= budget {
                return Ok(work);
            }
            if merge_chunks(s, id, now_ms)? {
                work += 1;
            }
        }
        // Rollups, finest first so coarser tiers see their input.
        for id in ids(&s.conn, "SELECT id FROM circuit WHERE last_ms IS NOT NULL")? {
            for tier in Tier::ROLLUPS {
                if work >= budget {
                    return Ok(work);
                }
                if rollup_step(s, id, tier, now_ms)? {
                    work += 1;
                }
            }
        }
        // Merge small rollup runs.
        let small: Vec<(i64, i64)> = s
            .conn
            .prepare_cached("SELECT DISTINCT circuit, tier FROM rollup WHERE buckets < 1024")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, tier) in small {
            if work >= budget {
                return Ok(work);
            }
            if merge_runs(s, id, tier, now_ms)? {
                work += 1;
            }
        }
        if work == before {
            break;
        }
    }
    // Retention, once everything above is done: it never deletes what a rollup still needs,
    // nor moves a circuit's cut (`expired`) past records staged but not committed yet.
    for id in ids(&s.conn, "SELECT id FROM circuit")? {
        if work >= budget {
            return Ok(work);
        }
        let staged = s.circuits.iter().any(|(name, c)| {
            c.id == id && s.staged.get(name).is_some_and(|st| !st.records.is_empty())
        });
        if !staged && retention(s, id, now_ms)? {
            s.reload_expiry(id)?;
            work += 1;
        }
    }
    Ok(work)
}

/// Merges the first mergeable group of consecutive small chunks of a circuit.
fn merge_chunks(s: &Store, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    let first_small: Option<i64> = s
        .conn
        .prepare_cached(
            "SELECT first_seq FROM chunk WHERE circuit=?1 AND sealed = 0 ORDER BY first_seq LIMIT 1",
        )?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    let Some(first_small) = first_small else {
        return Ok(false);
    };
    let rows: Vec<(i64, i64, i64)> = s
        .conn
        .prepare_cached(
            "SELECT id, count, last_ms, sealed FROM chunk WHERE circuit=?1 AND first_seq>=?2 \
             ORDER BY first_seq LIMIT 4096",
        )?
        .query_map(params![id, first_small], |r| {
            let sealed: i64 = r.get(3)?;
            // Sealed chunks break groups: mark them with a count no group takes.
            Ok((
                r.get(0)?,
                if sealed != 0 { i64::MAX } else { r.get(1)? },
                r.get(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mergeable = |g: &[(i64, i64, i64)]| {
        let total: i64 = g.iter().map(|c| c.1).sum();
        let newest = g.iter().map(|c| c.2).max().unwrap_or(i64::MAX);
        g.len() >= 2
            && (g.len() >= MERGE_FANIN
                || total >= CHUNK_RECORDS as i64
                || newest < now_ms - SEAL_AGE_MS)
    };
    let mut group: Vec<(i64, i64, i64)> = Vec::new();
    let mut chosen: Option<Vec<(i64, i64, i64)>> = None;
    for row in rows {
        if row.1 != i64::MAX {
            group.push(row);
            let total: i64 = group.iter().map(|c| c.1).sum();
            if total >= 4 * CHUNK_RECORDS as i64 {
                break;
            }
        } else {
            if mergeable(&group) {
                chosen = Some(std::mem::take(&mut group));
                break;
            }
            group.clear();
        }
    }
    let chosen = match chosen {
        Some(g) => g,
        None if mergeable(&group) => group,
        None => return Ok(false),
    };
    let tx = s.conn.unchecked_transaction()?;
    let mut recs: Vec<FrameRecord> = Vec::new();
    for (cid, _, _) in &chosen {
        recs.extend(s.chunk_records(*cid)?);
        tx.execute("DELETE FROM chunk WHERE id=?1", params![cid])?;
    }
    recs.sort_by_key(|r| r.seq);
    recs.dedup_by_key(|r| r.seq);
    insert_pieces(&tx, id, &recs)?;
    tx.commit()?;
    Ok(true)
}

fn write_run(tx: &Connection, id: i64, tier: Tier, buckets: &[Agg]) -> Result<(), StoreError> {
    for piece in buckets.chunks(RUN_BUCKETS) {
        let (Some(first), Some(last)) = (piece.first(), piece.last()) else {
            continue;
        };
        tx.prepare_cached(
            "INSERT INTO rollup (circuit, tier, first_ms, last_ms, buckets, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            tier.index(),
            first.start,
            last.start,
            piece.len() as i64,
            rollup::encode_run(piece)
        ])?;
    }
    Ok(())
}

fn set_watermark(tx: &Connection, id: i64, tier: Tier, w: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO watermark (circuit, tier, done_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id, tier.index(), w])?;
    Ok(())
}

/// Advances one tier of one circuit by one step. True when it did something.
fn rollup_step(s: &Store, id: i64, tier: Tier, now_ms: i64) -> Result<bool, StoreError> {
    let Some(dur) = tier.duration_ms() else {
        return Ok(false);
    };
    let wm = s.watermark(id, tier)?;
    let (end, buckets) = match tier.finer() {
        None => {
            let (first_ms, last_ms): (Option<i64>, Option<i64>) = s
                .conn
                .prepare_cached("SELECT first_ms, last_ms FROM circuit WHERE id=?1")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (Some(first_ms), Some(last_ms)) = (first_ms, last_ms) else {
                return Ok(false);
            };
            let start = wm.unwrap_or_else(|| floor(first_ms, dur));
            let final_end = floor(last_ms, dur).max(floor(now_ms - GRACE_MS, dur));
            let mut end = final_end.min(start.saturating_add(MINUTE_STEP_MS));
            if end <= start {
                return Ok(false);
            }
            let recs = s.records_in(id, start, end)?;
            if recs.is_empty() && end < final_end {
                // Nothing stored here (an outage, or `now` far past the data): go straight
                // to the next stored record.
                end = match next_record_ms(s, id, end)? {
                    Some(n) => floor(n, dur).clamp(end, final_end),
                    None => final_end,
                };
            }
            let prev = match recs.first() {
                Some(_) => s.record_before(id, start)?,
                None => None,
            };
            (end, rollup::aggregate_records(&recs, prev, dur, start, end))
        }
        Some(finer) => {
            let Some(wf) = s.watermark(id, finer)? else {
                return Ok(false);
            };
            let start = match wm {
                Some(w) => w,
                None => {
                    let first: Option<i64> = s
                        .conn
                        .prepare_cached(
                            "SELECT MIN(first_ms) FROM rollup WHERE circuit=?1 AND tier=?2",
                        )?
                        .query_row(params![id, finer.index()], |r| r.get(0))?;
                    floor(first.unwrap_or(wf), dur)
                }
            };
            let final_end = floor(wf, dur);
            let mut end = final_end.min(start.saturating_add(RUN_BUCKETS as i64 * dur));
            if end <= start {
                return Ok(false);
            }
            let fine = s.stored_buckets(id, finer, start, end, None)?;
            if fine.is_empty() && end < final_end {
                end = match next_bucket_ms(s, id, finer, end)? {
                    Some(n) => floor(n, dur).clamp(end, final_end),
                    None => final_end,
                };
            }
            (end, rollup::regroup(&fine, dur))
        }
    };
    let tx = s.conn.unchecked_transaction()?;
    write_run(&tx, id, tier, &buckets)?;
    set_watermark(&tx, id, tier, end)?;
    tx.commit()?;
    Ok(true)
}

/// The oldest time of a stored record at or after `from_ms` (or a little before it).
fn next_record_ms(s: &Store, id: i64, from_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(s.conn
        .prepare_cached("SELECT MIN(first_ms) FROM chunk WHERE circuit=?1 AND last_ms>=?2")?
        .query_row(params![id, from_ms], |r| r.get(0))?)
}

/// The start of the oldest stored bucket of `tier` at or after `from_ms` (or `from_ms`
/// itself when a run spans it).
fn next_bucket_ms(s: &Store, id: i64, tier: Tier, from_ms: i64) -> Result<Option<i64>, StoreError> {
    let spanning: Option<i64> = s
        .conn
        .prepare_cached(
            "SELECT last_ms FROM rollup WHERE circuit=?1 AND tier=?2 AND first_ms<=?3 \
             ORDER BY first_ms DESC LIMIT 1",
        )?
        .query_row(params![id, tier.index(), from_ms], |r| r.get(0))
        .optional()?;
    if spanning.is_some_and(|last| last >= from_ms) {
        return Ok(Some(from_ms));
    }
    Ok(s.conn
        .prepare_cached(
            "SELECT MIN(first_ms) FROM rollup WHERE circuit=?1 AND tier=?2 AND first_ms>?3",
        )?
        .query_row(params![id, tier.index(), from_ms], |r| r.get(0))?)
}

/// One step of taking late data into the rollups: recomputes the finalised 1m buckets of
/// at most [`MINUTE_STEP_MS`] from the circuit's dirty mark `d` from raw, stores the ones
/// that changed and passes the differences up to the coarser tiers. Moves the mark past
/// the step, or clears it at the 1m watermark. True when it recomputed something.
fn refresh_step(s: &Store, id: i64, d: i64) -> Result<bool, StoreError> {
    let tx = s.conn.unchecked_transaction()?;
    let mut did = false;
    let mut mark = None;
    if let Some(wm1) = s.watermark(id, Tier::Minute)? {
        // Below `fold_below` records were folded in at commit (raw is incomplete there).
        let mut lo = floor(d, MINUTE_MS).max(s.fold_below(id)?.unwrap_or(i64::MIN));
        while lo < wm1 {
            let hi = lo.saturating_add(MINUTE_STEP_MS).min(wm1);
            let recs = s.records_in(id, lo, hi)?;
            let old = s.stored_buckets(id, Tier::Minute, lo, hi, None)?;
            if recs.is_empty() && old.is_empty() {
                let next = [
                    next_record_ms(s, id, hi)?,
                    next_bucket_ms(s, id, Tier::Minute, hi)?,
                ]
                .into_iter()
                .flatten()
                .min();
                lo = next.map_or(wm1, |n| floor(n, MINUTE_MS).max(hi));
                continue;
            }
            let prev = match recs.first() {
                Some(_) => s.record_before(id, lo)?,
                None => None,
            };
            let new = rollup::aggregate_records(&recs, prev, MINUTE_MS, lo, hi);
            if new != old {
                replace_minutes(s, &tx, id, &old, &new)?;
            }
            did = true;
            mark = (hi < wm1).then_some(hi);
            break;
        }
    }
    tx.execute(
        "UPDATE circuit SET dirty_ms=?2 WHERE id=?1",
        params![id, mark],
    )?;
    tx.commit()?;
    Ok(did)
}

/// `new` − `old`: what the records added to a bucket add to any bucket holding it.
fn difference(new: &Agg, old: &Agg) -> Agg {
    let mut d = *new;
    d.count -= old.count;
    d.dur_us -= old.dur_us;
    for i in 0..11 {
        d.sum[i] = new.sum[i].wrapping_sub(old.sum[i]);
    }
    d.e_imp -= old.e_imp;
    d.e_exp -= old.e_exp;
    d
}

/// Stores recomputed 1m buckets `new` over stored ones `old` (the same range) and passes the
/// differences up. A bucket never loses records: raw that holds fewer than a stored bucket
/// is not complete there (which the rest of the store rules out), and the bucket is kept.
fn replace_minutes(
    s: &Store,
    tx: &Connection,
    id: i64,
    old: &[Agg],
    new: &[Agg],
) -> Result<(), StoreError> {
    let old: BTreeMap<i64, &Agg> = old.iter().map(|a| (a.start, a)).collect();
    let mut set: BTreeMap<i64, Agg> = BTreeMap::new();
    let mut delta: BTreeMap<i64, Agg> = BTreeMap::new();
    for n in new {
        match old.get(&n.start) {
            Some(o) if *o == n || n.count < o.count => {}
            Some(o) => {
                set.insert(n.start, *n);
                delta.insert(n.start, difference(n, o));
            }
            None => {
                set.insert(n.start, *n);
                delta.insert(n.start, *n);
            }
        }
    }
    let keys: Vec<i64> = set.keys().copied().collect();
    rewrite_buckets(tx, id, Tier::Minute, &keys, |k, _| set.get(&k).copied())?;
    merge_deltas(s, tx, id, &[Tier::Quarter, Tier::Hour, Tier::Day], &delta)
}

/// Adds per-1m-bucket deltas (records added, energy moved) to the stored buckets of
/// `tiers`: those below the tier's watermark (the rest is computed from the finer tier
/// later) and not deleted by the tier's retention.
fn merge_deltas(
    s: &Store,
    tx: &Connection,
    id: i64,
    tiers: &[Tier],
    delta: &BTreeMap<i64, Agg>,
) -> Result<(), StoreError> {
    if delta.is_empty() {
        return Ok(());
    }
    let minute: Vec<Agg> = delta.values().copied().collect();
    for &tier in tiers {
        let (Some(dur), Some(wm)) = (tier.duration_ms(), s.watermark(id, tier)?) else {
            continue;
        };
        let from = s.expiry(id, tier)?.map_or(i64::MIN, |e| e.until_ms);
        let d: BTreeMap<i64, Agg> = rollup::regroup(&minute, dur)
            .into_iter()
            .filter(|a| a.start >= from && a.start < wm)
            .map(|a| (a.start, a))
            .collect();
        let keys: Vec<i64> = d.keys().copied().collect();
        rewrite_buckets(tx, id, tier, &keys, |k, cur| {
            let add = d.get(&k)?;
            match cur {
                Some(mut b) => {
                    b.merge(add);
                    (b.count > 0).then_some(b)
                }
                None => (add.count > 0).then_some(*add),
            }
        })?;
    }
    Ok(())
}

/// Sets buckets of a tier in place: `f(start, current)` gives each bucket of `keys`
/// (sorted) its new value (`None`: no bucket). Only the runs holding those buckets are
/// rewritten; a bucket between runs goes into a new run in that space.
fn rewrite_buckets(
    tx: &Connection,
    id: i64,
    tier: Tier,
    keys: &[i64],
    mut f: impl FnMut(i64, Option<Agg>) -> Option<Agg>,
) -> Result<(), StoreError> {
    // Run id -> its keys; (first_ms of the next run) -> keys in the space before it.
    let mut in_run: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut between: BTreeMap<Option<i64>, Vec<i64>> = BTreeMap::new();
    for &k in keys {
        let holder: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, last_ms FROM rollup WHERE circuit=?1 AND tier=?2 AND first_ms<=?3 \
                 ORDER BY first_ms DESC LIMIT 1",
            )?
            .query_row(params![id, tier.index(), k], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match holder {
            Some((rid, last)) if last >= k => in_run.entry(rid).or_default().push(k),
            _ => {
                let next: Option<i64> = tx
                    .prepare_cached(
                        "SELECT first_ms FROM rollup WHERE circuit=?1 AND tier=?2 AND first_ms>?3 \
                         ORDER BY first_ms LIMIT 1",
                    )?
                    .query_row(params![id, tier.index(), k], |r| r.get(0))
                    .optional()?;
                between.entry(next).or_default().push(k);
            }
        }
    }
    for (rid, ks) in in_run {
        let blob: Vec<u8> = tx
            .prepare_cached("SELECT data FROM rollup WHERE id=?1")?
            .query_row(params![rid], |r| r.get(0))?;
        let mut run: BTreeMap<i64, Agg> = rollup::decode_run(&blob)
            .map_err(|e| corrupt(format!("rollup {rid}: {}", e.0)))?
            .into_iter()
            .map(|a| (a.start, a))
            .collect();
        for k in ks {
            let cur = run.remove(&k);
            if let Some(v) = f(k, cur) {
                run.insert(k, v);
            }
        }
        tx.execute("DELETE FROM rollup WHERE id=?1", params![rid])?;
        write_run(tx, id, tier, &run.into_values().collect::<Vec<_>>())?;
    }
    for (_, ks) in between {
        let add: Vec<Agg> = ks.into_iter().filter_map(|k| f(k, None)).collect();
        write_run(tx, id, tier, &add)?;
    }
    Ok(())
}

/// A circuit's stored records around given seqs (this commit's included), with the
/// decoded chunks cached; the newest record retention deleted stands in for what is gone.
struct Neighbours<'a> {
    s: &'a Store,
    id: i64,
    cut_seq: Option<u64>,
    /// The record at `cut_seq`; `None` when not known (a store upgraded from format 1).
    cut: Option<FrameRecord>,
    chunks: HashMap<i64, Vec<FrameRecord>>,
}

impl Neighbours<'_> {
    fn chunk(&mut self, cid: i64) -> Result<&[FrameRecord], StoreError> {
        if !self.chunks.contains_key(&cid) {
            let recs = self.s.chunk_records(cid)?;
            self.chunks.insert(cid, recs);
        }
        Ok(self.chunks.get(&cid).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// The record with the greatest seq below `seq`.
    fn pred(&mut self, seq: u64) -> Result<Option<FrameRecord>, StoreError> {
        let cid: Option<i64> = self
            .s
            .conn
            .prepare_cached(
                "SELECT id FROM chunk WHERE circuit=?1 AND first_seq<?2 \
                 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row(params![self.id, seq_i(seq)], |r| r.get(0))
            .optional()?;
        let stored = match cid {
            Some(cid) => self.chunk(cid)?.iter().rev().find(|r| r.seq < seq).copied(),
            None => None,
        };
        Ok(match self.cut_seq {
            Some(c) if c < seq && stored.is_none_or(|r| r.seq <= c) => self.cut,
            _ => stored,
        })
    }

    /// The stored record with the smallest seq above `seq`.
    fn succ(&mut self, seq: u64) -> Result<Option<FrameRecord>, StoreError> {
        let holder: Option<i64> = self
            .s
            .conn
            .prepare_cached(
                "SELECT id FROM chunk WHERE circuit=?1 AND first_seq<=?2 \
                 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row(params![self.id, seq_i(seq)], |r| r.get(0))
            .optional()?;
        if let Some(cid) = holder {
            if let Some(r) = self.chunk(cid)?.iter().find(|r| r.seq > seq) {
                return Ok(Some(*r));
            }
        }
        let next: Option<i64> = self
            .s
            .conn
            .prepare_cached(
                "SELECT id FROM chunk WHERE circuit=?1 AND first_seq>?2 ORDER BY first_seq LIMIT 1",
            )?
            .query_row(params![self.id, seq_i(seq)], |r| r.get(0))
            .optional()?;
        match next {
            Some(cid) => Ok(self.chunk(cid)?.first().copied()),
            None => Ok(None),
        }
    }
}

/// Folds records (seq order, already written to raw in `tx`) into the stored buckets of
/// every tier: they landed where a bucket can no longer be recomputed from the tier below
/// it. `new` is everything this commit writes. Exact: each record adds itself with its
/// energy delta from its predecessor, and the next older-committed record's delta moves to
/// start from the last of the records before it.
pub(super) fn fold(
    s: &Store,
    tx: &Connection,
    id: i64,
    records: &[FrameRecord],
    new: &BTreeMap<u64, FrameRecord>,
) -> Result<(), StoreError> {
    let expiry = s.expiry(id, Tier::Raw)?;
    let mut nb = Neighbours {
        s,
        id,
        cut_seq: expiry.and_then(|e| e.cut_seq),
        cut: expiry.and_then(|e| e.cut),
        chunks: HashMap::new(),
    };
    let mut delta: BTreeMap<i64, Agg> = BTreeMap::new();
    for x in records {
        let p = nb.pred(x.seq)?;
        let b = floor(x.ts_ms, MINUTE_MS);
        delta
            .entry(b)
            .or_insert_with(|| Agg::empty(b))
            .add(x, p.as_ref());
        let Some(n) = nb.succ(x.seq)? else {
            continue;
        };
        if new.contains_key(&n.seq) {
            continue;
        }
        // `n` was stored before: its delta was taken from the newest older record then.
        let mut before = p;
        while let Some(q) = before.filter(|q| new.contains_key(&q.seq)) {
            before = nb.pred(q.seq)?;
        }
        let moved = |cur: u64, f: fn(&FrameRecord) -> u64| {
            rollup::counter_delta(f(x), cur)
                - before.map_or(0, |b| rollup::counter_delta(f(&b), cur))
        };
        let bn = floor(n.ts_ms, MINUTE_MS);
        let a = delta.entry(bn).or_insert_with(|| Agg::empty(bn));
        a.e_imp += moved(n.energy_import_mwh, |r| r.energy_import_mwh);
        a.e_exp += moved(n.energy_export_mwh, |r| r.energy_export_mwh);
    }
    // Every tier must take the same deltas. A 1m bucket that only moves energy and is not
    // stored although the 1m tier keeps it: `n` is not in the rollups yet (committed, to
    // be recomputed from raw, which then starts from its new predecessor): leave it.
    let wm1 = s.watermark(id, Tier::Minute)?.unwrap_or(i64::MIN);
    let kept1 = s.expiry(id, Tier::Minute)?.map_or(i64::MIN, |e| e.until_ms);
    let mut absent = Vec::new();
    for (&b, a) in &delta {
        if a.count == 0
            && b >= kept1
            && b < wm1
            && s.stored_buckets(id, Tier::Minute, b, b + MINUTE_MS, None)?
                .is_empty()
        {
            absent.push(b);
        }
    }
    for b in absent {
        delta.remove(&b);
    }
    merge_deltas(s, tx, id, &Tier::ROLLUPS, &delta)
}

/// Merges the first group of consecutive small runs of a circuit's tier.
fn merge_runs(s: &Store, id: i64, tier: i64, now_ms: i64) -> Result<bool, StoreError> {
    // Index columns only: the blobs of the chosen group are read afterwards.
    let rows: Vec<(i64, i64, i64)> = s
        .conn
        .prepare_cached(
            "SELECT id, buckets, last_ms FROM rollup WHERE circuit=?1 AND tier=?2 AND first_ms >= \
               (SELECT MIN(first_ms) FROM rollup WHERE circuit=?1 AND tier=?2 AND buckets < 1024) \
             ORDER BY first_ms LIMIT 4096",
        )?
        .query_map(params![id, tier], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mergeable = |g: &[&(i64, i64, i64)]| {
        let total: i64 = g.iter().map(|c| c.1).sum();
        let newest = g.iter().map(|c| c.2).max().unwrap_or(i64::MAX);
        g.len() >= 2
            && (g.len() >= MERGE_FANIN
                || total >= RUN_BUCKETS as i64
                || newest < now_ms - 7 * DAY_MS)
    };
    let mut group: Vec<&(i64, i64, i64)> = Vec::new();
    let mut chosen = None;
    for row in &rows {
        if (row.1 as usize) < RUN_BUCKETS {
            group.push(row);
        } else {
            if mergeable(&group) {
                chosen = Some(std::mem::take(&mut group));
                break;
            }
            group.clear();
        }
    }
    let chosen = match chosen {
        Some(g) => g,
        None if mergeable(&group) => group,
        None => return Ok(false),
    };
    let Some(tier_v) = Tier::ALL.into_iter().find(|t| t.index() == tier) else {
        return Err(corrupt(format!("rollup tier {tier}")));
    };
    let tx = s.conn.unchecked_transaction()?;
    let mut all = Vec::new();
    for (rid, _, _) in chosen {
        let blob: Vec<u8> = tx
            .prepare_cached("SELECT data FROM rollup WHERE id=?1")?
            .query_row(params![rid], |r| r.get(0))?;
        all.extend(
            rollup::decode_run(&blob).map_err(|e| corrupt(format!("rollup {rid}: {}", e.0)))?,
        );
        tx.execute("DELETE FROM rollup WHERE id=?1", params![rid])?;
    }
    write_run(&tx, id, tier_v, &all)?;
    tx.commit()?;
    Ok(true)
}

/// Deletes what each tier's retention has expired for one circuit, recording it in
/// `expired`. Never deletes what the next tier up has not taken in yet (raw above the 1m
/// watermark or awaiting recomputation, buckets above the next tier's watermark).
fn retention(s: &Store, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    let mut did = false;
    let tx = s.conn.unchecked_transaction()?;
    let dirty: Option<i64> = tx
        .prepare_cached("SELECT dirty_ms FROM circuit WHERE id=?1")?
        .query_row(params![id], |r| r.get(0))?;
    let wm1 = s.watermark(id, Tier::Minute)?;
    if let (Some(days), None, Some(wm1)) = (s.options.raw_retention_days, dirty, wm1) {
        let cutoff = (now_ms - days as i64 * DAY_MS).min(wm1);
        let (n, gone, newest): (i64, Option<i64>, Option<i64>) = tx
            .prepare_cached(
                "SELECT COUNT(*), SUM(count), MAX(last_ms) FROM chunk WHERE circuit=?1 AND last_ms<?2",
            )?
            .query_row(params![id, cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if let (true, Some(newest)) = (n > 0, newest) {
            // The newest record going stands in for all of them as the next one's
            // predecessor (energy), and bounds the seqs that can no longer be checked.
            let last_chunk: i64 = tx
                .prepare_cached(
                    "SELECT id FROM chunk WHERE circuit=?1 AND last_ms<?2 ORDER BY last_seq DESC LIMIT 1",
                )?
                .query_row(params![id, cutoff], |r| r.get(0))?;
            let prev = s.expiry(id, Tier::Raw)?;
            let cut = match (s.chunk_records(last_chunk)?.last().copied(), prev) {
                (Some(c), Some(p)) if p.cut_seq.is_some_and(|ps| ps > c.seq) => p.cut,
                (c, _) => c,
            };
            let cut_seq = match (cut, prev.and_then(|p| p.cut_seq)) {
                (Some(c), p) => Some(c.seq.max(p.unwrap_or(0))),
                (None, p) => p,
            };
            let until = (newest + 1).max(prev.map_or(i64::MIN, |p| p.until_ms));
            tx.execute(
                "DELETE FROM chunk WHERE circuit=?1 AND last_ms<?2",
                params![id, cutoff],
            )?;
            tx.execute(
                "UPDATE circuit SET records = records - ?2, \
                   first_seq = COALESCE((SELECT MIN(first_seq) FROM chunk WHERE circuit=?1), last_seq), \
                   first_ms = COALESCE((SELECT MIN(first_ms) FROM chunk WHERE circuit=?1), last_ms) \
                 WHERE id=?1",
                params![id, gone.unwrap_or(0)],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO expired \
                   (circuit, tier, until_ms, seq, ts_ms, import_mwh, export_mwh) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    Tier::Raw.index(),
                    until,
                    cut_seq.map(seq_i),
                    cut.map(|c| c.ts_ms),
                    cut.map(|c| c.energy_import_mwh as i64),
                    cut.map(|c| c.energy_export_mwh as i64)
                ],
            )?;
            did = true;
        }
        did |= tx.execute(
            "DELETE FROM gap WHERE circuit=?1 AND to_ms<?2",
            params![id, cutoff],
        )? > 0;
    }
    for (i, tier) in Tier::ROLLUPS.into_iter().enumerate() {
        let (Some(days), Some(dur)) = (s.options.retention_days(tier), tier.duration_ms()) else {
            continue;
        };
        let mut cutoff = now_ms - days as i64 * DAY_MS;
        if let Some(coarser) = Tier::ROLLUPS.get(i + 1) {
            match s.watermark(id, *coarser)? {
                Some(w) => cutoff = cutoff.min(w),
                None => continue,
            }
        }
        let newest: Option<i64> = tx
            .prepare_cached(
                "SELECT MAX(last_ms) FROM rollup WHERE circuit=?1 AND tier=?2 AND last_ms + ?3 <= ?4",
            )?
            .query_row(params![id, tier.index(), dur, cutoff], |r| r.get(0))?;
        let Some(newest) = newest else {
            continue;
        };
        tx.execute(
            "DELETE FROM rollup WHERE circuit=?1 AND tier=?2 AND last_ms + ?3 <= ?4",
            params![id, tier.index(), dur, cutoff],
        )?;
        let until = (newest + dur).max(s.expiry(id, tier)?.map_or(i64::MIN, |e| e.until_ms));
        tx.execute(
            "INSERT OR REPLACE INTO expired (circuit, tier, until_ms) VALUES (?1, ?2, ?3)",
            params![id, tier.index(), until],
        )?;
        did = true;
    }
    tx.commit()?;
    Ok(did)
}

/// What retention deleted from a circuit in a format-1 file, which did not record it:
/// a tier lost data where a coarser tier holds a bucket older than the tier's oldest
/// (raw: oldest record). The counters of the newest deleted record are not known.
pub(super) fn infer_expiry(conn: &Connection, id: i64) -> Result<Vec<(Tier, Expiry)>, StoreError> {
    let mut first: Vec<Option<i64>> = Vec::new();
    for tier in Tier::ROLLUPS {
        first.push(
            conn.prepare_cached("SELECT MIN(first_ms) FROM rollup WHERE circuit=?1 AND tier=?2")?
                .query_row(params![id, tier.index()], |r| r.get(0))?,
        );
    }
    // Does a tier from `ROLLUPS[i]` up hold a bucket older than `t` (`None`: nothing)?
    let older_above = |i: usize, t: Option<i64>| {
        Tier::ROLLUPS[i..].iter().zip(&first[i..]).any(|(c, f)| {
            let d = c.duration_ms().unwrap_or(1);
            f.is_some_and(|f| t.is_none_or(|t| f < floor(t, d)))
        })
    };
    let (first_ms, first_seq): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT MIN(first_ms), MIN(first_seq) FROM chunk WHERE circuit=?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (last_seq, last_ms): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT last_seq, last_ms FROM circuit WHERE id=?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    if let (true, Some(last_seq), Some(last_ms)) = (older_above(0, first_ms), last_seq, last_ms) {
        out.push((
            Tier::Raw,
            Expiry {
                // Past the oldest record left: its predecessor was deleted with its
                // counters unknown, so its bucket cannot be recomputed either.
                until_ms: first_ms.unwrap_or(last_ms) + 1,
                cut_seq: match first_seq {
                    Some(f) if f > 0 => Some(f as u64 - 1),
                    Some(_) => None,
                    None => Some(last_seq as u64),
                },
                cut: None,
            },
        ));
    }
    for (i, tier) in Tier::ROLLUPS.into_iter().enumerate().take(3) {
        if older_above(i + 1, first[i]) {
            let wm: Option<i64> = conn
                .prepare_cached("SELECT done_ms FROM watermark WHERE circuit=?1 AND tier=?2")?
                .query_row(params![id, tier.index()], |r| r.get(0))
                .optional()?;
            out.push((
                tier,
                Expiry {
                    until_ms: first[i].or(wm).unwrap_or(i64::MIN),
                    cut_seq: None,
                    cut: None,
                },
            ));
        }
    }
    Ok(out)
}

/// Upgrades a format-1 file (opened for writing) to this format: records what retention
/// had deleted, as far as it can be told.
pub(super) fn upgrade_v1(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    for id in ids(conn, "SELECT id FROM circuit")? {
        for (tier, e) in infer_expiry(conn, id)? {
            tx.execute(
                "INSERT OR IGNORE INTO expired (circuit, tier, until_ms, seq) VALUES (?1, ?2, ?3, ?4)",
                params![id, tier.index(), e.until_ms, e.cut_seq.map(seq_i)],
            )?;
        }
    }
    tx.execute(
        "UPDATE meta SET value=?1 WHERE key='format'",
        params![FORMAT_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

/// The first difference between stored buckets of `tier` and what `source` makes of them
/// (both sorted by start), as a message.
fn first_difference(tier: Tier, stored: &[&Agg], expect: &[Agg], source: &str) -> Option<String> {
    let (mut a, mut b) = (stored.iter().peekable(), expect.iter().peekable());
    loop {
        let (x, y) = (a.peek().copied(), b.peek());
        return Some(match (x, y) {
            (None, None) => return None,
            (Some(x), Some(y)) if x.start == y.start => {
                if *x == *y {
                    a.next();
                    b.next();
                    continue;
                }
                if x.count != y.count {
                    format!(
                        "{tier} bucket at {} holds {} records, {source} make {}",
                        x.start, x.count, y.count
                    )
                } else {
                    format!(
                        "{tier} bucket at {} differs from what {source} make",
                        x.start
                    )
                }
            }
            (Some(x), y) if y.is_none_or(|y| x.start < y.start) => format!(
                "{tier} bucket at {} ({} records) has nothing under it in {source}",
                x.start, x.count
            ),
            (_, Some(y)) => format!(
                "{tier} bucket at {} is missing ({source} make {} records)",
                y.start, y.count
            ),
            (Some(_), None) => return None,
        });
    }
}

pub(super) fn check(s: &Store) -> Result<CheckReport, StoreError> {
    let mut rep = CheckReport::default();
    {
        let mut st = s.conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            let row = row?;
            if row != "ok" {
                rep.problems.push(format!("integrity_check: {row}"));
            }
        }
    }
    let circuits: Vec<(i64, String, i64, Option<i64>)> = s
        .conn
        .prepare("SELECT id, name, records, dirty_ms FROM circuit ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    rep.circuits = circuits.len();
    for (id, name, records, dirty) in &circuits {
        // The 1m buckets that must equal an aggregation of the raw records: finalised, not
        // awaiting recomputation, and where retention has deleted neither raw nor 1m.
        let raw_from = s.fold_below(*id)?.unwrap_or(i64::MIN);
        let raw_to = match (s.watermark(*id, Tier::Minute)?, dirty) {
            (Some(w), Some(d)) => w.min(floor(*d, MINUTE_MS)),
            (Some(w), None) => w,
            (None, _) => i64::MIN,
        };
        let cut = s.expiry(*id, Tier::Raw)?;
        let mut from_raw: BTreeMap<i64, Agg> = BTreeMap::new();
        let mut raw_whole = true;
        let mut prev: Option<FrameRecord> = None;
        let mut st = s.conn.prepare_cached(
            "SELECT id, first_seq, last_seq, first_ms, last_ms, count, data FROM chunk \
             WHERE circuit=?1 ORDER BY first_seq",
        )?;
        let mut rows = st.query(params![id])?;
        let mut total = 0i64;
        let mut prev_last: Option<i64> = None;
        while let Some(r) = rows.next()? {
            let (cid, fs, ls, fm, lm, n): (i64, i64, i64, i64, i64, i64) = (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            );
            rep.chunks += 1;
            let blob: Vec<u8> = match r.get_ref(6)? {
                ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
                _ => {
                    rep.problems
                        .push(format!("circuit {name:?} chunk {cid}: data is not a blob"));
                    raw_whole = false;
                    continue;
                }
            };
            total += n;
            let p = |m: String| format!("circuit {name:?} chunk {cid}: {m}");
            if prev_last.is_some_and(|pl| fs <= pl) {
                rep.problems
                    .push(p("seq range overlaps the previous chunk".into()));
            }
            prev_last = Some(ls);
            match chunk::decode(&blob) {
                Err(e) => {
                    rep.problems.push(p(format!("does not decode: {}", e.0)));
                    raw_whole = false;
                }
                Ok(recs) => {
                    if recs.len() as i64 != n {
                        rep.problems
                            .push(p(format!("{} records, index says {n}", recs.len())));
                    }
                    if recs.windows(2).any(|w| w[0].seq >= w[1].seq) {
                        rep.problems.push(p("seqs not strictly increasing".into()));
                    }
                    let (Some(f), Some(l)) = (recs.first(), recs.last()) else {
                        rep.problems.push(p("empty".into()));
                        continue;
                    };
                    let tmin = recs.iter().map(|r| r.ts_ms).min().unwrap_or(0);
                    let tmax = recs.iter().map(|r| r.ts_ms).max().unwrap_or(0);
                    if f.seq as i64 != fs || l.seq as i64 != ls || tmin != fm || tmax != lm {
                        rep.problems.push(p("bounds differ from the index".into()));
                    }
                    // Aggregate as the rollups do: in seq order, each record's energy delta
                    // from the one before it (the newest deleted one, past the cut).
                    for r in &recs {
                        if let Some(c) = cut.and_then(|c| c.cut_seq) {
                            if c < r.seq && prev.is_none_or(|p| p.seq <= c) {
                                prev = cut.and_then(|c| c.cut);
                            }
                        }
                        let b = floor(r.ts_ms, MINUTE_MS);
                        if b >= raw_from && b < raw_to {
                            from_raw
                                .entry(b)
                                .or_insert_with(|| Agg::empty(b))
                                .add(r, prev.as_ref());
                        }
                        prev = Some(*r);
                    }
                }
            }
        }
        if total != *records {
            rep.problems.push(format!(
                "circuit {name:?}: {total} records in chunks, circuit row says {records}"
            ));
        }
        rep.records += total.max(0) as u64;
        // Rollup runs.
        let mut tier_buckets: Vec<(Tier, Vec<Agg>)> = Vec::new();
        for tier in Tier::ROLLUPS {
            let dur = tier.duration_ms().unwrap_or(1);
            let mut st = s.conn.prepare_cached(
                "SELECT id, first_ms, last_ms, buckets, data FROM rollup \
                 WHERE circuit=?1 AND tier=?2 ORDER BY first_ms",
            )?;
            let mut rows = st.query(params![id, tier.index()])?;
            let mut all: Vec<Agg> = Vec::new();
            while let Some(r) = rows.next()? {
                let (rid, fm, lm, n): (i64, i64, i64, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                rep.rollup_blocks += 1;
                let blob: Vec<u8> = match r.get_ref(4)? {
                    ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
                    _ => {
                        rep.problems
                            .push(format!("circuit {name:?} rollup {rid}: data is not a blob"));
                        continue;
                    }
                };
                let p = |m: &str| format!("circuit {name:?} {tier} rollup {rid}: {m}");
                match rollup::decode_run(&blob) {
                    Err(e) => rep.problems.push(p(&format!("does not decode: {}", e.0))),
                    Ok(run) => {
                        if run.len() as i64 != n
                            || run.first().map(|a| a.start) != Some(fm)
                            || run.last().map(|a| a.start) != Some(lm)
                        {
                            rep.problems.push(p("bounds differ from the index"));
                        }
                        if run
                            .iter()
                            .any(|a| a.start.rem_euclid(dur) != 0 || a.count <= 0)
                        {
                            rep.problems.push(p("misaligned or empty bucket"));
                        }
                        if all
                            .last()
                            .is_some_and(|l| run.first().is_some_and(|f| f.start <= l.start))
                            || run.windows(2).any(|w| w[0].start >= w[1].start)
                        {
                            rep.problems.push(p("buckets out of order or overlapping"));
                        }
                        all.extend(run);
                    }
                }
            }
            tier_buckets.push((tier, all));
        }
        // Each coarser tier's final buckets against the finer tier's, where retention has
        // deleted neither.
        for w in tier_buckets.windows(2) {
            let ((ft, fine), (ct, coarse)) = (&w[0], &w[1]);
            let dur = ct.duration_ms().unwrap_or(1);
            let Some(to) = s.watermark(*id, *ct)? else {
                continue;
            };
            let from = [
                s.expiry(*id, *ft)?.map(|e| ceil_to(e.until_ms, dur)),
                s.expiry(*id, *ct)?.map(|e| e.until_ms),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(i64::MIN);
            let fine: Vec<Agg> = fine
                .iter()
                .filter(|a| a.start >= from && a.start < to)
                .copied()
                .collect();
            let stored: Vec<&Agg> = coarse
                .iter()
                .filter(|a| a.start >= from && a.start < to)
                .collect();
            let source = format!("its {ft} buckets");
            if let Some(d) = first_difference(*ct, &stored, &rollup::regroup(&fine, dur), &source) {
                rep.problems.push(format!("circuit {name:?}: {d}"));
            }
        }
        // Final 1m buckets against the raw records.
        if let (true, Some((_, minute))) = (raw_whole && raw_from < raw_to, tier_buckets.first()) {
            let stored: Vec<&Agg> = minute
                .iter()
                .filter(|a| a.start >= raw_from && a.start < raw_to)
                .collect();
            let expect: Vec<Agg> = from_raw.into_values().collect();
            if let Some(d) = first_difference(Tier::Minute, &stored, &expect, "the raw records") {
                rep.problems.push(format!("circuit {name:?}: {d}"));
            }
        }
    }
    rep.gaps = s
        .conn
        .query_row("SELECT COUNT(*) FROM gap", [], |r| r.get::<_, i64>(0))? as u64;
    rep.ok = rep.problems.is_empty();
    Ok(rep)
}
