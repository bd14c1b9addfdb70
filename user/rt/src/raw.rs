//! The one place a system call is made (DESIGN.md §6 registers).

/// Trap into the kernel with `number` and six arguments; returns the two result registers.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn syscall(number: u64, arguments: [u64; 6]) -> (u64, u64) {
    let first: u64;
    let second: u64;
    // SAFETY: `syscall` enters the kernel, which validates every argument and returns with
    // all registers preserved except the results (`rax`, `rdx`) and the two the instruction
    // itself clobbers (`rcx` holds the return address, `r11` the flags). No memory of this
    // program is changed by the calls `rt` makes except through the arguments' pointers.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => first,
            in("rdi") arguments[0],
            in("rsi") arguments[1],
            inlateout("rdx") arguments[2] => second,
            in("r10") arguments[3],
            in("r8") arguments[4],
            in("r9") arguments[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    (first, second)
}

/// Trap into the kernel with `number` and six arguments; returns the two result registers.
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn syscall(number: u64, arguments: [u64; 6]) -> (u64, u64) {
    let first: u64;
    let second: u64;
    // SAFETY: `svc #0` enters the kernel, which validates every argument and returns with
    // all registers preserved except the results (`x0`, `x1`).
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") number,
            inlateout("x0") arguments[0] => first,
            inlateout("x1") arguments[1] => second,
            in("x2") arguments[2],
            in("x3") arguments[3],
            in("x4") arguments[4],
            in("x5") arguments[5],
            options(nostack),
        );
    }
    (first, second)
}

/// The registers of an IPC system call after it returns (`abi::ipc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcRegisters {
    pub status: u64,
    pub badge: u64,
    pub info: u64,
    pub words: [u64; 4],
}

/// Trap into the kernel with an IPC call: `handle`, `info`, four message words in, the
/// IPC result registers out (`abi::ipc`).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn ipc(number: u64, handle: u64, info: u64, words: [u64; 4]) -> IpcRegisters {
    let mut out = IpcRegisters::default();
    // SAFETY: `syscall` enters the kernel, which validates every argument and returns with
    // all registers preserved except the IPC results (`rax rdi rsi rdx r10 r8 r9`) and the
    // two the instruction clobbers (`rcx`, `r11`). The kernel writes user memory only in
    // this thread's registered IPC buffer, which `rt` reaches only through atomics.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => out.status,
            inlateout("rdi") handle => out.badge,
            inlateout("rsi") info => out.info,
            inlateout("rdx") words[0] => out.words[0],
            inlateout("r10") words[1] => out.words[1],
            inlateout("r8") words[2] => out.words[2],
            inlateout("r9") words[3] => out.words[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    out
}

/// Trap into the kernel with an IPC call: `handle`, `info`, four message words in, the
/// IPC result registers out (`abi::ipc`).
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn ipc(number: u64, handle: u64, info: u64, words: [u64; 4]) -> IpcRegisters {
    let mut out = IpcRegisters::default();
    // SAFETY: `svc #0` enters the kernel, which validates every argument and returns with
    // all registers preserved except the IPC results (`x0`–`x6`). The kernel writes user
    // memory only in this thread's registered IPC buffer, reached only through atomics.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") number,
            inlateout("x0") handle => out.status,
            inlateout("x1") info => out.info,
            inlateout("x2") words[0] => out.words[0],
            inlateout("x3") words[1] => out.words[1],
            inlateout("x4") words[2] => out.words[2],
            inlateout("x5") words[3] => out.words[3],
            lateout("x6") out.badge,
            options(nostack),
        );
    }
    out
}

/// Trap into the kernel with `number` and the first two arguments only: the other argument
/// registers go in as they are (the kernel restores every register it does not return a
/// result in, and the calls that use this read no other argument).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn syscall2(number: u64, first: u64, second: u64) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `syscall` clobbers RCX and R11 (declared); the kernel returns in RAX and RDX
    // and restores every other register (DESIGN.md §6).
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number => status,
            in("rdi") first,
            in("rsi") second,
            lateout("rdx") value,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    (status, value)
}

/// See the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn syscall2(number: u64, first: u64, second: u64) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `svc` returns in x0 and x1 and the kernel restores every other register
    // (DESIGN.md §6).
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") number,
            inlateout("x0") first => status,
            inlateout("x1") second => value,
            options(nostack),
        );
    }
    (status, value)
}
