mod store_common;
use pmon_historian::store::*;
use store_common::{tmp, Gen, T0};
#[test]
#[ignore]
fn ingest_only() {
    let data: Vec<Vec<FrameRecord>> = (0..100u64).map(|c| Gen::new(c * 1_000_000, T0 + c as i64).take(18_000)).collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (_d, path) = tmp();
        let mut s = Store::open(&path, StoreOptions::default()).unwrap();
        let t = std::time::Instant::now();
        let mut staged = 0;
        for start in (0..18_000).step_by(1000) {
            for (c, recs) in data.iter().enumerate() {
                s.ingest(&format!("c{c}"), &recs[start..start + 1000]).unwrap();
                staged += 1000;
            }
            if staged >= 100_000 { s.commit().unwrap(); staged = 0; }
        }
        s.commit().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    eprintln!("INGEST best of 5: {:.0} records/s", 1_800_000.0 / best);
}
