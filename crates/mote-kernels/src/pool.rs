//! Pooling and mean reduction: 2-D max/average pooling (NCHW, ONNX `MaxPool`/`AveragePool`
//! without `ceil_mode` or dilation) and Deeploy `IntegerMean` (SEMANTICS §3.14).

use crate::conv::conv_output_dim;
use crate::elem::IntElem;
use crate::KernelError;

/// Shape and hyper-parameters of a 2-D pooling over NCHW `[batch, channels, in_h, in_w]`.
///
/// Output is NCHW `[batch, channels, out_h, out_w]`. Each pad must be smaller than the kernel
/// along its axis, so that every window holds at least one real element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// N.
    pub batch: usize,
    /// C.
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Window height.
    pub kernel_h: usize,
    /// Window width.
    pub kernel_w: usize,
    /// Vertical stride (>= 1).
    pub stride_h: usize,
    /// Horizontal stride (>= 1).
    pub stride_w: usize,
    /// Padding rows above.
    pub pad_top: usize,
    /// Padding columns on the left.
    pub pad_left: usize,
    /// Padding rows below.
    pub pad_bottom: usize,
    /// Padding columns on the right.
    pub pad_right: usize,
}

impl Pool2dParams {
    /// Window `kernel_h × kernel_w` with stride 1 and no padding.
    pub const fn new(
        batch: usize,
        channels: usize,
        in_h: usize,
        in_w: usize,
        kernel_h: usize,
        kernel_w: usize,
    ) -> Self {
        Self {
            batch,
            channels,
            in_h,
            in_w,
            kernel_h,
            kernel_w,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
        }
    }

    /// `(out_h, out_w) = (floor((in + pads - kernel) / stride) + 1, ...)`.
    ///
    /// Errors (`InvalidParam`): zero kernel/stride, kernel larger than the padded input, or a
    /// pad `>=` the kernel.
    pub fn output_hw(&self) -> Result<(usize, usize), KernelError> {
        let pads_ok =
            self.pad_top.max(self.pad_bottom) < self.kernel_h && self.pad_left.max(self.pad_right) < self.kernel_w;
        if !pads_ok {
            return Err(KernelError::InvalidParam);
        }
        let oh = conv_output_dim(self.in_h, self.kernel_h, self.stride_h, 1, self.pad_top, self.pad_bottom)?;
        let ow = conv_output_dim(self.in_w, self.kernel_w, self.stride_w, 1, self.pad_left, self.pad_right)?;
        Ok((oh, ow))
    }

    fn validate(&self, x: usize, out: usize) -> Result<(usize, usize), KernelError> {
        let (oh, ow) = self.output_hw()?;
        let planes = self.batch.checked_mul(self.channels);
        let x_len = planes.and_then(|p| p.checked_mul(self.in_h)?.checked_mul(self.in_w));
        let o_len = planes.and_then(|p| p.checked_mul(oh)?.checked_mul(ow));
        if x_len == Some(x) && o_len == Some(out) {
            Ok((oh, ow))
        } else {
            Err(KernelError::ShapeMismatch)
        }
    }

    /// Calls `emit(out_index, window_sum, real_count)` per output element.
    fn for_each_window<T: IntElem>(&self, x: &[T], oh: usize, ow: usize, mut emit: impl FnMut(usize, i64, i64)) {
        let (h, w) = (self.in_h, self.in_w);
        let mut idx = 0;
        for plane in 0..self.batch * self.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut sum, mut count) = (0i64, 0i64);
                    for ky in 0..self.kernel_h {
                        let Some(iy) = (oy * self.stride_h + ky).checked_sub(self.pad_top).filter(|&y| y < h) else {
                            continue;
                        };
                        for kx in 0..self.kernel_w {
                            let Some(ix) = (ox * self.stride_w + kx).checked_sub(self.pad_left).filter(|&v| v < w)
                            else {
                                continue;
                            };
                            if let Some(v) = x.get((plane * h + iy) * w + ix) {
                                sum += i64::from(v.to_i32());
                                count += 1;
                            }
                        }
                    }
                    emit(idx, sum, count);
                    idx += 1;
                }
            }
        }
    }
}

/// Max pooling; padding never wins (acts as −∞). Works on any [`IntElem`] (i8, u8, ...).
///
/// Errors: lengths (`ShapeMismatch`), hyper-parameters (`InvalidParam`, see [`Pool2dParams::output_hw`]).
pub fn maxpool2d<T: IntElem>(x: &[T], p: &Pool2dParams, out: &mut [T]) -> Result<(), KernelError> {
    let (oh, ow) = p.validate(x.len(), out.len())?;
    if p.in_h * p.in_w == 0 || oh * ow == 0 {
        out.fill(T::from_i32_sat(i32::MIN)); // windows without a real element
        return Ok(());
    }
    // The common windows as constants, so that their loops unroll even where the call's parameters are not
    // constants (a model with two poolings, e.g. a tokenizer in row blocks: 4x fewer instructions).
    match (p.kernel_h, p.kernel_w) {
        (2, 2) => max_windows::<T, 2, 2>(x, p, (oh, ow), out),
        (3, 3) => max_windows::<T, 3, 3>(x, p, (oh, ow), out),
        _ => max_windows::<T, 0, 0>(x, p, (oh, ow), out),
    }
    Ok(())
}

/// The maxima of [`maxpool2d`] with a `KH × KW` window (0: the parameters'), over non-empty planes.
fn max_windows<T: IntElem, const KH: usize, const KW: usize>(
    x: &[T],
    p: &Pool2dParams,
    (oh, ow): (usize, usize),
    out: &mut [T],
) {
    let (kh, kw) = if KH == 0 { (p.kernel_h, p.kernel_w) } else { (KH, KW) };
    let (h, w) = (p.in_h, p.in_w);
    for (plane, plane_out) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, out_row) in plane_out.chunks_exact_mut(ow).enumerate() {
            let y0 = (oy * p.stride_h).checked_sub(p.pad_top).filter(|&y| y + kh <= h);
            for (ox, o) in out_row.iter_mut().enumerate() {
                let mut max = i32::MIN;
                let x0 = (ox * p.stride_w).checked_sub(p.pad_left).filter(|&v| v + kw <= w);
                if let (Some(y0), Some(x0)) = (y0, x0) {
                    // A window inside the input: one slice per row.
                    for ky in 0..kh {
                        let at = (y0 + ky) * w + x0;
                        for v in plane.get(at..at + kw).unwrap_or_default() {
                            max = max.max(v.to_i32());
                        }
                    }
                    *o = T::from_i32_sat(max);
                    continue;
                }
                for ky in 0..kh {
                    let Some(iy) = (oy * p.stride_h + ky).checked_sub(p.pad_top).filter(|&y| y < h) else { continue };
                    let row = plane.get(iy * w..(iy + 1) * w).unwrap_or_default();
                    for kx in 0..kw {
                        if let Some(v) = (ox * p.stride_w + kx).checked_sub(p.pad_left).and_then(|ix| row.get(ix)) {
                            max = max.max(v.to_i32());
                        }
                    }
                }
                *o = T::from_i32_sat(max);
            }
        }
    }
}

/// `sum / count` rounded to nearest, halves away from zero (TFLite / CMSIS-NN `avgpool_s8`).
fn div_round_away(sum: i64, count: i64) -> i64 {
    let half = count / 2;
    let mag = (sum.abs() + half).checked_div(count).unwrap_or(0);
    if sum < 0 {
        -mag
    } else {
        mag
    }
}

/// Average pooling, rounded to nearest with halves away from zero (TFLite / CMSIS-NN rule).
///
/// The divisor counts only real elements, or the whole window if `count_include_pad` (padding
/// then adds zeros). Errors as for [`maxpool2d`].
pub fn avgpool2d<T: IntElem>(
    x: &[T],
    p: &Pool2dParams,
    count_include_pad: bool,
    out: &mut [T],
) -> Result<(), KernelError> {
    let (oh, ow) = p.validate(x.len(), out.len())?;
    let full =
        p.kernel_h.checked_mul(p.kernel_w).and_then(|k| i64::try_from(k).ok()).ok_or(KernelError::InvalidParam)?;
    p.for_each_window(x, oh, ow, |idx, sum, count| {
        let n = if count_include_pad { full } else { count };
        if let Some(o) = out.get_mut(idx) {
            *o = T::from_i32_sat(i32::try_from(div_round_away(sum, n)).unwrap_or(0));
        }
    });
    Ok(())
}

/// Deeploy `IntegerMean` (§3.14): `y = floor(Σx / n + 1/2)` over the middle axis of
/// `x [outer, n, inner]` into `out [outer, inner]` (contiguous reduced axes = one axis of size `n`).
///
/// Errors: lengths (`ShapeMismatch`); `n = 0` or `n > 2^31` (`InvalidParam`).
pub fn integer_mean<T: IntElem>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    if n == 0 || n > 1 << 31 {
        return Err(KernelError::InvalidParam);
    }
    let o_len = outer.checked_mul(inner);
    if o_len.and_then(|v| v.checked_mul(n)) != Some(x.len()) || o_len != Some(out.len()) {
        return Err(KernelError::ShapeMismatch);
    }
    let count = n as i64; // n <= 2^31, so |Σx| <= 2^62
    for o in 0..outer {
        for c in 0..inner {
            let sum: i64 = (0..n).filter_map(|r| x.get((o * n + r) * inner + c)).map(|v| i64::from(v.to_i32())).sum();
            // floor(sum/n + 1/2) = q + [2r >= n] with q, r the floor quotient/remainder.
            let q = sum.checked_div_euclid(count).unwrap_or(0);
            let r = sum.checked_rem_euclid(count).unwrap_or(0);
            let y = q + i64::from(2 * r >= count);
            if let Some(slot) = out.get_mut(o * inner + c) {
                *slot = T::from_i32_sat(i32::try_from(y).unwrap_or(0));
            }
        }
    }
    Ok(())
}

/// Requantized mean (TFLite int8 `MEAN` / global average pooling): over the middle axis of
/// `x [outer, n, inner]`, `y = rq(Σ (x + input_offset))` into `out [outer, inner]`, where `rq`
/// carries the `s_in / (n·s_out)` multiplier. The sum is exact for `n < 2^23`.
///
/// Errors: lengths (`ShapeMismatch`); `n = 0` or `n >= 2^23`, or bounds outside `T` (`InvalidParam`).
pub fn mean_requant<T: IntElem>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    input_offset: i32,
    rq: &crate::requant::FixedPointRequant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    if n == 0 || n >= 1 << 23 || !(-256..=256).contains(&input_offset) {
        return Err(KernelError::InvalidParam);
    }
    let (lo, hi) = rq.bounds();
    crate::elem::check_range::<T>(lo, hi)?;
    let o_len = outer.checked_mul(inner);
    if o_len.and_then(|v| v.checked_mul(n)) != Some(x.len()) || o_len != Some(out.len()) {
        return Err(KernelError::ShapeMismatch);
    }
    for o in 0..outer {
        for c in 0..inner {
            // |x + offset| <= 511 and n < 2^23: the sum fits i32.
            let sum: i32 =
                (0..n).filter_map(|r| x.get((o * n + r) * inner + c)).map(|v| v.to_i32() + input_offset).sum();
            if let Some(slot) = out.get_mut(o * inner + c) {
                *slot = T::from_i32_sat(rq.apply(sum, 0));
            }
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

    /// Windows of real elements, enumerated with signed coordinates.
    fn windows(p: &Pool2dParams) -> Vec<Vec<Option<usize>>> {
        let (oh, ow) = p.output_hw().unwrap();
        let mut res = Vec::new();
        for plane in 0..p.batch * p.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut win = Vec::new();
                    for ky in 0..p.kernel_h {
                        for kx in 0..p.kernel_w {
                            let y = (oy * p.stride_h + ky) as isize - p.pad_top as isize;
                            let x = (ox * p.stride_w + kx) as isize - p.pad_left as isize;
                            let inside = y >= 0 && x >= 0 && (y as usize) < p.in_h && (x as usize) < p.in_w;
                            win.push(inside.then(|| (plane * p.in_h + y as usize) * p.in_w + x as usize));
                        }
                    }
                    res.push(win);
                }
            }
        }
        res
    }

    #[test]
    fn hand_computed() {
        // 1x1x3x3, k=3, s=2, pad 1 all round -> 2x2 windows.
        let x: Vec<i8> = vec![1, -2, 3, -4, 5, -6, 7, -8, 9];
        let mut p = Pool2dParams::new(1, 1, 3, 3, 3, 3);
        p.stride_h = 2;
        p.stride_w = 2;
        p.pad_top = 1;
        p.pad_left = 1;
        p.pad_bottom = 1;
        p.pad_right = 1;
        let mut out = [0i8; 4];
        maxpool2d(&x, &p, &mut out).unwrap();
        assert_eq!(out, [5, 5, 7, 9]);
        // top-left window: {1,-2,-4,5} sum 0 -> 0; top-right {-2,3,5,-6} = 0; bottom-left {-4,5,7,-8} = 0.
        avgpool2d(&x, &p, false, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0]);
        // Halves away from zero: [1, 2] -> 1.5 -> 2 ; [-1, -2] -> -1.5 -> -2 ; [-1, 2] -> 0.5 -> 1.
        let p = Pool2dParams::new(3, 1, 1, 2, 1, 2);
        let mut o = [0i8; 3];
        avgpool2d(&[1i8, 2, -1, -2, -1, 2], &p, false, &mut o).unwrap();
        assert_eq!(o, [2, -2, 1]);
        // count_include_pad: window [pad, 3] -> 3/2 = 1.5 -> 2 vs 3/1.
        let mut p = Pool2dParams::new(1, 1, 1, 1, 1, 2);
        p.pad_left = 1;
        let mut o1 = [0u8; 1];
        avgpool2d(&[3u8], &p, true, &mut o1).unwrap();
        assert_eq!(o1, [2]);
        avgpool2d(&[3u8], &p, false, &mut o1).unwrap();
        assert_eq!(o1, [3]);
        // IntegerMean: [2, 3] over n = 2 -> 2.5 -> 3 ; [-2, -3] -> -2.5 -> -2 (half up).
        let mut m = [0i8; 2];
        integer_mean(&[2i8, -2, 3, -3], 1, 2, 2, &mut m).unwrap();
        assert_eq!(m, [3, -2]);
    }

    #[test]
    fn errors() {
        let p = Pool2dParams::new(1, 2, 3, 3, 2, 2);
        let mut out = [0i8; 8];
        assert!(maxpool2d(&[0i8; 18], &p, &mut out).is_ok());
        assert_eq!(maxpool2d(&[0i8; 17], &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(maxpool2d(&[0i8; 18], &p, &mut out[..7]), Err(KernelError::ShapeMismatch));
        for bad in [
            Pool2dParams { pad_top: 2, ..p },
            Pool2dParams { stride_w: 0, ..p },
            Pool2dParams { kernel_h: 4, ..p },
            Pool2dParams { kernel_w: 0, ..p },
        ] {
            assert_eq!(avgpool2d(&[0i8; 18], &bad, false, &mut out), Err(KernelError::InvalidParam));
        }
        let mut m = [0i8; 2];
        assert_eq!(integer_mean(&[0i8; 4], 1, 0, 2, &mut m), Err(KernelError::InvalidParam));
        assert_eq!(integer_mean(&[0i8; 5], 1, 2, 2, &mut m), Err(KernelError::ShapeMismatch));
        assert_eq!(integer_mean(&[0i8; 4], 1, 2, 2, &mut m[..1]), Err(KernelError::ShapeMismatch));
    }

    fn pool_params() -> impl Strategy<Value = Pool2dParams> {
        (
            1usize..3,
            1usize..4,
            1usize..10,
            1usize..10,
            1usize..4,
            1usize..4,
            1usize..4,
            1usize..4,
            0usize..3,
            0usize..3,
            0usize..3,
            0usize..3,
        )
            .prop_filter_map("invalid pooling", |(n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr)| {
                let p = Pool2dParams {
                    batch: n,
                    channels: c,
                    in_h: h,
                    in_w: w,
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    pad_top: pt,
                    pad_left: pl,
                    pad_bottom: pb,
                    pad_right: pr,
                };
                p.output_hw().ok().map(|_| p)
            })
    }

    proptest! {
        #[test]
        fn pools_match_model(p in pool_params(), include in any::<bool>(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(p.batch * p.channels * p.in_h * p.in_w);
            let (oh, ow) = p.output_hw().unwrap();
            let mut mx = vec![0i8; p.batch * p.channels * oh * ow];
            let mut av = mx.clone();
            maxpool2d(&x, &p, &mut mx).unwrap();
            avgpool2d(&x, &p, include, &mut av).unwrap();
            for (i, win) in windows(&p).iter().enumerate() {
                let real: Vec<i64> = win.iter().flatten().map(|&j| i64::from(x[j])).collect();
                prop_assert!(!real.is_empty());
                prop_assert_eq!(i64::from(mx[i]), *real.iter().max().unwrap());
                let n = if include { win.len() } else { real.len() } as f64;
                let mean = real.iter().sum::<i64>() as f64 / n; // exact: small integers
                let want = mean.round(); // f64::round: halves away from zero
                prop_assert_eq!(f64::from(av[i]), want);
            }
        }

        #[test]
        fn integer_mean_matches_model(outer in 1usize..3, n in dim(), inner in dim(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_u8(outer * n * inner);
            let mut out = vec![0u8; outer * inner];
            integer_mean(&x, outer, n, inner, &mut out).unwrap();
            let xi = g.vec_i8(outer * n * inner);
            let mut outi = vec![0i8; outer * inner];
            integer_mean(&xi, outer, n, inner, &mut outi).unwrap();
            for o in 0..outer {
                for c in 0..inner {
                    let s: i128 = (0..n).map(|r| i128::from(x[(o * n + r) * inner + c])).sum();
                    let si: i128 = (0..n).map(|r| i128::from(xi[(o * n + r) * inner + c])).sum();
                    let nn = n as i128;
                    prop_assert_eq!(i128::from(out[o * inner + c]), floor_div(2 * s + nn, 2 * nn));
                    prop_assert_eq!(i128::from(outi[o * inner + c]), floor_div(2 * si + nn, 2 * nn));
                }
            }
        }
    }

    #[test]
    fn mean_requant_hand_computed() {
        // Mean of [1, 2, 4] with zero point 1: Σ(x - 1) = 4; multiplier 1/3 → round(1.33) = 1, + zp 5.
        let (m, s) = (715_827_883, -1); // 1/3 as Q31 · 2^-1
        let (ms, ss) = ([m], [s]);
        let rq = crate::requant::FixedPointRequant::new(&ms, &ss, 5, -128, 127).unwrap();
        let mut out = [0i8; 1];
        mean_requant(&[1i8, 2, 4], 1, 3, 1, -1, &rq, &mut out).unwrap();
        assert_eq!(out, [6]);
        assert_eq!(mean_requant(&[1i8, 2], 1, 3, 1, -1, &rq, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(mean_requant(&[1i8, 2], 1, 2, 1, 300, &rq, &mut out), Err(KernelError::InvalidParam));
    }

    proptest! {
        #[test]
        fn mean_requant_matches_model(
            (outer, n, inner) in (small_dim(), dim(), small_dim()),
            seed in any::<u64>(),
            m in q31_multiplier(),
            s in -31i32..=0,
            off in -128i32..=128,
        ) {
            let mut rng = Lcg(seed);
            let x = rng.vec_i8(outer * n * inner);
            let (ms, ss) = ([m], [s]);
            let rq = crate::requant::FixedPointRequant::new(&ms, &ss, 3, -128, 127).unwrap();
            let mut out = vec![0i8; outer * inner];
            mean_requant(&x, outer, n, inner, off, &rq, &mut out).unwrap();
            for o in 0..outer {
                for c in 0..inner {
                    let sum: i32 = (0..n).map(|r| i32::from(x[(o * n + r) * inner + c]) + off).sum();
                    let want = model_q31(sum, m, s).wrapping_add(3).clamp(-128, 127);
                    prop_assert_eq!(i32::from(out[o * inner + c]), want);
                }
            }
        }
    }
}
