//! Late data and rollups: records that reach the store after their buckets were finalised
//! (a backlog caught up in small commits, out-of-order batches, `now` far past the data,
//! retention in between) end up in every rollup tier exactly; `check` notices when not.

mod store_common;

use std::collections::BTreeMap;

use pmon_historian::store::*;
use store_common::{tmp, Gen, T0};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// `n` records of one circuit, 200 ms apart, from seq `seq` at `t0`.
fn records(seq: u64, t0: i64, n: usize) -> Vec<FrameRecord> {
    Gen::new(seq, t0).take(n)
}

fn counts(s: &Store, tier: Tier, from: i64, to: i64) -> Vec<(i64, u64)> {
    s.series("c", Quantity::Voltage, tier, from, to)
        .unwrap()
        .iter()
        .map(|p| (p.ts_ms - from, p.count))
        .collect()
}

/// Bug 1, as reported: a minute's records arrive in many commits with `maintain` in
/// between and `now` far past them (a historian catching up a backlog). The 1m rollup
/// kept only the first commit's 15 records, minute 1 went missing, and `check` saw
/// nothing; raw retention then deleted the records, so they were gone from every tier.
#[test]
fn backlog_commits_with_maintain_between_all_reach_the_rollups() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, StoreOptions::default()).unwrap();
    let t0 = 1_764_000_000_000;
    let now = t0 + 365 * 86_400_000;
    let recs = records(1, t0, 600); // 600 records, 200 ms apart, one circuit
    for c in recs.chunks(15) {
        s.ingest("c", c).unwrap();
        s.commit().unwrap();
        s.maintain(now, 64).unwrap();
    }
    // Raw still holds all 600 here: the check compares every final 1m bucket with it.
    let rep = s.check().unwrap();
    assert!(rep.ok, "{:?}", rep.problems);
    assert_eq!(
        counts(&s, Tier::Minute, t0, t0 + 3 * MIN),
        [(0, 300), (MIN, 300)]
    );
    while s.maintain(now, 64).unwrap() > 0 {}
    assert_eq!(
        counts(&s, Tier::Minute, t0, t0 + 3 * MIN),
        [(0, 300), (MIN, 300)]
    );
    for tier in [Tier::Quarter, Tier::Hour, Tier::Day] {
        let total: u64 = counts(&s, tier, t0 - DAY, t0 + DAY)
            .iter()
            .map(|c| c.1)
            .sum();
        assert_eq!(total, 600, "{tier}");
    }
    let day = s.energy("c", Period::Day, "UTC", t0, t0 + 1).unwrap();
    let want = recs[599].energy_import_mwh - recs[0].energy_import_mwh;
    assert_eq!(day[0].import_kwh, want as f64 / 1e6);
    // Retention has deleted the raw records by now (30 days), the rollups keep them.
    assert_eq!(s.circuits().unwrap()[0].records, 0);
    let rep = s.check().unwrap();
    assert!(rep.ok, "{:?}", rep.problems);
}

/// The same backlog when retention has already deleted the raw records of the minute
/// (maintenance runs to idle between commits): the rest of the minute is folded into the
/// stored buckets, exactly, energy included.
#[test]
fn backlog_below_deleted_raw_is_folded_into_the_rollups() {
    for retention in [StoreOptions::default(), no_retention()] {
        let (_d, path) = tmp();
        let mut s = Store::open(&path, retention.clone()).unwrap();
        let t0 = 1_764_000_000_000;
        let now = t0 + 365 * DAY;
        let recs = records(1, t0, 600);
        for c in recs.chunks(15) {
            s.ingest("c", c).unwrap();
            s.commit().unwrap();
            let rep = s.check().unwrap();
            assert!(rep.ok, "{:?}", rep.problems);
            while s.maintain(now, 64).unwrap() > 0 {}
            let rep = s.check().unwrap();
            assert!(rep.ok, "{:?}", rep.problems);
        }
        assert_eq!(
            counts(&s, Tier::Minute, t0, t0 + 3 * MIN),
            [(0, 300), (MIN, 300)]
        );
        let got = s
            .series("c", Quantity::Current, Tier::Minute, t0, t0 + H)
            .unwrap();
        let want = brute(&recs, MIN);
        for (g, w) in got.iter().zip(want.values()) {
            assert_eq!(g.mean, w.mean(Quantity::Current));
            assert_eq!(g.max, w.max[qi(Quantity::Current)] as f64 * 1e-6);
        }
        let day = s.energy("c", Period::Day, "UTC", t0, t0 + 1).unwrap();
        let want = recs[599].energy_import_mwh - recs[0].energy_import_mwh;
        assert_eq!(day[0].import_kwh, want as f64 / 1e6);
    }
}

/// A minute caught up two minutes late (`now` just past the grace period) was always
/// fine; it still is, without any recomputation of the rest of the tiers.
#[test]
fn backlog_just_past_the_grace_period() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, StoreOptions::default()).unwrap();
    let recs = records(1, T0, 600);
    for c in recs.chunks(15) {
        s.ingest("c", c).unwrap();
        s.commit().unwrap();
        s.maintain(T0 + 3 * MIN, 64).unwrap();
        assert!(s.check().unwrap().ok);
    }
    assert_eq!(
        counts(&s, Tier::Minute, T0, T0 + 3 * MIN),
        [(0, 300), (MIN, 300)]
    );
}

/// `check` compares every final 1m bucket with the raw records, not only the newest day:
/// a rollup run that lost records is found.
#[test]
fn check_finds_a_1m_bucket_that_differs_from_raw() {
    let (_d, path) = tmp();
    {
        let mut s = Store::open(&path, no_retention()).unwrap();
        s.ingest("c", &records(1, T0, 20_000)).unwrap();
        s.commit().unwrap();
        while s.maintain(T0 + 30 * DAY, 100).unwrap() > 0 {}
        // Newer data (more than a day after), so the bad bucket is not in the newest day.
        s.ingest("c", &records(30_000, T0 + 3 * DAY, 100)).unwrap();
        s.commit().unwrap();
        while s.maintain(T0 + 30 * DAY, 100).unwrap() > 0 {}
        assert!(s.check().unwrap().ok);
    }
    // Take the first 1m run away, from the 1m tier only (the coarser tiers keep it).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "DELETE FROM rollup WHERE id = (SELECT id FROM rollup WHERE tier = 1 ORDER BY first_ms LIMIT 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let rep = Store::open_read_only(&path).unwrap().check().unwrap();
    assert!(!rep.ok);
    assert!(
        rep.problems
            .iter()
            .any(|p| p.contains("1m bucket at") && p.contains("the raw records")),
        "{:?}",
        rep.problems
    );
    assert!(
        rep.problems.iter().any(|p| p.contains("its 1m buckets")),
        "{:?}",
        rep.problems
    );
}

/// Bug 2: a circuit's span is that of its stored records (the API showed the start of the
/// oldest rollup bucket as `first`).
#[test]
fn circuit_summary_spans_the_stored_records() {
    let (_d, path) = tmp();
    let o = StoreOptions {
        raw_retention_days: Some(1),
        ..StoreOptions::default()
    };
    let mut s = Store::open(&path, o).unwrap();
    let t = T0 + 37_123;
    let recs = records(100, t, 3000);
    s.ingest("c", &recs[10..]).unwrap();
    s.commit().unwrap();
    while s.maintain(t + H, 100).unwrap() > 0 {}
    let span = |s: &Store| {
        let c = &s.circuits().unwrap()[0];
        (c.first_ms, c.last_ms)
    };
    assert_eq!(span(&s), (recs[10].ts_ms, recs[2999].ts_ms));
    assert_eq!(
        s.circuits().unwrap()[0].history_first_ms,
        recs[10].ts_ms.div_euclid(DAY) * DAY,
        "the oldest rollup bucket starts on the hour"
    );
    // Older records arrive late.
    s.ingest("c", &recs[..10]).unwrap();
    s.commit().unwrap();
    assert_eq!(span(&s), (recs[0].ts_ms, recs[2999].ts_ms));
    // Retention deletes the first chunks: the span starts at the oldest record left.
    let later = records(10_000, t + 2 * DAY, 5000);
    s.ingest("c", &later).unwrap();
    s.commit().unwrap();
    while s.maintain(t + 3 * DAY, 100).unwrap() > 0 {}
    let raw = s
        .raw_page("c", i64::MIN, i64::MAX, None, usize::MAX)
        .unwrap();
    assert!(raw[0].ts_ms > recs[2999].ts_ms);
    assert_eq!(span(&s), (raw[0].ts_ms, later[4999].ts_ms));
    // The rollups keep the older history: where ranges over them start.
    let c = &s.circuits().unwrap()[0];
    assert_eq!(c.history_first_ms, recs[0].ts_ms.div_euclid(DAY) * DAY);
}

/// A seq at or below the newest one retention deleted cannot be told from a duplicate: it
/// is refused (counted as a duplicate) rather than counted twice in the rollups.
#[test]
fn a_seq_retention_deleted_is_not_counted_twice() {
    let (_d, path) = tmp();
    let o = StoreOptions {
        raw_retention_days: Some(1),
        ..StoreOptions::default()
    };
    let mut s = Store::open(&path, o).unwrap();
    let old = records(1, T0, 3000);
    s.ingest("c", &old[..1000]).unwrap();
    s.ingest("c", &old[1010..]).unwrap();
    s.commit().unwrap();
    s.ingest("c", &records(10_000, T0 + 3 * DAY, 100)).unwrap();
    s.commit().unwrap();
    while s.maintain(T0 + 4 * DAY, 100).unwrap() > 0 {}
    assert!(s.raw_page("c", T0, T0 + DAY, None, 10).unwrap().is_empty());
    let before = counts(&s, Tier::Hour, T0, T0 + DAY);
    let o = s.ingest("c", &old).unwrap();
    assert_eq!((o.inserted, o.duplicates), (0, 3000));
    s.commit().unwrap();
    while s.maintain(T0 + 4 * DAY, 100).unwrap() > 0 {}
    assert_eq!(counts(&s, Tier::Hour, T0, T0 + DAY), before);
    assert_eq!(before.iter().map(|c| c.1).sum::<u64>(), 2990);
    assert!(s.check().unwrap().ok);
}

/// A store written by format 1 (no record of what retention deleted) is read as it is and
/// upgraded when opened for writing; late data then does not wipe its rollups.
#[test]
fn a_format_1_store_is_upgraded() {
    let (_d, path) = tmp();
    let o = StoreOptions {
        raw_retention_days: Some(1),
        ..StoreOptions::default()
    };
    let recs = records(1, T0, 10_000);
    {
        let mut s = Store::open(&path, o.clone()).unwrap();
        s.ingest("c", &recs[..5000]).unwrap();
        s.ingest("c", &records(20_000, T0 + 2 * DAY, 100)).unwrap();
        s.commit().unwrap();
        while s.maintain(T0 + 2 * DAY + H, 100).unwrap() > 0 {}
        assert!(s.raw_page("c", T0, T0 + DAY, None, 10).unwrap().is_empty());
    }
    let before = counts(&s_ro(&path), Tier::Minute, T0, T0 + DAY);
    assert_eq!(before.iter().map(|c| c.1).sum::<u64>(), 5000);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DELETE FROM expired; UPDATE meta SET value = 1 WHERE key = 'format'")
        .unwrap();
    drop(conn);
    let rep = s_ro(&path).check().unwrap();
    assert!(rep.ok, "{:?}", rep.problems);
    {
        let mut s = Store::open(&path, o.clone()).unwrap();
        // The rest of the first day arrives late. Format 1 did not record which seqs
        // retention deleted, so every seq below the oldest stored one counts as possibly
        // deleted: refused, not counted twice.
        let late = s.ingest("c", &recs[5000..]).unwrap();
        assert_eq!((late.inserted, late.duplicates), (0, 5000));
        s.ingest("c", &records(30_000, T0 + 2 * DAY + 3 * MIN, 10))
            .unwrap();
        s.commit().unwrap();
        while s.maintain(T0 + 2 * DAY + H, 100).unwrap() > 0 {}
        let rep = s.check().unwrap();
        assert!(rep.ok, "{:?}", rep.problems);
    }
    assert_eq!(counts(&s_ro(&path), Tier::Minute, T0, T0 + DAY), before);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(v, FORMAT_VERSION);
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'format'", [])
        .unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(&path, o),
        Err(StoreError::Version(99))
    ));
    assert!(matches!(
        Store::open_read_only(&path),
        Err(StoreError::Version(99))
    ));
}

fn s_ro(path: &std::path::Path) -> Store {
    Store::open_read_only(path).unwrap()
}

/// Index of a quantity in `Quantity::ALL` (the order of rollup columns).
fn qi(q: Quantity) -> usize {
    Quantity::ALL.iter().position(|x| *x == q).unwrap()
}

fn no_retention() -> StoreOptions {
    StoreOptions {
        raw_retention_days: None,
        minute_retention_days: None,
        quarter_retention_days: None,
        hour_retention_days: None,
        day_retention_days: None,
    }
}

/// One expected bucket, from the records.
#[derive(Debug, Clone, PartialEq)]
struct Want {
    count: u64,
    dur_us: i64,
    min: [i64; 11],
    max: [i64; 11],
    sum: [i64; 11],
}

impl Want {
    fn mean(&self, q: Quantity) -> f64 {
        self.sum[qi(q)] as f64 / self.count as f64 * q.scale()
    }
}

/// Buckets of `dur` over records in seq order.
fn brute(recs: &[FrameRecord], dur: i64) -> BTreeMap<i64, Want> {
    let mut out: BTreeMap<i64, Want> = BTreeMap::new();
    for r in recs {
        let w = out.entry(r.ts_ms.div_euclid(dur) * dur).or_insert(Want {
            count: 0,
            dur_us: 0,
            min: [i64::MAX; 11],
            max: [i64::MIN; 11],
            sum: [0; 11],
        });
        w.count += 1;
        w.dur_us += r.duration_us as i64;
        for q in Quantity::ALL {
            let (i, v) = (qi(q), q.fixed(r));
            w.min[i] = w.min[i].min(v);
            w.max[i] = w.max[i].max(v);
            w.sum[i] = w.sum[i].wrapping_add(v);
        }
    }
    out
}

/// Energy per period from counter differences between consecutive records (seq order).
fn brute_energy(recs: &[FrameRecord], bounds: &[i64]) -> Vec<(u64, u64)> {
    let mut out = vec![(0u64, 0u64); bounds.len().saturating_sub(1)];
    let delta = |p: u64, c: u64| if c >= p { c - p } else { c };
    for w in recs.windows(2) {
        let i = bounds.partition_point(|&b| b <= w[1].ts_ms);
        if i >= 1 && i < bounds.len() {
            out[i - 1].0 += delta(w[0].energy_import_mwh, w[1].energy_import_mwh);
            out[i - 1].1 += delta(w[0].energy_export_mwh, w[1].energy_export_mwh);
        }
    }
    out
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    /// `now` for a maintenance call, relative to the newest record seen so far: from an
    /// hour behind (a clock that went back) to ten years ahead.
    const NOWS: [i64; 8] = [
        -H,
        MIN,
        3 * MIN,
        H,
        2 * DAY,
        40 * DAY,
        400 * DAY,
        3650 * DAY,
    ];

    fn options(k: u8) -> StoreOptions {
        match k {
            0 => no_retention(),
            1 => StoreOptions::default(),
            _ => StoreOptions {
                raw_retention_days: Some(1),
                minute_retention_days: Some(2),
                ..StoreOptions::default()
            },
        }
    }

    /// Every bucket of every tier the store returns equals the one computed from the
    /// accepted records; every bucket that retention cannot have deleted yet is there.
    fn tiers_match(
        s: &Store,
        recs: &[FrameRecord],
        o: &StoreOptions,
        max_now: i64,
    ) -> Result<(), TestCaseError> {
        for tier in Tier::ROLLUPS {
            let dur = tier.duration_ms().unwrap();
            let want = brute(recs, dur);
            let kept_from = o
                .retention_days(tier)
                .map_or(i64::MIN, |d| max_now - d as i64 * DAY);
            for q in Quantity::ALL {
                let got = s.series("x", q, tier, i64::MIN / 2, i64::MAX / 2).unwrap();
                for p in &got {
                    let w = want.get(&p.ts_ms);
                    prop_assert!(w.is_some(), "{tier} {q}: extra bucket at {}", p.ts_ms);
                    let w = w.unwrap();
                    let i = qi(q);
                    prop_assert_eq!(p.count, w.count, "{} {} at {}", tier, q, p.ts_ms);
                    prop_assert_eq!(p.min, w.min[i] as f64 * q.scale(), "{} {}", tier, q);
                    prop_assert_eq!(p.max, w.max[i] as f64 * q.scale(), "{} {}", tier, q);
                    prop_assert_eq!(p.mean, w.mean(q), "{} {}", tier, q);
                    let cov = (w.dur_us as f64 / (dur as f64 * 1000.0)).min(1.0);
                    prop_assert_eq!(p.coverage, cov, "{} {}", tier, q);
                }
                for start in want.keys().filter(|&&b| b + dur > kept_from) {
                    prop_assert!(
                        got.iter().any(|p| p.ts_ms == *start),
                        "{} {}: bucket at {} missing",
                        tier,
                        q,
                        start
                    );
                }
            }
        }
        // Energy per UTC day (from 1h buckets) and per Kolkata day (15m buckets).
        let (first, last) = (recs[0].ts_ms, recs[recs.len() - 1].ts_ms);
        for (tz, off) in [("UTC", 0), ("Asia/Kolkata", 5 * H + 30 * MIN)] {
            let days = s.energy("x", Period::Day, tz, first, last + 1).unwrap();
            let mut bounds: Vec<i64> = days.iter().map(|d| d.start_ms).collect();
            bounds.push(bounds[bounds.len() - 1] + DAY);
            prop_assert_eq!(bounds[0].rem_euclid(DAY), (DAY - off) % DAY);
            let want = brute_energy(recs, &bounds);
            for (d, w) in days.iter().zip(&want) {
                prop_assert_eq!(d.import_kwh, w.0 as f64 / 1e6, "{} {}", tz, d.start_ms);
                prop_assert_eq!(d.export_kwh, w.1 as f64 / 1e6, "{} {}", tz, d.start_ms);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Random interleavings of ingest, commit and maintenance, batches out of order or
        /// delivered twice, `now` anywhere from an hour behind the data to ten years past
        /// it, with and without retention: after `while maintain(..) > 0 {}` every tier
        /// holds exactly the aggregates of the records the store took, and `check` is
        /// happy after every step.
        #[test]
        fn rollups_equal_raw_aggregates_whatever_the_interleaving(
            n in 1usize..1500,
            start_off in 0i64..DAY,
            spacing in prop::sample::select(vec![0i64, 9_800, 59_800]),
            sizes in prop::collection::vec(1usize..300, 1..8),
            swaps in prop::collection::vec((0usize..64, 0usize..64), 0..5),
            resend in prop::collection::vec(0usize..64, 0..2),
            steps in prop::collection::vec((0u8..4, 0usize..8, 1usize..64), 1..16),
            final_now in 0usize..8,
            retention in 0u8..3,
        ) {
            let o = options(retention);
            let (_d, path) = tmp();
            let mut s = Store::open(&path, o.clone()).unwrap();
            let mut g = Gen::new(7, T0 + start_off);
            let all: Vec<FrameRecord> = (0..n)
                .map(|_| {
                    let r = g.next_record();
                    g.ts += spacing;
                    r
                })
                .collect();
            let mut batches: Vec<&[FrameRecord]> = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < all.len() {
                let end = (pos + sizes[i % sizes.len()]).min(all.len());
                batches.push(&all[pos..end]);
                pos = end;
                i += 1;
            }
            for (a, b) in &swaps {
                let len = batches.len();
                batches.swap(a % len, b % len);
            }
            for k in &resend {
                let b = batches[k % batches.len()];
                batches.push(b);
            }
            let mut taken: BTreeMap<u64, FrameRecord> = BTreeMap::new();
            let mut newest = i64::MIN;
            let mut max_now = i64::MIN;
            for (k, batch) in batches.iter().enumerate() {
                for r in batch.iter() {
                    // One at a time, to know which records the store took.
                    if s.ingest("x", std::slice::from_ref(r)).unwrap().inserted == 1 {
                        prop_assert!(taken.insert(r.seq, *r).is_none());
                    }
                    newest = newest.max(r.ts_ms);
                }
                let (what, now_i, budget) = steps[k % steps.len()];
                let now = newest + NOWS[now_i];
                if what == 0 {
                    continue; // commit later, with the next batch
                }
                s.commit().unwrap();
                let rep = s.check().unwrap();
                prop_assert!(rep.ok, "after commit {}: {:?}", k, rep.problems);
                if what >= 2 {
                    max_now = max_now.max(now);
                    if what == 3 {
                        while s.maintain(now, budget).unwrap() > 0 {}
                    } else {
                        s.maintain(now, budget).unwrap();
                    }
                    let rep = s.check().unwrap();
                    prop_assert!(rep.ok, "after maintain {}: {:?}", k, rep.problems);
                }
            }
            s.commit().unwrap();
            let now = newest + NOWS[final_now];
            max_now = max_now.max(now);
            while s.maintain(now, 100).unwrap() > 0 {}
            let rep = s.check().unwrap();
            prop_assert!(rep.ok, "{:?}", rep.problems);
            if retention == 0 {
                prop_assert_eq!(taken.len(), all.len(), "nothing refused without retention");
            }
            let recs: Vec<FrameRecord> = taken.into_values().collect();
            tiers_match(&s, &recs, &o, max_now)?;
        }
    }
}
