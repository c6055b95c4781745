//! Linear layers whose weights were packed offline into the order a core's fast kernel reads them.
//!
//! `out[i,j] = clamp(zp + floor(((bias[j] + Σ_k (x[i,k] + input_offset)·w[j,k])·mul[j] + 2^31) / 2^32), -128, 127)`,
//! i.e. [`crate::matmul::linear_requant`] with a [`crate::requant::HighMulRequant`]: the packed form folds
//! `input_offset·Σ_k w[j,k]` into the bias (equal modulo 2^32, so the `i32` results are identical).
//!
//! [`PackedLayout::Dsp16`] (Arm Cortex-M4/M7/M33/M55 DSP extension): weights are sign-extended to 16 bits and
//! interleaved so that one `LDM` fetches two output channels × four `k`, matching what `SXTB16` makes of four
//! activations; the inner loop is one `LDM` per operand and eight `SMLAD` (16 MACs) per four `k`, over a
//! 2×2 output tile, and the tile's first `LDM` also loads its four accumulators (the bias pair, twice). The
//! same layout has a portable implementation ([`linear_packed_portable`]) that every other target runs and
//! that the tests compare the assembly against.
//!
//! [`PackedLayout::Mve8`] (Arm Helium, Cortex-M55/M85): int8 weights in 16-byte chunks for `VMLADAVA.S8`
//! (16 MACs into one scalar accumulator) over a 2×4 output tile whose eight accumulators are the eight even
//! general-purpose registers; weights and a 2-row activation panel are read four vectors per `VLDM`, and
//! the tile is requantized in vector registers (`VRMULH`, saturating narrows, one byte store per row).
//!
//! [`PackedLayout::Rv32`] (RV32IMC and other scalar cores): int8 weights four per word in byte lanes that one
//! loop each reads with `LB`/`LBU`, over a 4×4 output tile in plain Rust (one `MUL` and one `ADD` per MAC, 8
//! loads per 16 MACs); the byte lanes are ordered so that LLVM turns every weight read into one byte load.
//! Every target runs the same code.
//!
//! The Dsp16 tile loop also serves layers with other requantizations: Deeploy's `MatMul + RequantShift`
//! ([`linear_packed_requant`]), convolutions with one group over im2col panels ([`conv2d_packed_requant`]), and
//! products of two activations such as attention's `Q·Kᵀ` ([`matmul_packed`], `b` packed at run time). A Dsp16 layer
//! can also be computed in parts of its input columns into `i32` sums (the fused attention kernel's output
//! projection, summed head by head), with the same tile (its own assembly on DSP builds).
//!
//! Alignment: packed words and the scratch are `i32` slices (4-byte aligned); activations and outputs are
//! plain byte slices with no alignment requirement.

use crate::requant::{high_mul, with_scheme, Requant};
use crate::IntElem;
use crate::KernelError;

mod conv;
#[cfg(all(mote_dsp, target_arch = "arm"))]
#[allow(unsafe_code)]
mod dsp;
#[cfg(all(mote_mve, target_arch = "arm"))]
#[allow(unsafe_code)]
mod mve;
mod rv32;

pub use conv::conv2d_packed_requant;

/// Output rows per activation panel (the tile height).
pub const TILE_ROWS: usize = 2;
/// Output channels per packed weight block (the tile width).
pub const TILE_COLS: usize = 2;

/// Memory layout of packed linear weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackedLayout {
    /// 16-bit weights for `SMLAD`: per pair of output channels `[bias₀, bias₁, bias₀, bias₁, ⌈k/4⌉ × (w₀(0,2),
    /// w₀(1,3), w₁(0,2), w₁(1,3)), mul₀, mul₁]`, where `wⱼ(a,b)` holds `w[j,4q+a]` in the low and `w[j,4q+b]` in
    /// the high half-word (zero past `k` and for the padding channel of an odd `n`).
    Dsp16,
    /// Int8 weights for Helium `VMLADAVA.S8`: per tile of four output channels `j₀..j₀+3`, `⌈k/16⌉` chunks of
    /// 16 words `[w₀(c), w₁(c), w₂(c), w₃(c)]`, where `wⱼ(c)` is the four little-endian words holding the bytes
    /// `w[j₀+j, 16c..16c+16]`, then `[bias₀..bias₃, mul₀..mul₃]` (weights zero past `k`, and weights, bias and
    /// multiplier zero for the padding channels past `n`).
    Mve8,
    /// Int8 weights for scalar RV32IMC (one `MUL` and one `ADD` per MAC, read with `LB`/`LBU`): per tile of
    /// four output channels `j₀..j₀+3`, `[bias₀..bias₃, Q × (w(q,0), w(q,1), w(q,2), w(q,3)), mul₀..mul₃]` with
    /// `Q = ⌈k/4⌉` rounded up to even, where byte `l` (little-endian) of `w(q,c)` is `w[j₀+c, l·Q + q]` for
    /// `l` = 0 and 3 and `w[j₀+c, l·Q + q] + 128` (as an unsigned byte) for `l` = 1 and 2 (weights zero past `k`
    /// and for the padding channels past `n`, whose bias and multiplier are zero too).
    Rv32,
}

/// The layout this build's fastest kernel reads: [`PackedLayout::Mve8`] on Helium builds (Cortex-M55/M85),
/// [`PackedLayout::Rv32`] on 32-bit RISC-V builds, else [`PackedLayout::Dsp16`]; other builds run any portably.
#[cfg(mote_mve)]
pub const NATIVE_LAYOUT: PackedLayout = PackedLayout::Mve8;
/// The layout this build's fastest kernel reads: [`PackedLayout::Mve8`] on Helium builds (Cortex-M55/M85),
/// [`PackedLayout::Rv32`] on 32-bit RISC-V builds, else [`PackedLayout::Dsp16`]; other builds run any portably.
#[cfg(all(target_arch = "riscv32", not(mote_mve)))]
pub const NATIVE_LAYOUT: PackedLayout = PackedLayout::Rv32;
/// The layout this build's fastest kernel reads: [`PackedLayout::Mve8`] on Helium builds (Cortex-M55/M85),
/// [`PackedLayout::Rv32`] on 32-bit RISC-V builds, else [`PackedLayout::Dsp16`]; other builds run any portably.
#[cfg(not(any(mote_mve, target_arch = "riscv32")))]
pub const NATIVE_LAYOUT: PackedLayout = PackedLayout::Dsp16;

impl PackedLayout {
    /// Number of `i32` words of a packed `[n, k]` layer.
    pub const fn words(self, n: usize, k: usize) -> usize {
        match self {
            PackedLayout::Dsp16 => n.div_ceil(TILE_COLS) * block_words(k),
            PackedLayout::Mve8 => n.div_ceil(MVE_COLS) * mve_tile_words(k),
            PackedLayout::Rv32 => n.div_ceil(rv32::COLS) * rv32::tile_words(k),
        }
    }

    /// Number of `i32` words of scratch [`linear_packed`] needs for reduction length `k`.
    pub const fn scratch_words(self, k: usize) -> usize {
        match self {
            PackedLayout::Dsp16 => dsp_panel_words(k),
            PackedLayout::Mve8 => 8 * k.div_ceil(MVE_CHUNK),
            PackedLayout::Rv32 => rv32::scratch_words(k),
        }
    }
}

/// Words of one Dsp16 block (two output channels): bias pair twice, `⌈k/4⌉` quads of 4 words, multiplier pair.
const fn block_words(k: usize) -> usize {
    6 + 4 * k.div_ceil(4)
}

/// Quads per unrolled chunk of the Dsp16 assembly, whose panel has a jump word after quad 0, after every
/// `DSP_CHUNK`-th quad and after the last quad.
const DSP_CHUNK: usize = 16;

/// Scratch words of a Dsp16 panel: `4·⌈k/4⌉` activation words and the assembly's jump words.
const fn dsp_panel_words(k: usize) -> usize {
    let quads = k.div_ceil(4);
    4 * quads + quads.saturating_sub(1).div_ceil(DSP_CHUNK) + 1
}

/// Output channels per Mve8 tile.
const MVE_COLS: usize = 4;
/// Reduction elements per Mve8 chunk (one 16-byte vector).
const MVE_CHUNK: usize = 16;

/// Words of one Mve8 tile (four output channels): 16 words per chunk, then four biases and four multipliers.
const fn mve_tile_words(k: usize) -> usize {
    16 * k.div_ceil(MVE_CHUNK) + 2 * MVE_COLS
}

/// A packed `[n, k]` linear layer with its bias and per-channel `HighMul` multipliers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLinear<'a> {
    layout: PackedLayout,
    n: usize,
    k: usize,
    words: &'a [i32],
}

impl<'a> PackedLinear<'a> {
    /// Wraps words made by [`pack_linear`]. Errors: `n` or `k` zero, or a length other than `layout.words(n, k)`.
    pub fn new(layout: PackedLayout, n: usize, k: usize, words: &'a [i32]) -> Result<Self, KernelError> {
        if n == 0 || k == 0 || words.len() != layout.words(n, k) {
            return Err(KernelError::ShapeMismatch);
        }
        Ok(Self { layout, n, k, words })
    }

    /// The layer of the first `n` output channels (`1..=self.n()`): the same words up to the tile holding channel
    /// `n - 1`.
    pub fn first_outputs(&self, n: usize) -> Result<Self, KernelError> {
        if n > self.n {
            return Err(KernelError::ShapeMismatch);
        }
        let words = self.words.get(..self.layout.words(n, self.k)).ok_or(KernelError::ShapeMismatch)?;
        Self::new(self.layout, n, self.k, words)
    }

    /// The layer of output channels `start..start + n`, `start` a multiple of the layout's tile width (2 for
    /// Dsp16, 4 otherwise): the words of the tiles holding them.
    pub fn outputs(&self, start: usize, n: usize) -> Result<Self, KernelError> {
        let tile = match self.layout {
            PackedLayout::Dsp16 => TILE_COLS,
            PackedLayout::Mve8 => MVE_COLS,
            PackedLayout::Rv32 => rv32::COLS,
        };
        if start % tile != 0 || start.checked_add(n).is_none_or(|end| end > self.n) {
            return Err(KernelError::ShapeMismatch);
        }
        let from = self.layout.words(start, self.k);
        let words = self.words.get(from..from + self.layout.words(n, self.k)).ok_or(KernelError::ShapeMismatch)?;
        Self::new(self.layout, n, self.k, words)
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Layout of the words.
    pub fn layout(&self) -> PackedLayout {
        self.layout
    }

    /// Words of block `t` (output channels `2t`, `2t+1`).
    fn block(&self, t: usize) -> &'a [i32] {
        let w = block_words(self.k);
        self.words.get(t * w..(t + 1) * w).unwrap_or(&[])
    }
}

/// Two `i16` in one word: `lo` in bits 0..16, `hi` in bits 16..32 (what `SXTB16` produces).
#[inline]
const fn pair(lo: i32, hi: i32) -> i32 {
    ((lo as u32 & 0xffff) | ((hi as u32) << 16)) as i32
}

/// The Dsp16 quad at column `c` of rows (or channels) `a`, `b` of `at`: `[a(c, c+2), a(c+1, c+3), b(c, c+2),
/// b(c+1, c+3)]` as half-word pairs, the order one `SMLAD` pair of the tile reads (weights and panels alike).
#[inline(always)]
fn dsp16_quad(at: impl Fn(usize, usize) -> i32, (a, b): (usize, usize), c: usize) -> [i32; 4] {
    [
        pair(at(a, c), at(a, c + 2)),
        pair(at(a, c + 1), at(a, c + 3)),
        pair(at(b, c), at(b, c + 2)),
        pair(at(b, c + 1), at(b, c + 3)),
    ]
}

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)` in wrapping `i32`: Arm `SMLAD` (the instruction itself on DSP builds).
#[cfg(all(mote_dsp, target_arch = "arm"))]
#[inline(always)]
fn smlad(acc: i32, a: i32, b: i32) -> i32 {
    dsp::smlad(acc, a, b)
}

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)` in wrapping `i32`: Arm `SMLAD`.
#[cfg(not(all(mote_dsp, target_arch = "arm")))]
#[inline]
fn smlad(acc: i32, a: i32, b: i32) -> i32 {
    let (al, ah) = (i32::from(a as i16), a >> 16);
    let (bl, bh) = (i32::from(b as i16), b >> 16);
    acc.wrapping_add(al.wrapping_mul(bl)).wrapping_add(ah.wrapping_mul(bh))
}

/// Bytes 0 and 2 of `w` sign-extended into the low and high half-words: Arm `SXTB16` (the instruction itself on
/// DSP builds).
#[cfg(all(mote_dsp, target_arch = "arm"))]
#[inline(always)]
fn sxtb16(w: i32) -> i32 {
    dsp::sxtb16(w)
}

/// Bytes 0 and 2 of `w` sign-extended into the low and high half-words: Arm `SXTB16`.
#[cfg(not(all(mote_dsp, target_arch = "arm")))]
#[inline]
fn sxtb16(w: i32) -> i32 {
    pair(i32::from(w as i8), i32::from((w >> 16) as i8))
}

/// A linear layer before packing: `w [n,k]` (row j = output channel), `bias [n]`, `HighMul` multipliers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearWeights<'a> {
    /// Weights `[n, k]`, k contiguous.
    pub w: &'a [i8],
    /// Optional bias, one per output channel.
    pub bias: Option<&'a [i32]>,
    /// Added to every activation (the negated input zero point); folded into the bias.
    pub input_offset: i32,
    /// `HighMul` multipliers, length 1 or n.
    pub mul: &'a [i32],
    /// Output channels.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
}

/// Packs `src` into `out` (`layout.words(n, k)` words).
///
/// Errors: lengths that disagree with `n`, `k` or `layout.words(n, k)`.
pub fn pack_linear(layout: PackedLayout, src: &LinearWeights<'_>, out: &mut [i32]) -> Result<(), KernelError> {
    let LinearWeights { w, bias, input_offset, mul, n, k } = *src;
    let bias_ok = bias.is_none_or(|b| b.len() == n);
    let mul_ok = mul.len() == 1 || mul.len() == n;
    if n == 0 || k == 0 || w.len() != n * k || !bias_ok || !mul_ok || out.len() != layout.words(n, k) {
        return Err(KernelError::ShapeMismatch);
    }
    let weight = |j: usize, c: usize| -> i32 {
        if j < n && c < k {
            w.get(j * k + c).map_or(0, |&v| i32::from(v))
        } else {
            0
        }
    };
    let folded_bias = |j: usize| -> i32 {
        if j >= n {
            return 0;
        }
        let sum = (0..k).fold(0i32, |s, c| s.wrapping_add(weight(j, c)));
        let b = bias.and_then(|b| b.get(j)).copied().unwrap_or(0);
        b.wrapping_add(input_offset.wrapping_mul(sum))
    };
    let multiplier = |j: usize| -> i32 {
        match mul {
            [m] if j < n => *m,
            _ => mul.get(j).copied().unwrap_or(0),
        }
    };
    if layout == PackedLayout::Mve8 {
        pack_mve8(k, &weight, &folded_bias, &multiplier, out);
        return Ok(());
    }
    if layout == PackedLayout::Rv32 {
        rv32::pack(k, &weight, &folded_bias, &multiplier, out);
        return Ok(());
    }
    pack_dsp16(k, weight, folded_bias, multiplier, out);
    Ok(())
}

/// Fills the Dsp16 blocks of `out` from channel accessors (weights as `i16`; zero past `n` and `k`). Generic, so
/// that the accessors inline: [`matmul_packed`] runs this on the MCU for every `b`.
fn pack_dsp16(
    k: usize,
    weight: impl Fn(usize, usize) -> i32,
    bias: impl Fn(usize) -> i32,
    mul: impl Fn(usize) -> i32,
    out: &mut [i32],
) {
    let quads = k.div_ceil(4);
    for (t, block) in out.chunks_exact_mut(block_words(k)).enumerate() {
        let (j0, j1) = (2 * t, 2 * t + 1);
        let (b0, b1) = (bias(j0), bias(j1));
        let (head, rest) = block.split_at_mut(4.min(block.len()));
        for (slot, v) in head.iter_mut().zip([b0, b1, b0, b1]) {
            *slot = v;
        }
        let (body, tail) = rest.split_at_mut((4 * quads).min(rest.len()));
        for (q, quad) in body.chunks_exact_mut(4).enumerate() {
            quad.iter_mut().zip(dsp16_quad(&weight, (j0, j1), 4 * q)).for_each(|(slot, v)| *slot = v);
        }
        for (slot, v) in tail.iter_mut().zip([mul(j0), mul(j1)]) {
            *slot = v;
        }
    }
}

/// Packs an activation matrix as the Dsp16 weights of a product `(a + a_offset)·(b + b_offset)` (`offsets` =
/// `(a_offset, b_offset)`): weight `(j, c)` is `b[c, j] + b_offset` of `b [k, n]` (of `b [n, k]`, i.e. `b[j, c]`,
/// when `TRANSPOSED`), bias `a_offset·Σ_c weight(j, c)`, multiplier `mul` (zero for the padding channel).
/// The words are those [`pack_dsp16`] writes from these accessors; this runs on the MCU for every key and value
/// block, so each column is read once in order and packed a quad at a time, its sum taken on the way.
// Not inlined: inlined into its callers it compiles to more instructions per element on Cortex-M (EEGFormer-shaped
// block, values: 88 K more of 7.1 M).
#[inline(never)]
pub(crate) fn pack_activations<const TRANSPOSED: bool>(
    b: &[i8],
    (k, n): (usize, usize),
    (a_offset, b_offset): (i32, i32),
    mul: i32,
    out: &mut [i32],
) {
    let quads = k.div_ceil(4);
    for (t, block) in out.chunks_exact_mut(block_words(k)).enumerate() {
        let (head, rest) = block.split_at_mut(4.min(block.len()));
        let (body, tail) = rest.split_at_mut((4 * quads).min(rest.len()));
        let mut bias = [0i32; 2];
        for (lane, (j, bias)) in [2 * t, 2 * t + 1].into_iter().zip(&mut bias).enumerate() {
            let mut slots = body.chunks_exact_mut(4);
            let mut sum = 0i32;
            let offset = |v: i8| i32::from(v) + b_offset;
            // Whole quads straight from the column, then the last quad padded with zeros past k.
            let tail: [i32; 4] = match j < n {
                false => [0; 4],
                true if TRANSPOSED => {
                    let mut column = b.get(j * k..(j + 1) * k).unwrap_or(&[]).chunks_exact(4);
                    // The column first: `zip` polls it first and takes no quad once it is done.
                    for (&[x0, x1, x2, x3], quad) in
                        (&mut column).filter_map(|x| <&[i8; 4]>::try_from(x).ok()).zip(&mut slots)
                    {
                        sum = sum.wrapping_add(write_quad(quad, lane, [x0, x1, x2, x3].map(offset)));
                    }
                    let rest = column.remainder();
                    core::array::from_fn(|i| rest.get(i).map_or(0, |&v| offset(v)))
                }
                true => {
                    let mut rows = b.chunks_exact(4 * n);
                    for (r, quad) in (&mut rows).zip(&mut slots) {
                        let x: [i32; 4] = core::array::from_fn(|i| r.get(i * n + j).map_or(0, |&v| offset(v)));
                        sum = sum.wrapping_add(write_quad(quad, lane, x));
                    }
                    let rest = rows.remainder();
                    core::array::from_fn(|i| rest.get(i * n + j).map_or(0, |&v| offset(v)))
                }
            };
            for quad in slots {
                sum = sum.wrapping_add(write_quad(quad, lane, tail));
            }
            *bias = a_offset.wrapping_mul(sum);
        }
        for (slot, v) in head.iter_mut().zip([bias[0], bias[1], bias[0], bias[1]]) {
            *slot = v;
        }
        for (slot, j) in tail.iter_mut().zip([2 * t, 2 * t + 1]) {
            *slot = if j < n { mul } else { 0 };
        }
    }
}

/// Writes four values of a column as the half-word pairs of channel `lane` (0 or 1) of a Dsp16 quad (see
/// [`dsp16_quad`]); returns their sum.
#[inline(always)]
fn write_quad(quad: &mut [i32], lane: usize, v: [i32; 4]) -> i32 {
    if let Some([lo, hi]) = quad.get_mut(2 * lane..2 * lane + 2) {
        *lo = pair(v[0], v[2]);
        *hi = pair(v[1], v[3]);
    }
    v[0] + v[1] + v[2] + v[3]
}

/// Fills the Mve8 tiles of `out` from the channel accessors of [`pack_linear`] (zero past `n` and `k`).
fn pack_mve8(
    k: usize,
    weight: &dyn Fn(usize, usize) -> i32,
    bias: &dyn Fn(usize) -> i32,
    mul: &dyn Fn(usize) -> i32,
    out: &mut [i32],
) {
    for (t, tile) in out.chunks_exact_mut(mve_tile_words(k)).enumerate() {
        let j0 = MVE_COLS * t;
        let weights = (0..k.div_ceil(MVE_CHUNK)).flat_map(|c| {
            (0..MVE_COLS).flat_map(move |j| {
                (0..4).map(move |q| {
                    let byte = |b: usize| weight(j0 + j, MVE_CHUNK * c + 4 * q + b) as u8;
                    i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
                })
            })
        });
        let tail = (0..MVE_COLS).map(|j| bias(j0 + j)).chain((0..MVE_COLS).map(|j| mul(j0 + j)));
        for (slot, v) in tile.iter_mut().zip(weights.chain(tail)) {
            *slot = v;
        }
    }
}

/// [`linear_packed_portable`] for [`PackedLayout::Mve8`] (arguments already checked): the same integers as the
/// Helium kernel, a row against a tile at a time, each chunk's 16 products summed before the wrapping add.
fn linear_mve8_portable(x: &[i8], p: &PackedLinear<'_>, m: usize, zero_point: i32, out: &mut [i8]) {
    let (n, k) = (p.n, p.k);
    let tile_words = mve_tile_words(k);
    for (t, tile) in p.words.chunks_exact(tile_words).enumerate() {
        let (weights, tail) = tile.split_at(tile_words - 2 * MVE_COLS);
        let (bias, mul) = tail.split_at(MVE_COLS);
        for (i, row) in x.chunks_exact(k).take(m).enumerate() {
            let mut acc = [0i32; MVE_COLS];
            acc.iter_mut().zip(bias).for_each(|(a, &b)| *a = b);
            for (xs, chunk) in row.chunks(MVE_CHUNK).zip(weights.chunks_exact(4 * MVE_COLS)) {
                for (a, ws) in acc.iter_mut().zip(chunk.chunks_exact(4)) {
                    // At most 16 products of magnitude <= 2^14: no overflow.
                    let mut dot = 0i32;
                    for (xq, w) in xs.chunks(4).zip(ws) {
                        for (&xv, wv) in xq.iter().zip(w.to_le_bytes()) {
                            dot += i32::from(xv) * i32::from(wv as i8);
                        }
                    }
                    *a = a.wrapping_add(dot);
                }
            }
            let row_out = out.get_mut(i * n..(i + 1) * n).unwrap_or(&mut []);
            let cols = row_out.iter_mut().skip(MVE_COLS * t).take(MVE_COLS);
            for ((o, &a), &mu) in cols.zip(&acc).zip(mul) {
                *o = high_mul(a, mu, zero_point).max(-128).min(127) as i8;
            }
        }
    }
}

/// Checks the arguments of [`linear_packed`].
fn check(x: &[i8], p: &PackedLinear<'_>, m: usize, scratch: &[i32], out: &[i8]) -> Result<(), KernelError> {
    let (n, k) = (p.n, p.k);
    let mk = m.checked_mul(k).ok_or(KernelError::ShapeMismatch)?;
    let mn = m.checked_mul(n).ok_or(KernelError::ShapeMismatch)?;
    if m == 0 || x.len() != mk || out.len() != mn || scratch.len() < p.layout.scratch_words(k) {
        return Err(KernelError::ShapeMismatch);
    }
    Ok(())
}

/// Writes the activation panel of rows `r0`, `r1` of `x [m,k]` into `panel`: per quad `q`,
/// `[x₀(0,2), x₀(1,3), x₁(0,2), x₁(1,3)]` (zero past `k`).
fn fill_panel_portable(x: &[i8], k: usize, r0: usize, r1: usize, panel: &mut [i32]) {
    let row = |r: usize| x.get(r * k..(r + 1) * k).unwrap_or(&[]);
    // Four activations as one word (zero past `k`), widened by `SXTB16` as the assembly does: one load and two
    // `SXTB16` per quad and row on DSP builds instead of four byte loads and two packs.
    let word = |c: &[i8]| -> i32 {
        let b = |i: usize| c.get(i).map_or(0, |&v| v as u8);
        match *c {
            [b0, b1, b2, b3] => i32::from_le_bytes([b0 as u8, b1 as u8, b2 as u8, b3 as u8]),
            _ => i32::from_le_bytes([b(0), b(1), b(2), b(3)]),
        }
    };
    for (quad, (ca, cb)) in panel.chunks_exact_mut(4).zip(row(r0).chunks(4).zip(row(r1).chunks(4))) {
        let (wa, wb) = (word(ca), word(cb));
        if let [q0, q1, q2, q3] = quad {
            (*q0, *q1) = (sxtb16(wa), sxtb16(wa.rotate_right(8)));
            (*q2, *q3) = (sxtb16(wb), sxtb16(wb.rotate_right(8)));
        }
    }
}

/// The 2×2 accumulators `[row0·col0, row0·col1, row1·col0, row1·col1]` of one block and panel.
fn tile_portable(panel: &[i32], block: &[i32], quads: usize) -> [i32; 4] {
    let (b0, b1) = (block.first().copied().unwrap_or(0), block.get(1).copied().unwrap_or(0));
    smlad_tile([b0, b1, b0, b1], panel, block.get(4..4 + 4 * quads).unwrap_or(&[]))
}

/// `acc` plus the 2×2 products of the panel quads and the weight quads (a block's, from some quad on).
#[inline(always)]
fn smlad_tile(mut acc: [i32; 4], panel: &[i32], weights: &[i32]) -> [i32; 4] {
    for (a, w) in panel.chunks_exact(4).zip(weights.chunks_exact(4)) {
        if let ([a0, a1, a2, a3], [w0, w1, w2, w3]) = (a, w) {
            acc[0] = smlad(smlad(acc[0], *a0, *w0), *a1, *w1);
            acc[1] = smlad(smlad(acc[1], *a0, *w2), *a1, *w3);
            acc[2] = smlad(smlad(acc[2], *a2, *w0), *a3, *w1);
            acc[3] = smlad(smlad(acc[3], *a2, *w2), *a3, *w3);
        }
    }
    acc
}

/// Requantizes and stores the columns `j0..j0+cols` of rows `r0`, `r1` from a 2×2 accumulator tile.
fn store_tile(acc: [i32; 4], block: &[i32], zp: i32, n: usize, (r0, r1): (usize, usize), j0: usize, out: &mut [i8]) {
    let tail = block.len().saturating_sub(2);
    let mul = [block.get(tail).copied().unwrap_or(0), block.get(tail + 1).copied().unwrap_or(0)];
    for (idx, &a) in acc.iter().enumerate() {
        let (r, c) = if idx < 2 { (r0, idx) } else { (r1, idx - 2) };
        if j0 + c < n {
            if let Some(o) = out.get_mut(r * n + j0 + c) {
                *o = high_mul(a, mul.get(c).copied().unwrap_or(0), zp).max(-128).min(127) as i8;
            }
        }
    }
}

/// Rows `(r0, r1)` of each panel: pairs, and the last row twice when `m` is odd (its outputs are written twice).
fn row_pairs(m: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..m.div_ceil(TILE_ROWS)).map(move |p| (2 * p, (2 * p + 1).min(m - 1)))
}

/// The packed linear layer `x [m,k] -> out [m,n]` in portable Rust (see the module doc for the arithmetic).
///
/// `scratch` holds at least `layout.scratch_words(k)` words. Errors: lengths that disagree with `m`, `n`, `k`.
pub fn linear_packed_portable(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    zero_point: i32,
    scratch: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    check(x, p, m, scratch, out)?;
    if p.layout == PackedLayout::Mve8 {
        linear_mve8_portable(x, p, m, zero_point, out);
        return Ok(());
    }
    if p.layout == PackedLayout::Rv32 {
        rv32::linear(x, p, m, zero_point, scratch, out);
        return Ok(());
    }
    let quads = p.k.div_ceil(4);
    let panel = scratch.get_mut(..4 * quads).ok_or(KernelError::ShapeMismatch)?;
    for rows in row_pairs(m) {
        fill_panel_portable(x, p.k, rows.0, rows.1, panel);
        for t in 0..p.n.div_ceil(TILE_COLS) {
            let block = p.block(t);
            let acc = tile_portable(panel, block, quads);
            store_tile(acc, block, zero_point, p.n, rows, TILE_COLS * t, out);
        }
    }
    Ok(())
}

/// The packed linear layer `x [m,k] -> out [m,n]` with the fastest kernel this build has for `p`'s layout
/// (for Dsp16 Arm DSP assembly on Cortex-M4/M7/M33/M55 builds, for Mve8 Helium assembly on Cortex-M55/M85
/// builds, else [`linear_packed_portable`], which for Rv32 is the one Rv32 kernel); all give identical integers.
///
/// `scratch` holds at least `layout.scratch_words(k)` words. Errors: lengths that disagree with `m`, `n`, `k`.
// Always inlined, so that a call with a constant layout (as generated code makes) links only that layout's kernel.
#[inline(always)]
pub fn linear_packed(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    zero_point: i32,
    scratch: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    if p.layout == PackedLayout::Mve8 {
        #[cfg(all(mote_mve, target_arch = "arm"))]
        return mve::linear(x, p, m, zero_point, scratch, out);
        #[cfg(not(all(mote_mve, target_arch = "arm")))]
        return linear_packed_portable(x, p, m, zero_point, scratch, out);
    }
    if p.layout == PackedLayout::Rv32 {
        check(x, p, m, scratch, out)?;
        rv32::linear(x, p, m, zero_point, scratch, out);
        return Ok(());
    }
    #[cfg(all(mote_dsp, target_arch = "arm"))]
    {
        check(x, p, m, scratch, out)?;
        dsp::linear_packed(x, p, m, zero_point, scratch, out)
    }
    #[cfg(not(all(mote_dsp, target_arch = "arm")))]
    linear_packed_portable(x, p, m, zero_point, scratch, out)
}

/// A Dsp16-packed linear layer `x [m,k] -> out [m,n]` with any requantization of the accumulators
/// `bias[j] + Σ_k x[i,k]·w[j,k]` (per tensor, or per output channel `j`): [`crate::matmul::linear_requant`] with
/// `input_offset` folded into the packed bias; the packed multipliers are not used.
///
/// For Deeploy `MatMul [+ Add] + RequantShift` layers: `SMLAD` accumulation, then `rq` per output in Rust. On DSP
/// builds the sums come from the assembly routine of the attention kernel's output projection, in parts of 64
/// input and 128 output columns (1.4 KB of stack); ICCT's linear layers take 0.8 instructions per MAC instead of
/// 1.5. `scratch` holds at least `Dsp16.scratch_words(k)` words.
/// Errors: another layout (`InvalidParam`), lengths that disagree with `m`, `n`, `k`, bounds that do not fit `T`.
pub fn linear_packed_requant<T: IntElem>(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    rq: &Requant<'_>,
    scratch: &mut [i32],
    out: &mut [T],
) -> Result<(), KernelError> {
    if p.layout != PackedLayout::Dsp16 {
        return Err(KernelError::InvalidParam);
    }
    rq.check::<T>(p.n)?;
    let (n, k) = (p.n, p.k);
    let mk = m.checked_mul(k).ok_or(KernelError::ShapeMismatch)?;
    let mn = m.checked_mul(n).ok_or(KernelError::ShapeMismatch)?;
    let quads = k.div_ceil(4);
    if m == 0 || x.len() != mk || out.len() != mn || scratch.len() < 4 * quads {
        return Err(KernelError::ShapeMismatch);
    }
    // DSP builds: the `SMLAD` routine widens each part into a panel of its own (on the stack).
    #[cfg(all(mote_dsp, target_arch = "arm"))]
    {
        dsp16_requant_parts(x, p, m, rq, out)
    }
    #[cfg(not(all(mote_dsp, target_arch = "arm")))]
    {
        let panel = scratch.get_mut(..4 * quads).ok_or(KernelError::ShapeMismatch)?;
        with_scheme!(rq, |apply| {
            for (r0, r1) in row_pairs(m) {
                fill_panel_portable(x, k, r0, r1, panel);
                for t in 0..n.div_ceil(TILE_COLS) {
                    let acc = tile_portable(panel, p.block(t), quads);
                    for (idx, &a) in acc.iter().enumerate() {
                        let (r, j) = (if idx < 2 { r0 } else { r1 }, TILE_COLS * t + idx % 2);
                        if j < n {
                            if let Some(o) = out.get_mut(r * n + j) {
                                *o = T::from_i32_sat(apply(a, j));
                            }
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

/// Input columns per part of [`dsp16_requant_parts`]: the most the `SMLAD` routine of [`dsp16_acc_add`] takes.
#[cfg(all(mote_dsp, target_arch = "arm"))]
const PART_COLS: usize = 64;
/// Output columns per part of [`dsp16_requant_parts`] (its sums live on the stack: 1 KB).
#[cfg(all(mote_dsp, target_arch = "arm"))]
const PART_OUTPUTS: usize = 128;

/// [`linear_packed_requant`] on DSP builds: per pair of rows and part of at most [`PART_OUTPUTS`] outputs, the
/// `i32` sums by the `SMLAD` routine of [`dsp16_acc_add`] over parts of [`PART_COLS`] input columns (copied
/// contiguous), then `rq` in Rust: the same wrapping sums as the portable tile, so the same outputs.
#[cfg(all(mote_dsp, target_arch = "arm"))]
fn dsp16_requant_parts<T: IntElem>(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    let (n, k) = (p.n, p.k);
    let mut part = [0i8; TILE_ROWS * PART_COLS];
    let mut sums = [0i32; TILE_ROWS * PART_OUTPUTS];
    let mut panel = [0i32; dsp16_part_panel_words(PART_COLS)];
    let per_tensor = match rq {
        Requant::Shift(r) if r.channels() == 1 => Some(r.channel(0)),
        _ => None,
    };
    with_scheme!(rq, |apply| {
        for (r0, r1) in row_pairs(m) {
            let rows = if r1 == r0 { 1 } else { 2 };
            for j0 in (0..n).step_by(PART_OUTPUTS) {
                let width = PART_OUTPUTS.min(n - j0);
                let layer = p.outputs(j0, width)?;
                let acc = sums.get_mut(..rows * width).ok_or(KernelError::ShapeMismatch)?;
                dsp16_acc_init(&layer, rows, acc)?;
                for c0 in (0..k).step_by(PART_COLS) {
                    let cols = PART_COLS.min(k - c0);
                    for r in 0..rows {
                        let src =
                            x.get((r0 + r) * k + c0..(r0 + r) * k + c0 + cols).ok_or(KernelError::ShapeMismatch)?;
                        part.get_mut(r * cols..(r + 1) * cols).ok_or(KernelError::ShapeMismatch)?.copy_from_slice(src);
                    }
                    let xs = part.get(..rows * cols).ok_or(KernelError::ShapeMismatch)?;
                    dsp16_acc_add(xs, (c0, cols), &layer, rows, &mut panel, acc)?;
                }
                for (r, row) in acc.chunks_exact(width).enumerate() {
                    let o =
                        out.get_mut((r0 + r) * n + j0..(r0 + r) * n + j0 + width).ok_or(KernelError::ShapeMismatch)?;
                    match &per_tensor {
                        // Deeploy's usual case: the parameters read once.
                        Some(f) => o.iter_mut().zip(row).for_each(|(slot, &a)| *slot = T::from_i32_sat(f(a))),
                        None => o.iter_mut().zip(row).enumerate().for_each(|(j, (slot, &a))| {
                            *slot = T::from_i32_sat(apply(a, j0 + j));
                        }),
                    }
                }
            }
        }
    });
    Ok(())
}

/// Words of the panel of [`dsp16_acc_add`] for parts of `k` columns (whatever column they start at).
pub(crate) const fn dsp16_part_panel_words(k: usize) -> usize {
    4 * (k + 3).div_ceil(4)
}

/// Sets `acc [m, n]` to the bias of the [`PackedLayout::Dsp16`] layer `p`: the start of its product in parts.
///
/// A product in parts (the attention kernel's output projection, one head's columns at a time): this, then
/// [`dsp16_acc_add`] for each part of the columns, then [`dsp16_acc_store`]. The `i32` sums wrap like those of
/// [`linear_packed`], only in another order, so the outputs are identical. Errors: another layout, lengths that
/// disagree with `m` and `n`.
pub(crate) fn dsp16_acc_init(p: &PackedLinear<'_>, m: usize, acc: &mut [i32]) -> Result<(), KernelError> {
    let (n, bw) = (p.n, block_words(p.k));
    if p.layout != PackedLayout::Dsp16 || Some(acc.len()) != m.checked_mul(n) {
        return Err(KernelError::ShapeMismatch);
    }
    for row in acc.chunks_exact_mut(n) {
        let (mut a2, mut blocks) = (row.chunks_exact_mut(TILE_COLS), p.words.chunks_exact(bw));
        for (a, block) in a2.by_ref().zip(blocks.by_ref()) {
            if let ([a0, a1], [b0, b1, ..]) = (a, block) {
                (*a0, *a1) = (*b0, *b1);
            }
        }
        // An odd last column.
        if let ([a0], Some([b0, ..])) = (a2.into_remainder(), blocks.next()) {
            *a0 = *b0;
        }
    }
    Ok(())
}

/// Adds the part `x [m, k]` (columns `c0..c0 + k` of the layer's input) to `acc [m, n]`:
/// `acc[i, j] += Σ_c x[i, c]·w[j, c0 + c]`, on a panel of at least [`dsp16_part_panel_words`]`(k)` words.
///
/// The 2×2 `SMLAD` tile of [`linear_packed_portable`] over the quads the part touches (assembly on DSP builds);
/// columns of a boundary quad outside the part are zero in the panel. Errors: another layout, columns past the
/// layer's `k`, lengths that disagree with `m`, `n` and `k`.
pub(crate) fn dsp16_acc_add(
    x: &[i8],
    (c0, k): (usize, usize),
    p: &PackedLinear<'_>,
    m: usize,
    panel: &mut [i32],
    acc: &mut [i32],
) -> Result<(), KernelError> {
    let n = p.n;
    let ok = p.layout == PackedLayout::Dsp16
        && k > 0
        && c0.checked_add(k).is_some_and(|end| end <= p.k)
        && Some(x.len()) == m.checked_mul(k)
        && Some(acc.len()) == m.checked_mul(n);
    if !ok {
        return Err(KernelError::ShapeMismatch);
    }
    let quads = (c0 / 4, (c0 + k).div_ceil(4));
    let panel = panel.get_mut(..4 * (quads.1 - quads.0)).ok_or(KernelError::ShapeMismatch)?;
    // DSP builds: the blocks of two real columns in assembly, which widens rows of whole quads itself (one call for
    // all pairs, one for a lone last row); what is left (an odd last column, every tile on other builds, all of a
    // part of more than 16 quads) in Rust.
    let tiles = n.div_ceil(TILE_COLS);
    #[cfg(all(mote_dsp, target_arch = "arm"))]
    let whole = c0 % 4 == 0 && k % 4 == 0;
    #[cfg(all(mote_dsp, target_arch = "arm"))]
    let (pairs_done, lone_done) = {
        use dsp::{acc_pairs, AccRows};
        let last = m.saturating_sub(1);
        match (whole, m / 2, m % 2) {
            (false, ..) => (0, 0),
            (true, 0, _) => (tiles, acc_pairs(Some(x), panel, p, quads, AccRows::Lone, acc)),
            (true, pairs, 0) => (acc_pairs(Some(x), panel, p, quads, AccRows::Pairs(pairs), acc), tiles),
            (true, pairs, _) => {
                let done = acc_pairs(Some(x), panel, p, quads, AccRows::Pairs(pairs), acc);
                let (x1, acc1) = (x.get(last * k..).unwrap_or(&[]), acc.get_mut(last * n..).unwrap_or(&mut []));
                (done, acc_pairs(Some(x1), panel, p, quads, AccRows::Lone, acc1))
            }
        }
    };
    #[cfg(not(all(mote_dsp, target_arch = "arm")))]
    let (pairs_done, lone_done) = (0, 0);
    if pairs_done == tiles && lone_done == tiles {
        return Ok(());
    }
    for (r0, r1) in row_pairs(m) {
        let asm_done = if r0 == r1 { lone_done } else { pairs_done };
        if asm_done == tiles {
            continue;
        }
        fill_part_panel(x, k, c0 % 4, (r0, r1), panel);
        #[cfg(all(mote_dsp, target_arch = "arm"))]
        let done = if whole {
            asm_done
        } else {
            let rows = if r0 == r1 { dsp::AccRows::Lone } else { dsp::AccRows::Pairs(1) };
            dsp::acc_pairs(None, panel, p, quads, rows, acc.get_mut(r0 * n..).unwrap_or(&mut []))
        };
        #[cfg(not(all(mote_dsp, target_arch = "arm")))]
        let done = asm_done;
        let (head, tail) = acc.split_at_mut(r1 * n);
        let row1 = tail.get_mut(..n).unwrap_or(&mut []);
        if r0 == r1 {
            acc_tiles_portable(panel, p, quads, done, row1, None);
        } else {
            acc_tiles_portable(panel, p, quads, done, head.get_mut(r0 * n..).unwrap_or(&mut []), Some(row1));
        }
    }
    Ok(())
}

/// The 2×2 tiles of [`dsp16_acc_add`] from block `from` on: rows `row0` and `row1` (`[n]` each), or the lone
/// `row0` as both rows of the tile with the first row's sums stored.
#[inline(never)]
fn acc_tiles_portable(
    panel: &[i32],
    p: &PackedLinear<'_>,
    (qa, qb): (usize, usize),
    from: usize,
    row0: &mut [i32],
    mut row1: Option<&mut [i32]>,
) {
    let bw = block_words(p.k);
    for t in from..p.n.div_ceil(TILE_COLS) {
        let weights = p.words.get(t * bw + 4 + 4 * qa..t * bw + 4 + 4 * qb).unwrap_or(&[]);
        let cols = TILE_COLS * t..(TILE_COLS * t + TILE_COLS).min(p.n);
        let a = row0.get_mut(cols.clone()).unwrap_or(&mut []);
        let get = |v: &[i32], i: usize| v.get(i).copied().unwrap_or(0);
        let (a0, a1) = (get(a, 0), get(a, 1));
        let b = row1.as_deref_mut().and_then(|r| r.get_mut(cols));
        let (b0, b1) = b.as_deref().map_or((a0, a1), |b| (get(b, 0), get(b, 1)));
        let s = smlad_tile([a0, a1, b0, b1], panel, weights);
        a.iter_mut().zip([s[0], s[1]]).for_each(|(slot, v)| *slot = v);
        if let Some(b) = b {
            b.iter_mut().zip([s[2], s[3]]).for_each(|(slot, v)| *slot = v);
        }
    }
}

/// The panel of rows `r0`, `r1` of a part `x [m, k]` that starts `off` (`< 4`) columns into its first quad: the
/// layout of [`fill_panel_portable`] with zeros outside the part.
fn fill_part_panel(x: &[i8], k: usize, off: usize, (r0, r1): (usize, usize), panel: &mut [i32]) {
    if off == 0 {
        fill_panel_portable(x, k, r0, r1, panel);
        return;
    }
    let at = |r: usize, c: usize| -> i32 {
        match c.checked_sub(off) {
            Some(c) if c < k => x.get(r * k + c).map_or(0, |&v| i32::from(v)),
            _ => 0,
        }
    };
    for (q, quad) in panel.chunks_exact_mut(4).enumerate() {
        quad.iter_mut().zip(dsp16_quad(at, (r0, r1), 4 * q)).for_each(|(slot, v)| *slot = v);
    }
}

/// Requantizes the finished sums `acc [m, n]` of the [`PackedLayout::Dsp16`] layer `p` into `out [m, n]` by
/// `rq(sum, column, packed multiplier)`: [`dsp16_high_mul`] is what [`linear_packed`] does.
/// Errors: another layout, lengths that disagree with `m` and `n`.
pub(crate) fn dsp16_acc_store(
    acc: &[i32],
    p: &PackedLinear<'_>,
    m: usize,
    rq: impl Fn(i32, usize, i32) -> i8,
    out: &mut [i8],
) -> Result<(), KernelError> {
    let (n, bw) = (p.n, block_words(p.k));
    let len = m.checked_mul(n);
    if p.layout != PackedLayout::Dsp16 || Some(acc.len()) != len || Some(out.len()) != len {
        return Err(KernelError::ShapeMismatch);
    }
    for (a_row, o_row) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let (mut a2, mut o2) = (a_row.chunks_exact(TILE_COLS), o_row.chunks_exact_mut(TILE_COLS));
        let mut blocks = p.words.chunks_exact(bw);
        for (t, ((a, o), block)) in a2.by_ref().zip(o2.by_ref()).zip(blocks.by_ref()).enumerate() {
            if let ([a0, a1], [o0, o1], Some(&[m0, m1])) = (a, o, block.get(bw - 2..)) {
                let j = TILE_COLS * t;
                (*o0, *o1) = (rq(*a0, j, m0), rq(*a1, j + 1, m1));
            }
        }
        // An odd last column.
        if let ([a0], [o0], Some(&[m0, _])) =
            (a2.remainder(), o2.into_remainder(), blocks.next().and_then(|b| b.get(bw - 2..)))
        {
            *o0 = rq(*a0, n - 1, m0);
        }
    }
    Ok(())
}

/// The requantization of [`linear_packed`] for [`dsp16_acc_store`]: `HighMul` by the packed multiplier, plus
/// `zero_point`, int8 saturation.
pub(crate) fn dsp16_high_mul(zero_point: i32) -> impl Fn(i32, usize, i32) -> i8 {
    move |a, _, mul| high_mul(a, mul, zero_point).max(-128).min(127) as i8
}

/// Dimensions and zero points of [`matmul_packed`]: `out[β] = rq(Σ_k (a[β,i,k] + a_offset)·(b[β,k,j] + b_offset))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedMatmul {
    /// Batch entries (e.g. attention heads).
    pub batch: usize,
    /// Rows of `a` and `out`.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns of `b` and `out`.
    pub n: usize,
    /// `b` is one `[k, n]` matrix shared by every batch entry.
    pub b_broadcast: bool,
    /// Added to every element of `a` (the negated zero point).
    pub a_offset: i32,
    /// Added to every element of `b`, in `[-128, 128]` (so `b + b_offset` fits 16 bits).
    pub b_offset: i32,
}

impl PackedMatmul {
    /// `i32` words of scratch [`matmul_packed`] needs: the packed `b` and the activation panel.
    pub const fn scratch_words(&self) -> usize {
        PackedLayout::Dsp16.words(self.n, self.k) + PackedLayout::Dsp16.scratch_words(self.k)
    }
}

/// int8 product of two activations (attention's `Q·Kᵀ`, `A·V`), packed `a [batch,m,k]`, `b [batch|1,k,n]`,
/// `out [batch,m,n]`: [`crate::matmul::av_requant`] with a per-tensor `HighMul` multiplier `mul`.
///
/// `b` is packed at run time into the Dsp16 layout in `scratch` (with `b_offset` applied and `a_offset` folded into
/// the bias), then each batch entry runs [`linear_packed`]: `SMLAD` assembly on Arm DSP builds.
/// Errors: lengths that disagree with `p`, `scratch` shorter than [`PackedMatmul::scratch_words`], a `b_offset`
/// outside `[-128, 128]`.
pub fn matmul_packed(
    a: &[i8],
    b: &[i8],
    p: &PackedMatmul,
    mul: i32,
    zero_point: i32,
    scratch: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    let PackedMatmul { batch, m, k, n, b_broadcast, a_offset, b_offset } = *p;
    let len =
        |x: usize, y: usize| x.checked_mul(y).and_then(|v| v.checked_mul(batch)).ok_or(KernelError::ShapeMismatch);
    let (mk, mn) = (len(m, k)?, len(m, n)?);
    let kn = if b_broadcast { k.checked_mul(n).ok_or(KernelError::ShapeMismatch)? } else { len(k, n)? };
    if !(-128..=128).contains(&b_offset) {
        return Err(KernelError::InvalidParam);
    }
    if batch == 0 || m == 0 || k == 0 || n == 0 || a.len() != mk || b.len() != kn || out.len() != mn {
        return Err(KernelError::ShapeMismatch);
    }
    let words = PackedLayout::Dsp16.words(n, k);
    let (packed, panel) = scratch.split_at_mut_checked(words).ok_or(KernelError::ShapeMismatch)?;
    for (beta, (a_mat, out_mat)) in a.chunks_exact(m * k).zip(out.chunks_exact_mut(m * n)).enumerate() {
        if beta == 0 || !b_broadcast {
            let b_mat = b.get(beta * k * n..(beta + 1) * k * n).unwrap_or(&[]);
            pack_activations::<false>(b_mat, (k, n), (a_offset, b_offset), mul, packed);
        }
        let lin = PackedLinear::new(PackedLayout::Dsp16, n, k, packed)?;
        linear_packed(a_mat, &lin, m, zero_point, panel, out_mat)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::matmul::{linear_requant, MatDims};
    use crate::requant::{HighMulRequant, Requant};
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Every layout, for the tests that run on each.
    const LAYOUTS: [PackedLayout; 3] = [PackedLayout::Dsp16, PackedLayout::Mve8, PackedLayout::Rv32];

    /// Packs as `layout` and runs the portable packed kernel.
    #[allow(clippy::too_many_arguments)]
    fn packed_as(
        layout: PackedLayout,
        x: &[i8],
        w: &[i8],
        bias: Option<&[i32]>,
        (m, k, n): (usize, usize, usize),
        offset: i32,
        mul: &[i32],
        zp: i32,
    ) -> Vec<i8> {
        let mut words = vec![0; layout.words(n, k)];
        pack_linear(layout, &LinearWeights { w, bias, input_offset: offset, mul, n, k }, &mut words).unwrap();
        let p = PackedLinear::new(layout, n, k, &words).unwrap();
        let mut scratch = vec![0; layout.scratch_words(k)];
        let mut out = vec![0i8; m * n];
        linear_packed_portable(x, &p, m, zp, &mut scratch, &mut out).unwrap();
        out
    }

    /// Random case of a layout's proptest: `linear_packed_portable` and `linear_packed` (the build's dispatch) equal
    /// `linear_requant` with the same HighMul requantization. Small multipliers (`i32::MAX >> mul_shift`) keep most
    /// outputs unsaturated, so a wrong accumulator shows.
    #[allow(clippy::too_many_arguments)]
    fn equals_reference(
        layout: PackedLayout,
        (m, k, n): (usize, usize, usize),
        seed: u64,
        offset: i32,
        zp: i32,
        per_channel: bool,
        with_bias: bool,
        mul_shift: u32,
    ) -> Result<(), TestCaseError> {
        let mut g = Lcg(seed);
        let (x, w) = (g.vec_i8(m * k), g.vec_i8(n * k));
        let bias = g.vec_i32(n, -1 << 20, 1 << 20);
        let mul = g.vec_i32(if per_channel { n } else { 1 }, 0, i32::MAX >> mul_shift);
        let bias = with_bias.then_some(&bias[..]);
        let rq = Requant::HighMul(HighMulRequant::new(&mul, zp, -128, 127).unwrap());
        let mut expected = vec![0i8; m * n];
        linear_requant(&x, &w, bias, MatDims { m, k, n }, offset, &rq, &mut expected).unwrap();
        prop_assert_eq!(&packed_as(layout, &x, &w, bias, (m, k, n), offset, &mul, zp), &expected);
        let mut words = vec![0; layout.words(n, k)];
        pack_linear(layout, &LinearWeights { w: &w, bias, input_offset: offset, mul: &mul, n, k }, &mut words).unwrap();
        let p = PackedLinear::new(layout, n, k, &words).unwrap();
        let (mut scratch, mut out) = (vec![0; layout.scratch_words(k)], vec![0i8; m * n]);
        linear_packed(&x, &p, m, zp, &mut scratch, &mut out).unwrap();
        prop_assert_eq!(out, expected);
        Ok(())
    }

    #[test]
    fn hand_computed_tile() {
        // x = [[1, 2, 3], [-1, 0, 4]], w = [[1, 1, 1], [2, -1, 0]], bias [10, -5], offset 1, mul 2^30 (×¼), zp 3.
        // Dsp16: one 2×2 tile; Mve8: one tile with two padding channels, one chunk of which 3 bytes are used;
        // Rv32: one tile with two padding channels, Q = 2 (k = 3 padded to 8).
        let (x, w) = ([1i8, 2, 3, -1, 0, 4], [1i8, 1, 1, 2, -1, 0]);
        for layout in LAYOUTS {
            let out = packed_as(layout, &x, &w, Some(&[10, -5]), (2, 3, 2), 1, &[1 << 30], 3);
            // x+1 = [[2, 3, 4], [0, 1, 5]]: acc = [[10+9, -5+4-3], [10+6, -5-1]] = [[19, -4], [16, -6]];
            // y = 3 + floor(acc/4 + 1/2) = 3 + [[5, -1], [4, -1]].
            assert_eq!(out, [8, 2, 7, 2], "{layout:?}");
        }
    }

    #[test]
    fn refuses_bad_lengths() {
        for (layout, k) in [(PackedLayout::Dsp16, 5), (PackedLayout::Mve8, 17), (PackedLayout::Rv32, 17)] {
            let mut words = vec![0; layout.words(3, k)];
            let w = vec![0i8; 3 * k];
            let src = LinearWeights { w: &w, bias: None, input_offset: 0, mul: &[1], n: 3, k };
            let bad = |src: &LinearWeights<'_>, words: &mut [i32]| pack_linear(layout, src, words);
            assert_eq!(bad(&LinearWeights { w: &w[1..], ..src }, &mut words), Err(KernelError::ShapeMismatch));
            assert_eq!(bad(&LinearWeights { mul: &[1, 2], ..src }, &mut words), Err(KernelError::ShapeMismatch));
            assert_eq!(bad(&src, &mut words[1..]), Err(KernelError::ShapeMismatch));
            pack_linear(layout, &src, &mut words).unwrap();
            assert!(PackedLinear::new(layout, 3, k - 1, &words).is_err(), "{layout:?}");
            let p = PackedLinear::new(layout, 3, k, &words).unwrap();
            let x = vec![0i8; 2 * k];
            let mut small = vec![0; layout.scratch_words(k) - 1];
            let mut out = [0i8; 6];
            assert_eq!(linear_packed(&x, &p, 2, 0, &mut small, &mut out), Err(KernelError::ShapeMismatch));
            let mut scratch = vec![0; layout.scratch_words(k)];
            assert_eq!(linear_packed(&x[1..], &p, 2, 0, &mut scratch, &mut out), Err(KernelError::ShapeMismatch));
            assert_eq!(linear_packed(&x, &p, 2, 0, &mut scratch, &mut out[1..]), Err(KernelError::ShapeMismatch));
            if layout != PackedLayout::Dsp16 {
                // Dsp16-only entry points refuse the other layouts.
                let rq = Requant::HighMul(HighMulRequant::new(&[1], 0, -128, 127).unwrap());
                let r = linear_packed_requant(&x, &p, 2, &rq, &mut scratch, &mut out);
                assert_eq!(r, Err(KernelError::InvalidParam), "{layout:?}");
            }
        }
    }

    /// `linear_packed_requant` with a Deeploy RequantShift equals `linear_requant`, to i8 and to u8.
    #[test]
    fn packed_requant_equals_reference() {
        use crate::requant::ShiftRequant;
        let mut g = Lcg(7);
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 64, 16), (4, 130, 3), (65, 17, 65)] {
            let (x, w) = (g.vec_i8(m * k), g.vec_i8(n * k));
            let bias = g.vec_i32(n, -1 << 16, 1 << 16);
            let (mul, add) = (g.vec_i32(n, 1, 300), g.vec_i32(1, -1 << 14, 1 << 14));
            let layout = PackedLayout::Dsp16;
            let mut words = vec![0; layout.words(n, k)];
            let src = LinearWeights { w: &w, bias: Some(&bias), input_offset: 0, mul: &[0], n, k };
            pack_linear(layout, &src, &mut words).unwrap();
            let p = PackedLinear::new(layout, n, k, &words).unwrap();
            let mut scratch = vec![0; layout.scratch_words(k)];
            for signed in [true, false] {
                let rq = Requant::Shift(ShiftRequant::new(&mul, &add, 12, 256, signed).unwrap());
                let d = MatDims { m, k, n };
                if signed {
                    let (mut want, mut got) = (vec![0i8; m * n], vec![0i8; m * n]);
                    linear_requant(&x, &w, Some(&bias), d, 0, &rq, &mut want).unwrap();
                    linear_packed_requant(&x, &p, m, &rq, &mut scratch, &mut got).unwrap();
                    assert_eq!(got, want, "{m}x{k}x{n}");
                } else {
                    let (mut want, mut got) = (vec![0u8; m * n], vec![0u8; m * n]);
                    linear_requant(&x, &w, Some(&bias), d, 0, &rq, &mut want).unwrap();
                    linear_packed_requant(&x, &p, m, &rq, &mut scratch, &mut got).unwrap();
                    assert_eq!(got, want, "{m}x{k}x{n}");
                }
            }
        }
        let words = vec![0; PackedLayout::Mve8.words(2, 2)];
        let p = PackedLinear::new(PackedLayout::Mve8, 2, 2, &words).unwrap();
        let rq = Requant::HighMul(HighMulRequant::new(&[1], 0, -128, 127).unwrap());
        let r = linear_packed_requant(&[0i8; 2], &p, 1, &rq, &mut [0; 64], &mut [0i8; 2]);
        assert_eq!(r, Err(KernelError::InvalidParam));
    }

    /// The Dsp16 product in parts (bias, then column parts of any width starting anywhere, then the
    /// requantization) equals the one-pass packed kernels and `linear_requant`; odd `m` and `n`, parts inside
    /// quads, a panel full of stale words.
    #[test]
    fn dsp16_parts_equal_one_pass() {
        let mut g = Lcg(23);
        for (m, k, n, part) in
            [(1, 1, 1, 1), (2, 8, 4, 4), (3, 15, 5, 5), (5, 32, 7, 3), (4, 256, 32, 32), (7, 20, 3, 6), (2, 9, 2, 9)]
        {
            let (x, w) = (g.vec_i8(m * k), g.vec_i8(n * k));
            let bias = g.vec_i32(n, -1 << 16, 1 << 16);
            let mul = g.vec_i32(n, 1 << 20, 1 << 24);
            let (offset, zp) = (g.i32_in(-128, 128), g.i32_in(-20, 20));
            let layout = PackedLayout::Dsp16;
            let mut words = vec![0; layout.words(n, k)];
            let src = LinearWeights { w: &w, bias: Some(&bias), input_offset: offset, mul: &mul, n, k };
            pack_linear(layout, &src, &mut words).unwrap();
            let p = PackedLinear::new(layout, n, k, &words).unwrap();
            let rq = Requant::HighMul(HighMulRequant::new(&mul, zp, -128, 127).unwrap());
            let mut want = vec![0i8; m * n];
            linear_requant(&x, &w, Some(&bias), MatDims { m, k, n }, offset, &rq, &mut want).unwrap();
            let mut one_pass = vec![0i8; m * n];
            linear_packed(&x, &p, m, zp, &mut vec![0; layout.scratch_words(k)], &mut one_pass).unwrap();
            assert_eq!(one_pass, want, "{m}x{k}x{n}");
            let mut acc = vec![0i32; m * n];
            let mut panel = vec![0x5a5a_5a5a; dsp16_part_panel_words(part)];
            dsp16_acc_init(&p, m, &mut acc).unwrap();
            for c0 in (0..k).step_by(part) {
                let kx = part.min(k - c0);
                let xs: Vec<i8> = x.chunks_exact(k).flat_map(|r| r[c0..c0 + kx].to_vec()).collect();
                dsp16_acc_add(&xs, (c0, kx), &p, m, &mut panel, &mut acc).unwrap();
            }
            let mut got = vec![0i8; m * n];
            dsp16_acc_store(&acc, &p, m, dsp16_high_mul(zp), &mut got).unwrap();
            assert_eq!(got, want, "{m}x{k}x{n} in parts of {part}");
            // Columns past the layer, a panel too short for the part's quads, wrong lengths are refused.
            let bad = Err(KernelError::ShapeMismatch);
            assert_eq!(dsp16_acc_add(&x[..m], (k, 1), &p, m, &mut panel, &mut acc), bad);
            let kx = part.min(k);
            let xs: Vec<i8> = x.chunks_exact(k).flat_map(|r| r[..kx].to_vec()).collect();
            let short = &mut panel[..4 * kx.div_ceil(4) - 1];
            assert_eq!(dsp16_acc_add(&xs, (0, kx), &p, m, short, &mut acc), bad);
            assert_eq!(dsp16_acc_add(&xs, (0, kx), &p, m, &mut panel, &mut acc[1..]), bad);
            assert_eq!(dsp16_acc_init(&p, m, &mut acc[1..]), bad);
            assert_eq!(dsp16_acc_store(&acc[1..], &p, m, dsp16_high_mul(zp), &mut got), bad);
        }
        let words = vec![0; PackedLayout::Rv32.words(2, 4)];
        let p = PackedLinear::new(PackedLayout::Rv32, 2, 4, &words).unwrap();
        assert_eq!(dsp16_acc_init(&p, 1, &mut [0; 2]), Err(KernelError::ShapeMismatch));
        assert_eq!(dsp16_acc_add(&[0; 4], (0, 4), &p, 1, &mut [0; 8], &mut [0; 2]), Err(KernelError::ShapeMismatch));
        assert_eq!(dsp16_acc_store(&[0; 2], &p, 1, dsp16_high_mul(0), &mut [0; 2]), Err(KernelError::ShapeMismatch));
    }

    /// The runtime-packed matmul equals `av_requant` (HighMul), batched and with a broadcast `b`.
    #[test]
    fn matmul_packed_equals_reference() {
        use crate::matmul::{av_requant, BatchedMatmul, Strides};
        let mut g = Lcg(11);
        for (batch, m, k, n, b_broadcast) in
            [(1, 1, 1, 1, false), (2, 3, 5, 7, false), (4, 16, 8, 16, true), (3, 17, 33, 9, false)]
        {
            let (a_offset, b_offset) = (g.i32_in(-128, 128), g.i32_in(-128, 128));
            let a = g.vec_i8(batch * m * k);
            let b = g.vec_i8(if b_broadcast { k * n } else { batch * k * n });
            let mul = [g.i32_in(1 << 16, 1 << 22)];
            let rq = Requant::HighMul(HighMulRequant::new(&mul, -3, -128, 127).unwrap());
            let strides = if b_broadcast { Strides { offset: 0, batch: 0, row: n } } else { Strides::packed(k, n) };
            let bm = BatchedMatmul { a_offset, b_offset, b: strides, ..BatchedMatmul::packed_nn(batch, m, k, n) };
            let mut want = vec![0i8; batch * m * n];
            av_requant(&bm, &a, &b, &rq, &mut want).unwrap();
            let p = PackedMatmul { batch, m, k, n, b_broadcast, a_offset, b_offset };
            let mut scratch = vec![0; p.scratch_words()];
            let mut got = vec![0i8; batch * m * n];
            matmul_packed(&a, &b, &p, mul[0], -3, &mut scratch, &mut got).unwrap();
            assert_eq!(got, want, "{batch}x{m}x{k}x{n}");
        }
        let p = PackedMatmul { batch: 1, m: 1, k: 1, n: 1, b_broadcast: false, a_offset: 0, b_offset: 129 };
        assert_eq!(matmul_packed(&[0], &[0], &p, 1, 0, &mut [0; 64], &mut [0]), Err(KernelError::InvalidParam));
    }

    proptest! {
        /// The packed kernel equals the reference linear layer with the same HighMul requantization.
        #[test]
        fn packed_equals_reference(
            (m, k, n) in (dim(), dim(), dim()),
            seed in any::<u64>(),
            offset in -255i32..=255,
            zp in -128i32..=127,
            per_channel in any::<bool>(),
            with_bias in any::<bool>(),
            mul_shift in prop_oneof![Just(0u32), 8u32..24],
        ) {
            equals_reference(PackedLayout::Dsp16, (m, k, n), seed, offset, zp, per_channel, with_bias, mul_shift)?;
        }
    }

    proptest! {
        /// The on-MCU packing of activations writes the words the generic packing writes from the same accessors.
        #[test]
        fn activation_packing_equals_generic_packing(
            (k, n) in (dim(), dim()),
            seed in any::<u64>(),
            (a_offset, b_offset) in (-255i32..=255, -128i32..=128),
            mul in any::<i32>(),
            transposed in any::<bool>(),
        ) {
            let b = Lcg(seed).vec_i8(k * n);
            let weight = |j: usize, c: usize| match j < n && c < k {
                true => i32::from(if transposed { b[j * k + c] } else { b[c * n + j] }) + b_offset,
                false => 0,
            };
            let bias = |j: usize| a_offset.wrapping_mul((0..k).fold(0i32, |s, c| s.wrapping_add(weight(j, c))));
            let words = PackedLayout::Dsp16.words(n, k);
            let mut want = vec![0; words];
            pack_dsp16(k, weight, bias, |j| if j < n { mul } else { 0 }, &mut want);
            let mut got = vec![-1; words];
            match transposed {
                true => pack_activations::<true>(&b, (k, n), (a_offset, b_offset), mul, &mut got),
                false => pack_activations::<false>(&b, (k, n), (a_offset, b_offset), mul, &mut got),
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn mve8_layout() {
        // n = 5, k = 17: two tiles of two chunks; w[j,c] = 10·j + c (mod 128), offset 0, bias 100 + j, mul 7 + j.
        let (n, k) = (5, 17);
        let w: Vec<i8> = (0..n * k).map(|i| ((10 * (i / k) + i % k) % 128) as i8).collect();
        let bias: Vec<i32> = (0..n as i32).map(|j| 100 + j).collect();
        let mul: Vec<i32> = (0..n as i32).map(|j| 7 + j).collect();
        let layout = PackedLayout::Mve8;
        assert_eq!(layout.words(n, k), 2 * (2 * 16 + 8));
        assert_eq!(layout.scratch_words(k), 16);
        let mut words = vec![0; layout.words(n, k)];
        let src = LinearWeights { w: &w, bias: Some(&bias), input_offset: 0, mul: &mul, n, k };
        pack_linear(layout, &src, &mut words).unwrap();
        let byte = |word: usize, b: usize| words[word].to_le_bytes()[b] as i8;
        // Tile 0, chunk 0, channel 1: bytes w[1, 0..16] in words 4..8.
        assert_eq!((byte(4, 0), byte(7, 3)), (10, 25));
        // Tile 0, chunk 1, channel 2: w[2, 16] then zeros past k.
        assert_eq!((byte(16 + 8, 0), byte(16 + 8, 1), byte(16 + 11, 3)), (36, 0, 0));
        assert_eq!(words[32..40], [100, 101, 102, 103, 7, 8, 9, 10]);
        // Tile 1: channel 4, then three zero padding channels with zero bias and multiplier.
        assert_eq!((byte(40, 0), byte(40 + 16, 0), byte(40 + 4, 0)), (40, 56, 0));
        assert_eq!(words[72..80], [104, 0, 0, 0, 11, 0, 0, 0]);
    }

    proptest! {
        /// The Mve8 packed kernel equals the reference linear layer with the same HighMul requantization, also for
        /// `k` a multiple of the 16-byte chunk and extreme zero points.
        #[test]
        fn mve8_packed_equals_reference(
            (m, k, n) in (dim(), prop_oneof![dim(), Just(16usize), Just(32), Just(48)], dim()),
            seed in any::<u64>(),
            offset in -255i32..=255,
            zp in prop_oneof![-128i32..=127, Just(i32::MIN), Just(i32::MAX)],
            per_channel in any::<bool>(),
            with_bias in any::<bool>(),
            mul_shift in prop_oneof![Just(0u32), 8u32..24],
        ) {
            equals_reference(PackedLayout::Mve8, (m, k, n), seed, offset, zp, per_channel, with_bias, mul_shift)?;
        }
    }

    #[test]
    fn rv32_layout() {
        // n = 5, k = 17: Q = 6 (⌈17/4⌉ = 5, rounded up to even), quarters k 0..6, 6..12, 12..18, 18..24; two tiles.
        // w[j,c] = 10·j + c - 20, offset 0, bias 100 + j, mul 7 + j.
        let (n, k) = (5, 17);
        let w: Vec<i8> = (0..n * k).map(|i| (10 * (i / k) + i % k) as i8 - 20).collect();
        let bias: Vec<i32> = (0..n as i32).map(|j| 100 + j).collect();
        let mul: Vec<i32> = (0..n as i32).map(|j| 7 + j).collect();
        let layout = PackedLayout::Rv32;
        let tile = 8 + 4 * 6;
        assert_eq!(layout.words(n, k), 2 * tile);
        assert_eq!(layout.scratch_words(k), 4 * (4 * 6 + 1));
        let mut words = vec![0; layout.words(n, k)];
        let src = LinearWeights { w: &w, bias: Some(&bias), input_offset: 0, mul: &mul, n, k };
        pack_linear(layout, &src, &mut words).unwrap();
        let byte = |word: usize, b: usize| words[word].to_le_bytes()[b];
        assert_eq!(words[..4], [100, 101, 102, 103]);
        // Tile 0, word-row 1, channel 2: lanes w[2,1], w[2,7] + 128, w[2,13] + 128, w[2,19] = 0 (past k).
        let wr = 4 + 4 + 2;
        assert_eq!([byte(wr, 0), byte(wr, 1), byte(wr, 2), byte(wr, 3)], [1, 7 + 128, 13 + 128, 0]);
        // Tile 0, word-row 0, channel 0: w[0,0] = -20, w[0,6] = -14 (+ 128 = 114), w[0,12] + 128 = 120, w[0,18] = 0.
        assert_eq!([byte(4, 0) as i8, byte(4, 1) as i8, byte(4, 2) as i8, byte(4, 3) as i8], [-20, 114, 120, 0]);
        assert_eq!(words[tile - 4..tile], [7, 8, 9, 10]);
        // Tile 1: channel 4 (w[4,0] = 20), then padding channels: zero weights (128 in lanes 1 and 2), bias, mul.
        assert_eq!([byte(tile + 4, 0), byte(tile + 5, 0), byte(tile + 5, 1), byte(tile + 5, 3)], [20, 0, 128, 0]);
        assert_eq!(words[tile..tile + 4], [104, 0, 0, 0]);
        assert_eq!(words[2 * tile - 4..], [11, 0, 0, 0]);
    }

    /// Extremes: every activation and weight -128 or 127 (lanes 1 and 2 hold 0 and 255), k = 256 and 255.
    #[test]
    fn rv32_extreme_values() {
        for (xv, wv, k) in [(-128i8, -128i8, 256), (127, -128, 255), (-128, 127, 256), (127, 127, 255)] {
            let (m, n) = (5, 6);
            let (x, w) = (vec![xv; m * k], vec![wv; n * k]);
            // x + offset = 1: every accumulator is k·w, scaled to about ±100, next to lane sums of 128·x per k.
            let offset = 1 - i32::from(xv);
            let mul = [((100i64 << 32) / (k as i64 * i64::from(wv)).abs()) as i32];
            let rq = Requant::HighMul(HighMulRequant::new(&mul, -3, -128, 127).unwrap());
            let mut expected = vec![0i8; m * n];
            linear_requant(&x, &w, None, MatDims { m, k, n }, offset, &rq, &mut expected).unwrap();
            let got = packed_as(PackedLayout::Rv32, &x, &w, None, (m, k, n), offset, &mul, -3);
            assert_eq!(got, expected, "x {xv}, w {wv}, k {k}");
            assert!(expected.iter().all(|&v| (90..110).contains(&v.abs())), "x {xv}, w {wv}: {expected:?}");
        }
    }

    proptest! {
        /// The Rv32 kernel (`linear_packed`, which on every target is `linear_packed_portable`) equals the
        /// reference linear layer with the same HighMul requantization: odd sizes, every `m % 4` (the 4-, 2- and
        /// 1-row tiles), `k` around the quarter boundaries and `n % 4` (partial last tile).
        #[test]
        fn rv32_packed_equals_reference(
            m in prop_oneof![dim(), 1usize..12],
            k in prop_oneof![dim(), Just(8usize), Just(16), Just(24), Just(31), Just(64), Just(100)],
            n in prop_oneof![dim(), 1usize..9],
            seed in any::<u64>(),
            offset in -255i32..=255,
            zp in prop_oneof![-128i32..=127, Just(i32::MIN), Just(i32::MAX)],
            per_channel in any::<bool>(),
            with_bias in any::<bool>(),
            mul_shift in prop_oneof![Just(0u32), 8u32..24],
        ) {
            equals_reference(PackedLayout::Rv32, (m, k, n), seed, offset, zp, per_channel, with_bias, mul_shift)?;
        }
    }
}
