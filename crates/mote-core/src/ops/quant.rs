//! Quantization ops: ONNX `QuantizeLinear`/`DequantizeLinear` (float ↔ integer at the model's
//! edges and in QDQ graphs before lowering) and mote's int8 operators, which QDQ graphs lower to.
//!
//! The int8 ops carry integer parameters only (Q31 multipliers, shifts, zero points, tables)
//! computed on the host from the scales; `eval` calls `mote-kernels`, the one definition of the
//! integer arithmetic that the MCU code runs too. Activations are `I8`, biases `I32`.
use super::elementwise::broadcast_shapes;
use super::resolve_axis;
use crate::op::InputFact;
use crate::{bail, ensure, op_common, DType, Error, Op, Result, Tensor, TensorType};
use mote_kernels::elementwise::{add_requant, add_shift, mul_requant, AddRequant, AddShift, MulRequant};
use mote_kernels::matmul::{av_requant, linear_requant, BatchedMatmul, MatDims};
use mote_kernels::norm::{layernorm_i8, LayerNormI8Params};
use mote_kernels::requant::{rescale, FixedPointRequant, HighMulRequant, Requant};
use mote_kernels::softmax::{softmax_i8, RowMask, SoftmaxI8Params};
use mote_kernels::{activation, conv, pool, KernelError};
use ndarray::IxDyn;

pub(crate) fn kernel_err(op: &str, e: KernelError) -> Error {
    Error::Invalid(format!("{op} kernel refused its arguments: {e}"))
}

/// The data of an `I8` tensor in logical (row-major) order.
pub(crate) fn i8_data(t: &Tensor) -> Result<Vec<i8>> {
    match t {
        Tensor::I8(a) => Ok(a.iter().copied().collect()),
        other => bail!("expected an int8 tensor, got {}", other.dtype()),
    }
}

pub(crate) fn i32_data(t: &Tensor) -> Result<Vec<i32>> {
    match t {
        Tensor::I32(a) => Ok(a.iter().copied().collect()),
        other => bail!("expected an int32 tensor, got {}", other.dtype()),
    }
}

fn i8_tensor(shape: &[usize], v: Vec<i8>) -> Result<Tensor> {
    Tensor::from_vec(shape, v)
}

fn expect_i8(op: &str, f: &InputFact, what: &str) -> Result<()> {
    ensure!(f.ty.dtype == DType::I8, "{op} needs an int8 {what}, got {}", f.ty.dtype);
    Ok(())
}

/// Q31 multipliers and shifts, one (per tensor) or one per channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescale {
    /// Q31 multipliers.
    pub multiplier: Vec<i32>,
    /// Shifts, positive = left.
    pub shift: Vec<i32>,
}

impl Rescale {
    /// From real multipliers (`s_in·s_w / s_out` and the like), via TFLite's `QuantizeMultiplier`.
    pub fn from_reals(reals: &[f64]) -> Rescale {
        let (multiplier, shift) = reals.iter().map(|&r| mote_kernels::host::quantize_multiplier(r)).unzip();
        Rescale { multiplier, shift }
    }

    fn requant(&self, op: &str, zero_point: i32) -> Result<FixedPointRequant<'_>> {
        FixedPointRequant::new(&self.multiplier, &self.shift, zero_point, -128, 127).map_err(|e| kernel_err(op, e))
    }
}

/// How an op requantizes its `i32` accumulators (linear, matmul, conv) to int8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccRescale {
    /// TFLite / CMSIS-NN Q31 multipliers and shifts: any real multiplier.
    FixedPoint(Rescale),
    /// `y = zp + round(acc·mul / 2^32)` (one `SMMLAR` on Arm DSP cores), one multiplier per channel: used when
    /// every real multiplier is below 1/2, as in nearly every layer.
    HighMul(Vec<i32>),
}

impl AccRescale {
    /// `HighMul` when every real multiplier is in `[0, 1/2)`, else `FixedPoint`.
    pub fn from_reals(reals: &[f64]) -> AccRescale {
        let high: Option<Vec<i32>> = reals.iter().map(|&r| mote_kernels::host::high_mul_multiplier(r)).collect();
        match high {
            Some(mul) if !mul.is_empty() => AccRescale::HighMul(mul),
            _ => AccRescale::FixedPoint(Rescale::from_reals(reals)),
        }
    }

    /// Number of multipliers (1 per tensor, else one per channel).
    pub fn channels(&self) -> usize {
        match self {
            AccRescale::FixedPoint(r) => r.multiplier.len(),
            AccRescale::HighMul(m) => m.len(),
        }
    }

    fn requant(&self, op: &str, zero_point: i32) -> Result<Requant<'_>> {
        Ok(match self {
            AccRescale::FixedPoint(r) => Requant::FixedPoint(r.requant(op, zero_point)?),
            AccRescale::HighMul(m) => {
                Requant::HighMul(HighMulRequant::new(m, zero_point, -128, 127).map_err(|e| kernel_err(op, e))?)
            }
        })
    }
}

/// Per-axis or per-tensor scale/zero-point inputs of Quantize/DequantizeLinear.
fn qdq_params(
    op: &str,
    axis: i64,
    x: &[usize],
    scale: &Tensor,
    zp: Option<&Tensor>,
) -> Result<(Vec<f32>, Vec<i64>, usize, usize)> {
    let s = scale.to_f64_vec().into_iter().map(|v| v as f32).collect::<Vec<_>>();
    let z = zp.map_or_else(|| vec![0; s.len()], Tensor::to_i64_vec);
    ensure!(z.len() == s.len(), "{op}: {} scales but {} zero points", s.len(), z.len());
    if s.len() == 1 {
        return Ok((s, z, 1, 1));
    }
    let ax = resolve_axis(axis, x.len())?;
    ensure!(x[ax] == s.len(), "{op}: {} scales for axis {ax} of length {}", s.len(), x[ax]);
    Ok((s, z, x[ax], x[ax + 1..].iter().product()))
}

/// ONNX `QuantizeLinear`: `y = saturate(round_half_even(x / scale) + zero_point)`; the output
/// type is the zero point's (uint8 when absent).
#[derive(Clone, Debug)]
pub struct QuantizeLinear {
    /// Channel axis for per-axis scales.
    pub axis: i64,
}

impl Op for QuantizeLinear {
    op_common!("QuantizeLinear");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!((2..=3).contains(&inputs.len()), "QuantizeLinear expects 2 or 3 inputs");
        ensure!(inputs[0].ty.dtype.is_float(), "QuantizeLinear needs a float input, got {}", inputs[0].ty.dtype);
        let dtype = inputs.get(2).map_or(DType::U8, |z| z.ty.dtype);
        ensure!(matches!(dtype, DType::I8 | DType::U8 | DType::I16 | DType::I32), "QuantizeLinear to {dtype}");
        Ok(vec![TensorType::new(dtype, inputs[0].ty.shape.clone())])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let (s, z, ch, inner) = qdq_params("QuantizeLinear", self.axis, x.shape(), inputs[1], inputs.get(2).copied())?;
        let dtype = inputs.get(2).map_or(DType::U8, |t| t.dtype());
        let (lo, hi) = dtype.int_range().expect("checked by infer");
        let q: Vec<i64> = x
            .to_f32()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / inner) % ch;
                let r = (v / s[c]).round_ties_even();
                (r as i64).saturating_add(z[c]).clamp(lo, hi)
            })
            .collect();
        Ok(vec![Tensor::from_vec(x.shape(), q)?.cast(dtype)])
    }
}

/// ONNX `DequantizeLinear`: `y = (x - zero_point) · scale` in f32.
#[derive(Clone, Debug)]
pub struct DequantizeLinear {
    /// Channel axis for per-axis scales.
    pub axis: i64,
}

impl Op for DequantizeLinear {
    op_common!("DequantizeLinear");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!((2..=3).contains(&inputs.len()), "DequantizeLinear expects 2 or 3 inputs");
        let d = inputs[0].ty.dtype;
        ensure!(!d.is_float() && d != DType::Bool, "DequantizeLinear needs an integer input, got {d}");
        Ok(vec![TensorType::new(DType::F32, inputs[0].ty.shape.clone())])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let (s, z, ch, inner) =
            qdq_params("DequantizeLinear", self.axis, x.shape(), inputs[1], inputs.get(2).copied())?;
        let y: Vec<f32> = x
            .to_i64_vec()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / inner) % ch;
                (v - z[c]) as f32 * s[c]
            })
            .collect();
        Ok(vec![Tensor::from_vec(x.shape(), y)?])
    }
}

/// int8 linear layer: `y[.., n] = rq_n(b[n] + Σ_k (x[.., k] - zx)·w[n, k]) + zy`.
/// Inputs: x `I8 [.., K]`, w `I8 [N, K]` (symmetric, per output channel), optional bias `I32 [N]`.
#[derive(Clone, Debug)]
pub struct QLinear {
    /// Zero point of x.
    pub x_zero_point: i32,
    /// `s_x·s_w[n] / s_y`, per tensor or per output channel.
    pub rescale: AccRescale,
    /// Zero point of y.
    pub y_zero_point: i32,
}

impl Op for QLinear {
    op_common!("QLinear");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!((2..=3).contains(&inputs.len()), "QLinear expects x, w and an optional bias");
        expect_i8("QLinear", &inputs[0], "input")?;
        expect_i8("QLinear", &inputs[1], "weight")?;
        let (x, w) = (&inputs[0].ty.shape, &inputs[1].ty.shape);
        ensure!(w.len() == 2 && x.last() == Some(&w[1]), "QLinear: x {x:?} does not match weight [N, K] {w:?}");
        if let Some(b) = inputs.get(2) {
            ensure!(b.ty.dtype == DType::I32 && b.ty.len() == w[0], "QLinear bias must be int32 [{}]", w[0]);
        }
        let c = self.rescale.channels();
        ensure!(c == 1 || c == w[0], "QLinear has {c} multipliers for {} channels", w[0]);
        let mut y = x.clone();
        *y.last_mut().expect("rank >= 1") = w[0];
        Ok(vec![TensorType::new(DType::I8, y)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (x, w) = (i8_data(inputs[0])?, i8_data(inputs[1])?);
        let bias = inputs.get(2).map(|b| i32_data(b)).transpose()?;
        let (n, k) = (inputs[1].shape()[0], inputs[1].shape()[1]);
        let d = MatDims { m: x.len() / k, k, n };
        let rq = self.rescale.requant("QLinear", self.y_zero_point)?;
        let mut out = vec![0i8; d.m * n];
        linear_requant(&x, &w, bias.as_deref(), d, -self.x_zero_point, &rq, &mut out)
            .map_err(|e| kernel_err("QLinear", e))?;
        let mut shape = inputs[0].shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok(vec![i8_tensor(&shape, out)?])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        (outputs[0].len() * inputs[1].shape[1]) as u64
    }
}

/// int8 matmul of two activations (attention's QK^T and AV):
/// `y = rq(Σ_k (a - za)(b - zb)) + zy`, a `[.., M, K]`, b `[.., K, N]`, batch dims broadcast.
#[derive(Clone, Debug)]
pub struct QMatMul {
    /// Zero point of a.
    pub a_zero_point: i32,
    /// Zero point of b.
    pub b_zero_point: i32,
    /// `s_a·s_b / s_y`.
    pub rescale: AccRescale,
    /// Zero point of y.
    pub y_zero_point: i32,
}

impl QMatMul {
    fn dims(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
        ensure!(a.len() >= 2 && b.len() >= 2, "QMatMul needs rank >= 2 inputs, got {a:?} and {b:?}");
        let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
        let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
        ensure!(k == k2, "QMatMul: inner dims differ ({a:?} · {b:?})");
        let batch = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])?;
        Ok((batch, m, k, n))
    }
}

/// Materializes `t` broadcast to `batch ++ tail`.
fn broadcast_i8(t: &Tensor, batch: &[usize], tail: &[usize]) -> Result<Vec<i8>> {
    let Tensor::I8(a) = t else { bail!("expected an int8 tensor, got {}", t.dtype()) };
    let shape: Vec<usize> = batch.iter().chain(tail).copied().collect();
    let v = a
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| Error::Invalid(format!("cannot broadcast {:?} to {shape:?}", a.shape())))?;
    Ok(v.iter().copied().collect())
}

impl Op for QMatMul {
    op_common!("QMatMul");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "QMatMul expects 2 inputs");
        expect_i8("QMatMul", &inputs[0], "a")?;
        expect_i8("QMatMul", &inputs[1], "b")?;
        let (mut shape, m, _, n) = Self::dims(&inputs[0].ty.shape, &inputs[1].ty.shape)?;
        shape.extend([m, n]);
        Ok(vec![TensorType::new(DType::I8, shape)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (batch, m, k, n) = Self::dims(inputs[0].shape(), inputs[1].shape())?;
        let a = broadcast_i8(inputs[0], &batch, &[m, k])?;
        let b = broadcast_i8(inputs[1], &batch, &[k, n])?;
        let count: usize = batch.iter().product();
        let p = BatchedMatmul {
            a_offset: -self.a_zero_point,
            b_offset: -self.b_zero_point,
            ..BatchedMatmul::packed_nn(count, m, k, n)
        };
        let rq = self.rescale.requant("QMatMul", self.y_zero_point)?;
        let mut out = vec![0i8; count * m * n];
        av_requant(&p, &a, &b, &rq, &mut out).map_err(|e| kernel_err("QMatMul", e))?;
        let shape: Vec<usize> = batch.iter().chain(&[m, n]).copied().collect();
        Ok(vec![i8_tensor(&shape, out)?])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        (outputs[0].len() * inputs[0].shape.last().copied().unwrap_or(0)) as u64
    }
}

/// Which requantized element-wise operation a [`QBinary`] performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QBinaryKind {
    /// `a ± b` at a common scale (a negative input-2 multiplier subtracts), TFLite arithmetic.
    Add(AddRequant),
    /// `a ± b` with two 16-bit multipliers and one shift (mote's, used when the scales allow).
    AddShift(AddShift),
    /// `a · b`.
    Mul(MulRequant),
}

/// int8 add/sub/mul of two tensors with numpy broadcasting (TFLite int8 ADD/MUL arithmetic).
#[derive(Clone, Debug)]
pub struct QBinary {
    /// The operation and its parameters.
    pub kind: QBinaryKind,
}

impl Op for QBinary {
    fn name(&self) -> &'static str {
        match self.kind {
            QBinaryKind::Add(_) | QBinaryKind::AddShift(_) => "QAdd",
            QBinaryKind::Mul(_) => "QMul",
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "{} expects 2 inputs", self.name());
        expect_i8(self.name(), &inputs[0], "a")?;
        expect_i8(self.name(), &inputs[1], "b")?;
        Ok(vec![TensorType::new(DType::I8, broadcast_shapes(&inputs[0].ty.shape, &inputs[1].ty.shape)?)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = broadcast_shapes(inputs[0].shape(), inputs[1].shape())?;
        let a = broadcast_i8(inputs[0], &shape, &[])?;
        let b = broadcast_i8(inputs[1], &shape, &[])?;
        let mut out = vec![0i8; a.len()];
        let r = match &self.kind {
            QBinaryKind::Add(p) => add_requant(&a, &b, 1, p, &mut out),
            QBinaryKind::AddShift(p) => add_shift(&a, &b, 1, p, &mut out),
            QBinaryKind::Mul(p) => mul_requant(&a, &b, 1, p, &mut out),
        };
        r.map_err(|e| kernel_err(self.name(), e))?;
        Ok(vec![i8_tensor(&shape, out)?])
    }
}

/// Any element-wise function of one int8 tensor, as a 256-entry table (`table[x + 128]`):
/// GELU, SiLU, sigmoid, tanh, Erf islands, scaling by a constant, ReLU/Clip, ...
#[derive(Clone, Debug)]
pub struct QLut {
    /// Output for each input value -128..=127.
    pub table: Box<[i8; 256]>,
    /// What the table computes, for reports (e.g. `Gelu`).
    pub label: String,
}

impl Op for QLut {
    op_common!("QLut");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "QLut expects 1 input");
        expect_i8("QLut", &inputs[0], "input")?;
        Ok(vec![inputs[0].ty.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = i8_data(inputs[0])?;
        let mut out = vec![0i8; x.len()];
        activation::lut_i8(&x, &self.table, &mut out).map_err(|e| kernel_err("QLut", e))?;
        Ok(vec![i8_tensor(inputs[0].shape(), out)?])
    }
}

/// int8 softmax over the last axis from an exponential table, optionally masked
/// (see `mote_kernels::softmax::softmax_i8`).
#[derive(Clone, Debug)]
pub struct QSoftmax {
    /// `round(2^15·exp(-s_in·d))`.
    pub exp: Box<[u16; 256]>,
    /// `round(2^16 / s_out)`.
    pub out_recip: u32,
    /// Output zero point.
    pub out_zero_point: i32,
    /// Allowed positions `[rows, row_len]`, repeated over the leading rows (e.g. a causal mask).
    pub mask: Option<(Vec<bool>, usize)>,
}

impl Op for QSoftmax {
    op_common!("QSoftmax");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "QSoftmax expects 1 input");
        expect_i8("QSoftmax", &inputs[0], "input")?;
        let s = &inputs[0].ty.shape;
        let row = *s.last().filter(|&&n| n > 0).ok_or_else(|| Error::Invalid("QSoftmax on an empty axis".into()))?;
        if let Some((m, rows)) = &self.mask {
            let total = inputs[0].ty.len() / row;
            ensure!(
                *rows > 0 && m.len() == rows * row && total.is_multiple_of(*rows),
                "QSoftmax mask does not tile {s:?}"
            );
        }
        Ok(vec![inputs[0].ty.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = i8_data(inputs[0])?;
        let row = *inputs[0].shape().last().expect("checked by infer");
        let p = SoftmaxI8Params { exp: &self.exp, out_recip: self.out_recip, out_zero_point: self.out_zero_point };
        let mask = self.mask.as_ref().map(|(m, rows)| RowMask { allowed: m, rows: *rows });
        let mut out = vec![0i8; x.len()];
        softmax_i8(&x, row, mask, &p, &mut out).map_err(|e| kernel_err("QSoftmax", e))?;
        Ok(vec![i8_tensor(inputs[0].shape(), out)?])
    }
}

/// int8 LayerNorm or RMSNorm over the last axis (see `mote_kernels::norm::layernorm_i8`).
#[derive(Clone, Debug)]
pub struct QLayerNorm {
    /// `round(γ/s_out·2^F)`.
    pub gamma: Vec<i32>,
    /// `round(β/s_out·2^F)`.
    pub beta: Vec<i32>,
    /// F.
    pub frac_bits: u32,
    /// `round(ε·N²/s_in²)`.
    pub eps: u64,
    /// Output zero point.
    pub out_zero_point: i32,
    /// RMSNorm: rows are centered on this input zero point instead of their mean.
    pub rms_zero_point: Option<i32>,
}

impl Op for QLayerNorm {
    fn name(&self) -> &'static str {
        if self.rms_zero_point.is_some() {
            "QRmsNorm"
        } else {
            "QLayerNorm"
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "QLayerNorm expects 1 input");
        expect_i8("QLayerNorm", &inputs[0], "input")?;
        let n = inputs[0].ty.shape.last().copied().unwrap_or(0);
        ensure!(n == self.gamma.len(), "QLayerNorm: {} weights for a last axis of {n}", self.gamma.len());
        Ok(vec![inputs[0].ty.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = i8_data(inputs[0])?;
        let p = LayerNormI8Params {
            gamma: &self.gamma,
            beta: &self.beta,
            frac_bits: self.frac_bits,
            eps: self.eps,
            out_zero_point: self.out_zero_point,
            rms_zero_point: self.rms_zero_point,
        };
        let mut out = vec![0i8; x.len()];
        layernorm_i8(&x, self.gamma.len(), &p, &mut out).map_err(|e| kernel_err("QLayerNorm", e))?;
        Ok(vec![i8_tensor(inputs[0].shape(), out)?])
    }
}

/// int8 → int8 change of scale/zero point: `y = rq(x - zx) + zy`.
#[derive(Clone, Debug)]
pub struct Requantize {
    /// Zero point of x.
    pub x_zero_point: i32,
    /// `s_x / s_y`.
    pub rescale: Rescale,
    /// Zero point of y.
    pub y_zero_point: i32,
}

impl Op for Requantize {
    op_common!("Requantize");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "Requantize expects 1 input");
        expect_i8("Requantize", &inputs[0], "input")?;
        Ok(vec![inputs[0].ty.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let rq = self.rescale.requant("Requantize", self.y_zero_point)?;
        let x = i8_data(inputs[0])?;
        let mut out = vec![0i8; x.len()];
        rescale(&x, -self.x_zero_point, &rq, &mut out).map_err(|e| kernel_err("Requantize", e))?;
        Ok(vec![i8_tensor(inputs[0].shape(), out)?])
    }
}

/// int8 mean over a contiguous block of axes (ReduceMean, GlobalAveragePool):
/// `y = rq(Σ (x - zx)) + zy` with the `s_x / (n·s_y)` multiplier.
#[derive(Clone, Debug)]
pub struct QMean {
    /// First reduced axis.
    pub first: usize,
    /// One past the last reduced axis.
    pub end: usize,
    /// Keep the reduced axes as size 1.
    pub keepdims: bool,
    /// Zero point of x.
    pub x_zero_point: i32,
    /// `s_x / (n·s_y)`.
    pub rescale: Rescale,
    /// Zero point of y.
    pub y_zero_point: i32,
}

impl Op for QMean {
    op_common!("QMean");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "QMean expects 1 input");
        expect_i8("QMean", &inputs[0], "input")?;
        let s = &inputs[0].ty.shape;
        ensure!(self.first < self.end && self.end <= s.len(), "QMean axes {}..{} of {s:?}", self.first, self.end);
        let mut out = s[..self.first].to_vec();
        if self.keepdims {
            out.extend(std::iter::repeat_n(1, self.end - self.first));
        }
        out.extend(&s[self.end..]);
        Ok(vec![TensorType::new(DType::I8, out)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let s = inputs[0].shape();
        let (outer, n, inner) = (
            s[..self.first].iter().product::<usize>(),
            s[self.first..self.end].iter().product::<usize>(),
            s[self.end..].iter().product::<usize>(),
        );
        let rq = self.rescale.requant("QMean", self.y_zero_point)?;
        let mut out = vec![0i8; outer * inner];
        pool::mean_requant(&i8_data(inputs[0])?, outer, n, inner, -self.x_zero_point, &rq, &mut out)
            .map_err(|e| kernel_err("QMean", e))?;
        let ty = &self.infer(&[InputFact { ty: &inputs[0].ty(), value: None }])?[0];
        Ok(vec![i8_tensor(&ty.shape, out)?])
    }
}

/// int8 2-D convolution (patch embedding, convolutional tokenizers): inputs x `I8 [N,C,H,W]`,
/// w `I8 [O, C/group, kh, kw]` (symmetric, per output channel), optional bias `I32 [O]`.
#[derive(Clone, Debug)]
pub struct QConv {
    /// Strides `[h, w]`.
    pub strides: [usize; 2],
    /// Pads `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `[h, w]`.
    pub dilations: [usize; 2],
    /// Groups.
    pub group: usize,
    /// Zero point of x.
    pub x_zero_point: i32,
    /// `s_x·s_w[o] / s_y`.
    pub rescale: AccRescale,
    /// Zero point of y.
    pub y_zero_point: i32,
}

impl QConv {
    fn params(&self, x: &[usize], w: &[usize]) -> Result<conv::Conv2dParams> {
        ensure!(x.len() == 4 && w.len() == 4, "QConv needs 4-D x and w, got {x:?} and {w:?}");
        let p = conv::Conv2dParams {
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            pad_top: self.pads[0],
            pad_left: self.pads[1],
            pad_bottom: self.pads[2],
            pad_right: self.pads[3],
            groups: self.group,
            input_offset: -self.x_zero_point,
            ..conv::Conv2dParams::new(x[0], x[1], x[2], x[3], w[0], w[2], w[3])
        };
        ensure!(w[1] * self.group == x[1], "QConv: weight {w:?} does not match {} input channels", x[1]);
        p.output_hw().map_err(|e| kernel_err("QConv", e))?;
        Ok(p)
    }
}

impl Op for QConv {
    op_common!("QConv");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!((2..=3).contains(&inputs.len()), "QConv expects x, w and an optional bias");
        expect_i8("QConv", &inputs[0], "input")?;
        expect_i8("QConv", &inputs[1], "weight")?;
        let (x, w) = (&inputs[0].ty.shape, &inputs[1].ty.shape);
        let p = self.params(x, w)?;
        if let Some(b) = inputs.get(2) {
            ensure!(b.ty.dtype == DType::I32 && b.ty.len() == w[0], "QConv bias must be int32 [{}]", w[0]);
        }
        let (oh, ow) = p.output_hw().map_err(|e| kernel_err("QConv", e))?;
        Ok(vec![TensorType::new(DType::I8, vec![x[0], w[0], oh, ow])])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let p = self.params(inputs[0].shape(), inputs[1].shape())?;
        let bias = inputs.get(2).map(|b| i32_data(b)).transpose()?;
        let (oh, ow) = p.output_hw().map_err(|e| kernel_err("QConv", e))?;
        let shape = [inputs[0].shape()[0], p.out_channels, oh, ow];
        let rq = self.rescale.requant("QConv", self.y_zero_point)?;
        let mut out = vec![0i8; shape.iter().product()];
        conv::conv2d_requant(&i8_data(inputs[0])?, &i8_data(inputs[1])?, bias.as_deref(), &p, &rq, &mut out)
            .map_err(|e| kernel_err("QConv", e))?;
        Ok(vec![i8_tensor(&shape, out)?])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        let w = &inputs[1].shape;
        (outputs[0].len() * w[1] * w[2] * w[3]) as u64
    }
}
