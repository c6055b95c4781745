//! Integer normalization over the last axis: Deeploy `iLayerNorm` (SEMANTICS §3.10) and
//! `iRMSNorm` (§3.11), plus the exact integer square root they use.
//!
//! Layout: `x` is `[rows, row_len]` row-major (row contiguous); `weight`/`bias` are `[row_len]`.
//! Inputs are 8-bit, signed or unsigned (ICCT's first iLayerNorm reads uint8 MaxPool output).
//! Normalizing over several trailing dims = flattening them into `row_len`.

use crate::elem::IntElem;
use crate::KernelError;

/// `floor(sqrt(n))`, exact (no floats): Newton's method on 32-bit divisions below 2^32, bit by bit above.
pub fn isqrt_u64(n: u64) -> u64 {
    if let Ok(n) = u32::try_from(n) {
        return u64::from(isqrt_u32(n));
    }
    let mut rem = n;
    let mut root = 0u64;
    let mut bit = 1u64 << 62;
    while bit > rem {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `floor(sqrt(n))` by Newton's method from a power of two above the root: the iterates fall strictly until
/// they reach the floor of the root (a handful of hardware divisions instead of 16 two-bit steps).
fn isqrt_u32(n: u32) -> u32 {
    if n < 2 {
        return n;
    }
    // 2^ceil(bits/2) > sqrt(n); every iterate stays below 2^17, so `x + n / x` does not overflow.
    let mut x = 1u32 << (32 - n.leading_zeros()).div_ceil(2);
    loop {
        let next = (x + n / x) / 2;
        if next >= x {
            return x;
        }
        x = next;
    }
}

/// `4·floor(2^46 / sigma)` for `sigma >= 1` as `(high, low)` words, `high·2^32 + low` with `low` read as
/// signed, so that `floor(d·r / 2^30) = d·high + floor(d·low / 2^32)`: one `MUL` and one `SMMLA`. Two 32-bit
/// divisions (base 2^16 long division) when `sigma < 2^16`, which is every row of up to 512 int8 values,
/// instead of a 64-bit division call; the words come from 32-bit arithmetic so the compiler sees two `i32`s.
fn reciprocal_words(sigma: u64) -> (i32, i32) {
    let (high, low) = match u32::try_from(sigma) {
        Ok(s) if s < 1 << 16 => {
            // floor(2^46/s) = q·2^16 + floor(rest·2^16/s) with q = floor(2^30/s), rest = 2^30 mod s.
            let (q, rest) = ((1u32 << 30) / s, (1u32 << 30) % s);
            (q >> 14, q << 18 | ((rest << 16) / s) << 2)
        }
        _ => {
            let r = ((1u64 << 46) / sigma) << 2;
            ((r >> 32) as u32, r as u32)
        }
    };
    // `low` read as signed is 2^32 less when its top bit is set: carry that into `high`.
    (high as i32 + (low >> 31) as i32, low as i32)
}

/// Validates shapes and parameters shared by both norms; returns `(lo, hi, N)`.
fn check_norm<I: IntElem>(
    x: usize,
    out: usize,
    row_len: usize,
    params: &[usize],
    d: u32,
    n_levels: u32,
) -> Result<(i64, i64, i64), KernelError> {
    if row_len == 0 || x != out || x.checked_rem(row_len) != Some(0) || params.iter().any(|&p| p != row_len) {
        return Err(KernelError::ShapeMismatch);
    }
    let n = i64::try_from(row_len).map_err(|_| KernelError::InvalidParam)?;
    let eight_bit = I::MIN >= -128 && I::MAX <= 255;
    if d == 0 || !(2..=256).contains(&n_levels) || n > i64::from(u32::MAX) || !eight_bit {
        return Err(KernelError::InvalidParam);
    }
    let half = i64::from(n_levels / 2);
    Ok((-half, half - 1, n))
}

/// The largest magnitude in `v`, widened.
fn max_abs(v: &[i32]) -> u64 {
    v.iter().map(|&w| u64::from(w.unsigned_abs())).max().unwrap_or(0)
}

/// `out[i] = clamp(floor(terms[i] / d), lo, hi)` for `d > 0`, a shift when `d` is a power of two.
#[inline]
fn floor_div_clamped(terms: impl Iterator<Item = i32>, d: i32, (lo, hi): (i64, i64), out: &mut [i8]) {
    let (lo, hi) = (lo as i32, hi as i32);
    if d.count_ones() == 1 {
        let k = d.trailing_zeros();
        out.iter_mut().zip(terms).for_each(|(o, t)| *o = (t >> k).max(lo).min(hi) as i8);
    } else {
        out.iter_mut().zip(terms).for_each(|(o, t)| *o = t.div_euclid(d).max(lo).min(hi) as i8);
    }
}

/// Deeploy `iLayerNorm` (§3.10) per row, exact:
/// `mean = trunc(Σx/N)`, `d = x - mean`, `var = floor(Σd²/N)`, `std = isqrt(var + 1)`,
/// `t = trunc(d·w / std)`, `y = clamp(floor((t + b) / D), -n/2, n/2 - 1)`.
///
/// Errors: shapes (`ShapeMismatch`); `D = 0`, `n_levels` outside `2..=256`, `row_len > u32::MAX`
/// or a non-8-bit input type (`InvalidParam`).
pub fn ilayernorm<I: IntElem>(
    x: &[I],
    row_len: usize,
    weight: &[i32],
    bias: &[i32],
    d: u32,
    n_levels: u32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    let (lo, hi, n) = check_norm::<I>(x.len(), out.len(), row_len, &[weight.len(), bias.len()], d, n_levels)?;
    // |x - mean| <= 255 (the mean lies between the row's 8-bit values): when every |x - mean|·|w| + |b| is below
    // 2^31, the whole computation fits `i32` (one `SDIV`, and a shift for a power-of-two D, instead of two 64-bit
    // divisions per element).
    let narrow = 255 * max_abs(weight) + max_abs(bias) < 1 << 31 && d <= i32::MAX as u32;
    let d = i64::from(d);
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        let sum: i64 = xs.iter().map(|&v| i64::from(v.to_i32())).sum();
        let mean = sum.checked_div(n).unwrap_or(0); // truncates toward zero
        let sq: i64 = xs.iter().map(|&v| (i64::from(v.to_i32()) - mean).pow(2)).sum();
        let var = sq.checked_div(n).unwrap_or(0); // sq >= 0: floor = trunc
        let std = isqrt_u64(var.unsigned_abs() + 1) as i64; // 1..=256
        if narrow {
            let (mean, std) = (mean as i32, std as i32);
            let terms = xs.iter().zip(weight).zip(bias).map(|((&v, &w), &b)| {
                // Truncating `/` as the i64 form; no overflow by `narrow`.
                (v.to_i32() - mean) * w / std + b
            });
            floor_div_clamped(terms, d as i32, (lo, hi), os);
            continue;
        }
        for (((o, &v), &w), &b) in os.iter_mut().zip(xs).zip(weight).zip(bias) {
            // |dv·w| < 2^40: no overflow.
            let t = ((i64::from(v.to_i32()) - mean) * i64::from(w)).checked_div(std).unwrap_or(0);
            let y = (t + i64::from(b)).checked_div_euclid(d).unwrap_or(0); // d > 0: floor
            *o = y.max(lo).min(hi) as i8;
        }
    }
    Ok(())
}

/// Deeploy `iRMSNorm` (§3.11) per row, exact floor form:
/// `ms = floor(Σx²/N)`, `std = isqrt(ms + 1)`, `y = clamp(floor(x·w / (std·D)), -n/2, n/2 - 1)`.
///
/// Errors: shapes (`ShapeMismatch`); `D = 0`, `n_levels` outside `2..=256`, `row_len > u32::MAX`
/// or a non-8-bit input type (`InvalidParam`).
pub fn irmsnorm<I: IntElem>(
    x: &[I],
    row_len: usize,
    weight: &[i32],
    d: u32,
    n_levels: u32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    let (lo, hi, n) = check_norm::<I>(x.len(), out.len(), row_len, &[weight.len()], d, n_levels)?;
    // |x| <= 255: `i32` when every |x·w| and the divisor are below 2^31 (see `ilayernorm`).
    let narrow = 255 * max_abs(weight) < 1 << 31;
    let d = i64::from(d);
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        let sq: i64 = xs.iter().map(|&v| i64::from(v.to_i32()).pow(2)).sum();
        let ms = sq.checked_div(n).unwrap_or(0);
        let std = isqrt_u64(ms.unsigned_abs() + 1) as i64; // 1..=256
        let den = std * d; // < 2^40, > 0
        if narrow && den < 1 << 31 {
            let terms = xs.iter().zip(weight).map(|(&v, &w)| v.to_i32() * w);
            floor_div_clamped(terms, den as i32, (lo, hi), os);
            continue;
        }
        for ((o, &v), &w) in os.iter_mut().zip(xs).zip(weight) {
            let y = (i64::from(v.to_i32()) * i64::from(w)).checked_div_euclid(den).unwrap_or(0); // den > 0: floor
            *o = y.max(lo).min(hi) as i8;
        }
    }
    Ok(())
}

/// Parameters of mote's int8 LayerNorm ([`layernorm_i8`]), built on the host from the scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerNormI8Params<'a> {
    /// `round(γ_j / s_out · 2^frac_bits)` per column.
    pub gamma: &'a [i32],
    /// `round(β_j / s_out · 2^frac_bits)` per column.
    pub beta: &'a [i32],
    /// Fraction bits of `gamma`/`beta`, at most 30.
    pub frac_bits: u32,
    /// `round(ε · N² / s_in²)`: epsilon in the units of `Σd²/N` below, at most 2^48.
    pub eps: u64,
    /// Output zero point (int8).
    pub out_zero_point: i32,
    /// `None`: LayerNorm (center each row on its mean). `Some(z)`: RMSNorm, centered on the
    /// input zero point `z` (the real value 0), with `beta` usually all zero.
    pub rms_zero_point: Option<i32>,
}

/// mote's int8 LayerNorm (or RMSNorm, see [`LayerNormI8Params::rms_zero_point`]) per row of `N = row_len` values, exact integer arithmetic (the input
/// zero point cancels): `d_j = N·x_j - c` with `c = Σx` (LayerNorm) or `c = N·z` (RMSNorm), `σ = max(1, isqrt(floor(Σd²/N) + eps))`,
/// `t_j = floor(d_j · floor(2^46/σ) / 2^30)` (`d_j/σ` in Q16) and
/// `y_j = clamp(floor((t_j·γ_j + β_j·2^16) / 2^(16+F) + 1/2) + zp, -128, 127)`.
///
/// `d_j/σ` is the normalized value `(x_j - mean)/sqrt(var + ε)` in real units. One reciprocal per row and
/// multiplies per element (no division per element: a 64-bit division costs ~40 instructions on a Cortex-M).
/// Errors: shapes (`ShapeMismatch`); `row_len > 65536`, `frac_bits > 30`, `eps > 2^48`, an RMS
/// zero point outside int8 (`InvalidParam`).
pub fn layernorm_i8(x: &[i8], row_len: usize, p: &LayerNormI8Params<'_>, out: &mut [i8]) -> Result<(), KernelError> {
    if row_len == 0 || x.len() != out.len() || x.len() % row_len != 0 {
        return Err(KernelError::ShapeMismatch);
    }
    if p.gamma.len() != row_len || p.beta.len() != row_len {
        return Err(KernelError::ShapeMismatch);
    }
    let z_ok = p.rms_zero_point.is_none_or(|z| (-128..=127).contains(&z));
    if row_len > 1 << 16 || p.frac_bits > 30 || p.eps > 1 << 48 || !z_ok {
        return Err(KernelError::InvalidParam);
    }
    // Bounds: |d| <= 2^24, Σd²/N <= 2^48, σ < 2^25, |d| < 2·sqrt(N)·σ <= 2^9·σ, so |d·r| < 2^55, |t| < 2^25 and
    // |t·γ| < 2^55: every i64 below stays under 2^58.
    let n = row_len as i32;
    let shift = 16 + p.frac_bits;
    for (xs, os) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
        // One pass of 32-bit sums (|Σx| <= 2^23, Σx² <= 2^30), then Σd²/N exactly from them:
        // Σ(N·x - Σx)²/N = N·Σx² - (Σx)² and Σ(N·x - N·z)²/N = N·Σ(x - z)², with Σ(x - z)² = Σx² - 2zΣx + N·z².
        let (sum, squares) =
            xs.iter().fold((0i32, 0i32), |(s, q), &v| (s + i32::from(v), q + i32::from(v) * i32::from(v)));
        let (c, var) = match p.rms_zero_point {
            None => (sum, i64::from(n) * i64::from(squares) - i64::from(sum).pow(2)),
            Some(z) => {
                let centered = i64::from(squares) - 2 * i64::from(z) * i64::from(sum) + i64::from(n) * i64::from(z * z);
                (n * z, i64::from(n) * centered)
            }
        };
        let sigma = isqrt_u64(var.unsigned_abs() + p.eps).max(1);
        // t = floor(d·r / 2^30) without a 64×64 product (see `reciprocal_words`); |t| < 2^25, so the wrapping
        // i32 sum is exact.
        let (r_high, r_low) = reciprocal_words(sigma);
        let normalized = xs.iter().map(|&v| {
            let d = n * i32::from(v) - c;
            d.wrapping_mul(r_high).wrapping_add(((i64::from(d) * i64::from(r_low)) >> 32) as i32)
        });
        let columns = normalized.zip(p.gamma.iter().zip(p.beta));
        if let Some(k) = shift.checked_sub(32).filter(|&k| k > 0) {
            // y = floor((t·γ + β·2^16 + 2^(s-1) + zp·2^s) / 2^s) with s = 32 + k: the rounding half and the zero
            // point are whole multiples of 2^32, so they join β's high word, and only the high word of the sum
            // is shifted (|sum| < 2^56: it is below 2^24).
            let high = (1i32 << (k - 1)) + (p.out_zero_point << k);
            for (o, (t, (&g, &b))) in os.iter_mut().zip(columns) {
                let start = (i64::from((b >> 16) + high) << 32) | i64::from((b << 16) as u32);
                let sum = start + i64::from(t) * i64::from(g);
                *o = (((sum >> 32) as i32) >> k).clamp(-128, 127) as i8;
            }
        } else {
            let half = 1i64 << (shift - 1);
            for (o, (t, (&g, &b))) in os.iter_mut().zip(columns) {
                let sum = i64::from(t) * i64::from(g) + (i64::from(b) << 16);
                *o = (((sum + half) >> shift) + i64::from(p.out_zero_point)).clamp(-128, 127) as i8;
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

    /// Largest r with r² <= n, by binary search in i128 (independent of the bit-by-bit method).
    fn model_isqrt(n: i128) -> i128 {
        let (mut lo, mut hi) = (0i128, 1i128 << 32);
        while lo < hi {
            let mid = (lo + hi + 1) / 2;
            if mid * mid <= n {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    fn trunc_div(a: i128, b: i128) -> i128 {
        let q = floor_div(a.abs(), b.abs());
        if (a < 0) != (b < 0) {
            -q
        } else {
            q
        }
    }

    fn model_layernorm(row: &[i128], w: &[i32], b: &[i32], d: i128, lo: i128, hi: i128) -> Vec<i128> {
        let n = row.len() as i128;
        let x = row;
        let mean = trunc_div(x.iter().sum(), n);
        let var = floor_div(x.iter().map(|v| (v - mean) * (v - mean)).sum(), n);
        let std = model_isqrt(var + 1);
        (0..row.len())
            .map(|i| {
                let t = trunc_div((x[i] - mean) * i128::from(w[i]), std);
                floor_div(t + i128::from(b[i]), d).clamp(lo, hi)
            })
            .collect()
    }

    fn model_rmsnorm(row: &[i128], w: &[i32], d: i128, lo: i128, hi: i128) -> Vec<i128> {
        let n = row.len() as i128;
        let x = row;
        let std = model_isqrt(floor_div(x.iter().map(|v| v * v).sum(), n) + 1);
        (0..row.len()).map(|i| floor_div(x[i] * i128::from(w[i]), std * d).clamp(lo, hi)).collect()
    }

    #[test]
    fn isqrt_edges() {
        for (n, r) in [(0u64, 0u64), (1, 1), (2, 1), (3, 1), (4, 2), (15, 3), (16, 4), (u64::MAX, u32::MAX as u64)] {
            assert_eq!(isqrt_u64(n), r, "isqrt({n})");
        }
        assert_eq!(isqrt_u64((1 << 62) - 1), (1 << 31) - 1);
        assert_eq!(isqrt_u64(1 << 62), 1 << 31);
    }

    #[test]
    fn hand_computed() {
        // Row [1, 3]: mean 2, d = [-1, 1], var = 1, std = isqrt(2) = 1.
        // w = 100, b = [0, 5], D = 16: t = [-100, 100], y = floor(-100/16) = -7, floor(105/16) = 6.
        let mut out = [0i8; 2];
        ilayernorm(&[1i8, 3], 2, &[100, 100], &[0, 5], 16, 256, &mut out).unwrap();
        assert_eq!(out, [-7, 6]);
        // Negative sum truncates: row [-1, -2]: sum -3, mean = trunc(-1.5) = -1; d = [0, -1].
        // var = floor(1/2) = 0, std = 1; w = 1000, D = 1 -> [0, -1000] clamps to -128.
        ilayernorm(&[-1i8, -2], 2, &[1000, 1000], &[0, 0], 1, 256, &mut out).unwrap();
        assert_eq!(out, [0, -128]);
        // RMS: row [3, -4]: ms = floor(25/2) = 12, std = isqrt(13) = 3. w = 10, D = 4:
        // floor(30/12) = 2, floor(-40/12) = -4.
        irmsnorm(&[3i8, -4], 2, &[10, 10], 4, 256, &mut out).unwrap();
        assert_eq!(out, [2, -4]);
        irmsnorm(&[127i8, -128], 2, &[4_100_000, 4_100_000], 1, 256, &mut out).unwrap();
        assert_eq!(out, [127, -128]);
    }

    #[test]
    fn errors() {
        let mut out = [0i8; 4];
        assert_eq!(irmsnorm(&[0i8; 4], 3, &[1; 3], 1, 256, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(irmsnorm(&[0i8; 4], 2, &[1; 3], 1, 256, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(irmsnorm(&[0i8; 4], 0, &[], 1, 256, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(irmsnorm(&[0i8; 4], 2, &[1; 2], 0, 256, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(irmsnorm(&[0i8; 4], 2, &[1; 2], 1, 512, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(ilayernorm(&[0i8; 4], 2, &[1; 2], &[1; 3], 1, 256, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(ilayernorm(&[0i16; 4], 2, &[1; 2], &[1; 2], 1, 256, &mut out), Err(KernelError::InvalidParam));
        // uint8 input (ICCT): row [0, 255]: mean 127, d = [-127, 128], var = 16256, std = 127.
        ilayernorm(&[0u8, 255], 2, &[127, 127], &[0, 0], 1, 256, &mut out[..2]).unwrap();
        assert_eq!(out[..2], [-127, 127]);
        assert_eq!(ilayernorm(&[0; 4], 2, &[1; 2], &[1; 2], 1, 256, &mut out[..3]), Err(KernelError::ShapeMismatch));
    }

    proptest! {
        #[test]
        fn isqrt_matches_model(n in prop_oneof![any::<u64>(), 0u64..1000, 0u64..1 << 32, (1u64 << 32) - 2..(1 << 32) + 2, Just(u64::MAX)]) {
            prop_assert_eq!(i128::from(isqrt_u64(n)), model_isqrt(i128::from(n)));
        }

        #[test]
        fn reciprocal_matches_model(sigma in prop_oneof![1u64..1 << 16, (1u64 << 16) - 3..(1 << 16) + 3, 1u64..1 << 25]) {
            let (high, low) = reciprocal_words(sigma);
            prop_assert_eq!((i128::from(high) << 32) + i128::from(low), 4 * ((1i128 << 46) / i128::from(sigma)));
        }

        #[test]
        fn isqrt_perfect_squares(r in 0u64..(1 << 32)) {
            prop_assert_eq!(isqrt_u64(r * r), r);
            if r > 0 {
                prop_assert_eq!(isqrt_u64(r * r - 1), r - 1);
            }
        }

        #[test]
        fn layernorm_matches_model(rows in 1usize..4, len in dim(), d in prop_oneof![(0u32..20).prop_map(|k| 1 << k), 1u32..100_000],
                                   unsigned in any::<bool>(), n in prop_oneof![Just(256u32), 2u32..=256], wide in any::<bool>(),
                                   seed in any::<u64>()) {
            // Wide parameters take the 64-bit path, narrow ones (ICCT's) the 32-bit one.
            let mut g = Lcg(seed);
            let (wm, bm) = if wide { (i32::MAX, 1 << 30) } else { (1 << 16, 1 << 20) };
            let w = g.vec_i32(len, -wm, wm);
            let b = g.vec_i32(len, -bm, bm);
            let mut out = vec![0i8; rows * len];
            let x: Vec<i128> = if unsigned {
                let x = g.vec_u8(rows * len);
                ilayernorm(&x, len, &w, &b, d, n, &mut out).unwrap();
                x.iter().map(|&v| v.into()).collect()
            } else {
                let x = g.vec_i8(rows * len);
                ilayernorm(&x, len, &w, &b, d, n, &mut out).unwrap();
                x.iter().map(|&v| v.into()).collect()
            };
            let half = i128::from(n / 2);
            for r in 0..rows {
                let want = model_layernorm(&x[r * len..(r + 1) * len], &w, &b, d.into(), -half, half - 1);
                let got: Vec<i128> = out[r * len..(r + 1) * len].iter().map(|&v| v.into()).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn rmsnorm_matches_model(rows in 1usize..4, len in dim(), d in prop_oneof![Just(65536u32), Just(1), 1u32..100_000, 1u32..=u32::MAX],
                                 wide in any::<bool>(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(rows * len);
            let w = if wide { g.vec_i32(len, i32::MIN, i32::MAX) } else { g.vec_i32(len, -(1 << 22), 1 << 22) };
            let mut out = vec![0i8; x.len()];
            irmsnorm(&x, len, &w, d, 256, &mut out).unwrap();
            let x: Vec<i128> = x.iter().map(|&v| v.into()).collect();
            for r in 0..rows {
                let want = model_rmsnorm(&x[r * len..(r + 1) * len], &w, d.into(), -128, 127);
                let got: Vec<i128> = out[r * len..(r + 1) * len].iter().map(|&v| v.into()).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn rmsnorm_close_to_float(len in dim(), wv in 2_500_000i32..4_100_000, seed in any::<u64>()) {
            // microLlama-like: one repeated weight, D = 2^16; compare with the real-valued formula.
            let mut g = Lcg(seed);
            let x = g.vec_i8(len);
            let w = vec![wv; len];
            let mut out = vec![0i8; len];
            irmsnorm(&x, len, &w, 65536, 256, &mut out).unwrap();
            let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / len as f64;
            let std = (ms.floor() + 1.0).sqrt().floor();
            for (&o, &v) in out.iter().zip(&x) {
                let want = (f64::from(v) * f64::from(wv) / (std * 65536.0)).floor().clamp(-128.0, 127.0);
                prop_assert!((f64::from(o) - want).abs() <= 1.0);
            }
        }
    }

    /// `layernorm_i8` in i128, from its doc comment.
    fn model_layernorm_i8(row: &[i8], g: &[i32], b: &[i32], f: u32, eps: u64, zp: i128, rms: Option<i32>) -> Vec<i128> {
        let n = row.len() as i128;
        let sum: i128 = match rms {
            None => row.iter().map(|&v| i128::from(v)).sum(),
            Some(z) => n * i128::from(z),
        };
        let d: Vec<i128> = row.iter().map(|&v| n * i128::from(v) - sum).collect();
        let ss: i128 = d.iter().map(|v| v * v).sum();
        let sigma = model_isqrt(floor_div(ss, n) + i128::from(eps)).max(1);
        let r = floor_div(1i128 << 46, sigma);
        d.iter()
            .zip(g.iter().zip(b))
            .map(|(&dj, (&gj, &bj))| {
                let t = floor_div(dj * r, 1 << 30);
                let num = t * i128::from(gj) + (i128::from(bj) << 16);
                (floor_div(2 * num + (1i128 << (16 + f)), 1i128 << (17 + f)) + zp).clamp(-128, 127)
            })
            .collect()
    }

    #[test]
    fn layernorm_i8_hand_computed() {
        // x = [-1, 1]: d = [-2·... ] → normalized ±1 (eps 0); γ = 1/s_out = 10 in Q0, β = 0 → ±10.
        let p = LayerNormI8Params {
            gamma: &[10, 10],
            beta: &[0, 5],
            frac_bits: 0,
            eps: 0,
            out_zero_point: 3,
            rms_zero_point: None,
        };
        let mut out = [0i8; 2];
        layernorm_i8(&[-1, 1], 2, &p, &mut out).unwrap();
        assert_eq!(out, [-7, 18]);
        // A constant row has σ = max(1, isqrt(eps)) and d = 0: only β and the zero point remain.
        layernorm_i8(&[7, 7], 2, &p, &mut out).unwrap();
        assert_eq!(out, [3, 8]);
        assert_eq!(layernorm_i8(&[1, 2, 3], 2, &p, &mut [0; 3]), Err(KernelError::ShapeMismatch));
        let bad = LayerNormI8Params { frac_bits: 31, ..p };
        assert_eq!(layernorm_i8(&[1, 2], 2, &bad, &mut out), Err(KernelError::InvalidParam));
        // RMSNorm centered on zero point 1: x - z = [3, -1], rms = sqrt(5); y = 10·u/rms.
        // d = 2·u = [6, -2], σ = isqrt((36 + 4)/2) = 4: y = floor(60/4 + 1/2) = 15, floor(-20/4 + 5 + 1/2) = 0.
        let rms = LayerNormI8Params { rms_zero_point: Some(1), out_zero_point: 0, ..p };
        layernorm_i8(&[4, 0], 2, &rms, &mut out).unwrap();
        assert_eq!(out, [15, 0]);
    }

    /// The widest rows at the bounds the 32-bit sums and the split reciprocal rely on: 2^16 values at the int8
    /// extremes (Σx² = 2^30, an RMS row 255 away from its zero point), with and without ε, both rounding paths.
    #[test]
    fn layernorm_i8_widest_rows_match_model() {
        let n = 1usize << 16;
        let rows: [Vec<i8>; 3] = [
            vec![-128; n],
            (0..n).map(|j| if j % 2 == 0 { -128 } else { 127 }).collect(),
            (0..n).map(|j| if j == 5 { -128 } else { 127 }).collect(),
        ];
        let g: Vec<i32> = (0..n).map(|j| if j % 3 == 0 { (1 << 30) - 1 } else { -(1 << 30) }).collect();
        let b: Vec<i32> = (0..n).map(|j| if j % 2 == 0 { i32::MAX } else { i32::MIN }).collect();
        for (x, f, eps, rms) in rows.iter().flat_map(|x| {
            [(0, 0, None), (16, 1 << 48, Some(-128)), (17, 0, Some(-128)), (24, 7, None), (30, 0, Some(127))]
                .map(|(f, eps, rms)| (x, f, eps, rms))
        }) {
            let p =
                LayerNormI8Params { gamma: &g, beta: &b, frac_bits: f, eps, out_zero_point: -3, rms_zero_point: rms };
            let mut out = vec![0i8; n];
            layernorm_i8(x, n, &p, &mut out).unwrap();
            let got: Vec<i128> = out.iter().map(|&v| i128::from(v)).collect();
            assert_eq!(got, model_layernorm_i8(x, &g, &b, f, eps, -3, rms), "F = {f}, eps = {eps}, rms = {rms:?}");
        }
    }

    proptest! {
        #[test]
        fn layernorm_i8_matches_model(
            (row_len, x, g, b) in dim().prop_flat_map(|n| (
                Just(n),
                proptest::collection::vec(any::<i8>(), n * 2),
                proptest::collection::vec(-(1i32 << 30)..(1 << 30), n),
                proptest::collection::vec(i32::MIN..=i32::MAX, n),
            )),
            f in 0u32..=30,
            eps in prop_oneof![Just(0u64), 0u64..1000, Just(1u64 << 48)],
            zp in -128i32..=127,
            rms in proptest::option::of(-128i32..=127),
        ) {
            let p = LayerNormI8Params { gamma: &g, beta: &b, frac_bits: f, eps, out_zero_point: zp, rms_zero_point: rms };
            let mut out = vec![0i8; x.len()];
            layernorm_i8(&x, row_len, &p, &mut out).unwrap();
            for (xs, os) in x.chunks(row_len).zip(out.chunks(row_len)) {
                let got: Vec<i128> = os.iter().map(|&v| i128::from(v)).collect();
                prop_assert_eq!(got, model_layernorm_i8(xs, &g, &b, f, eps, i128::from(zp), rms));
            }
        }
    }
}
