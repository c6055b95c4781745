//! Shared CLI plumbing: loading models with `--shape`, binding npz arrays to inputs.
use anyhow::{bail, Context, Result};
use mote_core::{tensor::shape_str, DType, Graph, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Parses `name=1x16x64` into a name and a shape.
pub fn parse_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s.rsplit_once('=').ok_or_else(|| format!("`{s}`: expected NAME=DxDxD, e.g. x=1x16x64"))?;
    let shape = dims
        .split(['x', ','])
        .map(|d| d.trim().parse::<usize>().map_err(|_| format!("`{s}`: `{d}` is not a dimension")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), shape))
}

/// Loads an ONNX model with the given static input shapes.
pub fn load_model(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<Graph> {
    let opts =
        mote_onnx::ImportOptions { shapes: shapes.iter().cloned().collect::<HashMap<_, _>>(), ..Default::default() };
    Ok(mote_onnx::load(path, &opts)?)
}

/// Binds the arrays of an npz file to the graph inputs: by name when every input
/// name is present, otherwise by position (the k-th array feeds the k-th input).
pub fn bind_inputs(g: &Graph, path: &Path) -> Result<Vec<Tensor>> {
    let arrays = mote_core::npz::read(path)?;
    let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
    let by_name = names.iter().all(|n| arrays.iter().any(|(k, _)| k == n));
    if !by_name && arrays.len() < names.len() {
        let have: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
        bail!(
            "{}: the model needs {} input(s) ({}), the file has {} array(s) ({}) and their names do not match",
            path.display(),
            names.len(),
            names.join(", "),
            arrays.len(),
            have.join(", ")
        );
    }
    let mut out = Vec::with_capacity(names.len());
    for (k, (&id, name)) in g.inputs.iter().zip(&names).enumerate() {
        let (key, t) = if by_name { arrays.iter().find(|(n, _)| n == name).expect("checked") } else { &arrays[k] };
        let want = &g.values[id].ty;
        if t.shape() != want.shape.as_slice() {
            bail!(
                "{}: array `{key}` has shape {} but model input `{name}` needs {}",
                path.display(),
                shape_str(t.shape()),
                shape_str(&want.shape)
            );
        }
        out.push(convert_input(t, want.dtype, path, key, name)?);
    }
    Ok(out)
}

/// Converts array `key` of the npz file `path` to the element type of model input
/// `name`: integer to integer, float to float, and float to integer (integer-valued
/// floats into an integer input) convert; integers into a float input are refused.
pub fn convert_input(t: &Tensor, want: DType, path: &Path, key: &str, name: &str) -> Result<Tensor> {
    if t.dtype() == want {
        Ok(t.clone())
    } else if t.dtype().is_float() == want.is_float() || t.dtype().is_float() {
        Ok(t.cast(want))
    } else {
        bail!("{}: array `{key}` is {} but model input `{name}` is {want}", path.display(), t.dtype())
    }
}

/// Reads an npz and matches its arrays to the graph outputs (by name, else by position).
pub fn bind_outputs(g: &Graph, path: &Path) -> Result<Vec<(String, Tensor)>> {
    let arrays = mote_core::npz::read(path).with_context(|| "reading --expect")?;
    let names: Vec<&str> = g.outputs.iter().map(|&i| g.values[i].name.as_str()).collect();
    let by_name = names.iter().all(|n| arrays.iter().any(|(k, _)| k == n));
    if !by_name && arrays.len() < names.len() {
        bail!("{}: the model has {} output(s), the file has {} array(s)", path.display(), names.len(), arrays.len());
    }
    Ok(names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let t = if by_name { &arrays.iter().find(|(a, _)| a == n).expect("checked").1 } else { &arrays[k].1 };
            (n.to_string(), t.clone())
        })
        .collect())
}

/// A spinner on stderr for a long step (build, emulation); hidden with `quiet` (e.g. `--json`) or when stderr is
/// not a terminal.
pub fn spinner(quiet: bool, message: String) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner().with_style(style).with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
