//! `mote eval` end to end: top-1 accuracy of the shipped digits classifier on its
//! test split (the exact count onnxruntime gets, see examples/digits/ACCURACY.txt),
//! `--json`, `--reference`, `--limit`, batched models, integer outputs, and a clear
//! exit-2 error for each kind of bad test set.
mod common;

use common::{assert_error, example, json, mote, stdout, typed_value_info};
use mote_core::{npz, Tensor};
use mote_onnx::proto::{tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use prost::Message;
use std::path::{Path, PathBuf};

/// Samples in the digits test split and how many of them the float model (torch and
/// onnxruntime alike) classifies correctly.
const DIGITS_TEST: usize = 450;
const DIGITS_CORRECT: usize = 439;
/// Of the first 60 test samples, how many the float model classifies correctly
/// (onnxruntime on digits_encoder.onnx).
const DIGITS_CORRECT_FIRST_60: usize = 58;

fn digits(f: &str) -> String {
    example("digits", f)
}

/// Asserts a JSON number equals `want` (serde_json's default float parsing may be off
/// by one ulp).
fn assert_close(v: &serde_json::Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-12, "{got} != {want}");
}

/// The digits test split's arrays, in file order (`x`, `y`).
fn digits_test() -> (Tensor, Tensor) {
    let arrays = npz::read(digits("test.npz")).expect("read test.npz");
    let get = |k: &str| arrays.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no `{k}`")).1.clone();
    (get("x"), get("y"))
}

fn write_npz(dir: &Path, name: &str, arrays: Vec<(&str, Tensor)>) -> String {
    let path = dir.join(name);
    let arrays: Vec<(String, Tensor)> = arrays.into_iter().map(|(k, t)| (k.to_string(), t)).collect();
    npz::write(&path, &arrays).expect("write npz");
    path.to_string_lossy().into_owned()
}

#[test]
fn digits_accuracy_equals_onnxruntime() {
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &digits("test.npz")]);
    let s = stdout(&out);
    assert!(s.contains("top-1: 97.56% (439/450)\n"), "{s}");
    assert!(s.contains(&format!("{DIGITS_TEST} samples")), "{s}");
    // The number in the committed ACCURACY.txt (written by train.py) is the same.
    let acc = std::fs::read_to_string(digits("ACCURACY.txt")).expect("ACCURACY.txt");
    assert!(acc.contains(&format!("onnxruntime top-1 (digits_encoder.onnx): 97.56% ({DIGITS_CORRECT}/{DIGITS_TEST})")));
    // No progress bar when stderr is not a terminal.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn json_carries_the_same_numbers() {
    let j = json(&mote(&["eval", &digits("digits_encoder.onnx"), "--data", &digits("test.npz"), "--json"]));
    assert_eq!(j["samples"], DIGITS_TEST);
    assert_eq!(j["correct"], DIGITS_CORRECT);
    assert_close(&j["top1"], DIGITS_CORRECT as f64 / DIGITS_TEST as f64);
    assert!(j["model"].as_str().expect("model").ends_with("digits_encoder.onnx"));
    assert!(j.get("reference_top1").is_none() && j.get("agreement").is_none(), "{j}");
}

#[test]
fn reference_against_itself_agrees_fully() {
    let m = digits("digits_encoder.onnx");
    let args = ["eval", &m, "--data", &digits("test.npz"), "--reference", &m, "--limit", "60"];
    let s = stdout(&mote(&args));
    assert!(s.contains("top-1: 96.67% (58/60)\n"), "{s}");
    assert!(s.contains("reference top-1: 96.67% (58/60)\n"), "{s}");
    assert!(s.contains("agreement: 100.00% (60/60)\n"), "{s}");
    assert!(s.contains("60 samples (the first 60 of 450)"), "{s}");

    let j = json(&mote(&[&args[..], &["--json"]].concat()));
    assert_eq!(j["samples"], 60);
    assert_eq!(j["correct"], DIGITS_CORRECT_FIRST_60);
    assert_eq!(j["reference_correct"], DIGITS_CORRECT_FIRST_60);
    assert_close(&j["reference_top1"], DIGITS_CORRECT_FIRST_60 as f64 / 60.0);
    assert_close(&j["agreement"], 1.0);
    assert_eq!(j["agreed"], 60);
}

#[test]
fn limit_larger_than_the_set_evaluates_everything_and_zero_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    let x5: Vec<f32> = x.to_f64_vec()[..5 * 64].iter().map(|&v| v as f32).collect();
    let x5 = Tensor::from_vec(&[5, 8, 8], x5).unwrap();
    let y5 = Tensor::from_vec(&[5], y.to_i64_vec()[..5].to_vec()).unwrap();
    let data = write_npz(dir.path(), "five.npz", vec![("x", x5), ("y", y5)]);
    let j = json(&mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data, "--limit", "1000", "--json"]));
    assert_eq!(j["samples"], 5);
    assert_eq!(j["correct"], 5);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data, "--limit", "0"]);
    assert_error(&out, &["five.npz", "nothing to evaluate", "--limit is 0"]);
}

#[test]
fn labels_may_be_int32_or_uint8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    for (name, y) in [("i32.npz", y.cast(mote_core::DType::I32)), ("u8.npz", y.cast(mote_core::DType::U8))] {
        let data = write_npz(dir.path(), name, vec![("x", x.clone()), ("y", y)]);
        let j = json(&mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data, "--limit", "60", "--json"]));
        assert_eq!(j["correct"], DIGITS_CORRECT_FIRST_60, "{name}");
    }
}

#[test]
fn missing_labels_are_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, _) = digits_test();
    let data = write_npz(dir.path(), "no_y.npz", vec![("x", x)]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data]);
    assert_error(&out, &["no_y.npz", "no array `y`", "labels", "the file has: x"]);
}

#[test]
fn missing_samples_are_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    let data = write_npz(dir.path(), "renamed.npz", vec![("images", x), ("y", y)]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data]);
    assert_error(&out, &["renamed.npz", "no array `x`", "the file has: images, y"]);
}

#[test]
fn wrong_sample_shape_is_an_error_naming_both_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    let data = write_npz(dir.path(), "flat.npz", vec![("x", x.reshape(&[DIGITS_TEST, 64]).unwrap()), ("y", y)]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data]);
    assert_error(&out, &["flat.npz", "array `x`", "[450x64]", "samples of shape [64]", "input `x`", "[1x8x8]"]);
}

#[test]
fn label_count_mismatch_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    let short = Tensor::from_vec(&[DIGITS_TEST - 1], y.to_i64_vec()[1..].to_vec()).unwrap();
    let data = write_npz(dir.path(), "short.npz", vec![("x", x), ("y", short)]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data, "--limit", "10"]);
    assert_error(&out, &["short.npz", "array `y` has shape [449]", "450 samples"]);
}

#[test]
fn float_or_out_of_range_labels_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (x, y) = digits_test();
    let data = write_npz(dir.path(), "float_y.npz", vec![("x", x.clone()), ("y", y.cast(mote_core::DType::F32))]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data]);
    assert_error(&out, &["float_y.npz", "array `y` is f32[450]", "integers"]);

    let mut labels = y.to_i64_vec();
    labels[3] = 10;
    let bad = Tensor::from_vec(&[DIGITS_TEST], labels).unwrap();
    let data = write_npz(dir.path(), "label10.npz", vec![("x", x), ("y", bad)]);
    let out = mote(&["eval", &digits("digits_encoder.onnx"), "--data", &data, "--limit", "5"]);
    assert_error(&out, &["label10.npz", "array `y` has label 10 at index 3", "10 classes"]);
}

#[test]
fn batched_model_matches_one_sample_at_a_time() {
    // kws_encoder_dynamic has a symbolic batch; with --shape x=3x16x64 seven samples run
    // as batches of 3, 3 and 1 (zero-padded). The labels are the predictions of the
    // batch-1 model computed here through the library, so every one must be right.
    let dir = tempfile::tempdir().expect("tempdir");
    let model = example("torch-encoder", "kws_encoder_dynamic.onnx");
    let mut opts = mote_onnx::ImportOptions::default();
    opts.shapes.insert("x".to_string(), vec![1, 16, 64]);
    let g = mote_onnx::load(&model, &opts).expect("load");
    let n = 7;
    // Deterministic, distinct samples: sine waves of several frequencies and phases
    // (onnxruntime predicts classes 2, 7, 8, 7, 0, 2, 2 for them).
    let waves = [(0.01, 0.0), (0.01, 1.0), (0.1, 0.0), (0.1, 1.0), (0.5, 2.0), (1.3, 0.0), (0.5, 0.0)];
    let xs: Vec<f32> =
        waves.iter().flat_map(|&(f, ph)| (0..1024).map(move |i| ((i as f64 * f + ph).sin() * 3.0) as f32)).collect();
    let mut labels = Vec::new();
    for k in 0..n {
        let sample = Tensor::from_vec(&[1, 16, 64], xs[k * 1024..(k + 1) * 1024].to_vec()).unwrap();
        let out = g.run(vec![sample]).expect("run");
        let v = out[0].to_f64_vec();
        let best = (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        labels.push(best as i64);
    }
    assert_eq!(labels, [2, 7, 8, 7, 0, 2, 2]);
    let data = write_npz(
        dir.path(),
        "kws.npz",
        vec![("x", Tensor::from_vec(&[n, 16, 64], xs).unwrap()), ("y", Tensor::from_vec(&[n], labels).unwrap())],
    );
    let reference = example("torch-encoder", "kws_encoder_op17.onnx");
    let j =
        json(&mote(&["eval", &model, "--data", &data, "--shape", "x=3x16x64", "--reference", &reference, "--json"]));
    assert_eq!(j["samples"], 7);
    assert_eq!(j["correct"], 7);
    assert_eq!(j["reference_correct"], 7);
    assert_eq!(j["agreed"], 7);

    // The reference's own static shapes go in --reference-shape, not --shape.
    let out = mote(&["eval", &reference, "--data", &data, "--reference", &model]);
    assert_error(&out, &["--reference-shape", "kws_encoder_dynamic.onnx", "symbolic"]);
    let j = json(&mote(&[
        "eval",
        &reference,
        "--data",
        &data,
        "--reference",
        &model,
        "--reference-shape",
        "x=4x16x64",
        "--json",
    ]));
    assert_eq!((j["correct"].as_u64(), j["agreed"].as_u64()), (Some(7), Some(7)));
}

/// `x` f32[1,4] -> Cast(to=int8) -> `y` i8[1,4]: a classifier with integer outputs.
fn int8_model() -> Vec<u8> {
    let cast = NodeProto {
        op_type: Some("Cast".into()),
        name: Some("cast".into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        attribute: vec![AttributeProto {
            name: Some("to".into()),
            r#type: Some(2), // INT
            i: Some(DataType::Int8 as i64),
            ..Default::default()
        }],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![cast],
            input: vec![typed_value_info("x", DataType::Float, &[1, 4])],
            output: vec![typed_value_info("y", DataType::Int8, &[1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn integer_outputs_take_the_first_maximum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model: PathBuf = dir.path().join("int8.onnx");
    std::fs::write(&model, int8_model()).expect("write model");
    // Casts saturate: row 2 becomes [-128, -128, 1, 0]. Row 0 ties at 5: the first wins.
    let x =
        Tensor::from_vec(&[3, 4], vec![0f32, 5.0, 5.0, 1.0, 3.0, -2.0, 0.0, 0.0, -200.0, -300.0, 1.0, 0.5]).unwrap();
    let y = Tensor::from_vec(&[3], vec![1u8, 0, 3]).unwrap();
    let data = write_npz(dir.path(), "int.npz", vec![("x", x), ("y", y)]);
    let model = model.to_string_lossy().into_owned();
    let s = stdout(&mote(&["eval", &model, "--data", &data]));
    assert!(s.contains("top-1: 66.67% (2/3)\n"), "{s}");
}
