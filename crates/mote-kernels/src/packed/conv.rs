//! Packed 2-D convolution: the [`PackedLayout::Dsp16`] tile loop of [`super::linear_packed_requant`] over
//! im2col panels.
//!
//! A convolution with one group is the linear layer `[pixels, C·kh·kw] × [O, C·kh·kw]ᵀ`: the OIHW weights, read
//! as `[O, C·kh·kw]`, are packed by [`super::pack_linear`], and each pair of output pixels has its two input
//! patches written straight into the 2-row activation panel (no im2col buffer), in the weights' `(c, ky, kx)`
//! order. The panel holds `x + input_offset` (0 at padding), so padding contributes 0 after the offset exactly as
//! in [`crate::conv::conv2d_requant`], and the weights are packed with `input_offset: 0`.

use super::{pair, row_pairs, tile_portable, PackedLayout, PackedLinear, TILE_COLS};
use crate::conv::Conv2dParams;
use crate::requant::{with_scheme, Requant};
use crate::{IntElem, KernelError};

/// Input offsets for which every `x + input_offset` (`x` an `i8`) fits the panel's 16-bit half-words.
const OFFSET_RANGE: core::ops::RangeInclusive<i32> = (i16::MIN as i32 + 128)..=(i16::MAX as i32 - 127);

/// Writes the patches of output pixels `pixels[0]` and `pixels[1]` (`(b, oy, ox)`) as rows 0 and 1 of the
/// Dsp16 panel: per `k = (c·kh + ky)·kw + kx`, `x[b, c, iy, ix] + input_offset`, 0 at padding positions and past
/// `k` (up to the panel's quads). Both rows in one pass, each pixel's input row found once per `(c, ky)`.
fn fill_patches(x: &[i8], p: &Conv2dParams, pixels: [(usize, usize, usize); 2], panel: &mut [i32]) {
    let plane = p.in_h * p.in_w;
    let mut quads = panel.chunks_exact_mut(4);
    let mut values = [[0i32; 4]; 2];
    let mut filled = 0;
    let mut flush = |values: &[[i32; 4]; 2]| {
        let [[a0, a1, a2, a3], [b0, b1, b2, b3]] = *values;
        if let Some(quad) = quads.next() {
            quad.iter_mut().zip([pair(a0, a2), pair(a1, a3), pair(b0, b2), pair(b1, b3)]).for_each(|(w, v)| *w = v);
        }
    };
    for c in 0..p.in_channels {
        for ky in 0..p.kernel_h {
            // Each pixel's input row at (c, ky) (empty in the padding) and its column at kx = 0 plus the padding.
            let rows = pixels.map(|(b, oy, ox)| {
                let iy = (oy * p.stride_h + ky * p.dilation_h).checked_sub(p.pad_top).filter(|&iy| iy < p.in_h);
                let start = iy.map(|iy| (b * p.in_channels + c) * plane + iy * p.in_w);
                (start.and_then(|s| x.get(s..s + p.in_w)).unwrap_or(&[]), ox * p.stride_w)
            });
            for kx in 0..p.kernel_w {
                for (slots, &(row, x0)) in values.iter_mut().zip(&rows) {
                    // Left of the image the column wraps past the row's end: padding as well.
                    let ix = (x0 + kx * p.dilation_w).wrapping_sub(p.pad_left);
                    if let Some(slot) = slots.get_mut(filled) {
                        *slot = row.get(ix).map_or(0, |&v| i32::from(v) + p.input_offset);
                    }
                }
                filled += 1;
                if filled == 4 {
                    flush(&values);
                    filled = 0;
                }
            }
        }
    }
    if filled > 0 {
        values.iter_mut().for_each(|slots| slots.iter_mut().skip(filled).for_each(|v| *v = 0));
        flush(&values);
    }
}

/// A 2-D convolution (groups 1, NCHW, [`crate::conv::conv2d_requant`]'s semantics) on Dsp16-packed weights:
/// `SMLAD` over im2col panels (the instruction itself on DSP builds), then `rq` per output and channel.
///
/// `p` is the OIHW weights as `[O, C·kh·kw]` with the bias, packed by [`super::pack_linear`] with
/// `input_offset: 0` (the kernel adds `params.input_offset` to the input); the packed multipliers are not used.
/// `scratch` holds at least `Dsp16.scratch_words(C·kh·kw)` words. Errors (`InvalidParam`): another layout,
/// groups other than 1, an input offset outside `-32640..=32640`, bad hyper-parameters; (`ShapeMismatch`):
/// lengths or `p`'s `n`, `k` that disagree with `params`; bounds of `rq` that do not fit `T`.
pub fn conv2d_packed_requant<T: IntElem>(
    x: &[i8],
    p: &PackedLinear<'_>,
    params: &Conv2dParams,
    rq: &Requant<'_>,
    scratch: &mut [i32],
    out: &mut [T],
) -> Result<(), KernelError> {
    if p.layout != PackedLayout::Dsp16 || params.groups != 1 || !OFFSET_RANGE.contains(&params.input_offset) {
        return Err(KernelError::InvalidParam);
    }
    let (oh, ow) = params.output_hw()?;
    rq.check::<T>(params.out_channels)?;
    let prod =
        |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(KernelError::ShapeMismatch);
    let Conv2dParams { batch, in_channels, in_h, in_w, out_channels: n, kernel_h, kernel_w, .. } = *params;
    let k = prod(&[in_channels, kernel_h, kernel_w])?;
    let quads = k.div_ceil(4);
    let sizes_ok = x.len() == prod(&[batch, in_channels, in_h, in_w])?
        && out.len() == prod(&[batch, n, oh, ow])?
        && scratch.len() >= 4 * quads;
    if p.n != n || p.k != k || !sizes_ok {
        return Err(KernelError::ShapeMismatch);
    }
    let panel = scratch.get_mut(..4 * quads).ok_or(KernelError::ShapeMismatch)?;
    // Output pixel `g` (over the batch): its image, coordinates and offset of channel 0 in `out`.
    let pixels = oh * ow;
    let at = |g: usize| {
        let (b, pix) = (g / pixels, g % pixels);
        ((b, pix / ow, pix % ow), b * n * pixels + pix)
    };
    // DSP builds: the sums of a pixel pair's channels by the `SMLAD` routine, where its set-up per pair pays off.
    #[cfg(all(mote_dsp, target_arch = "arm"))]
    if quads <= super::dsp::ACC_MAX_QUADS && n >= 32 {
        return pixel_pairs_dsp(x, p, params, rq, panel, out);
    }
    with_scheme!(rq, |apply| {
        for (g0, g1) in row_pairs(batch * pixels) {
            let ((px0, base0), (px1, base1)) = (at(g0), at(g1));
            fill_patches(x, params, [px0, px1], panel);
            for t in 0..n.div_ceil(TILE_COLS) {
                let acc = tile_portable(panel, p.block(t), quads);
                for (idx, &a) in acc.iter().enumerate() {
                    let (base, j) = (if idx < 2 { base0 } else { base1 }, TILE_COLS * t + idx % 2);
                    if j < n {
                        if let Some(o) = out.get_mut(base + j * pixels) {
                            *o = T::from_i32_sat(apply(a, j));
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// [`conv2d_packed_requant`] on DSP builds for patches of at most `ACC_MAX_QUADS` quads (arguments checked): per
/// pair of output pixels, the patch panel as before, then the `i32` sums of every channel (in parts of
/// [`PART_OUTPUTS`]) by the `SMLAD` routine of [`super::dsp16_acc_add`] from the panel, then `rq` per output: the
/// same wrapping sums as the portable tile, so the same outputs. ICCT's tokenizer: 94 → 86 instructions an output
/// (most of the rest is the per-channel `RequantShift`).
#[cfg(all(mote_dsp, target_arch = "arm"))]
fn pixel_pairs_dsp<T: IntElem>(
    x: &[i8],
    p: &PackedLinear<'_>,
    params: &Conv2dParams,
    rq: &Requant<'_>,
    panel: &mut [i32],
    out: &mut [T],
) -> Result<(), KernelError> {
    use super::dsp::{acc_pairs, AccRows};
    use super::{acc_tiles_portable, dsp16_acc_init, PART_OUTPUTS, TILE_ROWS};
    let (n, quads) = (p.n, p.k.div_ceil(4));
    let (oh, ow) = params.output_hw()?;
    let pixels = oh * ow;
    let mut sums = [0i32; TILE_ROWS * PART_OUTPUTS];
    with_scheme!(rq, |apply| {
        for (g0, g1) in row_pairs(params.batch * pixels) {
            let at = |g: usize| ((g / pixels, g % pixels / ow, g % pixels % ow), g / pixels * n * pixels + g % pixels);
            let ((px0, base0), (px1, base1)) = (at(g0), at(g1));
            fill_patches(x, params, [px0, px1], panel);
            let bases = [base0, base1];
            let (rows, kind) = if g0 == g1 { (1, AccRows::Lone) } else { (2, AccRows::Pairs(1)) };
            for j0 in (0..n).step_by(PART_OUTPUTS) {
                let width = PART_OUTPUTS.min(n - j0);
                let layer = p.outputs(j0, width)?;
                let acc = sums.get_mut(..rows * width).ok_or(KernelError::ShapeMismatch)?;
                dsp16_acc_init(&layer, rows, acc)?;
                let done = acc_pairs(None, panel, &layer, (0, quads), kind, acc);
                if done < width.div_ceil(TILE_COLS) {
                    let (row0, row1) = acc.split_at_mut(width);
                    acc_tiles_portable(panel, &layer, (0, quads), done, row0, (rows == 2).then_some(row1));
                }
                for (row, base) in acc.chunks_exact(width).zip(bases) {
                    let outs = out.get_mut(base + j0 * pixels..).unwrap_or_default().iter_mut().step_by(pixels);
                    for (j, (o, &a)) in outs.zip(row).enumerate() {
                        *o = T::from_i32_sat(apply(a, j0 + j));
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::conv::conv2d_requant;
    use crate::packed::{pack_linear, LinearWeights};
    use crate::requant::{HighMulRequant, ShiftRequant};
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Packs OIHW `w` (as `[O, C·kh·kw]`) and `bias` as Dsp16 and runs [`conv2d_packed_requant`].
    fn packed_conv<T: IntElem + Default + Clone>(
        x: &[i8],
        w: &[i8],
        bias: Option<&[i32]>,
        p: &Conv2dParams,
        rq: &Requant<'_>,
    ) -> Result<Vec<T>, KernelError> {
        let layout = PackedLayout::Dsp16;
        let (n, k) = (p.out_channels, p.in_channels * p.kernel_h * p.kernel_w);
        let mut words = vec![0; layout.words(n, k)];
        pack_linear(layout, &LinearWeights { w, bias, input_offset: 0, mul: &[0], n, k }, &mut words)?;
        let packed = PackedLinear::new(layout, n, k, &words)?;
        let (oh, ow) = p.output_hw()?;
        let mut out = vec![T::default(); p.batch * n * oh * ow];
        let mut scratch = vec![0; layout.scratch_words(k)];
        conv2d_packed_requant(x, &packed, p, rq, &mut scratch, &mut out)?;
        Ok(out)
    }

    #[test]
    fn hand_computed() {
        // x = 1..9 (1x1x3x3), 2x2 kernels ones and [[1, -1], [0, 2]], bias [100, -3], pad 1 top/left, stride 2,
        // input offset 1: x+1 = 2..10, padding 0. Windows (row-major kernel positions, 0 = padding):
        // [0,0,0,2], [0,0,3,4], [0,5,0,8], [6,7,9,10].
        let x: Vec<i8> = (1..=9).collect();
        let w = [1i8, 1, 1, 1, 1, -1, 0, 2];
        let mut p = Conv2dParams::new(1, 1, 3, 3, 2, 2, 2);
        (p.pad_top, p.pad_left, p.stride_h, p.stride_w, p.input_offset) = (1, 1, 2, 2, 1);
        let rq = Requant::Shift(ShiftRequant::new(&[1], &[0], 0, 256, true).unwrap());
        let got: Vec<i8> = packed_conv(&x, &w, Some(&[100, -3]), &p, &rq).unwrap();
        // Channel 0: 100 + [2, 7, 13, 32]; channel 1: -3 + [4, 8, -5 + 16, 6 - 7 + 20].
        assert_eq!(got, [102, 107, 113, 127, 1, 5, 8, 16]);
        let mut want = [0i8; 8];
        conv2d_requant(&x, &w, Some(&[100, -3]), &p, &rq, &mut want).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = Conv2dParams::new(1, 2, 4, 4, 3, 3, 3);
        let rq = Requant::HighMul(HighMulRequant::new(&[1 << 20], 0, -128, 127).unwrap());
        let (x, w) = (vec![0i8; 32], vec![0i8; 54]);
        assert!(packed_conv::<i8>(&x, &w, None, &p, &rq).is_ok());
        assert!(packed_conv::<i8>(&x, &w, None, &Conv2dParams { input_offset: -32640, ..p }, &rq).is_ok());
        let invalid = Some(KernelError::InvalidParam);
        let grouped = Conv2dParams { groups: 2, ..p };
        assert_eq!(packed_conv::<i8>(&x, &w, None, &grouped, &rq).err(), invalid);
        assert_eq!(packed_conv::<i8>(&x, &w, None, &Conv2dParams { input_offset: 32641, ..p }, &rq).err(), invalid);
        let shape = Some(KernelError::ShapeMismatch);
        assert_eq!(packed_conv::<i8>(&x[1..], &w, None, &p, &rq).err(), shape);
        // k = C·kh·kw = 18: weights packed for k = 17, a short output or scratch; the Mve8 layout.
        let (mut scratch, mut out) = (vec![0; 20], vec![0i8; 12]);
        let words = vec![0; PackedLayout::Dsp16.words(3, 17)];
        let other = PackedLinear::new(PackedLayout::Dsp16, 3, 17, &words).unwrap();
        assert_eq!(conv2d_packed_requant(&x, &other, &p, &rq, &mut scratch, &mut out).err(), shape);
        let words = vec![0; PackedLayout::Dsp16.words(3, 18)];
        let good = PackedLinear::new(PackedLayout::Dsp16, 3, 18, &words).unwrap();
        assert_eq!(conv2d_packed_requant(&x, &good, &p, &rq, &mut scratch, &mut out), Ok(()));
        let too_tall = Conv2dParams { kernel_h: 5, ..p };
        assert_eq!(conv2d_packed_requant(&x, &good, &too_tall, &rq, &mut scratch, &mut out).err(), invalid);
        assert_eq!(conv2d_packed_requant(&x, &good, &p, &rq, &mut scratch, &mut out[1..]).err(), shape);
        assert_eq!(conv2d_packed_requant(&x, &good, &p, &rq, &mut scratch[..19], &mut out).err(), shape);
        let words = vec![0; PackedLayout::Mve8.words(3, 18)];
        let mve = PackedLinear::new(PackedLayout::Mve8, 3, 18, &words).unwrap();
        assert_eq!(conv2d_packed_requant(&x, &mve, &p, &rq, &mut scratch, &mut out).err(), invalid);
    }

    /// Convolution hyper-parameters with one group whose kernel fits the padded input.
    fn params() -> impl Strategy<Value = Conv2dParams> {
        let dims = (1usize..3, 1usize..5, 1usize..10, 1usize..10, 1usize..6, 1usize..4, 1usize..4);
        let hyper = (1usize..4, 1usize..4, 1usize..3, 1usize..3, [0usize..3, 0..3, 0..3, 0..3], -255i32..=255);
        (dims, hyper).prop_filter_map("kernel larger than the padded input", |(d, h)| {
            let ((batch, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w), (sh, sw, dh, dw, pads, off)) =
                (d, h);
            let p = Conv2dParams {
                stride_h: sh,
                stride_w: sw,
                dilation_h: dh,
                dilation_w: dw,
                pad_top: pads[0],
                pad_left: pads[1],
                pad_bottom: pads[2],
                pad_right: pads[3],
                input_offset: off,
                ..Conv2dParams::new(batch, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w)
            };
            p.output_hw().ok().map(|_| p)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The packed convolution equals `conv2d_requant` bit for bit, with Deeploy's RequantShift to i8 and u8
        /// and with HighMul; small multipliers keep most outputs unsaturated, so a wrong accumulator shows.
        #[test]
        fn packed_conv_equals_conv2d_requant(
            p in params(),
            seed in any::<u64>(),
            with_bias in any::<bool>(),
            per_channel in any::<bool>(),
            shift in 12u32..20,
        ) {
            let mut g = Lcg(seed);
            let k = p.in_channels * p.kernel_h * p.kernel_w;
            let x = g.vec_i8(p.batch * p.in_channels * p.in_h * p.in_w);
            let w = g.vec_i8(p.out_channels * k);
            let bias = g.vec_i32(p.out_channels, -1 << 16, 1 << 16);
            let bias = with_bias.then_some(&bias[..]);
            let c = if per_channel { p.out_channels } else { 1 };
            let (mul, add) = (g.vec_i32(c, -8, 8), g.vec_i32(c, -1 << 10, 1 << 10));
            let hmul = g.vec_i32(c, 0, i32::MAX >> (shift - 2));
            let (oh, ow) = p.output_hw().unwrap();
            let len = p.batch * p.out_channels * oh * ow;
            for signed in [true, false] {
                let rq = Requant::Shift(ShiftRequant::new(&mul, &add, shift, 256, signed).unwrap());
                if signed {
                    let mut want = vec![0i8; len];
                    conv2d_requant(&x, &w, bias, &p, &rq, &mut want).unwrap();
                    prop_assert_eq!(packed_conv::<i8>(&x, &w, bias, &p, &rq).unwrap(), want);
                } else {
                    let mut want = vec![0u8; len];
                    conv2d_requant(&x, &w, bias, &p, &rq, &mut want).unwrap();
                    prop_assert_eq!(packed_conv::<u8>(&x, &w, bias, &p, &rq).unwrap(), want);
                }
            }
            let rq = Requant::HighMul(HighMulRequant::new(&hmul, 3, -128, 127).unwrap());
            let mut want = vec![0i8; len];
            conv2d_requant(&x, &w, bias, &p, &rq, &mut want).unwrap();
            prop_assert_eq!(packed_conv::<i8>(&x, &w, bias, &p, &rq).unwrap(), want);
        }
    }
}
