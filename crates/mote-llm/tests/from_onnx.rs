//! The full-sequence ONNX export of our decoder (examples/fortunes/fortunes.onnx, `torch.onnx.export` with the
//! causal mask inside) read back as the llama2.c decoder it is, proved against the graph, and other graphs refused.

use mote_llm::from_graph::checkpoint_from_graph;
use mote_llm::Checkpoint;
use std::path::PathBuf;

fn example(dir: &str, f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir).join(f)
}

#[test]
fn torch_export_gives_the_checkpoint_weights() {
    let g = mote_onnx::load(example("fortunes", "fortunes.onnx"), &Default::default()).unwrap();
    let ck = checkpoint_from_graph(&g, "fortunes.onnx").unwrap();
    let bin = Checkpoint::read(example("fortunes", "model.bin")).unwrap();
    // The export fixes T = 32 positions; everything else is the llama2.c checkpoint's, weight for weight.
    assert_eq!(ck.config.seq_len, 32);
    assert_eq!(ck.config, mote_llm::Config { seq_len: 32, ..bin.config });
    assert_eq!(ck.weights, bin.weights);
}

#[test]
fn other_graphs_are_refused_with_the_reason() {
    let g = mote_onnx::load(example("digits", "digits_encoder.onnx"), &Default::default()).unwrap();
    let e = checkpoint_from_graph(&g, "digits_encoder.onnx").unwrap_err().to_string();
    assert!(e.starts_with("digits_encoder.onnx: "), "{e}");
    assert!(e.contains("token input") || e.contains("Gather") || e.contains("Llama"), "{e}");
}
