//! The legacy example of `docs/protocol/legacy.md` §3, pinned: the bytes the document shows
//! are those a prototype board sends for its text, and they parse to the table's values.

use pmon_bus::legacy::{parse_halves, LegacyReading, FIRST_LEN, SECOND_LEN, START};

const TEXT: &str = "[5000,1840,23012,10870,141,-2450,2501,-2280,-1020,-91]";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn halves() -> (Vec<u8>, Vec<u8>) {
    let bytes = TEXT.as_bytes();
    let mut first = bytes[..FIRST_LEN].to_vec();
    first.resize(FIRST_LEN, 0xFF);
    let mut second = bytes[FIRST_LEN..].to_vec();
    second.resize(SECOND_LEN, 0xFF);
    (first, second)
}

#[test]
fn the_document_shows_the_bytes_of_the_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol/legacy.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol/legacy.md");
    let (first, second) = halves();
    assert!(doc.contains(&format!("→ {}  ", hex(&START))), "write");
    assert!(
        doc.contains(&format!("→ 00  ← {}\n", hex(&first))),
        "first half"
    );
    assert!(
        doc.contains(&format!("→ 00  ← {}\n", hex(&second))),
        "second half"
    );
    assert!(doc.contains(TEXT));
}

#[test]
fn the_example_parses_to_the_table_in_either_order() {
    let (first, second) = halves();
    let expected = LegacyReading {
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
    };
    assert_eq!(parse_halves(&first, &second), Ok(expected));
    assert_eq!(parse_halves(&second, &first), Ok(expected));
    // Swapped and read with the prototype's 25 bytes, the first half is cut: why pmon reads 29.
    assert!(parse_halves(&second[..25], &first[..25]).is_err());
}
