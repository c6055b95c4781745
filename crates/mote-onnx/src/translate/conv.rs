//! Translators for Conv and the pooling ops (1-D and 2-D). `auto_pad` is resolved
//! here to explicit pads from the static input shape.
use super::nn::only_first_output;
use super::Translated;
use crate::ctx::NodeCtx;
use mote_core::ops::conv::{AveragePool, Conv, GlobalAveragePool, MaxPool};
use mote_core::{bail, ensure, Error, Result};

/// Strides, pads `[begin..., end...]` and dilations of a sliding-window node.
struct Params {
    strides: Vec<usize>,
    pads: Vec<usize>,
    dilations: Vec<usize>,
}

/// A list attribute of non-negative integers with `n` entries (default: `n` × `default`).
fn uints(ctx: &NodeCtx, name: &str, n: usize, default: usize) -> Result<Vec<usize>> {
    match ctx.attr_ints(name)? {
        None => Ok(vec![default; n]),
        Some(v) => {
            ensure!(v.len() == n, "attribute `{name}` has {} values, expected {n}", v.len());
            v.iter()
                .map(|&x| {
                    ensure!(x >= 0, "attribute `{name}` has a negative value {x}");
                    Ok(x as usize)
                })
                .collect()
        }
    }
}

/// Reads strides/pads/dilations/auto_pad for input spatial dims `spatial` and
/// window `kernel`. `dilations` is read only when the op has the attribute.
fn params(ctx: &NodeCtx, spatial: &[usize], kernel: &[usize], has_dilations: bool) -> Result<Params> {
    let nd = spatial.len();
    if !matches!(nd, 1 | 2) {
        return Err(Error::Unsupported(format!(
            "{} with {nd} spatial dims (mote supports 1-D and 2-D)",
            ctx.node.op_type()
        )));
    }
    ensure!(kernel.len() == nd, "kernel has {} dims, the input has {nd} spatial dims", kernel.len());
    let strides = uints(ctx, "strides", nd, 1)?;
    let dilations = if has_dilations { uints(ctx, "dilations", nd, 1)? } else { vec![1; nd] };
    ensure!(strides.iter().chain(&dilations).all(|&v| v >= 1), "strides and dilations must be >= 1");
    let auto_pad = ctx.attr_s("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let pads = match auto_pad.as_str() {
        "NOTSET" | "" => uints(ctx, "pads", 2 * nd, 0)?,
        "VALID" => vec![0; 2 * nd],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut pads = vec![0; 2 * nd];
            for i in 0..nd {
                let out = spatial[i].div_ceil(strides[i]);
                let eff = dilations[i] * (kernel[i].max(1) - 1) + 1;
                let total = ((out.max(1) - 1) * strides[i] + eff).saturating_sub(spatial[i]);
                let small = total / 2;
                let (begin, end) = if mode == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                pads[i] = begin;
                pads[nd + i] = end;
            }
            pads
        }
        other => bail!("unknown auto_pad value `{other}`"),
    };
    Ok(Params { strides, pads, dilations })
}

/// The input's N,C,spatial... shape, which must be rank >= 3.
fn spatial_of<'a>(ctx: &'a NodeCtx) -> Result<&'a [usize]> {
    let x = &ctx.input_ty(0)?.shape;
    ensure!(x.len() >= 3, "input must be N,C,spatial... (rank >= 3), got {:?}", x);
    Ok(&x[2..])
}

pub(super) fn conv(ctx: &NodeCtx) -> Result<Translated> {
    ensure!(matches!(ctx.n_inputs(), 2 | 3), "expects 2 or 3 inputs, got {}", ctx.n_inputs());
    let spatial = spatial_of(ctx)?;
    let w = &ctx.input_ty(1)?.shape;
    ensure!(w.len() >= 3, "weight must be Cout,C/group,kernel... (rank >= 3), got {:?}", w);
    let kernel = &w[2..];
    if let Some(ks) = ctx.attr_ints("kernel_shape")? {
        let same = ks.len() == kernel.len() && ks.iter().zip(kernel).all(|(&a, &b)| a == b as i64);
        ensure!(same, "kernel_shape {:?} does not match the weight shape {:?}", ks, w);
    }
    let p = params(ctx, spatial, kernel, true)?;
    let group = ctx.attr_i("group")?.unwrap_or(1);
    ensure!(group >= 1, "group must be >= 1, got {group}");
    let op = Conv { strides: p.strides, pads: p.pads, dilations: p.dilations, group: group as usize };
    let has_bias = ctx.inputs.get(2).copied().flatten().is_some();
    Translated::first(op, if has_bias { 3 } else { 2 })
}

fn kernel_shape(ctx: &NodeCtx) -> Result<Vec<usize>> {
    let Some(k) = ctx.attr_ints("kernel_shape")? else { bail!("attribute `kernel_shape` is required") };
    k.iter()
        .map(|&v| {
            ensure!(v >= 1, "kernel_shape has an invalid value {v}");
            Ok(v as usize)
        })
        .collect()
}

/// MaxPool (opset 8+ attributes: dilations, ceil_mode; `storage_order` only affects
/// the Indices output, which is not supported).
pub(super) fn max_pool(ctx: &NodeCtx) -> Result<Translated> {
    only_first_output(ctx, "Indices")?;
    let spatial = spatial_of(ctx)?;
    let kernel = kernel_shape(ctx)?;
    let p = params(ctx, spatial, &kernel, true)?;
    let ceil_mode = ctx.attr_i("ceil_mode")?.unwrap_or(0) != 0;
    let op = MaxPool { kernel, strides: p.strides, pads: p.pads, dilations: p.dilations, ceil_mode };
    Translated::first(op, 1)
}

/// AveragePool (dilations from opset 19).
pub(super) fn average_pool(ctx: &NodeCtx) -> Result<Translated> {
    let spatial = spatial_of(ctx)?;
    let kernel = kernel_shape(ctx)?;
    let p = params(ctx, spatial, &kernel, true)?;
    let op = AveragePool {
        kernel,
        strides: p.strides,
        pads: p.pads,
        dilations: p.dilations,
        ceil_mode: ctx.attr_i("ceil_mode")?.unwrap_or(0) != 0,
        count_include_pad: ctx.attr_i("count_include_pad")?.unwrap_or(0) != 0,
    };
    Translated::first(op, 1)
}

pub(super) fn global_average_pool(_ctx: &NodeCtx) -> Result<Translated> {
    Translated::first(GlobalAveragePool, 1)
}

/// GlobalMaxPool as a MaxPool whose window is the whole (1-D or 2-D) input.
pub(super) fn global_max_pool(ctx: &NodeCtx) -> Result<Translated> {
    let spatial = spatial_of(ctx)?;
    let p = params(ctx, spatial, spatial, false)?;
    let op = MaxPool {
        kernel: spatial.iter().map(|&d| d.max(1)).collect(),
        strides: p.strides,
        pads: p.pads,
        dilations: p.dilations,
        ceil_mode: false,
    };
    Translated::first(op, 1)
}
