//! The deploy firmware around a model crate, built and run on emulated cores: a hand-written fixture crate with
//! the API mote-codegen generates (`tests/fixtures/tiny-model`) stands in for a compiled model, so these tests
//! check the firmware template, the board-sized memory map, the emulation and the report independently of code
//! generation.
//!
//! Without QEMU, a Rust target or the plugin's build tools the tests print `SKIP: <reason>` and pass, except
//! when `CI` is set, where they fail.

use std::path::PathBuf;
use std::time::Duration;

use mote_core::DType;
use mote_deploy::{
    build, check_fit, emulate, write_firmware, ArenaReport, Board, BoardSource, Compiled, DeployError, FirmwareSpec,
    IoInfo, LayerInfo, MemoryLimits, Paths, Report, TensorInfo,
};
use mote_qemu::{symbol_address, Core};

const FIXTURE_TOML: &str = include_str!("fixtures/tiny-model/Cargo.toml");
const FIXTURE_LIB: &str = include_str!("fixtures/tiny-model/src/lib.rs");

/// The fixture as a compiled model.
fn compiled() -> Compiled {
    Compiled {
        files: vec![
            (PathBuf::from("Cargo.toml"), FIXTURE_TOML.into()),
            (PathBuf::from("src/lib.rs"), FIXTURE_LIB.into()),
        ],
        arena: ArenaReport { best: 16, greedy: 16, lower_bound: 16, strategy: "hand-written".into(), optimal: true },
        weight_bytes: 0,
        inputs: vec![IoInfo {
            name: "x".into(),
            shape: vec![16],
            len: 16,
            scale: 1.0,
            zero_point: 0,
            dtype: DType::I8,
        }],
        outputs: vec![IoInfo { name: "y".into(), shape: vec![4], len: 4, scale: 1.0, zero_point: 0, dtype: DType::I8 }],
        layers: vec![
            LayerInfo { id: 0, name: "scale".into(), op: "Mul".into(), macs: 16 },
            LayerInfo { id: 1, name: "pool".into(), op: "Sum".into(), macs: 0 },
        ],
        tensors: vec![TensorInfo { name: "scaled".into(), bytes: 16, offset: 0, first: 0, last: 1 }],
    }
}

/// The fixture's computation on the host.
fn reference(x: &[i8]) -> Vec<i8> {
    let scaled: Vec<i8> = x.iter().map(|v| v.saturating_mul(3)).collect();
    scaled.chunks_exact(4).map(|g| (g.iter().map(|&v| i32::from(v)).sum::<i32>() >> 2).clamp(-128, 127) as i8).collect()
}

fn input() -> Vec<i8> {
    vec![1, -2, 3, 100, -128, 127, 0, 5, -7, 9, 40, -40, 60, 60, 60, 60]
}

/// `Some(())` when everything needed for `core` is installed; otherwise prints `SKIP` (or fails under CI).
fn require(paths: &Paths, core: Core) -> Option<()> {
    mote_qemu::tools_or_skip(core, &paths.plugin_dir())
}

fn board(name: &str) -> Board {
    Board::resolve(name).unwrap()
}

fn deploy_fixture(board: &Board) {
    let paths = Paths::locate().unwrap();
    let Some(()) = require(&paths, board.core) else { return };
    let c = compiled();
    let inputs = vec![input()];
    let fit = check_fit(board, &c, 4096, 16).unwrap();
    let limits = MemoryLimits::for_board(board, 4096).unwrap();
    let spec = FirmwareSpec { board, compiled: &c, model_crate: "tiny-model", inputs: &inputs, limits };
    let fw = write_firmware(&paths, &spec).unwrap();
    let elf = build(&paths, &fw, board, limits).unwrap_or_else(|e| panic!("{e}"));

    // The memory map is the board's, not the emulator's: the stack sits at the top of the board's SRAM.
    let stack_top = symbol_address(&elf, "_stack_start").unwrap().unwrap();
    assert_eq!(stack_top, board.core.ram().origin + board.sram_bytes, "{}", board.name);

    let run = || emulate(board, &elf, &[4], 2, Duration::from_secs(60), &paths.plugin_dir()).unwrap();
    let first = run();
    assert_eq!(first.outputs, vec![reference(&input())], "{}", board.name);
    assert_eq!(first.layers.iter().map(|l| l.0).collect::<Vec<_>>(), [0, 1]);
    assert!(first.layers.iter().all(|l| l.1 > 0), "{:?}", first.layers);
    assert!(first.total_instructions > first.inference_instructions());
    assert!(first.stack.used > 0 && first.stack.used < first.stack.size && first.stack.size == 4096);
    // The arena and output buffers are statics.
    assert!(first.sizes.bss >= 16 + 4, "{:?}", first.sizes);
    let second = run();
    assert_eq!(second, first, "{}: two runs differ", board.name);

    let report = Report::new("tiny", board, &c, &fit, limits, &first, &[reference(&input())]);
    assert!(report.bit_exact());
    assert!(report.text().contains("bit-exact"));
    let wrong = Report::new("tiny", board, &c, &fit, limits, &first, &[vec![0, 0, 0, 0]]);
    assert!(!wrong.bit_exact());
    println!("{}", report.text());
}

#[test]
fn fixture_on_cortex_m4() {
    deploy_fixture(&board("nrf52840"));
}

#[test]
fn fixture_on_rv32imc() {
    deploy_fixture(&board("esp32c3"));
}

/// A firmware whose statics exceed the board's RAM must fail to link, not run in the emulator's spare memory.
#[test]
fn ram_overflow_is_a_link_error() {
    let paths = Paths::locate().unwrap();
    let core = Core::CortexM4;
    let Some(()) = require(&paths, core) else { return };
    // 1 KiB of stack and 8 bytes of RAM besides: the 16-byte arena cannot fit.
    let tiny = Board {
        name: "tiny-ram".into(),
        core,
        sram_bytes: 1024 + 8,
        flash_bytes: 64 * 1024,
        clock_hz: 1_000_000,
        notes: None,
        source: BoardSource::File("test".into()),
    };
    let c = compiled();
    let inputs = vec![input()];
    let limits = MemoryLimits::for_board(&tiny, 1024).unwrap();
    let spec = FirmwareSpec { board: &tiny, compiled: &c, model_crate: "tiny-model", inputs: &inputs, limits };
    let fw = write_firmware(&paths, &spec).unwrap();
    match build(&paths, &fw, &tiny, limits) {
        Err(e @ DeployError::DoesNotFit(_)) => {
            let msg = e.to_string();
            assert!(msg.starts_with("the firmware does not fit board `tiny-ram` (test): linked for 65,536 B of flash and 1,032 B of SRAM (1,024 B of it stack), the linker reports: "), "{msg}");
            assert!(msg.contains("section '.bss' will not fit in region 'RAM'"), "{msg}");
        }
        other => panic!("expected a link error, got {other:?}"),
    }
}

#[test]
fn hanging_emulation_times_out_with_a_message() {
    let paths = Paths::locate().unwrap();
    let b = board("stm32l4r5");
    let Some(()) = require(&paths, b.core) else { return };
    let c = compiled();
    let inputs = vec![input()];
    let limits = MemoryLimits::for_board(&b, 4096).unwrap();
    let spec = FirmwareSpec { board: &b, compiled: &c, model_crate: "tiny-model", inputs: &inputs, limits };
    let fw = write_firmware(&paths, &spec).unwrap();
    let elf = build(&paths, &fw, &b, limits).unwrap_or_else(|e| panic!("{e}"));
    // QEMU cannot even start within 1 ms: the run is stopped at the limit.
    let err = emulate(&b, &elf, &[4], 2, Duration::from_millis(1), &paths.plugin_dir()).unwrap_err().to_string();
    assert!(err.starts_with("firmware on mps2-an386: emulation timed out after 0.001 s and was stopped"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
}
