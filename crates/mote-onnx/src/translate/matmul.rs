//! Translators for MatMul and Gemm.
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::matmul::{Gemm, MatMul};
use mote_core::{ensure, Result};

pub(super) fn matmul(ctx: &NodeCtx) -> Result<Translated> {
    ensure!(ctx.n_inputs() == 2, "expects 2 inputs, got {}", ctx.n_inputs());
    Translated::first(MatMul, 2)
}

/// Gemm; the optional C is passed only when the node has it.
pub(super) fn gemm(ctx: &NodeCtx) -> Result<Translated> {
    ensure!(matches!(ctx.n_inputs(), 2 | 3), "expects 2 or 3 inputs, got {}", ctx.n_inputs());
    let op = Gemm {
        alpha: ctx.attr_f("alpha")?.unwrap_or(1.0),
        beta: ctx.attr_f("beta")?.unwrap_or(1.0),
        trans_a: ctx.attr_i("transA")?.unwrap_or(0) != 0,
        trans_b: ctx.attr_i("transB")?.unwrap_or(0) != 0,
    };
    let has_c = ctx.inputs.get(2).copied().flatten().is_some();
    Translated::first(op, if has_c { 3 } else { 2 })
}
