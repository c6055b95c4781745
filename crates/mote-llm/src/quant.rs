//! Post-training int8 quantization of a llama2.c decoder: activation ranges calibrated on token sequences run
//! through the float decoder, weights int8 symmetric per output channel, every requantization an integer
//! parameter of [`mote_kernels::decoder`].

use std::collections::HashMap;

use mote_core::quantize::{quantize_symmetric, Affine};
use mote_kernels::decoder::DecoderShape;
use mote_kernels::elementwise::{AddShift, MulRequant};
use mote_kernels::host::{
    add_shift_params, build_lut_i8, high_mul_multiplier, layernorm_i8_params, quantize_multiplier,
};
use mote_kernels::norm::LayerNormI8Params;
use mote_kernels::packed::{pack_linear, LinearWeights, PackedLayout};
use ndarray::{s, ArrayView1, ArrayView2};

use crate::float::{forward, rope_angle, FloatCache, Point, RMS_EPS};
use crate::{Checkpoint, Error, Result};

/// Real range of the attention's exponential table: `exp(-x)` for `x` in `[0, EXP_RANGE]` (below it, 0).
const EXP_RANGE: f64 = 16.0;

/// Observed `[min, max]` of every [`Point`] over the calibration tokens.
#[derive(Clone, Debug, Default)]
pub struct Ranges(HashMap<Point, (f32, f32)>);

impl Ranges {
    fn add(&mut self, p: Point, v: &[f32]) {
        let r = self.0.entry(p).or_insert((f32::INFINITY, f32::NEG_INFINITY));
        for &x in v {
            r.0 = r.0.min(x);
            r.1 = r.1.max(x);
        }
    }

    fn get(&self, p: Point) -> Result<(f64, f64)> {
        let (lo, hi) = self.0.get(&p).ok_or_else(|| Error::Invalid(format!("no calibration values for {p:?}")))?;
        Ok((f64::from(*lo), f64::from(*hi)))
    }

    /// Asymmetric int8 parameters covering the range (widened to include 0), as mote's activation quantizer
    /// chooses them.
    fn asym(&self, p: Point) -> Result<(f64, i32)> {
        let (lo, hi) = self.get(p)?;
        Affine::int8_from_range(lo, hi).single("an activation").map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Symmetric int8 scale (`max|x| / 127`).
    fn sym(&self, p: Point) -> Result<f64> {
        let (lo, hi) = self.get(p)?;
        let m = lo.abs().max(hi.abs());
        Ok(if m > 0.0 { m / 127.0 } else { 1.0 })
    }
}

/// Calibration token sequences from text: paragraphs (separated by empty lines or lines holding only `%`, as in
/// fortune files), each encoded with BOS, truncated to `context`; at most `limit` of them.
pub fn text_sequences(tok: &crate::Tokenizer, text: &str, limit: usize, context: usize) -> Result<Vec<Vec<u32>>> {
    let mut seqs = Vec::new();
    let mut para = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() || line.trim() == "%" {
            let t = para.trim();
            if !t.is_empty() && seqs.len() < limit {
                let mut ids = tok.encode(t, true, false)?;
                ids.truncate(context);
                seqs.push(ids);
            }
            para.clear();
        } else {
            para.push_str(line);
            para.push('\n');
        }
    }
    Ok(seqs)
}

/// How the int8 decoder follows the float one over token sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// SQNR (dB) of the dequantized int8 logits against the float logits, over every position.
    pub logits_sqnr_db: f64,
    /// Positions where both pick the same next token (greedy).
    pub top1_same: usize,
    /// Positions compared.
    pub positions: usize,
}

/// Runs `seqs` through the float decoder and the int8 one (on the host, weights packed for `layout`) side by
/// side and compares their logits.
pub fn agreement(ck: &Checkpoint, q: &QuantDecoder, layout: PackedLayout, seqs: &[Vec<u32>]) -> Result<Agreement> {
    let dec = crate::generate::PackedDecoder::new(q, layout)?;
    let (mut signal, mut noise, mut same, mut positions) = (0f64, 0f64, 0usize, 0usize);
    let (s, z) = q.logits;
    for seq in seqs {
        let mut cache = FloatCache::new(&ck.config, q.shape.context);
        let mut session = crate::generate::Session::new(&dec);
        for (pos, &t) in seq.iter().take(q.shape.context).enumerate() {
            let f = forward(ck, &mut cache, t as usize, pos, &mut |_, _| {})?;
            let i = session.step(t)?;
            for (&a, &b) in f.iter().zip(i) {
                let b = (f64::from(b) - f64::from(z)) * s;
                signal += f64::from(a).powi(2);
                noise += (f64::from(a) - b).powi(2);
            }
            let fa = f.iter().enumerate().fold((0, f32::MIN), |m, (k, &v)| if v > m.1 { (k, v) } else { m }).0;
            same += usize::from(mote_kernels::decoder::argmax(i) == Some(fa));
            positions += 1;
        }
    }
    let logits_sqnr_db = if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() };
    Ok(Agreement { logits_sqnr_db, top1_same: same, positions })
}

/// Runs every sequence (token ids, at most `context` long) through the float decoder and records the range
/// of every [`Point`].
pub fn calibrate(ck: &Checkpoint, sequences: &[Vec<u32>], context: usize) -> Result<Ranges> {
    let mut ranges = Ranges::default();
    // Every embedding row can start the residual stream, not only the calibration tokens.
    ranges.add(Point::Residual(0), ck.weights.token_embedding_table.as_slice().unwrap_or_default());
    for seq in sequences {
        let mut cache = FloatCache::new(&ck.config, context);
        for (pos, &t) in seq.iter().take(context).enumerate() {
            forward(ck, &mut cache, t as usize, pos, &mut |p, v| ranges.add(p, v))?;
        }
    }
    Ok(ranges)
}

/// An int8 linear layer before packing: weights `[n, k]` and per-channel `HighMul` multipliers.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLinear {
    /// Weights, row `j` = output channel `j`.
    pub w: Vec<i8>,
    /// `HighMul` multiplier per output channel.
    pub mul: Vec<i32>,
    /// Output channels.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Added to every input (the negated input zero point); folded into the packed bias.
    pub input_offset: i32,
}

impl QuantLinear {
    /// The weights packed for `layout`.
    pub fn pack(&self, layout: PackedLayout) -> Result<Vec<i32>> {
        let mut out = vec![0i32; layout.words(self.n, self.k)];
        let src = LinearWeights {
            w: &self.w,
            bias: None,
            input_offset: self.input_offset,
            mul: &self.mul,
            n: self.n,
            k: self.k,
        };
        pack_linear(layout, &src, &mut out).map_err(|e| Error::Invalid(format!("packing a linear layer: {e}")))?;
        Ok(out)
    }
}

/// mote's int8 RMSNorm parameters (owned [`LayerNormI8Params`]).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantNorm {
    /// `γ / s_out` in fixed point.
    pub gamma: Vec<i32>,
    /// Zero (RMSNorm has no shift), one per column.
    pub beta: Vec<i32>,
    /// Fraction bits of `gamma`.
    pub frac_bits: u32,
    /// Epsilon in the kernel's units.
    pub eps: u64,
    /// Output zero point.
    pub out_zero_point: i32,
    /// Input zero point (the real 0 the RMS is taken around).
    pub in_zero_point: i32,
}

impl QuantNorm {
    /// The kernel's view.
    pub fn params(&self) -> LayerNormI8Params<'_> {
        LayerNormI8Params {
            gamma: &self.gamma,
            beta: &self.beta,
            frac_bits: self.frac_bits,
            eps: self.eps,
            out_zero_point: self.out_zero_point,
            rms_zero_point: Some(self.in_zero_point),
        }
    }
}

/// One quantized transformer block (owned [`DecoderLayer`] before packing).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLayer {
    /// RMSNorm before attention.
    pub attn_norm: QuantNorm,
    /// Query, key and value projections, stacked.
    pub qkv: QuantLinear,
    /// Score differences to steps of the exponential table.
    pub score_mul: u32,
    /// The exponential table (Q14).
    pub exp: Box<[u16; 256]>,
    /// Values to the attention output's scale (Q30).
    pub value_mul: u32,
    /// Output projection.
    pub wo: QuantLinear,
    /// Its output zero point.
    pub wo_zero_point: i32,
    /// Residual add after attention.
    pub attn_add: AddShift,
    /// RMSNorm before the MLP.
    pub ffn_norm: QuantNorm,
    /// Gate and up projections, stacked.
    pub w13: QuantLinear,
    /// SiLU table.
    pub silu: Box<[i8; 256]>,
    /// `silu(gate)·up`.
    pub gate_mul: MulRequant,
    /// Down projection.
    pub w2: QuantLinear,
    /// Its output zero point.
    pub w2_zero_point: i32,
    /// Residual add after the MLP.
    pub ffn_add: AddShift,
}

/// A quantized decoder, independent of the core its weights will be packed for.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantDecoder {
    /// Dimensions and compiled context.
    pub shape: DecoderShape,
    /// Token embedding at the first residual scale.
    pub embedding: Vec<i8>,
    /// Rotary table, Q14.
    pub rope: Vec<i16>,
    /// Blocks.
    pub layers: Vec<QuantLayer>,
    /// Final RMSNorm.
    pub final_norm: QuantNorm,
    /// Classifier.
    pub classifier: QuantLinear,
    /// Scale and zero point of the int8 logits.
    pub logits: (f64, i32),
}

/// Per-channel symmetric int8 of the rows of `w` (`[n, k]`, row = output channel).
fn quantize_rows(w: ArrayView2<f32>) -> (Vec<i8>, Vec<f64>) {
    let data: Vec<f32> = w.iter().copied().collect();
    quantize_symmetric(&data, &[w.nrows(), w.ncols()], Some(0))
}

/// Smallest output scale not below `want` that keeps every `HighMul` multiplier `s_in·s_w/s_out` below 1/2.
fn fit_high_mul(want: f64, s_in: f64, s_w: &[f64]) -> f64 {
    let max_w = s_w.iter().copied().fold(0.0, f64::max);
    want.max(2.0 * s_in * max_w * (1.0 + 1e-6))
}

fn multipliers(s_in: f64, s_w: &[f64], s_out: &[f64], what: &str) -> Result<Vec<i32>> {
    s_w.iter()
        .zip(s_out)
        .map(|(w, o)| {
            high_mul_multiplier(s_in * w / o)
                .ok_or_else(|| Error::Invalid(format!("{what}: requantization multiplier out of range")))
        })
        .collect()
}

fn norm(gamma: ArrayView1<f32>, (s_in, z_in): (f64, i32), (s_out, z_out): (f64, i32), what: &str) -> Result<QuantNorm> {
    let g: Vec<f64> = gamma.iter().map(|&v| f64::from(v)).collect();
    let zeros = vec![0.0; g.len()];
    let (gamma, beta, frac_bits, eps) = layernorm_i8_params(&g, &zeros, f64::from(RMS_EPS), s_in, s_out)
        .ok_or_else(|| Error::Invalid(format!("{what}: RMSNorm parameters do not fit the int8 kernel")))?;
    Ok(QuantNorm { gamma, beta, frac_bits, eps, out_zero_point: z_out, in_zero_point: z_in })
}

fn add(a: (f64, i32), b: (f64, i32), y: (f64, i32), what: &str) -> Result<AddShift> {
    add_shift_params(a, b, 1.0, y)
        .ok_or_else(|| Error::Invalid(format!("{what}: the residual add's scale ratios do not fit 16-bit multipliers")))
}

/// Quantizes `ck` for a cache of `context` positions with the calibrated `ranges`.
pub fn quantize(ck: &Checkpoint, ranges: &Ranges, context: usize) -> Result<QuantDecoder> {
    let c = &ck.config;
    let w = &ck.weights;
    if context == 0 || context > c.seq_len {
        return Err(Error::Invalid(format!("context {context} is outside 1..={} (the model's seq_len)", c.seq_len)));
    }
    let shape = DecoderShape {
        dim: c.dim,
        hidden: c.hidden_dim,
        layers: c.n_layers,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        vocab: c.vocab_size,
        context,
    };
    let hs = c.head_size();
    let mut h = ranges.asym(Point::Residual(0))?;
    let embedding: Vec<i8> = w
        .token_embedding_table
        .iter()
        .map(|&v| ((f64::from(v) / h.0).round() + f64::from(h.1)).clamp(-128.0, 127.0) as i8)
        .collect();
    let mut layers = Vec::with_capacity(c.n_layers);
    for l in 0..c.n_layers {
        let what = |t: &str| format!("layer {l} {t}");
        let xa = ranges.asym(Point::AttnNorm(l))?;
        let attn_norm = norm(w.rms_att_weight.row(l), h, xa, &what("attention RMSNorm"))?;
        // q, k, v: symmetric, scales large enough for HighMul.
        let mut qkv_w = Vec::new();
        let mut qkv_sw = Vec::new();
        let mut qkv_so = Vec::new();
        let mut part_scale = Vec::with_capacity(3);
        for (m, p) in [(&w.wq, Point::Query(l)), (&w.wk, Point::Key(l)), (&w.wv, Point::Value(l))] {
            let (q, sw) = quantize_rows(m.slice(s![l, .., ..]));
            let so = fit_high_mul(ranges.sym(p)?, xa.0, &sw);
            qkv_so.extend(std::iter::repeat_n(so, sw.len()));
            qkv_w.extend(q);
            qkv_sw.extend(sw);
            part_scale.push(so);
        }
        let [sq, sk, sv] = part_scale[..] else { unreachable!("three parts") };
        let qkv = QuantLinear {
            mul: multipliers(xa.0, &qkv_sw, &qkv_so, &what("q/k/v projection"))?,
            w: qkv_w,
            n: shape.qkv_rows(),
            k: c.dim,
            input_offset: -xa.1,
        };
        // One table step is at least EXP_RANGE/255 (the table then reaches e^-EXP_RANGE), and at least one
        // score unit, so that score_mul < 2^32.
        let score_real = sq * sk / (hs as f64).sqrt();
        let s_exp = (EXP_RANGE / 255.0).max(score_real * (1.0 + 1e-9));
        let score_mul = (score_real / s_exp * 2f64.powi(32)).round().min(f64::from(u32::MAX)) as u32;
        let exp = Box::new(std::array::from_fn(|i| ((-(i as f64) * s_exp).exp() * 16384.0).round() as u16));
        // The output is a convex combination of values: its scale stays within 4× of theirs (value_mul < 2^32).
        let s_att = ranges.sym(Point::AttnOut(l))?.max(sv / 3.99);
        let value_mul = (sv / s_att * 2f64.powi(30)).round() as u32;
        let (wo_q, wo_s) = quantize_rows(w.wo.slice(s![l, .., ..]));
        let (s_ao, z_ao) = ranges.asym(Point::AttnProj(l))?;
        let s_ao = fit_high_mul(s_ao, s_att, &wo_s);
        let wo = QuantLinear {
            mul: multipliers(s_att, &wo_s, &vec![s_ao; c.dim], &what("wo"))?,
            w: wo_q,
            n: c.dim,
            k: c.dim,
            input_offset: 0,
        };
        let h1 = ranges.asym(Point::Residual(2 * l + 1))?;
        let attn_add = add(h, (s_ao, z_ao), h1, &what("attention residual"))?;
        h = h1;

        let xf = ranges.asym(Point::FfnNorm(l))?;
        let ffn_norm = norm(w.rms_ffn_weight.row(l), h, xf, &what("MLP RMSNorm"))?;
        let (g_q, g_s) = quantize_rows(w.w1.slice(s![l, .., ..]));
        let (u_q, u_s) = quantize_rows(w.w3.slice(s![l, .., ..]));
        let s_gate = fit_high_mul(ranges.sym(Point::Gate(l))?, xf.0, &g_s);
        let s_up = fit_high_mul(ranges.sym(Point::Up(l))?, xf.0, &u_s);
        let mut so = vec![s_gate; c.hidden_dim];
        so.extend(std::iter::repeat_n(s_up, c.hidden_dim));
        let sw: Vec<f64> = g_s.iter().chain(&u_s).copied().collect();
        let w13 = QuantLinear {
            mul: multipliers(xf.0, &sw, &so, &what("w1/w3"))?,
            w: g_q.into_iter().chain(u_q).collect(),
            n: 2 * c.hidden_dim,
            k: c.dim,
            input_offset: -xf.1,
        };
        let (s_silu, z_silu) = ranges.asym(Point::Silu(l))?;
        let silu = Box::new(build_lut_i8(|x| x / (1.0 + (-x).exp()), s_gate, 0, s_silu, z_silu));
        let (s_m, z_m) = ranges.asym(Point::Hidden(l))?;
        let (output_multiplier, output_shift) = quantize_multiplier(s_silu * s_up / s_m);
        let gate_mul = MulRequant {
            input1_offset: -z_silu,
            input2_offset: 0,
            output_multiplier,
            output_shift,
            output_offset: z_m,
            act_min: -128,
            act_max: 127,
        };
        let (w2_q, w2_s) = quantize_rows(w.w2.slice(s![l, .., ..]));
        let (s_d, z_d) = ranges.asym(Point::FfnProj(l))?;
        let s_d = fit_high_mul(s_d, s_m, &w2_s);
        let w2 = QuantLinear {
            mul: multipliers(s_m, &w2_s, &vec![s_d; c.dim], &what("w2"))?,
            w: w2_q,
            n: c.dim,
            k: c.hidden_dim,
            input_offset: -z_m,
        };
        let h2 = ranges.asym(Point::Residual(2 * l + 2))?;
        let ffn_add = add(h, (s_d, z_d), h2, &what("MLP residual"))?;
        h = h2;
        layers.push(QuantLayer {
            attn_norm,
            qkv,
            score_mul,
            exp,
            value_mul,
            wo,
            wo_zero_point: z_ao,
            attn_add,
            ffn_norm,
            w13,
            silu,
            gate_mul,
            w2,
            w2_zero_point: z_d,
            ffn_add,
        });
    }
    let xo = ranges.asym(Point::FinalNorm)?;
    let final_norm = norm(w.rms_final_weight.view(), h, xo, "final RMSNorm")?;
    let (c_q, c_s) = quantize_rows(w.classifier());
    let (s_l, z_l) = ranges.asym(Point::Logits)?;
    let s_l = fit_high_mul(s_l, xo.0, &c_s);
    let classifier = QuantLinear {
        mul: multipliers(xo.0, &c_s, &vec![s_l; c.vocab_size], "classifier")?,
        w: c_q,
        n: c.vocab_size,
        k: c.dim,
        input_offset: -xo.1,
    };
    let rope = (0..context)
        .flat_map(|pos| {
            (0..hs / 2).flat_map(move |i| {
                let a = rope_angle(pos, i, hs);
                [(a.cos() * 16384.0).round() as i16, (a.sin() * 16384.0).round() as i16]
            })
        })
        .collect();
    Ok(QuantDecoder { shape, embedding, rope, layers, final_norm, classifier, logits: (s_l, z_l) })
}
