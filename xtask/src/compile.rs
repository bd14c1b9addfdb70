//! Building the kernel, the user programs and the loader for one architecture.
//!
//! Each kind gets its own `--target-dir` under `target/` and its own `RUSTFLAGS`, passed as
//! `CARGO_ENCODED_RUSTFLAGS` (which overrides `RUSTFLAGS` and `build.rustflags`), so that a
//! build of one kind never invalidates the cache of another:
//!
//! | kind | target dir | flags |
//! | --- | --- | --- |
//! | kernel | `target/kernel`, `target/kernel-testing`, `target/kernel-checked` (one per [`KernelBuild`]) | static relocation model (else it links as PIE), frame pointers |
//! | user programs | `target/user` | the same plus the small code model |
//! | loader | `target/loader-build` | none (UEFI applications are PE files) |

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::{Arch, Error, Profile, Result, Workspace, step};

/// The user programs packed into every image as boot modules, in this order.
pub const USER_PROGRAMS: &[&str] = &[
    "init",
    "testsuite",
    "bench",
    "console",
    "names",
    "shell",
    "echo",
    "crashtest",
    "fuzz",
    "smptest",
    "scaletest",
];

/// The kernel's `RUSTFLAGS`.
pub const KERNEL_RUSTFLAGS: &[&str] = &[
    "-C",
    "relocation-model=static",
    "-C",
    "force-frame-pointers=yes",
];

/// The user programs' `RUSTFLAGS`.
pub const USER_RUSTFLAGS: &[&str] = &[
    "-C",
    "relocation-model=static",
    "-C",
    "code-model=small",
    "-C",
    "force-frame-pointers=yes",
];

/// Which kernel to build: the three differ only in cargo features, and each has its own
/// target dir so switching between them recompiles nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelBuild {
    /// What ships: no scenario, no in-kernel suite, no test-only system call.
    Plain,
    /// With the test code (`testing`): what `cargo xtask bench` measures.
    Testing,
    /// With the test code and the lock-order checker (`testing,lockcheck`): what every QEMU
    /// test and every `--cmdline test=…` boot runs.
    Checked,
}

impl KernelBuild {
    /// The kernel's cargo features for this build.
    pub fn features(self) -> &'static str {
        match self {
            KernelBuild::Plain => "",
            KernelBuild::Testing => "testing",
            KernelBuild::Checked => "testing,lockcheck",
        }
    }

    /// Its target dir's name under `target/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            KernelBuild::Plain => "kernel",
            KernelBuild::Testing => "kernel-testing",
            KernelBuild::Checked => "kernel-checked",
        }
    }

    /// The build a boot with kernel command line `cmdline` needs: one that selects a
    /// scenario (`test=…`) gets the test code and the checker.
    pub fn for_cmdline(cmdline: &str) -> Self {
        if cmdline
            .split_whitespace()
            .any(|word| word.starts_with("test="))
        {
            KernelBuild::Checked
        } else {
            KernelBuild::Plain
        }
    }

    /// Words for progress lines.
    pub fn describe(self) -> &'static str {
        match self {
            KernelBuild::Plain => "plain",
            KernelBuild::Testing => "with test code",
            KernelBuild::Checked => "with test code and the lock-order checker",
        }
    }
}

/// What one architecture's build produced.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub arch: Arch,
    pub profile: Profile,
    /// The kernel ELF (also what `gdb` loads).
    pub kernel: PathBuf,
    /// `(name, ELF)` for each of [`USER_PROGRAMS`].
    pub user: Vec<(String, PathBuf)>,
    /// `efi-loader.efi`, when it was built.
    pub loader: Option<PathBuf>,
}

/// The kinds of crate the xtask builds, each with its own target dir and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    User,
    Loader,
}

impl Kind {
    pub fn target_dir(self, workspace: &Workspace) -> PathBuf {
        workspace.target_dir().join(match self {
            Kind::Kernel => "kernel",
            Kind::User => "user",
            Kind::Loader => "loader-build",
        })
    }

    pub fn rustflags(self) -> &'static [&'static str] {
        match self {
            Kind::Kernel => KERNEL_RUSTFLAGS,
            Kind::User => USER_RUSTFLAGS,
            Kind::Loader => &[],
        }
    }

    pub fn target(self, arch: Arch) -> &'static str {
        match self {
            Kind::Kernel => arch.kernel_target(),
            Kind::User => arch.user_target(),
            Kind::Loader => arch.loader_target(),
        }
    }

    /// A `cargo <subcommand> --target … --target-dir …` with this kind's flags.
    pub fn cargo(self, workspace: &Workspace, subcommand: &str, arch: Arch) -> Command {
        self.cargo_in(workspace, subcommand, arch, self.target_dir(workspace))
    }

    /// [`Kind::cargo`] with another target dir.
    pub fn cargo_in(
        self,
        workspace: &Workspace,
        subcommand: &str,
        arch: Arch,
        target_dir: PathBuf,
    ) -> Command {
        let mut command = workspace.cargo();
        command
            .arg(subcommand)
            .args(["--target", self.target(arch)])
            .arg("--target-dir")
            .arg(target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", self.rustflags().join("\x1f"))
            .env_remove("RUSTFLAGS");
        command
    }
}

/// Which loader [`build`] builds too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithLoader {
    /// Build `tools/efi-loader` as well.
    Builtin,
    /// The image gets real Limine: do not build `tools/efi-loader`.
    Skip,
}

/// The target dir of kernel build `kernel`.
pub fn kernel_dir(workspace: &Workspace, kernel: KernelBuild) -> PathBuf {
    workspace.target_dir().join(kernel.dir_name())
}

/// Build only the kernel, as `kernel`, for `arch`.
pub fn build_kernel(
    workspace: &Workspace,
    arch: Arch,
    profile: Profile,
    kernel: KernelBuild,
) -> Result<()> {
    ensure_targets(workspace)?;
    step(format_args!(
        "building kernel ({arch}, {profile}, {})…",
        kernel.describe()
    ));
    let mut command =
        Kind::Kernel.cargo_in(workspace, "build", arch, kernel_dir(workspace, kernel));
    command.args(["-p", "kernel"]);
    if !kernel.features().is_empty() {
        command.args(["--features", kernel.features()]);
    }
    if profile == Profile::Release {
        command.arg("--release");
    }
    run(
        command,
        &format!("building the kernel for {}", Kind::Kernel.target(arch)),
    )
}

/// Build the kernel (as `kernel`), the user programs and (unless skipped) the loader for
/// `arch`.
pub fn build(
    workspace: &Workspace,
    arch: Arch,
    profile: Profile,
    kernel: KernelBuild,
    with_loader: WithLoader,
) -> Result<Artifacts> {
    ensure_targets(workspace)?;
    let release = profile == Profile::Release;

    build_kernel(workspace, arch, profile, kernel)?;

    let programs = USER_PROGRAMS.join(", ");
    step(format_args!(
        "building user programs {programs} ({arch}, {profile})…"
    ));
    cargo_build(
        workspace,
        Kind::User,
        arch,
        release,
        USER_PROGRAMS,
        "the user programs",
    )?;

    if with_loader == WithLoader::Builtin {
        step(format_args!("building efi-loader ({arch}, {profile})…"));
        let loader = &["efi-loader"];
        cargo_build(
            workspace,
            Kind::Loader,
            arch,
            release,
            loader,
            "tools/efi-loader",
        )?;
    }
    locate(workspace, arch, profile, kernel, with_loader)
}

/// The artifacts of an earlier [`build`], without building (for tests run by
/// `cargo xtask test`, which builds once before they start).
pub fn locate(
    workspace: &Workspace,
    arch: Arch,
    profile: Profile,
    kernel: KernelBuild,
    with_loader: WithLoader,
) -> Result<Artifacts> {
    let kernel = artifact_in(
        kernel_dir(workspace, kernel),
        Kind::Kernel,
        arch,
        profile,
        "kernel",
    )?;
    let user = USER_PROGRAMS
        .iter()
        .map(|name| {
            Ok((
                name.to_string(),
                artifact(workspace, Kind::User, arch, profile, name)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let loader = match with_loader {
        WithLoader::Skip => None,
        WithLoader::Builtin => Some(artifact(
            workspace,
            Kind::Loader,
            arch,
            profile,
            "efi-loader.efi",
        )?),
    };
    Ok(Artifacts {
        arch,
        profile,
        kernel,
        user,
        loader,
    })
}

fn cargo_build(
    workspace: &Workspace,
    kind: Kind,
    arch: Arch,
    release: bool,
    packages: &[&str],
    what: &str,
) -> Result<()> {
    let mut command = kind.cargo(workspace, "build", arch);
    for package in packages {
        command.args(["-p", package]);
    }
    if release {
        command.arg("--release");
    }
    run(
        command,
        &format!("building {what} for {}", kind.target(arch)),
    )
}

fn artifact(
    workspace: &Workspace,
    kind: Kind,
    arch: Arch,
    profile: Profile,
    file: &str,
) -> Result<PathBuf> {
    artifact_in(kind.target_dir(workspace), kind, arch, profile, file)
}

fn artifact_in(
    target_dir: PathBuf,
    kind: Kind,
    arch: Arch,
    profile: Profile,
    file: &str,
) -> Result<PathBuf> {
    let path = target_dir
        .join(kind.target(arch))
        .join(profile.dir())
        .join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "{} is missing; run `cargo xtask build --arch {arch}` (if that succeeds, check that \
             the crate still builds a binary named {file:?})",
            path.display()
        )))
    }
}

/// Run a command that streams its own output; a failure names `what` and the status.
pub fn run(mut command: Command, what: &str) -> Result<()> {
    let status = command.status().map_err(|error| {
        Error::new(format!(
            "{what}: cannot start {:?}: {error}",
            command.get_program()
        ))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{what} failed ({status}); the messages above say why"
        )))
    }
}

/// Make sure every target `rust-toolchain.toml` lists is installed (a fresh machine has the
/// toolchain, which rustup installs on first use, but maybe not the targets). Runs once per
/// process.
pub fn ensure_targets(workspace: &Workspace) -> Result<()> {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let mut checked = CHECKED.lock().unwrap_or_else(|poison| poison.into_inner());
    if *checked {
        return Ok(());
    }
    let toolchain_file = workspace.root().join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&toolchain_file).map_err(|error| {
        Error::new(format!("cannot read {}: {error}", toolchain_file.display()))
    })?;
    let wanted = toolchain_targets(&text);
    let listed = match workspace
        .command("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(output) if output.status.success() => output.stdout,
        _ => {
            step(format_args!(
                "rustup not found; assuming the targets {} are installed",
                wanted.join(", ")
            ));
            *checked = true;
            return Ok(());
        }
    };
    let listed = String::from_utf8_lossy(&listed);
    let installed: Vec<&str> = listed.lines().map(str::trim).collect();
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|target| !installed.contains(target))
        .collect();
    if !missing.is_empty() {
        step(format_args!(
            "installing rustup targets {} (listed in rust-toolchain.toml)…",
            missing.join(", ")
        ));
        let mut command = workspace.command("rustup");
        command.args(["target", "add"]).args(&missing);
        run(command, "rustup target add").map_err(|error| {
            Error::new(format!(
                "{}; run `rustup target add {}` in {}",
                error.message(),
                missing.join(" "),
                workspace.root().display()
            ))
        })?;
    }
    *checked = true;
    Ok(())
}

/// The `targets = [ … ]` list of a `rust-toolchain.toml` (a small reader for the one key we
/// need, so the xtask needs no TOML parser).
pub fn toolchain_targets(text: &str) -> Vec<String> {
    let Some(start) = text.find("targets") else {
        return Vec::new();
    };
    let rest = &text[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    if close < open {
        return Vec::new();
    }
    rest[open + 1..close]
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.split(','))
        .map(|item| item.trim().trim_matches('"').trim())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_targets_with_comments() {
        let text = r#"
[toolchain]
channel = "1.95.0"
components = ["rustfmt", "clippy"]
targets = [
    "x86_64-unknown-none",            # user programs
    "aarch64-unknown-none-softfloat", # kernel
    "x86_64-unknown-uefi", "aarch64-unknown-uefi",
]
"#;
        assert_eq!(
            toolchain_targets(text),
            [
                "x86_64-unknown-none",
                "aarch64-unknown-none-softfloat",
                "x86_64-unknown-uefi",
                "aarch64-unknown-uefi"
            ]
        );
        assert!(toolchain_targets("[toolchain]\nchannel = \"1.95.0\"\n").is_empty());
    }

    #[test]
    fn repository_toolchain_lists_every_target_we_build() {
        let workspace = Workspace::from_env();
        let text = std::fs::read_to_string(workspace.root().join("rust-toolchain.toml")).unwrap();
        let targets = toolchain_targets(&text);
        for arch in Arch::ALL {
            for kind in [Kind::Kernel, Kind::User, Kind::Loader] {
                let target = kind.target(arch);
                assert!(targets.iter().any(|t| t == target), "{target} missing");
            }
        }
    }

    #[test]
    fn kinds_have_separate_dirs_and_flags() {
        let workspace = Workspace::from_env();
        let command = Kind::User.cargo(&workspace, "build", Arch::Aarch64);
        let args: Vec<_> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..3], ["build", "--target", "aarch64-unknown-none"]);
        assert!(args[4].ends_with("target/user"));
        let flags = command
            .get_envs()
            .find(|(name, _)| *name == "CARGO_ENCODED_RUSTFLAGS")
            .and_then(|(_, value)| value)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(flags.split('\x1f').collect::<Vec<_>>(), USER_RUSTFLAGS);
        assert_ne!(
            Kind::Kernel.target_dir(&workspace),
            Kind::Loader.target_dir(&workspace)
        );
    }
}
