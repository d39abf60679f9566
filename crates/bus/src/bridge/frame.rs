//! The bridge's wire format, version 1, as pure functions: COBS framing, CRC-16, requests
//! and replies. Specified byte for byte in `docs/protocol/serial-bridge.md`; the tests
//! here and in `tests/bridge_wire.rs` pin the same bytes.
//!
//! A frame on the line is `COBS(body) 00`, where
//! `body = version tag type len payload[len] crc_lo crc_hi` and the CRC
//! (CRC-16/IBM-3740, as the I2C protocol uses) covers `version … payload`.

use crc::{Crc, CRC_16_IBM_3740};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Most payload bytes a frame carries (the `len` byte).
pub const MAX_PAYLOAD: usize = 255;
/// `version tag type len`.
pub const HEADER_LEN: usize = 4;
/// Bytes of CRC at the end of a body.
pub const CRC_LEN: usize = 2;
/// Longest body: header, payload, CRC.
pub const MAX_BODY: usize = HEADER_LEN + MAX_PAYLOAD + CRC_LEN;
/// Longest frame on the line: COBS adds one byte per 254 and one in front, plus the delimiter.
pub const MAX_ENCODED: usize = MAX_BODY + MAX_BODY / 254 + 2;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, no reflection) of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// Request types (host → bridge), the `type` byte.
pub mod op {
    /// Version exchange; the payload is the highest version the host speaks.
    pub const HELLO: u8 = 0x01;
    /// `address bytes…`: one write transfer, `S SLA+W bytes… P`.
    pub const WRITE: u8 = 0x02;
    /// `address n`: one read transfer of `n` bytes, `S SLA+R bytes… P`.
    pub const READ: u8 = 0x03;
    /// `address n bytes…`: write, repeated start, read `n` bytes, stop.
    pub const WRITE_READ: u8 = 0x04;
    /// Bus recovery: nine SCL pulses, a STOP, the controller re-initialised.
    pub const RESET: u8 = 0x05;
    /// `hz (u32 LE)`: set the SCL frequency.
    pub const SET_CLOCK: u8 = 0x06;
}

/// Reply types (bridge → host), the `type` byte.
pub mod status {
    /// Done; the payload is the data read (or the request's result).
    pub const OK: u8 = 0x80;
    /// Not acknowledged; payload `source`: 1 address, 2 data, 0 unknown.
    pub const NACK: u8 = 0x81;
    /// The bus failed; payload `code` (see [`super::BusFault`]).
    pub const BUS_ERROR: u8 = 0x82;
    /// The request arrived corrupted (COBS, length or CRC); the host sends it again.
    pub const REQUEST_CRC: u8 = 0x83;
    /// The request was understood but cannot be carried out; payload `reason` (see
    /// [`super::Refusal`]) and, for a version refusal, the version the bridge speaks.
    pub const MALFORMED: u8 = 0x84;
}

/// One frame's content after COBS and CRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol version of the sender.
    pub version: u8,
    /// Chosen by the host per request, repeated in the reply and in retransmissions.
    pub tag: u8,
    /// A request [`op`] or a reply [`status`].
    pub kind: u8,
    /// Up to [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

/// Why bytes between two delimiters are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The COBS encoding is broken (a code byte points past the end, or a zero inside).
    #[error("broken COBS encoding")]
    Cobs,
    /// Too short for a header and CRC, or the `len` byte disagrees with the body.
    #[error("frame length {actual} does not match its header")]
    Length {
        /// Body bytes received.
        actual: usize,
    },
    /// The CRC does not match: bytes were corrupted on the line.
    #[error("CRC mismatch: computed {computed:#06x}, received {received:#06x}")]
    Crc {
        /// Computed over the body received.
        computed: u16,
        /// Carried by the frame.
        received: u16,
    },
    /// More bytes than any frame has arrived without a delimiter.
    #[error("more than {MAX_ENCODED} bytes without a frame delimiter")]
    Overflow,
}

/// A failed frame and the tag it seemed to carry (possibly corrupted itself), so that a
/// bridge can name it in its `REQUEST_CRC` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame {
    /// What was wrong.
    pub error: FrameError,
    /// Byte 1 of the decoded body, if there was one.
    pub tag: Option<u8>,
}

/// COBS-encodes `body` into `out` (appending) and adds the `00` delimiter.
pub fn cobs_encode(body: &[u8], out: &mut Vec<u8>) {
    let mut code_at = out.len();
    out.push(0);
    let mut code = 1u8;
    for &byte in body {
        if code == 0xFF {
            // A full block of 254 data bytes: close it only when more bytes follow.
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        }
        if byte == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(byte);
            code += 1;
        }
    }
    out[code_at] = code;
    out.push(0);
}

/// Decodes COBS data (without the delimiter).
pub fn cobs_decode(encoded: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut index = 0;
    while index < encoded.len() {
        let code = encoded[index];
        if code == 0 {
            return Err(FrameError::Cobs);
        }
        let end = index + usize::from(code);
        if end > encoded.len() {
            return Err(FrameError::Cobs);
        }
        let block = &encoded[index + 1..end];
        if block.contains(&0) {
            return Err(FrameError::Cobs);
        }
        out.extend_from_slice(block);
        index = end;
        // A full block (code 0xFF) is not followed by an implied zero, nor is the last one.
        if code != 0xFF && index < encoded.len() {
            out.push(0);
        }
    }
    Ok(out)
}

impl Frame {
    /// A frame of this build's version.
    pub fn new(tag: u8, kind: u8, payload: Vec<u8>) -> Frame {
        Frame {
            version: VERSION,
            tag,
            kind,
            payload,
        }
    }

    /// The body: header, payload, CRC. A payload longer than [`MAX_PAYLOAD`] is cut there
    /// (the encoders of this module never build one).
    pub fn body(&self) -> Vec<u8> {
        let payload = &self.payload[..self.payload.len().min(MAX_PAYLOAD)];
        let mut body = Vec::with_capacity(HEADER_LEN + payload.len() + CRC_LEN);
        body.extend_from_slice(&[self.version, self.tag, self.kind, payload.len() as u8]);
        body.extend_from_slice(payload);
        let crc = crc16(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    /// The frame as it goes on the line: `COBS(body) 00`.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() + 3);
        cobs_encode(&body, &mut out);
        out
    }

    /// Checks and splits a body (COBS already removed).
    pub fn from_body(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() < HEADER_LEN + CRC_LEN {
            return Err(FrameError::Length { actual: body.len() });
        }
        let (content, crc) = body.split_at(body.len() - CRC_LEN);
        let received = u16::from_le_bytes([crc[0], crc[1]]);
        let computed = crc16(content);
        if computed != received {
            return Err(FrameError::Crc { computed, received });
        }
        if usize::from(content[3]) != content.len() - HEADER_LEN {
            return Err(FrameError::Length { actual: body.len() });
        }
        Ok(Frame {
            version: content[0],
            tag: content[1],
            kind: content[2],
            payload: content[HEADER_LEN..].to_vec(),
        })
    }
}

/// Splits a byte stream into frames at the `00` delimiters. Pure: feed it whatever the
/// line delivered.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    overflowed: bool,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Forgets a partial frame (after a timeout, say).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.overflowed = false;
    }

    /// Takes one byte; returns a frame (or why it is not one) at each delimiter that ends
    /// a non-empty run. Empty runs (`00 00`) are idle line and yield nothing.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, BadFrame>> {
        if byte != 0 {
            if self.buffer.len() < MAX_ENCODED {
                self.buffer.push(byte);
            } else {
                self.overflowed = true;
            }
            return None;
        }
        if self.buffer.is_empty() && !self.overflowed {
            return None;
        }
        let encoded = std::mem::take(&mut self.buffer);
        if std::mem::take(&mut self.overflowed) {
            return Some(Err(BadFrame {
                error: FrameError::Overflow,
                tag: None,
            }));
        }
        Some(match cobs_decode(&encoded) {
            Ok(body) => Frame::from_body(&body).map_err(|error| BadFrame {
                error,
                tag: body.get(1).copied(),
            }),
            Err(error) => Err(BadFrame { error, tag: None }),
        })
    }
}

/// Why a bus transfer failed, as a `BUS_ERROR` reply carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFault {
    /// 1: a misplaced START or STOP, or SDA held low (a stuck bus).
    Bus,
    /// 2: another master won arbitration.
    Arbitration,
    /// 3: the controller's buffer over- or underran.
    Overrun,
    /// 4: the transfer did not finish in time (SCL held low: clock stretching without end).
    Timeout,
    /// Any other code.
    Other(u8),
}

impl BusFault {
    /// The code byte.
    pub fn code(self) -> u8 {
        match self {
            BusFault::Bus => 1,
            BusFault::Arbitration => 2,
            BusFault::Overrun => 3,
            BusFault::Timeout => 4,
            BusFault::Other(code) => code,
        }
    }

    /// From a code byte.
    pub fn from_code(code: u8) -> BusFault {
        match code {
            1 => BusFault::Bus,
            2 => BusFault::Arbitration,
            3 => BusFault::Overrun,
            4 => BusFault::Timeout,
            other => BusFault::Other(other),
        }
    }
}

/// Why a bridge refused a well-formed frame (`MALFORMED` reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 1: the request type is unknown.
    UnknownType,
    /// 2: the payload's length does not fit the request type.
    BadLength,
    /// 3: more bytes to write or read than the bridge handles (see [`BridgeInfo`]).
    TooLong,
    /// 4: the address is not a 7-bit address.
    BadAddress,
    /// 5: the frame's version is not the bridge's; the bridge's version follows.
    Version(u8),
    /// 6: the bridge cannot do this (set the clock, say).
    Unsupported,
    /// Any other code.
    Other(u8),
}

impl Refusal {
    fn payload(self) -> Vec<u8> {
        match self {
            Refusal::UnknownType => vec![1],
            Refusal::BadLength => vec![2],
            Refusal::TooLong => vec![3],
            Refusal::BadAddress => vec![4],
            Refusal::Version(version) => vec![5, version],
            Refusal::Unsupported => vec![6],
            Refusal::Other(code) => vec![code],
        }
    }

    fn from_payload(payload: &[u8]) -> Refusal {
        match payload {
            [1, ..] => Refusal::UnknownType,
            [2, ..] => Refusal::BadLength,
            [3, ..] => Refusal::TooLong,
            [4, ..] => Refusal::BadAddress,
            [5, version, ..] => Refusal::Version(*version),
            [6, ..] => Refusal::Unsupported,
            [code, ..] => Refusal::Other(*code),
            [] => Refusal::Other(0),
        }
    }
}

/// What the bridge says about itself in its `HELLO` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeInfo {
    /// The protocol version it speaks.
    pub version: u8,
    /// Most bytes one write (or the write half of a write-read) may carry.
    pub max_write: u8,
    /// Most bytes one read may return.
    pub max_read: u8,
    /// [`caps`] bits.
    pub capabilities: u8,
    /// The SCL frequency in force, Hz.
    pub clock_hz: u32,
    /// Firmware version, major.minor.patch.
    pub firmware: [u8; 3],
}

/// Bits of [`BridgeInfo::capabilities`].
pub mod caps {
    /// `SET_CLOCK` works.
    pub const SET_CLOCK: u8 = 1 << 0;
    /// `RESET` drives SCL itself (nine pulses and a STOP), rather than only re-initialising.
    pub const BUS_RECOVERY: u8 = 1 << 1;
}

impl BridgeInfo {
    /// Length of the `HELLO` reply payload.
    pub const LEN: usize = 11;

    /// `version max_write max_read caps clock_hz(u32 LE) firmware(3)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            self.version,
            self.max_write,
            self.max_read,
            self.capabilities,
        ];
        out.extend_from_slice(&self.clock_hz.to_le_bytes());
        out.extend_from_slice(&self.firmware);
        out
    }

    /// From a `HELLO` reply payload; `None` if it is too short (longer is allowed: a later
    /// minor revision may append fields).
    pub fn decode(payload: &[u8]) -> Option<BridgeInfo> {
        if payload.len() < BridgeInfo::LEN {
            return None;
        }
        Some(BridgeInfo {
            version: payload[0],
            max_write: payload[1],
            max_read: payload[2],
            capabilities: payload[3],
            clock_hz: u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]),
            firmware: [payload[8], payload[9], payload[10]],
        })
    }
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `HELLO`: the host speaks versions up to `max_version`.
    Hello {
        /// Highest version the host speaks.
        max_version: u8,
    },
    /// `WRITE`.
    Write {
        /// 7-bit address.
        address: u8,
        /// Bytes to write (none: an address-only probe).
        bytes: Vec<u8>,
    },
    /// `READ`.
    Read {
        /// 7-bit address.
        address: u8,
        /// Bytes to read, 1..=255.
        len: u8,
    },
    /// `WRITE_READ`.
    WriteRead {
        /// 7-bit address.
        address: u8,
        /// Bytes to write, at least one.
        bytes: Vec<u8>,
        /// Bytes to read after the repeated start, 1..=255.
        read_len: u8,
    },
    /// `RESET`.
    Reset,
    /// `SET_CLOCK`.
    SetClock {
        /// SCL frequency wanted, Hz.
        hz: u32,
    },
}

impl Request {
    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Hello { .. } => op::HELLO,
            Request::Write { .. } => op::WRITE,
            Request::Read { .. } => op::READ,
            Request::WriteRead { .. } => op::WRITE_READ,
            Request::Reset => op::RESET,
            Request::SetClock { .. } => op::SET_CLOCK,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Request::Hello { max_version } => vec![*max_version],
            Request::Write { address, bytes } => {
                let mut out = vec![*address];
                out.extend_from_slice(bytes);
                out
            }
            Request::Read { address, len } => vec![*address, *len],
            Request::WriteRead {
                address,
                bytes,
                read_len,
            } => {
                let mut out = vec![*address, *read_len];
                out.extend_from_slice(bytes);
                out
            }
            Request::Reset => Vec::new(),
            Request::SetClock { hz } => hz.to_le_bytes().to_vec(),
        }
    }

    /// The frame with `tag`.
    pub fn frame(&self, tag: u8) -> Frame {
        Frame::new(tag, self.kind(), self.payload())
    }

    /// Parses a request frame's type and payload.
    pub fn parse(kind: u8, payload: &[u8]) -> Result<Request, Refusal> {
        let address = |a: u8| {
            if a <= 0x7F {
                Ok(a)
            } else {
                Err(Refusal::BadAddress)
            }
        };
        match (kind, payload) {
            (op::HELLO, [max_version, ..]) => Ok(Request::Hello {
                max_version: *max_version,
            }),
            (op::WRITE, [a, bytes @ ..]) => Ok(Request::Write {
                address: address(*a)?,
                bytes: bytes.to_vec(),
            }),
            (op::READ, [a, len]) if *len > 0 => Ok(Request::Read {
                address: address(*a)?,
                len: *len,
            }),
            (op::WRITE_READ, [a, read_len, bytes @ ..]) if *read_len > 0 && !bytes.is_empty() => {
                Ok(Request::WriteRead {
                    address: address(*a)?,
                    bytes: bytes.to_vec(),
                    read_len: *read_len,
                })
            }
            (op::RESET, []) => Ok(Request::Reset),
            (op::SET_CLOCK, [a, b, c, d]) => Ok(Request::SetClock {
                hz: u32::from_le_bytes([*a, *b, *c, *d]),
            }),
            (op::HELLO | op::WRITE | op::READ | op::WRITE_READ | op::RESET | op::SET_CLOCK, _) => {
                Err(Refusal::BadLength)
            }
            _ => Err(Refusal::UnknownType),
        }
    }
}

/// Who did not acknowledge, as a `NACK` reply carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackSource {
    /// 0: the bridge cannot tell.
    Unknown,
    /// 1: nobody answered the address.
    Address,
    /// 2: a data byte.
    Data,
}

/// A reply, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK` with its payload: data read, the `HELLO` info, the clock set, or the `RESET` result.
    Ok(Vec<u8>),
    /// `NACK`.
    Nack(NackSource),
    /// `BUS_ERROR`.
    BusError(BusFault),
    /// `REQUEST_CRC`.
    RequestCrc,
    /// `MALFORMED`.
    Malformed(Refusal),
}

impl Reply {
    /// The frame with `tag`.
    pub fn frame(&self, tag: u8) -> Frame {
        let (kind, payload) = match self {
            Reply::Ok(data) => (status::OK, data.clone()),
            Reply::Nack(source) => (
                status::NACK,
                vec![match source {
                    NackSource::Unknown => 0,
                    NackSource::Address => 1,
                    NackSource::Data => 2,
                }],
            ),
            Reply::BusError(fault) => (status::BUS_ERROR, vec![fault.code()]),
            Reply::RequestCrc => (status::REQUEST_CRC, Vec::new()),
            Reply::Malformed(refusal) => (status::MALFORMED, refusal.payload()),
        };
        Frame::new(tag, kind, payload)
    }

    /// Parses a reply frame's type and payload; `None` for a type that is no reply.
    pub fn parse(kind: u8, payload: &[u8]) -> Option<Reply> {
        Some(match kind {
            status::OK => Reply::Ok(payload.to_vec()),
            status::NACK => Reply::Nack(match payload.first() {
                Some(1) => NackSource::Address,
                Some(2) => NackSource::Data,
                _ => NackSource::Unknown,
            }),
            status::BUS_ERROR => {
                Reply::BusError(BusFault::from_code(payload.first().copied().unwrap_or(0)))
            }
            status::REQUEST_CRC => Reply::RequestCrc,
            status::MALFORMED => Reply::Malformed(Refusal::from_payload(payload)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cobs_known_vectors() {
        // From the COBS paper / Wikipedia's table.
        let cases: [(&[u8], &[u8]); 5] = [
            (&[0x00], &[0x01, 0x01, 0x00]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01, 0x00]),
            (
                &[0x11, 0x22, 0x00, 0x33],
                &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00],
            ),
            (
                &[0x11, 0x22, 0x33, 0x44],
                &[0x05, 0x11, 0x22, 0x33, 0x44, 0x00],
            ),
            (
                &[0x11, 0x00, 0x00, 0x00],
                &[0x02, 0x11, 0x01, 0x01, 0x01, 0x00],
            ),
        ];
        for (plain, encoded) in cases {
            let mut out = Vec::new();
            cobs_encode(plain, &mut out);
            assert_eq!(out, encoded, "{}", hex(plain));
            assert_eq!(cobs_decode(&encoded[..encoded.len() - 1]).unwrap(), plain);
        }
        let long: Vec<u8> = (1..=254).collect();
        let mut out = Vec::new();
        cobs_encode(&long, &mut out);
        assert_eq!(out[0], 0xFF);
        assert_eq!(out.len(), 254 + 2);
        assert_eq!(cobs_decode(&out[..out.len() - 1]).unwrap(), long);
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn a_corrupted_byte_fails_the_crc() {
        let mut body = Request::Read {
            address: 0x10,
            len: 26,
        }
        .frame(7)
        .body();
        body[5] ^= 0x04;
        assert!(matches!(
            Frame::from_body(&body),
            Err(FrameError::Crc { .. })
        ));
    }

    #[test]
    fn decoder_skips_idle_delimiters_and_reports_garbage() {
        let mut decoder = FrameDecoder::new();
        let frame = Request::Reset.frame(3);
        let mut line = vec![0, 0];
        line.extend(frame.encode());
        line.extend([0x05, 0x11, 0x00]);
        let results: Vec<_> = line.iter().filter_map(|&b| decoder.push(b)).collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0], Ok(frame));
        assert!(results[1].is_err());
    }

    #[test]
    fn decoder_survives_an_endless_run() {
        let mut decoder = FrameDecoder::new();
        for _ in 0..10_000 {
            assert!(decoder.push(0x55).is_none());
        }
        assert_eq!(
            decoder.push(0),
            Some(Err(BadFrame {
                error: FrameError::Overflow,
                tag: None
            }))
        );
        let frame = Request::Reset.frame(4);
        let got: Vec<_> = frame
            .encode()
            .iter()
            .filter_map(|&b| decoder.push(b))
            .collect();
        assert_eq!(got, vec![Ok(frame)]);
    }

    #[test]
    fn requests_parse_back() {
        let requests = [
            Request::Hello { max_version: 1 },
            Request::Write {
                address: 0x10,
                bytes: vec![0x40, 0x01, 0x12, 0x92],
            },
            Request::Write {
                address: 0x10,
                bytes: vec![],
            },
            Request::Read {
                address: 0x10,
                len: 36,
            },
            Request::WriteRead {
                address: 0x10,
                bytes: vec![0x00],
                read_len: 26,
            },
            Request::Reset,
            Request::SetClock { hz: 100_000 },
        ];
        for request in requests {
            let frame = request.frame(9);
            assert_eq!(Request::parse(frame.kind, &frame.payload), Ok(request));
        }
        assert_eq!(Request::parse(0x42, &[]), Err(Refusal::UnknownType));
        assert_eq!(Request::parse(op::READ, &[0x10]), Err(Refusal::BadLength));
        assert_eq!(
            Request::parse(op::READ, &[0x10, 0]),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            Request::parse(op::READ, &[0x80, 4]),
            Err(Refusal::BadAddress)
        );
    }

    proptest! {
        #[test]
        fn cobs_round_trips(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = Vec::new();
            cobs_encode(&body, &mut out);
            prop_assert_eq!(out.last(), Some(&0));
            prop_assert!(!out[..out.len() - 1].contains(&0));
            prop_assert_eq!(cobs_decode(&out[..out.len() - 1]).unwrap(), body);
        }

        #[test]
        fn decoding_noise_never_panics(line in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let mut decoder = FrameDecoder::new();
            for byte in line {
                if let Some(Ok(frame)) = decoder.push(byte) {
                    let _ = Request::parse(frame.kind, &frame.payload);
                    let _ = Reply::parse(frame.kind, &frame.payload);
                }
            }
        }

        #[test]
        fn frames_round_trip(tag: u8, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let frame = Frame::new(tag, kind, payload);
            let mut decoder = FrameDecoder::new();
            let got: Vec<_> = frame.encode().iter().filter_map(|&b| decoder.push(b)).collect();
            prop_assert_eq!(got, vec![Ok(frame)]);
        }
    }
}
