//! Secondary CPUs (DESIGN.md §4): the loader starts them from the Limine MP request and
//! parks them; the kernel sends each to its entry, which gives it its per-CPU state and
//! an idle loop with interrupts on. Per architecture: scenario `boot` with four CPUs, with
//! one, and with ten (two beyond the kernel's maximum, left parked); scenario `smp` with
//! four (IPIs, the per-CPU blocks, TLB shootdown; GICv2 too on AArch64); scenario
//! `smp-panic` with four (two secondaries panic at once: one report, then silence, exit
//! code 2); scenario `smp-overflow` with four (a secondary overflows its stack: one
//! fatal-trap report, then silence, exit code 2).
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, Serial, boot, expect_ending, expect_line, expect_no_failed_test, options,
    selected,
};

fn boot_with(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("smp test with {cpus} CPUs on {arch}")) {
        return;
    }
    let mut options = options(arch, &format!("smp-{cpus}"), "test=boot");
    options.qemu.smp = cpus;
    let outcome = boot(&options);
    let mut serial = Serial::new(&outcome);

    let line = serial.expect("cpus: ");
    assert!(
        line.starts_with(&format!("cpus: {cpus} (bsp 0x")),
        "expected {cpus} CPUs and the boot CPU's id: {line:?}"
    );
    let arrived = serial.expect("smp: ");
    assert_eq!(
        arrived.trim_end(),
        format!("smp: {cpus} of {cpus} CPUs arrived"),
        "not every CPU reached the kernel"
    );
    let online = serial.expect("smp: ");
    assert!(
        online.starts_with(&format!("smp: {cpus} CPUs online")),
        "not every CPU came online: {online:?}"
    );
    serial.expect("ok timer ticks");
    expect_ending(&outcome, &Ending::Exit(0));
}

/// Scenario `boot` with ten CPUs, two more than the kernel's `MAX_CPUS` (8): those two are
/// moved onto the kernel's tables and parked with a line each, the other eight come online.
fn boot_beyond_max(arch: Arch) {
    if !selected(arch, &format!("smp test with 10 CPUs on {arch}")) {
        return;
    }
    let mut options = options(arch, "smp-10", "test=boot");
    options.qemu.smp = 10;
    let outcome = boot(&options);
    let mut serial = Serial::new(&outcome);
    serial.expect("cpus: 10 (bsp 0x");
    for _ in 0..2 {
        let line = serial.expect("smp: cpu ");
        assert!(
            line.ends_with("is beyond the kernel's 8 CPUs; left parked"),
            "{line:?}"
        );
    }
    serial.expect("smp: 10 of 10 CPUs arrived");
    serial.expect("smp: 8 CPUs online (at most 8)");
    serial.expect("ok timer ticks");
    expect_ending(&outcome, &Ending::Exit(0));
}

/// Scenario `smp` on four CPUs: every line passes, each secondary answered the
/// reschedule IPI with the index its per-CPU block holds and its hardware id, and each
/// secondary's timer ticks advanced while it idled.
fn smp_scenario(arch: Arch, gic: Option<u8>) {
    let name = match gic {
        Some(version) => format!("smp scenario with GICv{version} on {arch}"),
        None => format!("smp scenario on {arch}"),
    };
    if !selected(arch, &name) {
        return;
    }
    let image = match gic {
        Some(version) => format!("smp-scenario-gicv{version}"),
        None => "smp-scenario".to_owned(),
    };
    let mut options = options(arch, &image, "test=smp");
    options.qemu.smp = 4;
    if let Some(version) = gic {
        options.qemu.gic = version;
    }
    let outcome = boot(&options);
    expect_no_failed_test(&outcome);
    let mut serial = Serial::new(&outcome);
    serial.expect("ok smp 3 secondary CPUs online");
    serial.expect("ok smp boot cpu index 0 through its per-CPU block");
    for cpu in 1..=3 {
        serial.expect(&format!("smp: cpu {cpu} awake"));
        serial.expect(&format!(
            "ok smp reschedule ipi to cpu {cpu} counted in its per-CPU block"
        ));
        serial.expect(&format!(
            "ok smp cpu {cpu} reads index {cpu} through its per-CPU block"
        ));
        serial.expect(&format!("ok smp tlb shootdown to cpu {cpu} acknowledged"));
        serial.expect(&format!(
            "ok smp cpu {cpu} reads a remapped page after a tlb shootdown"
        ));
    }
    // Each secondary's local timer ticks while it idles (counted in its per-CPU block).
    for cpu in 1..=3 {
        serial.expect(&format!(
            "ok smp cpu {cpu} timer ticks advance while it idles"
        ));
    }
    serial.expect("ok smp tlb shootdown to all 3 other CPUs acknowledged");
    serial.expect("18 passed, 0 failed");
    expect_ending(&outcome, &Ending::Exit(0));
}

/// Scenario `smp-panic` on four CPUs: secondaries 1 and 2 panic at once. Exactly one
/// report, from one of them, and nothing after it: no second report, no line of the boot
/// CPU (which prints on every tick until it is stopped) or of anyone else.
fn smp_panic(arch: Arch) {
    if !selected(arch, &format!("smp-panic on {arch}")) {
        return;
    }
    let mut options = options(arch, "smp-panic", "test=smp-panic");
    options.qemu.smp = 4;
    let outcome = boot(&options);
    let reports = outcome
        .lines
        .iter()
        .filter(|line| line.contains("KERNEL PANIC"))
        .count();
    assert_eq!(
        reports,
        1,
        "expected one panic report:\n{}",
        outcome.lines.join("\n")
    );
    let (start, line) = expect_line(&outcome, "KERNEL PANIC: ");
    assert!(
        line.starts_with("KERNEL PANIC: deliberate panic on cpu 1 (scenario smp-panic)")
            || line.starts_with("KERNEL PANIC: deliberate panic on cpu 2 (scenario smp-panic)"),
        "{line:?}"
    );
    let cpu = if line.contains("on cpu 1") { 1 } else { 2 };
    let mut serial = Serial::new(&outcome);
    serial.expect("KERNEL PANIC: ");
    serial.expect(&format!(
        "panic in thread (secondary idle) (id 0) on cpu {cpu}"
    ));
    serial.expect("backtrace");
    let (end, _) = expect_line(&outcome, "keel: kernel panic; powering off (exit code 2)");
    // Between the report's first and last line only the report: its own lines and the
    // backtrace's frames.
    for text in &outcome.lines[start + 1..end] {
        let text = text.trim();
        assert!(
            text.starts_with("panic in thread ")
                || text.starts_with("backtrace")
                || text.starts_with('#')
                || text.starts_with("(end"),
            "a line inside the panic report: {text:?}\n{}",
            outcome.lines.join("\n")
        );
    }
    // After the report only the xtask's own lines.
    for text in &outcome.lines[end + 1..] {
        assert!(
            text.trim().is_empty() || text.starts_with("xtask: "),
            "a line after the panic report: {text:?}\n{}",
            outcome.lines.join("\n")
        );
    }
    expect_ending(&outcome, &Ending::Exit(2));
}

/// Scenario `smp-overflow` on four CPUs: secondary 1 recurses into the guard page of its
/// idle stack. The arch crate reports the overflow on that CPU (x86_64: a double fault on
/// its own guarded IST stack; AArch64: its overflow stack) after the core stopped the
/// others: one report, and no line of the boot CPU (one per tick until it is stopped)
/// after it.
fn smp_overflow(arch: Arch) {
    if !selected(arch, &format!("smp-overflow on {arch}")) {
        return;
    }
    let mut options = options(arch, "smp-overflow", "test=smp-overflow");
    options.qemu.smp = 4;
    let outcome = boot(&options);
    let reports: Vec<usize> = outcome
        .lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("kernel stack overflow in thread"))
        .map(|(index, _)| index)
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "expected one overflow report:\n{}",
        outcome.lines.join("\n")
    );
    assert!(
        outcome.lines[reports[0]..]
            .iter()
            .any(|line| line.contains("::recurse (kernel/src/")),
        "no report line names the recursing function:\n{}",
        outcome.lines.join("\n")
    );
    for text in &outcome.lines[reports[0] + 1..] {
        assert!(
            !text.contains("smp-panic:")
                && !text.contains("smp: ")
                && !text.contains("KERNEL")
                && !text.contains("ok "),
            "a line of another CPU after the report: {text:?}\n{}",
            outcome.lines.join("\n")
        );
    }
    expect_ending(&outcome, &Ending::Exit(2));
}

#[test]
fn smp_overflow_x86_64() {
    smp_overflow(Arch::X86_64);
}

#[test]
fn smp_overflow_aarch64() {
    smp_overflow(Arch::Aarch64);
}

#[test]
fn smp_ten_cpus_x86_64() {
    boot_beyond_max(Arch::X86_64);
}

#[test]
fn smp_ten_cpus_aarch64() {
    boot_beyond_max(Arch::Aarch64);
}

#[test]
fn smp_scenario_x86_64() {
    smp_scenario(Arch::X86_64, None);
}

#[test]
fn smp_scenario_aarch64() {
    smp_scenario(Arch::Aarch64, None);
}

#[test]
fn smp_scenario_aarch64_gicv2() {
    smp_scenario(Arch::Aarch64, Some(2));
}

#[test]
fn smp_panic_x86_64() {
    smp_panic(Arch::X86_64);
}

#[test]
fn smp_panic_aarch64() {
    smp_panic(Arch::Aarch64);
}

#[test]
fn smp_four_cpus_x86_64() {
    boot_with(Arch::X86_64, 4);
}

#[test]
fn smp_one_cpu_x86_64() {
    boot_with(Arch::X86_64, 1);
}

#[test]
fn smp_four_cpus_aarch64() {
    boot_with(Arch::Aarch64, 4);
}

#[test]
fn smp_one_cpu_aarch64() {
    boot_with(Arch::Aarch64, 1);
}
