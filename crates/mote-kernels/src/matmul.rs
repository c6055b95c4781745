//! Integer matrix products: Deeploy `MatMul`/`Gemm` (SEMANTICS §3.2/§3.3), linear layers and
//! batched, strided products for attention (`Q·Kᵀ` and `A·V` read in place).
//!
//! Accumulation is `i32` with two's-complement wrapping. The result is exact whenever the true
//! sum fits in `i32`, e.g. always for i8×i8 with `k <= 131_071` and for u8×i8 with
//! `k <= 65_793` (no offsets, no bias).

use crate::elem::IntElem;
use crate::requant::Requant;
use crate::KernelError;

/// Where a batch of row-major matrices sits in a flat slice.
///
/// Element `(b, r, c)` is at `offset + b·batch + r·row + c`: the column index is always
/// contiguous. A `batch` stride of 0 broadcasts one matrix over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    /// Index of element `(0, 0, 0)`.
    pub offset: usize,
    /// Distance between consecutive batch (or head) entries.
    pub batch: usize,
    /// Distance between consecutive rows.
    pub row: usize,
}

impl Strides {
    /// Densely packed `[batch, rows, cols]` tensor starting at index 0.
    pub const fn packed(rows: usize, cols: usize) -> Self {
        Self { offset: 0, batch: rows.saturating_mul(cols), row: cols }
    }

    /// Heads side by side in a `[rows, heads·head_dim]` tensor (e.g. a Q/K/V projection output):
    /// batch index = head, head `h` starts at column `h·head_dim`.
    pub const fn interleaved_heads(heads: usize, head_dim: usize) -> Self {
        Self { offset: 0, batch: head_dim, row: heads.saturating_mul(head_dim) }
    }

    /// The same strides with a different starting offset.
    pub const fn with_offset(self, offset: usize) -> Self {
        Self { offset, ..self }
    }

    /// Index of `(b, r, 0)`; saturating so that unvalidated empty views cannot overflow.
    #[inline]
    fn at(self, b: usize, r: usize) -> usize {
        self.offset.saturating_add(b.saturating_mul(self.batch)).saturating_add(r.saturating_mul(self.row))
    }
}

/// `Ok` if every element of a `[batch, rows, cols]` view with strides `s` lies inside `len`.
fn check_view(len: usize, s: Strides, batch: usize, rows: usize, cols: usize) -> Result<(), KernelError> {
    if batch == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (batch - 1)
        .checked_mul(s.batch)
        .and_then(|v| v.checked_add((rows - 1).checked_mul(s.row)?))
        .and_then(|v| v.checked_add(cols - 1))
        .and_then(|v| v.checked_add(s.offset))
        .ok_or(KernelError::ShapeMismatch)?;
    if last < len {
        Ok(())
    } else {
        Err(KernelError::ShapeMismatch)
    }
}

/// `a·b`, or `ShapeMismatch` on overflow.
fn mul(a: usize, b: usize) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or(KernelError::ShapeMismatch)
}

/// `len` elements of `s` from `start`; the empty fallback is unreachable after validation.
#[inline]
fn row<T>(s: &[T], start: usize, len: usize) -> &[T] {
    s.get(start..start.saturating_add(len)).unwrap_or(&[])
}

/// `Σ (a_i + ao)·(b_i + bo)` in wrapping `i32`.
#[inline]
fn dot<A: IntElem, B: IntElem>(a: &[A], b: &[B], ao: i32, bo: i32) -> i32 {
    let mut acc = 0i32;
    for (&x, &y) in a.iter().zip(b) {
        let p = x.to_i32().wrapping_add(ao).wrapping_mul(y.to_i32().wrapping_add(bo));
        acc = acc.wrapping_add(p);
    }
    acc
}

/// `Σ_i (a_i + ao)·(b[start + i·step] + bo)` in wrapping `i32` (a column of a row-major matrix).
#[inline]
fn dot_col<A: IntElem, B: IntElem>(a: &[A], b: &[B], start: usize, step: usize, ao: i32, bo: i32) -> i32 {
    let mut acc = 0i32;
    let mut idx = start;
    for &x in a {
        if let Some(&y) = b.get(idx) {
            let p = x.to_i32().wrapping_add(ao).wrapping_mul(y.to_i32().wrapping_add(bo));
            acc = acc.wrapping_add(p);
        }
        idx = idx.saturating_add(step);
    }
    acc
}

/// Dimensions of one matrix product: `[m, k] · [k, n] -> [m, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDims {
    /// Rows of the left operand and of the output.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns of the output (output channels for a linear layer).
    pub n: usize,
}

/// A batched, strided product `out[b] = (A[b] + a_offset) · op(B[b] + b_offset)`.
///
/// `A` is `[batch, m, k]`; `B` is `[batch, n, k]` for [`qk_t`] (`op` = transpose, k contiguous
/// in both operands) or `[batch, k, n]` for [`av`]; `out` is `[batch, m, n]`. Each operand is
/// placed by its own [`Strides`], so heads can be read from and written to `[S, H·P]` in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchedMatmul {
    /// Number of batch entries (e.g. heads).
    pub batch: usize,
    /// Rows of `A` and `out`.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns of `out`.
    pub n: usize,
    /// Added to every element of `A` (0 for the Deeploy true-value domain).
    pub a_offset: i32,
    /// Added to every element of `B` (0 for the Deeploy true-value domain).
    pub b_offset: i32,
    /// Placement of `A`.
    pub a: Strides,
    /// Placement of `B`.
    pub b: Strides,
    /// Placement of `out`.
    pub out: Strides,
}

impl BatchedMatmul {
    /// Packed operands for [`qk_t`]: `A [batch,m,k]`, `B [batch,n,k]`, `out [batch,m,n]`.
    pub const fn packed_nt(batch: usize, m: usize, k: usize, n: usize) -> Self {
        Self {
            batch,
            m,
            k,
            n,
            a_offset: 0,
            b_offset: 0,
            a: Strides::packed(m, k),
            b: Strides::packed(n, k),
            out: Strides::packed(m, n),
        }
    }

    /// Packed operands for [`av`]: `A [batch,m,k]`, `B [batch,k,n]`, `out [batch,m,n]`.
    pub const fn packed_nn(batch: usize, m: usize, k: usize, n: usize) -> Self {
        Self { b: Strides::packed(k, n), ..Self::packed_nt(batch, m, k, n) }
    }

    fn validate(&self, a: usize, b: usize, out: usize, b_is_nk: bool) -> Result<(), KernelError> {
        check_view(a, self.a, self.batch, self.m, self.k)?;
        if b_is_nk {
            check_view(b, self.b, self.batch, self.n, self.k)?;
        } else {
            check_view(b, self.b, self.batch, self.k, self.n)?;
        }
        check_view(out, self.out, self.batch, self.m, self.n)
    }

    /// Calls `emit(out_index, j, acc)` for every output element; `B` is `[n, k]`.
    fn for_each_nt<A: IntElem, B: IntElem>(&self, a: &[A], b: &[B], mut emit: impl FnMut(usize, usize, i32)) {
        for bi in 0..self.batch {
            for i in 0..self.m {
                let arow = row(a, self.a.at(bi, i), self.k);
                let obase = self.out.at(bi, i);
                for j in 0..self.n {
                    let brow = row(b, self.b.at(bi, j), self.k);
                    emit(obase + j, j, dot(arow, brow, self.a_offset, self.b_offset));
                }
            }
        }
    }

    /// Calls `emit(out_index, j, acc)` for every output element; `B` is `[k, n]`.
    fn for_each_nn<A: IntElem, B: IntElem>(&self, a: &[A], b: &[B], mut emit: impl FnMut(usize, usize, i32)) {
        for bi in 0..self.batch {
            let bbase = self.b.at(bi, 0);
            for i in 0..self.m {
                let arow = row(a, self.a.at(bi, i), self.k);
                let obase = self.out.at(bi, i);
                for j in 0..self.n {
                    let acc = dot_col(arow, b, bbase + j, self.b.row, self.a_offset, self.b_offset);
                    emit(obase + j, j, acc);
                }
            }
        }
    }
}

/// Batched `out[b,i,j] = Σ_k (A[b,i,k]+a_offset)·(B[b,j,k]+b_offset)`: `Q·Kᵀ` with K stored `[S, P]`.
///
/// See [`BatchedMatmul`] for layouts. Errors: any view reaching outside its slice.
pub fn qk_t<A: IntElem, B: IntElem>(p: &BatchedMatmul, a: &[A], b: &[B], out: &mut [i32]) -> Result<(), KernelError> {
    p.validate(a.len(), b.len(), out.len(), true)?;
    p.for_each_nt(a, b, |idx, _, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = acc;
        }
    });
    Ok(())
}

/// [`qk_t`] followed by requantization; per-channel parameters index the output column `j`.
pub fn qk_t_requant<A: IntElem, B: IntElem, T: IntElem>(
    p: &BatchedMatmul,
    a: &[A],
    b: &[B],
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(p.n)?;
    p.validate(a.len(), b.len(), out.len(), true)?;
    p.for_each_nt(a, b, |idx, j, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = T::from_i32_sat(rq.apply(acc, j));
        }
    });
    Ok(())
}

/// Batched `out[b,i,j] = Σ_k (A[b,i,k]+a_offset)·(V[b,k,j]+b_offset)` with V row-major `[k, n]`.
///
/// See [`BatchedMatmul`] for layouts. Errors: any view reaching outside its slice.
pub fn av<A: IntElem, B: IntElem>(p: &BatchedMatmul, a: &[A], v: &[B], out: &mut [i32]) -> Result<(), KernelError> {
    p.validate(a.len(), v.len(), out.len(), false)?;
    p.for_each_nn(a, v, |idx, _, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = acc;
        }
    });
    Ok(())
}

/// [`av`] followed by requantization; per-channel parameters index the output column `j`.
pub fn av_requant<A: IntElem, B: IntElem, T: IntElem>(
    p: &BatchedMatmul,
    a: &[A],
    v: &[B],
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(p.n)?;
    p.validate(a.len(), v.len(), out.len(), false)?;
    p.for_each_nn(a, v, |idx, j, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = T::from_i32_sat(rq.apply(acc, j));
        }
    });
    Ok(())
}

/// Deeploy `MatMul` (§3.2): packed `a [m,k] · b [k,n] -> out [m,n]`, exact full-width `i32`.
///
/// Operands may be i8 or u8 (softmax outputs). Batched/broadcast forms: use [`av`].
pub fn matmul_i32<A: IntElem, B: IntElem>(a: &[A], b: &[B], d: MatDims, out: &mut [i32]) -> Result<(), KernelError> {
    let p = BatchedMatmul::packed_nn(1, d.m, d.k, d.n);
    if a.len() != mul(d.m, d.k)? || b.len() != mul(d.k, d.n)? || out.len() != mul(d.m, d.n)? {
        return Err(KernelError::ShapeMismatch);
    }
    av(&p, a, b, out)
}

fn check_linear(x: usize, w: usize, bias: Option<&[i32]>, d: MatDims, out: usize) -> Result<(), KernelError> {
    let bias_ok = bias.is_none_or(|b| b.len() == d.n);
    if x != mul(d.m, d.k)? || w != mul(d.n, d.k)? || out != mul(d.m, d.n)? || !bias_ok {
        return Err(KernelError::ShapeMismatch);
    }
    Ok(())
}

#[inline]
fn bias_at(bias: Option<&[i32]>, j: usize) -> i32 {
    bias.and_then(|b| b.get(j)).copied().unwrap_or(0)
}

/// Linear layer to `i32`: `out[i,j] = bias[j] + Σ_k (x[i,k] + input_offset)·w[j,k]`.
///
/// `x [m,k]`, `w [n,k]` (row j = output channel, k contiguous), `bias [n]`, `out [m,n]`.
pub fn linear_i32<A: IntElem>(
    x: &[A],
    w: &[i8],
    bias: Option<&[i32]>,
    d: MatDims,
    input_offset: i32,
    out: &mut [i32],
) -> Result<(), KernelError> {
    check_linear(x.len(), w.len(), bias, d, out.len())?;
    let p = BatchedMatmul { a_offset: input_offset, ..BatchedMatmul::packed_nt(1, d.m, d.k, d.n) };
    p.for_each_nt(x, w, |idx, j, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = acc.wrapping_add(bias_at(bias, j));
        }
    });
    Ok(())
}

/// [`linear_i32`] followed by requantization (per-tensor, or per output channel `j`).
///
/// For Deeploy's per-row (`[m,1]`) RequantShift use [`linear_i32`] + [`crate::requant::requantize`].
pub fn linear_requant<A: IntElem, T: IntElem>(
    x: &[A],
    w: &[i8],
    bias: Option<&[i32]>,
    d: MatDims,
    input_offset: i32,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(d.n)?;
    check_linear(x.len(), w.len(), bias, d, out.len())?;
    let p = BatchedMatmul { a_offset: input_offset, ..BatchedMatmul::packed_nt(1, d.m, d.k, d.n) };
    p.for_each_nt(x, w, |idx, j, acc| {
        if let Some(o) = out.get_mut(idx) {
            *o = T::from_i32_sat(rq.apply(acc.wrapping_add(bias_at(bias, j)), j));
        }
    });
    Ok(())
}

/// Parameters of Deeploy `Gemm` (§3.3): `Y = alpha·(A·B') + beta·C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmParams {
    /// `A [m,k]`, output `[m,n]`.
    pub dims: MatDims,
    /// `B` is stored `[n,k]` (transB = 1) instead of `[k,n]`.
    pub trans_b: bool,
    /// Integer `alpha`.
    pub alpha: i32,
    /// Integer `beta`.
    pub beta: i32,
}

/// Deeploy `Gemm` (§3.3) in wrapping `i32`: `out = alpha·(A·B') + beta·C`.
///
/// `a [m,k]` packed, `b [k,n]` or `[n,k]` (`trans_b`), `c` of length `m·n`, `n` (row-broadcast
/// bias) or 1, `out [m,n]`.
pub fn gemm_i32<A: IntElem, B: IntElem>(
    a: &[A],
    b: &[B],
    c: Option<&[i32]>,
    p: &GemmParams,
    out: &mut [i32],
) -> Result<(), KernelError> {
    let d = p.dims;
    let mn = mul(d.m, d.n)?;
    if a.len() != mul(d.m, d.k)? || b.len() != mul(d.k, d.n)? || out.len() != mn {
        return Err(KernelError::ShapeMismatch);
    }
    let c_len = c.map_or(0, <[i32]>::len);
    if c.is_some() && c_len != mn && c_len != d.n && c_len != 1 {
        return Err(KernelError::ShapeMismatch);
    }
    let n = d.n;
    let c_at = |idx: usize, j: usize| -> i32 {
        let ci = if c_len == mn {
            idx
        } else if c_len == n {
            j
        } else {
            0
        };
        c.and_then(|c| c.get(ci)).copied().unwrap_or(0)
    };
    let emit = |idx: usize, j: usize, acc: i32| {
        if let Some(o) = out.get_mut(idx) {
            *o = p.alpha.wrapping_mul(acc).wrapping_add(p.beta.wrapping_mul(c_at(idx, j)));
        }
    };
    if p.trans_b {
        BatchedMatmul::packed_nt(1, d.m, d.k, d.n).for_each_nt(a, b, emit);
    } else {
        BatchedMatmul::packed_nn(1, d.m, d.k, d.n).for_each_nn(a, b, emit);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requant::{FixedPointRequant, ShiftRequant};
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Plain triple loop over packed row-major `[m,k] x [k,n]` in i128.
    fn model_mm(a: &[i128], b: &[i128], m: usize, k: usize, n: usize) -> Vec<i128> {
        let mut out = vec![0i128; m * n];
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    out[i * n + j] += a[i * k + t] * b[t * n + j];
                }
            }
        }
        out
    }

    fn transpose(b: &[i128], rows: usize, cols: usize) -> Vec<i128> {
        let mut t = vec![0i128; b.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = b[r * cols + c];
            }
        }
        t
    }

    fn wide<T: IntElem>(v: &[T]) -> Vec<i128> {
        v.iter().map(|x| i128::from(x.to_i32())).collect()
    }

    #[test]
    fn hand_computed() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        let a = [1i8, 2, 3, 4];
        let b = [5i8, 6, 7, 8];
        let mut out = [0i32; 4];
        matmul_i32(&a, &b, MatDims { m: 2, k: 2, n: 2 }, &mut out).unwrap();
        assert_eq!(out, [19, 22, 43, 50]);
        // linear: w rows are output channels: x·wᵀ + bias.
        linear_i32(&a, &b, Some(&[1, -1]), MatDims { m: 2, k: 2, n: 2 }, 0, &mut out).unwrap();
        assert_eq!(out, [1 + 17, -1 + 23, 1 + 39, -1 + 53]);
        // input offset: (x + 1)
        linear_i32(&a, &b, None, MatDims { m: 2, k: 2, n: 2 }, 1, &mut out).unwrap();
        assert_eq!(out, [2 * 5 + 3 * 6, 2 * 7 + 3 * 8, 4 * 5 + 5 * 6, 4 * 7 + 5 * 8]);
        // u8 extremes times i8 extremes.
        let x = [255u8; 3];
        let w = [-128i8; 3];
        let mut o = [0i32; 1];
        linear_i32(&x, &w, None, MatDims { m: 1, k: 3, n: 1 }, 0, &mut o).unwrap();
        assert_eq!(o, [-97_920]);
        // gemm alpha=2, beta=3, transB, bias broadcast.
        let mut g = [0i32; 4];
        let p = GemmParams { dims: MatDims { m: 2, k: 2, n: 2 }, trans_b: true, alpha: 2, beta: 3 };
        gemm_i32(&a, &b, Some(&[1, 2]), &p, &mut g).unwrap();
        assert_eq!(g, [2 * 17 + 3, 2 * 23 + 6, 2 * 39 + 3, 2 * 53 + 6]);
    }

    #[test]
    fn requant_saturates() {
        let x = [127i8, 127];
        let w = [127i8, 127, -128, -128];
        let rq = Requant::Shift(ShiftRequant::new(&[1], &[0], 0, 256, true).unwrap());
        let mut out = [0i8; 2];
        linear_requant(&x, &w, None, MatDims { m: 1, k: 2, n: 2 }, 0, &rq, &mut out).unwrap();
        assert_eq!(out, [127, -128]);
    }

    #[test]
    fn k_zero_gives_bias() {
        let mut out = [7i32; 6];
        linear_i32::<i8>(&[], &[], Some(&[1, 2, 3]), MatDims { m: 2, k: 0, n: 3 }, 5, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn errors() {
        let d = MatDims { m: 2, k: 3, n: 4 };
        let mut out = [0i32; 8];
        assert_eq!(linear_i32(&[0i8; 5], &[0; 12], None, d, 0, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(linear_i32(&[0i8; 6], &[0; 11], None, d, 0, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(linear_i32(&[0i8; 6], &[0; 12], Some(&[0; 3]), d, 0, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(linear_i32(&[0i8; 6], &[0; 12], None, d, 0, &mut out[..7]), Err(KernelError::ShapeMismatch));
        assert_eq!(matmul_i32(&[0i8; 6], &[0i8; 11], d, &mut out), Err(KernelError::ShapeMismatch));
        let rq3 = Requant::Shift(ShiftRequant::new(&[1; 3], &[0], 0, 256, true).unwrap());
        let mut o8 = [0i8; 8];
        assert_eq!(linear_requant(&[0i8; 6], &[0; 12], None, d, 0, &rq3, &mut o8), Err(KernelError::ShapeMismatch));
        // A view one element too long.
        let p = BatchedMatmul::packed_nt(2, 2, 3, 4);
        assert_eq!(qk_t(&p, &[0i8; 11], &[0i8; 24], &mut [0i32; 16]), Err(KernelError::ShapeMismatch));
        assert_eq!(qk_t(&p, &[0i8; 12], &[0i8; 23], &mut [0i32; 16]), Err(KernelError::ShapeMismatch));
        assert_eq!(qk_t(&p, &[0i8; 12], &[0i8; 24], &mut [0i32; 15]), Err(KernelError::ShapeMismatch));
        let p = BatchedMatmul::packed_nn(2, 2, 3, 4);
        assert_eq!(av(&p, &[0i8; 12], &[0i8; 23], &mut [0i32; 16]), Err(KernelError::ShapeMismatch));
        let huge = BatchedMatmul { a: Strides { offset: usize::MAX, batch: 0, row: 0 }, ..p };
        assert_eq!(av(&huge, &[0i8; 12], &[0i8; 24], &mut [0i32; 16]), Err(KernelError::ShapeMismatch));
        let g = GemmParams { dims: d, trans_b: false, alpha: 1, beta: 1 };
        assert_eq!(gemm_i32(&[0i8; 6], &[0i8; 12], Some(&[0; 3]), &g, &mut out), Err(KernelError::ShapeMismatch));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matmul_u8_i8_exact(m in dim(), k in dim(), n in dim(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_u8(m * k);
            let b = g.vec_i8(k * n);
            let mut out = vec![0i32; m * n];
            matmul_i32(&a, &b, MatDims { m, k, n }, &mut out).unwrap();
            let want = model_mm(&wide(&a), &wide(&b), m, k, n);
            prop_assert_eq!(wide(&out), want);
        }

        #[test]
        fn linear_requant_matches_model(m in dim(), k in dim(), n in dim(), per_channel in any::<bool>(),
                                        fixed in any::<bool>(), off in -128i32..=128, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(m * k);
            let w = g.vec_i8(n * k);
            let bias = g.vec_i32(n, -100_000, 100_000);
            let c = if per_channel { n } else { 1 };
            let mul = g.vec_i32(c, -300, 300);
            let add = g.vec_i32(c, -1 << 20, 1 << 20);
            let s = g.i32_in(0, 20) as u32;
            let mult = g.vec_i32(c, 1 << 30, i32::MAX);
            let sh = g.vec_i32(c, -31, 0);
            let zp = g.i32_in(-20, 20);
            let rq = if fixed {
                Requant::FixedPoint(FixedPointRequant::new(&mult, &sh, zp, -128, 127).unwrap())
            } else {
                Requant::Shift(ShiftRequant::new(&mul, &add, s, 256, true).unwrap())
            };
            let mut acc = vec![0i32; m * n];
            let mut out = vec![0i8; m * n];
            linear_i32(&x, &w, Some(&bias), MatDims { m, k, n }, off, &mut acc).unwrap();
            linear_requant(&x, &w, Some(&bias), MatDims { m, k, n }, off, &rq, &mut out).unwrap();
            let xo: Vec<i128> = x.iter().map(|&v| i128::from(v) + i128::from(off)).collect();
            let want = model_mm(&xo, &transpose(&wide(&w), n, k), m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let a = want[i * n + j] + i128::from(bias[j]);
                    prop_assert_eq!(i128::from(acc[i * n + j]), a);
                    let ch = if per_channel { j } else { 0 };
                    let a = a as i32;
                    let y = if fixed {
                        (model_q31(a, mult[ch], sh[ch]) + zp).clamp(-128, 127)
                    } else {
                        let v = i128::from(a) * i128::from(mul[ch]) + i128::from(add[ch]);
                        floor_div(2 * v + (1 << s), 1 << (s + 1)).clamp(-128, 127) as i32
                    };
                    prop_assert_eq!(i32::from(out[i * n + j]), y);
                }
            }
        }

        #[test]
        fn attention_heads_in_place(s in small_dim(), heads in 1usize..4, p in small_dim(), seed in any::<u64>()) {
            // Q, K, V: [S, H·P] projection outputs; scores [H, S, S] (u8-like); out [S, H·P].
            let mut g = Lcg(seed);
            let hp = heads * p;
            let q = g.vec_i8(s * hp);
            let kk = g.vec_i8(s * hp);
            let v = g.vec_i8(s * hp);
            let heads_view = Strides::interleaved_heads(heads, p);
            let qk = BatchedMatmul { a: heads_view, b: heads_view, ..BatchedMatmul::packed_nt(heads, s, p, s) };
            let mut scores = vec![0i32; heads * s * s];
            qk_t(&qk, &q, &kk, &mut scores).unwrap();
            let probs: Vec<u8> = scores.iter().map(|&x| (x & 0xff) as u8).collect();
            let avp = BatchedMatmul { b: heads_view, out: heads_view, ..BatchedMatmul::packed_nn(heads, s, s, p) };
            let mut out = vec![0i32; s * hp];
            av(&avp, &probs, &v, &mut out).unwrap();
            let sel = |t: &[i8], h: usize| -> Vec<i128> {
                (0..s).flat_map(|r| (0..p).map(move |c| (r, c))).map(|(r, c)| i128::from(t[r * hp + h * p + c])).collect()
            };
            for h in 0..heads {
                let want_s = model_mm(&sel(&q, h), &transpose(&sel(&kk, h), s, p), s, p, s);
                prop_assert_eq!(wide(&scores[h * s * s..(h + 1) * s * s]), want_s);
                let want_o = model_mm(&wide(&probs[h * s * s..(h + 1) * s * s]), &sel(&v, h), s, s, p);
                for r in 0..s {
                    for c in 0..p {
                        prop_assert_eq!(i128::from(out[r * hp + h * p + c]), want_o[r * p + c]);
                    }
                }
            }
        }

        #[test]
        fn batched_requant_and_broadcast(batch in 1usize..4, m in small_dim(), k in small_dim(), n in small_dim(),
                                         ao in -3i32..3, bo in -3i32..3, seed in any::<u64>()) {
            // B broadcast over the batch (stride 0), offsets on both operands, packed output.
            let mut g = Lcg(seed);
            let a = g.vec_i8(batch * m * k);
            let bt = g.vec_i8(n * k);
            let b = g.vec_i8(k * n);
            let mut pt = BatchedMatmul::packed_nt(batch, m, k, n);
            pt.b.batch = 0;
            pt.a_offset = ao;
            pt.b_offset = bo;
            let mut pn = BatchedMatmul::packed_nn(batch, m, k, n);
            pn.b.batch = 0;
            pn.a_offset = ao;
            pn.b_offset = bo;
            let rq = Requant::Shift(ShiftRequant::new(&[3], &[-7], 4, 256, false).unwrap());
            let mut o_nt = vec![0u8; batch * m * n];
            let mut o_nn = vec![0u8; batch * m * n];
            qk_t_requant(&pt, &a, &bt, &rq, &mut o_nt).unwrap();
            av_requant(&pn, &a, &b, &rq, &mut o_nn).unwrap();
            let bt_w: Vec<i128> = bt.iter().map(|&x| i128::from(x) + i128::from(bo)).collect();
            let b_w: Vec<i128> = b.iter().map(|&x| i128::from(x) + i128::from(bo)).collect();
            for bi in 0..batch {
                let aw: Vec<i128> = a[bi * m * k..(bi + 1) * m * k].iter().map(|&x| i128::from(x) + i128::from(ao)).collect();
                let want_nt = model_mm(&aw, &transpose(&bt_w, n, k), m, k, n);
                let want_nn = model_mm(&aw, &b_w, m, k, n);
                for t in 0..m * n {
                    let rqm = |v: i128| floor_div(2 * (3 * v - 7) + 16, 32).clamp(0, 255);
                    prop_assert_eq!(i128::from(o_nt[bi * m * n + t]), rqm(want_nt[t]));
                    prop_assert_eq!(i128::from(o_nn[bi * m * n + t]), rqm(want_nn[t]));
                }
            }
        }

        #[test]
        fn gemm_matches_model(m in small_dim(), k in small_dim(), n in small_dim(), trans_b in any::<bool>(),
                              alpha in -3i32..4, beta in -3i32..4, c_kind in 0usize..4, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_i8(m * k);
            let b = g.vec_i8(k * n);
            let c_len = [0, 1, n, m * n][c_kind];
            let c = g.vec_i32(c_len, -1000, 1000);
            let p = GemmParams { dims: MatDims { m, k, n }, trans_b, alpha, beta };
            let mut out = vec![0i32; m * n];
            gemm_i32(&a, &b, if c_kind == 0 { None } else { Some(&c) }, &p, &mut out).unwrap();
            let bw = if trans_b { transpose(&wide(&b), n, k) } else { wide(&b) };
            let ab = model_mm(&wide(&a), &bw, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let cv = match c_kind { 0 => 0, 1 => c[0], 2 => c[j], _ => c[i * n + j] };
                    let want = i128::from(alpha) * ab[i * n + j] + i128::from(beta) * i128::from(cv);
                    prop_assert_eq!(i128::from(out[i * n + j]), want);
                }
            }
        }
    }
}
