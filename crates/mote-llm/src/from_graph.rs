//! A full-sequence causal decoder as `torch.onnx.export` writes it (token ids `[1, T]` → logits `[1, T, vocab]`,
//! the causal mask built inside the graph), turned into the llama2.c form ([`Checkpoint`]) that mote decodes
//! one token at a time with a KV cache.
//!
//! The weights are read from the graph's structure (the embedding `Gather`, the constant `MatMul` weights in
//! execution order — per block wq, wk, wv, wo, then the three MLP matrices, the gate being the one whose
//! output reaches a `Sigmoid` — the norm weights, the head counts from the `Reshape`s after wq and wk); then
//! the result is *proved*: the graph and the llama2.c forward run the same tokens, and the logits of every
//! position must agree. A graph of another architecture fails that check with the size of the difference.

// Value and node ids index the graph's own vectors (valid by the graph's construction), and block indices stay
// below the weight count checked first.
#![allow(clippy::indexing_slicing)]

use ndarray::{Array1, Array2, Array3, Axis};

use mote_core::{Graph, Tensor, TensorId};

use crate::float::{forward, FloatCache};
use crate::{Checkpoint, Config, Error, Format, Result, Weights};

/// Largest difference allowed between the graph's and the extracted decoder's logits, relative to the largest
/// logit magnitude (f32 sums in another order).
const TOLERANCE: f32 = 1e-3;

fn invalid(model: &str, what: String) -> Error {
    Error::Invalid(format!("{model}: {what}"))
}

/// The constant behind `id`, as f32.
fn konst(g: &Graph, id: TensorId) -> Option<ndarray::ArrayD<f32>> {
    g.values.get(id)?.konst.as_ref().map(|t| t.to_f32())
}

/// The decoder in `g` (a graph of `torch.onnx.export`'s full-sequence form), checked against `g` itself.
/// `model` names the file in errors.
pub fn checkpoint_from_graph(g: &Graph, model: &str) -> Result<Checkpoint> {
    let bad = |what: String| invalid(model, what);
    let [tokens] = g.inputs[..] else {
        return Err(bad(format!("a decoder has one input (token ids), this graph has {}", g.inputs.len())));
    };
    let [logits_id] = g.outputs[..] else {
        return Err(bad(format!("a decoder has one output (logits), this graph has {}", g.outputs.len())));
    };
    let seq = match g.values[tokens].ty.shape[..] {
        [1, t] => t,
        ref s => return Err(bad(format!("the token input has shape {s:?}, not [1, T]"))),
    };
    let consumers = g.consumers();
    let op = |n: usize| g.nodes[n].op.name();
    // The embedding: a Gather of a constant [vocab, dim] table by the token ids.
    let embedding = g
        .nodes
        .iter()
        .find(|n| n.op.name() == "Gather" && n.inputs.get(1) == Some(&tokens))
        .and_then(|n| konst(g, n.inputs[0]))
        .ok_or_else(|| bad("no Gather of a constant embedding table by the token ids".into()))?;
    let (vocab, dim) = match embedding.shape() {
        [v, d] => (*v, *d),
        s => return Err(bad(format!("the embedding table has shape {s:?}"))),
    };
    // Constant matrices multiplied from the right, and constant [dim] vectors multiplied in, in execution order.
    let mut matmuls: Vec<(usize, Array2<f32>)> = Vec::new();
    let mut norms: Vec<Array1<f32>> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let w = n.inputs.get(1).and_then(|&b| konst(g, b));
        match (n.op.name(), w) {
            ("MatMul", Some(w)) if w.ndim() == 2 => {
                matmuls.push((i, w.into_dimensionality().map_err(|e| bad(e.to_string()))?.reversed_axes()))
            }
            ("Mul", Some(w)) if w.shape() == [dim] => {
                norms.push(w.into_dimensionality().map_err(|e| bad(e.to_string()))?)
            }
            _ => {}
        }
    }
    if matmuls.len() < 8 || !(matmuls.len() - 1).is_multiple_of(7) || norms.len() != 2 * ((matmuls.len() - 1) / 7) + 1 {
        return Err(bad(format!(
            "{} constant MatMul weights and {} norm weights do not make Llama blocks (7 matrices and 2 norms per \
             block, plus the classifier and the final norm)",
            matmuls.len(),
            norms.len()
        )));
    }
    let layers = (matmuls.len() - 1) / 7;
    // Whether node `i`'s output reaches a Sigmoid through at most two element-wise steps (SiLU = x·sigmoid(x)).
    let reaches_sigmoid = |i: usize| {
        let outs = |i: usize| g.nodes[i].outputs.iter().flat_map(|&o| consumers[o].iter().copied()).collect::<Vec<_>>();
        outs(i).into_iter().any(|c| op(c) == "Sigmoid" || outs(c).into_iter().any(|d| op(d) == "Sigmoid"))
    };
    // Heads from the Reshape right after a projection: [.., heads, head_size].
    let heads_after = |i: usize| -> Option<usize> {
        let r = g.nodes[i].outputs.first().and_then(|&o| consumers[o].iter().find(|&&c| op(c) == "Reshape"))?;
        let shape = &g.values[g.nodes[*r].outputs[0]].ty.shape;
        (shape.len() >= 2).then(|| shape[shape.len() - 2])
    };
    let (heads, kv_heads) = match (heads_after(matmuls[0].0), heads_after(matmuls[1].0)) {
        (Some(h), Some(kv)) => (h, kv),
        _ => return Err(bad("no Reshape into heads after the first block's query/key projections".into())),
    };
    let hidden = matmuls[4].1.nrows();
    let stack = |k: usize| -> Result<Array3<f32>> {
        let views: Vec<_> = (0..layers).map(|l| matmuls[7 * l + k].1.view()).collect();
        ndarray::stack(Axis(0), &views).map_err(|e| bad(format!("block matrices of different shapes: {e}")))
    };
    // The gate (w1) is the MLP matrix whose output goes through the SiLU.
    let mut ffn = Vec::with_capacity(layers);
    for l in 0..layers {
        let (a, b) = (7 * l + 4, 7 * l + 5);
        let (gate, up) = if reaches_sigmoid(matmuls[a].0) { (a, b) } else { (b, a) };
        ffn.push((gate, up));
    }
    let pick = |which: &dyn Fn(&(usize, usize)) -> usize| -> Result<Array3<f32>> {
        let views: Vec<_> = ffn.iter().map(|p| matmuls[which(p)].1.view()).collect();
        ndarray::stack(Axis(0), &views).map_err(|e| bad(format!("MLP matrices of different shapes: {e}")))
    };
    let norm_rows = |k: usize| -> Result<Array2<f32>> {
        let views: Vec<_> = (0..layers).map(|l| norms[2 * l + k].view()).collect();
        ndarray::stack(Axis(0), &views).map_err(|e| bad(e.to_string()))
    };
    let classifier = &matmuls[7 * layers].1;
    let embedding: Array2<f32> = embedding.into_dimensionality().map_err(|e| bad(e.to_string()))?;
    let shared = *classifier == embedding;
    let config = Config {
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv_heads,
        vocab_size: vocab,
        seq_len: seq,
        shared_classifier: shared,
    };
    config.validate(model)?;
    let weights = Weights {
        wcls: (!shared).then(|| classifier.clone()),
        token_embedding_table: embedding,
        rms_att_weight: norm_rows(0)?,
        wq: stack(0)?,
        wk: stack(1)?,
        wv: stack(2)?,
        wo: stack(3)?,
        rms_ffn_weight: norm_rows(1)?,
        w1: pick(&|p| p.0)?,
        w2: stack(6)?,
        w3: pick(&|p| p.1)?,
        rms_final_weight: norms[2 * layers].clone(),
    };
    let ck = Checkpoint { config, format: Format::Legacy, weights };
    check_against_graph(g, &ck, logits_id, model)?;
    Ok(ck)
}

/// Runs `g` and the llama2.c forward of `ck` on the same tokens and compares the logits of every position.
fn check_against_graph(g: &Graph, ck: &Checkpoint, logits_id: TensorId, model: &str) -> Result<()> {
    let c = &ck.config;
    let ids: Vec<i64> =
        (0..c.seq_len).map(|i| if i == 0 { 1 } else { (3 + 37 * i as i64) % c.vocab_size as i64 }).collect();
    let t = Tensor::from_vec(&[1, c.seq_len], ids.clone()).map_err(|e| invalid(model, e.to_string()))?;
    let input_ty = g.values[g.inputs[0]].ty.dtype;
    let t = t.cast(input_ty);
    let out = g.run(vec![t]).map_err(|e| invalid(model, format!("running the graph: {e}")))?;
    let want = out
        .get(g.outputs.iter().position(|&o| o == logits_id).unwrap_or(0))
        .map(Tensor::to_f32)
        .ok_or_else(|| invalid(model, "the graph gave no logits".into()))?;
    let mut cache = FloatCache::new(c, c.seq_len);
    let (mut worst, mut scale) = (0f32, 0f32);
    for (pos, &tok) in ids.iter().enumerate() {
        let got = forward(ck, &mut cache, tok as usize, pos, &mut |_, _| {})?;
        let row = want.index_axis(Axis(0), 0);
        let row = row.index_axis(Axis(0), pos);
        for (a, b) in got.iter().zip(row.iter()) {
            worst = worst.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    if worst > TOLERANCE * scale.max(1.0) {
        return Err(invalid(
            model,
            format!(
                "read as a Llama decoder (dim {}, {} blocks, {} heads, {} key/value heads, hidden {}), its logits differ \
                 from the graph's by up to {worst:.3e} (largest logit {scale:.3}): not an architecture mote decodes",
                c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim
            ),
        ));
    }
    Ok(())
}
