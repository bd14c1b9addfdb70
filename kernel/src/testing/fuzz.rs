//! Scenarios `fuzz` and `fuzz-leak`: the system-call fuzzer (user/fuzz) in several
//! processes at once, then the invariant checker ([`super::kcheck`]).
//!
//! Command line: `seed=S` (32 bits, decimal or `0x…`; else one from the clock, printed),
//! `calls=N` (system calls of all the first processes together, default
//! [`DEFAULT_CALLS`]), `procs=P` (1 to 8, default [`DEFAULT_PROCS`]; 1 is the single mode in
//! which a seed repeats its figures). The checker's baseline is taken after a short
//! warm-up run, before the shared objects exist; during the run the consistency test
//! runs every [`CHECK_TICKS`]; after it every process is gone (a sweep kills any that a
//! fuzzer left behind) and the figures must be back at the baseline (the heap's frames and
//! the tables a long run may grow and the kernel keeps, counted apart: [`super::kcheck`]).
//!
//! `fuzz-leak` is a short run that leaks one endpoint on purpose before the comparison: the
//! checker must report it (`not ok fuzz leaked objects: endpoints …`).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{ProcessStatus, Rights};
use arch_api::Bench as _;

use crate::boot::BootInfo;
use crate::obj::{
    Budget, Endpoint, EndpointCap, MemoryRegion, Notification, NotificationCap, Object, Process,
};
use crate::task::sched;
use crate::testing::kcheck;
use crate::testing::ktest::Suite;
use crate::time::{self, TIMER_HZ};
use crate::{Cpu, println, proc};

/// System calls of a run without `calls=`.
pub const DEFAULT_CALLS: u64 = 200_000;
/// Fuzzing processes without `procs=`.
pub const DEFAULT_PROCS: u64 = 4;
const MAX_PROCS: u64 = 8;
/// The calls one process makes at most (the argument's field).
const MAX_CALLS_PER_PROCESS: u64 = 0xff_ffff;
/// Ticks between consistency tests during the run.
const CHECK_TICKS: u64 = 50;
/// The calls of the warm-up run and of `fuzz-leak`.
const SHORT_CALLS: u64 = 3_000;

/// The argument layout of user/fuzz.
const SINGLE: u64 = 1 << 2;
const INDEX_SHIFT: u32 = 3;
const CALLS_SHIFT: u32 = 8;
const SEED_SHIFT: u32 = 32;

/// user/fuzz's ring of its last calls: a page at this address, a header of 8 words
/// (magic, seed, calls made) and 16 entries of 8 (call index, number, four arguments,
/// status, value).
const RING: u64 = 0x0000_3000_0000_0000;
const RING_MAGIC: u64 = 0x676e_6972_7a7a_7566;

static SEED: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(DEFAULT_CALLS);
static PROCS: AtomicU64 = AtomicU64::new(DEFAULT_PROCS);
/// Set while the fuzzers run: the panic report then prints the current fuzzer's ring.
static RUNNING: AtomicU64 = AtomicU64::new(0);

/// Read the command line; returns the scenario's thread argument (1: leak one object).
pub fn configure(boot: &BootInfo, leak: bool) -> usize {
    let number = |key: &str| {
        boot.cmdline
            .get(key)
            .and_then(|text| match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse::<u64>().ok(),
            })
    };
    let seed = number("seed").unwrap_or_else(|| {
        let clock = Cpu::instruction_clock() ^ time::ticks().rotate_left(32);
        clock ^ clock >> 32
    }) & 0xffff_ffff;
    let calls = if leak {
        SHORT_CALLS
    } else {
        number("calls").unwrap_or(DEFAULT_CALLS).max(1)
    };
    let procs = number("procs").unwrap_or(DEFAULT_PROCS).clamp(1, MAX_PROCS);
    SEED.store(seed, Ordering::Relaxed);
    CALLS.store(calls, Ordering::Relaxed);
    PROCS.store(procs, Ordering::Relaxed);
    usize::from(leak)
}

/// The argument of fuzzing process `index`.
fn argument(index: u64, procs: u64, calls: u64, seed: u64) -> u64 {
    let per_process = calls.div_ceil(procs).min(MAX_CALLS_PER_PROCESS);
    let single = if procs == 1 { SINGLE } else { 0 };
    single | index << INDEX_SHIFT | per_process << CALLS_SHIFT | seed << SEED_SHIFT
}

/// The fuzzers of one run and the budget their shares were carved from.
type Started = ([Option<Arc<Process>>; 8], Arc<Budget>);

/// Start `procs` fuzzers sharing one endpoint and one notification (dropped here, so they
/// live only as long as the fuzzers' capabilities), each with an equal share of one root
/// budget.
fn start(procs: u64, calls: u64, seed: u64) -> Result<Started, &'static str> {
    let endpoint = Endpoint::new(None);
    let notification = Notification::new(None);
    let mut started: [Option<Arc<Process>>; 8] = Default::default();
    // Each fuzzer gets an equal share of one root budget, a share left over.
    let root = proc::root_budget();
    let share = root.limit() / (procs + 1);
    for index in 0..procs {
        let budget = Budget::carve(&root, share).map_err(|_| "no budget for a fuzzer")?;
        let (process, thread) =
            proc::spawn_module_unstarted("fuzz", argument(index, procs, calls, seed), budget)
                .map_err(|_| "cannot load the fuzz module")?;
        // The new thread has not started: slots 0, 1, 2, 3.
        let image = MemoryRegion::boot_module("fuzz").ok_or("no fuzz module")?;
        let installed = process
            .caps
            .insert(
                Object::Memory(image),
                Rights::READ | Rights::MAP | Rights::GRANT,
            )
            .and_then(|_| {
                process.caps.insert(
                    Object::Endpoint(EndpointCap::new(endpoint.clone(), 0)),
                    Rights::ALL,
                )
            })
            .and_then(|_| {
                process.caps.insert(
                    Object::Notification(NotificationCap::new(notification.clone())),
                    Rights::ALL,
                )
            })
            .and_then(|_| {
                process
                    .caps
                    .insert(Object::System, Rights::READ | Rights::GRANT)
            });
        sched::start_thread(thread);
        if installed.is_err() {
            proc::kill(&process);
            return Err("cannot install the fuzzer's capabilities");
        }
        started[index as usize] = Some(process);
    }
    Ok((started, root))
}

/// Wait for the fuzzers, testing consistency every [`CHECK_TICKS`], until all ended or
/// `deadline`. `Err` on the first inconsistency.
fn wait(started: &[Option<Arc<Process>>], deadline: u64) -> Result<bool, (&'static str, usize)> {
    loop {
        kcheck::consistency(false)?;
        let running = started
            .iter()
            .flatten()
            .any(|process| process.live_threads() > 0);
        if !running {
            return Ok(true);
        }
        if time::ticks() > deadline {
            return Ok(false);
        }
        sched::sleep(CHECK_TICKS);
    }
}

/// Kill every process that still has a thread, and wait (bounded) until no user thread
/// is left. Returns the processes killed.
fn sweep() -> usize {
    let mut killed = 0;
    for id in 1..sched::capacity() {
        if let Some(process) = sched::process_of(id)
            && process.live_threads() > 0
        {
            proc::kill(&process);
            killed += 1;
        }
    }
    let deadline = time::ticks() + 10 * u64::from(TIMER_HZ);
    while kcheck::user_threads_left() && time::ticks() < deadline {
        sched::sleep(2);
    }
    // The last dead thread is freed by the next switch; deferred work runs on a tick.
    sched::sleep(3);
    killed
}

/// The scenario thread.
pub fn run(leak: usize) {
    let (seed, calls, procs) = (
        SEED.load(Ordering::Relaxed),
        CALLS.load(Ordering::Relaxed),
        PROCS.load(Ordering::Relaxed),
    );
    let name = if leak != 0 { "fuzz-leak" } else { "fuzz" };
    println!(
        "{name}: seed {seed} calls {calls} procs {procs} (replay: cargo xtask fuzz --seed {seed} --calls {calls} --procs {procs})"
    );
    let mut suite = Suite::new();
    // Warm-up: one short run grows what the kernel keeps once grown.
    kcheck::settle();
    if let Ok((warm, _)) = start(1, SHORT_CALLS.min(calls), seed ^ 0x5eed) {
        let _ = wait(&warm, time::ticks() + 120 * u64::from(TIMER_HZ));
    }
    sweep();
    let baseline = kcheck::baseline();
    println!(
        "{name}: baseline {} free frames, {} kept frames, {} heap bytes, {} threads",
        baseline.free_frames, baseline.kept_frames, baseline.heap_bytes, baseline.threads
    );
    let (started, root) = match start(procs, calls, seed) {
        Ok(started) => started,
        Err(why) => {
            suite.check(name, Err(why));
            suite.finish()
        }
    };
    RUNNING.store(1, Ordering::Relaxed);
    // A generous bound: a slow machine makes a few thousand calls a second.
    let deadline = time::ticks() + (60 + calls / 2000) * u64::from(TIMER_HZ);
    let outcome = wait(&started, deadline);
    RUNNING.store(0, Ordering::Relaxed);
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            println!("{name}: the deadline passed; ending the fuzzers. Threads left:");
            let (ipc, threads) = crate::ipc::snapshot();
            for (id, thread) in threads.iter().enumerate() {
                if let Some(thread) = thread.filter(|thread| thread.user) {
                    let ip = sched::saved_user_position(id);
                    let entry = match sched::start_of(id) {
                        Some(crate::task::thread::Start::User {
                            entry, argument, ..
                        }) => (entry, argument),
                        _ => (0, 0),
                    };
                    println!(
                        "  thread {id} ({}) of process {}: {:?}, priority {}, killed {}, queued {}, ipc {:?}, user ip and call {ip:x?}, started at {entry:x?}",
                        thread.name,
                        sched::process_of(id).map_or(0, |process| process.id),
                        thread.state,
                        thread.priority,
                        thread.killed,
                        thread.queued,
                        ipc[id],
                    );
                }
            }
        }
        Err((rule, thread)) => {
            println!(
                "not ok {name} ipc and scheduler consistency during the run: {rule} (thread {thread})"
            );
            suite.add(0, 1);
        }
    }
    for (index, process) in started.iter().enumerate() {
        let Some(process) = process else { continue };
        match process.status() {
            ProcessStatus::Exited(0) => suite.add(1, 0),
            ProcessStatus::Exited(code) => {
                println!("not ok {name} process {index} exited with {code}");
                suite.add(0, 1);
            }
            ProcessStatus::Faulted => {
                println!("not ok {name} process {index}: its last thread died of a fault");
                suite.add(0, 1);
            }
            ProcessStatus::Killed => {
                println!("not ok {name} process {index} was killed");
                suite.add(0, 1);
            }
            ProcessStatus::Running => {
                println!("not ok {name} process {index} did not finish by the deadline");
                suite.add(0, 1);
            }
        }
    }
    drop(started);
    let swept = sweep();
    println!("{name}: {swept} processes left running were killed");
    if leak != 0 {
        println!("{name}: leaking one endpoint on purpose");
        core::mem::forget(Endpoint::new(None));
    }
    // Every share, and everything charged to the fuzzers' children, is back.
    let used = root.used();
    // The budget record itself goes before the heap is compared.
    drop(root);
    if used == 0 {
        suite.check(&alloc::format!("{name} budgets back at baseline"), Ok(()));
    } else {
        println!("not ok {name} budgets back at baseline: {used} bytes still charged");
        suite.add(0, 1);
    }
    match kcheck::consistency(true) {
        Ok(()) => suite.check(
            &alloc::format!("{name} ipc and scheduler structures consistent"),
            Ok(()),
        ),
        Err((rule, thread)) => {
            println!(
                "not ok {name} ipc and scheduler structures consistent: {rule} (thread {thread})"
            );
            suite.add(0, 1);
        }
    }
    kcheck::compare(&mut suite, name, &baseline);
    println!(
        "{name}: seed {seed} (replay: cargo xtask fuzz --seed {seed} --calls {calls} --procs {procs})"
    );
    suite.finish()
}

/// For the panic report: the running fuzzer's last calls, read from its ring page in the
/// current address space (no lock taken: the panic may hold any), when a fuzz run is on
/// and that page is a fuzzer's ring.
pub fn report_panic(out: &mut dyn core::fmt::Write) {
    if RUNNING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut page = [0u8; 8 * 8 * 17];
    if <Cpu as arch_api::Paging>::copy_from_user(&mut page, RING).is_err() {
        return;
    }
    let word = |index: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&page[8 * index..8 * index + 8]);
        u64::from_le_bytes(bytes)
    };
    if word(0) != RING_MAGIC {
        return;
    }
    let _ = writeln!(
        out,
        "fuzz: panic in a fuzzer (seed {}); its last calls, oldest first:",
        word(1)
    );
    let made = word(2);
    for call in made.saturating_sub(15).max(1)..=made {
        let base = 8 * (1 + (call % 16) as usize);
        let _ = writeln!(
            out,
            "  #{} {:#x}({:#x}, {:#x}, {:#x}, {:#x}) = {}",
            word(base),
            word(base + 1),
            word(base + 2),
            word(base + 3),
            word(base + 4),
            word(base + 5),
            word(base + 6)
        );
    }
}
