//! Fusion of int8 self-attention blocks into one [`QAttention`] op, and the choice of its schedule.
//!
//! The pass matches the layer-by-layer int8 form of a block: `QLinear` projections of one `x [S, E]` split into
//! heads, `QMatMul` scores, `QSoftmax`, `QMatMul` with the values, the heads merged side by side and the output
//! `QLinear`; keys `Transpose(x, [1,0])` and values `x` when the weights were fused (FWSA). The head splits and
//! merges may be any chain of reshapes, transposes and constant gathers: the pass follows an index tensor through
//! the chain and accepts it when every element lands where the canonical form (`Reshape [S,H,P]` + `Transpose`,
//! see `mote_onnx::attention`) puts it. So onnxruntime's QDQ form matches too: one `[3E, E]` input projection split
//! three ways by gathers, and a `QLut` scaling queries and keys (a table of the fused kernel). Every tensor the
//! block makes must be read inside it only. Requantizations must be `HighMul` (the packed kernels').
use super::prune;
use crate::ops::attention::{QAttention, QProjection};
use crate::ops::quant::{AccRescale, QLinear, QLut, QMatMul, QSoftmax};
use crate::ops::shape::{Gather, Reshape, Transpose};
use crate::{Graph, Node, NodeId, Result, Tensor, TensorId};
use mote_kernels::attention::{MhsaSchedule, MhsaScratch, MhsaShape, ProductRequant};
use mote_kernels::packed::PackedLayout;

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
/// and row, per packed key/value element.
const PER_CALL: u64 = 120;
const PER_MAC_X100: u64 = 74;
const PER_SOFTMAX_ELEMENT: u64 = 18;
const PER_SOFTMAX_ROW: u64 = 160;
const PER_PACKED: u64 = 8;

/// Instruction estimate of `schedule` on `s` (see the cost constants).
pub fn estimate_instructions(s: &MhsaShape, schedule: MhsaSchedule) -> u64 {
    let u = |v: usize| v as u64;
    let b = schedule.block_rows().min(s.seq).max(1);
    let blocks = s.seq.div_ceil(b);
    // Rows computed: row pairs of each block (a block's odd last row is computed twice).
    let rows = |m: usize| u((m.div_ceil(2) * 2).max(2));
    let block_rows = u(s.seq / b) * rows(b) + if s.seq.is_multiple_of(b) { 0 } else { rows(s.seq % b) };
    let h = u(s.heads);
    let mac = |rows: u64, k: usize, n: usize| rows * u(k) * u(n) * PER_MAC_X100 / 100;
    let per_head =
        mac(block_rows, s.embed, s.qk_dim) + mac(block_rows, s.qk_dim, s.seq) + mac(block_rows, s.seq, s.v_dim);
    let calls_per_head = 3 * u(blocks);
    let projections = u64::from(s.project_k) * (mac(rows(s.seq), s.embed, s.qk_dim) + PER_CALL)
        + u64::from(s.project_v) * (mac(rows(s.seq), s.embed, s.v_dim) + PER_CALL);
    let heads_packed = if s.project_k || s.project_v { h } else { 1 };
    let packing = heads_packed * PER_PACKED * u(s.seq) * u(s.qk_dim + s.v_dim);
    let softmax = u(s.seq) * (u(s.seq) * PER_SOFTMAX_ELEMENT + PER_SOFTMAX_ROW);
    let out = match schedule {
        MhsaSchedule::HeadMajor { .. } => mac(rows(s.seq), s.heads * s.v_dim, s.out_dim) + PER_CALL,
        MhsaSchedule::RowMajor { .. } => mac(block_rows, s.heads * s.v_dim, s.out_dim) + u(blocks) * PER_CALL,
    };
    h * (per_head + calls_per_head * PER_CALL + projections + softmax) + packing + out
}

/// Estimated instructions the planner gives up for less scratch, in percent: only per-call overheads depend on the
/// block size, and the cost model is not more accurate than that (EEGFormer: 2-row blocks are estimated at 2.6%
/// more than one 81-row block and need 30 KB less; measured, 5.5% more). Summing the output projection head by
/// head costs no more per row block than concatenating the heads (EEGFormer, measured: going from 4-row to 2-row
/// blocks adds 7.0 K instructions per block; 8.2 K with the heads concatenated).
pub const SLACK_PERCENT: u64 = 3;

/// The schedule for `s`: among those whose scratch fits the budget and whose estimated instructions are within
/// [`SLACK_PERCENT`] of the fewest, the one with the least scratch. `None` when nothing fits.
pub fn plan_schedule(s: &MhsaShape, policy: &SchedulePolicy) -> Option<(MhsaSchedule, MhsaScratch, u64)> {
    let mut rows: Vec<usize> = match policy.block_rows {
        Some(b) => vec![b],
        None => (0..).map(|i| 1usize << i).take_while(|&b| b < s.seq).chain([s.seq]).collect(),
    };
    rows.dedup();
    let candidates: Vec<(MhsaSchedule, MhsaScratch, u64)> = rows
        .iter()
        .flat_map(|&b| [MhsaSchedule::HeadMajor { block_rows: b }, MhsaSchedule::RowMajor { block_rows: b }])
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

/// Where a block's queries, keys or values come from: `heads · dim` output columns of a `QLinear` from `cols` on,
/// through layout ops (and at most one `QLut`).
struct Source {
    linear: NodeId,
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
    scores: NodeId,
    softmax: NodeId,
    av: NodeId,
    out: NodeId,
    nodes: Vec<NodeId>,
}

/// Whether `n` only moves elements: reshapes, transposes, gathers at constant indices.
fn is_layout(n: &Node) -> bool {
    let op = n.op.as_any();
    op.is::<Reshape>() || op.is::<Transpose>() || op.is::<Gather>()
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
    /// keys) whose element `(h, s, p)` is column `cols + h·dim + p` of row `s` of a `QLinear`'s output, reached
    /// through layout ops and at most one element-wise `QLut`. Returns it, its head count and its nodes.
    fn source(&self, t: TensorId, transposed: bool) -> Option<(Source, usize, Vec<NodeId>)> {
        let g = self.g;
        let (mut chain, mut table, mut cur) = (Vec::new(), None, t);
        let linear = loop {
            let n = self.producer[cur]?;
            let op = g.nodes[n].op.as_any();
            if op.is::<QLinear>() {
                break n;
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
        let [seq, width] = g.values[cur].ty.shape[..] else { return None };
        let r = self.follow(iota(&[seq, width])?, &chain)?;
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
        nodes.extend([Some(linear), table].into_iter().flatten());
        Some((Source { linear, cols, dim, table }, heads, nodes))
    }

    /// The output projection of head outputs `t` (`[.., heads, seq, v_dim]`): a `QLinear` reading them through
    /// layout ops as `[seq, heads·v_dim]`, the heads side by side. Returns it and the layout nodes.
    fn concat(&self, t: TensorId, heads: usize) -> Option<(NodeId, Vec<NodeId>)> {
        let g = self.g;
        let (mut chain, mut cur) = (Vec::new(), t);
        let out = loop {
            let &[n] = self.consumers[cur].as_slice() else { return None };
            if g.nodes[n].op.as_any().is::<QLinear>() && g.nodes[n].inputs[0] == cur {
                break n;
            }
            (is_layout(&g.nodes[n]) && g.nodes[n].inputs[0] == cur).then_some(())?;
            chain.push(n);
            cur = g.nodes[n].outputs[0];
        };
        let shape = &g.values[t].ty.shape;
        let (dim, seq) = (*shape.last()?, *shape.get(shape.len().checked_sub(2)?)?);
        let r = self.follow(iota(shape)?, &chain)?;
        let at = r.to_i64_vec();
        let exact = r.shape() == [seq, heads * dim]
            && at.iter().enumerate().all(|(i, &v)| {
                let (s, h, p) = (i / (heads * dim), (i / dim) % heads, i % dim);
                v == ((h * seq + s) * dim + p) as i64
            });
        exact.then_some((out, chain))
    }

    fn block(&self, sm: NodeId) -> Option<Block> {
        let g = self.g;
        let sm_node = &g.nodes[sm];
        let mm1 = self.producer[sm_node.inputs[0]]?;
        g.nodes[mm1].op.as_any().is::<QMatMul>().then_some(())?;
        let (a, b) = (g.nodes[mm1].inputs[0], g.nodes[mm1].inputs[1]);
        let (q, heads, q_nodes) = self.source(a, false)?;
        let x = g.nodes[q.linear].inputs[0];
        let mut nodes = vec![mm1, sm];
        nodes.extend(q_nodes);
        let k = match self.source(b, true) {
            Some((k, hk, k_nodes)) => {
                (hk == heads && k.dim == q.dim && g.nodes[k.linear].inputs[0] == x).then_some(())?;
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
        let &[mm2] = self.consumers[probs].as_slice() else { return None };
        (g.nodes[mm2].op.as_any().is::<QMatMul>() && g.nodes[mm2].inputs[0] == probs).then_some(())?;
        let vt = g.nodes[mm2].inputs[1];
        let (v, v_dim) = if vt == x {
            (None, g.values[x].ty.shape.get(1).copied()?)
        } else {
            let (v, hv, v_nodes) = self.source(vt, false)?;
            (hv == heads && g.nodes[v.linear].inputs[0] == x).then_some(())?;
            nodes.extend(v_nodes);
            let d = v.dim;
            (Some(v), d)
        };
        nodes.push(mm2);
        let (out, o_nodes) = self.concat(g.nodes[mm2].outputs[0], heads)?;
        nodes.extend(o_nodes);
        nodes.sort_unstable();
        nodes.dedup();
        // Every tensor the block makes is read inside it only (the output projection's result aside).
        let closed = nodes
            .iter()
            .flat_map(|&n| &g.nodes[n].outputs)
            .all(|&t| !g.outputs.contains(&t) && self.consumers[t].iter().all(|c| *c == out || nodes.contains(c)));
        (closed && g.values[x].ty.shape.len() == 2).then_some(())?;
        nodes.push(out);
        let qk_dim = q.dim;
        Some(Block { x, heads, qk_dim, v_dim, q, k, v, scores: mm1, softmax: sm, av: mm2, out, nodes })
    }
}

/// The parameters of `n` output channels of a `QLinear` from `cols` on, when its rescale is `HighMul`.
fn projection(n: &Node, cols: usize, width: usize) -> Option<QProjection> {
    let q = n.op.as_any().downcast_ref::<QLinear>()?;
    let AccRescale::HighMul(mul) = &q.rescale else { return None };
    let mul = if mul.len() == 1 { mul.clone() } else { mul.get(cols..cols + width)?.to_vec() };
    Some(QProjection { mul, x_zero_point: q.x_zero_point, y_zero_point: q.y_zero_point, table: None })
}

/// A source's projection, its table (with the zero point `zp` its reader gives the table's results) or, without
/// one, `None` unless the reader's zero point `zp` is the projection's.
fn source_projection(g: &Graph, s: &Source, heads: usize, zp: i32) -> Option<QProjection> {
    let p = projection(&g.nodes[s.linear], s.cols, heads * s.dim)?;
    match s.table {
        Some(t) => {
            let table = g.nodes[t].op.as_any().downcast_ref::<QLut>()?.table.clone();
            Some(QProjection { table: Some((table, zp)), ..p })
        }
        None => (p.y_zero_point == zp).then_some(p),
    }
}

/// A `QMatMul`'s per-tensor `HighMul` requantization and its input zero points.
fn product(n: &Node) -> Option<(ProductRequant, i32, i32)> {
    let q = n.op.as_any().downcast_ref::<QMatMul>()?;
    let AccRescale::HighMul(mul) = &q.rescale else { return None };
    let [mul] = mul[..] else { return None };
    Some((ProductRequant { mul, zero_point: q.y_zero_point }, q.a_zero_point, q.b_zero_point))
}

/// The op of a matched block, when its parameters fit the fused kernel.
fn attention_op(g: &Graph, b: &Block) -> Option<QAttention> {
    let (scores, za, zb) = product(&g.nodes[b.scores])?;
    let (av, zp, zv) = product(&g.nodes[b.av])?;
    let h = b.heads;
    let q = source_projection(g, &b.q, h, za)?;
    let k = b.k.as_ref().map(|s| source_projection(g, s, h, zb)).map_or(Some(None), |p| p.map(Some))?;
    let v = b.v.as_ref().map(|s| source_projection(g, s, h, zv)).map_or(Some(None), |p| p.map(Some))?;
    let out_cols = g.values[g.nodes[b.out].inputs[0]].ty.shape[1];
    let out = projection(&g.nodes[b.out], 0, g.values[g.nodes[b.out].outputs[0]].ty.shape[1])?;
    (out_cols == h * b.v_dim).then_some(())?;
    let softmax = g.nodes[b.softmax].op.as_any().downcast_ref::<QSoftmax>()?.clone();
    let zx = q.x_zero_point;
    let consistent = (k.is_some() || zb == zx)
        && zp == softmax.out_zero_point
        && (v.is_some() || zv == zx)
        && out.x_zero_point == av.zero_point
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

/// The weights and bias of output channels `cols..cols + n` of linear node `l`: its own inputs when that is all of
/// them (a zero bias added when it has none), else constants sliced from them.
fn weights_of(g: &mut Graph, l: NodeId, cols: usize, n: usize) -> Result<(TensorId, TensorId)> {
    let w = g.nodes[l].inputs[1];
    let bias = g.nodes[l].inputs.get(2).copied();
    let (rows, k) = (g.values[w].ty.shape[0], g.values[w].ty.shape[1]);
    let whole = cols == 0 && n == rows;
    if let (true, Some(b)) = (whole, bias) {
        return Ok((w, b));
    }
    let name = g.nodes[l].name.clone();
    let konst = |g: &Graph, t: TensorId| g.values[t].konst.as_ref().map(|c| c.to_i64_vec());
    let wd = konst(g, w).ok_or_else(|| crate::Error::Invalid(format!("{name}: weights are not constant")))?;
    let bd = match bias {
        Some(b) => konst(g, b).ok_or_else(|| crate::Error::Invalid(format!("{name}: bias is not constant")))?,
        None => vec![0; rows],
    };
    let wt = wd[cols * k..(cols + n) * k].iter().map(|&v| v as i8).collect();
    let bt = bd[cols..cols + n].iter().map(|&v| v as i32).collect();
    let w =
        if whole { w } else { g.add_const(format!("{name}/w[{cols}..{}]", cols + n), Tensor::from_vec(&[n, k], wt)?) };
    let b = g.add_const(format!("{name}/bias[{cols}..{}]", cols + n), Tensor::from_vec(&[n], bt)?);
    Ok((w, b))
}

/// Replaces every matched attention block of the int8 graph `g` by one [`QAttention`] scheduled by `policy`, and
/// returns what was fused. Blocks whose parameters the fused kernel cannot run, or with no schedule within the
/// budget, stay layer by layer.
pub fn fuse_attention(g: &mut Graph, policy: &SchedulePolicy) -> Result<Vec<FusedAttention>> {
    let mut fused = Vec::new();
    loop {
        let m = Matcher { g, producer: g.producers(), consumers: g.consumers() };
        let found = (0..g.nodes.len()).filter(|&n| g.nodes[n].op.as_any().is::<QSoftmax>()).find_map(|sm| {
            let b = m.block(sm)?;
            let op = attention_op(g, &b)?;
            let x = &g.values[b.x].ty.shape;
            let out_dim = g.values[g.nodes[b.out].outputs[0]].ty.shape[1];
            let shape = op.shape(x, out_dim, PackedLayout::Dsp16, PackedLayout::Dsp16);
            let (schedule, scratch, est) = plan_schedule(&shape, policy)?;
            Some((b, QAttention { schedule, ..op }, shape, scratch, est))
        });
        let Some((b, op, shape, scratch, estimated_instructions)) = found else { break };
        let mut inputs = vec![b.x];
        let out_n = g.values[g.nodes[b.out].outputs[0]].ty.shape[1];
        let parts = [Some(&b.q), b.k.as_ref(), b.v.as_ref()].into_iter().flatten();
        let ranges: Vec<(NodeId, usize, usize)> =
            parts.map(|s| (s.linear, s.cols, b.heads * s.dim)).chain([(b.out, 0, out_n)]).collect();
        for (l, cols, n) in ranges {
            let (w, bias) = weights_of(g, l, cols, n)?;
            inputs.extend([w, bias]);
        }
        let y = g.nodes[b.out].outputs[0];
        let name = g.nodes[b.out].name.clone();
        let schedule = op.schedule;
        g.infer_node(&name, &op, &inputs)?;
        g.nodes[b.out] = Node { name, op: Box::new(op), inputs, outputs: vec![y] };
        let dead: Vec<NodeId> = b.nodes.iter().copied().filter(|&n| n != b.out).collect();
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
