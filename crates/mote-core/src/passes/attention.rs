//! Fusion of int8 self-attention blocks into one [`QAttention`] op, and the choice of its schedule.
//!
//! The pass matches the layer-by-layer int8 form of a block: `QLinear` projections of one `x [S, E]` split into
//! heads, `QMatMul` scores, `QSoftmax`, `QMatMul` with the values, the heads merged side by side and the output
//! `QLinear`; keys `Transpose(x, [1,0])` and values `x` when the weights were fused (FWSA). The head splits and
//! merges may be any chain of reshapes, transposes and constant gathers: the pass follows an index tensor through
//! the chain and accepts it when every element lands where the canonical form (`Reshape [S,H,P]` + `Transpose`,
//! see `mote_onnx::attention`) puts it. So onnxruntime's QDQ form matches too: one `[3E, E]` input projection split
//! three ways by gathers, and a `QLut` scaling queries and keys (a table of the fused kernel). Requantizations
//! must be `HighMul` (the packed kernels').
//!
//! Deeploy's integer form (`I64` tensors, `x [1, S, E]`) matches likewise: projections `MatMul` (constant `[E, n]`
//! weights) [+ `Add` of a bias] + `RequantShift` into int8, products `MatMul` + `RequantShift` (per tensor), and
//! `ITAMax` or `iSoftmax`; the fused op keeps the `I64` input and output and runs the same integers (its weights
//! become int8 `[n, E]` constants). Every tensor a block makes must be read inside it only.
use super::prune;
use crate::ops::attention::{AttentionSoftmax, BlockRequant, QAttention, QProjection, ShiftParams};
use crate::ops::deeploy::{ISoftmax, ItaMax, RequantShift};
use crate::ops::elementwise::{Binary, BinaryKind};
use crate::ops::matmul::MatMul;
use crate::ops::quant::{AccRescale, QLinear, QLut, QMatMul, QSoftmax};
use crate::ops::shape::{Gather, Reshape, Transpose};
use crate::{Graph, Node, NodeId, Result, Tensor, TensorId};
use mote_kernels::attention::{MhsaSchedule, MhsaScratch, MhsaShape};
use mote_kernels::packed::PackedLayout;
use mote_kernels::softmax::ISoftmaxParams;

/// How [`fuse_attention`] schedules a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulePolicy {
    /// Bytes the block's scratch may take (e.g. the board's SRAM).
    pub budget_bytes: usize,
    /// Query rows per block, instead of the planner's choice.
    pub block_rows: Option<usize>,
}

/// One fused block, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedAttention {
    /// Name of the block's output tensor.
    pub output: String,
    /// Its sizes.
    pub shape: MhsaShape,
    /// The schedule chosen.
    pub schedule: MhsaSchedule,
    /// Its scratch.
    pub scratch: MhsaScratch,
    /// The cost model's instruction estimate (Cortex-M4 DSP kernels).
    pub estimated_instructions: u64,
}

/// Cost model of the Dsp16 kernels, in instructions: per call of a packed product, per multiply-accumulate (the
/// 2×2 SMLAD tile runs ~1.35 MACs per instruction; a single-row block computes its row twice), per softmax element
/// and row, per packed key/value element; for streamed keys and values, per element of the activation panels each
/// chunk's products widen again (measured on ICCT's 64 × 192 head) and per row of a chunk's product copied into
/// place.
const PER_CALL: u64 = 120;
const PER_MAC_X100: u64 = 74;
const PER_SOFTMAX_ELEMENT: u64 = 18;
const PER_SOFTMAX_ROW: u64 = 160;
const PER_PACKED: u64 = 8;
const PER_PANEL_ELEMENT: u64 = 5;
const PER_COPIED_ROW: u64 = 30;

/// Instruction estimate of `schedule` on `s` (see the cost constants).
pub fn estimate_instructions(s: &MhsaShape, schedule: MhsaSchedule) -> u64 {
    let u = |v: usize| v as u64;
    // Rows computed: row pairs of each block (a block's odd last row is computed twice).
    let rows = |m: usize| u((m.div_ceil(2) * 2).max(2));
    let blocked = |m: usize, b: usize| u(m / b) * rows(b) + if m.is_multiple_of(b) { 0 } else { rows(m % b) };
    let b = schedule.block_rows().min(s.seq).max(1);
    let blocks = s.seq.div_ceil(b);
    let block_rows = blocked(s.seq, b);
    // Streamed keys and values: products per key and per value chunk, key rows computed per chunk, the panels
    // of the queries (per key chunk), of x and the probabilities (per value chunk) widened again, copies.
    let (k_calls, v_calls, k_rows, streaming) = match schedule {
        MhsaSchedule::StreamedKv { key_rows, value_cols } => {
            let (kr, vc) = (key_rows.clamp(1, s.seq), value_cols.clamp(1, s.v_dim));
            let (kn, vn) = (s.seq.div_ceil(kr), s.v_dim.div_ceil(vc));
            let panels = u(kn - 1) * u(s.seq * s.qk_dim) + u(vn - 1) * u(s.seq * (s.embed + s.seq));
            (u(kn), u(vn), blocked(s.seq, kr), panels * PER_PANEL_ELEMENT + u(s.seq) * u(kn + vn) * PER_COPIED_ROW)
        }
        _ => (1, 1, rows(s.seq), 0),
    };
    let h = u(s.heads);
    let mac = |rows: u64, k: usize, n: usize| rows * u(k) * u(n) * PER_MAC_X100 / 100;
    let per_head =
        mac(block_rows, s.embed, s.qk_dim) + mac(block_rows, s.qk_dim, s.seq) + mac(block_rows, s.seq, s.v_dim);
    let calls_per_head = 3 * u(blocks) + (k_calls - 1) + (v_calls - 1);
    let projections = u64::from(s.project_k) * (mac(k_rows, s.embed, s.qk_dim) + k_calls * PER_CALL)
        + u64::from(s.project_v) * (mac(rows(s.seq), s.embed, s.v_dim) + v_calls * PER_CALL);
    let heads_packed = if s.project_k || s.project_v { h } else { 1 };
    let packing = heads_packed * PER_PACKED * u(s.seq) * u(s.qk_dim + s.v_dim);
    let softmax = u(s.seq) * (u(s.seq) * PER_SOFTMAX_ELEMENT + PER_SOFTMAX_ROW);
    let out = match schedule {
        MhsaSchedule::RowMajor { .. } => mac(block_rows, s.heads * s.v_dim, s.out_dim) + u(blocks) * PER_CALL,
        _ => mac(rows(s.seq), s.heads * s.v_dim, s.out_dim) + PER_CALL,
    };
    h * (per_head + calls_per_head * PER_CALL + projections + softmax + streaming) + packing + out
}

/// Estimated instructions the planner gives up for less scratch, in percent: only per-call overheads depend on the
/// block size, and the cost model is not more accurate than that (EEGFormer: 2-row blocks are estimated at 2.6%
/// more than one 81-row block and need 30 KB less; measured, 5.5% more). Summing the output projection head by
/// head costs no more per row block than concatenating the heads (EEGFormer, measured: going from 4-row to 2-row
/// blocks adds 7.0 K instructions per block; 8.2 K with the heads concatenated).
pub const SLACK_PERCENT: u64 = 3;

/// The schedule for `s`: among those whose scratch fits the budget and whose estimated instructions are within
/// [`SLACK_PERCENT`] of the fewest, the one with the least scratch. The candidates: head- and row-major in row
/// blocks of powers of two (or `policy.block_rows`), and, unless the rows are forced, keys and values streamed in
/// chunks of powers of two (multiples of 4 for values). `None` when nothing fits.
pub fn plan_schedule(s: &MhsaShape, policy: &SchedulePolicy) -> Option<(MhsaSchedule, MhsaScratch, u64)> {
    let mut rows: Vec<usize> = match policy.block_rows {
        Some(b) => vec![b],
        None => (0..).map(|i| 1usize << i).take_while(|&b| b < s.seq).chain([s.seq]).collect(),
    };
    rows.dedup();
    // Streamed keys and values (when the block rows are the planner's to choose): key chunks of powers of two,
    // value chunks of multiples of 4 up to all columns.
    let powers = |limit: usize| (0..).map(|i| 1usize << i).take_while(move |&b| b < limit).chain([limit]);
    let streamed = policy.block_rows.is_none().then(|| {
        powers(s.seq).flat_map(|kr| powers(s.v_dim).filter(|&vc| vc % 4 == 0 || vc == s.v_dim).map(move |vc| (kr, vc)))
    });
    let candidates: Vec<(MhsaSchedule, MhsaScratch, u64)> = rows
        .iter()
        .flat_map(|&b| [MhsaSchedule::HeadMajor { block_rows: b }, MhsaSchedule::RowMajor { block_rows: b }])
        .chain(
            streamed
                .into_iter()
                .flatten()
                .map(|(key_rows, value_cols)| MhsaSchedule::StreamedKv { key_rows, value_cols }),
        )
        .filter_map(|sch| {
            let scratch = s.scratch(sch)?;
            (4 * scratch.total_words() <= policy.budget_bytes).then(|| (sch, scratch, estimate_instructions(s, sch)))
        })
        .collect();
    let best = candidates.iter().map(|c| c.2).min()?;
    candidates
        .into_iter()
        .filter(|c| c.2 * 100 <= best * (100 + SLACK_PERCENT))
        .min_by_key(|c| (4 * c.1.total_words(), c.2))
}

/// A linear layer with constant weights the block reads: mote's `QLinear`, or Deeploy's `MatMul` (weights
/// `[k, n]`) [+ `Add` of a constant bias] + `RequantShift`. Its nodes in order; the last writes its output.
#[derive(Clone, Debug)]
struct Linear(Vec<NodeId>);

impl Linear {
    /// The node writing the layer's output.
    fn end(&self) -> NodeId {
        *self.0.last().expect("a linear layer has nodes")
    }

    /// The layer's input.
    fn input(&self, g: &Graph) -> TensorId {
        g.nodes[self.0[0]].inputs[0]
    }
}

/// A product of two activations: mote's `QMatMul`, or Deeploy's `MatMul` + `RequantShift`. Its nodes in order.
#[derive(Clone, Debug)]
struct Product(Vec<NodeId>);

impl Product {
    /// The node multiplying (its inputs are the operands).
    fn matmul(&self) -> NodeId {
        self.0[0]
    }

    /// The node writing the product's output.
    fn end(&self) -> NodeId {
        *self.0.last().expect("a product has nodes")
    }
}

/// Where a block's queries, keys or values come from: `heads · dim` output columns of a linear layer from `cols`
/// on, through layout ops (and at most one `QLut`).
struct Source {
    linear: Linear,
    cols: usize,
    dim: usize,
    table: Option<NodeId>,
}

/// Everything a match found.
struct Block {
    x: TensorId,
    heads: usize,
    qk_dim: usize,
    v_dim: usize,
    q: Source,
    k: Option<Source>,
    v: Option<Source>,
    scores: Product,
    softmax: NodeId,
    av: Product,
    out: Linear,
    nodes: Vec<NodeId>,
}

/// Whether `n` only moves elements: reshapes, transposes, gathers at constant indices.
fn is_layout(n: &Node) -> bool {
    let op = n.op.as_any();
    op.is::<Reshape>() || op.is::<Transpose>() || op.is::<Gather>()
}

/// Whether `n` is a softmax the fused kernel runs: mote's, or Deeploy's `ITAMax` or `iSoftmax`.
fn is_softmax(n: &Node) -> bool {
    let op = n.op.as_any();
    op.is::<QSoftmax>() || op.is::<ItaMax>() || op.is::<ISoftmax>()
}

/// The last two sizes of `shape` when every other one is 1 (`[1.., rows, cols]`).
fn matrix(shape: &[usize]) -> Option<(usize, usize)> {
    let r = shape.len().checked_sub(2)?;
    shape[..r].iter().all(|&d| d == 1).then(|| (shape[r], shape[r + 1]))
}

/// The flat indices `0..n` as an `i32` tensor of `shape`, to follow where layout ops move each element.
fn iota(shape: &[usize]) -> Option<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|i| i32::try_from(i).ok()).collect::<Option<Vec<i32>>>()?).ok()
}

struct Matcher<'g> {
    g: &'g Graph,
    producer: Vec<Option<NodeId>>,
    consumers: Vec<Vec<NodeId>>,
}

impl Matcher<'_> {
    fn is_const(&self, t: TensorId) -> bool {
        self.g.values[t].konst.is_some()
    }

    /// The only reader of `t`, if it has exactly one.
    fn only_reader(&self, t: TensorId) -> Option<NodeId> {
        match self.consumers[t].as_slice() {
            &[n] => Some(n),
            _ => None,
        }
    }

    /// The linear layer whose output node is `n`.
    fn linear_ending_at(&self, n: NodeId) -> Option<Linear> {
        let g = self.g;
        let op = g.nodes[n].op.as_any();
        if op.is::<QLinear>() {
            return Some(Linear(vec![n]));
        }
        op.is::<RequantShift>().then_some(())?;
        let mut nodes = vec![n];
        let mut m = self.producer[g.nodes[n].inputs[0]]?;
        if let Some(b) = g.nodes[m].op.as_any().downcast_ref::<Binary>() {
            let [a, c] = g.nodes[m].inputs[..] else { return None };
            let acc = if self.is_const(c) { a } else { c };
            (b.kind == BinaryKind::Add && self.is_const(a) != self.is_const(c)).then_some(())?;
            nodes.push(m);
            m = self.producer[acc]?;
        }
        let mm = &g.nodes[m];
        (mm.op.as_any().is::<MatMul>() && !self.is_const(mm.inputs[0]) && self.is_const(mm.inputs[1])).then_some(())?;
        nodes.push(m);
        nodes.reverse();
        Some(Linear(nodes))
    }

    /// The linear layer that `n` starts by reading `t` as its input.
    fn linear_reading(&self, n: NodeId, t: TensorId) -> Option<Linear> {
        let g = self.g;
        (g.nodes[n].inputs[0] == t).then_some(())?;
        let mut end = n;
        // Deeploy's form: the only readers of the MatMul (and the Add) lead to the `RequantShift`.
        while !g.nodes[end].op.as_any().is::<QLinear>() && !g.nodes[end].op.as_any().is::<RequantShift>() {
            end = self.only_reader(g.nodes[end].outputs[0])?;
        }
        let linear = self.linear_ending_at(end)?;
        (linear.0[0] == n).then_some(linear)
    }

    /// The product of two activations whose output is `t`.
    fn product_writing(&self, t: TensorId) -> Option<Product> {
        let g = self.g;
        let n = self.producer[t]?;
        if g.nodes[n].op.as_any().is::<QMatMul>() {
            return Some(Product(vec![n]));
        }
        g.nodes[n].op.as_any().is::<RequantShift>().then_some(())?;
        let mm = self.producer[g.nodes[n].inputs[0]]?;
        let activations = g.nodes[mm].inputs.iter().all(|&i| !self.is_const(i));
        (g.nodes[mm].op.as_any().is::<MatMul>() && activations).then_some(Product(vec![mm, n]))
    }

    /// The product of two activations that `n` starts by reading `t` as its first operand.
    fn product_reading(&self, n: NodeId, t: TensorId) -> Option<Product> {
        let g = self.g;
        (g.nodes[n].inputs[0] == t).then_some(())?;
        if g.nodes[n].op.as_any().is::<MatMul>() {
            let rq = self.only_reader(g.nodes[n].outputs[0])?;
            return self.product_writing(g.nodes[rq].outputs[0]).filter(|p| p.matmul() == n);
        }
        self.product_writing(g.nodes[n].outputs[0]).filter(|p| p.matmul() == n)
    }

    /// `t` after the layout nodes `chain` (in order; their other inputs constants), or `None` if one fails.
    fn follow(&self, mut t: Tensor, chain: &[NodeId]) -> Option<Tensor> {
        for &n in chain {
            let node = &self.g.nodes[n];
            let consts: Option<Vec<&Tensor>> =
                node.inputs[1..].iter().map(|&i| self.g.values[i].konst.as_deref()).collect();
            let mut inputs = vec![&t];
            inputs.extend(consts?);
            t = node.op.eval(&inputs).ok()?.into_iter().next()?;
        }
        Some(t)
    }

    /// The source of a head-split operand `t`: `[.., heads, seq, dim]` (`[.., heads, dim, seq]` for transposed
    /// keys) whose element `(h, s, p)` is column `cols + h·dim + p` of row `s` of a linear layer's output, reached
    /// through layout ops and at most one element-wise `QLut`. Returns it, its head count and its nodes.
    fn source(&self, t: TensorId, transposed: bool) -> Option<(Source, usize, Vec<NodeId>)> {
        let g = self.g;
        let (mut chain, mut table, mut cur) = (Vec::new(), None, t);
        let linear = loop {
            let n = self.producer[cur]?;
            let op = g.nodes[n].op.as_any();
            if let Some(linear) = self.linear_ending_at(n) {
                break linear;
            } else if op.is::<QLut>() && table.is_none() {
                table = Some(n);
            } else if !is_layout(&g.nodes[n]) {
                return None;
            } else {
                chain.push(n);
            }
            cur = g.nodes[n].inputs[0];
        };
        chain.reverse();
        let (seq, width) = matrix(&g.values[cur].ty.shape)?;
        let r = self.follow(iota(&g.values[cur].ty.shape)?, &chain)?;
        let (shape, at) = (r.shape(), r.to_i64_vec());
        let dim = *shape.get(shape.len().checked_sub(if transposed { 2 } else { 1 })?)?;
        let heads = at.len().checked_div(seq * dim)?;
        let cols = usize::try_from(*at.first()?).ok()?;
        let (s_last, s_mid) = if transposed { (*shape.last()?, dim) } else { (dim, seq) };
        let fits = heads > 0 && heads * seq * dim == at.len() && cols + heads * dim <= width;
        let exact = fits
            && s_last * s_mid == seq * dim
            && at.iter().enumerate().all(|(i, &v)| {
                let (h, a, b) = (i / (seq * dim), (i / s_last) % s_mid, i % s_last);
                let (s, p) = if transposed { (b, a) } else { (a, b) };
                v == (s * width + cols + h * dim + p) as i64
            });
        exact.then_some(())?;
        let mut nodes = chain;
        nodes.extend(linear.0.iter().copied().chain(table));
        Some((Source { linear, cols, dim, table }, heads, nodes))
    }

    /// The output projection of head outputs `t` (`[.., heads, seq, v_dim]`): a linear layer reading them through
    /// layout ops as `[seq, heads·v_dim]`, the heads side by side. Returns it and the layout nodes.
    fn concat(&self, t: TensorId, heads: usize) -> Option<(Linear, Vec<NodeId>)> {
        let g = self.g;
        let (mut chain, mut cur) = (Vec::new(), t);
        let out = loop {
            let n = self.only_reader(cur)?;
            if let Some(linear) = self.linear_reading(n, cur) {
                break linear;
            }
            (is_layout(&g.nodes[n]) && g.nodes[n].inputs[0] == cur).then_some(())?;
            chain.push(n);
            cur = g.nodes[n].outputs[0];
        };
        let shape = &g.values[t].ty.shape;
        let (dim, seq) = (*shape.last()?, *shape.get(shape.len().checked_sub(2)?)?);
        let r = self.follow(iota(shape)?, &chain)?;
        let at = r.to_i64_vec();
        let exact = matrix(r.shape()) == Some((seq, heads * dim))
            && at.iter().enumerate().all(|(i, &v)| {
                let (s, h, p) = (i / (heads * dim), (i / dim) % heads, i % dim);
                v == ((h * seq + s) * dim + p) as i64
            });
        exact.then_some((out, chain))
    }

    fn block(&self, sm: NodeId) -> Option<Block> {
        let g = self.g;
        let sm_node = &g.nodes[sm];
        let scores = self.product_writing(sm_node.inputs[0])?;
        let (a, b) = (g.nodes[scores.matmul()].inputs[0], g.nodes[scores.matmul()].inputs[1]);
        let (q, heads, q_nodes) = self.source(a, false)?;
        let x = q.linear.input(g);
        let mut nodes = vec![sm];
        nodes.extend(scores.0.iter().copied().chain(q_nodes));
        let k = match self.source(b, true) {
            Some((k, hk, k_nodes)) => {
                (hk == heads && k.dim == q.dim && k.linear.input(g) == x).then_some(())?;
                nodes.extend(k_nodes);
                Some(k)
            }
            None => {
                let tn = self.producer[b]?;
                let tr = g.nodes[tn].op.as_any().downcast_ref::<Transpose>()?;
                (tr.perm == [1, 0] && g.nodes[tn].inputs[0] == x).then_some(())?;
                nodes.push(tn);
                None
            }
        };
        let probs = sm_node.outputs[0];
        let av = self.product_reading(self.only_reader(probs)?, probs)?;
        let vt = g.nodes[av.matmul()].inputs[1];
        let (v, v_dim) = if vt == x {
            (None, g.values[x].ty.shape.last().copied()?)
        } else {
            let (v, hv, v_nodes) = self.source(vt, false)?;
            (hv == heads && v.linear.input(g) == x).then_some(())?;
            nodes.extend(v_nodes);
            let d = v.dim;
            (Some(v), d)
        };
        nodes.extend(av.0.iter().copied());
        let (out, o_nodes) = self.concat(g.nodes[av.end()].outputs[0], heads)?;
        nodes.extend(o_nodes.into_iter().chain(out.0.iter().copied()));
        nodes.sort_unstable();
        nodes.dedup();
        // Every tensor the block makes is read inside it only (the output projection's result aside).
        let end = out.end();
        let closed = nodes
            .iter()
            .filter(|&&n| n != end)
            .flat_map(|&n| &g.nodes[n].outputs)
            .all(|&t| !g.outputs.contains(&t) && self.consumers[t].iter().all(|c| nodes.contains(c)));
        (closed && matrix(&g.values[x].ty.shape).is_some()).then_some(())?;
        let qk_dim = q.dim;
        Some(Block { x, heads, qk_dim, v_dim, q, k, v, scores, softmax: sm, av, out, nodes })
    }
}

/// A constant input of `n` as integers.
fn konst(g: &Graph, n: NodeId, input: usize) -> Option<Vec<i64>> {
    g.values[*g.nodes[n].inputs.get(input)?].konst.as_ref().map(|c| c.to_i64_vec())
}

/// Narrows integers to `i32`, or `None` if one does not fit.
fn int32s(v: &[i64]) -> Option<Vec<i32>> {
    v.iter().map(|&x| i32::try_from(x).ok()).collect()
}

/// A Deeploy `RequantShift` node as the fused kernel's requantization, channels `cols..cols + width` of its `n`
/// (per tensor or per channel along the last axis), when its bounds lie inside int8.
fn shift_params(g: &Graph, n: NodeId, cols: usize, width: usize) -> Option<ShiftParams> {
    let rq = g.nodes[n].op.as_any().downcast_ref::<RequantShift>()?;
    let channels = *g.values[g.nodes[n].outputs[0]].ty.shape.last()?;
    let part = |v: Vec<i64>| -> Option<Vec<i32>> {
        match v.len() {
            1 => int32s(&v),
            len if len == channels => int32s(v.get(cols..cols + width)?),
            _ => None,
        }
    };
    // Per channel means along the last axis: a parameter whose size is the channel count but whose shape puts
    // it on another axis is refused.
    let last_axis = |i: usize| {
        let s = &g.values[g.nodes[n].inputs[i]].ty.shape;
        s.iter().rev().skip(1).all(|&d| d == 1)
    };
    (last_axis(1) && last_axis(2)).then_some(())?;
    let (mul, add) = (part(konst(g, n, 1)?)?, part(konst(g, n, 2)?)?);
    let half = i64::from(rq.n_levels / 2);
    let (lo, hi) = if rq.signed { (-half, half - 1) } else { (0, i64::from(rq.n_levels) - 1) };
    let (lo, hi) = (i32::try_from(lo).ok()?, i32::try_from(hi).ok()?);
    (lo >= -128 && hi <= 127).then_some(ShiftParams { mul, add, shift: rq.div_log2, lo, hi })
}

/// The parameters of `width` output channels of a linear layer from `cols` on: a `QLinear` with a `HighMul`
/// rescale, or Deeploy's layer with int8 weights, an `i32` bias and a `RequantShift` into int8.
fn projection(g: &Graph, l: &Linear, cols: usize, width: usize) -> Option<QProjection> {
    let end = &g.nodes[l.end()];
    if let Some(q) = end.op.as_any().downcast_ref::<QLinear>() {
        let AccRescale::HighMul(mul) = &q.rescale else { return None };
        let mul = if mul.len() == 1 { mul.clone() } else { mul.get(cols..cols + width)?.to_vec() };
        let requant = BlockRequant::HighMul { mul, zero_point: q.y_zero_point };
        return Some(QProjection { requant, x_zero_point: q.x_zero_point, table: None });
    }
    let weights_fit = konst(g, l.0[0], 1)?.iter().all(|&w| i8::try_from(w).is_ok());
    let channels = *g.values[end.outputs[0]].ty.shape.last()?;
    let bias_fits =
        l.0.len() < 3 || bias_of(g, l).is_some_and(|b| (b.len() == 1 || b.len() == channels) && int32s(&b).is_some());
    (weights_fit && bias_fits).then_some(())?;
    let requant = BlockRequant::Shift(shift_params(g, l.end(), cols, width)?);
    Some(QProjection { requant, x_zero_point: 0, table: None })
}

/// The constant bias of a Deeploy linear layer with an `Add` (one value, or one per element of the last axis).
fn bias_of(g: &Graph, l: &Linear) -> Option<Vec<i64>> {
    let add = *l.0.get(1).filter(|_| l.0.len() == 3)?;
    let t = *g.nodes[add].inputs.iter().find(|&&t| g.values[t].konst.is_some())?;
    g.values[t].ty.shape.iter().rev().skip(1).all(|&d| d == 1).then_some(())?;
    g.values[t].konst.as_ref().map(|c| c.to_i64_vec())
}

/// A source's projection, its table (with the zero point `zp` its reader gives the table's results) or, without
/// one, `None` unless the reader's zero point `zp` is the projection's.
fn source_projection(g: &Graph, s: &Source, heads: usize, zp: i32) -> Option<QProjection> {
    let p = projection(g, &s.linear, s.cols, heads * s.dim)?;
    match s.table {
        Some(t) => {
            let table = g.nodes[t].op.as_any().downcast_ref::<QLut>()?.table.clone();
            Some(QProjection { table: Some((table, zp)), ..p })
        }
        None => (p.requant.zero_point() == zp).then_some(p),
    }
}

/// A product's per-tensor requantization and its operands' zero points (0 for Deeploy's true-value integers).
fn product(g: &Graph, p: &Product) -> Option<(BlockRequant, i32, i32)> {
    let end = &g.nodes[p.end()];
    if let Some(q) = end.op.as_any().downcast_ref::<QMatMul>() {
        let AccRescale::HighMul(mul) = &q.rescale else { return None };
        let &[_] = &mul[..] else { return None };
        let rq = BlockRequant::HighMul { mul: mul.clone(), zero_point: q.y_zero_point };
        return Some((rq, q.a_zero_point, q.b_zero_point));
    }
    let params = shift_params(g, p.end(), 0, 1)?;
    (params.mul.len() == 1 && params.add.len() == 1).then_some((BlockRequant::Shift(params), 0, 0))
}

/// The softmax node `n` as the fused kernel runs it, and the zero point its readers see.
fn softmax_of(n: &Node) -> Option<(AttentionSoftmax, i32)> {
    let op = n.op.as_any();
    if let Some(s) = op.downcast_ref::<QSoftmax>() {
        return Some((AttentionSoftmax::I8(s.clone()), s.out_zero_point));
    }
    if let Some(s) = op.downcast_ref::<ItaMax>() {
        return (s.n_levels == 256).then_some((AttentionSoftmax::ItaMax, 0));
    }
    let s = op.downcast_ref::<ISoftmax>()?;
    let p = ISoftmaxParams {
        coeff_a: s.coeff_a,
        coeff_b: s.coeff_b,
        coeff_c: s.coeff_c,
        log2: s.log2,
        n_levels: s.n_levels,
    };
    (s.n_levels <= 256).then_some((AttentionSoftmax::ISoftmax(p), 0))
}

/// The op of a matched block, when its parameters fit the fused kernel.
fn attention_op(g: &Graph, b: &Block) -> Option<QAttention> {
    let (scores, za, zb) = product(g, &b.scores)?;
    let (av, zp, zv) = product(g, &b.av)?;
    let h = b.heads;
    let q = source_projection(g, &b.q, h, za)?;
    let k = b.k.as_ref().map(|s| source_projection(g, s, h, zb)).map_or(Some(None), |p| p.map(Some))?;
    let v = b.v.as_ref().map(|s| source_projection(g, s, h, zv)).map_or(Some(None), |p| p.map(Some))?;
    let out_in = g.nodes[b.out.0[0]].inputs[0];
    let out_cols = *g.values[out_in].ty.shape.last()?;
    let out = projection(g, &b.out, 0, *g.values[g.nodes[b.out.end()].outputs[0]].ty.shape.last()?)?;
    (out_cols == h * b.v_dim).then_some(())?;
    let (softmax, prob_zp) = softmax_of(&g.nodes[b.softmax])?;
    let zx = q.x_zero_point;
    let consistent = (k.is_some() || zb == zx)
        && zp == prob_zp
        && (v.is_some() || zv == zx)
        && out.x_zero_point == av.zero_point()
        && [&k, &v].iter().all(|p| p.as_ref().is_none_or(|p| p.x_zero_point == zx));
    consistent.then_some(QAttention {
        heads: b.heads,
        qk_dim: b.qk_dim,
        v_dim: b.v_dim,
        q,
        k,
        v,
        scores,
        softmax,
        av,
        out,
        schedule: MhsaSchedule::HeadMajor { block_rows: 1 },
    })
}

/// The int8 weights `[n, k]` and int32 bias `[n]` of output channels `cols..cols + n` of linear layer `l`: a
/// `QLinear`'s own inputs when that is all of them (a zero bias added when it has none), else constants sliced
/// from them (transposed from Deeploy's `[k, n]`).
fn weights_of(g: &mut Graph, l: &Linear, cols: usize, n: usize) -> Result<(TensorId, TensorId)> {
    let first = l.0[0];
    let w = g.nodes[first].inputs[1];
    let deeploy = g.nodes[first].op.as_any().is::<MatMul>();
    let (rows, k) = match (deeploy, &g.values[w].ty.shape[..]) {
        (false, &[rows, k]) => (rows, k),
        (true, s) => matrix(s).map(|(k, rows)| (rows, k)).ok_or_else(|| bad_weights(g, first))?,
        _ => return Err(bad_weights(g, first)),
    };
    let bias = if deeploy { None } else { g.nodes[first].inputs.get(2).copied() };
    let whole = cols == 0 && n == rows && !deeploy;
    if let (true, Some(b)) = (whole, bias) {
        return Ok((w, b));
    }
    let name = g.nodes[first].name.clone();
    let wd = konst(g, first, 1).ok_or_else(|| bad_weights(g, first))?;
    // A `QLinear`'s bias is its third input, a Deeploy layer's the constant of its `Add`.
    let bd = match bias {
        Some(_) => konst(g, first, 2).ok_or_else(|| bad_weights(g, first))?,
        None => (if deeploy { bias_of(g, l) } else { None }).unwrap_or_else(|| vec![0; rows]),
    };
    let at = |j: usize, i: usize| if deeploy { i * rows + j } else { j * k + i };
    let wt = (cols..cols + n).flat_map(|j| (0..k).map(move |i| at(j, i))).map(|i| wd[i] as i8).collect();
    let bt = bd.iter().cycle().skip(cols).take(n).map(|&v| v as i32).collect();
    let w =
        if whole { w } else { g.add_const(format!("{name}/w[{cols}..{}]", cols + n), Tensor::from_vec(&[n, k], wt)?) };
    let b = g.add_const(format!("{name}/bias[{cols}..{}]", cols + n), Tensor::from_vec(&[n], bt)?);
    Ok((w, b))
}

fn bad_weights(g: &Graph, n: NodeId) -> crate::Error {
    crate::Error::Invalid(format!(
        "{}: the weights of a fused attention projection are not a constant matrix",
        g.nodes[n].name
    ))
}

/// Replaces every matched attention block of the int8 graph `g` by one [`QAttention`] scheduled by `policy`, and
/// returns what was fused. Blocks whose parameters the fused kernel cannot run, or with no schedule within the
/// budget, stay layer by layer.
pub fn fuse_attention(g: &mut Graph, policy: &SchedulePolicy) -> Result<Vec<FusedAttention>> {
    let mut fused = Vec::new();
    loop {
        let m = Matcher { g, producer: g.producers(), consumers: g.consumers() };
        let found = (0..g.nodes.len()).filter(|&n| is_softmax(&g.nodes[n])).find_map(|sm| {
            let b = m.block(sm)?;
            let op = attention_op(g, &b)?;
            let x = &g.values[b.x].ty.shape;
            let out_dim = *g.values[g.nodes[b.out.end()].outputs[0]].ty.shape.last()?;
            let shape = op.shape(x, out_dim, PackedLayout::Dsp16, PackedLayout::Dsp16);
            let (schedule, scratch, est) = plan_schedule(&shape, policy)?;
            Some((b, QAttention { schedule, ..op }, shape, scratch, est))
        });
        let Some((b, op, shape, scratch, estimated_instructions)) = found else { break };
        let mut inputs = vec![b.x];
        let end = b.out.end();
        let out_n = shape.out_dim;
        let parts = [Some(&b.q), b.k.as_ref(), b.v.as_ref()].into_iter().flatten();
        let ranges: Vec<(&Linear, usize, usize)> =
            parts.map(|s| (&s.linear, s.cols, b.heads * s.dim)).chain([(&b.out, 0, out_n)]).collect();
        for (l, cols, n) in ranges {
            let (w, bias) = weights_of(g, l, cols, n)?;
            inputs.extend([w, bias]);
        }
        let y = g.nodes[end].outputs[0];
        let name = g.nodes[end].name.clone();
        let schedule = op.schedule;
        g.infer_node(&name, &op, &inputs)?;
        g.nodes[end] = Node { name, op: Box::new(op), inputs, outputs: vec![y] };
        let dead: Vec<NodeId> = b.nodes.iter().copied().filter(|&n| n != end).collect();
        let mut i = 0;
        g.nodes.retain(|_| {
            i += 1;
            !dead.contains(&(i - 1))
        });
        fused.push(FusedAttention {
            output: g.values[y].name.clone(),
            shape,
            schedule,
            scratch,
            estimated_instructions,
        });
    }
    prune(g);
    Ok(fused)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DType, TensorType};

    /// A deterministic generator of test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, lo: i32, hi: i32) -> i32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + ((self.0 >> 33) % (hi - lo + 1) as u64) as i32
        }

        fn i8s(&mut self, n: usize) -> Vec<i8> {
            (0..n).map(|_| self.next(-127, 127) as i8).collect()
        }
    }

    /// The layer-by-layer int8 graph of a block `x [s, e]`, `h` heads of `p` (keys and values `x` itself when
    /// `fwsa`, then `p = e`), optionally causal; returns it with its input.
    fn block_graph(s: usize, e: usize, h: usize, p: usize, fwsa: bool, causal: bool, seed: u64) -> (Graph, Tensor) {
        let mut r = Rng(seed);
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I8, vec![s, e]), None);
        g.inputs.push(x);
        let zx = r.next(-5, 5);
        let linear = |g: &mut Graph, r: &mut Rng, name: &str, input: TensorId, zi: i32, n: usize, k: usize| {
            let w = g.add_const(format!("{name}.w"), Tensor::from_vec(&[n, k], r.i8s(n * k)).unwrap());
            let bias: Vec<i32> = (0..n).map(|_| r.next(-3000, 3000)).collect();
            let b = g.add_const(format!("{name}.b"), Tensor::from_vec(&[n], bias).unwrap());
            let mul = (0..n).map(|_| r.next(1 << 22, 1 << 24)).collect();
            let op = QLinear { x_zero_point: zi, rescale: AccRescale::HighMul(mul), y_zero_point: r.next(-5, 5) };
            let zy = op.y_zero_point;
            (g.add_node(name, Box::new(op), vec![input, w, b], &[format!("{name}.y")]).unwrap()[0], zy)
        };
        let split = |g: &mut Graph, t: TensorId, perm: Vec<usize>, name: &str| {
            let r = Reshape { shape: vec![s, h, p], label: "Reshape" };
            let t = g.add_node(format!("{name}.r"), Box::new(r), vec![t], &[format!("{name}.r")]).unwrap()[0];
            g.add_node(format!("{name}.t"), Box::new(Transpose { perm }), vec![t], &[format!("{name}.t")]).unwrap()[0]
        };
        let (q, zq) = linear(&mut g, &mut r, "q", x, zx, h * p, e);
        let qh = split(&mut g, q, vec![1, 0, 2], "qh");
        let (kt, zk) = if fwsa {
            let t = g.add_node("kt", Box::new(Transpose { perm: vec![1, 0] }), vec![x], &["kt".into()]).unwrap()[0];
            (t, zx)
        } else {
            let (k, zk) = linear(&mut g, &mut r, "k", x, zx, h * p, e);
            (split(&mut g, k, vec![1, 2, 0], "kt"), zk)
        };
        let mm = |zy: i32, za: i32, zb: i32, mul: i32| QMatMul {
            a_zero_point: za,
            b_zero_point: zb,
            rescale: AccRescale::HighMul(vec![mul]),
            y_zero_point: zy,
        };
        let scores = mm(r.next(-5, 5), zq, zk, r.next(1 << 21, 1 << 23));
        let sc = g.add_node("scores", Box::new(scores), vec![qh, kt], &["scores".into()]).unwrap()[0];
        let exp: Box<[u16; 256]> =
            Box::new(core::array::from_fn(|d| (32768.0 * (-0.05 * d as f64).exp()).round() as u16));
        let mask = causal.then(|| ((0..s * s).map(|i| i % s <= i / s).collect(), s));
        let sm = QSoftmax { exp, out_recip: 256 << 16, out_zero_point: -128, mask };
        let pr = g.add_node("softmax", Box::new(sm), vec![sc], &["probs".into()]).unwrap()[0];
        let (vh, zv) = if fwsa {
            (x, zx)
        } else {
            let (v, zv) = linear(&mut g, &mut r, "v", x, zx, h * p, e);
            (split(&mut g, v, vec![1, 0, 2], "vh"), zv)
        };
        let av = mm(r.next(-5, 5), -128, zv, r.next(1 << 20, 1 << 22));
        let zo = av.y_zero_point;
        let o = g.add_node("av", Box::new(av), vec![pr, vh], &["o".into()]).unwrap()[0];
        let o = g.add_node("ot", Box::new(Transpose { perm: vec![1, 0, 2] }), vec![o], &["ot".into()]).unwrap()[0];
        let flat = Reshape { shape: vec![s, h * p], label: "Reshape" };
        let o = g.add_node("oc", Box::new(flat), vec![o], &["oc".into()]).unwrap()[0];
        let (y, _) = linear(&mut g, &mut r, "out", o, zo, e, h * p);
        g.outputs.push(y);
        let input = Tensor::from_vec(&[s, e], r.i8s(s * e)).unwrap();
        (g, input)
    }

    /// The block as onnxruntime's QDQ export of `nn.MultiheadAttention` lowers to int8 ops: one `[3E, E]` input
    /// projection split by `Reshape [1,S,1,3,E]`, `Transpose`, a squeeze and three `Gather`s, each head split by
    /// `Reshape [S,1,H,P]` + `Transpose` (keys to `[1,H,P,S]`), queries and keys scaled by a `QLut` each, and the
    /// heads merged by `Transpose [2,0,1,3]` + `Reshape [S,E]`.
    fn ort_block_graph(s: usize, e: usize, h: usize, seed: u64) -> (Graph, Tensor) {
        let mut r = Rng(seed);
        let p = e / h;
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I8, vec![s, e]), None);
        g.inputs.push(x);
        let zx = r.next(-5, 5);
        let node = |g: &mut Graph, name: &str, op: Box<dyn crate::Op>, inputs: Vec<TensorId>| {
            g.add_node(name, op, inputs, &[name.to_string()]).unwrap()[0]
        };
        let linear = |g: &mut Graph, r: &mut Rng, name: &str, input: TensorId, zi: i32, n: usize, k: usize| {
            let w = g.add_const(format!("{name}.w"), Tensor::from_vec(&[n, k], r.i8s(n * k)).unwrap());
            let b = g.add_const(format!("{name}.b"), Tensor::from_vec(&[n], vec![r.next(-900, 900); n]).unwrap());
            let mul = (0..n).map(|_| r.next(1 << 22, 1 << 24)).collect();
            let op = QLinear { x_zero_point: zi, rescale: AccRescale::HighMul(mul), y_zero_point: r.next(-5, 5) };
            let zy = op.y_zero_point;
            (g.add_node(name, Box::new(op), vec![input, w, b], &[format!("{name}.y")]).unwrap()[0], zy)
        };
        let reshape = |shape: Vec<usize>| Box::new(Reshape { shape, label: "Reshape" });
        let (qkv, zqkv) = linear(&mut g, &mut r, "in_proj", x, zx, 3 * e, e);
        let t = node(&mut g, "r5", reshape(vec![1, s, 1, 3, e]), vec![qkv]);
        let t = node(&mut g, "t5", Box::new(Transpose { perm: vec![3, 1, 2, 0, 4] }), vec![t]);
        let t = node(&mut g, "squeeze", reshape(vec![3, s, 1, e]), vec![t]);
        let part = |g: &mut Graph, i: usize, perm: Vec<usize>| {
            let idx = g.add_const(format!("idx{i}"), Tensor::from_vec(&[], vec![i as i64]).unwrap());
            let y = node(g, &format!("gather{i}"), Box::new(Gather { axis: 0 }), vec![t, idx]);
            let y = node(g, &format!("heads{i}"), reshape(vec![s, 1, h, p]), vec![y]);
            node(g, &format!("perm{i}"), Box::new(Transpose { perm }), vec![y])
        };
        let (q, k, v) =
            (part(&mut g, 0, vec![1, 2, 0, 3]), part(&mut g, 1, vec![1, 2, 3, 0]), part(&mut g, 2, vec![1, 2, 0, 3]));
        let scale = |g: &mut Graph, r: &mut Rng, name: &str, t: TensorId| {
            let table: Box<[i8; 256]> =
                Box::new(core::array::from_fn(|i| ((i as i32 - 128) * 7 / 10 + r.next(-1, 1)) as i8));
            node(g, name, Box::new(QLut { table, label: "Mul".into() }), vec![t])
        };
        let (q, k) = (scale(&mut g, &mut r, "qscale", q), scale(&mut g, &mut r, "kscale", k));
        let mm = |zy: i32, za: i32, zb: i32, mul: i32| QMatMul {
            a_zero_point: za,
            b_zero_point: zb,
            rescale: AccRescale::HighMul(vec![mul]),
            y_zero_point: zy,
        };
        let scores = mm(r.next(-5, 5), r.next(-3, 3), r.next(-3, 3), r.next(1 << 21, 1 << 23));
        let sc = node(&mut g, "scores", Box::new(scores), vec![q, k]);
        let exp: Box<[u16; 256]> =
            Box::new(core::array::from_fn(|d| (32768.0 * (-0.05 * d as f64).exp()).round() as u16));
        let sm = QSoftmax { exp, out_recip: 256 << 16, out_zero_point: -128, mask: None };
        let pr = node(&mut g, "softmax", Box::new(sm), vec![sc]);
        let av = mm(r.next(-5, 5), -128, zqkv, r.next(1 << 20, 1 << 22));
        let zo = av.y_zero_point;
        let o = node(&mut g, "av", Box::new(av), vec![pr, v]);
        let o = node(&mut g, "merge", Box::new(Transpose { perm: vec![2, 0, 1, 3] }), vec![o]);
        let o = node(&mut g, "concat", reshape(vec![s, e]), vec![o]);
        let (y, _) = linear(&mut g, &mut r, "out", o, zo, e, e);
        g.outputs.push(y);
        let input = Tensor::from_vec(&[s, e], r.i8s(s * e)).unwrap();
        (g, input)
    }

    /// Deeploy's integer form of a block `x [1, s, e]` (`I64` tensors): `MatMul` projections (`[e, n]` weights)
    /// with a bias `Add` on queries and values, `RequantShift` per channel (`per_channel`) or per tensor, heads
    /// split by `Reshape` + `Transpose`, `MatMul` + `RequantShift` products around `ITAMax` (or `iSoftmax`), the
    /// heads merged by `Transpose` + `Reshape`, and the output projection.
    fn deeploy_block_graph(
        s: usize,
        e: usize,
        h: usize,
        p: usize,
        isoftmax: bool,
        per_channel: bool,
    ) -> (Graph, Tensor) {
        let mut r = Rng((s * 7 + e * 3 + h) as u64);
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I64, vec![1, s, e]), None);
        g.inputs.push(x);
        let node = |g: &mut Graph, name: &str, op: Box<dyn crate::Op>, inputs: Vec<TensorId>| {
            g.add_node(name, op, inputs, &[name.to_string()]).unwrap()[0]
        };
        let ints =
            |v: Vec<i32>, shape: &[usize]| Tensor::from_vec(shape, v.into_iter().map(i64::from).collect()).unwrap();
        let rqs = |g: &mut Graph, r: &mut Rng, name: &str, t: TensorId, n: usize, mul: (i32, i32)| {
            let c = if per_channel { n } else { 1 };
            let shape: &[usize] = if per_channel { &[n] } else { &[] };
            let m = g.add_const(format!("{name}.mul"), ints((0..c).map(|_| r.next(mul.0, mul.1)).collect(), shape));
            let a =
                g.add_const(format!("{name}.add"), ints((0..c).map(|_| r.next(-1 << 14, 1 << 14)).collect(), shape));
            let op = RequantShift { div_log2: 16, n_levels: 256, signed: true };
            node(g, name, Box::new(op), vec![t, m, a])
        };
        let linear = |g: &mut Graph, r: &mut Rng, name: &str, t: TensorId, k: usize, n: usize, bias: bool| {
            let w = g.add_const(format!("{name}.w"), ints(r.i8s(k * n).into_iter().map(i32::from).collect(), &[k, n]));
            let mut y = node(g, &format!("{name}.mm"), Box::new(MatMul), vec![t, w]);
            if bias {
                let b = g.add_const(format!("{name}.b"), ints((0..n).map(|_| r.next(-3000, 3000)).collect(), &[n]));
                y = node(g, &format!("{name}.add"), Box::new(Binary { kind: BinaryKind::Add }), vec![b, y]);
            }
            rqs(g, r, name, y, n, (64, 256))
        };
        let split = |g: &mut Graph, t: TensorId, perm: Vec<usize>, name: &str| {
            let t =
                node(g, &format!("{name}.r"), Box::new(Reshape { shape: vec![1, s, h, p], label: "Reshape" }), vec![t]);
            node(g, &format!("{name}.t"), Box::new(Transpose { perm }), vec![t])
        };
        let q = linear(&mut g, &mut r, "q", x, e, h * p, true);
        let k = linear(&mut g, &mut r, "k", x, e, h * p, false);
        let v = linear(&mut g, &mut r, "v", x, e, h * p, true);
        let (q, k, v) = (
            split(&mut g, q, vec![0, 2, 1, 3], "qh"),
            split(&mut g, k, vec![0, 2, 3, 1], "kt"),
            split(&mut g, v, vec![0, 2, 1, 3], "vh"),
        );
        let sc = node(&mut g, "scores.mm", Box::new(MatMul), vec![q, k]);
        let sc = rqs(&mut g, &mut r, "scores", sc, 1, (256, 1024));
        let softmax: Box<dyn crate::Op> = if isoftmax {
            Box::new(ISoftmax { coeff_a: 1, coeff_b: 30, coeff_c: 200, log2: 10, n_levels: 256 })
        } else {
            Box::new(ItaMax { n_levels: 256 })
        };
        let pr = node(&mut g, "softmax", softmax, vec![sc]);
        let o = node(&mut g, "av.mm", Box::new(MatMul), vec![pr, v]);
        let o = rqs(&mut g, &mut r, "av", o, 1, (128, 384));
        let o = node(&mut g, "merge", Box::new(Transpose { perm: vec![0, 2, 1, 3] }), vec![o]);
        let o = node(&mut g, "concat", Box::new(Reshape { shape: vec![1, s, h * p], label: "Reshape" }), vec![o]);
        let y = linear(&mut g, &mut r, "out", o, h * p, e, true);
        g.outputs.push(y);
        let input = ints(r.i8s(s * e).into_iter().map(i32::from).collect(), &[1, s, e]);
        (g, input)
    }

    /// Deeploy's integer blocks fuse into one op (on `I64` tensors, requantized by `RequantShift`, `ITAMax` or
    /// `iSoftmax` inside) with the same integers, in every schedule; the narrowing sees int8 in and out.
    #[test]
    fn deeploy_blocks_fuse_with_the_same_integers() {
        for (s, e, h, p, isoftmax, per_channel) in [(9, 8, 2, 4, false, true), (7, 12, 1, 8, true, false)] {
            let (g, x) = deeploy_block_graph(s, e, h, p, isoftmax, per_channel);
            let want = g.run(vec![x.clone()]).unwrap();
            let values: Vec<i64> = want[0].to_i64_vec();
            assert!(values.iter().filter(|&&v| v != 127 && v != -128).count() > values.len() / 2, "{values:?}");
            let streamed = Some(MhsaSchedule::StreamedKv { key_rows: 2, value_cols: 4 });
            for (rows, forced) in [(None, None), (Some(1), None), (Some(s), None), (None, streamed)] {
                let mut f = g.clone();
                let policy = SchedulePolicy { budget_bytes: 1 << 20, block_rows: rows };
                let fused = fuse_attention(&mut f, &policy).unwrap();
                assert_eq!(fused.len(), 1, "{s} {e} {h} {p}");
                assert_eq!(f.nodes.len(), 1, "{:?}", f.nodes.iter().map(|n| n.op.name()).collect::<Vec<_>>());
                if let Some(schedule) = forced {
                    let op = f.nodes[0].op.as_any().downcast_ref::<QAttention>().unwrap().clone();
                    f.nodes[0].op = Box::new(QAttention { schedule, ..op });
                }
                let op = f.nodes[0].op.as_any().downcast_ref::<QAttention>().unwrap();
                assert_eq!((op.heads, op.qk_dim, op.v_dim), (h, p, p));
                assert!(matches!(op.scores, BlockRequant::Shift(_)) && op.q.requant.needs_dsp16());
                assert_eq!(f.run(vec![x.clone()]).unwrap()[0], want[0], "{s} {e} {h} {p} {rows:?} {forced:?}");
                let nw = crate::passes::narrow::narrow(&f, &|_| None).unwrap();
                let y = f.outputs[0];
                assert_eq!((nw.range[y], nw.storage[y]), (Some((-128, 127)), Some(DType::I8)));
            }
        }
    }

    /// onnxruntime's form fuses into one op whose queries and keys carry their tables, with the same integers; a
    /// merge that is not the heads side by side is left alone.
    #[test]
    fn onnxruntime_blocks_fuse_with_their_tables() {
        let (g, x) = ort_block_graph(6, 8, 2, 11);
        let want = g.run(vec![x.clone()]).unwrap();
        let policy = SchedulePolicy { budget_bytes: 1 << 20, block_rows: None };
        let mut f = g.clone();
        let fused = fuse_attention(&mut f, &policy).unwrap();
        assert_eq!(fused.len(), 1);
        assert_eq!(f.nodes.len(), 1, "{:?}", f.nodes.iter().map(|n| n.op.name()).collect::<Vec<_>>());
        let op = f.nodes[0].op.as_any().downcast_ref::<QAttention>().unwrap();
        assert_eq!((op.heads, op.qk_dim, op.v_dim), (2, 4, 4));
        assert!(
            op.q.table.is_some() && op.k.as_ref().unwrap().table.is_some() && op.v.as_ref().unwrap().table.is_none()
        );
        assert_eq!(f.run(vec![x.clone()]).unwrap()[0], want[0]);

        let mut wrong = g.clone();
        let merge = wrong.nodes.iter().position(|n| n.name == "merge").unwrap();
        wrong.nodes[merge].op = Box::new(Transpose { perm: vec![2, 0, 3, 1] });
        wrong.nodes[merge + 1].op = Box::new(Reshape { shape: vec![6, 8], label: "Reshape" });
        assert!(fuse_attention(&mut wrong, &policy).unwrap().is_empty());
    }

    /// Fusing keeps every output integer, for projected and FWSA blocks, causal or not, under any block size.
    #[test]
    fn fused_block_equals_the_layers() {
        for (s, e, h, p, fwsa, causal) in
            [(9, 8, 2, 4, false, false), (7, 6, 3, 6, true, true), (10, 8, 4, 8, true, false)]
        {
            let (g, x) = block_graph(s, e, h, p, fwsa, causal, (s * 31 + h) as u64);
            let want = g.run(vec![x.clone()]).unwrap();
            for rows in [None, Some(1), Some(3), Some(s)] {
                let mut f = g.clone();
                let policy = SchedulePolicy { budget_bytes: 1 << 20, block_rows: rows };
                let fused = fuse_attention(&mut f, &policy).unwrap();
                assert_eq!(fused.len(), 1, "{s} {e} {h} {p} {fwsa}");
                assert_eq!(f.nodes.len(), 1);
                assert_eq!(f.nodes[0].op.name(), "QAttention");
                assert_eq!(fused[0].shape.project_k, !fwsa);
                assert_eq!(f.run(vec![x.clone()]).unwrap()[0], want[0], "{s} {e} {h} {p} {fwsa} {rows:?}");
                // The graph's MAC count is the fused op's.
                let macs: u64 = f.nodes.iter().map(|n| f.node_macs(n)).sum();
                let layer_macs: u64 = g.nodes.iter().map(|n| g.node_macs(n)).sum();
                assert_eq!(macs, layer_macs);
            }
        }
    }

    /// A block with a second reader of an inner tensor is left layer by layer.
    #[test]
    fn shared_inner_tensors_are_not_fused() {
        let (mut g, _) = block_graph(6, 4, 2, 2, false, false, 3);
        let probs = g.value_by_name("probs").unwrap();
        g.outputs.push(probs);
        let before = g.nodes.len();
        let policy = SchedulePolicy { budget_bytes: 1 << 20, block_rows: None };
        assert!(fuse_attention(&mut g, &policy).unwrap().is_empty());
        assert_eq!(g.nodes.len(), before);
    }

    /// The planner: EEGFormer's FWSA block streams two query rows at a time through every head within 16 KB of
    /// scratch; a budget too small for any schedule leaves the block unfused; a forced block size is honored.
    #[test]
    fn planner_picks_small_row_blocks_when_they_cost_nothing() {
        let s = MhsaShape {
            seq: 81,
            embed: 32,
            heads: 8,
            qk_dim: 32,
            v_dim: 32,
            out_dim: 32,
            project_k: false,
            project_v: false,
            proj_layout: PackedLayout::Dsp16,
            out_layout: PackedLayout::Dsp16,
        };
        let policy = SchedulePolicy { budget_bytes: 1 << 20, block_rows: None };
        let (sched, scratch, est) = plan_schedule(&s, &policy).unwrap();
        assert_eq!(sched, MhsaSchedule::RowMajor { block_rows: 2 });
        // Keys 6,232 + values 5,760 + the panel of the scores·values product 348 bytes, the two rows' output sums
        // 256 bytes, their queries (then head outputs) 64 and scores 162 bytes.
        assert_eq!(4 * scratch.total_words(), 12_824);
        assert!(est < 5_000_000, "{est}");
        assert_eq!(plan_schedule(&s, &SchedulePolicy { budget_bytes: 1000, block_rows: None }), None);
        let forced = SchedulePolicy { budget_bytes: 1 << 20, block_rows: Some(9) };
        assert_eq!(plan_schedule(&s, &forced).unwrap().0.block_rows(), 9);
    }
}
