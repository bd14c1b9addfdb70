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
use crate::println;
use crate::testing::ktest::Suite;
use crate::time::TIMER_HZ;

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
    let seconds = (argument >> 8) & 0xffff;
    let runs = (argument >> 24) & 0xff;
    let patience = (seconds * runs + FIXED_PATIENCE_SECONDS) * u64::from(TIMER_HZ);
    crate::testing::root::run(&mut suite, "smp", "smptest", argument, patience);
    println!("smp-user: done");
    suite.finish()
}
