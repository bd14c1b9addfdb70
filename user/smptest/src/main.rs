//! `smptest`: the SMP tests and the SMP stress run, started by the kernel as the root
//! process of scenario `smp-user` (kernel/src/testing/smp_user.rs) on a machine with at
//! least four CPUs. Each test prints one `ok smp …` / `not ok smp …: why` line; the exit
//! code carries the counts (`passed << 16 | failed`) and the kernel prints the summary.
//!
//! What each test proves:
//!
//! 1. **IPC between pinned processes**: 10,000 `call`/`reply` round trips between this
//!    process (pinned to CPU 0) and a child (pinned to CPU 1), each message and reply
//!    checked by a checksum over its words and each side checking with `cpu_current`
//!    that it still runs on its CPU. A message crossing CPUs arrives whole and in order.
//! 2. **Four pinned spinners progress**: four threads pinned to CPUs 0–3 that never block
//!    each advance their counter, round after round, while the others spin, and each stays
//!    on its CPU: the scheduler runs threads on every CPU at once.
//! 3. **A cross-CPU kill**: the spinner on CPU 2 is killed by this thread on CPU 0; its
//!    counter is frozen the moment `thread_kill` returns (exactly: the kernel's kill waits
//!    until the victim has left user mode), while the spinners on CPUs 1 and 3 go on.
//! 4. **1,000 processes on every CPU**: four spawner threads pinned to CPUs 0–3 create,
//!    wait for and destroy 250 processes each; afterwards the kernel's free frames (plus
//!    the frames its heap holds) are exactly what they were before.
//! 5. **Unmap versus a reader on another CPU**: a thread on CPU 1 reads a page in a loop
//!    and bumps a sequence number after each read; this thread on CPU 0 unmaps the page.
//!    Once `memory_unmap` returns the number may move by at most the read in flight (so
//!    CPU 1's translation was gone when the call returned: without a TLB shootdown the
//!    reader would go on reading the freed frame through its stale entry), and the reader
//!    has died of the page fault.
//! 6. **The stress run** ([`stress`]): 8 threads in 4 processes doing random IPC, memory
//!    map/unmap, yields, migrations, sleeps and thread create/kill for a set span of
//!    guest time (timer ticks), then every process ends and the frames are back at their
//!    baseline; repeated as many times as the kernel asks (3 in `cargo xtask test`).
//!
//! Capabilities (installed by the kernel): slot 0 this program's image (`READ MAP GRANT`),
//! slot 1 the system-information capability (`READ GRANT`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{
    Error, Handle, MAP_WRITE, MessageInfo, PAGE_SIZE, PRIORITY_NORMAL, ProcessStatus, sysinfo,
};
use rt::{ipc, println, proc};

mod stress;

/// This program's image (`READ MAP GRANT`), to spawn children.
const IMAGE: Handle = Handle::new(0, 1);
/// The system-information capability (`READ GRANT`).
const SYSTEM: Handle = Handle::new(1, 1);

/// What a process does: the argument's low byte.
const ROOT: u64 = 0;
/// Child of test 1: pin to CPU 1 and answer calls on the endpoint in slot 1.
const PONG_SERVER: u64 = 1;
/// Child of test 4: exit at once with the index of the CPU it ran on.
const EXIT_AT_ONCE: u64 = 2;
/// A process of the stress run ([`stress::worker`]).
const STRESS_WORKER: u64 = 3;

/// Thread stacks: 16 KiB each, [`STACK_COUNT`] of them, mapped once.
const STACKS: u64 = 0x0000_3000_0000_0000;
const STACK_SIZE: u64 = 4 * PAGE_SIZE;
const STACK_COUNT: u64 = 16;
/// Stack slots of the root's threads.
const SPINNER_STACKS: u64 = 0;
const READER_STACK: u64 = 4;
const SPAWNER_STACKS: u64 = 5;
const WATCHDOG_STACK: u64 = 9;
/// The page test 5 unmaps under its reader.
const VICTIM: u64 = 0x0000_5000_0000_0000;
const VICTIM_MAGIC: u64 = 0x5eed_5eed_0bad_cafe;

/// The CPUs these tests use (0–3).
const CPUS: u64 = 4;
/// Round trips of test 1.
const ROUND_TRIPS: u64 = 10_000;
/// Progress each spinning thread must show per round, and the rounds.
const PROGRESS: u64 = 100_000;
const ROUNDS: u64 = 3;
/// Processes of test 4 (spread over [`CPUS`] spawners).
const PROCESSES: u64 = 1000;
/// Unmaps under a reader in test 5.
const UNMAP_ROUNDS: u64 = 5;
/// Reads the reader must have made before the unmap (its translation is cached by then).
const READS_BEFORE_UNMAP: u64 = 10_000;
/// Ticks test 5 watches the sequence number after the unmap.
const WATCH_TICKS: u64 = 10;
/// Ticks a wait may take before the test fails (a hang guard, not a speed check).
const PATIENCE_TICKS: u64 = 6000;

/// Ticks the frame count must hold still to be a baseline.
const STEADY_TICKS: u64 = 5;
/// IPC labels.
const LABEL_PING: u32 = 1;
const LABEL_STOP: u32 = 2;

rt::entry!(main);

fn main(argument: u64) -> i64 {
    match argument & 0xff {
        ROOT => root(argument),
        PONG_SERVER => pong_server(),
        EXIT_AT_ONCE => {
            // why: a CPU index, far below `i64::MAX`.
            proc::cpu_current() as i64
        }
        STRESS_WORKER => stress::worker(argument),
        _ => -1,
    }
}

/// Passed and failed tests.
pub struct Results {
    passed: u32,
    failed: u32,
}

impl Results {
    pub fn check(&mut self, name: &str, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok smp {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("not ok smp {name}: {why}");
            }
        }
    }
}

fn root(argument: u64) -> i64 {
    let seconds = (argument >> 8) & 0xffff;
    let runs = (argument >> 24) & 0xff;
    let mut results = Results {
        passed: 0,
        failed: 0,
    };
    let online = summary().map_or(0, |words| words[sysinfo::summary::CPUS]);
    println!("smptest: {online} CPUs; stress runs {runs} of {seconds} s");
    if online < CPUS {
        results.check("tests need 4 CPUs", Err("fewer CPUs are online"));
        return exit_code(&results);
    }
    if rt::memory_map(STACKS, STACK_COUNT * STACK_SIZE, MAP_WRITE).is_err() {
        results.check("thread stacks mapped", Err("memory_map failed"));
        return exit_code(&results);
    }
    results.check(
        "ipc ping-pong between processes pinned to CPUs 0 and 1 (10000 round trips, payload checksums)",
        ping_pong(),
    );
    let spinners = spinners(&mut results);
    results.check(
        "thread on CPU 2 killed from CPU 0: its counter freezes once thread_kill returns while CPUs 1 and 3 spin on",
        kill_across(&spinners),
    );
    results.check(
        "1000 processes created and destroyed by spawners pinned to CPUs 0-3 return every frame",
        many_processes(),
    );
    results.check(
        "memory_unmap on CPU 0 under a reader on CPU 1: the reader stops by the time the call returns and dies of the fault",
        unmap_under_reader(),
    );
    for run in 1..=runs {
        stress::run(&mut results, run, runs, seconds);
    }
    exit_code(&results)
}

/// Passed and failed counts in one exit code: `passed << 16 | failed`.
fn exit_code(results: &Results) -> i64 {
    i64::from(results.passed) << 16 | i64::from(results.failed)
}

/// The kernel's summary record.
pub fn summary() -> Result<[u64; sysinfo::summary::WORDS], &'static str> {
    rt::system::summary(SYSTEM)
}

/// Timer ticks since boot (`system_info`).
pub fn ticks() -> u64 {
    rt::system::ticks(SYSTEM)
}

/// The frames a leak check compares ([`rt::system::frames`]).
pub fn frames() -> Result<u64, &'static str> {
    rt::system::frames(SYSTEM)
}

/// [`frames`] once it has settled at `baseline`, at most a tenth of [`PATIENCE_TICKS`].
pub fn frames_settle(baseline: u64) -> Result<u64, &'static str> {
    rt::system::frames_settle(SYSTEM, baseline, PATIENCE_TICKS / 10)
}

/// [`frames`] once it has not changed for [`STEADY_TICKS`] ticks in a row, at most
/// [`PATIENCE_TICKS`].
pub fn frames_steady() -> Result<u64, &'static str> {
    rt::system::frames_steady(SYSTEM, STEADY_TICKS, PATIENCE_TICKS)
}

/// Spin (without blocking) until `done`, at most [`PATIENCE_TICKS`].
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = ticks();
    while !done() {
        if ticks().wrapping_sub(start) > PATIENCE_TICKS {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The top of stack slot `slot`.
fn stack_top(slot: u64) -> u64 {
    STACKS + (slot + 1) * STACK_SIZE
}

/// Pin the calling thread to `cpu` and check that it runs there.
fn pin_self(cpu: u64) -> Result<(), &'static str> {
    proc::thread_set_affinity(Handle::NULL, 1 << cpu).map_err(|_| "thread_set_affinity failed")?;
    if proc::cpu_current() != cpu {
        return Err("cpu_current is not the CPU just pinned to");
    }
    Ok(())
}

/// A checksum over a message's first three words and who sent it.
pub fn checksum(words: [u64; 3], salt: u64) -> u64 {
    (words[0] ^ words[1].rotate_left(13) ^ words[2].rotate_left(29) ^ salt.rotate_left(47))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The reply to a checked message: each word changed, a new checksum (salt `!salt`).
pub fn answer(words: [u64; 4], salt: u64) -> [u64; 4] {
    let out = [words[0].wrapping_add(1), !words[1], words[2].rotate_left(7)];
    [out[0], out[1], out[2], checksum(out, !salt)]
}

fn info(label: u32) -> MessageInfo {
    MessageInfo::new(label, 4, 0).unwrap_or_default()
}

/// Test 1's child: pin to CPU 1, then answer every `LABEL_PING` call (checking its
/// checksum and the CPU) until `LABEL_STOP`, which gets the counts
/// `[answered, bad checksums, answers not on CPU 1, 0]`.
fn pong_server() -> i64 {
    let endpoint = Handle::new(1, 1);
    let pinned = pin_self(1).is_ok();
    let (mut answered, mut bad, mut moved) = (0u64, 0u64, u64::from(!pinned));
    let mut message = ipc::recv(endpoint);
    loop {
        let Ok(received) = message else {
            return 1;
        };
        let words = received.words;
        if received.info.label() == LABEL_STOP {
            let _ = ipc::reply(info(LABEL_STOP), [answered, bad, moved, 0]);
            return 0;
        }
        if checksum([words[0], words[1], words[2]], 0) != words[3] {
            bad += 1;
        }
        if proc::cpu_current() != 1 {
            moved += 1;
        }
        answered += 1;
        message = ipc::reply_recv(endpoint, info(LABEL_PING), answer(words, 0));
    }
}

/// Test 1: this thread on CPU 0 calls the child on CPU 1.
fn ping_pong() -> Result<(), &'static str> {
    pin_self(0)?;
    let endpoint = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let child = proc::process_spawn(IMAGE, &[endpoint], PRIORITY_NORMAL, PONG_SERVER, 0)
        .map_err(|_| "process_spawn failed")?;
    proc::process_bind_death(child, death, 1).map_err(|_| "process_bind_death failed")?;
    let mut outcome = Ok(());
    let mut moved = 0u64;
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..ROUND_TRIPS {
        seed = next(seed);
        let sent = [round, seed, seed.rotate_left(32) ^ round];
        let words = [sent[0], sent[1], sent[2], checksum(sent, 0)];
        let Ok(reply) = ipc::call(endpoint, info(LABEL_PING), words) else {
            outcome = Err("a call failed");
            break;
        };
        let back = reply.words;
        if back != answer(words, 0) || checksum([back[0], back[1], back[2]], !0) != back[3] {
            println!("smptest: ping-pong round {round}: sent {words:x?}, got {back:x?}");
            outcome = Err("a reply's payload or checksum is wrong");
            break;
        }
        if proc::cpu_current() != 0 {
            moved += 1;
        }
    }
    let counts = ipc::call(endpoint, info(LABEL_STOP), [0; 4]).map(|reply| reply.words);
    if counts.is_err() {
        let _ = proc::process_kill(child);
    }
    let _ = ipc::wait(death);
    let status = proc::process_status(child);
    let _ = ipc::cap_delete(child);
    let _ = ipc::cap_delete(death);
    let _ = ipc::cap_delete(endpoint);
    outcome?;
    let [answered, bad, server_moved, _] = counts.map_err(|_| "the final call failed")?;
    println!(
        "smptest: ping-pong: {answered} calls answered on CPU 1, {bad} bad checksums, {server_moved} answers off CPU 1, {moved} replies received off CPU 0"
    );
    if answered != ROUND_TRIPS {
        return Err("the server did not answer every call");
    }
    if bad != 0 {
        return Err("the server saw bad checksums");
    }
    if server_moved != 0 || moved != 0 {
        return Err("a pinned side ran on another CPU");
    }
    if status != Ok(ProcessStatus::Exited(0)) {
        return Err("the server did not exit cleanly");
    }
    Ok(())
}

/// xorshift64.
pub fn next(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}

static COUNTERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// Per spinner: its CPU plus one once pinned; `u64::MAX` when it found itself elsewhere.
static SPINNER_CPU: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Pin to CPU `index`, then count, checking the CPU every 2^16 counts.
extern "C" fn spinner(index: u64) -> ! {
    // why: the index is below 4.
    let slot = index as usize % 4;
    let mark = if pin_self(index).is_ok() {
        index + 1
    } else {
        u64::MAX
    };
    SPINNER_CPU[slot].store(mark, Ordering::Release);
    let mut count = 0u64;
    loop {
        count += 1;
        COUNTERS[slot].store(count, Ordering::Relaxed);
        if count.is_multiple_of(1 << 16) && proc::cpu_current() != index {
            SPINNER_CPU[slot].store(u64::MAX, Ordering::Release);
        }
    }
}

/// Test 2: the four spinners, left running for test 3.
fn spinners(results: &mut Results) -> [Option<Handle>; 4] {
    let mut handles = [None; 4];
    let mut outcome = Ok(());
    for (index, handle) in handles.iter_mut().enumerate() {
        let index = index as u64;
        match proc::thread_create(
            spinner,
            stack_top(SPINNER_STACKS + index),
            index,
            PRIORITY_NORMAL,
        ) {
            Ok(created) => *handle = Some(created),
            Err(_) => outcome = Err("thread_create failed"),
        }
    }
    let count = |index: usize| COUNTERS[index].load(Ordering::Relaxed);
    let outcome = outcome.and_then(|()| {
        let pinned = |index: usize| SPINNER_CPU[index].load(Ordering::Acquire);
        if !spin_until(|| (0..4).all(|index| pinned(index) != 0)) {
            return Err("a spinner never started");
        }
        for round in 0..ROUNDS {
            let start: [u64; 4] = core::array::from_fn(count);
            if !spin_until(|| (0..4).all(|index| count(index) >= start[index] + PROGRESS)) {
                println!(
                    "smptest: spinners round {round}: from {start:?} to {:?}",
                    core::array::from_fn::<u64, 4, _>(count)
                );
                return Err("a spinner made no progress while the others ran");
            }
        }
        if (0..4).any(|index| pinned(index) != index as u64 + 1) {
            return Err("a spinner did not stay on its CPU");
        }
        Ok(())
    });
    println!(
        "smptest: spinners counted {:?}",
        core::array::from_fn::<u64, 4, _>(count)
    );
    results.check(
        "four spinning threads pinned to CPUs 0-3 all make progress",
        outcome,
    );
    handles
}

/// Test 3: kill the spinner on CPU 2 from CPU 0; then end the others.
fn kill_across(spinners: &[Option<Handle>; 4]) -> Result<(), &'static str> {
    let count = |index: usize| COUNTERS[index].load(Ordering::Relaxed);
    let outcome = (|| {
        let victim = spinners[2].ok_or("no spinner on CPU 2")?;
        pin_self(0)?;
        if count(2) == 0 {
            return Err("the spinner on CPU 2 never ran");
        }
        proc::thread_kill(victim).map_err(|_| "thread_kill failed")?;
        let frozen = count(2);
        let others = [count(1), count(3)];
        // Long enough that a victim still running would have counted many times.
        if !spin_until(|| {
            count(1) >= others[0] + 4 * PROGRESS && count(3) >= others[1] + 4 * PROGRESS
        }) {
            return Err("the spinners on CPUs 1 and 3 stopped too");
        }
        if count(2) != frozen {
            println!(
                "smptest: killed spinner counted {} after thread_kill returned at {frozen}",
                count(2)
            );
            return Err("the killed thread still ran");
        }
        if proc::thread_kill(victim) != Err(Error::PeerDied) {
            return Err("a second thread_kill did not find the thread ended");
        }
        Ok(())
    })();
    for handle in spinners.iter().flatten() {
        let _ = proc::thread_kill(*handle);
        let _ = ipc::cap_delete(*handle);
    }
    outcome
}

/// Per spawner: processes that exited cleanly, and where they ran (one counter per CPU).
static SPAWNED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static RAN_ON: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
/// Spawners done (successfully or not), and those that failed.
static SPAWNERS_DONE: AtomicU64 = AtomicU64::new(0);
static SPAWNERS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Pin to CPU `index`, then spawn, wait for and destroy `PROCESSES / CPUS` children.
extern "C" fn spawner(index: u64) -> ! {
    if spawn_many(index).is_err() {
        SPAWNERS_FAILED.fetch_add(1, Ordering::AcqRel);
    }
    SPAWNERS_DONE.fetch_add(1, Ordering::AcqRel);
    rt::exit(0)
}

fn spawn_many(index: u64) -> Result<(), &'static str> {
    pin_self(index)?;
    let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let mut outcome = Ok(());
    for _ in 0..PROCESSES / CPUS {
        // Processes of the others may still be torn down: a refusal for lack of thread
        // slots or memory is retried a tick later.
        let mut child = Err(Error::OutOfMemory);
        for _ in 0..1000 {
            child = proc::process_spawn(IMAGE, &[], PRIORITY_NORMAL, EXIT_AT_ONCE, 1 << 20);
            match child {
                Err(Error::OutOfMemory) => {
                    let _ = proc::sleep(1);
                }
                _ => break,
            }
        }
        let Ok(child) = child else {
            outcome = Err("process_spawn failed");
            break;
        };
        let bound = proc::process_bind_death(child, death, 1);
        let waited = bound.and_then(|()| ipc::wait(death));
        let status = proc::process_status(child);
        let _ = ipc::cap_delete(child);
        match (waited, status) {
            (Ok(_), Ok(ProcessStatus::Exited(cpu))) if (0..8).contains(&cpu) => {
                // why: checked to be 0..8.
                RAN_ON[cpu as usize].fetch_add(1, Ordering::Relaxed);
                // why: the index is below 4.
                SPAWNED[index as usize].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                outcome = Err("a child did not exit with its CPU");
                break;
            }
        }
    }
    let _ = ipc::cap_delete(death);
    outcome
}

/// Test 4.
fn many_processes() -> Result<(), &'static str> {
    let before = frames_steady()?;
    let mut handles = [None; 4];
    for (index, handle) in handles.iter_mut().enumerate() {
        let index = index as u64;
        *handle = proc::thread_create(
            spawner,
            stack_top(SPAWNER_STACKS + index),
            index,
            PRIORITY_NORMAL,
        )
        .ok();
        if handle.is_none() {
            SPAWNERS_FAILED.fetch_add(1, Ordering::AcqRel);
            SPAWNERS_DONE.fetch_add(1, Ordering::AcqRel);
        }
    }
    let start = ticks();
    while SPAWNERS_DONE.load(Ordering::Acquire) < CPUS
        && ticks().wrapping_sub(start) < 3 * PATIENCE_TICKS
    {
        let _ = proc::sleep(5);
    }
    let done = SPAWNERS_DONE.load(Ordering::Acquire);
    for handle in handles.iter().flatten() {
        let _ = proc::thread_kill(*handle);
        let _ = ipc::cap_delete(*handle);
    }
    let spawned: [u64; 4] = core::array::from_fn(|index| SPAWNED[index].load(Ordering::Relaxed));
    let ran_on: [u64; 8] = core::array::from_fn(|index| RAN_ON[index].load(Ordering::Relaxed));
    let after = frames_settle(before)?;
    println!(
        "smptest: processes: spawned per spawner (CPUs 0-3) {spawned:?}; children ran on CPUs {ran_on:?}; frames (free + kernel heap) before {before}, after {after}"
    );
    if done < CPUS {
        return Err("the spawners did not finish");
    }
    if SPAWNERS_FAILED.load(Ordering::Acquire) != 0 {
        return Err("a spawner failed");
    }
    if spawned.iter().sum::<u64>() != PROCESSES {
        return Err("fewer processes than asked for");
    }
    if after != before {
        return Err("the frames did not come back");
    }
    Ok(())
}

/// The reader's sequence number (one more after each read of [`VICTIM`]), its CPU plus
/// one (`u64::MAX`: it could not pin itself), and reads that found the wrong value.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static READER_CPU: AtomicU64 = AtomicU64::new(0);
static BAD_READS: AtomicU64 = AtomicU64::new(0);

/// Pin to CPU 1, then read [`VICTIM`] and bump [`SEQUENCE`] until the read faults.
extern "C" fn reader(_: u64) -> ! {
    let mark = if pin_self(1).is_ok() { 2 } else { u64::MAX };
    READER_CPU.store(mark, Ordering::Release);
    let word = rt::fault::user_word(VICTIM);
    loop {
        if word.load(Ordering::Relaxed) != VICTIM_MAGIC {
            BAD_READS.fetch_add(1, Ordering::Relaxed);
        }
        SEQUENCE.fetch_add(1, Ordering::Release);
    }
}

/// Test 5, [`UNMAP_ROUNDS`] times.
fn unmap_under_reader() -> Result<(), &'static str> {
    pin_self(0)?;
    for round in 0..UNMAP_ROUNDS {
        rt::memory_map(VICTIM, PAGE_SIZE, MAP_WRITE).map_err(|_| "memory_map failed")?;
        rt::fault::user_word(VICTIM).store(VICTIM_MAGIC, Ordering::Relaxed);
        READER_CPU.store(0, Ordering::Release);
        let start = SEQUENCE.load(Ordering::Acquire);
        let reader = proc::thread_create(reader, stack_top(READER_STACK), 0, PRIORITY_NORMAL)
            .map_err(|_| "thread_create failed")?;
        let outcome = (|| {
            if !spin_until(|| {
                READER_CPU.load(Ordering::Acquire) != 0
                    && SEQUENCE.load(Ordering::Acquire) >= start + READS_BEFORE_UNMAP
            }) {
                return Err("the reader never read");
            }
            if READER_CPU.load(Ordering::Acquire) != 2 {
                return Err("the reader is not on CPU 1");
            }
            rt::memory_unmap(VICTIM, PAGE_SIZE).map_err(|_| "memory_unmap failed")?;
            let returned = SEQUENCE.load(Ordering::Acquire);
            let watch = ticks();
            while ticks().wrapping_sub(watch) < WATCH_TICKS {
                core::hint::spin_loop();
            }
            let later = SEQUENCE.load(Ordering::Acquire);
            if later > returned + 1 {
                println!(
                    "smptest: unmap round {round}: the reader read {} more times after memory_unmap returned",
                    later - returned
                );
                return Err("the reader kept reading the unmapped page");
            }
            if proc::thread_kill(reader) != Err(Error::PeerDied) {
                return Err("the reader did not die of the fault");
            }
            if BAD_READS.load(Ordering::Relaxed) != 0 {
                return Err("the reader read a wrong value");
            }
            Ok(())
        })();
        let _ = proc::thread_kill(reader);
        let _ = ipc::cap_delete(reader);
        if outcome.is_err() {
            // The page may still be mapped if the unmap never ran.
            let _ = rt::memory_unmap(VICTIM, PAGE_SIZE);
            return outcome;
        }
    }
    println!("smptest: unmap: {UNMAP_ROUNDS} rounds, the reader stopped at the unmap each time");
    Ok(())
}

/// The watchdog's stack (for [`stress`]).
pub fn watchdog_stack() -> u64 {
    stack_top(WATCHDOG_STACK)
}
