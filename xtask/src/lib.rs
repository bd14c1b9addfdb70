//! The Keel build entry point: build, image, boot in QEMU, test, lint.
//!
//! `cargo xtask …` (an alias in `.cargo/config.toml`) runs the binary in `main.rs`, which
//! only parses the command line ([`cli`]). Everything it does lives in this library so
//! that the integration tests in `tests/` boot images exactly the way a user does, without
//! shelling out to `cargo xtask`.
//!
//! Principles:
//! - One line per step on stderr (`xtask: building kernel (x86_64, debug)…`), so a first run
//!   that installs QEMU or compiles for minutes never sits silent; serial output of the
//!   kernel goes to stdout untouched.
//! - Every failure is one [`Error`] line that names the fix, and a non-zero exit status.
//! - Nothing reads the process environment directly: the environment is captured once in
//!   a [`Workspace`], so tests can override `PATH`, `LIMINE_DIR` or the firmware paths
//!   without touching global state.
//! - Kernel, user programs and loader each build into their own `--target-dir` with their
//!   own `RUSTFLAGS` (passed as `CARGO_ENCODED_RUSTFLAGS`), so they never invalidate each
//!   other's caches.
//!
//! Known weak spots: `isa-debug-exit` on x86_64 makes QEMU's own error status 1 look like
//! a kernel exit code 0; the runner treats status 1 as an error when QEMU printed an error
//! on stderr, and every test also asserts on serial lines. On AArch64 a PSCI power-off or a
//! reset under `-no-reboot` also ends QEMU with status 0, indistinguishable from a
//! semihosting exit with code 0.
// One `unsafe` block: the `pre_exec` hook that ties QEMU's life to the xtask's (`qemu`).
#![deny(unsafe_code)]

pub mod arch;
pub mod bench;
pub mod boot;
pub mod check;
pub mod cli;
pub mod compile;
mod error;
pub mod fuzz;
pub mod gdb;
pub mod image;
pub mod layers;
pub mod loader;
pub mod prereq;
pub mod profile;
pub mod qemu;
pub mod symbolize;
pub mod trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use arch::Arch;
pub use error::{Context, Error, Result};

/// Print one progress line: `xtask: <message>`.
pub fn step(message: impl std::fmt::Display) {
    eprintln!("xtask: {message}");
}

/// Debug or release build of the kernel, user programs and loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release {
            Profile::Release
        } else {
            Profile::Debug
        }
    }

    /// The directory name cargo uses under `<target-dir>/<triple>/`.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir())
    }
}

/// The repository and the environment the xtask runs in.
///
/// Every environment variable the xtask consults is read through [`Workspace::var`], so a
/// test can build a `Workspace` with overrides instead of mutating the process environment.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Workspace {
    /// The repository this xtask was compiled from, with the process environment.
    pub fn from_env() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask/ lives inside the repository")
            .to_path_buf();
        Self {
            root,
            vars: std::env::vars().collect(),
        }
    }

    /// Replace (or, with `None`, remove) one environment variable as the xtask sees it.
    pub fn with_var(mut self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.vars.insert(name.to_owned(), value.to_owned()),
            None => self.vars.remove(name),
        };
        self
    }

    /// An environment variable, `None` when unset or empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/target`, the parent of every build directory.
    pub fn target_dir(&self) -> PathBuf {
        self.root.join("target")
    }

    /// Where disk images and per-run scratch files go.
    pub fn images_dir(&self) -> PathBuf {
        self.target_dir().join("images")
    }

    /// The cargo the xtask was started by (so the pinned toolchain is used), else `cargo`.
    pub fn cargo(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.var("CARGO").unwrap_or("cargo"));
        command.current_dir(&self.root);
        command.env_clear().envs(&self.vars);
        command
    }

    /// A command run with this workspace's environment and the repository as its directory.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.current_dir(&self.root);
        command.env_clear().envs(&self.vars);
        command
    }
}
