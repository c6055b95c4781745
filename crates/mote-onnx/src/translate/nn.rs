//! Translators for Softmax, the normalizations and the reductions.
use super::shape::{axes_arg, resolve_axes};
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::nn::{LayerNorm, Reduce, ReduceKind, RmsNorm, Softmax};
use mote_core::ops::resolve_axis;
use mote_core::{ensure, Error, Result};

/// Errors when the node uses any output after the first (e.g. LayerNormalization's
/// Mean and InvStdDev), which mote does not compute.
pub(super) fn only_first_output(ctx: &NodeCtx, what: &str) -> Result<()> {
    if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(Error::Unsupported(format!(
            "{} uses output(s) beyond the first ({what}); mote computes only the first",
            ctx.node.op_type()
        )));
    }
    Ok(())
}

/// Inputs `0..n` plus the optional input `k` when present.
fn with_optional(ctx: &NodeCtx, n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if ctx.inputs.get(k).copied().flatten().is_some() {
        v.push(k);
    }
    v
}

/// Softmax over `axis`; without the attribute, the LAST axis at every opset (the
/// opset < 13 flatten-to-2-D reading is deliberately not used, see SEMANTICS.md §4).
pub(super) fn softmax(ctx: &NodeCtx) -> Result<Translated> {
    let rank = ctx.input_ty(0)?.shape.len();
    let axis = resolve_axis(ctx.attr_i("axis")?.unwrap_or(-1), rank)?;
    Translated::first(Softmax { axis }, 1)
}

/// LayerNormalization (ONNX 17, or the contrib op below 17): x, scale, optional bias.
pub(super) fn layer_norm(ctx: &NodeCtx) -> Result<Translated> {
    only_first_output(ctx, "Mean/InvStdDev")?;
    let rank = ctx.input_ty(0)?.shape.len();
    let axis = resolve_axis(ctx.attr_i("axis")?.unwrap_or(-1), rank)?;
    let epsilon = ctx.attr_f("epsilon")?.unwrap_or(1e-5);
    ctx.input(1)?;
    Translated::with(LayerNorm { axis, epsilon }, with_optional(ctx, 2, 2))
}

/// RMS normalization over the last axis; other axes are not supported.
fn rms(ctx: &NodeCtx, epsilon: f32) -> Result<Translated> {
    only_first_output(ctx, "InvStdDev")?;
    let rank = ctx.input_ty(0)?.shape.len();
    let axis = resolve_axis(ctx.attr_i("axis")?.unwrap_or(-1), rank)?;
    if axis + 1 != rank {
        return Err(Error::Unsupported(format!(
            "RMS normalization over axis {axis} of a rank-{rank} input (mote supports the last axis)"
        )));
    }
    ensure!(ctx.n_inputs() >= 2, "expects 2 inputs (x, weight), got {}", ctx.n_inputs());
    ctx.input(1)?;
    Translated::first(RmsNorm { epsilon }, 2)
}

/// Deeploy's custom `RMSNorm` (default domain): attribute `eps` or `epsilon`, default 1e-6.
pub(super) fn rms_norm(ctx: &NodeCtx) -> Result<Translated> {
    let eps = match ctx.attr_f("eps")? {
        Some(e) => e,
        None => ctx.attr_f("epsilon")?.unwrap_or(1e-6),
    };
    rms(ctx, eps)
}

/// onnxruntime's `SimplifiedLayerNormalization` and ONNX 23 `RMSNormalization`
/// (`epsilon`, default 1e-5; last axis only).
pub(super) fn simplified_layer_norm(ctx: &NodeCtx) -> Result<Translated> {
    rms(ctx, ctx.attr_f("epsilon")?.unwrap_or(1e-5))
}

/// ReduceMean/Sum/Max/Min: axes from the attribute (ReduceSum < 13, others < 18) or
/// the optional input #1; no axes means all axes, or none with `noop_with_empty_axes`.
fn reduce(ctx: &NodeCtx, kind: ReduceKind) -> Result<Translated> {
    let rank = ctx.input_ty(0)?.shape.len();
    let axes = axes_arg(ctx, 1)?.unwrap_or_default();
    let keepdims = ctx.attr_i("keepdims")?.unwrap_or(1) != 0;
    let noop = ctx.attr_i("noop_with_empty_axes")?.unwrap_or(0) != 0;
    let axes = if axes.is_empty() {
        if noop {
            vec![]
        } else {
            (0..rank).collect()
        }
    } else {
        resolve_axes(&axes, rank)?
    };
    Translated::first(Reduce { kind, axes, keepdims }, 1)
}

pub(super) fn reduce_mean(ctx: &NodeCtx) -> Result<Translated> {
    reduce(ctx, ReduceKind::Mean)
}

pub(super) fn reduce_sum(ctx: &NodeCtx) -> Result<Translated> {
    reduce(ctx, ReduceKind::Sum)
}

pub(super) fn reduce_max(ctx: &NodeCtx) -> Result<Translated> {
    reduce(ctx, ReduceKind::Max)
}

pub(super) fn reduce_min(ctx: &NodeCtx) -> Result<Translated> {
    reduce(ctx, ReduceKind::Min)
}
