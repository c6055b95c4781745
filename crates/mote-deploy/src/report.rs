//! The deployment report: memory (arena plans, flash, SRAM, stack), instructions per layer and in total, the
//! latency estimate, and the bit-exact comparison with the host; as text, JSON and a self-contained HTML page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mote_qemu::{ElfSizes, StackUsage};
use serde_json::{json, Value};

use crate::emulate::Emulation;
use crate::firmware::{write_if_changed, MemoryLimits};
use crate::fit::{group, Fit};
use crate::{html, Board, Result};
use mote_codegen::{ArenaReport, Compiled, IoInfo, TensorInfo};
use mote_core::DType;

/// The latency assumption, stated wherever a latency is shown.
pub const LATENCY_ASSUMPTION: &str =
    "assuming 1 instruction per cycle; QEMU counts executed instructions, not cycles: no pipeline, caches or \
     flash wait states";

/// One layer's row of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRow {
    /// Mark id (schedule position).
    pub id: u32,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: String,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Instructions executed in the layer's region (including the marker call, a handful).
    pub instructions: u64,
}

impl LayerRow {
    /// MACs per instruction (0 when the layer executed none).
    pub fn macs_per_instruction(&self) -> f64 {
        if self.instructions == 0 {
            0.0
        } else {
            self.macs as f64 / self.instructions as f64
        }
    }
}

/// The first element where the MCU and the host differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Output position.
    pub output: usize,
    /// Output name.
    pub name: String,
    /// Flat element index.
    pub index: usize,
    /// The MCU's value.
    pub mcu: i64,
    /// The host reference's value.
    pub host: i64,
    /// How many elements differ over all outputs.
    pub differing: usize,
}

/// The first difference between the `mcu` and `host` outputs (device bytes, decoded to elements by each
/// output's type), if any.
pub fn compare(outputs: &[IoInfo], mcu: &[Vec<i8>], host: &[Vec<i8>]) -> Option<Mismatch> {
    let mut first = None;
    let mut differing = 0;
    for (k, (m, h)) in mcu.iter().zip(host).enumerate() {
        let (m, h) = match outputs.get(k) {
            Some(io) => (io.decode(m), io.decode(h)),
            None => (m.iter().map(|&v| i64::from(v)).collect(), h.iter().map(|&v| i64::from(v)).collect()),
        };
        for (i, (&a, &b)) in m.iter().zip(&h).enumerate() {
            if a != b {
                differing += 1;
                if first.is_none() {
                    first = Some((k, i, a, b));
                }
            }
        }
        // A length difference counts every missing element.
        differing += m.len().abs_diff(h.len());
        if first.is_none() && m.len() != h.len() {
            let i = m.len().min(h.len());
            first = Some((k, i, m.get(i).copied().unwrap_or(0), h.get(i).copied().unwrap_or(0)));
        }
    }
    first.map(|(output, index, mcu, host)| Mismatch {
        output,
        name: outputs.get(output).map_or_else(|| format!("#{output}"), |o| o.name.clone()),
        index,
        mcu,
        host,
        differing,
    })
}

/// `10 int8 values` or, for wider outputs, `10 values (i16)`.
fn values_phrase(outputs: &[IoInfo]) -> String {
    let n: usize = outputs.iter().map(|o| o.elements()).sum();
    if outputs.iter().all(|o| o.dtype == DType::I8) {
        format!("{n} int8 values")
    } else {
        let types: Vec<String> = outputs.iter().map(|o| o.dtype.to_string()).collect();
        format!("{n} values ({})", types.join(", "))
    }
}

/// Everything `mote deploy` reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The model file.
    pub model: String,
    /// The board.
    pub board: Board,
    /// Arena sizes (best plan, greedy, lower bound).
    pub arena: ArenaReport,
    /// Weights and parameters in flash.
    pub weight_bytes: u64,
    /// The fit check done before building.
    pub fit: Fit,
    /// The memory map the firmware was linked with.
    pub limits: MemoryLimits,
    /// ELF section sizes.
    pub sizes: ElfSizes,
    /// Stack high-water mark.
    pub stack: StackUsage,
    /// Per layer, in schedule order.
    pub layers: Vec<LayerRow>,
    /// All instructions of the run (start-up, printing and exit included).
    pub total_instructions: u64,
    /// Device outputs.
    pub outputs: Vec<IoInfo>,
    /// The MCU's outputs (device bytes).
    pub mcu_outputs: Vec<Vec<i8>>,
    /// The first difference from the host reference, `None` when bit-exact.
    pub mismatch: Option<Mismatch>,
    /// Arena tensors (for the memory-plan picture).
    pub tensors: Vec<TensorInfo>,
}

impl Report {
    /// Assembles the report of one deployment; `host` holds the host reference's int8 outputs.
    pub fn new(
        model: &str,
        board: &Board,
        compiled: &Compiled,
        fit: &Fit,
        limits: MemoryLimits,
        emulation: &Emulation,
        host: &[Vec<i8>],
    ) -> Report {
        let layers = compiled
            .layers
            .iter()
            .map(|l| LayerRow {
                id: l.id,
                name: l.name.clone(),
                op: l.op.clone(),
                macs: l.macs,
                instructions: emulation.layers.iter().filter(|(id, _)| *id == l.id).map(|(_, n)| n).sum(),
            })
            .collect();
        Report {
            model: model.to_string(),
            board: board.clone(),
            arena: compiled.arena.clone(),
            weight_bytes: compiled.weight_bytes as u64,
            fit: fit.clone(),
            limits,
            sizes: emulation.sizes,
            stack: emulation.stack,
            layers,
            total_instructions: emulation.total_instructions,
            outputs: compiled.outputs.clone(),
            mcu_outputs: emulation.outputs.clone(),
            mismatch: compare(&compiled.outputs, &emulation.outputs, host),
            tensors: compiled.tensors.clone(),
        }
    }

    /// The MCU's outputs equal the host reference's bit for bit.
    pub fn bit_exact(&self) -> bool {
        self.mismatch.is_none()
    }

    /// Instructions for one inference: the sum of the layer regions.
    pub fn inference_instructions(&self) -> u64 {
        self.layers.iter().map(|l| l.instructions).sum()
    }

    /// MACs of one inference.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Estimated latency of one inference in seconds at the board clock ([`LATENCY_ASSUMPTION`]).
    pub fn latency_seconds(&self) -> f64 {
        self.inference_instructions() as f64 / self.board.clock_hz as f64
    }

    /// SRAM in use: statics (`data + bss`, the arena and output buffers included) plus the stack high-water.
    pub fn sram_used(&self) -> u64 {
        self.sizes.ram() + self.stack.used
    }

    /// The board in one phrase: `stm32l4r5 (cortex-m4 at 120 MHz, emulated on mps2-an386)`.
    pub fn board_phrase(&self) -> String {
        format!(
            "{} ({} at {}, emulated on QEMU {})",
            self.board.name,
            self.board.core,
            mhz(self.board.clock_hz),
            self.board.qemu_machine()
        )
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        let _ = writeln!(s, "model {} on {}", self.model, self.board_phrase());
        match &self.mismatch {
            None => {
                let _ = writeln!(
                    s,
                    "outputs: bit-exact with the host reference ({} output(s), {})",
                    self.outputs.len(),
                    values_phrase(&self.outputs)
                );
            }
            Some(m) => {
                let _ = writeln!(s, "outputs: DIFFER from the host reference: {}", mismatch_phrase(m));
            }
        }
        let a = &self.arena;
        let _ = writeln!(
            s,
            "arena:  {} B with the {} plan{} (greedy-by-size {} B, lower bound {} B)",
            group(a.best as u64),
            a.strategy,
            if a.optimal { ", optimal" } else { "" },
            group(a.greedy as u64),
            group(a.lower_bound as u64)
        );
        let z = &self.sizes;
        let _ = writeln!(
            s,
            "flash:  {} B of {} B ({:.1}%): text {} + rodata {} + data {}; weights {} B",
            group(z.flash()),
            group(self.board.flash_bytes),
            pct(z.flash(), self.board.flash_bytes),
            group(z.text),
            group(z.rodata),
            group(z.data),
            group(self.weight_bytes)
        );
        let _ = writeln!(
            s,
            "SRAM:   {} B of {} B ({:.1}%): statics {} (data {} + bss {}; arena and outputs included) + stack \
             high-water {} of the {} B reserve",
            group(self.sram_used()),
            group(self.board.sram_bytes),
            pct(self.sram_used(), self.board.sram_bytes),
            group(z.ram()),
            group(z.data),
            group(z.bss),
            group(self.stack.used),
            group(self.stack.size)
        );
        let _ = writeln!(
            s,
            "inference: {} instructions for {} MACs ({:.3} MACs/instruction); whole run {} instructions",
            group(self.inference_instructions()),
            group(self.macs()),
            ratio(self.macs(), self.inference_instructions()),
            group(self.total_instructions)
        );
        let _ = writeln!(
            s,
            "latency: {} at {} ({LATENCY_ASSUMPTION})",
            millis(self.latency_seconds()),
            mhz(self.board.clock_hz)
        );
        let _ = writeln!(s, "\n{}", self.layer_table());
        s
    }

    /// The per-layer table (fixed-width text).
    pub fn layer_table(&self) -> String {
        let name_w = self.layers.iter().map(|l| l.name.chars().count()).max().unwrap_or(4).clamp(5, 48);
        let op_w = self.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).max(2);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>4}  {:<name_w$}  {:<op_w$}  {:>12}  {:>14}  {:>10}  {:>6}",
            "id", "layer", "op", "MACs", "instructions", "MACs/inst", "share"
        );
        let total = self.inference_instructions().max(1);
        for l in &self.layers {
            let name: String = if l.name.chars().count() > name_w {
                let tail: String =
                    l.name.chars().rev().take(name_w - 1).collect::<Vec<_>>().into_iter().rev().collect();
                format!("…{tail}")
            } else {
                l.name.clone()
            };
            let _ = writeln!(
                s,
                "{:>4}  {:<name_w$}  {:<op_w$}  {:>12}  {:>14}  {:>10.3}  {:>5.1}%",
                l.id,
                name,
                l.op,
                group(l.macs),
                group(l.instructions),
                l.macs_per_instruction(),
                100.0 * l.instructions as f64 / total as f64
            );
        }
        let _ = write!(
            s,
            "{:>4}  {:<name_w$}  {:<op_w$}  {:>12}  {:>14}  {:>10.3}",
            "",
            "total",
            "",
            group(self.macs()),
            group(self.inference_instructions()),
            ratio(self.macs(), self.inference_instructions())
        );
        s
    }

    /// The report as one JSON object (for scripts: `--json`).
    pub fn json(&self) -> Value {
        let b = &self.board;
        json!({
            "model": self.model,
            "board": {
                "name": b.name,
                "core": b.core.name(),
                "qemu_machine": b.qemu_machine(),
                "clock_hz": b.clock_hz,
                "sram_bytes": b.sram_bytes,
                "flash_bytes": b.flash_bytes,
                "source": b.source.to_string(),
            },
            "bit_exact": self.bit_exact(),
            "mismatch": self.mismatch.as_ref().map(|m| json!({
                "output": m.output, "name": m.name, "index": m.index, "mcu": m.mcu, "host": m.host,
                "differing": m.differing,
            })),
            "outputs": self.outputs.iter().zip(&self.mcu_outputs).map(|(o, v)| json!({
                "name": o.name, "shape": o.shape, "dtype": o.dtype.to_string(), "scale": o.scale,
                "zero_point": o.zero_point, "values": o.decode(v),
            })).collect::<Vec<_>>(),
            "arena": {
                "best": self.arena.best, "greedy": self.arena.greedy, "lower_bound": self.arena.lower_bound,
                "strategy": self.arena.strategy, "optimal": self.arena.optimal,
            },
            "fit": {
                "sram_needed": self.fit.sram_needed, "flash_needed": self.fit.flash_needed,
                "stack_reserve": self.fit.stack_bytes, "code_estimate": self.fit.code_estimate,
            },
            "flash": {
                "bytes": self.sizes.flash(), "text": self.sizes.text, "rodata": self.sizes.rodata,
                "data": self.sizes.data, "weights": self.weight_bytes, "limit": b.flash_bytes,
            },
            "sram": {
                "bytes": self.sram_used(), "static": self.sizes.ram(), "data": self.sizes.data,
                "bss": self.sizes.bss, "stack_used": self.stack.used, "stack_reserved": self.stack.size,
                "limit": b.sram_bytes,
            },
            "instructions": {
                "inference": self.inference_instructions(),
                "total_run": self.total_instructions,
                "macs": self.macs(),
            },
            "latency": {
                "seconds": self.latency_seconds(),
                "clock_hz": b.clock_hz,
                "assumption": LATENCY_ASSUMPTION,
            },
            "layers": self.layers.iter().map(|l| json!({
                "id": l.id, "name": l.name, "op": l.op, "macs": l.macs, "instructions": l.instructions,
                "macs_per_instruction": l.macs_per_instruction(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The self-contained HTML page (summary, memory-plan picture, per-layer table).
    pub fn html(&self) -> String {
        html::page(self)
    }

    /// Writes `index.html` into `dir` (created if needed) and returns its path.
    pub fn write_html(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("index.html");
        write_if_changed(&path, self.html().as_bytes())?;
        Ok(path)
    }
}

/// `m` in words: `output 0 `logits` index 3: MCU -5, host -4 (2 of 10 values differ)`.
pub fn mismatch_phrase(m: &Mismatch) -> String {
    format!(
        "first difference at output {} `{}` index {}: MCU {}, host {} ({} value(s) differ)",
        m.output, m.name, m.index, m.mcu, m.host, m.differing
    )
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// `120 MHz`, `32.768 kHz`.
pub fn mhz(hz: u64) -> String {
    if hz >= 1_000_000 {
        let m = hz as f64 / 1e6;
        if hz % 1_000_000 == 0 {
            format!("{m:.0} MHz")
        } else {
            format!("{m} MHz")
        }
    } else {
        format!("{} kHz", hz as f64 / 1e3)
    }
}

/// `12.345 ms`, `850 µs`.
pub fn millis(seconds: f64) -> String {
    if seconds >= 1e-3 {
        format!("{:.3} ms", seconds * 1e3)
    } else {
        format!("{:.1} µs", seconds * 1e6)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mote_codegen::LayerInfo;

    /// A small but complete report (used by the HTML tests too).
    pub(crate) fn sample() -> Report {
        let board = Board::builtin().into_iter().find(|b| b.name == "stm32l4r5").unwrap();
        let t = |name: &str, bytes, offset, first, last| TensorInfo { name: name.into(), bytes, offset, first, last };
        let compiled = Compiled {
            files: vec![],
            arena: ArenaReport { best: 96, greedy: 128, lower_bound: 96, strategy: "best-fit".into(), optimal: true },
            weight_bytes: 1000,
            inputs: vec![IoInfo {
                name: "x".into(),
                shape: vec![1, 4],
                len: 4,
                scale: 0.5,
                zero_point: 0,
                dtype: DType::I8,
            }],
            outputs: vec![IoInfo {
                name: "y<1>".into(),
                shape: vec![1, 2],
                len: 2,
                scale: 0.25,
                zero_point: 1,
                dtype: DType::I8,
            }],
            layers: vec![
                LayerInfo { id: 0, name: "/fc/MatMul".into(), op: "QLinear".into(), macs: 2048 },
                LayerInfo { id: 1, name: "/act".into(), op: "QLut".into(), macs: 0 },
                LayerInfo { id: 2, name: "/out".into(), op: "QLinear".into(), macs: 512 },
            ],
            tensors: vec![t("a", 64, 0, 0, 1), t("b", 32, 64, 1, 2), t("c", 2, 0, 2, 3)],
        };
        let fit = crate::check_fit(&board, &compiled, 4096, 4).unwrap();
        let limits = MemoryLimits::for_board(&board, 4096).unwrap();
        let emu = Emulation {
            outputs: vec![vec![3, -4]],
            layers: vec![(0, 4000), (1, 300), (2, 1000)],
            total_instructions: 9000,
            stack: StackUsage { used: 600, size: 4096 },
            sizes: ElfSizes { text: 6000, rodata: 1500, data: 8, bss: 120 },
        };
        Report::new("m.onnx", &board, &compiled, &fit, limits, &emu, &[vec![3, -4]])
    }

    #[test]
    fn numbers() {
        let r = sample();
        assert!(r.bit_exact());
        assert_eq!(r.inference_instructions(), 5300);
        assert_eq!(r.macs(), 2560);
        assert_eq!(r.sram_used(), 128 + 600);
        assert!((r.latency_seconds() - 5300.0 / 120e6).abs() < 1e-12);
        assert!((r.layers[0].macs_per_instruction() - 0.512).abs() < 1e-12);
    }

    #[test]
    fn text_report() {
        let t = sample().text();
        assert!(t.contains("model m.onnx on stm32l4r5 (cortex-m4 at 120 MHz, emulated on QEMU mps2-an386)"), "{t}");
        assert!(t.contains("outputs: bit-exact with the host reference (1 output(s), 2 int8 values)"), "{t}");
        assert!(t.contains("arena:  96 B with the best-fit plan, optimal (greedy-by-size 128 B, lower bound 96 B)"));
        assert!(
            t.contains("flash:  7,508 B of 2,097,152 B (0.4%): text 6,000 + rodata 1,500 + data 8; weights 1,000 B")
        );
        assert!(t.contains("SRAM:   728 B of 655,360 B (0.1%): statics 128 (data 8 + bss 120;"), "{t}");
        assert!(t.contains("stack high-water 600 of the 4,096 B reserve"), "{t}");
        assert!(t.contains("inference: 5,300 instructions for 2,560 MACs (0.483 MACs/instruction)"), "{t}");
        assert!(t.contains("latency: 44.2 µs at 120 MHz (assuming 1 instruction per cycle; QEMU counts"), "{t}");
        assert!(t.contains("   0  /fc/MatMul  QLinear         2,048           4,000       0.512   75.5%"), "{t}");
        assert!(t.contains("total"), "{t}");
    }

    #[test]
    fn mismatch_found() {
        let outs = [IoInfo { name: "y".into(), shape: vec![3], len: 3, scale: 1.0, zero_point: 0, dtype: DType::I8 }];
        assert_eq!(compare(&outs, &[vec![1, 2, 3]], &[vec![1, 2, 3]]), None);
        let m = compare(&outs, &[vec![1, 5, 7]], &[vec![1, 2, 3]]).unwrap();
        assert_eq!((m.output, m.index, m.mcu, m.host, m.differing), (0, 1, 5, 2, 2));
        assert_eq!(mismatch_phrase(&m), "first difference at output 0 `y` index 1: MCU 5, host 2 (2 value(s) differ)");
        // Wider outputs compare as elements: little-endian i16 300 vs 301 at element 1.
        let wide = [IoInfo { name: "w".into(), shape: vec![2], len: 4, scale: 1.0, zero_point: 0, dtype: DType::I16 }];
        let m = compare(&wide, &[vec![1, 0, 44, 1]], &[vec![1, 0, 45, 1]]).unwrap();
        assert_eq!((m.index, m.mcu, m.host, m.differing), (1, 300, 301, 1));
    }

    #[test]
    fn json_report() {
        let j = sample().json();
        assert_eq!(j["bit_exact"], true);
        assert_eq!(j["arena"]["greedy"], 128);
        assert_eq!(j["instructions"]["inference"], 5300);
        assert_eq!(j["layers"][1]["op"], "QLut");
        assert_eq!(j["sram"]["stack_used"], 600);
        assert_eq!(j["fit"]["sram_needed"], 96 + 2 + 4096);
        assert_eq!(j["board"]["core"], "cortex-m4");
        assert_eq!(j["outputs"][0]["values"], json!([3, -4]));
        assert!(j["latency"]["assumption"].as_str().unwrap().contains("1 instruction per cycle"));
    }

    #[test]
    fn clock_and_time_units() {
        assert_eq!(mhz(120_000_000), "120 MHz");
        assert_eq!(mhz(32_768), "32.768 kHz");
        assert_eq!(mhz(12_500_000), "12.5 MHz");
        assert_eq!(millis(0.0123456), "12.346 ms");
        assert_eq!(millis(0.00005), "50.0 µs");
    }
}
