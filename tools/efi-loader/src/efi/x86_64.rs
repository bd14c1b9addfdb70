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

/// What starting the secondary CPUs needs beyond the common plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct MpExtra {}

/// The boot CPU's hardware id as the MP response reports it: its local APIC ID.
pub fn bsp_hardware_id() -> u64 {
    // `cpuid` is available on every x86_64 CPU and has no side effects; leaf 1 EBX[31:24]
    // is the initial APIC ID.
    u64::from(core::arch::x86_64::__cpuid(1).ebx >> 24)
}

/// Bytes of one secondary CPU's start-data slot.
pub const MP_BLOCK_BYTES: usize = 64;

/// The physical range the secondary CPUs' long-mode start code occupies.
pub fn ap_code() -> (u64, u64) {
    trampoline_code()
}

/// Start the secondary CPU `index` of `plan`; not yet done on x86_64.
pub fn start_cpu(_plan: &super::mp::Plan, _index: usize, _roots: &Roots, _hhdm: u64) -> bool {
    false
}
