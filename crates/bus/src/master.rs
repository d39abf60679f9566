//! The driver: one [`Master`] owns one bus and talks to every slave on it.

use std::fmt;
use std::time::Duration;

use embedded_hal::i2c::I2c;
use pmon_meter::register::{Command, Register};
use pmon_meter::{Config, DecodeError, Fifo, Identity, Status};

use crate::counters::SlaveCounters;
use crate::error::DriverError;
use crate::policy::RetryPolicy;

/// Lowest 7-bit address a slave may use (0x00..=0x07 are reserved by the I2C specification).
pub const FIRST_ADDRESS: u8 = 0x08;
/// Highest 7-bit address a slave may use (0x78..=0x7F are reserved).
pub const LAST_ADDRESS: u8 = 0x77;

/// How the master waits between retries.
type Sleep = Box<dyn FnMut(Duration) + Send>;

/// Whether an operation gives up at once when the slave does not answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Retry every transient failure up to the policy's attempts.
    Retry,
    /// A NACK on the first try means "nobody there" (scanning): do not insist.
    ProbeOnly,
}

/// The master's driver for every pmon slave on one I2C bus.
pub struct Master<I2C> {
    pub(crate) bus: I2C,
    policy: RetryPolicy,
    // Indexed by 7-bit address: a flat table is cheaper than a map on every transaction.
    counters: Box<[SlaveCounters; 128]>,
    sleep: Sleep,
}

impl<I2C> fmt::Debug for Master<I2C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn check_address(address: u8) -> Result<(), DriverError> {
    if (FIRST_ADDRESS..=LAST_ADDRESS).contains(&address) {
        Ok(())
    } else {
        Err(DriverError::InvalidAddress { address })
    }
}

impl<I2C: I2c> Master<I2C> {
    /// Takes ownership of `bus`. Retries wait with `std::thread::sleep`; see [`Master::with_sleep`].
    pub fn new(bus: I2C, policy: RetryPolicy) -> Self {
        Master {
            bus,
            policy,
            counters: Box::new([SlaveCounters::default(); 128]),
            sleep: Box::new(std::thread::sleep),
        }
    }

    /// Replaces how the master waits between retries: a simulator in fast mode passes a
    /// function that advances its virtual clock (or does nothing) instead of sleeping.
    pub fn with_sleep(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    /// The bus, for transports that need attention (a simulator's fault injection, say).
    pub fn bus_mut(&mut self) -> &mut I2C {
        &mut self.bus
    }

    /// The retry policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Changes the retry policy.
    pub fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// Gives the bus back.
    pub fn into_inner(self) -> I2C {
        self.bus
    }

    /// Counters of one address, cumulative since this master was created.
    pub fn counters(&self, address: u8) -> SlaveCounters {
        self.counters[usize::from(address & 0x7F)]
    }

    /// The sum of every address's counters.
    pub fn total_counters(&self) -> SlaveCounters {
        let mut total = SlaveCounters::default();
        for counters in self.counters.iter() {
            total.add(counters);
        }
        total
    }

    /// Addresses in 0x08..=0x77 that answer with a valid [`Identity`] (CRC and magic).
    /// An address that does not acknowledge is tried once; a corrupted answer is retried.
    pub fn scan(&mut self) -> Vec<u8> {
        (FIRST_ADDRESS..=LAST_ADDRESS)
            .filter(|&address| self.identify_with(address, Persistence::ProbeOnly).is_ok())
            .collect()
    }

    /// Reads who the slave is.
    pub fn identify(&mut self, address: u8) -> Result<Identity, DriverError> {
        self.identify_with(address, Persistence::Retry)
    }

    /// Reads who answers at `address`, as [`Master::scan`] does for each address: a NACK on
    /// the first try is final ([`DriverError::Nack`]: nobody there); a corrupted reply is
    /// retried. The error tells an empty address from a device that is not a pmon slave
    /// ([`DriverError::Decode`]) or a failing bus.
    pub fn probe(&mut self, address: u8) -> Result<Identity, DriverError> {
        self.identify_with(address, Persistence::ProbeOnly)
    }

    fn identify_with(
        &mut self,
        address: u8,
        persistence: Persistence,
    ) -> Result<Identity, DriverError> {
        self.read_register(address, Register::Identity, persistence, Identity::decode)
    }

    /// Reads the slave's measurement configuration.
    pub fn read_config(&mut self, address: u8) -> Result<Config, DriverError> {
        self.read_register(
            address,
            Register::Config,
            Persistence::Retry,
            Config::decode,
        )
    }

    /// Writes a configuration, reads it back and compares. A write lost to a corrupted
    /// transfer (the slave ignores it) is repeated up to the policy's attempts.
    pub fn write_config(&mut self, address: u8, config: &Config) -> Result<(), DriverError> {
        check_address(address)?;
        config
            .validate()
            .map_err(|source| DriverError::InvalidConfig { address, source })?;
        let frame = config.write_frame(address);
        let mut read_back = *config;
        for _ in 0..self.policy.tries() {
            self.transact(address, Persistence::Retry, |bus| {
                bus.write(address, &frame)
                    .map_err(|e| DriverError::from_bus(address, &e))
            })?;
            read_back = self.read_config(address)?;
            if read_back == *config {
                return Ok(());
            }
        }
        self.count_failure(address);
        Err(DriverError::ConfigMismatch {
            address,
            written: *config,
            read_back,
        })
    }

    /// Reads flags and counters.
    pub fn status(&mut self, address: u8) -> Result<Status, DriverError> {
        self.read_register(
            address,
            Register::Status,
            Persistence::Retry,
            Status::decode,
        )
    }

    /// Sends a command. A command has no reply, so a write corrupted on the wire goes
    /// unnoticed here; callers check its effect (as [`Master::drain`] does for ClearReset).
    pub fn command(&mut self, address: u8, command: Command) -> Result<(), DriverError> {
        check_address(address)?;
        let frame = command.frame(address);
        self.transact(address, Persistence::Retry, |bus| {
            bus.write(address, &frame)
                .map_err(|e| DriverError::from_bus(address, &e))
        })
    }

    /// One FIFO read: acknowledges every record before `ack` and returns the oldest left,
    /// in a single write-read transaction. A failed try is repeated with the same `ack`,
    /// which the slave's protocol makes safe: no record is lost to a corrupted reply.
    pub fn fetch(&mut self, address: u8, ack: u32) -> Result<Fifo, DriverError> {
        check_address(address)?;
        let request = Fifo::request(address, ack);
        self.transact(address, Persistence::Retry, |bus| {
            let mut reply = [0u8; Fifo::LEN + 2];
            bus.write_read(address, &request, &mut reply)
                .map_err(|e| DriverError::from_bus(address, &e))?;
            Fifo::decode(address, &reply).map_err(|source| DriverError::Decode {
                address,
                register: Register::Fifo,
                source,
            })
        })
    }

    /// Points at `register` and reads its reply in one write-read transaction.
    fn read_register<T>(
        &mut self,
        address: u8,
        register: Register,
        persistence: Persistence,
        decode: fn(u8, &[u8]) -> Result<T, DecodeError>,
    ) -> Result<T, DriverError> {
        check_address(address)?;
        self.transact(address, persistence, |bus| {
            // Large enough for every register; the slice below is the exact reply length.
            let mut reply = [0u8; 64];
            let reply = &mut reply[..register.reply_len()];
            bus.write_read(address, &[register as u8], reply)
                .map_err(|e| DriverError::from_bus(address, &e))?;
            decode(address, reply).map_err(|source| DriverError::Decode {
                address,
                register,
                source,
            })
        })
    }

    /// Runs `once` (exactly one bus transaction) until it succeeds, fails for good, or the
    /// policy's attempts are used up, keeping the address's counters.
    pub(crate) fn transact<T>(
        &mut self,
        address: u8,
        persistence: Persistence,
        mut once: impl FnMut(&mut I2C) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let tries = self.policy.tries();
        let slot = usize::from(address & 0x7F);
        let mut attempt = 1u8;
        loop {
            self.counters[slot].transactions += 1;
            let error = match once(&mut self.bus) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let counters = &mut self.counters[slot];
            match &error {
                DriverError::Nack { .. } => counters.nacks += 1,
                DriverError::Bus { .. } => counters.bus_errors += 1,
                DriverError::Decode {
                    source: DecodeError::Crc { .. },
                    ..
                }
                | DriverError::Legacy { .. } => counters.crc_errors += 1,
                _ => {}
            }
            let absent = persistence == Persistence::ProbeOnly
                && attempt == 1
                && matches!(error, DriverError::Nack { .. });
            if !error.is_transient() || absent || attempt >= tries {
                counters.failures += 1;
                return Err(error);
            }
            counters.retries += 1;
            let wait = self.policy.backoff_before(attempt);
            if !wait.is_zero() {
                (self.sleep)(wait);
            }
            attempt += 1;
        }
    }

    /// Waits as retries do (a simulator's clock advances instead).
    pub(crate) fn wait(&mut self, duration: Duration) {
        (self.sleep)(duration);
    }

    pub(crate) fn count_failure(&mut self, address: u8) {
        self.counters[usize::from(address & 0x7F)].failures += 1;
    }
}
