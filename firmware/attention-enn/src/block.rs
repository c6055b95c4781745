//! The int8 multi-head self-attention block built from the `embedded-nn` crate (0.2.3), as a Rust user who picks
//! that library instead of mote writes it, with its deterministic weights, inputs and requantization parameters.
//!
//! Shared verbatim with the host: `crates/mote-bench/src/attention_enn.rs` includes this file with `#[path]` to
//! run the same block on the host (the reference output hash), so it must stay `core` + `embedded_nn` only and
//! free of crate-relative paths.
//!
//! The block, for a sequence `x [S, E]` (S tokens, E features), H heads of P features (inner width `I = H·P`):
//! `Q, K, V = x·Wqᵀ + bq, x·Wkᵀ + bk, x·Wvᵀ + bv` (`[S, I]`); per head `softmax(Q_h K_hᵀ) · V_h` (`[S, P]`, the
//! `1/√P` folded into the logits' requantization), the heads concatenated to `[S, I]`; `y = o·Woᵀ + bo` (`[S, E]`).
//!
//! Two ways to write it, both measured (they compute the same integers, so one host hash checks both):
//! * [`mhsa_fused`]: `fully_connected_s8` ×3, `scaled_dot_product_attention_s8` (embedded-nn's fused attention:
//!   per head `QKᵀ`, `softmax_s8` and `·V` over the `[S, H·P]` layout, writing the concatenated heads; its doc
//!   recommends it over "a graph of reshape / transpose / matmul nodes"), `fully_connected_s8`. No glue.
//! * [`mhsa_unfused`]: the op-by-op graph: `fully_connected_s8` ×3 each followed by `transpose_nd_s8` (head
//!   split `[S, H, P] → [H, S, P]`), per head `batch_matmul_s8_shaped` (`Q_h K_hᵀ`, `rhs_transposed`),
//!   `softmax_s8`, `batch_matmul_s8_shaped` (`· V_h`), then `transpose_nd_s8` back (`[H, S, P] → [S, H, P]`, the
//!   concat) and `fully_connected_s8`. Glue: only the per-head loop and its slicing.
//!
//! embedded-nn has every kernel the block needs; nothing is hand-written except that loop, the arena split below,
//! the data generator and the hash.
//!
//! **Arena** (one `[i8]` of [`Shape::arena_bytes`], reused as a careful user would): four regions of `S·I` bytes
//! and one of `max(S·E, 2·S·S)`. Fused: Q, K, V, the concatenated heads, and the last region holds `x`, then the
//! attention kernel's logits + probabilities scratch (`2·S·S`, reused across heads), then `y`. Unfused: region 0
//! is the projection staging buffer for the transposes and later the per-head outputs `[H, S, P]`; regions 1-3
//! are `Q_h`, `K_h`, `V_h` (`[H, S, P]`), region 1 then the concatenated heads; the last region holds `x`, then
//! one head's logits and probabilities (`S·S` each), then `y`. Either way the peak (during attention) is exactly
//! the arena: `3·S·I` (Q, K, V) + `S·I` (head outputs) + `2·S·S` (scores), and `x` and `y` fit the scores' bytes.
//! Safe Rust forbids the in-place variants (kernel input and output are separate slices).
//!
//! **Quantization** (per tensor, CMSIS-NN conventions: Q31 multiplier and shift, offsets = minus zero points):
//! every zero point 0 except the softmax output's (-128, so the `·V` matmul adds 128 to the probabilities). The
//! multipliers ([`quant`] of a real scale) are fixed, chosen for the uniform pseudo-random data: Q, K, V, the
//! logits and `y` have standard deviations of 20-30 levels, the head outputs about 15, and none of them saturates
//! (`crates/mote-bench` checks `y`); the softmax output reaches -128 only for near-zero probabilities.
//! The softmax input scale is 1/16 (`mult = 2^30, shift = 23, diff_min = -248`, as TFLite's
//! `PreprocessSoftmaxScaling` gives for beta 1).
use embedded_nn::{
    batch_matmul_s8_shaped, fully_connected_s8, scaled_dot_product_attention_s8, softmax_s8, transpose_nd_s8,
    Activation, AttentionParams, Dims, Error, FcParams, PerTensorQuantParams, Result,
};

/// The sizes of one attention block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Sequence length (tokens).
    pub s: usize,
    /// Embedding width (block input and output features).
    pub e: usize,
    /// Heads.
    pub h: usize,
    /// Features per head.
    pub p: usize,
}

impl Shape {
    /// Inner width `H·P` (of Q, K, V and the concatenated heads).
    pub const fn inner(&self) -> usize {
        self.h * self.p
    }

    /// Multiply-accumulates: Q/K/V projections, `QKᵀ`, `·V` and the output projection.
    pub const fn macs(&self) -> usize {
        let Shape { s, e, h, p } = *self;
        3 * s * e * h * p + 2 * h * s * s * p + s * h * p * e
    }

    /// Bytes of one `[S, H·P]` region of the arena.
    const fn region(&self) -> usize {
        self.s * self.inner()
    }

    /// Bytes of the last region: `x`, the logits and probabilities of one head, `y`.
    const fn last_region(&self) -> usize {
        let (io, scores) = (self.s * self.e, 2 * self.s * self.s);
        if io > scores {
            io
        } else {
            scores
        }
    }

    /// The activation bytes of the block at its peak, which is the arena (see the module doc).
    pub const fn arena_bytes(&self) -> usize {
        4 * self.region() + self.last_region()
    }

    /// Where `x` (before the block) and `y` (after it) sit in the arena.
    pub const fn io_range(&self) -> core::ops::Range<usize> {
        4 * self.region()..4 * self.region() + self.s * self.e
    }
}

/// EEGFormer's attention block: 81 tokens of 32 features, 8 heads of 32.
pub const EEGFORMER: Shape = Shape { s: 81, e: 32, h: 8, p: 32 };
/// ECGFormer's attention block: 66 tokens of 16 features, 8 heads of 2.
pub const ECGFORMER: Shape = Shape { s: 66, e: 16, h: 8, p: 2 };

/// Requantization of the block's int32 accumulators to int8 (all per tensor).
#[derive(Clone, Copy, Debug)]
pub struct Quant {
    /// Q, K and V projections.
    pub qkv: PerTensorQuantParams,
    /// `Q_h K_hᵀ` to softmax input (the `1/√P` folded in).
    pub logits: PerTensorQuantParams,
    /// Softmax `(mult, shift, diff_min)` for the logits' scale.
    pub softmax: (i32, i32, i32),
    /// `softmax · V_h` to the head outputs.
    pub av: PerTensorQuantParams,
    /// Output projection.
    pub out: PerTensorQuantParams,
}

/// The Q31 multiplier and shift of a positive real scale below 1 (TFLite's `QuantizeMultiplier`:
/// `real = multiplier / 2^31 · 2^shift` with the multiplier in `[2^30, 2^31)`).
pub const fn quant(real: f64) -> PerTensorQuantParams {
    let (mut m, mut shift) = (real, 0);
    while m < 0.5 {
        m *= 2.0;
        shift -= 1;
    }
    let q = m * 2_147_483_648.0 + 0.5;
    PerTensorQuantParams::new(q as i64 as i32, shift)
}

/// Softmax parameters for logits of scale 1/16, beta 1: `2^26/16 = 0.5 · 2^23`.
pub const SOFTMAX_SCALE_1_16: (i32, i32, i32) = (1 << 30, 23, -248);

/// Weights and biases of a block: `W [out, in]` row-major, as `fully_connected_s8` takes them.
#[derive(Debug)]
pub struct Weights {
    /// Q projection `[I, E]`.
    pub wq: &'static [i8],
    /// Q bias `[I]`.
    pub bq: &'static [i32],
    /// K projection `[I, E]`.
    pub wk: &'static [i8],
    /// K bias.
    pub bk: &'static [i32],
    /// V projection `[I, E]`.
    pub wv: &'static [i8],
    /// V bias.
    pub bv: &'static [i32],
    /// Output projection `[E, I]`.
    pub wo: &'static [i8],
    /// Output bias `[E]`.
    pub bo: &'static [i32],
}

/// One benchmark model: a shape, its weights (in flash) and requantization, and the seed of its input.
#[derive(Debug)]
pub struct Model {
    /// Name in the benchmark rows.
    pub name: &'static str,
    /// Sizes.
    pub shape: Shape,
    /// Parameters.
    pub weights: &'static Weights,
    /// Requantization.
    pub quant: Quant,
    /// Seed of [`fill_input`].
    pub input_seed: u32,
}

/// One step of Marsaglia's xorshift32 (`x` nonzero).
pub const fn xorshift32(mut x: u32) -> u32 {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

/// `N` int8 values, uniform over `-128..=127` (the top byte of successive xorshift32 states).
pub const fn int8s<const N: usize>(seed: u32) -> [i8; N] {
    let (mut out, mut x, mut i) = ([0i8; N], seed, 0);
    while i < N {
        x = xorshift32(x);
        out[i] = (x >> 24) as u8 as i8;
        i += 1;
    }
    out
}

/// `N` biases, uniform over `-2048..=2047` (small beside the accumulators' spread of about 20,000).
pub const fn biases<const N: usize>(seed: u32) -> [i32; N] {
    let (mut out, mut x, mut i) = ([0i32; N], seed, 0);
    while i < N {
        x = xorshift32(x);
        out[i] = (x >> 20) as i32 - 2048;
        i += 1;
    }
    out
}

/// The weights of a block of shape `$shape`, from seeds `$seed`, `$seed + 1`, ... (evaluated at compile time;
/// in a `static` they land in `.rodata`, i.e. flash).
macro_rules! weights {
    ($shape:expr, $seed:expr) => {{
        const S: Shape = $shape;
        const WQ: [i8; S.inner() * S.e] = int8s($seed);
        const BQ: [i32; S.inner()] = biases($seed + 1);
        const WK: [i8; S.inner() * S.e] = int8s($seed + 2);
        const BK: [i32; S.inner()] = biases($seed + 3);
        const WV: [i8; S.inner() * S.e] = int8s($seed + 4);
        const BV: [i32; S.inner()] = biases($seed + 5);
        const WO: [i8; S.e * S.inner()] = int8s($seed + 6);
        const BO: [i32; S.e] = biases($seed + 7);
        Weights { wq: &WQ, bq: &BQ, wk: &WK, bk: &BK, wv: &WV, bv: &BV, wo: &WO, bo: &BO }
    }};
}

static EEGFORMER_WEIGHTS: Weights = weights!(EEGFORMER, 0x1000);
static ECGFORMER_WEIGHTS: Weights = weights!(ECGFORMER, 0x2000);

/// The EEGFormer block (6,013,440 MACs).
pub static EEGFORMER_MHSA: Model = Model {
    name: "eegformer_mhsa",
    shape: EEGFORMER,
    weights: &EEGFORMER_WEIGHTS,
    quant: Quant {
        // Accumulator spreads (standard deviations) with uniform int8 data: √32·74² ≈ 31,000 for the
        // projections, √32·24² ≈ 3,300 for QKᵀ; `·V` sums probabilities + 128 (about 256 in all) times V.
        qkv: quant(1.0 / 1280.0),
        logits: quant(1.0 / 160.0),
        softmax: SOFTMAX_SCALE_1_16,
        av: quant(1.0 / 128.0),
        out: quant(1.0 / 640.0),
    },
    input_seed: 0x1100,
};

/// The ECGFormer block (206,976 MACs).
pub static ECGFORMER_MHSA: Model = Model {
    name: "ecgformer_mhsa",
    shape: ECGFORMER,
    weights: &ECGFORMER_WEIGHTS,
    quant: Quant {
        qkv: quant(1.0 / 900.0),
        logits: quant(1.0 / 40.0),
        softmax: SOFTMAX_SCALE_1_16,
        av: quant(1.0 / 128.0),
        out: quant(1.0 / 200.0),
    },
    input_seed: 0x2100,
};

/// Writes the model's input `x [S, E]` (uniform int8 from `input_seed`) to its place in `arena`.
pub fn fill_input(m: &Model, arena: &mut [i8]) {
    let mut x = m.input_seed;
    for v in &mut arena[m.shape.io_range()] {
        x = xorshift32(x);
        *v = (x >> 24) as u8 as i8;
    }
}

/// The block's output `y [S, E]` in `arena` after [`mhsa_fused`] or [`mhsa_unfused`].
pub fn output<'a>(m: &Model, arena: &'a [i8]) -> &'a [i8] {
    &arena[m.shape.io_range()]
}

/// `out [rows, n] = requant(x [rows, k] · w [n, k]ᵀ + bias)` with `fully_connected_s8` (zero points 0).
#[allow(clippy::too_many_arguments)]
fn linear(
    x: &[i8],
    rows: usize,
    k: usize,
    w: &[i8],
    bias: &[i32],
    n: usize,
    q: &PerTensorQuantParams,
    out: &mut [i8],
) -> Result<()> {
    let params =
        FcParams { input_offset: 0, filter_offset: 0, output_offset: 0, activation: Activation::int8_unconstrained() };
    let d = |v: usize| v as i32;
    let input_dims = Dims::new(d(rows), 1, 1, d(k));
    let filter_dims = Dims::new(d(k), 1, 1, d(n));
    let output_dims = Dims::new(d(rows), 1, 1, d(n));
    fully_connected_s8(&params, q, &input_dims, x, &filter_dims, w, Some(bias), &output_dims, out)
}

/// The arena as its five regions (see the module doc).
fn regions<'a>(m: &Model, arena: &'a mut [i8]) -> Result<[&'a mut [i8]; 5]> {
    if arena.len() != m.shape.arena_bytes() {
        return Err(Error::ArgumentError);
    }
    let n = m.shape.region();
    let (r0, rest) = arena.split_at_mut(n);
    let (r1, rest) = rest.split_at_mut(n);
    let (r2, rest) = rest.split_at_mut(n);
    let (r3, r4) = rest.split_at_mut(n);
    Ok([r0, r1, r2, r3, r4])
}

/// The block with embedded-nn's fused attention kernel; `arena` holds `x` on entry and `y` on return.
pub fn mhsa_fused(m: &Model, arena: &mut [i8]) -> Result<()> {
    let Shape { s, e, h, p } = m.shape;
    let (i, w, q) = (m.shape.inner(), m.weights, &m.quant);
    let [rq, rk, rv, ro, last] = regions(m, arena)?;
    let x = &last[..s * e];
    linear(x, s, e, w.wq, w.bq, i, &q.qkv, rq)?;
    linear(x, s, e, w.wk, w.bk, i, &q.qkv, rk)?;
    linear(x, s, e, w.wv, w.bv, i, &q.qkv, rv)?;
    let (softmax_mult, softmax_shift, softmax_diff_min) = q.softmax;
    let params = AttentionParams {
        batches: 1,
        seq_len: s,
        num_heads: h,
        head_dim: p,
        q_offset: 0,
        k_offset: 0,
        v_offset: 0,
        score_offset: 128,
        output_offset: 0,
        softmax_mult,
        softmax_shift,
        softmax_diff_min,
    };
    scaled_dot_product_attention_s8(&params, &q.logits, &q.av, rq, rk, rv, &mut last[..2 * s * s], ro)?;
    linear(ro, s, i, w.wo, w.bo, e, &q.out, &mut last[..s * e])
}

/// The block as the op-by-op graph (projections, head-split transposes, per-head batch matmuls and softmax,
/// transpose back, projection); `arena` holds `x` on entry and `y` on return.
pub fn mhsa_unfused(m: &Model, arena: &mut [i8]) -> Result<()> {
    let Shape { s, e, h, p } = m.shape;
    let (i, w, q) = (m.shape.inner(), m.weights, &m.quant);
    let [stage, qh, kh, vh, last] = regions(m, arena)?;
    let x = &last[..s * e];
    let split = [s, h, p];
    let perm = [1, 0, 2];
    linear(x, s, e, w.wq, w.bq, i, &q.qkv, stage)?;
    transpose_nd_s8(&split, &perm, stage, qh)?;
    linear(x, s, e, w.wk, w.bk, i, &q.qkv, stage)?;
    transpose_nd_s8(&split, &perm, stage, kh)?;
    linear(x, s, e, w.wv, w.bv, i, &q.qkv, stage)?;
    transpose_nd_s8(&split, &perm, stage, vh)?;
    let (softmax_mult, softmax_shift, softmax_diff_min) = q.softmax;
    let (logits, probs) = last[..2 * s * s].split_at_mut(s * s);
    // Glue: one head at a time, so one head's scores are live instead of all H.
    for head in 0..h {
        let at = head * s * p..(head + 1) * s * p;
        batch_matmul_s8_shaped(0, 0, 0, &q.logits, 1, s, p, s, &qh[at.clone()], &kh[at.clone()], true, logits)?;
        softmax_s8(logits, s, s, softmax_mult, softmax_shift, softmax_diff_min, probs)?;
        batch_matmul_s8_shaped(128, 0, 0, &q.av, 1, s, s, p, probs, &vh[at.clone()], false, &mut stage[at])?;
    }
    // Concatenate the heads: [H, S, P] -> [S, H, P], into Q_h's region (Q_h is dead).
    transpose_nd_s8(&[h, s, p], &perm, stage, qh)?;
    linear(qh, s, i, w.wo, w.bo, e, &q.out, &mut last[..s * e])
}

/// 32-bit FNV-1a of the bytes of `v`.
pub fn fnv1a(v: &[i8]) -> u32 {
    v.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b as u8)).wrapping_mul(0x0100_0193))
}
