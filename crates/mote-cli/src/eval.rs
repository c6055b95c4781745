//! `mote eval`: top-1 accuracy of a classifier on a labelled test set, on the host
//! reference interpreter or (with `--board`) on a board's emulated core, optionally
//! against a reference model (e.g. the float original of a quantized model) with the
//! top-1 agreement between the two.
//!
//! With `--board`, the int8 model is compiled with mote-codegen, every sample is quantized
//! on the host by the model's own QuantizeLinear (as `mote deploy` does), and one firmware
//! embedding all samples runs the model on each of them on QEMU (several firmwares of equal
//! chunks when the samples take more than half the flash the model leaves). Every sample's
//! int8 outputs are compared bit for bit with the host int8 reference; a mismatch is exit 1.
use crate::compile::{compile_for_board, BuildArgs};
use crate::io::{convert_input, load_model, parse_shape, spinner};
use crate::EXIT_MISMATCH;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mote_core::{map_same, tensor::shape_str, DType, Graph, Tensor};
use mote_deploy::{
    build, check_fit, emulate_batch, group, samples_per_firmware, split_even, write_batch_firmware, BatchSpec,
    MemoryLimits, DEFAULT_STACK_BYTES,
};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Name of the npz array holding the samples, stacked on axis 0.
const X_KEY: &str = "x";
/// Name of the npz array holding the integer labels, one per sample.
const Y_KEY: &str = "y";

/// Arguments of `mote eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX classifier (one input, one output whose last axis holds the class scores).
    model: PathBuf,
    /// Test set (.npz): `x` holds the samples stacked on axis 0, `y` their integer labels.
    #[arg(long)]
    data: PathBuf,
    /// A second model (e.g. the float original) run on the same samples; prints its
    /// accuracy and the top-1 agreement between the two models.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Evaluate only the first N samples.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print one JSON object on stdout (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Static shape for an input of MODEL, e.g. `--shape x=4x8x8` (repeatable).
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(String, Vec<usize>)>,
    /// Static shape for an input of the reference model (repeatable).
    #[arg(long = "reference-shape", value_parser = parse_shape, requires = "reference")]
    reference_shapes: Vec<(String, Vec<usize>)>,
    /// Evaluate on this board's emulated core instead of the host interpreter (an int8 model; a board name
    /// as `mote deploy` takes, or a board file path); checks every sample's outputs bit for bit against the
    /// host int8 reference.
    #[arg(long)]
    board: Option<String>,
    /// With --board: stop each emulation after SECS (default: 60 s + 0.25 s per sample in the firmware).
    #[arg(long, value_name = "SECS", requires = "board")]
    timeout: Option<f64>,
    /// With --board: stack bytes reserved at the top of SRAM (default 16 KiB).
    #[arg(long, value_name = "BYTES", requires = "board")]
    stack: Option<u64>,
}

/// Fixed part of the default emulation timeout per firmware.
const TIMEOUT_BASE_SECS: f64 = 60.0;
/// Per-sample part of the default emulation timeout.
const TIMEOUT_PER_SAMPLE_SECS: f64 = 0.25;
/// Most firmwares one `mote eval --board` builds (each is a build and an emulation); a test set that needs
/// more is refused (evaluate fewer samples with --limit).
const MAX_FIRMWARES: usize = 16;

/// The labelled samples of a test set.
struct Dataset {
    /// All samples, stacked on axis 0.
    x: Tensor,
    /// One label per sample of `x`.
    y: Vec<i64>,
    /// How many samples (from the first) are evaluated.
    n: usize,
}

/// Reads `x` and `y` from the npz file and checks that they fit together.
fn read_data(path: &Path, limit: Option<usize>) -> Result<Dataset> {
    let arrays = mote_core::npz::read(path)?;
    let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
    let find = |key: &str, what: &str| {
        arrays.iter().find(|(k, _)| k == key).map(|(_, t)| t).with_context(|| {
            format!("{}: no array `{key}` ({what}); the file has: {}", path.display(), keys.join(", "))
        })
    };
    let x = find(X_KEY, "the samples, stacked on axis 0")?;
    let y = find(Y_KEY, "the integer labels, one per sample of `x`")?;
    let Some(&total) = x.shape().first() else {
        bail!("{}: array `{X_KEY}` is a scalar; it must hold the samples stacked on axis 0", path.display())
    };
    if y.dtype().is_float() || y.dtype() == mote_core::DType::Bool {
        bail!("{}: array `{Y_KEY}` is {}; labels must be integers (int64, int32 or uint8)", path.display(), y.ty())
    }
    if y.shape().len() != 1 || y.len() != total {
        bail!(
            "{}: array `{Y_KEY}` has shape {} but `{X_KEY}` has {total} samples (shape {}); `{Y_KEY}` needs shape [{total}]",
            path.display(),
            shape_str(y.shape()),
            shape_str(x.shape())
        );
    }
    let n = limit.map_or(total, |l| l.min(total));
    if n == 0 {
        let why = if total == 0 { format!("array `{X_KEY}` holds no samples") } else { "--limit is 0".to_string() };
        bail!("{}: nothing to evaluate: {why}", path.display());
    }
    Ok(Dataset { x: x.clone(), y: y.to_i64_vec(), n })
}

/// A loaded classifier and how the test samples feed it.
struct Classifier {
    path: PathBuf,
    graph: Graph,
    /// The samples of `x`, converted to the model input's element type.
    x: Tensor,
    /// The model input's shape.
    input_shape: Vec<usize>,
    /// Samples per run: the input's first dimension, or 1 when a sample is the whole input.
    batch: usize,
    /// Number of classes (the output's last dimension).
    classes: usize,
}

impl Classifier {
    /// Loads the model and matches its single input and output to the test set.
    fn load(path: &Path, shapes: &[(String, Vec<usize>)], data: &Dataset, data_path: &Path) -> Result<Self> {
        let graph = load_model(path, shapes)?;
        let names = |ids: &[usize]| ids.iter().map(|&i| graph.values[i].name.as_str()).collect::<Vec<_>>().join(", ");
        if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
            bail!(
                "{}: `mote eval` needs a model with one input and one output; this one has {} input(s) ({}) and {} output(s) ({})",
                path.display(),
                graph.inputs.len(),
                names(&graph.inputs),
                graph.outputs.len(),
                names(&graph.outputs)
            );
        }
        let input = &graph.values[graph.inputs[0]];
        let shape = input.ty.shape.clone();
        let sample = &data.x.shape()[1..];
        let batch = if shape.as_slice() == sample {
            1
        } else if shape.len() == sample.len() + 1 && &shape[1..] == sample && shape[0] > 0 {
            shape[0]
        } else {
            let per = if shape.is_empty() { shape_str(&shape) } else { shape_str(&shape[1..]) };
            bail!(
                "{}: array `{X_KEY}` has shape {}, i.e. samples of shape {}, but input `{}` of {} has shape {} \
                 (samples of shape {per}, or the whole input as one sample)",
                data_path.display(),
                shape_str(data.x.shape()),
                shape_str(sample),
                input.name,
                path.display(),
                shape_str(&shape)
            );
        };
        let x = convert_input(&data.x, input.ty.dtype, data_path, X_KEY, &input.name)?;
        let output = &graph.values[graph.outputs[0]];
        let out_shape = &output.ty.shape;
        let classes = out_shape.last().copied().unwrap_or(0);
        if classes == 0 || output.ty.len() / classes != batch {
            bail!(
                "{}: output `{}` has shape {}, but `mote eval` needs one row of class scores (the last axis) per \
                 sample: {batch} row(s) for input shape {}",
                path.display(),
                output.name,
                shape_str(out_shape),
                shape_str(&shape)
            );
        }
        if let Some((i, &label)) = data.y[..data.n].iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
            bail!(
                "{}: array `{Y_KEY}` has label {label} at index {i}, outside the {classes} classes (0..={}) of {}",
                data_path.display(),
                classes - 1,
                path.display()
            );
        }
        Ok(Classifier { path: path.to_path_buf(), graph, x, input_shape: shape, batch, classes })
    }

    /// Runs samples `start..start + count` (at most one batch) and returns their predicted classes.
    fn predict(&self, start: usize, count: usize) -> Result<Vec<usize>> {
        let input = take(&self.x, start, count, self.batch, &self.input_shape)?;
        let out = self
            .graph
            .run(vec![input])
            .with_context(|| format!("{}: running sample(s) {start}..{}", self.path.display(), start + count))?;
        let out = &out[0];
        let values = out.to_f64_vec();
        if values.len() != self.batch * self.classes {
            bail!(
                "{}: output has shape {}, expected {} row(s) of {} class scores",
                self.path.display(),
                shape_str(out.shape()),
                self.batch,
                self.classes
            );
        }
        Ok(values.chunks(self.classes).take(count).map(argmax).collect())
    }
}

/// `count` samples of `x` from `start` as one model input of `shape`, zero-padded to
/// a full batch of `batch` samples.
fn take(x: &Tensor, start: usize, count: usize, batch: usize, shape: &[usize]) -> Result<Tensor> {
    let t = map_same!(x, a => {
        let mut dims = a.shape().to_vec();
        dims[0] = batch;
        let mut out = ArrayD::default(IxDyn(&dims));
        out.slice_axis_mut(Axis(0), Slice::from(0..count))
            .assign(&a.slice_axis(Axis(0), Slice::from(start..start + count)));
        out
    });
    if t.shape() == shape {
        Ok(t)
    } else {
        Ok(t.reshape(shape)?)
    }
}

/// Index of the largest value (the first one on ties, like numpy's argmax; NaN counts as largest).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        let b = row[best];
        if !b.is_nan() && (v > b || v.is_nan()) {
            best = i;
        }
    }
    best
}

/// `97.56% (439/450)`.
fn ratio(k: usize, n: usize) -> String {
    format!("{:.2}% ({k}/{n})", 100.0 * k as f64 / n as f64)
}

/// A progress bar over `len` samples on stderr, or a hidden one.
fn sample_bar(quiet: bool, len: usize, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let template = format!("{{bar:40}} {{pos}}/{{len}} samples {what}, {{per_sec}}, eta {{eta}}");
    let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len as u64).with_style(style)
}

/// Runs `mote eval`.
pub fn main(a: Args) -> Result<ExitCode> {
    if let Some(t) = a.timeout {
        if !(t.is_finite() && t > 0.0) {
            bail!("--timeout {t}: must be a positive number of seconds");
        }
    }
    let data = read_data(&a.data, a.limit)?;
    let model = Classifier::load(&a.model, &a.shapes, &data, &a.data)?;
    let reference = a
        .reference
        .as_ref()
        .map(|p| {
            Classifier::load(p, &a.reference_shapes, &data, &a.data)
                .context("--reference (its static shapes go in --reference-shape)")
        })
        .transpose()?;
    if let Some(r) = &reference {
        if r.classes != model.classes {
            bail!(
                "{} has {} classes but the reference {} has {}; top-1 agreement needs the same classes",
                model.path.display(),
                model.classes,
                r.path.display(),
                r.classes
            );
        }
    }
    let quiet = a.json || !std::io::stderr().is_terminal();
    let n = data.n;

    let board_run = match &a.board {
        Some(board) => Some(on_board(&a, board, &model, n, quiet)?),
        None => None,
    };
    let preds = match &board_run {
        Some(r) => r.preds.clone(),
        None => {
            let bar = sample_bar(quiet, n, "on the host");
            let p = predict_all(&model, n, &bar);
            bar.finish_and_clear();
            p?
        }
    };
    let ref_preds = match &reference {
        Some(r) => {
            let bar = sample_bar(quiet, n, "on the reference");
            let p = predict_all(r, n, &bar);
            bar.finish_and_clear();
            Some(p?)
        }
        None => None,
    };
    let labels = &data.y[..n];
    let hits = |p: &[usize]| p.iter().zip(labels).filter(|(&p, &y)| p as i64 == y).count();
    let correct = hits(&preds);
    let reference_counts = ref_preds.as_ref().map(|r| (hits(r), preds.iter().zip(r).filter(|(a, b)| a == b).count()));

    if a.json {
        let mut j = serde_json::json!({
            "model": a.model.display().to_string(),
            "data": a.data.display().to_string(),
            "samples": n,
            "top1": correct as f64 / n as f64,
            "correct": correct,
        });
        if let (Some(path), Some((rc, agreed))) = (&a.reference, reference_counts) {
            j["reference"] = path.display().to_string().into();
            j["reference_top1"] = (rc as f64 / n as f64).into();
            j["reference_correct"] = rc.into();
            j["agreement"] = (agreed as f64 / n as f64).into();
            j["agreed"] = agreed.into();
        }
        if let Some(r) = &board_run {
            r.add_json(&mut j);
        }
        println!("{j}");
    } else {
        let total = data.y.len();
        let limited = if n < total { format!(" (the first {n} of {total})") } else { String::new() };
        println!("model: {}", a.model.display());
        println!("data: {}, {n} samples{limited}", a.data.display());
        if let Some(r) = &board_run {
            print!("{}", r.text(n));
        }
        println!("top-1: {}", ratio(correct, n));
        if let (Some(path), Some((rc, agreed))) = (&a.reference, reference_counts) {
            println!("reference: {}", path.display());
            println!("reference top-1: {}", ratio(rc, n));
            println!("agreement: {}", ratio(agreed, n));
        }
    }
    match board_run.as_ref().and_then(|r| r.mismatch.as_ref()) {
        None => Ok(ExitCode::SUCCESS),
        Some(m) => {
            eprintln!(
                "error: the MCU's outputs differ from the host int8 reference on {} of {n} samples; the first: {}",
                n - board_run.as_ref().map_or(0, |r| r.bit_exact),
                m.phrase()
            );
            Ok(ExitCode::from(EXIT_MISMATCH))
        }
    }
}

/// Predicted classes of the first `n` samples on the host interpreter.
fn predict_all(c: &Classifier, n: usize, bar: &ProgressBar) -> Result<Vec<usize>> {
    let mut preds = Vec::with_capacity(n);
    while preds.len() < n {
        let start = preds.len();
        preds.extend(c.predict(start, c.batch.min(n - start))?);
        bar.set_position(preds.len() as u64);
    }
    Ok(preds)
}

/// The first class score where the MCU and the host int8 reference differ.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mismatch {
    /// Sample index in the test set.
    sample: usize,
    /// Class index (element of the sample's output row).
    index: usize,
    /// The MCU's value.
    mcu: i64,
    /// The host reference's value.
    host: i64,
}

impl Mismatch {
    /// `sample 17, class 3: MCU -5, host -4`.
    fn phrase(&self) -> String {
        format!("sample {}, class {}: MCU {}, host {}", self.sample, self.index, self.mcu, self.host)
    }
}

/// What the evaluation on a board measured.
struct BoardRun {
    /// The board's name.
    board: String,
    /// Its core.
    core: String,
    /// Its clock, for the latency estimate.
    clock_hz: u64,
    /// Predicted classes from the MCU's outputs, one per sample.
    preds: Vec<usize>,
    /// Samples whose MCU output row equals the host int8 reference's bit for bit.
    bit_exact: usize,
    /// The first differing value, if any.
    mismatch: Option<Mismatch>,
    /// Instructions of the first sample's inference (the marked one).
    instructions_first_sample: u64,
    /// Firmwares built and run (the samples split into equal chunks to fit the flash).
    firmwares: usize,
    /// Seconds spent building the firmwares.
    build_secs: f64,
    /// Seconds spent emulating them.
    emulation_secs: f64,
}

impl BoardRun {
    /// The board lines of the text report.
    fn text(&self, n: usize) -> String {
        let latency_ms = 1e3 * self.instructions_first_sample as f64 / self.clock_hz.max(1) as f64;
        format!(
            "board: {} ({}), {} firmware{} (build {:.1} s, emulation {:.1} s)\n\
             bit-exact: {}/{n} samples\n\
             instructions (first sample): {} (~{latency_ms:.2} ms at {} MHz, 1 instruction per cycle)\n",
            self.board,
            self.core,
            self.firmwares,
            if self.firmwares == 1 { "" } else { "s" },
            self.build_secs,
            self.emulation_secs,
            self.bit_exact,
            group(self.instructions_first_sample),
            self.clock_hz as f64 / 1e6,
        )
    }

    /// Adds the board keys to the JSON report.
    fn add_json(&self, j: &mut serde_json::Value) {
        j["board"] = self.board.clone().into();
        j["core"] = self.core.clone().into();
        j["bit_exact_samples"] = self.bit_exact.into();
        j["instructions_first_sample"] = self.instructions_first_sample.into();
        j["firmwares"] = self.firmwares.into();
        j["build_seconds"] = self.build_secs.into();
        j["emulation_seconds"] = self.emulation_secs.into();
        if let Some(m) = &self.mismatch {
            j["first_mismatch"] =
                serde_json::json!({ "sample": m.sample, "index": m.index, "mcu": m.mcu, "host": m.host });
        }
    }
}

/// Integer values of device output bytes of type `d` (8-bit: one byte each; wider: little-endian).
fn decode(d: DType, bytes: &[i8]) -> Vec<i64> {
    let size = d.size_of().max(1);
    bytes
        .chunks_exact(size)
        .map(|c| {
            let raw: Vec<u8> = c.iter().map(|&b| b as u8).collect();
            match (d, raw.as_slice()) {
                (DType::U8, [b]) => i64::from(*b),
                (_, [b]) => i64::from(*b as i8),
                (_, &[a, b]) => i64::from(i16::from_le_bytes([a, b])),
                (_, &[a, b, c, e]) => i64::from(i32::from_le_bytes([a, b, c, e])),
                (_, r) => {
                    let mut le = [0u8; 8];
                    le[..r.len().min(8)].copy_from_slice(&r[..r.len().min(8)]);
                    i64::from_le_bytes(le)
                }
            }
        })
        .collect()
}

/// Per sample (`batch` samples per inference, one output row each): the argmax of the MCU's row, how many rows
/// equal the host's bit for bit, and the first differing value.
fn compare_rows(
    mcu: &[Vec<i8>],
    host: &[Vec<i8>],
    n: usize,
    batch: usize,
    dtype: DType,
) -> (Vec<usize>, usize, Option<Mismatch>) {
    let mut preds = Vec::with_capacity(n);
    let mut bit_exact = 0;
    let mut mismatch = None;
    for s in 0..n {
        let (i, r) = (s / batch, s % batch);
        let (Some(m), Some(h)) = (mcu.get(i), host.get(i)) else { break };
        let row_bytes = m.len() / batch;
        let row = r * row_bytes..(r + 1) * row_bytes;
        let m = decode(dtype, &m[row.clone()]);
        let h = decode(dtype, h.get(row).unwrap_or_default());
        match m.iter().zip(&h).position(|(x, y)| x != y) {
            None if m.len() == h.len() => bit_exact += 1,
            None => {
                let index = m.len().min(h.len());
                if mismatch.is_none() {
                    mismatch = Some(Mismatch { sample: s, index, mcu: 0, host: 0 });
                }
            }
            Some(index) => {
                if mismatch.is_none() {
                    mismatch = Some(Mismatch { sample: s, index, mcu: m[index], host: h[index] });
                }
            }
        }
        preds.push(argmax(&m.iter().map(|&v| v as f64).collect::<Vec<_>>()));
    }
    (preds, bit_exact, mismatch)
}

/// Evaluates the first `n` samples on `board`'s emulated core (see the module docs).
fn on_board(a: &Args, board: &str, model: &Classifier, n: usize, quiet: bool) -> Result<BoardRun> {
    let step = spinner(quiet, format!("compiling {} for {board}", a.model.display()));
    let fb = compile_for_board(&a.model, board, &BuildArgs::with_shapes(&a.shapes), None, false);
    step.finish_and_clear();
    let fb = fb?;
    let (board, c) = (&fb.board, &fb.compiled);
    if c.inputs.len() != 1 || c.outputs.len() != 1 {
        bail!(
            "{}: compiled for the MCU it has {} device input(s) and {} output(s); `mote eval --board` needs one of each",
            a.model.display(),
            c.inputs.len(),
            c.outputs.len()
        );
    }
    let out = &c.outputs[0];
    if out.elements() != model.batch * model.classes || out.len % out.elements().max(1) != 0 {
        bail!(
            "{}: the device output `{}` has shape {}, expected {} row(s) of {} class scores",
            a.model.display(),
            out.name,
            shape_str(&out.shape),
            model.batch,
            model.classes
        );
    }

    // Quantize every sample on the host (the model's own QuantizeLinear) and keep the host int8 outputs.
    let inferences = n.div_ceil(model.batch);
    let mut stacked: Vec<i8> = Vec::with_capacity(inferences * c.inputs[0].len);
    let mut host: Vec<Vec<i8>> = Vec::with_capacity(inferences);
    let bar = sample_bar(quiet, n, "quantized on the host");
    for i in 0..inferences {
        let start = i * model.batch;
        let count = model.batch.min(n - start);
        let input = take(&model.x, start, count, model.batch, &model.input_shape)?;
        let (dev_in, mut dev_out) = mote_codegen::host_reference_with(&fb.graph, vec![input], &fb.opts)
            .map_err(|e| anyhow::anyhow!("{}: host reference of sample {start}: {e}", a.model.display()))?;
        let (Some(x), Some(y)) = (dev_in.first(), dev_out.pop()) else {
            bail!("{}: the host reference gave no device input or output", a.model.display());
        };
        if x.len() != c.inputs[0].len || y.len() != out.len {
            bail!(
                "{}: the host reference's device input/output sizes differ from the compiled model's",
                a.model.display()
            );
        }
        stacked.extend_from_slice(x);
        host.push(y);
        bar.set_position((start + count) as u64);
    }
    bar.finish_and_clear();

    let stack = a.stack.unwrap_or(DEFAULT_STACK_BYTES);
    let limits = MemoryLimits::for_board(board, stack)?;
    let in_len = c.inputs[0].len;
    let per = samples_per_firmware(board, c, limits, in_len as u64)?;
    let chunks = split_even(inferences, per);
    if chunks.len() > MAX_FIRMWARES {
        bail!(
            "board `{}` ({}): the {inferences} samples ({} B each) need {} firmwares of at most {per} samples (half \
             the {} B of flash left by weights {} B and the code estimate {} B); at most {MAX_FIRMWARES} are built: \
             evaluate fewer samples with --limit, or use a board with more flash",
            board.name,
            board.source,
            group(in_len as u64),
            chunks.len(),
            group(limits.flash.saturating_sub(c.weight_bytes as u64 + mote_deploy::CODE_ESTIMATE_BYTES)),
            group(c.weight_bytes as u64),
            group(mote_deploy::CODE_ESTIMATE_BYTES),
        );
    }
    let largest = chunks.iter().map(|r| r.len()).max().unwrap_or(0);
    check_fit(board, c, stack, (largest * in_len) as u64)?;
    // Tools first: a missing emulator or target is reported before a long build.
    mote_qemu::check_qemu(board.core)?;
    mote_qemu::check_target(board.core)?;

    let lens = [out.len];
    let mut mcu: Vec<Vec<i8>> = Vec::with_capacity(inferences);
    let (mut build_secs, mut emulation_secs) = (0.0, 0.0);
    let mut instructions_first_sample = 0;
    for (i, range) in chunks.iter().enumerate() {
        let of = if chunks.len() > 1 { format!(" {}/{}", i + 1, chunks.len()) } else { String::new() };
        let spec = BatchSpec {
            board,
            compiled: c,
            model_crate: &fb.crate_name,
            inputs: &[stacked[range.start * in_len..range.end * in_len].to_vec()],
            samples: range.len(),
            limits,
        };
        let fw = write_batch_firmware(&fb.paths, &spec)?;
        let step = spinner(
            quiet,
            format!(
                "building firmware{of} ({} samples) for {} ({}) in {}",
                range.len(),
                board.name,
                board.core,
                fb.paths.target_dir.display()
            ),
        );
        let t = Instant::now();
        let elf = build(&fb.paths, &fw, board, limits);
        build_secs += t.elapsed().as_secs_f64();
        step.finish_and_clear();
        let elf = elf?;

        let timeout = a.timeout.unwrap_or(TIMEOUT_BASE_SECS + TIMEOUT_PER_SAMPLE_SECS * range.len() as f64);
        let step = spinner(
            quiet,
            format!("emulating firmware{of} ({} samples) on QEMU {}", range.len(), board.qemu_machine()),
        );
        let t = Instant::now();
        let run = emulate_batch(
            board,
            &elf,
            &lens,
            range.len(),
            c.layers.len(),
            Duration::from_secs_f64(timeout),
            &fb.paths.plugin_dir(),
        );
        emulation_secs += t.elapsed().as_secs_f64();
        step.finish_and_clear();
        let run = run?;
        if i == 0 {
            instructions_first_sample = run.first.inference_instructions();
        }
        mcu.extend(run.outputs.into_iter().map(|mut o| o.pop().unwrap_or_default()));
    }
    if mcu.len() != inferences {
        bail!("the firmwares returned the outputs of {} of {inferences} inferences", mcu.len());
    }

    let (preds, bit_exact, mismatch) = compare_rows(&mcu, &host, n, model.batch, out.dtype);
    Ok(BoardRun {
        board: board.name.clone(),
        core: board.core.to_string(),
        clock_hz: board.clock_hz,
        preds,
        bit_exact,
        mismatch,
        instructions_first_sample,
        firmwares: chunks.len(),
        build_secs,
        emulation_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_nan_as_largest() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
        assert_eq!(argmax(&[0.0, f64::NAN, 5.0]), 1);
        assert_eq!(argmax(&[f64::NAN, 5.0]), 0);
        assert_eq!(argmax(&[-128.0, -128.0, 127.0, 127.0]), 2);
    }

    #[test]
    fn take_pads_the_last_batch_with_zeros() {
        let x = Tensor::from_vec(&[3, 2], vec![1i8, 2, 3, 4, 5, 6]).unwrap();
        let t = take(&x, 2, 1, 2, &[2, 2]).unwrap();
        assert_eq!(t, Tensor::from_vec(&[2, 2], vec![5i8, 6, 0, 0]).unwrap());
        // A sample that is the whole input: [1, 2] sliced, reshaped to the input's [2].
        let t = take(&x, 1, 1, 1, &[2]).unwrap();
        assert_eq!(t, Tensor::from_vec(&[2], vec![3i8, 4]).unwrap());
    }

    #[test]
    fn rows_compare_bit_for_bit_and_give_the_mcu_argmax() {
        // Two inferences of batch 2, 3 classes; 3 samples (the last row is padding).
        let host = vec![vec![1i8, 5, 2, 0, 0, 9], vec![7, 7, 1, 0, 0, 0]];
        let (p, exact, m) = compare_rows(&host, &host, 3, 2, DType::I8);
        assert_eq!((p, exact, m), (vec![1, 2, 0], 3, None));
        let mut mcu = host.clone();
        mcu[0][4] = 10; // sample 1, class 1
        mcu[1][3] = -3; // padding: not compared
        let (p, exact, m) = compare_rows(&mcu, &host, 3, 2, DType::I8);
        assert_eq!((p, exact), (vec![1, 1, 0], 2));
        assert_eq!(m, Some(Mismatch { sample: 1, index: 1, mcu: 10, host: 0 }));
        assert_eq!(m.unwrap().phrase(), "sample 1, class 1: MCU 10, host 0");
    }

    #[test]
    fn device_bytes_decode_by_type() {
        assert_eq!(decode(DType::I8, &[-1, 127]), [-1, 127]);
        assert_eq!(decode(DType::U8, &[-1, 127]), [255, 127]);
        assert_eq!(decode(DType::I16, &[-2, -1, 1, 1]), [-2, 257]);
        assert_eq!(decode(DType::I32, &[0, 0, 0, -128]), [i64::from(i32::MIN)]);
    }

    #[test]
    fn ratio_formats_percent_and_counts() {
        assert_eq!(ratio(439, 450), "97.56% (439/450)");
        assert_eq!(ratio(5, 5), "100.00% (5/5)");
    }
}
