//! `mote quantize`: post-training int8 quantization to a QDQ ONNX model, with a per-layer
//! SQNR report.
use crate::io::{convert_input, load_model, parse_shape};
use anyhow::{bail, Context, Result};
use mote_core::quantize::calib::Method;
use mote_core::tensor::shape_str;
use mote_core::{Graph, Tensor};
use mote_onnx::attention::{AttentionBlock, Fwsa};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Calibration methods on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CalibMethod {
    /// The full observed range of each activation.
    Minmax,
    /// The central `--percentile` of observed values.
    Percentile,
    /// The clipped range with the least squared quantization error.
    Mse,
}

/// `--fwsa` choices.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FwsaArg {
    /// Fuse the attention weights (Fused-Weight Self-Attention).
    On,
    /// Keep separate Q/K/V/O weights.
    Off,
    /// Fuse a block when that takes fewer MACs.
    Auto,
}

/// Arguments of `mote quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// The float ONNX model, or a llama2.c decoder checkpoint (model.bin: written as an int8 decoder .npz).
    model: PathBuf,
    /// Calibration inputs (.npz): per model input (by name or position), samples stacked on
    /// the batch axis. For a decoder: text, paragraphs separated by empty lines or `%` lines.
    #[arg(long)]
    calib: PathBuf,
    /// Where to write the quantized (QDQ) ONNX model.
    #[arg(short, long)]
    output: PathBuf,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value_t = CalibMethod::Minmax)]
    method: CalibMethod,
    /// Percent of values kept by `--method percentile`.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Static shape for a graph input, e.g. `--shape x=1x16x64` (repeatable).
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(String, Vec<usize>)>,
    /// Fused-Weight Self-Attention for the recognised attention blocks, which are rewritten to
    /// mote's canonical form before calibration either way.
    #[arg(long, value_enum, default_value_t = FwsaArg::Auto)]
    fwsa: FwsaArg,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Decoders (llama2.c model.bin): the tokenizer; default tokenizer.bin beside the model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Decoders: positions the KV cache holds; default the model's seq_len.
    #[arg(long)]
    context: Option<usize>,
    /// Decoders: calibration paragraphs used at most.
    #[arg(long, default_value_t = 64)]
    calib_limit: usize,
    /// Quantize an ONNX model as a decoder (a full-sequence causal export, token ids → logits) for `mote
    /// generate`, like a llama2.c model.bin.
    #[arg(long)]
    decoder: bool,
}

/// `mote quantize` of a llama2.c decoder: calibrate on text, write the int8 decoder (.npz), report how its logits
/// follow the float model's on the calibration text.
fn quantize_decoder(a: &Args) -> Result<ExitCode> {
    use mote_llm::quant::{agreement, calibrate, quantize, text_sequences};
    let ck = crate::generate::read_checkpoint(&a.model)?;
    let tok_path = crate::generate::beside(&a.model, a.tokenizer.as_deref());
    let tok = mote_llm::Tokenizer::read(&tok_path, ck.config.vocab_size)
        .with_context(|| format!("the tokenizer (give it with --tokenizer) for {}", a.model.display()))?;
    let context = a.context.unwrap_or(ck.config.seq_len);
    let text = std::fs::read_to_string(&a.calib).with_context(|| format!("reading {}", a.calib.display()))?;
    let seqs = text_sequences(&tok, &text, a.calib_limit, context)?;
    if seqs.is_empty() {
        bail!("{}: no calibration text (paragraphs separated by empty lines)", a.calib.display());
    }
    let q = calibrate(&ck, &seqs, context)
        .and_then(|r| quantize(&ck, &r, context))
        .with_context(|| format!("quantizing {}", a.model.display()))?;
    let agree = agreement(&ck, &q, mote_codegen::PackedLayout::Dsp16, &seqs)?;
    q.write(&a.output)?;
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    if a.json {
        let v = serde_json::json!({
            "model": a.model.display().to_string(),
            "output": a.output.display().to_string(),
            "context": context,
            "calibration_sequences": seqs.len(),
            "calibration_tokens": tokens,
            "logits_sqnr_db": finite(agree.logits_sqnr_db),
            "top1_agreement": agree.top1_same as f64 / agree.positions.max(1) as f64,
        });
        println!("{v}");
    } else {
        let c = ck.config;
        println!(
            "decoder: dim {}, {} layers, {} heads ({} key/value), hidden {}, vocabulary {}; context {context}",
            c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size
        );
        println!(
            "calibrated on {} paragraph(s), {tokens} tokens: weights int8 per channel, activations int8",
            seqs.len()
        );
        println!(
            "int8 vs float on the calibration text: logits SQNR {:.2} dB, same next token (greedy) at {}/{} positions ({:.1}%)",
            agree.logits_sqnr_db,
            agree.top1_same,
            agree.positions,
            100.0 * agree.top1_same as f64 / agree.positions.max(1) as f64
        );
        println!("wrote {}", a.output.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits the calibration arrays into per-sample input lists for `g`.
pub fn calib_samples(g: &Graph, path: &Path) -> Result<Vec<Vec<Tensor>>> {
    let arrays = mote_core::npz::read(path)?;
    let by_name: HashMap<&str, &Tensor> = arrays.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let all_named = g.inputs.iter().all(|&i| by_name.contains_key(g.values[i].name.as_str()));
    if !all_named && arrays.len() != g.inputs.len() {
        let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
        let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
        bail!(
            "{}: the model's inputs are [{}], the file holds [{}]; give one array per input, by name or in order",
            path.display(),
            names.join(", "),
            keys.join(", ")
        );
    }
    let mut per_input = Vec::new();
    let mut count: Option<(usize, String)> = None;
    for (k, &id) in g.inputs.iter().enumerate() {
        let v = &g.values[id];
        let (key, t) =
            if all_named { (v.name.as_str(), by_name[v.name.as_str()]) } else { (arrays[k].0.as_str(), &arrays[k].1) };
        let t = convert_input(t, v.ty.dtype, path, key, &v.name)?;
        let want = &v.ty.shape;
        let batch = want.first().copied().unwrap_or(1).max(1);
        let n = if t.shape() == want.as_slice() {
            1
        } else if t.shape().len() == want.len() && t.shape()[1..] == want[1..] && t.shape()[0] % batch == 0 {
            t.shape()[0] / batch
        } else {
            bail!(
                "{}: array `{key}` has shape {}, but model input `{}` is {} (calibration samples stack on the first axis)",
                path.display(),
                shape_str(t.shape()),
                v.name,
                shape_str(want)
            );
        };
        if let Some((m, other)) = &count {
            if *m != n {
                bail!("{}: array `{key}` holds {n} samples but `{other}` holds {m}", path.display());
            }
        }
        count = Some((n, key.to_string()));
        per_input.push((t, batch, n));
    }
    let n = count.map_or(0, |c| c.0);
    if n == 0 {
        bail!("{}: no calibration samples", path.display());
    }
    (0..n)
        .map(|s| {
            per_input
                .iter()
                .map(|(t, b, _)| {
                    Ok(mote_core::map_same!(t, a => a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(s * b..(s + 1) * b)).to_owned()))
                })
                .collect()
        })
        .collect()
}

/// Runs `mote quantize`.
pub fn main(a: Args) -> Result<ExitCode> {
    if a.decoder || a.model.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin")) {
        return quantize_decoder(&a);
    }
    let bytes = std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let float = load_model(&a.model, &a.shapes)?;
    let samples = calib_samples(&float, &a.calib)?;
    let method = match a.method {
        CalibMethod::Minmax => Method::MinMax,
        CalibMethod::Percentile => Method::Percentile(a.percentile),
        CalibMethod::Mse => Method::Mse,
    };
    let opts = mote_onnx::ImportOptions { shapes: a.shapes.iter().cloned().collect(), ..Default::default() };
    let fwsa = match a.fwsa {
        FwsaArg::On => Fwsa::On,
        FwsaArg::Off => Fwsa::Off,
        FwsaArg::Auto => Fwsa::Auto,
    };
    // Before calibration, so the ranges are those of the graph that is quantized.
    let attn = mote_onnx::attention::rewrite_attention(&bytes, &opts, fwsa)
        .with_context(|| format!("rewriting the attention blocks of {}", a.model.display()))?;
    let q = mote_onnx::qdq::quantize(&attn.model, &opts, &samples, method)
        .with_context(|| format!("quantizing {}", a.model.display()))?;
    let names: Vec<String> = q.plan.activations.iter().map(|x| x.name.clone()).collect();
    let report = mote_core::quantize::layer_sqnr(&q.float, &q.int8, &names, &samples)?;
    write_atomically(&a.output, &q.model)?;

    if a.json {
        let layers: Vec<serde_json::Value> =
            report.iter().map(|(n, db)| serde_json::json!({ "tensor": n, "sqnr_db": finite(*db) })).collect();
        let out = serde_json::json!({
            "model": a.model.display().to_string(),
            "output": a.output.display().to_string(),
            "samples": samples.len(),
            "weights": q.plan.weights.len(),
            "activations": q.plan.activations.len(),
            "attention": attn.blocks.iter().map(|b| serde_json::json!({
                "output": b.output,
                "seq": b.seq,
                "embed": b.embed,
                "heads": b.heads,
                "head_dim": b.head_dim,
                "masked": b.masked,
                "fwsa": b.fused,
                "macs_before": b.macs_before(),
                "macs_after": b.macs_after(),
                "macs_fused": b.macs_fused,
            })).collect::<Vec<_>>(),
            "attention_unchanged": attn.skipped.iter().map(|s| serde_json::json!({
                "softmax": s.softmax,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
            "layers": layers,
        });
        println!("{out}");
    } else {
        for b in &attn.blocks {
            println!("{}", block_line(b));
        }
        for s in &attn.skipped {
            println!("attention at Softmax `{}` left unchanged: {}", s.softmax, s.reason);
        }
        println!(
            "calibrated on {} sample(s), {:?}: {} weight tensors int8 per channel, {} activations int8",
            samples.len(),
            method,
            q.plan.weights.len(),
            q.plan.activations.len()
        );
        println!("{:<60} {:>10}", "tensor", "SQNR dB");
        for (n, db) in &report {
            println!("{:<60} {:>10.2}", n, db);
        }
        let hist: Vec<String> = q.int8.op_histogram().iter().map(|(op, c)| format!("{op} {c}")).collect();
        println!("int8 graph: {}", hist.join(", "));
        println!("wrote {}", a.output.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per rewritten attention block.
fn block_line(b: &AttentionBlock) -> String {
    format!(
        "attention {}: S={} E={} H={} P={}{}, FWSA {}, MACs {} -> {}",
        b.output,
        b.seq,
        b.embed,
        b.heads,
        b.head_dim,
        if b.masked { ", masked" } else { "" },
        if b.fused { "on" } else { "off" },
        b.macs_before(),
        b.macs_after()
    )
}

/// JSON has no infinity: an exact match reports `null`.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Writes to a temporary name and renames, so a failure leaves no partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("onnx.partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}
