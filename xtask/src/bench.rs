//! `cargo xtask bench`: boot the `bench` scenario under QEMU `-icount shift=0`,
//! parse its `bench <name> min=… median=… max=… …` lines, print a table with the ratio of
//! each median to the committed baseline (`bench/baseline-<arch>.json`), and write
//! `target/bench/<arch>.json`.
//!
//! `--smp N` boots N CPUs. QEMU runs `-icount` only with single-threaded TCG (one host
//! thread takes the vCPUs in turn; the bench boots ask for it explicitly), so the counts
//! stay exact and repeatable with several CPUs, and the instruction clock advances with
//! the instructions of every CPU together: what `ipc_call_reply_cross_cpu` reads. Every
//! other benchmark runs with all its threads pinned to one CPU (the one whose instruction
//! counter the scenario programs). `--locks` boots the lock-checking build instead and
//! prints the lock acquisitions per IPC round trip (`locks <name>: …` lines); its
//! instruction counts are not those of the timed build and are not shown.
//!
//! The `scale` group (`--group scale`; the default `--group all` runs it after the usual
//! one) boots the scenario twice more per architecture, with 1 GiB: once with
//! [`SCALE_FEW`] and once with [`SCALE_MANY`] other threads (made by the bench program,
//! each blocked for good, half asleep) and other processes (each asleep) alive, and
//! measures `spawn`, `ipc_call_reply`, `yield` and `timer_tick` in both. It prints the
//! two medians side by side and fails the run when one grows by more than
//! [`SCALE_LIMIT`]: the kernel's costs must not depend on how many threads exist.
//!
//! The JSON is written and read by hand (the format is fixed and tiny):
//! `{"arch": …, "iterations": N, "benchmarks": [{"name": …, "unit": "instructions",
//! "min": …, "median": …, "max": …}]}`. The reader only looks for each object's `"name"`
//! and the `"median"` after it, which is all a comparison needs.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::boot::{self, BootOptions};
use crate::compile::KernelBuild;
use crate::loader::LoaderChoice;
use crate::qemu::QemuOptions;
use crate::{Arch, Context, Error, Profile, Result, Workspace, step};

/// Samples per benchmark when `--iterations` is not given.
pub const DEFAULT_ITERATIONS: u32 = 200;
/// Benchmarks every run must report: each the scenario can run alone
/// (`abi::bench::NAMES`), and the span from kernel entry to the first user instruction.
/// With fewer than two CPUs the benchmarks of `abi::bench::NEEDS_SMP` are left out (the
/// scenario prints a line saying they need two).
pub fn expected(smp: u32) -> impl Iterator<Item = &'static str> {
    abi::bench::NAMES
        .into_iter()
        .filter(move |name| smp >= 2 || !abi::bench::NEEDS_SMP.contains(name))
        .chain(["boot_to_user"])
}

/// Which benchmark groups `cargo xtask bench` runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    /// Every benchmark, compared with the committed baseline.
    Main,
    /// The `scale` group: few against many other threads and processes.
    Scale,
    /// Both.
    #[default]
    All,
}

impl Group {
    fn main(self) -> bool {
        self != Group::Scale
    }

    fn scale(self) -> bool {
        self != Group::Main
    }
}

/// The `scale` group's first column: (other threads, other processes) alive.
pub const SCALE_FEW: (u32, u32) = (10, 1);
/// Its second column.
pub const SCALE_MANY: (u32, u32) = (10_000, 1_000);
/// The most a `scale` benchmark's median may grow from the first column to the second.
pub const SCALE_LIMIT: f64 = 1.10;
/// Guest memory of the `scale` boots (10,000 threads' kernel stacks, 1,000 processes).
const SCALE_MEMORY: &str = "1G";

/// The CPUs a run of benchmark `name` needs at least, given `--smp`.
pub fn smp_for(name: &str, smp: u32) -> u32 {
    if abi::bench::NEEDS_SMP.contains(&name) {
        smp.max(2)
    } else {
        smp
    }
}

/// The lock-count line of one benchmark: `locks <name>: …` (text before `locks ` is
/// ignored); `None` for any other line.
pub fn parse_locks_line(line: &str) -> Option<(&str, &str)> {
    let at = line.find("locks ")?;
    let rest = &line[at + "locks ".len()..];
    let (name, text) = rest.split_once(": ")?;
    (!name.is_empty() && !name.contains(' ')).then_some((name, text))
}

/// One benchmark's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    pub name: String,
    pub min: u64,
    pub median: u64,
    pub max: u64,
    pub samples: u64,
    pub discarded: u64,
    /// The kernel events per operation as printed (`switches=1.00 …`), if any.
    pub events: Vec<(String, String)>,
}

/// Parse `bench <name> min=… median=… max=… samples=… discarded=… [event=…]…`; `None`
/// for any other line (including `bench: …` notes). Text before `bench ` is ignored.
pub fn parse_line(line: &str) -> Option<Measurement> {
    let at = line.find("bench ")?;
    let mut words = line[at + "bench ".len()..].split_ascii_whitespace();
    let name = words.next()?;
    if name.contains('=') || name.ends_with(':') {
        return None;
    }
    let mut measurement = Measurement {
        name: name.to_owned(),
        min: 0,
        median: 0,
        max: 0,
        samples: 0,
        discarded: 0,
        events: Vec::new(),
    };
    let mut seen = 0;
    for word in words {
        let (key, value) = word.split_once('=')?;
        let number = || value.parse::<u64>().ok();
        match key {
            "min" => (measurement.min, seen) = (number()?, seen | 1),
            "median" => (measurement.median, seen) = (number()?, seen | 2),
            "max" => (measurement.max, seen) = (number()?, seen | 4),
            "samples" => measurement.samples = number()?,
            "discarded" => measurement.discarded = number()?,
            _ => measurement.events.push((key.to_owned(), value.to_owned())),
        }
    }
    (seen == 7).then_some(measurement)
}

/// Escape `text` as a JSON string body (names are plain ASCII; this is for safety).
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The JSON document for one architecture's run.
pub fn to_json(arch: Arch, iterations: u32, results: &[Measurement]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{{");
    let _ = writeln!(out, "  \"arch\": {},", json_string(arch.name()));
    let _ = writeln!(out, "  \"iterations\": {iterations},");
    let _ = writeln!(out, "  \"benchmarks\": [");
    for (index, result) in results.iter().enumerate() {
        let comma = if index + 1 < results.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "    {{\"name\": {}, \"unit\": \"instructions\", \"min\": {}, \"median\": {}, \"max\": {}}}{comma}",
            json_string(&result.name),
            result.min,
            result.median,
            result.max
        );
    }
    let _ = writeln!(out, "  ]");
    let _ = writeln!(out, "}}");
    out
}

/// Read `(name, median)` for every benchmark of a document [`to_json`] wrote.
pub fn read_medians(json: &str) -> Result<Vec<(String, u64)>> {
    let bad = |what: &str| Error::new(format!("baseline JSON: {what}"));
    let mut medians = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"name\"") {
        rest = &rest[at + "\"name\"".len()..];
        let rest_value = rest
            .trim_start()
            .strip_prefix(':')
            .ok_or(bad("no ':' after \"name\""))?;
        let rest_value = rest_value
            .trim_start()
            .strip_prefix('"')
            .ok_or(bad("a name is not a string"))?;
        let end = rest_value.find('"').ok_or(bad("unterminated name"))?;
        let name = rest_value[..end].to_owned();
        rest = &rest_value[end + 1..];
        let object_end = rest.find('}').unwrap_or(rest.len());
        let object = &rest[..object_end];
        let at = object
            .find("\"median\"")
            .ok_or_else(|| bad(&format!("{name} has no median")))?;
        let value = object[at + "\"median\"".len()..]
            .trim_start()
            .strip_prefix(':')
            .ok_or(bad("no ':' after \"median\""))?
            .trim_start();
        let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
        let median = digits
            .parse()
            .map_err(|_| bad(&format!("{name}'s median is not a number")))?;
        medians.push((name, median));
        rest = &rest[object_end..];
    }
    Ok(medians)
}

/// The table printed for one architecture; `baseline` gives the ratio column.
pub fn table(arch: Arch, results: &[Measurement], baseline: Option<&[(String, u64)]>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{arch}: guest instructions per operation (QEMU -icount shift=0)"
    );
    let _ = writeln!(
        out,
        "{:<14} {:>10} {:>10} {:>10} {:>9} {:>9}  kernel events per operation",
        "benchmark", "min", "median", "max", "ratio", "discarded"
    );
    for result in results {
        let ratio = baseline
            .and_then(|baseline| baseline.iter().find(|(name, _)| *name == result.name))
            .map_or_else(
                || "-".to_owned(),
                |(_, median)| {
                    if *median == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:.2}", result.median as f64 / *median as f64)
                    }
                },
            );
        let events = result
            .events
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>10} {:>10} {:>9} {:>9}  {events}",
            result.name, result.min, result.median, result.max, ratio, result.discarded
        );
    }
    out
}

/// The results file of one run.
pub fn results_path(workspace: &Workspace, arch: Arch) -> PathBuf {
    workspace
        .target_dir()
        .join("bench")
        .join(format!("{arch}.json"))
}

/// The committed baseline.
pub fn baseline_path(workspace: &Workspace, arch: Arch) -> PathBuf {
    workspace
        .root()
        .join("bench")
        .join(format!("baseline-{arch}.json"))
}

/// How every benchmark boot runs: release build, `-icount shift=0`, output captured, the
/// HHDM at its fixed base (a randomised one would move page-table walks between runs),
/// the image `keel-<arch>-<image>.img`, `smp` CPUs under single-threaded TCG.
pub fn bench_boot(
    workspace: &Workspace,
    arch: Arch,
    cmdline: String,
    image: &str,
    smp: u32,
    kernel: KernelBuild,
) -> BootOptions {
    let mut qemu = QemuOptions::new(arch);
    qemu.capture = true;
    qemu.echo = false;
    qemu.timeout = Some(Duration::from_secs(1200));
    qemu.smp = smp;
    qemu.extra_args = bench_qemu_args(smp);
    BootOptions {
        profile: Profile::Release,
        loader: LoaderChoice::Auto,
        cmdline,
        image: Some(
            workspace
                .images_dir()
                .join(format!("keel-{arch}-{image}.img")),
        ),
        keep_image: false,
        build: true,
        kernel: Some(kernel),
        fixed_hhdm: true,
        qemu,
    }
}

/// QEMU's extra arguments of a bench boot: `-icount shift=0`, and with more than one CPU
/// single-threaded TCG said explicitly (`-icount` implies it).
pub fn bench_qemu_args(smp: u32) -> Vec<String> {
    let mut args = vec!["-icount".to_owned(), "shift=0".to_owned()];
    if smp > 1 {
        args.extend(["-accel".to_owned(), "tcg,thread=single".to_owned()]);
    }
    args
}

/// Boot the `bench` scenario on `arch` with `smp` CPUs and return its measurements.
pub fn measure(
    workspace: &Workspace,
    arch: Arch,
    iterations: u32,
    smp: u32,
) -> Result<Vec<Measurement>> {
    let options = bench_boot(
        workspace,
        arch,
        format!("test=bench iterations={iterations}"),
        "bench",
        smp,
        KernelBuild::Testing,
    );
    step(format_args!(
        "{arch}: booting test=bench with -icount shift=0, {smp} CPU(s) ({iterations} iterations)…"
    ));
    let mut results = boot_and_read(workspace, arch, &options, expected(smp))?;
    // The shell boot is measured with one CPU only: with more, once every CPU idles at the
    // prompt `-icount` moves the clock on with the host's time.
    if smp == 1 {
        results.push(boot_to_shell(workspace, arch)?);
    } else {
        step(format_args!(
            "{arch}: boot_to_shell is measured with --smp 1 only"
        ));
    }
    Ok(results)
}

/// Boot the `scale` group's scenario with `others` other threads and `procs` other
/// processes alive and return its measurements.
pub fn measure_scale(
    workspace: &Workspace,
    arch: Arch,
    iterations: u32,
    (others, procs): (u32, u32),
) -> Result<Vec<Measurement>> {
    let mut options = bench_boot(
        workspace,
        arch,
        format!("test=bench iterations={iterations} others={others} procs={procs}"),
        "bench-scale",
        1,
        KernelBuild::Testing,
    );
    options.qemu.mem = SCALE_MEMORY.to_owned();
    step(format_args!(
        "{arch}: booting test=bench with {others} other threads and {procs} other processes \
         alive, -icount shift=0 ({iterations} iterations)…"
    ));
    boot_and_read(workspace, arch, &options, abi::bench::SCALE.into_iter())
}

/// Boot a bench scenario and return its `bench …` lines, each of `wanted` among them.
fn boot_and_read(
    workspace: &Workspace,
    arch: Arch,
    options: &BootOptions,
    wanted: impl Iterator<Item = &'static str>,
) -> Result<Vec<Measurement>> {
    let outcome = boot::boot(workspace, options)?;
    let show_tail = || {
        for line in outcome.lines.iter().rev().take(20).rev() {
            eprintln!("  | {line}");
        }
    };
    match outcome.ending.clone().into_result() {
        Ok(0) => {}
        Ok(code) => {
            show_tail();
            return Err(Error::new(format!(
                "{arch}: the bench scenario failed (exit code {code}); its last lines are above"
            )));
        }
        Err(error) => {
            show_tail();
            return Err(error);
        }
    }
    let results: Vec<Measurement> = outcome
        .lines
        .iter()
        .filter_map(|line| parse_line(line))
        .collect();
    for name in wanted {
        if !results.iter().any(|result| result.name == *name) {
            show_tail();
            return Err(Error::new(format!(
                "{arch}: the bench scenario printed no `bench {name} …` line"
            )));
        }
    }
    Ok(results)
}

/// The `scale` group's table for one architecture, and the benchmarks whose median grew
/// by more than [`SCALE_LIMIT`] from `few` to `many` (or is missing from either).
pub fn scale_table(arch: Arch, few: &[Measurement], many: &[Measurement]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut failures = Vec::new();
    let _ = writeln!(
        out,
        "{arch}: scale group, median guest instructions per operation with {} / {} other \
         threads and {} / {} other processes alive",
        SCALE_FEW.0, SCALE_MANY.0, SCALE_FEW.1, SCALE_MANY.1
    );
    let _ = writeln!(
        out,
        "{:<14} {:>10} {:>10} {:>9}",
        "benchmark", "few", "many", "ratio"
    );
    for name in abi::bench::SCALE {
        let median = |results: &[Measurement]| {
            results
                .iter()
                .find(|result| result.name == name)
                .map(|result| result.median)
        };
        match (median(few), median(many)) {
            (Some(few), Some(many)) => {
                let ratio = many as f64 / few.max(1) as f64;
                let verdict = if ratio > SCALE_LIMIT {
                    failures.push(format!("{name} ({few} → {many}, {ratio:.2})"));
                    "  above the limit"
                } else {
                    ""
                };
                let _ = writeln!(out, "{name:<14} {few:>10} {many:>10} {ratio:>9.2}{verdict}");
            }
            _ => failures.push(format!("{name} (not measured)")),
        }
    }
    (out, failures)
}

/// `cargo xtask bench --group scale` on each of `arches`: the two columns, written to
/// `target/bench/<arch>-scale-{few,many}.json`; an error when a ratio is above
/// [`SCALE_LIMIT`].
pub fn run_scale(workspace: &Workspace, arches: &[Arch], iterations: u32) -> Result<()> {
    let mut failures = Vec::new();
    for &arch in arches {
        let few = measure_scale(workspace, arch, iterations, SCALE_FEW)?;
        let many = measure_scale(workspace, arch, iterations, SCALE_MANY)?;
        for (column, results) in [("few", &few), ("many", &many)] {
            let path =
                results_path(workspace, arch).with_file_name(format!("{arch}-scale-{column}.json"));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&path, to_json(arch, iterations, results))
                .context(|| format!("cannot write {}", path.display()))?;
        }
        let (text, failed) = scale_table(arch, &few, &many);
        print!("{text}");
        failures.extend(
            failed
                .into_iter()
                .map(|failure| format!("{arch}: {failure}")),
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the scale group grew by more than {SCALE_LIMIT:.2}x with many threads: {}",
            failures.join(", ")
        )))
    }
}

/// `--locks`: boot the bench scenario in the lock-checking build (which counts every lock
/// acquisition per level) and return its `locks <name>: …` lines.
pub fn lock_counts(
    workspace: &Workspace,
    arch: Arch,
    iterations: u32,
    smp: u32,
) -> Result<Vec<String>> {
    let options = bench_boot(
        workspace,
        arch,
        format!("test=bench iterations={iterations}"),
        "bench-locks",
        smp,
        KernelBuild::Checked,
    );
    step(format_args!(
        "{arch}: booting test=bench in the lock-checking build, {smp} CPU(s), to count lock acquisitions…"
    ));
    let outcome = boot::boot(workspace, &options)?;
    let tail = || {
        outcome
            .lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|line| format!("  | {line}\n"))
            .collect::<String>()
    };
    match outcome.ending.clone().into_result() {
        Ok(0) => {}
        Ok(code) => {
            return Err(Error::new(format!(
                "{arch}: the bench scenario failed (exit code {code}):\n{}",
                tail()
            )));
        }
        Err(error) => return Err(error),
    }
    let lines: Vec<String> = outcome
        .lines
        .iter()
        .filter_map(|line| parse_locks_line(line).map(|(name, text)| format!("{name}: {text}")))
        .collect();
    let mut wanted = vec!["ipc_call_reply"];
    if smp >= 2 {
        wanted.push("ipc_call_reply_cross_cpu");
    }
    for name in wanted {
        if !lines
            .iter()
            .any(|line| line.starts_with(&format!("{name}: ")))
        {
            return Err(Error::new(format!(
                "{arch}: the lock-checking bench printed no `locks {name}: …` line:\n{}",
                tail()
            )));
        }
    }
    Ok(lines)
}

/// Boot the whole system (no scenario) with `-icount shift=0` and read, through the
/// shell's `uptime`, the instructions from kernel entry to the shell's first prompt.
fn boot_to_shell(workspace: &Workspace, arch: Arch) -> Result<Measurement> {
    const STEP: Duration = Duration::from_secs(600);
    const LABEL: &str = "boot to first prompt: ";
    let options = bench_boot(
        workspace,
        arch,
        String::new(),
        "bench-shell",
        1,
        KernelBuild::Testing,
    );
    step(format_args!(
        "{arch}: booting to the shell with -icount shift=0 (boot_to_shell)…"
    ));
    let mut session = boot::start(workspace, &options)?;
    session.expect_text("keel> ", STEP)?;
    session.send_line("uptime")?;
    let line = session.expect_line(LABEL, STEP)?;
    session.expect_text("keel> ", STEP)?;
    session.send_line("poweroff")?;
    let _ = session.finish(STEP);
    let count = line
        .split(LABEL)
        .nth(1)
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok())
        .ok_or_else(|| Error::new(format!("{arch}: cannot read boot_to_shell from {line:?}")))?;
    Ok(Measurement {
        name: "boot_to_shell".to_owned(),
        min: count,
        median: count,
        max: count,
        samples: 1,
        discarded: 0,
        events: Vec::new(),
    })
}

/// Where `bench --trace NAME` writes the timeline of `name` on `arch`.
pub fn trace_path(workspace: &Workspace, arch: Arch, name: &str) -> PathBuf {
    workspace
        .target_dir()
        .join("trace")
        .join(format!("{arch}-{name}.json"))
}

/// `cargo xtask bench --trace NAME`: boot the bench scenario with only `name`
/// (`only=NAME`) and the kernel trace on, write the trace, and print the measurement.
/// Returns each architecture's traced boot. A benchmark that needs two CPUs boots two.
pub fn trace(
    workspace: &Workspace,
    arches: &[Arch],
    iterations: u32,
    name: &str,
) -> Result<Vec<crate::trace::Traced>> {
    if abi::bench::selector(name).is_none() {
        return Err(Error::new(format!(
            "no benchmark named {name:?} can be traced; the benchmarks are: {}",
            abi::bench::NAMES.join(", ")
        )));
    }
    let mut runs = Vec::new();
    for &arch in arches {
        let boot = bench_boot(
            workspace,
            arch,
            format!("test=bench iterations={iterations} only={name} trace=on"),
            "bench-trace",
            smp_for(name, 1),
            KernelBuild::Testing,
        );
        let traced = crate::trace::run(
            workspace,
            &crate::trace::TraceOptions {
                boot,
                output: Some(trace_path(workspace, arch, name)),
            },
        )?;
        match traced.outcome.ending.clone().into_result() {
            Ok(0) => {}
            Ok(code) => {
                return Err(Error::new(format!(
                    "{arch}: the traced bench scenario failed (exit code {code})"
                )));
            }
            Err(error) => return Err(error),
        }
        let result = traced
            .outcome
            .lines
            .iter()
            .filter_map(|line| parse_line(line))
            .find(|result| result.name == name)
            .ok_or_else(|| {
                Error::new(format!(
                    "{arch}: the traced run printed no `bench {name} …` line"
                ))
            })?;
        print!("{}", table(arch, std::slice::from_ref(&result), None));
        step(format_args!(
            "{arch}: {name} traced ({} records, {} dropped; the counts include the trace's own cost)",
            traced.trace.records.len(),
            traced.trace.dropped
        ));
        runs.push(traced);
    }
    Ok(runs)
}

/// `cargo xtask bench`.
pub fn run(
    workspace: &Workspace,
    arches: &[Arch],
    iterations: u32,
    smp: u32,
    update_baseline: bool,
    group: Group,
) -> Result<()> {
    let main_arches = if group.main() { arches } else { &[] };
    for &arch in main_arches {
        let results = measure(workspace, arch, iterations, smp)?;
        if smp < 2 {
            for name in abi::bench::NEEDS_SMP {
                step(format_args!(
                    "{arch}: {name} needs 2 CPUs or more: not measured (use --smp 2 or more)"
                ));
            }
        }
        let json = to_json(arch, iterations, &results);
        let path = results_path(workspace, arch);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, &json).context(|| format!("cannot write {}", path.display()))?;
        let baseline_file = baseline_path(workspace, arch);
        let baseline = match std::fs::read_to_string(&baseline_file) {
            Ok(text) => Some(read_medians(&text).map_err(|error| {
                Error::new(format!("{}: {}", baseline_file.display(), error.message()))
            })?),
            Err(_) => None,
        };
        // The baselines are single-CPU runs: with more CPUs the ratios still compare the
        // pinned benchmarks, which should not move.
        print!("{}", table(arch, &results, baseline.as_deref()));
        step(format_args!("wrote {}", path.display()));
        if baseline.is_none() && !update_baseline {
            step(format_args!(
                "no baseline at {} (write one with --update-baseline)",
                baseline_file.display()
            ));
        }
        if update_baseline {
            if let Some(dir) = baseline_file.parent() {
                std::fs::create_dir_all(dir)
                    .context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&baseline_file, &json)
                .context(|| format!("cannot write {}", baseline_file.display()))?;
            step(format_args!(
                "baseline updated: {}",
                baseline_file.display()
            ));
        }
    }
    if group.scale() {
        if smp > 1 {
            step("the scale group boots one CPU, whatever --smp says");
        }
        run_scale(workspace, arches, iterations)?;
    }
    Ok(())
}

/// Boot the bench scenario running only benchmark `name` (`only=NAME`) with `smp` CPUs
/// in kernel build `kernel`, under `-icount shift=0`; the boot's outcome, whatever its
/// ending (the tests check the lines and the ending).
pub fn run_one(
    workspace: &Workspace,
    arch: Arch,
    iterations: u32,
    smp: u32,
    name: &str,
    kernel: KernelBuild,
) -> Result<crate::qemu::Outcome> {
    let image = match kernel {
        KernelBuild::Checked => "bench-one-locks",
        _ => "bench-one",
    };
    let options = bench_boot(
        workspace,
        arch,
        format!("test=bench iterations={iterations} only={name}"),
        image,
        smp,
        kernel,
    );
    boot::boot(workspace, &options)
}

/// `cargo xtask bench --locks`: print each architecture's lock counts.
pub fn run_locks(workspace: &Workspace, arches: &[Arch], iterations: u32, smp: u32) -> Result<()> {
    for &arch in arches {
        let lines = lock_counts(workspace, arch, iterations, smp)?;
        println!(
            "{arch}: shared-lock acquisitions per round trip, {smp} CPU(s), every CPU together"
        );
        for line in lines {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, median: u64) -> Measurement {
        Measurement {
            name: name.to_owned(),
            min: median - 1,
            median,
            max: median + 1,
            samples: 10,
            discarded: 0,
            events: Vec::new(),
        }
    }

    #[test]
    fn scale_table_fails_a_growth_above_the_limit_and_a_missing_benchmark() {
        let few = [
            sample("spawn", 1000),
            sample("ipc_call_reply", 700),
            sample("yield", 300),
            sample("timer_tick", 500),
        ];
        let many = [
            sample("spawn", 1100),
            sample("ipc_call_reply", 771),
            sample("yield", 290),
        ];
        let (text, failures) = scale_table(Arch::X86_64, &few, &many);
        assert!(
            text.contains("spawn                1000       1100      1.10\n"),
            "{text}"
        );
        assert!(text.contains("ipc_call_reply        700        771      1.10  above the limit"));
        assert_eq!(
            failures,
            [
                "ipc_call_reply (700 → 771, 1.10)",
                "timer_tick (not measured)"
            ]
        );
        let (_, none) = scale_table(Arch::X86_64, &few, &few);
        assert!(none.is_empty());
    }

    #[test]
    fn parses_bench_lines() {
        let line = "bench yield min=395 median=396 max=401 samples=200 discarded=3 switches=1.00 space_switches=1.00 tlb_flushes=0.00";
        let result = parse_line(line).unwrap();
        assert_eq!(result.name, "yield");
        assert_eq!((result.min, result.median, result.max), (395, 396, 401));
        assert_eq!((result.samples, result.discarded), (200, 3));
        assert_eq!(result.events.len(), 3);
        assert_eq!(result.events[0], ("switches".to_owned(), "1.00".to_owned()));
        // Firmware leftovers before the kernel's text are ignored.
        let prefixed = parse_line("\u{1b}[0mbench spawn min=1 median=2 max=3").unwrap();
        assert_eq!(prefixed.name, "spawn");
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(parse_line("bench: empty measurement 3 instructions"), None);
        assert_eq!(parse_line("bench done"), None);
        assert_eq!(parse_line("bench yield min=1 max=2"), None);
        assert_eq!(parse_line("bench yield min=x median=1 max=2"), None);
        assert_eq!(parse_line("bench yield min=1 median=1 max=2 junk"), None);
        assert_eq!(parse_line("keel: hello"), None);
    }

    #[test]
    fn json_round_trips_medians() {
        let results = [sample("null_syscall", 159), sample("yield", 395)];
        let json = to_json(Arch::X86_64, 200, &results);
        assert!(json.contains("\"arch\": \"x86_64\""));
        assert!(json.contains("\"iterations\": 200"));
        assert!(json.contains(
            "{\"name\": \"yield\", \"unit\": \"instructions\", \"min\": 394, \"median\": 395, \"max\": 396}"
        ));
        assert_eq!(
            read_medians(&json).unwrap(),
            [("null_syscall".to_owned(), 159), ("yield".to_owned(), 395)]
        );
    }

    #[test]
    fn reads_compact_json_and_rejects_broken() {
        let compact = r#"{"arch":"aarch64","iterations":5,"benchmarks":[{"median":7,"name":"a","unit":"instructions"},{"name":"b","median":9}]}"#;
        // `median` before `name` in the same object is not found by this reader: the
        // format [`to_json`] writes puts it after.
        assert!(read_medians(compact).is_err());
        let ordered = r#"{"benchmarks":[{"name":"a","median":7},{"name":"b","median":9}]}"#;
        assert_eq!(
            read_medians(ordered).unwrap(),
            [("a".to_owned(), 7), ("b".to_owned(), 9)]
        );
        assert!(read_medians(r#"{"benchmarks":[{"name":"a"}]}"#).is_err());
        assert!(read_medians(r#"{"benchmarks":[{"name":"a","median":"x"}]}"#).is_err());
    }

    #[test]
    fn table_shows_ratio_to_baseline() {
        let results = [sample("yield", 400), sample("spawn", 50)];
        let baseline = [("yield".to_owned(), 200)];
        let text = table(Arch::Aarch64, &results, Some(&baseline));
        let yield_row = text.lines().find(|line| line.starts_with("yield")).unwrap();
        assert!(yield_row.contains(" 2.00 "), "{yield_row}");
        let spawn_row = text.lines().find(|line| line.starts_with("spawn")).unwrap();
        assert!(spawn_row.contains(" - "), "{spawn_row}");
    }

    #[test]
    fn cross_cpu_benchmark_needs_two_cpus() {
        let name = "ipc_call_reply_cross_cpu";
        assert!(!expected(1).any(|known| known == name));
        assert!(expected(2).any(|known| known == name));
        assert!(expected(1).any(|known| known == "ipc_call_reply"));
        assert_eq!((smp_for(name, 1), smp_for(name, 4)), (2, 4));
        assert_eq!(smp_for("yield", 1), 1);
        assert!(!bench_qemu_args(1).iter().any(|arg| arg == "-accel"));
        assert!(
            bench_qemu_args(4)
                .join(" ")
                .contains("-accel tcg,thread=single")
        );
        // The note line is not a measurement.
        assert_eq!(
            parse_line(
                "bench: ipc_call_reply_cross_cpu needs 2 CPUs or more (this run has 1): not measured"
            ),
            None
        );
    }

    #[test]
    fn parses_lock_lines() {
        let line = "locks ipc_call_reply: 5.00 shared-lock acquisitions per round trip (ipc state: 2.00, scheduler: 3.00)";
        let (name, text) = parse_locks_line(line).unwrap();
        assert_eq!(name, "ipc_call_reply");
        assert!(text.starts_with("5.00 shared-lock"));
        assert_eq!(parse_locks_line("bench yield min=1 median=1 max=1"), None);
    }

    #[test]
    fn json_escapes_strings() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
