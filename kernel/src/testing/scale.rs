//! Scenario `scale`: the `scaletest` boot module (user/scaletest) as the root process —
//! 10,000 threads alive at once in one process, then 1,000 processes alive at once, each
//! torn down with the frames back at their baseline (tests/tests/scale.rs says what each
//! proves). Needs memory for them: `--mem 1G`.
//!
//! The user program prints one `ok`/`not ok` line per test and exits with
//! `passed << 16 | failed`; this thread prints the one summary line.

use crate::println;
use crate::testing::ktest::Suite;
use crate::time::TIMER_HZ;

/// Ticks the tests may take together before the scenario gives up (a hang guard only).
const PATIENCE_SECONDS: u64 = 1200;

/// The scenario's thread: start `scaletest` with its two capabilities (slot 0 its own
/// image, `READ MAP GRANT`, to spawn children; slot 1 the system-information capability,
/// `READ GRANT`), wait for its ending, print the summary.
pub fn run(_: usize) {
    let mut suite = Suite::new();
    let patience = PATIENCE_SECONDS * u64::from(TIMER_HZ);
    crate::testing::root::run(&mut suite, "scale", "scaletest", 0, patience);
    println!("scale: done");
    suite.finish()
}
