//! Replies of random bytes (a broken slave, a foreign device) never make the driver panic,
//! and the drain state machine survives any sequence of FIFO replies.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, Operation};
use pmon_bus::{Cursor, Fifo, Master, Record, RetryPolicy};
use proptest::prelude::*;

/// A bus whose every read returns the next bytes of a fixed random stream.
struct Garbage {
    bytes: Vec<u8>,
    at: usize,
}

impl ErrorType for Garbage {
    type Error = ErrorKind;
}

impl I2c for Garbage {
    fn transaction(
        &mut self,
        _address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        for operation in operations {
            if let Operation::Read(buffer) = operation {
                for byte in buffer.iter_mut() {
                    *byte = self.bytes.get(self.at).copied().unwrap_or(0xFF);
                    self.at += 1;
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn random_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut master = Master::new(Garbage { bytes, at: 0 }, RetryPolicy::default()).with_sleep(|_| {});
        let _ = master.identify(0x10);
        let _ = master.status(0x10);
        let _ = master.read_config(0x10);
        let mut cursor = Cursor::new();
        let mut out = Vec::new();
        let _ = master.drain(0x10, &mut cursor, 8, &mut out);
    }

    #[test]
    fn fifo_decoding_of_random_frames_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(fifo) = Fifo::decode(0x10, &bytes) {
            // A frame that decodes encodes back to itself.
            let mut again = [0u8; Fifo::LEN + 2];
            fifo.seal(0x10, &mut again);
            prop_assert_eq!(&again[..], &bytes[..]);
        }
    }

    #[test]
    fn the_cursor_survives_any_reply_sequence(
        replies in proptest::collection::vec((proptest::option::of(any::<u32>()), any::<u8>(), any::<bool>()), 0..50),
        start in any::<u32>(),
    ) {
        let mut cursor = Cursor::resume(start);
        for (seq, remaining, reset) in replies {
            let fifo = Fifo { record: seq.map(|seq| Record { seq, ..Record::default() }), remaining, reset };
            let _ = cursor.accept(&fifo);
        }
    }
}
