//! QEMU integration tests for Keel: shared helpers.
//!
//! The tests in `tests/tests/*.rs` boot images through the xtask library (`xtask::boot`),
//! exactly as `cargo xtask qemu-<arch>` does, and assert on the serial lines and on the
//! kernel's exit code (DESIGN.md §8). `cargo xtask test` builds everything first and sets
//! `KEEL_TEST_ARCH` (`x86_64`, `aarch64` or `all`); a test for an architecture that
//! variable excludes is skipped with a printed reason. It also sets `KEEL_TEST_PREBUILT`, so
//! the tests boot that one build instead of rebuilding per boot. Run them directly with
//! `cargo test -p tests` (both architectures, building as needed).
//!
//! Every boot costs tens of seconds under software emulation, so each test boots once and
//! asserts everything it can about that boot. No test asserts on speed: timeouts only bound
//! a hung run, and are generous.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub use xtask::Arch;
pub use xtask::boot::BootOptions;
pub use xtask::qemu::{Ending, Outcome};
pub use xtask::{Error, Workspace};

/// Environment variable selecting the architectures to boot.
pub const ARCH_VAR: &str = xtask::check::TEST_ARCH_VAR;

/// The bound on one boot that is expected to power off. Software emulation on a loaded
/// two-core machine can be slow; a correct kernel finishes far sooner.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Print a line the test harness does not capture (so a skip reason is always visible).
pub fn note(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "tests: {message}");
}

/// Whether `arch` is selected by `KEEL_TEST_ARCH` (unset or `all` selects both). When it is
/// not, print why the test is skipped.
pub fn selected(arch: Arch, test: &str) -> bool {
    let value = std::env::var(ARCH_VAR).unwrap_or_default();
    let chosen = match value.as_str() {
        "" | "all" => true,
        name => match Arch::from_name(name) {
            Some(only) => only == arch,
            None => panic!("{ARCH_VAR}={name} is not x86_64, aarch64 or all"),
        },
    };
    if !chosen {
        note(format_args!(
            "skipping {test}: {ARCH_VAR}={value} excludes {arch}"
        ));
    }
    chosen
}

/// The repository, with the process environment.
pub fn workspace() -> Workspace {
    Workspace::from_env()
}

/// Boot options for one test: its own image (tests run in parallel), removed when QEMU
/// ends (a full run boots about a hundred), serial captured and echoed, the generous
/// [`BOOT_TIMEOUT`].
pub fn options(arch: Arch, test: &str, cmdline: &str) -> BootOptions {
    let mut options = BootOptions::new(arch);
    // Every QEMU test runs the kernel with its test code and the lock-order checker.
    options.kernel = Some(xtask::compile::KernelBuild::Checked);
    options.cmdline = cmdline.to_owned();
    options.image = Some(image_path(arch, test));
    options.keep_image = false;
    options.qemu.capture = true;
    options.qemu.timeout = Some(BOOT_TIMEOUT);
    options.qemu.smp = default_cpus();
    // Under `cargo xtask test` everything is built already: boot that very build.
    options.build = std::env::var_os(xtask::check::PREBUILT_VAR).is_none();
    options
}

/// The CPUs a test boot gets unless it sets its own: `cargo xtask test --smp N`, else 1.
pub fn default_cpus() -> u32 {
    std::env::var(xtask::check::TEST_SMP_VAR)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&cpus| (1..=8).contains(&cpus))
        .unwrap_or(1)
}

/// Where the image of test `test` on `arch` is written.
pub fn image_path(arch: Arch, test: &str) -> PathBuf {
    workspace()
        .images_dir()
        .join(format!("test-{arch}-{test}.img"))
}

/// Boot and return the outcome; a failure to get as far as QEMU fails the test.
pub fn boot(options: &BootOptions) -> Outcome {
    match xtask::boot::boot(&workspace(), options) {
        Ok(outcome) => outcome,
        Err(error) => panic!("could not boot: {error}"),
    }
}

/// A boot driven over serial as a person at a terminal drives it: [`Terminal::send_line`]
/// types into the guest's serial input, [`Terminal::expect_prompt`] waits for a prompt that
/// does not end in a newline (`keel> `), [`Terminal::expect_line`] for an output line; each
/// looks after the previous match. Every failure panics with the whole serial output so far.
/// Wait for the guest's first prompt before typing: the firmware reads the serial line too.
pub struct Terminal {
    session: Option<xtask::qemu::Session>,
}

/// The bound on each wait of a [`Terminal`] (the first includes the boot); it only stops a
/// hung run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(240);

/// Boot for a [`Terminal`] session; a failure to get as far as QEMU fails the test.
pub fn start(options: &BootOptions) -> Terminal {
    match xtask::boot::start(&workspace(), options) {
        Ok(session) => Terminal {
            session: Some(session),
        },
        Err(error) => panic!("could not boot: {error}"),
    }
}

impl Terminal {
    fn session(&mut self) -> &mut xtask::qemu::Session {
        self.session
            .as_mut()
            .expect("the session ends only in finish")
    }

    fn fail(&mut self, error: Error) -> ! {
        let transcript = self.session().transcript();
        panic!("{error}; serial output so far:\n{transcript}")
    }

    /// Type `text` and Enter (a carriage return).
    pub fn send_line(&mut self, text: &str) {
        if let Err(error) = self.session().send_line(text) {
            self.fail(error);
        }
    }

    /// Write raw bytes to the serial input (control characters, garbage).
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(error) = self.session().send(bytes) {
            self.fail(error);
        }
    }

    /// Wait for `prompt` (it need not end a line).
    pub fn expect_prompt(&mut self, prompt: &str) {
        if let Err(error) = self.session().expect_text(prompt, STEP_TIMEOUT) {
            self.fail(error);
        }
    }

    /// Wait for a whole line containing `text`; returns it from `text` on.
    pub fn expect_line(&mut self, text: &str) -> String {
        match self.session().expect_line(text, STEP_TIMEOUT) {
            Ok(line) => line,
            Err(error) => self.fail(error),
        }
    }

    /// Wait for the guest to power off (within [`BOOT_TIMEOUT`]) and return the whole run.
    pub fn finish(mut self) -> Outcome {
        let session = self.session.take().expect("finish runs once");
        match session.finish(BOOT_TIMEOUT) {
            Ok(outcome) => outcome,
            Err(error) => panic!("could not wait for QEMU: {error}"),
        }
    }
}

/// Reads the serial output of a run in order: each [`Serial::expect`] looks for its line
/// after the previous match, so the banner's order is checked along the way and a loader's
/// own log lines (`module: …` before the kernel starts) are not mistaken for the kernel's.
pub struct Serial<'a> {
    outcome: &'a Outcome,
    next: usize,
}

impl<'a> Serial<'a> {
    pub fn new(outcome: &'a Outcome) -> Self {
        Self { outcome, next: 0 }
    }

    /// The next line (after the previous match) that contains `prefix`, from `prefix` on
    /// (anything the firmware left earlier on the same line is dropped). Panics with the whole
    /// serial output when there is none.
    pub fn expect(&mut self, prefix: &str) -> &'a str {
        let lines = &self.outcome.lines;
        let found = lines
            .iter()
            .enumerate()
            .skip(self.next)
            .find_map(|(index, line)| line.find(prefix).map(|at| (index, &line[at..])));
        let Some((index, text)) = found else {
            let earlier = lines[..self.next.min(lines.len())]
                .iter()
                .any(|line| line.contains(prefix));
            panic!(
                "no serial line with {prefix:?}{}; the run ended with {:?} after:\n{}",
                if earlier {
                    " after the previous expected line (only before it)"
                } else {
                    ""
                },
                self.outcome.ending,
                lines.join("\n")
            );
        };
        self.next = index + 1;
        text
    }
}

/// The suite's `N passed, M failed` line, trimmed; panics when the run printed none.
pub fn summary_line(outcome: &Outcome) -> &str {
    outcome
        .lines
        .iter()
        .find(|line| line.contains(" passed, ") && line.trim_end().ends_with(" failed"))
        .expect("no summary line")
        .trim()
}

/// The index and text (from `prefix` on) of the first serial line anywhere in the run that
/// contains `prefix`, for lines whose order does not matter; panics with the whole serial
/// output when there is none. Use [`Serial`] where order matters.
pub fn expect_line<'a>(outcome: &'a Outcome, prefix: &str) -> (usize, &'a str) {
    outcome
        .lines
        .iter()
        .enumerate()
        .find_map(|(index, line)| line.find(prefix).map(|at| (index, &line[at..])))
        .unwrap_or_else(|| {
            panic!(
                "no serial line with {prefix:?}; the run ended with {:?} after:\n{}",
                outcome.ending,
                outcome.lines.join("\n")
            )
        })
}

/// Assert that no suite line reports a failure (`not ok …`, DESIGN.md §8), showing the whole
/// serial output when one does.
pub fn expect_no_failed_test(outcome: &Outcome) {
    for line in &outcome.lines {
        assert!(
            !line.contains("not ok"),
            "a test failed: {line}\n{}",
            outcome.lines.join("\n")
        );
    }
}

/// Assert how the run ended, showing the serial output when it is not as expected.
pub fn expect_ending(outcome: &Outcome, expected: &Ending) {
    assert_eq!(
        &outcome.ending,
        expected,
        "unexpected ending; serial output:\n{}",
        outcome.lines.join("\n")
    );
}

/// The first integer in `text` after `after`.
pub fn number_after(text: &str, after: &str) -> Option<u64> {
    let rest = &text[text.find(after)? + after.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_after_their_label() {
        let line = "memory: 213 MiB usable in 42 regions (1024 KiB bootloader-reclaimable)";
        assert_eq!(number_after(line, "memory:"), Some(213));
        assert_eq!(number_after(line, "usable in"), Some(42));
        assert_eq!(number_after(line, "nothing"), None);
    }
}
