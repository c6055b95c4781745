//! Regenerates the checked-in ONNX protobuf bindings.
//!
//! Run from the repository root: `cargo run --manifest-path tools/onnx-proto-gen/Cargo.toml`.
//! `onnx.proto` beside this file is copied unchanged from the `onnx` Python package 1.23.2
//! (`onnx/onnx.proto`). `protox` parses it in Rust, so no `protoc` binary is needed.
use std::path::Path;

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = here.join("../../crates/mote-onnx/src/proto");
    let fds = protox::compile([here.join("onnx.proto")], [here]).expect("onnx.proto must parse");
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost code generation");
    println!("wrote {}", out.join("onnx.rs").display());
}
