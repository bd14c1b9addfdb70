//! `cargo xtask test` and `cargo xtask lint`.

use crate::arch::ArchChoice;
use crate::compile::{self, KernelBuild, Kind, USER_PROGRAMS};
use crate::{Arch, Error, Profile, Result, Workspace, prereq, step};

/// Crates that build and unit-test on the host (the kernel cannot: it needs `arch`).
pub const HOST_CRATES: &[&str] = &["abi", "kcore", "arch-api", "ucore", "efi-loader", "xtask"];

/// Libraries of the user programs, linted for the user targets with them (`ucore` is also
/// a host crate: its unit tests run on the host).
pub const USER_LIBRARIES: &[&str] = &["rt", "ucore"];

/// The environment variable that tells `tests/` which architectures to boot.
pub const TEST_ARCH_VAR: &str = "KEEL_TEST_ARCH";

/// The CPUs every test boot gets unless the test sets its own (`cargo xtask test --smp N`;
/// unset: 1). The SMP tests and the suites' `_smp4` variants choose theirs.
pub const TEST_SMP_VAR: &str = "KEEL_TEST_SMP";

/// Set (to `1`) when `cargo xtask test` has built everything: the tests then boot what is in
/// `target/` instead of rebuilding for every boot, so all of them test the same build.
pub const PREBUILT_VAR: &str = "KEEL_TEST_PREBUILT";

fn packages(command: &mut std::process::Command, packages: &[&str]) {
    for package in packages {
        command.args(["-p", package]);
    }
}

/// Host unit tests, then a build and the QEMU integration tests for `arches`.
pub fn test(
    workspace: &Workspace,
    arches: ArchChoice,
    filter: Option<&str>,
    smp: u32,
) -> Result<()> {
    step(format_args!(
        "running host unit tests ({})…",
        HOST_CRATES.join(", ")
    ));
    let mut tally = Tally::default();
    let mut command = workspace.cargo();
    command.arg("test");
    packages(&mut command, HOST_CRATES);
    forward(command, "host unit tests", &mut tally)?;

    let selected = arches.arches();
    prereq::ensure(workspace, &selected)?;
    for &arch in &selected {
        // Every QEMU test runs the checked kernel, except the one that shows what a
        // plain kernel refuses.
        compile::build(
            workspace,
            arch,
            Profile::Debug,
            KernelBuild::Checked,
            compile::WithLoader::Builtin,
        )?;
        compile::build_kernel(workspace, arch, Profile::Debug, KernelBuild::Plain)?;
    }

    let names: Vec<&str> = selected.iter().map(|arch| arch.name()).collect();
    step(format_args!(
        "running QEMU integration tests ({}, {smp} CPU{} by default{})…",
        names.join(", "),
        if smp == 1 { "" } else { "s" },
        filter.map_or(String::new(), |filter| format!(", filter {filter:?}"))
    ));
    let mut command = workspace.cargo();
    command
        .args(["test", "-p", "tests"])
        .env(TEST_ARCH_VAR, arches.name())
        .env(TEST_SMP_VAR, smp.to_string());
    if let Some(filter) = filter {
        command.args(["--", filter]);
    }
    forward(command, "QEMU integration tests", &mut tally)?;
    step("all tests passed");
    print_tally(&tally);
    Ok(())
}

/// Test counts summed over every `test result:` line cargo printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    /// Add the counts of one libtest summary line
    /// (`test result: ok. 4 passed; 0 failed; 0 ignored; …`); other lines add nothing.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Run a `cargo test` command, echoing its output as it comes and adding its test counts
/// to `tally`; a failure forwards its exit status.
fn forward(mut command: std::process::Command, what: &str, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| Error::new(format!("{what}: cannot start cargo: {error}")))?;
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout().lock();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            tally.add_line(&line);
            // The terminal going away must not stop the tests.
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|error| Error::new(format!("{what}: cannot wait for cargo: {error}")))?;
    match status.code() {
        Some(0) => Ok(()),
        code => {
            print_tally(tally);
            Err(Error::forwarded(
                code.unwrap_or(1),
                format!("{what} failed ({status}); the failing tests are listed above"),
            ))
        }
    }
}

/// The one closing line of `cargo xtask test`: every test it ran, host and QEMU.
fn print_tally(tally: &Tally) {
    println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
}

/// One clippy run: what it covers, and the command.
struct ClippyRun {
    what: String,
    command: std::process::Command,
}

fn clippy_runs(workspace: &Workspace) -> Vec<ClippyRun> {
    let mut runs = Vec::new();
    for arch in Arch::ALL {
        let arch_crate = match arch {
            Arch::X86_64 => "arch-x86_64",
            Arch::Aarch64 => "arch-aarch64",
        };
        // The kernel with and without its test code: each feature set is its own code.
        for kernel in [KernelBuild::Plain, KernelBuild::Checked] {
            let mut command = Kind::Kernel.cargo_in(
                workspace,
                "clippy",
                arch,
                compile::kernel_dir(workspace, kernel),
            );
            packages(
                &mut command,
                &["kernel", arch_crate, "arch-api", "kcore", "abi"],
            );
            if !kernel.features().is_empty() {
                command.args(["--features", kernel.features()]);
            }
            runs.push(ClippyRun {
                what: format!(
                    "kernel ({}), {arch_crate}, arch-api, kcore, abi for {}",
                    kernel.describe(),
                    arch.kernel_target()
                ),
                command,
            });
        }

        let mut command = Kind::User.cargo(workspace, "clippy", arch);
        packages(&mut command, USER_PROGRAMS);
        packages(&mut command, USER_LIBRARIES);
        runs.push(ClippyRun {
            what: format!(
                "{}, {} for {}",
                USER_PROGRAMS.join(", "),
                USER_LIBRARIES.join(", "),
                arch.user_target()
            ),
            command,
        });

        let mut command = Kind::Loader.cargo(workspace, "clippy", arch);
        packages(&mut command, &["efi-loader"]);
        runs.push(ClippyRun {
            what: format!("efi-loader for {}", arch.loader_target()),
            command,
        });
    }
    let mut command = workspace.cargo();
    command.arg("clippy");
    packages(&mut command, HOST_CRATES);
    packages(&mut command, &["tests"]);
    command.arg("--all-targets");
    runs.push(ClippyRun {
        what: format!(
            "{}, tests for the host (all targets)",
            HOST_CRATES.join(", ")
        ),
        command,
    });
    for run in &mut runs {
        run.command.args(["--", "-D", "warnings"]);
    }
    runs
}

/// `cargo fmt --check`, then clippy with `-D warnings` for every crate and target.
pub fn lint(workspace: &Workspace) -> Result<()> {
    compile::ensure_targets(workspace)?;
    let mut failed = Vec::new();

    step("checking formatting (cargo fmt --all --check)…");
    let mut command = workspace.cargo();
    command.args(["fmt", "--all", "--check"]);
    if compile::run(command, "cargo fmt --check").is_err() {
        failed.push("formatting (run `cargo fmt --all`)".to_owned());
    }

    step("checking the kernel's layers (no import from a higher layer)…");
    if let Err(error) = crate::layers::check_tree(&workspace.root().join("kernel/src")) {
        eprintln!("{error}");
        failed.push("the kernel's layers".to_owned());
    }

    for mut run in clippy_runs(workspace) {
        step(format_args!("clippy: {}…", run.what));
        if !run.command.status().is_ok_and(|status| status.success()) {
            failed.push(format!("clippy on {}", run.what));
        }
    }
    if failed.is_empty() {
        step("lint passed");
        Ok(())
    } else {
        Err(Error::new(format!(
            "lint failed: {}; fix the warnings printed above",
            failed.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clippy_covers_every_target_with_its_flags() {
        let workspace = Workspace::from_env();
        let runs = clippy_runs(&workspace);
        let lines: Vec<String> = runs
            .iter()
            .map(|run| {
                let args: Vec<_> = run
                    .command
                    .get_args()
                    .map(|arg| arg.to_string_lossy().into_owned())
                    .collect();
                args.join(" ")
            })
            .collect();
        for target in [
            "x86_64-unknown-none",
            "aarch64-unknown-none-softfloat",
            "aarch64-unknown-none",
            "x86_64-unknown-uefi",
            "aarch64-unknown-uefi",
        ] {
            assert!(
                lines
                    .iter()
                    .any(|line| line.contains(&format!("--target {target} ")))
            );
        }
        assert!(lines.iter().all(|line| line.ends_with("-- -D warnings")));
        assert!(
            lines
                .last()
                .unwrap()
                .contains("-p xtask -p tests --all-targets")
        );
    }
}

#[cfg(test)]
mod tally_tests {
    use super::Tally;

    #[test]
    fn sums_libtest_summaries_and_ignores_other_lines() {
        let mut tally = Tally::default();
        for line in [
            "running 4 tests",
            "test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
            "test boot_x86_64 ... ok",
            "   test result: ok. 0 passed; 0 failed; 0 ignored",
        ] {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 6,
                failed: 3
            }
        );
    }
}
