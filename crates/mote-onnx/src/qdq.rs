//! Writing a quantization plan into an ONNX model as QuantizeLinear/DequantizeLinear pairs:
//! the QDQ format onnxruntime writes, so the quantized model stays a standard ONNX file that
//! other tools read, and `mote` lowers it to int8 ops on import.
//!
//! Weights become int8 initializers `W:q` with per-channel `W:scale` behind a DequantizeLinear
//! that outputs the original name; every planned activation `t` gets `Q(t) → t:q → DQ → t:dq`
//! (graph outputs keep their names: the producer writes `t:float` instead).
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto,
};

/// onnxruntime's contrib domain, whose QuantizeLinear/DequantizeLinear take `axis` at any opset.
const MS_DOMAIN: &str = "com.microsoft";
use mote_core::quantize::plan::QuantPlan;
use mote_core::{bail, Error, Result};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// Names of every tensor the model defines (graph inputs, initializers, node outputs).
pub fn tensor_names(model: &[u8]) -> Result<HashSet<String>> {
    let m = decode(model)?;
    let g = m.graph.unwrap_or_default();
    let mut names: HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    names.extend(g.initializer.iter().map(|i| i.name().to_string()));
    names.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    Ok(names)
}

fn decode(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::Invalid(format!("not a valid ONNX model: {e}")))
}

fn tensor(name: String, dtype: DataType, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name),
        data_type: Some(dtype as i32),
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f32_tensor(name: String, dims: &[usize], v: &[f64]) -> TensorProto {
    tensor(name, DataType::Float, dims, v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect())
}

fn i8_tensor(name: String, dims: &[usize], v: &[i8]) -> TensorProto {
    tensor(name, DataType::Int8, dims, v.iter().map(|&x| x as u8).collect())
}

fn node(op: &str, name: String, inputs: [String; 3], output: String, axis: Option<i64>) -> NodeProto {
    NodeProto {
        name: Some(name),
        op_type: Some(op.to_string()),
        input: inputs.to_vec(),
        output: vec![output],
        attribute: axis
            .map(|a| AttributeProto {
                name: Some("axis".into()),
                i: Some(a),
                r#type: Some(AttributeType::Int as i32),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Returns `model` with the plan written in as Q/DQ nodes; see the module docs.
pub fn write_qdq(model: &[u8], plan: &QuantPlan) -> Result<Vec<u8>> {
    let mut m = decode(model)?;
    // Per-axis DequantizeLinear needs opset 13; older models get onnxruntime's contrib op,
    // which has the same semantics and an `axis`, so their other ops keep their opset.
    let opset = m.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map_or(0, |o| o.version());
    let weight_domain = if opset < 13 { MS_DOMAIN } else { "" };
    if opset < 13 && !m.opset_import.iter().any(|o| o.domain() == MS_DOMAIN) {
        m.opset_import.push(OperatorSetIdProto { domain: Some(MS_DOMAIN.into()), version: Some(1) });
    }
    let Some(g) = m.graph.as_mut() else { bail!("the model contains no graph") };
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    let mut front = Vec::new();
    for w in &plan.weights {
        if let Some(pos) = g.initializer.iter().position(|i| i.name() == w.name) {
            g.initializer.remove(pos);
            g.input.retain(|i| i.name() != w.name);
        } else if let Some(out) = g.node.iter_mut().flat_map(|n| n.output.iter_mut()).find(|o| **o == w.name) {
            *out = format!("{}:float", w.name); // the folded producer is now unused
        } else {
            bail!("weight `{}` is not in the model", w.name);
        }
        let c = w.scales.len();
        g.initializer.push(i8_tensor(format!("{}:q", w.name), &w.shape, &w.data));
        g.initializer.push(f32_tensor(format!("{}:scale", w.name), &[c], &w.scales));
        g.initializer.push(i8_tensor(format!("{}:zero_point", w.name), &[c], &vec![0; c]));
        let inputs = [format!("{}:q", w.name), format!("{}:scale", w.name), format!("{}:zero_point", w.name)];
        let mut dq = node(
            "DequantizeLinear",
            format!("{}:DequantizeLinear", w.name),
            inputs,
            w.name.clone(),
            Some(w.axis as i64),
        );
        dq.domain = Some(weight_domain.to_string());
        front.push(dq);
    }

    // Q/DQ pairs, placed right after the node producing each activation (graph inputs: first).
    let mut after: HashMap<String, Vec<NodeProto>> = HashMap::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut producer_renames: HashMap<String, String> = HashMap::new();
    for a in &plan.activations {
        let t = &a.name;
        let (scale, zp) = a.affine.single(t)?;
        g.initializer.push(f32_tensor(format!("{t}:scale"), &[], &[scale]));
        g.initializer.push(i8_tensor(format!("{t}:zero_point"), &[], &[zp as i8]));
        let (src, dst) = if outputs.contains(t) {
            producer_renames.insert(t.clone(), format!("{t}:float"));
            (format!("{t}:float"), t.clone())
        } else {
            renamed.insert(t.clone(), format!("{t}:dq"));
            (t.clone(), format!("{t}:dq"))
        };
        let params = |x: String| [x, format!("{t}:scale"), format!("{t}:zero_point")];
        let pair = vec![
            node("QuantizeLinear", format!("{t}:QuantizeLinear"), params(src), format!("{t}:q"), None),
            node("DequantizeLinear", format!("{t}:DequantizeLinear"), params(format!("{t}:q")), dst, None),
        ];
        after.insert(t.clone(), pair);
    }
    let mut nodes = front;
    for i in g.input.iter().filter_map(|i| after.remove(i.name())) {
        nodes.extend(i);
    }
    for mut n in std::mem::take(&mut g.node) {
        for x in n.input.iter_mut() {
            if let Some(r) = renamed.get(x) {
                *x = r.clone();
            }
        }
        let produced: Vec<String> = n.output.clone();
        for o in n.output.iter_mut() {
            if let Some(r) = producer_renames.get(o) {
                *o = r.clone();
            }
        }
        nodes.push(n);
        for o in produced {
            nodes.extend(after.remove(&o).unwrap_or_default());
        }
    }
    if let Some(missing) = after.keys().next() {
        bail!("activation `{missing}` is not produced by any node of the model");
    }
    g.node = nodes;
    Ok(m.encode_to_vec())
}

/// The result of [`quantize`].
pub struct Quantized {
    /// The QDQ model, serialized.
    pub model: Vec<u8>,
    /// What was quantized and how.
    pub plan: QuantPlan,
    /// The float model as imported.
    pub float: mote_core::Graph,
    /// The QDQ model lowered to int8 ops (what `mote run` executes).
    pub int8: mote_core::Graph,
}

/// Post-training quantization of an ONNX model: calibrate on `samples` (one input list per
/// sample), plan, write QDQ, and lower the result to int8 to prove it integerizes.
pub fn quantize(
    model: &[u8],
    opts: &crate::ImportOptions,
    samples: &[Vec<mote_core::Tensor>],
    method: mote_core::quantize::calib::Method,
) -> Result<Quantized> {
    let float = crate::import(model, opts)?;
    if mote_core::quantize::lower::is_qdq(&float) {
        bail!("the model is already quantized (it has QuantizeLinear/DequantizeLinear nodes)");
    }
    if samples.is_empty() {
        bail!("no calibration samples");
    }
    let names = tensor_names(model)?;
    let plan = mote_core::quantize::plan::plan(&float, samples, method, &|n| names.contains(n))?;
    let qdq = write_qdq(model, &plan)?;
    let int8 = crate::import(&qdq, opts)?;
    Ok(Quantized { model: qdq, plan, float, int8 })
}
