//! Many inferences in one firmware, for `mote eval --board`: the firmware embeds the device inputs of a whole
//! test set (stacked per device input, in flash), runs the model on each sample in a loop, and prints every
//! sample's outputs as `mote-deploy: output <k> <hex>` lines, in sample order. Instruction-count marks are
//! placed around the first sample only, so the emulation measures one inference exactly as `mote deploy` does.
//!
//! A test set larger than the flash budget ([`samples_per_firmware`]: half of the flash the model leaves) is
//! split into equal chunks ([`split_even`]), one firmware each.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use mote_codegen::Compiled;

use crate::emulate::{decode_hex, run_and_parse};
use crate::firmware::{buffers_and_run, input_static, write_work, Fnv, OUTPUT_PREFIX};
use crate::{group, Board, DeployError, Emulation, FirmwareDir, MemoryLimits, Paths, Result, CODE_ESTIMATE_BYTES};

/// What goes into one batch firmware.
#[derive(Clone, Copy, Debug)]
pub struct BatchSpec<'a> {
    /// The board (core and memory).
    pub board: &'a Board,
    /// The compiled model crate.
    pub compiled: &'a Compiled,
    /// The package name of the compiled crate (its `CompileOptions::crate_name`).
    pub model_crate: &'a str,
    /// One vector per device input, in order: the device bytes of every sample, stacked (sample `s` of input
    /// `k` is `inputs[k][s * len_k..(s + 1) * len_k]`, `len_k` the input's [`IoInfo::len`](crate::IoInfo)).
    pub inputs: &'a [Vec<i8>],
    /// Number of samples (inferences).
    pub samples: usize,
    /// The memory map.
    pub limits: MemoryLimits,
}

/// What one emulated batch run measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEmulation {
    /// The run as `mote deploy` sees it: the first sample's outputs and its per-layer instructions (the marked
    /// inference), the whole run's instructions, the stack high-water mark and the ELF sizes.
    pub first: Emulation,
    /// Every sample's outputs, in sample order (one vector per device output).
    pub outputs: Vec<Vec<Vec<i8>>>,
}

/// How many samples of `sample_bytes` device-input bytes one firmware may embed: half of the flash left by the
/// weights and the code estimate ([`CODE_ESTIMATE_BYTES`]), so that the estimate's error and the loop's own code
/// have room. At least 1; a model that leaves no room for one sample is [`DeployError::DoesNotFit`].
pub fn samples_per_firmware(
    board: &Board,
    compiled: &Compiled,
    limits: MemoryLimits,
    sample_bytes: u64,
) -> Result<usize> {
    let used = compiled.weight_bytes as u64 + CODE_ESTIMATE_BYTES;
    let budget = limits.flash.saturating_sub(used) / 2;
    let per = budget.checked_div(sample_bytes).unwrap_or(u64::MAX);
    if per == 0 {
        return Err(DeployError::DoesNotFit(format!(
            "board `{}` ({}) has no flash for the test samples: {} B of flash, weights {} + code estimate {} B leave \
             {} B, half of which ({} B) is the samples' budget, but one sample takes {} B",
            board.name,
            board.source,
            group(limits.flash),
            group(compiled.weight_bytes as u64),
            group(CODE_ESTIMATE_BYTES),
            group(limits.flash.saturating_sub(used)),
            group(budget),
            group(sample_bytes)
        )));
    }
    Ok(usize::try_from(per).unwrap_or(usize::MAX))
}

/// `0..n` split into the fewest chunks of at most `per` samples, all of equal size but the last, which may be
/// smaller (`split_even(450, 200)` → `0..150, 150..300, 300..450`). Empty for `n == 0`.
pub fn split_even(n: usize, per: usize) -> Vec<Range<usize>> {
    if n == 0 {
        return Vec::new();
    }
    let per = per.max(1);
    let chunks = n.div_ceil(per);
    let size = n.div_ceil(chunks);
    (0..chunks).map(|c| c * size..((c + 1) * size).min(n)).collect()
}

/// Writes the model crate and a batch firmware crate of `spec` into their work directory (named by a hash of
/// everything in them, as [`write_firmware`](crate::write_firmware) does).
pub fn write_batch_firmware(paths: &Paths, spec: &BatchSpec<'_>) -> Result<FirmwareDir> {
    let c = spec.compiled;
    if spec.inputs.len() != c.inputs.len() {
        return Err(DeployError::Usage(format!(
            "the model has {} device input(s) but {} were given",
            c.inputs.len(),
            spec.inputs.len()
        )));
    }
    if spec.samples == 0 {
        return Err(DeployError::Usage("a batch firmware needs at least one sample".into()));
    }
    for (io, data) in c.inputs.iter().zip(spec.inputs) {
        if data.len() != io.len * spec.samples {
            return Err(DeployError::Usage(format!(
                "device input `{}` has {} values, {} samples of {} need {}",
                io.name,
                data.len(),
                spec.samples,
                io.len,
                io.len * spec.samples
            )));
        }
    }
    let mut h = Fnv::new();
    h.bytes(b"batch").bytes(&(spec.samples as u64).to_le_bytes());
    for data in spec.inputs {
        h.bytes(&data.iter().map(|&v| v as u8).collect::<Vec<u8>>());
    }
    write_work(paths, spec.board, &c.files, spec.model_crate, spec.limits, &batch_main_rs(spec), h)
}

/// The batch firmware's `src/main.rs`.
fn batch_main_rs(spec: &BatchSpec<'_>) -> String {
    let c = spec.compiled;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Generated by `mote eval` for board `{}` ({}): runs the model on each of the {} embedded samples in \
         turn, with\n//! an instruction-count mark before every layer of the first one, and prints each sample's \
         outputs as\n//! `{OUTPUT_PREFIX}<k> <hex>`, in sample order. Exit code 0, or 1 when the model returns an \
         error.\n\
         #![no_std]\n#![no_main]\n\n\
         use core::hint::black_box;\n\n\
         use mote_fw::{{mark, println, HexI8, MARK_END}};\n\n\
         /// Number of samples.\nconst SAMPLES: usize = {};\n",
        spec.board.name, spec.board.core, spec.samples, spec.samples
    );
    for (k, (io, data)) in c.inputs.iter().zip(spec.inputs).enumerate() {
        input_static(&mut s, k, io, data, " of every sample, stacked,");
        let _ = writeln!(s, "/// Bytes of device input {k} per sample.\nconst LEN_{k}: usize = {};\n", io.len);
    }
    buffers_and_run(&mut s, c);
    let _ = writeln!(s, "    for s in 0..SAMPLES {{\n        let first = s == 0;");
    let ins: Vec<String> =
        (0..c.inputs.len()).map(|k| format!("black_box(&INPUT_{k}[s * LEN_{k}..(s + 1) * LEN_{k}])")).collect();
    let _ = writeln!(s, "        let inputs: [&[i8]; {}] = [{}];", ins.len(), ins.join(", "));
    let outs: Vec<String> = (0..c.outputs.len()).map(|k| format!("&mut b.output_{k}[..]")).collect();
    let _ = writeln!(s, "        let mut outputs: [&mut [i8]; {}] = [{}];", outs.len(), outs.join(", "));
    let _ = writeln!(
        s,
        "        let result = model::run_marked(&mut b.arena, &inputs, &mut outputs, &mut |id| {{\n            \
         if first {{\n                mark(id);\n            }}\n        }});\n        \
         if first {{\n            mark(MARK_END);\n        }}\n        \
         if let Err(e) = result {{\n            \
         println!(\"mote-deploy: the model returned an error on sample {{}}: {{:?}}\", s, e);\n            \
         return 1;\n        }}"
    );
    for k in 0..c.outputs.len() {
        let _ = writeln!(s, "        println!(\"{OUTPUT_PREFIX}{k} {{}}\", HexI8(black_box(&b.output_{k})));");
    }
    let _ = writeln!(s, "    }}\n    0\n}}");
    s
}

/// The outputs of `samples` samples printed as `mote-deploy: output <k> <hex>` lines, sample after sample
/// (outputs `0..lens.len()` each), checked against the expected lengths and order.
pub fn parse_batch_outputs(stdout: &str, lens: &[usize], samples: usize) -> Result<Vec<Vec<Vec<i8>>>, String> {
    if lens.is_empty() {
        return Ok(vec![Vec::new(); samples]);
    }
    let mut all: Vec<Vec<Vec<i8>>> = Vec::with_capacity(samples);
    let mut current: Vec<Vec<i8>> = Vec::with_capacity(lens.len());
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(OUTPUT_PREFIX) else { continue };
        let (k, hex) = rest.split_once(' ').unwrap_or((rest, ""));
        let k: usize = k.parse().map_err(|_| format!("bad output line `{line}`"))?;
        let s = all.len();
        if s == samples {
            return Err(format!("more outputs printed than the {samples} samples have"));
        }
        if k != current.len() {
            return Err(format!("sample {s}: output {k} printed where output {} was expected", current.len()));
        }
        let values =
            decode_hex(hex.trim()).ok_or_else(|| format!("sample {s}, output {k}: `{hex}` is not hex bytes"))?;
        if values.len() != lens[k] {
            return Err(format!("sample {s}, output {k} has {} values, the model's has {}", values.len(), lens[k]));
        }
        current.push(values);
        if current.len() == lens.len() {
            all.push(std::mem::take(&mut current));
        }
    }
    if all.len() != samples || !current.is_empty() {
        return Err(format!(
            "the firmware printed the outputs of {} of {samples} samples{}",
            all.len(),
            if current.is_empty() { String::new() } else { format!(" (and {} of the next)", current.len()) }
        ));
    }
    Ok(all)
}

/// Runs a batch firmware `elf` of `samples` samples on `board`'s emulated core with instruction counting (the
/// first sample marked, `layers` marks) and reads every sample's outputs. Errors as [`emulate`](crate::emulate).
pub fn emulate_batch(
    board: &Board,
    elf: &Path,
    output_lens: &[usize],
    samples: usize,
    layers: usize,
    timeout: Duration,
    plugin_dir: &Path,
) -> Result<BatchEmulation> {
    let (first, outputs) = run_and_parse(board, elf, layers, timeout, plugin_dir, |stdout| {
        let all = parse_batch_outputs(stdout, output_lens, samples)?;
        let first = all.first().cloned().unwrap_or_default();
        Ok((first, all))
    })?;
    Ok(BatchEmulation { first, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_splits() {
        let r = |n, per| split_even(n, per).into_iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
        assert_eq!(r(450, 200), [(0, 150), (150, 300), (300, 450)]);
        assert_eq!(r(450, 450), [(0, 450)]);
        assert_eq!(r(450, 1000), [(0, 450)]);
        assert_eq!(r(7, 3), [(0, 3), (3, 6), (6, 7)]);
        assert_eq!(r(5, 0), [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        assert!(split_even(0, 4).is_empty());
    }

    #[test]
    fn batch_outputs_parse_in_order() {
        let out = "x\nmote-deploy: output 0 01\nmote-deploy: output 1 ff80\nmote-deploy: output 0 7f\n\
                   mote-deploy: output 1 0000\nmote: stack used=1 size=2\n";
        let all = parse_batch_outputs(out, &[1, 2], 2).unwrap();
        assert_eq!(all, vec![vec![vec![1], vec![-1, -128]], vec![vec![127], vec![0, 0]]]);
        assert!(parse_batch_outputs(out, &[1, 2], 3).unwrap_err().contains("outputs of 2 of 3 samples"));
        assert!(parse_batch_outputs(out, &[1, 2], 1).unwrap_err().contains("more outputs"));
        assert!(parse_batch_outputs(out, &[1, 1], 2).unwrap_err().contains("sample 0, output 1 has 2 values"));
        let skipped = "mote-deploy: output 1 00\n";
        assert!(parse_batch_outputs(skipped, &[1, 1], 1).unwrap_err().contains("output 1 printed where output 0"));
        let half = "mote-deploy: output 0 00\n";
        assert!(parse_batch_outputs(half, &[1, 1], 1).unwrap_err().contains("(and 1 of the next)"));
        assert!(parse_batch_outputs("mote-deploy: output 0 0g\n", &[1], 1).unwrap_err().contains("not hex"));
        assert_eq!(parse_batch_outputs("", &[], 2).unwrap(), vec![Vec::<Vec<i8>>::new(); 2]);
    }
}
