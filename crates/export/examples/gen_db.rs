//! Writes a historian database of N raw records over C circuits, 200 ms apart, for the export
//! benchmark (`docs/benchmarks.md`): `cargo run --release -p pmon-export --example gen_db --
//! DB N C`.

use pmon_historian::store::{FrameRecord, Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: gen_db DB N C")?;
    let n: u64 = args.next().ok_or("N")?.parse()?;
    let circuits: u64 = args.next().ok_or("C")?.parse()?;
    let mut store = Store::open(
        std::path::Path::new(&path),
        StoreOptions {
            raw_retention_days: None,
            minute_retention_days: None,
            ..StoreOptions::default()
        },
    )?;
    let per = n / circuits;
    // Ending now, so a running historian's default retention (30 days of raw) keeps it all.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let t0 = now - per as i64 * 200 - 60_000;
    let mut batch = Vec::with_capacity(10_000);
    for c in 0..circuits {
        let id = format!("{:08x}", 0x5000_0000 + c);
        for i in 0..per {
            let x = i.wrapping_mul(2_654_435_761) ^ c;
            batch.push(FrameRecord {
                seq: i + 1,
                ts_ms: t0 + i as i64 * 200 + c as i64,
                duration_us: 200_000,
                voltage_mv: 229_000 + (x % 2_001) as u32,
                current_ua: 1_000_000 + (x % 9_000_001) as u32,
                frequency_mhz: 49_950 + (x % 100) as u32,
                real_power_mw: (x % 4_000_000) as i64 - 2_000_000,
                reactive_power_mvar: (x % 50_001) as i64 - 25_000,
                apparent_power_mva: 300_000 + x % 2_000_000,
                power_factor: ((x % 20_001) as i32 - 10_000) as i16,
                crest_factor: 1_414 + (x % 50) as u16,
                phase_angle: ((x % 36_001) as i32 - 18_000) as i16,
                energy_import_mwh: i * 11,
                energy_export_mwh: i / 7,
                flags: 0,
            });
            if batch.len() == 10_000 {
                store.ingest(&id, &batch)?;
                store.commit()?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            store.ingest(&id, &batch)?;
            store.commit()?;
            batch.clear();
        }
    }
    Ok(())
}
