//! Running an ELF in QEMU with a timeout, optionally counting instructions.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use crate::{build_plugin, marker_address, Core, Error, Result, MARK_END};

/// How to run a firmware.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// QEMU is killed after this long ([`Error::Timeout`]).
    pub timeout: Duration,
    /// Load the counting plugin and fill [`RunOutput::instructions`].
    pub count_instructions: bool,
    /// Where the plugin is built and cached; `None`: `$TMPDIR/mote-qemu`.
    pub plugin_dir: Option<PathBuf>,
    /// Receives each line the firmware prints as soon as it is printed (the whole output still comes back in
    /// [`RunOutput::stdout`]).
    pub stdout_lines: Option<std::sync::mpsc::Sender<String>>,
}

impl Default for RunOptions {
    /// 60 s, no counting, default plugin directory.
    fn default() -> Self {
        RunOptions { timeout: Duration::from_secs(60), count_instructions: false, plugin_dir: None, stdout_lines: None }
    }
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The firmware's exit code (QEMU's exit status).
    pub exit_code: i32,
    /// What the firmware printed over semihosting.
    pub stdout: String,
    /// QEMU's own diagnostics (empty on a clean run).
    pub stderr: String,
    /// Instruction counts, when [`RunOptions::count_instructions`] was set.
    pub instructions: Option<InstructionCounts>,
    /// Wall-clock time of the run (host time, not a measure of the firmware).
    pub elapsed: Duration,
}

/// The stack high-water mark a mote-fw firmware prints on exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackUsage {
    /// Deepest stack use in bytes.
    pub used: u64,
    /// Size of the stack region in bytes.
    pub size: u64,
}

impl RunOutput {
    /// Parses the `mote: stack used=N size=M` line printed by mote-fw, if any.
    pub fn stack(&self) -> Option<StackUsage> {
        let line = self.stdout.lines().rev().find_map(|l| l.strip_prefix("mote: stack "))?;
        let mut used = None;
        let mut size = None;
        for kv in line.split_whitespace() {
            match kv.split_once('=') {
                Some(("used", v)) => used = v.parse().ok(),
                Some(("size", v)) => size = v.parse().ok(),
                _ => {}
            }
        }
        Some(StackUsage { used: used?, size: size? })
    }
}

/// One call of `mote_mark`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The id passed to the marker.
    pub id: u32,
    /// Instructions executed before the marker's first instruction.
    pub count: u64,
}

/// The instructions executed from one mark to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Id of the mark that opened the region.
    pub id: u32,
    /// Instructions executed in it (including the marker's few, see the crate docs).
    pub instructions: u64,
}

/// The counting plugin's report for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstructionCounts {
    /// Every marker call, in execution order.
    pub marks: Vec<Mark>,
    /// All instructions the run executed, from reset to exit.
    pub total: u64,
}

impl InstructionCounts {
    /// Parses the plugin's report (`mark <id> <count>` and `total <count>` lines).
    pub fn parse(report: &str) -> Result<Self, String> {
        let mut counts = InstructionCounts::default();
        for line in report.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["mark", id, n] => counts.marks.push(Mark {
                    id: id.parse().map_err(|_| format!("bad mark line `{line}`"))?,
                    count: n.parse().map_err(|_| format!("bad mark line `{line}`"))?,
                }),
                ["total", n] => counts.total = n.parse().map_err(|_| format!("bad total line `{line}`"))?,
                _ => return Err(format!("unexpected plugin output `{line}`")),
            }
        }
        Ok(counts)
    }

    /// The regions in execution order: one per pair of consecutive marks whose first id is not [`MARK_END`].
    pub fn regions(&self) -> Vec<Region> {
        self.marks
            .windows(2)
            .filter(|w| w[0].id != MARK_END)
            .map(|w| Region { id: w[0].id, instructions: w[1].count - w[0].count })
            .collect()
    }

    /// Instructions per region id, summed over every time the region ran.
    pub fn by_region(&self) -> BTreeMap<u32, u64> {
        let mut map = BTreeMap::new();
        for r in self.regions() {
            *map.entry(r.id).or_insert(0) += r.instructions;
        }
        map
    }

    /// Instructions from the first mark `from` to the first mark `to` after it.
    pub fn between(&self, from: u32, to: u32) -> Option<u64> {
        let start = self.marks.iter().position(|m| m.id == from)?;
        let end = self.marks[start + 1..].iter().find(|m| m.id == to)?;
        Some(end.count - self.marks[start].count)
    }
}

/// `Ok` when `core`'s QEMU emulator is on `PATH`.
pub fn check_qemu(core: Core) -> Result<PathBuf> {
    let binary = core.qemu_binary();
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .ok_or(Error::QemuNotFound { binary, package: core.qemu_package() })
}

/// A file name unique to this run (process id and a counter) for the plugin's report.
fn report_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!("report-{}-{}.txt", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Reads a child's pipe to the end on a thread, so that neither pipe can fill up and block QEMU.
fn drain(pipe: Option<impl Read + Send + 'static>, lines: Option<Sender<String>>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let Some(p) = pipe else { return buf };
        let Some(lines) = lines else {
            let mut p = p;
            let _ = p.read_to_end(&mut buf);
            return buf;
        };
        let mut reader = std::io::BufReader::new(p);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            buf.extend_from_slice(&line);
            // A receiver that went away only stops the forwarding, not the reading.
            let _ = lines.send(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string());
            line.clear();
        }
        buf
    })
}

/// Runs `elf` on `core`'s emulated board with semihosting until it exits or `opts.timeout` expires.
///
/// The firmware's exit code comes back in [`RunOutput::exit_code`], whatever it is; errors are for runs
/// that did not finish ([`Error::Timeout`]), QEMU failing itself ([`Error::Qemu`]: it printed a
/// `qemu-system-*:` diagnostic and exited non-zero, or died from a signal) and missing tools.
pub fn run_elf(core: Core, elf: &Path, opts: &RunOptions) -> Result<RunOutput> {
    let qemu = check_qemu(core)?;
    let machine = core.qemu_machine();
    let mut cmd = Command::new(&qemu);
    cmd.args(core.qemu_args())
        .args(["-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let report = if opts.count_instructions {
        let dir = opts.plugin_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("mote-qemu"));
        let plugin = build_plugin(&dir)?;
        let mark = marker_address(elf, core)?;
        let report = report_path(plugin.parent().unwrap_or(&dir));
        // QEMU splits -plugin arguments at commas; the paths come from us and contain none in practice.
        let arg = format!("{},mark={mark:#x},reg={},out={}", plugin.display(), core.arg_register(), report.display());
        cmd.arg("-plugin").arg(arg);
        Some(report)
    } else {
        None
    };

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(Error::io(format!("starting {}", qemu.display())))?;
    let stdout = drain(child.stdout.take(), opts.stdout_lines.clone());
    let stderr = drain(child.stderr.take(), None);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::io("waiting for QEMU"))? {
            break Some(status);
        }
        if start.elapsed() >= opts.timeout {
            // Kill and reap; the pipes then close and the reader threads finish.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    let report_text = report.as_ref().map(|p| {
        let text = std::fs::read_to_string(p);
        let _ = std::fs::remove_file(p);
        text
    });

    // QEMU's fatal errors come with a full register dump; the first lines say what happened.
    let diagnostic = || stderr.lines().take(8).collect::<Vec<_>>().join("\n");
    let Some(status) = status else {
        return Err(Error::Timeout { machine, timeout: opts.timeout, stdout });
    };
    let Some(exit_code) = status.code() else {
        return Err(Error::Qemu { machine, message: format!("{status}; stderr: {}", diagnostic()) });
    };
    let qemu_name = format!("{}:", core.qemu_binary());
    if exit_code != 0 && stderr.lines().any(|l| l.starts_with(&qemu_name)) {
        return Err(Error::Qemu { machine, message: diagnostic() });
    }
    let instructions = match report_text {
        None => None,
        Some(Ok(text)) => Some(InstructionCounts::parse(&text).map_err(|m| Error::Qemu { machine, message: m })?),
        Some(Err(e)) => {
            let message = format!("the counting plugin wrote no report ({e}); stderr: {}", diagnostic());
            return Err(Error::Qemu { machine, message });
        }
    };
    Ok(RunOutput { exit_code, stdout, stderr, instructions, elapsed })
}

/// `Ok` when firmware for `core` can be built and emulated with instruction counting: QEMU, the Rust target, and
/// the counting plugin (built into `plugin_dir` if needed).
pub fn check_tools(core: Core, plugin_dir: &Path) -> Result<()> {
    check_qemu(core)?;
    crate::check_target(core)?;
    build_plugin(plugin_dir).map(|_| ())
}

/// For tests: `Some(())` when [`check_tools`] passes; otherwise prints `SKIP: <core>: <what is missing>` and
/// returns `None`, or panics when the environment variable `CI` is set (CI must run every emulation test).
pub fn tools_or_skip(core: Core, plugin_dir: &Path) -> Option<()> {
    match check_tools(core, plugin_dir) {
        Ok(()) => Some(()),
        Err(e) if std::env::var_os("CI").is_some() => panic!("{core}: {e}"),
        Err(e) => {
            eprintln!("SKIP: {core}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_between_consecutive_marks() {
        let c = InstructionCounts::parse("mark 0 100\nmark 1 105\nmark 2 1105\nmark 4294967295 1300\nmark 1 2000\nmark 4294967295 2900\ntotal 3000\n")
            .unwrap();
        assert_eq!(c.total, 3000);
        let r: Vec<_> = c.regions().iter().map(|r| (r.id, r.instructions)).collect();
        assert_eq!(r, [(0, 5), (1, 1000), (2, 195), (1, 900)]);
        assert_eq!(c.by_region()[&1], 1900);
        assert_eq!(c.between(1, MARK_END), Some(1195));
        assert_eq!(c.between(2, 0), None);
        assert!(InstructionCounts::parse("mark x 1").is_err());
    }

    #[test]
    fn stack_line() {
        let out = RunOutput {
            exit_code: 0,
            stdout: "a\nmote: stack used=1024 size=16384\n".into(),
            stderr: String::new(),
            instructions: None,
            elapsed: Duration::ZERO,
        };
        assert_eq!(out.stack(), Some(StackUsage { used: 1024, size: 16384 }));
    }

    #[test]
    fn timeout_message() {
        let e = Error::Timeout { machine: "mps2-an386", timeout: Duration::from_secs(3), stdout: String::new() };
        assert_eq!(e.to_string(), "emulation timed out after 3s on mps2-an386");
    }
}
