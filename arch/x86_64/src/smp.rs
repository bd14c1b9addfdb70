//! Secondary CPUs and IPIs: the arch side of the boot CPU sending the CPUs the loader parked
//! (the Limine MP feature) to the kernel, each secondary's per-CPU setup, and the IPIs
//! between online CPUs.
//!
//! What the protocol guarantees a secondary at its `goto_address` (PROTOCOL.md, MP
//! feature): the boot CPU's entry state (long mode, the loader's page tables, the
//! protocol's GDT, interrupts off, no IDT promised) on its own stack, with its
//! `limine_mp_info` in RDI. The loader's tables, GDT and stack lie in
//! bootloader-reclaimable memory, which the kernel takes back once the boot path is done,
//! so the CPU switches CR3 to the kernel's root first ([`enter`]), then moves to a kernel
//! stack ([`run_on_stack`]), then loads its own GDT and TSS (with guarded IST stacks), the
//! shared IDT, the boot CPU's control registers and system-call MSRs, and enables its
//! local APIC ([`init_secondary`]).
//!
//! # Control state
//! A secondary takes over the boot CPU's CR0, CR4, EFER, PAT, XCR0 and `SYSCALL` MSRs as
//! they are after early init (recorded by [`prepare`]), rather than running the boot
//! CPU's feature probing again: the same hardening, FPU mode and entry points on every
//! CPU. This assumes every CPU offers what the boot CPU does (true of QEMU and of
//! ordinary symmetric machines).
//!
//! # IPIs
//! Reschedule and TLB shootdown are fixed interrupts on [`vector::IPI_RESCHEDULE`] and
//! [`vector::IPI_TLB_SHOOTDOWN`]; stop is an NMI, so it reaches a CPU that runs with
//! interrupts masked (the NMI handler halts when [`stop_requested`] says so). IPIs go to
//! one APIC ID at a time, never by shorthand: a CPU left parked beyond
//! [`arch_api::MAX_CPUS`] has no IDT and must never get one.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arch_api::{
    EarlyError, FrameSource, Ipi, IpiCounts, IpiTarget, KernelStack, ShootdownGenerations,
};
use x86_64::registers::control::{Cr0, Cr4, Cr4Flags, Efer};
use x86_64::registers::model_specific::Msr;

use crate::trap::vector;
use crate::{apic, paging, percpu};

/// The kernel's root table, recorded on the boot CPU for the secondaries.
static SECONDARY_ROOT: AtomicU64 = AtomicU64::new(0);

/// The boot CPU's control state, recorded for the secondaries (see the module docs).
static BOOT_CR0: AtomicU64 = AtomicU64::new(0);
static BOOT_CR4: AtomicU64 = AtomicU64::new(0);
static BOOT_EFER: AtomicU64 = AtomicU64::new(0);
static BOOT_XCR0: AtomicU64 = AtomicU64::new(0);
/// `(MSR, value)` of the MSRs copied as they are: PAT, STAR, LSTAR, FMASK.
static BOOT_MSRS: [(u32, AtomicU64); 4] = [
    (0x277, AtomicU64::new(0)),
    (0xC000_0081, AtomicU64::new(0)),
    (0xC000_0082, AtomicU64::new(0)),
    (0xC000_0084, AtomicU64::new(0)),
];

/// The Limine MP response's `bsp_lapic_id`.
pub fn bsp_id(response: &limine::response::MpResponse) -> u64 {
    u64::from(response.bsp_lapic_id())
}

/// The hardware id of one CPU of the Limine MP response (its local APIC ID).
pub fn cpu_id(cpu: &limine::mp::Cpu) -> u64 {
    u64::from(cpu.lapic_id)
}

/// On the boot CPU: record the kernel's root and the control state, map the guarded IST
/// stacks of CPUs `1..count`, and calibrate the APIC timer for them.
pub fn prepare(count: u32, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
    SECONDARY_ROOT.store(paging::kernel_root(), Ordering::Release);
    BOOT_CR0.store(Cr0::read_raw(), Ordering::Relaxed);
    BOOT_CR4.store(Cr4::read_raw(), Ordering::Relaxed);
    BOOT_EFER.store(Efer::read_raw(), Ordering::Relaxed);
    if Cr4::read().contains(Cr4Flags::OSXSAVE) {
        let (low, high): (u32, u32);
        // SAFETY: CR4.OSXSAVE is set, so `xgetbv` with ECX = 0 reads XCR0.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high,
                options(nomem, nostack, preserves_flags));
        }
        BOOT_XCR0.store(u64::from(high) << 32 | u64::from(low), Ordering::Relaxed);
    }
    for (number, value) in &BOOT_MSRS {
        // SAFETY: PAT and the `SYSCALL` MSRs exist on every x86_64 CPU; reading them has no
        // side effect.
        value.store(unsafe { Msr::new(*number).read() }, Ordering::Relaxed);
    }
    for cpu in 1..count.min(arch_api::MAX_CPUS as u32) {
        percpu::map_guarded_ist_stacks(cpu, frames)?;
    }
    // The secondaries' timers use the boot CPU's calibration (the PIT is not theirs).
    // Without one they still come online, and each says it has no local timer.
    if count > 1 {
        let _ = apic::calibrate_once();
    }
    Ok(())
}

pub fn enter() {
    let root = SECONDARY_ROOT.load(Ordering::Acquire);
    // SAFETY: `cli` only masks interrupts. The kernel's root maps the kernel image (this
    // code) and the HHDM (this CPU's loader stack) to the same frames as the loader's
    // tables, so execution and the stack carry on across the switch; global kernel entries
    // of the loader's tables map the same frames too.
    unsafe {
        core::arch::asm!("cli", "mov cr3, {}", in(reg) root, options(nostack, preserves_flags));
    }
}

/// Move to the stack at `top` and call `entry(argument)` there.
///
/// # Safety
/// As `SecondaryCpus::run_on_stack`: `top` is the top of a mapped kernel stack nothing
/// else uses.
pub unsafe fn run_on_stack(top: u64, entry: extern "C" fn(usize) -> !, argument: usize) -> ! {
    // SAFETY: the new stack is mapped and unused (caller's duty); `top` is page-aligned,
    // so after the `call` pushes its return address RSP is 8 modulo 16, as the SysV ABI
    // wants at a function's entry; RBP = 0 ends the frame-pointer chain.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            top = in(reg) top,
            entry = in(reg) entry,
            in("rdi") argument,
            options(noreturn),
        );
    }
}

/// Set up secondary CPU `index` (see the module docs); on success it is online.
pub fn init_secondary(
    index: u32,
    hardware_id: u64,
    stack: KernelStack,
) -> Result<(), &'static str> {
    if index == 0 || index as usize >= arch_api::MAX_CPUS {
        return Err("CPU index out of range");
    }
    // SAFETY: once, on this CPU, interrupts masked (`enter`), nothing has used `%gs` here
    // yet; the boot CPU mapped this CPU's IST stacks in `prepare`.
    unsafe { percpu::init(index, hardware_id) };
    percpu::set_kernel_stack(stack);
    // SAFETY: the boot CPU built the IDT in early init; this CPU's GDT (just loaded) has the
    // kernel code selector and its TSS the IST stacks the gates name.
    unsafe { crate::trap::idt::load() };
    restore_control_state();
    apic::init_secondary()?;
    if u64::from(apic::id()) != hardware_id {
        return Err("the local APIC ID differs from the loader's");
    }
    percpu::mark_online();
    Ok(())
}

/// Load the boot CPU's control registers and MSRs (recorded by [`prepare`]).
fn restore_control_state() {
    // SAFETY: the values are the boot CPU's as the kernel set them up, in long mode with
    // paging on (so the mode bits are what this CPU runs in already): EFER first (NXE
    // before CR4 is touched), then CR0, then CR4 (PCIDE needs CR3[11:0] = 0, true since
    // `enter` loaded the kernel's root), then XCR0 once CR4.OSXSAVE is set, then PAT
    // (identical to the loader's copy of the boot CPU's) and the `SYSCALL` MSRs.
    unsafe {
        Efer::write_raw(BOOT_EFER.load(Ordering::Relaxed));
        Cr0::write_raw(BOOT_CR0.load(Ordering::Relaxed));
        Cr4::write_raw(BOOT_CR4.load(Ordering::Relaxed));
        let xcr0 = BOOT_XCR0.load(Ordering::Relaxed);
        if xcr0 != 0 {
            core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32,
                in("edx") (xcr0 >> 32) as u32, options(nomem, nostack));
        }
        for (number, value) in &BOOT_MSRS {
            Msr::new(*number).write(value.load(Ordering::Relaxed));
        }
    }
}

/// One pause of the boot CPU's wait for the secondaries it sent to the kernel: `pause`
/// (`core::hint::spin_loop`). Under QEMU's single-threaded TCG (every vCPU in turn on one
/// host thread; `-icount` implies it) `pause` ends this vCPU's turn, so a secondary runs
/// next; under multi-threaded TCG, KVM and on hardware it is only a hint.
#[inline]
pub fn wait_pause() {
    core::hint::spin_loop();
}

pub fn park() -> ! {
    loop {
        // SAFETY: with interrupts masked, `hlt` stops the CPU until an NMI or INIT; the
        // loop touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Shootdown generations (see `arch_api::ShootdownGenerations`).
static SHOOTDOWNS: ShootdownGenerations = ShootdownGenerations::new();
/// Set by [`stop_others`] before its NMIs go out: an NMI then halts every CPU but
/// [`STOPPER`].
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static STOPPER: AtomicU32 = AtomicU32::new(u32::MAX);

/// This CPU's index (0 before the boot CPU's block exists).
pub fn this_cpu() -> u32 {
    percpu::try_current().map_or(0, percpu::PerCpu::cpu_id)
}

pub fn send_ipi(target: IpiTarget, ipi: Ipi) {
    let vector = match ipi {
        Ipi::Reschedule => Some(vector::IPI_RESCHEDULE as u8),
        Ipi::TlbShootdown => Some(vector::IPI_TLB_SHOOTDOWN as u8),
        Ipi::Stop => None,
    };
    // One CPU (every wake-up of the scheduler): no walk, and no need of this CPU's index.
    let send = |index: u32| {
        if let Some(block) = percpu::online_block(index) {
            apic::send_ipi(block.hardware_id() as u8, vector);
        }
    };
    match target {
        IpiTarget::Cpu(index) => send(index),
        IpiTarget::AllOthers => {
            arch_api::ipi_targets(target, this_cpu(), percpu::is_online).for_each(send)
        }
    }
}

pub fn ipi_counts(index: u32) -> Option<IpiCounts> {
    percpu::online_block(index).map(|block| block.ipi().snapshot())
}

/// An IPI vector arrived (the dispatcher has sent EOI).
pub fn handle_ipi(vector: u64) {
    let block = percpu::current();
    match vector {
        vector::IPI_RESCHEDULE => {
            block.ipi().count_reschedule();
            // SAFETY: the kernel defines `keel_reschedule` (kernel/src/upcall.rs) as a plain
            // function callable from interrupt context with interrupts masked.
            unsafe { crate::upcall::keel_reschedule() };
        }
        vector::IPI_TLB_SHOOTDOWN => {
            crate::space::service_requests();
            // A whole-TLB shootdown this CPU has not flushed for yet.
            let generation = SHOOTDOWNS.current();
            if generation > block.ipi().snapshot().tlb_flushed {
                flush_tlb_everything();
                block.ipi().acknowledge_tlb(generation);
            }
        }
        _ => {}
    }
}

/// Drop every TLB entry of this CPU, global ones and every PCID's included: toggling
/// CR4.PGE does (SDM Vol. 3A §4.10.4.1); without PGE there are no global entries and
/// reloading CR3 does.
fn flush_tlb_everything() {
    let flags = Cr4::read();
    if flags.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and setting PGE again only flushes the TLB.
        unsafe {
            Cr4::write(flags - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(flags);
        }
    } else {
        x86_64::instructions::tlb::flush_all();
    }
}

pub fn tlb_shootdown(target: IpiTarget) -> u32 {
    let me = this_cpu();
    let generation = SHOOTDOWNS.next();
    if matches!(target, IpiTarget::Cpu(index) if index == me) {
        flush_tlb_everything();
        return 0;
    }
    send_ipi(target, Ipi::TlbShootdown);
    arch_api::wait_for_ipi_effect(
        arch_api::ipi_targets(target, me, percpu::is_online),
        |index| {
            // A target may be waiting for this CPU's answer to a request of its own.
            crate::space::service_requests();
            ipi_counts(index)
        },
        |counts| counts.tlb_flushed >= generation,
    )
}

pub fn stop_others() -> u32 {
    let me = this_cpu();
    STOPPER.store(me, Ordering::Relaxed);
    STOP_REQUESTED.store(true, Ordering::Release);
    send_ipi(IpiTarget::AllOthers, Ipi::Stop);
    arch_api::wait_for_ipi_effect(
        arch_api::ipi_targets(IpiTarget::AllOthers, me, percpu::is_online),
        ipi_counts,
        |counts| counts.stopped,
    )
}

/// Whether an NMI on this CPU is a stop request (see [`stop_others`]).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Acquire) && STOPPER.load(Ordering::Relaxed) != this_cpu()
}

pub fn stop_self() -> ! {
    if let Some(block) = percpu::try_current() {
        block.ipi().mark_stopped();
    }
    park()
}
