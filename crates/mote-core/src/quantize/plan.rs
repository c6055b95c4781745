//! Post-training quantization plan of a float graph: which activations get int8 parameters
//! (from calibration) and which weights are quantized per output channel. The plan is written
//! into the ONNX model as QuantizeLinear/DequantizeLinear pairs (`mote-onnx`), and lowering
//! (`super::lower`) turns that model into int8 ops.
//!
//! A fake-quantized model (explicit float quantizers, `super::fakequant`) keeps its own grids:
//! the tensors it quantizes get its exact parameters instead of calibrated ones, its chain
//! intermediates and integer accumulators get none, and its integer-valued weights are quantized
//! with scale 1, so the int8 model computes exactly what the float model computes.
use super::calib::{calibrate, Method, Observer};
use super::{quantize_symmetric, Affine};
use crate::ops::conv::Conv;
use crate::ops::elementwise::{Binary, BinaryKind};
use crate::ops::matmul::{Gemm, MatMul};
use crate::ops::nn::Softmax;
use crate::ops::shape::DATA_MOVEMENT;
use crate::{Graph, Result, Tensor, TensorId};
use std::collections::HashMap;

/// Int8 parameters for one activation, by the tensor's name in the model.
#[derive(Clone, Debug)]
pub struct ActivationQuant {
    /// Tensor name.
    pub name: String,
    /// Per-tensor int8 parameters.
    pub affine: Affine,
}

/// A weight quantized to int8, symmetric per output channel.
#[derive(Clone, Debug)]
pub struct WeightQuant {
    /// Tensor name (initializer or folded constant).
    pub name: String,
    /// Shape of the weight.
    pub shape: Vec<usize>,
    /// Int8 values, row-major.
    pub data: Vec<i8>,
    /// One scale per channel along `axis`.
    pub scales: Vec<f64>,
    /// The output-channel axis.
    pub axis: usize,
}

/// Everything `mote quantize` decided.
#[derive(Clone, Debug, Default)]
pub struct QuantPlan {
    /// Quantized activations, in graph order.
    pub activations: Vec<ActivationQuant>,
    /// Quantized weights.
    pub weights: Vec<WeightQuant>,
}

/// Builds the plan: calibrates every float activation whose name `in_model` accepts on
/// `samples`, and quantizes the weights of MatMul/Gemm/Conv.
pub fn plan(g: &Graph, samples: &[Vec<Tensor>], method: Method, in_model: &dyn Fn(&str) -> bool) -> Result<QuantPlan> {
    let mut uses: Vec<Vec<usize>> = vec![Vec::new(); g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        n.inputs.iter().for_each(|&x| uses[x].push(i));
    }
    let fq = super::fakequant::analyse(g);
    let float_act =
        |v: TensorId| g.values[v].konst.is_none() && g.values[v].ty.dtype.is_float() && !fq.interior.contains(&v);
    let mut order: Vec<TensorId> = g.inputs.iter().copied().filter(|&v| float_act(v)).collect();
    let mut same_as: HashMap<TensorId, TensorId> = HashMap::new();
    for n in &g.nodes {
        for &o in n.outputs.iter().filter(|&&o| float_act(o)) {
            // Data movement (and MaxPool, a subset of its input) reuses the input's parameters, so the
            // int8 graph moves bytes without requantizing.
            if (DATA_MOVEMENT.contains(&n.op.name()) || n.op.name() == "MaxPool") && float_act(n.inputs[0]) {
                same_as.insert(o, *same_as.get(&n.inputs[0]).unwrap_or(&n.inputs[0]));
            }
            // A MatMul whose only use is a bias Add stays inside one int8 linear island.
            let bias_next = n.op.as_any().is::<MatMul>()
                && !g.outputs.contains(&o)
                && matches!(uses[o].as_slice(), [u] if is_bias_add(g, *u, o));
            // An additive attention mask stays inside the softmax island (an int8 -inf is no mask).
            let mask_add =
                matches!(uses[o].as_slice(), [u] if g.nodes[*u].op.as_any().is::<Softmax>()) && is_mask_add(g, n);
            if !bias_next && !mask_add {
                order.push(o);
            }
        }
    }
    let observed: Vec<TensorId> =
        order.iter().filter(|v| !same_as.contains_key(v) && !fq.exact.contains_key(v)).copied().collect();
    let obs: HashMap<TensorId, Observer> = calibrate(g, samples, &observed)?;
    let mut activations = Vec::new();
    for &v in &order {
        let src = same_as.get(&v).copied().unwrap_or(v);
        let affine = match (fq.exact.get(&src), obs.get(&src)) {
            (Some(a), _) => a.clone(),
            (None, Some(o)) => o.int8(method),
            (None, None) => continue,
        };
        if in_model(&g.values[v].name) {
            activations.push(ActivationQuant { name: g.values[v].name.clone(), affine });
        }
    }

    let mut weights: Vec<WeightQuant> = Vec::new();
    for n in &g.nodes {
        let op = n.op.as_any();
        let (input, axis) = if op.is::<MatMul>() {
            (1, 1)
        } else if let Some(gm) = op.downcast_ref::<Gemm>() {
            (1, if gm.trans_b { 0 } else { 1 })
        } else if op.is::<Conv>() {
            (1, 0)
        } else {
            continue;
        };
        let w = n.inputs[input];
        let v = &g.values[w];
        let Some(t) = &v.konst else { continue };
        let rank_ok = if op.is::<Conv>() { v.ty.shape.len() >= 3 } else { v.ty.shape.len() == 2 };
        if !t.dtype().is_float() || !rank_ok || !in_model(&v.name) || weights.iter().any(|q| q.name == v.name) {
            continue;
        }
        let data: Vec<f32> = t.to_f32().iter().copied().collect();
        let exact = if fq.is_empty() { None } else { super::fakequant::integer_weight(&data) };
        let (q, scales) = match exact {
            Some(q) => (q, vec![1.0; v.ty.shape[axis]]),
            None => quantize_symmetric(&data, &v.ty.shape, Some(axis)),
        };
        weights.push(WeightQuant { name: v.name.clone(), shape: v.ty.shape.clone(), data: q, scales, axis });
    }
    Ok(QuantPlan { activations, weights })
}

/// Node `n` adds a constant mask (every value 0 or at most -1e4, e.g. -inf) to an activation.
fn is_mask_add(g: &Graph, n: &crate::Node) -> bool {
    let is_add = n.op.as_any().downcast_ref::<Binary>().is_some_and(|b| b.kind == BinaryKind::Add);
    is_add
        && n.inputs
            .iter()
            .any(|&i| g.values[i].konst.as_ref().is_some_and(|t| t.to_f64_vec().iter().all(|&v| v == 0.0 || v <= -1e4)))
}

/// Node `u` adds a constant vector of the last-axis length to `x` (a linear layer's bias).
fn is_bias_add(g: &Graph, u: usize, x: TensorId) -> bool {
    let n = &g.nodes[u];
    let is_add = n.op.as_any().downcast_ref::<Binary>().is_some_and(|b| b.kind == BinaryKind::Add);
    if !is_add || n.inputs.len() != 2 {
        return false;
    }
    let other = if n.inputs[0] == x { n.inputs[1] } else { n.inputs[0] };
    let last = g.values[x].ty.shape.last().copied().unwrap_or(0);
    g.values[other].konst.is_some() && g.values[other].ty.len() == last
}
