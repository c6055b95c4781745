//! Helpers shared by the CLI tests: running the built `mote`, checking clean errors, and
//! building small ONNX models in memory.
#![allow(dead_code)] // each test file uses a different subset

use mote_onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `mote` binary.
pub fn mote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mote")).args(args).output().expect("spawn mote")
}

/// Path of a shipped example file, `examples/<dir>/<f>`.
pub fn example(dir: &str, f: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir).join(f).to_string_lossy().into_owned()
}

/// Stdout as text, asserting success.
pub fn stdout(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "mote failed: {}\n{s}", String::from_utf8_lossy(&out.stderr));
    s
}

/// Asserts a clean failure: exit code 2, an `error:` paragraph containing every
/// `needle`, and no panic message.
pub fn assert_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one paragraph: {err}");
    for n in needles {
        assert!(err.contains(n), "missing `{n}` in: {err}");
    }
    err
}

/// Stdout parsed as one line of JSON, asserting success.
pub fn json(out: &Output) -> serde_json::Value {
    let s = stdout(out);
    assert_eq!(s.trim_end().lines().count(), 1, "one JSON line: {s}");
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A float tensor value-info with static dims.
pub fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    typed_value_info(name, DataType::Float, dims)
}

/// A tensor value-info of element type `elem` with static dims.
pub fn typed_value_info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node of the default domain.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A float initializer.
pub fn initializer(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// An opset-17 model whose inputs and outputs are all float `[1, 4]`.
pub fn model(nodes: Vec<NodeProto>, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    model_with(nodes, vec![], inputs, outputs)
}

/// Like [`model`], with initializers.
pub fn model_with(nodes: Vec<NodeProto>, init: Vec<TensorProto>, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: init,
            input: inputs.iter().map(|n| value_info(n, &[1, 4])).collect(),
            output: outputs.iter().map(|n| value_info(n, &[1, 4])).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p.to_string_lossy().into_owned()
}

/// `true` when QEMU, the core's Rust target and the counting plugin's build tools are there; otherwise prints
/// `SKIP` (or fails under CI).
pub fn emulation_available(core: &str) -> bool {
    let core: mote_qemu::Core = core.parse().unwrap();
    mote_qemu::tools_or_skip(core, &mote_deploy::Paths::locate().unwrap().plugin_dir()).is_some()
}
