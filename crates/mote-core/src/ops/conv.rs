//! Convolution and pooling over 1-D (`N,C,L`) and 2-D (`N,C,H,W`) inputs.
//!
//! Pads are `[begin..., end...]` per spatial dim, as in ONNX; `auto_pad` is resolved
//! to explicit pads by the translator. Float inputs compute in f32 (f16 via f32).
use super::matmul::{check_extra_operand, f32_data, float_tensor, i64_data, int_tensor, product_arith, Acc, Arith};
use crate::op::InputFact;
use crate::{ensure, op_common, DType, Op, Result, Tensor, TensorType};

/// Output length of a sliding window: `floor` (or `ceil` with `ceil_mode`) of
/// `(input + pads − dilation·(kernel−1) − 1)/stride + 1`. In ceil mode a last
/// window that would start in the end padding is dropped (ONNX ≥ 19, PyTorch).
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Result<usize> {
    ensure!(kernel >= 1, "kernel size must be >= 1");
    ensure!(stride >= 1, "strides must be >= 1");
    ensure!(dilation >= 1, "dilations must be >= 1");
    let eff = dilation * (kernel - 1) + 1;
    let padded = input + pad_begin + pad_end;
    ensure!(padded >= eff, "the window ({eff} with dilation) is larger than the padded input ({padded})");
    let num = padded - eff;
    let mut out = if ceil_mode { num.div_ceil(stride) + 1 } else { num / stride + 1 };
    if ceil_mode && out > 1 && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Ok(out)
}

/// Geometry of one 2-D sliding-window op (1-D ops use H = 1).
#[derive(Clone, Debug)]
struct Geo {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    pb: usize,
    pr: usize,
}

/// Shared parameters of the sliding-window ops.
struct Window<'a> {
    kernel: &'a [usize],
    strides: &'a [usize],
    pads: &'a [usize],
    dilations: &'a [usize],
    ceil_mode: bool,
}

impl Window<'_> {
    /// Checks parameter lengths against `x` (rank 3 or 4) and computes the geometry.
    fn geo(&self, x: &[usize]) -> Result<Geo> {
        ensure!(matches!(x.len(), 3 | 4), "input must be N,C,L or N,C,H,W (rank 3 or 4), got {:?}", x);
        let nd = x.len() - 2;
        ensure!(self.kernel.len() == nd, "kernel has {} dims, the input has {nd} spatial dims", self.kernel.len());
        ensure!(self.strides.len() == nd, "strides has {} values, expected {nd}", self.strides.len());
        ensure!(self.dilations.len() == nd, "dilations has {} values, expected {nd}", self.dilations.len());
        ensure!(self.pads.len() == 2 * nd, "pads has {} values, expected {}", self.pads.len(), 2 * nd);
        let mut out = Vec::with_capacity(nd);
        for i in 0..nd {
            let (k, s, d) = (self.kernel[i], self.strides[i], self.dilations[i]);
            let (pb, pe) = (self.pads[i], self.pads[nd + i]);
            out.push(window_out(x[2 + i], k, s, d, pb, pe, self.ceil_mode)?);
        }
        // Promote 1-D to 2-D with a unit H.
        let two = |v: &[usize], unit: usize| if nd == 1 { [unit, v[0]] } else { [v[0], v[1]] };
        let [h, w] = two(&x[2..], 1);
        let [kh, kw] = two(self.kernel, 1);
        let [oh, ow] = two(&out, 1);
        let [sh, sw] = two(self.strides, 1);
        let [dh, dw] = two(self.dilations, 1);
        let [pt, pl] = two(&self.pads[..nd], 0);
        let [pb, pr] = two(&self.pads[nd..], 0);
        Ok(Geo { n: x[0], c: x[1], h, w, kh, kw, oh, ow, sh, sw, dh, dw, pt, pl, pb, pr })
    }
}

impl Geo {
    fn out_shape(&self, c: usize, rank: usize) -> Vec<usize> {
        if rank == 3 {
            vec![self.n, c, self.ow]
        } else {
            vec![self.n, c, self.oh, self.ow]
        }
    }

    /// Output columns `ox` whose input column `ox·sw + off` lies in `[0, w)`.
    fn valid_cols(&self, off: isize) -> (usize, usize) {
        let sw = self.sw as isize;
        let lo = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
        let hi = if (self.w as isize) <= off { 0 } else { (self.w as isize - off + sw - 1) / sw };
        let hi = (hi as usize).min(self.ow);
        (lo as usize, hi.max(lo as usize))
    }
}

/// Direct convolution: x [n, cin, h, w], w [cout, cin/group, kh, kw].
fn conv2d<T: Acc>(x: &[T], wt: &[T], bias: Option<&[T]>, g: &Geo, cout: usize, group: usize) -> Vec<T> {
    let cin_g = g.c / group;
    let cout_g = cout / group;
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::default(); g.n * cout * oplane];
    if oplane == 0 {
        return out;
    }
    for (bo, o) in out.chunks_exact_mut(oplane).enumerate() {
        let (b, oc) = (bo / cout, bo % cout);
        if let Some(bias) = bias {
            o.fill(bias[oc]);
        }
        let grp = oc / cout_g;
        for icg in 0..cin_g {
            let ic = grp * cin_g + icg;
            let xp = &x[(b * g.c + ic) * plane..][..plane];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let wv = wt[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                    let off = (kx * g.dw) as isize - g.pl as isize;
                    let (lo, hi) = g.valid_cols(off);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let xrow = &xp[iy as usize * g.w..][..g.w];
                        let orow = &mut o[oy * g.ow + lo..oy * g.ow + hi];
                        let ix0 = (lo as isize * g.sw as isize + off) as usize;
                        if g.sw == 1 {
                            for (ov, &xv) in orow.iter_mut().zip(&xrow[ix0..]) {
                                *ov = ov.mac(wv, xv);
                            }
                        } else {
                            for (ov, &xv) in orow.iter_mut().zip(xrow[ix0..].iter().step_by(g.sw)) {
                                *ov = ov.mac(wv, xv);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `Conv` (1-D or 2-D cross-correlation): inputs x [N,C,spatial...], w
/// [Cout, C/group, kernel...], optional bias [Cout]. Integer x and w compute exactly
/// (bias added in i64); output I32 if x and w are 8/16-bit, else I64.
#[derive(Clone, Debug)]
pub struct Conv {
    /// Stride per spatial dim.
    pub strides: Vec<usize>,
    /// Pads `[begin..., end...]`.
    pub pads: Vec<usize>,
    /// Dilation per spatial dim.
    pub dilations: Vec<usize>,
    /// Number of groups (C and Cout must be divisible by it).
    pub group: usize,
}

impl Conv {
    fn check(&self, x: &TensorType, w: &TensorType, b: Option<&TensorType>) -> Result<(Arith, Geo)> {
        let arith = product_arith(x.dtype, w.dtype)?;
        ensure!(
            w.shape.len() == x.shape.len(),
            "weight rank {} differs from input rank {}",
            w.shape.len(),
            x.shape.len()
        );
        ensure!(self.group >= 1, "group must be >= 1");
        let geo = Window {
            kernel: w.shape.get(2..).unwrap_or(&[]),
            strides: &self.strides,
            pads: &self.pads,
            dilations: &self.dilations,
            ceil_mode: false,
        }
        .geo(&x.shape)?;
        let (cout, cin_g) = (w.shape[0], w.shape[1]);
        ensure!(
            cin_g * self.group == geo.c,
            "input has {} channels, weight expects {cin_g} x group {} = {}",
            geo.c,
            self.group,
            cin_g * self.group
        );
        ensure!(cout % self.group == 0, "output channels {cout} not divisible by group {}", self.group);
        if let Some(b) = b {
            check_extra_operand(arith, b.dtype, "bias")?;
            ensure!(b.shape == [cout], "bias must have shape [{cout}], got {:?}", b.shape);
        }
        Ok((arith, geo))
    }
}

impl Op for Conv {
    op_common!("Conv");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(matches!(inputs.len(), 2 | 3), "expects 2 or 3 inputs (x, w, bias), got {}", inputs.len());
        let (x, w) = (inputs[0].ty, inputs[1].ty);
        let (arith, geo) = self.check(x, w, inputs.get(2).map(|b| b.ty))?;
        Ok(vec![TensorType::new(arith.out_dtype(), geo.out_shape(w.shape[0], x.shape.len()))])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let (x, w) = (inputs[0], inputs[1]);
        let b = inputs.get(2).copied();
        let (arith, geo) = self.check(&x.ty(), &w.ty(), b.map(|b| b.ty()).as_ref())?;
        let cout = w.shape()[0];
        let shape = geo.out_shape(cout, x.shape().len());
        let out = match arith {
            Arith::Float(dt) => {
                let bias = b.map(f32_data);
                let y = conv2d(&f32_data(x), &f32_data(w), bias.as_deref(), &geo, cout, self.group);
                float_tensor(dt, &shape, y)?
            }
            Arith::Int(dt) => {
                let bias = b.map(i64_data);
                let y = conv2d(&i64_data(x), &i64_data(w), bias.as_deref(), &geo, cout, self.group);
                int_tensor(dt, &shape, y)?
            }
        };
        Ok(vec![out])
    }

    /// out_elems · (C/group) · kernel_elems.
    fn macs(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> u64 {
        let w = &inputs[1].shape;
        let per: usize = w.iter().skip(1).product();
        (outputs[0].len() * per) as u64
    }
}

/// For every output position, calls `f(plane_index, out_index, taps)` with the
/// in-bounds input offsets of the window, plus the tap count inside the padded input.
fn for_windows(g: &Geo, mut f: impl FnMut(usize, usize, &[usize], usize)) {
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    let in_padded = |p: isize, size: usize, pb: usize, pe: usize| p >= -(pb as isize) && p < (size + pe) as isize;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            taps.clear();
            let mut padded = 0;
            for ky in 0..g.kh {
                let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                for kx in 0..g.kw {
                    let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                    if in_padded(iy, g.h, g.pt, g.pb) && in_padded(ix, g.w, g.pl, g.pr) {
                        padded += 1;
                    }
                    if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
                        taps.push(iy as usize * g.w + ix as usize);
                    }
                }
            }
            for p in 0..g.n * g.c {
                f(p, oy * g.ow + ox, &taps, padded);
            }
        }
    }
}

fn max_pool<T: Acc>(x: &[T], g: &Geo, lowest: T) -> Vec<T> {
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![lowest; g.n * g.c * oplane];
    for_windows(g, |p, o, taps, _| {
        let xp = &x[p * plane..][..plane];
        out[p * oplane + o] = taps.iter().map(|&t| xp[t]).fold(lowest, |m, v| if v > m { v } else { m });
    });
    out
}

/// `MaxPool` (1 output; the optional Indices output is not supported). Padding acts
/// as −∞. Works on floats (in f32) and integers (exact).
#[derive(Clone, Debug)]
pub struct MaxPool {
    /// Window size per spatial dim.
    pub kernel: Vec<usize>,
    /// Stride per spatial dim.
    pub strides: Vec<usize>,
    /// Pads `[begin..., end...]`.
    pub pads: Vec<usize>,
    /// Dilation per spatial dim.
    pub dilations: Vec<usize>,
    /// Round the output size up.
    pub ceil_mode: bool,
}

impl MaxPool {
    fn geo(&self, x: &[usize]) -> Result<Geo> {
        Window {
            kernel: &self.kernel,
            strides: &self.strides,
            pads: &self.pads,
            dilations: &self.dilations,
            ceil_mode: self.ceil_mode,
        }
        .geo(x)
    }
}

impl Op for MaxPool {
    op_common!("MaxPool");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let x = inputs[0].ty;
        ensure!(x.dtype != DType::Bool, "MaxPool on a bool tensor");
        let g = self.geo(&x.shape)?;
        Ok(vec![TensorType::new(x.dtype, g.out_shape(g.c, x.shape.len()))])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let g = self.geo(x.shape())?;
        let shape = g.out_shape(g.c, x.shape().len());
        let out = if x.dtype().is_float() {
            float_tensor(x.dtype(), &shape, max_pool(&f32_data(x), &g, f32::NEG_INFINITY))?
        } else {
            int_tensor(x.dtype(), &shape, max_pool(&i64_data(x), &g, i64::MIN))?
        };
        Ok(vec![out])
    }
}

/// `AveragePool` (floats). The divisor counts the window taps inside the input, or
/// with `count_include_pad` inside the padded input (ceil-mode overhang never counts).
#[derive(Clone, Debug)]
pub struct AveragePool {
    /// Window size per spatial dim.
    pub kernel: Vec<usize>,
    /// Stride per spatial dim.
    pub strides: Vec<usize>,
    /// Pads `[begin..., end...]`.
    pub pads: Vec<usize>,
    /// Dilation per spatial dim (ONNX ≥ 19; 1 before).
    pub dilations: Vec<usize>,
    /// Round the output size up.
    pub ceil_mode: bool,
    /// Count padding taps in the divisor.
    pub count_include_pad: bool,
}

impl AveragePool {
    fn geo(&self, x: &[usize]) -> Result<Geo> {
        Window {
            kernel: &self.kernel,
            strides: &self.strides,
            pads: &self.pads,
            dilations: &self.dilations,
            ceil_mode: self.ceil_mode,
        }
        .geo(x)
    }
}

impl Op for AveragePool {
    op_common!("AveragePool");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let x = inputs[0].ty;
        ensure!(x.dtype.is_float(), "AveragePool needs a float input, got {}", x.dtype);
        let g = self.geo(&x.shape)?;
        Ok(vec![TensorType::new(x.dtype, g.out_shape(g.c, x.shape.len()))])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let g = self.geo(x.shape())?;
        let xs = f32_data(x);
        let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
        let mut out = vec![0f32; g.n * g.c * oplane];
        for_windows(&g, |p, o, taps, padded| {
            let xp = &xs[p * plane..][..plane];
            let sum: f32 = taps.iter().map(|&t| xp[t]).sum();
            let count = if self.count_include_pad { padded } else { taps.len() };
            out[p * oplane + o] = sum / count as f32;
        });
        Ok(vec![float_tensor(x.dtype(), &g.out_shape(g.c, x.shape().len()), out)?])
    }
}

/// `GlobalAveragePool`: mean over all spatial dims of [N, C, spatial...] (floats);
/// the spatial dims become 1.
#[derive(Clone, Debug)]
pub struct GlobalAveragePool;

impl Op for GlobalAveragePool {
    op_common!("GlobalAveragePool");

    fn infer(&self, inputs: &[InputFact]) -> Result<Vec<TensorType>> {
        ensure!(inputs.len() == 1, "expects 1 input, got {}", inputs.len());
        let x = inputs[0].ty;
        ensure!(x.dtype.is_float(), "GlobalAveragePool needs a float input, got {}", x.dtype);
        ensure!(x.shape.len() >= 3, "input must be N,C,spatial... (rank >= 3), got {:?}", x.shape);
        let mut s = x.shape.clone();
        s[2..].iter_mut().for_each(|d| *d = 1);
        Ok(vec![TensorType::new(x.dtype, s)])
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = inputs[0];
        let shape = x.shape();
        ensure!(shape.len() >= 3, "input must be N,C,spatial... (rank >= 3), got {:?}", shape);
        let plane: usize = shape[2..].iter().product();
        let xs = f32_data(x);
        let out: Vec<f32> = (0..shape[0] * shape[1])
            .map(|p| {
                let s: f64 = xs[p * plane..(p + 1) * plane].iter().map(|&v| v as f64).sum();
                (s / plane as f64) as f32
            })
            .collect();
        let mut s = shape.to_vec();
        s[2..].iter_mut().for_each(|d| *d = 1);
        Ok(vec![float_tensor(x.dtype(), &s, out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: &dyn Op, ts: &[&Tensor]) -> Result<Tensor> {
        let tys: Vec<TensorType> = ts.iter().map(|t| t.ty()).collect();
        let fs: Vec<InputFact> = tys.iter().map(|ty| InputFact { ty, value: None }).collect();
        let out_ty = op.infer(&fs)?;
        let out = op.eval(ts)?.remove(0);
        assert_eq!(out.ty(), out_ty[0]);
        Ok(out)
    }

    /// Naive reference: every output, every tap, with explicit bounds checks.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        b: &[f32],
        s: [usize; 2],
        p: [usize; 4],
        d: [usize; 2],
        group: usize,
    ) -> (Vec<usize>, Vec<f32>) {
        let [n, c, h, wd] = xs;
        let [co, cig, kh, kw] = ws;
        let oh = (h + p[0] + p[2] - d[0] * (kh - 1) - 1) / s[0] + 1;
        let ow = (wd + p[1] + p[3] - d[1] * (kw - 1) - 1) / s[1] + 1;
        let mut out = vec![0f32; n * co * oh * ow];
        for bn in 0..n {
            for oc in 0..co {
                let g = oc / (co / group);
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b[oc];
                        for icg in 0..cig {
                            let ic = g * cig + icg;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (y * s[0] + ky * d[0]) as i64 - p[0] as i64;
                                    let ix = (xo * s[1] + kx * d[1]) as i64 - p[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                        continue;
                                    }
                                    let xv = x[((bn * c + ic) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((oc * cig + icg) * kh + ky) * kw + kx];
                                    acc += xv * wv;
                                }
                            }
                        }
                        out[((bn * co + oc) * oh + y) * ow + xo] = acc;
                    }
                }
            }
        }
        (vec![n, co, oh, ow], out)
    }

    #[test]
    fn conv2d_pads_stride_group_vs_naive() {
        let x: Vec<f32> = (0..32).map(|v| (v as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..4 * 3 * 3).map(|v| (v as f32 * 0.71).cos()).collect();
        let b = vec![0.5, -1.0, 0.25, 2.0];
        for (s, p, d) in [
            ([2, 2], [1, 1, 1, 1], [1, 1]),
            ([1, 2], [0, 1, 2, 0], [1, 1]),
            ([1, 1], [2, 2, 2, 2], [2, 2]),
            ([3, 1], [1, 0, 0, 1], [1, 2]),
        ] {
            let op = Conv { strides: s.to_vec(), pads: p.to_vec(), dilations: d.to_vec(), group: 2 };
            let xt = Tensor::from_vec(&[1, 2, 4, 4], x.clone()).unwrap();
            // 2 groups: w [4, 1, 3, 3]; the first 36 values.
            let wt = Tensor::from_vec(&[4, 1, 3, 3], w[..36].to_vec()).unwrap();
            let bt = Tensor::from_vec(&[4], b.clone()).unwrap();
            let y = run(&op, &[&xt, &wt, &bt]).unwrap();
            let (shape, want) = naive_conv(&x, [1, 2, 4, 4], &w[..36], [4, 1, 3, 3], &b, s, p, d, 2);
            assert_eq!(y.shape(), &shape[..], "s {s:?} p {p:?} d {d:?}");
            for (a, e) in y.to_f64_vec().iter().zip(&want) {
                assert!((a - *e as f64).abs() < 1e-5, "s {s:?} p {p:?}: {a} vs {e}");
            }
        }
        // group 1 with 2 input channels, no bias
        let op = Conv { strides: vec![1, 1], pads: vec![1, 1, 1, 1], dilations: vec![1, 1], group: 1 };
        let xt = Tensor::from_vec(&[1, 2, 4, 4], x.clone()).unwrap();
        let wt = Tensor::from_vec(&[2, 2, 3, 3], w.clone()).unwrap();
        let y = run(&op, &[&xt, &wt]).unwrap();
        let (_, want) = naive_conv(&x, [1, 2, 4, 4], &w, [2, 2, 3, 3], &[0., 0.], [1, 1], [1, 1, 1, 1], [1, 1], 1);
        for (a, e) in y.to_f64_vec().iter().zip(&want) {
            assert!((a - *e as f64).abs() < 1e-5);
        }
    }

    #[test]
    fn conv1d_and_int() {
        // x [1,1,5] = 1..5, w [1,1,3] = [1,0,-1], pad 1, stride 2
        let x = Tensor::from_vec(&[1, 1, 5], vec![1i8, 2, 3, 4, 5]).unwrap();
        let w = Tensor::from_vec(&[1, 1, 3], vec![1i8, 0, -1]).unwrap();
        let op = Conv { strides: vec![2], pads: vec![1, 1], dilations: vec![1], group: 1 };
        let y = run(&op, &[&x, &w]).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert_eq!(y.shape(), &[1, 1, 3]);
        assert_eq!(y.to_i64_vec(), vec![-2, -2, 4]);
        let bad = Tensor::from_vec(&[1, 2, 3], vec![0i8; 6]).unwrap();
        assert!(run(&op, &[&x, &bad]).is_err());
    }

    #[test]
    fn max_pool_padding() {
        // 1x1x3x3 = 1..9, k2 s2 p1: windows at rows {-1,0},{1,2} x cols {-1,0},{1,2}
        let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
        let op = MaxPool {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let y = run(&op, &[&x]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_f64_vec(), vec![1., 3., 7., 9.]);
        // negative values: padding must not win
        let xn = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(|v| -(v as f32)).collect::<Vec<_>>()).unwrap();
        let y = run(&op, &[&xn]).unwrap();
        assert_eq!(y.to_f64_vec(), vec![-1., -2., -4., -5.]);
        // k3 s2 p1 as in CCT, and ceil mode on 1-D
        let op = MaxPool {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        assert_eq!(run(&op, &[&x]).unwrap().to_f64_vec(), vec![5., 6., 8., 9.]);
        let x1 = Tensor::from_vec(&[1, 1, 5], vec![1u8, 5, 2, 7, 3]).unwrap();
        let op = MaxPool { kernel: vec![2], strides: vec![2], pads: vec![0, 0], dilations: vec![1], ceil_mode: true };
        let y = run(&op, &[&x1]).unwrap();
        assert_eq!((y.dtype(), y.to_i64_vec()), (DType::U8, vec![5, 7, 3]));
    }

    #[test]
    fn average_pool_counts() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let mk = |cip| AveragePool {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            pads: vec![1, 1, 0, 0],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: cip,
        };
        assert_eq!(run(&mk(false), &[&x]).unwrap().to_f64_vec(), vec![1., 1.5, 2., 2.5]);
        assert_eq!(run(&mk(true), &[&x]).unwrap().to_f64_vec(), vec![0.25, 0.75, 1., 2.5]);
        let y = run(&GlobalAveragePool, &[&x]).unwrap();
        assert_eq!((y.shape().to_vec(), y.to_f64_vec()), (vec![1, 1, 1, 1], vec![2.5]));
    }

    #[test]
    fn window_sizes() {
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, false).unwrap(), 2);
        assert_eq!(window_out(5, 2, 2, 1, 0, 0, true).unwrap(), 3);
        // ceil mode: a window starting in the end padding is dropped
        assert_eq!(window_out(5, 2, 2, 1, 1, 1, false).unwrap(), 3);
        assert_eq!(window_out(5, 2, 2, 1, 1, 1, true).unwrap(), 3);
        assert_eq!(window_out(6, 3, 2, 1, 0, 0, true).unwrap(), 3);
        assert!(window_out(2, 5, 1, 1, 0, 0, false).is_err());
    }
}
