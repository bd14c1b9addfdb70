//! `cargo xtask bench --profile NAME`: where one operation of a benchmark spends its guest
//! instructions, function by function, in the kernel and in the bench program.
//!
//! # How
//! QEMU logs every translation block it translates (`-d in_asm`: the block's instructions)
//! and every block it executes (`-d exec,nochain`: one `Trace` line per execution, with the
//! block's host address and guest PC; `nochain` makes every execution go through the
//! logger), limited to the kernel's and the bench program's code (`-dfilter`). The log goes
//! to a FIFO that this module reads as QEMU writes it (a boot logs a few GiB), adding each
//! executed block's instructions to a count per guest address.
//!
//! The bench scenario boots twice with only `NAME` (`only=NAME`) in the bench program's
//! profile mode (`profile=on`, `abi::bench::PROFILE`): it takes its usual few samples, then
//! runs the operation `N` times (the second boot `2N`) in a loop with nothing else in it
//! (`bench::profile_loop`), and says how many operations that was (`bench::profile_done`).
//! Counting runs from the loop's first instruction to `profile_done`'s, so the boot before
//! it (whose idle time `-icount` advances with the host's clock, so it differs from boot
//! to boot) is left out. The difference of the two counts, divided by the difference of
//! the operations, is what one operation executes, address by address, with the loop's
//! own increment and branch (`bench::profile_loop`, into which the operation's closure and
//! its `rt` wrapper are inlined). The symbols of the release kernel and of the bench
//! program name the functions. Benchmarks the kernel measures (`spawn`, `page_fault`) and
//! `timer_tick` (a loop of its own) have no profile loop.
//!
//! The report (printed) lists the functions, and under each of more than a few
//! instructions its instructions by the innermost of Keel's own functions they came from,
//! inlined or not: the innermost frame of the debug info whose code is in the repository,
//! so `core` and `alloc` code counts in the Keel function it was inlined into.
//! `target/profile/<arch>-NAME.txt` lists every address with its count per operation and
//! both names, for reading next to `llvm-objdump -d`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::bench::{bench_boot, smp_for};
use crate::boot;
use crate::compile::{self, KernelBuild, WithLoader};
use crate::symbolize::{UPPER_HALF, demangle};
use crate::{Arch, Context, Error, Profile, Result, Workspace, step};

/// The fewest iterations a profile boots with (fewer make the difference between the boots
/// small next to anything that varies in it).
pub const MIN_ITERATIONS: u32 = 100;

/// The benchmarks that have no profile loop (module docs).
pub const NO_LOOP: [&str; 3] = ["spawn", "page_fault", "timer_tick"];

/// The samples each benchmark takes in the bench program's profile mode, before its loop.
pub const PROFILE_SAMPLES: u64 = abi::bench::PROFILE_SAMPLES as u64;

/// A function of an ELF: start, end (exclusive) and demangled name without its hash.
#[derive(Clone, Debug)]
struct Function {
    start: u64,
    end: u64,
    name: String,
}

/// The functions and the executable range of one ELF.
#[derive(Debug)]
struct Symbols {
    /// Sorted by start.
    functions: Vec<Function>,
    /// The lowest and one past the highest address of its executable sections.
    text: (u64, u64),
}

impl Symbols {
    fn read(path: &Path) -> Result<Self> {
        use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
        let data = std::fs::read(path).context(|| format!("cannot read {}", path.display()))?;
        let file = object::File::parse(&*data)
            .map_err(|error| Error::new(format!("{}: not an ELF file: {error}", path.display())))?;
        let mut functions: Vec<Function> = file
            .symbols()
            .filter(|symbol| {
                // Functions, and the labels of assembly code (no type), not the AArch64
                // mapping symbols (`$x`, `$d`).
                matches!(
                    symbol.kind(),
                    SymbolKind::Text | SymbolKind::Label | SymbolKind::Unknown
                ) && symbol.is_definition()
                    && symbol
                        .name()
                        .is_ok_and(|name| !name.starts_with('$') && !name.is_empty())
                    && symbol.section_index().is_some_and(|index| {
                        file.section_by_index(index)
                            .is_ok_and(|section| section.kind() == SectionKind::Text)
                    })
            })
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                Some(Function {
                    start: symbol.address(),
                    end: symbol.address() + symbol.size(),
                    name: demangle(name),
                })
            })
            .collect();
        functions.sort_by_key(|function| (function.start, core::cmp::Reverse(function.end)));
        functions.dedup_by_key(|function| function.start);
        // Assembly labels carry no size: each reaches to the next symbol.
        for index in 0..functions.len() {
            if functions[index].end == functions[index].start {
                functions[index].end = functions.get(index + 1).map_or(u64::MAX, |next| next.start);
            }
        }
        let text = file
            .sections()
            .filter(|section| section.kind() == SectionKind::Text && section.size() > 0)
            .fold((u64::MAX, 0), |(low, high), section| {
                (
                    low.min(section.address()),
                    high.max(section.address() + section.size()),
                )
            });
        if text.0 >= text.1 {
            return Err(Error::new(format!(
                "{}: no executable section",
                path.display()
            )));
        }
        Ok(Self { functions, text })
    }

    /// The function `address` is in.
    fn function(&self, address: u64) -> Option<&Function> {
        let index = self
            .functions
            .partition_point(|function| function.start <= address);
        let function = self.functions.get(index.checked_sub(1)?)?;
        (address < function.end).then_some(function)
    }

    /// The start of each function named `name` (a generic function has a copy for each
    /// type it is used with, all of the same name).
    fn starts_of(&self, name: &str) -> Vec<u64> {
        self.functions
            .iter()
            .filter(|function| function.name == name)
            .map(|function| function.start)
            .collect()
    }
}

/// What one traced boot executed from the first block at an arming address on.
#[derive(Debug, Default)]
pub struct Counts {
    /// Executions per guest instruction address.
    pub per_address: HashMap<u64, u64>,
    /// Whether the window's first address ran (else nothing was counted).
    pub armed: bool,
    /// Whether its last address ran after it (the counting ended there).
    pub ended: bool,
    /// Executed blocks whose translation the log did not show (counted nowhere).
    pub unknown_blocks: u64,
    /// Executed blocks the log showed, counted or not.
    pub executed_blocks: u64,
}

/// Where counting starts and ends: at the first execution of a block that starts at one
/// of `from`, and at the first after it that starts at one of `to`.
#[derive(Clone, Debug)]
pub struct Window {
    pub from: Vec<u64>,
    pub to: Vec<u64>,
}

/// Count the executed instructions of a QEMU `-d in_asm,exec,nochain` log read from
/// `log` within `window`.
///
/// A block is known by the host address its `Trace` line gives, mapped to the listing
/// of the translation just before its first execution (a guest PC may be translated again,
/// shorter or for other code, so the PC alone does not name the instructions); a block
/// seen first without a listing falls back to the latest listing of its PC.
pub fn count_log(log: impl BufRead, window: &Window) -> Counts {
    let mut counts = Counts::default();
    let mut by_pc: HashMap<u64, std::rc::Rc<Vec<u64>>> = HashMap::new();
    let mut by_host: HashMap<u64, std::rc::Rc<Vec<u64>>> = HashMap::new();
    // The listing being read, and the latest one not yet tied to a host block.
    let mut listing: Option<Vec<u64>> = None;
    let mut fresh: Option<std::rc::Rc<Vec<u64>>> = None;
    for line in log.split(b'\n') {
        let Ok(line) = line else { break };
        if line.starts_with(b"IN:") {
            listing = Some(Vec::new());
            continue;
        }
        if let Some(instructions) = &mut listing {
            if let Some(address) = line.strip_prefix(b"0x").and_then(hex_before_colon) {
                instructions.push(address);
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                // The listing ends with an empty line.
                let instructions = listing.take().unwrap_or_default();
                if let Some(&first) = instructions.first() {
                    let block = std::rc::Rc::new(instructions);
                    by_pc.insert(first, block.clone());
                    fresh = Some(block);
                }
            }
            continue;
        }
        let Some((host, pc)) = parse_trace(&line) else {
            continue;
        };
        counts.executed_blocks += 1;
        if counts.armed && window.to.contains(&pc) {
            counts.ended = true;
        }
        if !counts.armed || counts.ended {
            if counts.ended || !window.from.contains(&pc) {
                // Keep the host map current while not counting.
                if let Some(block) = fresh.take_if(|block| block.first() == Some(&pc)) {
                    by_host.insert(host, block);
                }
                continue;
            }
            counts.armed = true;
        }
        let block = match fresh.take_if(|block| block.first() == Some(&pc)) {
            Some(block) => {
                by_host.insert(host, block.clone());
                Some(block)
            }
            None => by_host
                .get(&host)
                .filter(|block| block.first() == Some(&pc))
                .or_else(|| by_pc.get(&pc))
                .cloned(),
        };
        match block {
            Some(block) => {
                for &address in block.iter() {
                    *counts.per_address.entry(address).or_default() += 1;
                }
            }
            None => counts.unknown_blocks += 1,
        }
    }
    counts
}

/// The hexadecimal number before the first `:` of `text`.
fn hex_before_colon(text: &[u8]) -> Option<u64> {
    let end = text.iter().position(|&byte| byte == b':')?;
    parse_hex(&text[..end])
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    text.iter().try_fold(0u64, |value, &byte| {
        Some(value << 4 | u64::from((byte as char).to_digit(16)?))
    })
}

/// `(host block, guest PC)` of a line `Trace N: 0xHOST [FLAGS/PC/…]`.
fn parse_trace(line: &[u8]) -> Option<(u64, u64)> {
    let rest = line.strip_prefix(b"Trace ")?;
    let rest = &rest[rest.iter().position(|&byte| byte == b':')? + 1..];
    let rest = rest.trim_ascii_start().strip_prefix(b"0x")?;
    let space = rest.iter().position(|&byte| byte == b' ')?;
    let host = parse_hex(&rest[..space])?;
    let fields = rest[space..].trim_ascii_start().strip_prefix(b"[")?;
    let mut parts = fields.split(|&byte| byte == b'/');
    parts.next()?;
    let pc = parse_hex(parts.next()?)?;
    Some((host, pc))
}

/// `cargo xtask bench --profile NAME`.
pub fn run(workspace: &Workspace, arches: &[Arch], iterations: u32, name: &str) -> Result<()> {
    if abi::bench::selector(name).is_none() {
        return Err(Error::new(format!(
            "no benchmark named {name:?} can be profiled; the benchmarks are: {}",
            abi::bench::NAMES.join(", ")
        )));
    }
    if NO_LOOP.contains(&name) {
        return Err(Error::new(format!(
            "{name} has no profile loop ({}: the kernel measures `spawn` and `page_fault`, \
             and `timer_tick` has a loop of its own); the others can be profiled",
            NO_LOOP.join(", ")
        )));
    }
    let iterations = iterations.max(MIN_ITERATIONS);
    for &arch in arches {
        let artifacts = compile::build(
            workspace,
            arch,
            Profile::Release,
            KernelBuild::Testing,
            WithLoader::Skip,
        )?;
        let kernel = Symbols::read(&artifacts.kernel)?;
        let bench_elf = artifacts
            .user
            .iter()
            .find(|(program, _)| program == "bench")
            .map(|(_, path)| path.clone())
            .ok_or_else(|| Error::new("internal: the build has no `bench` program"))?;
        let user = Symbols::read(&bench_elf)?;
        let function = |name: &str| {
            let starts = user.starts_of(name);
            if starts.is_empty() {
                return Err(Error::new(format!(
                    "{}: no function `{name}` to count from or to",
                    bench_elf.display()
                )));
            }
            Ok(starts)
        };
        let window = Window {
            from: function("bench::profile_loop")?,
            to: function("bench::profile_done")?,
        };
        let filter = format!(
            "{:#x}..{:#x},{:#x}..{:#x}",
            user.text.0,
            user.text.1 - 1,
            kernel.text.0,
            kernel.text.1 - 1
        );
        let mut boots = Vec::new();
        for samples in [iterations, 2 * iterations] {
            boots.push(traced_boot(
                workspace, arch, name, samples, &filter, &window,
            )?);
        }
        let (first, second) = (&boots[0], &boots[1]);
        let extra = second.operations.saturating_sub(first.operations);
        if extra == 0 {
            return Err(Error::new(format!(
                "{arch}: both boots ran {} operations in the profile loop",
                first.operations
            )));
        }
        let loaders = (
            addr2line::Loader::new(&artifacts.kernel).ok(),
            addr2line::Loader::new(&bench_elf).ok(),
        );
        let source = |address: u64| {
            let loader = if address >= UPPER_HALF {
                loaders.0.as_ref()
            } else {
                loaders.1.as_ref()
            };
            loader.and_then(|loader| project_frame(loader, address, workspace.root()))
        };
        let report = report(arch, name, first, second, extra, (&kernel, &user), &source);
        print!("{}", report.summary);
        let path = workspace
            .target_dir()
            .join("profile")
            .join(format!("{arch}-{name}.txt"));
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .context(|| format!("cannot create {}", path.display()))?;
        std::fs::write(&path, &report.addresses)
            .context(|| format!("cannot write {}", path.display()))?;
        step(format_args!(
            "{arch}: every address with its count per operation: {}",
            path.display()
        ));
    }
    Ok(())
}

/// One traced boot: its counts, the operations of its profile loop and the bench median it
/// printed.
struct Boot {
    counts: Counts,
    operations: u64,
    median: u64,
}

/// The operation count of a `bench: profile loop of N operations` line.
pub fn profile_loop_operations(line: &str) -> Option<u64> {
    let rest = &line[line.find("bench: profile loop of ")? + "bench: profile loop of ".len()..];
    rest.strip_suffix(" operations")?.trim().parse().ok()
}

/// Boot the bench scenario with only `name` and `samples` iterations, QEMU logging the
/// blocks of `filter` to a FIFO that a thread counts from the first block at `arm` on.
fn traced_boot(
    workspace: &Workspace,
    arch: Arch,
    name: &str,
    samples: u32,
    filter: &str,
    window: &Window,
) -> Result<Boot> {
    let directory = workspace.target_dir().join("profile");
    std::fs::create_dir_all(&directory)
        .context(|| format!("cannot create {}", directory.display()))?;
    let fifo = directory.join(format!("{arch}-{samples}-{}.log", std::process::id()));
    make_fifo(&fifo)?;
    let reader = {
        let fifo = fifo.clone();
        let window = window.clone();
        std::thread::spawn(move || -> std::io::Result<Counts> {
            let file = std::fs::File::open(&fifo)?;
            Ok(count_log(BufReader::with_capacity(1 << 20, file), &window))
        })
    };
    let mut options = bench_boot(
        workspace,
        arch,
        format!("test=bench iterations={samples} only={name} profile=on"),
        "bench-profile",
        smp_for(name, 1),
        KernelBuild::Testing,
    );
    options.qemu.extra_args.extend(
        [
            "-d",
            "in_asm,exec,nochain",
            "-dfilter",
            filter,
            "-D",
            &fifo.to_string_lossy(),
        ]
        .map(str::to_owned),
    );
    step(format_args!(
        "{arch}: booting test=bench only={name} with {samples} iterations, every executed block logged…"
    ));
    let result = boot::boot(workspace, &options);
    // A reader still waiting for a writer (QEMU never opened the log) is let go: it sees
    // a writer come and go, then the end of the file.
    {
        use std::os::unix::fs::OpenOptionsExt;
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo),
        );
    }
    let counts = reader
        .join()
        .map_err(|_| Error::new("internal: the log reader panicked"))?
        .context(|| format!("cannot read QEMU's log through {}", fifo.display()));
    let _ = std::fs::remove_file(&fifo);
    let outcome = result?;
    let counts = counts?;
    match outcome.ending.clone().into_result() {
        Ok(0) => {}
        Ok(code) => {
            for line in outcome.lines.iter().rev().take(20).rev() {
                eprintln!("  | {line}");
            }
            return Err(Error::new(format!(
                "{arch}: the profiled bench scenario failed (exit code {code}); its last lines \
                 are above"
            )));
        }
        Err(error) => return Err(error),
    }
    let outcome = outcome.lines;
    let results: Vec<_> = outcome
        .iter()
        .filter_map(|line| crate::bench::parse_line(line))
        .collect();
    let operations = outcome
        .iter()
        .find_map(|line| profile_loop_operations(line));
    let median = results
        .iter()
        .find(|result| result.name == name)
        .map(|result| result.median)
        .ok_or_else(|| {
            Error::new(format!(
                "{arch}: the profiled run printed no `bench {name} …` line"
            ))
        })?;
    let (Some(operations), true) = (operations, counts.armed && counts.ended) else {
        return Err(Error::new(format!(
            "{arch}: {name} ran no profile loop ({} blocks executed, none of them the loop's): \
             only benchmarks the bench program measures in `measure` or `measure_clock` \
             can be profiled, not those the kernel measures or `timer_tick`",
            counts.executed_blocks
        )));
    };
    Ok(Boot {
        counts,
        operations,
        median,
    })
}

fn make_fifo(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let status = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(path)
        .status()
        .context(|| "cannot run mkfifo".to_owned())?;
    if !status.success() {
        return Err(Error::new(format!(
            "mkfifo {} failed ({status})",
            path.display()
        )));
    }
    Ok(())
}

/// The printed summary and the per-address listing.
struct Report {
    summary: String,
    addresses: String,
}

/// The innermost of Keel's own functions the code at `address` belongs to, inlined or not,
/// as `name (file)`: the innermost frame whose code is in a file of the repository under
/// `root` (a `core` or `alloc` function inlined into it counts in it: `ptr::write` inside
/// the kernel's `Lock::lock` counts as the lock), from the ELF's debug info.
fn project_frame(loader: &addr2line::Loader, address: u64, root: &Path) -> Option<String> {
    let mut frames = loader.find_frames(address).ok()?;
    let mut outermost = None;
    while let Ok(Some(frame)) = frames.next() {
        let name = frame
            .function
            .as_ref()
            .and_then(|function| function.raw_name().ok())
            .map(|name| {
                let name = demangle(&name);
                // Generic arguments make the names long and add nothing here.
                match name.find('<') {
                    Some(0) | None => name,
                    Some(at) => name[..at].to_owned(),
                }
            });
        let file = frame
            .location
            .as_ref()
            .and_then(|location| location.file)
            .and_then(|file| Path::new(file).strip_prefix(root).ok())
            .map(|file| file.display().to_string());
        match (name, file) {
            (Some(name), Some(file)) => return Some(format!("{name} ({file})")),
            (name, _) => outermost = name.or(outermost),
        }
    }
    outermost
}

fn report(
    arch: Arch,
    name: &str,
    first: &Boot,
    second: &Boot,
    extra: u64,
    (kernel, user): (&Symbols, &Symbols),
    source: &dyn Fn(u64) -> Option<String>,
) -> Report {
    let mut per_address: Vec<(u64, i64)> = first
        .counts
        .per_address
        .keys()
        .chain(second.counts.per_address.keys())
        .copied()
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .map(|address| {
            let count = |boot: &Boot| boot.counts.per_address.get(&address).copied().unwrap_or(0);
            (address, count(second) as i64 - count(first) as i64)
        })
        .filter(|&(_, difference)| difference != 0)
        .collect();
    per_address.sort_by_key(|&(address, _)| address);
    let per_op = |difference: i64| difference as f64 / extra as f64;
    let symbols_of = |address: u64| if address >= UPPER_HALF { kernel } else { user };
    let mut functions: HashMap<(bool, String), i64> = HashMap::new();
    // Per function, its count by the innermost of Keel's functions the code came from.
    let mut parts: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut addresses = String::new();
    let (mut kernel_total, mut user_total) = (0i64, 0i64);
    for &(address, difference) in &per_address {
        let in_kernel = address >= UPPER_HALF;
        let function = symbols_of(address)
            .function(address)
            .map_or_else(|| "?".to_owned(), |function| function.name.clone());
        let part = source(address).unwrap_or_else(|| function.clone());
        let _ = writeln!(
            addresses,
            "{address:#018x} {:>9.2} {function} [{part}]",
            per_op(difference)
        );
        *parts
            .entry(function.clone())
            .or_default()
            .entry(part)
            .or_default() += difference;
        *functions.entry((in_kernel, function)).or_default() += difference;
        if in_kernel {
            kernel_total += difference;
        } else {
            user_total += difference;
        }
    }
    let mut functions: Vec<_> = functions.into_iter().collect();
    functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{arch}: {name}, guest instructions per operation by function ({extra} more \
         operations in the second boot; bench medians {} and {})",
        first.median, second.median
    );
    let _ = writeln!(summary, "{:>9}  {:<6}  function", "per op", "where");
    for ((in_kernel, function), difference) in &functions {
        if per_op(*difference).abs() < 0.05 {
            continue;
        }
        let _ = writeln!(
            summary,
            "{:>9.2}  {:<6}  {function}",
            per_op(*difference),
            if *in_kernel { "kernel" } else { "user" }
        );
        // A function with more than a few instructions: where they came from.
        let Some(parts) = parts.get(function) else {
            continue;
        };
        if per_op(*difference) < 10.0 || parts.len() < 2 {
            continue;
        }
        let mut parts: Vec<_> = parts.iter().collect();
        parts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (part, count) in parts {
            if per_op(*count).abs() >= 0.05 {
                let _ = writeln!(summary, "{:>17.2}    {part}", per_op(*count));
            }
        }
    }
    let _ = writeln!(
        summary,
        "{:>9.2}  total: kernel {:.2}, user {:.2} (blocks without a listing: {} and {})",
        per_op(kernel_total + user_total),
        per_op(kernel_total),
        per_op(user_total),
        first.counts.unknown_blocks,
        second.counts.unknown_blocks
    );
    Report { summary, addresses }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
----------------
IN: 
0x0000000000400000:  55                       pushq    %rbp
0x0000000000400001:  48 89 e5                 movq     %rsp, %rbp

Trace 0: 0x7f0000001000 [00000000/0000000000400000/00000000/ff000000] 
----------------
IN: 
0x0000000000400100:  90                       nop
0x0000000000400101:  90                       nop
0x0000000000400102:  c3                       retq

Trace 0: 0x7f0000002000 [00000000/0000000000400100/00000000/ff000000] 
Trace 0: 0x7f0000001000 [00000000/0000000000400000/00000000/ff000000] 
Trace 0: 0x7f0000002000 [00000000/0000000000400100/00000000/ff000000] 
----------------
IN: 
0x0000000000400100:  90                       nop

Trace 0: 0x7f0000003000 [00000000/0000000000400100/00000000/ff000000] 
Trace 0: 0x7f0000002000 [00000000/0000000000400100/00000000/ff000000] 
";

    fn window(from: u64, to: u64) -> Window {
        Window {
            from: vec![from],
            to: vec![to],
        }
    }

    #[test]
    fn counts_start_at_the_arming_block_and_follow_host_blocks() {
        let counts = count_log(LOG.as_bytes(), &window(0x400100, 0x500000));
        assert!(counts.armed && !counts.ended);
        assert_eq!(counts.unknown_blocks, 0);
        // From the first 0x400100 on: the 3-instruction block three times, the 2-instruction
        // block once, and the 1-instruction retranslation once.
        assert_eq!(counts.per_address[&0x400100], 4);
        assert_eq!(counts.per_address[&0x400101], 3);
        assert_eq!(counts.per_address[&0x400102], 3);
        assert_eq!(counts.per_address[&0x400000], 1);
        assert_eq!(counts.per_address[&0x400001], 1);
    }

    #[test]
    fn nothing_counts_without_the_arming_block() {
        let counts = count_log(LOG.as_bytes(), &window(0x500000, 0x400000));
        assert!(!counts.armed);
        assert!(counts.per_address.is_empty());
    }

    #[test]
    fn counting_ends_at_the_window_end() {
        // From the first 0x400100 to the next 0x400000: one 3-instruction block.
        let counts = count_log(LOG.as_bytes(), &window(0x400100, 0x400000));
        assert!(counts.armed && counts.ended);
        assert_eq!(counts.per_address[&0x400100], 1);
        assert_eq!(counts.per_address.get(&0x400000), None);
    }

    #[test]
    fn trace_lines_parse() {
        assert_eq!(
            parse_trace(b"Trace 0: 0x7f3c80012340 [00000000/ffffffff80026e00/00000000/ff000000] "),
            Some((0x7f3c80012340, 0xffffffff80026e00))
        );
        assert_eq!(parse_trace(b"Trace: nonsense"), None);
        assert_eq!(
            hex_before_colon(b"ffffffff80026e00:  55  pushq"),
            Some(0xffffffff80026e00)
        );
    }

    #[test]
    fn profile_loop_lines_parse() {
        assert_eq!(
            profile_loop_operations("bench: profile loop of 1600 operations"),
            Some(1600)
        );
        assert_eq!(
            profile_loop_operations("bench: profile loop of many operations"),
            None
        );
        assert_eq!(profile_loop_operations("bench ipc_call_reply min=1"), None);
    }
}
