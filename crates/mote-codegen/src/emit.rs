//! Rust source for each layer (one `mote-kernels` call) and the crate around them.
use crate::{ArenaReport, CompileOptions, IoInfo, LayerInfo, Place};
use mote_core::ops::conv::MaxPool;
use mote_core::ops::quant::{
    QBinary, QBinaryKind, QConv, QLayerNorm, QLinear, QLut, QMatMul, QMean, QSoftmax, Requantize, Rescale,
};
use mote_core::ops::shape::{Concat, Gather, Slice, Split, Transpose};
use mote_core::{bail, DType, Graph, Node, Result, Tensor, TensorId};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Accumulates statics (flash) and the body of `run_marked`.
pub struct Emitter<'a> {
    g: &'a Graph,
    statics: String,
    body: String,
    konst: HashMap<TensorId, String>,
    weight_bytes: usize,
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// `[a, b, c]` with line breaks every 32 values, for readable arrays.
fn array<T: std::fmt::Display>(v: &[T]) -> String {
    let rows: Vec<String> = v.chunks(32).map(list).collect();
    format!("[\n    {}\n]", rows.join(",\n    "))
}

fn shape_of(g: &Graph, t: TensorId) -> Vec<usize> {
    g.values[t].ty.shape.clone()
}

fn product(s: &[usize]) -> usize {
    s.iter().product()
}

impl<'a> Emitter<'a> {
    pub fn new(g: &'a Graph) -> Self {
        Emitter { g, statics: String::new(), body: String::new(), konst: HashMap::new(), weight_bytes: 0 }
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Emits `static NAME: [ty; n]` and returns NAME.
    fn static_array<T: std::fmt::Display>(
        &mut self,
        name: String,
        ty: &str,
        v: &[T],
        bytes: usize,
        doc: &str,
    ) -> String {
        let _ = writeln!(self.statics, "/// {doc}\npub static {name}: [{ty}; {}] = {};\n", v.len(), array(v));
        self.weight_bytes += bytes;
        name
    }

    /// The static holding constant tensor `t` (emitted once).
    fn konst(&mut self, t: TensorId) -> Result<String> {
        if let Some(n) = self.konst.get(&t) {
            return Ok(n.clone());
        }
        let v = &self.g.values[t];
        let Some(data) = v.konst.clone() else { bail!("`{}` is not a constant", v.name) };
        let name = format!("W{}", self.konst.len());
        let doc = format!("`{}` {}", v.name, v.ty);
        let n = match &*data {
            Tensor::I8(a) => self.static_array(name, "i8", &a.iter().copied().collect::<Vec<_>>(), a.len(), &doc),
            Tensor::I32(a) => self.static_array(name, "i32", &a.iter().copied().collect::<Vec<_>>(), 4 * a.len(), &doc),
            other => {
                bail!("constant `{}` is {}; the device code takes int8 weights and int32 biases", v.name, other.dtype())
            }
        };
        self.konst.insert(t, n.clone());
        Ok(n)
    }

    fn rescale(&mut self, id: u32, r: &Rescale) -> (String, String) {
        let m =
            self.static_array(format!("L{id}_MULT"), "i32", &r.multiplier, 4 * r.multiplier.len(), "Q31 multipliers");
        let s =
            self.static_array(format!("L{id}_SHIFT"), "i32", &r.shift, 4 * r.shift.len(), "shifts (positive = left)");
        (m, s)
    }

    /// Expression for reading tensor `t` while the layer writes `out` (offset, len).
    fn read(&mut self, t: TensorId, place: Place, out: (usize, usize)) -> Result<String> {
        Ok(match place {
            Place::Input(k) => format!("in{k}"),
            Place::Const => format!("&{}[..]", self.konst(t)?),
            Place::Arena(a, l) if a + l <= out.0 => format!("lo.get({a}..{}).ok_or(Error::Layout)?", a + l),
            Place::Arena(a, l) if a >= out.0 + out.1 => {
                let s = a - out.0 - out.1;
                format!("hi.get({s}..{}).ok_or(Error::Layout)?", s + l)
            }
            Place::Arena(..) => bail!("input `{}` overlaps the output in the arena", self.g.values[t].name),
        })
    }

    /// One layer: `mark(id)` and a block that splits the arena around the output and calls the kernel.
    pub fn layer(&mut self, id: u32, node: &Node, place: &dyn Fn(TensorId) -> Place) -> Result<()> {
        let g = self.g;
        let outs: Vec<(usize, usize)> = node
            .outputs
            .iter()
            .map(|&o| match place(o) {
                Place::Arena(a, l) => Ok((a, l)),
                _ => bail!("output `{}` is not in the arena", g.values[o].name),
            })
            .collect::<Result<_>>()?;
        let _ =
            writeln!(self.body, "    // layer {id}: `{}` ({}, {} MACs)", node.name, node.op.name(), g.node_macs(node));
        let _ = writeln!(self.body, "    mark({id});");
        let op = node.op.as_any();
        if let Some(s) = op.downcast_ref::<Split>() {
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
                self.block(outs[k], &call);
                start += shape_of(g, o)[s.axis];
            }
            return Ok(());
        }
        let [out] = outs.as_slice() else { bail!("{} outputs", outs.len()) };
        let out = *out;
        let mut args = Vec::new();
        for &i in &node.inputs {
            // Index constants (Gather) become typed statics in the op's own code, not data inputs.
            let index = g.values[i].konst.is_some() && g.values[i].ty.dtype == DType::I64;
            args.push(if index { String::new() } else { self.read(i, place(i), out)? });
        }
        let x_shape = shape_of(g, node.inputs[0]);
        let y_shape = shape_of(g, node.outputs[0]);
        let call = if let Some(q) = op.downcast_ref::<QLinear>() {
            let (m, s) = self.rescale(id, &q.rescale);
            let w = shape_of(g, node.inputs[1]);
            let bias = args.get(2).map_or("None".into(), |b| format!("Some({b})"));
            format!(
                "let rq = Requant::FixedPoint(FixedPointRequant::new(&{m}, &{s}, {}, -128, 127)?);\n        \
                 matmul::linear_requant({}, {}, {bias}, MatDims {{ m: {}, k: {}, n: {} }}, {}, &rq, out)?;",
                q.y_zero_point,
                args[0],
                args[1],
                product(&x_shape) / w[1],
                w[1],
                w[0],
                -q.x_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QMatMul>() {
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
            let (mm, s) = self.rescale(id, &q.rescale);
            format!(
                "let rq = Requant::FixedPoint(FixedPointRequant::new(&{mm}, &{s}, {}, -128, 127)?);\n        \
                 let p = BatchedMatmul {{ a_offset: {}, b_offset: {}, b: {b_strides}, ..BatchedMatmul::packed_nn({batch_a}, {m}, {k}, {n}) }};\n        \
                 matmul::av_requant(&p, {}, {}, &rq, out)?;",
                q.y_zero_point, -q.a_zero_point, -q.b_zero_point, args[0], args[1]
            )
        } else if let Some(q) = op.downcast_ref::<QBinary>() {
            self.binary(q, node, &args, &y_shape)?
        } else if let Some(q) = op.downcast_ref::<QLut>() {
            let t = self.static_array(format!("L{id}_TABLE"), "i8", &q.table[..], 256, &format!("{} at int8", q.label));
            format!("activation::lut_i8({}, &{t}, out)?;", args[0])
        } else if let Some(q) = op.downcast_ref::<QSoftmax>() {
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
                "softmax::softmax_i8({}, {row}, {mask}, &SoftmaxI8Params {{ exp: &{e}, out_recip: {}, out_zero_point: {} }}, out)?;",
                args[0], q.out_recip, q.out_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QLayerNorm>() {
            let gm = self.static_array(format!("L{id}_GAMMA"), "i32", &q.gamma, 4 * q.gamma.len(), "γ/s_out·2^F");
            let bt = self.static_array(format!("L{id}_BETA"), "i32", &q.beta, 4 * q.beta.len(), "β/s_out·2^F");
            let rms = q.rms_zero_point.map_or("None".into(), |z| format!("Some({z})"));
            format!(
                "norm::layernorm_i8({}, {}, &LayerNormI8Params {{ gamma: &{gm}, beta: &{bt}, frac_bits: {}, eps: {}, out_zero_point: {}, rms_zero_point: {rms} }}, out)?;",
                args[0],
                q.gamma.len(),
                q.frac_bits,
                q.eps,
                q.out_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QMean>() {
            let (m, s) = self.rescale(id, &q.rescale);
            let (outer, n, inner) =
                (product(&x_shape[..q.first]), product(&x_shape[q.first..q.end]), product(&x_shape[q.end..]));
            format!(
                "let rq = FixedPointRequant::new(&{m}, &{s}, {}, -128, 127)?;\n        \
                 pool::mean_requant({}, {outer}, {n}, {inner}, {}, &rq, out)?;",
                q.y_zero_point, args[0], -q.x_zero_point
            )
        } else if let Some(q) = op.downcast_ref::<QConv>() {
            let (m, s) = self.rescale(id, &q.rescale);
            let w = shape_of(g, node.inputs[1]);
            let bias = args.get(2).map_or("None".into(), |b| format!("Some({b})"));
            format!(
                "let rq = Requant::FixedPoint(FixedPointRequant::new(&{m}, &{s}, {}, -128, 127)?);\n        \
                 let p = Conv2dParams {{ stride_h: {}, stride_w: {}, dilation_h: {}, dilation_w: {}, pad_top: {}, pad_left: {}, pad_bottom: {}, pad_right: {}, groups: {}, input_offset: {}, ..Conv2dParams::new({}, {}, {}, {}, {}, {}, {}) }};\n        \
                 conv::conv2d_requant({}, {}, {bias}, &p, &rq, out)?;",
                q.y_zero_point,
                q.strides[0],
                q.strides[1],
                q.dilations[0],
                q.dilations[1],
                q.pads[0],
                q.pads[1],
                q.pads[2],
                q.pads[3],
                q.group,
                -q.x_zero_point,
                x_shape[0],
                x_shape[1],
                x_shape[2],
                x_shape[3],
                w[0],
                w[2],
                w[3],
                args[0],
                args[1]
            )
        } else if let Some(q) = op.downcast_ref::<Requantize>() {
            let (m, s) = self.rescale(id, &q.rescale);
            format!(
                "let rq = FixedPointRequant::new(&{m}, &{s}, {}, -128, 127)?;\n        requant::rescale({}, {}, &rq, out)?;",
                q.y_zero_point, args[0], -q.x_zero_point
            )
        } else if let Some(t) = op.downcast_ref::<Transpose>() {
            format!("layout::transpose({}, &[{}], &[{}], out)?;", args[0], list(&x_shape), list(&t.perm))
        } else if let Some(s) = op.downcast_ref::<Slice>() {
            let starts: Vec<usize> = s.starts.iter().map(|&v| v as usize).collect();
            format!(
                "layout::slice({}, &[{}], &[{}], &[{}], &[{}], out)?;",
                args[0],
                list(&x_shape),
                list(&starts),
                list(&s.steps),
                list(&y_shape)
            )
        } else if let Some(gt) = op.downcast_ref::<Gather>() {
            let Some(idx) = &g.values[node.inputs[1]].konst else { bail!("Gather with runtime indices") };
            let d = x_shape[gt.axis] as i64;
            let idx: Vec<usize> = idx.to_i64_vec().iter().map(|&i| if i < 0 { i + d } else { i } as usize).collect();
            let name = self.static_array(format!("L{id}_INDEX"), "usize", &idx, 4 * idx.len(), "gathered indices");
            format!(
                "layout::gather_axis({}, {}, {}, {}, &{name}, out)?;",
                args[0],
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
                let cols = product(&shape_of(g, i)[c.axis..]);
                calls.push(format!("layout::concat_part({}, {outer}, {cols}, {out_cols}, {offset}, out)?;", args[k]));
                offset += cols;
            }
            calls.join("\n        ")
        } else if let Some(p) = op.downcast_ref::<MaxPool>() {
            if x_shape.len() != 4 || p.dilations.iter().any(|&d| d != 1) || p.ceil_mode {
                bail!("MaxPool other than 2-D, dilation 1, floor mode");
            }
            format!(
                "pool::maxpool2d({}, &Pool2dParams {{ stride_h: {}, stride_w: {}, pad_top: {}, pad_left: {}, pad_bottom: {}, pad_right: {}, ..Pool2dParams::new({}, {}, {}, {}, {}, {}) }}, out)?;",
                args[0],
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
            bail!("no code generation for this op");
        };
        if g.values[node.outputs[0]].ty.dtype != DType::I8 {
            bail!("output is {}, not int8", g.values[node.outputs[0]].ty.dtype);
        }
        self.block(out, &call);
        Ok(())
    }

    fn block(&mut self, out: (usize, usize), call: &str) {
        let _ = writeln!(
            self.body,
            "    {{\n        let (lo, out, hi) = split(&mut arena.0, {}, {})?;\n        {call}\n    }}",
            out.0, out.1
        );
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
        Ok(match kind {
            QBinaryKind::Add(p) => format!(
                "elementwise::add_requant({a}, {b}, {inner}, &AddRequant {{ input1_offset: {}, input1_multiplier: {}, input1_shift: {}, input2_offset: {}, input2_multiplier: {}, input2_shift: {}, left_shift: {}, output_multiplier: {}, output_shift: {}, output_offset: {}, act_min: {}, act_max: {} }}, out)?;",
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
            QBinaryKind::Mul(p) => format!(
                "elementwise::mul_requant({a}, {b}, {inner}, &MulRequant {{ input1_offset: {}, input2_offset: {}, output_multiplier: {}, output_shift: {}, output_offset: {}, act_min: {}, act_max: {} }}, out)?;",
                p.input1_offset, p.input2_offset, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max
            ),
        })
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
                    format!(
                        "//! - {k}: `{}` int8 {:?} ({} bytes), real = {} · (q − {})\n",
                        i.name, i.shape, i.len, i.scale, i.zero_point
                    )
                })
                .collect()
        };
        let _ = write!(
            lib,
            "//! Generated by mote (do not edit): the int8 model as one allocation-free function.\n//!\n\
             //! Arena: {} bytes ({} plan; greedy-by-size would need {}, lower bound {}).\n\
             //! Weights and parameters: {} bytes of `static` data (flash).\n//!\n//! Inputs:\n{}//!\n//! Outputs:\n{}\
             #![no_std]\n#![allow(unused_variables, clippy::all)]\n\n\
             use mote_kernels::elementwise::{{AddRequant, MulRequant}};\n\
             use mote_kernels::matmul::{{BatchedMatmul, MatDims, Strides}};\n\
             use mote_kernels::norm::LayerNormI8Params;\n\
             use mote_kernels::conv::Conv2dParams;\n\
             use mote_kernels::pool::Pool2dParams;\n\
             use mote_kernels::requant::{{FixedPointRequant, Requant}};\n\
             use mote_kernels::softmax::{{RowMask, SoftmaxI8Params}};\n\
             use mote_kernels::{{activation, conv, elementwise, layout, matmul, norm, pool, requant, softmax}};\n\
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
            "/// Bytes of working memory one inference needs.\npub const ARENA_BYTES: usize = {};\n\
             /// Element counts (bytes) of the int8 inputs, in model order.\npub const INPUT_LENS: [usize; {}] = [{}];\n\
             /// Element counts (bytes) of the int8 outputs, in model order.\npub const OUTPUT_LENS: [usize; {}] = [{}];\n\
             /// Number of layers (`mark` ids are `0..LAYERS`).\npub const LAYERS: u32 = {};\n\n",
            arena.best.max(1),
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
        lib.push_str(&self.body);
        for (k, p) in outputs_place.iter().enumerate() {
            let src = match p {
                Place::Arena(a, l) => format!("arena.0.get({a}..{}).ok_or(Error::Layout)?", a + l),
                Place::Input(i) => format!("in{i}"),
                Place::Const => bail!("output {k} is a constant"),
            };
            let _ = writeln!(
                lib,
                "    let dst = outputs.get_mut({k}).ok_or(Error::OutputCount)?;\n    dst.copy_from_slice({src});"
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
    // SAFETY: non-null, aligned and sized by the caller's contract.
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
        (Some(&lo), Some(&hi)) if hi - lo + 1 == varying.len() => Some(product(&y[hi + 1..])),
        (None, None) => Some(product(y)), // a scalar: repeats everywhere
        _ => None,
    }
}

/// The fixed part of every generated `lib.rs`: the arena type, the error type, `run` and `split`.
const RUNTIME: &str = r#"/// The working memory of one inference: every activation lives here at a planned offset.
#[repr(C, align(16))]
pub struct Arena(pub [i8; ARENA_BYTES]);

impl Arena {
    /// A zeroed arena (place it in a `static` cell or on a large enough stack).
    pub const fn new() -> Self {
        Arena([0; ARENA_BYTES])
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
    /// An arena range is out of bounds (cannot happen: the plan fits `ARENA_BYTES`).
    Layout,
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Error::Kernel(e)
    }
}

/// Runs the model: `inputs[k]` holds `INPUT_LENS[k]` int8 values, `outputs[k]` receives
/// `OUTPUT_LENS[k]`.
pub fn run(arena: &mut Arena, inputs: &[&[i8]], outputs: &mut [&mut [i8]]) -> Result<(), Error> {
    run_marked(arena, inputs, outputs, &mut |_| {})
}

/// The arena around a layer's output: bytes before it, the output, bytes after it.
fn split(arena: &mut [i8], offset: usize, len: usize) -> Result<(&[i8], &mut [i8], &[i8]), Error> {
    let (lo, rest) = arena.split_at_mut_checked(offset).ok_or(Error::Layout)?;
    let (out, hi) = rest.split_at_mut_checked(len).ok_or(Error::Layout)?;
    Ok((lo, out, hi))
}

"#;
