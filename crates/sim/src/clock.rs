//! Simulated time, shared by a bus and its slaves.
//!
//! Real-time mode follows the wall clock: slaves measure as time passes and every bus
//! transaction takes its wire time. Fast mode keeps virtual nanoseconds that advance only by
//! each transaction's wire time and by explicit [`SimClock::advance`] calls, so a test can
//! simulate minutes in milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How simulated time passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Simulated time is wall-clock time.
    RealTime,
    /// Virtual time, advanced by bus transactions and [`SimClock::advance`]; nothing sleeps.
    Fast,
}

/// Sleeping for every 100 µs transaction would cost more than the transaction: wire time is
/// owed and paid in one sleep once the debt exceeds this.
const MAX_DEBT: Duration = Duration::from_millis(1);

#[derive(Debug)]
enum Inner {
    RealTime {
        epoch: Instant,
        /// When the wire is free again, as time since `epoch`.
        busy_until: Mutex<Duration>,
    },
    Fast {
        nanos: AtomicU64,
    },
}

/// A clock. Clones share the same time.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<Inner>,
}

impl SimClock {
    /// A clock in `mode`, at time zero.
    pub fn new(mode: ClockMode) -> SimClock {
        match mode {
            ClockMode::RealTime => SimClock::real_time(Instant::now()),
            ClockMode::Fast => SimClock::fast(),
        }
    }

    /// A wall-clock clock whose zero is `epoch` (share one epoch between buses so that their
    /// times compare).
    pub fn real_time(epoch: Instant) -> SimClock {
        SimClock {
            inner: Arc::new(Inner::RealTime {
                epoch,
                busy_until: Mutex::new(Duration::ZERO),
            }),
        }
    }

    /// A virtual clock at zero.
    pub fn fast() -> SimClock {
        SimClock {
            inner: Arc::new(Inner::Fast {
                nanos: AtomicU64::new(0),
            }),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ClockMode {
        match *self.inner {
            Inner::RealTime { .. } => ClockMode::RealTime,
            Inner::Fast { .. } => ClockMode::Fast,
        }
    }

    /// Simulated time since the clock started.
    pub fn now(&self) -> Duration {
        match &*self.inner {
            Inner::RealTime { epoch, .. } => epoch.elapsed(),
            Inner::Fast { nanos } => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// A bus transaction occupied the wire for `wire`: fast mode moves time on; real-time mode
    /// owes the time and sleeps once the debt passes a millisecond (time the host spent
    /// computing counts against the debt).
    pub fn spend(&self, wire: Duration) {
        match &*self.inner {
            Inner::Fast { nanos } => {
                nanos.fetch_add(saturating_nanos(wire), Ordering::AcqRel);
            }
            Inner::RealTime { epoch, busy_until } => {
                let debt = {
                    let Ok(mut busy) = busy_until.lock() else {
                        return;
                    };
                    let now = epoch.elapsed();
                    *busy = (*busy).max(now) + wire;
                    busy.saturating_sub(now)
                };
                if debt > MAX_DEBT {
                    std::thread::sleep(debt);
                }
            }
        }
    }

    /// Lets `duration` pass: fast mode jumps ahead, real-time mode sleeps.
    pub fn advance(&self, duration: Duration) {
        match &*self.inner {
            Inner::Fast { nanos } => {
                nanos.fetch_add(saturating_nanos(duration), Ordering::AcqRel);
            }
            Inner::RealTime { .. } => std::thread::sleep(duration),
        }
    }

    /// A wait function for `pmon_bus::Master::with_sleep`: retry back-off passes in simulated
    /// time, so a fast-mode bus never sleeps and a stuck bus can clear meanwhile.
    pub fn sleeper(&self) -> impl FnMut(Duration) + Send + 'static {
        let clock = self.clone();
        move |duration| clock.advance(duration)
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_clock_moves_only_when_told() {
        let clock = SimClock::fast();
        let shared = clock.clone();
        assert_eq!(clock.now(), Duration::ZERO);
        shared.spend(Duration::from_micros(250));
        clock.advance(Duration::from_millis(2));
        assert_eq!(clock.now(), Duration::from_micros(2250));
        assert_eq!(clock.mode(), ClockMode::Fast);
    }

    #[test]
    fn real_time_clock_pays_wire_time_in_aggregate() {
        let clock = SimClock::new(ClockMode::RealTime);
        let start = Instant::now();
        for _ in 0..100 {
            clock.spend(Duration::from_micros(100));
        }
        let elapsed = start.elapsed();
        // 100 × 100 µs = 10 ms of wire time: paid, but not 100 separate sleeps' worth of slack.
        assert!(elapsed >= Duration::from_millis(9), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
    }
}
