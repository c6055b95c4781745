//! Lowering of QDQ graphs to mote's int8 ops.
//!
//! A QDQ graph (written by onnxruntime's `quantize_static` or by `mote quantize`) computes in
//! float between `DequantizeLinear` (DQ) and `QuantizeLinear` (Q) nodes. The float nodes form
//! *islands*: connected groups whose inputs come from DQ nodes (int8 activations, quantized
//! weights) or float constants, and whose outputs all go to Q nodes. Each island is replaced by
//! int8 ops at the surrounding scales: a MatMul with a quantized weight becomes [`QLinear`], a
//! Softmax (with its scale and mask) [`QSoftmax`], any element-wise chain of one input (GELU's
//! `Div/Erf/Add/Mul`, SiLU, a scalar `Mul`) a 256-entry [`QLut`], and so on. Q nodes on graph
//! inputs and DQ nodes on graph outputs stay: they are the model's float interface.
//! Islands that cannot be integerized are all reported at once.
use super::{quantize_symmetric, Affine};
use crate::ops::conv::{Conv, GlobalAveragePool, MaxPool};
use crate::ops::elementwise::{broadcast_shapes, Binary, BinaryKind, Unary};
use crate::ops::matmul::{Gemm, MatMul};
use crate::ops::nn::{LayerNorm, Reduce, ReduceKind, RmsNorm, Softmax};
use crate::ops::quant::{
    AccRescale, DequantizeLinear, QBinary, QBinaryKind, QConv, QLayerNorm, QLinear, QLut, QMatMul, QMean, QSoftmax,
    QuantizeLinear, Requantize, Rescale,
};
use crate::ops::shape::DATA_MOVEMENT;
use crate::{bail, DType, Error, Graph, Node, NodeId, Op, QuantParams, Result, Tensor, TensorId};
use mote_kernels::elementwise::{AddRequant, MulRequant};
use mote_kernels::host::{layernorm_i8_params, quantize_multiplier, softmax_exp_table, softmax_out_recip};
use std::collections::HashMap;
use std::sync::Arc;

/// True when the graph holds QuantizeLinear or DequantizeLinear nodes.
pub fn is_qdq(g: &Graph) -> bool {
    g.nodes.iter().any(|n| matches!(n.op.name(), "QuantizeLinear" | "DequantizeLinear"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q,
    Dq,
    Float,
}

fn kind(n: &Node) -> Kind {
    match n.op.name() {
        "QuantizeLinear" => Kind::Q,
        "DequantizeLinear" => Kind::Dq,
        _ => Kind::Float,
    }
}

/// Scale and zero point of a Q/DQ node (its constant inputs 1 and 2), checked usable.
fn node_affine(g: &Graph, n: &Node) -> Result<Affine> {
    let axis = if let Some(q) = n.op.as_any().downcast_ref::<QuantizeLinear>() {
        q.axis
    } else if let Some(d) = n.op.as_any().downcast_ref::<DequantizeLinear>() {
        d.axis
    } else {
        bail!("node `{}` is not a Q/DQ node", n.name);
    };
    let scale_id = n.inputs[1];
    let Some(scale) = &g.values[scale_id].konst else {
        bail!("scale `{}` of node `{}` is not a constant", g.values[scale_id].name, n.name);
    };
    let scale = scale.to_f64_vec();
    if let Some(bad) = scale.iter().find(|s| !s.is_finite() || **s <= 0.0) {
        bail!(
            "scale `{}` of {} node `{}` holds {bad}; a quantization scale must be a finite positive number",
            g.values[scale_id].name,
            n.op.name(),
            n.name
        );
    }
    let zero_point = match n.inputs.get(2) {
        Some(&z) => match &g.values[z].konst {
            Some(t) => t.to_i64_vec().into_iter().map(|v| v as i32).collect(),
            None => bail!("zero point `{}` of node `{}` is not a constant", g.values[z].name, n.name),
        },
        None => vec![0; scale.len()],
    };
    if zero_point.len() != scale.len() {
        bail!("node `{}` has {} scales but {} zero points", n.name, scale.len(), zero_point.len());
    }
    let rank = g.values[n.inputs[0]].ty.shape.len();
    let axis = (scale.len() > 1).then(|| crate::ops::resolve_axis(axis, rank)).transpose()?;
    Ok(Affine { scale, zero_point, axis })
}

/// How an island reads one of its inputs.
#[derive(Clone)]
enum Input {
    /// An int8 activation (new-graph id) with its parameters.
    Act(TensorId, Affine),
    /// A quantized constant (the DQ's integer data) with its parameters.
    Weight(Arc<Tensor>, Affine),
    /// A float constant.
    Float(Arc<Tensor>),
    /// A non-float tensor passed through (indices); new-graph id.
    Raw(TensorId),
}

/// One island output: the old float tensor, the Q parameters, and the old Q outputs it feeds.
struct Output {
    old: TensorId,
    affine: Affine,
    q_outputs: Vec<TensorId>,
}

struct Island<'a> {
    nodes: Vec<&'a Node>,
    inputs: HashMap<TensorId, Input>,
    outputs: Vec<Output>,
}

impl Island<'_> {
    fn act(&self, old: TensorId) -> Option<(TensorId, &Affine)> {
        match self.inputs.get(&old) {
            Some(Input::Act(id, a)) => Some((*id, a)),
            _ => None,
        }
    }
}

/// Lowers a QDQ graph to int8 ops; see the module docs.
pub fn lower_qdq(g: &Graph) -> Result<Graph> {
    let kinds: Vec<Kind> = g.nodes.iter().map(kind).collect();
    let (producer, consumers) = (g.producers(), g.consumers());
    let is_output: Vec<bool> = (0..g.values.len()).map(|v| g.outputs.contains(&v)).collect();

    // Islands: connected float nodes (union-find over shared tensors).
    let mut parent: Vec<usize> = (0..g.nodes.len()).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        p[x] = r;
        r
    }
    for (i, n) in g.nodes.iter().enumerate().filter(|(i, _)| kinds[*i] == Kind::Float) {
        for &x in &n.inputs {
            if let Some(p) = producer[x].filter(|&p| kinds[p] == Kind::Float) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, p));
                parent[a] = b;
            }
        }
    }
    let mut members: HashMap<usize, Vec<NodeId>> = HashMap::new();
    for i in (0..g.nodes.len()).filter(|&i| kinds[i] == Kind::Float) {
        let r = find(&mut parent, i);
        members.entry(r).or_default().push(i);
    }
    let island_of: HashMap<NodeId, usize> =
        members.iter().flat_map(|(&r, ms)| ms.iter().map(move |&m| (m, r))).collect();
    let has_dq_input = |ms: &[NodeId]| {
        ms.iter().flat_map(|&m| &g.nodes[m].inputs).any(|&x| producer[x].is_some_and(|p| kinds[p] == Kind::Dq))
    };

    let mut b = Builder { old: g, new: Graph::default(), map: HashMap::new() };
    for &i in &g.inputs {
        let v = &g.values[i];
        let id = b.new.add_value(v.name.clone(), v.ty.clone(), None);
        b.new.inputs.push(id);
        b.map.insert(i, id);
    }
    let mut errors = Vec::new();
    // Int8 tensors (old ids of Q outputs) that a failed region did not produce: regions reading
    // them fail as a consequence, which is not reported again.
    let mut poisoned: std::collections::HashSet<TensorId> = std::collections::HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        match kinds[i] {
            Kind::Q => {
                let src = n.inputs[0];
                let from_island =
                    producer[src].is_some_and(|p| kinds[p] == Kind::Float && has_dq_input(&members[&island_of[&p]]));
                if from_island {
                    continue; // the island emits this Q's output
                }
                let affine = node_affine(g, n)?;
                if let Some(p) = producer[src].filter(|&p| kinds[p] == Kind::Dq) {
                    // DQ → Q: a change of scale on integers.
                    let dq = &g.nodes[p];
                    let from = node_affine(g, dq)?;
                    let x = b.value(dq.inputs[0])?;
                    let y = b.requantize(&n.name, x, &from, &affine, &g.values[n.outputs[0]].name)?;
                    b.map.insert(n.outputs[0], y);
                } else {
                    copy_after(&mut b, n, &errors)?;
                }
            }
            Kind::Dq => {
                let out = n.outputs[0];
                let feeds_kept =
                    consumers[out].iter().any(|&c| kinds[c] == Kind::Float && !has_dq_input(&members[&island_of[&c]]));
                if is_output[out] || feeds_kept {
                    copy_after(&mut b, n, &errors)?;
                }
            }
            Kind::Float => {
                let r = island_of[&i];
                let ms = &members[&r];
                if !has_dq_input(ms) {
                    copy_after(&mut b, n, &errors)?; // float pre-processing of inputs, kept as is
                    continue;
                }
                if *ms.last().expect("non-empty") != i {
                    continue;
                }
                let reads_poisoned = ms.iter().flat_map(|&m| &g.nodes[m].inputs).any(|&x| {
                    producer[x].is_some_and(|p| kinds[p] == Kind::Dq && poisoned.contains(&g.nodes[p].inputs[0]))
                });
                let result = if reads_poisoned {
                    Err(None)
                } else {
                    collect(g, &mut b, ms, &kinds, &producer, &consumers, &is_output)
                        .and_then(|isl| b.emit(&isl))
                        .map_err(Some)
                };
                if let Err(e) = result {
                    for &m in ms {
                        for &o in &g.nodes[m].outputs {
                            poisoned.extend(
                                consumers[o].iter().filter(|&&c| kinds[c] == Kind::Q).map(|&c| g.nodes[c].outputs[0]),
                            );
                        }
                    }
                    if let Some(e) = e {
                        let names: Vec<String> =
                            ms.iter().map(|&m| format!("`{}` ({})", g.nodes[m].name, g.nodes[m].op.name())).collect();
                        errors.push(format!("{}: {e}", names.join(", ")));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} float region(s) of the QDQ model cannot be integerized: {}",
            errors.len(),
            errors.join("; ")
        )));
    }
    for &o in &g.outputs {
        let id = b.value(o)?;
        b.new.outputs.push(id);
    }
    quantize_inputs_first(&mut b.new);
    crate::passes::prune(&mut b.new);
    Ok(b.new)
}

/// Moves the per-tensor `QuantizeLinear` of a graph input above the data-movement ops between them (`x → Reshape →
/// Q` becomes `x → Q → Reshape`), so that the model takes int8 at its edge: onnxruntime's QDQ models reshape the
/// float input before quantizing it. Exact: quantizing element by element commutes with moving elements.
fn quantize_inputs_first(g: &mut Graph) {
    loop {
        let consumers = g.consumers();
        let movable = g.inputs.iter().find_map(|&x| {
            let &[l] = consumers[x].as_slice() else { return None };
            let ln = &g.nodes[l];
            let mid = *ln.outputs.first()?;
            let moves = DATA_MOVEMENT.contains(&ln.op.name()) && ln.outputs.len() == 1;
            if !moves || ln.inputs.iter().position(|&i| i == x) != Some(0) || ln.inputs[1..].contains(&x) {
                return None;
            }
            let &[q] = consumers[mid].as_slice() else { return None };
            let qn = &g.nodes[q];
            let per_tensor = node_affine(g, qn).is_ok_and(|a| a.scale.len() == 1);
            let constants = qn.inputs[1..].iter().all(|&i| g.values[i].konst.is_some());
            (qn.op.as_any().is::<QuantizeLinear>()
                && qn.inputs[0] == mid
                && per_tensor
                && constants
                && !g.outputs.contains(&mid))
            .then_some((x, l, q))
        });
        let Some((x, l, q)) = movable else { return };
        // The data-movement output becomes the quantized input (int8, x's shape); the op then moves int8.
        let (mid, out) = (g.nodes[l].outputs[0], g.nodes[q].outputs[0]);
        g.values[mid].ty.shape = g.values[x].ty.shape.clone();
        g.values[mid].ty.dtype = g.values[out].ty.dtype;
        g.values[mid].quant = g.values[out].quant.clone();
        g.nodes.swap(l, q);
        g.nodes[l].inputs[0] = x;
        g.nodes[l].outputs[0] = mid;
        g.nodes[q].inputs[0] = mid;
        g.nodes[q].outputs[0] = out;
    }
}

/// For an island `MatMul/Gemm [+ Add bias] → (Add/Sub/Mul/Div by a scalar, Round, Clip)+` in one
/// chain, the index of its first rescale node.
fn rescaled_product(isl: &Island) -> Option<usize> {
    let first = isl.nodes.first()?;
    if !(first.op.as_any().is::<MatMul>() || first.op.as_any().is::<Gemm>()) {
        return None;
    }
    let scalar_in = |n: &Node, prev: TensorId| {
        n.inputs.contains(&prev)
            && n.inputs.iter().all(|i| *i == prev || matches!(isl.inputs.get(i), Some(Input::Float(t)) if t.len() == 1))
    };
    let mut prev = first.outputs[0];
    let mut tail = 1;
    if let Some(add) = isl.nodes.get(1) {
        let is_add = add.op.as_any().downcast_ref::<Binary>().is_some_and(|b| b.kind == BinaryKind::Add);
        if is_add && add.inputs.contains(&prev) && !scalar_in(add, prev) && first.op.as_any().is::<MatMul>() {
            prev = add.outputs[0];
            tail = 2;
        }
    }
    let rest = &isl.nodes[tail..];
    let elementwise = |n: &Node| n.op.as_any().is::<Binary>() || n.op.as_any().is::<Unary>();
    if rest.is_empty() {
        return None;
    }
    for n in rest {
        if !elementwise(n) || !scalar_in(n, prev) {
            return None;
        }
        prev = n.outputs[0];
    }
    Some(tail)
}

/// Copies a node unchanged; when an earlier region failed to lower, a missing input is a
/// consequence of that failure (already reported), so the node is skipped.
fn copy_after(b: &mut Builder, n: &Node, errors: &[String]) -> Result<()> {
    match b.copy_node(n) {
        Err(_) if !errors.is_empty() => Ok(()),
        r => r,
    }
}

/// Gathers an island's inputs and outputs, checking every output is quantized.
fn collect<'a>(
    g: &'a Graph,
    b: &mut Builder,
    ms: &[NodeId],
    kinds: &[Kind],
    producer: &[Option<NodeId>],
    consumers: &[Vec<NodeId>],
    is_output: &[bool],
) -> Result<Island<'a>> {
    let inside = |v: TensorId| producer[v].is_some_and(|p| ms.contains(&p));
    let mut inputs = HashMap::new();
    for &m in ms {
        for &x in &g.nodes[m].inputs {
            if inside(x) || inputs.contains_key(&x) {
                continue;
            }
            let input = match producer[x] {
                Some(p) if kinds[p] == Kind::Dq => {
                    let dq = &g.nodes[p];
                    let affine = node_affine(g, dq)?;
                    match &g.values[dq.inputs[0]].konst {
                        Some(t) => Input::Weight(t.clone(), affine),
                        None => {
                            ensure_i8(g, dq.inputs[0])?;
                            Input::Act(b.value(dq.inputs[0])?, affine)
                        }
                    }
                }
                _ => match &g.values[x].konst {
                    Some(t) if t.dtype().is_float() => Input::Float(t.clone()),
                    _ if !g.values[x].ty.dtype.is_float() => Input::Raw(b.value(x)?),
                    _ => bail!("float tensor `{}` enters without quantization", g.values[x].name),
                },
            };
            inputs.insert(x, input);
        }
    }
    let mut outputs = Vec::new();
    for &m in ms {
        for &o in &g.nodes[m].outputs {
            let outside: Vec<NodeId> = consumers[o].iter().copied().filter(|c| !ms.contains(c)).collect();
            if outside.is_empty() && !is_output[o] {
                continue;
            }
            if is_output[o] {
                bail!("graph output `{}` is computed in float (no QuantizeLinear after it)", g.values[o].name);
            }
            let mut affine: Option<Affine> = None;
            let mut q_outputs = Vec::new();
            for c in outside {
                if kinds[c] != Kind::Q {
                    bail!("tensor `{}` leaves in float to node `{}`", g.values[o].name, g.nodes[c].name);
                }
                let a = node_affine(g, &g.nodes[c])?;
                if affine.as_ref().is_some_and(|prev| *prev != a) {
                    bail!("tensor `{}` is quantized twice with different scales", g.values[o].name);
                }
                if g.values[g.nodes[c].outputs[0]].ty.dtype != DType::I8 {
                    bail!(
                        "tensor `{}` is quantized to {} (mote's int8 ops need int8)",
                        g.values[o].name,
                        g.values[g.nodes[c].outputs[0]].ty.dtype
                    );
                }
                affine = Some(a);
                q_outputs.push(g.nodes[c].outputs[0]);
            }
            let affine = affine.expect("at least one Q consumer");
            if !affine.is_per_tensor() {
                bail!(
                    "activation `{}` is quantized per channel; mote needs one scale per activation",
                    g.values[o].name
                );
            }
            outputs.push(Output { old: o, affine, q_outputs });
        }
    }
    Ok(Island { nodes: ms.iter().map(|&m| &g.nodes[m]).collect(), inputs, outputs })
}

fn ensure_i8(g: &Graph, v: TensorId) -> Result<()> {
    let d = g.values[v].ty.dtype;
    if d != DType::I8 {
        bail!("activation `{}` is {d}; mote's int8 ops need int8 activations (QuantType.QInt8)", g.values[v].name);
    }
    Ok(())
}

struct Builder<'a> {
    old: &'a Graph,
    new: Graph,
    map: HashMap<TensorId, TensorId>,
}

/// A float constant's scalar value, if it has one element.
fn scalar(t: &Tensor) -> Option<f64> {
    (t.len() == 1).then(|| t.to_f64_vec()[0])
}

/// The real values of a constant operand (float, or dequantized), or an error naming `what`.
fn const_real(input: &Input, what: &str) -> Result<Vec<f64>> {
    match input {
        Input::Float(t) => Ok(t.to_f64_vec()),
        Input::Weight(t, a) => Ok(dequant(t, a)),
        _ => bail!("{what} must be constant"),
    }
}

/// Dequantizes a quantized constant to f64 values (per-tensor or per-channel).
fn dequant(t: &Tensor, a: &Affine) -> Vec<f64> {
    let shape = t.shape();
    let inner: usize = a.axis.map_or(1, |ax| shape[ax + 1..].iter().product());
    let ch = a.scale.len();
    t.to_i64_vec()
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = (i / inner) % ch;
            (q - i64::from(a.zero_point[c])) as f64 * a.scale[c]
        })
        .collect()
}

impl Builder<'_> {
    /// The new id of an old tensor, copying constants on first use.
    fn value(&mut self, old: TensorId) -> Result<TensorId> {
        if let Some(&id) = self.map.get(&old) {
            return Ok(id);
        }
        let v = &self.old.values[old];
        match &v.konst {
            Some(t) => {
                let id = self.new.add_value(v.name.clone(), v.ty.clone(), Some(t.clone()));
                self.map.insert(old, id);
                Ok(id)
            }
            None => bail!("tensor `{}` is used before it is computed", v.name),
        }
    }

    fn copy_node(&mut self, n: &Node) -> Result<()> {
        let inputs = n.inputs.iter().map(|&x| self.value(x)).collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = n.outputs.iter().map(|&o| self.old.values[o].name.clone()).collect();
        let outs = self.new.add_node(n.name.clone(), n.op.clone(), inputs, &names)?;
        for (&o, id) in n.outputs.iter().zip(outs) {
            self.map.insert(o, id);
        }
        Ok(())
    }

    fn konst(&mut self, name: String, t: Tensor) -> TensorId {
        self.new.add_const(name, t)
    }

    /// Adds an int8 op node producing one output named `name` with parameters `affine`.
    fn node(
        &mut self,
        name: &str,
        op: Box<dyn Op>,
        inputs: Vec<TensorId>,
        out: &str,
        affine: &Affine,
    ) -> Result<TensorId> {
        let id = self.new.add_node(name.to_string(), op, inputs, &[out.to_string()])?[0];
        self.new.values[id].quant = Some(QuantParams {
            scale: affine.scale.iter().map(|&s| s as f32).collect(),
            zero_point: affine.zero_point.clone(),
            axis: affine.axis,
        });
        Ok(id)
    }

    /// `x` (int8 with `from`) re-expressed with `to`; the same id when they are equal.
    fn requantize(&mut self, node: &str, x: TensorId, from: &Affine, to: &Affine, out: &str) -> Result<TensorId> {
        let (sx, zx) = from.single("the requantized tensor")?;
        let (sy, zy) = to.single("the requantized tensor")?;
        if (sx, zx) == (sy, zy) {
            return Ok(x);
        }
        let op = Requantize { x_zero_point: zx, rescale: Rescale::from_reals(&[sx / sy]), y_zero_point: zy };
        self.node(&format!("{node}:requant"), Box::new(op), vec![x], &format!("{out}:requant"), to)
    }

    /// An int8 operand for element-wise ops: an activation as is, a constant quantized per tensor.
    fn int8_operand(&mut self, name: &str, input: &Input) -> Result<(TensorId, f64, i32)> {
        match input {
            Input::Act(id, a) => {
                let (s, z) = a.single(name)?;
                Ok((*id, s, z))
            }
            Input::Weight(t, a) if a.is_per_tensor() && t.dtype() == DType::I8 => {
                let id = self.konst(name.to_string(), (**t).clone());
                Ok((id, a.scale[0], a.zero_point[0]))
            }
            Input::Weight(t, a) => {
                let real: Vec<f32> = dequant(t, a).iter().map(|&v| v as f32).collect();
                self.quantized_const(name, &real, t.shape())
            }
            Input::Float(t) => self.quantized_const(name, &t.to_f32().iter().copied().collect::<Vec<_>>(), t.shape()),
            Input::Raw(_) => bail!("`{name}` is not a float tensor"),
        }
    }

    fn quantized_const(&mut self, name: &str, real: &[f32], shape: &[usize]) -> Result<(TensorId, f64, i32)> {
        let (q, s) = quantize_symmetric(real, shape, None);
        let id = self.konst(format!("{name}:q"), Tensor::from_vec(shape, q)?);
        Ok((id, s[0], 0))
    }

    fn emit(&mut self, isl: &Island) -> Result<()> {
        if let Some((out, id)) = self.try_lut(isl)? {
            return self.bind(isl, out, id);
        }
        if isl.nodes.last().is_some_and(|n| n.op.as_any().is::<Softmax>()) {
            let (out, id) = self.softmax(isl)?;
            return self.bind(isl, out, id);
        }
        if let Some(tail) = rescaled_product(isl) {
            return self.exact_linear(isl, tail);
        }
        if let [mm, add] = isl.nodes.as_slice() {
            let bias = add.inputs.iter().find(|&&i| i != mm.outputs[0]).and_then(|i| isl.inputs.get(i));
            let is_add = add.op.as_any().downcast_ref::<Binary>().is_some_and(|b| b.kind == BinaryKind::Add);
            if mm.op.as_any().is::<MatMul>() && is_add && add.inputs.contains(&mm.outputs[0]) {
                if let Some(bias @ (Input::Float(_) | Input::Weight(..))) = bias {
                    return self.matmul(isl, mm, Some(bias.clone()));
                }
            }
        }
        if isl.nodes.len() != 1 {
            bail!("mote integerizes single ops, element-wise chains of one input, and softmax with scale/mask; not this combination");
        }
        let n = isl.nodes[0];
        let op = n.op.as_any();
        if op.is::<MatMul>() || op.is::<Gemm>() {
            let bias = n.inputs.get(2).map(|i| isl.inputs[i].clone());
            return self.matmul(isl, n, bias);
        }
        if let Some(bin) = op.downcast_ref::<Binary>() {
            return self.binary(isl, n, bin.kind);
        }
        if let Some(ln) = op.downcast_ref::<LayerNorm>() {
            return self.norm(isl, n, Some(ln.axis), ln.epsilon);
        }
        if let Some(rms) = op.downcast_ref::<RmsNorm>() {
            return self.norm(isl, n, None, rms.epsilon);
        }
        if let Some(r) = op.downcast_ref::<Reduce>() {
            if r.kind == ReduceKind::Mean {
                return self.mean(isl, n, r.axes.clone(), r.keepdims);
            }
        }
        if op.is::<GlobalAveragePool>() {
            let rank = self.old.values[n.inputs[0]].ty.shape.len();
            return self.mean(isl, n, (2..rank).collect(), true);
        }
        if let Some(c) = op.downcast_ref::<Conv>() {
            return self.conv(isl, n, c);
        }
        if op.is::<MaxPool>() || n.op.name() == "Concat" || DATA_MOVEMENT.contains(&n.op.name()) {
            return self.data_movement(isl, n);
        }
        bail!("no int8 lowering for {} yet", n.op.name())
    }

    /// Binds island output `out` to the new int8 tensor `id`, which takes the name of the
    /// first Q output (`t:q` in models written by `mote quantize`) and the Q parameters.
    fn bind(&mut self, isl: &Island, out: usize, id: TensorId) -> Result<()> {
        let o = &isl.outputs[out];
        for &q in &o.q_outputs {
            self.map.insert(q, id);
        }
        let v = &mut self.new.values[id];
        v.name = self.old.values[o.q_outputs[0]].name.clone();
        v.quant = Some(QuantParams {
            scale: o.affine.scale.iter().map(|&s| s as f32).collect(),
            zero_point: o.affine.zero_point.clone(),
            axis: o.affine.axis,
        });
        Ok(())
    }

    /// `(scale, zero_point)` of the island's only output.
    fn single_output(isl: &Island) -> Result<(f64, i32)> {
        let [o] = isl.outputs.as_slice() else {
            bail!("the region has {} quantized outputs, this lowering needs exactly one", isl.outputs.len());
        };
        o.affine.single("the output")
    }

    fn out_name(&self, isl: &Island, k: usize) -> String {
        self.old.values[isl.outputs[k].q_outputs[0]].name.clone()
    }

    /// Element-wise chains of one int8 input (and scalar constants) → a 256-entry table.
    fn try_lut(&mut self, isl: &Island) -> Result<Option<(usize, TensorId)>> {
        let acts: Vec<(&TensorId, &Input)> = isl.inputs.iter().filter(|(_, i)| matches!(i, Input::Act(..))).collect();
        let [(&x_old, Input::Act(x, xa))] = acts.as_slice() else { return Ok(None) };
        let elementwise = isl.nodes.iter().all(|n| {
            let op = n.op.as_any();
            (op.is::<Unary>() || op.is::<Binary>())
                && n.inputs.iter().all(|i| match isl.inputs.get(i) {
                    Some(Input::Float(t)) | Some(Input::Weight(t, _)) => t.len() == 1,
                    Some(Input::Act(..)) => true,
                    Some(Input::Raw(_)) => false,
                    None => true, // produced inside
                })
        });
        if !elementwise || isl.outputs.len() != 1 || xa.scale.len() != 1 {
            return Ok(None);
        }
        let (sx, zx) = (xa.scale[0], xa.zero_point[0]);
        let mut vals: HashMap<TensorId, Tensor> = HashMap::new();
        let domain: Vec<f32> = (-128..=127).map(|q: i32| ((q - zx) as f64 * sx) as f32).collect();
        vals.insert(x_old, Tensor::from_vec(&[256], domain)?);
        for n in &isl.nodes {
            let args: Vec<Tensor> = n
                .inputs
                .iter()
                .map(|i| match (vals.get(i), isl.inputs.get(i)) {
                    (Some(t), _) => Ok(t.clone()),
                    (None, Some(Input::Float(t))) => Ok(Tensor::from_vec(&[1], vec![scalar(t).unwrap_or(0.0) as f32])?),
                    (None, Some(Input::Weight(t, a))) => Ok(Tensor::from_vec(&[1], vec![dequant(t, a)[0] as f32])?),
                    _ => bail!("element-wise input missing"),
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = args.iter().collect();
            let outs = n.op.eval(&refs)?;
            for (&o, t) in n.outputs.iter().zip(outs) {
                vals.insert(o, t);
            }
        }
        let o = &isl.outputs[0];
        let (sy, zy) = o.affine.single("the output")?;
        let y = vals[&o.old].to_f32();
        if y.len() != 256 {
            return Ok(None);
        }
        let table: [i8; 256] =
            std::array::from_fn(|i| ((f64::from(y[i]) / sy).round() + f64::from(zy)).clamp(-128.0, 127.0) as i8);
        let label = isl.nodes.iter().map(|n| n.op.name()).collect::<Vec<_>>().join("+");
        let name = isl.nodes.last().expect("non-empty").name.clone();
        let op = QLut { table: Box::new(table), label };
        let id = self.node(&name, Box::new(op), vec![*x], &self.out_name(isl, 0), &o.affine)?;
        Ok(Some((0, id)))
    }

    /// `[Mul/Div by a scalar]* [Add mask]? Softmax` → [`QSoftmax`].
    fn softmax(&mut self, isl: &Island) -> Result<(usize, TensorId)> {
        let (sy, zy) = Self::single_output(isl)?;
        let sm = isl.nodes.last().expect("non-empty");
        let softmax = sm.op.as_any().downcast_ref::<Softmax>().expect("checked");
        let x_shape = self.old.values[sm.inputs[0]].ty.shape.clone();
        if softmax.axis + 1 != x_shape.len() {
            bail!("Softmax over axis {} of {:?} (mote's int8 softmax works on the last axis)", softmax.axis, x_shape);
        }
        let mut scale = 1.0f64;
        let mut mask: Option<Arc<Tensor>> = None;
        let mut cur: Option<TensorId> = None;
        for n in &isl.nodes[..isl.nodes.len() - 1] {
            let Some(bin) = n.op.as_any().downcast_ref::<Binary>() else {
                bail!("{} before Softmax", n.op.name());
            };
            let (dynamic, konst) = match (isl.inputs.get(&n.inputs[0]), isl.inputs.get(&n.inputs[1])) {
                (_, Some(Input::Float(t))) => (n.inputs[0], t.clone()),
                (Some(Input::Float(t)), _) if bin.kind != BinaryKind::Div => (n.inputs[1], t.clone()),
                _ => bail!("{} of two activations before Softmax", n.op.name()),
            };
            if cur.is_some_and(|c| c != dynamic) {
                bail!("branching before Softmax");
            }
            cur = Some(n.outputs[0]);
            match (bin.kind, scalar(&konst)) {
                (BinaryKind::Mul, Some(c)) if c > 0.0 => scale *= c,
                (BinaryKind::Div, Some(c)) if c > 0.0 => scale /= c,
                (BinaryKind::Add, _) if mask.is_none() => mask = Some(konst),
                _ => bail!("{} by a constant before Softmax is not a positive scale or an additive mask", n.op.name()),
            }
        }
        let acts: Vec<(TensorId, &Affine)> = isl.inputs.keys().filter_map(|&k| isl.act(k)).collect();
        let [(x, xa)] = acts.as_slice() else { bail!("softmax needs exactly one int8 input") };
        let (sx, _) = xa.single("the softmax input")?;
        let out_recip =
            softmax_out_recip(sy).ok_or_else(|| Error::Invalid(format!("softmax output scale {sy} is too small")))?;
        let mask = mask.map(|m| softmax_mask(&m, &x_shape)).transpose()?;
        let op = QSoftmax { exp: Box::new(softmax_exp_table(sx * scale)), out_recip, out_zero_point: zy, mask };
        let id = self.node(&sm.name, Box::new(op), vec![*x], &self.out_name(isl, 0), &isl.outputs[0].affine)?;
        Ok((0, id))
    }

    /// MatMul/Gemm (with an optional constant bias, from Gemm's C or a following Add).
    fn matmul(&mut self, isl: &Island, n: &Node, bias: Option<Input>) -> Result<()> {
        let (sy, zy) = Self::single_output(isl)?;
        let out = self.out_name(isl, 0);
        let affine = isl.outputs[0].affine.clone();
        let gemm = n.op.as_any().downcast_ref::<Gemm>();
        if let Some(gm) = gemm {
            if gm.trans_a || gm.alpha != 1.0 || (n.inputs.len() > 2 && gm.beta != 1.0) {
                bail!("Gemm with transA or alpha/beta other than 1");
            }
        }
        let (a, b) = (&isl.inputs[&n.inputs[0]], &isl.inputs[&n.inputs[1]]);
        let Input::Act(x, xa) = a else { bail!("the first MatMul operand must be an int8 activation") };
        let (sx, zx) = xa.single("the MatMul input")?;
        // Activation × activation (attention): QMatMul.
        if let Input::Act(w, wa) = b {
            let (sw, zw) = wa.single("the second MatMul operand")?;
            let op = QMatMul {
                a_zero_point: zx,
                b_zero_point: zw,
                rescale: AccRescale::from_reals(&[sx * sw / sy]),
                y_zero_point: zy,
            };
            let id = self.node(&n.name, Box::new(op), vec![*x, *w], &out, &affine)?;
            return self.bind(isl, 0, id);
        }
        // Weight as [N, K] int8 with per-channel scales.
        let trans_b = gemm.is_some_and(|g| g.trans_b);
        let (w_nk, sw) = self.weight_nk(b, trans_b, &self.old.values[n.inputs[1]].name.clone())?;
        let bias = bias.map(|b| self.bias(&n.name, &b, sx, &sw)).transpose()?;
        let wid = self.konst(format!("{}:w", n.name), w_nk);
        let reals: Vec<f64> = sw.iter().map(|&s| sx * s / sy).collect();
        let op = QLinear { x_zero_point: zx, rescale: AccRescale::from_reals(&reals), y_zero_point: zy };
        let mut inputs = vec![*x, wid];
        inputs.extend(bias);
        let id = self.node(&n.name, Box::new(op), inputs, &out, &affine)?;
        self.bind(isl, 0, id)
    }

    /// `MatMul/Gemm [+ bias] → scalar float rescales` on integer-valued operands (a fake-quantized
    /// layer: int8 input at scale 1, weights at scale 1, integer bias): the float output is a
    /// function of the integer accumulator alone, tabulated over every accumulator value the layer
    /// can produce by the island's own float ops and output QuantizeLinear, and applied exactly
    /// with [`QLinearThreshold`](super::exact::QLinearThreshold).
    fn exact_linear(&mut self, isl: &Island, tail: usize) -> Result<()> {
        let _ = Self::single_output(isl)?;
        let mm = isl.nodes[0];
        let gemm = mm.op.as_any().downcast_ref::<Gemm>();
        if gemm.is_some_and(|g| g.trans_a || g.alpha != 1.0 || (mm.inputs.len() > 2 && g.beta != 1.0)) {
            bail!("Gemm with transA or alpha/beta other than 1");
        }
        let Input::Act(x, xa) = &isl.inputs[&mm.inputs[0]] else {
            bail!("the first MatMul operand must be an int8 activation")
        };
        let (sx, zx) = xa.single("the MatMul input")?;
        let need = "a MatMul followed by float rescales is integerized exactly for integer-valued operands only";
        if sx != 1.0 {
            bail!("{need}: its input has scale {sx}, not 1");
        }
        let trans_b = gemm.is_some_and(|g| g.trans_b);
        let name = self.old.values[mm.inputs[1]].name.clone();
        let (w_nk, sw) = self.weight_nk(&isl.inputs[&mm.inputs[1]], trans_b, &name)?;
        if sw.iter().any(|&s| s != 1.0) {
            bail!("{need}: weight `{name}` has scales other than 1");
        }
        // The bias: Gemm's C, or the constant operand of an Add right after the product.
        let bias_input = match gemm {
            Some(_) => mm.inputs.get(2).map(|i| isl.inputs[i].clone()),
            None if tail == 2 => {
                let add = isl.nodes[1];
                add.inputs.iter().find(|&&i| i != mm.outputs[0]).map(|i| isl.inputs[i].clone())
            }
            None => None,
        };
        let (n, k) = (w_nk.shape()[0], w_nk.shape()[1]);
        let bias: Vec<i64> = match &bias_input {
            Some(b) => {
                let real = const_real(b, "the bias")?;
                if real.len() != n || real.iter().any(|v| v.fract() != 0.0 || v.abs() > f64::from(i32::MAX)) {
                    bail!("{need}: the bias must hold {n} integers");
                }
                real.iter().map(|&v| v as i64).collect()
            }
            None => vec![0; n],
        };
        // Every accumulator value: per output column, over x in [-128 - zx, 127 - zx].
        let w = w_nk.to_i64_vec();
        let (xlo, xhi) = (-128 - i64::from(zx), 127 - i64::from(zx));
        let (mut amin, mut amax) = (i64::MAX, i64::MIN);
        for (j, b) in bias.iter().enumerate() {
            let (lo, hi) = w[j * k..(j + 1) * k]
                .iter()
                .fold((*b, *b), |(lo, hi), &v| (lo + (v * xlo).min(v * xhi), hi + (v * xlo).max(v * xhi)));
            (amin, amax) = (amin.min(lo), amax.max(hi));
        }
        // f32 holds every integer below 2^24: the float model's product and bias are exact too.
        if amin.abs().max(amax.abs()) >= 1 << 24 || amax - amin >= 1 << 22 {
            bail!("{need}: accumulators in [{amin}, {amax}] are too wide to tabulate");
        }
        let accs: Vec<f32> = (amin..=amax).map(|a| a as f32).collect();
        let mut cur = Tensor::from_vec(&[accs.len()], accs)?;
        let mut prev = isl.nodes[tail - 1].outputs[0];
        for node in &isl.nodes[tail..] {
            let args = node
                .inputs
                .iter()
                .map(|i| match isl.inputs.get(i) {
                    _ if *i == prev => Ok(cur.clone()),
                    Some(Input::Float(t)) => Ok(Tensor::from_vec(&[1], vec![scalar(t).unwrap_or(0.0) as f32])?),
                    _ => bail!("{need}: `{}` reads more than the accumulator and scalars", node.name),
                })
                .collect::<Result<Vec<Tensor>>>()?;
            let refs: Vec<&Tensor> = args.iter().collect();
            cur = node.op.eval(&refs)?.remove(0);
            prev = node.outputs[0];
        }
        // The model's own output QuantizeLinear.
        let qt = isl.outputs[0].q_outputs[0];
        let Some(q) = self.old.nodes.iter().find(|n| n.outputs.first() == Some(&qt)) else {
            bail!("the output QuantizeLinear of `{}` is missing", self.old.values[isl.outputs[0].old].name)
        };
        let mut qargs = vec![cur];
        for &i in &q.inputs[1..] {
            let Some(t) = &self.old.values[i].konst else {
                bail!("QuantizeLinear `{}` has runtime parameters", q.name)
            };
            qargs.push((**t).clone());
        }
        let refs: Vec<&Tensor> = qargs.iter().collect();
        let y = q.op.eval(&refs)?.remove(0).to_i64_vec();
        let Some((thresholds, lo)) = super::exact::steps(amin, &y) else {
            bail!("{need}: the rescale is not a non-decreasing function of the accumulator");
        };
        let affine = isl.outputs[0].affine.clone();
        let bias = Tensor::from_vec(&[n], bias.iter().map(|&b| b as i32).collect::<Vec<i32>>())?;
        let bid = self.konst(format!("{}:bias", mm.name), bias);
        let wid = self.konst(format!("{}:w", mm.name), w_nk);
        let op = super::exact::QLinearThreshold { x_zero_point: zx, thresholds, lo };
        let name = isl.nodes.last().expect("non-empty").name.clone();
        let id = self.node(&name, Box::new(op), vec![*x, wid, bid], &self.out_name(isl, 0), &affine)?;
        self.bind(isl, 0, id)
    }

    /// A linear/conv bias as an int32 constant at the accumulator scale `s_x·s_w[n]`.
    fn bias(&mut self, node: &str, input: &Input, sx: f64, sw: &[f64]) -> Result<TensorId> {
        let real = const_real(input, "the bias")?;
        if real.len() != sw.len() {
            bail!("a bias of {} values for {} output channels", real.len(), sw.len());
        }
        let q: Vec<i32> = real
            .iter()
            .zip(sw)
            .map(|(&b, &s)| (b / (sx * s)).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
            .collect();
        Ok(self.konst(format!("{node}:bias"), Tensor::from_vec(&[q.len()], q)?))
    }

    /// A MatMul/Gemm weight as int8 `[N, K]` plus one scale per output channel.
    fn weight_nk(&self, b: &Input, trans_b: bool, name: &str) -> Result<(Tensor, Vec<f64>)> {
        let (shape, kn_data, scales): (Vec<usize>, Vec<i8>, Vec<f64>) = match b {
            Input::Weight(t, a) => {
                if t.dtype() != DType::I8 || a.zero_point.iter().any(|&z| z != 0) {
                    bail!(
                        "weight `{name}` must be symmetric int8 (zero point 0), got {} zero points {:?}",
                        t.dtype(),
                        a.zero_point
                    );
                }
                let n_axis = if trans_b { 0 } else { 1 };
                if !a.is_per_tensor() && a.axis != Some(n_axis) {
                    bail!(
                        "weight `{name}` is quantized per channel along axis {:?}, not along its output axis",
                        a.axis
                    );
                }
                let q: Vec<i8> = t.to_i64_vec().iter().map(|&v| v as i8).collect();
                (t.shape().to_vec(), q, a.scale.clone())
            }
            Input::Float(t) => {
                let shape = t.shape().to_vec();
                let data: Vec<f32> = t.to_f32().iter().copied().collect();
                let (q, s) = quantize_symmetric(&data, &shape, Some(if trans_b { 0 } else { 1 }));
                (shape, q, s)
            }
            _ => bail!("the MatMul weight must be a constant"),
        };
        if shape.len() != 2 {
            bail!("weight `{name}` has shape {shape:?}; mote's int8 linear needs a 2-D weight");
        }
        let (n, k) = if trans_b { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
        let nk: Vec<i8> = if trans_b { kn_data } else { (0..n * k).map(|i| kn_data[(i % k) * n + i / k]).collect() };
        let scales = if scales.len() == 1 { vec![scales[0]; n] } else { scales };
        Ok((Tensor::from_vec(&[n, k], nk)?, scales))
    }

    fn binary(&mut self, isl: &Island, n: &Node, kind: BinaryKind) -> Result<()> {
        let (sy, zy) = Self::single_output(isl)?;
        let affine = isl.outputs[0].affine.clone();
        let (a_in, b_in) = (isl.inputs[&n.inputs[0]].clone(), isl.inputs[&n.inputs[1]].clone());
        let (a, sa, za) = self.int8_operand(&format!("{}:a", n.name), &a_in)?;
        let (b, sb, zb) = self.int8_operand(&format!("{}:b", n.name), &b_in)?;
        let kind = match kind {
            BinaryKind::Add | BinaryKind::Sub => {
                let sign = if kind == BinaryKind::Sub { -1.0 } else { 1.0 };
                if let Some(p) = mote_kernels::host::add_shift_params((sa, za), (sb, zb), sign, (sy, zy)) {
                    QBinaryKind::AddShift(p)
                } else {
                    let twice_max = 2.0 * sa.max(sb);
                    let (m1, s1) = quantize_multiplier(sa / twice_max);
                    let (m2, s2) = quantize_multiplier(sign * sb / twice_max);
                    let (mo, so) = quantize_multiplier(twice_max / (f64::from(1u32 << 20) * sy));
                    QBinaryKind::Add(AddRequant {
                        input1_offset: -za,
                        input1_multiplier: m1,
                        input1_shift: s1,
                        input2_offset: -zb,
                        input2_multiplier: m2,
                        input2_shift: s2,
                        left_shift: 20,
                        output_multiplier: mo,
                        output_shift: so,
                        output_offset: zy,
                        act_min: -128,
                        act_max: 127,
                    })
                }
            }
            BinaryKind::Mul => {
                let (mo, so) = quantize_multiplier(sa * sb / sy);
                QBinaryKind::Mul(MulRequant {
                    input1_offset: -za,
                    input2_offset: -zb,
                    output_multiplier: mo,
                    output_shift: so,
                    output_offset: zy,
                    act_min: -128,
                    act_max: 127,
                })
            }
            other => bail!("no int8 lowering for {other:?} of two tensors"),
        };
        let id = self.node(&n.name, Box::new(QBinary { kind }), vec![a, b], &self.out_name(isl, 0), &affine)?;
        self.bind(isl, 0, id)
    }

    /// LayerNorm (`axis`: its first normalized axis) or RMSNorm (`None`, last axis).
    fn norm(&mut self, isl: &Island, n: &Node, axis: Option<usize>, epsilon: f32) -> Result<()> {
        let (sy, zy) = Self::single_output(isl)?;
        let Some((x, xa)) = isl.act(n.inputs[0]) else { bail!("the norm's input must be an int8 activation") };
        let (sx, zx) = xa.single("the norm's input")?;
        let shape = &self.old.values[n.inputs[0]].ty.shape;
        let last = shape.len() - 1;
        if axis.is_some_and(|a| a != last) {
            bail!("LayerNorm over axes {:?}.. of {shape:?} (mote's int8 LayerNorm works on the last axis)", axis);
        }
        let row = shape[last];
        let real = |i: Option<&TensorId>| -> Result<Vec<f64>> {
            Ok(match i.map(|i| &isl.inputs[i]) {
                None => vec![0.0; row],
                Some(input) => const_real(input, "the norm's scale and bias")?,
            })
        };
        let (gamma, beta) = (real(n.inputs.get(1))?, real(n.inputs.get(2))?);
        let (gamma, beta) = (broadcast_row(gamma, row)?, broadcast_row(beta, row)?);
        let (g, b, frac_bits, eps) =
            layernorm_i8_params(&gamma, &beta, f64::from(epsilon), sx, sy).ok_or_else(|| {
                Error::Invalid(format!(
                    "norm parameters do not fit mote's int8 LayerNorm (input scale {sx}, output scale {sy})"
                ))
            })?;
        let rms_zero_point = axis.is_none().then_some(zx);
        let op = QLayerNorm { gamma: g, beta: b, frac_bits, eps, out_zero_point: zy, rms_zero_point };
        let id = self.node(&n.name, Box::new(op), vec![x], &self.out_name(isl, 0), &isl.outputs[0].affine.clone())?;
        self.bind(isl, 0, id)
    }

    fn mean(&mut self, isl: &Island, n: &Node, axes: Vec<usize>, keepdims: bool) -> Result<()> {
        let (sy, zy) = Self::single_output(isl)?;
        let Some((x, xa)) = isl.act(n.inputs[0]) else { bail!("the mean's input must be an int8 activation") };
        let (sx, zx) = xa.single("the mean's input")?;
        let (first, end) = (axes.iter().min().copied().unwrap_or(0), axes.iter().max().map_or(0, |m| m + 1));
        if axes.is_empty() || end - first != axes.len() {
            bail!("mean over non-contiguous axes {axes:?}");
        }
        let count: usize = self.old.values[n.inputs[0]].ty.shape[first..end].iter().product();
        let op = QMean {
            first,
            end,
            keepdims,
            x_zero_point: zx,
            rescale: Rescale::from_reals(&[sx / (count as f64 * sy)]),
            y_zero_point: zy,
        };
        let id = self.node(&n.name, Box::new(op), vec![x], &self.out_name(isl, 0), &isl.outputs[0].affine.clone())?;
        self.bind(isl, 0, id)
    }

    fn conv(&mut self, isl: &Island, n: &Node, c: &Conv) -> Result<()> {
        let (sy, zy) = Self::single_output(isl)?;
        let Some((x, xa)) = isl.act(n.inputs[0]) else { bail!("the Conv input must be an int8 activation") };
        let (sx, zx) = xa.single("the Conv input")?;
        if c.strides.len() != 2 {
            bail!("{}-D convolution (mote's int8 conv is 2-D)", c.strides.len());
        }
        let wname = self.old.values[n.inputs[1]].name.clone();
        let (w, sw): (Tensor, Vec<f64>) = match &isl.inputs[&n.inputs[1]] {
            Input::Weight(t, a)
                if t.dtype() == DType::I8
                    && a.zero_point.iter().all(|&z| z == 0)
                    && (a.is_per_tensor() || a.axis == Some(0)) =>
            {
                let o = t.shape()[0];
                (t.cast(DType::I8), if a.is_per_tensor() { vec![a.scale[0]; o] } else { a.scale.clone() })
            }
            Input::Float(t) => {
                let (q, s) = quantize_symmetric(&t.to_f32().iter().copied().collect::<Vec<_>>(), t.shape(), Some(0));
                (Tensor::from_vec(t.shape(), q)?, s)
            }
            _ => bail!("Conv weight `{wname}` must be a constant, int8 symmetric per output channel"),
        };
        let bias = n.inputs.get(2).map(|i| self.bias(&n.name, &isl.inputs[i], sx, &sw)).transpose()?;
        let wid = self.konst(format!("{}:w", n.name), w);
        let reals: Vec<f64> = sw.iter().map(|&s| sx * s / sy).collect();
        let op = QConv {
            strides: [c.strides[0], c.strides[1]],
            pads: [c.pads[0], c.pads[1], c.pads[2], c.pads[3]],
            dilations: [c.dilations[0], c.dilations[1]],
            group: c.group,
            x_zero_point: zx,
            rescale: AccRescale::from_reals(&reals),
            y_zero_point: zy,
        };
        let mut inputs = vec![x, wid];
        inputs.extend(bias);
        let id = self.node(&n.name, Box::new(op), inputs, &self.out_name(isl, 0), &isl.outputs[0].affine.clone())?;
        self.bind(isl, 0, id)
    }

    /// Reshape/Transpose/Slice/Concat/MaxPool/...: the same op on int8 data, with requantization
    /// where the input and output parameters differ (every Concat input is brought to the output's).
    fn data_movement(&mut self, isl: &Island, n: &Node) -> Result<()> {
        let out_affine = isl
            .outputs
            .first()
            .map(|o| o.affine.clone())
            .ok_or_else(|| Error::Invalid("no quantized output".into()))?;
        let is_concat = n.op.name() == "Concat";
        let mut inputs = Vec::new();
        let mut in_affine: Option<Affine> = None;
        for (k, &i) in n.inputs.iter().enumerate() {
            let id = match &isl.inputs[&i] {
                Input::Raw(id) => *id,
                input @ (Input::Act(..) | Input::Weight(..) | Input::Float(_)) => {
                    let (id, s, z) = self.int8_operand(&format!("{}:{k}", n.name), input)?;
                    let a = Affine::per_tensor(s, z);
                    if is_concat {
                        self.requantize(&format!("{}:{k}", n.name), id, &a, &out_affine, &format!("{}:{k}", n.name))?
                    } else {
                        in_affine.get_or_insert(a);
                        id
                    }
                }
            };
            inputs.push(id);
        }
        let names: Vec<String> = n.outputs.iter().map(|&o| format!("{}:int8", self.old.values[o].name)).collect();
        let outs = self.new.add_node(n.name.clone(), n.op.clone(), inputs, &names)?;
        for (k, (&o, id)) in n.outputs.iter().zip(outs).enumerate() {
            let Some(ob) = isl.outputs.iter().position(|x| x.old == o) else { continue };
            let from =
                if is_concat { out_affine.clone() } else { in_affine.clone().unwrap_or_else(|| out_affine.clone()) };
            let to = isl.outputs[ob].affine.clone();
            let name = self.out_name(isl, ob);
            let y = self.requantize(&format!("{}:{k}", n.name), id, &from, &to, &name)?;
            self.bind(isl, ob, y)?;
        }
        Ok(())
    }
}

/// A LayerNorm parameter of one value or `row` values, as `row` values.
fn broadcast_row(v: Vec<f64>, row: usize) -> Result<Vec<f64>> {
    match v.len() {
        n if n == row => Ok(v),
        1 => Ok(vec![v[0]; row]),
        n => bail!("LayerNorm parameter of {n} values for rows of {row}"),
    }
}

/// An additive softmax mask (0 where allowed, very negative where not) as allowed flags over the
/// smallest trailing block of the scores that it varies over.
fn softmax_mask(m: &Tensor, x_shape: &[usize]) -> Result<(Vec<bool>, usize)> {
    let full = broadcast_shapes(m.shape(), x_shape)?;
    if full != x_shape {
        bail!("softmax mask of shape {:?} does not broadcast to the scores {x_shape:?}", m.shape());
    }
    let rank = x_shape.len();
    let offset = rank - m.shape().len();
    let first = (0..rank).find(|&d| d >= offset && m.shape()[d - offset] != 1).unwrap_or(rank - 1);
    let block = &x_shape[first..];
    let Tensor::F32(a) = m.cast(DType::F32) else { unreachable!("cast to f32") };
    let shape: Vec<usize> = x_shape.iter().enumerate().map(|(d, &s)| if d < first { 1 } else { s }).collect();
    let view = a.broadcast(ndarray::IxDyn(&shape)).ok_or_else(|| Error::Invalid("mask broadcast".into()))?;
    let mut allowed = Vec::with_capacity(view.len());
    for &v in view.iter() {
        if v == 0.0 {
            allowed.push(true);
        } else if v <= -1e4 {
            allowed.push(false);
        } else {
            bail!("softmax mask value {v} is neither 0 nor a large negative number (an additive bias, not a mask)");
        }
    }
    let rows = block[..block.len() - 1].iter().product();
    Ok((allowed, rows))
}
