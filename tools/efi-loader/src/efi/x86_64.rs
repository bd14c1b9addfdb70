//! x86_64: CPU features, interrupt controllers, and the jump into the kernel.
//!
//! Why the handoff is shaped so: UEFI runs the loader in long mode on identity-mapped
//! firmware page tables, while the protocol wants the kernel to start on the loader's
//! tables, which (base revision 1 and later) map nothing in the lower half. So the last
//! few instructions run from a page that is identity-mapped in the new tables too: they
//! load CR3, jump to the same code through the HHDM, clear the identity slot of the top
//! table, flush the TLB, and only then load the protocol's GDT, the segment registers,
//! RFLAGS and the stack, and "return" into the kernel with every register zero.

use core::arch::{asm, naked_asm};
use core::mem::offset_of;

use efi_loader::acpi;
use efi_loader::elf::Machine;
use efi_loader::machine::x86_64::{
    CODE_SELECTOR, CR0_WP, CR4_LA57, CR4_PGE, DATA_SELECTOR, EFER_MSR, EFER_NXE, GDT, PAT, PAT_MSR,
};
use efi_loader::paging::{Format, Space};
use efi_loader::protocol::HHDM_OFFSET_X86_64;

use super::memory::Arena;

pub const MACHINE: Machine = Machine::X86_64;
/// The value of Limine's `${ARCH}` macro.
pub const ARCH: &str = "x86-64";
pub const HHDM_OFFSET: u64 = HHDM_OFFSET_X86_64;
/// Virtual address bits of the paging mode the loader sets up (4-level).
pub const VA_BITS: u32 = 48;
/// The highest paging mode the handoff sets up. 5-level paging would need the switch to
/// LA57 (which can only be made with paging off, from 32-bit code); the handoff does not
/// make it yet, so a request is answered within 4-level paging.
pub const SUPPORTED_PAGING_MAX: u64 = efi_loader::protocol::PAGING_MODE_4LEVEL;

/// Whether the CPU supports 5-level paging (CPUID.(EAX=7,ECX=0):ECX.LA57[bit 16]).
pub fn cpu_has_5level() -> bool {
    // `cpuid` is available on every x86_64 CPU and has no side effects.
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;
    max_leaf >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << 16) != 0
}

/// One root translates both halves.
pub const SPACE: Space = Space::Canonical;
/// At most this many I/O APICs get their entries masked.
const MAX_IO_APICS: usize = 16;

/// What the CPU supports of what the handoff uses.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub no_execute: bool,
    pub huge_pages: bool,
    pub pat: bool,
}

pub fn features() -> Features {
    // `cpuid` is available on every x86_64 CPU and has no side effects.
    let basic = core::arch::x86_64::__cpuid(1);
    let extended_max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    let extended = if extended_max >= 0x8000_0001 {
        core::arch::x86_64::__cpuid(0x8000_0001).edx
    } else {
        0
    };
    Features {
        no_execute: extended & (1 << 20) != 0,
        huge_pages: extended & (1 << 26) != 0,
        pat: basic.edx & (1 << 16) != 0,
    }
}

pub fn page_format(features: Features) -> Format {
    Format::X86_64 {
        no_execute: features.no_execute,
        huge_pages: features.huge_pages,
    }
}

/// Refuse firmware states the loader cannot turn into the protocol's.
pub fn check_firmware_state() -> Result<(), alloc::string::String> {
    let cr4: u64;
    // SAFETY: reading CR4 at CPL 0 (where UEFI applications run) has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    if cr4 & CR4_LA57 != 0 {
        return Err("the firmware runs with 5-level paging; this loader can only hand over with 4-level paging \
                    (leaving LA57 needs a trip through 32-bit mode)"
            .into());
    }
    Ok(())
}

/// A cheap, varying number (for KASLR when the firmware has no RNG).
pub fn counter() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The 10-byte operand of `lgdt`.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Gdtr {
    limit: u16,
    base: u64,
}

/// What the handoff needs beyond the common plan, prepared before ExitBootServices.
#[derive(Clone, Copy, Debug)]
pub struct Extra {
    features: Features,
    io_apics: [u64; MAX_IO_APICS],
    io_apic_count: usize,
    /// Kernel (HHDM) address of the GDTR image.
    gdtr: u64,
}

/// Put the protocol's GDT in bootloader-reclaimable memory and note the I/O APICs.
pub fn prepare(arena: &mut Arena, io_apics: &[u64], features: Features) -> Extra {
    let gdt = arena.put(GDT);
    let gdtr = arena.put(Gdtr {
        limit: (size_of_val(&GDT) - 1) as u16,
        base: arena.virtual_of(gdt),
    });
    let mut extra = Extra {
        features,
        io_apics: [0; MAX_IO_APICS],
        io_apic_count: 0,
        gdtr: arena.virtual_of(gdtr),
    };
    for (slot, &base) in extra.io_apics.iter_mut().zip(io_apics) {
        *slot = base;
        extra.io_apic_count += 1;
    }
    extra
}

/// The physical range the handoff code occupies (identity-mapped for its first steps).
pub fn trampoline_code() -> (u64, u64) {
    let start = jump as *const () as u64;
    (start & !0xfff, 2 * 4096)
}

/// The translation roots the handoff switches to.
pub struct Roots {
    /// PML4 of the kernel's tables.
    pub root: u64,
}

/// # Safety
/// `port` must be an I/O port whose write has no effect beyond the device's.
unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// As for [`outb`].
unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// # Safety
/// `msr` must exist on this CPU and `value` be valid for it.
unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// # Safety
/// `msr` must exist on this CPU.
unsafe fn read_msr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller vouches for the MSR.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Mask the redirection entries the protocol wants masked in the I/O APIC at `base`.
///
/// # Safety
/// `base` must be the MMIO base of an I/O APIC (from the MADT), mapped uncached by the
/// firmware's tables, and nothing else may be programming it.
unsafe fn mask_io_apic(base: u64) {
    let select = base as *mut u32;
    let window = (base + 0x10) as *mut u32;
    // SAFETY: IOREGSEL/IOWIN are the I/O APIC's two 32-bit registers (82093AA datasheet
    // 3.1); the caller guarantees the base.
    unsafe {
        select.write_volatile(1);
        let entries = (window.read_volatile() >> 16) & 0xff;
        for entry in 0..=entries {
            select.write_volatile(0x10 + 2 * entry);
            let low = window.read_volatile();
            if acpi::masks_redirection(low) {
                window.write_volatile(low | 1 << 16);
            }
        }
    }
}

/// Report a failure after ExitBootServices on COM1 (the console is gone) and halt.
pub fn fatal(message: &str) -> ! {
    for byte in "\r\nkeel-efi-loader: fatal after ExitBootServices: "
        .bytes()
        .chain(message.bytes())
        .chain("\r\n".bytes())
    {
        // SAFETY: COM1 (0x3f8) is the PC's first serial port, set up by the firmware for
        // its own console; polling the line status register and writing the transmit
        // holding register only sends bytes.
        unsafe {
            for _ in 0..100_000 {
                if inb(0x3fd) & 0x20 != 0 {
                    break;
                }
            }
            outb(0x3f8, byte);
        }
    }
    loop {
        // SAFETY: interrupts are off; `hlt` just stops the CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Register values the trampoline loads.
#[repr(C)]
struct Trampoline {
    cr3: u64,
    hhdm: u64,
    /// Kernel (HHDM) address of the top-table slot that identity-maps the trampoline.
    identity_slot: u64,
    gdtr: u64,
    stack_top: u64,
    entry: u64,
}

/// Bring the machine into the protocol's entry state and jump to `entry`.
/// Runs after ExitBootServices; never returns.
pub fn enter(extra: &Extra, roots: &Roots, hhdm: u64, stack_top: u64, entry: u64) -> ! {
    let (trampoline, _) = trampoline_code();
    let slot = (trampoline >> 39) & 0x1ff;
    let state = Trampoline {
        cr3: roots.root,
        hhdm,
        identity_slot: roots.root + 8 * slot + hhdm,
        gdtr: extra.gdtr,
        stack_top,
        entry,
    };
    // SAFETY: boot services are gone, so the loader owns the machine: interrupts go off
    // for good; the legacy PICs' data ports (0x21, 0xa1) take the interrupt masks; the I/O
    // APIC bases come from the MADT. EFER.NXE is set only when CPUID reports NX, the PAT
    // only when CPUID reports a PAT, before any table using those bits is loaded; the PAT
    // keeps entries 0–3 as they were, so the firmware mappings in use do not change type.
    unsafe {
        asm!("cli", options(nomem, nostack));
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        for &base in &extra.io_apics[..extra.io_apic_count] {
            mask_io_apic(base);
        }
        if extra.features.no_execute {
            write_msr(EFER_MSR, read_msr(EFER_MSR) | EFER_NXE);
        }
        if extra.features.pat {
            write_msr(PAT_MSR, PAT);
            asm!("wbinvd", options(nostack));
        }
        let mut cr0: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        cr0 |= CR0_WP;
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        jump(&state)
    }
}

/// The last steps, from the identity-mapped page to the kernel.
///
/// # Safety
/// `state` must describe tables that map this function's pages both at their physical
/// address and at `physical + hhdm`, the kernel, the GDT and the stack; interrupts must
/// be disabled.
#[unsafe(naked)]
unsafe extern "sysv64" fn jump(state: *const Trampoline) -> ! {
    naked_asm!(
        "mov rax, [rdi + {cr3}]",           // rax = new PML4
        "mov rbx, [rdi + {hhdm}]",          // rbx = HHDM offset
        "mov r8, [rdi + {slot}]",           // r8 = &PML4[identity] through the HHDM
        "mov r9, [rdi + {gdtr}]",           // r9 = &GDTR through the HHDM
        "mov rsi, [rdi + {stack}]",         // rsi = kernel stack top
        "mov rdx, [rdi + {entry}]",         // rdx = kernel entry
        "lea rcx, [rip + 2f]",
        "add rcx, rbx",                     // rcx = label 2 through the HHDM
        "mov cr3, rax",                     // switch; this page is identity-mapped
        "jmp rcx",                          // continue in the higher half
        "2:",
        "mov qword ptr [r8], 0",            // drop the identity mapping
        "mov rax, cr3",
        "mov cr3, rax",                     // flush non-global translations
        "mov rax, cr4",
        "test rax, {pge}",
        "jz 3f",
        "mov rcx, rax",
        "xor rcx, {pge}",
        "mov cr4, rcx",                     // toggling PGE flushes global translations
        "mov cr4, rax",
        "3:",
        "lgdt [r9]",                        // the protocol's GDT
        "mov rsp, rsi",                     // the kernel's stack
        "push {code}",
        "lea rax, [rip + 4f]",
        "push rax",
        "retfq",                            // CS = 64-bit code
        "4:",
        "mov eax, {data}",
        "mov ds, ax",
        "mov es, ax",
        "mov ss, ax",
        "mov fs, ax",
        "mov gs, ax",                       // data segments, FS/GS bases 0
        "push 2",
        "popfq",                            // RFLAGS = 2: IF, DF, VM clear
        "push 0",                           // the invalid return address
        "push rdx",                         // where `ret` goes
        "xor eax, eax",
        "xor ebx, ebx",
        "xor ecx, ecx",
        "xor edx, edx",
        "xor esi, esi",
        "xor edi, edi",
        "xor ebp, ebp",
        "xor r8d, r8d",
        "xor r9d, r9d",
        "xor r10d, r10d",
        "xor r11d, r11d",
        "xor r12d, r12d",
        "xor r13d, r13d",
        "xor r14d, r14d",
        "xor r15d, r15d",
        "ret",                              // into the kernel, rsp at the 0 return address
        cr3 = const offset_of!(Trampoline, cr3),
        hhdm = const offset_of!(Trampoline, hhdm),
        slot = const offset_of!(Trampoline, identity_slot),
        gdtr = const offset_of!(Trampoline, gdtr),
        stack = const offset_of!(Trampoline, stack_top),
        entry = const offset_of!(Trampoline, entry),
        pge = const CR4_PGE,
        code = const CODE_SELECTOR,
        data = const DATA_SELECTOR,
    )
}

/// What starting the secondary CPUs needs beyond the common plan: the two pages below
/// 1 MiB (start code and data, then a copy of the top-level table) the SIPI vector names.
#[derive(Clone, Copy, Debug, Default)]
pub struct MpExtra {
    low: Option<u64>,
}

/// Where the secondary CPUs' start code lies (physical, below 1 MiB), 0 if nowhere.
static AP_LOW_PAGE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl MpExtra {
    /// Allocate the two low pages (bootloader-reclaimable) and copy the start code there.
    /// Without them no CPU is started.
    pub fn allocate() -> MpExtra {
        use uefi::boot::{AllocateType, allocate_pages};
        let Ok(pages) = allocate_pages(
            AllocateType::MaxAddress(0x9_ffff),
            super::memory::Owner::Bootloader.memory_type(),
            2,
        ) else {
            return MpExtra { low: None };
        };
        let low = pages.as_ptr() as u64;
        let (start, length) = ap_trampoline();
        // SAFETY: the firmware just gave the loader these two identity-mapped pages; the
        // start code is `length` (< 4 KiB, checked at build time) bytes of the loader's own
        // text.
        unsafe {
            core::ptr::write_bytes(low as *mut u8, 0, 2 * 4096);
            core::ptr::copy_nonoverlapping(start as *const u8, low as *mut u8, length as usize);
        }
        AP_LOW_PAGE.store(low, core::sync::atomic::Ordering::Relaxed);
        MpExtra { low: Some(low) }
    }
}

/// The boot CPU's hardware id as the MP response reports it: its local APIC ID.
pub fn bsp_hardware_id() -> u64 {
    // `cpuid` is available on every x86_64 CPU and has no side effects; leaf 1 EBX[31:24]
    // is the initial APIC ID.
    u64::from(core::arch::x86_64::__cpuid(1).ebx >> 24)
}

/// The physical range the secondary CPUs' start code occupies (identity-mapped for their
/// switch to long mode).
pub fn ap_code() -> (u64, u64) {
    (
        AP_LOW_PAGE.load(core::sync::atomic::Ordering::Relaxed),
        4096,
    )
}

unsafe extern "C" {
    static keel_ap_trampoline_start: u8;
    static keel_ap_trampoline_end: u8;
}

/// The start code in the loader's image: (address, length).
fn ap_trampoline() -> (u64, u64) {
    let start = &raw const keel_ap_trampoline_start as u64;
    let end = &raw const keel_ap_trampoline_end as u64;
    (start, end - start)
}

/// What the start code reads, at [`AP_DATA`] in the low page.
#[repr(C, packed)]
struct ApData {
    gdt_limit: u16,
    gdt_base: u32,
    far_offset: u32,
    far_selector: u16,
    cr3_low: u32,
    cr4: u32,
    cr0: u32,
    efer_set: u32,
    pat_low: u32,
    pat_high: u32,
    use_pat: u32,
    hhdm: u64,
    cr3: u64,
    gdtr: u64,
    info: u64,
    booted: u64,
    gdt: [u64; 7],
}

/// Offset of [`ApData`] in the low page (the code lies below it).
const AP_DATA: usize = 0xe00;
const _: () = assert!(AP_DATA + size_of::<ApData>() <= 4096);

// A secondary CPU's first instructions: real mode at `low:0` (the SIPI vector names the
// low page). Straight to long mode: PAE, the low copy of the top-level table (a 32-bit
// CR3), EFER.LME (and NXE), the boot CPU's PAT, the protocol's GDT (a copy in the page),
// paging on, and a far jump to the 64-bit code segment. Then, still identity-mapped, on
// through the HHDM, the loader's own top-level table in CR3, the protocol's GDT (the
// boot CPU's), `booted` set, and the parking loop on `goto_address`; into the kernel with
// RFLAGS = 2, the stack from the info's `reserved` slot with a zero return address, the
// info in RDI and every other register zero. RIP-relative references stay inside the
// copied code, so it runs from any page.
core::arch::global_asm!(
    ".pushsection .text.keel_ap_trampoline, \"ax\"",
    ".global keel_ap_trampoline_start",
    ".global keel_ap_trampoline_end",
    ".code16",
    "keel_ap_trampoline_start:",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "movl ({cr4}), %eax",
    "movl %eax, %cr4",
    "movl ({cr3_low}), %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx",
    "rdmsr",
    "orl ({efer_set}), %eax",
    "wrmsr",
    "cmpl $0, ({use_pat})",
    "je 1f",
    "movl $0x277, %ecx",
    "movl ({pat_low}), %eax",
    "movl ({pat_high}), %edx",
    "wrmsr",
    "1:",
    "lgdtl ({gdt_limit})",
    "movl ({cr0}), %eax",
    "movl %eax, %cr0",
    "ljmpl *({far_offset})",
    ".code64",
    "keel_ap_long_mode:",
    "movl ${data}, %eax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "leaq keel_ap_trampoline_start(%rip), %rbx",
    "movq {hhdm}(%rbx), %rax",
    "leaq 2f(%rip), %rcx",
    "addq %rax, %rcx",
    "jmpq *%rcx",
    "2:",
    "addq %rax, %rbx",
    "movq {cr3}(%rbx), %rcx",
    "movq %rcx, %cr3",
    "movq {info}(%rbx), %rdi",
    "movq {stack}(%rdi), %rsp",         // the CPU's own stack, for the far return
    "movq {gdtr}(%rbx), %rcx",
    "lgdt (%rcx)",
    "pushq ${code}",
    "leaq 3f(%rip), %rcx",
    "pushq %rcx",
    "lretq",
    "3:",
    "movl ${data}, %eax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movq $1, {booted}(%rbx)",
    "4:",
    "movq {goto}(%rdi), %rax",
    "testq %rax, %rax",
    "jnz 5f",
    "pause",
    "jmp 4b",
    "5:",
    "pushq $2",
    "popfq",
    "pushq $0",
    "pushq %rax",
    "xorl %eax, %eax",
    "xorl %ebx, %ebx",
    "xorl %ecx, %ecx",
    "xorl %edx, %edx",
    "xorl %esi, %esi",
    "xorl %ebp, %ebp",
    "xorl %r8d, %r8d",
    "xorl %r9d, %r9d",
    "xorl %r10d, %r10d",
    "xorl %r11d, %r11d",
    "xorl %r12d, %r12d",
    "xorl %r13d, %r13d",
    "xorl %r14d, %r14d",
    "xorl %r15d, %r15d",
    "retq",
    "keel_ap_trampoline_end:",
    ".popsection",
    cr4 = const AP_DATA + offset_of!(ApData, cr4),
    cr3_low = const AP_DATA + offset_of!(ApData, cr3_low),
    efer_set = const AP_DATA + offset_of!(ApData, efer_set),
    use_pat = const AP_DATA + offset_of!(ApData, use_pat),
    pat_low = const AP_DATA + offset_of!(ApData, pat_low),
    pat_high = const AP_DATA + offset_of!(ApData, pat_high),
    gdt_limit = const AP_DATA + offset_of!(ApData, gdt_limit),
    cr0 = const AP_DATA + offset_of!(ApData, cr0),
    far_offset = const AP_DATA + offset_of!(ApData, far_offset),
    hhdm = const AP_DATA + offset_of!(ApData, hhdm),
    cr3 = const AP_DATA + offset_of!(ApData, cr3),
    gdtr = const AP_DATA + offset_of!(ApData, gdtr),
    info = const AP_DATA + offset_of!(ApData, info),
    booted = const AP_DATA + offset_of!(ApData, booted),
    stack = const efi_loader::mp::STACK_OFFSET_X86_64,
    goto = const efi_loader::mp::GOTO_OFFSET_X86_64,
    code = const CODE_SELECTOR,
    data = const DATA_SELECTOR,
    options(att_syntax),
);

/// The offset of the 64-bit part in the start code.
fn long_mode_offset() -> u64 {
    unsafe extern "C" {
        static keel_ap_long_mode: u8;
    }
    &raw const keel_ap_long_mode as u64 - ap_trampoline().0
}

/// IA32_APIC_BASE: the local APIC's MMIO base and mode bits.
const APIC_BASE_MSR: u32 = 0x1b;
/// IA32_APIC_BASE.EXTD: x2APIC mode.
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// The x2APIC ICR MSR.
const X2APIC_ICR: u32 = 0x830;

/// Send one inter-processor interrupt with ICR low word `command` to `apic_id`.
///
/// # Safety
/// Boot services must be gone (the loader owns the local APIC), and `command` must be an
/// INIT or a startup IPI.
unsafe fn send_ipi(apic_id: u32, command: u32) {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; the base it names is the local
    // APIC's MMIO page, which the firmware's identity map covers uncached; ICR high then
    // low (offsets 0x310, 0x300) sends the IPI, and bit 12 of the low word is the
    // delivery status (SDM Vol. 3A 11.6.1). In x2APIC mode the ICR is one MSR.
    unsafe {
        let base = read_msr(APIC_BASE_MSR);
        if base & APIC_BASE_X2APIC != 0 {
            write_msr(X2APIC_ICR, (u64::from(apic_id) << 32) | u64::from(command));
            return;
        }
        let mmio = base & 0xf_ffff_f000;
        let low = (mmio + 0x300) as *mut u32;
        let high = (mmio + 0x310) as *mut u32;
        high.write_volatile(apic_id << 24);
        low.write_volatile(command);
        for _ in 0..1_000_000 {
            if low.read_volatile() & (1 << 12) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Time-stamp counter ticks per millisecond, measured against the PIT (channel 2, gate
/// through port 0x61) once; 0 until measured.
static TSC_PER_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn tsc_per_ms() -> u64 {
    let known = TSC_PER_MS.load(core::sync::atomic::Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    // 10 ms of the PIT's 1.193182 MHz.
    const COUNT: u16 = 11_932;
    // SAFETY: boot services are gone, so the loader owns the PIT; channel 2 drives only
    // the PC speaker, whose output stays off (port 0x61 bit 1 clear). Mode 0 counts down
    // once and raises OUT2 (port 0x61 bit 5) at zero.
    let ticks = unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01);
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(0x42, COUNT as u8);
        outb(0x42, (COUNT >> 8) as u8);
        let start = counter();
        let mut end = start;
        for _ in 0..100_000_000u64 {
            if inb(0x61) & 0x20 != 0 {
                end = counter();
                break;
            }
        }
        outb(0x61, gate);
        end - start
    };
    let per_ms = (ticks / 10).max(1_000);
    TSC_PER_MS.store(per_ms, core::sync::atomic::Ordering::Relaxed);
    per_ms
}

/// Busy-wait `micros` microseconds by the time-stamp counter.
fn delay_us(micros: u64) {
    let end = counter() + tsc_per_ms() * micros / 1000;
    while counter() < end {
        core::hint::spin_loop();
    }
}

/// How long a started CPU gets to reach its parking loop.
const AP_START_TIMEOUT_MS: u64 = 1000;

/// Start the secondary CPU `index` of `plan` with INIT-SIPI-SIPI and wait (bounded) until
/// it parks on its `goto_address`. Runs after ExitBootServices, with `roots` built and the
/// low page identity-mapped in them; CPUs start one at a time (they share the low page).
pub fn start_cpu(
    plan: &super::mp::Plan,
    index: usize,
    extra: &Extra,
    roots: &Roots,
    hhdm: u64,
) -> bool {
    let Some(low) = plan.arch.low else {
        return false;
    };
    let Ok(apic_id) = u32::try_from(plan.cpus[index].hardware_id) else {
        return false;
    };
    let table_copy = low + 4096;
    let (cr0, cr4): (u64, u64);
    // SAFETY: reading control registers at CPL 0 has no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    // PAE and PGE as on the boot CPU, and SSE enabled as the firmware had it.
    let cr4 = cr4 & (CR4_PGE | 1 << 5 | 1 << 9 | 1 << 10);
    let data = ApData {
        gdt_limit: (size_of_val(&GDT) - 1) as u16,
        gdt_base: (low + (AP_DATA + offset_of!(ApData, gdt)) as u64) as u32,
        far_offset: (low + long_mode_offset()) as u32,
        far_selector: CODE_SELECTOR,
        cr3_low: table_copy as u32,
        cr4: (cr4 | 1 << 5) as u32,
        cr0: (cr0 | 1 | 1 << 31 | CR0_WP) as u32,
        efer_set: (1 << 8)
            | if extra.features.no_execute {
                EFER_NXE as u32
            } else {
                0
            },
        pat_low: PAT as u32,
        pat_high: (PAT >> 32) as u32,
        use_pat: u32::from(extra.features.pat),
        hhdm,
        cr3: roots.root,
        gdtr: extra.gdtr,
        info: super::mp::info_at(plan.infos, index) + hhdm,
        booted: 0,
        gdt: GDT,
    };
    // SAFETY: the low pages are the loader's (allocated for this below 1 MiB, identity-
    // mapped by the firmware's tables still in CR3); the data lies above the code, and the
    // second page takes a copy of the complete top-level table (the lower levels are
    // shared), so the CPU can load it with a 32-bit CR3 whatever the root's address.
    unsafe {
        ((low + AP_DATA as u64) as *mut ApData).write_unaligned(data);
        core::ptr::copy_nonoverlapping(roots.root as *const u8, table_copy as *mut u8, 4096);
    }
    let booted = (low + (AP_DATA + offset_of!(ApData, booted)) as u64) as *const u64;
    let vector = (low >> 12) as u32;
    // SAFETY: the loader owns the local APIC after ExitBootServices; INIT (0x4500: level
    // assert) then two startup IPIs (0x4600 | vector) as the SDM's MP initialization
    // protocol has it (Vol. 3A 9.4.4.1), with its delays.
    unsafe {
        send_ipi(apic_id, 0x4500);
        delay_us(10_000);
        send_ipi(apic_id, 0x4600 | vector);
        delay_us(200);
        // SAFETY: the started CPU writes `booted` (same memory through the HHDM).
        if booted.read_volatile() == 0 {
            send_ipi(apic_id, 0x4600 | vector);
        }
    }
    let deadline = counter() + tsc_per_ms() * AP_START_TIMEOUT_MS;
    while counter() < deadline {
        // SAFETY: as above.
        if unsafe { booted.read_volatile() } != 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}
