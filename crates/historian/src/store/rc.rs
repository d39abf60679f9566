//! An adaptive binary range coder (the LZMA design: 32-bit range, 11-bit probabilities) and
//! the integer model on top of it that the chunk codec uses.
//!
//! A value is coded as its bit length `n` (0..=64, a 7-level bit tree of adaptive
//! probabilities, conditioned on the previous value's length class), then the two bits
//! below the leading one with adaptive probabilities per `n`, then the rest as raw bits.
//! The probabilities adapt as they go, so nothing like a Huffman table is stored: a column
//! of zeros costs almost nothing, and a column that turns noisy is followed within a few
//! dozen values.

const PROB_BITS: u32 = 11;
const PROB_INIT: u16 = 1 << (PROB_BITS - 1);
const MOVE_BITS: u32 = 4;
const TOP: u32 = 1 << 24;

/// Length classes for the context of the next length: the previous length, bucketed.
pub(crate) const CLASSES: usize = 12;
const CLASS_OF: [u8; 65] = {
    let mut t = [0u8; 65];
    let mut n = 0;
    while n < 65 {
        t[n] = match n {
            0..=7 => n as u8,
            8..=9 => 8,
            10..=12 => 9,
            13..=18 => 10,
            _ => 11,
        };
        n += 1;
    }
    t
};

/// Adaptive state of one integer stream.
#[derive(Clone)]
pub(crate) struct IntModel {
    len: [[u16; 128]; CLASSES],
    mant: [[u16; 4]; 65],
    class: usize,
}

impl IntModel {
    pub(crate) fn new() -> Self {
        IntModel {
            len: [[PROB_INIT; 128]; CLASSES],
            mant: [[PROB_INIT; 4]; 65],
            class: 0,
        }
    }
}

pub(crate) struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(out: Vec<u8>) -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out,
        }
    }

    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low as u32) >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = ((self.low as u32) << 8) as u64;
    }

    // The per-bit and per-value functions are the codec's inner loop: inlined whatever
    // codegen unit the codec lands in (without this, ingest ran ~5% slower depending on
    // how the crate happened to be partitioned).
    #[inline(always)]
    fn bit(&mut self, prob: &mut u16, bit: u32) {
        let bound = (self.range >> PROB_BITS) * (*prob as u32);
        if bit == 0 {
            self.range = bound;
            *prob += ((1 << PROB_BITS) - *prob) >> MOVE_BITS;
        } else {
            self.low += bound as u64;
            self.range -= bound;
            *prob -= *prob >> MOVE_BITS;
        }
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    #[inline(always)]
    fn direct(&mut self, value: u64, nbits: u32) {
        for i in (0..nbits).rev() {
            self.range >>= 1;
            if (value >> i) & 1 == 1 {
                self.low += self.range as u64;
            }
            while self.range < TOP {
                self.range <<= 8;
                self.shift_low();
            }
        }
    }

    /// Codes one unsigned value.
    #[inline]
    pub(crate) fn put(&mut self, m: &mut IntModel, u: u64) {
        let n = 64 - u.leading_zeros();
        let probs = &mut m.len[m.class];
        let mut node = 1usize;
        for i in (0..7).rev() {
            let b = (n >> i) & 1;
            self.bit(&mut probs[node], b);
            node = node * 2 + b as usize;
        }
        m.class = CLASS_OF[n as usize] as usize;
        if n >= 2 {
            let nbits = n - 1;
            let top = nbits.min(2);
            let hi = (u >> (nbits - top)) & ((1 << top) - 1);
            let mp = &mut m.mant[n as usize];
            let mut node = 1usize;
            for i in (0..top).rev() {
                let b = ((hi >> i) & 1) as u32;
                self.bit(&mut mp[node], b);
                node = node * 2 + b as usize;
            }
            let rest = nbits - top;
            if rest > 0 {
                self.direct(u & ((1u64 << rest) - 1), rest);
            }
        }
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

pub(crate) struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            input,
            pos: 0,
        };
        for _ in 0..5 {
            d.code = (d.code << 8) | d.next() as u32;
        }
        d
    }

    #[inline]
    fn next(&mut self) -> u8 {
        let b = self.input.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// True when the decoder read past its input (only corrupt data does that).
    pub(crate) fn overrun(&self) -> bool {
        self.pos > self.input.len()
    }

    #[inline(always)]
    fn bit(&mut self, prob: &mut u16) -> u32 {
        let bound = (self.range >> PROB_BITS) * (*prob as u32);
        let b = if self.code < bound {
            self.range = bound;
            *prob += ((1 << PROB_BITS) - *prob) >> MOVE_BITS;
            0
        } else {
            self.code -= bound;
            self.range -= bound;
            *prob -= *prob >> MOVE_BITS;
            1
        };
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next() as u32;
        }
        b
    }

    #[inline(always)]
    fn direct(&mut self, nbits: u32) -> u64 {
        let mut v = 0u64;
        for _ in 0..nbits {
            self.range >>= 1;
            let b = if self.code >= self.range {
                self.code -= self.range;
                1
            } else {
                0
            };
            v = (v << 1) | b;
            while self.range < TOP {
                self.range <<= 8;
                self.code = (self.code << 8) | self.next() as u32;
            }
        }
        v
    }

    /// Decodes one unsigned value.
    #[inline]
    pub(crate) fn get(&mut self, m: &mut IntModel) -> u64 {
        let probs = &mut m.len[m.class];
        let mut node = 1usize;
        for _ in 0..7 {
            let b = self.bit(&mut probs[node]);
            node = node * 2 + b as usize;
        }
        let n = (node - 128).min(64) as u32;
        m.class = CLASS_OF[n as usize] as usize;
        match n {
            0 => 0,
            1 => 1,
            _ => {
                let nbits = n - 1;
                let top = nbits.min(2);
                let mp = &mut m.mant[n as usize];
                let mut node = 1usize;
                for _ in 0..top {
                    let b = self.bit(&mut mp[node]);
                    node = node * 2 + b as usize;
                }
                let hi = (node - (1 << top)) as u64;
                let rest = nbits - top;
                let lo = if rest > 0 { self.direct(rest) } else { 0 };
                (1u64 << nbits) | (hi << rest) | lo
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        let vals: Vec<u64> = (0..200u64)
            .chain([
                u64::MAX,
                u64::MAX - 1,
                1 << 63,
                (1 << 63) - 1,
                12345678901234,
            ])
            .chain((0..64).map(|i| 1u64 << i))
            .collect();
        let mut m = IntModel::new();
        let mut e = Encoder::new(Vec::new());
        for &v in &vals {
            e.put(&mut m, v);
        }
        let bytes = e.finish();
        let mut m = IntModel::new();
        let mut d = Decoder::new(&bytes);
        for &v in &vals {
            assert_eq!(d.get(&mut m), v);
        }
        assert!(!d.overrun());
    }

    #[test]
    fn zeros_are_nearly_free() {
        let mut m = IntModel::new();
        let mut e = Encoder::new(Vec::new());
        for _ in 0..10_000 {
            e.put(&mut m, 0);
        }
        assert!(e.finish().len() < 120);
    }
}
