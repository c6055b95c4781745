//! The deploy firmware: a generated binary crate that embeds quantized inputs, runs the generated model crate's
//! `run_marked` between `mote_fw::mark` calls and prints the int8 outputs over semihosting; and its build for
//! a board, with the linker's memory map sized to the board's part.
//!
//! Layout of one deployment's work directory (under `<target dir>/work/`, named by a hash of everything that
//! goes into the build, so that an unchanged deployment rebuilds nothing and different ones never collide):
//! `model/` (the crate from mote-codegen), `firmware/` (the binary crate: `Cargo.toml`, `src/main.rs`,
//! `Cargo.lock`), `firmware.elf` (a copy of the built ELF).
//!
//! Where the buffers live: the model's `Arena` and the output buffers are one `static` handed out by
//! `mote_fw::singleton!`, so they sit in `.bss`, the linker counts them against the board's RAM, and the stack
//! high-water mark measures only the code's own stack use.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mote_qemu::build_firmware;

use crate::{Board, DeployError, Result};
use mote_codegen::Compiled;

/// The line prefix of an output the firmware prints: `mote-deploy: output <k> <hex bytes>`.
pub const OUTPUT_PREFIX: &str = "mote-deploy: output ";

/// Environment variables mote-fw's build script reads for the memory map (see `firmware/mote-fw/build.rs`).
const FLASH_ENV: &str = "MOTE_FLASH_BYTES";
const RAM_ENV: &str = "MOTE_RAM_BYTES";
const STACK_ENV: &str = "MOTE_STACK_SIZE";

/// Where mote's own pieces are: the firmware runtime and kernels the generated crates depend on by path, and
/// the target directory every deployment builds in.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `firmware/mote-fw`, the runtime every firmware links.
    pub runtime: PathBuf,
    /// `firmware/Cargo.lock`, copied into new firmware crates so they resolve the versions the runtime is tested
    /// with.
    pub firmware_lock: PathBuf,
    /// `crates/mote-kernels`, which generated model crates depend on.
    pub kernels: PathBuf,
    /// The shared cargo target directory of all deployments (`target/mote-deploy`, or
    /// `$CARGO_TARGET_DIR/mote-deploy`).
    pub target_dir: PathBuf,
}

impl Paths {
    /// The pieces of the mote checkout this binary was built from; the target directory is
    /// `$CARGO_TARGET_DIR/mote-deploy` when that is set, else `target/mote-deploy` in the checkout.
    pub fn locate() -> Result<Paths> {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let checkout = checkout.canonicalize().map_err(|e| DeployError::Missing {
            path: checkout.clone(),
            message: format!("mote's checkout is not there ({e}); mote compile and deploy run from a mote checkout"),
        })?;
        let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => {
                std::path::absolute(PathBuf::from(dir)).map_err(DeployError::io("resolving CARGO_TARGET_DIR"))?
            }
            None => checkout.join("target"),
        };
        let paths = Paths {
            runtime: checkout.join("firmware/mote-fw"),
            firmware_lock: checkout.join("firmware/Cargo.lock"),
            kernels: checkout.join("crates/mote-kernels"),
            target_dir: target.join("mote-deploy"),
        };
        for (p, what) in [(&paths.runtime, "the mote-fw firmware runtime"), (&paths.kernels, "the mote-kernels crate")]
        {
            if !p.join("Cargo.toml").is_file() {
                return Err(DeployError::Missing { path: p.clone(), message: format!("{what} is missing") });
            }
        }
        Ok(paths)
    }

    /// Where the instruction-counting QEMU plugin is built and cached.
    pub fn plugin_dir(&self) -> PathBuf {
        self.target_dir.join("plugin")
    }
}

/// The memory map the firmware links with: the board's sizes at the emulated board's origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes of code and read-only data (FLASH, and the read-only data region where the core's board has one).
    pub flash: u64,
    /// RAM length including the stack.
    pub ram: u64,
    /// The stack region at the top of RAM.
    pub stack: u64,
}

impl MemoryLimits {
    /// The board's flash and SRAM with `stack` bytes of stack. A board with more memory than its core's
    /// emulated board is linked with the emulated sizes (the emulator has no more); SRAM is rounded down to a
    /// multiple of 8 (the stack top must be 8-byte aligned); a stack that leaves no RAM is an error.
    pub fn for_board(board: &Board, stack: u64) -> Result<MemoryLimits> {
        let limits = MemoryLimits {
            flash: board.flash_bytes.min(board.core.flash_capacity()),
            ram: board.sram_bytes.min(board.core.ram().size) & !7,
            stack,
        };
        if stack == 0 || stack % 8 != 0 || stack >= limits.ram {
            return Err(DeployError::Usage(format!(
                "stack reserve {stack} B must be a positive multiple of 8 below board `{}`'s {} B of SRAM",
                board.name, limits.ram
            )));
        }
        Ok(limits)
    }
}

/// What goes into one deploy firmware.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareSpec<'a> {
    /// The board (core and memory).
    pub board: &'a Board,
    /// The compiled model crate.
    pub compiled: &'a Compiled,
    /// The package name of the compiled crate (its `CompileOptions::crate_name`).
    pub model_crate: &'a str,
    /// One int8 vector per device input, in order.
    pub inputs: &'a [Vec<i8>],
    /// The memory map.
    pub limits: MemoryLimits,
}

/// A firmware crate written to disk.
#[derive(Clone, Debug)]
pub struct FirmwareDir {
    /// The deployment's work directory.
    pub work: PathBuf,
    /// The firmware crate (`work/firmware`).
    pub crate_dir: PathBuf,
    /// The package (and binary) name.
    pub package: String,
}

/// 64-bit FNV-1a, a stable hash (unlike `DefaultHasher`, whose output may change between Rust releases).
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Length first, so that consecutive fields cannot run into each other.
        for &x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

/// `name` as part of a cargo package name (ASCII letters, digits, `-`).
fn package_part(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The firmware's `Cargo.toml`.
fn cargo_toml(package: &str, runtime: &Path, model_crate: &str) -> String {
    format!(
        "# Generated by `mote deploy`: a firmware that runs the model crate in ../model once and prints its outputs.\n\
         [package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [[bin]]\nname = \"{package}\"\npath = \"src/main.rs\"\ntest = false\nbench = false\n\n\
         [dependencies]\nmote-fw = {{ path = {} }}\nmodel = {{ path = \"../model\", package = {} }}\n\n\
         # A workspace of its own: the crate is built wherever it is written.\n[workspace]\n\n\
         # As firmware/Cargo.toml: mote_qemu::build_firmware builds with a profile inheriting `release`.\n\
         [profile.release]\nopt-level = 3\nlto = \"fat\"\ncodegen-units = 1\npanic = \"abort\"\n\
         # Symbols stay in the ELF (not in flash): mote-qemu reads `mote_mark` from the symbol table.\n\
         debug = \"line-tables-only\"\n\n[profile.dev]\npanic = \"abort\"\n",
        toml_str(&runtime.to_string_lossy()),
        toml_str(model_crate),
    )
}

/// The firmware's `src/main.rs`.
fn main_rs(spec: &FirmwareSpec<'_>) -> String {
    let c = spec.compiled;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Generated by `mote deploy` for board `{}` ({}): runs the model once on the embedded inputs, with an\n\
         //! instruction-count mark before every layer, and prints each output as `{OUTPUT_PREFIX}<k> <hex>`.\n\
         //! Exit code 0, or 1 when the model returns an error.\n\
         #![no_std]\n#![no_main]\n\n\
         use core::hint::black_box;\n\n\
         use mote_fw::{{mark, println, HexI8, MARK_END}};\n",
        spec.board.name, spec.board.core
    );
    for (k, (io, data)) in c.inputs.iter().zip(spec.inputs).enumerate() {
        input_static(&mut s, k, io, data, ",");
        s.push('\n');
    }
    buffers_and_run(&mut s, c);
    let ins: Vec<String> = (0..c.inputs.len()).map(|k| format!("black_box(&INPUT_{k}[..])")).collect();
    let _ = writeln!(s, "    let inputs: [&[i8]; {}] = [{}];", ins.len(), ins.join(", "));
    let outs: Vec<String> = (0..c.outputs.len()).map(|k| format!("&mut b.output_{k}[..]")).collect();
    let _ = writeln!(s, "    let mut outputs: [&mut [i8]; {}] = [{}];", outs.len(), outs.join(", "));
    let _ = writeln!(
        s,
        "    let result = model::run_marked(&mut b.arena, &inputs, &mut outputs, &mut |id| mark(id));\n    \
         mark(MARK_END);\n    if let Err(e) = result {{\n        println!(\"mote-deploy: the model returned an error: {{:?}}\", e);\n        \
         return 1;\n    }}"
    );
    for k in 0..c.outputs.len() {
        let _ = writeln!(s, "    println!(\"{OUTPUT_PREFIX}{k} {{}}\", HexI8(black_box(&b.output_{k})));");
    }
    let _ = writeln!(s, "    0\n}}");
    s
}

/// `static INPUT_k` holding device input `k` (`what` qualifies the data, e.g. " of every sample, stacked,").
pub(crate) fn input_static(s: &mut String, k: usize, io: &mote_codegen::IoInfo, data: &[i8], what: &str) {
    let _ = writeln!(
        s,
        "/// Device input {k} `{}` (shape {:?}, scale {:e}, zero point {}){what} quantized on the host (flash).",
        io.name.replace('\n', " "),
        io.shape,
        io.scale,
        io.zero_point
    );
    let _ = writeln!(s, "static INPUT_{k}: [i8; {}] = [", data.len());
    for line in data.chunks(24) {
        let vals: Vec<String> = line.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(s, "    {},", vals.join(", "));
    }
    let _ = writeln!(s, "];");
}

/// The `Buffers` static (arena and outputs in `.bss`), the entry point, and `run()` up to taking the buffers
/// as `b`.
pub(crate) fn buffers_and_run(s: &mut String, c: &Compiled) {
    let _ = writeln!(s, "/// The arena and the output buffers, in one static (RAM, `.bss`).\nstruct Buffers {{");
    let _ = writeln!(s, "    arena: model::Arena,");
    for (k, io) in c.outputs.iter().enumerate() {
        let _ = writeln!(s, "    output_{k}: [i8; {}],", io.len);
    }
    let _ = writeln!(s, "}}\n\nmote_fw::main!(run);\n\nfn run() -> i32 {{");
    let init: Vec<String> = std::iter::once("arena: model::Arena::new()".to_string())
        .chain(c.outputs.iter().enumerate().map(|(k, io)| format!("output_{k}: [0; {}]", io.len)))
        .collect();
    let _ = writeln!(
        s,
        "    let Some(b) = mote_fw::singleton!(Buffers = Buffers {{ {} }}) else {{\n        \
         println!(\"mote-deploy: the buffers were taken twice\");\n        return 1;\n    }};",
        init.join(", ")
    );
}

/// Writes `contents` to `path` unless it already holds exactly that (keeping its modification time, so cargo
/// sees nothing new); writes through a temporary file and a rename, so no reader sees a partial file.
pub(crate) fn write_if_changed(path: &Path, contents: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let dir = path.parent().expect("a file path");
    std::fs::create_dir_all(dir).map_err(DeployError::io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents).map_err(DeployError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(DeployError::io(format!("renaming {} to {}", tmp.display(), path.display())))
}

/// Writes the model crate and the firmware crate of `spec` into their work directory.
pub fn write_firmware(paths: &Paths, spec: &FirmwareSpec<'_>) -> Result<FirmwareDir> {
    let c = spec.compiled;
    if spec.inputs.len() != c.inputs.len() {
        return Err(DeployError::Usage(format!(
            "the model has {} device input(s) but {} were given",
            c.inputs.len(),
            spec.inputs.len()
        )));
    }
    for (io, data) in c.inputs.iter().zip(spec.inputs) {
        if data.len() != io.len {
            return Err(DeployError::Usage(format!(
                "device input `{}` has {} values, the model needs {}",
                io.name,
                data.len(),
                io.len
            )));
        }
    }
    let mut h = Fnv::new();
    for data in spec.inputs {
        h.bytes(&data.iter().map(|&v| v as u8).collect::<Vec<u8>>());
    }
    write_work(paths, spec.board, &c.files, spec.model_crate, spec.limits, &main_rs(spec), h)
}

/// Writes the model crate and a firmware crate with `main` as its `src/main.rs` into a work directory named by
/// a hash of everything that goes into the build (`h`, already fed with the caller's own data, goes on with the
/// rest).
pub(crate) fn write_work(
    paths: &Paths,
    board: &Board,
    files: &[(PathBuf, String)],
    model_crate: &str,
    l: MemoryLimits,
    main: &str,
    mut h: Fnv,
) -> Result<FirmwareDir> {
    for (path, text) in files {
        h.bytes(path.to_string_lossy().as_bytes()).bytes(text.as_bytes());
    }
    h.bytes(board.core.name().as_bytes()).bytes(model_crate.as_bytes());
    h.bytes(&[l.flash, l.ram, l.stack].map(u64::to_le_bytes).concat());
    h.bytes(paths.runtime.to_string_lossy().as_bytes()).bytes(main.as_bytes());
    let package = format!("fw-{}-{:016x}", package_part(&board.name), h.0);
    let work = paths.target_dir.join("work").join(&package);

    for (rel, text) in files {
        if rel.is_absolute() || rel.components().any(|p| matches!(p, std::path::Component::ParentDir)) {
            return Err(DeployError::Usage(format!("the generated crate names a file outside it: {}", rel.display())));
        }
        write_if_changed(&work.join("model").join(rel), text.as_bytes())?;
    }
    let crate_dir = work.join("firmware");
    write_if_changed(&crate_dir.join("Cargo.toml"), cargo_toml(&package, &paths.runtime, model_crate).as_bytes())?;
    write_if_changed(&crate_dir.join("src/main.rs"), main.as_bytes())?;
    let lock = crate_dir.join("Cargo.lock");
    if !lock.exists() {
        if let Ok(seed) = std::fs::read(&paths.firmware_lock) {
            write_if_changed(&lock, &seed)?;
        }
    }
    Ok(FirmwareDir { work, crate_dir, package })
}

/// Serializes builds: the memory map reaches mote-fw's build script through the environment, which is global
/// to the process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The linker's "does not fit" lines in a failed build's output (`section ... will not fit in region ...`,
/// `region ... overflowed by N bytes`), if the build failed for that reason.
fn overflow_lines(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("= note:").trim())
        .filter(|l| l.contains("will not fit in region") || (l.contains("region") && l.contains("overflowed by")))
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Builds the firmware for `board`'s core with the memory map `limits` and returns the path of a copy of its ELF
/// in the work directory (stable even when another build later writes the same target directory). A firmware
/// that the linker cannot fit in the board's memory is [`DeployError::DoesNotFit`] with the linker's numbers.
///
/// `mote_qemu::build_firmware` runs cargo with this process's environment, so the limits are set in it for the
/// build (`MOTE_FLASH_BYTES`, `MOTE_RAM_BYTES`, `MOTE_STACK_SIZE`) and restored afterwards, under a lock.
pub fn build(paths: &Paths, fw: &FirmwareDir, board: &Board, limits: MemoryLimits) -> Result<PathBuf> {
    let core = board.core;
    let built = {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vars = [(FLASH_ENV, limits.flash), (RAM_ENV, limits.ram), (STACK_ENV, limits.stack)];
        let saved: Vec<_> = vars.iter().map(|(k, _)| (*k, std::env::var_os(k))).collect();
        for (k, v) in vars {
            std::env::set_var(k, v.to_string());
        }
        let built = build_firmware(&fw.crate_dir, core, &paths.target_dir);
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        match built {
            Err(mote_qemu::Error::FirmwareBuild { stderr_tail, .. }) if overflow_lines(&stderr_tail).is_some() => {
                return Err(DeployError::DoesNotFit(format!(
                    "the firmware does not fit board `{}` ({}): linked for {} B of flash and {} B of SRAM ({} B of \
                     it stack), the linker reports: {}",
                    board.name,
                    board.source,
                    crate::group(limits.flash),
                    crate::group(limits.ram),
                    crate::group(limits.stack),
                    overflow_lines(&stderr_tail).unwrap_or_default()
                )))
            }
            other => other?,
        }
    };
    let elf = fw.work.join("firmware.elf");
    let bytes = std::fs::read(&built).map_err(DeployError::io(format!("reading {}", built.display())))?;
    write_if_changed(&elf, &bytes)?;
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash() {
        assert_eq!(Fnv::new().0, 0xcbf2_9ce4_8422_2325);
        let a = Fnv::new().bytes(b"ab").bytes(b"c").0;
        let b = Fnv::new().bytes(b"a").bytes(b"bc").0;
        assert_ne!(a, b, "field boundaries count");
        assert_eq!(a, Fnv::new().bytes(b"ab").bytes(b"c").0);
    }

    #[test]
    fn limits() {
        let mut b = Board::resolve("esp32c3").unwrap();
        assert_eq!(
            MemoryLimits::for_board(&b, 4096).unwrap(),
            MemoryLimits { flash: 4 << 20, ram: 400 << 10, stack: 4096 }
        );
        b.sram_bytes = 64 << 20;
        b.flash_bytes = 1001;
        let l = MemoryLimits::for_board(&b, 4096).unwrap();
        assert_eq!((l.ram, l.flash), (4 << 20, 1001), "capped at the emulated board's RAM");
        b.sram_bytes = 5003;
        assert_eq!(MemoryLimits::for_board(&b, 4096).unwrap().ram, 5000);
        for bad in [0, 12, 8192] {
            let e = MemoryLimits::for_board(&b, bad).unwrap_err().to_string();
            assert!(e.contains("positive multiple of 8 below board `esp32c3`'s 5000 B"), "{e}");
        }
    }

    #[test]
    fn linker_overflow_lines() {
        let tail =
            "error: linking with `rust-lld` failed\n  = note: rust-lld: error: section '.rodata' will not fit in \
                    region 'FLASH': overflowed by 11140 bytes\n          rust-lld: error: region 'RAM' overflowed by 8 \
                    bytes\nerror: could not compile";
        assert_eq!(
            overflow_lines(tail).unwrap(),
            "rust-lld: error: section '.rodata' will not fit in region 'FLASH': overflowed by 11140 bytes; \
             rust-lld: error: region 'RAM' overflowed by 8 bytes"
        );
        assert_eq!(overflow_lines("error[E0308]: mismatched types"), None);
    }

    #[test]
    fn names_and_strings() {
        assert_eq!(package_part("STM32.h7_x"), "stm32-h7-x");
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
