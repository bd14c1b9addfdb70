//! The MP (multiprocessor) feature: which CPUs the machine has, in the order the response
//! lists them, and the layout of the response.
//!
//! The CPUs come from the firmware's description, as in Limine: on x86_64 the ACPI MADT
//! (processor local APIC and local x2APIC entries that are enabled or online-capable), on
//! AArch64 the device tree's `/cpus/cpu@…` nodes (their `reg` is the MPIDR affinity). The
//! response lists the boot CPU and every CPU that reached its parking loop, in the
//! firmware's order; a CPU that did not start in time is left out.

use alloc::vec::Vec;

/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0): what `bsp_mpidr` and the
/// device tree's `reg` hold (the protocol's "with Res1 masked off").
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// One CPU the firmware describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The ACPI processor UID (0 where there is no ACPI).
    pub processor_id: u32,
    /// x86_64: the local APIC ID; AArch64: the MPIDR affinity.
    pub hardware_id: u64,
}

/// `struct limine_mp_info` on x86_64.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct MpInfoX86_64 {
    pub processor_id: u32,
    pub lapic_id: u32,
    /// For the loader: the AP's stack top (kernel address).
    pub reserved: u64,
    pub goto_address: u64,
    pub extra_argument: u64,
}

/// `struct limine_mp_info` on AArch64.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct MpInfoAarch64 {
    pub processor_id: u32,
    pub reserved1: u32,
    pub mpidr: u64,
    /// For the loader: the AP's stack top (kernel address).
    pub reserved: u64,
    pub goto_address: u64,
    pub extra_argument: u64,
}

/// `struct limine_mp_response` on x86_64.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct MpResponseX86_64 {
    pub revision: u64,
    pub flags: u32,
    pub bsp_lapic_id: u32,
    pub cpu_count: u64,
    pub cpus: u64,
}

/// `struct limine_mp_response` on AArch64.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct MpResponseAarch64 {
    pub revision: u64,
    pub flags: u64,
    pub bsp_mpidr: u64,
    pub cpu_count: u64,
    pub cpus: u64,
}

/// Byte offset of `goto_address` in an x86_64 `limine_mp_info`.
pub const GOTO_OFFSET_X86_64: usize = 16;
/// Byte offset of `goto_address` in an AArch64 `limine_mp_info`.
pub const GOTO_OFFSET_AARCH64: usize = 24;
/// Byte offset of the loader's stack slot (`reserved`) in an x86_64 `limine_mp_info`.
pub const STACK_OFFSET_X86_64: usize = 8;
/// Byte offset of the loader's stack slot (`reserved`) in an AArch64 `limine_mp_info`.
pub const STACK_OFFSET_AARCH64: usize = 16;

/// The CPUs a MADT ("APIC") lists, in table order: processor local APIC (type 0) and
/// processor local x2APIC (type 9) entries whose flags say enabled or online-capable.
/// x2APIC entries whose ID fits in 8 bits are skipped when a local APIC entry already
/// named that ID; IDs above 255 are skipped, since the CPUs are started in xAPIC mode.
pub fn madt_cpus(madt: &[u8]) -> Vec<Cpu> {
    let length = crate::acpi::table_length(madt).unwrap_or(0).min(madt.len());
    let mut cpus: Vec<Cpu> = Vec::new();
    let mut at = 44;
    while at + 2 <= length {
        let kind = madt[at];
        let size = usize::from(madt[at + 1]);
        if size < 2 || at + size > length {
            break;
        }
        let entry = &madt[at..at + size];
        at += size;
        let usable = |flags: u32| flags & 0b11 != 0;
        let cpu = match kind {
            0 if size >= 8 => {
                let flags = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
                usable(flags).then_some(Cpu {
                    processor_id: u32::from(entry[2]),
                    hardware_id: u64::from(entry[3]),
                })
            }
            9 if size >= 16 => {
                let word = |i: usize| {
                    u32::from_le_bytes([entry[i], entry[i + 1], entry[i + 2], entry[i + 3]])
                };
                let (id, flags, uid) = (word(4), word(8), word(12));
                (usable(flags) && id <= 0xff).then_some(Cpu {
                    processor_id: uid,
                    hardware_id: u64::from(id),
                })
            }
            _ => None,
        };
        if let Some(cpu) = cpu
            && !cpus
                .iter()
                .any(|known| known.hardware_id == cpu.hardware_id)
        {
            cpus.push(cpu);
        }
    }
    cpus
}

/// How PSCI is called: the device tree's `/psci` `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

/// The PSCI conduit a device tree names, if it describes PSCI.
pub fn psci_conduit(blob: &[u8]) -> Option<Conduit> {
    let tree = fdt::Fdt::new(blob).ok()?;
    let node = tree.find_node("/psci")?;
    match node.property("method")?.as_str()? {
        "hvc" => Some(Conduit::Hvc),
        "smc" => Some(Conduit::Smc),
        _ => None,
    }
}

/// The CPUs a device tree's `/cpus` node lists, in tree order: children named `cpu` or
/// `cpu@…` whose `device_type` (when present) is `"cpu"`, with the MPIDR affinity from
/// `reg` (one or two cells, as `/cpus` `#address-cells` says). Nodes whose `status` is
/// neither absent nor `"okay"` are skipped.
pub fn dt_cpus(blob: &[u8]) -> Vec<Cpu> {
    let mut cpus: Vec<Cpu> = Vec::new();
    let Ok(tree) = fdt::Fdt::new(blob) else {
        return cpus;
    };
    let Some(parent) = tree.find_node("/cpus") else {
        return cpus;
    };
    let cells = parent
        .property("#address-cells")
        .and_then(|p| p.as_usize())
        .unwrap_or(1);
    for node in parent.children() {
        if node.name.split('@').next() != Some("cpu") {
            continue;
        }
        if let Some(kind) = node.property("device_type").and_then(|p| p.as_str())
            && kind != "cpu"
        {
            continue;
        }
        if let Some(status) = node.property("status").and_then(|p| p.as_str())
            && status != "okay"
            && status != "ok"
        {
            continue;
        }
        let Some(reg) = node.property("reg") else {
            continue;
        };
        let value = reg.value;
        let id = match cells {
            1 if value.len() >= 4 => {
                u64::from(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            2 if value.len() >= 8 => u64::from_be_bytes([
                value[0], value[1], value[2], value[3], value[4], value[5], value[6], value[7],
            ]),
            _ => continue,
        };
        let id = id & MPIDR_AFFINITY_MASK;
        if !cpus.iter().any(|known| known.hardware_id == id) {
            cpus.push(Cpu {
                processor_id: 0,
                hardware_id: id,
            });
        }
    }
    cpus
}

/// The indices of the CPUs to list, in firmware order: the boot CPU and those `started`
/// says reached their parking loop. Allocates nothing (it runs after ExitBootServices).
pub fn listed<'a>(
    cpus: &'a [Cpu],
    bsp: u64,
    started: impl Fn(usize) -> bool + 'a,
) -> impl Iterator<Item = usize> + 'a {
    (0..cpus.len()).filter(move |&index| cpus[index].hardware_id == bsp || started(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_protocol() {
        assert_eq!(size_of::<MpInfoX86_64>(), 32);
        assert_eq!(offset_of!(MpInfoX86_64, lapic_id), 4);
        assert_eq!(offset_of!(MpInfoX86_64, reserved), STACK_OFFSET_X86_64);
        assert_eq!(offset_of!(MpInfoX86_64, goto_address), GOTO_OFFSET_X86_64);
        assert_eq!(offset_of!(MpInfoX86_64, extra_argument), 24);
        assert_eq!(size_of::<MpInfoAarch64>(), 40);
        assert_eq!(offset_of!(MpInfoAarch64, mpidr), 8);
        assert_eq!(offset_of!(MpInfoAarch64, reserved), STACK_OFFSET_AARCH64);
        assert_eq!(offset_of!(MpInfoAarch64, goto_address), GOTO_OFFSET_AARCH64);
        assert_eq!(offset_of!(MpInfoAarch64, extra_argument), 32);
        assert_eq!(size_of::<MpResponseX86_64>(), 32);
        assert_eq!(offset_of!(MpResponseX86_64, flags), 8);
        assert_eq!(offset_of!(MpResponseX86_64, bsp_lapic_id), 12);
        assert_eq!(offset_of!(MpResponseX86_64, cpu_count), 16);
        assert_eq!(offset_of!(MpResponseX86_64, cpus), 24);
        assert_eq!(size_of::<MpResponseAarch64>(), 40);
        assert_eq!(offset_of!(MpResponseAarch64, bsp_mpidr), 16);
        assert_eq!(offset_of!(MpResponseAarch64, cpu_count), 24);
        assert_eq!(offset_of!(MpResponseAarch64, cpus), 32);
    }

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut table = vec![0u8; 44];
        table[..4].copy_from_slice(b"APIC");
        for entry in entries {
            table.extend_from_slice(entry);
        }
        let length = table.len() as u32;
        table[4..8].copy_from_slice(&length.to_le_bytes());
        table
    }

    #[test]
    fn madt_lists_usable_local_apics_in_order() {
        let table = madt(&[
            &[0, 8, 0, 0, 1, 0, 0, 0],                    // uid 0, apic 0, enabled
            &[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0], // I/O APIC
            &[0, 8, 1, 2, 0, 0, 0, 0],                    // disabled, not online-capable
            &[0, 8, 2, 4, 2, 0, 0, 0],                    // online-capable
            &[9, 16, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0], // x2APIC repeat of apic 4
            &[9, 16, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0], // x2APIC apic 6, uid 7
            &[9, 16, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0], // apic 256: not in xAPIC mode
        ]);
        assert_eq!(
            madt_cpus(&table),
            [
                Cpu {
                    processor_id: 0,
                    hardware_id: 0
                },
                Cpu {
                    processor_id: 2,
                    hardware_id: 4
                },
                Cpu {
                    processor_id: 7,
                    hardware_id: 6
                },
            ]
        );
        // A truncated entry ends the walk instead of reading past the table.
        let mut short = madt(&[&[0, 8, 0, 0, 1, 0, 0, 0]]);
        short.extend_from_slice(&[0, 8, 1]);
        assert_eq!(madt_cpus(&short).len(), 1);
    }

    /// A flattened device tree built from (depth change, name, properties) steps.
    struct Tree {
        structure: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Tree {
        fn new() -> Tree {
            Tree {
                structure: Vec::new(),
                strings: Vec::new(),
            }
        }
        fn word(&mut self, value: u32) {
            self.structure.extend_from_slice(&value.to_be_bytes());
        }
        fn pad(&mut self) {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
        }
        fn begin(&mut self, name: &str) -> &mut Tree {
            self.word(1);
            self.structure.extend_from_slice(name.as_bytes());
            self.structure.push(0);
            self.pad();
            self
        }
        fn end(&mut self) -> &mut Tree {
            self.word(2);
            self
        }
        fn property(&mut self, name: &str, value: &[u8]) -> &mut Tree {
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.word(3);
            self.word(value.len() as u32);
            self.word(offset);
            self.structure.extend_from_slice(value);
            self.pad();
            self
        }
        fn blob(&mut self) -> Vec<u8> {
            self.word(9);
            let structure_at = 40 + 16;
            let strings_at = structure_at + self.structure.len() as u32;
            let total = strings_at + self.strings.len() as u32;
            let mut blob = Vec::new();
            for value in [
                0xd00d_feed,
                total,
                structure_at,
                strings_at,
                40,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structure.len() as u32,
            ] {
                blob.extend_from_slice(&u32::to_be_bytes(value));
            }
            blob.extend_from_slice(&[0; 16]);
            blob.extend_from_slice(&self.structure);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    #[test]
    fn device_tree_cpus_and_psci() {
        let blob = Tree::new()
            .begin("")
            .property("#address-cells", &2u32.to_be_bytes())
            .begin("psci")
            .property("compatible", b"arm,psci-1.0\0")
            .property("method", b"hvc\0")
            .end()
            .begin("cpus")
            .property("#address-cells", &1u32.to_be_bytes())
            .property("#size-cells", &0u32.to_be_bytes())
            .begin("cpu-map")
            .end()
            .begin("cpu@0")
            .property("device_type", b"cpu\0")
            .property("reg", &0u32.to_be_bytes())
            .end()
            .begin("cpu@1")
            .property("device_type", b"cpu\0")
            .property("reg", &1u32.to_be_bytes())
            .property("status", b"disabled\0")
            .end()
            .begin("cpu@100")
            .property("device_type", b"cpu\0")
            .property("reg", &0x100u32.to_be_bytes())
            .end()
            .begin("l2-cache")
            .property("device_type", b"cache\0")
            .end()
            .end()
            .end()
            .blob();
        let ids: Vec<u64> = dt_cpus(&blob).iter().map(|cpu| cpu.hardware_id).collect();
        assert_eq!(ids, [0, 0x100]);
        assert!(dt_cpus(&blob).iter().all(|cpu| cpu.processor_id == 0));
        assert_eq!(psci_conduit(&blob), Some(Conduit::Hvc));

        let two_cells = Tree::new()
            .begin("")
            .begin("psci")
            .property("method", b"smc\0")
            .end()
            .begin("cpus")
            .property("#address-cells", &2u32.to_be_bytes())
            .begin("cpu@1,0")
            .property("reg", &0x1_0000_0000u64.to_be_bytes())
            .end()
            .end()
            .end()
            .blob();
        assert_eq!(dt_cpus(&two_cells)[0].hardware_id, 0x1_0000_0000);
        assert_eq!(psci_conduit(&two_cells), Some(Conduit::Smc));
        assert!(dt_cpus(b"not a tree").is_empty());
    }

    #[test]
    fn listed_keeps_firmware_order_and_the_boot_cpu() {
        let cpus: Vec<Cpu> = [3u64, 0, 1, 2]
            .iter()
            .map(|&id| Cpu {
                processor_id: 0,
                hardware_id: id,
            })
            .collect();
        assert_eq!(listed(&cpus, 0, |_| true).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(
            listed(&cpus, 0, |index| index == 3).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(listed(&cpus, 0, |_| false).collect::<Vec<_>>(), [1]);
    }
}
