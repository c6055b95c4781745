//! Building the instruction-counting QEMU plugin from its vendored C source (see the crate docs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{Error, Result};

const SOURCE: &str = include_str!("../plugin/mote_count.c");
const HEADER: &str = include_str!("../plugin/qemu-plugin.h");
const INSTALL: &str = "apt-get install -y --no-install-recommends gcc pkg-config libglib2.0-dev";

/// FNV-1a: a stable hash of the plugin sources, naming the cache entry (std's hasher may change between Rust
/// releases, which would only cost a rebuild, but a fixed one keeps the directory name meaningful).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Runs `cmd` and returns its stdout; `Err` describes how it failed.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!("{:?} failed ({}): {}", cmd, out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the plugin into `cache_dir` unless an up-to-date build is there; returns the shared library's path.
///
/// Needs a C compiler (`$CC`, else `cc`), `pkg-config` and glib's headers; the error names the Debian
/// packages when one is missing.
pub fn build_plugin(cache_dir: &Path) -> Result<PathBuf> {
    // One build at a time in this process (tests run in threads); other processes are handled by the atomic
    // rename below.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());

    let dir = cache_dir.join(format!("mote-count-{:016x}", fnv1a(&[SOURCE, HEADER])));
    let lib = dir.join("libmote_count.so");
    if lib.is_file() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    for (name, text) in [("mote_count.c", SOURCE), ("qemu-plugin.h", HEADER)] {
        std::fs::write(dir.join(name), text).map_err(Error::io(format!("writing {}", dir.display())))?;
    }

    let glib = output(Command::new("pkg-config").args(["--cflags", "--libs", "glib-2.0"]))
        .map_err(|e| Error::Plugin(format!("glib-2.0 not found through pkg-config ({e}); install with `{INSTALL}`")))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let tmp = dir.join(format!("libmote_count.so.{}.tmp", std::process::id()));
    let mut cmd = Command::new(&cc);
    cmd.args(["-O2", "-shared", "-fPIC", "-Wall", "-o"])
        .arg(&tmp)
        .arg(dir.join("mote_count.c"))
        .arg("-I")
        .arg(&dir)
        .args(glib.split_whitespace());
    output(&mut cmd).map_err(|e| Error::Plugin(format!("compiling with `{cc}`: {e}; install with `{INSTALL}`")))?;
    std::fs::rename(&tmp, &lib).map_err(Error::io(format!("renaming {} to {}", tmp.display(), lib.display())))?;
    Ok(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_vendored_and_hash_stably() {
        assert!(SOURCE.contains("qemu_plugin_install"));
        assert!(HEADER.contains("SPDX-License-Identifier: GPL-2.0-or-later"));
        assert!(HEADER.contains("#define QEMU_PLUGIN_VERSION 4"));
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
    }
}
