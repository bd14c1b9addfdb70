//! Processes, threads, priorities, interrupt lines and devices, run by the root
//! process of scenario `user`, which holds the capabilities of `abi::root_slots`.
//!
//! Children are this same image, spawned from the `testsuite` memory capability with the
//! arguments [`CHILD_EXIT`] and [`CHILD_SPIN`]. Helper threads never call `exit` (that
//! would record this process's exit code): they are ended with `thread_kill`.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{
    Error, Handle, MAP_WRITE, ObjectType, PAGE_SIZE, PRIORITY_NORMAL, ProcessStatus, Rights,
};
use rt::ipc;
use rt::proc;

use crate::Results;

/// Child: signal bit [`CHILD_SIGNAL`] on its slot 1, then exit with `argument >> 8`.
pub const CHILD_EXIT: u64 = 15;
/// Child: spin forever without a system call.
pub const CHILD_SPIN: u64 = 16;
/// Child: receive one message on the endpoint in its slot 1, never reply, spin.
pub const CHILD_SERVER: u64 = 17;
/// Child: wait on the notification in its slot 1 forever.
pub const CHILD_PARK: u64 = 18;
const CHILD_SIGNAL: u64 = 0x10;
/// The memory budget of a child whose handle this suite keeps (its dead record keeps the
/// budget out of this process's until the handle goes).
const CHILD_BUDGET: u64 = 1 << 20;

const IMAGE: Handle = Handle::new(abi::root_slots::TESTSUITE_IMAGE, 1);
const IRQ: Handle = Handle::new(abi::root_slots::CONSOLE_IRQ, 1);
const DEVICE: Handle = Handle::new(abi::root_slots::CONSOLE_DEVICE, 1);
const MALFORMED: Handle = Handle::new(abi::root_slots::MALFORMED_IMAGE, 1);
/// A handle never issued (slot 120 is never filled by this suite).
const BOGUS: Handle = Handle::new(120, 7);

/// Helper thread stacks: 16 KiB each, from here.
const STACKS: u64 = 0x0000_3000_0000_0000;
const STACK_SIZE: u64 = 4 * PAGE_SIZE;
/// Where the MMIO test maps the console UART.
const MMIO_AT: u64 = 0x0000_3100_0000_0000;
/// Progress each spinning thread must show.
const PROGRESS: u64 = 1000;
/// Timer ticks a wait for progress may take before the test fails (a hang guard only).
const PATIENCE_TICKS: u64 = 3000;

static COUNTERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// What a child does (`main` dispatches here).
pub fn child(argument: u64) -> i64 {
    if argument & 0xff == CHILD_SPIN {
        loop {
            core::hint::spin_loop();
        }
    }
    if argument & 0xff == CHILD_PARK {
        loop {
            let _ = ipc::wait(Handle::new(1, 1));
        }
    }
    if argument & 0xff == CHILD_SERVER {
        let _ = ipc::recv(Handle::new(1, 1));
        loop {
            core::hint::spin_loop();
        }
    }
    if ipc::signal(Handle::new(1, 1), CHILD_SIGNAL).is_err() {
        return 99;
    }
    // why: the exit code is carried in bits 8.. of the argument.
    (argument >> 8) as i64
}

extern "C" fn spinner(index: u64) -> ! {
    // why: index is 0 to 3 (the thread's counter).
    let counter = &COUNTERS[(index as usize).min(3)];
    loop {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Yields a few times (letting the server child receive), kills the process `child`, then
/// keeps yielding until it is killed itself.
extern "C" fn server_killer(child: u64) -> ! {
    for _ in 0..5 {
        let _ = rt::yield_now();
    }
    let _ = proc::process_kill(Handle::from_raw(child));
    loop {
        let _ = rt::yield_now();
    }
}

extern "C" fn parker(notification: u64) -> ! {
    loop {
        let _ = ipc::wait(Handle::from_raw(notification));
    }
}

fn ticks() -> u64 {
    rt::bench_counter(abi::BenchCounter::Ticks).unwrap_or(0)
}

/// Spin (without yielding) until `done`, at most [`PATIENCE_TICKS`] ticks.
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

fn expect<T>(results: &mut Results, name: &str, actual: Result<T, Error>, expected: Error) {
    let outcome = match actual {
        Err(error) if error == expected => Ok(()),
        Err(_) => Err("a different error"),
        Ok(_) => Err("it succeeded"),
    };
    match outcome {
        Ok(()) => {
            results.passed += 1;
            rt::println!("ok user proc bad argument: {name}");
        }
        Err(why) => {
            results.failed += 1;
            rt::println!("not ok user proc bad argument: {name}: {why}");
        }
    }
}

pub fn tests(results: &mut Results) {
    spawn_and_exit(results);
    malformed_image(results);
    kill_spinning_child(results);
    spawn_until_refused(results);
    threads(results);
    killed_server(results);
    irq(results);
    device(results);
    bad_arguments(results);
}

fn spawn_and_exit(results: &mut Results) {
    let outcome = (|| {
        let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let shared = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let child = proc::process_spawn(
            IMAGE,
            &[shared],
            PRIORITY_NORMAL,
            CHILD_EXIT | 42 << 8,
            CHILD_BUDGET,
        )
        .map_err(|_| "process_spawn failed")?;
        proc::process_bind_death(child, death, 0x4).map_err(|_| "bind_death failed")?;
        if ipc::wait(death) != Ok(0x4) {
            return Err("the death notification did not carry the bound bits");
        }
        match proc::process_status(child) {
            Ok(ProcessStatus::Exited(42)) => {}
            Ok(ProcessStatus::Exited(99)) => return Err("the child could not signal its slot 1"),
            Ok(_) => return Err("the status is not exited(42)"),
            Err(_) => return Err("process_status failed"),
        }
        if ipc::poll(shared) != Ok(CHILD_SIGNAL) {
            return Err("the copied notification was not signalled by the child");
        }
        Ok(())
    })();
    results.check(
        "user process spawned from a boot module: exit code 42 seen after its death notification, copied capability used by the child",
        outcome,
    );
}

/// A killed server makes its clients' calls fail with `PeerDied` — the call it
/// had received and never answered, and every call after.
fn killed_server(results: &mut Results) {
    let outcome = (|| {
        let endpoint = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
        let child = proc::process_spawn(
            IMAGE,
            &[endpoint],
            PRIORITY_NORMAL,
            CHILD_SERVER,
            CHILD_BUDGET,
        )
        .map_err(|_| "process_spawn failed")?;
        // Keep only a capability that cannot receive: the child holds the server side.
        let client =
            ipc::cap_copy(endpoint, Rights::CALL | Rights::WRITE).map_err(|_| "cap_copy failed")?;
        ipc::cap_delete(endpoint).map_err(|_| "cap_delete failed")?;
        let top = STACKS + 4 * STACK_SIZE;
        let killer = proc::thread_create(server_killer, top, child.raw(), PRIORITY_NORMAL)
            .map_err(|_| "thread_create failed")?;
        let info = abi::MessageInfo::new(7, 1, 0).ok_or("message info")?;
        let first = ipc::call(client, info, [1, 2, 3, 4]);
        let second = ipc::call(client, info, [1, 2, 3, 4]);
        let _ = proc::thread_kill(killer);
        if proc::process_status(child) != Ok(ProcessStatus::Killed) {
            return Err("the server child was not killed");
        }
        match (first.err(), second.err()) {
            (Some(Error::PeerDied), Some(Error::PeerDied)) => Ok(()),
            (Some(Error::PeerDied), _) => Err("a call after the kill did not fail with PeerDied"),
            _ => Err("the call the killed server held did not fail with PeerDied"),
        }
    })();
    results.check(
        "user ipc calls to a killed server fail with PeerDied (the pending call and later ones)",
        outcome,
    );
}

fn malformed_image(results: &mut Results) {
    results.check(
        "user process spawn of a malformed image returns InvalidArgument",
        match proc::process_spawn(MALFORMED, &[], PRIORITY_NORMAL, 0, 0) {
            Err(Error::InvalidArgument) => Ok(()),
            Err(_) => Err("a different error"),
            Ok(_) => Err("it was spawned"),
        },
    );
}

fn kill_spinning_child(results: &mut Results) {
    let outcome = (|| {
        let death = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let child = proc::process_spawn(IMAGE, &[], PRIORITY_NORMAL, CHILD_SPIN, CHILD_BUDGET)
            .map_err(|_| "process_spawn failed")?;
        proc::process_bind_death(child, death, 0x8).map_err(|_| "bind_death failed")?;
        // Let it run (it spins until the timer preempts it).
        for _ in 0..3 {
            let _ = rt::yield_now();
        }
        if proc::process_status(child) != Ok(ProcessStatus::Running) {
            return Err("the spinning child is not running");
        }
        if ipc::poll(death) != Ok(0) {
            return Err("death signalled before the kill");
        }
        proc::process_kill(child).map_err(|_| "process_kill failed")?;
        if ipc::wait(death) != Ok(0x8) {
            return Err("no death notification");
        }
        if proc::process_status(child) != Ok(ProcessStatus::Killed) {
            return Err("the status is not killed");
        }
        if proc::process_kill(child).is_err() {
            return Err("killing an ended process failed");
        }
        Ok(())
    })();
    results.check(
        "user process kill ends a spinning child (death notification, status killed)",
        outcome,
    );
}

/// Spawn parked children until the kernel refuses one: the refusal is an error for the
/// caller, which keeps running in its own address space (a failed spawn tears the
/// half-built child down in the caller's context); then every child is killed and spawning
/// works again. Parked threads of this process take thread slots first, so the
/// refusal comes from the thread table (after the child's address space was built) or
/// from this process's budget (each child's share taken before anything is built).
fn spawn_until_refused(results: &mut Results) {
    const MAX: usize = 100;
    const PARKED: usize = 12;
    const PARKED_STACKS: u64 = STACKS + 16 * STACK_SIZE;
    let (Ok(park), Ok(death)) = (ipc::notification_create(), ipc::notification_create()) else {
        results.check(
            "user spawn refused for lack of threads or budget",
            Err("notification_create failed"),
        );
        return;
    };
    let mut parked = [Handle::NULL; PARKED];
    if rt::memory_map(PARKED_STACKS, PARKED as u64 * STACK_SIZE, MAP_WRITE).is_ok() {
        for (index, slot) in parked.iter_mut().enumerate() {
            let top = PARKED_STACKS + (index as u64 + 1) * STACK_SIZE;
            if let Ok(handle) = proc::thread_create(parker, top, park.raw(), PRIORITY_NORMAL) {
                *slot = handle;
            }
        }
    }
    let mut children = [Handle::from_raw(0); MAX];
    let mut count = 0;
    let refusal = loop {
        if count == MAX {
            break None;
        }
        match proc::process_spawn(IMAGE, &[park], PRIORITY_NORMAL, CHILD_PARK, 0) {
            Ok(child) => {
                children[count] = child;
                count += 1;
            }
            Err(error) => break Some(error),
        }
    };
    // Still alive, in its own address space: a system call, and this process's memory
    // read and written (a lost address space would have faulted already).
    let alive = rt::null() == Ok(0) && {
        let probe = core::hint::black_box(&COUNTERS[0]);
        probe.fetch_add(0, Ordering::Relaxed);
        true
    };
    let mut ended = true;
    for &child in &children[..count] {
        let killed = proc::process_bind_death(child, death, 0x1).is_ok()
            && proc::process_kill(child).is_ok()
            && ipc::wait(death) == Ok(0x1);
        ended &= killed;
        let _ = ipc::cap_delete(child);
    }
    for &thread in parked.iter().filter(|thread| **thread != Handle::NULL) {
        let _ = proc::thread_kill(thread);
        let _ = ipc::cap_delete(thread);
    }
    // Let the killed threads end before their stacks go.
    for _ in 0..3 {
        let _ = rt::yield_now();
    }
    let _ = rt::memory_unmap(PARKED_STACKS, PARKED as u64 * STACK_SIZE);
    let again = proc::process_spawn(IMAGE, &[park], PRIORITY_NORMAL, CHILD_PARK, 0);
    if let Ok(child) = again {
        let _ = proc::process_kill(child);
        let _ = ipc::cap_delete(child);
    }
    let _ = ipc::cap_delete(death);
    let _ = ipc::cap_delete(park);
    rt::println!("testsuite: {count} children spawned before the refusal ({refusal:?})");
    results.check(
        "user spawn refused for lack of threads or budget returns an error and the caller keeps running",
        match refusal {
            None => Err("no spawn was refused"),
            Some(Error::OutOfMemory | Error::NoSpace) if !alive => Err("the caller did not survive"),
            Some(Error::OutOfMemory | Error::NoSpace) if !ended => {
                Err("a child was not ended by process_kill")
            }
            Some(Error::OutOfMemory | Error::NoSpace) if again.is_err() => {
                Err("spawning after the kills failed")
            }
            Some(Error::OutOfMemory | Error::NoSpace) => Ok(()),
            Some(_) => Err("the refusal is not OutOfMemory or NoSpace"),
        },
    );
}

fn threads(results: &mut Results) {
    if rt::memory_map(STACKS, 4 * STACK_SIZE, MAP_WRITE).is_err() {
        results.check("user thread stacks mapped", Err("memory_map failed"));
        return;
    }
    let mut spinners = [Handle::NULL; 2];
    let mut created = Ok(());
    for (index, spinner_handle) in spinners.iter_mut().enumerate() {
        let top = STACKS + (index as u64 + 1) * STACK_SIZE;
        match proc::thread_create(spinner, top, index as u64, PRIORITY_NORMAL) {
            Ok(handle) => *spinner_handle = handle,
            Err(_) => created = Err("thread_create failed"),
        }
    }
    let count = |index: usize| COUNTERS[index].load(Ordering::Relaxed);
    results.check(
        "user two spinning threads at equal priority both make progress (round robin)",
        created.and_then(|()| {
            if spin_until(|| count(0) >= PROGRESS && count(1) >= PROGRESS) {
                Ok(())
            } else {
                Err("a thread made no progress")
            }
        }),
    );
    results.check(
        "user thread kill stops a spinning thread (its counter freezes while the other advances)",
        (|| {
            proc::thread_kill(spinners[0]).map_err(|_| "thread_kill failed")?;
            let frozen = count(0);
            let other = count(1);
            if !spin_until(|| count(1) >= other + PROGRESS) {
                return Err("the other thread stopped too");
            }
            if count(0) != frozen {
                return Err("the killed thread still ran");
            }
            proc::thread_kill(spinners[1]).map_err(|_| "thread_kill failed")?;
            Ok(())
        })(),
    );
    results.check(
        "user a lower-priority thread runs only while the higher-priority one blocks",
        lower_priority(),
    );
    results.check(
        "user a killed lower-priority thread ends while the higher-priority thread that killed it spins on their one CPU",
        on_cpu_zero(killed_below_a_spinner),
    );
    expect(
        results,
        "thread_kill of an ended thread",
        proc::thread_kill(spinners[0]),
        Error::PeerDied,
    );
    expect(
        results,
        "thread_set_priority of an ended thread",
        proc::thread_set_priority(spinners[0], 1),
        Error::PeerDied,
    );
    // A parked thread (blocked in `wait`) for the priority rules, then killed while
    // blocked.
    let outcome = (|| {
        let park = ipc::notification_create().map_err(|_| "notification_create failed")?;
        let top = STACKS + 3 * STACK_SIZE;
        let parked = proc::thread_create(parker, top, park.raw(), PRIORITY_NORMAL)
            .map_err(|_| "thread_create failed")?;
        let _ = rt::yield_now();
        if proc::thread_set_priority(parked, PRIORITY_NORMAL + 1) != Err(Error::PermissionDenied) {
            return Err("a priority above the caller's was accepted");
        }
        if proc::thread_set_priority(parked, PRIORITY_NORMAL - 4).is_err() {
            return Err("lowering the priority failed");
        }
        if proc::thread_set_priority(parked, PRIORITY_NORMAL).is_err() {
            return Err("raising back to the caller's priority failed");
        }
        if proc::thread_create(parker, top, park.raw(), PRIORITY_NORMAL + 1)
            != Err(Error::PermissionDenied)
        {
            return Err("thread_create above the caller's priority was accepted");
        }
        if proc::process_spawn(IMAGE, &[], PRIORITY_NORMAL + 1, CHILD_EXIT, 0)
            != Err(Error::PermissionDenied)
        {
            return Err("process_spawn above the caller's priority was accepted");
        }
        proc::thread_kill(parked).map_err(|_| "thread_kill of a blocked thread failed")?;
        let _ = rt::yield_now();
        // A live parker would take this signal; a dead one leaves it pending.
        ipc::signal(park, 0x1).map_err(|_| "signal failed")?;
        let _ = rt::yield_now();
        if ipc::poll(park) != Ok(0x1) {
            return Err("the blocked thread still ran after thread_kill");
        }
        Ok(())
    })();
    results.check(
        "user priority change above the caller's is refused (thread_set_priority, thread_create, process_spawn); lowering works; a blocked thread is killed",
        outcome,
    );
    results.check(
        "user a signal/wait ping-pong on one CPU leaves it to an equal-priority thread queued there (a woken thread does not run ahead of the queue)",
        ping_pong_shares(),
    );
    results.check(
        "user a thread just woken by signal, moved to CPU 1 by thread_set_affinity before it ran, runs on CPU 1 (InvalidArgument with one CPU)",
        on_cpu_zero(woken_then_moved),
    );
}

/// The partner of [`woken_then_moved`]: wait for a ping, answer with a pong whose bit is
/// the CPU it runs on, forever.
extern "C" fn cpu_reporter(_: u64) -> ! {
    let [ping, pong] = ping_pong();
    loop {
        let _ = ipc::wait(ping);
        let _ = ipc::signal(pong, 1 << proc::cpu_current().min(63));
    }
}

/// On CPU 0, wake a partner (blocked in `wait`, last run on CPU 0) with `signal`, then,
/// before it runs, allow it CPU 1 only: it must answer from CPU 1. The wake-up leaves it
/// out of CPU 0's queue for the `wait` that would follow, so this checks that the
/// affinity change moves it from there too. With one CPU the change is refused and the
/// partner answers from CPU 0.
fn woken_then_moved() -> Result<(), &'static str> {
    let (Ok(ping), Ok(pong)) = (ipc::notification_create(), ipc::notification_create()) else {
        return Err("notification_create failed");
    };
    PING_PONG[0].store(ping.raw(), Ordering::Release);
    PING_PONG[1].store(pong.raw(), Ordering::Release);
    let partner = proc::thread_create(cpu_reporter, STACKS + STACK_SIZE, 0, PRIORITY_NORMAL);
    let outcome = (|| {
        let partner = partner.map_err(|_| "thread_create failed")?;
        // Time for it to block in `wait` (it runs on this CPU when this thread sleeps).
        let _ = proc::sleep(3);
        ipc::signal(ping, 1).map_err(|_| "signal failed")?;
        let expected = match proc::thread_set_affinity(partner, 1 << 1) {
            Ok(()) => 1 << 1,
            Err(Error::InvalidArgument) => 1 << 0,
            Err(_) => return Err("thread_set_affinity failed"),
        };
        match ipc::wait(pong) {
            Ok(cpus) if cpus == expected => Ok(()),
            Ok(cpus) => {
                rt::println!(
                    "testsuite: the moved partner answered from CPUs {cpus:#b}, expected {expected:#b}"
                );
                Err("the woken thread did not run where its new affinity allows")
            }
            Err(_) => Err("wait failed"),
        }
    })();
    if let Ok(thread) = partner {
        let _ = proc::thread_kill(thread);
        let _ = ipc::cap_delete(thread);
    }
    let _ = ipc::cap_delete(ping);
    let _ = ipc::cap_delete(pong);
    outcome
}

/// The notifications of [`ping_pong_shares`]: this thread signals the first, its partner
/// answers on the second.
static PING_PONG: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// The two notifications in [`PING_PONG`].
fn ping_pong() -> [Handle; 2] {
    PING_PONG
        .each_ref()
        .map(|handle| Handle::from_raw(handle.load(Ordering::Acquire)))
}

/// The partner of [`ping_pong_shares`]: wait for a ping, answer with a pong, forever.
extern "C" fn ponger(_: u64) -> ! {
    let [ping, pong] = ping_pong();
    loop {
        let _ = ipc::wait(ping);
        let _ = ipc::signal(pong, 1);
    }
}

/// This thread, a partner and a spinner at one priority on CPU 0: while this thread and
/// its partner wake each other with `signal` and `wait` for 20 ticks, the spinner still
/// runs (a woken thread joins the CPU behind the threads already queued there, so the
/// ping-pong cannot keep the CPU to itself).
fn ping_pong_shares() -> Result<(), &'static str> {
    on_cpu_zero(ping_pong_on_one_cpu)
}

fn ping_pong_on_one_cpu() -> Result<(), &'static str> {
    let (Ok(ping), Ok(pong)) = (ipc::notification_create(), ipc::notification_create()) else {
        return Err("notification_create failed");
    };
    PING_PONG[0].store(ping.raw(), Ordering::Release);
    PING_PONG[1].store(pong.raw(), Ordering::Release);
    let count = || COUNTERS[3].load(Ordering::Relaxed);
    // Both stacks' threads above were killed: their stacks are free again.
    let partner = proc::thread_create(ponger, STACKS + STACK_SIZE, 0, PRIORITY_NORMAL);
    let spinning = proc::thread_create(spinner, STACKS + 2 * STACK_SIZE, 3, PRIORITY_NORMAL);
    let outcome = (|| {
        let (Ok(_), Ok(_)) = (partner, spinning) else {
            return Err("thread_create failed");
        };
        // Let the spinner start (and be queued again at a tick).
        if !spin_until(|| count() > 0) {
            return Err("the spinner never ran");
        }
        let before = count();
        let start = ticks();
        let mut rounds = 0u64;
        while ticks().wrapping_sub(start) < 20 {
            ipc::signal(ping, 1).map_err(|_| "signal failed")?;
            ipc::wait(pong).map_err(|_| "wait failed")?;
            rounds += 1;
        }
        let during = count() - before;
        if rounds == 0 {
            return Err("the partner never answered");
        }
        if during == 0 {
            rt::println!(
                "testsuite: {rounds} ping-pong rounds in 20 ticks, the spinner ran 0 times"
            );
            return Err("the spinner never ran while the two woke each other");
        }
        Ok(())
    })();
    for thread in [partner, spinning].into_iter().flatten() {
        let _ = proc::thread_kill(thread);
        let _ = ipc::cap_delete(thread);
    }
    let _ = ipc::cap_delete(ping);
    let _ = ipc::cap_delete(pong);
    outcome
}

/// A spinner at priority 1 under this thread (priority 8): it must not run while this
/// thread spins through several timer ticks, and must run while this thread sleeps.
fn lower_priority() -> Result<(), &'static str> {
    // Priorities order the threads of one CPU: both run on CPU 0, whatever the number of
    // CPUs.
    on_cpu_zero(lower_priority_on_one_cpu)
}

/// Run `body` with this thread (and every thread it makes: they take its affinity) on
/// CPU 0, then let it run anywhere again.
fn on_cpu_zero(body: fn() -> Result<(), &'static str>) -> Result<(), &'static str> {
    proc::thread_set_affinity(Handle::NULL, 1).map_err(|_| "thread_set_affinity failed")?;
    let outcome = body();
    proc::thread_set_affinity(Handle::NULL, u64::MAX).map_err(|_| "thread_set_affinity failed")?;
    outcome
}

fn lower_priority_on_one_cpu() -> Result<(), &'static str> {
    let count = || COUNTERS[2].load(Ordering::Relaxed);
    let top = STACKS + 4 * STACK_SIZE;
    let low = proc::thread_create(spinner, top, 2, 1).map_err(|_| "thread_create failed")?;
    let start = ticks();
    // Several ticks (each a chance to preempt) of spinning without a system call.
    while ticks().wrapping_sub(start) < 10 {
        core::hint::spin_loop();
    }
    let starved = count();
    let _ = rt::test_sleep(5, 0);
    let ran = count();
    proc::thread_kill(low).map_err(|_| "thread_kill failed")?;
    match (starved, ran) {
        (0, ran) if ran > 0 => Ok(()),
        (0, _) => Err("the lower-priority thread never ran while this one slept"),
        _ => Err("the lower-priority thread ran while a higher one was ready"),
    }
}

/// Kill a ready thread of priority 1 from this thread (priority 8), both on CPU 0, and spin
/// without a system call that blocks: the killed thread must still get to end (it runs
/// its way out at the highest priority), which shows in this process's count of threads
/// not yet freed.
fn killed_below_a_spinner() -> Result<(), &'static str> {
    let threads = crate::limits::live_threads;
    let top = STACKS + 4 * STACK_SIZE;
    let low = proc::thread_create(spinner, top, 2, 1).map_err(|_| "thread_create failed")?;
    let before = threads()?;
    proc::thread_kill(low).map_err(|_| "thread_kill failed")?;
    if spin_until(|| threads().is_ok_and(|now| now < before)) {
        Ok(())
    } else {
        Err("the killed thread was not freed while this thread spun")
    }
}

fn irq(results: &mut Results) {
    expect(
        results,
        "irq_ack of an unbound line",
        proc::irq_ack(IRQ),
        Error::InvalidArgument,
    );
    let outcome = (|| {
        let note = ipc::notification_create().map_err(|_| "notification_create failed")?;
        proc::irq_bind(IRQ, note, 0x100).map_err(|_| "irq_bind failed")?;
        if proc::irq_test_raise(IRQ) != Ok(true) {
            return Err("the bound line did not signal");
        }
        if ipc::wait(note) != Ok(0x100) {
            return Err("the notification did not carry the bound bits");
        }
        if proc::irq_test_raise(IRQ) != Ok(false) {
            return Err("the line was not masked after delivery");
        }
        if ipc::poll(note) != Ok(0) {
            return Err("a masked line signalled");
        }
        proc::irq_ack(IRQ).map_err(|_| "irq_ack failed")?;
        if proc::irq_test_raise(IRQ) != Ok(true) || ipc::poll(note) != Ok(0x100) {
            return Err("irq_ack did not unmask the line");
        }
        proc::irq_ack(IRQ).map_err(|_| "irq_ack failed")?;
        Ok(())
    })();
    results.check(
        "user irq delivery: a bound line signals its notification and stays masked until irq_ack",
        outcome,
    );
}

fn device(results: &mut Results) {
    match ipc::cap_identify(DEVICE) {
        Ok((ObjectType::IoPorts, _)) => ports(results),
        Ok((ObjectType::Mmio, _)) => mmio(results),
        _ => results.check(
            "user console device capability",
            Err("slot 2 is neither I/O ports nor MMIO"),
        ),
    }
}

/// COM1: ports 0x3F8..=0x3FF; 0x3FF is the scratch register.
fn ports(results: &mut Results) {
    const SCRATCH: u64 = 0x3ff;
    let outcome = (|| {
        for value in [0xa5u32, 0x5a] {
            proc::port_out(DEVICE, SCRATCH, 1, u64::from(value)).map_err(|_| "port_out failed")?;
            if proc::port_in(DEVICE, SCRATCH, 1) != Ok(value) {
                return Err("the scratch register did not read back");
            }
        }
        Ok(())
    })();
    results.check(
        "user COM1 scratch register write and read back through the port capability",
        outcome,
    );
    expect(
        results,
        "port_in below the granted range",
        proc::port_in(DEVICE, 0x3f7, 1),
        Error::PermissionDenied,
    );
    expect(
        results,
        "port_in beyond the granted range",
        proc::port_in(DEVICE, 0x400, 1),
        Error::PermissionDenied,
    );
    expect(
        results,
        "port_in straddling the end of the range",
        proc::port_in(DEVICE, 0x3fe, 4),
        Error::PermissionDenied,
    );
    expect(
        results,
        "port_in width 3",
        proc::port_in(DEVICE, 0x3f8, 3),
        Error::InvalidArgument,
    );
    expect(
        results,
        "port_in port above 0xffff",
        proc::port_in(DEVICE, 0x1_03f8, 1),
        Error::InvalidArgument,
    );
    expect(
        results,
        "port_out outside the granted range",
        proc::port_out(DEVICE, 0x80, 1, 0),
        Error::PermissionDenied,
    );
    let read_only = ipc::cap_copy(DEVICE, Rights::READ);
    expect(
        results,
        "port_out without WRITE",
        read_only.and_then(|ports| proc::port_out(ports, SCRATCH, 1, 0)),
        Error::PermissionDenied,
    );
    expect(
        results,
        "mmio_map of an I/O-port capability",
        proc::mmio_map(DEVICE, MMIO_AT),
        Error::InvalidArgument,
    );
}

/// The PL011: PeriphID0/1 at 0xFE0/0xFE4 are 0x11/0x10; PCellID0..3 at 0xFF0.. are the
/// PrimeCell signature 0x0D 0xF0 0x05 0xB1.
fn mmio(results: &mut Results) {
    let outcome = (|| {
        // The PL011's register block is one page (QEMU virt: 0x1000 bytes).
        let uart = proc::Mmio::map(DEVICE, MMIO_AT, PAGE_SIZE).map_err(|_| "mmio_map failed")?;
        let expected = [
            (0xfe0, 0x11),
            (0xfe4, 0x10),
            (0xff0, 0x0d),
            (0xff4, 0xf0),
            (0xff8, 0x05),
            (0xffc, 0xb1),
        ];
        for (offset, value) in expected {
            if uart.read32(offset).map(|register| register & 0xff) != Some(value) {
                return Err("an ID register has the wrong value");
            }
        }
        Ok(())
    })();
    results.check(
        "user mmio_map of the PL011 and a read of its ID registers",
        outcome,
    );
    expect(
        results,
        "mmio_map over an existing mapping",
        proc::mmio_map(DEVICE, MMIO_AT),
        Error::InvalidArgument,
    );
    expect(
        results,
        "mmio_map at a misaligned address",
        proc::mmio_map(DEVICE, MMIO_AT + 8),
        Error::InvalidArgument,
    );
    expect(
        results,
        "mmio_map at a kernel address",
        proc::mmio_map(DEVICE, 0xffff_ffff_8000_0000),
        Error::BadAddress,
    );
    let no_map = ipc::cap_copy(DEVICE, Rights::READ | Rights::WRITE);
    expect(
        results,
        "mmio_map without MAP",
        no_map.and_then(|mmio| proc::mmio_map(mmio, MMIO_AT + PAGE_SIZE)),
        Error::PermissionDenied,
    );
    expect(
        results,
        "port_in on an MMIO capability",
        proc::port_in(DEVICE, 0, 1),
        Error::InvalidArgument,
    );
}

fn bad_arguments(results: &mut Results) {
    let Ok(note) = ipc::notification_create() else {
        results.check("user proc bad arguments", Err("notification_create failed"));
        return;
    };
    // A live process to aim at: a spinning child at priority 1, which does not run while
    // this thread is busy.
    let child = proc::process_spawn(IMAGE, &[], 1, CHILD_SPIN, CHILD_BUDGET);
    let child = child.unwrap_or(Handle::NULL);
    let no_grant = ipc::cap_copy(note, Rights::SIGNAL | Rights::WAIT).unwrap_or(Handle::NULL);
    let no_signal = ipc::cap_copy(note, Rights::WAIT).unwrap_or(Handle::NULL);
    let image_no_read = ipc::cap_copy(IMAGE, Rights::GRANT).unwrap_or(Handle::NULL);
    let child_no_control = ipc::cap_copy(child, Rights::READ).unwrap_or(Handle::NULL);
    let child_no_read = ipc::cap_copy(child, Rights::CONTROL).unwrap_or(Handle::NULL);
    let irq_no_control = ipc::cap_copy(IRQ, Rights::NONE).unwrap_or(Handle::NULL);
    let n = PRIORITY_NORMAL;

    // process_spawn
    let spawn = |image: Handle, caps: &[Handle], priority: u64| {
        proc::process_spawn(image, caps, priority, CHILD_EXIT, CHILD_BUDGET)
    };
    expect(
        results,
        "process_spawn invalid handle",
        spawn(BOGUS, &[], n),
        Error::InvalidHandle,
    );
    expect(
        results,
        "process_spawn of a notification",
        spawn(note, &[], n),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_spawn image without READ",
        spawn(image_no_read, &[], n),
        Error::PermissionDenied,
    );
    expect(
        results,
        "process_spawn priority out of range",
        spawn(IMAGE, &[], 32),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_spawn too many capabilities",
        proc::process_spawn_raw(IMAGE.raw(), STACKS, 17, n, 0, 0),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_spawn capability list at a kernel address",
        proc::process_spawn_raw(IMAGE.raw(), 0xffff_ffff_8000_0000, 1, n, 0, 0),
        Error::BadAddress,
    );
    expect(
        results,
        "process_spawn capability list unmapped",
        proc::process_spawn_raw(IMAGE.raw(), 0x0000_1000_0000_0000, 1, n, 0, 0),
        Error::BadAddress,
    );
    expect(
        results,
        "process_spawn listed invalid handle",
        spawn(IMAGE, &[BOGUS], n),
        Error::InvalidHandle,
    );
    expect(
        results,
        "process_spawn listed capability without GRANT",
        spawn(IMAGE, &[no_grant], n),
        Error::PermissionDenied,
    );
    // process_kill
    expect(
        results,
        "process_kill invalid handle",
        proc::process_kill(BOGUS),
        Error::InvalidHandle,
    );
    expect(
        results,
        "process_kill of a notification",
        proc::process_kill(note),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_kill without CONTROL",
        proc::process_kill(child_no_control),
        Error::PermissionDenied,
    );
    // process_bind_death
    expect(
        results,
        "process_bind_death invalid handle",
        proc::process_bind_death(BOGUS, note, 1),
        Error::InvalidHandle,
    );
    expect(
        results,
        "process_bind_death of a notification",
        proc::process_bind_death(note, note, 1),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_bind_death bits 0",
        proc::process_bind_death(child, note, 0),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_bind_death to a process handle",
        proc::process_bind_death(child, child, 1),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_bind_death notification without SIGNAL",
        proc::process_bind_death(child, no_signal, 1),
        Error::PermissionDenied,
    );
    expect(
        results,
        "process_bind_death without CONTROL",
        proc::process_bind_death(child_no_control, note, 1),
        Error::PermissionDenied,
    );
    // process_status
    expect(
        results,
        "process_status invalid handle",
        proc::process_status(BOGUS),
        Error::InvalidHandle,
    );
    expect(
        results,
        "process_status of a notification",
        proc::process_status(note),
        Error::InvalidArgument,
    );
    expect(
        results,
        "process_status without READ",
        proc::process_status(child_no_read),
        Error::PermissionDenied,
    );
    // thread_create
    let entry = parker as extern "C" fn(u64) -> ! as usize as u64;
    let top = STACKS + STACK_SIZE;
    expect(
        results,
        "thread_create entry at a kernel address",
        proc::thread_create_raw(0xffff_ffff_8000_0000, top, 0, n),
        Error::BadAddress,
    );
    expect(
        results,
        "thread_create stack at a kernel address",
        proc::thread_create_raw(entry, 0xffff_ffff_8000_0000, 0, n),
        Error::BadAddress,
    );
    expect(
        results,
        "thread_create misaligned stack",
        proc::thread_create_raw(entry, top - 8, 0, n),
        Error::InvalidArgument,
    );
    expect(
        results,
        "thread_create priority out of range",
        proc::thread_create_raw(entry, top, 0, 32),
        Error::InvalidArgument,
    );
    // thread_kill / thread_set_priority
    expect(
        results,
        "thread_kill invalid handle",
        proc::thread_kill(BOGUS),
        Error::InvalidHandle,
    );
    expect(
        results,
        "thread_kill of a notification",
        proc::thread_kill(note),
        Error::InvalidArgument,
    );
    expect(
        results,
        "thread_set_priority invalid handle",
        proc::thread_set_priority(BOGUS, 1),
        Error::InvalidHandle,
    );
    expect(
        results,
        "thread_set_priority of a process",
        proc::thread_set_priority(child, 1),
        Error::InvalidArgument,
    );
    // irq_bind / irq_ack / irq_test_raise
    expect(
        results,
        "irq_bind invalid handle",
        proc::irq_bind(BOGUS, note, 1),
        Error::InvalidHandle,
    );
    expect(
        results,
        "irq_bind of a notification",
        proc::irq_bind(note, note, 1),
        Error::InvalidArgument,
    );
    expect(
        results,
        "irq_bind bits 0",
        proc::irq_bind(IRQ, note, 0),
        Error::InvalidArgument,
    );
    expect(
        results,
        "irq_bind notification without SIGNAL",
        proc::irq_bind(IRQ, no_signal, 1),
        Error::PermissionDenied,
    );
    expect(
        results,
        "irq_bind without CONTROL",
        proc::irq_bind(irq_no_control, note, 1),
        Error::PermissionDenied,
    );
    expect(
        results,
        "irq_ack invalid handle",
        proc::irq_ack(BOGUS),
        Error::InvalidHandle,
    );
    expect(
        results,
        "irq_ack of a notification",
        proc::irq_ack(note),
        Error::InvalidArgument,
    );
    expect(
        results,
        "irq_ack without CONTROL",
        proc::irq_ack(irq_no_control),
        Error::PermissionDenied,
    );
    expect(
        results,
        "irq_test_raise of a notification",
        proc::irq_test_raise(note),
        Error::InvalidArgument,
    );
    // port_in / port_out / mmio_map: wrong object and bad handle (range cases above)
    expect(
        results,
        "port_in invalid handle",
        proc::port_in(BOGUS, 0x3f8, 1),
        Error::InvalidHandle,
    );
    expect(
        results,
        "port_out of a notification",
        proc::port_out(note, 0x3f8, 1, 0),
        Error::InvalidArgument,
    );
    expect(
        results,
        "mmio_map invalid handle",
        proc::mmio_map(BOGUS, MMIO_AT),
        Error::InvalidHandle,
    );
    expect(
        results,
        "mmio_map of a notification",
        proc::mmio_map(note, MMIO_AT),
        Error::InvalidArgument,
    );
    // The spinning child is not needed any more.
    let _ = proc::process_kill(child);
}
