//! Per-CPU state: the block reached through GS base, and each CPU's GDT, TSS and IST stacks.
//!
//! # GS base discipline
//! While a CPU runs kernel code, `IA32_GS_BASE` holds the address of its [`PerCpu`] block
//! and `IA32_KERNEL_GS_BASE` holds the user's GS base (0 until user mode exists). Every
//! transition between ring 3 and ring 0 executes exactly one `SWAPGS`: trap entry from user
//! mode (decided from the saved CS), trap exit to user mode, and — with issue 5 — `SYSCALL`
//! entry and `SYSRET` exit. The paranoid entries (NMI, #MC, #DB, #DF) can arrive between
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
//! Weak spot: the IST stacks are static arrays in `.bss` with no guard page below them
//! (guard pages arrive with the kernel's own page tables in the memory issue); a handler
//! that overflows one silently corrupts the neighbouring stack. Only the boot CPU's slot is
//! initialized: SMP bring-up (later) initializes the others.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// CPUs this kernel has per-CPU storage for.
pub const MAX_CPUS: usize = 4;

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
    /// The thread running on this CPU (placeholder until threads exist: null).
    current_thread: AtomicPtr<()>,
    /// Kernel stack top for the next entry from user mode (mirrors `TSS.RSP0`; the
    /// `SYSCALL` entry loads it from here).
    kernel_stack_top: AtomicU64,
    /// Where the `SYSCALL` entry parks the user RSP before it has a stack to push it on.
    user_stack_scratch: AtomicU64,
    /// Dense CPU number (0 = the boot CPU).
    cpu_id: AtomicU32,
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

    const _: () = assert!(offset_of!(PerCpu, self_pointer) == SELF_POINTER);
    const _: () = assert!(offset_of!(PerCpu, current_thread) == CURRENT_THREAD);
    const _: () = assert!(offset_of!(PerCpu, kernel_stack_top) == KERNEL_STACK_TOP);
    const _: () = assert!(offset_of!(PerCpu, user_stack_scratch) == USER_STACK_SCRATCH);
    const _: () = assert!(offset_of!(PerCpu, cpu_id) == CPU_ID);
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_pointer: AtomicPtr::new(core::ptr::null_mut()),
            current_thread: AtomicPtr::new(core::ptr::null_mut()),
            kernel_stack_top: AtomicU64::new(0),
            user_stack_scratch: AtomicU64::new(0),
            cpu_id: AtomicU32::new(0),
        }
    }

    /// This CPU's number.
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id.load(Ordering::Relaxed)
    }

    /// The current thread (null until threads exist).
    pub fn current_thread(&self) -> *mut () {
        self.current_thread.load(Ordering::Relaxed)
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

/// Kept apart from `CPUS` so these all-zero stacks land in `.bss`, not in the image.
static IST_STACKS: [[IstStack; IST_COUNT]; MAX_CPUS] =
    [const { [const { IstStack(UnsafeCell::new([0; IST_STACK_SIZE])) }; IST_COUNT] }; MAX_CPUS];

/// Set once the boot CPU's GS base points at its block (the fatal report checks it).
static BOOT_CPU_READY: AtomicBool = AtomicBool::new(false);

/// Whether [`current`] may be called.
pub fn ready() -> bool {
    BOOT_CPU_READY.load(Ordering::Acquire)
}

/// Build and load CPU `cpu_id`'s GDT and TSS, reload the segment registers, and point GS
/// base at its per-CPU block.
///
/// # Safety
/// Called once per CPU, on that CPU, with interrupts masked, before anything uses `%gs`.
pub unsafe fn init(cpu_id: u32) {
    let slot = &CPUS[cpu_id as usize];
    let tss = slot.tss.get();
    // SAFETY: this CPU owns the slot and has not loaded its TSS or GDT yet (caller's duty),
    // so nothing else reads or writes them.
    unsafe {
        for (index, stack) in IST_STACKS[cpu_id as usize].iter().enumerate() {
            // The CPU pushes below the top; the top is 16-byte aligned by `IstStack`'s type.
            let top = stack.0.get() as u64 + IST_STACK_SIZE as u64;
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

/// Set the stack the next trap from user mode lands on: `TSS.RSP0` and the per-CPU slot the
/// `SYSCALL` entry loads. Context switch (issue 5) calls this for every incoming thread.
pub fn set_kernel_stack_top(top: u64) {
    let block = current();
    let slot = &CPUS[block.cpu_id() as usize];
    // SAFETY: the TSS belongs to this CPU, which reads it only when a trap arrives from
    // ring 3 — never while this write runs, because the caller is in ring 0. The struct is
    // `packed(4)`, so the field is written unaligned.
    unsafe {
        let rsp0 = core::ptr::addr_of_mut!((*slot.tss.get()).privilege_stack_table[0]);
        rsp0.write_unaligned(VirtAddr::new(top));
    }
    block.kernel_stack_top.store(top, Ordering::Relaxed);
}

/// The address range of this CPU's IST stack `ist`, for reports.
pub fn ist_stack_range(cpu_id: u32, ist: Ist) -> core::ops::Range<u64> {
    let stack = &IST_STACKS[cpu_id as usize][ist as usize - 1];
    let bottom = stack.0.get() as u64;
    bottom..bottom + IST_STACK_SIZE as u64
}
