//! Mapping a slave's sample clock to wall-clock time.
//!
//! A block is always fetched after it ended, so `fetched − slave_time` over-estimates the
//! clock offset by the polling delay, never under-estimates it. The smallest such
//! difference seen is therefore the best estimate (the minimum filter NTP uses). Crystals
//! drift (±100 ppm is common on cheap boards), so the estimate may creep up by
//! [`DRIFT_ALLOWANCE`] per elapsed millisecond and any lower observation pulls it back down.

/// How fast the offset estimate may rise, in ms per ms: twice a poor crystal's drift.
pub const DRIFT_ALLOWANCE: f64 = 200e-6;

/// The offset between one slave epoch's sample clock and the wall clock.
#[derive(Debug, Clone, Default)]
pub struct TimeMap {
    offset_ms: Option<f64>,
    last_fetch_ms: f64,
    last_ts_ms: Option<i64>,
}

impl TimeMap {
    /// A map with no observation yet.
    pub fn new() -> TimeMap {
        TimeMap::default()
    }

    /// Takes one observation — a block ending at `slave_ms` on the slave's clock, fetched at
    /// `fetched_ms` on the wall clock — and returns the block's wall-clock end in Unix ms.
    /// The result never exceeds `fetched_ms` and never goes backwards.
    pub fn observe(&mut self, slave_ms: f64, fetched_ms: f64) -> i64 {
        let observed = fetched_ms - slave_ms;
        let offset = match self.offset_ms {
            Some(previous) => {
                let elapsed = (fetched_ms - self.last_fetch_ms).max(0.0);
                observed.min(previous + elapsed * DRIFT_ALLOWANCE)
            }
            None => observed,
        };
        self.offset_ms = Some(offset);
        self.last_fetch_ms = fetched_ms;
        let mut ts = (slave_ms + offset).round() as i64;
        ts = ts.min(fetched_ms as i64);
        if let Some(last) = self.last_ts_ms {
            ts = ts.max(last);
        }
        self.last_ts_ms = Some(ts);
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_the_smallest_delay() {
        let mut map = TimeMap::new();
        let boot = 1_000_000.0;
        // Blocks every 200 ms, fetched 5..150 ms after they end.
        let delays = [150.0, 90.0, 5.0, 120.0, 60.0];
        let mut last = 0;
        for (i, delay) in delays.iter().enumerate() {
            let end = 200.0 * (i + 1) as f64;
            last = map.observe(end, boot + end + delay);
        }
        assert_eq!(last, (boot + 1000.0 + 5.0) as i64);
    }

    #[test]
    fn follows_a_slow_slave_clock() {
        let mut map = TimeMap::new();
        let boot = 0.0;
        // The slave's clock runs 100 ppm slow; fetched 10 ms after each block for an hour.
        let mut worst: f64 = 0.0;
        for i in 1..=18_000 {
            let wall_end = 200.0 * i as f64;
            let slave_end = wall_end * (1.0 - 100e-6);
            let ts = map.observe(slave_end, boot + wall_end + 10.0);
            worst = worst.max((ts as f64 - wall_end).abs());
        }
        assert!(worst <= 11.0, "error {worst} ms");
    }

    #[test]
    fn never_later_than_the_fetch_nor_backwards() {
        let mut map = TimeMap::new();
        let a = map.observe(1000.0, 5000.0);
        let b = map.observe(1200.0, 4000.0);
        assert!(a <= 5000);
        assert!(b >= a);
    }
}
