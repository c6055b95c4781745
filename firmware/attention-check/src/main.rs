//! On-target check of `mote_kernels::attention::mhsa_i8`'s assembly paths: for FWSA blocks of odd shapes (odd
//! sequence lengths and head widths, several heads, output widths that are not multiples of the tile, more than
//! 16 quads), the row-major schedule in every block size (which sums the output projection head by head with
//! the SMLAD routine) and its in-place variant must give the head-major schedule's integers (which concatenates
//! the heads and runs the packed linear kernel). Also Deeploy's packed linear layers (`linear_packed_requant`, whose
//! sums the SMLAD routine computes in parts of 64 input and 128 output columns) against the plain
//! `linear_requant`, for odd shapes and per-tensor and per-channel `RequantShift`, and Deeploy's packed convolutions
//! (`conv2d_packed_requant`, whose sums the SMLAD routine computes per pair of output pixels) against the plain
//! `conv2d_requant`. Prints `checks N fails F`;
//! exit code 0 when F is 0.
#![no_std]
#![no_main]

use mote_fw::println;
use mote_kernels::attention::{
    mhsa_i8, mhsa_i8_in_place, pack_heads, HeadProjection, LayerRequant, MhsaI8, MhsaSchedule, MhsaShape, MhsaSoftmax,
    ProductRequant,
};
use mote_kernels::conv::{conv2d_requant, Conv2dParams};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::packed::{
    conv2d_packed_requant, linear_packed_requant, pack_linear, LinearWeights, PackedLayout, PackedLinear,
};
use mote_kernels::requant::{Requant, ShiftRequant};
use mote_kernels::softmax::SoftmaxI8Params;
use mote_kernels::KernelError;

mote_fw::main!(run);

/// A seeded LCG for the test data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    fn i8(&mut self) -> i8 {
        self.next() as i8
    }

    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % ((hi - lo) as u32)) as i32
    }
}

const WORDS: usize = 12000;

/// Every buffer, in one static (RAM, `.bss`).
struct Buffers {
    q: [i32; WORDS],
    o: [i32; WORDS],
    x: [i8; 1024],
    out_a: [i8; 2048],
    out_b: [i8; 2048],
    scratch: [i32; 8000],
    wq: [i8; 16000],
    wo: [i8; 4000],
    bq: [i32; 256],
    mq: [i32; 256],
    bo: [i32; 128],
    mo: [i32; 128],
    add: [i32; 256],
}

/// `(sequence, embedding = head width, heads, output width)` of each case.
const CASES: [(usize, usize, usize, usize); 9] = [
    (7, 8, 1, 8),
    (6, 12, 1, 5),
    (9, 8, 2, 8),
    (7, 6, 3, 5),
    (13, 12, 2, 12),
    (5, 64, 2, 7),
    (5, 68, 1, 4),
    (6, 10, 3, 9),
    (11, 32, 3, 32),
];

fn run() -> i32 {
    let Some(b) = mote_fw::singleton!(
        Buffers = Buffers {
            q: [0; WORDS],
            o: [0; WORDS],
            x: [0; 1024],
            out_a: [0; 2048],
            out_b: [0; 2048],
            scratch: [0; 8000],
            wq: [0; 16000],
            wo: [0; 4000],
            bq: [0; 256],
            mq: [0; 256],
            bo: [0; 128],
            mo: [0; 128],
            add: [0; 256],
        }
    ) else {
        return 1;
    };
    match check(b) {
        Ok((checks, 0)) => {
            println!("checks {} fails 0", checks);
            0
        }
        Ok((checks, fails)) => {
            println!("checks {} fails {}", checks, fails);
            1
        }
        Err(e) => {
            println!("kernel error: {}", e);
            1
        }
    }
}

/// `(rows, input columns, output columns, per-channel requantization)` of each packed `RequantShift` layer: rows
/// odd and even, inputs of more than one part of 64 and not a multiple of 4, outputs of more than one part of
/// 128 and odd.
const LINEAR_CASES: [(usize, usize, usize, bool); 5] =
    [(5, 70, 131, true), (4, 129, 40, false), (1, 60, 250, true), (3, 8, 3, false), (6, 150, 9, true)];

/// Deeploy's packed linear layers against the plain kernel: one check per case.
fn check_linear(b: &mut Buffers) -> Result<(usize, usize), KernelError> {
    let (mut checks, mut fails) = (0, 0);
    for (ci, &(m, k, n, per_channel)) in LINEAR_CASES.iter().enumerate() {
        let mut g = Lcg(ci as u64 + 100);
        b.x[..m * k].iter_mut().for_each(|v| *v = g.i8());
        b.wq[..n * k].iter_mut().for_each(|v| *v = g.i8());
        b.bq[..n].iter_mut().for_each(|v| *v = g.range(-5000, 5000));
        let c = if per_channel { n } else { 1 };
        b.mq[..c].iter_mut().for_each(|v| *v = g.range(1, 9));
        b.add[..c].iter_mut().for_each(|v| *v = g.range(-4000, 4000));
        let rq = Requant::Shift(ShiftRequant::new(&b.mq[..c], &b.add[..c], 13, 256, true)?);
        let words = PackedLayout::Dsp16.words(n, k);
        let src = LinearWeights { w: &b.wq[..n * k], bias: Some(&b.bq[..n]), input_offset: 0, mul: &[0], n, k };
        pack_linear(PackedLayout::Dsp16, &src, &mut b.q[..words])?;
        let packed = PackedLinear::new(PackedLayout::Dsp16, n, k, &b.q[..words])?;
        linear_packed_requant(&b.x[..m * k], &packed, m, &rq, &mut b.scratch, &mut b.out_a[..m * n])?;
        let dims = MatDims { m, k, n };
        linear_requant(&b.x[..m * k], &b.wq[..n * k], Some(&b.bq[..n]), dims, 0, &rq, &mut b.out_b[..m * n])?;
        checks += 1;
        if b.out_a[..m * n] != b.out_b[..m * n] {
            fails += 1;
            println!("MISMATCH linear case {}", ci);
        }
    }
    Ok((checks, fails))
}

/// `(channels, height, width, outputs, kernel, stride, padding, input offset, per-channel requantization)` of each
/// packed convolution: patches of 4 to 27 values (the SMLAD routine) and of 72 (more than its 16 quads: the
/// portable tile), an odd number of output pixels, outputs of more than one part of 128 and odd.
const CONV_CASES: [(usize, usize, usize, usize, usize, usize, usize, i32, bool); 4] = [
    (3, 5, 5, 130, 3, 2, 1, 0, true),
    (2, 7, 6, 5, 3, 1, 1, -3, false),
    (8, 5, 5, 4, 3, 1, 0, 7, true),
    (1, 6, 6, 3, 2, 2, 0, 0, false),
];

/// Deeploy's packed convolutions against the plain kernel: one check per case.
fn check_conv(b: &mut Buffers) -> Result<(usize, usize), KernelError> {
    let (mut checks, mut fails) = (0, 0);
    for (ci, &(c, h, w, n, kernel, stride, pad, offset, per_channel)) in CONV_CASES.iter().enumerate() {
        let mut g = Lcg(ci as u64 + 200);
        let k = c * kernel * kernel;
        let p = Conv2dParams {
            stride_h: stride,
            stride_w: stride,
            pad_top: pad,
            pad_left: pad,
            pad_bottom: pad,
            pad_right: pad,
            input_offset: offset,
            ..Conv2dParams::new(1, c, h, w, n, kernel, kernel)
        };
        let (oh, ow) = p.output_hw()?;
        b.x[..c * h * w].iter_mut().for_each(|v| *v = g.i8());
        b.wq[..n * k].iter_mut().for_each(|v| *v = g.i8());
        b.bq[..n].iter_mut().for_each(|v| *v = g.range(-5000, 5000));
        let channels = if per_channel { n } else { 1 };
        b.mq[..channels].iter_mut().for_each(|v| *v = g.range(1, 9));
        b.add[..channels].iter_mut().for_each(|v| *v = g.range(-4000, 4000));
        let rq = Requant::Shift(ShiftRequant::new(&b.mq[..channels], &b.add[..channels], 12, 256, true)?);
        let words = PackedLayout::Dsp16.words(n, k);
        let src = LinearWeights { w: &b.wq[..n * k], bias: Some(&b.bq[..n]), input_offset: 0, mul: &[0], n, k };
        pack_linear(PackedLayout::Dsp16, &src, &mut b.q[..words])?;
        let packed = PackedLinear::new(PackedLayout::Dsp16, n, k, &b.q[..words])?;
        let len = n * oh * ow;
        conv2d_packed_requant(&b.x[..c * h * w], &packed, &p, &rq, &mut b.scratch, &mut b.out_a[..len])?;
        conv2d_requant(&b.x[..c * h * w], &b.wq[..n * k], Some(&b.bq[..n]), &p, &rq, &mut b.out_b[..len])?;
        checks += 1;
        if b.out_a[..len] != b.out_b[..len] {
            fails += 1;
            println!("MISMATCH conv case {}", ci);
        }
    }
    Ok((checks, fails))
}

fn check(b: &mut Buffers) -> Result<(usize, usize), KernelError> {
    let (linear_checks, linear_fails) = check_linear(b)?;
    let (conv_checks, conv_fails) = check_conv(b)?;
    let mut exp = [0u16; 256];
    let mut e: u32 = 32768;
    for v in exp.iter_mut() {
        *v = e.min(65535) as u16;
        e = e * 7 / 8;
    }
    let (mut checks, mut fails) = (0, 0);
    let layout = PackedLayout::Dsp16;
    for (ci, &(s, emb, h, od)) in CASES.iter().enumerate() {
        let mut g = Lcg(ci as u64 + 7);
        let shape = MhsaShape {
            seq: s,
            embed: emb,
            heads: h,
            qk_dim: emb,
            v_dim: emb,
            out_dim: od,
            project_k: false,
            project_v: false,
            proj_layout: layout,
            out_layout: layout,
        };
        let (nq, cd) = (h * emb, h * emb);
        b.wq[..nq * emb].iter_mut().for_each(|v| *v = g.i8());
        b.bq[..nq].iter_mut().for_each(|v| *v = g.range(-5000, 5000));
        b.mq[..nq].iter_mut().for_each(|v| *v = g.range(1 << 22, 1 << 25));
        b.wo[..od * cd].iter_mut().for_each(|v| *v = g.i8());
        b.bo[..od].iter_mut().for_each(|v| *v = g.range(-5000, 5000));
        b.mo[..od].iter_mut().for_each(|v| *v = g.range(1 << 21, 1 << 24));
        b.x[..s * emb].iter_mut().for_each(|v| *v = g.i8());
        let (zx, zq) = (g.range(-10, 10), g.range(-20, 20));
        let q_words = h * layout.words(emb, emb);
        let src = LinearWeights {
            w: &b.wq[..nq * emb],
            bias: Some(&b.bq[..nq]),
            input_offset: -zx,
            mul: &b.mq[..nq],
            n: nq,
            k: emb,
        };
        pack_heads(layout, &src, h, &mut b.q[..q_words])?;
        let o_words = layout.words(od, cd);
        let src = LinearWeights {
            w: &b.wo[..od * cd],
            bias: Some(&b.bo[..od]),
            input_offset: 0,
            mul: &b.mo[..od],
            n: od,
            k: cd,
        };
        pack_linear(layout, &src, &mut b.o[..o_words])?;
        let q_table: [i8; 256] = core::array::from_fn(|i| ((i as i32 - 128) * 3 / 4) as i8);
        let p = MhsaI8 {
            shape,
            x_zero_point: zx,
            // Queries scaled by a table after their projection, as onnxruntime's QDQ attention does.
            q: HeadProjection {
                words: &b.q[..q_words],
                requant: LayerRequant::HighMul { zero_point: zq },
                table: Some((&q_table, zq / 2)),
            },
            k: None,
            v: None,
            scores: ProductRequant::HighMul { mul: g.range(1 << 20, 1 << 23), zero_point: g.range(-5, 5) },
            softmax: MhsaSoftmax::I8(SoftmaxI8Params { exp: &exp, out_recip: 256 << 16, out_zero_point: -128 }),
            mask: None,
            av: ProductRequant::HighMul { mul: g.range(1 << 20, 1 << 22), zero_point: g.range(-5, 5) },
            out: PackedLinear::new(layout, od, cd, &b.o[..o_words])?,
            out_requant: LayerRequant::HighMul { zero_point: g.range(-20, 20) },
        };
        let head_major = MhsaSchedule::HeadMajor { block_rows: s };
        let need = shape.scratch(head_major).ok_or(KernelError::ShapeMismatch)?.total_words();
        mhsa_i8(&p, head_major, &b.x[..s * emb], &mut b.out_a[..s * od], &mut b.scratch[..need])?;
        for rows in [1usize, 2, 3, 4, 5, 6, s] {
            let row_major = MhsaSchedule::RowMajor { block_rows: rows };
            let need = shape.scratch(row_major).ok_or(KernelError::ShapeMismatch)?.total_words();
            // Stale scratch must not matter.
            b.scratch.iter_mut().for_each(|v| *v = 0x5a5a_5a5a);
            mhsa_i8(&p, row_major, &b.x[..s * emb], &mut b.out_b[..s * od], &mut b.scratch[..need])?;
            checks += 1;
            if b.out_a[..s * od] != b.out_b[..s * od] {
                fails += 1;
                println!("MISMATCH case {} rows {}", ci, rows);
            }
            if od == emb {
                b.out_b[..s * od].copy_from_slice(&b.x[..s * emb]);
                mhsa_i8_in_place(&p, row_major, &mut b.out_b[..s * od], &mut b.scratch[..need])?;
                checks += 1;
                if b.out_a[..s * od] != b.out_b[..s * od] {
                    fails += 1;
                    println!("MISMATCH in place case {} rows {}", ci, rows);
                }
            }
        }
    }
    Ok((checks + linear_checks + conv_checks, fails + linear_fails + conv_fails))
}
