//! `mote compile`: an int8 model → a standalone `#![no_std]` Rust crate for a board (with `--c-abi`, also a C
//! header and a `staticlib`), refused before anything is written when it does not fit the board.
use crate::io::{load_model, parse_shape};
use anyhow::{bail, Result};
use mote_core::passes::attention::{fuse_attention, FusedAttention, SchedulePolicy};
use mote_core::passes::patches::{decompose_patch_embeddings, PatchBlocks};
use mote_core::passes::rows::{chunk_mlps, split_heads, ChunkedMlp};
use mote_core::{DType, Graph};
use mote_deploy::Strategy;
use mote_deploy::{
    c_header, check_fit, crate_name_for, group, write_crate_dir, Board, CompileOptions, Compiled, Fit, Paths,
    DEFAULT_STACK_BYTES,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arena planning strategies on the command line.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum PlanStrategy {
    /// The best of greedy, best-fit and (for small graphs) the exact search.
    #[default]
    Best,
    /// TFLite Micro's greedy-by-size.
    Greedy,
    /// Orderings portfolio with first/best fit and local search.
    BestFit,
    /// Budgeted branch and bound.
    Exact,
}

impl From<PlanStrategy> for Strategy {
    fn from(s: PlanStrategy) -> Strategy {
        match s {
            PlanStrategy::Best => Strategy::Best,
            PlanStrategy::Greedy => Strategy::GreedyBySize,
            PlanStrategy::BestFit => Strategy::BestFit,
            PlanStrategy::Exact => Strategy::Exact,
        }
    }
}

/// Arguments of `mote compile`.
#[derive(clap::Args)]
pub struct Args {
    /// The int8 model (a QDQ ONNX model, e.g. from `mote quantize`).
    model: PathBuf,
    /// Board: a name (`stm32l4r5`, ... or NAME.toml in $MOTE_BOARDS) or a board file path.
    #[arg(long)]
    board: String,
    /// Directory to write the crate to (created; must not exist unless --force).
    #[arg(short, long)]
    output: PathBuf,
    /// Also emit a C header and a `staticlib` with the C entry point `mote_run` (cargo feature `c-abi`).
    #[arg(long)]
    c_abi: bool,
    /// Crate name (default: from the model's file name).
    #[arg(long)]
    name: Option<String>,
    /// Replace the output directory if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    build: BuildArgs,
}

/// Options shared by `mote compile` and `mote deploy`: how the model is compiled for the board.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Stack bytes reserved at the top of SRAM besides the arena (the firmware's memory map and the fit check).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_BYTES)]
    pub stack: u64,
    /// Arena planning strategy.
    #[arg(long, value_enum, default_value_t)]
    pub strategy: PlanStrategy,
    /// Static shape for a model input, e.g. `--shape x=1x16x64` (repeatable).
    #[arg(long = "shape", value_parser = parse_shape)]
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Device type of an exact-integer graph's input, e.g. `--input-type input=u8` (i8, u8, i16, i32;
    /// default i8; repeatable). Ignored for int8 (QDQ) models.
    #[arg(long = "input-type", value_name = "NAME=TYPE", value_parser = parse_input_type)]
    pub input_types: Vec<(String, DType)>,
    /// Plain weights and the portable kernels even where the board's core has faster ones (packed weights and
    /// SMLAD/Helium assembly): for comparisons, or to save the packed weights' flash.
    #[arg(long)]
    pub portable_kernels: bool,
    /// Self-attention blocks: one fused kernel per block, computed in row blocks planned for the board's SRAM
    /// (`fused`), or layer by layer with the whole attention map (`layers`).
    #[arg(long, value_enum, default_value_t)]
    pub attention: AttentionMode,
    /// Query rows per block of fused attention, instead of the planner's choice.
    #[arg(long, value_name = "ROWS")]
    pub attention_rows: Option<usize>,
    /// Scratch each fused attention block may take (default: the board's SRAM). The planner takes the schedule
    /// with the least scratch among those within a few percent of the fewest instructions; a smaller budget
    /// trades instructions for arena.
    #[arg(long, value_name = "BYTES")]
    pub attention_scratch: Option<usize>,
    /// Token rows per block of an MLP (linear, element-wise ops, linear), so only one block of its wide hidden
    /// tensor is alive; 0 computes every MLP whole. Default: the block size whose plan needs the smallest arena,
    /// the fewest blocks among equals (no blocks when they save no arena).
    #[arg(long, value_name = "ROWS")]
    pub mlp_rows: Option<usize>,
    /// Pooled rows per block of a convolutional tokenizer (convolution, per-channel ops, pooling), so only a block
    /// of the convolution's output is alive; 0 computes every tokenizer whole. Default: as for `--mlp-rows`.
    #[arg(long, value_name = "ROWS")]
    pub patch_rows: Option<usize>,
}

/// How `--attention` runs self-attention blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttentionMode {
    /// One fused kernel per block (depth-first: a block of score rows alive at a time).
    #[default]
    Fused,
    /// The layer-by-layer ops, with the whole attention map.
    Layers,
}

impl BuildArgs {
    /// The defaults of the flags, with these input shapes.
    pub fn with_shapes(shapes: &[(String, Vec<usize>)]) -> Self {
        BuildArgs {
            stack: DEFAULT_STACK_BYTES,
            strategy: PlanStrategy::default(),
            shapes: shapes.to_vec(),
            input_types: Vec::new(),
            portable_kernels: false,
            attention: AttentionMode::default(),
            attention_rows: None,
            attention_scratch: None,
            mlp_rows: None,
            patch_rows: None,
        }
    }
}

/// Parses `name=u8` into an input name and its device type.
pub fn parse_input_type(s: &str) -> Result<(String, DType), String> {
    let (name, ty) = s.rsplit_once('=').ok_or_else(|| format!("`{s}`: expected NAME=TYPE, e.g. input=u8"))?;
    let dtype = match ty.trim() {
        "i8" => DType::I8,
        "u8" => DType::U8,
        "i16" => DType::I16,
        "i32" => DType::I32,
        other => return Err(format!("`{s}`: type `{other}` is not one of i8, u8, i16, i32")),
    };
    Ok((name.to_string(), dtype))
}

/// A model compiled for a board, checked to fit.
pub struct ForBoard {
    /// The board.
    pub board: Board,
    /// The int8 graph.
    pub graph: Graph,
    /// The generated crate.
    pub compiled: Compiled,
    /// The crate's package name.
    pub crate_name: String,
    /// The options it was compiled with (the host reference needs the same).
    pub opts: CompileOptions,
    /// mote's paths (kernels, runtime, target dir).
    pub paths: Paths,
    /// What the user should know about how it was compiled (fused attention blocks, plain weights instead of packed
    /// ones), to print once the model is known to fit.
    pub notes: Vec<String>,
}

/// Checks a crate name: what cargo accepts as a package name.
fn check_crate_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("--name `{name}`: a crate name starts with a letter and has only letters, digits, `-` and `_`");
    }
    Ok(())
}

/// Resolves the board, loads and compiles the model (no fit check yet).
pub fn compile_for_board(
    model: &Path,
    board: &str,
    build: &BuildArgs,
    name: Option<&str>,
    c_abi: bool,
) -> Result<ForBoard> {
    let board = Board::resolve(board)?;
    let crate_name = name.map_or_else(|| crate_name_for(model), str::to_string);
    check_crate_name(&crate_name)?;
    let paths = Paths::locate()?;
    let mut graph = load_model(model, &build.shapes)?;
    let mut notes = Vec::new();
    if build.attention == AttentionMode::Fused {
        let budget_bytes = build.attention_scratch.unwrap_or(board.sram_bytes as usize);
        let policy = SchedulePolicy { budget_bytes, block_rows: build.attention_rows };
        let fused = fuse_attention(&mut graph, &policy)
            .map_err(|e| anyhow::anyhow!("{}: fusing attention: {e}", model.display()))?;
        notes.extend(fused.iter().map(attention_note));
        let heads = split_heads(&mut graph)
            .map_err(|e| anyhow::anyhow!("{}: splitting attention heads: {e}", model.display()))?;
        notes.extend(heads.iter().map(|h| {
            format!(
                "attention `{}` (layer by layer): {} heads one at a time (one head's scores alive instead of {} values)",
                h.output, h.heads, h.map_elements
            )
        }));
    }
    let mut opts = CompileOptions::new(crate_name.clone(), paths.kernels.clone());
    opts.strategy = build.strategy.into();
    opts.c_abi = c_abi;
    opts.input_types = build.input_types.clone();
    opts.packed_layout = if build.portable_kernels { None } else { board.packed_layout() };
    let (graph, blocks, chosen) = row_blocks(graph, (build.patch_rows, build.mlp_rows), &opts)
        .map_err(|e| anyhow::anyhow!("{}: cutting tokenizers and MLPs into row blocks: {e}", model.display()))?;
    notes.extend(blocks.patches.iter().map(|p| {
        format!(
            "tokenizer `{}`: {} pooled rows in blocks of {} (a block of the convolution's {} outputs alive at a time)",
            p.output,
            p.rows,
            p.block_rows,
            group(p.conv_elements as u64)
        )
    }));
    notes.extend(blocks.mlps.iter().map(|m| {
        format!(
            "MLP `{}`: {} token rows in blocks of {} (one block of the {}-wide hidden tensor alive at a time)",
            m.output, m.rows, m.block_rows, m.hidden
        )
    }));
    let compile = |opts: &CompileOptions| {
        mote_codegen::compile(&graph, opts)
            .map_err(|e| anyhow::anyhow!("{}: cannot compile for the MCU: {e}", model.display()))
    };
    let mut compiled = match chosen {
        Some(c) => c,
        None => compile(&opts)?,
    };
    // Packed (16-bit) weights are faster but larger: when they leave less than twice the code estimate of the
    // flash free (the code and its tables are only known after linking), plain weights are used instead.
    let flash_needed = compiled.weight_bytes as u64 + 2 * mote_deploy::CODE_ESTIMATE_BYTES;
    if let Some(layout) = opts.packed_layout.filter(|_| flash_needed > board.flash_bytes) {
        let plain = compile(&CompileOptions { packed_layout: None, ..opts.clone() })?;
        notes.push(format!(
            "note: weights packed for {}'s fast kernels ({layout:?}) take {} B, too much of its {} B of flash; \
             using plain weights ({} B) and the portable kernels",
            board.name,
            mote_deploy::group(compiled.weight_bytes as u64),
            mote_deploy::group(board.flash_bytes),
            mote_deploy::group(plain.weight_bytes as u64)
        ));
        opts.packed_layout = None;
        compiled = plain;
    }
    Ok(ForBoard { board, graph, compiled, crate_name, opts, paths, notes })
}

/// The row blocks [`row_blocks`] chose.
#[derive(Default)]
struct RowBlocks {
    patches: Vec<PatchBlocks>,
    mlps: Vec<ChunkedMlp>,
}

impl RowBlocks {
    /// Blocks in all (each costs a few calls).
    fn count(&self) -> usize {
        let p = self.patches.iter().map(|p| p.rows.div_ceil(p.block_rows));
        p.chain(self.mlps.iter().map(|m| m.rows.div_ceil(m.block_rows))).sum()
    }
}

/// The block sizes to try for a pass over tensors of at most `rows` rows (0: the pass finds nothing): the user's
/// (`Some`), else none, the pass's default and the powers of two below `rows`.
fn candidates(given: Option<usize>, rows: usize) -> Vec<Option<usize>> {
    match given {
        Some(r) => vec![Some(r)],
        None if rows == 0 => vec![Some(0)],
        None => [Some(0), None]
            .into_iter()
            .chain((0..).map(|k| Some(1 << k)).take_while(|r| r.unwrap_or(0) < rows))
            .collect(),
    }
}

/// Cuts `graph`'s convolutional tokenizers and MLPs into row blocks (see `--patch-rows` and `--mlp-rows`):
/// the block sizes given, else among [`candidates`] those whose plan with `opts` needs the smallest arena, with
/// the fewest blocks among equals (none when blocks save no arena). Returns the graph, its blocks and its
/// compilation with `opts` (`None` when no candidate compiled).
fn row_blocks(
    graph: Graph,
    (patch_rows, mlp_rows): (Option<usize>, Option<usize>),
    opts: &CompileOptions,
) -> mote_core::Result<(Graph, RowBlocks, Option<Compiled>)> {
    let attempt = |p: Option<usize>, m: Option<usize>| -> mote_core::Result<(Compiled, Graph, RowBlocks)> {
        let mut g = graph.clone();
        let patches = decompose_patch_embeddings(&mut g, p)?;
        let blocks = RowBlocks { patches, mlps: chunk_mlps(&mut g, m)? };
        Ok((mote_codegen::compile(&g, opts)?, g, blocks))
    };
    // The rows the passes would block by default bound the sizes worth trying.
    let mut probe = graph.clone();
    let patch_max =
        decompose_patch_embeddings(&mut probe, None).map_or(0, |p| p.iter().map(|p| p.rows).max().unwrap_or(0));
    let mlp_max = chunk_mlps(&mut probe, None).map_or(0, |m| m.iter().map(|m| m.rows).max().unwrap_or(0));
    let mut best: Option<((usize, usize), Compiled, Graph, RowBlocks)> = None;
    for p in candidates(patch_rows, patch_max) {
        for m in candidates(mlp_rows, mlp_max) {
            // A block size the user gave must work; one the search tries is skipped if it does not.
            let (compiled, g, blocks) = match attempt(p, m) {
                Ok(a) => a,
                Err(e) if patch_rows.is_some() || mlp_rows.is_some() => return Err(e),
                Err(_) => continue,
            };
            let key = (compiled.arena.best, blocks.count());
            if best.as_ref().is_none_or(|b| key < b.0) {
                best = Some((key, compiled, g, blocks));
            }
        }
    }
    // Nothing compiled: the caller's compile of the whole graph reports why.
    Ok(match best {
        Some((_, compiled, g, blocks)) => (g, blocks, Some(compiled)),
        None => (graph, RowBlocks::default(), None),
    })
}

/// One line about a fused attention block.
fn attention_note(f: &FusedAttention) -> String {
    let s = &f.shape;
    let kv = if s.project_k || s.project_v { "projected keys/values" } else { "keys/values = x (fused weights)" };
    format!(
        "attention `{}`: fused, {} tokens x {}, {} heads ({}/{} wide), {kv}; {:?}, scratch {} B",
        f.output,
        s.seq,
        s.embed,
        s.heads,
        s.qk_dim,
        s.v_dim,
        f.schedule,
        group(4 * f.scratch.total_words() as u64)
    )
}

/// One line saying how the model fits the board.
pub fn fit_line(board: &Board, fit: &Fit) -> String {
    format!(
        "fits {}: SRAM {} of {} B (arena {} + outputs {} + stack reserve {}), flash {} of {} B (weights {} + code \
         estimate {}{})",
        board.name,
        group(fit.sram_needed),
        group(fit.sram_limit),
        group(fit.arena_bytes),
        group(fit.output_bytes),
        group(fit.stack_bytes),
        group(fit.flash_needed),
        group(fit.flash_limit),
        group(fit.weight_bytes),
        group(fit.code_estimate),
        if fit.data_bytes > 0 { format!(" + inputs {}", group(fit.data_bytes)) } else { String::new() }
    )
}

/// Runs `mote compile`.
pub fn main(a: Args) -> Result<ExitCode> {
    let fb = compile_for_board(&a.model, &a.board, &a.build, a.name.as_deref(), a.c_abi)?;
    let fit = check_fit(&fb.board, &fb.compiled, a.build.stack, 0)?;
    let mut files = fb.compiled.files.clone();
    if a.c_abi {
        let header_name = format!("{}.h", fb.crate_name.replace('-', "_"));
        let model = a.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        files.push((PathBuf::from(header_name), c_header(&fb.crate_name, &model, &fb.compiled)));
    }
    write_crate_dir(&a.output, &files, a.force)?;
    for note in &fb.notes {
        eprintln!("{note}");
    }
    let c = &fb.compiled;
    println!(
        "wrote {} (crate `{}`, {} layers{}): arena {} B ({} plan; greedy {} B, lower bound {} B), weights {} B",
        a.output.display(),
        fb.crate_name,
        c.layers.len(),
        if a.c_abi { ", C header and staticlib" } else { "" },
        group(c.arena.best as u64),
        c.arena.strategy,
        group(c.arena.greedy as u64),
        group(c.arena.lower_bound as u64),
        group(c.weight_bytes as u64)
    );
    println!("{}", fit_line(&fb.board, &fit));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_types() {
        assert_eq!(parse_input_type("input=u8"), Ok(("input".to_string(), DType::U8)));
        assert_eq!(parse_input_type("a=b=i16"), Ok(("a=b".to_string(), DType::I16)));
        assert!(parse_input_type("x").unwrap_err().contains("expected NAME=TYPE"));
        assert!(parse_input_type("x=f32").unwrap_err().contains("`f32` is not one of i8, u8, i16, i32"));
    }

    #[test]
    fn crate_names() {
        assert!(check_crate_name("digits_8-x").is_ok());
        for bad in ["8x", "a b", "", "é"] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
    }
}
