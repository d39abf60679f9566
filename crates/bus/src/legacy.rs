//! The original prototype's slaves, read as they are (no reflashing).
//!
//! Every second the prototype master wrote `00 01 90` (SMBus command 0, then 400 as a
//! big-endian u16) and then did two "SMBus block reads" with command 0 of 29 and 25 bytes
//! (pmon reads 29 and 29: see [`SECOND_LEN`]).
//! Each read returns ASCII padded with `FF`; joined, the two halves read
//! `[f,sps,Vrms×100,Irms_mA,CCF×100,theta×100,VA,W,VAR,PF×100]`, and they sometimes arrive
//! in the wrong order (the half that ends in `]` first). The format is specified in
//! `docs/protocol/legacy.md`.
//!
//! **What a read is on the wire.** Linux's i2c-dev carries these reads as
//! `I2C_SMBUS_I2C_BLOCK_DATA` (what `i2c_smbus_read_i2c_block_data()` and Python's
//! `read_i2c_block_data(addr, 0, 29)` use): `S SLA+W 00 Sr SLA+R` and then exactly the number
//! of bytes asked for, no count byte on the wire. In the ioctl's buffer the kernel puts
//! that length in `block[0]` and the data after it, which is where "the first byte is the
//! count" comes from. A true SMBus Block Read (`I2C_SMBUS_BLOCK_DATA`) has the *slave*
//! send the count first and needs `I2C_M_RECV_LEN`, which the Raspberry Pi's controller
//! driver does not offer and embedded-hal cannot express. So pmon reads with
//! `I2c::write_read(addr, [0x00], buf[29])`, byte for byte the I2C block read, and the
//! parser also accepts a half that starts with a count byte (a byte below 0x20, which
//! never occurs in the ASCII), in case a board's firmware sends one.

use embedded_hal::i2c::I2c;

use crate::error::DriverError;
use crate::master::{Master, Persistence, FIRST_ADDRESS, LAST_ADDRESS};

/// What the prototype master wrote before reading: command 0, then 400 big-endian.
pub const START: [u8; 3] = [0x00, 0x01, 0x90];
/// The command byte of both reads.
pub const COMMAND: u8 = 0x00;
/// Length of the first read, as the prototype master read it.
pub const FIRST_LEN: usize = 29;
/// Length of the prototype master's second read.
pub const PROTOTYPE_SECOND_LEN: usize = 25;
/// Length of pmon's second read: 29, not the prototype's 25. The slave cannot tell (it
/// sends its half and then the bus reads `FF`), and when the halves come swapped the
/// 29-byte first half arrives in the second read whole instead of cut after 25 bytes.
pub const SECOND_LEN: usize = 29;
/// Fields in a reading.
pub const FIELDS: usize = 10;
/// Field names, in order, for messages.
pub const FIELD_NAMES: [&str; FIELDS] = [
    "f",
    "sps",
    "Vrms×100",
    "Irms_mA",
    "CCF×100",
    "theta×100",
    "VA",
    "W",
    "VAR",
    "PF×100",
];

/// One reading of a legacy slave, as integers in the prototype's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyReading {
    /// Mains frequency in mHz (the prototype's `f` in whatever scale it used; see
    /// [`frequency_mhz`]). 0 without a zero crossing.
    pub frequency_mhz: u32,
    /// ADC sample pairs per second.
    pub sps: u32,
    /// Voltage rms, 0.01 V.
    pub vrms_centi: u32,
    /// Current rms, mA.
    pub irms_ma: u32,
    /// Current crest factor, 0.01.
    pub ccf_centi: u32,
    /// Phase angle of the current behind the voltage, 0.01°; negative: leading.
    pub theta_centi: i32,
    /// Apparent power, VA.
    pub va: u32,
    /// Real power, W; negative: exported.
    pub w: i32,
    /// Reactive power, var; negative: leading.
    pub var: i32,
    /// Power factor, 0.01; negative with exported power.
    pub pf_centi: i32,
}

/// Why two halves are not a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// Both halves are only padding.
    #[error("no data: both halves are padding")]
    Empty,
    /// Neither half starts with `[`.
    #[error("neither half starts with '['")]
    NoStart,
    /// The joined text does not end with `]`.
    #[error("the text does not end with ']'")]
    NoEnd,
    /// A byte that is not part of the format.
    #[error("unexpected byte {byte:#04x} at position {position}")]
    Byte {
        /// The byte.
        byte: u8,
        /// Where in the joined text.
        position: usize,
    },
    /// Not ten fields.
    #[error("{count} fields, expected {FIELDS}")]
    FieldCount {
        /// Fields found.
        count: usize,
    },
    /// A field that is not a decimal integer.
    #[error("field {name} is not an integer: {text:?}")]
    NotANumber {
        /// The field.
        name: &'static str,
        /// What it held.
        text: String,
    },
    /// A number outside what the field can mean.
    #[error("field {name} = {value} is out of range")]
    Range {
        /// The field.
        name: &'static str,
        /// The value.
        value: i64,
    },
}

/// One half without its padding: an optional leading count byte (below 0x20) limits it,
/// then trailing `FF`, `00` and white space go.
fn clean(half: &[u8]) -> &[u8] {
    let mut half = half;
    if let Some((&count, rest)) = half.split_first() {
        if (1..0x20).contains(&count) {
            half = &rest[..rest.len().min(usize::from(count))];
        }
    }
    let end = half
        .iter()
        .rposition(|&b| !matches!(b, 0xFF | 0x00 | b' ' | b'\r' | b'\n' | b'\t'))
        .map_or(0, |i| i + 1);
    &half[..end]
}

/// Joins two halves in whichever order they came: the one starting with `[` goes first.
pub fn join_halves(first: &[u8], second: &[u8]) -> Result<Vec<u8>, LegacyError> {
    let (a, b) = (clean(first), clean(second));
    let (head, tail) = match (a.first(), b.first()) {
        (None, None) => return Err(LegacyError::Empty),
        (Some(b'['), _) => (a, b),
        (_, Some(b'[')) => (b, a),
        _ => return Err(LegacyError::NoStart),
    };
    let mut text = Vec::with_capacity(head.len() + tail.len());
    text.extend_from_slice(head);
    text.extend_from_slice(tail);
    Ok(text)
}

/// Whether two halves look like a legacy slave's reply (ASCII digits, commas, signs,
/// brackets and padding, with at least one bracket), even if they do not make a whole
/// reading yet: used to recognise a legacy slave without writing to it.
pub fn looks_legacy(first: &[u8], second: &[u8]) -> bool {
    let (a, b) = (clean(first), clean(second));
    let allowed =
        |&byte: &u8| matches!(byte, b'0'..=b'9' | b',' | b'-' | b'+' | b' ' | b'[' | b']');
    let bracket = a.iter().chain(b).any(|&byte| byte == b'[' || byte == b']');
    bracket && a.iter().chain(b).all(allowed)
}

/// Parses `[f,sps,Vrms×100,Irms_mA,CCF×100,theta×100,VA,W,VAR,PF×100]`. Signs are
/// accepted on every field; the ones that cannot be negative are refused as out of range.
pub fn parse_text(text: &[u8]) -> Result<LegacyReading, LegacyError> {
    let Some(inner) = text.strip_prefix(b"[") else {
        return Err(LegacyError::NoStart);
    };
    let Some(inner) = inner.strip_suffix(b"]") else {
        return Err(LegacyError::NoEnd);
    };
    if let Some(position) = inner
        .iter()
        .position(|&b| !matches!(b, b'0'..=b'9' | b',' | b'-' | b'+' | b' '))
    {
        return Err(LegacyError::Byte {
            byte: inner[position],
            position: position + 1,
        });
    }
    let fields: Vec<&[u8]> = inner.split(|&b| b == b',').collect();
    if fields.len() != FIELDS {
        return Err(LegacyError::FieldCount {
            count: fields.len(),
        });
    }
    let mut values = [0i64; FIELDS];
    for (index, field) in fields.iter().enumerate() {
        values[index] = number(field).ok_or_else(|| LegacyError::NotANumber {
            name: FIELD_NAMES[index],
            text: String::from_utf8_lossy(field).into_owned(),
        })?;
    }
    reading(&values)
}

/// Joins and parses two halves.
pub fn parse_halves(first: &[u8], second: &[u8]) -> Result<LegacyReading, LegacyError> {
    parse_text(&join_halves(first, second)?)
}

/// A decimal integer with an optional sign and spaces around it, at most 12 digits.
fn number(field: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(field).ok()?.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The prototype's `f` in mHz. Mains lies in 40–70 Hz, so the scale shows in the value:
/// 40–70 is Hz, 400–700 is 0.1 Hz, 4000–7000 is 0.01 Hz, 40000–70000 is mHz; 0 means no
/// zero crossing. Anything else is `None`.
pub fn frequency_mhz(raw: i64) -> Option<u32> {
    let mhz = match raw {
        0 => 0,
        40..=70 => raw * 1000,
        400..=700 => raw * 100,
        4000..=7000 => raw * 10,
        40_000..=70_000 => raw,
        _ => return None,
    };
    u32::try_from(mhz).ok()
}

fn reading(values: &[i64; FIELDS]) -> Result<LegacyReading, LegacyError> {
    let range = |index: usize, low: i64, high: i64| {
        let value = values[index];
        if (low..=high).contains(&value) {
            Ok(value)
        } else {
            Err(LegacyError::Range {
                name: FIELD_NAMES[index],
                value,
            })
        }
    };
    let frequency_mhz = frequency_mhz(values[0]).ok_or(LegacyError::Range {
        name: FIELD_NAMES[0],
        value: values[0],
    })?;
    // Bounds: what the frame record's fixed-point fields hold, and far beyond any circuit
    // a prototype board measured.
    Ok(LegacyReading {
        frequency_mhz,
        sps: range(1, 0, 100_000)? as u32,
        vrms_centi: range(2, 0, 100_000)? as u32,
        irms_ma: range(3, 0, 4_000_000)? as u32,
        ccf_centi: range(4, 0, 6_500)? as u32,
        theta_centi: range(5, -18_000, 18_000)? as i32,
        va: range(6, 0, 10_000_000)? as u32,
        w: range(7, -10_000_000, 10_000_000)? as i32,
        var: range(8, -10_000_000, 10_000_000)? as i32,
        pf_centi: range(9, -300, 300)? as i32,
    })
}

impl LegacyReading {
    /// The reading as the prototype's text (frequency in 0.01 Hz), the inverse of
    /// [`parse_text`] for a reading whose frequency is a whole number of 10 mHz.
    pub fn to_text(&self) -> String {
        format!(
            "[{},{},{},{},{},{},{},{},{},{}]",
            self.frequency_mhz / 10,
            self.sps,
            self.vrms_centi,
            self.irms_ma,
            self.ccf_centi,
            self.theta_centi,
            self.va,
            self.w,
            self.var,
            self.pf_centi
        )
    }
}

impl<I2C: I2c> Master<I2C> {
    /// One reading of a legacy slave, as the prototype master took it: write [`START`],
    /// read [`FIRST_LEN`] bytes, read [`SECOND_LEN`] bytes (the prototype read 25; see there) (each read a write of command 0
    /// and a read joined by a repeated start), join the halves in whichever order they came
    /// and parse them. A NACK, a bus error or an unreadable reply is tried again, the whole
    /// exchange, up to the retry policy's attempts; unreadable replies count as CRC errors.
    pub fn legacy_read(&mut self, address: u8) -> Result<LegacyReading, DriverError> {
        self.legacy_exchange(address, true, Persistence::Retry)
            .and_then(|(first, second)| {
                parse_halves(&first, &second)
                    .map_err(|source| DriverError::Legacy { address, source })
            })
    }

    /// Whether a legacy slave answers at `address`, without writing [`START`] to it (a
    /// device of another kind could take that as data): reads both halves once and checks
    /// that they look like the prototype's ASCII ([`looks_legacy`]).
    pub fn legacy_probe(&mut self, address: u8) -> bool {
        self.legacy_exchange(address, false, Persistence::ProbeOnly)
            .is_ok_and(|(first, second)| looks_legacy(&first, &second))
    }

    fn legacy_exchange(
        &mut self,
        address: u8,
        start: bool,
        persistence: Persistence,
    ) -> Result<([u8; FIRST_LEN], [u8; SECOND_LEN]), DriverError> {
        if !(FIRST_ADDRESS..=LAST_ADDRESS).contains(&address) {
            return Err(DriverError::InvalidAddress { address });
        }
        let mut halves = None;
        self.transact(address, persistence, |bus| {
            let fail = |e: I2C::Error| DriverError::from_bus(address, &e);
            if start {
                bus.write(address, &START).map_err(fail)?;
            }
            let mut first = [0u8; FIRST_LEN];
            bus.write_read(address, &[COMMAND], &mut first)
                .map_err(fail)?;
            let mut second = [0u8; SECOND_LEN];
            bus.write_read(address, &[COMMAND], &mut second)
                .map_err(fail)?;
            if start {
                // Check inside the retry loop, so that a garbled reply is read again.
                parse_halves(&first, &second)
                    .map_err(|source| DriverError::Legacy { address, source })?;
            }
            halves = Some((first, second));
            Ok(())
        })?;
        halves.ok_or(DriverError::InvalidAddress { address })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pad(text: &[u8], len: usize) -> Vec<u8> {
        let mut out = text.to_vec();
        out.resize(len, 0xFF);
        out
    }

    fn halves(text: &str) -> (Vec<u8>, Vec<u8>) {
        let bytes = text.as_bytes();
        let cut = bytes.len().min(FIRST_LEN);
        (
            pad(&bytes[..cut], FIRST_LEN),
            pad(&bytes[cut..], PROTOTYPE_SECOND_LEN),
        )
    }

    const EXAMPLE: &str = "[5000,1840,23012,10870,141,-2450,2501,-2280,-1020,-91]";

    fn example() -> LegacyReading {
        LegacyReading {
            frequency_mhz: 50_000,
            sps: 1840,
            vrms_centi: 23_012,
            irms_ma: 10_870,
            ccf_centi: 141,
            theta_centi: -2450,
            va: 2501,
            w: -2280,
            var: -1020,
            pf_centi: -91,
        }
    }

    #[test]
    fn halves_in_order_and_swapped_give_the_same_reading() {
        let (a, b) = halves(EXAMPLE);
        assert_eq!(a.len(), 29);
        assert_eq!(b.len(), 25);
        assert_eq!(parse_halves(&a, &b), Ok(example()));
        assert_eq!(parse_halves(&b, &a), Ok(example()));
        assert_eq!(example().to_text(), EXAMPLE);
    }

    #[test]
    fn exact_bytes_of_the_documented_example() {
        // docs/protocol/legacy.md, "Example".
        let (a, b) = halves(EXAMPLE);
        assert_eq!(&a[..], b"[5000,1840,23012,10870,141,-2");
        assert_eq!(
            b,
            [
                b'4', b'5', b'0', b',', b'2', b'5', b'0', b'1', b',', b'-', b'2', b'2', b'8', b'0',
                b',', b'-', b'1', b'0', b'2', b'0', b',', b'-', b'9', b'1', b']'
            ]
        );
    }

    #[test]
    fn a_short_reading_fits_the_first_half() {
        let text = "[50,1800,23000,0,0,0,0,0,0,0]";
        let (a, b) = halves(text);
        assert!(b.iter().all(|&x| x == 0xFF));
        assert_eq!(parse_halves(&a, &b).unwrap().frequency_mhz, 50_000);
        assert_eq!(parse_halves(&b, &a).unwrap().vrms_centi, 23_000);
        let text = "[50,1800,230,100,141,0,23,23,0,100]";
        let (a, b) = halves(text);
        assert_eq!(parse_halves(&a, &b).unwrap().pf_centi, 100);
    }

    #[test]
    fn a_count_byte_in_front_is_accepted() {
        let (a, b) = halves(EXAMPLE);
        let mut counted_a = vec![29u8];
        counted_a.extend_from_slice(&a);
        let mut counted_b = vec![25u8];
        counted_b.extend_from_slice(&b);
        assert_eq!(parse_halves(&counted_a, &counted_b), Ok(example()));
    }

    #[test]
    fn frequency_scales_are_recognised() {
        assert_eq!(frequency_mhz(50), Some(50_000));
        assert_eq!(frequency_mhz(599), Some(59_900));
        assert_eq!(frequency_mhz(5001), Some(50_010));
        assert_eq!(frequency_mhz(49_987), Some(49_987));
        assert_eq!(frequency_mhz(0), Some(0));
        assert_eq!(frequency_mhz(100), None);
        assert_eq!(frequency_mhz(-50), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: [(&[u8], &[u8]); 8] = [
            (&[0xFF; 29], &[0xFF; 25]),
            (b"5000,1840]", b"[1"),
            (b"[1,2,3]", b""),
            (
                b"[5000,1840,23012,10870,141,-2450,2501,-2280,-1020,-91",
                b"",
            ),
            (
                b"[5000,1840,23012,10870,141,-2450,2501,-2280,-1020,-91,7]",
                b"",
            ),
            (b"[5000,1840,23012,10870,141,--2,2501,-2280,-1020,-91]", b""),
            (b"[5000,1840,23012,1087x,141,-2,2501,-2280,-1020,-91]", b""),
            (b"[5000,1840,-23012,10870,141,-2,2501,-2280,-1020,-91]", b""),
        ];
        for (a, b) in cases {
            assert!(
                parse_halves(a, b).is_err(),
                "{:?}",
                String::from_utf8_lossy(a)
            );
        }
        assert_eq!(
            parse_halves(&[0xFF; 29], &[0xFF; 25]),
            Err(LegacyError::Empty)
        );
        assert!(matches!(
            parse_text(b"[5000,1840,-23012,10870,141,-2,2501,-2280,-1020,-91]"),
            Err(LegacyError::Range {
                name: "Vrms×100",
                ..
            })
        ));
    }

    #[test]
    fn recognition_without_a_whole_reading() {
        let (a, b) = halves(EXAMPLE);
        assert!(looks_legacy(&a, &b));
        assert!(looks_legacy(&b, &[0xFF; 25]));
        assert!(!looks_legacy(&[0xFF; 29], &[0xFF; 25]));
        assert!(!looks_legacy(b"PM\x01\x01", &[0xFF; 25]));
    }

    fn any_reading() -> impl Strategy<Value = LegacyReading> {
        (
            (
                0u32..=7000,
                0u32..=100_000,
                0u32..=100_000,
                0u32..=4_000_000,
                0u32..=6_500,
            ),
            (
                -18_000i32..=18_000,
                0u32..=10_000_000,
                -10_000_000i32..=10_000_000,
            ),
            (-10_000_000i32..=10_000_000, -300i32..=300),
        )
            .prop_map(|(a, b, c)| LegacyReading {
                frequency_mhz: if a.0 < 4000 { 0 } else { a.0 * 10 },
                sps: a.1,
                vrms_centi: a.2,
                irms_ma: a.3,
                ccf_centi: a.4,
                theta_centi: b.0,
                va: b.1,
                w: b.2,
                var: c.0,
                pf_centi: c.1,
            })
    }

    proptest! {
        #[test]
        fn parsing_never_panics(a in proptest::collection::vec(any::<u8>(), 0..40),
                                b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_halves(&a, &b);
            let _ = looks_legacy(&a, &b);
        }

        #[test]
        fn text_round_trips_in_either_order(reading in any_reading(), cut in 0usize..80) {
            let text = reading.to_text().into_bytes();
            let cut = cut.min(text.len());
            let (a, b) = (pad(&text[..cut], cut.max(1) + 3), pad(&text[cut..], text.len() - cut + 2));
            prop_assert_eq!(parse_halves(&a, &b), Ok(reading));
            prop_assert_eq!(parse_halves(&b, &a), Ok(reading));
        }

        #[test]
        fn mutated_text_never_panics(reading in any_reading(), index in 0usize..80, byte: u8) {
            let mut text = reading.to_text().into_bytes();
            let index = index % text.len();
            text[index] = byte;
            let _ = parse_text(&text);
        }
    }
}
