//! The attention benchmark's comparison point: the EEGFormer and ECGFormer int8 multi-head self-attention blocks
//! written with the `embedded-nn` crate (0.2.3, "pure Rust no_std inspired by CMSIS-NN"), the library a Rust user
//! would pick instead of mote, measured on QEMU like mote's own firmware.
//!
//! `firmware/attention-enn` has one binary per model and variant; each runs the block once between
//! instruction-count marks on an arena in `.bss` and prints the FNV-1a hash of the output. This module builds the
//! crate once per core (in the shared firmware target dir), runs every binary, and compares each hash with the
//! same block run on the host (`firmware/attention-enn/src/block.rs`, included below).
//!
//! Variants (both use embedded-nn's kernels for everything; they compute the same integers):
//! * `<model>` (e.g. `eegformer_mhsa`): `fully_connected_s8` ×3, the fused `scaled_dot_product_attention_s8`,
//!   `fully_connected_s8`. What an embedded-nn user writes: its transformer module offers the fused kernel for
//!   exactly this. No glue code.
//! * `<model>_unfused`: the op-by-op graph, `fully_connected_s8` + `transpose_nd_s8` (head split) ×3, per head
//!   `batch_matmul_s8_shaped` (`Q_h K_hᵀ`) → `softmax_s8` → `batch_matmul_s8_shaped` (`· V_h`), `transpose_nd_s8`
//!   (concat), `fully_connected_s8`. Glue: the per-head loop.
use crate::gemm::firmware_target_dir;
use crate::quant::repo_root;
use anyhow::{anyhow, bail, Context, Result};
use mote_qemu::{build_firmware, build_plugin, elf_sizes, run_elf, Core, RunOptions};
use std::time::Duration;

/// The block, its data and arena layout, shared with the firmware.
#[allow(dead_code)]
#[path = "../../../firmware/attention-enn/src/block.rs"]
mod block;

use block::Model;

/// One model (and variant) measured on one core.
#[derive(Clone, Debug)]
pub struct EnnRow {
    /// `eegformer_mhsa` / `ecgformer_mhsa` (embedded-nn's fused attention kernel), or the same with `_unfused`
    /// (the op-by-op graph); see the module doc.
    pub model: &'static str,
    /// The core.
    pub core: Core,
    /// Instructions of the block call (its region, including the marker's own few instructions: 5 on Cortex-M).
    pub instructions: u64,
    /// Activation bytes live at the block's peak, which is the firmware's arena: `4·S·H·P + max(S·E, 2·S·S)`
    /// (Q, K, V, the head outputs, and one head's int8 logits + probabilities, whose bytes also hold `x` before
    /// and `y` after; see `firmware/attention-enn/src/block.rs`). EEGFormer 96,066, ECGFormer 12,936.
    pub arena_bytes: usize,
    /// `text + rodata` of the firmware ELF: this block's code and weights, the embedded-nn kernels it calls, and
    /// the runtime (startup, semihosting output, formatting).
    pub flash_bytes: u64,
    /// The MCU output hashes like the host's run of the same block and the MCU used the expected arena.
    pub bit_exact: bool,
}

/// One firmware binary: the row's model name, the block it runs, whether fused, the binary's name.
struct Bin {
    name: &'static str,
    model: &'static Model,
    fused: bool,
    bin: &'static str,
}

/// Every binary of `firmware/attention-enn`, in row order.
const BINS: [Bin; 4] = [
    Bin { name: "eegformer_mhsa", model: &block::EEGFORMER_MHSA, fused: true, bin: "attention-enn-eegformer-fused" },
    Bin {
        name: "eegformer_mhsa_unfused",
        model: &block::EEGFORMER_MHSA,
        fused: false,
        bin: "attention-enn-eegformer-unfused",
    },
    Bin { name: "ecgformer_mhsa", model: &block::ECGFORMER_MHSA, fused: true, bin: "attention-enn-ecgformer-fused" },
    Bin {
        name: "ecgformer_mhsa_unfused",
        model: &block::ECGFORMER_MHSA,
        fused: false,
        bin: "attention-enn-ecgformer-unfused",
    },
];

/// Instruction-count region of the block call (`attention_enn::REGION` in the firmware).
const REGION: u32 = 1;

/// The block's output on the host: `y [S, E]`.
fn host_output(model: &Model, fused: bool) -> Result<Vec<i8>> {
    let mut arena = vec![0i8; model.shape.arena_bytes()];
    block::fill_input(model, &mut arena);
    let run = if fused { block::mhsa_fused } else { block::mhsa_unfused };
    run(model, &mut arena).map_err(|e| anyhow!("{} on the host: {e}", model.name))?;
    Ok(block::output(model, &arena).to_vec())
}

/// Builds `firmware/attention-enn` for each of `cores`, runs its binaries on QEMU counting instructions and
/// checks each output against the host. Rows: per core, EEGFormer fused and unfused, ECGFormer fused and
/// unfused. Errors: a failed build or run, or a binary that did not report its result (a wrong hash is not an
/// error: see [`EnnRow::bit_exact`]).
pub fn measure(cores: &[Core]) -> Result<Vec<EnnRow>> {
    let target_dir = firmware_target_dir()?;
    let plugin_dir = target_dir.join("plugin");
    build_plugin(&plugin_dir)?;
    let opts = RunOptions {
        timeout: Duration::from_secs(300),
        count_instructions: true,
        plugin_dir: Some(plugin_dir),
        stdout_lines: None,
    };
    let host: Vec<u32> =
        BINS.iter().map(|b| host_output(b.model, b.fused).map(|y| block::fnv1a(&y))).collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for &core in cores {
        // Builds every binary of the crate; cargo reports one of them, the others sit beside it.
        let built = build_firmware(&repo_root().join("firmware/attention-enn"), core, &target_dir)?;
        let dir = built.parent().context("firmware path without a directory")?;
        for (b, &host_hash) in BINS.iter().zip(&host) {
            let elf = dir.join(b.bin);
            let sizes = elf_sizes(&elf)?;
            let out = run_elf(core, &elf, &opts)?;
            let context = || {
                format!(
                    "{core} {}: exit code {}; stdout:\n{}\nstderr:\n{}",
                    b.bin, out.exit_code, out.stdout, out.stderr
                )
            };
            let variant = if b.fused { "fused" } else { "unfused" };
            let line = out
                .stdout
                .lines()
                .find_map(|l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["enn", model, v, arena, hash] if *model == b.model.name && *v == variant => {
                        Some((arena.parse::<usize>().ok()?, u32::from_str_radix(hash, 16).ok()?))
                    }
                    _ => None,
                })
                .filter(|_| out.exit_code == 0);
            let Some((arena, mcu_hash)) = line else { bail!("no result line\n{}", context()) };
            let regions = out.instructions.as_ref().map(|c| c.by_region()).unwrap_or_default();
            let instructions = *regions.get(&REGION).ok_or_else(|| anyhow!("no instruction count\n{}", context()))?;
            let arena_bytes = b.model.shape.arena_bytes();
            rows.push(EnnRow {
                model: b.name,
                core,
                instructions,
                arena_bytes,
                flash_bytes: sizes.text + sizes.rodata,
                bit_exact: mcu_hash == host_hash && arena == arena_bytes,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the host: both variants compute the same output, which does not saturate, and the arena is the sum of
    /// its buffers.
    #[test]
    fn host_block() {
        for (model, macs, arena) in
            [(&block::EEGFORMER_MHSA, 6_013_440, 96_066), (&block::ECGFORMER_MHSA, 206_976, 12_936)]
        {
            let shape = model.shape;
            assert_eq!(shape.macs(), macs);
            let (s, e, inner) = (shape.s, shape.e, shape.inner());
            // Q, K, V, head outputs; one head's logits and probabilities (which also hold x, then y).
            assert_eq!(shape.arena_bytes(), 4 * s * inner + (2 * s * s).max(s * e));
            assert_eq!(shape.arena_bytes(), arena);
            let fused = host_output(model, true).unwrap();
            assert_eq!(fused, host_output(model, false).unwrap(), "{}", model.name);
            assert_eq!(fused.len(), s * e);
            assert!(fused.iter().all(|&v| v > i8::MIN && v < i8::MAX), "{}: saturated output", model.name);
            let distinct = fused.iter().collect::<std::collections::BTreeSet<_>>().len();
            assert!(distinct > 64, "{}: only {distinct} distinct output values", model.name);
        }
    }

    /// On the emulated Cortex-M4: every binary bit-exact with plausible counts. Without QEMU, the Rust target or
    /// the plugin's build tools it prints `SKIP: <reason>` and passes, except when `CI` is set, where it fails.
    #[test]
    fn enn_cortex_m4() {
        let core = Core::CortexM4;
        let plugin = firmware_target_dir().map(|d| d.join("plugin")).unwrap_or_else(|e| panic!("{core}: {e}"));
        let Some(()) = mote_qemu::tools_or_skip(core, &plugin) else { return };
        let rows = measure(&[core]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(rows.len(), BINS.len());
        for (r, b) in rows.iter().zip(&BINS) {
            assert_eq!((r.model, r.core), (b.name, core));
            assert!(r.bit_exact, "{core} {}: differs from the host", r.model);
            let macs = b.model.shape.macs() as u64;
            // Scalar int8 kernels: at least one instruction per MAC, and well under 100.
            assert!(
                r.instructions > macs && r.instructions < 100 * macs,
                "{}: {} instructions",
                r.model,
                r.instructions
            );
            // The weights are in flash.
            let weights = 4 * b.model.shape.e * b.model.shape.inner();
            assert!(r.flash_bytes > weights as u64, "{}: {} B flash", r.model, r.flash_bytes);
            println!(
                "{core} {}: {} instructions ({:.2} per MAC), arena {} B, flash {} B",
                r.model,
                r.instructions,
                r.instructions as f64 / macs as f64,
                r.arena_bytes,
                r.flash_bytes
            );
        }
    }
}
