//! From sources to a booted kernel: prerequisites, loader choice, build, image, QEMU.
//!
//! `cargo xtask image`, `cargo xtask qemu-<arch>` and the integration tests all go through
//! here, so a test boots exactly what a user boots.

use std::path::{Path, PathBuf};

use crate::compile::{self, Artifacts, KernelBuild, WithLoader};
use crate::image::{self, Contents};
use crate::loader::{self, Loader, LoaderChoice};
use crate::qemu::{self, Outcome, QemuOptions, Session};
use crate::symbolize::SymbolFiles;
use crate::{Arch, Context, Error, Profile, Result, Workspace, prereq, step};

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub profile: Profile,
    pub loader: LoaderChoice,
    /// The kernel command line (written into `limine.conf`).
    pub cmdline: String,
    /// Where to write the image; `None` means `target/images/keel-<arch>.img`.
    pub image: Option<PathBuf>,
    /// Leave the image at [`BootOptions::image`] for the user (`true`), or write only the
    /// run's own copy, removed when QEMU ends (`false`: the integration tests, which boot
    /// about a hundred images and need none of them afterwards).
    pub keep_image: bool,
    /// Build first (`true`), or use what an earlier build left in `target/` (`false`).
    pub build: bool,
    /// Which kernel; `None`: the one the command line needs ([`KernelBuild::for_cmdline`]).
    pub kernel: Option<KernelBuild>,
    /// Fix the HHDM base for reproducible runs (`randomise_hhdm_base: no`).
    pub fixed_hhdm: bool,
    pub qemu: QemuOptions,
}

impl BootOptions {
    pub fn new(arch: Arch) -> Self {
        Self {
            profile: Profile::Debug,
            loader: LoaderChoice::Auto,
            cmdline: String::new(),
            image: None,
            keep_image: true,
            build: true,
            kernel: None,
            fixed_hhdm: false,
            qemu: QemuOptions::new(arch),
        }
    }
}

/// The default image path for `arch`.
pub fn default_image(workspace: &Workspace, arch: Arch) -> PathBuf {
    workspace.images_dir().join(format!("keel-{arch}.img"))
}

/// Write an image holding `artifacts` and `loader`; prints its path and loader.
/// `fixed_hhdm` fixes the HHDM base in `limine.conf`.
pub fn make_image(
    artifacts: &Artifacts,
    loader: &Loader,
    cmdline: &str,
    fixed_hhdm: bool,
    path: &Path,
) -> Result<PathBuf> {
    let contents = image_contents(artifacts, loader, cmdline, fixed_hhdm)?;
    step(format_args!("writing image {}…", path.display()));
    let size = image::write(path, &contents)?;
    describe_image(artifacts, loader, cmdline, path, size);
    Ok(path.to_path_buf())
}

/// As [`make_image`], for one QEMU run: the image is written to a file of this run's own
/// ([`image::write_for_run`]), which is returned, and also to `path` when `keep` is set;
/// QEMU boots the run's file, so runs at once never share an image, and [`qemu::run`] /
/// [`qemu::start`] remove it when QEMU ends.
pub fn make_run_image(
    artifacts: &Artifacts,
    loader: &Loader,
    cmdline: &str,
    fixed_hhdm: bool,
    path: &Path,
    keep: bool,
) -> Result<PathBuf> {
    let contents = image_contents(artifacts, loader, cmdline, fixed_hhdm)?;
    step(format_args!("writing image {}…", path.display()));
    let (run, size) = image::write_for_run(path, &contents, keep)?;
    describe_image(artifacts, loader, cmdline, path, size);
    Ok(run)
}

fn image_contents(
    artifacts: &Artifacts,
    loader: &Loader,
    cmdline: &str,
    fixed_hhdm: bool,
) -> Result<Contents> {
    let read =
        |file: &Path| std::fs::read(file).context(|| format!("cannot read {}", file.display()));
    let loader_file = match (loader, &artifacts.loader) {
        (Loader::Limine(path), _) => path.clone(),
        (Loader::Builtin, Some(path)) => path.clone(),
        (Loader::Builtin, None) => {
            return Err(Error::new(
                "internal: the built-in loader was not built; build with WithLoader::Builtin",
            ));
        }
    };
    Ok(Contents {
        arch: artifacts.arch,
        loader: read(&loader_file)?,
        kernel: read(&artifacts.kernel)?,
        modules: artifacts
            .user
            .iter()
            .map(|(name, elf)| Ok((name.clone(), read(elf)?)))
            .collect::<Result<_>>()?,
        cmdline: cmdline.to_owned(),
        fixed_hhdm,
    })
}

fn describe_image(artifacts: &Artifacts, loader: &Loader, cmdline: &str, path: &Path, size: u64) {
    step(format_args!(
        "image: {} ({} MiB, {} as {}, cmdline {:?})",
        path.display(),
        size >> 20,
        loader,
        artifacts.arch.efi_boot_file(),
        cmdline
    ));
}

/// Whether `loader` needs `tools/efi-loader` built.
pub fn with_loader(loader: &Loader) -> WithLoader {
    match loader {
        Loader::Builtin => WithLoader::Builtin,
        Loader::Limine(_) => WithLoader::Skip,
    }
}

/// Check prerequisites, choose the loader, build, write the image and boot it.
pub fn boot(workspace: &Workspace, options: &BootOptions) -> Result<Outcome> {
    let (firmware, image, qemu) = prepare(workspace, options)?;
    let outcome = qemu::run(workspace, &qemu, &firmware, &image)?;
    if let Some(base) = hhdm_base(&outcome.lines) {
        step(format_args!("this boot's HHDM base: {base}"));
    }
    Ok(outcome)
}

/// The HHDM base a boot used, from the loader's `hhdm base:` line (the built-in loader)
/// or the kernel's `hhdm:` banner line.
pub fn hhdm_base(lines: &[String]) -> Option<&str> {
    ["hhdm base: ", "hhdm: "].iter().find_map(|label| {
        lines.iter().find_map(|line| {
            let rest = &line[line.find(label)? + label.len()..];
            rest.split_whitespace().next()
        })
    })
}

/// As [`boot`], but return at once with a [`Session`] that writes to the guest's serial
/// input and reads its output as it comes (tests that type into the system).
pub fn start(workspace: &Workspace, options: &BootOptions) -> Result<Session> {
    let (firmware, image, qemu) = prepare(workspace, options)?;
    qemu::start(workspace, &qemu, &firmware, &image)
}

/// Everything up to starting QEMU: the firmware to boot, the image written, and QEMU's
/// options with the symbol files of this build.
fn prepare(
    workspace: &Workspace,
    options: &BootOptions,
) -> Result<(prereq::Firmware, PathBuf, QemuOptions)> {
    let (firmware, image, artifacts) = prepare_artifacts(workspace, options)?;
    let mut qemu = options.qemu.clone();
    if qemu.symbols.is_none() {
        qemu.symbols = Some(symbol_files(workspace, &artifacts));
    }
    Ok((firmware, image, qemu))
}

/// The ELF files of a build, for naming addresses.
pub fn symbol_files(workspace: &Workspace, artifacts: &Artifacts) -> SymbolFiles {
    SymbolFiles {
        kernel: Some(artifacts.kernel.clone()),
        user: artifacts.user.clone(),
        root: Some(workspace.root().to_path_buf()),
    }
}

/// [`prepare`], returning the build's artifacts instead of the final options. The image
/// returned is this run's own copy ([`make_run_image`]).
pub fn prepare_artifacts(
    workspace: &Workspace,
    options: &BootOptions,
) -> Result<(prereq::Firmware, PathBuf, Artifacts)> {
    let arch = options.qemu.arch;
    // Cheap checks first, so bad input fails before minutes of compiling.
    image::check_cmdline(&options.cmdline)?;
    prereq::ensure(workspace, &[arch])?;
    let firmware = prereq::firmware(workspace, arch)?;
    let loader = loader::resolve(workspace, options.loader, arch)?;
    step(loader::describe_choice(options.loader, &loader));

    let kernel = options
        .kernel
        .unwrap_or_else(|| KernelBuild::for_cmdline(&options.cmdline));
    let artifacts = if options.build {
        compile::build(
            workspace,
            arch,
            options.profile,
            kernel,
            with_loader(&loader),
        )?
    } else {
        compile::locate(
            workspace,
            arch,
            options.profile,
            kernel,
            with_loader(&loader),
        )?
    };
    let path = options
        .image
        .clone()
        .unwrap_or_else(|| default_image(workspace, arch));
    let image = make_run_image(
        &artifacts,
        &loader,
        &options.cmdline,
        options.fixed_hhdm,
        &path,
        options.keep_image,
    )?;
    if options.qemu.gdb && options.qemu.gdb_port == qemu::GDB_PORT {
        step(format_args!(
            "QEMU waits for a debugger; attach with `cargo xtask {} --attach` or: {}",
            crate::gdb::subcommand(arch),
            qemu::gdb_command(workspace, arch, &artifacts.kernel)
        ));
    }
    qemu::announce(&options.qemu, &path);
    Ok((firmware, image, artifacts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hhdm_base_comes_from_the_loader_or_the_banner() {
        let lines = |text: &[&str]| text.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let loader = lines(&[
            "config: /limine.conf (1 entries)",
            "hhdm base: 0xffff8a4c00000000 (randomised)",
            "hhdm: 0xffff8a4c00000000",
        ]);
        assert_eq!(hhdm_base(&loader), Some("0xffff8a4c00000000"));
        let banner = lines(&["Keel 0.1.0 x86_64", "hhdm: 0xffff800000000000"]);
        assert_eq!(hhdm_base(&banner), Some("0xffff800000000000"));
        assert_eq!(hhdm_base(&lines(&["memory: 1 MiB"])), None);
    }
}
