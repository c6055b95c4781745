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
        Fusion::Activation => true,
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

fn fuse_from(g: &Graph, nw: &Narrowing, n: NodeId, only: &dyn Fn(TensorId) -> Option<NodeId>) -> Option<Layer> {
    let node = &g.nodes[n];
    let y = *node.outputs.first()?;
    if g.values[y].ty.dtype != DType::I64 || node.outputs.len() != 1 {
        return None;
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
