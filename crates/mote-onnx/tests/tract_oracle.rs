//! mote's float reference agrees with `tract-onnx` (an independent ONNX runtime,
//! used only as a test oracle) within 1e-4, absolute or relative.
#[macro_use]
mod common;
use mote_core::{npz, Tensor};
use std::path::Path;
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TValue};

fn tract_run(model: &Path, inputs: &[Tensor]) -> Vec<Tensor> {
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load {}: {e:?}", model.display()));
    let ins: tract_onnx::prelude::TVec<TValue> = inputs
        .iter()
        .map(|t| {
            let data: Vec<f32> = t.to_f32().iter().copied().collect();
            tract_onnx::prelude::Tensor::from_shape(t.shape(), &data).unwrap().into()
        })
        .collect();
    let outs = plan.run(ins).unwrap_or_else(|e| panic!("tract run {}: {e:?}", model.display()));
    outs.iter()
        .map(|o| {
            let o = o.cast_to::<f32>().unwrap();
            let v: Vec<f32> = o.to_plain_array_view::<f32>().unwrap().iter().copied().collect();
            Tensor::from_vec(o.shape(), v).unwrap()
        })
        .collect()
}

fn compare(model: &Path, inputs: Vec<Tensor>) {
    let g = mote_onnx::load(model, &Default::default()).unwrap();
    let theirs = tract_run(model, &inputs);
    let ours = g.run(inputs).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        common::assert_close(a, b, 1e-4, &format!("{} output {k} vs tract", model.display()));
    }
}

fn peer(case: &str) {
    let Some(root) = common::peer_models() else { return };
    let c = common::load_case(&root.join(case));
    compare(&root.join(case).join("network.onnx"), c.inputs);
}

fn torch(model: &str) {
    let dir = common::repo_root().join("examples/torch-encoder");
    let inputs = npz::read(dir.join(format!("{model}.inputs.npz"))).unwrap().into_iter().map(|(_, t)| t).collect();
    compare(&dir.join(format!("{model}.onnx")), inputs);
}

cases! { peer:
    peer_gemm_regular => "Kernels/FP32/GEMM/Regular",
    peer_gemm_transb => "Kernels/FP32/GEMM/TransB",
    peer_layernorm => "Kernels/FP32/LayerNorm",
    peer_matmul => "Kernels/FP32/MatMul",
    peer_rmsnorm_separate_ops => "Kernels/FP32/RMSNorm/separate_ops",
    peer_softmax => "Kernels/FP32/Softmax/Regular",
    peer_cct_8 => "Models/CCT/FP32/CCT_1_16_16_8",
    peer_cct_32 => "Models/CCT/FP32/CCT_1_16_16_32",
    peer_cct_64 => "Models/CCT/FP32/CCT_1_16_16_64",
    peer_tinyvit => "Models/TinyViT/Demo",
    peer_transformer_deepquant => "Models/Transformer_DeepQuant",
    peer_gelu => "Kernels/FP32/GELU",
    peer_hardswish => "Kernels/FP32/HardSwish",
}

cases! { torch:
    torch_kws_op17 => "kws_encoder_op17",
    torch_kws_op14 => "kws_encoder_op14",
    torch_causal_mha => "causal_mha_op17",
}
