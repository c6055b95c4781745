//! `mote compile` and `mote deploy` end to end on our digits transformer (quantized once per test process with
//! `mote quantize`): bit-exact on Cortex-M4, M7, M55 and RV32IMC boards with sane, deterministic numbers; the
//! crate and C header `mote compile` writes; and clean errors (exit 2) for an unknown board, a malformed board
//! file, a model too large for a board, a missing QEMU or Rust target, and an emulation that times out.
//!
//! Without QEMU, a Rust target or the plugin's build tools the emulation tests print `SKIP: <reason>` and pass,
//! except when `CI` is set, where they fail.
mod common;

use common::{assert_error, emulation_available, example, json, mote, stdout};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The digits encoder quantized by `mote quantize` (min/max), made once per test process (written under a
/// temporary name, then renamed: another test process may be reading the previous, identical file).
fn digits_int8() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("digits.int8.onnx.{}", std::process::id()));
        let calib = example("digits", "calib.npz");
        let t = tmp.to_str().unwrap();
        stdout(&mote(&["quantize", &example("digits", "digits_encoder.onnx"), "--calib", &calib, "-o", t]));
        let q = dir.join("digits.int8.onnx");
        std::fs::rename(&tmp, &q).unwrap();
        q.to_string_lossy().into_owned()
    })
}

/// Runs `mote` with extra environment variables.
fn mote_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mote"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn mote")
}

/// `mote deploy --json` on `board`, twice: bit-exact, sane numbers, identical instruction counts.
fn deploy_bit_exact(board: &str, core: &str, clock_hz: u64) -> serde_json::Value {
    let model = digits_int8();
    let first = json(&mote(&["deploy", model, "--board", board, "--json"]));
    let second = json(&mote(&["deploy", model, "--board", board, "--json"]));
    assert_eq!(first["bit_exact"], true, "{first}");
    assert_eq!(first["board"]["core"], core);
    assert_eq!(first["board"]["clock_hz"], clock_hz);
    let n = |v: &serde_json::Value, k: &str| v.as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let arena = &first["arena"];
    let (best, greedy, lb) = (n(&arena["best"], "best"), n(&arena["greedy"], "greedy"), n(&arena["lower_bound"], "lb"));
    assert!(lb <= best && best <= greedy && best > 0, "{arena}");
    let inference = n(&first["instructions"]["inference"], "inference");
    assert!(inference > 0 && inference < n(&first["instructions"]["total_run"], "total"), "{first}");
    assert_eq!(first["instructions"], second["instructions"], "{board}: instruction counts differ between runs");
    assert_eq!(first["layers"], second["layers"]);
    let layers = first["layers"].as_array().unwrap();
    assert!(layers.len() > 10, "{first}");
    assert!(layers.iter().all(|l| n(&l["instructions"], "layer") > 0), "{first}");
    assert_eq!(layers.iter().map(|l| n(&l["instructions"], "layer")).sum::<u64>(), inference);
    assert_eq!(layers.iter().map(|l| n(&l["macs"], "macs")).sum::<u64>(), 141_632, "the digits model's MACs");
    let flash = &first["flash"];
    assert!(n(&flash["bytes"], "flash") > n(&flash["weights"], "weights"), "{flash}");
    assert!(n(&flash["bytes"], "flash") <= n(&flash["limit"], "limit"));
    let sram = &first["sram"];
    assert!(n(&sram["static"], "static") >= best, "the arena is a static: {sram}");
    let stack = n(&sram["stack_used"], "stack");
    assert!(stack > 0 && stack < n(&sram["stack_reserved"], "reserved"), "{sram}");
    let latency = first["latency"]["seconds"].as_f64().unwrap();
    assert!((latency - inference as f64 / clock_hz as f64).abs() < 1e-12, "{first}");
    assert_eq!(first["outputs"][0]["values"].as_array().unwrap().len(), 10);
    eprintln!(
        "{board}: arena {best} B (greedy {greedy}, lower bound {lb}), flash {} B, static RAM {} B, stack {stack} B, \
         {inference} instructions, {:.3} ms",
        flash["bytes"],
        sram["static"],
        latency * 1e3
    );
    first
}

#[test]
fn deploy_cortex_m4_stm32l4r5() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let fast = deploy_bit_exact("stm32l4r5", "cortex-m4", 120_000_000);
    // The portable kernels compute the same integers, with several times the instructions of the SMLAD ones.
    let portable = json(&mote(&["deploy", digits_int8(), "--board", "stm32l4r5", "--json", "--portable-kernels"]));
    assert_eq!(portable["bit_exact"], true, "{portable}");
    assert_eq!(portable["outputs"], fast["outputs"]);
    let inference = |v: &serde_json::Value| v["instructions"]["inference"].as_u64().unwrap();
    assert!(3 * inference(&fast) < inference(&portable), "{} vs {}", inference(&fast), inference(&portable));
    // By default each MLP runs whole: blocks of token rows would save no arena here. In blocks of 2 rows
    // (`--mlp-rows 2`, four blocks per MLP), the same integers in no less arena.
    let blocks = json(&mote(&["deploy", digits_int8(), "--board", "stm32l4r5", "--json", "--mlp-rows", "2"]));
    assert_eq!((blocks["bit_exact"].as_bool(), &blocks["outputs"]), (Some(true), &fast["outputs"]));
    let linear =
        |v: &serde_json::Value| v["layers"].as_array().unwrap().iter().filter(|l| l["op"] == "QLinear").count();
    assert_eq!((linear(&fast), linear(&blocks)), (6, 2 + 2 * 2 * 4));
    let arena = |v: &serde_json::Value| v["arena"]["best"].as_u64().unwrap();
    assert!(arena(&blocks) >= arena(&fast), "{} < {}", arena(&blocks), arena(&fast));
}

#[test]
fn deploy_cortex_m7_stm32f746() {
    if !emulation_available("cortex-m7") {
        return;
    }
    deploy_bit_exact("stm32f746", "cortex-m7", 216_000_000);
}

#[test]
fn deploy_cortex_m55_corstone_300() {
    if !emulation_available("cortex-m55") {
        return;
    }
    deploy_bit_exact("corstone-300", "cortex-m55", 32_000_000);
}

#[test]
fn deploy_rv32imc_esp32c3() {
    if !emulation_available("rv32imc") {
        return;
    }
    deploy_bit_exact("esp32c3", "rv32imc", 160_000_000);
}

/// Real inputs from an npz, the text report and the HTML report.
#[test]
fn deploy_with_inputs_text_and_html_report() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().join("report");
    let inputs = example("digits", "digits_encoder.inputs.npz");
    // Layer by layer (`--attention layers`): the table shows the attention's own layers.
    let out = mote(&[
        "deploy",
        digits_int8(),
        "--board",
        "nrf52840",
        "--attention",
        "layers",
        "--inputs",
        &inputs,
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    for needle in [
        "on nrf52840 (cortex-m4 at 64 MHz, emulated on QEMU mps2-an386)",
        "outputs: bit-exact with the host reference (1 output(s), 10 int8 values)",
        "greedy-by-size",
        "lower bound",
        "of 1,048,576 B",
        "of 262,144 B",
        "stack high-water",
        "assuming 1 instruction per cycle",
        "MACs/inst",
        "QLinear",
        "QSoftmax",
    ] {
        assert!(text.contains(needle), "missing `{needle}`:\n{text}");
    }
    let html = std::fs::read_to_string(report_dir.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("class=\"peak\"") && html.contains("class=\"tensor\""));
    assert!(html.contains("/blocks.0/attn/Gemm_output_0/mhsa/probs"), "the layer table (the canonical softmax)");
    assert!(!html.contains("<script") && !html.contains("https://"), "self-contained");
}

#[test]
fn compile_writes_a_crate_and_c_header() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits-crate");
    let o = out.to_str().unwrap();
    let text = stdout(&mote(&["compile", digits_int8(), "--board", "stm32f746", "-o", o, "--c-abi"]));
    assert!(text.contains("crate `digits`") && text.contains("fits stm32f746"), "{text}");
    let cargo = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"digits\"") && cargo.contains("staticlib"), "{cargo}");
    let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
    assert!(lib.contains("#![no_std]") && lib.contains("pub fn run_marked"), "lib.rs");
    let header = std::fs::read_to_string(out.join("digits.h")).unwrap();
    for needle in
        ["#define MOTE_ARENA_BYTES ", "#define MOTE_INPUT0_LEN 64", "#define MOTE_OUTPUT0_LEN 10", "int32_t mote_run("]
    {
        assert!(header.contains(needle), "missing `{needle}`:\n{header}");
    }
    // The header is valid C (the C compiler is there wherever the emulation tests run: it builds the plugin).
    if let Ok(cc) = Command::new("cc")
        .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c"])
        .arg(out.join("digits.h"))
        .output()
    {
        assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    }
    c_program_matches_host(&out);
    // An existing directory is refused, and left as it was; --force replaces it.
    let again = mote(&["compile", digits_int8(), "--board", "stm32f746", "-o", o]);
    assert_error(&again, &["already exists", "--force"]);
    assert!(out.join("digits.h").exists());
    stdout(&mote(&["compile", digits_int8(), "--board", "stm32f746", "-o", o, "--force", "--name", "digits_plain"]));
    assert!(!out.join("digits.h").exists(), "replaced by a crate without --c-abi");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary directories left: {names:?}");
}

/// Builds the crate in `dir` as a host staticlib (feature `c-abi`), links a C program that includes the
/// generated header and calls `mote_run`, and checks its outputs against the host reference. Skipped (printed)
/// without a C compiler, except under CI.
fn c_program_matches_host(dir: &Path) {
    if Command::new("cc").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs a C compiler");
        eprintln!("SKIP: the C program test: no `cc`");
        return;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-tests/c-abi-target");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--features", "c-abi", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    // Device inputs: every int8 value in turn; the host reference must see exactly these after quantization.
    let q: Vec<i8> = (0..64).map(|i| (i * 7 - 100) as i8).collect();
    let values: Vec<String> = q.iter().map(|v| v.to_string()).collect();
    let main_c = format!(
        "#include <stdio.h>\n#include \"digits.h\"\n\
         static int8_t arena[MOTE_ARENA_BYTES] __attribute__((aligned(MOTE_ARENA_ALIGN)));\n\
         static const int8_t in0[MOTE_INPUT0_LEN] = {{{}}};\nstatic int8_t out0[MOTE_OUTPUT0_LEN];\n\
         int main(void) {{\n  const int8_t *inputs[MOTE_NUM_INPUTS] = {{in0}};\n  \
         int8_t *outputs[MOTE_NUM_OUTPUTS] = {{out0}};\n  int32_t r = mote_run(arena, inputs, outputs);\n  \
         printf(\"%d\", (int)r);\n  for (int i = 0; i < MOTE_OUTPUT0_LEN; i++) printf(\" %d\", out0[i]);\n  \
         printf(\"\\n\");\n  return r == MOTE_OK ? 0 : 1;\n}}\n",
        values.join(", ")
    );
    let c_dir = tempfile::tempdir().unwrap();
    std::fs::write(c_dir.path().join("main.c"), main_c).unwrap();
    let exe = c_dir.path().join("main");
    // --gc-sections: the host's precompiled `core` references the unwinder's personality routine from sections
    // nothing here uses (bare-metal targets have no such reference).
    let cc = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wl,--gc-sections", "-I"])
        .arg(dir)
        .arg(c_dir.path().join("main.c"))
        .arg(target.join("release/libdigits.a"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let run = Command::new(&exe).output().unwrap();
    let printed = String::from_utf8_lossy(&run.stdout).trim().to_string();
    assert!(run.status.success(), "{printed}");

    let g = mote_onnx::load(Path::new(digits_int8()), &Default::default()).unwrap();
    let opts = mote_codegen::CompileOptions::new("digits", "/unused");
    let io = &mote_codegen::compile(&g, &opts).unwrap().inputs[0];
    let x: Vec<f32> = q.iter().map(|&v| io.scale * (i32::from(v) - io.zero_point) as f32).collect();
    let x = mote_core::Tensor::from_vec(&[1, 8, 8], x).unwrap();
    let (ins, outs) = mote_codegen::host_reference(&g, vec![x]).unwrap();
    assert_eq!(ins[0], q, "the float inputs quantize back to the chosen int8 values");
    let expected: Vec<String> = outs[0].iter().map(|v| v.to_string()).collect();
    assert_eq!(printed, format!("0 {}", expected.join(" ")), "C program vs host reference");
}

#[test]
fn unknown_board_lists_the_known_ones() {
    let out = mote(&["deploy", digits_int8(), "--board", "stm32f999"]);
    assert_error(
        &out,
        &["unknown board `stm32f999`", "corstone-300", "esp32c3", "nrf52840", "stm32f746", "stm32h743", "stm32l4r5"],
    );
}

#[test]
fn malformed_board_file_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"bad\"\ncore = \"cortex-m9\"\nsram_bytes = 1\nflash_bytes = 1\nclock_hz = 1\n")
        .unwrap();
    let p = path.to_str().unwrap();
    assert_error(
        &mote(&["compile", digits_int8(), "--board", p, "-o", "/nonexistent/x"]),
        &[p, "field `core`", "cortex-m9"],
    );
    std::fs::write(&path, "name = \"bad\"\ncore = \"cortex-m4\"\nsram = 1\n").unwrap();
    assert_error(&mote(&["deploy", digits_int8(), "--board", p]), &[p, "unknown field `sram`"]);
}

/// A real model on a board whose SRAM and flash are too small, found through $MOTE_BOARDS: refused before
/// anything is built or written, with the numbers and the largest tensors.
#[test]
fn model_too_large_for_the_board() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tiny-mcu.toml"),
        "# A made-up part far too small for the digits model.\nname = \"tiny-mcu\"\ncore = \"cortex-m4\"\n\
         sram_bytes = 8_192\nflash_bytes = 40_000\nclock_hz = 48_000_000\n",
    )
    .unwrap();
    let boards = dir.path().to_str().unwrap();
    let out_dir = dir.path().join("out");
    let o = out_dir.to_str().unwrap();
    let env = [("MOTE_BOARDS", boards)];
    let out = mote_env(&["compile", digits_int8(), "--board", "tiny-mcu", "-o", o], &env);
    let err = assert_error(
        &out,
        &[
            "the model does not fit board `tiny-mcu`",
            "tiny-mcu.toml",
            "SRAM needs",
            "stack reserve 16,384) but the board has 8,192 B",
            "largest arena tensors: `",
            "flash needs",
            // Plain weights: the 16-bit ones packed for SMLAD (Dsp16) would crowd this flash even more.
            "weights 23,960",
            "but the board has 40,000 B",
        ],
    );
    assert!(!out_dir.exists(), "nothing written: {err}");
    // deploy refuses it the same way, before building.
    let out = mote_env(&["deploy", digits_int8(), "--board", "tiny-mcu", "--json"], &env);
    assert_error(&out, &["the model does not fit board `tiny-mcu`"]);
    assert!(out.stdout.is_empty());
}

/// QEMU missing: simulated with a PATH that has no emulator (the check runs before any build).
#[test]
fn missing_qemu_says_how_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let out = mote_env(&["deploy", digits_int8(), "--board", "esp32c3"], &[("PATH", empty.path().to_str().unwrap())]);
    assert_error(&out, &["qemu-system-riscv32 not found on PATH", "apt-get install", "qemu-system-misc"]);
}

/// A Rust target missing: simulated with a `rustc` (through $RUSTC, as cargo would use it) whose sysroot has no
/// targets; the check runs before any build.
#[test]
fn missing_rust_target_says_how_to_install() {
    if !emulation_available("cortex-m55") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sysroot = dir.path().join("sysroot");
    std::fs::create_dir_all(sysroot.join("lib/rustlib")).unwrap();
    let rustc = dir.path().join("rustc");
    std::fs::write(&rustc, format!("#!/bin/sh\necho {}\n", sysroot.display())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = mote_env(&["deploy", digits_int8(), "--board", "corstone-300"], &[("RUSTC", rustc.to_str().unwrap())]);
    assert_error(
        &out,
        &["Rust target thumbv8m.main-none-eabihf is not installed", "rustup target add thumbv8m.main-none-eabihf"],
    );
}

/// An emulation that does not finish in time is stopped with a message (a real run, under a limit QEMU cannot
/// meet: it does not even start within a millisecond).
#[test]
fn emulation_timeout_is_a_clear_error() {
    if !emulation_available("cortex-m4") {
        return;
    }
    let out = mote(&["deploy", digits_int8(), "--board", "stm32l4r5", "--timeout", "0.001"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("error: firmware on mps2-an386: emulation timed out after 0.001 s"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_error(&mote(&["deploy", digits_int8(), "--board", "stm32l4r5", "--timeout", "0"]), &["--timeout 0"]);
}

/// A Deeploy exact-integer graph (EEGFormer, whose input Deeploy feeds as uint8) deploys bit-exact too, with
/// its golden input. Needs the peer models (`../shared/peer-models` or `$MOTE_PEER_MODELS`).
#[test]
fn deploy_exact_integer_peer_model() {
    let peers = std::env::var_os("MOTE_PEER_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peer-models"));
    let dir = peers.join("Models/EEGFormer");
    if !dir.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI: peer models missing at {}", peers.display());
        eprintln!("SKIP: peer models not found at {}", peers.display());
        return;
    }
    if !emulation_available("cortex-m55") {
        return;
    }
    let model = dir.join("network.onnx");
    let inputs = dir.join("inputs.npz");
    let args =
        ["deploy", model.to_str().unwrap(), "--board", "corstone-300", "--inputs", inputs.to_str().unwrap(), "--json"];
    let report = json(&mote(&[&args[..], &["--input-type", "input=u8"]].concat()));
    assert_eq!(report["bit_exact"], true, "{report}");
    assert!(report["instructions"]["inference"].as_u64().unwrap() > 0);
    // Its attention runs head by head: one head's 66 x 66 scores alive, not all 8 (38,016 B layer by layer).
    assert_eq!(report["arena"]["best"], 8_592, "{report}");
    // Without the type, the uint8 input data (0..254) does not fit the default int8 input: a clean error.
    assert_error(&mote(&args), &["outside its device type i8", "--input-type NAME=u8"]);
}

/// onnxruntime's `quantize_static` QDQ models (which reshape the float input before quantizing it) deploy as they
/// are: the quantization moves to the model edge, and the board computes what the host's int8 graph does. Their
/// attention blocks (one input projection split three ways, queries and keys scaled by tables) run as the fused
/// kernel; layer by layer they give the same outputs.
#[test]
fn onnxruntime_qdq_models_deploy_bit_exactly() {
    if !emulation_available("cortex-m4") {
        return;
    }
    for (dir, stem, blocks) in [("digits", "digits_encoder", 2), ("torch-encoder", "kws_encoder_op17", 1)] {
        let (model, inputs) =
            (example(dir, &format!("{stem}.ort_qdq.onnx")), example(dir, &format!("{stem}.inputs.npz")));
        let args = ["deploy", &model, "--board", "stm32l4r5", "--inputs", &inputs, "--json"];
        let fused = json(&mote(&args));
        assert_eq!(fused["bit_exact"], true, "{stem}: {fused}");
        let ops =
            |v: &serde_json::Value, op: &str| v["layers"].as_array().unwrap().iter().filter(|l| l["op"] == op).count();
        assert_eq!((ops(&fused, "QAttention"), ops(&fused, "QSoftmax")), (blocks, 0), "{stem}: {fused}");
        let layers = json(&mote(&[&args[..], &["--attention", "layers"]].concat()));
        assert_eq!((ops(&layers, "QAttention"), ops(&layers, "QSoftmax")), (0, blocks), "{stem}: {layers}");
        assert_eq!(fused["outputs"], layers["outputs"], "{stem}");
    }
}
