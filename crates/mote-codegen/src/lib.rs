//! Code generation: an int8 mote graph → a standalone `#![no_std]` Rust crate that runs it with
//! `mote-kernels` on one statically planned arena.
//!
//! The device part of the graph is everything between the model's float edges: a graph input
//! feeds a `QuantizeLinear` whose int8 output is the device input, and a graph output comes from
//! a `DequantizeLinear` whose int8 input is the device output (the host quantizes and
//! dequantizes, see [`host_reference`]). Every computed tensor gets a byte range in one arena from
//! `mote-plan` (reshapes alias their input); weights and parameters become `static` arrays (flash);
//! each op becomes one kernel call, in schedule order, between `mark(layer)` calls for per-layer
//! instruction counts. The generated code has no heap, no `static mut`, no `unsafe`, and returns
//! an error instead of panicking.
mod emit;

use mote_core::{bail, DType, Graph, NodeId, Result, Tensor, TensorId};
use mote_plan::{Buffer, Strategy};
use std::collections::HashMap;
use std::path::PathBuf;

/// What to generate.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Name of the generated crate.
    pub crate_name: String,
    /// Absolute path of `crates/mote-kernels` (the generated crate depends on it by path).
    pub kernels_path: PathBuf,
    /// Memory-planning strategy for the arena.
    pub strategy: Strategy,
    /// Also build a `staticlib` with a C entry point (`mote_run`), for C firmware to link.
    pub c_abi: bool,
}

/// Arena sizes: the chosen plan, TFLite Micro's greedy-by-size, and the lower bound.
#[derive(Clone, Debug)]
pub struct ArenaReport {
    /// Bytes of the chosen plan.
    pub best: usize,
    /// Bytes of the greedy-by-size plan.
    pub greedy: usize,
    /// Largest number of bytes live at once (no plan can be smaller).
    pub lower_bound: usize,
    /// The strategy that produced `best`.
    pub strategy: String,
    /// `best` is proven optimal.
    pub optimal: bool,
}

/// A device input or output.
#[derive(Clone, Debug)]
pub struct IoInfo {
    /// Tensor name in the model.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element count (bytes, int8).
    pub len: usize,
    /// Real value of one step (`real = scale·(q − zero_point)`).
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

/// One generated layer (one kernel call), in schedule order; `id` is its mark.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// Mark id passed to `mark()` before the layer.
    pub id: u32,
    /// Node name from the model.
    pub name: String,
    /// Op name.
    pub op: String,
    /// Multiply-accumulates.
    pub macs: u64,
}

/// A tensor placed in the arena (for memory-plan pictures).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Size in bytes.
    pub bytes: usize,
    /// Arena offset.
    pub offset: usize,
    /// Layer that writes it.
    pub first: usize,
    /// Last layer that reads it.
    pub last: usize,
}

/// The generated crate and what it contains.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Files relative to the crate root (`Cargo.toml`, `src/lib.rs`, `src/weights.rs`).
    pub files: Vec<(PathBuf, String)>,
    /// Arena sizes.
    pub arena: ArenaReport,
    /// Bytes of weights and parameters (flash).
    pub weight_bytes: usize,
    /// Device inputs.
    pub inputs: Vec<IoInfo>,
    /// Device outputs.
    pub outputs: Vec<IoInfo>,
    /// Layers in schedule order.
    pub layers: Vec<LayerInfo>,
    /// Arena tensors.
    pub tensors: Vec<TensorInfo>,
}

/// The device boundary of a graph: int8 inputs/outputs and the nodes that run on the device.
struct Device {
    inputs: Vec<(TensorId, IoInfo)>,
    outputs: Vec<(TensorId, IoInfo)>,
    nodes: Vec<NodeId>,
}

fn io_info(g: &Graph, id: TensorId, name: &str, scale: f32, zero_point: i32) -> IoInfo {
    let ty = &g.values[id].ty;
    IoInfo { name: name.to_string(), shape: ty.shape.clone(), len: ty.len(), scale, zero_point }
}

/// Scale and zero point from a Q/DQ node's constant inputs.
fn qdq_params(g: &Graph, node: NodeId) -> Result<(f32, i32)> {
    let n = &g.nodes[node];
    let scale = g.values[n.inputs[1]].konst.as_ref().map(|t| t.to_f64_vec());
    let zp = n.inputs.get(2).and_then(|&z| g.values[z].konst.as_ref()).map_or(vec![0], |t| t.to_i64_vec());
    match scale {
        Some(s) if s.len() == 1 && zp.len() == 1 => Ok((s[0] as f32, zp[0] as i32)),
        _ => bail!("the model edge `{}` must be quantized per tensor with constant parameters", n.name),
    }
}

fn device(g: &Graph) -> Result<Device> {
    let mut producer = vec![None; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        n.outputs.iter().for_each(|&o| producer[o] = Some(i));
    }
    let mut boundary = vec![false; g.nodes.len()];
    let mut inputs = Vec::new();
    for &i in &g.inputs {
        let name = &g.values[i].name;
        let ty = &g.values[i].ty;
        if ty.dtype == DType::I8 {
            inputs.push((i, io_info(g, i, name, 1.0, 0)));
            continue;
        }
        let q: Vec<NodeId> = (0..g.nodes.len())
            .filter(|&n| g.nodes[n].op.name() == "QuantizeLinear" && g.nodes[n].inputs[0] == i)
            .collect();
        let users = g.nodes.iter().filter(|n| n.inputs.contains(&i)).count();
        let [q] = q.as_slice() else {
            bail!("graph input `{name}` ({}) is not quantized once to int8 at the model edge", ty.dtype);
        };
        if users != 1 || g.values[g.nodes[*q].outputs[0]].ty.dtype != DType::I8 {
            bail!("graph input `{name}` is used in float; the device code is integer-only");
        }
        boundary[*q] = true;
        let (s, z) = qdq_params(g, *q)?;
        inputs.push((g.nodes[*q].outputs[0], io_info(g, g.nodes[*q].outputs[0], name, s, z)));
    }
    let mut outputs = Vec::new();
    for &o in &g.outputs {
        let name = &g.values[o].name;
        match producer[o] {
            Some(p) if g.nodes[p].op.name() == "DequantizeLinear" => {
                boundary[p] = true;
                let src = g.nodes[p].inputs[0];
                if g.values[src].ty.dtype != DType::I8 {
                    bail!("graph output `{name}` is dequantized from {}, not int8", g.values[src].ty.dtype);
                }
                let (s, z) = qdq_params(g, p)?;
                outputs.push((src, io_info(g, src, name, s, z)));
            }
            _ if g.values[o].ty.dtype == DType::I8 => outputs.push((o, io_info(g, o, name, 1.0, 0))),
            _ => bail!("graph output `{name}` is {}, not int8 at the model edge", g.values[o].ty.dtype),
        }
    }
    let nodes: Vec<NodeId> = (0..g.nodes.len()).filter(|&n| !boundary[n]).collect();
    let float: Vec<String> = nodes
        .iter()
        .map(|&n| &g.nodes[n])
        .filter(|n| n.outputs.iter().any(|&o| g.values[o].ty.dtype.is_float()))
        .map(|n| format!("`{}` ({})", n.name, n.op.name()))
        .collect();
    if !float.is_empty() {
        bail!(
            "{} node(s) compute in float, but the device code is integer-only (quantize the model with `mote quantize` first): {}",
            float.len(),
            float.join(", ")
        );
    }
    Ok(Device { inputs, outputs, nodes })
}

/// Where a device tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Device input `k` (the caller's slice).
    Input(usize),
    /// Arena bytes `offset..offset+len`.
    Arena(usize, usize),
    /// A constant (weights), emitted as a static.
    Const,
}

/// Ops whose output is their input reinterpreted (same bytes, new shape): no code, same place.
fn is_alias(op: &str) -> bool {
    matches!(op, "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze")
}

/// Compiles the int8 graph into a crate; see the module docs.
pub fn compile(g: &Graph, opts: &CompileOptions) -> Result<Compiled> {
    let dev = device(g)?;
    // Root tensor of every alias chain.
    let mut root: HashMap<TensorId, TensorId> = HashMap::new();
    let mut layers_nodes: Vec<NodeId> = Vec::new();
    for &n in &dev.nodes {
        let node = &g.nodes[n];
        if is_alias(node.op.name()) {
            let src = node.inputs[0];
            root.insert(node.outputs[0], *root.get(&src).unwrap_or(&src));
        } else {
            layers_nodes.push(n);
        }
    }
    let root_of = |t: TensorId| *root.get(&t).unwrap_or(&t);
    // Lifetimes of arena buffers (roots written by a layer), in layer steps.
    let mut buffers: Vec<(TensorId, usize, usize)> = Vec::new(); // (root, first, last)
    let mut index: HashMap<TensorId, usize> = HashMap::new();
    for (step, &n) in layers_nodes.iter().enumerate() {
        for &i in &g.nodes[n].inputs {
            if let Some(&b) = index.get(&root_of(i)) {
                buffers[b].2 = buffers[b].2.max(step);
            }
        }
        for &o in &g.nodes[n].outputs {
            index.insert(o, buffers.len());
            buffers.push((o, step, step));
        }
    }
    let end = layers_nodes.len();
    for (t, _) in &dev.outputs {
        if let Some(&b) = index.get(&root_of(*t)) {
            buffers[b].2 = end; // read by the final copy to the caller's output
        }
    }
    let specs: Vec<Buffer> =
        buffers.iter().map(|&(t, first, last)| Buffer::new(g.values[t].ty.bytes(), 4, first, last)).collect();
    let plan_err = |e: mote_plan::PlanError| mote_core::Error::Invalid(format!("memory planning failed: {e}"));
    let best = mote_plan::plan(&specs, opts.strategy).map_err(plan_err)?;
    let greedy = mote_plan::plan(&specs, Strategy::GreedyBySize).map_err(plan_err)?;
    let arena = ArenaReport {
        best: best.arena_bytes,
        greedy: greedy.arena_bytes,
        lower_bound: mote_plan::lower_bound(&specs),
        strategy: best.strategy.to_string(),
        optimal: best.optimal,
    };

    let mut place: HashMap<TensorId, Place> = HashMap::new();
    for (k, (t, _)) in dev.inputs.iter().enumerate() {
        place.insert(*t, Place::Input(k));
    }
    let mut tensors = Vec::new();
    for (b, &(t, first, last)) in buffers.iter().enumerate() {
        let bytes = specs[b].size;
        place.insert(t, Place::Arena(best.offset(b), bytes));
        tensors.push(TensorInfo { name: g.values[t].name.clone(), bytes, offset: best.offset(b), first, last });
    }
    let place_of = |t: TensorId| -> Place {
        if g.values[t].konst.is_some() {
            return Place::Const;
        }
        place.get(&root_of(t)).copied().unwrap_or(Place::Const)
    };

    let mut e = emit::Emitter::new(g);
    let mut layers = Vec::new();
    let mut unsupported = Vec::new();
    for (step, &n) in layers_nodes.iter().enumerate() {
        let node = &g.nodes[n];
        match e.layer(step as u32, node, &place_of) {
            Ok(()) => {}
            Err(err) => unsupported.push(format!("`{}` ({}): {err}", node.name, node.op.name())),
        }
        layers.push(LayerInfo {
            id: step as u32,
            name: node.name.clone(),
            op: node.op.name().to_string(),
            macs: g.node_macs(node),
        });
    }
    if !unsupported.is_empty() {
        bail!("{} node(s) have no MCU code generation yet: {}", unsupported.len(), unsupported.join("; "));
    }
    let outputs_place: Vec<Place> = dev.outputs.iter().map(|(t, _)| place_of(*t)).collect();
    let inputs: Vec<IoInfo> = dev.inputs.into_iter().map(|(_, i)| i).collect();
    let outputs: Vec<IoInfo> = dev.outputs.into_iter().map(|(_, o)| o).collect();
    let files = e.finish(opts, &arena, &inputs, &outputs, &outputs_place, &layers)?;
    Ok(Compiled { files, arena, weight_bytes: e.weight_bytes(), inputs, outputs, layers, tensors })
}

/// The int8 device inputs and outputs of one inference, in model order.
pub type DeviceIo = (Vec<Vec<i8>>, Vec<Vec<i8>>);

/// Host reference at the device boundary: runs the graph on float inputs and returns the int8
/// device inputs (after the model's QuantizeLinear) and device outputs (before its
/// DequantizeLinear), exactly as the MCU code must see and produce them.
pub fn host_reference(g: &Graph, float_inputs: Vec<Tensor>) -> Result<DeviceIo> {
    let dev = device(g)?;
    let mut seen: HashMap<TensorId, Vec<i8>> = HashMap::new();
    let want: Vec<TensorId> = dev.inputs.iter().chain(&dev.outputs).map(|(t, _)| *t).collect();
    g.run_observed(float_inputs, |id, t| {
        if want.contains(&id) {
            if let Tensor::I8(a) = t {
                seen.insert(id, a.iter().copied().collect());
            }
        }
    })?;
    let take = |list: &[(TensorId, IoInfo)]| -> Result<Vec<Vec<i8>>> {
        list.iter()
            .map(|(t, io)| {
                seen.get(t).cloned().ok_or_else(|| mote_core::Error::Invalid(format!("`{}` was not computed", io.name)))
            })
            .collect()
    };
    Ok((take(&dev.inputs)?, take(&dev.outputs)?))
}
