//! Blocks of a chain of layers that need only a block of their input at a time, so only a block of the wide
//! tensors inside the chain is alive instead of all of it:
//! - **MLP hidden chunks** ([`chunk_mlps`]): a linear layer that widens the tokens, the element-wise ops (and
//!   row-keeping reshapes) on its output, and the linear layer that narrows it back (with the element-wise ops right
//!   after it, e.g. Deeploy's bias `Add` and `RequantShift`, or the residual add of the MLP's input) run a block of
//!   token rows at a time; so does the row norm before the MLP when only the MLP reads it.
//! - **Attention head by head** ([`split_heads`]): the product of queries and keys batched over heads, the ops on
//!   its scores and the product with the values run one head at a time, for the blocks the fused attention kernel
//!   does not take (Deeploy's integer ops).
//!
//! The rewrite is exact: every op of such a chain maps row (head) i of its inputs to row (head) i of its output, so
//! each block computes the same integers as the whole. The graph says it plainly: the chain's activation inputs
//! are cut by `Slice`s, each block runs copies of the chain's nodes, and a `Concat` of the blocks' outputs
//! (reshaped back) writes the chain's output tensor. Code generation turns those `Slice`s into views of their
//! inputs and the `Concat` into the blocks writing their part of the output directly, so the rewrite moves no data.
use crate::ops::shape::{Concat, Reshape, Slice};
use crate::{Graph, Node, NodeId, Result, TensorId};
use std::collections::HashSet;

/// One chain as rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedMlp {
    /// Name of the chain's output tensor.
    pub output: String,
    /// Token rows of the chain.
    pub rows: usize,
    /// Rows per block (the last block may have fewer).
    pub block_rows: usize,
    /// Width of the hidden tensor the first linear layer writes.
    pub hidden: usize,
}

/// Element-wise op types a chain may hold (besides its two linear layers).
const ELEMENTWISE: [&str; 9] =
    ["QLut", "Requantize", "QAdd", "QMul", "RequantShift", "iGELU", "iHardswish", "Add", "Mul"];

/// A linear layer with constant weights, reading its activation as input 0: mote's `QLinear` or a `MatMul` by a
/// constant 2-D matrix.
fn is_linear(g: &Graph, n: &Node) -> bool {
    let konst = |k: usize| n.inputs.get(k).is_none_or(|&t| g.values[t].konst.is_some());
    let weights = match n.op.name() {
        "QLinear" => konst(1) && konst(2),
        "MatMul" => n.inputs.len() == 2 && konst(1) && g.values[n.inputs[1]].ty.shape.len() == 2,
        _ => false,
    };
    weights && g.values[n.inputs[0]].konst.is_none() && g.values[n.inputs[0]].ty.shape.len() >= 2
}

/// `shape` as `(rows, last axis)` when at most one axis before the last is longer than 1.
fn row_form(shape: &[usize]) -> Option<(usize, usize)> {
    let (&last, lead) = shape.split_last()?;
    (lead.iter().filter(|&&d| d > 1).count() <= 1).then(|| (lead.iter().product(), last))
}

/// Whether two shapes hold the same rows: equal, or equal up to axes of length 1 before the last (onnxruntime's
/// QDQ MLPs reshape `[s, f]` to `[1, s, f]` between their linear layers).
fn same_rows(a: &[usize], b: &[usize]) -> bool {
    a == b || row_form(a).is_some_and(|r| row_form(b) == Some(r))
}

/// The rows axis of `shape`: the one axis before the last longer than 1, or else the one before the last.
fn rows_axis(shape: &[usize]) -> usize {
    let lead = shape.len().saturating_sub(1);
    shape[..lead].iter().position(|&d| d > 1).unwrap_or(lead.saturating_sub(1))
}

/// `shape` with `rows` rows (see [`rows_axis`]).
fn with_rows(shape: &[usize], rows: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(d) = s.get_mut(rows_axis(shape)) {
        *d = rows;
    }
    s
}

/// `n` is a `Reshape` of a chain tensor that keeps its rows and last axis.
fn is_row_reshape(g: &Graph, n: &Node, shape: &[usize], chain: &HashSet<TensorId>) -> bool {
    n.op.as_any().is::<Reshape>()
        && chain.contains(&n.inputs[0])
        && row_form(shape).is_some()
        && same_rows(&g.values[n.outputs[0]].ty.shape, shape)
}

/// `n` is element-wise over tensors of `shape` (its data inputs in `chain`; up to axes of length 1 before the last,
/// see [`same_rows`]), with constants that are the same for every row (all axes but the last of length 1).
fn is_row_elementwise(g: &Graph, n: &Node, shape: &[usize], chain: &HashSet<TensorId>) -> bool {
    let row_constant = |t: TensorId| {
        let s = &g.values[t].ty.shape;
        s.len() <= shape.len()
            && s.split_last()
                .is_none_or(|(&last, lead)| lead.iter().all(|&d| d == 1) && (last == 1 || Some(&last) == shape.last()))
    };
    let out = &g.values[n.outputs[0]].ty.shape;
    ELEMENTWISE.contains(&n.op.name())
        && n.outputs.len() == 1
        && same_rows(out, shape)
        && n.inputs.iter().any(|t| chain.contains(t))
        && n.inputs.iter().all(|&t| {
            if chain.contains(&t) {
                g.values[t].ty.shape == *out
            } else {
                g.values[t].konst.is_some() && row_constant(t)
            }
        })
}

/// The chain starting at node `a`, in graph order, its `last` node and its output tensor; `None` when the nodes reading its
/// hidden tensors are not all `middle` ops and one `last` op (then the element-wise ops right after it, which may
/// also read the tensors of `cut`, e.g. the residual add of the MLP's input).
fn chain_from(
    g: &Graph,
    a: NodeId,
    consumers: &[Vec<NodeId>],
    middle: impl Fn(&Node, &[usize], &HashSet<TensorId>) -> bool,
    last: impl Fn(&Node, &HashSet<TensorId>) -> bool,
    cut: &[TensorId],
) -> Option<(Vec<NodeId>, NodeId, TensorId)> {
    let hidden_shape = g.values[g.nodes[a].outputs[0]].ty.shape.clone();
    let mut hidden: HashSet<TensorId> = HashSet::from([g.nodes[a].outputs[0]]);
    let mut nodes = vec![a];
    let mut exit = None;
    for n in a + 1..g.nodes.len() {
        let node = &g.nodes[n];
        if !node.inputs.iter().any(|t| hidden.contains(t)) {
            continue;
        }
        if exit.is_none() && middle(node, &hidden_shape, &hidden) {
            hidden.insert(node.outputs[0]);
        } else if exit.is_none() && last(node, &hidden) {
            exit = Some(n);
        } else {
            return None; // a reader outside the chain (or a second narrowing layer)
        }
        nodes.push(n);
    }
    let exit = exit?;
    if hidden.iter().any(|t| g.outputs.contains(t)) {
        return None;
    }
    // Element-wise ops right after the narrowing layer, each the single reader of the previous output.
    let mut y = g.nodes[*nodes.last()?].outputs[0];
    while let [next] = consumers[y].as_slice() {
        let shape = g.values[y].ty.shape.clone();
        let readable: HashSet<TensorId> = cut.iter().copied().chain([y]).collect();
        if g.outputs.contains(&y) || !is_row_elementwise(g, &g.nodes[*next], &shape, &readable) {
            break;
        }
        nodes.push(*next);
        y = g.nodes[*next].outputs[0];
    }
    Some((nodes, exit, y))
}

/// The most hidden tensors of an MLP chain (`nodes`, narrowing layer `exit`) alive at once, a reshape counting as
/// the tensor it reshapes (it moves no data).
fn hidden_alive(g: &Graph, nodes: &[NodeId], exit: NodeId) -> usize {
    use std::collections::HashMap;
    let mut owner: HashMap<TensorId, TensorId> = HashMap::new();
    // Per hidden tensor: the chain step that writes it and the last one that reads it.
    let mut span: HashMap<TensorId, (usize, usize)> = HashMap::new();
    let mut inside = true;
    for (i, &n) in nodes.iter().enumerate() {
        let node = &g.nodes[n];
        for t in &node.inputs {
            if let Some(s) = owner.get(t).and_then(|o| span.get_mut(o)) {
                s.1 = i;
            }
        }
        inside &= n != exit;
        if inside {
            let out = node.outputs[0];
            let reshaped = node.op.as_any().is::<Reshape>().then(|| owner.get(&node.inputs[0]).copied()).flatten();
            owner.insert(out, reshaped.unwrap_or(out));
            span.entry(reshaped.unwrap_or(out)).or_insert((i, i));
        }
    }
    (0..nodes.len()).map(|i| span.values().filter(|&&(a, b)| a <= i && i <= b).count()).max().unwrap_or(1)
}

/// Rewrites every MLP chain whose first linear layer writes more elements than it reads into blocks of rows:
/// `block_rows` rows per block when given (0: no chunking), else as many blocks as make the hidden tensors of one
/// block alive at once no larger than the chain's input. Returns the chains rewritten.
pub fn chunk_mlps(g: &mut Graph, block_rows: Option<usize>) -> Result<Vec<ChunkedMlp>> {
    if block_rows == Some(0) {
        return Ok(Vec::new());
    }
    let (producers, consumers) = (g.producers(), g.consumers());
    let mut chains = Vec::new();
    let mut taken: HashSet<NodeId> = HashSet::new();
    for a in 0..g.nodes.len() {
        if taken.contains(&a) || !is_linear(g, &g.nodes[a]) {
            continue;
        }
        // A row norm whose output only this layer reads runs in the blocks too (its output then never exists
        // whole); the chain's input is then the norm's, which a residual add after the chain may read as well.
        let norm = producers[g.nodes[a].inputs[0]].filter(|&n| is_row_norm(g, n, &consumers));
        let input = g.nodes[norm.unwrap_or(a)].inputs[0];
        let middle = |n: &Node, shape: &[usize], hidden: &HashSet<TensorId>| {
            is_row_elementwise(g, n, shape, hidden) || is_row_reshape(g, n, shape, hidden)
        };
        let last = |n: &Node, hidden: &HashSet<TensorId>| is_linear(g, n) && hidden.contains(&n.inputs[0]);
        let Some((mut nodes, exit, y)) = chain_from(g, a, &consumers, middle, last, &[input]) else { continue };
        nodes.splice(0..0, norm);
        let x = &g.values[g.nodes[a].inputs[0]].ty;
        let hidden = &g.values[g.nodes[a].outputs[0]].ty;
        let rows = x.len() / x.shape[x.shape.len() - 1].max(1);
        let blocks = (hidden_alive(g, &nodes, exit) * hidden.len()).div_ceil(x.len().max(1)).min(rows);
        let r = block_rows.unwrap_or(rows.div_ceil(blocks.max(1))).min(rows);
        if r >= rows || (block_rows.is_none() && hidden.len() <= x.len()) {
            continue;
        }
        taken.extend(nodes.iter().copied());
        let mlp = ChunkedMlp {
            output: g.values[y].name.clone(),
            rows,
            block_rows: r,
            hidden: hidden.shape[hidden.shape.len() - 1],
        };
        let cut = Cut { inputs: vec![input], axis: 0, len: rows, block: r, flatten: true };
        chains.push((nodes, y, cut, mlp));
    }
    rewrite_chains(g, chains)
}

/// Normalizations over the last axis (int8 ops) an MLP chain may start with.
const ROW_NORMS: [&str; 3] = ["QLayerNorm", "iLayerNorm", "iRMSNorm"];

/// Node `n` is a row norm (its parameters constant) whose output one node reads.
fn is_row_norm(g: &Graph, n: NodeId, consumers: &[Vec<NodeId>]) -> bool {
    let node = &g.nodes[n];
    let y = node.outputs[0];
    ROW_NORMS.contains(&node.op.name())
        && consumers[y].len() == 1
        && !g.outputs.contains(&y)
        && node.inputs[1..].iter().all(|&t| g.values[t].konst.is_some())
}

/// A product of two activations batched over heads (`[1, H, ..]`, mote's `QMatMul` or Deeploy's `MatMul`): the
/// head axis and count.
fn batched_heads(g: &Graph, n: &Node) -> Option<(usize, usize)> {
    let ([a, b], ["MatMul" | "QMatMul"]) = (n.inputs.as_slice(), [n.op.name()]) else { return None };
    let shape = &g.values[n.outputs[0]].ty.shape;
    let axis = shape.iter().position(|&d| d > 1)?;
    let fits = |t: TensorId| {
        let v = &g.values[t];
        v.konst.is_none() && v.ty.shape.len() == shape.len() && v.ty.shape[..=axis] == shape[..=axis]
    };
    (axis + 2 < shape.len() && shape[axis] > 1 && fits(*a) && fits(*b)).then_some((axis, shape[axis]))
}

/// A softmax over the last axis (the same for every head), reading one chain tensor.
fn is_row_softmax(g: &Graph, n: &Node, shape: &[usize], chain: &HashSet<TensorId>) -> bool {
    ["QSoftmax", "ITAMax", "iSoftmax", "Softmax"].contains(&n.op.name())
        && n.outputs.len() == 1
        && g.values[n.outputs[0]].ty.shape == shape
        && chain.contains(&n.inputs[0])
        && n.inputs[1..].iter().all(|&t| g.values[t].konst.is_some())
}

/// One attention block rewritten to run head by head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadByHead {
    /// Name of the block's output tensor (the second product's, or the element-wise ops' after it).
    pub output: String,
    /// Heads.
    pub heads: usize,
    /// Elements of the score map of all heads, of which one head's is alive at a time.
    pub map_elements: usize,
}

/// Rewrites every layer-by-layer attention block — a product of activations batched over heads, element-wise
/// ops and a softmax over the last axis on its scores, and the product with the values — whose scores hold more
/// elements than its queries, keys and values together, to run one head at a time, so one head's scores are alive
/// instead of every head's (the depth-first order of the fused kernel, for blocks it does not take: Deeploy's
/// integer ops). Returns the blocks rewritten.
pub fn split_heads(g: &mut Graph) -> Result<Vec<HeadByHead>> {
    let consumers = g.consumers();
    let mut chains = Vec::new();
    let mut taken: HashSet<NodeId> = HashSet::new();
    for a in 0..g.nodes.len() {
        let Some((axis, heads)) = batched_heads(g, &g.nodes[a]).filter(|_| !taken.contains(&a)) else { continue };
        let middle = |n: &Node, shape: &[usize], hidden: &HashSet<TensorId>| {
            is_row_elementwise(g, n, shape, hidden) || is_row_softmax(g, n, shape, hidden)
        };
        let last = |n: &Node, hidden: &HashSet<TensorId>| {
            batched_heads(g, n) == Some((axis, heads))
                && hidden.contains(&n.inputs[0])
                && !hidden.contains(&n.inputs[1])
        };
        let Some((nodes, exit, y)) = chain_from(g, a, &consumers, middle, last, &[]) else { continue };
        let inputs = vec![g.nodes[a].inputs[0], g.nodes[a].inputs[1], g.nodes[exit].inputs[1]];
        let map = g.values[g.nodes[a].outputs[0]].ty.len();
        if map <= inputs.iter().map(|&t| g.values[t].ty.len()).sum::<usize>() {
            continue; // the scores are no larger than the queries, keys and values: splitting saves little
        }
        taken.extend(nodes.iter().copied());
        let block = HeadByHead { output: g.values[y].name.clone(), heads, map_elements: map };
        chains.push((nodes, y, Cut { inputs, axis, len: heads, block: 1, flatten: false }, block));
    }
    rewrite_chains(g, chains)
}

/// Rewrites each chain `(nodes, output, cut, report)` into its blocks and returns the reports.
fn rewrite_chains<R>(g: &mut Graph, chains: Vec<(Vec<NodeId>, TensorId, Cut, R)>) -> Result<Vec<R>> {
    // Last chain first: a rewrite only moves the nodes after its own first node.
    for (nodes, y, cut, _) in chains.iter().rev() {
        rewrite(g, nodes, *y, cut)?;
    }
    if !chains.is_empty() {
        super::prune(g);
    }
    Ok(chains.into_iter().map(|c| c.3).collect())
}

/// How a chain is cut into blocks: its activation inputs, each cut along `axis` (every axis before it of length 1;
/// axis 0 of an MLP input flattened to `[rows, k]`), `block` of the axis' `len` indices per block.
struct Cut {
    inputs: Vec<TensorId>,
    axis: usize,
    len: usize,
    block: usize,
    /// Flatten the inputs to `[rows, k]` first (and the output back).
    flatten: bool,
}

/// Replaces the chain `nodes` (output `y`) by its blocks, placed where the chain's last node was.
fn rewrite(g: &mut Graph, nodes: &[NodeId], y: TensorId, cut: &Cut) -> Result<()> {
    let first_new = g.nodes.len();
    let mut sources = Vec::new();
    for &t in &cut.inputs {
        let (name, shape) = (g.values[t].name.clone(), g.values[t].ty.shape.clone());
        let src = if cut.flatten && shape.len() != 2 {
            let k = shape[shape.len() - 1];
            let op = Reshape { shape: vec![cut.len, k], label: "Reshape" };
            g.add_node(format!("{name}/rows"), Box::new(op), vec![t], &[format!("{name}/rows")])?[0]
        } else {
            t
        };
        sources.push((t, src));
    }
    let axis = cut.axis;
    let mut blocks = Vec::new();
    for s in (0..cut.len).step_by(cut.block) {
        let e = (s + cut.block).min(cut.len);
        let mut map = std::collections::HashMap::new();
        for &(t, src) in &sources {
            let shape = &g.values[src].ty.shape;
            let at = |a: usize, v: usize, whole: usize| if a == axis { v as i64 } else { whole as i64 };
            let slice = Slice {
                starts: (0..shape.len()).map(|a| at(a, s, 0)).collect(),
                ends: (0..shape.len()).map(|a| at(a, e, shape[a])).collect(),
                steps: vec![1; shape.len()],
            };
            let name = format!("{}/block{s}", g.values[t].name);
            map.insert(t, g.add_node(name.clone(), Box::new(slice), vec![src], &[name])?[0]);
        }
        for &n in nodes {
            let mut node = g.nodes[n].clone();
            // A reshape inside an MLP chain keeps the rows: a block's has the block's rows.
            if let Some(r) = node.op.as_any().downcast_ref::<Reshape>().filter(|_| cut.flatten) {
                node.op = Box::new(Reshape { shape: with_rows(&r.shape, e - s), label: r.label });
            }
            let inputs: Vec<TensorId> = node.inputs.iter().map(|t| *map.get(t).unwrap_or(t)).collect();
            let out = node.outputs[0];
            let name = format!("{}/block{s}", g.values[out].name);
            let t = g.add_node(format!("{}/block{s}", node.name), node.op.clone_box(), inputs, &[name])?[0];
            g.values[t].quant = g.values[out].quant.clone();
            map.insert(out, t);
        }
        blocks.push(map[&y]);
    }
    // The blocks, concatenated (then reshaped) into the chain's own output tensor.
    let y_name = g.values[y].name.clone();
    let y_shape = g.values[y].ty.shape.clone();
    // An MLP block's rows are on the rows axis of the chain's output when a reshape inside gave them its rank.
    let rank = blocks.first().map_or(0, |&b| g.values[b].ty.shape.len());
    let axis = if cut.flatten && rank == y_shape.len() { rows_axis(&y_shape) } else { axis };
    let concat: Box<dyn crate::Op> = Box::new(Concat { axis });
    let joined = g.infer_node(&y_name, concat.as_ref(), &blocks)?;
    if joined.first().map(|t| &t.shape) == Some(&y_shape) {
        g.nodes.push(Node { name: format!("{y_name}/blocks"), op: concat, inputs: blocks, outputs: vec![y] });
    } else {
        let flat = g.add_node(format!("{y_name}/blocks"), concat, blocks, &[format!("{y_name}/blocks")])?[0];
        let op = Reshape { shape: y_shape, label: "Reshape" };
        g.nodes.push(Node {
            name: format!("{y_name}/unblocks"),
            op: Box::new(op),
            inputs: vec![flat],
            outputs: vec![y],
        });
    }
    replace_chain(g, first_new, nodes);
    Ok(())
}

/// Moves the nodes from `first_new` on to where the last of `nodes` was, and removes `nodes` (everything the new
/// nodes read exists by then).
pub(super) fn replace_chain(g: &mut Graph, first_new: usize, nodes: &[NodeId]) {
    let new: Vec<Node> = g.nodes.drain(first_new..).collect();
    let last = *nodes.last().unwrap_or(&0);
    let old = std::mem::take(&mut g.nodes);
    let mut new = Some(new);
    for (i, n) in old.into_iter().enumerate() {
        if i == last {
            g.nodes.extend(new.take().unwrap_or_default());
        } else if !nodes.contains(&i) {
            g.nodes.push(n);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::quant::{AccRescale, QLinear, QLut};
    use crate::{DType, Tensor, TensorType};

    /// `x [1, s, e]` → QLinear to `f` → QLut → QLinear to `e` → y, plus a residual reader of x; with `leak`, the
    /// hidden tensor is also a graph output; with `reshaped`, the table reads the hidden tensor reshaped to
    /// `[s, f]` and the second layer its output reshaped back (as in onnxruntime's QDQ MLPs).
    fn mlp(s: usize, e: usize, f: usize, leak: bool, reshaped: bool) -> (Graph, Tensor) {
        let mut seed = 7u64;
        let mut next = |lo: i32, hi: i32| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + ((seed >> 33) % (hi - lo + 1) as u64) as i32
        };
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I8, vec![1, s, e]), None);
        g.inputs.push(x);
        let mut linear = |g: &mut Graph, name: &str, input: TensorId, n: usize, k: usize| {
            let w: Vec<i8> = (0..n * k).map(|_| next(-127, 127) as i8).collect();
            let w = g.add_const(format!("{name}.w"), Tensor::from_vec(&[n, k], w).unwrap());
            let b: Vec<i32> = (0..n).map(|_| next(-2000, 2000)).collect();
            let b = g.add_const(format!("{name}.b"), Tensor::from_vec(&[n], b).unwrap());
            let mul = (0..n).map(|_| next(1 << 23, 1 << 25)).collect();
            let op =
                QLinear { x_zero_point: next(-5, 5), rescale: AccRescale::HighMul(mul), y_zero_point: next(-5, 5) };
            g.add_node(name, Box::new(op), vec![input, w, b], &[format!("{name}.y")]).unwrap()[0]
        };
        let h = linear(&mut g, "fc1", x, f, e);
        let reshape = |g: &mut Graph, t: TensorId, shape: Vec<usize>, name: &str| match reshaped {
            true => {
                g.add_node(name, Box::new(Reshape { shape, label: "Reshape" }), vec![t], &[name.into()]).unwrap()[0]
            }
            false => t,
        };
        let hr = reshape(&mut g, h, vec![s, f], "h2");
        let table = Box::new(core::array::from_fn(|i| ((i as i32 - 128).max(-20) / 2) as i8));
        let a =
            g.add_node("act", Box::new(QLut { table, label: "test".into() }), vec![hr], &["act.y".into()]).unwrap()[0];
        let a = reshape(&mut g, a, vec![1, s, f], "a3");
        let y = linear(&mut g, "fc2", a, e, f);
        let lut = Box::new(core::array::from_fn(|i| (255 - i) as u8 as i8));
        let r = g
            .add_node("res", Box::new(QLut { table: lut, label: "test".into() }), vec![x], &["res.y".into()])
            .unwrap()[0];
        g.outputs.extend([y, r]);
        if leak {
            g.outputs.push(h);
        }
        let input: Vec<i8> = (0..s * e).map(|i| (i * 37 % 255) as u8 as i8).collect();
        (g, Tensor::from_vec(&[1, s, e], input).unwrap())
    }

    /// Blocks of any size compute the same integers as the whole MLP, with or without reshapes inside it; by
    /// default the hidden tensors of a block alive at once (the first layer's output and the table's, 4 times
    /// wider than the input each) take no more than the input: blocks of an eighth of the rows, rounded up.
    #[test]
    fn blocks_of_rows_compute_the_whole_mlp() {
        for reshaped in [false, true] {
            let (g, x) = mlp(10, 6, 24, false, reshaped);
            let want = g.run(vec![x.clone()]).unwrap();
            for (rows, blocks, slices) in [(None, 2, 5), (Some(1), 1, 10), (Some(3), 3, 4), (Some(9), 9, 2)] {
                let mut c = g.clone();
                let done = chunk_mlps(&mut c, rows).unwrap();
                assert_eq!(done, [ChunkedMlp { output: "fc2.y".into(), rows: 10, block_rows: blocks, hidden: 24 }]);
                let count = |op: &str| c.nodes.iter().filter(|n| n.op.name() == op).count();
                assert_eq!((count("Slice"), count("QLinear"), count("Concat")), (slices, 2 * slices, 1), "{rows:?}");
                assert_eq!(c.run(vec![x.clone()]).unwrap(), want, "{rows:?} {reshaped}");
            }
        }
    }

    /// Layer-by-layer attention over `h` heads of `s` tokens by `p` (queries, transposed keys and values are graph
    /// inputs), causal; with its inputs.
    fn attention(h: usize, s: usize, p: usize) -> (Graph, Vec<Tensor>) {
        use crate::ops::quant::{QMatMul, QSoftmax};
        let mut g = Graph::default();
        let input = |g: &mut Graph, name: &str, shape: Vec<usize>| {
            let t = g.add_value(name, TensorType::new(DType::I8, shape.clone()), None);
            g.inputs.push(t);
            let n = shape.iter().product::<usize>();
            (
                t,
                Tensor::from_vec(&shape, (0..n).map(|i| (((i * 53 + name.len()) % 200) as i32 - 100) as i8).collect())
                    .unwrap(),
            )
        };
        let (q, xq) = input(&mut g, "q", vec![1, h, s, p]);
        let (kt, xk) = input(&mut g, "kt", vec![1, h, p, s]);
        let (v, xv) = input(&mut g, "v", vec![1, h, s, p]);
        let mm = |za: i32, mul: i32| QMatMul {
            a_zero_point: za,
            b_zero_point: 3,
            rescale: AccRescale::HighMul(vec![mul]),
            y_zero_point: -2,
        };
        let sc = g.add_node("scores", Box::new(mm(1, 1 << 26)), vec![q, kt], &["scores".into()]).unwrap()[0];
        let exp = Box::new(core::array::from_fn(|d| (32768.0 * (-0.04 * d as f64).exp()).round() as u16));
        let mask = Some(((0..s * s).map(|i| i % s <= i / s).collect(), s));
        let sm = QSoftmax { exp, out_recip: 256 << 16, out_zero_point: -128, mask };
        let pr = g.add_node("softmax", Box::new(sm), vec![sc], &["probs".into()]).unwrap()[0];
        let y = g.add_node("av", Box::new(mm(-128, 1 << 24)), vec![pr, v], &["av".into()]).unwrap()[0];
        g.outputs.push(y);
        (g, vec![xq, xk, xv])
    }

    /// Head by head, the block computes the same integers; a block whose scores are smaller than its inputs stays.
    #[test]
    fn attention_runs_head_by_head() {
        let (g, x) = attention(3, 8, 2);
        let want = g.run(x.clone()).unwrap();
        let mut c = g.clone();
        let done = split_heads(&mut c).unwrap();
        assert_eq!(done, [HeadByHead { output: "av".into(), heads: 3, map_elements: 192 }]);
        let count = |op: &str| c.nodes.iter().filter(|n| n.op.name() == op).count();
        assert_eq!((count("Slice"), count("QMatMul"), count("QSoftmax"), count("Concat")), (9, 6, 3, 1));
        assert_eq!(c.run(x).unwrap(), want);
        let (mut small, _) = attention(3, 2, 4);
        assert!(split_heads(&mut small).unwrap().is_empty());
    }

    /// A pre-norm MLP, `x + fc2(table(fc1(LayerNorm(x))))`: the norm and the residual add run in the blocks too,
    /// with the same integers; the norm's output then never exists whole.
    #[test]
    fn norm_and_residual_join_the_blocks() {
        use crate::ops::quant::{QBinary, QBinaryKind, QLayerNorm};
        use mote_kernels::elementwise::AddShift;
        let (s, e, f) = (9, 8, 32);
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I8, vec![1, s, e]), None);
        g.inputs.push(x);
        let norm = QLayerNorm {
            gamma: (0..e as i32).map(|i| (1 << 24) + i * 99_999).collect(),
            beta: (0..e as i32).map(|i| i * 77_777 - 300_000).collect(),
            frac_bits: 24,
            eps: 10,
            out_zero_point: -3,
            rms_zero_point: None,
        };
        let xn = g.add_node("norm", Box::new(norm), vec![x], &["xn".into()]).unwrap()[0];
        let linear = |g: &mut Graph, name: &str, input: TensorId, n: usize, k: usize| {
            let w: Vec<i8> = (0..n * k).map(|i| ((i * 29 % 241) as i32 - 120) as i8).collect();
            let w = g.add_const(format!("{name}.w"), Tensor::from_vec(&[n, k], w).unwrap());
            let b = g.add_const(format!("{name}.b"), Tensor::from_vec(&[n], vec![77i32; n]).unwrap());
            let op = QLinear { x_zero_point: -3, rescale: AccRescale::HighMul(vec![1 << 23]), y_zero_point: 2 };
            g.add_node(name, Box::new(op), vec![input, w, b], &[format!("{name}.y")]).unwrap()[0]
        };
        let h = linear(&mut g, "fc1", xn, f, e);
        let table = Box::new(core::array::from_fn(|i| ((i as i32 - 128).max(-20) / 2) as i8));
        let a = g.add_node("act", Box::new(QLut { table, label: "t".into() }), vec![h], &["a".into()]).unwrap()[0];
        let y = linear(&mut g, "fc2", a, e, f);
        let add = AddShift { a_mul: 20_000, b_mul: 13_000, offset: 1_000, shift: 15, act_min: -128, act_max: 127 };
        let op = QBinary { kind: QBinaryKind::AddShift(add) };
        let z = g.add_node("residual", Box::new(op), vec![x, y], &["z".into()]).unwrap()[0];
        g.outputs.push(z);
        let input = Tensor::from_vec(&[1, s, e], (0..s * e).map(|i| (i * 53 % 255) as u8 as i8).collect()).unwrap();
        let want = g.run(vec![input.clone()]).unwrap();
        let mut c = g.clone();
        let done = chunk_mlps(&mut c, Some(4)).unwrap();
        assert_eq!(done, [ChunkedMlp { output: "z".into(), rows: 9, block_rows: 4, hidden: f }]);
        let count = |op: &str| c.nodes.iter().filter(|n| n.op.name() == op).count();
        assert_eq!((count("QLayerNorm"), count("QAdd"), count("Slice"), count("Concat")), (3, 3, 3, 1));
        assert_eq!(c.run(vec![input]).unwrap(), want);
    }

    /// Nothing changes when the hidden tensor is read outside the chain, when chunking is off, or when the
    /// hidden tensor is no wider than the input.
    #[test]
    fn chains_that_cannot_or_need_not_be_cut_stay_whole() {
        for (g, rows) in [
            (mlp(10, 6, 24, true, false).0, None),
            (mlp(10, 6, 24, false, false).0, Some(0)),
            (mlp(10, 6, 6, false, true).0, None),
        ] {
            let mut c = g.clone();
            assert!(chunk_mlps(&mut c, rows).unwrap().is_empty());
            assert_eq!(c.nodes.len(), g.nodes.len());
        }
    }
}
