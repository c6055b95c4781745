//! Matrix products: `MatMul` (numpy semantics) and `Gemm`.
//!
//! Float inputs are computed in f32 (f16 is converted to f32 and back). Integer
//! inputs are computed exactly in i64; the output is `I32` when both operands are
//! 8- or 16-bit, else `I64`.
use super::elementwise::broadcast_shapes;
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Op, Result, Tensor, TensorType};
use half::f16;
use std::borrow::Cow;

/// Element types the compute kernels run on: f32 (float reference) and i64 (exact).
pub(crate) trait Acc: Copy + Default + PartialOrd + std::fmt::Debug + 'static {
    /// `self + a * b` (wrapping for integers).
    fn mac(self, a: Self, b: Self) -> Self;
}

impl Acc for f32 {
    #[inline(always)]
    fn mac(self, a: f32, b: f32) -> f32 {
        self + a * b
    }
}

impl Acc for i64 {
    #[inline(always)]
    fn mac(self, a: i64, b: i64) -> i64 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

/// How a product-like op (MatMul, Gemm, Conv) computes for given operand types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    /// In f32; the output has this float type.
    Float(DType),
    /// Exactly in i64; the output has this integer type.
    Int(DType),
}

impl Arith {
    /// The output element type.
    pub(crate) fn out_dtype(self) -> DType {
        match self {
            Arith::Float(d) | Arith::Int(d) => d,
        }
    }
}

fn is_narrow_int(d: DType) -> bool {
    matches!(d, DType::I8 | DType::U8 | DType::I16)
}

/// Decides the arithmetic for two operands: both the same float type, or both integers.
pub(crate) fn product_arith(a: DType, b: DType) -> Result<Arith> {
    if a.is_float() || b.is_float() {
        ensure!(a == b, "operand types differ: {a} and {b}");
        return Ok(Arith::Float(a));
    }
    ensure!(a != DType::Bool && b != DType::Bool, "operands must be numeric, got {a} and {b}");
    Ok(Arith::Int(if is_narrow_int(a) && is_narrow_int(b) { DType::I32 } else { DType::I64 }))
}

/// Checks that an extra operand (bias, C) fits the arithmetic chosen for the main operands.
pub(crate) fn check_extra_operand(arith: Arith, d: DType, what: &str) -> Result<()> {
    match arith {
        Arith::Float(f) => ensure!(d == f, "{what} must be {f}, got {d}"),
        Arith::Int(_) => ensure!(!d.is_float() && d != DType::Bool, "{what} must be an integer, got {d}"),
    }
    Ok(())
}

/// The data of a tensor as a contiguous row-major f32 slice (borrowed when possible).
pub(crate) fn f32_data(t: &Tensor) -> Cow<'_, [f32]> {
    if let Tensor::F32(a) = t {
        if let Some(s) = a.as_slice() {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(t.to_f32().iter().copied().collect())
}

/// The data of a tensor as a contiguous row-major i64 slice (borrowed when possible).
pub(crate) fn i64_data(t: &Tensor) -> Cow<'_, [i64]> {
    if let Tensor::I64(a) = t {
        if let Some(s) = a.as_slice() {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(t.to_i64().iter().copied().collect())
}

/// Wraps f32 results into a tensor of float type `dtype` (f32 or f16).
pub(crate) fn float_tensor(dtype: DType, shape: &[usize], v: Vec<f32>) -> Result<Tensor> {
    match dtype {
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(f16::from_f32).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v),
    }
}

/// Wraps exact i64 results into a tensor of integer type `dtype` (saturating).
pub(crate) fn int_tensor(dtype: DType, shape: &[usize], v: Vec<i64>) -> Result<Tensor> {
    Ok(Tensor::from_vec(shape, v)?.cast(dtype))
}

/// `c[m×n] += a[m×k] · b[k×n]`, all row-major, in i-k-j order (vectorizes on the rows of b).
pub(crate) fn gemm_kernel<T: Acc>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    if n == 0 || k == 0 {
        return;
    }
    for i in 0..m {
        let arow = &a[i * k..(i + 1) * k];
        let crow = &mut c[i * n..(i + 1) * n];
        for (p, &av) in arow.iter().enumerate() {
            let brow = &b[p * n..(p + 1) * n];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv = cv.mac(av, bv);
            }
        }
    }
}

/// Transposes a row-major `rows×cols` matrix.
pub(crate) fn transpose2<T: Copy>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * cols);
    for j in 0..cols {
        out.extend((0..rows).map(|i| a[i * cols + j]));
    }
    out
}

/// Operand layout of one MatMul after numpy's 1-D promotion and batch broadcasting.
#[derive(Debug)]
struct MmDims {
    m: usize,
    k: usize,
    n: usize,
    /// Broadcast batch shape.
    batch: Vec<usize>,
    /// Per batch dim, the element stride of a's and b's matrices (0 when broadcast).
    a_strides: Vec<usize>,
    b_strides: Vec<usize>,
    out_shape: Vec<usize>,
}

fn batch_strides(own: &[usize], batch: &[usize], mat: usize) -> Vec<usize> {
    // own is right-aligned with batch; a dim of 1 (or a missing dim) is broadcast.
    let mut strides = vec![0; batch.len()];
    let mut s = mat;
    for i in (0..own.len()).rev() {
        let bi = batch.len() - own.len() + i;
        strides[bi] = if own[i] == 1 { 0 } else { s };
        s *= own[i];
    }
    strides
}

fn mm_dims(a: &[usize], b: &[usize]) -> Result<MmDims> {
    ensure!(!a.is_empty() && !b.is_empty(), "MatMul operands must have rank >= 1, got {:?} and {:?}", a, b);
    let (a_batch, m, k) = match a {
        [k] => (&a[..0], 1, *k),
        [rest @ .., m, k] => (rest, *m, *k),
        [] => unreachable!(),
    };
    let (b_batch, kb, n) = match b {
        [k] => (&b[..0], *k, 1),
        [rest @ .., k, n] => (rest, *k, *n),
        [] => unreachable!(),
    };
    ensure!(k == kb, "inner dimensions differ: {:?} x {:?} ({k} vs {kb})", a, b);
    let batch = broadcast_shapes(a_batch, b_batch)?;
    let mut out_shape = batch.clone();
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    Ok(MmDims {
        m,
        k,
        n,
        a_strides: batch_strides(a_batch, &batch, m * k),
        b_strides: batch_strides(b_batch, &batch, k * n),
        batch,
        out_shape,
    })
}

fn batched_matmul<T: Acc>(a: &[T], b: &[T], d: &MmDims) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let nb: usize = d.batch.iter().product();
    let mut out = vec![T::default(); nb * m * n];
    let mut idx = vec![0usize; d.batch.len()];
    for (bi, c) in out.chunks_exact_mut((m * n).max(1)).enumerate().take(nb) {
        if bi > 0 {
            // Advance the multi-index over the batch shape.
            for ax in (0..idx.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < d.batch[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        let ao: usize = idx.iter().zip(&d.a_strides).map(|(i, s)| i * s).sum();
        let bo: usize = idx.iter().zip(&d.b_strides).map(|(i, s)| i * s).sum();
        gemm_kernel(&a[ao..ao + m * k], &b[bo..bo + k * n], c, m, k, n);
    }
    out
}

/// `MatMul`: numpy matmul, with 1-D operands promoted (and the added dim removed)
/// and batch dims broadcast. Integer operands: exact, output I32 if both are
/// 8/16-bit, else I64.
#[derive(Clone, Debug)]
pub struct MatMul;

impl Op for MatMul {
    op_common!("MatMul");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 2, "expects 2 inputs, got {}", inputs.len());
        let (a, b) = (inputs[0].ty, inputs[1].ty);
        let arith = product_arith(a.dtype, b.dtype)?;
        let d = mm_dims(&a.shape, &b.shape)?;
        Ok(vec![TensorType::new(arith.out_dtype(), d.out_shape)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (a, b) = (inputs[0], inputs[1]);
        let arith = product_arith(a.dtype(), b.dtype())?;
        let d = mm_dims(a.shape(), b.shape())?;
        let out = match arith {
            Arith::Float(dt) => float_tensor(dt, &d.out_shape, batched_matmul(&f32_data(a), &f32_data(b), &d))?,
            Arith::Int(dt) => int_tensor(dt, &d.out_shape, batched_matmul(&i64_data(a), &i64_data(b), &d))?,
        };
        Ok(vec![out])
    }

    /// batch · M · K · N.
    fn macs(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> u64 {
        match mm_dims(&inputs[0].shape, &inputs[1].shape) {
            Ok(d) => (d.batch.iter().product::<usize>() * d.m * d.k * d.n) as u64,
            Err(_) => 0,
        }
    }
}

/// `Gemm`: `Y = alpha·A'·B' + beta·C` with A' = Aᵀ if `trans_a` (likewise B), A and B
/// 2-D, optional C unidirectionally broadcast to [M, N]. Integer operands: exact,
/// alpha and beta must be integral, output I32 if A and B are 8/16-bit, else I64.
#[derive(Clone, Debug)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// Use Aᵀ.
    pub trans_a: bool,
    /// Use Bᵀ.
    pub trans_b: bool,
}

impl Gemm {
    /// (M, K, N) of the product, checking shapes.
    fn dims(&self, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
        ensure!(a.len() == 2 && b.len() == 2, "A and B must be 2-D, got {:?} and {:?}", a, b);
        let (m, k) = if self.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if self.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        ensure!(k == kb, "inner dimensions differ: A' is {m}x{k}, B' is {kb}x{n}");
        Ok((m, k, n))
    }
}

fn check_c_shape(c: &[usize], m: usize, n: usize) -> Result<()> {
    let ok = c.len() <= 2 && broadcast_shapes(c, &[m, n]).is_ok_and(|s| s == [m, n]);
    ensure!(ok, "C of shape {:?} does not broadcast to [{m}, {n}]", c);
    Ok(())
}

fn gemm_compute<T: Acc>(
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    (trans_a, trans_b): (bool, bool),
) -> Vec<T> {
    let at;
    let a = if trans_a {
        at = transpose2(a, k, m);
        &at[..]
    } else {
        a
    };
    let bt;
    let b = if trans_b {
        bt = transpose2(b, n, k);
        &bt[..]
    } else {
        b
    };
    let mut out = vec![T::default(); m * n];
    gemm_kernel(a, b, &mut out, m, k, n);
    out
}

/// Row-major [m, n] view of C broadcast: returns the value at (i, j).
fn c_index(c_shape: &[usize], i: usize, j: usize) -> usize {
    match c_shape {
        [] => 0,
        [cn] => {
            if *cn == 1 {
                0
            } else {
                j
            }
        }
        [cm, cn] => {
            let ii = if *cm == 1 { 0 } else { i };
            let jj = if *cn == 1 { 0 } else { j };
            ii * cn + jj
        }
        _ => 0,
    }
}

impl Op for Gemm {
    op_common!("Gemm");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(matches!(inputs.len(), 2 | 3), "expects 2 or 3 inputs, got {}", inputs.len());
        let (a, b) = (inputs[0].ty, inputs[1].ty);
        let arith = product_arith(a.dtype, b.dtype)?;
        let (m, _, n) = self.dims(&a.shape, &b.shape)?;
        if let Some(c) = inputs.get(2) {
            check_extra_operand(arith, c.ty.dtype, "C")?;
            check_c_shape(&c.ty.shape, m, n)?;
        }
        if matches!(arith, Arith::Int(_)) {
            ensure!(
                self.alpha.fract() == 0.0 && self.beta.fract() == 0.0,
                "integer Gemm needs integral alpha and beta, got {} and {}",
                self.alpha,
                self.beta
            );
        }
        Ok(vec![TensorType::new(arith.out_dtype(), vec![m, n])])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (a, b) = (inputs[0], inputs[1]);
        let arith = product_arith(a.dtype(), b.dtype())?;
        let dims = self.dims(a.shape(), b.shape())?;
        let (m, _, n) = dims;
        let c = inputs.get(2).copied();
        if let Some(c) = c {
            check_c_shape(c.shape(), m, n)?;
        }
        let trans = (self.trans_a, self.trans_b);
        let out = match arith {
            Arith::Float(dt) => {
                let mut y = gemm_compute(&f32_data(a), &f32_data(b), dims, trans);
                if self.alpha != 1.0 {
                    y.iter_mut().for_each(|v| *v *= self.alpha);
                }
                if let (Some(c), true) = (c, self.beta != 0.0) {
                    let cv = f32_data(c);
                    for (idx, v) in y.iter_mut().enumerate() {
                        *v += self.beta * cv[c_index(c.shape(), idx / n, idx % n)];
                    }
                }
                float_tensor(dt, &[m, n], y)?
            }
            Arith::Int(dt) => {
                let mut y = gemm_compute(&i64_data(a), &i64_data(b), dims, trans);
                let (alpha, beta) = (self.alpha as i64, self.beta as i64);
                if alpha != 1 {
                    y.iter_mut().for_each(|v| *v = v.wrapping_mul(alpha));
                }
                if let (Some(c), true) = (c, beta != 0) {
                    let cv = i64_data(c);
                    for (idx, v) in y.iter_mut().enumerate() {
                        *v = v.wrapping_add(beta.wrapping_mul(cv[c_index(c.shape(), idx / n, idx % n)]));
                    }
                }
                int_tensor(dt, &[m, n], y)?
            }
        };
        Ok(vec![out])
    }

    /// M · K · N.
    fn macs(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> u64 {
        match self.dims(&inputs[0].shape, &inputs[1].shape) {
            Ok((m, k, n)) => (m * k * n) as u64,
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }
    fn facts(ts: &[&Tensor]) -> Vec<TensorType> {
        ts.iter().map(|t| t.ty()).collect()
    }
    fn run(op: &dyn Op, ts: &[&Tensor]) -> Result<Tensor> {
        let tys = facts(ts);
        let fs: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        let out_ty = op.infer(&fs)?;
        let out = op.eval(ts)?.remove(0);
        assert_eq!(out.ty(), out_ty[0]);
        Ok(out)
    }

    #[test]
    fn matmul_broadcast_batch() {
        // a: [2,1,2,3], b: [3,2]
        let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let a = f(&[2, 1, 2, 3], &a);
        let b = f(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
        let y = run(&MatMul, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 2, 2]);
        // row [0,1,2]·b = [13,16]; [3,4,5] → [40,52]; [6,7,8] → [67,88]; [9,10,11] → [94,124]
        assert_eq!(y.to_f64_vec(), vec![13., 16., 40., 52., 67., 88., 94., 124.]);
    }

    #[test]
    fn matmul_batch_both_sides_and_1d() {
        let a = f(&[2, 1, 1, 2], &[1., 2., 3., 4.]);
        let b = f(&[3, 2, 1], &[1., 1., 2., 0., 0., 3.]);
        let y = run(&MatMul, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 1, 1]);
        assert_eq!(y.to_f64_vec(), vec![3., 2., 6., 7., 6., 12.]);
        // 1-D x 2-D and 2-D x 1-D, 1-D x 1-D
        let v = f(&[2], &[1., 2.]);
        let m = f(&[2, 2], &[1., 2., 3., 4.]);
        let y = run(&MatMul, &[&v, &m]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![2], vec![7., 10.]));
        let y = run(&MatMul, &[&m, &v]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![2], vec![5., 11.]));
        let y = run(&MatMul, &[&v, &v]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![], vec![5.]));
    }

    #[test]
    fn matmul_errors_and_ints() {
        let a = f(&[2, 3], &[0.; 6]);
        let b = f(&[2, 3], &[0.; 6]);
        let ty = [a.ty(), b.ty()];
        let fs: Vec<InputFact> = ty.iter().map(|ty| InputFact { ty, value: None }).collect();
        assert!(MatMul.infer(&fs).unwrap_err().to_string().contains("inner dimensions"));
        let a = Tensor::from_vec(&[1, 2], vec![100i8, -100]).unwrap();
        let b = Tensor::from_vec(&[2, 1], vec![127i8, 1]).unwrap();
        let y = run(&MatMul, &[&a, &b]).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert_eq!(y.to_i64_vec(), vec![12600]);
        let b = Tensor::from_vec(&[2, 1], vec![127i32, 1]).unwrap();
        assert_eq!(run(&MatMul, &[&a, &b]).unwrap().dtype(), DType::I64);
        // f16 computes in f32 and rounds back; mixed float types are rejected
        let h = Tensor::from_vec(&[1, 2], vec![1.5f32, 2.0]).unwrap().cast(DType::F16);
        let g = Tensor::from_vec(&[2, 1], vec![2f32, 0.25]).unwrap().cast(DType::F16);
        let y = run(&MatMul, &[&h, &g]).unwrap();
        assert_eq!((y.dtype(), y.to_f64_vec()), (DType::F16, vec![3.5]));
        let g32 = Tensor::from_vec(&[2, 1], vec![2f32, 0.25]).unwrap();
        assert!(run(&MatMul, &[&h, &g32]).is_err());
    }

    #[test]
    fn gemm_trans_b_bias() {
        let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f(&[2, 3], &[1., 0., 1., 0., 1., 0.]); // B' = bᵀ: [3,2]
        let c = f(&[2], &[10., 20.]);
        let op = Gemm { alpha: 2.0, beta: 0.5, trans_a: false, trans_b: true };
        let y = run(&op, &[&a, &b, &c]).unwrap();
        // A·Bᵀ = [[4,2],[10,5]]
        assert_eq!(y.to_f64_vec(), vec![13., 14., 25., 20.]);
        let op = Gemm { alpha: 1.0, beta: 1.0, trans_a: true, trans_b: false };
        let at = f(&[3, 2], &[1., 4., 2., 5., 3., 6.]);
        let b2 = f(&[3, 1], &[1., 1., 1.]);
        let c = f(&[2, 1], &[1., 2.]);
        let y = run(&op, &[&at, &b2, &c]).unwrap();
        assert_eq!(y.to_f64_vec(), vec![7., 17.]);
        let bad = f(&[3], &[0.; 3]);
        let ty = [at.ty(), b2.ty(), bad.ty()];
        let fs: Vec<InputFact> = ty.iter().map(|ty| InputFact { ty, value: None }).collect();
        assert!(op.infer(&fs).is_err());
    }

    #[test]
    fn gemm_int_alpha_beta() {
        let a = Tensor::from_vec(&[1, 2], vec![3i8, 4]).unwrap();
        let b = Tensor::from_vec(&[2, 2], vec![1i8, 2, 3, 4]).unwrap();
        let c = Tensor::from_vec(&[2], vec![100i32, -100]).unwrap();
        let op = Gemm { alpha: 2.0, beta: 3.0, trans_a: false, trans_b: false };
        let y = run(&op, &[&a, &b, &c]).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert_eq!(y.to_i64_vec(), vec![2 * 15 + 300, 2 * 22 - 300]);
    }
}
