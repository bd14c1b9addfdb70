//! Which UEFI loader goes into the image (DESIGN.md §4).
//!
//! `auto` uses real Limine when its EFI binaries are found in `$LIMINE_DIR`,
//! `/usr/share/limine` or `/usr/local/share/limine`, and otherwise the built-in
//! `tools/efi-loader`; it always says which. `limine` insists on real Limine and `builtin`
//! on the built-in loader. The image and QEMU plumbing do not care which one it is.

use std::fmt;
use std::path::PathBuf;

use crate::{Arch, Error, Result, Workspace};

/// The standard places Limine's binaries are installed to.
const SYSTEM_DIRS: &[&str] = &["/usr/share/limine", "/usr/local/share/limine"];

/// `--loader auto|limine|builtin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoaderChoice {
    /// Real Limine if its binaries are found, else the built-in loader.
    #[default]
    Auto,
    /// Real Limine (8.x or newer); fail if its binaries are not found.
    Limine,
    /// The built-in `tools/efi-loader`.
    Builtin,
}

/// The loader that goes into an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    /// Real Limine's EFI binary at this path.
    Limine(PathBuf),
    /// `tools/efi-loader`, built by the xtask.
    Builtin,
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loader::Limine(path) => write!(f, "Limine ({})", path.display()),
            Loader::Builtin => f.write_str("the built-in loader (tools/efi-loader)"),
        }
    }
}

/// The directories searched for Limine, in order.
pub fn search_dirs(workspace: &Workspace) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = workspace
        .var("LIMINE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    dirs
}

/// The first Limine EFI binary for `arch` in `dirs`.
pub fn find_limine(dirs: &[PathBuf], arch: Arch) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(arch.efi_boot_file()))
        .find(|path| path.is_file())
}

/// Apply the loader policy for `arch`.
pub fn resolve(workspace: &Workspace, choice: LoaderChoice, arch: Arch) -> Result<Loader> {
    let dirs = search_dirs(workspace);
    match (choice, find_limine(&dirs, arch)) {
        (LoaderChoice::Builtin, _) | (LoaderChoice::Auto, None) => Ok(Loader::Builtin),
        (LoaderChoice::Auto | LoaderChoice::Limine, Some(path)) => Ok(Loader::Limine(path)),
        (LoaderChoice::Limine, None) => Err(Error::new(format!(
            "--loader limine: no {} in {}; get a Limine binary release (8.x or newer, e.g. the \
             v8.x-binary branch of https://github.com/limine-bootloader/limine) and set \
             LIMINE_DIR to its directory, or use --loader builtin",
            arch.efi_boot_file(),
            dirs.iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ))),
    }
}

/// The one line `auto` prints about its choice.
pub fn describe_choice(choice: LoaderChoice, loader: &Loader) -> String {
    match (choice, loader) {
        (LoaderChoice::Auto, Loader::Builtin) => format!(
            "loader: {loader} (no Limine EFI binaries in $LIMINE_DIR, {})",
            SYSTEM_DIRS.join(", ")
        ),
        _ => format!("loader: {loader}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("keel-xtask-loader-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn limine_dir_wins_and_is_per_arch() {
        let dir = scratch("found");
        std::fs::write(dir.join("BOOTX64.EFI"), b"MZ").unwrap();
        let workspace = Workspace::from_env().with_var("LIMINE_DIR", dir.to_str());
        let found = resolve(&workspace, LoaderChoice::Auto, Arch::X86_64).unwrap();
        assert_eq!(found, Loader::Limine(dir.join("BOOTX64.EFI")));
        assert_eq!(
            resolve(&workspace, LoaderChoice::Limine, Arch::X86_64).unwrap(),
            Loader::Limine(dir.join("BOOTX64.EFI"))
        );
        assert_eq!(
            resolve(&workspace, LoaderChoice::Builtin, Arch::X86_64).unwrap(),
            Loader::Builtin
        );
        assert_eq!(find_limine(std::slice::from_ref(&dir), Arch::Aarch64), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn limine_required_but_missing_names_the_fix() {
        let dir = scratch("empty");
        let workspace = Workspace::from_env().with_var("LIMINE_DIR", dir.to_str());
        if find_limine(&search_dirs(&workspace), Arch::Aarch64).is_some() {
            return; // This machine has Limine installed system-wide: nothing to test.
        }
        let error = resolve(&workspace, LoaderChoice::Limine, Arch::Aarch64).unwrap_err();
        let line = error.to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains(dir.to_str().unwrap()), "{line}");
        assert!(line.contains("/usr/share/limine"), "{line}");
        assert!(
            line.contains("LIMINE_DIR") && line.contains("8.x"),
            "{line}"
        );
        assert_eq!(
            resolve(&workspace, LoaderChoice::Auto, Arch::Aarch64).unwrap(),
            Loader::Builtin
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
