//! Normalizations and reductions: `Softmax`, `LayerNorm`, `RmsNorm`, `Reduce`.
//!
//! Float ops compute in f32 (sums are accumulated in f64); f16 inputs are converted
//! to f32 and the result rounded back.
use super::matmul::{f32_data, float_tensor};
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Op, Result, Tensor, TensorType};
use ndarray::{ArrayD, Axis, IxDyn};

/// True when `from` broadcasts to `to` without changing `to` (numpy, right-aligned).
pub(crate) fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len() && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}

/// Checks a per-feature parameter (scale, bias, weight): after dropping leading 1-dims
/// it must broadcast to `norm` (the normalized trailing dims of x).
fn check_param(p: &TensorType, norm: &[usize], what: &str) -> Result<()> {
    ensure!(p.dtype.is_float(), "{what} must be a float tensor, got {}", p.dtype);
    let mut s = &p.shape[..];
    while s.len() > norm.len() && s[0] == 1 {
        s = &s[1..];
    }
    ensure!(
        broadcasts_to(s, norm),
        "{what} of shape {:?} does not broadcast to the normalized dims {:?}",
        p.shape,
        norm
    );
    Ok(())
}

/// The values of a parameter broadcast to `norm`, flattened (shape checked by [`check_param`]).
fn param_values(p: &Tensor, norm: &[usize], what: &str) -> Result<Vec<f32>> {
    check_param(&p.ty(), norm, what)?;
    let mut s = p.shape();
    while s.len() > norm.len() && s[0] == 1 {
        s = &s[1..];
    }
    let a = p.to_f32().into_shape_with_order(IxDyn(s)).map_err(|e| crate::Error::Invalid(e.to_string()))?;
    match a.broadcast(IxDyn(norm)) {
        Some(v) => Ok(v.iter().copied().collect()),
        None => crate::bail!("{what} of shape {:?} does not broadcast to {:?}", p.shape(), norm),
    }
}

fn check_float(t: &TensorType, what: &str) -> Result<()> {
    ensure!(t.dtype.is_float(), "{what} must be a float tensor, got {}", t.dtype);
    Ok(())
}

/// `Softmax` along one axis, numerically stable (the row max is subtracted first).
#[derive(Clone, Debug)]
pub struct Softmax {
    /// The normalized axis (resolved, non-negative).
    pub axis: usize,
}

impl Op for Softmax {
    op_common!("Softmax");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let x = inputs[0].ty;
        check_float(x, "the input")?;
        ensure!(self.axis < x.shape.len(), "axis {} is out of range for rank {}", self.axis, x.shape.len());
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let shape = x.shape();
        ensure!(self.axis < shape.len(), "axis {} is out of range for rank {}", self.axis, shape.len());
        let mut v = f32_data(x).into_owned();
        let len = shape[self.axis];
        let inner: usize = shape[self.axis + 1..].iter().product();
        let outer: usize = shape[..self.axis].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                let idx = |j: usize| base + j * inner;
                let max = (0..len).map(|j| v[idx(j)]).fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f64;
                for j in 0..len {
                    let e = (v[idx(j)] - max).exp();
                    v[idx(j)] = e;
                    sum += e as f64;
                }
                let inv = (1.0 / sum) as f32;
                for j in 0..len {
                    v[idx(j)] *= inv;
                }
            }
        }
        Ok(vec![float_tensor(x.dtype(), shape, v)?])
    }
}

/// Normalizes each row of `n` values with mean and population variance, then
/// applies scale and (optional) bias: `y = (x−μ)/√(σ²+ε)·scale + bias`.
fn normalize_rows(v: &mut [f32], n: usize, eps: f32, rms: bool, scale: &[f32], bias: Option<&[f32]>) {
    if n == 0 {
        return;
    }
    for row in v.chunks_exact_mut(n) {
        let mean = if rms { 0.0 } else { row.iter().map(|&x| x as f64).sum::<f64>() / n as f64 };
        let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, x) in row.iter_mut().enumerate() {
            let y = ((*x as f64 - mean) * inv) as f32 * scale[j];
            *x = match bias {
                Some(b) => y + b[j],
                None => y,
            };
        }
    }
}

/// `LayerNormalization` over dims `axis..` (population variance):
/// `y = (x−μ)/√(σ²+ε)·scale + bias`. Inputs: x, scale, optional bias (each
/// broadcastable to `x.shape[axis..]`). Only the `Y` output.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// First normalized axis (resolved, non-negative).
    pub axis: usize,
    /// Added to the variance.
    pub epsilon: f32,
}

impl Op for LayerNorm {
    op_common!("LayerNormalization");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(matches!(inputs.len(), 2 | 3), "expects 2 or 3 inputs (x, scale, bias), got {}", inputs.len());
        let x = inputs[0].ty;
        check_float(x, "x")?;
        ensure!(self.axis < x.shape.len(), "axis {} is out of range for rank {}", self.axis, x.shape.len());
        let norm = &x.shape[self.axis..];
        check_param(inputs[1].ty, norm, "scale")?;
        if let Some(b) = inputs.get(2) {
            check_param(b.ty, norm, "bias")?;
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let shape = x.shape();
        ensure!(self.axis < shape.len(), "axis {} is out of range for rank {}", self.axis, shape.len());
        let norm = &shape[self.axis..];
        let n: usize = norm.iter().product();
        let scale = param_values(inputs[1], norm, "scale")?;
        let bias = inputs.get(2).map(|b| param_values(b, norm, "bias")).transpose()?;
        let mut v = f32_data(x).into_owned();
        normalize_rows(&mut v, n, self.epsilon, false, &scale, bias.as_deref());
        Ok(vec![float_tensor(x.dtype(), shape, v)?])
    }

    /// One multiply per element (the scale).
    fn macs(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> u64 {
        inputs[0].len() as u64
    }
}

/// `RMSNorm` over the last axis: `y = x / √(mean(x²)+ε) · weight` (weight
/// broadcastable to the last dim).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// Added to the mean square.
    pub epsilon: f32,
}

impl Op for RmsNorm {
    op_common!("RMSNorm");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "expects 2 inputs (x, weight), got {}", inputs.len());
        let x = inputs[0].ty;
        check_float(x, "x")?;
        ensure!(!x.shape.is_empty(), "x must have rank >= 1");
        check_param(inputs[1].ty, &x.shape[x.shape.len() - 1..], "weight")?;
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let shape = x.shape();
        ensure!(!shape.is_empty(), "x must have rank >= 1");
        let norm = &shape[shape.len() - 1..];
        let w = param_values(inputs[1], norm, "weight")?;
        let mut v = f32_data(x).into_owned();
        normalize_rows(&mut v, norm[0], self.epsilon, true, &w, None);
        Ok(vec![float_tensor(x.dtype(), shape, v)?])
    }

    /// One multiply per element (the weight).
    fn macs(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> u64 {
        inputs[0].len() as u64
    }
}

/// The reductions of [`Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Arithmetic mean (integers: truncating division).
    Mean,
    /// Sum (integers: exact, wrapping in i64).
    Sum,
    /// Maximum (−∞ / the type's minimum over an empty set).
    Max,
    /// Minimum (+∞ / the type's maximum over an empty set).
    Min,
}

/// `ReduceMean/Sum/Max/Min` over the given axes. An empty `axes` reduces nothing
/// (identity); the translator expands "all axes" explicitly. Floats accumulate in
/// f64; integers are exact in i64.
#[derive(Clone, Debug)]
pub struct Reduce {
    /// Which reduction.
    pub kind: ReduceKind,
    /// Reduced axes (resolved, distinct).
    pub axes: Vec<usize>,
    /// Keep reduced axes as size-1 dims.
    pub keepdims: bool,
}

impl Reduce {
    fn out_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        for (i, &a) in self.axes.iter().enumerate() {
            ensure!(a < shape.len(), "axis {a} is out of range for rank {}", shape.len());
            ensure!(!self.axes[..i].contains(&a), "axis {a} is listed twice");
        }
        Ok(shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (self.axes.contains(&i), self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect())
    }

    fn sorted_axes_desc(&self) -> Vec<usize> {
        let mut axes = self.axes.clone();
        axes.sort_unstable_by(|a, b| b.cmp(a));
        axes
    }
}

impl Op for Reduce {
    fn name(&self) -> &'static str {
        match self.kind {
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let x = inputs[0].ty;
        ensure!(x.dtype != DType::Bool, "cannot reduce a bool tensor");
        Ok(vec![TensorType::new(x.dtype, self.out_shape(&x.shape)?)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let out_shape = self.out_shape(x.shape())?;
        let count: usize = self.axes.iter().map(|&a| x.shape()[a]).product();
        let axes = self.sorted_axes_desc();
        let out = if x.dtype().is_float() {
            let mut a: ArrayD<f64> = x.to_f32().mapv(f64::from);
            for &ax in &axes {
                a = match self.kind {
                    ReduceKind::Sum | ReduceKind::Mean => a.sum_axis(Axis(ax)),
                    ReduceKind::Max => a.fold_axis(Axis(ax), f64::NEG_INFINITY, |&m, &v| m.max(v)),
                    ReduceKind::Min => a.fold_axis(Axis(ax), f64::INFINITY, |&m, &v| m.min(v)),
                };
            }
            let mean = self.kind == ReduceKind::Mean;
            let v: Vec<f32> = a.iter().map(|&s| if mean { (s / count as f64) as f32 } else { s as f32 }).collect();
            float_tensor(x.dtype(), &out_shape, v)?
        } else {
            ensure!(x.dtype() != DType::Bool, "cannot reduce a bool tensor");
            let mut a = x.to_i64();
            for &ax in &axes {
                a = match self.kind {
                    ReduceKind::Sum | ReduceKind::Mean => a.fold_axis(Axis(ax), 0i64, |&s, &v| s.wrapping_add(v)),
                    ReduceKind::Max => a.fold_axis(Axis(ax), i64::MIN, |&m, &v| m.max(v)),
                    ReduceKind::Min => a.fold_axis(Axis(ax), i64::MAX, |&m, &v| m.min(v)),
                };
            }
            if self.kind == ReduceKind::Mean {
                ensure!(count > 0, "integer mean over an empty set");
                a.mapv_inplace(|s| s / count as i64);
            }
            Tensor::from_vec(&out_shape, a.iter().copied().collect::<Vec<_>>())?.cast(x.dtype())
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }
    fn run(op: &dyn Op, ts: &[&Tensor]) -> Result<Tensor> {
        let tys: Vec<TensorType> = ts.iter().map(|t| t.ty()).collect();
        let fs: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        let out_ty = op.infer(&fs)?;
        let out = op.eval(ts)?.remove(0);
        assert_eq!(out.ty(), out_ty[0]);
        Ok(out)
    }
    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn softmax_rows_and_axis() {
        let x = f(&[2, 3], &[1., 2., 3., 1000., 1000., 1000.]);
        let y = run(&Softmax { axis: 1 }, &[&x]).unwrap().to_f64_vec();
        let e: Vec<f64> = [1f64, 2., 3.].iter().map(|v| (v - 3.0).exp()).collect();
        let s: f64 = e.iter().sum();
        close(&y[..3], &[e[0] / s, e[1] / s, e[2] / s]);
        close(&y[3..], &[1. / 3.; 3]);
        let y = run(&Softmax { axis: 0 }, &[&x]).unwrap().to_f64_vec();
        close(&[y[0] + y[3], y[1] + y[4], y[2] + y[5]], &[1., 1., 1.]);
        assert_eq!(y[3], 1.0);
        let t = x.ty();
        assert!(Softmax { axis: 2 }.infer(&[InputFact { ty: &t, value: None }]).is_err());
        // f16 in, f16 out
        let h = x.cast(DType::F16);
        let y = run(&Softmax { axis: 1 }, &[&h]).unwrap();
        assert_eq!(y.dtype(), DType::F16);
    }

    #[test]
    fn layer_norm_hand_values() {
        // row [1,2,3,4]: mean 2.5, var 1.25
        let x = f(&[2, 4], &[1., 2., 3., 4., 0., 0., 4., 4.]);
        let scale = f(&[4], &[1., 2., 1., 1.]);
        let bias = f(&[4], &[0., 0., 0., 1.]);
        let y = run(&LayerNorm { axis: 1, epsilon: 0.0 }, &[&x, &scale, &bias]).unwrap().to_f64_vec();
        let s = 1.25f64.sqrt();
        close(&y, &[-1.5 / s, -1.0 / s, 0.5 / s, 1.5 / s + 1.0, -1., -2., 1., 2.]);
        // over two axes, scale [1,2,2] and no bias
        let x = f(&[1, 2, 2], &[1., 2., 3., 4.]);
        let scale = f(&[1, 2, 2], &[1.; 4]);
        let y = run(&LayerNorm { axis: 1, epsilon: 0.0 }, &[&x, &scale]).unwrap().to_f64_vec();
        close(&y, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]);
        let bad = f(&[3], &[1.; 3]);
        let tys = [x.ty(), bad.ty()];
        let fs: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        assert!(LayerNorm { axis: 2, epsilon: 0.0 }.infer(&fs).is_err());
    }

    #[test]
    fn rms_norm_hand_values() {
        let x = f(&[1, 2], &[3., 4.]); // mean square 12.5
        let w = f(&[2], &[1., 2.]);
        let y = run(&RmsNorm { epsilon: 0.0 }, &[&x, &w]).unwrap().to_f64_vec();
        let r = 12.5f64.sqrt();
        close(&y, &[3. / r, 8. / r]);
    }

    #[test]
    fn reduce_kinds() {
        let x = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let r = |kind, axes: Vec<usize>, keepdims| run(&Reduce { kind, axes, keepdims }, &[&x]).unwrap();
        let y = r(ReduceKind::Mean, vec![1], false);
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![2], vec![2., 5.]));
        let y = r(ReduceKind::Sum, vec![0], true);
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![1, 3], vec![5., 7., 9.]));
        let y = r(ReduceKind::Max, vec![0, 1], false);
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![], vec![6.]));
        let y = r(ReduceKind::Min, vec![1, 0], true);
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![1, 1], vec![1.]));
        let y = r(ReduceKind::Sum, vec![], false);
        assert_eq!(y, x);
        let xi = Tensor::from_vec(&[3], vec![1i64, 2, 4]).unwrap();
        let y = run(&Reduce { kind: ReduceKind::Mean, axes: vec![0], keepdims: false }, &[&xi]).unwrap();
        assert_eq!(y.to_i64_vec(), vec![2]);
        let t = x.ty();
        let fs = [InputFact { ty: &t, value: None }];
        assert!(Reduce { kind: ReduceKind::Sum, axes: vec![2], keepdims: false }.infer(&fs).is_err());
        assert!(Reduce { kind: ReduceKind::Sum, axes: vec![1, 1], keepdims: false }.infer(&fs).is_err());
    }
}
