//! Translators for element-wise ONNX ops.
use super::Translated;
use crate::ctx::NodeCtx;
use crate::tensor::dtype_from_onnx;
use mote_core::ops::elementwise::{Binary, BinaryKind, Cast, Unary, UnaryKind, Where};
use mote_core::{bail, Result};

fn binary(ctx: &NodeCtx, kind: BinaryKind) -> Result<Translated> {
    if ctx.n_inputs() != 2 {
        bail!("expects 2 inputs, got {}", ctx.n_inputs());
    }
    Translated::first(Binary::new(kind), 2)
}

fn unary(kind: UnaryKind) -> Result<Translated> {
    Translated::first(Unary::new(kind), 1)
}

macro_rules! binaries {
    ($($f:ident => $k:ident),* $(,)?) => {$(
        pub(super) fn $f(ctx: &NodeCtx) -> Result<Translated> {
            binary(ctx, BinaryKind::$k)
        }
    )*};
}
binaries!(add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow, equal => Equal,
    less => Less, greater => Greater, and => And, or => Or);

macro_rules! unaries {
    ($($f:ident => $k:ident),* $(,)?) => {$(
        pub(super) fn $f(_ctx: &NodeCtx) -> Result<Translated> {
            unary(UnaryKind::$k)
        }
    )*};
}
unaries!(sqrt => Sqrt, erf => Erf, relu => Relu, sigmoid => Sigmoid, tanh => Tanh, exp => Exp,
    log => Log, neg => Neg, abs => Abs, reciprocal => Reciprocal, round => Round, floor => Floor,
    ceil => Ceil, not => Not);

/// ONNX Max/Min are variadic; mote supports the common binary form.
fn variadic(ctx: &NodeCtx, kind: BinaryKind) -> Result<Translated> {
    match ctx.n_inputs() {
        2 => binary(ctx, kind),
        n => Err(mote_core::Error::Unsupported(format!("{kind:?} with {n} inputs (mote supports 2)"))),
    }
}

pub(super) fn max(ctx: &NodeCtx) -> Result<Translated> {
    variadic(ctx, BinaryKind::Max)
}

pub(super) fn min(ctx: &NodeCtx) -> Result<Translated> {
    variadic(ctx, BinaryKind::Min)
}

pub(super) fn modulo(ctx: &NodeCtx) -> Result<Translated> {
    let kind = if ctx.attr_i("fmod")?.unwrap_or(0) != 0 { BinaryKind::Fmod } else { BinaryKind::Mod };
    binary(ctx, kind)
}

/// HardSwish; Deeploy's float graphs carry left-over integer attributes, ignored here.
pub(super) fn hard_swish(_ctx: &NodeCtx) -> Result<Translated> {
    unary(UnaryKind::HardSwish)
}

pub(super) fn hard_sigmoid(ctx: &NodeCtx) -> Result<Translated> {
    let alpha = ctx.attr_f("alpha")?.unwrap_or(0.2);
    let beta = ctx.attr_f("beta")?.unwrap_or(0.5);
    unary(UnaryKind::HardSigmoid { alpha, beta })
}

pub(super) fn leaky_relu(ctx: &NodeCtx) -> Result<Translated> {
    unary(UnaryKind::LeakyRelu { alpha: ctx.attr_f("alpha")?.unwrap_or(0.01) })
}

/// Gelu (ONNX 20 with `approximate`, or com.microsoft Gelu: always exact erf form).
pub(super) fn gelu(ctx: &NodeCtx) -> Result<Translated> {
    match ctx.attr_s("approximate")?.as_deref() {
        None | Some("none") => unary(UnaryKind::Gelu),
        Some("tanh") => unary(UnaryKind::GeluTanh),
        Some(other) => bail!("unknown Gelu approximation `{other}` (expected `none` or `tanh`)"),
    }
}

/// Clip: bounds are attributes before opset 11, optional constant inputs after.
pub(super) fn clip(ctx: &NodeCtx) -> Result<Translated> {
    let (min, max) = if ctx.opset < 11 {
        (ctx.attr_f("min")?, ctx.attr_f("max")?)
    } else {
        let scalar = |k| -> Result<Option<f32>> {
            match ctx.const_input(k)? {
                None => Ok(None),
                Some(t) => match t.to_f64_vec().as_slice() {
                    [v] => Ok(Some(*v as f32)),
                    _ => bail!("Clip bound #{k} must be a scalar"),
                },
            }
        };
        (scalar(1)?, scalar(2)?)
    };
    unary(UnaryKind::Clip { min: min.unwrap_or(f32::NEG_INFINITY), max: max.unwrap_or(f32::INFINITY) })
}

pub(super) fn cast(ctx: &NodeCtx) -> Result<Translated> {
    let Some(to) = ctx.attr_i("to")? else { bail!("Cast needs the `to` attribute") };
    let to = dtype_from_onnx(to as i32)?;
    Translated::first(Cast { to }, 1)
}

pub(super) fn where_(_ctx: &NodeCtx) -> Result<Translated> {
    Translated::first(Where, 3)
}
