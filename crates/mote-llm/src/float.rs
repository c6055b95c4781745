//! The float decoder, exactly as llama2.c's `run.c` computes a step: the reference the int8 decoder is
//! calibrated on and compared with.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};

use crate::{Checkpoint, Config, Error, Result};

/// RMSNorm epsilon of llama2.c models.
pub const RMS_EPS: f32 = 1e-5;
/// RoPE base frequency of llama2.c models.
pub const ROPE_THETA: f64 = 10000.0;

/// A tensor inside a step whose values the int8 decoder needs a scale for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// The residual stream: 0 after the embedding, `2l + 1` after block `l`'s attention, `2l + 2` after its MLP.
    Residual(usize),
    /// RMSNorm output before attention.
    AttnNorm(usize),
    /// Queries (before and after rotation).
    Query(usize),
    /// Keys (before and after rotation).
    Key(usize),
    /// Values.
    Value(usize),
    /// Attention scores `q·k / √head_size`.
    Score(usize),
    /// Attention output (heads concatenated), before the output projection.
    AttnOut(usize),
    /// Output projection.
    AttnProj(usize),
    /// RMSNorm output before the MLP.
    FfnNorm(usize),
    /// Gate projection (`w1`).
    Gate(usize),
    /// Up projection (`w3`).
    Up(usize),
    /// `silu(gate)`.
    Silu(usize),
    /// `silu(gate) · up`.
    Hidden(usize),
    /// Down projection (`w2`).
    FfnProj(usize),
    /// The final RMSNorm output.
    FinalNorm,
    /// The logits.
    Logits,
}

/// The KV cache of the float decoder.
#[derive(Clone, Debug)]
pub struct FloatCache {
    keys: Vec<Array2<f32>>,
    values: Vec<Array2<f32>>,
}

impl FloatCache {
    /// An empty cache for `context` positions.
    pub fn new(config: &Config, context: usize) -> FloatCache {
        let z = || (0..config.n_layers).map(|_| Array2::zeros((context, config.kv_dim()))).collect();
        FloatCache { keys: z(), values: z() }
    }
}

fn rmsnorm(x: ArrayView1<f32>, w: ArrayView1<f32>) -> Array1<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let k = 1.0 / (ms + RMS_EPS).sqrt();
    x.iter().zip(w).map(|(v, g)| v * k * g).collect()
}

/// The rotation angle of pair `i` (elements `2i`, `2i+1` of a head) at `pos`, as `run.c` computes it.
pub fn rope_angle(pos: usize, i: usize, head_size: usize) -> f64 {
    let freq = 1.0 / ROPE_THETA.powf((2 * i) as f64 / head_size as f64);
    pos as f64 * freq
}

fn rope(x: &mut Array1<f32>, pos: usize, head_size: usize) {
    for (j, pair) in x.as_slice_mut().unwrap_or_default().chunks_exact_mut(2).enumerate() {
        let angle = rope_angle(pos, j % (head_size / 2), head_size) as f32;
        let (c, s) = (angle.cos(), angle.sin());
        if let [a, b] = pair {
            (*a, *b) = (*a * c - *b * s, *a * s + *b * c);
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Runs `token` at `pos` through the float decoder (`run.c`'s `forward`), updating `cache`, and returns the
/// logits; `observe` sees every [`Point`]'s values (for calibration).
pub fn forward(
    ck: &Checkpoint,
    cache: &mut FloatCache,
    token: usize,
    pos: usize,
    observe: &mut dyn FnMut(Point, &[f32]),
) -> Result<Array1<f32>> {
    let c = &ck.config;
    let w = &ck.weights;
    let context = cache.keys.first().map_or(0, |k| k.nrows());
    if token >= c.vocab_size || pos >= context {
        return Err(Error::Invalid(format!(
            "token {token} at position {pos}: the vocabulary has {} tokens, the cache {context} positions",
            c.vocab_size
        )));
    }
    let hs = c.head_size();
    let group = c.n_heads / c.n_kv_heads;
    let mut obs = |p: Point, v: &Array1<f32>| observe(p, v.as_slice().unwrap_or_default());
    let mat = |m: ArrayView2<f32>, x: &Array1<f32>| m.dot(x);
    let mut x = w.token_embedding_table.row(token).to_owned();
    obs(Point::Residual(0), &x);
    for (l, (key_cache, value_cache)) in cache.keys.iter_mut().zip(cache.values.iter_mut()).enumerate() {
        let xb = rmsnorm(x.view(), w.rms_att_weight.row(l));
        obs(Point::AttnNorm(l), &xb);
        let mut q = mat(w.wq.slice(s![l, .., ..]), &xb);
        let mut k = mat(w.wk.slice(s![l, .., ..]), &xb);
        let v = mat(w.wv.slice(s![l, .., ..]), &xb);
        obs(Point::Query(l), &q);
        obs(Point::Key(l), &k);
        rope(&mut q, pos, hs);
        rope(&mut k, pos, hs);
        obs(Point::Query(l), &q);
        obs(Point::Key(l), &k);
        obs(Point::Value(l), &v);
        key_cache.row_mut(pos).assign(&k);
        value_cache.row_mut(pos).assign(&v);
        let mut att_out = Array1::<f32>::zeros(c.dim);
        let mut all_scores = Vec::with_capacity(c.n_heads * (pos + 1));
        for h in 0..c.n_heads {
            let qh = q.slice(s![h * hs..(h + 1) * hs]);
            let kv = (h / group) * hs;
            let keys = key_cache.slice(s![..=pos, kv..kv + hs]);
            let scores: Vec<f32> = keys.rows().into_iter().map(|k| qh.dot(&k) / (hs as f32).sqrt()).collect();
            all_scores.extend_from_slice(&scores);
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            let values = value_cache.slice(s![..=pos, kv..kv + hs]);
            let mut o = att_out.slice_mut(s![h * hs..(h + 1) * hs]);
            for (p, v) in e.iter().zip(values.rows()) {
                o.scaled_add(p / sum, &v);
            }
        }
        obs(Point::Score(l), &Array1::from(all_scores));
        obs(Point::AttnOut(l), &att_out);
        let proj = mat(w.wo.slice(s![l, .., ..]), &att_out);
        obs(Point::AttnProj(l), &proj);
        x += &proj;
        obs(Point::Residual(2 * l + 1), &x);
        let xb = rmsnorm(x.view(), w.rms_ffn_weight.row(l));
        obs(Point::FfnNorm(l), &xb);
        let gate = mat(w.w1.slice(s![l, .., ..]), &xb);
        let up = mat(w.w3.slice(s![l, .., ..]), &xb);
        obs(Point::Gate(l), &gate);
        obs(Point::Up(l), &up);
        let act = gate.mapv(silu);
        obs(Point::Silu(l), &act);
        let hidden = &act * &up;
        obs(Point::Hidden(l), &hidden);
        let down = mat(w.w2.slice(s![l, .., ..]), &hidden);
        obs(Point::FfnProj(l), &down);
        x += &down;
        obs(Point::Residual(2 * l + 2), &x);
    }
    let xf = rmsnorm(x.view(), w.rms_final_weight.view());
    obs(Point::FinalNorm, &xf);
    let logits = mat(w.classifier(), &xf);
    obs(Point::Logits, &logits);
    Ok(logits)
}
