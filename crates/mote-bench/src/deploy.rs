//! The deployment table: every example and peer model on every reference board, through the real
//! `mote` command (`quantize` for float models, then `deploy --json` on QEMU), bit-exact checked.
use crate::quant::{noisy_samples, repo_root};
use anyhow::{bail, Context, Result};
use mote_core::Tensor;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Boards of the table: one per core family.
const BOARDS: [&str; 4] = ["stm32l4r5", "stm32f746", "corstone-300", "esp32c3"];

/// A model of the table and how to get its int8 form.
struct Case {
    name: &'static str,
    /// A peer model (path below the peer-models folder) or one of ours (model and inputs below `examples/`).
    source: Source,
    /// Float model that `mote quantize` turns into int8 first.
    float: bool,
    /// `--input-type` arguments (Deeploy graphs with unsigned inputs).
    input_types: &'static [&'static str],
}

/// Where a case's model comes from.
enum Source {
    Example(&'static str, &'static str),
    Peer(&'static str),
}

const CASES: [Case; 10] = [
    Case {
        name: "digits_encoder (ours, mote quantize)",
        source: Source::Example("digits/digits_encoder.int8.onnx", "digits/digits_encoder.inputs.npz"),
        float: false,
        input_types: &[],
    },
    Case {
        name: "digits_encoder (ours, onnxruntime QDQ)",
        source: Source::Example("digits/digits_encoder.ort_qdq.onnx", "digits/digits_encoder.inputs.npz"),
        float: false,
        input_types: &[],
    },
    Case {
        name: "kws_encoder (torch.onnx.export, onnxruntime QDQ)",
        source: Source::Example(
            "torch-encoder/kws_encoder_op17.ort_qdq.onnx",
            "torch-encoder/kws_encoder_op17.inputs.npz",
        ),
        float: false,
        input_types: &[],
    },
    Case {
        name: "CCT_1_16_16_8 (FP32 → mote quantize)",
        source: Source::Peer("Models/CCT/FP32/CCT_1_16_16_8"),
        float: true,
        input_types: &[],
    },
    Case {
        name: "TinyViT Demo (FP32 → mote quantize)",
        source: Source::Peer("Models/TinyViT/Demo"),
        float: true,
        input_types: &[],
    },
    Case {
        name: "microLlama1 FP32 step (→ mote quantize)",
        source: Source::Peer("Models/microLlama/FP32/microLlama1"),
        float: true,
        input_types: &[],
    },
    Case {
        name: "Transformer_DeepQuant (fake-quant → mote quantize)",
        source: Source::Peer("Models/Transformer_DeepQuant"),
        float: true,
        input_types: &[],
    },
    Case {
        name: "EEGFormer (Deeploy int8)",
        source: Source::Peer("Models/EEGFormer"),
        float: false,
        input_types: &["input=u8"],
    },
    Case { name: "ICCT (Deeploy int8)", source: Source::Peer("Models/CCT/Int/ICCT"), float: false, input_types: &[] },
    Case {
        name: "microLlama1 INT8 step (Deeploy)",
        source: Source::Peer("Models/microLlama/INT8/microLlama1"),
        float: false,
        input_types: &[],
    },
];

pub fn run(cmd: &mut Command) -> Result<(bool, String, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A peer test case's files as `mote` reads them: the model, its shipped inputs (one array per graph input, named
/// as the inputs) and, for a float model, calibration samples (`None` for an integer one).
pub struct PeerFiles {
    pub model: PathBuf,
    pub inputs: PathBuf,
    pub calib: Option<PathBuf>,
}

/// Writes the inputs of peer case `rel` into `work` and, when `float`, its calibration samples: 32 noisy variants of
/// the shipped input, seeded by `name` (as in docs/quantization.md).
pub fn peer_files(name: &str, rel: &str, float: bool, peers: &Path, work: &Path) -> Result<PeerFiles> {
    let dir = peers.join(rel);
    let model = dir.join("network.onnx");
    let g = mote_onnx::load(&model, &Default::default())?;
    let shipped: Vec<Tensor> =
        mote_core::npz::read(dir.join("inputs.npz"))?.into_iter().take(g.inputs.len()).map(|(_, t)| t).collect();
    let names: Vec<String> = g.inputs.iter().map(|&i| g.values[i].name.clone()).collect();
    let tag = rel.replace('/', "_");
    let inputs = work.join(format!("{tag}.inputs.npz"));
    mote_core::npz::write(&inputs, &names.iter().cloned().zip(shipped.iter().cloned()).collect::<Vec<_>>())?;
    if !float {
        return Ok(PeerFiles { model, inputs, calib: None });
    }
    let samples = noisy_samples(&shipped, 32, name);
    let stacked: Vec<(String, Tensor)> = names
        .into_iter()
        .enumerate()
        .map(|(k, n)| Ok((n, concat0(&samples.iter().map(|s| s[k].clone()).collect::<Vec<_>>())?)))
        .collect::<Result<_>>()?;
    let calib = work.join(format!("{tag}.calib.npz"));
    mote_core::npz::write(&calib, &stacked)?;
    Ok(PeerFiles { model, inputs, calib: Some(calib) })
}

/// The int8 model and its inputs for one case, written into `work`.
fn prepare(case: &Case, peers: &Path, mote: &Path, work: &Path) -> Result<(PathBuf, PathBuf)> {
    let rel = match case.source {
        Source::Example(model, inputs) => {
            let dir = repo_root().join("examples");
            return Ok((dir.join(model), dir.join(inputs)));
        }
        Source::Peer(rel) => rel,
    };
    let files = peer_files(case.name, rel, case.float, peers, work)?;
    let Some(calib) = &files.calib else {
        return Ok((files.model, files.inputs));
    };
    let q = work.join(format!("{}.int8.onnx", rel.replace('/', "_")));
    let (ok, _, err) =
        run(Command::new(mote).arg("quantize").arg(&files.model).arg("--calib").arg(calib).arg("-o").arg(&q))?;
    if !ok {
        bail!("mote quantize {}: {err}", files.model.display());
    }
    Ok((q, files.inputs))
}

/// Stacks batch-1 tensors (or per-sample tensors) along axis 0.
fn concat0(parts: &[Tensor]) -> Result<Tensor> {
    let arrays: Vec<ndarray::ArrayD<f32>> = parts.iter().map(|t| t.to_f32()).collect();
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    Ok(Tensor::F32(ndarray::concatenate(ndarray::Axis(0), &views)?))
}

/// Writes `docs/deploy.md` and `bench/deploy.jsonl`.
pub fn run_table(peers: &Path, mote: &Path) -> Result<()> {
    let root = repo_root();
    let work = root.join("target/mote-bench");
    std::fs::create_dir_all(&work)?;
    let mut md = String::new();
    let mut jsonl = String::new();
    writeln!(md, "# Deployment: models × boards\n")?;
    writeln!(
        md,
        "Regenerate with `cargo build --release -p mote-cli && cargo run --release -p mote-bench -- deploy` (writes this \
         file and `bench/deploy.jsonl`). Every row is `mote deploy --json` on QEMU with the case's shipped input, \
         bit-exact against the host reference (rows that are not say so). Arena: bytes of the chosen plan (ours), \
         TFLite Micro's greedy-by-size, and the lower bound (largest live set). Flash: text + rodata + data of the \
         firmware ELF (model code, weights, the embedded input, the runtime). Instructions: one inference, counted \
         exactly by QEMU; latency assumes one instruction per cycle at the board's clock (QEMU has no pipeline, \
         caches or wait states). Kernels: the board core's own (linear, attention and convolution layers on weights \
         packed offline for `SMLAD` assembly on Cortex-M4/M7, Helium on Cortex-M55 and a 4×4-tile scalar kernel on \
         RV32IMC, with plain weights where the packed ones would crowd the flash), beside the same deployment with `--portable-kernels` (plain weights, \
         the portable reference kernels).\n"
    )?;
    writeln!(md, "| model | board (core, clock) | bit-exact | arena ours / greedy / lower bound (B) | flash (B) | instructions | MACs/instr | est. latency | portable kernels: instructions (flash B) | speed-up |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for case in &CASES {
        let (model, inputs) = prepare(case, peers, mote, &work)?;
        for board in BOARDS {
            let mut cmd = Command::new(mote);
            cmd.arg("deploy")
                .arg(&model)
                .args(["--board", board, "--json", "--timeout", "600"])
                .arg("--inputs")
                .arg(&inputs);
            for t in case.input_types {
                cmd.args(["--input-type", t]);
            }
            let (ok, out, err) = run(&mut cmd)?;
            // The same deployment on the portable kernels, for the speed-up column.
            let portable = run(cmd.arg("--portable-kernels"))?;
            let portable: Option<serde_json::Value> = serde_json::from_str(portable.1.trim()).ok();
            let j: serde_json::Value = match serde_json::from_str(out.trim()) {
                Ok(j) => j,
                Err(_) => {
                    let why = err.trim().lines().next().unwrap_or("").replace('|', "/");
                    writeln!(md, "| {} | {board} | — | {why} | | | | | | |", case.name)?;
                    continue;
                }
            };
            let n = |p: &[&str]| -> u64 { p.iter().fold(&j, |v, k| &v[*k]).as_u64().unwrap_or(0) };
            let instr = n(&["instructions", "inference"]);
            let macs = n(&["instructions", "macs"]);
            let secs = j["latency"]["seconds"].as_f64().unwrap_or(0.0);
            let portable_exact = portable.as_ref().is_none_or(|p| p["bit_exact"] == true);
            let exact = if ok && j["bit_exact"] == true && portable_exact { "yes" } else { "**NO**" };
            let pn = |p: &[&str]| portable.as_ref().and_then(|v| p.iter().fold(v, |v, k| &v[*k]).as_u64());
            let (p_instr, p_flash) = (pn(&["instructions", "inference"]), pn(&["flash", "bytes"]));
            let portable_cell = match (p_instr, p_flash) {
                (Some(i), Some(f)) => format!("{i} ({f}) | {:.2}× |", i as f64 / instr.max(1) as f64),
                _ => "— | |".to_string(),
            };
            writeln!(
                md,
                "| {} | {board} ({}, {} MHz) | {exact} | {} / {} / {} | {} | {} | {:.3} | {:.2} ms | {portable_cell}",
                case.name,
                j["board"]["core"].as_str().unwrap_or(""),
                n(&["board", "clock_hz"]) / 1_000_000,
                n(&["arena", "best"]),
                n(&["arena", "greedy"]),
                n(&["arena", "lower_bound"]),
                n(&["flash", "bytes"]),
                instr,
                macs as f64 / instr.max(1) as f64,
                secs * 1e3
            )?;
            let row = serde_json::json!({
                "model": case.name, "board": board, "core": j["board"]["core"], "bit_exact": j["bit_exact"],
                "arena_bytes": n(&["arena", "best"]), "arena_greedy_bytes": n(&["arena", "greedy"]),
                "arena_lower_bound": n(&["arena", "lower_bound"]), "flash_bytes": n(&["flash", "bytes"]),
                "instructions": instr, "macs": macs, "latency_s": secs,
                "portable_instructions": p_instr, "portable_flash_bytes": p_flash,
            });
            writeln!(jsonl, "{row}")?;
            eprintln!("{} on {board}: {instr} instructions", case.name);
        }
    }
    std::fs::write(root.join("docs/deploy.md"), &md)?;
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(root.join("bench/deploy.jsonl"), &jsonl)?;
    print!("{md}");
    Ok(())
}
