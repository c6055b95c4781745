//! Cross-compiling firmware crates with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Core, Error, Result};

/// Lines of cargo's stderr kept in [`Error::FirmwareBuild`].
const STDERR_TAIL_LINES: usize = 40;

/// `Ok` when the Rust standard library for `core`'s target is installed (looked up in `rustc`'s sysroot).
pub fn check_target(core: Core) -> Result<()> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out =
        Command::new(&rustc).args(["--print", "sysroot"]).output().map_err(Error::io(format!("running {rustc}")))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(core.target_triple()).join("lib").is_dir() {
        Ok(())
    } else {
        Err(Error::TargetMissing { triple: core.target_triple() })
    }
}

/// Builds the firmware crate in `dir` for `core` in release mode and returns the path of its ELF.
///
/// All firmwares should share one `target_dir` (e.g. `target/firmware`), so dependencies build once per core.
/// Each core builds under its own cargo profile `mote-<core>` (inheriting the crate's `release` profile):
/// cores that share a target triple (M4/M7, M33/M55) differ in rustflags, and separate profiles keep their
/// artifacts apart instead of rebuilding over each other. The rustflags are [`Core::rustflags`], passed as
/// `CARGO_ENCODED_RUSTFLAGS` (which replaces any `RUSTFLAGS` or config rustflags), and `MOTE_CORE` tells
/// mote-fw's build script which board's memory map to link.
pub fn build_firmware(dir: &Path, core: Core, target_dir: &Path) -> Result<PathBuf> {
    check_target(core)?;
    let profile = format!("mote-{}", core.name());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .args(["--target", core.target_triple(), "--profile", &profile])
        .arg("--config")
        .arg(format!("profile.{profile}.inherits=\"release\""))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--message-format", "json-render-diagnostics"])
        .env("CARGO_ENCODED_RUSTFLAGS", core.rustflags().join("\x1f"))
        .env("MOTE_CORE", core.name())
        // Set for the host by an enclosing cargo (e.g. when called from a test); not meant for the firmware.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let out = cmd.output().map_err(Error::io(format!("running {cargo}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fail = |msg: Option<&str>| {
        let lines: Vec<&str> = stderr.lines().collect();
        let mut tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
        if let Some(m) = msg {
            tail.push_str(&format!("\n({m})"));
        }
        Error::FirmwareBuild { dir: dir.to_owned(), triple: core.target_triple(), stderr_tail: tail }
    };
    if !out.status.success() {
        return Err(fail(None));
    }
    // The last executable artifact cargo reports is the firmware's binary.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let elf = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back();
    elf.ok_or_else(|| fail(Some("cargo built no executable: is this a firmware binary crate?")))
}
