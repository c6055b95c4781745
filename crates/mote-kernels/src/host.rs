//! Host-only helpers (feature `host`, uses `std` and `f64`): turn real-valued scales into the
//! integer parameters the kernels take. Never compiled into MCU code.
#![allow(clippy::float_arithmetic)]

/// TFLite `QuantizeMultiplier`: `real ≈ multiplier·2^shift / 2^31` with `multiplier` in
/// `[2^30, 2^31)` (or 0) and `shift` positive = left, as taken by `FixedPointRequant`.
///
/// Rounds the mantissa half away from zero; returns `(0, 0)` for zero, non-finite input or
/// values below 2^-32, and saturates to `(i32::MAX, 31)` above that range.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real == 0.0 || !real.is_finite() {
        return (0, 0);
    }
    // frexp: real = frac·2^exp with |frac| in [0.5, 1). Power-of-two scaling is exact.
    let (mut frac, mut exp) = (real, 0i32);
    while frac.abs() >= 1.0 {
        frac /= 2.0;
        exp += 1;
    }
    while frac.abs() < 0.5 {
        frac *= 2.0;
        exp -= 1;
    }
    let mut q = (frac * 2f64.powi(31)).round() as i64;
    if q.abs() == 1i64 << 31 {
        q /= 2;
        exp += 1;
    }
    if exp < -31 {
        return (0, 0);
    }
    if exp > 31 {
        return (i32::MAX, 31);
    }
    (q as i32, exp)
}

/// `HighMulRequant` multiplier for `real`: `round(real·2^32)`, when `0 <= real < 1/2` makes it fit `i32`.
pub fn high_mul_multiplier(real: f64) -> Option<i32> {
    if !(0.0..0.5).contains(&real) {
        return None;
    }
    i32::try_from((real * 2f64.powi(32)).round() as i64).ok()
}

/// [`crate::elementwise::AddShift`] for `y = (s_a·(a − zp_a) + b_sign·s_b·(b − zp_b)) / s_y + zp_y` to int8, or
/// `None` when the scale ratios do not fit 16-bit multipliers (then use `AddRequant`).
///
/// The shift is the largest (≤ 22) that keeps both multipliers below 2^15 and the offset inside its bound.
pub fn add_shift_params(
    (sa, za): (f64, i32),
    (sb, zb): (f64, i32),
    b_sign: f64,
    (sy, zy): (f64, i32),
) -> Option<crate::elementwise::AddShift> {
    let (ra, rb) = (sa / sy, b_sign * sb / sy);
    if !ra.is_finite() || !rb.is_finite() {
        return None;
    }
    (0..=22u32).rev().find_map(|shift| {
        let scale = f64::from(1u32 << shift);
        let (am, bm) = ((ra * scale).round(), (rb * scale).round());
        if am.abs() >= 32768.0 || bm.abs() >= 32768.0 {
            return None;
        }
        let (am, bm) = (am as i64, bm as i64);
        let half = if shift > 0 { 1i64 << (shift - 1) } else { 0 };
        let offset = (i64::from(zy) << shift) - i64::from(za) * am - i64::from(zb) * bm + half;
        (offset.abs() < 1 << 30).then_some(crate::elementwise::AddShift {
            a_mul: am as i32,
            b_mul: bm as i32,
            offset: offset as i32,
            shift,
            act_min: -128,
            act_max: 127,
        })
    })
}

/// Builds a 256-entry int8 table for `lut_i8`: `table[x + 128] = clamp(round(f(s_in·(x - zp_in)) / s_out) + zp_out)`.
///
/// `round` is half away from zero; use it for SiLU, GELU, sigmoid, tanh, hardswish, ...
pub fn build_lut_i8(
    f: impl Fn(f64) -> f64,
    in_scale: f64,
    in_zero_point: i32,
    out_scale: f64,
    out_zero_point: i32,
) -> [i8; 256] {
    core::array::from_fn(|i| {
        let x = i as i32 - 128;
        let real = f(in_scale * f64::from(x - in_zero_point));
        let q = (real / out_scale).round() + f64::from(out_zero_point);
        q.clamp(-128.0, 127.0) as i8
    })
}

/// Exponential table of [`crate::softmax::softmax_i8`] for an input scale `s_in`:
/// `exp[d] = round(2^15 · exp(-s_in · d))`.
pub fn softmax_exp_table(in_scale: f64) -> [u16; 256] {
    core::array::from_fn(|d| ((-in_scale * d as f64).exp() * 32768.0).round().clamp(0.0, 32768.0) as u16)
}

/// `out_recip` of [`crate::softmax::softmax_i8`]: `round(2^16 / s_out)`, or `None` when it does
/// not fit (`s_out` below 2^-15 or not a positive finite number).
pub fn softmax_out_recip(out_scale: f64) -> Option<u32> {
    let r = (65536.0 / out_scale).round();
    (out_scale > 0.0 && r.is_finite() && (1.0..=f64::from(u32::MAX)).contains(&r)).then_some(r as u32)
}

/// Integer parameters of [`crate::norm::layernorm_i8`] from real `γ`, `β`, `ε` and the scales:
/// `(gamma, beta, frac_bits, eps)`, with the most fraction bits (≤ 24) that keep every
/// `|γ/s_out|·2^F` and `|β/s_out|·2^F` below 2^30. `None` if `ε·N²/s_in²` exceeds 2^48 or a
/// value is not finite.
pub fn layernorm_i8_params(
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    in_scale: f64,
    out_scale: f64,
) -> Option<(std::vec::Vec<i32>, std::vec::Vec<i32>, u32, u64)> {
    let n = gamma.len() as f64;
    let eps_q = (eps * n * n / (in_scale * in_scale)).round();
    if !eps_q.is_finite() || !(0.0..=2f64.powi(48)).contains(&eps_q) {
        return None;
    }
    let largest = gamma.iter().chain(beta).map(|v| (v / out_scale).abs()).fold(0.0, f64::max);
    if !largest.is_finite() {
        return None;
    }
    let frac_bits = (0..=24u32).rev().find(|&f| largest * 2f64.powi(f as i32) < 2f64.powi(30))?;
    let q = |v: &f64| (v / out_scale * 2f64.powi(frac_bits as i32)).round() as i32;
    Some((gamma.iter().map(q).collect(), beta.iter().map(q).collect(), frac_bits, eps_q as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requant::multiply_by_quantized_multiplier;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        assert_eq!(quantize_multiplier(0.25), (1 << 30, -1));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(-0.5), (-(1 << 30), 0));
        let t = build_lut_i8(|x| x.max(0.0), 1.0, 0, 1.0, 0);
        assert_eq!((t[0], t[127], t[128], t[255]), (0, 0, 0, 127));
    }

    proptest! {
        #[test]
        fn multiplier_reproduces_scale(real in 1e-6f64..100.0, x in -100_000i32..100_000) {
            let (m, s) = quantize_multiplier(real);
            prop_assert!((1 << 30..=i32::MAX).contains(&m));
            let x = if s > 0 { x >> s } else { x };
            let got = f64::from(multiply_by_quantized_multiplier(x, m, s));
            prop_assert!((got - f64::from(x) * real).abs() <= 1.0 + f64::from(x).abs() * real * 1e-8);
        }
    }
}
