//! The generated crate compiles, and run on the host it produces exactly the int8 outputs of the
//! reference interpreter (the MCU runs are in mote-deploy's tests).
use mote_codegen::{compile, host_reference, CompileOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The digits model quantized by mote (QDQ), lowered to int8 ops.
fn digits_int8() -> mote_core::Graph {
    let dir = root().join("examples/digits");
    let bytes = std::fs::read(dir.join("digits_encoder.onnx")).unwrap();
    let calib = mote_core::npz::read(dir.join("calib.npz")).unwrap().remove(0).1;
    let samples: Vec<Vec<mote_core::Tensor>> = (0..16)
        .map(|i| {
            vec![mote_core::map_same!(&calib, a => a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned())]
        })
        .collect();
    let opts = mote_onnx::ImportOptions::default();
    let q = mote_onnx::qdq::quantize(&bytes, &opts, &samples, mote_core::quantize::calib::Method::MinMax).unwrap();
    q.int8
}

#[test]
fn generated_crate_matches_the_host_reference_bit_for_bit() {
    let g = digits_int8();
    let opts = CompileOptions {
        crate_name: "digits_model".into(),
        kernels_path: root().join("crates/mote-kernels"),
        strategy: mote_plan::Strategy::Best,
    };
    let c = compile(&g, &opts).unwrap();
    assert!(c.arena.best <= c.arena.greedy && c.arena.lower_bound <= c.arena.best, "{:?}", c.arena);
    let x = mote_core::npz::read(root().join("examples/digits/digits_encoder.inputs.npz")).unwrap().remove(0).1;
    let (ins, outs) = host_reference(&g, vec![x]).unwrap();

    // A std harness crate around the generated one, built in its own target dir.
    let work = root().join("target/codegen-test");
    let model = work.join("digits_model");
    for (p, text) in &c.files {
        let path = model.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let harness = work.join("harness");
    std::fs::create_dir_all(harness.join("src")).unwrap();
    std::fs::write(
        harness.join("Cargo.toml"),
        "[package]\nname = \"harness\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n[dependencies]\ndigits_model = { path = \"../digits_model\" }\n",
    )
    .unwrap();
    let input: Vec<String> = ins[0].iter().map(|v| v.to_string()).collect();
    std::fs::write(
        harness.join("src/main.rs"),
        format!(
            "fn main() {{\n    let input: [i8; {}] = [{}];\n    let mut out = [0i8; digits_model::OUTPUT_LENS[0]];\n    \
             let mut arena = Box::new(digits_model::Arena::new());\n    \
             let mut layers = 0;\n    \
             digits_model::run_marked(&mut arena, &[&input], &mut [&mut out], &mut |_| layers += 1).unwrap();\n    \
             println!(\"{{layers}} {{:?}}\", out);\n}}\n",
            input.len(),
            input.join(", ")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["run", "-q", "--release", "--manifest-path"])
        .arg(harness.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", work.join("target"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), format!("{} {:?}", c.layers.len(), outs[0]));
}
