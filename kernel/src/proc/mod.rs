//! Processes starting, ending and being killed (DESIGN.md §7): a process is loaded from a
//! checked ELF image (a boot module) into a fresh address space with a user stack, and
//! its threads end through here.
//!
//! Loading never trusts the image: [`kcore::elf::parse`] checks it completely before
//! anything is mapped, and every mapping failure unwinds what was mapped, so a malformed
//! module is an error, never a crash.
//!
//! # Ending a thread
//! A thread ends in [`exit_current`]: its IPC state first (queues, a caller waiting for
//! its reply), then the scheduler frees it. A killed thread is marked and, if blocked, made
//! ready; it ends at the next point where it is about to return to user mode with nothing
//! held on its kernel stack ([`exit_if_killed`]: after a system call, after a timer
//! preemption), so it never runs user code again and its blocking call unwinds normally.
//! An IPC fast path skips the check when no kill was pending anywhere as its thread was
//! switched back to (`sched::after_switch`): a kill after that finds the thread running
//! and interrupts it (`sched::kill`), and the interrupt's return checks.

pub mod init;

use alloc::sync::Arc;

use arch_api::{PAGE_SIZE, PageFlags, TrapCause, USER_END, USER_START, UserRange};
use kcore::elf::{self, ElfError};

use crate::Cpu;
use crate::mm::frames;
use crate::obj::process::{USER_STACK_SIZE, USER_STACK_TOP};
use crate::obj::{Budget, Process};
use crate::task::sched;
use crate::task::thread::{Start, TrapFrame};

/// The machine number user ELF images must carry.
pub const MACHINE: u16 = if matches!(<Cpu as arch_api::Platform>::NAME.as_bytes(), b"x86_64") {
    elf::MACHINE_X86_64
} else {
    elf::MACHINE_AARCH64
};

/// Why a process could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    NoModule,
    Elf(ElfError),
    Map(arch_api::MapError),
    Thread(sched::SpawnError),
    /// The budget cannot pay for the first thread.
    Budget,
}

/// Load the boot module `module` and start one thread in it at its entry point with
/// `argument`, charged to `budget`. Returns the process (to watch its ending). For
/// processes that get no capability from the kernel (test scenarios); the others start
/// once their table is filled ([`spawn_module_unstarted`]).
#[cfg(feature = "testing")]
pub fn spawn_from_module(
    module: &'static str,
    argument: u64,
    budget: Arc<Budget>,
) -> Result<Arc<Process>, LoadError> {
    let (process, thread) = spawn_module_unstarted(module, argument, budget)?;
    sched::start_thread(thread);
    Ok(process)
}

/// Check the boot module `module` as an executable and load it into a new process with
/// the memory budget `budget`, its first thread (at its entry point with `argument`) not
/// started: also returns that thread's id, which the caller starts
/// ([`sched::start_thread`]) once it has filled the capability table (on more than one CPU
/// a started thread may run at once, on another CPU). A malformed image is an error;
/// nothing is left allocated when one is returned.
pub fn spawn_module_unstarted(
    module: &'static str,
    argument: u64,
    budget: Arc<Budget>,
) -> Result<(Arc<Process>, usize), LoadError> {
    let file = crate::boot::module(module).ok_or(LoadError::NoModule)?;
    spawn_at(module, file, argument, sched::NORMAL, budget)
}

/// Check `file` as an executable, load it into a new process named `name` with the memory
/// budget `budget`, and start one thread at its entry point with `argument` (test
/// scenarios). A malformed image is an error; nothing is left allocated when one is
/// returned.
#[cfg(feature = "testing")]
pub fn spawn_from_image(
    name: &'static str,
    file: &[u8],
    argument: u64,
    budget: Arc<Budget>,
) -> Result<Arc<Process>, LoadError> {
    let (process, thread) = spawn_at(name, file, argument, sched::NORMAL, budget)?;
    sched::start_thread(thread);
    Ok(process)
}

/// A budget of its own for a process the kernel starts itself (`init`, or a test
/// scenario's): the root budget of the frames free now.
pub fn root_budget() -> Arc<Budget> {
    Budget::root(crate::obj::budget::root_bytes(frames::free_frames()))
}

/// Load `file` as the process `name`, with the first thread at `priority`, not started: also returns that
/// thread's id, which the caller starts ([`sched::start_thread`]) once it has filled the
/// capability table (or kills, if it cannot).
pub fn spawn_at(
    name: &'static str,
    file: &[u8],
    argument: u64,
    priority: kcore::runqueue::Priority,
    budget: Arc<Budget>,
) -> Result<(Arc<Process>, usize), LoadError> {
    let module = name;
    let image = elf::parse(file, MACHINE, USER_START..USER_END).map_err(LoadError::Elf)?;
    let process = Process::new(module, budget).map_err(LoadError::Map)?;
    if let Err(error) = populate(&process, file, &image) {
        discard(&process);
        return Err(error);
    }
    if process.add_thread().is_err() {
        discard(&process);
        return Err(LoadError::Budget);
    }
    let start = Start::User {
        entry: image.entry,
        stack: USER_STACK_TOP,
        argument,
    };
    match sched::spawn(module, priority, start, Some(process.clone()), false) {
        Ok(thread) => {
            crate::trace::event(crate::trace::Kind::Spawn, thread, process.id, 0);
            Ok((process, thread))
        }
        Err(error) => {
            // The thread never existed: this undoes `add_thread`.
            process.thread_exited();
            discard(&process);
            Err(LoadError::Thread(error))
        }
    }
}

/// Tear down a process whose spawn failed, in the caller's context: the teardown switches
/// to the kernel-only address space (the dying tables must not be live), so the caller's
/// own space is made current again before it returns to user mode.
fn discard(process: &Process) {
    process.teardown();
    if let Some(caller) = sched::current_process() {
        caller.activate();
    }
}

/// Map the image's segments and the user stack.
fn populate(process: &Process, file: &[u8], image: &elf::Image) -> Result<(), LoadError> {
    for segment in image.segments() {
        let flags = PageFlags {
            writable: segment.writable,
            executable: segment.executable,
            user: true,
            device: false,
        };
        for page in segment.pages().step_by(PAGE_SIZE as usize) {
            // The parser checked every segment's file bytes lie in the file.
            let (bytes, offset) = match segment.file_bytes_in_page(page) {
                Some((offset, range)) => (&file[range], offset),
                None => (&[][..], 0),
            };
            let physical = process
                .map_filled(page, flags, bytes, offset)
                .map_err(LoadError::Map)?;
            if segment.executable {
                // Zeroed and copied through the HHDM: the whole page is new code.
                frames::sync_instructions(physical, PAGE_SIZE);
            }
        }
    }
    let stack_flags = PageFlags {
        writable: true,
        executable: false,
        user: true,
        device: false,
    };
    let mut page = USER_STACK_TOP - USER_STACK_SIZE;
    while page < USER_STACK_TOP {
        process
            .map_zeroed(page, stack_flags)
            .map_err(LoadError::Map)?;
        page += PAGE_SIZE;
    }
    Ok(())
}

/// A trap from user mode that is not a system call: report it, record it, and end the
/// thread. Never returns.
pub fn kill_current(frame: &TrapFrame, cause: TrapCause) -> ! {
    crate::stats::mark_fault();
    if crate::trace::on() {
        let address = match cause {
            TrapCause::PageFault { addr, .. } => addr,
            _ => 0,
        };
        crate::trace::event_here(
            crate::trace::Kind::Fault,
            arch_api::TrapFrame::instruction_pointer(frame),
            address,
        );
    }
    let thread = sched::current();
    if let TrapCause::PageFault { .. } = cause {
        crate::task::thread::count(thread, crate::task::thread::Event::PageFault);
    }
    let process = sched::current_process();
    let name = process.as_ref().map_or("(kernel)", |process| process.name);
    crate::println!(
        "keel: user fault in process {name} (thread {thread}): {} at ip {:#x}; thread killed",
        Describe(cause),
        arch_api::TrapFrame::instruction_pointer(frame),
    );
    user_backtrace(frame);
    if let Some(process) = &process {
        process.record_fault(cause);
    }
    drop(process);
    exit_current()
}

/// The user frames of a faulting thread, after its fault report: `#0` at the faulting
/// instruction, then the return address of each record of the frame-record chain from its
/// frame pointer (user programs keep frame pointers). Records are read through the checked
/// user copy, so a bad chain ends the walk and never faults the kernel.
fn user_backtrace(frame: &TrapFrame) {
    const MAX_FRAMES: usize = 32;
    crate::println!("user backtrace (innermost first):");
    crate::println!(
        "  #0  {:#018x}",
        arch_api::TrapFrame::instruction_pointer(frame)
    );
    let mut record = arch_api::TrapFrame::frame_pointer(frame);
    let mut index = 1;
    let end = loop {
        if index > MAX_FRAMES {
            break "frame limit";
        }
        if record == 0 {
            break "end of the chain";
        }
        if !record.is_multiple_of(8) || UserRange::new(record, 16).is_none() {
            break "frame pointer outside user memory";
        }
        let mut words = [0u8; 16];
        if <Cpu as arch_api::Paging>::copy_from_user(&mut words, record).is_err() {
            break "unreadable frame record";
        }
        let [next, address] = [&words[..8], &words[8..]].map(|bytes| {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            u64::from_le_bytes(word)
        });
        if address == 0 {
            break "end of the chain";
        }
        crate::println!("  #{index}  {address:#018x}");
        // The callers' records lie higher on the stack; anything else is a broken chain.
        if next <= record {
            break "end of the chain";
        }
        record = next;
        index += 1;
    };
    crate::println!("  (end: {end})");
}

/// A trap cause in words, for reports.
pub struct Describe(pub TrapCause);

impl core::fmt::Display for Describe {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            TrapCause::PageFault { addr, access, .. } => {
                let access = match access {
                    arch_api::Access::Read => "read",
                    arch_api::Access::Write => "write",
                    arch_api::Access::Execute => "execute",
                };
                write!(out, "page fault ({access}) at {addr:#x}")
            }
            TrapCause::Breakpoint => write!(out, "breakpoint"),
            TrapCause::Undefined => write!(out, "undefined instruction"),
            TrapCause::Alignment => write!(out, "alignment fault"),
            TrapCause::Arithmetic => write!(out, "arithmetic fault"),
            TrapCause::FpuUnavailable => write!(out, "FPU unavailable"),
            TrapCause::GeneralProtection => {
                write!(
                    out,
                    "general protection (privileged instruction or bad address)"
                )
            }
            TrapCause::Syscall => write!(out, "system call"),
            TrapCause::Irq(line) => write!(out, "interrupt {line}"),
            TrapCause::Other(code) => write!(out, "exception {code:#x}"),
        }
    }
}

/// End the running thread: unlink it from IPC (a caller waiting for its reply gets
/// `PeerDied`), then let the scheduler free it. Never returns.
pub fn exit_current() -> ! {
    crate::ipc::thread_exiting(sched::current());
    sched::exit_current()
}

/// End the running thread if it was killed (see the module docs).
#[inline(always)]
pub fn exit_if_killed() {
    if sched::current_killed() {
        exit_current();
    }
}

/// `process_kill`: every thread of `process` ends before it runs user code again.
pub fn kill(process: &Arc<Process>) {
    if process.live_threads() > 0 {
        process.mark_killed();
        sched::kill_process(process);
    }
}

/// Signal `bits` on `notification` when `process`'s last thread is gone (now if it is).
pub fn bind_death(process: &Process, notification: Arc<crate::obj::Notification>, bits: u64) {
    if let Some((notification, bits)) = process.bind_death(notification, bits) {
        crate::ipc::signal_object(&notification, bits);
    }
}
