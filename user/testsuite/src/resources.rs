//! Resource exhaustion from user space: what a process with few capabilities can make the
//! kernel allocate, and that all of it comes back. Run by the root process of scenario
//! `user`, which holds the system-information capability (`abi::root_slots::SYSTEM`) to
//! read the free frames.

use abi::{Error, Handle, MAP_WRITE, PAGE_SIZE, PRIORITY_NORMAL, ProcessStatus, sysinfo};
use rt::{ipc, proc};

use crate::Results;

const SYSTEM: Handle = Handle::new(abi::root_slots::SYSTEM, 1);

/// Where the page-table test maps: a 512 GiB-aligned stretch no other test uses.
const TABLES_AT: u64 = 0x0000_5000_0000_0000;
/// 2 MiB: one last-level table's span.
const TABLE_SPAN: u64 = 2 << 20;
/// Map/unmap pairs of the page-table test, each at a new 2 MiB-aligned address.
const TABLE_ROUNDS: u64 = 100_000;

/// Child: spawn [`EXIT_AT_ONCE`] children from the image in slot 1 one after the other,
/// each with [`CHILD_BUDGET`], each waited for until it is dead, and keep their handles,
/// until a spawn is refused (its budget is used up);
/// then signal [`HOARD_DONE`] on the notification in slot 2 and sleep until killed.
pub const HOARDER: u64 = 19;
/// Child: exit at once.
pub const EXIT_AT_ONCE: u64 = 20;
const HOARD_DONE: u64 = 0x1;
const HOARDER_DEATH: u64 = 0x2;
/// The test suite's image (`abi::root_slots`).
const IMAGE: Handle = Handle::new(abi::root_slots::TESTSUITE_IMAGE, 1);

/// Dead processes the hoarding test must see held at once: about 9 KiB of kernel heap
/// each, so more than the heap's first 4 MiB.
const HELD_AT_LEAST: u64 = 500;
/// Each hoarder's memory budget.
const HOARDER_BUDGET: u64 = 16 << 20;
/// The budget a hoarder gives each child: its image, stack, record and first thread fit.
/// A dead child's record keeps all of it out of the hoarder's budget until it is freed.
const CHILD_BUDGET: u64 = 256 << 10;

pub fn tests(results: &mut Results) {
    dead_processes_held(results);
    page_tables(results);
}

/// The kernel's summary record (`system_info`).
fn summary() -> Result<[u64; sysinfo::summary::WORDS], &'static str> {
    let mut words = [0u64; sysinfo::summary::WORDS];
    match proc::system_info(SYSTEM, sysinfo::SUMMARY, 0, &mut words) {
        Ok(count) if count == words.len() => Ok(words),
        _ => Err("system_info failed"),
    }
}

fn free_frames() -> Result<u64, &'static str> {
    Ok(summary()?[sysinfo::summary::FREE_FRAMES])
}

fn map_and_unmap(address: u64) -> Result<(), Error> {
    rt::memory_map(address, PAGE_SIZE, MAP_WRITE)?;
    rt::memory_unmap(address, PAGE_SIZE).map(drop)
}

/// Each page at a new 2 MiB address needs a page table of its own (and a new one above it
/// every 1 GiB): the kernel must give emptied tables back (they count against the process's
/// memory budget, so leaked ones would soon refuse the map) and keep at most the chain of
/// the last one emptied. The free frames are compared with the same chain kept: the first
/// address is mapped and unmapped before the count and again after the rounds.
fn page_tables(results: &mut Results) {
    let outcome = (|| {
        if let Err(error) = map_and_unmap(TABLES_AT) {
            rt::println!("testsuite: page tables: the first map/unmap: {error:?}");
            return Err("the first map/unmap failed");
        }
        let before = free_frames()?;
        for round in 1..=TABLE_ROUNDS {
            if let Err(error) = map_and_unmap(TABLES_AT + round * TABLE_SPAN) {
                rt::println!("testsuite: page tables: round {round} failed: {error:?}");
                return Err("a map/unmap pair failed");
            }
        }
        map_and_unmap(TABLES_AT).map_err(|_| "the last map/unmap failed")?;
        let after = free_frames()?;
        if after != before {
            rt::println!("testsuite: page tables: {before} frames free before, {after} after");
            return Err("the free frames did not return to their count");
        }
        Ok(())
    })();
    results.check(
        "user page tables: 100000 map/unmap pairs 2 MiB apart succeed and every emptied table is freed",
        outcome,
    );
}

/// The [`HOARDER`] child.
pub fn hoarder() -> i64 {
    let (image, done) = (Handle::new(1, 1), Handle::new(2, 1));
    let mut held = 0u64;
    while let Ok(child) =
        proc::process_spawn(image, &[], PRIORITY_NORMAL, EXIT_AT_ONCE, CHILD_BUDGET)
    {
        held += 1;
        // Wait until it is dead (its thread slot free again), its record held.
        while proc::process_status(child) == Ok(ProcessStatus::Running) {
            let _ = rt::yield_now();
        }
    }
    // The count travels with the signal, above the done bit.
    let _ = ipc::signal(done, HOARD_DONE | held << 8);
    loop {
        let _ = proc::sleep(abi::SLEEP_MAX_TICKS);
    }
}

/// What the heap and frames look like: bytes allocated from the kernel heap, and free
/// frames plus the frames the heap holds (the heap keeps what it grew by).
fn memory_state() -> Result<(u64, u64), &'static str> {
    use sysinfo::summary::*;
    let words = summary()?;
    Ok((words[KERNEL_HEAP], words[FREE_FRAMES] + words[HEAP_FRAMES]))
}

/// One round: spawn [`HOARDER`]s one after the other, each with [`HOARDER_BUDGET`] and
/// left holding the records of the dead children it made (each child's budget charged to
/// the hoarder that made it), until a spawn is refused (this process's budget is used
/// up); then kill them all. Returns the
/// hoarders made, the dead processes they held and the refusal.
fn hoard_round(done: Handle, death: Handle) -> Result<(usize, u64, Error), &'static str> {
    const MAX: usize = 128;
    let mut hoarders = [Handle::NULL; MAX];
    let mut count = 0;
    let mut held = 0;
    let refusal = loop {
        if count == MAX {
            break None;
        }
        match proc::process_spawn(
            IMAGE,
            &[IMAGE, done],
            PRIORITY_NORMAL,
            HOARDER,
            HOARDER_BUDGET,
        ) {
            Ok(hoarder) => {
                hoarders[count] = hoarder;
                count += 1;
                match ipc::wait(done) {
                    Ok(bits) if bits & HOARD_DONE != 0 => held += bits >> 8,
                    _ => break None,
                }
            }
            Err(error) => break Some(error),
        }
    };
    // Still alive after the refusal: a system call answers.
    let alive = rt::null() == Ok(0);
    let mut ended = true;
    for &hoarder in &hoarders[..count] {
        ended &= proc::process_bind_death(hoarder, death, HOARDER_DEATH).is_ok()
            && proc::process_kill(hoarder).is_ok()
            && ipc::wait(death) == Ok(HOARDER_DEATH);
        let _ = ipc::cap_delete(hoarder);
    }
    // Let the killed threads end and the deferred work run.
    for _ in 0..3 {
        let _ = rt::yield_now();
    }
    match refusal {
        _ if !alive => Err("the caller did not survive the refusal"),
        _ if !ended => Err("a hoarder was not ended by process_kill"),
        None => Err("no spawn was refused"),
        Some(error) => Ok((count, held, error)),
    }
}

/// Dead processes whose handles are held keep their records in the kernel heap: many
/// holders together take far more than the heap's first 4 MiB. The kernel must grow its
/// heap or refuse with `OutOfMemory`, never fail an allocation, and give everything back
/// once the handles go. A first round sizes what grows and stays (the heap's frames, the
/// capacity of kernel queues and per-thread tables); a second round must end where the
/// first did. With several CPUs, how many threads and deferred works are alive at once
/// varies from round to round, so the second may still grow a table the first did not
/// need; then a third round must end where the second did (a leak makes every round end
/// higher).
fn dead_processes_held(results: &mut Results) {
    let outcome = (|| {
        let (Ok(done), Ok(death)) = (ipc::notification_create(), ipc::notification_create()) else {
            return Err("notification_create failed");
        };
        let result = (|| {
            let first = hoard_round(done, death)?;
            let mut before = memory_state()?;
            let mut second = hoard_round(done, death)?;
            let mut after = memory_state()?;
            if after != before {
                rt::println!(
                    "testsuite: dead processes held: the second round ended at {after:?}, not {before:?}: a third round"
                );
                before = after;
                second = hoard_round(done, death)?;
                after = memory_state()?;
            }
            rt::println!(
                "testsuite: dead processes held: {} hoarders held {} ({:?}), then {} held {} ({:?}); heap bytes {} -> {}, free + heap frames {} -> {}, heap frames {}",
                first.0,
                first.1,
                first.2,
                second.0,
                second.1,
                second.2,
                before.0,
                after.0,
                before.1,
                after.1,
                summary()?[sysinfo::summary::HEAP_FRAMES]
            );
            if second.2 != Error::OutOfMemory {
                return Err("the refusal is not OutOfMemory");
            }
            if first.1 < HELD_AT_LEAST || second.1 < HELD_AT_LEAST {
                return Err("too few dead processes were held to need more heap");
            }
            if after != before {
                return Err("the heap bytes or the frames did not return to their count");
            }
            Ok(())
        })();
        let _ = ipc::cap_delete(done);
        let _ = ipc::cap_delete(death);
        result
    })();
    results.check(
        "user dead processes held by many holders: the kernel refuses with OutOfMemory, stays up and gets every heap byte and frame back",
        outcome,
    );
}
