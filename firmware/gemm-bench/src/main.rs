//! GEMM micro-benchmark firmware: the packed int8 linear layer (`mote_kernels::packed::linear_packed` with the
//! build's [`NATIVE_LAYOUT`]) over the shapes of [`shapes::SETS`], each call alone in an instruction-count
//! region, checked on the MCU against the reference `linear_requant`.
//!
//! Per shape, with its data from [`shapes::fill`]:
//! 1. the weights are packed with [`pack_linear`] (offline work, not measured);
//! 2. the shape's region (`mark(id)` to `mark(MARK_END)`, ids from [`shapes::Set::first_region`]) is exactly one
//!    [`linear_packed`] call: argument checks, activation panel packing, the multiply-accumulate loops,
//!    requantization;
//! 3. the same layer runs as `linear_requant` with `Requant::HighMul`, and the two outputs are compared.
//!
//! Output lines (parsed by `mote-bench gemm` and its tests, which recompute every output on the host):
//! * `layout <NATIVE_LAYOUT as Debug>` first;
//! * `gemm <set> <index> <m> <k> <n> <FNV-1a of the fast output, 8 hex digits> ok|mismatch` per shape;
//! * then mote-fw's stack line. Exit code 0 when every shape matches, 1 otherwise.
//!
//! The buffers are one static sized at compile time for the largest shape (under 300 KiB with the Dsp16
//! layout, so the firmware fits the Cortex-M55 board's 512 KiB of RAM).
#![no_std]
#![no_main]

mod shapes;

use core::hint::black_box;

use mote_fw::{mark, println, MARK_END};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::packed::{linear_packed, pack_linear, LinearWeights, PackedLinear, NATIVE_LAYOUT};
use mote_kernels::requant::{HighMulRequant, Requant};
use mote_kernels::KernelError;
use shapes::{Shape, INPUT_OFFSET, SETS, ZERO_POINT};

mote_fw::main!(run);

/// The largest buffer sizes over every shape (elements).
struct Sizes {
    x: usize,
    w: usize,
    n: usize,
    out: usize,
    words: usize,
    scratch: usize,
}

const MAX: Sizes = {
    let mut max = Sizes { x: 0, w: 0, n: 0, out: 0, words: 0, scratch: 0 };
    let (mut set, mut i) = (0, 0);
    while set < SETS.len() {
        if i == SETS[set].shapes.len() {
            (set, i) = (set + 1, 0);
            continue;
        }
        let Shape { m, k, n } = SETS[set].shapes[i];
        let words = NATIVE_LAYOUT.words(n, k);
        let scratch = NATIVE_LAYOUT.scratch_words(k);
        max = Sizes {
            x: if m * k > max.x { m * k } else { max.x },
            w: if n * k > max.w { n * k } else { max.w },
            n: if n > max.n { n } else { max.n },
            out: if m * n > max.out { m * n } else { max.out },
            words: if words > max.words { words } else { max.words },
            scratch: if scratch > max.scratch { scratch } else { max.scratch },
        };
        i += 1;
    }
    max
};

const MAX_X: usize = MAX.x;
const MAX_W: usize = MAX.w;
const MAX_N: usize = MAX.n;
const MAX_OUT: usize = MAX.out;
const MAX_WORDS: usize = MAX.words;
const MAX_SCRATCH: usize = MAX.scratch;

/// Every buffer of the benchmark, in one static.
struct Buffers {
    x: [i8; MAX_X],
    w: [i8; MAX_W],
    bias: [i32; MAX_N],
    mul: [i32; MAX_N],
    words: [i32; MAX_WORDS],
    scratch: [i32; MAX_SCRATCH],
    fast: [i8; MAX_OUT],
    reference: [i8; MAX_OUT],
}

impl Buffers {
    /// All zero (so the static lands in `.bss`).
    const ZERO: Buffers = Buffers {
        x: [0; MAX_X],
        w: [0; MAX_W],
        bias: [0; MAX_N],
        mul: [0; MAX_N],
        words: [0; MAX_WORDS],
        scratch: [0; MAX_SCRATCH],
        fast: [0; MAX_OUT],
        reference: [0; MAX_OUT],
    };
}

/// Runs every shape of every set (see the crate doc) and returns the exit code: 0 when all match, else 1.
fn run() -> i32 {
    let Some(b) = mote_fw::singleton!(Buffers = Buffers::ZERO) else {
        println!("gemm: buffers already taken");
        return 1;
    };
    println!("layout {:?}", NATIVE_LAYOUT);
    let mut code = 0;
    for set in SETS {
        for (i, &shape) in set.shapes.iter().enumerate() {
            let Shape { m, k, n } = shape;
            let (name, region) = (set.name, set.first_region + i as u32);
            match one(region, black_box(shape), b) {
                Ok((hash, ok)) => {
                    let verdict = if ok { "ok" } else { "mismatch" };
                    println!("gemm {} {} {} {} {} {:08x} {}", name, i, m, k, n, hash, verdict);
                    code |= i32::from(!ok);
                }
                Err(e) => {
                    println!("gemm {} {} {} {} {}: kernel error: {}", name, i, m, k, n, e);
                    code = 1;
                }
            }
        }
    }
    code
}

/// Packs, measures and checks one shape: `(hash of the fast output, equal to the reference)`.
fn one(id: u32, shape: Shape, b: &mut Buffers) -> Result<(u32, bool), KernelError> {
    let Shape { m, k, n } = shape;
    let Buffers { x, w, bias, mul, words, scratch, fast, reference } = b;
    let (x, w, bias, mul) = (
        x.get_mut(..m * k).ok_or(KernelError::ShapeMismatch)?,
        w.get_mut(..n * k).ok_or(KernelError::ShapeMismatch)?,
        bias.get_mut(..n).ok_or(KernelError::ShapeMismatch)?,
        mul.get_mut(..n).ok_or(KernelError::ShapeMismatch)?,
    );
    shapes::fill(shape, x, w, bias, mul);
    let words = words.get_mut(..NATIVE_LAYOUT.words(n, k)).ok_or(KernelError::ShapeMismatch)?;
    let src = LinearWeights { w, bias: Some(bias), input_offset: INPUT_OFFSET, mul, n, k };
    pack_linear(NATIVE_LAYOUT, &src, words)?;
    let p = PackedLinear::new(NATIVE_LAYOUT, n, k, words)?;
    let scratch = scratch.get_mut(..NATIVE_LAYOUT.scratch_words(k)).ok_or(KernelError::ShapeMismatch)?;
    let fast = fast.get_mut(..m * n).ok_or(KernelError::ShapeMismatch)?;
    let reference = reference.get_mut(..m * n).ok_or(KernelError::ShapeMismatch)?;
    // Cleared per shape to different values: no output of an earlier shape can pass for this one's.
    fast.fill(0);
    reference.fill(1);

    let (x, p) = (black_box(&*x), black_box(&p));
    mark(id);
    let result = linear_packed(x, p, m, ZERO_POINT, scratch, fast);
    mark(MARK_END);
    result?;

    let rq = Requant::HighMul(HighMulRequant::new(mul, ZERO_POINT, -128, 127)?);
    linear_requant(x, w, Some(bias), MatDims { m, k, n }, INPUT_OFFSET, &rq, reference)?;
    Ok((shapes::fnv1a(fast), fast == reference))
}
