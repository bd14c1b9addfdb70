//! The SMP stress run: 8 threads in 4 processes for a set span of guest time.
//!
//! Each worker process has a server thread, answering checked calls on its own endpoint,
//! and a worker thread making random operations from a seeded generator:
//!
//! - `call` to another worker's endpoint with a checksummed payload; the reply must be
//!   the exact transformation with its own checksum;
//! - `memory_map` / `memory_unmap` of one of 16 pages (a mapped page is written with a
//!   pattern, checked again before it is unmapped);
//! - `yield`, and `sleep` of one tick;
//! - a migration: `thread_set_affinity` of itself to a random set of CPUs (it must then
//!   run on one of them);
//! - a helper thread created on a random set of CPUs, or the helper killed (at most one
//!   at a time: the process has 2 or 3 threads).
//!
//! The workers stop after the span in ticks (`system_info`, not a wall clock) and report
//! their counts by a call to the root, which replies; the root then stops each server
//! (a call that returns its count of calls answered), waits for every process to end and
//! compares the frames (free plus the kernel heap's) with the count taken before the run.
//! The run passes when no check failed anywhere, every call was answered, every process
//! ended, and the frames are back exactly. A watchdog thread of the root bounds a hung
//! run: it sends the root a timeout message some time after the span.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, Handle, MAP_WRITE, MessageInfo, PAGE_SIZE, PRIORITY_NORMAL, sysinfo};
use rt::{ipc, println, proc};

use crate::{
    CPUS, IMAGE, Results, STACK_SIZE, STRESS_WORKER, SYSTEM, answer, checksum, frames_settle,
    frames_steady, next, summary, ticks,
};

/// Worker processes and their threads.
const WORKERS: u64 = 4;
/// A worker's capabilities (`process_spawn` puts them at slots 1..): the four servers'
/// endpoints, the root's report endpoint, the system-information capability.
const WORKER_ENDPOINTS: u32 = 1;
const WORKER_REPORT: Handle = Handle::new(5, 1);
const WORKER_SYSTEM: Handle = Handle::new(6, 1);
/// Labels: a checked call carries `LABEL_CALL + sender`.
const LABEL_CALL: u32 = 16;
const LABEL_FINISH: u32 = 3;
const LABEL_TIMEOUT: u32 = 4;
/// A worker's stacks (its own address space): the server's, the helper's.
const WORKER_STACKS: u64 = 0x0000_3000_0000_0000;
/// A worker's pages for `memory_map` / `memory_unmap`.
const PAGES_AT: u64 = 0x0000_4000_0000_0000;
const PAGES: usize = 16;
/// Seconds after the span before the watchdog gives up on the workers.
const GRACE_SECONDS: u64 = 120;

fn info(label: u32) -> MessageInfo {
    MessageInfo::new(label, 4, 0).unwrap_or_default()
}

fn endpoint_of(worker: u64) -> Handle {
    // why: `worker` is below `WORKERS`.
    Handle::new(WORKER_ENDPOINTS + worker as u32, 1)
}

/// One worker's counts, as its report carries them (32 or 20 bits each).
#[derive(Clone, Copy, Default)]
struct Counts {
    calls: u64,
    errors: u64,
    maps: u64,
    unmaps: u64,
    yields: u64,
    threads: u64,
    migrations: u64,
    sleeps: u64,
    refusals: u64,
}

impl Counts {
    fn encode(&self) -> [u64; 4] {
        let pair = |low: u64, high: u64| (low & 0xffff_ffff) | high << 32;
        [
            pair(self.calls, self.errors),
            pair(self.maps, self.unmaps),
            pair(self.yields, self.threads),
            (self.migrations & 0xf_ffff)
                | (self.sleeps & 0xf_ffff) << 20
                | (self.refusals & 0xf_ffff) << 40,
        ]
    }

    fn decode(words: [u64; 4]) -> Self {
        let low = |word: u64| word & 0xffff_ffff;
        Self {
            calls: low(words[0]),
            errors: words[0] >> 32,
            maps: low(words[1]),
            unmaps: words[1] >> 32,
            yields: low(words[2]),
            threads: words[2] >> 32,
            migrations: words[3] & 0xf_ffff,
            sleeps: words[3] >> 20 & 0xf_ffff,
            refusals: words[3] >> 40 & 0xf_ffff,
        }
    }

    fn add(&mut self, other: &Self) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.maps += other.maps;
        self.unmaps += other.unmaps;
        self.yields += other.yields;
        self.threads += other.threads;
        self.migrations += other.migrations;
        self.sleeps += other.sleeps;
        self.refusals += other.refusals;
    }
}

/// The root's watchdog: sleep until `deadline`, then send the root [`LABEL_TIMEOUT`].
extern "C" fn watchdog(argument: u64) -> ! {
    let report = Handle::from_raw(argument >> 32);
    let deadline = WATCH_DEADLINE.load(Ordering::Acquire);
    loop {
        let now = ticks();
        if now >= deadline {
            break;
        }
        let _ = proc::sleep((deadline - now).min(abi::SLEEP_MAX_TICKS));
    }
    let _ = ipc::send(report, info(LABEL_TIMEOUT), [0; 4]);
    loop {
        let _ = proc::sleep(abi::SLEEP_MAX_TICKS);
    }
}

static WATCH_DEADLINE: AtomicU64 = AtomicU64::new(0);

/// One stress run (`run` of `runs`, `seconds` of guest time each).
pub fn run(results: &mut Results, run: u64, runs: u64, seconds: u64) {
    let name = name_of(run, runs, seconds);
    let outcome = stress(run, seconds);
    results.check(name.as_str(), outcome);
}

/// The test's name (fixed text with the run's numbers).
fn name_of(run: u64, runs: u64, seconds: u64) -> Name {
    let mut name = Name::default();
    let _ = core::fmt::write(
        &mut name,
        format_args!(
            "stress run {run} of {runs} (8 threads in 4 processes, {seconds} s of ticks): every check held, every process ended, frames back at the baseline"
        ),
    );
    name
}

/// A fixed buffer for one line.
struct Name {
    bytes: [u8; 160],
    length: usize,
}

impl Default for Name {
    fn default() -> Self {
        Self {
            bytes: [0; 160],
            length: 0,
        }
    }
}

impl Name {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("stress run")
    }
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self.length + text.len();
        if end > self.bytes.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

fn stress(run: u64, seconds: u64) -> Result<(), &'static str> {
    let hz = summary()?[sysinfo::summary::TIMER_HZ];
    let baseline = frames_steady()?;
    let start = ticks();
    // Everything the run creates, deleted at the end whatever happened.
    let mut handles: [Handle; 16] = [Handle::NULL; 16];
    let mut held = 0usize;
    let mut keep = |handle: Handle| {
        if held < handles.len() {
            handles[held] = handle;
            held += 1;
        }
        handle
    };
    let outcome = (|| {
        let mut endpoints = [Handle::NULL; 4];
        for endpoint in &mut endpoints {
            *endpoint = keep(ipc::endpoint_create().map_err(|_| "endpoint_create failed")?);
        }
        let report = keep(ipc::endpoint_create().map_err(|_| "endpoint_create failed")?);
        let deaths = keep(ipc::notification_create().map_err(|_| "notification_create failed")?);
        let mut workers = [Handle::NULL; 4];
        let seed = next(0x5bd1_e995 ^ run.wrapping_mul(0x9e37_79b9) ^ start);
        for (index, worker) in workers.iter_mut().enumerate() {
            let index = index as u64;
            let caps = [
                endpoints[0],
                endpoints[1],
                endpoints[2],
                endpoints[3],
                report,
                SYSTEM,
            ];
            let argument = STRESS_WORKER | index << 8 | seconds << 16 | (seed ^ index << 24) << 32;
            *worker = keep(
                proc::process_spawn(IMAGE, &caps, PRIORITY_NORMAL, argument, 0)
                    .map_err(|_| "process_spawn failed")?,
            );
            proc::process_bind_death(*worker, deaths, 1 << index)
                .map_err(|_| "process_bind_death failed")?;
        }
        println!("smptest: stress run {run}: seed {seed:#x}, 4 workers started at tick {start}");
        WATCH_DEADLINE.store(start + (seconds + GRACE_SECONDS) * hz, Ordering::Release);
        let watchdog = keep(
            proc::thread_create(
                watchdog,
                crate::watchdog_stack(),
                report.raw() << 32,
                PRIORITY_NORMAL,
            )
            .map_err(|_| "thread_create failed")?,
        );
        let outcome = collect(run, report, &endpoints);
        let _ = proc::thread_kill(watchdog);
        if outcome.is_err() {
            for worker in workers {
                let _ = proc::process_kill(worker);
            }
        }
        // Every process must end (a killed one too, before the frames are counted).
        let mut ended = 0u64;
        let wait_start = ticks();
        while ended != (1 << WORKERS) - 1 && ticks().wrapping_sub(wait_start) < 30 * hz {
            match ipc::poll(deaths) {
                Ok(0) => {
                    let _ = proc::sleep(1);
                }
                Ok(bits) => ended |= bits,
                Err(_) => break,
            }
        }
        outcome?;
        if ended != (1 << WORKERS) - 1 {
            return Err("a worker process did not end");
        }
        Ok(())
    })();
    for handle in &handles[..held] {
        let _ = ipc::cap_delete(*handle);
    }
    let after = frames_settle(baseline)?;
    println!(
        "smptest: stress run {run}: frames (free + kernel heap) before {baseline}, after {after}"
    );
    println!(
        "smptest: stress run {run}: {} ticks from the start to the frames' count",
        ticks().wrapping_sub(start)
    );
    outcome?;
    if after != baseline {
        return Err("the frames did not come back to the baseline");
    }
    Ok(())
}

/// Receive the four reports (or the watchdog's timeout), then stop the servers; print the
/// figures.
fn collect(run: u64, report: Handle, endpoints: &[Handle; 4]) -> Result<(), &'static str> {
    let mut total = Counts::default();
    let mut reported = 0u64;
    while reported != (1 << WORKERS) - 1 {
        let message = ipc::recv(report).map_err(|_| "recv of a report failed")?;
        let label = message.info.label();
        if label == LABEL_TIMEOUT {
            println!(
                "smptest: stress run {run}: reports seen {reported:#b} when the watchdog fired"
            );
            return Err("the workers did not all report in time");
        }
        let index = u64::from(label);
        if index >= WORKERS || reported & 1 << index != 0 {
            return Err("a report with a bad label");
        }
        reported |= 1 << index;
        let counts = Counts::decode(message.words);
        println!(
            "smptest: stress run {run}: worker {index}: calls {}, maps {}, unmaps {}, yields {}, threads created and killed {}, migrations {}, sleeps {}, thread_create refused {}, errors {}",
            counts.calls,
            counts.maps,
            counts.unmaps,
            counts.yields,
            counts.threads,
            counts.migrations,
            counts.sleeps,
            counts.refusals,
            counts.errors
        );
        total.add(&counts);
        let _ = ipc::reply(info(0), [0; 4]);
    }
    let mut answered = 0u64;
    let mut bad = 0u64;
    for endpoint in endpoints {
        let reply = ipc::call(*endpoint, info(LABEL_FINISH), [0; 4])
            .map_err(|_| "the call stopping a server failed")?;
        answered += reply.words[0];
        bad += reply.words[1];
    }
    println!(
        "smptest: stress run {run}: total calls {} (answered {answered}, bad at the server {bad}), maps {}, unmaps {}, yields {}, threads created and killed {}, migrations {}, sleeps {}, thread_create refused {}, errors {}",
        total.calls,
        total.maps,
        total.unmaps,
        total.yields,
        total.threads,
        total.migrations,
        total.sleeps,
        total.refusals,
        total.errors
    );
    if total.errors != 0 || bad != 0 {
        return Err("a worker or server found a wrong result");
    }
    if answered != total.calls {
        return Err("the servers answered a different number of calls than were made");
    }
    if total.calls == 0 || total.maps == 0 || total.threads == 0 || total.migrations == 0 {
        return Err("a kind of operation never ran");
    }
    Ok(())
}

/// A worker process (argument: mode, index in bits 8..16, seconds in bits 16..32, seed in
/// bits 32..64): start the server thread, run the operations until the span has passed,
/// report, exit this thread. The server ends the process when the root stops it.
pub fn worker(argument: u64) -> i64 {
    let index = (argument >> 8) & 0xff;
    let seconds = (argument >> 16) & 0xffff;
    let mut seed = (argument >> 32) | 1;
    if index >= WORKERS {
        return 2;
    }
    let Ok(words) = rt::system::summary(WORKER_SYSTEM) else {
        return 3;
    };
    let now = || {
        rt::system::summary(WORKER_SYSTEM).map_or(u64::MAX, |words| words[sysinfo::summary::TICKS])
    };
    let end = words[sysinfo::summary::TICKS] + seconds * words[sysinfo::summary::TIMER_HZ];
    if rt::memory_map(WORKER_STACKS, 2 * STACK_SIZE, MAP_WRITE).is_err() {
        return 4;
    }
    if proc::thread_create(server, WORKER_STACKS + STACK_SIZE, index, PRIORITY_NORMAL).is_err() {
        return 5;
    }
    let mut counts = Counts::default();
    let mut mapped = [false; PAGES];
    let mut helper: Option<Handle> = None;
    let mut sequence = 0u64;
    let error = |counts: &mut Counts, what: &str| {
        if counts.errors < 4 {
            println!("smptest: stress worker {index}: {what}");
        }
        counts.errors += 1;
    };
    while now() < end {
        seed = next(seed);
        let choice = seed % 100;
        let value = next(seed);
        sequence += 1;
        match choice {
            0..40 => {
                let target = (index + 1 + value % (WORKERS - 1)) % WORKERS;
                let sent = [sequence, value, value.rotate_left(17) ^ index];
                let words = [sent[0], sent[1], sent[2], checksum(sent, index)];
                // why: `index` is below 4.
                match ipc::call(endpoint_of(target), info(LABEL_CALL + index as u32), words) {
                    Ok(reply) if reply.words == answer(words, index) => counts.calls += 1,
                    Ok(_) => {
                        counts.calls += 1;
                        error(&mut counts, "a reply's payload or checksum is wrong");
                    }
                    Err(_) => error(&mut counts, "a call failed"),
                }
            }
            40..60 => {
                // why: below `PAGES`.
                let page = (value % PAGES as u64) as usize;
                let address = PAGES_AT + page as u64 * PAGE_SIZE;
                let word = rt::fault::user_word(address);
                let pattern = address ^ index << 56 ^ 0x5a5a;
                if mapped[page] {
                    if word.load(Ordering::Relaxed) != pattern {
                        error(&mut counts, "a mapped page lost its pattern");
                    }
                    match rt::memory_unmap(address, PAGE_SIZE) {
                        Ok(_) => {
                            mapped[page] = false;
                            counts.unmaps += 1;
                        }
                        Err(_) => error(&mut counts, "memory_unmap failed"),
                    }
                } else {
                    match rt::memory_map(address, PAGE_SIZE, MAP_WRITE) {
                        Ok(_) => {
                            mapped[page] = true;
                            counts.maps += 1;
                            if word.load(Ordering::Relaxed) != 0 {
                                error(&mut counts, "a fresh page is not zeroed");
                            }
                            word.store(pattern, Ordering::Relaxed);
                        }
                        Err(_) => error(&mut counts, "memory_map failed"),
                    }
                }
            }
            60..75 => {
                let _ = rt::yield_now();
                counts.yields += 1;
            }
            75..85 => match helper.take() {
                None => {
                    let mask = 1 + value % ((1 << CPUS) - 1);
                    match proc::thread_create(
                        helper_thread,
                        WORKER_STACKS + 2 * STACK_SIZE,
                        0,
                        PRIORITY_NORMAL,
                    ) {
                        Ok(handle) => {
                            if proc::thread_set_affinity(handle, mask).is_err() {
                                error(&mut counts, "thread_set_affinity of the helper failed");
                            }
                            helper = Some(handle);
                        }
                        // The process's thread limit counts threads until their CPU
                        // has switched away from them and freed them: killed helpers
                        // may still count for a moment.
                        Err(Error::OutOfMemory) => {
                            if counts.refusals == 0 {
                                thread_census(index);
                            }
                            counts.refusals += 1;
                        }
                        Err(_) => error(&mut counts, "thread_create failed"),
                    }
                }
                Some(handle) => {
                    match proc::thread_kill(handle) {
                        Ok(()) => counts.threads += 1,
                        Err(_) => error(&mut counts, "thread_kill of the helper failed"),
                    }
                    let _ = ipc::cap_delete(handle);
                }
            },
            85..97 => {
                let mask = 1 + value % ((1 << CPUS) - 1);
                match proc::thread_set_affinity(Handle::NULL, mask) {
                    Ok(()) if mask >> proc::cpu_current() & 1 == 1 => counts.migrations += 1,
                    Ok(()) => error(&mut counts, "running outside the affinity just set"),
                    Err(_) => error(&mut counts, "thread_set_affinity failed"),
                }
            }
            _ => {
                let _ = proc::sleep(1);
                counts.sleeps += 1;
            }
        }
    }
    if let Some(handle) = helper.take() {
        match proc::thread_kill(handle) {
            Ok(()) => counts.threads += 1,
            Err(_) => error(&mut counts, "thread_kill of the helper failed"),
        }
        let _ = ipc::cap_delete(handle);
    }
    for (page, is_mapped) in mapped.iter().enumerate() {
        if *is_mapped && rt::memory_unmap(PAGES_AT + page as u64 * PAGE_SIZE, PAGE_SIZE).is_err() {
            error(&mut counts, "the last memory_unmap failed");
        }
    }
    // why: `index` is below 4.
    let _ = ipc::call(WORKER_REPORT, info(index as u32), counts.encode());
    0
}

/// Counts of the helper threads (only that they run).
static HELPER_SPINS: AtomicU64 = AtomicU64::new(0);

/// A helper: spin a little, yield, again, until killed.
extern "C" fn helper_thread(_: u64) -> ! {
    loop {
        for _ in 0..1000 {
            HELPER_SPINS.fetch_add(1, Ordering::Relaxed);
        }
        let _ = rt::yield_now();
    }
}

/// A worker's server thread: answer checked calls on its endpoint until
/// [`LABEL_FINISH`], which gets `[answered, bad, 0, 0]`; then end the thread.
extern "C" fn server(index: u64) -> ! {
    let endpoint = endpoint_of(index);
    let (mut answered, mut bad) = (0u64, 0u64);
    let mut message = ipc::recv(endpoint);
    loop {
        let received = match message {
            Ok(received) => received,
            Err(_) => rt::exit(6),
        };
        let label = received.info.label();
        if label == LABEL_FINISH {
            let _ = ipc::reply(info(LABEL_FINISH), [answered, bad, 0, 0]);
            rt::exit(0);
        }
        let sender = u64::from(label.wrapping_sub(LABEL_CALL));
        let words = received.words;
        if sender >= WORKERS || checksum([words[0], words[1], words[2]], sender) != words[3] {
            bad += 1;
        }
        answered += 1;
        message = ipc::reply_recv(endpoint, info(0), answer(words, sender));
    }
}

/// Print the thread slots' states per process holding four or more (why a thread_create
/// was refused).
fn thread_census(index: u64) {
    let slots =
        rt::system::summary(WORKER_SYSTEM).map_or(0, |words| words[sysinfo::summary::THREAD_SLOTS]);
    // (process id, threads per state: ready, running, blocked, dead)
    let mut table = [(0u64, [0u64; 4]); 16];
    let mut used = 0u64;
    for slot in 1..=slots {
        let mut words = [0u64; 16];
        if !matches!(proc::system_info(WORKER_SYSTEM, sysinfo::THREAD, slot, &mut words), Ok(count) if count > sysinfo::thread::STATE)
        {
            continue;
        }
        let (process, state) = (
            words[sysinfo::thread::PROCESS],
            words[sysinfo::thread::STATE],
        );
        used += 1;
        if process == 0 || state > 3 {
            continue;
        }
        if let Some(entry) = table
            .iter_mut()
            .find(|entry| entry.0 == process || entry.0 == 0)
        {
            entry.0 = process;
            // why: below 4 (checked).
            entry.1[state as usize] += 1;
        }
    }
    println!(
        "smptest: stress worker {index}: thread_create refused; {used} of {slots} thread slots in use"
    );
    for (process, states) in table {
        if states.iter().sum::<u64>() >= 4 {
            println!(
                "smptest: stress worker {index}: thread_create refused; process {process} has threads ready {}, running {}, blocked {}, dead {}",
                states[0], states[1], states[2], states[3]
            );
        }
    }
}
