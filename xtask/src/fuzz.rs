//! `cargo xtask fuzz`: boot the `fuzz` scenario (user/fuzz under the kernel invariant
//! checker) for long runs, one architecture after the other, and say how to replay a
//! failure.
//!
//! The scenario prints the seed it used (chosen from the clock unless `--seed` gives one)
//! and, at the end, `ok fuzz …` / `not ok fuzz …` lines with the figures; every fuzzing
//! process prints its last calls. On a failure this command prints the failing lines, the
//! last serial lines (with a kernel panic's report and the fuzzer's last calls) and the
//! command that replays the run. A fixed seed repeats the same figures with `--procs 1`;
//! with several processes the shared objects and thread slots make them depend on
//! scheduling.

use std::time::Duration;

use crate::boot::{self, BootOptions};
use crate::compile::KernelBuild;
use crate::loader::LoaderChoice;
use crate::qemu::QemuOptions;
use crate::{Arch, Error, Profile, Result, Workspace, step};

/// What one `cargo xtask fuzz` run asks for.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    pub seed: Option<u32>,
    pub calls: u64,
    pub procs: u32,
    pub smp: u32,
    pub release: bool,
    /// Bound on one boot.
    pub timeout: Duration,
}

/// The kernel command line of a run.
pub fn cmdline(options: &FuzzOptions) -> String {
    let mut line = format!("test=fuzz calls={} procs={}", options.calls, options.procs);
    if let Some(seed) = options.seed {
        line.push_str(&format!(" seed={seed}"));
    }
    line
}

/// The seed a run's serial output names (`fuzz: seed S calls …`).
pub fn seed_of(lines: &[String]) -> Option<u32> {
    lines.iter().find_map(|line| {
        let rest = &line[line.find("fuzz: seed ")? + "fuzz: seed ".len()..];
        rest.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// Boot the scenario on each of `arches`; `Err` when any run failed.
pub fn run(workspace: &Workspace, arches: &[Arch], options: &FuzzOptions) -> Result<()> {
    let mut failed = Vec::new();
    for &arch in arches {
        let mut qemu = QemuOptions::new(arch);
        qemu.smp = options.smp;
        qemu.capture = true;
        qemu.echo = false;
        qemu.timeout = Some(options.timeout);
        let boot_options = BootOptions {
            profile: Profile::from_release(options.release),
            loader: LoaderChoice::Auto,
            cmdline: cmdline(options),
            image: Some(workspace.images_dir().join(format!("keel-{arch}-fuzz.img"))),
            keep_image: false,
            build: true,
            kernel: Some(KernelBuild::Checked),
            fixed_hhdm: false,
            qemu,
        };
        step(format_args!(
            "{arch}: booting {} ({} CPU{})…",
            boot_options.cmdline,
            options.smp,
            if options.smp == 1 { "" } else { "s" }
        ));
        let outcome = boot::boot(workspace, &boot_options)?;
        let seed = seed_of(&outcome.lines);
        for line in &outcome.lines {
            if line.starts_with("ok fuzz")
                || line.starts_with("not ok")
                || line.contains(" passed, ")
                || line.starts_with("fuzz: seed")
            {
                println!("  {line}");
            }
        }
        let code = outcome.ending.clone().into_result();
        if matches!(code, Ok(0)) {
            step(format_args!("{arch}: every check passed"));
            continue;
        }
        eprintln!("{arch}: the run failed; its last serial lines:");
        for line in outcome.lines.iter().rev().take(60).rev() {
            eprintln!("  | {line}");
        }
        let replay = match seed {
            Some(seed) => format!(
                "cargo xtask fuzz --arch {arch} --seed {seed} --calls {} --procs {} --smp {}",
                options.calls, options.procs, options.smp
            ),
            None => "(the run printed no seed: it failed before the fuzzers started)".to_owned(),
        };
        eprintln!("{arch}: replay with: {replay}");
        failed.push(match code {
            Ok(code) => format!("{arch} (exit code {code})"),
            Err(error) => format!("{arch} ({error})"),
        });
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!("fuzz failed on {}", failed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_the_options() {
        let mut options = FuzzOptions {
            seed: None,
            calls: 1000,
            procs: 1,
            smp: 1,
            release: false,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(cmdline(&options), "test=fuzz calls=1000 procs=1");
        options.seed = Some(42);
        assert_eq!(cmdline(&options), "test=fuzz calls=1000 procs=1 seed=42");
    }

    #[test]
    fn reads_the_seed_back() {
        let lines = vec![
            "banner".to_owned(),
            "\u{1b}[0mfuzz: seed 12345 calls 200000 procs 4 (replay: …)".to_owned(),
        ];
        assert_eq!(seed_of(&lines), Some(12345));
        assert_eq!(seed_of(&["fuzz: seed x".to_owned()]), None);
    }
}
