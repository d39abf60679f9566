//! The bytes of `docs/protocol/i2c.md`, pinned.
//!
//! Every array below is copied from the worked example (§10), the sequence diagrams (§6.4) or
//! the test vectors (§11) of the specification. Each test checks that the code produces exactly
//! these bytes and decodes them to the documented values, and `document_contains_every_frame`
//! checks that the document still prints them, so the two cannot drift apart.

mod frames;

use frames::*;
use pmon_meter::crc;
use pmon_meter::register::{capability, flag, Command};
use pmon_meter::{
    Config, DecodeError, Fifo, Identity, NewAddress, Record, Register, Scales, Status,
};

// §10.5, §6.4, §11
const FIFO_REQUEST_0: [u8; 7] = [0x30, 0x00, 0x00, 0x00, 0x00, 0x7A, 0x18];

// §10.7: slave 0x10, now with ADDRESSABLE (capabilities 0x001F), moves to 0x11.
const IDENTITY_ADDRESSABLE_0X10: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x1F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x25, 0x3C,
];
const IDENTITY_ADDRESSABLE_0X11: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x1F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x44, 0x90,
];
// §11: and back, and to 0x42.
const ADDRESS_WRITE_BACK: [u8; 5] = [0x50, 0x10, 0xEF, 0xAF, 0xB8];
const ADDRESS_WRITE_0X42: [u8; 5] = [0x50, 0x42, 0xBD, 0x71, 0xDC];

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

fn status() -> Status {
    Status {
        flags: flag::RESET | flag::FIFO_OVERFLOW,
        records_waiting: 32,
        fifo_overflows: 1234,
        crc_errors: 0,
        block_errors: 1,
        uptime_s: 253,
        next_seq: 1266,
    }
}

/// The record of `record.rs`'s `example()`: 230.00 V, 12.5 A lagging 30°, 50 Hz.
fn record() -> Record {
    Record {
        seq: 1234,
        sample_index: 444_240,
        voltage: 23_000,
        current: 12_500,
        frequency: 50_000,
        real_power: 4_980,
        reactive_power: 2_875,
        apparent_power: 5_750,
        power_factor: 8_660,
        crest_factor: 1_414,
        phase_angle: 3_000,
        energy_import: 123_456,
        energy_export: 7,
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

fn close(actual: f32, expected: f32) -> bool {
    (actual - expected).abs() <= 1e-3 * expected.abs().max(1.0)
}

#[test]
fn crc_check_value_through_the_public_api() {
    // Address and register are simply the first two bytes of the CRC's input.
    assert_eq!(crc::checksum(b'1', b'2', b"3456789"), 0x29B1);
}

/// avr-libc's `_crc_xmodem_update`, transcribed from its documentation.
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

#[test]
fn every_documented_crc_is_what_avr_libc_computes() {
    let frames: [(u8, &[u8]); 14] = [
        (0x00, &IDENTITY_REPLY),
        (0x10, &CONFIG_REPLY),
        (0x20, &STATUS_REPLY),
        (0x30, &FIFO_REPLY),
        (0x30, &FIFO_REPLY_RESET),
        (0x30, &FIFO_REPLY_EMPTY),
        (0x40, &CLEAR_RESET[1..]),
        (0x40, &SAVE_CONFIG[1..]),
        (0x40, &REBOOT[1..]),
        (0x30, &FIFO_REQUEST_1234[1..]),
        (0x30, &FIFO_REQUEST_1300[1..]),
        (0x10, &CONFIG_WRITE[1..]),
        (0x50, &ADDRESS_WRITE_0X11[1..]),
        (0x50, &ADDRESS_WRITE_0X42[1..]),
    ];
    for (register, frame) in frames {
        let (payload, tail) = frame.split_at(frame.len() - 2);
        let mut c = 0xFFFF;
        for byte in [ADDRESS, register].iter().chain(payload) {
            c = crc_xmodem_update(c, *byte);
        }
        assert_eq!(
            c.to_le_bytes(),
            [tail[0], tail[1]],
            "register {register:#04x}"
        );
        assert_eq!(c, crc::checksum(ADDRESS, register, payload));
    }
}

#[test]
fn register_numbers_and_reply_lengths() {
    let table = [
        (Register::Identity, 0x00, 26),
        (Register::Config, 0x10, 18),
        (Register::Status, 0x20, 22),
        (Register::Fifo, 0x30, 36),
        (Register::Command, 0x40, 0),
        (Register::Address, 0x50, 0),
    ];
    for (register, number, reply_len) in table {
        assert_eq!(register as u8, number);
        assert_eq!(Register::from_u8(number), Some(register));
        assert_eq!(register.reply_len(), reply_len);
    }
    for unknown in (0..=255u8).filter(|n| ![0x00, 0x10, 0x20, 0x30, 0x40, 0x50].contains(n)) {
        assert_eq!(Register::from_u8(unknown), None);
    }
    assert_eq!(Fifo::REQUEST_LEN, 7);
    assert_eq!(Config::LEN + 3, 19);
    assert_eq!(NewAddress::WRITE_LEN, 5);
    assert_eq!(capability::ADDRESSABLE, 0x0010);
}

#[test]
fn address_write_frames() {
    assert_eq!(NewAddress(0x11).frame(ADDRESS), ADDRESS_WRITE_0X11);
    assert_eq!(NewAddress(0x10).frame(0x11), ADDRESS_WRITE_BACK);
    assert_eq!(NewAddress(0x42).frame(ADDRESS), ADDRESS_WRITE_0X42);
    assert_eq!(
        NewAddress::decode(ADDRESS, &ADDRESS_WRITE_0X11[1..]),
        Ok(NewAddress(0x11))
    );
    assert_eq!(
        NewAddress::decode(0x11, &ADDRESS_WRITE_BACK[1..]),
        Ok(NewAddress(0x10))
    );
    // The CRC is the old address's: the same bytes at another slave fail it.
    assert!(matches!(
        NewAddress::decode(0x11, &ADDRESS_WRITE_0X11[1..]),
        Err(DecodeError::Crc { .. })
    ));
}

#[test]
fn address_writes_check_complement_range_and_length() {
    let sealed = |new: u8, complement: u8| {
        let mut frame = [new, complement, 0, 0];
        crc::seal(ADDRESS, 0x50, &mut frame, 2);
        NewAddress::decode(ADDRESS, &frame)
    };
    assert_eq!(
        sealed(0x11, 0xEF),
        Err(DecodeError::Field("address complement"))
    );
    for reserved in (0x00..0x08u8).chain(0x78..=0xFF) {
        assert_eq!(
            sealed(reserved, !reserved),
            Err(DecodeError::Field("address")),
            "{reserved:#04x}"
        );
        assert!(!NewAddress::is_valid(reserved));
    }
    for valid in 0x08..=0x77u8 {
        assert_eq!(sealed(valid, !valid), Ok(NewAddress(valid)));
    }
    assert!(matches!(
        NewAddress::decode(ADDRESS, &ADDRESS_WRITE_0X11[1..4]),
        Err(DecodeError::Length {
            expected: 4,
            actual: 3
        })
    ));
}

#[test]
fn identity_of_an_addressable_slave_before_and_after_the_move() {
    let addressable = Identity {
        capabilities: identity().capabilities | capability::ADDRESSABLE,
        ..identity()
    };
    let mut out = [0u8; 26];
    addressable.seal(0x10, &mut out);
    assert_eq!(out, IDENTITY_ADDRESSABLE_0X10);
    addressable.seal(0x11, &mut out);
    assert_eq!(out, IDENTITY_ADDRESSABLE_0X11);
    // Same serial at the new address: the master's circuit id does not change.
    let moved = Identity::decode(0x11, &IDENTITY_ADDRESSABLE_0X11).unwrap();
    assert_eq!(moved.serial, 0x00C0_FFEE);
    assert_eq!(moved, addressable);
}

#[test]
fn identity_reply() {
    let mut out = [0u8; 26];
    assert_eq!(identity().seal(ADDRESS, &mut out), 26);
    assert_eq!(out, IDENTITY_REPLY);
    assert_eq!(&identity().encode()[..], &IDENTITY_REPLY[..24]);
    assert_eq!(Identity::decode(ADDRESS, &IDENTITY_REPLY), Ok(identity()));
}

#[test]
fn config_reply() {
    let mut out = [0u8; 18];
    assert_eq!(Config::default().seal(ADDRESS, &mut out), 18);
    assert_eq!(out, CONFIG_REPLY);
    assert_eq!(Config::for_frequency(50), Config::default());
    let config = Config::decode(ADDRESS, &CONFIG_REPLY).unwrap();
    assert_eq!(config.nominal_frequency, 50);
    assert_eq!(config.block_cycles, 10);
    assert_eq!(config.voltage_gain_ppm, 1_000_000);
    assert_eq!(config.current_gain_ppm, 1_000_000);
    assert_eq!(config.phase_correction, 0);
}

#[test]
fn status_reply() {
    let mut out = [0u8; 22];
    assert_eq!(status().seal(ADDRESS, &mut out), 22);
    assert_eq!(out, STATUS_REPLY);
    let decoded = Status::decode(ADDRESS, &STATUS_REPLY).unwrap();
    assert_eq!(decoded, status());
    // §4.3: the oldest record is next_seq − records_waiting.
    assert_eq!(
        decoded
            .next_seq
            .wrapping_sub(decoded.records_waiting as u32),
        1234
    );
}

#[test]
fn command_frames() {
    assert_eq!(Command::ClearReset.frame(ADDRESS), CLEAR_RESET);
    assert_eq!(Command::SaveConfig.frame(ADDRESS), SAVE_CONFIG);
    assert_eq!(Command::Reboot.frame(ADDRESS), REBOOT);
    assert_eq!(
        Command::decode(ADDRESS, &CLEAR_RESET[1..]),
        Ok(Command::ClearReset)
    );
    assert_eq!(
        Command::decode(ADDRESS, &SAVE_CONFIG[1..]),
        Ok(Command::SaveConfig)
    );
    assert_eq!(Command::decode(ADDRESS, &REBOOT[1..]), Ok(Command::Reboot));
}

#[test]
fn fifo_requests() {
    let table = [
        (0, FIFO_REQUEST_0),
        (1, FIFO_REQUEST_1),
        (1234, FIFO_REQUEST_1234),
        (1235, FIFO_REQUEST_1235),
        (1236, FIFO_REQUEST_1236),
        (1300, FIFO_REQUEST_1300),
    ];
    for (ack, bytes) in table {
        assert_eq!(Fifo::request(ADDRESS, ack), bytes, "ack {ack}");
        assert_eq!(Fifo::decode_request(ADDRESS, &bytes[1..]), Ok(ack));
    }
}

#[test]
fn fifo_reply_with_the_example_record() {
    let fifo = Fifo {
        record: Some(record()),
        remaining: 31,
        reset: false,
    };
    let mut out = [0u8; 36];
    assert_eq!(fifo.seal(ADDRESS, &mut out), 36);
    assert_eq!(out, FIFO_REPLY);
    assert_eq!(&FIFO_REPLY[2..34], &record().encode()[..]);
    assert_eq!(Fifo::decode(ADDRESS, &FIFO_REPLY), Ok(fifo));
}

#[test]
fn fifo_reply_decodes_to_the_documented_physical_values() {
    let record = Fifo::decode(ADDRESS, &FIFO_REPLY).unwrap().record.unwrap();
    let q = record.quantities(SCALES);
    assert_eq!(record.seq, 1234);
    assert!(close(record.sample_index as f32 / 1800.0, 246.8));
    assert!(close(q.voltage, 230.00));
    assert!(close(q.current, 12.5));
    assert!(close(q.frequency, 50.000));
    assert!(close(q.real_power, 2490.0));
    assert!(close(q.reactive_power, 1437.5));
    assert!(close(q.apparent_power, 2875.0));
    assert!(close(q.power_factor, 0.8660));
    assert!(close(q.crest_factor, 1.414));
    assert!(close(q.phase_angle, 30.00));
    assert!(close(record.energy_import as f32 * 0.1, 12_345.6));
    assert!(close(record.energy_export as f32 * 0.1, 0.7));
    // The heat pump of §10.5: S = V·I, P = S·cos 30°, Q = S·sin 30°, within one step of 0.5 W.
    let s = 230.0f32 * 12.5;
    assert!((q.real_power - s * 30f32.to_radians().cos()).abs() <= 0.5);
    assert!((q.reactive_power - s * 30f32.to_radians().sin()).abs() <= 0.5);
}

#[test]
fn fifo_reply_with_reset_bit_and_empty_reply() {
    let with_reset = Fifo {
        record: Some(record()),
        remaining: 31,
        reset: true,
    };
    let mut out = [0u8; 36];
    with_reset.seal(ADDRESS, &mut out);
    assert_eq!(out, FIFO_REPLY_RESET);
    assert_eq!(Fifo::decode(ADDRESS, &FIFO_REPLY_RESET), Ok(with_reset));

    let empty = Fifo {
        record: None,
        remaining: 0,
        reset: false,
    };
    empty.seal(ADDRESS, &mut out);
    assert_eq!(out, FIFO_REPLY_EMPTY);
    assert_eq!(Fifo::decode(ADDRESS, &FIFO_REPLY_EMPTY), Ok(empty));
}

#[test]
fn fifo_flags_outside_present_and_reset_are_rejected() {
    for bit in 2..8 {
        let mut payload = [0u8; 36];
        payload[..34].copy_from_slice(&FIFO_REPLY[..34]);
        payload[0] |= 1 << bit;
        crc::seal(ADDRESS, 0x30, &mut payload, 34);
        assert_eq!(
            Fifo::decode(ADDRESS, &payload),
            Err(DecodeError::Field("fifo flags"))
        );
    }
}

#[test]
fn config_write_frame() {
    assert_eq!(calibration().write_frame(ADDRESS), CONFIG_WRITE);
    assert_eq!(
        Config::decode(ADDRESS, &CONFIG_WRITE[1..]),
        Ok(calibration())
    );
    // §4.2: the bytes after the register byte are the read reply of the same configuration.
    let mut reply = [0u8; 18];
    calibration().seal(ADDRESS, &mut reply);
    assert_eq!(reply, CONFIG_WRITE[1..]);
}

#[test]
fn replies_check_the_address_and_the_register() {
    // The same bytes from another slave, or for another register, fail the CRC.
    assert!(matches!(
        Identity::decode(0x11, &IDENTITY_REPLY),
        Err(DecodeError::Crc { .. })
    ));
    assert!(matches!(
        Status::decode(0x11, &STATUS_REPLY),
        Err(DecodeError::Crc { .. })
    ));
    assert!(matches!(
        Fifo::decode(0x11, &FIFO_REPLY),
        Err(DecodeError::Crc { .. })
    ));
    assert!(matches!(
        Config::decode(0x11, &CONFIG_WRITE[1..]),
        Err(DecodeError::Crc { .. })
    ));
    assert!(crc::open(ADDRESS, 0x20, &CONFIG_REPLY).is_err());
    assert!(crc::open(ADDRESS, 0x50, &FIFO_REPLY).is_err());
}

#[test]
fn short_or_long_replies_are_length_errors() {
    assert_eq!(
        Fifo::decode(ADDRESS, &FIFO_REPLY[..35]),
        Err(DecodeError::Length {
            expected: 36,
            actual: 35
        })
    );
    let mut long = [0xFFu8; 37];
    long[..36].copy_from_slice(&FIFO_REPLY);
    assert_eq!(
        Fifo::decode(ADDRESS, &long),
        Err(DecodeError::Length {
            expected: 36,
            actual: 37
        })
    );
    assert!(matches!(
        Identity::decode(ADDRESS, &[]),
        Err(DecodeError::Length { .. })
    ));
}

#[test]
fn all_zero_and_all_ff_replies_never_pass_the_crc() {
    // §11: a stuck bus (SDA held low, or released) is never read as data.
    for address in 0x08..=0x77u8 {
        for register in [
            Register::Identity,
            Register::Config,
            Register::Status,
            Register::Fifo,
        ] {
            let len = register.reply_len();
            for fill in [0x00u8, 0xFF] {
                let frame = [fill; 64];
                assert!(
                    crc::open(address, register as u8, &frame[..len]).is_err(),
                    "address {address:#04x} register {:#04x} fill {fill:#04x}",
                    register as u8
                );
            }
        }
    }
}

#[test]
fn identity_checks_magic_and_fields() {
    let reseal = |edit: &dyn Fn(&mut [u8; 26])| {
        let mut frame = IDENTITY_REPLY;
        edit(&mut frame);
        crc::seal(ADDRESS, 0x00, &mut frame, 24);
        Identity::decode(ADDRESS, &frame)
    };
    assert_eq!(reseal(&|f| f[0] = b'X'), Err(DecodeError::Magic));
    assert_eq!(
        reseal(&|f| f[18] = 33),
        Err(DecodeError::Field("record_len"))
    );
    assert_eq!(
        reseal(&|f| f[14..16].copy_from_slice(&[0, 0])),
        Err(DecodeError::Field("scales"))
    );
    assert_eq!(
        reseal(&|f| f[16..18].copy_from_slice(&[0, 0])),
        Err(DecodeError::Field("scales"))
    );
    assert_eq!(
        reseal(&|f| f[12..14].copy_from_slice(&[0, 0])),
        Err(DecodeError::Field("sample_rate"))
    );
    // An unknown version is refused first, with its own message (§9), before any field of a
    // layout this master may not know.
    assert_eq!(reseal(&|f| f[2] = 2), Err(DecodeError::Version(2)));
    assert_eq!(
        reseal(&|f| {
            f[2] = 2;
            f[18] = 48;
        }),
        Err(DecodeError::Version(2))
    );
}

/// Collapses whitespace so that a frame wrapped over several lines of the document still matches.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn document_contains_every_frame() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol/i2c.md");
    let doc = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the specification at {path}: {e}"));
    let doc = normalise(&doc);
    let frames: [(&str, &[u8]); 21] = [
        ("Identity reply", &IDENTITY_REPLY),
        ("Config reply", &CONFIG_REPLY),
        ("Status reply", &STATUS_REPLY),
        ("ClearReset", &CLEAR_RESET),
        ("SaveConfig", &SAVE_CONFIG),
        ("Reboot", &REBOOT),
        ("FIFO request 0", &FIFO_REQUEST_0),
        ("FIFO request 1", &FIFO_REQUEST_1),
        ("FIFO request 1234", &FIFO_REQUEST_1234),
        ("FIFO request 1235", &FIFO_REQUEST_1235),
        ("FIFO request 1236", &FIFO_REQUEST_1236),
        ("FIFO request 1300", &FIFO_REQUEST_1300),
        ("FIFO reply", &FIFO_REPLY),
        ("FIFO reply with RESET", &FIFO_REPLY_RESET),
        ("empty FIFO reply", &FIFO_REPLY_EMPTY),
        ("Config write", &CONFIG_WRITE),
        (
            "Identity of an addressable slave",
            &IDENTITY_ADDRESSABLE_0X10,
        ),
        ("Address write to 0x11", &ADDRESS_WRITE_0X11),
        ("Identity at the new address", &IDENTITY_ADDRESSABLE_0X11),
        ("Address write back to 0x10", &ADDRESS_WRITE_BACK),
        ("Address write to 0x42", &ADDRESS_WRITE_0X42),
    ];
    for (name, bytes) in frames {
        assert!(
            doc.contains(&hex(bytes)),
            "docs/protocol/i2c.md no longer prints the {name}: {}",
            hex(bytes)
        );
    }
    for crc in [
        "0xFAD2", "0x3C92", "0x2282", "0x9212", "0x81D1", "0x188C", "0xFEB2", "0x29B1", "0xED0B",
        "0x3C25", "0x9044",
    ] {
        assert!(doc.contains(crc), "docs/protocol/i2c.md lost the CRC {crc}");
    }
}
