//! Layer grouping: a wide integer producer whose only consumer is a Deeploy `RequantShift` (through
//! an optional constant bias `Add` after a `MatMul`) becomes one fused kernel call that
//! requantizes each accumulator in a register, so the `i32` tensor is never stored:
//!
//! | group | kernel |
//! |---|---|
//! | `MatMul` (constant int8 `[k, n]` weights) [+ `Add` bias `[n]`] + `RequantShift` | `matmul::linear_requant` |
//! | `MatMul` (two activations, batched) + `RequantShift` | `matmul::av_requant` |
//! | `Conv` + `RequantShift` | `conv::conv2d_requant` |
//! | `iGELU` + `RequantShift` | `activation::igelu_requant` |
//! | `iHardswish` + `RequantShift` | `activation::ihardswish_requant` |
//! | `Add` / `Mul` + `RequantShift` (per tensor) | `elementwise::{add,mul}_i32_requant` |
//! | a chain of `RequantShift`, `iGELU`, `iHardswish` (per tensor) from an 8-bit tensor to an 8-bit tensor | `activation::lut_{i8,u8}` |
//!
//! The last row replaces the others where it applies: a function of one 8-bit value has 256 results, which
//! code generation computes with the ops' own `eval` (so exact by construction) and the MCU looks up (ICCT's
//! `iGELU` + `RequantShift`: 80 instructions per element before, 4 after).
//!
//! Exactness: the fused kernels apply the same `ShiftRequant::apply` that `RequantShift`'s `eval`
//! applies, to the same accumulator: the narrowing proved every intermediate (the product and the
//! biased sum) inside `i32`, so the kernels' wrapping `i32` arithmetic is exact. The requantization
//! channels must follow the kernel's channel index: per tensor, per output column (`[n]` on the last
//! axis) for matmuls, per output channel for convolutions, per tensor for the activations.
use mote_core::ops::conv::Conv;
use mote_core::ops::deeploy::{IGelu, IHardswish, RequantShift};
use mote_core::ops::elementwise::{Binary, BinaryKind};
use mote_core::ops::matmul::MatMul;
use mote_core::ops::quant::{QBinary, QLut, Requantize};
use mote_core::passes::narrow::{fits, Narrowing};
use mote_core::{DType, Graph, Node, NodeId, TensorId};

/// What a group of nodes is emitted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// One node, one kernel.
    Single,
    /// `MatMul [+ Add] + RequantShift` with constant int8 weights: `linear_requant` (bias is the
    /// constant `[n]` operand of the `Add`, if any).
    Linear { bias: Option<TensorId> },
    /// `MatMul + RequantShift` on activations: `av_requant`.
    Batched,
    /// `Conv + RequantShift`: `conv2d_requant`.
    Conv,
    /// `iGELU` / `iHardswish` + `RequantShift`, per tensor.
    Activation,
    /// `Add` / `Mul` + `RequantShift`, per tensor.
    Elementwise,
    /// Element-wise ops of one 8-bit tensor into an 8-bit tensor: a 256-entry table (see [`table`]).
    Table,
}

/// A layer: its nodes in evaluation order (the last one writes the layer's output) and how it is
/// emitted.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Nodes, producer first.
    pub nodes: Vec<NodeId>,
    /// Emission.
    pub fusion: Fusion,
    /// The output overwrites the input's buffer (decided with the lifetimes, see [`element_wise`]).
    pub in_place: bool,
}

/// The layer maps each element of its first input to the same element of its output, with an
/// in-place kernel when output and input share their type: a single `RequantShift`, an activation
/// + `RequantShift` (int8), or one of mote's int8 `QLut`, `Requantize`, `QAdd`/`QMul`.
pub fn element_wise(g: &Graph, layer: &Layer) -> bool {
    match layer.fusion {
        Fusion::Single => {
            let n = &g.nodes[layer.nodes[0]];
            let op = n.op.as_any();
            // mote's int8 ops with in-place kernels: tables, rescales, and residual add/mul that write over
            // their first operand (never when both operands are the same tensor).
            let int8 = op.is::<QLut>() || op.is::<Requantize>() || (op.is::<QBinary>() && n.inputs[0] != n.inputs[1]);
            rqs(n).is_some() || int8
        }
        Fusion::Activation | Fusion::Table => true,
        _ => false,
    }
}

/// The layer is a fused attention block whose output may overwrite its input (token overwriting): the kernel
/// reads every input row it needs before writing over it, so this holds whenever the widths agree.
pub fn attention_in_place(g: &Graph, layer: &Layer) -> bool {
    let n = &g.nodes[layer.nodes[0]];
    n.op.as_any().is::<mote_core::ops::attention::QAttention>()
        && g.values[n.inputs[0]].ty.shape == g.values[n.outputs[0]].ty.shape
}

/// Groups `nodes` (in schedule order) into layers; a fused group runs where its first node is.
pub fn layers(g: &Graph, nw: &Narrowing, nodes: &[NodeId]) -> Vec<Layer> {
    let uses = g.use_counts();
    let mut consumer: Vec<Option<NodeId>> = vec![None; g.values.len()];
    for &n in nodes {
        for &i in &g.nodes[n].inputs {
            consumer[i] = Some(n);
        }
    }
    // The only reader of `t`, when `t` is a node output read exactly once by a device node.
    let only =
        |t: TensorId| -> Option<NodeId> { (uses[t] == 1 && !g.outputs.contains(&t)).then_some(consumer[t]).flatten() };
    let mut taken = vec![false; g.nodes.len()];
    let mut out = Vec::new();
    for &n in nodes {
        if taken[n] {
            continue;
        }
        let group =
            fuse_from(g, nw, n, &only).unwrap_or(Layer { nodes: vec![n], fusion: Fusion::Single, in_place: false });
        group.nodes.iter().for_each(|&m| taken[m] = true);
        out.push(group);
    }
    out
}

fn rqs(node: &Node) -> Option<&RequantShift> {
    node.op.as_any().downcast_ref::<RequantShift>()
}

/// Number of requantization channels of a `RequantShift` node (its longer parameter), and the
/// element period of those channels in its input, when its parameters are constants.
fn rqs_channels(g: &Graph, node: &Node) -> Option<(usize, usize)> {
    let (m, a) = (node.inputs[1], node.inputs[2]);
    g.values[m].konst.as_ref()?;
    g.values[a].konst.as_ref()?;
    let c = g.values[m].ty.len().max(g.values[a].ty.len());
    let x = &g.values[node.inputs[0]].ty.shape;
    let inner = crate::emit::rqs_inner(x, &g.values[m].ty.shape, &g.values[a].ty.shape).ok()?;
    Some((c, inner))
}

/// Whether `node` maps each element of its first input to one output element with per-tensor constants only.
fn tabulable(g: &Graph, node: &Node) -> bool {
    let op = node.op.as_any();
    let per_tensor = rqs(node).is_some() && rqs_channels(g, node).is_some_and(|(c, _)| c == 1);
    per_tensor || op.is::<IGelu>() || op.is::<IHardswish>()
}

/// The 8-bit storage type of `t`, if it has one.
fn byte_storage(nw: &Narrowing, t: TensorId) -> Option<DType> {
    nw.storage[t].filter(|d| matches!(d, DType::I8 | DType::U8))
}

/// The longest chain of [`tabulable`] nodes from `n` (each the only reader of the previous output) that reads an
/// 8-bit tensor and ends in one, when its table can be computed.
fn table_chain(g: &Graph, nw: &Narrowing, n: NodeId, only: &dyn Fn(TensorId) -> Option<NodeId>) -> Option<Layer> {
    byte_storage(nw, g.nodes[n].inputs[0])?;
    let mut chain = vec![n];
    while let Some(next) = only(g.nodes[*chain.last()?].outputs[0]) {
        let node = &g.nodes[next];
        if !tabulable(g, node) || node.inputs[0] != g.nodes[*chain.last()?].outputs[0] {
            break;
        }
        chain.push(next);
    }
    let end = chain.iter().rposition(|&m| byte_storage(nw, g.nodes[m].outputs[0]).is_some())?;
    chain.truncate(end + 1);
    let layer = Layer { nodes: chain, fusion: Fusion::Table, in_place: false };
    table(g, nw, &layer).map(|_| layer)
}

/// The 256 results of a [`Fusion::Table`] layer, indexed as `activation::lut_i8` (`x + 128`) or `lut_u8` (`x`)
/// reads them for its input's storage type, or `None` when an op refuses a value or a result leaves the output's
/// storage type.
pub fn table(g: &Graph, nw: &Narrowing, layer: &Layer) -> Option<Vec<i64>> {
    let x = g.nodes[*layer.nodes.first()?].inputs[0];
    let y = g.nodes[*layer.nodes.last()?].outputs[0];
    let first = if byte_storage(nw, x)? == DType::I8 { -128 } else { 0 };
    let mut t = mote_core::Tensor::from_vec(&[256], (first..first + 256).collect::<Vec<i64>>()).ok()?;
    for &m in &layer.nodes {
        let node = &g.nodes[m];
        let consts: Option<Vec<&mote_core::Tensor>> =
            node.inputs[1..].iter().map(|&i| g.values[i].konst.as_deref()).collect();
        let mut inputs = vec![&t];
        inputs.extend(consts?);
        t = node.op.eval(&inputs).ok()?.into_iter().next()?;
    }
    let values = t.to_i64_vec();
    let out = byte_storage(nw, y)?;
    values.iter().all(|&v| fits((v, v), out)).then_some(values)
}

fn fuse_from(g: &Graph, nw: &Narrowing, n: NodeId, only: &dyn Fn(TensorId) -> Option<NodeId>) -> Option<Layer> {
    let node = &g.nodes[n];
    let y = *node.outputs.first()?;
    if g.values[y].ty.dtype != DType::I64 || node.outputs.len() != 1 {
        return None;
    }
    if tabulable(g, node) {
        if let Some(layer) = table_chain(g, nw, n, only) {
            return Some(layer);
        }
    }
    let op = node.op.as_any();
    let next = only(y)?;
    let layer = |nodes: Vec<NodeId>, fusion| Some(Layer { nodes, fusion, in_place: false });
    if op.is::<MatMul>() {
        let (sa, sb) = (&g.values[node.inputs[0]].ty.shape, &g.values[node.inputs[1]].ty.shape);
        if sa.len() < 2 || sb.len() < 2 {
            return None;
        }
        let n_cols = sb[sb.len() - 1];
        // The fused kernels index requantization channels by output column.
        let per_column = |r: &Node| rqs_channels(g, r).is_some_and(|(c, inner)| c == 1 || (c == n_cols && inner == 1));
        let w = node.inputs[1];
        let const_weights = g.values[w].konst.is_some()
            && sb[..sb.len() - 2].iter().all(|&d| d == 1)
            && nw.range[w].is_some_and(|r| fits(r, DType::I8));
        let next_node = &g.nodes[next];
        if rqs(next_node).is_some() && next_node.inputs[0] == y && per_column(next_node) {
            let fusion = if const_weights { Fusion::Linear { bias: None } } else { Fusion::Batched };
            return layer(vec![n, next], fusion);
        }
        // MatMul -> Add(bias [n], constant, last axis) -> RequantShift.
        let is_add = next_node.op.as_any().downcast_ref::<Binary>().is_some_and(|b| b.kind == BinaryKind::Add);
        if !is_add || !const_weights {
            return None;
        }
        let bias = *next_node.inputs.iter().find(|&&i| i != y)?;
        let bias_ok = g.values[bias].konst.is_some()
            && g.values[bias].ty.len() == n_cols
            && g.values[bias].ty.shape.iter().rev().skip(1).all(|&d| d == 1)
            && nw.range[bias].is_some_and(|r| fits(r, DType::I32));
        let z = next_node.outputs[0];
        let last = only(z)?;
        let last_node = &g.nodes[last];
        if bias_ok && rqs(last_node).is_some() && last_node.inputs[0] == z && per_column(last_node) {
            return layer(vec![n, next, last], Fusion::Linear { bias: Some(bias) });
        }
        None
    } else if op.is::<Conv>() {
        let next_node = &g.nodes[next];
        let (c, inner) = rqs_channels(g, next_node)?;
        let ys = &g.values[y].ty.shape;
        let w = node.inputs[1];
        let ok = rqs(next_node).is_some()
            && next_node.inputs[0] == y
            && ys.len() == 4
            && (c == 1 || (c == ys[1] && inner == ys[2] * ys[3]))
            && g.values[w].konst.is_some()
            && nw.range[w].is_some_and(|r| fits(r, DType::I8));
        ok.then(|| Layer { nodes: vec![n, next], fusion: Fusion::Conv, in_place: false })
    } else if op.is::<IGelu>() || op.is::<IHardswish>() {
        let next_node = &g.nodes[next];
        let ok = rqs(next_node).is_some() && next_node.inputs[0] == y && rqs_channels(g, next_node)?.0 == 1;
        ok.then(|| Layer { nodes: vec![n, next], fusion: Fusion::Activation, in_place: false })
    } else if op.downcast_ref::<Binary>().is_some_and(|b| matches!(b.kind, BinaryKind::Add | BinaryKind::Mul)) {
        let next_node = &g.nodes[next];
        let ok = rqs(next_node).is_some() && next_node.inputs[0] == y && rqs_channels(g, next_node)?.0 == 1;
        ok.then(|| Layer { nodes: vec![n, next], fusion: Fusion::Elementwise, in_place: false })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mote_core::passes::narrow::narrow;
    use mote_core::{Tensor, TensorType};

    /// `x` (int8) → `RequantShift` → `iGELU` → `RequantShift` → `y`, and a second output `z` that
    /// ends in `iGELU`'s `i32`.
    fn chain() -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I64, vec![2, 8]), None);
        g.inputs.push(x);
        let scalar = |g: &mut Graph, name: &str, v: i64| g.add_const(name, Tensor::from_vec(&[], vec![v]).unwrap());
        let rqs = |g: &mut Graph, name: &str, t: TensorId, mul: i64, add: i64, signed: bool| {
            let (m, a) = (scalar(g, &format!("{name}.mul"), mul), scalar(g, &format!("{name}.add"), add));
            let op = RequantShift { div_log2: 6, n_levels: 256, signed };
            g.add_node(name, Box::new(op), vec![t, m, a], &[name.to_string()]).unwrap()[0]
        };
        let a = rqs(&mut g, "rq0", x, 45, 100, true);
        let gelu = IGelu { b: -60, one: 36 };
        let b = g.add_node("gelu", Box::new(gelu.clone()), vec![a], &["gelu".into()]).unwrap()[0];
        let y = rqs(&mut g, "rq1", b, 3, -20, true);
        let z = g.add_node("gelu2", Box::new(gelu), vec![y], &["z".into()]).unwrap()[0];
        g.outputs.extend([y, z]);
        g
    }

    /// The int8-to-int8 chain becomes one table whose entries are the graph's own results for every input; the
    /// chain into `i32` stays an op of its own.
    #[test]
    fn an_eight_bit_chain_becomes_one_table_with_the_graphs_results() {
        let g = chain();
        let nw = narrow(&g, &|_| None).unwrap();
        let order: Vec<NodeId> = (0..g.nodes.len()).collect();
        let groups = layers(&g, &nw, &order);
        let fusions: Vec<(usize, Fusion)> = groups.iter().map(|l| (l.nodes.len(), l.fusion)).collect();
        assert_eq!(fusions, [(3, Fusion::Table), (1, Fusion::Single)]);
        let table = table(&g, &nw, &groups[0]).unwrap();
        let x = Tensor::from_vec(&[2, 8], (-128..128).step_by(16).collect::<Vec<i64>>()).unwrap();
        let want = g.run(vec![x.clone()]).unwrap().remove(0).to_i64_vec();
        let got: Vec<i64> = x.to_i64_vec().iter().map(|&v| table[(v + 128) as usize]).collect();
        assert_eq!(got, want);
        assert!(want.iter().collect::<std::collections::BTreeSet<_>>().len() > 4, "{want:?}");
    }
}
