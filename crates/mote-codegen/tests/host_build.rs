//! The generated crate compiles, and run on the host it produces exactly the outputs of the
//! reference interpreter: our digits model and the peer float models after `mote quantize` (int8),
//! and Deeploy's integerized peer models (narrowed from exact `I64`), which must also reproduce the
//! peer goldens (`outputs.npz`) exactly. The MCU runs are mote-deploy's tests. All harnesses share
//! one target dir.
use mote_codegen::{compile, host_reference, host_reference_with, CompileOptions, Compiled, PackedLayout};
use mote_core::{DType, Graph, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn sample(x: &Tensor, i: usize) -> Tensor {
    mote_core::map_same!(x, a => a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned())
}

/// `model` quantized by mote (min/max on `calib`), lowered to int8 ops.
fn int8(model: &Path, calib: &[Vec<Tensor>]) -> Graph {
    let bytes = std::fs::read(model).unwrap();
    let opts = mote_onnx::ImportOptions::default();
    mote_onnx::qdq::quantize(&bytes, &opts, calib, mote_core::quantize::calib::Method::MinMax).unwrap().int8
}

/// The peer models directory, or `None` (after printing `SKIP`) when absent outside CI.
fn peers() -> Option<PathBuf> {
    let peers =
        std::env::var_os("MOTE_PEER_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/peer-models"));
    if !peers.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI: peer models missing at {}", peers.display());
        eprintln!("SKIP: peer models not found at {}", peers.display());
        return None;
    }
    Some(peers)
}

fn options(name: &str) -> CompileOptions {
    CompileOptions::new(name, root().join("crates/mote-kernels"))
}

/// Generates crate `name` for `g`, runs it on the host with `inputs`, and compares every output
/// byte (and the number of layers marked) with the reference interpreter; returns the compiled
/// crate and the reference device outputs.
fn check(name: &str, g: &Graph, inputs: Vec<Tensor>) -> (Compiled, Vec<Vec<i8>>) {
    check_with(g, inputs, &options(name))
}

/// Writes the generated crate `name` under `work` and returns its directory.
fn write_crate(work: &Path, name: &str, c: &Compiled) -> PathBuf {
    let model = work.join(name);
    for (p, text) in &c.files {
        let path = model.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    model
}

fn check_with(g: &Graph, inputs: Vec<Tensor>, opts: &CompileOptions) -> (Compiled, Vec<Vec<i8>>) {
    let name = opts.crate_name.as_str();
    let c = compile(g, opts).unwrap();
    assert!(c.arena.best <= c.arena.greedy && c.arena.lower_bound <= c.arena.best, "{:?}", c.arena);
    let (ins, outs) = host_reference_with(g, inputs, opts).unwrap();

    let work = root().join("target/codegen-test");
    write_crate(&work, name, &c);
    let harness = work.join(format!("{name}_harness"));
    std::fs::create_dir_all(harness.join("src")).unwrap();
    std::fs::write(
        harness.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}_harness\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n\
             [dependencies]\n{name} = {{ path = \"../{name}\" }}\n"
        ),
    )
    .unwrap();
    let mut main = String::new();
    for (k, v) in ins.iter().enumerate() {
        let vals: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        main += &format!("static IN{k}: [i8; {}] = [{}];\n", v.len(), vals.join(", "));
    }
    let refs: Vec<String> = (0..ins.len()).map(|k| format!("&IN{k}[..]")).collect();
    main += &format!(
        "fn main() {{\n    let mut arena = Box::new({name}::Arena::new());\n    \
         let mut outs: Vec<Vec<i8>> = {name}::OUTPUT_LENS.iter().map(|&n| vec![0i8; n]).collect();\n    \
         let mut views: Vec<&mut [i8]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();\n    \
         let mut layers = 0;\n    \
         {name}::run_marked(&mut arena, &[{}], &mut views, &mut |_| layers += 1).unwrap();\n    \
         println!(\"{{layers}} {{:?}}\", outs);\n}}\n",
        refs.join(", ")
    );
    std::fs::write(harness.join("src/main.rs"), main).unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["run", "-q", "--release", "--manifest-path"])
        .arg(harness.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", work.join("target"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), format!("{} {:?}", c.layers.len(), outs), "{name}");
    (c, outs)
}

/// Our digits model quantized by mote (min/max on 16 calibration samples), and its shipped input.
fn digits() -> (Graph, Tensor) {
    let dir = root().join("examples/digits");
    let calib = mote_core::npz::read(dir.join("calib.npz")).unwrap().remove(0).1;
    let calib: Vec<Vec<Tensor>> = (0..16).map(|i| vec![sample(&calib, i)]).collect();
    let g = int8(&dir.join("digits_encoder.onnx"), &calib);
    let x = mote_core::npz::read(dir.join("digits_encoder.inputs.npz")).unwrap().remove(0).1;
    (g, x)
}

#[test]
fn digits_model_matches_the_host_reference_bit_for_bit() {
    let (g, x) = digits();
    let (c, _) = check("digits_model", &g, vec![x]);
    // Residual adds, GELU tables and scalings write over their last-read input (and stay bit-exact above).
    let lib = &c.files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
    assert_eq!(lib.matches("add_shift_in_place(out").count(), 5, "5 residual/embedding adds in place");
    assert!(lib.contains("lut_i8_in_place(out"));
    // Of the graph's 16 transposes, the 4 that swap the batch axis of 1 with the tokens move no element: they
    // alias their input; the other 12 (head splits and merges) run.
    let transposes = g.nodes.iter().filter(|n| n.op.name() == "Transpose").count();
    assert_eq!((transposes, c.layers.iter().filter(|l| l.op == "Transpose").count()), (16, 12));
}

#[test]
fn digits_with_packed_linear_layers_matches_bit_for_bit() {
    // The Arm DSP layout: on the host its portable twin runs, and must equal the interpreter's linear_requant.
    let (g, x) = digits();
    let opts = CompileOptions { packed_layout: Some(PackedLayout::Dsp16), ..options("digits_packed") };
    let (c, _) = check_with(&g, vec![x], &opts);
    let lib = &c.files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
    let linear = c.layers.iter().filter(|l| l.op == "QLinear").count();
    assert_eq!(lib.matches("packed::linear_packed(").count(), linear, "every QLinear packed");
    assert!(!lib.contains("matmul::linear_requant("));
    let matmuls = c.layers.iter().filter(|l| l.op == "QMatMul").count();
    assert_eq!(
        (matmuls, lib.matches("packed::matmul_packed(").count()),
        (4, 4),
        "attention products packed at run time"
    );
    // Each packed layer borrows its activation panel from the arena only while it runs, in bytes no tensor
    // needs then: packing costs the digits encoder no arena (1,792 B either way).
    let plain = mote_codegen::compile(&g, &options("digits_plain")).unwrap();
    assert_eq!((c.arena.best, plain.arena.best), (1792, 1792));
}

/// A float peer model quantized by mote (calibrated on its own inputs), and those inputs.
fn peer_float_int8(dir: &Path) -> (Graph, Vec<Tensor>) {
    let g0 = mote_onnx::load(dir.join("network.onnx"), &Default::default()).unwrap();
    let inputs: Vec<Tensor> = mote_core::npz::read(dir.join("inputs.npz"))
        .unwrap()
        .into_iter()
        .take(g0.inputs.len())
        .map(|(_, t)| t)
        .collect();
    (int8(&dir.join("network.onnx"), std::slice::from_ref(&inputs)), inputs)
}

#[test]
fn peer_float_models_after_quantize_match_bit_for_bit() {
    let Some(peers) = peers() else { return };
    for (name, rel) in [
        ("cct8", "Models/CCT/FP32/CCT_1_16_16_8"),
        ("tinyvit", "Models/TinyViT/Demo"),
        ("microllama_fp32", "Models/microLlama/FP32/microLlama1"),
        ("deepquant", "Models/Transformer_DeepQuant"),
    ] {
        let dir = peers.join(rel);
        let (g, inputs) = peer_float_int8(&dir);
        let (c, outs) = check(name, &g, inputs);
        if name == "deepquant" {
            // A fake-quantized model keeps its own grids through `mote quantize`: the int8 device
            // outputs, dequantized, are exactly the float model's goldens.
            let golden = mote_core::npz::read(dir.join("outputs.npz")).unwrap().remove(0).1.to_f32();
            let io = &c.outputs[0];
            let real: Vec<f32> = outs[0].iter().map(|&q| (i32::from(q) - io.zero_point) as f32 * io.scale).collect();
            assert_eq!(real, golden.iter().copied().collect::<Vec<f32>>(), "{name}");
        }
    }
}

/// mote's `QConv` (CCT's tokenizer, after `mote quantize`) on the Dsp16 kernel over im2col panels, with its
/// fixed-point requantization.
#[test]
fn peer_float_cct_with_packed_convolutions_matches_bit_for_bit() {
    let Some(peers) = peers() else { return };
    let (g, inputs) = peer_float_int8(&peers.join("Models/CCT/FP32/CCT_1_16_16_8"));
    let opts = CompileOptions { packed_layout: Some(PackedLayout::Dsp16), ..options("cct8_packed") };
    let (c, _) = check_with(&g, inputs, &opts);
    let lib = &c.files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
    let convs = c.layers.iter().filter(|l| l.op == "QConv").count();
    assert!(convs > 0);
    assert_eq!(lib.matches("packed::conv2d_packed_requant(").count(), convs, "every QConv packed");
}

#[test]
fn c_abi_staticlib_links_into_a_c_program_and_matches() {
    let (g, x) = digits();
    let (ins, outs) = host_reference(&g, vec![x]).unwrap();
    let name = "digits_c";
    let opts = CompileOptions { c_abi: true, ..options(name) };
    let c = compile(&g, &opts).unwrap();
    let work = root().join("target/codegen-test");
    let model = write_crate(&work, name, &c);
    let build = Command::new(env!("CARGO"))
        .args(["build", "-q", "--release", "--features", "c-abi", "--manifest-path"])
        .arg(model.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", work.join("target-c"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let vals: Vec<String> = ins[0].iter().map(|v| v.to_string()).collect();
    let c_src = format!(
        "#include <stdint.h>\n#include <stdio.h>\n\
         int32_t mote_run(int8_t *arena, const int8_t *const *inputs, int8_t *const *outputs);\n\
         /* The host's precompiled `core` references the unwinder's personality routine; with panic=abort\n\
            it is never called (MCU targets ship a panic=abort `core` and do not need this). */\n\
         void rust_eh_personality(void) {{}}\n\
         static int8_t arena[{}] __attribute__((aligned(16)));\n\
         static const int8_t in0[{}] = {{{}}};\n\
         int main(void) {{\n  int8_t out0[{}];\n  const int8_t *ins[1] = {{in0}};\n  int8_t *outs[1] = {{out0}};\n  \
         int32_t rc = mote_run(arena, ins, outs);\n  printf(\"%d\", rc);\n  \
         for (int i = 0; i < {}; i++) printf(\" %d\", out0[i]);\n  printf(\"\\n\");\n  return rc != 0;\n}}\n",
        c.arena.best.max(1),
        ins[0].len(),
        vals.join(", "),
        outs[0].len(),
        outs[0].len()
    );
    let c_path = work.join("digits_c_main.c");
    std::fs::write(&c_path, c_src).unwrap();
    let exe = work.join("digits_c_main");
    let lib = work.join(format!("target-c/release/lib{name}.a"));
    let cc = Command::new("cc").arg(&c_path).arg(&lib).arg("-o").arg(&exe).output().unwrap();
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let run = Command::new(&exe).output().unwrap();
    let want: Vec<String> = outs[0].iter().map(|v| v.to_string()).collect();
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), format!("0 {}", want.join(" ")));
}

/// Compiles Deeploy test case `rel` (inputs typed as `types`), runs the crate on the host, and
/// checks it against the reference and the reference against the goldens.
fn check_deeploy(peers: &Path, name: &str, rel: &str, types: &[(&str, DType)]) -> Compiled {
    check_deeploy_with(peers, rel, types, options(name), &|_| {})
}

/// The graph passes `mote compile` runs by default on a graph the fused attention kernel does not take: attention
/// head by head, MLPs in blocks of rows. Returns how many blocks of each were rewritten.
fn default_passes(g: &mut Graph) -> (usize, usize) {
    (
        mote_core::passes::rows::split_heads(g).unwrap().len(),
        mote_core::passes::rows::chunk_mlps(g, None).unwrap().len(),
    )
}

/// [`check_deeploy`] with options, after `prepare` rewrites the graph.
fn check_deeploy_with(
    peers: &Path,
    rel: &str,
    types: &[(&str, DType)],
    mut opts: CompileOptions,
    prepare: &dyn Fn(&mut Graph),
) -> Compiled {
    let name = opts.crate_name.clone();
    let dir = peers.join(rel);
    let mut g = mote_onnx::load(dir.join("network.onnx"), &Default::default()).unwrap();
    prepare(&mut g);
    let inputs: Vec<Tensor> = mote_core::npz::read(dir.join("inputs.npz"))
        .unwrap()
        .into_iter()
        .zip(&g.inputs)
        .map(|((_, t), &i)| t.cast(g.values[i].ty.dtype))
        .collect();
    let golden: Vec<Vec<i64>> =
        mote_core::npz::read(dir.join("outputs.npz")).unwrap().into_iter().map(|(_, t)| t.to_i64_vec()).collect();
    opts.input_types = types.iter().map(|(n, d)| (n.to_string(), *d)).collect();
    let (c, outs) = check_with(&g, inputs, &opts);
    assert_eq!(outs.len(), golden.len(), "{name}");
    for (k, (io, want)) in c.outputs.iter().zip(&golden).enumerate() {
        assert_eq!(&io.decode(&outs[k]), want, "{name} output {k} `{}`", io.name);
    }
    c
}

/// Deeploy's integerized peer models, as given and after `mote compile`'s default passes (attention head by
/// head, MLPs in row blocks): narrowed to their device types, the generated crate matches the exact-I64
/// reference interpreter byte for byte, the reference matches the goldens, and one byte arena for all their
/// types (u8, i8, i32) needs no more than the bytes live at the busiest step.
#[test]
fn peer_integer_models_match_the_goldens_bit_for_bit() {
    let Some(peers) = peers() else { return };
    for (name, rel, types, arenas, rewrites) in [
        // Deeploy's harness feeds EEGFormer's input (0..254) as uint8; the others as int8.
        ("eegformer", "Models/EEGFormer", &[("input", DType::U8)][..], [(38_016, 38_016), (8_592, 8_580)], (1, 0)),
        ("icct", "Models/CCT/Int/ICCT", &[][..], [(49_664, 49_664), (49_664, 49_664)], (0, 1)),
        ("microllama_int8", "Models/microLlama/INT8/microLlama1", &[][..], [(2_880, 2_880), (2_880, 2_880)], (0, 0)),
        // Eight cached steps, and the first step with empty caches ([1,16,0,4] inputs).
        (
            "microllama8_int8",
            "Models/microLlama/INT8/microLlama8",
            &[][..],
            [(10_048, 10_048), (10_048, 10_048)],
            (0, 0),
        ),
        (
            "microllama1_parallel_int8",
            "Models/microLlama/INT8/microLlama1_parallel",
            &[][..],
            [(1_856, 1_856), (1_856, 1_856)],
            (0, 0),
        ),
    ]
    .into_iter()
    .flat_map(|(name, rel, types, arenas, rewrites)| {
        [
            (name.to_string(), rel, types, arenas[0], None),
            (format!("{name}_passes"), rel, types, arenas[1], Some(rewrites)),
        ]
    }) {
        let prepare = |g: &mut Graph| {
            if let Some(want) = rewrites {
                assert_eq!(default_passes(g), want, "{name}: (attention blocks, MLPs) rewritten");
            }
        };
        let c = check_deeploy_with(&peers, rel, types, options(&name), &prepare);
        let arena = arenas;
        // The most bytes live at one step (an in-place pair, at one offset at its hand-over step, counted once):
        // one byte arena for every type needs at least that, and the plan reaches it (up to the 16-byte padding).
        let steps = c.tensors.iter().map(|t| t.last + 1).max().unwrap_or(0);
        let live = (0..steps)
            .map(|s| {
                let mut live: Vec<(usize, usize)> =
                    c.tensors.iter().filter(|t| t.first <= s && s <= t.last).map(|t| (t.offset, t.bytes)).collect();
                live.sort_unstable();
                live.dedup_by_key(|t| t.0);
                live.iter().map(|t| t.1).sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        eprintln!(
            "{name}: {} layers, arena {} B (greedy {} B, lower bound {} B, tensors alone {live} B), weights {} B",
            c.layers.len(),
            c.arena.best,
            c.arena.greedy,
            c.arena.lower_bound,
            c.weight_bytes
        );
        // The plans meet the lower bound (up to the alignment of offsets to 4 bytes), which is the tensors'.
        // EEGFormer's eight heads one at a time: 38,016 -> 8,592 B (its 8 x 66 x 66 scores were 92% of it).
        assert_eq!((c.arena.best, c.arena.lower_bound), arena, "{name}");
        assert_eq!(live, arena.1, "{name}: no kernel scratch at the peak");
    }
}

/// With an Arm DSP core's layout, Deeploy's `MatMul [+ Add] + RequantShift` layers run the packed kernel
/// (SMLAD accumulation, then the RequantShift) and still match the goldens, whole, with the MLP computed in
/// blocks of token rows (its 64 × 512 hidden tensor and the packed kernel's panel are the arena's peak), and with
/// the convolutional tokenizer computed in blocks of pooled rows too.
#[test]
fn peer_integer_model_with_packed_linear_layers_matches_the_goldens() {
    let Some(peers) = peers() else { return };
    let mut arenas = Vec::new();
    for (name, mlp_rows, patch_rows) in [
        ("icct_packed", None, None),
        ("icct_packed_mlp8", Some(None), None),
        ("icct_packed_mlp5", Some(Some(5)), None),
        ("icct_packed_mlp8_patches4", Some(None), Some(4)),
    ] {
        let opts = CompileOptions { packed_layout: Some(PackedLayout::Dsp16), ..options(name) };
        let prepare = |g: &mut Graph| {
            if let Some(rows) = mlp_rows {
                assert_eq!(mote_core::passes::rows::chunk_mlps(g, rows).unwrap().len(), 1);
            }
            if let Some(rows) = patch_rows {
                let done = mote_core::passes::patches::decompose_patch_embeddings(g, Some(rows)).unwrap();
                assert_eq!((done.len(), done[0].rows, done[0].conv_elements), (1, 8, 128 * 18 * 18));
            }
        };
        let c = check_deeploy_with(&peers, "Models/CCT/Int/ICCT", &[], opts, &prepare);
        let lib = &c.files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
        let blocks = [1, 8, 13, 8][arenas.len()];
        assert_eq!(lib.matches("packed::linear_packed_requant(").count(), 4 + 2 * blocks, "{name}: 6 linear layers");
        let convs = if patch_rows.is_some() { 2 } else { 1 };
        assert_eq!(lib.matches("packed::conv2d_packed_requant(").count(), convs, "{name}: ICCT's convolution");
        assert!(!lib.contains("conv::conv2d_requant("));
        arenas.push(c.arena.best);
    }
    // In blocks of 8 rows (the default: the hidden tensors a block has alive at once, here the first layer's output
    // and its requantization's, no larger than the MLP's input) the tokenizer's convolution becomes the peak; blocks
    // of 5 rows (13 blocks, the last of 4) need no more. The tokenizer in two blocks of 4 pooled rows (9 of its 18
    // convolution rows alive, 20,736 B instead of 41,472 B): the single-head attention's 45,056 B is the peak.
    assert_eq!(arenas, [51_248, 49_664, 49_664, 45_056]);
}

/// Deeploy's integer kernel cases exercise the other paths: wide outputs (little-endian i32),
/// an i16 input, declared-i32 inputs narrowed to i8, per-row and per-head RequantShift, u8 outputs.
#[test]
fn peer_integer_kernels_match_the_goldens_bit_for_bit() {
    let Some(peers) = peers() else { return };
    let i8_pair = [("input_0", DType::I8), ("input_1", DType::I8)];
    for (name, rel, types) in [
        ("k_attention", "Kernels/Integer/Attention", &[][..]),
        ("k_gemm_rq_per_row", "Kernels/Integer/GEMM/Regular_RQPerRow", &[][..]),
        ("k_gemm_transb_rq", "Kernels/Integer/GEMM/TransB_RQ", &[][..]),
        ("k_hardswish_rq", "Kernels/Integer/Hardswish/Regular_RQ", &[][..]),
        ("k_matmul", "Kernels/Integer/MatMul/Regular", &i8_pair[..]),
        ("k_matmul_rq", "Kernels/Integer/MatMul/Regular_RQ", &i8_pair[..]),
        ("k_rmsnorm", "Kernels/Integer/RMSNorm", &[][..]),
        ("k_softmax", "Kernels/Integer/Softmax/Regular", &[][..]),
        ("k_true_integer_div", "Kernels/Integer/TrueIntegerDiv", &[("input", DType::I16)][..]),
    ] {
        check_deeploy(&peers, name, rel, types);
    }
}

/// The input type is a promise about the data: EEGFormer's 0..254 input refused as the default i8.
#[test]
fn data_outside_the_declared_input_type_is_refused() {
    let Some(peers) = peers() else { return };
    let dir = peers.join("Models/EEGFormer");
    let g = mote_onnx::load(dir.join("network.onnx"), &Default::default()).unwrap();
    let x = mote_core::npz::read(dir.join("inputs.npz")).unwrap().remove(0).1.cast(DType::I64);
    let e = host_reference(&g, vec![x]).unwrap_err().to_string();
    assert!(
        e.contains("input `input` holds") && e.contains("outside its device type i8") && e.contains("input_types"),
        "{e}"
    );
}
