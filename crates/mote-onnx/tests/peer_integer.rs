//! Every integer test case of the Deeploy peer models reproduces `outputs.npz` EXACTLY
//! (i64 equality of every element) on mote's interpreter, whose Deeploy ops call mote-kernels.
#[macro_use]
mod common;

fn check(case: &str) {
    let Some((got, expected)) = common::run_case(case) else { return };
    for (k, (g, w)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{case} output {k}: shape");
        // The goldens are integral (int8/int32/int64 or integral float32): compare as i64.
        let want = w.to_f64_vec();
        assert!(want.iter().all(|v| v.fract() == 0.0), "{case} output {k}: non-integral golden");
        let want: Vec<i64> = want.iter().map(|&v| v as i64).collect();
        let got = g.to_i64_vec();
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "{case} output {k}: {bad} of {} elements differ; first at {i}: got {}, want {}",
                got.len(),
                got[i],
                want[i]
            );
        }
    }
}

cases! { check:
    kernel_attention => "Kernels/Integer/Attention",
    kernel_gemm_regular => "Kernels/Integer/GEMM/Regular",
    kernel_gemm_regular_rq_per_row => "Kernels/Integer/GEMM/Regular_RQPerRow",
    kernel_gemm_transb_rq => "Kernels/Integer/GEMM/TransB_RQ",
    kernel_hardswish_regular_rq => "Kernels/Integer/Hardswish/Regular_RQ",
    kernel_matmul_batch => "Kernels/Integer/MatMul/Batch",
    kernel_matmul_regular => "Kernels/Integer/MatMul/Regular",
    kernel_matmul_regular_rq => "Kernels/Integer/MatMul/Regular_RQ",
    kernel_rmsnorm => "Kernels/Integer/RMSNorm",
    kernel_softmax_regular => "Kernels/Integer/Softmax/Regular",
    kernel_true_integer_div => "Kernels/Integer/TrueIntegerDiv",
    eegformer => "Models/EEGFormer",
    icct => "Models/CCT/Int/ICCT",
    microllama1_int8 => "Models/microLlama/INT8/microLlama1",
    microllama8_int8 => "Models/microLlama/INT8/microLlama8",
    microllama1_parallel_int8 => "Models/microLlama/INT8/microLlama1_parallel",
}
