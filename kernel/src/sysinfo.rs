//! Issue 9: the system calls the interactive system needs beyond IPC and processes —
//! `system_info` (what `ps`, `mem`, `caps`, `cpu` and `uptime` show), `power_off`,
//! `sleep`, `process_id` (abi numbers `0x30..=0x33`) — and the start of `init`, the root
//! task of a boot without a test scenario, with its boot capabilities
//! (`abi::init_slots`).
//!
//! `system_info` and `power_off` are guarded by capabilities of their own object types
//! ([`Object::System`], [`Object::Power`]), which only the kernel makes: `init` receives
//! one of each and passes them on to whom its manifest names.
//!
//! Weak spots: `system_info` takes the scheduler lock once per thread record and a
//! process's page-list lock for its page count (system calls, never the trap path); one
//! CPU is reported.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Error, Handle, ObjectType, Rights, SLEEP_MAX_TICKS, init_slots, sysinfo};
use arch_api::{Devices, ExitCode, Platform, USER_END, USER_START};

use crate::object::{MemoryRegion, Object};
use crate::procsys::{MmioRange, PortRange};
use crate::sched::{self, MAX_THREADS};
use crate::thread::State;
use crate::{Cpu, irq_caps, memory, upcall};

/// The timer rate of the interactive system (the scenarios' rate).
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);
/// Frames the allocator managed when `init` started (free then plus used since).
static TOTAL_FRAMES: AtomicU64 = AtomicU64::new(0);

fn caller_object(handle: u64, required: Rights) -> Result<Object, Error> {
    let caller = sched::current_process().ok_or(Error::InvalidArgument)?;
    Ok(caller
        .caps
        .get(Handle::from_raw(handle), required)?
        .into_object())
}

/// `system_info(system, what, index, buffer, words)`.
pub fn system_info(
    system: u64,
    what: u64,
    index: u64,
    buffer: u64,
    words: u64,
) -> Result<u64, Error> {
    let Object::System = caller_object(system, Rights::READ)? else {
        return Err(Error::InvalidArgument);
    };
    if words > sysinfo::WORDS_MAX {
        return Err(Error::InvalidArgument);
    }
    let mut record = [0u64; sysinfo::WORDS_MAX as usize];
    let filled = match what {
        sysinfo::SUMMARY => summary(&mut record),
        sysinfo::THREAD => thread(index, &mut record),
        sysinfo::MODULE => module(index, &mut record),
        sysinfo::CAPS => caps(index, &mut record),
        sysinfo::CPU => cpu(index, &mut record),
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
    let in_range = buffer >= USER_START
        && buffer
            .checked_add(length)
            .is_some_and(|end| end <= USER_END);
    if !in_range {
        return Err(Error::BadAddress);
    }
    <Cpu as arch_api::Paging>::copy_to_user(buffer, &bytes[..count * 8])
        .map_err(|_| Error::BadAddress)?;
    Ok(count as u64)
}

fn summary(record: &mut [u64]) -> usize {
    use sysinfo::summary::*;
    let free = memory::frames::free_frames();
    record[TICKS] = upcall::ticks();
    record[TIMER_HZ] = self::TIMER_HZ.load(Ordering::Relaxed);
    record[FREE_FRAMES] = free;
    record[TOTAL_FRAMES] = self::TOTAL_FRAMES.load(Ordering::Relaxed).max(free);
    record[KERNEL_HEAP] = memory::heap::allocated_bytes() as u64;
    record[THREAD_SLOTS] = MAX_THREADS as u64;
    record[CPUS] = 1;
    WORDS
}

fn thread(index: u64, record: &mut [u64]) -> usize {
    use sysinfo::thread::*;
    let Ok(id) = usize::try_from(index) else {
        return 0;
    };
    if id == 0 || id >= MAX_THREADS {
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

fn caps(pid: u64, record: &mut [u64]) -> usize {
    use sysinfo::cap::*;
    let process = (1..MAX_THREADS).find_map(|id| {
        let (_, _, _, _, process) = sched::describe(id)?;
        process.filter(|process| process.id == pid)
    });
    let Some(process) = process else {
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

fn cpu(index: u64, record: &mut [u64]) -> usize {
    use sysinfo::cpu::*;
    if index != 0 {
        return 0;
    }
    record[ID] = 0;
    record[SWITCHES] = crate::bench::counter(abi::BenchCounter::Switches);
    record[TICKS] = upcall::ticks();
    let [first, second] = sysinfo::pack_name(Cpu::NAME);
    record[NAME] = first;
    record[NAME + 1] = second;
    WORDS
}

/// `power_off(power, code)`.
pub fn power_off(power: u64, code: u64) -> Result<u64, Error> {
    let Object::Power = caller_object(power, Rights::CONTROL)? else {
        return Err(Error::InvalidArgument);
    };
    crate::console::undefer_log();
    crate::println!("keel: power off requested (code {code})");
    Cpu::power_off(if code == 0 {
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
    let Object::Process(process) = caller_object(handle, Rights::READ)? else {
        return Err(Error::InvalidArgument);
    };
    Ok(process.id)
}

/// Start `init` from the boot module `init` with the capabilities of `abi::init_slots`.
/// Returns the process; `Err` says what was missing.
pub fn start_init(
    timer_hz: u32,
) -> Result<alloc::sync::Arc<crate::process::Process>, &'static str> {
    TIMER_HZ.store(u64::from(timer_hz), Ordering::Relaxed);
    TOTAL_FRAMES.store(memory::frames::free_frames(), Ordering::Relaxed);
    let process =
        crate::process::spawn_from_module("init", 0).map_err(|_| "cannot load module init")?;
    // The new thread has not run yet (this thread has not blocked), so these fill slots
    // 0.. of its empty table, in `init_slots` order.
    if let Err(problem) = install_init_caps(&process) {
        process.kill();
        return Err(problem);
    }
    Ok(process)
}

fn install_init_caps(init: &crate::process::Process) -> Result<(), &'static str> {
    let caps = &init.caps;
    let full = "init's capability table is full";
    let slot = caps
        .insert(Object::System, Rights::READ | Rights::GRANT)
        .map_err(|_| full)?;
    debug_assert_eq!(slot.slot(), init_slots::SYSTEM);
    caps.insert(Object::Power, Rights::CONTROL | Rights::GRANT)
        .map_err(|_| full)?;
    let device = Cpu::console_device().ok_or("no console device")?;
    let line = device
        .irq
        .and_then(irq_caps::IrqLine::new)
        .ok_or("the console has no interrupt line")?;
    caps.insert(Object::Irq(line), Rights::CONTROL | Rights::GRANT)
        .map_err(|_| full)?;
    match (device.ports, device.mmio) {
        (Some((first, count)), _) => caps.insert(
            Object::IoPorts(PortRange { first, count }),
            Rights::READ | Rights::WRITE | Rights::GRANT,
        ),
        (None, Some((base, length))) => caps.insert(
            Object::Mmio(MmioRange { base, length }),
            Rights::READ | Rights::WRITE | Rights::MAP | Rights::GRANT,
        ),
        (None, None) => return Err("the console has no registers"),
    }
    .map_err(|_| full)?;
    for (_, _, name) in crate::boot::modules().take(init_slots::MODULES_MAX as usize) {
        let region = MemoryRegion::boot_module(name).ok_or("a boot module vanished")?;
        caps.insert(
            Object::Memory(region),
            Rights::READ | Rights::MAP | Rights::GRANT,
        )
        .map_err(|_| full)?;
    }
    Ok(())
}

/// Who is told when deferred kernel log arrives (`log_bind`).
static LOG_TARGET: spin::Mutex<Option<(alloc::sync::Arc<crate::object::Notification>, u64)>> =
    spin::Mutex::new(None);

/// The caller holds the console UART's register capability with `WRITE`.
fn console_holder(handle: u64) -> Result<(), Error> {
    match caller_object(handle, Rights::WRITE)? {
        Object::IoPorts(_) | Object::Mmio(_) => Ok(()),
        _ => Err(Error::InvalidArgument),
    }
}

/// `log_bind(console, notification, bits)`.
pub fn log_bind(console: u64, notification: u64, bits: u64) -> Result<u64, Error> {
    console_holder(console)?;
    let Object::Notification(notification) = caller_object(notification, Rights::SIGNAL)? else {
        return Err(Error::InvalidArgument);
    };
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    let old = LOG_TARGET.lock().replace((notification, bits));
    drop(old);
    crate::console::defer_log();
    // Whatever was deferred before this binding is waiting.
    log_written();
    Ok(0)
}

/// `log_read(console, buffer, length)`.
pub fn log_read(console: u64, buffer: u64, length: u64) -> Result<u64, Error> {
    console_holder(console)?;
    let mut chunk = [0u8; 512];
    let length = usize::try_from(length)
        .unwrap_or(usize::MAX)
        .min(chunk.len());
    let in_range = buffer >= USER_START
        && buffer
            .checked_add(length as u64)
            .is_some_and(|end| end <= USER_END);
    if !in_range {
        return Err(Error::BadAddress);
    }
    let count = crate::console::take_log(&mut chunk[..length]);
    if count > 0 {
        <Cpu as arch_api::Paging>::copy_to_user(buffer, &chunk[..count])
            .map_err(|_| Error::BadAddress)?;
    }
    Ok(count as u64)
}

/// Deferred log text arrived: signal the console's notification.
pub fn log_written() {
    let target = LOG_TARGET.lock().clone();
    if let Some((notification, bits)) = target {
        crate::ipc::signal_object(&notification, bits);
    }
}
