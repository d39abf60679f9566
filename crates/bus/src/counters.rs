//! Per-slave transfer statistics.

/// What the master saw on the bus for one slave address, cumulative since the
/// [`crate::Master`] was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaveCounters {
    /// Bus transactions attempted, retries included.
    pub transactions: u64,
    /// Replies that failed their CRC.
    pub crc_errors: u64,
    /// Transactions the slave did not acknowledge.
    pub nacks: u64,
    /// Transactions that failed with any other bus error (arbitration, overrun, stuck bus).
    pub bus_errors: u64,
    /// Transactions tried again after a failure.
    pub retries: u64,
    /// Operations that failed after every try (or at once, for errors that retrying cannot fix).
    pub failures: u64,
}

impl SlaveCounters {
    /// Adds another address's counters to these (for bus-wide totals).
    pub fn add(&mut self, other: &SlaveCounters) {
        self.transactions += other.transactions;
        self.crc_errors += other.crc_errors;
        self.nacks += other.nacks;
        self.bus_errors += other.bus_errors;
        self.retries += other.retries;
        self.failures += other.failures;
    }
}
