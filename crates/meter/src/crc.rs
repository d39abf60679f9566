//! CRC-16/IBM-3740 (also called CRC-16/CCITT-FALSE) over address, register and payload.
//!
//! Poly 0x1021, init 0xFFFF, no reflection: AVR firmware gets it from avr-libc's
//! `_crc_xmodem_update` started at 0xFFFF. The slave's 7-bit address and the register
//! number go into the CRC ahead of the payload, so a reply that comes from the wrong
//! slave or the wrong register fails the check just as a flipped bit does.

use crc::{Crc, CRC_16_IBM_3740};

const ALGORITHM: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The CRC of one transfer: `address` (7-bit), `register`, then `payload`.
pub fn checksum(address: u8, register: u8, payload: &[u8]) -> u16 {
    let mut digest = ALGORITHM.digest();
    digest.update(&[address, register]);
    digest.update(payload);
    digest.finalize()
}

/// Appends the CRC (little-endian) after `payload_len` bytes of `buf` and returns the frame length.
///
/// `buf` must hold at least `payload_len + 2` bytes.
pub fn seal(address: u8, register: u8, buf: &mut [u8], payload_len: usize) -> usize {
    let crc = checksum(address, register, &buf[..payload_len]);
    buf[payload_len..payload_len + 2].copy_from_slice(&crc.to_le_bytes());
    payload_len + 2
}

/// Checks the trailing CRC of `frame` and returns the payload before it.
pub fn open(address: u8, register: u8, frame: &[u8]) -> Result<&[u8], crate::DecodeError> {
    if frame.len() < 2 {
        return Err(crate::DecodeError::Length {
            expected: 2,
            actual: frame.len(),
        });
    }
    let (payload, tail) = frame.split_at(frame.len() - 2);
    let received = u16::from_le_bytes([tail[0], tail[1]]);
    let computed = checksum(address, register, payload);
    if computed == received {
        Ok(payload)
    } else {
        Err(crate::DecodeError::Crc { computed, received })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_the_catalogue() {
        // The catalogue check value of CRC-16/IBM-3740 over "123456789" is 0x29B1.
        let mut digest = ALGORITHM.digest();
        digest.update(b"123456789");
        assert_eq!(digest.finalize(), 0x29B1);
    }

    #[test]
    fn address_and_register_are_covered() {
        let payload = [1, 2, 3];
        let base = checksum(0x10, 0x30, &payload);
        assert_ne!(base, checksum(0x11, 0x30, &payload));
        assert_ne!(base, checksum(0x10, 0x31, &payload));
    }

    #[test]
    fn open_rejects_a_flipped_bit() {
        let mut buf = [7u8, 8, 9, 0, 0];
        let len = seal(0x20, 0x00, &mut buf, 3);
        assert_eq!(open(0x20, 0x00, &buf[..len]), Ok(&[7u8, 8, 9][..]));
        buf[1] ^= 0x04;
        assert!(matches!(
            open(0x20, 0x00, &buf[..len]),
            Err(crate::DecodeError::Crc { .. })
        ));
    }
}
