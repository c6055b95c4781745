//! `mote deploy`: compile a model for a board, run it on the board's emulated core, check its int8 outputs bit for
//! bit against the host reference, and report memory, instructions per layer and the estimated latency.
//! Exit 0 when bit-exact, 1 on a mismatch, 2 on errors (returned as `Err`, printed by main).
use crate::compile::{compile_for_board, fit_line, BuildArgs};
use crate::io::{bind_inputs, spinner};
use crate::EXIT_MISMATCH;
use anyhow::{bail, Result};
use mote_deploy::{
    build, check_fit, emulate, group, mismatch_phrase, sample_inputs, write_firmware, FirmwareSpec, MemoryLimits,
    Report,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `mote deploy`.
#[derive(clap::Args)]
pub struct Args {
    /// The int8 model (a QDQ ONNX model, e.g. from `mote quantize`).
    model: PathBuf,
    /// Board: a name (`stm32l4r5`, `stm32f746`, `stm32h743`, `nrf52840`, `corstone-300`, `esp32c3`, or NAME.toml
    /// in $MOTE_BOARDS) or a board file path.
    #[arg(long)]
    board: String,
    /// Float inputs (.npz; by name or position), quantized on the host by the model's QuantizeLinear. Without
    /// it, a fixed pseudo-random input covering the int8 range.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Print the report as one JSON object on stdout (and no progress output).
    #[arg(long)]
    json: bool,
    /// Also write an offline HTML report (`DIR/index.html`: memory-plan picture and per-layer table).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Stop the emulation after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    #[command(flatten)]
    build: BuildArgs,
}

/// Runs `mote deploy`.
pub fn main(a: Args) -> Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout {}: must be a positive number of seconds", a.timeout);
    }
    let quiet = a.json;
    let step = spinner(quiet, format!("compiling {} for {}", a.model.display(), a.board));
    let fb = compile_for_board(&a.model, &a.board, &a.build, None, false);
    step.finish_and_clear();
    let fb = fb?;
    let board = &fb.board;

    let float_inputs = match &a.inputs {
        Some(path) => bind_inputs(&fb.graph, path)?,
        None => sample_inputs(&fb.graph, &fb.compiled.inputs)?,
    };
    let (device_inputs, host_outputs) =
        mote_codegen::host_reference_with(&fb.graph, float_inputs, &fb.opts).map_err(|e| {
            let e = e.to_string();
            let hint =
                if e.contains("outside its device type") { " (give its type with --input-type NAME=u8)" } else { "" };
            anyhow::anyhow!("{}: host reference: {e}{hint}", a.model.display())
        })?;
    let input_bytes: u64 = device_inputs.iter().map(|v| v.len() as u64).sum();
    let fit = check_fit(board, &fb.compiled, a.build.stack, input_bytes)?;
    // Progress output, like the spinners: only on a terminal.
    let progress = !quiet && std::io::stderr().is_terminal();
    if progress {
        eprintln!("{}", fit_line(board, &fit));
    }
    let limits = MemoryLimits::for_board(board, a.build.stack)?;
    // Tools first: a missing emulator or target is reported before a long build.
    mote_qemu::check_qemu(board.core)?;
    mote_qemu::check_target(board.core)?;
    for note in &fb.notes {
        eprintln!("{note}");
    }

    let spec =
        FirmwareSpec { board, compiled: &fb.compiled, model_crate: &fb.crate_name, inputs: &device_inputs, limits };
    let fw = write_firmware(&fb.paths, &spec)?;
    let step = spinner(
        quiet,
        format!("building the firmware for {} ({}) in {}", board.name, board.core, fb.paths.target_dir.display()),
    );
    let elf = build(&fb.paths, &fw, board, limits);
    step.finish_and_clear();
    let elf = elf?;

    let step = spinner(quiet, format!("emulating {} on QEMU {}", board.core, board.qemu_machine()));
    let lens: Vec<usize> = fb.compiled.outputs.iter().map(|o| o.len).collect();
    let timeout = Duration::from_secs_f64(a.timeout);
    let run = emulate(board, &elf, &lens, fb.compiled.layers.len(), timeout, &fb.paths.plugin_dir());
    step.finish_and_clear();
    let run = run?;

    let model = a.model.display().to_string();
    let report = Report::new(&model, board, &fb.compiled, &fit, limits, &run, &host_outputs);
    if let Some(dir) = &a.report {
        let page = report.write_html(dir)?;
        if progress {
            eprintln!("wrote {}", page.display());
        }
    }
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
        println!(
            "firmware: {} ({} B ELF)",
            elf.display(),
            group(std::fs::metadata(&elf).map(|m| m.len()).unwrap_or(0))
        );
    }
    match &report.mismatch {
        None => Ok(ExitCode::SUCCESS),
        Some(m) => {
            eprintln!("error: the MCU's outputs differ from the host reference: {}", mismatch_phrase(m));
            Ok(ExitCode::from(EXIT_MISMATCH))
        }
    }
}
