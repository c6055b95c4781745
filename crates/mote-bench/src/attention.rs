//! The attention ablation (issue 5): each example attention block (`examples/attention`) on Cortex-M4 and M7, as
//! `naive` (layer by layer, the whole `H·S²` attention map), `fwsa` (Fused-Weight Self-Attention, layer by layer),
//! `dft` (one fused kernel, depth-first: head/row blocks), `all` (FWSA as `--fwsa auto` decides, fused kernel, row
//! streaming), and the same block written with `embedded-nn` (the Rust port of CMSIS-NN's kernels).
//!
//! Every mote row is `mote quantize --fwsa ...` then `mote deploy --json --attention ...` on QEMU: bit-exact against
//! the host reference of the same variant, exact instruction counts, the planned arena. The accuracy effect of FWSA
//! is the output's SQNR against the float model that `mote quantize` reports.
use crate::attention_enn::{self, EnnRow};
use crate::deploy::run;
use crate::quant::repo_root;
use anyhow::{bail, ensure, Context, Result};
use mote_deploy::group;
use mote_qemu::Core;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The blocks: (name in the table, example file stem, embedded-nn model name, int8 input bytes S·E).
const MODELS: [(&str, &str, &str, u64); 2] = [
    ("eegformer-mhsa", "eegformer_mhsa", "eegformer_mhsa", 81 * 32),
    ("ecgformer-mhsa", "ecgformer_mhsa", "ecgformer_mhsa", 66 * 16),
];

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
        })
    }
}

/// A quantized block: its path, whether FWSA was applied, the output SQNR against float.
struct Quantized {
    path: PathBuf,
    fwsa: bool,
    sqnr_db: f64,
}

/// `mote quantize --fwsa <fwsa>` of example `stem` into `work`.
fn quantize(mote: &Path, stem: &str, fwsa: &str, work: &Path) -> Result<Quantized> {
    let dir = repo_root().join("examples/attention");
    let path = work.join(format!("{stem}.fwsa-{fwsa}.int8.onnx"));
    let (ok, out, err) = run(Command::new(mote)
        .arg("quantize")
        .arg(dir.join(format!("{stem}.onnx")))
        .arg("--calib")
        .arg(dir.join(format!("{stem}.calib.npz")))
        .args(["--fwsa", fwsa, "-o"])
        .arg(&path))?;
    ensure!(ok, "mote quantize {stem} --fwsa {fwsa}: {err}");
    let text = format!("{out}\n{err}");
    // The per-tensor report ends with `output <name>  <SQNR dB>`.
    let sqnr_db = text
        .lines()
        .filter_map(|l| l.strip_prefix("output "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .next()
        .with_context(|| format!("no output SQNR in `mote quantize` of {stem}:\n{text}"))?;
    let fwsa = match fwsa {
        "on" => true,
        "off" => false,
        _ => {
            // `auto` wrote the same model as `on` or as `off`.
            let bytes = std::fs::read(&path)?;
            bytes == std::fs::read(work.join(format!("{stem}.fwsa-on.int8.onnx")))?
        }
    };
    Ok(Quantized { path, fwsa, sqnr_db })
}

/// `mote deploy --json` of a quantized block.
fn deploy(mote: &Path, q: &Quantized, stem: &str, board: &str, attention: &str) -> Result<(Value, String)> {
    let inputs = repo_root().join(format!("examples/attention/{stem}.inputs.npz"));
    let (_, out, err) = run(Command::new(mote)
        .arg("deploy")
        .arg(&q.path)
        .args(["--board", board, "--json", "--timeout", "600", "--attention", attention, "--inputs"])
        .arg(&inputs))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("mote deploy {stem} on {board}: {err}"))?;
    let schedule = err
        .lines()
        .find_map(|l| l.strip_prefix("attention ").and_then(|l| l.split("; ").nth(1)))
        .map_or_else(|| "layer by layer".to_string(), |s| s.to_string());
    Ok((v, schedule))
}

fn field(v: &Value, path: &[&str]) -> Result<u64> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).with_context(|| format!("no {path:?} in {v}"))
}

/// Measures every row (slow: 16 firmware builds and runs, plus embedded-nn's).
fn measure(mote: &Path, work: &Path) -> Result<(Vec<Row>, Vec<EnnRow>)> {
    let mut rows = Vec::new();
    for (model, stem, _, input) in MODELS {
        let mut quantized = Vec::new();
        for fwsa in ["on", "off", "auto"] {
            quantized.push((fwsa, quantize(mote, stem, fwsa, work)?));
        }
        for (board, _) in BOARDS {
            for (variant, fwsa, attention) in VARIANTS {
                let q = &quantized.iter().find(|(f, _)| *f == fwsa).context("quantized")?.1;
                let (v, schedule) = deploy(mote, q, stem, board, attention)?;
                eprintln!("{model} {board} {variant}: {} instructions", field(&v, &["instructions", "inference"])?);
                rows.push(Row {
                    model,
                    board,
                    variant: variant.to_string(),
                    arena: field(&v, &["arena", "best"])?,
                    peak: field(&v, &["arena", "best"])? + input,
                    flash: field(&v, &["flash", "bytes"])?,
                    instructions: field(&v, &["instructions", "inference"])?,
                    bit_exact: v.get("bit_exact").and_then(Value::as_bool) == Some(true),
                    fwsa: q.fwsa,
                    sqnr_db: Some(q.sqnr_db),
                    schedule,
                });
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
    let (mut rows, enn) = measure(mote, &work)?;
    for e in &enn {
        let Some((model, ..)) = MODELS.iter().find(|m| e.model.strip_suffix("_unfused").unwrap_or(e.model) == m.2)
        else {
            continue;
        };
        let board = BOARDS.iter().find(|b| b.1 == e.core).map_or("?", |b| b.0);
        let variant = if e.model.ends_with("_unfused") { "embedded-nn-ops" } else { "embedded-nn" };
        rows.push(Row {
            model,
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

fn markdown(rows: &[Row]) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# Attention ablation: naive, FWSA, depth-first tiling, everything\n")?;
    writeln!(
        md,
        "Regenerate with `cargo build --release -p mote-cli && cargo run --release -p mote-bench -- attention` (writes \
         this file and `bench/attention.jsonl`, ~10 minutes). The blocks are `examples/attention` (exported by \
         PyTorch, untrained weights, calibrated on 64 random inputs); every mote row is `mote quantize --fwsa F` then \
         `mote deploy --attention A --json` on QEMU with the example's input, bit-exact against the host reference of \
         the same variant. Instructions are QEMU's exact counts of the inference; arena is mote's planned activation \
         memory (the output is in it; the int8 input is read in place from the caller's buffer, so `peak with input` \
         adds its S·E bytes, which embedded-nn's arena holds).\n"
    )?;
    writeln!(
        md,
        "Variants: `naive` = layer by layer with the whole H·S² attention map (`--fwsa off --attention layers`); \
         `fwsa` = Fused-Weight Self-Attention (W_Q·W_Kᵀ and W_V·W_O fused offline per head; keys and values are x \
         itself), layer by layer; `dft` = one fused kernel per block, head by head in query-row blocks, projected \
         keys/values; `all` = `--fwsa auto` (fuses only when it saves MACs) + the fused kernel, which with fused \
         weights streams row blocks through every head. `embedded-nn` = the block with embedded-nn 0.2.3's kernels \
         (`fully_connected_s8` + its fused `scaled_dot_product_attention_s8`), `embedded-nn-ops` = op by op \
         (`batch_matmul_s8`, `softmax_s8`, transposes). Output SQNR is against the float model (dB).\n"
    )?;
    for (model, ..) in MODELS {
        writeln!(md, "## {model}\n")?;
        writeln!(md, "| board | variant | bit-exact | instructions | arena (B) | peak with input (B) | flash (B) | FWSA | output SQNR (dB) | schedule |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
        for r in rows.iter().filter(|r| r.model == model) {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.board,
                r.variant,
                if r.bit_exact { "yes" } else { "**no**" },
                group(r.instructions),
                group(r.arena),
                group(r.peak),
                group(r.flash),
                if r.fwsa { "yes" } else { "no" },
                r.sqnr_db.map_or_else(|| "—".to_string(), |s| format!("{s:.2}")),
                r.schedule
            )?;
        }
        writeln!(md)?;
    }
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
