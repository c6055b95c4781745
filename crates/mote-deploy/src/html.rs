//! The offline HTML report (`mote deploy --report DIR`): one self-contained `index.html` (inline CSS and SVG, no
//! script, no external resource) with the summary, a picture of the arena plan and the per-layer table.
//!
//! The picture: x is the schedule (one column per layer step), y the arena offset (0 at the top); each arena
//! tensor is a rectangle from its first to its last step and from its offset to offset + bytes, with a tooltip
//! (its name, bytes, offsets and steps). The step where the most bytes are live is marked: at that step no plan
//! can use fewer bytes than are live, which is the lower bound.

use std::fmt::Write as _;

use crate::fit::group;
use crate::report::{mhz, millis, mismatch_phrase, Report, LATENCY_ASSUMPTION};
use mote_codegen::TensorInfo;

/// Plot area of the memory picture, in SVG units.
const PLOT_W: f64 = 960.0;
const PLOT_H: f64 = 420.0;
/// Margins for the axes' labels.
const LEFT: f64 = 78.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 44.0;
const RIGHT: f64 = 16.0;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The step with the most live bytes and that many bytes (`None` without tensors).
pub fn peak(tensors: &[TensorInfo]) -> Option<(usize, usize)> {
    let last = tensors.iter().map(|t| t.last).max()?;
    (0..=last)
        .map(|step| (step, tensors.iter().filter(|t| t.first <= step && step <= t.last).map(|t| t.bytes).sum()))
        .fold(None, |best: Option<(usize, usize)>, (s, b)| match best {
            Some((_, bb)) if bb >= b => best,
            _ => Some((s, b)),
        })
}

/// The SVG picture of the arena plan.
pub fn memory_svg(tensors: &[TensorInfo], arena_bytes: usize, layer_names: &[String]) -> String {
    let steps = tensors.iter().map(|t| t.last + 1).max().unwrap_or(0).max(layer_names.len()).max(1);
    let top = tensors.iter().map(|t| t.offset + t.bytes).max().unwrap_or(0).max(arena_bytes).max(1);
    let (w, h) = (LEFT + PLOT_W + RIGHT, TOP + PLOT_H + BOTTOM);
    let sx = PLOT_W / steps as f64;
    let sy = PLOT_H / top as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         role=\"img\" aria-label=\"arena memory plan\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"#f7f7f7\" stroke=\"#999\"/>"
    );
    // Y axis: offsets, five ticks.
    for i in 0..=4 {
        let bytes = top * i / 4;
        let y = TOP + bytes as f64 * sy;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" \
             text-anchor=\"end\">{}</text>",
            LEFT,
            LEFT + PLOT_W,
            LEFT - 6.0,
            y + 4.0,
            group(bytes as u64)
        );
    }
    // X axis: steps, at most ~16 labels.
    let every = steps.div_ceil(16).max(1);
    for step in (0..steps).step_by(every) {
        let x = LEFT + (step as f64 + 0.5) * sx;
        let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{step}</text>", TOP + PLOT_H + 14.0);
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">schedule step (layer id)</text>\
         <text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">arena offset (bytes)</text>",
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 34.0,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
    let peak = peak(tensors);
    if let Some((step, bytes)) = peak {
        // Behind the tensors: a tinted column with the tooltip.
        let x = LEFT + step as f64 * sx;
        let layer = layer_names.get(step).map(|n| format!(" ({})", escape(n))).unwrap_or_default();
        let _ = writeln!(
            s,
            "<rect class=\"peak\" x=\"{x:.1}\" y=\"{TOP}\" width=\"{sx:.1}\" height=\"{PLOT_H}\" fill=\"#e53935\" \
             fill-opacity=\"0.15\"><title>peak: {} B live at step {step}{layer}</title></rect>",
            group(bytes as u64)
        );
    }
    for (i, t) in tensors.iter().enumerate() {
        let x = LEFT + t.first as f64 * sx;
        let width = ((t.last + 1 - t.first.min(t.last + 1)) as f64 * sx).max(1.0);
        let y = TOP + t.offset as f64 * sy;
        let height = (t.bytes as f64 * sy).max(1.0);
        // Golden-angle hues: neighbours differ.
        let hue = (i as f64 * 137.508) % 360.0;
        let _ = writeln!(
            s,
            "<rect class=\"tensor\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{width:.2}\" height=\"{height:.2}\" \
             fill=\"hsl({hue:.0},60%,62%)\" stroke=\"#333\" stroke-width=\"0.5\"><title>{}: {} B at offset {}..{}, \
             steps {}..{}</title></rect>",
            escape(&t.name),
            group(t.bytes as u64),
            group(t.offset as u64),
            group((t.offset + t.bytes) as u64),
            t.first,
            t.last
        );
    }
    if let Some((step, bytes)) = peak {
        // On top: a dashed outline that lets the tensors' tooltips through, and a label above the plot.
        let x = LEFT + step as f64 * sx;
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"{TOP}\" width=\"{sx:.1}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"#e53935\" \
             stroke-width=\"1.5\" stroke-dasharray=\"5 3\" pointer-events=\"none\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             text-anchor=\"middle\" fill=\"#c62828\">peak: {} B live at step {step}</text>",
            (x + sx / 2.0).clamp(LEFT + 80.0, LEFT + PLOT_W - 80.0),
            TOP - 8.0,
            group(bytes as u64)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("mote deploy: {} on {}", r.model, r.board.name);
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; }}\n\
         td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; }}\n\
         td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}\n\
         .ok {{ color: #2e7d32; font-weight: bold; }} .bad {{ color: #c62828; font-weight: bold; }}\n\
         .note {{ color: #666; font-size: 90%; }}\n</style>\n</head>\n<body>",
        escape(&title)
    );
    let _ = writeln!(s, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(s, "<p>Board {}.</p>", escape(&r.board_phrase()));
    match &r.mismatch {
        None => {
            let _ = writeln!(s, "<p class=\"ok\">Outputs bit-exact with the host reference.</p>");
        }
        Some(m) => {
            let _ = writeln!(
                s,
                "<p class=\"bad\">Outputs differ from the host reference: {}.</p>",
                escape(&mismatch_phrase(m))
            );
        }
    }
    let a = &r.arena;
    let z = &r.sizes;
    let rows = [
        (
            "arena",
            format!(
                "{} B ({} plan{}); greedy-by-size {} B; lower bound {} B",
                group(a.best as u64),
                a.strategy,
                if a.optimal { ", optimal" } else { "" },
                group(a.greedy as u64),
                group(a.lower_bound as u64)
            ),
        ),
        (
            "flash",
            format!(
                "{} B of {} B: text {}, rodata {}, data {}; weights {} B",
                group(z.flash()),
                group(r.board.flash_bytes),
                group(z.text),
                group(z.rodata),
                group(z.data),
                group(r.weight_bytes)
            ),
        ),
        (
            "SRAM",
            format!(
                "{} B of {} B: statics {} B (data {} + bss {}, arena included), stack high-water {} B of {} B reserved",
                group(r.sram_used()),
                group(r.board.sram_bytes),
                group(z.ram()),
                group(z.data),
                group(z.bss),
                group(r.stack.used),
                group(r.stack.size)
            ),
        ),
        (
            "instructions",
            format!(
                "{} for one inference ({} MACs); {} for the whole run",
                group(r.inference_instructions()),
                group(r.macs()),
                group(r.total_instructions)
            ),
        ),
        ("latency", format!("{} at {}, {LATENCY_ASSUMPTION}", millis(r.latency_seconds()), mhz(r.board.clock_hz))),
    ];
    let _ = writeln!(s, "<table>");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th style=\"text-align:left\">{k}</th><td>{}</td></tr>", escape(&v));
    }
    let _ = writeln!(s, "</table>");
    let _ = writeln!(s, "<h2>Arena plan</h2>");
    let _ = writeln!(
        s,
        "<p class=\"note\">Each rectangle is one tensor: from the step that writes it to the last step that reads it \
         (x), at its arena offset and size (y). Hover for details. The dashed column is the step with the most live \
         bytes.</p>"
    );
    let names: Vec<String> = r.layers.iter().map(|l| l.name.clone()).collect();
    s.push_str(&memory_svg(&r.tensors, r.arena.best, &names));
    let _ = writeln!(s, "<h2>Layers</h2>\n<table>");
    let _ = writeln!(
        s,
        "<tr><th class=\"n\">id</th><th style=\"text-align:left\">layer</th><th style=\"text-align:left\">op</th><th class=\"n\">MACs</th><th class=\"n\">instructions</th>\
         <th class=\"n\">MACs/instruction</th></tr>"
    );
    for l in &r.layers {
        let _ = writeln!(
            s,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.3}</td></tr>",
            l.id,
            escape(&l.name),
            escape(&l.op),
            group(l.macs),
            group(l.instructions),
            l.macs_per_instruction()
        );
    }
    let _ = writeln!(
        s,
        "<tr><th></th><th style=\"text-align:left\">total</th><th></th><th class=\"n\">{}</th><th class=\"n\">{}</th>\
         <th></th></tr>\n</table>",
        group(r.macs()),
        group(r.inference_instructions())
    );
    let _ = writeln!(
        s,
        "<p class=\"note\">Instructions are counted by QEMU per layer region (between two marks, marker call \
         included).</p>\n</body>\n</html>"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn peak_step() {
        let t = |bytes, first, last| TensorInfo { name: "t".into(), bytes, offset: 0, first, last };
        assert_eq!(peak(&[]), None);
        assert_eq!(peak(&[t(10, 0, 1), t(20, 1, 2), t(5, 2, 3)]), Some((1, 30)));
    }

    #[test]
    fn page_is_self_contained_and_complete() {
        let r = sample();
        let html = r.html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        for forbidden in ["<script", "http://", "https://", "<link", "src="] {
            // The SVG namespace URI is an identifier, not a fetched resource.
            let count = html.matches(forbidden).count();
            let allowed = usize::from(forbidden == "http://");
            assert_eq!(count, allowed, "{forbidden} in the page");
        }
        assert_eq!(html.matches("class=\"tensor\"").count(), 3);
        assert!(html.contains("<title>a: 64 B at offset 0..64, steps 0..1</title>"), "{html}");
        assert!(html.contains("class=\"peak\""));
        assert!(html.contains("peak: 96 B live at step 1 (/act)"), "{html}");
        assert!(
            html.contains("<td>/fc/MatMul</td><td>QLinear</td><td class=\"n\">2,048</td><td class=\"n\">4,000</td>")
        );
        assert!(html.contains("bit-exact"));
        assert!(html.contains("1 instruction per cycle"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
