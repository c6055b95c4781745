//! Code generation for int8 decoders ([`mote_llm::generate::PackedDecoder`]): a standalone `#![no_std]` crate
//! with the weights as statics, one `State` (KV cache, scratch, logits, position) the caller owns, and
//! `step`/`prefill`/`next_token` over [`mote_kernels::decoder`].

use std::fmt::Write;
use std::path::PathBuf;

use mote_llm::generate::{PackedDecoder, Sampling};
use mote_llm::quant::{QuantLinear, QuantNorm};

use crate::emit::array;
use mote_core::{Error, Result};

/// Sizes of a generated decoder crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderSizes {
    /// Bytes of weights and parameters (flash).
    pub weight_bytes: usize,
    /// Bytes of the KV cache (RAM).
    pub cache_bytes: usize,
    /// Bytes of the step's scratch (RAM).
    pub scratch_bytes: usize,
    /// Bytes of the logits (RAM).
    pub logits_bytes: usize,
}

impl DecoderSizes {
    /// RAM of one `State`: cache, scratch, logits and the position.
    pub fn state_bytes(&self) -> usize {
        self.cache_bytes + self.scratch_bytes + self.logits_bytes + 8
    }
}

/// A generated decoder crate.
#[derive(Clone, Debug)]
pub struct CompiledDecoder {
    /// Files relative to the crate root (`Cargo.toml`, `src/lib.rs`, `src/weights.rs`).
    pub files: Vec<(PathBuf, String)>,
    /// Memory sizes.
    pub sizes: DecoderSizes,
}

struct Statics {
    text: String,
    bytes: usize,
}

impl Statics {
    fn array<T: std::fmt::Display>(&mut self, name: &str, ty: &str, v: &[T], doc: &str) -> String {
        let _ = writeln!(self.text, "/// {doc}\npub static {name}: [{ty}; {}] = {};\n", v.len(), array(v));
        self.bytes += v.len() * type_bytes(ty);
        name.to_string()
    }

    fn norm(&mut self, prefix: &str, n: &QuantNorm, what: &str) -> String {
        let g = self.array(&format!("{prefix}_GAMMA"), "i32", &n.gamma, &format!("{what}: γ / s_out in fixed point."));
        let b = self.array(&format!("{prefix}_BETA"), "i32", &n.beta, &format!("{what}: zero (no shift)."));
        format!(
            "LayerNormI8Params {{ gamma: &weights::{g}, beta: &weights::{b}, frac_bits: {}, eps: {}, out_zero_point: {}, rms_zero_point: Some({}) }}",
            n.frac_bits, n.eps, n.out_zero_point, n.in_zero_point
        )
    }

    fn linear(&mut self, name: &str, l: &QuantLinear, words: &[i32], what: &str) -> String {
        let doc = format!("{what}: [{}, {}] packed.", l.n, l.k);
        format!("&weights::{}", self.array(name, "i32", words, &doc))
    }
}

fn type_bytes(ty: &str) -> usize {
    match ty {
        "i8" | "u8" => 1,
        "i16" | "u16" => 2,
        _ => 4,
    }
}

/// Writes the crate `crate_name` for `dec` (kernels at `kernels_path`), with `sampling` compiled into
/// `next_token`.
pub fn compile_decoder(
    dec: &PackedDecoder<'_>,
    sampling: Sampling,
    crate_name: &str,
    kernels_path: &std::path::Path,
) -> Result<CompiledDecoder> {
    let q = dec.quantized();
    let s = q.shape;
    let mut st = Statics { text: String::new(), bytes: 0 };
    st.array("EMBEDDING", "i8", &q.embedding, "Token embedding [vocab, dim] at the residual's first scale.");
    st.array("ROPE", "i16", &q.rope, "Rotary table [context, head_size/2, (cos, sin)], Q14.");
    let mut layers = Vec::new();
    for (l, ql) in q.layers.iter().enumerate() {
        let [qkv, wo, w13, w2] =
            dec.layer_words(l).ok_or_else(|| Error::Invalid(format!("layer {l} has no packed weights")))?;
        let p = format!("L{l}");
        let attn_norm = st.norm(&format!("{p}_ATTN_NORM"), &ql.attn_norm, &format!("Layer {l} attention RMSNorm"));
        let qkv = st.linear(&format!("{p}_QKV"), &ql.qkv, qkv, &format!("Layer {l} query/key/value projection"));
        let exp =
            st.array(&format!("{p}_EXP"), "u16", &ql.exp[..], &format!("Layer {l} attention exponential table (Q14)."));
        let wo = st.linear(&format!("{p}_WO"), &ql.wo, wo, &format!("Layer {l} output projection"));
        let ffn_norm = st.norm(&format!("{p}_FFN_NORM"), &ql.ffn_norm, &format!("Layer {l} MLP RMSNorm"));
        let w13 = st.linear(&format!("{p}_W13"), &ql.w13, w13, &format!("Layer {l} gate/up projection"));
        let silu = st.array(&format!("{p}_SILU"), "i8", &ql.silu[..], &format!("Layer {l} SiLU table."));
        let w2 = st.linear(&format!("{p}_W2"), &ql.w2, w2, &format!("Layer {l} down projection"));
        let (a, f, m) = (ql.attn_add, ql.ffn_add, ql.gate_mul);
        let add = |a: mote_kernels::elementwise::AddShift| {
            format!(
                "AddShift {{ a_mul: {}, b_mul: {}, offset: {}, shift: {}, act_min: {}, act_max: {} }}",
                a.a_mul, a.b_mul, a.offset, a.shift, a.act_min, a.act_max
            )
        };
        layers.push(format!(
            "    DecoderLayer {{\n        attn_norm: {attn_norm},\n        qkv: {qkv},\n        attention: AttentionParams {{ score_mul: {}, exp: &weights::{exp}, value_mul: {} }},\n        \
             wo: {wo},\n        wo_zero_point: {},\n        attn_add: {},\n        ffn_norm: {ffn_norm},\n        w13: {w13},\n        \
             silu: &weights::{silu},\n        gate_mul: MulRequant {{ input1_offset: {}, input2_offset: {}, output_multiplier: {}, \
             output_shift: {}, output_offset: {}, act_min: {}, act_max: {} }},\n        w2: {w2},\n        w2_zero_point: {},\n        \
             ffn_add: {},\n    }},",
            ql.score_mul,
            ql.value_mul,
            ql.wo_zero_point,
            add(a),
            m.input1_offset,
            m.input2_offset,
            m.output_multiplier,
            m.output_shift,
            m.output_offset,
            m.act_min,
            m.act_max,
            ql.w2_zero_point,
            add(f),
        ));
    }
    let final_norm = st.norm("FINAL_NORM", &q.final_norm, "Final RMSNorm");
    let classifier = st.linear("CLASSIFIER", &q.classifier, dec.classifier_words(), "Classifier");
    let sampler = match (sampling, sampling.weights(q.logits.0).map_err(|e| Error::Invalid(e.to_string()))?) {
        (Sampling::TopK { k, temperature, seed }, Some(w)) => {
            st.array("SAMPLE_WEIGHTS", "u16", &w[..], &format!("Top-k weights at temperature {temperature}."));
            format!(
                "/// Top-{k} sampling at temperature {temperature} (seed {seed}) from the compiled weight table.\n\
                 pub const SAMPLER: Sampler = Sampler::TopK {{ k: {k}, weight: &weights::SAMPLE_WEIGHTS, seed: {} }};\n",
                seed.max(1)
            )
        }
        _ => "/// Greedy decoding: the largest logit.\npub const SAMPLER: Sampler = Sampler::Greedy;\n".to_string(),
    };
    let layout = format!("{:?}", dec.layout());
    let sizes = DecoderSizes {
        weight_bytes: st.bytes,
        cache_bytes: s.cache_bytes(),
        scratch_bytes: 4 * s.scratch_words(dec.layout()),
        logits_bytes: s.vocab,
    };
    let lib = format!(
        r#"//! Generated by mote: an int8 decoder (dim {dim}, {layers} layers, {heads} heads, {kv} key/value heads, hidden {hidden},
//! vocabulary {vocab}) for a KV cache of {context} positions, weights packed as `{layout}`.
//!
//! The caller owns a [`State`] (KV cache {cache} B, scratch {scratch} B, logits): `state.prefill(prompt)` then
//! `state.step(token)` per token, each returning the int8 logits of the next token (scale {logit_scale:e}, zero
//! point {logit_zp}); [`next_token`] picks it with the compiled [`SAMPLER`]. No heap, no `static mut`, no `unsafe`.
#![no_std]
#![forbid(unsafe_code)]

mod weights;

use mote_kernels::decoder::{{
    argmax, decoder_step, sample_top_k, AttentionParams, Decoder, DecoderLayer, DecoderShape, TopK,
}};
use mote_kernels::elementwise::{{AddShift, MulRequant}};
use mote_kernels::norm::LayerNormI8Params;
use mote_kernels::packed::PackedLayout;
pub use mote_kernels::KernelError;

/// The decoder's dimensions and compiled context.
pub const SHAPE: DecoderShape = DecoderShape {{ dim: {dim}, hidden: {hidden}, layers: {layers}, heads: {heads}, kv_heads: {kv}, vocab: {vocab}, context: {context} }};
/// Bytes of the KV cache.
pub const CACHE_BYTES: usize = SHAPE.cache_bytes();
/// Words of the step's scratch.
pub const SCRATCH_WORDS: usize = SHAPE.scratch_words(PackedLayout::{layout});
/// Vocabulary size (bytes of the logits).
pub const VOCAB: usize = {vocab};
/// Positions the KV cache holds.
pub const CONTEXT: usize = {context};
/// Scale of the int8 logits (`real = scale · (q − zero point)`).
pub const LOGIT_SCALE: f32 = {logit_scale:e};
/// Zero point of the int8 logits.
pub const LOGIT_ZERO_POINT: i32 = {logit_zp};

static LAYERS: [DecoderLayer<'static>; {layers}] = [
{layer_list}
];

/// The decoder: shape, packed weights, requantization parameters (flash).
pub static DECODER: Decoder<'static> = Decoder {{
    shape: SHAPE,
    layout: PackedLayout::{layout},
    embedding: &weights::EMBEDDING,
    rope: &weights::ROPE,
    layers: &LAYERS,
    final_norm: {final_norm},
    classifier: {classifier},
    logits_zero_point: {logit_zp},
}};

/// How [`next_token`] chooses.
#[derive(Clone, Copy, Debug)]
pub enum Sampler {{
    /// The largest logit (first on ties).
    Greedy,
    /// Top-`k` with the temperature folded into `weight`, from a xorshift32 generator seeded with `seed`.
    TopK {{
        /// Candidates (0: all).
        k: usize,
        /// `round(2^15 · exp(−d · LOGIT_SCALE / temperature))` for `d = max − logit`.
        weight: &'static [u16; 256],
        /// Non-zero seed.
        seed: u32,
    }},
}}

{sampler}
/// One generation's memory: KV cache, scratch, logits and the next position (put it in a static or on a large
/// enough stack; 4-byte aligned by its scratch).
pub struct State {{
    scratch: [i32; SCRATCH_WORDS],
    cache: [i8; CACHE_BYTES],
    logits: [i8; VOCAB],
    pos: usize,
    rng: u32,
}}

impl State {{
    /// An empty state at position 0.
    pub const fn new() -> Self {{
        let rng = match SAMPLER {{
            Sampler::TopK {{ seed, .. }} => seed,
            Sampler::Greedy => 1,
        }};
        State {{ scratch: [0; SCRATCH_WORDS], cache: [0; CACHE_BYTES], logits: [0; VOCAB], pos: 0, rng }}
    }}

    /// Starts a new sequence (the cache is overwritten as positions fill again).
    pub fn reset(&mut self) {{
        *self = Self::new();
    }}

    /// Positions filled so far.
    pub fn position(&self) -> usize {{
        self.pos
    }}

    /// Runs `token` at the next position; returns the logits of the token after it. Errors: a full context or
    /// a token outside the vocabulary (`IndexOutOfRange`).
    pub fn step(&mut self, token: u32) -> Result<&[i8], KernelError> {{
        decoder_step(&DECODER, &mut self.cache, &mut self.scratch, token as usize, self.pos, &mut self.logits)?;
        self.pos += 1;
        Ok(&self.logits)
    }}

    /// Runs every token of `tokens` (e.g. a prompt starting with BOS); returns the logits after the last one.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[i8], KernelError> {{
        for &t in tokens {{
            self.step(t)?;
        }}
        Ok(&self.logits)
    }}

    /// The next token from the current logits with [`SAMPLER`].
    pub fn next_token(&mut self) -> Option<u32> {{
        next_token(&self.logits, &mut self.rng)
    }}
}}

impl Default for State {{
    fn default() -> Self {{
        Self::new()
    }}
}}

/// The next token from `logits` with [`SAMPLER`] (`rng`: the generator state, advanced by top-k sampling).
pub fn next_token(logits: &[i8], rng: &mut u32) -> Option<u32> {{
    let t = match SAMPLER {{
        Sampler::Greedy => argmax(logits),
        Sampler::TopK {{ k, weight, .. }} => sample_top_k(logits, &TopK {{ k, weight }}, rng),
    }};
    t.map(|t| t as u32)
}}
"#,
        dim = s.dim,
        layers = s.layers,
        heads = s.heads,
        kv = s.kv_heads,
        hidden = s.hidden,
        vocab = s.vocab,
        context = s.context,
        cache = sizes.cache_bytes,
        scratch = sizes.scratch_bytes,
        logit_scale = q.logits.0,
        logit_zp = q.logits.1,
        layer_list = layers.join("\n"),
    );
    let weights =
        format!("//! Weights and parameters of the generated decoder (flash).\n#![allow(clippy::all)]\n\n{}", st.text);
    let cargo = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\npath = \"src/lib.rs\"\n\n# A standalone crate (its own workspace), buildable where it is written.\n[workspace]\n\n\
         [dependencies]\nmote-kernels = {{ path = \"{}\" }}\n",
        kernels_path.display()
    );
    Ok(CompiledDecoder {
        files: vec![("Cargo.toml".into(), cargo), ("src/lib.rs".into(), lib), ("src/weights.rs".into(), weights)],
        sizes,
    })
}
