//! Resource exhaustion from user space: what a process with few capabilities can make the
//! kernel allocate, and that all of it comes back. Run by the root process of scenario
//! `user`, which holds the system-information capability (`abi::root_slots::SYSTEM`) to
//! read the free frames.

use abi::{Error, Handle, MAP_WRITE, PAGE_SIZE, sysinfo};
use rt::proc;

use crate::Results;

const SYSTEM: Handle = Handle::new(abi::root_slots::SYSTEM, 1);

/// Where the page-table test maps: a 512 GiB-aligned stretch no other test uses.
const TABLES_AT: u64 = 0x0000_5000_0000_0000;
/// 2 MiB: one last-level table's span.
const TABLE_SPAN: u64 = 2 << 20;
/// Map/unmap pairs of the page-table test, each at a new 2 MiB-aligned address.
const TABLE_ROUNDS: u64 = 100_000;

pub fn tests(results: &mut Results) {
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
/// memory quota, so leaked ones would soon refuse the map) and keep at most the chain of
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
