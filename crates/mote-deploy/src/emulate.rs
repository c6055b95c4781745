//! Running a deploy firmware on its core's emulated board and reading back what it printed and executed.

use std::path::Path;
use std::time::Duration;

use mote_qemu::{elf_sizes, run_elf, ElfSizes, Error as QemuError, RunOptions, StackUsage};

use crate::firmware::OUTPUT_PREFIX;
use crate::{Board, DeployError, Result};

/// Lines of firmware output quoted in error messages.
const QUOTED_LINES: usize = 12;

/// What one emulated run measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulation {
    /// The int8 outputs the firmware printed, in order.
    pub outputs: Vec<Vec<i8>>,
    /// Instructions per layer region (layer id, instructions), in execution order.
    pub layers: Vec<(u32, u64)>,
    /// Instructions of the whole run, reset to exit (start-up, printing and all).
    pub total_instructions: u64,
    /// Stack high-water mark.
    pub stack: StackUsage,
    /// ELF section sizes.
    pub sizes: ElfSizes,
}

impl Emulation {
    /// Instructions for one inference: the sum of the layer regions.
    pub fn inference_instructions(&self) -> u64 {
        self.layers.iter().map(|&(_, n)| n).sum()
    }
}

/// The last `QUOTED_LINES` lines of `text`, indented, for an error message.
fn quote(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(QUOTED_LINES)..];
    if tail.is_empty() {
        "(nothing)".to_string()
    } else {
        tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    }
}

/// Decodes a hex string of two's-complement bytes.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<i8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).map(|b| b as i8))
        .collect()
}

/// The outputs printed as `mote-deploy: output <k> <hex>` lines, checked against the expected lengths.
pub fn parse_outputs(stdout: &str, lens: &[usize]) -> Result<Vec<Vec<i8>>, String> {
    let mut outputs: Vec<Option<Vec<i8>>> = vec![None; lens.len()];
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(OUTPUT_PREFIX) else { continue };
        let (k, hex) = rest.split_once(' ').unwrap_or((rest, ""));
        let k: usize = k.parse().map_err(|_| format!("bad output line `{line}`"))?;
        let slot = outputs.get_mut(k).ok_or_else(|| format!("output {k} printed, the model has {}", lens.len()))?;
        let values = decode_hex(hex.trim()).ok_or_else(|| format!("output {k}: `{hex}` is not hex bytes"))?;
        if values.len() != lens[k] {
            return Err(format!("output {k} has {} values, the model's has {}", values.len(), lens[k]));
        }
        *slot = Some(values);
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(k, o)| o.ok_or_else(|| format!("the firmware printed no output {k}")))
        .collect()
}

/// Runs `elf` on `board`'s emulated core with instruction counting; `layers` is the number of layers (mark
/// ids `0..layers`). Errors: a run that times out (with a hint to raise `--timeout`), a firmware that exits
/// non-zero or prints malformed output (with its last lines), and missing tools.
pub fn emulate(
    board: &Board,
    elf: &Path,
    output_lens: &[usize],
    layers: usize,
    timeout: Duration,
    plugin_dir: &Path,
) -> Result<Emulation> {
    run_and_parse(board, elf, layers, timeout, plugin_dir, |stdout| parse_outputs(stdout, output_lens).map(|o| (o, ())))
        .map(|(run, ())| run)
}

/// [`emulate`] with the outputs read from the firmware's stdout by `parse`: the run (with the outputs
/// `parse` returns first, and any extra data it returns beside it).
pub(crate) fn run_and_parse<X>(
    board: &Board,
    elf: &Path,
    layers: usize,
    timeout: Duration,
    plugin_dir: &Path,
    parse: impl FnOnce(&str) -> Result<(Vec<Vec<i8>>, X), String>,
) -> Result<(Emulation, X)> {
    let (out, counts) = run_counted(board, elf, timeout, plugin_dir, None)?;
    let fail = |what: String| firmware_error(board, &out.stdout, what);
    let (outputs, extra) = parse(&out.stdout).map_err(fail)?;
    let regions = counts.regions();
    let ids: Vec<u32> = regions.iter().map(|r| r.id).collect();
    let expected: Vec<u32> = (0..layers as u32).collect();
    if ids != expected {
        return Err(fail(format!("expected one mark per layer (ids 0..{layers}) then MARK_END, got regions {ids:?}")));
    }
    let stack = out.stack().ok_or_else(|| fail("no `mote: stack` line".into()))?;
    let sizes = elf_sizes(elf)?;
    let run = Emulation {
        outputs,
        layers: regions.iter().map(|r| (r.id, r.instructions)).collect(),
        total_instructions: counts.total,
        stack,
        sizes,
    };
    Ok((run, extra))
}

/// Runs `elf` on `board`'s emulated core with instruction counting and checks that it exited cleanly with counts:
/// the run's output, and an error builder that quotes what the firmware printed.
pub(crate) fn run_counted(
    board: &Board,
    elf: &Path,
    timeout: Duration,
    plugin_dir: &Path,
    stdout_lines: Option<std::sync::mpsc::Sender<String>>,
) -> Result<(mote_qemu::RunOutput, mote_qemu::InstructionCounts)> {
    let machine = board.core.qemu_machine();
    let opts = RunOptions { timeout, count_instructions: true, plugin_dir: Some(plugin_dir.to_owned()), stdout_lines };
    let out = match run_elf(board.core, elf, &opts) {
        Ok(out) => out,
        Err(QemuError::Timeout { stdout, .. }) => {
            return Err(DeployError::Firmware {
                machine,
                message: format!(
                    "emulation timed out after {} s and was stopped (a larger model may need a larger --timeout; \
                     a firmware that never exits hangs); it had printed:\n{}",
                    timeout.as_secs_f64(),
                    quote(&stdout)
                ),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let fail = |what: String| firmware_error(board, &out.stdout, what);
    if out.exit_code != 0 {
        let why = match out.exit_code {
            1 => "the generated model code returned an error".to_string(),
            101 => "the firmware panicked".to_string(),
            102 => "the CPU faulted".to_string(),
            n => format!("exit code {n}"),
        };
        return Err(fail(format!("the firmware failed ({why}, exit code {})", out.exit_code)));
    }
    let counts = out.instructions.clone().ok_or_else(|| fail("no instruction counts".into()))?;
    Ok((out, counts))
}

/// The error of a firmware on `board` that printed `stdout`.
pub(crate) fn firmware_error(board: &Board, stdout: &str, what: String) -> DeployError {
    DeployError::Firmware {
        machine: board.core.qemu_machine(),
        message: format!("{what}; it printed:\n{}", quote(stdout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse() {
        let out = "hello\nmote-deploy: output 1 ff\nmote-deploy: output 0 0180ff7f\nmote: stack used=1 size=2\n";
        assert_eq!(parse_outputs(out, &[4, 1]).unwrap(), vec![vec![1, -128, -1, 127], vec![-1]]);
        assert!(parse_outputs(out, &[4, 2]).unwrap_err().contains("output 1 has 1 values"));
        assert!(parse_outputs(out, &[4, 1, 3]).unwrap_err().contains("no output 2"));
        assert!(parse_outputs("mote-deploy: output 0 0g\n", &[1]).unwrap_err().contains("not hex"));
        assert!(parse_outputs("mote-deploy: output 3 00\n", &[1]).unwrap_err().contains("output 3 printed"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(""), "(nothing)");
        let long: String = (0..20).map(|i| format!("l{i}\n")).collect();
        let q = quote(&long);
        assert!(q.starts_with("  l8\n") && q.ends_with("  l19"), "{q}");
    }
}
