//! Storage types for the tensors of an exact-integer graph (Deeploy's integerized models, whose
//! tensors the importer types as `I64`): an interval analysis bounds every tensor, and each tensor
//! gets the narrowest device element type (`i8`, `u8`, `i16`, `i32`) that the kernel producing it
//! writes and that holds its interval. Nothing is rewritten: the graph stays the exact `I64`
//! reference, and [`Narrowing`] is the proof that the narrow device code computes the same values.
//!
//! The rules, per tensor:
//! * **Graph inputs** are seeded with the range of a declared element type, by input name: how the
//!   harness feeds the model (EEGFormer's input is `u8`, 0..255). It is a promise about the data,
//!   checked when the data is encoded. Undeclared `I64` inputs (the importer's type for Deeploy's
//!   float-declared tensors) are `i8`, −128..127; undeclared inputs the graph types as
//!   `i8`/`u8`/`i16`/`i32` keep that type.
//! * **Constants**: their exact minimum and maximum; stored in the narrowest type that holds them
//!   (code generation may widen kernel parameters such as biases and multipliers to `i32`).
//! * **Clamping ops** take the range their levels define: `RequantShift` `[−n/2, n/2−1]` or
//!   `[0, n−1]`, `iSoftmax`/`ITAMax` `[0, n−1]` (`u8`), `iLayerNorm`/`iRMSNorm` `[−n/2, n/2−1]`
//!   (`i8`), a fused `QAttention` its output requantization's bounds (`i8`, from an `i8` input).
//! * **Wide ops** (`MatMul`, `Gemm`, `Conv`, `Add`, `Mul`, `iGELU`, `iHardswish`, `TrueIntegerDiv`)
//!   are bounded by interval arithmetic (per output column against constant weights; `iGELU` and
//!   `iHardswish` by running their kernel on every input value of the interval) and stored as
//!   `i32`, the type their kernels accumulate and write in. A bound outside `i32` is an error:
//!   the `i32` kernels would wrap.
//! * **Data movement** (`Reshape`, `Transpose`, `Slice`, `Gather`, `Split`, `Concat`, `MaxPool`,
//!   `IntegerMean`) keeps the input's range and storage type.
//!
//! Inputs of 8-bit kernels must be stored in 8 bits (`iSoftmax`, `ITAMax`, `iGELU`, `iHardswish`
//! take `i8`; the norms `i8` or `u8`); everything that does not hold is reported at once, naming
//! the node and the tensor.
use crate::ops::attention::QAttention;
use crate::ops::conv::{Conv, MaxPool};
use crate::ops::deeploy::{
    IGelu, IHardswish, ILayerNorm, IRmsNorm, ISoftmax, IntegerMean, ItaMax, RequantShift, TrueIntegerDiv,
};
use crate::ops::elementwise::{Binary, BinaryKind};
use crate::ops::matmul::{Gemm, MatMul};
use crate::ops::shape::{Concat, DATA_MOVEMENT};
use crate::{bail, DType, Graph, Node, Result, TensorId};

/// An inclusive interval of integer values.
pub type Range = (i64, i64);

/// Value bounds and device storage types of a graph's tensors, indexed by [`TensorId`].
#[derive(Clone, Debug, Default)]
pub struct Narrowing {
    /// The interval every element of the tensor lies in (`None` for float and bool tensors).
    pub range: Vec<Option<Range>>,
    /// The element type the tensor is stored as on the device (`None` for float and bool tensors,
    /// and for constants that do not fit `i32`).
    pub storage: Vec<Option<DType>>,
}

/// The narrowest of `i8`, `u8`, `i16`, `i32` that holds `[lo, hi]` (`i8` before `u8`).
pub fn narrowest(r: Range) -> Option<DType> {
    [DType::I8, DType::U8, DType::I16, DType::I32].into_iter().find(|d| fits(r, *d))
}

/// `[lo, hi]` lies inside the range of the integer type `d`.
pub fn fits(r: Range, d: DType) -> bool {
    d.int_range().is_some_and(|(lo, hi)| r.0 >= lo && r.1 <= hi)
}

fn type_range(d: DType) -> Option<Range> {
    d.int_range().filter(|_| d != DType::Bool)
}

/// Hull of interval products (i128, so nothing overflows).
fn mul_range(a: (i128, i128), b: (i128, i128)) -> (i128, i128) {
    let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (c.iter().copied().min().unwrap_or(0), c.iter().copied().max().unwrap_or(0))
}

fn wide(r: Range) -> (i128, i128) {
    (i128::from(r.0), i128::from(r.1))
}

/// Sum bounds of `Σ_i a·w_i` over one weight column, `a` in `ar`.
fn dot_range(ar: (i128, i128), column: impl Iterator<Item = i64>) -> (i128, i128) {
    column.fold((0, 0), |(lo, hi), w| {
        let (l, h) = mul_range(ar, (i128::from(w), i128::from(w)));
        (lo + l, hi + h)
    })
}

/// A constant right operand of a product: `(batches, n, column)` where `column(batch, j)` yields
/// column `j` of batch matrix `batch`.
type Columns<'a> = (usize, usize, &'a dyn Fn(usize, usize) -> Vec<i64>);

/// Bounds of a product `A[.., m, k] · B[.., k, n]` with A in `ar` and B in `br`, per column when B
/// is a constant.
fn product_range(ar: Range, br: Range, k: usize, columns: Option<Columns>) -> (i128, i128) {
    let ar = wide(ar);
    match columns {
        Some((batches, n, col)) if batches * n > 0 => {
            let mut acc = (i128::MAX, i128::MIN);
            for b in 0..batches {
                for j in 0..n {
                    let (l, h) = dot_range(ar, col(b, j).into_iter());
                    acc = (acc.0.min(l), acc.1.max(h));
                }
            }
            acc
        }
        _ => {
            let (l, h) = mul_range(ar, wide(br));
            let k = k as i128;
            (l * k, h * k)
        }
    }
}

/// Narrows `i128` bounds to a [`Range`], or reports that they leave `i32`.
fn int32(r: (i128, i128), what: &str) -> std::result::Result<Range, String> {
    let (lo, hi) = (i64::try_from(r.0).ok(), i64::try_from(r.1).ok());
    match (lo, hi) {
        (Some(lo), Some(hi)) if fits((lo, hi), DType::I32) => Ok((lo, hi)),
        _ => Err(format!("{what} may reach [{}, {}], which does not fit the i32 the kernel accumulates in", r.0, r.1)),
    }
}

/// Analyses `g`. `input_type(name)` declares the element type of an integer graph input (`None`:
/// `i8` for `I64` inputs, the graph's type for narrower ones). Errors list every tensor that cannot be stored in at most 32 bits or violates a
/// kernel's input type, with its node.
pub fn narrow(g: &Graph, input_type: &dyn Fn(&str) -> Option<DType>) -> Result<Narrowing> {
    let n = g.values.len();
    let mut nw = Narrowing { range: vec![None; n], storage: vec![None; n] };
    for (id, v) in g.values.iter().enumerate() {
        if let Some(t) = &v.konst {
            if v.ty.dtype.is_float() || v.ty.dtype == DType::Bool {
                continue;
            }
            let data = t.to_i64_vec();
            let r = (data.iter().copied().min().unwrap_or(0), data.iter().copied().max().unwrap_or(0));
            nw.range[id] = Some(r);
            nw.storage[id] = narrowest(r);
        }
    }
    let mut problems = Vec::new();
    for &i in &g.inputs {
        let v = &g.values[i];
        let declared = v.ty.dtype;
        if declared.is_float() || declared == DType::Bool {
            continue;
        }
        let d = match input_type(&v.name) {
            Some(d) if matches!(d, DType::I8 | DType::U8 | DType::I16 | DType::I32) => d,
            Some(d) => {
                problems.push(format!("input `{}` is given type {d}; inputs are i8, u8, i16 or i32", v.name));
                continue;
            }
            None if declared == DType::I64 => DType::I8,
            None => declared,
        };
        nw.range[i] = type_range(d);
        nw.storage[i] = Some(d);
    }
    for node in &g.nodes {
        if let Err(e) = step(g, node, &mut nw) {
            problems.push(format!("`{}` ({}): {e}", node.name, node.op.name()));
        }
    }
    if !problems.is_empty() {
        bail!("{} node(s) cannot run on narrow integer types: {}", problems.len(), problems.join("; "));
    }
    Ok(nw)
}

/// One node: checks its inputs and sets its outputs' ranges and storage types.
fn step(g: &Graph, node: &Node, nw: &mut Narrowing) -> std::result::Result<(), String> {
    let name = |t: TensorId| g.values[t].name.clone();
    let out_dtype = g.values[node.outputs[0]].ty.dtype;
    if out_dtype.is_float() || out_dtype == DType::Bool {
        return Ok(());
    }
    let set = |nw: &mut Narrowing, t: TensorId, r: Range, d: DType| {
        nw.range[t] = Some(r);
        nw.storage[t] = Some(d);
    };
    if out_dtype != DType::I64 {
        // mote's own int8 ops (and any op typed narrow by the IR): the IR type is the storage.
        for &o in &node.outputs {
            let d = g.values[o].ty.dtype;
            if let Some(r) = type_range(d) {
                set(nw, o, r, d);
            }
        }
        return Ok(());
    }
    let mut ins = Vec::with_capacity(node.inputs.len());
    for &i in &node.inputs {
        match (nw.range[i], nw.storage[i]) {
            (Some(r), Some(d)) => ins.push((r, d)),
            _ => return Err(format!("input `{}` is not an integer tensor of at most 32 bits", name(i))),
        }
    }
    let need = |k: usize, allowed: &[DType]| -> std::result::Result<(), String> {
        let (r, d) = ins[k];
        if allowed.contains(&d) {
            Ok(())
        } else {
            let list: Vec<String> = allowed.iter().map(|d| d.to_string()).collect();
            Err(format!(
                "input `{}` (values in [{}, {}], stored as {d}) must be stored as {}",
                name(node.inputs[k]),
                r.0,
                r.1,
                list.join(" or ")
            ))
        }
    };
    let out = node.outputs[0];
    let op = node.op.as_any();
    let levels = |n: u32, signed: bool| -> Range {
        let n = i64::from(n);
        if signed {
            (-(n / 2), n / 2 - 1)
        } else {
            (0, n - 1)
        }
    };
    // The softmax and norm kernels write 8 bits: n_levels must be at most 256.
    let eight_bit = |r: Range, d: DType| -> std::result::Result<Range, String> {
        if fits(r, d) {
            Ok(r)
        } else {
            Err(format!("output levels [{}, {}] do not fit the {d} the kernel writes", r.0, r.1))
        }
    };
    let wide_out = |nw: &mut Narrowing, r: (i128, i128)| -> std::result::Result<(), String> {
        let r = int32(r, &format!("output `{}`", name(out)))?;
        set(nw, out, r, DType::I32);
        Ok(())
    };
    if let Some(p) = op.downcast_ref::<RequantShift>() {
        let r = levels(p.n_levels, p.signed);
        let d = narrowest(r).ok_or_else(|| format!("n_levels {} does not fit 32 bits", p.n_levels))?;
        set(nw, out, r, d);
    } else if let Some(p) = op.downcast_ref::<ISoftmax>() {
        need(0, &[DType::I8])?;
        set(nw, out, eight_bit(levels(p.n_levels, false), DType::U8)?, DType::U8);
    } else if let Some(p) = op.downcast_ref::<ItaMax>() {
        need(0, &[DType::I8])?;
        set(nw, out, eight_bit(levels(p.n_levels, false), DType::U8)?, DType::U8);
    } else if let Some(p) = op.downcast_ref::<ILayerNorm>() {
        need(0, &[DType::I8, DType::U8])?;
        set(nw, out, eight_bit(levels(p.n_levels, true), DType::I8)?, DType::I8);
    } else if let Some(p) = op.downcast_ref::<IRmsNorm>() {
        need(0, &[DType::I8, DType::U8])?;
        set(nw, out, eight_bit(levels(p.n_levels, true), DType::I8)?, DType::I8);
    } else if let Some(p) = op.downcast_ref::<IGelu>() {
        need(0, &[DType::I8])?;
        let r = kernel_image(ins[0].0, |x, o| mote_kernels::activation::igelu(x, p.b, p.one, o))?;
        set(nw, out, r, DType::I32);
    } else if let Some(p) = op.downcast_ref::<IHardswish>() {
        need(0, &[DType::I8])?;
        let r =
            kernel_image(ins[0].0, |x, o| mote_kernels::activation::ihardswish(x, p.three, p.six, p.one_over_six, o))?;
        set(nw, out, r, DType::I32);
    } else if let Some(p) = op.downcast_ref::<TrueIntegerDiv>() {
        need(0, &[DType::I8, DType::U8, DType::I16])?;
        // The kernel requires x·k to fit i32 for every value of the storage type.
        let (tlo, thi) = type_range(ins[0].1).unwrap_or((0, 0));
        let k = i128::from(p.k);
        int32(mul_range(wide((tlo, thi)), (k, k)), "x·k over the input's storage type")?;
        wide_out(nw, mul_range(wide(ins[0].0), (k, k)))?;
    } else if let Some(a) = op.downcast_ref::<QAttention>() {
        // The fused attention of Deeploy's layers reads int8 and requantizes its output into int8.
        need(0, &[DType::I8])?;
        let (lo, hi) = a.out_bounds();
        set(nw, out, (lo.into(), hi.into()), DType::I8);
    } else if op.is::<IntegerMean>() || op.is::<MaxPool>() {
        // A rounded mean and a maximum stay inside the input's range.
        set(nw, out, ins[0].0, ins[0].1);
    } else if op.is::<MatMul>() {
        let (a, b) = (&g.values[node.inputs[0]].ty.shape, &g.values[node.inputs[1]].ty.shape);
        let k = *a.last().unwrap_or(&1);
        let n = if b.len() >= 2 { b[b.len() - 1] } else { 1 };
        let bk = g.values[node.inputs[1]].konst.as_ref().map(|t| t.to_i64_vec());
        let col = |bi: usize, j: usize| -> Vec<i64> {
            let m = bk.as_deref().unwrap_or(&[]);
            (0..k).filter_map(|i| m.get(bi * k * n + i * n + j).copied()).collect()
        };
        let batches = bk.as_ref().map_or(0, |m| m.len() / (k * n).max(1));
        let cols = bk.as_ref().map(|_| (batches, n, &col as &dyn Fn(usize, usize) -> Vec<i64>));
        wide_out(nw, product_range(ins[0].0, ins[1].0, k, cols))?;
    } else if let Some(p) = op.downcast_ref::<Gemm>() {
        let integral = |v: f32| v.fract() == 0.0 && v.abs() < 2f32.powi(31);
        if !integral(p.alpha) || !integral(p.beta) {
            return Err(format!("alpha {} and beta {} must be integers", p.alpha, p.beta));
        }
        let b = &g.values[node.inputs[1]].ty.shape;
        let (k, n) = if p.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        let bk = g.values[node.inputs[1]].konst.as_ref().map(|t| t.to_i64_vec());
        let col = |_: usize, j: usize| -> Vec<i64> {
            let m = bk.as_deref().unwrap_or(&[]);
            let at = |i: usize| if p.trans_b { j * k + i } else { i * n + j };
            (0..k).filter_map(|i| m.get(at(i)).copied()).collect()
        };
        let cols = bk.as_ref().map(|_| (1, n, &col as &dyn Fn(usize, usize) -> Vec<i64>));
        let acc = product_range(ins[0].0, ins[1].0, k, cols);
        let alpha = i128::from(p.alpha as i32);
        let mut r = mul_range(acc, (alpha, alpha));
        if let Some(&(cr, _)) = ins.get(2) {
            let beta = i128::from(p.beta as i32);
            let c = mul_range(wide(cr), (beta, beta));
            r = (r.0 + c.0, r.1 + c.1);
        }
        wide_out(nw, r)?;
    } else if op.is::<Conv>() {
        let w = &g.values[node.inputs[1]].ty.shape;
        if !fits(ins[1].0, DType::I8) {
            return Err(format!("weights `{}` must fit i8", name(node.inputs[1])));
        }
        let per: usize = w.iter().skip(1).product();
        let wk = g.values[node.inputs[1]].konst.as_ref().map(|t| t.to_i64_vec());
        // Padding contributes 0 instead of x·w, so each term's bounds include 0.
        let ar = wide(ins[0].0);
        let term = |w: i64| {
            let (l, h) = mul_range(ar, (i128::from(w), i128::from(w)));
            (l.min(0), h.max(0))
        };
        let mut r = match &wk {
            Some(m) => m.chunks(per.max(1)).fold((i128::MAX, i128::MIN), |acc, ch| {
                let (l, h) = ch.iter().fold((0, 0), |(l, h), &w| {
                    let t = term(w);
                    (l + t.0, h + t.1)
                });
                (acc.0.min(l), acc.1.max(h))
            }),
            None => {
                let (l, h) = mul_range(ar, wide(ins[1].0));
                (l.min(0) * per as i128, h.max(0) * per as i128)
            }
        };
        if let Some(&(br, _)) = ins.get(2) {
            r = (r.0 + i128::from(br.0), r.1 + i128::from(br.1));
        }
        wide_out(nw, r)?;
    } else if let Some(b) = op.downcast_ref::<Binary>() {
        let (a, c) = (wide(ins[0].0), wide(ins[1].0));
        let r = match b.kind {
            BinaryKind::Add => (a.0 + c.0, a.1 + c.1),
            BinaryKind::Mul => mul_range(a, c),
            k => return Err(format!("integer {k:?} has no narrow code generation (only Add and Mul)")),
        };
        wide_out(nw, r)?;
    } else if op.is::<Concat>() {
        let d = ins[0].1;
        if let Some(k) = ins.iter().position(|x| x.1 != d) {
            return Err(format!(
                "inputs `{}` ({d}) and `{}` ({}) are stored in different types",
                name(node.inputs[0]),
                name(node.inputs[k]),
                ins[k].1
            ));
        }
        let r = ins.iter().fold(ins[0].0, |acc, x| (acc.0.min(x.0 .0), acc.1.max(x.0 .1)));
        set(nw, out, r, d);
    } else if DATA_MOVEMENT.contains(&node.op.name()) {
        for &o in &node.outputs {
            set(nw, o, ins[0].0, ins[0].1);
        }
    } else {
        return Err("no integer range rule for this op".into());
    }
    Ok(())
}

/// Min and max of an int8 → i32 kernel over every input value in `r` (clipped to int8).
fn kernel_image(
    r: Range,
    f: impl Fn(&[i8], &mut [i32]) -> std::result::Result<(), mote_kernels::KernelError>,
) -> std::result::Result<Range, String> {
    let xs: Vec<i8> = (r.0.max(-128)..=r.1.min(127)).map(|v| v as i8).collect();
    let mut ys = vec![0i32; xs.len()];
    f(&xs, &mut ys).map_err(|e| format!("kernel refused its parameters: {e}"))?;
    let lo = ys.iter().copied().min().unwrap_or(0);
    let hi = ys.iter().copied().max().unwrap_or(0);
    Ok((i64::from(lo), i64::from(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::deeploy::RequantShift;
    use crate::ops::matmul::MatMul;
    use crate::{Tensor, TensorType};

    fn input(g: &mut Graph, name: &str, shape: &[usize]) -> TensorId {
        let id = g.add_value(name, TensorType::new(DType::I64, shape.to_vec()), None);
        g.inputs.push(id);
        id
    }

    #[test]
    fn matmul_bounds_use_constant_columns_and_input_types() {
        let mut g = Graph::default();
        let x = input(&mut g, "x", &[1, 2]);
        // Columns [1, 2] and [-3, 0]: with x in 0..=255, sums lie in [-765, 765].
        let w = g.add_const("w", Tensor::from_vec(&[2, 2], vec![1i64, -3, 2, 0]).unwrap());
        let y = g.add_node("mm", Box::new(MatMul), vec![x, w], &["y".into()]).unwrap()[0];
        let (m, a) = (g.add_const("m", Tensor::scalar(3i64)), g.add_const("a", Tensor::scalar(0i64)));
        let rq = RequantShift { div_log2: 4, n_levels: 256, signed: false };
        let z = g.add_node("rq", Box::new(rq), vec![y, m, a], &["z".into()]).unwrap()[0];
        g.outputs.push(z);
        let nw = narrow(&g, &|n| (n == "x").then_some(DType::U8)).unwrap();
        assert_eq!(nw.range[x], Some((0, 255)));
        assert_eq!(nw.storage[x], Some(DType::U8));
        assert_eq!(nw.range[y], Some((-765, 765)));
        assert_eq!(nw.storage[y], Some(DType::I32));
        assert_eq!((nw.range[z], nw.storage[z]), (Some((0, 255)), Some(DType::U8)));
        assert_eq!(nw.storage[w], Some(DType::I8));
        // Undeclared inputs are i8.
        let nw = narrow(&g, &|_| None).unwrap();
        assert_eq!(nw.range[y], Some((-384, 384)));
    }

    #[test]
    fn overflow_and_kernel_input_types_are_reported_by_node() {
        let mut g = Graph::default();
        let x = input(&mut g, "x", &[1, 4096]);
        let w = g.add_const("w", Tensor::from_vec(&[4096, 1], vec![i64::from(i32::MAX / 4); 4096]).unwrap());
        let y = g.add_node("big", Box::new(MatMul), vec![x, w], &["y".into()]).unwrap()[0];
        g.outputs.push(y);
        let e = narrow(&g, &|_| None).unwrap_err().to_string();
        assert!(e.contains("`big` (MatMul): output `y` may reach") && e.contains("i32"), "{e}");

        let mut g = Graph::default();
        let x = input(&mut g, "x", &[2, 2]);
        let op = ISoftmax { coeff_a: 1, coeff_b: 10, coeff_c: 50, log2: 5, n_levels: 256 };
        let y = g.add_node("sm", Box::new(op), vec![x], &["y".into()]).unwrap()[0];
        g.outputs.push(y);
        assert_eq!(narrow(&g, &|_| None).unwrap().storage[y], Some(DType::U8));
        let e = narrow(&g, &|_| Some(DType::U8)).unwrap_err().to_string();
        assert!(
            e.contains("`sm` (iSoftmax): input `x` (values in [0, 255], stored as u8) must be stored as i8"),
            "{e}"
        );
    }

    #[test]
    fn activations_are_bounded_by_their_kernel() {
        let mut g = Graph::default();
        let x = input(&mut g, "x", &[3]);
        let y = g.add_node("g", Box::new(IGelu { b: -2, one: 4 }), vec![x], &["y".into()]).unwrap()[0];
        g.outputs.push(y);
        // The exact image of the int8 range under the kernel.
        let mut ys = vec![0i32; 256];
        let xs: Vec<i8> = (-128..=127).collect();
        mote_kernels::activation::igelu(&xs, -2, 4, &mut ys).unwrap();
        let want = (i64::from(*ys.iter().min().unwrap()), i64::from(*ys.iter().max().unwrap()));
        assert_eq!(narrow(&g, &|_| None).unwrap().range[y], Some(want));
    }

    #[test]
    fn narrowest_prefers_signed_bytes() {
        assert_eq!(narrowest((-128, 127)), Some(DType::I8));
        assert_eq!(narrowest((0, 200)), Some(DType::U8));
        assert_eq!(narrowest((-1, 200)), Some(DType::I16));
        assert_eq!(narrowest((0, 70_000)), Some(DType::I32));
        assert_eq!(narrowest((0, 1 << 40)), None);
    }
}
