//! Fusion of int8 self-attention blocks into one [`QAttention`] op, and the choice of its schedule.
//!
//! The pass matches the layer-by-layer int8 form that quantizing mote's canonical attention gives (see
//! `mote_onnx::attention`): `QLinear` projections of one `x [S, E]`, head split by `Reshape [S,H,P]` +
//! `Transpose`, `QMatMul` scores, `QSoftmax`, `QMatMul` with the values, `Transpose` + `Reshape [S, H·P]` and the
//! output `QLinear`; keys `Transpose(x, [1,0])` and values `x` when the weights were fused (FWSA). Every matched
//! tensor but `x` and the output must have no other reader. Requantizations must be `HighMul` (the packed kernels').
use super::prune;
use crate::ops::attention::{QAttention, QProjection};
use crate::ops::quant::{AccRescale, QLinear, QMatMul, QSoftmax};
use crate::ops::shape::{Reshape, Transpose};
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

/// Everything a match found.
struct Block {
    x: TensorId,
    heads: usize,
    qk_dim: usize,
    v_dim: usize,
    q: NodeId,
    k: Option<NodeId>,
    v: Option<NodeId>,
    scores: NodeId,
    softmax: NodeId,
    av: NodeId,
    out: NodeId,
    nodes: Vec<NodeId>,
}

struct Matcher<'g> {
    g: &'g Graph,
    producer: Vec<Option<NodeId>>,
    consumers: Vec<Vec<NodeId>>,
}

impl Matcher<'_> {
    /// The node producing `t` when `t` has exactly one reader, downcast to `T`.
    fn single<T: 'static>(&self, t: TensorId) -> Option<(NodeId, &T)> {
        let n = self.producer[t]?;
        self.reader(t)?;
        Some((n, self.g.nodes[n].op.as_any().downcast_ref::<T>()?))
    }

    /// `Transpose(perm)` of `Reshape([S, H, P])` of a `QLinear`: `(linear, H, P, [transpose, reshape])`.
    fn head_split(&self, t: TensorId, perm: &[usize]) -> Option<(NodeId, usize, usize, [NodeId; 2])> {
        let (tn, tr) = self.single::<Transpose>(t)?;
        (tr.perm == perm).then_some(())?;
        let (rn, rs) = self.single::<Reshape>(self.g.nodes[tn].inputs[0])?;
        let [_, h, p] = rs.shape[..] else { return None };
        let (ln, _) = self.single::<QLinear>(self.g.nodes[rn].inputs[0])?;
        Some((ln, h, p, [tn, rn]))
    }

    /// The one node reading `t`, when `t` has exactly one reader (and is no graph output).
    fn reader(&self, t: TensorId) -> Option<NodeId> {
        match self.consumers[t].as_slice() {
            [n] if !self.g.outputs.contains(&t) => Some(*n),
            _ => None,
        }
    }

    fn linear_input(&self, n: NodeId) -> TensorId {
        self.g.nodes[n].inputs[0]
    }

    fn block(&self, sm: NodeId) -> Option<Block> {
        let g = self.g;
        let sm_node = &g.nodes[sm];
        let (mm1, _) = self.single::<QMatMul>(sm_node.inputs[0])?;
        let (a, b) = (g.nodes[mm1].inputs[0], g.nodes[mm1].inputs[1]);
        let (q, heads, qk_dim, q_nodes) = self.head_split(a, &[1, 0, 2])?;
        let x = self.linear_input(q);
        let mut nodes = vec![q, mm1, sm];
        nodes.extend(q_nodes);
        let k = match self.head_split(b, &[1, 2, 0]) {
            Some((k, hk, pk, k_nodes)) => {
                (hk == heads && pk == qk_dim && self.linear_input(k) == x).then_some(())?;
                nodes.push(k);
                nodes.extend(k_nodes);
                Some(k)
            }
            None => {
                let (tn, tr) = self.single::<Transpose>(b)?;
                (tr.perm == [1, 0] && g.nodes[tn].inputs[0] == x).then_some(())?;
                nodes.push(tn);
                None
            }
        };
        let probs = sm_node.outputs[0];
        let mm2 = self.reader(probs)?;
        (g.nodes[mm2].op.as_any().is::<QMatMul>() && g.nodes[mm2].inputs[0] == probs).then_some(())?;
        let vt = g.nodes[mm2].inputs[1];
        let (v, v_dim) = if vt == x {
            (None, g.values[x].ty.shape.get(1).copied()?)
        } else {
            let (v, hv, pv, v_nodes) = self.head_split(vt, &[1, 0, 2])?;
            (hv == heads && self.linear_input(v) == x).then_some(())?;
            nodes.push(v);
            nodes.extend(v_nodes);
            (Some(v), pv)
        };
        nodes.push(mm2);
        // mm2 -> Transpose [1,0,2] -> Reshape [S, H·Pv] -> QLinear.
        let tn = self.reader(g.nodes[mm2].outputs[0])?;
        let tr = g.nodes[tn].op.as_any().downcast_ref::<Transpose>()?;
        (tr.perm == [1, 0, 2]).then_some(())?;
        let rn = self.reader(g.nodes[tn].outputs[0])?;
        g.nodes[rn].op.as_any().downcast_ref::<Reshape>()?;
        let r_out = g.nodes[rn].outputs[0];
        let out = self.reader(r_out)?;
        (g.nodes[out].op.as_any().is::<QLinear>() && g.nodes[out].inputs[0] == r_out).then_some(())?;
        nodes.extend([tn, rn, out]);
        let xs = &g.values[x].ty.shape;
        (xs.len() == 2 && g.values[r_out].ty.shape == [xs[0], heads * v_dim]).then_some(())?;
        Some(Block { x, heads, qk_dim, v_dim, q, k, v, scores: mm1, softmax: sm, av: mm2, out, nodes })
    }
}

/// A `QLinear`'s projection parameters, when its rescale is `HighMul`.
fn projection(n: &Node) -> Option<QProjection> {
    let q = n.op.as_any().downcast_ref::<QLinear>()?;
    let AccRescale::HighMul(mul) = &q.rescale else { return None };
    Some(QProjection { mul: mul.clone(), x_zero_point: q.x_zero_point, y_zero_point: q.y_zero_point })
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
    let q = projection(&g.nodes[b.q])?;
    let k = b.k.map(|n| projection(&g.nodes[n])).map_or(Some(None), |p| p.map(Some))?;
    let v = b.v.map(|n| projection(&g.nodes[n])).map_or(Some(None), |p| p.map(Some))?;
    let out = projection(&g.nodes[b.out])?;
    let (scores, za, zb) = product(&g.nodes[b.scores])?;
    let (av, zp, zv) = product(&g.nodes[b.av])?;
    let softmax = g.nodes[b.softmax].op.as_any().downcast_ref::<QSoftmax>()?.clone();
    let zx = q.x_zero_point;
    let zk = k.as_ref().map_or(zx, |k| k.y_zero_point);
    let zv_want = v.as_ref().map_or(zx, |v| v.y_zero_point);
    let consistent = za == q.y_zero_point
        && zb == zk
        && zp == softmax.out_zero_point
        && zv == zv_want
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

/// A linear node's bias input, or a zero bias constant added to `g`.
fn bias_of(g: &mut Graph, n: NodeId) -> TensorId {
    if let Some(&b) = g.nodes[n].inputs.get(2) {
        return b;
    }
    let w = g.nodes[n].inputs[1];
    let rows = g.values[w].ty.shape[0];
    let name = format!("{}/zero_bias", g.nodes[n].name);
    g.add_const(name, Tensor::from_vec(&[rows], vec![0i32; rows]).expect("length matches"))
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
        for n in [Some(b.q), b.k, b.v, Some(b.out)].into_iter().flatten() {
            inputs.push(g.nodes[n].inputs[1]);
            inputs.push(bias_of(g, n));
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
