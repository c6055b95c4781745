//! Picks the per-core fast kernels at compile time from the target and the `-C target-cpu` flag:
//! `mote_dsp` for Arm cores with the DSP extension (SMLAD, SXTB16, SMMLAR), `mote_mve` for Helium.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mote_dsp)");
    println!("cargo::rustc-check-cfg=cfg(mote_mve)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let cpu = flags
        .split('\x1f')
        .filter_map(|f| f.strip_prefix("target-cpu=").or_else(|| f.strip_prefix("-Ctarget-cpu=")))
        .next_back()
        .unwrap_or("");
    // ARMv7E-M always has the DSP extension; on ARMv8-M Mainline it is optional, so only named cores count.
    let dsp_cpu = matches!(cpu, "cortex-m33" | "cortex-m35p" | "cortex-m55" | "cortex-m85");
    if target.starts_with("thumbv7em") || (target.starts_with("thumbv8m.main") && dsp_cpu) {
        println!("cargo::rustc-cfg=mote_dsp");
    }
    if target.starts_with("thumbv8m.main") && matches!(cpu, "cortex-m55" | "cortex-m85") {
        println!("cargo::rustc-cfg=mote_mve");
    }
}
