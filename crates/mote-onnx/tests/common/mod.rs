//! Shared test helpers: locating the peer models and the shipped examples.
#![allow(dead_code, unused_macros)]
use mote_core::{npz, Graph, Tensor};
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// `../shared/peer-models` beside the checkout (or `$MOTE_PEER_MODELS`). When it is
/// absent the caller skips with a message, except under CI, where that is a failure.
pub fn peer_models() -> Option<PathBuf> {
    let dir = std::env::var_os("MOTE_PEER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/peer-models"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("peer models not found at {} and CI is set: these tests may not skip in CI", dir.display());
    }
    eprintln!("SKIP: peer models not found at {} (set MOTE_PEER_MODELS to run these tests)", dir.display());
    None
}

/// One peer test case: the imported graph, its inputs (k-th array → k-th graph
/// input; extra arrays ignored) and the expected outputs in graph-output order.
pub struct Case {
    pub graph: Graph,
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
}

/// Loads a case folder holding `network.onnx`, `inputs.npz`, `outputs.npz`.
pub fn load_case(dir: &Path) -> Case {
    let graph = mote_onnx::load(dir.join("network.onnx"), &Default::default())
        .unwrap_or_else(|e| panic!("import {}: {e}", dir.display()));
    let arrays = npz::read(dir.join("inputs.npz")).expect("inputs.npz");
    assert!(arrays.len() >= graph.inputs.len(), "{}: too few input arrays", dir.display());
    let inputs = graph.inputs.iter().zip(arrays).map(|(&id, (_, t))| t.cast(graph.values[id].ty.dtype)).collect();
    let expected = npz::read(dir.join("outputs.npz")).expect("outputs.npz").into_iter().map(|(_, t)| t).collect();
    Case { graph, inputs, expected }
}

/// Runs peer case `case` and returns (outputs, expected outputs), checking their
/// count; `None` when the peer models are absent (outside CI).
pub fn run_case(case: &str) -> Option<(Vec<Tensor>, Vec<Tensor>)> {
    let root = peer_models()?;
    let c = load_case(&root.join(case));
    let got = c.graph.run(c.inputs).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(got.len(), c.expected.len(), "{case}: number of outputs");
    Some((got, c.expected))
}

/// Asserts every element of `got` is within `tol` of `want`, absolute or relative.
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let abs = (a - b).abs();
        let ok = abs <= tol || abs <= tol * b.abs();
        assert!(ok, "{what}: element {i}: got {a}, want {b} (abs err {abs:e} > {tol:e})");
        if abs > worst.0 {
            worst = (abs, i);
        }
    }
    eprintln!("{what}: max abs err {:.3e} at element {}", worst.0, worst.1);
}

/// One `#[test]` per `name => "Case/Path"`, each calling `check_fn("Case/Path")`.
macro_rules! cases {
    ($check_fn:ident: $($name:ident => $path:literal,)*) => {$(
        #[test]
        fn $name() {
            $check_fn($path);
        }
    )*};
}
