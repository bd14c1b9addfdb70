//! The kernel ELF: checks, the physically contiguous layout of its `PT_LOAD` segments, and
//! the relative relocations of a position-independent kernel.
//!
//! The protocol loads the kernel "physically contiguous, with a single uniform offset"
//! between virtual and physical addresses. So the loader lays the whole image out as one
//! block spanning the page-aligned range from the lowest segment start to the highest
//! segment end, copies each segment to its place in that block and zeroes the rest.
//! Refused: anything that is not a little-endian ELF64 executable (`ET_EXEC` or `ET_DYN`)
//! for the loader's machine, segments that overlap or reach outside the file, and a
//! non-relocatable kernel below `0xffffffff80000000`.
//!
//! Why the reading is hand-written rather than the `elf` or `xmas-elf` crate: what this
//! module does beyond decoding the ELF64 header, the program headers and the dynamic
//! section (which those crates would do) is the part no crate does — the contiguous
//! layout, the overlap and bounds checks against the file, the slide choice and applying
//! `R_*_RELATIVE` relocations into the laid-out image — and its host tests pin that
//! behaviour byte for byte. Moving only the decoding onto a crate is a possible later
//! step; it would not remove the checks.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::protocol::KERNEL_MIN_VIRTUAL;
use crate::{PAGE_SIZE, align_down, align_up};

/// The instruction set a kernel must be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    X86_64,
    Aarch64,
}

impl Machine {
    fn elf_code(self) -> u16 {
        match self {
            Machine::X86_64 => 62,
            Machine::Aarch64 => 183,
        }
    }

    fn relative_relocation(self) -> u32 {
        match self {
            Machine::X86_64 => 8,     // R_X86_64_RELATIVE
            Machine::Aarch64 => 1027, // R_AARCH64_RELATIVE
        }
    }

    fn none_relocation(self, kind: u32) -> bool {
        match self {
            Machine::X86_64 => kind == 0,
            Machine::Aarch64 => kind == 0 || kind == 256,
        }
    }
}

/// Segment permission bits (`p_flags`).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_REL: u64 = 17;
const DT_RELSZ: u64 = 18;
const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;
const DT_RELRENT: u64 = 37;

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// A range of pages of the image and the permissions its mapping gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRange {
    /// Linked (unslid) virtual start, page-aligned.
    pub start: u64,
    /// Linked virtual end, page-aligned.
    pub end: u64,
    pub writable: bool,
    pub executable: bool,
}

/// A checked kernel executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// `ET_DYN`: may be (and, below the kernel area, must be) slid.
    pub relocatable: bool,
    /// Linked entry point.
    pub entry: u64,
    /// `PT_LOAD` segments with a non-zero size, sorted by address.
    pub segments: Vec<Segment>,
    /// Page-aligned linked start of the image.
    pub image_start: u64,
    /// Page-aligned linked end of the image.
    pub image_end: u64,
    /// The largest segment alignment (at least a page); a slide keeps it.
    pub alignment: u64,
    /// `PT_DYNAMIC` (linked address, size) of a relocatable kernel.
    pub dynamic: Option<(u64, u64)>,
}

/// Why a kernel was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfError(pub String);

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, ElfError> {
    Err(ElfError(message.into()))
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Check `file` and describe its layout.
pub fn parse(file: &[u8], machine: Machine) -> Result<Executable, ElfError> {
    let header = file
        .get(..64)
        .ok_or_else(|| ElfError("file too short for an ELF header".into()))?;
    if header[..4] != *b"\x7fELF" {
        return fail("not an ELF file (bad magic)");
    }
    if header[4] != 2 {
        return fail(format!("ELF class {} is not ELF64", header[4]));
    }
    if header[5] != 1 {
        return fail("ELF file is not little-endian");
    }
    if header[6] != 1 {
        return fail(format!("unknown ELF version {}", header[6]));
    }
    let field16 = |at| read_u16(header, at).unwrap_or(0);
    let kind = field16(16);
    let relocatable = match kind {
        ET_EXEC => false,
        ET_DYN => true,
        other => {
            return fail(format!(
                "ELF type {other} is neither an executable (2) nor a shared object (3)"
            ));
        }
    };
    let found = field16(18);
    if found != machine.elf_code() {
        return fail(format!(
            "ELF machine {found} is not {machine:?} ({})",
            machine.elf_code()
        ));
    }
    let entry = read_u64(header, 24).unwrap_or(0);
    let phoff = read_u64(header, 32).unwrap_or(0);
    let phentsize = u64::from(field16(54));
    let phnum = u64::from(field16(56));
    if phnum == 0 {
        return fail("no program headers");
    }
    if phentsize < 56 {
        return fail(format!("program header size {phentsize} is below 56"));
    }
    let table_end = phnum
        .checked_mul(phentsize)
        .and_then(|size| size.checked_add(phoff));
    if table_end.is_none_or(|end| end > file.len() as u64) {
        return fail("program header table reaches past the end of the file");
    }

    let mut segments = Vec::new();
    let mut dynamic = None;
    let mut alignment = PAGE_SIZE;
    for index in 0..phnum {
        let at = (phoff + index * phentsize) as usize;
        let word = |offset: usize| read_u64(file, at + offset).unwrap_or(0);
        let p_type = read_u32(file, at).unwrap_or(0);
        let flags = read_u32(file, at + 4).unwrap_or(0);
        let segment = Segment {
            offset: word(8),
            vaddr: word(16),
            filesz: word(32),
            memsz: word(40),
            flags,
        };
        match p_type {
            PT_LOAD => {
                if segment.filesz > segment.memsz {
                    return fail(format!(
                        "segment {index}: file size {:#x} exceeds memory size {:#x}",
                        segment.filesz, segment.memsz
                    ));
                }
                if segment
                    .offset
                    .checked_add(segment.filesz)
                    .is_none_or(|end| end > file.len() as u64)
                {
                    return fail(format!(
                        "segment {index}: contents reach past the end of the file"
                    ));
                }
                if segment.vaddr.checked_add(segment.memsz).is_none() {
                    return fail(format!("segment {index}: wraps around the address space"));
                }
                let align = word(48);
                if align.is_power_of_two() && align > alignment {
                    alignment = align.min(1 << 30);
                }
                if segment.memsz > 0 {
                    segments.push(segment);
                }
            }
            PT_DYNAMIC => dynamic = Some((segment.vaddr, segment.memsz)),
            _ => {}
        }
    }
    if segments.is_empty() {
        return fail("no loadable (PT_LOAD) segments");
    }
    segments.sort_by_key(|segment| segment.vaddr);
    for pair in segments.windows(2) {
        if pair[0].vaddr + pair[0].memsz > pair[1].vaddr {
            return fail(format!(
                "segments at {:#x} (size {:#x}) and {:#x} overlap",
                pair[0].vaddr, pair[0].memsz, pair[1].vaddr
            ));
        }
    }
    let image_start = align_down(segments[0].vaddr, PAGE_SIZE);
    let last = segments[segments.len() - 1];
    let image_end = align_up(last.vaddr + last.memsz, PAGE_SIZE)
        .ok_or_else(|| ElfError("image reaches the top of the address space".into()))?;
    if !relocatable && image_start < KERNEL_MIN_VIRTUAL {
        return fail(format!(
            "kernel is linked at {image_start:#x}, below {KERNEL_MIN_VIRTUAL:#x} (the protocol's lowest kernel address)"
        ));
    }
    if entry < image_start || entry >= image_end {
        return fail(format!(
            "entry point {entry:#x} lies outside the loaded image {image_start:#x}..{image_end:#x}"
        ));
    }
    if !relocatable {
        dynamic = None;
    }
    Ok(Executable {
        relocatable,
        entry,
        segments,
        image_start,
        image_end,
        alignment,
        dynamic,
    })
}

impl Executable {
    /// Bytes of the contiguous block the image needs.
    pub fn image_size(&self) -> u64 {
        self.image_end - self.image_start
    }

    /// The slide to apply: 0 for a fixed kernel; for a relocatable one, the smallest slide
    /// that lifts it to the kernel area, plus `random` (already reduced to any value; it is
    /// scaled to whole alignment units within the 1 GiB above the area) when KASLR is on.
    pub fn choose_slide(&self, random: Option<u64>) -> u64 {
        if !self.relocatable {
            return 0;
        }
        let base = if self.image_start < KERNEL_MIN_VIRTUAL {
            align_up(KERNEL_MIN_VIRTUAL - self.image_start, self.alignment).unwrap_or(0)
        } else {
            0
        };
        let Some(random) = random else { return base };
        // Keep the slid image inside [KERNEL_MIN_VIRTUAL, KERNEL_MIN_VIRTUAL + 1 GiB).
        const WINDOW_END: u64 = KERNEL_MIN_VIRTUAL + (1 << 30);
        let slid_end = self.image_end.wrapping_add(base);
        if slid_end >= WINDOW_END || slid_end < self.image_end.min(KERNEL_MIN_VIRTUAL) {
            return base;
        }
        let room = (WINDOW_END - slid_end) / self.alignment;
        if room == 0 {
            return base;
        }
        base + (random % (room + 1)) * self.alignment
    }

    /// Copy the segments into `image` (the block for `image_start..image_end`), zeroing the
    /// rest.
    pub fn load(&self, file: &[u8], image: &mut [u8]) {
        assert_eq!(
            image.len() as u64,
            self.image_size(),
            "image block has the wrong size"
        );
        image.fill(0);
        for segment in &self.segments {
            let at = (segment.vaddr - self.image_start) as usize;
            let source = &file[segment.offset as usize..(segment.offset + segment.filesz) as usize];
            image[at..at + source.len()].copy_from_slice(source);
        }
    }

    /// The page ranges to map, in address order. Pages two segments share get the union
    /// of their permissions.
    pub fn page_ranges(&self) -> Vec<PageRange> {
        let mut ranges: Vec<PageRange> = Vec::new();
        for segment in &self.segments {
            let mut start = align_down(segment.vaddr, PAGE_SIZE);
            let end = align_up(segment.vaddr + segment.memsz, PAGE_SIZE).unwrap_or(self.image_end);
            let writable = segment.flags & PF_W != 0;
            let executable = segment.flags & PF_X != 0;
            if let Some(last) = ranges.last_mut()
                && last.end > start
            {
                let shared_end = last.end.min(end);
                let shared = PageRange {
                    start,
                    end: shared_end,
                    writable: last.writable || writable,
                    executable: last.executable || executable,
                };
                last.end = start;
                if last.start == last.end {
                    ranges.pop();
                }
                ranges.push(shared);
                start = shared_end;
            }
            if start < end {
                ranges.push(PageRange {
                    start,
                    end,
                    writable,
                    executable,
                });
            }
        }
        ranges
    }

    /// Apply the relative relocations of a relocatable kernel loaded in `image` and slid by
    /// `slide`. Returns how many were applied. Relocations that need a symbol are refused.
    pub fn relocate(
        &self,
        image: &mut [u8],
        slide: u64,
        machine: Machine,
    ) -> Result<usize, ElfError> {
        let Some((dynamic_at, dynamic_size)) = self.dynamic else {
            return Ok(0);
        };
        let start = self.image_start;
        let image_len = image.len() as u64;
        let offset_of = |address: u64, length: u64| -> Result<usize, ElfError> {
            let offset = address.checked_sub(start).filter(|offset| {
                offset
                    .checked_add(length)
                    .is_some_and(|end| end <= image_len)
            });
            offset.map(|offset| offset as usize).ok_or_else(|| {
                ElfError(format!(
                    "relocation data at {address:#x} (+{length:#x}) lies outside the image"
                ))
            })
        };
        let dynamic = offset_of(dynamic_at, dynamic_size)?;
        let (mut rela, mut rela_size, mut rela_entry) = (None, 0, 24);
        let (mut relr, mut relr_size, mut relr_entry) = (None, 0, 8);
        let mut index = 0;
        while index + 16 <= dynamic_size as usize {
            let tag = read_u64(image, dynamic + index).unwrap_or(DT_NULL);
            let value = read_u64(image, dynamic + index + 8).unwrap_or(0);
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(value),
                DT_RELASZ => rela_size = value,
                DT_RELAENT => rela_entry = value,
                DT_RELR => relr = Some(value),
                DT_RELRSZ => relr_size = value,
                DT_RELRENT => relr_entry = value,
                DT_REL | DT_RELSZ if value != 0 => {
                    return fail(
                        "the kernel uses REL relocations; only RELA and RELR are supported",
                    );
                }
                _ => {}
            }
            index += 16;
        }
        let mut applied = 0;
        if let Some(table) = rela {
            if rela_entry < 24 {
                return fail(format!("RELA entry size {rela_entry} is below 24"));
            }
            let table = offset_of(table, rela_size)?;
            for entry in 0..(rela_size / rela_entry) as usize {
                let at = table + entry * rela_entry as usize;
                let target = read_u64(image, at).unwrap_or(0);
                let info = read_u64(image, at + 8).unwrap_or(0);
                let addend = read_u64(image, at + 16).unwrap_or(0);
                let kind = info as u32;
                if machine.none_relocation(kind) {
                    continue;
                }
                if kind != machine.relative_relocation() || info >> 32 != 0 {
                    return fail(format!(
                        "relocation type {kind} (symbol {}) at {target:#x} is not a relative relocation",
                        info >> 32
                    ));
                }
                let place = offset_of(target, 8)?;
                image[place..place + 8].copy_from_slice(&addend.wrapping_add(slide).to_le_bytes());
                applied += 1;
            }
        }
        if let Some(table) = relr {
            if relr_entry != 8 {
                return fail(format!("RELR entry size {relr_entry} is not 8"));
            }
            let table = offset_of(table, relr_size)?;
            let mut next = 0u64;
            for entry in 0..(relr_size / 8) as usize {
                let word = read_u64(image, table + entry * 8).unwrap_or(0);
                let mut places = [0u64; 63];
                let mut count = 0;
                if word & 1 == 0 {
                    places[0] = word;
                    count = 1;
                    next = word + 8;
                } else {
                    for bit in 1..64 {
                        if word >> bit & 1 != 0 {
                            places[count] = next + (bit - 1) * 8;
                            count += 1;
                        }
                    }
                    next += 63 * 8;
                }
                for &address in &places[..count] {
                    let place = offset_of(address, 8)?;
                    let value = read_u64(image, place).unwrap_or(0).wrapping_add(slide);
                    image[place..place + 8].copy_from_slice(&value.to_le_bytes());
                    applied += 1;
                }
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// A minimal ELF64 file: `segments` are (vaddr, memsz, file bytes, flags).
    pub(crate) fn build(
        kind: u16,
        machine: u16,
        entry: u64,
        segments: &[(u64, u64, &[u8], u32)],
    ) -> Vec<u8> {
        build_with_dynamic(kind, machine, entry, segments, None)
    }

    pub(crate) fn build_with_dynamic(
        kind: u16,
        machine: u16,
        entry: u64,
        segments: &[(u64, u64, &[u8], u32)],
        dynamic: Option<(u64, u64)>,
    ) -> Vec<u8> {
        let phnum = segments.len() + usize::from(dynamic.is_some());
        let mut file = vec![0u8; 64 + 56 * phnum];
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2;
        file[5] = 1;
        file[6] = 1;
        file[16..18].copy_from_slice(&kind.to_le_bytes());
        file[18..20].copy_from_slice(&machine.to_le_bytes());
        file[20..24].copy_from_slice(&1u32.to_le_bytes());
        file[24..32].copy_from_slice(&entry.to_le_bytes());
        file[32..40].copy_from_slice(&64u64.to_le_bytes());
        file[52..54].copy_from_slice(&64u16.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        for (index, (vaddr, memsz, bytes, flags)) in segments.iter().enumerate() {
            let offset = file.len() as u64;
            file.extend_from_slice(bytes);
            let at = 64 + 56 * index;
            file[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            file[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 32..at + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            file[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
            file[at + 48..at + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        if let Some((vaddr, size)) = dynamic {
            let at = 64 + 56 * segments.len();
            file[at..at + 4].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
            file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        }
        file
    }

    const K: u64 = KERNEL_MIN_VIRTUAL;
    const R: u32 = 4;

    #[test]
    fn lays_out_a_static_kernel() {
        let file = build(
            ET_EXEC,
            62,
            K + 0x10,
            &[
                (K, 0x1800, &[0x90; 0x20], R | PF_X),
                (K + 0x2000, 0x1000, b"data", R),
                (K + 0x3000, 0x3000, b"rw", R | PF_W),
            ],
        );
        let exe = parse(&file, Machine::X86_64).unwrap();
        assert!(!exe.relocatable);
        assert_eq!((exe.image_start, exe.image_end), (K, K + 0x6000));
        assert_eq!(exe.choose_slide(Some(12345)), 0);
        let mut image = vec![0xffu8; exe.image_size() as usize];
        exe.load(&file, &mut image);
        assert_eq!(&image[..0x20], &[0x90; 0x20]);
        assert_eq!(&image[0x20..0x2000], &[0; 0x1fe0][..]);
        assert_eq!(&image[0x2000..0x2004], b"data");
        assert_eq!(&image[0x3000..0x3002], b"rw");
        assert!(image[0x3002..].iter().all(|&b| b == 0));
        let ranges = exe.page_ranges();
        assert_eq!(ranges.len(), 3);
        assert_eq!(
            ranges[0],
            PageRange {
                start: K,
                end: K + 0x2000,
                writable: false,
                executable: true
            }
        );
        assert_eq!(
            ranges[2],
            PageRange {
                start: K + 0x3000,
                end: K + 0x6000,
                writable: true,
                executable: false
            }
        );
    }

    #[test]
    fn shared_pages_get_the_union_of_permissions() {
        let file = build(
            ET_EXEC,
            62,
            K,
            &[
                (K, 0x1100, b"t", R | PF_X),
                (K + 0x1100, 0x1000, b"d", R | PF_W),
            ],
        );
        let ranges = parse(&file, Machine::X86_64).unwrap().page_ranges();
        assert_eq!(
            ranges,
            [
                PageRange {
                    start: K,
                    end: K + 0x1000,
                    writable: false,
                    executable: true
                },
                PageRange {
                    start: K + 0x1000,
                    end: K + 0x2000,
                    writable: true,
                    executable: true
                },
                PageRange {
                    start: K + 0x2000,
                    end: K + 0x3000,
                    writable: true,
                    executable: false
                },
            ]
        );
    }

    fn refused(file: &[u8], machine: Machine, needle: &str) {
        let error = parse(file, machine).expect_err("should be refused");
        assert!(
            error.0.contains(needle),
            "`{}` should mention `{needle}`",
            error.0
        );
    }

    #[test]
    fn refuses_bad_kernels() {
        let good = build(ET_EXEC, 62, K, &[(K, 0x1000, b"x", R | PF_X)]);
        refused(&good, Machine::Aarch64, "machine 62");
        refused(&good[..40], Machine::X86_64, "too short");
        let mut bad = good.clone();
        bad[0] = 0;
        refused(&bad, Machine::X86_64, "magic");
        let mut bad = good.clone();
        bad[4] = 1;
        refused(&bad, Machine::X86_64, "ELF64");
        let mut bad = good.clone();
        bad[5] = 2;
        refused(&bad, Machine::X86_64, "little-endian");
        refused(
            &build(1, 62, K, &[(K, 0x1000, b"x", R)]),
            Machine::X86_64,
            "ELF type 1",
        );
        refused(
            &build(ET_EXEC, 62, 0x20_0000, &[(0x20_0000, 0x1000, b"x", R)]),
            Machine::X86_64,
            "below",
        );
        refused(
            &build(
                ET_EXEC,
                62,
                K,
                &[(K, 0x2000, b"x", R), (K + 0x1000, 0x1000, b"y", R)],
            ),
            Machine::X86_64,
            "overlap",
        );
        refused(
            &build(ET_EXEC, 62, K, &[(K, 0x1, b"xy", R)]),
            Machine::X86_64,
            "exceeds memory size",
        );
        refused(
            &build(ET_EXEC, 62, K + 0x5000, &[(K, 0x1000, b"x", R)]),
            Machine::X86_64,
            "entry point",
        );
        refused(
            &build(ET_EXEC, 62, K, &[]),
            Machine::X86_64,
            "no program headers",
        );
        refused(
            &build(ET_EXEC, 62, K, &[(K, 0, b"", R)]),
            Machine::X86_64,
            "no loadable",
        );
        let mut truncated = build(ET_EXEC, 183, K, &[(K, 0x1000, b"abcd", R)]);
        truncated.truncate(truncated.len() - 2);
        refused(&truncated, Machine::Aarch64, "past the end of the file");
    }

    #[test]
    fn slides_and_relocates_a_position_independent_kernel() {
        // Image linked at 0: code page, then a data page holding the dynamic section, a
        // RELA table with one relative relocation, a RELR table, and the relocated words.
        let mut data = vec![0u8; 0x200];
        let put = |data: &mut Vec<u8>, at: usize, value: u64| {
            data[at..at + 8].copy_from_slice(&value.to_le_bytes())
        };
        // dynamic at 0x1000: RELA=0x1080, RELASZ=24, RELAENT=24, RELR=0x10a0, RELRSZ=16, RELRENT=8, NULL
        let tags = [
            (DT_RELA, 0x1080),
            (DT_RELASZ, 24),
            (DT_RELAENT, 24),
            (DT_RELR, 0x10a0),
            (DT_RELRSZ, 16),
            (DT_RELRENT, 8),
            (DT_NULL, 0),
        ];
        for (index, (tag, value)) in tags.iter().enumerate() {
            put(&mut data, index * 16, *tag);
            put(&mut data, index * 16 + 8, *value);
        }
        put(&mut data, 0x80, 0x1100); // r_offset
        put(&mut data, 0x88, 1027); // R_AARCH64_RELATIVE
        put(&mut data, 0x90, 0x40); // addend
        put(&mut data, 0xa0, 0x1108); // RELR address entry: 0x1108
        put(&mut data, 0xa8, 0b101); // bitmap: bit 2 -> 0x1110 + 8 = 0x1118
        put(&mut data, 0x108, 0x10); // value at 0x1108
        put(&mut data, 0x118, 0x20); // value at 0x1118
        let file = build_with_dynamic(
            ET_DYN,
            183,
            0x10,
            &[
                (0, 0x1000, b"code", R | PF_X),
                (0x1000, 0x1000, &data, R | PF_W),
            ],
            Some((0x1000, 0x70)),
        );
        let exe = parse(&file, Machine::Aarch64).unwrap();
        assert!(exe.relocatable);
        let slide = exe.choose_slide(None);
        assert_eq!(slide, K);
        let random = exe.choose_slide(Some(7));
        assert!((K..K + (1 << 30)).contains(&random) && random.is_multiple_of(0x1000));
        let mut image = vec![0u8; exe.image_size() as usize];
        exe.load(&file, &mut image);
        assert_eq!(
            exe.relocate(&mut image, slide, Machine::Aarch64).unwrap(),
            3
        );
        assert_eq!(read_u64(&image, 0x1100), Some(K + 0x40));
        assert_eq!(read_u64(&image, 0x1108), Some(K + 0x10));
        assert_eq!(read_u64(&image, 0x1118), Some(K + 0x20));
        assert_eq!(read_u64(&image, 0x1110), Some(0));
        // A symbolic relocation is refused.
        image[0x1088..0x1090].copy_from_slice(&((5u64 << 32) | 257).to_le_bytes());
        exe.load(&file, &mut image);
        image[0x1088..0x1090].copy_from_slice(&((5u64 << 32) | 257).to_le_bytes());
        assert!(
            exe.relocate(&mut image, slide, Machine::Aarch64)
                .unwrap_err()
                .0
                .contains("type 257")
        );
    }
}
