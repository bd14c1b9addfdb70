//! Scenario `smp-user`: the `smptest` boot module (user/smptest) as the root process of a
//! machine with several CPUs — IPC between pinned processes, pinned spinning threads, a
//! cross-CPU kill, processes created and destroyed on every CPU, an unmap racing a reader
//! on another CPU, and the stress run (tests/tests/smp_user.rs says what each proves).
//!
//! Command line: `stress=S` (seconds of guest time, counted in timer ticks, per stress
//! run; default [`DEFAULT_STRESS_SECONDS`]) and `runs=R` (stress runs one after another,
//! default [`DEFAULT_RUNS`]). The user program prints one `ok`/`not ok` line per test and
//! exits with `passed << 16 | failed`; this thread prints the one summary line.

use crate::boot::BootInfo;
use crate::obj::process::Ending;
use crate::obj::{MemoryRegion, Object};
use crate::task::sched;
use crate::testing::ktest::Suite;
use crate::time::{self, TIMER_HZ};
use crate::{println, proc};

/// Seconds of one stress run without `stress=`.
pub const DEFAULT_STRESS_SECONDS: u64 = 60;
/// Stress runs without `runs=`.
pub const DEFAULT_RUNS: u64 = 3;
/// Bounds of the command line's numbers (they travel in 16 and 8 bits of the argument).
const MAX_STRESS_SECONDS: u64 = 600;
const MAX_RUNS: u64 = 10;
/// Ticks the tests other than the stress runs may take together before the scenario
/// gives up (a hang guard only).
const FIXED_PATIENCE_SECONDS: u64 = 900;

/// The argument of the root `smptest` process: mode 0 (the root), the stress seconds in
/// bits 8..24 and the runs in bits 24..32 (user/smptest's layout).
pub fn configure(boot: &BootInfo) -> usize {
    let number = |key: &str, default: u64, max: u64| {
        boot.cmdline
            .get(key)
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(default)
            .clamp(1, max)
    };
    let seconds = number("stress", DEFAULT_STRESS_SECONDS, MAX_STRESS_SECONDS);
    let runs = number("runs", DEFAULT_RUNS, MAX_RUNS);
    // why: both fit (clamped above); `usize` is 64 bits on both targets.
    (seconds << 8 | runs << 24) as usize
}

/// The scenario's thread: start `smptest` with its two capabilities (slot 0 its own image,
/// `READ MAP GRANT`, to spawn children; slot 1 the system-information capability,
/// `READ GRANT`, for ticks and free frames), wait for its ending, print the summary.
pub fn run(argument: usize) {
    let mut suite = Suite::new();
    let argument = argument as u64;
    let (Some(file), Some(image)) = (
        crate::boot::module("smptest"),
        MemoryRegion::boot_module("smptest"),
    ) else {
        suite.check("smp smptest loaded", Err("no smptest boot module"));
        suite.finish()
    };
    let Ok((process, thread)) = proc::spawn_at(
        "smptest",
        file,
        argument,
        sched::NORMAL,
        proc::root_budget(),
    ) else {
        suite.check("smp smptest loaded", Err("cannot load smptest"));
        suite.finish()
    };
    // The first thread has not started: these fill slots 0 and 1 of its empty table.
    let installed = process
        .caps
        .insert(
            Object::Memory(image),
            abi::Rights::READ | abi::Rights::MAP | abi::Rights::GRANT,
        )
        .and_then(|_| {
            process
                .caps
                .insert(Object::System, abi::Rights::READ | abi::Rights::GRANT)
        });
    sched::start_thread(thread);
    if installed.is_err() {
        proc::kill(&process);
        suite.check(
            "smp smptest capabilities installed",
            Err("an insert failed"),
        );
        suite.finish()
    }
    let seconds = (argument >> 8) & 0xffff;
    let runs = (argument >> 24) & 0xff;
    let patience = (seconds * runs + FIXED_PATIENCE_SECONDS) * u64::from(TIMER_HZ);
    let deadline = time::ticks() + patience;
    // Its other threads exit or fault (which `ending` records too): the root's own exit,
    // its last thread's, carries the counts.
    while process.live_threads() > 0 && time::ticks() < deadline {
        sched::sleep(10);
    }
    let ending = if process.live_threads() > 0 {
        Ending::Running
    } else {
        process.ending()
    };
    match ending {
        // why: smptest encodes `passed << 16 | failed`.
        Ending::Exited(code) if code >= 0 => suite.add((code >> 16) as u32, (code & 0xffff) as u32),
        Ending::Running => {
            proc::kill(&process);
            suite.check("smp smptest ran to its end", Err("timed out"));
        }
        _ => suite.check("smp smptest ran to its end", Err("it died or exited badly")),
    }
    println!("smp-user: done");
    suite.finish()
}
