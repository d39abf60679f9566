//! The serial bridge: an I2C master reached over a serial line, for hosts without an I2C
//! controller of their own (a laptop with a USB-serial Arduino, say).
//!
//! The protocol, version 1, is specified in `docs/protocol/serial-bridge.md`: COBS-framed
//! frames with a version byte, a tag that pairs a reply with its request, a type, a length
//! and a CRC-16. [`frame`] is the wire format as pure functions, [`SerialBridge`] the host
//! side (an `embedded_hal::i2c::I2c`), [`BridgeServer`] the bridge side on top of any
//! `I2c` bus, and [`tty`] a raw termios serial port.
//!
//! ```
//! use pmon_bus::bridge::frame::Request;
//!
//! // A write-read of 26 bytes from register 0x00 of slave 0x10, tag 2, as it goes on the line.
//! let wire = Request::WriteRead { address: 0x10, bytes: vec![0x00], read_len: 26 }.frame(2).encode();
//! assert_eq!(wire, [0x07, 0x01, 0x02, 0x04, 0x03, 0x10, 0x1A, 0x03, 0xEE, 0x7F, 0x00]);
//! ```

mod client;
pub mod frame;
mod server;
#[cfg(unix)]
pub mod tty;

pub use client::{BridgeError, BridgeOptions, LinkStats, SerialBridge};
pub use frame::{BridgeInfo, BusFault, Refusal};
pub use server::{BridgeServer, ServerStats};

/// How long [`SerialBridge::open`] keeps saying `HELLO` before it gives up.
pub const HELLO_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

#[cfg(unix)]
impl SerialBridge<tty::TtyPort> {
    /// Opens the serial port at `path` (raw 8N1 at `baud`), exchanges `HELLO` and checks the
    /// bridge's protocol version.
    pub fn open(path: &str, baud: u32, options: BridgeOptions) -> Result<Self, BridgeError> {
        let fail = |reason: String| BridgeError::Open {
            path: path.to_owned(),
            reason,
        };
        let port = tty::TtyPort::open(std::path::Path::new(path), baud).map_err(|error| {
            fail(match error.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{error}: no such device; is the bridge plugged in? (`ls /dev/ttyUSB* /dev/ttyACM*`)")
                }
                std::io::ErrorKind::PermissionDenied => format!(
                    "{error}: permission denied; add the user to the `dialout` group (Debian, Raspberry Pi OS) or `uucp` (Arch)"
                ),
                _ => error.to_string(),
            })
        })?;
        let mut bridge = SerialBridge::new(port, options);
        // An Arduino resets when its port opens (DTR) and takes a moment to boot: keep
        // saying hello for a while.
        let deadline = std::time::Instant::now() + HELLO_PATIENCE;
        let mut hello = bridge.hello();
        while matches!(hello, Err(BridgeError::Link { .. })) && std::time::Instant::now() < deadline
        {
            hello = bridge.hello();
        }
        hello.map_err(|error| match error {
            BridgeError::Link { .. } => fail(format!(
                "{error}; is a pmon bridge at the other end, at {baud} baud? An Arduino \
                 resets when the port opens and needs ~2 s before it answers"
            )),
            other => other,
        })?;
        Ok(bridge)
    }
}

/// Default information a bridge built from this crate reports.
pub fn default_info(clock_hz: u32) -> BridgeInfo {
    BridgeInfo {
        version: frame::VERSION,
        max_write: 64,
        max_read: 64,
        capabilities: frame::caps::SET_CLOCK | frame::caps::BUS_RECOVERY,
        clock_hz,
        firmware: [0, 1, 0],
    }
}
