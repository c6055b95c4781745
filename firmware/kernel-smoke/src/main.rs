//! Smoke firmware: an int8 linear layer (16×32 · 32×32, per-channel RequantShift) and an iSoftmax over its
//! output rows, each between instruction-count marks. Prints the outputs as hex lines and exits with 0
//! (1 when a kernel refuses its arguments).
//!
//! Output lines: `linear_requant <hex of M·N i8>`, `isoftmax <hex of M·N u8>`, then mote-fw's stack line.
#![no_std]
#![no_main]

mod data;

use core::hint::black_box;

use mote_fw::{mark, println, Hex, MARK_END};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::requant::{Requant, ShiftRequant};
use mote_kernels::softmax::{isoftmax, ISoftmaxParams};
use mote_kernels::KernelError;

/// Region ids of the marks (read back by the host test). The empty region measures the marker's own cost.
const REGION_EMPTY: u32 = 0;
const REGION_LINEAR: u32 = 1;
const REGION_SOFTMAX: u32 = 2;

mote_fw::main!(run);

fn run() -> i32 {
    match kernels() {
        Ok(()) => 0,
        Err(e) => {
            println!("kernel error: {}", e);
            1
        }
    }
}

fn kernels() -> Result<(), KernelError> {
    use data::{K, M, N};
    // black_box: the inputs are compile-time computable; without it LLVM could fold the kernels away or move
    // work across the marks.
    let v = black_box(data::inputs());
    let rq = Requant::Shift(ShiftRequant::new(&v.rq_mul, &v.rq_add, data::RQ_SHIFT, 256, true)?);
    let (a, b, c, log2, n_levels) = data::SOFTMAX;
    let sm = ISoftmaxParams { coeff_a: a, coeff_b: b, coeff_c: c, log2, n_levels };
    let mut y = [0i8; M * N];
    let mut p = [0u8; M * N];

    mark(REGION_EMPTY);
    mark(REGION_LINEAR);
    linear_requant(&v.x, &v.w, Some(&v.bias), MatDims { m: M, k: K, n: N }, 0, &rq, &mut y)?;
    mark(REGION_SOFTMAX);
    isoftmax(black_box(&y), N, &sm, &mut p)?;
    mark(MARK_END);

    let y_bytes = y.map(|v| v as u8);
    println!("linear_requant {}", Hex(&y_bytes));
    println!("isoftmax {}", Hex(black_box(&p)));
    Ok(())
}
