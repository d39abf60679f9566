//! The host side: `embedded_hal::i2c::I2c` over a serial line to a bridge.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use super::frame::{
    status, BadFrame, BridgeInfo, BusFault, Frame, FrameDecoder, NackSource, Refusal, Reply,
    Request, MAX_PAYLOAD, VERSION,
};

/// How patient the host is with the serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeOptions {
    /// How long to wait for a reply before sending the request again. Default 100 ms: a
    /// 36-byte read is ~4 ms at 115200 baud plus ~4 ms on a 100 kHz bus.
    pub timeout: Duration,
    /// Sends of one request in all (the first and the retransmissions) before giving up.
    /// Default 4.
    pub attempts: u8,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            timeout: Duration::from_millis(100),
            attempts: 4,
        }
    }
}

/// What happened on the serial line, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Requests sent (not counting retransmissions).
    pub requests: u64,
    /// Requests sent again after a timeout or a corrupted frame in either direction.
    pub retransmissions: u64,
    /// Replies that arrived corrupted (COBS, length or CRC).
    pub corrupted_replies: u64,
    /// `REQUEST_CRC` replies: the bridge received our request corrupted.
    pub rejected_requests: u64,
    /// Waits for a reply that ran out.
    pub timeouts: u64,
    /// Replies to an earlier request (a late answer after a retransmission), ignored.
    pub stale_replies: u64,
}

/// Why a bridge transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Reading or writing the serial port failed.
    #[error("serial port: {0}")]
    Io(#[from] io::Error),
    /// No valid reply after every attempt.
    #[error(
        "no valid reply from the bridge after {attempts} tries ({timeouts} timeouts, \
         {corrupted} corrupted replies, {rejected} requests the bridge received corrupted)"
    )]
    Link {
        /// Tries made.
        attempts: u8,
        /// Of which timed out.
        timeouts: u8,
        /// Of which brought a corrupted reply.
        corrupted: u8,
        /// Of which the bridge reported as received corrupted.
        rejected: u8,
    },
    /// The slave did not acknowledge.
    #[error("not acknowledged ({0:?})")]
    Nack(NoAcknowledgeSource),
    /// The bridge reported an I2C bus failure.
    #[error("I2C bus error at the bridge: {0:?}")]
    Bus(BusFault),
    /// The bridge refused the request.
    #[error("the bridge refused the request: {0:?}")]
    Refused(Refusal),
    /// The bridge speaks another protocol version.
    #[error("the bridge speaks serial-bridge protocol version {bridge}; this pmon speaks version {ours}")]
    Version {
        /// The bridge's version.
        bridge: u8,
        /// Ours.
        ours: u8,
    },
    /// A reply that does not fit the request.
    #[error("unexpected reply from the bridge: {0}")]
    Unexpected(&'static str),
    /// An `I2c::transaction` that the protocol cannot express.
    #[error("not possible over the serial bridge: {0}")]
    Unsupported(&'static str),
    /// The serial port could not be opened or configured.
    #[error("cannot open serial port {path}: {reason}")]
    Open {
        /// Device path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl embedded_hal::i2c::Error for BridgeError {
    fn kind(&self) -> ErrorKind {
        match self {
            BridgeError::Nack(source) => ErrorKind::NoAcknowledge(*source),
            BridgeError::Bus(BusFault::Bus) => ErrorKind::Bus,
            BridgeError::Bus(BusFault::Arbitration) => ErrorKind::ArbitrationLoss,
            BridgeError::Bus(BusFault::Overrun) => ErrorKind::Overrun,
            _ => ErrorKind::Other,
        }
    }
}

/// The outcome of waiting for one reply.
enum Awaited {
    Reply(Reply),
    Timeout,
    Corrupted,
    Rejected,
}

/// An I2C master reached over a serial line, speaking `docs/protocol/serial-bridge.md`.
///
/// Each request gets a new tag; a request whose reply times out or arrives corrupted, or
/// that the bridge reports as received corrupted, is sent again with the same tag, and the
/// bridge answers a repeat from its cache without touching the bus again: every
/// transfer happens on the bus at most once, however noisy the line.
pub struct SerialBridge<P> {
    port: P,
    options: BridgeOptions,
    decoder: FrameDecoder,
    inbox: VecDeque<Result<Frame, BadFrame>>,
    tag: u8,
    info: Option<BridgeInfo>,
    stats: LinkStats,
}

impl<P> std::fmt::Debug for SerialBridge<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialBridge")
            .field("options", &self.options)
            .field("info", &self.info)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Read + Write> SerialBridge<P> {
    /// Wraps a port. Nothing is sent until the first request; call [`SerialBridge::hello`]
    /// to check the bridge's version first (as [`SerialBridge::open`] does).
    ///
    /// The port's `read` may block for a while but should return (`Ok(0)`, `WouldBlock` or
    /// `TimedOut`) when no byte comes, so that timeouts work.
    pub fn new(port: P, options: BridgeOptions) -> Self {
        SerialBridge {
            port,
            options,
            decoder: FrameDecoder::new(),
            inbox: VecDeque::new(),
            tag: 0,
            info: None,
            stats: LinkStats::default(),
        }
    }

    /// Exchanges versions; fails unless the bridge speaks ours. Returns what the bridge said
    /// about itself (also kept for [`SerialBridge::info`]).
    pub fn hello(&mut self) -> Result<BridgeInfo, BridgeError> {
        let payload = self.exchange(&Request::Hello {
            max_version: VERSION,
        })?;
        let info =
            BridgeInfo::decode(&payload).ok_or(BridgeError::Unexpected("HELLO reply too short"))?;
        if info.version != VERSION {
            return Err(BridgeError::Version {
                bridge: info.version,
                ours: VERSION,
            });
        }
        self.info = Some(info);
        Ok(info)
    }

    /// What the bridge said in its last `HELLO` reply.
    pub fn info(&self) -> Option<BridgeInfo> {
        self.info
    }

    /// Asks the bridge to recover the bus (nine clocks and a STOP, controller
    /// re-initialised). True when the bridge found the bus free afterwards.
    pub fn reset(&mut self) -> Result<bool, BridgeError> {
        let payload = self.exchange(&Request::Reset)?;
        Ok(payload.first().is_some_and(|&free| free != 0))
    }

    /// Sets the SCL frequency; returns the frequency the bridge actually uses.
    pub fn set_clock(&mut self, hz: u32) -> Result<u32, BridgeError> {
        let payload = self.exchange(&Request::SetClock { hz })?;
        let bytes: [u8; 4] = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(BridgeError::Unexpected("SET_CLOCK reply too short"))?;
        let actual = u32::from_le_bytes(bytes);
        if let Some(info) = &mut self.info {
            info.clock_hz = actual;
        }
        Ok(actual)
    }

    /// Serial line statistics.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The port, for a transport that needs attention.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Gives the port back.
    pub fn into_inner(self) -> P {
        self.port
    }

    /// Sends `request` until a valid reply comes or the attempts are used up, and returns
    /// the `OK` payload or the bridge's error.
    fn exchange(&mut self, request: &Request) -> Result<Vec<u8>, BridgeError> {
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        // The leading delimiter ends whatever partial frame line noise left at the bridge.
        let mut wire = vec![0u8];
        wire.extend(request.frame(tag).encode());
        self.stats.requests += 1;
        let attempts = self.options.attempts.max(1);
        let (mut timeouts, mut corrupted, mut rejected) = (0u8, 0u8, 0u8);
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.retransmissions += 1;
            }
            self.port.write_all(&wire)?;
            self.port.flush()?;
            match self.await_reply(tag)? {
                Awaited::Reply(reply) => return interpret(reply),
                Awaited::Timeout => {
                    timeouts += 1;
                    self.stats.timeouts += 1;
                    self.decoder.clear();
                }
                Awaited::Corrupted => {
                    corrupted += 1;
                    self.stats.corrupted_replies += 1;
                }
                Awaited::Rejected => {
                    rejected += 1;
                    self.stats.rejected_requests += 1;
                }
            }
        }
        Err(BridgeError::Link {
            attempts,
            timeouts,
            corrupted,
            rejected,
        })
    }

    fn await_reply(&mut self, tag: u8) -> Result<Awaited, BridgeError> {
        let deadline = Instant::now() + self.options.timeout;
        let mut chunk = [0u8; 128];
        loop {
            while let Some(result) = self.inbox.pop_front() {
                match result {
                    Err(_) => return Ok(Awaited::Corrupted),
                    Ok(frame) if frame.kind == status::REQUEST_CRC => {
                        // Whatever tag it names (it was read from a damaged frame): the
                        // request did not get through.
                        return Ok(Awaited::Rejected);
                    }
                    Ok(frame) if frame.tag != tag => self.stats.stale_replies += 1,
                    Ok(frame) => {
                        return Ok(match Reply::parse(frame.kind, &frame.payload) {
                            Some(reply) => Awaited::Reply(reply),
                            None => Awaited::Corrupted,
                        })
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(Awaited::Timeout);
            }
            match self.port.read(&mut chunk) {
                Ok(0) => std::thread::sleep(Duration::from_millis(1)),
                Ok(n) => {
                    for &byte in &chunk[..n] {
                        if let Some(result) = self.decoder.push(byte) {
                            self.inbox.push_back(result);
                        }
                    }
                }
                Err(error) => match error.kind() {
                    io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {}
                    _ => return Err(BridgeError::Io(error)),
                },
            }
        }
    }

    fn max_write(&self) -> usize {
        self.info
            .map_or(MAX_PAYLOAD - 2, |info| usize::from(info.max_write))
    }

    fn max_read(&self) -> usize {
        self.info
            .map_or(MAX_PAYLOAD, |info| usize::from(info.max_read))
    }
}

fn interpret(reply: Reply) -> Result<Vec<u8>, BridgeError> {
    match reply {
        Reply::Ok(payload) => Ok(payload),
        Reply::Nack(source) => Err(BridgeError::Nack(match source {
            NackSource::Address => NoAcknowledgeSource::Address,
            NackSource::Data => NoAcknowledgeSource::Data,
            NackSource::Unknown => NoAcknowledgeSource::Unknown,
        })),
        Reply::BusError(fault) => Err(BridgeError::Bus(fault)),
        Reply::Malformed(Refusal::Version(bridge)) => Err(BridgeError::Version {
            bridge,
            ours: VERSION,
        }),
        Reply::Malformed(refusal) => Err(BridgeError::Refused(refusal)),
        Reply::RequestCrc => Err(BridgeError::Unexpected("REQUEST_CRC")),
    }
}

impl<P> ErrorType for SerialBridge<P> {
    type Error = BridgeError;
}

impl<P: Read + Write> I2c for SerialBridge<P> {
    /// Adjacent operations of one kind are joined (as embedded-hal specifies: no restart
    /// between them), which leaves three shapes the protocol carries as one request each:
    /// writes (`WRITE`), reads (`READ`), writes then reads (`WRITE_READ`, one repeated
    /// start). Other shapes are refused with [`BridgeError::Unsupported`].
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let first_read = operations
            .iter()
            .position(|op| matches!(op, Operation::Read(_)))
            .unwrap_or(operations.len());
        if operations[first_read..]
            .iter()
            .any(|op| matches!(op, Operation::Write(_)))
        {
            return Err(BridgeError::Unsupported("a write after a read"));
        }
        let mut written = Vec::new();
        for op in &operations[..first_read] {
            if let Operation::Write(bytes) = op {
                written.extend_from_slice(bytes);
            }
        }
        let read_len: usize = operations[first_read..]
            .iter()
            .map(|op| match op {
                Operation::Read(buffer) => buffer.len(),
                Operation::Write(_) => 0,
            })
            .sum();
        if written.len() > self.max_write() {
            return Err(BridgeError::Refused(Refusal::TooLong));
        }
        if read_len > self.max_read() {
            return Err(BridgeError::Refused(Refusal::TooLong));
        }
        let address = address & 0x7F;
        if operations.is_empty() {
            return Ok(());
        }
        // Reads of zero bytes only, or no bytes at all: an address probe.
        let request = if read_len == 0 {
            Request::Write {
                address,
                bytes: written,
            }
        } else if written.is_empty() {
            Request::Read {
                address,
                len: read_len as u8,
            }
        } else {
            Request::WriteRead {
                address,
                bytes: written,
                read_len: read_len as u8,
            }
        };
        let data = self.exchange(&request)?;
        if read_len == 0 {
            return Ok(());
        }
        if data.len() != read_len {
            return Err(BridgeError::Unexpected("read reply of the wrong length"));
        }
        let mut offset = 0;
        for op in operations[first_read..].iter_mut() {
            if let Operation::Read(buffer) = op {
                let end = offset + buffer.len();
                buffer.copy_from_slice(&data[offset..end]);
                offset = end;
            }
        }
        Ok(())
    }
}
