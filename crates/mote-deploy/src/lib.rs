//! Deploying compiled mote models to microcontroller boards: board profiles, "does it fit" checks, the standalone
//! crate written by `mote compile` (with an optional C header), and `mote deploy`'s firmware, emulated run and
//! report.
//!
//! The `mote deploy` pipeline, one function per step (the CLI shows progress between them):
//! 1. [`Board::resolve`] the board; compile the model with mote-codegen and compute the host reference;
//! 2. [`check_fit`]: arena + outputs + stack reserve against SRAM, weights + inputs + code estimate against flash;
//! 3. [`write_firmware`]: the model crate and a firmware crate embedding the int8 inputs;
//! 4. [`build`]: cross-compile for the board's core, linked with a memory map of the board's sizes;
//! 5. [`emulate`]: run it in QEMU counting instructions per layer;
//! 6. [`Report`]: compare with the host bit for bit, and render text, JSON or HTML.
//!
//! `mote eval --board` runs a whole test set the same way, in as few firmwares as the flash allows: see
//! [`write_batch_firmware`], [`emulate_batch`] and [`samples_per_firmware`].
#![deny(missing_docs)]

mod batch;
mod board;
pub use mote_codegen::{ArenaReport, CompileOptions, Compiled, IoInfo, LayerInfo, TensorInfo};
pub use mote_plan::Strategy;
mod emulate;
mod error;
mod firmware;
mod fit;
mod generation;
mod header;
mod html;
mod report;

use std::path::{Path, PathBuf};

pub use batch::{
    emulate_batch, parse_batch_outputs, samples_per_firmware, split_even, write_batch_firmware, BatchEmulation,
    BatchSpec,
};
pub use board::{known_board_names, search_dirs, Board, BoardSource, BOARDS_ENV};
pub use emulate::{emulate, parse_outputs, Emulation};
pub use error::{DeployError, Result};
pub use firmware::{build, write_firmware, FirmwareDir, FirmwareSpec, MemoryLimits, Paths, OUTPUT_PREFIX};
pub use fit::{check_fit, group, Fit, CODE_ESTIMATE_BYTES, DEFAULT_STACK_BYTES};
pub use generation::{
    emulate_generation, parse_tokens, run_generation, write_generation_firmware, DeployedGeneration, GenerationJob,
    GenerationRun, GenerationSpec, TOKEN_PREFIX,
};
pub use header::{c_header, ARENA_ALIGN, C_RUN_SYMBOL};
pub use html::{memory_svg, peak};
pub use report::{compare, mismatch_phrase, LayerRow, Mismatch, Report, LATENCY_ASSUMPTION};

use mote_core::{DType, Graph, Tensor};

/// A crate name for a model file: its file name up to the first `.`, lowercase, `-` for anything not a letter
/// or digit (`digits_encoder.int8.onnx` → `digits-encoder`).
pub fn crate_name_for(model: &Path) -> String {
    let stem = model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("");
    let mut name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    name = name.trim_matches('-').to_string();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "model-");
    }
    name
}

/// A fixed pseudo-random input for each graph input, for deployments without `--inputs`: values spread over the
/// device input's type (every int8 value equally likely for an int8 input; a 32-bit LCG, seeded per input),
/// written as the float value that quantizes to it (`scale · (q − zero_point)`) for a float graph input, or as
/// the integer itself for an integer one.
///
/// `device_inputs` are the compiled model's inputs, in graph-input order.
pub fn sample_inputs(g: &Graph, device_inputs: &[IoInfo]) -> Result<Vec<Tensor>> {
    if g.inputs.len() != device_inputs.len() {
        return Err(DeployError::Usage(format!(
            "the graph has {} inputs but the compiled model {}",
            g.inputs.len(),
            device_inputs.len()
        )));
    }
    g.inputs
        .iter()
        .zip(device_inputs)
        .enumerate()
        .map(|(k, (&id, io))| {
            let ty = &g.values[id].ty;
            // The device type's range; wide types keep to the int16 range (any value is a valid test input).
            let (lo, hi) = io.dtype.int_range().map_or((-128, 127), |(lo, hi)| (lo.max(-32768), hi.min(32767)));
            let span = (hi - lo + 1) as u64;
            let mut state = 0x2545_f491u32.wrapping_add((k as u32).wrapping_mul(0x9e37_79b9));
            let q: Vec<i64> = (0..ty.len())
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    lo + (u64::from(state >> 8) % span) as i64
                })
                .collect();
            let t = if ty.dtype.is_float() {
                let f: Vec<f32> = q.iter().map(|&v| io.scale * (v - i64::from(io.zero_point)) as f32).collect();
                Tensor::from_vec(&ty.shape, f).map(|t| t.cast(ty.dtype))
            } else if ty.dtype == DType::Bool {
                return Err(DeployError::Usage(format!(
                    "graph input `{}` is bool; sample inputs are made for numeric inputs only (pass --inputs)",
                    g.values[id].name
                )));
            } else {
                Tensor::from_vec(&ty.shape, q).map(|t| t.cast(ty.dtype))
            };
            Ok(t?)
        })
        .collect()
}

/// Writes `files` (paths relative to the crate root) as the directory `dir`, all or nothing: into a temporary
/// sibling directory first, which is then renamed to `dir`. An existing `dir` is an error unless `replace`,
/// in which case it is swapped out only once the new crate is complete.
pub fn write_crate_dir(dir: &Path, files: &[(PathBuf, String)], replace: bool) -> Result<()> {
    if dir.exists() && !replace {
        return Err(DeployError::Usage(format!(
            "{} already exists; remove it, choose another -o directory, or pass --force to replace it",
            dir.display()
        )));
    }
    let name = dir.file_name().ok_or_else(|| DeployError::Usage(format!("{}: not a directory name", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(DeployError::io(format!("creating {}", parent.display())))?;
    let tag = format!("{}.{}", name.to_string_lossy(), std::process::id());
    let tmp = parent.join(format!(".{tag}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        for (rel, text) in files {
            if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(DeployError::Usage(format!("refusing to write {} outside the crate", rel.display())));
            }
            let path = tmp.join(rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).map_err(DeployError::io(format!("creating {}", p.display())))?;
            }
            std::fs::write(&path, text).map_err(DeployError::io(format!("writing {}", path.display())))?;
        }
        let old = parent.join(format!(".{tag}.old"));
        let replaced = dir.exists();
        if replaced {
            std::fs::rename(dir, &old).map_err(DeployError::io(format!("moving the old {} aside", dir.display())))?;
        }
        std::fs::rename(&tmp, dir).map_err(DeployError::io(format!(
            "renaming {} to {}",
            tmp.display(),
            dir.display()
        )))?;
        if replaced {
            std::fs::remove_dir_all(&old).map_err(DeployError::io(format!("removing {}", old.display())))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names() {
        assert_eq!(crate_name_for(Path::new("/x/digits_encoder.int8.onnx")), "digits-encoder");
        assert_eq!(crate_name_for(Path::new("KWS Model.onnx")), "kws-model");
        assert_eq!(crate_name_for(Path::new("3x.onnx")), "model-3x");
        assert_eq!(crate_name_for(Path::new(".onnx")), "model-");
    }

    #[test]
    fn sample_inputs_quantize_to_every_int8_value() {
        use mote_core::TensorType;
        let mut g = Graph::default();
        let x = g.add_value("x", TensorType::new(DType::F32, vec![4096]), None);
        g.inputs.push(x);
        let io = IoInfo { name: "x".into(), shape: vec![4096], len: 4096, scale: 0.5, zero_point: 3, dtype: DType::I8 };
        let t = sample_inputs(&g, std::slice::from_ref(&io)).unwrap();
        let f = t[0].to_f32();
        let q: Vec<i64> = f.iter().map(|&v| (v / 0.5).round() as i64 + 3).collect();
        assert!(q.iter().all(|&v| (-128..=127).contains(&v)));
        for v in [-128, 0, 127] {
            assert!(q.contains(&v), "{v} never drawn");
        }
        assert_eq!(sample_inputs(&g, &[io]).unwrap()[0].to_f32(), f, "fixed");
        assert!(sample_inputs(&g, &[]).is_err());
    }

    #[test]
    fn crate_dir_is_written_whole() {
        let root = std::env::temp_dir().join(format!("mote-deploy-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("out");
        let files = vec![(PathBuf::from("Cargo.toml"), "a".to_string()), (PathBuf::from("src/lib.rs"), "b".into())];
        write_crate_dir(&dir, &files, false).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(), "b");
        let err = write_crate_dir(&dir, &files, false).unwrap_err().to_string();
        assert!(err.contains("already exists") && err.contains("--force"), "{err}");
        let files2 = vec![(PathBuf::from("Cargo.toml"), "c".to_string())];
        write_crate_dir(&dir, &files2, true).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("Cargo.toml")).unwrap(), "c");
        assert!(!dir.join("src").exists(), "the old crate was replaced, not merged");
        let bad = vec![(PathBuf::from("../escape"), String::new())];
        assert!(write_crate_dir(&root.join("bad"), &bad, false).is_err());
        assert!(!root.join("bad").exists(), "nothing left behind");
        let leftovers: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
