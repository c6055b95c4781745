//! The host reference of generation: the int8 decoder's kernel step ([`decoder_step`]) run on the host with the
//! weights packed exactly as the MCU gets them, the prompt fed token by token, then greedy or top-k sampling.

use mote_kernels::decoder::{argmax, decoder_step, sample_top_k, AttentionParams, Decoder, DecoderLayer, TopK};
use mote_kernels::host::softmax_exp_table;
use mote_kernels::packed::PackedLayout;

use crate::quant::QuantDecoder;
use crate::{Error, Result, BOS, EOS};

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The largest logit (first on ties).
    Greedy,
    /// Top-k with a temperature, from a seeded xorshift32 generator.
    TopK {
        /// Candidates (0: all).
        k: usize,
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Generator seed (0 is replaced by 1, xorshift32 needs a non-zero state).
        seed: u32,
    },
}

impl Sampling {
    /// The weight table of [`TopK`] for int8 logits of scale `logit_scale`, or `None` for greedy.
    pub fn weights(&self, logit_scale: f64) -> Result<Option<Box<[u16; 256]>>> {
        match *self {
            Sampling::Greedy => Ok(None),
            Sampling::TopK { temperature, .. } if !(temperature > 0.0 && temperature.is_finite()) => {
                Err(Error::Invalid(format!("temperature {temperature} must be a positive number")))
            }
            // The softmax's exponential table at the tempered logit scale.
            Sampling::TopK { temperature, .. } => Ok(Some(Box::new(softmax_exp_table(logit_scale / temperature)))),
        }
    }
}

/// A quantized decoder with its weights packed for one layout, runnable on the host.
#[derive(Clone, Debug)]
pub struct PackedDecoder<'q> {
    q: &'q QuantDecoder,
    layout: PackedLayout,
    /// Per layer: qkv, wo, w13, w2.
    words: Vec<[Vec<i32>; 4]>,
    classifier: Vec<i32>,
}

impl<'q> PackedDecoder<'q> {
    /// Packs `q`'s weights for `layout`.
    pub fn new(q: &'q QuantDecoder, layout: PackedLayout) -> Result<Self> {
        let words = q
            .layers
            .iter()
            .map(|l| Ok([l.qkv.pack(layout)?, l.wo.pack(layout)?, l.w13.pack(layout)?, l.w2.pack(layout)?]))
            .collect::<Result<_>>()?;
        Ok(PackedDecoder { q, layout, words, classifier: q.classifier.pack(layout)? })
    }

    /// The quantized decoder.
    pub fn quantized(&self) -> &QuantDecoder {
        self.q
    }

    /// The packed words of layer `l`: `[qkv, wo, w13, w2]`.
    pub fn layer_words(&self, l: usize) -> Option<&[Vec<i32>; 4]> {
        self.words.get(l)
    }

    /// The packed classifier.
    pub fn classifier_words(&self) -> &[i32] {
        &self.classifier
    }

    /// The layout the weights are packed for.
    pub fn layout(&self) -> PackedLayout {
        self.layout
    }

    /// Bytes of the packed linear weights (with their biases and multipliers): what the layout changes in flash.
    pub fn packed_bytes(&self) -> usize {
        let layers: usize = self.words.iter().flatten().map(Vec::len).sum();
        4 * (layers + self.classifier.len())
    }

    fn layers(&self) -> Vec<DecoderLayer<'_>> {
        self.q
            .layers
            .iter()
            .zip(&self.words)
            .map(|(l, [qkv, wo, w13, w2])| DecoderLayer {
                attn_norm: l.attn_norm.params(),
                qkv,
                attention: AttentionParams { score_mul: l.score_mul, exp: &l.exp, value_mul: l.value_mul },
                wo,
                wo_zero_point: l.wo_zero_point,
                attn_add: l.attn_add,
                ffn_norm: l.ffn_norm.params(),
                w13,
                silu: &l.silu,
                gate_mul: l.gate_mul,
                w2,
                w2_zero_point: l.w2_zero_point,
                ffn_add: l.ffn_add,
            })
            .collect()
    }

    /// Runs `f` with the kernel's view of the decoder.
    pub fn with_decoder<R>(&self, f: impl FnOnce(&Decoder<'_>) -> R) -> R {
        let layers = self.layers();
        let d = Decoder {
            shape: self.q.shape,
            layout: self.layout,
            embedding: &self.q.embedding,
            rope: &self.q.rope,
            layers: &layers,
            final_norm: self.q.final_norm.params(),
            classifier: &self.classifier,
            logits_zero_point: self.q.logits.1,
        };
        f(&d)
    }
}

/// The state of one generation on the host: KV cache, scratch, position, last logits.
#[derive(Clone, Debug)]
pub struct Session<'d, 'q> {
    dec: &'d PackedDecoder<'q>,
    cache: Vec<i8>,
    scratch: Vec<i32>,
    logits: Vec<i8>,
    pos: usize,
}

impl<'d, 'q> Session<'d, 'q> {
    /// An empty session (position 0).
    pub fn new(dec: &'d PackedDecoder<'q>) -> Self {
        let s = dec.q.shape;
        Session {
            dec,
            cache: vec![0; s.cache_bytes()],
            scratch: vec![0; s.scratch_words(dec.layout)],
            logits: vec![0; s.vocab],
            pos: 0,
        }
    }

    /// Positions filled so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Runs `token` at the next position and returns the logits of the token after it.
    pub fn step(&mut self, token: u32) -> Result<&[i8]> {
        let s = self.dec.q.shape;
        if self.pos >= s.context {
            return Err(Error::Invalid(format!("the compiled context of {} positions is full", s.context)));
        }
        if token as usize >= s.vocab {
            return Err(Error::TokenOutOfRange { token, vocab_size: s.vocab });
        }
        let Session { dec, cache, scratch, logits, pos } = self;
        dec.with_decoder(|d| decoder_step(d, cache, scratch, token as usize, *pos, logits))
            .map_err(|e| Error::Invalid(format!("decoder step at position {pos}: {e}")))?;
        self.pos += 1;
        Ok(&self.logits)
    }
}

/// Feeds `prompt` (its first token usually [`BOS`]) and generates up to `steps` tokens, stopping after a
/// [`BOS`] or [`EOS`] (which is returned); `on_token` sees each generated token as it comes.
///
/// Errors: an empty prompt, a token outside the vocabulary, or more positions than the compiled context.
pub fn generate(
    dec: &PackedDecoder<'_>,
    prompt: &[u32],
    steps: usize,
    sampling: Sampling,
    on_token: &mut dyn FnMut(u32),
) -> Result<Vec<u32>> {
    let context = dec.q.shape.context;
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt is empty (give at least the BOS token)".into()));
    }
    if prompt.len() + steps > context + 1 {
        return Err(Error::Invalid(format!(
            "the prompt of {} tokens plus {steps} generated tokens needs {} positions, more than the compiled context of {context}",
            prompt.len(),
            prompt.len() + steps - 1
        )));
    }
    let weights = sampling.weights(dec.q.logits.0)?;
    let mut rng = match sampling {
        Sampling::TopK { seed, .. } => seed.max(1),
        Sampling::Greedy => 1,
    };
    let k = match sampling {
        Sampling::TopK { k, .. } => k,
        Sampling::Greedy => 0,
    };
    let mut session = Session::new(dec);
    let mut out = Vec::with_capacity(steps);
    let (last, head) = prompt.split_last().ok_or_else(|| Error::Invalid("empty prompt".into()))?;
    for &t in head {
        session.step(t)?;
    }
    let mut token = *last;
    for _ in 0..steps {
        let logits = session.step(token)?;
        let next = match &weights {
            None => argmax(logits),
            Some(w) => sample_top_k(logits, &TopK { k, weight: w }, &mut rng),
        }
        .ok_or_else(|| Error::Invalid("no token to sample".into()))? as u32;
        out.push(next);
        on_token(next);
        if next == BOS || next == EOS || out.len() == steps {
            break;
        }
        token = next;
    }
    Ok(out)
}
