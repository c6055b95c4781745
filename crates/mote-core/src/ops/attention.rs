//! `QAttention`: one int8 multi-head self-attention block as a single op, made by
//! [`crate::passes::attention::fuse_attention`] from the layer-by-layer int8 ops it replaces, and evaluated by the
//! fused kernel `mote_kernels::attention` (whose integers equal those ops' in every schedule).
use super::quant::{i32_data, i8_data, kernel_err, QSoftmax};
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Op, Result, Tensor, TensorType};
use mote_kernels::attention::{mhsa_i8, pack_heads, HeadProjection, MhsaI8, MhsaSchedule, MhsaShape, ProductRequant};
use mote_kernels::packed::{LinearWeights, PackedLayout, PackedLinear};
use mote_kernels::softmax::{RowMask, SoftmaxI8Params};

/// A projection inside the block: `HighMul` multipliers (per tensor or per output channel), the output zero
/// point and an optional table after it; its weights `[n, embed]` (int8) and bias `[n]` (int32) are inputs of the op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QProjection {
    /// `HighMul` multipliers of `s_x·s_w / s_y`.
    pub mul: Vec<i32>,
    /// Input zero point (x's, or for the output projection the head outputs').
    pub x_zero_point: i32,
    /// Output zero point.
    pub y_zero_point: i32,
    /// A `QLut` table over the projected values and the zero point of its results (onnxruntime's scaling of
    /// queries and keys); not on the output projection.
    pub table: Option<(Box<[i8; 256]>, i32)>,
}

impl QProjection {
    /// The kernel's view of the projection packed in `words`.
    pub fn heads<'a>(&'a self, words: &'a [i32]) -> HeadProjection<'a> {
        HeadProjection { words, zero_point: self.y_zero_point, table: self.table.as_ref().map(|(t, zp)| (&**t, *zp)) }
    }
}

/// int8 self-attention of `x [seq, embed]`: inputs `x, wq, bq, [wk, bk], [wv, bv], wo, bo`, output `[seq, out]`.
/// Keys or values without a projection are `x` itself (Fused-Weight Self-Attention).
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
    pub scores: ProductRequant,
    /// Softmax of each score row (its mask, if any, `[rows, seq]` with `rows` dividing `seq`).
    pub softmax: QSoftmax,
    /// `P·V` requantization.
    pub av: ProductRequant,
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

    /// The block's sizes for packed layouts `proj` (projections) and `out` (output projection).
    pub fn shape(&self, x: &[usize], out_dim: usize, proj: PackedLayout, out: PackedLayout) -> MhsaShape {
        MhsaShape {
            seq: x.first().copied().unwrap_or(0),
            embed: x.get(1).copied().unwrap_or(0),
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

    /// The softmax mask as the kernel reads it.
    pub fn mask(&self) -> Option<RowMask<'_>> {
        self.softmax.mask.as_ref().map(|(allowed, rows)| RowMask { allowed, rows: *rows })
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
    ensure!(
        p.mul.len() == 1 || p.mul.len() == s[0],
        "QAttention: {name} has {} multipliers for {} channels",
        p.mul.len(),
        s[0]
    );
    Ok(s[0])
}

impl Op for QAttention {
    op_common!("QAttention");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let slots = self.input_slots();
        let count = 1 + slots.iter().flatten().count();
        ensure!(inputs.len() == count, "QAttention expects {count} inputs, got {}", inputs.len());
        let x = &inputs[0].ty;
        ensure!(x.dtype == DType::I8 && x.shape.len() == 2, "QAttention needs int8 x [seq, embed], got {x:?}");
        let (seq, embed) = (x.shape[0], x.shape[1]);
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
        if let Some((m, rows)) = &self.softmax.mask {
            ensure!(
                *rows > 0 && seq % rows == 0 && m.len() == rows * seq,
                "QAttention: mask of {rows} rows does not tile {seq} x {seq} scores"
            );
        }
        let shape = self.shape(&x.shape, out, PackedLayout::Dsp16, PackedLayout::Dsp16);
        ensure!(
            shape.scratch(self.schedule).is_some(),
            "QAttention: schedule {:?} does not apply to {shape:?}",
            self.schedule
        );
        Ok(vec![TensorType::new(DType::I8, vec![seq, out])])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = i8_data(inputs[0])?;
        let slots = self.input_slots();
        // The host packs every projection as Dsp16: every layout gives the same integers.
        let layout = PackedLayout::Dsp16;
        let pack = |w: Option<usize>, b: Option<usize>, p: &QProjection, heads: usize| -> Result<Vec<i32>> {
            let (Some(w), Some(b)) = (w, b) else { return Ok(Vec::new()) };
            let (wd, bias) = (i8_data(inputs[w])?, i32_data(inputs[b])?);
            let (n, k) = (inputs[w].shape()[0], inputs[w].shape()[1]);
            let src = LinearWeights { w: &wd, bias: Some(&bias), input_offset: -p.x_zero_point, mul: &p.mul, n, k };
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
            q: self.q.heads(&q),
            k: k.as_deref().zip(self.k.as_ref()).map(|(w, p)| p.heads(w)),
            v: v.as_deref().zip(self.v.as_ref()).map(|(w, p)| p.heads(w)),
            scores: self.scores,
            softmax: SoftmaxI8Params {
                exp: &self.softmax.exp,
                out_recip: self.softmax.out_recip,
                out_zero_point: self.softmax.out_zero_point,
            },
            mask: self.mask(),
            av: self.av,
            out: PackedLinear::new(layout, out_dim, self.heads * self.v_dim, &o)
                .map_err(|e| kernel_err("QAttention", e))?,
            out_zero_point: self.out.y_zero_point,
        };
        let need = shape
            .scratch(self.schedule)
            .ok_or_else(|| crate::Error::Invalid(format!("QAttention: schedule {:?} does not apply", self.schedule)))?;
        let mut scratch = vec![0i32; need.total_words()];
        let mut out = vec![0i8; shape.seq * out_dim];
        mhsa_i8(&p, self.schedule, &x, &mut out, &mut scratch).map_err(|e| kernel_err("QAttention", e))?;
        Ok(vec![Tensor::from_vec(&[shape.seq, out_dim], out)?])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        let (seq, embed) = (inputs[0].shape[0] as u64, inputs[0].shape[1] as u64);
        let (h, pq, pv, od) = (self.heads as u64, self.qk_dim as u64, self.v_dim as u64, outputs[0].shape[1] as u64);
        let k = if self.k.is_some() { seq * embed * h * pq } else { 0 };
        let v = if self.v.is_some() { seq * embed * h * pv } else { 0 };
        seq * embed * h * pq + k + v + h * seq * seq * (pq + pv) + seq * h * pv * od
    }
}
