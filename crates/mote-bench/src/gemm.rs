//! The GEMM micro-benchmark (issue 7): the packed int8 linear layer on every core, per shape, against each
//! core's MACs-per-instruction limit and the CMSIS-NN numbers of the issue.
//!
//! `firmware/gemm-bench` runs `linear_packed` (the build's native packed layout) once per shape between
//! instruction-count marks and checks it on the MCU against `linear_requant`; this module builds it for each
//! core, runs it on QEMU, recomputes every shape's output on the host with the same shared data generator
//! (`firmware/gemm-bench/src/shapes.rs`) and mote-kernels, and compares the hashes. The firmware runs the
//! odd-size `test` set before the `bench` set; the table shows the `bench` set, the tests below check both.
use crate::quant::repo_root;
use anyhow::{anyhow, bail, ensure, Context, Result};
use mote_kernels::matmul::{linear_requant, MatDims};
use mote_kernels::requant::{HighMulRequant, Requant};
use mote_qemu::{build_firmware, build_plugin, elf_sizes, run_elf, Core, ElfSizes, RunOptions};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shapes and data generator the firmware uses (the host needs the data, the lists and the hash).
#[allow(dead_code)]
#[path = "../../../firmware/gemm-bench/src/shapes.rs"]
mod shapes;

pub use shapes::Shape;

/// Multiply-accumulates of one call: `m·k·n`.
pub fn macs(s: Shape) -> usize {
    s.m * s.k * s.n
}

/// The cores of the benchmark, in table order.
pub const CORES: [Core; 5] = [Core::CortexM4, Core::CortexM7, Core::CortexM33, Core::CortexM55, Core::Rv32imc];

/// CMSIS-NN `arm_fully_connected_s8` MACs per instruction from the issue: `(shape, [M4, M7, M55])`.
const CMSIS_NN: [(Shape, [f64; 3]); 4] = [
    (Shape { m: 1, k: 64, n: 64 }, [0.374, 0.373, 1.42]),
    (Shape { m: 64, k: 64, n: 64 }, [0.375, 0.374, 1.44]),
    (Shape { m: 81, k: 32, n: 32 }, [0.284, 0.284, 1.02]),
    (Shape { m: 128, k: 128, n: 128 }, [0.441, 0.441, 1.74]),
];
/// The cores of the CMSIS-NN columns.
const CMSIS_CORES: [Core; 3] = [Core::CortexM4, Core::CortexM7, Core::CortexM55];

/// One shape measured on one core.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The GEMM.
    pub shape: Shape,
    /// Instructions of the `linear_packed` call (its region, including the marker's own few instructions).
    pub instructions: u64,
    /// FNV-1a of the MCU's fast output.
    pub mcu_hash: u32,
    /// The MCU's own comparison of the fast output with `linear_requant`.
    pub mcu_ok: bool,
    /// FNV-1a of the host's `linear_requant` output.
    pub host_hash: u32,
}

impl Measured {
    /// Bit-exact: the MCU output hashes like the host reference and the MCU found it equal to its reference.
    pub fn bit_exact(&self) -> bool {
        self.mcu_ok && self.mcu_hash == self.host_hash
    }

    /// Multiply-accumulates per executed instruction.
    pub fn macs_per_instruction(&self) -> f64 {
        macs(self.shape) as f64 / self.instructions.max(1) as f64
    }
}

/// One firmware run: the layout the core's build packs for and every shape's measurement.
#[derive(Clone, Debug)]
pub struct CoreRun {
    /// The core.
    pub core: Core,
    /// `NATIVE_LAYOUT` of the firmware build, as printed (`Dsp16`, ...).
    pub layout: String,
    /// The `bench` set, in list order.
    pub rows: Vec<Measured>,
    /// The `test` set, in list order.
    pub test_rows: Vec<Measured>,
    /// Flash and static RAM of the firmware ELF.
    pub sizes: ElfSizes,
    /// Time to build the firmware.
    pub build: Duration,
    /// Time to emulate it.
    pub emulation: Duration,
}

/// `target/firmware` of the checkout (`$CARGO_TARGET_DIR/firmware` when set): shared by every firmware build.
pub fn firmware_target_dir() -> Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::absolute(PathBuf::from(dir)).context("resolving CARGO_TARGET_DIR")?,
        None => repo_root().join("target"),
    };
    Ok(target.join("firmware"))
}

/// The peak MACs per instruction of `core` for the packed kernel of `layout` (as the firmware prints
/// `NATIVE_LAYOUT`; a name with `helium` or `mve` in it is a Helium layout), and why.
pub fn limit(core: Core, layout: &str) -> (f64, &'static str) {
    let l = layout.to_ascii_lowercase();
    match core {
        Core::Rv32imc => (0.5, "one `MUL` and one `ADD` per MAC"),
        Core::CortexM3 => (1.0, "`MLA`, one MAC per instruction"),
        Core::CortexM55 if l.contains("helium") || l.contains("mve") => {
            (16.0, "Helium, 16 int8 MACs per vector instruction")
        }
        _ => (2.0, "`SMLAD`, two 16-bit MACs per instruction"),
    }
}

/// FNV-1a of `linear_requant` (HighMul) on the host for `shape`'s data: the expected hash of the MCU output.
pub fn reference_hash(shape: Shape) -> Result<u32> {
    let Shape { m, k, n } = shape;
    let (mut x, mut w, mut bias, mut mul) = (vec![0i8; m * k], vec![0i8; n * k], vec![0i32; n], vec![0i32; n]);
    shapes::fill(shape, &mut x, &mut w, &mut bias, &mut mul);
    let rq = Requant::HighMul(HighMulRequant::new(&mul, shapes::ZERO_POINT, -128, 127).map_err(|e| anyhow!("{e}"))?);
    let mut out = vec![0i8; m * n];
    linear_requant(&x, &w, Some(&bias), MatDims { m, k, n }, shapes::INPUT_OFFSET, &rq, &mut out)
        .map_err(|e| anyhow!("linear_requant {m}×{k}×{n}: {e}"))?;
    Ok(shapes::fnv1a(&out))
}

/// The host reference hashes of every set, by set name and shape index (computed once per process).
fn reference_hashes() -> Result<&'static BTreeMap<&'static str, Vec<u32>>> {
    static HASHES: OnceLock<BTreeMap<&'static str, Vec<u32>>> = OnceLock::new();
    if let Some(h) = HASHES.get() {
        return Ok(h);
    }
    let mut map = BTreeMap::new();
    for set in shapes::SETS {
        map.insert(set.name, set.shapes.iter().map(|&s| reference_hash(s)).collect::<Result<Vec<_>>>()?);
    }
    Ok(HASHES.get_or_init(|| map))
}

/// Builds `firmware/gemm-bench` for `core`, runs it on QEMU counting instructions and checks each printed
/// shape against the shape lists and the host reference. Errors: a failed build or run, or output that does
/// not cover every shape (a mismatching shape is not an error: see [`Measured::bit_exact`]).
pub fn measure(core: Core, timeout: Duration) -> Result<CoreRun> {
    let target_dir = firmware_target_dir()?;
    let started = Instant::now();
    let elf = build_firmware(&repo_root().join("firmware/gemm-bench"), core, &target_dir)?;
    let build_time = started.elapsed();
    let sizes = elf_sizes(&elf)?;
    let plugin_dir = target_dir.join("plugin");
    build_plugin(&plugin_dir)?;
    let opts = RunOptions { timeout, count_instructions: true, plugin_dir: Some(plugin_dir), stdout_lines: None };
    let out = run_elf(core, &elf, &opts)?;
    let context = || format!("{core}: exit code {}; stdout:\n{}\nstderr:\n{}", out.exit_code, out.stdout, out.stderr);
    let regions = out.instructions.as_ref().map(|c| c.by_region()).unwrap_or_default();
    let hashes = reference_hashes()?;
    let mut layout = None;
    let mut rows: BTreeMap<&str, Vec<Measured>> = BTreeMap::new();
    for line in out.stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["layout", name] => layout = Some(name.to_string()),
            ["gemm", set, i, m, k, n, hash, verdict] => {
                let num = |s: &str| s.parse::<usize>().with_context(|| format!("bad line `{line}`"));
                let (i, shape) = (num(i)?, Shape { m: num(m)?, k: num(k)?, n: num(n)? });
                let set = shapes::SETS.iter().find(|s| s.name == *set);
                let done = set.map_or(0, |s| rows.get(s.name).map_or(0, Vec::len));
                let Some(set) = set.filter(|s| s.shapes.get(i) == Some(&shape) && done == i) else {
                    bail!("unexpected line `{line}`\n{}", context());
                };
                let region = set.first_region + i as u32;
                let instructions = *regions
                    .get(&region)
                    .ok_or_else(|| anyhow!("no instruction count for region {region}\n{}", context()))?;
                rows.entry(set.name).or_default().push(Measured {
                    shape,
                    instructions,
                    mcu_hash: u32::from_str_radix(hash, 16).with_context(|| format!("bad hash in `{line}`"))?,
                    mcu_ok: *verdict == "ok",
                    host_hash: hashes[set.name][i],
                });
            }
            _ => {}
        }
    }
    let complete = shapes::SETS.iter().all(|s| rows.get(s.name).map_or(0, Vec::len) == s.shapes.len());
    let all_ok = rows.values().flatten().all(|r| r.mcu_ok);
    if !complete || out.exit_code != i32::from(!all_ok) {
        bail!("the firmware did not report every shape\n{}", context());
    }
    let layout = layout.ok_or_else(|| anyhow!("no layout line\n{}", context()))?;
    Ok(CoreRun {
        core,
        layout,
        rows: rows.remove("bench").unwrap_or_default(),
        test_rows: rows.remove("test").unwrap_or_default(),
        sizes,
        build: build_time,
        emulation: out.elapsed,
    })
}

/// One JSON object per shape of `run` (`bench/gemm.jsonl`).
fn jsonl_rows(run: &CoreRun) -> String {
    let (limit, _) = limit(run.core, &run.layout);
    run.rows
        .iter()
        .map(|r| {
            let mpi = r.macs_per_instruction();
            let row = serde_json::json!({
                "core": run.core.name(), "m": r.shape.m, "k": r.shape.k, "n": r.shape.n,
                "instructions": r.instructions, "macs": macs(r.shape), "bit_exact": r.bit_exact(),
                "macs_per_instruction": mpi, "layout": run.layout, "limit": limit, "ratio_to_limit": mpi / limit,
                "hash": format!("{:08x}", r.mcu_hash),
            });
            format!("{row}\n")
        })
        .collect()
}

/// The measurement of `shape` in `run`.
fn find(run: &CoreRun, shape: Shape) -> Option<&Measured> {
    run.rows.iter().find(|r| r.shape == shape)
}

/// `MACs/instr (ratio to the limit)` of `shape` on `run`'s core, or `—`.
fn cell(run: &CoreRun, shape: Shape) -> String {
    let (limit, _) = limit(run.core, &run.layout);
    find(run, shape).map_or("—".into(), |r| {
        let mpi = r.macs_per_instruction();
        let flag = if r.bit_exact() { "" } else { " **NOT bit-exact**" };
        format!("{mpi:.3} ({:.0}%){flag}", 100.0 * mpi / limit)
    })
}

fn shape_name(s: Shape) -> String {
    format!("{}×{}×{}", s.m, s.k, s.n)
}

/// `docs/gemm.md` from the runs.
fn markdown(runs: &[CoreRun]) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# GEMM micro-benchmark: packed int8 linear layers per core\n")?;
    writeln!(
        md,
        "Regenerate with `cargo run --release -p mote-bench -- gemm` (writes this file and `bench/gemm.jsonl`; \
         QEMU 10 and the MCU Rust targets as for `mote deploy`). It builds `firmware/gemm-bench` for each core and \
         runs it on QEMU; every number below comes from that run. `cargo test -p mote-bench gemm` (part of \
         `cargo test --workspace`) runs the same firmware on the same cores and checks every shape bit-exact.\n"
    )?;
    writeln!(
        md,
        "**What is measured.** One call of `mote_kernels::packed::linear_packed`, the int8 linear layer \
         `out[M,N] = requant(x[M,K] · w[N,K]ᵀ + bias)` with per-output-channel `HighMul` requantization (nonzero \
         input offset and output zero point), for GEMM shapes M×K×N (M tokens, K input features, N output \
         features): M ∈ {{16, 64, 81, 128}} × K ∈ {{16, 32, 64, 128, 256}} × N ∈ {{16, 32, 64, 128, 256}}, plus the \
         CMSIS-NN anchor 1×64×64. The weights, bias and multipliers are packed offline (`pack_linear` into the \
         build's `NATIVE_LAYOUT`, not measured); the measured region is the whole call: argument checks, \
         activation panel packing, the multiply-accumulate loops and requantization, plus the marker's own few \
         instructions (5 on Cortex-M, 4 on RV32). Instructions are counted exactly by QEMU (executed instructions, not cycles: QEMU models no \
         pipeline, caches or wait states). MACs = M·K·N. The data is deterministic pseudo-random int8 \
         (`firmware/gemm-bench/src/shapes.rs`). **Bit-exact**: the MCU compares every output with \
         `linear_requant` on the MCU, and the output's FNV-1a hash equals that of `linear_requant` on the host.\n"
    )?;
    writeln!(
        md,
        "**Limit** of a core: the peak MACs per instruction of the instruction the kernel is built on \
         (Cortex-M4/M7/M33, and M55 without a Helium layout: 2, `SMLAD`; M55 with a Helium layout: 16; RV32IMC: \
         0.5, one `MUL` and one `ADD` per MAC); the ratio is measured / limit.\n"
    )?;

    writeln!(md, "## Summary\n")?;
    writeln!(
        md,
        "| core | layout | limit (MACs/instr) | bit-exact shapes | 64×64×64 | 128×128×128 | best shape | worst shape |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for run in runs {
        let (limit, _) = limit(run.core, &run.layout);
        let exact = run.rows.iter().filter(|r| r.bit_exact()).count();
        let by_mpi = |a: &&Measured, b: &&Measured| a.macs_per_instruction().total_cmp(&b.macs_per_instruction());
        let best = run.rows.iter().max_by(by_mpi).context("no rows")?;
        let worst = run.rows.iter().min_by(by_mpi).context("no rows")?;
        writeln!(
            md,
            "| {} | {} | {limit} | {exact}/{} | {} | {} | {} {} | {} {} |",
            run.core,
            run.layout,
            run.rows.len(),
            cell(run, Shape { m: 64, k: 64, n: 64 }),
            cell(run, Shape { m: 128, k: 128, n: 128 }),
            shape_name(best.shape),
            cell(run, best.shape),
            shape_name(worst.shape),
            cell(run, worst.shape),
        )?;
    }

    writeln!(md, "\n## Against CMSIS-NN\n")?;
    writeln!(
        md,
        "CMSIS-NN's `arm_fully_connected_s8` MACs per instruction as given in issue 7 (not measured here), beside \
         mote's measurement of the same shape.\n"
    )?;
    writeln!(md, "| shape M×K×N | core | mote MACs/instr | CMSIS-NN MACs/instr | mote / CMSIS-NN |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    for (shape, cmsis) in CMSIS_NN {
        for (core, theirs) in CMSIS_CORES.into_iter().zip(cmsis) {
            let Some(r) = runs.iter().find(|r| r.core == core).and_then(|run| find(run, shape)) else { continue };
            let ours = r.macs_per_instruction();
            writeln!(md, "| {} | {core} | {ours:.3} | {theirs} | {:.2}× |", shape_name(shape), ours / theirs)?;
        }
    }

    writeln!(md, "\n## Where the rest of the limit goes\n")?;
    writeln!(
        md,
        "**Dsp16 (`SMLAD`).** The k loop runs a 2×2 output tile: per four k one `LDM` of four activation words, one \
         `LDM` of four weight words and eight `SMLAD` (16 MACs), with no loop instructions (the panel carries jump \
         words that the last `LDM` of each 16-quad chunk loads into `pc`). A bigger tile does not fit: 4 \
         accumulators, 8 operands and 2 pointers already take the 14 usable registers, and every other tile shape \
         needs more loads per `SMLAD`. So the loop alone is 10 instructions per 16 MACs (1.6), and every output also \
         needs `SMMLAR` + `SSAT` + `STRB` (3): an output costs at least k/2 + k/8 + 3 instructions, a ceiling of \
         1.488 MACs/instr at k = 64, 1.542 at k = 128 and 1.571 at k = 256. The rest is the activation panel fill \
         (two `SXTB16` per activation word) and a few instructions per tile and per row pair. **Mve8 (Helium).** A \
         2×4 tile keeps eight `VMLADAVA.S8` sums in the eight even registers; about 20 instructions per tile go to \
         requantization and stores, which is why small k stays below 8 MACs/instr. **Rv32 (RV32IMC)** has no \
         multiply-accumulate: a MAC is at least a `MUL` and an `ADD` (the 0.5), plus loads. A 4×4 output tile (16 \
         accumulators) loads 4 activations and 4 weights per k for 16 MACs, so the loop can reach 0.4 at most (no \
         bigger tile fits the registers); it does two k per iteration in 83 instructions (0.386). Each output also \
         costs about 17 instructions (requantization `MUL`, `MULH`, carry, zero point, clamp and `SB`, and its share \
         of the tile's accumulator start and loop set-up): about 2.6·k + 17 per output, a ceiling of 0.35 \
         MACs/instr at k = 64, 0.37 at k = 128 and 0.38 at k = 256; the rest is the activation panel fill (about 5 \
         instructions per activation, each copied once per call)."
    )?;

    for run in runs {
        let (limit, why) = limit(run.core, &run.layout);
        writeln!(md, "\n## {}: layout {}, limit {limit} MACs/instr ({why})\n", run.core, run.layout)?;
        let exact = run.rows.iter().chain(&run.test_rows).filter(|r| r.bit_exact()).count();
        let instructions: u64 = run.rows.iter().map(|r| r.instructions).sum();
        let macs: usize = run.rows.iter().map(|r| macs(r.shape)).sum();
        writeln!(
            md,
            "Bit-exact: {exact} of {} shapes ({} benchmark shapes and the {} odd-size shapes of the tests). \
             Firmware: {} B flash, {} B static RAM (buffers for the largest shape). All {} benchmark shapes \
             together: {macs} MACs in {instructions} instructions ({:.3} MACs/instr). Per grid shape, MACs per \
             instruction (ratio to the limit); rows M×K, columns N:\n",
            run.rows.len() + run.test_rows.len(),
            run.rows.len(),
            run.test_rows.len(),
            run.sizes.flash(),
            run.sizes.ram(),
            run.rows.len(),
            macs as f64 / instructions.max(1) as f64,
        )?;
        let grid = &shapes::BENCH[..shapes::BENCH_LEN - shapes::EXTRA.len()];
        let mut ns: Vec<usize> = grid.iter().map(|s| s.n).collect();
        ns.sort_unstable();
        ns.dedup();
        let mut mks: Vec<(usize, usize)> = grid.iter().map(|s| (s.m, s.k)).collect();
        mks.sort_unstable();
        mks.dedup();
        let header: Vec<String> = ns.iter().map(|n| format!("N={n}")).collect();
        writeln!(md, "| M×K | {} |", header.join(" | "))?;
        writeln!(md, "|---|{}", "---|".repeat(ns.len()))?;
        for (m, k) in mks {
            let cells: Vec<String> = ns.iter().map(|&n| cell(run, Shape { m, k, n })).collect();
            writeln!(md, "| {m}×{k} | {} |", cells.join(" | "))?;
        }
        for &s in &shapes::EXTRA {
            writeln!(md, "\nBeyond the grid: {} {}.", shape_name(s), cell(run, s))?;
        }
    }
    Ok(md)
}

/// `mote-bench gemm`: measures every core, writes `docs/gemm.md` and `bench/gemm.jsonl`, and fails when a
/// shape is not bit-exact (after writing the files, which say which).
pub fn run_table(timeout: Duration) -> Result<()> {
    let root = repo_root();
    let started = Instant::now();
    let mut runs = Vec::new();
    for core in CORES {
        let run = measure(core, timeout)?;
        let exact = run.rows.iter().chain(&run.test_rows).filter(|r| r.bit_exact()).count();
        eprintln!(
            "{core}: layout {}, {exact}/{} shapes bit-exact; build {:.1} s, emulation {:.1} s",
            run.layout,
            run.rows.len() + run.test_rows.len(),
            run.build.as_secs_f64(),
            run.emulation.as_secs_f64()
        );
        runs.push(run);
    }
    let md = markdown(&runs)?;
    let jsonl: String = runs.iter().map(jsonl_rows).collect();
    std::fs::write(root.join("docs/gemm.md"), &md)?;
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(root.join("bench/gemm.jsonl"), &jsonl)?;
    print!("{md}");
    eprintln!("gemm: {:.1} s", started.elapsed().as_secs_f64());
    let bad: Vec<String> = runs
        .iter()
        .flat_map(|run| {
            run.rows
                .iter()
                .chain(&run.test_rows)
                .filter(|r| !r.bit_exact())
                .map(move |r| format!("{} {}", run.core, shape_name(r.shape)))
        })
        .collect();
    ensure!(bad.is_empty(), "not bit-exact: {}", bad.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Builds the firmware once per core and checks every shape of both sets bit-exact. Without
    //! QEMU, a Rust target or the plugin's build tools the tests print `SKIP: <reason>` and pass, except when
    //! `CI` is set, where they fail.
    use super::*;

    /// `Some(())` when everything needed for `core` is installed; otherwise prints `SKIP` (or fails under CI).
    fn require(core: Core) -> Option<()> {
        let plugin = firmware_target_dir().map(|d| d.join("plugin")).unwrap_or_else(|e| panic!("{core}: {e}"));
        mote_qemu::tools_or_skip(core, &plugin)
    }

    fn check(core: Core) {
        let Some(()) = require(core) else { return };
        let run = measure(core, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((run.test_rows.len(), run.rows.len()), (shapes::TEST.len(), shapes::BENCH.len()));
        for r in run.test_rows.iter().chain(&run.rows) {
            assert!(r.mcu_ok, "{core}: {} differs from linear_requant on the MCU", shape_name(r.shape));
            assert_eq!(
                format!("{:08x}", r.mcu_hash),
                format!("{:08x}", r.host_hash),
                "{core}: {} differs from linear_requant on the host",
                shape_name(r.shape)
            );
            assert!(r.instructions > 0);
        }
        println!(
            "{core}: {} + {} shapes bit-exact (layout {}); build {:.1} s, emulation {:.1} s",
            run.test_rows.len(),
            run.rows.len(),
            run.layout,
            run.build.as_secs_f64(),
            run.emulation.as_secs_f64()
        );
    }

    #[test]
    fn gemm_cortex_m4() {
        check(Core::CortexM4);
    }

    #[test]
    fn gemm_cortex_m7() {
        check(Core::CortexM7);
    }

    #[test]
    fn gemm_cortex_m33() {
        check(Core::CortexM33);
    }

    #[test]
    fn gemm_cortex_m55() {
        check(Core::CortexM55);
    }

    #[test]
    fn gemm_rv32imc() {
        check(Core::Rv32imc);
    }

    #[test]
    fn shape_lists() {
        assert_eq!(shapes::BENCH.len(), 101);
        assert_eq!(shapes::BENCH[0], Shape { m: 16, k: 16, n: 16 });
        assert_eq!(shapes::BENCH[99], Shape { m: 128, k: 256, n: 256 });
        let mut grid: Vec<Shape> = shapes::BENCH[..100].to_vec();
        grid.sort_by_key(|s| (s.m, s.k, s.n));
        grid.dedup();
        assert_eq!(grid.len(), 100);
        // Every CMSIS-NN anchor is measured.
        assert!(CMSIS_NN.iter().all(|(s, _)| shapes::BENCH.contains(s)));
        // The test set has the odd cases it promises.
        assert!(shapes::TEST.iter().any(|s| s.k % 4 != 0 && s.n % 2 == 1 && s.m % 2 == 1));
    }

    #[test]
    fn limits() {
        assert_eq!(limit(Core::CortexM4, "Dsp16").0, 2.0);
        assert_eq!(limit(Core::CortexM55, "Dsp16").0, 2.0);
        assert_eq!(limit(Core::CortexM55, "Helium8").0, 16.0);
        assert_eq!(limit(Core::Rv32imc, "Dsp16").0, 0.5);
        assert_eq!(limit(Core::Rv32imc, "Rv32").0, 0.5);
    }
}
