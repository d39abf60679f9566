//! Properties over random input: decoders and the slave never panic, a decode that succeeds
//! gives back the bytes it was fed, the CRC is avr-libc's and detects what §2 of
//! `docs/protocol/i2c.md` says, the slave's FIFO follows the rules of §6.1, and a master that
//! follows §6.2 over a lossy bus receives every record exactly once.

use std::collections::{HashSet, VecDeque};

use pmon_meter::crc;
use pmon_meter::register::{flag, Command};
use pmon_meter::slave::Registers;
use pmon_meter::{Config, Fifo, Identity, Quantities, Record, Register, Scales, Status};
use proptest::collection::vec;
use proptest::prelude::*;

const ADDRESS: u8 = 0x10;

fn identity() -> Identity {
    Identity {
        protocol_version: 1,
        firmware: [1, 2, 3],
        serial: 0x00C0_FFEE,
        capabilities: 0x000F,
        sample_rate: 1800,
        scales: Scales {
            current_lsb_ua: 1000,
            power_lsb_mw: 500,
        },
        record_len: 32,
        fifo_capacity: 32,
    }
}

fn new_slave<const N: usize>() -> Registers<N> {
    Registers::new(ADDRESS, identity(), Config::default())
}

fn block(seq: u32) -> Quantities {
    Quantities {
        voltage: 230.0,
        current: 1.0 + seq as f32 * 0.001,
        frequency: 50.0,
        ..Quantities::default()
    }
}

/// The payload of `frame` (all but the CRC) with the CRC for `register` appended.
fn reseal(register: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = payload.to_vec();
    frame.extend_from_slice(&crc::checksum(ADDRESS, register, payload).to_le_bytes());
    frame
}

/// The readable registers, the FIFO request and the command, with their payload lengths.
const KINDS: [(&str, u8, usize); 6] = [
    ("identity", 0x00, Identity::LEN),
    ("config", 0x10, Config::LEN),
    ("status", 0x20, Status::LEN),
    ("fifo", 0x30, Fifo::LEN),
    ("fifo request", 0x30, 4),
    ("command", 0x40, 1),
];

/// Decodes a sealed frame of one kind and encodes the result again.
fn decode_encode(kind: usize, frame: &[u8]) -> Option<Vec<u8>> {
    match kind {
        0 => Identity::decode(ADDRESS, frame)
            .ok()
            .map(|v| v.encode().to_vec()),
        1 => Config::decode(ADDRESS, frame)
            .ok()
            .map(|v| v.encode().to_vec()),
        2 => Status::decode(ADDRESS, frame)
            .ok()
            .map(|v| v.encode().to_vec()),
        3 => Fifo::decode(ADDRESS, frame)
            .ok()
            .map(|v| v.encode().to_vec()),
        4 => Fifo::decode_request(ADDRESS, frame)
            .ok()
            .map(|ack| ack.to_le_bytes().to_vec()),
        5 => Command::decode(ADDRESS, frame).ok().map(|c| vec![c as u8]),
        _ => unreachable!(),
    }
}

/// Makes random bytes likely to pass a decoder's field checks, so that the success path is
/// exercised and not only the rejections. Only the fields the decoders judge are touched.
fn plausible(kind: usize, payload: &mut [u8]) {
    match kind {
        0 => {
            payload[0..2].copy_from_slice(b"PM");
            payload[18] = 32;
            payload[12] |= 1;
            payload[14] |= 1;
            payload[16] |= 1;
        }
        1 => {
            payload[0] = if payload[0] & 1 == 0 { 50 } else { 60 };
            payload[1] = 1 + payload[1] % 60;
            // Gains in 1..=0x3CFFFF (below 4 000 000).
            payload[5] = 0;
            payload[9] = 0;
            payload[4] %= 0x3D;
            payload[8] %= 0x3D;
            payload[2] |= 1;
            payload[6] |= 1;
            payload[11] = 0; // |phase_correction| < 256
        }
        3 => payload[0] &= Fifo::PRESENT | Fifo::RESET,
        5 => payload[0] = [0x01, 0x02, 0x5A][payload[0] as usize % 3],
        _ => {}
    }
}

/// Sets the bytes that protocol 1 reserves to zero (§4; for Fifo the record bytes when no
/// record is present).
fn zero_reserved(kind: usize, payload: &mut [u8]) {
    match kind {
        0 => payload[20..24].fill(0),
        1 => payload[12..16].fill(0),
        2 => payload[3] = 0,
        3 if payload[0] & Fifo::PRESENT == 0 => payload[2..].fill(0),
        _ => {}
    }
}

fn kind_and_payload() -> impl Strategy<Value = (usize, Vec<u8>, bool)> {
    (0..KINDS.len(), vec(any::<u8>(), Fifo::LEN), any::<bool>()).prop_map(
        |(kind, mut bytes, hint)| {
            bytes.truncate(KINDS[kind].2);
            if hint {
                plausible(kind, &mut bytes);
            }
            (kind, bytes, hint)
        },
    )
}

/// avr-libc's `_crc_xmodem_update`.
fn crc_xmodem_update(mut crc: u16, data: u8) -> u16 {
    crc ^= (data as u16) << 8;
    for _ in 0..8 {
        crc = if crc & 0x8000 != 0 {
            (crc << 1) ^ 0x1021
        } else {
            crc << 1
        };
    }
    crc
}

proptest! {
    #[test]
    fn decoders_never_panic(
        address in any::<u8>(),
        register in any::<u8>(),
        bytes in vec(any::<u8>(), 0..80),
    ) {
        let _ = Identity::decode(address, &bytes);
        let _ = Config::decode(address, &bytes);
        let _ = Status::decode(address, &bytes);
        let _ = Fifo::decode(address, &bytes);
        let _ = Fifo::decode_request(address, &bytes);
        let _ = Command::decode(address, &bytes);
        let _ = Record::decode(&bytes);
        let _ = crc::open(address, register, &bytes);
    }

    /// Every decode of random bytes with a correct CRC either fails or round-trips, once the
    /// reserved bytes are zero (see `strict_round_trip` for the rest).
    #[test]
    fn sealed_random_payloads_fail_or_round_trip((kind, mut payload, _) in kind_and_payload()) {
        zero_reserved(kind, &mut payload);
        let frame = reseal(KINDS[kind].1, &payload);
        if let Some(again) = decode_encode(kind, &frame) {
            prop_assert_eq!(again, payload, "{}", KINDS[kind].0);
        }
    }

    /// Every decode of random bytes with a correct CRC either fails or round-trips, reserved
    /// bytes included: the decoders refuse non-zero reserved bytes.
    #[test]

    fn strict_round_trip((kind, payload, _) in kind_and_payload()) {
        let frame = reseal(KINDS[kind].1, &payload);
        if let Some(again) = decode_encode(kind, &frame) {
            prop_assert_eq!(again, payload, "{}", KINDS[kind].0);
        }
    }

    #[test]
    fn record_bytes_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
        prop_assert_eq!(Record::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn crc_is_avr_libc_xmodem_from_ffff(
        address in 0u8..0x80,
        register in any::<u8>(),
        payload in vec(any::<u8>(), 0..64),
    ) {
        let mut c = 0xFFFF;
        for byte in [address, register].iter().chain(&payload) {
            c = crc_xmodem_update(c, *byte);
        }
        prop_assert_eq!(c, crc::checksum(address, register, &payload));
    }

    /// Any odd number of flipped bits in a 36-byte FIFO reply is detected.
    #[test]
    fn odd_numbers_of_bit_errors_are_detected(
        payload in vec(any::<u8>(), Fifo::LEN),
        bits in proptest::sample::subsequence((0..36 * 8).collect::<Vec<usize>>(), 1..12),
    ) {
        prop_assume!(bits.len() % 2 == 1);
        let mut frame = reseal(0x30, &payload);
        for bit in bits {
            frame[bit / 8] ^= 1 << (bit % 8);
        }
        prop_assert!(crc::open(ADDRESS, 0x30, &frame).is_err());
    }

    #[test]
    fn the_slave_never_panics(
        actions in vec(
            prop_oneof![
                vec(any::<u8>(), 0..40).prop_map(Action::Write),
                (any::<u32>(), any::<u16>()).prop_map(|(ack, flip)| Action::Frame(
                    Fifo::request(ADDRESS, ack).to_vec(), flip)),
                (any::<u8>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<i16>(), any::<u16>())
                    .prop_map(|(f, c, v, i, p, flip)| Action::Frame(Config {
                        nominal_frequency: f,
                        block_cycles: c,
                        voltage_gain_ppm: v,
                        current_gain_ppm: i,
                        phase_correction: p,
                    }.write_frame(ADDRESS).to_vec(), flip)),
                (prop_oneof![Just(Command::ClearReset), Just(Command::SaveConfig), Just(Command::Reboot)],
                 any::<u16>()).prop_map(|(c, flip)| Action::Frame(c.frame(ADDRESS).to_vec(), flip)),
                (0usize..80).prop_map(Action::Read),
                (any::<f32>(), any::<f32>(), any::<f32>(), any::<u32>())
                    .prop_map(|(v, i, p, e)| Action::Push(v, i, p, e)),
            ],
            0..60,
        )
    ) {
        let mut slave = new_slave::<4>();
        for action in actions {
            match action {
                Action::Write(bytes) => { let _ = slave.on_write(&bytes); }
                Action::Frame(mut bytes, flip) => {
                    // Half of the time, flip one bit (anywhere, the register byte included).
                    if flip & 1 == 1 {
                        let bit = (flip >> 1) as usize % (bytes.len() * 8);
                        bytes[bit / 8] ^= 1 << (bit % 8);
                    }
                    let _ = slave.on_write(&bytes);
                }
                Action::Read(len) => {
                    let mut out = vec![0u8; len];
                    let reply_len = slave.on_read(&mut out);
                    prop_assert!(out.iter().skip(reply_len).all(|&b| b == 0xFF));
                }
                Action::Push(v, i, p, e) => {
                    let q = Quantities {
                        voltage: v,
                        current: i,
                        real_power: p,
                        power_factor: p,
                        phase_angle: v,
                        ..Quantities::default()
                    };
                    slave.push_block(e, &q, e, e >> 3);
                }
            }
            prop_assert!(slave.waiting() <= 4);
        }
    }

    /// `Registers` follows the FIFO rules of §6.1, checked against a model.
    #[test]
    fn the_fifo_follows_the_rules(ops in vec(op_strategy(), 0..120)) {
        const CAP: usize = 5;
        let mut slave = new_slave::<CAP>();
        let mut model = Model::fresh();
        for op in ops {
            match op {
                Op::Push => {
                    let seq = slave.push_block(model.next_seq, &block(model.next_seq), 0, 0).seq;
                    prop_assert_eq!(seq, model.next_seq);
                    if model.fifo.len() == CAP {
                        model.fifo.pop_front();
                        model.overflows += 1;
                        model.overflow_flag = true;
                    }
                    model.fifo.push_back(model.next_seq);
                    model.next_seq = model.next_seq.wrapping_add(1);
                }
                Op::AckNear(offset) => {
                    let base = model.fifo.front().copied().unwrap_or(model.next_seq);
                    let ack = base.wrapping_add(offset as u32).wrapping_sub(2);
                    slave.on_write(&Fifo::request(ADDRESS, ack)).unwrap();
                    model.ack(ack);
                }
                Op::AckAny(ack) => {
                    slave.on_write(&Fifo::request(ADDRESS, ack)).unwrap();
                    model.ack(ack);
                }
                Op::ClearReset => {
                    slave.on_write(&Command::ClearReset.frame(ADDRESS)).unwrap();
                    model.reset = false;
                    model.overflow_flag = false;
                }
            }
            // Compare what the master would read.
            slave.on_write(&[Register::Fifo as u8]).unwrap();
            let mut reply = [0u8; 36];
            slave.on_read(&mut reply);
            let fifo = Fifo::decode(ADDRESS, &reply).unwrap();
            prop_assert_eq!(fifo.record.map(|r| r.seq), model.fifo.front().copied());
            prop_assert_eq!(fifo.remaining as usize, model.fifo.len().saturating_sub(1));
            prop_assert_eq!(fifo.reset, model.reset);
            let status = slave.status();
            prop_assert_eq!(slave.waiting(), model.fifo.len());
            prop_assert_eq!(status.next_seq, model.next_seq);
            prop_assert_eq!(status.fifo_overflows, model.overflows);
            prop_assert_eq!(status.flags & flag::RESET != 0, model.reset);
            prop_assert_eq!(status.flags & flag::FIFO_OVERFLOW != 0, model.overflow_flag);
        }
    }

    /// §6.2: over a bus that corrupts writes and replies, a master that retries with the same
    /// ack, discards the one possible duplicate and clears RESET receives every record exactly
    /// once and in order (the FIFO never overflows here, so no record may go missing).
    #[test]
    fn a_lossy_bus_loses_and_duplicates_nothing(steps in vec(step_strategy(), 0..300)) {
        const CAP: usize = 8;
        let mut slave = new_slave::<CAP>();
        let mut master = Master::default();
        let mut made = 0u32;
        for step in &steps {
            if step.push && slave.waiting() < CAP {
                slave.push_block(made * 360, &block(made), made, 0);
                made += 1;
            }
            master.poll(&mut slave, step.corrupt_write, step.corrupt_read)?;
        }
        // Drain over a clean bus.
        let mut rounds = 0;
        while master.received.len() < made as usize {
            master.poll(&mut slave, None, None)?;
            rounds += 1;
            prop_assert!(rounds < 1000, "the master is stuck at {:?}", master.expected);
        }
        prop_assert_eq!(&master.received, &(0..made).collect::<Vec<_>>());
        prop_assert!(master.duplicates <= steps.len());
    }
}

#[derive(Debug, Clone)]
enum Action {
    Write(Vec<u8>),
    Frame(Vec<u8>, u16),
    Read(usize),
    Push(f32, f32, f32, u32),
}

#[derive(Debug, Clone)]
enum Op {
    Push,
    /// An ack near the oldest record: oldest − 2 + offset.
    AckNear(u8),
    AckAny(u32),
    ClearReset,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Push),
        4 => (0u8..10).prop_map(Op::AckNear),
        1 => any::<u32>().prop_map(Op::AckAny),
        1 => Just(Op::ClearReset),
    ]
}

#[derive(Debug, Default)]
struct Model {
    fifo: VecDeque<u32>,
    next_seq: u32,
    overflows: u32,
    overflow_flag: bool,
    reset: bool,
}

impl Model {
    /// A freshly started slave: RESET is set.
    fn fresh() -> Model {
        Model {
            reset: true,
            ..Model::default()
        }
    }

    fn ack(&mut self, ack: u32) {
        if self.reset || self.fifo.is_empty() {
            return;
        }
        let d = ack.wrapping_sub(self.fifo[0]) as usize;
        if (1..=self.fifo.len()).contains(&d) {
            self.fifo.drain(..d);
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    push: bool,
    corrupt_write: Option<u16>,
    corrupt_read: Option<u16>,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        proptest::option::weighted(0.2, any::<u16>()),
        proptest::option::weighted(0.2, any::<u16>()),
    )
        .prop_map(|(push, corrupt_write, corrupt_read)| Step {
            push,
            corrupt_write,
            corrupt_read,
        })
}

fn flip(bytes: &mut [u8], which: Option<u16>) {
    if let Some(which) = which {
        let bit = which as usize % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

/// The master of §6.2, for one slave.
#[derive(Debug, Default)]
struct Master {
    expected: Option<u32>,
    handling_reset: bool,
    received: Vec<u32>,
    duplicates: usize,
}

impl Master {
    fn poll<const N: usize>(
        &mut self,
        slave: &mut Registers<N>,
        corrupt_write: Option<u16>,
        corrupt_read: Option<u16>,
    ) -> Result<(), TestCaseError> {
        let mut write = match self.expected {
            Some(ack) => Fifo::request(ADDRESS, ack).to_vec(),
            None => vec![Register::Fifo as u8],
        };
        flip(&mut write, corrupt_write);
        let _ = slave.on_write(&write);
        let mut reply = [0u8; 36];
        slave.on_read(&mut reply);
        flip(&mut reply, corrupt_read);
        let Ok(fifo) = Fifo::decode(ADDRESS, &reply) else {
            return Ok(()); // retried by the next poll, with the same ack
        };
        if fifo.reset {
            if !self.handling_reset {
                self.handling_reset = true;
                self.expected = None;
            }
            let mut clear = Command::ClearReset.frame(ADDRESS);
            flip(&mut clear, corrupt_write);
            let _ = slave.on_write(&clear);
        } else {
            self.handling_reset = false;
        }
        if let Some(record) = fifo.record {
            match self.expected {
                None => self.accept(record.seq),
                Some(expected) => match record.seq.wrapping_sub(expected) as i32 {
                    0 => self.accept(record.seq),
                    -1 => self.duplicates += 1,
                    k => {
                        return Err(TestCaseError::fail(format!(
                            "seq {} when {expected} was expected (k = {k})",
                            record.seq
                        )))
                    }
                },
            }
        }
        Ok(())
    }

    fn accept(&mut self, seq: u32) {
        self.received.push(seq);
        self.expected = Some(seq.wrapping_add(1));
    }
}

/// §2: every error of up to three bits in the longest reply (the FIFO reply: 34 payload bytes
/// and the CRC, 288 bits) is detected. The CRC is linear, so an error pattern escapes exactly
/// when the XOR of the syndromes of its bits is zero, whatever the message.
#[test]
fn every_error_of_up_to_three_bits_is_detected() {
    let bits = 36 * 8;
    let zero = [0u8; Fifo::LEN];
    let base = crc::checksum(0, 0, &zero);
    let syndromes: Vec<u16> = (0..bits)
        .map(|bit| {
            if bit < Fifo::LEN * 8 {
                let mut e = zero;
                e[bit / 8] ^= 1 << (bit % 8);
                crc::checksum(0, 0, &e) ^ base
            } else {
                // A flip in the transmitted CRC (little-endian): bit k of the received value.
                1 << (bit - Fifo::LEN * 8)
            }
        })
        .collect();
    assert!(
        syndromes.iter().all(|&s| s != 0),
        "a single-bit error escapes"
    );
    let singles: HashSet<u16> = syndromes.iter().copied().collect();
    assert_eq!(singles.len(), bits, "a double-bit error escapes");
    for i in 0..bits {
        for j in i + 1..bits {
            let pair = syndromes[i] ^ syndromes[j];
            // pair == s_k for some k ≠ i, j would be an undetected three-bit error.
            if singles.contains(&pair) {
                let k = syndromes.iter().position(|&s| s == pair).unwrap();
                assert!(k == i || k == j, "bits {i}, {j}, {k} escape together");
            }
        }
    }
    // And, concretely, on one frame.
    let mut frame = reseal(0x30, &[0x5A; Fifo::LEN]);
    frame[3] ^= 0x10;
    frame[17] ^= 0x01;
    frame[35] ^= 0x80;
    assert!(crc::open(ADDRESS, 0x30, &frame).is_err());
}
