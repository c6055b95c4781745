//! Builds the `firmware/kernel-smoke` firmware for each core, runs it in QEMU and checks it against the same
//! kernels run on the host; checks the instruction counts, the stack measurement and the timeout.
//!
//! Without QEMU, a Rust target or the plugin's build tools the tests print `SKIP: <reason>` and pass, except
//! when `CI` is set, where they fail.

#[path = "../../../firmware/kernel-smoke/src/data.rs"]
mod data;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::requant::{Requant, ShiftRequant};
use mote_kernels::softmax::{isoftmax, ISoftmaxParams};
use mote_qemu::{
    build_firmware, elf_sizes, run_elf, section_address, symbol_address, Core, Error, RunOptions, MARK_END,
};

fn firmware(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware").join(name)
}

/// `target/firmware` beside the host build: shared by every firmware build (CARGO_TARGET_TMPDIR is `target/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("firmware")
}

fn plugin_dir() -> PathBuf {
    target_dir().join("plugin")
}

/// `Some(())` when everything needed for `core` is installed; otherwise prints `SKIP` (or fails under CI).
fn require(core: Core) -> Option<()> {
    mote_qemu::tools_or_skip(core, &plugin_dir())
}

fn build(name: &str, core: Core) -> PathBuf {
    build_firmware(&firmware(name), core, &target_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// The kernel-smoke ELF for `core`, built once per test process.
fn smoke_elf(core: Core) -> PathBuf {
    static ELFS: [OnceLock<PathBuf>; Core::ALL.len()] = [const { OnceLock::new() }; Core::ALL.len()];
    let i = Core::ALL.iter().position(|&c| c == core).expect("core in ALL");
    ELFS[i].get_or_init(|| build("kernel-smoke", core)).clone()
}

/// The smoke outputs computed on the host with the same kernels and data: `(linear, softmax)` lines.
fn expected() -> (String, String) {
    use data::{K, M, N};
    let v = data::inputs();
    let rq = Requant::Shift(ShiftRequant::new(&v.rq_mul, &v.rq_add, data::RQ_SHIFT, 256, true).unwrap());
    let (a, b, c, log2, n_levels) = data::SOFTMAX;
    let sm = ISoftmaxParams { coeff_a: a, coeff_b: b, coeff_c: c, log2, n_levels };
    let mut y = [0i8; M * N];
    linear_requant(&v.x, &v.w, Some(&v.bias), MatDims { m: M, k: K, n: N }, 0, &rq, &mut y).unwrap();
    let mut p = [0u8; M * N];
    isoftmax(&y, N, &sm, &mut p).unwrap();
    let hex = |bytes: &mut dyn Iterator<Item = u8>| bytes.map(|b| format!("{b:02x}")).collect::<String>();
    (
        format!("linear_requant {}", hex(&mut y.iter().map(|&v| v as u8))),
        format!("isoftmax {}", hex(&mut p.into_iter())),
    )
}

fn smoke(core: Core) {
    let Some(()) = require(core) else { return };
    let elf = smoke_elf(core);
    let opts = RunOptions {
        timeout: Duration::from_secs(60),
        count_instructions: true,
        plugin_dir: Some(plugin_dir()),
        stdout_lines: None,
    };
    let first = run_elf(core, &elf, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.exit_code, 0, "{core}: stdout:\n{}\nstderr:\n{}", first.stdout, first.stderr);

    let (linear, softmax) = expected();
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert!(lines.contains(&linear.as_str()), "{core}: linear_requant differs from the host:\n{}", first.stdout);
    assert!(lines.contains(&softmax.as_str()), "{core}: isoftmax differs from the host:\n{}", first.stdout);

    let counts = first.instructions.clone().expect("counts");
    let ids: Vec<u32> = counts.marks.iter().map(|m| m.id).collect();
    assert_eq!(ids, [0, 1, 2, MARK_END], "{core}: marks");
    let regions = counts.by_region();
    assert!(regions.values().all(|&n| n > 0), "{core}: {regions:?}");
    // The empty region is the marker's own cost: a handful of instructions.
    assert!(regions[&0] < 16, "{core}: marker overhead {}", regions[&0]);
    assert!(counts.total > counts.between(0, MARK_END).unwrap());
    let second = run_elf(core, &elf, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.instructions.as_ref(), Some(&counts), "{core}: counts differ between two runs");

    let stack = first.stack().expect("stack line");
    assert!(stack.used > 0 && stack.used < stack.size, "{core}: {stack:?}");

    let sizes = elf_sizes(&elf).unwrap();
    assert!(sizes.text > 0 && sizes.flash() < core.flash().size && sizes.ram() < core.ram().size, "{sizes:?}");
    // mote-fw's build script and Core agree on the memory map.
    let stack_top = symbol_address(&elf, "_stack_start").unwrap().expect("_stack_start");
    assert_eq!(stack_top, core.ram().origin + core.ram().size, "{core}: stack top");
    let entry = symbol_address(&elf, "mote_mark").unwrap().expect("mote_mark");
    assert!(core.flash().contains_or_ends_at(entry), "{core}: code at {entry:#x}");
    // On the M55 board, read-only data has a region of its own: the build script's is Core::rodata.
    if let Some(region) = core.rodata() {
        let at = section_address(&elf, ".rodata.region").unwrap();
        assert_eq!(at, Some(region.origin), "{core}: read-only data region");
    }

    println!(
        "{core}: instructions per region {regions:?} (empty = marker cost), total {}; stack {} of {} B; \
         flash {} B (text {}, rodata {}, data {}), static RAM {} B",
        counts.total,
        stack.used,
        stack.size,
        sizes.flash(),
        sizes.text,
        sizes.rodata,
        sizes.data,
        sizes.ram()
    );
}

#[test]
fn smoke_cortex_m4() {
    smoke(Core::CortexM4);
}

#[test]
fn smoke_cortex_m7() {
    smoke(Core::CortexM7);
}

#[test]
fn smoke_cortex_m55() {
    smoke(Core::CortexM55);
}

#[test]
fn smoke_rv32imc() {
    smoke(Core::Rv32imc);
}

#[test]
fn smoke_cortex_m3() {
    smoke(Core::CortexM3);
}

#[test]
fn smoke_cortex_m33() {
    smoke(Core::CortexM33);
}

#[test]
fn endless_firmware_times_out() {
    let core = Core::CortexM4;
    let Some(()) = require(core) else { return };
    let elf = build("hang", core);
    let opts = RunOptions { timeout: Duration::from_secs(3), ..RunOptions::default() };
    match run_elf(core, &elf, &opts) {
        Err(e @ Error::Timeout { .. }) => {
            assert_eq!(e.to_string(), "emulation timed out after 3s on mps2-an386");
            let Error::Timeout { stdout, .. } = e else { unreachable!() };
            assert!(stdout.contains("hang: looping forever"), "{stdout}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn missing_marker_is_reported() {
    // A host executable has no `mote_mark`: counting must refuse it with a message, not run it.
    let me = std::env::current_exe().unwrap();
    let err = mote_qemu::marker_address(&me, Core::CortexM4).unwrap_err();
    assert!(err.to_string().contains("no `mote_mark` symbol"), "{err}");
}

#[test]
fn qemu_failure_is_an_error_not_an_exit_code() {
    let core = Core::CortexM4;
    let Some(()) = require(core) else { return };
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-firmware.elf");
    match run_elf(core, &missing, &RunOptions::default()) {
        Err(Error::Qemu { message, .. }) => assert!(message.contains("qemu-system-arm:"), "{message}"),
        other => panic!("expected a QEMU error, got {other:?}"),
    }
}

/// `firmware/attention-check` on `core`: the fused attention kernel's schedules agree on odd shapes, and Deeploy's
/// packed linear layers and convolutions equal the plain kernels.
fn attention_schedules_agree(core: Core) {
    let Some(()) = require(core) else { return };
    let elf = build("attention-check", core);
    let out = run_elf(core, &elf, &RunOptions { timeout: Duration::from_secs(120), ..RunOptions::default() }).unwrap();
    assert_eq!(out.exit_code, 0, "{core}: {}", out.stdout);
    // 91 attention checks (9 cases in every schedule and block size, in place where the output width is the
    // embedding), 5 linear and 4 convolution cases.
    assert!(out.stdout.contains("checks 100 fails 0"), "{core}: {}", out.stdout);
}

#[test]
fn attention_schedules_agree_on_cortex_m4_and_m7() {
    attention_schedules_agree(Core::CortexM4);
    attention_schedules_agree(Core::CortexM7);
}
