//! How often and how patiently a failed transfer is tried again.

use std::time::Duration;

/// Retry behaviour of a [`crate::Master`].
///
/// A transfer that fails its CRC, is not acknowledged or hits a bus error is tried up to
/// `attempts` times in all. Before the second try the master waits `backoff`, and twice as
/// long before each further try: a slave that stretches the clock or is busy writing its
/// EEPROM gets time to recover. How the master waits is set with
/// [`crate::Master::with_sleep`], so a simulated bus in fast mode need not sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, at least 1 (0 is treated as 1). Default 3.
    pub attempts: u8,
    /// Wait before the first retry, doubled for each further one. Default 2 ms.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(2),
        }
    }
}

impl RetryPolicy {
    /// Tries in all, never less than one.
    pub fn tries(&self) -> u8 {
        self.attempts.max(1)
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff_before(&self, retry: u8) -> Duration {
        // Cap the doubling so a large `attempts` cannot overflow the shift.
        let doublings = u32::from(retry.saturating_sub(1)).min(16);
        self.backoff.saturating_mul(1 << doublings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_retry() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_before(1), Duration::from_millis(2));
        assert_eq!(policy.backoff_before(2), Duration::from_millis(4));
        assert_eq!(policy.backoff_before(3), Duration::from_millis(8));
        assert_eq!(
            RetryPolicy {
                attempts: 0,
                ..policy
            }
            .tries(),
            1
        );
    }
}
