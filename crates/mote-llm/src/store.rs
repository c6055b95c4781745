//! The file of a quantized decoder (`mote quantize model.bin … -o model.int8.npz`): every integer array and
//! parameter of a [`QuantDecoder`] as named `.npz` arrays, readable by numpy.

use std::collections::HashMap;
use std::path::Path;

use mote_core::Tensor;
use mote_kernels::decoder::DecoderShape;
use mote_kernels::elementwise::{AddShift, MulRequant};

use crate::quant::{QuantDecoder, QuantLayer, QuantLinear, QuantNorm};
use crate::{Error, Result};

/// Format version, the first entry of `config`.
const VERSION: i64 = 1;

struct Writer(Vec<(String, Tensor)>);

impl Writer {
    fn put<T: mote_core::tensor::Element>(&mut self, name: String, shape: &[usize], data: Vec<T>) -> Result<()> {
        let t = Tensor::from_vec(shape, data).map_err(|e| Error::Invalid(format!("array `{name}`: {e}")))?;
        self.0.push((name, t));
        Ok(())
    }

    fn ints(&mut self, name: String, v: &[i64]) -> Result<()> {
        self.put(name, &[v.len()], v.to_vec())
    }

    fn norm(&mut self, p: &str, n: &QuantNorm) -> Result<()> {
        self.put(format!("{p}.gamma"), &[n.gamma.len()], n.gamma.clone())?;
        self.put(format!("{p}.beta"), &[n.beta.len()], n.beta.clone())?;
        self.ints(
            format!("{p}.params"),
            &[n.frac_bits.into(), n.eps as i64, n.out_zero_point.into(), n.in_zero_point.into()],
        )
    }

    fn linear(&mut self, p: &str, l: &QuantLinear) -> Result<()> {
        self.put(format!("{p}.w"), &[l.n, l.k], l.w.clone())?;
        self.put(format!("{p}.mul"), &[l.n], l.mul.clone())?;
        self.ints(format!("{p}.input_offset"), &[l.input_offset.into()])
    }

    fn add(&mut self, p: &str, a: &AddShift) -> Result<()> {
        let v = [a.a_mul, a.b_mul, a.offset, a.shift as i32, a.act_min, a.act_max].map(i64::from);
        self.ints(p.to_string(), &v)
    }
}

struct Reader<'a> {
    file: &'a str,
    arrays: HashMap<String, Tensor>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.arrays.get(name).ok_or_else(|| Error::Invalid(format!("{}: no array `{name}`", self.file)))
    }

    fn ints(&self, name: &str, len: usize) -> Result<Vec<i64>> {
        let v = self.get(name)?.to_i64_vec();
        if v.len() != len {
            return Err(Error::Invalid(format!("{}: `{name}` has {} values, not {len}", self.file, v.len())));
        }
        Ok(v)
    }

    fn narrow<T: TryFrom<i64>>(&self, name: &str, len: usize) -> Result<Vec<T>> {
        self.ints(name, len)?
            .into_iter()
            .map(|v| {
                T::try_from(v).map_err(|_| Error::Invalid(format!("{}: `{name}` holds {v}, out of range", self.file)))
            })
            .collect()
    }

    fn one<T: TryFrom<i64>>(&self, name: &str, k: usize, of: &[i64]) -> Result<T> {
        let v = of.get(k).copied().unwrap_or_default();
        T::try_from(v).map_err(|_| Error::Invalid(format!("{}: `{name}`[{k}] = {v} is out of range", self.file)))
    }

    fn norm(&self, p: &str, dim: usize) -> Result<QuantNorm> {
        let name = format!("{p}.params");
        let v = self.ints(&name, 4)?;
        Ok(QuantNorm {
            gamma: self.narrow(&format!("{p}.gamma"), dim)?,
            beta: self.narrow(&format!("{p}.beta"), dim)?,
            frac_bits: self.one(&name, 0, &v)?,
            eps: self.one(&name, 1, &v)?,
            out_zero_point: self.one(&name, 2, &v)?,
            in_zero_point: self.one(&name, 3, &v)?,
        })
    }

    fn linear(&self, p: &str, n: usize, k: usize) -> Result<QuantLinear> {
        let name = format!("{p}.input_offset");
        Ok(QuantLinear {
            w: self.narrow(&format!("{p}.w"), n * k)?,
            mul: self.narrow(&format!("{p}.mul"), n)?,
            n,
            k,
            input_offset: self.one(&name, 0, &self.ints(&name, 1)?)?,
        })
    }

    fn add(&self, name: &str) -> Result<AddShift> {
        let v = self.ints(name, 6)?;
        Ok(AddShift {
            a_mul: self.one(name, 0, &v)?,
            b_mul: self.one(name, 1, &v)?,
            offset: self.one(name, 2, &v)?,
            shift: self.one(name, 3, &v)?,
            act_min: self.one(name, 4, &v)?,
            act_max: self.one(name, 5, &v)?,
        })
    }
}

impl QuantDecoder {
    /// Writes the decoder to `path` (`.npz`; written to a temporary name first, so no partial file is left).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let s = self.shape;
        let mut w = Writer(Vec::new());
        let dims = [s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab, s.context].map(|d| d as i64);
        w.ints("config".into(), &[&[VERSION][..], &dims].concat())?;
        w.put("embedding".into(), &[s.vocab, s.dim], self.embedding.clone())?;
        w.put("rope".into(), &[s.context, s.head_size()], self.rope.clone())?;
        for (i, l) in self.layers.iter().enumerate() {
            let p = |f: &str| format!("layer{i}.{f}");
            w.norm(&p("attn_norm"), &l.attn_norm)?;
            w.linear(&p("qkv"), &l.qkv)?;
            w.ints(
                p("attention"),
                &[l.score_mul.into(), l.value_mul.into(), l.wo_zero_point.into(), l.w2_zero_point.into()],
            )?;
            w.put(p("exp"), &[256], l.exp.iter().map(|&e| i32::from(e)).collect::<Vec<i32>>())?;
            w.linear(&p("wo"), &l.wo)?;
            w.add(&p("attn_add"), &l.attn_add)?;
            w.norm(&p("ffn_norm"), &l.ffn_norm)?;
            w.linear(&p("w13"), &l.w13)?;
            w.put(p("silu"), &[256], l.silu.to_vec())?;
            let m = l.gate_mul;
            let gm = [
                m.input1_offset,
                m.input2_offset,
                m.output_multiplier,
                m.output_shift,
                m.output_offset,
                m.act_min,
                m.act_max,
            ];
            w.ints(p("gate_mul"), &gm.map(i64::from))?;
            w.linear(&p("w2"), &l.w2)?;
            w.add(&p("ffn_add"), &l.ffn_add)?;
        }
        w.norm("final_norm", &self.final_norm)?;
        w.linear("classifier", &self.classifier)?;
        w.ints("logits".into(), &[self.logits.0.to_bits() as i64, self.logits.1.into()])?;
        let path = path.as_ref();
        mote_core::npz::write(path, &w.0).map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
    }

    /// Reads a decoder written by [`QuantDecoder::write`]; errors name the file and the array at fault.
    pub fn read(path: impl AsRef<Path>) -> Result<QuantDecoder> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let arrays = mote_core::npz::read(path).map_err(|e| Error::Invalid(format!("{file}: {e}")))?;
        let r = Reader { file: &file, arrays: arrays.into_iter().collect() };
        let c = r.ints("config", 8)?;
        if c.first() != Some(&VERSION) {
            return Err(Error::Unsupported { file, what: format!("quantized decoder format {:?}", c.first()) });
        }
        let d: Vec<usize> = r.narrow("config", 8)?;
        let [_, dim, hidden, layers, heads, kv_heads, vocab, context] = d[..] else {
            return Err(Error::Invalid(format!("{file}: `config` has {} values, not 8", d.len())));
        };
        let shape = DecoderShape { dim, hidden, layers, heads, kv_heads, vocab, context };
        if heads == 0 || kv_heads == 0 || !dim.is_multiple_of(heads) || !heads.is_multiple_of(kv_heads) {
            return Err(Error::Invalid(format!("{file}: `config` {d:?} is not a decoder shape")));
        }
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = |f: &str| format!("layer{i}.{f}");
            let att = r.ints(&p("attention"), 4)?;
            let gm = r.ints(&p("gate_mul"), 7)?;
            let g = |k| r.one(&p("gate_mul"), k, &gm);
            let exp: Vec<u16> = r.narrow(&p("exp"), 256)?;
            let silu: Vec<i8> = r.narrow(&p("silu"), 256)?;
            layers.push(QuantLayer {
                attn_norm: r.norm(&p("attn_norm"), dim)?,
                qkv: r.linear(&p("qkv"), shape.qkv_rows(), dim)?,
                score_mul: r.one(&p("attention"), 0, &att)?,
                exp: Box::new(exp.try_into().map_err(|_| Error::Invalid(format!("{file}: `{}`", p("exp"))))?),
                value_mul: r.one(&p("attention"), 1, &att)?,
                wo: r.linear(&p("wo"), dim, dim)?,
                wo_zero_point: r.one(&p("attention"), 2, &att)?,
                attn_add: r.add(&p("attn_add"))?,
                ffn_norm: r.norm(&p("ffn_norm"), dim)?,
                w13: r.linear(&p("w13"), 2 * hidden, dim)?,
                silu: Box::new(silu.try_into().map_err(|_| Error::Invalid(format!("{file}: `{}`", p("silu"))))?),
                gate_mul: MulRequant {
                    input1_offset: g(0)?,
                    input2_offset: g(1)?,
                    output_multiplier: g(2)?,
                    output_shift: g(3)?,
                    output_offset: g(4)?,
                    act_min: g(5)?,
                    act_max: g(6)?,
                },
                w2: r.linear(&p("w2"), dim, hidden)?,
                w2_zero_point: r.one(&p("attention"), 3, &att)?,
                ffn_add: r.add(&p("ffn_add"))?,
            });
        }
        let logits = r.ints("logits", 2)?;
        Ok(QuantDecoder {
            embedding: r.narrow("embedding", shape.vocab * dim)?,
            rope: r.narrow("rope", shape.context * shape.head_size())?,
            layers,
            final_norm: r.norm("final_norm", dim)?,
            classifier: r.linear("classifier", shape.vocab, dim)?,
            logits: (f64::from_bits(logits.first().copied().unwrap_or_default() as u64), r.one("logits", 1, &logits)?),
            shape,
        })
    }
}
