//! Translators for Deeploy's integer operators (default domain; SEMANTICS.md §3).
//!
//! Attributes appear as 1-element float tensors or plain ints; both read as integers via
//! [`NodeCtx::attr_i`] / [`NodeCtx::attr_f`].
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::deeploy::{
    IGelu, IHardswish, ILayerNorm, IRmsNorm, ISoftmax, IntegerMean, ItaMax, RequantShift, TrueIntegerDiv,
};
use mote_core::ops::resolve_axis;
use mote_core::{bail, ensure, Error, Result};

/// A required integer attribute.
fn req(ctx: &NodeCtx, name: &str) -> Result<i64> {
    match ctx.attr_i(name)? {
        Some(v) => Ok(v),
        None => bail!("missing attribute `{name}`"),
    }
}

/// A required attribute converted to a narrower integer type.
fn req_as<T: TryFrom<i64>>(ctx: &NodeCtx, name: &str) -> Result<T> {
    let v = req(ctx, name)?;
    T::try_from(v).map_err(|_| Error::Invalid(format!("attribute `{name}` = {v} is out of range")))
}

/// `n_levels`, which must be in `2..=256` for the 8-bit kernels.
fn n_levels(ctx: &NodeCtx, name: &str) -> Result<u32> {
    let n: u32 = req_as(ctx, name)?;
    ensure!((2..=256).contains(&n), "attribute `{name}` = {n} must be in 2..=256");
    Ok(n)
}

/// Requires the normalized axis to be the last one (when an `axis` attribute is given).
fn last_axis_only(ctx: &NodeCtx) -> Result<()> {
    let rank = ctx.input_ty(0)?.shape.len();
    if let Some(a) = ctx.attr_i("axis")? {
        if resolve_axis(a, rank)? + 1 != rank {
            return Err(Error::Unsupported(format!("normalization over axis {a} of rank {rank} (only the last axis)")));
        }
    }
    Ok(())
}

/// `RequantShift(x, mul, add)`: `div` must be a power of two; `n_levels_out` or `n_levels`.
pub(super) fn requant_shift(ctx: &NodeCtx) -> Result<Translated> {
    let Some(div) = ctx.attr_f("div")? else { bail!("missing attribute `div`") };
    ensure!(
        div >= 1.0 && div.fract() == 0.0 && (div as u64).is_power_of_two(),
        "attribute `div` = {div} must be a power of two (mote implements the shift form)"
    );
    let div_log2 = (div as u64).trailing_zeros();
    let n = match ctx.attr_i("n_levels_out")? {
        Some(v) => v,
        None => req(ctx, "n_levels")?,
    };
    let n_levels = u32::try_from(n)
        .ok()
        .filter(|&n| n >= 2)
        .ok_or_else(|| Error::Invalid(format!("RequantShift n_levels {n} must be at least 2")))?;
    let signed = ctx.attr_i("signed")?.unwrap_or(1) != 0;
    ensure!(ctx.n_inputs() == 3, "expects 3 inputs (x, mul, add), got {}", ctx.n_inputs());
    ctx.const_input(1)?;
    ctx.const_input(2)?;
    Translated::first(RequantShift { div_log2, n_levels, signed }, 3)
}

/// `iSoftmax` along the last axis.
pub(super) fn isoftmax(ctx: &NodeCtx) -> Result<Translated> {
    let op = ISoftmax {
        coeff_a: req_as(ctx, "coeffA")?,
        coeff_b: req_as(ctx, "coeffB")?,
        coeff_c: req(ctx, "coeffC")?,
        log2: req_as(ctx, "log2")?,
        n_levels: n_levels(ctx, "n_levels")?,
    };
    Translated::first(op, 1)
}

/// `ITAMax` along the last axis.
pub(super) fn itamax(ctx: &NodeCtx) -> Result<Translated> {
    let n_levels = n_levels(ctx, "n_levels")?;
    if n_levels != 256 {
        return Err(Error::Unsupported(format!("ITAMax with n_levels = {n_levels} (mote implements 256)")));
    }
    Translated::first(ItaMax { n_levels }, 1)
}

/// `iLayerNorm(x, weight, bias)` over the last axis.
pub(super) fn ilayernorm(ctx: &NodeCtx) -> Result<Translated> {
    last_axis_only(ctx)?;
    let op = ILayerNorm { d: req_as(ctx, "D")?, n_levels: n_levels(ctx, "n_levels")? };
    ensure!(op.d > 0, "attribute `D` must be positive");
    Translated::first(op, 3)
}

/// `iRMSNorm(x, weight)` over the last axis.
pub(super) fn irmsnorm(ctx: &NodeCtx) -> Result<Translated> {
    last_axis_only(ctx)?;
    if let Some(s) = ctx.attr_i("stash_type")? {
        ensure!(s == 1, "attribute `stash_type` = {s} is not supported (must be 1)");
    }
    let op = IRmsNorm { d: req_as(ctx, "D")?, n_levels: n_levels(ctx, "n_levels")? };
    ensure!(op.d > 0, "attribute `D` must be positive");
    Translated::first(op, 2)
}

/// `iGELU`.
pub(super) fn igelu(ctx: &NodeCtx) -> Result<Translated> {
    Translated::first(IGelu { b: req_as(ctx, "b")?, one: req_as(ctx, "one")? }, 1)
}

/// `iHardswish`.
pub(super) fn ihardswish(ctx: &NodeCtx) -> Result<Translated> {
    let op = IHardswish {
        three: req_as(ctx, "three")?,
        six: req_as(ctx, "six")?,
        one_over_six: req_as(ctx, "one_over_six")?,
    };
    Translated::first(op, 1)
}

/// `TrueIntegerDiv`: the constant `k` is computed here from `y`, `Delta`, `eps`, `eta`.
pub(super) fn true_integer_div(ctx: &NodeCtx) -> Result<Translated> {
    let op = TrueIntegerDiv::from_attrs(req(ctx, "y")?, req(ctx, "Delta")?, req(ctx, "eps")?, req(ctx, "eta")?)?;
    Translated::first(op, 1)
}

/// `IntegerMean` over `axes` (contiguous), `keepdims` default 1.
pub(super) fn integer_mean(ctx: &NodeCtx) -> Result<Translated> {
    let rank = ctx.input_ty(0)?.shape.len();
    let Some(axes) = ctx.attr_ints("axes")? else { bail!("missing attribute `axes`") };
    let mut axes = axes.iter().map(|&a| resolve_axis(a, rank)).collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    let keepdims = ctx.attr_i("keepdims")?.unwrap_or(1) != 0;
    Translated::first(IntegerMean { axes, keepdims }, 1)
}
