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
    check_isoftmax(row_len, p)?;
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        if let Some(y) = isoftmax_row(xs, p) {
            for (o, &v) in os.iter_mut().zip(xs) {
                *o = y(v);
            }
        }
    }
    Ok(())
}

/// The parameter checks of [`isoftmax`] for rows of `row_len`.
pub(crate) fn check_isoftmax(row_len: usize, p: &ISoftmaxParams) -> Result<(), KernelError> {
    if p.log2 < 1 || p.coeff_a < 0 || p.coeff_c < 0 || !(2..=256).contains(&p.n_levels) {
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
    Ok(())
}

/// The outputs of one row `xs` of [`isoftmax`] (parameters checked) as a function of its inputs; `None` for a
/// row whose exponentials sum to 0 (impossible with checked parameters).
#[inline]
fn isoftmax_row(xs: &[i8], p: &ISoftmaxParams) -> Option<impl Fn(i8) -> u8> {
    let log2 = NonZeroU32::new(p.log2.unsigned_abs())?;
    let (a, b, c) = (i64::from(p.coeff_a), i64::from(p.coeff_b), p.coeff_c);
    let levels = u64::from(p.n_levels - 1);
    let max = xs.iter().copied().max().map_or(0, i32::from);
    let exp = move |v: i8| -> u64 {
        let d = (max - i32::from(v)).unsigned_abs(); // max - v >= 0
        let z = d / log2;
        let pz = i64::from(z * log2.get()) - i64::from(d); // in (-log2, 0]
        let poly = a * (pz + b) * (pz + b) + c; // in [0, bound] by the check
        poly.checked_shr(z).unwrap_or(0).unsigned_abs()
    };
    // sum >= e(max) = A·B² + C > 0, and e <= sum keeps y <= n - 1.
    let sum = NonZeroU64::new(xs.iter().map(|&v| exp(v)).sum())?;
    Some(move |v: i8| u8::try_from(exp(v) * levels / sum).unwrap_or(u8::MAX))
}

/// Deeploy `ITAMax` (§3.8, `n_levels = 256`, B = 8) per row, exact:
/// `sh = (max - x + 16) >> 5`, `E = Σ 256 >> sh`, `inv = 65280 / E`, `y = inv >> sh`.
///
/// Errors: shapes (`ShapeMismatch`).
pub fn itamax(x: &[i8], row_len: usize, out: &mut [u8]) -> Result<(), KernelError> {
    check_rows(x.len(), out.len(), row_len)?;
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        let y = itamax_row(xs);
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = y(v);
        }
    }
    Ok(())
}

/// The outputs of one row `xs` of [`itamax`] as a function of its inputs.
#[inline]
fn itamax_row(xs: &[i8]) -> impl Fn(i8) -> u8 {
    let max = xs.iter().copied().max().map_or(0, i32::from);
    let shift = move |v: i8| ((max - i32::from(v) + 16) >> 5).unsigned_abs(); // 0..=8
                                                                              // The max element contributes 256, so sum >= 256 and inv <= 255.
    let sum: u32 = xs.iter().map(|&v| 256u32 >> shift(v)).sum();
    let inv = 65_280 / sum.max(1);
    move |v: i8| u8::try_from(inv >> shift(v)).unwrap_or(u8::MAX)
}

/// A Deeploy softmax ([`itamax`], or [`isoftmax`] with checked parameters) in place over the rows of `buf`, each
/// output `y` stored as `y - 128` (the int8 form of `0..=255`, zero point -128): the attention kernel's
/// probabilities.
pub(crate) fn deeploy_softmax_rows_i8(buf: &mut [i8], row_len: usize, isoftmax: Option<&ISoftmaxParams>) {
    let centre = |y: u8| (i32::from(y) - 128) as i8;
    for xs in buf.chunks_exact_mut(row_len) {
        match isoftmax {
            None => {
                let y = itamax_row(xs);
                xs.iter_mut().for_each(|v| *v = centre(y(*v)));
            }
            Some(p) => {
                if let Some(y) = isoftmax_row(xs, p) {
                    xs.iter_mut().for_each(|v| *v = centre(y(*v)));
                }
            }
        }
    }
}

/// Parameters of mote's int8 softmax ([`softmax_i8`]), built on the host from the scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxI8Params<'a> {
    /// `exp[d] = round(2^15 · exp(-s_in · d))` for `d = max - x` in `0..=255`; `exp[0]` must be
    /// the largest entry and non-zero (it is 2^15 from the host builder).
    pub exp: &'a [u16; 256],
    /// `round(2^16 / s_out)`, at least 1.
    pub out_recip: u32,
    /// Output zero point (int8).
    pub out_zero_point: i32,
}

/// An optional mask for [`softmax_i8`]: `allowed[r % rows · row_len + j]` says whether column `j`
/// of row `r` takes part (e.g. a causal `[S, S]` mask shared by every head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMask<'a> {
    /// `[rows, row_len]` flags, row-major.
    pub allowed: &'a [bool],
    /// Number of mask rows; score row `r` uses mask row `r % rows`.
    pub rows: usize,
}

/// mote's int8 softmax per row, exact integer arithmetic from a 256-entry exponential table:
/// `e_j = exp[max - x_j]` (0 where masked), `S = Σe`, `k = floor(out_recip·2^16 / S)`,
/// `y_j = clamp(floor((e_j·k + 2^31) / 2^32) + zp, -128, 127)`; a row whose entries are all
/// masked gives `zp`. `max` is over the allowed entries.
///
/// `k` is computed once per row (one 64-bit division), each element costs a multiply and a shift.
/// Errors: shapes, or a mask whose length is not `rows · row_len` (`ShapeMismatch`);
/// `exp[0] = 0`, `exp[0]` not the largest entry, `out_recip = 0` (`InvalidParam`).
pub fn softmax_i8(
    x: &[i8],
    row_len: usize,
    mask: Option<RowMask<'_>>,
    p: &SoftmaxI8Params<'_>,
    out: &mut [i8],
) -> Result<(), KernelError> {
    check_rows(x.len(), out.len(), row_len)?;
    check_softmax_i8(row_len, mask, p)?;
    out.copy_from_slice(x);
    match mask {
        None => softmax_i8_rows(out, row_len, p),
        Some(m) => masked_softmax_i8_rows(out, (row_len, row_len), m, 0, p),
    }
    Ok(())
}

/// The parameter and mask checks of [`softmax_i8`].
pub(crate) fn check_softmax_i8(
    row_len: usize,
    mask: Option<RowMask<'_>>,
    p: &SoftmaxI8Params<'_>,
) -> Result<(), KernelError> {
    if let Some(m) = mask {
        if m.rows == 0 || m.rows.checked_mul(row_len) != Some(m.allowed.len()) {
            return Err(KernelError::ShapeMismatch);
        }
    }
    if p.exp[0] == 0 || p.exp.iter().any(|&e| e > p.exp[0]) || p.out_recip == 0 {
        return Err(KernelError::InvalidParam);
    }
    Ok(())
}

/// [`softmax_i8`] without a mask, in place over `buf` (arguments checked): the attention map's rows, every
/// transformer's hot loop, compiled without the mask test. Inlined: in the attention kernel the rows then take
/// fewer instructions on Cortex-M (EEGFormer-shaped block: 80K of 5.4M).
#[inline(always)]
pub(crate) fn softmax_i8_rows(buf: &mut [i8], row_len: usize, p: &SoftmaxI8Params<'_>) {
    for xs in buf.chunks_exact_mut(row_len) {
        softmax_i8_row(xs, p, |_| true);
    }
}

/// [`softmax_i8`] with `mask`, in place over `buf` (arguments checked), whose row `r` is row `first_row + r` of
/// the masked tensor (attention normalizes one block of score rows at a time) and holds the first `row_len`
/// columns of the mask's rows of `mask_row_len` (attention leaves out the columns that every row of the block
/// masks). Each element is read before it is overwritten.
#[inline(never)]
pub(crate) fn masked_softmax_i8_rows(
    buf: &mut [i8],
    (row_len, mask_row_len): (usize, usize),
    mask: RowMask<'_>,
    first_row: usize,
    p: &SoftmaxI8Params<'_>,
) {
    for (r, xs) in buf.chunks_exact_mut(row_len).enumerate() {
        let start = ((first_row + r) % mask.rows) * mask_row_len;
        let allowed = mask.allowed.get(start..start + row_len).unwrap_or(&[]);
        softmax_i8_row(xs, p, |j| allowed.get(j).copied().unwrap_or(false));
    }
}

/// One row of [`softmax_i8_rows`] and [`masked_softmax_i8_rows`], `ok(j)` saying whether entry `j` takes part;
/// 32-bit sums and products where they cannot overflow.
#[inline]
fn softmax_i8_row(xs: &mut [i8], p: &SoftmaxI8Params<'_>, ok: impl Fn(usize) -> bool) {
    let zp = p.out_zero_point;
    let Some(max) = xs.iter().enumerate().filter(|&(j, _)| ok(j)).map(|(_, &v)| i32::from(v)).max() else {
        xs.fill(zp.max(-128).min(127) as i8);
        return;
    };
    // max - v is in 0..=255 for allowed entries: the mask keeps the index in the table without changing it.
    let e = |j: usize, v: i8| -> u32 {
        if ok(j) {
            u32::from(p.exp.get(((max - i32::from(v)) & 0xFF) as usize).copied().unwrap_or(0))
        } else {
            0
        }
    };
    // Each e <= 2^16 - 1, so up to 2^16 of them sum in u32.
    let sum: u64 = if xs.len() <= 1 << 16 {
        u64::from(xs.iter().enumerate().map(|(j, &v)| e(j, v)).fold(0u32, u32::wrapping_add))
    } else {
        xs.iter().enumerate().map(|(j, &v)| u64::from(e(j, v))).sum()
    };
    // sum >= exp[0] > 0 (the max entry contributes exp[0]); k < 2^48 and e·k + 2^31 < 2^64.
    let Some(sum) = NonZeroU64::new(sum) else { return };
    let k = (u64::from(p.out_recip) << 16) / sum;
    if let Ok(k) = u32::try_from(k) {
        // The usual case (k < 2^32): one 32x32 -> 64-bit multiply per element, and q < 2^16.
        for (j, o) in xs.iter_mut().enumerate() {
            let q = (u64::from(e(j, *o)) * u64::from(k) + (1 << 31)) >> 32;
            *o = (q as i32).saturating_add(zp).max(-128).min(127) as i8;
        }
        return;
    }
    for (j, o) in xs.iter_mut().enumerate() {
        let q = (u64::from(e(j, *o)) * k + (1 << 31)) >> 32;
        let y = i32::try_from(q).unwrap_or(i32::MAX).saturating_add(zp);
        *o = y.max(-128).min(127) as i8;
    }
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

    /// `softmax_i8` in i128, straight from its doc comment.
    fn model_softmax_i8(row: &[i8], allowed: &[bool], exp: &[u16; 256], recip: u32, zp: i128) -> Vec<i128> {
        let Some(max) = row.iter().zip(allowed).filter(|(_, &a)| a).map(|(&v, _)| i128::from(v)).max() else {
            return vec![zp.clamp(-128, 127); row.len()];
        };
        let e: Vec<i128> = row
            .iter()
            .zip(allowed)
            .map(|(&v, &a)| if a { i128::from(exp[(max - i128::from(v)) as usize]) } else { 0 })
            .collect();
        let s: i128 = e.iter().sum();
        let k = floor_div(i128::from(recip) << 16, s);
        e.iter().map(|&ej| (floor_div(ej * k + (1 << 31), 1 << 32) + zp).clamp(-128, 127)).collect()
    }

    fn exp_table(scale: f64) -> [u16; 256] {
        core::array::from_fn(|d| ((-scale * d as f64).exp() * 32768.0).round() as u16)
    }

    #[test]
    fn softmax_i8_hand_computed() {
        // Two equal logits: each 1/2 → 0.5 / (1/256) = 128 - 128 = 0 with zp = -128.
        let exp = exp_table(0.1);
        let p = SoftmaxI8Params { exp: &exp, out_recip: 256 << 16, out_zero_point: -128 };
        let mut out = [0i8; 2];
        softmax_i8(&[3, 3], 2, None, &p, &mut out).unwrap();
        assert_eq!(out, [0, 0]);
        // Causal mask on a 2x2 score map: row 0 sees only column 0 (probability 1 → saturates at 127).
        let allowed = [true, false, true, true];
        let mut out = [0i8; 4];
        softmax_i8(&[5, 100, 3, 3], 2, Some(RowMask { allowed: &allowed, rows: 2 }), &p, &mut out).unwrap();
        assert_eq!(out, [127, -128, 0, 0]);
        // Everything masked: the zero point.
        let none = [false, false];
        softmax_i8(&[1, 2], 2, Some(RowMask { allowed: &none, rows: 1 }), &p, &mut out[..2]).unwrap();
        assert_eq!(out[..2], [-128, -128]);
        let bad = SoftmaxI8Params { out_recip: 0, ..p };
        assert_eq!(softmax_i8(&[1, 2], 2, None, &bad, &mut out[..2]), Err(KernelError::InvalidParam));
        assert_eq!(softmax_i8(&[1, 2, 3], 2, None, &p, &mut out[..3]), Err(KernelError::ShapeMismatch));
    }

    proptest! {
        #[test]
        fn softmax_i8_matches_model(
            (row_len, x) in dim().prop_flat_map(|n| (Just(n), proptest::collection::vec(any::<i8>(), n * 3))),
            scale in 0.001f64..2.0,
            recip in 1u32..(1 << 24),
            zp in -128i32..=127,
            masked in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let exp = exp_table(scale);
            let mut rng = Lcg(seed);
            let allowed: Vec<bool> = (0..row_len * 3).map(|_| !masked || rng.next_u64() % 3 != 0).collect();
            let p = SoftmaxI8Params { exp: &exp, out_recip: recip, out_zero_point: zp };
            let mut out = vec![0i8; x.len()];
            let mask = masked.then_some(RowMask { allowed: &allowed, rows: 3 });
            softmax_i8(&x, row_len, mask, &p, &mut out).unwrap();
            for r in 0..3 {
                let span = r * row_len..(r + 1) * row_len;
                let want = model_softmax_i8(&x[span.clone()], &allowed[span.clone()].iter().map(|&a| a || !masked).collect::<Vec<_>>(), &exp, recip, i128::from(zp));
                let got: Vec<i128> = out[span].iter().map(|&v| i128::from(v)).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn softmax_i8_is_close_to_float(row in proptest::collection::vec(any::<i8>(), 1..70), scale in 0.01f64..0.5) {
            // Output scale 1/256, zero point -128: |y - softmax| <= 1 LSB plus the table rounding.
            let exp = exp_table(scale);
            let p = SoftmaxI8Params { exp: &exp, out_recip: 256 << 16, out_zero_point: -128 };
            let mut out = vec![0i8; row.len()];
            softmax_i8(&row, row.len(), None, &p, &mut out).unwrap();
            let max = row.iter().map(|&v| f64::from(v)).fold(f64::MIN, f64::max);
            let e: Vec<f64> = row.iter().map(|&v| (scale * (f64::from(v) - max)).exp()).collect();
            let s: f64 = e.iter().sum();
            for (o, ej) in out.iter().zip(&e) {
                let want = (ej / s * 256.0 - 128.0).min(127.0);
                prop_assert!((f64::from(*o) - want).abs() <= 1.5, "got {} want {}", o, want);
            }
        }
    }
}
