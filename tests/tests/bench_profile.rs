//! The bench program's profile mode, which `cargo xtask bench --profile` traces: with
//! `profile=on` a benchmark takes its few usual samples (`abi::bench::PROFILE_SAMPLES`) and
//! then runs its operation the iteration count of times in its profile loop, which it
//! reports; a benchmark the kernel measures has no loop; a bad `profile=` value is refused
//! before anything runs. One boot per architecture and case, under `-icount shift=0` as
//! `cargo xtask bench` runs it.
#![forbid(unsafe_code)]

use tests::{Arch, selected, workspace};
use xtask::bench::{bench_boot, parse_line};
use xtask::compile::KernelBuild;
use xtask::profile::{NO_LOOP, PROFILE_SAMPLES, profile_loop_operations};
use xtask::qemu::{Ending, Outcome};

fn boot(arch: Arch, cmdline: &str) -> Outcome {
    let options = bench_boot(
        &workspace(),
        arch,
        cmdline.to_owned(),
        "bench-profile-test",
        1,
        KernelBuild::Testing,
    );
    xtask::boot::boot(&workspace(), &options)
        .unwrap_or_else(|error| panic!("{arch}: the bench boot failed: {error}"))
}

fn profile_mode(arch: Arch) {
    if !selected(arch, &format!("bench profile mode on {arch}")) {
        return;
    }
    // Two benchmarks in one boot: `null_syscall` has a profile loop; `page_fault`, which
    // the kernel measures, has none and keeps its usual samples.
    let outcome = boot(arch, "test=bench iterations=37 profile=on");
    let all = || outcome.lines.join("\n");
    assert_eq!(outcome.ending, Ending::Exit(0), "{arch}:\n{}", all());
    let loops: Vec<u64> = outcome
        .lines
        .iter()
        .filter_map(|line| profile_loop_operations(line))
        .collect();
    // One loop of 37 calls for each benchmark the bench program measures, of one
    // operation each or of several (`yield` and `notify_wake` count two switches a call;
    // the cross-CPU one needs two CPUs and does not run here).
    assert!(
        !loops.is_empty(),
        "{arch}: no profile loop line:\n{}",
        all()
    );
    assert!(
        loops.iter().all(|&count| count > 0 && count % 37 == 0),
        "{arch}: {loops:?}"
    );
    assert!(loops.contains(&37), "{arch}: {loops:?}");
    let results: Vec<_> = outcome
        .lines
        .iter()
        .filter_map(|line| parse_line(line))
        .collect();
    let null = results
        .iter()
        .find(|result| result.name == "null_syscall")
        .unwrap_or_else(|| panic!("{arch}: no null_syscall line:\n{}", all()));
    assert_eq!(
        null.samples + null.discarded,
        PROFILE_SAMPLES,
        "{arch}: {null:?}"
    );
    let fault = results
        .iter()
        .find(|result| result.name == "page_fault")
        .unwrap_or_else(|| panic!("{arch}: no page_fault line:\n{}", all()));
    assert_eq!(fault.samples + fault.discarded, 37, "{arch}: {fault:?}");
    // Every benchmark that measured ran its loop: as many loop lines as bench lines of
    // the bench program (not the kernel's `spawn`, `page_fault` and `boot_to_user`, not
    // `timer_tick`).
    let looped = results
        .iter()
        .filter(|result| {
            !NO_LOOP.contains(&result.name.as_str()) && !result.name.starts_with("boot_to_")
        })
        .count();
    assert_eq!(loops.len(), looped, "{arch}:\n{}", all());
}

fn bad_value(arch: Arch) {
    if !selected(arch, &format!("bench profile= refused on {arch}")) {
        return;
    }
    let outcome = boot(arch, "test=bench iterations=5 profile=maybe");
    assert!(
        outcome
            .line_containing("not ok bench: profile=\"maybe\" is neither on nor off")
            .is_some(),
        "{arch}:\n{}",
        outcome.lines.join("\n")
    );
    assert!(
        !outcome.lines.iter().any(|line| parse_line(line).is_some()),
        "{arch}: a benchmark ran"
    );
    assert_ne!(outcome.ending, Ending::Exit(0), "{arch}");
}

#[test]
fn bench_profile_mode_x86_64() {
    profile_mode(Arch::X86_64);
    bad_value(Arch::X86_64);
}

#[test]
fn bench_profile_mode_aarch64() {
    profile_mode(Arch::Aarch64);
    bad_value(Arch::Aarch64);
}
