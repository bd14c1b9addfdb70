//! Keel on AArch64: exception vectors, kernel stacks and context switch, EL0 entry, paging
//! with ASIDs, GIC, generic timer, PL011 and power-off, behind the `arch_api` contract.
//!
//! # Principles
//!
//! - **The device tree is the only source of device facts.** The PL011, the GIC (v2 or v3),
//!   the timer's interrupt and the PSCI conduit all come from the DTB the loader hands over
//!   ([`devicetree`]); nothing is assumed about QEMU `virt` beyond what the DTB says.
//! - **MMIO is never touched through the HHDM.** Limine maps the HHDM as Normal write-back
//!   memory; device registers are mapped again, Device-nGnRE, in a fixed kernel device window
//!   ([`mmu`]), with a MAIR index the loader does not use.
//! - **The kernel runs on `SP_EL1` (`SPSel = 1`).** Limine enters at EL1t; [`boot`] moves the
//!   live stack to `SP_EL1` before the vectors are installed, so `SP_EL0` is free for user
//!   stacks and every exception saves its frame on the interrupted kernel stack.
//! - **One trap frame, one dispatcher.** All sixteen vectors save the same
//!   [`trap::TrapFrame`] and call one Rust function; assembly offsets are compile-time
//!   checked against the struct. `svc #0` from EL0 goes to the core's handler for the
//!   number (`KEEL_SYSCALLS`, a fast path), every other exception from EL0 to
//!   `keel_trap`; a kernel exception is either covered by the exception-fixup table (user
//!   copies, self-tests) or a fatal report naming the thread.
//! - **Never loop on exceptions.** A fault while reporting a fault prints one line and powers
//!   off; a third one halts silently. Semihosting and PSCI calls that the machine does not
//!   implement (undefined instruction) are skipped, not reported, so power-off always ends.
//! - **No FP/SIMD in the kernel.** The crate is built for `aarch64-unknown-none-softfloat`;
//!   the trap path saves only general-purpose and system registers.
//!
//! # Which stack runs what (DESIGN.md §3, AArch64 column)
//!
//! | event | stack |
//! | --- | --- |
//! | system call from user (`SVC #0` from EL0) | lands on `SP_EL1`, which is the current thread's kernel stack top: the kernel runs with `SPSel = 1`, and every return to EL0 pops the frame, leaving the stack empty; the user SP stays in `SP_EL0` and is saved in the frame |
//! | interrupt or exception from user | same as SVC: `SP_EL1`, the top of the thread's kernel stack |
//! | interrupt or exception in kernel | the interrupted kernel stack (`SP_EL1`), after the entry checked that a frame still fits above the stack's base (bounds from the per-CPU block) |
//! | debug, SError, "NMI"-like events | no IST exists: the same EL1 entry check; when SP has overflowed, the per-CPU overflow stack |
//! | kernel-stack overflow | guard page → data abort → the EL1 entry sees SP below the stack base (before storing anything), moves to the per-CPU overflow stack → `kernel stack overflow in thread <name>`, power-off with exit 2 |
//!
//! The EL1 entry check needs two free registers before it may store: it borrows
//! TPIDRRO_EL0 (EL0 always reads 0 there: Keel gives no thread a value of its own, and
//! every exception return writes the 0 back) and two scratch words of the per-CPU block
//! (TPIDR_EL1).
//!
//! # Other policies
//!
//! - **FP/SIMD**: CPACR_EL1.FPEN lets EL0 use it; q0–q31, FPCR and FPSR are saved into a
//!   user thread's [`FpuState`] (never on the kernel stack) when it switches away and loaded
//!   when it comes back, unless the registers still hold it (`arch_api::FpuSwitch`).
//! - **SVE and SME** are not supported: CPACR_EL1.ZEN and SMEN stay trapping, so their state
//!   never needs saving; an EL0 SVE (SME) instruction traps and ends that thread with
//!   "SVE not supported" ("SME not supported") before the core's fault report.
//! - **AArch32 EL0** is not supported: anything from it goes to the core as
//!   `TrapCause::Other`, which ends the thread. An SError from EL0 ends the thread too; an
//!   SError or FIQ at EL1 is a fatal report.
//! - **PAN** is on when the CPU has it (SCTLR_EL1.SPAN = 0 keeps it on across exceptions);
//!   user copies use LDTR/STTR, so it is never lifted. SCTLR_EL1.UMA = 0: EL0 cannot mask
//!   interrupts.
//!
//! # Known weak spots
//!
//! - Early init maps the device window into the loader's TTBR1 tables; the kernel's own
//!   tables (`paging::switch_to_kernel_tables`) copy those pages when the core switches,
//!   and the loader's tables are not used after that. The switch is one TTBR1 write and a
//!   full TLB invalidation, not a break-before-make sequence: both hierarchies map the
//!   running code and stack to the same frames with the same memory type, but the loader
//!   may have used blocks where Keel uses pages (a TLB conflict is possible in theory on
//!   hardware; QEMU does not model it).
//! - Secondary CPUs come online ([`smp`]: per-CPU block and overflow stack, vectors, GIC
//!   interface or redistributor, SGIs for the IPIs) but run only their idle loop; the
//!   timer PPI and the SPIs the core enables ([`interrupts`]) are routed to the boot CPU.
//!   TLB maintenance is inner-shareable broadcast, so it is already correct for SMP (the
//!   shootdown IPI adds a local flush and an acknowledgement). A stop IPI is an SGI: a CPU
//!   that spins with interrupts masked does not take it (no pseudo-NMI).
//! - ASIDs are not rolled over: with 8-bit ASIDs at most 255 user address spaces exist at
//!   once (`new_address_space` then answers `OutOfMemory`).
//! - The overflow check treats an SP up to 64 KiB below the running stack's base as an
//!   overflow of it; a kernel function with a larger frame would skip past the guard page
//!   into the stack below unnoticed (Rust emits no stack probes on this target).
//! - Device-tree `reg` values are used untranslated: devices must sit under the root or under
//!   buses whose `ranges` are identity (true on QEMU `virt`).
//! - The backtrace needs frame pointers (`-C force-frame-pointers=yes`, which the kernel's
//!   build requires) and stops at the first record that is unmapped or out of order.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod bench;
mod boot;
mod console;
mod devicetree;
mod gic;
mod interrupts;
mod mmio;
mod mmu;
mod paging;
mod percpu;
mod pl011;
mod power;
mod psci;
mod semihosting;
pub mod smp;
mod sysreg;
mod thread;
mod timer;
mod trap;
mod upcall;

use arch_api::{
    Bench, Delivery, EarlyError, EarlyInfo, ExitCode, FrameSource, InterruptError, Interrupts,
    InvalidRegisters, KernelStack, MapError, PageFlags, Paging, Platform, Threads, UserAccessFault,
    UserRegisterWrite, UserRegisters,
};

pub use paging::AddressSpace;
pub use thread::{Context, FpuState};
pub use trap::TrapFrame;

/// The AArch64 platform, as the portable core sees it (`arch::Cpu`).
pub struct Cpu;

impl Platform for Cpu {
    const NAME: &'static str = "aarch64";

    fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        boot::early_init(info, frames)
    }

    fn console_write(bytes: &[u8]) {
        console::write(bytes);
    }

    fn console_read() -> Option<u8> {
        console::read()
    }

    fn start_timer(hz: u32) -> Result<(), EarlyError> {
        timer::start(hz)
    }

    fn wait_for_interrupt() {
        trap::wait_for_interrupt();
    }

    fn interrupts_enabled() -> bool {
        trap::interrupts_enabled()
    }

    fn power_off(code: ExitCode) -> ! {
        power::off(code)
    }

    fn backtrace(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        trap::backtrace_here(out)
    }
}

impl Bench for Cpu {
    fn enable_user_instruction_counter() -> bool {
        bench::enable_user_instruction_counter()
    }

    fn instruction_clock() -> u64 {
        bench::instruction_clock()
    }

    const INSTRUCTION_CLOCK_IN_NANOSECONDS: bool = true;

    fn instruction_counter() -> u64 {
        bench::instruction_counter()
    }
}

impl Threads for Cpu {
    type TrapFrame = TrapFrame;
    type Context = Context;
    type FpuState = FpuState;

    fn initial_fpu_state() -> FpuState {
        FpuState::initial()
    }

    fn prepare_context(
        stack: KernelStack,
        entry: extern "C" fn(usize) -> !,
        argument: usize,
    ) -> Context {
        thread::prepare(stack, entry, argument)
    }

    #[inline(always)]
    unsafe fn switch(
        from: &mut Context,
        to: &Context,
        fpu: arch_api::FpuSwitch<'_, FpuState>,
        to_stack: KernelStack,
    ) {
        // SAFETY: the caller upholds the trait's contract, which is `thread::switch`'s.
        unsafe { thread::switch(from, to, fpu, to_stack) }
    }

    fn set_kernel_stack(stack: KernelStack) {
        thread::set_kernel_stack(stack);
    }

    unsafe fn enter_user(frame: *const TrapFrame) -> ! {
        // SAFETY: the caller upholds the trait's contract, which is `thread::enter_user`'s.
        unsafe { thread::enter_user(frame) }
    }

    #[inline(always)]
    fn set_current_thread(thread: usize, record: usize) {
        thread::set_current_thread(thread, record);
    }

    #[inline(always)]
    fn current_thread() -> usize {
        thread::current_thread()
    }

    #[inline(always)]
    fn current_record() -> usize {
        thread::current_record()
    }

    #[inline(always)]
    fn running_cpu() -> u32 {
        percpu::this()
            .id
            .load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl UserRegisterWrite for Cpu {
    fn write_user_registers(
        frame: &mut TrapFrame,
        fpu: &mut FpuState,
        registers: &UserRegisters,
    ) -> Result<(), InvalidRegisters> {
        thread::write_user_registers(frame, fpu, registers)
    }
}

impl Paging for Cpu {
    type AddressSpace = AddressSpace;

    fn map_kernel(
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError> {
        paging::map_kernel(virtual_address, physical_address, flags, frames)
    }

    fn unmap_kernel(virtual_address: u64) -> Result<u64, MapError> {
        paging::unmap_kernel(virtual_address)
    }

    fn new_address_space(frames: &mut dyn FrameSource) -> Result<AddressSpace, MapError> {
        paging::new_address_space(frames)
    }

    fn map_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError> {
        paging::map_user(space, virtual_address, physical_address, flags, frames)
    }

    fn unmap_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        frames: &mut dyn FrameSource,
    ) -> Result<u64, MapError> {
        paging::unmap_user(space, virtual_address, frames)
    }

    fn protect_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        paging::protect_user(space, virtual_address, flags)
    }

    #[inline]
    fn activate(space: &AddressSpace) {
        paging::activate(space);
    }

    type SwitchHandle = arch_api::tlb::SwitchHandle;

    #[inline]
    fn switch_handle(space: &AddressSpace) -> arch_api::tlb::SwitchHandle {
        paging::switch_handle(space)
    }

    #[inline(always)]
    unsafe fn activate_handle(handle: arch_api::tlb::SwitchHandle, cpu: u32) {
        // SAFETY: the caller's contract is `paging::activate_handle_on`'s.
        unsafe { paging::activate_handle_on(handle, cpu) }
    }

    fn active_cpus(space: &AddressSpace) -> arch_api::tlb::CpuMask {
        space.active_cpus()
    }

    fn lookup_user(
        space: &AddressSpace,
        virtual_address: u64,
    ) -> Option<arch_api::pagetable::Translation> {
        paging::lookup_user(space, virtual_address)
    }

    fn destroy(space: AddressSpace, free: &mut dyn FnMut(u64)) {
        paging::destroy(space, free);
    }

    fn sync_instructions(virtual_address: u64, length: u64) {
        paging::sync_instructions(virtual_address, length);
    }

    fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), UserAccessFault> {
        paging::copy_from_user(destination, source)
    }

    fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), UserAccessFault> {
        paging::copy_to_user(destination, source)
    }
}

#[cfg(feature = "testing")]
impl arch_api::SelfTest for Cpu {
    fn provoke(trap: arch_api::ProvokedTrap) -> Option<arch_api::TrapCause> {
        use arch_api::ProvokedTrap;
        use trap::fixup::probes;
        match trap {
            ProvokedTrap::Breakpoint => probes::under(|| {
                // SAFETY: a leaf routine of one faulting instruction under a fixup entry
                // that resumes at its `ret`; it touches no memory.
                unsafe { probes::keel_provoke_brk() }
            }),
            ProvokedTrap::Undefined => probes::under(|| {
                // SAFETY: as above, for its `udf`.
                unsafe { probes::keel_provoke_udf() }
            }),
            // AArch64 integer division by zero returns 0; there is no trap to provoke.
            ProvokedTrap::DivideError => None,
            ProvokedTrap::KernelPageFault => probes::under(|| {
                // SAFETY: as above, for its load; the address is the device window's last
                // page, which `mmu::DeviceWindow` never maps, so the load faults and reads
                // nothing.
                unsafe { probes::keel_provoke_load(mmu::RESERVED_TEST_ADDRESS) };
            }),
        }
    }

    fn provoke_user_access(address: u64) -> Option<arch_api::TrapCause> {
        if !arch_api::UserRange::is_user_address(address) {
            return None;
        }
        trap::fixup::probes::under(|| {
            // SAFETY: one load under a fixup entry from a user-half address (checked): it
            // faults (PAN, or not mapped) and resumes after the load, or reads user memory,
            // never kernel state.
            unsafe { trap::fixup::probes::keel_provoke_load(address) };
        })
    }

    fn user_access_protected() -> bool {
        boot::pan_enabled()
    }

    fn provoke_kernel_write(address: u64) -> Option<arch_api::TrapCause> {
        paging::lookup_kernel(address)?;
        trap::fixup::probes::under(|| {
            // SAFETY: a mapped kernel address (checked); the probe stores back the word it
            // just loaded (interrupts are masked in the kernel, so nothing changes it in
            // between), and a fault resumes after the store through its fixup entry.
            unsafe { trap::fixup::probes::keel_provoke_store(address) };
        })
    }

    fn limit_space_tags(limit: Option<u32>) -> bool {
        paging::limit_asids(limit);
        true
    }

    fn space_tag_rollovers() -> Option<u64> {
        Some(paging::asid_rollovers())
    }
}

/// The console is the device tree's PL011 (MMIO; rounded out to whole pages) and its SPI.
/// No I/O ports on this architecture (the trait's defaults).
impl arch_api::Devices for Cpu {
    fn console_device() -> Option<arch_api::ConsoleDevice> {
        use core::sync::atomic::Ordering;
        let base = boot::CONSOLE_UART.load(Ordering::Relaxed);
        let length = boot::CONSOLE_UART_LENGTH.load(Ordering::Relaxed);
        if base == 0 || length == 0 {
            return None;
        }
        let page = arch_api::PAGE_SIZE;
        let start = base & !(page - 1);
        let end = (base + length).div_ceil(page) * page;
        let intid = boot::CONSOLE_UART_INTID.load(Ordering::Relaxed);
        Some(arch_api::ConsoleDevice {
            ports: None,
            mmio: Some((start, end - start)),
            irq: (intid != boot::NO_INTID).then_some(intid),
        })
    }
}

impl arch_api::KernelTables for Cpu {
    fn switch_to_kernel_tables(
        layout: &arch_api::KernelLayout,
        direct_map: &[(u64, u64)],
        frames: &mut dyn FrameSource,
    ) -> Result<arch_api::KernelTablesReport, EarlyError> {
        paging::switch_to_kernel_tables(layout, direct_map, frames)
    }

    fn active_kernel_root() -> u64 {
        paging::active_kernel_root()
    }

    fn lookup_kernel(virtual_address: u64) -> Option<arch_api::pagetable::Translation> {
        paging::lookup_kernel(virtual_address)
    }
}

/// Device lines are GIC SPIs ([`interrupts`]).
impl Interrupts for Cpu {
    fn line_count() -> u32 {
        interrupts::line_count()
    }

    fn console_line() -> Option<u32> {
        interrupts::console_line()
    }

    fn enable(line: u32, delivery: Delivery) -> Result<(), InterruptError> {
        interrupts::enable(line, delivery)
    }

    fn disable(line: u32) -> Result<(), InterruptError> {
        interrupts::disable(line)
    }

    fn mask(line: u32) -> Result<(), InterruptError> {
        interrupts::mask(line)
    }

    fn unmask(line: u32) -> Result<(), InterruptError> {
        interrupts::unmask(line)
    }

    fn unexpected_interrupts() -> u64 {
        interrupts::unexpected()
    }
}

/// The PL011 raises its interrupt through loopback (or its transmit interrupt where the
/// model has no loopback); lines are raised by setting them pending at the distributor.
#[cfg(feature = "testing")]
impl arch_api::InterruptSelfTest for Cpu {
    fn console_irq_test_begin() -> Option<arch_api::ConsoleIrqSource> {
        interrupts::console_test_begin()
    }

    fn console_irq_test_send(byte: u8) {
        interrupts::console_test_send(byte);
    }

    fn console_irq_test_clear() -> Option<u8> {
        interrupts::console_test_clear()
    }

    fn console_irq_test_end() {
        interrupts::console_test_end();
    }

    fn set_trigger_for_test(line: u32, level: Option<bool>) -> Option<bool> {
        interrupts::set_trigger_for_test(line, level)
    }

    fn raise_line(line: u32) -> bool {
        interrupts::raise(line)
    }

    fn raise_unrouted() -> bool {
        interrupts::raise_unrouted()
    }
}

impl arch_api::SecondaryCpus for Cpu {
    fn prepare_secondaries(_count: u32, _frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        smp::prepare();
        Ok(())
    }

    fn enter_secondary() {
        smp::enter();
    }

    unsafe fn run_on_stack(top: u64, entry: extern "C" fn(usize) -> !, argument: usize) -> ! {
        // SAFETY: the caller upholds the trait's contract, which is `smp::run_on_stack`'s.
        unsafe { smp::run_on_stack(top, entry, argument) }
    }

    fn init_secondary(index: u32, hardware_id: u64, stack: KernelStack) {
        if let Err(problem) = smp::init_secondary(index, hardware_id, stack) {
            console::report!("aarch64: cpu {index} left parked: {problem:?}");
            smp::park();
        }
    }

    fn park_secondary() -> ! {
        smp::park()
    }

    #[inline]
    fn cpu_index() -> u32 {
        smp::this_cpu()
    }

    fn hardware_id() -> u64 {
        smp::hardware_id()
    }

    fn is_online(index: u32) -> bool {
        percpu::is_online(index)
    }

    fn send_ipi(target: arch_api::IpiTarget, ipi: arch_api::Ipi) {
        smp::send_ipi(target, ipi);
    }

    fn ipi_counts(index: u32) -> Option<arch_api::IpiCounts> {
        smp::ipi_counts(index)
    }

    fn tlb_shootdown(target: arch_api::IpiTarget) -> u32 {
        smp::tlb_shootdown(target)
    }

    #[inline]
    fn service_ipi_work() {
        paging::service_requests();
    }

    #[inline]
    fn wait_pause() {
        smp::wait_pause();
    }

    fn stop_others() -> u32 {
        smp::stop_others()
    }

    fn stop_self() -> ! {
        smp::stop_self()
    }

    fn start_secondary_timer(hz: u32) -> Result<(), EarlyError> {
        if smp::this_cpu() == 0 {
            return Err(EarlyError::Unsupported("not a secondary CPU"));
        }
        timer::start(hz)
    }

    fn timer_ticks(index: u32) -> Option<u64> {
        percpu::online_block(index).map(|block| {
            block
                .timer_ticks
                .load(core::sync::atomic::Ordering::Relaxed)
        })
    }
}
