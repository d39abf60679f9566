//! `raw_stream` keeps memory flat: a counting allocator measures the peak heap while
//! millions of rows stream out.

mod store_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use pmon_historian::store::*;
use store_common::{tmp, Gen, T0};

struct Counting;

static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let now = CURRENT.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed)
            + new as isize
            - l.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn stream_rows(circuits: usize, per_circuit: usize) {
    let (_d, path) = tmp();
    {
        let mut s = Store::open(&path, StoreOptions::default()).unwrap();
        let mut gens: Vec<Gen> = (0..circuits)
            .map(|c| Gen::new(c as u64 * 10_000_000, T0 + c as i64))
            .collect();
        let mut left = per_circuit;
        while left > 0 {
            let n = left.min(20_000);
            for (c, g) in gens.iter_mut().enumerate() {
                s.ingest(&format!("c{c:03}"), &g.take(n)).unwrap();
            }
            s.commit().unwrap();
            left -= n;
        }
    }
    let s = Store::open_read_only(&path).unwrap();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut n = 0usize;
    let mut last = (i64::MIN, String::new());
    for row in s.raw_stream(&[], i64::MIN, i64::MAX).unwrap() {
        let (c, r) = row.unwrap();
        assert!((r.ts_ms, &c) >= (last.0, &last.1));
        last = (r.ts_ms, c);
        n += 1;
    }
    assert_eq!(n, circuits * per_circuit);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    // One decoded chunk (2048 records) per circuit plus SQLite's page cache.
    let bound =
        circuits as isize * 2048 * 2 * std::mem::size_of::<FrameRecord>() as isize + (16 << 20);
    assert!(
        peak < bound,
        "peak heap {peak} bytes while streaming {n} rows (bound {bound})"
    );
    eprintln!(
        "streamed {n} rows of {circuits} circuits, peak heap +{} KiB",
        peak / 1024
    );
}

#[test]
fn raw_stream_memory_is_flat_1m_rows() {
    stream_rows(20, 50_000);
}

/// 10 M rows (about a minute in release, several in debug): `cargo test -- --ignored`.
#[test]
#[ignore]
fn raw_stream_memory_is_flat_10m_rows() {
    stream_rows(100, 100_000);
}
