//! The command line of `cargo xtask`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::arch::ArchChoice;
use crate::boot::{self, BootOptions};
use crate::compile::{KernelBuild, WithLoader};
use crate::gdb::GdbOptions;
use crate::loader::{self, LoaderChoice};
use crate::qemu::QemuOptions;
use crate::{Arch, Error, Profile, Result, Workspace, check, compile, image, step};

/// Build, boot and test Keel. The only build entry point.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the kernel, the user programs and the UEFI loader.
    Build {
        #[arg(long, value_enum, default_value_t)]
        arch: ArchChoice,
        /// Which kernel: plain (what ships), testing (with scenarios, suites and test-only
        /// system calls), checked (testing plus the lock-order checker).
        #[arg(long, value_enum, default_value = "plain")]
        kernel: KernelBuild,
        /// Optimized build (cargo's release profile).
        #[arg(long)]
        release: bool,
    },
    /// Build and write a bootable GPT disk image per architecture to target/images/.
    Image {
        #[arg(long, value_enum, default_value_t)]
        arch: ArchChoice,
        /// Which UEFI loader goes into the image (auto: Limine if found, else built-in).
        #[arg(long, value_enum, default_value_t)]
        loader: LoaderChoice,
        /// The kernel command line, e.g. "test=boot".
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Optimized build (cargo's release profile).
        #[arg(long)]
        release: bool,
    },
    /// Build, make an image and boot it on x86_64 (QEMU q35 + OVMF).
    #[command(name = "qemu-x86")]
    QemuX86(QemuArgs),
    /// Build, make an image and boot it on AArch64 (QEMU virt + AAVMF).
    #[command(name = "qemu-aarch64")]
    QemuAarch64(QemuArgs),
    /// Boot on x86_64 under gdb-multiarch, stopped at the kernel's entry (kmain), with the
    /// kernel's and the user programs' symbols.
    #[command(name = "gdb-x86")]
    GdbX86(GdbArgs),
    /// Boot on AArch64 under gdb-multiarch, stopped at the kernel's entry (kmain), with the
    /// kernel's and the user programs' symbols.
    #[command(name = "gdb-aarch64")]
    GdbAarch64(GdbArgs),
    /// Boot on x86_64 with `trace=on`, collect the kernel's trace at power-off and write
    /// target/trace/x86_64.json (Chrome/Perfetto trace format).
    #[command(name = "trace-x86")]
    TraceX86(TraceArgs),
    /// Boot on AArch64 with `trace=on`, collect the kernel's trace at power-off and write
    /// target/trace/aarch64.json (Chrome/Perfetto trace format).
    #[command(name = "trace-aarch64")]
    TraceAarch64(TraceArgs),
    /// Run the host unit tests, then the QEMU integration tests of tests/.
    Test {
        #[arg(long, value_enum, default_value_t)]
        arch: ArchChoice,
        /// Run only the integration tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// CPUs of every test boot that does not choose its own (the suites also run at 4
        /// CPUs in tests of their own).
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=8))]
        smp: u32,
    },
    /// Check formatting and run clippy with -D warnings on every crate for every target.
    Lint,
    /// Boot the `bench` scenario under QEMU -icount shift=0 (release build), print guest
    /// instructions per operation and the ratio to bench/baseline-<arch>.json, and write
    /// target/bench/<arch>.json.
    Bench {
        #[arg(long, value_enum, default_value_t)]
        arch: ArchChoice,
        /// Samples per benchmark (after a warm-up), at most 2000.
        #[arg(long, value_name = "N", default_value_t = crate::bench::DEFAULT_ITERATIONS,
              value_parser = clap::value_parser!(u32).range(1..=2000))]
        iterations: u32,
        /// Rewrite bench/baseline-<arch>.json with this run's results.
        #[arg(long, conflicts_with = "trace")]
        update_baseline: bool,
        /// Run only benchmark NAME with the kernel trace on and write its timeline to
        /// target/trace/<arch>-NAME.json (Chrome/Perfetto format; counts with the trace on
        /// are not compared with the baseline).
        #[arg(long, value_name = "NAME")]
        trace: Option<String>,
        /// Profile benchmark NAME: boot it alone twice (N and 2N iterations, N at least
        /// 100) with QEMU logging every executed block, and print the guest instructions
        /// of one operation by function, kernel and bench program
        /// (target/profile/<arch>-NAME.txt lists every address).
        #[arg(long, value_name = "NAME", conflicts_with_all = ["trace", "update_baseline"])]
        profile: Option<String>,
        /// CPUs to boot (single-threaded TCG under -icount); ipc_call_reply_cross_cpu needs 2.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=8))]
        smp: u32,
        /// Boot the lock-checking build instead and print the shared-lock acquisitions per
        /// IPC round trip by lock level (no instruction counts).
        #[arg(long, conflicts_with_all = ["trace", "update_baseline", "profile"])]
        locks: bool,
        /// Which benchmarks: `main` (every one, against the baseline), `scale` (few against
        /// many other threads and processes alive; a ratio above 1.10 fails), or both.
        #[arg(long, value_enum, default_value_t)]
        group: crate::bench::Group,
    },
    /// Boot the `fuzz` scenario (the system-call fuzzer under the kernel invariant checker)
    /// for a long run; a failure prints its seed, the last calls and the replay command.
    Fuzz {
        #[arg(long, value_enum, default_value_t)]
        arch: ArchChoice,
        /// The seed (32 bits) [default: chosen by the kernel from its clock and printed].
        #[arg(long)]
        seed: Option<u32>,
        /// System calls of all fuzzing processes together.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        calls: u64,
        /// Fuzzing processes (1 to 8); with 1 a seed repeats its figures.
        #[arg(long, value_name = "P", default_value_t = 4,
              value_parser = clap::value_parser!(u32).range(1..=8))]
        procs: u32,
        /// Number of CPUs.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=64))]
        smp: u32,
        /// Fail a boot that has not powered off by then.
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        timeout: u64,
        /// Optimized build (cargo's release profile).
        #[arg(long)]
        release: bool,
    },
}

/// Options of `qemu-x86` and `qemu-aarch64`.
#[derive(Debug, Args)]
pub struct QemuArgs {
    /// Which UEFI loader boots the kernel (auto: Limine if found, else built-in).
    #[arg(long, value_enum, default_value_t)]
    pub loader: LoaderChoice,
    /// The kernel command line, e.g. "test=boot".
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Guest memory (QEMU -m syntax).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: String,
    /// CPU model [default: qemu64 on x86_64, cortex-a72 on AArch64].
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,
    /// GIC version (AArch64 only) [default: 3].
    #[arg(long, value_name = "2|3", value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: Option<u8>,
    /// Wait for gdb on localhost:1234 and print the command that attaches it.
    #[arg(long)]
    pub gdb: bool,
    /// Kill QEMU and fail (exit status 124) if the kernel has not powered off by then.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Also write the serial output to this file.
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,
    /// Optimized build (cargo's release profile).
    #[arg(long)]
    pub release: bool,
    /// Which kernel [default: checked when the command line selects a scenario (`test=…`),
    /// else plain].
    #[arg(long, value_enum)]
    pub kernel: Option<KernelBuild>,
    /// Extra arguments for QEMU, after `--`.
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

/// Options of `trace-x86` and `trace-aarch64`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The kernel command line (`trace=on` is added). The trace is printed at power-off,
    /// so it must run something that powers off.
    #[arg(long, default_value = crate::trace::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Fail if the kernel has not powered off by then.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub seconds: u64,
    /// Optimized build (cargo's release profile).
    #[arg(long)]
    pub release: bool,
}

/// Options of `gdb-x86` and `gdb-aarch64`.
#[derive(Debug, Args)]
pub struct GdbArgs {
    /// Join a boot started with `cargo xtask qemu-<arch> --gdb` instead of booting.
    #[arg(long)]
    pub attach: bool,
    /// Run these gdb commands (separated by `;`) without a terminal, print the output and
    /// end, e.g. "bt" or "info symbol $pc".
    #[arg(long, value_name = "COMMANDS")]
    pub batch: Option<String>,
    /// The gdb stub's port [default: 1234 with --attach, else a free one].
    #[arg(long)]
    pub port: Option<u16>,
    /// Which UEFI loader boots the kernel (auto: Limine if found, else built-in).
    #[arg(long, value_enum, default_value_t)]
    pub loader: LoaderChoice,
    /// The kernel command line, e.g. "test=boot".
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Guest memory (QEMU -m syntax).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub mem: String,
    /// With --batch: stop gdb and QEMU if gdb has not finished by then.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// Optimized build (cargo's release profile).
    #[arg(long)]
    pub release: bool,
}

impl GdbArgs {
    pub fn gdb_options(&self, arch: Arch) -> GdbOptions {
        let mut options = GdbOptions::new(arch);
        options.boot.profile = Profile::from_release(self.release);
        options.boot.loader = self.loader;
        options.boot.cmdline = self.cmdline.clone();
        options.boot.qemu.smp = self.smp;
        options.boot.qemu.mem = self.mem.clone();
        options.attach = self.attach;
        options.port = self.port;
        options.batch = self.batch.as_deref().map(crate::gdb::split_commands);
        options.timeout = Duration::from_secs(self.timeout);
        options
    }
}

impl QemuArgs {
    fn boot_options(&self, arch: Arch) -> Result<BootOptions> {
        if arch != Arch::Aarch64 && self.gic.is_some() {
            return Err(Error::new(
                "--gic applies to qemu-aarch64 only; drop it for qemu-x86",
            ));
        }
        let mut qemu = QemuOptions::new(arch);
        qemu.smp = self.smp;
        qemu.mem = self.mem.clone();
        qemu.cpu = self.cpu.clone();
        qemu.gic = self.gic.unwrap_or(3);
        qemu.gdb = self.gdb;
        qemu.timeout = self.timeout.map(Duration::from_secs);
        qemu.serial_log = self.serial_log.clone();
        qemu.extra_args = self.qemu_args.clone();
        Ok(BootOptions {
            profile: Profile::from_release(self.release),
            loader: self.loader,
            cmdline: self.cmdline.clone(),
            image: None,
            keep_image: true,
            build: true,
            kernel: self.kernel,
            fixed_hhdm: false,
            qemu,
        })
    }
}

/// Run a parsed command. `Ok` carries the exit status (the kernel's exit code for
/// `qemu-*`, else 0).
pub fn run(workspace: &Workspace, cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Build {
            arch,
            kernel,
            release,
        } => {
            for arch in arch.arches() {
                let profile = Profile::from_release(release);
                compile::build(workspace, arch, profile, kernel, WithLoader::Builtin)?;
            }
            step("build finished");
            Ok(0)
        }
        Command::Image {
            arch,
            loader: choice,
            cmdline,
            release,
        } => {
            image::check_cmdline(&cmdline)?;
            let loaders = arch
                .arches()
                .into_iter()
                .map(|arch| Ok((arch, loader::resolve(workspace, choice, arch)?)))
                .collect::<Result<Vec<_>>>()?;
            for (arch, loader) in loaders {
                step(loader::describe_choice(choice, &loader));
                let profile = Profile::from_release(release);
                let kernel = KernelBuild::for_cmdline(&cmdline);
                let artifacts =
                    compile::build(workspace, arch, profile, kernel, boot::with_loader(&loader))?;
                let path = boot::default_image(workspace, arch);
                boot::make_image(&artifacts, &loader, &cmdline, false, &path)?;
            }
            Ok(0)
        }
        Command::QemuX86(args) => qemu(workspace, Arch::X86_64, &args),
        Command::QemuAarch64(args) => qemu(workspace, Arch::Aarch64, &args),
        Command::GdbX86(args) => gdb(workspace, Arch::X86_64, &args),
        Command::GdbAarch64(args) => gdb(workspace, Arch::Aarch64, &args),
        Command::TraceX86(args) => trace(workspace, Arch::X86_64, &args),
        Command::TraceAarch64(args) => trace(workspace, Arch::Aarch64, &args),
        Command::Test { arch, filter, smp } => {
            check::test(workspace, arch, filter.as_deref(), smp)?;
            Ok(0)
        }
        Command::Lint => {
            check::lint(workspace)?;
            Ok(0)
        }
        Command::Bench {
            arch,
            iterations,
            update_baseline,
            trace,
            profile,
            smp,
            locks,
            group,
        } => {
            if let Some(name) = profile {
                crate::profile::run(workspace, &arch.arches(), iterations, &name)?;
                return Ok(0);
            }
            match trace {
                Some(name) => drop(crate::bench::trace(
                    workspace,
                    &arch.arches(),
                    iterations,
                    &name,
                )?),
                None if locks => {
                    crate::bench::run_locks(workspace, &arch.arches(), iterations, smp)?
                }
                None => crate::bench::run(
                    workspace,
                    &arch.arches(),
                    iterations,
                    smp,
                    update_baseline,
                    group,
                )?,
            }
            Ok(0)
        }
        Command::Fuzz {
            arch,
            seed,
            calls,
            procs,
            smp,
            timeout,
            release,
        } => {
            let options = crate::fuzz::FuzzOptions {
                seed,
                calls,
                procs,
                smp,
                release,
                timeout: Duration::from_secs(timeout),
            };
            crate::fuzz::run(workspace, &arch.arches(), &options)?;
            Ok(0)
        }
    }
}

fn qemu(workspace: &Workspace, arch: Arch, args: &QemuArgs) -> Result<u8> {
    let options = args.boot_options(arch)?;
    step(format_args!(
        "{}: {}",
        arch.qemu_subcommand(),
        options.qemu.quit_hint()
    ));
    let outcome = boot::boot(workspace, &options)?;
    let code = outcome.ending.into_result()?;
    step(format_args!("the kernel powered off with exit code {code}"));
    Ok(code)
}

fn trace(workspace: &Workspace, arch: Arch, args: &TraceArgs) -> Result<u8> {
    let profile = Profile::from_release(args.release);
    let options = crate::trace::TraceOptions::new(arch, &args.cmdline, args.seconds, profile);
    crate::trace::run(workspace, &options)?;
    Ok(0)
}

fn gdb(workspace: &Workspace, arch: Arch, args: &GdbArgs) -> Result<u8> {
    let outcome = crate::gdb::run(workspace, &args.gdb_options(arch))?;
    match outcome.status {
        Some(0) => Ok(0),
        Some(code) => Err(Error::forwarded(
            code,
            format!("gdb exited with status {code}"),
        )),
        None => Err(Error::new("gdb was stopped (timeout or signal)")),
    }
}

/// The whole program: parse, run, print the one error line, exit.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `cargo xtask` killed (its cargo gone) ends the xtask too, and with it its QEMU.
    crate::qemu::die_with_parent();
    match run(&Workspace::from_env(), cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_a_doc_line() {
        for sub in Cli::command().get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no doc comment",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_qemu_options() {
        let cli = Cli::try_parse_from([
            "xtask",
            "qemu-aarch64",
            "--cmdline",
            "test=boot",
            "--gic",
            "2",
            "--smp",
            "2",
            "--timeout",
            "120",
            "--serial-log",
            "/tmp/x.log",
            "--",
            "-d",
            "int",
        ])
        .unwrap();
        let Command::QemuAarch64(args) = cli.command else {
            panic!("qemu-aarch64")
        };
        let options = args.boot_options(Arch::Aarch64).unwrap();
        assert_eq!(options.cmdline, "test=boot");
        assert_eq!(options.qemu.gic, 2);
        assert_eq!(options.qemu.smp, 2);
        assert_eq!(options.qemu.mem, "256M");
        assert_eq!(options.qemu.timeout, Some(Duration::from_secs(120)));
        assert_eq!(options.qemu.extra_args, ["-d", "int"]);
        assert!(options.qemu.piped());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Cli::try_parse_from(["xtask", "build", "--arch", "riscv64"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "qemu-aarch64", "--gic", "4"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "qemu-x86", "--gic", "2"]).unwrap();
        let Command::QemuX86(args) = cli.command else {
            panic!("qemu-x86")
        };
        assert!(args.boot_options(Arch::X86_64).is_err());
    }
}
