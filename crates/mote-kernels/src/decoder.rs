//! One decoding step of an int8 Llama-style decoder (token embedding, RMSNorm, rotary positions, causal
//! grouped-query attention over a KV cache, SwiGLU MLP, classifier), and token sampling from its logits.
//!
//! Everything lives in caller-owned memory: the weights ([`Decoder`], statics in generated code), the KV cache
//! (`[layer][key|value][position][kv_dim]` int8, [`DecoderShape::cache_bytes`]) and one `i32` scratch slice
//! ([`DecoderShape::scratch_words`]: the linear layers' activation panel, one head's sums and scores, then the
//! step's byte buffers).
//! Alignment: word-aligned by the types; the cache and logits are plain bytes.
//!
//! The arithmetic is that of the plain kernels it calls ([`layernorm_i8`], [`linear_packed`],
//! [`add_shift_in_place`], [`mul_requant_in_place`], [`lut_i8_in_place`]) plus two small integer pieces written
//! here: rotary embedding `a' = sat8(⌊(a·cos − b·sin + 2^13) / 2^14⌋)`, `b' = sat8(⌊(a·sin + b·cos + 2^13) / 2^14⌋)`
//! with Q14 tables, and attention per head over positions `t` in `0..=pos` (see [`AttentionParams`]):
//! `s_t = q·k_t`, `e_t = exp[min(255, ⌊(max_t s_t − s_t)·score_mul / 2^32⌋)]`, `S = Σ e_t`,
//! `o = sat8(⌊(Σ_t e_t·v_t · ⌊value_mul·2^16 / S⌋ + 2^45) / 2^46⌋)` — the softmax weights stay unnormalized
//! integers up to 2^14 and one division per head normalizes the output. Queries, keys, values and attention outputs
//! are symmetric (zero point 0); the cache holds keys after rotation.

use crate::activation::lut_i8_in_place;
use crate::elementwise::{add_shift_in_place, mul_requant_in_place, AddShift, MulRequant};
use crate::norm::{layernorm_i8, LayerNormI8Params};
use crate::packed::{linear_packed, PackedLayout, PackedLinear};
use crate::{IntElem, KernelError};

/// The longest context: `Σ_t e_t·v_t` must fit `i32` (`e_t ≤ 2^14`, `|v| ≤ 2^7`).
pub const MAX_CONTEXT: usize = 1023;

/// Dimensions of a decoder and its compiled context length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderShape {
    /// Residual stream width.
    pub dim: usize,
    /// SwiGLU hidden width.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`; fewer for grouped-query attention).
    pub kv_heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Positions the KV cache holds (the longest prompt plus generated tokens).
    pub context: usize,
}

impl DecoderShape {
    /// Width of one head (`dim / heads`, 0 without heads).
    pub const fn head_size(&self) -> usize {
        match self.dim.checked_div(self.heads) {
            Some(h) => h,
            None => 0,
        }
    }

    /// Width of the key and value projections.
    pub const fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_size()
    }

    /// Bytes of the KV cache: keys and values of every layer and position.
    pub const fn cache_bytes(&self) -> usize {
        2 * self.layers * self.context * self.kv_dim()
    }

    /// Entries of the rotary table: `[context, head_size / 2, (cos, sin)]`.
    pub const fn rope_len(&self) -> usize {
        self.context * self.head_size()
    }

    /// Rows of the fused query/key/value projection.
    pub const fn qkv_rows(&self) -> usize {
        self.dim + 2 * self.kv_dim()
    }

    /// Bytes of the step's activation buffers (see [`decoder_step`]).
    const fn buffer_bytes(&self) -> usize {
        // h, normed x, q|k|v, attention output, projection output, gate|up
        3 * self.dim + self.qkv_rows() + self.dim + 2 * self.hidden
    }

    /// `i32` words of scratch [`decoder_step`] needs with weights packed for `layout`: the linear layers'
    /// panel, one head's accumulators and scores over the context, then the byte buffers.
    pub const fn scratch_words(&self, layout: PackedLayout) -> usize {
        let k = if self.hidden > self.dim { self.hidden } else { self.dim };
        layout.scratch_words(k) + self.head_size() + self.context + self.buffer_bytes().div_ceil(4)
    }

    fn is_valid(&self) -> bool {
        let hs = self.head_size();
        self.dim > 0
            && self.hidden > 0
            && self.layers > 0
            && self.vocab > 0
            && self.context > 0
            && self.kv_heads > 0
            && hs > 0
            && hs % 2 == 0
            && hs * self.heads == self.dim
            && self.heads % self.kv_heads == 0
            && self.context <= MAX_CONTEXT
    }
}

/// The integer parameters of attention over the KV cache (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionParams<'a> {
    /// `round(2^32 · s_q·s_k / (√head_size · s_exp))`, below 2^32: a score difference in table steps.
    pub score_mul: u32,
    /// `exp[i] = round(2^14 · exp(−i · s_exp))`, non-increasing, `exp[0] = 2^14`.
    pub exp: &'a [u16; 256],
    /// `round(2^30 · s_v / s_o)`: values to the attention output's scale.
    pub value_mul: u32,
}

/// One transformer block's integer parameters. Linear weights are packed for [`Decoder::layout`] by
/// [`crate::packed::pack_linear`] (rows = output channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLayer<'a> {
    /// RMSNorm before attention (`rms_zero_point` = the residual's zero point).
    pub attn_norm: LayerNormI8Params<'a>,
    /// `[dim + 2·kv_dim, dim]`: query rows, then key rows, then value rows; outputs symmetric.
    pub qkv: &'a [i32],
    /// Attention over the KV cache.
    pub attention: AttentionParams<'a>,
    /// Output projection `[dim, dim]`.
    pub wo: &'a [i32],
    /// Zero point of the output projection's result.
    pub wo_zero_point: i32,
    /// Residual add after attention: `h ← h + wo(o)`.
    pub attn_add: AddShift,
    /// RMSNorm before the MLP.
    pub ffn_norm: LayerNormI8Params<'a>,
    /// `[2·hidden, dim]`: gate rows, then up rows; outputs symmetric.
    pub w13: &'a [i32],
    /// SiLU of the gate, as a table.
    pub silu: &'a [i8; 256],
    /// `silu(gate) · up`.
    pub gate_mul: MulRequant,
    /// Down projection `[dim, hidden]`.
    pub w2: &'a [i32],
    /// Zero point of the down projection's result.
    pub w2_zero_point: i32,
    /// Residual add after the MLP: `h ← h + w2(m)`.
    pub ffn_add: AddShift,
}

/// An int8 decoder: its shape, weights and requantization parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder<'a> {
    /// Dimensions and context length.
    pub shape: DecoderShape,
    /// How the linear weights are packed.
    pub layout: PackedLayout,
    /// Token embedding `[vocab, dim]`, already at the residual stream's first scale.
    pub embedding: &'a [i8],
    /// Rotary table `[context, head_size/2, 2]`: `round(2^14·cos θ)`, `round(2^14·sin θ)`.
    pub rope: &'a [i16],
    /// The transformer blocks.
    pub layers: &'a [DecoderLayer<'a>],
    /// RMSNorm before the classifier.
    pub final_norm: LayerNormI8Params<'a>,
    /// Classifier `[vocab, dim]`.
    pub classifier: &'a [i32],
    /// Zero point of the logits.
    pub logits_zero_point: i32,
}

impl Decoder<'_> {
    /// Checks every length against the shape (no kernel can then refuse its arguments mid-step).
    fn check(&self) -> Result<(), KernelError> {
        let s = &self.shape;
        let words = |n: usize, k: usize| self.layout.words(n, k);
        let norm_ok = |p: &LayerNormI8Params<'_>| p.gamma.len() == s.dim && p.beta.len() == s.dim;
        let layer_ok = |l: &DecoderLayer<'_>| {
            norm_ok(&l.attn_norm)
                && norm_ok(&l.ffn_norm)
                && l.qkv.len() == words(s.qkv_rows(), s.dim)
                && l.wo.len() == words(s.dim, s.dim)
                && l.w13.len() == words(2 * s.hidden, s.dim)
                && l.w2.len() == words(s.dim, s.hidden)
        };
        let ok = s.is_valid()
            && self.embedding.len() == s.vocab * s.dim
            && self.rope.len() == s.rope_len()
            && self.layers.len() == s.layers
            && self.layers.iter().all(layer_ok)
            && norm_ok(&self.final_norm)
            && self.classifier.len() == words(s.vocab, s.dim);
        if ok {
            Ok(())
        } else {
            Err(KernelError::ShapeMismatch)
        }
    }
}

/// Splits `n` items off the front of `rest`.
fn take<'a, T>(rest: &mut &'a mut [T], n: usize) -> Result<&'a mut [T], KernelError> {
    let (head, tail) = core::mem::take(rest).split_at_mut_checked(n).ok_or(KernelError::ShapeMismatch)?;
    *rest = tail;
    Ok(head)
}

/// Rotates each pair `(x[2i], x[2i+1])` of every head by the angles in `table` (`[head_size/2, 2]` Q14).
fn rope(x: &mut [i8], head_size: usize, table: &[i16]) {
    for head in x.chunks_exact_mut(head_size) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(table.chunks_exact(2)) {
            if let ([a, b], [c, s]) = (pair, cs) {
                let (x0, x1, c, s) = (i32::from(*a), i32::from(*b), i32::from(*c), i32::from(*s));
                *a = i8::from_i32_sat((x0 * c - x1 * s + (1 << 13)) >> 14);
                *b = i8::from_i32_sat((x0 * s + x1 * c + (1 << 13)) >> 14);
            }
        }
    }
}

/// Runs token `token` at position `pos` through the decoder: writes its keys and values into `cache` at
/// `pos`, attends over positions `0..=pos`, and writes the int8 logits of the next token.
///
/// `cache` is [`DecoderShape::cache_bytes`] long (positions below `pos` must hold earlier steps), `scratch`
/// at least [`DecoderShape::scratch_words`] words, `logits` `vocab` bytes. Errors, before anything is
/// written: lengths or a shape that disagree (`ShapeMismatch`), `token ≥ vocab` or `pos ≥ context`
/// (`IndexOutOfRange`), parameters a kernel refuses (`InvalidParam`, checked on the first layer's use).
pub fn decoder_step(
    d: &Decoder<'_>,
    cache: &mut [i8],
    scratch: &mut [i32],
    token: usize,
    pos: usize,
    logits: &mut [i8],
) -> Result<(), KernelError> {
    d.check()?;
    let s = d.shape;
    if cache.len() != s.cache_bytes() || scratch.len() < s.scratch_words(d.layout) || logits.len() != s.vocab {
        return Err(KernelError::ShapeMismatch);
    }
    if token >= s.vocab || pos >= s.context {
        return Err(KernelError::IndexOutOfRange);
    }
    let (dim, hs, kv) = (s.dim, s.head_size(), s.kv_dim());
    let layout = d.layout;

    let mut words = scratch;
    let panel = take(&mut words, d.layout.scratch_words(s.hidden.max(dim)))?;
    let acc = take(&mut words, hs)?;
    let scores = take(&mut words, s.context)?;
    let mut bytes: &mut [i8] = bytemuck::cast_slice_mut(words);
    let h = take(&mut bytes, dim)?;
    let xn = take(&mut bytes, dim)?;
    let qkv = take(&mut bytes, s.qkv_rows())?;
    let att = take(&mut bytes, dim)?;
    let proj = take(&mut bytes, dim)?;
    let gu = take(&mut bytes, 2 * s.hidden)?;

    h.copy_from_slice(d.embedding.get(token * dim..(token + 1) * dim).ok_or(KernelError::ShapeMismatch)?);
    let table = d.rope.get(pos * hs..(pos + 1) * hs).ok_or(KernelError::ShapeMismatch)?;
    let layer_cache = s.context * kv;
    let n = pos + 1;
    for (l, layer_kv) in d.layers.iter().zip(cache.chunks_exact_mut(2 * layer_cache)) {
        layernorm_i8(h, dim, &l.attn_norm, xn)?;
        project(layout, xn, l.qkv, (s.qkv_rows(), dim), 0, panel, qkv)?;
        let (q, kvnew) = qkv.split_at_mut(dim);
        let (k_new, v_new) = kvnew.split_at_mut(kv);
        rope(q, hs, table);
        rope(k_new, hs, table);
        let (keys, values) = layer_kv.split_at_mut(layer_cache);
        keys.get_mut(pos * kv..n * kv).ok_or(KernelError::ShapeMismatch)?.copy_from_slice(k_new);
        values.get_mut(pos * kv..n * kv).ok_or(KernelError::ShapeMismatch)?.copy_from_slice(v_new);
        let keys = keys.get(..n * kv).ok_or(KernelError::ShapeMismatch)?;
        let values = values.get(..n * kv).ok_or(KernelError::ShapeMismatch)?;
        let cached = Cached { keys, values, kv_dim: kv, group: s.heads / s.kv_heads, n };
        // A compile-time head size for the common ones, so that the per-head loops unroll.
        match hs {
            4 => attend::<4>(q, &cached, &l.attention, hs, scores, acc, att),
            8 => attend::<8>(q, &cached, &l.attention, hs, scores, acc, att),
            16 => attend::<16>(q, &cached, &l.attention, hs, scores, acc, att),
            32 => attend::<32>(q, &cached, &l.attention, hs, scores, acc, att),
            64 => attend::<64>(q, &cached, &l.attention, hs, scores, acc, att),
            _ => attend::<0>(q, &cached, &l.attention, hs, scores, acc, att),
        }
        project(layout, att, l.wo, (dim, dim), l.wo_zero_point, panel, proj)?;
        add_shift_in_place(h, proj, 1, &l.attn_add)?;

        layernorm_i8(h, dim, &l.ffn_norm, xn)?;
        project(layout, xn, l.w13, (2 * s.hidden, dim), 0, panel, gu)?;
        let (gate, up) = gu.split_at_mut(s.hidden);
        lut_i8_in_place(gate, l.silu)?;
        mul_requant_in_place(gate, up, 1, &l.gate_mul)?;
        project(layout, gate, l.w2, (dim, s.hidden), l.w2_zero_point, panel, proj)?;
        add_shift_in_place(h, proj, 1, &l.ffn_add)?;
    }
    layernorm_i8(h, dim, &d.final_norm, xn)?;
    project(layout, xn, d.classifier, (s.vocab, dim), d.logits_zero_point, panel, logits)
}

/// A linear layer of one row `x [k] -> out [n]` over `words` packed for `layout`.
#[inline(always)]
fn project(
    layout: PackedLayout,
    x: &[i8],
    words: &[i32],
    (n, k): (usize, usize),
    zero_point: i32,
    panel: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    linear_packed(x, &PackedLinear::new(layout, n, k, words)?, 1, zero_point, panel, out)
}

/// One layer's KV cache up to the current position.
struct Cached<'a> {
    keys: &'a [i8],
    values: &'a [i8],
    kv_dim: usize,
    /// Query heads per key/value head.
    group: usize,
    /// Positions `0..n` attended.
    n: usize,
}

/// Attention of every query head over the cache (the arithmetic of the module doc), into `out` (`heads·hs`),
/// head by head: the head's query stays in registers while its scores run down the cached keys. `scores` holds
/// at least `n` words, `acc` `hs` words. `HS` is the head size when known at compile time (0: `hs`).
fn attend<const HS: usize>(
    q: &[i8],
    c: &Cached<'_>,
    p: &AttentionParams<'_>,
    hs: usize,
    scores: &mut [i32],
    acc: &mut [i32],
    out: &mut [i8],
) {
    let hs = if HS == 0 { hs } else { HS };
    let row = scores.get_mut(..c.n).unwrap_or_default();
    for (head, (qh, o)) in q.chunks_exact(hs).zip(out.chunks_exact_mut(hs)).enumerate() {
        let off = (head / c.group) * hs;
        let mut max = i32::MIN;
        for (sc, key) in row.iter_mut().zip(c.keys.chunks_exact(c.kv_dim)) {
            let kh = key.get(off..off + hs).unwrap_or_default();
            let dot = qh.iter().zip(kh).fold(0i32, |a, (&x, &y)| a.wrapping_add(i32::from(x) * i32::from(y)));
            max = max.max(dot);
            *sc = dot;
        }
        let mut sum = 0u32;
        for s in row.iter_mut() {
            let steps = (u64::from(max.wrapping_sub(*s) as u32) * u64::from(p.score_mul)) >> 32;
            let e = p.exp.get(steps.min(255) as usize).copied().unwrap_or(0);
            sum = sum.wrapping_add(u32::from(e));
            *s = i32::from(e);
        }
        acc.fill(0);
        for (&e, value) in row.iter().zip(c.values.chunks_exact(c.kv_dim)) {
            let vh = value.get(off..off + hs).unwrap_or_default();
            for (a, &v) in acc.iter_mut().zip(vh) {
                *a = a.wrapping_add(e.wrapping_mul(i32::from(v)));
            }
        }
        // sum ≥ exp[0] > 0: the largest score has difference 0.
        let k = shifted_quotient(p.value_mul, sum.max(1));
        for (o, &a) in o.iter_mut().zip(acc.iter()) {
            *o = i8::from_i32_sat(((i64::from(a) * k as i64 + (1 << 45)) >> 46) as i32);
        }
    }
}

/// `floor(v·2^16 / d)` for `d >= 1`. Below 2^25 (every softmax sum of up to [`MAX_CONTEXT`] positions) by long
/// division in 32-bit steps of 7, 7 and 2 bits (each remainder is below `d`, so shifting it stays in `u32`):
/// four hardware divisions instead of a 64-bit division call (~160 instructions on a Cortex-M4).
fn shifted_quotient(v: u32, d: u32) -> u64 {
    if d >= 1 << 25 {
        return (u64::from(v) << 16) / u64::from(d);
    }
    let (mut q, mut r) = (u64::from(v / d), v % d);
    for bits in [7, 7, 2] {
        let n = r << bits;
        (q, r) = ((q << bits) | u64::from(n / d), n % d);
    }
    q
}

/// The first index of the largest logit (greedy decoding). `None` for no logits.
pub fn argmax(logits: &[i8]) -> Option<usize> {
    let mut best: Option<(usize, i8)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The next state and output of the xorshift32 generator (Marsaglia's 13/17/5), from a non-zero state.
pub fn xorshift32(state: &mut u32) -> u32 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    x
}

/// Top-k sampling with a temperature, in integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopK<'a> {
    /// Candidates: the `k` largest logits (ties broken by the lower index); 0 means all.
    pub k: usize,
    /// `weight[d] = round(2^15 · exp(−d · s_logit / temperature))` for `d = max − logit` in `0..=255`.
    pub weight: &'a [u16; 256],
}

/// Samples a token from int8 logits: candidates are the top `k`; candidate `j` has weight
/// `p.weight[max − logit_j]`; with `W` their sum and `r = xorshift32(rng) mod W`, the token is the first
/// candidate (in index order) whose running weight sum exceeds `r`. `None` when no candidate has weight.
pub fn sample_top_k(logits: &[i8], p: &TopK<'_>, rng: &mut u32) -> Option<usize> {
    let max = logits.iter().copied().max()?;
    let weight = |v: i8| u32::from(p.weight.get((i32::from(max) - i32::from(v)) as usize).copied().unwrap_or(0));
    let (cut, ties) = kth_largest(logits, p.k, max);
    let total = candidates(logits, cut, ties).fold(0u32, |t, (_, v)| t.saturating_add(weight(v)));
    if total == 0 {
        return None;
    }
    let r = xorshift32(rng) % total;
    let mut sum = 0u32;
    candidates(logits, cut, ties).find_map(|(i, v)| {
        sum = sum.saturating_add(weight(v));
        (sum > r).then_some(i)
    })
}

/// The `k`-th largest of `logits` (all of them when `k` is 0 or too large) and how many of the values equal to
/// it are among the top `k`, by a histogram of the 256 values.
fn kth_largest(logits: &[i8], k: usize, max: i8) -> (i8, usize) {
    if k == 0 || k >= logits.len() {
        return (i8::MIN, logits.len());
    }
    let mut counts = [0usize; 256];
    for &v in logits {
        if let Some(c) = counts.get_mut(usize::from(v as u8 ^ 0x80)) {
            *c += 1;
        }
    }
    let mut above = 0usize;
    for v in (i8::MIN..=max).rev() {
        let c = counts.get(usize::from(v as u8 ^ 0x80)).copied().unwrap_or(0);
        if above + c >= k {
            return (v, k - above);
        }
        above += c;
    }
    (i8::MIN, logits.len())
}

/// The candidates of [`sample_top_k`] in index order: values above `cut`, and the first `ties` equal to it.
fn candidates(logits: &[i8], cut: i8, ties: usize) -> impl Iterator<Item = (usize, i8)> + '_ {
    let mut left = ties;
    logits.iter().copied().enumerate().filter(move |&(_, v)| {
        if v > cut {
            true
        } else if v == cut && left > 0 {
            left -= 1;
            true
        } else {
            false
        }
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;

    /// The attention of the module doc, written out in `i64` per head and position.
    fn naive(
        q: &[i8],
        c: &Cached<'_>,
        score_mul: u32,
        exp: &[u16; 256],
        value_mul: u32,
        hs: usize,
    ) -> std::vec::Vec<i8> {
        let mut out = std::vec::Vec::new();
        for (head, qh) in q.chunks_exact(hs).enumerate() {
            let off = (head / c.group) * hs;
            let s: std::vec::Vec<i64> = (0..c.n)
                .map(|t| (0..hs).map(|d| i64::from(qh[d]) * i64::from(c.keys[t * c.kv_dim + off + d])).sum())
                .collect();
            let max = *s.iter().max().unwrap();
            let e: std::vec::Vec<i64> = s
                .iter()
                .map(|&x| i64::from(exp[(((max - x) * i64::from(score_mul)) >> 32).min(255) as usize]))
                .collect();
            let sum: i64 = e.iter().sum();
            let k = (i64::from(value_mul) << 16) / sum;
            for d in 0..hs {
                let a: i64 = (0..c.n).map(|t| e[t] * i64::from(c.values[t * c.kv_dim + off + d])).sum();
                out.push(((a * k + (1 << 45)) >> 46).clamp(-128, 127) as i8);
            }
        }
        out
    }

    #[test]
    fn shifted_quotient_is_the_floor() {
        let mut rng = Lcg(9);
        let edges = [1, 2, 3, 16_383, 16_384, 65_535, 65_536, (1 << 25) - 1, 1 << 25, u32::MAX];
        let random: std::vec::Vec<u32> = (0..2000).map(|_| rng.next_u64() as u32 >> (rng.next_u64() % 32)).collect();
        for d in edges.into_iter().chain(random) {
            for v in [0, 1, d.wrapping_sub(1), d, u32::MAX, rng.next_u64() as u32] {
                let d = d.max(1);
                assert_eq!(shifted_quotient(v, d), (u64::from(v) << 16) / u64::from(d), "{v} / {d}");
            }
        }
    }

    #[test]
    fn attention_equals_its_formula() {
        let mut rng = Lcg(3);
        let exp: [u16; 256] = core::array::from_fn(|i| (16384.0 * (-(i as f64) * 0.07).exp()).round() as u16);
        for (heads, kv_heads, hs, n) in [(16, 16, 4, 1), (16, 16, 4, 37), (4, 2, 8, 20), (2, 1, 6, 9), (2, 2, 64, 300)]
        {
            let (kv, context) = (kv_heads * hs, n + 3);
            let q = rng.vec_i8(heads * hs);
            let keys = rng.vec_i8(n * kv);
            let values = rng.vec_i8(n * kv);
            let c = Cached { keys: &keys, values: &values, kv_dim: kv, group: heads / kv_heads, n };
            for (score_mul, value_mul) in [(9_000_000u32, 1u32 << 30), (u32::MAX, 3 << 30), (12_345, 200_000_000)] {
                let p = AttentionParams { score_mul, exp: &exp, value_mul };
                let mut scores = std::vec![0i32; context];
                let mut acc = std::vec![0i32; hs];
                let mut out = std::vec![0i8; heads * hs];
                match hs {
                    4 => attend::<4>(&q, &c, &p, hs, &mut scores, &mut acc, &mut out),
                    _ => attend::<0>(&q, &c, &p, hs, &mut scores, &mut acc, &mut out),
                }
                assert_eq!(
                    out,
                    naive(&q, &c, score_mul, &exp, value_mul, hs),
                    "heads {heads}/{kv_heads} hs {hs} n {n}"
                );
            }
        }
    }
}
