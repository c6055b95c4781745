//! The GEMM shapes of the benchmark and their pseudo-random data.
//!
//! Shared verbatim with the host: `crates/mote-bench/src/gemm.rs` includes this file with `#[path]` to regenerate
//! every shape's data and compute the reference output hash, so it must stay `core`-only and free of
//! crate-relative paths.
//!
//! A GEMM `M×K×N` is the linear layer `x [M,K] · w [N,K]ᵀ → out [M,N]`: M tokens, K input features, N output
//! features.

/// One GEMM shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Rows of the input (tokens).
    pub m: usize,
    /// Reduction length (input features).
    pub k: usize,
    /// Output features.
    pub n: usize,
}

const fn s(m: usize, k: usize, n: usize) -> Shape {
    Shape { m, k, n }
}

/// Tokens of the benchmark grid.
const GRID_M: [usize; 4] = [16, 64, 81, 128];
/// Input features of the benchmark grid.
const GRID_K: [usize; 5] = [16, 32, 64, 128, 256];
/// Output features of the benchmark grid.
const GRID_N: [usize; 5] = [16, 32, 64, 128, 256];
/// Shapes measured besides the grid: the CMSIS-NN anchor `1×64×64` (a single token), not in the grid.
pub const EXTRA: [Shape; 1] = [s(1, 64, 64)];

/// Number of benchmark shapes: the M×K×N grid, then [`EXTRA`].
pub const BENCH_LEN: usize = GRID_M.len() * GRID_K.len() * GRID_N.len() + EXTRA.len();

/// The benchmark shapes: every `M×K×N` of {16, 64, 81, 128} × {16, 32, 64, 128, 256} × {16, 32, 64, 128, 256}
/// (M outermost, N innermost), then `1×64×64`.
pub const BENCH: [Shape; BENCH_LEN] = {
    let mut out = [s(0, 0, 0); BENCH_LEN];
    let mut i = 0;
    while i < BENCH_LEN - EXTRA.len() {
        let (nk, nn) = (GRID_K.len(), GRID_N.len());
        out[i] = s(GRID_M[i / (nk * nn)], GRID_K[i / nn % nk], GRID_N[i % nn]);
        i += 1;
    }
    while i < BENCH_LEN {
        out[i] = EXTRA[i - (BENCH_LEN - EXTRA.len())];
        i += 1;
    }
    out
};

/// The odd-size set the tests check on every core: odd sizes everywhere (single rows and columns, an odd row count, `k` not a
/// multiple of 4 and below, between and above the kernel's eight-quad unrolling, odd `n`), and two regular
/// shapes for the unrolled loops.
pub const TEST: [Shape; 20] = [
    s(1, 1, 1),
    s(1, 3, 2),
    s(1, 64, 64),
    s(2, 5, 3),
    s(3, 1, 17),
    s(3, 17, 1),
    s(3, 33, 65),
    s(4, 4, 4),
    s(5, 35, 9),
    s(7, 2, 6),
    s(16, 16, 16),
    s(17, 3, 3),
    s(17, 17, 17),
    s(17, 65, 33),
    s(33, 31, 18),
    s(64, 64, 64),
    s(65, 1, 65),
    s(65, 67, 5),
    s(65, 129, 17),
    s(81, 250, 131),
];

/// A named list of shapes, run in order; shape `i` is measured in instruction-count region `first_region + i`.
#[derive(Clone, Copy, Debug)]
pub struct Set {
    /// `bench` or `test` (printed on each output line).
    pub name: &'static str,
    /// Region id of the first shape.
    pub first_region: u32,
    /// The shapes.
    pub shapes: &'static [Shape],
}

/// What the firmware runs: the odd-size [`TEST`] set (regions 1000…), then the [`BENCH`] set (regions 0…).
pub const SETS: [Set; 2] =
    [Set { name: "test", first_region: 1000, shapes: &TEST }, Set { name: "bench", first_region: 0, shapes: &BENCH }];

/// Added to every activation before the product (the negated input zero point).
pub const INPUT_OFFSET: i32 = 7;
/// Zero point of the int8 output.
pub const ZERO_POINT: i32 = -5;

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

/// `⌊√v⌋`.
pub const fn isqrt(v: usize) -> usize {
    let mut r = 0;
    while (r + 1) * (r + 1) <= v {
        r += 1;
    }
    r
}

/// Fills the data of `shape`: `x [m·k]` and `w [n·k]` uniform over the whole int8 range, `bias [n]` in
/// ±20000, and per-channel `HighMul` multipliers `mul [n]` between ½ and 3⁄2 of `2^31 / (80·⌊√k⌋)`, which
/// maps the accumulator's spread (about 5500·√k for uniform int8 data) to about ±35 on the int8 output:
/// outputs use most of the range and saturate rarely.
///
/// The slices may be longer than the shape needs (static buffers sized for the largest shape); only the
/// first `m·k`, `n·k`, `n`, `n` elements are written. The values depend on the shape only.
pub fn fill(shape: Shape, x: &mut [i8], w: &mut [i8], bias: &mut [i32], mul: &mut [i32]) {
    let Shape { m, k, n } = shape;
    let mut g = Lcg(0x6765_6d6d ^ ((m as u32) << 20) ^ ((k as u32) << 10) ^ n as u32); // "gemm"
    for v in x.iter_mut().take(m * k).chain(w.iter_mut().take(n * k)) {
        *v = g.in_range(-128, 127) as i8;
    }
    for b in bias.iter_mut().take(n) {
        *b = g.in_range(-20_000, 20_000);
    }
    let base = (1i64 << 31) / (80 * isqrt(k).max(1) as i64);
    for v in mul.iter_mut().take(n) {
        *v = (base / 2 + base * i64::from(g.in_range(0, 1023)) / 1024) as i32;
    }
}

/// 32-bit FNV-1a of the output bytes (each `i8` as its two's-complement byte).
pub fn fnv1a(out: &[i8]) -> u32 {
    out.iter().fold(0x811c_9dc5, |h, &b| (h ^ u32::from(b as u8)).wrapping_mul(0x0100_0193))
}
