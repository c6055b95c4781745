//! Code generation: an integer mote graph → a standalone `#![no_std]` Rust crate that runs it with
//! `mote-kernels` on statically planned arenas.
//!
//! Two kinds of graphs compile:
//! * **int8 graphs** (mote's own int8 ops, from `mote quantize` or an ONNX QDQ model). The device
//!   part is everything between the model's float edges: a graph input feeds a `QuantizeLinear`
//!   whose int8 output is the device input, and a graph output comes from a `DequantizeLinear`
//!   whose int8 input is the device output (the host quantizes and dequantizes, see
//!   [`host_reference`]).
//! * **exact-integer graphs** (Deeploy's integerized models, imported with every tensor `I64`).
//!   The device inputs and outputs are the graph's own. Every tensor gets a narrow storage type
//!   (`i8`, `u8`, `i16` or `i32`) from the interval analysis of `mote_core::passes::narrow`, seeded
//!   by [`CompileOptions::input_types`]; each op calls the same `mote-kernels` function the IR's
//!   `eval` calls, on those types, so device and host agree bit for bit.
//!
//! Layers: one kernel call per op, except that a wide producer whose only reader is a Deeploy
//! `RequantShift` (`MatMul [+ bias]`, `Conv`, `iGELU`, `iHardswish`, `Add`, `Mul`) runs as one fused
//! requantizing kernel, so its `i32` tensor is never stored (same arithmetic, see `fuse`); an
//! element-wise `RequantShift` (or `iGELU`/`iHardswish` + `RequantShift`) that is the last reader
//! of a same-type, same-length input overwrites it (an in-place hint to the planner).
//!
//! Memory: one byte arena planned by `mote-plan` for every tensor and kernel scratch whatever its element
//! type, so tensors of different types that are never alive together share bytes. Reshapes and transposes
//! that move no element are their input's bytes, a `Slice` of whole rows is a view into its input, and the
//! operands of a `Concat` of whole rows are written straight into its output (the row blocks of
//! `mote_core::passes::rows`); each layer views its ranges as typed slices (`mote_kernels::arena`,
//! alignment-checked, no `unsafe`). Weights and parameters become `static` arrays (flash, equal ones once);
//! each op becomes one kernel call, in schedule order, between `mark(layer)` calls for per-layer instruction
//! counts. The generated code has no heap, no `static mut`, no `unsafe`
//! (outside the opt-in C ABI), and returns an error instead of panicking.
//!
//! Device I/O is bytes (`&[i8]`): an 8-bit tensor is its elements (a `u8` tensor passes the same
//! bytes, `v as i8`); a wider one is its elements in little-endian order ([`IoInfo::dtype`] says
//! which; [`IoInfo::len`] counts bytes).
pub mod decoder;
mod emit;
mod fuse;

use mote_core::ops::shape::{Concat, Slice, Transpose};
use mote_core::passes::narrow::{narrow, Narrowing};
use mote_core::{bail, DType, Graph, Node, NodeId, Result, Tensor, TensorId};
pub use mote_kernels::packed::PackedLayout;
use mote_plan::{Buffer, Strategy};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// What to generate.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Name of the generated crate.
    pub crate_name: String,
    /// Absolute path of `crates/mote-kernels` (the generated crate depends on it by path).
    pub kernels_path: PathBuf,
    /// Memory-planning strategy for the arenas.
    pub strategy: Strategy,
    /// Also build a `staticlib` with a C entry point (`mote_run`), for C firmware to link.
    pub c_abi: bool,
    /// Element types of an exact-integer graph's inputs, by input name: how the data arrives (`u8`
    /// for EEGFormer's 0..254 input, as Deeploy's harness types it). Unlisted `I64` inputs are `i8`;
    /// unlisted inputs the graph declares `i8`/`u8`/`i16`/`i32` keep that type. The type seeds the
    /// interval analysis and is the input's device storage; data outside it is refused by
    /// [`host_reference_with`]. Ignored for the float inputs of int8 graphs.
    pub input_types: Vec<(String, DType)>,
    /// Weight layout of the target core's packed linear kernel (e.g. `Dsp16` for Cortex-M4/M7/M33/M55):
    /// linear layers with constant weights are packed offline into it. `None`: plain weights, portable kernels.
    pub packed_layout: Option<PackedLayout>,
}

impl CompileOptions {
    /// Options for crate `crate_name` using the kernels at `kernels_path`: the best memory plan,
    /// no C ABI, every exact-integer input `i8`.
    pub fn new(crate_name: impl Into<String>, kernels_path: impl Into<PathBuf>) -> Self {
        CompileOptions {
            crate_name: crate_name.into(),
            kernels_path: kernels_path.into(),
            strategy: Strategy::Best,
            c_abi: false,
            input_types: Vec::new(),
            packed_layout: None,
        }
    }

    fn input_type(&self, name: &str) -> Option<DType> {
        self.input_types.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }
}

/// Arena sizes: the chosen plan, TFLite Micro's greedy-by-size, and the lower bound.
#[derive(Clone, Debug)]
pub struct ArenaReport {
    /// Bytes of the chosen plan: `size_of::<Arena>()` (`ARENA_BYTES`), padded to its 16-byte alignment.
    pub best: usize,
    /// Bytes with a greedy-by-size plan (padded the same way).
    pub greedy: usize,
    /// The largest number of bytes live at once (no plan can be smaller).
    pub lower_bound: usize,
    /// The strategy that produced `best`.
    pub strategy: String,
    /// The plan is proven optimal.
    pub optimal: bool,
}

/// A device input or output.
#[derive(Clone, Debug)]
pub struct IoInfo {
    /// Tensor name in the model.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes on the device interface: the element count for 8-bit types, `elements · size`
    /// (little-endian elements) for wider ones.
    pub len: usize,
    /// Real value of one step (`real = scale·(q − zero_point)`; 1 and 0 for exact-integer graphs,
    /// whose values are the integers themselves).
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Element type (`i8` for int8 graphs; `i8`, `u8`, `i16` or `i32` for exact-integer graphs).
    pub dtype: DType,
}

impl IoInfo {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Decodes device bytes (as `run` takes or returns them) into the element values.
    pub fn decode(&self, bytes: &[i8]) -> Vec<i64> {
        decode(self.dtype, bytes)
    }
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
    /// Byte offset inside `Arena`.
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

/// The device boundary of a graph: its inputs/outputs and the nodes that run on the device.
struct Device {
    inputs: Vec<(TensorId, IoInfo)>,
    outputs: Vec<(TensorId, IoInfo)>,
    nodes: Vec<NodeId>,
    /// Storage type of every device tensor.
    nw: Narrowing,
}

fn io_info(g: &Graph, id: TensorId, name: &str, scale: f32, zero_point: i32, dtype: DType) -> IoInfo {
    let ty = &g.values[id].ty;
    IoInfo {
        name: name.to_string(),
        shape: ty.shape.clone(),
        len: ty.len() * dtype.size_of(),
        scale,
        zero_point,
        dtype,
    }
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

fn is_int(d: DType) -> bool {
    !d.is_float() && d != DType::Bool
}

fn device(g: &Graph, opts: &CompileOptions) -> Result<Device> {
    let nw = narrow(g, &|n| opts.input_type(n))?;
    let storage = |t: TensorId| -> Result<DType> {
        nw.storage[t]
            .ok_or_else(|| mote_core::Error::Invalid(format!("`{}` has no device storage type", g.values[t].name)))
    };
    let mut producer = vec![None; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        n.outputs.iter().for_each(|&o| producer[o] = Some(i));
    }
    let mut boundary = vec![false; g.nodes.len()];
    let mut inputs = Vec::new();
    for &i in &g.inputs {
        let name = &g.values[i].name;
        let ty = &g.values[i].ty;
        if is_int(ty.dtype) {
            inputs.push((i, io_info(g, i, name, 1.0, 0, storage(i)?)));
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
        inputs.push((g.nodes[*q].outputs[0], io_info(g, g.nodes[*q].outputs[0], name, s, z, DType::I8)));
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
                outputs.push((src, io_info(g, src, name, s, z, DType::I8)));
            }
            _ if is_int(g.values[o].ty.dtype) => outputs.push((o, io_info(g, o, name, 1.0, 0, storage(o)?))),
            _ => bail!("graph output `{name}` is {}, not an integer at the model edge", g.values[o].ty.dtype),
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
    Ok(Device { inputs, outputs, nodes, nw })
}

/// Where a device tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Device input `k`, read in place from the caller's `i8` slice.
    Input(usize),
    /// `len` elements of this type from byte `offset` of the arena.
    Arena(DType, usize, usize),
    /// A constant (weights), emitted as a static.
    Const,
}

/// Nodes whose output is their input reinterpreted (same bytes, new shape): no code, same place. Besides the
/// reshapes, a `Transpose` that keeps the order of the axes longer than 1 (torch exports swap a batch axis of 1
/// with the tokens) moves no element.
fn is_alias(g: &Graph, node: &Node) -> bool {
    if let Some(t) = node.op.as_any().downcast_ref::<Transpose>() {
        let dims = &g.values[node.inputs[0]].ty.shape;
        let moved: Vec<usize> = t.perm.iter().copied().filter(|&a| dims.get(a).is_some_and(|&d| d > 1)).collect();
        return moved.windows(2).all(|w| w[0] < w[1]);
    }
    matches!(node.op.name(), "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze")
}

/// Alignment of every buffer's byte offset (word-aligned for `i32` views, 32-bit loads and SIMD).
const BUFFER_ALIGN: usize = 4;

/// Alignment of the generated `Arena` (its size is padded to a multiple of it).
const ARENA_ALIGN: usize = 16;

/// The tensor owning `t`'s bytes and `t`'s byte offset in it (see `compile`).
fn resolve(root: &HashMap<TensorId, (TensorId, usize)>, mut t: TensorId) -> (TensorId, usize) {
    let mut offset = 0;
    while let Some(&(r, o)) = root.get(&t) {
        (t, offset) = (r, offset + o);
    }
    (t, offset)
}

/// A `Slice` that keeps whole rows of its input (one sliced axis, step 1, every axis before it of length 1): its
/// output is the input's bytes from this element offset on.
fn row_view(g: &Graph, node: &Node) -> Option<usize> {
    let s = node.op.as_any().downcast_ref::<Slice>()?;
    let dims = &g.values[node.inputs[0]].ty.shape;
    let sliced: Vec<usize> =
        (0..dims.len()).filter(|&a| (s.starts.get(a), s.ends.get(a)) != (Some(&0), Some(&(dims[a] as i64)))).collect();
    let Some(&a) = sliced.first() else { return Some(0) };
    let ok = sliced.len() == 1 && s.steps.iter().all(|&st| st == 1) && dims[..a].iter().all(|&d| d == 1);
    let start = usize::try_from(*s.starts.get(a)?).ok()?;
    ok.then(|| start * dims[a + 1..].iter().product::<usize>())
}

/// A `Concat` whose operands can be written in place into its output: concatenated along an axis with only
/// axes of length 1 before it (each operand is then a contiguous range of the output), each operand written by
/// a layer, read by nothing else and no graph output. Returns each operand's element offset in the output.
fn concat_blocks(
    g: &Graph,
    node: &Node,
    (producers, consumers): (&[Option<NodeId>], &[Vec<NodeId>]),
    root: &HashMap<TensorId, (TensorId, usize)>,
    device: &HashSet<NodeId>,
) -> Option<Vec<usize>> {
    let c = node.op.as_any().downcast_ref::<Concat>()?;
    let dims = &g.values[node.outputs[0]].ty.shape;
    let own = |&i: &TensorId| {
        let written = producers[i].is_some_and(|p| device.contains(&p) && !is_alias(g, &g.nodes[p]));
        written
            && !root.contains_key(&i)
            && consumers[i].len() == 1
            && !g.outputs.contains(&i)
            && !g.values[i].ty.is_empty()
            && node.inputs.iter().filter(|&&j| j == i).count() == 1
    };
    if !dims[..c.axis.min(dims.len())].iter().all(|&d| d == 1) || !node.inputs.iter().all(own) {
        return None;
    }
    let offsets = node.inputs.iter().scan(0, |at, &i| {
        let o = *at;
        *at += g.values[i].ty.len();
        Some(o)
    });
    Some(offsets.collect())
}

/// Compiles the graph into a crate; see the crate docs.
pub fn compile(g: &Graph, opts: &CompileOptions) -> Result<Compiled> {
    let dev = device(g, opts)?;
    let storage = |t: TensorId| -> Result<DType> {
        dev.nw.storage[t]
            .ok_or_else(|| mote_core::Error::Invalid(format!("`{}` has no device storage type", g.values[t].name)))
    };
    // Tensors that are bytes of another one: `t -> (tensor, byte offset)` (reshapes, row views, the blocks of a
    // row concatenation); `root_of` follows the chain to the tensor that owns a buffer.
    let mut root: HashMap<TensorId, (TensorId, usize)> = HashMap::new();
    let mut layers_nodes: Vec<NodeId> = Vec::new();
    let (producers, consumers) = (g.producers(), g.consumers());
    let device: HashSet<NodeId> = dev.nodes.iter().copied().collect();
    let same_storage = |a: TensorId, b: TensorId| dev.nw.storage[a].is_some() && dev.nw.storage[a] == dev.nw.storage[b];
    let read_in_place: Vec<TensorId> =
        dev.inputs.iter().filter(|(_, io)| io.dtype == DType::I8).map(|(t, _)| *t).collect();
    for &n in &dev.nodes {
        let node = &g.nodes[n];
        if is_alias(g, node) {
            root.insert(node.outputs[0], (node.inputs[0], 0));
        } else if let Some(offset) = row_view(g, node).filter(|_| same_storage(node.inputs[0], node.outputs[0])) {
            let (src, _) = resolve(&root, node.inputs[0]);
            if read_in_place.contains(&src) || g.values[src].konst.is_some() {
                layers_nodes.push(n); // the caller's input slice: no arena bytes to view
                continue;
            }
            let size = dev.nw.storage[node.inputs[0]].map_or(1, |d| d.size_of());
            root.insert(node.outputs[0], (node.inputs[0], offset * size));
        } else if let Some(blocks) = concat_blocks(g, node, (&producers, &consumers), &root, &device)
            .filter(|_| node.inputs.iter().all(|&i| same_storage(i, node.outputs[0])))
        {
            let size = dev.nw.storage[node.outputs[0]].map_or(1, |d| d.size_of());
            for (&i, offset) in node.inputs.iter().zip(blocks) {
                root.insert(i, (node.outputs[0], offset * size));
            }
        } else {
            layers_nodes.push(n);
        }
    }
    let root_of = |t: TensorId| resolve(&root, t).0;
    let mut layer_groups = fuse::layers(g, &dev.nw, &layers_nodes);
    // Arena buffers (roots written by a layer, and inputs staged into the arena), with
    // lifetimes in layer steps: (root, type, first, last).
    let mut buffers: Vec<(TensorId, DType, usize, usize)> = Vec::new();
    let mut index: HashMap<TensorId, usize> = HashMap::new();
    let mut staged = Vec::new(); // (input k, buffer)
    for (k, (t, io)) in dev.inputs.iter().enumerate() {
        if io.dtype != DType::I8 {
            index.insert(*t, buffers.len());
            staged.push((k, buffers.len()));
            buffers.push((*t, io.dtype, 0, 0));
        }
    }
    for (step, layer) in layer_groups.iter().enumerate() {
        for &n in &layer.nodes {
            for &i in &g.nodes[n].inputs {
                if let Some(&b) = index.get(&root_of(i)) {
                    buffers[b].3 = buffers[b].3.max(step);
                }
            }
        }
        // Only the last node's outputs are stored; a fused group keeps the others in registers. A block of a
        // row concatenation writes into the concatenation's buffer, which lives from its first block on.
        let last = layer.nodes[layer.nodes.len() - 1];
        for &o in &g.nodes[last].outputs {
            let r = root_of(o);
            match index.get(&r) {
                Some(&b) if r != o => buffers[b].2 = buffers[b].2.min(step),
                _ => {
                    index.insert(r, buffers.len());
                    buffers.push((r, storage(r)?, step, step));
                }
            }
        }
    }
    let end = layer_groups.len();
    for (t, _) in &dev.outputs {
        if let Some(&b) = index.get(&root_of(*t)) {
            buffers[b].3 = end; // read by the final copy to the caller's output
        }
    }
    // An element-wise layer overwrites its input when it is the input's last reader and the output
    // has the input's type and length (output buffer -> input buffer).
    let mut in_place: HashMap<usize, usize> = HashMap::new();
    for (step, layer) in layer_groups.iter_mut().enumerate() {
        if !fuse::element_wise(g, layer) && !fuse::attention_in_place(g, layer) {
            continue;
        }
        let (x, x_offset) = resolve(&root, g.nodes[layer.nodes[0]].inputs[0]);
        let y = g.nodes[layer.nodes[layer.nodes.len() - 1]].outputs[0];
        if x_offset != 0 || root_of(y) != y {
            continue; // a row view or a block of a concatenation
        }
        let (Some(&bx), Some(&by)) = (index.get(&x), index.get(&y)) else { continue };
        let same = buffers[bx].1 == buffers[by].1 && g.values[x].ty.len() == g.values[y].ty.len();
        let int8_kernel =
            matches!(layer.fusion, fuse::Fusion::Single | fuse::Fusion::Table) || buffers[by].1 == DType::I8;
        if same && int8_kernel && buffers[bx].2 < step && buffers[bx].3 == step {
            in_place.insert(by, bx);
            layer.in_place = true;
        }
    }

    // Kernel scratch (packed linear layers' activation panels): `i32` buffers live during their layer only.
    let scratch_layers: Vec<(usize, usize)> = layer_groups
        .iter()
        .enumerate()
        .filter_map(|(step, l)| {
            if let Some(words) = emit::attention_scratch(g, l, opts.packed_layout) {
                return Some((step, words));
            }
            if let Some(mm) = emit::packed_matmul(g, l, opts.packed_layout) {
                return Some((step, mm.scratch_words()));
            }
            let (layout, _, k) = emit::packed_layer(g, &dev.nw, l, opts.packed_layout)?;
            Some((step, layout.scratch_words(k)))
        })
        .collect();
    // One plan for every buffer and kernel scratch, whatever its element type: buffer b gets (type, byte offset,
    // element count); tensors of different types that are never alive together share bytes.
    let plan_err = |e: mote_plan::PlanError| mote_core::Error::Invalid(format!("memory planning failed: {e}"));
    let mut specs: Vec<Buffer> = buffers
        .iter()
        .enumerate()
        .map(|(b, &(t, d, first, last))| {
            let spec = Buffer::new(g.values[t].ty.len() * d.size_of(), BUFFER_ALIGN, first, last);
            match in_place.get(&b) {
                Some(&target) => spec.sharing(target),
                None => spec,
            }
        })
        .collect();
    specs.extend(scratch_layers.iter().map(|&(step, words)| Buffer::new(4 * words, BUFFER_ALIGN, step, step)));
    let best = mote_plan::plan(&specs, opts.strategy).map_err(plan_err)?;
    let greedy = mote_plan::plan(&specs, Strategy::GreedyBySize).map_err(plan_err)?;
    let at: Vec<(DType, usize, usize)> =
        buffers.iter().enumerate().map(|(b, &(t, d, _, _))| (d, best.offset(b), g.values[t].ty.len())).collect();
    let scratch: HashMap<u32, (usize, usize)> = scratch_layers
        .iter()
        .enumerate()
        .map(|(j, &(step, words))| (step as u32, (best.offset(buffers.len() + j), 4 * words)))
        .collect();
    let pad = |b: usize| b.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
    let arena = ArenaReport {
        best: pad(best.arena_bytes),
        greedy: pad(greedy.arena_bytes),
        lower_bound: mote_plan::lower_bound(&specs),
        strategy: best.strategy.to_string(),
        optimal: best.optimal,
    };

    let mut place: HashMap<TensorId, Place> = HashMap::new();
    for (k, (t, io)) in dev.inputs.iter().enumerate() {
        if io.dtype == DType::I8 {
            place.insert(*t, Place::Input(k));
        }
    }
    let mut tensors = Vec::new();
    for (b, &(t, d, first, last)) in buffers.iter().enumerate() {
        let (_, off, len) = at[b];
        place.insert(t, Place::Arena(d, off, len));
        tensors.push(TensorInfo { name: g.values[t].name.clone(), bytes: len * d.size_of(), offset: off, first, last });
    }
    let place_of = |t: TensorId| -> Place {
        if g.values[t].konst.is_some() {
            return Place::Const;
        }
        let (r, offset) = resolve(&root, t);
        match place.get(&r).copied() {
            Some(Place::Arena(d, at, _)) => Place::Arena(d, at + offset, g.values[t].ty.len()),
            p => p.unwrap_or(Place::Const),
        }
    };

    let mut e = emit::Emitter::new(g, &dev.nw, opts.packed_layout, scratch);
    for &(k, b) in &staged {
        let (d, off, len) = at[b];
        e.stage_input(k, d, off, len)?;
    }
    let mut layers = Vec::new();
    let mut unsupported = Vec::new();
    for (step, layer) in layer_groups.iter().enumerate() {
        let node = &g.nodes[layer.nodes[0]];
        let op: Vec<&str> = layer.nodes.iter().map(|&n| g.nodes[n].op.name()).collect();
        if let Err(err) = e.layer(step as u32, layer, &place_of) {
            unsupported.push(format!("`{}` ({}): {err}", node.name, op.join("+")));
        }
        layers.push(LayerInfo {
            id: step as u32,
            name: node.name.clone(),
            op: op.join("+"),
            macs: layer.nodes.iter().map(|&n| g.node_macs(&g.nodes[n])).sum(),
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

/// The device inputs and outputs of one inference, in model order, as the bytes `run` takes and
/// returns (see [`IoInfo`]).
pub type DeviceIo = (Vec<Vec<i8>>, Vec<Vec<i8>>);

/// Host reference at the device boundary, with default [`CompileOptions`] (every `I64` input of
/// an exact-integer graph `i8`); see [`host_reference_with`].
pub fn host_reference(g: &Graph, inputs: Vec<Tensor>) -> Result<DeviceIo> {
    host_reference_with(g, inputs, &CompileOptions::new("model", ""))
}

/// Host reference at the device boundary: runs the graph on the reference interpreter and returns
/// the device inputs and outputs exactly as the MCU code must see and produce them. For an int8
/// graph, `inputs` are the float model inputs, the device inputs the int8 values after the model's
/// QuantizeLinear and the outputs those before its DequantizeLinear. For an exact-integer graph,
/// both are the graph's own inputs and outputs, encoded in their storage types (an input holding a
/// value outside its declared type in `opts.input_types` is an error).
pub fn host_reference_with(g: &Graph, inputs: Vec<Tensor>, opts: &CompileOptions) -> Result<DeviceIo> {
    let dev = device(g, opts)?;
    let mut seen: HashMap<TensorId, Vec<i64>> = HashMap::new();
    let want: Vec<TensorId> = dev.inputs.iter().chain(&dev.outputs).map(|(t, _)| *t).collect();
    g.run_observed(inputs, |id, t| {
        if want.contains(&id) && is_int(t.dtype()) {
            seen.insert(id, t.to_i64_vec());
        }
    })?;
    let take = |list: &[(TensorId, IoInfo)], what: &str| -> Result<Vec<Vec<i8>>> {
        list.iter()
            .map(|(t, io)| {
                let v =
                    seen.get(t).ok_or_else(|| mote_core::Error::Invalid(format!("`{}` was not computed", io.name)))?;
                encode(io.dtype, v).map_err(|x| {
                    mote_core::Error::Invalid(format!(
                        "{what} `{}` holds {x}, outside its device type {}{}",
                        io.name,
                        io.dtype,
                        if what == "input" { " (declare its type in CompileOptions::input_types)" } else { "" }
                    ))
                })
            })
            .collect()
    };
    Ok((take(&dev.inputs, "input")?, take(&dev.outputs, "output")?))
}

/// Device bytes of integer values stored as `d` (8-bit: one byte each; wider: little-endian), or
/// the first value that does not fit.
fn encode(d: DType, v: &[i64]) -> std::result::Result<Vec<i8>, i64> {
    let (lo, hi) = d.int_range().unwrap_or((0, -1));
    if let Some(&x) = v.iter().find(|&&x| x < lo || x > hi) {
        return Err(x);
    }
    let size = d.size_of();
    Ok(v.iter().flat_map(|&x| x.to_le_bytes().into_iter().take(size).map(|b| b as i8)).collect())
}

/// Inverse of [`encode`].
fn decode(d: DType, bytes: &[i8]) -> Vec<i64> {
    let size = d.size_of();
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut le = [0u8; 8];
            for (dst, &b) in le.iter_mut().zip(c) {
                *dst = b as u8;
            }
            let raw = i64::from_le_bytes(le);
            match d {
                DType::I8 => i64::from(raw as i8),
                DType::I16 => i64::from(raw as i16),
                DType::I32 => i64::from(raw as i32),
                _ => raw,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bytes_round_trip() {
        for (d, v) in [
            (DType::I8, vec![-128, 0, 127]),
            (DType::U8, vec![0, 200, 255]),
            (DType::I16, vec![-32768, -2, 300]),
            (DType::I32, vec![i64::from(i32::MIN), -70_000, 1 << 20]),
        ] {
            let b = encode(d, &v).unwrap();
            assert_eq!(b.len(), v.len() * d.size_of());
            assert_eq!(decode(d, &b), v, "{d}");
        }
        assert_eq!(encode(DType::U8, &[200]).unwrap(), vec![200u8 as i8]);
        assert_eq!(encode(DType::I8, &[1, 200]), Err(200));
        assert_eq!(encode(DType::I16, &[-1]).unwrap(), vec![-1, -1]);
    }
}
