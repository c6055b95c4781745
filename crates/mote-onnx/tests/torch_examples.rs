//! Models exactly as `torch.onnx.export` writes them import without manual
//! simplification, fold their shape arithmetic, and match PyTorch's outputs.
mod common;
use mote_core::npz;
use mote_onnx::ImportOptions;
use std::path::PathBuf;

fn example(name: &str) -> PathBuf {
    common::repo_root().join("examples/torch-encoder").join(name)
}

fn check(model: &str, opts: &ImportOptions) -> mote_core::Graph {
    let g = mote_onnx::load(example(&format!("{model}.onnx")), opts).unwrap_or_else(|e| panic!("{e}"));
    let inputs: Vec<_> =
        npz::read(example(&format!("{model}.inputs.npz"))).unwrap().into_iter().map(|(_, t)| t).collect();
    let want = npz::read(example(&format!("{model}.outputs.npz"))).unwrap();
    let got = g.run(inputs).unwrap();
    for (g_, (name, w)) in got.iter().zip(&want) {
        common::assert_close(g_, w, 1e-4, &format!("{model} `{name}`"));
    }
    g
}

fn ops(g: &mote_core::Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

#[test]
fn kws_encoder_opset17_matches_torch() {
    let g = check("kws_encoder_op17", &ImportOptions::default());
    let ops = ops(&g);
    // All shape arithmetic folded away: no Shape/Gather-on-shapes/Cast/Mod/Concat remain.
    for gone in ["Shape", "Cast", "Mod", "Concat", "Const"] {
        assert!(!ops.contains(&gone), "{gone} should be folded: {ops:?}");
    }
    assert!(ops.contains(&"Gelu"), "decomposed GELU recognised: {ops:?}");
    assert!(!ops.contains(&"Erf"), "{ops:?}");
}

#[test]
fn kws_encoder_opset14_matches_torch_and_fuses_gelu() {
    let g = check("kws_encoder_op14", &ImportOptions::default());
    let ops = ops(&g);
    assert_eq!(ops.iter().filter(|o| **o == "Gelu").count(), 1, "{ops:?}");
    assert!(!ops.contains(&"Erf"), "{ops:?}");
}

#[test]
fn causal_mask_built_at_runtime_is_folded() {
    let g = check("causal_mha_op17", &ImportOptions::default());
    assert!(!ops(&g).contains(&"Trilu"), "the causal mask is a constant after import");
}

#[test]
fn symbolic_batch_needs_a_shape() {
    let err = mote_onnx::load(example("kws_encoder_dynamic.onnx"), &ImportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("--shape x=1x16x64"), "{err}");
    assert!(err.contains("batch"), "{err}");
    let opts = ImportOptions { shapes: [("x".to_string(), vec![1, 16, 64])].into(), ..Default::default() };
    let g = check("kws_encoder_dynamic", &opts);
    assert!(!ops(&g).contains(&"Shape"));
}
