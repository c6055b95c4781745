//! Translators for shape and data-movement ops. Static parameters (target shapes,
//! axes, slice ranges) are read from attributes or constant inputs and resolved
//! against the static input shape; Shape, Size, ConstantOfShape and Range become
//! constants.
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::resolve_axis;
use mote_core::ops::shape::{
    resolve_reshape, resolve_slice, Concat, Const, Expand, Gather, Reshape, Slice, Split, Tile, Transpose, Trilu,
};
use mote_core::{bail, ensure, DType, Op, Result, Tensor, TensorType};

/// Axes from the optional constant input `k` when present, else the `axes` attribute.
pub(super) fn axes_arg(ctx: &NodeCtx, k: usize) -> Result<Option<Vec<i64>>> {
    match ctx.const_ints(k)? {
        Some(v) => Ok(Some(v)),
        None => ctx.attr_ints("axes"),
    }
}

/// Resolves possibly negative axes against `rank`, rejecting duplicates.
pub(super) fn resolve_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let r = resolve_axis(a, rank)?;
        ensure!(!out.contains(&r), "axis {a} is listed twice in {:?}", axes);
        out.push(r);
    }
    Ok(out)
}

/// Non-negative integers from a constant input or attribute.
fn dims(v: &[i64], what: &str) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| {
            ensure!(d >= 0, "{what} {:?} has a negative value {d}", v);
            Ok(d as usize)
        })
        .collect()
}

fn reshape_to(shape: Vec<usize>, label: &'static str) -> Result<Translated> {
    Translated::first(Reshape { shape, label }, 1)
}

/// Reshape: target from input #1 (opset ≥ 5) or the `shape` attribute; 0 copies the
/// input dim unless `allowzero`, −1 is inferred.
pub(super) fn reshape(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let spec = match ctx.const_ints(1)? {
        Some(s) => s,
        None => match ctx.attr_ints("shape")? {
            Some(s) => s,
            None => bail!("needs a target shape (input #1)"),
        },
    };
    let allowzero = ctx.attr_i("allowzero")?.unwrap_or(0) != 0;
    reshape_to(resolve_reshape(x, &spec, allowzero)?, "Reshape")
}

/// Flatten to 2-D at `axis` (default 1, may be negative or equal to the rank).
pub(super) fn flatten(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let r = x.len() as i64;
    let axis = ctx.attr_i("axis")?.unwrap_or(1);
    ensure!((-r..=r).contains(&axis), "axis {axis} is out of range for rank {r}");
    let a = (if axis < 0 { axis + r } else { axis }) as usize;
    reshape_to(vec![x[..a].iter().product(), x[a..].iter().product()], "Flatten")
}

/// Squeeze: axes from the attribute (< 13) or input #1 (≥ 13); without axes, every
/// size-1 dim is removed.
pub(super) fn squeeze(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let shape = match axes_arg(ctx, 1)? {
        None => x.iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let axes = resolve_axes(&axes, x.len())?;
            for &a in &axes {
                ensure!(x[a] == 1, "cannot squeeze axis {a} of size {} (shape {:?})", x[a], x);
            }
            x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
        }
    };
    reshape_to(shape, "Squeeze")
}

/// Unsqueeze: axes (attribute < 13, input #1 ≥ 13) index the output.
pub(super) fn unsqueeze(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let Some(axes) = axes_arg(ctx, 1)? else { bail!("needs axes") };
    let out_rank = x.len() + axes.len();
    let axes = resolve_axes(&axes, out_rank)?;
    let mut rest = x.iter();
    let shape = (0..out_rank).map(|i| if axes.contains(&i) { 1 } else { *rest.next().expect("counted") }).collect();
    reshape_to(shape, "Unsqueeze")
}

/// Transpose by `perm` (default: reversed axes).
pub(super) fn transpose(ctx: &NodeCtx) -> Result<Translated> {
    let r = ctx.input_ty(0)?.shape.len();
    let perm = match ctx.attr_ints("perm")? {
        Some(p) => dims(&p, "perm")?,
        None => (0..r).rev().collect(),
    };
    Translated::first(Transpose { perm }, 1)
}

/// Concat on `axis` (negative counts from the rank of the first non-empty operand).
pub(super) fn concat(ctx: &NodeCtx) -> Result<Translated> {
    let n = ctx.n_inputs();
    ensure!(n >= 1, "expects at least 1 input");
    let mut tys = Vec::with_capacity(n);
    for k in 0..n {
        tys.push(ctx.input_ty(k)?);
    }
    let reference = tys.iter().find(|t| !t.is_empty()).unwrap_or(&tys[0]);
    let Some(axis) = ctx.attr_i("axis")? else { bail!("attribute `axis` is required") };
    let axis = resolve_axis(axis, reference.shape.len())?;
    Translated::first(Concat { axis }, n)
}

/// Slice: starts/ends/axes attributes (< 10) or inputs 1..=4 (≥ 10), resolved per
/// axis with ONNX's clamping; unlisted axes are kept whole.
pub(super) fn slice(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let (starts, ends, axes, steps) = if ctx.n_inputs() >= 3 {
        let Some(starts) = ctx.const_ints(1)? else { bail!("input #1 (starts) is required") };
        let Some(ends) = ctx.const_ints(2)? else { bail!("input #2 (ends) is required") };
        (starts, ends, ctx.const_ints(3)?, ctx.const_ints(4)?)
    } else {
        let Some(starts) = ctx.attr_ints("starts")? else { bail!("attribute `starts` is required") };
        let Some(ends) = ctx.attr_ints("ends")? else { bail!("attribute `ends` is required") };
        (starts, ends, ctx.attr_ints("axes")?, None)
    };
    ensure!(starts.len() == ends.len(), "starts {:?} and ends {:?} differ in length", starts, ends);
    let axes = match axes {
        Some(a) => resolve_axes(&a, x.len())?,
        None => (0..starts.len()).collect(),
    };
    ensure!(axes.len() == starts.len(), "axes has {} entries, starts has {}", axes.len(), starts.len());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    ensure!(steps.len() == starts.len(), "steps has {} entries, starts has {}", steps.len(), starts.len());
    let mut op =
        Slice { starts: vec![0; x.len()], ends: x.iter().map(|&d| d as i64).collect(), steps: vec![1; x.len()] };
    for (i, &a) in axes.iter().enumerate() {
        ensure!(a < x.len(), "axis {a} is out of range for rank {}", x.len());
        let (s, e) = resolve_slice(starts[i], ends[i], steps[i], x[a])?;
        op.starts[a] = s;
        op.ends[a] = e;
        op.steps[a] = steps[i];
    }
    Translated::first(op, 1)
}

/// Gather on `axis` (default 0); the indices stay a data input.
pub(super) fn gather(ctx: &NodeCtx) -> Result<Translated> {
    let r = ctx.input_ty(0)?.shape.len();
    let axis = resolve_axis(ctx.attr_i("axis")?.unwrap_or(0), r)?;
    Translated::first(Gather { axis }, 2)
}

/// Split: sizes from input #1 (≥ 13) or the `split` attribute (< 13); else
/// `num_outputs` (≥ 18, last piece smaller) or an equal split over the node's outputs.
pub(super) fn split(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let axis = resolve_axis(ctx.attr_i("axis")?.unwrap_or(0), x.len())?;
    let dim = x[axis];
    let sizes = if let Some(s) = ctx.const_ints(1)? {
        dims(&s, "split")?
    } else if let Some(s) = ctx.attr_ints("split")? {
        dims(&s, "split")?
    } else if let Some(n) = ctx.attr_i("num_outputs")? {
        ensure!(n >= 1, "num_outputs must be >= 1, got {n}");
        let n = n as usize;
        let chunk = dim.div_ceil(n);
        ensure!(chunk * (n - 1) <= dim, "cannot split an axis of size {dim} into {n} outputs");
        let mut s = vec![chunk; n - 1];
        s.push(dim - chunk * (n - 1));
        s
    } else {
        let n = ctx.node.output.len();
        ensure!(n >= 1, "has no outputs");
        ensure!(dim % n == 0, "cannot split an axis of size {dim} equally into {n} outputs");
        vec![dim / n; n]
    };
    Translated::first(Split { axis, sizes }, 1)
}

/// Expand to the constant shape of input #1 (numpy broadcasting both ways).
pub(super) fn expand(ctx: &NodeCtx) -> Result<Translated> {
    let Some(shape) = ctx.const_ints(1)? else { bail!("input #1 (shape) is required") };
    Translated::first(Expand { shape: dims(&shape, "shape")? }, 1)
}

/// Tile by the constant repeats of input #1.
pub(super) fn tile(ctx: &NodeCtx) -> Result<Translated> {
    let Some(r) = ctx.const_ints(1)? else { bail!("input #1 (repeats) is required") };
    Translated::first(Tile { repeats: dims(&r, "repeats")? }, 1)
}

/// Trilu: `upper` (default 1) and the optional constant diagonal offset input #1.
pub(super) fn trilu(ctx: &NodeCtx) -> Result<Translated> {
    let k = match ctx.const_ints(1)? {
        None => 0,
        Some(v) => match v[..] {
            [k] => k,
            _ => bail!("k must hold one value, got {:?}", v),
        },
    };
    let upper = ctx.attr_i("upper")?.unwrap_or(1) != 0;
    Translated::first(Trilu { upper, k }, 1)
}

fn constant(value: Tensor) -> Result<Translated> {
    Translated::with(Const { value }, vec![])
}

/// Shape → constant i64 vector of the static input shape (`start`/`end` from opset 15).
pub(super) fn shape(ctx: &NodeCtx) -> Result<Translated> {
    let x = &ctx.input_ty(0)?.shape;
    let r = x.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(ctx.attr_i("start")?.unwrap_or(0));
    let end = clamp(ctx.attr_i("end")?.unwrap_or(r));
    let v: Vec<i64> = x[start..end.max(start)].iter().map(|&d| d as i64).collect();
    constant(Tensor::from_vec(&[v.len()], v)?)
}

/// Size → constant i64 scalar.
pub(super) fn size(ctx: &NodeCtx) -> Result<Translated> {
    constant(Tensor::scalar(ctx.input_ty(0)?.len() as i64))
}

/// ConstantOfShape → constant filled with the `value` attribute (default f32 0).
pub(super) fn constant_of_shape(ctx: &NodeCtx) -> Result<Translated> {
    let Some(shape) = ctx.const_ints(0)? else { bail!("input #0 (shape) is required") };
    let shape = dims(&shape, "shape")?;
    let value = ctx.attr_tensor("value")?.unwrap_or_else(|| Tensor::scalar(0f32));
    ensure!(value.len() == 1, "attribute `value` must hold one element, got {}", value.ty());
    let scalar = value.reshape(&[])?;
    TensorType::new(scalar.dtype(), shape.clone()).checked_len()?;
    let t = Expand { shape }.eval(&[&scalar])?.remove(0);
    constant(t)
}

/// Range → constant; start, limit and delta must all be constant scalars.
pub(super) fn range(ctx: &NodeCtx) -> Result<Translated> {
    let mut vals = Vec::with_capacity(3);
    for k in 0..3 {
        let Some(t) = ctx.const_input(k)? else { bail!("input #{k} is required") };
        ensure!(t.len() == 1, "input #{k} must be a scalar, got {}", t.ty());
        vals.push(t);
    }
    let dtype = vals[0].dtype();
    ensure!(dtype != DType::Bool, "Range on bool");
    let value = if dtype.is_float() {
        let [s, l, d] = [0, 1, 2].map(|k| vals[k].to_f64_vec()[0]);
        ensure!(d != 0.0, "delta must not be 0");
        let n = ((l - s) / d).ceil().max(0.0);
        ensure!(n <= mote_core::tensor::MAX_ELEMENTS as f64, "Range would have {n} elements");
        let v: Vec<f32> = (0..n as usize).map(|i| (s + i as f64 * d) as f32).collect();
        Tensor::from_vec(&[v.len()], v)?.cast(dtype)
    } else {
        let [s, l, d] = [0, 1, 2].map(|k| vals[k].to_i64_vec()[0] as i128);
        ensure!(d != 0, "delta must not be 0");
        let span = l - s;
        let n = if (span > 0) == (d > 0) && span != 0 { (span.abs() + d.abs() - 1) / d.abs() } else { 0 };
        ensure!(n <= mote_core::tensor::MAX_ELEMENTS as i128, "Range would have {n} elements");
        let v: Vec<i64> = (0..n).map(|i| (s + i * d) as i64).collect();
        Tensor::from_vec(&[v.len()], v)?.cast(dtype)
    };
    constant(value)
}
