//! Element-wise binary ops: Deeploy exact `Add`/`Mul` (SEMANTICS §3.4), TFLite-style requantized
//! int8 add/mul, mote's cheaper int8 add ([`AddShift`]: two 16-bit multipliers and one shift), and Deeploy
//! `TrueIntegerDiv` (§3.12).
//!
//! Broadcasting rule shared by every binary kernel here: `a` is the full tensor; `b` is repeated,
//! and element `i` of `a` pairs with `b[(i / inner) % b.len()]`. So `inner = 1` broadcasts a
//! trailing-suffix tensor (bias `[C]` over `[.., C]`, scalar `[1]`), and `inner = H·W` a
//! per-channel `[C,1,1]` tensor over NCHW. General numpy broadcasting must be materialized first.

use crate::elem::{check_range, IntElem};
use crate::requant::{multiply_by_quantized_multiplier, Requant, MAX_Q31_SHIFT, MIN_Q31_SHIFT};
use crate::KernelError;

/// The `b` element paired with each element of `a` under the broadcast rule, checked: `b[(i / inner) % b.len()]`
/// for `i` in `0..a_len`, computed by repeating and cycling (no division per element).
fn broadcast_b<B: Copy>(a_len: usize, b: &[B], inner: usize) -> Result<impl Iterator<Item = B> + '_, KernelError> {
    let block = b.len().checked_mul(inner).ok_or(KernelError::ShapeMismatch)?;
    if inner == 0 || block == 0 || a_len.checked_rem(block) != Some(0) {
        return Err(KernelError::ShapeMismatch);
    }
    Ok(b.iter().flat_map(move |&v| core::iter::repeat_n(v, inner)).cycle())
}

/// Validates the broadcast rule and applies `f(a_i, b_j)` into `out`.
fn broadcast_map<A: Copy, B: Copy, O>(
    a: &[A],
    b: &[B],
    inner: usize,
    out: &mut [O],
    f: impl Fn(A, B) -> O,
) -> Result<(), KernelError> {
    if a.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    if same_length(a.len(), b.len(), inner) {
        for ((o, &x), &bv) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, bv);
        }
        return Ok(());
    }
    let bs = broadcast_b(a.len(), b, inner)?;
    for ((o, &x), bv) in out.iter_mut().zip(a).zip(bs) {
        *o = f(x, bv);
    }
    Ok(())
}

/// `b` pairs element for element with `a` (no broadcast): the common residual case, run without the cycling
/// iterator of [`broadcast_b`].
fn same_length(a_len: usize, b_len: usize, inner: usize) -> bool {
    inner == 1 && a_len == b_len && a_len > 0
}

/// [`broadcast_map`] writing `f(a_i, b_j)` over `a`.
fn broadcast_map_in_place<A: Copy, B: Copy>(
    a: &mut [A],
    b: &[B],
    inner: usize,
    f: impl Fn(A, B) -> A,
) -> Result<(), KernelError> {
    if same_length(a.len(), b.len(), inner) {
        for (x, &bv) in a.iter_mut().zip(b) {
            *x = f(*x, bv);
        }
        return Ok(());
    }
    let bs = broadcast_b(a.len(), b, inner)?;
    for (x, bv) in a.iter_mut().zip(bs) {
        *x = f(*x, bv);
    }
    Ok(())
}

/// Deeploy `Add`: `out = a + b` in `i32` (wrapping; exact for operands of 8/16 bits).
///
/// Broadcasting: see the module docs. Errors: lengths violating the rule, `inner = 0`.
pub fn add_i32<A: IntElem, B: IntElem>(a: &[A], b: &[B], inner: usize, out: &mut [i32]) -> Result<(), KernelError> {
    broadcast_map(a, b, inner, out, |x, y| x.to_i32().wrapping_add(y.to_i32()))
}

/// Deeploy `Mul`: `out = a · b` in `i32` (wrapping; exact for operands of 8/16 bits).
///
/// Broadcasting: see the module docs. Errors: lengths violating the rule, `inner = 0`.
pub fn mul_i32<A: IntElem, B: IntElem>(a: &[A], b: &[B], inner: usize, out: &mut [i32]) -> Result<(), KernelError> {
    broadcast_map(a, b, inner, out, |x, y| x.to_i32().wrapping_mul(y.to_i32()))
}

/// [`add_i32`] followed by a per-tensor requantization (`rq.channels() = 1`), without storing the
/// sum: `out = rq(a + b)`, e.g. Deeploy's residual `Add` + `RequantShift`. The sum wraps in `i32`
/// exactly as [`add_i32`] does, so the result equals `add_i32` then [`crate::requant::requantize`].
///
/// Broadcasting: see the module docs. Errors: as [`add_i32`]; output bounds outside `T` or a
/// per-channel `rq` (`InvalidParam` / `ShapeMismatch`).
pub fn add_i32_requant<A: IntElem, B: IntElem, T: IntElem>(
    a: &[A],
    b: &[B],
    inner: usize,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(1)?;
    if rq.channels() != 1 {
        return Err(KernelError::ShapeMismatch);
    }
    if let Requant::Shift(r) = rq {
        // Deeploy's residual adds: the parameters read once.
        let f = r.channel(0);
        return broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(f(x.to_i32().wrapping_add(y.to_i32()))));
    }
    broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(rq.apply(x.to_i32().wrapping_add(y.to_i32()), 0)))
}

/// [`mul_i32`] followed by a per-tensor requantization (`rq.channels() = 1`), without storing the
/// product: `out = rq(a · b)`. Equals `mul_i32` then [`crate::requant::requantize`].
///
/// Broadcasting: see the module docs. Errors: as [`add_i32_requant`].
pub fn mul_i32_requant<A: IntElem, B: IntElem, T: IntElem>(
    a: &[A],
    b: &[B],
    inner: usize,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(1)?;
    if rq.channels() != 1 {
        return Err(KernelError::ShapeMismatch);
    }
    if let Requant::Shift(r) = rq {
        let f = r.channel(0);
        return broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(f(x.to_i32().wrapping_mul(y.to_i32()))));
    }
    broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(rq.apply(x.to_i32().wrapping_mul(y.to_i32()), 0)))
}

/// TFLite / CMSIS-NN int8 `ADD` quantization parameters (`arm_elementwise_add_s8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddRequant {
    /// Added to input 1 (usually `-zero_point1`), in `[-256, 256]`.
    pub input1_offset: i32,
    /// Q31 multiplier of input 1.
    pub input1_multiplier: i32,
    /// Shift of input 1 (positive = left), in `[-31, 31]`.
    pub input1_shift: i32,
    /// Added to input 2 (usually `-zero_point2`), in `[-256, 256]`.
    pub input2_offset: i32,
    /// Q31 multiplier of input 2.
    pub input2_multiplier: i32,
    /// Shift of input 2 (positive = left), in `[-31, 31]`.
    pub input2_shift: i32,
    /// Common left shift applied to both offset inputs first (TFLite uses 20 for int8), `<= 22`.
    pub left_shift: u32,
    /// Q31 multiplier of the sum.
    pub output_multiplier: i32,
    /// Shift of the sum (positive = left), in `[-31, 31]`.
    pub output_shift: i32,
    /// Output zero point.
    pub output_offset: i32,
    /// Lower clamp bound.
    pub act_min: i32,
    /// Upper clamp bound.
    pub act_max: i32,
}

/// TFLite / CMSIS-NN int8 `MUL` quantization parameters (`arm_elementwise_mul_s8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MulRequant {
    /// Added to input 1 (usually `-zero_point1`), in `[-256, 256]`.
    pub input1_offset: i32,
    /// Added to input 2 (usually `-zero_point2`), in `[-256, 256]`.
    pub input2_offset: i32,
    /// Q31 multiplier of the product.
    pub output_multiplier: i32,
    /// Shift of the product (positive = left), in `[-31, 31]`.
    pub output_shift: i32,
    /// Output zero point.
    pub output_offset: i32,
    /// Lower clamp bound.
    pub act_min: i32,
    /// Upper clamp bound.
    pub act_max: i32,
}

fn check_q31(shift: i32, multiplier: i32) -> Result<(), KernelError> {
    if (MIN_Q31_SHIFT..=MAX_Q31_SHIFT).contains(&shift) && multiplier != i32::MIN {
        Ok(())
    } else {
        Err(KernelError::InvalidParam)
    }
}

fn check_offset(o: i32) -> Result<(), KernelError> {
    if (-256..=256).contains(&o) {
        Ok(())
    } else {
        Err(KernelError::InvalidParam)
    }
}

/// Requantized add (TFLite reference `integer_ops::Add`), inputs of 8 bits:
/// `v_i = mbqm((x_i + off_i)·2^left_shift, m_i, s_i)`; `y = clamp(mbqm(v_1 + v_2, m_o, s_o) + zp_o)`.
///
/// `mbqm` = [`multiply_by_quantized_multiplier`]. Broadcasting: see the module docs.
pub fn add_requant<A: IntElem, B: IntElem, T: IntElem>(
    a: &[A],
    b: &[B],
    inner: usize,
    p: &AddRequant,
    out: &mut [T],
) -> Result<(), KernelError> {
    let f = add_fn::<A, B, T>(p)?;
    broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(f(x.to_i32(), y.to_i32())))
}

/// [`add_requant`] writing over `a` (a residual add whose first operand is not read again).
pub fn add_requant_in_place<B: IntElem>(
    a: &mut [i8],
    b: &[B],
    inner: usize,
    p: &AddRequant,
) -> Result<(), KernelError> {
    let f = add_fn::<i8, B, i8>(p)?;
    broadcast_map_in_place(a, b, inner, |x, y| i8::from_i32_sat(f(x.to_i32(), y.to_i32())))
}

/// Validates `p` for the element types and returns the element function of [`add_requant`].
fn add_fn<A: IntElem, B: IntElem, T: IntElem>(p: &AddRequant) -> Result<impl Fn(i32, i32) -> i32 + '_, KernelError> {
    check_q31(p.input1_shift, p.input1_multiplier)?;
    check_q31(p.input2_shift, p.input2_multiplier)?;
    check_q31(p.output_shift, p.output_multiplier)?;
    check_offset(p.input1_offset)?;
    check_offset(p.input2_offset)?;
    // |x + off| <= 2^15 for 8/16-bit inputs... only 8-bit inputs keep (x + off)·2^22 in i32.
    if p.left_shift > 22 || A::MAX > 255 || B::MAX > 255 {
        return Err(KernelError::InvalidParam);
    }
    check_range::<T>(p.act_min, p.act_max)?;
    Ok(move |x: i32, y: i32| {
        let x = (x + p.input1_offset) << p.left_shift;
        let y = (y + p.input2_offset) << p.left_shift;
        let x = multiply_by_quantized_multiplier(x, p.input1_multiplier, p.input1_shift);
        let y = multiply_by_quantized_multiplier(y, p.input2_multiplier, p.input2_shift);
        let sum = x.wrapping_add(y);
        let r =
            multiply_by_quantized_multiplier(sum, p.output_multiplier, p.output_shift).wrapping_add(p.output_offset);
        r.max(p.act_min).min(p.act_max)
    })
}

/// int8 add (or subtract) with 16-bit multipliers and one shift: `y = clamp((a·a_mul + b·b_mul + offset) >> shift)`.
///
/// The offset holds both input zero points, the output zero point and the rounding term (see
/// `host::add_shift_params`). About 10 instructions per element on a Cortex-M, against ~40 for [`AddRequant`]'s
/// three Q31 rescalings. Bounds keep every sum inside `i32`: `|a_mul|, |b_mul| < 2^15`, `|offset| < 2^30`,
/// `shift <= 22`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddShift {
    /// Multiplier of input 1 (`s_a / s_y · 2^shift`).
    pub a_mul: i32,
    /// Multiplier of input 2 (negative subtracts).
    pub b_mul: i32,
    /// `zp_y·2^shift − zp_a·a_mul − zp_b·b_mul + 2^(shift−1)`.
    pub offset: i32,
    /// Right shift of the sum.
    pub shift: u32,
    /// Lower clamp bound.
    pub act_min: i32,
    /// Upper clamp bound.
    pub act_max: i32,
}

impl AddShift {
    /// The same add with the operands swapped (`b` first).
    pub fn swapped(self) -> Self {
        Self { a_mul: self.b_mul, b_mul: self.a_mul, ..self }
    }

    fn check<T: IntElem>(&self) -> Result<(), KernelError> {
        let mul_ok = |m: i32| (-(1 << 15) + 1..1 << 15).contains(&m);
        if !mul_ok(self.a_mul)
            || !mul_ok(self.b_mul)
            || !(-(1 << 30)..1 << 30).contains(&self.offset)
            || self.shift > 22
        {
            return Err(KernelError::InvalidParam);
        }
        check_range::<T>(self.act_min, self.act_max)
    }

    /// One output element (inputs are 8-bit: the bounds above keep the sum inside `i32`).
    #[inline(always)]
    fn apply(&self, a: i32, b: i32) -> i32 {
        ((a * self.a_mul + b * self.b_mul + self.offset) >> self.shift).max(self.act_min).min(self.act_max)
    }
}

/// [`AddShift`] add of int8 `a` and `b` (broadcast: see the module docs) into `out`.
pub fn add_shift(a: &[i8], b: &[i8], inner: usize, p: &AddShift, out: &mut [i8]) -> Result<(), KernelError> {
    p.check::<i8>()?;
    broadcast_map(a, b, inner, out, |x, y| p.apply(i32::from(x), i32::from(y)) as i8)
}

/// [`add_shift`] writing over `a`.
pub fn add_shift_in_place(a: &mut [i8], b: &[i8], inner: usize, p: &AddShift) -> Result<(), KernelError> {
    p.check::<i8>()?;
    broadcast_map_in_place(a, b, inner, |x, y| p.apply(i32::from(x), i32::from(y)) as i8)
}

/// Requantized multiply (TFLite reference `integer_ops::Mul`), inputs of 8 bits:
/// `y = clamp(mbqm((x_1 + off_1)·(x_2 + off_2), m_o, s_o) + zp_o, act_min, act_max)`.
///
/// `mbqm` = [`multiply_by_quantized_multiplier`]. Broadcasting: see the module docs.
pub fn mul_requant<A: IntElem, B: IntElem, T: IntElem>(
    a: &[A],
    b: &[B],
    inner: usize,
    p: &MulRequant,
    out: &mut [T],
) -> Result<(), KernelError> {
    let f = mul_fn::<A, B, T>(p)?;
    broadcast_map(a, b, inner, out, |x, y| T::from_i32_sat(f(x.to_i32(), y.to_i32())))
}

/// [`mul_requant`] writing over `a`.
pub fn mul_requant_in_place<B: IntElem>(
    a: &mut [i8],
    b: &[B],
    inner: usize,
    p: &MulRequant,
) -> Result<(), KernelError> {
    let f = mul_fn::<i8, B, i8>(p)?;
    broadcast_map_in_place(a, b, inner, |x, y| i8::from_i32_sat(f(x.to_i32(), y.to_i32())))
}

/// Validates `p` for the element types and returns the element function of [`mul_requant`].
fn mul_fn<A: IntElem, B: IntElem, T: IntElem>(p: &MulRequant) -> Result<impl Fn(i32, i32) -> i32 + '_, KernelError> {
    check_q31(p.output_shift, p.output_multiplier)?;
    check_offset(p.input1_offset)?;
    check_offset(p.input2_offset)?;
    if A::MAX > 255 || B::MAX > 255 {
        return Err(KernelError::InvalidParam);
    }
    check_range::<T>(p.act_min, p.act_max)?;
    Ok(move |x: i32, y: i32| {
        let prod = (x + p.input1_offset) * (y + p.input2_offset);
        let r =
            multiply_by_quantized_multiplier(prod, p.output_multiplier, p.output_shift).wrapping_add(p.output_offset);
        r.max(p.act_min).min(p.act_max)
    })
}

/// Deeploy `TrueIntegerDiv` constant (§3.12): `k = floor(delta·eta / (divisor·eta + eps))`, exact.
///
/// Errors (`InvalidParam`): zero denominator, or `k` outside `i32`.
pub fn true_integer_div_k(delta: i64, divisor: i64, eps: i64, eta: i64) -> Result<i32, KernelError> {
    let num = i128::from(delta) * i128::from(eta);
    let den = i128::from(divisor) * i128::from(eta) + i128::from(eps);
    if den == 0 {
        return Err(KernelError::InvalidParam);
    }
    // Floor division (|num| < 2^126, so no overflow).
    let (q, r) = (num.checked_div(den).unwrap_or(0), num.checked_rem(den).unwrap_or(0));
    let q = if r != 0 && ((num < 0) != (den < 0)) { q - 1 } else { q };
    i32::try_from(q).map_err(|_| KernelError::InvalidParam)
}

/// Deeploy `TrueIntegerDiv` (§3.12): `out = x·k` exactly, `k` from [`true_integer_div_k`].
///
/// Errors: length mismatch; `InvalidParam` if `x·k` could leave `i32` for some value of type `I`.
pub fn true_integer_div<I: IntElem>(x: &[I], k: i32, out: &mut [i32]) -> Result<(), KernelError> {
    let fits = |v: i32| i32::try_from(i64::from(v) * i64::from(k)).is_ok();
    if !fits(I::MIN) || !fits(I::MAX) {
        return Err(KernelError::InvalidParam);
    }
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v.to_i32() * k;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::float_arithmetic)]
mod tests {
    use super::*;
    use crate::requant::{requantize, ShiftRequant};
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn fused_add_mul_requant_hand_computed() {
        // (x + y)·3/4 rounded half up, clamped to [0, 255]: (1+2)·3 = 9/4 = 2.25 -> 2; (100+100)·3/4 = 150;
        // (-100 - 100)·3/4 -> 0.
        let rq = Requant::Shift(ShiftRequant::new(&[3], &[0], 2, 256, false).unwrap());
        let mut o = [0u8; 3];
        add_i32_requant(&[1i8, 100, -100], &[2u8, 100, 0], 1, &rq, &mut o).unwrap();
        assert_eq!(o, [2, 150, 0]);
        // Broadcast b = [2, -1] per row over [2, 2]: products 2·2, 3·2, 4·-1, 5·-1, then ·3/4.
        let mut o = [0i8; 4];
        mul_i32_requant(&[2i8, 3, 4, 5], &[2i8, -1], 2, &rq, &mut o[..]).unwrap_err();
        let rq = Requant::Shift(ShiftRequant::new(&[3], &[0], 2, 256, true).unwrap());
        mul_i32_requant(&[2i8, 3, 4, 5], &[2i8, -1], 2, &rq, &mut o).unwrap();
        assert_eq!(o, [3, 5, -3, -4]); // 12/4 = 3, 18/4 = 4.5 -> 5, -12/4 = -3, -15/4 = -3.75 -> -4
                                       // Per-channel parameters are refused (the fused kernels requantize per tensor).
        let rq = Requant::Shift(ShiftRequant::new(&[1, 2], &[0], 0, 256, true).unwrap());
        assert_eq!(add_i32_requant(&[0i8; 4], &[0i8; 4], 1, &rq, &mut o), Err(KernelError::ShapeMismatch));
    }

    #[test]
    fn hand_computed() {
        // bias [3] + [2,3]
        let mut out = [0i32; 6];
        add_i32(&[1i32, 2, 3, 4, 5, 6], &[10i8, 20, 30], 1, &mut out).unwrap();
        assert_eq!(out, [11, 22, 33, 14, 25, 36]);
        // per-channel [2,1,1] over [2,3]
        mul_i32(&[1i8, 2, 3, 4, 5, 6], &[-1i8, 2], 3, &mut out).unwrap();
        assert_eq!(out, [-1, -2, -3, 8, 10, 12]);
        mul_i32(&[-128i8], &[-128i8], 1, &mut out[..1]).unwrap();
        assert_eq!(out[0], 16384);
        assert_eq!(true_integer_div_k(16384, 2, 1, 200_000), Ok(8191));
        let mut o = [0i32; 2];
        true_integer_div(&[-12i16, 26], 8191, &mut o).unwrap();
        assert_eq!(o, [-98_292, 212_966]);
        // TFLite add, identity-ish scales: out = x + y with zp 0.
        let p = AddRequant {
            input1_offset: 0,
            input1_multiplier: 1 << 30,
            input1_shift: 0,
            input2_offset: 0,
            input2_multiplier: 1 << 30,
            input2_shift: 0,
            left_shift: 20,
            output_multiplier: 1 << 30,
            output_shift: -18,
            output_offset: 0,
            act_min: -128,
            act_max: 127,
        };
        let mut o8 = [0i8; 3];
        add_requant(&[1i8, 100, -100], &[2i8, 100, -100], 1, &p, &mut o8).unwrap();
        // x·2^20·0.5 = x·2^19; sum·0.5/2^18 = x + y.
        assert_eq!(o8, [3, 127, -128]);
        let m = MulRequant {
            input1_offset: 0,
            input2_offset: 0,
            output_multiplier: 1 << 30,
            output_shift: -6,
            output_offset: 1,
            act_min: -128,
            act_max: 127,
        };
        mul_requant(&[10i8, -3, 127], &[13i8, 1, 127], 1, &m, &mut o8).unwrap();
        // 130/128 = 1.016 -> 1, +1 = 2; -3/128 -> 0, +1; 16129/128 -> 126, +1 = 127.
        assert_eq!(o8, [2, 1, 127]);
    }

    #[test]
    fn errors() {
        let mut out = [0i32; 6];
        assert_eq!(add_i32(&[0i8; 6], &[0i8; 4], 1, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(add_i32(&[0i8; 6], &[0i8; 2], 2, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(add_i32(&[0i8; 6], &[0i8; 2], 0, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(add_i32::<i8, i8>(&[0i8; 6], &[], 1, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(mul_i32(&[0i8; 6], &[0i8; 1], 1, &mut out[..5]), Err(KernelError::ShapeMismatch));
        assert_eq!(true_integer_div_k(1, 0, 0, 5), Err(KernelError::InvalidParam));
        assert_eq!(true_integer_div_k(i64::MAX, 1, 0, 1), Err(KernelError::InvalidParam));
        assert_eq!(true_integer_div(&[0i16; 6], 1 << 17, &mut out), Err(KernelError::InvalidParam));
        assert_eq!(true_integer_div(&[0i8; 5], 3, &mut out), Err(KernelError::ShapeMismatch));
        let m = MulRequant {
            input1_offset: 0,
            input2_offset: 300,
            output_multiplier: 1 << 30,
            output_shift: 0,
            output_offset: 0,
            act_min: -128,
            act_max: 127,
        };
        let mut o8 = [0i8; 6];
        assert_eq!(mul_requant(&[0i8; 6], &[0i8; 1], 1, &m, &mut o8), Err(KernelError::InvalidParam));
        let m = MulRequant { input2_offset: 0, output_shift: -32, ..m };
        assert_eq!(mul_requant(&[0i8; 6], &[0i8; 1], 1, &m, &mut o8), Err(KernelError::InvalidParam));
        let m = MulRequant { output_shift: 0, act_max: 200, ..m };
        assert_eq!(mul_requant(&[0i8; 6], &[0i8; 1], 1, &m, &mut o8), Err(KernelError::InvalidParam));
    }

    proptest! {
        #[test]
        fn deeploy_add_mul_broadcast(outer in 1usize..4, c in dim(), inner in dim(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_i32(outer * c * inner, -(1 << 23), 1 << 23);
            let b = g.vec_i8(c);
            let mut s = vec![0i32; a.len()];
            let mut p = vec![0i32; a.len()];
            add_i32(&a, &b, inner, &mut s).unwrap();
            mul_i32(&a, &b, inner, &mut p).unwrap();
            for (i, &x) in a.iter().enumerate() {
                let y = i64::from(b[(i / inner) % c]);
                prop_assert_eq!(i64::from(s[i]), i64::from(x) + y);
                prop_assert_eq!(i64::from(p[i]), i64::from(x) * y);
            }
        }

        #[test]
        fn fused_add_mul_requant_equal_the_unfused_kernels(outer in 1usize..4, c in dim(), inner in dim(),
                                                            mul in -70_000i32..70_000, add in -(1i32 << 20)..(1 << 20),
                                                            shift in 0u32..24, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_i8(outer * c * inner);
            let b = g.vec_u8(c);
            let (mul, add) = ([mul], [add]);
            let rq = Requant::Shift(ShiftRequant::new(&mul, &add, shift, 256, true).unwrap());
            for mul_op in [false, true] {
                let mut wide = vec![0i32; a.len()];
                let mut want = vec![0i8; a.len()];
                let mut got = vec![0i8; a.len()];
                if mul_op {
                    mul_i32(&a, &b, inner, &mut wide).unwrap();
                    mul_i32_requant(&a, &b, inner, &rq, &mut got).unwrap();
                } else {
                    add_i32(&a, &b, inner, &mut wide).unwrap();
                    add_i32_requant(&a, &b, inner, &rq, &mut got).unwrap();
                }
                requantize(&wide, &rq, 1, &mut want).unwrap();
                prop_assert_eq!(&got, &want);
            }
        }

        #[test]
        fn add_requant_matches_model(n in dim(), o1 in -128i32..=128, o2 in -128i32..=128,
                                     m1 in q31_multiplier(), m2 in q31_multiplier(), mo in q31_multiplier(),
                                     s1 in -31i32..=0, s2 in -31i32..=0, so in -31i32..=2, zp in -128i32..128,
                                     seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_i8(n);
            let b = g.vec_i8(n);
            let p = AddRequant {
                input1_offset: o1, input1_multiplier: m1, input1_shift: s1,
                input2_offset: o2, input2_multiplier: m2, input2_shift: s2,
                left_shift: 20, output_multiplier: mo, output_shift: so,
                output_offset: zp, act_min: -128, act_max: 127,
            };
            let mut out = vec![0i8; n];
            add_requant(&a, &b, 1, &p, &mut out).unwrap();
            for i in 0..n {
                let x = model_q31((i32::from(a[i]) + o1) << 20, m1, s1);
                let y = model_q31((i32::from(b[i]) + o2) << 20, m2, s2);
                let sum = x.wrapping_add(y);
                // Only compare where the model's no-wrap assumption for the output stage holds.
                if so > 0 && i64::from(sum).abs() >= 1i64 << (31 - so) { continue; }
                let want = (i64::from(model_q31(sum, mo, so)) + i64::from(zp)).clamp(-128, 127);
                prop_assert_eq!(i64::from(out[i]), want);
            }
        }

        #[test]
        fn mul_requant_matches_model(n in dim(), o1 in -128i32..=128, o2 in -128i32..=128,
                                     mo in q31_multiplier(), so in -31i32..=8, zp in -128i32..128,
                                     seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let a = g.vec_u8(n);
            let b = g.vec_i8(n);
            let p = MulRequant { input1_offset: o1, input2_offset: o2, output_multiplier: mo,
                                 output_shift: so, output_offset: zp, act_min: 0, act_max: 255 };
            let mut out = vec![0u8; n];
            mul_requant(&a, &b, 1, &p, &mut out).unwrap();
            for i in 0..n {
                let prod = (i32::from(a[i]) + o1) * (i32::from(b[i]) + o2);
                let want = (i64::from(model_q31(prod, mo, so)) + i64::from(zp)).clamp(0, 255);
                prop_assert_eq!(i64::from(out[i]), want);
            }
        }

        #[test]
        fn true_integer_div_matches_model(delta in 1i64..1 << 20, y in 1i64..64, eps in 0i64..16,
                                          eta in 1i64..1_000_000, x in any::<i8>()) {
            let k = true_integer_div_k(delta, y, eps, eta).unwrap();
            // f64 is exact here (all products < 2^53), so floor is the true floor.
            let want = ((delta * eta) as f64 / (y * eta + eps) as f64).floor() as i64;
            let want = if want * (y * eta + eps) > delta * eta { want - 1 } else { want };
            prop_assert_eq!(i64::from(k), want);
            let mut o = [0i32; 1];
            true_integer_div(&[x], k, &mut o).unwrap();
            prop_assert_eq!(i64::from(o[0]), i64::from(x) * want);
        }
    }

    /// Hand-computed: a_mul 3, b_mul -2, offset 8, shift 4: y = (3a - 2b + 8) >> 4, clamped to int8.
    #[test]
    fn add_shift_hand_computed() {
        let p = AddShift { a_mul: 3, b_mul: -2, offset: 8, shift: 4, act_min: -128, act_max: 127 };
        let (a, b) = ([10i8, -100, 127, -128], [0i8, 100, -128, 127]);
        let mut out = [0i8; 4];
        add_shift(&a, &b, 1, &p, &mut out).unwrap();
        // (30+8)>>4 = 2; (-300-200+8)>>4 = -31 (floor of -30.75); (381+256+8)>>4 = 40; (-384-254+8)>>4 = -40 (floor -39.4)
        assert_eq!(out, [2, -31, 40, -40]);
        let bad = AddShift { a_mul: 1 << 15, ..p };
        assert_eq!(add_shift(&a, &b, 1, &bad, &mut out), Err(KernelError::InvalidParam));
    }

    proptest! {
        /// AddShift equals its i64 formula, broadcast or not, in place or not, and swapping swaps the operands.
        #[test]
        fn add_shift_matches_model(seed in any::<u64>(), n in dim(), am in -32767i32..32768, bm in -32767i32..32768,
                                   off in -(1i32 << 29)..(1 << 29), shift in 0u32..=22, broadcast in any::<bool>()) {
            let mut g = Lcg(seed);
            let a = g.vec_i8(n * 3);
            let b = if broadcast { g.vec_i8(3) } else { g.vec_i8(n * 3) };
            let p = AddShift { a_mul: am, b_mul: bm, offset: off, shift, act_min: -128, act_max: 127 };
            let model: Vec<i8> = a.iter().enumerate().map(|(i, &x)| {
                let y = if broadcast { b[i % 3] } else { b[i] };
                let v = (i64::from(x) * i64::from(am) + i64::from(y) * i64::from(bm) + i64::from(off)) >> shift;
                v.clamp(-128, 127) as i8
            }).collect();
            let mut out = vec![0i8; a.len()];
            add_shift(&a, &b, 1, &p, &mut out).unwrap();
            prop_assert_eq!(&out, &model);
            let mut inplace = a.clone();
            add_shift_in_place(&mut inplace, &b, 1, &p).unwrap();
            prop_assert_eq!(&inplace, &model);
            if !broadcast {
                add_shift(&b, &a, 1, &p.swapped(), &mut out).unwrap();
                prop_assert_eq!(&out, &model);
            }
        }

        #[test]
        fn in_place_add_and_mul_equal_out_of_place(
            (n, inner, a, b) in (1usize..4, 1usize..5, 1usize..4).prop_flat_map(|(blocks, inner, blen)| {
                let n = blocks * blen * inner;
                (Just(n), Just(inner), proptest::collection::vec(any::<i8>(), n), proptest::collection::vec(any::<i8>(), blen))
            }),
            m in (1i32 << 30)..i32::MAX, s in -31i32..=0, zp in -128i32..=127,
        ) {
            let add = AddRequant {
                input1_offset: 3, input1_multiplier: m, input1_shift: -1, input2_offset: -7, input2_multiplier: m / 2,
                input2_shift: -1, left_shift: 20, output_multiplier: m, output_shift: (s - 18).max(-31), output_offset: zp,
                act_min: -128, act_max: 127,
            };
            let mut out = vec![0i8; n];
            add_requant(&a, &b, inner, &add, &mut out).unwrap();
            let mut inplace = a.clone();
            add_requant_in_place(&mut inplace, &b, inner, &add).unwrap();
            prop_assert_eq!(&inplace, &out);
            let mul = MulRequant {
                input1_offset: 5, input2_offset: -2, output_multiplier: m, output_shift: s, output_offset: zp,
                act_min: -128, act_max: 127,
            };
            mul_requant(&a, &b, inner, &mul, &mut out).unwrap();
            let mut inplace = a.clone();
            mul_requant_in_place(&mut inplace, &b, inner, &mul).unwrap();
            prop_assert_eq!(inplace, out);
        }
    }
}
