//! Exact requantization of float-specified rescales: when a model gives its requantization in
//! float (a fake-quantized model's `acc·s_acc / s_y`, rounded in f32), the integer output is a
//! non-decreasing step function of the integer accumulator. It is tabulated on the host by
//! running the model's own float ops over every accumulator value the layer can produce, and the
//! device applies it with `mote_kernels::requant::ThresholdRequant`: bit-exact to the float model.
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Error, Op, Result, Tensor, TensorType};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::requant::{Requant, ThresholdRequant};

/// The steps of a non-decreasing table `y[i] = f(first + i)`: `(thresholds, lo)` with
/// `f(x) = lo + #{t ≤ x}` for every tabulated `x`, or `None` when `y` decreases somewhere or a
/// value does not fit `i32`.
pub fn steps(first: i64, y: &[i64]) -> Option<(Vec<i32>, i32)> {
    let lo = *y.first()?;
    if y.windows(2).any(|w| w[1] < w[0]) {
        return None;
    }
    let mut thresholds = Vec::new();
    for (i, w) in y.windows(2).enumerate() {
        // Each level passed between x = first + i and first + i + 1 starts at first + i + 1.
        let x = i32::try_from(first + i as i64 + 1).ok()?;
        thresholds.extend(std::iter::repeat_n(x, usize::try_from(w[1] - w[0]).ok()?));
    }
    Some((thresholds, i32::try_from(lo).ok()?))
}

/// int8 linear layer whose requantization is a tabulated step function:
/// `y[.., n] = lo + #{t ≤ b[n] + Σ_k (x[.., k] - zx)·w[n, k]}` (see the module docs).
/// Inputs: x `I8 [.., K]`, w `I8 [N, K]`, optional bias `I32 [N]`.
#[derive(Clone, Debug)]
pub struct QLinearThreshold {
    /// Zero point of x.
    pub x_zero_point: i32,
    /// Accumulator values where the output steps up by one (non-decreasing).
    pub thresholds: Vec<i32>,
    /// Output below the first threshold.
    pub lo: i32,
}

fn kernel_err(e: mote_kernels::KernelError) -> Error {
    Error::Invalid(format!("QLinearThreshold kernel refused its arguments: {e}"))
}

impl Op for QLinearThreshold {
    op_common!("QLinearThreshold");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!((2..=3).contains(&inputs.len()), "QLinearThreshold expects x, w and an optional bias");
        ensure!(
            inputs[0].ty.dtype == DType::I8 && inputs[1].ty.dtype == DType::I8,
            "QLinearThreshold needs int8 x and w"
        );
        let (x, w) = (&inputs[0].ty.shape, &inputs[1].ty.shape);
        ensure!(
            w.len() == 2 && x.last() == Some(&w[1]),
            "QLinearThreshold: x {x:?} does not match weight [N, K] {w:?}"
        );
        if let Some(b) = inputs.get(2) {
            ensure!(b.ty.dtype == DType::I32 && b.ty.len() == w[0], "QLinearThreshold bias must be int32 [{}]", w[0]);
        }
        let r = ThresholdRequant::new(&self.thresholds, self.lo).map_err(kernel_err)?;
        let (lo, hi) = r.bounds();
        ensure!(lo >= -128 && hi <= 127, "QLinearThreshold output range [{lo}, {hi}] is not int8");
        let mut y = x.clone();
        *y.last_mut().expect("rank >= 1") = w[0];
        Ok(vec![TensorType::new(DType::I8, y)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let data = |t: &Tensor| t.to_i64_vec();
        let x: Vec<i8> = data(inputs[0]).into_iter().map(|v| v as i8).collect();
        let w: Vec<i8> = data(inputs[1]).into_iter().map(|v| v as i8).collect();
        let bias: Option<Vec<i32>> = inputs.get(2).map(|b| data(b).into_iter().map(|v| v as i32).collect());
        let (n, k) = (inputs[1].shape()[0], inputs[1].shape()[1]);
        let d = MatDims { m: x.len() / k.max(1), k, n };
        let rq = Requant::Threshold(ThresholdRequant::new(&self.thresholds, self.lo).map_err(kernel_err)?);
        let mut out = vec![0i8; d.m * n];
        linear_requant(&x, &w, bias.as_deref(), d, -self.x_zero_point, &rq, &mut out).map_err(kernel_err)?;
        let mut shape = inputs[0].shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok(vec![Tensor::from_vec(&shape, out)?])
    }

    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        (outputs[0].len() * inputs[1].shape[1]) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_of_a_table() {
        // f(-2..=3) = [-1, -1, 0, 2, 2, 3]: steps at 0, 1, 1, 3.
        let (t, lo) = steps(-2, &[-1, -1, 0, 2, 2, 3]).unwrap();
        assert_eq!((t.as_slice(), lo), (&[0, 1, 1, 3][..], -1));
        let r = ThresholdRequant::new(&t, lo).unwrap();
        let back: Vec<i32> = (-2..=3).map(|x| r.apply(x)).collect();
        assert_eq!(back, [-1, -1, 0, 2, 2, 3]);
        assert!(steps(0, &[1, 0]).is_none());
        assert!(steps(0, &[]).is_none());
    }

    #[test]
    fn linear_threshold_eval() {
        // x [1,2] = [3, -1], w [[1, 2]] -> acc = 1, + bias 4 = 5; steps at 0 and 5 from -1 -> 1.
        let op = QLinearThreshold { x_zero_point: 0, thresholds: vec![0, 5], lo: -1 };
        let x = Tensor::from_vec(&[1, 2], vec![3i8, -1]).unwrap();
        let w = Tensor::from_vec(&[1, 2], vec![1i8, 2]).unwrap();
        let b = Tensor::from_vec(&[1], vec![4i32]).unwrap();
        let tys = [x.ty(), w.ty(), b.ty()];
        let facts: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        assert_eq!(op.infer(&facts).unwrap()[0], TensorType::new(DType::I8, vec![1, 1]));
        assert_eq!(op.eval(&[&x, &w, &b]).unwrap()[0].to_i64_vec(), vec![1]);
        let b = Tensor::from_vec(&[1], vec![3i32]).unwrap();
        assert_eq!(op.eval(&[&x, &w, &b]).unwrap()[0].to_i64_vec(), vec![0]);
    }
}
