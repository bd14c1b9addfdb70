//! Scenario `smp-user` (kernel/src/testing/smp_user.rs, user/smptest) with four CPUs, one
//! boot per architecture running, one after another so that none disturbs another:
//!
//! 1. IPC ping-pong between two processes pinned to CPUs 0 and 1: 10,000 round trips with
//!    checksummed payloads, each side checking its CPU with `cpu_current`.
//! 2. Four spinning threads pinned to CPUs 0–3 all make progress, round after round.
//! 3. The spinner on CPU 2 killed from CPU 0: its counter is frozen once `thread_kill`
//!    returns (the kernel's kill waits until the victim has left user mode).
//! 4. 1,000 processes created and destroyed by spawners pinned to CPUs 0–3: the free
//!    frames (plus the kernel heap's) come back exactly.
//! 5. `memory_unmap` on CPU 0 of a page a thread on CPU 1 reads in a loop: once the call
//!    returns the reader's sequence number moves by at most the read in flight (CPU 1's
//!    translation is gone: the TLB shootdown), and the reader dies of a page fault at that
//!    address, which the kernel reports.
//! 6. The stress run, three times: 8 threads in 4 processes doing random checked IPC,
//!    map/unmap, yields, sleeps, migrations and thread create/kill for 60 s of guest time
//!    (timer ticks), then every process ends and the frames are back at their baseline.
//!    Each run prints its figures (operations per kind, frames before and after).
#![forbid(unsafe_code)]

use std::time::Duration;

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

/// The stress runs of the boot and the guest seconds of each.
const RUNS: u32 = 3;
const SECONDS: u32 = 60;

const EXPECTED: &[&str] = &[
    "ok smp ipc ping-pong between processes pinned to CPUs 0 and 1 (10000 round trips, payload checksums)",
    "ok smp four spinning threads pinned to CPUs 0-3 all make progress",
    "ok smp thread on CPU 2 killed from CPU 0: its counter freezes once thread_kill returns while CPUs 1 and 3 spin on",
    "ok smp 1000 processes created and destroyed by spawners pinned to CPUs 0-3 return every frame",
    "ok smp memory_unmap on CPU 0 under a reader on CPU 1: the reader stops by the time the call returns and dies of the fault",
];

/// The page the unmap test's reader reads (user/smptest `VICTIM`).
const VICTIM: &str = "page fault (read) at 0x500000000000";
/// Unmap rounds of that test (user/smptest `UNMAP_ROUNDS`).
const UNMAP_ROUNDS: usize = 5;

fn smp_user(arch: Arch) {
    if !selected(arch, &format!("smp user tests on {arch}")) {
        return;
    }
    let mut options = options(
        arch,
        "smp-user",
        &format!("test=smp-user stress={SECONDS} runs={RUNS}"),
    );
    options.qemu.smp = 4;
    // The stress runs alone take 3 × 60 s of guest time.
    options.qemu.timeout = Some(Duration::from_secs(1200));
    let outcome = boot(&options);
    let (_, arrived) = expect_line(&outcome, "smp: ");
    assert_eq!(arrived.trim_end(), "smp: 4 of 4 CPUs arrived");
    expect_no_failed_test(&outcome);
    for expected in EXPECTED {
        let (_, line) = expect_line(&outcome, expected);
        assert_eq!(line.trim_end(), *expected);
    }
    // Each unmap round's reader died of a fault at the unmapped page, reported by name.
    let faults = outcome
        .lines
        .iter()
        .filter(|line| {
            line.contains("keel: user fault in process smptest")
                && line.contains(VICTIM)
                && line.contains("thread killed")
        })
        .count();
    assert_eq!(faults, UNMAP_ROUNDS, "one fault report per unmap round");
    for run in 1..=RUNS {
        let expected = format!(
            "ok smp stress run {run} of {RUNS} (8 threads in 4 processes, {SECONDS} s of ticks): every check held, every process ended, frames back at the baseline"
        );
        let (_, line) = expect_line(&outcome, &expected);
        assert_eq!(line.trim_end(), expected);
        let (_, figures) = expect_line(
            &outcome,
            &format!("smptest: stress run {run}: total calls "),
        );
        assert!(figures.contains(", errors 0"), "{figures:?}");
        let (_, frames) = expect_line(
            &outcome,
            &format!("smptest: stress run {run}: frames (free + kernel heap) before "),
        );
        let counts: Vec<&str> = frames.trim_end().rsplit(' ').take(3).collect();
        assert_eq!(counts[0], counts[2].trim_end_matches(','), "{frames:?}");
    }
    let summary = tests::summary_line(&outcome);
    assert_eq!(
        summary,
        format!("{} passed, 0 failed", EXPECTED.len() + RUNS as usize)
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn smp_user_x86_64() {
    smp_user(Arch::X86_64);
}

#[test]
fn smp_user_aarch64() {
    smp_user(Arch::Aarch64);
}
