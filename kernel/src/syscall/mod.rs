//! System calls (DESIGN.md §6): decode the number and arguments from the trap frame, run a
//! safe handler returning `Result<u64, abi::Error>`, and write the two result registers in
//! one place (`0`/error code, then the value; see [`abi::Syscall`]).
//!
//! Every argument is untrusted. Handlers touch user memory only through
//! `Paging::copy_from_user` (range checks and fault fixup in the arch crate, SMAP/PAN lifted
//! only inside the copy). `null` and `yield` neither allocate, format nor take a lock
//! beyond the scheduler's.
//!
//! Families: capabilities, memory and the thread's own calls here; IPC in `crate::ipc`;
//! processes, threads, interrupts and devices in [`procs`]; system information, power and
//! the kernel log in [`system`]; the test-only calls (`test_sleep`, `bench_counter`,
//! `irq_test_raise`) in [`testing`], which a kernel without the `testing` feature answers
//! with `NotSupported`.
//!
//! # On the way in
//! The arch crates' entries index [`KEEL_SYSCALLS`] with the number: `null`, `yield` and
//! the calls with an IPC fast path have handlers of their own ([`table`]), every other
//! number goes to [`general`] ([`dispatch`], then [`finish`]). No dispatcher runs between
//! the entry and the handler. The IPC handlers come in two builds of the same code: plain,
//! and instrumented (trace records, per-thread event counts), which
//! [`instrument_fast_paths`] puts in the table once tracing is on or someone reads the
//! counts; so the plain fast paths test nothing for it.
//!
//! # On the way out
//! Every call that [`dispatch`] decodes ends with [`finish`]: deferred object work
//! (`obj::pending`) is done, the kernel-log reader signalled, and a killed thread ends
//! before it runs user code again; each costs one load when there is nothing to do. The
//! fast paths end without [`finish`]'s look at deferred work; those that block check for
//! a kill.

pub mod procs;
pub mod system;
pub mod testing;

use abi::{
    DEBUG_WRITE_MAX, Error, Handle, MAP_EXECUTE, MAP_WRITE, PAGE_SIZE, Rights, Syscall,
    UserRegisters,
};
use alloc::sync::Arc;
use arch_api::{Paging, TrapFrame as _, UserRange, UserRegisterWrite};
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::obj::{Endpoint, EndpointCap, Notification, NotificationCap, Object, Process, pending};
use crate::task::sched;
use crate::task::thread::TrapFrame;
use crate::{Cpu, ipc};

/// Decode, run, and write the results of the system call in `frame`. Traced: the entry
/// and, for calls that do not write their own results (IPC), the exit with its status.
#[inline(never)]
pub fn dispatch(frame: &mut TrapFrame) {
    if crate::trace::on() {
        trace_entry(frame);
    }
    let arguments = frame.syscall_arguments();
    let result = match Syscall::from_number(frame.syscall_number()) {
        Some(Syscall::Null) => Ok(0),
        Some(Syscall::DebugWrite) => debug_write(arguments[0], arguments[1]),
        Some(Syscall::Exit) => exit(arguments[0]),
        Some(Syscall::Yield) => {
            sched::yield_now();
            Ok(0)
        }
        Some(Syscall::ThreadWriteRegisters) => {
            match write_registers(frame, arguments[0], arguments[1], arguments[2]) {
                // The frame now holds the new registers, results included: leave it.
                Ok(()) => return,
                Err(error) => Err(error),
            }
        }
        Some(Syscall::MemoryMap) => memory_map(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::MemoryUnmap) => memory_unmap(arguments[0], arguments[1]),
        Some(Syscall::TestSleep) => testing::test_sleep(arguments[0], arguments[1]),
        Some(Syscall::CapCopy) => cap_copy(arguments[0], arguments[1]),
        Some(Syscall::CapDelete) => cap_delete(arguments[0]),
        Some(Syscall::CapMint) => cap_mint(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::CapIdentify) => cap_identify(arguments[0]),
        Some(Syscall::EndpointCreate) => object_create(true),
        Some(Syscall::NotificationCreate) => object_create(false),
        // The IPC calls write their own result registers (abi::ipc), often into the frame
        // of a thread that was blocked.
        Some(Syscall::Send) => return ipc::send(frame, false),
        Some(Syscall::Call) => return ipc::send(frame, true),
        Some(Syscall::Recv) => return ipc::recv(frame),
        Some(Syscall::Reply) => return ipc::reply(frame),
        Some(Syscall::ReplyRecv) => return ipc::reply_recv(frame),
        Some(Syscall::Wait) => return ipc::wait(frame),
        Some(Syscall::Signal) => ipc::signal(arguments[0], arguments[1]),
        Some(Syscall::Poll) => ipc::poll(arguments[0]),
        Some(Syscall::IpcBufferSet) => ipc::buffer_set(arguments[0]),
        Some(Syscall::ProcessSpawn) => procs::process_spawn(
            arguments[0],
            arguments[1],
            arguments[2],
            arguments[3],
            arguments[4],
            arguments[5],
        ),
        Some(Syscall::ProcessKill) => procs::process_kill(arguments[0]),
        Some(Syscall::ProcessBindDeath) => {
            procs::process_bind_death(arguments[0], arguments[1], arguments[2])
        }
        Some(Syscall::ProcessStatus) => procs::process_status(arguments[0]),
        Some(Syscall::ThreadCreate) => {
            procs::thread_create(arguments[0], arguments[1], arguments[2], arguments[3])
        }
        Some(Syscall::ThreadKill) => procs::thread_kill(arguments[0]),
        Some(Syscall::ThreadSetPriority) => procs::thread_set_priority(arguments[0], arguments[1]),
        Some(Syscall::ThreadSetAffinity) => procs::thread_set_affinity(arguments[0], arguments[1]),
        Some(Syscall::CpuCurrent) => Ok(u64::from(sched::current_cpu())),
        Some(Syscall::IrqBind) => procs::irq_bind(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::IrqAck) => procs::irq_ack(arguments[0]),
        Some(Syscall::IrqTestRaise) => testing::irq_test_raise(arguments[0]),
        Some(Syscall::PortIn) => procs::port_in(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::PortOut) => {
            procs::port_out(arguments[0], arguments[1], arguments[2], arguments[3])
        }
        Some(Syscall::MmioMap) => procs::mmio_map(arguments[0], arguments[1]),
        Some(Syscall::SystemInfo) => system::system_info(
            arguments[0],
            arguments[1],
            arguments[2],
            arguments[3],
            arguments[4],
        ),
        Some(Syscall::PowerOff) => system::power_off(arguments[0], arguments[1]),
        Some(Syscall::Sleep) => system::sleep(arguments[0]),
        Some(Syscall::ProcessId) => system::process_id(arguments[0]),
        Some(Syscall::LogBind) => system::log_bind(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::LogRead) => system::log_read(arguments[0], arguments[1], arguments[2]),
        Some(Syscall::BenchCounter) => testing::bench_counter(arguments[0]),
        None => Err(Error::InvalidArgument),
    };
    let status = match result {
        Ok(value) => {
            frame.set_syscall_results(0, value);
            0
        }
        Err(error) => {
            let code = u64::from(error.code());
            frame.set_syscall_results(code, 0);
            code
        }
    };
    if crate::trace::on() {
        trace_exit(status);
    }
}

/// A trace record of the system call in `frame` entering: its number and first argument.
#[cold]
#[inline(never)]
fn trace_entry(frame: &TrapFrame) {
    let number = frame.syscall_number();
    let argument = frame.syscall_arguments()[0];
    crate::trace::event_here(crate::trace::Kind::SyscallEnter, number, argument);
}

/// A trace record of the running thread's system call returning `status` (the number is
/// the entry record's: the results may have overwritten it in the frame).
#[cold]
#[inline(never)]
fn trace_exit(status: u64) {
    crate::trace::event_here(crate::trace::Kind::SyscallExit, status, 0);
}

/// The rights in a `rights_mask` argument: reserved bits are an error.
fn rights_mask(raw: u64) -> Result<Rights, Error> {
    u32::try_from(raw)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(Error::InvalidArgument)
}

fn caps() -> Result<Arc<Process>, Error> {
    sched::current_process().ok_or(Error::InvalidArgument)
}

fn cap_copy(handle: u64, mask: u64) -> Result<u64, Error> {
    let process = caps()?;
    // A bad handle is reported before a bad mask (checked first, like every lookup).
    process.caps.identify(Handle::from_raw(handle))?;
    let mask = rights_mask(mask)?;
    Ok(process.caps.copy(Handle::from_raw(handle), mask)?.raw())
}

fn cap_delete(handle: u64) -> Result<u64, Error> {
    caps()?.caps.delete(Handle::from_raw(handle))?;
    Ok(0)
}

fn cap_mint(handle: u64, badge: u64, mask: u64) -> Result<u64, Error> {
    let process = caps()?;
    process.caps.identify(Handle::from_raw(handle))?;
    let mask = rights_mask(mask)?;
    Ok(process
        .caps
        .mint(Handle::from_raw(handle), badge, mask)?
        .raw())
}

fn cap_identify(handle: u64) -> Result<u64, Error> {
    let (kind, rights) = caps()?.caps.identify(Handle::from_raw(handle))?;
    Ok(u64::from(kind as u32) | u64::from(rights.bits()) << 32)
}

/// `endpoint_create` / `notification_create`: charged to the caller, full rights.
fn object_create(endpoint: bool) -> Result<u64, Error> {
    let process = caps()?;
    // The slot first (the table may grow), so the insert below does not fail.
    process.caps.reserve(1)?;
    let charge = process.caps.charge()?;
    let object = if endpoint {
        Object::Endpoint(EndpointCap::new(Endpoint::new(Some(charge)), 0))
    } else {
        Object::Notification(NotificationCap::new(Notification::new(Some(charge))))
    };
    Ok(process.caps.insert(object, Rights::ALL)?.raw())
}

/// Whether `[pointer, pointer + length)` lies wholly in the user half without wrapping
/// ([`UserRange`]); an empty range may sit anywhere from the first user address to the end
/// of the user half.
pub fn user_range_ok(pointer: u64, length: u64) -> bool {
    if length == 0 {
        return UserRange::is_user_stack_pointer(pointer);
    }
    UserRange::new(pointer, length).is_some()
}

fn debug_write(pointer: u64, length: u64) -> Result<u64, Error> {
    if !user_range_ok(pointer, length) {
        return Err(Error::BadAddress);
    }
    if length > DEBUG_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    let mut buffer = [0u8; DEBUG_WRITE_MAX as usize];
    // why: length <= DEBUG_WRITE_MAX, checked above.
    let text = &mut buffer[..length as usize];
    Cpu::copy_from_user(text, pointer).map_err(|_| Error::BadAddress)?;
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    match core::str::from_utf8(text) {
        Ok(text) => crate::println!("{text}"),
        Err(_) => crate::println!("(debug_write: {} bytes, not UTF-8)", text.len()),
    }
    Ok(length)
}

fn exit(code: u64) -> Result<u64, Error> {
    if let Some(process) = sched::current_process() {
        // why: the code is an `i64` passed in a register; reinterpreting keeps negatives.
        process.record_exit(code as i64);
        // Dropped here: `exit_current` never returns, so nothing later would drop it.
        drop(process);
    }
    crate::proc::exit_current()
}

/// `thread_write_registers` for the calling thread (`thread == 0`): decode, let the arch
/// crate validate and apply, all or nothing.
///
/// Weak spot: for the calling thread the FPU control and status words are validated and
/// stored in its saved FPU state, but the live FPU registers are saved over them at the
/// next switch, so they do not take effect; writing another (stopped) thread's registers,
/// which would apply them, is not offered.
fn write_registers(
    frame: &mut TrapFrame,
    thread: u64,
    pointer: u64,
    length: u64,
) -> Result<(), Error> {
    if thread != 0 || length != UserRegisters::SIZE as u64 {
        return Err(Error::InvalidArgument);
    }
    if !user_range_ok(pointer, length) {
        return Err(Error::BadAddress);
    }
    let mut bytes = [0u8; UserRegisters::SIZE];
    Cpu::copy_from_user(&mut bytes, pointer).map_err(|_| Error::BadAddress)?;
    let mut words = [0u64; UserRegisters::WORDS];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    let image = UserRegisters::from_words(&words);
    let registers = arch_api::UserRegisters {
        instruction_pointer: image.instruction_pointer,
        stack_pointer: image.stack_pointer,
        flags: image.flags,
        general: image.general,
        fpu_control: image.fpu_control,
        fpu_status: image.fpu_status,
    };
    sched::with_current_fpu(|fpu| Cpu::write_user_registers(frame, fpu, &registers))
        .ok_or(Error::InvalidArgument)?
        .map_err(|_| Error::InvalidArgument)
}

/// Decode a `memory_map`/`memory_unmap` range into its page count.
fn page_range(address: u64, length: u64) -> Result<u64, Error> {
    if !address.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) || length == 0 {
        return Err(Error::InvalidArgument);
    }
    if !user_range_ok(address, length) {
        return Err(Error::BadAddress);
    }
    Ok(length / PAGE_SIZE)
}

fn memory_map(address: u64, length: u64, flags: u64) -> Result<u64, Error> {
    let pages = page_range(address, length)?;
    if flags & !(MAP_WRITE | MAP_EXECUTE) != 0 || flags == MAP_WRITE | MAP_EXECUTE {
        return Err(Error::InvalidArgument);
    }
    if pages > crate::obj::process::MAP_PAGES_MAX as u64 {
        return Err(Error::OutOfMemory);
    }
    let flags = arch_api::PageFlags {
        writable: flags & MAP_WRITE != 0,
        executable: flags & MAP_EXECUTE != 0,
        user: true,
        device: false,
    };
    let process = sched::current_process().ok_or(Error::InvalidArgument)?;
    process.map_anonymous(address, pages, flags)?;
    Ok(0)
}

fn memory_unmap(address: u64, length: u64) -> Result<u64, Error> {
    let pages = page_range(address, length)?;
    let process = sched::current_process().ok_or(Error::InvalidArgument)?;
    process.unmap_anonymous(address, pages)?;
    Ok(0)
}

/// A system call's handler as the arch crates' entries call it (the C ABI): the frame at
/// the top of the current thread's kernel stack, interrupts masked. It writes the results
/// into the frame; it may switch threads inside, or end the thread and never return.
pub type Handler = extern "C" fn(&mut TrapFrame);

/// The handler of every number below `arch_api::SYSCALL_TABLE_LEN`, as [`KEEL_SYSCALLS`]
/// starts: the calls with a fast path have their own, each a function with its own frame
/// (so no path pays for another's); every other number is [`general`]'s. The arch entries
/// send a number at or above the length to `keel_syscall`, which is [`general`] too.
pub const fn table() -> [Handler; arch_api::SYSCALL_TABLE_LEN] {
    let mut table = [general as Handler; arch_api::SYSCALL_TABLE_LEN];
    table[Syscall::Null.number() as usize] = null;
    table[Syscall::Yield.number() as usize] = yield_call;
    table[Syscall::Call.number() as usize] = ipc_call::<false>;
    table[Syscall::ReplyRecv.number() as usize] = ipc_reply_recv::<false>;
    table[Syscall::Signal.number() as usize] = ipc_signal::<false>;
    table[Syscall::Wait.number() as usize] = ipc_wait::<false>;
    table
}

/// The instrumented handlers ([`instrument_fast_paths`] puts them in [`KEEL_SYSCALLS`]):
/// the same calls, whose fast paths write trace records and count per-thread events.
const INSTRUMENTED: [(Syscall, Handler); 4] = [
    (Syscall::Call, ipc_call::<true>),
    (Syscall::ReplyRecv, ipc_reply_recv::<true>),
    (Syscall::Signal, ipc_signal::<true>),
    (Syscall::Wait, ipc_wait::<true>),
];

/// The system-call table the arch crates' entries read: the address of each number's
/// handler ([`Handler`]), a word the entry loads and calls. Atomic words, so that
/// [`instrument_fast_paths`] can put the instrumented handlers in while other CPUs take
/// system calls: either handler of a number is right at any time (the plain one only
/// writes no trace record and counts no event), so relaxed stores and plain loads do.
#[repr(transparent)]
pub struct Table([AtomicPtr<()>; arch_api::SYSCALL_TABLE_LEN]);

impl Table {
    const fn new() -> Self {
        let handlers = table();
        let mut words =
            [const { AtomicPtr::new(core::ptr::null_mut()) }; arch_api::SYSCALL_TABLE_LEN];
        let mut number = 0;
        while number < arch_api::SYSCALL_TABLE_LEN {
            words[number] = AtomicPtr::new(handlers[number] as *mut ());
            number += 1;
        }
        Self(words)
    }

    /// Make `handler` the handler of `call` (a number below the table's length).
    fn set(&self, call: Syscall, handler: Handler) {
        self.0[call.number() as usize].store(handler as *mut (), Ordering::Relaxed);
    }
}

/// The system-call table: the arch crates' system-call entries call
/// `KEEL_SYSCALLS[number](frame)` for every number below `arch_api::SYSCALL_TABLE_LEN`
/// (no trap demultiplexing, no dispatcher on the way; [`table`] says which handler each
/// number has, [`instrument_fast_paths`] what changes), interrupts masked, `frame` at the
/// top of the current thread's kernel stack, holding at least the number and argument
/// registers. An upcall (`crate::upcall` lists it), defined here, where it is written.
#[unsafe(no_mangle)]
pub static KEEL_SYSCALLS: Table = Table::new();

/// From now on the IPC fast paths write trace records (when tracing is on) and count
/// per-thread events: `trace::count_fast_paths`, and the instrumented handlers in
/// [`KEEL_SYSCALLS`], so the plain ones test nothing for it.
pub fn instrument_fast_paths() {
    crate::trace::count_fast_paths();
    for (call, handler) in INSTRUMENTED {
        KEEL_SYSCALLS.set(call, handler);
    }
}

/// `null`: reads no argument and cannot fail.
extern "C" fn null(frame: &mut TrapFrame) {
    frame.set_syscall_results(0, 0);
}

/// `yield`: it writes its results before it switches away (nothing reads them meanwhile).
extern "C" fn yield_call(frame: &mut TrapFrame) {
    frame.set_syscall_results(0, 0);
    sched::yield_now();
    // A thread killed while it yielded ends before it runs user code again (one relaxed
    // load when no kill is pending).
    crate::proc::exit_if_killed();
}

/// Every call without a handler of its own in [`table`]: decoded by [`dispatch`], then
/// [`finish`].
pub extern "C" fn general(frame: &mut TrapFrame) {
    dispatch(frame);
    finish();
}

/// The end of every call but `null`, `yield` and the IPC fast paths: deferred object work,
/// the log reader, a killed thread (see the module docs).
#[inline(always)]
pub fn finish() {
    if crate::sync::deferred::any() {
        run_deferred();
    }
    crate::proc::exit_if_killed();
}

/// Event counter `which`: the switch counts are the scheduler's (each switch counts on the
/// thread switched to), every other one is `crate::stats`'.
pub fn event_counter(which: abi::BenchCounter) -> u64 {
    match which {
        abi::BenchCounter::Switches => sched::switch_counts().0,
        abi::BenchCounter::SpaceSwitches => sched::switch_counts().1,
        other => crate::stats::counter(other).unwrap_or(0),
    }
}

/// Deferred work (`sync::deferred`): pending object work, then the log reader's signal.
/// Also the timer tick's. Runs with no lock held.
#[cold]
#[inline(never)]
pub fn run_deferred() {
    if pending::any() {
        ipc::run_pending();
    }
    system::signal_log();
}

// The IPC handlers: each is built twice, plain (`TRACE` false, in `table`) and instrumented
// (`TRACE` true: trace records and per-thread event counts, which `instrument_fast_paths`
// puts in the table).

/// `call`: the fast path for a register-only message, or (`false`: nothing changed) the
/// general one.
extern "C" fn ipc_call<const TRACE: bool>(frame: &mut TrapFrame) {
    let candidate = ipc::fast::fast_candidate(frame);
    fast_or_general(frame, candidate, ipc::fast::fast_call::<TRACE>);
}

/// `reply_recv`: the fast path for a register-only message, or the general one.
extern "C" fn ipc_reply_recv<const TRACE: bool>(frame: &mut TrapFrame) {
    let candidate = ipc::fast::fast_candidate(frame);
    fast_or_general(frame, candidate, ipc::fast::fast_reply_recv::<TRACE>);
}

/// `signal`: the fast path, or the general one. The fast path never blocks, so, as with
/// `null`, there is no kill to check after it: a thread killed while it runs it is running,
/// and the reschedule IPI that `sched::kill` sends ends it before its next user
/// instruction.
extern "C" fn ipc_signal<const TRACE: bool>(frame: &mut TrapFrame) {
    fast_or_general(frame, true, ipc::fast::fast_signal::<TRACE>);
}

/// `wait`: the fast path, or the general one.
extern "C" fn ipc_wait<const TRACE: bool>(frame: &mut TrapFrame) {
    fast_or_general(frame, true, ipc::fast::fast_wait::<TRACE>);
}

/// An IPC fast path (`ipc::fast`), called by the handlers above with their `frame`. Its
/// contract (a call during the system call, on the caller's frame) holds for every
/// handler: they are private, so they run only as the arch entries call them through
/// [`KEEL_SYSCALLS`], during the system call. Inlined, so the calls are direct.
type FastPath = unsafe fn(&mut TrapFrame) -> ipc::fast::Fast;

/// When `candidate` (for `call` and `reply_recv`: a register-only message,
/// [`ipc::fast::fast_candidate`], which those fast paths rely on and do not test again),
/// try the fast path `fast`; if it was not taken (nothing changed), the general path. A
/// fast path that says the thread may have been killed meanwhile
/// ([`ipc::fast::Fast::TakenCheckKill`]) has the thread end, if it was, before it runs user
/// code again.
#[inline(always)]
fn fast_or_general(frame: &mut TrapFrame, candidate: bool, fast: FastPath) {
    use ipc::fast::Fast;
    let outcome = if candidate {
        // SAFETY: as in `FastPath`.
        unsafe { fast(frame) }
    } else {
        Fast::NotTaken
    };
    match outcome {
        Fast::Taken => {}
        Fast::TakenCheckKill => crate::proc::exit_if_killed(),
        Fast::NotTaken => {
            dispatch(frame);
            finish();
        }
    }
}
