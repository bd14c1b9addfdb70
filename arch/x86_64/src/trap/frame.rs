//! The one trap frame every entry path builds.

use arch_api::{Access, TrapCause};
use x86_64::registers::control::Cr2;

use super::vector;

/// The registers saved on kernel entry, lowest address first. Every vector builds exactly
/// this layout on the stack it runs on: the CPU pushes `ss`..`rip` (and, for some
/// exceptions, `error_code`); the stub pushes a zero `error_code` when the CPU did not,
/// then `vector`; the common entry code stores the general-purpose registers below them.
///
/// The `SYSCALL` entry builds the same layout (with `vector` =
/// [`vector::SYSCALL`]), so the core sees one frame type for every way into the kernel.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Which vector brought us here (0–255), or [`vector::SYSCALL`].
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors that have none; for [`vector::SYSCALL`]
    /// frames, [`SYSCALL_PARTIAL`] or [`SYSCALL_FULL`].
    pub error_code: u64,
    // From here up the layout is the hardware's (Intel SDM Vol. 3A, Figure 6-9).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A system-call frame as the `SYSCALL` entry built it: only `rax rdi rsi rdx r10 r8 r9`
/// (and the hardware part) are stored; the callee-saved registers stay live in the CPU
/// (see `trap::syscall`). Kept in `error_code`, which a system call has none of.
pub const SYSCALL_PARTIAL: u64 = 0;
/// A system-call frame whose every register slot is authoritative (written whole, by
/// `write_user_registers`): the exit restores all of them.
pub const SYSCALL_FULL: u64 = 1 << 63;

/// Offsets into [`TrapFrame`] used by the entry assembly, each checked against the struct.
pub mod offsets {
    use super::TrapFrame;
    use core::mem::{offset_of, size_of};

    pub const R15: usize = 0;
    pub const R14: usize = 8;
    pub const R13: usize = 16;
    pub const R12: usize = 24;
    pub const R11: usize = 32;
    pub const R10: usize = 40;
    pub const R9: usize = 48;
    pub const R8: usize = 56;
    pub const RBP: usize = 64;
    pub const RDI: usize = 72;
    pub const RSI: usize = 80;
    pub const RDX: usize = 88;
    pub const RCX: usize = 96;
    pub const RBX: usize = 104;
    pub const RAX: usize = 112;
    pub const VECTOR: usize = 120;
    pub const ERROR_CODE: usize = 128;
    pub const RIP: usize = 136;
    pub const CS: usize = 144;
    pub const RFLAGS: usize = 152;
    pub const RSP: usize = 160;
    pub const SS: usize = 168;
    pub const SIZE: usize = 176;

    const _: () = assert!(offset_of!(TrapFrame, r15) == R15);
    const _: () = assert!(offset_of!(TrapFrame, r14) == R14);
    const _: () = assert!(offset_of!(TrapFrame, r13) == R13);
    const _: () = assert!(offset_of!(TrapFrame, r12) == R12);
    const _: () = assert!(offset_of!(TrapFrame, r11) == R11);
    const _: () = assert!(offset_of!(TrapFrame, r10) == R10);
    const _: () = assert!(offset_of!(TrapFrame, r9) == R9);
    const _: () = assert!(offset_of!(TrapFrame, r8) == R8);
    const _: () = assert!(offset_of!(TrapFrame, rbp) == RBP);
    const _: () = assert!(offset_of!(TrapFrame, rdi) == RDI);
    const _: () = assert!(offset_of!(TrapFrame, rsi) == RSI);
    const _: () = assert!(offset_of!(TrapFrame, rdx) == RDX);
    const _: () = assert!(offset_of!(TrapFrame, rcx) == RCX);
    const _: () = assert!(offset_of!(TrapFrame, rbx) == RBX);
    const _: () = assert!(offset_of!(TrapFrame, rax) == RAX);
    const _: () = assert!(offset_of!(TrapFrame, vector) == VECTOR);
    const _: () = assert!(offset_of!(TrapFrame, error_code) == ERROR_CODE);
    const _: () = assert!(offset_of!(TrapFrame, rip) == RIP);
    const _: () = assert!(offset_of!(TrapFrame, cs) == CS);
    const _: () = assert!(offset_of!(TrapFrame, rflags) == RFLAGS);
    const _: () = assert!(offset_of!(TrapFrame, rsp) == RSP);
    const _: () = assert!(offset_of!(TrapFrame, ss) == SS);
    const _: () = assert!(size_of::<TrapFrame>() == SIZE);

    // The hardware part and the two stub-pushed words are adjacent, in push order.
    const _: () = assert!(ERROR_CODE == VECTOR + 8 && RIP == ERROR_CODE + 8);
    const _: () = assert!(CS == RIP + 8 && RFLAGS == CS + 8 && RSP == RFLAGS + 8);
    const _: () = assert!(SS == RSP + 8 && SIZE == SS + 8);
    // The CPU aligns RSP to 16 before pushing SS, so a frame size that is a multiple of 16
    // leaves RSP 16-byte aligned at the `call` into Rust, as the SysV ABI requires.
    const _: () = assert!(SIZE.is_multiple_of(16));
}

impl TrapFrame {
    /// The interrupted instruction (or, for faults, the faulting one).
    pub fn instruction_pointer(&self) -> u64 {
        self.rip
    }

    /// The interrupted stack pointer.
    pub fn stack_pointer(&self) -> u64 {
        self.rsp
    }

    /// Record that every register slot of this frame now holds what user mode must get
    /// back (after writing them all), so a system-call exit restores them all. Frames of
    /// other vectors are always complete.
    pub fn mark_full(&mut self) {
        if self.vector == vector::SYSCALL {
            self.error_code = SYSCALL_FULL;
        }
    }

    /// Whether the trap came from user mode (saved CS has RPL 3).
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// The portable cause of an exception. Reads CR2 for a page fault, so call it before
    /// anything else can fault (the dispatcher does so first thing). Only exceptions reach
    /// the core's `keel_trap`: system calls enter through `KEEL_SYSCALLS` and interrupts are
    /// finished by the dispatcher, so their frames decode as [`TrapCause::Other`] with the
    /// vector.
    pub fn cause(&self) -> TrapCause {
        match self.vector {
            vector::PAGE_FAULT => TrapCause::PageFault {
                addr: Cr2::read_raw(),
                access: page_fault_access(self.error_code),
                from_user: self.from_user(),
            },
            vector::BREAKPOINT => TrapCause::Breakpoint,
            vector::INVALID_OPCODE => TrapCause::Undefined,
            vector::ALIGNMENT_CHECK => TrapCause::Alignment,
            vector::DIVIDE_ERROR | vector::X87_FLOATING_POINT | vector::SIMD_FLOATING_POINT => {
                TrapCause::Arithmetic
            }
            vector::DEVICE_NOT_AVAILABLE => TrapCause::FpuUnavailable,
            vector::GENERAL_PROTECTION => TrapCause::GeneralProtection,
            other => TrapCause::Other(other),
        }
    }
}

/// Page-fault error code bits (Intel SDM Vol. 3A, §4.7).
pub mod page_fault {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED_BIT: u64 = 1 << 3;
    pub const INSTRUCTION_FETCH: u64 = 1 << 4;
    pub const PROTECTION_KEY: u64 = 1 << 5;
    pub const SHADOW_STACK: u64 = 1 << 6;
    pub const SGX: u64 = 1 << 15;
}

fn page_fault_access(error_code: u64) -> Access {
    if error_code & page_fault::INSTRUCTION_FETCH != 0 {
        Access::Execute
    } else if error_code & page_fault::WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// RFLAGS bits (Intel SDM Vol. 1, §3.4.3).
pub mod rflags {
    pub const CARRY: u64 = 1 << 0;
    /// Bit 1 always reads as 1.
    pub const RESERVED_ONE: u64 = 1 << 1;
    pub const PARITY: u64 = 1 << 2;
    pub const AUXILIARY: u64 = 1 << 4;
    pub const ZERO: u64 = 1 << 6;
    pub const SIGN: u64 = 1 << 7;
    pub const TRAP: u64 = 1 << 8;
    pub const INTERRUPT: u64 = 1 << 9;
    pub const DIRECTION: u64 = 1 << 10;
    pub const OVERFLOW: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NESTED_TASK: u64 = 1 << 14;
    pub const RESUME: u64 = 1 << 16;
    pub const ALIGNMENT_CHECK: u64 = 1 << 18;

    /// The flags user code may set itself (arithmetic flags, DF, TF, AC).
    pub const USER_SETTABLE: u64 =
        CARRY | PARITY | AUXILIARY | ZERO | SIGN | OVERFLOW | DIRECTION | TRAP | ALIGNMENT_CHECK;
}

/// The early part of an IPC fast path's message on x86_64 (`arch_api::TrapFrame::IpcEarly`):
/// none, every word is read from the sender's frame at the delivery.
#[derive(Clone, Copy, Debug)]
pub struct AllInFrame;

impl arch_api::TrapFrame for TrapFrame {
    fn new_user(entry: u64, user_stack: u64, argument: u64) -> Self {
        Self {
            rip: entry,
            cs: u64::from(crate::percpu::selector::USER_CODE),
            rflags: rflags::RESERVED_ONE | rflags::INTERRUPT,
            rsp: user_stack,
            ss: u64::from(crate::percpu::selector::USER_DATA),
            rdi: argument,
            ..Self::default()
        }
    }

    fn instruction_pointer(&self) -> u64 {
        self.rip
    }

    fn set_instruction_pointer(&mut self, address: u64) {
        self.rip = address;
    }

    fn stack_pointer(&self) -> u64 {
        self.rsp
    }

    fn frame_pointer(&self) -> u64 {
        self.rbp
    }

    fn is_from_user(&self) -> bool {
        self.from_user()
    }

    fn syscall_number(&self) -> u64 {
        self.rax
    }

    fn syscall_arguments(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    fn set_syscall_results(&mut self, first: u64, second: u64) {
        self.rax = first;
        self.rdx = second;
    }

    fn cause(&self) -> TrapCause {
        TrapFrame::cause(self)
    }

    fn set_ipc_message(&mut self, status: u64, badge: u64, info: u64, words: [u64; 4]) {
        self.rax = status;
        self.rdi = badge;
        self.rsi = info;
        [self.rdx, self.r10, self.r8, self.r9] = words;
    }

    /// Nothing early: the message stays in the sender's frame until the delivery.
    type IpcEarly = AllInFrame;

    #[inline(always)]
    fn ipc_early(&self) -> AllInFrame {
        AllInFrame
    }

    #[inline(always)]
    fn forward_ipc_message(&mut self, badge: u64, AllInFrame: AllInFrame, sender: &Self) {
        self.rax = 0;
        self.rdi = badge;
        self.rsi = sender.rsi;
        self.rdx = sender.rdx;
        self.r10 = sender.r10;
        self.r8 = sender.r8;
        self.r9 = sender.r9;
    }

    fn set_status(&mut self, status: u64) {
        self.rax = status;
    }
}
