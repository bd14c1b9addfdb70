//! Naming the code addresses in the kernel's reports as the serial output is relayed.
//!
//! The kernel prints bare addresses (it stays small): backtrace frames (`#3  0xffff…`), the
//! trapping instruction (`rip 0x…`, `elr 0x…`, `pc 0x…`), the link register (`x30 0x…`)
//! and a user fault's `ip 0x…`. [`Symbolizer::annotate`] reads one serial line and returns
//! what to append to it: `function (file:line)` for each such address (followed by
//! `, inlined function (file:line)` when the code came from an inlined call), from the DWARF
//! debug info of the ELF the address belongs to (`addr2line`/`gimli`, names demangled with
//! `rustc-demangle`). The line itself is never changed, so everything that reads the
//! serial protocol keeps working and the raw address stays beside its name.
//!
//! Which ELF: addresses in the upper half belong to the kernel. A lower-half address
//! belongs to the user program a report line last named (`… in process NAME …`): user
//! programs are linked at fixed addresses (`user/user.ld`), so their ELF addresses are
//! their load addresses. A lower-half address with no process named yet is looked up in
//! the kernel ELF (which covers it or not).
//!
//! Return addresses (backtrace frames after `#0`, and `#0` too after a `KERNEL PANIC` line:
//! the panic report walks from its own frame) are looked up one byte earlier, inside the
//! call instruction, so a call that ends a function (to a `-> !` callee) names the caller
//! and the line of the call rather than whatever follows it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use addr2line::Loader;

/// The ELF files whose symbols name the addresses of one boot.
#[derive(Clone, Debug, Default)]
pub struct SymbolFiles {
    /// The kernel ELF.
    pub kernel: Option<PathBuf>,
    /// `(program name, ELF)` of each user program, by the name the kernel reports.
    pub user: Vec<(String, PathBuf)>,
    /// A path prefix removed from source file names (the repository root).
    pub root: Option<PathBuf>,
}

/// Register names whose value is a code address, as the reports print them.
const CODE_LABELS: &[&str] = &["rip", "elr", "pc", "ip", "lr", "x30"];

/// The lowest upper-half (kernel) address on both architectures.
pub const UPPER_HALF: u64 = 0xffff_0000_0000_0000;

/// Turns report lines into the names of the addresses they carry; ELF files are opened on
/// first use and kept.
pub struct Symbolizer {
    files: SymbolFiles,
    /// Opened ELF files by path (`None`: it could not be read).
    loaded: BTreeMap<PathBuf, Option<Loader>>,
    /// The user program the latest report line named.
    process: Option<String>,
    /// Whether frame `#0` of the next backtrace is the interrupted instruction (a trap
    /// report) rather than a return address (a panic report, walked from its own frame).
    exact_first_frame: bool,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("files", &self.files)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// One address found in a line, and how to look it up.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    /// The register it was labelled with (`None`: a backtrace frame).
    label: Option<&'static str>,
    address: u64,
    /// A return address: look up `address - 1`.
    returns: bool,
}

impl Symbolizer {
    pub fn new(files: SymbolFiles) -> Self {
        Self {
            files,
            loaded: BTreeMap::new(),
            process: None,
            exact_first_frame: true,
        }
    }

    /// Read the next lines as a new output from the start (no process named yet).
    pub fn restart(&mut self) {
        self.process = None;
        self.exact_first_frame = true;
    }

    /// What to append to `line` (starting with spaces), or `None` when it carries no code
    /// address the symbols know.
    pub fn annotate(&mut self, line: &str) -> Option<String> {
        if let Some(name) = named_process(line) {
            self.process = Some(name.to_owned());
        }
        if line.contains("KERNEL PANIC") {
            self.exact_first_frame = false;
        } else if line.contains("FATAL") || line.contains("stack overflow") {
            self.exact_first_frame = true;
        }
        let mut found = addresses(line);
        if !self.exact_first_frame {
            for found in &mut found {
                found.returns |= found.label.is_none();
            }
        }
        let labelled = found.iter().any(|found| found.label.is_some());
        let mut parts = Vec::new();
        for found in found {
            let probe = if found.returns {
                found.address.saturating_sub(1)
            } else {
                found.address
            };
            let Some(name) = self.name(probe) else {
                continue;
            };
            parts.push(match found.label {
                Some(label) => format!("{label}: {name}"),
                None => name,
            });
        }
        if parts.is_empty() {
            return None;
        }
        Some(if labelled {
            format!("  [{}]", parts.join("; "))
        } else {
            format!("  {}", parts.join("; "))
        })
    }

    /// `function (file:line)` for `address`, with the inlined calls that lead there.
    pub fn name(&mut self, address: u64) -> Option<String> {
        let path = self.elf_for(address)?;
        let root = self.files.root.clone();
        let loader = self
            .loaded
            .entry(path.clone())
            .or_insert_with(|| Loader::new(&path).ok())
            .as_ref()?;
        describe(loader, address, root.as_deref())
    }

    fn elf_for(&self, address: u64) -> Option<PathBuf> {
        if address < UPPER_HALF
            && let Some(process) = &self.process
            && let Some((_, path)) = self.files.user.iter().find(|(name, _)| name == process)
        {
            return Some(path.clone());
        }
        self.files.kernel.clone()
    }
}

/// The names the debug info gives `address`: the function whose code it is, with the line
/// there, and when the code was inlined into it from another function, that innermost one
/// and its line too.
fn describe(loader: &Loader, address: u64, root: Option<&Path>) -> Option<String> {
    // The symbol table names the nearest symbol below any address: only code counts.
    if let Some(text) = loader.get_section_range(b".text")
        && !(text.begin..text.end).contains(&address)
    {
        return None;
    }
    let mut frames = Vec::new();
    if let Ok(mut iter) = loader.find_frames(address) {
        while let Ok(Some(frame)) = iter.next() {
            let name = frame
                .function
                .as_ref()
                .and_then(|function| function.raw_name().ok())
                .map(|raw| demangle(&raw));
            let location = frame.location.as_ref().and_then(|location| {
                let file = location.file?;
                Some(match location.line {
                    Some(line) => format!("{}:{line}", short_path(file, root)),
                    None => short_path(file, root),
                })
            });
            frames.push((name, location));
        }
    }
    let symbol = || loader.find_symbol(address).map(demangle);
    let one = |(name, location): &(Option<String>, Option<String>)| {
        let name = name.clone().or_else(symbol)?;
        Some(match location {
            Some(location) => format!("{name} ({location})"),
            None => name,
        })
    };
    match frames.as_slice() {
        [] => symbol(),
        [only] => one(only),
        [inner, .., outer] => match (one(outer), one(inner)) {
            (Some(outer), Some(inner)) => Some(format!("{outer}, inlined {inner}")),
            (outer, inner) => outer.or(inner),
        },
    }
}

/// A Rust symbol without its hash; anything else as it is.
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => name.to_owned(),
    }
}

/// `file` relative to the repository, the Rust sources (`/rustc/<hash>/library/…`) or the
/// cargo registry (`…/registry/src/<index>/<crate>/…`).
fn short_path(file: &str, root: Option<&Path>) -> String {
    if let Some(root) = root
        && let Ok(rest) = Path::new(file).strip_prefix(root)
    {
        return rest.display().to_string();
    }
    if let Some(rest) = file.strip_prefix("/rustc/")
        && let Some((_, rest)) = rest.split_once('/')
    {
        return rest.to_owned();
    }
    if let Some((_, rest)) = file.split_once("/registry/src/")
        && let Some((_, rest)) = rest.split_once('/')
    {
        return rest.to_owned();
    }
    file.to_owned()
}

/// The user program a report line names: `… process NAME …` (a word of letters, digits,
/// `-`, `_` or `.`).
fn named_process(line: &str) -> Option<&str> {
    let at = line.find("process ")?;
    let rest = &line[at + "process ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The code addresses `line` carries: a backtrace frame (`#N  0x…`, nothing but the
/// address after the depth), or register values labelled with one of [`CODE_LABELS`].
fn addresses(line: &str) -> Vec<Found> {
    if let Some(found) = frame(line) {
        return vec![found];
    }
    let mut found: Vec<Found> = Vec::new();
    let bytes = line.as_bytes();
    for (start, _) in line.char_indices() {
        // A label is a whole word: at the line's start or after a space or `(`.
        if start > 0 && !matches!(bytes[start - 1], b' ' | b'(') {
            continue;
        }
        for label in CODE_LABELS {
            let value = line[start..]
                .strip_prefix(label)
                .and_then(|after| after.strip_prefix(' '))
                .and_then(|after| after.trim_start_matches(' ').strip_prefix("0x"));
            if let Some(address) = value.and_then(hex)
                && !found.iter().any(|seen| seen.address == address)
            {
                found.push(Found {
                    label: Some(label),
                    address,
                    returns: false,
                });
            }
        }
    }
    found.retain(|found| found.address != 0);
    found
}

/// `#N  0x…` (after optional spaces and `(`).
fn frame(line: &str) -> Option<Found> {
    let rest = line.trim_start().strip_prefix('#')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let depth: u32 = rest[..digits].parse().ok()?;
    let value = rest[digits..].trim_start().strip_prefix("0x")?;
    let address = hex(value)?;
    Some(Found {
        label: None,
        address,
        returns: depth > 0,
    })
}

/// The hexadecimal number at the start of `text` (at least one digit).
fn hex(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(text.len());
    u64::from_str_radix(&text[..end], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSymbol};

    #[test]
    fn finds_frames_and_labelled_code_addresses() {
        assert_eq!(
            addresses("  #0  0xffffffff80012345"),
            [Found {
                label: None,
                address: 0xffffffff80012345,
                returns: false
            }]
        );
        assert_eq!(
            addresses("    #12 0xffff000040001000"),
            [Found {
                label: None,
                address: 0xffff000040001000,
                returns: true
            }]
        );
        let trap = addresses(
            "KERNEL FATAL TRAP: page fault (vector 14) in kernel mode at rip 0xffffffff8000abcd",
        );
        assert_eq!(trap.len(), 1);
        assert_eq!(trap[0].label, Some("rip"));
        assert_eq!(trap[0].address, 0xffffffff8000abcd);
        // rsp, cr2 and far are data addresses; `ip` only as a word of its own.
        let overflow = addresses(
            "(page fault at rip 0xffffffff80001000; cr2 0xffff800000100ff8, rsp 0xffff800000101000; stack 0x1..0x2, guard page below)",
        );
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].address, 0xffffffff80001000);
        let user = addresses(
            "keel: user fault in process testsuite (thread 9): page fault (read) at 0x100000000000 at ip 0x401234; thread killed",
        );
        assert_eq!(user.len(), 1);
        assert_eq!(user[0].label, Some("ip"));
        assert_eq!(user[0].address, 0x401234);
        let nested = addresses(
            "keel: nested exception while reporting a fatal one (vector 4, esr 0x96000045, elr 0xffff000040080000, far 0x8)",
        );
        assert_eq!(nested.len(), 1);
        assert_eq!(nested[0].label, Some("elr"));
        assert_eq!(
            addresses("  x28 0x0000000000000000  x29 0xffff000000001230  x30 0xffff000040081234")
                .iter()
                .map(|found| found.label)
                .collect::<Vec<_>>(),
            [Some("x30")]
        );
        assert!(addresses("memory: 213 MiB usable, cr0 0x80010011").is_empty());
        assert!(addresses("  (end: frame pointer 0)").is_empty());
        assert!(addresses("#define 0x10").is_empty());
    }

    #[test]
    fn reads_the_process_a_report_names() {
        assert_eq!(
            named_process("keel: user fault in process testsuite (thread 9): …"),
            Some("testsuite")
        );
        assert_eq!(named_process("no such"), None);
        assert_eq!(named_process("process "), None);
    }

    #[test]
    fn shortens_source_paths() {
        let root = Path::new("/work/keel");
        assert_eq!(
            short_path("/work/keel/kernel/src/main.rs", Some(root)),
            "kernel/src/main.rs"
        );
        assert_eq!(
            short_path("/rustc/0123abcd/library/core/src/panicking.rs", Some(root)),
            "library/core/src/panicking.rs"
        );
        assert_eq!(
            short_path(
                "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spin-0.12.0/src/mutex.rs",
                None
            ),
            "spin-0.12.0/src/mutex.rs"
        );
        assert_eq!(short_path("src/lib.rs", Some(root)), "src/lib.rs");
    }

    /// A function with a name to find in this test binary's own debug info.
    #[inline(never)]
    fn symbolize_marker(value: u64) -> u64 {
        std::hint::black_box(value).wrapping_mul(3) ^ 0x5a
    }

    /// The ELF address (not the run-time one: the test binary is position independent) of
    /// the function whose demangled name ends with `suffix`, and its size.
    fn elf_symbol(elf: &Path, suffix: &str) -> (u64, u64) {
        let data = std::fs::read(elf).unwrap();
        let file = object::File::parse(&*data).unwrap();
        file.symbols()
            .find(|symbol| {
                symbol
                    .name()
                    .is_ok_and(|name| demangle(name).ends_with(suffix))
            })
            .map(|symbol| (symbol.address(), symbol.size()))
            .unwrap_or_else(|| panic!("no symbol ending in {suffix} in {}", elf.display()))
    }

    #[test]
    fn names_addresses_from_the_debug_info_of_an_elf() {
        assert_eq!(symbolize_marker(1), 3 ^ 0x5a);
        let exe = std::env::current_exe().unwrap();
        let (start, size) = elf_symbol(&exe, "symbolize::tests::symbolize_marker");
        assert!(size > 1, "the marker has code");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let files = SymbolFiles {
            kernel: Some(exe.clone()),
            user: vec![("marker".to_owned(), exe.clone())],
            root: Some(root.to_path_buf()),
        };
        let mut symbolizer = Symbolizer::new(files);

        let name = symbolizer.name(start).expect("the marker is named");
        assert!(
            name.starts_with("xtask::symbolize::tests::symbolize_marker ("),
            "{name}"
        );
        assert!(name.contains("xtask/src/symbolize.rs:"), "{name}");

        // A backtrace frame: appended after the address, which stays.
        let frame = format!("  #2  {:#018x}", start + 1);
        let suffix = symbolizer.annotate(&frame).expect("frame named");
        assert!(
            suffix.starts_with("  xtask::symbolize::tests::symbolize_marker ("),
            "{suffix}"
        );
        // A user fault: the named process's ELF, labelled.
        let fault = format!(
            "keel: user fault in process marker (thread 3): page fault (read) at 0x10 at ip {start:#x}; thread killed"
        );
        let suffix = symbolizer.annotate(&fault).expect("user ip named");
        assert!(
            suffix.starts_with("  [ip: xtask::symbolize::tests::symbolize_marker ("),
            "{suffix}"
        );
        // No address, or one outside any function: nothing to append.
        assert_eq!(
            symbolizer.annotate("keel: kernel panic; powering off"),
            None
        );
        assert_eq!(symbolizer.annotate("  #1  0x0000000000000010"), None);
    }

    #[test]
    fn unreadable_elf_names_nothing() {
        let mut symbolizer = Symbolizer::new(SymbolFiles {
            kernel: Some(PathBuf::from("/nonexistent/kernel")),
            ..SymbolFiles::default()
        });
        assert_eq!(symbolizer.annotate("  #0  0xffffffff80001000"), None);
        assert_eq!(symbolizer.annotate("  #0  0xffffffff80001000"), None);
    }
}
