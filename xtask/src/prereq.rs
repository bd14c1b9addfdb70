//! Prerequisites of booting: QEMU and the UEFI firmware, installed on demand.
//!
//! When `qemu-system-x86_64`, `qemu-system-aarch64`, OVMF or AAVMF are missing, the xtask
//! installs them itself on Debian/Ubuntu when it runs as root (saying so first and streaming
//! apt's output), and otherwise stops with the exact command for the user. On these machines
//! `qemu-utils` from backports conflicts with the stock `qemu-system-*`, so the matching
//! `qemu-utils`/`qemu-block-extra` version is installed alongside (`--allow-downgrades`).
//!
//! Firmware paths can be overridden with `OVMF_CODE`, `OVMF_VARS`, `AAVMF_CODE` and
//! `AAVMF_VARS`. An override that names a missing file is an error of its own: installing a
//! package would not fix it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Arch, Error, Result, Workspace, compile, step};

/// The packages that provide everything below, installed together.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-arm",
    "ovmf",
    "qemu-efi-aarch64",
];
/// Pinned to the version of `qemu-system-x86` (see the module docs).
const PINNED: &[&str] = &["qemu-utils", "qemu-block-extra"];

/// The two flash images UEFI firmware runs from: code (read-only) and variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

struct FirmwareSpec {
    name: &'static str,
    code_var: &'static str,
    vars_var: &'static str,
    /// `(code, vars)` pairs tried in order; newer Debian ships only the `_4M` OVMF pair.
    defaults: &'static [(&'static str, &'static str)],
    package: &'static str,
}

fn firmware_spec(arch: Arch) -> FirmwareSpec {
    match arch {
        Arch::X86_64 => FirmwareSpec {
            name: "OVMF",
            code_var: "OVMF_CODE",
            vars_var: "OVMF_VARS",
            defaults: &[
                (
                    "/usr/share/OVMF/OVMF_CODE.fd",
                    "/usr/share/OVMF/OVMF_VARS.fd",
                ),
                (
                    "/usr/share/OVMF/OVMF_CODE_4M.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.fd",
                ),
            ],
            package: "ovmf",
        },
        Arch::Aarch64 => FirmwareSpec {
            name: "AAVMF",
            code_var: "AAVMF_CODE",
            vars_var: "AAVMF_VARS",
            defaults: &[(
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            )],
            package: "qemu-efi-aarch64",
        },
    }
}

fn qemu_package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86",
        Arch::Aarch64 => "qemu-system-arm",
    }
}

/// Something missing that a package install fixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    Qemu { arch: Arch },
    Firmware { arch: Arch, path: PathBuf },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Qemu { arch } => {
                write!(
                    f,
                    "{} (package {})",
                    arch.qemu_binary(),
                    qemu_package(*arch)
                )
            }
            Missing::Firmware { arch, path } => {
                write!(
                    f,
                    "{} (package {})",
                    path.display(),
                    firmware_spec(*arch).package
                )
            }
        }
    }
}

/// Where the host's files are looked up: `/` normally, a scratch directory in tests.
#[derive(Clone, Debug)]
struct Probe<'a> {
    workspace: &'a Workspace,
    sysroot: &'a Path,
}

impl Probe<'_> {
    fn host_path(&self, absolute: &str) -> PathBuf {
        self.sysroot.join(absolute.trim_start_matches('/'))
    }

    /// The firmware for `arch`: overrides first, then the first default pair that exists.
    /// `Ok(Err(path))` names a missing default file (installable); `Err` a bad override.
    fn firmware(&self, arch: Arch) -> Result<Result<Firmware, PathBuf>> {
        let spec = firmware_spec(arch);
        let code_override = self.workspace.var(spec.code_var).map(PathBuf::from);
        let vars_override = self.workspace.var(spec.vars_var).map(PathBuf::from);
        for (variable, path) in [
            (spec.code_var, &code_override),
            (spec.vars_var, &vars_override),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::new(format!(
                    "{variable}={}: no such file; point {variable} at {}'s {} image or unset it \
                     to use {} (package {})",
                    path.display(),
                    spec.name,
                    if variable == spec.code_var {
                        "code"
                    } else {
                        "variables"
                    },
                    if variable == spec.code_var {
                        spec.defaults[0].0
                    } else {
                        spec.defaults[0].1
                    },
                    spec.package,
                )));
            }
        }
        let pairs: Vec<(PathBuf, PathBuf)> = spec
            .defaults
            .iter()
            .map(|(code, vars)| (self.host_path(code), self.host_path(vars)))
            .collect();
        let chosen = pairs
            .iter()
            .find(|(code, vars)| {
                (code_override.is_some() || code.is_file())
                    && (vars_override.is_some() || vars.is_file())
            })
            .unwrap_or(&pairs[0]);
        let code = code_override.unwrap_or_else(|| chosen.0.clone());
        let vars = vars_override.unwrap_or_else(|| chosen.1.clone());
        for path in [&code, &vars] {
            if !path.is_file() {
                return Ok(Err(path.clone()));
            }
        }
        Ok(Ok(Firmware { code, vars }))
    }

    fn missing(&self, arches: &[Arch]) -> Result<Vec<Missing>> {
        let mut missing = Vec::new();
        for &arch in arches {
            if find_in_path(self.workspace, arch.qemu_binary()).is_none() {
                missing.push(Missing::Qemu { arch });
            }
            if let Err(path) = self.firmware(arch)? {
                missing.push(Missing::Firmware { arch, path });
            }
        }
        Ok(missing)
    }
}

/// The firmware for `arch`, or one line naming the missing file and how to get it.
pub fn firmware(workspace: &Workspace, arch: Arch) -> Result<Firmware> {
    let probe = Probe {
        workspace,
        sysroot: Path::new("/"),
    };
    probe.firmware(arch)?.map_err(|path| {
        let spec = firmware_spec(arch);
        Error::new(format!(
            "{} firmware {} is missing; install package {} or set {} and {}",
            spec.name,
            path.display(),
            spec.package,
            spec.code_var,
            spec.vars_var
        ))
    })
}

/// What is missing for booting `arches` (a bad firmware override is an error).
pub fn missing(workspace: &Workspace, arches: &[Arch]) -> Result<Vec<Missing>> {
    Probe {
        workspace,
        sysroot: Path::new("/"),
    }
    .missing(arches)
}

/// An executable named `name` in the workspace's `PATH`.
pub fn find_in_path(workspace: &Workspace, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = workspace.var("PATH")?;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// How the missing prerequisites get installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is missing.
    Ready,
    /// Root with apt: say so, `apt-get update`, then [`apt_install_args`] with the candidate
    /// version apt reports after the update (a fresh machine has no package lists before).
    Install,
    /// Stop and tell the user this.
    Tell(String),
}

/// `apt-get install` arguments, with `qemu-utils` pinned to `version` (the candidate version
/// of `qemu-system-x86`).
pub fn apt_install_args(version: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "-y",
        "--no-install-recommends",
        "--allow-downgrades",
    ]
    .map(String::from)
    .into();
    args.extend(PACKAGES.iter().map(|package| package.to_string()));
    args.extend(PINNED.iter().map(|package| format!("{package}={version}")));
    args
}

/// Decide what to do about `missing` given who we are and what the system has.
/// `candidate` is `qemu-system-x86`'s candidate version when apt could tell it (used only in
/// the command shown to a user who is not root).
pub fn plan(missing: &[Missing], root: bool, apt: bool, candidate: Option<&str>) -> Plan {
    if missing.is_empty() {
        return Plan::Ready;
    }
    let list = missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !apt {
        return Plan::Tell(format!(
            "missing {list}; install QEMU (qemu-system-x86_64, qemu-system-aarch64) and the UEFI \
             firmware (OVMF, AAVMF) with your system's package manager, then set OVMF_CODE, \
             OVMF_VARS, AAVMF_CODE and AAVMF_VARS to the firmware files"
        ));
    }
    if root {
        return Plan::Install;
    }
    let version =
        candidate.unwrap_or("$(apt-cache policy qemu-system-x86 | awk '/Candidate/{print $2}')");
    Plan::Tell(format!(
        "missing {list}; run `sudo apt-get update && sudo apt-get {}` and try again",
        apt_install_args(version).join(" ")
    ))
}

fn apt_candidate(workspace: &Workspace) -> Option<String> {
    let output = workspace
        .command("apt-cache")
        .args(["policy", "qemu-system-x86"])
        .output()
        .ok()?;
    parse_candidate(&String::from_utf8_lossy(&output.stdout))
}

fn apt_get(workspace: &Workspace, args: &[String]) -> Result<()> {
    step(format_args!("running apt-get {}…", args.join(" ")));
    let mut command = workspace.command("apt-get");
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    compile::run(command, &format!("apt-get {}", args[0])).map_err(|error| {
        Error::new(format!(
            "{}; fix apt (see its messages above) and run the xtask again",
            error.message()
        ))
    })
}

/// Whether the xtask runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `Candidate:` of `apt-cache policy` output.
pub fn parse_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|version| !version.is_empty() && *version != "(none)")
        .map(str::to_owned)
}

/// Make sure QEMU and firmware for `arches` are present, installing them when possible.
pub fn ensure(workspace: &Workspace, arches: &[Arch]) -> Result<()> {
    // One install attempt per process, even when tests boot many images in parallel.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poison| poison.into_inner());
    let missing = missing(workspace, arches)?;
    if missing.is_empty() {
        return Ok(());
    }
    let apt = find_in_path(workspace, "apt-get").is_some();
    let root = is_root();
    let candidate = if apt && !root {
        apt_candidate(workspace)
    } else {
        None
    };
    match plan(&missing, root, apt, candidate.as_deref()) {
        Plan::Ready => Ok(()),
        Plan::Tell(message) => Err(Error::new(message)),
        Plan::Install => {
            let list = missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            step(format_args!(
                "missing {list}: installing them with apt-get (running as root)…"
            ));
            apt_get(workspace, &["update".to_owned()])?;
            let version = apt_candidate(workspace).ok_or_else(|| {
                Error::new(
                    "apt has no candidate for qemu-system-x86; enable the distribution's main \
                     repository in /etc/apt/sources.list and run the xtask again",
                )
            })?;
            apt_get(workspace, &apt_install_args(&version))?;
            let still = self::missing(workspace, arches)?;
            if let Some(first) = still.first() {
                return Err(Error::new(format!(
                    "still missing {first} after apt-get install; install it by hand"
                )));
            }
            step("QEMU and firmware installed");
            Ok(())
        }
    }
}

/// The debugger `cargo xtask gdb-<arch>` runs.
pub const GDB: &str = "gdb-multiarch";

/// What to do about a missing [`GDB`]: `None` to install it (root with apt), else the
/// message that tells the user how.
pub fn gdb_plan(root: bool, apt: bool) -> Option<String> {
    match (root, apt) {
        (true, true) => None,
        (false, true) => Some(format!(
            "{GDB} is missing; run `sudo apt-get update && sudo apt-get install -y \
             --no-install-recommends {GDB}` and try again"
        )),
        (_, false) => Some(format!(
            "{GDB} is missing; install it (or a gdb built for x86_64 and AArch64) with your \
             system's package manager and try again"
        )),
    }
}

/// The path of [`GDB`], installing it with apt-get first when it is missing and the xtask
/// runs as root.
pub fn ensure_gdb(workspace: &Workspace) -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(path) = find_in_path(workspace, GDB) {
        return Ok(path);
    }
    let apt = find_in_path(workspace, "apt-get").is_some();
    if let Some(message) = gdb_plan(is_root(), apt) {
        return Err(Error::new(message));
    }
    step(format_args!(
        "missing {GDB}: installing it with apt-get (running as root)…"
    ));
    apt_get(workspace, &["update".to_owned()])?;
    apt_get(
        workspace,
        &["install", "-y", "--no-install-recommends", GDB].map(String::from),
    )?;
    find_in_path(workspace, GDB).ok_or_else(|| {
        Error::new(format!(
            "still missing {GDB} after apt-get install; install it by hand"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("keel-xtask-prereq-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch(path: &Path, executable: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A fake host: `bin/` as the only PATH entry, firmware under the scratch root.
    fn fake_host(name: &str) -> (PathBuf, Workspace) {
        let root = scratch(name);
        let workspace = Workspace::from_env()
            .with_var("PATH", root.join("bin").to_str())
            .with_var("OVMF_CODE", None)
            .with_var("OVMF_VARS", None)
            .with_var("AAVMF_CODE", None)
            .with_var("AAVMF_VARS", None);
        (root, workspace)
    }

    #[test]
    fn gdb_is_installed_by_root_or_named_with_its_command() {
        assert_eq!(gdb_plan(true, true), None);
        let told = gdb_plan(false, true).unwrap();
        assert!(told.contains("sudo apt-get install -y --no-install-recommends gdb-multiarch"));
        assert!(gdb_plan(true, false).unwrap().contains("package manager"));
    }

    #[test]
    fn detects_missing_qemu_and_firmware_on_a_fake_host() {
        let (root, workspace) = fake_host("detect");
        touch(&root.join("bin/qemu-system-x86_64"), true);
        touch(&root.join("bin/qemu-system-aarch64"), false); // not executable: missing
        touch(&root.join("usr/share/OVMF/OVMF_CODE_4M.fd"), false);
        touch(&root.join("usr/share/OVMF/OVMF_VARS_4M.fd"), false);
        touch(&root.join("usr/share/AAVMF/AAVMF_CODE.fd"), false);
        let probe = Probe {
            workspace: &workspace,
            sysroot: &root,
        };

        // x86_64: QEMU present, and only the _4M firmware pair: that pair is chosen.
        assert_eq!(probe.missing(&[Arch::X86_64]).unwrap(), []);
        let ovmf = probe.firmware(Arch::X86_64).unwrap().unwrap();
        assert_eq!(ovmf.code, root.join("usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert_eq!(ovmf.vars, root.join("usr/share/OVMF/OVMF_VARS_4M.fd"));

        // aarch64: QEMU not executable, AAVMF_VARS missing.
        let missing = probe.missing(&Arch::ALL).unwrap();
        assert_eq!(
            missing,
            [
                Missing::Qemu {
                    arch: Arch::Aarch64
                },
                Missing::Firmware {
                    arch: Arch::Aarch64,
                    path: root.join("usr/share/AAVMF/AAVMF_VARS.fd")
                },
            ]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_bad_override_is_an_error_naming_the_variable() {
        let (root, workspace) = fake_host("override");
        let workspace = workspace.with_var("AAVMF_CODE", Some("/nonexistent/AAVMF_CODE.fd"));
        let probe = Probe {
            workspace: &workspace,
            sysroot: &root,
        };
        let error = probe.missing(&[Arch::Aarch64]).unwrap_err().to_string();
        assert!(
            error.contains("AAVMF_CODE=/nonexistent/AAVMF_CODE.fd"),
            "{error}"
        );
        assert!(
            error.contains("qemu-efi-aarch64") && !error.contains('\n'),
            "{error}"
        );

        // An override that exists wins over the (missing) defaults.
        let code = root.join("my/OVMF_CODE.fd");
        let vars = root.join("my/OVMF_VARS.fd");
        touch(&code, false);
        touch(&vars, false);
        let workspace = workspace
            .with_var("OVMF_CODE", code.to_str())
            .with_var("OVMF_VARS", vars.to_str());
        let probe = Probe {
            workspace: &workspace,
            sysroot: &root,
        };
        assert_eq!(
            probe.firmware(Arch::X86_64).unwrap(),
            Ok(Firmware { code, vars })
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn plans_install_or_exact_command() {
        let missing = [Missing::Qemu {
            arch: Arch::Aarch64,
        }];
        assert_eq!(plan(&[], false, false, None), Plan::Ready);

        assert_eq!(plan(&missing, true, true, None), Plan::Install);
        assert_eq!(
            apt_install_args("1:7.2+dfsg-7").join(" "),
            "install -y --no-install-recommends --allow-downgrades qemu-system-x86 \
             qemu-system-arm ovmf qemu-efi-aarch64 qemu-utils=1:7.2+dfsg-7 \
             qemu-block-extra=1:7.2+dfsg-7"
        );

        let Plan::Tell(line) = plan(&missing, false, true, Some("1:7.2")) else {
            panic!("not root: tell");
        };
        assert!(
            line.contains("`sudo apt-get update && sudo apt-get install -y"),
            "{line}"
        );
        assert!(
            line.contains("qemu-utils=1:7.2") && line.contains("qemu-system-arm)"),
            "{line}"
        );

        let Plan::Tell(line) = plan(&missing, true, false, None) else {
            panic!("no apt")
        };
        assert!(
            line.contains("package manager") && line.contains("AAVMF_CODE"),
            "{line}"
        );
    }

    #[test]
    fn reads_apt_candidate() {
        let policy = "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u18+b3\n  \
                      Version table:\n";
        assert_eq!(
            parse_candidate(policy).as_deref(),
            Some("1:7.2+dfsg-7+deb12u18+b3")
        );
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
    }

    #[test]
    fn this_machine_is_ready() {
        // The development machines have QEMU and firmware installed; CI on a fresh machine
        // installs them in `ensure` before any test boots.
        let workspace = Workspace::from_env();
        if missing(&workspace, &Arch::ALL).is_ok_and(|missing| missing.is_empty()) {
            assert!(firmware(&workspace, Arch::X86_64).is_ok());
            assert!(firmware(&workspace, Arch::Aarch64).is_ok());
        }
    }
}
