//! `mote eval` end to end: top-1 accuracy of the shipped digits classifier on its
//! test split (the exact count onnxruntime gets, see examples/digits/ACCURACY.txt),
//! `--json`, `--reference`, `--limit`, batched models, integer outputs, and a clear
//! exit-2 error for each kind of bad test set; with `--board`, the shipped int8 model on
//! emulated Cortex-M4 and RV32 boards: the same top-1 count as the host, every sample
//! bit-exact, the test set split into equal firmwares on a board with little flash.
//!
//! Without QEMU or a Rust target the `--board` emulation tests print `SKIP: <reason>` and
//! pass, except when `CI` is set, where they fail.
mod common;

use common::{assert_error, emulation_available, example, json, mote, stdout, typed_value_info};
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
/// How many test samples the shipped int8 model (digits_encoder.int8.onnx) classifies
/// correctly, on the host interpreter and on every board alike.
const DIGITS_INT8_CORRECT: usize = 439;

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

/// `mote eval --json` of the shipped int8 digits model with extra arguments.
fn int8_eval(extra: &[&str]) -> serde_json::Value {
    let model = digits("digits_encoder.int8.onnx");
    let data = digits("test.npz");
    json(&mote(&[&["eval", model.as_str(), "--data", data.as_str(), "--json"][..], extra].concat()))
}

#[test]
fn board_top1_equals_the_host_and_every_sample_is_bit_exact() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let host = int8_eval(&[]);
    assert_eq!(host["correct"], DIGITS_INT8_CORRECT, "{host}");
    let j = int8_eval(&["--board", "stm32l4r5"]);
    assert_eq!(j["samples"], DIGITS_TEST);
    assert_eq!(j["correct"], host["correct"], "{j}");
    assert_eq!(j["correct"], DIGITS_INT8_CORRECT);
    assert_close(&j["top1"], DIGITS_INT8_CORRECT as f64 / DIGITS_TEST as f64);
    assert_eq!(j["bit_exact_samples"], DIGITS_TEST, "{j}");
    assert_eq!((j["board"].as_str(), j["core"].as_str()), (Some("stm32l4r5"), Some("cortex-m4")));
    assert_eq!(j["firmwares"], 1, "2 MB of flash holds the 450 samples");
    let ins = j["instructions_first_sample"].as_u64().expect("instructions");
    assert!(ins > 100_000 && ins < 100_000_000, "{j}");
    assert!(j.get("first_mismatch").is_none(), "{j}");

    // The text report, with the float model as the reference.
    let (model, data, float) = (digits("digits_encoder.int8.onnx"), digits("test.npz"), digits("digits_encoder.onnx"));
    let args = ["eval", &model, "--data", &data, "--board", "stm32l4r5", "--limit", "60", "--reference", &float];
    let out = mote(&args);
    let s = stdout(&out);
    assert!(s.contains("board: stm32l4r5 (cortex-m4), 1 firmware ("), "{s}");
    assert!(s.contains("bit-exact: 60/60 samples\n"), "{s}");
    assert!(s.contains("instructions (first sample): ") && s.contains(" ms at 120 MHz"), "{s}");
    assert!(s.contains("reference top-1: 96.67% (58/60)\n"), "{s}");
    assert!(out.stderr.is_empty(), "no progress output when stderr is not a terminal");
}

#[test]
fn rv32_board_with_a_limit() {
    if !emulation_available("rv32imc") {
        return;
    }
    let host = int8_eval(&["--limit", "20"]);
    let j = int8_eval(&["--limit", "20", "--board", "esp32c3"]);
    assert_eq!(j["samples"], 20);
    assert_eq!(j["correct"], host["correct"], "{j}");
    assert_eq!(j["bit_exact_samples"], 20, "{j}");
    assert_eq!(j["core"], "rv32imc");
}

#[test]
fn little_flash_splits_the_samples_into_equal_firmwares_or_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Plain weights 23,960 B (the 16-bit packed ones would crowd these parts: mote falls back) + code estimate
    // 32,768 B; 25,752 B more leave a budget of 12,876 B: 201 samples of 64 B per firmware, so 450 samples run as
    // 3 firmwares of 150.
    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        "name = \"small\"\ncore = \"cortex-m4\"\nsram_bytes = 65536\nflash_bytes = 82480\nclock_hz = 64000000\n",
    )
    .unwrap();
    // 132 B left: one sample per firmware, 450 firmwares: refused.
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(
        &tiny,
        "name = \"tiny\"\ncore = \"cortex-m4\"\nsram_bytes = 65536\nflash_bytes = 56876\nclock_hz = 64000000\n",
    )
    .unwrap();
    let (model, data) = (digits("digits_encoder.int8.onnx"), digits("test.npz"));
    let out = mote(&["eval", &model, "--data", &data, "--board", tiny.to_str().unwrap()]);
    assert_error(&out, &["board `tiny`", "450 firmwares", "at most 16", "--limit"]);
    // No room for a single sample.
    std::fs::write(
        &tiny,
        "name = \"tiny\"\ncore = \"cortex-m4\"\nsram_bytes = 65536\nflash_bytes = 56776\nclock_hz = 64000000\n",
    )
    .unwrap();
    let out = mote(&["eval", &model, "--data", &data, "--board", tiny.to_str().unwrap()]);
    assert_error(&out, &["board `tiny`", "no flash for the test samples", "one sample takes 64 B"]);

    if !emulation_available("cortex-m4") {
        return;
    }
    let j = int8_eval(&["--board", small.to_str().unwrap()]);
    assert_eq!(j["firmwares"], 3, "{j}");
    assert_eq!(j["bit_exact_samples"], DIGITS_TEST, "{j}");
    assert_eq!(j["correct"], DIGITS_INT8_CORRECT, "{j}");
}

#[test]
fn unknown_board_is_an_error() {
    let (model, data) = (digits("digits_encoder.int8.onnx"), digits("test.npz"));
    let out = mote(&["eval", &model, "--data", &data, "--board", "stm32-nope"]);
    assert_error(&out, &["unknown board `stm32-nope`", "known boards", "stm32l4r5", "esp32c3"]);
    let out = mote(&["eval", &model, "--data", &data, "--board", "stm32l4r5", "--timeout", "0"]);
    assert_error(&out, &["--timeout 0", "positive"]);
}
