//! Feeds arbitrary bytes to the ONNX importer; whatever imports is also run on
//! zero inputs. Neither may panic: every failure must be an `Err`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = mote_onnx::import(data, &Default::default()) {
        let inputs = g.inputs.iter().map(|&i| mote_core::Tensor::zeros(&g.values[i].ty)).collect();
        let _ = g.run(inputs);
    }
});
