//! Scenario `containment`: the whole system under `init`'s containment manifest —
//! `console`, `names`, the test server `echo`, and `crashtest`, which kills each server
//! three times at random moments while three client threads call all of them. `init`
//! restarts every server; the clients see `PeerDied`, look `echo` up again and carry on;
//! no answer is wrong; the kernel reports no panic or fatal trap. One boot per
//! architecture.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, boot, expect_ending, expect_line, number_after, options, selected};

fn containment(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("containment on {arch} with {cpus} CPUs")) {
        return;
    }
    let mut options = options(arch, &format!("containment-smp{cpus}"), "test=containment");
    options.qemu.smp = cpus;
    let outcome = boot(&options);
    // The kills go console, names, echo, three times over. Kernel log lines reach the
    // serial port through the console server, so the line printed just before the
    // console's own kill can die with it, still unwritten: that is `echo`'s first and
    // second line. The summary below counts every kill and restart.
    for (victim, least) in [("console", 3), ("names", 3), ("echo", 1)] {
        let restarts = outcome
            .lines
            .iter()
            .filter(|line| {
                line.contains(&format!("containment: {victim} (pid ")) && line.contains("restarted")
            })
            .count();
        assert!(
            (least..=3).contains(&restarts),
            "{victim} was reported killed and restarted {restarts} times, not 3"
        );
    }
    let (_, figures) = expect_line(&outcome, "containment: kills ");
    assert_eq!(number_after(figures, "kills "), Some(9), "{figures}");
    assert_eq!(number_after(figures, "restarts "), Some(9), "{figures}");
    assert_eq!(
        number_after(figures, "wrong answers "),
        Some(0),
        "{figures}"
    );
    assert!(
        number_after(figures, "calls ").is_some_and(|calls| calls > 27),
        "{figures}"
    );
    expect_line(&outcome, "ok containment: every killed server restarted");
    for bad in ["KERNEL PANIC", "not ok", "fatal"] {
        assert!(
            outcome.line_containing(bad).is_none(),
            "the run printed {bad:?}"
        );
    }
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn containment_x86_64() {
    containment(Arch::X86_64, tests::default_cpus());
}

#[test]
fn containment_aarch64() {
    containment(Arch::Aarch64, tests::default_cpus());
}
