//! The attention ablation (issue 5): each example attention block (`examples/attention`) and the float peer models
//! with attention (CCT, TinyViT) on Cortex-M4 and M7, as
//! `naive` (layer by layer, the whole `H·S²` attention map), `fwsa` (Fused-Weight Self-Attention, layer by layer),
//! `dft` (one fused kernel, depth-first: head/row blocks), `all` (FWSA as `--fwsa auto` decides, fused kernel, row
//! streaming), and the same block written with `embedded-nn` (the Rust port of CMSIS-NN's kernels).
//!
//! Every mote row is `mote quantize --fwsa ...` then `mote deploy --json --attention ...` on QEMU: bit-exact against
//! the host reference of the same variant, exact instruction counts, the planned arena. The accuracy effect of FWSA
//! is the output's SQNR against the float model that `mote quantize` reports.
use crate::attention_enn::{self, EnnRow};
use crate::deploy::{peer_files, run};
use crate::quant::{peer_dir, repo_root};
use anyhow::{bail, ensure, Context, Result};
use mote_deploy::group;
use mote_qemu::Core;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a model of the ablation comes from.
#[derive(Clone, Copy)]
enum Source {
    /// `examples/attention/<stem>`: the model, its calibration samples and reference input.
    Example(&'static str),
    /// A float peer model (`<peer-models>/<path>`), calibrated on noisy copies of its shipped input as in
    /// docs/deploy.md.
    Peer(&'static str),
    /// An integer peer model (`<peer-models>/<path>`, Deeploy's exact-integer graph) deployed as it is, with its
    /// shipped input: no quantization, so no FWSA variant.
    IntegerPeer(&'static str),
}

/// A model of the ablation: its name in the table, where it comes from, and its `firmware/attention-enn` model
/// (the embedded-nn rows) if it has one.
struct Model {
    name: &'static str,
    source: Source,
    enn: Option<&'static str>,
}

const MODELS: [Model; 10] = [
    Model { name: "eegformer-mhsa", source: Source::Example("eegformer_mhsa"), enn: Some("eegformer_mhsa") },
    Model { name: "ecgformer-mhsa", source: Source::Example("ecgformer_mhsa"), enn: Some("ecgformer_mhsa") },
    Model { name: "microllama-prefill-16", source: Source::Example("llama_prefill_s16"), enn: None },
    Model { name: "microllama-prefill-32", source: Source::Example("llama_prefill_s32"), enn: None },
    Model { name: "microllama-prefill-64", source: Source::Example("llama_prefill_s64"), enn: None },
    Model { name: "microllama-prefill-128", source: Source::Example("llama_prefill_s128"), enn: None },
    Model { name: "CCT_1_16_16_8", source: Source::Peer("Models/CCT/FP32/CCT_1_16_16_8"), enn: None },
    Model { name: "CCT_1_16_16_64", source: Source::Peer("Models/CCT/FP32/CCT_1_16_16_64"), enn: None },
    Model { name: "TinyViT-Demo", source: Source::Peer("Models/TinyViT/Demo"), enn: None },
    Model { name: "ICCT (Deeploy int8)", source: Source::IntegerPeer("Models/CCT/Int/ICCT"), enn: None },
];

/// A model's float ONNX, calibration samples and input, as `mote quantize` / `mote deploy` read them.
struct Files {
    model: PathBuf,
    /// Calibration samples (`None` for an integer model).
    calib: Option<PathBuf>,
    inputs: PathBuf,
    /// Int8 input bytes (all inputs' elements).
    input_bytes: u64,
}

impl Files {
    /// The files of `m`, written into `work` for a peer model; `None` when the peer models are absent.
    fn of(m: &Model, peers: &Path, work: &Path) -> Result<Option<Self>> {
        let (model, calib, inputs) = match m.source {
            Source::Example(stem) => {
                let dir = repo_root().join("examples/attention");
                let f = |ext: &str| dir.join(format!("{stem}.{ext}"));
                (f("onnx"), Some(f("calib.npz")), f("inputs.npz"))
            }
            Source::Peer(rel) if peers.join(rel).is_dir() => {
                let f = peer_files(m.name, rel, true, peers, work)?;
                (f.model, Some(f.calib.context("a float peer model's calibration")?), f.inputs)
            }
            Source::IntegerPeer(rel) if peers.join(rel).is_dir() => {
                (peers.join(rel).join("network.onnx"), None, peers.join(rel).join("inputs.npz"))
            }
            Source::Peer(rel) | Source::IntegerPeer(rel) => {
                eprintln!("{}: skipped, {} not found", m.name, peers.join(rel).display());
                return Ok(None);
            }
        };
        let input_bytes =
            mote_core::npz::read(&inputs)?.iter().map(|(_, t)| t.shape().iter().product::<usize>() as u64).sum();
        Ok(Some(Files { model, calib, inputs, input_bytes }))
    }
}

/// The boards: (board, core).
const BOARDS: [(&str, Core); 2] = [("stm32l4r5", Core::CortexM4), ("stm32f746", Core::CortexM7)];

/// The mote variants: (name, `--fwsa`, `--attention`).
const VARIANTS: [(&str, &str, &str); 4] =
    [("naive", "off", "layers"), ("fwsa", "on", "layers"), ("dft", "off", "fused"), ("all", "auto", "fused")];

/// The CMSIS-NN anchor for `eegformer-mhsa`: instructions on M4 and M7, activation peak in bytes.
const CMSIS_NN: (u64, u64, u64) = (46_358_089, 46_795_158, 125_712);

/// The targets for `eegformer-mhsa`, variant `all`: instructions on M4, arena bytes.
const TARGET: (u64, u64) = (5_800_000, 15_700);

/// One measured row.
struct Row {
    model: &'static str,
    /// Why the variant did not run (e.g. its arena does not fit the board); the numbers are then 0.
    error: Option<String>,
    board: &'static str,
    variant: String,
    arena: u64,
    /// Activation bytes live at the peak including the int8 input, which mote reads in place from the caller's
    /// buffer (outside its arena) and embedded-nn keeps in its arena.
    peak: u64,
    flash: u64,
    instructions: u64,
    bit_exact: bool,
    fwsa: bool,
    sqnr_db: Option<f64>,
    schedule: String,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "model": self.model,
            "board": self.board,
            "variant": self.variant,
            "arena_bytes": self.arena,
            "peak_bytes_with_input": self.peak,
            "flash_bytes": self.flash,
            "instructions": self.instructions,
            "bit_exact": self.bit_exact,
            "fwsa": self.fwsa,
            "output_sqnr_db": self.sqnr_db,
            "schedule": self.schedule,
            "error": self.error,
        })
    }
}

/// A quantized block: its path, whether FWSA was applied, the output SQNR against float.
struct Quantized {
    path: PathBuf,
    fwsa: bool,
    /// Output SQNR against the float model (`None` for an integer model).
    sqnr_db: Option<f64>,
}

/// `mote quantize --fwsa <fwsa>` of model `m` into `work`.
fn quantize(mote: &Path, m: &Model, files: &Files, fwsa: &str, work: &Path) -> Result<Quantized> {
    let path = work.join(format!("{}.fwsa-{fwsa}.int8.onnx", m.name));
    let (ok, out, err) = run(Command::new(mote)
        .arg("quantize")
        .arg(&files.model)
        .arg("--calib")
        .arg(files.calib.as_ref().context("a float model's calibration samples")?)
        .args(["--fwsa", fwsa, "-o"])
        .arg(&path))?;
    ensure!(ok, "mote quantize {} --fwsa {fwsa}: {err}", m.name);
    let text = format!("{out}\n{err}");
    // The per-tensor report ends with `output <name>  <SQNR dB>`.
    let sqnr_db = text
        .lines()
        .filter_map(|l| l.strip_prefix("output "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .next()
        .with_context(|| format!("no output SQNR in `mote quantize` of {}:\n{text}", m.name))?;
    let fwsa = match fwsa {
        "on" => true,
        "off" => false,
        _ => {
            // `auto` wrote the same model as `on` or as `off`.
            let bytes = std::fs::read(&path)?;
            bytes == std::fs::read(work.join(format!("{}.fwsa-on.int8.onnx", m.name)))?
        }
    };
    Ok(Quantized { path, fwsa, sqnr_db: Some(sqnr_db) })
}

/// `mote deploy --json` of a quantized model: its report and attention schedule, or why it did not deploy.
fn deploy(mote: &Path, q: &Quantized, files: &Files, board: &str, attention: &str) -> Result<(Value, String)> {
    let (_, out, err) = run(Command::new(mote)
        .arg("deploy")
        .arg(&q.path)
        .args(["--board", board, "--json", "--timeout", "600", "--attention", attention, "--inputs"])
        .arg(&files.inputs))?;
    let v: Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        // A model that does not fit the board is a result of the table (the naive map at long sequences).
        Err(_) if err.contains("does not fit board") => {
            // `error: the model does not fit board `B` (path): SRAM needs … B (…) but the board has … B; largest …`
            let why = err.split_once("): ").map_or(err.as_str(), |(_, w)| w);
            json!({ "error": format!("does not fit: {}", why.split("; largest").next().unwrap_or(why).trim()) })
        }
        Err(_) => bail!("mote deploy {} on {board}: {err}", q.path.display()),
    };
    let schedule = err
        .lines()
        .find_map(|l| l.strip_prefix("attention ").and_then(|l| l.split("; ").nth(1)))
        .map_or_else(|| "layer by layer".to_string(), |s| s.to_string());
    Ok((v, schedule))
}

fn field(v: &Value, path: &[&str]) -> Result<u64> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).with_context(|| format!("no {path:?} in {v}"))
}

/// Measures every row (slow: a firmware build and run per model, board and variant, plus embedded-nn's).
fn measure(mote: &Path, peers: &Path, work: &Path) -> Result<(Vec<Row>, Vec<EnnRow>)> {
    let mut rows = Vec::new();
    for m in &MODELS {
        let Some(files) = Files::of(m, peers, work)? else { continue };
        let mut quantized = Vec::new();
        if files.calib.is_none() {
            // An integer model runs as it is: without FWSA (`off`, and `auto` can only keep it).
            for fwsa in ["off", "auto"] {
                quantized.push((fwsa, Quantized { path: files.model.clone(), fwsa: false, sqnr_db: None }));
            }
        } else {
            for fwsa in ["on", "off", "auto"] {
                quantized.push((fwsa, quantize(mote, m, &files, fwsa, work)?));
            }
        }
        for (board, _) in BOARDS {
            for (variant, fwsa, attention) in VARIANTS {
                let Some((_, q)) = quantized.iter().find(|(f, _)| *f == fwsa) else { continue };
                let (v, schedule) = deploy(mote, q, &files, board, attention)?;
                let mut row = Row {
                    model: m.name,
                    error: v.get("error").and_then(Value::as_str).map(str::to_string),
                    board,
                    variant: variant.to_string(),
                    arena: 0,
                    peak: 0,
                    flash: 0,
                    instructions: 0,
                    bit_exact: false,
                    fwsa: q.fwsa,
                    sqnr_db: q.sqnr_db,
                    schedule,
                };
                if row.error.is_none() {
                    row.arena = field(&v, &["arena", "best"])?;
                    row.peak = row.arena + files.input_bytes;
                    row.flash = field(&v, &["flash", "bytes"])?;
                    row.instructions = field(&v, &["instructions", "inference"])?;
                    row.bit_exact = v.get("bit_exact").and_then(Value::as_bool) == Some(true);
                }
                eprintln!("{} {board} {variant}: {} instructions", m.name, row.instructions);
                rows.push(row);
            }
        }
    }
    let enn = attention_enn::measure(&BOARDS.map(|(_, c)| c))?;
    Ok((rows, enn))
}

/// Regenerates `docs/attention.md` and `bench/attention.jsonl`.
pub fn run_table(mote: &Path) -> Result<()> {
    if !mote.exists() {
        bail!("{} not found: build it with `cargo build --release -p mote-cli`", mote.display());
    }
    let root = repo_root();
    let work = root.join("target/mote-bench/attention");
    std::fs::create_dir_all(&work)?;
    let (mut rows, enn) = measure(mote, &peer_dir(None), &work)?;
    for e in &enn {
        let Some(model) =
            MODELS.iter().find(|m| m.enn == Some(e.model.strip_suffix("_unfused").unwrap_or(e.model))).map(|m| m.name)
        else {
            continue;
        };
        let board = BOARDS.iter().find(|b| b.1 == e.core).map_or("?", |b| b.0);
        let variant = if e.model.ends_with("_unfused") { "embedded-nn-ops" } else { "embedded-nn" };
        rows.push(Row {
            model,
            error: None,
            board,
            variant: variant.into(),
            arena: e.arena_bytes as u64,
            peak: e.arena_bytes as u64,
            flash: e.flash_bytes,
            instructions: e.instructions,
            bit_exact: e.bit_exact,
            fwsa: false,
            sqnr_db: None,
            schedule: "embedded-nn kernels".into(),
        });
    }
    let mut jsonl = String::new();
    for r in &rows {
        writeln!(jsonl, "{}", r.json())?;
    }
    std::fs::write(root.join("bench/attention.jsonl"), jsonl)?;
    std::fs::write(root.join("docs/attention.md"), markdown(&rows)?)?;
    eprintln!("wrote docs/attention.md and bench/attention.jsonl ({} rows)", rows.len());
    Ok(())
}

/// The microLlama prefill rows side by side: instructions and arena against the prompt length, per board.
fn prefill_summary(md: &mut String, rows: &[Row]) -> Result<()> {
    let prefill: Vec<&Model> = MODELS.iter().filter(|m| m.name.starts_with("microllama-prefill-")).collect();
    writeln!(md, "## microLlama prefill against the prompt length\n")?;
    writeln!(
        md,
        "Instructions and arena of one prefill call of the causal block (`naive` / `all`), and instructions per \
         prompt token of `all`; `—`: does not fit the board. The fused kernel keeps one head's row block of \
         scores (the naive map is 2·16·S² bytes: at S = 128 it does not fit the 320 KB of stm32f746) and scores \
         only the keys up to each row block's last row (the causal mask's past); the value product still runs over \
         all S keys (the masked ones with probability zero). Heads of 4 leave the products short (k = 4 for the \
         scores), so the per-score work (requantization, softmax) dominates: see docs/decode.md for the one-token \
         step.\n"
    )?;
    writeln!(md, "| board | S | naive instructions | all instructions | naive arena (B) | all arena (B) | all instructions per token |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for (board, _) in BOARDS {
        for m in &prefill {
            let find =
                |variant: &str| rows.iter().find(|r| r.model == m.name && r.board == board && r.variant == variant);
            let (Some(naive), Some(all)) = (find("naive"), find("all")) else { continue };
            let seq: u64 = m.name.rsplit('-').next().context("prefill name")?.parse()?;
            let cell = |r: &Row, v: u64| if r.error.is_some() { "—".to_string() } else { group(v) };
            writeln!(
                md,
                "| {board} | {seq} | {} | {} | {} | {} | {} |",
                cell(naive, naive.instructions),
                cell(all, all.instructions),
                cell(naive, naive.arena),
                cell(all, all.arena),
                cell(all, all.instructions / seq)
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

fn markdown(rows: &[Row]) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# Attention ablation: naive, FWSA, depth-first tiling, everything\n")?;
    writeln!(
        md,
        "Regenerate with `cargo build --release -p mote-cli && cargo run --release -p mote-bench -- attention` (writes \
         this file and `bench/attention.jsonl`, ~15 minutes; the peer rows need `../shared/peer-models` or \
         `$MOTE_PEER_MODELS`). Models: the blocks of `examples/attention`, exported by PyTorch with untrained \
         weights and calibrated on random inputs (`eegformer-mhsa` S=81 E=32 H=8 P=32, `ecgformer-mhsa` S=66 E=16 \
         H=8 P=2, and `microllama-prefill-S`: the causal self-attention of a Llama layer at the microLlama shape, \
         E=64 H=16 P=4 without biases, over a prompt of S = 16..128 tokens, rotary embedding not included); and the \
         whole float peer models with attention, calibrated on noisy copies of their shipped input as in \
         docs/deploy.md: CCT_1_16_16_8 (conv tokenizer, one encoder layer with S=64 E=8 H=1 P=8, sequence \
         pooling), CCT_1_16_16_64 (the same with E=64, P=64) and TinyViT-Demo, whose window attention has one \
         token per window (16 and 4 windows of 1×4, heads of 1: softmax over one score), so mote leaves it as it \
         is and its four variants are the same program; and Deeploy's integer ICCT as it ships (conv tokenizer, \
         one encoder layer with S=64 E=128 H=1 P=192 in `MatMul` + `RequantShift` and `ITAMax` ops; no FWSA \
         variant, no SQNR: it is not quantized by mote, its output is checked against Deeploy's golden one in \
         the test suite). Every other mote row is `mote quantize --fwsa F` then `mote deploy --attention A --json` \
         on QEMU with the model's input, bit-exact against the host reference of the same variant. Instructions are QEMU's exact counts of the inference; arena is mote's planned activation \
         memory (the output is in it; the int8 input is read in place from the caller's buffer, so `peak with \
         input` adds its S·E bytes, which embedded-nn's arena holds).\n"
    )?;
    writeln!(
        md,
        "Variants: `naive` = layer by layer with the whole H·S² attention map (`--fwsa off --attention layers`); \
         `fwsa` = Fused-Weight Self-Attention (W_Q·W_Kᵀ and W_V·W_O fused offline per head; keys and values are x \
         itself), layer by layer; `dft` = one fused kernel per block, head by head in query-row blocks, projected \
         keys/values (or, for wide heads over few tokens, a head's whole score map with its keys and values \
         projected and packed in chunks: `StreamedKv`); `all` = `--fwsa auto` (fuses only when it saves MACs) + \
         the fused kernel, which with fused weights streams row blocks through every head. `embedded-nn` = the block with embedded-nn 0.2.3's kernels \
         (`fully_connected_s8` + its fused `scaled_dot_product_attention_s8`), `embedded-nn-ops` = op by op \
         (`batch_matmul_s8`, `softmax_s8`, transposes). Output SQNR is against the float model (dB).\n"
    )?;
    for m in &MODELS {
        writeln!(md, "## {}\n", m.name)?;
        writeln!(md, "| board | variant | bit-exact | instructions | arena (B) | peak with input (B) | flash (B) | FWSA | output SQNR (dB) | schedule |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
        for r in rows.iter().filter(|r| r.model == m.name) {
            let sqnr = r.sqnr_db.map_or_else(|| "—".to_string(), |s| format!("{s:.2}"));
            let fwsa = if r.fwsa { "yes" } else { "no" };
            if let Some(e) = &r.error {
                writeln!(md, "| {} | {} | — | — | — | — | — | {fwsa} | {sqnr} | {e} |", r.board, r.variant)?;
                continue;
            }
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {fwsa} | {sqnr} | {} |",
                r.board,
                r.variant,
                if r.bit_exact { "yes" } else { "**no**" },
                group(r.instructions),
                group(r.arena),
                group(r.peak),
                group(r.flash),
                r.schedule
            )?;
        }
        writeln!(md)?;
    }
    prefill_summary(&mut md, rows)?;
    let find = |board: &str, variant: &str| {
        rows.iter().find(|r| r.model == "eegformer-mhsa" && r.board == board && r.variant == variant)
    };
    if let (Some(all), Some(naive), Some(fwsa), Some(all7)) =
        (find("stm32l4r5", "all"), find("stm32l4r5", "naive"), find("stm32l4r5", "fwsa"), find("stm32f746", "all"))
    {
        let (c4, c7, peak) = CMSIS_NN;
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        writeln!(md, "## eegformer-mhsa against the issue's anchor and targets\n")?;
        writeln!(md, "| | CMSIS-NN 7.0 (issue) | mote `all` | ratio | target | |")?;
        writeln!(md, "|---|---|---|---|---|---|")?;
        writeln!(
            md,
            "| instructions, M4 | {} | {} | {:.2}x fewer | <= {} | {} |",
            group(c4),
            group(all.instructions),
            c4 as f64 / all.instructions as f64,
            group(TARGET.0),
            verdict(all.instructions <= TARGET.0)
        )?;
        writeln!(
            md,
            "| instructions, M7 | {} | {} | {:.2}x fewer | | |",
            group(c7),
            group(all7.instructions),
            c7 as f64 / all7.instructions as f64
        )?;
        let (over, under) = (all.arena.saturating_sub(TARGET.1), TARGET.1.saturating_sub(all.arena));
        let pct = |b: u64| 100.0 * b as f64 / TARGET.1 as f64;
        writeln!(
            md,
            "| activation peak / arena (B) | {} | {} | {:.2}x smaller | <= {} | {} {} |",
            group(peak),
            group(all.arena),
            peak as f64 / all.arena as f64,
            group(TARGET.1),
            verdict(over == 0),
            if over > 0 {
                format!("by {} B ({:.1}%)", group(over), pct(over))
            } else {
                format!("with {} B ({:.1}%) to spare", group(under), pct(under))
            }
        )?;
        writeln!(
            md,
            "| activation peak with the int8 input (B) | {} | {} | {:.2}x smaller | | the input is the caller's buffer |",
            group(peak),
            group(all.peak),
            peak as f64 / all.peak as f64
        )?;
        writeln!(
            md,
            "| FWSA vs naive, layer by layer, M4 | | | {:.3}x fewer instructions | fewer than naive | {} |\n",
            naive.instructions as f64 / fwsa.instructions as f64,
            verdict(fwsa.instructions < naive.instructions)
        )?;
    }
    Ok(md)
}
