//! Every float test case of the Deeploy peer models reproduces `outputs.npz`
//! within 1e-4 (absolute or relative) on mote's float reference interpreter.
#[macro_use]
mod common;

fn check(case: &str) {
    let Some((got, expected)) = common::run_case(case) else { return };
    for (k, (g, w)) in got.iter().zip(&expected).enumerate() {
        common::assert_close(g, w, 1e-4, &format!("{case} output {k}"));
    }
}

cases! { check:
    kernel_gelu => "Kernels/FP32/GELU",
    kernel_gemm_regular => "Kernels/FP32/GEMM/Regular",
    kernel_gemm_transb => "Kernels/FP32/GEMM/TransB",
    kernel_hardswish => "Kernels/FP32/HardSwish",
    kernel_layernorm => "Kernels/FP32/LayerNorm",
    kernel_matmul => "Kernels/FP32/MatMul",
    kernel_rmsnorm_separate_ops => "Kernels/FP32/RMSNorm/separate_ops",
    kernel_rmsnorm_single_fused_op => "Kernels/FP32/RMSNorm/single_fused_op",
    kernel_softmax => "Kernels/FP32/Softmax/Regular",
    cct_1_16_16_8 => "Models/CCT/FP32/CCT_1_16_16_8",
    cct_1_16_16_32 => "Models/CCT/FP32/CCT_1_16_16_32",
    cct_1_16_16_64 => "Models/CCT/FP32/CCT_1_16_16_64",
    tinyvit_demo => "Models/TinyViT/Demo",
    microllama1_fp32 => "Models/microLlama/FP32/microLlama1",
    transformer_deepquant => "Models/Transformer_DeepQuant",
}
