//! A user program as the root process of a scenario (`scale`, `smp-user`): it gets its own
//! image and the system-information capability, runs its tests, prints one `ok`/`not ok`
//! line per test and exits with `passed << 16 | failed`, which the scenario's summary adds.

use crate::obj::process::Ending;
use crate::obj::{MemoryRegion, Object};
use crate::proc;
use crate::task::sched;
use crate::testing::ktest::Suite;
use crate::time;

/// Start boot module `name` with `argument` and its two capabilities (slot 0 its own
/// image, `READ MAP GRANT`, to spawn children; slot 1 the system-information capability,
/// `READ GRANT`), wait until its last thread has ended (at most `patience_ticks`) and add
/// the counts its exit code carries to `suite`. `label` names the scenario in the checks
/// of what went wrong (`<label> <name> loaded`, `… ran to its end`).
pub fn run(suite: &mut Suite, label: &str, name: &'static str, argument: u64, patience_ticks: u64) {
    let (Some(file), Some(image)) = (crate::boot::module(name), MemoryRegion::boot_module(name))
    else {
        suite.check(
            &alloc::format!("{label} {name} loaded"),
            Err("no such boot module"),
        );
        return;
    };
    let Ok((process, thread)) =
        proc::spawn_at(name, file, argument, sched::NORMAL, proc::root_budget())
    else {
        suite.check(
            &alloc::format!("{label} {name} loaded"),
            Err("cannot load it"),
        );
        return;
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
            &alloc::format!("{label} {name} capabilities installed"),
            Err("an insert failed"),
        );
        return;
    }
    let deadline = time::ticks() + patience_ticks;
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
    let ran = alloc::format!("{label} {name} ran to its end");
    match ending {
        // why: the program encodes `passed << 16 | failed`.
        Ending::Exited(code) if code >= 0 => suite.add((code >> 16) as u32, (code & 0xffff) as u32),
        Ending::Running => {
            proc::kill(&process);
            suite.check(&ran, Err("timed out"));
        }
        _ => suite.check(&ran, Err("it died or exited badly")),
    }
}
