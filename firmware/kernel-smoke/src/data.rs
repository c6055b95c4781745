//! Fixed pseudo-random inputs and parameters of the smoke kernels.
//!
//! Shared verbatim with the host: `crates/mote-qemu/tests` include this file with `#[path]` and compute the
//! expected outputs from it, so it must stay `core`-only and free of crate-relative paths.

/// Rows of the linear layer's input (tokens).
pub const M: usize = 16;
/// Input features (reduction length).
pub const K: usize = 32;
/// Output features; also the softmax row length.
pub const N: usize = 32;

/// Requantization shift of the linear layer (Deeploy RequantShift form).
pub const RQ_SHIFT: u32 = 14;
/// iSoftmax parameters (the values of Deeploy's tests): `(coeff_a, coeff_b, coeff_c, log2, n_levels)`.
pub const SOFTMAX: (i32, i32, i64, i32, u32) = (1, 30, 200, 10, 256);

/// A 32-bit linear congruential generator (Numerical Recipes constants); the high bits are used.
pub struct Lcg(pub u32);

impl Lcg {
    /// Next raw value.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// A value in `lo..=hi` (`lo <= hi`, range below 2^16).
    pub fn in_range(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (hi - lo + 1) as u32;
        lo + ((self.next_u32() >> 16) % span) as i32
    }
}

/// All inputs of the smoke run.
pub struct Inputs {
    /// Linear input `x [M, K]`.
    pub x: [i8; M * K],
    /// Linear weights `w [N, K]`.
    pub w: [i8; N * K],
    /// Linear bias `[N]`.
    pub bias: [i32; N],
    /// Per-output-channel requantization multipliers `[N]`.
    pub rq_mul: [i32; N],
    /// Per-output-channel requantization offsets `[N]`.
    pub rq_add: [i32; N],
}

/// Generates the inputs (same values on every target).
pub fn inputs() -> Inputs {
    let mut g = Lcg(0x6d6f_7465); // "mote"
    let mut v = Inputs { x: [0; M * K], w: [0; N * K], bias: [0; N], rq_mul: [0; N], rq_add: [0; N] };
    for x in v.x.iter_mut().chain(v.w.iter_mut()) {
        *x = g.in_range(-128, 127) as i8;
    }
    for b in &mut v.bias {
        *b = g.in_range(-2000, 2000);
    }
    // mul / 2^14 ≈ 1/650 maps the typical accumulator (|acc| ≈ 3·10^4) onto most of the int8 range.
    for (m, a) in v.rq_mul.iter_mut().zip(&mut v.rq_add) {
        *m = g.in_range(15, 35);
        *a = g.in_range(-1000, 1000);
    }
    v
}
