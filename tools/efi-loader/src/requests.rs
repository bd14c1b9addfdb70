//! Finding the kernel's requests and its base revision tag in the loaded image.
//!
//! The protocol: requests are recognised by their identifier (the two common magic words,
//! then two words naming the feature) on any 8-byte-aligned address of the loaded image;
//! when the image has a requests start marker and/or end marker, only the words between
//! the last start marker and the first end marker count (base revision 2 makes honouring
//! them mandatory; this loader honours them at every revision). A request may appear only
//! once. The base revision tag is found the same way.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::elf::read_u64;
use crate::protocol::{
    BASE_REVISION_MAGIC, COMMON_MAGIC, MAX_BASE_REVISION, MIN_BASE_REVISION, PAGING_MODE_4LEVEL,
    PAGING_MODE_MIN, REQUEST_EXTRA_OFFSET, REQUESTS_END_MARKER, REQUESTS_START_MARKER, RequestKind,
};

/// A request found in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Byte offset of the request in the image.
    pub offset: usize,
    pub kind: RequestKind,
    /// The request's `revision` member.
    pub revision: u64,
}

/// Everything the scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// (byte offset, requested revision) of the first base revision tag.
    pub base_revision: Option<(usize, u64)>,
    pub requests: Vec<Found>,
    /// Byte range that was searched (after applying the delimiters).
    pub searched: (usize, usize),
    pub warnings: Vec<String>,
}

impl Scan {
    /// The request of `kind`, if the kernel made it.
    pub fn find(&self, kind: RequestKind) -> Option<Found> {
        self.requests
            .iter()
            .copied()
            .find(|found| found.kind == kind)
    }
}

/// Why the image's requests cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError(pub String);

impl core::fmt::Display for ScanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn matches(image: &[u8], word: usize, pattern: &[u64]) -> bool {
    pattern
        .iter()
        .enumerate()
        .all(|(i, &expected)| read_u64(image, (word + i) * 8) == Some(expected))
}

/// Scan `image` (the loaded kernel, starting on a page boundary) for requests.
/// `virtual_base` is where the image is mapped, used only in messages.
pub fn scan(image: &[u8], virtual_base: u64) -> Result<Scan, ScanError> {
    let words = image.len() / 8;
    let mut scan = Scan::default();
    let mut start = 0;
    let mut end = words;
    let mut last_start_marker = None;
    let mut first_end_marker = None;
    for word in 0..words {
        if matches(image, word, &REQUESTS_START_MARKER) {
            last_start_marker = Some(word);
        }
        if first_end_marker.is_none() && matches(image, word, &REQUESTS_END_MARKER) {
            first_end_marker = Some(word);
        }
    }
    if let Some(marker) = last_start_marker {
        start = marker + REQUESTS_START_MARKER.len();
    }
    if let Some(marker) = first_end_marker {
        end = marker;
    }
    if end < start {
        scan.warnings.push(format!(
            "the first requests end marker ({:#x}) lies before the last start marker ({:#x}): no requests are read",
            virtual_base + end as u64 * 8,
            virtual_base + start as u64 * 8
        ));
        end = start;
    }
    scan.searched = (start * 8, end * 8);
    let request_words = REQUEST_EXTRA_OFFSET / 8;
    let mut word = start;
    while word < end {
        if matches(image, word, &COMMON_MAGIC) && word + request_words <= end {
            let offset = word * 8;
            let tail = [
                read_u64(image, offset + 16).unwrap_or(0),
                read_u64(image, offset + 24).unwrap_or(0),
            ];
            let kind = RequestKind::from_id_tail(tail);
            if let Some(first) = scan.requests.iter().find(|found| found.kind == kind) {
                return Err(ScanError(format!(
                    "the kernel has two {} requests (at {:#x} and {:#x}); the protocol allows one",
                    describe(kind),
                    virtual_base + first.offset as u64,
                    virtual_base + offset as u64
                )));
            }
            let revision = read_u64(image, offset + 32).unwrap_or(0);
            scan.requests.push(Found {
                offset,
                kind,
                revision,
            });
            word += 4;
            continue;
        }
        if matches(image, word, &BASE_REVISION_MAGIC) && word + 3 <= end {
            let offset = word * 8;
            let requested = read_u64(image, offset + 16).unwrap_or(0);
            match scan.base_revision {
                None => scan.base_revision = Some((offset, requested)),
                Some((first, _)) => scan.warnings.push(format!(
                    "second base revision tag at {:#x} ignored (the first is at {:#x})",
                    virtual_base + offset as u64,
                    virtual_base + first as u64
                )),
            }
            word += 3;
            continue;
        }
        word += 1;
    }
    Ok(scan)
}

fn describe(kind: RequestKind) -> String {
    match kind {
        RequestKind::Unknown([a, b]) => format!("unknown ({a:#018x}, {b:#018x})"),
        known => String::from(known.name()),
    }
}

/// The outcome of the base revision negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseRevision {
    /// What the kernel asked for.
    pub requested: u64,
    /// What the loader boots it with.
    pub loaded: u64,
    /// Whether the request is honoured (then the tag's third word becomes 0).
    pub supported: bool,
}

/// Decide the base revision for a kernel whose tag asked for `requested` (`None`: no tag,
/// which the protocol reads as revision 0).
pub fn negotiate(requested: Option<u64>) -> Result<BaseRevision, ScanError> {
    match requested {
        None => Err(ScanError(format!(
            "the kernel has no base revision tag, i.e. asks for deprecated base revision 0; this loader supports {MIN_BASE_REVISION} to {MAX_BASE_REVISION}"
        ))),
        Some(requested) if requested < MIN_BASE_REVISION => Err(ScanError(format!(
            "the kernel asks for deprecated base revision {requested}; this loader supports {MIN_BASE_REVISION} to {MAX_BASE_REVISION}"
        ))),
        Some(requested) if requested <= MAX_BASE_REVISION => Ok(BaseRevision {
            requested,
            loaded: requested,
            supported: true,
        }),
        Some(requested) => Ok(BaseRevision {
            requested,
            loaded: MAX_BASE_REVISION,
            supported: false,
        }),
    }
}

/// Write the outcome into the tag at `offset`: the second word becomes the revision used,
/// and the third becomes 0 when the requested revision is supported (else it is left).
pub fn answer_base_revision(image: &mut [u8], offset: usize, outcome: &BaseRevision) {
    image[offset + 8..offset + 16].copy_from_slice(&outcome.loaded.to_le_bytes());
    if outcome.supported {
        image[offset + 16..offset + 24].fill(0);
    }
}

/// The members of a Paging Mode request: `mode`, and from request revision 1 `max_mode`
/// and `min_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingRequest {
    pub revision: u64,
    pub mode: u64,
    pub max_mode: u64,
    pub min_mode: u64,
}

/// Decide the paging mode as Limine does. The loader (with this CPU) can provide the modes
/// `PAGING_MODE_MIN..=supported_max`; the kernel accepts `min_mode..=max_mode` (request
/// revision 0: `PAGING_MODE_MIN..=mode`). The answer is the requested `mode` moved into
/// both ranges; when they do not meet, or the kernel's range is empty, the boot fails, as
/// the protocol says. Without a request, 4-level paging.
pub fn paging_mode(request: Option<PagingRequest>, supported_max: u64) -> Result<u64, ScanError> {
    let supported_min = PAGING_MODE_MIN;
    let Some(request) = request else {
        return Ok(PAGING_MODE_4LEVEL);
    };
    let (kernel_min, kernel_max) = if request.revision >= 1 {
        (request.min_mode, request.max_mode)
    } else {
        (PAGING_MODE_MIN, request.mode)
    };
    if kernel_max < kernel_min {
        return Err(ScanError(format!(
            "the Paging Mode request's max_mode ({kernel_max}) is below its min_mode ({kernel_min})"
        )));
    }
    let mut mode = request.mode.clamp(supported_min, supported_max);
    if mode > kernel_max {
        if kernel_max < supported_min {
            return Err(ScanError(format!(
                "the Paging Mode request allows modes up to {kernel_max}; this loader provides {supported_min} to {supported_max}"
            )));
        }
        mode = kernel_max;
    }
    if mode < kernel_min {
        if kernel_min > supported_max {
            return Err(ScanError(format!(
                "the Paging Mode request needs at least mode {kernel_min}; this loader provides {supported_min} to {supported_max} on this CPU"
            )));
        }
        mode = kernel_min;
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn put(image: &mut [u8], offset: usize, words: &[u64]) {
        for (i, word) in words.iter().enumerate() {
            image[offset + i * 8..offset + i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }

    fn request(image: &mut [u8], offset: usize, kind: RequestKind, revision: u64) {
        put(image, offset, &kind.id());
        put(image, offset + 32, &[revision, 0]);
    }

    fn tag(image: &mut [u8], offset: usize, revision: u64) {
        put(
            image,
            offset,
            &[BASE_REVISION_MAGIC[0], BASE_REVISION_MAGIC[1], revision],
        );
    }

    #[test]
    fn finds_requests_and_the_tag_anywhere() {
        let mut image = vec![0u8; 0x2000];
        tag(&mut image, 0x100, 2);
        request(&mut image, 0x200, RequestKind::Hhdm, 0);
        request(&mut image, 0x1ff0 - 48, RequestKind::MemoryMap, 1);
        request(&mut image, 0x400, RequestKind::Unknown([1, 2]), 0);
        let scan = scan(&image, 0xffff_ffff_8000_0000).unwrap();
        assert_eq!(scan.base_revision, Some((0x100, 2)));
        assert_eq!(scan.requests.len(), 3);
        assert_eq!(
            scan.find(RequestKind::Hhdm),
            Some(Found {
                offset: 0x200,
                kind: RequestKind::Hhdm,
                revision: 0
            })
        );
        assert_eq!(scan.find(RequestKind::MemoryMap).unwrap().revision, 1);
        assert!(scan.find(RequestKind::Unknown([1, 2])).is_some());
        assert_eq!(scan.searched, (0, 0x2000));
        assert!(scan.warnings.is_empty());
    }

    #[test]
    fn misaligned_ids_are_ignored() {
        let mut image = vec![0u8; 0x1000];
        request(&mut image, 0x104, RequestKind::Hhdm, 0);
        tag(&mut image, 0x204, 2);
        request(&mut image, 0x300, RequestKind::Rsdp, 0);
        let scan = scan(&image, 0).unwrap();
        assert_eq!(scan.requests.len(), 1);
        assert_eq!(scan.requests[0].kind, RequestKind::Rsdp);
        assert_eq!(scan.base_revision, None);
    }

    #[test]
    fn a_request_cut_off_by_the_end_is_ignored() {
        let mut image = vec![0u8; 0x100];
        put(&mut image, 0x100 - 32, &RequestKind::Hhdm.id());
        assert!(scan(&image, 0).unwrap().requests.is_empty());
    }

    #[test]
    fn duplicate_requests_are_refused() {
        let mut image = vec![0u8; 0x1000];
        request(&mut image, 0x100, RequestKind::Module, 0);
        request(&mut image, 0x800, RequestKind::Module, 1);
        let error = scan(&image, 0x1000).unwrap_err();
        assert!(error.0.contains("two Module requests"), "{error}");
        assert!(
            error.0.contains("0x1100") && error.0.contains("0x1800"),
            "{error}"
        );
    }

    #[test]
    fn delimiters_limit_the_search() {
        let mut image = vec![0u8; 0x1000];
        request(&mut image, 0x40, RequestKind::Hhdm, 0); // before the start marker
        put(&mut image, 0x100, &REQUESTS_START_MARKER); // ignored: not the last one
        request(&mut image, 0x140, RequestKind::Rsdp, 0); // between the two start markers
        put(&mut image, 0x200, &REQUESTS_START_MARKER);
        tag(&mut image, 0x220, 3);
        request(&mut image, 0x240, RequestKind::MemoryMap, 0);
        put(&mut image, 0x300, &REQUESTS_END_MARKER);
        request(&mut image, 0x340, RequestKind::Module, 0); // after the end marker
        put(&mut image, 0x400, &REQUESTS_END_MARKER); // not the first end marker
        // A duplicate outside the delimited area does not count.
        request(&mut image, 0x500, RequestKind::MemoryMap, 0);
        let scan = scan(&image, 0).unwrap();
        assert_eq!(scan.searched, (0x220, 0x300));
        assert_eq!(scan.base_revision, Some((0x220, 3)));
        assert_eq!(
            scan.requests.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [RequestKind::MemoryMap]
        );
    }

    #[test]
    fn only_one_marker_of_each_kind_works_too() {
        let mut image = vec![0u8; 0x1000];
        request(&mut image, 0x40, RequestKind::Hhdm, 0);
        put(&mut image, 0x100, &REQUESTS_END_MARKER);
        request(&mut image, 0x140, RequestKind::Rsdp, 0);
        let found = scan(&image, 0).unwrap();
        assert_eq!(
            found.requests.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [RequestKind::Hhdm]
        );

        let mut image = vec![0u8; 0x1000];
        put(&mut image, 0x300, &REQUESTS_END_MARKER);
        put(&mut image, 0x400, &REQUESTS_START_MARKER);
        request(&mut image, 0x440, RequestKind::Rsdp, 0);
        let inverted = scan(&image, 0).unwrap();
        assert!(inverted.requests.is_empty());
        assert_eq!(inverted.warnings.len(), 1);
    }

    #[test]
    fn a_second_tag_is_ignored_with_a_warning() {
        let mut image = vec![0u8; 0x1000];
        tag(&mut image, 0x100, 2);
        tag(&mut image, 0x200, 3);
        let scan = scan(&image, 0).unwrap();
        assert_eq!(scan.base_revision, Some((0x100, 2)));
        assert_eq!(scan.warnings.len(), 1);
    }

    #[test]
    fn base_revision_negotiation_follows_the_protocol() {
        assert!(negotiate(None).is_err());
        assert!(negotiate(Some(0)).is_err());
        for requested in 1..=3 {
            assert_eq!(
                negotiate(Some(requested)).unwrap(),
                BaseRevision {
                    requested,
                    loaded: requested,
                    supported: true
                }
            );
        }
        assert_eq!(
            negotiate(Some(4)).unwrap(),
            BaseRevision {
                requested: 4,
                loaded: 3,
                supported: false
            }
        );

        let mut image = vec![0u8; 0x100];
        tag(&mut image, 0x10, 2);
        answer_base_revision(&mut image, 0x10, &negotiate(Some(2)).unwrap());
        assert_eq!(read_u64(&image, 0x18), Some(2));
        assert_eq!(read_u64(&image, 0x20), Some(0));
        tag(&mut image, 0x10, 5);
        answer_base_revision(&mut image, 0x10, &negotiate(Some(5)).unwrap());
        assert_eq!(read_u64(&image, 0x18), Some(3));
        assert_eq!(read_u64(&image, 0x20), Some(5));
    }

    #[test]
    fn paging_mode_follows_the_protocol_for_every_combination() {
        use crate::protocol::PAGING_MODE_5LEVEL;
        assert_eq!(
            paging_mode(None, PAGING_MODE_4LEVEL),
            Ok(PAGING_MODE_4LEVEL)
        );
        assert_eq!(
            paging_mode(None, PAGING_MODE_5LEVEL),
            Ok(PAGING_MODE_4LEVEL)
        );
        // Modes 0 (4-level), 1 (5-level) and 2 (unknown) in every member; CPUs without
        // and with LA57.
        for supported_max in [PAGING_MODE_4LEVEL, PAGING_MODE_5LEVEL] {
            for revision in 0..=2 {
                for mode in 0..=2 {
                    for max_mode in 0..=2 {
                        for min_mode in 0..=2 {
                            let request = PagingRequest {
                                revision,
                                mode,
                                max_mode,
                                min_mode,
                            };
                            let (low, high) = if revision >= 1 {
                                (min_mode, max_mode)
                            } else {
                                (0, mode)
                            };
                            // The modes both sides accept (the loader's lowest is 0).
                            let both = (low, high.min(supported_max));
                            let got = paging_mode(Some(request), supported_max);
                            if low > high || both.0 > both.1 {
                                assert!(got.is_err(), "{request:?} on {supported_max}: {got:?}");
                            } else {
                                let expected = mode.clamp(both.0, both.1);
                                assert_eq!(got, Ok(expected), "{request:?} on {supported_max}");
                            }
                        }
                    }
                }
            }
        }
        // The cases the protocol text spells out.
        let five = PagingRequest {
            revision: 1,
            mode: PAGING_MODE_5LEVEL,
            max_mode: PAGING_MODE_5LEVEL,
            min_mode: PAGING_MODE_4LEVEL,
        };
        assert_eq!(
            paging_mode(Some(five), PAGING_MODE_5LEVEL),
            Ok(1),
            "LA57: honoured"
        );
        assert_eq!(
            paging_mode(Some(five), PAGING_MODE_4LEVEL),
            Ok(0),
            "no LA57: fallback"
        );
        let only_five = PagingRequest {
            min_mode: PAGING_MODE_5LEVEL,
            ..five
        };
        assert!(paging_mode(Some(only_five), PAGING_MODE_4LEVEL).is_err());
        let revision0 = PagingRequest {
            revision: 0,
            mode: PAGING_MODE_5LEVEL,
            max_mode: 0,
            min_mode: 9,
        };
        assert_eq!(paging_mode(Some(revision0), PAGING_MODE_5LEVEL), Ok(1));
        assert_eq!(paging_mode(Some(revision0), PAGING_MODE_4LEVEL), Ok(0));
    }
}
