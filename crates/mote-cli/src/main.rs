//! `mote`: put transformer models on microcontrollers.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod compile;
mod deploy;
mod eval;
mod generate;
mod inspect;
mod io;
mod quantize;
mod run;

/// Exit code for bad input or an unsupported model.
const EXIT_ERROR: u8 = 2;
/// Exit code for outputs that differ from `--expect` beyond the tolerance.
const EXIT_MISMATCH: u8 = 1;

#[derive(Parser)]
#[command(name = "mote", version, about = "Put int8 transformer models on microcontrollers.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, op histogram, parameters and MACs.
    Inspect(inspect::Args),
    /// Run a model on the host reference interpreter.
    Run(run::Args),
    /// Top-1 accuracy of a classifier on a labelled .npz test set (optionally against a reference model).
    Eval(eval::Args),
    /// Post-training int8 quantization: calibrate, write a QDQ ONNX model, report per-layer SQNR.
    Quantize(quantize::Args),
    /// Compile an int8 model into a standalone no_std Rust crate for a board (optionally with a C header).
    Compile(compile::Args),
    /// Compile, build and run a model on a board's emulated core: bit-exact check, memory, instructions, latency.
    Deploy(deploy::Args),
    /// Generate text with an int8 decoder (llama2.c model.bin) on a board's emulated core, checked against the host.
    Generate(generate::Args),
}

fn main() -> ExitCode {
    // `mote ... | head` must end quietly like other Unix tools, not panic on the closed pipe.
    sigpipe::reset();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Compile(a) => compile::main(a),
        Command::Deploy(a) => deploy::main(a),
        Command::Generate(a) => generate::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
