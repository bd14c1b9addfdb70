//! Checked parsing of the ELF64 executables the kernel loads as user programs (boot
//! modules today). Pure: it reads a byte slice and returns what to map; the kernel does the
//! mapping.
//!
//! # What is checked (a malformed image is an [`ElfError`], never a panic)
//! - The header: ELF magic, 64-bit, little-endian, version 1, an executable (`ET_EXEC`)
//!   for the expected machine, a program-header table that lies inside the file with
//!   entries of the ELF64 size.
//! - Each `PT_LOAD` segment: file bytes inside the file, `filesz <= memsz`, the whole
//!   memory range inside the user range the caller gives (so never page 0 or a kernel
//!   address), no arithmetic wrap, never writable and executable at once (W^X), and no
//!   page shared with another segment (pages carry one set of permissions).
//! - The entry point lies inside an executable segment.
//!
//! Weak spot: at most [`MAX_SEGMENTS`] loadable segments; alignment fields are not used
//! (segments are placed at their virtual addresses, page by page).

use core::ops::Range;

/// Loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 8;
/// Program headers an image may have in all.
pub const MAX_PROGRAM_HEADERS: u16 = 64;

/// ELF `e_machine` values for the two architectures.
pub const MACHINE_X86_64: u16 = 62;
pub const MACHINE_AARCH64: u16 = 183;

const PAGE: u64 = 4096;
const HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its header, or a table or segment reaches past the end of the file.
    Truncated,
    /// Not ELF, not 64-bit little-endian version 1.
    NotElf64,
    /// Not an `ET_EXEC` for the expected machine.
    WrongType,
    /// Program headers of an unexpected size, or too many.
    BadProgramHeaders,
    /// `filesz > memsz`, an empty range, or arithmetic that wraps.
    BadSegment,
    /// A segment reaches outside the user range.
    OutsideUserRange,
    /// A segment is writable and executable.
    WriteAndExecute,
    /// Two segments share a page.
    Overlap,
    /// More than [`MAX_SEGMENTS`] loadable segments, or none.
    SegmentCount,
    /// The entry point is not inside an executable segment.
    BadEntry,
}

/// One loadable segment, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Where it starts in memory (any alignment; it is mapped page by page).
    pub virtual_address: u64,
    /// Bytes in memory: the file bytes, then zeros.
    pub memory_size: u64,
    /// Where its bytes start in the file.
    pub file_offset: u64,
    pub file_size: u64,
    pub writable: bool,
    pub executable: bool,
}

impl Segment {
    /// The pages the segment touches, as `[first page address, end)`.
    pub fn pages(&self) -> Range<u64> {
        let start = self.virtual_address & !(PAGE - 1);
        // why: checked at parse time not to wrap and to end inside the user range.
        let end = (self.virtual_address + self.memory_size).next_multiple_of(PAGE);
        start..end
    }

    /// The file bytes of the segment that land in the page at `page` (a page address
    /// inside [`Segment::pages`]), as `(offset into the page, range in the file)`.
    pub fn file_bytes_in_page(&self, page: u64) -> Option<(usize, Range<usize>)> {
        let file_end = self.virtual_address + self.file_size;
        let start = page.max(self.virtual_address);
        let end = (page + PAGE).min(file_end);
        if start >= end {
            return None;
        }
        let file_start = self.file_offset + (start - self.virtual_address);
        let length = end - start;
        Some((
            (start - page) as usize,
            file_start as usize..(file_start + length) as usize,
        ))
    }
}

/// A checked executable: its entry point and loadable segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl Image {
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Check `file` as an executable for `machine` whose segments must lie in `user`.
pub fn parse(file: &[u8], machine: u16, user: Range<u64>) -> Result<Image, ElfError> {
    if file.len() < HEADER_SIZE {
        return Err(ElfError::Truncated);
    }
    if file[..4] != *b"\x7fELF" || file[4] != 2 || file[5] != 1 || file[6] != 1 {
        return Err(ElfError::NotElf64);
    }
    let field = |value: Option<u64>| value.ok_or(ElfError::Truncated);
    let kind = read_u16(file, 16).ok_or(ElfError::Truncated)?;
    let file_machine = read_u16(file, 18).ok_or(ElfError::Truncated)?;
    if kind != 2 || file_machine != machine {
        return Err(ElfError::WrongType);
    }
    let entry = field(read_u64(file, 24))?;
    let table = field(read_u64(file, 32))?;
    let entry_size = read_u16(file, 54).ok_or(ElfError::Truncated)?;
    let count = read_u16(file, 56).ok_or(ElfError::Truncated)?;
    if usize::from(entry_size) != PROGRAM_HEADER_SIZE || count > MAX_PROGRAM_HEADERS {
        return Err(ElfError::BadProgramHeaders);
    }
    let table_end = u64::from(count)
        .checked_mul(PROGRAM_HEADER_SIZE as u64)
        .and_then(|size| table.checked_add(size))
        .ok_or(ElfError::Truncated)?;
    if table_end > file.len() as u64 {
        return Err(ElfError::Truncated);
    }
    let mut image = Image {
        entry,
        segments: [Segment::default(); MAX_SEGMENTS],
        count: 0,
    };
    for index in 0..usize::from(count) {
        let at = table as usize + index * PROGRAM_HEADER_SIZE;
        if read_u32(file, at) != Some(PT_LOAD) {
            continue;
        }
        let flags = read_u32(file, at + 4).ok_or(ElfError::Truncated)?;
        let segment = Segment {
            file_offset: field(read_u64(file, at + 8))?,
            virtual_address: field(read_u64(file, at + 16))?,
            file_size: field(read_u64(file, at + 32))?,
            memory_size: field(read_u64(file, at + 40))?,
            writable: flags & PF_W != 0,
            executable: flags & PF_X != 0,
        };
        if segment.memory_size == 0 {
            continue;
        }
        check_segment(&segment, file.len() as u64, &user)?;
        if image
            .segments()
            .iter()
            .any(|other| overlaps(other, &segment))
        {
            return Err(ElfError::Overlap);
        }
        if image.count == MAX_SEGMENTS {
            return Err(ElfError::SegmentCount);
        }
        image.segments[image.count] = segment;
        image.count += 1;
    }
    if image.count == 0 {
        return Err(ElfError::SegmentCount);
    }
    let entry_ok = image.segments().iter().any(|segment| {
        segment.executable
            && entry >= segment.virtual_address
            && entry - segment.virtual_address < segment.memory_size
    });
    if !entry_ok {
        return Err(ElfError::BadEntry);
    }
    Ok(image)
}

fn check_segment(segment: &Segment, file_length: u64, user: &Range<u64>) -> Result<(), ElfError> {
    if segment.file_size > segment.memory_size {
        return Err(ElfError::BadSegment);
    }
    let file_end = segment
        .file_offset
        .checked_add(segment.file_size)
        .ok_or(ElfError::Truncated)?;
    if file_end > file_length {
        return Err(ElfError::Truncated);
    }
    let end = segment
        .virtual_address
        .checked_add(segment.memory_size)
        .and_then(|end| end.checked_next_multiple_of(PAGE))
        .ok_or(ElfError::OutsideUserRange)?;
    let start = segment.virtual_address & !(PAGE - 1);
    if start < user.start || end > user.end {
        return Err(ElfError::OutsideUserRange);
    }
    if segment.writable && segment.executable {
        return Err(ElfError::WriteAndExecute);
    }
    Ok(())
}

fn overlaps(a: &Segment, b: &Segment) -> bool {
    let (a, b) = (a.pages(), b.pages());
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Range<u64> = 0x1000..0x8000_0000_0000;

    /// A minimal image: one header plus the given `(flags, offset, vaddr, filesz, memsz)`
    /// program headers, padded to `length` bytes.
    fn image(entry: u64, segments: &[(u32, u64, u64, u64, u64)], length: usize) -> Vec<u8> {
        let mut file = vec![0u8; length.max(HEADER_SIZE + segments.len() * 56)];
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2;
        file[5] = 1;
        file[6] = 1;
        file[16..18].copy_from_slice(&2u16.to_le_bytes());
        file[18..20].copy_from_slice(&MACHINE_X86_64.to_le_bytes());
        file[24..32].copy_from_slice(&entry.to_le_bytes());
        file[32..40].copy_from_slice(&64u64.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (index, &(flags, offset, vaddr, filesz, memsz)) in segments.iter().enumerate() {
            let at = 64 + index * 56;
            file[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            file[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            file[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        file
    }

    const RX: u32 = PF_X | 4;
    const RW: u32 = PF_W | 4;

    fn good() -> Vec<u8> {
        image(
            0x40_0010,
            &[
                (RX, 0x200, 0x40_0000, 0x100, 0x100),
                (RW, 0x300, 0x40_1000, 0x10, 0x2000),
            ],
            0x400,
        )
    }

    #[test]
    fn accepts_a_well_formed_image() {
        let parsed = parse(&good(), MACHINE_X86_64, USER).unwrap();
        assert_eq!(parsed.entry, 0x40_0010);
        assert_eq!(parsed.segments().len(), 2);
        let data = parsed.segments()[1];
        assert!(data.writable && !data.executable);
        assert_eq!(data.pages(), 0x40_1000..0x40_3000);
        assert_eq!(data.file_bytes_in_page(0x40_1000), Some((0, 0x300..0x310)));
        assert_eq!(data.file_bytes_in_page(0x40_2000), None);
    }

    #[test]
    fn file_bytes_split_across_pages() {
        let segment = Segment {
            virtual_address: 0x40_0ff0,
            memory_size: 0x20,
            file_offset: 0x100,
            file_size: 0x20,
            writable: false,
            executable: false,
        };
        assert_eq!(
            segment.file_bytes_in_page(0x40_0000),
            Some((0xff0, 0x100..0x110))
        );
        assert_eq!(
            segment.file_bytes_in_page(0x40_1000),
            Some((0, 0x110..0x120))
        );
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(
            parse(&[0; 10], MACHINE_X86_64, USER),
            Err(ElfError::Truncated)
        );
        let mut file = good();
        file[0] = 0;
        assert_eq!(parse(&file, MACHINE_X86_64, USER), Err(ElfError::NotElf64));
        assert_eq!(
            parse(&good(), MACHINE_AARCH64, USER),
            Err(ElfError::WrongType)
        );
        let mut file = good();
        file[54] = 55;
        assert_eq!(
            parse(&file, MACHINE_X86_64, USER),
            Err(ElfError::BadProgramHeaders)
        );
        let mut file = good();
        file[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&file, MACHINE_X86_64, USER), Err(ElfError::Truncated));
        let mut file = good();
        file[56..58].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(parse(&file, MACHINE_X86_64, USER), Err(ElfError::Truncated));
    }

    #[test]
    fn refuses_bad_segments() {
        let one = |segment, entry| parse(&image(entry, &[segment], 0x400), MACHINE_X86_64, USER);
        assert_eq!(
            one((RX, 0x200, 0x40_0000, 0x300, 0x100), 0x40_0000),
            Err(ElfError::BadSegment)
        );
        assert_eq!(
            one((RX, 0x300, 0x40_0000, 0x200, 0x200), 0x40_0000),
            Err(ElfError::Truncated)
        );
        assert_eq!(
            one((RX, u64::MAX, 0x40_0000, 2, 2), 0x40_0000),
            Err(ElfError::Truncated)
        );
        assert_eq!(
            one((RX, 0, 0, 0x10, 0x10), 0),
            Err(ElfError::OutsideUserRange)
        );
        assert_eq!(
            one(
                (RX, 0, 0xffff_ffff_8000_0000, 0x10, 0x10),
                0xffff_ffff_8000_0000
            ),
            Err(ElfError::OutsideUserRange)
        );
        assert_eq!(
            one((RX, 0, 0x7fff_ffff_f000, 0x10, 0x2000), 0x7fff_ffff_f000),
            Err(ElfError::OutsideUserRange)
        );
        assert_eq!(
            one((RX, 0, u64::MAX - 8, 0, 0x100), u64::MAX - 8),
            Err(ElfError::OutsideUserRange)
        );
        assert_eq!(
            one((RX | PF_W, 0, 0x40_0000, 0x10, 0x10), 0x40_0000),
            Err(ElfError::WriteAndExecute)
        );
        assert_eq!(
            one((RW, 0, 0x40_0000, 0x10, 0x10), 0x40_0000),
            Err(ElfError::BadEntry)
        );
        assert_eq!(
            one((RX, 0, 0x40_0000, 0x10, 0x10), 0x40_0010),
            Err(ElfError::BadEntry)
        );
        assert_eq!(
            one((RX, 0, 0x40_0000, 0, 0), 0x40_0000),
            Err(ElfError::SegmentCount)
        );
    }

    #[test]
    fn refuses_overlapping_segments() {
        let file = image(
            0x40_0000,
            &[
                (RX, 0, 0x40_0000, 0x10, 0x10),
                (RW, 0, 0x40_0800, 0x10, 0x10),
            ],
            0x400,
        );
        assert_eq!(parse(&file, MACHINE_X86_64, USER), Err(ElfError::Overlap));
    }

    #[test]
    fn never_panics_on_truncations_or_corruptions() {
        let good = good();
        for length in 0..good.len() {
            let _ = parse(&good[..length], MACHINE_X86_64, USER);
        }
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut file = good.clone();
            let at = (state % 0x100) as usize;
            file[at] = (state >> 32) as u8;
            let _ = parse(&file, MACHINE_X86_64, USER);
        }
    }
}
