//! `mote quantize --fwsa on|off|auto`: attention blocks are rewritten to mote's canonical form
//! before calibration, with Fused-Weight Self-Attention (FWSA) forced on, off, or applied where it
//! saves MACs; one line per block says what was done.
mod common;

use common::{example, json, mote, stdout};
use std::path::Path;

/// `mote quantize examples/<dir>/<model>.onnx --calib <calib> --fwsa <fwsa> [extra]` into `out`; stdout.
fn quantize(dir: &str, model: &str, calib: &str, fwsa: Option<&str>, out: &Path, extra: &[&str]) -> String {
    let (m, c) = (example(dir, &format!("{model}.onnx")), example(dir, calib));
    let mut args = vec!["quantize", &m, "--calib", &c, "-o", out.to_str().unwrap()];
    if let Some(f) = fwsa {
        args.extend(["--fwsa", f]);
    }
    args.extend(extra);
    stdout(&mote(&args))
}

#[test]
fn eegformer_block_line_and_int8_graph_follow_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let calib = "eegformer_mhsa.calib.npz";
    // S=81, E=32, 8 heads of P=32: FWSA takes 4,686,336 MACs instead of 6,013,440, so `auto` fuses.
    let fused = "attention y: S=81 E=32 H=8 P=32, FWSA on, MACs 6013440 -> 4686336\n";
    for fwsa in [Some("on"), None, Some("auto")] {
        let s = quantize("attention", "eegformer_mhsa", calib, fwsa, &out, &[]);
        assert!(s.starts_with(fused), "{fwsa:?}:\n{s}");
        // One linear layer before the scores (x·W_qk) and one after (W_vo): 2 QLinear.
        assert!(s.contains("int8 graph: DequantizeLinear 1, QLinear 2, QMatMul 2, QSoftmax 1,"), "{s}");
    }
    let s = quantize("attention", "eegformer_mhsa", calib, Some("off"), &out, &[]);
    assert!(s.starts_with("attention y: S=81 E=32 H=8 P=32, FWSA off, MACs 6013440 -> 6013440\n"), "{s}");
    assert!(s.contains("int8 graph: DequantizeLinear 1, QLinear 4, QMatMul 2, QSoftmax 1,"), "{s}");

    // Output SQNR over the 64 calibration samples, measured: 35.46 dB unfused, 36.64 dB with FWSA.
    let sqnr = |fwsa: &str| {
        let r = json(&mote(&[
            "quantize",
            &example("attention", "eegformer_mhsa.onnx"),
            "--calib",
            &example("attention", calib),
            "-o",
            out.to_str().unwrap(),
            "--fwsa",
            fwsa,
            "--json",
        ]));
        let a = &r["attention"][0];
        assert_eq!((a["output"].as_str(), a["seq"].as_u64(), a["heads"].as_u64()), (Some("y"), Some(81), Some(8)));
        assert_eq!(a["fwsa"], fwsa == "on");
        assert_eq!((a["macs_before"].as_u64(), a["macs_fused"].as_u64()), (Some(6_013_440), Some(4_686_336)));
        let layers = r["layers"].as_array().unwrap();
        layers.iter().find(|l| l["tensor"] == "output y").unwrap()["sqnr_db"].as_f64().unwrap()
    };
    let (off, on) = (sqnr("off"), sqnr("on"));
    assert!(off > 35.0 && on > off, "output SQNR {off:.2} dB off, {on:.2} dB on");
}

#[test]
fn ecgformer_stays_unfused_under_auto() {
    // 8 heads of P=2 on E=16: fusing would multiply the MACs by 6.7.
    let dir = tempfile::tempdir().unwrap();
    let s = quantize("attention", "ecgformer_mhsa", "ecgformer_mhsa.calib.npz", None, &dir.path().join("q.onnx"), &[]);
    assert!(s.starts_with("attention /mha/Gemm_output_0: S=66 E=16 H=8 P=2, FWSA off, MACs 206976 -> 206976\n"), "{s}");
}

#[test]
fn digits_top1_is_the_same_with_fwsa_on_and_off() {
    // examples/digits/test.npz, 450 images. Measured: float 97.56% (439/450); int8 with --fwsa off 97.56%
    // (439/450) and with --fwsa on 97.56% (439/450), each agreeing with the float model on all 450.
    // FWSA does not pay here (P=8 against E=32: 36,864 -> 81,920 MACs per block), so `auto` leaves it off.
    let dir = tempfile::tempdir().unwrap();
    let float = example("digits", "digits_encoder.onnx");
    for (fwsa, flag) in [("on", "FWSA on, MACs 36864 -> 81920"), ("off", "FWSA off, MACs 36864 -> 36864")] {
        let q = dir.path().join(format!("digits.{fwsa}.onnx"));
        let s = quantize("digits", "digits_encoder", "calib.npz", Some(fwsa), &q, &[]);
        for b in 0..2 {
            let line = format!("attention /blocks.{b}/attn/Gemm_output_0: S=8 E=32 H=4 P=8, {flag}\n");
            assert!(s.contains(&line), "{line}\n{s}");
        }
        let q = q.to_str().unwrap();
        let eval = json(&mote(&["eval", q, "--data", &example("digits", "test.npz"), "--reference", &float, "--json"]));
        let n = |k: &str| eval[k].as_u64().unwrap_or_else(|| panic!("{k} in {eval}"));
        assert_eq!((n("samples"), n("correct"), n("reference_correct"), n("agreed")), (450, 439, 439, 450), "{fwsa}");
    }
}

#[test]
fn an_unknown_fwsa_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let r = mote(&[
        "quantize",
        &example("digits", "digits_encoder.onnx"),
        "--calib",
        &example("digits", "calib.npz"),
        "-o",
        out.to_str().unwrap(),
        "--fwsa",
        "maybe",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("possible values: on, off, auto"), "{err}");
    assert!(!out.exists());
}
