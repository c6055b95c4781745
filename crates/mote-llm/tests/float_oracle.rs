//! The float decoder (`mote_llm::float::forward`, run.c's arithmetic) against PyTorch on our own model: the
//! logits at the last prompt position and the greedy continuations of `examples/fortunes/reference.json`, which
//! the training script computed with the torch model it exported.

use mote_llm::float::{forward, FloatCache};
use mote_llm::Checkpoint;
use std::path::PathBuf;

fn example(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/fortunes").join(f)
}

fn ids(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

#[test]
fn float_forward_matches_torch() {
    let ck = Checkpoint::read(example("model.bin")).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(example("reference.json")).unwrap()).unwrap();
    let want_logits: Vec<f32> =
        r["last_logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    for (k, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
        let (prompt, greedy) = (ids(&p["prompt_ids"]), ids(&p["greedy_ids"]));
        let mut cache = FloatCache::new(&ck.config, prompt.len() + greedy.len());
        let mut logits = Default::default();
        for (pos, &t) in prompt.iter().enumerate() {
            logits = forward(&ck, &mut cache, t, pos, &mut |_, _| {}).unwrap();
        }
        if k == 0 {
            // Stated tolerance: f32 sums in a different order than torch's kernels.
            let worst = logits.iter().zip(&want_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "last-position logits differ from torch by up to {worst}");
        }
        let mut got = Vec::new();
        for pos in prompt.len()..prompt.len() + greedy.len() {
            let next = logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
            got.push(next);
            if got.len() == greedy.len() {
                break;
            }
            logits = forward(&ck, &mut cache, next, pos, &mut |_, _| {}).unwrap();
        }
        assert_eq!(got, greedy, "prompt {k}: greedy continuation");
    }
}
