//! `mote deploy` of the peer models on QEMU Cortex-M4 (stm32l4r5) and Cortex-M7 (stm32f746): Deeploy's integer
//! graphs (EEGFormer, ICCT, microLlama INT8 decode steps at positions 0, 1 and 8) bit-exact with the host AND with Deeploy's golden
//! outputs, and a float peer model (CCT) after `mote quantize`, bit-exact with the host.
//!
//! Needs the peer models (`../shared/peer-models` beside the checkout or `$MOTE_PEER_MODELS`) and QEMU; without
//! them the tests print `SKIP` and pass, except when `CI` is set, where they fail.
mod common;

use common::{emulation_available, json, mote, stdout};
use mote_core::{npz, Tensor};
use std::path::{Path, PathBuf};

const BOARDS: [(&str, &str); 2] = [("stm32l4r5", "cortex-m4"), ("stm32f746", "cortex-m7")];

fn peers() -> Option<PathBuf> {
    let dir = std::env::var_os("MOTE_PEER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peer-models"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI: peer models missing at {}", dir.display());
    eprintln!("SKIP: peer models not found at {}", dir.display());
    None
}

fn ready() -> Option<PathBuf> {
    let dir = peers()?;
    BOARDS.iter().all(|(_, core)| emulation_available(core)).then_some(dir)
}

/// Deploys `model` with `inputs` on both boards; returns each board's JSON report after checking bit-exactness.
fn deploy(model: &Path, inputs: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    deploy_on(&BOARDS, model, inputs, extra)
}

/// [`deploy`] on `boards`.
fn deploy_on(boards: &[(&str, &str)], model: &Path, inputs: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    boards
        .iter()
        .map(|(board, core)| {
            let m = model.to_str().unwrap();
            let i = inputs.to_str().unwrap();
            let args =
                [&["deploy", m, "--board", board, "--inputs", i, "--json", "--timeout", "600"][..], extra].concat();
            let r = json(&mote(&args));
            assert_eq!(r["bit_exact"], true, "{model:?} on {board}: {}", r["mismatch"]);
            assert_eq!(r["board"]["core"], *core);
            r
        })
        .collect()
}

/// Every output value the MCU printed equals Deeploy's golden `outputs.npz` (exact integers).
fn assert_golden(report: &serde_json::Value, golden: &Path) {
    let want = npz::read(golden).unwrap();
    let got = report["outputs"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{}", report["outputs"]);
    for (g, (name, w)) in got.iter().zip(&want) {
        let values: Vec<i64> = g["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(values, w.to_i64_vec(), "output `{name}` differs from Deeploy's golden output");
    }
}

/// Deploys a Deeploy case on M4 and M7, checks the goldens and returns the reports (none when skipped).
fn deeploy_case(rel: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    deeploy_case_on(&BOARDS, rel, extra)
}

/// [`deeploy_case`] on `boards`.
fn deeploy_case_on(boards: &[(&str, &str)], rel: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let Some(peers) = ready() else { return Vec::new() };
    let dir = peers.join(rel);
    let reports = deploy_on(boards, &dir.join("network.onnx"), &dir.join("inputs.npz"), extra);
    for r in &reports {
        assert_golden(r, &dir.join("outputs.npz"));
        eprintln!("{rel} on {}: {} instructions", r["board"]["name"], r["instructions"]["inference"]);
    }
    reports
}

#[test]
fn eegformer_is_bit_exact_with_deeploy_on_m4_and_m7() {
    deeploy_case("Models/EEGFormer", &["--input-type", "input=u8"]);
}

/// The ops of a report's layers, and how many layers run `op`.
fn count_op(report: &serde_json::Value, op: &str) -> usize {
    report["layers"].as_array().unwrap().iter().filter(|l| l["op"] == op).count()
}

#[test]
fn icct_is_bit_exact_with_deeploy_on_m4_and_m7() {
    for r in deeploy_case("Models/CCT/Int/ICCT", &[]) {
        // Its attention (Deeploy's MatMul + RequantShift and ITAMax) runs as one fused operator, keys and values
        // streamed in chunks: 67,856 B, where layer by layer needs 45,056 B but 95% more instructions. The
        // attention's scratch is the peak, so the tokenizer stays whole (blocks would save no arena).
        let fused = (count_op(&r, "Conv+RequantShift"), count_op(&r, "QAttention"), r["arena"]["best"].as_u64());
        assert_eq!(fused, (1, 1, Some(67_856)), "{}", r["board"]["name"]);
    }
    // A smaller scratch budget streams smaller chunks, and the tokenizer runs in two blocks of pooled rows (half
    // of its 41,472 B convolution output alive at a time): less arena than layer by layer, still bit-exact.
    for r in deeploy_case_on(&BOARDS[..1], "Models/CCT/Int/ICCT", &["--attention-scratch", "24000"]) {
        let fused = (count_op(&r, "Conv+RequantShift"), count_op(&r, "QAttention"), r["arena"]["best"].as_u64());
        assert_eq!(fused, (2, 1, Some(39_280)));
    }
}

#[test]
fn microllama_int8_decode_step_is_bit_exact_with_deeploy_on_m4_and_m7() {
    deeploy_case("Models/microLlama/INT8/microLlama1", &[]);
}

#[test]
fn microllama_int8_step_after_8_tokens_is_bit_exact_with_deeploy_on_m4_and_m7() {
    // The KV cache holds 8 positions ([1,16,8,4] per layer and side) and grows to 9.
    deeploy_case("Models/microLlama/INT8/microLlama8", &[]);
}

#[test]
fn microllama_int8_first_token_with_empty_cache_is_bit_exact_with_deeploy_on_m4_and_m7() {
    // The "parallel" (prefill) graph of one token: empty [1,16,0,4] caches in, one position out.
    deeploy_case("Models/microLlama/INT8/microLlama1_parallel", &[]);
}

#[test]
fn cct_after_mote_quantize_is_bit_exact_on_m4_and_m7() {
    let Some(peers) = ready() else { return };
    let dir = peers.join("Models/CCT/FP32/CCT_1_16_16_8");
    let work = tempfile::tempdir().unwrap();
    // Calibrate on the shipped input (the table in docs/quantization.md uses more samples).
    let x: Tensor = npz::read(dir.join("inputs.npz")).unwrap().remove(0).1;
    let calib = work.path().join("calib.npz");
    npz::write(&calib, &[("input".into(), x)]).unwrap();
    let q = work.path().join("cct.int8.onnx");
    let net = dir.join("network.onnx");
    stdout(&mote(&["quantize", net.to_str().unwrap(), "--calib", calib.to_str().unwrap(), "-o", q.to_str().unwrap()]));
    for r in deploy(&q, &dir.join("inputs.npz"), &[]) {
        // The int8 CCT keeps the float model's top-1 class on the shipped input.
        let values: Vec<i64> =
            r["outputs"][0]["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let golden = npz::read(dir.join("outputs.npz")).unwrap().remove(0).1.to_f64_vec();
        let argmax = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        let int8: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        assert_eq!(argmax(&int8), argmax(&golden), "{}", r["outputs"]);
    }
}

#[test]
fn transformer_deepquant_after_mote_quantize_reproduces_deeploy_on_m4_and_m7() {
    // A fake-quantized float graph: mote quantize keeps its own quantizers, so the int8 MCU output dequantizes
    // to Deeploy's golden float output.
    let Some(peers) = ready() else { return };
    let dir = peers.join("Models/Transformer_DeepQuant");
    let work = tempfile::tempdir().unwrap();
    let q = work.path().join("deepquant.int8.onnx");
    let (net, inputs) = (dir.join("network.onnx"), dir.join("inputs.npz"));
    stdout(&mote(&["quantize", net.to_str().unwrap(), "--calib", inputs.to_str().unwrap(), "-o", q.to_str().unwrap()]));
    let golden = npz::read(dir.join("outputs.npz")).unwrap().remove(0).1.to_f64_vec();
    for r in deploy(&q, &inputs, &[]) {
        let out = &r["outputs"][0];
        let (scale, zp) = (out["scale"].as_f64().unwrap() as f32, out["zero_point"].as_i64().unwrap());
        let values = out["values"].as_array().unwrap();
        assert_eq!(values.len(), golden.len());
        for (v, &g) in values.iter().zip(&golden) {
            let real = (v.as_i64().unwrap() - zp) as f32 * scale;
            assert!((f64::from(real) - g).abs() < 1e-6, "{real} vs {g}");
        }
    }
}
