//! MLP hidden chunks: a linear layer that widens the tokens, the element-wise ops on its wide output, and the
//! linear layer that narrows it back (with the element-wise ops right after it, e.g. Deeploy's bias `Add` and
//! `RequantShift`) run a block of token rows at a time, so only one block of the wide hidden tensors is alive
//! instead of all of it.
//!
//! The rewrite is exact: every op of such a chain maps row i of its inputs to row i of its output (linear layers
//! with constant weights, element-wise ops whose constants are the same for every row), so each block computes
//! the same integers as the whole. The graph says it plainly: the input X (as `[rows, K]`) is cut by row
//! `Slice`s, each block runs copies of the chain's nodes, and a `Concat` of the blocks' outputs (reshaped back)
//! writes the chain's output tensor. Code generation turns those `Slice`s into views of X and the `Concat` into
//! the blocks writing their rows of the output directly, so the rewrite moves no data.
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

/// `n` is element-wise over tensors of `shape` (its data inputs in `chain`), with constants that are the same for
/// every row (all axes but the last of length 1).
fn is_row_elementwise(g: &Graph, n: &Node, shape: &[usize], chain: &HashSet<TensorId>) -> bool {
    let row_constant = |t: TensorId| {
        let s = &g.values[t].ty.shape;
        s.len() <= shape.len()
            && s.split_last()
                .is_none_or(|(&last, lead)| lead.iter().all(|&d| d == 1) && (last == 1 || Some(&last) == shape.last()))
    };
    ELEMENTWISE.contains(&n.op.name())
        && n.outputs.len() == 1
        && g.values[n.outputs[0]].ty.shape == shape
        && n.inputs.iter().any(|t| chain.contains(t))
        && n.inputs.iter().all(|&t| {
            if chain.contains(&t) {
                g.values[t].ty.shape == shape
            } else {
                g.values[t].konst.is_some() && row_constant(t)
            }
        })
}

/// The chain starting at linear node `a`, in graph order, and its output tensor; `None` when the nodes reading
/// its hidden tensors are not all element-wise ops and one narrowing linear layer.
fn chain_from(g: &Graph, a: NodeId, consumers: &[Vec<NodeId>]) -> Option<(Vec<NodeId>, TensorId)> {
    let hidden_shape = g.values[g.nodes[a].outputs[0]].ty.shape.clone();
    let mut hidden: HashSet<TensorId> = HashSet::from([g.nodes[a].outputs[0]]);
    let mut nodes = vec![a];
    let mut exit = None;
    for n in a + 1..g.nodes.len() {
        let node = &g.nodes[n];
        if !node.inputs.iter().any(|t| hidden.contains(t)) {
            continue;
        }
        if exit.is_none() && is_row_elementwise(g, node, &hidden_shape, &hidden) {
            hidden.insert(node.outputs[0]);
        } else if exit.is_none() && is_linear(g, node) && hidden.contains(&node.inputs[0]) {
            exit = Some(n);
        } else {
            return None; // a reader outside the chain (or a second narrowing layer)
        }
        nodes.push(n);
    }
    exit?;
    if hidden.iter().any(|t| g.outputs.contains(t)) {
        return None;
    }
    // Element-wise ops right after the narrowing layer, each the single reader of the previous output.
    let mut y = g.nodes[*nodes.last()?].outputs[0];
    while let [next] = consumers[y].as_slice() {
        let shape = g.values[y].ty.shape.clone();
        if g.outputs.contains(&y) || !is_row_elementwise(g, &g.nodes[*next], &shape, &HashSet::from([y])) {
            break;
        }
        nodes.push(*next);
        y = g.nodes[*next].outputs[0];
    }
    Some((nodes, y))
}

/// Rewrites every MLP chain whose first linear layer writes more elements than it reads into blocks of rows:
/// `block_rows` rows per block when given (0: no chunking), else as many blocks as make one block's hidden
/// tensor no larger than the chain's input. Returns the chains rewritten.
pub fn chunk_mlps(g: &mut Graph, block_rows: Option<usize>) -> Result<Vec<ChunkedMlp>> {
    if block_rows == Some(0) {
        return Ok(Vec::new());
    }
    let consumers = g.consumers();
    let mut chains = Vec::new();
    let mut taken: HashSet<NodeId> = HashSet::new();
    for a in 0..g.nodes.len() {
        if taken.contains(&a) || !is_linear(g, &g.nodes[a]) {
            continue;
        }
        let Some((nodes, y)) = chain_from(g, a, &consumers) else { continue };
        let x = &g.values[g.nodes[a].inputs[0]].ty;
        let hidden = &g.values[g.nodes[a].outputs[0]].ty;
        let rows = x.len() / x.shape[x.shape.len() - 1].max(1);
        let blocks = hidden.len().div_ceil(x.len().max(1)).min(rows);
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
        chains.push((nodes, y, mlp));
    }
    // Last chain first: a rewrite only moves the nodes after its own first node.
    for (nodes, y, mlp) in chains.iter().rev() {
        let x = g.nodes[nodes[0]].inputs[0];
        let k = g.values[x].ty.shape[g.values[x].ty.shape.len() - 1];
        rewrite(g, nodes, x, *y, (mlp.rows, k), mlp.block_rows)?;
    }
    if !chains.is_empty() {
        super::prune(g);
    }
    Ok(chains.into_iter().map(|c| c.2).collect())
}

/// Replaces the chain `nodes` (input `x` of `rows × k`, output `y`) by blocks of `r` rows, placed where the chain's
/// last node was.
fn rewrite(
    g: &mut Graph,
    nodes: &[NodeId],
    x: TensorId,
    y: TensorId,
    (rows, k): (usize, usize),
    r: usize,
) -> Result<()> {
    let first_new = g.nodes.len();
    let x_name = g.values[x].name.clone();
    let x2 = if g.values[x].ty.shape.len() == 2 {
        x
    } else {
        let op = Reshape { shape: vec![rows, k], label: "Reshape" };
        g.add_node(format!("{x_name}/rows"), Box::new(op), vec![x], &[format!("{x_name}/rows")])?[0]
    };
    let mut blocks = Vec::new();
    for s in (0..rows).step_by(r) {
        let e = (s + r).min(rows);
        let slice = Slice { starts: vec![s as i64, 0], ends: vec![e as i64, k as i64], steps: vec![1, 1] };
        let xs = g.add_node(format!("{x_name}/rows{s}"), Box::new(slice), vec![x2], &[format!("{x_name}/rows{s}")])?[0];
        let mut map = std::collections::HashMap::from([(x, xs)]);
        for &n in nodes {
            let node = g.nodes[n].clone();
            let inputs: Vec<TensorId> = node.inputs.iter().map(|t| *map.get(t).unwrap_or(t)).collect();
            let out = node.outputs[0];
            let name = format!("{}/rows{s}", g.values[out].name);
            let t = g.add_node(format!("{}/rows{s}", node.name), node.op.clone_box(), inputs, &[name])?[0];
            g.values[t].quant = g.values[out].quant.clone();
            map.insert(out, t);
        }
        blocks.push(map[&y]);
    }
    // The blocks' rows, concatenated (then reshaped) into the chain's own output tensor.
    let y_name = g.values[y].name.clone();
    let y_shape = g.values[y].ty.shape.clone();
    let concat: Box<dyn crate::Op> = Box::new(Concat { axis: 0 });
    if y_shape.len() == 2 {
        g.infer_node(&y_name, concat.as_ref(), &blocks)?;
        g.nodes.push(Node { name: format!("{y_name}/rows"), op: concat, inputs: blocks, outputs: vec![y] });
    } else {
        let flat = g.add_node(format!("{y_name}/rows"), concat, blocks, &[format!("{y_name}/rows")])?[0];
        let op = Reshape { shape: y_shape, label: "Reshape" };
        g.nodes.push(Node { name: format!("{y_name}/unrows"), op: Box::new(op), inputs: vec![flat], outputs: vec![y] });
    }
    // The new nodes take the place of the chain's last node (everything they read exists by then).
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
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::quant::{AccRescale, QLinear, QLut};
    use crate::{DType, Tensor, TensorType};

    /// `x [1, s, e]` → QLinear to `f` → QLut → QLinear to `e` → y, plus a residual reader of x; with `leak`, the
    /// hidden tensor is also a graph output.
    fn mlp(s: usize, e: usize, f: usize, leak: bool) -> (Graph, Tensor) {
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
        let table = Box::new(core::array::from_fn(|i| ((i as i32 - 128).max(-20) / 2) as i8));
        let a =
            g.add_node("act", Box::new(QLut { table, label: "test".into() }), vec![h], &["act.y".into()]).unwrap()[0];
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

    /// Blocks of any size compute the same integers as the whole MLP; by default the blocks keep a block's
    /// hidden tensor no larger than the input (4 times wider: blocks of a quarter of the rows).
    #[test]
    fn blocks_of_rows_compute_the_whole_mlp() {
        let (g, x) = mlp(10, 6, 24, false);
        let want = g.run(vec![x.clone()]).unwrap();
        for (rows, blocks, slices) in [(None, 3, 4), (Some(1), 1, 10), (Some(3), 3, 4), (Some(9), 9, 2)] {
            let mut c = g.clone();
            let done = chunk_mlps(&mut c, rows).unwrap();
            assert_eq!(done, [ChunkedMlp { output: "fc2.y".into(), rows: 10, block_rows: blocks, hidden: 24 }]);
            let count = |op: &str| c.nodes.iter().filter(|n| n.op.name() == op).count();
            assert_eq!((count("Slice"), count("QLinear"), count("Concat")), (slices, 2 * slices, 1), "{rows:?}");
            assert_eq!(c.run(vec![x.clone()]).unwrap(), want, "{rows:?}");
        }
    }

    /// Nothing changes when the hidden tensor is read outside the chain, when chunking is off, or when the
    /// hidden tensor is no wider than the input.
    #[test]
    fn chains_that_cannot_or_need_not_be_cut_stay_whole() {
        for (g, rows) in
            [(mlp(10, 6, 24, true).0, None), (mlp(10, 6, 24, false).0, Some(0)), (mlp(10, 6, 6, false).0, None)]
        {
            let mut c = g.clone();
            assert!(chunk_mlps(&mut c, rows).unwrap().is_empty());
            assert_eq!(c.nodes.len(), g.nodes.len());
        }
    }
}
