//! `mote inspect`: what a model is made of.
use crate::io::{load_model, parse_shape};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `mote inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Static shape for a graph input, e.g. `--shape x=1x16x64` (repeatable).
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(String, Vec<usize>)>,
}

/// Runs `mote inspect`.
pub fn main(a: Args) -> Result<ExitCode> {
    let g = load_model(&a.model, &a.shapes)?;
    println!("model {}", a.model.display());
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {:<24} {}", g.values[i].name, g.values[i].ty);
    }
    println!("outputs:");
    for &o in &g.outputs {
        println!("  {:<24} {}", g.values[o].name, g.values[o].ty);
    }
    let mut per_op: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for n in &g.nodes {
        let e = per_op.entry(n.op.name()).or_default();
        e.0 += 1;
        e.1 += g.node_macs(n);
    }
    println!("ops ({} nodes after constant folding and fusion):", g.nodes.len());
    println!("  {:<20} {:>6} {:>14}", "op", "count", "MACs");
    for (op, (count, macs)) in &per_op {
        println!("  {op:<20} {count:>6} {macs:>14}");
    }
    let total: u64 = per_op.values().map(|v| v.1).sum();
    println!("  {:<20} {:>6} {:>14}", "total", g.nodes.len(), total);
    let (mut count, mut bytes) = (0usize, 0usize);
    let mut by_dtype: BTreeMap<String, usize> = BTreeMap::new();
    for v in g.values.iter().filter(|v| v.konst.is_some()) {
        count += v.ty.len();
        bytes += v.ty.bytes();
        *by_dtype.entry(v.ty.dtype.to_string()).or_default() += v.ty.len();
    }
    let split: Vec<String> = by_dtype.iter().map(|(d, n)| format!("{n} {d}")).collect();
    println!("parameters: {count} ({bytes} bytes; {})", split.join(", "));
    Ok(ExitCode::SUCCESS)
}
