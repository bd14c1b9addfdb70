//! The system calls of the interactive system beyond IPC and processes:
//! `system_info` (what `ps`, `top`, `mem`, `caps`, `cpu`, `uptime` and `ipcbench` show),
//! `power_off`, `sleep`, `process_id` (abi numbers `0x30..=0x33`), and the kernel log's
//! `log_bind` / `log_read` (`0x34`, `0x35`).
//!
//! `system_info` and `power_off` are guarded by capabilities of their own object types
//! ([`Object::System`], [`Object::Power`]), which only the kernel makes: `init` receives
//! one of each and passes them on to whom its manifest names.
//!
//! The kernel log: printing only marks the log readable (`crate::log`); [`signal_log`],
//! called on the system-call exit and the timer tick, signals the bound reader.
//!
//! Weak spots: `system_info` takes the scheduler lock once per thread record and a
//! process's page-list lock for its page count (system calls, never the trap path).

use abi::{Error, Handle, ObjectType, Rights, SLEEP_MAX_TICKS, sysinfo};
use arch_api::{ExitCode, Platform, UserRange};

use crate::obj::kind;
use crate::sync::{Lock, level};
use crate::task::sched;
use crate::task::thread::State;
use crate::{Cpu, mm, time};

fn caller() -> Result<alloc::sync::Arc<crate::obj::Process>, Error> {
    sched::current_process().ok_or(Error::InvalidArgument)
}

/// `system_info(system, what, index, buffer, words)`.
pub fn system_info(
    system: u64,
    what: u64,
    index: u64,
    buffer: u64,
    words: u64,
) -> Result<u64, Error> {
    caller()?
        .caps
        .lookup::<kind::System>(Handle::from_raw(system), Rights::READ)?;
    if words > sysinfo::WORDS_MAX {
        return Err(Error::InvalidArgument);
    }
    let mut record = [0u64; sysinfo::WORDS_MAX as usize];
    let filled = match what {
        sysinfo::SUMMARY => summary(&mut record),
        sysinfo::THREAD => {
            // A reader of the per-thread counts: the IPC fast paths count from now on.
            super::instrument_fast_paths();
            thread(index, &mut record)
        }
        sysinfo::MODULE => module(index, &mut record),
        sysinfo::CAPS => caps(index, &mut record),
        sysinfo::CPU => cpu(index, &mut record)?,
        sysinfo::CLOCK => clock(&mut record),
        sysinfo::BUDGET => budget(index, &mut record),
        _ => return Err(Error::InvalidArgument),
    };
    // why: words <= WORDS_MAX (64), checked above.
    let count = filled.min(words as usize);
    if count == 0 {
        return Ok(0);
    }
    let mut bytes = [0u8; sysinfo::WORDS_MAX as usize * 8];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(&record[..count]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let length = count as u64 * 8;
    if UserRange::new(buffer, length).is_none() {
        return Err(Error::BadAddress);
    }
    <Cpu as arch_api::Paging>::copy_to_user(buffer, &bytes[..count * 8])
        .map_err(|_| Error::BadAddress)?;
    Ok(count as u64)
}

fn summary(record: &mut [u64]) -> usize {
    use sysinfo::summary::*;
    let free = mm::free_frames();
    record[TICKS] = time::ticks();
    record[TIMER_HZ] = u64::from(time::TIMER_HZ);
    record[FREE_FRAMES] = free;
    record[TOTAL_FRAMES] = crate::proc::init::total_frames().max(free);
    record[KERNEL_HEAP] = mm::heap::allocated_bytes() as u64;
    // One past the highest id the thread table serves now (it grows with the threads).
    record[THREAD_SLOTS] = sched::capacity() as u64;
    record[CPUS] = cpu_count();
    record[HEAP_FRAMES] = mm::heap::frames_held();
    WORDS
}

fn thread(index: u64, record: &mut [u64]) -> usize {
    use sysinfo::thread::*;
    let Ok(id) = usize::try_from(index) else {
        return 0;
    };
    if id == 0 || id >= sched::MAX_THREAD_IDS {
        return 0;
    }
    let Some((name, state, priority, ticks, process)) = sched::describe(id) else {
        return 0;
    };
    record[ID] = id as u64;
    record[STATE] = match state {
        State::Ready => 0,
        State::Running => 1,
        State::Blocked => 2,
        State::Dead => 3,
    };
    record[PRIORITY] = u64::from(priority.level());
    record[CPU_TICKS] = ticks;
    if let Some(process) = process {
        record[PROCESS] = process.id;
        record[PAGES] = process.pages() as u64;
    }
    let [first, second] = sysinfo::pack_name(name);
    record[NAME] = first;
    record[NAME + 1] = second;
    let [ipc, notifications, page_faults] = crate::task::thread::events(id);
    if let Some(activity) = sched::activity(id) {
        record[LAST_CPU] = u64::from(activity.last_cpu);
        record[SWITCHES] = activity.switches;
    }
    record[IPC] = ipc;
    record[NOTIFICATIONS] = notifications;
    record[PAGE_FAULTS] = page_faults;
    WORDS
}

fn clock(record: &mut [u64]) -> usize {
    use arch_api::Bench;
    use sysinfo::clock::*;
    record[NOW] = Cpu::instruction_clock();
    record[UNIT] = if Cpu::INSTRUCTION_CLOCK_IN_NANOSECONDS {
        NANOSECONDS
    } else {
        CYCLES
    };
    WORDS
}

fn module(index: u64, record: &mut [u64]) -> usize {
    use sysinfo::module::*;
    let Some((_, size, name)) = usize::try_from(index)
        .ok()
        .and_then(|index| crate::boot::modules().nth(index))
    else {
        return 0;
    };
    record[SIZE] = size;
    let [first, second] = sysinfo::pack_name(name);
    record[NAME] = first;
    record[NAME + 1] = second;
    WORDS
}

/// The live process with id `pid` (one with a thread).
fn process_of(pid: u64) -> Option<alloc::sync::Arc<crate::obj::Process>> {
    sched::find_process(pid)
}

/// The budget record of process `pid`, or of the caller for 0.
fn budget(pid: u64, record: &mut [u64]) -> usize {
    use sysinfo::budget::*;
    let process = if pid == 0 {
        sched::current_process()
    } else {
        process_of(pid)
    };
    let Some(process) = process else {
        return 0;
    };
    record[PROCESS] = process.id;
    record[LIMIT] = process.budget().limit();
    record[USED] = process.budget().used();
    record[PAGES] = process.pages() as u64;
    record[THREADS] = process.live_threads() as u64;
    let [first, second] = sysinfo::pack_name(process.name);
    record[NAME] = first;
    record[NAME + 1] = second;
    record[CAP_SLOTS] = process.caps.capacity() as u64;
    record[CAPS] = process.caps.len() as u64;
    WORDS
}

fn caps(pid: u64, record: &mut [u64]) -> usize {
    use sysinfo::cap::*;
    let Some(process) = process_of(pid) else {
        return 0;
    };
    let mut list =
        [(0u32, ObjectType::Endpoint, Rights::NONE); sysinfo::WORDS_MAX as usize / WORDS];
    let count = process.caps.list(&mut list);
    for (chunk, (slot, kind, rights)) in record.chunks_exact_mut(WORDS).zip(&list[..count]) {
        chunk[SLOT] = u64::from(*slot);
        chunk[TYPE_RIGHTS] = *kind as u64 | u64::from(rights.bits()) << 32;
    }
    count * WORDS
}

/// CPUs with a record: one past the highest online index (a CPU below it that was left
/// parked has a record saying so).
fn cpu_count() -> u64 {
    use arch_api::SecondaryCpus;
    (0..arch_api::MAX_CPUS as u32)
        .rev()
        .find(|&index| Cpu::is_online(index))
        .map_or(1, |index| u64::from(index) + 1)
}

fn cpu(index: u64, record: &mut [u64]) -> Result<usize, Error> {
    use arch_api::SecondaryCpus;
    use sysinfo::cpu::*;
    if index >= cpu_count() {
        return Err(Error::InvalidArgument);
    }
    // why: index < cpu_count() <= MAX_CPUS.
    let cpu = index as u32;
    record[ID] = index;
    if cpu == 0 {
        record[SWITCHES] = super::event_counter(abi::BenchCounter::Switches);
    }
    record[TICKS] = time::cpu_ticks(cpu).unwrap_or(0);
    let [first, second] = sysinfo::pack_name(Cpu::NAME);
    record[NAME] = first;
    record[NAME + 1] = second;
    record[HARDWARE_ID] = crate::boot::smp::hardware_id_of(cpu).unwrap_or(0);
    record[ONLINE] = u64::from(Cpu::is_online(cpu));
    if let Some(counts) = Cpu::ipi_counts(cpu) {
        record[IPI_RESCHEDULE] = counts.reschedules;
        record[IPI_TLB_SHOOTDOWN] = counts.shootdowns;
        record[IPI_STOP] = u64::from(counts.stopped);
    }
    Ok(WORDS)
}

/// `power_off(power, code)`.
pub fn power_off(power: u64, code: u64) -> Result<u64, Error> {
    caller()?
        .caps
        .lookup::<kind::Power>(Handle::from_raw(power), Rights::CONTROL)?;
    crate::log::undefer_log();
    crate::println!("keel: power off requested (code {code})");
    crate::trace::power_off(if code == 0 {
        ExitCode::Success
    } else {
        ExitCode::TestFailed
    })
}

/// `sleep(ticks)`.
pub fn sleep(ticks: u64) -> Result<u64, Error> {
    if ticks == 0 || ticks > SLEEP_MAX_TICKS {
        return Err(Error::InvalidArgument);
    }
    sched::sleep(ticks);
    Ok(0)
}

/// `process_id(process)`.
pub fn process_id(handle: u64) -> Result<u64, Error> {
    let process = caller()?
        .caps
        .lookup::<kind::Process>(Handle::from_raw(handle), Rights::READ)?;
    Ok(process.id)
}

/// Who is told when deferred kernel log arrives (`log_bind`).
static LOG_TARGET: Lock<Option<(alloc::sync::Arc<crate::obj::Notification>, u64)>> =
    Lock::new(level::LOG_TARGET, None);

/// The caller holds the console UART's register capability with `WRITE`.
fn console_holder(handle: u64) -> Result<(), Error> {
    let caller = caller()?;
    let handle = Handle::from_raw(handle);
    match caller.caps.lookup::<kind::IoPorts>(handle, Rights::WRITE) {
        Err(Error::InvalidArgument) => caller
            .caps
            .lookup::<kind::Mmio>(handle, Rights::WRITE)
            .map(|_| ()),
        other => other.map(|_| ()),
    }
}

/// `log_bind(console, notification, bits)`.
pub fn log_bind(console: u64, notification: u64, bits: u64) -> Result<u64, Error> {
    console_holder(console)?;
    let notification = caller()?
        .caps
        .lookup::<kind::Notification>(Handle::from_raw(notification), Rights::SIGNAL)?;
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    let old = LOG_TARGET
        .lock()
        .replace((notification.object().clone(), bits));
    drop(old);
    crate::log::defer_log();
    // Whatever was deferred before this binding is waiting.
    signal_target();
    Ok(0)
}

/// `log_read(console, buffer, length)`.
pub fn log_read(console: u64, buffer: u64, length: u64) -> Result<u64, Error> {
    console_holder(console)?;
    let mut chunk = [0u8; 512];
    let length = usize::try_from(length)
        .unwrap_or(usize::MAX)
        .min(chunk.len());
    if !super::user_range_ok(buffer, length as u64) {
        return Err(Error::BadAddress);
    }
    let count = crate::log::take_log(&mut chunk[..length]);
    if count > 0 {
        <Cpu as arch_api::Paging>::copy_to_user(buffer, &chunk[..count])
            .map_err(|_| Error::BadAddress)?;
    }
    Ok(count as u64)
}

/// Signal the log reader if lines arrived since it was last signalled. One load when none
/// did. Called with no lock held.
#[inline(always)]
pub fn signal_log() {
    if crate::log::take_readable() {
        signal_target();
    }
}

#[cold]
#[inline(never)]
fn signal_target() {
    let target = LOG_TARGET.lock().clone();
    if let Some((notification, bits)) = target {
        crate::ipc::signal_object(&notification, bits);
    }
}
