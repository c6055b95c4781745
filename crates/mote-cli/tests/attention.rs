//! Fused attention end to end: the EEGFormer-shaped block of `examples/attention` quantized with and without
//! Fused-Weight Self-Attention, deployed on Cortex-M4 (QEMU) as one fused kernel and layer by layer: bit-exact
//! against the host reference every time, the schedule the planner picks, the arena it plans, and the same
//! integers fused and layer by layer.
//!
//! Without QEMU or the Rust target the tests print `SKIP: <reason>` and pass, except when `CI` is set.
mod common;

use common::{emulation_available, example, json, mote, stdout};
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

/// The block quantized with `--fwsa on` and `--fwsa off`, once per test process.
fn quantized(fwsa: &'static str) -> String {
    static MODELS: OnceLock<(String, String)> = OnceLock::new();
    let (on, off) = MODELS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("attention-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let make = |f: &str| {
            let tmp = dir.join(format!("eeg.{f}.onnx.{}", std::process::id()));
            let (model, calib) =
                (example("attention", "eegformer_mhsa.onnx"), example("attention", "eegformer_mhsa.calib.npz"));
            stdout(&mote(&["quantize", &model, "--calib", &calib, "--fwsa", f, "-o", tmp.to_str().unwrap()]));
            let q = dir.join(format!("eeg.{f}.onnx"));
            std::fs::rename(&tmp, &q).unwrap();
            q.to_string_lossy().into_owned()
        };
        (make("on"), make("off"))
    });
    if fwsa == "on" {
        on.clone()
    } else {
        off.clone()
    }
}

fn deploy(fwsa: &'static str, extra: &[&str]) -> Output {
    let (model, inputs) = (quantized(fwsa), example("attention", "eegformer_mhsa.inputs.npz"));
    let mut args = vec!["deploy", &model, "--board", "stm32l4r5", "--inputs", &inputs, "--json"];
    args.extend(extra);
    mote(&args)
}

fn values(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["outputs"][0]["values"].as_array().unwrap()
}

/// FWSA + fused kernel: two query rows at a time through every head (keys and values are x, packed once; the output
/// projection summed head by head), one `QAttention` layer doing the block's 4,686,336 MACs, within an arena of the
/// output plus 12,824 B of scratch (the target: 15,700 B).
#[test]
fn fwsa_block_streams_row_pairs_bit_exactly() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let out = deploy("on", &[]);
    let v = json(&out);
    assert_eq!(v["bit_exact"], true, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys/values = x (fused weights); RowMajor { block_rows: 2 }, scratch 12,824 B"), "{err}");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{v}");
    assert_eq!((layers[0]["op"].as_str(), layers[0]["macs"].as_u64()), (Some("QAttention"), Some(4_686_336)));
    let arena = v["arena"]["best"].as_u64().unwrap();
    assert!((81 * 32 + 12_824..=15_700).contains(&arena), "{}", v["arena"]);
    // Layer by layer, the same model computes the same integers with the whole 8 x 81 x 81 map in memory twice
    // (the scores and the probabilities the softmax writes from them).
    let layers = json(&deploy("on", &["--attention", "layers"]));
    assert_eq!(layers["bit_exact"], true);
    assert_eq!(values(&layers), values(&v));
    assert!(layers["arena"]["best"].as_u64().unwrap() >= 2 * 8 * 81 * 81, "{}", layers["arena"]);
}

/// Projected keys and values: the fused kernel goes head by head (one head's keys and values packed at a time).
#[test]
fn projected_block_goes_head_by_head_bit_exactly() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let out = deploy("off", &["--attention-rows", "4"]);
    let v = json(&out);
    assert_eq!(v["bit_exact"], true, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("projected keys/values; HeadMajor { block_rows: 4 }"), "{err}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["layers"][0]["macs"], 6_013_440);
}

/// A causal block (the microLlama-shaped prefill of 32 tokens, heads of 4): fused, each row block scores only the
/// keys up to its last row, the same integers as layer by layer with the whole 16 x 32 x 32 map.
#[test]
fn causal_prefill_block_scores_only_past_keys_bit_exactly() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("attention-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let q = dir.join(format!("llama_prefill_s32.{}.onnx", std::process::id()));
    let q = q.to_str().unwrap();
    let (model, calib) =
        (example("attention", "llama_prefill_s32.onnx"), example("attention", "llama_prefill_s32.calib.npz"));
    stdout(&mote(&["quantize", &model, "--calib", &calib, "-o", q]));
    let inputs = example("attention", "llama_prefill_s32.inputs.npz");
    let deploy = |extra: &[&str]| {
        let mut args = vec!["deploy", q, "--board", "stm32l4r5", "--inputs", &inputs, "--json"];
        args.extend(extra);
        mote(&args)
    };
    let out = deploy(&["--attention-rows", "3"]);
    let fused = json(&out);
    assert_eq!(fused["bit_exact"], true, "{fused}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("16 heads (4/4 wide), projected keys/values; HeadMajor { block_rows: 3 }"), "{err}");
    let layers = json(&deploy(&["--attention", "layers"]));
    assert_eq!(layers["bit_exact"], true);
    assert_eq!(values(&layers), values(&fused));
    assert!(layers["arena"]["best"].as_u64().unwrap() > 2 * 16 * 32 * 32, "{}", layers["arena"]);
    std::fs::remove_file(q).unwrap();
}
