//! Patch-embedding decomposition (MCUFormer): a convolutional tokenizer — a convolution, per-channel element-wise
//! ops on its output (e.g. Deeploy's `RequantShift`) and a pooling — computed a block of pooled rows at a time, so
//! only a block of the convolution's output, the tokenizer's widest tensor, is alive instead of all of it.
//!
//! Each block slices the input rows its pooled rows need (with the kernels' overlap), runs copies of the ops with
//! the padding of its own edges (the top pad in the first block, the bottom one in the last), and a `Concat` along
//! the rows writes the pooled output. Exact: every output element sees the same inputs and padding as before. The
//! price is the convolution rows two blocks share (a pooling window taller than its stride), computed twice.
use super::rows::replace_chain;
use crate::ops::conv::{AveragePool, Conv, MaxPool};
use crate::ops::quant::QConv;
use crate::ops::shape::{Concat, Slice};
use crate::{Graph, Node, NodeId, Op, Result, TensorId};

/// One tokenizer as rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchBlocks {
    /// Name of the pooled output tensor.
    pub output: String,
    /// Rows of the pooled output.
    pub rows: usize,
    /// Pooled rows per block (the last block may have fewer).
    pub block_rows: usize,
    /// Elements of the convolution's output, of which a block's are alive at a time.
    pub conv_elements: usize,
}

/// Per-channel element-wise ops a tokenizer may have between its convolution and its pooling.
const CHANNELWISE: [&str; 8] = ["RequantShift", "Requantize", "QLut", "Add", "Mul", "Relu", "Clip", "QAdd"];

/// The rows side of a convolution or pooling: effective kernel height (dilation included), stride, top and bottom
/// pads. `None` for other ops, and for a pooling that rounds its output size up.
fn row_geometry(g: &Graph, n: &Node) -> Option<(usize, usize, usize, usize)> {
    let op = n.op.as_any();
    let rows = |k: usize, d: &[usize], s: &[usize], pads: &[usize]| {
        let d = d.first().copied().unwrap_or(1);
        (pads.len() == 4).then(|| ((k.max(1) - 1) * d + 1, s.first().copied().unwrap_or(1), pads[0], pads[2]))
    };
    let conv_kernel = || g.values[*n.inputs.get(1)?].ty.shape.get(2).copied();
    if let Some(c) = op.downcast_ref::<Conv>() {
        rows(conv_kernel()?, &c.dilations, &c.strides, &c.pads)
    } else if let Some(c) = op.downcast_ref::<QConv>() {
        rows(conv_kernel()?, &c.dilations, &c.strides, &c.pads)
    } else if let Some(p) = op.downcast_ref::<MaxPool>() {
        rows(*p.kernel.first()?, &p.dilations, &p.strides, &p.pads).filter(|_| !p.ceil_mode)
    } else if let Some(p) = op.downcast_ref::<AveragePool>() {
        rows(*p.kernel.first()?, &p.dilations, &p.strides, &p.pads).filter(|_| !p.ceil_mode)
    } else {
        None
    }
}

/// A copy of the convolution or pooling `op` with top and bottom pads `top`, `bottom`.
fn with_row_pads(op: &dyn Op, top: usize, bottom: usize) -> Option<Box<dyn Op>> {
    macro_rules! repad {
        ($($t:ty),*) => {$(
            if let Some(o) = op.as_any().downcast_ref::<$t>() {
                let mut o = o.clone();
                (o.pads[0], o.pads[2]) = (top, bottom);
                return Some(Box::new(o));
            }
        )*};
    }
    repad!(Conv, QConv, MaxPool, AveragePool);
    None
}

/// The input rows `[lo, hi)` that output rows `o0..o1` of an op of row geometry `(k, s, top)` read from `h` input
/// rows, and the pads `(top, bottom)` that block needs.
fn input_rows((k, s, top): (usize, usize, usize), h: usize, (o0, o1): (usize, usize)) -> (usize, usize, usize, usize) {
    let start = (o0 * s) as isize - top as isize;
    let end = ((o1 - 1) * s + k) as isize - top as isize;
    let (lo, hi) = (start.max(0) as usize, (end.min(h as isize)).max(0) as usize);
    (lo, hi, (lo as isize - start) as usize, (end - hi as isize).max(0) as usize)
}

/// `n` is element-wise on `t` (`[1, C, H, W]`) with constants that are the same for every row and column.
fn is_channelwise(g: &Graph, n: &Node, t: TensorId) -> bool {
    let shape = &g.values[t].ty.shape;
    let per_channel = |c: TensorId| {
        let s = &g.values[c].ty.shape;
        g.values[c].konst.is_some() && (s.iter().product::<usize>() == 1 || (s.len() >= 2 && s.ends_with(&[1, 1])))
    };
    CHANNELWISE.contains(&n.op.name())
        && n.outputs.len() == 1
        && g.values[n.outputs[0]].ty.shape == *shape
        && n.inputs.iter().all(|&i| i == t || per_channel(i))
        && n.inputs.iter().filter(|&&i| i == t).count() == 1
}

/// The tokenizer starting at convolution `c`: its nodes (convolution, element-wise ops, pooling).
fn tokenizer(g: &Graph, c: NodeId, consumers: &[Vec<NodeId>]) -> Option<Vec<NodeId>> {
    let conv = &g.nodes[c];
    let conv_like = conv.op.as_any().is::<Conv>() || conv.op.as_any().is::<QConv>();
    let x = &g.values[conv.inputs[0]].ty.shape;
    let consts = conv.inputs[1..].iter().all(|&t| g.values[t].konst.is_some());
    (conv_like && consts && x.len() == 4 && x[0] == 1 && row_geometry(g, conv).is_some()).then_some(())?;
    let mut nodes = vec![c];
    let mut y = conv.outputs[0];
    loop {
        let &[n] = consumers[y].as_slice() else { return None };
        if g.outputs.contains(&y) || g.nodes[n].inputs[0] != y {
            return None;
        }
        nodes.push(n);
        let pooling = g.nodes[n].op.as_any().is::<MaxPool>() || g.nodes[n].op.as_any().is::<AveragePool>();
        if pooling {
            return row_geometry(g, &g.nodes[n]).map(|_| nodes);
        }
        is_channelwise(g, &g.nodes[n], y).then_some(())?;
        y = g.nodes[n].outputs[0];
    }
}

/// Rewrites every convolutional tokenizer whose convolution output is larger than its pooled output into blocks
/// of `block_rows` pooled rows (0: none; default: the fewest blocks whose convolution rows take no more than the
/// pooled output). Returns the tokenizers rewritten.
pub fn decompose_patch_embeddings(g: &mut Graph, block_rows: Option<usize>) -> Result<Vec<PatchBlocks>> {
    if block_rows == Some(0) {
        return Ok(Vec::new());
    }
    let consumers = g.consumers();
    let found: Vec<Vec<NodeId>> = (0..g.nodes.len()).filter_map(|c| tokenizer(g, c, &consumers)).collect();
    let mut done = Vec::new();
    // Last tokenizer first: a rewrite only moves the nodes after its own first node.
    for nodes in found.into_iter().rev() {
        let (conv, pool) = (nodes[0], nodes[nodes.len() - 1]);
        let conv_out = &g.values[g.nodes[conv].outputs[0]].ty;
        let pooled = &g.values[g.nodes[pool].outputs[0]].ty;
        let (rows, conv_elements) = (pooled.shape[2], conv_out.len());
        if conv_elements <= pooled.len() || rows < 2 {
            continue;
        }
        let (Some(conv_geo), Some(pool_geo)) = (row_geometry(g, &g.nodes[conv]), row_geometry(g, &g.nodes[pool]))
        else {
            continue;
        };
        let conv_rows = |r: usize| (r.max(1) - 1) * pool_geo.1 + pool_geo.0;
        let row_bytes = conv_out.len() / conv_out.shape[2];
        let fits = (1..=rows).rev().find(|&r| conv_rows(r) * row_bytes <= pooled.len()).unwrap_or(1);
        let r = block_rows.unwrap_or(fits).min(rows);
        if r >= rows {
            continue;
        }
        let output = g.values[g.nodes[pool].outputs[0]].name.clone();
        rewrite(g, &nodes, (conv_geo, pool_geo), r)?;
        done.push(PatchBlocks { output, rows, block_rows: r, conv_elements });
    }
    if !done.is_empty() {
        super::prune(g);
    }
    done.reverse();
    Ok(done)
}

/// The row geometries (see [`row_geometry`]) of a tokenizer's convolution and pooling.
type Geometries = ((usize, usize, usize, usize), (usize, usize, usize, usize));

/// Replaces tokenizer `nodes` (row geometries `geo`) by blocks of `r` pooled rows and their concatenation.
fn rewrite(g: &mut Graph, nodes: &[NodeId], geo: Geometries, r: usize) -> Result<()> {
    let first_new = g.nodes.len();
    let (conv, pool) = (&g.nodes[nodes[0]], &g.nodes[nodes[nodes.len() - 1]]);
    let (x, y) = (conv.inputs[0], pool.outputs[0]);
    let ((ck, cs, ct, _), (pk, ps, pt, _)) = geo;
    let (x_shape, conv_h) = (g.values[x].ty.shape.clone(), g.values[conv.outputs[0]].ty.shape[2]);
    let rows = g.values[y].ty.shape[2];
    let mut blocks = Vec::new();
    for p0 in (0..rows).step_by(r) {
        let p1 = (p0 + r).min(rows);
        let (c0, c1, pool_top, pool_bottom) = input_rows((pk, ps, pt), conv_h, (p0, p1));
        let (x0, x1, conv_top, conv_bottom) = input_rows((ck, cs, ct), x_shape[2], (c0, c1));
        let name = format!("{}/rows{x0}", g.values[x].name);
        let slice = Slice {
            starts: vec![0, 0, x0 as i64, 0],
            ends: vec![x_shape[0] as i64, x_shape[1] as i64, x1 as i64, x_shape[3] as i64],
            steps: vec![1; 4],
        };
        let mut t = g.add_node(name.clone(), Box::new(slice), vec![x], &[name])?[0];
        for (i, &n) in nodes.iter().enumerate() {
            let node = g.nodes[n].clone();
            let op = match i {
                0 => with_row_pads(node.op.as_ref(), conv_top, conv_bottom),
                _ if n == nodes[nodes.len() - 1] => with_row_pads(node.op.as_ref(), pool_top, pool_bottom),
                _ => Some(node.op.clone_box()),
            }
            .ok_or_else(|| crate::Error::Invalid(format!("{}: not a convolution or pooling", node.name)))?;
            let inputs = std::iter::once(t).chain(node.inputs[1..].iter().copied()).collect();
            let out = format!("{}/rows{p0}", g.values[node.outputs[0]].name);
            t = g.add_node(format!("{}/rows{p0}", node.name), op, inputs, &[out])?[0];
            g.values[t].quant = g.values[node.outputs[0]].quant.clone();
        }
        blocks.push(t);
    }
    let name = g.values[y].name.clone();
    g.infer_node(&name, &Concat { axis: 2 }, &blocks)?;
    g.nodes.push(Node {
        name: format!("{name}/rows"),
        op: Box::new(Concat { axis: 2 }),
        inputs: blocks,
        outputs: vec![y],
    });
    replace_chain(g, first_new, nodes);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{DType, Tensor, TensorType};

    /// `x [1, 2, h, w]` (i8) → Conv 3×3 (4 channels, `stride`, `pad`) → Relu → MaxPool `k`×`k` stride 2 → y.
    fn tokenizer_graph(h: usize, w: usize, stride: usize, pad: usize, k: usize, pool_pad: usize) -> (Graph, Tensor) {
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::I8, vec![1, 2, h, w]), None);
        g.inputs.push(x);
        let wt: Vec<i8> = (0..4 * 2 * 9).map(|i: i32| (i * 37 % 23 - 11) as i8).collect();
        let wt = g.add_const("w", Tensor::from_vec(&[4, 2, 3, 3], wt).unwrap());
        let conv = Conv { strides: vec![stride, stride], pads: vec![pad; 4], dilations: vec![1, 1], group: 1 };
        let c = g.add_node("conv", Box::new(conv), vec![x, wt], &["c".into()]).unwrap()[0];
        let relu = crate::ops::elementwise::Unary { kind: crate::ops::elementwise::UnaryKind::Relu };
        let a = g.add_node("relu", Box::new(relu), vec![c], &["a".into()]).unwrap()[0];
        let pool = MaxPool {
            kernel: vec![k, k],
            strides: vec![2, 2],
            pads: vec![pool_pad; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let y = g.add_node("pool", Box::new(pool), vec![a], &["y".into()]).unwrap()[0];
        g.outputs.push(y);
        let data = (0..2 * h * w).map(|i| ((i * 53 % 255) as i32 - 127) as i8).collect();
        (g, Tensor::from_vec(&[1, 2, h, w], data).unwrap())
    }

    /// Blocks of any size give the same output as the whole tokenizer, with or without padding, overlapping
    /// pooling windows or not; the default blocks keep the convolution rows of a block within the pooled output.
    #[test]
    fn blocks_of_pooled_rows_compute_the_whole_tokenizer() {
        for (h, w, stride, pad, k, pool_pad) in [(16, 12, 1, 1, 3, 0), (15, 9, 2, 3, 3, 1), (12, 8, 1, 0, 2, 0)] {
            let (g, x) = tokenizer_graph(h, w, stride, pad, k, pool_pad);
            let want = g.run(vec![x.clone()]).unwrap();
            let rows = g.values[g.outputs[0]].ty.shape[2];
            for block in [None, Some(1), Some(2), Some(3), Some(rows - 1)] {
                let mut c = g.clone();
                let done = decompose_patch_embeddings(&mut c, block).unwrap();
                assert_eq!(done.len(), 1, "{h} {stride} {pad} {k} {block:?}");
                let blocks = rows.div_ceil(done[0].block_rows);
                let count = |op: &str| c.nodes.iter().filter(|n| n.op.name() == op).count();
                assert_eq!((count("Conv"), count("MaxPool"), count("Concat")), (blocks, blocks, 1));
                assert_eq!(c.run(vec![x.clone()]).unwrap(), want, "{h} {stride} {pad} {k} {block:?}");
            }
        }
        // 16 x 12 input, stride 1, pad 1: 4 x 16 x 12 convolution outputs, 4 x 7 x 5 pooled: one block's
        // convolution rows (2·r + 1 of 12 elements per channel) may take at most 140 / 4 = 35 elements: r = 1.
        let (mut g, _) = tokenizer_graph(16, 12, 1, 1, 3, 0);
        assert_eq!(decompose_patch_embeddings(&mut g, None).unwrap()[0].block_rows, 1);
    }

    /// A tokenizer whose convolution output is no larger than its pooled output, or is read elsewhere, stays.
    #[test]
    fn tokenizers_that_need_no_blocks_stay_whole() {
        let (mut g, _) = tokenizer_graph(16, 12, 1, 1, 3, 0);
        let a = g.value_by_name("a").unwrap();
        g.outputs.push(a);
        assert!(decompose_patch_embeddings(&mut g, None).unwrap().is_empty());
        let (mut g, _) = tokenizer_graph(16, 12, 1, 1, 3, 0);
        assert!(decompose_patch_embeddings(&mut g, Some(0)).unwrap().is_empty());
        // Two convolutions and no pooling (TinyViT's patch embedding): not a tokenizer of this pass.
        let (mut g, _) = tokenizer_graph(16, 12, 1, 1, 3, 0);
        let pool = g.nodes.iter().position(|n| n.name == "pool").unwrap();
        g.outputs.clear();
        g.nodes.truncate(pool);
        let a = g.value_by_name("a").unwrap();
        let w = g.add_const("w2", Tensor::from_vec(&[4, 4, 3, 3], vec![1i32; 144]).unwrap());
        let conv = Conv { strides: vec![2, 2], pads: vec![1; 4], dilations: vec![1, 1], group: 1 };
        let y = g.add_node("conv2", Box::new(conv), vec![a, w], &["y2".into()]).unwrap()[0];
        g.outputs.push(y);
        let nodes = g.nodes.len();
        assert!(decompose_patch_embeddings(&mut g, None).unwrap().is_empty());
        assert_eq!(g.nodes.len(), nodes);
    }
}
