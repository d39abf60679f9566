//! A simulated I2C bus segment carrying many slaves, implementing `embedded_hal::i2c::I2c`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use rand::rngs::SmallRng;
use rand::Rng;

use crate::clock::SimClock;
use crate::config::{BusConfig, BusId};
use crate::slave::SimSlave;
use crate::timing::{nack_time, transaction_time};

/// What a simulated transaction failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("simulated I2C bus: {0}")]
pub struct SimBusError(pub ErrorKind);

impl embedded_hal::i2c::Error for SimBusError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Faults the bus injected and work it did, for checking the master's counters against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Transactions attempted on this bus.
    pub transactions: u64,
    /// Transactions not acknowledged (absent or unplugged slave, or an injected NACK).
    pub nacks: u64,
    /// NACKs injected by `nack_rate`.
    pub injected_nacks: u64,
    /// Bytes read with a flipped bit.
    pub corrupted_bytes: u64,
    /// Reads that had at least one corrupted byte.
    pub corrupted_reads: u64,
    /// Transactions failed by a stuck bus.
    pub stuck_failures: u64,
}

/// The state behind a bus: its slaves and faults. Shared with [`crate::SimControl`].
#[derive(Debug)]
pub(crate) struct BusState {
    pub clock: SimClock,
    pub settings: BusConfig,
    /// Every transaction fails with a bus error until this time.
    pub stuck_until: Option<Duration>,
    /// Slot in `slaves` of each 7-bit address (`NONE` when absent): a table is faster than a map.
    slots: [u16; 128],
    slaves: Vec<SimSlave>,
    /// Prototype boards (`kind = "legacy"`), answering where no pmon slave does.
    pub(crate) legacy: Vec<crate::legacy::LegacySlave>,
    rng: SmallRng,
    pub stats: BusStats,
}

const NONE: u16 = u16::MAX;

impl BusState {
    pub fn new(
        clock: SimClock,
        settings: BusConfig,
        slaves: Vec<SimSlave>,
        rng: SmallRng,
    ) -> BusState {
        let mut slots = [NONE; 128];
        for (index, slave) in slaves.iter().enumerate() {
            slots[usize::from(slave.address() & 0x7F)] = index as u16;
        }
        BusState {
            clock,
            settings,
            stuck_until: None,
            slots,
            slaves,
            legacy: Vec::new(),
            rng,
            stats: BusStats::default(),
        }
    }

    /// The slave at `address`, caught up to the present.
    pub fn slave_mut(&mut self, address: u8) -> Option<&mut SimSlave> {
        let slot = *self.slots.get(usize::from(address))?;
        let now = self.clock.now();
        let slave = self.slaves.get_mut(usize::from(slot))?;
        slave.catch_up(now);
        Some(slave)
    }

    /// Every slave, caught up to the present.
    pub fn slaves_mut(&mut self) -> impl Iterator<Item = &mut SimSlave> {
        let now = self.clock.now();
        for slave in &mut self.slaves {
            slave.catch_up(now);
        }
        self.slaves.iter_mut()
    }

    /// The slave in `slot` took a new address (register 0x50). It answers there from the end
    /// of this transaction on. A slave already at `to` is shadowed: the simulator does not
    /// model two slaves answering at once (the master refuses to move a slave onto an
    /// address that answers).
    fn move_slave(&mut self, slot: u16, from: u8, to: u8) {
        let from = usize::from(from & 0x7F);
        if self.slots[from] == slot {
            self.slots[from] = NONE;
        }
        self.slots[usize::from(to & 0x7F)] = slot;
    }

    /// Runs one transaction and returns how long it held the wire.
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> (Result<(), SimBusError>, Duration) {
        self.stats.transactions += 1;
        let overhead = Duration::from_micros(u64::from(self.settings.host_overhead_us));
        let clock_hz = self.settings.clock_hz;
        let now = self.clock.now();
        let (written, read) = operations.iter().fold((0, 0), |(w, r), op| match op {
            Operation::Write(bytes) => (w + bytes.len(), r),
            Operation::Read(buffer) => (w, r + buffer.len()),
        });
        let full_time = transaction_time(clock_hz, written, read, overhead);
        match self.stuck_until {
            Some(until) if now < until => {
                self.stats.stuck_failures += 1;
                return (Err(SimBusError(ErrorKind::Bus)), full_time);
            }
            Some(_) => self.stuck_until = None,
            None => {}
        }
        let nack = Err(SimBusError(ErrorKind::NoAcknowledge(
            NoAcknowledgeSource::Address,
        )));
        let slot = self
            .slots
            .get(usize::from(address))
            .copied()
            .unwrap_or(NONE);
        let present = self
            .slaves
            .get(usize::from(slot))
            .is_some_and(SimSlave::plugged);
        if !present {
            if let Some(slave) = self
                .legacy
                .iter_mut()
                .find(|slave| slave.address() == address && slave.plugged())
            {
                slave.catch_up(now);
                slave.transact(operations);
                return (Ok(()), full_time);
            }
            self.stats.nacks += 1;
            return (nack, nack_time(clock_hz, overhead));
        }
        let nack_rate = self.settings.nack_rate;
        if nack_rate > 0.0 && self.rng.random::<f64>() < nack_rate {
            self.stats.nacks += 1;
            self.stats.injected_nacks += 1;
            return (nack, nack_time(clock_hz, overhead));
        }
        let corrupt_rate = self.settings.corrupt_rate;
        let slave = &mut self.slaves[usize::from(slot)];
        slave.catch_up(now);
        let address_before = slave.address();
        for operation in operations.iter_mut() {
            match operation {
                Operation::Write(bytes) => slave.write(bytes),
                Operation::Read(buffer) => {
                    slave.read(buffer);
                    if corrupt_rate > 0.0 {
                        let before = self.stats.corrupted_bytes;
                        for byte in buffer.iter_mut() {
                            if self.rng.random::<f64>() < corrupt_rate {
                                *byte ^= 1 << self.rng.random_range(0..8);
                                self.stats.corrupted_bytes += 1;
                            }
                        }
                        if self.stats.corrupted_bytes != before {
                            self.stats.corrupted_reads += 1;
                        }
                    }
                }
            }
        }
        let address_after = slave.address();
        if address_after != address_before {
            self.move_slave(slot, address_before, address_after);
        }
        (Ok(()), full_time)
    }
}

/// Locks a bus's state; a panic elsewhere while it was held leaves the state usable for a
/// simulation (the worst case is one half-applied transaction).
pub(crate) fn lock(state: &Mutex<BusState>) -> MutexGuard<'_, BusState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One simulated bus. Hand it to a `pmon_bus::Master`; inject faults through
/// [`crate::SimControl`].
#[derive(Debug)]
pub struct SimBus {
    id: BusId,
    clock: SimClock,
    state: Arc<Mutex<BusState>>,
}

impl SimBus {
    pub(crate) fn new(id: BusId, clock: SimClock, state: Arc<Mutex<BusState>>) -> SimBus {
        SimBus { id, clock, state }
    }

    /// The bus number.
    pub fn id(&self) -> BusId {
        self.id
    }

    /// The bus's clock (shared with its slaves).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }
}

impl ErrorType for SimBus {
    type Error = SimBusError;
}

impl I2c for SimBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let (result, wire_time) = lock(&self.state).transaction(address, operations);
        // Outside the lock: in real-time mode this may sleep, and control calls should not wait.
        self.clock.spend(wire_time);
        result
    }
}
