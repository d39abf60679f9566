//! A stop signal that blocking poller threads can sleep on.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Set once; every thread waiting on it wakes at once.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl StopSignal {
    /// A signal not yet set.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Sets the signal and wakes every waiter.
    pub fn stop(&self) {
        let (flag, wake) = &*self.inner;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        wake.notify_all();
    }

    /// Whether the signal is set.
    pub fn is_stopped(&self) -> bool {
        self.inner.0.lock().map(|s| *s).unwrap_or(true)
    }

    /// Sleeps until `deadline` or the signal, whichever comes first; true when stopped.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let (flag, wake) = &*self.inner;
        let Ok(mut stopped) = flag.lock() else {
            return true;
        };
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match wake.wait_timeout(stopped, deadline - now) {
                Ok((guard, _)) => stopped = guard,
                Err(_) => return true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_waiter_wakes_when_stopped() {
        let signal = StopSignal::new();
        let waiter = signal.clone();
        let started = Instant::now();
        let thread =
            std::thread::spawn(move || waiter.wait_until(Instant::now() + Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        signal.stop();
        assert!(thread.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!StopSignal::new().wait_until(Instant::now()));
    }
}
