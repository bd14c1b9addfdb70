//! Memory budgets from user space, run by the root process of scenario `user` (which holds
//! the system-information capability to read budgets and free frames): a child given a
//! small budget runs out of it — pages, objects, threads — while this process and another
//! child still map memory and make threads; spawns the caller's budget cannot pay for are
//! refused and the caller goes on; every byte of a child's budget comes back to its parent
//! once the child is dead and its handle deleted, and the frames come back too.

use abi::{Error, Handle, MAP_WRITE, PAGE_SIZE, PRIORITY_NORMAL, sysinfo};
use rt::{ipc, proc};

use crate::Results;

/// Child: map pages until the budget refuses one, give the last one back, make
/// notifications until the budget refuses one, try to make a thread; report on the
/// notification in slot 1 ([`eater_report`]) and sleep until killed.
pub const EATER: u64 = 21;
/// Child: map [`PROBE_PAGES`] pages and make a thread; signal [`PROBE_OK`] on the
/// notification in slot 1 and sleep until killed.
pub const PROBE: u64 = 22;

/// The eater's budget: room for its image, stack, record and first thread, and some pages.
const EATER_BUDGET: u64 = 1 << 20;
/// A budget too small for any image, stack and first thread.
const TINY_BUDGET: u64 = 64 * 1024;
const PROBE_PAGES: u64 = 64;

const SYSTEM: Handle = Handle::new(abi::root_slots::SYSTEM, 1);
const IMAGE: Handle = Handle::new(abi::root_slots::TESTSUITE_IMAGE, 1);
/// Where the eater and the probe map, and where this process maps a thread's stack.
const EAT_AT: u64 = 0x0000_6000_0000_0000;
const STACK_AT: u64 = 0x0000_6100_0000_0000;
const STACK_PAGES: u64 = 4;

const EATER_DONE: u64 = 1 << 0;
/// The eater's maps ended with `OutOfMemory`.
const EATER_PAGES_REFUSED: u64 = 1 << 1;
/// Its notifications ended with `OutOfMemory`.
const EATER_OBJECTS_REFUSED: u64 = 1 << 2;
/// Its thread was refused with `OutOfMemory`.
const EATER_THREAD_REFUSED: u64 = 1 << 3;
pub const PROBE_OK: u64 = 1 << 4;
const PROBE_FAILED: u64 = 1 << 5;
const DEATH: u64 = 1 << 6;
/// The eater's counts: pages in bits 16..40, notifications in bits 40..56.
const PAGES_SHIFT: u32 = 16;
const OBJECTS_SHIFT: u32 = 40;

pub fn tests(results: &mut Results) {
    exhaustion(results);
    refusals(results);
    default_share(results);
    woken_waiter(results);
    closed_waiter(results);
    answered_server(results);
}

/// The notification [`waiter`] reports on (set before it is made).
static REPORT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// What [`waiter`] signals on [`REPORT`] when its `wait` returned [`GO`].
const WOKEN: u64 = 1 << 0;
/// What [`woken_waiter`] signals to wake [`waiter`], and what [`waiter`] reports when its
/// `wait` ended any other way than [`WOKEN`] or [`CLOSED`] say.
const GO: u64 = 1 << 1;
/// What [`waiter`] signals on [`REPORT`] when its `wait` ended with `PeerDied`.
const CLOSED: u64 = 1 << 3;

/// Thread of [`woken_waiter`] and [`closed_waiter`]: wait on notification `handle`, report
/// on [`REPORT`] how the wait ended, then sleep, queued on nothing.
extern "C" fn waiter(handle: u64) -> ! {
    let bits = match ipc::wait(Handle::from_raw(handle)) {
        Ok(GO) => WOKEN,
        Err(Error::PeerDied) => CLOSED,
        _ => GO,
    };
    let report = Handle::from_raw(REPORT.load(core::sync::atomic::Ordering::Acquire));
    let _ = ipc::signal(report, bits);
    sleep_forever()
}

/// A thread woken from `wait` keeps no hold on the notification: once the last capability
/// to it is deleted, its charge comes back at once, while the woken thread lives on.
fn woken_waiter(results: &mut Results) {
    let outcome = charge_comes_back(
        ipc::notification_create,
        waiter,
        |watched, report| {
            let signalled = ipc::signal(watched, GO).is_ok();
            if !(signalled && ipc::wait(report) == Ok(WOKEN)) {
                return Err("the waiter was not woken with the signalled bits");
            }
            Ok(())
        },
        "a notification",
        |_| Ok(()),
    );
    results.check(
        "user budget: a thread woken from wait holds nothing of the notification: deleting its last capability gives the charge back at once",
        outcome,
    );
}

/// A thread still waiting on a notification holds nothing of it either: deleting the last
/// capability to it wakes the waiter with `PeerDied` (nothing can signal it through a
/// capability any more) and gives the charge back at once.
fn closed_waiter(results: &mut Results) {
    let outcome = charge_comes_back(
        ipc::notification_create,
        waiter,
        |_, _| Ok(()),
        "a notification",
        |report| {
            for _ in 0..20 {
                match ipc::poll(report) {
                    Ok(CLOSED) => return Ok(()),
                    Ok(0) => {
                        let _ = proc::sleep(1);
                    }
                    _ => break,
                }
            }
            Err("the waiter's wait did not end with PeerDied")
        },
    );
    results.check(
        "user budget: deleting the last capability to a notification a thread waits on wakes it with PeerDied and gives the charge back at once",
        outcome,
    );
}

/// What [`server`] signals on [`REPORT`] once it answered both calls.
const SERVED: u64 = 1 << 2;

/// Thread of [`answered_server`]: on endpoint `handle`, receive a call, answer it with
/// `reply_recv` (queuing there again), answer the next with a plain `reply`, each time
/// with the first word plus one; report on [`REPORT`], then sleep, queued on nothing.
extern "C" fn server(handle: u64) -> ! {
    let endpoint = Handle::from_raw(handle);
    let info = abi::MessageInfo::new(0, 1, 0).unwrap_or_default();
    let served = (|| {
        let first = ipc::recv(endpoint).ok()?;
        let second = ipc::reply_recv(endpoint, info, [first.words[0] + 1, 0, 0, 0]).ok()?;
        ipc::reply(info, [second.words[0] + 1, 0, 0, 0]).ok()
    })();
    let report = Handle::from_raw(REPORT.load(core::sync::atomic::Ordering::Acquire));
    let _ = ipc::signal(report, if served.is_some() { SERVED } else { GO });
    sleep_forever()
}

/// Neither side of a call keeps a hold on the endpoint once the call is answered: after a
/// server answered two calls (with `reply_recv`, then `reply`) and went to sleep, deleting
/// the endpoint's last capability gives its charge back at once.
fn answered_server(results: &mut Results) {
    let outcome = charge_comes_back(
        ipc::endpoint_create,
        server,
        |endpoint, report| {
            let info = abi::MessageInfo::new(0, 1, 0).unwrap_or_default();
            let answers = [
                ipc::call(endpoint, info, [10, 0, 0, 0]).map(|answer| answer.words[0]),
                ipc::call(endpoint, info, [20, 0, 0, 0]).map(|answer| answer.words[0]),
            ];
            if answers != [Ok(11), Ok(21)] || ipc::wait(report) != Ok(SERVED) {
                return Err("the server did not answer both calls");
            }
            Ok(())
        },
        "an endpoint",
        |_| Ok(()),
    );
    results.check(
        "user budget: neither side of an answered call holds the endpoint: deleting its last capability gives the charge back at once",
        outcome,
    );
}

/// Make an object with `create` (measuring its charge) and a thread at `entry` given its
/// handle; once the thread has had time to block on it (3 ticks), run `exercise` (the
/// object's and [`REPORT`]'s handles: it returns whether the thread did its part and
/// reported), then delete the object's capability: its charge must come back at once,
/// while the thread lives on (asleep, queued on nothing), and `deleted` (given
/// [`REPORT`]) checks what the thread reported after the deletion. `object` names it in a
/// report.
fn charge_comes_back(
    create: fn() -> Result<Handle, Error>,
    entry: extern "C" fn(u64) -> !,
    exercise: impl FnOnce(Handle, Handle) -> Result<(), &'static str>,
    object: &str,
    deleted: fn(Handle) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let report = ipc::notification_create().map_err(|_| "notification_create failed")?;
    REPORT.store(report.raw(), core::sync::atomic::Ordering::Release);
    let empty = used()?;
    let made = create().map_err(|_| "creating the object failed")?;
    let charge = used()? - empty;
    rt::memory_map(STACK_AT, STACK_PAGES * PAGE_SIZE, MAP_WRITE)
        .map_err(|_| "mapping the thread's stack failed")?;
    let thread = proc::thread_create(
        entry,
        STACK_AT + STACK_PAGES * PAGE_SIZE,
        made.raw(),
        PRIORITY_NORMAL,
    );
    // Time for it to block (else the test shows nothing, and passes).
    let _ = proc::sleep(3);
    let exercised = match thread {
        Ok(_) => exercise(made, report),
        Err(_) => Err("thread_create failed"),
    };
    let before = used()?;
    let removed = ipc::cap_delete(made).is_ok();
    settle();
    let after = used()?;
    let reported = deleted(report);
    if let Ok(thread) = thread {
        let _ = proc::thread_kill(thread);
        let _ = ipc::cap_delete(thread);
    }
    let _ = ipc::cap_delete(report);
    settle();
    let _ = rt::memory_unmap(STACK_AT, STACK_PAGES * PAGE_SIZE);
    exercised?;
    if !removed {
        return Err("cap_delete of the object failed");
    }
    reported?;
    if charge == 0 {
        return Err("the object charged nothing to the budget");
    }
    if after + charge != before {
        rt::println!("testsuite: budget used {before} before, {after} after, {object} {charge}");
        return Err("the deleted object's charge did not come back while the thread lives");
    }
    Ok(())
}

pub(crate) extern "C" fn sleeper(_: u64) -> ! {
    loop {
        let _ = proc::sleep(abi::SLEEP_MAX_TICKS);
    }
}

pub(crate) fn sleep_forever() -> ! {
    sleeper(0)
}

/// The [`EATER`] child.
pub fn eater() -> i64 {
    let report = Handle::new(1, 1);
    let mut bits = EATER_DONE;
    let mut pages = 0u64;
    let refusal = loop {
        match rt::memory_map(EAT_AT + pages * PAGE_SIZE, PAGE_SIZE, MAP_WRITE) {
            Ok(_) => pages += 1,
            Err(error) => break error,
        }
    };
    if refusal == Error::OutOfMemory {
        bits |= EATER_PAGES_REFUSED;
    }
    // Room for a few objects: the last page back.
    let mut objects = 0u64;
    if pages > 0 && rt::memory_unmap(EAT_AT + (pages - 1) * PAGE_SIZE, PAGE_SIZE).is_ok() {
        let refusal = loop {
            match ipc::notification_create() {
                Ok(_) => objects += 1,
                Err(error) => break error,
            }
        };
        if refusal == Error::OutOfMemory {
            bits |= EATER_OBJECTS_REFUSED;
        }
    }
    // Less than an object's worth is left: a thread (record and kernel stack) cannot fit.
    let stack_top = EAT_AT + PAGE_SIZE;
    match proc::thread_create(sleeper, stack_top, 0, PRIORITY_NORMAL) {
        Err(Error::OutOfMemory) => bits |= EATER_THREAD_REFUSED,
        Err(_) => {}
        Ok(_) => {}
    }
    let _ = ipc::signal(
        report,
        bits | pages.min(0xff_ffff) << PAGES_SHIFT | objects.min(0xffff) << OBJECTS_SHIFT,
    );
    sleep_forever()
}

/// The [`PROBE`] child: memory and a thread, with the eater out of budget.
pub fn probe() -> i64 {
    let report = Handle::new(1, 1);
    let mapped = rt::memory_map(EAT_AT, PROBE_PAGES * PAGE_SIZE, MAP_WRITE).is_ok();
    let thread = mapped
        && proc::thread_create(
            sleeper,
            EAT_AT + PROBE_PAGES * PAGE_SIZE,
            0,
            PRIORITY_NORMAL,
        )
        .is_ok();
    let _ = ipc::signal(report, if thread { PROBE_OK } else { PROBE_FAILED });
    sleep_forever()
}

/// A budget record: the caller's own (`pid` 0) or a live process's.
pub(crate) fn budget_of(pid: u64) -> Result<[u64; sysinfo::budget::WORDS], &'static str> {
    let mut words = [0u64; sysinfo::budget::WORDS];
    match proc::system_info(SYSTEM, sysinfo::BUDGET, pid, &mut words) {
        Ok(count) if count == words.len() => Ok(words),
        _ => Err("system_info BUDGET failed"),
    }
}

pub(crate) fn used() -> Result<u64, &'static str> {
    Ok(budget_of(0)?[sysinfo::budget::USED])
}

/// Free frames plus the frames the kernel heap holds (it keeps what it grew by).
pub(crate) fn frames() -> Result<u64, &'static str> {
    use sysinfo::summary::*;
    let mut words = [0u64; WORDS];
    match proc::system_info(SYSTEM, sysinfo::SUMMARY, 0, &mut words) {
        Ok(count) if count == words.len() => Ok(words[FREE_FRAMES] + words[HEAP_FRAMES]),
        _ => Err("system_info SUMMARY failed"),
    }
}

/// Kill `process`, wait until it is gone (death on `death`) and delete the handle.
pub(crate) fn end(process: Handle, death: Handle) -> Result<(), &'static str> {
    let ended = proc::process_bind_death(process, death, DEATH).is_ok()
        && proc::process_kill(process).is_ok()
        && ipc::wait(death) == Ok(DEATH);
    let _ = ipc::cap_delete(process);
    if ended {
        Ok(())
    } else {
        Err("a child was not ended by process_kill")
    }
}

/// Let killed threads be freed and the deferred work run.
pub(crate) fn settle() {
    for _ in 0..3 {
        let _ = rt::yield_now();
    }
}

fn exhaustion(results: &mut Results) {
    let (Ok(report), Ok(death)) = (ipc::notification_create(), ipc::notification_create()) else {
        results.check(
            "user budget: a child runs out of its own budget only",
            Err("notification_create failed"),
        );
        return;
    };
    let mut counts = (0, 0);
    let outcome = (|| {
        // The stack's tables made once, so the unmap at the end leaves them as they were.
        rt::memory_map(STACK_AT, STACK_PAGES * PAGE_SIZE, MAP_WRITE)
            .and_then(|_| rt::memory_unmap(STACK_AT, STACK_PAGES * PAGE_SIZE))
            .map_err(|_| "the stack map/unmap failed")?;
        let (before, frames_before) = (used()?, frames()?);
        let eater = proc::process_spawn(IMAGE, &[report], PRIORITY_NORMAL, EATER, EATER_BUDGET)
            .map_err(|_| "spawning the eater failed")?;
        let spawned = used()?;
        let bits = ipc::wait(report).map_err(|_| "waiting for the eater failed")?;
        let eater_pid = proc::process_id(eater).map_err(|_| "process_id failed")?;
        let eater_budget = budget_of(eater_pid)?;
        counts = (
            (bits >> PAGES_SHIFT) & 0xff_ffff,
            (bits >> OBJECTS_SHIFT) & 0xffff,
        );
        // With the eater out of budget: this process maps and makes a thread...
        let stack = rt::memory_map(STACK_AT, STACK_PAGES * PAGE_SIZE, MAP_WRITE);
        let thread = stack.and_then(|_| {
            proc::thread_create(
                sleeper,
                STACK_AT + STACK_PAGES * PAGE_SIZE,
                0,
                PRIORITY_NORMAL,
            )
        });
        // ... and so does another child.
        let probe = proc::process_spawn(IMAGE, &[report], PRIORITY_NORMAL, PROBE, 0);
        let probe_bits = match probe {
            Ok(_) => ipc::wait(report).unwrap_or(0),
            Err(_) => 0,
        };
        if let Ok(thread) = thread {
            let _ = proc::thread_kill(thread);
            let _ = ipc::cap_delete(thread);
        }
        let ended = end(eater, death);
        let probe_ended = probe.map_err(|_| "").and_then(|probe| end(probe, death));
        settle();
        let _ = rt::memory_unmap(STACK_AT, STACK_PAGES * PAGE_SIZE);
        let (after, frames_after) = (used()?, frames()?);
        if bits & EATER_DONE == 0 {
            return Err("the eater did not report");
        }
        if bits & EATER_PAGES_REFUSED == 0 {
            return Err("the eater's maps did not end with OutOfMemory");
        }
        if bits & EATER_OBJECTS_REFUSED == 0 {
            return Err("the eater's notifications did not end with OutOfMemory");
        }
        // A page gives room for 16 objects (32 if its page table went too).
        if !(PAGE_SIZE / abi::OBJECT_BUDGET_BYTES..=2 * PAGE_SIZE / abi::OBJECT_BUDGET_BYTES)
            .contains(&counts.1)
        {
            return Err("a page given back did not make room for its worth of objects");
        }
        if bits & EATER_THREAD_REFUSED == 0 {
            return Err("the eater's thread was not refused with OutOfMemory");
        }
        if eater_budget[sysinfo::budget::LIMIT] != EATER_BUDGET
            || eater_budget[sysinfo::budget::USED] > EATER_BUDGET
            || EATER_BUDGET - eater_budget[sysinfo::budget::USED] >= abi::OBJECT_BUDGET_BYTES
        {
            return Err("the eater's budget record is not its budget, used up");
        }
        if spawned != before + EATER_BUDGET {
            return Err("the eater's budget was not taken out of the parent's");
        }
        if stack.is_err() || thread.is_err() {
            return Err("the parent could not map or make a thread");
        }
        if probe.is_err() || probe_bits & PROBE_OK == 0 {
            return Err("another process could not map or make a thread");
        }
        ended?;
        probe_ended.map_err(|_| "the probe was not ended")?;
        if after != before {
            rt::println!("testsuite: budget used {before} before, {after} after");
            return Err("the parent's budget use did not return to its value before the spawn");
        }
        if frames_after != frames_before {
            rt::println!("testsuite: frames {frames_before} before, {frames_after} after");
            return Err("the frames did not return to their count");
        }
        Ok(())
    })();
    let _ = ipc::cap_delete(report);
    let _ = ipc::cap_delete(death);
    rt::println!(
        "testsuite: budget: the eater mapped {} pages, then made {} notifications",
        counts.0,
        counts.1
    );
    results.check(
        "user budget: a child runs out of its own budget (pages, objects, threads) while the parent and another process map and make threads, and every byte and frame comes back",
        outcome,
    );
}

fn refusals(results: &mut Results) {
    let outcome = (|| {
        let before = used()?;
        let limit = budget_of(0)?[sysinfo::budget::LIMIT];
        let beyond = proc::process_spawn(IMAGE, &[], PRIORITY_NORMAL, EATER, limit + PAGE_SIZE);
        let alive = rt::null() == Ok(0);
        let tiny = proc::process_spawn(IMAGE, &[], PRIORITY_NORMAL, EATER, TINY_BUDGET);
        let after = used()?;
        match (beyond, tiny) {
            _ if !alive => Err("the caller did not survive the refusal"),
            (Err(Error::OutOfMemory), Err(Error::OutOfMemory)) if after == before => Ok(()),
            (Err(Error::OutOfMemory), Err(Error::OutOfMemory)) => {
                Err("a refused spawn kept some of the caller's budget")
            }
            _ => Err("a spawn the budgets cannot pay for was not refused with OutOfMemory"),
        }
    })();
    results.check(
        "user budget: a spawn beyond the caller's budget, or with too small a budget, returns OutOfMemory and the caller keeps running",
        outcome,
    );
}

fn default_share(results: &mut Results) {
    let outcome = (|| {
        let (Ok(park), Ok(death)) = (ipc::notification_create(), ipc::notification_create()) else {
            return Err("notification_create failed");
        };
        let child =
            proc::process_spawn(IMAGE, &[park], PRIORITY_NORMAL, crate::proc::CHILD_PARK, 0);
        let record = child
            .and_then(proc::process_id)
            .map_err(|_| "spawning with the default share failed")
            .and_then(budget_of);
        let ended = child.map_or(Ok(()), |child| end(child, death));
        let _ = ipc::cap_delete(park);
        let _ = ipc::cap_delete(death);
        ended?;
        if record?[sysinfo::budget::LIMIT] != abi::DEFAULT_BUDGET {
            return Err("the child's budget is not DEFAULT_BUDGET");
        }
        Ok(())
    })();
    results.check(
        "user budget: a spawn naming no budget gives the child DEFAULT_BUDGET",
        outcome,
    );
}
