//! `cargo xtask bench --smp N`: the cross-CPU IPC benchmark on two CPUs (both CPUs in the
//! kernel, client and server on different CPUs, a line with exact, repeatable instruction
//! counts for the work of both), the line saying it cannot run on one CPU, and the
//! lock-checking build's count of lock acquisitions per round trip (every one of four CPUs
//! in the kernel). Each boot runs only that benchmark with a few
//! iterations, under `-icount shift=0` as `cargo xtask bench` runs it.
#![forbid(unsafe_code)]

use tests::{Arch, selected, workspace};
use xtask::bench::{self, parse_line, parse_locks_line};
use xtask::compile::KernelBuild;
use xtask::qemu::{Ending, Outcome};

const NAME: &str = "ipc_call_reply_cross_cpu";

fn run(arch: Arch, smp: u32, kernel: KernelBuild) -> Outcome {
    let outcome = bench::run_one(&workspace(), arch, 10, smp, NAME, kernel)
        .unwrap_or_else(|error| panic!("{arch}: the bench boot failed: {error}"));
    assert_eq!(
        outcome.ending,
        Ending::Exit(0),
        "{arch}: the bench scenario failed:\n{}",
        outcome.lines.join("\n")
    );
    outcome
}

/// The boot log says all `cpus` CPUs arrived in the kernel and are online.
fn arrived(arch: Arch, outcome: &Outcome, cpus: u32) {
    for line in [
        format!("smp: {cpus} of {cpus} CPUs arrived"),
        format!("smp: {cpus} CPUs online"),
    ] {
        assert!(
            outcome.line_containing(&line).is_some(),
            "{arch}: no `{line}` line:\n{}",
            outcome.lines.join("\n")
        );
    }
}

fn cross_cpu(arch: Arch) {
    if !selected(arch, &format!("bench cross-cpu on {arch}")) {
        return;
    }
    // Two CPUs: both reached the kernel (the boot CPU's bounded wait for the secondary
    // ended by its arrival, under single-threaded TCG too), the client and the server
    // report different CPUs, and the counts are sane.
    let outcome = run(arch, 2, KernelBuild::Testing);
    arrived(arch, &outcome, 2);
    let placed = outcome
        .line_containing(&format!("bench: {NAME}: client on cpu "))
        .unwrap_or_else(|| panic!("{arch}: no placement line"));
    let cpus: Vec<u64> = placed
        .split("cpu ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(cpus.len() == 2 && cpus[0] != cpus[1], "{arch}: {placed}");
    let line = outcome
        .lines
        .iter()
        .filter_map(|line| parse_line(line))
        .find(|result| result.name == NAME)
        .unwrap_or_else(|| panic!("{arch}: no `bench {NAME} …` line"));
    assert_eq!(line.samples, 10, "{arch}: {line:?}");
    assert!(
        line.min <= line.median && line.median <= line.max,
        "{arch}: {line:?}"
    );
    // A round trip on two CPUs: more than the single-CPU fast path (~700-850), far less
    // than a timer tick's worth of instructions.
    assert!(
        (1000..20_000).contains(&line.median),
        "{arch}: median {} out of range",
        line.median
    );
    // Each side switches from its thread to the idle thread and back: four switches.
    let switches = line
        .events
        .iter()
        .find(|(key, _)| key == "switches")
        .map(|(_, value)| value.as_str());
    assert_eq!(switches, Some("4.00"), "{arch}: {line:?}");
    for other in ["ipc_call_reply", "yield", "spawn"] {
        assert!(
            outcome
                .line_containing(&format!("bench {other} "))
                .is_none(),
            "{arch}: {other} ran too"
        );
    }
    // The same boot repeated gives the same count: the clock counts instructions (exactly
    // on x86_64; on AArch64 it steps by 16 over a sample of 16 round trips: ±1).
    let again = run(arch, 2, KernelBuild::Testing);
    let repeated = again
        .lines
        .iter()
        .filter_map(|line| parse_line(line))
        .find(|result| result.name == NAME)
        .unwrap_or_else(|| panic!("{arch}: no `bench {NAME} …` line the second time"));
    let tolerance = match arch {
        Arch::X86_64 => 0,
        Arch::Aarch64 => 1,
    };
    assert!(
        repeated.median.abs_diff(line.median) <= tolerance,
        "{arch}: not repeatable: {} then {}",
        line.median,
        repeated.median
    );

    // One CPU: a line says it cannot run, and no measurement.
    let single = run(arch, 1, KernelBuild::Testing);
    assert!(
        single
            .line_containing(&format!(
                "bench: {NAME} needs 2 CPUs or more (this run has 1)"
            ))
            .is_some(),
        "{arch}: no needs-2-CPUs line"
    );
    assert!(single.line_containing(&format!("bench {NAME} ")).is_none());

    // The lock-checking build on four CPUs counts the shared-lock acquisitions per round
    // trip; the timed build above printed no such line.
    assert!(outcome.line_containing("locks ").is_none());
    let checked = run(arch, 4, KernelBuild::Checked);
    arrived(arch, &checked, 4);
    let (name, text) = checked
        .lines
        .iter()
        .find_map(|line| parse_locks_line(line))
        .unwrap_or_else(|| panic!("{arch}: no `locks …` line"));
    assert_eq!(name, NAME);
    let total: f64 = text
        .split_ascii_whitespace()
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{arch}: {text}"));
    assert!(
        (2.0..100.0).contains(&total),
        "{arch}: {total} acquisitions per round trip: {text}"
    );
    for lock in ["scheduler: ", "capability table: "] {
        assert!(text.contains(lock), "{arch}: no {lock}in {text}");
    }
}

#[test]
fn bench_cross_cpu_x86_64() {
    cross_cpu(Arch::X86_64);
}

#[test]
fn bench_cross_cpu_aarch64() {
    cross_cpu(Arch::Aarch64);
}
