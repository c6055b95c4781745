//! Rust source for each layer (one `mote-kernels` call) and the crate around them.
use crate::fuse::{Fusion, Layer};
use crate::{ArenaReport, CompileOptions, IoInfo, LayerInfo, Place};
use mote_core::ops::attention::{AttentionSoftmax, BlockRequant, QAttention, QProjection};
use mote_core::ops::conv::{Conv, MaxPool};
use mote_core::ops::deeploy::{
    IGelu, IHardswish, ILayerNorm, IRmsNorm, ISoftmax, IntegerMean, ItaMax, RequantShift, TrueIntegerDiv,
};
use mote_core::ops::elementwise::{Binary, BinaryKind};
use mote_core::ops::matmul::{Gemm, MatMul};
use mote_core::ops::quant::{
    AccRescale, QBinary, QBinaryKind, QConv, QLayerNorm, QLinear, QLut, QMatMul, QMean, QSoftmax, Requantize, Rescale,
};
use mote_core::ops::shape::{Concat, Gather, Slice, Split, Transpose};
use mote_core::passes::narrow::Narrowing;
use mote_core::quantize::exact::QLinearThreshold;
use mote_core::{bail, DType, Graph, Node, Result, TensorId};
use mote_kernels::attention::pack_heads;
use mote_kernels::packed::{pack_linear, LinearWeights, PackedLayout, PackedMatmul};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Accumulates statics (flash), the input staging and the body of `run_marked`.
pub struct Emitter<'a> {
    g: &'a Graph,
    nw: &'a Narrowing,
    statics: String,
    /// Copies of non-`i8` inputs into the arena, before the first layer.
    prologue: String,
    body: String,
    /// Statics already emitted, by tensor, element type and layout (`true` = transposed).
    konst: HashMap<(TensorId, DType, bool), String>,
    /// Every static emitted, by element type and values: equal ones are emitted once.
    statics_by_content: HashMap<(String, String), String>,
    weight_bytes: usize,
    /// Weight layout of the target core's packed linear kernel (`None`: plain weights, portable kernels).
    packed: Option<PackedLayout>,
    /// Per layer id, the arena bytes `(offset, len)` lent to its kernel as `i32` scratch.
    scratch: HashMap<u32, (usize, usize)>,
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// `[a, b, c]` with line breaks every 32 values, for readable arrays.
pub(crate) fn array<T: std::fmt::Display>(v: &[T]) -> String {
    let rows: Vec<String> = v.chunks(32).map(list).collect();
    format!("[\n    {}\n]", rows.join(",\n    "))
}

fn shape_of(g: &Graph, t: TensorId) -> Vec<usize> {
    g.values[t].ty.shape.clone()
}

/// The size of `t`'s last axis (0 for a scalar).
fn last_dim(g: &Graph, t: TensorId) -> usize {
    g.values[t].ty.shape.last().copied().unwrap_or(0)
}

fn product(s: &[usize]) -> usize {
    s.iter().product()
}

/// The Rust element type of a storage type.
fn rust_ty(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::I8 => "i8",
        DType::U8 => "u8",
        DType::I16 => "i16",
        DType::I32 => "i32",
        other => bail!("{other} has no device storage (i8, u8, i16 or i32)"),
    })
}

/// What a layer writes: an output (element type, byte offset, element count) and the byte range of its
/// kernel scratch, if it has one. The rest of the arena is readable while it runs.
#[derive(Clone, Copy, Debug)]
struct Out {
    dtype: DType,
    offset: usize,
    len: usize,
    scratch: Option<(usize, usize)>,
}

impl Out {
    /// The readable pieces of the arena around the output and scratch: (name, first byte, end byte), as
    /// [`Emitter::block`] splits them.
    fn pieces(&self) -> Vec<(&'static str, usize, usize)> {
        let end = self.offset + self.len * self.dtype.size_of();
        match self.scratch {
            None => vec![("lo", 0, self.offset), ("hi", end, usize::MAX)],
            Some((s, l)) if s < self.offset => vec![("lo", 0, s), ("mid", s + l, self.offset), ("hi", end, usize::MAX)],
            Some((s, l)) => vec![("lo", 0, self.offset), ("mid", end, s), ("hi", s + l, usize::MAX)],
        }
    }
}

impl<'a> Emitter<'a> {
    pub fn new(
        g: &'a Graph,
        nw: &'a Narrowing,
        packed: Option<PackedLayout>,
        scratch: HashMap<u32, (usize, usize)>,
    ) -> Self {
        Emitter {
            packed,
            scratch,
            g,
            nw,
            statics: String::new(),
            prologue: String::new(),
            body: String::new(),
            konst: HashMap::new(),
            statics_by_content: HashMap::new(),
            weight_bytes: 0,
        }
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Emits `static NAME: [ty; n]` and returns NAME, or the name of an equal static already emitted (the blocks
    /// of an MLP cut into row blocks share their packed weights and tables).
    fn static_array<T: std::fmt::Display>(
        &mut self,
        name: String,
        ty: &str,
        v: &[T],
        bytes: usize,
        doc: &str,
    ) -> String {
        let content = (ty.to_string(), array(v));
        if let Some(existing) = self.statics_by_content.get(&content) {
            return existing.clone();
        }
        let _ = writeln!(self.statics, "/// {doc}\npub static {name}: [{ty}; {}] = {};\n", v.len(), content.1);
        self.weight_bytes += bytes;
        self.statics_by_content.insert(content, name.clone());
        name
    }

    /// The storage type of tensor `t`: the narrowing's for activations; for constants their IR type
    /// when that is narrow (the int8 ops' weights and biases), else the narrowest that holds them.
    fn storage(&self, t: TensorId) -> Result<DType> {
        let v = &self.g.values[t];
        match v.ty.dtype {
            d @ (DType::I8 | DType::U8 | DType::I16 | DType::I32) if v.konst.is_some() => Ok(d),
            _ => self.nw.storage[t]
                .ok_or_else(|| mote_core::Error::Invalid(format!("`{}` does not fit 32 bits", v.name))),
        }
    }

    /// The static holding constant `t` as elements of type `d` (emitted once per type), optionally
    /// as the transpose of its `[rows, cols]` matrix; errors if a value does not fit `d`.
    fn konst_as(&mut self, t: TensorId, d: DType, transpose: Option<(usize, usize)>) -> Result<String> {
        let key = (t, d, transpose.is_some());
        if let Some(n) = self.konst.get(&key) {
            return Ok(n.clone());
        }
        let v = &self.g.values[t];
        let Some(data) = v.konst.clone() else { bail!("`{}` is not a constant", v.name) };
        if data.dtype().is_float() {
            bail!("constant `{}` is {}; the device code takes integers", v.name, data.dtype());
        }
        let mut vals = data.to_i64_vec();
        let (lo, hi) = d.int_range().unwrap_or((0, -1));
        if let Some(x) = vals.iter().find(|&&x| x < lo || x > hi) {
            bail!("constant `{}` holds {x}, which does not fit the {d} its kernel takes", v.name);
        }
        let mut doc = format!("`{}` {} as {d}", v.name, v.ty);
        if let Some((rows, cols)) = transpose {
            vals = (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| vals[r * cols + c]).collect();
            doc.push_str(&format!(", transposed to [{cols}, {rows}]"));
        }
        let name = format!("W{}", self.statics_by_content.len());
        let n = self.static_array(name, rust_ty(d)?, &vals, vals.len() * d.size_of(), &doc);
        self.konst.insert(key, n.clone());
        Ok(n)
    }

    /// The static holding constant `t` in its storage type.
    fn konst(&mut self, t: TensorId) -> Result<String> {
        let d = self.storage(t)?;
        self.konst_as(t, d, None)
    }

    /// `FixedPointRequant::new(..)?` over statics holding `r`'s multipliers and shifts, to int8 around `zero_point`.
    fn fixed_point(&mut self, id: u32, r: &Rescale, zero_point: i32) -> String {
        let m =
            self.static_array(format!("L{id}_MULT"), "i32", &r.multiplier, 4 * r.multiplier.len(), "Q31 multipliers");
        let s =
            self.static_array(format!("L{id}_SHIFT"), "i32", &r.shift, 4 * r.shift.len(), "shifts (positive = left)");
        format!("FixedPointRequant::new(&{m}, &{s}, {zero_point}, -128, 127)?")
    }

    /// `Requant::..` over statics holding an accumulator rescale `r`, to int8 around `zero_point`.
    fn acc_requant(&mut self, id: u32, r: &AccRescale, zero_point: i32) -> String {
        match r {
            AccRescale::FixedPoint(r) => format!("Requant::FixedPoint({})", self.fixed_point(id, r, zero_point)),
            AccRescale::HighMul(m) => {
                let m = self.static_array(format!("L{id}_MULT"), "i32", m, 4 * m.len(), "multipliers ·2^-32");
                format!("Requant::HighMul(HighMulRequant::new(&{m}, {zero_point}, -128, 127)?)")
            }
        }
    }

    /// The call of a layer that runs on a packed kernel ([`packed_layer`]): its weights, bias and multipliers
    /// packed into a static, its activation panel in the arena scratch planned for it.
    fn packed_call(
        &mut self,
        id: u32,
        layer: &Layer,
        (layout, n, k): (PackedLayout, usize, usize),
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
    ) -> Result<String> {
        let g = self.g;
        let node = &g.nodes[layer.nodes[0]];
        if out.scratch.is_none() {
            bail!("no scratch planned for packed layer {id}");
        }
        let data = |t: TensorId| g.values[t].konst.as_ref().map(|c| c.to_i64_vec()).unwrap_or_default();
        let x = self.arg(node, 0, place, out)?;
        let x_shape = shape_of(g, node.inputs[0]);
        let m = product(&x_shape) / k;
        let (w, bias, input_offset, mul, kernel) = if let Some(q) = node.op.as_any().downcast_ref::<QLinear>() {
            let AccRescale::HighMul(mul) = &q.rescale else { bail!("packed layer {id} without HighMul rescale") };
            let w: Vec<i64> = data(node.inputs[1]);
            let bias = node.inputs.get(2).map(|&b| data(b));
            let kernel = format!("packed::linear_packed({x}, &p, {m}, {}, scratch, out)?;", q.y_zero_point);
            (w, bias, -q.x_zero_point, mul.clone(), kernel)
        } else if let Some(q) = node.op.as_any().downcast_ref::<QConv>() {
            // mote's QConv: OIHW weights as [O, C·kh·kw]; the kernel adds the input offset, then requantizes.
            let rq = self.acc_requant(id, &q.rescale, q.y_zero_point);
            let c = qconv_params(q, &x_shape, &shape_of(g, node.inputs[1]));
            let kernel = format!(
                "let rq = {rq};\n        let c = {c};\n        packed::conv2d_packed_requant({x}, &p, &c, &rq, scratch, out)?;"
            );
            (data(node.inputs[1]), node.inputs.get(2).map(|&b| data(b)), 0, vec![0], kernel)
        } else if let Some(op) = node.op.as_any().downcast_ref::<Conv>() {
            // Deeploy Conv + RequantShift: OIHW weights as [O, C·kh·kw].
            let rq = self.shift_requant(layer)?;
            let c = conv_params(op, &x_shape, &shape_of(g, node.inputs[1]));
            let kernel =
                format!("{rq}let c = {c};\n        packed::conv2d_packed_requant({x}, &p, &c, &rq, scratch, out)?;");
            (data(node.inputs[1]), node.inputs.get(2).map(|&b| data(b)), 0, vec![0], kernel)
        } else {
            // Deeploy MatMul [k, n] (+ bias) + RequantShift: the kernel accumulates, then requantizes.
            let Fusion::Linear { bias } = layer.fusion else { bail!("layer {id} is not a linear layer") };
            let kn = data(node.inputs[1]);
            let w: Vec<i64> = (0..n * k).map(|i| kn[(i % k) * n + i / k]).collect();
            let rq = self.shift_requant(layer)?;
            let kernel = format!("{rq}packed::linear_packed_requant({x}, &p, {m}, &rq, scratch, out)?;");
            (w, bias.map(data), 0, vec![0], kernel)
        };
        let w: Vec<i8> = w.into_iter().map(|v| v as i8).collect();
        let bias: Option<Vec<i32>> = bias
            .map(|b| b.into_iter().map(i32::try_from).collect())
            .transpose()
            .map_err(|_| mote_core::Error::Invalid(format!("layer {id}: a bias does not fit i32")))?;
        let src = LinearWeights { w: &w, bias: bias.as_deref(), input_offset, mul: &mul, n, k };
        let mut words = vec![0i32; layout.words(n, k)];
        pack_linear(layout, &src, &mut words)
            .map_err(|e| mote_core::Error::Invalid(format!("packing layer {id}: {e}")))?;
        let doc = format!("`{}` weights and bias packed for {layout:?}", node.name);
        let packed = self.static_array(format!("L{id}_PACKED"), "i32", &words, 4 * words.len(), &doc);
        Ok(format!("let p = PackedLinear::new(PackedLayout::{layout:?}, {n}, {k}, &{packed})?;\n        {kernel}"))
    }

    /// Expression for reading tensor `t` while the layer writes `out`.
    fn read(&mut self, t: TensorId, place: Place, out: Out) -> Result<String> {
        Ok(match place {
            Place::Input(k) => format!("in{k}"),
            Place::Const => format!("&{}[..]", self.konst(t)?),
            Place::Arena(d, a, l) => {
                let end = a + l * d.size_of();
                let Some((piece, start, _)) = out.pieces().into_iter().find(|&(_, s, e)| s <= a && end <= e) else {
                    bail!("input `{}` overlaps the output or scratch in the arena", self.g.values[t].name)
                };
                format!("view::<{}>({piece}, {}, {l}).ok_or(Error::Layout)?", rust_ty(d)?, a - start)
            }
        })
    }

    /// Copies device input `k` (bytes) into its arena slot (as its element type) before the first layer.
    pub fn stage_input(&mut self, k: usize, d: DType, offset: usize, len: usize) -> Result<()> {
        let ty = rust_ty(d)?;
        let convert = match d.size_of() {
            1 => format!("for (d, &s) in dst.iter_mut().zip(in{k}) {{\n            *d = s as {ty};\n        }}"),
            n => {
                let bytes: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
                let pat = bytes.join(", ");
                let le: Vec<String> = bytes.iter().map(|b| format!("*{b} as u8")).collect();
                format!(
                    "for (d, c) in dst.iter_mut().zip(in{k}.chunks_exact({n})) {{\n            \
                     if let [{pat}] = c {{\n                *d = {ty}::from_le_bytes([{}]);\n            }}\n        }}",
                    le.join(", ")
                )
            }
        };
        let _ = writeln!(
            self.prologue,
            "    // input {k} into the arena as {ty}\n    {{\n        \
             let dst = arena.bytes.get_mut({offset}..{}).and_then(view_mut::<{ty}>).ok_or(Error::Layout)?;\n        \
             {convert}\n    }}",
            offset + len * d.size_of()
        );
        Ok(())
    }

    /// One layer: `mark(id)` and a block that splits the arena around the output (and scratch) and calls
    /// the kernel (the fused kernel of a group).
    pub fn layer(&mut self, id: u32, layer: &Layer, place: &dyn Fn(TensorId) -> Place) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[layer.nodes[layer.nodes.len() - 1]];
        let single = node.outputs.len() == 1;
        let outs: Vec<Out> = node
            .outputs
            .iter()
            .map(|&o| match place(o) {
                Place::Arena(dtype, offset, len) => {
                    Ok(Out { dtype, offset, len, scratch: self.scratch.get(&id).copied().filter(|_| single) })
                }
                _ => bail!("output `{}` is not in the arena", g.values[o].name),
            })
            .collect::<Result<_>>()?;
        let names: Vec<String> = layer.nodes.iter().map(|&n| format!("`{}`", g.nodes[n].name)).collect();
        let ops: Vec<&str> = layer.nodes.iter().map(|&n| g.nodes[n].op.name()).collect();
        let macs: u64 = layer.nodes.iter().map(|&n| g.node_macs(&g.nodes[n])).sum();
        let _ = writeln!(self.body, "    // layer {id}: {} ({}, {macs} MACs)", names.join(" + "), ops.join("+"));
        let _ = writeln!(self.body, "    mark({id});");
        if let Some(q) = node.op.as_any().downcast_ref::<QAttention>() {
            let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
            let call = self.attention_call(id, node, q, layer.in_place, place, *out)?;
            return self.block(*out, &call);
        }
        if layer.in_place {
            let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
            if place(g.nodes[layer.nodes[0]].inputs[0]) != place(node.outputs[0]) {
                bail!("in-place layer whose input and output were planned apart");
            }
            let call = self.in_place(id, layer, place, *out)?;
            return self.block(*out, &call);
        }
        if let Some(mm) = packed_matmul(g, layer, self.packed) {
            let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
            let call = self.matmul_packed_call(id, layer, &mm, place, *out)?;
            return self.block(*out, &call);
        }
        if let Some(packed) = packed_layer(g, self.nw, layer, self.packed) {
            let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
            let call = self.packed_call(id, layer, packed, place, *out)?;
            return self.block(*out, &call);
        }
        if layer.fusion != Fusion::Single {
            let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
            let call = self.fused(layer, place, *out)?;
            return self.block(*out, &call);
        }
        if let Some(s) = node.op.as_any().downcast_ref::<Split>() {
            let x_shape = shape_of(g, node.inputs[0]);
            let mut start = 0;
            for (k, &o) in node.outputs.iter().enumerate() {
                let x = self.read(node.inputs[0], place(node.inputs[0]), outs[k])?;
                let starts: Vec<usize> = (0..x_shape.len()).map(|d| if d == s.axis { start } else { 0 }).collect();
                let call = format!(
                    "layout::slice({x}, &[{}], &[{}], &[{}], &[{}], out)?;",
                    list(&x_shape),
                    list(&starts),
                    list(&vec![1; x_shape.len()]),
                    list(&shape_of(g, o))
                );
                self.block(outs[k], &call)?;
                start += shape_of(g, o)[s.axis];
            }
            return Ok(());
        }
        let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
        let call = match self.int8_op(id, node, place, *out)? {
            Some(call) => {
                if out.dtype != DType::I8 {
                    bail!("output is {}, not int8", out.dtype);
                }
                call
            }
            None => match self.layout_op(id, node, place, *out)? {
                Some(call) => call,
                None => self.integer_op(node, place, *out)?,
            },
        };
        self.block(*out, &call)
    }

    /// Data input `k` of `node` as a slice expression.
    fn arg(&mut self, node: &Node, k: usize, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<String> {
        let t = node.inputs[k];
        self.read(t, place(t), out)
    }

    /// `Some(input k)` or `None` when the node has no input `k` (an optional bias).
    fn optional_arg(&mut self, node: &Node, k: usize, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<String> {
        Ok(match node.inputs.get(k) {
            Some(_) => format!("Some({})", self.arg(node, k, place, out)?),
            None => "None".into(),
        })
    }

    /// mote's int8 ops (`ops::quant`); `None` for other ops.
    fn int8_op(&mut self, id: u32, node: &Node, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<Option<String>> {
        let g = self.g;
        let op = node.op.as_any();
        let x_shape = shape_of(g, node.inputs[0]);
        let y_shape = shape_of(g, node.outputs[0]);
        let call = if let Some(q) = op.downcast_ref::<QLinear>() {
            let x = self.arg(node, 0, place, out)?;
            let w = self.arg(node, 1, place, out)?;
            let bias = self.optional_arg(node, 2, place, out)?;
            let rq = self.acc_requant(id, &q.rescale, q.y_zero_point);
            let ws = shape_of(g, node.inputs[1]);
            format!(
                "let rq = {rq};\n        \
                 matmul::linear_requant({x}, {w}, {bias}, MatDims {{ m: {}, k: {}, n: {} }}, {}, &rq, out)?;",
                product(&x_shape) / ws[1],
                ws[1],
                ws[0],
                -q.x_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QLinearThreshold>() {
            let (x, w) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
            let bias = self.optional_arg(node, 2, place, out)?;
            let ws = shape_of(g, node.inputs[1]);
            let t = self.static_array(
                format!("L{id}_STEPS"),
                "i32",
                &q.thresholds,
                4 * q.thresholds.len(),
                "accumulators where the output steps up",
            );
            format!(
                "let rq = Requant::Threshold(ThresholdRequant::new(&{t}, {})?);\n        \
                 matmul::linear_requant({x}, {w}, {bias}, MatDims {{ m: {}, k: {}, n: {} }}, {}, &rq, out)?;",
                q.lo,
                product(&x_shape) / ws[1],
                ws[1],
                ws[0],
                -q.x_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QMatMul>() {
            let (a, b) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
            let b_shape = shape_of(g, node.inputs[1]);
            let (ra, rb) = (x_shape.len(), b_shape.len());
            let (m, k, n) = (x_shape[ra - 2], x_shape[ra - 1], b_shape[rb - 1]);
            let (batch_a, batch_b) = (product(&x_shape[..ra - 2]), product(&b_shape[..rb - 2]));
            let b_strides = if batch_b == batch_a {
                format!("Strides::packed({k}, {n})")
            } else if batch_b == 1 {
                format!("Strides {{ offset: 0, batch: 0, row: {n} }}")
            } else {
                bail!("batched matmul broadcasting {x_shape:?} · {b_shape:?}");
            };
            let rq = self.acc_requant(id, &q.rescale, q.y_zero_point);
            format!(
                "let rq = {rq};\n        \
                 let p = BatchedMatmul {{ a_offset: {}, b_offset: {}, b: {b_strides}, ..BatchedMatmul::packed_nn({batch_a}, {m}, {k}, {n}) }};\n        \
                 matmul::av_requant(&p, {a}, {b}, &rq, out)?;",
                -q.a_zero_point,
                -q.b_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QBinary>() {
            let (a, b) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
            self.binary(q, node, &[a, b], &y_shape)?
        } else if let Some(q) = op.downcast_ref::<QLut>() {
            let x = self.arg(node, 0, place, out)?;
            let t = self.static_array(format!("L{id}_TABLE"), "i8", &q.table[..], 256, &format!("{} at int8", q.label));
            format!("activation::lut_i8({x}, &{t}, out)?;")
        } else if let Some(q) = op.downcast_ref::<QSoftmax>() {
            let x = self.arg(node, 0, place, out)?;
            let e = self.static_array(format!("L{id}_EXP"), "u16", &q.exp[..], 512, "2^15·exp(-s·d)");
            let row = *x_shape.last().unwrap_or(&1);
            let mask = match &q.mask {
                Some((m, rows)) => {
                    let flags: Vec<bool> = m.clone();
                    let name =
                        self.static_array(format!("L{id}_MASK"), "bool", &flags, flags.len(), "allowed positions");
                    format!("Some(RowMask {{ allowed: &{name}, rows: {rows} }})")
                }
                None => "None".into(),
            };
            format!(
                "softmax::softmax_i8({x}, {row}, {mask}, &SoftmaxI8Params {{ exp: &{e}, out_recip: {}, out_zero_point: {} }}, out)?;",
                q.out_recip, q.out_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QLayerNorm>() {
            let x = self.arg(node, 0, place, out)?;
            let gm = self.static_array(format!("L{id}_GAMMA"), "i32", &q.gamma, 4 * q.gamma.len(), "γ/s_out·2^F");
            let bt = self.static_array(format!("L{id}_BETA"), "i32", &q.beta, 4 * q.beta.len(), "β/s_out·2^F");
            let rms = q.rms_zero_point.map_or("None".into(), |z| format!("Some({z})"));
            format!(
                "norm::layernorm_i8({x}, {}, &LayerNormI8Params {{ gamma: &{gm}, beta: &{bt}, frac_bits: {}, eps: {}, out_zero_point: {}, rms_zero_point: {rms} }}, out)?;",
                q.gamma.len(),
                q.frac_bits,
                q.eps,
                q.out_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QMean>() {
            let x = self.arg(node, 0, place, out)?;
            let fp = self.fixed_point(id, &q.rescale, q.y_zero_point);
            let (outer, n, inner) =
                (product(&x_shape[..q.first]), product(&x_shape[q.first..q.end]), product(&x_shape[q.end..]));
            format!(
                "let rq = {fp};\n        \
                 pool::mean_requant({x}, {outer}, {n}, {inner}, {}, &rq, out)?;",
                -q.x_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QConv>() {
            let (x, w) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
            let bias = self.optional_arg(node, 2, place, out)?;
            let rq = self.acc_requant(id, &q.rescale, q.y_zero_point);
            let p = qconv_params(q, &x_shape, &shape_of(g, node.inputs[1]));
            format!(
                "let rq = {rq};\n        let p = {p};\n        conv::conv2d_requant({x}, {w}, {bias}, &p, &rq, out)?;"
            )
        } else if let Some(q) = op.downcast_ref::<Requantize>() {
            let x = self.arg(node, 0, place, out)?;
            let fp = self.fixed_point(id, &q.rescale, q.y_zero_point);
            format!("let rq = {fp};\n        requant::rescale({x}, {}, &rq, out)?;", -q.x_zero_point)
        } else {
            return Ok(None);
        };
        Ok(Some(call))
    }

    /// Data movement and pooling, on any element type; `None` for other ops.
    fn layout_op(
        &mut self,
        id: u32,
        node: &Node,
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
    ) -> Result<Option<String>> {
        let g = self.g;
        let op = node.op.as_any();
        let x_shape = shape_of(g, node.inputs[0]);
        let y_shape = shape_of(g, node.outputs[0]);
        let call = if let Some(t) = op.downcast_ref::<Transpose>() {
            let x = self.arg(node, 0, place, out)?;
            format!("layout::transpose({x}, &[{}], &[{}], out)?;", list(&x_shape), list(&t.perm))
        } else if let Some(s) = op.downcast_ref::<Slice>() {
            let x = self.arg(node, 0, place, out)?;
            let starts: Vec<usize> = s.starts.iter().map(|&v| v as usize).collect();
            format!(
                "layout::slice({x}, &[{}], &[{}], &[{}], &[{}], out)?;",
                list(&x_shape),
                list(&starts),
                list(&s.steps),
                list(&y_shape)
            )
        } else if let Some(gt) = op.downcast_ref::<Gather>() {
            // The index constant becomes a typed static of the op's own code, not a data input.
            let x = self.arg(node, 0, place, out)?;
            let Some(idx) = &g.values[node.inputs[1]].konst else { bail!("Gather with runtime indices") };
            let d = x_shape[gt.axis] as i64;
            let idx: Vec<usize> = idx.to_i64_vec().iter().map(|&i| if i < 0 { i + d } else { i } as usize).collect();
            let name = self.static_array(format!("L{id}_INDEX"), "usize", &idx, 4 * idx.len(), "gathered indices");
            format!(
                "layout::gather_axis({x}, {}, {}, {}, &{name}, out)?;",
                product(&x_shape[..gt.axis]),
                x_shape[gt.axis],
                product(&x_shape[gt.axis + 1..])
            )
        } else if let Some(c) = op.downcast_ref::<Concat>() {
            let outer = product(&y_shape[..c.axis]);
            let out_cols = product(&y_shape[c.axis..]);
            let mut offset = 0;
            let mut calls = Vec::new();
            for (k, &i) in node.inputs.iter().enumerate() {
                let x = self.arg(node, k, place, out)?;
                let cols = product(&shape_of(g, i)[c.axis..]);
                calls.push(format!("layout::concat_part({x}, {outer}, {cols}, {out_cols}, {offset}, out)?;"));
                offset += cols;
            }
            calls.join("\n        ")
        } else if let Some(p) = op.downcast_ref::<MaxPool>() {
            if x_shape.len() != 4 || p.dilations.iter().any(|&d| d != 1) || p.ceil_mode {
                bail!("MaxPool other than 2-D, dilation 1, floor mode");
            }
            let x = self.arg(node, 0, place, out)?;
            format!(
                "pool::maxpool2d({x}, &Pool2dParams {{ stride_h: {}, stride_w: {}, pad_top: {}, pad_left: {}, pad_bottom: {}, pad_right: {}, ..Pool2dParams::new({}, {}, {}, {}, {}, {}) }}, out)?;",
                p.strides[0],
                p.strides[1],
                p.pads[0],
                p.pads[1],
                p.pads[2],
                p.pads[3],
                x_shape[0],
                x_shape[1],
                x_shape[2],
                x_shape[3],
                p.kernel[0],
                p.kernel[1]
            )
        } else {
            return Ok(None);
        };
        Ok(Some(call))
    }

    /// Exact-integer ops (Deeploy's, and integer MatMul/Gemm/Conv/Add/Mul) on narrow storage, each
    /// with the kernel its IR `eval` uses (or, for the plain integer ops, an exact `i32` kernel whose
    /// bound the narrowing proved).
    fn integer_op(&mut self, node: &Node, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<String> {
        let g = self.g;
        let op = node.op.as_any();
        let x_shape = shape_of(g, node.inputs[0]);
        let row = *x_shape.last().unwrap_or(&1);
        let konst_i32 = |e: &mut Self, k: usize| -> Result<String> {
            let t = node.inputs[k];
            if g.values[t].konst.is_none() {
                bail!("parameter `{}` must be a constant", g.values[t].name);
            }
            e.konst_as(t, DType::I32, None)
        };
        Ok(if let Some(p) = op.downcast_ref::<RequantShift>() {
            let x = self.arg(node, 0, place, out)?;
            let (m, a) = (konst_i32(self, 1)?, konst_i32(self, 2)?);
            let inner = rqs_inner(&x_shape, &shape_of(g, node.inputs[1]), &shape_of(g, node.inputs[2]))?;
            format!(
                "let rq = Requant::Shift(ShiftRequant::new(&{m}, &{a}, {}, {}, {})?);\n        \
                 requant::requantize({x}, &rq, {inner}, out)?;",
                p.div_log2, p.n_levels, p.signed
            )
        } else if let Some(p) = op.downcast_ref::<ISoftmax>() {
            let x = self.arg(node, 0, place, out)?;
            format!(
                "softmax::isoftmax({x}, {row}, &ISoftmaxParams {{ coeff_a: {}, coeff_b: {}, coeff_c: {}, log2: {}, n_levels: {} }}, out)?;",
                p.coeff_a, p.coeff_b, p.coeff_c, p.log2, p.n_levels
            )
        } else if op.is::<ItaMax>() {
            let x = self.arg(node, 0, place, out)?;
            format!("softmax::itamax({x}, {row}, out)?;")
        } else if let Some(p) = op.downcast_ref::<ILayerNorm>() {
            let x = self.arg(node, 0, place, out)?;
            let (w, b) = (konst_i32(self, 1)?, konst_i32(self, 2)?);
            format!("norm::ilayernorm({x}, {row}, &{w}, &{b}, {}, {}, out)?;", p.d, p.n_levels)
        } else if let Some(p) = op.downcast_ref::<IRmsNorm>() {
            let x = self.arg(node, 0, place, out)?;
            let w = konst_i32(self, 1)?;
            format!("norm::irmsnorm({x}, {row}, &{w}, {}, {}, out)?;", p.d, p.n_levels)
        } else if let Some(p) = op.downcast_ref::<IGelu>() {
            let x = self.arg(node, 0, place, out)?;
            format!("activation::igelu({x}, {}, {}, out)?;", p.b, p.one)
        } else if let Some(p) = op.downcast_ref::<IHardswish>() {
            let x = self.arg(node, 0, place, out)?;
            format!("activation::ihardswish({x}, {}, {}, {}, out)?;", p.three, p.six, p.one_over_six)
        } else if let Some(p) = op.downcast_ref::<TrueIntegerDiv>() {
            let x = self.arg(node, 0, place, out)?;
            format!("elementwise::true_integer_div({x}, {}, out)?;", p.k)
        } else if let Some(p) = op.downcast_ref::<IntegerMean>() {
            let x = self.arg(node, 0, place, out)?;
            let (Some(&lo), Some(&hi)) = (p.axes.first(), p.axes.last()) else { bail!("IntegerMean without axes") };
            let (outer, n, inner) = (product(&x_shape[..lo]), product(&x_shape[lo..=hi]), product(&x_shape[hi + 1..]));
            format!("pool::integer_mean({x}, {outer}, {n}, {inner}, out)?;")
        } else if op.is::<MatMul>() {
            self.matmul(node, place, out, false)?
        } else if let Some(p) = op.downcast_ref::<Gemm>() {
            if p.trans_a {
                bail!("Gemm with transA");
            }
            let b_shape = shape_of(g, node.inputs[1]);
            let (m, k) = (x_shape[0], x_shape[1]);
            let n = if p.trans_b { b_shape[0] } else { b_shape[1] };
            let (a, b) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
            let c = match node.inputs.get(2) {
                Some(&ct) => {
                    let len = g.values[ct].ty.len();
                    if len != m * n && len != n && len != 1 {
                        bail!("Gemm C of shape {:?} (the kernel takes [M, N], [N] or a scalar)", shape_of(g, ct));
                    }
                    if g.values[ct].konst.is_some() {
                        format!("Some(&{}[..])", konst_i32(self, 2)?)
                    } else if self.storage(ct)? == DType::I32 {
                        format!("Some({})", self.arg(node, 2, place, out)?)
                    } else {
                        bail!("Gemm C `{}` must be stored as i32", g.values[ct].name);
                    }
                }
                None => "None".into(),
            };
            format!(
                "matmul::gemm_i32({a}, {b}, {c}, &GemmParams {{ dims: MatDims {{ m: {m}, k: {k}, n: {n} }}, trans_b: {}, alpha: {}, beta: {} }}, out)?;",
                p.trans_b, p.alpha as i32, p.beta as i32
            )
        } else if let Some(p) = op.downcast_ref::<Conv>() {
            if x_shape.len() != 4 {
                bail!("Conv other than 2-D");
            }
            let x = self.arg(node, 0, place, out)?;
            let wt = node.inputs[1];
            if g.values[wt].konst.is_none() {
                bail!("Conv weights `{}` must be constant", g.values[wt].name);
            }
            let w = self.konst_as(wt, DType::I8, None)?;
            let bias = match node.inputs.get(2) {
                Some(_) => format!("Some(&{}[..])", konst_i32(self, 2)?),
                None => "None".into(),
            };
            format!(
                "{}\n        conv::conv2d_i32({x}, &{w}, {bias}, &p, out)?;",
                conv_params(p, &x_shape, &shape_of(g, wt))
            )
        } else if op.is::<Binary>() {
            self.binary_i32(node, place, out, false)?
        } else {
            bail!("no code generation for this op");
        })
    }

    /// Integer `Add` / `Mul` with broadcasting (`add_i32` / `mul_i32`), requantized by `rq` when
    /// `requant`.
    fn binary_i32(
        &mut self,
        node: &Node,
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
        requant: bool,
    ) -> Result<String> {
        let g = self.g;
        let Some(b) = node.op.as_any().downcast_ref::<Binary>() else { bail!("not a binary op") };
        let kernel = match b.kind {
            BinaryKind::Add => "add_i32",
            BinaryKind::Mul => "mul_i32",
            k => bail!("integer {k:?} has no kernel (only Add and Mul)"),
        };
        let (sa, sb) = (shape_of(g, node.inputs[0]), shape_of(g, node.inputs[1]));
        let y_shape = shape_of(g, node.outputs[0]);
        let n = product(&y_shape);
        // The kernel broadcasts its second operand only: swap the (commutative) operands.
        let (full, rep, rep_shape) = match (product(&sa) == n, product(&sb) == n) {
            (true, _) => (0, 1, sb.clone()),
            (false, true) => (1, 0, sa.clone()),
            _ => bail!("broadcasting {sa:?} and {sb:?} to {y_shape:?} (one operand must be full size)"),
        };
        let inner = broadcast_inner(&rep_shape, &y_shape)
            .ok_or_else(|| mote_core::Error::Unsupported(format!("broadcasting {sa:?} and {sb:?} to {y_shape:?}")))?;
        let (a, c) = (self.arg(node, full, place, out)?, self.arg(node, rep, place, out)?);
        let (sfx, rq) = if requant { ("_requant", ", &rq") } else { ("", "") };
        Ok(format!("elementwise::{kernel}{sfx}({a}, {c}, {inner}{rq}, out)?;"))
    }

    /// Integer `MatMul` (numpy semantics) as one batched `i32` product, requantized by `rq` when
    /// `requant`. A constant `[k, n]` right operand is stored transposed (`[n, k]`, rows contiguous
    /// for the dot products).
    fn matmul(&mut self, node: &Node, place: &dyn Fn(TensorId) -> Place, out: Out, requant: bool) -> Result<String> {
        let g = self.g;
        let (sa, sb) = (shape_of(g, node.inputs[0]), shape_of(g, node.inputs[1]));
        let (a_batch, m, k) = match sa.as_slice() {
            [k] => (&sa[..0], 1, *k),
            [rest @ .., m, k] => (rest, *m, *k),
            [] => bail!("MatMul of a scalar"),
        };
        let (b_batch, n) = match sb.as_slice() {
            [_] => (&sb[..0], 1),
            [rest @ .., _, n] => (rest, *n),
            [] => bail!("MatMul of a scalar"),
        };
        let batch = product(&shape_of(g, node.outputs[0])) / (m * n).max(1);
        let stride = |own: &[usize], packed: usize| -> Result<usize> {
            match product(own) {
                p if p == batch => Ok(packed),
                1 => Ok(0),
                _ => bail!("batch broadcasting {sa:?} · {sb:?}: one operand must have the full batch or none"),
            }
        };
        let (a_stride, b_stride) = (stride(a_batch, m * k)?, stride(b_batch, k * n)?);
        let a = self.arg(node, 0, place, out)?;
        let a_strides = format!("Strides {{ offset: 0, batch: {a_stride}, row: {k} }}");
        let bt = node.inputs[1];
        let (sfx, rq) = if requant { ("_requant", ", &rq") } else { ("", "") };
        if g.values[bt].konst.is_some() && b_stride == 0 {
            let d = self.storage(bt)?;
            let w = self.konst_as(bt, d, Some((k, n)))?;
            Ok(format!(
                "let p = BatchedMatmul {{ a: {a_strides}, b: Strides {{ offset: 0, batch: 0, row: {k} }}, ..BatchedMatmul::packed_nt({batch}, {m}, {k}, {n}) }};\n        \
                 matmul::qk_t{sfx}(&p, {a}, &{w}{rq}, out)?;"
            ))
        } else {
            let b = self.arg(node, 1, place, out)?;
            Ok(format!(
                "let p = BatchedMatmul {{ a: {a_strides}, b: Strides {{ offset: 0, batch: {b_stride}, row: {n} }}, ..BatchedMatmul::packed_nn({batch}, {m}, {k}, {n}) }};\n        \
                 matmul::av{sfx}(&p, {a}, {b}{rq}, out)?;"
            ))
        }
    }

    /// mote's int8 element-wise ops over their first operand (`out` holds it on entry), or `None`.
    fn int8_in_place(
        &mut self,
        id: u32,
        node: &Node,
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
    ) -> Result<Option<String>> {
        let op = node.op.as_any();
        Ok(Some(if let Some(q) = op.downcast_ref::<QLut>() {
            let t = self.static_array(format!("L{id}_TABLE"), "i8", &q.table[..], 256, &format!("{} at int8", q.label));
            format!("activation::lut_i8_in_place(out, &{t})?;")
        } else if let Some(q) = op.downcast_ref::<Requantize>() {
            let fp = self.fixed_point(id, &q.rescale, q.y_zero_point);
            format!("let rq = {fp};\n        requant::rescale_in_place(out, {}, &rq)?;", -q.x_zero_point)
        } else if let Some(q) = op.downcast_ref::<QBinary>() {
            let b = self.read(node.inputs[1], place(node.inputs[1]), out)?;
            let y = shape_of(self.g, node.outputs[0]);
            let inner = broadcast_inner(&shape_of(self.g, node.inputs[1]), &y)
                .ok_or_else(|| mote_core::Error::Unsupported("in-place broadcast".into()))?;
            binary_call(q.kind, "out", &b, inner, true)
        } else {
            return Ok(None);
        }))
    }

    /// An element-wise layer that overwrites its input (`out` holds the input on entry).
    fn in_place(&mut self, id: u32, layer: &Layer, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<String> {
        let g = self.g;
        let first = &g.nodes[layer.nodes[0]];
        let last = &g.nodes[layer.nodes[layer.nodes.len() - 1]];
        if let Some(call) = self.int8_in_place(id, first, place, out)? {
            return Ok(call);
        }
        if layer.fusion == Fusion::Table {
            let (table, input) = self.table(layer)?;
            return Ok(format!("activation::lut_{input}_in_place(out, &{table})?;"));
        }
        let rq = self.shift_requant(layer)?;
        let op = first.op.as_any();
        let call = if layer.fusion == Fusion::Single {
            let inner =
                rqs_inner(&shape_of(g, last.inputs[0]), &shape_of(g, last.inputs[1]), &shape_of(g, last.inputs[2]))?;
            format!("requant::requantize_in_place(out, &rq, {inner})?;")
        } else if let Some(q) = op.downcast_ref::<IGelu>() {
            format!("activation::igelu_requant_in_place(out, {}, {}, &rq)?;", q.b, q.one)
        } else if let Some(q) = op.downcast_ref::<IHardswish>() {
            format!(
                "activation::ihardswish_requant_in_place(out, &HardswishParams {{ three: {}, six: {}, one_over_six: {} }}, &rq)?;",
                q.three, q.six, q.one_over_six
            )
        } else {
            bail!("no in-place kernel for {}", first.op.name());
        };
        Ok(format!("{rq}{call}"))
    }

    /// A fused group (see `fuse`): the producer's kernel with the final `RequantShift` applied to
    /// each accumulator.
    fn fused(&mut self, layer: &Layer, place: &dyn Fn(TensorId) -> Place, out: Out) -> Result<String> {
        let g = self.g;
        let first = &g.nodes[layer.nodes[0]];
        if layer.fusion == Fusion::Table {
            let (table, input) = self.table(layer)?;
            let x = self.arg(first, 0, place, out)?;
            return Ok(format!("activation::lut_{input}({x}, &{table}, out)?;"));
        }
        let rq = self.shift_requant(layer)?;
        let x_shape = shape_of(g, first.inputs[0]);
        let call = match layer.fusion {
            Fusion::Linear { bias } => {
                let x = self.arg(first, 0, place, out)?;
                let ws = shape_of(g, first.inputs[1]);
                let (k, n) = (ws[ws.len() - 2], ws[ws.len() - 1]);
                let w = self.konst_as(first.inputs[1], DType::I8, Some((k, n)))?;
                let bias = match bias {
                    Some(b) => format!("Some(&{}[..])", self.konst_as(b, DType::I32, None)?),
                    None => "None".into(),
                };
                let rows = product(&x_shape) / k.max(1);
                format!(
                    "matmul::linear_requant({x}, &{w}, {bias}, MatDims {{ m: {rows}, k: {k}, n: {n} }}, 0, &rq, out)?;"
                )
            }
            Fusion::Batched => self.matmul(first, place, out, true)?,
            Fusion::Conv => {
                let x = self.arg(first, 0, place, out)?;
                let op = first
                    .op
                    .as_any()
                    .downcast_ref::<Conv>()
                    .ok_or_else(|| mote_core::Error::Invalid("not a Conv".into()))?;
                let w = self.konst_as(first.inputs[1], DType::I8, None)?;
                let bias = match first.inputs.get(2) {
                    Some(&b) => format!("Some(&{}[..])", self.konst_as(b, DType::I32, None)?),
                    None => "None".into(),
                };
                format!(
                    "let p = {};\n        conv::conv2d_requant({x}, &{w}, {bias}, &p, &rq, out)?;",
                    conv_params(op, &x_shape, &shape_of(g, first.inputs[1]))
                )
            }
            Fusion::Activation => {
                let x = self.arg(first, 0, place, out)?;
                let op = first.op.as_any();
                if let Some(q) = op.downcast_ref::<IGelu>() {
                    format!("activation::igelu_requant({x}, {}, {}, &rq, out)?;", q.b, q.one)
                } else if let Some(q) = op.downcast_ref::<IHardswish>() {
                    format!(
                        "activation::ihardswish_requant({x}, &HardswishParams {{ three: {}, six: {}, one_over_six: {} }}, &rq, out)?;",
                        q.three, q.six, q.one_over_six
                    )
                } else {
                    bail!("no fused activation for {}", first.op.name());
                }
            }
            Fusion::Elementwise => self.binary_i32(first, place, out, true)?,
            Fusion::Single | Fusion::Table => bail!("not a fused requantizing layer"),
        };
        Ok(format!("{rq}{call}"))
    }

    /// The call of a fused self-attention block (`mote_kernels::attention`): projections packed per head for the
    /// board's layout (Dsp16 under Deeploy's `RequantShift`), keys and values packed at run time into the planned
    /// scratch; in place when planned so.
    fn attention_call(
        &mut self,
        id: u32,
        node: &Node,
        q: &QAttention,
        in_place: bool,
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
    ) -> Result<String> {
        let g = self.g;
        if out.scratch.is_none() {
            bail!("no scratch planned for attention layer {id}");
        }
        let (proj_layout, out_layout) = q.layouts(attention_layout(self.packed));
        let slots = q.input_slots();
        let data = |t: TensorId| g.values[t].konst.as_ref().map(|c| c.to_i64_vec()).unwrap_or_default();
        let pack = |e: &mut Self,
                    name: &str,
                    (w, b): (Option<usize>, Option<usize>),
                    p: &QProjection,
                    heads,
                    layout: PackedLayout| {
            let (Some(w), Some(b)) = (w, b) else { bail!("attention layer {id} lacks its {name} weights") };
            let (wt, bt) = (node.inputs[w], node.inputs[b]);
            let (n, k) = (g.values[wt].ty.shape[0], g.values[wt].ty.shape[1]);
            let wd: Vec<i8> = data(wt).into_iter().map(|v| v as i8).collect();
            let bd: Vec<i32> = data(bt).into_iter().map(|v| v as i32).collect();
            let mul = p.requant.packed_mul();
            let src = LinearWeights { w: &wd, bias: Some(&bd), input_offset: -p.x_zero_point, mul, n, k };
            let mut words = vec![0i32; heads * layout.words(n / heads, k)];
            pack_heads(layout, &src, heads, &mut words)
                .map_err(|e| mote_core::Error::Invalid(format!("packing attention layer {id}: {e}")))?;
            let doc = format!("`{}` {name} projection packed per head for {layout:?}", node.name);
            Ok(e.static_array(format!("L{id}_{}", name.to_uppercase()), "i32", &words, 4 * words.len(), &doc))
        };
        let head_projection = |e: &mut Self, name: &str, slots, p: &QProjection| -> Result<String> {
            let words = pack(e, name, slots, p, q.heads, proj_layout)?;
            let table = match &p.table {
                Some((t, zp)) => {
                    let doc = format!("`{}` table after the {name} projection", node.name);
                    let t = e.static_array(format!("L{id}_{}_TABLE", name.to_uppercase()), "i8", &t[..], 256, &doc);
                    format!("Some((&{t}, {zp}))")
                }
                None => "None".into(),
            };
            let requant = e.block_requant(id, name, &p.requant, "LayerRequant")?;
            Ok(format!("attention::HeadProjection {{ words: &{words}, requant: {requant}, table: {table} }}"))
        };
        let wq = head_projection(self, "query", (slots[0], slots[1]), &q.q)?;
        let optional = |e: &mut Self, name: &str, slots, p: &Option<QProjection>| -> Result<String> {
            Ok(match p {
                Some(p) => format!("Some({})", head_projection(e, name, slots, p)?),
                None => "None".into(),
            })
        };
        let wk = optional(self, "key", (slots[2], slots[3]), &q.k)?;
        let wv = optional(self, "value", (slots[4], slots[5]), &q.v)?;
        let wo = pack(self, "output", (slots[6], slots[7]), &q.out, 1, out_layout)?;
        let out_requant = self.block_requant(id, "output", &q.out.requant, "LayerRequant")?;
        let scores = self.block_requant(id, "scores", &q.scores, "ProductRequant")?;
        let av = self.block_requant(id, "values", &q.av, "ProductRequant")?;
        let softmax = match &q.softmax {
            AttentionSoftmax::I8(sm) => {
                let exp = self.static_array(format!("L{id}_EXP"), "u16", &sm.exp[..], 512, "2^15·exp(-s·d)");
                format!(
                    "attention::MhsaSoftmax::I8(SoftmaxI8Params {{ exp: &{exp}, out_recip: {}, out_zero_point: {} }})",
                    sm.out_recip, sm.out_zero_point
                )
            }
            AttentionSoftmax::ItaMax => "attention::MhsaSoftmax::ItaMax".into(),
            AttentionSoftmax::ISoftmax(p) => format!(
                "attention::MhsaSoftmax::ISoftmax(ISoftmaxParams {{ coeff_a: {}, coeff_b: {}, coeff_c: {}, log2: {}, n_levels: {} }})",
                p.coeff_a, p.coeff_b, p.coeff_c, p.log2, p.n_levels
            ),
        };
        let mask = match q.mask() {
            Some(m) => {
                let name =
                    self.static_array(format!("L{id}_MASK"), "bool", m.allowed, m.allowed.len(), "allowed positions");
                format!("Some(RowMask {{ allowed: &{name}, rows: {} }})", m.rows)
            }
            None => "None".into(),
        };
        let x_shape = shape_of(g, node.inputs[0]);
        let out_dim = last_dim(g, node.outputs[0]);
        let s = q.shape(&x_shape, out_dim, proj_layout, out_layout);
        let call = if in_place {
            "attention::mhsa_i8_in_place(&p, schedule, out, scratch)?;".to_string()
        } else {
            format!("attention::mhsa_i8(&p, schedule, {}, out, scratch)?;", self.arg(node, 0, place, out)?)
        };
        Ok(format!(
            "let p = attention::MhsaI8 {{\n            \
             shape: attention::MhsaShape {{ seq: {}, embed: {}, heads: {}, qk_dim: {}, v_dim: {}, out_dim: {}, project_k: {}, project_v: {}, proj_layout: PackedLayout::{proj_layout:?}, out_layout: PackedLayout::{out_layout:?} }},\n            \
             x_zero_point: {},\n            \
             q: {wq},\n            \
             k: {wk},\n            v: {wv},\n            \
             scores: {scores},\n            \
             softmax: {softmax},\n            \
             mask: {mask},\n            \
             av: {av},\n            \
             out: PackedLinear::new(PackedLayout::{out_layout:?}, {out_dim}, {}, &{wo})?,\n            \
             out_requant: {out_requant},\n        }};\n        \
             let schedule = attention::MhsaSchedule::{:?};\n        {call}",
            s.seq,
            s.embed,
            s.heads,
            s.qk_dim,
            s.v_dim,
            s.out_dim,
            s.project_k,
            s.project_v,
            q.q.x_zero_point,
            q.heads * q.v_dim,
            q.schedule,
        ))
    }

    /// A fused attention block's requantization as the kernel's `kind` (`LayerRequant` or `ProductRequant`);
    /// per-channel `RequantShift` parameters become statics.
    fn block_requant(&mut self, id: u32, name: &str, rq: &BlockRequant, kind: &str) -> Result<String> {
        Ok(match rq {
            BlockRequant::HighMul { zero_point, .. } if kind == "LayerRequant" => {
                format!("attention::LayerRequant::HighMul {{ zero_point: {zero_point} }}")
            }
            BlockRequant::HighMul { mul, zero_point } => match &mul[..] {
                [m] => format!("attention::ProductRequant::HighMul {{ mul: {m}, zero_point: {zero_point} }}"),
                _ => bail!("attention layer {id}: the {name} product has {} multipliers", mul.len()),
            },
            BlockRequant::Shift(p) => {
                let mut param = |what: &str, v: &[i32]| match v {
                    [one] => format!("[{one}]"),
                    _ => {
                        let doc = format!("`RequantShift` {what} of the {name} projection of attention layer {id}");
                        let array_name = format!("L{id}_{}_{}", name.to_uppercase(), what.to_uppercase());
                        self.static_array(array_name, "i32", v, 4 * v.len(), &doc)
                    }
                };
                let (m, a) = (param("mul", &p.mul), param("add", &p.add));
                format!(
                    "attention::{kind}::Shift(ShiftRequant::with_bounds(&{m}, &{a}, {}, {}, {})?)",
                    p.shift, p.lo, p.hi
                )
            }
        })
    }

    /// The call of a `QMatMul` on the packed kernel ([`packed_matmul`]), `b` packed into its planned scratch.
    fn matmul_packed_call(
        &mut self,
        id: u32,
        layer: &Layer,
        mm: &PackedMatmul,
        place: &dyn Fn(TensorId) -> Place,
        out: Out,
    ) -> Result<String> {
        let node = &self.g.nodes[layer.nodes[0]];
        let Some(q) = node.op.as_any().downcast_ref::<QMatMul>() else { bail!("layer {id} is not a QMatMul") };
        let AccRescale::HighMul(mul) = &q.rescale else { bail!("packed matmul {id} without HighMul rescale") };
        if out.scratch.is_none() {
            bail!("no scratch planned for packed layer {id}");
        }
        let (a, b) = (self.arg(node, 0, place, out)?, self.arg(node, 1, place, out)?);
        Ok(format!(
            "let p = packed::PackedMatmul {{ batch: {}, m: {}, k: {}, n: {}, b_broadcast: {}, a_offset: {}, b_offset: {} }};\n        \
             packed::matmul_packed({a}, {b}, &p, {}, {}, scratch, out)?;",
            mm.batch,
            mm.m,
            mm.k,
            mm.n,
            mm.b_broadcast,
            mm.a_offset,
            mm.b_offset,
            mul.first().copied().unwrap_or(0),
            q.y_zero_point
        ))
    }

    /// `let rq = ..;` for the `RequantShift` that ends a fused or in-place layer.
    /// The static table of a [`Fusion::Table`] layer, and its input's storage type (`i8` or `u8`).
    fn table(&mut self, layer: &Layer) -> Result<(String, &'static str)> {
        let g = self.g;
        let (first, last) = (&g.nodes[layer.nodes[0]], &g.nodes[layer.nodes[layer.nodes.len() - 1]]);
        let values = crate::fuse::table(g, self.nw, layer)
            .ok_or_else(|| mote_core::Error::Invalid(format!("no table for layer `{}`", first.name)))?;
        let input = if self.nw.storage[first.inputs[0]] == Some(DType::I8) { "i8" } else { "u8" };
        let output = if self.nw.storage[last.outputs[0]] == Some(DType::I8) { "i8" } else { "u8" };
        let names: Vec<&str> = layer.nodes.iter().map(|&n| g.nodes[n].op.name()).collect();
        let doc = format!("`{}`: {} of every {input} value", last.name, names.join(" + "));
        let name = format!("TABLE{}", self.statics_by_content.len());
        Ok((self.static_array(name, output, &values, 256, &doc), input))
    }

    fn shift_requant(&mut self, layer: &Layer) -> Result<String> {
        let last = &self.g.nodes[layer.nodes[layer.nodes.len() - 1]];
        let Some(p) = last.op.as_any().downcast_ref::<RequantShift>() else {
            bail!("`{}` ends the layer; a fused or in-place layer ends in RequantShift", last.op.name())
        };
        let (m, a) =
            (self.konst_as(last.inputs[1], DType::I32, None)?, self.konst_as(last.inputs[2], DType::I32, None)?);
        Ok(format!(
            "let rq = Requant::Shift(ShiftRequant::new(&{m}, &{a}, {}, {}, {})?);\n        ",
            p.div_log2, p.n_levels, p.signed
        ))
    }

    fn block(&mut self, out: Out, call: &str) -> Result<()> {
        let bytes = out.len * out.dtype.size_of();
        let split = |lhs: &str, from: &str, at: usize, len: usize| {
            format!("let ({lhs}) = split({from}, {at}, {len}).ok_or(Error::Layout)?;\n        ")
        };
        let mut s = split("lo, out, hi", "&mut arena.bytes", out.offset, bytes);
        match out.scratch {
            None => {}
            Some((at, len)) if at < out.offset => s.push_str(&split("lo, scratch, mid", "lo", at, len)),
            Some((at, len)) => s.push_str(&split("mid, scratch, hi", "hi", at - out.offset - bytes, len)),
        }
        let _ = write!(s, "let out = view_mut::<{}>(out).ok_or(Error::Layout)?;\n        ", rust_ty(out.dtype)?);
        if out.scratch.is_some() {
            s.push_str("let scratch = view_mut::<i32>(scratch).ok_or(Error::Layout)?;\n        ");
        }
        let _ = writeln!(self.body, "    {{\n        {s}{call}\n    }}");
        Ok(())
    }

    /// Requantized add/mul under the kernel's broadcast rule (`b` repeats with period `inner`).
    fn binary(&mut self, q: &QBinary, node: &Node, args: &[String], y: &[usize]) -> Result<String> {
        let (sa, sb) = (shape_of(self.g, node.inputs[0]), shape_of(self.g, node.inputs[1]));
        let n = product(y);
        let (mut kind, mut a, mut b, mut bs) = (q.kind, args[0].clone(), args[1].clone(), sb);
        if product(&sa) != n {
            // Only `b` may broadcast in the kernel: swap the (commutative) operands.
            std::mem::swap(&mut a, &mut b);
            bs = sa;
            kind = match kind {
                QBinaryKind::Add(p) => QBinaryKind::Add(mote_kernels::elementwise::AddRequant {
                    input1_offset: p.input2_offset,
                    input1_multiplier: p.input2_multiplier,
                    input1_shift: p.input2_shift,
                    input2_offset: p.input1_offset,
                    input2_multiplier: p.input1_multiplier,
                    input2_shift: p.input1_shift,
                    ..p
                }),
                QBinaryKind::AddShift(p) => QBinaryKind::AddShift(p.swapped()),
                QBinaryKind::Mul(p) => QBinaryKind::Mul(mote_kernels::elementwise::MulRequant {
                    input1_offset: p.input2_offset,
                    input2_offset: p.input1_offset,
                    ..p
                }),
            };
        }
        let inner = broadcast_inner(&bs, y).ok_or_else(|| {
            mote_core::Error::Unsupported(format!("broadcasting {bs:?} to {y:?} (one operand must be full size)"))
        })?;
        Ok(binary_call(kind, &a, &b, inner, false))
    }

    /// The crate's files.
    pub fn finish(
        &mut self,
        opts: &CompileOptions,
        arena: &ArenaReport,
        inputs: &[IoInfo],
        outputs: &[IoInfo],
        outputs_place: &[Place],
        layers: &[LayerInfo],
    ) -> Result<Vec<(PathBuf, String)>> {
        let mut lib = String::new();
        let io_doc = |v: &[IoInfo]| -> String {
            v.iter()
                .enumerate()
                .map(|(k, i)| {
                    let values = if i.scale == 1.0 && i.zero_point == 0 {
                        "exact integers".to_string()
                    } else {
                        format!("real = {} · (q − {})", i.scale, i.zero_point)
                    };
                    let layout = if i.dtype.size_of() > 1 { ", little-endian" } else { "" };
                    format!("//! - {k}: `{}` {} {:?} ({} bytes{layout}), {values}\n", i.name, i.dtype, i.shape, i.len)
                })
                .collect()
        };
        let _ = write!(
            lib,
            "//! Generated by mote (do not edit): the integer model as one allocation-free function.\n//!\n\
             //! Arena: {} bytes, one plan for every tensor whatever its type ({}; greedy-by-size would need {}, \
             lower bound {}).\n\
             //! Weights and parameters: {} bytes of `static` data (flash).\n//!\n//! Inputs:\n{}//!\n//! Outputs:\n{}\
             #![no_std]\n#![allow(unused_variables, unused_imports, clippy::all)]\n\n\
             use mote_kernels::activation::HardswishParams;\n\
             use mote_kernels::elementwise::{{AddRequant, AddShift, MulRequant}};\n\
             use mote_kernels::matmul::{{BatchedMatmul, GemmParams, MatDims, Strides}};\n\
             use mote_kernels::norm::LayerNormI8Params;\n\
             use mote_kernels::conv::Conv2dParams;\n\
             use mote_kernels::pool::Pool2dParams;\n\
             use mote_kernels::packed::{{self, PackedLayout, PackedLinear}};\n\
             use mote_kernels::requant::{{FixedPointRequant, HighMulRequant, Requant, ShiftRequant, ThresholdRequant}};\n\
             use mote_kernels::softmax::{{ISoftmaxParams, RowMask, SoftmaxI8Params}};\n\
             use mote_kernels::{{activation, attention, conv, elementwise, layout, matmul, norm, pool, requant, softmax}};\n\
             use mote_kernels::arena::{{split, view, view_mut}};\n\
             pub use mote_kernels::KernelError;\n\n\
             mod weights;\nuse weights::*;\n\n",
            arena.best,
            arena.strategy,
            arena.greedy,
            arena.lower_bound,
            self.weight_bytes,
            io_doc(inputs),
            io_doc(outputs)
        );
        let _ = write!(
            lib,
            "/// Bytes of working memory one inference needs (`size_of::<Arena>()`).\npub const ARENA_BYTES: usize = {};\n\
             /// Byte lengths of the inputs, in model order.\npub const INPUT_LENS: [usize; {}] = [{}];\n\
             /// Byte lengths of the outputs, in model order.\npub const OUTPUT_LENS: [usize; {}] = [{}];\n\
             /// Number of layers (`mark` ids are `0..LAYERS`).\npub const LAYERS: u32 = {};\n\n",
            arena.best,
            inputs.len(),
            list(&inputs.iter().map(|i| i.len).collect::<Vec<_>>()),
            outputs.len(),
            list(&outputs.iter().map(|i| i.len).collect::<Vec<_>>()),
            layers.len()
        );
        lib.push_str(RUNTIME);
        let _ = writeln!(
            lib,
            "/// Runs the model, calling `mark(layer)` before each layer (for per-layer measurements).\n\
             pub fn run_marked(arena: &mut Arena, inputs: &[&[i8]], outputs: &mut [&mut [i8]], mark: &mut dyn FnMut(u32)) -> Result<(), Error> {{\n    \
             if inputs.len() != INPUT_LENS.len() {{\n        return Err(Error::InputCount);\n    }}\n    \
             if outputs.len() != OUTPUT_LENS.len() {{\n        return Err(Error::OutputCount);\n    }}"
        );
        for k in 0..inputs.len() {
            let _ = writeln!(
                lib,
                "    let in{k}: &[i8] = inputs.get({k}).copied().ok_or(Error::InputCount)?;\n    \
                 if in{k}.len() != INPUT_LENS[{k}] {{\n        return Err(Error::InputLength({k}));\n    }}"
            );
        }
        for k in 0..outputs.len() {
            let _ = writeln!(
                lib,
                "    if outputs.get({k}).map(|o| o.len()) != Some(OUTPUT_LENS[{k}]) {{\n        return Err(Error::OutputLength({k}));\n    }}"
            );
        }
        lib.push_str(&self.prologue);
        lib.push_str(&self.body);
        for (k, (p, io)) in outputs_place.iter().zip(outputs).enumerate() {
            let (src, d) = match p {
                Place::Arena(d, a, l) => {
                    (format!("view::<{}>(&arena.bytes, {a}, {l}).ok_or(Error::Layout)?", rust_ty(*d)?), *d)
                }
                Place::Input(i) => (format!("in{i}"), DType::I8),
                Place::Const => bail!("output {k} is a constant"),
            };
            if d != io.dtype {
                bail!("output {k} is stored as {d}, its interface type is {}", io.dtype);
            }
            let copy = match d.size_of() {
                1 => "for (d, &s) in dst.iter_mut().zip(src) {\n        *d = s as i8;\n    }".to_string(),
                n => format!(
                    "for (d, s) in dst.chunks_exact_mut({n}).zip(src) {{\n        \
                     for (d, b) in d.iter_mut().zip(s.to_le_bytes()) {{\n            *d = b as i8;\n        }}\n    }}"
                ),
            };
            let _ = writeln!(
                lib,
                "    let dst = outputs.get_mut({k}).ok_or(Error::OutputCount)?;\n    let src = {src};\n    {copy}"
            );
        }
        lib.push_str("    Ok(())\n}\n");
        let weights = format!(
            "//! Weights and parameters of the generated model (flash).\n#![allow(clippy::all)]\n\n{}",
            self.statics
        );
        let crate_type = if opts.c_abi { "crate-type = [\"staticlib\", \"rlib\"]\n" } else { "" };
        let mut cargo = format!(
            "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [lib]\npath = \"src/lib.rs\"\n{crate_type}\n# A standalone crate (its own workspace), buildable where it is written.\n[workspace]\n\n[dependencies]\nmote-kernels = {{ path = \"{}\" }}\n",
            opts.crate_name,
            opts.kernels_path.display()
        );
        let mut files = vec![("src/weights.rs".into(), weights)];
        if opts.c_abi {
            cargo.push_str(
                "\n[features]\n# The C entry point and a panic handler, for the staticlib.\nc-abi = []\n\n\
                 [profile.release]\npanic = \"abort\"\n\n[profile.dev]\npanic = \"abort\"\n",
            );
            lib.push_str("\n#[cfg(feature = \"c-abi\")]\npub mod c_abi;\n");
            files.push(("src/c_abi.rs".into(), c_abi(inputs.len(), outputs.len())));
        }
        files.push(("Cargo.toml".into(), cargo));
        files.push(("src/lib.rs".into(), lib));
        Ok(files)
    }
}

/// The packed layout of a fused attention block's projections: the board's, else Rv32 (int8 weights, as compact
/// as plain ones, read by a portable scalar kernel).
pub(crate) fn attention_layout(packed: Option<PackedLayout>) -> PackedLayout {
    packed.unwrap_or(PackedLayout::Rv32)
}

/// `i32` scratch words of a layer that is a fused attention block, for the board's layout.
pub(crate) fn attention_scratch(g: &Graph, layer: &Layer, packed: Option<PackedLayout>) -> Option<usize> {
    let node = &g.nodes[layer.nodes[0]];
    let q = node.op.as_any().downcast_ref::<QAttention>()?;
    let (proj, out) = q.layouts(attention_layout(packed));
    let shape = q.shape(&shape_of(g, node.inputs[0]), last_dim(g, node.outputs[0]), proj, out);
    Some(shape.scratch(q.schedule)?.total_words())
}

/// The packed product of a `QMatMul` layer (two int8 activations, per-tensor `HighMul` rescale) on a core with a
/// packed layout (any Arm DSP core: `b` is packed at run time into Dsp16), or `None`. Products of fewer than 4
/// terms or with one output column stay plain: packing `b` for them costs hundreds of instructions a batch
/// (TinyViT's one-token windows: 34 K instructions for 64 MACs).
pub(crate) fn packed_matmul(g: &Graph, layer: &Layer, layout: Option<PackedLayout>) -> Option<PackedMatmul> {
    layout?;
    if layer.fusion != Fusion::Single || layer.in_place {
        return None;
    }
    let node = &g.nodes[*layer.nodes.first()?];
    let q = node.op.as_any().downcast_ref::<QMatMul>()?;
    let AccRescale::HighMul(mul) = &q.rescale else { return None };
    let (a, b) = (shape_of(g, node.inputs[0]), shape_of(g, node.inputs[1]));
    let (ra, rb) = (a.len(), b.len());
    if mul.len() != 1 || ra < 2 || rb < 2 || !(-128..=128).contains(&-q.b_zero_point) {
        return None;
    }
    let (batch, batch_b) = (product(&a[..ra - 2]), product(&b[..rb - 2]));
    let worth_packing = a[ra - 1] >= 4 && b[rb - 1] >= 2;
    (worth_packing && (batch_b == batch || batch_b == 1)).then_some(PackedMatmul {
        batch,
        m: a[ra - 2],
        k: a[ra - 1],
        n: b[rb - 1],
        b_broadcast: batch_b == 1 && batch > 1,
        a_offset: -q.a_zero_point,
        b_offset: -q.b_zero_point,
    })
}

/// How a layer runs on the packed linear kernel: `(layout, n, k)`, or `None` for the plain kernels.
///
/// A `QLinear` with `HighMul` rescale and constant weights and bias takes the core's fast layout (its
/// requantization is fused into the kernel). A Deeploy `MatMul [+ Add] + RequantShift` with int8 activations
/// takes `Dsp16` on every DSP core (the kernel accumulates with `SMLAD` and applies any requantization
/// after), and so do convolutions with one group, int8 input and constant weights and bias (Deeploy `Conv +
/// RequantShift`, mote `QConv` with any rescale), as `[O, C·kh·kw]`. The plan (scratch) and the emitter ask the
/// same question here.
pub(crate) fn packed_layer(
    g: &Graph,
    nw: &Narrowing,
    layer: &Layer,
    layout: Option<PackedLayout>,
) -> Option<(PackedLayout, usize, usize)> {
    let layout = layout?;
    if layer.in_place {
        return None;
    }
    let node = &g.nodes[*layer.nodes.first()?];
    let constant = |k: usize| node.inputs.get(k).is_none_or(|&t| g.values[t].konst.is_some());
    let x_i8 = nw.storage[node.inputs[0]] == Some(DType::I8);
    // Dsp16 over im2col panels: `(n, k) = (O, C·kh·kw)`.
    let conv = |group: usize| {
        let ws = shape_of(g, node.inputs[1]);
        let ok = x_i8 && group == 1 && constant(1) && constant(2) && ws.len() == 4;
        ok.then(|| (PackedLayout::Dsp16, ws[0], product(&ws[1..])))
    };
    match layer.fusion {
        Fusion::Single => {
            if let Some(q) = node.op.as_any().downcast_ref::<QConv>() {
                // The kernel's panel holds x - x_zero_point in 16 bits.
                return conv(q.group).filter(|_| (-255..=255).contains(&q.x_zero_point));
            }
            let q = node.op.as_any().downcast_ref::<QLinear>()?;
            if !matches!(q.rescale, AccRescale::HighMul(_)) || !constant(1) || !constant(2) {
                return None;
            }
            let ws = shape_of(g, node.inputs[1]);
            Some((layout, ws[0], ws[1]))
        }
        Fusion::Linear { .. } => {
            let ws = shape_of(g, node.inputs[1]);
            // One row, computed twice by the 2-row tile, is slower than the plain kernel without SMLAD (the Dsp16
            // kernel runs portably) and with Helium (the plain kernel's loop vectorizes: microLlama's one-token
            // step on Cortex-M55 takes 1.6x the instructions on Dsp16).
            let rows = product(&shape_of(g, node.inputs[0])) / ws.first().copied().unwrap_or(1).max(1);
            let worth = layout == PackedLayout::Dsp16 || rows >= 2;
            (x_i8 && constant(1) && ws.len() == 2 && worth).then_some((PackedLayout::Dsp16, ws[1], ws[0]))
        }
        Fusion::Conv => conv(node.op.as_any().downcast_ref::<Conv>()?.group),
        _ => None,
    }
}

/// `Conv2dParams { .. }` for a 2-D integer `Conv` on NCHW `x` with OIHW weights `w` (no input offset).
fn conv_params(p: &Conv, x: &[usize], w: &[usize]) -> String {
    conv2d_params((&p.strides, &p.dilations, &p.pads), p.group, 0, x, w)
}

/// `Conv2dParams { .. }` for a mote `QConv` on NCHW `x` with OIHW weights `w` (input offset `-x_zero_point`).
fn qconv_params(q: &QConv, x: &[usize], w: &[usize]) -> String {
    conv2d_params((&q.strides, &q.dilations, &q.pads), q.group, -q.x_zero_point, x, w)
}

/// `Conv2dParams { .. }` from (strides, dilations, pads as top, left, bottom, right), groups and input offset.
fn conv2d_params(
    (strides, dilations, pads): (&[usize], &[usize], &[usize]),
    group: usize,
    input_offset: i32,
    x: &[usize],
    w: &[usize],
) -> String {
    format!(
        "Conv2dParams {{ stride_h: {}, stride_w: {}, dilation_h: {}, dilation_w: {}, pad_top: {}, pad_left: {}, pad_bottom: {}, pad_right: {}, groups: {group}, input_offset: {input_offset}, ..Conv2dParams::new({}, {}, {}, {}, {}, {}, {}) }}",
        strides[0], strides[1], dilations[0], dilations[1], pads[0], pads[1], pads[2], pads[3], x[0], x[1], x[2], x[3], w[0], w[2], w[3]
    )
}

/// The element period `inner` of a Deeploy `RequantShift`'s `mul`/`add` against `x`: the kernel
/// views x as `[outer, C, inner]` (C = parameter length); per-tensor parameters need none (1).
/// Same rule as `ops::deeploy::RequantShift`.
pub(crate) fn rqs_inner(x: &[usize], mul: &[usize], add: &[usize]) -> Result<usize> {
    let rank = x.len();
    let mut span: Option<(usize, usize)> = None;
    for p in [mul, add] {
        if p.len() > rank || !p.iter().rev().zip(x.iter().rev()).all(|(&a, &b)| a == 1 || a == b) {
            bail!("RequantShift parameter of shape {p:?} does not broadcast to x of shape {x:?}");
        }
        let off = rank - p.len();
        for (i, &d) in p.iter().enumerate() {
            if d != 1 {
                let ax = off + i;
                span = Some(span.map_or((ax, ax + 1), |(lo, hi)| (lo.min(ax), hi.max(ax + 1))));
            }
        }
    }
    Ok(span.map_or(1, |(_, hi)| product(&x[hi..]).max(1)))
}

/// The C entry point: raw pointers checked for null and alignment, then the safe `run`.
fn c_abi(n_in: usize, n_out: usize) -> String {
    format!(
        r#"//! C ABI (feature `c-abi`): `int32_t mote_run(int8_t *arena, const int8_t *const *inputs, int8_t *const *outputs)`.
//!
//! Contract (the only `unsafe` in this crate): `arena` points to `ARENA_BYTES` writable bytes aligned to 16,
//! `inputs` to {n_in} pointers to `INPUT_LENS[k]` readable bytes, `outputs` to {n_out} pointers to
//! `OUTPUT_LENS[k]` writable bytes; none of them overlap. Returns 0 on success, a negative code otherwise.
use crate::{{run, Arena, Error, INPUT_LENS, OUTPUT_LENS}};

/// A null pointer or a misaligned arena.
pub const MOTE_BAD_POINTER: i32 = -1;
/// A kernel refused its arguments.
pub const MOTE_KERNEL_ERROR: i32 = -2;
/// Any other error of `run`.
pub const MOTE_ERROR: i32 = -3;

/// Runs one inference; see the module docs for the pointer contract.
///
/// # Safety
/// The pointers must satisfy the contract in the module docs.
#[no_mangle]
pub unsafe extern "C" fn mote_run(arena: *mut i8, inputs: *const *const i8, outputs: *const *mut i8) -> i32 {{
    if arena.is_null() || inputs.is_null() || outputs.is_null() || (arena as usize) % 16 != 0 {{
        return MOTE_BAD_POINTER;
    }}
    // SAFETY: non-null, aligned and sized (`ARENA_BYTES = size_of::<Arena>()`) by the caller's contract;
    // every bit pattern is a valid `Arena` (integer arrays only).
    let arena = unsafe {{ &mut *(arena as *mut Arena) }};
    let mut ins: [&[i8]; {n_in}] = [&[]; {n_in}];
    for (k, slot) in ins.iter_mut().enumerate() {{
        // SAFETY: `inputs` holds {n_in} valid pointers (contract).
        let p = unsafe {{ *inputs.add(k) }};
        if p.is_null() {{
            return MOTE_BAD_POINTER;
        }}
        *slot = unsafe {{ core::slice::from_raw_parts(p, INPUT_LENS[k]) }};
    }}
    let mut outs: [&mut [i8]; {n_out}] = core::array::from_fn(|_| &mut [][..]);
    for (k, slot) in outs.iter_mut().enumerate() {{
        // SAFETY: `outputs` holds {n_out} valid, non-overlapping pointers (contract).
        let p = unsafe {{ *outputs.add(k) }};
        if p.is_null() {{
            return MOTE_BAD_POINTER;
        }}
        *slot = unsafe {{ core::slice::from_raw_parts_mut(p, OUTPUT_LENS[k]) }};
    }}
    match run(arena, &ins, &mut outs) {{
        Ok(()) => 0,
        Err(Error::Kernel(_)) => MOTE_KERNEL_ERROR,
        Err(_) => MOTE_ERROR,
    }}
}}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {{
    // The generated code returns errors instead of panicking; this only satisfies the staticlib.
    loop {{}}
}}
"#
    )
}

/// The kernel call of a requantized add/mul (`b` repeats with period `inner`), out of place or over `a`.
fn binary_call(kind: QBinaryKind, a: &str, b: &str, inner: usize, in_place: bool) -> String {
    let (suffix, out) = if in_place { ("_in_place", "") } else { ("", ", out") };
    match kind {
            QBinaryKind::Add(p) => format!(
                "elementwise::add_requant{suffix}({a}, {b}, {inner}, &AddRequant {{ input1_offset: {}, input1_multiplier: {}, input1_shift: {}, input2_offset: {}, input2_multiplier: {}, input2_shift: {}, left_shift: {}, output_multiplier: {}, output_shift: {}, output_offset: {}, act_min: {}, act_max: {} }}{out})?;",
                p.input1_offset,
                p.input1_multiplier,
                p.input1_shift,
                p.input2_offset,
                p.input2_multiplier,
                p.input2_shift,
                p.left_shift,
                p.output_multiplier,
                p.output_shift,
                p.output_offset,
                p.act_min,
                p.act_max
            ),
            QBinaryKind::AddShift(p) => format!(
                "elementwise::add_shift{suffix}({a}, {b}, {inner}, &AddShift {{ a_mul: {}, b_mul: {}, offset: {}, shift: {}, act_min: {}, act_max: {} }}{out})?;",
                p.a_mul, p.b_mul, p.offset, p.shift, p.act_min, p.act_max
            ),
            QBinaryKind::Mul(p) => format!(
                "elementwise::mul_requant{suffix}({a}, {b}, {inner}, &MulRequant {{ input1_offset: {}, input2_offset: {}, output_multiplier: {}, output_shift: {}, output_offset: {}, act_min: {}, act_max: {} }}{out})?;",
                p.input1_offset, p.input2_offset, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max
            ),
        }
}

/// `inner` such that `b[(i / inner) % b.len()]` is numpy broadcasting of `b` to `y`, if any.
fn broadcast_inner(b: &[usize], y: &[usize]) -> Option<usize> {
    let r = y.len();
    let b: Vec<usize> = std::iter::repeat_n(1, r.saturating_sub(b.len())).chain(b.iter().copied()).collect();
    if b.len() != r {
        return None;
    }
    // The non-1 dims of b must match y and be contiguous.
    let varying: Vec<usize> = (0..r).filter(|&d| b[d] != 1).collect();
    if varying.iter().any(|&d| b[d] != y[d]) {
        return None;
    }
    match (varying.first(), varying.last()) {
        (Some(&lo), Some(&hi)) if hi - lo + 1 == varying.len() => Some(product(&y[hi + 1..]).max(1)),
        (None, None) => Some(product(y).max(1)), // a scalar: repeats everywhere
        _ => None,
    }
}

/// The fixed part of every generated `lib.rs`: the arena type, the error type and `run`.
const RUNTIME: &str = r#"/// The working memory of one inference: every activation and kernel scratch lives at a planned byte offset
/// (a multiple of 4; the arena is 16-byte aligned, so `i16`/`i32` tensors are aligned).
#[repr(C, align(16))]
pub struct Arena {
    /// The bytes, viewed per tensor as its element type.
    pub bytes: [u8; ARENA_BYTES],
}

const _: () = assert!(core::mem::size_of::<Arena>() == ARENA_BYTES);

impl Arena {
    /// A zeroed arena (place it in a `static` cell or on a large enough stack).
    pub const fn new() -> Self {
        Arena { bytes: [0; ARENA_BYTES] }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an inference did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A kernel refused its arguments (cannot happen for the shapes this crate was generated for).
    Kernel(KernelError),
    /// `inputs` does not hold one slice per model input.
    InputCount,
    /// Input `k` has the wrong length (see `INPUT_LENS`).
    InputLength(usize),
    /// `outputs` does not hold one slice per model output.
    OutputCount,
    /// Output `k` has the wrong length (see `OUTPUT_LENS`).
    OutputLength(usize),
    /// An arena range is out of bounds (cannot happen: the plan fits the arenas).
    Layout,
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Error::Kernel(e)
    }
}

/// Runs the model: `inputs[k]` holds the `INPUT_LENS[k]` bytes of input `k`, `outputs[k]`
/// receives the `OUTPUT_LENS[k]` bytes of output `k`.
pub fn run(arena: &mut Arena, inputs: &[&[i8]], outputs: &mut [&mut [i8]]) -> Result<(), Error> {
    run_marked(arena, inputs, outputs, &mut |_| {})
}

"#;
