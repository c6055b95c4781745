//! Integer softmax along the last axis: Deeploy `iSoftmax` (I-BERT polynomial, SEMANTICS §3.7)
//! and `ITAMax` (shift-based exponential, §3.8).
//!
//! Layout: `x` is `[rows, row_len]` row-major (row contiguous); each row is normalized on its
//! own. Outputs are in the true-value domain, unsigned `0..=n_levels-1` as `u8` (Deeploy's
//! Generic C kernel stores `y - n/2` in int8 instead).

use core::num::{NonZeroU32, NonZeroU64};

use crate::KernelError;

/// Checks `[rows, row_len]` shapes of `x` and `out`.
fn check_rows(x: usize, out: usize, row_len: usize) -> Result<(), KernelError> {
    if row_len == 0 || x != out || x.checked_rem(row_len) != Some(0) {
        return Err(KernelError::ShapeMismatch);
    }
    Ok(())
}

/// Parameters of Deeploy `iSoftmax` (float-stored attributes read as integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ISoftmaxParams {
    /// `coeffA`, must be `>= 0` (1 in every Deeploy test).
    pub coeff_a: i32,
    /// `coeffB`.
    pub coeff_b: i32,
    /// `coeffC`, must be `>= 0`.
    pub coeff_c: i64,
    /// `log2` (ln 2 in input units), must be `>= 1`.
    pub log2: i32,
    /// Output levels `n`, in `2..=256`.
    pub n_levels: u32,
}

/// Deeploy `iSoftmax` (§3.7) per row, exact:
/// `d = max - x`, `z = floor(d / log2)`, `p = z·log2 - d`, `e = floor((A·(p+B)² + C) / 2^z)`,
/// `y = floor(e·(n-1) / Σe)`. No clamp of `z` (Deeploy C clamps to 31; equal on its tests).
///
/// Errors: shapes (`ShapeMismatch`); parameter ranges above, `A·B² + C = 0`, or parameters whose
/// polynomial could overflow `i64` over a row (`InvalidParam`).
pub fn isoftmax(x: &[i8], row_len: usize, p: &ISoftmaxParams, out: &mut [u8]) -> Result<(), KernelError> {
    check_rows(x.len(), out.len(), row_len)?;
    let log2 = u32::try_from(p.log2).ok().and_then(NonZeroU32::new).ok_or(KernelError::InvalidParam)?;
    if p.coeff_a < 0 || p.coeff_c < 0 || !(2..=256).contains(&p.n_levels) {
        return Err(KernelError::InvalidParam);
    }
    // Bound the polynomial over p in [-(log2-1), 0]: |p + B| <= m. All terms below are >= 0.
    let (a, b, c) = (i128::from(p.coeff_a), i128::from(p.coeff_b), i128::from(p.coeff_c));
    let m = b.abs().max((b - i128::from(p.log2) + 1).abs());
    let bound = a.max(1) * m * m + c;
    let scale = i128::try_from(row_len).unwrap_or(i128::MAX).max(i128::from(p.n_levels));
    if a * b * b + c == 0 || bound.saturating_mul(scale) > i128::from(i64::MAX) {
        return Err(KernelError::InvalidParam);
    }
    let (a, b, c) = (i64::from(p.coeff_a), i64::from(p.coeff_b), p.coeff_c);
    let levels = u64::from(p.n_levels - 1);
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        let max = xs.iter().copied().max().map_or(0, i32::from);
        let exp = |v: i8| -> u64 {
            let d = (max - i32::from(v)).unsigned_abs(); // max - v >= 0
            let z = d / log2;
            let pz = i64::from(z * log2.get()) - i64::from(d); // in (-log2, 0]
            let poly = a * (pz + b) * (pz + b) + c; // in [0, bound] by the check above
            poly.checked_shr(z).unwrap_or(0).unsigned_abs()
        };
        let sum: u64 = xs.iter().map(|&v| exp(v)).sum();
        // sum >= e(max) = A·B² + C > 0, and e <= sum keeps y <= n - 1.
        let Some(sum) = NonZeroU64::new(sum) else {
            continue;
        };
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = u8::try_from(exp(v) * levels / sum).unwrap_or(u8::MAX);
        }
    }
    Ok(())
}

/// Deeploy `ITAMax` (§3.8, `n_levels = 256`, B = 8) per row, exact:
/// `sh = (max - x + 16) >> 5`, `E = Σ 256 >> sh`, `inv = 65280 / E`, `y = inv >> sh`.
///
/// Errors: shapes (`ShapeMismatch`).
pub fn itamax(x: &[i8], row_len: usize, out: &mut [u8]) -> Result<(), KernelError> {
    check_rows(x.len(), out.len(), row_len)?;
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        let max = xs.iter().copied().max().map_or(0, i32::from);
        let shift = |v: i8| ((max - i32::from(v) + 16) >> 5).unsigned_abs(); // 0..=8
        let sum: u32 = xs.iter().map(|&v| 256u32 >> shift(v)).sum();
        // The max element contributes 256, so sum >= 256 and inv <= 255.
        let Some(sum) = NonZeroU32::new(sum) else {
            continue;
        };
        let inv = 65_280 / sum;
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = u8::try_from(inv >> shift(v)).unwrap_or(u8::MAX);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::float_arithmetic)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Straight transcription of §3.7 in i128 with floor divisions.
    fn model_isoftmax(row: &[i8], a: i128, b: i128, c: i128, log2: i128, n: i128) -> Vec<i128> {
        let max = row.iter().map(|&v| i128::from(v)).max().unwrap();
        let e: Vec<i128> = row
            .iter()
            .map(|&v| {
                let xt = i128::from(v) - max;
                let z = floor_div(-xt, log2);
                let p = xt + z * log2;
                floor_div(a * (p + b) * (p + b) + c, 1i128 << z.min(120))
            })
            .collect();
        let s: i128 = e.iter().sum();
        e.iter().map(|&ej| floor_div(ej * (n - 1), s)).collect()
    }

    /// §3.8 with quantlib's fractional form: y = floor(floor(n(n-1)/E) / 2^sh), sh = floor(d/32 + 1/2).
    fn model_itamax(row: &[i8]) -> Vec<i128> {
        let max = row.iter().map(|&v| i128::from(v)).max().unwrap();
        let sh: Vec<i128> = row.iter().map(|&v| floor_div(2 * (max - i128::from(v)) * 8 + 256, 512)).collect();
        let e: i128 = sh.iter().map(|&s| floor_div(256, 1 << s)).sum();
        let inv = floor_div(256 * 255, e);
        sh.iter().map(|&s| floor_div(inv, 1 << s)).collect()
    }

    #[test]
    fn hand_computed() {
        // All equal: e identical, y = floor(255 / 4) = 63.
        let p = ISoftmaxParams { coeff_a: 1, coeff_b: 30, coeff_c: 200, log2: 10, n_levels: 256 };
        let mut out = [0u8; 4];
        isoftmax(&[5, 5, 5, 5], 4, &p, &mut out).unwrap();
        assert_eq!(out, [63; 4]);
        // Row [0, -10]: e0 = 30²+200 = 1100; d=10: z=1, p=0, e1 = 1100>>1 = 550.
        // y0 = floor(1100·255/1650) = 170, y1 = 85.
        let mut out = [0u8; 2];
        isoftmax(&[0, -10], 2, &p, &mut out).unwrap();
        assert_eq!(out, [170, 85]);
        // ITAMax: [0, -32]: sh = 0, 1; E = 384; inv = 170; y = 170, 85.
        itamax(&[0, -32], 2, &mut out).unwrap();
        assert_eq!(out, [170, 85]);
        let mut out = [0u8; 3];
        itamax(&[127, -128, 127], 3, &mut out).unwrap();
        // sh = 0, (255+16)>>5 = 8, 0: E = 513; inv = 127; y = 127, 0, 127.
        assert_eq!(out, [127, 0, 127]);
    }

    #[test]
    fn errors() {
        let p = ISoftmaxParams { coeff_a: 1, coeff_b: 30, coeff_c: 200, log2: 10, n_levels: 256 };
        let mut out = [0u8; 4];
        assert_eq!(isoftmax(&[0; 4], 3, &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(isoftmax(&[0; 4], 0, &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(isoftmax(&[0; 3], 3, &p, &mut out), Err(KernelError::ShapeMismatch));
        for bad in [
            ISoftmaxParams { log2: 0, ..p },
            ISoftmaxParams { coeff_a: -1, ..p },
            ISoftmaxParams { coeff_c: -1, ..p },
            ISoftmaxParams { n_levels: 257, ..p },
            ISoftmaxParams { n_levels: 1, ..p },
            ISoftmaxParams { coeff_b: 0, coeff_c: 0, ..p },
            ISoftmaxParams { coeff_a: i32::MAX, coeff_b: i32::MAX, ..p },
        ] {
            assert_eq!(isoftmax(&[0; 4], 2, &bad, &mut out), Err(KernelError::InvalidParam));
        }
        assert_eq!(itamax(&[0; 4], 3, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(itamax(&[0; 4], 2, &mut out[..3]), Err(KernelError::ShapeMismatch));
    }

    fn params() -> impl Strategy<Value = ISoftmaxParams> {
        (0i32..4, -50i32..400, 0i64..200_000, 1i32..200, prop_oneof![Just(256u32), 2u32..=256]).prop_map(
            |(a, b, c, log2, n)| ISoftmaxParams {
                coeff_a: a,
                coeff_b: b,
                coeff_c: c.max(i64::from(a == 0 && b == 0)),
                log2,
                n_levels: n,
            },
        )
    }

    proptest! {
        #[test]
        fn isoftmax_matches_model(rows in 1usize..4, len in dim(), p in params(), seed in any::<u64>()) {
            prop_assume!(i128::from(p.coeff_a) * i128::from(p.coeff_b).pow(2) + i128::from(p.coeff_c) > 0);
            let mut g = Lcg(seed);
            let x = g.vec_i8(rows * len);
            let mut out = vec![0u8; x.len()];
            isoftmax(&x, len, &p, &mut out).unwrap();
            for r in 0..rows {
                let want = model_isoftmax(&x[r * len..(r + 1) * len], p.coeff_a.into(), p.coeff_b.into(),
                                          p.coeff_c.into(), p.log2.into(), p.n_levels.into());
                let got: Vec<i128> = out[r * len..(r + 1) * len].iter().map(|&v| i128::from(v)).collect();
                prop_assert_eq!(&got, &want);
                let s: i128 = got.iter().sum();
                prop_assert!(s < i128::from(p.n_levels) && s + len as i128 >= i128::from(p.n_levels));
            }
        }

        #[test]
        fn isoftmax_approximates_softmax(len in dim(), seed in any::<u64>()) {
            // I-BERT coefficients for input scale 1/16: exp(s·p) ≈ a(s·p + b)² + c.
            let s = 1.0 / 16.0;
            let (ai, bi, ci) = (0.3585f64, 1.353f64, 0.344f64);
            let p = ISoftmaxParams {
                coeff_a: 1,
                coeff_b: (bi / s).round() as i32,
                coeff_c: (ci / (ai * s * s)).round() as i64,
                log2: (core::f64::consts::LN_2 / s).round() as i32,
                n_levels: 256,
            };
            let mut g = Lcg(seed);
            let x = g.vec_i8(len);
            let mut out = vec![0u8; len];
            isoftmax(&x, len, &p, &mut out).unwrap();
            let max = x.iter().map(|&v| f64::from(v)).fold(f64::MIN, f64::max);
            let z: f64 = x.iter().map(|&v| ((f64::from(v) - max) * s).exp()).sum();
            for (&o, &v) in out.iter().zip(&x) {
                let want = ((f64::from(v) - max) * s).exp() / z * 255.0;
                prop_assert!((f64::from(o) - want).abs() <= 0.02 * 255.0 + 1.0, "got {o} want {want}");
            }
        }

        #[test]
        fn itamax_matches_model(rows in 1usize..4, len in dim(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(rows * len);
            let mut out = vec![0u8; x.len()];
            itamax(&x, len, &mut out).unwrap();
            for r in 0..rows {
                let want = model_itamax(&x[r * len..(r + 1) * len]);
                let got: Vec<i128> = out[r * len..(r + 1) * len].iter().map(|&v| i128::from(v)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
