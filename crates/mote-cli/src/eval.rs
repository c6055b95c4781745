//! `mote eval`: top-1 accuracy of a classifier on a labelled test set, on the host
//! reference interpreter, optionally against a reference model (e.g. the float
//! original of a quantized model) with the top-1 agreement between the two.
use crate::io::{convert_input, load_model, parse_shape};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mote_core::{map_same, tensor::shape_str, Graph, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
}

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

/// Runs `mote eval`.
pub fn main(a: Args) -> Result<ExitCode> {
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

    let bar = if a.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} samples, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(data.n as u64).with_style(style)
    };
    let result = evaluate(&model, reference.as_ref(), &data, &bar);
    bar.finish_and_clear();
    let (correct, reference_counts) = result?;

    let n = data.n;
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
        println!("{j}");
        return Ok(ExitCode::SUCCESS);
    }
    let total = data.y.len();
    let limited = if n < total { format!(" (the first {n} of {total})") } else { String::new() };
    println!("model: {}", a.model.display());
    println!("data: {}, {n} samples{limited}", a.data.display());
    println!("top-1: {}", ratio(correct, n));
    if let (Some(path), Some((rc, agreed))) = (&a.reference, reference_counts) {
        println!("reference: {}", path.display());
        println!("reference top-1: {}", ratio(rc, n));
        println!("agreement: {}", ratio(agreed, n));
    }
    Ok(ExitCode::SUCCESS)
}

/// Correct predictions of the model and, with a reference, the reference's correct
/// predictions and the number of samples where both predict the same class.
type Counts = (usize, Option<(usize, usize)>);

/// Runs the model (and the reference) over the first `data.n` samples.
fn evaluate(model: &Classifier, reference: Option<&Classifier>, data: &Dataset, bar: &ProgressBar) -> Result<Counts> {
    let mut preds = Vec::with_capacity(data.n);
    let mut ref_preds = Vec::with_capacity(if reference.is_some() { data.n } else { 0 });
    let mut start = 0;
    // Each model takes its own batch size; advance by the smaller and let the other catch up.
    while start < data.n {
        let count = model.batch.min(data.n - start);
        preds.extend(model.predict(start, count)?);
        if let Some(r) = reference {
            while ref_preds.len() < preds.len() {
                let s = ref_preds.len();
                ref_preds.extend(r.predict(s, r.batch.min(data.n - s))?);
            }
        }
        start += count;
        bar.set_position(start as u64);
    }
    let labels = &data.y[..data.n];
    let hits = |p: &[usize]| p.iter().zip(labels).filter(|(&p, &y)| p as i64 == y).count();
    let correct = hits(&preds);
    let reference_counts = reference.map(|_| {
        let agreed = preds.iter().zip(&ref_preds).filter(|(a, b)| a == b).count();
        (hits(&ref_preds[..data.n]), agreed)
    });
    Ok((correct, reference_counts))
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
    fn ratio_formats_percent_and_counts() {
        assert_eq!(ratio(439, 450), "97.56% (439/450)");
        assert_eq!(ratio(5, 5), "100.00% (5/5)");
    }
}
