//! The generated crate compiles, and run on the host it produces exactly the int8 outputs of the
//! reference interpreter: our digits model and the peer float models after `mote quantize`
//! (the MCU runs are mote-deploy's tests). All harnesses share one target dir.
use mote_codegen::{compile, host_reference, CompileOptions};
use mote_core::{Graph, Tensor};
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

/// Generates crate `name` for `g`, runs it on the host with `inputs`, and compares every output
/// byte (and the number of layers marked) with the reference interpreter.
fn check(name: &str, g: &Graph, inputs: Vec<Tensor>) {
    let opts = CompileOptions {
        crate_name: name.into(),
        kernels_path: root().join("crates/mote-kernels"),
        strategy: mote_plan::Strategy::Best,
        c_abi: false,
    };
    let c = compile(g, &opts).unwrap();
    assert!(c.arena.best <= c.arena.greedy && c.arena.lower_bound <= c.arena.best, "{:?}", c.arena);
    let (ins, outs) = host_reference(g, inputs).unwrap();

    let work = root().join("target/codegen-test");
    let model = work.join(name);
    for (p, text) in &c.files {
        let path = model.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
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
}

#[test]
fn digits_model_matches_the_host_reference_bit_for_bit() {
    let dir = root().join("examples/digits");
    let calib = mote_core::npz::read(dir.join("calib.npz")).unwrap().remove(0).1;
    let calib: Vec<Vec<Tensor>> = (0..16).map(|i| vec![sample(&calib, i)]).collect();
    let g = int8(&dir.join("digits_encoder.onnx"), &calib);
    let x = mote_core::npz::read(dir.join("digits_encoder.inputs.npz")).unwrap().remove(0).1;
    check("digits_model", &g, vec![x]);
}

#[test]
fn peer_float_models_after_quantize_match_bit_for_bit() {
    let peers =
        std::env::var_os("MOTE_PEER_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/peer-models"));
    if !peers.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI: peer models missing at {}", peers.display());
        eprintln!("SKIP: peer models not found at {}", peers.display());
        return;
    }
    for (name, rel) in [
        ("cct8", "Models/CCT/FP32/CCT_1_16_16_8"),
        ("tinyvit", "Models/TinyViT/Demo"),
        ("microllama_fp32", "Models/microLlama/FP32/microLlama1"),
    ] {
        let dir = peers.join(rel);
        let g0 = mote_onnx::load(dir.join("network.onnx"), &Default::default()).unwrap();
        let inputs: Vec<Tensor> = mote_core::npz::read(dir.join("inputs.npz"))
            .unwrap()
            .into_iter()
            .take(g0.inputs.len())
            .map(|(_, t)| t)
            .collect();
        let g = int8(&dir.join("network.onnx"), std::slice::from_ref(&inputs));
        check(name, &g, inputs);
    }
}

#[test]
fn c_abi_staticlib_links_into_a_c_program_and_matches() {
    let dir = root().join("examples/digits");
    let calib = mote_core::npz::read(dir.join("calib.npz")).unwrap().remove(0).1;
    let calib: Vec<Vec<Tensor>> = (0..16).map(|i| vec![sample(&calib, i)]).collect();
    let g = int8(&dir.join("digits_encoder.onnx"), &calib);
    let x = mote_core::npz::read(dir.join("digits_encoder.inputs.npz")).unwrap().remove(0).1;
    let (ins, outs) = host_reference(&g, vec![x]).unwrap();
    let name = "digits_c";
    let opts = CompileOptions {
        crate_name: name.into(),
        kernels_path: root().join("crates/mote-kernels"),
        strategy: mote_plan::Strategy::Best,
        c_abi: true,
    };
    let c = compile(&g, &opts).unwrap();
    let work = root().join("target/codegen-test");
    let model = work.join(name);
    for (p, text) in &c.files {
        let path = model.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
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
