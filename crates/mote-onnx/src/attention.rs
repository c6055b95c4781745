//! Multi-head self-attention in float ONNX models: recognition, and a rewrite into mote's
//! canonical form, optionally with Fused-Weight Self-Attention (FWSA).
//!
//! **Recognition** runs on the imported float graph, after constant folding (so the shape
//! arithmetic of torch exports is constant): a `Softmax` over the last axis whose input is
//! `MatMul(a, b)` (through scalar `Mul`/`Div` and one additive constant mask), and whose output
//! feeds `MatMul(p, v)`. The layout chains from the linear projections to `a`, `b`, `v` and from
//! `MatMul(p, v)` to the output projection are not pattern-matched (torch writes many variants:
//! packed `in_proj` + Reshape/Unsqueeze/Transpose/Squeeze/Gather, hand-written Reshape/Transpose,
//! Split, Slice ...): they are *probed*, i.e. evaluated on a tensor whose element i holds i, which
//! tells where every element comes from. A block is accepted when that map is a head split of
//! projections of one tensor X. Anything else is left unchanged and listed in
//! [`Rewritten::skipped`].
//!
//! **The canonical form** (written into the ModelProto in place of the block; the block's output
//! tensor keeps its name, new tensors are named `<out>/mhsa/...`), with X2 = X or X reshaped to
//! [S,E]:
//!
//! ```text
//! unfused: t = Add(MatMul(X2, w_t [E,H·P]), b_t)            for t in q, k, v (softmax scale in w_q, b_q)
//!          qh = Transpose(Reshape(q, [S,H,P]), [1,0,2])    kt = Transpose(Reshape(k, [S,H,P]), [1,2,0])
//!          vh = Transpose(Reshape(v, [S,H,Pv]), [1,0,2])
//! FWSA:    qh = Transpose(Reshape(Add(MatMul(X2, w_qk [E,H·E]), b_qk), [S,H,E]), [1,0,2])
//!          kt = Transpose(X2, [1,0])                       vh = X2
//! both:    p  = Softmax(Add(MatMul(qh, kt), mask [S,S])?, axis=-1)
//!          y  = Add(MatMul(Reshape(Transpose(MatMul(p, vh), [1,0,2]), [S,H·Pv]), w_o), b_o)  (Reshape to
//!          the block output's shape when it is not [S,E])
//! ```
//!
//! FWSA multiplies the per-head weights offline: `w_qk,h = w_q,h·w_k,hᵀ` and `b_qk,h = w_k,h·b_q,h`
//! (the key bias and `b_q·b_k` add a constant to each softmax row, which softmax ignores), and
//! `w_o` becomes `w_vo,h = w_v,h·w_o,h` with bias `b_o + Σ_h b_v,h·w_o,h` (softmax rows sum to 1).
//! It saves MACs when the head dim P is large against the embedding E (see [`path_macs`]).
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto,
    TensorProto,
};
use crate::ImportOptions;
use mote_core::ops::elementwise::{Binary, BinaryKind};
use mote_core::ops::matmul::{Gemm, MatMul};
use mote_core::ops::nn::Softmax;
use mote_core::ops::shape::DATA_MOVEMENT;
use mote_core::{DType, Error, Graph, Node, NodeId, Result, Tensor, TensorId};
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;

/// Whether the rewrite applies Fused-Weight Self-Attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fwsa {
    /// Always fuse the weights.
    On,
    /// Never fuse (the blocks are still rewritten to the canonical unfused form).
    Off,
    /// Fuse when that takes fewer MACs.
    #[default]
    Auto,
}

/// One recognised self-attention block, as rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionBlock {
    /// Name of the block's output tensor (the output projection's result).
    pub output: String,
    /// Sequence length S.
    pub seq: usize,
    /// Embedding dim E of the input X.
    pub embed: usize,
    /// Number of heads H.
    pub heads: usize,
    /// Query/key dim per head P.
    pub head_dim: usize,
    /// Value dim per head (usually P).
    pub value_dim: usize,
    /// The scores had an additive constant mask (e.g. causal).
    pub masked: bool,
    /// FWSA was applied.
    pub fused: bool,
    /// MACs of the block unfused (projections, scores, weighted sum), as in the original model.
    pub macs_unfused: u64,
    /// MACs of the block with FWSA.
    pub macs_fused: u64,
}

impl AttentionBlock {
    /// MACs of the block in the original model.
    pub fn macs_before(&self) -> u64 {
        self.macs_unfused
    }

    /// MACs of the block as rewritten.
    pub fn macs_after(&self) -> u64 {
        if self.fused {
            self.macs_fused
        } else {
            self.macs_unfused
        }
    }
}

/// A Softmax that looks like attention (its input is a product of two activations) but was left
/// unchanged, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Name of the Softmax node.
    pub softmax: String,
    /// Why the block was not rewritten.
    pub reason: String,
}

/// The result of [`rewrite_attention`].
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The rewritten model, serialized (the input bytes unchanged when no block was found).
    pub model: Vec<u8>,
    /// The rewritten blocks, in graph order.
    pub blocks: Vec<AttentionBlock>,
    /// Attention-like Softmaxes left unchanged.
    pub skipped: Vec<Skipped>,
}

/// MACs of one path of a block (Q-K: the Q and K projections and the scores; V-O: the V and
/// output projections and the weighted sum, the same totals): `(unfused, FWSA)` =
/// `(2·S·E·H·P + H·S²·P, H·S·E² + H·S²·E)`.
pub fn path_macs(seq: usize, embed: usize, heads: usize, head_dim: usize) -> (u64, u64) {
    let (s, e, h, p) = (seq as u64, embed as u64, heads as u64, head_dim as u64);
    (2 * s * e * h * p + h * s * s * p, h * s * e * e + h * s * s * e)
}

/// Recognises every multi-head self-attention block of a float ONNX model and rewrites it into
/// the canonical form (module docs), with FWSA as `fwsa` decides.
pub fn rewrite_attention(model: &[u8], opts: &ImportOptions, fwsa: Fwsa) -> Result<Rewritten> {
    let g = crate::import(model, opts)?;
    let (found, mut skipped) = recognise(&g);
    if found.is_empty() {
        return Ok(Rewritten { model: model.to_vec(), blocks: Vec::new(), skipped });
    }
    let mut m = ModelProto::decode(model).map_err(|e| Error::Invalid(format!("not a valid ONNX model: {e}")))?;
    let Some(graph) = m.graph.as_mut() else { mote_core::bail!("the model contains no graph") };
    let was_live = live_nodes(graph);
    let mut nodes: Vec<(NodeProto, bool)> = std::mem::take(&mut graph.node).into_iter().zip(was_live).collect();
    let used_before = used_names(nodes.iter().filter(|n| n.1).map(|n| &n.0), graph);
    let mut names: HashSet<String> = graph.input.iter().map(|i| i.name().to_string()).collect();
    names.extend(graph.initializer.iter().map(|i| i.name().to_string()));
    names.extend(nodes.iter().flat_map(|(n, _)| n.output.iter().cloned()));

    let mut blocks = Vec::new();
    for f in found {
        let fuse = match fwsa {
            Fwsa::On => true,
            Fwsa::Off => false,
            Fwsa::Auto => f.macs().1 < f.macs().0,
        };
        let Some(pos) = nodes.iter().position(|(n, _)| n.output.contains(&f.out)) else {
            skipped.push(Skipped { softmax: f.softmax, reason: format!("no node of the file writes `{}`", f.out) });
            continue;
        };
        let emitted = f.emit(fuse);
        let new_names: Vec<&str> = emitted
            .nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .chain(emitted.inits.iter().map(|t| t.name()))
            .collect();
        if let Some(clash) = new_names.iter().find(|&&n| n != f.out && names.contains(n)) {
            let reason = format!("the model already has a tensor named `{clash}`");
            skipped.push(Skipped { softmax: f.softmax, reason });
            continue;
        }
        names.extend(emitted.nodes.iter().flat_map(|n| n.output.iter().cloned()));
        names.extend(emitted.inits.iter().map(|t| t.name().to_string()));
        graph.initializer.extend(emitted.inits);
        nodes.splice(pos..=pos, emitted.nodes.into_iter().map(|n| (n, true)));
        let (macs_unfused, macs_fused) = f.macs();
        blocks.push(AttentionBlock {
            output: f.out,
            seq: f.s,
            embed: f.e,
            heads: f.h,
            head_dim: f.p,
            value_dim: f.pv,
            masked: f.mask.is_some(),
            fused: fuse,
            macs_unfused,
            macs_fused,
        });
    }
    if blocks.is_empty() {
        return Ok(Rewritten { model: model.to_vec(), blocks, skipped });
    }
    // Drop what the rewrite made dead (nodes dead already in the file stay: not ours to judge).
    graph.node = nodes.iter().map(|(n, _)| n.clone()).collect();
    let live = live_nodes(graph);
    graph.node =
        nodes.into_iter().zip(live).filter(|((_, before), now)| *now || !before).map(|((n, _), _)| n).collect();
    let used_now = used_names(graph.node.iter(), graph);
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| used_before.contains(n) && !used_now.contains(n))
        .collect();
    graph.initializer.retain(|t| !dropped.contains(t.name()));
    // IR < 4 files also list initializers as graph inputs.
    graph.input.retain(|i| !dropped.contains(i.name()));
    let defined: HashSet<&str> = graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    graph.value_info.retain(|v| defined.contains(v.name()));
    let bytes = m.encode_to_vec();
    // A rewrite that does not import again is a bug here, not in the user's model.
    crate::import(&bytes, opts)
        .map_err(|e| Error::Invalid(format!("the attention rewrite produced a model that does not import: {e}")))?;
    Ok(Rewritten { model: bytes, blocks, skipped })
}

/// Which nodes contribute to a graph output (to a fixpoint, so file order does not matter).
fn live_nodes(g: &GraphProto) -> Vec<bool> {
    let mut needed: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    let mut live = vec![false; g.node.len()];
    loop {
        let mut changed = false;
        for (i, n) in g.node.iter().enumerate().rev() {
            if !live[i] && n.output.iter().any(|o| needed.contains(o.as_str())) {
                live[i] = true;
                changed = true;
                needed.extend(n.input.iter().map(String::as_str));
            }
        }
        if !changed {
            return live;
        }
    }
}

/// Tensor names read by `nodes` or listed as graph outputs.
fn used_names<'a>(nodes: impl Iterator<Item = &'a NodeProto>, g: &GraphProto) -> HashSet<String> {
    let mut used: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    for n in nodes {
        used.extend(n.input.iter().cloned());
    }
    used
}

/// Longest layout chain followed between a projection and the attention (torch writes up to ~8).
const MAX_CHAIN: usize = 32;

/// Value written for masked score entries: finite, so no -inf reaches int8 code, and far below
/// what `mote_core::quantize::plan` accepts as a mask (≤ -1e4).
const MASKED: f64 = -1e9;

/// Probe values are f32 indices: exact below 2^24.
const MAX_PROBE: usize = 1 << 24;

/// A recognised block: shapes, names and the canonical float weights (f64, scales folded in).
#[derive(Debug)]
struct Found {
    softmax: String,
    x: String,
    x_shape: Vec<usize>,
    out: String,
    out_shape: Vec<usize>,
    s: usize,
    e: usize,
    h: usize,
    p: usize,
    pv: usize,
    /// Output projection width.
    eo: usize,
    /// [E, H·P], the softmax scale folded in; columns head-major.
    wq: Vec<f64>,
    bq: Vec<f64>,
    wk: Vec<f64>,
    bk: Vec<f64>,
    /// [E, H·Pv].
    wv: Vec<f64>,
    bv: Vec<f64>,
    /// [H·Pv, Eo], rows head-major.
    wo: Vec<f64>,
    bo: Vec<f64>,
    /// [S, S] of 0 and [`MASKED`].
    mask: Option<Vec<f64>>,
}

impl Found {
    /// (unfused, fused) MACs of the whole block.
    fn macs(&self) -> (u64, u64) {
        let (s, e, h, p, pv, eo) =
            (self.s as u64, self.e as u64, self.h as u64, self.p as u64, self.pv as u64, self.eo as u64);
        let unfused = 2 * s * e * h * p + h * s * s * p + s * e * h * pv + h * s * s * pv + s * h * pv * eo;
        let fused = s * e * h * e + 2 * h * s * s * e + s * h * e * eo;
        (unfused, fused)
    }

    /// The FWSA weights: (w_qk [E, H·E], b_qk [H·E], w_vo [H·E, Eo], b_vo [Eo]).
    fn fused_weights(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (e, h, p, pv, eo) = (self.e, self.h, self.p, self.pv, self.eo);
        let (hp, hpv, he) = (h * p, h * pv, h * e);
        let mut wqk = vec![0.0; e * he];
        let mut bqk = vec![0.0; he];
        for hh in 0..h {
            for e2 in 0..e {
                for pp in 0..p {
                    let c = hh * p + pp;
                    let k = self.wk[e2 * hp + c];
                    bqk[hh * e + e2] += k * self.bq[c];
                    for e1 in 0..e {
                        wqk[e1 * he + hh * e + e2] += self.wq[e1 * hp + c] * k;
                    }
                }
            }
        }
        let mut wvo = vec![0.0; he * eo];
        let mut bvo = self.bo.clone();
        for hh in 0..h {
            for pp in 0..pv {
                let c = hh * pv + pp;
                let o_row = &self.wo[c * eo..(c + 1) * eo];
                for (j, &w) in o_row.iter().enumerate() {
                    bvo[j] += self.bv[c] * w;
                }
                for ee in 0..e {
                    let v = self.wv[ee * hpv + c];
                    let row = &mut wvo[(hh * e + ee) * eo..(hh * e + ee + 1) * eo];
                    for (r, &w) in row.iter_mut().zip(o_row) {
                        *r += v * w;
                    }
                }
            }
        }
        (wqk, bqk, wvo, bvo)
    }

    /// The canonical nodes and initializers of this block (module docs).
    fn emit(&self, fuse: bool) -> Emitter {
        let (s, e, h) = (self.s, self.e, self.h);
        let mut em = Emitter { prefix: format!("{}/mhsa/", self.out), s, nodes: Vec::new(), inits: Vec::new() };
        let x2 = if self.x_shape == [s, e] {
            self.x.clone()
        } else {
            let shape = em.shape("shape_x", &[s, e]);
            em.node("Reshape", "x", vec![self.x.clone(), shape], vec![])
        };
        if fuse {
            let (wqk, bqk, wvo, bvo) = self.fused_weights();
            let qh = em.linear_heads("qk", &x2, (e, h, e), &wqk, &bqk, &[1, 0, 2]);
            let kt = em.node("Transpose", "x_t", vec![x2.clone()], vec![ints("perm", &[1, 0])]);
            em.attend(self, &qh, &kt, &x2, e, &wvo, &bvo);
        } else {
            let qh = em.linear_heads("q", &x2, (e, h, self.p), &self.wq, &self.bq, &[1, 0, 2]);
            let kt = em.linear_heads("k", &x2, (e, h, self.p), &self.wk, &self.bk, &[1, 2, 0]);
            let vh = em.linear_heads("v", &x2, (e, h, self.pv), &self.wv, &self.bv, &[1, 0, 2]);
            em.attend(self, &qh, &kt, &vh, self.pv, &self.wo, &self.bo);
        }
        em
    }
}

/// Builds the ONNX nodes and initializers of one canonical block, names prefixed `<out>/mhsa/`.
struct Emitter {
    prefix: String,
    /// Sequence length S.
    s: usize,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

impl Emitter {
    fn name(&self, s: &str) -> String {
        format!("{}{s}", self.prefix)
    }

    /// Adds a float32 initializer (rounding the f64 values once) and returns its name.
    fn weight(&mut self, s: &str, dims: &[usize], v: &[f64]) -> String {
        let name = self.name(s);
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Float as i32),
            dims: dims.iter().map(|&d| d as i64).collect(),
            raw_data: Some(v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 shape initializer for Reshape and returns its name.
    fn shape(&mut self, s: &str, dims: &[usize]) -> String {
        let name = self.name(s);
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Int64 as i32),
            dims: vec![dims.len() as i64],
            raw_data: Some(dims.iter().flat_map(|&d| (d as i64).to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// Adds a node whose output (and node name) is `<prefix><out>`; returns the output name.
    fn node(&mut self, op: &str, out: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let name = self.name(out);
        self.push(op, name.clone(), inputs, attribute);
        name
    }

    fn push(&mut self, op: &str, output: String, input: Vec<String>, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            name: Some(output.clone()),
            op_type: Some(op.into()),
            input,
            output: vec![output],
            attribute,
            ..Default::default()
        });
    }

    /// `Transpose(Reshape(Add(MatMul(x, w_t [E, H·P]), b_t), [S, H, P]), order)`; returns its name.
    fn linear_heads(
        &mut self,
        t: &str,
        x: &str,
        (e, h, p): (usize, usize, usize),
        w: &[f64],
        b: &[f64],
        order: &[i64],
    ) -> String {
        let w = self.weight(&format!("w_{t}"), &[e, h * p], w);
        let b = self.weight(&format!("b_{t}"), &[h * p], b);
        let mm = self.node("MatMul", &format!("{t}_proj"), vec![x.to_string(), w], vec![]);
        let y = self.node("Add", t, vec![mm, b], vec![]);
        let shape = self.shape(&format!("shape_{t}"), &[self.s, h, p]);
        let split = self.node("Reshape", &format!("{t}_split"), vec![y, shape], vec![]);
        let label = if order == [1, 2, 0] { format!("{t}_t") } else { format!("{t}_heads") };
        self.node("Transpose", &label, vec![split], vec![ints("perm", order)])
    }

    /// Scores, mask, softmax, weighted sum (`pv` wide per head), head concat, output projection.
    #[allow(clippy::too_many_arguments)]
    fn attend(&mut self, f: &Found, qh: &str, kt: &str, vh: &str, pv: usize, wo: &[f64], bo: &[f64]) {
        let (s, h, eo) = (f.s, f.h, f.eo);
        let mut scores = self.node("MatMul", "scores", vec![qh.into(), kt.into()], vec![]);
        if let Some(mask) = &f.mask {
            let m = self.weight("mask", &[s, s], mask);
            scores = self.node("Add", "scores_masked", vec![scores, m], vec![]);
        }
        let axis = AttributeProto {
            name: Some("axis".into()),
            i: Some(-1),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        };
        let probs = self.node("Softmax", "probs", vec![scores], vec![axis]);
        let ctx = self.node("MatMul", "context", vec![probs, vh.into()], vec![]);
        let ctx_t = self.node("Transpose", "context_t", vec![ctx], vec![ints("perm", &[1, 0, 2])]);
        let shape_o = self.shape("shape_o", &[s, h * pv]);
        let concat = self.node("Reshape", "context_concat", vec![ctx_t, shape_o], vec![]);
        let w = self.weight("w_o", &[h * pv, eo], wo);
        let b = self.weight("b_o", &[eo], bo);
        let y_proj = self.node("MatMul", "y_proj", vec![concat, w], vec![]);
        if f.out_shape == [s, eo] {
            self.push("Add", f.out.clone(), vec![y_proj, b], vec![]);
        } else {
            let y = self.node("Add", "y", vec![y_proj, b], vec![]);
            let shape = self.shape("shape_y", &f.out_shape);
            self.push("Reshape", f.out.clone(), vec![y, shape], vec![]);
        }
    }
}

/// Every self-attention block of `g` (in graph order), and the attention-like Softmaxes that are not.
fn recognise(g: &Graph) -> (Vec<Found>, Vec<Skipped>) {
    let cx = Cx::new(g);
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    for n in &g.nodes {
        if !n.op.as_any().is::<Softmax>() {
            continue;
        }
        match cx.block(n) {
            Ok(Some(f)) => found.push(f),
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped { softmax: n.name.clone(), reason }),
        }
    }
    (found, skipped)
}

/// The graph with its def-use links.
struct Cx<'g> {
    g: &'g Graph,
    /// Producing node and output index of each value.
    producer: Vec<Option<(NodeId, usize)>>,
    /// Nodes reading each value (once per input slot).
    consumers: Vec<Vec<NodeId>>,
}

/// One step of a layout chain, in evaluation order.
enum Step {
    /// A data-movement node: its output `out`, computed from input 0 (other inputs constant).
    Op { node: NodeId, out: usize },
    /// A scalar Mul/Div, skipped by the probe except for its output shape.
    Scale { shape: Vec<usize> },
}

/// A linear layer `y = x·w + b` on the last axis, with constant float weights.
struct Proj {
    x: TensorId,
    /// In and out widths.
    e: usize,
    n: usize,
    /// [E, N] row-major.
    w: Vec<f64>,
    /// [N].
    b: Vec<f64>,
}

/// A projection reached from an attention operand through a layout chain.
struct Branch {
    proj: Proj,
    /// For each element of the operand, its flat index in the projection's output.
    map: Vec<usize>,
    /// Product of the scalar factors on the way.
    scale: f64,
}

type Why<T> = std::result::Result<T, String>;

impl<'g> Cx<'g> {
    fn new(g: &'g Graph) -> Self {
        let mut producer = vec![None; g.values.len()];
        let mut consumers = vec![Vec::new(); g.values.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, &o) in n.outputs.iter().enumerate() {
                producer[o] = Some((i, k));
            }
            for &x in &n.inputs {
                consumers[x].push(i);
            }
        }
        Cx { g, producer, consumers }
    }

    fn name(&self, t: TensorId) -> &str {
        &self.g.values[t].name
    }

    fn shape(&self, t: TensorId) -> &[usize] {
        &self.g.values[t].ty.shape
    }

    fn konst(&self, t: TensorId) -> Option<&Arc<Tensor>> {
        self.g.values[t].konst.as_ref()
    }

    /// An activation (not a constant) of type f32.
    fn is_f32_act(&self, t: TensorId) -> bool {
        self.konst(t).is_none() && self.g.values[t].ty.dtype == DType::F32
    }

    fn binary(n: &Node) -> Option<BinaryKind> {
        n.op.as_any().downcast_ref::<Binary>().map(|b| b.kind)
    }

    /// For `x·c` or `x/c` with a constant one-element float `c`: (x, factor).
    fn scalar_factor(&self, n: &Node) -> Option<(TensorId, f64)> {
        let c = |t: TensorId| self.konst(t).filter(|k| k.len() == 1 && k.dtype().is_float()).map(|k| k.to_f64_vec()[0]);
        let (x, f) = match Self::binary(n)? {
            BinaryKind::Mul => match c(n.inputs[1]) {
                Some(v) => (n.inputs[0], v),
                None => (n.inputs[1], c(n.inputs[0])?),
            },
            BinaryKind::Div => (n.inputs[0], 1.0 / c(n.inputs[1])?),
            _ => return None,
        };
        (self.is_f32_act(x) && f.is_finite() && f != 0.0).then_some((x, f))
    }

    /// A pure data-movement node on input 0, every other input constant.
    fn is_layout(&self, n: &Node) -> bool {
        DATA_MOVEMENT.contains(&n.op.name())
            && !n.inputs.is_empty()
            && n.inputs[1..].iter().all(|&i| self.konst(i).is_some())
    }

    /// The constant float matrix `t` of shape [K, N], row-major.
    fn matrix(&self, t: TensorId) -> Option<(Vec<f64>, usize, usize)> {
        let k = self.konst(t)?;
        match (k.dtype(), k.shape()) {
            (DType::F32, &[r, c]) => Some((k.to_f64_vec(), r, c)),
            _ => None,
        }
    }

    /// A constant bias for a linear layer of width `n`: `n` values (or one) along the last axis only.
    fn bias(&self, t: TensorId, n: usize) -> Option<Vec<f64>> {
        let k = self.konst(t)?;
        let sh = k.shape();
        let last_only = sh.iter().rev().skip(1).all(|&d| d == 1);
        if k.dtype() != DType::F32 || !last_only {
            return None;
        }
        match k.len() {
            1 => Some(vec![k.to_f64_vec()[0]; n]),
            l if l == n => Some(k.to_f64_vec()),
            _ => None,
        }
    }

    /// `MatMul(x, w)` with a constant [E, N] weight: the projection without bias.
    fn matmul_proj(&self, n: &Node) -> Option<Proj> {
        if !n.op.as_any().is::<MatMul>() {
            return None;
        }
        let x = n.inputs[0];
        let (w, e, cols) = self.matrix(n.inputs[1])?;
        let ok = self.is_f32_act(x) && self.shape(x).len() >= 2 && self.shape(x).last() == Some(&e);
        ok.then(|| Proj { x, e, n: cols, w, b: vec![0.0; cols] })
    }

    /// `Gemm(x, B, C)` with constant B (and C): alpha, beta and transB folded into w and b.
    fn gemm_proj(&self, n: &Node) -> Option<Proj> {
        let gm = n.op.as_any().downcast_ref::<Gemm>()?;
        let x = n.inputs[0];
        let (b, r, c) = self.matrix(n.inputs[1])?;
        if gm.trans_a || !self.is_f32_act(x) {
            return None;
        }
        let (e, cols) = if gm.trans_b { (c, r) } else { (r, c) };
        let alpha = f64::from(gm.alpha);
        let w: Vec<f64> = (0..e * cols)
            .map(|i| {
                let (row, col) = (i / cols, i % cols);
                alpha * if gm.trans_b { b[col * c + row] } else { b[i] }
            })
            .collect();
        let bias = match n.inputs.get(2) {
            Some(&t) => self.bias(t, cols)?.into_iter().map(|v| f64::from(gm.beta) * v).collect(),
            None => vec![0.0; cols],
        };
        Some(Proj { x, e, n: cols, w, b: bias })
    }

    /// The linear projection whose output is `t`: `Add(MatMul(x, W), b)`, `MatMul(x, W)` or `Gemm`.
    fn projection(&self, t: TensorId) -> Option<Proj> {
        let (n, 0) = self.producer[t]? else { return None };
        let node = &self.g.nodes[n];
        if Self::binary(node) == Some(BinaryKind::Add) {
            for (m, c) in [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] {
                let Some((pm, 0)) = self.producer[m] else { continue };
                let Some(mut p) = self.matmul_proj(&self.g.nodes[pm]) else { continue };
                if let Some(b) = self.bias(c, p.n) {
                    p.b = b;
                    return Some(p);
                }
            }
            return None;
        }
        self.matmul_proj(node).or_else(|| self.gemm_proj(node))
    }

    /// Evaluates a layout chain on an index tensor of shape `shape` (element i holds i): where each
    /// element of the chain's result comes from.
    fn probe(&self, shape: &[usize], steps: &[Step]) -> Why<Vec<usize>> {
        let len: usize = shape.iter().product();
        if len >= MAX_PROBE {
            return Err(format!("a tensor of {len} elements is too large to trace"));
        }
        let fail = |e: Error| format!("tracing the layout ops failed: {e}");
        let mut t = Tensor::from_vec(shape, (0..len).map(|i| i as f32).collect()).map_err(fail)?;
        for s in steps {
            t = match s {
                Step::Scale { shape } => t.reshape(shape).map_err(fail)?,
                Step::Op { node, out } => {
                    let n = &self.g.nodes[*node];
                    let mut args: Vec<&Tensor> = vec![&t];
                    args.extend(n.inputs[1..].iter().map(|&i| self.konst(i).expect("checked constant").as_ref()));
                    let mut outs = n.op.eval(&args).map_err(|e| fail(e.at_node(&n.name, n.op.name())))?;
                    if *out >= outs.len() {
                        return Err(format!("node `{}` computes no output #{out}", n.name));
                    }
                    outs.swap_remove(*out)
                }
            };
        }
        Ok(t.to_f64_vec().into_iter().map(|v| v as usize).collect())
    }

    /// Follows `t` back through layout ops and scalar factors to a linear projection.
    fn branch(&self, t: TensorId) -> Why<Branch> {
        let (mut steps, mut scale, mut cur) = (Vec::new(), 1.0, t);
        for _ in 0..MAX_CHAIN {
            if let Some(proj) = self.projection(cur) {
                steps.reverse();
                let map = self.probe(self.shape(cur), &steps)?;
                return Ok(Branch { proj, map, scale });
            }
            let Some((n, out)) = self.producer[cur] else {
                return Err(format!("`{}` is not computed by a linear layer with constant weights", self.name(t)));
            };
            let node = &self.g.nodes[n];
            if self.is_layout(node) {
                steps.push(Step::Op { node: n, out });
                cur = node.inputs[0];
            } else if let Some((x, f)) = self.scalar_factor(node) {
                steps.push(Step::Scale { shape: self.shape(node.outputs[0]).to_vec() });
                scale *= f;
                cur = x;
            } else if node.op.as_any().is::<MatMul>() || node.op.as_any().is::<Gemm>() {
                return Err(format!(
                    "`{}` comes from {} `{}`, which is not a linear layer with a constant weight",
                    self.name(t),
                    node.op.name(),
                    node.name
                ));
            } else {
                return Err(format!(
                    "{} node `{}` lies between `{}` and its linear projection",
                    node.op.name(),
                    node.name,
                    self.name(t)
                ));
            }
        }
        Err(format!("more than {MAX_CHAIN} layout ops before `{}`", self.name(t)))
    }

    /// The only consumer of `t` (not a graph output), or why not.
    fn sole_use(&self, t: TensorId) -> Why<(NodeId, &'g Node)> {
        match self.consumers[t].as_slice() {
            [u] if !self.g.outputs.contains(&t) => Ok((*u, &self.g.nodes[*u])),
            uses => Err(format!(
                "`{}` has {} uses{}; the rewrite needs the attention to be its only reader",
                self.name(t),
                uses.len(),
                if self.g.outputs.contains(&t) { " and is a graph output" } else { "" }
            )),
        }
    }

    /// Follows the attention result `o` forward through layout ops to the output projection:
    /// (the projection, its output tensor, for each element of its input the flat index in `o`, scale).
    fn out_branch(&self, o: TensorId) -> Why<(Proj, TensorId, Vec<usize>, f64)> {
        let (mut steps, mut scale, mut cur) = (Vec::new(), 1.0, o);
        for _ in 0..MAX_CHAIN {
            let (id, u) = self.sole_use(cur)?;
            if u.inputs[0] == cur {
                if let Some(mut p) = self.matmul_proj(u) {
                    // A following bias Add belongs to the projection.
                    let mm = u.outputs[0];
                    let mut out = mm;
                    if let Ok((_, add)) = self.sole_use(mm) {
                        if Self::binary(add) == Some(BinaryKind::Add) {
                            let other = if add.inputs[0] == mm { add.inputs[1] } else { add.inputs[0] };
                            if let Some(b) = self.bias(other, p.n) {
                                p.b = b;
                                out = add.outputs[0];
                            }
                        }
                    }
                    let map = self.probe(self.shape(o), &steps)?;
                    return Ok((p, out, map, scale));
                }
                if let Some(p) = self.gemm_proj(u) {
                    let map = self.probe(self.shape(o), &steps)?;
                    return Ok((p, u.outputs[0], map, scale));
                }
                if self.is_layout(u) && u.outputs.len() == 1 {
                    steps.push(Step::Op { node: id, out: 0 });
                    cur = u.outputs[0];
                    continue;
                }
            }
            match self.scalar_factor(u) {
                Some((x, f)) if x == cur => {
                    steps.push(Step::Scale { shape: self.shape(u.outputs[0]).to_vec() });
                    scale *= f;
                    cur = u.outputs[0];
                }
                _ => {
                    return Err(format!(
                        "{} node `{}` lies between the attention output `{}` and a linear layer with constant weights",
                        u.op.name(),
                        u.name,
                        self.name(o)
                    ))
                }
            }
        }
        Err(format!("more than {MAX_CHAIN} layout ops after `{}`", self.name(o)))
    }

    /// The block around Softmax `sm`: `None` when it is not attention-like (its input is not a
    /// product of two activations), an error when it is but does not fit the rewrite.
    fn block(&self, sm: &Node) -> Why<Option<Found>> {
        let g = self.g;
        // Scores side: [Mul/Div by scalar | Add constant mask]* back to MatMul(a, b).
        let (mut cur, mut alpha, mut mask) = (sm.inputs[0], 1.0f64, None);
        let scores_mm = loop {
            let Some((n, _)) = self.producer[cur] else { return Ok(None) };
            let node = &g.nodes[n];
            if node.op.as_any().is::<MatMul>() {
                if node.inputs.iter().all(|&i| self.is_f32_act(i)) {
                    break node;
                }
                return Ok(None);
            }
            if let Some((x, f)) = self.scalar_factor(node) {
                alpha *= f;
                cur = x;
                continue;
            }
            if Self::binary(node) == Some(BinaryKind::Add) && mask.is_none() {
                let (x, m) = match (self.konst(node.inputs[0]), self.konst(node.inputs[1])) {
                    (None, Some(m)) => (node.inputs[0], m),
                    (Some(m), None) => (node.inputs[1], m),
                    _ => return Ok(None),
                };
                // Scale factors nearer the Softmax multiply the mask too.
                mask = Some((m.clone(), alpha));
                cur = x;
                continue;
            }
            return Ok(None);
        };
        let x_shape = self.shape(sm.inputs[0]);
        let rank = x_shape.len();
        if sm.op.as_any().downcast_ref::<Softmax>().is_some_and(|s| s.axis + 1 != rank) {
            return Err("Softmax is not over the last axis".into());
        }
        let (a, b) = (scores_mm.inputs[0], scores_mm.inputs[1]);
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa.len() < 2 || sb.len() < 2 || rank < 2 {
            return Err("the scores MatMul has operands of rank < 2".into());
        }
        let (s, p) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let s_k = sb[sb.len() - 1];
        if s_k != s {
            return Err(format!("queries of length {s} attend to keys of length {s_k}: not self-attention"));
        }
        let lead = |sh: &[usize]| sh[..sh.len() - 2].iter().product::<usize>();
        let heads = lead(x_shape);
        if lead(sa) != heads || lead(sb) != heads {
            return Err("queries and keys broadcast over heads".into());
        }
        let (_, pv_mm) = self.sole_use(sm.outputs[0])?;
        if !pv_mm.op.as_any().is::<MatMul>() || pv_mm.inputs[0] != sm.outputs[0] || !self.is_f32_act(pv_mm.inputs[1]) {
            return Err(format!("the probabilities feed {} `{}`, not MatMul(p, v)", pv_mm.op.name(), pv_mm.name));
        }
        let v = pv_mm.inputs[1];
        let o = pv_mm.outputs[0];
        let sv = self.shape(v);
        let pv = *sv.last().expect("rank >= 2");
        if sv.len() < 2 || lead(sv) != heads || lead(self.shape(o)) != heads {
            return Err("values broadcast over heads".into());
        }

        let (qa, kb, vb) = (self.branch(a)?, self.branch(b)?, self.branch(v)?);
        let x = qa.proj.x;
        if kb.proj.x != x || vb.proj.x != x {
            return Err(format!(
                "queries, keys and values come from different tensors (`{}`, `{}`, `{}`): not self-attention",
                self.name(x),
                self.name(kb.proj.x),
                self.name(vb.proj.x)
            ));
        }
        let e = qa.proj.e;
        let xs = self.shape(x).to_vec();
        if xs.iter().product::<usize>() != s * e {
            return Err(format!("the input `{}` {:?} is not {s} tokens of {e}", self.name(x), xs));
        }
        let cq = head_split(&qa.map, qa.proj.n, (heads, s, p), false).map_err(|w| format!("queries: {w}"))?;
        let ck = head_split(&kb.map, kb.proj.n, (heads, s, p), true).map_err(|w| format!("keys: {w}"))?;
        let cv = head_split(&vb.map, vb.proj.n, (heads, s, pv), false).map_err(|w| format!("values: {w}"))?;

        let (op, out, omap, so) = self.out_branch(o)?;
        let (k, eo) = (op.e, op.n);
        let out_shape = self.shape(out).to_vec();
        if omap.len() != s * k || out_shape.iter().product::<usize>() != s * eo {
            return Err(format!("the output projection does not see {s} tokens"));
        }
        // o_in[r, n] = o[h(n), r, p(n)]: output projection rows per head.
        let mut wo = vec![0.0; heads * pv * eo];
        let mut from: Vec<Option<usize>> = vec![None; k];
        for r in 0..s {
            for (n, slot) in from.iter_mut().enumerate() {
                let idx = omap[r * k + n];
                let (hh, rr, pp) = (idx / (s * pv), (idx / pv) % s, idx % pv);
                if rr != r || slot.is_some_and(|c| c != hh * pv + pp) {
                    return Err("the heads are not concatenated token by token before the output projection".into());
                }
                *slot = Some(hh * pv + pp);
            }
        }
        for (n, c) in from.iter().enumerate() {
            let c = c.expect("s >= 1 sets every column");
            for j in 0..eo {
                wo[c * eo + j] += so * op.w[n * eo + j];
            }
        }

        // The whole logits scale goes into the query projection.
        let alpha = alpha * qa.scale * kb.scale;
        if !alpha.is_finite() || alpha == 0.0 {
            return Err(format!("softmax scale {alpha} is not usable"));
        }
        let pick = |pr: &Proj, cols: &[usize], f: f64| {
            let w: Vec<f64> = (0..pr.e).flat_map(|r| cols.iter().map(move |&c| f * pr.w[r * pr.n + c])).collect();
            let b: Vec<f64> = cols.iter().map(|&c| f * pr.b[c]).collect();
            (w, b)
        };
        let (wq, bq) = pick(&qa.proj, &cq, alpha);
        let (wk, bk) = pick(&kb.proj, &ck, 1.0);
        let (wv, bv) = pick(&vb.proj, &cv, vb.scale);
        let mask = match mask {
            None => None,
            Some((m, f)) => canonical_mask(&m, f, x_shape, s)?,
        };
        Ok(Some(Found {
            softmax: sm.name.clone(),
            x: self.name(x).to_string(),
            x_shape: xs,
            out: self.name(out).to_string(),
            out_shape,
            s,
            e,
            h: heads,
            p,
            pv,
            eo,
            wq,
            bq,
            wk,
            bk,
            wv,
            bv,
            wo,
            bo: op.b,
            mask,
        }))
    }
}

/// Checks that an operand is a head split of a projection with `n` columns and returns the column
/// of each (head, dim): `t[g, s, d] = proj[s, c(g, d)]`, or `t[g, d, s]` when `transposed` (keys).
fn head_split(map: &[usize], n: usize, (heads, s, d): (usize, usize, usize), transposed: bool) -> Why<Vec<usize>> {
    if map.len() != heads * s * d {
        return Err(format!("{} elements traced, {heads}x{s}x{d} expected", map.len()));
    }
    let mut cols = vec![usize::MAX; heads * d];
    for h in 0..heads {
        for t in 0..s {
            for k in 0..d {
                let flat = if transposed { (h * d + k) * s + t } else { (h * s + t) * d + k };
                let (row, col) = (map[flat] / n, map[flat] % n);
                if row != t {
                    return Err(format!("token {t} of head {h} reads token {row} of the projection"));
                }
                let c = &mut cols[h * d + k];
                if *c == usize::MAX {
                    *c = col;
                } else if *c != col {
                    return Err(format!("head {h} dim {k} reads different columns for different tokens"));
                }
            }
        }
    }
    Ok(cols)
}

/// The mask as [S, S] of 0 and [`MASKED`] (`None` when it masks nothing), or why it is not a mask
/// shared by every head.
fn canonical_mask(m: &Tensor, factor: f64, scores: &[usize], s: usize) -> Why<Option<Vec<f64>>> {
    let sh = m.shape();
    if sh.len() > scores.len()
        || sh.iter().rev().skip(2).any(|&d| d != 1)
        || sh.iter().rev().take(2).any(|&d| d != 1 && d != s)
    {
        return Err(format!("the additive mask {sh:?} is not one [{s}, {s}] matrix for every head"));
    }
    let (rows, cols) = match sh.len() {
        0 => (1, 1),
        1 => (1, sh[0]),
        r => (sh[r - 2], sh[r - 1]),
    };
    let v = m.to_f64_vec();
    let mut out = Vec::with_capacity(s * s);
    for i in 0..s {
        for j in 0..s {
            let x = v[(i % rows) * cols + j % cols] * factor;
            out.push(if x == 0.0 {
                0.0
            } else if x <= -1e4 {
                MASKED
            } else {
                return Err(format!("the score bias holds {x}: an additive bias, not a 0/-inf mask"));
            });
        }
    }
    Ok(out.iter().any(|&x| x != 0.0).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        tensor_shape_proto, type_proto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };
    use mote_core::npz;
    use mote_core::quantize::calib::Method;
    use std::path::PathBuf;

    /// Rewritten float outputs equal the original's within this fraction of max |y|: the rewrite only
    /// reorders float sums and rounds folded or fused weights once (measured: at most 5.4e-7).
    const REL_TOL: f64 = 1e-5;

    fn example(dir: &str, f: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir).join(f)
    }

    fn read(dir: &str, f: &str) -> Vec<u8> {
        std::fs::read(example(dir, f)).unwrap()
    }

    fn inputs(dir: &str, model: &str) -> Vec<Tensor> {
        npz::read(example(dir, &format!("{model}.inputs.npz"))).unwrap().into_iter().map(|(_, t)| t).collect()
    }

    /// Largest |a - b| over max |a|, over all outputs.
    fn rel_err(a: &[Tensor], b: &[Tensor]) -> f64 {
        assert_eq!(a.len(), b.len());
        let mut worst = 0f64;
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.shape(), y.shape());
            let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
            let max = x.iter().fold(0f64, |m, v| m.max(v.abs()));
            let d = x.iter().zip(&y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            worst = worst.max(d / max);
        }
        worst
    }

    /// Rewrites `model` off, on and auto, checks each against the original on `x` and returns the
    /// blocks of the `auto` rewrite.
    fn check(bytes: &[u8], opts: &ImportOptions, x: &[Tensor]) -> Vec<AttentionBlock> {
        let want = crate::import(bytes, opts).unwrap().run(x.to_vec()).unwrap();
        let mut auto = Vec::new();
        for fwsa in [Fwsa::Off, Fwsa::On, Fwsa::Auto] {
            let r = rewrite_attention(bytes, opts, fwsa).unwrap();
            assert!(r.skipped.is_empty(), "{:?}", r.skipped);
            let got = crate::import(&r.model, opts).unwrap().run(x.to_vec()).unwrap();
            let err = rel_err(&want, &got);
            assert!(err < REL_TOL, "{fwsa:?}: relative error {err}");
            for b in &r.blocks {
                let fused = match fwsa {
                    Fwsa::On => true,
                    Fwsa::Off => false,
                    Fwsa::Auto => b.macs_fused < b.macs_unfused,
                };
                assert_eq!(b.fused, fused, "{fwsa:?} {b:?}");
            }
            auto = r.blocks;
        }
        auto
    }

    /// (S, E, H, P, masked, fused) of each block.
    fn dims(blocks: &[AttentionBlock]) -> Vec<(usize, usize, usize, usize, bool, bool)> {
        blocks.iter().map(|b| (b.seq, b.embed, b.heads, b.head_dim, b.masked, b.fused)).collect()
    }

    #[test]
    fn torch_encoder_exports_have_one_block_each() {
        let opts = ImportOptions::default();
        for (model, masked) in [("kws_encoder_op17", false), ("kws_encoder_op14", false), ("causal_mha_op17", true)] {
            let b = check(&read("torch-encoder", &format!("{model}.onnx")), &opts, &inputs("torch-encoder", model));
            let (s, e, h) = if masked { (12, 32, 4) } else { (16, 64, 4) };
            assert_eq!(dims(&b), [(s, e, h, e / h, masked, false)], "{model}");
        }
        // The symbolic batch needs --shape; the rewrite then bakes in batch 1.
        let opts = ImportOptions { shapes: [("x".to_string(), vec![1, 16, 64])].into(), ..Default::default() };
        let x = inputs("torch-encoder", "kws_encoder_dynamic");
        let b = check(&read("torch-encoder", "kws_encoder_dynamic.onnx"), &opts, &x);
        assert_eq!(dims(&b), [(16, 64, 4, 16, false, false)]);
        assert_eq!(b[0].output, "/encoder/self_attn/Gemm_output_0");
    }

    #[test]
    fn llama_prefill_blocks_are_causal_and_stay_unfused() {
        for seq in [16, 32, 64, 128] {
            let model = format!("llama_prefill_s{seq}");
            let b = check(
                &read("attention", &format!("{model}.onnx")),
                &ImportOptions::default(),
                &inputs("attention", &model),
            );
            assert_eq!(dims(&b), [(seq, 64, 16, 4, true, false)], "{model}");
            // Heads of 4 over 64 features: W_Q·W_Kᵀ per head would multiply the Q-K MACs by 16.
            assert!(b[0].macs_fused > b[0].macs_unfused, "{model}: {b:?}");
        }
    }

    #[test]
    fn digits_has_two_blocks_and_auto_keeps_them_unfused() {
        let b = check(
            &read("digits", "digits_encoder.onnx"),
            &ImportOptions::default(),
            &inputs("digits", "digits_encoder"),
        );
        assert_eq!(dims(&b), [(8, 32, 4, 8, false, false); 2]);
        // P = 8 is small against E = 32: FWSA would cost more than twice as much.
        assert_eq!((b[0].macs_unfused, b[0].macs_fused), (36_864, 81_920));
        assert_eq!(b[1].output, "/blocks.1/attn/Gemm_output_0");
    }

    #[test]
    fn eegformer_fuses_under_auto() {
        let bytes = read("attention", "eegformer_mhsa.onnx");
        let b = check(&bytes, &ImportOptions::default(), &inputs("attention", "eegformer_mhsa"));
        assert_eq!(dims(&b), [(81, 32, 8, 32, false, true)]);
        assert_eq!(b[0].output, "y");
        // Q-K path 3,006,720 -> 2,343,168 MACs; the V-O path the same; 6,013,440 in all (examples/attention/README.md).
        assert_eq!(path_macs(81, 32, 8, 32), (3_006_720, 2_343_168));
        assert_eq!((b[0].macs_before(), b[0].macs_after()), (6_013_440, 4_686_336));
    }

    #[test]
    fn ecgformer_stays_unfused_under_auto() {
        let bytes = read("attention", "ecgformer_mhsa.onnx");
        let b = check(&bytes, &ImportOptions::default(), &inputs("attention", "ecgformer_mhsa"));
        assert_eq!(dims(&b), [(66, 16, 8, 2, false, false)]);
        assert_eq!((b[0].macs_before(), b[0].macs_after(), b[0].macs_fused), (206_976, 206_976, 1_385_472));
    }

    /// Op types and output names of the nodes the rewrite wrote (those named `<out>/mhsa/...` and
    /// the one writing `out`), in file order.
    fn canonical_nodes(model: &[u8], out: &str) -> Vec<(String, String)> {
        let m = ModelProto::decode(model).unwrap();
        let prefix = format!("{out}/mhsa/");
        m.graph
            .unwrap()
            .node
            .iter()
            .filter(|n| n.output[0] == out || n.output[0].starts_with(&prefix))
            .map(|n| (n.op_type().to_string(), n.output[0].trim_start_matches(&prefix).to_string()))
            .collect()
    }

    #[test]
    fn the_canonical_form_is_exactly_the_documented_one() {
        let bytes = read("attention", "ecgformer_mhsa.onnx");
        let out = "/mha/Gemm_output_0";
        let off = rewrite_attention(&bytes, &ImportOptions::default(), Fwsa::Off).unwrap().model;
        let mut want = vec![("Reshape", "x")];
        for (t, last) in [("q", "q_heads"), ("k", "k_t"), ("v", "v_heads")] {
            want.extend([
                ("MatMul", format!("{t}_proj").leak() as &str),
                ("Add", t),
                ("Reshape", format!("{t}_split").leak()),
            ]);
            want.push(("Transpose", last));
        }
        let tail = [
            ("MatMul", "scores"),
            ("Softmax", "probs"),
            ("MatMul", "context"),
            ("Transpose", "context_t"),
            ("Reshape", "context_concat"),
            ("MatMul", "y_proj"),
            ("Add", out),
        ];
        want.extend(tail);
        let got = canonical_nodes(&off, out);
        assert_eq!(got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>(), want);
        let on = rewrite_attention(&bytes, &ImportOptions::default(), Fwsa::On).unwrap().model;
        let mut want = vec![
            ("Reshape", "x"),
            ("MatMul", "qk_proj"),
            ("Add", "qk"),
            ("Reshape", "qk_split"),
            ("Transpose", "qk_heads"),
            ("Transpose", "x_t"),
        ];
        want.extend(tail);
        let got = canonical_nodes(&on, out);
        assert_eq!(got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>(), want);
        // Nothing of torch's packed projection, its shape arithmetic or the old weights is left.
        let g = ModelProto::decode(on.as_slice()).unwrap().graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        for gone in ["Gather", "Squeeze", "Unsqueeze", "Shape", "Mod", "Concat", "Sqrt", "Gemm", "Mul"] {
            assert!(!ops.contains(&gone), "{gone} left: {ops:?}");
        }
        let mut inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        inits.sort();
        let p = |s: &str| format!("{out}/mhsa/{s}");
        let mut want: Vec<String> = ["shape_x", "w_qk", "b_qk", "shape_qk", "shape_o", "w_o", "b_o"].map(p).to_vec();
        want.sort();
        assert_eq!(inits, want);
    }

    #[test]
    fn the_causal_mask_becomes_a_constant_initializer() {
        let bytes = read("torch-encoder", "causal_mha_op17.onnx");
        let r = rewrite_attention(&bytes, &ImportOptions::default(), Fwsa::Off).unwrap();
        let g = ModelProto::decode(r.model.as_slice()).unwrap().graph.unwrap();
        let mask = g.initializer.iter().find(|t| t.name() == "/attn/Gemm_output_0/mhsa/mask").expect("mask");
        assert_eq!(mask.dims, [12, 12]);
        let v = crate::tensor_from_proto(mask).unwrap().to_f64_vec();
        for i in 0..12 {
            for j in 0..12 {
                assert_eq!(v[i * 12 + j], if j > i { MASKED } else { 0.0 }, "({i}, {j})");
            }
        }
        assert!(!g.node.iter().any(|n| n.op_type() == "Trilu"), "the dead mask computation is removed");
    }

    /// Calibration samples of an `examples/attention` model (64 stacked on the batch axis).
    fn samples(model: &str) -> Vec<Vec<Tensor>> {
        let c = npz::read(example("attention", &format!("{model}.calib.npz"))).unwrap().remove(0).1;
        let (n, per) = (c.shape()[0], c.shape()[1..].to_vec());
        let v: Vec<f32> = c.to_f32().iter().copied().collect();
        let len: usize = per.iter().product();
        let shape: Vec<usize> = [1].into_iter().chain(per).collect();
        (0..n).map(|i| vec![Tensor::from_vec(&shape, v[i * len..(i + 1) * len].to_vec()).unwrap()]).collect()
    }

    /// Output SQNR (dB) of the int8 model against the float one on `x`.
    fn sqnr(q: &crate::qdq::Quantized, x: &[Tensor]) -> f64 {
        let (f, i) = (q.float.run(x.to_vec()).unwrap(), q.int8.run(x.to_vec()).unwrap());
        let (f, i) = (f[0].to_f64_vec(), i[0].to_f64_vec());
        let signal: f64 = f.iter().map(|v| v * v).sum();
        let noise: f64 = f.iter().zip(&i).map(|(a, b)| (a - b) * (a - b)).sum();
        10.0 * (signal / noise).log10()
    }

    #[test]
    fn rewritten_models_quantize_to_int8_and_run() {
        let opts = ImportOptions::default();
        for model in ["eegformer_mhsa", "ecgformer_mhsa", "llama_prefill_s16"] {
            let bytes = read("attention", &format!("{model}.onnx"));
            let (calib, x) = (samples(model), inputs("attention", model));
            for fwsa in [Fwsa::Off, Fwsa::On] {
                let r = rewrite_attention(&bytes, &opts, fwsa).unwrap();
                let q = crate::qdq::quantize(&r.model, &opts, &calib, Method::MinMax).unwrap();
                let ops: Vec<&str> = q.int8.op_histogram().iter().map(|(op, _)| *op).collect();
                for float in ["MatMul", "Add", "Softmax", "Mul", "Div"] {
                    assert!(!ops.contains(&float), "{model} {fwsa:?}: float {float} left in {ops:?}");
                }
                let linear = q.int8.op_histogram().into_iter().find(|(op, _)| *op == "QLinear").unwrap().1;
                assert_eq!(linear, if fwsa == Fwsa::On { 2 } else { 4 }, "{model} {fwsa:?}");
                // Measured on the shipped input: eegformer 34.5 (off) / 35.3 dB (on), ecgformer 27.7 / 27.4.
                let db = sqnr(&q, &x);
                assert!(db > 25.0, "{model} {fwsa:?}: {db:.2} dB");
            }
        }
    }

    // ---- Hand-built graphs: the variants the examples do not cover, and what is left alone. ----

    fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A small ONNX graph written node by node.
    #[derive(Default)]
    struct Net {
        g: GraphProto,
        rng: u64,
    }

    impl Net {
        fn random(&mut self, n: usize, scale: f64) -> Vec<f64> {
            (0..n)
                .map(|_| {
                    self.rng = self.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((self.rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
                })
                .collect()
        }
        fn init(&mut self, name: &str, dims: &[usize], v: &[f64]) -> String {
            let mut em = Emitter { prefix: String::new(), s: 0, nodes: vec![], inits: vec![] };
            em.weight(name, dims, v);
            self.g.initializer.extend(em.inits);
            name.into()
        }
        fn ints(&mut self, name: &str, v: &[i64]) -> String {
            self.g.initializer.push(TensorProto {
                name: Some(name.into()),
                data_type: Some(DataType::Int64 as i32),
                dims: vec![v.len() as i64],
                raw_data: Some(v.iter().flat_map(|d| d.to_le_bytes()).collect()),
                ..Default::default()
            });
            name.into()
        }
        fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> String {
            self.g.node.push(NodeProto {
                name: Some(format!("n{}", self.g.node.len())),
                op_type: Some(op.into()),
                input: inputs.iter().map(|s| s.to_string()).collect(),
                output: outputs.iter().map(|s| s.to_string()).collect(),
                attribute: attrs,
                ..Default::default()
            });
            outputs[0].into()
        }
        fn model(mut self, inputs: &[(&str, &[usize])], outputs: &[(&str, &[usize])]) -> Vec<u8> {
            self.g.input = inputs.iter().map(|(n, d)| value_info(n, d)).collect();
            self.g.output = outputs.iter().map(|(n, d)| value_info(n, d)).collect();
            ModelProto {
                ir_version: Some(8),
                opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
                graph: Some(self.g),
                ..Default::default()
            }
            .encode_to_vec()
        }
    }

    fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(v),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }
    }

    fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            f: Some(v),
            r#type: Some(AttributeType::Float as i32),
            ..Default::default()
        }
    }

    fn random_input(shape: &[usize], seed: u64) -> Tensor {
        let mut n = Net { rng: seed, ..Default::default() };
        let v = n.random(shape.iter().product(), 1.0);
        Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect()).unwrap()
    }

    #[test]
    fn packed_split_projection_scale_after_the_mask_and_gemm_output_are_recognised() {
        // X [S,E] (no batch), one bias-free projection to [S, 3·H·P] cut by Split, heads by
        // Reshape/Transpose, mask added before the scale, output projection a Gemm with transB and alpha.
        let (s, e, h, p) = (6, 8, 2, 4);
        let mut n = Net { rng: 7, ..Default::default() };
        let w = n.random(e * 3 * h * p, 0.5);
        n.init("w_in", &[e, 3 * h * p], &w);
        n.node("MatMul", &["x", "w_in"], &["qkv"], vec![]);
        n.ints("sizes", &[(h * p) as i64; 3]);
        n.node("Split", &["qkv", "sizes"], &["q", "k", "v"], vec![int("axis", 1)]);
        n.ints("heads", &[s as i64, h as i64, p as i64]);
        for t in ["q", "k", "v"] {
            n.node("Reshape", &[t, "heads"], &[&format!("{t}r")], vec![]);
        }
        n.node("Transpose", &["qr"], &["qh"], vec![ints("perm", &[1, 0, 2])]);
        n.node("Transpose", &["kr"], &["kt"], vec![ints("perm", &[1, 2, 0])]);
        n.node("Transpose", &["vr"], &["vh"], vec![ints("perm", &[1, 0, 2])]);
        n.node("MatMul", &["qh", "kt"], &["sc"], vec![]);
        let mask: Vec<f64> = (0..s * s).map(|i| if i % s > i / s { f64::NEG_INFINITY } else { 0.0 }).collect();
        n.init("mask", &[1, s, s], &mask);
        n.node("Add", &["sc", "mask"], &["scm"], vec![]);
        n.init("scale", &[], &[0.5]);
        n.node("Mul", &["scale", "scm"], &["scs"], vec![]);
        n.node("Softmax", &["scs"], &["pr"], vec![int("axis", -1)]);
        n.node("MatMul", &["pr", "vh"], &["o"], vec![]);
        n.node("Transpose", &["o"], &["ot"], vec![ints("perm", &[1, 0, 2])]);
        n.ints("flat", &[s as i64, (h * p) as i64]);
        n.node("Reshape", &["ot", "flat"], &["oc"], vec![]);
        let wo = n.random(e * h * p, 0.5);
        n.init("wo", &[e, h * p], &wo);
        let bo = n.random(e, 0.1);
        n.init("bo", &[e], &bo);
        n.node("Gemm", &["oc", "wo", "bo"], &["y"], vec![int("transB", 1), float("alpha", 0.75)]);
        let bytes = n.model(&[("x", &[s, e])], &[("y", &[s, e])]);
        let b = check(&bytes, &ImportOptions::default(), &[random_input(&[s, e], 3)]);
        assert_eq!(dims(&b), [(s, e, h, p, true, false)]);
    }

    /// Q from `x`, K/V from `x` (self) or from `m` (cross), as hand-written exports do.
    fn two_input_attention(cross: bool, weight_input: bool) -> Vec<u8> {
        let (s, e) = (4, 8);
        let mut n = Net { rng: 11, ..Default::default() };
        for t in ["q", "k", "v", "o"] {
            let w = n.random(e * e, 0.5);
            if !(weight_input && t == "k") {
                n.init(&format!("w{t}"), &[e, e], &w);
            }
            let src = if cross && t != "q" && t != "o" {
                "m"
            } else if t == "o" {
                "att"
            } else {
                "x"
            };
            n.node("MatMul", &[src, &format!("w{t}")], &[t], vec![]);
        }
        n.g.node.retain(|nd| nd.output[0] != "o");
        n.node("Transpose", &["k"], &["kt"], vec![ints("perm", &[1, 0])]);
        n.node("MatMul", &["q", "kt"], &["sc"], vec![]);
        n.node("Softmax", &["sc"], &["pr"], vec![int("axis", -1)]);
        n.node("MatMul", &["pr", "v"], &["att"], vec![]);
        n.node("MatMul", &["att", "wo"], &["y"], vec![]);
        let (se, ee) = ([s, e], [e, e]);
        let mut inputs = vec![("x", &se[..]), ("m", &se[..])];
        if weight_input {
            inputs.push(("wk", &ee[..]));
        }
        n.model(&inputs, &[("y", &se)])
    }

    #[test]
    fn single_head_self_attention_without_biases_is_recognised() {
        let bytes = two_input_attention(false, false);
        let x = [random_input(&[4, 8], 1), random_input(&[4, 8], 2)];
        let b = check(&bytes, &ImportOptions::default(), &x);
        // One head of P = E: FWSA saves MACs (Q-K path 640 -> 384).
        assert_eq!(dims(&b), [(4, 8, 1, 8, false, true)]);
        assert_eq!(path_macs(4, 8, 1, 8), (640, 384));
    }

    #[test]
    fn cross_attention_and_variable_weights_are_left_unchanged() {
        for (cross, weight_input, why) in
            [(true, false, "not self-attention"), (false, true, "not a linear layer with a constant weight")]
        {
            let bytes = two_input_attention(cross, weight_input);
            let r = rewrite_attention(&bytes, &ImportOptions::default(), Fwsa::Auto).unwrap();
            assert!(r.blocks.is_empty());
            assert_eq!(r.model, bytes, "unchanged");
            assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
            assert!(r.skipped[0].reason.contains(why), "{:?}", r.skipped);
        }
    }

    #[test]
    fn a_classifier_softmax_is_not_attention() {
        let mut n = Net::default();
        let w = n.random(8 * 3, 1.0);
        n.init("w", &[8, 3], &w);
        n.node("MatMul", &["x", "w"], &["l"], vec![]);
        n.node("Softmax", &["l"], &["y"], vec![int("axis", -1)]);
        let bytes = n.model(&[("x", &[1, 8])], &[("y", &[1, 3])]);
        let r = rewrite_attention(&bytes, &ImportOptions::default(), Fwsa::On).unwrap();
        assert!(r.blocks.is_empty() && r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.model, bytes);
    }
}
