//! An FPU/SIMD register check for the FPU-preemption test ("FPU state
//! survives preemption"): fill every vector register with values derived from a seed,
//! spin so the timer preempts the thread many times, and check the registers after each
//! round. Two processes with different seeds running at once must never see each other's
//! values. The registers are used only inside one `asm!` block each, so no compiled code
//! runs between the fill and the checks.

/// The first register found changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Rounds that were still to run.
    pub rounds_left: u64,
    /// Which vector register (`xmm<n>` / `v<n>`).
    pub register: u64,
    /// Its low 64 bits, as found.
    pub found: u64,
    pub expected: u64,
}

fn outcome(rounds_left: u64, register: u64, found: u64, expected: u64) -> Result<(), Mismatch> {
    if rounds_left == 0 {
        Ok(())
    } else {
        Err(Mismatch {
            rounds_left,
            register,
            found,
            expected,
        })
    }
}

/// `rounds` times: fill the registers from `seed`, spin `spin` iterations and check the
/// low 64 bits of every vector register; each round starts from another seed, so a state
/// saved in an earlier round and loaded again shows as a mismatch too.
#[cfg(target_arch = "x86_64")]
pub fn check_registers(seed: u64, rounds: u64, spin: u64) -> Result<(), Mismatch> {
    let (left, register, found, expected): (u64, u64, u64, u64);
    // SAFETY: only registers are touched. xmm0–xmm15 are not declared as clobbered
    // because `x86_64-unknown-none` compiles with SSE disabled, so no compiled code of this
    // program keeps anything in them; every general-purpose register used is declared.
    unsafe {
        core::arch::asm!(
            "mov r9, {rounds}",
            "2:",
            "mov rax, {seed}",
            "mov rdx, 0x0101010101010101",
            "movq xmm0, rax",
            "add rax, rdx",
            "movq xmm1, rax",
            "add rax, rdx",
            "movq xmm2, rax",
            "add rax, rdx",
            "movq xmm3, rax",
            "add rax, rdx",
            "movq xmm4, rax",
            "add rax, rdx",
            "movq xmm5, rax",
            "add rax, rdx",
            "movq xmm6, rax",
            "add rax, rdx",
            "movq xmm7, rax",
            "add rax, rdx",
            "movq xmm8, rax",
            "add rax, rdx",
            "movq xmm9, rax",
            "add rax, rdx",
            "movq xmm10, rax",
            "add rax, rdx",
            "movq xmm11, rax",
            "add rax, rdx",
            "movq xmm12, rax",
            "add rax, rdx",
            "movq xmm13, rax",
            "add rax, rdx",
            "movq xmm14, rax",
            "add rax, rdx",
            "movq xmm15, rax",
            "add rax, rdx",
            "mov rcx, {spin}",
            "4:",
            "dec rcx",
            "jnz 4b",
            "mov rax, {seed}",
            "mov r11, 0",
            "movq r8, xmm0",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 1",
            "movq r8, xmm1",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 2",
            "movq r8, xmm2",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 3",
            "movq r8, xmm3",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 4",
            "movq r8, xmm4",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 5",
            "movq r8, xmm5",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 6",
            "movq r8, xmm6",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 7",
            "movq r8, xmm7",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 8",
            "movq r8, xmm8",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 9",
            "movq r8, xmm9",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 10",
            "movq r8, xmm10",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 11",
            "movq r8, xmm11",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 12",
            "movq r8, xmm12",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 13",
            "movq r8, xmm13",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 14",
            "movq r8, xmm14",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "mov r11, 15",
            "movq r8, xmm15",
            "cmp r8, rax",
            "jne 3f",
            "add rax, rdx",
            "add {seed}, rdx",
            "dec r9",
            "jnz 2b",
            "3:",
            seed = inout(reg) seed => _,
            rounds = in(reg) rounds,
            spin = in(reg) spin,
            out("rax") expected,
            out("rcx") _,
            out("rdx") _,
            out("r8") found,
            inout("r9") 0u64 => left,
            out("r11") register,
            options(nostack),
        );
    }
    outcome(left, register, found, expected)
}

/// `rounds` times: fill the registers from `seed`, spin `spin` iterations and check the
/// low 64 bits of every vector register; each round starts from another seed, so a state
/// saved in an earlier round and loaded again shows as a mismatch too.
#[cfg(target_arch = "aarch64")]
pub fn check_registers(seed: u64, rounds: u64, spin: u64) -> Result<(), Mismatch> {
    let (left, register, found, expected): (u64, u64, u64, u64);
    // SAFETY: only registers are touched, and every one used is declared (v0–v31 as
    // clobbered).
    unsafe {
        core::arch::asm!(
            "mov x12, {rounds}",
            "2:",
            "mov x9, {seed}",
            "mov x11, #0x0101",
            "movk x11, #0x0101, lsl #16",
            "movk x11, #0x0101, lsl #32",
            "movk x11, #0x0101, lsl #48",
            "fmov d0, x9",
            "add x9, x9, x11",
            "fmov d1, x9",
            "add x9, x9, x11",
            "fmov d2, x9",
            "add x9, x9, x11",
            "fmov d3, x9",
            "add x9, x9, x11",
            "fmov d4, x9",
            "add x9, x9, x11",
            "fmov d5, x9",
            "add x9, x9, x11",
            "fmov d6, x9",
            "add x9, x9, x11",
            "fmov d7, x9",
            "add x9, x9, x11",
            "fmov d8, x9",
            "add x9, x9, x11",
            "fmov d9, x9",
            "add x9, x9, x11",
            "fmov d10, x9",
            "add x9, x9, x11",
            "fmov d11, x9",
            "add x9, x9, x11",
            "fmov d12, x9",
            "add x9, x9, x11",
            "fmov d13, x9",
            "add x9, x9, x11",
            "fmov d14, x9",
            "add x9, x9, x11",
            "fmov d15, x9",
            "add x9, x9, x11",
            "fmov d16, x9",
            "add x9, x9, x11",
            "fmov d17, x9",
            "add x9, x9, x11",
            "fmov d18, x9",
            "add x9, x9, x11",
            "fmov d19, x9",
            "add x9, x9, x11",
            "fmov d20, x9",
            "add x9, x9, x11",
            "fmov d21, x9",
            "add x9, x9, x11",
            "fmov d22, x9",
            "add x9, x9, x11",
            "fmov d23, x9",
            "add x9, x9, x11",
            "fmov d24, x9",
            "add x9, x9, x11",
            "fmov d25, x9",
            "add x9, x9, x11",
            "fmov d26, x9",
            "add x9, x9, x11",
            "fmov d27, x9",
            "add x9, x9, x11",
            "fmov d28, x9",
            "add x9, x9, x11",
            "fmov d29, x9",
            "add x9, x9, x11",
            "fmov d30, x9",
            "add x9, x9, x11",
            "fmov d31, x9",
            "add x9, x9, x11",
            "mov x13, {spin}",
            "4:",
            "subs x13, x13, #1",
            "b.ne 4b",
            "mov x9, {seed}",
            "mov x14, #0",
            "fmov x10, d0",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #1",
            "fmov x10, d1",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #2",
            "fmov x10, d2",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #3",
            "fmov x10, d3",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #4",
            "fmov x10, d4",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #5",
            "fmov x10, d5",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #6",
            "fmov x10, d6",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #7",
            "fmov x10, d7",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #8",
            "fmov x10, d8",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #9",
            "fmov x10, d9",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #10",
            "fmov x10, d10",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #11",
            "fmov x10, d11",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #12",
            "fmov x10, d12",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #13",
            "fmov x10, d13",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #14",
            "fmov x10, d14",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #15",
            "fmov x10, d15",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #16",
            "fmov x10, d16",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #17",
            "fmov x10, d17",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #18",
            "fmov x10, d18",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #19",
            "fmov x10, d19",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #20",
            "fmov x10, d20",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #21",
            "fmov x10, d21",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #22",
            "fmov x10, d22",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #23",
            "fmov x10, d23",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #24",
            "fmov x10, d24",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #25",
            "fmov x10, d25",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #26",
            "fmov x10, d26",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #27",
            "fmov x10, d27",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #28",
            "fmov x10, d28",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #29",
            "fmov x10, d29",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #30",
            "fmov x10, d30",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "mov x14, #31",
            "fmov x10, d31",
            "cmp x10, x9",
            "b.ne 3f",
            "add x9, x9, x11",
            "add {seed}, {seed}, x11",
            "subs x12, x12, #1",
            "b.ne 2b",
            "3:",
            seed = inout(reg) seed => _,
            rounds = in(reg) rounds,
            spin = in(reg) spin,
            out("x9") expected,
            out("x10") found,
            out("x11") _,
            inout("x12") 0u64 => left,
            out("x13") _,
            out("x14") register,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            out("v4") _,
            out("v5") _,
            out("v6") _,
            out("v7") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            out("v16") _,
            out("v17") _,
            out("v18") _,
            out("v19") _,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            out("v31") _,
            options(nostack),
        );
    }
    outcome(left, register, found, expected)
}

/// The upper halves of the vector registers, checked the same way as
/// [`check_registers`]: x86_64 fills the upper 128 bits of `ymm7` (only when the CPU has
/// AVX and the kernel enabled it in XCR0), AArch64 the upper 64 bits of `v31` (always).
/// `None` when the registers do not exist.
#[cfg(target_arch = "x86_64")]
pub fn check_upper_halves(seed: u64, rounds: u64, spin: u64) -> Option<Result<(), Mismatch>> {
    if !avx_enabled() {
        return None;
    }
    let (left, found, expected): (u64, u64, u64);
    // SAFETY: only registers are touched (AVX is present and enabled, checked above);
    // ymm6/ymm7 are not declared because this target compiles with SSE disabled, so no
    // compiled code keeps anything in them; every general-purpose register is declared.
    unsafe {
        core::arch::asm!(
            "mov rax, {seed}",
            "not rax",
            "vmovq xmm7, rax",
            "vinsertf128 ymm7, ymm7, xmm7, 1",
            "mov r9, {rounds}",
            "2:",
            "mov rcx, {spin}",
            "4:",
            "dec rcx",
            "jnz 4b",
            "vextractf128 xmm6, ymm7, 1",
            "vmovq r8, xmm6",
            "cmp r8, rax",
            "jne 3f",
            "dec r9",
            "jnz 2b",
            "3:",
            "vzeroupper",
            seed = in(reg) seed,
            rounds = in(reg) rounds,
            spin = in(reg) spin,
            out("rax") expected,
            out("rcx") _,
            out("r8") found,
            inout("r9") 0u64 => left,
            options(nostack),
        );
    }
    Some(outcome(left, 7, found, expected))
}

/// Whether AVX is usable in user mode: CPUID says AVX and OSXSAVE, and XCR0 enables the
/// SSE and AVX state.
#[cfg(target_arch = "x86_64")]
fn avx_enabled() -> bool {
    let ecx: u32;
    // SAFETY: CPUID only reads; RBX (reserved by the compiler) is saved and restored.
    unsafe {
        core::arch::asm!(
            "mov {saved}, rbx",
            "cpuid",
            "mov rbx, {saved}",
            saved = out(reg) _,
            inout("eax") 1u32 => _,
            inout("ecx") 0u32 => ecx,
            out("edx") _,
            options(nostack, nomem),
        );
    }
    if ecx & (1 << 27) == 0 || ecx & (1 << 28) == 0 {
        return false;
    }
    let xcr0: u32;
    // SAFETY: XGETBV is allowed in user mode once CR4.OSXSAVE is set (CPUID bit 27 above).
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0, out("edx") _,
            options(nostack, nomem));
    }
    xcr0 & 0b110 == 0b110
}

/// See the x86_64 version: the upper 64 bits of `v31`.
#[cfg(target_arch = "aarch64")]
pub fn check_upper_halves(seed: u64, rounds: u64, spin: u64) -> Option<Result<(), Mismatch>> {
    let (left, found, expected): (u64, u64, u64);
    // SAFETY: only registers are touched, and every one used is declared (v31 clobbered).
    unsafe {
        core::arch::asm!(
            "mvn x9, {seed}",
            "fmov d31, {seed}",
            "mov v31.d[1], x9",
            "mov x12, {rounds}",
            "2:",
            "mov x13, {spin}",
            "4:",
            "subs x13, x13, #1",
            "b.ne 4b",
            "mov x10, v31.d[1]",
            "cmp x10, x9",
            "b.ne 3f",
            "subs x12, x12, #1",
            "b.ne 2b",
            "3:",
            seed = in(reg) seed,
            rounds = in(reg) rounds,
            spin = in(reg) spin,
            out("x9") expected,
            out("x10") found,
            inout("x12") 0u64 => left,
            out("x13") _,
            out("v31") _,
            options(nostack),
        );
    }
    Some(outcome(left, 31, found, expected))
}

/// The live FPU control register: MXCSR.
#[cfg(target_arch = "x86_64")]
pub fn control() -> u64 {
    let mut mxcsr = 0u32;
    // SAFETY: STMXCSR writes the 4 bytes of `mxcsr`, a live local.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &raw mut mxcsr, options(nostack, preserves_flags))
    };
    u64::from(mxcsr)
}

/// The live FPU control register: FPCR.
#[cfg(target_arch = "aarch64")]
pub fn control() -> u64 {
    let fpcr: u64;
    // SAFETY: reading FPCR has no side effect; EL0 may read it.
    unsafe {
        core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags))
    };
    fpcr
}
