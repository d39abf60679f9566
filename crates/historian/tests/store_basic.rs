//! Store behaviour: idempotent ingest, gaps, rollups, energy, retention, check, readers.

mod store_common;

use pmon_historian::store::*;
use store_common::{tmp, Gen, T0};

const H: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn opts() -> StoreOptions {
    StoreOptions::default()
}

#[test]
fn ingest_is_idempotent_across_commit_and_reopen() {
    let (_d, path) = tmp();
    let recs = Gen::new(1000, T0).take(5000);
    {
        let mut s = Store::open(&path, opts()).unwrap();
        let o = s.ingest("a", &recs[..3000]).unwrap();
        assert_eq!((o.inserted, o.duplicates, o.gaps), (3000, 0, 0));
        // Staged duplicates.
        let o = s.ingest("a", &recs[2000..3500]).unwrap();
        assert_eq!((o.inserted, o.duplicates), (500, 1000));
        assert_eq!(s.staged(), 3500);
        s.commit().unwrap();
        assert_eq!(s.staged(), 0);
        // Stored duplicates, including ones in a chunk other than the newest.
        let o = s.ingest("a", &recs[..4000]).unwrap();
        assert_eq!((o.inserted, o.duplicates), (500, 3500));
        s.commit().unwrap();
    }
    let mut s = Store::open(&path, opts()).unwrap();
    let o = s.ingest("a", &recs).unwrap();
    assert_eq!((o.inserted, o.duplicates), (1000, 4000));
    s.commit().unwrap();
    s.maintain(T0 + DAY, usize::MAX).unwrap();
    let page = s
        .raw_page("a", i64::MIN, i64::MAX, None, usize::MAX)
        .unwrap();
    assert_eq!(page, recs);
    let c = s.circuits().unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].records, 5000);
    assert_eq!(c[0].coverage, 1.0);
    assert_eq!(
        (c[0].first_ms, c[0].last_ms),
        (recs[0].ts_ms, recs[4999].ts_ms)
    );
    let rep = s.check().unwrap();
    assert!(rep.ok, "{:?}", rep.problems);
    assert_eq!(rep.records, 5000);
}

#[test]
fn gaps_are_recorded_and_filled_by_late_records() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, opts()).unwrap();
    let recs = Gen::new(1, T0).take(100);
    let mut sent: Vec<FrameRecord> = recs[..10].to_vec();
    sent.extend_from_slice(&recs[20..30]);
    let mut restart = recs[50];
    restart.flags |= pmon_proto::frame::flag::RESTART;
    sent.push(restart);
    let o = s.ingest("c", &sent).unwrap();
    assert_eq!(o.gaps, 2);
    s.commit().unwrap();
    let g = s.gaps("c", i64::MIN, i64::MAX).unwrap();
    assert_eq!(
        g.iter()
            .map(|g| (g.after_seq, g.before_seq))
            .collect::<Vec<_>>(),
        vec![(10, 21), (30, 51)]
    );
    assert_eq!((g[0].from_ms, g[0].to_ms), (recs[9].ts_ms, recs[20].ts_ms));
    // The missing records arrive late (a redelivered frame): the gap shrinks, then closes.
    let o = s.ingest("c", &recs[12..15]).unwrap();
    assert_eq!((o.inserted, o.gaps), (3, 0));
    s.commit().unwrap();
    let g = s.gaps("c", i64::MIN, i64::MAX).unwrap();
    assert_eq!(
        g.iter()
            .map(|g| (g.after_seq, g.before_seq))
            .collect::<Vec<_>>(),
        vec![(10, 13), (15, 21), (30, 51)]
    );
    s.ingest("c", &recs[10..12]).unwrap();
    s.ingest("c", &recs[15..20]).unwrap();
    s.commit().unwrap();
    let g = s.gaps("c", i64::MIN, i64::MAX).unwrap();
    assert_eq!(g.len(), 1);
    let all = s.raw_page("c", i64::MIN, i64::MAX, None, 1000).unwrap();
    assert_eq!(all.len(), 31);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all[30].flags & pmon_proto::frame::flag::RESTART != 0);
    let c = &s.circuits().unwrap()[0];
    assert!((c.coverage - 31.0 / 51.0).abs() < 1e-9);
    assert!(s.check().unwrap().ok);
}

fn brute_force(recs: &[FrameRecord], q: Quantity, dur: i64) -> Vec<(i64, f64, f64, f64, u64)> {
    let mut out: Vec<(i64, f64, f64, f64, u64)> = Vec::new();
    for r in recs {
        let b = r.ts_ms.div_euclid(dur) * dur;
        let v = q.value(r);
        match out.last_mut() {
            Some(p) if p.0 == b => {
                p.1 = p.1.min(v);
                p.2 = p.2.max(v);
                p.3 += v;
                p.4 += 1;
            }
            _ => out.push((b, v, v, v, 1)),
        }
    }
    for p in &mut out {
        p.3 /= p.4 as f64;
    }
    out
}

fn assert_series_match(s: &Store, recs: &[FrameRecord], tier: Tier) {
    let dur = tier.duration_ms().unwrap();
    for q in Quantity::ALL {
        let got = s.series("x", q, tier, i64::MIN / 2, i64::MAX / 2).unwrap();
        let want = brute_force(recs, q, dur);
        assert_eq!(got.len(), want.len(), "{tier} {q}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.ts_ms, w.0);
            assert_eq!((g.min, g.max, g.count), (w.1, w.2, w.4), "{tier} {q}");
            assert!(
                (g.mean - w.3).abs() <= 1e-9 * w.3.abs().max(1.0),
                "{tier} {q}"
            );
        }
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Rollups (stored after maintenance, or computed for the tail) equal the aggregates of
        /// the raw records, whatever the commit and maintenance pattern and with late data.
        #[test]
        fn rollups_equal_raw_aggregates(
            n in 1usize..6000,
            start_off in 0i64..86_400_000,
            batches in proptest::collection::vec(1usize..900, 1..8),
            skip in proptest::collection::vec(0usize..6000, 0..4),
            maintain_every in 1usize..4,
        ) {
            let (_d, path) = tmp();
            let mut s = Store::open(&path, StoreOptions::default()).unwrap();
            let mut recs = Gen::new(7, T0 + start_off).take(n);
            for k in &skip {
                let k = k % recs.len();
                // A hole of a few records (a gap).
                recs.drain(k..(k + 3).min(recs.len()));
                if recs.is_empty() { break; }
            }
            prop_assume!(!recs.is_empty());
            // Send the second half of the first batch late to exercise recomputation.
            let mut pos = 0;
            let mut late: Vec<FrameRecord> = Vec::new();
            let mut i = 0;
            while pos < recs.len() {
                let b = batches[i % batches.len()];
                let end = (pos + b).min(recs.len());
                if i == 0 && end - pos > 10 {
                    let mid = pos + (end - pos) / 2;
                    s.ingest("x", &recs[pos..mid]).unwrap();
                    late.extend_from_slice(&recs[mid..end]);
                } else {
                    s.ingest("x", &recs[pos..end]).unwrap();
                }
                s.commit().unwrap();
                let now = recs[end - 1].ts_ms;
                if i % maintain_every == 0 {
                    s.maintain(now, 50).unwrap();
                }
                pos = end;
                i += 1;
            }
            s.ingest("x", &late).unwrap();
            s.commit().unwrap();
            let last = recs[recs.len() - 1].ts_ms;
            for t in Tier::ROLLUPS {
                assert_series_match(&s, &recs, t);
            }
            while s.maintain(last + 3 * DAY, 100).unwrap() > 0 {}
            for t in Tier::ROLLUPS {
                assert_series_match(&s, &recs, t);
            }
            let rep = s.check().unwrap();
            prop_assert!(rep.ok, "{:?}", rep.problems);
            prop_assert!(rep.rollup_blocks > 0);
        }
    }
}

/// A day of records at one record every 10 s, with a slave restart mid-day: a seq jump,
/// the RESTART flag, and the totals carried on by the acquisition.
fn day_with_restart(day_start: i64, day_ms: i64) -> Vec<FrameRecord> {
    let mut g = Gen::new(1, day_start - 60_000);
    let mut out = Vec::new();
    while g.ts < day_start + day_ms + 60_000 {
        let mut r = g.next_record();
        g.ts += 9_800;
        if r.ts_ms >= day_start + day_ms / 2 && out.len() % 1000 == 500 {
            // Restart: blocks lost, seq jumps, flag set.
            g.seq += 37;
            r.flags |= pmon_proto::frame::flag::RESTART;
        }
        out.push(r);
    }
    out
}

fn counter_at(recs: &[FrameRecord], before: i64) -> (u64, u64) {
    let r = recs.iter().rev().find(|r| r.ts_ms < before).unwrap();
    (r.energy_import_mwh, r.energy_export_mwh)
}

#[test]
fn energy_per_day_is_the_counter_difference_across_dst_and_restarts() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, opts()).unwrap();
    // Berlin: 2024-03-31 starts at 2024-03-30T23:00Z and lasts 23 hours.
    let day0 = T0 - H;
    let recs = day_with_restart(day0 - DAY, 2 * DAY + 23 * H);
    s.ingest("e", &recs).unwrap();
    s.commit().unwrap();
    let check = |s: &Store| {
        let days = s
            .energy("e", Period::Day, "Europe/Berlin", day0, day0 + 23 * H)
            .unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].start_ms, day0);
        let (i0, e0) = counter_at(&recs, day0);
        let (i1, e1) = counter_at(&recs, day0 + 23 * H);
        assert!((days[0].import_kwh - (i1 - i0) as f64 / 1e6).abs() < 1e-9);
        assert!((days[0].export_kwh - (e1 - e0) as f64 / 1e6).abs() < 1e-9);
        // Three local days: 24 h, 23 h (DST), 24 h.
        let three = s
            .energy(
                "e",
                Period::Day,
                "Europe/Berlin",
                day0 - DAY,
                day0 + 23 * H + 1,
            )
            .unwrap();
        assert_eq!(
            three.iter().map(|b| b.start_ms).collect::<Vec<_>>(),
            vec![day0 - DAY, day0, day0 + 23 * H]
        );
        // A week from Monday 2024-03-25 (local) holds them all.
        let week = s
            .energy("e", Period::Week, "Europe/Berlin", day0, day0 + 1)
            .unwrap();
        assert_eq!(week.len(), 1);
        assert_eq!(week[0].start_ms, day0 - 6 * DAY);
        // India (UTC+5:30): boundaries on quarter hours.
        let ist = s
            .energy("e", Period::Day, "Asia/Kolkata", day0, day0 + 1)
            .unwrap();
        let start = ist[0].start_ms;
        let (i0, _) = counter_at(&recs, start);
        let (i1, _) = counter_at(&recs, start + DAY);
        assert!((ist[0].import_kwh - (i1 - i0) as f64 / 1e6).abs() < 1e-9);
    };
    check(&s);
    while s.maintain(day0 + 5 * DAY, 100).unwrap() > 0 {}
    check(&s);
    assert!(matches!(
        s.energy("e", Period::Day, "Mars/Olympus", 0, 1),
        Err(StoreError::UnknownTimeZone(_))
    ));
    assert!(matches!(
        s.energy("nope", Period::Day, "UTC", 0, 1),
        Err(StoreError::UnknownCircuit(_))
    ));
}

#[test]
fn a_counter_that_goes_down_is_a_reset_not_negative_energy() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, opts()).unwrap();
    let mut recs = Gen::new(1, T0).take(3000);
    // A replaced board whose totals restarted at 0 (the acquisition should prevent it).
    let base = recs[1500].energy_import_mwh;
    for r in &mut recs[1500..] {
        r.energy_import_mwh -= base - 100;
    }
    s.ingest("r", &recs).unwrap();
    s.commit().unwrap();
    let e = s.energy("r", Period::Day, "UTC", T0, T0 + 1).unwrap();
    let before = recs[1499].energy_import_mwh - recs[0].energy_import_mwh;
    let after = recs[2999].energy_import_mwh;
    assert!((e[0].import_kwh - (before + after) as f64 / 1e6).abs() < 1e-9);
}

#[test]
fn retention_removes_old_raw_and_keeps_rollups() {
    let (_d, path) = tmp();
    let o = StoreOptions {
        raw_retention_days: Some(1),
        minute_retention_days: Some(2),
        ..StoreOptions::default()
    };
    let mut s = Store::open(&path, o).unwrap();
    let mut g = Gen::new(1, T0);
    for _ in 0..4 {
        // 4 days at one record a minute.
        let mut day = Vec::new();
        for _ in 0..1440 {
            day.push(g.next_record());
            g.ts += 59_800;
        }
        s.ingest("k", &day).unwrap();
        s.commit().unwrap();
    }
    let now = T0 + 4 * DAY;
    while s.maintain(now, 100).unwrap() > 0 {}
    let raw = s
        .raw_page("k", i64::MIN, i64::MAX, None, usize::MAX)
        .unwrap();
    assert!(raw.iter().all(|r| r.ts_ms >= now - DAY - 3_600_000));
    assert!(raw.len() >= 1440 - 60);
    let minute = s
        .series("k", Quantity::Voltage, Tier::Minute, T0, now)
        .unwrap();
    // Retention drops whole runs of buckets, so up to one run (1024 buckets) more remains.
    let keep_from = now - 2 * DAY - RUN_BUCKETS as i64 * 60_000;
    assert!(minute.iter().all(|p| p.ts_ms >= keep_from));
    assert!(minute.len() < 2 * 1440 + RUN_BUCKETS);
    let hour = s
        .series("k", Quantity::Voltage, Tier::Hour, T0, now)
        .unwrap();
    assert_eq!(hour.len(), 96);
    assert_eq!(hour.iter().map(|p| p.count).sum::<u64>(), 4 * 1440);
    let c = &s.circuits().unwrap()[0];
    assert_eq!(c.records as usize, raw.len());
    // The oldest and newest stored raw records, not the oldest rollup bucket.
    assert_eq!(
        (c.first_ms, c.last_ms),
        (raw[0].ts_ms, raw[raw.len() - 1].ts_ms)
    );
    let rep = s.check().unwrap();
    assert!(rep.ok, "{:?}", rep.problems);
}

#[test]
fn check_detects_a_corrupted_chunk_and_rollup() {
    let (_d, path) = tmp();
    {
        let mut s = Store::open(&path, opts()).unwrap();
        s.ingest("z", &Gen::new(1, T0).take(10_000)).unwrap();
        s.commit().unwrap();
        while s.maintain(T0 + DAY, 100).unwrap() > 0 {}
        assert!(s.check().unwrap().ok);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE chunk SET data = CAST(substr(data, 1, 40) || x'00FF' || substr(data, 43) AS BLOB) \
         WHERE id = (SELECT MIN(id) FROM chunk)",
        [],
    )
    .unwrap();
    drop(conn);
    let s = Store::open_read_only(&path).unwrap();
    let rep = s.check().unwrap();
    assert!(!rep.ok);
    assert!(
        rep.problems.iter().any(|p| p.contains("does not decode")),
        "{:?}",
        rep.problems
    );
    assert!(matches!(
        s.raw_page("z", i64::MIN, i64::MAX, None, usize::MAX),
        Err(StoreError::Corrupt(_))
    ));
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    // A rollup whose count was changed consistently with its checksum cannot be faked
    // cheaply, so change the index row instead: the bounds no longer match.
    conn.execute(
        "UPDATE rollup SET buckets = buckets + 1 WHERE id = (SELECT MIN(id) FROM rollup)",
        [],
    )
    .unwrap();
    drop(conn);
    let rep = Store::open_read_only(&path).unwrap().check().unwrap();
    assert!(
        rep.problems.iter().any(|p| p.contains("rollup")),
        "{:?}",
        rep.problems
    );
}

#[test]
fn read_only_open_sees_a_live_writer() {
    let (_d, path) = tmp();
    let mut w = Store::open(&path, opts()).unwrap();
    let mut g = Gen::new(1, T0);
    w.ingest("a", &g.take(100)).unwrap();
    w.commit().unwrap();
    let r = Store::open_read_only(&path).unwrap();
    assert_eq!(r.circuits().unwrap()[0].records, 100);
    let writer = std::thread::spawn(move || {
        for _ in 0..50 {
            w.ingest("a", &g.take(100)).unwrap();
            w.commit().unwrap();
            w.maintain(T0, 10).unwrap();
        }
        w
    });
    let mut seen = 0;
    for _ in 0..50 {
        let n = r.raw_stream(&[], i64::MIN, i64::MAX).unwrap().count();
        assert!(n >= seen);
        seen = n;
    }
    let w = writer.join().unwrap();
    assert_eq!(r.circuits().unwrap()[0].records, 5100);
    assert!(matches!(
        Store::open_read_only(&path).unwrap().commit(),
        Err(StoreError::ReadOnly)
    ));
    drop(w);
}

#[test]
fn raw_stream_orders_by_time_then_circuit() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, opts()).unwrap();
    for (c, off) in [("b", 0), ("a", 0), ("c", 50)] {
        s.ingest(c, &Gen::new(1, T0 + off).take(5000)).unwrap();
    }
    s.commit().unwrap();
    let from = T0 + 1000;
    let to = T0 + 900_000;
    let got: Vec<(String, i64)> = s
        .raw_stream(&[], from, to)
        .unwrap()
        .map(|r| r.map(|(c, r)| (c, r.ts_ms)).unwrap())
        .collect();
    let mut want = got.clone();
    want.sort_by(|x, y| (x.1, &x.0).cmp(&(y.1, &y.0)));
    assert_eq!(got, want);
    assert_eq!(got.len(), 3 * ((to - from) / 200) as usize);
    let only: Vec<_> = s
        .raw_stream(&["c".to_owned()], from, to)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(only.iter().all(|(c, _)| c == "c"));
    assert!(matches!(
        s.raw_stream(&["nope".to_owned()], 0, 1).map(|_| ()),
        Err(StoreError::UnknownCircuit(_))
    ));
    assert!(matches!(
        s.series("a", Quantity::Voltage, Tier::Minute, 10, 5),
        Err(StoreError::ReversedRange { .. })
    ));
}

#[test]
fn raw_page_pages_by_seq() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path, opts()).unwrap();
    let recs = Gen::new(100, T0).take(7000);
    s.ingest("p", &recs).unwrap();
    s.commit().unwrap();
    let mut after = None;
    let mut all = Vec::new();
    loop {
        let page = s
            .raw_page("p", T0 + 200, T0 + 1_000_000, after, 999)
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.seq);
        all.extend(page);
    }
    assert_eq!(all, recs[1..5000].to_vec());
}

#[test]
fn choose_tier_picks_the_finest_that_fits() {
    assert_eq!(Store::choose_tier(0, 60_000, 2000), Tier::Raw);
    assert_eq!(Store::choose_tier(0, H, 2000), Tier::Minute);
    assert_eq!(Store::choose_tier(0, DAY, 2000), Tier::Minute);
    assert_eq!(Store::choose_tier(0, 7 * DAY, 2000), Tier::Quarter);
    assert_eq!(Store::choose_tier(0, 31 * DAY, 2000), Tier::Hour);
    assert_eq!(Store::choose_tier(0, 365 * DAY, 2000), Tier::Day);
    assert_eq!(Store::choose_tier(0, 100 * 365 * DAY, 2000), Tier::Day);
    assert_eq!(Store::choose_tier(0, DAY, 1), Tier::Day);
}

#[test]
fn names_parse_and_print() {
    for t in Tier::ALL {
        assert_eq!(t.to_string().parse::<Tier>().unwrap(), t);
    }
    for q in Quantity::ALL {
        assert_eq!(q.to_string().parse::<Quantity>().unwrap(), q);
    }
    assert_eq!(
        "current_crest_factor".parse::<Quantity>().unwrap(),
        Quantity::CrestFactor
    );
    assert_eq!(Quantity::ReactivePower.unit(), "var");
    assert!("5m".parse::<Tier>().is_err());
    let o: StoreOptions = toml::from_str("raw_retention_days = 7").unwrap();
    assert_eq!(o.raw_retention_days, Some(7));
    assert_eq!(o.minute_retention_days, Some(365));
    assert_eq!(o.hour_retention_days, None);
    assert!(toml::from_str::<StoreOptions>("raw_days = 7").is_err());
}
