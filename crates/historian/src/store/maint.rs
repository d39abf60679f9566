//! Background maintenance (chunk merging, rollups, retention) and the consistency check.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::rollup::{self, Agg};
use super::{
    chunk, corrupt, insert_pieces, CheckReport, FrameRecord, Store, StoreError, Tier,
    CHUNK_RECORDS, RUN_BUCKETS,
};

/// A minute bucket is final this long after its end even when no later record came.
const GRACE_MS: i64 = 120_000;
/// Small chunks older than this are merged even when they do not fill a chunk.
const SEAL_AGE_MS: i64 = 3_600_000;
/// Merge this many consecutive small chunks (or rollup runs) even before they fill one.
const MERGE_FANIN: usize = 16;
/// Most raw time one 1m rollup step reads.
const MINUTE_STEP_MS: i64 = 6 * 3_600_000;
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
    // Late data below a watermark: recompute rollups from there.
    let dirty: Vec<(i64, i64)> = s
        .conn
        .prepare_cached("SELECT id, dirty_ms FROM circuit WHERE dirty_ms IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, d) in dirty {
        let floor_ms = s
            .options
            .raw_retention_days
            .map_or(i64::MIN, |days| now_ms - days as i64 * DAY_MS);
        let tx = s.conn.unchecked_transaction()?;
        if let Some(w) = s.watermark(id, Tier::Minute)? {
            if d < w {
                lower(s, &tx, id, d.max(floor_ms))?;
                work += 1;
            }
        }
        tx.execute("UPDATE circuit SET dirty_ms=NULL WHERE id=?1", params![id])?;
        tx.commit()?;
    }
    loop {
        let before = work;
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
    // Retention.
    for id in ids(&s.conn, "SELECT id FROM circuit")? {
        if work >= budget {
            return Ok(work);
        }
        if retention(s, id, now_ms)? {
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
    let (start, end, buckets) = match tier.finer() {
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
            let end = final_end.min(start + MINUTE_STEP_MS);
            if end <= start {
                return Ok(false);
            }
            let recs = s.records_in(id, start, end)?;
            let prev = match recs.first() {
                Some(_) => s.record_before(id, start)?,
                None => None,
            };
            (
                start,
                end,
                rollup::aggregate_records(&recs, prev, dur, start, end),
            )
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
            let end = floor(wf, dur).min(start + RUN_BUCKETS as i64 * dur);
            if end <= start {
                return Ok(false);
            }
            let fine = s.stored_buckets(id, finer, start, end, None)?;
            (start, end, rollup::regroup(&fine, dur))
        }
    };
    let _ = start;
    let tx = s.conn.unchecked_transaction()?;
    write_run(&tx, id, tier, &buckets)?;
    set_watermark(&tx, id, tier, end)?;
    tx.commit()?;
    Ok(true)
}

/// Moves every tier's watermark of a circuit back to `w` (late data), dropping the
/// buckets from there on so they are computed again.
fn lower(s: &Store, tx: &Connection, id: i64, w: i64) -> Result<(), StoreError> {
    for tier in Tier::ROLLUPS {
        let Some(dur) = tier.duration_ms() else {
            continue;
        };
        let wt = floor(w, dur);
        match s.watermark(id, tier)? {
            Some(cur) if cur > wt => {}
            _ => continue,
        }
        let runs: Vec<(i64, i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT id, first_ms, data FROM rollup WHERE circuit=?1 AND tier=?2 AND last_ms>=?3",
            )?
            .query_map(params![id, tier.index(), wt], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (rid, first_ms, blob) in runs {
            tx.execute("DELETE FROM rollup WHERE id=?1", params![rid])?;
            if first_ms < wt {
                let keep: Vec<Agg> = rollup::decode_run(&blob)
                    .map_err(|e| corrupt(format!("rollup {rid}: {}", e.0)))?
                    .into_iter()
                    .filter(|a| a.start < wt)
                    .collect();
                write_run(tx, id, tier, &keep)?;
            }
        }
        set_watermark(tx, id, tier, wt)?;
    }
    Ok(())
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

/// Deletes what each tier's retention has expired for one circuit.
fn retention(s: &Store, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    let mut did = false;
    let tx = s.conn.unchecked_transaction()?;
    if let Some(days) = s.options.raw_retention_days {
        let cutoff = now_ms - days as i64 * DAY_MS;
        let (n, gone): (i64, Option<i64>) = tx
            .prepare_cached(
                "SELECT COUNT(*), SUM(count) FROM chunk WHERE circuit=?1 AND last_ms<?2",
            )?
            .query_row(params![id, cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if n > 0 {
            tx.execute(
                "DELETE FROM chunk WHERE circuit=?1 AND last_ms<?2",
                params![id, cutoff],
            )?;
            let (fs, fm): (Option<i64>, Option<i64>) = tx
                .prepare_cached(
                    "SELECT first_seq, first_ms FROM chunk WHERE circuit=?1 ORDER BY first_seq LIMIT 1",
                )?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((None, None));
            tx.execute(
                "UPDATE circuit SET records = records - ?2, \
                   first_seq = COALESCE(?3, last_seq), first_ms = COALESCE(?4, last_ms) WHERE id=?1",
                params![id, gone.unwrap_or(0), fs, fm],
            )?;
            did = true;
        }
        did |= tx.execute(
            "DELETE FROM gap WHERE circuit=?1 AND to_ms<?2",
            params![id, cutoff],
        )? > 0;
    }
    for tier in Tier::ROLLUPS {
        let (Some(days), Some(dur)) = (s.options.retention_days(tier), tier.duration_ms()) else {
            continue;
        };
        let cutoff = now_ms - days as i64 * DAY_MS;
        did |= tx.execute(
            "DELETE FROM rollup WHERE circuit=?1 AND tier=?2 AND last_ms + ?3 <= ?4",
            params![id, tier.index(), dur, cutoff],
        )? > 0;
    }
    tx.commit()?;
    Ok(did)
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
    let circuits: Vec<(i64, String, i64)> = s
        .conn
        .prepare("SELECT id, name, records FROM circuit ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rep.circuits = circuits.len();
    for (id, name, records) in &circuits {
        let mut st = s.conn.prepare_cached(
            "SELECT id, first_seq, last_seq, first_ms, last_ms, count, data FROM chunk \
             WHERE circuit=?1 ORDER BY first_seq",
        )?;
        let mut rows = st.query(params![id])?;
        let mut total = 0i64;
        let mut prev_last: Option<i64> = None;
        let mut newest_ms = i64::MIN;
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
                    continue;
                }
            };
            total += n;
            newest_ms = newest_ms.max(lm);
            let p = |m: String| format!("circuit {name:?} chunk {cid}: {m}");
            if prev_last.is_some_and(|pl| fs <= pl) {
                rep.problems
                    .push(p("seq range overlaps the previous chunk".into()));
            }
            prev_last = Some(ls);
            match chunk::decode(&blob) {
                Err(e) => rep.problems.push(p(format!("does not decode: {}", e.0))),
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
        // Coarser tiers against the finer ones, where the finer tier still covers them.
        for w in tier_buckets.windows(2) {
            let ((ft, fine), (ct, coarse)) = (&w[0], &w[1]);
            let Some(fine_first) = fine.first().map(|a| a.start) else {
                continue;
            };
            let dur = ct.duration_ms().unwrap_or(1);
            let fw = s.watermark(*id, *ft)?.unwrap_or(i64::MIN);
            let expect = rollup::regroup(fine, dur);
            for c in coarse {
                if c.start < fine_first || c.start + dur > fw {
                    continue;
                }
                let e = expect.iter().find(|e| e.start == c.start);
                if e != Some(c) {
                    rep.problems.push(format!(
                        "circuit {name:?}: {ct} bucket at {} differs from its {ft} buckets",
                        c.start
                    ));
                    break;
                }
            }
        }
        // 1m against raw over the newest day of raw data.
        if let Some((_, minute)) = tier_buckets.first() {
            let first_raw: Option<i64> = s.conn.query_row(
                "SELECT MIN(first_ms) FROM chunk WHERE circuit=?1",
                params![id],
                |r| r.get(0),
            )?;
            if let Some(first_raw) = first_raw {
                let from = (newest_ms - DAY_MS).max(first_raw + 60_000);
                let from = floor(from, 60_000) + 60_000;
                let to = s.watermark(*id, Tier::Minute)?.unwrap_or(i64::MIN);
                let raw = if from < to {
                    s.records_in(*id, from, to)
                        .and_then(|recs| Ok((recs, s.record_before(*id, from)?)))
                        .map_err(|e| {
                            rep.problems
                                .push(format!("circuit {name:?}: raw unreadable: {e}"))
                        })
                        .ok()
                } else {
                    None
                };
                if let Some((recs, prev)) = raw {
                    let expect = rollup::aggregate_records(&recs, prev, 60_000, from, to);
                    let stored: Vec<&Agg> = minute
                        .iter()
                        .filter(|a| a.start >= from && a.start < to)
                        .collect();
                    if stored.len() != expect.len()
                        || stored.iter().zip(&expect).any(|(a, b)| *a != b)
                    {
                        rep.problems.push(format!(
                            "circuit {name:?}: 1m rollups differ from the raw records"
                        ));
                    }
                }
            }
        }
    }
    rep.gaps = s
        .conn
        .query_row("SELECT COUNT(*) FROM gap", [], |r| r.get::<_, i64>(0))? as u64;
    rep.ok = rep.problems.is_empty();
    Ok(rep)
}
