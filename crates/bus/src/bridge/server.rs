//! The bridge side: serves the protocol over a serial line on top of any
//! `embedded_hal::i2c::I2c` bus. `pmon sim bridge` runs it on a simulated bus; the same code
//! on a Linux host with `/dev/i2c-N` makes that host a bridge; the Arduino sketch in
//! `deploy/firmware/pmon-bridge` is the same state machine in C.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};

use super::frame::{
    op, BridgeInfo, BusFault, Frame, FrameDecoder, NackSource, Refusal, Reply, Request, VERSION,
};

/// What the server did, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Frames received intact.
    pub frames: u64,
    /// Requests carried out on the bus.
    pub executed: u64,
    /// Repeats of the last request answered from the cache, without touching the bus.
    pub repeats: u64,
    /// Frames received corrupted (answered with `REQUEST_CRC`).
    pub bad_frames: u64,
    /// Intact requests treated as corrupted by fault injection.
    pub injected_request_faults: u64,
    /// Replies sent with a bit flipped by fault injection.
    pub injected_reply_faults: u64,
}

type ResetHook<B> = Box<dyn FnMut(&mut B) -> bool + Send>;
type ClockHook<B> = Box<dyn FnMut(&mut B, u32) -> Option<u32> + Send>;

/// A bridge: decodes requests, runs them on `bus`, encodes replies. Sans-I/O at its core
/// ([`BridgeServer::receive`]); [`BridgeServer::serve`] is the loop around a port.
pub struct BridgeServer<B> {
    bus: B,
    info: BridgeInfo,
    decoder: FrameDecoder,
    /// The last request carried out and the reply sent, to answer a retransmission.
    last: Option<(Frame, Vec<u8>)>,
    reset: Option<ResetHook<B>>,
    clock: Option<ClockHook<B>>,
    corrupt_rate: f64,
    rng: u64,
    stats: ServerStats,
}

impl<B> std::fmt::Debug for BridgeServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeServer")
            .field("info", &self.info)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<B: I2c> BridgeServer<B> {
    /// A bridge on `bus` that describes itself with `info` (its `version` is forced to
    /// this build's).
    pub fn new(bus: B, info: BridgeInfo) -> Self {
        BridgeServer {
            bus,
            info: BridgeInfo {
                version: VERSION,
                ..info
            },
            decoder: FrameDecoder::new(),
            last: None,
            reset: None,
            clock: None,
            corrupt_rate: 0.0,
            rng: 0x9E37_79B9_7F4A_7C15,
            stats: ServerStats::default(),
        }
    }

    /// What `RESET` does: return true when the bus is free afterwards. Without a hook the
    /// bridge answers "free" (a generic `I2c` cannot drive SCL by hand).
    pub fn with_reset(mut self, hook: impl FnMut(&mut B) -> bool + Send + 'static) -> Self {
        self.reset = Some(Box::new(hook));
        self
    }

    /// What `SET_CLOCK` does: return the frequency in force, or `None` to refuse. Without
    /// a hook the bridge refuses `SET_CLOCK` as unsupported.
    pub fn with_clock(
        mut self,
        hook: impl FnMut(&mut B, u32) -> Option<u32> + Send + 'static,
    ) -> Self {
        self.clock = Some(Box::new(hook));
        self
    }

    /// Fault injection: each intact request is taken as corrupted, and each reply gets one
    /// bit flipped, with probability `rate` (0..=1), drawn from `seed`.
    pub fn with_faults(mut self, rate: f64, seed: u64) -> Self {
        self.corrupt_rate = rate.clamp(0.0, 1.0);
        self.rng = seed | 1;
        self
    }

    /// What the bridge says about itself.
    pub fn info(&self) -> BridgeInfo {
        self.info
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The bus.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Takes bytes from the line; returns the bytes to send back (zero or more replies).
    pub fn receive(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in input {
            let Some(result) = self.decoder.push(byte) else {
                continue;
            };
            let mut reply_wire = match result {
                Err(bad) => {
                    self.stats.bad_frames += 1;
                    wire(&Reply::RequestCrc.frame(bad.tag.unwrap_or(0)))
                }
                Ok(frame) if self.chance() => {
                    self.stats.injected_request_faults += 1;
                    wire(&Reply::RequestCrc.frame(frame.tag))
                }
                Ok(frame) => {
                    self.stats.frames += 1;
                    self.answer(frame)
                }
            };
            if self.chance() && reply_wire.len() > 2 {
                self.stats.injected_reply_faults += 1;
                // Not the leading and trailing delimiters: a damaged frame, not a lost one.
                let index = 1 + (self.next_random() as usize) % (reply_wire.len() - 2);
                reply_wire[index] ^= 1 << (self.next_random() % 8);
            }
            out.extend(reply_wire);
        }
        out
    }

    /// The reply to an intact frame, from the cache for a retransmission.
    fn answer(&mut self, frame: Frame) -> Vec<u8> {
        if let Some((last, reply)) = &self.last {
            if *last == frame {
                self.stats.repeats += 1;
                return reply.clone();
            }
        }
        let reply = if frame.version != VERSION {
            Reply::Malformed(Refusal::Version(VERSION))
        } else {
            match Request::parse(frame.kind, &frame.payload) {
                Ok(request) => {
                    self.stats.executed += 1;
                    self.execute(request)
                }
                Err(refusal) => Reply::Malformed(refusal),
            }
        };
        let bytes = wire(&reply.frame(frame.tag));
        // HELLO starts afresh: nothing before it can be a retransmission.
        if frame.kind == op::HELLO {
            self.last = None;
        } else {
            self.last = Some((frame, bytes.clone()));
        }
        bytes
    }

    fn execute(&mut self, request: Request) -> Reply {
        let max_write = usize::from(self.info.max_write);
        let max_read = usize::from(self.info.max_read);
        match request {
            Request::Hello { .. } => Reply::Ok(self.info.encode()),
            Request::Write { address, bytes } => {
                if bytes.len() > max_write {
                    return Reply::Malformed(Refusal::TooLong);
                }
                match self.bus.write(address, &bytes) {
                    Ok(()) => Reply::Ok(Vec::new()),
                    Err(error) => bus_reply(&error),
                }
            }
            Request::Read { address, len } => {
                if usize::from(len) > max_read {
                    return Reply::Malformed(Refusal::TooLong);
                }
                let mut data = vec![0u8; usize::from(len)];
                match self.bus.read(address, &mut data) {
                    Ok(()) => Reply::Ok(data),
                    Err(error) => bus_reply(&error),
                }
            }
            Request::WriteRead {
                address,
                bytes,
                read_len,
            } => {
                if bytes.len() > max_write || usize::from(read_len) > max_read {
                    return Reply::Malformed(Refusal::TooLong);
                }
                let mut data = vec![0u8; usize::from(read_len)];
                match self.bus.write_read(address, &bytes, &mut data) {
                    Ok(()) => Reply::Ok(data),
                    Err(error) => bus_reply(&error),
                }
            }
            Request::Reset => {
                let free = match &mut self.reset {
                    Some(hook) => hook(&mut self.bus),
                    None => true,
                };
                Reply::Ok(vec![u8::from(free)])
            }
            Request::SetClock { hz } => match &mut self.clock {
                Some(hook) => match hook(&mut self.bus, hz) {
                    Some(actual) => {
                        self.info.clock_hz = actual;
                        Reply::Ok(actual.to_le_bytes().to_vec())
                    }
                    None => Reply::Malformed(Refusal::Unsupported),
                },
                None => Reply::Malformed(Refusal::Unsupported),
            },
        }
    }

    /// Serves `port` until `stop` is set. Reads return at least every `poll` (the port's
    /// own timeout) so the flag is honoured. A peer that has gone away (EIO on a
    /// pseudo-terminal whose other end is closed) is waited for, not an error.
    pub fn serve<P: Read + Write>(&mut self, port: &mut P, stop: &AtomicBool) -> io::Result<()> {
        let mut chunk = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            match port.read(&mut chunk) {
                Ok(0) => std::thread::sleep(Duration::from_millis(1)),
                Ok(n) => {
                    let reply = self.receive(&chunk[..n]);
                    if reply.is_empty() {
                        continue;
                    }
                    match port.write_all(&reply).and_then(|()| port.flush()) {
                        Ok(()) => {}
                        // Nobody reads: the host will time out and ask again.
                        Err(error) if quiet(&error) => {}
                        Err(error) => return Err(error),
                    }
                }
                Err(error) if quiet(&error) => {}
                Err(error) if hung_up(&error) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn chance(&mut self) -> bool {
        if self.corrupt_rate <= 0.0 {
            return false;
        }
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.corrupt_rate
    }

    /// xorshift64*: enough for fault injection, and no dependency.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn quiet(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// EIO: on a pseudo-terminal, the other end is not open (yet, or any more).
fn hung_up(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        error.raw_os_error() == Some(nix::libc::EIO)
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// A frame as the bridge sends it: a leading delimiter, then `COBS(body) 00`.
fn wire(frame: &Frame) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend(frame.encode());
    out
}

fn bus_reply(error: &impl embedded_hal::i2c::Error) -> Reply {
    match error.kind() {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address) => Reply::Nack(NackSource::Address),
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data) => Reply::Nack(NackSource::Data),
        ErrorKind::NoAcknowledge(_) => Reply::Nack(NackSource::Unknown),
        ErrorKind::Bus => Reply::BusError(BusFault::Bus),
        ErrorKind::ArbitrationLoss => Reply::BusError(BusFault::Arbitration),
        ErrorKind::Overrun => Reply::BusError(BusFault::Overrun),
        _ => Reply::BusError(BusFault::Other(0xFF)),
    }
}
