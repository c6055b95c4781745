//! Test-only helpers: strategies, a tiny deterministic RNG and wide-integer models.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use proptest::prelude::*;
use std::vec::Vec;

/// Sizes the brief asks for (1, 3, 17, 65) plus small random ones.
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(17), Just(65), 1usize..8]
}

/// Small sizes for kernels with cubic cost.
pub fn small_dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(17), 1usize..6]
}

/// Q31 multipliers: typical [2^30, 2^31), edge values, and anything else.
pub fn q31_multiplier() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(1i32 << 30),
        Just(i32::MAX),
        Just(0),
        Just(i32::MIN + 1),
        (1i32 << 30)..i32::MAX,
        (i32::MIN + 1)..=i32::MAX,
    ]
}

/// Q31 shifts including 0, ±1, ±31.
pub fn q31_shift() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0i32), Just(1), Just(-1), Just(31), Just(-31), -31i32..=31]
}

/// Floor division for any non-zero divisor (written naively on purpose).
pub fn floor_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// Independent model of TFLite `MultiplyByQuantizedMultiplier` (assumes x·2^left fits i32).
pub fn model_q31(x: i32, m: i32, s: i32) -> i32 {
    let left = s.max(0) as u32;
    let right = (-s).max(0) as u32;
    let p = (i128::from(x) << left) * i128::from(m);
    // Step 1: nearest integer to p / 2^31, halves toward +inf, saturated.
    let r1 = floor_div(2 * p + (1i128 << 31), 1i128 << 32).clamp(i128::from(i32::MIN), i128::from(i32::MAX));
    // Step 2: nearest integer to r1 / 2^right, halves away from zero.
    let d = 1i128 << right;
    let mag = (2 * r1.abs() + d) / (2 * d);
    let r2 = if right == 0 {
        r1
    } else if r1 < 0 {
        -mag
    } else {
        mag
    };
    r2 as i32
}

/// Deterministic splitmix64 generator for bulk test data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` (inclusive), with extra weight on the two ends.
    pub fn i32_in(&mut self, lo: i32, hi: i32) -> i32 {
        let r = self.next_u64();
        match r % 16 {
            0 => lo,
            1 => hi,
            _ => {
                let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
                (i64::from(lo) + ((r >> 8) % span) as i64) as i32
            }
        }
    }

    pub fn vec_i8(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.i32_in(-128, 127) as i8).collect()
    }

    pub fn vec_u8(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.i32_in(0, 255) as u8).collect()
    }

    pub fn vec_i32(&mut self, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..n).map(|_| self.i32_in(lo, hi)).collect()
    }
}
