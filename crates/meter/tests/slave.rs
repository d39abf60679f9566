//! Behaviour of `slave::Registers`, the slave's register file, against `docs/protocol/i2c.md`.
//!
//! The first tests replay the worked example (§10) and the sequence diagrams (§6.4) through a
//! slave and compare every transfer with the bytes printed in the document.

mod frames;

use frames::*;
use pmon_meter::register::{capability, flag, Command};
use pmon_meter::slave::{Registers, WriteError, WriteEvent};
use pmon_meter::{
    Config, DecodeError, Fifo, Identity, NewAddress, Quantities, Record, Register, Scales, Status,
};

const SCALES: Scales = Scales {
    current_lsb_ua: 1000,
    power_lsb_mw: 500,
};

fn identity() -> Identity {
    Identity {
        protocol_version: 1,
        firmware: [1, 2, 3],
        serial: 0x00C0_FFEE,
        capabilities: capability::ENERGY
            | capability::PHASE_ANGLE
            | capability::CALIBRATION
            | capability::PERSISTENT_CONFIG,
        sample_rate: 1800,
        scales: SCALES,
        record_len: 32,
        fifo_capacity: 32,
    }
}

fn calibration() -> Config {
    Config {
        nominal_frequency: 50,
        block_cycles: 10,
        voltage_gain_ppm: 1_012_500,
        current_gain_ppm: 998_000,
        phase_correction: -120,
    }
}

/// The quantities of the worked example's record: 230.00 V, 12.5 A lagging 30°, 50 Hz.
fn heat_pump() -> Quantities {
    Quantities {
        voltage: 230.0,
        current: 12.5,
        frequency: 50.0,
        real_power: 2490.0,
        reactive_power: 1437.5,
        apparent_power: 2875.0,
        power_factor: 0.866,
        crest_factor: 1.414,
        phase_angle: 30.0,
    }
}

fn new_slave<const N: usize>() -> Registers<N> {
    Registers::new(ADDRESS, identity(), Config::default())
}

/// Appends blocks until `next_seq` is `until`. Block `seq` ends at sample `seq × 360`, and its
/// import counter is chosen so that block 1234 carries the example's 123 456.
fn push_until<const N: usize>(slave: &mut Registers<N>, until: u32) {
    while slave.status().next_seq != until {
        let seq = slave.status().next_seq;
        slave.push_block(seq.wrapping_mul(360), &heat_pump(), 122_222 + seq, 7);
    }
}

/// Pointer write, then a read of the register's whole reply.
fn read<const N: usize>(slave: &mut Registers<N>, register: Register) -> Vec<u8> {
    assert_eq!(slave.on_write(&[register as u8]), Ok(WriteEvent::None));
    let mut out = vec![0u8; register.reply_len()];
    assert_eq!(slave.on_read(&mut out), register.reply_len());
    out
}

/// The FIFO transaction: request with `ack`, repeated start, 36-byte read.
fn poll<const N: usize>(slave: &mut Registers<N>, ack: u32) -> [u8; 36] {
    assert_eq!(
        slave.on_write(&Fifo::request(ADDRESS, ack)),
        Ok(WriteEvent::None)
    );
    let mut out = [0u8; 36];
    slave.on_read(&mut out);
    out
}

fn poll_decoded<const N: usize>(slave: &mut Registers<N>, ack: u32) -> Fifo {
    Fifo::decode(ADDRESS, &poll(slave, ack)).unwrap()
}

fn oldest<const N: usize>(slave: &mut Registers<N>) -> Option<u32> {
    slave.on_write(&[Register::Fifo as u8]).unwrap();
    let mut out = [0u8; 36];
    slave.on_read(&mut out);
    Fifo::decode(ADDRESS, &out).unwrap().record.map(|r| r.seq)
}

/// A slave whose restart the master has acknowledged, holding blocks `0..blocks`.
fn running_slave<const N: usize>(blocks: u32) -> Registers<N> {
    let mut slave = new_slave::<N>();
    assert_eq!(slave.on_write(&CLEAR_RESET), Ok(WriteEvent::None));
    push_until(&mut slave, blocks);
    slave
}

#[test]
fn worked_example_replayed_through_a_slave() {
    // §10: restarted 253 s ago, 1266 blocks made, one discarded, nobody polled.
    let mut slave = new_slave::<32>();
    assert_eq!(slave.identity(), &identity());
    push_until(&mut slave, 1266);
    slave.count_block_error();
    slave.set_uptime(253);

    assert_eq!(read(&mut slave, Register::Identity), IDENTITY_REPLY);
    assert_eq!(read(&mut slave, Register::Config), CONFIG_REPLY);
    assert_eq!(read(&mut slave, Register::Status), STATUS_REPLY);

    // §10.5, second dump: before ClearReset the reply carries the RESET bit and the ack is ignored.
    assert_eq!(poll(&mut slave, 1234), FIFO_REPLY_RESET);
    assert_eq!(slave.waiting(), 32);

    // §10.4
    assert_eq!(slave.on_write(&CLEAR_RESET), Ok(WriteEvent::None));
    assert_eq!(slave.status().flags, 0);

    // §10.5
    assert_eq!(slave.on_write(&FIFO_REQUEST_1234), Ok(WriteEvent::None));
    let mut reply = [0u8; 36];
    assert_eq!(slave.on_read(&mut reply), 36);
    assert_eq!(reply, FIFO_REPLY);

    // §10.6: the calibration is applied, flagged unsaved, and reads back as written.
    assert_eq!(
        slave.on_write(&CONFIG_WRITE),
        Ok(WriteEvent::Configured(calibration()))
    );
    assert_eq!(slave.config(), &calibration());
    assert_eq!(slave.status().flags, flag::CONFIG_UNSAVED);
    assert_eq!(read(&mut slave, Register::Config), CONFIG_WRITE[1..]);
    assert_eq!(slave.on_write(&SAVE_CONFIG), Ok(WriteEvent::SaveConfig));
    assert_eq!(slave.status().flags, 0);
    assert_eq!(slave.on_write(&REBOOT), Ok(WriteEvent::Reboot));
}

#[test]
fn sequence_diagram_normal_polling_and_corruption() {
    // §6.4, the first two diagrams.
    let mut slave = running_slave::<32>(1266);
    assert_eq!(slave.waiting(), 32);
    assert_eq!(oldest(&mut slave), Some(1234));

    let first = poll(&mut slave, 1234);
    assert_eq!(first, FIFO_REPLY);

    slave.on_write(&FIFO_REQUEST_1235).unwrap();
    let mut second = [0u8; 36];
    slave.on_read(&mut second);
    let fifo = Fifo::decode(ADDRESS, &second).unwrap();
    assert_eq!((fifo.record.unwrap().seq, fifo.remaining), (1235, 0x1E));

    // A corrupted reply is asked for again with the same ack: the same bytes come back.
    assert_eq!(poll(&mut slave, 1235), second);

    // A corrupted ack: refused, counted, nothing dropped; the master sees a duplicate of 1235.
    let mut corrupted = FIFO_REQUEST_1236;
    corrupted[1] ^= 0x08;
    assert!(matches!(
        slave.on_write(&corrupted),
        Err(WriteError::Decode(DecodeError::Crc { .. }))
    ));
    assert_eq!(slave.status().crc_errors, 1);
    let mut duplicate = [0u8; 36];
    slave.on_read(&mut duplicate);
    assert_eq!(duplicate, second);

    slave.on_write(&FIFO_REQUEST_1236).unwrap();
    let mut third = [0u8; 36];
    slave.on_read(&mut third);
    let fifo = Fifo::decode(ADDRESS, &third).unwrap();
    assert_eq!((fifo.record.unwrap().seq, fifo.remaining), (1236, 0x1D));
}

#[test]
fn sequence_diagram_slave_restart() {
    // §6.4, the third diagram: the master holds everything before 1300.
    let mut old_boot = running_slave::<32>(1300);
    assert_eq!(poll_decoded(&mut old_boot, 1300).record, None);

    // Power blip: a new boot that has made blocks 0, 1 and 2.
    let mut slave = new_slave::<32>();
    push_until(&mut slave, 3);
    slave.on_write(&FIFO_REQUEST_1300).unwrap();
    let mut reply = [0u8; 36];
    slave.on_read(&mut reply);
    assert_eq!(&reply[..2], &[0x03, 0x02]);
    let fifo = Fifo::decode(ADDRESS, &reply).unwrap();
    assert!(fifo.reset);
    assert_eq!(fifo.record.unwrap().seq, 0);

    assert_eq!(slave.on_write(&CLEAR_RESET), Ok(WriteEvent::None));
    slave.on_write(&FIFO_REQUEST_1).unwrap();
    slave.on_read(&mut reply);
    assert_eq!(&reply[..2], &[0x01, 0x01]);
    assert_eq!(
        Fifo::decode(ADDRESS, &reply).unwrap().record.unwrap().seq,
        1
    );
}

#[test]
fn a_stale_ack_cannot_drop_records_of_a_new_boot() {
    // §6.3: the master held up to 4 of the old boot; the new boot already has 0..=9.
    let mut slave = new_slave::<32>();
    push_until(&mut slave, 10);
    let fifo = poll_decoded(&mut slave, 5);
    assert!(fifo.reset);
    assert_eq!(fifo.record.unwrap().seq, 0);
    assert_eq!(slave.waiting(), 10);
    // After ClearReset the same ack is honoured.
    slave.on_write(&CLEAR_RESET).unwrap();
    assert_eq!(poll_decoded(&mut slave, 5).record.unwrap().seq, 5);
    assert_eq!(slave.waiting(), 5);
}

#[test]
fn acks_are_ignored_while_reset_is_set() {
    let mut slave = new_slave::<8>();
    push_until(&mut slave, 5);
    for ack in [1, 3, 5, 6, u32::MAX] {
        let fifo = poll_decoded(&mut slave, ack);
        assert!(fifo.reset);
        assert_eq!(fifo.record.unwrap().seq, 0);
        assert_eq!(fifo.remaining, 4);
    }
    assert_eq!(slave.status().flags & flag::RESET, flag::RESET);
    slave.on_write(&CLEAR_RESET).unwrap();
    let fifo = poll_decoded(&mut slave, 3);
    assert!(!fifo.reset);
    assert_eq!(fifo.record.unwrap().seq, 3);
    assert_eq!(slave.waiting(), 2);
}

#[test]
fn clear_reset_is_idempotent() {
    assert_eq!(Command::ClearReset.frame(ADDRESS), CLEAR_RESET);
    let mut slave = running_slave::<8>(4);
    for _ in 0..3 {
        assert_eq!(slave.on_write(&CLEAR_RESET), Ok(WriteEvent::None));
    }
    assert_eq!(slave.status().flags, 0);
    assert_eq!(slave.waiting(), 4);
}

#[test]
fn fifo_ack_span_rule() {
    // The FIFO holds 0..=9: an ack drops `ack − oldest` records if that is in 1..=len.
    let slave = running_slave::<16>(10);
    let cases: [(u32, Option<u32>, usize); 8] = [
        (0, Some(0), 10),         // the oldest is wanted: nothing dropped
        (1, Some(1), 9),          // one dropped
        (7, Some(7), 3),          // several dropped
        (9, Some(9), 1),          // all but the newest dropped
        (10, None, 0),            // ack = next_seq: everything dropped
        (11, Some(0), 10),        // beyond the span: nothing
        (u32::MAX, Some(0), 10),  // "before" the oldest (a stale ack): nothing
        (1_000_000, Some(0), 10), // foreign: nothing
    ];
    for (ack, expected_oldest, expected_waiting) in cases {
        let mut s = slave.clone();
        let fifo = poll_decoded(&mut s, ack);
        assert_eq!(fifo.record.map(|r| r.seq), expected_oldest, "ack {ack}");
        assert_eq!(s.waiting(), expected_waiting, "ack {ack}");
        assert_eq!(
            fifo.remaining as usize,
            expected_waiting.saturating_sub(1),
            "ack {ack}"
        );
    }
}

#[test]
fn acks_are_idempotent_and_never_go_back() {
    let mut slave = running_slave::<16>(10);
    let first = poll(&mut slave, 4);
    // The same request again (the reply was corrupted): same reply, nothing more dropped.
    assert_eq!(poll(&mut slave, 4), first);
    assert_eq!(slave.waiting(), 6);
    // An older ack (a delayed retry) cannot bring records back or drop any.
    assert_eq!(poll_decoded(&mut slave, 2).record.unwrap().seq, 4);
    assert_eq!(slave.waiting(), 6);
}

#[test]
fn reading_without_ack_does_not_drop() {
    let mut slave = running_slave::<8>(3);
    for _ in 0..3 {
        assert_eq!(oldest(&mut slave), Some(0));
    }
    assert_eq!(slave.waiting(), 3);
}

/// Reference model of the span rule of §6.1, including the wrap of sequence numbers.
fn span_drop(oldest: u32, len: u32, ack: u32) -> u32 {
    let d = ack.wrapping_sub(oldest);
    if (1..=len).contains(&d) {
        d
    } else {
        0
    }
}

#[test]
fn span_rule_across_the_wrap_of_sequence_numbers() {
    // `Registers` cannot be started near u32::MAX (see the report), so the wrap is checked on the
    // rule itself, and `tests/fuzz.rs` checks that `Registers` follows the rule.
    let oldest = u32::MAX - 2; // the FIFO holds MAX−2, MAX−1, MAX, 0, 1
    assert_eq!(span_drop(oldest, 5, u32::MAX - 2), 0);
    assert_eq!(span_drop(oldest, 5, u32::MAX), 2);
    assert_eq!(span_drop(oldest, 5, 0), 3);
    assert_eq!(span_drop(oldest, 5, 2), 5);
    assert_eq!(span_drop(oldest, 5, 3), 0);
    assert_eq!(span_drop(oldest, 5, u32::MAX - 3), 0);
    assert_eq!(span_drop(0, 0, 0), 0);
}

#[test]
fn pointer_write_then_read_gives_the_sealed_reply() {
    let mut slave = running_slave::<8>(3);
    let mut expected = [0u8; 64];

    let len = slave.identity().seal(ADDRESS, &mut expected);
    assert_eq!(read(&mut slave, Register::Identity), expected[..len]);
    assert_eq!(
        Identity::decode(ADDRESS, &read(&mut slave, Register::Identity)),
        Ok(*slave.identity())
    );

    let len = slave.config().seal(ADDRESS, &mut expected);
    assert_eq!(read(&mut slave, Register::Config), expected[..len]);

    let len = slave.status().seal(ADDRESS, &mut expected);
    assert_eq!(read(&mut slave, Register::Status), expected[..len]);
    assert_eq!(
        Status::decode(ADDRESS, &read(&mut slave, Register::Status)),
        Ok(slave.status())
    );

    let fifo = Fifo::decode(ADDRESS, &read(&mut slave, Register::Fifo)).unwrap();
    assert_eq!(fifo.record.unwrap().seq, 0);
    assert_eq!(fifo.remaining, 2);
    assert!(!fifo.reset);
}

#[test]
fn the_pointer_starts_at_identity() {
    let slave = new_slave::<32>();
    let mut out = [0u8; 26];
    assert_eq!(slave.on_read(&mut out), 26);
    assert_eq!(out, IDENTITY_REPLY);
}

#[test]
fn reading_past_the_reply_gives_ff() {
    let mut slave = running_slave::<8>(2);
    for register in [
        Register::Identity,
        Register::Config,
        Register::Status,
        Register::Fifo,
    ] {
        let exact = read(&mut slave, register);
        let mut long = [0u8; 64];
        assert_eq!(slave.on_read(&mut long), register.reply_len());
        assert_eq!(&long[..exact.len()], &exact[..]);
        assert!(long[exact.len()..].iter().all(|&b| b == 0xFF));
    }
    // Command has no reply: everything reads 0xFF.
    slave.on_write(&[Register::Command as u8]).unwrap();
    let mut out = [0u8; 8];
    assert_eq!(slave.on_read(&mut out), 0);
    assert_eq!(out, [0xFF; 8]);
}

#[test]
fn a_short_read_fails_at_the_master() {
    let mut slave = running_slave::<8>(2);
    slave.on_write(&[Register::Fifo as u8]).unwrap();
    let mut short = [0u8; 35];
    slave.on_read(&mut short);
    assert!(Fifo::decode(ADDRESS, &short).is_err());
}

#[test]
fn empty_fifo_reply() {
    let mut slave = running_slave::<8>(0);
    assert_eq!(poll(&mut slave, 0), FIFO_REPLY_EMPTY);
}

#[test]
fn unknown_registers_and_read_only_registers() {
    let mut slave = running_slave::<8>(2);
    assert_eq!(slave.on_write(&[]), Err(WriteError::Empty));

    // An unknown register leaves the pointer where it was: the reply is Status's, and a master
    // that asked for register 0x60 sees a CRC failure, never data.
    read(&mut slave, Register::Status);
    assert_eq!(slave.on_write(&[0x60]), Err(WriteError::Register(0x60)));
    let mut out = [0u8; 22];
    slave.on_read(&mut out);
    assert_eq!(Status::decode(ADDRESS, &out), Ok(slave.status()));
    assert!(pmon_meter::crc::open(ADDRESS, 0x60, &out).is_err());

    // Data written to a read-only register is refused; the pointer moves there.
    for register in [Register::Identity, Register::Status] {
        let mut frame = [register as u8, 1, 2, 3];
        pmon_meter::crc::seal(ADDRESS, register as u8, &mut frame[1..], 1);
        assert_eq!(
            slave.on_write(&frame),
            Err(WriteError::Register(register as u8))
        );
        let mut out = [0u8; 64];
        assert_eq!(slave.on_read(&mut out), register.reply_len());
    }
    assert_eq!(slave.status().crc_errors, 0);
}

#[test]
fn every_single_bit_error_in_a_config_write_is_rejected() {
    let before = running_slave::<8>(0);
    for byte in 0..CONFIG_WRITE.len() {
        for bit in 0..8 {
            let mut slave = before.clone();
            let mut frame = CONFIG_WRITE;
            frame[byte] ^= 1 << bit;
            let result = slave.on_write(&frame);
            assert!(result.is_err(), "byte {byte} bit {bit}: {result:?}");
            assert_eq!(slave.config(), &Config::default(), "byte {byte} bit {bit}");
            assert_eq!(slave.status().flags & flag::CONFIG_UNSAVED, 0);
            let crc_error = matches!(result, Err(WriteError::Decode(DecodeError::Crc { .. })));
            // With the register byte intact, the CRC catches it; a flip in the register byte sends
            // the write to another register, where it is refused for its register or length.
            assert_eq!(crc_error, byte != 0, "byte {byte} bit {bit}: {result:?}");
            let counted = matches!(
                result,
                Err(WriteError::Decode(
                    DecodeError::Crc { .. } | DecodeError::Length { .. }
                ))
            );
            assert_eq!(
                slave.status().crc_errors,
                u16::from(counted),
                "byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn corrupted_fifo_requests_and_commands_change_nothing_but_the_counter() {
    let before = running_slave::<8>(5);
    let mut errors = 0;
    for frame in [Fifo::request(ADDRESS, 3).to_vec(), CLEAR_RESET.to_vec()] {
        for byte in 1..frame.len() {
            for bit in 0..8 {
                let mut slave = before.clone();
                let mut corrupted = frame.clone();
                corrupted[byte] ^= 1 << bit;
                assert!(matches!(
                    slave.on_write(&corrupted),
                    Err(WriteError::Decode(DecodeError::Crc { .. }))
                ));
                assert_eq!(slave.status().crc_errors, 1);
                assert_eq!(slave.waiting(), 5);
                errors += 1;
            }
        }
    }
    assert_eq!(errors, (6 + 3) * 8);
}

#[test]
fn crc_errors_accumulate_and_other_refusals_are_not_counted() {
    let mut slave = running_slave::<8>(0);
    let mut bad = CONFIG_WRITE;
    bad[5] ^= 0x80;
    for _ in 0..3 {
        assert!(slave.on_write(&bad).is_err());
    }
    // An unknown command with a correct CRC is refused for its value, not counted.
    let mut unknown = [0x40, 0x03, 0, 0];
    pmon_meter::crc::seal(ADDRESS, 0x40, &mut unknown[1..], 1);
    assert_eq!(
        slave.on_write(&unknown),
        Err(WriteError::Decode(DecodeError::Field("command")))
    );
    // A write of the wrong length is a damaged transfer too, and counted.
    assert!(matches!(
        slave.on_write(&CONFIG_WRITE[..18]),
        Err(WriteError::Decode(DecodeError::Length { .. }))
    ));
    assert_eq!(slave.status().crc_errors, 4);
    assert_eq!(slave.config(), &Config::default());
}

#[test]
fn invalid_config_values_are_rejected() {
    let valid = Config::default();
    let invalid: [(Config, &str); 11] = [
        (
            Config {
                nominal_frequency: 0,
                ..valid
            },
            "nominal_frequency",
        ),
        (
            Config {
                nominal_frequency: 49,
                ..valid
            },
            "nominal_frequency",
        ),
        (
            Config {
                nominal_frequency: 51,
                ..valid
            },
            "nominal_frequency",
        ),
        (
            Config {
                block_cycles: 0,
                ..valid
            },
            "block_cycles",
        ),
        (
            Config {
                block_cycles: 61,
                ..valid
            },
            "block_cycles",
        ),
        (
            Config {
                voltage_gain_ppm: 0,
                ..valid
            },
            "gain",
        ),
        (
            Config {
                current_gain_ppm: 0,
                ..valid
            },
            "gain",
        ),
        (
            Config {
                voltage_gain_ppm: 4_000_001,
                ..valid
            },
            "gain",
        ),
        (
            Config {
                current_gain_ppm: u32::MAX,
                ..valid
            },
            "gain",
        ),
        (
            Config {
                phase_correction: 2001,
                ..valid
            },
            "phase_correction",
        ),
        (
            Config {
                phase_correction: i16::MIN,
                ..valid
            },
            "phase_correction",
        ),
    ];
    for (config, field) in invalid {
        let mut slave = running_slave::<4>(0);
        assert_eq!(
            slave.on_write(&config.write_frame(ADDRESS)),
            Err(WriteError::Decode(DecodeError::Field(field))),
            "{config:?}"
        );
        assert_eq!(slave.config(), &valid);
        assert_eq!(slave.status().crc_errors, 0);
        assert_eq!(slave.status().flags & flag::CONFIG_UNSAVED, 0);
        assert_eq!(config.validate(), Err(DecodeError::Field(field)));
    }
}

#[test]
fn config_values_at_the_limits_are_accepted() {
    let valid = Config::default();
    let limits = [
        Config::for_frequency(60),
        Config {
            block_cycles: 1,
            ..valid
        },
        Config {
            block_cycles: 60,
            ..valid
        },
        Config {
            voltage_gain_ppm: 1,
            current_gain_ppm: 1,
            ..valid
        },
        Config {
            voltage_gain_ppm: 4_000_000,
            current_gain_ppm: 4_000_000,
            ..valid
        },
        Config {
            phase_correction: 2000,
            ..valid
        },
        Config {
            phase_correction: -2000,
            ..valid
        },
    ];
    assert_eq!(Config::for_frequency(60).block_cycles, 12);
    for config in limits {
        let mut slave = running_slave::<4>(0);
        assert_eq!(
            slave.on_write(&config.write_frame(ADDRESS)),
            Ok(WriteEvent::Configured(config))
        );
        assert_eq!(slave.config(), &config);
        assert_eq!(slave.status().flags, flag::CONFIG_UNSAVED);
    }
}

#[test]
fn fifo_overflow_drops_the_oldest_counts_and_flags() {
    let mut slave = running_slave::<4>(6);
    assert_eq!(slave.waiting(), 4);
    assert_eq!(oldest(&mut slave), Some(2));
    let status = slave.status();
    assert_eq!(status.fifo_overflows, 2);
    assert_eq!(status.flags, flag::FIFO_OVERFLOW);
    assert_eq!(status.next_seq, 6);
    assert_eq!(status.records_waiting, 4);
    let fifo = poll_decoded(&mut slave, 0); // stale ack: the master still wants 0
    assert_eq!((fifo.record.unwrap().seq, fifo.remaining), (2, 3));

    // The records left are consecutive: an ack of next_seq empties the FIFO.
    assert_eq!(poll_decoded(&mut slave, 6).record, None);

    // ClearReset clears the flag (§4.5); the counter keeps its value.
    slave.on_write(&CLEAR_RESET).unwrap();
    assert_eq!(slave.status().flags, 0);
    assert_eq!(slave.status().fifo_overflows, 2);
}

#[test]
fn pushed_records_carry_consecutive_sequence_numbers() {
    let mut slave = running_slave::<8>(0);
    for seq in 0..20u32 {
        let record = slave.push_block(seq * 360, &heat_pump(), seq, 0);
        assert_eq!(record.seq, seq);
        assert_eq!(
            record,
            Record::from_quantities(seq, seq * 360, &heat_pump(), SCALES, seq, 0)
        );
    }
    // The last 8 are waiting; draining them one ack at a time yields 12..=19 in order.
    let mut seen = Vec::new();
    let mut ack = 0;
    while let Some(record) = poll_decoded(&mut slave, ack).record {
        if seen.last() != Some(&record.seq) {
            seen.push(record.seq);
        }
        ack = record.seq + 1;
    }
    assert_eq!(seen, (12..20).collect::<Vec<_>>());
}

#[test]
fn measurement_flags_and_counters() {
    let mut slave = running_slave::<4>(0);
    slave.set_flag(flag::NO_ZERO_CROSSING, true);
    slave.set_flag(flag::ADC_CLIPPING, true);
    assert_eq!(
        slave.status().flags,
        flag::NO_ZERO_CROSSING | flag::ADC_CLIPPING
    );
    slave.set_flag(flag::NO_ZERO_CROSSING, false);
    assert_eq!(slave.status().flags, flag::ADC_CLIPPING);
    for _ in 0..3 {
        slave.count_block_error();
    }
    slave.set_uptime(42);
    let status = Status::decode(ADDRESS, &read(&mut slave, Register::Status)).unwrap();
    assert_eq!(status.block_errors, 3);
    assert_eq!(status.uptime_s, 42);
    assert_eq!(status.flags, flag::ADC_CLIPPING);
}

#[test]
fn fifo_sizes_at_the_edges() {
    // No FIFO at all: blocks are numbered but nothing is kept.
    let mut none = running_slave::<0>(3);
    assert_eq!(none.status().next_seq, 3);
    assert_eq!(poll(&mut none, 3), FIFO_REPLY_EMPTY);
    assert_eq!(none.identity().fifo_capacity, 0);

    // More than 255 records: the one-byte counts saturate.
    let mut big = running_slave::<300>(300);
    assert_eq!(big.identity().fifo_capacity, 255);
    assert_eq!(big.waiting(), 300);
    assert_eq!(big.status().records_waiting, 255);
    assert_eq!(poll_decoded(&mut big, 0).remaining, 255);
    assert_eq!(poll_decoded(&mut big, 100).remaining, 199);
}

#[test]
fn the_identity_reports_the_real_fifo_capacity() {
    let slave = new_slave::<7>();
    assert_eq!(slave.identity().fifo_capacity, 7);
    assert_eq!(slave.address(), ADDRESS);
    assert_eq!(slave.status().flags, flag::RESET);
}

// Slave addressing (register 0x50, §4.7).

fn addressable_slave() -> Registers<8> {
    let identity = Identity {
        capabilities: identity().capabilities | capability::ADDRESSABLE,
        ..identity()
    };
    let mut slave = Registers::new(ADDRESS, identity, Config::default());
    assert_eq!(slave.on_write(&CLEAR_RESET), Ok(WriteEvent::None));
    push_until(&mut slave, 3);
    slave
}

#[test]
fn an_address_write_moves_the_slave_and_keeps_everything_else() {
    let mut slave = addressable_slave();
    let before = slave.status();
    assert_eq!(
        slave.on_write(&ADDRESS_WRITE_0X11),
        Ok(WriteEvent::Readdressed {
            from: 0x10,
            to: 0x11
        })
    );
    assert_eq!(slave.address(), 0x11);
    // Reads of the Address register return an idle bus.
    let mut out = [0u8; 4];
    assert_eq!(slave.on_read(&mut out), 0);
    assert_eq!(out, [0xFF; 4]);
    // Every reply is now sealed with the new address; identity, FIFO and counters are unchanged.
    slave.on_write(&[Register::Identity as u8]).unwrap();
    let mut reply = [0u8; 26];
    slave.on_read(&mut reply);
    let moved = Identity::decode(0x11, &reply).unwrap();
    assert_eq!(moved.serial, identity().serial);
    assert!(Identity::decode(0x10, &reply).is_err());
    assert_eq!(slave.status(), before);
    slave.on_write(&Fifo::request(0x11, 0)).unwrap();
    let mut fifo = [0u8; 36];
    slave.on_read(&mut fifo);
    assert_eq!(
        Fifo::decode(0x11, &fifo).unwrap().record.map(|r| r.seq),
        Some(0)
    );
    // Writes must now carry the new address in their CRC.
    assert!(matches!(
        slave.on_write(&Command::ClearReset.frame(0x10)),
        Err(WriteError::Decode(DecodeError::Crc { .. }))
    ));
    assert_eq!(
        slave.on_write(&Command::ClearReset.frame(0x11)),
        Ok(WriteEvent::None)
    );
    // And it can move back, with a frame sealed with its new address.
    assert_eq!(
        slave.on_write(&NewAddress(0x10).frame(0x11)),
        Ok(WriteEvent::Readdressed {
            from: 0x11,
            to: 0x10
        })
    );
    assert_eq!(slave.address(), 0x10);
}

#[test]
fn rejected_address_writes_change_nothing() {
    let mut slave = addressable_slave();
    // A bit error anywhere in the frame: refused, counted as a CRC error.
    for bit in 8..40 {
        let mut frame = ADDRESS_WRITE_0X11;
        frame[bit / 8] ^= 1 << (bit % 8);
        assert!(slave.on_write(&frame).is_err(), "bit {bit}");
        assert_eq!(slave.address(), ADDRESS, "bit {bit}");
    }
    assert_eq!(slave.status().crc_errors, 32);
    // The frame meant for another slave fails the CRC here.
    let result = slave.on_write(&NewAddress(0x11).frame(0x12));
    assert!(matches!(
        result,
        Err(WriteError::Decode(DecodeError::Crc { .. }))
    ));
    // Reserved addresses and a wrong complement: refused, not CRC errors.
    let crc_errors = slave.status().crc_errors;
    for bad in [0x00u8, 0x07, 0x78, 0x7F, 0x80, 0xFF] {
        assert_eq!(
            slave.on_write(&NewAddress(bad).frame(ADDRESS)),
            Err(WriteError::Decode(DecodeError::Field("address"))),
            "{bad:#04x}"
        );
    }
    let mut wrong_complement = [0x50, 0x11, 0xEF, 0, 0];
    pmon_meter::crc::seal(ADDRESS, 0x50, &mut wrong_complement[1..], 2);
    assert_eq!(
        slave.on_write(&wrong_complement),
        Err(WriteError::Decode(DecodeError::Field("address complement")))
    );
    assert_eq!(slave.status().crc_errors, crc_errors);
    assert_eq!(slave.address(), ADDRESS);
}

#[test]
fn a_slave_without_the_capability_refuses_an_address_write() {
    let mut slave = running_slave::<8>(1);
    assert_eq!(
        slave.on_write(&ADDRESS_WRITE_0X11),
        Err(WriteError::Register(0x50))
    );
    assert_eq!(slave.address(), ADDRESS);
    assert_eq!(slave.status().crc_errors, 0);
}

#[test]
fn writing_the_current_address_again_is_harmless() {
    let mut slave = addressable_slave();
    assert_eq!(
        slave.on_write(&NewAddress(ADDRESS).frame(ADDRESS)),
        Ok(WriteEvent::Readdressed {
            from: ADDRESS,
            to: ADDRESS
        })
    );
    assert_eq!(slave.address(), ADDRESS);
}
