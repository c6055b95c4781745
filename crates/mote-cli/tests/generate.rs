//! `mote generate` on our own decoder (examples/fortunes, llama2.c format): the host reference and QEMU produce
//! the same tokens on Cortex-M4, M7 and M55, and bad input gets a clear error.

mod common;
use common::{assert_error, emulation_available, example, json, mote, stdout, write};

fn fortunes(f: &str) -> String {
    example("fortunes", f)
}

fn generate_identical(board: &str, core: &str, extra: &[&str]) -> serde_json::Value {
    let (model, calib) = (fortunes("model.bin"), fortunes("calib.txt"));
    let mut args = vec!["generate", &model, "--board", board, "--calib", &calib, "--context", "64", "--json"];
    args.extend_from_slice(extra);
    let v = json(&mote(&args));
    assert_eq!(v["core"], core);
    assert_eq!(v["identical"], true, "{v}");
    assert_eq!(v["tokens"], v["host_tokens"]);
    let tokens = v["tokens"].as_array().unwrap();
    assert!(!tokens.is_empty());
    let prompt = v["prompt_ids"].as_array().unwrap().len();
    assert_eq!(v["step_instructions"].as_array().unwrap().len(), prompt - 1 + tokens.len());
    // KV cache: 2 (keys, values) · 8 layers · 64 positions · 64.
    assert_eq!(v["cache_bytes"], 2 * 8 * 64 * 64);
    v
}

#[test]
fn greedy_text_on_cortex_m4() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let v = generate_identical("stm32l4r5", "cortex-m4", &["--prompt", "Once upon a time", "-n", "16"]);
    assert_eq!(v["prompt_ids"][0], 1, "BOS first");
    let text = v["text"].as_str().unwrap();
    assert!(text.len() > 4, "{v}");
    // Without --json the board's text streams out: the prompt, then what QEMU generated, then the summary.
    let (model, calib) = (fortunes("model.bin"), fortunes("calib.txt"));
    let args = ["generate", &model, "--board", "stm32l4r5", "--calib", &calib, "--context", "64"];
    let out = stdout(&mote(&[&args[..], &["--prompt", "Once upon a time", "-n", "16"]].concat()));
    assert!(out.starts_with(&format!("Once upon a time{text}")), "{out}");
    assert!(out.contains("identical to the host reference"), "{out}");
}

#[test]
fn sampled_prompt_ids_on_cortex_m7() {
    if !emulation_available("cortex-m7") {
        return;
    }
    let extra = ["--prompt-ids", "1,261,308", "-n", "12", "--temperature", "0.8", "--top-k", "20", "--seed", "9"];
    let v = generate_identical("stm32h743", "cortex-m7", &extra);
    assert_eq!(v["layout"], "Dsp16");
}

#[test]
fn int8_weights_when_16_bit_ones_crowd_a_1_mb_flash() {
    if !emulation_available("cortex-m7") {
        return;
    }
    // stm32f746 has 1 MB of flash: the Dsp16 weights (1.25 MB) do not fit, the int8 ones (0.66 MB) do.
    let v = generate_identical("stm32f746", "cortex-m7", &["--prompt", "A friend", "-n", "8"]);
    assert_eq!(v["layout"], "Rv32");
    assert!(v["weight_bytes"].as_u64().unwrap() < 700_000, "{v}");
}

#[test]
fn helium_weights_beyond_the_itcm_on_cortex_m55() {
    if !emulation_available("cortex-m55") {
        return;
    }
    // The Mve8 weights (0.66 MB) exceed the AN547's 512 KB ITCM: they are linked into its 2 MB SRAM.
    let v = generate_identical("corstone-300", "cortex-m55", &["--prompt", "A friend", "-n", "8"]);
    assert_eq!(v["layout"], "Mve8");
    assert!(v["weight_bytes"].as_u64().unwrap() > 512 * 1024, "{v}");
}

#[test]
fn torch_onnx_export_runs_with_a_kv_cache() {
    // The full-sequence export (token ids [1, 32] -> logits, causal mask inside the graph) becomes the same
    // KV-cached decoder; its context is the export's 32 positions.
    let (model, calib) = (fortunes("fortunes.onnx"), fortunes("calib.txt"));
    let tok = fortunes("tokenizer.bin");
    let dir = std::env::temp_dir().join(format!("mote-onnx-decoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("q.npz").to_string_lossy().into_owned();
    let args = ["quantize", &model, "--decoder", "--calib", &calib, "--tokenizer", &tok, "-o", &out, "--json"];
    let v = json(&mote(&args));
    assert_eq!(v["context"], 32);
    assert!(v["logits_sqnr_db"].as_f64().unwrap() > 20.0, "{v}");
    if emulation_available("cortex-m4") {
        let args = ["generate", &model, "--board", "stm32l4r5", "--calib", &calib, "--tokenizer", &tok];
        let v = json(&mote(&[&args[..], &["--prompt", "A friend", "-n", "12", "--json"]].concat()));
        assert_eq!(v["identical"], true, "{v}");
        assert_eq!(v["context"], 32);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quantize_writes_a_decoder_that_generate_runs() {
    let dir = std::env::temp_dir().join(format!("mote-quantize-decoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("fortunes.int8.npz").to_string_lossy().into_owned();
    let (model, calib) = (fortunes("model.bin"), fortunes("calib.txt"));
    let v = json(&mote(&[
        "quantize",
        &model,
        "--calib",
        &calib,
        "-o",
        &out,
        "--context",
        "48",
        "--calib-limit",
        "24",
        "--json",
    ]));
    assert_eq!(v["context"], 48);
    assert_eq!(v["calibration_sequences"], 24);
    // Stated tolerances for our model: int8 logits within 20 dB of float, the same greedy token at 80% of positions.
    assert!(v["logits_sqnr_db"].as_f64().unwrap() > 20.0, "{v}");
    assert!(v["top1_agreement"].as_f64().unwrap() > 0.8, "{v}");
    let tok = fortunes("tokenizer.bin");
    let base = ["generate", out.as_str(), "--tokenizer", tok.as_str(), "--board", "stm32l4r5"];
    let e = mote(&[&base[..], &["--prompt", "x", "--context", "64"]].concat());
    assert_error(&e, &["quantized for a context of 48", "--context 64"]);
    if emulation_available("cortex-m4") {
        let v = json(&mote(&[&base[..], &["--prompt", "The best way to", "-n", "12", "--json"]].concat()));
        assert_eq!(v["identical"], true, "{v}");
        assert_eq!(v["cache_bytes"], 2 * 8 * 48 * 64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_a_clear_error() {
    let (model, calib) = (fortunes("model.bin"), fortunes("calib.txt"));
    let base = ["generate", model.as_str(), "--board", "stm32l4r5", "--calib", calib.as_str()];
    let run = |extra: &[&str]| mote(&[&base[..], extra].concat());
    assert_error(
        &run(&["--prompt", "Hello", "-n", "40", "--context", "16"]),
        &["needs", "more than the context of 16"],
    );
    assert_error(&run(&["--prompt-ids", "1,9999"]), &["token 9999 is outside the vocabulary of 512"]);
    assert_error(&run(&[]), &["--prompt TEXT or --prompt-ids"]);
    let no_calib = mote(&["generate", &model, "--board", "stm32l4r5", "--prompt", "x"]);
    assert_error(&no_calib, &["--calib TEXT is needed"]);
    assert_error(&run(&["--prompt", "x", "--temperature=-1"]), &["--temperature -1"]);
    // A checkpoint whose header disagrees with its size.
    let dir = std::env::temp_dir().join(format!("mote-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.truncate(bytes.len() - 100);
    let cut = write(&dir, "model.bin", &bytes);
    let out = mote(&["generate", &cut, "--board", "stm32l4r5", "--calib", &calib, "--prompt", "x"]);
    assert_error(&out, &["model.bin", "the header implies", "bytes"]);
    let _ = std::fs::remove_dir_all(&dir);
}
