//! Embedding gather: token ids select rows of a table (ONNX `Gather` on axis 0).

use crate::KernelError;

/// `out[t] = table[ids[t]]` for a row-major table `[rows, row_len]` (row contiguous).
///
/// Negative ids count from the end (ONNX). All ids are checked before anything is written:
/// an id outside `[-rows, rows)` gives `IndexOutOfRange`. `out` is `[ids.len(), row_len]`.
/// Errors: `row_len = 0`, table not a multiple of `row_len`, or wrong `out` length (`ShapeMismatch`).
pub fn gather_rows<T: Copy>(table: &[T], row_len: usize, ids: &[i32], out: &mut [T]) -> Result<(), KernelError> {
    if row_len == 0 || table.len().checked_rem(row_len) != Some(0) || ids.len().checked_mul(row_len) != Some(out.len())
    {
        return Err(KernelError::ShapeMismatch);
    }
    let rows = table.len().checked_div(row_len).unwrap_or(0);
    let row_of = |id: i32| -> Option<usize> {
        let r = if id < 0 {
            rows.checked_sub(usize::try_from(id.unsigned_abs()).ok()?)?
        } else {
            usize::try_from(id).ok()?
        };
        (r < rows).then_some(r)
    };
    if ids.iter().any(|&id| row_of(id).is_none()) {
        return Err(KernelError::IndexOutOfRange);
    }
    for (dst, &id) in out.chunks_exact_mut(row_len).zip(ids) {
        // row < rows, so the range lies inside the table.
        let start = row_of(id).unwrap_or(0) * row_len;
        let src = table.get(start..start + row_len).unwrap_or(&[]);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;

    #[test]
    fn hand_computed() {
        let table = [1i8, 2, 3, 4, 5, 6];
        let mut out = [0i8; 6];
        gather_rows(&table, 2, &[2, 0, -1], &mut out).unwrap();
        assert_eq!(out, [5, 6, 1, 2, 5, 6]);
    }

    #[test]
    fn errors() {
        let table = [1i8, 2, 3, 4, 5, 6];
        let mut out = [9i8; 4];
        assert_eq!(gather_rows(&table, 2, &[0, 3], &mut out), Err(KernelError::IndexOutOfRange));
        assert_eq!(gather_rows(&table, 2, &[-4, 0], &mut out), Err(KernelError::IndexOutOfRange));
        assert_eq!(out, [9; 4], "nothing written on error");
        assert_eq!(gather_rows(&table, 4, &[0], &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(gather_rows(&table, 0, &[0], &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(gather_rows(&table, 2, &[0], &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(gather_rows::<i8>(&[], 2, &[0, 0], &mut out), Err(KernelError::IndexOutOfRange));
    }

    proptest! {
        #[test]
        fn gather_matches_model(rows in dim(), len in dim(), ids in proptest::collection::vec(-70i32..70, 0..20), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let table = g.vec_i8(rows * len);
            let mut out = vec![0i8; ids.len() * len];
            let res = gather_rows(&table, len, &ids, &mut out);
            let r = rows as i32;
            if ids.iter().all(|&i| i >= -r && i < r) {
                prop_assert_eq!(res, Ok(()));
                for (t, &id) in ids.iter().enumerate() {
                    let row = id.rem_euclid(r) as usize;
                    prop_assert_eq!(&out[t * len..(t + 1) * len], &table[row * len..(row + 1) * len]);
                }
            } else {
                prop_assert_eq!(res, Err(KernelError::IndexOutOfRange));
                prop_assert!(out.iter().all(|&v| v == 0));
            }
        }
    }
}
