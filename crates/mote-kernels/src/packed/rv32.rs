//! Scalar kernel for [`PackedLayout::Rv32`](super::PackedLayout::Rv32), tuned for RV32IMC (no DSP or SIMD
//! instructions: one `MUL` and one `ADD` per multiply-accumulate). Plain Rust: every target runs exactly this
//! code, so it is its own portable twin.
//!
//! **Tile.** 4 rows × 4 output channels: sixteen accumulators, and per `k` four activations and four weights,
//! i.e. 8 loads, 16 `MUL` and 16 `ADD` for 16 MACs (the load-bound peak is 0.4 MACs per instruction; 16
//! accumulators, 5 operands, a product and three pointers are 25 of the 28 registers LLVM allocates, x1 and
//! x5–x31: a 4×5 tile does not fit). Rows come in groups of [`ROWS`]; the last `m % 4` rows run one by one
//! as 1-row tiles.
//!
//! **Activations** are copied once per row group into a panel of `i32`, `panel[k·R + r] = x[r, k]` (zero past
//! `k`), so that one pointer reaches the tile's four rows with immediate offsets (`LW`).
//!
//! **Weights** are int8, four per word, read with `LB`/`LBU` at immediate offsets. Safe Rust can only read a
//! byte of an `i32` word by loading the word and extracting the byte; LLVM narrows that to a byte load only
//! when the word feeds nothing else. So the four bytes of a word are never read by the same loop: the
//! reduction is split into four *quarters* of `Q` word-rows (`Q = ⌈k/4⌉` rounded up to even), and byte lane
//! `l` of word-row `q` holds `w[j, l·Q + q]`; quarter `l` is its own loop, which reads lane `l` of every word.
//! LLVM narrows `w << 24 >> 24` (lane 0) and `w >> 24` (lane 3) to `LB`, and `(w >> 8l) & 0xff` (lanes 1, 2)
//! to `LBU`, not a sign-extended middle byte: lanes 1 and 2 therefore hold `w + 128` (an unsigned byte), and
//! the tile starts from `bias[j] − 128·Σ_{Q ≤ k < 3Q} x[r, k]` (the row sums are taken while filling the panel).
//!
//! **Loop.** Each quarter loop does two `k` per iteration (two word-rows, 80 instructions of loads, `MUL` and
//! `ADD`) plus two pointer increments and a branch: 83 instructions per 32 MACs. Its body has an empty
//! [`black_box`] (an `asm!` with a memory clobber that emits no instruction) after each row of the tile: the
//! loads of the next row cannot move above it, so LLVM's scheduler (which, for an in-order core, otherwise
//! hoists all sixteen `MUL`s of a step above their `ADD`s and then spills half the accumulators) keeps every
//! product next to its `ADD`.
//!
//! **Requantization** per output: `MUL`, `MULH`, the rounding carry, `+ zero point`, a range check and
//! a byte store ([`crate::requant::high_mul`] then the clamp).

use core::hint::black_box;

#[cfg(test)]
use crate::requant::high_mul;

use super::PackedLinear;

/// Output rows per tile (and activation rows per panel).
pub(super) const ROWS: usize = 4;
/// Output channels per tile.
pub(super) const COLS: usize = 4;
/// `k` per iteration of a quarter loop (word-rows per step; `Q` is a multiple of it).
const UNROLL: usize = 2;

/// Word-rows per quarter: `⌈k/4⌉` rounded up to a multiple of [`UNROLL`].
pub(super) const fn quarter_len(k: usize) -> usize {
    k.div_ceil(4).next_multiple_of(UNROLL)
}

/// Words of one tile (four output channels): four biases, `Q` word-rows of four words, four multipliers.
pub(super) const fn tile_words(k: usize) -> usize {
    2 * COLS + COLS * quarter_len(k)
}

/// Scratch words: a panel of `4·Q` activations per row and one row sum per row.
pub(super) const fn scratch_words(k: usize) -> usize {
    ROWS * (4 * quarter_len(k) + 1)
}

/// Fills the Rv32 tiles of `out` from the channel accessors of [`super::pack_linear`] (zero past `n` and `k`).
pub(super) fn pack(
    k: usize,
    weight: &dyn Fn(usize, usize) -> i32,
    bias: &dyn Fn(usize) -> i32,
    mul: &dyn Fn(usize) -> i32,
    out: &mut [i32],
) {
    let q = quarter_len(k);
    for (t, tile) in out.chunks_exact_mut(tile_words(k)).enumerate() {
        let j0 = COLS * t;
        let words = (0..q).flat_map(|row| {
            (0..COLS).map(move |c| {
                // Lanes 0 and 3 are read sign-extended, lanes 1 and 2 zero-extended (hence + 128).
                let byte = |l: usize| {
                    let w = weight(j0 + c, l * q + row);
                    (if l == 1 || l == 2 { w + 128 } else { w }) as u8
                };
                i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
            })
        });
        let head = (0..COLS).map(|c| bias(j0 + c));
        let tail = (0..COLS).map(|c| mul(j0 + c));
        for (slot, v) in tile.iter_mut().zip(head.chain(words).chain(tail)) {
            *slot = v;
        }
    }
}

/// The packed linear layer `x [m,k] -> out [m,n]` for Rv32 weights (arguments already checked by the caller:
/// `x.len() == m·k`, `out.len() == m·n`, `scratch.len() >= scratch_words(k)`).
pub(super) fn linear(x: &[i8], p: &PackedLinear<'_>, m: usize, zero_point: i32, scratch: &mut [i32], out: &mut [i8]) {
    let (n, k) = (p.n, p.k);
    let mut x_rows = x.chunks_exact(k).take(m);
    let mut out_rows = out.chunks_exact_mut(n);
    for _ in 0..m / ROWS {
        group::<ROWS>(&mut x_rows, &mut out_rows, p, zero_point, scratch);
    }
    // The last `m % 4` rows one at a time (a 2-row tile would be 15% faster on them, for 2.3 KiB more code).
    for _ in 0..m % ROWS {
        group::<1>(&mut x_rows, &mut out_rows, p, zero_point, scratch);
    }
}

/// The next `R` rows of `x` and `out`: fills their panel, then runs every tile of `p`.
#[inline(never)]
fn group<'x, 'o, const R: usize>(
    x_rows: &mut impl Iterator<Item = &'x [i8]>,
    out_rows: &mut impl Iterator<Item = &'o mut [i8]>,
    p: &PackedLinear<'_>,
    zero_point: i32,
    scratch: &mut [i32],
) {
    let (n, k, q) = (p.n, p.k, quarter_len(p.k));
    let (panel, rest) = scratch.split_at_mut((4 * q * R).min(scratch.len()));
    let Some(sums) = rest.first_chunk_mut::<R>() else { return };
    for (r, sum) in sums.iter_mut().enumerate() {
        let row = x_rows.next().unwrap_or(&[]);
        *sum = fill_row::<R>(row, q, r, panel);
    }
    let mut outs: [&mut [i8]; R] = [(); R].map(|()| out_rows.next().unwrap_or(&mut []));
    let quarter = q * R;
    for (t, tile) in p.words.chunks_exact(tile_words(k)).enumerate() {
        let Some((bias, rest)) = tile.split_first_chunk::<COLS>() else { return };
        let Some((weights, mul)) = rest.split_last_chunk::<COLS>() else { return };
        let mut acc = [[0i32; COLS]; R];
        for (row, &s) in acc.iter_mut().zip(sums.iter()) {
            for (a, &b) in row.iter_mut().zip(bias) {
                *a = b.wrapping_add(s);
            }
        }
        let mut quarters = panel.chunks_exact(quarter);
        let mut next = || quarters.next().unwrap_or(&[]);
        quarter_loop::<0, R>(&mut acc, next(), weights);
        quarter_loop::<1, R>(&mut acc, next(), weights);
        quarter_loop::<2, R>(&mut acc, next(), weights);
        quarter_loop::<3, R>(&mut acc, next(), weights);
        let j0 = COLS * t;
        if j0 + COLS <= n {
            for (o, row) in outs.iter_mut().zip(acc) {
                if let Some(dst) = o.get_mut(j0..j0 + COLS).and_then(|d| d.first_chunk_mut::<COLS>()) {
                    for ((d, a), &mu) in dst.iter_mut().zip(row).zip(mul) {
                        *d = requant(a, mu, zero_point);
                    }
                }
            }
        } else {
            // A copy made on this path: `&acc` would make the accumulators memory that every barrier of the
            // quarter loops must see stored.
            let copy = acc;
            store_partial(&mut outs, j0, &copy, mul, zero_point);
        }
    }
}

/// Requantizes and stores the columns `j0..` of the last, partial tile.
#[cold]
#[inline(never)]
fn store_partial(outs: &mut [&mut [i8]], j0: usize, acc: &[[i32; COLS]], mul: &[i32; COLS], zero_point: i32) {
    for (o, row) in outs.iter_mut().zip(acc) {
        for ((d, &a), &mu) in o.iter_mut().skip(j0).zip(row).zip(mul) {
            *d = requant(a, mu, zero_point);
        }
    }
}

/// Writes row `r` of an `R`-row panel (`panel[k·R + r] = x[k]`, zero up to `4·q`) and returns the row's
/// correction for the offset lanes, `−128·Σ_{q ≤ k < 3q} x[k]`.
fn fill_row<const R: usize>(x: &[i8], q: usize, r: usize, panel: &mut [i32]) -> i32 {
    let (x_lo, x_rest) = x.split_at(q.min(x.len()));
    let (x_mid, x_hi) = x_rest.split_at((2 * q).min(x_rest.len()));
    let (p_lo, p_rest) = panel.split_at_mut((q * R).min(panel.len()));
    let (p_mid, p_hi) = p_rest.split_at_mut((2 * q * R).min(p_rest.len()));
    put::<R>(p_lo, x_lo, r);
    let sum = put::<R>(p_mid, x_mid, r);
    put::<R>(p_hi, x_hi, r);
    for cell in panel.chunks_exact_mut(R).skip(x.len()) {
        if let Some(c) = cell.get_mut(r) {
            *c = 0;
        }
    }
    sum.wrapping_mul(-128)
}

/// `cells[i·R + r] = xs[i]`; returns `Σ xs`.
#[inline(always)]
fn put<const R: usize>(cells: &mut [i32], xs: &[i8], r: usize) -> i32 {
    let mut sum = 0i32;
    for (cell, &v) in cells.chunks_exact_mut(R).zip(xs) {
        if let Some(c) = cell.get_mut(r) {
            *c = i32::from(v);
        }
        sum = sum.wrapping_add(i32::from(v));
    }
    sum
}

/// Byte lane `L` of a weight word: lanes 0 and 3 signed, lanes 1 and 2 unsigned (stored with + 128).
#[inline(always)]
fn lane<const L: usize>(w: i32) -> i32 {
    match L {
        0 => (w << 24) >> 24,
        1 => (w >> 8) & 0xff,
        2 => (w >> 16) & 0xff,
        _ => w >> 24,
    }
}

/// Accumulates quarter `L` (`panel`: `Q` steps of `R` activations; `weights`: `Q` word-rows) into `acc`.
#[inline(always)]
fn quarter_loop<const L: usize, const R: usize>(acc: &mut [[i32; COLS]; R], panel: &[i32], weights: &[i32]) {
    for (xs, ws) in panel.chunks_exact(R * UNROLL).zip(weights.chunks_exact(COLS * UNROLL)) {
        for (x, w) in xs.chunks_exact(R).zip(ws.chunks_exact(COLS)) {
            if let (Some(x), Some(w)) = (x.first_chunk::<R>(), w.first_chunk::<COLS>()) {
                step::<L, R>(acc, x, w);
            }
        }
    }
}

/// One `k`: `acc[r][c] += x[r] · lane_L(w[c])`, row by row, with an empty barrier after each row.
#[inline(always)]
fn step<const L: usize, const R: usize>(acc: &mut [[i32; COLS]; R], x: &[i32; R], w: &[i32; COLS]) {
    let w = w.map(lane::<L>);
    for (row, &xv) in acc.iter_mut().zip(x) {
        for (a, &wv) in row.iter_mut().zip(&w) {
            *a = a.wrapping_add(xv.wrapping_mul(wv));
        }
        black_box(());
    }
}

/// `clamp(high_mul(acc, mul, zero_point), -128, 127)`, as `MUL`, `MULH`, the rounding carry (bit 31 of the low
/// word), two adds and, for an output in range, one unsigned compare.
#[inline(always)]
fn requant(acc: i32, mul: i32, zero_point: i32) -> i8 {
    let p = i64::from(acc) * i64::from(mul);
    // ⌊(p + 2^31) / 2^32⌋ = hi + carry of (lo + 2^31); the zero point wraps in as in `high_mul`.
    let v = ((p >> 32) as i32).wrapping_add(((p as u32) >> 31) as i32).wrapping_add(zero_point);
    if (v.wrapping_add(128) as u32) < 256 {
        v as i8
    } else {
        (127 ^ (v >> 31)) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;

    #[test]
    fn requant_is_high_mul_clamped() {
        let edges = [i32::MIN, i32::MIN + 1, -(1 << 24), -129, -128, -1, 0, 1, 127, 128, 1 << 24, i32::MAX];
        let mut g = Lcg(3);
        let random = g.vec_i32(300, i32::MIN, i32::MAX);
        for &acc in edges.iter().chain(&random) {
            for &mul in edges.iter().chain(random.iter().take(30)) {
                for zp in [i32::MIN, -128, -3, 0, 5, 127, i32::MAX] {
                    let want = high_mul(acc, mul, zp).max(-128).min(127) as i8;
                    assert_eq!(requant(acc, mul, zp), want, "{acc} {mul} {zp}");
                }
            }
        }
    }
}
