//! Graph passes: dead-code removal and pattern fusion, and the storage-type analysis of
//! exact-integer graphs ([`narrow`]).
pub mod attention;
pub mod narrow;
pub mod patches;
pub mod rows;

use crate::ops::elementwise::{Binary, BinaryKind, Unary, UnaryKind};
use crate::{Graph, Node, TensorId};

/// Removes nodes whose outputs are all constants (folded) or unused, then drops
/// values no node or graph output refers to, renumbering tensor ids.
pub fn prune(g: &mut Graph) {
    let mut live = vec![false; g.values.len()];
    for &o in g.outputs.iter().chain(&g.inputs) {
        live[o] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        let needed = n.outputs.iter().any(|&o| live[o] && g.values[o].konst.is_none());
        if needed {
            keep[i] = true;
            for &x in &n.inputs {
                live[x] = true;
            }
            for &o in &n.outputs {
                live[o] = true;
            }
        }
    }
    let mut k = keep.iter();
    g.nodes.retain(|_| *k.next().expect("one flag per node"));
    let mut remap = vec![usize::MAX; g.values.len()];
    let mut values = Vec::new();
    for (i, v) in g.values.drain(..).enumerate() {
        if live[i] {
            remap[i] = values.len();
            values.push(v);
        }
    }
    g.values = values;
    for n in &mut g.nodes {
        n.inputs.iter_mut().chain(n.outputs.iter_mut()).for_each(|x| *x = remap[*x]);
    }
    g.inputs.iter_mut().chain(g.outputs.iter_mut()).for_each(|x| *x = remap[*x]);
}

fn binary_kind(n: &Node) -> Option<BinaryKind> {
    n.op.as_any().downcast_ref::<Binary>().map(|b| b.kind)
}

/// The scalar value of a constant tensor, if it is one (any shape with one element).
fn scalar_const(g: &Graph, id: TensorId) -> Option<f64> {
    let t = g.values[id].konst.as_ref()?;
    (t.len() == 1).then(|| t.to_f64_vec()[0])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs()
}

/// For a binary node with one constant scalar operand ≈ `c`, the other operand.
fn other_operand(g: &Graph, n: &Node, kind: BinaryKind, c: f64) -> Option<TensorId> {
    if binary_kind(n)? != kind {
        return None;
    }
    let (a, b) = (n.inputs[0], n.inputs[1]);
    if scalar_const(g, b).is_some_and(|v| close(v, c)) {
        Some(a)
    } else if kind != BinaryKind::Div && scalar_const(g, a).is_some_and(|v| close(v, c)) {
        Some(b)
    } else {
        None
    }
}

/// Recognises GELU written out as `0.5·x·(1 + erf(x/√2))` (as `torch.onnx.export`
/// emits it below opset 20) and replaces it by one `Gelu` op.
pub fn fuse_gelu(g: &mut Graph) {
    let mut producer = vec![None; g.values.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer[o] = Some(i);
        }
        for &x in &n.inputs {
            consumers[x].push(i);
        }
    }
    let single = |v: TensorId| -> Option<usize> {
        match consumers[v].as_slice() {
            [c] if !g.outputs.contains(&v) => Some(*c),
            _ => None,
        }
    };
    let mut rewrites = Vec::new();
    for e in &g.nodes {
        if e.op.as_any().downcast_ref::<Unary>().map(|u| u.kind) != Some(UnaryKind::Erf) {
            continue;
        }
        let Some(id) = producer[e.inputs[0]] else { continue };
        let d = &g.nodes[id];
        let Some(x) = other_operand(g, d, BinaryKind::Div, std::f64::consts::SQRT_2)
            .or_else(|| other_operand(g, d, BinaryKind::Mul, std::f64::consts::FRAC_1_SQRT_2))
        else {
            continue;
        };
        let matched = (|| {
            single(d.outputs[0])?;
            let ia = single(e.outputs[0])?;
            other_operand(g, &g.nodes[ia], BinaryKind::Add, 1.0)?;
            let im = single(g.nodes[ia].outputs[0])?;
            let m = &g.nodes[im];
            if binary_kind(m)? != BinaryKind::Mul {
                return None;
            }
            let other = if m.inputs[0] == g.nodes[ia].outputs[0] { m.inputs[1] } else { m.inputs[0] };
            if other == x {
                // (x·(1+erf))·0.5
                let ih = single(m.outputs[0])?;
                other_operand(g, &g.nodes[ih], BinaryKind::Mul, 0.5).filter(|&v| v == m.outputs[0])?;
                Some(ih)
            } else {
                // (x·0.5)·(1+erf)
                let ih = producer[other]?;
                single(other)?;
                (other_operand(g, &g.nodes[ih], BinaryKind::Mul, 0.5)? == x).then_some(im)
            }
        })();
        if let Some(last) = matched {
            rewrites.push((last, x));
        }
    }
    // The replaced intermediates lose their only consumer; `prune` removes them.
    for (last, x) in rewrites {
        let n = &mut g.nodes[last];
        n.op = Box::new(Unary::new(UnaryKind::Gelu));
        n.inputs = vec![x];
    }
}
