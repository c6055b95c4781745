//! Builds a firmware crate for a core, runs it in QEMU and prints its output and per-region instruction counts.
//!
//! `cargo run -p mote-qemu --example run-firmware -- firmware/kernel-smoke cortex-m4`

use std::time::Duration;

use mote_qemu::{build_firmware, run_elf, Core, RunOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, core] = args.as_slice() else {
        return Err("usage: run-firmware FIRMWARE_DIR CORE".into());
    };
    let core: Core = core.parse()?;
    let elf = build_firmware(dir.as_ref(), core, "target/firmware".as_ref())?;
    let opts = RunOptions { count_instructions: true, timeout: Duration::from_secs(600), ..RunOptions::default() };
    let out = run_elf(core, &elf, &opts)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    for r in out.instructions.as_ref().map(|c| c.regions()).unwrap_or_default() {
        println!("region {}: {} instructions", r.id, r.instructions);
    }
    std::process::exit(out.exit_code)
}
