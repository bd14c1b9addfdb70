//! Just enough ACPI to find the I/O APICs (MADT entries), whose redirection entries the
//! protocol wants masked at kernel entry on x86_64. The caller reads the tables out of
//! physical memory; this module only interprets bytes.
//!
//! Why not the `acpi` crate: it builds its own view of the whole table set through an
//! `AcpiHandler` that maps physical regions, and interprets far more than the few MADT
//! entry types read here (I/O APICs, and the local APICs the MP answer lists). A byte
//! parser of a few dozen lines, host-tested with every length checked, is the smaller
//! thing to trust in a loader.

use crate::elf::{read_u32, read_u64};

/// Where the RSDP points: (table address, whether it is an XSDT with 64-bit entries).
pub fn root_table(rsdp: &[u8]) -> Option<(u64, bool)> {
    if rsdp.get(..8)? != b"RSD PTR " {
        return None;
    }
    let revision = *rsdp.get(15)?;
    if revision >= 2 {
        let xsdt = read_u64(rsdp, 24)?;
        if xsdt != 0 {
            return Some((xsdt, true));
        }
    }
    Some((u64::from(read_u32(rsdp, 16)?), false))
}

/// The `length` field of a system description table header (36 bytes).
pub fn table_length(header: &[u8]) -> Option<usize> {
    Some(read_u32(header, 4)? as usize)
}

/// The table's four-letter signature.
pub fn signature(header: &[u8]) -> Option<&[u8]> {
    header.get(..4)
}

/// The table addresses an RSDT (`wide` = false) or XSDT (`wide` = true) lists.
pub fn root_entries(table: &[u8], wide: bool) -> impl Iterator<Item = u64> + '_ {
    let step = if wide { 8 } else { 4 };
    let length = table_length(table).unwrap_or(0).min(table.len());
    (36..length)
        .step_by(step)
        .filter(move |at| at + step <= length)
        .filter_map(move |at| {
            if wide {
                read_u64(table, at)
            } else {
                read_u32(table, at).map(u64::from)
            }
        })
}

/// The MMIO addresses of the I/O APICs a MADT ("APIC") lists.
pub fn io_apics(madt: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let length = table_length(madt).unwrap_or(0).min(madt.len());
    let mut at = 44;
    core::iter::from_fn(move || {
        while at + 2 <= length {
            let kind = madt[at];
            let size = usize::from(madt[at + 1]);
            if size < 2 {
                return None;
            }
            let entry = at;
            at += size;
            if kind == 1 && size >= 12 && entry + 12 <= length {
                return read_u32(madt, entry + 4).map(u64::from);
            }
        }
        None
    })
}

/// Whether the protocol masks an I/O APIC redirection entry with this low word: those with
/// fixed (0b000) or lowest-priority (0b001) delivery.
pub fn masks_redirection(low: u32) -> bool {
    (low >> 8) & 0b111 <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn walks_rsdp_xsdt_and_madt() {
        let mut rsdp = vec![0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[15] = 2;
        rsdp[16..20].copy_from_slice(&0x1234u32.to_le_bytes());
        rsdp[24..32].copy_from_slice(&0x7fe_0000u64.to_le_bytes());
        assert_eq!(root_table(&rsdp), Some((0x7fe_0000, true)));
        rsdp[15] = 0;
        assert_eq!(root_table(&rsdp), Some((0x1234, false)));
        assert_eq!(root_table(b"RSD PTX 12345678901234567890"), None);

        let mut xsdt = vec![0u8; 36 + 16];
        xsdt[..4].copy_from_slice(b"XSDT");
        xsdt[4..8].copy_from_slice(&52u32.to_le_bytes());
        xsdt[36..44].copy_from_slice(&0x1000u64.to_le_bytes());
        xsdt[44..52].copy_from_slice(&0x2000u64.to_le_bytes());
        assert_eq!(
            root_entries(&xsdt, true).collect::<Vec<_>>(),
            [0x1000, 0x2000]
        );
        assert_eq!(
            root_entries(&xsdt, false).collect::<Vec<_>>(),
            [0x1000, 0, 0x2000, 0]
        );

        let mut madt = vec![0u8; 44];
        madt[..4].copy_from_slice(b"APIC");
        madt.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // local APIC
        madt.extend_from_slice(&[1, 12, 0, 0]);
        madt.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        madt.extend_from_slice(&0u32.to_le_bytes());
        madt.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]); // override
        madt.extend_from_slice(&[1, 12, 1, 0]);
        madt.extend_from_slice(&0xfec1_0000u32.to_le_bytes());
        madt.extend_from_slice(&24u32.to_le_bytes());
        let length = madt.len() as u32;
        madt[4..8].copy_from_slice(&length.to_le_bytes());
        assert_eq!(signature(&madt), Some(&b"APIC"[..]));
        assert_eq!(
            io_apics(&madt).collect::<Vec<_>>(),
            [0xfec0_0000, 0xfec1_0000]
        );
    }

    #[test]
    fn masks_fixed_and_lowest_priority_only() {
        assert!(masks_redirection(0x0000_0030));
        assert!(masks_redirection(0x0000_0130));
        assert!(!masks_redirection(0x0000_0400)); // NMI
        assert!(!masks_redirection(0x0000_0700)); // ExtINT
        assert!(!masks_redirection(0x0000_0200)); // SMI
    }
}
