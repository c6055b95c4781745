//! Fake-quantized float models (DeepQuant, Brevitas and similar exports) spell their quantizers out
//! as float ops: `Div(x, s) → [Add(z)] → Round → Clip(lo, hi)` quantizes, `[Sub(z)] → Mul(s)`
//! dequantizes. Such a model already fixes its int8 grids; recalibrating them would change its
//! results. This analysis finds them so that the PTQ plan reproduces the model exactly:
//!
//! * a quantizer's output (integers in `[lo, hi]` ⊂ int8) is int8 with scale 1, zero point 0;
//! * a dequantizer's output `(q − z)·s` is int8 with scale `s`, zero point `z`;
//! * a float tensor read only by quantizers of one `(s, z)` (a model input, a layer's rescaled
//!   accumulator) is int8 with that `(s, z)`: QuantizeLinear then computes exactly what the
//!   quantizer's `Div/Add/Round` computes, and the quantizer's clip is a table lookup on it;
//! * the tensors inside quantizer and dequantizer chains, and the integer accumulators that a
//!   chain of scalar rescales leads from a MatMul/Gemm to such a tensor, get no parameters of their
//!   own: the lowering turns each chain into one exact table, and each accumulator rescale into an
//!   exact step-function requantization (`super::exact`).
use super::Affine;
use crate::ops::elementwise::{Binary, BinaryKind, Unary, UnaryKind};
use crate::ops::matmul::{Gemm, MatMul};
use crate::{Graph, Node, TensorId};
use std::collections::{HashMap, HashSet};

/// What [`analyse`] found.
#[derive(Clone, Debug, Default)]
pub struct FakeQuant {
    /// Exact int8 parameters of the tensors the model quantizes itself.
    pub exact: HashMap<TensorId, Affine>,
    /// Float tensors that get no Q/DQ pair (chain intermediates, integer accumulators).
    pub interior: HashSet<TensorId>,
}

impl FakeQuant {
    /// True when the model has no quantizer chains.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }
}

/// A quantizer chain `Div(x, s) → [Add(z)] → Round → Clip(lo, hi)`.
struct Chain {
    x: TensorId,
    scale: f64,
    zero_point: i32,
    out: TensorId,
    inner: Vec<TensorId>,
}

fn scalar(g: &Graph, t: TensorId) -> Option<f64> {
    let k = g.values[t].konst.as_ref()?;
    (k.len() == 1 && k.dtype().is_float()).then(|| k.to_f64_vec()[0])
}

fn binary(n: &Node) -> Option<BinaryKind> {
    n.op.as_any().downcast_ref::<Binary>().map(|b| b.kind)
}

fn unary(n: &Node) -> Option<UnaryKind> {
    n.op.as_any().downcast_ref::<Unary>().map(|u| u.kind)
}

/// `(other operand, scalar)` when `n` is a binary op of `kind` with a scalar constant second
/// operand (or first, for the commutative Add and Mul).
fn with_scalar(g: &Graph, n: &Node, kind: BinaryKind) -> Option<(TensorId, f64)> {
    if binary(n)? != kind || n.inputs.len() != 2 {
        return None;
    }
    let (a, b) = (n.inputs[0], n.inputs[1]);
    if let Some(c) = scalar(g, b) {
        return Some((a, c));
    }
    let commutes = matches!(kind, BinaryKind::Add | BinaryKind::Mul);
    scalar(g, a).filter(|_| commutes).map(|c| (b, c))
}

fn integral_i8(v: f64) -> Option<i32> {
    (v.fract() == 0.0 && (-128.0..=127.0).contains(&v)).then_some(v as i32)
}

/// Finds the quantizer chains, dequantizers and accumulators of `g`; see the module docs.
pub fn analyse(g: &Graph) -> FakeQuant {
    let (consumers, producer) = (g.consumers(), g.producers());
    // The only consumer of an intermediate tensor.
    let only = |t: TensorId| match consumers[t].as_slice() {
        [c] if !g.outputs.contains(&t) => Some(&g.nodes[*c]),
        _ => None,
    };
    let mut chains = Vec::new();
    for d in &g.nodes {
        let Some((x, s)) = with_scalar(g, d, BinaryKind::Div).filter(|&(_, s)| s > 0.0 && s.is_finite()) else {
            continue;
        };
        let chain = (|| {
            let mut inner = vec![d.outputs[0]];
            let mut next = only(d.outputs[0])?;
            let mut zero_point = 0;
            if let Some((_, z)) = with_scalar(g, next, BinaryKind::Add) {
                zero_point = integral_i8(z)?;
                inner.push(next.outputs[0]);
                next = only(next.outputs[0])?;
            }
            (unary(next)? == UnaryKind::Round).then_some(())?;
            inner.push(next.outputs[0]);
            let clip = only(next.outputs[0])?;
            let UnaryKind::Clip { min, max } = unary(clip)? else { return None };
            integral_i8(f64::from(min))?;
            integral_i8(f64::from(max))?;
            Some(Chain { x, scale: s, zero_point, out: clip.outputs[0], inner })
        })();
        chains.extend(chain);
    }
    let mut fq = FakeQuant::default();
    for c in &chains {
        fq.exact.insert(c.out, Affine::per_tensor(1.0, 0));
        fq.interior.extend(c.inner.iter().copied());
    }
    // Dequantizers of chain outputs: [Sub(z)] → Mul(s).
    for c in &chains {
        for &u in &consumers[c.out] {
            let n = &g.nodes[u];
            let (mul, zp, sub_out) = match with_scalar(g, n, BinaryKind::Sub) {
                Some((src, z)) if src == c.out => match (integral_i8(z), only(n.outputs[0])) {
                    (Some(z), Some(m)) => (m, z, Some(n.outputs[0])),
                    _ => continue,
                },
                _ => (n, 0, None),
            };
            let src = sub_out.unwrap_or(c.out);
            match with_scalar(g, mul, BinaryKind::Mul) {
                Some((x, s)) if x == src && s > 0.0 && s.is_finite() => {
                    fq.exact.insert(mul.outputs[0], Affine::per_tensor(s, zp));
                    fq.interior.extend(sub_out);
                }
                _ => {}
            }
        }
    }
    // Tensors read only by quantizers of one (s, z).
    for c in &chains {
        if fq.exact.contains_key(&c.x) {
            continue;
        }
        let same = consumers[c.x].iter().all(|&u| {
            chains
                .iter()
                .any(|o| o.inner[0] == g.nodes[u].outputs[0] && (o.scale, o.zero_point) == (c.scale, c.zero_point))
        });
        if !same || consumers[c.x].is_empty() {
            continue;
        }
        fq.exact.insert(c.x, Affine::per_tensor(c.scale, c.zero_point));
        // Back through scalar rescales to a MatMul/Gemm accumulator (optionally biased).
        let mut path = Vec::new();
        let mut t = c.x;
        while let Some(p) = producer[t].map(|p| &g.nodes[p]) {
            let scalar_op = [BinaryKind::Sub, BinaryKind::Add, BinaryKind::Mul, BinaryKind::Div]
                .iter()
                .find_map(|&k| with_scalar(g, p, k))
                .map(|(src, _)| src);
            match scalar_op {
                Some(src) if only(src).is_some() => {
                    path.push(src);
                    t = src;
                }
                _ => break,
            }
        }
        let Some(&acc) = path.last() else { continue };
        let is_product = |t: TensorId| {
            producer[t].is_some_and(|p| g.nodes[p].op.as_any().is::<MatMul>() || g.nodes[p].op.as_any().is::<Gemm>())
        };
        let biased = producer[acc].and_then(|p| {
            let n = &g.nodes[p];
            (binary(n)? == BinaryKind::Add).then_some(())?;
            n.inputs.iter().copied().find(|&i| is_product(i) && only(i).is_some())
        });
        if is_product(acc) || biased.is_some() {
            fq.interior.extend(path);
            fq.interior.extend(biased);
        }
    }
    fq
}

/// Integer int8 data of a weight that is integer-valued in [-128, 127] (a fake-quantized model's
/// weights), quantized exactly with scale 1.
pub fn integer_weight(data: &[f32]) -> Option<Vec<i8>> {
    data.iter().map(|&v| integral_i8(f64::from(v)).map(|q| q as i8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Tensor, TensorType};

    fn op(g: &mut Graph, op: Box<dyn crate::Op>, inputs: Vec<TensorId>) -> TensorId {
        let name = format!("n{}", g.nodes.len());
        g.add_node(name.clone(), op, inputs, &[name]).unwrap()[0]
    }

    /// input → quant(1/4) → dequant → MatMul(W int) + b → ·s_acc → quant(1/2, z=1, [0, 15]) → dequant.
    #[test]
    fn finds_quantizers_dequantizers_and_accumulators() {
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::F32, vec![1, 2]), None);
        g.inputs.push(x);
        let k = |g: &mut Graph, v: f32| g.add_const(format!("c{v}_{}", g.values.len()), Tensor::scalar(v));
        let bin = |kind| Box::new(Binary::new(kind));
        let quant = |g: &mut Graph, x: TensorId, s: f32, z: f32, lo: f32, hi: f32| {
            let (s, z) = (k(g, s), k(g, z));
            let d = op(g, bin(BinaryKind::Div), vec![x, s]);
            let a = op(g, bin(BinaryKind::Add), vec![d, z]);
            let r = op(g, Box::new(Unary::new(UnaryKind::Round)), vec![a]);
            op(g, Box::new(Unary::new(UnaryKind::Clip { min: lo, max: hi })), vec![r])
        };
        let q0 = quant(&mut g, x, 0.25, 0.0, -128.0, 127.0);
        let s0 = k(&mut g, 0.25);
        let dq0 = op(&mut g, bin(BinaryKind::Mul), vec![q0, s0]);
        let w = g.add_const("w", Tensor::from_vec(&[2, 2], vec![1f32, -2.0, 3.0, 0.0]).unwrap());
        let mm = op(&mut g, Box::new(MatMul), vec![dq0, w]);
        let b = g.add_const("b", Tensor::from_vec(&[2], vec![5f32, -7.0]).unwrap());
        let acc = op(&mut g, bin(BinaryKind::Add), vec![b, mm]);
        let sacc = k(&mut g, 0.01);
        let scaled = op(&mut g, bin(BinaryKind::Mul), vec![acc, sacc]);
        let q1 = quant(&mut g, scaled, 0.5, 1.0, 0.0, 15.0);
        let z1 = k(&mut g, 1.0);
        let sub = op(&mut g, bin(BinaryKind::Sub), vec![q1, z1]);
        let s1 = k(&mut g, 0.5);
        let y = op(&mut g, bin(BinaryKind::Mul), vec![sub, s1]);
        g.outputs.push(y);

        let fq = analyse(&g);
        let pt = |s, z| Some(Affine::per_tensor(s, z));
        assert_eq!(fq.exact.get(&x).cloned(), pt(0.25, 0));
        assert_eq!(fq.exact.get(&q0).cloned(), pt(1.0, 0));
        assert_eq!(fq.exact.get(&dq0).cloned(), pt(f64::from(0.25f32), 0));
        assert_eq!(fq.exact.get(&scaled).cloned(), pt(0.5, 1));
        assert_eq!(fq.exact.get(&y).cloned(), pt(0.5, 1));
        for t in [mm, acc, sub] {
            assert!(fq.interior.contains(&t), "{}", g.values[t].name);
        }
        assert!(!fq.interior.contains(&dq0) && !fq.exact.contains_key(&mm));
        assert_eq!(integer_weight(&[1.0, -128.0, 127.0]), Some(vec![1, -128, 127]));
        assert_eq!(integer_weight(&[0.5]), None);
        assert_eq!(integer_weight(&[128.0]), None);
    }
}
