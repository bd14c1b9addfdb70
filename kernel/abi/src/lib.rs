//! The system-call ABI shared by the Keel kernel and user space: numbers, error codes,
//! rights and message layout, and nothing else (DESIGN.md §6).
//!
//! Every value here is part of a stable binary interface: discriminants are explicit and
//! never reused. Today: error codes, capability handles, rights, object types, the IPC
//! message layout ([`MessageInfo`], [`ipc`]) and the system calls ([`Syscall`]), process,
//! thread and device calls included.
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
    /// The caller's memory budget or the kernel's memory is exhausted.
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
    /// The call exists but this kernel was built without it: a test-only call in a kernel
    /// without the `testing` feature.
    NotSupported = 8,
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
            8 => Self::NotSupported,
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
    /// exist. The kernel validates everything the CPU would trust and answers [`Error::InvalidArgument`] for a bad value, [`Error::BadAddress`]
    /// for an unreadable image. On success the call does not return: the thread resumes
    /// with the new registers.
    ThreadWriteRegisters = 4,
    /// `memory_map(address, length, flags)`: map `length` bytes of fresh zeroed memory at
    /// `address` in the caller's address space, readable, plus [`MAP_WRITE`] or
    /// [`MAP_EXECUTE`] (never both: W^X). `address` and `length` must be page multiples
    /// and `length` non-zero ([`Error::InvalidArgument`]); the range must lie in the user
    /// half ([`Error::BadAddress`]) and not overlap a mapping
    /// ([`Error::InvalidArgument`]); more than [`MAP_PAGES_MAX`] pages in one call,
    /// beyond the process's memory budget (each page and page table is charged a page),
    /// or with the kernel out of frames, [`Error::OutOfMemory`]. All or nothing.
    MemoryMap = 5,
    /// `memory_unmap(address, length)`: remove mappings made by `memory_map` and free
    /// their memory. Every page of the range must be such a mapping
    /// ([`Error::InvalidArgument`]); nothing changes on an error.
    MemoryUnmap = 6,
    /// `test_sleep(ticks, seed)`: a test-only call ("two threads in kernel
    /// at once keep separate kernel stacks"). The kernel fills 1 KiB of the caller's
    /// kernel stack with a pattern from `seed`, blocks the caller for `ticks` timer ticks
    /// (1 to [`TEST_SLEEP_MAX_TICKS`], else [`Error::InvalidArgument`]), then checks the
    /// pattern. Value: 0 when it held on the caller's own kernel stack, 1 when it changed,
    /// 2 when it was not on the caller's kernel stack. Harmless: bounded, no allocation.
    TestSleep = 7,
    /// `cap_copy(handle, rights_mask)`: a new capability in the caller's table naming the
    /// same object (and badge) as `handle`, with `handle`'s rights intersected with
    /// `rights_mask` (rights never grow). Value: the new handle.
    /// Errors: [`Error::InvalidHandle`] (`handle` names nothing or is stale),
    /// [`Error::InvalidArgument`] (`rights_mask` has bits outside [`Rights::ALL`]),
    /// [`Error::OutOfMemory`] (the caller's table is full and its budget cannot pay for
    /// the table's growth), [`Error::NoSpace`] (the table has [`CAP_TABLE_MAX_SLOTS`]
    /// capabilities).
    CapCopy = 8,
    /// `cap_delete(handle)`: remove the capability; deleting the last capability to an
    /// object frees it, and deleting the last receive-capable (`READ`) capability to an
    /// endpoint makes every call or send on it fail with [`Error::PeerDied`].
    /// Errors: [`Error::InvalidHandle`].
    CapDelete = 9,
    /// `cap_mint(endpoint, badge, rights_mask)`: a badged copy of an unbadged endpoint
    /// capability, with the source's rights intersected with `rights_mask`. Messages sent
    /// through the copy deliver `badge` to the receiver. Value: the new handle.
    /// Errors: [`Error::InvalidHandle`]; [`Error::InvalidArgument`] when `endpoint` is not
    /// an endpoint, is already badged, `badge` is 0, or `rights_mask` has reserved bits;
    /// [`Error::OutOfMemory`], [`Error::NoSpace`] (as `cap_copy`).
    CapMint = 10,
    /// `cap_identify(handle)`: value = the object type ([`ObjectType`]) in bits 0..32 and
    /// the capability's rights in bits 32..64. Errors: [`Error::InvalidHandle`].
    CapIdentify = 11,
    /// `endpoint_create()`: a new endpoint; value: a handle with [`Rights::ALL`]. The
    /// object is charged to the caller's memory budget until it is freed.
    /// Errors: [`Error::OutOfMemory`] (budget used up, for the object or the table's
    /// growth), [`Error::NoSpace`] (the table has [`CAP_TABLE_MAX_SLOTS`] capabilities).
    EndpointCreate = 12,
    /// `notification_create()`: a new notification (word 0); like `endpoint_create`.
    NotificationCreate = 13,
    /// `send(endpoint, info, w0, w1, w2, w3)`: send a message ([`MessageInfo`]) and block
    /// until a receiver takes it. Needs `WRITE` on the endpoint and `GRANT` on every
    /// capability transferred. Registers: see [`ipc`]. Errors: [`Error::InvalidHandle`]
    /// (the endpoint or a transferred handle), [`Error::PermissionDenied`],
    /// [`Error::InvalidArgument`] (not an endpoint; reserved `info` bits; more than
    /// [`MessageInfo::MAX_WORDS`] words or [`MessageInfo::MAX_CAPS`] capabilities; words
    /// beyond 4 or capabilities without an IPC buffer), [`Error::BadAddress`] (the IPC
    /// buffer is no longer mapped), [`Error::PeerDied`] (no receive-capable capability to
    /// the endpoint is left, now or while waiting).
    Send = 14,
    /// `recv(endpoint)`: block until a message arrives. Needs `READ`. Result registers:
    /// status, badge, info, w0..w3 ([`ipc`]); words 4.. and received capability handles
    /// arrive in the IPC buffer. The received info counts what arrived: a receiver without
    /// an IPC buffer gets words 0..4 and no capability; a capability that finds no free
    /// slot in the receiver's table is dropped. If the sender used `call`, the receiving
    /// thread now holds
    /// the one-shot reply slot (`reply` / `reply_recv` answer it). Errors:
    /// [`Error::InvalidHandle`], [`Error::PermissionDenied`], [`Error::InvalidArgument`]
    /// (not an endpoint).
    Recv = 15,
    /// `call(endpoint, info, w0, w1, w2, w3)`: send, then wait for the receiver's reply,
    /// which comes back in the same registers as `recv` returns (badge 0). Needs `CALL`.
    /// Errors: those of `send`; [`Error::PeerDied`] also when the receiving thread dies
    /// before it replies.
    Call = 16,
    /// `reply(_, info, w0, w1, w2, w3)`: answer the caller whose message this thread
    /// received last (the first register is ignored). Never blocks.
    /// Errors: [`Error::InvalidArgument`] (no caller waits for this thread's reply; bad
    /// `info`), [`Error::PeerDied`] (that caller died), [`Error::InvalidHandle`] /
    /// [`Error::PermissionDenied`] (a transferred capability), [`Error::BadAddress`].
    Reply = 17,
    /// `reply_recv(endpoint, info, w0, w1, w2, w3)`: reply to the pending caller, if any
    /// (a caller that died meanwhile is skipped), then `recv(endpoint)`. The server loop:
    /// the result registers of one iteration are the arguments of the next. Errors: those
    /// of `recv`, checked before the reply is sent, and `info` errors of `reply`.
    ReplyRecv = 18,
    /// `signal(notification, bits)`: OR `bits` into the notification's word and wake the
    /// first waiter. Needs `SIGNAL`. Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (not a notification, or
    /// `bits` is 0).
    Signal = 19,
    /// `wait(notification)`: block until the word is non-zero; value: the word, which is
    /// cleared. Needs `WAIT`. Errors: as `signal` (without the `bits` check), and
    /// [`Error::PeerDied`] when the notification's last capability is deleted while the
    /// thread waits (nothing can signal it through a capability any more).
    Wait = 20,
    /// `poll(notification)`: value: the word (0 when nothing was signalled), cleared;
    /// never blocks. Needs `WAIT`. Errors: as `wait`.
    Poll = 21,
    /// `ipc_buffer_set(address)`: use the page at `address` as the calling thread's IPC
    /// buffer (0: none). It must be a page of writable memory mapped by `memory_map`.
    /// Errors: [`Error::InvalidArgument`] (not page-aligned), [`Error::BadAddress`] (not
    /// such a page: unmapped, read-only, part of the image or stack, kernel half).
    /// Unmapping the page later makes long messages fail with [`Error::BadAddress`].
    IpcBufferSet = 22,
    /// `process_spawn(memory, caps_pointer, caps_count, priority, argument, budget)`: a
    /// new process from the ELF image in the memory-region capability `memory` (needs
    /// `READ`), its first thread at `priority` (at most the calling thread's own) entering
    /// the image's entry point with `argument`. The child's memory budget is `budget`
    /// bytes (0: [`DEFAULT_BUDGET`]), taken out of the caller's own: everything the
    /// kernel allocates for the child (its record and capability table, threads, page
    /// tables, pages, the objects it makes, the budgets it gives its own children) is
    /// charged to it, and the whole `budget` returns to the caller when the child's
    /// record is freed (the child has ended and the last handle to it is deleted) and
    /// nothing else charged to it is left. The child's table gets its first thread
    /// ([`Rights::CONTROL`]) at slot 0 and copies of the `caps_count` (at most
    /// [`MAX_SPAWN_CAPS`]) handles at `caps_pointer` (an array of `u64`), with their
    /// rights, at slots 1.. in order; each needs `GRANT`. Slot `n` of a fresh table is
    /// `Handle::new(n, 1)`. Value: a process handle with [`Rights::ALL`].
    /// Errors: [`Error::InvalidHandle`] (`memory` or a listed handle), [`Error::PermissionDenied`]
    /// (`memory` without `READ`, a listed capability without `GRANT`, `priority` above the
    /// caller's), [`Error::InvalidArgument`] (`memory` is not a memory region, the image
    /// is not a valid ELF executable for this machine, `caps_count` too large, `priority`
    /// not below [`PRIORITY_LEVELS`]), [`Error::BadAddress`] (the handle array is not
    /// readable user memory), [`Error::OutOfMemory`] (the caller's budget has not `budget`
    /// bytes left, `budget` cannot hold the child's image, stack and first thread, frames,
    /// thread slots, the growth of the caller's table), [`Error::NoSpace`] (the caller's
    /// table has [`CAP_TABLE_MAX_SLOTS`] capabilities).
    ProcessSpawn = 0x20,
    /// `process_kill(process)`: end every thread of the process (needs `CONTROL`). A
    /// thread running user code or blocked in the kernel never runs user code again; the
    /// process's status becomes killed ([`ProcessStatus`]) once its last thread is gone.
    /// Killing the caller's own process ends the caller too. Killing a process that has
    /// ended does nothing. Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`],
    /// [`Error::InvalidArgument`] (not a process).
    ProcessKill = 0x21,
    /// `process_bind_death(process, notification, bits)`: signal `bits` on the
    /// notification when the process's last thread is gone (at once if it already is).
    /// One binding per process; a new one replaces the old. Needs `CONTROL` on the
    /// process and `SIGNAL` on the notification. Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (wrong object types, `bits`
    /// 0).
    ProcessBindDeath = 0x22,
    /// `process_status(process)`: value: [`ProcessStatus::encode`] — bits 0..8 the state
    /// (0 running, 1 exited, 2 faulted, 3 killed), bits 32..64 the low 32 bits of the exit
    /// code when exited. Needs `READ`. Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (not a process).
    ProcessStatus = 0x23,
    /// `thread_create(entry, stack, argument, priority)`: a new thread in the caller's
    /// process, entering user mode at `entry` with stack pointer `stack` (16-byte aligned,
    /// in the user half; the caller maps the stack) and `argument` in the first argument
    /// register, at `priority` (at most the caller's own). Value: a thread handle
    /// ([`Rights::ALL`]). A bad `entry` or unmapped stack faults the new thread only.
    /// Errors: [`Error::BadAddress`] (`entry` or `stack` outside the user half),
    /// [`Error::InvalidArgument`] (`stack` misaligned, `priority` not below
    /// [`PRIORITY_LEVELS`]), [`Error::PermissionDenied`] (`priority` above the caller's),
    /// [`Error::OutOfMemory`] (no thread slot or kernel stack, or the caller's budget
    /// cannot pay for the thread's record and kernel stack or the table's growth; a
    /// process has as many threads as its budget pays for),
    /// [`Error::NoSpace`] (the table has [`CAP_TABLE_MAX_SLOTS`] capabilities).
    ThreadCreate = 0x24,
    /// `thread_kill(thread)`: end the thread (needs `CONTROL`); it never runs user code
    /// again. Killing the calling thread ends it on return (no exit code is recorded). Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (not a thread),
    /// [`Error::PeerDied`] (the thread has already ended).
    ThreadKill = 0x25,
    /// `thread_set_priority(thread, priority)`: needs `CONTROL`; never above the calling
    /// thread's own priority. Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`]
    /// (no `CONTROL`, or `priority` above the caller's), [`Error::InvalidArgument`] (not a
    /// thread, `priority` not below [`PRIORITY_LEVELS`]), [`Error::PeerDied`] (the thread
    /// has ended).
    ThreadSetPriority = 0x26,
    /// `thread_set_affinity(thread, mask)`: the CPUs the thread may run on, bit `i` for the
    /// CPU of index `i` (the order of `system_info`'s CPU records). Needs `CONTROL`;
    /// `thread` 0 names the calling thread. Bits of CPUs that do not run threads (not
    /// online, or not in the scheduler) are ignored; a mask with none that does is refused. A thread outside its new mask moves before it
    /// next runs user code (the calling thread: before the call returns).
    /// Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`],
    /// [`Error::InvalidArgument`] (not a thread; no online CPU in `mask`),
    /// [`Error::PeerDied`] (the thread has ended).
    ThreadSetAffinity = 0x36,
    /// `cpu_current()`: value = the index of the CPU running the calling thread (it may
    /// have moved by the time the caller reads it, unless its affinity pins it).
    CpuCurrent = 0x37,
    /// `irq_bind(irq, notification, bits)`: when the interrupt line fires, the kernel
    /// masks it and signals `bits` on the notification; [`Syscall::IrqAck`] unmasks it.
    /// Binding unmasks the line; a new binding replaces the old. Needs `CONTROL` on the
    /// line and `SIGNAL` on the notification. Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (wrong object types, `bits`
    /// 0).
    IrqBind = 0x27,
    /// `irq_ack(irq)`: the handler is done; unmask the line. Needs `CONTROL`. Errors:
    /// [`Error::InvalidHandle`], [`Error::PermissionDenied`], [`Error::InvalidArgument`]
    /// (not an IRQ line, or not bound).
    IrqAck = 0x28,
    /// `port_in(ports, port, width)`: value: `width` bytes (1, 2 or 4) read from I/O port
    /// `port` (x86_64). The whole access must lie in the capability's range. Needs `READ`.
    /// The kernel does the access (no TSS I/O bitmap: nothing per process to switch, each
    /// access checked against the capability; a slow device pays a system call per access).
    /// Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`] (no `READ`, or a port
    /// outside the range), [`Error::InvalidArgument`] (not an I/O-port capability, bad
    /// width, `port` above 0xffff).
    PortIn = 0x29,
    /// `port_out(ports, port, width, value)`: write the low `width` bytes of `value`. Needs
    /// `WRITE`; errors as `port_in`.
    PortOut = 0x2a,
    /// `mmio_map(mmio, address)`: map the capability's physical range uncached (device
    /// memory) at `address` in the caller, readable, writable with `WRITE`, never
    /// executable. Needs `MAP`. Unmapped when the process ends. Errors:
    /// [`Error::InvalidHandle`], [`Error::PermissionDenied`], [`Error::InvalidArgument`]
    /// (not an MMIO capability, `address` not page-aligned, the range overlaps a mapping),
    /// [`Error::BadAddress`] (the range leaves the user half), [`Error::OutOfMemory`]
    /// (page tables).
    MmioMap = 0x2b,
    /// `bench_counter(which)`: one of the kernel's event counters ([`BenchCounter`]), for
    /// benchmarks. Reads only; an unknown selector returns
    /// [`Error::InvalidArgument`]. Numbered apart from the lasting calls: it may change
    /// with the benchmarks.
    /// `system_info(system, what, index, buffer, words)`: facts about the running system
    /// ([`sysinfo`]), written as up to `words` `u64`s at `buffer`. Needs `READ` on a
    /// [`ObjectType::System`] capability. Value: the words written (0: `index` names
    /// nothing, e.g. an empty thread slot). Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (not a system capability,
    /// unknown `what`, `words` above [`sysinfo::WORDS_MAX`]), [`Error::BadAddress`].
    SystemInfo = 0x30,
    /// `power_off(power, code)`: switch the machine off; QEMU exits with status `code`
    /// (0 success, else failure). Needs `CONTROL` on an [`ObjectType::Power`] capability.
    /// Never returns on success. Errors: [`Error::InvalidHandle`],
    /// [`Error::PermissionDenied`], [`Error::InvalidArgument`] (not a power capability).
    PowerOff = 0x31,
    /// `sleep(ticks)`: block the calling thread for 1 to [`SLEEP_MAX_TICKS`] timer ticks
    /// (else [`Error::InvalidArgument`]).
    Sleep = 0x32,
    /// `process_id(process)`: value: the process's id (as `ps` and [`sysinfo`] show it).
    /// Needs `READ`. Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`],
    /// [`Error::InvalidArgument`] (not a process).
    ProcessId = 0x33,
    /// `log_bind(console, notification, bits)`: the holder of the console UART's register
    /// capability (I/O ports or MMIO, `WRITE`) takes the kernel log: from now on kernel
    /// log lines are kept in a ring (8 KiB, oldest dropped) instead of printed, and `bits`
    /// is signalled on the notification (`SIGNAL`) when text arrives; a new binding
    /// replaces the old. Errors: [`Error::InvalidHandle`], [`Error::PermissionDenied`],
    /// [`Error::InvalidArgument`] (wrong object types, `bits` 0).
    LogBind = 0x34,
    /// `log_read(console, buffer, length)`: move up to `length` bytes of the kernel log
    /// into `buffer`. Value: the bytes moved. Needs the capability of `log_bind`.
    /// Errors: as `log_bind`, [`Error::BadAddress`].
    LogRead = 0x35,
    BenchCounter = 0x40,
    /// `irq_test_raise(irq)`: test-only, the software path into interrupt delivery: the
    /// kernel delivers the capability's line exactly as if it had fired (signal and mask
    /// when bound and unmasked; nothing when masked or unbound). Value: 1 when it
    /// signalled, 0 otherwise. Needs `CONTROL`. Errors: as [`Syscall::IrqAck`] (without
    /// the binding check).
    IrqTestRaise = 0x41,
}

/// The benchmarks of the `bench` scenario (test build), by name; `test=bench only=<name>`
/// runs just one of them (`cargo xtask bench --trace <name>`).
pub mod bench {
    /// Every benchmark the scenario can run alone; the spawn and fault benchmarks are
    /// measured by the kernel, the others by `user/bench`.
    pub const NAMES: [&str; 11] = [
        "null_syscall",
        "ipc_call_reply",
        "ipc_call_reply_1k",
        "cap_transfer",
        "notify_wake",
        "yield",
        "map_unmap",
        "spawn",
        "page_fault",
        "ipc_call_reply_cross_cpu",
        "timer_tick",
    ];

    /// Benchmarks that need two CPUs or more: on one CPU the scenario prints
    /// `bench: <name> needs 2 CPUs …` instead of a measurement.
    pub const NEEDS_SMP: [&str; 1] = ["ipc_call_reply_cross_cpu"];

    /// The selector of benchmark `name` (its place in [`NAMES`] plus one; 0 runs all).
    pub fn selector(name: &str) -> Option<u64> {
        NAMES
            .iter()
            .position(|known| *known == name)
            .map(|index| index as u64 + 1)
    }

    /// Whether selector `only` (0: all) runs benchmark `name`.
    pub fn selected(only: u64, name: &str) -> bool {
        only == 0 || selector(name) == Some(only)
    }

    /// Whether selector `only` (0: all) runs the benchmark at `index` of [`NAMES`] (no
    /// string comparison: the bench program's size is part of what `spawn` measures).
    pub const fn runs(only: u64, index: usize) -> bool {
        only == 0 || only == index as u64 + 1
    }

    /// Places in [`NAMES`].
    pub const NULL_SYSCALL: usize = 0;
    pub const IPC_CALL_REPLY: usize = 1;
    pub const IPC_CALL_REPLY_1K: usize = 2;
    pub const CAP_TRANSFER: usize = 3;
    pub const NOTIFY_WAKE: usize = 4;
    pub const YIELD: usize = 5;
    pub const MAP_UNMAP: usize = 6;
    pub const IPC_CALL_REPLY_CROSS_CPU: usize = 9;
    pub const TIMER_TICK: usize = 10;

    /// The benchmarks of the `scale` group (`cargo xtask bench --group scale`), run with
    /// few and with many other threads and processes alive: the kernel measures `spawn`,
    /// the bench program the rest.
    pub const SCALE: [&str; 4] = ["spawn", "ipc_call_reply", "yield", "timer_tick"];

    /// The bench program's argument bit for the profile mode (`cargo xtask bench
    /// --profile`): each benchmark it runs takes [`PROFILE_SAMPLES`] samples as usual,
    /// then runs its operation the argument's iteration count of times with nothing
    /// around it and prints `bench: profile loop of N operations`. The iteration count
    /// sits below this bit.
    pub const PROFILE: u64 = 1 << 31;
    /// The samples each benchmark takes in the profile mode.
    pub const PROFILE_SAMPLES: usize = 10;
    /// The iteration count in the bench program's argument: bits 8 to 30.
    pub const fn iterations(argument: u64) -> u64 {
        (argument >> 8) & ((1 << 23) - 1)
    }

    /// Where the bench program's argument carries the number of other threads it makes
    /// before it measures (the `scale` group; 16 bits, above the iteration count). Zero
    /// runs the usual group.
    pub const OTHERS_SHIFT: u32 = 32;
    /// The most other threads the argument carries.
    pub const OTHERS_MAX: u64 = 0xffff;

    /// Where the bench program's argument carries the number of online CPUs (8 bits,
    /// below the selector; the iteration count sits between bit 8 and this).
    pub const CPUS_SHIFT: u32 = 48;

    /// `bench_counter(LOCK_COUNTS + i)`: acquisitions (`Lock::lock` and `try_lock`, every
    /// CPU together) of the kernel lock level named `LOCK_LEVELS[i]` since boot. Only a
    /// kernel built with the lock-order checker (`lockcheck`) counts; others answer
    /// `NotSupported`.
    pub const LOCK_COUNTS: u64 = 0x100;

    /// The kernel's lock levels (`sync::level`), in the order of their counters. The
    /// kernel checks at build time that its table names them in this order.
    pub const LOCK_LEVELS: [&str; 16] = [
        "ipc state",
        "irq bindings",
        "log target",
        "scheduler",
        "capability table",
        "pending work",
        "process record",
        "address space",
        "process pages",
        "kernel-only space",
        "kernel stacks",
        "frames",
        "kernel tables report",
        "heap",
        "console",
        "log ring",
    ];

    /// Where the selector sits in the bench program's argument (above its mode byte and
    /// its iteration count).
    pub const SELECTOR_SHIFT: u32 = 56;
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
    /// The instruction counter's advance since kernel entry (guest instructions under QEMU
    /// `-icount shift=0`; elsewhere the counter's own unit): `boot_to_shell` reads it at the
    /// shell's first prompt.
    SinceKernelEntry = 4,
    /// The instruction clock (`SinceKernelEntry` without the offset): under QEMU `-icount
    /// shift=0` with single-threaded TCG it advances with the instructions of every CPU
    /// together, so a span read on one CPU counts the work of all of them (x86_64: the
    /// TSC, exact; AArch64: `CNTVCT_EL0`, in steps of 16).
    InstructionClock = 5,
    /// Timer interrupts taken by all online CPUs together (`Ticks` counts the boot
    /// CPU's): a cross-CPU sample with a tick on any CPU is discarded.
    TicksAllCpus = 6,
}

impl BenchCounter {
    /// The counter for a raw selector, if there is one.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Ticks,
            1 => Self::Switches,
            2 => Self::SpaceSwitches,
            3 => Self::TlbFlushes,
            4 => Self::SinceKernelEntry,
            5 => Self::InstructionClock,
            6 => Self::TicksAllCpus,
            _ => return None,
        })
    }
}

/// The longest block `sleep` accepts, in timer ticks.
pub const SLEEP_MAX_TICKS: u64 = 10_000;

/// What `system_info` reports: `what` selectors and the word layout of each
/// record. Names are 16 bytes, NUL-padded, in two little-endian words.
pub mod sysinfo {
    /// The most words one call writes.
    pub const WORDS_MAX: u64 = 64;
    /// `index` ignored: [`summary`] words.
    pub const SUMMARY: u64 = 0;
    /// `index`: a thread slot (1 up to [`summary::THREAD_SLOTS`]); [`thread`] words, none
    /// for an empty slot.
    pub const THREAD: u64 = 1;
    /// `index`: a boot module's position; [`module`] words, none past the last.
    pub const MODULE: u64 = 2;
    /// `index`: a process id; the capabilities of that process, [`cap`] words each
    /// (as many as fit), none when no live process has that id.
    pub const CAPS: u64 = 3;
    /// `index`: a CPU's dense index (0 = the boot CPU, up to [`summary::CPUS`]);
    /// [`cpu`] words. `InvalidArgument` past the last online CPU.
    pub const CPU: u64 = 4;
    /// `index` ignored: [`clock`] words.
    pub const CLOCK: u64 = 5;
    /// `index`: a process id, or 0 for the caller's own process; [`budget`] words, none
    /// when no live process (one with a thread left) has that id.
    pub const BUDGET: u64 = 6;

    /// Word positions of the summary.
    pub mod summary {
        pub const TICKS: usize = 0;
        pub const TIMER_HZ: usize = 1;
        pub const FREE_FRAMES: usize = 2;
        /// Frames the allocator manages (free and used).
        pub const TOTAL_FRAMES: usize = 3;
        /// Bytes of the kernel heap in use.
        pub const KERNEL_HEAP: usize = 4;
        /// One past the highest thread id the kernel's thread table serves now: it grows
        /// with the threads (ids are reused), so a listing reads it again each time.
        pub const THREAD_SLOTS: usize = 5;
        /// CPUs with a record: one past the highest online CPU's index.
        pub const CPUS: usize = 6;
        /// Frames the kernel heap holds (it grows from the frame allocator and keeps
        /// them): with [`FREE_FRAMES`], what a leak check compares.
        pub const HEAP_FRAMES: usize = 7;
        pub const WORDS: usize = 8;
    }

    /// Word positions of a thread record.
    pub mod thread {
        pub const ID: usize = 0;
        /// The id of its process (0: a kernel thread).
        pub const PROCESS: usize = 1;
        /// 0 ready, 1 running, 2 blocked, 3 dead.
        pub const STATE: usize = 2;
        pub const PRIORITY: usize = 3;
        /// Timer ticks it was running at.
        pub const CPU_TICKS: usize = 4;
        /// Its process's frames: user pages and the page tables mapping them, charged to
        /// the process's memory budget (0 for a kernel thread).
        pub const PAGES: usize = 5;
        pub const NAME: usize = 6;
        /// The CPU it last ran on.
        pub const LAST_CPU: usize = 8;
        /// Times the scheduler switched to it.
        pub const SWITCHES: usize = 9;
        /// IPC operations (send, call, receive, reply, reply-and-receive) it made.
        pub const IPC: usize = 10;
        /// Notification operations (signal, wait) it made.
        pub const NOTIFICATIONS: usize = 11;
        /// Page faults it took in user mode.
        pub const PAGE_FAULTS: usize = 12;
        pub const WORDS: usize = 13;
    }

    /// Word positions of the clock record: the kernel's fine-grained clock, for timing
    /// short runs (finer than timer ticks).
    pub mod clock {
        /// The clock now.
        pub const NOW: usize = 0;
        /// What it counts: [`CYCLES`] or [`NANOSECONDS`].
        pub const UNIT: usize = 1;
        pub const WORDS: usize = 2;
        /// CPU cycles (x86_64's time-stamp counter; guest instructions under QEMU
        /// `-icount shift=0`).
        pub const CYCLES: u64 = 0;
        /// Nanoseconds (AArch64's virtual counter, scaled).
        pub const NANOSECONDS: u64 = 1;
    }

    /// Word positions of a process's budget record: its memory budget in bytes and
    /// what is charged to it.
    pub mod budget {
        /// The process id (the record's `index`).
        pub const PROCESS: usize = 0;
        /// The budget its creator gave it (`init`'s: the root budget).
        pub const LIMIT: usize = 1;
        /// Bytes charged now: its record, threads, pages, tables, objects, and the whole
        /// budgets of its children that are not freed yet.
        pub const USED: usize = 2;
        /// Frames it holds (user pages and page tables), part of [`USED`].
        pub const PAGES: usize = 3;
        /// Threads not yet freed.
        pub const THREADS: usize = 4;
        pub const NAME: usize = 5;
        /// Slots its capability table has now (it grows and shrinks with use; the slots
        /// beyond the first [`crate::CAP_TABLE_INITIAL_SLOTS`] are part of [`USED`]).
        pub const CAP_SLOTS: usize = 7;
        /// Capabilities it holds.
        pub const CAPS: usize = 8;
        pub const WORDS: usize = 9;
    }

    /// Word positions of a boot-module record.
    pub mod module {
        pub const SIZE: usize = 0;
        pub const NAME: usize = 1;
        pub const WORDS: usize = 3;
    }

    /// Word positions of one capability of a `CAPS` listing.
    pub mod cap {
        pub const SLOT: usize = 0;
        /// [`super::super::ObjectType`] in bits 0..32, rights in bits 32..64.
        pub const TYPE_RIGHTS: usize = 1;
        pub const WORDS: usize = 2;
    }

    /// Word positions of a CPU record.
    pub mod cpu {
        /// The CPU's dense index (the record's `index`).
        pub const ID: usize = 0;
        /// Thread switches so far on all CPUs together, in CPU 0's record (0 in the others):
        /// the switch path counts on the thread switched to, not on the CPU.
        pub const SWITCHES: usize = 1;
        /// Timer ticks this CPU has taken so far.
        pub const TICKS: usize = 2;
        /// The architecture's name (packed as [`super::pack_name`] packs it).
        pub const NAME: usize = 3;
        /// The CPU's hardware id: x86_64 its local APIC ID, AArch64 its MPIDR affinity
        /// fields.
        pub const HARDWARE_ID: usize = 5;
        /// 1 if the CPU is online, 0 if it was left parked.
        pub const ONLINE: usize = 6;
        /// Reschedule IPIs it received.
        pub const IPI_RESCHEDULE: usize = 7;
        /// TLB-shootdown IPIs it handled.
        pub const IPI_TLB_SHOOTDOWN: usize = 8;
        /// 1 once a stop IPI (or its own fatal stop) halted it.
        pub const IPI_STOP: usize = 9;
        pub const WORDS: usize = 10;
    }

    /// A name packed as [`thread::NAME`] and the others store it: 16 bytes, NUL-padded.
    pub fn pack_name(name: &str) -> [u64; 2] {
        let mut bytes = [0u8; 16];
        let take = name.len().min(16);
        bytes[..take].copy_from_slice(&name.as_bytes()[..take]);
        let mut words = [0u64; 2];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(chunk);
            *word = u64::from_le_bytes(eight);
        }
        words
    }

    /// The bytes of a packed name, without the padding.
    pub fn unpack_name(words: [u64; 2], out: &mut [u8; 16]) -> usize {
        out[..8].copy_from_slice(&words[0].to_le_bytes());
        out[8..].copy_from_slice(&words[1].to_le_bytes());
        out.iter().position(|&byte| byte == 0).unwrap_or(16)
    }
}

/// The capabilities the kernel gives `init`, the root task of a boot without a test
/// scenario, by slot (handle `Handle::new(slot, 1)`).
pub mod init_slots {
    /// System information (`system_info`): [`super::ObjectType::System`], `READ GRANT`.
    pub const SYSTEM: u32 = 0;
    /// Power off: [`super::ObjectType::Power`], `CONTROL GRANT`.
    pub const POWER: u32 = 1;
    /// The console UART's interrupt line (`CONTROL GRANT`).
    pub const CONSOLE_IRQ: u32 = 2;
    /// The console UART: I/O ports `READ WRITE GRANT` (x86_64) or MMIO
    /// `READ WRITE MAP GRANT` (AArch64).
    pub const CONSOLE_DEVICE: u32 = 3;
    /// Boot module `i` (in `system_info(MODULE, i)` order) is at slot `FIRST_MODULE + i`
    /// (memory region, `READ MAP GRANT`), up to [`MODULES_MAX`] modules.
    pub const FIRST_MODULE: u32 = 4;
    pub const MODULES_MAX: u32 = 16;
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

/// The most pages one `memory_map` maps (16 MiB): a bound on one call's work; what a
/// process holds in all is bounded by its memory budget.
pub const MAP_PAGES_MAX: u64 = 4096;

/// The memory budget `process_spawn` gives a child when it names none (0): 16 MiB.
pub const DEFAULT_BUDGET: u64 = 16 << 20;

/// Bytes of a memory budget one endpoint or notification takes while it lives.
pub const OBJECT_BUDGET_BYTES: u64 = 256;

/// Slots a process's capability table starts with. The table doubles when an insert
/// finds it full (each growth charged to the process's memory budget at
/// [`CAP_SLOT_BUDGET_BYTES`] a slot, [`Error::OutOfMemory`] when the budget cannot pay)
/// and halves when at most a quarter of it is used (the charge comes back), never below
/// this; a slot keeps its index, so handles stay valid through both.
pub const CAP_TABLE_INITIAL_SLOTS: usize = 16;

/// The most slots a capability table grows to (slot indices `0..65536`): a full table
/// refuses an insert with [`Error::NoSpace`]. The bound keeps one table one heap block
/// of at most 4 MiB, moved in one step when it grows.
pub const CAP_TABLE_MAX_SLOTS: usize = 1 << 16;

/// Bytes of a memory budget one capability-table slot takes (the slot rounded up to the
/// power of two its table's heap block is).
pub const CAP_SLOT_BUDGET_BYTES: u64 = 64;

/// The type of the object a capability names, as `cap_identify` reports it. Stable values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ObjectType {
    Endpoint = 1,
    Notification = 2,
    Process = 3,
    /// A region of physical memory, such as a boot module.
    Memory = 4,
    Thread = 5,
    Irq = 6,
    IoPorts = 7,
    Mmio = 8,
    /// Reading system information (`system_info`).
    System = 9,
    /// Switching the machine off (`power_off`).
    Power = 10,
}

impl ObjectType {
    pub const fn from_number(number: u32) -> Option<Self> {
        Some(match number {
            1 => Self::Endpoint,
            2 => Self::Notification,
            3 => Self::Process,
            4 => Self::Memory,
            5 => Self::Thread,
            6 => Self::Irq,
            7 => Self::IoPorts,
            8 => Self::Mmio,
            9 => Self::System,
            10 => Self::Power,
            _ => return None,
        })
    }
}

/// The `info` word of an IPC message: label (bits 0..32), word count (bits 32..42, at
/// most [`MessageInfo::MAX_WORDS`]) and capability count (bits 48..51, at most
/// [`MessageInfo::MAX_CAPS`]). Other bits are reserved and must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct MessageInfo(u64);

impl MessageInfo {
    /// A message fills at most the IPC buffer page: 512 words.
    pub const MAX_WORDS: usize = 512;
    /// Capabilities one message transfers at most.
    pub const MAX_CAPS: usize = 4;
    /// Words that travel in registers (the rest in the IPC buffer).
    pub const REGISTER_WORDS: usize = 4;
    const WORDS_SHIFT: u32 = 32;
    const WORDS_MASK: u64 = 0x3ff;
    const CAPS_SHIFT: u32 = 48;
    const CAPS_MASK: u64 = 0x7;
    const RESERVED: u64 = !(0xffff_ffff
        | Self::WORDS_MASK << Self::WORDS_SHIFT
        | Self::CAPS_MASK << Self::CAPS_SHIFT);

    /// `None` when `words` or `caps` exceed their maximum.
    pub const fn new(label: u32, words: usize, caps: usize) -> Option<Self> {
        if words > Self::MAX_WORDS || caps > Self::MAX_CAPS {
            return None;
        }
        Some(Self(
            label as u64 | (words as u64) << Self::WORDS_SHIFT | (caps as u64) << Self::CAPS_SHIFT,
        ))
    }

    /// The info the kernel delivered with a message (`call`, `recv`, `reply_recv`), taken
    /// as it is: the kernel checks every info it is given with [`MessageInfo::from_raw`]
    /// and delivers only such infos, or ones it builds with [`MessageInfo::new`]. Checking
    /// again on every receive would cost each message a dozen instructions for nothing.
    /// For any other word use [`MessageInfo::from_raw`].
    pub const fn from_delivered(raw: u64) -> Self {
        Self(raw)
    }

    /// The info in a register, if it is well formed (no reserved bit, counts in range).
    pub const fn from_raw(raw: u64) -> Option<Self> {
        let info = Self(raw);
        if raw & Self::RESERVED != 0
            || info.words() > Self::MAX_WORDS
            || info.caps() > Self::MAX_CAPS
        {
            return None;
        }
        Some(info)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn label(self) -> u32 {
        // why: truncation keeps exactly bits 0..32, the label.
        self.0 as u32
    }

    pub const fn words(self) -> usize {
        ((self.0 >> Self::WORDS_SHIFT) & Self::WORDS_MASK) as usize
    }

    pub const fn caps(self) -> usize {
        ((self.0 >> Self::CAPS_SHIFT) & Self::CAPS_MASK) as usize
    }
}

/// IPC register convention. A message is `info` ([`MessageInfo`]), words
/// 0..4 in registers, words 4.. in the IPC buffer (buffer word `i` = message word `i`),
/// and up to four capability handles in IPC-buffer words 0..4 (the receiver finds its
/// new handles there). The message words sit in the same registers going in and coming
/// out, so a server loop passes one iteration's results to the next call unchanged.
///
/// | | x86_64 | AArch64 |
/// | --- | --- | --- |
/// | in: number | `rax` | `x8` |
/// | in: handle, info | `rdi`, `rsi` | `x0`, `x1` |
/// | in: words 0..4 | `rdx r10 r8 r9` | `x2`–`x5` |
/// | out: status (0 / [`Error`] code) | `rax` | `x0` |
/// | out: badge | `rdi` | `x6` |
/// | out: info | `rsi` | `x1` |
/// | out: words 0..4 | `rdx r10 r8 r9` | `x2`–`x5` |
///
/// On an error only the status register changes. The reply to a `call` has badge 0.
pub mod ipc {
    /// IPC-buffer word index of the first message word beyond the registers.
    pub const BUFFER_FIRST_WORD: usize = super::MessageInfo::REGISTER_WORDS;
    /// IPC-buffer words 0..4 hold the capability handles of a message.
    pub const BUFFER_CAP_WORDS: usize = super::MessageInfo::MAX_CAPS;
}

/// Scheduler priorities: `0..PRIORITY_LEVELS`, higher runs first; equal priorities share
/// the CPU round robin.
pub const PRIORITY_LEVELS: u64 = 32;
/// The priority of the first thread of every process the kernel starts.
pub const PRIORITY_NORMAL: u64 = 8;

/// `init`'s argument under the crash-containment scenario (`test=containment`): start the
/// servers of its containment manifest instead of the system's (0).
pub const INIT_CONTAINMENT: u64 = 1;
/// Capabilities one `process_spawn` copies at most.
pub const MAX_SPAWN_CAPS: u64 = 16;

/// The capabilities the kernel gives the root process of the `user` scenario (the
/// `testsuite` suite run), by slot (handle `Handle::new(slot, 1)`).
pub mod root_slots {
    /// The `testsuite` boot module (memory region: `READ MAP GRANT`).
    pub const TESTSUITE_IMAGE: u32 = 0;
    /// The console UART's interrupt line (`CONTROL`).
    pub const CONSOLE_IRQ: u32 = 1;
    /// The console UART: I/O ports `READ WRITE` (x86_64) or MMIO `READ WRITE MAP`
    /// (AArch64).
    pub const CONSOLE_DEVICE: u32 = 2;
    /// A memory region that is not an ELF executable (the first 256 bytes of `testsuite`:
    /// a valid ELF header whose program headers lie beyond the region), `READ GRANT`.
    pub const MALFORMED_IMAGE: u32 = 3;
    /// The system-information capability (`READ`): the resource tests read the free
    /// frames and the kernel heap with `system_info`.
    pub const SYSTEM: u32 = 4;
}

/// A process's state as `process_status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessStatus {
    Running,
    /// Its last thread called `exit(code)` (low 32 bits of the code, sign-extended).
    Exited(i32),
    /// Its last thread was killed by a fault.
    Faulted,
    /// Ended by `process_kill`.
    Killed,
}

impl ProcessStatus {
    pub const fn encode(self) -> u64 {
        match self {
            Self::Running => 0,
            // why: the code travels as its 32-bit pattern in bits 32..64.
            Self::Exited(code) => 1 | (code as u32 as u64) << 32,
            Self::Faulted => 2,
            Self::Killed => 3,
        }
    }

    pub const fn decode(value: u64) -> Option<Self> {
        Some(match value & 0xff {
            0 => Self::Running,
            // why: bits 32..64 hold the code's 32-bit pattern.
            1 => Self::Exited((value >> 32) as u32 as i32),
            2 => Self::Faulted,
            3 => Self::Killed,
            _ => return None,
        })
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
            8 => Self::CapCopy,
            9 => Self::CapDelete,
            10 => Self::CapMint,
            11 => Self::CapIdentify,
            12 => Self::EndpointCreate,
            13 => Self::NotificationCreate,
            14 => Self::Send,
            15 => Self::Recv,
            16 => Self::Call,
            17 => Self::Reply,
            18 => Self::ReplyRecv,
            19 => Self::Signal,
            20 => Self::Wait,
            21 => Self::Poll,
            22 => Self::IpcBufferSet,
            0x20 => Self::ProcessSpawn,
            0x21 => Self::ProcessKill,
            0x22 => Self::ProcessBindDeath,
            0x23 => Self::ProcessStatus,
            0x24 => Self::ThreadCreate,
            0x25 => Self::ThreadKill,
            0x26 => Self::ThreadSetPriority,
            0x36 => Self::ThreadSetAffinity,
            0x37 => Self::CpuCurrent,
            0x27 => Self::IrqBind,
            0x28 => Self::IrqAck,
            0x29 => Self::PortIn,
            0x2a => Self::PortOut,
            0x2b => Self::MmioMap,
            0x30 => Self::SystemInfo,
            0x31 => Self::PowerOff,
            0x32 => Self::Sleep,
            0x33 => Self::ProcessId,
            0x34 => Self::LogBind,
            0x35 => Self::LogRead,
            0x40 => Self::BenchCounter,
            0x41 => Self::IrqTestRaise,
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
    fn bench_selectors_name_their_benchmarks() {
        use bench::*;
        for (index, name) in [
            (NULL_SYSCALL, "null_syscall"),
            (IPC_CALL_REPLY, "ipc_call_reply"),
            (IPC_CALL_REPLY_1K, "ipc_call_reply_1k"),
            (CAP_TRANSFER, "cap_transfer"),
            (NOTIFY_WAKE, "notify_wake"),
            (YIELD, "yield"),
            (MAP_UNMAP, "map_unmap"),
            (IPC_CALL_REPLY_CROSS_CPU, "ipc_call_reply_cross_cpu"),
        ] {
            assert_eq!(NAMES[index], name);
            let only = selector(name).unwrap();
            assert!(runs(only, index) && runs(0, index) && selected(only, name));
            assert!(!runs(only, (index + 1) % NAMES.len()));
        }
        assert_eq!(selector("boot_to_user"), None);
        for name in NEEDS_SMP {
            assert!(selector(name).is_some(), "{name}");
        }
        // The selector and the CPU count fit above the largest iteration count.
        const { assert!(SELECTOR_SHIFT >= CPUS_SHIFT + 8 && CPUS_SHIFT >= 8 + 21) };
    }

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
        for number in 8..=22 {
            assert_eq!(
                Syscall::from_number(number).map(Syscall::number),
                Some(number)
            );
        }
        assert_eq!(Syscall::from_number(23), None);
        for number in 0x20..=0x2b {
            assert_eq!(
                Syscall::from_number(number).map(Syscall::number),
                Some(number)
            );
        }
        assert_eq!(Syscall::from_number(0x2c), None);
        for number in 0x30..=0x37 {
            assert_eq!(
                Syscall::from_number(number).map(Syscall::number),
                Some(number)
            );
        }
        assert_eq!(Syscall::from_number(0x38), None);
        assert_eq!(Syscall::IrqTestRaise.number(), 0x41);
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
    fn message_info_layout_is_stable() {
        let info = MessageInfo::new(0xdead_beef, 512, 4).unwrap();
        assert_eq!(info.raw(), 0x0004_0200_dead_beef);
        assert_eq!(
            (info.label(), info.words(), info.caps()),
            (0xdead_beef, 512, 4)
        );
        assert_eq!(MessageInfo::from_raw(info.raw()), Some(info));
        assert_eq!(MessageInfo::new(0, 513, 0), None);
        assert_eq!(MessageInfo::new(0, 0, 5), None);
        assert_eq!(MessageInfo::from_raw(513 << 32), None, "too many words");
        assert_eq!(MessageInfo::from_raw(5 << 48), None, "too many caps");
        assert_eq!(MessageInfo::from_raw(1 << 42), None, "reserved bit");
        assert_eq!(MessageInfo::from_raw(1 << 63), None, "reserved bit");
        assert_eq!(MessageInfo::from_raw(0), Some(MessageInfo::default()));
    }

    #[test]
    fn process_status_round_trips() {
        for status in [
            ProcessStatus::Running,
            ProcessStatus::Exited(0),
            ProcessStatus::Exited(42),
            ProcessStatus::Exited(-1),
            ProcessStatus::Faulted,
            ProcessStatus::Killed,
        ] {
            assert_eq!(ProcessStatus::decode(status.encode()), Some(status));
        }
        assert_eq!(ProcessStatus::Exited(-1).encode(), 0xffff_ffff_0000_0001);
        assert_eq!(ProcessStatus::decode(4), None);
    }

    #[test]
    fn object_types_are_stable() {
        for number in 1..=10 {
            assert_eq!(
                ObjectType::from_number(number).map(|t| t as u32),
                Some(number)
            );
        }
        assert_eq!(ObjectType::from_number(0), None);
        assert_eq!(ObjectType::from_number(11), None);
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
