//! 2-D convolution (cross-correlation, ONNX `Conv`; SEMANTICS §3.6) with integer accumulation.
//!
//! Layouts (row-major): input NCHW `[batch, in_channels, in_h, in_w]`, weights OIHW
//! `[out_channels, in_channels/groups, kernel_h, kernel_w]`, bias `[out_channels]`, output NCHW
//! `[batch, out_channels, out_h, out_w]`. Padding contributes 0 after the input offset is applied
//! (true-value zero, or the zero point in TFLite terms). Accumulation: wrapping `i32`.

use crate::elem::IntElem;
use crate::requant::Requant;
use crate::KernelError;

/// Output length of one spatial dim: `floor((input + pads - dilation·(kernel-1) - 1) / stride) + 1`.
///
/// Errors (`InvalidParam`): `kernel`, `stride` or `dilation` zero, or a kernel larger than the
/// padded input.
pub fn conv_output_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
) -> Result<usize, KernelError> {
    let bad = KernelError::InvalidParam;
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(bad);
    }
    let extent = dilation.checked_mul(kernel - 1).and_then(|e| e.checked_add(1)).ok_or(bad)?;
    let padded = input.checked_add(pad_begin).and_then(|p| p.checked_add(pad_end)).ok_or(bad)?;
    let span = padded.checked_sub(extent).ok_or(bad)?;
    span.checked_div(stride).and_then(|q| q.checked_add(1)).ok_or(bad)
}

/// Shape and hyper-parameters of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// N.
    pub batch: usize,
    /// C (total, all groups).
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// O (total, all groups).
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride (>= 1).
    pub stride_h: usize,
    /// Horizontal stride (>= 1).
    pub stride_w: usize,
    /// Vertical dilation (>= 1).
    pub dilation_h: usize,
    /// Horizontal dilation (>= 1).
    pub dilation_w: usize,
    /// Zero rows added above.
    pub pad_top: usize,
    /// Zero columns added on the left.
    pub pad_left: usize,
    /// Zero rows added below.
    pub pad_bottom: usize,
    /// Zero columns added on the right.
    pub pad_right: usize,
    /// Groups; must divide both channel counts.
    pub groups: usize,
    /// Added to every (non-padding) input element, e.g. `-zero_point` (0 for Deeploy).
    pub input_offset: i32,
}

impl Conv2dParams {
    /// Dense conv with stride 1, dilation 1, no padding, one group and no input offset.
    pub const fn new(
        batch: usize,
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        out_channels: usize,
        kernel_h: usize,
        kernel_w: usize,
    ) -> Self {
        Self {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            groups: 1,
            input_offset: 0,
        }
    }

    /// `(out_h, out_w)`, see [`conv_output_dim`].
    pub fn output_hw(&self) -> Result<(usize, usize), KernelError> {
        let oh =
            conv_output_dim(self.in_h, self.kernel_h, self.stride_h, self.dilation_h, self.pad_top, self.pad_bottom)?;
        let ow =
            conv_output_dim(self.in_w, self.kernel_w, self.stride_w, self.dilation_w, self.pad_left, self.pad_right)?;
        Ok((oh, ow))
    }

    /// Validates everything; returns `(out_h, out_w, in_channels/groups, out_channels/groups)`.
    fn validate(&self, x: usize, w: usize, bias: Option<usize>, out: usize) -> Result<Geometry, KernelError> {
        let (oh, ow) = self.output_hw()?;
        let g = self.groups;
        let cig = self.in_channels.checked_div(g).ok_or(KernelError::InvalidParam)?;
        let cog = self.out_channels.checked_div(g).ok_or(KernelError::InvalidParam)?;
        if cig * g != self.in_channels || cog * g != self.out_channels {
            return Err(KernelError::InvalidParam);
        }
        let prod = |dims: &[usize]| {
            dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(KernelError::ShapeMismatch)
        };
        let x_ok = x == prod(&[self.batch, self.in_channels, self.in_h, self.in_w])?;
        let w_ok = w == prod(&[self.out_channels, cig, self.kernel_h, self.kernel_w])?;
        let o_ok = out == prod(&[self.batch, self.out_channels, oh, ow])?;
        let b_ok = bias.is_none_or(|b| b == self.out_channels);
        if x_ok && w_ok && o_ok && b_ok {
            Ok(Geometry { oh, ow, cig, cog })
        } else {
            Err(KernelError::ShapeMismatch)
        }
    }
}

/// Derived sizes of a validated convolution.
struct Geometry {
    oh: usize,
    ow: usize,
    cig: usize,
    cog: usize,
}

/// Calls `emit(out_index, oc, acc)` for every output element (bias not included).
fn for_each_output<A: IntElem>(
    x: &[A],
    w: &[i8],
    p: &Conv2dParams,
    g: &Geometry,
    mut emit: impl FnMut(usize, usize, i32),
) {
    let (h, wd) = (p.in_h, p.in_w);
    let mut out_idx = 0;
    for n in 0..p.batch {
        for grp in 0..p.groups {
            for ocg in 0..g.cog {
                let oc = grp * g.cog + ocg;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0i32;
                        for icg in 0..g.cig {
                            let ic = grp * g.cig + icg;
                            let plane = (n * p.in_channels + ic) * h;
                            let wbase = (oc * g.cig + icg) * p.kernel_h;
                            for ky in 0..p.kernel_h {
                                // Padded row coordinate; skip rows that fall in the padding.
                                let py = oy * p.stride_h + ky * p.dilation_h;
                                let Some(iy) = py.checked_sub(p.pad_top).filter(|&iy| iy < h) else {
                                    continue;
                                };
                                let xrow = (plane + iy) * wd;
                                let wrow = (wbase + ky) * p.kernel_w;
                                for kx in 0..p.kernel_w {
                                    let px = ox * p.stride_w + kx * p.dilation_w;
                                    let Some(ix) = px.checked_sub(p.pad_left).filter(|&ix| ix < wd) else {
                                        continue;
                                    };
                                    if let (Some(&xv), Some(&wv)) = (x.get(xrow + ix), w.get(wrow + kx)) {
                                        let xv = xv.to_i32().wrapping_add(p.input_offset);
                                        acc = acc.wrapping_add(xv.wrapping_mul(i32::from(wv)));
                                    }
                                }
                            }
                        }
                        emit(out_idx, oc, acc);
                        out_idx += 1;
                    }
                }
            }
        }
    }
}

/// Convolution to `i32` accumulators: `out = bias[oc] + Σ (x + input_offset)·w` (exact if it fits).
///
/// Layouts in the module docs. Errors: lengths (`ShapeMismatch`), hyper-parameters (`InvalidParam`).
pub fn conv2d_i32<A: IntElem>(
    x: &[A],
    w: &[i8],
    bias: Option<&[i32]>,
    p: &Conv2dParams,
    out: &mut [i32],
) -> Result<(), KernelError> {
    let g = p.validate(x.len(), w.len(), bias.map(<[i32]>::len), out.len())?;
    for_each_output(x, w, p, &g, |idx, oc, acc| {
        let b = bias.and_then(|b| b.get(oc)).copied().unwrap_or(0);
        if let Some(o) = out.get_mut(idx) {
            *o = acc.wrapping_add(b);
        }
    });
    Ok(())
}

/// [`conv2d_i32`] followed by requantization, per-tensor or per output channel.
pub fn conv2d_requant<A: IntElem, T: IntElem>(
    x: &[A],
    w: &[i8],
    bias: Option<&[i32]>,
    p: &Conv2dParams,
    rq: &Requant<'_>,
    out: &mut [T],
) -> Result<(), KernelError> {
    rq.check::<T>(p.out_channels)?;
    let g = p.validate(x.len(), w.len(), bias.map(<[i32]>::len), out.len())?;
    for_each_output(x, w, p, &g, |idx, oc, acc| {
        let b = bias.and_then(|b| b.get(oc)).copied().unwrap_or(0);
        if let Some(o) = out.get_mut(idx) {
            *o = T::from_i32_sat(rq.apply(acc.wrapping_add(b), oc));
        }
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::requant::ShiftRequant;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Model: explicitly zero-pad a copy of the input (after the offset), then correlate.
    fn model_conv(x: &[i8], w: &[i8], bias: &[i32], p: &Conv2dParams) -> Vec<i128> {
        let (ph, pw) = (p.in_h + p.pad_top + p.pad_bottom, p.in_w + p.pad_left + p.pad_right);
        let mut padded = vec![0i128; p.batch * p.in_channels * ph * pw];
        for n in 0..p.batch {
            for c in 0..p.in_channels {
                for y in 0..p.in_h {
                    for xx in 0..p.in_w {
                        let v = i128::from(x[((n * p.in_channels + c) * p.in_h + y) * p.in_w + xx]);
                        padded[((n * p.in_channels + c) * ph + y + p.pad_top) * pw + xx + p.pad_left] =
                            v + i128::from(p.input_offset);
                    }
                }
            }
        }
        let oh = (ph - (p.dilation_h * (p.kernel_h - 1) + 1)) / p.stride_h + 1;
        let ow = (pw - (p.dilation_w * (p.kernel_w - 1) + 1)) / p.stride_w + 1;
        let (cig, cog) = (p.in_channels / p.groups, p.out_channels / p.groups);
        let mut out = Vec::new();
        for n in 0..p.batch {
            for oc in 0..p.out_channels {
                let grp = oc / cog;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = i128::from(bias[oc]);
                        for c in 0..cig {
                            for ky in 0..p.kernel_h {
                                for kx in 0..p.kernel_w {
                                    let iy = oy * p.stride_h + ky * p.dilation_h;
                                    let ix = ox * p.stride_w + kx * p.dilation_w;
                                    let xv = padded[((n * p.in_channels + grp * cig + c) * ph + iy) * pw + ix];
                                    let wv = w[((oc * cig + c) * p.kernel_h + ky) * p.kernel_w + kx];
                                    acc += xv * i128::from(wv);
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn hand_computed() {
        // 1x1x3x3 input, 2x2 kernel of ones, pad 1 on top/left only, stride 2.
        let x: Vec<i8> = (1..=9).collect();
        let mut p = Conv2dParams::new(1, 1, 3, 3, 1, 2, 2);
        p.pad_top = 1;
        p.pad_left = 1;
        p.stride_h = 2;
        p.stride_w = 2;
        assert_eq!(p.output_hw(), Ok((2, 2)));
        let mut out = [0i32; 4];
        conv2d_i32(&x, &[1, 1, 1, 1], Some(&[100]), &p, &mut out).unwrap();
        // windows: [1], [2+3], [4+7], [5+6+8+9]
        assert_eq!(out, [101, 105, 111, 128]);
        // Depthwise (groups = 2), 1x1 kernels [2, -1], input offset 1.
        let mut p = Conv2dParams::new(1, 2, 1, 2, 2, 1, 1);
        p.groups = 2;
        p.input_offset = 1;
        conv2d_i32(&[3i8, 4, 5, 6], &[2, -1], None, &p, &mut out).unwrap();
        assert_eq!(out, [8, 10, -6, -7]);
        let rq = Requant::Shift(ShiftRequant::new(&[1, 1], &[0, 0], 1, 256, false).unwrap());
        let mut o8 = [0u8; 4];
        conv2d_requant(&[3i8, 4, 5, 6], &[2, -1], None, &p, &rq, &mut o8).unwrap();
        assert_eq!(o8, [4, 5, 0, 0]);
    }

    #[test]
    fn errors() {
        let p = Conv2dParams::new(1, 2, 4, 4, 3, 3, 3);
        let mut out = [0i32; 3 * 2 * 2];
        assert!(conv2d_i32(&[0i8; 32], &[0; 54], None, &p, &mut out).is_ok());
        assert_eq!(conv2d_i32(&[0i8; 31], &[0; 54], None, &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(conv2d_i32(&[0i8; 32], &[0; 53], None, &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(conv2d_i32(&[0i8; 32], &[0; 54], Some(&[0; 2]), &p, &mut out), Err(KernelError::ShapeMismatch));
        assert_eq!(conv2d_i32(&[0i8; 32], &[0; 54], None, &p, &mut out[..11]), Err(KernelError::ShapeMismatch));
        for bad in [
            Conv2dParams { groups: 2, ..p },
            Conv2dParams { groups: 0, ..p },
            Conv2dParams { stride_h: 0, ..p },
            Conv2dParams { dilation_w: 0, ..p },
            Conv2dParams { kernel_h: 5, ..p },
            Conv2dParams { kernel_w: 0, ..p },
        ] {
            assert_eq!(conv2d_i32(&[0i8; 32], &[0; 54], None, &bad, &mut out), Err(KernelError::InvalidParam));
        }
        let rq = Requant::Shift(ShiftRequant::new(&[1, 1], &[0], 1, 256, true).unwrap());
        let mut o8 = [0i8; 12];
        assert_eq!(conv2d_requant(&[0i8; 32], &[0; 54], None, &p, &rq, &mut o8), Err(KernelError::ShapeMismatch));
    }

    fn conv_params() -> impl Strategy<Value = Conv2dParams> {
        (1usize..3, 1usize..4, 1usize..4, 1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3, 0usize..3)
            .prop_flat_map(|(g, cig, cog, kh, kw, sh, sw, dh, dw, pt)| {
                (
                    Just((g, cig, cog, kh, kw, sh, sw, dh + 1, dw + 1, pt)),
                    0usize..3,
                    0usize..3,
                    0usize..3,
                    1usize..9,
                    1usize..9,
                    1usize..3,
                    -3i32..4,
                )
            })
            .prop_filter_map(
                "kernel larger than padded input",
                |((g, cig, cog, kh, kw, sh, sw, dh, dw, pt), pl, pb, pr, h, w, n, off)| {
                    let p = Conv2dParams {
                        batch: n,
                        in_channels: g * cig,
                        in_h: h,
                        in_w: w,
                        out_channels: g * cog,
                        kernel_h: kh,
                        kernel_w: kw,
                        stride_h: sh,
                        stride_w: sw,
                        dilation_h: dh,
                        dilation_w: dw,
                        pad_top: pt,
                        pad_left: pl,
                        pad_bottom: pb,
                        pad_right: pr,
                        groups: g,
                        input_offset: off,
                    };
                    p.output_hw().ok().map(|_| p)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn conv_matches_model(p in conv_params(), per_channel in any::<bool>(), seed in any::<u64>()) {
            let mut g = Lcg(seed);
            let (oh, ow) = p.output_hw().unwrap();
            let x = g.vec_i8(p.batch * p.in_channels * p.in_h * p.in_w);
            let w = g.vec_i8(p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w);
            let bias = g.vec_i32(p.out_channels, -5000, 5000);
            let mut out = vec![0i32; p.batch * p.out_channels * oh * ow];
            conv2d_i32(&x, &w, Some(&bias), &p, &mut out).unwrap();
            let want = model_conv(&x, &w, &bias, &p);
            prop_assert_eq!(out.iter().map(|&v| i128::from(v)).collect::<Vec<_>>(), want.clone());
            let c = if per_channel { p.out_channels } else { 1 };
            let mul = g.vec_i32(c, -50, 50);
            let add = g.vec_i32(c, -1000, 1000);
            let rq = Requant::Shift(ShiftRequant::new(&mul, &add, 6, 256, true).unwrap());
            let mut o8 = vec![0i8; out.len()];
            conv2d_requant(&x, &w, Some(&bias), &p, &rq, &mut o8).unwrap();
            for (i, &o) in o8.iter().enumerate() {
                let ch = if per_channel { (i / (oh * ow)) % p.out_channels } else { 0 };
                let v = want[i] * i128::from(mul[ch]) + i128::from(add[ch]);
                prop_assert_eq!(i128::from(o), floor_div(2 * v + 64, 128).clamp(-128, 127));
            }
        }

        #[test]
        fn output_dim_matches_model(input in 0usize..40, k in 1usize..6, s in 1usize..5, d in 1usize..4, pb in 0usize..4, pe in 0usize..4) {
            let got = conv_output_dim(input, k, s, d, pb, pe);
            // Count window positions directly.
            let padded = input + pb + pe;
            let extent = d * (k - 1) + 1;
            let count = (0..).map(|i| i * s).take_while(|&start| start + extent <= padded).count();
            if extent > padded {
                prop_assert_eq!(got, Err(KernelError::InvalidParam));
            } else {
                prop_assert_eq!(got, Ok(count));
            }
        }
    }
}
