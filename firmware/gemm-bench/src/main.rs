#![no_std]
#![no_main]

use core::hint::black_box;
use mote_fw::{mark, println, MARK_END};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::packed::{
    linear_packed, linear_packed_portable, pack_linear, LinearWeights, PackedLayout, PackedLinear,
};
use mote_kernels::requant::{HighMulRequant, Requant};

mote_fw::main!(run);

const M: usize = 64;
const K: usize = 64;
const N: usize = 64;

fn run() -> i32 {
    let mut s = 1u32;
    let mut next = || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 24) as i8
    };
    let mut x = [0i8; M * K];
    let mut w = [0i8; N * K];
    x.iter_mut().for_each(|v| *v = next());
    w.iter_mut().for_each(|v| *v = next());
    let mut bias = [0i32; N];
    bias.iter_mut().enumerate().for_each(|(i, b)| *b = (i as i32 - 20) * 37);
    let mul = [1i32 << 22; 1];
    let layout = PackedLayout::Dsp16;
    let mut words = [0i32; PackedLayout::Dsp16.words(N, K)];
    pack_linear(
        layout,
        &LinearWeights { w: &w, bias: Some(&bias), input_offset: 3, mul: &mul, n: N, k: K },
        &mut words,
    )
    .unwrap();
    let p = PackedLinear::new(layout, N, K, &words).unwrap();
    let mut scratch = [0i32; PackedLayout::Dsp16.scratch_words(K)];
    let mut fast = [0i8; M * N];
    let mut port = [0i8; M * N];
    let mut refr = [0i8; M * N];
    let x = black_box(x);
    mark(1);
    linear_packed(&x, &p, M, -5, &mut scratch, &mut fast).unwrap();
    mark(2);
    linear_packed_portable(&x, &p, M, -5, &mut scratch, &mut port).unwrap();
    mark(3);
    let rq = Requant::HighMul(HighMulRequant::new(&mul, -5, -128, 127).unwrap());
    linear_requant(&x, &w, Some(&bias), MatDims { m: M, k: K, n: N }, 3, &rq, &mut refr).unwrap();
    mark(MARK_END);
    println!("fast==port {} port==ref {} sample {} {} {}", fast == port, port == refr, fast[0], fast[100], refr[100]);
    0
}
