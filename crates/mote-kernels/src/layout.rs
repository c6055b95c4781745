//! Data movement for generated code: transpose, strided slice, gather along an axis, and the
//! pieces of a concatenation. Shapes are passed as slices (rank at most [`MAX_RANK`]); tensors are
//! row-major. Generic over the element type: these kernels only copy.

use crate::KernelError;

/// Largest rank these kernels accept.
pub const MAX_RANK: usize = 6;

/// Row-major strides of `shape`, and its element count (`None` on overflow or rank > MAX_RANK).
fn strides(shape: &[usize]) -> Option<([usize; MAX_RANK], usize)> {
    if shape.len() > MAX_RANK {
        return None;
    }
    let mut s = [0usize; MAX_RANK];
    let mut n = 1usize;
    for (slot, &d) in s.iter_mut().zip(shape).rev() {
        *slot = n;
        n = n.checked_mul(d)?;
    }
    Some((s, n))
}

/// Advances a row-major multi-index over `shape`; false when it wraps to all zeros.
fn next_index(idx: &mut [usize; MAX_RANK], shape: &[usize]) -> bool {
    for i in (0..shape.len()).rev() {
        if let (Some(v), Some(&d)) = (idx.get_mut(i), shape.get(i)) {
            *v += 1;
            if *v < d {
                return true;
            }
            *v = 0;
        }
    }
    false
}

/// `out = x.permute(perm)`: output dim `i` is input dim `perm[i]`.
///
/// Errors: rank above [`MAX_RANK`], `perm` not a permutation of `0..rank`, lengths (`ShapeMismatch`).
pub fn transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize], out: &mut [T]) -> Result<(), KernelError> {
    let r = shape.len();
    let (in_strides, n) = strides(shape).ok_or(KernelError::ShapeMismatch)?;
    let mut seen = [false; MAX_RANK];
    for &p in perm {
        match seen.get_mut(p) {
            Some(s) if !*s && p < r => *s = true,
            _ => return Err(KernelError::ShapeMismatch),
        }
    }
    if perm.len() != r || x.len() != n || out.len() != n {
        return Err(KernelError::ShapeMismatch);
    }
    let mut out_shape = [0usize; MAX_RANK];
    let mut step = [0usize; MAX_RANK]; // input stride of each output dim
    for (i, &p) in perm.iter().enumerate() {
        if let (Some(o), Some(s), Some(&d), Some(&st)) =
            (out_shape.get_mut(i), step.get_mut(i), shape.get(p), in_strides.get(p))
        {
            *o = d;
            *s = st;
        }
    }
    if n == 0 {
        return Ok(());
    }
    // Rows of the innermost output dim: one index computation per row, then a strided copy.
    let Some(last) = r.checked_sub(1) else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v;
        }
        return Ok(());
    };
    let (row_len, row_step) = (out_shape.get(last).copied().unwrap_or(1), step.get(last).copied().unwrap_or(1));
    let outer_shape = out_shape.get(..last).unwrap_or(&[]);
    let mut idx = [0usize; MAX_RANK];
    for row in out.chunks_exact_mut(row_len.max(1)) {
        let base: usize = idx.iter().zip(&step).take(last).map(|(i, s)| i * s).sum();
        if row_step == 1 && row.len() >= 8 {
            // Contiguous input rows (the innermost dim stays innermost): a memcpy (shorter rows cost less
            // element by element than the call: TinyViT-Demo's rows of 4 on Cortex-M4).
            row.copy_from_slice(x.get(base..base + row.len()).ok_or(KernelError::ShapeMismatch)?);
        } else if let Some(src) = x.get(base..) {
            for (o, &v) in row.iter_mut().zip(src.iter().step_by(row_step.max(1))) {
                *o = v;
            }
        }
        next_index(&mut idx, outer_shape);
    }
    Ok(())
}

/// Strided slice: `out[i_0, .., i_r] = x[start_0 + i_0·step_0, ..]` for `out_shape`; steps may be
/// negative (then `start` is the first, highest index taken).
///
/// Errors: ranks differ or exceed [`MAX_RANK`], a step of 0, any index outside `x`, lengths
/// (`ShapeMismatch`).
pub fn slice<T: Copy>(
    x: &[T],
    shape: &[usize],
    starts: &[usize],
    steps: &[isize],
    out_shape: &[usize],
    out: &mut [T],
) -> Result<(), KernelError> {
    let r = shape.len();
    let (in_strides, n_in) = strides(shape).ok_or(KernelError::ShapeMismatch)?;
    let (_, n_out) = strides(out_shape).ok_or(KernelError::ShapeMismatch)?;
    if starts.len() != r || steps.len() != r || out_shape.len() != r || x.len() != n_in || out.len() != n_out {
        return Err(KernelError::ShapeMismatch);
    }
    // Every taken index must be inside its dim: check both ends of each axis.
    for (((&d, &s), &st), &o) in shape.iter().zip(starts).zip(steps).zip(out_shape) {
        if st == 0 {
            return Err(KernelError::ShapeMismatch);
        }
        if o == 0 {
            continue;
        }
        let span = st.checked_mul(o as isize - 1).ok_or(KernelError::ShapeMismatch)?;
        let last = (s as isize).checked_add(span);
        if s >= d || !last.is_some_and(|l| l >= 0 && (l as usize) < d) {
            return Err(KernelError::ShapeMismatch);
        }
    }
    if n_out == 0 {
        return Ok(());
    }
    let mut idx = [0usize; MAX_RANK];
    for o in out.iter_mut() {
        let src: isize = idx
            .iter()
            .zip(starts)
            .zip(steps)
            .zip(&in_strides)
            .map(|(((&i, &s), &st), &str)| (s as isize + i as isize * st) * str as isize)
            .sum();
        if let Some(&v) = x.get(src as usize) {
            *o = v;
        }
        next_index(&mut idx, out_shape);
    }
    Ok(())
}

/// Gather along one axis with constant indices: `x [outer, d, inner]` → `out [outer, k, inner]`,
/// `out[o, j, c] = x[o, indices[j], c]`.
///
/// Errors: an index `>= d` or lengths (`ShapeMismatch`).
pub fn gather_axis<T: Copy>(
    x: &[T],
    outer: usize,
    d: usize,
    inner: usize,
    indices: &[usize],
    out: &mut [T],
) -> Result<(), KernelError> {
    let in_len = outer.checked_mul(d).and_then(|v| v.checked_mul(inner));
    let out_len = outer.checked_mul(indices.len()).and_then(|v| v.checked_mul(inner));
    if in_len != Some(x.len()) || out_len != Some(out.len()) || indices.iter().any(|&i| i >= d) {
        return Err(KernelError::ShapeMismatch);
    }
    let mut dst = out.chunks_exact_mut(inner.max(1));
    for o in 0..outer {
        for &j in indices {
            let start = (o * d + j) * inner;
            if let (Some(row), Some(src)) = (dst.next(), x.get(start..start + inner)) {
                row.copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// One input of a concatenation: copies `x [outer, cols]` into columns `offset..offset+cols` of
/// `out [outer, out_cols]` (a concat along an axis, with `cols = d_i·inner`).
///
/// Errors: `offset + cols > out_cols` or lengths (`ShapeMismatch`).
pub fn concat_part<T: Copy>(
    x: &[T],
    outer: usize,
    cols: usize,
    out_cols: usize,
    offset: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    let fits = offset.checked_add(cols).is_some_and(|e| e <= out_cols);
    if !fits || outer.checked_mul(cols) != Some(x.len()) || outer.checked_mul(out_cols) != Some(out.len()) {
        return Err(KernelError::ShapeMismatch);
    }
    for o in 0..outer {
        let d = o * out_cols + offset;
        if let (Some(dst), Some(src)) = (out.get_mut(d..d + cols), x.get(o * cols..(o + 1) * cols)) {
            dst.copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn hand_computed() {
        // [2,3] transposed.
        let mut out = [0u8; 6];
        transpose(&[1, 2, 3, 4, 5, 6], &[2, 3], &[1, 0], &mut out).unwrap();
        assert_eq!(out, [1, 4, 2, 5, 3, 6]);
        // Reverse a row, take every other column.
        let mut out = [0i8; 2];
        slice(&[1, 2, 3, 4, 5, 6], &[1, 6], &[0, 5], &[1, -2], &[1, 3], &mut [0; 3]).unwrap();
        slice(&[1, 2, 3, 4, 5, 6], &[2, 3], &[1, 0], &[1, 2], &[1, 2], &mut out).unwrap();
        assert_eq!(out, [4, 6]);
        let mut out = [0i8; 4];
        gather_axis(&[1, 2, 3, 4, 5, 6], 2, 3, 1, &[2, 0], &mut out).unwrap();
        assert_eq!(out, [3, 1, 6, 4]);
        let mut out = [0i8; 6];
        concat_part(&[1, 2], 2, 1, 3, 2, &mut out).unwrap();
        concat_part(&[7, 8, 9, 10], 2, 2, 3, 0, &mut out).unwrap();
        assert_eq!(out, [7, 8, 1, 9, 10, 2]);
        assert_eq!(transpose(&[1], &[1], &[1], &mut [0]), Err(KernelError::ShapeMismatch));
        assert_eq!(slice(&[1, 2], &[2], &[1], &[1], &[2], &mut [0; 2]), Err(KernelError::ShapeMismatch));
        assert_eq!(gather_axis(&[1, 2], 1, 2, 1, &[2], &mut [0]), Err(KernelError::ShapeMismatch));
        assert_eq!(concat_part(&[1, 2], 1, 2, 3, 2, &mut [0; 3]), Err(KernelError::ShapeMismatch));
    }

    fn index_of(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    proptest! {
        #[test]
        fn transpose_matches_index_model(shape in proptest::collection::vec(1usize..5, 1..=6), seed in any::<u64>()) {
            let r = shape.len();
            let mut perm: Vec<usize> = (0..r).collect();
            let mut s = seed;
            for i in (1..r).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                perm.swap(i, (s >> 33) as usize % (i + 1));
            }
            let n: usize = shape.iter().product();
            let x: Vec<u16> = (0..n as u16).collect();
            let mut out = vec![0u16; n];
            transpose(&x, &shape, &perm, &mut out).unwrap();
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            for (k, &v) in out.iter().enumerate() {
                // Output multi-index → input multi-index.
                let mut rem = k;
                let mut oi = vec![0; r];
                for i in (0..r).rev() { oi[i] = rem % out_shape[i]; rem /= out_shape[i]; }
                let mut ii = vec![0; r];
                for i in 0..r { ii[perm[i]] = oi[i]; }
                prop_assert_eq!(v as usize, index_of(&ii, &shape));
            }
        }

        #[test]
        fn slice_matches_index_model(
            dims in proptest::collection::vec((1usize..6, 0usize..6, -2isize..=2, 1usize..4), 1..=3),
        ) {
            let shape: Vec<usize> = dims.iter().map(|d| d.0).collect();
            let starts: Vec<usize> = dims.iter().map(|d| d.1 % d.0).collect();
            let steps: Vec<isize> = dims.iter().map(|d| if d.2 == 0 { 1 } else { d.2 }).collect();
            // Longest output that stays inside each dim, capped by the drawn length.
            let out_shape: Vec<usize> = (0..shape.len()).map(|i| {
                let room = if steps[i] > 0 { (shape[i] - 1 - starts[i]) / steps[i] as usize } else { starts[i] / (-steps[i]) as usize };
                (room + 1).min(dims[i].3)
            }).collect();
            let n: usize = shape.iter().product();
            let x: Vec<u16> = (0..n as u16).collect();
            let mut out = vec![0u16; out_shape.iter().product()];
            slice(&x, &shape, &starts, &steps, &out_shape, &mut out).unwrap();
            for (k, &v) in out.iter().enumerate() {
                let mut rem = k;
                let mut ii = vec![0; shape.len()];
                for i in (0..shape.len()).rev() {
                    let o = rem % out_shape[i];
                    rem /= out_shape[i];
                    ii[i] = (starts[i] as isize + o as isize * steps[i]) as usize;
                }
                prop_assert_eq!(v as usize, index_of(&ii, &shape));
            }
        }
    }
}
