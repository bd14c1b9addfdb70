//! The one place a system call is made (DESIGN.md §6 registers).

/// Trap into the kernel with `number` and six arguments; returns the two result registers.
#[cfg(target_arch = "x86_64")]
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
