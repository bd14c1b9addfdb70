//! Per-CPU state: the block reached through GS base, and each CPU's GDT, TSS and IST stacks.
//!
//! # GS base discipline
//! While a CPU runs kernel code, `IA32_GS_BASE` holds the address of its [`PerCpu`] block
//! and `IA32_KERNEL_GS_BASE` holds the user's GS base (always 0: user code cannot set one).
//! Every transition between ring 3 and ring 0 executes exactly one `SWAPGS`: trap entry
//! from user mode (decided from the saved CS), trap exit to user mode, `SYSCALL` entry and
//! `SYSRET` exit. The paranoid entries (NMI, #MC, #DB, #DF) can arrive between
//! `SYSCALL` and its `SWAPGS`, so they decide from the GS base's sign instead: the kernel's
//! block is a higher-half address and user GS bases are lower-half (FSGSBASE stays off
//! in CR4, so user code cannot set its own).
//!
//! # GDT layout
//! `SYSRET` to 64-bit mode loads CS = `STAR[63:48] + 16` and SS = `STAR[63:48] + 8`,
//! `SYSCALL` loads CS = `STAR[47:32]` and SS = `STAR[47:32] + 8`, hence the order:
//! null, kernel code, kernel data, (unused 32-bit user code slot), user data, user code,
//! then the 16-byte TSS descriptor.
//!
//! # IST stacks
//! On the boot CPU, [`init`] points the TSS at static `.bss` stacks (no guard page: the
//! kernel cannot map pages yet); [`install_guarded_ist_stacks`] then moves each to mapped
//! pages with an unmapped guard page below, so a handler that overflows one faults instead
//! of silently corrupting its neighbour (the fault itself is then a triple fault: there is
//! no stack left to report on). A secondary CPU's guarded stacks are mapped by the boot
//! CPU before the secondary starts ([`map_guarded_ist_stacks`]), and its [`init`] uses
//! them from the first instruction: only the boot CPU has `.bss` IST stacks.
//!
//! # Which CPUs exist
//! Slots are indexed by the dense CPU index (0 = the boot CPU) up to
//! [`arch_api::MAX_CPUS`]; a CPU is *online* ([`is_online`]) once its slot is fully set
//! up, and only online CPUs are sent IPIs.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use arch_api::{IpiCounters, KernelStack};

use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// CPUs this kernel has per-CPU storage for.
pub const MAX_CPUS: usize = arch_api::MAX_CPUS;

/// Size of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;

/// The selectors, fixed by the GDT layout above.
pub mod selector {
    pub const KERNEL_CODE: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    /// `STAR[63:48]`: the base `SYSRET` adds 8 (SS) and 16 (CS) to; its slot is unused.
    pub const SYSRET_BASE: u16 = 0x18 | 3;
    pub const USER_DATA: u16 = 0x20 | 3;
    pub const USER_CODE: u16 = 0x28 | 3;
    pub const TSS: u16 = 0x30;

    const _: () = assert!(KERNEL_DATA == KERNEL_CODE + 8, "SYSCALL loads SS = CS + 8");
    const _: () = assert!(
        USER_DATA == SYSRET_BASE + 8,
        "SYSRET loads SS = STAR base + 8"
    );
    const _: () = assert!(
        USER_CODE == SYSRET_BASE + 16,
        "SYSRET loads CS = STAR base + 16"
    );
}

/// Which IST slot (1-based, as the IDT gate encodes it) each paranoid vector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ist {
    DoubleFault = 1,
    Nmi = 2,
    MachineCheck = 3,
    Debug = 4,
}

const IST_COUNT: usize = 4;

/// The block `IA32_GS_BASE` points at while the CPU runs kernel code. Assembly reaches its
/// fields as `%gs:OFFSET` through the constants in [`offsets`].
#[repr(C)]
pub struct PerCpu {
    /// This block's own address, so `mov %gs:0, %reg` yields a pointer to it.
    self_pointer: AtomicPtr<PerCpu>,
    /// The core's identity of the thread running on this CPU (0: none); see
    /// `arch_api::Threads::set_current_thread`.
    current_thread: AtomicUsize,
    /// Kernel stack top for the next entry from user mode (mirrors `TSS.RSP0`; the
    /// `SYSCALL` entry loads it from here).
    kernel_stack_top: AtomicU64,
    /// Where the `SYSCALL` entry parks the user RSP before it has a stack to push it on.
    user_stack_scratch: AtomicU64,
    /// Dense CPU number (0 = the boot CPU).
    cpu_id: AtomicU32,
    /// Lowest usable address of the current thread's kernel stack (its guard page lies
    /// just below), for the kernel-stack-overflow decision of the #DF handler; 0 = none.
    kernel_stack_base: AtomicU64,
    /// NMIs taken on this CPU (the NMI storm test counts them).
    nmi_count: AtomicU64,
    /// The local APIC ID as the MP response reported it (the IPI destination).
    hardware_id: AtomicU64,
    /// The IPIs this CPU received.
    ipi: IpiCounters,
    /// Local APIC timer ticks taken on a secondary CPU (the boot CPU's go to the core).
    timer_ticks: AtomicU64,
    /// The core's word for the running thread (`arch_api::Threads::current_record`).
    current_record: AtomicUsize,
    /// The address of `TSS.RSP0` in this CPU's TSS, so a switch writes it with no index
    /// arithmetic (set once by [`init`]).
    tss_rsp0: AtomicPtr<u64>,
}

/// Offsets into [`PerCpu`] for `%gs:`-relative assembly, checked against the struct.
pub mod offsets {
    use super::PerCpu;
    use core::mem::offset_of;

    pub const SELF_POINTER: usize = 0;
    pub const CURRENT_THREAD: usize = 8;
    pub const KERNEL_STACK_TOP: usize = 16;
    pub const USER_STACK_SCRATCH: usize = 24;
    pub const CPU_ID: usize = 32;
    pub const KERNEL_STACK_BASE: usize = 40;
    /// Read only from Rust (`current_record`), so where the struct puts it.
    pub const CURRENT_RECORD: usize = offset_of!(PerCpu, current_record);
    /// Read only from Rust (`set_kernel_stack`), so where the struct puts it.
    pub const TSS_RSP0: usize = offset_of!(PerCpu, tss_rsp0);

    const _: () = assert!(offset_of!(PerCpu, self_pointer) == SELF_POINTER);
    const _: () = assert!(offset_of!(PerCpu, current_thread) == CURRENT_THREAD);
    const _: () = assert!(offset_of!(PerCpu, kernel_stack_top) == KERNEL_STACK_TOP);
    const _: () = assert!(offset_of!(PerCpu, user_stack_scratch) == USER_STACK_SCRATCH);
    const _: () = assert!(offset_of!(PerCpu, cpu_id) == CPU_ID);
    const _: () = assert!(offset_of!(PerCpu, kernel_stack_base) == KERNEL_STACK_BASE);
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_pointer: AtomicPtr::new(core::ptr::null_mut()),
            current_thread: AtomicUsize::new(0),
            kernel_stack_top: AtomicU64::new(0),
            user_stack_scratch: AtomicU64::new(0),
            cpu_id: AtomicU32::new(0),
            kernel_stack_base: AtomicU64::new(0),
            nmi_count: AtomicU64::new(0),
            hardware_id: AtomicU64::new(0),
            ipi: IpiCounters::new(),
            timer_ticks: AtomicU64::new(0),
            current_record: AtomicUsize::new(0),
            tss_rsp0: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Count one timer tick of this (secondary) CPU.
    pub fn count_timer_tick(&self) {
        self.timer_ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Timer ticks counted with [`PerCpu::count_timer_tick`].
    pub fn timer_ticks(&self) -> u64 {
        self.timer_ticks.load(Ordering::Relaxed)
    }

    /// The local APIC ID recorded for this CPU.
    pub fn hardware_id(&self) -> u64 {
        self.hardware_id.load(Ordering::Relaxed)
    }

    /// The IPIs this CPU received.
    pub fn ipi(&self) -> &IpiCounters {
        &self.ipi
    }

    /// This CPU's number.
    #[inline(always)]
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id.load(Ordering::Relaxed)
    }

    /// The current thread as the core named it (0: none).
    pub fn current_thread(&self) -> usize {
        self.current_thread.load(Ordering::Relaxed)
    }

    /// The current thread's kernel stack, if one was set.
    pub fn kernel_stack(&self) -> Option<KernelStack> {
        let base = self.kernel_stack_base.load(Ordering::Relaxed);
        let top = self.kernel_stack_top.load(Ordering::Relaxed);
        (base != 0).then_some(KernelStack { base, top })
    }

    /// Count one NMI taken with this block in GS base.
    pub fn count_nmi(&self) {
        self.nmi_count.fetch_add(1, Ordering::Relaxed);
    }

    /// NMIs taken with this block in GS base.
    pub fn nmi_count(&self) -> u64 {
        self.nmi_count.load(Ordering::Relaxed)
    }

    /// This block's address (what `IA32_GS_BASE` must hold in kernel code).
    pub fn address(&self) -> u64 {
        core::ptr::from_ref(self) as u64
    }

    /// Kernel stack top for the next entry from user mode.
    pub fn kernel_stack_top(&self) -> u64 {
        self.kernel_stack_top.load(Ordering::Relaxed)
    }
}

#[repr(C, align(16))]
struct IstStack(UnsafeCell<[u8; IST_STACK_SIZE]>);

/// Everything one CPU owns.
struct CpuSlot {
    block: PerCpu,
    gdt: UnsafeCell<GlobalDescriptorTable<8>>,
    tss: UnsafeCell<TaskStateSegment>,
}

// SAFETY: a slot's `UnsafeCell`s are written only by the CPU that owns the slot: its GDT and
// TSS once during `init` (before they are loaded), the TSS's RSP0 afterwards only by that CPU
// while it runs in ring 0 (the hardware reads RSP0 only on a trap from ring 3).
unsafe impl Sync for CpuSlot {}

// SAFETY: an IST stack is written only by the hardware of the CPU that owns it (and the
// handler running on it); Rust code only takes its address.
unsafe impl Sync for IstStack {}

impl CpuSlot {
    const fn new() -> Self {
        Self {
            block: PerCpu::new(),
            gdt: UnsafeCell::new(GlobalDescriptorTable::empty()),
            tss: UnsafeCell::new(TaskStateSegment::new()),
        }
    }
}

static CPUS: [CpuSlot; MAX_CPUS] = [const { CpuSlot::new() }; MAX_CPUS];

/// The boot CPU's early IST stacks (until [`install_guarded_ist_stacks`]). Kept apart from
/// `CPUS` so these all-zero stacks land in `.bss`, not in the image.
static IST_STACKS: [IstStack; IST_COUNT] =
    [const { IstStack(UnsafeCell::new([0; IST_STACK_SIZE])) }; IST_COUNT];

/// Bit `n`: CPU `n` is online (its slot is set up and it takes IPIs).
static ONLINE: AtomicU32 = AtomicU32::new(0);
const _: () = assert!(MAX_CPUS <= 32, "ONLINE is one bit per CPU");
const _: () = assert!(MAX_CPUS.is_power_of_two());

/// Whether CPU `index` is online.
pub fn is_online(index: u32) -> bool {
    (index as usize) < MAX_CPUS && ONLINE.load(Ordering::Acquire) & (1 << index) != 0
}

/// Record this CPU's local APIC ID (the boot CPU learns it after [`init`]).
pub fn record_hardware_id(hardware_id: u64) {
    current().hardware_id.store(hardware_id, Ordering::Relaxed);
}

/// Mark this CPU online (its block, tables and local APIC are set up).
pub fn mark_online() {
    ONLINE.fetch_or(1 << current().cpu_id(), Ordering::Release);
}

/// The block of CPU `index`, if that CPU is online.
pub fn online_block(index: u32) -> Option<&'static PerCpu> {
    is_online(index).then(|| &CPUS[index as usize].block)
}

/// Set once the boot CPU's GS base points at its block (the fatal report checks it).
static BOOT_CPU_READY: AtomicBool = AtomicBool::new(false);

/// Whether [`current`] may be called.
#[inline(always)]
pub fn ready() -> bool {
    BOOT_CPU_READY.load(Ordering::Acquire)
}

/// Build and load CPU `cpu_id`'s GDT and TSS, reload the segment registers, and point GS
/// base at its per-CPU block, which records `hardware_id` (the local APIC ID).
///
/// # Safety
/// Called once per CPU, on that CPU, with interrupts masked, before anything uses `%gs`;
/// `cpu_id < MAX_CPUS`; for a CPU other than the boot CPU, [`map_guarded_ist_stacks`] has
/// run for it.
pub unsafe fn init(cpu_id: u32, hardware_id: u64) {
    let slot = &CPUS[cpu_id as usize];
    let tss = slot.tss.get();
    // SAFETY: this CPU owns the slot and has not loaded its TSS or GDT yet (caller's duty),
    // so nothing else reads or writes them.
    unsafe {
        for index in 0..IST_COUNT {
            // The CPU pushes below the top; the top is 16-byte aligned (`IstStack`'s type,
            // or a page boundary for the guarded stacks).
            let guarded = GUARDED_IST_BASES[cpu_id as usize][index].load(Ordering::Acquire);
            let top = if guarded != 0 {
                guarded + IST_STACK_SIZE as u64
            } else {
                assert_eq!(cpu_id, 0, "a secondary CPU's IST stacks were not mapped");
                IST_STACKS[index].0.get() as u64 + IST_STACK_SIZE as u64
            };
            (*tss).interrupt_stack_table[index] = VirtAddr::new(top);
        }
        let gdt = &mut *slot.gdt.get();
        let selectors = [
            gdt.append(Descriptor::kernel_code_segment()),
            gdt.append(Descriptor::kernel_data_segment()),
            gdt.append(Descriptor::UserSegment(0)), // SYSRET base slot, never loaded
            gdt.append(Descriptor::user_data_segment()),
            gdt.append(Descriptor::user_code_segment()),
            gdt.append(Descriptor::tss_segment_unchecked(tss)),
        ];
        let expected = [
            selector::KERNEL_CODE,
            selector::KERNEL_DATA,
            selector::SYSRET_BASE & !3,
            selector::USER_DATA,
            selector::USER_CODE,
            selector::TSS,
        ];
        for (built, wanted) in selectors.iter().zip(expected) {
            assert_eq!(
                built.0, wanted,
                "GDT layout differs from the selector constants"
            );
        }
        gdt.load_unsafe();
    }
    let kernel_data = SegmentSelector::new(selector::KERNEL_DATA >> 3, PrivilegeLevel::Ring0);
    let null = SegmentSelector(0);
    // SAFETY: the GDT just loaded holds kernel code and data at these selectors and a TSS
    // descriptor (available, 64-bit) at `selector::TSS`; loading GS with null before writing
    // the GS base MSR below is the order that keeps the base we write.
    unsafe {
        CS::set_reg(SegmentSelector::new(
            selector::KERNEL_CODE >> 3,
            PrivilegeLevel::Ring0,
        ));
        SS::set_reg(kernel_data);
        DS::set_reg(null);
        ES::set_reg(null);
        FS::set_reg(null);
        GS::set_reg(null);
        load_tss(SegmentSelector::new(
            selector::TSS >> 3,
            PrivilegeLevel::Ring0,
        ));
    }
    let block = &slot.block;
    block
        .self_pointer
        .store(core::ptr::from_ref(block).cast_mut(), Ordering::Relaxed);
    block.cpu_id.store(cpu_id, Ordering::Relaxed);
    block.hardware_id.store(hardware_id, Ordering::Relaxed);
    // SAFETY: `tss` points at this CPU's TSS in the static `CPUS`; only the field's address
    // is taken (the struct is `packed(4)`, so no reference to it is made).
    let rsp0 = unsafe { core::ptr::addr_of_mut!((*tss).privilege_stack_table[0]) };
    block.tss_rsp0.store(rsp0.cast::<u64>(), Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(block));
    KernelGsBase::write(VirtAddr::zero());
    if cpu_id == 0 {
        BOOT_CPU_READY.store(true, Ordering::Release);
    }
}

/// The running CPU's block.
///
/// Valid only after [`init`] ran on this CPU and while GS holds the kernel's base (always
/// true in kernel code outside the few instructions of the entry stubs).
#[inline(always)]
pub fn current() -> &'static PerCpu {
    let block: *const PerCpu;
    // SAFETY: reads `%gs:0`, the block's self pointer (GS base discipline above).
    unsafe {
        core::arch::asm!(
            "mov {block}, gs:[{offset}]",
            block = out(reg) block,
            offset = const offsets::SELF_POINTER,
            options(nostack, preserves_flags, readonly),
        );
    }
    // SAFETY: the self pointer points at a `PerCpu` inside the static `CPUS`.
    unsafe { &*block }
}

/// Make `stack` the current thread's kernel stack: the next trap from user mode lands on its
/// top (`TSS.RSP0` and the slot the `SYSCALL` entry loads), and the #DF handler checks its
/// guard page. Context switch calls this for every incoming thread.
#[inline(always)]
pub fn set_kernel_stack(stack: KernelStack) {
    // Kernel stacks lie in the higher half, so `top` is canonical as it is.
    debug_assert!(VirtAddr::try_new(stack.top).is_ok());
    // SAFETY: `tss_rsp0` is a word only `init` on this CPU writes.
    let rsp0 = unsafe { own_word::<{ offsets::TSS_RSP0 }>() } as *mut u64;
    debug_assert!(!rsp0.is_null(), "set by `init`");
    // SAFETY: `rsp0` is the address of `RSP0` in this CPU's TSS (`init`), which the CPU
    // reads only when a trap arrives from ring 3 — never while this write runs, because the
    // caller is in ring 0. The struct is `packed(4)`, so the field is written unaligned;
    // `VirtAddr` is a transparent `u64` and `top` is canonical (above), so the field keeps
    // its type's invariant.
    unsafe { rsp0.write_unaligned(stack.top) };
    // SAFETY: both are words of this CPU's block that only this CPU writes.
    unsafe {
        set_own_word::<{ offsets::KERNEL_STACK_TOP }>(stack.top as usize);
        set_own_word::<{ offsets::KERNEL_STACK_BASE }>(stack.base as usize);
    }
}

/// The per-CPU block at `address`, if `address` is one (the NMI handler's GS check).
pub fn block_at(address: u64) -> Option<&'static PerCpu> {
    CPUS.iter()
        .map(|slot| &slot.block)
        .find(|block| block.address() == address)
}

/// The running CPU's block if `IA32_GS_BASE` points at one — for the fatal report, which
/// may run on a path where GS still holds the user's base (a kernel fault in the few
/// instructions around a `SWAPGS`); reads the MSR instead of trusting `%gs`.
/// This CPU's dense index through `%gs` (0 before the boot CPU's block exists): one load
/// more than [`PerCpu::cpu_id`] needs, no MSR read.
#[inline(always)]
pub fn index() -> u32 {
    if !ready() {
        return 0;
    }
    running_index()
}

// The `%gs` loads of `own_word` and `running_index` are declared pure and reading memory
// (`readonly`): the compiler may drop an unused one or reuse an earlier one until the next
// write to memory. That is sound: the values change only by a store to this block, and the
// running code's CPU (so its GS base) only across a context switch, a call that writes
// memory.

/// The word at `OFFSET` in this CPU's block, in one `%gs` load. Valid where [`current`]
/// is.
///
/// # Safety
/// `OFFSET` is the offset of a word-sized field of [`PerCpu`] that only this CPU writes.
#[inline(always)]
unsafe fn own_word<const OFFSET: usize>() -> usize {
    let word: usize;
    // SAFETY: GS base points at this CPU's block in kernel code once `init` ran (GS base
    // discipline above); the field at `OFFSET` is a word only this CPU writes (the
    // contract), so the load races with nothing.
    unsafe {
        core::arch::asm!(
            "mov {word}, gs:[{offset}]",
            word = out(reg) word,
            offset = const OFFSET,
            options(pure, nostack, preserves_flags, readonly),
        );
    }
    word
}

/// Store `value` in the word at `OFFSET` in this CPU's block, in one `%gs` store. Valid
/// where [`current`] is.
///
/// # Safety
/// `OFFSET` is the offset of a word-sized field of [`PerCpu`] that only this CPU writes.
#[inline(always)]
unsafe fn set_own_word<const OFFSET: usize>(value: usize) {
    // SAFETY: as in `own_word`; the field is this CPU's to write (the contract), and an
    // aligned word store is atomic, as the field's atomic type requires of other readers.
    unsafe {
        core::arch::asm!(
            "mov gs:[{offset}], {value}",
            value = in(reg) value,
            offset = const OFFSET,
            options(nostack, preserves_flags),
        );
    }
}

/// Record the current thread (the core's identity; 0 = none) and the core's word for it in
/// this CPU's block, in two `%gs` stores. Valid where [`current`] is.
#[inline(always)]
pub fn set_current_thread(thread: usize, record: usize) {
    // SAFETY: both are words of this CPU's block that only this CPU writes.
    unsafe {
        set_own_word::<{ offsets::CURRENT_THREAD }>(thread);
        set_own_word::<{ offsets::CURRENT_RECORD }>(record);
    }
}

/// The current thread as the core named it, in one `%gs` load. Valid where [`current`] is.
#[inline(always)]
pub fn current_thread() -> usize {
    // SAFETY: `current_thread` is a word at `CURRENT_THREAD`, written only by this CPU.
    unsafe { own_word::<{ offsets::CURRENT_THREAD }>() }
}

/// The core's word for the current thread, in one `%gs` load. Valid where [`current`] is.
#[inline(always)]
pub fn current_record() -> usize {
    // SAFETY: `current_record` is a word at `CURRENT_RECORD`, written only by this CPU.
    unsafe { own_word::<{ offsets::CURRENT_RECORD }>() }
}

/// This CPU's dense index in one `%gs` load, without [`index`]'s check: valid where
/// [`current`] is (a thread runs on this CPU, so its block is set up).
#[inline(always)]
pub fn running_index() -> u32 {
    let id: u32;
    // SAFETY: once `ready`, GS base points at this CPU's block in kernel code (GS base
    // discipline above); `cpu_id` is a 32-bit field at `CPU_ID`.
    unsafe {
        core::arch::asm!(
            "mov {id:e}, gs:[{offset}]",
            id = out(reg) id,
            offset = const offsets::CPU_ID,
            options(pure, nostack, preserves_flags, readonly),
        );
    }
    id
}

pub fn try_current() -> Option<&'static PerCpu> {
    if !ready() {
        return None;
    }
    block_at(GsBase::read().as_u64())
}

/// NMIs that ran with a GS base that is no CPU's block (counted apart: there is no block
/// to count them in).
static NMI_BAD_GS_UNKNOWN: AtomicU64 = AtomicU64::new(0);

/// Count an NMI whose GS base was no CPU's block.
pub fn count_nmi_with_bad_gs() {
    NMI_BAD_GS_UNKNOWN.fetch_add(1, Ordering::Relaxed);
}

/// NMIs taken on this CPU, and how many of them ran with a GS base that was no per-CPU
/// block (the user's, say).
pub fn nmi_counts() -> (u64, u64) {
    let unknown = NMI_BAD_GS_UNKNOWN.load(Ordering::Relaxed);
    (current().nmi_count() + unknown, unknown)
}

/// Where the guarded IST stacks live: right above the device window, in the PML4 slot
/// `space::init` fills before any user space exists (so every address space shares them).
pub const IST_REGION_BASE: u64 =
    crate::paging::DEVICE_WINDOW_BASE + crate::paging::DEVICE_WINDOW_SIZE;
/// One IST slot: an unmapped guard page, then the stack.
const _: () = assert!(
    (MAX_CPUS * IST_COUNT) as u64 * IST_SLOT_SIZE <= crate::paging::DEVICE_WINDOW_SIZE,
    "the IST region must fit the gigabyte above the device window checked against the HHDM"
);
const IST_SLOT_SIZE: u64 = arch_api::PAGE_SIZE + IST_STACK_SIZE as u64;

/// Bottom of each guarded IST stack, once installed (0: still the early `.bss` stack).
static GUARDED_IST_BASES: [[AtomicU64; IST_COUNT]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; IST_COUNT] }; MAX_CPUS];

/// Map CPU `cpu_id`'s IST stacks in the kernel half at [`IST_REGION_BASE`], each above an
/// unmapped guard page, and record them for [`init`] and the reports. Runs on the boot CPU
/// (for itself and, before releasing them, for the secondaries); the kernel half's edits
/// are the boot CPU's alone.
pub fn map_guarded_ist_stacks(
    cpu_id: u32,
    frames: &mut dyn arch_api::FrameSource,
) -> Result<(), arch_api::EarlyError> {
    use arch_api::{EarlyError, PAGE_SIZE, PageFlags};
    let cpu_id = cpu_id as usize;
    if cpu_id >= MAX_CPUS {
        return Err(EarlyError::Unsupported("CPU index beyond MAX_CPUS"));
    }
    for (ist, guarded_base) in GUARDED_IST_BASES[cpu_id].iter().enumerate() {
        if guarded_base.load(Ordering::Relaxed) != 0 {
            continue;
        }
        let slot = IST_REGION_BASE + ((cpu_id * IST_COUNT + ist) as u64) * IST_SLOT_SIZE;
        let base = slot + PAGE_SIZE;
        for page in 0..IST_STACK_SIZE as u64 / PAGE_SIZE {
            let frame = frames.alloc_zeroed_frame().ok_or(EarlyError::OutOfMemory)?;
            let flags = PageFlags {
                writable: true,
                ..PageFlags::default()
            };
            crate::space::map_kernel(base + page * PAGE_SIZE, frame, flags, frames)
                .map_err(|_| EarlyError::Unsupported("cannot map the IST stacks"))?;
        }
        guarded_base.store(base, Ordering::Release);
    }
    Ok(())
}

/// Move this CPU's IST stacks from the early `.bss` arrays (which have no guard page) to
/// guarded stacks ([`map_guarded_ist_stacks`]) and point the TSS at them.
///
/// # Safety
/// Called once, on the boot CPU, with interrupts masked and no IST stack in use (early
/// init: nothing runs on them yet), after `space::init`.
pub unsafe fn install_guarded_ist_stacks(
    frames: &mut dyn arch_api::FrameSource,
) -> Result<(), arch_api::EarlyError> {
    let cpu_id = current().cpu_id();
    map_guarded_ist_stacks(cpu_id, frames)?;
    let slot_tss = CPUS[cpu_id as usize].tss.get();
    for (ist, guarded_base) in GUARDED_IST_BASES[cpu_id as usize].iter().enumerate() {
        let top = guarded_base.load(Ordering::Relaxed) + IST_STACK_SIZE as u64;
        // SAFETY: the TSS belongs to this CPU, which reads an IST entry only when it
        // delivers an exception through that slot — none is in progress (caller's duty).
        // The struct is `packed(4)`, so the entry is written unaligned.
        unsafe {
            let entry = core::ptr::addr_of_mut!((*slot_tss).interrupt_stack_table[ist]);
            entry.write_unaligned(VirtAddr::new(top));
        }
    }
    Ok(())
}

/// The address range of this CPU's IST stack `ist`, for reports.
pub fn ist_stack_range(cpu_id: u32, ist: Ist) -> core::ops::Range<u64> {
    let guarded = GUARDED_IST_BASES[cpu_id as usize][ist as usize - 1].load(Ordering::Relaxed);
    if guarded != 0 {
        return guarded..guarded + IST_STACK_SIZE as u64;
    }
    let stack = &IST_STACKS[ist as usize - 1];
    let bottom = stack.0.get() as u64;
    bottom..bottom + IST_STACK_SIZE as u64
}
