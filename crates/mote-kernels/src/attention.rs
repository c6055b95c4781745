//! Fused int8 multi-head self-attention: the projections, `Q·Kᵀ`, softmax, `P·V` and the output projection of
//! one block in one call, on caller-owned scratch, in an order that keeps only a block of score rows alive.
//!
//! Integers: every product is the packed linear layer of [`crate::packed`] (`HighMul` requantization), so the
//! result equals the layer-by-layer composition `linear_requant` → `av_requant` (scores) → [`softmax_i8`] →
//! `av_requant` (values) → concatenation → `linear_requant` bit for bit, whatever the schedule: a schedule only
//! changes the order in which rows and heads are computed. Deeploy's integer form runs the same way with its
//! `RequantShift` after every product ([`crate::packed::linear_packed_requant`]) and its `ITAMax` or `iSoftmax`,
//! whose probabilities `0..=255` the kernel keeps as int8 `p - 128`.
//!
//! Keys and values are packed at run time into the Dsp16 layout (`k - zk` and `v - zv` as 16-bit weights, the
//! query and probability zero points folded into the bias), like [`crate::packed::matmul_packed`]; when they are
//! `x` itself (Fused-Weight Self-Attention: `Q_h·K_hᵀ = (x·W_QK,h + u_h)·xᵀ`, and `W_V,h·W_O,h` fused likewise)
//! they are packed once for all heads.
//!
//! The row-major schedule with a Dsp16 output projection need not concatenate the heads: each head's outputs can
//! be added to the `i32` sums of the output projection at once (its columns of the packed weights, the same `SMLAD`
//! products in another order, so the same wrapping sums), and a block's rows requantized after its last head. It
//! does so when that takes less scratch ([`MhsaShape::sums_heads`]: many heads, e.g. EEGFormer's 8 × 32 columns
//! into 32 outputs, not a single head).
//!
//! Scratch: one `i32` slice, [`MhsaScratch::total_words`] long: words for the packed keys, values, the activation
//! panel and the output sums, then bytes for the row blocks (see [`MhsaShape::scratch`]). Alignment: word-aligned
//! by its type.
//!
//! [`softmax_i8`]: crate::softmax::softmax_i8

use crate::activation::lut_i8_in_place;
use crate::packed::{
    dsp16_acc_add, dsp16_acc_init, dsp16_acc_store, dsp16_high_mul, dsp16_part_panel_words, linear_packed,
    linear_packed_requant, pack_activations, pack_linear, LinearWeights, PackedLayout, PackedLinear,
};
use crate::requant::{Requant, ShiftRequant};
use crate::softmax::{
    check_isoftmax, check_softmax_i8, deeploy_softmax_rows_i8, masked_softmax_i8_rows, softmax_i8_rows, ISoftmaxParams,
    RowMask, SoftmaxI8Params,
};
use crate::KernelError;

/// Sizes of a self-attention block `x [seq, embed] -> out [seq, out_dim]` and where its operands come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhsaShape {
    /// Tokens.
    pub seq: usize,
    /// Width of `x`.
    pub embed: usize,
    /// Heads.
    pub heads: usize,
    /// Width of each head's queries and keys (`embed` when the keys are `x` itself).
    pub qk_dim: usize,
    /// Width of each head's values (`embed` when the values are `x` itself).
    pub v_dim: usize,
    /// Width of the output.
    pub out_dim: usize,
    /// Keys are a projection of `x` (else `x` itself).
    pub project_k: bool,
    /// Values are a projection of `x` (else `x` itself).
    pub project_v: bool,
    /// Layout of the packed query/key/value projections.
    pub proj_layout: PackedLayout,
    /// Layout of the packed output projection.
    pub out_layout: PackedLayout,
}

/// The order of the computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MhsaSchedule {
    /// Head by head (one head's keys and values packed at a time), its score rows `block_rows` at a time; every
    /// row's head outputs are concatenated, then projected once.
    HeadMajor {
        /// Query rows per block.
        block_rows: usize,
    },
    /// Query rows `block_rows` at a time through every head, then the output projection of those rows (summed
    /// head by head instead of concatenated when [`MhsaShape::sums_heads`]). Needs keys and values that are `x`
    /// itself (packed once); output rows may overwrite the input rows they come from.
    RowMajor {
        /// Query rows per block.
        block_rows: usize,
    },
    /// Head by head, a head's whole score map at once, its keys projected and packed `key_rows` positions at a
    /// time and its values `value_cols` columns at a time, so that neither is ever whole: the least scratch for
    /// wide heads over short sequences (ICCT: 64 tokens, one head of 192), where packed keys and values (16 bits
    /// per element) outweigh the score map. Needs projected keys and values.
    StreamedKv {
        /// Key positions per chunk.
        key_rows: usize,
        /// Value columns per chunk (a multiple of 4, the widest packed tile, unless all of them).
        value_cols: usize,
    },
}

impl MhsaSchedule {
    /// Query rows per block (every row for [`MhsaSchedule::StreamedKv`]).
    pub fn block_rows(self) -> usize {
        match self {
            MhsaSchedule::HeadMajor { block_rows } | MhsaSchedule::RowMajor { block_rows } => block_rows,
            MhsaSchedule::StreamedKv { .. } => usize::MAX,
        }
    }
}

/// Scratch of one call: `words` `i32`, then `bytes` `i8`, in one `i32` slice of [`MhsaScratch::total_words`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhsaScratch {
    /// `i32` words: packed keys, packed values, activation panel, the row block's output sums (when
    /// [`MhsaShape::sums_heads`]).
    pub words: usize,
    /// Bytes: the row block's queries (then head outputs) and scores, the projected keys/values of one head in
    /// the same bytes (head-major), the concatenated head outputs (every row head-major; the row block's
    /// row-major without output sums).
    pub bytes: usize,
}

impl MhsaScratch {
    /// Length of the `i32` scratch slice.
    pub fn total_words(&self) -> usize {
        self.words + self.bytes.div_ceil(4)
    }
}

impl MhsaShape {
    /// Words of the packed keys (`[seq, qk_dim]` as Dsp16 weights) and values (`[v_dim, seq]`) `schedule` keeps:
    /// all of them, or for [`MhsaSchedule::StreamedKv`] one chunk of either in the same words.
    fn packed_words(&self, schedule: MhsaSchedule) -> (usize, usize) {
        let dsp = PackedLayout::Dsp16;
        match schedule {
            MhsaSchedule::StreamedKv { key_rows, value_cols } => {
                let (kr, vc) = (key_rows.min(self.seq), value_cols.min(self.v_dim));
                (dsp.words(kr, self.qk_dim).max(dsp.words(vc, self.seq)), 0)
            }
            _ => (dsp.words(self.seq, self.qk_dim), dsp.words(self.v_dim, self.seq)),
        }
    }

    /// Whether `schedule` sums the output projection head by head instead of projecting concatenated head outputs:
    /// row-major with a Dsp16 output projection, when the `i32` sums of a row block and the panel of one head's
    /// columns take less scratch than the block's concatenated head outputs and the panel of all of them.
    // Inlined, as what it calls: a constant shape and schedule make it a constant (see `mhsa_i8`).
    #[inline(always)]
    pub fn sums_heads(&self, schedule: MhsaSchedule) -> bool {
        let MhsaSchedule::RowMajor { block_rows } = schedule else { return false };
        let b = block_rows.min(self.seq);
        let sums = 4 * (self.panel_words(true) + b * self.out_dim);
        let concat = 4 * self.panel_words(false) + b * self.concat_dim();
        self.out_layout == PackedLayout::Dsp16 && sums < concat
    }

    /// Words of the largest activation panel any product of the block needs (the output projection's: one head's
    /// columns when summed head by head).
    #[inline(always)]
    fn panel_words(&self, sums_heads: bool) -> usize {
        let dsp = PackedLayout::Dsp16;
        let out = if sums_heads {
            dsp16_part_panel_words(self.v_dim)
        } else {
            self.out_layout.scratch_words(self.concat_dim())
        };
        self.proj_layout
            .scratch_words(self.embed)
            .max(dsp.scratch_words(self.qk_dim))
            .max(dsp.scratch_words(self.seq))
            .max(out)
    }

    /// Width of the concatenated head outputs.
    fn concat_dim(&self) -> usize {
        self.heads * self.v_dim
    }

    /// Bytes of one head's projected keys or values (head-major; 0 when both are `x`).
    fn projected_bytes(&self) -> usize {
        let k = if self.project_k { self.qk_dim } else { 0 };
        let v = if self.project_v { self.v_dim } else { 0 };
        self.seq * k.max(v)
    }

    /// Bytes of the buffers of a block of `b` rows: queries, then (over them) head outputs; scores.
    fn block_bytes(&self, b: usize) -> usize {
        b * (self.qk_dim.max(self.v_dim) + self.seq)
    }

    /// Scratch `schedule` needs, or `None` when it does not apply (zero sizes or block rows, keys or values of the
    /// wrong width, a row-major schedule with projected keys or values).
    pub fn scratch(&self, schedule: MhsaSchedule) -> Option<MhsaScratch> {
        let b = schedule.block_rows().min(self.seq);
        let dims = [self.seq, self.embed, self.heads, self.qk_dim, self.v_dim, self.out_dim, b];
        let shared_ok = (self.project_k || self.qk_dim == self.embed) && (self.project_v || self.v_dim == self.embed);
        if dims.contains(&0) || !shared_ok {
            return None;
        }
        let sums = self.sums_heads(schedule);
        let (key_words, value_words) = self.packed_words(schedule);
        let words = key_words + value_words + self.panel_words(sums) + if sums { b * self.out_dim } else { 0 };
        let block = self.block_bytes(b);
        let bytes = match schedule {
            MhsaSchedule::RowMajor { .. } if self.project_k || self.project_v => return None,
            MhsaSchedule::RowMajor { .. } => block + if sums { 0 } else { b * self.concat_dim() },
            MhsaSchedule::HeadMajor { .. } => self.projected_bytes().max(block) + self.seq * self.concat_dim(),
            MhsaSchedule::StreamedKv { key_rows, value_cols } => {
                let vc_ok = value_cols % 4 == 0 || value_cols >= self.v_dim;
                if !self.project_k || !self.project_v || key_rows == 0 || value_cols == 0 || !vc_ok {
                    return None;
                }
                let [kr, vc] = [key_rows.min(self.seq), value_cols.min(self.v_dim)];
                let chunk = StreamChunks::new(self, kr, vc);
                let concat = if self.heads > 1 { self.seq * self.concat_dim() } else { 0 };
                block + chunk.projected + chunk.product + concat
            }
        };
        Some(MhsaScratch { words, bytes })
    }
}

/// Byte buffers of [`MhsaSchedule::StreamedKv`] besides the whole-map [`Block`]: one chunk of projected keys
/// (`key_rows × qk_dim`) or values (`seq × value_cols`), and one product of a chunk (score columns `seq × key_rows`
/// or output columns `seq × value_cols`).
struct StreamChunks {
    projected: usize,
    product: usize,
}

impl StreamChunks {
    fn new(s: &MhsaShape, kr: usize, vc: usize) -> Self {
        StreamChunks { projected: (kr * s.qk_dim).max(s.seq * vc), product: s.seq * kr.max(vc) }
    }
}

/// How a layer with packed weights (a projection, the output projection) requantizes its `i32` sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRequant<'a> {
    /// `HighMul` by the multipliers packed with the weights, plus an output zero point.
    HighMul {
        /// Output zero point.
        zero_point: i32,
    },
    /// Deeploy's `RequantShift`, per tensor or per output channel, with bounds inside int8 (so zero point 0);
    /// the weights must be packed as Dsp16 (their packed multipliers are not used).
    Shift(ShiftRequant<'a>),
}

impl LayerRequant<'_> {
    /// Zero point of the outputs.
    fn zero_point(&self) -> i32 {
        match self {
            LayerRequant::HighMul { zero_point } => *zero_point,
            LayerRequant::Shift(_) => 0,
        }
    }

    /// Whether the requantization applies to a layer of `n` outputs packed in `layout`.
    fn fits(&self, n: usize, layout: PackedLayout) -> bool {
        match self {
            LayerRequant::HighMul { .. } => true,
            LayerRequant::Shift(rq) => {
                let (lo, hi) = rq.bounds();
                layout == PackedLayout::Dsp16 && lo >= -128 && hi <= 127 && (rq.channels() == 1 || rq.channels() == n)
            }
        }
    }
}

/// Requantization of a product of two activations (`Q·Kᵀ`, `P·V`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductRequant<'a> {
    /// `HighMul` by one multiplier, plus an output zero point.
    HighMul {
        /// `HighMul` multiplier of `s_a·s_b / s_out`.
        mul: i32,
        /// Output zero point.
        zero_point: i32,
    },
    /// Deeploy's `RequantShift`, per tensor, with bounds inside int8.
    Shift(ShiftRequant<'a>),
}

impl<'a> ProductRequant<'a> {
    /// The multiplier packed with the run-time operand (unused by `Shift`).
    fn packed_mul(&self) -> i32 {
        match self {
            ProductRequant::HighMul { mul, .. } => *mul,
            ProductRequant::Shift(_) => 0,
        }
    }

    /// The same requantization of the product packed as a layer.
    fn layer(&self) -> LayerRequant<'a> {
        match *self {
            ProductRequant::HighMul { zero_point, .. } => LayerRequant::HighMul { zero_point },
            ProductRequant::Shift(rq) => LayerRequant::Shift(rq),
        }
    }
}

/// The softmax of the score rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MhsaSoftmax<'a> {
    /// mote's int8 softmax ([`crate::softmax::softmax_i8`]), with or without a mask.
    I8(SoftmaxI8Params<'a>),
    /// Deeploy's `ITAMax` ([`crate::softmax::itamax`]); its probabilities `0..=255` are stored as `p - 128`
    /// (zero point -128). No mask.
    ItaMax,
    /// Deeploy's `iSoftmax` ([`crate::softmax::isoftmax`]), stored like `ItaMax`. No mask.
    ISoftmax(ISoftmaxParams),
}

impl MhsaSoftmax<'_> {
    /// Zero point of the probabilities.
    fn probability_zero_point(&self) -> i32 {
        match self {
            MhsaSoftmax::I8(p) => p.out_zero_point,
            MhsaSoftmax::ItaMax | MhsaSoftmax::ISoftmax(_) => -128,
        }
    }

    /// Checks the parameters for rows of `seq` with `mask`.
    fn check<const DEEPLOY: bool>(&self, seq: usize, mask: Option<RowMask<'_>>) -> Result<(), KernelError> {
        match (self, mask) {
            (MhsaSoftmax::I8(p), _) if !DEEPLOY => check_softmax_i8(seq, mask, p),
            (MhsaSoftmax::ItaMax, None) if DEEPLOY => Ok(()),
            (MhsaSoftmax::ISoftmax(p), None) if DEEPLOY => check_isoftmax(seq, p),
            _ => Err(KernelError::InvalidParam),
        }
    }

    /// The softmax of unmasked score rows of `seq`, in place (parameters checked: Deeploy's with `DEEPLOY`).
    #[inline(always)]
    fn rows<const DEEPLOY: bool>(&self, scores: &mut [i8], seq: usize) {
        match self {
            MhsaSoftmax::I8(p) if !DEEPLOY => softmax_i8_rows(scores, seq, p),
            MhsaSoftmax::ItaMax if DEEPLOY => deeploy_softmax_rows_i8(scores, seq, None),
            MhsaSoftmax::ISoftmax(p) if DEEPLOY => deeploy_softmax_rows_i8(scores, seq, Some(p)),
            _ => {}
        }
    }
}

/// Projections of `x` for every head: `heads` packed `[dim, embed]` layers one after the other (`layout.words(dim,
/// embed)` words each, `x`'s zero point folded into their bias), their requantization, and an optional table
/// applied to every projected value before the products read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadProjection<'a> {
    /// The packed layers.
    pub words: &'a [i32],
    /// Requantization of the projected tensor (per-channel parameters over every head's channels).
    pub requant: LayerRequant<'a>,
    /// A table over the projected values (indexed by value + 128) and the zero point of its results: onnxruntime's
    /// QDQ attention scales queries and keys each by `P^(-1/4)`, a requantizing `Mul` after the head split.
    pub table: Option<(&'a [i8; 256], i32)>,
}

impl HeadProjection<'_> {
    /// Zero point of the values the products read (after the table, if any).
    fn operand_zero_point(&self) -> i32 {
        self.table.map_or(self.requant.zero_point(), |(_, zp)| zp)
    }

    /// The requantization of head `h` (`dim` outputs) in a block of Deeploy's form (`DEEPLOY`) or mote's.
    fn head_requant<const DEEPLOY: bool>(&self, dim: usize, h: usize) -> Result<LayerRequant<'_>, KernelError> {
        self.channels_requant::<DEEPLOY>(h * dim, dim)
    }

    /// The requantization of output channels `start..start + len` (over every head's channels).
    fn channels_requant<const DEEPLOY: bool>(&self, start: usize, len: usize) -> Result<LayerRequant<'_>, KernelError> {
        match self.requant {
            LayerRequant::Shift(rq) if DEEPLOY => {
                rq.channel_range(start, len).map(LayerRequant::Shift).ok_or(KernelError::ShapeMismatch)
            }
            rq => Ok(rq),
        }
    }

    /// Applies the table, if any, to projected values.
    fn apply_table(&self, t: &mut [i8]) -> Result<(), KernelError> {
        match self.table {
            Some((table, _)) => lut_i8_in_place(t, table),
            None => Ok(()),
        }
    }
}

/// Packs a projection `src` (`[heads·dim, k]`, multipliers per tensor or per channel) as `heads` packed `[dim, k]`
/// layers one after the other, the form [`HeadProjection`] reads (`heads · layout.words(dim, k)` words).
///
/// Errors: `heads` zero or not dividing `src.n`, lengths that disagree with the sizes.
pub fn pack_heads(
    layout: PackedLayout,
    src: &LinearWeights<'_>,
    heads: usize,
    out: &mut [i32],
) -> Result<(), KernelError> {
    let dim = src.n.checked_div(heads).filter(|&d| d * heads == src.n && d > 0).ok_or(KernelError::ShapeMismatch)?;
    let per_head = layout.words(dim, src.k);
    if Some(out.len()) != heads.checked_mul(per_head) || src.w.len() != src.n * src.k {
        return Err(KernelError::ShapeMismatch);
    }
    for (h, words) in out.chunks_exact_mut(per_head).enumerate() {
        let rows = h * dim..(h + 1) * dim;
        let mul =
            if src.mul.len() == 1 { src.mul } else { src.mul.get(rows.clone()).ok_or(KernelError::ShapeMismatch)? };
        let bias = match src.bias {
            Some(b) => Some(b.get(rows.clone()).ok_or(KernelError::ShapeMismatch)?),
            None => None,
        };
        let w = src.w.get(rows.start * src.k..rows.end * src.k).ok_or(KernelError::ShapeMismatch)?;
        pack_linear(layout, &LinearWeights { w, bias, mul, n: dim, ..*src }, words)?;
    }
    Ok(())
}

/// The integer parameters of one block (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct MhsaI8<'a> {
    /// Sizes and layouts.
    pub shape: MhsaShape,
    /// Zero point of `x`.
    pub x_zero_point: i32,
    /// Query projections (`qk_dim` per head).
    pub q: HeadProjection<'a>,
    /// Key projections, or `None` when the keys are `x`.
    pub k: Option<HeadProjection<'a>>,
    /// Value projections, or `None` when the values are `x`.
    pub v: Option<HeadProjection<'a>>,
    /// `Q·Kᵀ` requantization.
    pub scores: ProductRequant<'a>,
    /// Softmax over each score row.
    pub softmax: MhsaSoftmax<'a>,
    /// Optional mask of the score rows (e.g. causal; mote's softmax only).
    pub mask: Option<RowMask<'a>>,
    /// `P·V` requantization.
    pub av: ProductRequant<'a>,
    /// Output projection `[out_dim, heads·v_dim]`.
    pub out: PackedLinear<'a>,
    /// Its requantization.
    pub out_requant: LayerRequant<'a>,
}

/// Input and output of a call: separate, or one buffer whose input rows the output overwrites.
enum Io<'x> {
    Split(&'x [i8], &'x mut [i8]),
    Shared(&'x mut [i8]),
}

impl Io<'_> {
    fn x(&self) -> &[i8] {
        match self {
            Io::Split(x, _) => x,
            Io::Shared(io) => io,
        }
    }

    fn out(&mut self) -> &mut [i8] {
        match self {
            Io::Split(_, out) => out,
            Io::Shared(io) => io,
        }
    }
}

/// The block `x [seq, embed] -> out [seq, out_dim]` in `schedule`'s order.
///
/// `scratch` holds at least [`MhsaScratch::total_words`] of [`MhsaShape::scratch`]. Errors, before anything is
/// written: a schedule that does not apply, lengths that disagree with the shape, softmax parameters or a mask
/// that the softmax refuses, `Shift` requantizations of other layouts, channel counts or bounds, requantizations
/// and softmax of both mote's and Deeploy's forms.
// Always inlined (as `mhsa_i8_in_place`), so that a call with a constant shape and schedule (as generated code
// makes) links only that schedule's code.
#[inline(always)]
pub fn mhsa_i8(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    x: &[i8],
    out: &mut [i8],
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    run(p, schedule, Io::Split(x, out), scratch)
}

/// [`mhsa_i8`] with the output written over the input in `io` (token overwriting; needs `out_dim == embed`).
#[inline(always)]
pub fn mhsa_i8_in_place(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    io: &mut [i8],
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    if p.shape.out_dim != p.shape.embed {
        return Err(KernelError::ShapeMismatch);
    }
    run(p, schedule, Io::Shared(io), scratch)
}

/// Checks every argument of [`mhsa_i8`] against the shape, for a block of Deeploy's form (`DEEPLOY`) or mote's.
fn check<const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    io: &Io<'_>,
    scratch: &[i32],
) -> Result<MhsaScratch, KernelError> {
    let s = &p.shape;
    let need = s.scratch(schedule).ok_or(KernelError::InvalidParam)?;
    let proj_ok = |proj: Option<&HeadProjection<'_>>, dim: usize, projected: bool| match proj {
        Some(h) => projected && Some(h.words.len()) == s.heads.checked_mul(s.proj_layout.words(dim, s.embed)),
        None => !projected,
    };
    let (x_len, out_len) = match io {
        Io::Split(x, out) => (x.len(), out.len()),
        Io::Shared(io) => (io.len(), io.len()),
    };
    let ok = proj_ok(Some(&p.q), s.qk_dim, true)
        && proj_ok(p.k.as_ref(), s.qk_dim, s.project_k)
        && proj_ok(p.v.as_ref(), s.v_dim, s.project_v)
        && p.out.layout() == s.out_layout
        && p.out.n() == s.out_dim
        && p.out.k() == s.concat_dim()
        && Some(x_len) == s.seq.checked_mul(s.embed)
        && Some(out_len) == s.seq.checked_mul(s.out_dim)
        && scratch.len() >= need.total_words();
    if !ok {
        return Err(KernelError::ShapeMismatch);
    }
    let layer_ok = |proj: Option<&HeadProjection<'_>>, dim: usize| {
        proj.is_none_or(|h| h.requant.fits(s.heads * dim, s.proj_layout))
    };
    let product_ok = |rq: &ProductRequant<'_>| rq.layer().fits(1, PackedLayout::Dsp16);
    // (`HighMul` needs no check: mote's form has nothing more to check.)
    let shift_ok = !DEEPLOY
        || (layer_ok(Some(&p.q), s.qk_dim)
            && layer_ok(p.k.as_ref(), s.qk_dim)
            && layer_ok(p.v.as_ref(), s.v_dim)
            && product_ok(&p.scores)
            && product_ok(&p.av)
            && p.out_requant.fits(s.out_dim, s.out_layout));
    if deeploy_form(p) != Some(DEEPLOY) || !shift_ok {
        return Err(KernelError::InvalidParam);
    }
    p.softmax.check::<DEEPLOY>(s.seq, p.mask)?;
    Ok(need)
}

/// Whether the block is Deeploy's integer form (every requantization `Shift`, an `ITAMax` or `iSoftmax`) or mote's
/// (every one `HighMul`, mote's softmax); `None` when it mixes them.
fn deeploy_form(p: &MhsaI8<'_>) -> Option<bool> {
    let shift = |rq: LayerRequant<'_>| matches!(rq, LayerRequant::Shift(_));
    let deeploy = shift(p.out_requant);
    let layers = [Some(&p.q), p.k.as_ref(), p.v.as_ref()].into_iter().flatten().map(|h| h.requant);
    let uniform = layers.chain([p.scores.layer(), p.av.layer()]).all(|rq| shift(rq) == deeploy)
        && deeploy != matches!(p.softmax, MhsaSoftmax::I8(_));
    uniform.then_some(deeploy)
}

/// The packed layer of head `h` of `proj` (`dim` outputs).
fn head<'a>(s: &MhsaShape, proj: &HeadProjection<'a>, dim: usize, h: usize) -> Result<PackedLinear<'a>, KernelError> {
    let w = s.proj_layout.words(dim, s.embed);
    let words = proj.words.get(h * w..(h + 1) * w).ok_or(KernelError::ShapeMismatch)?;
    PackedLinear::new(s.proj_layout, dim, s.embed, words)
}

/// One packed product (not inlined: one copy of the dispatch serves every product of the block). `DEEPLOY` as a
/// constant: a block links only its own requantization's kernel.
#[inline(never)]
fn product<const DEEPLOY: bool>(
    x: &[i8],
    w: &PackedLinear<'_>,
    m: usize,
    rq: LayerRequant<'_>,
    panel: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    match rq {
        LayerRequant::HighMul { zero_point } if !DEEPLOY => linear_packed(x, w, m, zero_point, panel, out),
        LayerRequant::Shift(rq) if DEEPLOY => linear_packed_requant(x, w, m, &Requant::Shift(rq), panel, out),
        _ => Err(KernelError::InvalidParam),
    }
}

/// Packs keys `[seq, dim]` (zero point `zk`) as the Dsp16 weights `[seq, dim]` of the score product of queries
/// with zero point `zq`.
fn pack_keys(keys: &[i8], seq: usize, dim: usize, zk: i32, zq: i32, rq: ProductRequant<'_>, out: &mut [i32]) {
    pack_activations::<true>(keys, (dim, seq), (zq.wrapping_neg(), zk.wrapping_neg()), rq.packed_mul(), out);
}

/// Packs values `[seq, dim]` (zero point `zv`) as the Dsp16 weights `[dim, seq]` of the product with
/// probabilities of zero point `zp`.
fn pack_values(values: &[i8], seq: usize, dim: usize, zv: i32, zp: i32, rq: ProductRequant<'_>, out: &mut [i32]) {
    pack_activations::<false>(values, (seq, dim), (zp.wrapping_neg(), zv.wrapping_neg()), rq.packed_mul(), out);
}

/// Splits off the first `n` elements of `buf`.
fn take<'b, T>(buf: &mut &'b mut [T], n: usize) -> Result<&'b mut [T], KernelError> {
    let (head, rest) = core::mem::take(buf).split_at_mut_checked(n).ok_or(KernelError::ShapeMismatch)?;
    *buf = rest;
    Ok(head)
}

/// Row-block buffers shared by both schedules.
struct Block<'b> {
    /// The block's queries, then (once the scores are computed) its head outputs.
    qo: &'b mut [i8],
    scores: &'b mut [i8],
}

impl<'b> Block<'b> {
    /// The buffers of `b` rows at the start of `buf`.
    fn new(s: &MhsaShape, b: usize, mut buf: &'b mut [i8]) -> Result<Self, KernelError> {
        Ok(Block { qo: take(&mut buf, b * s.qk_dim.max(s.v_dim))?, scores: take(&mut buf, b * s.seq)? })
    }
}

/// Rows `r0..r0+rows` of head `h`: queries from `x_rows`, scores against `keys`, softmax, values; returns the
/// head's outputs `[rows, v_dim]` (in `blk`).
#[allow(clippy::too_many_arguments)]
fn head_rows<'o, const MASKED: bool, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    x_rows: &[i8],
    (r0, rows, h): (usize, usize, usize),
    keys: &PackedLinear<'_>,
    values: &PackedLinear<'_>,
    blk: &'o mut Block<'_>,
    panel: &mut [i32],
) -> Result<&'o [i8], KernelError> {
    let s = &p.shape;
    let (pq, pv) = (s.qk_dim, s.v_dim);
    let q = blk.qo.get_mut(..rows * pq).ok_or(KernelError::ShapeMismatch)?;
    product::<DEEPLOY>(x_rows, &head(s, &p.q, pq, h)?, rows, p.q.head_requant::<DEEPLOY>(pq, h)?, panel, q)?;
    p.q.apply_table(q)?;
    let scores = blk.scores.get_mut(..rows * s.seq).ok_or(KernelError::ShapeMismatch)?;
    match p.mask {
        Some(mask) if MASKED => masked_probabilities(p, q, (r0, rows), keys, mask, scores, panel)?,
        _ => {
            product::<DEEPLOY>(q, keys, rows, p.scores.layer(), panel, scores)?;
            p.softmax.rows::<DEEPLOY>(scores, s.seq);
        }
    }
    let o = blk.qo.get_mut(..rows * pv).ok_or(KernelError::ShapeMismatch)?;
    product::<DEEPLOY>(scores, values, rows, p.av.layer(), panel, o)?;
    Ok(o)
}

/// The softmax of the masked scores of rows `r0..r0 + rows` of queries `q` (one copy for every schedule). Keys past
/// the last one any row of the block allows (a causal mask's future) get no score and no softmax, just the
/// probability zero (the output zero point) for the value product.
#[inline(never)]
fn masked_probabilities(
    p: &MhsaI8<'_>,
    q: &[i8],
    (r0, rows): (usize, usize),
    keys: &PackedLinear<'_>,
    mask: RowMask<'_>,
    scores: &mut [i8],
    panel: &mut [i32],
) -> Result<(), KernelError> {
    // Masks are checked to come with mote's softmax.
    let MhsaSoftmax::I8(softmax) = &p.softmax else { return Err(KernelError::InvalidParam) };
    let seq = p.shape.seq;
    let limit = allowed_prefix(mask, seq, r0, rows).max(1);
    let near = scores.get_mut(..rows * limit).ok_or(KernelError::ShapeMismatch)?;
    product::<false>(q, &keys.first_outputs(limit)?, rows, p.scores.layer(), panel, near)?;
    masked_softmax_i8_rows(near, (limit, seq), mask, r0, softmax);
    if limit < seq {
        // Rows of `limit` to rows of `seq`, the last first (`copy_within` is a memmove: 1.5 KB of flash, and
        // 10x faster than a byte loop; one product per row instead costs 3-8% more instructions).
        let zp = softmax.out_zero_point.clamp(-128, 127) as i8;
        for r in (0..rows).rev() {
            scores.copy_within(r * limit..(r + 1) * limit, r * seq);
            scores.get_mut(r * seq + limit..(r + 1) * seq).ok_or(KernelError::ShapeMismatch)?.fill(zp);
        }
    }
    Ok(())
}

/// One past the last column that any of rows `r0..r0 + rows` of the `[_, seq]` mask allows (0 if none).
fn allowed_prefix(m: RowMask<'_>, seq: usize, r0: usize, rows: usize) -> usize {
    (r0..r0 + rows).fold(0, |limit, r| {
        let start = (r % m.rows) * seq;
        let beyond = m.allowed.get(start + limit..start + seq).unwrap_or(&[]);
        beyond.iter().rposition(|&a| a).map_or(limit, |j| limit + j + 1)
    })
}

/// Copies head `h`'s outputs `o [rows, v_dim]` into its columns of rows `c0..` of `concat [_, heads·v_dim]`.
fn concat_head(s: &MhsaShape, o: &[i8], h: usize, concat: &mut [i8], c0: usize) -> Result<(), KernelError> {
    let cd = s.concat_dim();
    let rows = concat.get_mut(c0 * cd..).ok_or(KernelError::ShapeMismatch)?;
    copy_columns(o, s.v_dim, rows, cd, h * s.v_dim)
}

/// Copies `src [rows, width]` into columns `col..col + width` of the first rows of `dst [_, dst_width]`.
fn copy_columns(src: &[i8], width: usize, dst: &mut [i8], dst_width: usize, col: usize) -> Result<(), KernelError> {
    for (r, row) in src.chunks_exact(width).enumerate() {
        let at = r * dst_width + col;
        dst.get_mut(at..at + width).ok_or(KernelError::ShapeMismatch)?.copy_from_slice(row);
    }
    Ok(())
}

/// The schedule's code (see [`mhsa_i8`] on inlining).
#[inline(always)]
fn run(p: &MhsaI8<'_>, schedule: MhsaSchedule, io: Io<'_>, scratch: &mut [i32]) -> Result<(), KernelError> {
    // `MASKED` and `DEEPLOY` as constants: a block without a mask links none of the masked code, and a block of
    // one form none of the other's requantization and softmax.
    // (The output requantization tells the form, a constant in generated code; `check` refuses mixed forms.)
    match (p.mask.is_some(), matches!(p.out_requant, LayerRequant::Shift(_))) {
        (false, false) => run_schedule::<false, false>(p, schedule, io, scratch),
        (true, false) => run_schedule::<true, false>(p, schedule, io, scratch),
        (false, true) => run_schedule::<false, true>(p, schedule, io, scratch),
        // Masks with Deeploy's softmax: refused by `check`.
        (true, true) => Err(KernelError::InvalidParam),
    }
}

/// [`run`] with or without a mask.
#[inline(always)]
fn run_schedule<const MASKED: bool, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    io: Io<'_>,
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    match schedule {
        MhsaSchedule::HeadMajor { .. } => head_major::<MASKED, DEEPLOY>(p, schedule, io, scratch),
        MhsaSchedule::StreamedKv { .. } => streamed_kv::<MASKED, DEEPLOY>(p, schedule, io, scratch),
        MhsaSchedule::RowMajor { .. } if p.shape.sums_heads(schedule) => {
            row_major::<true, MASKED, DEEPLOY>(p, schedule, io, scratch)
        }
        MhsaSchedule::RowMajor { .. } => row_major::<false, MASKED, DEEPLOY>(p, schedule, io, scratch),
    }
}

/// The scratch of a call, split: packed keys, packed values, the panel, the row block's output sums (when the
/// heads are summed), then the bytes.
struct Scratch<'s> {
    key_words: &'s mut [i32],
    value_words: &'s mut [i32],
    panel: &'s mut [i32],
    sums: &'s mut [i32],
    bytes: &'s mut [i8],
}

/// Checks the arguments, splits the scratch and packs the keys and values that are `x` itself (once for every
/// head).
fn prepare<'s, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    io: &Io<'_>,
    scratch: &'s mut [i32],
) -> Result<Scratch<'s>, KernelError> {
    let need = check::<DEEPLOY>(p, schedule, io, scratch)?;
    let s = &p.shape;
    let sums_heads = s.sums_heads(schedule);
    let (mut words, bytes) = scratch.split_at_mut_checked(need.words).ok_or(KernelError::ShapeMismatch)?;
    let (key_words, value_words) = s.packed_words(schedule);
    let sc = Scratch {
        key_words: take(&mut words, key_words)?,
        value_words: take(&mut words, value_words)?,
        panel: take(&mut words, s.panel_words(sums_heads))?,
        sums: take(&mut words, if sums_heads { schedule.block_rows().min(s.seq) * s.out_dim } else { 0 })?,
        bytes: bytemuck::cast_slice_mut(bytes),
    };
    if !s.project_k {
        pack_keys(io.x(), s.seq, s.embed, p.x_zero_point, p.q.operand_zero_point(), p.scores, sc.key_words);
    }
    if !s.project_v {
        let zp_prob = p.softmax.probability_zero_point();
        pack_values(io.x(), s.seq, s.embed, p.x_zero_point, zp_prob, p.av, sc.value_words);
    }
    Ok(sc)
}

/// [`MhsaSchedule::HeadMajor`] (not inlined: inlined into its caller, the softmax rows compile to more
/// instructions on Cortex-M, measured on ECGFormer).
#[inline(never)]
fn head_major<const MASKED: bool, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    mut io: Io<'_>,
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    let Scratch { key_words, value_words, panel, mut bytes, .. } = prepare::<DEEPLOY>(p, schedule, &io, scratch)?;
    let s = p.shape;
    let b = schedule.block_rows().min(s.seq);
    let (seq, e, pq, pv, cd) = (s.seq, s.embed, s.qk_dim, s.v_dim, s.concat_dim());
    let zp_prob = p.softmax.probability_zero_point();
    // One head's projected keys or values, then (packed) the same bytes hold the row blocks.
    let shared = take(&mut bytes, s.projected_bytes().max(s.block_bytes(b)))?;
    let concat = take(&mut bytes, seq * cd)?;
    for h in 0..s.heads {
        if let Some(k) = &p.k {
            let keys = shared.get_mut(..seq * pq).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(io.x(), &head(&s, k, pq, h)?, seq, k.head_requant::<DEEPLOY>(pq, h)?, panel, keys)?;
            k.apply_table(keys)?;
            pack_keys(keys, seq, pq, k.operand_zero_point(), p.q.operand_zero_point(), p.scores, key_words);
        }
        if let Some(v) = &p.v {
            let values = shared.get_mut(..seq * pv).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(io.x(), &head(&s, v, pv, h)?, seq, v.head_requant::<DEEPLOY>(pv, h)?, panel, values)?;
            v.apply_table(values)?;
            pack_values(values, seq, pv, v.operand_zero_point(), zp_prob, p.av, value_words);
        }
        let keys = PackedLinear::new(PackedLayout::Dsp16, seq, pq, key_words)?;
        let values = PackedLinear::new(PackedLayout::Dsp16, pv, seq, value_words)?;
        let mut blk = Block::new(&s, b, shared)?;
        for r0 in (0..seq).step_by(b) {
            let rows = b.min(seq - r0);
            let x = io.x().get(r0 * e..(r0 + rows) * e).ok_or(KernelError::ShapeMismatch)?;
            let o = head_rows::<MASKED, DEEPLOY>(p, x, (r0, rows, h), &keys, &values, &mut blk, panel)?;
            concat_head(&s, o, h, concat, r0)?;
        }
    }
    product::<DEEPLOY>(concat, &p.out, seq, p.out_requant, panel, io.out())
}

/// [`MhsaSchedule::StreamedKv`].
#[inline(never)]
fn streamed_kv<const MASKED: bool, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    mut io: Io<'_>,
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    let MhsaSchedule::StreamedKv { key_rows, value_cols } = schedule else { return Err(KernelError::InvalidParam) };
    let Scratch { key_words: packed, panel, mut bytes, .. } = prepare::<DEEPLOY>(p, schedule, &io, scratch)?;
    let (Some(kp), Some(vp)) = (&p.k, &p.v) else { return Err(KernelError::InvalidParam) };
    let s = p.shape;
    let (seq, e, pq, pv, cd) = (s.seq, s.embed, s.qk_dim, s.v_dim, s.concat_dim());
    let (kr, vc) = (key_rows.min(seq), value_cols.min(pv));
    let chunks = StreamChunks::new(&s, kr, vc);
    let blk = Block::new(&s, seq, take(&mut bytes, s.block_bytes(seq))?)?;
    let projected = take(&mut bytes, chunks.projected)?;
    let columns = take(&mut bytes, chunks.product)?;
    let concat = take(&mut bytes, if s.heads > 1 { seq * cd } else { 0 })?;
    let zq = p.q.operand_zero_point();
    for h in 0..s.heads {
        let q = blk.qo.get_mut(..seq * pq).ok_or(KernelError::ShapeMismatch)?;
        product::<DEEPLOY>(io.x(), &head(&s, &p.q, pq, h)?, seq, p.q.head_requant::<DEEPLOY>(pq, h)?, panel, q)?;
        p.q.apply_table(q)?;
        let wk = head(&s, kp, pq, h)?;
        for j0 in (0..seq).step_by(kr) {
            let n = kr.min(seq - j0);
            let keys = projected.get_mut(..n * pq).ok_or(KernelError::ShapeMismatch)?;
            let x = io.x().get(j0 * e..(j0 + n) * e).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(x, &wk, n, kp.head_requant::<DEEPLOY>(pq, h)?, panel, keys)?;
            kp.apply_table(keys)?;
            let words = packed.get_mut(..PackedLayout::Dsp16.words(n, pq)).ok_or(KernelError::ShapeMismatch)?;
            pack_keys(keys, n, pq, kp.operand_zero_point(), zq, p.scores, words);
            let t = columns.get_mut(..seq * n).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(
                q,
                &PackedLinear::new(PackedLayout::Dsp16, n, pq, words)?,
                seq,
                p.scores.layer(),
                panel,
                t,
            )?;
            copy_columns(t, n, blk.scores, seq, j0)?;
        }
        match (p.mask, &p.softmax) {
            (Some(mask), MhsaSoftmax::I8(sm)) if MASKED => masked_softmax_i8_rows(blk.scores, (seq, seq), mask, 0, sm),
            _ => p.softmax.rows::<DEEPLOY>(blk.scores, seq),
        }
        // The queries are dead: the same bytes take the head's outputs.
        let o = blk.qo.get_mut(..seq * pv).ok_or(KernelError::ShapeMismatch)?;
        let wv = head(&s, vp, pv, h)?;
        for c0 in (0..pv).step_by(vc) {
            let n = vc.min(pv - c0);
            let values = projected.get_mut(..seq * n).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(
                io.x(),
                &wv.outputs(c0, n)?,
                seq,
                vp.channels_requant::<DEEPLOY>(h * pv + c0, n)?,
                panel,
                values,
            )?;
            vp.apply_table(values)?;
            let words = packed.get_mut(..PackedLayout::Dsp16.words(n, seq)).ok_or(KernelError::ShapeMismatch)?;
            let zp_prob = p.softmax.probability_zero_point();
            pack_values(values, seq, n, vp.operand_zero_point(), zp_prob, p.av, words);
            let t = columns.get_mut(..seq * n).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(
                blk.scores,
                &PackedLinear::new(PackedLayout::Dsp16, n, seq, words)?,
                seq,
                p.av.layer(),
                panel,
                t,
            )?;
            copy_columns(t, n, o, pv, c0)?;
        }
        if s.heads > 1 {
            concat_head(&s, o, h, concat, 0)?;
        }
    }
    let heads_out = if s.heads > 1 { &*concat } else { blk.qo.get(..seq * pv).ok_or(KernelError::ShapeMismatch)? };
    product::<DEEPLOY>(heads_out, &p.out, seq, p.out_requant, panel, io.out())
}

/// [`MhsaSchedule::RowMajor`], the output projection summed head by head (`SUMS`, see [`MhsaShape::sums_heads`])
/// or of the concatenated heads.
fn row_major<const SUMS: bool, const MASKED: bool, const DEEPLOY: bool>(
    p: &MhsaI8<'_>,
    schedule: MhsaSchedule,
    mut io: Io<'_>,
    scratch: &mut [i32],
) -> Result<(), KernelError> {
    let Scratch { key_words, value_words, panel, sums, mut bytes } = prepare::<DEEPLOY>(p, schedule, &io, scratch)?;
    let s = p.shape;
    let b = schedule.block_rows().min(s.seq);
    let (seq, e, pq, pv, cd, od) = (s.seq, s.embed, s.qk_dim, s.v_dim, s.concat_dim(), s.out_dim);
    let mut blk = Block::new(&s, b, take(&mut bytes, s.block_bytes(b))?)?;
    let concat = take(&mut bytes, if SUMS { 0 } else { b * cd })?;
    let keys = PackedLinear::new(PackedLayout::Dsp16, seq, pq, key_words)?;
    let values = PackedLinear::new(PackedLayout::Dsp16, pv, seq, value_words)?;
    for r0 in (0..seq).step_by(b) {
        let rows = b.min(seq - r0);
        let sums = sums.get_mut(..if SUMS { rows * od } else { 0 }).ok_or(KernelError::ShapeMismatch)?;
        if SUMS {
            dsp16_acc_init(&p.out, rows, sums)?;
        }
        // In place, the block's input rows are read by every head before its output rows overwrite them.
        let x = io.x().get(r0 * e..(r0 + rows) * e).ok_or(KernelError::ShapeMismatch)?;
        for h in 0..s.heads {
            let o = head_rows::<MASKED, DEEPLOY>(p, x, (r0, rows, h), &keys, &values, &mut blk, panel)?;
            if SUMS {
                dsp16_acc_add(o, (h * pv, pv), &p.out, rows, panel, sums)?;
            } else {
                concat_head(&s, o, h, concat, 0)?;
            }
        }
        let out = io.out().get_mut(r0 * od..(r0 + rows) * od).ok_or(KernelError::ShapeMismatch)?;
        if SUMS {
            match p.out_requant {
                LayerRequant::HighMul { zero_point } if !DEEPLOY => {
                    dsp16_acc_store(sums, &p.out, rows, dsp16_high_mul(zero_point), out)?
                }
                // Bounds inside int8 (checked).
                LayerRequant::Shift(rq) if DEEPLOY => {
                    dsp16_acc_store(sums, &p.out, rows, |a, j, _| rq.apply(a, j) as i8, out)?
                }
                _ => return Err(KernelError::InvalidParam),
            }
        } else {
            let c = concat.get(..rows * cd).ok_or(KernelError::ShapeMismatch)?;
            product::<DEEPLOY>(c, &p.out, rows, p.out_requant, panel, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::float_arithmetic)]
mod tests {
    use super::*;
    use crate::matmul::{av_requant, linear_requant, BatchedMatmul, MatDims};
    use crate::requant::{HighMulRequant, Requant};
    use crate::softmax::{isoftmax, itamax, softmax_i8};
    use crate::testutil::Lcg;
    use std::vec;
    use std::vec::Vec;

    /// A requantization of the test: mote's `HighMul` (multipliers, zero point) or Deeploy's `RequantShift`
    /// (multipliers, offsets, shift; int8 bounds).
    enum Rq {
        HighMul(Vec<i32>, i32),
        Shift(Vec<i32>, Vec<i32>, u32),
    }

    impl Rq {
        /// `n` random `HighMul` multipliers in `[lo, hi)`, or with `shift` `RequantShift` multipliers of the same
        /// scale (`lo >> 17 .. hi >> 17` over `2^15`: `HighMul` divides by `2^32`).
        fn random(r: &mut Lcg, n: usize, (lo, hi): (i32, i32), shift: bool) -> Rq {
            if shift {
                Rq::Shift(r.vec_i32(n, lo >> 17, hi >> 17), r.vec_i32(n, -1 << 14, 1 << 14), 15)
            } else {
                Rq::HighMul(r.vec_i32(n, lo, hi), r.i32_in(-20, 20))
            }
        }

        fn requant(&self) -> Requant<'_> {
            match self {
                Rq::HighMul(mul, zp) => Requant::HighMul(HighMulRequant::new(mul, *zp, -128, 127).unwrap()),
                Rq::Shift(mul, add, shift) => Requant::Shift(ShiftRequant::new(mul, add, *shift, 256, true).unwrap()),
            }
        }

        fn zero_point(&self) -> i32 {
            match self {
                Rq::HighMul(_, zp) => *zp,
                Rq::Shift(..) => 0,
            }
        }

        fn layer(&self) -> LayerRequant<'_> {
            match self.requant() {
                Requant::Shift(rq) => LayerRequant::Shift(rq),
                _ => LayerRequant::HighMul { zero_point: self.zero_point() },
            }
        }

        fn product(&self) -> ProductRequant<'_> {
            match (self, self.requant()) {
                (_, Requant::Shift(rq)) => ProductRequant::Shift(rq),
                (Rq::HighMul(mul, zp), _) => ProductRequant::HighMul { mul: mul[0], zero_point: *zp },
                _ => unreachable!(),
            }
        }

        /// The multipliers to pack (any for `Shift`, which does not read them).
        fn packed(&self) -> &[i32] {
            match self {
                Rq::HighMul(mul, _) => mul,
                Rq::Shift(..) => &[0],
            }
        }
    }

    /// A float-free linear layer of the test: weights `[n, k]`, bias, requantization.
    struct Layer {
        w: Vec<i8>,
        bias: Vec<i32>,
        rq: Rq,
        n: usize,
        k: usize,
        /// A table applied to the outputs, and the zero point of its results.
        table: Option<([i8; 256], i32)>,
    }

    impl Layer {
        /// Random weights and bias; per-channel requantization, or with `shift` Deeploy's, per tensor when
        /// `n` is odd.
        fn random(r: &mut Lcg, n: usize, k: usize, shift: bool) -> Layer {
            let channels = if shift && n % 2 == 1 { 1 } else { n };
            let (w, bias) = (r.vec_i8(n * k), r.vec_i32(n, -5000, 5000));
            Layer { w, bias, rq: Rq::random(r, channels, (1 << 22, 1 << 25), shift), n, k, table: None }
        }

        /// The layer's outputs for the products: through its table, if any, with their zero point.
        fn operand(&self, x: &[i8], zx: i32) -> (Vec<i8>, i32) {
            let mut y = self.apply(x, zx);
            match &self.table {
                Some((t, zp)) => {
                    crate::activation::lut_i8_in_place(&mut y, t).unwrap();
                    (y, *zp)
                }
                None => (y, self.rq.zero_point()),
            }
        }

        fn projection<'w>(&'w self, words: &'w [i32]) -> HeadProjection<'w> {
            HeadProjection { words, requant: self.rq.layer(), table: self.table.as_ref().map(|(t, zp)| (t, *zp)) }
        }

        /// The plain reference: `linear_requant`.
        fn apply(&self, x: &[i8], zx: i32) -> Vec<i8> {
            let m = x.len() / self.k;
            let mut out = vec![0i8; m * self.n];
            let d = MatDims { m, k: self.k, n: self.n };
            linear_requant(x, &self.w, Some(&self.bias), d, -zx, &self.rq.requant(), &mut out).unwrap();
            out
        }

        /// Packs rows `h·dim..(h+1)·dim` for every head, one after the other.
        fn pack_heads(&self, layout: PackedLayout, heads: usize, dim: usize, zx: i32) -> Vec<i32> {
            let mut out = vec![0i32; heads * layout.words(dim, self.k)];
            let src = LinearWeights {
                w: &self.w,
                bias: Some(&self.bias),
                input_offset: -zx,
                mul: self.rq.packed(),
                n: self.n,
                k: self.k,
            };
            pack_heads(layout, &src, heads, &mut out).unwrap();
            out
        }
    }

    /// `a [m,k] · b [k,n]` (zero points za, zb; `a` int8 or, for Deeploy's probabilities, uint8) requantized
    /// by `rq`, with `av_requant`.
    fn product<A: crate::IntElem>(
        a: &[A],
        za: i32,
        b: &[i8],
        zb: i32,
        (m, k, n): (usize, usize, usize),
        rq: &Rq,
    ) -> Vec<i8> {
        let p = BatchedMatmul { a_offset: -za, b_offset: -zb, ..BatchedMatmul::packed_nn(1, m, k, n) };
        let mut out = vec![0i8; m * n];
        av_requant(&p, a, b, &rq.requant(), &mut out).unwrap();
        out
    }

    /// The softmax of a test block.
    #[derive(Clone, Copy, Debug)]
    enum SoftmaxKind {
        I8,
        ItaMax,
        ISoftmax,
    }

    /// Parameters of Deeploy's `iSoftmax` in the tests (those of its test models).
    const ISOFTMAX: ISoftmaxParams = ISoftmaxParams { coeff_a: 1, coeff_b: 30, coeff_c: 200, log2: 10, n_levels: 256 };

    /// Columns `h·dim..(h+1)·dim` of `t [rows, heads·dim]`.
    fn head_cols(t: &[i8], heads: usize, dim: usize, h: usize) -> Vec<i8> {
        t.chunks_exact(heads * dim).flat_map(|r| r[h * dim..(h + 1) * dim].to_vec()).collect()
    }

    fn transpose(t: &[i8], rows: usize, cols: usize) -> Vec<i8> {
        (0..cols * rows).map(|i| t[(i % rows) * cols + i / rows]).collect()
    }

    /// A random block: its layers, requantizations and softmax table.
    struct Case {
        shape: MhsaShape,
        zx: i32,
        q: Layer,
        k: Option<Layer>,
        v: Option<Layer>,
        scores: Rq,
        softmax: SoftmaxKind,
        exp: [u16; 256],
        prob_zp: i32,
        mask: Option<Vec<bool>>,
        av: Rq,
        out: Layer,
    }

    /// The score mask of a test block.
    #[derive(Clone, Copy, Debug)]
    enum Masking {
        None,
        Causal,
        /// Row `i` allows `j <= i/2 + 1` with `(i + j) % 3 != 0`, row 2 nothing: rows that end before the
        /// diagonal, holes, and a row whose probabilities are all the zero point.
        Irregular,
    }

    impl Case {
        /// A random block; with `tables`, every projection has a random table after it. A Deeploy softmax
        /// comes with Deeploy's requantization (`RequantShift`) everywhere.
        fn random(seed: u64, shape: MhsaShape, masking: Masking, tables: bool, softmax: SoftmaxKind) -> Case {
            let mut r = Lcg(seed);
            let (s, e, h) = (shape.seq, shape.embed, shape.heads);
            let shift = !matches!(softmax, SoftmaxKind::I8);
            let layer = |r: &mut Lcg, n: usize| {
                let mut l = Layer::random(r, n, e, shift);
                if tables {
                    let t = r.vec_i8(256);
                    l.table = Some((core::array::from_fn(|i| t[i]), r.i32_in(-9, 9)));
                }
                l
            };
            let project = |r: &mut Lcg, yes: bool, dim: usize| yes.then(|| layer(r, h * dim));
            let q = layer(&mut r, h * shape.qk_dim);
            let k = project(&mut r, shape.project_k, shape.qk_dim);
            let v = project(&mut r, shape.project_v, shape.v_dim);
            let scale = 0.02 + f64::from(r.i32_in(0, 100)) / 1000.0;
            Case {
                shape,
                zx: r.i32_in(-10, 10),
                q,
                k,
                v,
                // Deeploy's probabilities (0..=255 summing to ~255) take larger steps than mote's scores.
                scores: Rq::random(&mut r, 1, if shift { (1 << 22, 1 << 24) } else { (1 << 20, 1 << 23) }, shift),
                softmax,
                exp: core::array::from_fn(|d| ((-scale * d as f64).exp() * 32768.0).round() as u16),
                prob_zp: -128,
                mask: match masking {
                    Masking::None => None,
                    Masking::Causal => Some((0..s * s).map(|i| i % s <= i / s).collect()),
                    Masking::Irregular => {
                        let ok = |i: usize, j: usize| i != 2 && j <= i / 2 + 1 && (i + j) % 3 != 0;
                        Some((0..s * s).map(|k| ok(k / s, k % s)).collect())
                    }
                },
                av: Rq::random(&mut r, 1, (1 << 20, 1 << 22), shift),
                out: Layer::random(&mut r, shape.out_dim, h * shape.v_dim, shift),
            }
        }

        fn softmax(&self) -> MhsaSoftmax<'_> {
            match self.softmax {
                SoftmaxKind::I8 => MhsaSoftmax::I8(self.softmax_i8()),
                SoftmaxKind::ItaMax => MhsaSoftmax::ItaMax,
                SoftmaxKind::ISoftmax => MhsaSoftmax::ISoftmax(ISOFTMAX),
            }
        }

        fn softmax_i8(&self) -> SoftmaxI8Params<'_> {
            SoftmaxI8Params { exp: &self.exp, out_recip: 256 << 16, out_zero_point: self.prob_zp }
        }

        /// The layer-by-layer reference: projections, then per head scores, softmax and values, concatenation
        /// and the output projection, each with the plain kernels.
        fn reference(&self, x: &[i8]) -> Vec<i8> {
            let sh = &self.shape;
            let (s, hs, pq, pv) = (sh.seq, sh.heads, sh.qk_dim, sh.v_dim);
            let (q, zq) = self.q.operand(x, self.zx);
            let (k, zk) = self.k.as_ref().map_or((x.to_vec(), self.zx), |l| l.operand(x, self.zx));
            let (v, zv) = self.v.as_ref().map_or((x.to_vec(), self.zx), |l| l.operand(x, self.zx));
            let (kh, vh) = (if self.k.is_some() { hs } else { 1 }, if self.v.is_some() { hs } else { 1 });
            let mut concat = vec![0i8; s * hs * pv];
            for h in 0..hs {
                let qh = head_cols(&q, hs, pq, h);
                let kt = transpose(&head_cols(&k, kh, pq, h % kh), s, pq);
                let sc = product(&qh, zq, &kt, zk, (s, pq, s), &self.scores);
                let vh = head_cols(&v, vh, pv, h % vh);
                let o = match self.softmax {
                    SoftmaxKind::I8 => {
                        let mut pr = vec![0i8; s * s];
                        let mask = self.mask.as_deref().map(|m| RowMask { allowed: m, rows: s });
                        softmax_i8(&sc, s, mask, &self.softmax_i8(), &mut pr).unwrap();
                        product(&pr, self.prob_zp, &vh, zv, (s, s, pv), &self.av)
                    }
                    deeploy => {
                        let mut pr = vec![0u8; s * s];
                        match deeploy {
                            SoftmaxKind::ItaMax => itamax(&sc, s, &mut pr).unwrap(),
                            _ => isoftmax(&sc, s, &ISOFTMAX, &mut pr).unwrap(),
                        }
                        product(&pr, 0, &vh, zv, (s, s, pv), &self.av)
                    }
                };
                for (r, row) in o.chunks_exact(pv).enumerate() {
                    concat[r * hs * pv + h * pv..][..pv].copy_from_slice(row);
                }
            }
            self.out.apply(&concat, 0)
        }

        /// The fused kernel in `schedule`, in place or not.
        fn fused(&self, x: &[i8], schedule: MhsaSchedule, in_place: bool) -> Result<Vec<i8>, KernelError> {
            let sh = self.shape;
            let (hs, pq, pv) = (sh.heads, sh.qk_dim, sh.v_dim);
            let q = self.q.pack_heads(sh.proj_layout, hs, pq, self.zx);
            let k = self.k.as_ref().map(|l| l.pack_heads(sh.proj_layout, hs, pq, self.zx));
            let v = self.v.as_ref().map(|l| l.pack_heads(sh.proj_layout, hs, pv, self.zx));
            let out_words = self.out.pack_heads(sh.out_layout, 1, sh.out_dim, 0);
            let mask = self.mask.as_deref().map(|m| RowMask { allowed: m, rows: sh.seq });
            let p = MhsaI8 {
                shape: sh,
                x_zero_point: self.zx,
                q: self.q.projection(&q),
                k: k.as_deref().map(|w| self.k.as_ref().unwrap().projection(w)),
                v: v.as_deref().map(|w| self.v.as_ref().unwrap().projection(w)),
                scores: self.scores.product(),
                softmax: self.softmax(),
                mask,
                av: self.av.product(),
                out: PackedLinear::new(sh.out_layout, sh.out_dim, hs * pv, &out_words).unwrap(),
                out_requant: self.out.rq.layer(),
            };
            let need = sh.scratch(schedule).ok_or(KernelError::InvalidParam)?;
            let mut scratch = vec![0i32; need.total_words()];
            if in_place {
                let mut io = x.to_vec();
                mhsa_i8_in_place(&p, schedule, &mut io, &mut scratch)?;
                Ok(io)
            } else {
                let mut out = vec![0i8; sh.seq * sh.out_dim];
                mhsa_i8(&p, schedule, x, &mut out, &mut scratch)?;
                Ok(out)
            }
        }
    }

    fn shape(seq: usize, embed: usize, heads: usize, qk: usize, v: usize, projected: bool) -> MhsaShape {
        MhsaShape {
            seq,
            embed,
            heads,
            qk_dim: qk,
            v_dim: v,
            out_dim: embed,
            project_k: projected,
            project_v: projected,
            proj_layout: PackedLayout::Dsp16,
            out_layout: PackedLayout::Dsp16,
        }
    }

    /// Every schedule, block size, layout, mask and in-place choice gives the layer-by-layer integers.
    #[test]
    fn fused_equals_layer_by_layer() {
        let cases = [
            (shape(7, 6, 2, 4, 3, true), Masking::None),
            (shape(9, 8, 3, 5, 2, true), Masking::Causal),
            (shape(7, 6, 2, 6, 6, false), Masking::None),
            (shape(11, 8, 4, 8, 8, false), Masking::Causal),
            // Odd widths: heads that start inside a quad, an odd number of output channels.
            (shape(5, 5, 3, 5, 5, false), Masking::Causal),
            (shape(10, 6, 2, 4, 4, true), Masking::Irregular),
            // Values in several chunks of 4 columns (the last one short); one wide head.
            (shape(6, 8, 2, 6, 10, true), Masking::Causal),
            (shape(9, 8, 1, 12, 12, true), Masking::None),
        ];
        let (mut checked, mut summed) = (0, 0);
        for (seed, (base, masking)) in cases.into_iter().enumerate() {
            // mote's softmax with every layout; Deeploy's (no masks, `RequantShift` needs Dsp16) with Dsp16.
            let runs = [PackedLayout::Dsp16, PackedLayout::Mve8, PackedLayout::Rv32]
                .map(|layout| (layout, SoftmaxKind::I8, masking))
                .into_iter()
                .chain([SoftmaxKind::ItaMax, SoftmaxKind::ISoftmax].map(|sm| (PackedLayout::Dsp16, sm, Masking::None)));
            for (layout, softmax, masking) in runs {
                let sh = MhsaShape { proj_layout: layout, out_layout: layout, ..base };
                // Tables after the projections (onnxruntime's scaled queries and keys) on the projected blocks.
                let case = Case::random(seed as u64 + 1, sh, masking, sh.project_k && seed != 1, softmax);
                let x = Lcg(seed as u64 + 100).vec_i8(sh.seq * sh.embed);
                let want = case.reference(&x);
                // Outputs are not all saturated: the comparison sees real values.
                let unsaturated = want.iter().filter(|&&v| v != 127 && v != -128).count();
                assert!(unsaturated > want.len() / 2, "{sh:?} {softmax:?}");
                for b in [1, 2, 3, sh.seq] {
                    let mut schedules = vec![MhsaSchedule::HeadMajor { block_rows: b }];
                    if !sh.project_k {
                        schedules.push(MhsaSchedule::RowMajor { block_rows: b });
                    } else if b != 2 {
                        // Keys 1, 3 or all positions at a time, values 4 or 8 columns at a time.
                        schedules.push(MhsaSchedule::StreamedKv { key_rows: b, value_cols: 4 + 4 * (b % 2) });
                    }
                    for sched in schedules {
                        for in_place in [false, true] {
                            let got = case.fused(&x, sched, in_place).unwrap();
                            assert_eq!(got, want, "{sh:?} {softmax:?} {sched:?} in place {in_place}");
                            checked += 1;
                            summed += usize::from(sh.sums_heads(sched));
                        }
                    }
                }
            }
        }
        // 5 runs of 5 projected shapes (head-major with 4 block sizes, streamed with 3 chunk sizes) and 3
        // unprojected ones (head- and row-major with 4 block sizes), in place or not.
        assert_eq!(checked, 5 * 5 * (4 + 3) * 2 + 5 * 3 * 4 * 2 * 2);
        // Row-major on Dsp16 sums the heads of the 4- and 3-head blocks (not the 2-head one): 3 runs × 2 shapes
        // × 4 block sizes × 2 (in place or not).
        assert_eq!(summed, 3 * 2 * 4 * 2);
    }

    #[test]
    fn bad_arguments_are_refused_before_writing() {
        let sh = shape(5, 4, 2, 4, 4, false);
        let case = Case::random(7, sh, Masking::None, false, SoftmaxKind::I8);
        let x = Lcg(3).vec_i8(20);
        // Row-major needs keys and values that are x.
        let proj = Case::random(7, shape(5, 4, 2, 4, 4, true), Masking::None, true, SoftmaxKind::I8);
        assert_eq!(proj.fused(&x, MhsaSchedule::RowMajor { block_rows: 2 }, false), Err(KernelError::InvalidParam));
        assert_eq!(case.fused(&x, MhsaSchedule::HeadMajor { block_rows: 0 }, false), Err(KernelError::InvalidParam));
        assert_eq!(
            case.fused(&x[..19], MhsaSchedule::HeadMajor { block_rows: 2 }, false),
            Err(KernelError::ShapeMismatch)
        );
        // Deeploy's softmaxes take no mask; `RequantShift` layers must be packed as Dsp16.
        let hm = MhsaSchedule::HeadMajor { block_rows: 2 };
        let masked = Case::random(7, sh, Masking::Causal, false, SoftmaxKind::ItaMax);
        assert_eq!(masked.fused(&x, hm, false), Err(KernelError::InvalidParam));
        let mve = MhsaShape { proj_layout: PackedLayout::Mve8, out_layout: PackedLayout::Mve8, ..sh };
        let mve = Case::random(7, mve, Masking::None, false, SoftmaxKind::ISoftmax);
        assert_eq!(mve.fused(&x, hm, false), Err(KernelError::InvalidParam));
        // Shared keys need qk_dim == embed.
        assert_eq!(shape(5, 4, 2, 3, 4, false).scratch(MhsaSchedule::HeadMajor { block_rows: 1 }), None);
        // The row-major scratch holds one block of rows (queries, then head outputs, and scores) and its
        // concatenated head outputs, the head-major one every row's head outputs. Keys 3 blocks of 10 words,
        // values 2 of 14, the panel 10 words (the scores·values product's).
        let (rm2, hm2) = (MhsaSchedule::RowMajor { block_rows: 2 }, MhsaSchedule::HeadMajor { block_rows: 2 });
        let (rm, hm) = (sh.scratch(rm2).unwrap(), sh.scratch(hm2).unwrap());
        assert_eq!((rm.words, rm.bytes), (30 + 28 + 10, 2 * (4 + 5) + 2 * 8));
        assert_eq!((hm.words, hm.bytes), (30 + 28 + 10, 2 * (4 + 5) + 5 * 8));
        // Four heads into four outputs: the block's output sums (2 × 4 words) and a panel of one head's columns
        // take less than the concatenation (2 × 16 bytes) and a panel of all of them (17 words).
        let wide = shape(5, 4, 4, 4, 4, false);
        assert!(wide.sums_heads(rm2) && !sh.sums_heads(rm2) && !wide.sums_heads(hm2));
        let w = wide.scratch(rm2).unwrap();
        assert_eq!((w.words, w.bytes), (30 + 28 + 10 + 2 * 4, 2 * (4 + 5)));
        let rv32 = MhsaShape { out_layout: PackedLayout::Rv32, ..wide };
        assert!(!rv32.sums_heads(rm2));
        assert_eq!(rv32.scratch(rm2).unwrap().bytes, 2 * (4 + 5) + 2 * 16);
        // Streamed keys and values: one packed chunk at a time (2 keys × 4 columns: 10 words; 3 value columns × 5
        // positions: 28 words) and the panel (10 words); the whole score map with the queries (5 × (4 + 5)), a
        // chunk of projected keys or values (5 × 3), a chunk's product (5 × 3) and the concatenated heads (5 × 6).
        let streamed = MhsaSchedule::StreamedKv { key_rows: 2, value_cols: 4 };
        let proj = shape(5, 4, 2, 4, 3, true);
        let st = proj.scratch(streamed).unwrap();
        assert_eq!((st.words, st.bytes), (28 + 10, 45 + 15 + 15 + 30));
        // It needs projected keys and values, and value chunks that start on a tile.
        assert_eq!(sh.scratch(streamed), None);
        assert_eq!(shape(5, 4, 2, 4, 10, true).scratch(MhsaSchedule::StreamedKv { key_rows: 2, value_cols: 6 }), None);
        // Head-major: one head's projected keys or values share their bytes with the row blocks.
        let proj = shape(5, 4, 2, 4, 3, true);
        assert_eq!(proj.scratch(MhsaSchedule::HeadMajor { block_rows: 1 }).unwrap().bytes, 5 * 4 + 5 * 6);
        assert_eq!(proj.scratch(MhsaSchedule::HeadMajor { block_rows: 4 }).unwrap().bytes, 4 * (4 + 5) + 5 * 6);
    }
}
