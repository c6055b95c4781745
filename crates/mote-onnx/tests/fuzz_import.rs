//! A bounded, deterministic mutation fuzz of the importer (the `cargo fuzz` target in
//! `fuzz/` explores further): mutated peer and example models must import or fail
//! with an error, and whatever imports must run on zero inputs without panicking.
mod common;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// xorshift64*: deterministic, so a failure names a reproducible seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len());
                b[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => b.truncate(rng.below(b.len())),
            3 => {
                let (i, n) = (rng.below(b.len()), 1 + rng.below(16));
                let chunk: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                let j = rng.below(b.len());
                b.splice(j..j, chunk);
            }
            4 => {
                let i = rng.below(b.len());
                b.remove(i.min(b.len().saturating_sub(1)));
            }
            _ => {
                // Varints are where protobuf lengths and dims live: make one huge.
                let i = rng.below(b.len());
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

fn try_one(bytes: &[u8]) {
    if let Ok(g) = mote_onnx::import(bytes, &Default::default()) {
        let inputs = g.inputs.iter().map(|&i| mote_core::Tensor::zeros(&g.values[i].ty)).collect();
        let _ = g.run(inputs);
    }
}

#[test]
fn mutated_models_never_panic() {
    let mut seeds = vec![];
    for f in ["kws_encoder_op14.onnx", "causal_mha_op17.onnx"] {
        seeds.push(std::fs::read(common::repo_root().join("examples/torch-encoder").join(f)).unwrap());
    }
    if let Some(root) = common::peer_models() {
        for case in [
            "Kernels/FP32/LayerNorm",
            "Kernels/FP32/GEMM/TransB",
            "Models/CCT/FP32/CCT_1_16_16_8",
            "Models/Transformer_DeepQuant",
            "Models/EEGFormer",
            "Kernels/Integer/Attention",
        ] {
            seeds.push(std::fs::read(root.join(case).join("network.onnx")).unwrap());
        }
    }
    let per_seed = 500;
    for (s, seed) in seeds.iter().enumerate() {
        for k in 0..per_seed {
            let tag = (s as u64) << 32 | k;
            let mut rng = Rng(tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let bytes = mutate(seed, &mut rng);
            if catch_unwind(AssertUnwindSafe(|| try_one(&bytes))).is_err() {
                let path = std::env::temp_dir().join(format!("mote-fuzz-crash-{tag:x}.onnx"));
                std::fs::write(&path, &bytes).unwrap();
                panic!("importer panicked on mutation {tag:#x} of seed #{s}; input saved to {}", path.display());
            }
        }
    }
}
