//! The decoding benchmark (issue 6): an int8 Llama decoder compiled to a no_std crate and run token by token on
//! emulated boards, instructions per generated token at several context lengths against the targets.
//!
//! One firmware per (model, board): a prompt of `context` tokens (BOS, then seeded ids) fed position by position,
//! then one greedy token. The firmware marks every decoder step, so `step_instructions[p]` is the cost of a token
//! at position `p`, i.e. with `p + 1` positions of context. The host reference ([`generate`] over the same packed
//! weights) gives the token the board must print (`bit_exact`).
use crate::quant::repo_root;
use anyhow::{bail, Context, Result};
use mote_codegen::decoder::{compile_decoder, DecoderSizes};
use mote_deploy::{group, run_generation, Board, DeployError, GenerationJob, Paths, DEFAULT_STACK_BYTES};
use mote_kernels::packed::PackedLayout;
use mote_llm::generate::{generate, PackedDecoder, Sampling};
use mote_llm::quant::{calibrate, quantize, text_sequences, Ranges};
use mote_llm::{Checkpoint, Config, Tokenizer, BOS};
use mote_qemu::{Core, ElfSizes};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The boards of the benchmark, in table order.
pub const BOARDS: [&str; 4] = ["stm32l4r5", "stm32h743", "corstone-300", "esp32c3"];

/// The compiled context of every firmware (the models' `seq_len`).
pub const CONTEXT: usize = 256;

/// Context lengths (positions attended over, the new token included) reported per firmware.
pub const REPORTED: [usize; 5] = [1, 16, 64, 128, 256];

/// Smaller compiled contexts tried, in order, when a board cannot hold the decoder at [`CONTEXT`].
const FALLBACK_CONTEXTS: [usize; 3] = [128, 64, 16];

/// Seed of the microLlama-shape checkpoint's random weights.
const WEIGHT_SEED: u64 = 6;
/// Seed of the prompt's token ids.
const PROMPT_SEED: u64 = 2024;
/// Seed of the microLlama-shape calibration sequences.
const CALIB_SEED: u64 = 17;
/// Calibration sequences of the microLlama shape.
const CALIB_SEQUENCES: usize = 4;
/// At most this many calibration entries of the fortunes model.
const FORTUNES_CALIB: usize = 32;

/// The targets, all for `microllama-shape` at context [`TARGET_CONTEXT`].
const TARGET_CONTEXT: usize = 128;
/// `(board, tokens per second at least)`.
const TARGET_RATES: [(&str, f64); 2] = [("stm32l4r5", 340.0), ("stm32h743", 1000.0)];
/// Instructions per token at most this multiple of MACs per token / 2 (the `SMLAD` bound), on M4 and M7.
const TARGET_BOUND_RATIO: f64 = 1.5;
/// The anchors of the issue: Deeploy's rate (8-core RV32 cluster + NPU) and CMSIS-NN's estimate on a Cortex-M4.
const DEEPLOY_TOKENS_PER_S: f64 = 340.0;
const CMSIS_NN_INSTRUCTIONS: u64 = 1_400_000;

/// The microLlama shape of the issue: dim 64, 8 layers, 16 heads (16 key/value heads), hidden 256, vocabulary
/// 512, 256 positions, classifier shared with the embedding.
pub const MICROLLAMA: Config = Config {
    dim: 64,
    hidden_dim: 256,
    n_layers: 8,
    n_heads: 16,
    n_kv_heads: 16,
    vocab_size: 512,
    seq_len: 256,
    shared_classifier: true,
};

/// A decoder of the benchmark with its calibration.
pub struct Model {
    /// Name in the table.
    pub name: &'static str,
    /// The float checkpoint.
    pub checkpoint: Checkpoint,
    /// Activation ranges from the calibration sequences.
    pub ranges: Ranges,
    /// How it was calibrated (for the table's notes).
    pub calibration: String,
}

impl Model {
    /// Calibrates `checkpoint` on `sequences` (each at most `context` long).
    pub fn new(
        name: &'static str,
        checkpoint: Checkpoint,
        sequences: &[Vec<u32>],
        calibration: String,
    ) -> Result<Model> {
        let ranges = calibrate(&checkpoint, sequences, checkpoint.config.seq_len)
            .with_context(|| format!("calibrating {name}"))?;
        Ok(Model { name, checkpoint, ranges, calibration })
    }
}

/// Multiply-accumulates of one decoder step with `context` positions attended over: per layer the fused QKV
/// projection `dim·(dim + 2·kv_dim)`, the output projection `dim²`, the SwiGLU MLP `3·dim·hidden` and the
/// attention `2·context·dim` (scores and weighted values, every query head), plus the classifier `vocab·dim`.
pub fn macs_per_token(c: &Config, context: usize) -> u64 {
    let (d, kv, h) = (c.dim as u64, c.kv_dim() as u64, c.hidden_dim as u64);
    let layer = d * (d + 2 * kv) + d * d + 3 * d * h + 2 * context as u64 * d;
    c.n_layers as u64 * layer + c.vocab_size as u64 * d
}

/// The reported contexts a firmware compiled for `compiled` positions measures, with the decoder-step index
/// (position) of each: context `c` is the step at position `c − 1`.
pub fn reported_positions(compiled: usize) -> Vec<(usize, usize)> {
    REPORTED.iter().filter(|&&c| c >= 1 && c <= compiled).map(|&c| (c, c - 1)).collect()
}

/// `len` token ids: [`BOS`], then ids drawn uniformly from `3..vocab` (past BOS and EOS) by an LCG seeded with
/// `seed`.
pub fn seeded_tokens(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut s = seed;
    (0..len)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if i == 0 {
                BOS
            } else {
                3 + ((s >> 33) % (vocab as u64 - 3)) as u32
            }
        })
        .collect()
}

/// Row (1): the microLlama shape with seeded random weights, calibrated on seeded random sequences.
pub fn microllama_shape() -> Result<Model> {
    let ck = Checkpoint::random(MICROLLAMA, WEIGHT_SEED)?;
    let seqs: Vec<Vec<u32>> = (0..CALIB_SEQUENCES as u64)
        .map(|i| seeded_tokens(CALIB_SEED + i, MICROLLAMA.seq_len, MICROLLAMA.vocab_size))
        .collect();
    let note = format!(
        "`Checkpoint::random` (seed {WEIGHT_SEED}) of the issue's microLlama shape (dim {}, {} layers, {} heads, {} \
         key/value heads, hidden {}, vocabulary {}, {} positions, shared classifier), calibrated on {} sequences of \
         {} tokens (BOS, then uniform random ids in 3..{}; LCG seeds {}..={})",
        MICROLLAMA.dim,
        MICROLLAMA.n_layers,
        MICROLLAMA.n_heads,
        MICROLLAMA.n_kv_heads,
        MICROLLAMA.hidden_dim,
        MICROLLAMA.vocab_size,
        MICROLLAMA.seq_len,
        CALIB_SEQUENCES,
        MICROLLAMA.seq_len,
        MICROLLAMA.vocab_size,
        CALIB_SEED,
        CALIB_SEED + CALIB_SEQUENCES as u64 - 1
    );
    Model::new("microllama-shape", ck, &seqs, note)
}

/// Row (2): our trained decoder `examples/fortunes` (if its `model.bin` is there), calibrated on the first
/// [`FORTUNES_CALIB`] paragraphs of `calib.txt` as `mote generate` and `mote quantize` take them
/// ([`text_sequences`]: split at empty and `%` lines, each encoded with BOS and cut to the context).
pub fn fortunes(dir: &Path) -> Result<Option<Model>> {
    let model = dir.join("model.bin");
    if !model.is_file() {
        return Ok(None);
    }
    let ck = Checkpoint::read(&model)?;
    let tok = Tokenizer::read(dir.join("tokenizer.bin"), ck.config.vocab_size)?;
    let text = std::fs::read_to_string(dir.join("calib.txt")).context("reading examples/fortunes/calib.txt")?;
    let seqs = text_sequences(&tok, &text, FORTUNES_CALIB, ck.config.seq_len)?;
    let paragraphs = text_sequences(&tok, &text, usize::MAX, ck.config.seq_len)?.len();
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let c = ck.config;
    let note = format!(
        "`examples/fortunes/model.bin` (trained; dim {}, {} layers, {} heads, {} key/value heads, hidden {}, \
         vocabulary {}, {} positions, {} classifier), calibrated on the first {} of the {} paragraphs of \
         `examples/fortunes/calib.txt` (`mote_llm::quant::text_sequences`, as `mote generate --calib` reads text: split \
         at empty and `%` lines, each `Tokenizer::encode(paragraph, BOS, no EOS)`, cut to {} tokens: {} tokens in all)",
        c.dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.hidden_dim,
        c.vocab_size,
        c.seq_len,
        if c.shared_classifier { "shared" } else { "separate" },
        seqs.len(),
        paragraphs,
        c.seq_len,
        tokens
    );
    Model::new("fortunes", ck, &seqs, note).map(Some)
}

/// One firmware measured on one board.
pub struct Measured {
    /// The compiled context (the prompt's length).
    pub context: usize,
    /// The weight layout.
    pub layout: PackedLayout,
    /// Instructions of every decoder step, by position.
    pub step_instructions: Vec<u64>,
    /// Instructions of sampling (greedy argmax over the logits) and printing the token.
    pub sample_instructions: u64,
    /// The generated crate's sizes.
    pub sizes: DecoderSizes,
    /// The firmware ELF's sections.
    pub elf: ElfSizes,
    /// Stack high-water mark in bytes.
    pub stack_used: u64,
    /// The token the board printed.
    pub mcu_tokens: Vec<u32>,
    /// The host reference's token.
    pub host_tokens: Vec<u32>,
    /// Wall time of compiling, building and emulating.
    pub wall: Duration,
}

impl Measured {
    /// The board printed the host reference's token sequence.
    pub fn bit_exact(&self) -> bool {
        !self.host_tokens.is_empty() && self.mcu_tokens == self.host_tokens
    }
}

/// A compiled context that does not fit a board.
pub struct NoFit {
    /// The compiled context.
    pub context: usize,
    /// The generated crate's sizes.
    pub sizes: DecoderSizes,
    /// `run_generation`'s error.
    pub message: String,
}

/// What one (model, board) produced: the contexts that did not fit, then the run, if any fitted.
pub struct Outcome {
    /// The model's name.
    pub model: &'static str,
    /// The model's shape.
    pub config: Config,
    /// The board.
    pub board: Board,
    /// Compiled contexts that did not fit, largest first.
    pub no_fit: Vec<NoFit>,
    /// The measured firmware.
    pub run: Option<Measured>,
}

/// Builds and runs `model`'s firmware on `board` at the first of `contexts` that fits: a prompt of `context`
/// tokens, then one greedy token; checks it against the host. A board that cannot hold any of them is an
/// [`Outcome`] without a run, not an error.
pub fn measure(model: &Model, board: &Board, contexts: &[usize], timeout: Duration) -> Result<Outcome> {
    let paths = Paths::locate()?;
    let layout = board.packed_layout().with_context(|| format!("{} has no packed layout", board.name))?;
    let ck = &model.checkpoint;
    let mut outcome =
        Outcome { model: model.name, config: ck.config, board: board.clone(), no_fit: Vec::new(), run: None };
    for &context in contexts {
        let started = Instant::now();
        let q = quantize(ck, &model.ranges, context)?;
        let dec = PackedDecoder::new(&q, layout)?;
        let prompt = seeded_tokens(PROMPT_SEED, context, ck.config.vocab_size);
        let sampling = Sampling::Greedy;
        let host_tokens = generate(&dec, &prompt, 1, sampling, &mut |_| {})?;
        let job =
            GenerationJob { prompt: &prompt, steps: 1, sampling, stack: DEFAULT_STACK_BYTES, timeout, tokens: None };
        match run_generation(&paths, board, &dec, &job) {
            Ok(dep) => {
                let r = dep.run;
                if r.step_instructions.len() != context {
                    bail!(
                        "{} on {}: {} decoder steps measured, expected {context}",
                        model.name,
                        board.name,
                        r.step_instructions.len()
                    );
                }
                outcome.run = Some(Measured {
                    context,
                    layout,
                    step_instructions: r.step_instructions,
                    sample_instructions: r.sample_instructions,
                    sizes: dep.sizes,
                    elf: r.sizes,
                    stack_used: r.stack.used,
                    mcu_tokens: r.tokens,
                    host_tokens,
                    wall: started.elapsed(),
                });
                return Ok(outcome);
            }
            Err(DeployError::DoesNotFit(message)) => {
                let sizes = compile_decoder(&dec, sampling, "decoder-fit", &paths.kernels)?.sizes;
                eprintln!("{} on {} at context {context}: does not fit", model.name, board.name);
                outcome.no_fit.push(NoFit { context, sizes, message: relative_board_path(&message, board) });
            }
            Err(e) => return Err(e).with_context(|| format!("{} on {}", model.name, board.name)),
        }
    }
    Ok(outcome)
}

/// One reported context of a measured firmware.
pub struct Row<'a> {
    /// The (model, board) outcome.
    pub outcome: &'a Outcome,
    /// Its run.
    pub run: &'a Measured,
    /// Positions attended over.
    pub context: usize,
    /// Instructions of that decoder step.
    pub instructions: u64,
}

impl Row<'_> {
    /// Multiply-accumulates of the step.
    pub fn macs(&self) -> u64 {
        macs_per_token(&self.outcome.config, self.context)
    }

    /// Tokens per second at the board clock (one instruction per cycle).
    pub fn tokens_per_s(&self) -> f64 {
        self.outcome.board.clock_hz as f64 / self.instructions as f64
    }

    /// MACs per instruction.
    pub fn macs_per_instruction(&self) -> f64 {
        self.macs() as f64 / self.instructions as f64
    }

    /// Instructions / (MACs / 2): how far from two MACs per instruction (`SMLAD`).
    pub fn smlad_ratio(&self) -> f64 {
        self.instructions as f64 / (self.macs() as f64 / 2.0)
    }

    /// Whether the `SMLAD` bound is the core's bound (Cortex-M4/M7).
    pub fn smlad_core(&self) -> bool {
        matches!(self.outcome.board.core, Core::CortexM4 | Core::CortexM7)
    }

    fn json(&self) -> Value {
        let (o, r) = (self.outcome, self.run);
        let (limit, _) = crate::gemm::limit(o.board.core, &format!("{:?}", r.layout));
        json!({
            "model": o.model,
            "board": o.board.name,
            "core": o.board.core.name(),
            "clock_hz": o.board.clock_hz,
            "layout": format!("{:?}", r.layout),
            "fits": true,
            "compiled_context": r.context,
            "context": self.context,
            "position": self.context - 1,
            "instructions_per_token": self.instructions,
            "tokens_per_s": self.tokens_per_s(),
            "macs_per_token": self.macs(),
            "macs_per_instruction": self.macs_per_instruction(),
            "smlad_bound_ratio": self.smlad_core().then(|| self.smlad_ratio()),
            "core_limit_macs_per_instruction": limit,
            "ratio_to_core_limit": self.instructions as f64 / (self.macs() as f64 / limit),
            "arena_bytes": r.sizes.state_bytes(),
            "cache_bytes": r.sizes.cache_bytes,
            "scratch_bytes": r.sizes.scratch_bytes,
            "logits_bytes": r.sizes.logits_bytes,
            "flash_bytes": r.sizes.weight_bytes,
            "elf_flash_bytes": r.elf.flash(),
            "elf_ram_bytes": r.elf.ram(),
            "stack_used_bytes": r.stack_used,
            "sample_instructions": r.sample_instructions,
            "host_tokens": r.host_tokens,
            "mcu_tokens": r.mcu_tokens,
            "bit_exact": r.bit_exact(),
        })
    }
}

/// The reported rows of every outcome that ran.
pub fn rows(outcomes: &[Outcome]) -> Vec<Row<'_>> {
    outcomes
        .iter()
        .filter_map(|o| o.run.as_ref().map(|r| (o, r)))
        .flat_map(|(o, r)| {
            reported_positions(r.context).into_iter().map(move |(context, pos)| Row {
                outcome: o,
                run: r,
                context,
                instructions: r.step_instructions[pos],
            })
        })
        .collect()
}

fn no_fit_json(o: &Outcome, n: &NoFit) -> Value {
    json!({
        "model": o.model,
        "board": o.board.name,
        "core": o.board.core.name(),
        "clock_hz": o.board.clock_hz,
        "fits": false,
        "compiled_context": n.context,
        "context": n.context,
        "instructions_per_token": null,
        "tokens_per_s": null,
        "macs_per_token": macs_per_token(&o.config, n.context),
        "arena_bytes": n.sizes.state_bytes(),
        "cache_bytes": n.sizes.cache_bytes,
        "flash_bytes": n.sizes.weight_bytes,
        "board_sram_bytes": o.board.sram_bytes,
        "board_flash_bytes": o.board.flash_bytes,
        "bit_exact": null,
        "error": n.message,
    })
}

/// `bench/decode.jsonl`: one object per (model, board, context).
pub fn jsonl(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        for n in &o.no_fit {
            out.push_str(&format!("{}\n", no_fit_json(o, n)));
        }
        for r in rows(std::slice::from_ref(o)) {
            out.push_str(&format!("{}\n", r.json()));
        }
    }
    out
}

/// Least-squares line `a + b·p` through the step instructions by position `p`.
pub fn fit_line(steps: &[u64]) -> (f64, f64) {
    let n = steps.len() as f64;
    let mean_p = (n - 1.0) / 2.0;
    let mean_y = steps.iter().map(|&y| y as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (p, &y) in steps.iter().enumerate() {
        let dp = p as f64 - mean_p;
        sxy += dp * (y as f64 - mean_y);
        sxx += dp * dp;
    }
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (mean_y - b * mean_p, b)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// `docs/decode.md`.
pub fn markdown(models: &[Model], outcomes: &[Outcome], ablation: Option<(&Board, &[Variant])>) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# Decoding benchmark: int8 Llama decoders token by token on MCUs\n")?;
    writeln!(
        md,
        "Regenerate with `cargo run --release -p mote-bench -- decode` (writes this file and `bench/decode.jsonl`; \
         QEMU and the MCU Rust targets as for `mote deploy`). Every number below comes from that run. {}\n",
        provenance().unwrap_or_default()
    )?;
    writeln!(
        md,
        "**What is measured.** Each model is quantized to int8 (`mote_llm::quant`), its weights packed for the \
         board's core (`Dsp16` for `SMLAD` on Cortex-M4/M7, `Mve8` for Helium on the M55, `Rv32` on RV32IMC), \
         compiled to a no_std decoder crate (`mote_codegen::decoder`: weights in flash, one `State` with the int8 \
         KV cache in RAM) and built into a firmware (`mote_deploy::run_generation`) that feeds a prompt of {CONTEXT} \
         tokens (BOS, then ids from a seeded LCG, seed {PROMPT_SEED}) position by position and then samples one \
         greedy token. QEMU counts the instructions of every decoder step exactly, so one firmware per (model, \
         board) gives the cost of a token at every position: **context c** is the decoder step at position c − 1 \
         (the token attends over c positions, itself included). The step is the whole `decoder_step`: embedding, \
         per layer RMSNorm, fused QKV projection, rotary positions, attention over the cache, output projection, \
         residual adds, RMSNorm, SwiGLU MLP; final RMSNorm and the {} × {} classifier. Sampling (greedy argmax over \
         the logits) and printing the token are counted separately and not included. **Tokens/s** = board clock / \
         instructions per token ({}). **MACs/token** = per layer dim·(dim + 2·kv_dim) + dim² + 3·dim·hidden + \
         2·context·dim, plus vocab·dim. **Ratio to MACs/2** = instructions / (MACs/2), 1.0 being two MACs per \
         instruction (`SMLAD`, the M4/M7 bound). **Arena** = the decoder's RAM state (KV cache 2·layers·context·\
         kv_dim + scratch + logits + position, `DecoderSizes::state_bytes`); the stack comes on top. **Flash** = \
         weights and parameters of the generated crate / the whole firmware ELF (code + read-only data; on \
         corstone-300 the code sits in the AN547's 512 KB ITCM and the read-only data in its 2 MB SRAM, see \
         boards/corstone-300.toml). \
         **Bit-exact**: the board's generated token equals the host reference's (`mote_llm::generate` over the \
         same packed weights), after all {CONTEXT} prompt positions have gone through the KV cache.\n",
        MICROLLAMA.vocab_size,
        MICROLLAMA.dim,
        mote_deploy::LATENCY_ASSUMPTION
    )?;
    writeln!(md, "Models:\n")?;
    for m in models {
        writeln!(md, "- **{}**: {}.", m.name, m.calibration)?;
    }
    writeln!(md)?;

    writeln!(md, "## Instructions per token\n")?;
    writeln!(
        md,
        "| model | board (core, clock) | context | instructions/token | tokens/s | MACs/token | MACs/instr | ratio to MACs/2 | arena (B) | flash: weights / ELF (B) | bit-exact |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for o in outcomes {
        let board = format!("{} ({}, {} MHz)", o.board.name, o.board.core, o.board.clock_hz / 1_000_000);
        if let Some(n) = o.no_fit.first() {
            let tried: Vec<String> = o.no_fit.iter().map(|n| n.context.to_string()).collect();
            writeln!(
                md,
                "| {} | {board} | {} | does not fit (compiled contexts {} tried, see below) | — | {} | — | — | {} | {} / — | — |",
                o.model,
                n.context,
                tried.join(", "),
                group(macs_per_token(&o.config, n.context)),
                group(n.sizes.state_bytes() as u64),
                group(n.sizes.weight_bytes as u64),
            )?;
        }
        for r in rows(std::slice::from_ref(o)) {
            writeln!(
                md,
                "| {} | {board} | {} | {} | {:.0} | {} | {:.3} | {:.2} | {} | {} / {} | {} |",
                o.model,
                r.context,
                group(r.instructions),
                r.tokens_per_s(),
                group(r.macs()),
                r.macs_per_instruction(),
                r.smlad_ratio(),
                group(r.run.sizes.state_bytes() as u64),
                group(r.run.sizes.weight_bytes as u64),
                group(r.run.elf.flash()),
                if r.run.bit_exact() { "yes" } else { "**no**" },
            )?;
        }
    }
    writeln!(md)?;

    let all = rows(outcomes);
    let spread = all
        .iter()
        .flat_map(|a| {
            all.iter()
                .filter(move |b| {
                    a.outcome.model < b.outcome.model
                        && a.outcome.config == b.outcome.config
                        && a.outcome.board.name == b.outcome.board.name
                        && a.context == b.context
                })
                .map(move |b| (a.instructions as f64 - b.instructions as f64).abs() / a.instructions as f64)
        })
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
    if let Some(spread) = spread {
        writeln!(
            md,
            "The models of the same shape differ by at most {:.2}% in instructions per token (the counts depend \
             slightly on the data), so the shape sets the cost.\n",
            100.0 * spread
        )?;
    }

    let no_fits: Vec<(&Outcome, &NoFit)> = outcomes.iter().flat_map(|o| o.no_fit.iter().map(move |n| (o, n))).collect();
    if !no_fits.is_empty() {
        writeln!(md, "## Boards that cannot hold a model\n")?;
        for o in outcomes.iter().filter(|o| !o.no_fit.is_empty()) {
            let tried: Vec<String> = o.no_fit.iter().map(|n| n.context.to_string()).collect();
            let over =
                |n: &NoFit| (n.sizes.weight_bytes as u64 + mote_deploy::CODE_ESTIMATE_BYTES) > o.board.flash_bytes;
            writeln!(
                md,
                "- **{} on {}** ({} B flash, {} B SRAM): compiled contexts tried: {}. {}",
                o.model,
                o.board.name,
                group(o.board.flash_bytes),
                group(o.board.sram_bytes),
                tried.join(", "),
                match &o.run {
                    Some(r) => format!("Context {} fits and is measured above.", r.context),
                    None => "None fits.".to_string(),
                }
            )?;
            if let Some((first, rest)) = o.no_fit.split_first() {
                writeln!(md, "  - context {}: {}", first.context, first.message)?;
                for n in rest {
                    writeln!(
                        md,
                        "  - context {}: weights {} B (flash), decoder state {} B (RAM); the same error.",
                        n.context,
                        group(n.sizes.weight_bytes as u64),
                        group(n.sizes.state_bytes() as u64)
                    )?;
                }
            }
            let ram_ok = |n: &NoFit| n.sizes.state_bytes() as u64 + DEFAULT_STACK_BYTES <= o.board.sram_bytes;
            if o.run.is_none() && o.no_fit.iter().all(over) && o.no_fit.iter().all(ram_ok) {
                writeln!(
                    md,
                    "  - The flash is the limit, not the RAM: the weights do not depend on the context except for the \
                     rotary table (context·head_size·2 B), so no shorter context fits, while the KV cache \
                     (2·layers·context·kv_dim B) would fit the RAM at every context tried."
                )?;
            }
        }
        writeln!(md)?;
    }

    writeln!(md, "## The issue's targets (microllama-shape, context {TARGET_CONTEXT})\n")?;
    let find = |board: &str| {
        rows(outcomes).into_iter().find(|r| {
            r.outcome.model == "microllama-shape" && r.outcome.board.name == board && r.context == TARGET_CONTEXT
        })
    };
    writeln!(md, "| target | measured | verdict |")?;
    writeln!(md, "|---|---|---|")?;
    for (board, rate) in TARGET_RATES {
        let Some(r) = find(board) else {
            writeln!(md, "| ≥ {rate:.0} tokens/s on {board} | not measured | **missed** |")?;
            continue;
        };
        let budget = (r.outcome.board.clock_hz as f64 / rate).floor() as u64;
        let got = r.tokens_per_s();
        let how = if got >= rate {
            format!("{:.2}× the target ({} instructions under the budget)", got / rate, group(budget - r.instructions))
        } else {
            format!(
                "{:.1}% of the target: {} instructions over the budget ({:.2}× too many)",
                100.0 * got / rate,
                group(r.instructions - budget),
                r.instructions as f64 / budget as f64
            )
        };
        writeln!(
            md,
            "| ≥ {rate:.0} tokens/s on one {} at {} MHz ({board}): ≤ {} instructions/token | {} instructions, {got:.0} tokens/s | {}: {how} |",
            r.outcome.board.core,
            r.outcome.board.clock_hz / 1_000_000,
            group(budget),
            group(r.instructions),
            verdict(got >= rate),
        )?;
    }
    for (board, _) in TARGET_RATES {
        let Some(r) = find(board) else { continue };
        let ratio = r.smlad_ratio();
        let half = r.macs() / 2;
        writeln!(
            md,
            "| instructions ≤ {TARGET_BOUND_RATIO}× MACs/2 on {board} ({} × {} = {}) | {} instructions = {ratio:.2}× MACs/2 | {}{} |",
            TARGET_BOUND_RATIO,
            group(half),
            group((TARGET_BOUND_RATIO * half as f64) as u64),
            group(r.instructions),
            verdict(ratio <= TARGET_BOUND_RATIO),
            if ratio <= TARGET_BOUND_RATIO {
                String::new()
            } else {
                format!(": {:.2}× over the allowed ratio", ratio / TARGET_BOUND_RATIO)
            }
        )?;
    }
    writeln!(md)?;
    if let Some(r) = find("stm32l4r5") {
        let cmsis_rate = r.outcome.board.clock_hz as f64 / CMSIS_NN_INSTRUCTIONS as f64;
        writeln!(
            md,
            "Anchors of the issue: Deeploy runs this shape at {DEEPLOY_TOKENS_PER_S:.0} tokens/s on an 8-core RV32 \
             cluster with an NPU; a CMSIS-NN build is estimated at ~{} instructions/token (~{cmsis_rate:.0} tokens/s \
             at 120 MHz). mote on one Cortex-M4 at context {TARGET_CONTEXT}: {} instructions/token, {} the \
             CMSIS-NN estimate, {:.0} tokens/s = {:.2}× Deeploy's rate.\n",
            group(CMSIS_NN_INSTRUCTIONS),
            group(r.instructions),
            if r.instructions <= CMSIS_NN_INSTRUCTIONS {
                format!("{:.2}× fewer than", CMSIS_NN_INSTRUCTIONS as f64 / r.instructions as f64)
            } else {
                format!("{:.2}× more than", r.instructions as f64 / CMSIS_NN_INSTRUCTIONS as f64)
            },
            r.tokens_per_s(),
            r.tokens_per_s() / DEEPLOY_TOKENS_PER_S
        )?;
    }

    writeln!(md, "## Where the instructions go\n")?;
    writeln!(
        md,
        "From the per-position step counts of each firmware: a least-squares line a + b·p through all {CONTEXT} \
         steps. b is the cost of one more cached position (attention: scores, softmax and the weighted values of \
         every head in every layer; 2·dim·layers MACs), a the cost of everything that does not grow with the \
         context (projections, MLP, norms, residual adds, classifier, and the per-head set-up of attention). The \
         attention share at context {TARGET_CONTEXT} is (step − a) / step there. The fixed part is compared with \
         the non-attention MACs / 2 (the `SMLAD` bound of the linear layers). Max |residual| of the line says how \
         linear the steps are.\n"
    )?;
    writeln!(
        md,
        "| model | board | a: fixed instructions | fixed MACs | a / (fixed MACs/2) | b: instructions per cached position | per attention MAC | attention share at {TARGET_CONTEXT} | max abs residual | sampling + print |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for o in outcomes {
        let Some(r) = &o.run else { continue };
        let (a, b) = fit_line(&r.step_instructions);
        let c = &o.config;
        let fixed_macs = macs_per_token(c, 0);
        let attn_macs = (2 * c.dim * c.n_layers) as f64;
        let resid = r
            .step_instructions
            .iter()
            .enumerate()
            .map(|(p, &y)| (y as f64 - (a + b * p as f64)).abs())
            .fold(0.0, f64::max);
        let share = r
            .step_instructions
            .get(TARGET_CONTEXT - 1)
            .map_or("—".to_string(), |&s| format!("{:.1}%", 100.0 * (s as f64 - a) / s as f64));
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {share} | {:.0} | {} |",
            o.model,
            o.board.name,
            group(a.round() as u64),
            group(fixed_macs),
            a / (fixed_macs as f64 / 2.0),
            b,
            b / attn_macs,
            resid,
            group(r.sample_instructions),
        )?;
    }
    writeln!(md)?;
    if let Some((board, vs)) = ablation {
        ablation_markdown(&mut md, board, vs, outcomes)?;
    }
    writeln!(md, "## Runs\n")?;
    writeln!(md, "| model | board | layout | compiled context | KV cache (B) | scratch (B) | logits (B) | ELF RAM (B) | stack used (B) | tokens host / board | wall time |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for o in outcomes {
        let Some(r) = &o.run else { continue };
        writeln!(
            md,
            "| {} | {} | {:?} | {} | {} | {} | {} | {} | {} | {:?} / {:?} | {:.0} s |",
            o.model,
            o.board.name,
            r.layout,
            r.context,
            group(r.sizes.cache_bytes as u64),
            group(r.sizes.scratch_bytes as u64),
            group(r.sizes.logits_bytes as u64),
            group(r.elf.ram()),
            group(r.stack_used),
            r.host_tokens,
            r.mcu_tokens,
            r.wall.as_secs_f64()
        )?;
    }
    Ok(md)
}

/// Compiled context of the ablation firmwares.
pub const ABLATION_CONTEXT: usize = 32;

/// The shape variants of the ablation: the microLlama shape, then one dimension changed at a time.
pub fn ablation_variants() -> [(&'static str, Config); 4] {
    [
        ("microLlama shape", MICROLLAMA),
        ("1 layer", Config { n_layers: 1, ..MICROLLAMA }),
        ("hidden 128", Config { hidden_dim: 128, ..MICROLLAMA }),
        ("1 head of 64 (1 key/value head)", Config { n_heads: 1, n_kv_heads: 1, ..MICROLLAMA }),
    ]
}

/// One shape variant measured.
pub struct Variant {
    /// What changed.
    pub name: &'static str,
    /// The shape.
    pub config: Config,
    /// The decoder step at context 1.
    pub first: u64,
    /// Least-squares instructions per cached position over the [`ABLATION_CONTEXT`] steps.
    pub per_position: f64,
    /// The board's token equals the host's.
    pub bit_exact: bool,
}

/// The ablation on `board`: each variant of [`ablation_variants`] with seeded random weights, calibrated on two
/// seeded sequences, in a firmware of [`ABLATION_CONTEXT`] positions.
pub fn ablation(board: &Board, timeout: Duration) -> Result<Vec<Variant>> {
    let mut out = Vec::new();
    for (name, config) in ablation_variants() {
        let ck = Checkpoint::random(config, WEIGHT_SEED)?;
        let seqs: Vec<Vec<u32>> =
            (0..2).map(|i| seeded_tokens(CALIB_SEED + i, ABLATION_CONTEXT, config.vocab_size)).collect();
        let model = Model::new("ablation", ck, &seqs, String::new())?;
        let o = measure(&model, board, &[ABLATION_CONTEXT], timeout)?;
        let r = o.run.with_context(|| format!("ablation `{name}` does not fit {}", board.name))?;
        out.push(Variant {
            name,
            config,
            first: r.step_instructions[0],
            per_position: fit_line(&r.step_instructions).1,
            bit_exact: r.bit_exact(),
        });
    }
    Ok(out)
}

/// The ablation's section of `docs/decode.md`.
fn ablation_markdown(md: &mut String, board: &Board, vs: &[Variant], outcomes: &[Outcome]) -> Result<()> {
    writeln!(md, "### Ablation on {} ({})\n", board.name, board.core)?;
    writeln!(
        md,
        "The microLlama shape with one dimension changed at a time (seeded random weights, a firmware of \
         {ABLATION_CONTEXT} positions each, bit-exact checked like the table): the step at context 1 and the \
         least-squares cost per cached position.\n"
    )?;
    writeln!(md, "| variant | step at context 1 | per cached position | MACs at context 1 | bit-exact |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    for v in vs {
        writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} |",
            v.name,
            group(v.first),
            v.per_position,
            group(macs_per_token(&v.config, 1)),
            if v.bit_exact { "yes" } else { "**no**" }
        )?;
    }
    let [base, one_layer, h128, one_head] = vs else { bail!("the ablation has {} variants, not 4", vs.len()) };
    let c = &base.config;
    let (layers, heads) = (c.n_layers as f64, c.n_heads as f64);
    let (f, l1, h, o1) = (base.first as f64, one_layer.first as f64, h128.first as f64, one_head.first as f64);
    let per_layer = (f - l1) / (layers - 1.0);
    let outside = l1 - per_layer;
    let mlp = (f - h) * c.hidden_dim as f64 / (c.hidden_dim - h128.config.hidden_dim) as f64 / layers;
    let rest = per_layer - mlp;
    let (d, kv, hid, v) = (c.dim as f64, c.kv_dim() as f64, c.hidden_dim as f64, c.vocab_size as f64);
    let proj_half = (d * (d + 2.0 * kv) + d * d) / 2.0;
    let per_head = (f - o1) / (layers * (heads - 1.0));
    let pos_head = base.per_position / (layers * heads);
    let pos_wide = one_head.per_position / layers;
    writeln!(md, "\nDerived (at context 1, per decoder step unless stated):\n")?;
    writeln!(
        md,
        "- **One transformer block**: {} instructions ((8 layers − 1 layer) / 7), {:.0}% of the step; × {} layers = \
         {}.",
        group(per_layer.round() as u64),
        100.0 * per_layer * layers / f,
        c.n_layers,
        group((per_layer * layers).round() as u64)
    )?;
    writeln!(
        md,
        "- **Outside the blocks** (embedding copy, final RMSNorm, {}×{} classifier): {} instructions; the \
         classifier's MACs/2 are {}.",
        c.vocab_size,
        c.dim,
        group(outside.round() as u64),
        group((v * d / 2.0) as u64)
    )?;
    writeln!(
        md,
        "- **SwiGLU MLP per block** (RMSNorm excluded; scaled from hidden 256 → 128, linear in hidden): {} \
         instructions for {} MACs ({:.2}× MACs/2).",
        group(mlp.round() as u64),
        group((3.0 * d * hid) as u64),
        mlp / (1.5 * d * hid)
    )?;
    writeln!(
        md,
        "- **Attention half of a block** (the rest: two RMSNorms, QKV and output projections, RoPE, cache writes, \
         attention over one position for every head, two residual adds): {} instructions; its projections' MACs/2 \
         are {} ({:.2}× that).",
        group(rest.round() as u64),
        group(proj_half as u64),
        rest / proj_half
    )?;
    writeln!(
        md,
        "- **Per head** (16 heads of 4 → 1 head of 64, same MACs): {} instructions per head and block at context 1 \
         ({} per step for {} heads × {} blocks).",
        group(per_head.round() as u64),
        group((per_head * heads * layers).round() as u64),
        c.n_heads,
        c.n_layers
    )?;
    writeln!(
        md,
        "- **Per cached position**: {pos_head:.0} instructions per head and block with head size {} ({:.1} per \
         attention MAC), {pos_wide:.0} per block with one head of {} ({:.1} per attention MAC): the per-position \
         overhead (score requantization, softmax, loop control) is paid per head, so 4-wide heads cost {:.1}× \
         more per cached position than one 64-wide head.\n",
        c.head_size(),
        pos_head / (2.0 * c.head_size() as f64),
        one_head.config.head_size(),
        pos_wide / (2.0 * d),
        base.per_position / one_head.per_position
    )?;
    let run = outcomes
        .iter()
        .find(|o| o.model == "microllama-shape" && o.board.name == board.name)
        .and_then(|o| o.run.as_ref());
    if let Some(steps) = run.map(|r| &r.step_instructions).filter(|s| s.len() >= TARGET_CONTEXT) {
        let total = steps[TARGET_CONTEXT - 1] as f64;
        let growth = total - steps[0] as f64;
        let heads_setup = per_head * heads * layers;
        let parts = [
            (format!("attention over the {} positions beyond the first (the step's growth from context 1, measured in the table's firmware)", TARGET_CONTEXT - 1), growth),
            ("the MLPs".to_string(), mlp * layers),
            ("the per-head attention set-up at context 1".to_string(), heads_setup),
            ("the rest of the blocks (RMSNorms, QKV and output projections, RoPE, cache writes, residual adds)".to_string(), rest * layers - heads_setup),
            ("outside the blocks (classifier, final RMSNorm, embedding)".to_string(), outside),
        ];
        let list: Vec<String> = parts
            .iter()
            .map(|(what, n)| format!("{what}: {} ({:.0}%)", group(n.round().max(0.0) as u64), 100.0 * n / total))
            .collect();
        writeln!(
            md,
            "**At context {TARGET_CONTEXT}** ({} instructions on {}), approximately (the context-1 parts come from \
             the ablation's firmwares, so the sum is off by {:.1}%): {}.\n",
            group(total as u64),
            board.name,
            100.0 * (parts.iter().map(|p| p.1).sum::<f64>() - total).abs() / total,
            list.join("; ")
        )?;
    }
    Ok(())
}

/// The sources the measured firmwares and their host reference are built from.
const DECODER_PATH: [&str; 6] = [
    "crates/mote-kernels",
    "crates/mote-codegen",
    "crates/mote-llm",
    "crates/mote-deploy",
    "crates/mote-qemu",
    "firmware",
];

/// The commit the decoder path ([`DECODER_PATH`]) was built from and its files with uncommitted changes, as one
/// sentence; `None` outside a git checkout.
fn provenance() -> Option<String> {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(repo_root()).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let status = git(&[&["status", "--porcelain", "--untracked-files=no", "--"][..], &DECODER_PATH[..]].concat())?;
    let dirty: Vec<&str> = status.lines().filter_map(|l| l.get(3..)).collect();
    let head = head.trim();
    Some(if dirty.is_empty() {
        format!("Measured with the decoder path (`{}`) at commit `{head}`.", DECODER_PATH.join("`, `"))
    } else {
        format!("Measured at commit `{head}` with uncommitted changes in {}.", dirty.join(", "))
    })
}

/// `message` with the board profile's path made relative to the checkout (`boards/<file>`).
fn relative_board_path(message: &str, board: &Board) -> String {
    match &board.source {
        mote_deploy::BoardSource::File(p) => match p.file_name() {
            Some(f) => message.replace(&p.display().to_string(), &format!("boards/{}", f.to_string_lossy())),
            None => message.to_string(),
        },
        mote_deploy::BoardSource::Builtin(_) => message.to_string(),
    }
}

/// `mote-bench decode`: measures every model on every board, writes `docs/decode.md` and `bench/decode.jsonl`,
/// and fails when a run is not bit-exact (after writing the files, which say which).
pub fn run_table(timeout: Duration, boards: &[String]) -> Result<()> {
    let root = repo_root();
    let started = Instant::now();
    let mut models = vec![microllama_shape()?];
    match fortunes(&root.join("examples/fortunes"))? {
        Some(m) => models.push(m),
        None => eprintln!("examples/fortunes/model.bin is not there: the fortunes rows are left out"),
    }
    let mut outcomes = Vec::new();
    for m in &models {
        for name in boards {
            let board = Board::resolve(name)?;
            let contexts: Vec<usize> = std::iter::once(CONTEXT).chain(FALLBACK_CONTEXTS).collect();
            let o = measure(m, &board, &contexts, timeout)?;
            if let Some(r) = &o.run {
                eprintln!(
                    "{} on {}: context {}: {} .. {} instructions/step, bit-exact {}, {:.0} s",
                    m.name,
                    board.name,
                    r.context,
                    group(r.step_instructions[0]),
                    group(*r.step_instructions.last().unwrap_or(&0)),
                    r.bit_exact(),
                    r.wall.as_secs_f64()
                );
            }
            outcomes.push(o);
        }
    }
    let m4 = Board::resolve("stm32l4r5")?;
    let variants = if boards.contains(&m4.name) { Some(ablation(&m4, timeout)?) } else { None };
    let md = markdown(&models, &outcomes, variants.as_deref().map(|v| (&m4, v)))?;
    std::fs::write(root.join("docs/decode.md"), &md)?;
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(root.join("bench/decode.jsonl"), jsonl(&outcomes))?;
    print!("{md}");
    eprintln!("decode: {:.0} s", started.elapsed().as_secs_f64());
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| o.run.as_ref().is_some_and(|r| !r.bit_exact()))
        .map(|o| format!("{} on {}", o.model, o.board.name))
        .collect();
    if !bad.is_empty() {
        bail!("not bit-exact: {}", bad.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_of_the_microllama_shape() {
        // Per layer: QKV 64·192 + wo 64·64 + MLP 3·64·256 = 65,536; classifier 512·64 = 32,768.
        assert_eq!(macs_per_token(&MICROLLAMA, 0), 8 * 65_536 + 32_768);
        // Attention: 2·context·dim per layer.
        assert_eq!(macs_per_token(&MICROLLAMA, 128), 557_056 + 8 * 2 * 128 * 64);
        assert_eq!(macs_per_token(&MICROLLAMA, 128), 688_128);
        // Grouped-query attention shrinks K and V only.
        let gqa = Config { n_kv_heads: 4, ..MICROLLAMA };
        assert_eq!(macs_per_token(&gqa, 1) - macs_per_token(&gqa, 0), 8 * 2 * 64);
        assert_eq!(macs_per_token(&MICROLLAMA, 0) - macs_per_token(&gqa, 0), 8 * 64 * 2 * (64 - 16));
    }

    #[test]
    fn contexts_are_positions_plus_one() {
        assert_eq!(reported_positions(256), vec![(1, 0), (16, 15), (64, 63), (128, 127), (256, 255)]);
        assert_eq!(reported_positions(100), vec![(1, 0), (16, 15), (64, 63)]);
        // The prompt fills the whole compiled context and one greedy token follows: the host accepts that.
        let prompt = seeded_tokens(PROMPT_SEED, CONTEXT, 512);
        assert_eq!(prompt.len(), CONTEXT);
        assert_eq!(prompt[0], BOS);
        assert!(prompt[1..].iter().all(|&t| (3..512).contains(&t)));
        assert_ne!(prompt[1..], seeded_tokens(PROMPT_SEED + 1, CONTEXT, 512)[1..]);
    }

    #[test]
    fn line_fit() {
        let steps: Vec<u64> = (0..10).map(|p| 1000 + 7 * p).collect();
        let (a, b) = fit_line(&steps);
        assert!((a - 1000.0).abs() < 1e-9 && (b - 7.0).abs() < 1e-9);
    }

    #[test]
    fn small_decoder_on_cortex_m4() {
        let board = Board::resolve("stm32l4r5").unwrap();
        let paths = Paths::locate().unwrap();
        if mote_qemu::tools_or_skip(board.core, &paths.plugin_dir()).is_none() {
            return;
        }
        let config = Config {
            dim: 16,
            hidden_dim: 32,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 40,
            seq_len: 16,
            shared_classifier: true,
        };
        let ck = Checkpoint::random(config, 3).unwrap();
        let seqs = vec![seeded_tokens(1, 16, 40), seeded_tokens(2, 16, 40)];
        let model = Model::new("tiny", ck, &seqs, String::new()).unwrap();
        let o = measure(&model, &board, &[16], Duration::from_secs(120)).unwrap();
        assert!(o.no_fit.is_empty());
        let r = o.run.as_ref().unwrap();
        assert!(r.bit_exact(), "board {:?}, host {:?}", r.mcu_tokens, r.host_tokens);
        assert_eq!(r.step_instructions.len(), 16);
        assert!(r.step_instructions[15] > r.step_instructions[0]);
        let outcomes = [o];
        let rows = rows(&outcomes);
        assert_eq!(rows.iter().map(|r| r.context).collect::<Vec<_>>(), vec![1, 16]);
        assert_eq!(rows[1].instructions, outcomes[0].run.as_ref().unwrap().step_instructions[15]);
        assert_eq!(jsonl(&outcomes).lines().count(), 2);
    }
}
