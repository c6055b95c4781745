//! Does a compiled model fit a board? Checked before anything is built, so that a model too large for the part
//! is refused with the numbers instead of failing late (or, worse, fitting only the emulator's larger memory).

use crate::{Board, DeployError, Result};
use mote_codegen::Compiled;

/// Flash assumed for code before the firmware is built: the runtime, the kernels a model calls and the generated
/// layer calls. The digits encoder's firmware has about 20-26 KB of code; models that call more kernels or
/// have more layers have more, so the estimate leaves room. The linker checks the real size against the board's
/// flash afterwards (the generated `memory.x` is sized to the board).
pub const CODE_ESTIMATE_BYTES: u64 = 32 * 1024;

/// Stack reserved by default above the statics (the `STACK` region of the firmware's `memory.x`).
pub const DEFAULT_STACK_BYTES: u64 = 16 * 1024;

/// How many of the largest arena tensors a "does not fit" message lists.
const LARGEST_LISTED: usize = 5;

/// The memory a model needs on a board, as checked before building.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fit {
    /// The arena (best plan).
    pub arena_bytes: u64,
    /// Output buffers (in RAM beside the arena).
    pub output_bytes: u64,
    /// The stack reserve.
    pub stack_bytes: u64,
    /// `arena + outputs + stack`.
    pub sram_needed: u64,
    /// The board's SRAM.
    pub sram_limit: u64,
    /// Weights and parameters.
    pub weight_bytes: u64,
    /// Constant data besides the weights (the inputs a deploy firmware embeds; 0 for `mote compile`).
    pub data_bytes: u64,
    /// [`CODE_ESTIMATE_BYTES`].
    pub code_estimate: u64,
    /// `weights + data + code estimate`.
    pub flash_needed: u64,
    /// The board's flash.
    pub flash_limit: u64,
}

/// Thousands separators: `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Checks that `compiled` fits `board` with `stack_bytes` of stack and `data_bytes` of extra constant data.
/// The error lists what is needed against what the board has and the largest arena tensors.
pub fn check_fit(board: &Board, compiled: &Compiled, stack_bytes: u64, data_bytes: u64) -> Result<Fit> {
    let arena_bytes = compiled.arena.best as u64;
    let output_bytes: u64 = compiled.outputs.iter().map(|o| o.len as u64).sum();
    let weight_bytes = compiled.weight_bytes as u64;
    let fit = Fit {
        arena_bytes,
        output_bytes,
        stack_bytes,
        sram_needed: arena_bytes + output_bytes + stack_bytes,
        sram_limit: board.sram_bytes,
        weight_bytes,
        data_bytes,
        code_estimate: CODE_ESTIMATE_BYTES,
        flash_needed: weight_bytes + data_bytes + CODE_ESTIMATE_BYTES,
        flash_limit: board.flash_bytes,
    };
    let mut problems = Vec::new();
    if fit.sram_needed > fit.sram_limit {
        let mut largest: Vec<_> = compiled.tensors.iter().collect();
        largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.first.cmp(&b.first)));
        let list: Vec<String> = largest
            .iter()
            .take(LARGEST_LISTED)
            .map(|t| format!("`{}` {} B (layers {}..{})", t.name, group(t.bytes as u64), t.first, t.last))
            .collect();
        problems.push(format!(
            "SRAM needs {} B (arena {} + outputs {} + stack reserve {}) but the board has {} B; largest arena \
             tensors: {}",
            group(fit.sram_needed),
            group(arena_bytes),
            group(output_bytes),
            group(stack_bytes),
            group(fit.sram_limit),
            if list.is_empty() { "none".to_string() } else { list.join(", ") }
        ));
    }
    if fit.flash_needed > fit.flash_limit {
        let data = if data_bytes > 0 { format!(" + embedded inputs {}", group(data_bytes)) } else { String::new() };
        problems.push(format!(
            "flash needs {} B (weights {}{data} + code estimate {}) but the board has {} B",
            group(fit.flash_needed),
            group(weight_bytes),
            group(CODE_ESTIMATE_BYTES),
            group(fit.flash_limit)
        ));
    }
    if problems.is_empty() {
        Ok(fit)
    } else {
        Err(DeployError::DoesNotFit(format!(
            "the model does not fit board `{}` ({}): {}",
            board.name,
            board.source,
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoardSource;
    use mote_codegen::{ArenaReport, IoInfo, TensorInfo};
    use mote_qemu::Core;

    fn compiled(arena: usize, weights: usize) -> Compiled {
        let t = |name: &str, bytes, first, last| TensorInfo { name: name.into(), bytes, offset: 0, first, last };
        Compiled {
            files: vec![],
            arena: ArenaReport {
                best: arena,
                greedy: arena,
                lower_bound: arena,
                strategy: "best".into(),
                optimal: true,
            },
            weight_bytes: weights,
            inputs: vec![],
            outputs: vec![IoInfo {
                name: "y".into(),
                shape: vec![1, 10],
                len: 10,
                scale: 0.1,
                zero_point: 0,
                dtype: mote_core::DType::I8,
            }],
            layers: vec![],
            tensors: vec![t("small", 100, 0, 1), t("big", 3000, 1, 2), t("mid", 2000, 2, 3)],
        }
    }

    fn board(sram: u64, flash: u64) -> Board {
        Board {
            name: "tiny".into(),
            core: Core::CortexM4,
            sram_bytes: sram,
            flash_bytes: flash,
            clock_hz: 1,
            notes: None,
            source: BoardSource::File("tiny.toml".into()),
        }
    }

    #[test]
    fn fits() {
        let f = check_fit(&board(1 << 20, 1 << 20), &compiled(5000, 20_000), 4096, 64).unwrap();
        assert_eq!((f.sram_needed, f.flash_needed), (5000 + 10 + 4096, 20_000 + 64 + CODE_ESTIMATE_BYTES));
    }

    #[test]
    fn too_large_lists_numbers_and_tensors() {
        let e = check_fit(&board(8192, 40_000), &compiled(5000, 20_000), 4096, 0).unwrap_err().to_string();
        assert!(e.starts_with("the model does not fit board `tiny` (tiny.toml): SRAM needs 9,106 B"), "{e}");
        assert!(e.contains("(arena 5,000 + outputs 10 + stack reserve 4,096) but the board has 8,192 B"), "{e}");
        assert!(e.contains("largest arena tensors: `big` 3,000 B (layers 1..2), `mid` 2,000 B"), "{e}");
        assert!(e.contains("flash needs 52,768 B (weights 20,000 + code estimate 32,768) but the board has 40,000 B"));
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
