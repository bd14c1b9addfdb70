//! Instructions a test program executes on purpose to check that the kernel kills only the
//! faulting thread and reports it (DESIGN.md §8, `user` and `user-fault`). Each never
//! returns: the kernel ends the thread.

/// An undefined instruction (`ud2` / `udf #0`).
pub fn undefined_instruction() -> ! {
    // SAFETY: the instruction traps to the kernel, which kills this thread; nothing after it
    // runs.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("ud2", options(noreturn, nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("udf #0", options(noreturn, nostack));
    }
}

/// A privileged instruction: `hlt` on x86_64 (#GP in ring 3), `msr daifset, #2` on AArch64
/// (masking interrupts is trapped at EL0).
pub fn privileged_instruction() -> ! {
    // SAFETY: as above: the CPU refuses the instruction in user mode and the kernel kills
    // this thread. The loop only satisfies the type if the kernel were to resume it.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("hlt", options(nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("msr daifset, #2", options(nostack));
    }
    loop {
        core::hint::spin_loop();
    }
}

/// A second privileged instruction, of another kind: `cli` on x86_64 (#GP in ring 3 with
/// IOPL 0), a system-register write `msr vbar_el1, x0` on AArch64 (undefined at EL0).
pub fn second_privileged_instruction() -> ! {
    // SAFETY: as above: the CPU refuses the instruction in user mode and the kernel kills
    // this thread.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("cli", options(nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("msr vbar_el1, {0}", in(reg) 0u64, options(nostack));
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Read an address nothing maps (the kernel never maps user memory there).
pub fn touch_unmapped(address: u64) -> u8 {
    // SAFETY: deliberately not sound: the read faults and the kernel kills this thread;
    // the value is never produced.
    unsafe { core::ptr::read_volatile(address as *const u8) }
}

/// x86_64 hostile entry: set TF in RFLAGS, then make a `null` system call, so a
/// single-step trap is pending across `SYSCALL` (it must not fire in ring 0 on the user's
/// GS base) and fires again in user mode after the return. Returns if the kernel lets the
/// thread continue; `false` on architectures without such a test.
#[cfg(target_arch = "x86_64")]
pub fn syscall_with_trap_flag() -> bool {
    // SAFETY: the block keeps the stack balanced (pushfq/popfq pairs), clears TF again
    // before leaving, and declares every register the system call clobbers.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "syscall",
            "pushfq",
            "and qword ptr [rsp], ~0x100",
            "popfq",
            inlateout("rax") abi::Syscall::Null.number() => _,
            lateout("rcx") _,
            lateout("rdx") _,
            lateout("r11") _,
        );
    }
    true
}

/// x86_64 hostile entry; `false`: AArch64 has no such entry path.
#[cfg(target_arch = "aarch64")]
pub fn syscall_with_trap_flag() -> bool {
    false
}

/// An SVE instruction (`rdvl x0, #1`, encoded directly so no assembler feature is needed).
/// Keel's written policy (arch/aarch64): SVE stays trapping, so the kernel ends the thread
/// ("SVE not supported"); on a CPU without SVE it is an undefined instruction. Returns
/// `false` on x86_64, which has no such test.
#[cfg(target_arch = "aarch64")]
pub fn sve_instruction() -> bool {
    // SAFETY: the instruction either traps (the kernel ends this thread) or, were SVE ever
    // enabled, writes only x0, which is declared.
    unsafe { core::arch::asm!(".inst 0x04bf5020", out("x0") _, options(nostack, nomem)) };
    true
}

/// See the AArch64 version; x86_64 has no SVE.
#[cfg(target_arch = "x86_64")]
pub fn sve_instruction() -> bool {
    false
}

/// The word at `address` in memory this program mapped with `memory_map`, as an atomic
/// (so reading and writing it needs no `unsafe` in the program, and the compiler cannot
/// assume anything about its contents).
///
/// Using the reference after `memory_unmap` of its page faults, and the kernel ends the
/// thread; that is what the unmap tests check.
pub fn user_word(address: u64) -> &'static core::sync::atomic::AtomicU64 {
    // SAFETY: the caller mapped the page writable (the memory tests do, right before);
    // the address is 8-byte aligned and `AtomicU64` has no invalid bit patterns. Access
    // after unmapping faults in user mode, which the kernel turns into ending the thread
    // (the deliberate purpose of this module).
    unsafe { &*(address as *const core::sync::atomic::AtomicU64) }
}
