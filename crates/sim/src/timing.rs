//! How long an I2C transaction occupies the wire.
//!
//! Every byte is 9 clock periods (8 data bits and the acknowledge), the address byte
//! included. A start, a repeated start and a stop each take about one period, and after
//! the stop the bus must stay free for t_BUF (4.7 µs in standard mode, 1.3 µs in fast mode,
//! 0.5 µs in fast mode plus). The host adds its own time per transaction.

use std::time::Duration;

/// Bits per byte on the wire: 8 data bits and the acknowledge.
pub const BITS_PER_BYTE: u64 = 9;

/// Bus-free time after a stop for this SCL frequency, in nanoseconds.
fn bus_free_ns(clock_hz: u32) -> u64 {
    match clock_hz {
        0..=100_000 => 4_700,
        100_001..=400_000 => 1_300,
        _ => 500,
    }
}

/// Wire time of one transaction that writes `write_len` bytes and/or reads `read_len` bytes
/// (a write followed by a read joined by a repeated start), plus `host_overhead`.
/// `clock_hz` 0 is an infinitely fast wire: only the overhead remains.
pub fn transaction_time(
    clock_hz: u32,
    write_len: usize,
    read_len: usize,
    host_overhead: Duration,
) -> Duration {
    if clock_hz == 0 {
        return host_overhead;
    }
    let transfers = u64::from(write_len > 0) + u64::from(read_len > 0);
    // An address-only probe is still one transfer.
    let transfers = transfers.max(1);
    let bytes = transfers + write_len as u64 + read_len as u64;
    // Start, one repeated start per extra transfer, stop.
    let conditions = 1 + (transfers - 1) + 1;
    let periods = bytes * BITS_PER_BYTE + conditions;
    let period_ns = 1_000_000_000.0 / f64::from(clock_hz);
    let wire_ns = (periods as f64 * period_ns) as u64 + bus_free_ns(clock_hz);
    Duration::from_nanos(wire_ns) + host_overhead
}

/// Wire time of a slave that does not acknowledge its address: start, address byte, stop.
pub fn nack_time(clock_hz: u32, host_overhead: Duration) -> Duration {
    transaction_time(clock_hz, 0, 0, host_overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_per_second(clock_hz: u32, read_len: usize) -> f64 {
        1.0 / transaction_time(clock_hz, 1, read_len, Duration::ZERO).as_secs_f64()
    }

    #[test]
    fn matches_the_design_table_within_two_percent() {
        // docs: wire-limited reads/s for a register-pointer write + N-byte read.
        let table = [
            (100_000, 16, 578.0),
            (100_000, 24, 408.0),
            (100_000, 32, 315.0),
            (400_000, 16, 2319.0),
            (400_000, 24, 1636.0),
            (400_000, 32, 1264.0),
            (1_000_000, 16, 5796.0),
            (1_000_000, 24, 4089.0),
            (1_000_000, 32, 3159.0),
        ];
        for (clock_hz, n, expected) in table {
            let got = reads_per_second(clock_hz, n);
            let error = (got - expected).abs() / expected;
            assert!(
                error < 0.02,
                "{clock_hz} Hz, N={n}: {got:.0}/s vs {expected}/s"
            );
        }
    }

    #[test]
    fn overhead_adds_and_infinite_clock_costs_only_overhead() {
        let overhead = Duration::from_micros(150);
        let bare = transaction_time(400_000, 7, 36, Duration::ZERO);
        assert_eq!(transaction_time(400_000, 7, 36, overhead), bare + overhead);
        assert_eq!(transaction_time(0, 7, 36, overhead), overhead);
        assert!(nack_time(100_000, Duration::ZERO) < Duration::from_micros(150));
    }
}
