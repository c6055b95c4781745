//! Element-wise integer activations: Deeploy `iGELU` (SEMANTICS §3.15) and `iHardswish` (§3.16),
//! their requantized fused forms, 256-entry lookup tables (for SiLU, GELU, sigmoid, tanh,
//! hardswish in TFLite-style int8 models; build tables on the host) and clamp (ReLU/ReLU6).

use crate::elem::{check_range, IntElem};
use crate::requant::Requant;
use crate::KernelError;

/// iGELU of one value in checked `i64`; `None` if any step overflows or the result leaves `i32`.
fn igelu_one(x: i8, b: i32, one: i32) -> Option<i32> {
    let x = i64::from(x);
    let (b, one) = (i64::from(b), i64::from(one));
    let q = x.abs().min(b.checked_neg()?);
    let r = q.checked_add(b)?;
    let l = x.signum().checked_mul(one.checked_sub(r.checked_mul(r)?)?)?;
    let half = one.checked_add(l)? >> 1; // asr = floor
    i32::try_from(x.checked_mul(half)?).ok()
}

/// iHardswish of one value in checked `i64`; `None` on overflow or a result outside `i32`.
fn ihardswish_one(x: i8, three: i32, six: i32, one_over_six: i32) -> Option<i32> {
    let x = i64::from(x);
    let gate = (x + i64::from(three)).max(0).min(i64::from(six));
    let y = x.checked_mul(gate.checked_mul(i64::from(one_over_six))?)?;
    i32::try_from(y).ok()
}

/// `Ok` when `f` is defined (no overflow, result in `i32`) for every int8 input.
fn check_all_i8(f: impl Fn(i8) -> Option<i32>) -> Result<(), KernelError> {
    if (i8::MIN..=i8::MAX).all(|x| f(x).is_some()) {
        Ok(())
    } else {
        Err(KernelError::InvalidParam)
    }
}

fn map_i8<T>(x: &[i8], out: &mut [T], f: impl Fn(i8) -> T) -> Result<(), KernelError> {
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
    Ok(())
}

/// Deeploy `iGELU` (§3.15): `q = min(|x|, -b)`, `L = sign(x)·(one - (q + b)²)`,
/// `y = x·floor((one + L) / 2)`, wide `i32`, not clipped.
///
/// Errors: length mismatch; `InvalidParam` if some int8 input would overflow `i32`.
pub fn igelu(x: &[i8], b: i32, one: i32, out: &mut [i32]) -> Result<(), KernelError> {
    check_all_i8(|v| igelu_one(v, b, one))?;
    map_i8(x, out, |v| igelu_one(v, b, one).unwrap_or(0))
}

/// Deeploy `RequantizediGELU`: [`igelu`] then a per-tensor requantization (`rq.channels() = 1`).
pub fn igelu_requant<T: IntElem>(
    x: &[i8],
    b: i32,
    one: i32,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(1)?;
    check_all_i8(|v| igelu_one(v, b, one))?;
    map_i8(x, out, |v| T::from_i32_sat(rq.apply(igelu_one(v, b, one).unwrap_or(0), 0)))
}

/// [`igelu_requant`] to int8 in place: `x[i] = rq(igelu(x[i]))`, so the int8 input and output share
/// one buffer (identical results).
pub fn igelu_requant_in_place(x: &mut [i8], b: i32, one: i32, rq: &Requant<'_>) -> Result<(), KernelError> {
    rq.check::<i8>(1)?;
    check_all_i8(|v| igelu_one(v, b, one))?;
    for v in x.iter_mut() {
        *v = i8::from_i32_sat(rq.apply(igelu_one(*v, b, one).unwrap_or(0), 0));
    }
    Ok(())
}

/// Deeploy `iHardswish` (§3.16): `y = x·(clamp(x + three, 0, six)·one_over_six)`, wide `i32`.
///
/// Parameters are used exactly as given (`six` need not be `2·three`). Errors: length
/// mismatch; `six < 0` or some int8 input overflowing `i32` (`InvalidParam`).
pub fn ihardswish(x: &[i8], three: i32, six: i32, one_over_six: i32, out: &mut [i32]) -> Result<(), KernelError> {
    if six < 0 {
        return Err(KernelError::InvalidParam);
    }
    check_all_i8(|v| ihardswish_one(v, three, six, one_over_six))?;
    map_i8(x, out, |v| ihardswish_one(v, three, six, one_over_six).unwrap_or(0))
}

/// Parameters of Deeploy `iHardswish`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardswishParams {
    /// `three` attribute.
    pub three: i32,
    /// `six` attribute (`>= 0`).
    pub six: i32,
    /// `one_over_six` attribute.
    pub one_over_six: i32,
}

/// Deeploy `RequantizediHardswish` in the true-value domain: [`ihardswish`] then a per-tensor
/// requantization (`rq.channels() = 1`; Deeploy's offset-domain `out_offset` is not applied).
pub fn ihardswish_requant<T: IntElem>(
    x: &[i8],
    p: &HardswishParams,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(1)?;
    if p.six < 0 {
        return Err(KernelError::InvalidParam);
    }
    let f = |v| ihardswish_one(v, p.three, p.six, p.one_over_six);
    check_all_i8(f)?;
    map_i8(x, out, |v| T::from_i32_sat(rq.apply(f(v).unwrap_or(0), 0)))
}

/// [`ihardswish_requant`] to int8 in place: `x[i] = rq(ihardswish(x[i]))` (identical results).
pub fn ihardswish_requant_in_place(x: &mut [i8], p: &HardswishParams, rq: &Requant<'_>) -> Result<(), KernelError> {
    rq.check::<i8>(1)?;
    if p.six < 0 {
        return Err(KernelError::InvalidParam);
    }
    let f = |v| ihardswish_one(v, p.three, p.six, p.one_over_six);
    check_all_i8(f)?;
    for v in x.iter_mut() {
        *v = i8::from_i32_sat(rq.apply(f(*v).unwrap_or(0), 0));
    }
    Ok(())
}

/// Table lookup on int8: `out[i] = table[x[i] + 128]` (any int8 → `T` function, e.g. a
/// quantized SiLU/GELU/sigmoid built on the host).
pub fn lut_i8<T: Copy>(x: &[i8], table: &[T; 256], out: &mut [T]) -> Result<(), KernelError> {
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        // (v as u8) ^ 0x80 == v + 128, always < 256.
        if let Some(&t) = table.get(usize::from(v as u8 ^ 0x80)) {
            *o = t;
        }
    }
    Ok(())
}

/// [`lut_i8`] writing over its input (int8 to int8 tables).
pub fn lut_i8_in_place(x: &mut [i8], table: &[i8; 256]) -> Result<(), KernelError> {
    for v in x.iter_mut() {
        if let Some(&t) = table.get(usize::from(*v as u8 ^ 0x80)) {
            *v = t;
        }
    }
    Ok(())
}

/// Table lookup on uint8: `out[i] = table[x[i]]`.
pub fn lut_u8<T: Copy>(x: &[u8], table: &[T; 256], out: &mut [T]) -> Result<(), KernelError> {
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        if let Some(&t) = table.get(usize::from(v)) {
            *o = t;
        }
    }
    Ok(())
}

/// [`lut_u8`] writing over its input (uint8 to uint8 tables).
pub fn lut_u8_in_place(x: &mut [u8], table: &[u8; 256]) -> Result<(), KernelError> {
    for v in x.iter_mut() {
        if let Some(&t) = table.get(usize::from(*v)) {
            *v = t;
        }
    }
    Ok(())
}

/// `out = clamp(x, lo, hi)`: quantized ReLU (`lo` = zero point) or ReLU6; works in place via copies.
///
/// Errors: length mismatch; `lo > hi` or bounds outside `T` (`InvalidParam`).
pub fn clamp<T: IntElem>(x: &[T], lo: i32, hi: i32, out: &mut [T]) -> Result<(), KernelError> {
    check_range::<T>(lo, hi)?;
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = T::from_i32_sat(v.to_i32().max(lo).min(hi));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requant::ShiftRequant;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;

    fn model_igelu(x: i8, b: i32, one: i32) -> i128 {
        let x = i128::from(x);
        let (b, one) = (i128::from(b), i128::from(one));
        let q = x.abs().min(-b);
        let l = x.signum() * (one - (q + b) * (q + b));
        x * floor_div(one + l, 2)
    }

    fn model_hswish(x: i8, three: i32, six: i32, k: i32) -> i128 {
        let x = i128::from(x);
        x * ((x + i128::from(three)).clamp(0, i128::from(six)) * i128::from(k))
    }

    #[test]
    fn hand_computed() {
        // ICCT parameters b = -40, one = 1743.
        let mut out = [0i32; 5];
        igelu(&[0, 1, -1, 40, 127], -40, 1743, &mut out).unwrap();
        // x=1: q=1, L = 1743 - 39² = 222, floor(1965/2) = 982 -> 982.
        // x=-1: L = -222, floor(1521/2) = 760 -> -760. x>=40: L = 1743, y = 1743·x.
        assert_eq!(out, [0, 982, -760, 40 * 1743, 127 * 1743]);
        // Hardswish 245/122 style parameters.
        ihardswish(&[-128, -3, 0, 5, 127], 3, 6, 100, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 5 * 6 * 100, 127 * 600]);
        let rq = Requant::Shift(ShiftRequant::new(&[1], &[0], 16, 256, true).unwrap());
        let p = HardswishParams { three: 122, six: 245, one_over_six: 1000 };
        let mut o8 = [0i8; 3];
        ihardswish_requant(&[10, 127, -128], &p, &rq, &mut o8).unwrap();
        // 10·132·1000 = 1_320_000 / 65536 = 20.14 -> 20; 127·245000 -> 474.8 -> 127.
        assert_eq!(o8, [20, 127, 0]);
        let mut table = [0i8; 256];
        for (i, t) in table.iter_mut().enumerate() {
            *t = (i as i32 - 128).max(0) as i8;
        }
        let mut o5 = [0i8; 5];
        lut_i8(&[-128, -1, 0, 5, 127], &table, &mut o5).unwrap();
        assert_eq!(o5, [0, 0, 0, 5, 127]);
        let mut u = [0u8; 2];
        lut_u8(&[0, 255], &[7u8; 256], &mut u).unwrap();
        assert_eq!(u, [7, 7]);
        let mut c = [0i8; 4];
        clamp(&[-128i8, -5, 3, 100], -3, 6, &mut c).unwrap();
        assert_eq!(c, [-3, -3, 3, 6]);
    }

    #[test]
    fn errors() {
        let mut out = [0i32; 2];
        assert_eq!(igelu(&[0; 3], -40, 1743, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(igelu(&[0; 2], -40, i32::MAX, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(igelu(&[0; 2], i32::MIN, 1, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(ihardswish(&[0; 2], 3, -1, 1, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(ihardswish(&[0; 2], 3, 6, 1 << 24, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(ihardswish(&[0; 1], 3, 6, 1, &mut out), Err(KernelError::ShapeMismatch));
        let mut o8 = [0i8; 2];
        assert_eq!(lut_i8(&[0; 3], &[0i8; 256], &mut o8), Err(KernelError::ShapeMismatch));
        assert_eq!(clamp(&[0i8; 2], 5, 4, &mut o8), Err(KernelError::InvalidParam));
        assert_eq!(clamp(&[0i8; 2], 0, 200, &mut o8), Err(KernelError::InvalidParam));
        let rq = Requant::Shift(ShiftRequant::new(&[1, 2], &[0], 16, 256, true).unwrap());
        assert_eq!(igelu_requant(&[0; 2], -40, 1743, &rq, &mut o8), Err(KernelError::ShapeMismatch));
        assert_eq!(igelu_requant_in_place(&mut o8, -40, 1743, &rq), Err(KernelError::ShapeMismatch));
        let rq = Requant::Shift(ShiftRequant::new(&[1], &[0], 16, 256, false).unwrap());
        let p = HardswishParams { three: 3, six: 6, one_over_six: 1 };
        assert_eq!(ihardswish_requant_in_place(&mut o8, &p, &rq), Err(KernelError::InvalidParam));
    }

    proptest! {
        #[test]
        fn in_place_equals_out_of_place(shift in 0u32..24, mul in -400i32..400, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(70);
            let (mul, add) = ([mul], [7]);
            let rq = Requant::Shift(ShiftRequant::new(&mul, &add, shift, 256, true).unwrap());
            let mut want = vec![0i8; 70];
            let mut got = x.clone();
            igelu_requant(&x, -40, 1743, &rq, &mut want).unwrap();
            igelu_requant_in_place(&mut got, -40, 1743, &rq).unwrap();
            prop_assert_eq!(&got, &want);
            let p = HardswishParams { three: 122, six: 245, one_over_six: 42 };
            let mut got = x.clone();
            ihardswish_requant(&x, &p, &rq, &mut want).unwrap();
            ihardswish_requant_in_place(&mut got, &p, &rq).unwrap();
            prop_assert_eq!(&got, &want);
        }
    }

    proptest! {
        #[test]
        fn igelu_matches_model(b in prop_oneof![Just(-40i32), -5000i32..0], one in prop_oneof![Just(1743i32), -100_000i32..100_000],
                               shift in prop_oneof![Just(0u32), Just(1), 0u32..24], seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(65);
            let mut out = vec![0i32; 65];
            igelu(&x, b, one, &mut out).unwrap();
            let rq = Requant::Shift(ShiftRequant::new(&[3], &[-5], shift, 256, true).unwrap());
            let mut o8 = vec![0i8; 65];
            igelu_requant(&x, b, one, &rq, &mut o8).unwrap();
            for i in 0..65 {
                let y = model_igelu(x[i], b, one);
                prop_assert_eq!(i128::from(out[i]), y);
                let r = floor_div(2 * (3 * y - 5) + (1 << shift), 1 << (shift + 1)).clamp(-128, 127);
                prop_assert_eq!(i128::from(o8[i]), r);
            }
        }

        #[test]
        fn ihardswish_matches_model(three in -200i32..300, six in 0i32..500, k in -20_000i32..20_000, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(65);
            let mut out = vec![0i32; 65];
            ihardswish(&x, three, six, k, &mut out).unwrap();
            for i in 0..65 {
                prop_assert_eq!(i128::from(out[i]), model_hswish(x[i], three, six, k));
            }
        }

        #[test]
        fn lut_is_indexing(seed in any::<u64>(), n in dim()) {
            let mut g = Lcg(seed);
            let table: [i32; 256] = core::array::from_fn(|_| g.i32_in(i32::MIN, i32::MAX));
            let x = g.vec_i8(n);
            let mut out = vec![0i32; n];
            lut_i8(&x, &table, &mut out).unwrap();
            for i in 0..n {
                prop_assert_eq!(out[i], table[(i32::from(x[i]) + 128) as usize]);
            }
        }
    }

    proptest! {
        #[test]
        fn lut_in_place_equals_out_of_place(x in proptest::collection::vec(any::<i8>(), 0..70), seed in any::<u64>()) {
            let mut rng = Lcg(seed);
            let t: std::vec::Vec<i8> = rng.vec_i8(256);
            let table: [i8; 256] = t.try_into().unwrap();
            let mut out = vec![0i8; x.len()];
            lut_i8(&x, &table, &mut out).unwrap();
            let mut inplace = x.clone();
            lut_i8_in_place(&mut inplace, &table).unwrap();
            prop_assert_eq!(inplace, out);
            let (xu, tu): (std::vec::Vec<u8>, [u8; 256]) = (x.iter().map(|&v| v as u8).collect(), table.map(|v| v as u8));
            let mut out = vec![0u8; xu.len()];
            lut_u8(&xu, &tu, &mut out).unwrap();
            let mut inplace = xu.clone();
            lut_u8_in_place(&mut inplace, &tu).unwrap();
            prop_assert_eq!(inplace, out);
        }
    }
}
