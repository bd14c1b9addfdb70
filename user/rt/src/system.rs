//! The system-information capability (`system_info`): the kernel's summary record, and the
//! frame counts the tests that check for leaks compare.

use abi::{Handle, sysinfo};

use crate::proc;

/// The kernel's summary record through `system`.
pub fn summary(system: Handle) -> Result<[u64; sysinfo::summary::WORDS], &'static str> {
    let mut words = [0u64; sysinfo::summary::WORDS];
    match proc::system_info(system, sysinfo::SUMMARY, 0, &mut words) {
        Ok(count) if count == words.len() => Ok(words),
        _ => Err("system_info failed"),
    }
}

/// Timer ticks since boot (0 when `system` cannot be read).
pub fn ticks(system: Handle) -> u64 {
    summary(system).map_or(0, |words| words[sysinfo::summary::TICKS])
}

/// The frames a leak check compares: free frames plus those the kernel heap holds (it
/// keeps what it grew by).
pub fn frames(system: Handle) -> Result<u64, &'static str> {
    let words = summary(system)?;
    Ok(words[sysinfo::summary::FREE_FRAMES] + words[sysinfo::summary::HEAP_FRAMES])
}

/// [`frames`] once it has not changed for `steady` ticks in a row (threads and processes
/// that ended are torn down afterwards), at most `patience` ticks.
pub fn frames_steady(system: Handle, steady: u64, patience: u64) -> Result<u64, &'static str> {
    let start = ticks(system);
    let mut last = frames(system)?;
    let mut unchanged = 0;
    while unchanged < steady && ticks(system).wrapping_sub(start) < patience {
        let _ = proc::sleep(1);
        let now = frames(system)?;
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

/// Sleep a tick at a time until [`frames`] is `baseline`, at most `patience` ticks; the
/// last count seen.
pub fn frames_settle(system: Handle, baseline: u64, patience: u64) -> Result<u64, &'static str> {
    let start = ticks(system);
    loop {
        let now = frames(system)?;
        if now == baseline || ticks(system).wrapping_sub(start) > patience {
            return Ok(now);
        }
        let _ = proc::sleep(1);
    }
}
