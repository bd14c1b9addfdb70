//! Scenario `scale` (kernel/src/testing/scale.rs, user/scaletest) with 1 GiB of memory,
//! one boot per architecture:
//!
//! 1. 10,000 threads made with `thread_create` in one process, alive at once, each run at
//!    least once (each counts itself, then blocks); the process killed; twice, and after
//!    the second round the free frames (plus the kernel heap's) back exactly where the
//!    first left them (which kept at most the kernel-stack region's page tables).
//! 2. 1,000 processes alive at once (each called in and waits), then all exited, the frames
//!    back exactly at their baseline.
#![forbid(unsafe_code)]

use std::time::Duration;

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

const EXPECTED: &[&str] = &[
    "ok scale 10000 threads alive at once in one process, each ran, all killed (twice): frames back at the baseline",
    "ok scale 1000 processes alive at once, all exited: frames back at the baseline",
];

fn scale(arch: Arch) {
    if !selected(arch, &format!("scale tests on {arch}")) {
        return;
    }
    let mut options = options(arch, "scale", "test=scale");
    options.qemu.mem = "1G".into();
    options.qemu.timeout = Some(Duration::from_secs(900));
    let outcome = boot(&options);
    expect_no_failed_test(&outcome);
    for expected in EXPECTED {
        let (_, line) = expect_line(&outcome, expected);
        assert_eq!(line.trim_end(), *expected);
    }
    // The figures behind the lines: every thread ran and was alive at once.
    let (_, threads) = expect_line(&outcome, "scaletest: threads: 10000 made, ");
    assert!(
        threads.contains("10000 ran, 10001 alive in this process"),
        "{threads:?}"
    );
    let (_, processes) = expect_line(&outcome, "scaletest: processes: 1000 spawned, ");
    assert!(processes.contains("1000 called in"), "{processes:?}");
    for figures in ["scaletest: threads: frames", "scaletest: processes: frames"] {
        let (_, frames) = expect_line(&outcome, figures);
        let counts: Vec<&str> = frames.trim_end().rsplit(' ').take(3).collect();
        assert_eq!(counts[0], counts[2].trim_end_matches(','), "{frames:?}");
    }
    assert_eq!(
        tests::summary_line(&outcome),
        format!("{} passed, 0 failed", EXPECTED.len())
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn scale_x86_64() {
    scale(Arch::X86_64);
}

#[test]
fn scale_aarch64() {
    scale(Arch::Aarch64);
}
