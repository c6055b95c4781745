//! `mote run`: the host reference interpreter, with comparison to expected outputs.
use crate::io::{bind_inputs, bind_outputs, load_model, parse_shape};
use anyhow::{bail, Result};
use mote_core::tensor::shape_str;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `mote run`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Input arrays (.npz): by input name, or in input order.
    #[arg(long)]
    inputs: PathBuf,
    /// Expected outputs (.npz) to compare against.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Write the outputs to this .npz file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Static shape for a graph input, e.g. `--shape x=1x16x64` (repeatable).
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(String, Vec<usize>)>,
    /// Absolute tolerance for float outputs with `--expect` (an element passes within atol OR
    /// rtol); integer outputs must match exactly.
    #[arg(long, default_value_t = 1e-4)]
    atol: f64,
    /// Relative tolerance for `--expect`.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
}

/// Largest absolute and relative error of `got` against `want`, and how many
/// elements are outside both tolerances.
pub fn compare(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> (f64, f64, usize) {
    let (mut max_abs, mut max_rel, mut bad) = (0f64, 0f64, 0usize);
    for (&g, &w) in got.iter().zip(want) {
        let abs = (g - w).abs();
        let rel = if w == 0.0 {
            if abs == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            abs / w.abs()
        };
        let abs = if abs.is_nan() { f64::INFINITY } else { abs };
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(if rel.is_nan() { f64::INFINITY } else { rel });
        if !(abs <= atol || rel <= rtol) {
            bad += 1;
        }
    }
    (max_abs, max_rel, bad)
}

/// Runs `mote run`.
pub fn main(a: Args) -> Result<ExitCode> {
    let g = load_model(&a.model, &a.shapes)?;
    let inputs = bind_inputs(&g, &a.inputs)?;
    let expected = a.expect.as_ref().map(|p| bind_outputs(&g, p)).transpose()?;
    let outputs = g.run(inputs)?;
    let named: Vec<(String, mote_core::Tensor)> =
        g.outputs.iter().zip(&outputs).map(|(&id, t)| (g.values[id].name.clone(), t.clone())).collect();
    for (n, t) in &named {
        println!("output `{n}`: {}", t.ty());
    }
    if let Some(path) = &a.output {
        mote_core::npz::write(path, &named)?;
        println!("wrote {}", path.display());
    }
    let Some(expected) = expected else { return Ok(ExitCode::SUCCESS) };
    let mut failed = false;
    for ((name, got), (_, want)) in named.iter().zip(&expected) {
        if got.shape() != want.shape() {
            bail!("output `{name}` has shape {}, expected {}", shape_str(got.shape()), shape_str(want.shape()));
        }
        // Integer outputs (int8 and Deeploy integer graphs) must match exactly.
        let (atol, rtol) = if got.dtype().is_float() { (a.atol, a.rtol) } else { (0.0, 0.0) };
        let (abs, rel, bad) = compare(&got.to_f64_vec(), &want.to_f64_vec(), atol, rtol);
        let verdict = if bad == 0 { "ok" } else { "MISMATCH" };
        println!(
            "  {name}: max abs err {abs:.3e}, max rel err {rel:.3e}, {bad} of {} beyond tolerance: {verdict}",
            got.len()
        );
        failed |= bad > 0;
    }
    if failed {
        eprintln!(
            "outputs differ from {} beyond atol {} / rtol {}",
            a.expect.as_ref().expect("set").display(),
            a.atol,
            a.rtol
        );
        return Ok(ExitCode::from(crate::EXIT_MISMATCH));
    }
    Ok(ExitCode::SUCCESS)
}
