//! `mote-bench`: regenerates the result tables committed under `docs/`.
//!
//! `cargo run --release -p mote-bench -- quant` writes `docs/quantization.md`;
//! `cargo build --release -p mote-cli && cargo run --release -p mote-bench -- deploy` writes `docs/deploy.md`;
//! `cargo run --release -p mote-bench -- gemm` writes `docs/gemm.md`;
//! `cargo build --release -p mote-cli && cargo run --release -p mote-bench -- attention` writes `docs/attention.md`;
//! `cargo run --release -p mote-bench -- decode` writes `docs/decode.md`.
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

mod attention;
mod attention_enn;
mod decode;
mod deploy;
mod gemm;
mod quant;

#[derive(Parser)]
#[command(name = "mote-bench", about = "Regenerate mote's committed result tables.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Float vs int8: top-1 of our digits model, SQNR and agreement of the peer float models.
    Quant {
        /// Deeploy's test cases (default: `../shared/peer-models` beside the checkout, or `$MOTE_PEER_MODELS`).
        #[arg(long)]
        peer_models: Option<PathBuf>,
        /// Where to write the table.
        #[arg(long, default_value = "docs/quantization.md")]
        out: PathBuf,
    },
    /// Every example and peer model on every reference board (QEMU): arena, flash, instructions, latency.
    Deploy {
        /// Deeploy's test cases (default: `../shared/peer-models` beside the checkout, or `$MOTE_PEER_MODELS`).
        #[arg(long)]
        peer_models: Option<PathBuf>,
        /// The `mote` binary (build it with `cargo build --release -p mote-cli`).
        #[arg(long, default_value = "target/release/mote")]
        mote: PathBuf,
    },
    /// The packed int8 GEMM kernel on every core (QEMU): MACs per instruction per shape, bit-exact checked.
    Gemm {
        /// Emulation time limit per core, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The attention ablation: naive / FWSA / depth-first / all, and embedded-nn, on Cortex-M4 and M7 (QEMU).
    Attention {
        /// The `mote` binary (build it with `cargo build --release -p mote-cli`).
        #[arg(long, default_value = "target/release/mote")]
        mote: PathBuf,
    },
    /// Int8 Llama decoders token by token on M4, M7, M55 and RV32 (QEMU): instructions per token by context.
    Decode {
        /// Emulation time limit per firmware, in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// The boards, in table order.
        #[arg(long, value_delimiter = ',', default_values_t = decode::BOARDS.map(String::from))]
        boards: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Quant { peer_models, out } => quant::run(peer_models, &out),
        Command::Deploy { peer_models, mote } => deploy::run_table(&quant::peer_dir(peer_models), &mote),
        Command::Gemm { timeout } => gemm::run_table(Duration::from_secs(timeout)),
        Command::Attention { mote } => attention::run_table(&mote),
        Command::Decode { timeout, boards } => decode::run_table(Duration::from_secs(timeout), &boards),
    }
}
