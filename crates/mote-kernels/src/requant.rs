//! Requantization of wide integers (accumulators) to narrow ones.
//!
//! Two schemes, each per-tensor (parameter slices of length 1) or per-channel (length C):
//! * [`ShiftRequant`]: Deeploy `RequantShift` (SEMANTICS §3.1),
//!   `y = clamp(asr(x·mul + add + 2^(s-1), s), lo, hi)`, computed exactly in `i64`.
//! * [`FixedPointRequant`]: TFLite / CMSIS-NN Q31 multiplier with a signed shift
//!   (`arm_nn_requantize`, default dual-rounding build), plus an output zero point and clamp.
//! * [`HighMulRequant`]: `y = clamp(zp + round(x·mul / 2^32))` with one multiplier per channel: a single
//!   `SMMLAR` + `SSAT` on Arm DSP cores, the scheme of mote's own int8 linear layers.
//! * [`ThresholdRequant`]: any non-decreasing step function of the accumulator, given by its
//!   steps (`y = lo + #{t ≤ x}`): reproduces exactly a requantization that a model specifies in
//!   float (e.g. `round(acc·s_acc / s_y)` in f32), tabulated on the host.
//!
//! [`Requant`] wraps either scheme; [`requantize`] applies it to a whole tensor.

use crate::elem::{check_range, IntElem};
use crate::KernelError;

/// Whether 64-bit shifts are single instructions (`ASRL` of Armv8.1-M, the Helium cores): then
/// [`ShiftRequant`] shifts and clamps in `i64` for every shift instead of in 32-bit words.
const LONG_SHIFTS: bool = cfg!(mote_mve);

/// Largest shift accepted by [`ShiftRequant`]; keeps `x·mul + add + 2^(s-1)` inside `i64`.
pub const MAX_RQS_SHIFT: u32 = 62;
/// Smallest shift accepted by [`FixedPointRequant`] (a right shift by 31).
pub const MIN_Q31_SHIFT: i32 = -31;
/// Largest shift accepted by [`FixedPointRequant`] (a left shift by 31).
pub const MAX_Q31_SHIFT: i32 = 31;

/// Number of channels implied by two parameter slices (each of length 1 or C).
fn channel_count(a: usize, b: usize) -> Result<usize, KernelError> {
    match (a, b) {
        (0, _) | (_, 0) => Err(KernelError::ShapeMismatch),
        (1, n) | (n, 1) => Ok(n),
        (a, b) if a == b => Ok(a),
        _ => Err(KernelError::ShapeMismatch),
    }
}

/// Parameter of channel `ch`: the single value for per-tensor slices, else element `ch`.
#[inline]
fn pick(s: &[i32], ch: usize) -> i32 {
    match s {
        [v] => *v,
        _ => s.get(ch).copied().unwrap_or(0),
    }
}

/// Validated Deeploy `RequantShift` parameters (SEMANTICS §3.1).
///
/// `y = clamp(floor((x·mul + add) / 2^shift + 1/2), lo, hi)`, i.e. round half toward +∞;
/// `shift = 0` means no rounding term. Exact: computed in `i64` without overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShiftRequant<'a> {
    mul: &'a [i32],
    add: &'a [i32],
    shift: u32,
    /// `2^(shift-1)`, 0 when `shift` is 0: the rounding term, so that one expression serves every shift.
    round: i64,
    lo: i32,
    hi: i32,
    channels: usize,
}

impl<'a> ShiftRequant<'a> {
    /// Deeploy form: `div = 2^shift`; `signed` clamps to `[-n/2, n/2-1]`, else to `[0, n-1]`.
    ///
    /// `mul`/`add` have length 1 or C (independently). Errors: `shift > 62`, `n_levels < 2`,
    /// or bounds that do not fit `i32` (`InvalidParam`); bad slice lengths (`ShapeMismatch`).
    pub fn new(mul: &'a [i32], add: &'a [i32], shift: u32, n_levels: u32, signed: bool) -> Result<Self, KernelError> {
        if n_levels < 2 {
            return Err(KernelError::InvalidParam);
        }
        let n = i64::from(n_levels);
        let (lo, hi) = if signed { (-(n / 2), n / 2 - 1) } else { (0, n - 1) };
        let lo = i32::try_from(lo).map_err(|_| KernelError::InvalidParam)?;
        let hi = i32::try_from(hi).map_err(|_| KernelError::InvalidParam)?;
        Self::with_bounds(mul, add, shift, lo, hi)
    }

    /// Same rounding with explicit clamp bounds `[lo, hi]` (`lo <= hi`).
    pub fn with_bounds(mul: &'a [i32], add: &'a [i32], shift: u32, lo: i32, hi: i32) -> Result<Self, KernelError> {
        let channels = channel_count(mul.len(), add.len())?;
        if shift > MAX_RQS_SHIFT || lo > hi {
            return Err(KernelError::InvalidParam);
        }
        Ok(Self { mul, add, shift, round: (1i64 << shift) >> 1, lo, hi, channels })
    }

    /// Number of channels C (1 for per-tensor parameters).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Clamp bounds `(lo, hi)` of the output.
    pub fn bounds(&self) -> (i32, i32) {
        (self.lo, self.hi)
    }

    /// The requantization of channels `start..start + len` (per-tensor parameters stay as they are), or `None`
    /// when they are out of range.
    pub fn channel_range(&self, start: usize, len: usize) -> Option<Self> {
        let part = |s: &'a [i32]| if s.len() == 1 { Some(s) } else { s.get(start..start.checked_add(len)?) };
        let (mul, add) = (part(self.mul)?, part(self.add)?);
        let channels = channel_count(mul.len(), add.len()).ok()?;
        Some(Self { mul, add, channels, ..*self })
    }

    /// Requantizes one value of channel `ch` (`ch < channels()`; per-tensor ignores `ch`).
    #[inline]
    pub fn apply(&self, x: i32, ch: usize) -> i32 {
        self.apply_with(x, pick(self.mul, ch), pick(self.add, ch))
    }

    /// [`ShiftRequant::apply`] with the channel's multiplier and offset given (hoisted out of a loop).
    #[inline(always)]
    fn apply_with(&self, x: i32, mul: i32, add: i32) -> i32 {
        // |x·mul| <= 2^62, |add| < 2^31, rounding term <= 2^61: no i64 overflow.
        let acc = i64::from(x) * i64::from(mul) + i64::from(add) + self.round;
        let s = self.shift;
        if LONG_SHIFTS || !(1..32).contains(&s) {
            return self.wide(acc, s);
        }
        self.narrow(acc, s)
    }

    /// `clamp(acc >> s, lo, hi)` in `i64`.
    #[inline(always)]
    fn wide(&self, acc: i64, s: u32) -> i32 {
        (acc >> s).max(i64::from(self.lo)).min(i64::from(self.hi)) as i32
    }

    /// [`Self::wide`] for Deeploy's shifts (`s` in 1..=31) without a 64-bit shift and clamp: the low word of
    /// `acc >> s` from both words; it is the whole result when the bits above it are its sign extension, else
    /// the result is beyond `i32` and clamps by the sign of `acc`.
    #[inline(always)]
    fn narrow(&self, acc: i64, s: u32) -> i32 {
        let (low_word, high_word) = (acc as u32, (acc >> 32) as i32);
        let low = ((low_word >> s) | ((high_word as u32) << (32 - s))) as i32;
        if high_word >> s == low >> 31 {
            low.max(self.lo).min(self.hi)
        } else if high_word < 0 {
            self.lo
        } else {
            self.hi
        }
    }

    /// The requantization of one channel's values (`ch < channels()`), its parameters read once.
    #[inline(always)]
    pub fn channel(&self, ch: usize) -> impl Fn(i32) -> i32 + '_ {
        let (mul, add) = (pick(self.mul, ch), pick(self.add, ch));
        move |x| self.apply_with(x, mul, add)
    }
}

/// Validated TFLite / CMSIS-NN fixed-point requantization parameters.
///
/// `y = clamp(multiply_by_quantized_multiplier(x, multiplier, shift) + zero_point, act_min, act_max)`
/// (the zero-point add wraps in `i32`, as in the C reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPointRequant<'a> {
    multiplier: &'a [i32],
    shift: &'a [i32],
    zero_point: i32,
    act_min: i32,
    act_max: i32,
    channels: usize,
}

impl<'a> FixedPointRequant<'a> {
    /// Q31 `multiplier`s and signed `shift`s (positive = left), each of length 1 or C.
    ///
    /// Errors (`InvalidParam`): a shift outside `[-31, 31]`, a multiplier equal to `i32::MIN`
    /// (where TFLite and CMSIS-NN disagree), or `act_min > act_max`.
    pub fn new(
        multiplier: &'a [i32],
        shift: &'a [i32],
        zero_point: i32,
        act_min: i32,
        act_max: i32,
    ) -> Result<Self, KernelError> {
        let channels = channel_count(multiplier.len(), shift.len())?;
        let shifts_ok = shift.iter().all(|s| (MIN_Q31_SHIFT..=MAX_Q31_SHIFT).contains(s));
        if !shifts_ok || multiplier.contains(&i32::MIN) || act_min > act_max {
            return Err(KernelError::InvalidParam);
        }
        Ok(Self { multiplier, shift, zero_point, act_min, act_max, channels })
    }

    /// Number of channels C (1 for per-tensor parameters).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Clamp bounds `(act_min, act_max)` of the output.
    pub fn bounds(&self) -> (i32, i32) {
        (self.act_min, self.act_max)
    }

    /// Requantizes one value of channel `ch` (`ch < channels()`; per-tensor ignores `ch`).
    #[inline]
    pub fn apply(&self, x: i32, ch: usize) -> i32 {
        let m = pick(self.multiplier, ch);
        let s = pick(self.shift, ch);
        multiply_by_quantized_multiplier(x, m, s).wrapping_add(self.zero_point).max(self.act_min).min(self.act_max)
    }
}

/// Validated high-word requantization: `y = clamp(zero_point + floor((x·mul + 2^31) / 2^32), lo, hi)`.
///
/// The real multiplier is `mul / 2^32` (so below 1/2); rounding is half toward +∞. Exact in `i64`. On Arm
/// DSP cores this is `SMMLAR y, x, mul, zero_point` then `SSAT`, which the packed linear kernel relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HighMulRequant<'a> {
    mul: &'a [i32],
    zero_point: i32,
    lo: i32,
    hi: i32,
}

impl<'a> HighMulRequant<'a> {
    /// Multipliers `mul` (length 1 or C), output zero point and clamp bounds.
    ///
    /// Errors: empty `mul` (`ShapeMismatch`), `lo > hi` (`InvalidParam`).
    pub fn new(mul: &'a [i32], zero_point: i32, lo: i32, hi: i32) -> Result<Self, KernelError> {
        if mul.is_empty() {
            return Err(KernelError::ShapeMismatch);
        }
        if lo > hi {
            return Err(KernelError::InvalidParam);
        }
        Ok(Self { mul, zero_point, lo, hi })
    }

    /// Number of channels C (1 for a per-tensor multiplier).
    pub fn channels(&self) -> usize {
        self.mul.len()
    }

    /// Clamp bounds `(lo, hi)` of the output.
    pub fn bounds(&self) -> (i32, i32) {
        (self.lo, self.hi)
    }

    /// The multipliers (length 1 or C).
    pub fn multipliers(&self) -> &'a [i32] {
        self.mul
    }

    /// The output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// Requantizes one value of channel `ch` (`ch < channels()`; per-tensor ignores `ch`).
    #[inline]
    pub fn apply(&self, x: i32, ch: usize) -> i32 {
        high_mul(x, pick(self.mul, ch), self.zero_point).max(self.lo).min(self.hi)
    }
}

/// `zero_point + floor((x·mul + 2^31) / 2^32)` before clamping: Arm's `SMMLAR` (the sum wraps in `i32`
/// like the instruction; it cannot for int8 outputs of any `i32` accumulator).
#[inline]
pub fn high_mul(x: i32, mul: i32, zero_point: i32) -> i32 {
    let p = (i64::from(zero_point) << 32).wrapping_add(i64::from(x) * i64::from(mul)).wrapping_add(1 << 31);
    (p >> 32) as i32
}

/// Validated step-function requantization (per tensor): `y = lo + #{j : thresholds[j] ≤ x}`.
///
/// `thresholds` is non-decreasing, so `y` is a non-decreasing function of `x` with values in
/// `[lo, lo + thresholds.len()]`; `thresholds[j]` is the smallest `x` with `y ≥ lo + j + 1`. Found by
/// binary search (`⌈log2(len + 1)⌉` comparisons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdRequant<'a> {
    thresholds: &'a [i32],
    lo: i32,
    hi: i32,
}

impl<'a> ThresholdRequant<'a> {
    /// Steps `thresholds` above the lowest output `lo`.
    ///
    /// Errors (`InvalidParam`): thresholds not non-decreasing, or `lo + len` outside `i32`.
    pub fn new(thresholds: &'a [i32], lo: i32) -> Result<Self, KernelError> {
        let sorted = thresholds.windows(2).all(|w| matches!(w, [a, b] if a <= b));
        let hi = i32::try_from(thresholds.len()).ok().and_then(|n| lo.checked_add(n));
        match hi {
            Some(hi) if sorted => Ok(Self { thresholds, lo, hi }),
            _ => Err(KernelError::InvalidParam),
        }
    }

    /// Output bounds `(lo, lo + len)`.
    pub fn bounds(&self) -> (i32, i32) {
        (self.lo, self.hi)
    }

    /// Requantizes one value.
    #[inline]
    pub fn apply(&self, x: i32) -> i32 {
        // partition_point <= len, and lo + len fits i32 (checked in `new`).
        self.lo.wrapping_add(self.thresholds.partition_point(|&t| t <= x) as i32)
    }
}

/// Any requantization scheme, as taken by the fused kernels (matmul, conv, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requant<'a> {
    /// Deeploy `RequantShift`.
    Shift(ShiftRequant<'a>),
    /// TFLite / CMSIS-NN Q31 multiplier and shift.
    FixedPoint(FixedPointRequant<'a>),
    /// A tabulated step function (per tensor).
    Threshold(ThresholdRequant<'a>),
    /// High word of `x·mul` (Arm `SMMLAR`).
    HighMul(HighMulRequant<'a>),
}

impl Requant<'_> {
    /// Number of channels C (1 for per-tensor parameters).
    pub fn channels(&self) -> usize {
        match self {
            Requant::Shift(r) => r.channels(),
            Requant::FixedPoint(r) => r.channels(),
            Requant::Threshold(_) => 1,
            Requant::HighMul(r) => r.channels(),
        }
    }

    /// Clamp bounds `(lo, hi)` of the output.
    pub fn bounds(&self) -> (i32, i32) {
        match self {
            Requant::Shift(r) => r.bounds(),
            Requant::FixedPoint(r) => r.bounds(),
            Requant::Threshold(r) => r.bounds(),
            Requant::HighMul(r) => r.bounds(),
        }
    }

    /// Requantizes one value of channel `ch` (`ch < channels()`; per-tensor ignores `ch`).
    #[inline]
    pub fn apply(&self, x: i32, ch: usize) -> i32 {
        match self {
            Requant::Shift(r) => r.apply(x, ch),
            Requant::FixedPoint(r) => r.apply(x, ch),
            Requant::Threshold(r) => r.apply(x),
            Requant::HighMul(r) => r.apply(x, ch),
        }
    }

    /// `Ok` if the output range fits `T` and there are 1 or `channels` channels.
    pub(crate) fn check<T: IntElem>(&self, channels: usize) -> Result<(), KernelError> {
        let (lo, hi) = self.bounds();
        check_range::<T>(lo, hi)?;
        let c = self.channels();
        if c == 1 || c == channels {
            Ok(())
        } else {
            Err(KernelError::ShapeMismatch)
        }
    }
}

/// Runs `$body` with `$apply` bound to `$rq`'s concrete scheme as a `Fn(i32, usize) -> i32` (value, channel): one
/// copy of `$body` per scheme, so a kernel's inner loop inlines the arithmetic instead of matching per element.
macro_rules! with_scheme {
    ($rq:expr, |$apply:ident| $body:expr) => {
        match $rq {
            $crate::requant::Requant::Shift(r) => {
                let $apply = |x: i32, ch: usize| r.apply(x, ch);
                $body
            }
            $crate::requant::Requant::FixedPoint(r) => {
                let $apply = |x: i32, ch: usize| r.apply(x, ch);
                $body
            }
            $crate::requant::Requant::HighMul(r) => {
                let $apply = |x: i32, ch: usize| r.apply(x, ch);
                $body
            }
            $crate::requant::Requant::Threshold(r) => {
                let $apply = |x: i32, _: usize| r.apply(x);
                $body
            }
        }
    };
}
pub(crate) use with_scheme;

/// TFLite `SaturatingRoundingDoublingHighMul`: `floor(a·b / 2^31 + 1/2)` (halves toward +∞).
///
/// The one overflowing case `a = b = i32::MIN` saturates to `i32::MAX`. Otherwise equal to
/// CMSIS-NN `arm_nn_doubling_high_mult_no_sat`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    // TFLite adds a sign-dependent nudge and divides toward zero; both are `floor((ab + 2^30) / 2^31)`, one
    // arithmetic shift (no 64-bit division on the MCU).
    ((i64::from(a) * i64::from(b) + (1 << 30)) >> 31) as i32
}

/// gemmlowp `RoundingDivideByPowerOfTwo`: `x / 2^exponent` rounded to nearest, halves away from zero.
///
/// Any `exponent` is accepted (values above 31 give 0, or ±1 for `x = i32::MIN`, exponent 32).
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    if exponent < 32 {
        // The usual case in 32 bits (`mask >> 1` + 1 cannot overflow).
        let mask = ((1u32 << exponent) - 1) as i32;
        let threshold = (mask >> 1) + i32::from(x < 0);
        return (x >> exponent) + i32::from((x & mask) > threshold);
    }
    let e = exponent.min(62);
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let floor = x >> e;
    let threshold = (mask >> 1) + i64::from(floor < 0);
    (floor + i64::from(remainder > threshold)) as i32
}

/// TFLite `MultiplyByQuantizedMultiplier` / CMSIS-NN `arm_nn_requantize` (dual rounding):
/// `rounding_divide_by_pot(srdhm(x·2^max(shift,0), multiplier), max(-shift,0))`.
///
/// `shift` is clamped to `[-31, 31]`; `x·2^left` wraps modulo 2^32 like the C reference.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let s = shift.max(MIN_Q31_SHIFT).min(MAX_Q31_SHIFT);
    let left = if s > 0 { s.unsigned_abs() } else { 0 };
    let right = if s > 0 { 0 } else { s.unsigned_abs() };
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x.wrapping_shl(left), multiplier), right)
}

/// Requantizes a tensor `x` to `out` (same length) with per-tensor or per-channel parameters.
///
/// Layout: `x` is viewed as `[outer, C, inner]` (row-major) with `C = rq.channels()`, so element
/// `i` uses channel `(i / inner) % C`. Per-row on `[rows, cols]`: C = rows, `inner = cols`;
/// per-channel on NCHW: `inner = H·W`. With C = 1, `inner` is ignored.
/// Errors: length mismatch, `inner = 0` with C > 1, or bounds not representable in `T`.
pub fn requantize<I: IntElem, T: IntElem>(
    x: &[I],
    rq: &Requant<'_>,
    inner: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    let inner = check_channels::<T>(rq, inner, x.len())?;
    let c = rq.channels();
    for (i, (xs, os)) in x.chunks_exact(inner).zip(out.chunks_exact_mut(inner)).enumerate() {
        channel_run(rq, i % c, xs.iter().zip(os).map(|(&v, o)| (v.to_i32(), o)));
    }
    Ok(())
}

/// [`requantize`] in place, for an input and output of the same type: `x[i] = rq(x[i])` with the
/// same channel layout (identical results; the tensor needs one buffer instead of two).
pub fn requantize_in_place<T: IntElem>(x: &mut [T], rq: &Requant<'_>, inner: usize) -> Result<(), KernelError> {
    let inner = check_channels::<T>(rq, inner, x.len())?;
    let c = rq.channels();
    for (i, row) in x.chunks_exact_mut(inner).enumerate() {
        channel_run(rq, i % c, row.iter_mut().map(|v| (v.to_i32(), v)));
    }
    Ok(())
}

/// Checks `rq` against `len` values laid out `[outer, channels, inner]`; returns the run length of one channel
/// (all `len` values for per-tensor parameters).
fn check_channels<T: IntElem>(rq: &Requant<'_>, inner: usize, len: usize) -> Result<usize, KernelError> {
    let c = rq.channels();
    rq.check::<T>(c)?;
    if c == 1 {
        return Ok(len.max(1));
    }
    let block = c.checked_mul(inner).ok_or(KernelError::ShapeMismatch)?;
    if inner == 0 || len.checked_rem(block) != Some(0) {
        return Err(KernelError::ShapeMismatch);
    }
    Ok(inner)
}

/// Requantizes a run of values of channel `ch` into their slots, the scheme chosen and (for `RequantShift`, the
/// exact-integer graphs' everywhere) the channel's parameters read once per run.
#[inline(always)]
fn channel_run<'v, T: IntElem + 'v>(rq: &Requant<'_>, ch: usize, run: impl Iterator<Item = (i32, &'v mut T)>) {
    if let Requant::Shift(r) = rq {
        let f = r.channel(ch);
        run.for_each(|(v, o)| *o = T::from_i32_sat(f(v)));
        return;
    }
    with_scheme!(rq, |apply| run.for_each(|(v, o)| *o = T::from_i32_sat(apply(v, ch))));
}

/// Change of scale and zero point of a narrow tensor: `y = rq.apply(x + input_offset)`, per tensor
/// (TFLite's int8 `REQUANTIZE`/`QUANTIZE` between int8 scales).
///
/// Errors: lengths (`ShapeMismatch`); a per-channel `rq`, an offset outside `[-256, 256]`, or output
/// bounds outside `T` (`InvalidParam`).
pub fn rescale<I: IntElem, T: IntElem>(
    x: &[I],
    input_offset: i32,
    rq: &FixedPointRequant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    let (lo, hi) = rq.bounds();
    check_range::<T>(lo, hi)?;
    if rq.channels() != 1 || !(-256..=256).contains(&input_offset) || I::MAX > 255 {
        return Err(KernelError::InvalidParam);
    }
    if x.len() != out.len() {
        return Err(KernelError::ShapeMismatch);
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = T::from_i32_sat(rq.apply(v.to_i32() + input_offset, 0));
    }
    Ok(())
}

/// [`rescale`] writing over its int8 input.
pub fn rescale_in_place(x: &mut [i8], input_offset: i32, rq: &FixedPointRequant<'_>) -> Result<(), KernelError> {
    let (lo, hi) = rq.bounds();
    check_range::<i8>(lo, hi)?;
    if rq.channels() != 1 || !(-256..=256).contains(&input_offset) {
        return Err(KernelError::InvalidParam);
    }
    for v in x.iter_mut() {
        *v = i8::from_i32_sat(rq.apply(i32::from(*v) + input_offset, 0));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::float_arithmetic)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Independent model of RequantShift: floor(acc / 2^s + 1/2) = floor((2·acc + 2^s) / 2^(s+1)).
    fn model_rqs(x: i32, mul: i32, add: i32, s: u32, lo: i32, hi: i32) -> i32 {
        let acc = i128::from(x) * i128::from(mul) + i128::from(add);
        let y = floor_div(2 * acc + (1i128 << s), 1i128 << (s + 1));
        y.clamp(i128::from(lo), i128::from(hi)) as i32
    }

    #[test]
    fn threshold_hand_computed() {
        // y = -2 below 0, -1 on 0..=9, 0 from 10 (two steps at 10: straight to 1), i.e. thresholds [0, 10, 10].
        let r = ThresholdRequant::new(&[0, 10, 10], -2).unwrap();
        assert_eq!(r.bounds(), (-2, 1));
        let ys: Vec<i32> = [i32::MIN, -1, 0, 9, 10, 11, i32::MAX].iter().map(|&x| r.apply(x)).collect();
        assert_eq!(ys, [-2, -2, -1, -1, 1, 1, 1]);
        assert_eq!(ThresholdRequant::new(&[], 5).unwrap().apply(0), 5);
        assert_eq!(ThresholdRequant::new(&[1, 0], 0), Err(KernelError::InvalidParam));
        assert_eq!(ThresholdRequant::new(&[0, 1], i32::MAX - 1), Err(KernelError::InvalidParam));
        // Through the enum into an int8 tensor.
        let rq = Requant::Threshold(r);
        let mut out = [0i8; 3];
        requantize(&[-5i32, 5, 50], &rq, 1, &mut out).unwrap();
        assert_eq!(out, [-2, -1, 1]);
        assert_eq!(rq.channels(), 1);
    }

    #[test]
    fn rqs_hand_computed() {
        let r = ShiftRequant::new(&[1], &[0], 1, 256, true).unwrap();
        assert_eq!(r.apply(3, 0), 2); // 1.5 -> 2
        assert_eq!(r.apply(-3, 0), -1); // -1.5 -> -1 (half toward +inf)
        assert_eq!(r.apply(-4, 0), -2);
        assert_eq!(r.apply(1000, 0), 127);
        assert_eq!(r.apply(-1000, 0), -128);
        let u = ShiftRequant::new(&[3], &[-5], 0, 256, false).unwrap();
        assert_eq!(u.apply(4, 0), 7);
        assert_eq!(u.apply(1, 0), 0);
        assert_eq!(u.apply(100, 0), 255);
        // ICCT-like: large negative add, div 2^16.
        let r = ShiftRequant::new(&[300], &[-17_473_536], 16, 256, true).unwrap();
        assert_eq!(r.apply(60_000, 0), model_rqs(60_000, 300, -17_473_536, 16, -128, 127));
    }

    #[test]
    fn rqs_per_row_kernel() {
        // [2, 3] with per-row mul/add.
        let mul = [1, 2];
        let add = [0, 10];
        let rq = Requant::Shift(ShiftRequant::new(&mul, &add, 2, 256, true).unwrap());
        let x = [1i32, 2, 3, 1, 2, 3];
        let mut out = [0i8; 6];
        requantize(&x, &rq, 3, &mut out).unwrap();
        // row0: (x+2)>>2 = 0,1,1 ; row1: (2x+10+2)>>2 = 3,4,4
        assert_eq!(out, [0, 1, 1, 3, 4, 4]);
    }

    #[test]
    fn rqs_errors() {
        assert_eq!(ShiftRequant::new(&[1, 2], &[1, 2, 3], 1, 256, true), Err(KernelError::ShapeMismatch));
        assert_eq!(ShiftRequant::new(&[], &[1], 1, 256, true), Err(KernelError::ShapeMismatch));
        assert_eq!(ShiftRequant::new(&[1], &[1], 63, 256, true), Err(KernelError::InvalidParam));
        assert_eq!(ShiftRequant::new(&[1], &[1], 1, 1, true), Err(KernelError::InvalidParam));
        let rq = Requant::Shift(ShiftRequant::new(&[1, 1], &[0], 1, 256, true).unwrap());
        let mut out = [0i8; 4];
        assert_eq!(requantize(&[0i32; 3], &rq, 1, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(requantize(&[0i32; 4], &rq, 0, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(requantize(&[0i32; 6], &rq, 2, &mut [0i8; 6]), Err(KernelError::ShapeMismatch));
        // signed 256-level output does not fit u8.
        let mut out = [0u8; 4];
        assert_eq!(requantize(&[0i32; 4], &rq, 1, &mut out), Err(KernelError::InvalidParam));
    }

    #[test]
    fn q31_hand_computed() {
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30), 1 << 29);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2); // 1.5 -> 2
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1); // -1.5 -> -1
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(-4, 1), -2);
        assert_eq!(rounding_divide_by_pot(7, 2), 2);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 32), -1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 33), 0);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 0), i32::MAX);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 0), i32::MIN);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(multiply_by_quantized_multiplier(100, 1 << 30, 0), 50);
        assert_eq!(multiply_by_quantized_multiplier(-3, 1 << 30, -1), -1); // -0.75
        assert_eq!(multiply_by_quantized_multiplier(1, 1 << 30, 2), 2);
        assert_eq!(multiply_by_quantized_multiplier(1000, i32::MAX, -31), 0);
        let r = FixedPointRequant::new(&[1 << 30], &[-1], 5, -128, 127).unwrap();
        assert_eq!(r.apply(10, 0), 8); // 10·0.25 + 5 = 7.5 -> srdhm(10)=5, rdbp(5,1)=3, +5
        assert_eq!(r.apply(10_000, 0), 127);
        assert_eq!(r.apply(-10_000, 0), -128);
    }

    #[test]
    fn q31_errors() {
        assert_eq!(FixedPointRequant::new(&[1], &[32], 0, -128, 127), Err(KernelError::InvalidParam));
        assert_eq!(FixedPointRequant::new(&[i32::MIN], &[0], 0, -128, 127), Err(KernelError::InvalidParam));
        assert_eq!(FixedPointRequant::new(&[1], &[0], 0, 5, 4), Err(KernelError::InvalidParam));
        assert_eq!(FixedPointRequant::new(&[1, 2], &[0, 1, 2], 0, -128, 127), Err(KernelError::ShapeMismatch));
    }

    fn rqs_shift() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), Just(1), Just(16), Just(31), Just(62), 0u32..=62]
    }

    #[test]
    fn rescale_hand_computed_and_errors() {
        // (x - 3)·0.5 + 10 with Q31 0.5 = (2^30, 0): [5, 3, -120] → [11, 10, -51] (-61.5 rounds toward +∞).
        let (m, sh) = ([1 << 30], [0]);
        let rq = FixedPointRequant::new(&m, &sh, 10, -128, 127).unwrap();
        let mut out = [0i8; 3];
        rescale(&[5i8, 3, -120], -3, &rq, &mut out).unwrap();
        assert_eq!(out, [11, 10, -51]);
        assert_eq!(rescale(&[1i8], 300, &rq, &mut out[..1]), Err(KernelError::InvalidParam));
        assert_eq!(rescale(&[1i8, 2], 0, &rq, &mut out[..1]), Err(KernelError::ShapeMismatch));
        let (m2, s2) = ([1 << 30, 1 << 30], [0, 0]);
        let per_channel = FixedPointRequant::new(&m2, &s2, 0, -128, 127).unwrap();
        assert_eq!(rescale(&[1i8], 0, &per_channel, &mut out[..1]), Err(KernelError::InvalidParam));
    }

    proptest! {
        #[test]
        fn requantize_in_place_equals_requantize(c in 1usize..5, inner in 1usize..6, outer in 1usize..4,
                                                 shift in 0u32..12, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let x = g.vec_i8(c * inner * outer);
            let mul = g.vec_i32(c, -300, 300);
            let add = g.vec_i32(c, -2000, 2000);
            let rq = Requant::Shift(ShiftRequant::new(&mul, &add, shift, 256, true).unwrap());
            let mut want = std::vec![0i8; x.len()];
            requantize(&x, &rq, inner, &mut want).unwrap();
            let mut got = x.clone();
            requantize_in_place(&mut got, &rq, inner).unwrap();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        /// The shift forms equal TFLite's reference: a sign-dependent nudge and a division toward zero, then
        /// the nearest integer of `x / 2^e` with halves away from zero.
        #[test]
        fn fixed_point_steps_equal_tflite(a in any::<i32>(), b in any::<i32>(), x in any::<i32>(), e in 0u32..40) {
            let ab = i64::from(a) * i64::from(b);
            let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
            let tflite = if a == i32::MIN && b == i32::MIN { i32::MAX } else { ((ab + nudge) / (1i64 << 31)) as i32 };
            prop_assert_eq!(saturating_rounding_doubling_high_mul(a, b), tflite);
            let d = 1i128 << e;
            let mag = (2 * i128::from(x).abs() + d) / (2 * d);
            let want = if x < 0 { -mag } else { mag };
            prop_assert_eq!(i128::from(rounding_divide_by_pot(x, e)), if e == 0 { i128::from(x) } else { want });
        }
    }

    proptest! {
        #[test]
        fn threshold_counts_the_steps_below(mut t in proptest::collection::vec(-1000i32..1000, 0..40),
                                            lo in -200i32..200, x in -1100i32..1100) {
            t.sort_unstable();
            let r = ThresholdRequant::new(&t, lo).unwrap();
            let want = lo + t.iter().filter(|&&v| v <= x).count() as i32;
            prop_assert_eq!(r.apply(x), want);
        }
    }

    proptest! {
        #[test]
        fn rescale_matches_model(x in proptest::collection::vec(any::<i8>(), 1..70), off in -128i32..=128,
                                 m in q31_multiplier(), s in -31i32..=0, zp in -128i32..=127) {
            let (ms, ss) = ([m], [s]);
            let rq = FixedPointRequant::new(&ms, &ss, zp, -128, 127).unwrap();
            let mut out = std::vec![0i8; x.len()];
            rescale(&x, off, &rq, &mut out).unwrap();
            for (&v, &o) in x.iter().zip(&out) {
                let want = model_q31(i32::from(v) + off, m, s).wrapping_add(zp).clamp(-128, 127);
                prop_assert_eq!(i32::from(o), want);
            }
            let mut inplace = x.clone();
            rescale_in_place(&mut inplace, off, &rq).unwrap();
            prop_assert_eq!(inplace, out);
        }

        #[test]
        fn rqs_matches_model(x in any::<i32>(), mul in any::<i32>(), add in any::<i32>(),
                             s in rqs_shift(), n in prop_oneof![Just(256u32), Just(65536), 2u32..300],
                             signed in any::<bool>()) {
            let (mul, add) = ([mul], [add]);
            let r = ShiftRequant::new(&mul, &add, s, n, signed).unwrap();
            let (lo, hi) = if signed { (-(n as i32 / 2), n as i32 / 2 - 1) } else { (0, n as i32 - 1) };
            prop_assert_eq!(r.apply(x, 0), model_rqs(x, mul[0], add[0], s, lo, hi));
        }

        #[test]
        fn rqs_narrow_equals_wide(x in any::<i32>(), mul in any::<i32>(), add in any::<i32>(), s in 1u32..=31,
                                  (lo, hi) in prop_oneof![Just((-128, 127)), Just((0, 255)), Just((i32::MIN, i32::MAX))]) {
            let (mul, add) = ([mul], [add]);
            let r = ShiftRequant::with_bounds(&mul, &add, s, lo, hi).unwrap();
            let acc = i64::from(x) * i64::from(mul[0]) + i64::from(add[0]) + r.round;
            prop_assert_eq!(r.narrow(acc, s), r.wide(acc, s));
            prop_assert_eq!(r.wide(acc, s), model_rqs(x, mul[0], add[0], s, lo, hi));
        }

        #[test]
        fn rqs_exact_halves_round_up(x in -30_000i32..30_000, q in -1000i32..1000, s in 1u32..=20) {
            // acc = x + add = q·2^s + 2^(s-1): exactly q + 1/2, must give q + 1.
            let add = (q << s) + (1 << (s - 1)) - x;
            let add = [add];
            let r = ShiftRequant::with_bounds(&[1], &add, s, i32::MIN, i32::MAX).unwrap();
            prop_assert_eq!(r.apply(x, 0), q + 1);
        }

        #[test]
        fn rqs_kernel_per_channel(rows in dim(), cols in dim(), outer in 1usize..3, s in rqs_shift(),
                                  seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let mul: Vec<i32> = (0..rows).map(|_| g.i32_in(-70_000, 70_000)).collect();
            let add: Vec<i32> = (0..rows).map(|_| g.i32_in(i32::MIN, i32::MAX)).collect();
            let x: Vec<i32> = (0..outer * rows * cols).map(|_| g.i32_in(-1 << 20, 1 << 20)).collect();
            let rq = Requant::Shift(ShiftRequant::new(&mul, &add, s, 256, true).unwrap());
            let mut out = std::vec![0i8; x.len()];
            requantize(&x, &rq, cols, &mut out).unwrap();
            for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
                let ch = (i / cols) % rows;
                prop_assert_eq!(i32::from(o), model_rqs(v, mul[ch], add[ch], s, -128, 127));
            }
        }

        #[test]
        fn q31_matches_model(x in any::<i32>(), m in q31_multiplier(), s in q31_shift()) {
            // Keep x·2^left inside i32 (the model does not wrap).
            let left = s.max(0) as u32;
            let x = x >> left;
            prop_assert_eq!(multiply_by_quantized_multiplier(x, m, s), model_q31(x, m, s));
        }

        #[test]
        fn q31_close_to_real(x in -1_000_000i32..1_000_000, m in (1i32 << 30)..i32::MAX, s in -20i32..=4) {
            let x = x >> s.max(0);
            let real = f64::from(x) * f64::from(m) / 2f64.powi(31) * 2f64.powi(s);
            let got = f64::from(multiply_by_quantized_multiplier(x, m, s));
            prop_assert!((got - real).abs() <= 1.0, "got {got} real {real}");
        }

        #[test]
        fn q31_kernel_per_channel(rows in dim(), cols in dim(), zp in -128i32..128, seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let mult: Vec<i32> = (0..rows).map(|_| g.i32_in(1 << 30, i32::MAX)).collect();
            let shift: Vec<i32> = (0..rows).map(|_| g.i32_in(-31, 1)).collect();
            let x: Vec<i32> = (0..rows * cols).map(|_| g.i32_in(-1 << 24, 1 << 24)).collect();
            let rq = Requant::FixedPoint(FixedPointRequant::new(&mult, &shift, zp, -128, 127).unwrap());
            let mut out = std::vec![0i8; x.len()];
            requantize(&x, &rq, cols, &mut out).unwrap();
            for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
                let ch = i / cols;
                let want = (model_q31(v, mult[ch], shift[ch]) + zp).clamp(-128, 127);
                prop_assert_eq!(i32::from(o), want);
            }
        }
    }
}
