//! Just enough ACPI to route device interrupts: RSDP → RSDT/XSDT → MADT, for the I/O
//! APICs (address, GSI base) and the interrupt source overrides of ISA IRQs (ACPI 6.5,
//! §5.2.5, §5.2.7, §5.2.8, §5.2.12). Boot-only.
//!
//! The tables are ordinary memory (ACPI reclaimable or NVS entries of the memory map),
//! which the HHDM maps, so they are read through it; every length is bounded and every
//! table's checksum verified before a byte of it is believed.
//!
//! Why not the `acpi` crate: this runs in early boot, before the kernel has a heap, and
//! the crate's table set and platform model are built in allocated memory through a
//! physical-mapping handler; Keel needs three kinds of MADT entry, read through the HHDM.

use crate::paging;

/// The most I/O APICs Keel routes through (QEMU has one; large servers have a handful).
pub const MAX_IO_APICS: usize = 4;
/// ISA IRQs 0–15.
pub const ISA_IRQS: usize = 16;

/// One I/O APIC from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicEntry {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// Polarity and trigger mode of an interrupt input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineMode {
    pub active_low: bool,
    pub level: bool,
}

/// ISA's own convention: edge triggered, active high.
pub const ISA_DEFAULT: LineMode = LineMode {
    active_low: false,
    level: false,
};
/// PCI's convention, for GSIs no ISA IRQ maps to: level triggered, active low.
pub const PCI_DEFAULT: LineMode = LineMode {
    active_low: true,
    level: true,
};

/// Where an ISA IRQ arrives: its GSI and mode (identity and edge/high unless overridden).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaRoute {
    pub gsi: u32,
    pub mode: LineMode,
}

/// What the MADT says about interrupt routing.
#[derive(Clone, Copy, Debug)]
pub struct Madt {
    pub io_apics: [Option<IoApicEntry>; MAX_IO_APICS],
    pub isa: [IsaRoute; ISA_IRQS],
}

/// Read the MADT the RSDP at physical `rsdp` leads to. `Err` names what is missing.
pub fn read_madt(rsdp: u64) -> Result<Madt, &'static str> {
    let header = physical(rsdp, 36).ok_or("ACPI RSDP address")?;
    if &header[..8] != b"RSD PTR " || checksum(&header[..20]) != 0 {
        return Err("ACPI RSDP (bad signature or checksum)");
    }
    let revision = header[15];
    let (root, wide) = match u64_at(header, 24) {
        Some(xsdt) if revision >= 2 && xsdt != 0 => (xsdt, true),
        _ => (u64::from(u32_at(header, 16).unwrap_or(0)), false),
    };
    let root = table(root).ok_or("ACPI RSDT/XSDT (bad header or checksum)")?;
    let step = if wide { 8 } else { 4 };
    let madt = (36..root.len())
        .step_by(step)
        .filter_map(|at| {
            if wide {
                u64_at(root, at)
            } else {
                u32_at(root, at).map(u64::from)
            }
        })
        .filter_map(table)
        .find(|table| &table[..4] == b"APIC")
        .ok_or("ACPI MADT")?;
    Ok(parse_madt(madt))
}

/// Interpret a checked MADT ("APIC") table.
fn parse_madt(madt: &[u8]) -> Madt {
    let mut result = Madt {
        io_apics: [None; MAX_IO_APICS],
        isa: core::array::from_fn(|irq| IsaRoute {
            gsi: irq as u32,
            mode: ISA_DEFAULT,
        }),
    };
    let mut count = 0;
    // Entries start after the header, the local APIC address and the flags (44 bytes).
    let mut at = 44;
    while at + 2 <= madt.len() {
        let kind = madt[at];
        let size = usize::from(madt[at + 1]);
        if size < 2 || at + size > madt.len() {
            break;
        }
        let entry = &madt[at..at + size];
        match kind {
            // I/O APIC: id, reserved, address (u32), GSI base (u32).
            1 if size >= 12 && count < MAX_IO_APICS => {
                if let (Some(address), Some(gsi_base)) = (u32_at(entry, 4), u32_at(entry, 8)) {
                    result.io_apics[count] = Some(IoApicEntry {
                        id: entry[2],
                        address: u64::from(address),
                        gsi_base,
                    });
                    count += 1;
                }
            }
            // Interrupt source override: bus (0 = ISA), source IRQ, GSI (u32), flags (u16).
            2 if size >= 10 && entry[2] == 0 && usize::from(entry[3]) < ISA_IRQS => {
                if let (Some(gsi), Some(flags)) = (u32_at(entry, 4), u16_at(entry, 8)) {
                    result.isa[usize::from(entry[3])] = IsaRoute {
                        gsi,
                        mode: isa_mode(flags),
                    };
                }
            }
            _ => {}
        }
        at += size;
    }
    result
}

/// MPS INTI flags: polarity in bits 0–1, trigger mode in bits 2–3; `00` means "as the bus
/// says", which for ISA is active high, edge triggered; `11` is low / level.
fn isa_mode(flags: u16) -> LineMode {
    LineMode {
        active_low: flags & 0b11 == 0b11,
        level: (flags >> 2) & 0b11 == 0b11,
    }
}

/// A system description table at physical `address`, if its header and checksum are sane.
fn table(address: u64) -> Option<&'static [u8]> {
    /// No table Keel reads is larger (a MADT lists a few hundred bytes per CPU).
    const LIMIT: usize = 1 << 20;
    let header = physical(address, 36)?;
    let length = u32_at(header, 4)? as usize;
    if !(36..=LIMIT).contains(&length) {
        return None;
    }
    let table = physical(address, length)?;
    (checksum(table) == 0).then_some(table)
}

/// `length` bytes of physical memory at `address`, through the HHDM.
fn physical(address: u64, length: usize) -> Option<&'static [u8]> {
    let hhdm = paging::hhdm_offset()?;
    if address == 0 || address.checked_add(length as u64)? > (1 << 52) {
        return None;
    }
    // SAFETY: ACPI tables lie in memory the firmware reported (ACPI reclaimable or NVS
    // entries of the memory map, below 4 GiB on every firmware Keel boots on), all of which
    // the HHDM maps for the kernel's lifetime; nothing writes them, so a shared slice is
    // sound. The range was checked not to wrap.
    Some(unsafe { core::slice::from_raw_parts((hhdm + address) as *const u8, length) })
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}
