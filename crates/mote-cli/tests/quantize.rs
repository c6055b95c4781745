//! `mote quantize` end to end: our digits model keeps its accuracy in int8, every calibration
//! method works, and bad calibration data, non-integerizable ops and unusable QDQ scales are
//! clear errors that leave no output file behind.
mod common;

use common::{assert_error, example, initializer, json, model, model_with, mote, node, stdout, write};
use mote_core::{npz, Tensor};

/// Quantizes the digits model with `method` into `dir` and returns (int8 correct, float
/// correct, agreement) on the 450-sample test split.
fn quantize_and_eval(dir: &std::path::Path, method: &str) -> (u64, u64, u64) {
    let q = dir.join(format!("digits.{method}.onnx"));
    let q = q.to_str().unwrap();
    let float = example("digits", "digits_encoder.onnx");
    let calib = example("digits", "calib.npz");
    let report = json(&mote(&["quantize", &float, "--calib", &calib, "-o", q, "--method", method, "--json"]));
    assert_eq!(report["samples"], 64);
    // 14: embed, head, 2 x (fc1, fc2) and, per attention block rewritten to the canonical form (FWSA off
    // under the default `auto`), separate q, k, v and output projections.
    assert_eq!(report["weights"], 14, "every Linear/attention weight is int8");
    let layers = report["layers"].as_array().unwrap();
    let out = layers.iter().find(|l| l["tensor"] == "output logits").expect("output SQNR");
    assert!(out["sqnr_db"].as_f64().unwrap() > 30.0, "{out}");
    let eval = json(&mote(&["eval", q, "--data", &example("digits", "test.npz"), "--reference", &float, "--json"]));
    assert_eq!(eval["samples"], 450);
    let n = |k: &str| eval[k].as_u64().unwrap_or_else(|| panic!("{k} in {eval}"));
    (n("correct"), n("reference_correct"), n("agreed"))
}

#[test]
fn digits_int8_keeps_top1_within_one_point() {
    let dir = tempfile::tempdir().unwrap();
    // Float: 439/450 (97.56%). Exact counts: the int8 path is deterministic integer arithmetic.
    assert_eq!(quantize_and_eval(dir.path(), "minmax"), (439, 439, 450));
    assert_eq!(quantize_and_eval(dir.path(), "percentile"), (439, 439, 450));
    assert_eq!(quantize_and_eval(dir.path(), "mse"), (439, 439, 450));
}

#[test]
fn quantized_model_runs_int8_ops_only() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.onnx");
    let q = q.to_str().unwrap();
    stdout(&mote(&[
        "quantize",
        &example("digits", "digits_encoder.onnx"),
        "--calib",
        &example("digits", "calib.npz"),
        "-o",
        q,
    ]));
    let inspect = stdout(&mote(&["inspect", q]));
    for op in ["QLinear", "QMatMul", "QSoftmax", "QLayerNorm", "QLut", "QAdd", "QMean"] {
        assert!(inspect.contains(op), "{op} missing:\n{inspect}");
    }
    // Only the model's edges stay float: one QuantizeLinear on x, one DequantizeLinear on logits.
    for op in ["MatMul ", "Gemm ", "Softmax ", "LayerNormalization ", "Erf ", "Gelu "] {
        assert!(!inspect.lines().any(|l| l.trim_start().starts_with(op)), "float {op} left:\n{inspect}");
    }
}

#[test]
fn calibration_with_wrong_names_or_shapes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let float = example("digits", "digits_encoder.onnx");
    let out = dir.path().join("q.onnx");
    let bad_names = dir.path().join("names.npz");
    let t = Tensor::from_vec(&[2, 8, 8], vec![0f32; 128]).unwrap();
    npz::write(&bad_names, &[("a".into(), t.clone()), ("b".into(), t)]).unwrap();
    let r = mote(&["quantize", &float, "--calib", bad_names.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_error(&r, &["names.npz", "[x]", "[a, b]"]);
    let bad_shape = dir.path().join("shape.npz");
    npz::write(&bad_shape, &[("x".into(), Tensor::from_vec(&[3, 8, 7], vec![0f32; 168]).unwrap())]).unwrap();
    let r = mote(&["quantize", &float, "--calib", bad_shape.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_error(&r, &["shape.npz", "`x`", "3x8x7", "1x8x8"]);
    assert!(!out.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 2, "no output written");
}

#[test]
fn ops_that_cannot_be_integerized_are_listed_and_nothing_is_written() {
    // Two divisions of activations by activations: no int8 lowering; both are named at once.
    let nodes = vec![node("Div", "div1", &["a", "b"], &["y1"]), node("Div", "div2", &["b", "a"], &["y2"])];
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "div.onnx", &model(nodes, &["a", "b"], &["y1", "y2"]));
    let calib = dir.path().join("calib.npz");
    let t = |k: f32| Tensor::from_vec(&[4, 4], (0..16).map(|i| 1.0 + k * i as f32).collect()).unwrap();
    npz::write(&calib, &[("a".into(), t(0.5)), ("b".into(), t(0.25))]).unwrap();
    let out = dir.path().join("div.int8.onnx");
    let r = mote(&["quantize", &m, "--calib", calib.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_error(&r, &["2 float region(s)", "`div1` (Div)", "`div2` (Div)"]);
    assert!(!out.exists());
    assert!(!dir.path().join("div.int8.onnx.partial").exists());
}

#[test]
fn already_quantized_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.onnx");
    let r = mote(&[
        "quantize",
        &example("digits", "digits_encoder.ort_qdq.onnx"),
        "--calib",
        &example("digits", "calib.npz"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_error(&r, &["already quantized"]);
    assert!(!out.exists());
}

/// `x → QuantizeLinear(scale) → DequantizeLinear(scale) → Relu → QuantizeLinear → DequantizeLinear → y`.
fn qdq_relu(scale: f32) -> Vec<u8> {
    let nodes = vec![
        node("QuantizeLinear", "qx", &["x", "s_bad", "z"], &["xq"]),
        node("DequantizeLinear", "dqx", &["xq", "s_bad", "z"], &["xd"]),
        node("Relu", "relu", &["xd"], &["r"]),
        node("QuantizeLinear", "qr", &["r", "s_ok", "z"], &["rq"]),
        node("DequantizeLinear", "dqr", &["rq", "s_ok", "z"], &["y"]),
    ];
    let z = mote_onnx::proto::TensorProto {
        name: Some("z".into()),
        data_type: Some(mote_onnx::proto::tensor_proto::DataType::Int8 as i32),
        raw_data: Some(vec![0]),
        ..Default::default()
    };
    let init = vec![initializer("s_bad", &[], &[scale]), initializer("s_ok", &[], &[0.08]), z];
    model_with(nodes, init, &["x"], &["y"])
}

#[test]
fn qdq_relu_runs_in_int8() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "relu.onnx", &qdq_relu(0.05));
    let inputs = dir.path().join("x.npz");
    npz::write(&inputs, &[("x".into(), Tensor::from_vec(&[1, 4], vec![-1.0f32, 0.26, 0.5, 7.0]).unwrap())]).unwrap();
    let out = dir.path().join("y.npz");
    stdout(&mote(&["run", &m, "--inputs", inputs.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    // x → q = round(x/0.05) = [-20, 5, 10, 127(sat)]; relu at s=0.05 → [0, 0.25, 0.5, 6.35];
    // requantized to s=0.08: [0, 3.125, 6.25, 79.375] rounds to [0, 3, 6, 79] → ×0.08.
    let y = npz::read(&out).unwrap().remove(0).1.to_f32();
    let want = [0.0f32, 0.24, 0.48, 6.32];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{y:?} vs {want:?}");
    }
    let inspect = stdout(&mote(&["inspect", &m]));
    assert!(inspect.contains("QLut"), "{inspect}");
}

#[test]
fn unusable_qdq_scales_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    for (scale, shown) in [(0.0f32, "holds 0"), (f32::NAN, "holds NaN"), (f32::INFINITY, "holds inf")] {
        let m = write(dir.path(), "bad.onnx", &qdq_relu(scale));
        assert_error(&mote(&["inspect", &m]), &["scale `s_bad`", shown, "finite positive"]);
    }
}

#[test]
fn onnxruntime_qdq_models_lower_to_int8_and_keep_their_predictions() {
    // quantize_static's digits model: onnxruntime itself gets 439/450 and agrees with float on 449.
    let q = example("digits", "digits_encoder.ort_qdq.onnx");
    let float = example("digits", "digits_encoder.onnx");
    let e = json(&mote(&["eval", &q, "--data", &example("digits", "test.npz"), "--reference", &float, "--json"]));
    assert_eq!((e["correct"].as_u64(), e["agreed"].as_u64()), (Some(439), Some(449)), "{e}");
    let inspect = stdout(&mote(&["inspect", &q]));
    assert!(inspect.contains("QLut") && inspect.contains("QSoftmax"), "GELU's Erf island and softmax: {inspect}");
    // The keyword-spotting encoder: logits within 0.1 of PyTorch's float ones (onnxruntime's own
    // QDQ run is 0.044 away), same class.
    let kws = example("torch-encoder", "kws_encoder_op17.ort_qdq.onnx");
    let r = mote(&[
        "run",
        &kws,
        "--inputs",
        &example("torch-encoder", "kws_encoder_op17.inputs.npz"),
        "--expect",
        &example("torch-encoder", "kws_encoder_op17.outputs.npz"),
        "--atol",
        "0.1",
    ]);
    stdout(&r);
}

#[test]
fn causal_attention_mask_stays_inside_the_int8_softmax() {
    // nn.MultiheadAttention with a causal mask built in forward (-inf above the diagonal).
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.npz");
    // Standard normal samples, like the shipped input (LCG + Box–Muller).
    let mut state = 1u64;
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let noise: Vec<f32> = (0..16 * 12 * 32)
        .map(|_| ((-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()) as f32)
        .collect();
    npz::write(&calib, &[("x".into(), Tensor::from_vec(&[16, 12, 32], noise).unwrap())]).unwrap();
    let q = dir.path().join("mha.int8.onnx");
    let m = example("torch-encoder", "causal_mha_op17.onnx");
    let report =
        json(&mote(&["quantize", &m, "--calib", calib.to_str().unwrap(), "-o", q.to_str().unwrap(), "--json"]));
    let layers = report["layers"].as_array().unwrap();
    let out = layers.iter().find(|l| l["tensor"] == "output y").unwrap()["sqnr_db"].as_f64().unwrap();
    assert!(out > 30.0, "output SQNR {out} dB");
    // The attention is rewritten to the canonical form first: the masked scores are `<out>/mhsa/scores_masked`.
    assert_eq!(report["attention"][0]["masked"], true, "{report}");
    let masked = "/attn/Gemm_output_0/mhsa/scores_masked";
    assert!(!layers.iter().any(|l| l["tensor"] == masked), "the masked scores are not quantized");
    assert!(layers.iter().any(|l| l["tensor"] == "/attn/Gemm_output_0/mhsa/scores"), "the scores are");
    let inspect = stdout(&mote(&["inspect", q.to_str().unwrap()]));
    assert!(inspect.contains("QSoftmax"), "{inspect}");
    let io = |f: &str| example("torch-encoder", f);
    let q = q.to_str().unwrap();
    let run = ["run", q, "--inputs", &io("causal_mha_op17.inputs.npz"), "--expect", &io("causal_mha_op17.outputs.npz")];
    stdout(&mote(&[&run[..], &["--atol", "0.15"]].concat()));
}

#[test]
fn the_shipped_int8_digits_model_is_what_mote_quantize_writes() {
    // README's main job deploys examples/digits/digits_encoder.int8.onnx; it must not go stale.
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.onnx");
    let float = example("digits", "digits_encoder.onnx");
    stdout(&mote(&["quantize", &float, "--calib", &example("digits", "calib.npz"), "-o", fresh.to_str().unwrap()]));
    let shipped = std::fs::read(example("digits", "digits_encoder.int8.onnx")).unwrap();
    assert!(std::fs::read(&fresh).unwrap() == shipped, "regenerate it with the command in README.md");
}
