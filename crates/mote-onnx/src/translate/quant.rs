//! Translators for QuantizeLinear and DequantizeLinear.
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::quant::{DequantizeLinear, QuantizeLinear};
use mote_core::{Error, Result};

/// Inputs x, scale and (optional) zero point; `axis` for per-axis scales; no blocked quantization.
fn qdq_inputs(ctx: &NodeCtx) -> Result<(i64, usize)> {
    if ctx.attr_i("block_size")?.is_some_and(|b| b != 0) {
        return Err(Error::Unsupported("blocked quantization (block_size) is not supported".into()));
    }
    let n = if ctx.inputs.get(2).copied().flatten().is_some() { 3 } else { 2 };
    Ok((ctx.attr_i("axis")?.unwrap_or(1), n))
}

/// QuantizeLinear: float → int with round-half-even and saturation.
pub(super) fn quantize_linear(ctx: &NodeCtx) -> Result<Translated> {
    let (axis, n) = qdq_inputs(ctx)?;
    Translated::first(QuantizeLinear { axis }, n)
}

/// DequantizeLinear: int → float.
pub(super) fn dequantize_linear(ctx: &NodeCtx) -> Result<Translated> {
    let (axis, n) = qdq_inputs(ctx)?;
    Translated::first(DequantizeLinear { axis }, n)
}
