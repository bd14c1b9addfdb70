//! No fixed per-process limits, run by the root process of scenario `limits` (booted with
//! 2 GiB; it holds the system-information capability): only memory budgets bound what a
//! process has. One process maps and touches 1 GiB and every frame comes back; a
//! capability table grows far past its first size and shrinks back, and the budget use
//! with it; a budget too small for one more growth gets `OutOfMemory` and the process goes
//! on; one process runs 40 threads; a small budget's `thread_create` gets `OutOfMemory`
//! and the process goes on; a process spawning recursively until its budget is spent
//! does not keep another process from making a thread.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{
    CAP_SLOT_BUDGET_BYTES, CAP_TABLE_INITIAL_SLOTS, Error, Handle, MAP_PAGES_MAX, MAP_WRITE,
    ObjectType, PAGE_SIZE, PRIORITY_NORMAL, Rights, sysinfo,
};
use rt::{ipc, proc};

use crate::Results;
use crate::budget::{budget_of, end, frames, settle, sleep_forever, sleeper, used};

/// The root of scenario `limits`.
pub const LIMITS: u64 = 30;
/// Child: map and touch 1 GiB, report, unmap it when told, report again.
const BIG: u64 = 31;
/// Child: eat its budget with pages, give one back, copy capabilities until refused.
const CAP_EATER: u64 = 32;
/// Child: eat its budget with pages, give a few back, make threads until refused.
const THREAD_EATER: u64 = 33;
/// Child: `SPAWNER | depth << 8 | budget_kib << 16`, spawns the next level with
/// [`LEVEL_KIB`] less until a spawn is refused (see [`spawner`]).
const SPAWNER: u64 = 34;

/// Whether `argument` names one of this module's children.
pub fn is_child(argument: u64) -> bool {
    matches!(argument & 0xff, BIG | CAP_EATER | THREAD_EATER | SPAWNER)
}

/// Run the child `argument` names.
pub fn child(argument: u64) -> i64 {
    match argument & 0xff {
        BIG => big(),
        CAP_EATER => cap_eater(),
        THREAD_EATER => thread_eater(),
        _ => spawner((argument >> 8) & 0xff, argument >> 16),
    }
}

const IMAGE: Handle = Handle::new(abi::root_slots::TESTSUITE_IMAGE, 1);
/// A child's notifications, passed by the parent: slots 1 and 2.
const REPORT: Handle = Handle::new(1, 1);
const SECOND: Handle = Handle::new(2, 1);

const GIB_PAGES: u64 = (1 << 30) / PAGE_SIZE;
/// The big child's budget: 1 GiB, its tables, image and stack.
const BIG_BUDGET: u64 = (1 << 30) + (16 << 20);
const BIG_AT: u64 = 0x0000_3000_0000_0000;
const MAPPED: u64 = 1 << 0;
const TOUCHED: u64 = 1 << 1;
const UNMAPPED: u64 = 1 << 2;
/// Set in every report (a signal needs a bit).
const REPORTED: u64 = 1 << 3;
const DEATH: u64 = 1 << 6;

/// Where the eaters map, and where this process maps its threads' stacks.
const EAT_AT: u64 = 0x0000_3100_0000_0000;
const STACKS_AT: u64 = 0x0000_3200_0000_0000;
const EATER_BUDGET: u64 = 1 << 20;

/// Capabilities the table test makes (its first size is 16).
const MANY: usize = 5000;
/// Threads the thread test runs in this one process.
const THREADS: usize = 40;
const THREAD_STACK: u64 = 4 * PAGE_SIZE;

/// The recursive spawner's budget, and what each level keeps for itself.
const SPAWNER_KIB: u64 = 12 * 1024;
const LEVEL_KIB: u64 = 2048;

pub fn suite() -> i64 {
    let mut results = Results {
        passed: 0,
        failed: 0,
    };
    one_gib(&mut results);
    cap_table(&mut results);
    growth_refused(&mut results);
    many_threads(&mut results);
    threads_refused(&mut results);
    recursive_spawner(&mut results);
    crate::exit_code(results.passed, results.failed)
}

/// Two notifications, deleted after `body`.
fn with_notifications(
    body: impl FnOnce(Handle, Handle) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let (Ok(first), Ok(second)) = (ipc::notification_create(), ipc::notification_create()) else {
        return Err("notification_create failed");
    };
    let outcome = body(first, second);
    let _ = ipc::cap_delete(first);
    let _ = ipc::cap_delete(second);
    outcome
}

/// The value the big child writes to `page`.
fn stamp(page: u64) -> u64 {
    page.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// The [`BIG`] child: 1 GiB in calls of at most `MAP_PAGES_MAX` pages, a word written in
/// every page and read back; `SECOND` says when to unmap it.
fn big() -> i64 {
    let mut bits = 0;
    let calls = GIB_PAGES / MAP_PAGES_MAX;
    let mapped = (0..calls).all(|call| {
        let at = BIG_AT + call * MAP_PAGES_MAX * PAGE_SIZE;
        rt::memory_map(at, MAP_PAGES_MAX * PAGE_SIZE, MAP_WRITE).is_ok()
    });
    if mapped {
        bits |= MAPPED;
        for page in 0..GIB_PAGES {
            rt::fault::user_word(BIG_AT + page * PAGE_SIZE).store(stamp(page), Ordering::Relaxed);
        }
        let intact = (0..GIB_PAGES).all(|page| {
            rt::fault::user_word(BIG_AT + page * PAGE_SIZE).load(Ordering::Relaxed) == stamp(page)
        });
        if intact {
            bits |= TOUCHED;
        }
    }
    let _ = ipc::signal(REPORT, bits | REPORTED);
    let _ = ipc::wait(SECOND);
    let unmapped = mapped
        && (0..calls).all(|call| {
            let at = BIG_AT + call * MAP_PAGES_MAX * PAGE_SIZE;
            rt::memory_unmap(at, MAP_PAGES_MAX * PAGE_SIZE).is_ok()
        });
    let _ = ipc::signal(REPORT, REPORTED | if unmapped { UNMAPPED } else { 0 });
    sleep_forever()
}

fn one_gib(results: &mut Results) {
    let outcome = with_notifications(|report, death| {
        let go = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let outcome = (|| {
            let (before, frames_before) = (used()?, frames()?);
            let child = proc::process_spawn(IMAGE, &[report, go], PRIORITY_NORMAL, BIG, BIG_BUDGET)
                .map_err(|_| "spawning the 1 GiB child failed")?;
            let pid = proc::process_id(child).map_err(|_| "process_id failed")?;
            let first = ipc::wait(report).unwrap_or(0);
            let mapped_pages = budget_of(pid)?[sysinfo::budget::PAGES];
            let _ = ipc::signal(go, 1);
            let second = ipc::wait(report).unwrap_or(0);
            let unmapped_pages = budget_of(pid)?[sysinfo::budget::PAGES];
            end(child, death)?;
            settle();
            let (after, frames_after) = (used()?, frames()?);
            rt::println!(
                "testsuite: limits: the child held {mapped_pages} pages with 1 GiB mapped, {unmapped_pages} after unmapping it"
            );
            if first & MAPPED == 0 {
                return Err("mapping 1 GiB in calls of MAP_PAGES_MAX pages failed");
            }
            if first & TOUCHED == 0 {
                return Err("a page of the 1 GiB did not hold what was written to it");
            }
            if mapped_pages < GIB_PAGES || unmapped_pages + GIB_PAGES > mapped_pages {
                return Err("the budget record does not show the 1 GiB mapped, then unmapped");
            }
            if second & UNMAPPED == 0 {
                return Err("unmapping the 1 GiB failed");
            }
            if after != before {
                return Err("the parent's budget use did not come back");
            }
            if frames_after != frames_before {
                rt::println!("testsuite: frames {frames_before} before, {frames_after} after");
                return Err("the free frames did not come back to their count");
            }
            Ok(())
        })();
        let _ = ipc::cap_delete(go);
        outcome
    });
    results.check(
        "limits: one process maps and touches 1 GiB (several calls), unmaps it and ends, and every frame and budget byte comes back",
        outcome,
    );
}

fn cap_table(results: &mut Results) {
    let outcome = with_notifications(|source, _| {
        let mut copies: Vec<Handle> = Vec::new();
        copies
            .try_reserve_exact(MANY)
            .map_err(|_| "no heap for the handles")?;
        let (before, record_before) = (used()?, budget_of(0)?);
        let mut failure = None;
        for _ in 0..MANY {
            match ipc::cap_copy(source, Rights::ALL) {
                Ok(copy) => copies.push(copy),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let grown = budget_of(0)?;
        // The last ones work: a signal through one, a poll through another, an identify.
        let last = copies.len().saturating_sub(1);
        let works = copies.len() == MANY
            && ipc::signal(copies[last], 0b101).is_ok()
            && ipc::poll(copies[last - 1]) == Ok(0b101)
            && ipc::cap_identify(copies[last - 2]) == Ok((ObjectType::Notification, Rights::ALL));
        let highest = copies.iter().map(|copy| copy.slot()).max().unwrap_or(0);
        let deleted = copies
            .iter()
            .filter(|copy| ipc::cap_delete(**copy).is_ok())
            .count();
        let (after, record_after) = (used()?, budget_of(0)?);
        use sysinfo::budget::{CAP_SLOTS, CAPS};
        rt::println!(
            "testsuite: limits: {} capabilities in a table of {} slots (highest slot {highest}), {} slots after deleting them",
            grown[CAPS],
            grown[CAP_SLOTS],
            record_after[CAP_SLOTS]
        );
        if let Some(error) = failure {
            rt::println!("testsuite: limits: copy {} failed: {error:?}", copies.len());
            return Err("a copy was refused before 5000");
        }
        if !works {
            return Err("the last capabilities did not work");
        }
        if (highest as usize) < MANY || grown[CAP_SLOTS] < grown[CAPS] {
            return Err("the handles do not name slots past 5000");
        }
        if grown[sysinfo::budget::USED] - before
            != (grown[CAP_SLOTS] - record_before[CAP_SLOTS]) * CAP_SLOT_BUDGET_BYTES
        {
            return Err("the growth was not charged at CAP_SLOT_BUDGET_BYTES a slot");
        }
        if deleted != MANY {
            return Err("a delete failed");
        }
        if after != before || record_after[CAP_SLOTS] != record_before[CAP_SLOTS] {
            return Err("the table and the budget use did not come back after the deletes");
        }
        Ok(())
    });
    results.check(
        "limits: a capability table grows to 5000 capabilities charged to the budget, the last ones work, and deleting them gives the slots and the budget back",
        outcome,
    );
}

/// Map pages at [`EAT_AT`] until the budget refuses one; the count.
fn eat_pages() -> u64 {
    let mut pages = 0;
    while rt::memory_map(EAT_AT + pages * PAGE_SIZE, PAGE_SIZE, MAP_WRITE).is_ok() {
        pages += 1;
    }
    pages
}

const EATER_DONE: u64 = 1 << 0;
const REFUSED_OOM: u64 = 1 << 1;
const STILL_WORKS: u64 = 1 << 2;
const COUNT_SHIFT: u32 = 16;

/// The [`CAP_EATER`] child.
fn cap_eater() -> i64 {
    let pages = eat_pages();
    let mut bits = EATER_DONE;
    let mut count = 0u64;
    let mut last = Handle::NULL;
    if pages > 0 && rt::memory_unmap(EAT_AT + (pages - 1) * PAGE_SIZE, PAGE_SIZE).is_ok() {
        let refusal = loop {
            match ipc::cap_copy(REPORT, Rights::ALL) {
                Ok(copy) => {
                    last = copy;
                    count += 1;
                }
                Err(error) => break error,
            }
        };
        if refusal == Error::OutOfMemory {
            bits |= REFUSED_OOM;
        }
    }
    // Still running: a system call, and a freed slot is used again.
    if rt::null() == Ok(0)
        && ipc::cap_delete(last).is_ok()
        && ipc::cap_copy(REPORT, Rights::ALL).is_ok()
    {
        bits |= STILL_WORKS;
    }
    let _ = ipc::signal(REPORT, bits | count.min(0xffff) << COUNT_SHIFT);
    sleep_forever()
}

fn growth_refused(results: &mut Results) {
    let outcome = with_notifications(|report, death| {
        let before = used()?;
        let child = proc::process_spawn(IMAGE, &[report], PRIORITY_NORMAL, CAP_EATER, EATER_BUDGET)
            .map_err(|_| "spawning the eater failed")?;
        let bits = ipc::wait(report).unwrap_or(0);
        let record = proc::process_id(child)
            .map_err(|_| "process_id failed")
            .and_then(budget_of);
        end(child, death)?;
        settle();
        let record = record?;
        use sysinfo::budget::{CAP_SLOTS, CAPS, LIMIT, USED};
        let left = record[LIMIT] - record[USED];
        rt::println!(
            "testsuite: limits: the eater copied {} capabilities into {} slots, {left} bytes left",
            (bits >> COUNT_SHIFT) & 0xffff,
            record[CAP_SLOTS]
        );
        if bits & EATER_DONE == 0 {
            return Err("the eater did not report");
        }
        if bits & REFUSED_OOM == 0 {
            return Err("the copies did not end with OutOfMemory");
        }
        if bits & STILL_WORKS == 0 {
            return Err("the eater did not go on after the refusal");
        }
        if record[CAP_SLOTS] <= CAP_TABLE_INITIAL_SLOTS as u64 || record[CAPS] != record[CAP_SLOTS]
        {
            return Err("the table did not grow, or was not full when refused");
        }
        if left >= record[CAP_SLOTS] * CAP_SLOT_BUDGET_BYTES {
            return Err("a growth the budget could pay for was refused");
        }
        if used()? != before {
            return Err("the parent's budget use did not come back");
        }
        Ok(())
    });
    results.check(
        "limits: a process whose budget cannot pay for its table's next growth gets OutOfMemory and keeps running",
        outcome,
    );
}

static RAN: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];

/// A thread that counts that it ran, then sleeps until killed.
extern "C" fn counted(index: u64) -> ! {
    if let Some(ran) = RAN.get(index as usize) {
        ran.fetch_add(1, Ordering::Relaxed);
    }
    sleeper(0)
}

/// This process's threads not yet freed (its budget record).
pub(crate) fn live_threads() -> Result<u64, &'static str> {
    Ok(budget_of(0)?[sysinfo::budget::THREADS])
}

fn many_threads(results: &mut Results) {
    let outcome = (|| {
        let span = THREADS as u64 * THREAD_STACK;
        rt::memory_map(STACKS_AT, span, MAP_WRITE).map_err(|_| "mapping the stacks failed")?;
        let (before, threads_before) = (used()?, live_threads()?);
        let mut handles = [Handle::NULL; THREADS];
        let mut made = 0;
        let mut refusal = None;
        for (index, handle) in handles.iter_mut().enumerate() {
            let top = STACKS_AT + (index as u64 + 1) * THREAD_STACK;
            match proc::thread_create(counted, top, index as u64, PRIORITY_NORMAL) {
                Ok(thread) => {
                    *handle = thread;
                    made += 1;
                }
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            }
        }
        let live = live_threads()?;
        let mut all_ran = false;
        for _ in 0..1000 {
            all_ran = RAN[..made]
                .iter()
                .all(|ran| ran.load(Ordering::Relaxed) > 0);
            if all_ran {
                break;
            }
            let _ = proc::sleep(1);
        }
        for thread in &handles[..made] {
            let _ = proc::thread_kill(*thread);
            let _ = ipc::cap_delete(*thread);
        }
        settle();
        let mut threads_after = live_threads()?;
        for _ in 0..100 {
            if threads_after == threads_before {
                break;
            }
            let _ = proc::sleep(1);
            threads_after = live_threads()?;
        }
        let after = used()?;
        let _ = rt::memory_unmap(STACKS_AT, span);
        if let Some(error) = refusal {
            rt::println!("testsuite: limits: thread {made} refused: {error:?}");
            return Err("a thread was refused before 40");
        }
        if live != threads_before + THREADS as u64 {
            return Err("the budget record does not count the 40 threads");
        }
        if !all_ran {
            return Err("not every thread ran");
        }
        if threads_after != threads_before || after != before {
            return Err("the threads' records and kernel stacks did not go back to the budget");
        }
        Ok(())
    })();
    results.check(
        "limits: one process runs 40 threads (more than 16), and their charges come back when they end",
        outcome,
    );
}

/// The [`THREAD_EATER`] child: its pages eaten, 12 given back (room for two threads),
/// then threads (their stacks in the eaten pages) until one is refused.
fn thread_eater() -> i64 {
    const GIVEN_BACK: u64 = 12;
    let pages = eat_pages();
    let mut bits = EATER_DONE;
    let mut count = 0u64;
    if pages > GIVEN_BACK + 16 {
        let back = EAT_AT + (pages - GIVEN_BACK) * PAGE_SIZE;
        if rt::memory_unmap(back, GIVEN_BACK * PAGE_SIZE).is_ok() {
            let refusal = loop {
                // Each thread's stack: a page of the eaten ones.
                let top = EAT_AT + (count + 1) * PAGE_SIZE;
                if count + 1 >= pages - GIVEN_BACK {
                    break Error::InvalidArgument;
                }
                match proc::thread_create(sleeper, top, 0, PRIORITY_NORMAL) {
                    Ok(_) => count += 1,
                    Err(error) => break error,
                }
            };
            if refusal == Error::OutOfMemory {
                bits |= REFUSED_OOM;
            }
        }
    }
    if rt::null() == Ok(0) {
        bits |= STILL_WORKS;
    }
    let _ = ipc::signal(REPORT, bits | count.min(0xffff) << COUNT_SHIFT);
    sleep_forever()
}

fn threads_refused(results: &mut Results) {
    let outcome = with_notifications(|report, death| {
        let before = used()?;
        let child = proc::process_spawn(
            IMAGE,
            &[report],
            PRIORITY_NORMAL,
            THREAD_EATER,
            EATER_BUDGET,
        )
        .map_err(|_| "spawning the thread eater failed")?;
        let bits = ipc::wait(report).unwrap_or(0);
        let record = proc::process_id(child)
            .map_err(|_| "process_id failed")
            .and_then(budget_of);
        end(child, death)?;
        settle();
        let record = record?;
        let count = (bits >> COUNT_SHIFT) & 0xffff;
        use sysinfo::budget::{LIMIT, THREADS as LIVE, USED};
        let left = record[LIMIT] - record[USED];
        rt::println!("testsuite: limits: the thread eater made {count} threads, {left} bytes left");
        if bits & EATER_DONE == 0 {
            return Err("the thread eater did not report");
        }
        if bits & REFUSED_OOM == 0 {
            return Err("thread_create was not refused with OutOfMemory");
        }
        if bits & STILL_WORKS == 0 {
            return Err("the thread eater did not go on after the refusal");
        }
        if count == 0 || record[LIVE] != count + 1 {
            return Err("the budget record does not count the threads made");
        }
        // A thread takes a 4 KiB record and a 16 KiB kernel stack.
        if left >= 20 * 1024 {
            return Err("a thread the budget could pay for was refused");
        }
        if used()? != before {
            return Err("the parent's budget use did not come back");
        }
        Ok(())
    });
    results.check(
        "limits: a process with a small budget gets OutOfMemory from thread_create and keeps running",
        outcome,
    );
}

const LEAF: u64 = 1 << 0;
const LEAF_REFUSED_OOM: u64 = 1 << 1;
const LEAF_EXHAUSTED: u64 = 1 << 2;
const DEPTH_SHIFT: u32 = 8;

/// A [`SPAWNER`] level with `budget_kib` of budget: spawn the next level with
/// [`LEVEL_KIB`] less (passing `REPORT`, `SECOND` and the image on); the level whose spawn
/// is refused maps pages until its own budget is gone too and reports. Then every level
/// waits for the stop bit on `SECOND`, passes it on, waits for its child's death and
/// exits.
fn spawner(depth: u64, budget_kib: u64) -> i64 {
    let image = Handle::new(3, 1);
    let death = ipc::notification_create();
    // At least 1 KiB (0 would ask for the default share).
    let next_kib = budget_kib.saturating_sub(LEVEL_KIB).max(1);
    let argument = SPAWNER | (depth + 1) << 8 | next_kib << 16;
    let spawned = match death {
        Ok(_) => proc::process_spawn(
            image,
            &[REPORT, SECOND, image],
            PRIORITY_NORMAL,
            argument,
            next_kib * 1024,
        ),
        Err(error) => Err(error),
    };
    let child = match spawned {
        Ok(child) => death
            .ok()
            .filter(|death| proc::process_bind_death(child, *death, 1).is_ok()),
        Err(error) => {
            let mut bits = LEAF | depth << DEPTH_SHIFT;
            if error == Error::OutOfMemory {
                bits |= LEAF_REFUSED_OOM;
            }
            eat_pages();
            let last = loop {
                if let Err(error) = ipc::notification_create() {
                    break error;
                }
            };
            if last == Error::OutOfMemory {
                bits |= LEAF_EXHAUSTED;
            }
            let _ = ipc::signal(REPORT, bits);
            None
        }
    };
    let _ = ipc::wait(SECOND);
    let _ = ipc::signal(SECOND, 1);
    if let Some(death) = child {
        let _ = ipc::wait(death);
    }
    0
}

fn recursive_spawner(results: &mut Results) {
    let outcome = with_notifications(|report, stop| {
        let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let outcome = (|| {
            let before = used()?;
            let top = proc::process_spawn(
                IMAGE,
                &[report, stop, IMAGE],
                PRIORITY_NORMAL,
                SPAWNER | SPAWNER_KIB << 16,
                SPAWNER_KIB * 1024,
            )
            .map_err(|_| "spawning the spawner failed")?;
            let bound = proc::process_bind_death(top, death, DEATH).is_ok();
            let bits = ipc::wait(report).unwrap_or(0);
            // With the spawner's budget spent: another process makes a thread.
            let probe =
                proc::process_spawn(IMAGE, &[report], PRIORITY_NORMAL, crate::budget::PROBE, 0);
            let probe_bits = match probe {
                Ok(_) => ipc::wait(report).unwrap_or(0),
                Err(_) => 0,
            };
            if let Ok(probe) = probe {
                end(probe, death)?;
            }
            // Stop the levels: each passes the bit on and waits for its child.
            let _ = ipc::signal(stop, 1);
            let ended = bound && ipc::wait(death) == Ok(DEATH);
            let _ = ipc::cap_delete(top);
            settle();
            let depth = (bits >> DEPTH_SHIFT) & 0xff;
            rt::println!("testsuite: limits: the spawner nested {depth} levels deep");
            if bits & LEAF == 0 {
                return Err("the spawner's last level did not report");
            }
            if bits & LEAF_REFUSED_OOM == 0 || bits & LEAF_EXHAUSTED == 0 {
                return Err("the spawner's spawns did not end by spending its budget");
            }
            if depth < 2 {
                return Err("the spawner did not nest");
            }
            if probe_bits & crate::budget::PROBE_OK == 0 {
                return Err("another process could not make a thread");
            }
            if !ended {
                return Err("the spawner did not end");
            }
            if used()? != before {
                return Err("the parent's budget use did not come back");
            }
            Ok(())
        })();
        let _ = ipc::cap_delete(death);
        outcome
    });
    results.check(
        "limits: a process spawning recursively until its budget is spent does not stop another process from creating a thread",
        outcome,
    );
}
