//! Reading a slave's FIFO with exactly-once delivery per slave epoch.
//!
//! The protocol (see `pmon_meter::register::Fifo`): each fetch writes `ack`, the sequence
//! number the master wants next; the slave drops older records and answers with its
//! oldest. The record last delivered therefore stays in the slave until the next fetch
//! acknowledges it, and a fetch whose write half was corrupted on the wire is ignored by
//! the slave, which then answers with that same record again. While the slave's RESET
//! flag is set it ignores every `ack`, so nothing is delivered until the master has sent
//! ClearReset: records read under a set flag could never be acknowledged.
//!
//! The decisions live in [`Cursor::accept`], a pure state machine; [`crate::Master::drain`]
//! only does the I/O around it.

use embedded_hal::i2c::I2c;
use pmon_meter::register::Command;
use pmon_meter::{Fifo, Record};

use crate::error::DriverError;
use crate::master::Master;

/// Per-slave read position kept by the master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Sequence number wanted next; every record before it has been delivered.
    pub ack: u32,
    /// A restart (RESET flag) was noticed and reported, and ClearReset sent, but the slave
    /// has not yet answered with the flag cleared. Keeps one restart from being reported
    /// twice when a ClearReset is lost.
    pub seen_reset: bool,
}

/// What [`Master::drain`] delivers, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEvent {
    /// The next record of the current epoch.
    Record(Record),
    /// The slave restarted (RESET flag seen, or its sequence numbers went backwards):
    /// its sequence numbers and energy counters started again. Comes before the first
    /// record of the new epoch.
    Restarted,
}

/// What to do with one FIFO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// The FIFO is empty.
    Empty,
    /// Deliver `record`, preceded by [`DrainEvent::Restarted`] when `restarted`; `more`
    /// when the slave holds further records.
    Deliver {
        /// The record.
        record: Record,
        /// A restart without RESET flag: the sequence numbers went backwards.
        restarted: bool,
        /// Records remain behind this one.
        more: bool,
    },
    /// The record was delivered already (the slave ignored the last acknowledgement,
    /// whose write was corrupted): fetch again.
    Duplicate,
    /// The RESET flag is set: send ClearReset, then fetch again. `restarted` when this
    /// restart has not been reported yet.
    ClearReset {
        /// Report [`DrainEvent::Restarted`].
        restarted: bool,
    },
}

impl Cursor {
    /// A master that has never read this slave.
    pub const fn new() -> Self {
        Cursor {
            ack: 0,
            seen_reset: false,
        }
    }

    /// Resumes after the record `next_seq - 1` that the caller persisted. A cursor ahead of
    /// the slave's FIFO is harmless: an `ack` outside the FIFO's span drops nothing.
    pub const fn resume(next_seq: u32) -> Self {
        Cursor {
            ack: next_seq,
            seen_reset: false,
        }
    }

    /// Decides what a FIFO reply means and moves the cursor accordingly.
    pub fn accept(&mut self, fifo: &Fifo) -> DrainStep {
        if fifo.reset {
            let seq = fifo.record.map(|record| record.seq);
            // Within an epoch already noticed, `ack` is that epoch's oldest record: an older
            // one means the slave restarted yet again before a ClearReset got through.
            let again = self.seen_reset && seq.is_some_and(|seq| seq < self.ack);
            let restarted = !self.seen_reset || again;
            if restarted {
                self.seen_reset = true;
                self.ack = seq.unwrap_or(0);
            }
            return DrainStep::ClearReset { restarted };
        }
        self.seen_reset = false;
        let Some(record) = fifo.record else {
            return DrainStep::Empty;
        };
        let mut restarted = false;
        if record.seq < self.ack {
            // The slave's oldest is never older than the record last delivered, unless the
            // slave restarted and someone else cleared its flag.
            if record.seq == self.ack - 1 {
                return DrainStep::Duplicate;
            }
            restarted = true;
        }
        self.ack = record.seq.wrapping_add(1);
        DrainStep::Deliver {
            record,
            restarted,
            more: fifo.remaining > 0,
        }
    }
}

impl<I2C: I2c> Master<I2C> {
    /// Reads records in order until the FIFO is empty or `max` records were delivered, and
    /// returns how many were. Each record is delivered once per epoch; restarts are
    /// reported with [`DrainEvent::Restarted`] and acknowledged with ClearReset.
    ///
    /// On an error the events already pushed to `out` are valid and `cursor` matches
    /// them: call again later with the same cursor.
    pub fn drain(
        &mut self,
        address: u8,
        cursor: &mut Cursor,
        max: usize,
        out: &mut Vec<DrainEvent>,
    ) -> Result<usize, DriverError> {
        let mut delivered = 0;
        // Fetches in a row that delivered nothing; a conforming slave needs at most a few.
        let mut idle = 0u32;
        let idle_limit = 2 * u32::from(self.policy().tries()) + 1;
        while delivered < max {
            let fifo = self.fetch(address, cursor.ack)?;
            match cursor.accept(&fifo) {
                DrainStep::Empty => break,
                DrainStep::Deliver {
                    record,
                    restarted,
                    more,
                } => {
                    idle = 0;
                    if restarted {
                        out.push(DrainEvent::Restarted);
                    }
                    out.push(DrainEvent::Record(record));
                    delivered += 1;
                    if !more {
                        // The slave said this was the last one: save a transaction. The record
                        // stays in the slave until the next fetch acknowledges it.
                        break;
                    }
                }
                DrainStep::Duplicate => {
                    idle += 1;
                    if idle > idle_limit {
                        self.count_failure(address);
                        return Err(DriverError::Stalled {
                            address,
                            reason: "the slave keeps ignoring the acknowledgement",
                        });
                    }
                }
                DrainStep::ClearReset { restarted } => {
                    if restarted {
                        out.push(DrainEvent::Restarted);
                    }
                    idle += 1;
                    if idle > idle_limit {
                        self.count_failure(address);
                        return Err(DriverError::Stalled {
                            address,
                            reason: "the RESET flag stays set after ClearReset",
                        });
                    }
                    self.command(address, Command::ClearReset)?;
                }
            }
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u32) -> Record {
        Record {
            seq,
            ..Record::default()
        }
    }

    fn reply(seq: Option<u32>, remaining: u8, reset: bool) -> Fifo {
        Fifo {
            record: seq.map(record),
            remaining,
            reset,
        }
    }

    #[test]
    fn in_order_records_advance_the_cursor() {
        let mut cursor = Cursor::new();
        let step = cursor.accept(&reply(Some(0), 1, false));
        assert!(matches!(
            step,
            DrainStep::Deliver {
                restarted: false,
                more: true,
                ..
            }
        ));
        assert_eq!(cursor.ack, 1);
        assert!(matches!(
            cursor.accept(&reply(Some(1), 0, false)),
            DrainStep::Deliver { more: false, .. }
        ));
        assert_eq!(cursor.accept(&reply(None, 0, false)), DrainStep::Empty);
        assert_eq!(cursor.ack, 2);
    }

    #[test]
    fn a_repeat_of_the_last_record_is_a_duplicate() {
        let mut cursor = Cursor::resume(11);
        assert_eq!(
            cursor.accept(&reply(Some(10), 3, false)),
            DrainStep::Duplicate
        );
        assert_eq!(cursor.ack, 11);
    }

    #[test]
    fn fresh_cursor_takes_whatever_the_slave_holds() {
        let mut cursor = Cursor::new();
        let step = cursor.accept(&reply(Some(500), 20, false));
        assert!(matches!(
            step,
            DrainStep::Deliver {
                restarted: false,
                ..
            }
        ));
        assert_eq!(cursor.ack, 501);
    }

    #[test]
    fn reset_is_reported_once_even_when_clear_reset_is_lost() {
        let mut cursor = Cursor::resume(900);
        assert_eq!(
            cursor.accept(&reply(Some(0), 4, true)),
            DrainStep::ClearReset { restarted: true }
        );
        assert_eq!(cursor.ack, 0);
        // ClearReset lost: the flag is still there, the restart is not news.
        assert_eq!(
            cursor.accept(&reply(Some(0), 5, true)),
            DrainStep::ClearReset { restarted: false }
        );
        let step = cursor.accept(&reply(Some(0), 5, false));
        assert!(matches!(
            step,
            DrainStep::Deliver {
                restarted: false,
                ..
            }
        ));
        assert!(!cursor.seen_reset);
    }

    #[test]
    fn a_second_restart_before_clearing_is_reported_again() {
        let mut cursor = Cursor::resume(900);
        assert_eq!(
            cursor.accept(&reply(Some(7), 4, true)),
            DrainStep::ClearReset { restarted: true }
        );
        assert_eq!(
            cursor.accept(&reply(Some(0), 0, true)),
            DrainStep::ClearReset { restarted: true }
        );
        assert_eq!(cursor.ack, 0);
    }

    #[test]
    fn sequence_going_backwards_without_flag_is_a_restart() {
        let mut cursor = Cursor::resume(900);
        let step = cursor.accept(&reply(Some(3), 0, false));
        assert!(matches!(
            step,
            DrainStep::Deliver {
                restarted: true,
                ..
            }
        ));
        assert_eq!(cursor.ack, 4);
    }
}
