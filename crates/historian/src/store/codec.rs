//! Columnar block codec for integer columns: raw chunks and rollup blocks.
//!
//! Layout of a block (all varints LEB128, signed ones zigzagged):
//!
//! ```text
//! kind      u8        1 = raw chunk, 2 = rollup block
//! count     varint    rows
//! ncols     varint    columns
//! per column:
//!   mode    u8        0 const, 1 delta, 2 delta-of-delta, 3 predicted, 4 predicted+delta
//!   first   zvarint   the first value x0
//!   step    varint    (not for const) the lattice step g: every x_i = x0 + g*k_i
//! body      bytes     one range-coded stream: for each non-const column in order, the
//!                     residuals of rows 1..count (row 0 is x0), zigzagged
//! crc       u32 LE    CRC-32C of everything before it
//! ```
//!
//! Arithmetic is wrapping 64-bit, so any i64/u64 round-trips. Predictions are made in the
//! lattice of the column (`round((pred - x0) / g)`), from columns decoded earlier, with
//! integer arithmetic or `libm` (pure Rust, the same result on every platform).

use super::rc::{Decoder, Encoder, IntModel};

pub(crate) const KIND_RAW: u8 = 1;
pub(crate) const KIND_ROLLUP: u8 = 2;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A cross-column predictor; the indices name columns that come earlier in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pred {
    /// round(a * b / div): apparent power from voltage and current.
    Product { a: usize, b: usize, div: i64 },
    /// round(s * cos(angle_centideg)).
    Cos { s: usize, angle: usize },
    /// round(s * sin(angle_centideg)).
    Sin { s: usize, angle: usize },
    /// round(num * mul / den), the previous value when den = 0: power factor from P and S.
    Ratio { num: usize, den: usize, mul: i64 },
    /// The mean of two columns (the same column twice: that column).
    Mid { a: usize, b: usize },
}

impl Pred {
    fn eval(&self, cols: &[Vec<i64>], i: usize, prev: i64) -> i64 {
        match *self {
            Pred::Product { a, b, div } => {
                let p = cols[a][i] as i128 * cols[b][i] as i128;
                div_round(p, div as i128) as i64
            }
            Pred::Cos { s, angle } => {
                let rad = cols[angle][i] as f64 * (std::f64::consts::PI / 18000.0);
                (cols[s][i] as f64 * libm::cos(rad)).round() as i64
            }
            Pred::Sin { s, angle } => {
                let rad = cols[angle][i] as f64 * (std::f64::consts::PI / 18000.0);
                (cols[s][i] as f64 * libm::sin(rad)).round() as i64
            }
            Pred::Ratio { num, den, mul } => {
                let d = cols[den][i] as i128;
                if d == 0 {
                    prev
                } else {
                    div_round(cols[num][i] as i128 * mul as i128, d) as i64
                }
            }
            Pred::Mid { a, b } => ((cols[a][i] as i128 + cols[b][i] as i128) >> 1) as i64,
        }
    }
}

fn div_round(n: i128, d: i128) -> i128 {
    if d == 0 {
        return 0;
    }
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    if 2 * r >= d {
        q + 1
    } else {
        q
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[inline]
fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzz(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= ((b & 0x7F) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Const = 0,
    Delta = 1,
    Delta2 = 2,
    Pred = 3,
    PredDelta = 4,
}

/// Why a block did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

/// Lattice coordinates of a column: (x0, g, k) with x_i = x0 + g*k_i (wrapping).
fn lattice(col: &[i64]) -> (i64, u64, Vec<i64>) {
    let x0 = col[0];
    let mut g: u128 = 0;
    for &x in &col[1..] {
        let d = (x as i128 - x0 as i128).unsigned_abs();
        g = gcd(g, d);
        if g == 1 {
            break;
        }
    }
    if g == 0 {
        return (x0, 1, vec![0; col.len()]);
    }
    // g ≤ 2^64 - 1 because |x - x0| < 2^64.
    let k = col
        .iter()
        .map(|&x| ((x as i128 - x0 as i128) / g as i128) as i64)
        .collect();
    (x0, g as u64, k)
}

#[inline]
fn lattice_pred(p: i64, x0: i64, g: u64) -> i64 {
    div_round(p as i128 - x0 as i128, g as i128) as i64
}

fn cost(res: impl Iterator<Item = i64>) -> u64 {
    // Bit length plus a constant per value: close to what the adaptive coder spends.
    res.map(|r| 64 - zz(r).leading_zeros() as u64 + 1).sum()
}

/// Encodes equal-length columns; `preds[c]` may refer to columns `< c`.
pub(crate) fn encode(kind: u8, cols: &[Vec<i64>], preds: &[Option<Pred>]) -> Vec<u8> {
    let n = cols.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(64 + n * cols.len() / 2);
    out.push(kind);
    put_varint(&mut out, n as u64);
    put_varint(&mut out, cols.len() as u64);
    let mut streams: Vec<Vec<i64>> = Vec::with_capacity(cols.len());
    for (c, col) in cols.iter().enumerate() {
        if n == 0 {
            out.push(Mode::Const as u8);
            put_varint(&mut out, 0);
            continue;
        }
        let (x0, g, k) = lattice(col);
        if k.iter().all(|&v| v == 0) {
            out.push(Mode::Const as u8);
            put_varint(&mut out, zz(x0));
            continue;
        }
        let delta: Vec<i64> = k.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        let mut best: (u64, Mode, Vec<i64>) =
            (cost(delta.iter().copied()), Mode::Delta, Vec::new());
        let dd: Vec<i64> = std::iter::once(delta[0])
            .chain(delta.windows(2).map(|w| w[1].wrapping_sub(w[0])))
            .collect();
        let cd = cost(dd.iter().copied());
        if cd < best.0 {
            best = (cd, Mode::Delta2, dd);
        }
        if let Some(p) = preds.get(c).copied().flatten() {
            let mut prev = col[0];
            let res: Vec<i64> = (1..n)
                .map(|i| {
                    let pv = p.eval(cols, i, prev);
                    prev = col[i];
                    k[i].wrapping_sub(lattice_pred(pv, x0, g))
                })
                .collect();
            let cp = cost(res.iter().copied());
            let rd: Vec<i64> = std::iter::once(res[0])
                .chain(res.windows(2).map(|w| w[1].wrapping_sub(w[0])))
                .collect();
            let cpd = cost(rd.iter().copied());
            if cp < best.0 && cp <= cpd {
                best = (cp, Mode::Pred, res);
            } else if cpd < best.0 {
                best = (cpd, Mode::PredDelta, rd);
            }
        }
        let (_, mode, res) = best;
        out.push(mode as u8);
        put_varint(&mut out, zz(x0));
        put_varint(&mut out, g);
        streams.push(if mode == Mode::Delta { delta } else { res });
    }
    // Each column is its own range-coded stream behind its byte length, so a reader can
    // skip the columns it does not need.
    for s in &streams {
        let mut enc = Encoder::new(Vec::with_capacity(s.len()));
        let mut m = IntModel::new();
        for &r in s {
            enc.put(&mut m, zz(r));
        }
        let bytes = enc.finish();
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    }
    let crc = CRC.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a block written by [`encode`] with the same `preds`.
pub(crate) fn decode(
    kind: u8,
    buf: &[u8],
    preds: &[Option<Pred>],
) -> Result<Vec<Vec<i64>>, DecodeError> {
    decode_some(kind, buf, preds, None)
}

/// Decodes the columns in `wanted` (all when `None`) and those their predictors read;
/// the others come back empty.
pub(crate) fn decode_some(
    kind: u8,
    buf: &[u8],
    preds: &[Option<Pred>],
    wanted: Option<&[bool]>,
) -> Result<Vec<Vec<i64>>, DecodeError> {
    if buf.len() < 8 {
        return Err(DecodeError("block too short"));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if CRC.checksum(body) != crc {
        return Err(DecodeError("checksum mismatch"));
    }
    if body[0] != kind {
        return Err(DecodeError("unknown block kind"));
    }
    let mut pos = 1;
    let bad = DecodeError("truncated header");
    let n = get_varint(body, &mut pos).ok_or(bad.clone())? as usize;
    let ncols = get_varint(body, &mut pos).ok_or(bad.clone())? as usize;
    if ncols != preds.len() {
        return Err(DecodeError("column count"));
    }
    if n > 16 * 1024 * 1024 {
        return Err(DecodeError("row count"));
    }
    let mut heads = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let mode = match body.get(pos).copied() {
            Some(0) => Mode::Const,
            Some(1) => Mode::Delta,
            Some(2) => Mode::Delta2,
            Some(3) => Mode::Pred,
            Some(4) => Mode::PredDelta,
            _ => return Err(DecodeError("column mode")),
        };
        pos += 1;
        let x0 = unzz(get_varint(body, &mut pos).ok_or(bad.clone())?);
        let g = if mode == Mode::Const {
            1
        } else {
            get_varint(body, &mut pos).ok_or(bad.clone())?
        };
        heads.push((mode, x0, g));
    }
    let mut need: Vec<bool> = match wanted {
        Some(w) if w.len() == ncols => w.to_vec(),
        _ => vec![true; ncols],
    };
    for c in (0..ncols).rev() {
        if need[c] && matches!(heads[c].0, Mode::Pred | Mode::PredDelta) {
            match preds[c] {
                Some(Pred::Product { a, b, .. }) | Some(Pred::Mid { a, b }) => {
                    need[a.min(c)] = true;
                    need[b.min(c)] = true;
                }
                Some(Pred::Cos { s, angle }) | Some(Pred::Sin { s, angle }) => {
                    need[s.min(c)] = true;
                    need[angle.min(c)] = true;
                }
                Some(Pred::Ratio { num, den, .. }) => {
                    need[num.min(c)] = true;
                    need[den.min(c)] = true;
                }
                None => {}
            }
        }
    }
    let mut cols: Vec<Vec<i64>> = Vec::with_capacity(ncols);
    for (c, &(mode, x0, g)) in heads.iter().enumerate() {
        let stream: &[u8] = if mode == Mode::Const {
            &[]
        } else {
            let len = get_varint(body, &mut pos).ok_or(bad.clone())? as usize;
            let end = pos.checked_add(len).filter(|&e| e <= body.len());
            let end = end.ok_or(DecodeError("column past the end"))?;
            let s = &body[pos..end];
            pos = end;
            s
        };
        if n == 0 || !need[c] {
            cols.push(Vec::new());
            continue;
        }
        if mode == Mode::Const {
            cols.push(vec![x0; n]);
            continue;
        }
        let mut dec = Decoder::new(stream);
        let mut col = Vec::with_capacity(n);
        col.push(x0);
        let mut m = IntModel::new();
        let gi = g as i64;
        match mode {
            Mode::Const => col.resize(n, x0),
            Mode::Delta => {
                let mut k = 0i64;
                for _ in 1..n {
                    k = k.wrapping_add(unzz(dec.get(&mut m)));
                    col.push(x0.wrapping_add(gi.wrapping_mul(k)));
                }
            }
            Mode::Delta2 => {
                let (mut k, mut d) = (0i64, 0i64);
                for _ in 1..n {
                    d = d.wrapping_add(unzz(dec.get(&mut m)));
                    k = k.wrapping_add(d);
                    col.push(x0.wrapping_add(gi.wrapping_mul(k)));
                }
            }
            Mode::Pred | Mode::PredDelta => {
                let p = preds[c].ok_or(DecodeError("predictor missing"))?;
                let mut r = 0i64;
                cols.push(col);
                for i in 1..n {
                    let u = unzz(dec.get(&mut m));
                    r = if mode == Mode::Pred {
                        u
                    } else {
                        r.wrapping_add(u)
                    };
                    let prev = cols[c][i - 1];
                    let pv = p.eval(&cols, i, prev);
                    let k = r.wrapping_add(lattice_pred(pv, x0, g));
                    cols[c].push(x0.wrapping_add(gi.wrapping_mul(k)));
                }
                if dec.overrun() {
                    return Err(DecodeError("column overrun"));
                }
                continue;
            }
        }
        if dec.overrun() {
            return Err(DecodeError("column overrun"));
        }
        cols.push(col);
    }
    if pos != body.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn preds3() -> Vec<Option<Pred>> {
        vec![
            None,
            None,
            Some(Pred::Product {
                a: 0,
                b: 1,
                div: 1000,
            }),
        ]
    }

    #[test]
    fn round_trip_basic_and_const() {
        let cols = vec![
            vec![230_000, 230_010, 229_990, 230_000],
            vec![5, 5, 5, 5],
            vec![1_150_000, 1_150_050, 1_149_950, 1_150_000],
        ];
        let b = encode(KIND_RAW, &cols, &preds3());
        assert_eq!(decode(KIND_RAW, &b, &preds3()).unwrap(), cols);
        let empty = vec![vec![], vec![], vec![]];
        let b = encode(KIND_RAW, &empty, &preds3());
        assert_eq!(decode(KIND_RAW, &b, &preds3()).unwrap(), empty);
    }

    #[test]
    fn corruption_is_detected() {
        let cols = vec![
            (0..1000).collect::<Vec<i64>>(),
            vec![7; 1000],
            vec![1; 1000],
        ];
        let mut b = encode(KIND_RAW, &cols, &preds3());
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        assert!(decode(KIND_RAW, &b, &preds3()).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_any(rows in proptest::collection::vec(any::<(i64, i64, i64)>(), 0..200)) {
            let cols = vec![
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                rows.iter().map(|r| r.1).collect(),
                rows.iter().map(|r| r.2).collect(),
            ];
            let b = encode(KIND_RAW, &cols, &preds3());
            prop_assert_eq!(decode(KIND_RAW, &b, &preds3()).unwrap(), cols);
        }

        #[test]
        fn round_trip_trig(rows in proptest::collection::vec((any::<i64>(), -18000i64..18000, any::<i64>(), any::<i64>()), 1..100)) {
            let cols = vec![
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                rows.iter().map(|r| r.1).collect(),
                rows.iter().map(|r| r.2).collect(),
                rows.iter().map(|r| r.3).collect(),
            ];
            let preds = vec![None, None, Some(Pred::Cos { s: 0, angle: 1 }), Some(Pred::Ratio { num: 2, den: 0, mul: 10000 })];
            let b = encode(KIND_RAW, &cols, &preds);
            prop_assert_eq!(decode(KIND_RAW, &b, &preds).unwrap(), cols);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(KIND_RAW, &bytes, &preds3());
        }
    }
}
