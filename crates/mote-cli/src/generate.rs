//! `mote generate`: quantize a llama2.c decoder (model.bin) to int8 on calibration text, generate from a prompt
//! on the host reference, then compile it for a board, run the same generation on the board's emulated core and
//! check that the token sequences are identical.
//! Exit 0 when identical, 1 when they differ, 2 on errors.
use crate::io::spinner;
use crate::EXIT_MISMATCH;
use anyhow::{bail, Context, Result};
use mote_codegen::PackedLayout;
use mote_deploy::{group, run_generation, Board, GenerationJob, Paths, DEFAULT_STACK_BYTES};
use mote_llm::generate::{generate, PackedDecoder, Sampling};
use mote_llm::quant::{calibrate, quantize, text_sequences, QuantDecoder};
use mote_llm::{Checkpoint, Tokenizer, BOS, EOS};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `mote generate`.
#[derive(clap::Args)]
pub struct Args {
    /// The decoder: a llama2.c checkpoint (model.bin, version 0 or 1, float32), a full-sequence causal decoder
    /// exported by `torch.onnx.export` (.onnx: token ids [1, T] → logits), or a decoder quantized by `mote
    /// quantize` (.npz).
    model: PathBuf,
    /// Board to run on (as `mote deploy` takes it).
    #[arg(long)]
    board: String,
    /// The prompt text (encoded with BOS first, as llama2.c's run.c does).
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// The prompt as raw token ids, e.g. `1,403,77` (no tokenizer needed to run; BOS is not added).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Vec<u32>,
    /// Tokens to generate at most (generation also stops at BOS or EOS).
    #[arg(short = 'n', long, default_value_t = 64)]
    steps: usize,
    /// The tokenizer (llama2.c tokenizer.bin); default: tokenizer.bin beside the model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Calibration text (UTF-8) for a llama2.c checkpoint: paragraphs (separated by empty lines or lines holding
    /// only `%`) are encoded with BOS and run through the float decoder to choose every int8 scale.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration paragraphs used at most.
    #[arg(long, default_value_t = 64)]
    calib_limit: usize,
    /// Positions the KV cache holds (prompt + generated tokens); default: the model's seq_len.
    #[arg(long)]
    context: Option<usize>,
    /// Sampling temperature; 0 (default) is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k candidates when sampling (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampler's xorshift32 generator.
    #[arg(long, default_value_t = 42)]
    seed: u32,
    /// Stack reserve in bytes.
    #[arg(long, default_value_t = DEFAULT_STACK_BYTES)]
    stack: u64,
    /// Stop the emulation after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    timeout: f64,
    /// Print one JSON object (tokens, text, instructions per step, sizes) instead of the text.
    #[arg(long)]
    json: bool,
}

/// The decoder given: float (quantized here) or already quantized.
enum Source {
    Float(Box<Checkpoint>),
    Quantized(Box<QuantDecoder>),
}

/// The text of `tokens` generated after `prompt` (each token decoded after its predecessor; BOS and EOS, which
/// end the text, left out).
fn continuation(tok: &Tokenizer, prompt: &[u32], tokens: &[u32]) -> Vec<u8> {
    let mut prev = *prompt.last().unwrap_or(&BOS);
    let mut text = Vec::new();
    for &t in tokens {
        if t != BOS && t != EOS {
            text.extend_from_slice(tok.decode(prev, t).unwrap_or_default());
        }
        prev = t;
    }
    text
}

/// The float decoder in `model`: a llama2.c checkpoint, or (`.onnx`) a full-sequence causal decoder exported by
/// `torch.onnx.export`, read as the llama2.c decoder it is and checked against the graph.
pub fn read_checkpoint(model: &Path) -> Result<Checkpoint> {
    if model.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        let g = mote_onnx::load(model, &Default::default())?;
        let name = model.display().to_string();
        Ok(mote_llm::from_graph::checkpoint_from_graph(&g, &name)?)
    } else {
        Ok(Checkpoint::read(model)?)
    }
}

/// A decoder file from `mote quantize` (`.npz`), not a llama2.c checkpoint.
pub fn is_quantized(model: &Path) -> bool {
    model.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The tokenizer: `--tokenizer`, else tokenizer.bin beside the model.
fn tokenizer_path(a: &Args) -> PathBuf {
    beside(&a.model, a.tokenizer.as_deref())
}

/// `given`, else `tokenizer.bin` in the model's directory.
pub fn beside(model: &Path, given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| model.parent().unwrap_or(Path::new(".")).join("tokenizer.bin"))
}

/// Runs `mote generate`.
pub fn main(a: Args) -> Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout {}: must be a positive number of seconds", a.timeout);
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature {}: must be 0 (greedy) or a positive number", a.temperature);
    }
    let board = Board::resolve(&a.board)?;
    let layout = board
        .packed_layout()
        .with_context(|| format!("board `{}` ({}) has no packed kernel layout for decoders", board.name, board.core))?;
    // A llama2.c checkpoint is quantized here; a `.npz` from `mote quantize` already is.
    let source = if is_quantized(&a.model) {
        Source::Quantized(Box::new(QuantDecoder::read(&a.model)?))
    } else {
        Source::Float(Box::new(read_checkpoint(&a.model)?))
    };
    let (vocab, max_context) = match &source {
        Source::Float(ck) => (ck.config.vocab_size, ck.config.seq_len),
        Source::Quantized(q) => (q.shape.vocab, q.shape.context),
    };
    let tok_path = tokenizer_path(&a);
    let tok = Tokenizer::read(&tok_path, vocab)
        .with_context(|| format!("the tokenizer (give it with --tokenizer) for {}", a.model.display()))?;
    let prompt: Vec<u32> = match (&a.prompt, a.prompt_ids.is_empty()) {
        (Some(text), _) => tok.encode(text, true, false)?,
        (None, false) => a.prompt_ids.clone(),
        (None, true) => bail!("give the prompt with --prompt TEXT or --prompt-ids 1,2,3"),
    };
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        bail!("--prompt-ids: token {bad} is outside the vocabulary of {vocab}");
    }
    let context = match (&source, a.context) {
        (Source::Quantized(_), Some(c)) if c != max_context => {
            bail!("{} was quantized for a context of {max_context}; --context {c} cannot change it", a.model.display())
        }
        (Source::Quantized(_), _) => max_context,
        (Source::Float(_), c) => c.unwrap_or(max_context),
    };
    if prompt.len() + a.steps > context + 1 {
        bail!(
            "the prompt of {} tokens plus {} generated tokens needs {} positions, more than the context of {context} \
             (the model allows up to {max_context}: change --context, or lower -n)",
            prompt.len(),
            a.steps,
            prompt.len() + a.steps - 1,
        );
    }
    let sampling = if a.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::TopK { k: a.top_k, temperature: a.temperature, seed: a.seed }
    };
    let q = match source {
        Source::Quantized(q) => *q,
        Source::Float(ck) => {
            let Some(calib) = &a.calib else {
                bail!(
                    "--calib TEXT is needed to quantize {} (or give a decoder from `mote quantize`)",
                    a.model.display()
                )
            };
            let text = std::fs::read_to_string(calib).with_context(|| format!("reading {}", calib.display()))?;
            let seqs = text_sequences(&tok, &text, a.calib_limit, context)?;
            if seqs.is_empty() {
                bail!("{}: no calibration text (paragraphs separated by empty lines)", calib.display());
            }
            let step = spinner(a.json, format!("calibrating on {} paragraph(s) of {}", seqs.len(), calib.display()));
            let q = calibrate(&ck, &seqs, context).and_then(|r| quantize(&ck, &r, context));
            step.finish_and_clear();
            q.with_context(|| format!("quantizing {}", a.model.display()))?
        }
    };
    let mut dec = PackedDecoder::new(&q, layout)?;
    // Dsp16 doubles the weights (16-bit for SMLAD); when that crowds the flash, int8 weights (the Rv32 layout,
    // portable kernels on this core) fit in half.
    let other_flash = q.embedding.len() + 2 * q.rope.len() + mote_deploy::CODE_ESTIMATE_BYTES as usize;
    if layout != PackedLayout::Rv32 && dec.packed_bytes() + other_flash > board.flash_bytes as usize {
        let int8 = PackedDecoder::new(&q, PackedLayout::Rv32)?;
        if int8.packed_bytes() + other_flash <= board.flash_bytes as usize {
            if !a.json {
                eprintln!(
                    "note: {layout:?} weights ({} B) would crowd board `{}`'s {} B of flash; using int8 weights ({} B, \
                     portable kernels: more instructions per token)",
                    group(dec.packed_bytes() as u64),
                    board.name,
                    group(board.flash_bytes),
                    group(int8.packed_bytes() as u64)
                );
            }
            dec = int8;
        }
    }

    // The host reference first (quick); then the board's tokens, printed as the emulated board prints them.
    let host = generate(&dec, &prompt, a.steps, sampling, &mut |_| {})?;
    let paths = Paths::locate()?;
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let job = GenerationJob {
        prompt: &prompt,
        steps: a.steps,
        sampling,
        stack: a.stack,
        timeout: Duration::from_secs_f64(a.timeout),
        tokens: (!a.json).then_some(tx),
    };
    let step = spinner(a.json, format!("building the firmware for {} ({})", board.name, board.core));
    let dep = std::thread::scope(|scope| -> Result<_> {
        // The job (and its token sender) moves into the thread and is dropped there, which ends the token loop.
        let (paths, board, dec) = (&paths, &board, &dec);
        let run = scope.spawn(move || run_generation(paths, board, dec, &job));
        if !a.json {
            let out = std::io::stdout();
            let mut first = true;
            let mut prev = *prompt.last().unwrap_or(&BOS);
            for t in rx {
                if first {
                    step.finish_and_clear();
                    let mut o = out.lock();
                    o.write_all(&tok.decode_text(&prompt)?)?;
                    first = false;
                }
                let mut o = out.lock();
                o.write_all(&continuation(&tok, &[prev], &[t]))?;
                o.flush()?;
                prev = t;
            }
            println!();
        }
        run.join().map_err(|_| anyhow::anyhow!("the emulation thread panicked"))
    });
    step.finish_and_clear();
    let dep = dep??;
    let identical = dep.run.tokens == host;
    let steps = &dep.run.step_instructions;
    let last = steps.last().copied().unwrap_or(0);
    let mean = steps.iter().sum::<u64>() / steps.len().max(1) as u64;
    let per_s = |instr: u64| board.clock_hz as f64 / instr.max(1) as f64;
    if a.json {
        let v = serde_json::json!({
            "model": a.model.display().to_string(),
            "board": board.name,
            "core": board.core.to_string(),
            "prompt_ids": prompt,
            "tokens": dep.run.tokens,
            "host_tokens": host,
            "identical": identical,
            "text": String::from_utf8_lossy(&continuation(&tok, &prompt, &dep.run.tokens)),
            "step_instructions": steps,
            "tokens_per_s_last": per_s(last),
            "cache_bytes": dep.sizes.cache_bytes,
            "state_bytes": dep.sizes.state_bytes(),
            "weight_bytes": dep.sizes.weight_bytes,
            "layout": format!("{:?}", dec.layout()),
            "context": context,
        });
        println!("{v}");
    } else {
        println!(
            "{} on QEMU: {} token(s), {}; instructions per decoder step: {} at position 0, {} at position {} \
             (mean {}), {:.0} tokens/s at {} MHz",
            board.name,
            dep.run.tokens.len(),
            if identical { "identical to the host reference" } else { "DIFFERENT from the host reference" },
            group(steps.first().copied().unwrap_or(0)),
            group(last),
            steps.len().saturating_sub(1),
            group(mean),
            per_s(last),
            board.clock_hz / 1_000_000
        );
        println!(
            "memory: KV cache {} B (context {context}), state {} B, weights {} B ({:?})",
            group(dep.sizes.cache_bytes as u64),
            group(dep.sizes.state_bytes() as u64),
            group(dep.sizes.weight_bytes as u64),
            dec.layout(),
        );
    }
    if identical {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: QEMU generated {:?}, the host reference {:?}", dep.run.tokens, host);
        Ok(ExitCode::from(EXIT_MISMATCH))
    }
}
