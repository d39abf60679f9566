//! The serial bridge's bytes, pinned: every example of `docs/protocol/serial-bridge.md` §6
//! is built here from the code and compared with the document, byte for byte.

use pmon_bus::bridge::frame::{BusFault, Frame, FrameDecoder, NackSource, Refusal, Reply, Request};
use pmon_bus::bridge::{default_info, BridgeInfo};

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Identity reply of `docs/protocol/i2c.md` §10.1.
const IDENTITY: [u8; 26] = [
    0x50, 0x4D, 0x01, 0x01, 0x02, 0x03, 0xEE, 0xFF, 0xC0, 0x00, 0x0F, 0x00, 0x08, 0x07, 0xE8, 0x03,
    0xF4, 0x01, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0xD2, 0xFA,
];

/// (frame, wire bytes, body bytes), as the document shows them.
fn examples() -> Vec<(Frame, &'static str, &'static str)> {
    vec![
        (
            Request::Hello { max_version: 1 }.frame(1),
            "08 01 01 01 01 01 C9 D9 00",
            "01 01 01 01 01 C9 D9",
        ),
        (
            Reply::Ok(default_info(100_000).encode()).frame(1),
            "0C 01 01 80 0B 01 40 40 03 A0 86 01 01 02 01 03 98 08 00",
            "01 01 80 0B 01 40 40 03 A0 86 01 00 00 01 00 98 08",
        ),
        (
            Request::WriteRead {
                address: 0x10,
                bytes: vec![0x00],
                read_len: 26,
            }
            .frame(2),
            "07 01 02 04 03 10 1A 03 EE 7F 00",
            "01 02 04 03 10 1A 00 EE 7F",
        ),
        (
            Reply::Ok(IDENTITY.to_vec()).frame(2),
            "0E 01 02 80 1A 50 4D 01 01 02 03 EE FF C0 02 0F 09 08 07 E8 03 F4 01 20 20 01 01 01 05 D2 FA C1 82 00",
            "01 02 80 1A 50 4D 01 01 02 03 EE FF C0 00 0F 00 08 07 E8 03 F4 01 20 20 00 00 00 00 D2 FA C1 82",
        ),
        (
            Request::WriteRead {
                address: 0x10,
                bytes: vec![0x30, 0xD2, 0x04, 0x00, 0x00, 0xD1, 0x81],
                read_len: 36,
            }
            .frame(3),
            "0A 01 03 04 09 10 24 30 D2 04 01 05 D1 81 82 63 00",
            "01 03 04 09 10 24 30 D2 04 00 00 D1 81 82 63",
        ),
        (
            Request::Write {
                address: 0x10,
                bytes: vec![0x40, 0x01, 0x12, 0x92],
            }
            .frame(4),
            "0C 01 04 02 05 10 40 01 12 92 C2 44 00",
            "01 04 02 05 10 40 01 12 92 C2 44",
        ),
        (
            Reply::Ok(Vec::new()).frame(4),
            "04 01 04 80 03 2C 35 00",
            "01 04 80 00 2C 35",
        ),
        (
            Request::Read {
                address: 0x10,
                len: 26,
            }
            .frame(5),
            "09 01 05 03 02 10 1A 53 2D 00",
            "01 05 03 02 10 1A 53 2D",
        ),
        (
            Reply::Nack(NackSource::Address).frame(5),
            "08 01 05 81 01 01 62 28 00",
            "01 05 81 01 01 62 28",
        ),
        (
            Reply::BusError(BusFault::Bus).frame(6),
            "08 01 06 82 01 01 EE EA 00",
            "01 06 82 01 01 EE EA",
        ),
        (
            Reply::RequestCrc.frame(7),
            "04 01 07 83 03 2F 39 00",
            "01 07 83 00 2F 39",
        ),
        (
            Reply::Malformed(Refusal::Version(1)).frame(10),
            "09 01 0A 84 02 05 01 63 9B 00",
            "01 0A 84 02 05 01 63 9B",
        ),
        (
            Request::Reset.frame(8),
            "04 01 08 05 03 20 A4 00",
            "01 08 05 00 20 A4",
        ),
        (
            Reply::Ok(vec![1]).frame(8),
            "08 01 08 80 01 01 D4 26 00",
            "01 08 80 01 01 D4 26",
        ),
        (
            Request::SetClock { hz: 100_000 }.frame(9),
            "08 01 09 06 04 A0 86 01 03 7B 09 00",
            "01 09 06 04 A0 86 01 00 7B 09",
        ),
        (
            Reply::Ok(100_000u32.to_le_bytes().to_vec()).frame(9),
            "08 01 09 80 04 A0 86 01 03 BA 50 00",
            "01 09 80 04 A0 86 01 00 BA 50",
        ),
        (
            Request::Write {
                address: 0x20,
                bytes: vec![0x00, 0x01, 0x90],
            }
            .frame(11),
            "06 01 0B 02 04 20 05 01 90 42 B8 00",
            "01 0B 02 04 20 00 01 90 42 B8",
        ),
    ]
}

#[test]
fn every_example_encodes_and_decodes_to_the_pinned_bytes() {
    for (frame, wire, body) in examples() {
        assert_eq!(hex(&frame.body()), body, "{frame:?}");
        assert_eq!(hex(&frame.encode()), wire, "{frame:?}");
        let mut decoder = FrameDecoder::new();
        let decoded: Vec<_> = frame
            .encode()
            .iter()
            .filter_map(|&b| decoder.push(b))
            .collect();
        assert_eq!(decoded, vec![Ok(frame)]);
    }
}

#[test]
fn the_document_shows_the_same_bytes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol/serial-bridge.md"
    );
    let doc = std::fs::read_to_string(path).expect("docs/protocol/serial-bridge.md");
    for (_, wire, body) in examples() {
        let arrow_line = doc.lines().any(|line| {
            (line.starts_with("→ ") || line.starts_with("← ")) && line[4..].trim() == wire
        });
        assert!(arrow_line, "the document lacks the frame {wire}");
        assert!(
            doc.contains(&format!("body {body}")),
            "the document lacks the body {body}"
        );
    }
}

#[test]
fn bridge_info_round_trips() {
    let info = BridgeInfo {
        version: 1,
        max_write: 32,
        max_read: 32,
        capabilities: 1,
        clock_hz: 50_000,
        firmware: [1, 2, 3],
    };
    assert_eq!(BridgeInfo::decode(&info.encode()), Some(info));
    assert_eq!(BridgeInfo::decode(&info.encode()[..10]), None);
    let mut longer = info.encode();
    longer.push(0x77);
    assert_eq!(
        BridgeInfo::decode(&longer),
        Some(info),
        "appended bytes are ignored"
    );
}
