//! `scaletest`: the scale tests, started by the kernel as the root process of scenario
//! `scale` (kernel/src/testing/scale.rs). Each test prints one `ok scale …` /
//! `not ok scale …: why` line; the exit code carries the counts (`passed << 16 | failed`)
//! and the kernel prints the summary.
//!
//! What each test proves:
//!
//! 1. **10,000 threads in one process**: a child process creates [`THREADS`] threads with
//!    `thread_create` (each on its own one-page stack, its handle deleted at once: the
//!    threads outlive their capabilities). Each thread counts itself once it runs and then
//!    blocks on a notification nobody signals, so none ends; once all have counted, the
//!    child's budget record shows them all alive at once, and the child tells this
//!    process. This process kills the child, waits for its death and checks that the
//!    kernel's free frames (plus those its heap holds) are back at their baseline.
//! 2. **1,000 processes alive at once**: this process spawns [`PROCESSES`] children (each
//!    handle deleted at once). Each calls this process's endpoint once it runs (answered at
//!    once) and then waits on a notification; none ends before all have called, so all are
//!    alive at once, and the budget carved out of this one's for them shows it. Then the
//!    notification is signalled until every child has exited (its budget back in this
//!    one's), and the frames are back at their baseline.
//!
//! Capabilities (installed by the kernel): slot 0 this program's image (`READ MAP GRANT`),
//! slot 1 the system-information capability (`READ GRANT`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{
    Error, Handle, MAP_PAGES_MAX, MAP_WRITE, MessageInfo, PAGE_SIZE, PRIORITY_NORMAL, Rights,
    sysinfo,
};
use rt::{ipc, println, proc};

/// This program's image (`READ MAP GRANT`), to spawn children.
const IMAGE: Handle = Handle::new(0, 1);
/// The system-information capability (`READ GRANT`).
const SYSTEM: Handle = Handle::new(1, 1);

/// What a process does: its argument.
const ROOT: u64 = 0;
/// Test 1's child: make the threads (slot 1: the system capability, slot 2: the
/// notification to report on, `SIGNAL`).
const THREAD_MAKER: u64 = 1;
/// Test 2's children: call the endpoint in slot 1, then wait on the notification in slot 2.
const HOLDER: u64 = 2;

/// Threads of test 1 and processes of test 2.
const THREADS: u64 = 10_000;
const PROCESSES: u64 = 1_000;
/// The budgets: test 1's child (each thread's record and kernel stack, its user stack
/// page, the tables mapping them, and room for the rest), each child of test 2.
const THREAD_MAKER_BUDGET: u64 = THREADS * (24 * 1024) + (32 << 20);
const HOLDER_BUDGET: u64 = 512 * 1024;

/// Test 1's thread stacks: one page each.
const STACKS: u64 = 0x0000_3000_0000_0000;
/// Ticks a wait may take before the test fails (a hang guard, not a speed check).
const PATIENCE_TICKS: u64 = 30_000;
/// Ticks the frame count may take to come back after a teardown.
const SETTLE_TICKS: u64 = 1000;
/// Frames the kernel may keep after the first round of test 1: the page tables of the
/// kernel-stack region that its stacks needed (kept, so stacks stay mapped; `mm::stacks`).
const KEPT_FRAMES_MAX: u64 = 256;
/// Ticks the frame count must hold still to be a baseline.
const STEADY_TICKS: u64 = 5;

/// What test 1's child reports (bits on its notification).
const REPORT_ALIVE: u64 = 1;
const REPORT_FAILED: u64 = 2;

rt::entry!(main);

fn main(argument: u64) -> i64 {
    match argument {
        ROOT => root(),
        THREAD_MAKER => thread_maker(),
        HOLDER => holder(),
        _ => -1,
    }
}

fn root() -> i64 {
    let mut passed = 0i64;
    let mut failed = 0i64;
    let mut check = |name: &str, outcome: Result<(), &str>| match outcome {
        Ok(()) => {
            passed += 1;
            println!("ok scale {name}");
        }
        Err(why) => {
            failed += 1;
            println!("not ok scale {name}: {why}");
        }
    };
    check(
        "10000 threads alive at once in one process, each ran, all killed (twice): frames back at the baseline",
        many_threads(),
    );
    check(
        "1000 processes alive at once, all exited: frames back at the baseline",
        many_processes(),
    );
    passed << 16 | failed
}

fn summary(system: Handle) -> Result<[u64; sysinfo::summary::WORDS], &'static str> {
    rt::system::summary(system)
}

/// Timer ticks since boot.
fn ticks() -> u64 {
    rt::system::ticks(SYSTEM)
}

fn frames_steady() -> Result<u64, &'static str> {
    rt::system::frames_steady(SYSTEM, STEADY_TICKS, PATIENCE_TICKS)
}

fn frames_settle(baseline: u64) -> Result<u64, &'static str> {
    rt::system::frames_settle(SYSTEM, baseline, SETTLE_TICKS)
}

/// The budget record of this process through `system`: (used bytes, live threads).
fn own_budget(system: Handle) -> Result<(u64, u64), &'static str> {
    let mut words = [0u64; sysinfo::budget::WORDS];
    match proc::system_info(system, sysinfo::BUDGET, 0, &mut words) {
        Ok(count) if count == words.len() => Ok((
            words[sysinfo::budget::USED],
            words[sysinfo::budget::THREADS],
        )),
        _ => Err("system_info (budget) failed"),
    }
}

/// Test 1, this side: two rounds of [`thread_round`]. The first grows what the kernel
/// keeps once grown (the page tables of its kernel-stack region, at most
/// [`KEPT_FRAMES_MAX`] frames); after the second, the frames are back exactly at what they
/// were after the first.
fn many_threads() -> Result<(), &'static str> {
    let first = frames_steady()?;
    thread_round(1)?;
    let baseline = frames_steady()?;
    println!(
        "scaletest: threads: the first batch of threads left {} frames in use",
        first.saturating_sub(baseline)
    );
    if first.saturating_sub(baseline) > KEPT_FRAMES_MAX {
        return Err("the first round kept too many frames");
    }
    thread_round(2)?;
    let after = frames_settle(baseline)?;
    println!("scaletest: threads: frames (free + kernel heap) before {baseline}, after {after}");
    if after != baseline {
        return Err("the frames did not come back");
    }
    Ok(())
}

/// One round of test 1: run the child, kill it once it reports, wait for its death.
fn thread_round(round: u64) -> Result<(), &'static str> {
    let report = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let outcome = (|| {
        let signal =
            ipc::cap_copy(report, Rights::SIGNAL | Rights::GRANT).map_err(|_| "cap_copy failed")?;
        let start = ticks();
        let child = proc::process_spawn(
            IMAGE,
            &[SYSTEM, signal],
            PRIORITY_NORMAL,
            THREAD_MAKER,
            THREAD_MAKER_BUDGET,
        );
        let _ = ipc::cap_delete(signal);
        let child = child.map_err(|_| "process_spawn failed")?;
        let bound = proc::process_bind_death(child, death, 1);
        let reported = bound.and_then(|()| ipc::wait(report));
        let made = ticks();
        let _ = proc::process_kill(child);
        let died = ipc::wait(death);
        let _ = ipc::cap_delete(child);
        println!(
            "scaletest: threads: round {round}: made and ran in {} ticks, killed in {} ticks",
            made.wrapping_sub(start),
            ticks().wrapping_sub(made)
        );
        match reported {
            Ok(bits) if bits & REPORT_FAILED != 0 => Err("the child could not make its threads"),
            Ok(bits) if bits & REPORT_ALIVE != 0 => died.map(drop).map_err(|_| "no death"),
            _ => Err("no report from the child"),
        }
    })();
    let _ = ipc::cap_delete(report);
    let _ = ipc::cap_delete(death);
    outcome
}

/// Test 1's threads that have run.
static RAN: AtomicU64 = AtomicU64::new(0);
/// The notification test 1's threads wait on (never signalled).
static HOLD: AtomicU64 = AtomicU64::new(0);

/// Count this thread as run, then block for good.
extern "C" fn worker(_: u64) -> ! {
    RAN.fetch_add(1, Ordering::AcqRel);
    let hold = Handle::from_raw(HOLD.load(Ordering::Acquire));
    loop {
        let _ = ipc::wait(hold);
    }
}

/// Test 1's child: make the threads, wait until each has run, check they are all alive,
/// report, then wait to be killed.
fn thread_maker() -> i64 {
    let system = Handle::new(1, 1);
    let report = Handle::new(2, 1);
    let outcome = make_threads(system);
    let bits = match outcome {
        Ok(()) => REPORT_ALIVE,
        Err(why) => {
            println!("scaletest: threads: {why}");
            REPORT_FAILED
        }
    };
    let _ = ipc::signal(report, bits);
    let hold = Handle::from_raw(HOLD.load(Ordering::Acquire));
    loop {
        if ipc::wait(hold).is_err() {
            let _ = proc::sleep(abi::SLEEP_MAX_TICKS);
        }
    }
}

fn make_threads(system: Handle) -> Result<(), &'static str> {
    let hold = ipc::notification_create().map_err(|_| "notification_create failed")?;
    HOLD.store(hold.raw(), Ordering::Release);
    let mut mapped = 0;
    while mapped < THREADS {
        let pages = (THREADS - mapped).min(MAP_PAGES_MAX);
        rt::memory_map(STACKS + mapped * PAGE_SIZE, pages * PAGE_SIZE, MAP_WRITE)
            .map_err(|_| "memory_map of the stacks failed")?;
        mapped += pages;
    }
    let start = summary(system)?[sysinfo::summary::TICKS];
    for index in 0..THREADS {
        let top = STACKS + (index + 1) * PAGE_SIZE;
        let thread = match proc::thread_create(worker, top, index, PRIORITY_NORMAL) {
            Ok(thread) => thread,
            Err(error) => {
                println!("scaletest: thread_create {index} failed: {error:?}");
                return Err("thread_create failed");
            }
        };
        let _ = ipc::cap_delete(thread);
    }
    let slots = summary(system)?[sysinfo::summary::THREAD_SLOTS];
    while RAN.load(Ordering::Acquire) < THREADS {
        let now = summary(system)?[sysinfo::summary::TICKS];
        if now.wrapping_sub(start) > PATIENCE_TICKS {
            println!(
                "scaletest: threads: {} of {THREADS} ran",
                RAN.load(Ordering::Acquire)
            );
            return Err("not every thread ran");
        }
        let _ = proc::sleep(1);
    }
    let (_, alive) = own_budget(system)?;
    println!(
        "scaletest: threads: {THREADS} made, {} ran, {alive} alive in this process, {slots} thread slots",
        RAN.load(Ordering::Acquire)
    );
    // The workers and this thread.
    if alive != THREADS + 1 {
        return Err("not every thread alive at once");
    }
    if slots <= THREADS {
        return Err("the kernel's thread slots did not grow past the threads");
    }
    Ok(())
}

/// Test 2, this side.
fn many_processes() -> Result<(), &'static str> {
    let before = frames_steady()?;
    let endpoint = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let hold = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let outcome = (|| {
        let call =
            ipc::cap_copy(endpoint, Rights::CALL | Rights::GRANT).map_err(|_| "cap_copy failed")?;
        let wait = ipc::cap_copy(hold, Rights::WAIT | Rights::GRANT);
        let wait = wait.map_err(|_| "cap_copy failed")?;
        let (used_before, _) = own_budget(SYSTEM)?;
        let mut spawned = 0;
        let mut outcome = Ok(());
        for _ in 0..PROCESSES {
            match proc::process_spawn(IMAGE, &[call, wait], PRIORITY_NORMAL, HOLDER, HOLDER_BUDGET)
            {
                Ok(child) => {
                    spawned += 1;
                    let _ = ipc::cap_delete(child);
                }
                Err(error) => {
                    println!("scaletest: processes: spawn {spawned} failed: {error:?}");
                    outcome = Err("process_spawn failed");
                    break;
                }
            }
        }
        let _ = ipc::cap_delete(call);
        let _ = ipc::cap_delete(wait);
        // Each child calls once when it runs; none ends before the notification.
        let spawned_at = ticks();
        let mut called = 0;
        while called < spawned {
            if ipc::recv(endpoint).is_err() {
                outcome = Err("recv failed");
                break;
            }
            called += 1;
            let _ = ipc::reply(MessageInfo::new(0, 0, 0).unwrap_or_default(), [0; 4]);
        }
        let (used, _) = own_budget(SYSTEM)?;
        let carved = used.saturating_sub(used_before);
        println!(
            "scaletest: processes: {spawned} spawned, {called} called in, budget carved for them {carved} ({} ticks)",
            ticks().wrapping_sub(spawned_at)
        );
        if outcome.is_ok() && carved < PROCESSES * HOLDER_BUDGET {
            outcome = Err("the children's budgets are not all out at once");
        }
        // Wake them one by one until every child has exited (its budget back here).
        let start = ticks();
        while own_budget(SYSTEM)?.0 > used_before {
            let _ = ipc::signal(hold, 1);
            let _ = rt::yield_now();
            if ticks().wrapping_sub(start) > PATIENCE_TICKS {
                return Err("the children did not all exit");
            }
        }
        println!(
            "scaletest: processes: all exited in {} ticks",
            ticks().wrapping_sub(start)
        );
        outcome
    })();
    let _ = ipc::cap_delete(endpoint);
    let _ = ipc::cap_delete(hold);
    let after = frames_settle(before)?;
    println!("scaletest: processes: frames (free + kernel heap) before {before}, after {after}");
    outcome?;
    if after != before {
        return Err("the frames did not come back");
    }
    Ok(())
}

/// Test 2's child: call in, then wait for the notification and exit.
fn holder() -> i64 {
    let endpoint = Handle::new(1, 1);
    let hold = Handle::new(2, 1);
    if ipc::call(
        endpoint,
        MessageInfo::new(0, 0, 0).unwrap_or_default(),
        [0; 4],
    )
    .is_err()
    {
        return 1;
    }
    match ipc::wait(hold) {
        Ok(_) => 0,
        Err(Error::InvalidHandle) => 2,
        Err(_) => 3,
    }
}
