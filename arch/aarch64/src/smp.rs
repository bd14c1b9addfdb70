//! Secondary CPUs and IPIs: the arch side of the boot CPU sending the CPUs the loader
//! parked (the Limine MP feature) to the kernel, each secondary's per-CPU setup, and the
//! IPIs (GIC SGIs) between online CPUs. A secondary takes over the boot CPU's translation
//! state (the kernel's TTBR1 tables and the MAIR and TCR that go with them, [`enter`]),
//! moves to a kernel stack on SP_EL1 ([`run_on_stack`]), then gets its per-CPU block
//! (TPIDR_EL1, overflow stack), VBAR_EL1, FP/SIMD access, PAN as the boot CPU has it and
//! its GIC interface ([`init_secondary`]).
//!
//! What the protocol guarantees a secondary at its `goto_address` (PROTOCOL.md, MP
//! feature): the boot CPU's entry state (EL1, MMU on with the loader's tables, DAIF
//! masked) on its own stack, with its `limine_mp_info` in X0. The loader's tables lie in
//! bootloader-reclaimable memory, which the kernel takes back once the boot path is done,
//! so the CPU switches to the kernel's before anything else, with TTBR0 on the kernel's
//! empty root (ASID 0) and the boot CPU's TCR (TTBR0 walks on, the same ASID size), so
//! that `activate` works on it as on the boot CPU; a CPU left parked waits in a loop that
//! touches no memory.
//!
//! # IPIs
//! SGI INTID = `arch_api::Ipi` number, sent to one CPU at a time (never "all but self":
//! a CPU left parked beyond `arch_api::MAX_CPUS` must not be woken). A stop is taken when
//! the target next unmasks interrupts (there is no NMI here): an online secondary idles
//! with them unmasked; the boot CPU unmasks them whenever it waits, and any CPU that
//! writes to the console while another reports a panic stops there (the core's log).

use core::sync::atomic::{AtomicU64, Ordering};

use arch_api::{EarlyError, Ipi, IpiCounts, IpiTarget, KernelStack, ShootdownGenerations};

use crate::{boot, gic, percpu, sysreg, thread, trap};

/// The affinity fields of MPIDR_EL1 (the Limine MP response's `mpidr` values).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// The boot CPU's MAIR_EL1, TCR_EL1 and TTBR1_EL1, recorded for the secondaries.
static SECONDARY_MAIR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_TCR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_TTBR1: AtomicU64 = AtomicU64::new(0);

/// The Limine MP response's `bsp_mpidr`.
pub fn bsp_id(response: &limine::response::MpResponse) -> u64 {
    response.bsp_mpidr() & MPIDR_AFFINITY
}

/// The hardware id of one CPU of the Limine MP response (its MPIDR affinity).
pub fn cpu_id(cpu: &limine::mp::Cpu) -> u64 {
    cpu.mpidr & MPIDR_AFFINITY
}

/// One pause of the boot CPU's wait for the secondaries it sent to the kernel: `yield`.
/// Under QEMU's single-threaded TCG (every vCPU in turn on one host thread; `-icount`
/// implies it) `yield` ends this vCPU's turn, so a secondary runs next, as the loader's
/// parking loop does with its own `yield`. `core::hint::spin_loop` is `isb` here, which
/// ends no turn: a boot CPU spinning on it keeps its whole slice, which under `-icount`
/// lasts until the next timer deadline and leaves the vCPUs after it no instructions to
/// run, so a parked secondary only moves when something outside the guest interrupts the
/// round. Under multi-threaded TCG, KVM and on hardware `yield` is only a hint.
#[inline]
pub fn wait_pause() {
    // SAFETY: `yield` is a hint: it changes no register, flag or memory.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// On the boot CPU: record the translation state for the secondaries. Their per-CPU
/// storage is static (`percpu`), so nothing is allocated.
pub fn prepare() {
    SECONDARY_MAIR.store(sysreg::read!("mair_el1"), Ordering::Relaxed);
    SECONDARY_TCR.store(sysreg::read!("tcr_el1"), Ordering::Relaxed);
    SECONDARY_TTBR1.store(sysreg::read!("ttbr1_el1"), Ordering::Release);
}

pub fn enter() {
    let ttbr1 = SECONDARY_TTBR1.load(Ordering::Acquire);
    let mair = SECONDARY_MAIR.load(Ordering::Relaxed);
    let tcr = SECONDARY_TCR.load(Ordering::Relaxed);
    let ttbr0 = crate::paging::empty_root();
    // SAFETY: DAIF is masked first. The kernel's TTBR1 tables map the kernel image (this
    // code) and the HHDM (this CPU's loader stack) to the same frames, as normal memory
    // under the boot CPU's MAIR index for normal memory, which is the loader's; the TCR is
    // the boot CPU's, whose TTBR1 half is the loader's too (48 bits, 4 KiB granule), and
    // whose TTBR0 half walks the kernel's empty root (written first, so no walk ever uses
    // the loader's TTBR0). The barriers order the table switch and drop every translation
    // of the loader's tables.
    unsafe {
        core::arch::asm!(
            "msr daifset, #0xf",
            "msr mair_el1, {mair}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "msr tcr_el1, {tcr}",
            "msr ttbr1_el1, {ttbr1}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            ttbr1 = in(reg) ttbr1,
            options(nostack, preserves_flags),
        );
    }
}

/// Move to SP_EL1 at `top` and call `entry(argument)` there.
///
/// # Safety
/// As `SecondaryCpus::run_on_stack`: `top` is the top of a mapped kernel stack nothing
/// else uses.
pub unsafe fn run_on_stack(top: u64, entry: extern "C" fn(usize) -> !, argument: usize) -> ! {
    // SAFETY: DAIF is masked (`enter`), so nothing observes the switch; the kernel runs
    // with SPSel = 1 (SP_EL0 is left for user mode and cleared); `top` is 16-byte aligned
    // (page-aligned); x29 = x30 = 0 end the frame-record chain.
    unsafe {
        core::arch::asm!(
            "msr spsel, #1",
            "mov sp, {top}",
            "msr sp_el0, xzr",
            "mov x29, xzr",
            "mov x30, xzr",
            "br {entry}",
            top = in(reg) top,
            entry = in(reg) entry,
            in("x0") argument,
            options(noreturn),
        );
    }
}

/// Set up secondary CPU `index` (see the module docs); on success it is online.
pub fn init_secondary(index: u32, hardware_id: u64, stack: KernelStack) -> Result<(), EarlyError> {
    if index == 0 || index as usize >= arch_api::MAX_CPUS {
        return Err(EarlyError::Unsupported("CPU index out of range"));
    }
    // The EL1 vector entry reads the per-CPU block before anything else.
    percpu::init(index, hardware_id);
    percpu::this().set_stack(stack);
    trap::install_vectors();
    trap::unmask_serror();
    thread::init_fpu();
    boot::init_cpu_controls();
    let gic = gic::get().ok_or(EarlyError::MissingDevice("GIC (early init not run)"))?;
    gic.init_cpu()?;
    if sysreg::read!("mpidr_el1") & MPIDR_AFFINITY != hardware_id {
        return Err(EarlyError::Unsupported("MPIDR differs from the loader's"));
    }
    percpu::mark_online();
    Ok(())
}

pub fn park() -> ! {
    loop {
        // SAFETY: with DAIF masked, `wfe` only waits for an event; the loop touches no
        // memory.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}

/// This CPU's MPIDR affinity fields, from the hardware.
pub fn hardware_id() -> u64 {
    sysreg::read!("mpidr_el1") & MPIDR_AFFINITY
}

/// This CPU's dense index, through TPIDR_EL1 (0 while it points at no block of
/// `percpu`: the loader's value on a secondary that has not run `percpu::init` yet).
#[inline]
pub fn this_cpu() -> u32 {
    percpu::current().map_or(0, |block| block.id.load(Ordering::Relaxed))
}

/// Shootdown generations (see `arch_api::ShootdownGenerations`).
static SHOOTDOWNS: ShootdownGenerations = ShootdownGenerations::new();

pub fn send_ipi(target: IpiTarget, ipi: Ipi) {
    let Some(gic) = gic::get() else {
        return;
    };
    // One CPU (every wake-up of the scheduler): no walk, and no need of this CPU's index.
    let send = |index: u32| {
        if let Some(block) = percpu::online_block(index) {
            gic.send_sgi(block, ipi as u32);
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
    percpu::online_block(index).map(|block| block.ipi.snapshot())
}

/// An IPI's SGI arrived (the caller has ended it at the GIC).
pub fn handle_ipi(ipi: Ipi) {
    let block = percpu::this();
    match ipi {
        Ipi::Reschedule => {
            block.ipi.count_reschedule();
            // SAFETY: `keel_reschedule` is the core's safe Rust function of that signature
            // (kernel/src/upcall.rs); called with interrupts masked, as it expects.
            unsafe { crate::upcall::keel_reschedule() };
        }
        Ipi::TlbShootdown => {
            crate::paging::service_requests();
            // A whole-TLB shootdown this CPU has not flushed for yet.
            let generation = SHOOTDOWNS.current();
            if generation > block.ipi.snapshot().tlb_flushed {
                flush_local_tlb();
                block.ipi.acknowledge_tlb(generation);
            }
        }
        Ipi::Stop => stop_self(),
    }
}

/// Drop every EL1&0 TLB entry of this CPU (the page-table code's own maintenance is
/// inner-shareable broadcast already; this is the shootdown's local flush).
fn flush_local_tlb() {
    // SAFETY: TLB invalidation only drops cached translations; the barriers complete the
    // table writes before it and the invalidation before the next instruction fetch.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack)
        );
    }
}

pub fn tlb_shootdown(target: IpiTarget) -> u32 {
    let me = this_cpu();
    let generation = SHOOTDOWNS.next();
    if matches!(target, IpiTarget::Cpu(index) if index == me) {
        flush_local_tlb();
        return 0;
    }
    send_ipi(target, Ipi::TlbShootdown);
    arch_api::wait_for_ipi_effect(
        arch_api::ipi_targets(target, me, percpu::is_online),
        |index| {
            // A target may be waiting for this CPU's answer to a request of its own.
            crate::paging::service_requests();
            ipi_counts(index)
        },
        |counts| counts.tlb_flushed >= generation,
    )
}

pub fn stop_others() -> u32 {
    let me = this_cpu();
    send_ipi(IpiTarget::AllOthers, Ipi::Stop);
    arch_api::wait_for_ipi_effect(
        arch_api::ipi_targets(IpiTarget::AllOthers, me, percpu::is_online),
        ipi_counts,
        |counts| counts.stopped,
    )
}

pub fn stop_self() -> ! {
    if let Some(block) = percpu::current() {
        block.ipi.mark_stopped();
    }
    park()
}
