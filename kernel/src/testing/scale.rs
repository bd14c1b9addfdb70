//! Scenario `scale`: the `scaletest` boot module (user/scaletest) as the root process —
//! 10,000 threads alive at once in one process, then 1,000 processes alive at once, each
//! torn down with the frames back at their baseline (tests/tests/scale.rs says what each
//! proves). Needs memory for them: `--mem 1G`.
//!
//! The user program prints one `ok`/`not ok` line per test and exits with
//! `passed << 16 | failed`; this thread prints the one summary line.

use crate::obj::process::Ending;
use crate::obj::{MemoryRegion, Object};
use crate::task::sched;
use crate::testing::ktest::Suite;
use crate::time::{self, TIMER_HZ};
use crate::{println, proc};

/// Ticks the tests may take together before the scenario gives up (a hang guard only).
const PATIENCE_SECONDS: u64 = 1200;

/// The scenario's thread: start `scaletest` with its two capabilities (slot 0 its own
/// image, `READ MAP GRANT`, to spawn children; slot 1 the system-information capability,
/// `READ GRANT`), wait for its ending, print the summary.
pub fn run(_: usize) {
    let mut suite = Suite::new();
    let (Some(file), Some(image)) = (
        crate::boot::module("scaletest"),
        MemoryRegion::boot_module("scaletest"),
    ) else {
        suite.check("scale scaletest loaded", Err("no scaletest boot module"));
        suite.finish()
    };
    let Ok((process, thread)) =
        proc::spawn_at("scaletest", file, 0, sched::NORMAL, proc::root_budget())
    else {
        suite.check("scale scaletest loaded", Err("cannot load scaletest"));
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
            "scale scaletest capabilities installed",
            Err("an insert failed"),
        );
        suite.finish()
    }
    let deadline = time::ticks() + PATIENCE_SECONDS * u64::from(TIMER_HZ);
    while process.live_threads() > 0 && time::ticks() < deadline {
        sched::sleep(10);
    }
    let ending = if process.live_threads() > 0 {
        Ending::Running
    } else {
        process.ending()
    };
    match ending {
        // why: scaletest encodes `passed << 16 | failed`.
        Ending::Exited(code) if code >= 0 => suite.add((code >> 16) as u32, (code & 0xffff) as u32),
        Ending::Running => {
            proc::kill(&process);
            suite.check("scale scaletest ran to its end", Err("timed out"));
        }
        _ => suite.check(
            "scale scaletest ran to its end",
            Err("it died or exited badly"),
        ),
    }
    println!("scale: done");
    suite.finish()
}
