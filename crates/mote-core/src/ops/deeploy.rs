//! Deeploy's integer operators (peer-models/SEMANTICS.md §3), one small type per op.
//!
//! Every `eval` delegates the arithmetic to `mote-kernels`, the single definition of mote's
//! integer semantics: the i64 IR data is converted to the kernel's element type (with an error
//! naming the value when it does not fit), and the kernel result is widened back to `I64`.
//! Inputs may have any integer dtype; outputs are always `I64` (exact integers).
use super::matmul::i64_data;
use crate::op::InputFact;
use crate::{bail, ensure, op_common, DType, Error, Op, Result, Tensor, TensorType};
use mote_kernels::requant::{requantize, Requant, ShiftRequant};
use mote_kernels::{activation, elementwise, norm, pool, softmax, KernelError};

/// Checks that an input holds integers (the IR's integer graphs are `I64`).
fn check_int(op: &str, t: &TensorType, what: &str) -> Result<()> {
    ensure!(
        !t.dtype.is_float() && t.dtype != DType::Bool,
        "{op} needs an integer {what}, got {} (is this an integer graph?)",
        t.dtype
    );
    Ok(())
}

/// Converts tensor data to a kernel element type, naming the first value that does not fit.
pub(crate) fn convert<T: TryFrom<i64>>(op: &str, what: &str, ty: &str, t: &Tensor) -> Result<Vec<T>> {
    i64_data(t)
        .iter()
        .map(|&v| T::try_from(v).map_err(|_| Error::Invalid(format!("{op} {what} {v} is outside {ty}"))))
        .collect()
}

/// True when every value of `t` fits `T`.
fn fits<T: TryFrom<i64>>(t: &Tensor) -> bool {
    i64_data(t).iter().all(|&v| T::try_from(v).is_ok())
}

fn kernel_err(op: &str, e: KernelError) -> Error {
    Error::Invalid(format!("{op} kernel refused its arguments: {e}"))
}

/// Widens kernel output to an `I64` tensor of `shape`.
pub(crate) fn out_i64<T: Copy + Into<i64>>(shape: &[usize], v: &[T]) -> Result<Tensor> {
    Tensor::from_vec(shape, v.iter().map(|&x| x.into()).collect::<Vec<i64>>())
}

/// Length of the last axis (the row normalized by softmax / norm ops); rank >= 1.
fn row_len(op: &str, shape: &[usize]) -> Result<usize> {
    match shape.last() {
        Some(&n) if n > 0 => Ok(n),
        _ => bail!("{op} needs an input of rank >= 1 with a non-empty last axis, got {shape:?}"),
    }
}

/// Infer for element-wise / row-wise ops: `n` integer inputs, output = I64 with x's shape.
fn infer_same(op: &str, inputs: &[InputFact], n: usize) -> Result<Vec<TensorType>> {
    ensure!(inputs.len() == n, "{op} expects {n} input(s), got {}", inputs.len());
    for (i, f) in inputs.iter().enumerate() {
        check_int(op, f.ty, &format!("input #{i}"))?;
    }
    Ok(vec![TensorType::new(DType::I64, inputs[0].ty.shape.clone())])
}

/// Checks that a per-row parameter (weight, bias) has `n` elements (after dropping 1-dims).
fn check_row_param(op: &str, p: &TensorType, n: usize, what: &str) -> Result<()> {
    ensure!(
        p.len() == n,
        "{op} {what} has shape {:?}, expected {n} elements (one per element of the last axis)",
        p.shape
    );
    Ok(())
}

/// Deeploy `RequantShift` (§3.1): `clamp(floor((x·mul + add) / 2^div_log2 + 1/2))` to
/// `[-n/2, n/2-1]` (signed) or `[0, n-1]`. Inputs x, mul, add; mul/add broadcast against x
/// per tensor or over one contiguous block of axes (per row, per channel).
#[derive(Clone, Debug)]
pub struct RequantShift {
    /// `log2(div)`.
    pub div_log2: u32,
    /// Output levels (`n_levels_out` / `n_levels`).
    pub n_levels: u32,
    /// Signed output range.
    pub signed: bool,
}

/// How mul/add are laid out against x: `(channels, inner)` for the kernel's `[outer, C, inner]`.
fn rqs_layout(x: &[usize], mul: &[usize], add: &[usize]) -> Result<(usize, usize)> {
    let rank = x.len();
    let mut span: Option<(usize, usize)> = None;
    for p in [mul, add] {
        ensure!(
            p.len() <= rank && p.iter().rev().zip(x.iter().rev()).all(|(&a, &b)| a == 1 || a == b),
            "RequantShift parameter of shape {p:?} does not broadcast to x of shape {x:?}"
        );
        let off = rank - p.len();
        for (i, &d) in p.iter().enumerate() {
            if d != 1 {
                let ax = off + i;
                span = Some(span.map_or((ax, ax + 1), |(lo, hi)| (lo.min(ax), hi.max(ax + 1))));
            }
        }
    }
    let Some((lo, hi)) = span else { return Ok((1, 1)) };
    let c: usize = x[lo..hi].iter().product();
    for p in [mul, add] {
        let n: usize = p.iter().product();
        ensure!(
            n == 1 || n == c,
            "RequantShift parameter of shape {p:?} is neither per-tensor nor per-channel over axes {lo}..{hi} of x {x:?}"
        );
    }
    Ok((c, x[hi..].iter().product()))
}

impl Op for RequantShift {
    op_common!("RequantShift");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let out = infer_same("RequantShift", inputs, 3)?;
        rqs_layout(&inputs[0].ty.shape, &inputs[1].ty.shape, &inputs[2].ty.shape)?;
        Ok(out)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "RequantShift";
        let (x, mul, add) = (inputs[0], inputs[1], inputs[2]);
        let (_, inner) = rqs_layout(x.shape(), mul.shape(), add.shape())?;
        let xv: Vec<i32> = convert(op, "input", "int32", x)?;
        let mv: Vec<i32> = convert(op, "mul", "int32", mul)?;
        let av: Vec<i32> = convert(op, "add", "int32", add)?;
        let rq =
            ShiftRequant::new(&mv, &av, self.div_log2, self.n_levels, self.signed).map_err(|e| kernel_err(op, e))?;
        let mut out = vec![0i32; xv.len()];
        requantize(&xv, &Requant::Shift(rq), inner.max(1), &mut out).map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(x.shape(), &out)?])
    }

    fn macs(&self, _inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        outputs[0].len() as u64
    }
}

/// Deeploy `iSoftmax` (§3.7) along the last axis; int8 input, output 0..n_levels-1.
#[derive(Clone, Debug)]
pub struct ISoftmax {
    /// `coeffA`.
    pub coeff_a: i32,
    /// `coeffB`.
    pub coeff_b: i32,
    /// `coeffC`.
    pub coeff_c: i64,
    /// `log2`.
    pub log2: i32,
    /// `n_levels`.
    pub n_levels: u32,
}

impl Op for ISoftmax {
    op_common!("iSoftmax");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let out = infer_same("iSoftmax", inputs, 1)?;
        row_len("iSoftmax", &inputs[0].ty.shape)?;
        Ok(out)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "iSoftmax";
        let x = inputs[0];
        let xv: Vec<i8> = convert(op, "input", "int8", x)?;
        let p = softmax::ISoftmaxParams {
            coeff_a: self.coeff_a,
            coeff_b: self.coeff_b,
            coeff_c: self.coeff_c,
            log2: self.log2,
            n_levels: self.n_levels,
        };
        let mut out = vec![0u8; xv.len()];
        softmax::isoftmax(&xv, row_len(op, x.shape())?, &p, &mut out).map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(x.shape(), &out)?])
    }
}

/// Deeploy `ITAMax` (§3.8) along the last axis; int8 input, output 0..255 (n_levels = 256).
#[derive(Clone, Debug)]
pub struct ItaMax {
    /// `n_levels` (the kernel implements 256).
    pub n_levels: u32,
}

impl Op for ItaMax {
    op_common!("ITAMax");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(self.n_levels == 256, "ITAMax supports n_levels = 256, got {}", self.n_levels);
        let out = infer_same("ITAMax", inputs, 1)?;
        row_len("ITAMax", &inputs[0].ty.shape)?;
        Ok(out)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "ITAMax";
        let x = inputs[0];
        let xv: Vec<i8> = convert(op, "input", "int8", x)?;
        let mut out = vec![0u8; xv.len()];
        softmax::itamax(&xv, row_len(op, x.shape())?, &mut out).map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(x.shape(), &out)?])
    }
}

/// Runs an 8-bit norm kernel on int8 data, or on uint8 data when it does not fit int8.
fn norm8(
    op: &str,
    x: &Tensor,
    k8: impl Fn(&[i8], &mut [i8]) -> std::result::Result<(), KernelError>,
    ku8: impl Fn(&[u8], &mut [i8]) -> std::result::Result<(), KernelError>,
) -> Result<Tensor> {
    let mut out = vec![0i8; x.len()];
    if fits::<i8>(x) {
        let xv: Vec<i8> = convert(op, "input", "int8", x)?;
        k8(&xv, &mut out).map_err(|e| kernel_err(op, e))?;
    } else {
        let xv: Vec<u8> = convert(op, "input", "int8 or uint8", x)?;
        ku8(&xv, &mut out).map_err(|e| kernel_err(op, e))?;
    }
    out_i64(x.shape(), &out)
}

/// Deeploy `iLayerNorm` (§3.10) over the last axis: inputs x (8-bit), weight, bias.
#[derive(Clone, Debug)]
pub struct ILayerNorm {
    /// `D` (divisor of the final step).
    pub d: u32,
    /// `n_levels`.
    pub n_levels: u32,
}

impl Op for ILayerNorm {
    op_common!("iLayerNorm");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let op = "iLayerNorm";
        let out = infer_same(op, inputs, 3)?;
        let n = row_len(op, &inputs[0].ty.shape)?;
        check_row_param(op, inputs[1].ty, n, "weight")?;
        check_row_param(op, inputs[2].ty, n, "bias")?;
        Ok(out)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "iLayerNorm";
        let x = inputs[0];
        let n = row_len(op, x.shape())?;
        let w: Vec<i32> = convert(op, "weight", "int32", inputs[1])?;
        let b: Vec<i32> = convert(op, "bias", "int32", inputs[2])?;
        let (d, nl) = (self.d, self.n_levels);
        let t = norm8(
            op,
            x,
            |xv, o| norm::ilayernorm(xv, n, &w, &b, d, nl, o),
            |xv, o| norm::ilayernorm(xv, n, &w, &b, d, nl, o),
        )?;
        Ok(vec![t])
    }

    fn macs(&self, _inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        2 * outputs[0].len() as u64
    }
}

/// Deeploy `iRMSNorm` (§3.11) over the last axis: inputs x (8-bit), weight.
#[derive(Clone, Debug)]
pub struct IRmsNorm {
    /// `D`.
    pub d: u32,
    /// `n_levels`.
    pub n_levels: u32,
}

impl Op for IRmsNorm {
    op_common!("iRMSNorm");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        let op = "iRMSNorm";
        let out = infer_same(op, inputs, 2)?;
        let n = row_len(op, &inputs[0].ty.shape)?;
        check_row_param(op, inputs[1].ty, n, "weight")?;
        Ok(out)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "iRMSNorm";
        let x = inputs[0];
        let n = row_len(op, x.shape())?;
        let w: Vec<i32> = convert(op, "weight", "int32", inputs[1])?;
        let (d, nl) = (self.d, self.n_levels);
        let t = norm8(op, x, |xv, o| norm::irmsnorm(xv, n, &w, d, nl, o), |xv, o| norm::irmsnorm(xv, n, &w, d, nl, o))?;
        Ok(vec![t])
    }

    fn macs(&self, _inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        2 * outputs[0].len() as u64
    }
}

/// Deeploy `iGELU` (§3.15), element-wise on int8; wide output.
#[derive(Clone, Debug)]
pub struct IGelu {
    /// `b` (negative).
    pub b: i32,
    /// `one`.
    pub one: i32,
}

impl Op for IGelu {
    op_common!("iGELU");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        infer_same("iGELU", inputs, 1)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "iGELU";
        let xv: Vec<i8> = convert(op, "input", "int8", inputs[0])?;
        let mut out = vec![0i32; xv.len()];
        activation::igelu(&xv, self.b, self.one, &mut out).map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(inputs[0].shape(), &out)?])
    }
}

/// Deeploy `iHardswish` (§3.16), element-wise on int8; wide output.
#[derive(Clone, Debug)]
pub struct IHardswish {
    /// `three`.
    pub three: i32,
    /// `six`.
    pub six: i32,
    /// `one_over_six`.
    pub one_over_six: i32,
}

impl Op for IHardswish {
    op_common!("iHardswish");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        infer_same("iHardswish", inputs, 1)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "iHardswish";
        let xv: Vec<i8> = convert(op, "input", "int8", inputs[0])?;
        let mut out = vec![0i32; xv.len()];
        activation::ihardswish(&xv, self.three, self.six, self.one_over_six, &mut out)
            .map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(inputs[0].shape(), &out)?])
    }
}

/// Deeploy `TrueIntegerDiv` (§3.12): `x·k` with `k = floor(Δη / (yη + ε))` fixed at import.
#[derive(Clone, Debug)]
pub struct TrueIntegerDiv {
    /// The multiplier `k` (see `mote_kernels::elementwise::true_integer_div_k`).
    pub k: i32,
}

impl TrueIntegerDiv {
    /// Builds the op from Deeploy's attributes `y`, `Delta`, `eps`, `eta`.
    pub fn from_attrs(y: i64, delta: i64, eps: i64, eta: i64) -> Result<Self> {
        let k = elementwise::true_integer_div_k(delta, y, eps, eta).map_err(|_| {
            Error::Invalid(format!(
                "TrueIntegerDiv: Delta·eta/(y·eta+eps) with y={y}, Delta={delta}, eps={eps}, eta={eta} \
                 has a zero denominator or leaves int32"
            ))
        })?;
        Ok(TrueIntegerDiv { k })
    }
}

impl Op for TrueIntegerDiv {
    op_common!("TrueIntegerDiv");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        infer_same("TrueIntegerDiv", inputs, 1)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "TrueIntegerDiv";
        let x = inputs[0];
        let mut out = vec![0i32; x.len()];
        // The kernel checks that x·k fits int32 for every value of the element type, so use
        // the narrowest type that holds the data.
        let r = if fits::<i8>(x) {
            elementwise::true_integer_div(&convert::<i8>(op, "input", "int8", x)?, self.k, &mut out)
        } else {
            elementwise::true_integer_div(&convert::<i16>(op, "input", "int16", x)?, self.k, &mut out)
        };
        r.map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(x.shape(), &out)?])
    }

    fn macs(&self, _inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        outputs[0].len() as u64
    }
}

/// Deeploy `IntegerMean` (§3.14): `floor(mean + 1/2)` over contiguous `axes`.
#[derive(Clone, Debug)]
pub struct IntegerMean {
    /// Reduced axes (resolved, sorted, contiguous).
    pub axes: Vec<usize>,
    /// Keep the reduced axes as size 1.
    pub keepdims: bool,
}

impl IntegerMean {
    /// `(outer, n, inner)` of the kernel's `[outer, n, inner]` view, and the output shape.
    fn plan(&self, shape: &[usize]) -> Result<((usize, usize, usize), Vec<usize>)> {
        let (Some(&lo), Some(&hi)) = (self.axes.first(), self.axes.last()) else {
            bail!("IntegerMean needs at least one axis")
        };
        ensure!(
            hi < shape.len() && self.axes.windows(2).all(|w| w[1] == w[0] + 1),
            "IntegerMean axes {:?} must be distinct, contiguous and within rank {}",
            self.axes,
            shape.len()
        );
        let dims = (shape[..lo].iter().product(), shape[lo..=hi].iter().product(), shape[hi + 1..].iter().product());
        let mut out = shape[..lo].to_vec();
        if self.keepdims {
            out.extend(std::iter::repeat_n(1, hi + 1 - lo));
        }
        out.extend_from_slice(&shape[hi + 1..]);
        Ok((dims, out))
    }
}

impl Op for IntegerMean {
    op_common!("IntegerMean");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        infer_same("IntegerMean", inputs, 1)?;
        let (_, out) = self.plan(&inputs[0].ty.shape)?;
        Ok(vec![TensorType::new(DType::I64, out)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let op = "IntegerMean";
        let x = inputs[0];
        let ((outer, n, inner), shape) = self.plan(x.shape())?;
        let xv: Vec<i32> = convert(op, "input", "int32", x)?;
        let mut out = vec![0i32; outer * inner];
        pool::integer_mean(&xv, outer, n, inner, &mut out).map_err(|e| kernel_err(op, e))?;
        Ok(vec![out_i64(&shape, &out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }
    fn run(op: &dyn Op, ts: &[&Tensor]) -> Result<Vec<i64>> {
        let tys: Vec<TensorType> = ts.iter().map(|t| t.ty()).collect();
        let fs: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        let out_ty = op.infer(&fs)?;
        let out = op.eval(ts)?.remove(0);
        assert_eq!(out.ty(), out_ty[0]);
        Ok(out.to_i64_vec())
    }

    #[test]
    fn requant_shift_half_and_clamp() {
        let op = RequantShift { div_log2: 2, n_levels: 256, signed: true };
        // (x·1 + 0)/4: 6/4 = 1.5 -> 2, -6/4 = -1.5 -> -1 (half toward +inf), 1000/4 -> 127, -1000/4 -> -128.
        let x = t(&[4], &[6, -6, 1000, -1000]);
        let y = run(&op, &[&x, &t(&[], &[1]), &t(&[], &[0])]).unwrap();
        assert_eq!(y, vec![2, -1, 127, -128]);
        let op = RequantShift { div_log2: 1, n_levels: 256, signed: false };
        // per-row [2,1] mul/add on [2,2]: row 0: (x·3 + 1)/2, row 1: (x·1 - 4)/2, clamp to 0..255.
        let x = t(&[2, 2], &[1, 200, 3, 0]);
        let y = run(&op, &[&x, &t(&[2, 1], &[3, 1]), &t(&[2, 1], &[1, -4])]).unwrap();
        assert_eq!(y, vec![2, 255, 0, 0]);
        assert!(run(&op, &[&x, &t(&[3], &[1, 1, 1]), &t(&[], &[0])]).is_err());
    }

    #[test]
    fn isoftmax_and_itamax() {
        // Equal inputs share the levels equally: floor(255/2) = 127.
        let op = ISoftmax { coeff_a: 1, coeff_b: 10, coeff_c: 50, log2: 5, n_levels: 256 };
        assert_eq!(run(&op, &[&t(&[1, 2], &[3, 3])]).unwrap(), vec![127, 127]);
        let e = run(&op, &[&t(&[1, 2], &[300, 3])]).unwrap_err().to_string();
        assert!(e.contains("iSoftmax input 300 is outside int8"), "{e}");
        // ITAMax: sh = (0+16)>>5 = 0 and (64+16)>>5 = 2: E = 256 + 64, inv = 65280/320 = 204, 204>>2 = 51.
        let op = ItaMax { n_levels: 256 };
        assert_eq!(run(&op, &[&t(&[2], &[10, -54])]).unwrap(), vec![204, 51]);
    }

    #[test]
    fn norms() {
        // iRMSNorm: x = [3,4]: ms = floor(25/2) = 12, std = isqrt(13) = 3; y = floor(x·w/(3·D)).
        let op = IRmsNorm { d: 2, n_levels: 256 };
        assert_eq!(run(&op, &[&t(&[1, 2], &[3, 4]), &t(&[2], &[12, -12])]).unwrap(), vec![6, -8]);
        // iLayerNorm: x = [1,3]: mean 2, d = [-1,1], var 1, std = isqrt(2) = 1; t = d·w; y = floor((t+b)/D).
        let op = ILayerNorm { d: 2, n_levels: 256 };
        let y = run(&op, &[&t(&[2], &[1, 3]), &t(&[2], &[5, 5]), &t(&[2], &[0, 1])]).unwrap();
        assert_eq!(y, vec![-3, 3]);
        // uint8 input (values above 127) is accepted.
        let y = run(&op, &[&t(&[2], &[200, 200]), &t(&[2], &[5, 5]), &t(&[2], &[0, 0])]).unwrap();
        assert_eq!(y, vec![0, 0]);
    }

    #[test]
    fn activations() {
        // iGELU b=-2, one=4: x=1: q=1, L = 4-1 = 3, y = 1·floor(7/2) = 3; x=-1: L=-3, y = -1·0 = 0; x=5: q=2, L=4, y=5·4=20.
        let op = IGelu { b: -2, one: 4 };
        assert_eq!(run(&op, &[&t(&[3], &[1, -1, 5])]).unwrap(), vec![3, 0, 20]);
        // iHardswish three=3, six=6, one_over_six=2: x=1: 1·(4·2) = 8; x=-4: 0; x=5: 5·(6·2) = 60.
        let op = IHardswish { three: 3, six: 6, one_over_six: 2 };
        assert_eq!(run(&op, &[&t(&[3], &[1, -4, 5])]).unwrap(), vec![8, 0, 60]);
    }

    #[test]
    fn true_integer_div_and_mean() {
        let op = TrueIntegerDiv::from_attrs(2, 16384, 1, 200_000).unwrap();
        assert_eq!(op.k, 8191);
        assert_eq!(run(&op, &[&t(&[3], &[-12, 26, 1000])]).unwrap(), vec![-98_292, 212_966, 8_191_000]);
        assert!(TrueIntegerDiv::from_attrs(0, 1, 0, 1).is_err());
        // Mean over axis 1 of [1,2,2]: (1+2)/2 = 1.5 -> 2, (-1 + -2)/2 = -1.5 -> -1.
        let op = IntegerMean { axes: vec![1], keepdims: false };
        assert_eq!(run(&op, &[&t(&[1, 2, 2], &[1, -1, 2, -2])]).unwrap(), vec![2, -1]);
        let op = IntegerMean { axes: vec![1], keepdims: true };
        let x = t(&[1, 2, 2], &[1, -1, 2, -2]);
        let tys = [x.ty()];
        let fs = [InputFact { ty: &tys[0], value: None }];
        assert_eq!(op.infer(&fs).unwrap()[0].shape, vec![1, 1, 2]);
    }
}
