//! Register values for the machine state the protocol fixes at kernel entry.

/// x86_64: the GDT the protocol lists, from offset 0: null, 16-bit code and data, 32-bit
/// code and data (base 0, 4 GiB limit), 64-bit code and data. Kernel selectors: code
/// `0x28`, data `0x30`.
pub mod x86_64 {
    pub const GDT: [u64; 7] = [
        0,
        0x0000_9a00_0000_ffff, // 16-bit code: present, ring 0, execute/read, limit 0xffff
        0x0000_9200_0000_ffff, // 16-bit data: present, ring 0, read/write, limit 0xffff
        0x00cf_9a00_0000_ffff, // 32-bit code: 4 KiB granularity, D = 1, limit 0xfffff
        0x00cf_9200_0000_ffff, // 32-bit data: 4 KiB granularity, B = 1, limit 0xfffff
        0x0020_9a00_0000_0000, // 64-bit code: L = 1
        0x0000_9200_0000_0000, // 64-bit data
    ];
    pub const CODE_SELECTOR: u16 = 0x28;
    pub const DATA_SELECTOR: u16 = 0x30;

    /// IA32_PAT in the protocol's layout: PAT0 WB, PAT1 WT, PAT2 UC-, PAT3 UC, PAT4 WP,
    /// PAT5 WC; PAT6 and PAT7 (unspecified) keep their power-on values UC- and UC.
    pub const PAT: u64 = u64::from_le_bytes([0x06, 0x04, 0x07, 0x00, 0x05, 0x01, 0x07, 0x00]);
    pub const PAT_MSR: u32 = 0x277;
    pub const EFER_MSR: u32 = 0xc000_0080;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const CR4_PCIDE: u64 = 1 << 17;
}

/// AArch64 EL1 translation and system control values.
pub mod aarch64 {
    /// MAIR_EL1: Attr0 = 0xff (normal, inner/outer write-back non-transient, read and
    /// write allocate), Attr1 = 0x44 (normal non-cacheable) for the framebuffer. The same
    /// layout base revision 4 makes mandatory.
    pub const MAIR: u64 = 0x44ff;

    /// TCR_EL1 for 48-bit TTBR0 and TTBR1 halves with 4 KiB granules: T0SZ = T1SZ = 16,
    /// walks write-back read/write-allocate cacheable, outer shareable (what the protocol
    /// states for base revisions below 6), IPS from `ID_AA64MMFR0_EL1.PARange` (capped at
    /// 48 bits, the most a 4 KiB granule without LPA can output).
    pub fn tcr(pa_range: u64) -> u64 {
        let ips = (pa_range & 0xf).min(0b101);
        let t0sz = 16;
        let t1sz = 16 << 16;
        let irgn0 = 0b01 << 8;
        let orgn0 = 0b01 << 10;
        let sh0 = 0b10 << 12;
        let tg0_4k = 0b00 << 14;
        let irgn1 = 0b01 << 24;
        let orgn1 = 0b01 << 26;
        let sh1 = 0b10 << 28;
        let tg1_4k = 0b10 << 30;
        t0sz | irgn0 | orgn0 | sh0 | tg0_4k | t1sz | irgn1 | orgn1 | sh1 | tg1_4k | ips << 32
    }

    /// SCTLR_EL1: M (MMU), C (data cache), SA, SA0 (stack alignment checks), I
    /// (instruction cache) on; A (alignment checks) off; little-endian; every other field
    /// at its reserved value, i.e. RES1 bits 29, 28, 23, 22, 20, 11 and the SED/ITD bits
    /// 8 and 7 set.
    pub const SCTLR: u64 = (1 << 29)
        | (1 << 28)
        | (1 << 23)
        | (1 << 22)
        | (1 << 20)
        | (1 << 12) // I
        | (1 << 11)
        | (1 << 8)
        | (1 << 7)
        | (1 << 4) // SA0
        | (1 << 3) // SA
        | (1 << 2) // C
        | 1; // M

    /// SPSR value for entering the kernel: EL1t (EL1 using SP_EL0), AArch64, with D, A, I
    /// and F masked.
    pub const SPSR_EL1T_MASKED: u64 = 0b1111 << 6 | 0b0100;

    /// HCR_EL2 when dropping from EL2 to EL1: EL1 is AArch64 (RW), set/way
    /// invalidation is turned into clean-and-invalidate (SWIO); nothing trapped or virtualised.
    pub const HCR_EL2_EL1_HOST: u64 = (1 << 31) | (1 << 1);
    /// HCR_EL2.E2H: the firmware runs with VHE.
    pub const HCR_EL2_E2H: u64 = 1 << 34;
    /// CNTHCTL_EL2: EL1 may use the physical counter and timer.
    pub const CNTHCTL_EL2_EL1_ACCESS: u64 = 0b11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pat_layout() {
        // WB, WT, UC-, UC, WP, WC, then the power-on UC-, UC.
        assert_eq!(x86_64::PAT.to_le_bytes(), [6, 4, 7, 0, 5, 1, 7, 0]);
    }

    #[test]
    fn gdt_descriptors() {
        // 64-bit code: L set, D clear, present, DPL 0, code.
        let code = x86_64::GDT[5];
        assert_eq!((code >> 53) & 1, 1);
        assert_eq!((code >> 54) & 1, 0);
        assert_eq!((code >> 47) & 1, 1);
        assert_eq!((code >> 43) & 1, 1);
        assert_eq!(usize::from(x86_64::CODE_SELECTOR) / 8, 5);
        assert_eq!(usize::from(x86_64::DATA_SELECTOR) / 8, 6);
    }

    #[test]
    fn aarch64_tcr_fields() {
        let tcr = aarch64::tcr(0b0010); // 40-bit PA
        assert_eq!(tcr & 0x3f, 16);
        assert_eq!((tcr >> 16) & 0x3f, 16);
        assert_eq!((tcr >> 30) & 0b11, 0b10, "TG1 = 4 KiB");
        assert_eq!((tcr >> 14) & 0b11, 0, "TG0 = 4 KiB");
        assert_eq!((tcr >> 32) & 0b111, 0b010);
        assert_eq!((tcr >> 7) & 1, 0, "EPD0 clear");
        assert_eq!((tcr >> 23) & 1, 0, "EPD1 clear");
        assert_eq!(
            (aarch64::tcr(0b0110) >> 32) & 0b111,
            0b101,
            "capped at 48 bits"
        );
        assert_eq!(aarch64::SCTLR & 0b11111, 0b11101);
        assert_eq!(aarch64::SPSR_EL1T_MASKED, 0x3c4);
    }
}
