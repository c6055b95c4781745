//! `QAttention`: one int8 multi-head self-attention block as a single op, made by
//! [`crate::passes::attention::fuse_attention`] from the layer-by-layer int8 ops it replaces (mote's QDQ ops, or
//! Deeploy's `MatMul` + `RequantShift` and `ITAMax`/`iSoftmax`), and evaluated by the fused kernel
//! `mote_kernels::attention` (whose integers equal those ops' in every schedule).
use super::deeploy::{convert, out_i64};
use super::quant::{i32_data, i8_data, kernel_err, QSoftmax};
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Op, Result, Tensor, TensorType};
use mote_kernels::attention::{
    mhsa_i8, pack_heads, HeadProjection, LayerRequant, MhsaI8, MhsaSchedule, MhsaShape, MhsaSoftmax, ProductRequant,
};
use mote_kernels::packed::{LinearWeights, PackedLayout, PackedLinear};
use mote_kernels::requant::ShiftRequant;
use mote_kernels::softmax::{ISoftmaxParams, RowMask, SoftmaxI8Params};

/// Deeploy `RequantShift` parameters held by the op: `clamp((x·mul + add + 2^(shift-1)) >> shift, lo, hi)`, per
/// tensor or per output channel, with bounds inside int8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftParams {
    /// Multipliers.
    pub mul: Vec<i32>,
    /// Offsets.
    pub add: Vec<i32>,
    /// `log2` of the divisor.
    pub shift: u32,
    /// Lower clamp bound.
    pub lo: i32,
    /// Upper clamp bound.
    pub hi: i32,
}

/// How a projection or a product of the block requantizes its `i32` sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockRequant {
    /// `HighMul` multipliers of `s_in·s_w / s_out` (per tensor or per output channel), then the output zero point.
    HighMul {
        /// Multipliers.
        mul: Vec<i32>,
        /// Output zero point.
        zero_point: i32,
    },
    /// Deeploy's `RequantShift` (output zero point 0).
    Shift(ShiftParams),
}

impl BlockRequant {
    /// Zero point of the outputs.
    pub fn zero_point(&self) -> i32 {
        match self {
            BlockRequant::HighMul { zero_point, .. } => *zero_point,
            BlockRequant::Shift(_) => 0,
        }
    }

    /// Number of channels of its parameters (1 per tensor).
    pub fn channels(&self) -> usize {
        match self {
            BlockRequant::HighMul { mul, .. } => mul.len(),
            BlockRequant::Shift(p) => p.mul.len().max(p.add.len()),
        }
    }

    /// The multipliers to pack with the weights (`Shift` does not read them).
    pub fn packed_mul(&self) -> &[i32] {
        match self {
            BlockRequant::HighMul { mul, .. } => mul,
            BlockRequant::Shift(_) => &[0],
        }
    }

    /// Whether the packed layers that apply it must be Dsp16 (the only layout with a `RequantShift` kernel).
    pub fn needs_dsp16(&self) -> bool {
        matches!(self, BlockRequant::Shift(_))
    }

    fn shift(p: &ShiftParams) -> Result<ShiftRequant<'_>> {
        ShiftRequant::with_bounds(&p.mul, &p.add, p.shift, p.lo, p.hi).map_err(|e| kernel_err("QAttention", e))
    }

    /// The kernel's view for a layer with packed weights.
    pub fn layer(&self) -> Result<LayerRequant<'_>> {
        Ok(match self {
            BlockRequant::HighMul { zero_point, .. } => LayerRequant::HighMul { zero_point: *zero_point },
            BlockRequant::Shift(p) => LayerRequant::Shift(Self::shift(p)?),
        })
    }

    /// The kernel's view for a product of two activations (per tensor).
    pub fn product(&self) -> Result<ProductRequant<'_>> {
        Ok(match self {
            BlockRequant::HighMul { mul, zero_point } => {
                let &[mul] = &mul[..] else { crate::bail!("QAttention: a product needs one multiplier") };
                ProductRequant::HighMul { mul, zero_point: *zero_point }
            }
            BlockRequant::Shift(p) => ProductRequant::Shift(Self::shift(p)?),
        })
    }
}

/// A projection inside the block: its requantization, input zero point and an optional table after it; its
/// weights `[n, embed]` (int8) and bias `[n]` (int32) are inputs of the op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QProjection {
    /// Requantization of the projected values.
    pub requant: BlockRequant,
    /// Input zero point (x's, or for the output projection the head outputs').
    pub x_zero_point: i32,
    /// A `QLut` table over the projected values and the zero point of its results (onnxruntime's scaling of
    /// queries and keys); not on the output projection.
    pub table: Option<(Box<[i8; 256]>, i32)>,
}

impl QProjection {
    /// The kernel's view of the projection packed in `words`.
    pub fn heads<'a>(&'a self, words: &'a [i32]) -> Result<HeadProjection<'a>> {
        let table = self.table.as_ref().map(|(t, zp)| (&**t, *zp));
        Ok(HeadProjection { words, requant: self.requant.layer()?, table })
    }
}

/// The softmax of the score rows.
#[derive(Clone, Debug)]
pub enum AttentionSoftmax {
    /// mote's int8 softmax (its mask, if any, `[rows, seq]` with `rows` dividing `seq`).
    I8(QSoftmax),
    /// Deeploy's `ITAMax`.
    ItaMax,
    /// Deeploy's `iSoftmax`.
    ISoftmax(ISoftmaxParams),
}

impl AttentionSoftmax {
    /// The kernel's view.
    pub fn kernel(&self) -> MhsaSoftmax<'_> {
        match self {
            AttentionSoftmax::I8(s) => MhsaSoftmax::I8(SoftmaxI8Params {
                exp: &s.exp,
                out_recip: s.out_recip,
                out_zero_point: s.out_zero_point,
            }),
            AttentionSoftmax::ItaMax => MhsaSoftmax::ItaMax,
            AttentionSoftmax::ISoftmax(p) => MhsaSoftmax::ISoftmax(*p),
        }
    }
}

/// int8 self-attention of `x [1.., seq, embed]`: inputs `x, wq, bq, [wk, bk], [wv, bv], wo, bo`, output
/// `[1.., seq, out]`. Keys or values without a projection are `x` itself (Fused-Weight Self-Attention). `x` and the
/// output are `I8`, or `I64` holding int8 values in an exact-integer (Deeploy) graph.
#[derive(Clone, Debug)]
pub struct QAttention {
    /// Heads.
    pub heads: usize,
    /// Query/key width per head.
    pub qk_dim: usize,
    /// Value width per head.
    pub v_dim: usize,
    /// Query projection.
    pub q: QProjection,
    /// Key projection, or `None` when the keys are `x`.
    pub k: Option<QProjection>,
    /// Value projection, or `None` when the values are `x`.
    pub v: Option<QProjection>,
    /// `Q·Kᵀ` requantization.
    pub scores: BlockRequant,
    /// Softmax of each score row.
    pub softmax: AttentionSoftmax,
    /// `P·V` requantization.
    pub av: BlockRequant,
    /// Output projection.
    pub out: QProjection,
    /// Order of the computation.
    pub schedule: MhsaSchedule,
}

impl QAttention {
    /// Indices of the inputs `(wq, bq, wk, bk, wv, bv, wo, bo)`, `None` for absent projections.
    pub fn input_slots(&self) -> [Option<usize>; 8] {
        let mut next = 1;
        let mut slot = |present: bool| {
            present.then(|| {
                next += 1;
                next - 1
            })
        };
        [
            slot(true),
            slot(true),
            slot(self.k.is_some()),
            slot(self.k.is_some()),
            slot(self.v.is_some()),
            slot(self.v.is_some()),
            slot(true),
            slot(true),
        ]
    }

    /// The block's sizes for `x`'s shape and packed layouts `proj` (projections) and `out` (output projection).
    pub fn shape(&self, x: &[usize], out_dim: usize, proj: PackedLayout, out: PackedLayout) -> MhsaShape {
        let last = |i: usize| x.len().checked_sub(i).and_then(|i| x.get(i)).copied().unwrap_or(0);
        MhsaShape {
            seq: last(2),
            embed: last(1),
            heads: self.heads,
            qk_dim: self.qk_dim,
            v_dim: self.v_dim,
            out_dim,
            project_k: self.k.is_some(),
            project_v: self.v.is_some(),
            proj_layout: proj,
            out_layout: out,
        }
    }

    /// The packed layouts of its projections and output projection on a core whose fast layout is `fast`.
    pub fn layouts(&self, fast: PackedLayout) -> (PackedLayout, PackedLayout) {
        let proj = [Some(&self.q), self.k.as_ref(), self.v.as_ref()].into_iter().flatten();
        let layout = |dsp: bool| if dsp { PackedLayout::Dsp16 } else { fast };
        (layout(proj.into_iter().any(|p| p.requant.needs_dsp16())), layout(self.out.requant.needs_dsp16()))
    }

    /// The softmax mask as the kernel reads it.
    pub fn mask(&self) -> Option<RowMask<'_>> {
        match &self.softmax {
            AttentionSoftmax::I8(s) => s.mask.as_ref().map(|(allowed, rows)| RowMask { allowed, rows: *rows }),
            _ => None,
        }
    }

    /// Bounds of the output values.
    pub fn out_bounds(&self) -> (i32, i32) {
        match &self.out.requant {
            BlockRequant::HighMul { .. } => (-128, 127),
            BlockRequant::Shift(p) => (p.lo, p.hi),
        }
    }
}

/// Checks an int8 weight `[n, k]` and int32 bias `[n]` pair; returns `n`.
fn check_projection(name: &str, w: &InputFact, b: &InputFact, k: usize, p: &QProjection) -> Result<usize> {
    let s = &w.ty.shape;
    ensure!(
        w.ty.dtype == DType::I8 && s.len() == 2 && s[1] == k,
        "QAttention: {name} weight must be int8 [n, {k}], got {} {s:?}",
        w.ty.dtype
    );
    ensure!(b.ty.dtype == DType::I32 && b.ty.shape == [s[0]], "QAttention: {name} bias must be int32 [{}]", s[0]);
    check_requant(name, &p.requant, s[0])?;
    Ok(s[0])
}

/// Checks that `rq` applies to `n` channels, with `RequantShift` bounds inside int8.
fn check_requant(name: &str, rq: &BlockRequant, n: usize) -> Result<()> {
    let c = rq.channels();
    ensure!(c == 1 || c == n, "QAttention: {name} has {c} requantization channels for {n}");
    if let BlockRequant::Shift(p) = rq {
        ensure!(
            p.lo >= -128 && p.hi <= 127 && p.lo <= p.hi,
            "QAttention: {name} requantizes to [{}, {}], outside int8",
            p.lo,
            p.hi
        );
    }
    Ok(())
}

impl Op for QAttention {
    op_common!("QAttention");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let slots = self.input_slots();
        let count = 1 + slots.iter().flatten().count();
        ensure!(inputs.len() == count, "QAttention expects {count} inputs, got {}", inputs.len());
        let x = &inputs[0].ty;
        let r = x.shape.len();
        ensure!(
            matches!(x.dtype, DType::I8 | DType::I64) && r >= 2 && x.shape[..r - 2].iter().all(|&d| d == 1),
            "QAttention needs int8 (or int64) x [1.., seq, embed], got {x:?}"
        );
        let (seq, embed) = (x.shape[r - 2], x.shape[r - 1]);
        let get = |i: Option<usize>| i.map(|i| &inputs[i]);
        let pair = |w: Option<usize>, b: Option<usize>| get(w).zip(get(b));
        let (h, pq, pv) = (self.heads, self.qk_dim, self.v_dim);
        if let Some((w, b)) = pair(slots[0], slots[1]) {
            ensure!(
                check_projection("query", w, b, embed, &self.q)? == h * pq,
                "QAttention: query width != heads·qk_dim"
            );
        }
        match (pair(slots[2], slots[3]), &self.k) {
            (Some((w, b)), Some(p)) => {
                ensure!(check_projection("key", w, b, embed, p)? == h * pq, "QAttention: key width != heads·qk_dim")
            }
            _ => ensure!(pq == embed, "QAttention: keys that are x need qk_dim == embed ({pq} != {embed})"),
        }
        match (pair(slots[4], slots[5]), &self.v) {
            (Some((w, b)), Some(p)) => {
                ensure!(check_projection("value", w, b, embed, p)? == h * pv, "QAttention: value width != heads·v_dim")
            }
            _ => ensure!(pv == embed, "QAttention: values that are x need v_dim == embed ({pv} != {embed})"),
        }
        let (w, b) = pair(slots[6], slots[7]).ok_or_else(|| crate::Error::Invalid("QAttention: no output".into()))?;
        let out = check_projection("output", w, b, h * pv, &self.out)?;
        check_requant("scores", &self.scores, 1)?;
        check_requant("weighted values", &self.av, 1)?;
        if let Some(RowMask { allowed, rows }) = self.mask() {
            ensure!(
                rows > 0 && seq % rows == 0 && allowed.len() == rows * seq,
                "QAttention: mask of {rows} rows does not tile {seq} x {seq} scores"
            );
        }
        let shape = self.shape(&x.shape, out, PackedLayout::Dsp16, PackedLayout::Dsp16);
        ensure!(
            shape.scratch(self.schedule).is_some(),
            "QAttention: schedule {:?} does not apply to {shape:?}",
            self.schedule
        );
        let mut y = x.shape.clone();
        y[r - 1] = out;
        Ok(vec![TensorType::new(x.dtype, y)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let exact = inputs[0].dtype() == DType::I64;
        let x = if exact { convert("QAttention", "input", "int8", inputs[0])? } else { i8_data(inputs[0])? };
        let slots = self.input_slots();
        // The host packs every projection as Dsp16: every layout gives the same integers.
        let layout = PackedLayout::Dsp16;
        let pack = |w: Option<usize>, b: Option<usize>, p: &QProjection, heads: usize| -> Result<Vec<i32>> {
            let (Some(w), Some(b)) = (w, b) else { return Ok(Vec::new()) };
            let (wd, bias) = (i8_data(inputs[w])?, i32_data(inputs[b])?);
            let (n, k) = (inputs[w].shape()[0], inputs[w].shape()[1]);
            let mul = p.requant.packed_mul();
            let src = LinearWeights { w: &wd, bias: Some(&bias), input_offset: -p.x_zero_point, mul, n, k };
            let mut out = vec![0i32; heads * layout.words(n / heads, k)];
            pack_heads(layout, &src, heads, &mut out).map_err(|e| kernel_err("QAttention", e))?;
            Ok(out)
        };
        let q = pack(slots[0], slots[1], &self.q, self.heads)?;
        let k = self.k.as_ref().map(|p| pack(slots[2], slots[3], p, self.heads)).transpose()?;
        let v = self.v.as_ref().map(|p| pack(slots[4], slots[5], p, self.heads)).transpose()?;
        let o = pack(slots[6], slots[7], &self.out, 1)?;
        let out_dim = slots[6].map_or(0, |w| inputs[w].shape()[0]);
        let shape = self.shape(inputs[0].shape(), out_dim, layout, layout);
        let p = MhsaI8 {
            shape,
            x_zero_point: self.q.x_zero_point,
            q: self.q.heads(&q)?,
            k: k.as_deref().zip(self.k.as_ref()).map(|(w, p)| p.heads(w)).transpose()?,
            v: v.as_deref().zip(self.v.as_ref()).map(|(w, p)| p.heads(w)).transpose()?,
            scores: self.scores.product()?,
            softmax: self.softmax.kernel(),
            mask: self.mask(),
            av: self.av.product()?,
            out: PackedLinear::new(layout, out_dim, self.heads * self.v_dim, &o)
                .map_err(|e| kernel_err("QAttention", e))?,
            out_requant: self.out.requant.layer()?,
        };
        let need = shape
            .scratch(self.schedule)
            .ok_or_else(|| crate::Error::Invalid(format!("QAttention: schedule {:?} does not apply", self.schedule)))?;
        let mut scratch = vec![0i32; need.total_words()];
        let mut out = vec![0i8; shape.seq * out_dim];
        mhsa_i8(&p, self.schedule, &x, &mut out, &mut scratch).map_err(|e| kernel_err("QAttention", e))?;
        let mut y = inputs[0].shape().to_vec();
        if let Some(last) = y.last_mut() {
            *last = out_dim;
        }
        Ok(vec![if exact { out_i64(&y, &out)? } else { Tensor::from_vec(&y, out)? }])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        let last = |s: &[usize], i: usize| s.len().checked_sub(i).and_then(|i| s.get(i)).copied().unwrap_or(0) as u64;
        let (seq, embed) = (last(&inputs[0].shape, 2), last(&inputs[0].shape, 1));
        let (h, pq, pv, od) = (self.heads as u64, self.qk_dim as u64, self.v_dim as u64, last(&outputs[0].shape, 1));
        let k = if self.k.is_some() { seq * embed * h * pq } else { 0 };
        let v = if self.v.is_some() { seq * embed * h * pv } else { 0 };
        seq * embed * h * pq + k + v + h * seq * seq * (pq + pv) + seq * h * pv * od
    }
}
