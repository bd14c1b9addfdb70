//! The system-call ABI shared by the Keel kernel and user space: numbers, error codes,
//! rights and message layout, and nothing else (DESIGN.md §6).
//!
//! Every value here is part of a stable binary interface: discriminants are explicit and
//! never reused. Today: error codes, capability handles, rights and the first system calls
//! ([`Syscall`]); the rest arrive with issue 8.
#![no_std]
#![forbid(unsafe_code)]

/// Every failure the kernel can return to user space, with its stable numeric code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Error {
    /// An argument has a value the call does not accept.
    InvalidArgument = 1,
    /// A pointer or range names memory the caller may not access.
    BadAddress = 2,
    /// The caller's quota or the kernel's memory is exhausted.
    OutOfMemory = 3,
    /// The peer of an IPC operation has died.
    PeerDied = 4,
    /// A handle names no capability: out of range, never filled, or stale (its slot was
    /// deleted, so the generation no longer matches).
    InvalidHandle = 5,
    /// The capability exists but lacks a right the operation requires.
    PermissionDenied = 6,
    /// A fixed-size kernel table (such as the caller's capability table) has no free slot.
    NoSpace = 7,
}

impl Error {
    /// The error for a numeric code, if the code is one the kernel returns.
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::InvalidArgument,
            2 => Self::BadAddress,
            3 => Self::OutOfMemory,
            4 => Self::PeerDied,
            5 => Self::InvalidHandle,
            6 => Self::PermissionDenied,
            7 => Self::NoSpace,
            _ => return None,
        })
    }

    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// A user's name for a capability: a slot index in the caller's capability table plus the
/// generation of that slot, so a handle kept after its capability was deleted fails with
/// [`Error::InvalidHandle`] even when the slot has been reused (DESIGN.md §6).
///
/// Layout (stable, one register wide): bits 0..32 are the slot index, bits 32..64 the
/// generation. The kernel never hands out generation 0, so [`Handle::NULL`] (all zero)
/// names nothing and can mean "no handle" in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Handle(u64);

impl Handle {
    /// Names no capability, ever.
    pub const NULL: Self = Self(0);
    /// Bit position of the generation field.
    pub const GENERATION_SHIFT: u32 = 32;

    pub const fn new(slot: u32, generation: u32) -> Self {
        Self(((generation as u64) << Self::GENERATION_SHIFT) | slot as u64)
    }

    /// A handle as passed in a register. Every `u64` is a well-formed handle; whether it
    /// names a capability is for the kernel's table to decide.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn slot(self) -> u32 {
        // why: truncation keeps exactly bits 0..32, the slot field.
        self.0 as u32
    }

    pub const fn generation(self) -> u32 {
        (self.0 >> Self::GENERATION_SHIFT) as u32
    }
}

/// What a capability allows, as a set of bits with stable values. Rights only shrink:
/// copying a capability yields the source's rights intersected with a mask, never more.
///
/// Which right an operation requires is fixed per object type by the call that uses it:
/// memory regions use `READ`/`WRITE`/`EXECUTE`/`MAP`; endpoints `READ` (receive), `WRITE`
/// (send) and `CALL`; notifications `SIGNAL` and `WAIT`; processes, threads and IRQs
/// `CONTROL`; any capability needs `GRANT` to be transferred to another process over IPC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Rights(u32);

impl Rights {
    /// Read the object: map a memory region readable, receive on an endpoint.
    pub const READ: Self = Self(1 << 0);
    /// Modify the object: map a memory region writable, send on an endpoint.
    pub const WRITE: Self = Self(1 << 1);
    /// Map a memory region executable.
    pub const EXECUTE: Self = Self(1 << 2);
    /// Map a memory region (or device range) into an address space at all.
    pub const MAP: Self = Self(1 << 3);
    /// Transfer the capability to another process over IPC.
    pub const GRANT: Self = Self(1 << 4);
    /// Signal a notification.
    pub const SIGNAL: Self = Self(1 << 5);
    /// Wait on or poll a notification.
    pub const WAIT: Self = Self(1 << 6);
    /// Call an endpoint (send and wait for the reply).
    pub const CALL: Self = Self(1 << 7);
    /// Control a process, thread or IRQ line: start, stop, kill, set priority, acknowledge.
    pub const CONTROL: Self = Self(1 << 8);

    /// Every right the ABI defines. Bits above these are reserved and never set.
    pub const ALL: Self = Self((1 << 9) - 1);
    pub const NONE: Self = Self(0);

    /// The rights for raw bits, or `None` if a reserved bit is set (a user passing
    /// undefined bits gets an error rather than having them silently ignored).
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The rights for raw bits with reserved bits dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::ALL.0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every right in `other` is also in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The rights in `self` that are not in `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl core::ops::BitAnd for Rights {
    type Output = Self;
    fn bitand(self, other: Self) -> Self {
        self.intersection(other)
    }
}

impl core::ops::BitOr for Rights {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::fmt::Debug for Rights {
    /// Names the rights, e.g. `Rights(READ | WRITE)`, for `caps <pid>` listings.
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [(Rights, &str); 9] = [
            (Rights::READ, "READ"),
            (Rights::WRITE, "WRITE"),
            (Rights::EXECUTE, "EXECUTE"),
            (Rights::MAP, "MAP"),
            (Rights::GRANT, "GRANT"),
            (Rights::SIGNAL, "SIGNAL"),
            (Rights::WAIT, "WAIT"),
            (Rights::CALL, "CALL"),
            (Rights::CONTROL, "CONTROL"),
        ];
        formatter.write_str("Rights(")?;
        let mut first = true;
        for (right, name) in NAMES {
            if self.contains(right) {
                if !first {
                    formatter.write_str(" | ")?;
                }
                formatter.write_str(name)?;
                first = false;
            }
        }
        formatter.write_str(")")
    }
}

/// System-call numbers (DESIGN.md §6: `rax` on x86_64, `x8` on AArch64) and their result
/// convention.
///
/// Every call returns two words (`rax`, `rdx` / `x0`, `x1`): the first is `0` on success or
/// an [`Error`] code, the second the call's value (0 when it has none). A number the kernel
/// does not know returns [`Error::InvalidArgument`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// Does nothing and succeeds: the round-trip cost of entering the kernel.
    Null = 0,
    /// `debug_write(pointer, length)`: print `length` bytes of user memory (at most
    /// [`DEBUG_WRITE_MAX`]) as one line of the kernel log. A range that is not wholly
    /// readable user memory returns [`Error::BadAddress`]; a readable one longer than the
    /// maximum returns [`Error::InvalidArgument`].
    DebugWrite = 1,
    /// `exit(code)`: end the calling thread (and its process with its last thread). Never
    /// returns.
    Exit = 2,
    /// `yield()`: let other ready threads of the same priority run first.
    Yield = 3,
    /// `thread_write_registers(thread, pointer, length)`: replace a thread's user
    /// registers with the [`UserRegisters`] at `pointer` (`length` must be its size).
    /// `thread` 0 is the calling thread, the only one accepted until thread capabilities
    /// exist (issue 8). The kernel validates everything the CPU would trust (issues 5 and
    /// 6) and answers [`Error::InvalidArgument`] for a bad value, [`Error::BadAddress`]
    /// for an unreadable image. On success the call does not return: the thread resumes
    /// with the new registers.
    ThreadWriteRegisters = 4,
    /// `memory_map(address, length, flags)`: map `length` bytes of fresh zeroed memory at
    /// `address` in the caller's address space, readable, plus [`MAP_WRITE`] or
    /// [`MAP_EXECUTE`] (never both: W^X). `address` and `length` must be page multiples
    /// and `length` non-zero ([`Error::InvalidArgument`]); the range must lie in the user
    /// half ([`Error::BadAddress`]) and not overlap a mapping
    /// ([`Error::InvalidArgument`]); beyond the process's memory quota, or with the
    /// kernel out of frames, [`Error::OutOfMemory`]. All or nothing.
    MemoryMap = 5,
    /// `memory_unmap(address, length)`: remove mappings made by `memory_map` and free
    /// their memory. Every page of the range must be such a mapping
    /// ([`Error::InvalidArgument`]); nothing changes on an error.
    MemoryUnmap = 6,
    /// `test_sleep(ticks, seed)`: a test-only call (issues 5 and 6: "two threads in kernel
    /// at once keep separate kernel stacks"). The kernel fills 1 KiB of the caller's
    /// kernel stack with a pattern from `seed`, blocks the caller for `ticks` timer ticks
    /// (1 to [`TEST_SLEEP_MAX_TICKS`], else [`Error::InvalidArgument`]), then checks the
    /// pattern. Value: 0 when it held on the caller's own kernel stack, 1 when it changed,
    /// 2 when it was not on the caller's kernel stack. Harmless: bounded, no allocation.
    TestSleep = 7,
    /// `bench_counter(which)`: one of the kernel's event counters ([`BenchCounter`]), for
    /// benchmarks (issue 10). Reads only; an unknown selector returns
    /// [`Error::InvalidArgument`]. Numbered apart from the lasting calls: it may change
    /// with the benchmarks.
    BenchCounter = 0x40,
}

/// The counters `bench_counter` reads: events on the kernel paths benchmarks measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum BenchCounter {
    /// Timer interrupts taken (a sample with a tick inside its window is discarded).
    Ticks = 0,
    /// Thread switches (each saves and restores FPU state eagerly).
    Switches = 1,
    /// Address-space activations (CR3 / TTBR0_EL1 writes).
    SpaceSwitches = 2,
    /// Single-page TLB invalidations by the core (one per page unmapped).
    TlbFlushes = 3,
}

impl BenchCounter {
    /// The counter for a raw selector, if there is one.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Ticks,
            1 => Self::Switches,
            2 => Self::SpaceSwitches,
            3 => Self::TlbFlushes,
            _ => return None,
        })
    }
}

/// The longest block `test_sleep` accepts, in timer ticks.
pub const TEST_SLEEP_MAX_TICKS: u64 = 100;

/// `memory_map` flag: writable.
pub const MAP_WRITE: u64 = 1 << 0;
/// `memory_map` flag: executable.
pub const MAP_EXECUTE: u64 = 1 << 1;
/// The page size of every mapping.
pub const PAGE_SIZE: u64 = 4096;

/// A thread's user registers, as `thread_write_registers` reads them (36 little-endian
/// words, in this order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UserRegisters {
    pub instruction_pointer: u64,
    pub stack_pointer: u64,
    /// x86_64: RFLAGS (arithmetic flags, DF, TF, AC; IF is forced on). AArch64: SPSR, of
    /// which only NZCV and SS may be set.
    pub flags: u64,
    /// x86_64: `rax rbx rcx rdx rsi rdi rbp r8`–`r15` in the first 15 words, the rest 0.
    /// AArch64: `x0`–`x30`.
    pub general: [u64; 31],
    /// x86_64: MXCSR. AArch64: FPCR.
    pub fpu_control: u64,
    /// x86_64: 0. AArch64: FPSR.
    pub fpu_status: u64,
}

impl UserRegisters {
    /// Words in the layout.
    pub const WORDS: usize = 36;
    /// Bytes in the layout.
    pub const SIZE: usize = Self::WORDS * 8;

    /// The registers from their words, in layout order.
    pub fn from_words(words: &[u64; Self::WORDS]) -> Self {
        let mut general = [0; 31];
        general.copy_from_slice(&words[3..34]);
        Self {
            instruction_pointer: words[0],
            stack_pointer: words[1],
            flags: words[2],
            general,
            fpu_control: words[34],
            fpu_status: words[35],
        }
    }
}

/// The longest text one `debug_write` prints.
pub const DEBUG_WRITE_MAX: u64 = 256;

impl Syscall {
    /// The call for a raw number, if there is one.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Null,
            1 => Self::DebugWrite,
            2 => Self::Exit,
            3 => Self::Yield,
            4 => Self::ThreadWriteRegisters,
            5 => Self::MemoryMap,
            6 => Self::MemoryUnmap,
            7 => Self::TestSleep,
            0x40 => Self::BenchCounter,
            _ => return None,
        })
    }

    pub const fn number(self) -> u64 {
        self as u64
    }
}

#[cfg(test)]
mod tests {
    // why: the crate is `no_std` even under test; the Debug test needs `format!`.
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn codes_round_trip_and_zero_is_not_an_error() {
        for error in [
            Error::InvalidArgument,
            Error::BadAddress,
            Error::OutOfMemory,
            Error::PeerDied,
            Error::InvalidHandle,
            Error::PermissionDenied,
            Error::NoSpace,
        ] {
            assert_eq!(Error::from_code(error.code()), Some(error));
        }
        assert_eq!(Error::from_code(0), None);
    }

    #[test]
    fn syscall_numbers_are_stable() {
        let expected = [
            (Syscall::Null, 0),
            (Syscall::DebugWrite, 1),
            (Syscall::Exit, 2),
            (Syscall::Yield, 3),
            (Syscall::ThreadWriteRegisters, 4),
            (Syscall::MemoryMap, 5),
            (Syscall::MemoryUnmap, 6),
            (Syscall::TestSleep, 7),
        ];
        for (call, number) in expected {
            assert_eq!(call.number(), number);
            assert_eq!(Syscall::from_number(number), Some(call));
        }
        assert_eq!(Syscall::from_number(8), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn user_registers_layout_is_stable() {
        assert_eq!(core::mem::size_of::<UserRegisters>(), UserRegisters::SIZE);
        assert_eq!(core::mem::offset_of!(UserRegisters, flags), 16);
        assert_eq!(core::mem::offset_of!(UserRegisters, general), 24);
        assert_eq!(core::mem::offset_of!(UserRegisters, fpu_control), 34 * 8);
        let words: [u64; UserRegisters::WORDS] = core::array::from_fn(|index| index as u64);
        let registers = UserRegisters::from_words(&words);
        assert_eq!(registers.instruction_pointer, 0);
        assert_eq!(registers.flags, 2);
        assert_eq!(registers.general[0], 3);
        assert_eq!(registers.general[30], 33);
        assert_eq!((registers.fpu_control, registers.fpu_status), (34, 35));
    }

    #[test]
    fn handle_layout_is_stable() {
        assert_eq!(core::mem::size_of::<Handle>(), 8);
        assert_eq!(core::mem::align_of::<Handle>(), 8);
        let handle = Handle::new(0x1234_5678, 0x9abc_def0);
        assert_eq!(handle.raw(), 0x9abc_def0_1234_5678);
        assert_eq!(handle.slot(), 0x1234_5678);
        assert_eq!(handle.generation(), 0x9abc_def0);
        assert_eq!(Handle::from_raw(handle.raw()), handle);
        assert_eq!(Handle::new(1, 2).raw(), (2 << 32) | 1);
        assert_eq!(Handle::NULL.raw(), 0);
        assert_eq!((Handle::NULL.slot(), Handle::NULL.generation()), (0, 0));
        let extremes = Handle::new(u32::MAX, u32::MAX);
        assert_eq!(extremes.raw(), u64::MAX);
        assert_eq!(
            (extremes.slot(), extremes.generation()),
            (u32::MAX, u32::MAX)
        );
    }

    #[test]
    fn rights_bits_are_stable() {
        assert_eq!(core::mem::size_of::<Rights>(), 4);
        let expected = [
            (Rights::READ, 0x001),
            (Rights::WRITE, 0x002),
            (Rights::EXECUTE, 0x004),
            (Rights::MAP, 0x008),
            (Rights::GRANT, 0x010),
            (Rights::SIGNAL, 0x020),
            (Rights::WAIT, 0x040),
            (Rights::CALL, 0x080),
            (Rights::CONTROL, 0x100),
        ];
        let mut union = Rights::NONE;
        for (right, bits) in expected {
            assert_eq!(right.bits(), bits);
            assert_eq!(union & right, Rights::NONE, "rights overlap");
            union = union | right;
        }
        assert_eq!(union, Rights::ALL);
        assert_eq!(Rights::ALL.bits(), 0x1ff);
        assert_eq!(Rights::default(), Rights::NONE);
    }

    #[test]
    fn reserved_rights_bits_are_refused_or_dropped() {
        assert_eq!(Rights::from_bits(0x1ff), Some(Rights::ALL));
        assert_eq!(Rights::from_bits(0), Some(Rights::NONE));
        assert_eq!(Rights::from_bits(0x200), None);
        assert_eq!(Rights::from_bits(u32::MAX), None);
        assert_eq!(Rights::from_bits_truncate(u32::MAX), Rights::ALL);
    }

    #[test]
    fn rights_set_operations() {
        let read_write = Rights::READ | Rights::WRITE;
        assert!(read_write.contains(Rights::READ));
        assert!(read_write.contains(Rights::NONE));
        assert!(!read_write.contains(Rights::READ | Rights::GRANT));
        assert_eq!(
            read_write.intersection(Rights::WRITE | Rights::MAP),
            Rights::WRITE
        );
        assert_eq!(read_write.difference(Rights::READ), Rights::WRITE);
        assert!(Rights::NONE.is_empty() && !read_write.is_empty());
        assert_eq!(format!("{read_write:?}"), "Rights(READ | WRITE)");
        assert_eq!(format!("{:?}", Rights::NONE), "Rights()");
    }
}
