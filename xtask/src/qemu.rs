//! Running an image in QEMU and turning how QEMU ended into the kernel's exit code.
//!
//! Two modes:
//! - **interactive** (no timeout, no log, not captured): `-serial mon:stdio`, QEMU owns the
//!   terminal; quit with Ctrl-A X.
//! - **piped** (a timeout, a serial log, or a library caller that wants the lines): QEMU's
//!   stdout is read line by line, echoed to the terminal, written to the log and kept for the
//!   caller; stdin is not forwarded (quit with Ctrl-C), so a killed QEMU never leaves the
//!   terminal in raw mode.
//!
//! How the kernel reports its exit code (DESIGN.md §8): on x86_64 it writes `code` to the
//! `isa-debug-exit` port and QEMU exits with `(code << 1) | 1`; on AArch64 it makes the
//! semihosting `SYS_EXIT` call and QEMU exits with `code`. QEMU's own failures also exit
//! with 1, which on x86_64 reads as kernel code 0; QEMU prints an error on stderr first, so
//! stderr is watched and such an ending is reported as a QEMU failure instead.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::image::RunImage;
use crate::prereq::Firmware;
use crate::symbolize::{SymbolFiles, Symbolizer};
use crate::{Arch, Context, Error, Result, Workspace, step};

/// The options of `cargo xtask qemu-<arch>`, plus two for library callers.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    pub arch: Arch,
    pub smp: u32,
    /// `-m`, e.g. `256M`.
    pub mem: String,
    /// `-cpu`; `None` means [`default_cpu`].
    pub cpu: Option<String>,
    /// GIC version on AArch64 (2 or 3).
    pub gic: u8,
    /// Wait for a debugger on `localhost:<gdb_port>` (`-s -S` for the default port).
    pub gdb: bool,
    /// The port of QEMU's gdb stub ([`GDB_PORT`] unless a caller needs its own).
    pub gdb_port: u16,
    /// Start QEMU in a process group of its own, so a Ctrl-C typed at the terminal (meant
    /// for a debugger in the foreground) does not reach it.
    pub own_process_group: bool,
    /// Kill QEMU after this long and report a timeout.
    pub timeout: Option<Duration>,
    /// Also write the serial output to this file.
    pub serial_log: Option<PathBuf>,
    /// Appended to QEMU's command line as given (after `--`).
    pub extra_args: Vec<String>,
    /// Library callers: read the serial output even without a timeout or log, and echo it
    /// through `println!` (which a test harness captures).
    pub capture: bool,
    /// Library callers: once a serial line contains this text, allow only this much longer
    /// (so a test that expects a timeout waits for the boot, then briefly).
    pub deadline_after: Option<(String, Duration)>,
    /// Echo the serial output to the terminal (piped mode).
    pub echo: bool,
    /// The ELF files that name the code addresses of the kernel's reports (piped mode and
    /// sessions): each such line gets `function (file:line)` appended as it is relayed.
    pub symbols: Option<SymbolFiles>,
}

impl QemuOptions {
    /// The defaults of `cargo xtask qemu-<arch>`.
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            smp: 1,
            mem: "256M".to_owned(),
            cpu: None,
            gic: 3,
            gdb: false,
            gdb_port: GDB_PORT,
            own_process_group: false,
            timeout: None,
            serial_log: None,
            extra_args: Vec::new(),
            capture: false,
            deadline_after: None,
            echo: true,
            symbols: None,
        }
    }

    /// Whether QEMU's stdout is read by the xtask rather than given the terminal.
    pub fn piped(&self) -> bool {
        self.timeout.is_some() || self.serial_log.is_some() || self.capture
    }

    /// How the user stops this run.
    pub fn quit_hint(&self) -> &'static str {
        if self.piped() {
            "quit QEMU with Ctrl-C (the serial console is output-only with --timeout or --serial-log)"
        } else {
            "quit QEMU with Ctrl-A X (Ctrl-A C for the QEMU monitor)"
        }
    }
}

/// The port QEMU's `-s` opens for gdb.
pub const GDB_PORT: u16 = 1234;

/// The CPU model used when `--cpu` is not given.
pub fn default_cpu(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu64",
        Arch::Aarch64 => "cortex-a72",
    }
}

/// QEMU's arguments (without the program) for booting `image`.
pub fn arguments(
    options: &QemuOptions,
    firmware: &Firmware,
    vars_copy: &Path,
    image: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|item| item.to_string()));
    match options.arch {
        Arch::X86_64 => push(&["-machine", "q35"]),
        Arch::Aarch64 => {
            push(&[
                "-machine",
                &format!("virt,acpi=off,gic-version={}", options.gic),
            ]);
            push(&["-semihosting-config", "enable=on,target=native"]);
        }
    }
    let cpu = options.cpu.as_deref().unwrap_or(default_cpu(options.arch));
    push(&[
        "-cpu",
        cpu,
        "-smp",
        &options.smp.to_string(),
        "-m",
        &options.mem,
    ]);
    push(&[
        "-drive",
        &format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            firmware.code.display()
        ),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display()),
    ]);
    push(&[
        "-drive",
        &format!("file={},format=raw,if=none,id=disk", image.display()),
        "-device",
        "virtio-blk-pci,drive=disk",
    ]);
    if options.arch == Arch::X86_64 {
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    }
    push(&["-display", "none", "-nic", "none", "-no-reboot"]);
    if options.piped() {
        push(&["-serial", "stdio", "-monitor", "none"]);
    } else {
        push(&["-serial", "mon:stdio"]);
    }
    if options.gdb && options.gdb_port == GDB_PORT {
        push(&["-s", "-S"]);
    } else if options.gdb {
        push(&["-gdb", &format!("tcp:127.0.0.1:{}", options.gdb_port), "-S"]);
    }
    args.extend(options.extra_args.iter().cloned());
    args
}

/// How a QEMU run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The kernel powered the machine off with this exit code.
    Exit(u8),
    /// QEMU was killed after this many seconds (rounded).
    Timeout(u64),
    /// QEMU ended without a kernel exit code; the text says how and what it likely means.
    NoExitCode(String),
}

impl Ending {
    /// The xtask's result for this ending: the kernel's code, or the error line.
    pub fn into_result(self) -> Result<u8> {
        match self {
            Ending::Exit(code) => Ok(code),
            Ending::Timeout(seconds) => Err(Error::timeout(seconds)),
            Ending::NoExitCode(why) => Err(Error::forwarded(125, why)),
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    /// The serial lines (piped mode only), with `\r` and terminal escape sequences removed.
    pub lines: Vec<String>,
}

impl Outcome {
    /// The first serial line that contains `text`.
    pub fn line_containing(&self, text: &str) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|line| line.contains(text))
    }

    /// The first serial line that starts with `prefix`, ignoring anything the firmware left
    /// before the kernel's first output on the same line.
    pub fn line_starting(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|line| line.find(prefix).map(|at| &line[at..]))
    }
}

/// Map QEMU's exit status to an [`Ending`]. `qemu_error` says whether QEMU printed an error
/// on stderr.
pub fn ending_from_status(arch: Arch, status: Option<i32>, qemu_error: bool) -> Ending {
    let Some(status) = status else {
        return Ending::NoExitCode("QEMU was killed by a signal".to_owned());
    };
    if qemu_error && status == 1 {
        return Ending::NoExitCode(
            "QEMU failed (its error is printed above); fix the option or file it names".to_owned(),
        );
    }
    match arch {
        Arch::X86_64 if status & 1 == 1 => Ending::Exit((status >> 1) as u8),
        Arch::X86_64 if status == 0 => Ending::NoExitCode(
            "QEMU exited without the kernel's exit code: quit by the user, or a triple fault \
             reset the machine (-no-reboot); the serial output above shows which"
                .to_owned(),
        ),
        Arch::X86_64 => Ending::NoExitCode(format!(
            "QEMU exited with status {status}, which isa-debug-exit never produces; see its \
             messages above"
        )),
        Arch::Aarch64 => Ending::Exit(status as u8),
    }
}

/// Remove `\r` and ANSI escape sequences (the firmware clears the screen on serial).
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    // nF escapes (ESC ( B selects a character set): intermediates in
                    // space../, then one final byte.
                    while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A per-run copy of the firmware variables (the firmware writes to them), removed on drop.
struct VarsCopy(PathBuf);

impl VarsCopy {
    fn new(workspace: &Workspace, firmware: &Firmware, arch: Arch) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = workspace.images_dir();
        std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("vars-{arch}-{}-{n}.fd", std::process::id()));
        std::fs::copy(&firmware.vars, &path).context(|| {
            format!(
                "cannot copy {} to {}",
                firmware.vars.display(),
                path.display()
            )
        })?;
        Ok(Self(path))
    }
}

impl Drop for VarsCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Boot `image` in QEMU and wait for it to end.
pub fn run(
    workspace: &Workspace,
    options: &QemuOptions,
    firmware: &Firmware,
    image: &Path,
) -> Result<Outcome> {
    let _image = RunImage::claim(image);
    let vars = VarsCopy::new(workspace, firmware, options.arch)?;
    let args = arguments(options, firmware, &vars.0, image);
    let program = options.arch.qemu_binary();
    let mut command = qemu_command(workspace, program, options.own_process_group);
    command.args(&args).stderr(Stdio::piped());
    if options.piped() {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
    }
    let mut log = match &options.serial_log {
        Some(path) => {
            Some(File::create(path).context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };
    let started = Instant::now();
    let mut child = command.spawn().map_err(|error| {
        Error::new(format!(
            "cannot start {program}: {error}; is QEMU installed?"
        ))
    })?;

    let qemu_error = Arc::new(AtomicBool::new(false));
    let stderr = watch_stderr(&mut child, qemu_error.clone(), !options.piped());
    let result = if options.piped() {
        wait_piped(&mut child, options, log.as_mut())
    } else {
        let status = child.wait().context(|| format!("waiting for {program}"))?;
        Ok((Some(status), Vec::new()))
    };
    let (status, lines) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let _ = stderr.join();
    let ending = match status {
        // Killed at the deadline: report the time it actually had (a library caller's
        // `deadline_after` may have cut the timeout short).
        None => Ending::Timeout(started.elapsed().as_secs_f64().round() as u64),
        Some(status) => ending_from_status(
            options.arch,
            status.code(),
            qemu_error.load(Ordering::Relaxed),
        ),
    };
    Ok(Outcome { ending, lines })
}

/// Echo QEMU's stderr and note whether it reported an error (not a warning).
fn watch_stderr(
    child: &mut Child,
    qemu_error: Arc<AtomicBool>,
    raw_terminal: bool,
) -> std::thread::JoinHandle<()> {
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if line.starts_with("qemu") && !line.contains("warning:") {
                qemu_error.store(true, Ordering::Relaxed);
            }
            // In interactive mode QEMU has put the terminal in raw mode: return the carriage.
            if raw_terminal {
                eprint!("{line}\r\n");
            } else {
                eprintln!("{line}");
            }
        }
    })
}

/// Read serial lines until QEMU exits (`Some(status)`) or the deadline passes (`None`,
/// QEMU killed).
fn wait_piped(
    child: &mut Child,
    options: &QemuOptions,
    mut log: Option<&mut File>,
) -> Result<(Option<std::process::ExitStatus>, Vec<String>)> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut stdout = stdout;
        let mut buffer = [0u8; 4096];
        loop {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    if sender.send(buffer[..count].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut symbolizer = options.symbols.clone().map(Symbolizer::new);
    let start = Instant::now();
    let mut deadline = options.timeout.map(|timeout| start + timeout);
    let mut lines = Vec::new();
    let mut partial = Partial::default();
    let mut stdout_open = true;
    let poll = Duration::from_millis(100);
    let mut take = |raw: &[u8],
                    partial: &mut Partial,
                    deadline: &mut Option<Instant>,
                    lines: &mut Vec<String>|
     -> Result<()> {
        for raw in partial.push(raw) {
            let echoed = partial.echoed_of_last;
            let line = take_line(
                options,
                symbolizer.as_mut(),
                &raw,
                echoed,
                log.as_deref_mut(),
            )?;
            partial.echoed_of_last = 0;
            if let Some((text, extra)) = &options.deadline_after
                && line.contains(text.as_str())
            {
                let soon = Instant::now() + *extra;
                *deadline = Some(deadline.map_or(soon, |deadline| deadline.min(soon)));
            }
            lines.push(line);
        }
        // A prompt does not end its line: show what there is of it at once.
        if options.echo && !options.capture {
            partial.echo_pending();
        }
        Ok(())
    };
    let status = loop {
        let wait = deadline.map_or(poll, |deadline| {
            deadline.saturating_duration_since(Instant::now()).min(poll)
        });
        if stdout_open {
            match receiver.recv_timeout(wait) {
                Ok(raw) => take(&raw, &mut partial, &mut deadline, &mut lines)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => stdout_open = false,
            }
        } else {
            std::thread::sleep(wait);
        }
        if let Some(status) = child.try_wait().context(|| "waiting for QEMU".to_owned())? {
            break Some(status);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
    };
    // QEMU is gone, so its stdout is closed: collect what it wrote last.
    let _ = reader.join();
    for raw in receiver.try_iter() {
        take(&raw, &mut partial, &mut deadline, &mut lines)?;
    }
    // A last line without a newline.
    if !partial.pending.is_empty() {
        take(b"\n", &mut partial, &mut deadline, &mut lines)?;
    }
    Ok((status, lines))
}

/// The serial output's unfinished last line, and how much of it the terminal has shown.
#[derive(Default)]
struct Partial {
    /// Bytes after the last newline.
    pending: Vec<u8>,
    /// How many bytes of the pending line were echoed.
    echoed: usize,
    /// For the first line [`Partial::push`] just completed: how many of its bytes were
    /// echoed before its newline came (the caller zeroes it after that line).
    echoed_of_last: usize,
}

impl Partial {
    /// Add `raw`; return the lines it completes (without their newlines).
    fn push(&mut self, raw: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for &byte in raw {
            if byte == b'\n' {
                done.push(std::mem::take(&mut self.pending));
                // Only the first completed line can have been echoed in part.
                if done.len() == 1 {
                    self.echoed_of_last = self.echoed;
                }
                self.echoed = 0;
            } else {
                self.pending.push(byte);
            }
        }
        if done.is_empty() {
            self.echoed_of_last = 0;
        }
        done
    }

    /// Print the part of the pending line not shown yet, as it came (the terminal puts
    /// split characters and escape sequences back together).
    fn echo_pending(&mut self) {
        if self.pending.len() > self.echoed {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&self.pending[self.echoed..]);
            let _ = stdout.flush();
            self.echoed = self.pending.len();
        }
    }
}

/// Echo and log one serial line, with the names of its code addresses appended; returns
/// the cleaned line as kept (names included). The first `echoed` bytes of `raw` are on the
/// terminal already (shown before its newline came).
fn take_line(
    options: &QemuOptions,
    symbolizer: Option<&mut Symbolizer>,
    raw: &[u8],
    echoed: usize,
    log: Option<&mut File>,
) -> Result<String> {
    let mut line = clean_line(&String::from_utf8_lossy(raw));
    let names = symbolizer
        .and_then(|symbolizer| symbolizer.annotate(&line))
        .unwrap_or_default();
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if options.echo && options.capture {
        // A library caller (a test): go through `println!`, which the test harness captures.
        println!("{}{names}", String::from_utf8_lossy(raw));
    } else if options.echo {
        // The terminal: a closed stdout (`| head`) must not stop the run.
        let rest = raw.get(echoed..).unwrap_or_default();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(rest);
        let _ = writeln!(stdout, "{names}");
        let _ = stdout.flush();
    }
    line.push_str(&names);
    if let Some(log) = log {
        writeln!(log, "{line}").context(|| "cannot write the serial log".to_owned())?;
    }
    Ok(line)
}

/// A running QEMU driven over its serial line: the caller writes to the guest's serial input
/// (QEMU's stdin behind `-serial stdio`) and reads the output as it arrives, prompts without
/// a newline included — for tests that type into a shell.
///
/// Bytes written before the guest reads them wait in the pipe: QEMU only takes input when
/// the UART has room, so nothing is lost, but the firmware also reads the serial line
/// during boot, so callers wait for the guest's first prompt before typing.
///
/// Every wait has a deadline (it bounds a hang, it is not a speed check). Dropping a
/// session kills QEMU if it still runs.
pub struct Session {
    arch: Arch,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    chunks: mpsc::Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<()>>,
    qemu_error: Arc<AtomicBool>,
    /// The firmware variables copy, removed when the session ends.
    _vars: Option<VarsCopy>,
    /// This run's own image, removed when the session ends.
    _image: Option<RunImage>,
    /// Echo whole output lines through `println!` (a test harness captures them).
    echo: bool,
    /// Names the code addresses of echoed and finished lines.
    symbolizer: Option<Symbolizer>,
    /// Everything QEMU wrote to stdout so far.
    output: Vec<u8>,
    /// Where the next `expect_*` starts looking in `output`.
    cursor: usize,
    /// How much of `output` has been echoed (always up to a newline).
    echoed: usize,
    /// The output ended (QEMU closed its stdout).
    closed: bool,
    /// Set once QEMU's exit status has been collected.
    status: Option<std::process::ExitStatus>,
}

/// Start QEMU on `image` for a [`Session`]: serial on piped stdin/stdout, no monitor.
pub fn start(
    workspace: &Workspace,
    options: &QemuOptions,
    firmware: &Firmware,
    image: &Path,
) -> Result<Session> {
    let run_image = RunImage::claim(image);
    let vars = VarsCopy::new(workspace, firmware, options.arch)?;
    // A session always reads QEMU's stdout (`-serial stdio -monitor none`).
    let mut piped = options.clone();
    piped.capture = true;
    let args = arguments(&piped, firmware, &vars.0, image);
    let program = options.arch.qemu_binary();
    let mut command = qemu_command(workspace, program, options.own_process_group);
    let child = command
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            Error::new(format!(
                "cannot start {program}: {error}; is QEMU installed?"
            ))
        })?;
    let mut session = Session::attach(child, options.arch, options.echo, Some(vars));
    session.symbolizer = options.symbols.clone().map(Symbolizer::new);
    session._image = run_image;
    Ok(session)
}

/// End this process (with `SIGKILL`) when the thread that started it ends: the xtask run
/// as `cargo xtask …` goes when its cargo is killed, and its QEMU with it. Linux only; a
/// no-op elsewhere.
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: `prctl(PR_SET_PDEATHSIG)` only sets this process's parent-death signal; it
    // takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The command that starts QEMU: in a process group of its own when asked, and, on Linux,
/// killed when the thread that started it ends, so a killed xtask never leaves QEMU
/// running. (The parent is the thread: [`run`] waits in the thread that started QEMU, and
/// a [`Session`] must be ended by the thread that started it.)
fn qemu_command(
    workspace: &Workspace,
    program: &str,
    own_process_group: bool,
) -> std::process::Command {
    let mut command = workspace.command(program);
    if own_process_group {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the hook runs in the forked child before `exec` and calls only
        // async-signal-safe functions (`prctl`, `getppid`, `_exit`); it allocates nothing
        // and touches no lock.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The xtask died between the fork and the `prctl`: no signal will come.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    command
}

impl Session {
    /// Wrap a started child whose stdin, stdout and stderr are piped.
    fn attach(mut child: Child, arch: Arch, echo: bool, vars: Option<VarsCopy>) -> Self {
        let qemu_error = Arc::new(AtomicBool::new(false));
        let stderr = watch_stderr(&mut child, qemu_error.clone(), false);
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (sender, chunks) = mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            loop {
                match stdout.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(count) => {
                        if sender.send(buffer[..count].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Session {
            arch,
            child,
            stdin,
            chunks,
            reader: Some(reader),
            stderr: Some(stderr),
            qemu_error,
            _vars: vars,
            _image: None,
            echo,
            symbolizer: None,
            output: Vec::new(),
            cursor: 0,
            echoed: 0,
            closed: false,
            status: None,
        }
    }

    /// Write `bytes` to the guest's serial input.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::new("the serial input of this session is closed"))?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .context(|| "cannot write to QEMU's serial input (has QEMU ended?)".to_owned())
    }

    /// Type `text` and Enter (a carriage return, as a terminal sends it).
    pub fn send_line(&mut self, text: &str) -> Result<()> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(b'\r');
        self.send(&bytes)
    }

    /// Wait until `text` appears after the previous match (it need not end a line: a prompt
    /// such as `keel> ` does not); the next search starts right after it.
    pub fn expect_text(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let at = self.wait_for(text.as_bytes(), None, timeout)?;
        self.cursor = at + text.len();
        Ok(())
    }

    /// Wait for a whole output line, after the previous match, that contains `text`; return
    /// it from `text` on, cleaned like [`Outcome::lines`]. The next search starts on the
    /// following line.
    pub fn expect_line(&mut self, text: &str, timeout: Duration) -> Result<String> {
        let at = self.wait_for(text.as_bytes(), Some(b'\n'), timeout)?;
        let end = at
            + self.output[at..]
                .iter()
                .position(|&byte| byte == b'\n')
                .expect("wait_for found the newline");
        let line = clean_line(&String::from_utf8_lossy(&self.output[at..end]));
        self.cursor = end + 1;
        Ok(line)
    }

    /// Take what QEMU writes for at most `wait` and return the lines completed since the
    /// previous call, cleaned and with their code addresses named (for a caller that relays
    /// the output itself: a session started with `echo` off). `None` once QEMU's output
    /// has ended and every line was returned.
    pub fn relay(&mut self, wait: Duration) -> Option<Vec<String>> {
        if !self.closed {
            self.pump(Instant::now() + wait);
        }
        let end = match self.output.iter().rposition(|&byte| byte == b'\n') {
            _ if self.closed => self.output.len(),
            Some(last) if last >= self.echoed => last + 1,
            _ => self.echoed,
        };
        if self.closed && self.echoed == end {
            return None;
        }
        let mut lines = split_lines(&self.output[self.echoed..end]);
        self.echoed = end;
        if let Some(symbolizer) = &mut self.symbolizer {
            for line in &mut lines {
                if let Some(names) = symbolizer.annotate(line) {
                    line.push_str(&names);
                }
            }
        }
        Some(lines)
    }

    /// Everything the guest printed so far, cleaned, one string (for failure messages).
    pub fn transcript(&self) -> String {
        split_lines(&self.output).join("\n")
    }

    /// Wait (at most `timeout`) for QEMU to end on its own — the guest powers off — and
    /// report how it ended with every serial line; QEMU is killed at the deadline.
    pub fn finish(mut self, timeout: Duration) -> Result<Outcome> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if let Some(status) = self.poll_exit()? {
                self.status = Some(status);
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            self.pump(Instant::now() + Duration::from_millis(100));
        }
        // QEMU is gone: its stdout is closed, so the reader ends; keep what it sent last.
        self.stdin = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        while let Ok(chunk) = self.chunks.try_recv() {
            self.take(chunk);
        }
        self.echo_rest();
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.join();
        }
        let ending = match self.status {
            None => Ending::Timeout(started.elapsed().as_secs_f64().round() as u64),
            Some(status) => ending_from_status(
                self.arch,
                status.code(),
                self.qemu_error.load(Ordering::Relaxed),
            ),
        };
        let mut lines = split_lines(&self.output);
        if let Some(symbolizer) = &mut self.symbolizer {
            symbolizer.restart();
            for line in &mut lines {
                if let Some(names) = symbolizer.annotate(line) {
                    line.push_str(&names);
                }
            }
        }
        Ok(Outcome { ending, lines })
    }

    /// The position of `needle` in the output after the cursor, once it is there (and,
    /// with `then`, once that byte follows it); an error at the deadline or when QEMU ends.
    fn wait_for(&mut self, needle: &[u8], then: Option<u8>, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(offset) = find(&self.output[self.cursor..], needle) {
                let at = self.cursor + offset;
                let complete =
                    then.is_none_or(|byte| self.output[at + needle.len()..].contains(&byte));
                if complete {
                    return Ok(at);
                }
            }
            let what = String::from_utf8_lossy(needle);
            if self.closed {
                let status = self.poll_exit()?;
                return Err(Error::new(format!(
                    "QEMU ended ({}) before the serial output showed {what:?}",
                    status.map_or("status unknown".to_owned(), |status| status.to_string())
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "no {what:?} on the serial output within {} s",
                    timeout.as_secs()
                )));
            }
            self.pump(deadline);
        }
    }

    /// Take what QEMU wrote, waiting at most until `until` for the first piece.
    fn pump(&mut self, until: Instant) {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match self.chunks.recv_timeout(wait) {
            Ok(chunk) => {
                self.take(chunk);
                while let Ok(chunk) = self.chunks.try_recv() {
                    self.take(chunk);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Nothing more will come; wait as a receive would have.
                self.closed = true;
                std::thread::sleep(wait);
            }
        }
    }

    fn take(&mut self, chunk: Vec<u8>) {
        self.output.extend_from_slice(&chunk);
        if !self.echo {
            return;
        }
        if let Some(last) = self.output.iter().rposition(|&byte| byte == b'\n')
            && last >= self.echoed
        {
            for line in split_lines(&self.output[self.echoed..last]) {
                self.echo_line(line);
            }
            self.echoed = last + 1;
        }
    }

    fn echo_line(&mut self, line: String) {
        let names = self
            .symbolizer
            .as_mut()
            .and_then(|symbolizer| symbolizer.annotate(&line))
            .unwrap_or_default();
        println!("{line}{names}");
    }

    /// Echo a last line that has no newline (a prompt left when QEMU ended).
    fn echo_rest(&mut self) {
        if self.echo && self.echoed < self.output.len() {
            for line in split_lines(&self.output[self.echoed..]) {
                self.echo_line(line);
            }
            self.echoed = self.output.len();
        }
    }

    fn poll_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        self.status = self
            .child
            .try_wait()
            .context(|| "waiting for QEMU".to_owned())?;
        Ok(self.status)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Raw serial output as cleaned lines (a last line without a newline included).
fn split_lines(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\n').map(clean_line).collect()
}

/// The exact command that attaches a debugger to a `--gdb` run (QEMU's default port).
pub fn gdb_command(workspace: &Workspace, arch: Arch, kernel: &Path) -> String {
    let gdb = match arch {
        Arch::Aarch64 if crate::prereq::find_in_path(workspace, "gdb-multiarch").is_some() => {
            "gdb-multiarch"
        }
        _ => "gdb",
    };
    format!(
        "{gdb} {} -ex 'target remote localhost:1234'",
        kernel.display()
    )
}

/// Print where the run stands before QEMU starts.
pub fn announce(options: &QemuOptions, image: &Path) {
    let timeout = options.timeout.map_or(String::new(), |timeout| {
        format!(", timeout {} s", timeout.as_secs())
    });
    step(format_args!(
        "booting {} in {}{timeout}; {}",
        image.display(),
        options.arch.qemu_binary(),
        options.quit_hint()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firmware() -> Firmware {
        Firmware {
            code: "/fw/CODE.fd".into(),
            vars: "/fw/VARS.fd".into(),
        }
    }

    fn joined(options: &QemuOptions) -> String {
        arguments(
            options,
            &firmware(),
            Path::new("/t/vars.fd"),
            Path::new("/t/keel.img"),
        )
        .join(" ")
    }

    #[test]
    fn x86_command_line() {
        let mut options = QemuOptions::new(Arch::X86_64);
        options.extra_args = vec!["-d".into(), "int".into()];
        let line = joined(&options);
        assert_eq!(
            line,
            "-machine q35 -cpu qemu64 -smp 1 -m 256M \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd \
             -drive if=pflash,format=raw,unit=1,file=/t/vars.fd \
             -drive file=/t/keel.img,format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -display none -nic none -no-reboot -serial mon:stdio -d int"
        );
    }

    #[test]
    fn aarch64_command_line_piped_with_gdb() {
        let mut options = QemuOptions::new(Arch::Aarch64);
        options.gic = 2;
        options.smp = 4;
        options.mem = "1G".into();
        options.cpu = Some("max".into());
        options.gdb = true;
        options.timeout = Some(Duration::from_secs(5));
        let line = joined(&options);
        assert!(line.starts_with(
            "-machine virt,acpi=off,gic-version=2 -semihosting-config enable=on,target=native \
             -cpu max -smp 4 -m 1G "
        ));
        assert!(line.contains(" -device virtio-blk-pci,drive=disk "));
        assert!(!line.contains("isa-debug-exit"));
        assert!(line.ends_with("-no-reboot -serial stdio -monitor none -s -S"));
    }

    /// QEMU runs an SMP guest of these targets with one host thread per vCPU
    /// (multi-threaded TCG) unless told otherwise; the SMP tests rely on the CPUs running
    /// at once, so no ordinary boot may ask for single-threaded TCG or `-icount` (which
    /// implies it). Only `cargo xtask bench` adds `-icount`, through `extra_args`.
    #[test]
    fn smp_boots_keep_multi_threaded_tcg() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let mut options = QemuOptions::new(arch);
            options.smp = 4;
            let line = joined(&options);
            assert!(line.contains(" -smp 4 "), "{line}");
            for forbidden in ["thread=single", "-icount", "-accel"] {
                assert!(!line.contains(forbidden), "{forbidden} in {line}");
            }
        }
    }

    #[test]
    fn exit_status_mapping() {
        use Ending::*;
        assert_eq!(ending_from_status(Arch::X86_64, Some(1), false), Exit(0));
        assert_eq!(ending_from_status(Arch::X86_64, Some(3), false), Exit(1));
        assert_eq!(ending_from_status(Arch::X86_64, Some(5), false), Exit(2));
        assert!(matches!(
            ending_from_status(Arch::X86_64, Some(1), true),
            NoExitCode(_)
        ));
        assert!(matches!(
            ending_from_status(Arch::X86_64, Some(0), false),
            NoExitCode(_)
        ));
        assert!(matches!(
            ending_from_status(Arch::X86_64, Some(2), false),
            NoExitCode(_)
        ));
        assert!(matches!(
            ending_from_status(Arch::X86_64, None, false),
            NoExitCode(_)
        ));
        assert_eq!(ending_from_status(Arch::Aarch64, Some(0), false), Exit(0));
        assert_eq!(ending_from_status(Arch::Aarch64, Some(2), false), Exit(2));
        assert!(matches!(
            ending_from_status(Arch::Aarch64, Some(1), true),
            NoExitCode(_)
        ));
        assert_eq!(Timeout(60).into_result().unwrap_err().exit_code(), 124);
        assert_eq!(Exit(1).into_result(), Ok(1));
    }

    #[test]
    fn lines_are_cleaned_and_found() {
        assert_eq!(
            clean_line("\x1b[2J\x1b[01;01HKeel 0.1.0 x86_64\r"),
            "Keel 0.1.0 x86_64"
        );
        assert_eq!(clean_line("\x1b(Bplain"), "plain");
        let outcome = Outcome {
            ending: Ending::Exit(0),
            lines: vec!["BdsDxe: starting".into(), "junkKeel 0.1.0 x86_64".into()],
        };
        assert_eq!(outcome.line_starting("Keel "), Some("Keel 0.1.0 x86_64"));
        assert_eq!(outcome.line_containing("BdsDxe"), Some("BdsDxe: starting"));
        assert_eq!(outcome.line_starting("nothing"), None);
    }

    #[test]
    fn session_sees_prompts_sends_input_and_collects_the_ending() {
        // A stand-in for a guest: a prompt without a newline, one line read from the serial
        // input and answered, then an exit status (x86_64: kernel code 1).
        let workspace = Workspace::from_env();
        let child = workspace
            .command("sh")
            .args([
                "-c",
                "printf 'boot\\r\\nkeel> '; read line; printf 'got %s\\n' \"$line\"; \
                 printf 'keel> '; read line; printf 'last %s\\n' \"$line\"; exit 3",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut session = Session::attach(child, Arch::X86_64, false, None);
        let wait = Duration::from_secs(20);
        session.expect_text("keel> ", wait).unwrap();
        session.send(b"hello\n").unwrap();
        assert_eq!(session.expect_line("got", wait).unwrap(), "got hello");
        // The previous prompt is behind the cursor: this finds the second one.
        session.expect_text("keel> ", wait).unwrap();
        let missing = session
            .expect_line("never printed", Duration::from_millis(300))
            .unwrap_err();
        assert!(missing.message().contains("never printed"), "{missing:?}");
        session.send(b"world\n").unwrap();
        assert_eq!(session.expect_line("last", wait).unwrap(), "last world");
        let outcome = session.finish(wait).unwrap();
        assert_eq!(outcome.ending, Ending::Exit(1));
        assert_eq!(
            outcome.lines,
            ["boot", "keel> got hello", "keel> last world"]
        );
    }

    #[test]
    fn session_reports_an_ending_before_the_expected_text() {
        let workspace = Workspace::from_env();
        let child = workspace
            .command("sh")
            .args(["-c", "printf 'partial'; exit 1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut session = Session::attach(child, Arch::Aarch64, false, None);
        let error = session
            .expect_text("keel> ", Duration::from_secs(20))
            .unwrap_err();
        assert!(error.message().contains("QEMU ended"), "{error:?}");
        assert_eq!(session.transcript(), "partial");
        let outcome = session.finish(Duration::from_secs(20)).unwrap();
        assert_eq!(outcome.ending, Ending::Exit(1));
        assert_eq!(outcome.lines, ["partial"]);
    }

    #[test]
    fn partial_lines_are_kept_until_their_newline() {
        let mut partial = Partial::default();
        assert!(partial.push(b"boot\r\nkeel").len() == 1);
        assert_eq!(partial.pending, b"keel");
        // What the terminal was shown of the prompt is not shown again.
        partial.echoed = 4;
        let done = partial.push(b"> ls\r\nbin\n");
        assert_eq!(done, [b"keel> ls\r".to_vec(), b"bin".to_vec()]);
        assert_eq!(partial.echoed_of_last, 4);
        assert_eq!(partial.echoed, 0);
        assert!(partial.push(b"x").is_empty());
        assert_eq!(partial.echoed_of_last, 0);
    }

    #[test]
    fn piped_run_times_out_and_reports_lines() {
        // A stand-in for QEMU: a shell that prints a banner, then never powers off.
        let workspace = Workspace::from_env();
        let mut options = QemuOptions::new(Arch::X86_64);
        options.timeout = Some(Duration::from_secs(30));
        options.deadline_after = Some(("banner".to_owned(), Duration::from_millis(300)));
        options.echo = false;
        let mut child = workspace
            .command("sh")
            .args(["-c", "printf 'fw\\r\\nbanner\\n'; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let (status, lines) = wait_piped(&mut child, &options, None).unwrap();
        assert_eq!(status, None);
        assert_eq!(lines, ["fw", "banner"]);
        assert!(started.elapsed() < Duration::from_secs(25));

        // And one that exits: the status and every line are kept.
        let mut child = workspace
            .command("sh")
            .args(["-c", "printf 'a\\nb'; exit 3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, lines) = wait_piped(&mut child, &options, None).unwrap();
        assert_eq!(status.and_then(|status| status.code()), Some(3));
        assert_eq!(lines, ["a", "b"]);
    }
}
