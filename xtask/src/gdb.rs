//! `cargo xtask gdb-x86` / `gdb-aarch64`: a debugger on the kernel in one command.
//!
//! Without `--attach`: build, write the image, start QEMU with its gdb stub on a free local
//! port, halted before the firmware runs, then start `gdb-multiarch` with the kernel's
//! symbols and every user program's (`add-symbol-file` at the address of its `.text`:
//! user programs are linked where they are loaded), connected, and stopped at the first
//! instruction of the kernel's entry `kmain` (a temporary breakpoint: QEMU's stub keeps it
//! outside guest memory, where the kernel is not loaded yet when gdb connects). The serial output goes to `target/gdb/serial-<arch>.log`, its code
//! addresses named as everywhere else; QEMU ends when gdb does.
//!
//! With `--attach`: only gdb, with the symbols of the last build, joined to a
//! `cargo xtask qemu-<arch> --gdb` boot that waits on port 1234.
//!
//! With `--batch "CMD; CMD"`: gdb runs the commands without a terminal and exits; its
//! output is printed and returned (tests), the serial output also echoed.
//!
//! QEMU runs in a process group of its own and the xtask ignores SIGINT while gdb runs, so
//! Ctrl-C reaches only gdb, which interrupts the guest.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::boot::{self, BootOptions};
use crate::compile::{self, Artifacts, WithLoader};
use crate::qemu::{self, GDB_PORT};
use crate::{Arch, Context, Error, Result, Workspace, prereq, step};

/// The function the loader jumps to: where a fresh session stops.
pub const KERNEL_ENTRY: &str = "kmain";

/// The subcommand for `arch` (`gdb-x86`, `gdb-aarch64`).
pub fn subcommand(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "gdb-x86",
        Arch::Aarch64 => "gdb-aarch64",
    }
}

/// What `cargo xtask gdb-<arch>` was asked for.
#[derive(Clone, Debug)]
pub struct GdbOptions {
    /// The boot (unused with `attach`, except its profile and architecture).
    pub boot: BootOptions,
    /// Join a running `--gdb` boot instead of starting one.
    pub attach: bool,
    /// The gdb stub's port: [`GDB_PORT`] for `attach`; `None` picks a free one for a boot.
    pub port: Option<u16>,
    /// Run these gdb commands without a terminal, then end.
    pub batch: Option<Vec<String>>,
    /// In batch mode, stop gdb and QEMU after this long.
    pub timeout: Duration,
}

impl GdbOptions {
    pub fn new(arch: Arch) -> Self {
        Self {
            boot: BootOptions::new(arch),
            attach: false,
            port: None,
            batch: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// How a session ended.
#[derive(Clone, Debug)]
pub struct GdbOutcome {
    /// gdb's exit status (`None`: killed at the batch timeout or by a signal).
    pub status: Option<i32>,
    /// gdb's output, stdout and stderr as they came (batch mode only).
    pub output: Vec<String>,
}

/// `gdb-multiarch` commands, one list of separate commands from `--batch` text: split at
/// `;` and newlines, blanks dropped.
pub fn split_commands(text: &str) -> Vec<String> {
    text.split([';', '\n'])
        .map(str::trim)
        .filter(|command| !command.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `-ex` commands gdb runs at start: settings, the symbol files, the connection and,
/// for a fresh boot, the way to the kernel's entry.
pub fn startup_commands(
    arch: Arch,
    kernel: &Path,
    user: &[(PathBuf, u64)],
    port: u16,
    fresh_boot: bool,
) -> Vec<String> {
    let architecture = match arch {
        Arch::X86_64 => "i386:x86-64",
        Arch::Aarch64 => "aarch64",
    };
    let mut commands = vec![
        "set pagination off".to_owned(),
        "set confirm off".to_owned(),
        format!("set architecture {architecture}"),
        format!("file {}", kernel.display()),
    ];
    for (elf, text) in user {
        commands.push(format!("add-symbol-file {} {text:#x}", elf.display()));
    }
    commands.push(format!("target remote 127.0.0.1:{port}"));
    if fresh_boot {
        commands.push(format!("thbreak *{KERNEL_ENTRY}"));
        commands.push("continue".to_owned());
    }
    commands
}

/// The address of an ELF's `.text` section.
pub fn text_address(elf: &Path) -> Result<u64> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(elf).context(|| format!("cannot read {}", elf.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|error| Error::new(format!("{} is no ELF file: {error}", elf.display())))?;
    file.section_by_name(".text")
        .map(|section| section.address())
        .ok_or_else(|| Error::new(format!("{} has no .text section", elf.display())))
}

/// Run a debugger session; `Ok` carries how gdb ended.
pub fn run(workspace: &Workspace, options: &GdbOptions) -> Result<GdbOutcome> {
    let arch = options.boot.qemu.arch;
    let gdb = prereq::ensure_gdb(workspace)?;
    if options.attach {
        let kernel = options
            .boot
            .kernel
            .unwrap_or_else(|| compile::KernelBuild::for_cmdline(&options.boot.cmdline));
        let artifacts = compile::locate(
            workspace,
            arch,
            options.boot.profile,
            kernel,
            WithLoader::Skip,
        )
        .map_err(|error| {
            Error::new(format!(
                "{}; --attach uses the symbols of the last build: boot with `cargo xtask {} \
                 --gdb` first",
                error.message(),
                arch.qemu_subcommand()
            ))
        })?;
        let port = options.port.unwrap_or(GDB_PORT);
        let commands = commands(&artifacts, port, false)?;
        step(format_args!(
            "attaching {} to the gdb stub on 127.0.0.1:{port}",
            gdb.display()
        ));
        let mut child = spawn(workspace, &gdb, &commands, options)?;
        let _interrupts = ignore_interrupts()?;
        return finish_gdb(&mut child, options, || {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
    }

    let port = match options.port {
        Some(port) => port,
        None => free_port()?,
    };
    let mut boot_options = options.boot.clone();
    boot_options.qemu.gdb = true;
    boot_options.qemu.gdb_port = port;
    boot_options.qemu.own_process_group = true;
    boot_options.qemu.echo = false;
    boot_options.qemu.capture = true;
    let (firmware, image, artifacts) = boot::prepare_artifacts(workspace, &boot_options)?;
    boot_options.qemu.symbols = Some(boot::symbol_files(workspace, &artifacts));
    let commands = commands(&artifacts, port, true)?;
    let log_path = workspace
        .target_dir()
        .join("gdb")
        .join(format!("serial-{arch}.log"));
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut log = std::fs::File::create(&log_path)
        .context(|| format!("cannot create {}", log_path.display()))?;
    let mut session = qemu::start(workspace, &boot_options.qemu, &firmware, &image)?;
    step(format_args!(
        "QEMU waits on 127.0.0.1:{port}; gdb runs to {KERNEL_ENTRY}; the serial output goes \
         to {} (tail -f it)",
        log_path.display()
    ));
    let mut child = spawn(workspace, &gdb, &commands, options)?;
    let _interrupts = ignore_interrupts()?;
    let echo = options.batch.is_some();
    let outcome = finish_gdb(&mut child, options, || {
        // Relay the serial output while gdb runs.
        if let Some(lines) = session.relay(Duration::from_millis(100)) {
            for line in lines {
                writeln!(log, "{line}").context(|| "cannot write the serial log".to_owned())?;
                if echo {
                    println!("{line}");
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    // The session's end kills QEMU.
    drop(session);
    outcome
}

/// The startup commands for `artifacts`.
fn commands(artifacts: &Artifacts, port: u16, fresh_boot: bool) -> Result<Vec<String>> {
    let user = artifacts
        .user
        .iter()
        .map(|(_, elf)| Ok((elf.clone(), text_address(elf)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(startup_commands(
        artifacts.arch,
        &artifacts.kernel,
        &user,
        port,
        fresh_boot,
    ))
}

/// A local TCP port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context(|| "cannot find a free local port for QEMU's gdb stub".to_owned())?;
    let port = listener
        .local_addr()
        .context(|| "cannot read the free port".to_owned())?
        .port();
    Ok(port)
}

/// While the returned guard lives, SIGINT (Ctrl-C) does not end the xtask: it is meant for
/// gdb, which shares the terminal.
fn ignore_interrupts() -> Result<SigintGuard> {
    let flag = Arc::new(AtomicBool::new(false));
    let id = signal_hook::flag::register(signal_hook::consts::SIGINT, flag)
        .context(|| "cannot catch SIGINT".to_owned())?;
    Ok(SigintGuard(id))
}

struct SigintGuard(signal_hook::SigId);

impl Drop for SigintGuard {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.0);
    }
}

/// Start gdb: on the terminal, or in batch mode with its output piped.
fn spawn(
    workspace: &Workspace,
    gdb: &Path,
    commands: &[String],
    options: &GdbOptions,
) -> Result<Child> {
    let mut command = workspace.command(gdb);
    command.args(["-q", "-nx"]);
    if options.batch.is_some() {
        command.arg("-batch");
    }
    for each in commands.iter().chain(options.batch.iter().flatten()) {
        command.args(["-ex", each]);
    }
    if options.batch.is_some() {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    command
        .spawn()
        .map_err(|error| Error::new(format!("cannot start {}: {error}", gdb.display())))
}

/// Wait for gdb to end, calling `between` meanwhile (it must not block long); in batch
/// mode collect and print its output, and kill it at the timeout.
fn finish_gdb(
    child: &mut Child,
    options: &GdbOptions,
    mut between: impl FnMut() -> Result<()>,
) -> Result<GdbOutcome> {
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream)
                .lines()
                .map_while(std::io::Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(sender);
    let deadline = Instant::now() + options.timeout;
    let mut output = Vec::new();
    let take = |output: &mut Vec<String>| {
        for line in receiver.try_iter() {
            println!("gdb: {line}");
            output.push(line);
        }
    };
    let status = loop {
        take(&mut output);
        if let Some(status) = child.try_wait().context(|| "waiting for gdb".to_owned())? {
            break status.code();
        }
        if options.batch.is_some() && Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            step(format_args!(
                "gdb did not finish within {} s; stopped it",
                options.timeout.as_secs()
            ));
            break None;
        }
        between()?;
    };
    for reader in readers {
        let _ = reader.join();
    }
    take(&mut output);
    let _ = std::io::stdout().flush();
    Ok(GdbOutcome { status, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_text_splits_into_commands() {
        assert_eq!(
            split_commands("break kmain; continue;\n bt ;;info symbol $pc"),
            ["break kmain", "continue", "bt", "info symbol $pc"]
        );
        assert!(split_commands(" ; ").is_empty());
    }

    #[test]
    fn a_fresh_boot_runs_to_the_kernel_entry_with_every_symbol_file() {
        let user = [(PathBuf::from("/t/user/init"), 0x400000)];
        let commands = startup_commands(Arch::X86_64, Path::new("/t/kernel"), &user, 4321, true);
        assert_eq!(
            commands,
            [
                "set pagination off",
                "set confirm off",
                "set architecture i386:x86-64",
                "file /t/kernel",
                "add-symbol-file /t/user/init 0x400000",
                "target remote 127.0.0.1:4321",
                "thbreak *kmain",
                "continue",
            ]
        );
        let attach = startup_commands(Arch::Aarch64, Path::new("/k"), &[], GDB_PORT, false);
        assert_eq!(attach[2], "set architecture aarch64");
        assert_eq!(attach.last().unwrap(), "target remote 127.0.0.1:1234");
    }

    #[test]
    fn reads_the_text_address_of_an_elf() {
        let exe = std::env::current_exe().unwrap();
        assert!(text_address(&exe).unwrap() > 0);
        assert!(text_address(Path::new("/nonexistent")).is_err());
    }
}
